//! Write a new image into the slot that is not running, check it, carry the node's state into it
//! and arm its boot entry on trial. A power cut at any point leaves the running slot the one that
//! boots: the other slot's entry goes first and the new one comes only after the check.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use mmconfig::os::{verscmp, Entry, Installed, CARRIED, ENTRY_DIR, OS_STATUS_VERSION};
use sha2::{Digest, Sha256};

/// What `mmbuild apply` asks for.
pub struct Request<'a> {
    pub image_version: &'a str,
    /// SHA-256 of the slot's whole content (the build's `os/root.img`).
    pub sha256: &'a str,
    /// Its length in bytes.
    pub bytes: u64,
    /// The new slot's UKI, already on the node, and its SHA-256.
    pub uki: &'a Path,
    pub uki_sha256: &'a str,
    pub tries: u32,
}

/// Install `req` from the zstd stream on `input` into the other slot.
pub fn install(req: &Request, input: impl Read + Send + 'static) -> Result<Installed> {
    let started = Instant::now();
    let running = super::running_slot()
        .context("the running root is not in an A/B slot (root=PARTLABEL=mmroot-a|b): reinstall this node from its install stick")?;
    let current = super::running_version().unwrap_or_default();
    if !mmconfig::image::is_version(req.image_version) {
        bail!("{:?} is not an image version", req.image_version);
    }
    if verscmp(req.image_version, &current) != std::cmp::Ordering::Greater {
        bail!(
            "image {} does not sort after the running {current}: systemd-boot would keep booting the running slot; build a newer image",
            req.image_version
        );
    }
    // Everything that can be checked before the disk is touched is checked first.
    let uki = std::fs::read(req.uki).with_context(|| format!("reading {}", req.uki.display()))?;
    let uki_sha = hostkit::ids::hex(&Sha256::digest(&uki));
    if uki_sha != req.uki_sha256 {
        bail!("the kernel image arrived as sha256 {uki_sha}, the build says {}: nothing was written", req.uki_sha256);
    }
    let target = running.other();
    let device = super::partition_named(target.partlabel())?;
    let size = device_size(&device)?;
    if size < req.bytes {
        bail!("slot {target} ({}) holds {size} bytes, the image needs {}", device.display(), req.bytes);
    }
    let esp = super::mount_esp()?;
    // The slot is about to change: no entry may boot it until it is whole and checked.
    for (name, entry) in super::entries(&esp) {
        if entry.slot == target {
            let path = esp.join(ENTRY_DIR).join(&name);
            std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
        }
    }
    sync_dir(&esp.join(ENTRY_DIR))?;

    let got = write_slot(&device, req.bytes, input)?;
    if got != req.sha256 {
        bail!("slot {target} was written as sha256 {got}, the build says {}: it stays unbootable (no boot entry); the running slot is unchanged", req.sha256);
    }
    carry_state(&device)?;

    let entry = Entry::trial(req.image_version, target, req.tries);
    let dir = esp.join(ENTRY_DIR);
    let tmp = dir.join(".new-entry.tmp");
    let mut f = File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    f.write_all(&uki).and_then(|_| f.sync_all()).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, dir.join(entry.file_name())).with_context(|| format!("arming {}", entry.file_name()))?;
    sync_dir(&dir)?;
    Ok(Installed {
        version: OS_STATUS_VERSION,
        slot: target,
        image_version: req.image_version.to_string(),
        entry: entry.file_name(),
        bytes: req.bytes,
        seconds: started.elapsed().as_secs_f64(),
    })
}

fn device_size(dev: &Path) -> Result<u64> {
    let out = hostkit::cmd::text("blockdev", &["--getsize64", &dev.to_string_lossy()])?;
    out.trim().parse().with_context(|| format!("reading the size of {}", dev.display()))
}

/// Decompress `input` with zstd into `device`, hashing what is written; the SHA-256 of exactly
/// `bytes` bytes (a stream of another length is an error).
fn write_slot(device: &Path, bytes: u64, input: impl Read + Send + 'static) -> Result<String> {
    let mut zstd = Command::new("zstd")
        .args(["-d", "-c", "-q"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting zstd -d")?;
    let mut stdin = zstd.stdin.take().context("zstd's stdin")?;
    let feeder = std::thread::spawn(move || -> std::io::Result<u64> {
        let mut input = input;
        std::io::copy(&mut input, &mut stdin)
    });
    // O_EXCL: nobody has the slot open or mounted.
    let mut out = OpenOptions::new()
        .write(true)
        .custom_flags(nix::libc::O_EXCL)
        .open(device)
        .with_context(|| format!("opening {} for writing", device.display()))?;
    let mut from = zstd.stdout.take().context("zstd's stdout")?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut written = 0u64;
    loop {
        let n = from.read(&mut buf).context("reading the decompressed image")?;
        if n == 0 {
            break;
        }
        if written + n as u64 > bytes {
            bail!("the image stream is longer than the {bytes} bytes announced");
        }
        out.write_all(&buf[..n]).with_context(|| format!("writing {}", device.display()))?;
        h.update(&buf[..n]);
        written += n as u64;
    }
    out.sync_all().with_context(|| format!("flushing {}", device.display()))?;
    let fed = feeder.join().map_err(|_| anyhow::anyhow!("the input thread panicked"))?;
    let status = zstd.wait_with_output().context("waiting for zstd")?;
    if !status.status.success() {
        bail!("zstd -d failed: {}", hostkit::cmd::tail(&status.stderr, 5));
    }
    fed.context("reading the image from stdin")?;
    if written != bytes {
        bail!("the image stream ended after {written} of {bytes} bytes (the connection broke?)");
    }
    Ok(hostkit::ids::hex(&h.finalize()))
}

/// Copy what the node keeps across images ([`CARRIED`]) into the new slot.
fn carry_state(device: &Path) -> Result<()> {
    let mnt = Path::new("/run/micromirror/new-slot");
    std::fs::create_dir_all(mnt).with_context(|| format!("creating {}", mnt.display()))?;
    hostkit::cmd::text("mount", &["-t", "ext4", &device.to_string_lossy(), &mnt.to_string_lossy()])
        .with_context(|| format!("mounting the new slot {}", device.display()))?;
    let copied = (|| -> Result<()> {
        for path in CARRIED {
            let src = Path::new(path);
            if !src.exists() {
                continue;
            }
            let dest = mnt.join(path.trim_start_matches('/'));
            if src.is_dir() {
                std::fs::create_dir_all(&dest).with_context(|| format!("creating {}", dest.display()))?;
                hostkit::cmd::text("rsync", &["-aHAX", "--delete", &format!("{path}/"), &format!("{}/", dest.display())])
                    .with_context(|| format!("carrying {path} into the new slot"))?;
            } else {
                hostkit::cmd::text("cp", &["-a", path, &dest.to_string_lossy()])
                    .with_context(|| format!("carrying {path} into the new slot"))?;
            }
        }
        Ok(())
    })();
    let unmounted = hostkit::cmd::text("umount", &[mnt.to_string_lossy().as_ref()]).map(|_| ());
    copied.and(unmounted.with_context(|| format!("unmounting {}", mnt.display())))
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|d| d.sync_all()).with_context(|| format!("flushing {}", dir.display()))
}
