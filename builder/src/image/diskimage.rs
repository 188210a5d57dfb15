//! Per-node disk image: the cached ESP and root images plus the node's MMCONFIG volume behind a
//! GPT, assembled sparsely (only data extents are copied, in the kernel, with copy_file_range).

use std::fs::File;
use std::path::Path;

use anyhow::{Context, Result};
use mmconfig::NodeConfig;
use nix::unistd::{lseek, Whence};
use std::os::fd::AsRawFd;

use crate::image::base::Base;
use crate::image::fat::{self, FatFile};
use crate::image::gpt;
use crate::image::hostkeys::HostKey;

/// The MMCONFIG volume: `node.toml` and, beside it, the node's ssh host key pair.
pub fn config_volume(cfg: &NodeConfig, key: &HostKey) -> Result<Vec<u8>> {
    let text = cfg.to_toml();
    let public = key.pub_file(&cfg.node.fqdn);
    let id = u32::from_str_radix(&gpt::guid(&cfg.fleet.name, &cfg.node.name, "config-fs").simple().to_string()[..8], 16)?;
    let files = [
        FatFile { path: mmconfig::NODE_CONFIG_FILE, data: text.as_bytes() },
        FatFile { path: mmconfig::HOST_KEY_FILE, data: &key.private },
        FatFile { path: mmconfig::HOST_KEY_PUB_FILE, data: public.as_bytes() },
    ];
    fat::build_bytes(gpt::CONFIG_BYTES, mmconfig::CONFIG_LABEL, id, &files)
}

/// Write the whole image for `cfg` into `out` (a new, empty file) and return its SHA-256, hashed by a second thread that
/// follows the writer region by region (GPT first, then ESP, MMCONFIG, root in disk order): the
/// hash costs little more than the copy instead of a second pass over the whole image.
pub fn write_image(out: &mut File, base: &Base, cfg: &NodeConfig, key: &HostKey) -> Result<String> {
    use sha2::{Digest, Sha256};
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{Arc, Condvar, Mutex};
    let esp_len = std::fs::metadata(&base.esp_img).with_context(|| format!("reading {}", base.esp_img.display()))?.len();
    let root_len = std::fs::metadata(&base.root_img).with_context(|| format!("reading {}", base.root_img.display()))?.len();
    let layout = gpt::layout(esp_len, root_len);
    out.set_len(layout.total).context("sizing the image")?;
    // Both GPT copies first: then every byte before the ESP and after the root is final.
    gpt::write(out, &layout, &cfg.fleet.name, &cfg.node.name)?;
    let config = config_volume(cfg, key)?;
    // An independent open file: the hasher seeks for holes without moving the writer's offset.
    let reader = File::open(format!("/proc/self/fd/{}", out.as_raw_fd())).context("reopening the image for hashing")?;
    // Bytes below this offset are final; u64::MAX tells the hasher the writer failed.
    let done = Arc::new((Mutex::new(0u64), Condvar::new()));
    let failed = AtomicU64::new(0);
    let total = layout.total;
    let publish = |upto: u64| {
        let (lock, cv) = &*done;
        *lock.lock().expect("progress lock") = upto;
        cv.notify_all();
    };
    std::thread::scope(|s| {
        let hasher = s.spawn(|| -> Result<String> {
            let mut h = Sha256::new();
            let mut hashed = 0u64;
            let (lock, cv) = &*done;
            while hashed < total {
                let upto = {
                    let mut g = lock.lock().expect("progress lock");
                    while *g <= hashed {
                        g = cv.wait(g).expect("progress lock");
                    }
                    *g
                };
                if upto == u64::MAX || failed.load(Ordering::SeqCst) != 0 {
                    anyhow::bail!("the image writer failed");
                }
                crate::image::manifest::hash_range(&reader, hashed, upto, &mut h)?;
                hashed = upto;
            }
            Ok(hostkit::ids::hex(&h.finalize()))
        });
        let written = (|| -> Result<()> {
            publish(layout.esp.0);
            copy_sparse(&base.esp_img, out, layout.esp.0)?;
            fat::write_sparse_at(out, &config, layout.config.0).context("writing the MMCONFIG volume")?;
            publish(layout.root.0);
            // The root in slices, so the hasher works on the first while the rest is copied.
            const SLICE: u64 = 128 << 20;
            let mut at = 0;
            while at < root_len {
                let n = SLICE.min(root_len - at);
                copy_sparse_range(&base.root_img, out, layout.root.0, at, at + n)?;
                at += n;
                publish(layout.root.0 + at);
            }
            publish(total);
            Ok(())
        })();
        if written.is_err() {
            failed.store(1, Ordering::SeqCst);
            publish(u64::MAX);
        }
        let sha = hasher.join().map_err(|_| anyhow::anyhow!("the hashing thread panicked"))?;
        written.and(sha)
    })
}

