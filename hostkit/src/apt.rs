//! The Debian archives this machine's apt is configured with: the builder and the install script
//! take their packages from wherever the operator's apt points, never from a host we name.

use std::process::Command;

use anyhow::{bail, Result};

use crate::cmd::run;

/// Where a Debian release is installed from: the main archive serves the release and its
/// `-updates` suite, the security archive its `-security` suite.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Archives {
    pub main: String,
    pub security: String,
}

/// Overrides of the archive URIs apt gives (e.g. dated snapshots for `--pin-packages`).
pub const MAIN_ENV: &str = "MM_DEBIAN_MIRROR";
pub const SECURITY_ENV: &str = "MM_DEBIAN_SECURITY_MIRROR";

/// The archives of `release` (e.g. `bookworm`): `$MM_DEBIAN_MIRROR` and
/// `$MM_DEBIAN_SECURITY_MIRROR` when set, else the sources apt itself reads (`apt-get
/// indextargets`: deb822 and one-line alike). No security archive is an error, not a silent
/// image without security fixes.
pub fn archives(release: &str) -> Result<Archives> {
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    let (main_env, security_env) = (env(MAIN_ENV), env(SECURITY_ENV));
    let targets = if main_env.is_some() && security_env.is_some() {
        String::new()
    } else {
        let out = run(Command::new("apt-get").args(["indextargets", "--format", "$(REPO_URI) $(RELEASE) $(COMPONENT) $(IDENTIFIER)"]))?;
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let security_suite = format!("{release}-security");
    let main = match main_env.or_else(|| pick(&targets, release)) {
        Some(uri) => uri,
        None => bail!(
            "apt has no source for Debian {release} main on this machine: add one to /etc/apt/sources.list.d/ and run apt-get update, \
             or set {MAIN_ENV} to an archive URI"
        ),
    };
    let security = match security_env.or_else(|| pick(&targets, &security_suite)) {
        Some(uri) => uri,
        None => bail!(
            "apt has no source for Debian {security_suite} main on this machine, and an image without it ships every security \
             fix since the last point release unapplied: add the security archive to /etc/apt/sources.list.d/ (Suites: \
             {security_suite}) and run apt-get update, or set {SECURITY_ENV} to its URI"
        ),
    };
    for (what, uri) in [(MAIN_ENV, &main), (SECURITY_ENV, &security)] {
        // Both end up in the node's deb822 sources, where whitespace would start another field.
        if uri.is_empty() || uri.chars().any(|c| c.is_whitespace() || c.is_control()) {
            bail!("the archive URI {uri:?} ({what} or apt's sources) has whitespace in it: not an archive URI");
        }
    }
    Ok(Archives { main: main.trim_end_matches('/').to_string(), security: security.trim_end_matches('/').to_string() })
}

fn pick(indextargets: &str, suite: &str) -> Option<String> {
    indextargets.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.len() == 4 && f[1] == suite && f[2] == "main" && f[3] == "Packages").then(|| f[0].trim_end_matches('/').to_string())
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn picks_each_suites_main_archive() {
        let targets = "http://a.example/debian-security/ bookworm-security main Packages\n\
                       http://a.example/debian/ bookworm main DEP-11\n\
                       http://b.example/debian/ bookworm-backports main Packages\n\
                       http://a.example/debian/ bookworm main Packages\n";
        assert_eq!(super::pick(targets, "bookworm").as_deref(), Some("http://a.example/debian"));
        assert_eq!(super::pick(targets, "bookworm-security").as_deref(), Some("http://a.example/debian-security"));
        assert_eq!(super::pick(targets, "bookworm-backports").as_deref(), Some("http://b.example/debian"));
        assert_eq!(super::pick(targets, "trixie"), None);
    }

    #[test]
    fn this_machines_apt_gives_both_archives_or_says_which_is_missing() {
        // The real apt of this machine; a machine without a security source gets the error that names it.
        match super::archives("bookworm") {
            Ok(a) => assert!(a.main != a.security && !a.security.ends_with('/'), "{a:?}"),
            Err(e) => assert!(e.to_string().contains("bookworm"), "{e}"),
        }
        if std::env::var_os(super::MAIN_ENV).is_some() && std::env::var_os(super::SECURITY_ENV).is_some() {
            return;
        }
        let e = super::archives("no-such-release").unwrap_err().to_string();
        assert!(e.contains("no-such-release") && (e.contains(super::MAIN_ENV) || e.contains(super::SECURITY_ENV)), "{e}");
    }
}
