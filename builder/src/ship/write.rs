//! `mmbuild write`: put a built disk image or OEMDRV stick on a whole disk, safely, and verify it.
//!
//! Three steps kept apart so the decision can be tested without a disk: [`gather`] reads what
//! the kernel says about the target (sysfs, mountinfo, swaps, blkid), [`plan`] decides from
//! those facts alone whether writing is allowed, [`apply`] writes and reads back.

use std::collections::BTreeSet;
use std::fs::{File, OpenOptions};
use std::io::{IsTerminal, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::exit::{self, Exit};
use serde::Serialize;
use sha2::{Digest, Sha256};

/// Above this a target is not taken for a USB stick: writing needs `--force`.
pub const STICK_MAX_BYTES: u64 = 128_000_000_000;
/// I/O block: large enough that a USB stick sees full erase blocks, small enough for progress.
const BLOCK: usize = 4 << 20;

/// Which build output goes onto the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Artifact {
    /// DIR/<node>/disk.img: the node's UEFI disk image.
    Disk,
    /// DIR/<node>/oemdrv.img: the AlmaLinux kickstart (OEMDRV) stick.
    Oemdrv,
    /// DIR/<node>/install.img: the install stick (`mmbuild build --install-stick`).
    Install,
}

impl Artifact {
    pub fn file_name(self) -> &'static str {
        match self {
            Artifact::Disk => "disk.img",
            Artifact::Oemdrv => "oemdrv.img",
            Artifact::Install => "install.img",
        }
    }
}

/// How this node's own earlier writes look to blkid: the GPT disk GUID of its disk image, or
/// the FAT volume id of its OEMDRV stick (both derived from fleet and node at build time).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Ours {
    pub ptuuid: String,
    /// GPT disk GUID of the node's install stick.
    pub stick_ptuuid: String,
    pub fat_uuid: String,
}

impl Ours {
    pub fn of(fleet: &str, node: &str) -> Ours {
        let v = crate::ship::oemdrv::volume_id(fleet, node);
        Ours {
            ptuuid: crate::image::gpt::guid(fleet, node, "disk").to_string(),
            stick_ptuuid: crate::ship::stick::stick_guid(fleet, node).to_string(),
            fat_uuid: format!("{:04X}-{:04X}", v >> 16, v & 0xffff),
        }
    }
}

/// What blkid found on a disk or partition (empty strings: nothing found).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Content {
    pub pttype: String,
    pub ptuuid: String,
    pub fstype: String,
    pub label: String,
    pub uuid: String,
}

impl Content {
    fn is_empty(&self) -> bool {
        self.pttype.is_empty() && self.fstype.is_empty()
    }

    fn describe(&self) -> String {
        let mut s = if !self.fstype.is_empty() { self.fstype.clone() } else { self.pttype.clone() };
        if !self.label.is_empty() {
            s.push_str(&format!(" \"{}\"", self.label.escape_debug()));
        }
        s
    }
}

/// The disk itself or one of its partitions, and what the running system does with it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Member {
    pub dev: String,
    pub size: u64,
    pub content: Content,
    pub mounts: Vec<String>,
    pub swap: bool,
    /// dm/md devices built on it (`/sys/class/block/X/holders`).
    pub holders: Vec<String>,
}

/// What the target path turned out to be.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Kind {
    Disk,
    Partition { disk: String },
    NotBlock { what: String },
}

/// Everything [`plan`] needs to know about the target, read by [`gather`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Facts {
    /// As the operator named it (`/dev/sdb`, `/dev/disk/by-id/usb-...`).
    pub path: String,
    /// The kernel's device node (`/dev/sdb`).
    pub dev: String,
    pub kind: Kind,
    pub size: u64,
    pub logical_block_size: u64,
    pub removable: bool,
    pub read_only: bool,
    /// usb, sata, nvme, virtio, scsi, mmc, loop, dm, md, or unknown.
    pub transport: String,
    pub model: String,
    pub serial: String,
    /// The disk first, then its partitions.
    pub members: Vec<Member>,
    /// Which of the running system's `/`, `/boot`, `/boot/efi` and swap live on this disk.
    pub system: Vec<String>,
}

impl Facts {
    /// A target that is not a block device at all.
    pub fn not_block(path: &str, what: &str) -> Facts {
        Facts {
            path: path.into(),
            dev: path.into(),
            kind: Kind::NotBlock { what: what.into() },
            size: 0,
            logical_block_size: 512,
            removable: false,
            read_only: false,
            transport: String::new(),
            model: String::new(),
            serial: String::new(),
            members: Vec::new(),
            system: Vec::new(),
        }
    }

    /// One line per member holding something, e.g. `/dev/sdb1 ext4 "home"`.
    pub fn holds(&self) -> Vec<String> {
        self.members.iter().filter(|m| !m.content.is_empty()).map(|m| format!("{} {}", m.dev, m.content.describe())).collect()
    }

