//! The node's accounts (fleet admin, push trigger, sync): created once with `useradd`, the login
//! accounts' ssh keys owned by them, the sync account's directories handed to it.

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
/// unlike a locked `!` account which sshd refuses without PAM). A `system` account gets a system
/// uid, no home and no login shell: nothing can log in as it, it only runs services.
pub fn ensure_user(host: &Host, user: &str, comment: &str, system: bool) -> Result<UserOutcome> {
    if lookup(host, user).is_some() {
        return Ok(UserOutcome::Exists);
    }
    if !host.live() && !host.path(Path::new("/etc/passwd")).exists() {
        return Ok(UserOutcome::NoAccountDatabase);
    }
    let root = host.root.to_string_lossy().into_owned();
    let mut args = if system {
        vec!["--system", "--no-create-home", "--home-dir", "/nonexistent", "--user-group", "--shell", NOLOGIN, "--comment", comment]
    } else {
        vec!["--create-home", "--user-group", "--shell", "/bin/bash", "--password", "*", "--comment", comment]
    };
    if !host.live() {
        args.extend(["--root", root.as_str()]);
    }
    args.push(user);
    cmd("useradd", &args).with_context(|| format!("creating the user {user}"))?;
    Ok(UserOutcome::Created)
}

/// The login shell of system accounts (the same path on Debian and AlmaLinux).
pub const NOLOGIN: &str = "/usr/sbin/nologin";

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

/// Deeper than this, a tree is refused rather than walked (each level holds a descriptor).
const MAX_DEPTH: usize = 256;

/// Hand the directory `dir` to `uid:gid`, and with `recursive` everything below it on the same
/// filesystem, the directory itself last: a hand-over cut short leaves the top with its old owner,
/// so the next run sees it unfinished and resumes. Entries already owned are only looked at (one
/// `fstatat` each), so resuming costs a walk, not a second round of writes. Returns how many
/// entries changed owner.
///
/// The tree's contents come from upstreams and its owner is about to be an unprivileged account:
/// the walk follows no symlink and works relative to directory descriptors opened with
/// `O_NOFOLLOW`, so an entry swapped for a symlink mid-walk never takes root's chown outside.
pub fn hand_over(dir: &Path, uid: u32, gid: u32, recursive: bool) -> Result<u64> {
    use nix::fcntl::{open, OFlag};
    use nix::sys::stat::{fstat, Mode};
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let raw = open(dir, flags, Mode::empty()).with_context(|| format!("opening {}", dir.display()))?;
    // SAFETY: `open` just returned this descriptor; nothing else owns it.
    let top = unsafe { OwnedFd::from_raw_fd(raw) };
    let st = fstat(top.as_raw_fd()).with_context(|| format!("reading {}", dir.display()))?;
    let mut changed = 0;
    if recursive {
        walk(&top, dir, st.st_dev, uid, gid, 0, &mut changed)?;
    }
    if st.st_uid != uid || st.st_gid != gid {
        nix::unistd::fchown(top.as_raw_fd(), Some(uid.into()), Some(gid.into())).with_context(|| format!("chown {}", dir.display()))?;
        changed += 1;
    }
    Ok(changed)
}

