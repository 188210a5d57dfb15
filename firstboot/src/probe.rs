//! Observing the machine: disks (sysfs + blkid), network ports (sysfs), mounts.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};
use hostkit::cmd::run;
use mmconfig::os::Slot;
use mmconfig::{Bus, DiskFacts, CONFIG_LABEL, DATA_LABEL, ROOT_LABEL};

use crate::network::Nic;
use crate::storage::{Content, Disk};

/// Test and recovery override: consider only this device, with this bus and serial.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskOverride {
    pub device: String,
    pub bus: Option<Bus>,
    pub serial: Option<String>,
}

impl std::str::FromStr for DiskOverride {
    type Err = String;
    /// `DEVICE[:BUS[:SERIAL]]`, e.g. `/dev/loop3:virtio:D1`.
    fn from_str(s: &str) -> Result<Self, String> {
        let mut parts = s.splitn(3, ':');
        let device = parts.next().unwrap_or_default().to_string();
        if !device.starts_with("/dev/") {
            return Err(format!("{s}: expected /dev/NAME[:BUS[:SERIAL]]"));
        }
        let bus = match parts.next() {
            None | Some("") => None,
            Some(b) => Some(
                serde_json::from_value::<Bus>(serde_json::Value::String(b.into()))
                    .map_err(|_| format!("{s}: unknown bus {b} (sata, nvme, virtio, usb, scsi)"))?,
            ),
        };
        Ok(DiskOverride { device, bus, serial: parts.next().map(String::from) })
    }
}

/// A sysfs attribute, trimmed; empty when absent.
pub fn read_trim(p: &Path) -> String {
    fs::read_to_string(p).map(|s| s.trim().to_string()).unwrap_or_default()
}

/// Key blkid never prints: set when low-level probing found several conflicting signatures.
pub const AMBIVALENT: &str = "MM_AMBIVALENT";

/// `blkid -p -o export DEV` as a map (hostkit's one reading of blkid): empty when the device holds
/// no signature, [`AMBIVALENT`] when it holds conflicting ones (exit 8). A device that cannot be
/// probed is an error naming it: on the disk-safety path "could not look" is never "blank".
pub fn blkid(dev: &str) -> Result<BTreeMap<String, String>> {
    let found = hostkit::blkid::probe(dev).with_context(|| format!("probing {dev} for filesystems and partition tables"))?;
    let mut map = found.fields;
    if found.ambivalent {
        map.insert(AMBIVALENT.into(), "1".into());
    }
    Ok(map)
}

fn by_path(kname: &str) -> Option<String> {
    let mut names: Vec<String> = fs::read_dir("/dev/disk/by-path")
        .ok()?
        .flatten()
        .filter(|e| fs::read_link(e.path()).is_ok_and(|t| t.file_name().is_some_and(|n| n == kname)))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names.into_iter().next()
}

struct Part {
    dev: String,
    start: u64,
    size: u64,
    info: BTreeMap<String, String>,
}

/// The serial udev recorded for block device `major:minor`: SATA disks expose none in sysfs,
/// only udev's ATA IDENTIFY probe knows it (the serial on the drive's label).
fn udev_serial(dev: &str) -> String {
    let db = fs::read_to_string(format!("/run/udev/data/b{dev}")).unwrap_or_default();
    db.lines().find_map(|l| l.strip_prefix("E:ID_SERIAL_SHORT=")).unwrap_or("").trim().to_string()
}

/// Whether /sys/block/`name` is a disk worth considering: not a loop, RAM, optical, dm/md or
/// network device, and not hidden (an NVMe multipath controller path such as `nvme0c0n1`, the
/// same namespace as `nvme0n1` again, with no device node).
pub fn is_disk(name: &str) -> bool {
    !["loop", "ram", "zram", "sr", "dm-", "md", "nbd", "fd"].iter().any(|p| name.starts_with(p))
        && read_trim(&Path::new("/sys/block").join(name).join("hidden")) != "1"
}

/// The serial sysfs knows: NVMe and virtio directly, SCSI/SATA/USB through the unit serial
/// number VPD page (libata answers it from the same ATA IDENTIFY data udev reads).
pub fn sysfs_serial(sys_block: &Path) -> String {
    let direct = [read_trim(&sys_block.join("device/serial")), read_trim(&sys_block.join("serial"))].into_iter().find(|s| !s.is_empty());
    direct.unwrap_or_else(|| {
        let page = fs::read(sys_block.join("device/vpd_pg80")).unwrap_or_default();
        page.get(4..)
            .map(|s| String::from_utf8_lossy(s).trim_matches(|c: char| c.is_whitespace() || c == '\0').to_string())
            .unwrap_or_default()
    })
}

