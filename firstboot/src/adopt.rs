//! Day-2 changes from the operator: adopting a new node.toml (which copy wins at boot), the
//! commit-confirmed rollback of a network change, and pruning a dropped project's data.
//!
//! Which copy wins at boot: the `MMCONFIG` partition carries the configuration the image was
//! built with; `/etc/micromirror/node.toml` is the installed copy. The installed copy wins only
//! when `mmbuild apply` put it there ([`Applied`] records it) *and* the partition still holds
//! what it held at that moment. So a reboot never brings back the older build-time copy, while
//! an operator who rewrites `MMCONFIG` by hand (or re-images the disk: the root and with it the
//! record are replaced) gets the partition's copy again.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use mmconfig::{NodeConfig, DATA_MOUNT, INSTALLED_CONFIG, STATE_DIR};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::apply::Host;
use crate::files::RenderedFile;

/// Written by `install-config`: what was adopted, and what `MMCONFIG` held at that moment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    /// SHA-256 of the adopted node.toml.
    pub config_sha256: String,
    /// SHA-256 of `MMCONFIG`'s node.toml when it was adopted; None on nodes without one.
    pub partition_sha256: Option<String>,
    pub applied_unix: u64,
}

/// A network change waiting for the operator's confirmation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    /// The configuration to go back to.
    pub previous: String,
    pub deadline_unix: u64,
}

/// Which copy of node.toml the boot uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Winner {
    Partition,
    Installed,
}

pub fn sha256(bytes: &[u8]) -> String {
    hostkit::ids::hex(&Sha256::digest(bytes))
}

/// The rule above, pure: `partition` and `installed` are the texts found (if any).
pub fn winner(partition: Option<&str>, installed: Option<&str>, applied: Option<&Applied>) -> Winner {
    let (Some(installed), Some(applied)) = (installed, applied) else {
        return if partition.is_some() { Winner::Partition } else { Winner::Installed };
    };
    let adopted_unchanged = sha256(installed.as_bytes()) == applied.config_sha256;
    let partition_unchanged = partition.map(|p| sha256(p.as_bytes())) == applied.partition_sha256;
    if partition.is_none() || (adopted_unchanged && partition_unchanged) {
        Winner::Installed
    } else {
        Winner::Partition
    }
}

fn state_file(host: &Host, name: &str) -> PathBuf {
    host.path(Path::new(STATE_DIR)).join("firstboot").join(name)
}

pub fn load_applied(host: &Host) -> Option<Applied> {
    serde_json::from_str(&std::fs::read_to_string(state_file(host, "applied.json")).ok()?).ok()
}

pub fn load_pending(host: &Host) -> Option<Pending> {
    serde_json::from_str(&std::fs::read_to_string(state_file(host, "pending.json")).ok()?).ok()
}

fn now_unix() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// What `install-config` did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Adopted {
    pub changed: bool,
    /// A network change is installed and rolls back at this time unless confirmed.
    pub confirm_by_unix: Option<u64>,
}

/// Adopt `text` as the node's configuration (validated, for this very node), keeping the
/// previous copy as node.toml.prev. With `confirm_within`, a change of addresses, gateway,
/// interface or resolvers must be confirmed (`confirm`) within that many seconds, else
/// `rollback` (scheduled by the caller) restores the previous configuration.
pub fn install_config(
    host: &Host,
    current: Option<&NodeConfig>,
    text: &str,
    partition: Option<&str>,
    confirm_within: Option<u64>,
) -> Result<Adopted> {
    let new = NodeConfig::from_toml(text, "the new node.toml")?;
    if let Some(cur) = current {
        if cur.node.fqdn != new.node.fqdn {
            bail!(
                "this node is {}; the configuration is for {}: refusing to adopt another node's identity (check the --node and the address you reached)",
                cur.node.fqdn,
                new.node.fqdn
            );
        }
    }
    let installed_path = host.path(Path::new(INSTALLED_CONFIG));
    let old_text = std::fs::read_to_string(&installed_path).ok();
    let mut adopted = Adopted { changed: old_text.as_deref() != Some(text), confirm_by_unix: None };
    if let (Some(cur), Some(secs)) = (current, confirm_within) {
        if cur.node.network_differs(&new.node) {
            let deadline = now_unix() + secs;
            let pending = Pending { previous: cur.to_toml(), deadline_unix: deadline };
            hostkit::atomic::write_mode(&state_file(host, "pending.json"), 0o600, serde_json::to_string_pretty(&pending)?.as_bytes())?;
            adopted.confirm_by_unix = Some(deadline);
        }
    }
    if let Some(old) = &old_text {
        if adopted.changed {
            host.install(&RenderedFile::new(format!("{INSTALLED_CONFIG}.prev"), 0o644, old.clone()))?;
        }
    }
    host.install(&RenderedFile::new(INSTALLED_CONFIG, 0o644, text))?;
    let applied = Applied {
        config_sha256: sha256(text.as_bytes()),
        partition_sha256: partition.map(|p| sha256(p.as_bytes())),
        applied_unix: now_unix(),
    };
    hostkit::atomic::write(&state_file(host, "applied.json"), (serde_json::to_string_pretty(&applied)? + "\n").as_bytes())?;
    Ok(adopted)
}

