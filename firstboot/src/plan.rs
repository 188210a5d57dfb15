//! What `run` would change: the desired state compared with the node, read-only. `run` applies
//! exactly these changes and records each one's description, so plan and run cannot disagree.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::accounts;
use crate::apply::Host;
use crate::desired::{Account, Directory};
use crate::files::{RenderedFile, Verb};

pub use mmconfig::plan::Change;

/// Files whose contents differ from what is installed (or whose mode does).
pub fn file_changes(host: &Host, files: &[RenderedFile]) -> Vec<Change> {
    files
        .iter()
        .filter_map(|f| {
            let dest = host.path(&f.path);
            let old = fs::read(&dest).ok();
            let mode = fs::metadata(&dest).ok().map(|m| m.permissions().mode() & 0o7777);
            if old.as_deref() == Some(f.contents.as_slice()) && mode == Some(f.mode) {
                return None;
            }
            // Private files (host keys, anything 0600 or tighter) never appear in a diff: plans
            // travel to the operator's terminal and logs.
            let private = f.mode & 0o077 == 0;
            let diff = match &old {
                Some(old) if !private && old != &f.contents => Some(unified_diff(&f.path, old, &f.contents)),
                Some(_) if old.as_deref() == Some(f.contents.as_slice()) => {
                    Some(format!("mode {:04o} -> {:04o}\n", mode.unwrap_or(0), f.mode))
                }
                _ => None,
            };
            Some(Change::WriteFile { path: f.path.clone(), mode: f.mode, diff, new: old.is_none() })
        })
        .collect()
}

pub fn unified_diff(path: &Path, old: &[u8], new: &[u8]) -> String {
    let (old, new) = (String::from_utf8_lossy(old), String::from_utf8_lossy(new));
    let shown = path.display().to_string();
    similar::TextDiff::from_lines(old.as_ref(), new.as_ref())
        .unified_diff()
        .context_radius(2)
        .header(&format!("{shown} (installed)"), &format!("{shown} (new)"))
        .to_string()
}

/// What the running units must do about these file changes: each unit that reads a written file
/// once, with the strongest verb any of its files needs, in the order the files come.
pub fn service_changes<'a>(changes: &[Change], files: impl Iterator<Item = &'a RenderedFile> + Clone) -> Vec<Change> {
    let mut out: Vec<(String, Verb, Vec<PathBuf>)> = Vec::new();
    for c in changes {
        let Change::WriteFile { path, new, .. } = c else { continue };
        let Some(f) = files.clone().find(|f| &f.path == path) else { continue };
        // A unit whose own file is new cannot be running yet.
        for (unit, verb) in f.read_by.iter().filter(|(unit, _)| !(*new && path.file_name().is_some_and(|n| n == unit.as_str()))) {
            match out.iter_mut().find(|(u, ..)| u == unit) {
                Some((_, v, because)) => {
                    *v = (*v).max(*verb);
                    because.push(path.clone());
                }
                None => out.push((unit.clone(), *verb, vec![path.clone()])),
            }
        }
    }
    out.into_iter().map(|(unit, verb, because)| Change::Service { unit, verb, because }).collect()
}

/// Accounts to create, then the ssh directories to hand over: after `files` are written (root
/// writes them), any account whose `~/.ssh` gets a file, or is not its own yet, needs owning.
pub fn account_changes(host: &Host, accounts: &[Account], files: &[Change]) -> (Vec<Change>, Vec<Change>) {
    let mut create = Vec::new();
    let mut own = Vec::new();
    for a in accounts {
        let exists = accounts::lookup(host, a.user).is_some();
        let can_create = exists || host.live() || host.path(Path::new("/etc/passwd")).exists();
        if !can_create {
            continue; // a bare test tree: `run` notes it, nothing changes
        }
        if !exists {
            create.push(Change::CreateAccount { user: a.user.into() });
        }
        if a.system {
            continue; // no home, no keys
        }
        let ssh = PathBuf::from("/home").join(a.user).join(".ssh");
        let writes_keys = files.iter().any(|c| matches!(c, Change::WriteFile { path, .. } if path.starts_with(&ssh)));
        if !exists || writes_keys || !ssh_dir_owned(host, a.user) {
            own.push(Change::OwnSshDir { user: a.user.into() });
        }
    }
    (create, own)
}

/// Whether the account's home, `.ssh` and everything in it belong to it, `.ssh` being 0700.
pub fn ssh_dir_owned(host: &Host, user: &str) -> bool {
    let Some((uid, gid)) = accounts::lookup(host, user) else {
        return true;
    };
    let home = host.path(Path::new("/home")).join(user);
    let ssh = home.join(".ssh");
    let mut paths = vec![home, ssh.clone()];
    paths.extend(fs::read_dir(&ssh).into_iter().flatten().flatten().map(|e| e.path()));
    let owned = paths.iter().all(|p| fs::symlink_metadata(p).map_or(true, |m| m.uid() == uid && m.gid() == gid));
    owned && fs::metadata(&ssh).map_or(true, |m| m.permissions().mode() & 0o7777 == 0o700)
}