    /// Whether the disk carries this node's GPT or OEMDRV volume.
    pub fn is_ours(&self, ours: &Ours) -> bool {
        self.members.first().is_some_and(|d| {
            let c = &d.content;
            (c.pttype == "gpt" && (c.ptuuid.eq_ignore_ascii_case(&ours.ptuuid) || c.ptuuid.eq_ignore_ascii_case(&ours.stick_ptuuid)))
                || (c.fstype == "vfat" && c.label == crate::ship::oemdrv::LABEL && c.uuid.eq_ignore_ascii_case(&ours.fat_uuid))
        })
    }
}

/// What will be written where; the output of a successful [`plan`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Plan {
    pub dev: String,
    pub bytes: u64,
    /// `blank`, `ours` (this node's earlier write) or `foreign` (then `forced` says so).
    pub target_state: &'static str,
    /// The checks `--force` overrode (`larger than a stick`, `holds other data`).
    pub forced: Vec<String>,
}

/// Why nothing was written. Each message names the device and says what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error(
        "{path} is not a block device ({what}); name the whole disk, e.g. /dev/sdb (`lsblk -d -o NAME,SIZE,TRAN,MODEL,SERIAL` lists them)"
    )]
    NotBlock { path: String, what: String },
    #[error("{path} is a partition of {disk}; write to the whole disk: --to {disk}")]
    Partition { path: String, disk: String },
    #[error(
        "{dev} holds this computer's running system ({roles}); mmbuild never writes there, --force or not. \
         Pick the stick from `lsblk -d -o NAME,SIZE,TRAN,MODEL,SERIAL` (TRAN usb)"
    )]
    SystemDisk { dev: String, roles: String },
    #[error("{dev} is in use: {uses}. Release it first ({hint}) and run again; --force does not override this")]
    InUse { dev: String, uses: String, hint: String },
    #[error("{dev} is read-only (a write-protect switch, or `blockdev --setrw {dev}`)")]
    ReadOnly { dev: String },
    #[error("{dev} has {size}, the image needs {need}: use a larger disk or stick")]
    TooSmall { dev: String, size: String, need: String },
    #[error("the image ({bytes} bytes) is not a whole number of {dev}'s {block}-byte blocks; rebuild it")]
    Unaligned { dev: String, bytes: u64, block: u64 },
    #[error(
        "{dev} is {size} ({model}, serial {serial}): larger than {max}, not a USB stick. \
         If this really is the disk to overwrite, check model and serial and add --force"
    )]
    TooLarge { dev: String, size: String, model: String, serial: String, max: String },
    #[error(
        "{dev} ({model}, serial {serial}) holds data that is not this node's: {holds}. Writing destroys it; \
         if that is intended, add --force"
    )]
    Foreign { dev: String, model: String, serial: String, holds: String },
    #[error("{path} is missing: build it first (mmbuild build FLEET --out DIR --node NODE)")]
    SourceMissing { path: String },
    #[error("{sums} has no line for {rel}: rebuild (mmbuild build FLEET --out DIR --node NODE)")]
    NotListed { sums: String, rel: String },
    #[error(
        "{path} does not match its line in {sums} (sha256 {actual}, expected {expected}): changed or corrupt since the build; rebuild it"
    )]
    Mismatch { path: String, sums: String, expected: String, actual: String },
}

impl Refusal {
    /// A short stable name for `--json`.
    pub fn kind(&self) -> &'static str {
        match self {
            Refusal::NotBlock { .. } => "not_block_device",
            Refusal::Partition { .. } => "partition",
            Refusal::SystemDisk { .. } => "system_disk",
            Refusal::InUse { .. } => "in_use",
            Refusal::ReadOnly { .. } => "read_only",
            Refusal::TooSmall { .. } => "too_small",
            Refusal::Unaligned { .. } => "unaligned",
            Refusal::TooLarge { .. } => "too_large",
            Refusal::Foreign { .. } => "foreign",
            Refusal::SourceMissing { .. } => "source_missing",
            Refusal::NotListed { .. } => "source_not_listed",
            Refusal::Mismatch { .. } => "source_mismatch",
        }
    }
}

/// Decimal units, as disk vendors (and lsblk --bytes readers) count.
pub fn human(bytes: u64) -> String {
    let units = ["B", "kB", "MB", "GB", "TB", "PB"];
    let mut v = bytes as f64;
    let mut i = 0;
    while v >= 1000.0 && i + 1 < units.len() {
        v /= 1000.0;
        i += 1;
    }
    if i == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", units[i])
    }
}

fn or_unknown(s: &str) -> String {
    if s.is_empty() {
        "unknown".into()
    } else {
        s.into()
    }
}

