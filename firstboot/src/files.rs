//! Files that firstboot renders for the node: path on the node, mode and contents.

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// One file to install on the node. `path` is absolute on the node; appliers prefix `--root`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderedFile {
    pub path: PathBuf,
    pub mode: u32,
    pub contents: Vec<u8>,
}

impl RenderedFile {
    pub fn new(path: impl Into<PathBuf>, mode: u32, contents: impl Into<Vec<u8>>) -> Self {
        RenderedFile { path: path.into(), mode, contents: contents.into() }
    }
}

/// Write `dest` atomically: a synced temporary file in the same directory with `mode`, renamed
/// over `dest`. A run killed at any point leaves the old file or the new one, never a mix.
pub fn write_atomic(dest: &Path, mode: u32, contents: &[u8]) -> Result<()> {
    let dir = dest.parent().context("file without a directory")?;
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut tmp =
        tempfile::Builder::new().prefix(".mm-").tempfile_in(dir).with_context(|| format!("creating a file in {}", dir.display()))?;
    tmp.write_all(contents).with_context(|| format!("writing {}", dest.display()))?;
    tmp.as_file().sync_all()?;
    fs::set_permissions(tmp.path(), fs::Permissions::from_mode(mode))?;
    tmp.persist(dest).with_context(|| format!("installing {}", dest.display()))?;
    Ok(())
}
