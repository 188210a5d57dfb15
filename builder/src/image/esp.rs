//! The EFI system partition: a FAT32 volume holding the boot manager, its configuration and the
//! slots' unified kernel images (or, on an install stick, the installer's UKI).

use std::fs::File;
use std::path::Path;

use anyhow::{Context, Result};

use crate::image::fat::{self, FatFile};

/// Size of the ESP: FAT32 (what firmware expects) with room for both slots' UKIs.
pub const ESP_BYTES: u64 = 64 * 1024 * 1024;
/// The removable-media path firmware boots without any boot entry.
pub const REMOVABLE_PATH: &str = "EFI/BOOT/BOOTX64.EFI";

/// Write the ESP volume image holding `files` to `dest`; the volume id derives from the base `id`.
pub fn build(dest: &Path, id: &str, files: &[FatFile<'_>]) -> Result<()> {
    let volume_id = u32::from_str_radix(&id[..8], 16).unwrap_or(0x4d4d4553);
    let mut out = File::create(dest).with_context(|| format!("creating {}", dest.display()))?;
    fat::build(&mut out, ESP_BYTES, "ESP", volume_id, files)
}
