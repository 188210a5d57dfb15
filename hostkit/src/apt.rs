//! The Debian archive this machine's apt is configured with: the builder and the install script
//! take their packages from wherever the operator's apt points, never from a host we name.

use std::process::Command;

use anyhow::{bail, Result};

use crate::cmd::run;

/// The archive URI (no trailing slash) that serves `suite`'s `main` Packages index, from
/// `apt-get indextargets` (the sources as apt itself reads them, deb822 and one-line alike).
pub fn archive_uri(suite: &str) -> Result<String> {
    let out = run(Command::new("apt-get").args(["indextargets", "--format", "$(REPO_URI) $(RELEASE) $(COMPONENT) $(IDENTIFIER)"]))?;
    match pick(&String::from_utf8_lossy(&out.stdout), suite) {
        Some(uri) => Ok(uri),
        None => bail!(
            "apt has no source for Debian {suite} main on this machine: add one to /etc/apt/sources.list.d/ and run apt-get update, \
             or set MM_DEBIAN_MIRROR to an archive URI"
        ),
    }
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
    fn picks_the_suites_main_archive_not_security_or_backports() {
        let targets = "http://a.example/debian-security/ bookworm-security main Packages\n\
                       http://a.example/debian/ bookworm main DEP-11\n\
                       http://b.example/debian/ bookworm-backports main Packages\n\
                       http://a.example/debian/ bookworm main Packages\n";
        assert_eq!(super::pick(targets, "bookworm").as_deref(), Some("http://a.example/debian"));
        assert_eq!(super::pick(targets, "bookworm-backports").as_deref(), Some("http://b.example/debian"));
        assert_eq!(super::pick(targets, "trixie"), None);
    }
}
