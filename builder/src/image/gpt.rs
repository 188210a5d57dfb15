//! GPT layout of a node disk: ESP, MMCONFIG and two root slots, with GUIDs derived from fleet and node.

use std::collections::BTreeMap;
use std::fs::File;

use anyhow::{Context, Result};
use gpt::disk::LogicalBlockSize;
use gpt::partition::Partition;
use gpt::partition_types;

use hostkit::ids::uuid_from;
use mmconfig::os::Slot;

pub const SECTOR: u64 = 512;
const MIB: u64 = 1024 * 1024;
/// Size of the per-node configuration partition (a FAT16 volume holding node.toml).
pub const CONFIG_BYTES: u64 = 8 * MIB;

/// Where each partition sits, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    pub esp: (u64, u64),
    pub config: (u64, u64),
    /// Slot A: the root the image ships.
    pub root: (u64, u64),
    /// Slot B, as large as A: empty (a hole, no allocated bytes) until the first OS update.
    pub root_b: (u64, u64),
    pub total: u64,
}

/// ESP first (firmware likes it there), the small config partition, then the two root slots.
/// Everything 1 MiB aligned; 1 MiB at the end for the backup GPT. The data partition that
/// firstboot adds later goes into the free space after slot B.
pub fn layout(esp_bytes: u64, root_bytes: u64) -> Layout {
    let align = |x: u64| x.div_ceil(MIB) * MIB;
    let esp = (MIB, align(esp_bytes));
    let config = (esp.0 + esp.1, CONFIG_BYTES);
    let root = (config.0 + config.1, align(root_bytes));
    let root_b = (root.0 + root.1, root.1);
    Layout { esp, config, root, root_b, total: root_b.0 + root_b.1 + MIB }
}

/// Deterministic GUIDs for one node's disk.
pub fn guid(fleet: &str, node: &str, role: &str) -> uuid::Uuid {
    uuid::Uuid::parse_str(&uuid_from(&format!("{fleet}/{node}"), role)).expect("uuid_from yields a valid UUID")
}

/// The node image's partitions, numbered, as `layout` places them.
pub fn partitions(layout: &Layout, fleet: &str, node: &str) -> BTreeMap<u32, Partition> {
    let part = |role: &str, ty, extent, name: &str| entry(fleet, node, role, ty, extent, name);
    let mut parts = BTreeMap::new();
    parts.insert(1, part("esp", partition_types::EFI, layout.esp, "ESP"));
    parts.insert(2, part("config", partition_types::BASIC, layout.config, mmconfig::CONFIG_LABEL));
    parts.insert(3, part("root", partition_types::LINUX_ROOT_X64, layout.root, Slot::A.partlabel()));
    parts.insert(4, part("root-b", partition_types::LINUX_ROOT_X64, layout.root_b, Slot::B.partlabel()));
    parts
}

/// A partition entry of node `node` at `(start, len)` bytes, its GUID derived from `role`.
pub fn entry(fleet: &str, node: &str, role: &str, ty: partition_types::Type, (start, len): (u64, u64), name: &str) -> Partition {
    Partition {
        part_type_guid: ty,
        part_guid: guid(fleet, node, role),
        first_lba: start / SECTOR,
        last_lba: (start + len) / SECTOR - 1,
        flags: 0,
        name: name.to_string(),
    }
}

/// Write the protective MBR and both GPT headers for `layout` into `disk` (already sized).
pub fn write(disk: &mut File, layout: &Layout, fleet: &str, node: &str) -> Result<()> {
    write_table(disk, layout.total, guid(fleet, node, "disk"), partitions(layout, fleet, node))
}

/// Protective MBR, primary and backup GPT of a `total`-byte disk holding `parts`.
pub fn write_table(disk: &mut File, total: u64, disk_guid: uuid::Uuid, parts: BTreeMap<u32, Partition>) -> Result<()> {
    let mbr = gpt::mbr::ProtectiveMBR::with_lb_size(u32::try_from(total / SECTOR - 1).unwrap_or(0xFFFF_FFFF));
    mbr.overwrite_lba0(disk).context("writing the protective MBR")?;
    let mut gdisk = gpt::GptConfig::new()
        .writable(true)
        .logical_block_size(LogicalBlockSize::Lb512)
        .change_partition_count(true)
        .create_from_device(&mut *disk, Some(disk_guid))
        .context("creating the GPT")?;
    gdisk.update_partitions(parts).context("laying out the partitions")?;
    gdisk.write().context("writing the GPT")?;
    Ok(())
}