fn walk(dir: &std::os::fd::OwnedFd, shown: &Path, dev: u64, uid: u32, gid: u32, depth: usize, changed: &mut u64) -> Result<()> {
    use nix::fcntl::{openat, AtFlags, OFlag};
    use nix::sys::stat::{fstatat, Mode, SFlag};
    use nix::unistd::fchownat;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    if depth >= MAX_DEPTH {
        anyhow::bail!("{} is more than {MAX_DEPTH} directories deep: not handed over", shown.display());
    }
    let fd = dir.as_raw_fd();
    // The directory's entries through its descriptor (never by path, which could be swapped).
    let entries = fs::read_dir(format!("/proc/self/fd/{fd}")).with_context(|| format!("listing {}", shown.display()))?;
    for entry in entries {
        let name = entry.with_context(|| format!("listing {}", shown.display()))?.file_name();
        let path = shown.join(&name);
        let st = match fstatat(Some(fd), name.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(nix::errno::Errno::ENOENT) => continue, // removed meanwhile
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        if st.st_dev != dev {
            continue; // another filesystem mounted inside: not ours to change
        }
        if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR {
            let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
            let raw = match openat(Some(fd), name.as_os_str(), flags, Mode::empty()) {
                Ok(raw) => raw,
                Err(nix::errno::Errno::ENOENT) => continue,
                Err(e) => return Err(e).with_context(|| format!("opening {}", path.display())),
            };
            // SAFETY: `openat` just returned this descriptor; nothing else owns it.
            let child = unsafe { OwnedFd::from_raw_fd(raw) };
            walk(&child, &path, dev, uid, gid, depth + 1, changed)?;
            if st.st_uid != uid || st.st_gid != gid {
                nix::unistd::fchown(child.as_raw_fd(), Some(uid.into()), Some(gid.into()))
                    .with_context(|| format!("chown {}", path.display()))?;
                *changed += 1;
            }
        } else if st.st_uid != uid || st.st_gid != gid {
            match fchownat(Some(fd), name.as_os_str(), Some(uid.into()), Some(gid.into()), AtFlags::AT_SYMLINK_NOFOLLOW) {
                Ok(()) => *changed += 1,
                Err(nix::errno::Errno::ENOENT) => {}
                Err(e) => return Err(e).with_context(|| format!("chown {}", path.display())),
            }
        }
    }
    Ok(())
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
        assert_eq!(ensure_user(&host, "mmadmin", "x", false).unwrap(), UserOutcome::Exists);
    }

    #[test]
    fn no_account_database_in_a_bare_tree() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(ensure_user(&Host::new(dir.path()), "mmadmin", "x", false).unwrap(), UserOutcome::NoAccountDatabase);
    }

    /// Root only (chown): skipped elsewhere.
    #[test]
    fn hand_over_changes_the_tree_and_follows_no_symlink() {
        use std::os::unix::fs::MetadataExt;
        if !nix::unistd::Uid::effective().is_root() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let outside = dir.path().join("outside");
        fs::write(&outside, "root's\n").unwrap();
        let tree = dir.path().join("tree");
        fs::create_dir_all(tree.join("a/b/c")).unwrap();
        fs::write(tree.join("a/b/c/file"), "x").unwrap();
        fs::write(tree.join("top"), "x").unwrap();
        std::os::unix::fs::symlink(&outside, tree.join("a/link")).unwrap();
        std::os::unix::fs::symlink(dir.path(), tree.join("a/dirlink")).unwrap();
        let (uid, gid) = (65534, 65533);
        // Not recursive: the directory alone.
        assert_eq!(hand_over(&tree, uid, gid, false).unwrap(), 1);
        assert_eq!(fs::metadata(tree.join("top")).unwrap().uid(), 0);
        // Recursive: 5 entries below plus the 2 symlinks themselves; the top is already owned.
        assert_eq!(hand_over(&tree, uid, gid, true).unwrap(), 7);
        for p in ["a", "a/b", "a/b/c", "a/b/c/file", "top", "a/link", "a/dirlink", ""] {
            let m = fs::symlink_metadata(tree.join(p)).unwrap();
            assert_eq!((m.uid(), m.gid()), (uid, gid), "{p}");
        }
        let (o, d) = (fs::metadata(&outside).unwrap(), fs::metadata(dir.path()).unwrap());
        assert_eq!((o.uid(), d.uid()), (0, 0), "a symlink was followed");
        // Done: a second hand-over only looks.
        assert_eq!(hand_over(&tree, uid, gid, true).unwrap(), 0);
        assert!(hand_over(&outside, uid, gid, true).is_err(), "not a directory");
    }
}