/// Decide from `facts` alone whether `image_len` bytes of this node's artifact may go onto the
/// target. The running system's disk and disks in use are refused even with `force`.
pub fn plan(facts: &Facts, image_len: u64, ours: &Ours, force: bool) -> Result<Plan, Refusal> {
    let dev = facts.dev.clone();
    match &facts.kind {
        Kind::NotBlock { what } => return Err(Refusal::NotBlock { path: facts.path.clone(), what: what.clone() }),
        Kind::Partition { disk } => return Err(Refusal::Partition { path: facts.path.clone(), disk: disk.clone() }),
        Kind::Disk => {}
    }
    if !facts.system.is_empty() {
        return Err(Refusal::SystemDisk { dev, roles: facts.system.join(", ") });
    }
    let (mut uses, mut hints) = (Vec::new(), Vec::new());
    for m in &facts.members {
        for mp in &m.mounts {
            uses.push(format!("{} mounted on {mp}", m.dev));
            hints.push(format!("umount {mp}"));
        }
        if m.swap {
            uses.push(format!("{} is swap", m.dev));
            hints.push(format!("swapoff {}", m.dev));
        }
        for h in &m.holders {
            uses.push(format!("{} held by {h}", m.dev));
            hints.push(if h.starts_with("md") { format!("mdadm --stop /dev/{h}") } else { format!("dmsetup remove {h}") });
        }
    }
    if !uses.is_empty() {
        return Err(Refusal::InUse { dev, uses: uses.join("; "), hint: hints.join("; ") });
    }
    if facts.read_only {
        return Err(Refusal::ReadOnly { dev });
    }
    if facts.size < image_len {
        return Err(Refusal::TooSmall { dev, size: human(facts.size), need: human(image_len) });
    }
    if facts.logical_block_size == 0 || !image_len.is_multiple_of(facts.logical_block_size) {
        return Err(Refusal::Unaligned { dev, bytes: image_len, block: facts.logical_block_size });
    }
    let mut forced = Vec::new();
    if facts.size > STICK_MAX_BYTES {
        if !force {
            return Err(Refusal::TooLarge {
                dev,
                size: human(facts.size),
                model: or_unknown(&facts.model),
                serial: or_unknown(&facts.serial),
                max: human(STICK_MAX_BYTES),
            });
        }
        forced.push(format!("larger than {}", human(STICK_MAX_BYTES)));
    }
    let holds = facts.holds();
    let target_state = if holds.is_empty() {
        "blank"
    } else if facts.is_ours(ours) {
        "ours"
    } else {
        if !force {
            return Err(Refusal::Foreign {
                dev,
                model: or_unknown(&facts.model),
                serial: or_unknown(&facts.serial),
                holds: holds.join(", "),
            });
        }
        forced.push(format!("holds {}", holds.join(", ")));
        "foreign"
    };
    Ok(Plan { dev, bytes: image_len, target_state, forced })
}

// ---- facts ------------------------------------------------------------------------------------

fn sys_read(path: &Path) -> String {
    std::fs::read_to_string(path).map(|s| s.trim().to_string()).unwrap_or_default()
}

fn sys_num(path: &Path) -> u64 {
    sys_read(path).parse().unwrap_or(0)
}

/// Where the kernel's sysfs is mounted; the role resolution below takes it as a parameter so a
/// tree shaped like it (dm, md, LVM stacks this machine may lack) can stand in for it in tests.
const SYS: &str = "/sys";

/// The sysfs directory of a block device number, `SYS/dev/block/M:m` resolved.
fn sysfs_of(sys: &Path, major: u64, minor: u64) -> Option<PathBuf> {
    std::fs::canonicalize(sys.join(format!("dev/block/{major}:{minor}"))).ok()
}

fn dev_numbers(path: &Path) -> Option<(u64, u64)> {
    let md = std::fs::metadata(path).ok()?;
    md.file_type().is_block_device().then(|| {
        let r = md.rdev();
        (nix::sys::stat::major(r), nix::sys::stat::minor(r))
    })
}

/// Whole disks (and the dm/md devices on the way) under the device `major:minor`: a partition
/// resolves to its disk, a dm/md device to its slaves, recursively.
fn disks_under(sys: &Path, major: u64, minor: u64) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut todo: Vec<PathBuf> = sysfs_of(sys, major, minor).into_iter().collect();
    while let Some(dir) = todo.pop() {
        let Some(name) = dir.file_name().map(|n| n.to_string_lossy().into_owned()) else { continue };
        if !out.insert(name) || out.len() > 64 {
            continue;
        }
        if dir.join("partition").exists() {
            if let Some(parent) = dir.parent() {
                todo.push(parent.to_path_buf());
            }
        }
        if let Ok(slaves) = std::fs::read_dir(dir.join("slaves")) {
            todo.extend(slaves.flatten().filter_map(|s| std::fs::canonicalize(s.path()).ok()));
        }
    }
    out
}

/// Mount points by device number from /proc/self/mountinfo, plus each mount's source path.
struct MountEntry {
    major: u64,
    minor: u64,
    point: String,
    source: String,
}

fn unescape_mount(s: &str) -> String {
    // mountinfo escapes space, tab, newline and backslash as \ooo.
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c)) {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn mounts() -> Vec<MountEntry> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            let (maj, min) = f.get(2)?.split_once(':')?;
            let sep = f.iter().position(|x| *x == "-")?;
            Some(MountEntry {
                major: maj.parse().ok()?,
                minor: min.parse().ok()?,
                point: unescape_mount(f.get(4)?),
                source: unescape_mount(f.get(sep + 2).unwrap_or(&"")),
            })
        })
        .collect()
}

