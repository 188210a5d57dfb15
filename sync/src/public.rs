//! Builds and writes the node's public freshness document (`mmconfig::public`, served as
//! `/.mm/status.json`) from each project's record and the upstream markers it serves.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Result;
use mmconfig::marker::{self, Marker};
use mmconfig::public::{PublicProject, PublicRollback, PublicStatus, VERSION};
use mmconfig::{NodeConfig, DATA_MOUNT};

use crate::engine::{fs_space, load_status, Env};
use crate::outcome::{Outcome, SyncStatus};
use hostkit::atomic::write_mode as write_atomic;

/// The upstream markers, from the same table `mmbuild status` reads.
const MARKERS: &str = include_str!("../../overlays/monitoring/markers.toml");

pub fn markers() -> BTreeMap<String, Marker> {
    // The table is part of this binary and checked by a unit test.
    marker::parse_table(MARKERS).unwrap_or_default()
}

/// Pure: the document from each project's recorded status and the marker times read.
pub fn build(
    cfg: &NodeConfig,
    status: &dyn Fn(&str) -> Option<SyncStatus>,
    marker_time: &dyn Fn(&str, &Marker) -> Option<u64>,
    space: Option<(u64, u64)>,
    image_version: Option<String>,
    last_rollback: Option<PublicRollback>,
    now: u64,
) -> PublicStatus {
    let markers = markers();
    let projects = cfg
        .projects
        .iter()
        .map(|p| {
            let st = status(&p.name);
            let m = markers.get(&p.name);
            PublicProject {
                project: p.name.clone(),
                result: st.as_ref().map_or(Outcome::NeverRun, |s| s.result),
                last_success_unix: st.as_ref().and_then(|s| s.last_success_unix),
                last_run_unix: st.as_ref().map(|s| s.finished_unix).filter(|t| *t > 0),
                upstream_marker: m.map(|m| m.path.clone()),
                upstream_marker_unix: m.and_then(|m| marker_time(&p.name, m)),
                tree_bytes: st.as_ref().map_or(0, |s| s.tree_bytes),
                check_errors: st.as_ref().map_or(0, |s| s.check_errors as u64),
            }
        })
        .collect();
    PublicStatus {
        version: VERSION,
        node: cfg.node.fqdn.clone(),
        image_version,
        last_rollback,
        generated_unix: now,
        data_free_bytes: space.map(|s| s.0),
        data_total_bytes: space.map(|s| s.1),
        projects,
    }
}

/// Read every project's status and marker and replace the public document atomically.
pub fn write(env: &Env, cfg: &NodeConfig) -> Result<()> {
    let data = env.root.join(DATA_MOUNT.trim_start_matches('/'));
    let status = |name: &str| cfg.project(name).and_then(|p| load_status(env, p));
    let marker_time = |name: &str, m: &Marker| {
        let p = cfg.project(name)?;
        let path = env.tree(p).join(&m.path);
        let text = std::fs::read(&path).ok()?;
        // Markers are small; anything larger is not one.
        (text.len() <= 1 << 20).then(|| marker::parse(m.kind, &String::from_utf8_lossy(&text)))?
    };
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let image_version = std::fs::read_to_string(env.root.join("etc/os-release")).ok().and_then(|t| mmconfig::image::from_os_release(&t));
    let doc = build(cfg, &status, &marker_time, fs_space(&data), image_version, last_rollback(&env.root), now);
    let dest = data.join(PublicStatus::rel_path());
    std::fs::create_dir_all(dest.parent().unwrap_or(Path::new("/")))?;
    write_atomic(&dest, 0o644, (serde_json::to_string_pretty(&doc)? + "\n").as_bytes())?;
    Ok(())
}

