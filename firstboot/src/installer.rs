//! The install role, applied: run by the stick's initramfs (`mm.install` on its command line), it
//! finds the stick and the target disk, writes and verifies the image, lays out the GPT and
//! makes the internal disk the first boot entry. The decisions are [`crate::install`]'s.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use mmconfig::install::{InstallManifest, InstallPartition, HEADER_BYTES, INSTALL_LABEL, PAYLOAD_OFFSET};
use mmconfig::DiskFacts;
use sha2::{Digest, Sha256};

use crate::install::{self, Candidate, Decision};
use crate::probe::{self, read_trim};

const EFI_GLOBAL: &str = "8be4df61-93ca-11d2-aa0d-00e098032b8c";
const EFIVARS: &str = "/sys/firmware/efi/efivars";
/// Our boot entry's number. Decimal digits only: firmware spells Boot#### names in either case
/// and variable names are case-sensitive.
const BOOT_ENTRY: u16 = 0x7070;
const LOADER: &str = "\\EFI\\BOOT\\BOOTX64.EFI";
const BLOCK: usize = 4 << 20;
/// How long a stick booted on an installed node waits for someone to ask for a reinstall.
const PROMPT: Duration = Duration::from_secs(15);

/// Every console the kernel writes to (serial and screen): remote hands may watch either.
pub struct Console {
    outputs: Vec<File>,
    inputs: Vec<File>,
}

