//! The EFI system partition: a FAT32 volume holding the UKI as the removable-media boot path.

use std::fs::File;
use std::path::Path;

use anyhow::{Context, Result};

use crate::fat::{self, FatFile};

/// Size of the ESP: FAT32 (what firmware expects) with room for two UKIs during an update.
pub const ESP_BYTES: u64 = 64 * 1024 * 1024;

/// Write the ESP volume image for `uki` to `dest`; the volume id derives from the base `id`.
pub fn build(uki: &Path, dest: &Path, id: &str) -> Result<()> {
    let data = std::fs::read(uki).with_context(|| format!("reading {}", uki.display()))?;
    let volume_id = u32::from_str_radix(&id[..8], 16).unwrap_or(0x4d4d4553);
    let mut out = File::create(dest).with_context(|| format!("creating {}", dest.display()))?;
    fat::build(&mut out, ESP_BYTES, "ESP", volume_id, &[FatFile { path: "EFI/BOOT/BOOTX64.EFI", data: &data }])
}
