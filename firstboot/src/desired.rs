//! The node's whole desired state in one pure function: every file, unit, account and directory
//! that `run` manages, from the configuration and a few observed facts. `plan` and `run` both
//! start here, so the plan cannot leave out what the run changes.

use std::path::PathBuf;

use anyhow::Result;
use mmconfig::{
    NodeConfig, ADMIN_USER, DATA_MOUNT, INSTALLED_CONFIG, INSTALLED_HOST_KEY, METRICS_DIR, PUBLIC_DIR, PUSH_USER, SYNC_STATE_DIR, SYNC_USER,
};

use crate::files::{RenderedFile, Verb};
use crate::hostkey::Delivered;
use crate::network::{self, Nic};
use crate::services::{self, Family, Paths};

/// What the renderers need to know about the machine (observed by `run::facts`).
#[derive(Debug, Clone)]
pub struct Facts {
    pub family: Family,
    pub nics: Vec<Nic>,
    /// The emulated NIC's driver that stands in for the model's under QEMU's boot test
    /// ([`crate::standin`]); None on real hardware.
    pub nic_stand_in: Option<String>,
    /// The Let's Encrypt certificate exists: nginx may listen on 443.
    pub tls_ready: bool,
    /// UUID of the data filesystem mounted (or about to be) at the data mount point.
    pub data_fs_uuid: Option<String>,
    /// The data filesystem is (or will be, after storage) mounted: project directories belong there.
    pub data_ready: bool,
    /// `IMAGE_VERSION` of the running root (None: not one of our images).
    pub image_version: Option<String>,
    /// The OS slots (a live node only).
    pub os: Option<mmconfig::os::OsStatus>,
}

/// An account `run` creates with `useradd` when missing, then gives its `~/.ssh` (login accounts).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub user: &'static str,
    pub comment: &'static str,
    /// A system account: no home, no login shell, no ssh (the sync account).
    pub system: bool,
}

/// Every account firstboot may create: `run` looks a planned account up here by name.
pub const ACCOUNTS: &[Account] = &[
    Account { user: ADMIN_USER, comment: "micro mirror fleet admin", system: false },
    Account { user: PUSH_USER, comment: "upstream push trigger", system: false },
    Account { user: SYNC_USER, comment: "micro mirror sync", system: true },
];

pub fn account(user: &str) -> Option<&'static Account> {
    ACCOUNTS.iter().find(|a| a.user == user)
}

/// A directory `run` creates when missing, owned by `owner` (root when None), mode 0755.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Directory {
    pub path: PathBuf,
    pub owner: Option<&'static str>,
    /// Found owned by someone else, the directory and everything below it are handed to `owner`
    /// (a tree synced as root before syncs ran unprivileged); otherwise only the directory itself.
    pub recursive: bool,
    /// The lock of the sync that writes here (a project tree), held while it changes hands.
    pub lock: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct Desired {
    /// Hostname, network and the installed configuration: written before storage.
    pub early_files: Vec<RenderedFile>,
    /// Services, keys, units: written after storage (and after the accounts exist).
    pub files: Vec<RenderedFile>,
    pub accounts: Vec<Account>,
    /// (unit, target whose .wants it goes into)
    pub units: Vec<(String, String)>,
    /// Project trees, mm-sync's state and metrics directories, absolute on the node.
    pub directories: Vec<Directory>,
}