impl Console {
    pub fn open() -> Console {
        let names: Vec<String> = fs::read_to_string("/proc/consoles")
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split_whitespace().next().map(String::from))
            .collect();
        let mut outputs = Vec::new();
        let mut inputs = Vec::new();
        for n in if names.is_empty() { vec!["console".to_string()] } else { names } {
            let path = format!("/dev/{n}");
            if let Ok(f) = OpenOptions::new().write(true).open(&path) {
                outputs.push(f);
            }
            if let Ok(f) = OpenOptions::new().read(true).custom_flags(nix::libc::O_NONBLOCK).open(&path) {
                inputs.push(f);
            }
        }
        Console { outputs, inputs }
    }

    pub fn say(&mut self, msg: &str) {
        let text = format!("mm-install: {msg}\r\n");
        for o in &mut self.outputs {
            let _ = o.write_all(text.as_bytes());
        }
        if self.outputs.is_empty() {
            eprint!("{text}");
        }
    }

    /// Whether a line equal to `word` was typed on any console within `wait`.
    fn typed(&mut self, word: &str, wait: Duration) -> bool {
        let deadline = Instant::now() + wait;
        let mut lines = vec![String::new(); self.inputs.len()];
        while Instant::now() < deadline {
            for (i, f) in self.inputs.iter_mut().enumerate() {
                let mut buf = [0u8; 64];
                while let Ok(n @ 1..) = f.read(&mut buf) {
                    lines[i].push_str(&String::from_utf8_lossy(&buf[..n]));
                }
                if lines[i].split(['\r', '\n']).any(|l| l.trim() == word) {
                    return true;
                }
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        false
    }
}

/// The partition named MMINSTALL: (its device, the disk it is on).
fn find_stick() -> Option<(PathBuf, String)> {
    for e in fs::read_dir("/sys/class/block").ok()?.flatten() {
        if probe::partname(&e.path()).as_deref() == Some(INSTALL_LABEL) {
            let real = fs::canonicalize(e.path()).ok()?;
            let disk = real.parent()?.file_name()?.to_string_lossy().into_owned();
            let part = e.file_name().to_string_lossy().into_owned();
            probe::ensure_node(&part);
            probe::ensure_node(&disk);
            return Some((PathBuf::from(format!("/dev/{part}")), disk));
        }
    }
    None
}

/// What sysfs alone tells about each disk (the initramfs has no udev).
fn disks() -> Vec<DiskFacts> {
    let mut out = Vec::new();
    for e in fs::read_dir("/sys/block").into_iter().flatten().flatten() {
        let kname = e.file_name().to_string_lossy().into_owned();
        if !probe::is_disk(&kname) {
            continue;
        }
        let sys = e.path();
        probe::ensure_node(&kname);
        out.push(DiskFacts {
            bus: hostkit::sysfs::bus_of(&sys),
            model: read_trim(&sys.join("device/model")),
            serial: probe::sysfs_serial(&sys),
            by_path: None,
            size_bytes: read_trim(&sys.join("size")).parse::<u64>().unwrap_or(0) * 512,
            removable: read_trim(&sys.join("removable")) == "1",
            kname,
        });
    }
    out.sort_by(|a, b| a.kname.cmp(&b.kname));
    out
}

fn read_gpt(dev: &str) -> Option<(String, Vec<InstallPartition>)> {
    let disk = gpt::GptConfig::new().writable(false).logical_block_size(gpt::disk::LogicalBlockSize::Lb512).open(dev).ok()?;
    let parts = disk
        .partitions()
        .iter()
        .filter(|(_, p)| p.is_used())
        .map(|(n, p)| InstallPartition {
            number: *n,
            name: p.name.clone(),
            type_guid: p.part_type_guid.guid.to_string().to_uppercase(),
            guid: p.part_guid.to_string(),
            first_lba: p.first_lba,
            last_lba: p.last_lba,
        })
        .collect();
    Some((disk.guid().to_string(), parts))
}

/// A name for what the first bytes hold, when there is no GPT.
fn signature(dev: &str) -> Option<String> {
    let mut head = vec![0u8; 8192];
    File::open(dev).ok()?.read_exact(&mut head).ok()?;
    Some(
        if &head[0..4] == b"XFSB" {
            "an XFS filesystem"
        } else if head[1080..1082] == [0x53, 0xef] {
            "an ext2/3/4 filesystem"
        } else if &head[512..520] == b"LABELONE" {
            "an LVM physical volume"
        } else if head[4096..4100] == [0xfc, 0x4e, 0x2b, 0xa9] {
            "a Linux RAID member"
        } else if head[510..512] == [0x55, 0xaa] {
            "an MBR partition table"
        } else {
            return None;
        }
        .to_string(),
    )
}

fn candidates() -> Vec<Candidate> {
    disks()
        .into_iter()
        .map(|facts| {
            let dev = format!("/dev/{}", facts.kname);
            let gpt = read_gpt(&dev);
            let blank = gpt.is_none() && probe::nonzero_edges(&dev, facts.size_bytes).is_ok_and(|nonzero| !nonzero);
            let signature = if gpt.is_none() { signature(&dev) } else { None };
            Candidate { facts, gpt, blank, signature }
        })
        .collect()
}

/// The stick's install: what `mm-install` runs from the initramfs. Returns only on an error
/// (the caller shows it); refusals wait on the console and success reboots.
pub fn run(con: &mut Console) -> Result<()> {
    let _ = nix::mount::mount(Some("efivarfs"), EFIVARS, Some("efivarfs"), nix::mount::MsFlags::empty(), None::<&str>);
    let started = Instant::now();
    let (part, stick) = loop {
        if let Some(found) = find_stick() {
            break found;
        }
        if started.elapsed() > Duration::from_secs(60) {
            bail!("no partition named {INSTALL_LABEL} after 60 s: this is not a micro mirror install stick");
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    let mut src = File::open(&part).with_context(|| format!("opening {}", part.display()))?;
    let mut header = vec![0u8; HEADER_BYTES];
    src.read_exact(&mut header).with_context(|| format!("reading the install header from {}", part.display()))?;
    let m = InstallManifest::from_header(&header).with_context(|| format!("{}", part.display()))?;
    con.say(&format!("install stick of node {} ({}, fleet {}) on /dev/{stick}", m.node, m.fqdn, m.fleet));
    con.say(&format!("image sha256 {}", m.image_sha256));

    // NVMe and SATA disks can appear after the stick: wait for one the rule accepts.
    let deadline = Instant::now() + Duration::from_secs(30);
    let decision = loop {
        let d = install::decide(&m, &candidates(), &stick);
        if !matches!(d, Decision::Refuse(_)) || Instant::now() > deadline {
            break d;
        }
        std::thread::sleep(Duration::from_secs(1));
    };
    match decision {
        Decision::Refuse(why) => loop {
            con.say(&format!("NOTHING WAS WRITTEN: {why}"));
            con.say("power the machine off, fix the above, and boot the stick again");
            std::thread::sleep(Duration::from_secs(300));
        },
        Decision::Write { disk, why, keep } => {
            con.say(&format!("writing node {} to /dev/{disk}: {why}", m.node));
            write_image(&mut |s| con.say(s), &m, &part, &format!("/dev/{disk}"), keep.as_ref())?;
            boot_entry(con, &m, true);
            finish(con, &format!("node {} installed on /dev/{disk}; rebooting into it", m.node));
        }
        Decision::Installed { disk, keep } => {
            con.say(&format!("/dev/{disk} already holds node {}: booting it", m.node));
            con.say(&format!(
                "to write the image again instead (the OS is replaced, {} kept), type reinstall and Enter within {} s",
                if keep.is_some() { "mirror data in MMDATA is" } else { "nothing else is" },
                PROMPT.as_secs()
            ));
            if con.typed("reinstall", PROMPT) {
                con.say(&format!("reinstalling node {} on /dev/{disk}", m.node));
                write_image(&mut |s| con.say(s), &m, &part, &format!("/dev/{disk}"), keep.as_ref())?;
                boot_entry(con, &m, true);
                finish(con, &format!("node {} reinstalled on /dev/{disk}; rebooting into it", m.node));
            }
            // The firmware chose the stick over the installed disk: boot the disk this once.
            boot_entry(con, &m, false);
            finish(con, &format!("handing over to node {} on /dev/{disk}", m.node));
        }
    }
}

fn finish(con: &mut Console, msg: &str) -> ! {
    con.say(msg);
    nix::unistd::sync();
    std::thread::sleep(Duration::from_secs(2));
    let _ = nix::sys::reboot::reboot(nix::sys::reboot::RebootMode::RB_AUTOBOOT);
    loop {
        std::thread::sleep(Duration::from_secs(60));
    }
}

/// Write the image's partitions from the stick's payload partition `part` to the disk `dev`,
/// verify them against the image's SHA-256, then write the GPT (image partitions plus `keep`)
/// with its backup at the disk's real end; `say` shows progress. A failed verification leaves
/// no partition table, so the firmware never boots a faulty copy.
pub fn write_image(say: &mut dyn FnMut(&str), m: &InstallManifest, part: &Path, dev: &str, keep: Option<&InstallPartition>) -> Result<()> {
    let src = File::open(part).with_context(|| format!("opening {}", part.display()))?;
    let src_len = (&src).seek(SeekFrom::End(0)).context("sizing the stick's payload")?;
    if src_len < PAYLOAD_OFFSET + m.image_bytes {
        bail!("{} holds {src_len} bytes, less than the header and the {}-byte image: write the stick again", part.display(), m.image_bytes);
    }
    // O_EXCL on a block device: no one else has it open (mounted, in a RAID).
    let dst = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(nix::libc::O_EXCL)
        .open(dev)
        .with_context(|| format!("opening {dev} for writing"))?;
    let (from, to) = m.write_range();
    let total = to - from;
    let mut buf = vec![0u8; BLOCK];
    let t = Instant::now();
    let mut last = Instant::now();
    let mut at = from;
    while at < to {
        let n = BLOCK.min((to - at) as usize);
        src.read_exact_at(&mut buf[..n], PAYLOAD_OFFSET + at).with_context(|| format!("reading the image from {}", part.display()))?;
        // Half the image is zeros: the disk zeroes those ranges itself (NVMe/SCSI write-zeroes)
        // when it can, which the read-back below verifies like any written block.
        let zeroed = buf[..n].iter().all(|&b| b == 0) && unsafe { blkzeroout(dst.as_raw_fd(), &[at, n as u64]) }.is_ok();
        if !zeroed {
            dst.write_all_at(&buf[..n], at).with_context(|| format!("writing {dev} at byte {at}"))?;
        }
        at += n as u64;
        if last.elapsed() > Duration::from_secs(2) {
            say(&format!("writing: {}", install::progress(at - from, total, t.elapsed().as_secs_f64())));
            last = Instant::now();
        }
    }
    dst.sync_data().with_context(|| format!("flushing {dev}"))?;
    say(&format!("written: {}", install::progress(total, total, t.elapsed().as_secs_f64())));

    // Read back from the disk, not the page cache, and hash it between the stick's GPT areas:
    // the result is the SHA-256 of the whole image exactly when the disk holds its partitions.
    nix::fcntl::posix_fadvise(dst.as_raw_fd(), 0, 0, nix::fcntl::PosixFadviseAdvice::POSIX_FADV_DONTNEED)
        .context("dropping cached pages")?;
    let mut h = Sha256::new();
    let t = Instant::now();
    let mut last = Instant::now();
    let mut hash = |f: &File, base: u64, from: u64, to: u64, progress: bool, h: &mut Sha256| -> Result<()> {
        let mut at = from;
        while at < to {
            let n = BLOCK.min((to - at) as usize);
            f.read_exact_at(&mut buf[..n], base + at).context("reading back for verification")?;
            h.update(&buf[..n]);
            at += n as u64;
            if progress && last.elapsed() > Duration::from_secs(2) {
                say(&format!("verifying: {}", install::progress(at - from, to - from, t.elapsed().as_secs_f64())));
                last = Instant::now();
            }
        }
        Ok(())
    };
    hash(&src, PAYLOAD_OFFSET, 0, from, false, &mut h)?;
    hash(&dst, 0, from, to, true, &mut h)?;
    hash(&src, PAYLOAD_OFFSET, to, m.image_bytes, false, &mut h)?;
    let got = hostkit::ids::hex(&h.finalize());
    if got != m.image_sha256 {
        bail!("verification failed: {dev} read back as sha256 {got}, the image is {}; the stick or the disk is faulty (the partition table was not written)", m.image_sha256);
    }
    say(&format!(
        "verified: {dev} holds the image (sha256 {}); read back at {:.0} MB/s",
        m.image_sha256,
        total as f64 / t.elapsed().as_secs_f64().max(0.001) / 1e6
    ));
    write_gpt(dev, m, keep)?;
    say(&format!(
        "partition table written{}",
        keep.map(|k| format!("; {} kept ({} GB)", k.name, (k.last_lba + 1 - k.first_lba) * 512 / 1_000_000_000)).unwrap_or_default()
    ));
    Ok(())
}

fn uuid(s: &str) -> Result<uuid::Uuid> {
    uuid::Uuid::parse_str(s).with_context(|| format!("{s} is not a GUID"))
}

/// The GPT: protective MBR, the image's partitions and `keep`, both headers (the backup at the
/// disk's end, where firstboot would otherwise move it).
pub fn write_gpt(dev: &str, m: &InstallManifest, keep: Option<&InstallPartition>) -> Result<()> {
    let mut f = OpenOptions::new().read(true).write(true).open(dev).with_context(|| format!("opening {dev}"))?;
    let sectors = f.seek(SeekFrom::End(0)).with_context(|| format!("sizing {dev}"))? / 512;
    let mbr = gpt::mbr::ProtectiveMBR::with_lb_size(u32::try_from(sectors - 1).unwrap_or(u32::MAX));
    mbr.overwrite_lba0(&mut f).with_context(|| format!("writing the protective MBR of {dev}"))?;
    let mut parts = std::collections::BTreeMap::new();
    for p in install::final_partitions(m, keep) {
        let part = gpt::partition::Partition {
            part_type_guid: gpt::partition_types::Type { guid: uuid(&p.type_guid)?, os: gpt::partition_types::OperatingSystem::None },
            part_guid: uuid(&p.guid)?,
            first_lba: p.first_lba,
            last_lba: p.last_lba,
            flags: 0,
            name: p.name.clone(),
        };
        parts.insert(p.number, part);
    }
    let mut disk = gpt::GptConfig::new()
        .writable(true)
        .logical_block_size(gpt::disk::LogicalBlockSize::Lb512)
        .change_partition_count(true)
        .create_from_device(&mut f, Some(uuid(&m.disk_guid)?))
        .with_context(|| format!("preparing the GPT of {dev}"))?;
    disk.update_partitions(parts).with_context(|| format!("laying out the partitions of {dev}"))?;
    disk.write().with_context(|| format!("writing the GPT of {dev}"))?;
    f.sync_all().with_context(|| format!("flushing {dev}"))?;
    // The kernel re-reads the table when no partition is in use.
    let _ = unsafe { blkrrpart(f.as_raw_fd()) };
    Ok(())
}

nix::ioctl_none!(blkrrpart, 0x12, 95);
nix::ioctl_write_ptr_bad!(blkzeroout, nix::request_code_none!(0x12, 127), [u64; 2]);
nix::ioctl_read!(fs_getflags, b'f', 1, nix::libc::c_long);
nix::ioctl_write_ptr!(fs_setflags, b'f', 2, nix::libc::c_long);

/// Write an EFI global variable (non-volatile, boot and runtime access). efivarfs marks
/// existing variables immutable: that flag is cleared first.
fn set_efi_var(name: &str, data: &[u8]) -> Result<()> {
    let path = format!("{EFIVARS}/{name}-{EFI_GLOBAL}");
    if let Ok(f) = File::open(&path) {
        let mut flags: nix::libc::c_long = 0;
        unsafe { fs_getflags(f.as_raw_fd(), &mut flags) }.with_context(|| format!("reading the flags of {path}"))?;
        flags &= !0x10; // FS_IMMUTABLE_FL
        unsafe { fs_setflags(f.as_raw_fd(), &flags) }.with_context(|| format!("clearing the immutable flag of {path}"))?;
    }
    let mut content = 7u32.to_le_bytes().to_vec();
    content.extend(data);
    // efivarfs takes a variable in one write.
    let mut f = OpenOptions::new().write(true).create(true).truncate(false).open(&path).with_context(|| format!("opening {path}"))?;
    f.write_all(&content).with_context(|| format!("writing {path}"))?;
    Ok(())
}

/// Our boot entry for the internal disk's ESP: first in BootOrder after an install, and BootNext
/// in any case. Firmware that keeps its own order still boots the disk this once; failures are
/// reported, not fatal (the disk also boots by the firmware's removable-media fallback path).
fn boot_entry(con: &mut Console, m: &InstallManifest, first: bool) {
    let result = (|| -> Result<()> {
        if !Path::new("/sys/firmware/efi").is_dir() {
            bail!("the machine booted without UEFI");
        }
        let esp = m.partitions.first().context("the image has no partitions")?;
        let option = install::load_option(&format!("Micro Mirror {}", m.node), esp, LOADER).context("encoding the boot entry")?;
        set_efi_var(&format!("Boot{BOOT_ENTRY:04X}"), &option)?;
        if first {
            let order = fs::read(format!("{EFIVARS}/BootOrder-{EFI_GLOBAL}")).unwrap_or_default();
            set_efi_var("BootOrder", &install::boot_order_first(order.get(4..).unwrap_or_default(), BOOT_ENTRY))?;
        }
        set_efi_var("BootNext", &BOOT_ENTRY.to_le_bytes())
    })();
    match result {
        Ok(()) => con.say(&format!("boot entry Boot{BOOT_ENTRY:04X} set{}", if first { " first in BootOrder" } else { " as BootNext" })),
        Err(e) => con.say(&format!("warning: could not set the boot entry ({e:#}); if the stick boots again, remove it")),
    }
}