/// The newest rollback in mm-firstboot's word on the OS ([`mmconfig::os::SEEN_PATH`] under
/// `root`), without the gate's reasons; None on a node without slots or without one.
fn last_rollback(root: &Path) -> Option<PublicRollback> {
    let bytes = std::fs::read(root.join(mmconfig::os::SEEN_PATH.trim_start_matches('/'))).ok()?;
    let seen: mmconfig::os::OsSeen = serde_json::from_slice(&bytes).ok()?;
    seen.last_rollback.as_ref().map(PublicRollback::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_built_in_marker_table_parses() {
        assert_eq!(marker::parse_table(MARKERS).unwrap(), markers());
        assert!(markers().contains_key("archlinux"));
    }

    #[test]
    fn the_last_rollback_is_published_without_the_gates_reasons() {
        let root = tempfile::tempdir().unwrap();
        assert_eq!(last_rollback(root.path()), None);
        let seen = mmconfig::os::OsSeen {
            version: 1,
            image_version: Some("20261104.024542-3f2a9c1e0b7d".into()),
            slot: Some(mmconfig::os::Slot::A),
            last_rollback: Some(mmconfig::os::Rollback {
                version: "20261201.000000-bbbbbbbbbbbb".into(),
                slot: mmconfig::os::Slot::B,
                reason: "rsync.service is masked at 10.1.2.3".into(),
                at: Some(1_796_000_000),
            }),
        };
        let path = root.path().join(mmconfig::os::SEEN_PATH.trim_start_matches('/'));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, serde_json::to_vec(&seen).unwrap()).unwrap();
        let r = last_rollback(root.path());
        assert_eq!(r, Some(PublicRollback { image_version: "20261201.000000-bbbbbbbbbbbb".into(), at_unix: Some(1_796_000_000) }));
        let cfg = crate::testdata::node("ziply");
        let doc = build(&cfg, &|_| None, &|_, _| None, None, None, r, 1);
        let text = serde_json::to_string(&doc).unwrap();
        assert!(text.contains(r#""last_rollback":{"image_version":"20261201.000000-bbbbbbbbbbbb","at_unix":1796000000}"#), "{text}");
        assert!(!text.contains("masked") && !text.contains("10.1.2.3"), "{text}");
        std::fs::write(&path, b"{not json").unwrap();
        assert_eq!(last_rollback(root.path()), None);
    }

    #[test]
    fn per_project_freshness_and_nothing_private() {
        let mut cfg = crate::testdata::node("ziply");
        cfg.projects.iter_mut().for_each(|p| p.sync.upstream = "rsync://user:secret@up.example/x/".into());
        let status = |name: &str| {
            (name == "archlinux").then(|| SyncStatus {
                project: name.into(),
                upstream: "rsync://user:secret@up.example/x/".into(),
                result: crate::Outcome::Success,
                message: "secret message".into(),
                finished_unix: 200,
                tree_bytes: 5_000,
                last_success_unix: Some(200),
                log: "/var/lib/micromirror/sync/archlinux/logs/1.log".into(),
                ..Default::default()
            })
        };
        let marker_time = |name: &str, m: &Marker| (name == "archlinux" && m.path == "lastsync").then_some(150);
        let doc = build(&cfg, &status, &marker_time, Some((7, 9)), Some("20261104.024542-3f2a9c1e0b7d".into()), None, 300);
        let arch = doc.projects.iter().find(|p| p.project == "archlinux").unwrap();
        assert_eq!(
            arch,
            &PublicProject {
                project: "archlinux".into(),
                result: Outcome::Success,
                last_success_unix: Some(200),
                last_run_unix: Some(200),
                upstream_marker: Some("lastsync".into()),
                upstream_marker_unix: Some(150),
                tree_bytes: 5_000,
                check_errors: 0,
            }
        );
        let epel = doc.projects.iter().find(|p| p.project == "epel").unwrap();
        assert_eq!((epel.result.as_str(), epel.last_success_unix), ("never-run", None));
        let text = serde_json::to_string(&doc).unwrap();
        for private in ["secret", "up.example", "logs", "192.0.2", "ssh-", "mirror@"] {
            assert!(!text.contains(private), "{private} leaked: {text}");
        }
        assert_eq!((doc.data_free_bytes, doc.version, doc.node.as_str()), (Some(7), 1, "ziply.mm.example.net"));
        assert!(text.contains(r#""image_version":"20261104.024542-3f2a9c1e0b7d""#), "{text}");
    }
}
