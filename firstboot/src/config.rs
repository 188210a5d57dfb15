//! Finding the node configuration: `--config`, the MMCONFIG partition, or the installed copy.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use mmconfig::{NodeConfig, CONFIG_LABEL, INSTALLED_CONFIG, NODE_CONFIG_FILE};

use crate::adopt;
use crate::apply::Host;
use crate::hostkey::Delivered;
use hostkit::cmd::text as cmd;

/// Where the configuration came from, for the log.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub config: NodeConfig,
    pub source: String,
    /// The node's ssh host key, from beside the node.toml that was used.
    pub host_key: Delivered,
}

/// `explicit` (`-` reads stdin), else the partition labelled MMCONFIG or the installed copy,
/// whichever [`adopt::winner`] says: the partition (image installs; an operator may fix a node by
/// editing that small FAT partition) unless `mmbuild apply` installed a newer copy since; the
/// installed copy on kickstart installs. `run` installs the chosen one at
/// /etc/micromirror/node.toml, with the host key beside it.
pub fn load(host: &Host, explicit: Option<&Path>) -> Result<Loaded> {
    let beside = |p: &Path| Delivered::read_beside(p.parent().unwrap_or(Path::new(".")));
    let installed = host.path(Path::new(INSTALLED_CONFIG));
    let loaded = if let Some(p) = explicit.filter(|p| *p == Path::new("-")) {
        let text = read_text(p)?;
        // The key is not sent again: the installed one stays.
        Loaded { config: NodeConfig::from_toml(&text, "stdin")?, source: p.display().to_string(), host_key: beside(&installed) }
    } else if let Some(p) = explicit {
        Loaded { config: NodeConfig::load(p)?, source: p.display().to_string(), host_key: beside(p) }
    } else if let Some((text, host_key)) = read_config_partition()?.filter(|(text, _)| {
        let adopted = std::fs::read_to_string(&installed).ok();
        adopt::winner(Some(text), adopted.as_deref(), adopt::load_applied(host).as_ref()) == adopt::Winner::Partition
    }) {
        let config = NodeConfig::from_toml(&text, "MMCONFIG:/node.toml")?;
        Loaded { config, source: format!("partition {CONFIG_LABEL}"), host_key }
    } else {
        let config = NodeConfig::load(&installed).with_context(|| {
            format!("no {CONFIG_LABEL} partition and no {}: this machine has no node configuration", installed.display())
        })?;
        Loaded { config, source: installed.display().to_string(), host_key: beside(&installed) }
    };
    Ok(loaded)
}

/// A configuration file's text; `-` is stdin (what `mmbuild apply` pipes over ssh).
pub fn read_text(p: &Path) -> Result<String> {
    if p == Path::new("-") {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut text).context("reading the configuration from stdin")?;
        Ok(text)
    } else {
        std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))
    }
}

/// node.toml on the MMCONFIG partition, if there is one (what `install-config` records).
pub fn partition_text() -> Result<Option<String>> {
    Ok(read_config_partition()?.map(|(text, _)| text))
}

/// node.toml and the host key beside it on the MMCONFIG partition, if there is one.
fn read_config_partition() -> Result<Option<(String, Delivered)>> {
    let by_label = PathBuf::from(format!("/dev/disk/by-label/{CONFIG_LABEL}"));
    // The image's own partition by its GPT name on the root's disk, from sysfs: no probing, where
    // `blkid -t` reads every device for it (seconds under emulation), and an install stick's
    // MMCONFIG beside the node is left aside.
    let dev = if let Ok(dev) = crate::os::partition_named(CONFIG_LABEL) {
        dev.to_string_lossy().into_owned()
    } else if by_label.exists() {
        by_label.to_string_lossy().into_owned()
    } else {
        match cmd("blkid", &["-l", "-o", "device", "-t", &format!("LABEL={CONFIG_LABEL}")]) {
            Ok(out) if !out.trim().is_empty() => out.trim().to_string(),
            _ => return Ok(None),
        }
    };
    let mnt = tempfile::Builder::new().prefix("mm-config.").tempdir_in("/run").or_else(|_| tempfile::tempdir())?;
    let mp = mnt.path().to_string_lossy().into_owned();
    cmd("mount", &["-t", "vfat", "-o", "ro", &dev, &mp]).with_context(|| format!("mounting the {CONFIG_LABEL} partition {dev}"))?;
    let text = std::fs::read_to_string(mnt.path().join(NODE_CONFIG_FILE));
    let key = Delivered::read_beside(mnt.path());
    let _ = cmd("umount", &[&mp]);
    Ok(Some((text.with_context(|| format!("reading {NODE_CONFIG_FILE} from {dev}"))?, key)))
}
