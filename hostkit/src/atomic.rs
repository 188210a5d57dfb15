//! Atomic files: written to a temporary file in the destination directory, synced, renamed over
//! the final name, and the directory synced, so a killed run or a power cut leaves the old file
//! or the new one, never a mix and never an empty file under the final name.

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

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

/// An export into a directory the operator owns: write each `(relative path, bytes)` under `out`
/// atomically, record them in `out/list`, then remove what the previous export listed and this
/// one did not write (a node or project since dropped), with the directories that emptied.
/// Nothing else in `out` is touched. Names come from profiles and the inventory: a path that is
/// not plain (empty, absolute, `..`) is refused before anything is written, and a listed one is
/// never removed.
pub fn write_listed(out: &Path, list: &str, files: &[(&str, &[u8])]) -> Result<Vec<PathBuf>> {
    let plain = |p: &str| !p.is_empty() && Path::new(p).components().all(|c| matches!(c, Component::Normal(_)));
    if let Some((bad, _)) = files.iter().find(|(p, _)| !plain(p)) {
        anyhow::bail!("refusing to write {bad:?} into {}: not a plain relative path (check the profile and node names)", out.display());
    }
    let list = out.join(list);
    let before = fs::read_to_string(&list).unwrap_or_default();
    let mut written = Vec::new();
    for (rel, bytes) in files {
        let dest = out.join(rel);
        write(&dest, bytes)?;
        written.push(dest);
    }
    let now: BTreeSet<&str> = files.iter().map(|(p, _)| *p).collect();
    let listed: String = now.iter().map(|p| format!("{p}\n")).collect();
    write(&list, listed.as_bytes())?;
    for old in before.lines().filter(|o| plain(o) && !now.contains(o)) {
        let path = out.join(old);
        if fs::remove_file(&path).is_ok() {
            let mut dir = path.parent();
            while let Some(d) = dir.filter(|d| *d != out) {
                if fs::remove_dir(d).is_err() {
                    break;
                }
                dir = d.parent();
            }
        }
    }
    Ok(written)
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

    #[test]
    fn an_export_removes_only_what_it_listed_before() {
        let dir = tempfile::tempdir().unwrap();
        let out = &dir.path().join("export");
        std::fs::create_dir(out).unwrap();
        std::fs::write(out.join("mine.txt"), b"the operator's").unwrap();
        std::fs::write(dir.path().join("beside"), b"").unwrap();
        let first: [(&str, &[u8]); 2] = [("a/x.yml", b"x"), ("b/y.yml", b"y")];
        super::write_listed(out, ".list", &first).unwrap();
        // A hostile list entry (climbing out) is never acted on.
        std::fs::write(out.join(".list"), "a/x.yml\nb/y.yml\n../beside\n").unwrap();
        let second: [(&str, &[u8]); 1] = [("a/x.yml", b"x2")];
        let written = super::write_listed(out, ".list", &second).unwrap();
        assert_eq!(written, [out.join("a/x.yml")]);
        assert_eq!(std::fs::read(out.join("a/x.yml")).unwrap(), b"x2");
        assert!(!out.join("b").exists(), "the emptied directory stays");
        assert!(dir.path().join("beside").exists(), "a listed path outside the export was removed");
        assert_eq!(std::fs::read(out.join("mine.txt")).unwrap(), b"the operator's");
        assert_eq!(std::fs::read_to_string(out.join(".list")).unwrap(), "a/x.yml\n");
        for bad in ["", "../x", "/etc/x", "a/../../x"] {
            let files: [(&str, &[u8]); 2] = [("ok.txt", b"1"), (bad, b"2")];
            assert!(super::write_listed(out, ".list", &files).is_err(), "{bad:?}");
            assert!(!out.join("ok.txt").exists(), "{bad:?}: nothing is written before the refusal");
        }
    }
}
