//! The node's install stick image (`install.img`): the installer's ESP and an MMINSTALL partition
//! holding a header (the install contract of `mmconfig::install`) and the node's disk.img as is.

use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use ::gpt::partition_types;
use anyhow::{Context, Result};
use mmconfig::install::{InstallManifest, InstallPartition, INSTALL_LABEL, INSTALL_SCHEMA, PAYLOAD_OFFSET};
use mmconfig::NodeConfig;

use crate::image::base::Base;
use crate::image::diskimage::copy_sparse;
use crate::image::gpt;

const MIB: u64 = 1 << 20;

/// The contract the installer reads: the node image's layout and hash, the boot-disk rule.
pub fn manifest(base: &Base, cfg: &NodeConfig, image_bytes: u64, image_sha256: &str) -> Result<InstallManifest> {
    let esp_len = std::fs::metadata(&base.esp_img).with_context(|| format!("reading {}", base.esp_img.display()))?.len();
    let root_len = std::fs::metadata(&base.root_img).with_context(|| format!("reading {}", base.root_img.display()))?.len();
    let layout = gpt::layout(esp_len, root_len);
    let partitions = gpt::partitions(&layout, &cfg.fleet.name, &cfg.node.name)
        .into_iter()
        .map(|(number, p)| InstallPartition {
            number,
            name: p.name,
            type_guid: p.part_type_guid.guid.to_string().to_uppercase(),
            guid: p.part_guid.to_string(),
            first_lba: p.first_lba,
            last_lba: p.last_lba,
        })
        .collect();
    Ok(InstallManifest {
        schema: INSTALL_SCHEMA,
        fleet: cfg.fleet.name.clone(),
        node: cfg.node.name.clone(),
        fqdn: cfg.node.fqdn.clone(),
        image_sha256: image_sha256.to_string(),
        image_bytes,
        disk_guid: gpt::guid(&cfg.fleet.name, &cfg.node.name, "disk").to_string(),
        partitions,
        boot_disk: cfg.hardware.storage.boot_disk.clone(),
        wipe_disk_serials: cfg.node.wipe_disk_serials.clone(),
    })
}

/// Write the stick image for `cfg` into `out` (a new, empty file) from the node's finished
/// `disk_img`, whose SHA-256 is `image_sha256`.
pub fn write_stick(out: &mut File, base: &Base, cfg: &NodeConfig, disk_img: &Path, image_sha256: &str) -> Result<()> {
    let image_bytes = std::fs::metadata(disk_img).with_context(|| format!("reading {}", disk_img.display()))?.len();
    let m = manifest(base, cfg, image_bytes, image_sha256)?;
    let esp_len = std::fs::metadata(&base.install_esp_img).with_context(|| format!("reading {}", base.install_esp_img.display()))?.len();
    let align = |x: u64| x.div_ceil(MIB) * MIB;
    let esp = (MIB, align(esp_len));
    let payload = (esp.0 + esp.1, align(PAYLOAD_OFFSET + image_bytes));
    let total = payload.0 + payload.1 + MIB;
    out.set_len(total).context("sizing the stick image")?;
    let part = |role: &str, ty, extent, name: &str| gpt::entry(&cfg.fleet.name, &cfg.node.name, role, ty, extent, name);
    let mut parts = BTreeMap::new();
    parts.insert(1, part("stick-esp", partition_types::EFI, esp, "ESP"));
    parts.insert(2, part("stick-payload", partition_types::BASIC, payload, INSTALL_LABEL));
    gpt::write_table(out, total, stick_guid(&cfg.fleet.name, &cfg.node.name), parts)?;
    copy_sparse(&base.install_esp_img, out, esp.0)?;
    out.write_all_at(&m.to_header().context("rendering the install header")?, payload.0).context("writing the install header")?;
    copy_sparse(disk_img, out, payload.0 + PAYLOAD_OFFSET)?;
    Ok(())
}

/// GPT disk GUID of a node's install stick (how `mmbuild write` recognises its own stick).
pub fn stick_guid(fleet: &str, node: &str) -> uuid::Uuid {
    gpt::guid(fleet, node, "install-stick")
}
