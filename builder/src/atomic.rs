//! Atomic output files: write to a temporary file in the destination directory, then rename.
//!
//! A killed build never leaves an incomplete file under a final name.

use std::fs::File;
use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};

/// Create `dest` atomically: `fill` writes into a temporary file beside it, which is fsynced and
/// renamed over `dest` only if `fill` succeeds. The temporary file is removed on failure.
pub fn write_with<T>(dest: &Path, fill: impl FnOnce(&mut File) -> Result<T>) -> Result<T> {
    write_mode_with(dest, 0o644, fill)
}

/// [`write_with`] for outputs that hold a secret (a node's host key): mode 0600.
pub fn write_private_with<T>(dest: &Path, fill: impl FnOnce(&mut File) -> Result<T>) -> Result<T> {
    write_mode_with(dest, 0o600, fill)
}

fn write_mode_with<T>(dest: &Path, mode: u32, fill: impl FnOnce(&mut File) -> Result<T>) -> Result<T> {
    let dir = dest.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("creating directory {}", dir.display()))?;
    let name = dest.file_name().and_then(|n| n.to_str()).unwrap_or("out");
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(".tmp")
        .tempfile_in(dir)
        .with_context(|| format!("creating a temporary file in {}", dir.display()))?;
    let value = fill(tmp.as_file_mut())?;
    // tempfile creates 0600; most outputs are ordinary files for the operator and sha256sum.
    std::fs::set_permissions(tmp.path(), std::os::unix::fs::PermissionsExt::from_mode(mode))
        .with_context(|| format!("setting permissions of {}", tmp.path().display()))?;
    tmp.as_file_mut().flush().ok();
    tmp.as_file().sync_all().with_context(|| format!("syncing {}", tmp.path().display()))?;
    tmp.persist(dest).with_context(|| format!("renaming into {}", dest.display()))?;
    Ok(value)
}

/// Write `bytes` to `dest` atomically.
pub fn write(dest: &Path, bytes: &[u8]) -> Result<()> {
    write_with(dest, |f| f.write_all(bytes).with_context(|| format!("writing {}", dest.display())))
}

#[cfg(test)]
mod tests {
    #[test]
    fn failed_fill_leaves_nothing_and_keeps_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("a.txt");
        super::write(&dest, b"old").unwrap();
        let err = super::write_with(&dest, |_| -> anyhow::Result<()> { anyhow::bail!("killed") });
        assert!(err.is_err());
        assert_eq!(std::fs::read(&dest).unwrap(), b"old");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "temporary file left behind");
    }
}