fn swap_devices() -> Vec<(u64, u64)> {
    let text = std::fs::read_to_string("/proc/swaps").unwrap_or_default();
    text.lines().skip(1).filter_map(|l| l.split_whitespace().next()).filter_map(|p| dev_numbers(Path::new(&unescape_mount(p)))).collect()
}

/// blkid's low-level probe of one device (superblocks and partition tables, no cache), read by
/// hostkit's one blkid parser: conflicting signatures count as holding something, and a device
/// blkid cannot probe is an error, never blank.
fn probe(dev: &str) -> Result<Content> {
    if !Path::new(dev).exists() {
        // No device node (no udev): unknown counts as holding something, never as blank.
        return Ok(Content { fstype: "unknown (no device node)".into(), ..Content::default() });
    }
    let found = hostkit::blkid::probe(dev)?;
    let field = |k: &str| found.get(k).unwrap_or_default().to_string();
    let mut c =
        Content { pttype: field("PTTYPE"), ptuuid: field("PTUUID"), fstype: field("TYPE"), label: field("LABEL"), uuid: field("UUID") };
    if found.ambivalent && c.is_empty() {
        c.fstype = "several conflicting signatures (blkid -p is ambivalent; wipefs -n lists them)".into();
    }
    Ok(c)
}

/// The bus by hostkit's one sysfs classifier (as the node's installer sees it), else what the
/// device name says of a virtual device.
fn transport(sys: &Path, name: &str) -> String {
    if let Some(bus) = hostkit::sysfs::bus_of_path(sys) {
        return bus.as_str().into();
    }
    let t = ["loop", "dm-", "md", "mmcblk"].into_iter().find(|p| name.starts_with(p)).map_or("unknown", |p| match p {
        "dm-" => "dm",
        "mmcblk" => "mmc",
        p => p,
    });
    t.into()
}

/// The serial: the block device's own, its device's, or the nearest USB device's up the tree.
fn serial(sys: &Path) -> String {
    for f in [sys.join("serial"), sys.join("device/serial"), sys.join("device/wwid")] {
        let s = sys_read(&f);
        if !s.is_empty() {
            return s;
        }
    }
    let mut dir = sys.parent();
    while let Some(d) = dir {
        if d.join("idVendor").exists() {
            return sys_read(&d.join("serial"));
        }
        dir = d.parent();
    }
    String::new()
}

fn model(sys: &Path) -> String {
    let vendor = sys_read(&sys.join("device/vendor"));
    let model = sys_read(&sys.join("device/model"));
    let backing = sys_read(&sys.join("loop/backing_file"));
    let m = [vendor, model].into_iter().filter(|s| !s.is_empty()).collect::<Vec<_>>().join(" ");
    if m.is_empty() && !backing.is_empty() {
        format!("loop on {backing}")
    } else {
        m
    }
}

/// Read the facts about `target` from the running kernel (sysfs, mountinfo, swaps, blkid).
pub fn gather(target: &Path) -> Result<Facts> {
    let shown = target.display().to_string();
    let meta = match std::fs::metadata(target) {
        Ok(m) => m,
        Err(e) => return Ok(Facts::not_block(&shown, &format!("cannot stat: {e}"))),
    };
    if !meta.file_type().is_block_device() {
        let what = if meta.is_dir() {
            "a directory"
        } else if meta.is_file() {
            "a regular file"
        } else {
            "not a device"
        };
        return Ok(Facts::not_block(&shown, what));
    }
    let (major, minor) = (nix::sys::stat::major(meta.rdev()), nix::sys::stat::minor(meta.rdev()));
    let sys = sysfs_of(Path::new(SYS), major, minor)
        .with_context(|| format!("{shown}: no /sys/dev/block/{major}:{minor} (is sysfs mounted?)"))?;
    let name = sys.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let dev = format!("/dev/{name}");
    if sys.join("partition").exists() {
        let disk = sys.parent().and_then(|p| p.file_name()).map(|n| format!("/dev/{}", n.to_string_lossy())).unwrap_or_default();
        let mut f = Facts::not_block(&shown, "");
        f.dev = dev;
        f.kind = Kind::Partition { disk };
        return Ok(f);
    }

    let all_mounts = mounts();
    let swaps = swap_devices();
    let member = |dir: &Path, mname: &str| -> Result<Member> {
        let mdev = format!("/dev/{mname}");
        let (mj, mn) =
            sys_read(&dir.join("dev")).split_once(':').and_then(|(a, b)| Some((a.parse().ok()?, b.parse().ok()?))).unwrap_or((0, 0));
        let canon = std::fs::canonicalize(&mdev).ok();
        let mut mounts: Vec<String> = all_mounts
            .iter()
            .filter(|m| (m.major, m.minor) == (mj, mn) || (canon.is_some() && std::fs::canonicalize(&m.source).ok() == canon))
            .map(|m| m.point.clone())
            .collect();
        mounts.sort();
        mounts.dedup();
        let holders = std::fs::read_dir(dir.join("holders"))
            .map(|rd| rd.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect::<Vec<_>>())
            .unwrap_or_default();
        Ok(Member {
            size: sys_num(&dir.join("size")) * 512,
            content: Content::default(),
            mounts,
            swap: swaps.contains(&(mj, mn)),
            holders: {
                let mut h = holders;
                h.sort();
                h
            },
            dev: mdev,
        })
    };
    let mut members = vec![member(&sys, &name)?];
    let mut parts: Vec<(PathBuf, String)> = std::fs::read_dir(&sys)
        .with_context(|| format!("reading {}", sys.display()))?
        .flatten()
        .filter(|e| e.path().join("partition").exists())
        .map(|e| (e.path(), e.file_name().to_string_lossy().into_owned()))
        .collect();
    parts.sort_by_key(|(p, _)| sys_num(&p.join("partition")));
    for (p, n) in &parts {
        members.push(member(p, n)?);
    }

    let system = system_roles(Path::new(SYS), &name, &all_mounts, &swaps, members.iter().any(|m| m.swap));
    // The running system's disk is refused whatever it holds, and may not even be readable
    // here (a container's device policy): what it holds is not asked.
    if system.is_empty() {
        for m in &mut members {
            m.content = probe(&m.dev)?;
        }
    }

    Ok(Facts {
        path: shown,
        dev,
        kind: Kind::Disk,
        size: sys_num(&sys.join("size")) * 512,
        logical_block_size: sys_num(&sys.join("queue/logical_block_size")).max(512),
        removable: sys_read(&sys.join("removable")) == "1",
        read_only: sys_read(&sys.join("ro")) == "1",
        transport: transport(&sys, &name),
        model: model(&sys),
        serial: serial(&sys),
        members,
        system,
    })
}

