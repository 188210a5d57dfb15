//! The fleet's admin account: created once with `useradd`, its ssh keys owned by it.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use anyhow::{Context, Result};

use crate::apply::Host;
use hostkit::cmd::text as cmd;

/// uid and gid of `user` in the target's /etc/passwd.
pub fn lookup(host: &Host, user: &str) -> Option<(u32, u32)> {
    let passwd = fs::read_to_string(host.path(Path::new("/etc/passwd"))).ok()?;
    passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() >= 4 && f[0] == user).then(|| Some((f[2].parse().ok()?, f[3].parse().ok()?)))?
    })
}

/// What [`ensure_user`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum UserOutcome {
    Exists,
    Created,
    /// A test tree without /etc/passwd: nothing to add the account to.
    NoAccountDatabase,
}

/// Create `user` (home, own group, bash, no password: `*` allows keys but no password login,
/// unlike a locked `!` account which sshd refuses without PAM).
pub fn ensure_user(host: &Host, user: &str, comment: &str) -> Result<UserOutcome> {
    if lookup(host, user).is_some() {
        return Ok(UserOutcome::Exists);
    }
    if !host.live() && !host.path(Path::new("/etc/passwd")).exists() {
        return Ok(UserOutcome::NoAccountDatabase);
    }
    let root = host.root.to_string_lossy().into_owned();
    let mut args = vec!["--create-home", "--user-group", "--shell", "/bin/bash", "--password", "*", "--comment", comment];
    if !host.live() {
        args.extend(["--root", root.as_str()]);
    }
    args.push(user);
    cmd("useradd", &args).with_context(|| format!("creating the user {user}"))?;
    Ok(UserOutcome::Created)
}

/// Give `user` its home's `.ssh` (0700) and everything in it; returns whether anything changed.
pub fn own_ssh_dir(host: &Host, user: &str) -> Result<bool> {
    let Some((uid, gid)) = lookup(host, user) else {
        return Ok(false);
    };
    let home = host.path(Path::new("/home")).join(user);
    let ssh = home.join(".ssh");
    let mut changed = false;
    let mut paths = vec![home.clone(), ssh.clone()];
    if let Ok(entries) = fs::read_dir(&ssh) {
        paths.extend(entries.flatten().map(|e| e.path()));
    }
    for p in paths {
        let meta = fs::symlink_metadata(&p).with_context(|| format!("reading {}", p.display()))?;
        use std::os::unix::fs::MetadataExt;
        if meta.uid() != uid || meta.gid() != gid {
            nix::unistd::chown(&p, Some(uid.into()), Some(gid.into())).with_context(|| format!("chown {}", p.display()))?;
            changed = true;
        }
    }
    let mode = fs::metadata(&ssh)?.permissions().mode() & 0o7777;
    if mode != 0o700 {
        fs::set_permissions(&ssh, fs::Permissions::from_mode(0o700))?;
        changed = true;
    }
    Ok(changed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_reads_passwd() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("etc")).unwrap();
        fs::write(dir.path().join("etc/passwd"), "root:x:0:0::/root:/bin/sh\nmmadmin:x:1000:1001:admin:/home/mmadmin:/bin/bash\n").unwrap();
        let host = Host::new(dir.path());
        assert_eq!(lookup(&host, "mmadmin"), Some((1000, 1001)));
        assert_eq!(lookup(&host, "mmadmi"), None);
        assert_eq!(ensure_user(&host, "mmadmin", "x").unwrap(), UserOutcome::Exists);
    }

    #[test]
    fn no_account_database_in_a_bare_tree() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(ensure_user(&Host::new(dir.path()), "mmadmin", "x").unwrap(), UserOutcome::NoAccountDatabase);
    }
}