/// The operator reached the node after a network change: keep it.
pub fn confirm(host: &Host) -> Result<bool> {
    let path = state_file(host, "pending.json");
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e).with_context(|| format!("removing {}", path.display())),
    }
}

/// The unconfirmed change's previous configuration, re-adopted; None when nothing is pending
/// (confirmed in time). The caller converges the node afterwards.
pub fn rollback(host: &Host, partition: Option<&str>) -> Result<Option<String>> {
    let Some(p) = load_pending(host) else {
        return Ok(None);
    };
    install_config(host, None, &p.previous, partition, None)?;
    confirm(host)?;
    Ok(Some(p.previous))
}

/// Hosted projects and their directories, as the last run knew them: a project dropped from
/// the configuration still has its data there, and `status` and `prune` need to find it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Known {
    /// project name -> directory under the data mount
    pub projects: std::collections::BTreeMap<String, String>,
}

pub fn load_known(host: &Host) -> Known {
    std::fs::read_to_string(state_file(host, "projects.json")).ok().and_then(|t| serde_json::from_str(&t).ok()).unwrap_or_default()
}

/// Remember every project this configuration hosts (never forget one whose data is still there).
pub fn remember(host: &Host, cfg: &NodeConfig) -> Result<()> {
    let mut known = load_known(host);
    let before = known.clone();
    for p in &cfg.projects {
        known.projects.insert(p.name.clone(), p.directory.clone());
    }
    known.projects.retain(|name, dir| cfg.project(name).is_some() || host.path(Path::new(DATA_MOUNT)).join(dir.as_str()).exists());
    if known != before {
        hostkit::atomic::write(&state_file(host, "projects.json"), (serde_json::to_string_pretty(&known)? + "\n").as_bytes())?;
    }
    Ok(())
}

/// Projects no longer hosted whose data is still on the disk: (name, directory, bytes).
pub fn leftovers(host: &Host, cfg: &NodeConfig) -> Vec<(String, PathBuf, u64)> {
    load_known(host)
        .projects
        .into_iter()
        .filter(|(name, _)| cfg.project(name).is_none())
        .filter_map(|(name, dir)| {
            let path = Path::new(DATA_MOUNT).join(&dir);
            let full = host.path(&path);
            full.is_dir().then(|| (name, path, tree_bytes(&full)))
        })
        .collect()
}

fn tree_bytes(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            match e.metadata() {
                Ok(m) if m.is_dir() => stack.push(e.path()),
                Ok(m) => total += m.blocks() * 512,
                Err(_) => {}
            }
        }
    }
    total
}