/// Which of the running system's `/`, `/boot`, `/boot/efi` and swap live on disk `name`, through
/// partitions and dm/md/LVM stacks (sysfs under `sys`). Swap directly on one of the disk's own
/// members is left to the in-use check (`member_swap`), which names it.
fn system_roles(sys: &Path, name: &str, mounts: &[MountEntry], swaps: &[(u64, u64)], member_swap: bool) -> Vec<String> {
    let mut system = Vec::new();
    for role in ["/", "/boot", "/boot/efi"] {
        for m in mounts.iter().filter(|m| m.point == role) {
            let mut under = disks_under(sys, m.major, m.minor);
            // btrfs and overlay roots report an anonymous device number: their source names the disk.
            if let Some((a, b)) = dev_numbers(Path::new(&m.source)) {
                under.extend(disks_under(sys, a, b));
            }
            if under.contains(name) {
                system.push(role.to_string());
                break;
            }
        }
    }
    if !member_swap && swaps.iter().any(|(a, b)| disks_under(sys, *a, *b).contains(name)) {
        system.push("swap".into());
    }
    system
}

// ---- source -----------------------------------------------------------------------------------

/// The verified artifact to write.
#[derive(Debug, Clone, Serialize)]
pub struct Source {
    pub path: PathBuf,
    pub len: u64,
    pub sha256: String,
}

fn sha256_of(reader: &mut impl Read, len: u64, progress: &indicatif::ProgressBar) -> std::io::Result<String> {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; BLOCK];
    let mut left = len;
    while left > 0 {
        let n = reader.read(&mut buf[..BLOCK.min(left as usize)])?;
        if n == 0 {
            return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "short read"));
        }
        h.update(&buf[..n]);
        left -= n as u64;
        progress.inc(n as u64);
    }
    Ok(hostkit::ids::hex(&h.finalize()))
}

/// Check DIR/<node>/<artifact> against its line in DIR/SHA256SUMS.
pub fn verify_source(out: &Path, node: &str, artifact: Artifact, quiet: bool) -> Result<std::result::Result<Source, Refusal>> {
    let rel = format!("{node}/{}", artifact.file_name());
    let path = out.join(&rel);
    let sums_path = out.join("SHA256SUMS");
    let Ok(meta) = std::fs::metadata(&path) else {
        return Ok(Err(Refusal::SourceMissing { path: path.display().to_string() }));
    };
    let sums = match std::fs::read_to_string(&sums_path) {
        Ok(s) => s,
        Err(_) => return Ok(Err(Refusal::NotListed { sums: sums_path.display().to_string(), rel })),
    };
    let expected = sums.lines().find_map(|l| {
        let (sha, name) = l.split_once("  ")?;
        (name.trim_start_matches('*') == rel).then(|| sha.trim().to_ascii_lowercase())
    });
    let Some(expected) = expected else {
        return Ok(Err(Refusal::NotListed { sums: sums_path.display().to_string(), rel }));
    };
    let mut f = File::open(&path).with_context(|| format!("opening {}", path.display()))?;
    let bar = progress_bar(meta.len(), "checking source", quiet);
    let actual = sha256_of(&mut f, meta.len(), &bar).with_context(|| format!("reading {}", path.display()))?;
    bar.finish_and_clear();
    if actual != expected {
        return Ok(Err(Refusal::Mismatch { path: path.display().to_string(), sums: sums_path.display().to_string(), expected, actual }));
    }
    Ok(Ok(Source { path, len: meta.len(), sha256: actual }))
}