/// The GPT names of the image's own partitions besides MMDATA (builder/src/image/gpt.rs lays them out).
const IMAGE_PARTITIONS: [&str; 4] = ["ESP", CONFIG_LABEL, Slot::A.partlabel(), Slot::B.partlabel()];

/// A partition's GPT name, from its sysfs uevent.
pub(crate) fn partname(sys_part: &Path) -> Option<String> {
    fs::read_to_string(sys_part.join("uevent")).ok()?.lines().find_map(|l| l.strip_prefix("PARTNAME=")).map(String::from)
}

/// Every disk worth considering, with its content classified.
pub fn disks(overrides: &[DiskOverride], root_source: Option<&str>) -> Result<Vec<Disk>> {
    let mut names: Vec<(String, Option<&DiskOverride>)> = Vec::new();
    if overrides.is_empty() {
        for e in fs::read_dir("/sys/block").context("reading /sys/block")?.flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            if !is_disk(&n) {
                continue;
            }
            names.push((n, None));
        }
    } else {
        for o in overrides {
            names.push((o.device.trim_start_matches("/dev/").to_string(), Some(o)));
        }
    }
    names.sort_by(|a, b| a.0.cmp(&b.0));
    let mut out = Vec::new();
    for (kname, ov) in names {
        let sys = PathBuf::from("/sys/block").join(&kname);
        if !sys.exists() {
            anyhow::bail!("/dev/{kname}: no such block device");
        }
        let size_bytes = read_trim(&sys.join("size")).parse::<u64>().unwrap_or(0) * 512;
        let serial = ov.and_then(|o| o.serial.clone()).unwrap_or_else(|| {
            // udev's before the VPD page: that is the serial the kickstart and firstboot saw.
            [
                read_trim(&sys.join("device/serial")),
                read_trim(&sys.join("serial")),
                udev_serial(&read_trim(&sys.join("dev"))),
                sysfs_serial(&sys),
            ]
            .into_iter()
            .find(|s| !s.is_empty())
            .unwrap_or_default()
        });
        let facts = DiskFacts {
            kname: kname.clone(),
            bus: ov.and_then(|o| o.bus).or_else(|| hostkit::sysfs::bus_of(&sys)),
            model: read_trim(&sys.join("device/model")),
            serial,
            by_path: by_path(&kname),
            size_bytes,
            removable: read_trim(&sys.join("removable")) == "1",
        };
        let device = format!("/dev/{kname}");
        let whole = blkid(&device)?;
        if whole.contains_key("PTTYPE") {
            // Make sure the kernel's partition list matches the table (read-only for the disk);
            // partx fails harmlessly when every partition is already known.
            let _ = run(Command::new("partx").args(["-a", &device]));
        }
        let holds_root = root_source.is_some_and(|r| sys.join(r.trim_start_matches("/dev/")).is_dir());
        let mut parts: Vec<Part> = fs::read_dir(&sys)?
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with(&kname) && e.path().join("partition").exists())
            .map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                ensure_node(&name);
                let dev = format!("/dev/{name}");
                let image_part = holds_root.then(|| partname(&e.path())).flatten().filter(|n| IMAGE_PARTITIONS.contains(&n.as_str()));
                Ok(Part {
                    start: read_trim(&e.path().join("start")).parse().unwrap_or(0),
                    size: read_trim(&e.path().join("size")).parse().unwrap_or(0),
                    // The running image's own partitions are named, not probed: nothing here
                    // may hold data, and each blkid costs a tenth of a second under emulation.
                    info: match image_part {
                        Some(n) => BTreeMap::from([("PART_ENTRY_NAME".to_string(), n)]),
                        None => blkid(&dev)?,
                    },
                    dev,
                })
            })
            .collect::<Result<_>>()?;
        parts.sort_by_key(|p| p.start);
        let is_boot = parts
            .iter()
            .any(|p| p.info.get("LABEL").is_some_and(|l| l == CONFIG_LABEL || l == ROOT_LABEL) || root_source == Some(p.dev.as_str()))
            || root_source == Some(device.as_str());
        let last_end = parts.iter().map(|p| (p.start + p.size) * 512).max().unwrap_or(0);
        // The backup GPT needs 33 sectors at the very end.
        let free_tail_bytes = size_bytes.saturating_sub(last_end).saturating_sub(1 << 20);
        let content = classify(&device, size_bytes, &whole, &parts);
        out.push(Disk { facts, device, content, is_boot, free_tail_bytes });
    }
    Ok(out)
}