/// Directories to create, and existing ones to hand to their owner. An owner that does not exist
/// yet is about to be created (its account change comes first); in a bare test tree without
/// /etc/passwd ownership is left alone.
pub fn directory_changes(host: &Host, dirs: &[Directory]) -> Vec<Change> {
    let accounts_exist = host.live() || host.path(Path::new("/etc/passwd")).exists();
    dirs.iter()
        .filter_map(|d| {
            let owner = d.owner.filter(|_| accounts_exist);
            let Ok(meta) = fs::symlink_metadata(host.path(&d.path)) else {
                return Some(Change::CreateDirectory { path: d.path.clone(), owner: owner.map(String::from) });
            };
            let user = owner?;
            let owned = accounts::lookup(host, user).is_some_and(|(uid, gid)| meta.is_dir() && meta.uid() == uid && meta.gid() == gid);
            (!owned).then(|| Change::OwnDirectory { path: d.path.clone(), user: user.into(), recursive: d.recursive, lock: d.lock.clone() })
        })
        .collect()
}

/// Units not enabled yet. A unit neither installed nor about to be written is left out here and
/// reported by `run` (a package missing from the image is for the mirror team to see).
pub fn unit_changes(host: &Host, units: &[(String, String)], files: &[RenderedFile]) -> Vec<Change> {
    units
        .iter()
        .filter(|(unit, target)| {
            let written = files.iter().any(|f| f.path.file_name().is_some_and(|n| n == unit.as_str()));
            !host.enabled(unit, target) && (written || host.unit_installed(unit))
        })
        .map(|(unit, target)| Change::EnableUnit { unit: unit.clone(), target: target.clone() })
        .collect()
}

/// Units we install only for something configured (a project's sync, HTTPS renewal): the ones
/// on the node that the configuration no longer asks for are stopped, disabled and removed.
const OWN_UNIT_PREFIXES: &[&str] = &["mm-sync-", "mm-certbot."];

pub fn stale_changes(host: &Host, files: &[RenderedFile], units: &[(String, String)]) -> Vec<Change> {
    let dir = Path::new("/etc/systemd/system");
    let mut names: Vec<String> = fs::read_dir(host.path(dir))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| OWN_UNIT_PREFIXES.iter().any(|p| n.starts_with(p)) && (n.ends_with(".service") || n.ends_with(".timer")))
        .filter(|n| !files.iter().any(|f| f.path == dir.join(n)))
        .collect();
    names.sort();
    let mut disable = Vec::new();
    let mut remove = Vec::new();
    for n in names {
        for target in ["timers.target", "multi-user.target"] {
            if host.enabled(&n, target) && !units.iter().any(|(u, _)| *u == n) {
                disable.push(Change::DisableUnit { unit: n.clone(), target: target.into() });
            }
        }
        remove.push(Change::RemoveFile { path: dir.join(&n) });
    }
    disable.extend(remove);
    disable
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_compared_by_contents_and_mode_and_private_ones_never_diffed() {
        let dir = tempfile::tempdir().unwrap();
        let host = Host::new(dir.path());
        fs::create_dir_all(dir.path().join("etc")).unwrap();
        fs::write(dir.path().join("etc/a.conf"), "one\ntwo\nthree\n").unwrap();
        fs::set_permissions(dir.path().join("etc/a.conf"), fs::Permissions::from_mode(0o644)).unwrap();
        fs::write(dir.path().join("etc/key"), "old secret\n").unwrap();
        let files = vec![
            RenderedFile::new("/etc/a.conf", 0o644, "one\nTWO\nthree\n"),
            RenderedFile::new("/etc/key", 0o600, "new secret\n"),
            RenderedFile::new("/etc/new.conf", 0o644, "x\n"),
        ];
        let changes = file_changes(&host, &files);
        assert_eq!(changes.len(), 3);
        let Change::WriteFile { diff: Some(diff), new: false, .. } = &changes[0] else { panic!("{changes:?}") };
        assert!(diff.contains("-two\n+TWO\n") && diff.contains("/etc/a.conf (installed)"), "{diff}");
        assert!(matches!(&changes[1], Change::WriteFile { diff: None, new: false, .. }), "a private file must not be diffed");
        assert!(!serde_json::to_string(&changes).unwrap().contains("secret"));
        assert_eq!(changes[2].describe(), "create /etc/new.conf");

        fs::write(dir.path().join("etc/a.conf"), "one\nTWO\nthree\n").unwrap();
        fs::set_permissions(dir.path().join("etc/a.conf"), fs::Permissions::from_mode(0o600)).unwrap();
        let changes = file_changes(&host, &files[..1]);
        assert!(matches!(&changes[0], Change::WriteFile { diff: Some(d), .. } if d == "mode 0600 -> 0644\n"), "{changes:?}");
        fs::set_permissions(dir.path().join("etc/a.conf"), fs::Permissions::from_mode(0o644)).unwrap();
        assert!(file_changes(&host, &files[..1]).is_empty());
    }
}
