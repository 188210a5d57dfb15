//! Atomic files: written to a temporary file in the destination directory, synced, renamed over
//! the final name, and the directory synced, so a killed run or a power cut leaves the old file
//! or the new one, never a mix and never an empty file under the final name.

use std::fs::{self, File};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use anyhow::{Context, Result};

/// Create `dest` with `mode`: `fill` writes into a temporary file beside it, which replaces
/// `dest` only if `fill` succeeds. The temporary file is removed on failure.
pub fn write_with_mode<T>(dest: &Path, mode: u32, fill: impl FnOnce(&mut File) -> Result<T>) -> Result<T> {
    let dir = dest.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    fs::create_dir_all(dir).with_context(|| format!("creating directory {}", dir.display()))?;
    let name = dest.file_name().and_then(|n| n.to_str()).unwrap_or("out");
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(".tmp")
        .tempfile_in(dir)
        .with_context(|| format!("creating a temporary file in {}", dir.display()))?;
    let value = fill(tmp.as_file_mut())?;
    tmp.as_file_mut().flush().with_context(|| format!("writing {}", dest.display()))?;
    // tempfile creates 0600; the caller says what the file is.
    fs::set_permissions(tmp.path(), fs::Permissions::from_mode(mode))
        .with_context(|| format!("setting permissions of {}", tmp.path().display()))?;
    tmp.as_file().sync_all().with_context(|| format!("syncing {}", tmp.path().display()))?;
    tmp.persist(dest).with_context(|| format!("renaming into {}", dest.display()))?;
    // The rename itself is durable only once the directory is.
    File::open(dir).and_then(|d| d.sync_all()).with_context(|| format!("syncing directory {}", dir.display()))?;
    Ok(value)
}

/// [`write_with_mode`] for an ordinary output file (0644).
pub fn write_with<T>(dest: &Path, fill: impl FnOnce(&mut File) -> Result<T>) -> Result<T> {
    write_with_mode(dest, 0o644, fill)
}

/// Write `bytes` to `dest` atomically with `mode`.
pub fn write_mode(dest: &Path, mode: u32, bytes: &[u8]) -> Result<()> {
    write_with_mode(dest, mode, |f| f.write_all(bytes).with_context(|| format!("writing {}", dest.display())))
}

/// Write `bytes` to `dest` atomically (0644).
pub fn write(dest: &Path, bytes: &[u8]) -> Result<()> {
    write_mode(dest, 0o644, bytes)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

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

    #[test]
    fn mode_is_the_callers() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("sub/key");
        super::write_mode(&dest, 0o600, b"secret").unwrap();
        assert_eq!(std::fs::metadata(&dest).unwrap().permissions().mode() & 0o7777, 0o600);
        super::write(&dest, b"public").unwrap();
        assert_eq!(std::fs::metadata(&dest).unwrap().permissions().mode() & 0o7777, 0o644);
    }
}
