//! Build outputs: `manifest.json` and `SHA256SUMS` (verifiable with `sha256sum -c` from DIR).

use std::fs::File;
use std::path::Path;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use hostkit::atomic;

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
    /// The version of the base the disk images were built from (the nodes' `IMAGE_VERSION`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_version: Option<String>,
    pub fleet: String,
    pub artifacts: Vec<Artifact>,
    /// Node -> fingerprint (`SHA256:...`) of the ssh host key its images and sticks carry; a
    /// later build refuses to replace one silently (see `hostkeys`).
    #[serde(default)]
    pub host_keys: std::collections::BTreeMap<String, String>,
    /// `name=version` of every Debian package in the base the disk images were built from
    /// (also in `packages.lock`, which `--pin-packages` takes).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub packages: Vec<String>,
}

impl Artifact {
    /// Describe `out_dir/rel` after it was written.
    pub fn describe(out_dir: &Path, rel: &str, node: &str, kind: &str, base_id: Option<&str>) -> Result<Artifact> {
        let sha256 = sha256_file(&out_dir.join(rel))?;
        Artifact::with_sha256(out_dir, rel, node, kind, base_id, sha256)
    }

    /// Describe `out_dir/rel` whose SHA-256 was computed while it was written.
    pub fn with_sha256(out_dir: &Path, rel: &str, node: &str, kind: &str, base_id: Option<&str>, sha256: String) -> Result<Artifact> {
        let path = out_dir.join(rel);
        Ok(Artifact {
            node: node.into(),
            kind: kind.into(),
            path: rel.into(),
            size: std::fs::metadata(&path).with_context(|| format!("reading {}", path.display()))?.len(),
            sha256,
            base_id: base_id.map(String::from),
            builder_version: env!("CARGO_PKG_VERSION").into(),
        })
    }
}

/// The manifest of the build in `out_dir`.
pub fn read(out_dir: &Path) -> Result<Manifest> {
    let path = out_dir.join("manifest.json");
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("reading {} (the fleet's build: mmbuild build --out DIR)", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

/// The image version of the build in `out_dir` (its manifest.json), for comparing nodes with it.
pub fn image_version(out_dir: &Path) -> Result<String> {
    let path = out_dir.join("manifest.json");
    let m = read(out_dir)?;
    m.image_version.with_context(|| {
        format!(
            "{}: no image_version (kickstarts only, or built by an older mmbuild): build the fleet's disk images into it",
            path.display()
        )
    })
}

pub fn sha256_file(path: &Path) -> Result<String> {
    let f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let len = f.metadata()?.len();
    let mut h = Sha256::new();
    hash_range(&f, 0, len, &mut h).with_context(|| format!("hashing {}", path.display()))?;
    Ok(hostkit::ids::hex(&h.finalize()))
}

/// Feed bytes `start..end` of `f` to `h`. Holes are hashed from a zero buffer instead of read:
/// reading them makes the kernel zero-fill page after page, which cost more than the hashing
/// itself for our sparse images. Positional reads only: `f` may be shared with a writer.
pub fn hash_range(f: &File, start: u64, end: u64, h: &mut Sha256) -> Result<()> {
    use std::os::unix::fs::FileExt;
    const CHUNK: usize = 4 << 20;
    static ZEROS: [u8; 1 << 16] = [0; 1 << 16];
    let zeros = |h: &mut Sha256, mut hole: u64| {
        while hole > 0 {
            let n = hole.min(ZEROS.len() as u64) as usize;
            h.update(&ZEROS[..n]);
            hole -= n as u64;
        }
    };
    let mut buf = vec![0u8; CHUNK];
    let mut pos = start;
    for extent in crate::image::diskimage::data_extents(f, start, end) {
        let extent = extent?;
        zeros(h, extent.start - pos);
        let mut at = extent.start;
        while at < extent.end {
            let want = ((extent.end - at) as usize).min(CHUNK);
            let n = f.read_at(&mut buf[..want], at).context("reading")?;
            if n == 0 {
                anyhow::bail!("the file shrank while it was being hashed");
            }
            h.update(&buf[..n]);
            at += n as u64;
        }
        pos = extent.end;
    }
    zeros(h, end.saturating_sub(pos));
    Ok(())
}

/// Merge `fresh` into the manifest in `out_dir` (entries of rebuilt nodes are replaced, others
/// kept), record the fleet's host key fingerprints, then write `manifest.json` and `SHA256SUMS`
/// atomically.
pub fn update(
    out_dir: &Path,
    fleet: &str,
    fresh: Vec<Artifact>,
    host_keys: &std::collections::BTreeMap<String, String>,
    packages: &[String],
    image_version: Option<&str>,
) -> Result<Manifest> {
    let path = out_dir.join("manifest.json");
    let mut manifest: Manifest = match std::fs::read_to_string(&path) {
        Ok(text) => serde_json::from_str(&text).unwrap_or_default(),
        Err(_) => Manifest::default(),
    };
    if manifest.fleet != fleet {
        manifest.artifacts.clear();
        manifest.host_keys.clear();
        manifest.packages.clear();
        manifest.image_version = None;
    }
    manifest.fleet = fleet.to_string();
    manifest.host_keys.extend(host_keys.iter().map(|(n, f)| (n.clone(), f.clone())));
    if !packages.is_empty() {
        manifest.packages = packages.to_vec();
    }
    // A build without a base (kickstarts only) keeps the images' version.
    if let Some(v) = image_version {
        manifest.image_version = Some(v.to_string());
    }
    manifest.artifacts.retain(|a| !fresh.iter().any(|f| f.node == a.node) && out_dir.join(&a.path).is_file());
    manifest.artifacts.extend(fresh);
    manifest.artifacts.sort_by(|a, b| (&a.node, &a.path).cmp(&(&b.node, &b.path)));
    let json = serde_json::to_string_pretty(&manifest)? + "\n";
    atomic::write(&path, json.as_bytes())?;
    let sums: String = manifest.artifacts.iter().map(|a| format!("{}  {}\n", a.sha256, a.path)).collect();
    atomic::write(&out_dir.join("SHA256SUMS"), sums.as_bytes())?;
    Ok(manifest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;

    #[test]
    fn hashing_around_holes_equals_hashing_every_byte() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sparse.img");
        let f = std::fs::OpenOptions::new().create(true).truncate(true).read(true).write(true).open(&path).unwrap();
        f.set_len(20 << 20).unwrap();
        // Data at unaligned places, a hole at the start and at the end.
        f.write_all_at(b"first", 1_000_003).unwrap();
        f.write_all_at(&[7u8; 300_000], 9 << 20).unwrap();
        let every_byte = hostkit::ids::hex(&Sha256::digest(std::fs::read(&path).unwrap()));
        assert_eq!(sha256_file(&path).unwrap(), every_byte);
        // A range split in two pieces hashes like the whole.
        let mut h = Sha256::new();
        hash_range(&f, 0, 5 << 20, &mut h).unwrap();
        hash_range(&f, 5 << 20, 20 << 20, &mut h).unwrap();
        assert_eq!(hostkit::ids::hex(&h.finalize()), every_byte);
    }
}
