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
use crate::gpt::{self, Layout};

/// The MMCONFIG volume: exactly `node.toml`.
pub fn config_volume(cfg: &NodeConfig) -> Result<Vec<u8>> {
    let text = cfg.to_toml();
    let id = u32::from_str_radix(&gpt::guid(&cfg.fleet.name, &cfg.node.name, "config-fs").simple().to_string()[..8], 16)?;
    fat::build_bytes(gpt::CONFIG_BYTES, mmconfig::CONFIG_LABEL, id, &[FatFile { path: mmconfig::NODE_CONFIG_FILE, data: text.as_bytes() }])
}

/// Write the whole image for `cfg` into `out` (a new, empty file).
pub fn write_image(out: &mut File, base: &Base, cfg: &NodeConfig) -> Result<Layout> {
    let esp_len = std::fs::metadata(&base.esp_img).with_context(|| format!("reading {}", base.esp_img.display()))?.len();
    let root_len = std::fs::metadata(&base.root_img).with_context(|| format!("reading {}", base.root_img.display()))?.len();
    let layout = gpt::layout(esp_len, root_len);
    out.set_len(layout.total).context("sizing the image")?;
    copy_sparse(&base.esp_img, out, layout.esp.0)?;
    copy_sparse(&base.root_img, out, layout.root.0)?;
    fat::write_sparse_at(out, &config_volume(cfg)?, layout.config.0).context("writing the MMCONFIG volume")?;
    gpt::write(out, &layout, &cfg.fleet.name, &cfg.node.name)?;
    Ok(layout)
}

/// Copy the data extents of `src` into `dst` at `offset`; holes stay holes.
pub fn copy_sparse(src: &Path, dst: &File, offset: u64) -> Result<()> {
    let f = File::open(src).with_context(|| format!("opening {}", src.display()))?;
    let len = f.metadata()?.len() as i64;
    let fd = f.as_raw_fd();
    let mut pos: i64 = 0;
    while pos < len {
        let start = match lseek(fd, pos, Whence::SeekData) {
            Ok(s) => s,
            Err(nix::errno::Errno::ENXIO) => break, // only a hole remains
            Err(e) => return Err(e).with_context(|| format!("seeking data in {}", src.display())),
        };
        let end = lseek(fd, start, Whence::SeekHole).with_context(|| format!("seeking a hole in {}", src.display()))?;
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