/// Copy the data extents of `src` into `dst` at `offset`; holes stay holes.
pub fn copy_sparse(src: &Path, dst: &File, offset: u64) -> Result<()> {
    let len = std::fs::metadata(src).with_context(|| format!("reading {}", src.display()))?.len();
    copy_sparse_range(src, dst, offset, 0, len)
}

/// The data extents (`start..end`) of bytes `from..to` of `f`, by SEEK_DATA/SEEK_HOLE: the one
/// walk over a sparse file, for copying (holes stay holes) and hashing (holes are not read).
/// Where the file system cannot tell, the whole range is one extent.
pub fn data_extents(f: &File, from: u64, to: u64) -> impl Iterator<Item = Result<std::ops::Range<u64>>> + '_ {
    let mut pos = from;
    std::iter::from_fn(move || {
        if pos >= to {
            return None;
        }
        let start = match lseek(f.as_raw_fd(), pos as i64, Whence::SeekData) {
            Ok(s) if s as u64 >= to => return None,
            Ok(s) => s as u64,
            // Only a hole remains.
            Err(nix::errno::Errno::ENXIO) => return None,
            Err(e) => {
                pos = to;
                return Some(Err(anyhow::Error::new(e).context("seeking data")));
            }
        };
        let end = match lseek(f.as_raw_fd(), start as i64, Whence::SeekHole) {
            Ok(e) => (e as u64).min(to),
            Err(e) => {
                pos = to;
                return Some(Err(anyhow::Error::new(e).context("seeking a hole")));
            }
        };
        pos = end;
        Some(Ok(start..end))
    })
}

/// Copy the data extents of bytes `from..to` of `src` into `dst` at `offset + from`.
pub fn copy_sparse_range(src: &Path, dst: &File, offset: u64, from: u64, to: u64) -> Result<()> {
    let f = File::open(src).with_context(|| format!("opening {}", src.display()))?;
    for extent in data_extents(&f, from, to) {
        let extent = extent.with_context(|| format!("reading {}", src.display()))?;
        let mut off_in = extent.start as i64;
        let mut off_out = (offset + extent.start) as i64;
        while off_in < extent.end as i64 {
            let want = (extent.end as i64 - off_in) as usize;
            let n = nix::fcntl::copy_file_range(&f, Some(&mut off_in), dst, Some(&mut off_out), want)
                .with_context(|| format!("copying {} into the image", src.display()))?;
            if n == 0 {
                anyhow::bail!("{} shrank while it was being copied", src.display());
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{FileExt, MetadataExt};

    #[test]
    fn a_sparse_copy_keeps_the_bytes_and_the_holes() {
        let dir = tempfile::tempdir().unwrap();
        let (src, dst) = (dir.path().join("src"), dir.path().join("dst"));
        let f = File::create(&src).unwrap();
        f.set_len(16 << 20).unwrap();
        f.write_all_at(b"head", 4096).unwrap();
        f.write_all_at(&[9u8; 100_000], 8 << 20).unwrap();
        drop(f);
        let extents: Vec<_> = data_extents(&File::open(&src).unwrap(), 0, 16 << 20).map(Result::unwrap).collect();
        assert_eq!(extents.len(), 2, "{extents:?}");
        assert!(extents[0].contains(&4096) && extents[1].contains(&(8 << 20)), "{extents:?}");
        // A range cut inside the second extent, placed at an offset.
        let out = std::fs::OpenOptions::new().create(true).truncate(true).read(true).write(true).open(&dst).unwrap();
        out.set_len(20 << 20).unwrap();
        copy_sparse_range(&src, &out, 1 << 20, 0, (8 << 20) + 50_000).unwrap();
        let (s, d) = (std::fs::read(&src).unwrap(), std::fs::read(&dst).unwrap());
        assert_eq!(&d[(1 << 20)..(1 << 20) + (8 << 20) + 50_000], &s[..(8 << 20) + 50_000]);
        assert!(d[(1 << 20) + (8 << 20) + 50_000..].iter().all(|&b| b == 0), "nothing past the range");
        // Two small extents' worth of blocks allocated, not 9 MiB.
        assert!(out.metadata().unwrap().blocks() * 512 < 1 << 20, "{} blocks", out.metadata().unwrap().blocks());
    }
}