fn classify(device: &str, size: u64, whole: &BTreeMap<String, String>, parts: &[Part]) -> Content {
    if let Some(p) =
        parts.iter().find(|p| p.info.get("LABEL").is_some_and(|l| l == DATA_LABEL) && p.info.get("TYPE").is_some_and(|t| t == "xfs"))
    {
        let is_last = parts.last().is_some_and(|l| l.dev == p.dev);
        let part_end = (p.start + p.size) * 512;
        return Content::MmData {
            device: p.dev.clone(),
            // Worth growing when at least 1 GiB (beyond the backup GPT) lies unused after it.
            growable: is_last && size.saturating_sub(part_end) > (1 << 30) + (1 << 20),
        };
    }
    if whole.get("LABEL").is_some_and(|l| l == DATA_LABEL) && whole.get("TYPE").is_some_and(|t| t == "xfs") {
        return Content::MmData { device: device.into(), growable: false };
    }
    if whole.get("PTTYPE").is_some_and(|t| t == "gpt")
        && parts.len() == 1
        && parts[0].info.get("PART_ENTRY_NAME").is_some_and(|n| n == DATA_LABEL)
        && !parts[0].info.contains_key("TYPE")
        // Conflicting signatures are data blkid will not name: not an empty partition of ours.
        && !parts[0].info.contains_key(AMBIVALENT)
    {
        return Content::MmPartition { device: parts[0].dev.clone() };
    }
    if whole.contains_key(AMBIVALENT) || parts.iter().any(|p| p.info.contains_key(AMBIVALENT)) {
        return Content::Foreign { what: "several conflicting signatures (blkid -p is ambivalent)".into() };
    }
    if let Some(t) = whole.get("TYPE") {
        let label = whole.get("LABEL").map(|l| format!(" labelled \"{l}\"")).unwrap_or_default();
        return Content::Foreign { what: format!("{} {t} filesystem{label}", article(t)) };
    }
    if let Some(pt) = whole.get("PTTYPE") {
        let fs: Vec<String> = parts
            .iter()
            .map(|p| {
                format!(
                    "{}{}",
                    p.info.get("TYPE").map_or("no filesystem", String::as_str),
                    p.info.get("LABEL").map(|l| format!(" \"{l}\"")).unwrap_or_default()
                )
            })
            .collect();
        return Content::Foreign {
            what: format!("{} {pt} partition table with {} partition(s) ({})", article(pt), parts.len(), fs.join(", ")),
        };
    }
    if !parts.is_empty() {
        return Content::Foreign { what: format!("{} partition(s)", parts.len()) };
    }
    match nonzero_edges(device, size) {
        Ok(false) => Content::Blank,
        Ok(true) => Content::Foreign { what: "non-zero data in its first or last MiB (unknown content)".into() },
        Err(e) => Content::Foreign { what: format!("unreadable content ({e})") },
    }
}

fn article(word: &str) -> &'static str {
    if word.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    }
}

/// Whether the first or last MiB of the device holds anything but zeros.
pub fn nonzero_edges(device: &str, size: u64) -> std::io::Result<bool> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = fs::File::open(device)?;
    let mut buf = vec![0u8; 1 << 20];
    for off in [0, size.saturating_sub(1 << 20)] {
        f.seek(SeekFrom::Start(off))?;
        let n = f.read(&mut buf)?;
        if buf[..n].iter().any(|&b| b != 0) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Source device of the filesystem mounted at `mountpoint`, from /proc/self/mounts.
pub fn mount_source(mountpoint: &Path) -> Option<String> {
    let want = mountpoint.to_string_lossy().trim_end_matches('/').to_string();
    let want = if want.is_empty() { "/".to_string() } else { want };
    let text = fs::read_to_string("/proc/self/mounts").ok()?;
    text.lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            Some((f.next()?.to_string(), f.next()?.replace("\\040", " ")))
        })
        .filter(|(_, mp)| *mp == want)
        .map(|(src, _)| src)
        .next_back()
}

