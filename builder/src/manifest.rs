//! Build outputs: `manifest.json` and `SHA256SUMS` (verifiable with `sha256sum -c` from DIR).

use std::fs::File;
use std::io::{Read, Seek};
use std::path::Path;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::atomic;

/// One output file of a build.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Artifact {
    pub node: String,
    /// `disk-image`, `kickstart`, `oemdrv`.
    pub kind: String,
    /// Relative to the output directory.
    pub path: String,
    pub size: u64,
    pub sha256: String,
    /// Base the artifact was built from (`null` for artifacts that need none, e.g. kickstarts).
    pub base_id: Option<String>,
    pub builder_version: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Manifest {
    pub fleet: String,
    pub artifacts: Vec<Artifact>,
}

impl Artifact {
    /// Describe `out_dir/rel` after it was written.
    pub fn describe(out_dir: &Path, rel: &str, node: &str, kind: &str, base_id: Option<&str>) -> Result<Artifact> {
        let path = out_dir.join(rel);
        Ok(Artifact {
            node: node.into(),
            kind: kind.into(),
            path: rel.into(),
            size: std::fs::metadata(&path).with_context(|| format!("reading {}", path.display()))?.len(),
            sha256: sha256_file(&path)?,
            base_id: base_id.map(String::from),
            builder_version: env!("CARGO_PKG_VERSION").into(),
        })
    }
}

pub fn sha256_file(path: &Path) -> Result<String> {
    use nix::unistd::{lseek, Whence};
    use std::os::fd::AsRawFd;
    let mut f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let len = f.metadata()?.len() as i64;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 4 << 20];
    // Holes are hashed from a zero buffer instead of read: reading them makes the kernel
    // zero-fill page after page, which cost more than the hashing itself for our sparse images.
    let zeros = vec![0u8; 4 << 20];
    let fd = f.as_raw_fd();
    let mut pos: i64 = 0;
    while pos < len {
        let data = match lseek(fd, pos, Whence::SeekData) {
            Ok(d) => d,
            Err(nix::errno::Errno::ENXIO) => len,
            Err(e) => return Err(e).with_context(|| format!("seeking data in {}", path.display())),
        };
        let mut hole = (data - pos) as usize;
        while hole > 0 {
            let n = hole.min(zeros.len());
            h.update(&zeros[..n]);
            hole -= n;
        }
        if data >= len {
            break;
        }
        let end = lseek(fd, data, Whence::SeekHole).with_context(|| format!("seeking a hole in {}", path.display()))?;
        f.seek(std::io::SeekFrom::Start(data as u64))?;
        let mut left = (end - data) as usize;
        while left > 0 {
            let want = left.min(buf.len());
            let n = f.read(&mut buf[..want]).with_context(|| format!("reading {}", path.display()))?;
            if n == 0 {
                anyhow::bail!("{} shrank while it was being hashed", path.display());
            }
            h.update(&buf[..n]);
            left -= n;
        }
        pos = end;
    }
    Ok(crate::base::hex(&h.finalize()))
}

/// Merge `fresh` into the manifest in `out_dir` (entries of rebuilt nodes are replaced, others
/// kept), then write `manifest.json` and `SHA256SUMS` atomically.
pub fn update(out_dir: &Path, fleet: &str, fresh: Vec<Artifact>) -> Result<Manifest> {
    let path = out_dir.join("manifest.json");
    let mut manifest: Manifest = match std::fs::read_to_string(&path) {
        Ok(text) => serde_json::from_str(&text).unwrap_or_default(),
        Err(_) => Manifest::default(),
    };
    if manifest.fleet != fleet {
        manifest.artifacts.clear();
    }
    manifest.fleet = fleet.to_string();
    manifest.artifacts.retain(|a| !fresh.iter().any(|f| f.node == a.node) && out_dir.join(&a.path).is_file());
    manifest.artifacts.extend(fresh);
    manifest.artifacts.sort_by(|a, b| (&a.node, &a.path).cmp(&(&b.node, &b.path)));
    let json = serde_json::to_string_pretty(&manifest)? + "\n";
    atomic::write(&path, json.as_bytes())?;
    let sums: String = manifest.artifacts.iter().map(|a| format!("{}  {}\n", a.sha256, a.path)).collect();
    atomic::write(&out_dir.join("SHA256SUMS"), sums.as_bytes())?;
    Ok(manifest)
}
