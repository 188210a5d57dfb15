//! The node's whole desired state in one pure function: every file, unit, account and directory
//! that `run` manages, from the configuration and a few observed facts. `plan` and `run` both
//! start here, so the plan cannot leave out what the run changes.

use std::path::PathBuf;

use anyhow::Result;
use mmconfig::{NodeConfig, ADMIN_USER, DATA_MOUNT, INSTALLED_CONFIG, INSTALLED_HOST_KEY, PUSH_USER};

use crate::files::RenderedFile;
use crate::hostkey::Delivered;
use crate::network::{self, Nic};
use crate::services::{self, Family, Paths};

/// What the renderers need to know about the machine (observed by `run::facts`).
#[derive(Debug, Clone)]
pub struct Facts {
    pub family: Family,
    pub nics: Vec<Nic>,
    /// The Let's Encrypt certificate exists: nginx may listen on 443.
    pub tls_ready: bool,
    /// UUID of the data filesystem mounted (or about to be) at the data mount point.
    pub data_fs_uuid: Option<String>,
    /// The data filesystem is (or will be, after storage) mounted: project directories belong there.
    pub data_ready: bool,
}

/// An account `run` creates with `useradd` when missing, then gives its `~/.ssh`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub user: &'static str,
    pub comment: &'static str,
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
    /// Project directories on the data filesystem, absolute on the node.
    pub directories: Vec<PathBuf>,
}

/// `key` is the host key delivered with the configuration (it is not part of node.toml: node.toml
/// is printed and diffed, the key never is).
pub fn render_all(cfg: &NodeConfig, key: &Delivered, facts: &Facts) -> Result<Desired> {
    let mut early_files = network::render_host_identity(cfg);
    let ports = network::select_ports(cfg, &facts.nics);
    if facts.family == Family::Rhel {
        early_files.extend(network::render_nm_keyfiles(cfg, &ports));
    } else {
        early_files.extend(network::render_networkd(cfg, &ports));
    }
    // The installed copy is what mm-sync and later boots read; its key stays beside it.
    early_files.push(RenderedFile::new(INSTALLED_CONFIG, 0o644, cfg.to_toml()));
    // sshd's only host key, before sshd starts (we are ordered before it).
    early_files.extend(key.files());
    if let Delivered::Key { private, public } = key {
        early_files.push(RenderedFile::new(INSTALLED_HOST_KEY, 0o600, private.clone()));
        early_files.push(RenderedFile::new(format!("{INSTALLED_HOST_KEY}.pub"), 0o644, public.clone()));
    }

    let svc = services::render_services(cfg, &Paths { family: facts.family, tls_ready: facts.tls_ready, ..Paths::default() })?;
    let mut files = svc.files;
    if let Some(uuid) = &facts.data_fs_uuid {
        files.push(services::render_mount_unit(uuid)?);
    }
    let mut accounts = vec![Account { user: ADMIN_USER, comment: "micro mirror fleet admin" }];
    if svc.push_user {
        accounts.push(Account { user: PUSH_USER, comment: "upstream push trigger" });
    }
    let directories = if facts.data_ready {
        cfg.projects.iter().map(|p| PathBuf::from(DATA_MOUNT).join(&p.directory)).collect()
    } else {
        Vec::new()
    };
    Ok(Desired { early_files, files, accounts, units: svc.enable, directories })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testdata::node;

    fn facts() -> Facts {
        Facts { family: Family::Debian, nics: Vec::new(), tls_ready: false, data_fs_uuid: None, data_ready: false }
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
        assert!(d.directories.is_empty(), "no project directories without a data filesystem");
        assert!(!paths.iter().any(|p| p.ends_with("srv-mirror.mount")));

        let d = render_all(&cfg, &Delivered::Missing, &Facts { data_fs_uuid: Some("0a1b-2c".into()), data_ready: true, ..facts() }).unwrap();
        let mount = d.files.iter().find(|f| f.path.ends_with("srv-mirror.mount")).expect("mount unit");
        assert!(String::from_utf8_lossy(&mount.contents).contains("What=/dev/disk/by-uuid/0a1b-2c\n"));
        assert_eq!(d.directories.len(), cfg.projects.len());
    }
}