// ---- apply ------------------------------------------------------------------------------------

fn progress_bar(len: u64, what: &str, quiet: bool) -> indicatif::ProgressBar {
    if quiet || !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(len);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{msg:16} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_message(what.to_string());
    bar
}

/// A `len`-byte buffer at a 4 KiB-aligned address, as O_DIRECT needs, without unsafe code.
struct Aligned {
    raw: Vec<u8>,
    off: usize,
}

impl Aligned {
    fn new(len: usize) -> Aligned {
        let raw = vec![0u8; len + 4096];
        let off = raw.as_ptr().align_offset(4096);
        Aligned { raw, off }
    }
    fn buf(&mut self, len: usize) -> &mut [u8] {
        &mut self.raw[self.off..self.off + len]
    }
}

/// What [`apply`] did.
#[derive(Debug, Clone, Serialize)]
pub struct Written {
    pub bytes: u64,
    pub write_seconds: f64,
    pub verify_seconds: f64,
    /// Bytes per second, written and synced.
    pub write_rate: f64,
    pub verify_rate: f64,
    pub sha256: String,
}

/// Why applying failed after the plan allowed it.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// O_EXCL refused: the kernel holds the device (mounted or claimed since the facts were read).
    #[error("{dev} is busy (the kernel holds it: mounted, or claimed by dm/md or another program); release it and run again")]
    Busy { dev: String },
    #[error("{dev}: the data read back does not match (sha256 {actual}, expected {expected}): the disk or stick is faulty, or something else wrote to it; do not use it")]
    VerifyFailed { dev: String, expected: String, actual: String },
}

/// Write `source` onto `plan.dev` (whole image, zeros included), sync, read back and compare.
pub fn apply(plan: &Plan, source: &Source, quiet: bool) -> Result<Written> {
    let open = |write: bool| -> Result<File> {
        OpenOptions::new().read(true).write(write).custom_flags(nix::libc::O_EXCL | nix::libc::O_DIRECT).open(&plan.dev).map_err(
            |e| match e.raw_os_error() {
                Some(nix::libc::EBUSY) => anyhow::Error::new(ApplyError::Busy { dev: plan.dev.clone() }),
                Some(nix::libc::EACCES) | Some(nix::libc::EPERM) => {
                    anyhow::Error::new(hostkit::cmd::Unusable(format!("{}: {e}: writing a disk needs root (run it with sudo)", plan.dev)))
                }
                _ => anyhow::Error::new(e).context(format!("opening {}", plan.dev)),
            },
        )
    };
    let mut dev = open(true)?;
    let mut src = File::open(&source.path).with_context(|| format!("opening {}", source.path.display()))?;
    let mut buf = Aligned::new(BLOCK);

    let bar = progress_bar(source.len, "writing", quiet);
    let t0 = Instant::now();
    let mut done = 0u64;
    while done < source.len {
        let n = BLOCK.min((source.len - done) as usize);
        let b = buf.buf(n);
        src.read_exact(b).with_context(|| format!("reading {} at {done}", source.path.display()))?;
        dev.write_all(b).with_context(|| format!("writing {} at byte {done}", plan.dev))?;
        done += n as u64;
        bar.inc(n as u64);
    }
    bar.set_message("syncing");
    dev.sync_data().with_context(|| format!("syncing {}", plan.dev))?;
    let write_time = t0.elapsed();
    bar.finish_and_clear();

    // O_DIRECT reads come from the device, not from the page cache the write may have filled.
    dev.seek(SeekFrom::Start(0)).with_context(|| format!("seeking {}", plan.dev))?;
    let bar = progress_bar(source.len, "verifying", quiet);
    let t1 = Instant::now();
    let mut h = Sha256::new();
    let mut done = 0u64;
    while done < source.len {
        let n = BLOCK.min((source.len - done) as usize);
        let b = buf.buf(n);
        dev.read_exact(b).with_context(|| format!("reading {} back at byte {done}", plan.dev))?;
        h.update(&*b);
        done += n as u64;
        bar.inc(n as u64);
    }
    let verify_time = t1.elapsed();
    bar.finish_and_clear();
    drop(dev);
    let actual = hostkit::ids::hex(&h.finalize());
    if actual != source.sha256 {
        return Err(ApplyError::VerifyFailed { dev: plan.dev.clone(), expected: source.sha256.clone(), actual }.into());
    }
    // Best effort: let the kernel see the new partition table now (udev then makes the links).
    let _ = hostkit::cmd::run(Command::new("blockdev").args(["--rereadpt", &plan.dev]));
    let rate = |d: Duration| source.len as f64 / d.as_secs_f64().max(1e-6);
    Ok(Written {
        bytes: source.len,
        write_seconds: write_time.as_secs_f64(),
        verify_seconds: verify_time.as_secs_f64(),
        write_rate: rate(write_time),
        verify_rate: rate(verify_time),
        sha256: actual,
    })
}