/// `key` is the host key delivered with the configuration (it is not part of node.toml: node.toml
/// is printed and diffed, the key never is).
pub fn render_all(cfg: &NodeConfig, key: &Delivered, facts: &Facts) -> Result<Desired> {
    let mut early_files = network::render_host_identity(cfg);
    let ports = network::select_ports(cfg, &facts.nics, facts.nic_stand_in.as_deref());
    if facts.family == Family::Rhel {
        early_files.extend(network::render_nm_keyfiles(cfg, &ports));
    } else {
        early_files.extend(network::render_networkd(cfg, &ports));
    }
    // The installed copy is what mm-sync and later boots read; its key stays beside it.
    early_files.push(RenderedFile::new(INSTALLED_CONFIG, 0o644, cfg.to_toml()));
    // sshd's only host key, before sshd starts (we are ordered before it); sshd loads host keys
    // when it starts or reloads.
    early_files.extend(key.files().into_iter().map(|f| f.read_by(facts.family.ssh_unit(), Verb::Reload)));
    if let Delivered::Key { private, public } = key {
        early_files.push(RenderedFile::new(INSTALLED_HOST_KEY, 0o600, private.clone()));
        early_files.push(RenderedFile::new(format!("{INSTALLED_HOST_KEY}.pub"), 0o644, public.clone()));
    }

    let svc = services::render_services(cfg, &Paths { family: facts.family, tls_ready: facts.tls_ready, ..Paths::default() })?;
    let mut files = svc.files;
    if let Some(uuid) = &facts.data_fs_uuid {
        files.push(services::render_mount_unit(uuid)?);
    }
    if let Some(v) = &facts.image_version {
        files.push(services::render_image_metric(v, facts.os.as_ref())?);
    }
    if let Some(os) = &facts.os {
        files.push(RenderedFile::new(mmconfig::os::SEEN_PATH, 0o644, serde_json::to_string_pretty(&os.seen())? + "\n"));
    }
    let mut accounts = vec![ACCOUNTS[0].clone()];
    if svc.push_user {
        accounts.push(ACCOUNTS[1].clone());
    }
    accounts.push(ACCOUNTS[2].clone());
    // Syncs run as SYNC_USER: it owns what mm-sync writes (its state, its metrics file's
    // directory, each project tree and the public document's directory), root owns the rest.
    let sync_dir = |path: PathBuf, recursive: bool| Directory { path, owner: Some(SYNC_USER), recursive, lock: None };
    let mut directories = vec![sync_dir(SYNC_STATE_DIR.into(), true), sync_dir(METRICS_DIR.into(), false)];
    if facts.data_ready {
        directories.push(sync_dir(PathBuf::from(DATA_MOUNT).join(PUBLIC_DIR), true));
        directories.extend(cfg.projects.iter().map(|p| Directory {
            lock: Some(PathBuf::from(SYNC_STATE_DIR).join(&p.name).join("lock")),
            ..sync_dir(PathBuf::from(DATA_MOUNT).join(&p.directory), true)
        }));
    }
    Ok(Desired { early_files, files, accounts, units: svc.enable, directories })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testdata::node;
    use std::path::Path;

    fn facts() -> Facts {
        Facts {
            family: Family::Debian,
            nics: Vec::new(),
            nic_stand_in: None,
            tls_ready: false,
            data_fs_uuid: None,
            data_ready: false,
            image_version: None,
            os: None,
        }
    }

    #[test]
    fn everything_run_manages_is_in_the_desired_state() {
        let cfg = node("ziply");
        let d = render_all(&cfg, &Delivered::Missing, &facts()).unwrap();
        let paths: Vec<String> = d.early_files.iter().chain(&d.files).map(|f| f.path.display().to_string()).collect();
        for want in ["/etc/hostname", INSTALLED_CONFIG, "/etc/nginx/sites-enabled/default", "/etc/rsyncd.conf", "/etc/nftables.conf"] {
            assert!(paths.iter().any(|p| p == want), "{want} missing from {paths:?}");
        }
        assert!(d.units.iter().any(|(u, _)| u == "nginx.service"));
        assert_eq!(d.accounts[0].user, ADMIN_USER);
        assert!(d.accounts.iter().any(|a| a.user == SYNC_USER && a.system));
        let dirs: Vec<&Path> = d.directories.iter().map(|d| d.path.as_path()).collect();
        assert_eq!(dirs, [Path::new(SYNC_STATE_DIR), Path::new(METRICS_DIR)], "no project directories without a data filesystem");
        assert!(d.directories.iter().all(|d| d.owner == Some(SYNC_USER)));
        assert!(!paths.iter().any(|p| p.ends_with("srv-mirror.mount")));

        let d =
            render_all(&cfg, &Delivered::Missing, &Facts { data_fs_uuid: Some("0a1b-2c".into()), data_ready: true, ..facts() }).unwrap();
        let mount = d.files.iter().find(|f| f.path.ends_with("srv-mirror.mount")).expect("mount unit");
        assert!(String::from_utf8_lossy(&mount.contents).contains("What=/dev/disk/by-uuid/0a1b-2c\n"));
        assert_eq!(d.directories.len(), cfg.projects.len() + 3);
        let tree = d.directories.iter().find(|d| d.path == Path::new(DATA_MOUNT).join(&cfg.projects[0].directory)).unwrap();
        assert!(tree.owner == Some(SYNC_USER) && tree.recursive);
        assert!(d.directories.iter().any(|d| d.path == Path::new(DATA_MOUNT).join(PUBLIC_DIR)));
    }

    #[test]
    fn our_image_tells_node_exporter_its_version_in_a_file_promtool_accepts() {
        let cfg = node("ziply");
        let metric =
            |f: &Facts| render_all(&cfg, &Delivered::Missing, f).unwrap().files.into_iter().find(|f| f.path.ends_with("mm_image.prom"));
        assert!(metric(&facts()).is_none(), "a host that is not our image has no image version");
        let f = metric(&Facts { image_version: Some("20261104.024542-3f2a9c1e0b7d".into()), ..facts() }).expect("mm_image.prom");
        assert_eq!(f.path, Path::new(METRICS_DIR).join("mm_image.prom"));
        let text = String::from_utf8(f.contents).unwrap();
        assert!(text.contains("\nmm_image_info{image_version=\"20261104.024542-3f2a9c1e0b7d\",slot=\"\"} 1\n"), "{text}");
        assert!(!text.contains("mm_os_rollback"), "{text}");
        promtool_accepts(&text);
        // In slot A after a newer image failed its tries in slot B.
        let os = mmconfig::os::OsStatus {
            version: 1,
            image_version: Some("20261104.024542-3f2a9c1e0b7d".into()),
            slot: Some(mmconfig::os::Slot::A),
            trial: false,
            entries: vec![],
            rollbacks: vec![mmconfig::os::Rollback {
                version: "20261201.000000-bbbbbbbbbbbb".into(),
                slot: mmconfig::os::Slot::B,
                reason: "its health gate failed".into(),
                at: Some(1_796_000_000),
            }],
        };
        let f = metric(&Facts { image_version: Some("20261104.024542-3f2a9c1e0b7d".into()), os: Some(os), ..facts() }).unwrap();
        let text = String::from_utf8(f.contents).unwrap();
        assert!(text.contains("slot=\"a\"} 1\n"), "{text}");
        assert!(text.contains("\nmm_os_rollback_timestamp_seconds{image_version=\"20261201.000000-bbbbbbbbbbbb\"} 1796000000\n"), "{text}");
        promtool_accepts(&text);
    }

    fn promtool_accepts(text: &str) {
        let mut child = std::process::Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("promtool (apt-get install prometheus)");
        std::io::Write::write_all(child.stdin.as_mut().unwrap(), text.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "promtool: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    }
}
