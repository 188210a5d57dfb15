//! The common base OS (root filesystem image + UKI), built once and cached by content hash.

use std::path::PathBuf;

use anyhow::Result;

/// Inputs of a base build.
#[derive(Debug, Clone)]
pub struct BaseOptions {
    /// Cache root, e.g. /var/cache/micromirror (outside the repository).
    pub cache_dir: PathBuf,
    /// Data directory holding overlays/ (and profiles/, hardware/).
    pub data_dir: PathBuf,
    /// Directory holding the static on-node binaries mm-firstboot and mm-sync.
    pub node_bin_dir: PathBuf,
    pub quiet: bool,
}

/// A built base, ready to be stamped into per-node images.
#[derive(Debug, Clone)]
pub struct Base {
    /// Hex content hash of everything that went into the base.
    pub id: String,
    pub dir: PathBuf,
    /// ext4 filesystem image of the root (label `mmroot`).
    pub root_img: PathBuf,
    /// The unified kernel image booted from the ESP as \EFI\BOOT\BOOTX64.EFI.
    pub uki: PathBuf,
}

/// Build the base, or reuse the cached one with the same content hash.
pub fn ensure_base(_opts: &BaseOptions) -> Result<Base> {
    anyhow::bail!("building the base OS is not available in this version yet")
}