// ---- the command ------------------------------------------------------------------------------

pub struct Options {
    pub fleet: PathBuf,
    pub data: Option<PathBuf>,
    pub out: PathBuf,
    pub node: String,
    pub to: PathBuf,
    pub artifact: Artifact,
    pub force: bool,
    pub dry_run: bool,
    pub json: bool,
}

/// Human-readable plan: what is there now and what will happen.
pub fn render_plan(facts: &Facts, source: &Source, node: &str, artifact: Artifact, plan: &Plan) -> String {
    let dash = |s: &str| if s.is_empty() { "-".to_string() } else { s.to_string() };
    let holds = facts.holds();
    let state = match plan.target_state {
        "ours" => format!("{} (this node's earlier write)", holds.join(", ")),
        "blank" => "nothing (blank)".into(),
        _ => holds.join(", "),
    };
    let mut s = String::new();
    s += &format!("source     {} ({node}, {})\n", source.path.display(), artifact.file_name());
    s += &format!("           sha256 {} matches SHA256SUMS\n", source.sha256);
    s += &format!("target     {} ({})\n", facts.dev, facts.path);
    s += &format!("model      {}\n", dash(&facts.model));
    s += &format!("serial     {}\n", dash(&facts.serial));
    s += &format!(
        "size       {} ({} bytes), {}, {}\n",
        human(facts.size),
        facts.size,
        dash(&facts.transport),
        if facts.removable { "removable" } else { "fixed" }
    );
    s += &format!("holds      {state}\n");
    if !plan.forced.is_empty() {
        s += &format!("forced     {}\n", plan.forced.join("; "));
    }
    s += &format!("write      {} bytes ({}), then read back and compare sha256\n", plan.bytes, human(plan.bytes));
    s
}