/// Delete a dropped project's data (only with the operator's explicit `prune PROJECT`); returns
/// the bytes freed. A project the configuration still hosts is refused.
pub fn prune(host: &Host, cfg: &NodeConfig, project: &str) -> Result<u64> {
    if cfg.project(project).is_some() {
        bail!("{project} is still hosted by {}: drop it from the node's projects in the fleet and apply first", cfg.node.fqdn);
    }
    let known = load_known(host);
    let Some(dir) = known.projects.get(project) else {
        bail!(
            "{} has no data of a project called {project} (known: {})",
            cfg.node.fqdn,
            known.projects.keys().cloned().collect::<Vec<_>>().join(", ")
        );
    };
    // Directory names come from profiles (plain names); never follow one outside the data mount.
    if dir.is_empty() || dir.contains('/') || dir.starts_with('.') {
        bail!("refusing to delete {dir:?}: not a plain directory name under {DATA_MOUNT}");
    }
    // Projects sharing a directory with a hosted one keep it.
    if cfg.projects.iter().any(|p| &p.directory == dir) {
        bail!("{DATA_MOUNT}/{dir} is also the directory of a hosted project: not deleting it");
    }
    let full = host.path(Path::new(DATA_MOUNT)).join(dir);
    let bytes = tree_bytes(&full);
    if full.exists() {
        std::fs::remove_dir_all(&full).with_context(|| format!("deleting {}", full.display()))?;
    }
    let mut known = known;
    known.projects.remove(project);
    hostkit::atomic::write(&state_file(host, "projects.json"), (serde_json::to_string_pretty(&known)? + "\n").as_bytes())?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testdata::node;

    #[test]
    fn which_copy_wins_at_boot() {
        let (part, inst) = ("partition = 1\n", "installed = 2\n");
        let applied = Applied { config_sha256: sha256(inst.as_bytes()), partition_sha256: Some(sha256(part.as_bytes())), applied_unix: 1 };
        // (partition, installed, applied) -> winner
        type Row<'a> = (Option<&'a str>, Option<&'a str>, Option<&'a Applied>, Winner);
        let table: &[Row] = &[
            (Some(part), Some(inst), None, Winner::Partition),           // built image: the partition
            (None, Some(inst), None, Winner::Installed),                 // kickstart install
            (Some(part), Some(inst), Some(&applied), Winner::Installed), // after apply, across reboots
            (Some("edited by hand\n"), Some(inst), Some(&applied), Winner::Partition), // MMCONFIG rewritten
            (Some(part), Some("someone edited /etc\n"), Some(&applied), Winner::Partition),
            (None, Some(inst), Some(&applied), Winner::Installed),
            (Some(part), None, Some(&applied), Winner::Partition),
        ];
        for (i, (p, inst, a, want)) in table.iter().enumerate() {
            assert_eq!(winner(*p, *inst, *a), *want, "row {i}");
        }
    }

    #[test]
    fn adopting_keeps_the_previous_copy_and_refuses_another_node() {
        let dir = tempfile::tempdir().unwrap();
        let host = Host::new(dir.path());
        let cur = node("ci");
        let first = cur.to_toml();
        install_config(&host, None, &first, Some("p"), None).unwrap();
        let mut changed = cur.clone();
        changed.node.sponsor.name = "New <Sponsor>".into();
        let a = install_config(&host, Some(&cur), &changed.to_toml(), Some("p"), Some(300)).unwrap();
        assert!(a.changed && a.confirm_by_unix.is_none(), "a sponsor change is no network change");
        assert_eq!(std::fs::read_to_string(dir.path().join("etc/micromirror/node.toml.prev")).unwrap(), first);
        let again = install_config(&host, Some(&changed), &changed.to_toml(), Some("p"), None).unwrap();
        assert!(!again.changed);
        let other = node("ziply").to_toml();
        let err = install_config(&host, Some(&changed), &other, None, None).unwrap_err().to_string();
        assert!(err.contains("refusing to adopt another node's identity"), "{err}");
        assert!(install_config(&host, Some(&changed), "schema = 1\nbroken", None, None).is_err());
    }

    #[test]
    fn an_unconfirmed_network_change_rolls_back_a_confirmed_one_stays() {
        let dir = tempfile::tempdir().unwrap();
        let host = Host::new(dir.path());
        let cur = node("ci");
        install_config(&host, None, &cur.to_toml(), None, None).unwrap();
        let mut moved = cur.clone();
        moved.node.dns = vec!["192.0.2.53".into()];
        let a = install_config(&host, Some(&cur), &moved.to_toml(), None, Some(120)).unwrap();
        assert!(a.confirm_by_unix.is_some());
        assert_eq!(rollback(&host, None).unwrap().as_deref(), Some(cur.to_toml().as_str()));
        assert_eq!(std::fs::read_to_string(dir.path().join("etc/micromirror/node.toml")).unwrap(), cur.to_toml());
        assert_eq!(rollback(&host, None).unwrap(), None, "nothing pending any more");

        install_config(&host, Some(&cur), &moved.to_toml(), None, Some(120)).unwrap();
        assert!(confirm(&host).unwrap());
        assert_eq!(rollback(&host, None).unwrap(), None);
        assert_eq!(std::fs::read_to_string(dir.path().join("etc/micromirror/node.toml")).unwrap(), moved.to_toml());
    }

    #[test]
    fn a_dropped_projects_data_stays_until_pruned() {
        let dir = tempfile::tempdir().unwrap();
        let host = Host::new(dir.path());
        let cfg = node("ci");
        let p = &cfg.projects[0];
        let tree = dir.path().join("srv/mirror").join(&p.directory);
        std::fs::create_dir_all(tree.join("sub")).unwrap();
        std::fs::write(tree.join("sub/file"), vec![1u8; 100_000]).unwrap();
        remember(&host, &cfg).unwrap();
        assert!(leftovers(&host, &cfg).is_empty());
        let err = prune(&host, &cfg, &p.name).unwrap_err().to_string();
        assert!(err.contains("still hosted"), "{err}");

        let mut dropped = cfg.clone();
        dropped.projects.retain(|q| q.name != p.name);
        remember(&host, &dropped).unwrap();
        let left = leftovers(&host, &dropped);
        assert_eq!(left.len(), 1);
        assert!(left[0].2 >= 100_000, "{left:?}");
        assert!(tree.join("sub/file").exists(), "dropping a project must not delete its data");
        let freed = prune(&host, &dropped, &p.name).unwrap();
        assert!(freed >= 100_000 && !tree.exists());
        assert!(prune(&host, &dropped, &p.name).unwrap_err().to_string().contains("no data of a project"));
    }
}