/// Network ports (physical ones: those with a device link), sorted by name.
pub fn nics() -> Vec<Nic> {
    let mut out: Vec<Nic> = fs::read_dir("/sys/class/net")
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().join("device").exists())
        .map(|e| {
            let p = e.path();
            let driver = fs::read_link(p.join("device/driver"))
                .ok()
                .and_then(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()))
                .unwrap_or_default();
            Nic {
                name: e.file_name().to_string_lossy().into_owned(),
                mac: read_trim(&p.join("address")),
                // virtio-net's driver is virtio_net on the virtio device, not on PCI.
                driver,
                carrier: read_trim(&p.join("carrier")) == "1",
            }
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// Create /dev/NAME from sysfs when udev is not running (containers, early boot, tests).
pub fn ensure_node(name: &str) {
    use nix::sys::stat::{makedev, mknod, Mode, SFlag};
    let dev = format!("/dev/{name}");
    if Path::new(&dev).exists() {
        return;
    }
    if let Ok(nums) = fs::read_to_string(format!("/sys/class/block/{name}/dev")) {
        if let Some((maj, min)) = nums.trim().split_once(':') {
            if let (Ok(maj), Ok(min)) = (maj.parse(), min.parse()) {
                let _ = mknod(dev.as_str(), SFlag::S_IFBLK, Mode::from_bits_truncate(0o660), makedev(maj, min));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn part(n: u64, pairs: &[(&str, &str)]) -> Part {
        Part { dev: format!("/dev/x{n}"), start: 2048 * n, size: 2048, info: info(pairs) }
    }

    /// The disk-safety classifier: only a disk with no signature, no partition and zero edges
    /// is blank; conflicting signatures (blkid exit 8) and unreadable edges are foreign.
    #[test]
    fn classifier_table() {
        let dir = tempfile::tempdir().unwrap();
        let zeros = dir.path().join("zeros");
        std::fs::write(&zeros, vec![0u8; 3 << 20]).unwrap();
        let junk = dir.path().join("junk");
        let mut bytes = vec![0u8; 3 << 20];
        bytes[(3 << 20) - 10] = 1;
        std::fs::write(&junk, bytes).unwrap();
        let (zeros, junk) = (zeros.to_string_lossy().into_owned(), junk.to_string_lossy().into_owned());
        let missing = dir.path().join("missing").to_string_lossy().into_owned();
        let size = 3 << 20;
        let ambivalent = [(AMBIVALENT, "1")];
        let gpt = [("PTTYPE", "gpt")];
        let mmdata_xfs = [("TYPE", "xfs"), ("LABEL", DATA_LABEL)];
        // (case, device, whole disk, partitions, Content::Blank / MmData / MmPartition / Foreign and a word of its text)
        type Case<'a> = (&'a str, &'a str, BTreeMap<String, String>, Vec<Part>, &'a str, &'a str);
        let table: Vec<Case> = vec![
            ("zeros, nothing found", &zeros, info(&[]), vec![], "blank", ""),
            ("whole disk ambivalent", &zeros, info(&ambivalent), vec![], "foreign", "conflicting"),
            ("a partition ambivalent", &zeros, info(&gpt), vec![part(1, &ambivalent)], "foreign", "conflicting"),
            ("non-zero last MiB", &junk, info(&[]), vec![], "foreign", "non-zero"),
            ("edges unreadable", &missing, info(&[]), vec![], "foreign", "unreadable"),
            ("an ext4", &zeros, info(&[("TYPE", "ext4"), ("LABEL", "home")]), vec![], "foreign", "an ext4 filesystem labelled \"home\""),
            ("a foreign table", &zeros, info(&gpt), vec![part(1, &[("TYPE", "ntfs")])], "foreign", "a gpt partition table with 1"),
            ("partitions without a table", &zeros, info(&[]), vec![part(1, &[])], "foreign", "1 partition(s)"),
            ("our data partition", &zeros, info(&gpt), vec![part(1, &mmdata_xfs)], "mmdata", ""),
            ("our data filesystem on the whole disk", &zeros, info(&mmdata_xfs), vec![], "mmdata", ""),
            ("our partition, no filesystem yet", &zeros, info(&gpt), vec![part(1, &[("PART_ENTRY_NAME", DATA_LABEL)])], "mmpartition", ""),
            (
                "our partition name over an ambivalent partition",
                &zeros,
                info(&gpt),
                vec![part(1, &[("PART_ENTRY_NAME", DATA_LABEL), (AMBIVALENT, "1")])],
                "foreign",
                "conflicting",
            ),
        ];
        for (case, dev, whole, parts, kind, text) in table {
            let got = classify(dev, size, &whole, &parts);
            let (k, what) = match &got {
                Content::Blank => ("blank", String::new()),
                Content::MmData { .. } => ("mmdata", String::new()),
                Content::MmPartition { .. } => ("mmpartition", String::new()),
                Content::Foreign { what } => ("foreign", what.clone()),
            };
            assert_eq!(k, kind, "{case}: {got:?}");
            assert!(what.contains(text), "{case}: {what}");
        }
    }

    /// A device blkid cannot look at is an error, never an empty (blank) answer.
    #[test]
    fn a_device_that_cannot_be_probed_is_an_error() {
        let e = blkid("/dev/mm-no-such-disk").unwrap_err();
        assert!(format!("{e:#}").contains("/dev/mm-no-such-disk"), "{e:#}");
    }

    #[test]
    fn disk_overrides_parse() {
        let o: DiskOverride = "/dev/loop3:virtio:D1".parse().unwrap();
        assert_eq!(o, DiskOverride { device: "/dev/loop3".into(), bus: Some(Bus::Virtio), serial: Some("D1".into()) });
        let o: DiskOverride = "/dev/sdb".parse().unwrap();
        assert_eq!(o.bus, None);
        assert!("/dev/sdb:floppy".parse::<DiskOverride>().unwrap_err().contains("unknown bus"));
        assert!("sdb".parse::<DiskOverride>().is_err());
    }
}
