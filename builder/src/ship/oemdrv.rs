//! The per-node `OEMDRV` install stick image: a small flat FAT volume Anaconda finds by label.
//!
//! It holds `ks.cfg`, `node.toml`, the static on-node binaries, their unit files and a
//! `SHA256SUMS` that the kickstart's `%post` checks before copying anything into the new system.

use std::fs::File;

use anyhow::{ensure, Result};
use sha2::{Digest, Sha256};

use crate::image::fat::{self, FatFile};

/// The volume label Anaconda looks for (exactly this, upper case).
pub const LABEL: &str = "OEMDRV";
/// Name of the checksum file on the stick (`sha256sum -c` format, relative names).
pub const SUMS: &str = "SHA256SUMS";

/// Deterministic FAT volume id for one node's stick (like the GPT GUIDs: from fleet and node).
pub fn volume_id(fleet: &str, node: &str) -> u32 {
    let d = Sha256::digest(format!("{fleet}/{node}\0oemdrv").as_bytes());
    u32::from_le_bytes([d[0], d[1], d[2], d[3]])
}

/// Volume size for `files`: contents rounded up to 4 KiB each, plus a quarter and 2 MiB for FAT
/// tables, directory and headroom, rounded up to whole MiB (so always a multiple of 512).
pub fn size_for(files: &[(&str, &[u8])]) -> u64 {
    const MIB: u64 = 1 << 20;
    let data: u64 = files.iter().map(|(_, d)| (d.len() as u64).div_ceil(4096) * 4096).sum();
    (data + data / 4 + 2 * MIB).div_ceil(MIB) * MIB
}

/// Write the OEMDRV volume holding `files` (flat names) plus their `SHA256SUMS` into `out`.
pub fn write(out: &mut File, fleet: &str, node: &str, files: &[(&str, &[u8])]) -> Result<()> {
    for (name, _) in files {
        ensure!(!name.contains('/') && !name.is_empty() && *name != SUMS, "OEMDRV file name {name:?} must be a plain file name");
    }
    let mut sorted: Vec<&(&str, &[u8])> = files.iter().collect();
    sorted.sort_by_key(|(n, _)| *n);
    let sums: String = sorted.iter().map(|(n, d)| format!("{}  {n}\n", hostkit::ids::hex(&Sha256::digest(d)))).collect();
    let mut all: Vec<(&str, &[u8])> = files.to_vec();
    all.push((SUMS, sums.as_bytes()));
    let fat_files: Vec<FatFile<'_>> = all.iter().map(|(path, data)| FatFile { path, data }).collect();
    fat::build(out, size_for(&all), LABEL, volume_id(fleet, node), &fat_files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_fits_with_headroom_and_is_sector_aligned() {
        let big = vec![1u8; 3_000_001];
        let s = size_for(&[("a", &big), ("b", b"x")]);
        assert_eq!(s % 512, 0);
        assert!(s >= 3_000_001 + 4096 + (1 << 20), "{s}");
        assert!(s < 8 << 20, "{s}");
    }

    #[test]
    fn volume_ids_differ_per_node_and_repeat() {
        assert_eq!(volume_id("f", "a"), volume_id("f", "a"));
        assert_ne!(volume_id("f", "a"), volume_id("f", "b"));
        assert_ne!(volume_id("f", "a"), volume_id("g", "a"));
    }

    #[test]
    fn stick_reads_back_with_checksums() {
        let mut tmp = tempfile::NamedTempFile::new().unwrap();
        write(tmp.as_file_mut(), "f", "n", &[("ks.cfg", b"text\n"), ("node.toml", b"schema = 1\n")]).unwrap();
        assert_eq!(fat::read_file(tmp.as_file_mut(), "ks.cfg").unwrap(), b"text\n");
        let sums = String::from_utf8(fat::read_file(tmp.as_file_mut(), SUMS).unwrap()).unwrap();
        assert!(sums.contains("  ks.cfg\n") && sums.contains("  node.toml\n"), "{sums}");
        assert!(write(tmp.as_file_mut(), "f", "n", &[("a/b", b"")]).is_err());
    }
}
