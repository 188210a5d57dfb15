//! Before a sync: the account running it owns the project's tree and may write every directory a
//! run writes, so a sync started as the wrong user fails at once, naming each path, and leaves
//! nothing of its own behind (a root run would leave files the sync account cannot replace).

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use mmconfig::{Profile, SYNC_USER};
use nix::unistd::{access, AccessFlags, Uid, User};

use crate::engine::Env;

fn name(uid: u32) -> String {
    match User::from_uid(Uid::from_raw(uid)) {
        Ok(Some(u)) => format!("{} (uid {uid})", u.name),
        _ => format!("uid {uid}"),
    }
}

/// The directory itself, or its nearest existing ancestor (the one mm-sync would create it in).
fn existing(path: &Path) -> Option<&Path> {
    path.ancestors().find(|p| fs::symlink_metadata(p).is_ok())
}

/// Why `path` (or where it would be created) is not writable by this process, if it is not.
fn not_writable(path: &Path, me: &str) -> Option<String> {
    let at = existing(path)?;
    let err = access(at, AccessFlags::W_OK).err()?;
    let meta = fs::symlink_metadata(at).ok()?;
    Some(format!(
        "{} is not writable by {me}: owned by {}, mode {:04o} ({}){}",
        at.display(),
        name(meta.uid()),
        meta.mode() & 0o7777,
        err.desc(),
        if at == path { String::new() } else { format!(", so {} cannot be created", path.display()) }
    ))
}

/// Every reason this process may not sync `p`; empty when it may.
pub fn problems(env: &Env, p: &Profile) -> Vec<String> {
    let uid = nix::unistd::geteuid().as_raw();
    let me = name(uid);
    let mut out = Vec::new();
    let tree = env.tree(p);
    match fs::symlink_metadata(&tree) {
        Ok(m) if m.uid() != uid => out.push(format!(
            "{} belongs to {}, not to {me} running this sync: syncs run as the tree's owner \
             (`systemctl start mm-sync-{}.service` runs as {SYNC_USER}; `mm-firstboot run` hands a tree synced as root to {SYNC_USER})",
            tree.display(),
            name(m.uid()),
            p.name
        )),
        _ => out.extend(not_writable(&tree, &me)),
    }
    let state = env.state_dir(p);
    let metrics = env.metrics_file(p);
    let mut dirs = vec![state.clone(), state.join("logs"), metrics.parent().unwrap_or(Path::new("/")).to_path_buf()];
    dirs.dedup();
    // One line per directory in the way: three paths missing under one unwritable root are one problem.
    let mut blocked = Vec::new();
    for d in dirs {
        let at = existing(&d).map(Path::to_path_buf);
        if blocked.contains(&at) {
            continue;
        }
        if let Some(why) = not_writable(&d, &me) {
            out.push(why);
            blocked.push(at);
        }
    }
    // The lock is opened for writing: a lock file left by a root run blocks every later one.
    let lock = state.join("lock");
    if lock.exists() {
        out.extend(not_writable(&lock, &me));
    }
    out
}