/// `mmbuild write`: the exit code (0 written and verified, 7 refused).
pub fn run(opts: &Options) -> Result<Exit> {
    let fleet = crate::inventory::fleet::open(&opts.fleet, opts.data.as_deref())?;
    if fleet.node(&opts.node).is_none() {
        return exit::invalid(format!("--node {}: no such node in {}", opts.node, opts.fleet.display()));
    }
    let ours = Ours::of(&fleet.name, &opts.node);
    let refuse = |r: Refusal, facts: Option<&Facts>| -> Result<Exit> {
        if opts.json {
            let doc = serde_json::json!({"version": 1, "node": opts.node, "artifact": opts.artifact, "target": facts,
                "refused": {"kind": r.kind(), "message": r.to_string()}});
            println!("{}", serde_json::to_string_pretty(&doc)?);
        }
        eprintln!("mmbuild: refused, nothing was written: {r}");
        Ok(Exit::Refused)
    };
    // The target first: a wrong --to is told before minutes of checksumming.
    let facts = gather(&opts.to)?;
    if let Err(r) = plan(&facts, 0, &ours, true) {
        if !matches!(r, Refusal::TooSmall { .. } | Refusal::Unaligned { .. }) {
            return refuse(r, Some(&facts));
        }
    }
    let source = match verify_source(&opts.out, &opts.node, opts.artifact, opts.json)? {
        Ok(s) => s,
        Err(r) => return refuse(r, Some(&facts)),
    };
    let plan = match plan(&facts, source.len, &ours, opts.force) {
        Ok(p) => p,
        Err(r) => return refuse(r, Some(&facts)),
    };
    let mut doc = serde_json::json!({"version": 1, "node": opts.node, "artifact": opts.artifact, "source": source,
        "target": facts, "plan": plan, "dry_run": opts.dry_run});
    if !opts.json {
        print!("{}", render_plan(&facts, &source, &opts.node, opts.artifact, &plan));
    }
    if opts.dry_run {
        if opts.json {
            println!("{}", serde_json::to_string_pretty(&doc)?);
        } else {
            println!("--dry-run: nothing written");
        }
        return Ok(Exit::Ok);
    }
    let written = match apply(&plan, &source, opts.json) {
        Ok(w) => w,
        Err(e) if e.downcast_ref::<ApplyError>().is_some_and(|a| matches!(a, ApplyError::Busy { .. })) => {
            eprintln!("mmbuild: refused, nothing was written: {e:#}");
            return Ok(Exit::Refused);
        }
        Err(e) => return Err(e),
    };
    if opts.json {
        doc["written"] = serde_json::to_value(&written)?;
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        println!(
            "wrote {} to {} in {:.1} s ({}/s), read back in {:.1} s ({}/s): sha256 matches",
            human(written.bytes),
            plan.dev,
            written.write_seconds,
            human(written.write_rate as u64),
            written.verify_seconds,
            human(written.verify_rate as u64)
        );
    }
    Ok(Exit::Ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_sizes_are_decimal() {
        assert_eq!(human(999), "999 B");
        assert_eq!(human(16_000_000_000), "16.0 GB");
        assert_eq!(human(2_000_398_934_016), "2.0 TB");
    }

    #[test]
    fn mountinfo_escapes_are_undone() {
        assert_eq!(unescape_mount("/media/my\\040stick"), "/media/my stick");
        assert_eq!(unescape_mount("/a\\134b"), "/a\\b");
        assert_eq!(unescape_mount("/plain\\"), "/plain\\");
    }

    /// A sysfs-shaped tree: `/sys/dev/block/M:m` links to device directories, partitions inside
    /// their disk, `slaves/` links from a dm/md device down to what it is built on, as the kernel
    /// lays them out. This machine's kernel may have no device-mapper; the real dm case is in
    /// builder/tests/write.rs.
    struct FakeSys(tempfile::TempDir);

    impl FakeSys {
        fn new() -> FakeSys {
            FakeSys(tempfile::tempdir().unwrap())
        }
        fn dir(&self, rel: &str) -> PathBuf {
            self.0.path().join("devices").join(rel)
        }
        /// Device `rel` (e.g. `pci/block/sda/sda1`, a partition when it sits inside a disk) as M:m.
        fn dev(&self, rel: &str, majmin: &str) {
            let d = self.dir(rel);
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("dev"), format!("{majmin}\n")).unwrap();
            if Path::new(rel).parent().and_then(|p| p.file_name()).is_some_and(|p| p != "block") {
                std::fs::write(d.join("partition"), "1\n").unwrap();
            }
            let links = self.0.path().join("dev/block");
            std::fs::create_dir_all(&links).unwrap();
            std::os::unix::fs::symlink(&d, links.join(majmin)).unwrap();
        }
        /// `upper` (dm/md) is built on `lower`.
        fn slave(&self, upper: &str, lower: &str) {
            let s = self.dir(upper).join("slaves");
            std::fs::create_dir_all(&s).unwrap();
            let name = Path::new(lower).file_name().unwrap();
            std::os::unix::fs::symlink(self.dir(lower), s.join(name)).unwrap();
        }
    }

    fn mount(point: &str, majmin: (u64, u64)) -> MountEntry {
        MountEntry { major: majmin.0, minor: majmin.1, point: point.into(), source: String::new() }
    }

    #[test]
    fn the_running_system_is_found_through_partitions_dm_md_and_lvm() {
        let sys = FakeSys::new();
        // sda: /boot/efi on sda1 directly; sdb and sdc: md0 (RAID1 of sdb1, sdc1) under an LVM
        // volume group whose LV dm-1 holds /; dm-2, a crypt device on sdd1, is swap; sde is spare.
        for (rel, mm) in [
            ("pci/block/sda", "8:0"),
            ("pci/block/sda/sda1", "8:1"),
            ("pci/block/sdb", "8:16"),
            ("pci/block/sdb/sdb1", "8:17"),
            ("pci/block/sdc", "8:32"),
            ("pci/block/sdc/sdc1", "8:33"),
            ("pci/block/sdd", "8:48"),
            ("pci/block/sdd/sdd1", "8:49"),
            ("pci/block/sde", "8:64"),
            ("virtual/block/md0", "9:0"),
            ("virtual/block/dm-1", "254:1"),
            ("virtual/block/dm-2", "254:2"),
        ] {
            sys.dev(rel, mm);
        }
        sys.slave("virtual/block/md0", "pci/block/sdb/sdb1");
        sys.slave("virtual/block/md0", "pci/block/sdc/sdc1");
        sys.slave("virtual/block/dm-1", "virtual/block/md0");
        sys.slave("virtual/block/dm-2", "pci/block/sdd/sdd1");
        let mounts = [mount("/", (254, 1)), mount("/boot/efi", (8, 1)), mount("/srv", (8, 64))];
        let swaps = [(254, 2)];
        let roles = |disk: &str, member_swap: bool| system_roles(sys.0.path(), disk, &mounts, &swaps, member_swap);
        assert_eq!(roles("sda", false), ["/boot/efi"]);
        assert_eq!(roles("sdb", false), ["/"], "/ on an LV on md0 on sdb1");
        assert_eq!(roles("sdc", false), ["/"], "the other half of the mirror");
        assert_eq!(roles("sdd", false), ["swap"], "swap on dm-2 on sdd1");
        assert_eq!(roles("sdd", true), Vec::<String>::new(), "swap on a member of its own is the in-use check's");
        assert_eq!(roles("sde", false), Vec::<String>::new(), "/srv is not the running system");
        assert_eq!(roles("sdf", false), Vec::<String>::new());
        assert_eq!(
            disks_under(sys.0.path(), 254, 1),
            ["dm-1", "md0", "sdb", "sdb1", "sdc", "sdc1"].map(String::from).into(),
            "each layer on the way down"
        );
    }

    #[test]
    fn ours_matches_what_the_build_writes() {
        let o = Ours::of("f", "n");
        assert_eq!(o.ptuuid, crate::image::gpt::guid("f", "n", "disk").to_string());
        let v = crate::ship::oemdrv::volume_id("f", "n");
        assert_eq!(u32::from_str_radix(&o.fat_uuid.replace('-', ""), 16).unwrap(), v);
        assert_ne!(Ours::of("f", "m"), o);
    }
}
