//! Per-node disk image: the cached ESP and root images plus the node's MMCONFIG volume behind a
//! GPT, assembled sparsely (only data extents are copied, in the kernel, with copy_file_range).

use std::fs::File;
use std::path::Path;

use anyhow::{Context, Result};
use mmconfig::NodeConfig;
use nix::unistd::{lseek, Whence};
use std::os::fd::AsRawFd;

use crate::base::Base;
use crate::fat::{self, FatFile};
use crate::gpt;
use crate::hostkeys::HostKey;

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
                crate::manifest::hash_range(&reader, hashed, upto, &mut h)?;
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

/// Copy the data extents of bytes `from..to` of `src` into `dst` at `offset + from`.
pub fn copy_sparse_range(src: &Path, dst: &File, offset: u64, from: u64, to: u64) -> Result<()> {
    let f = File::open(src).with_context(|| format!("opening {}", src.display()))?;
    let fd = f.as_raw_fd();
    let mut pos = from as i64;
    let to = to as i64;
    while pos < to {
        let start = match lseek(fd, pos, Whence::SeekData) {
            Ok(s) if s >= to => break,
            Ok(s) => s,
            Err(nix::errno::Errno::ENXIO) => break, // only a hole remains
            Err(e) => return Err(e).with_context(|| format!("seeking data in {}", src.display())),
        };
        let end = lseek(fd, start, Whence::SeekHole).with_context(|| format!("seeking a hole in {}", src.display()))?.min(to);
        let mut off_in = start;
        let mut off_out = offset as i64 + start;
        while off_in < end {
            let want = (end - off_in) as usize;
            let n = nix::fcntl::copy_file_range(&f, Some(&mut off_in), dst, Some(&mut off_out), want)
                .with_context(|| format!("copying {} into the image", src.display()))?;
            if n == 0 {
                anyhow::bail!("{} shrank while it was being copied", src.display());
            }
        }
        pos = end;
    }
    Ok(())
}
