//! The install role's decisions (pure): which disk the stick's image goes to, whether it may be
//! written, what of the old layout is kept, and the UEFI boot entry that hands over to it.

use mmconfig::install::{InstallManifest, InstallPartition};
use mmconfig::{DiskFacts, DATA_LABEL};

/// A disk the installer can see, with what is on it.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub facts: DiskFacts,
    /// A valid GPT: disk GUID and partitions.
    pub gpt: Option<(String, Vec<InstallPartition>)>,
    /// The first and last MiB are all zeros: nothing anyone could lose.
    pub blank: bool,
    /// What the first bytes look like when there is no GPT (an MBR, a filesystem), for messages.
    pub signature: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Write the image to `disk`; the new GPT holds the image's partitions plus `keep`.
    Write { disk: String, why: String, keep: Option<InstallPartition> },
    /// `disk` already holds this node's install: boot it, unless someone asks for a reinstall
    /// (which keeps `keep`).
    Installed { disk: String, keep: Option<InstallPartition> },
    /// Nothing may be written; the message says why and what to do.
    Refuse(String),
}

fn describe(d: &DiskFacts) -> String {
    let bus = d.bus.map_or("unknown bus", |b| b.as_str());
    let serial = if d.serial.is_empty() { "no serial".to_string() } else { format!("serial {}", d.serial) };
    format!("/dev/{} ({bus}, {} GB, model {:?}, {serial})", d.kname, d.size_bytes / 1_000_000_000, d.model.trim())
}

/// Type names for the partition types an operator is likely to meet.
fn type_name(guid: &str) -> &str {
    match guid.to_ascii_uppercase().as_str() {
        "C12A7328-F81F-11D2-BA4B-00A0C93EC93B" => "EFI system",
        "0FC63DAF-8483-4772-8E79-3D69D8477DE4" => "Linux filesystem",
        "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709" => "Linux root (x86-64)",
        "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7" => "Microsoft basic data",
        "E6D6D379-F507-44C2-A23C-238F2A3DF928" => "Linux LVM",
        "A19D880F-05FC-4D3B-A006-743F0F84911E" => "Linux RAID",
        "0657FD6D-A4AB-43C4-84E5-0933C84B4F4F" => "Linux swap",
        _ => guid,
    }
}

fn contents(c: &Candidate) -> String {
    match &c.gpt {
        Some((_, parts)) if parts.is_empty() => "an empty GPT".into(),
        Some((_, parts)) => {
            let list: Vec<String> = parts.iter().map(|p| format!("{} {:?} ({})", p.number, p.name, type_name(&p.type_guid))).collect();
            format!("a GPT with partitions {}", list.join(", "))
        }
        None => match &c.signature {
            Some(s) => format!("{s} and no GPT"),
            None => "data in its first or last MiB and no GPT".into(),
        },
    }
}

/// Choose the target among `disks` (the stick, `stick`, is never one) and judge it.
pub fn decide(m: &InstallManifest, disks: &[Candidate], stick: &str) -> Decision {
    if m.boot_disk.path.is_some() {
        return Decision::Refuse(format!(
            "the boot-disk rule of node {} ({}) names a by-path, which the installer cannot see before udev runs: give the hardware model a rule by bus, model, serial or size",
            m.node,
            m.boot_disk.describe()
        ));
    }
    let others: Vec<&Candidate> = disks.iter().filter(|c| c.facts.kname != stick).collect();
    let Some(facts) = m.boot_disk.pick(others.iter().map(|c| &c.facts)) else {
        let seen: Vec<String> = others.iter().map(|c| describe(&c.facts)).collect();
        return Decision::Refuse(format!(
            "no disk matches node {}'s boot-disk rule ({}); disks seen besides the stick: {}. Is the internal disk connected?",
            m.node,
            m.boot_disk.describe(),
            if seen.is_empty() { "none".to_string() } else { seen.join("; ") }
        ));
    };
    let c = others.iter().find(|c| c.facts.kname == facts.kname).expect("picked from these");
    let disk = facts.kname.clone();
    if facts.size_bytes < m.image_bytes {
        return Decision::Refuse(format!("{} is smaller than node {}'s image ({} bytes)", describe(facts), m.node, m.image_bytes));
    }
    let (_, write_end) = m.write_range();
    if let Some((guid, parts)) = &c.gpt {
        if guid.eq_ignore_ascii_case(&m.disk_guid) {
            let keep = parts.iter().find(|p| p.name == DATA_LABEL).cloned();
            if let Some(k) = &keep {
                if k.first_lba * 512 < write_end {
                    return Decision::Refuse(format!(
                        "{} holds node {}'s install, but its {DATA_LABEL} partition starts inside the image's partitions: writing would destroy mirror data",
                        describe(facts),
                        m.node
                    ));
                }
            }
            return Decision::Installed { disk, keep };
        }
    }
    if c.blank && c.gpt.is_none() {
        return Decision::Write { disk, why: format!("{} is blank", describe(facts)), keep: None };
    }
    if !facts.serial.is_empty() && m.wipe_disk_serials.iter().any(|s| s == &facts.serial) {
        return Decision::Write {
            disk,
            why: format!("{} holds {}; its serial is in wipe_disk_serials", describe(facts), contents(c)),
            keep: None,
        };
    }
    let opt_in = if facts.serial.is_empty() {
        "The disk reports no serial, so it cannot be opted in: clear it by hand (wipefs -a) or replace it".to_string()
    } else {
        format!(
            "To overwrite it, add \"{}\" to wipe_disk_serials of node {} in the fleet inventory, then build and write the stick again",
            facts.serial, m.node
        )
    };
    Decision::Refuse(format!("{} holds {}, not node {}'s install. {opt_in}", describe(facts), contents(c), m.node))
}

/// The partitions of the GPT the installer writes: the image's, plus the kept data partition
/// (renumbered if its number is taken).
pub fn final_partitions(m: &InstallManifest, keep: Option<&InstallPartition>) -> Vec<InstallPartition> {
    let mut parts = m.partitions.clone();
    if let Some(k) = keep {
        let mut k = k.clone();
        if parts.iter().any(|p| p.number == k.number) {
            k.number = parts.iter().map(|p| p.number).max().unwrap_or(0) + 1;
        }
        parts.push(k);
    }
    parts
}

/// A GUID in the mixed-endian byte order GPT and UEFI device paths use.
pub fn guid_bytes(guid: &str) -> Option<[u8; 16]> {
    let hex: String = guid.chars().filter(|c| *c != '-').collect();
    if hex.len() != 32 || guid.len() != 36 {
        return None;
    }
    let mut b = [0u8; 16];
    for (i, byte) in b.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    b[0..4].reverse();
    b[4..6].reverse();
    b[6..8].reverse();
    Some(b)
}

fn ucs2(s: &str) -> Vec<u8> {
    s.encode_utf16().chain(std::iter::once(0)).flat_map(u16::to_le_bytes).collect()
}

/// The EFI_LOAD_OPTION (UEFI spec 3.1.3) that boots `loader` from the partition `esp` of the
/// disk: a short-form hard-drive device path, which firmware matches by the partition's GUID
/// on whichever controller the disk sits.
pub fn load_option(description: &str, esp: &InstallPartition, loader: &str) -> Option<Vec<u8>> {
    let mut path = vec![0x04, 0x01, 42, 0];
    path.extend(esp.number.to_le_bytes());
    path.extend(esp.first_lba.to_le_bytes());
    path.extend((esp.last_lba + 1 - esp.first_lba).to_le_bytes());
    path.extend(guid_bytes(&esp.guid)?);
    path.extend([0x02, 0x02]); // GPT, GUID signature
    let file = ucs2(loader);
    path.extend([0x04, 0x04]);
    path.extend(u16::try_from(4 + file.len()).ok()?.to_le_bytes());
    path.extend(file);
    path.extend([0x7f, 0xff, 0x04, 0x00]);
    let mut opt = 1u32.to_le_bytes().to_vec(); // LOAD_OPTION_ACTIVE
    opt.extend(u16::try_from(path.len()).ok()?.to_le_bytes());
    opt.extend(ucs2(description));
    opt.extend(path);
    Some(opt)
}

/// BootOrder with `entry` first and nowhere else.
pub fn boot_order_first(order: &[u8], entry: u16) -> Vec<u8> {
    let mut out = entry.to_le_bytes().to_vec();
    for pair in order.chunks_exact(2) {
        if u16::from_le_bytes([pair[0], pair[1]]) != entry {
            out.extend(pair);
        }
    }
    out
}

/// A progress line: done and total bytes, rate, time left.
pub fn progress(done: u64, total: u64, seconds: f64) -> String {
    let rate = if seconds > 0.0 { done as f64 / seconds } else { 0.0 };
    let left = if rate > 0.0 { (total - done.min(total)) as f64 / rate } else { 0.0 };
    format!(
        "{:.2} of {:.2} GB ({}%), {:.0} MB/s, {:.0} s left",
        done as f64 / 1e9,
        total as f64 / 1e9,
        (done * 100).checked_div(total).unwrap_or(100),
        rate / 1e6,
        left
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use mmconfig::install::INSTALL_SCHEMA;
    use mmconfig::{Bus, DiskRule};

    const NODE_GUID: &str = "3f0b2c1e-aaaa-4bbb-8ccc-000000000001";

    fn manifest() -> InstallManifest {
        let part = |number, name: &str, first_lba, last_lba| InstallPartition {
            number,
            name: name.into(),
            type_guid: "C12A7328-F81F-11D2-BA4B-00A0C93EC93B".into(),
            guid: "11111111-2222-3333-4444-555555555555".into(),
            first_lba,
            last_lba,
        };
        InstallManifest {
            schema: INSTALL_SCHEMA,
            fleet: "example".into(),
            node: "sonic".into(),
            fqdn: "sonic.mm.example.net".into(),
            image_sha256: "00".repeat(32),
            image_bytes: 4 << 30,
            disk_guid: NODE_GUID.into(),
            partitions: vec![part(1, "ESP", 2048, 133_119), part(2, "MMCONFIG", 133_120, 149_503), part(3, "mmroot", 149_504, 8_386_559)],
            boot_disk: DiskRule { bus: Some(Bus::Nvme), min_size_gb: Some(1000), ..Default::default() },
            wipe_disk_serials: vec!["OPTED".into()],
        }
    }

    fn disk(kname: &str, bus: Bus, gb: u64, serial: &str) -> DiskFacts {
        DiskFacts {
            kname: kname.into(),
            bus: Some(bus),
            model: "M".into(),
            serial: serial.into(),
            by_path: None,
            size_bytes: gb * 1_000_000_000,
            removable: false,
        }
    }

    fn blank(d: DiskFacts) -> Candidate {
        Candidate { facts: d, gpt: None, blank: true, signature: None }
    }

    fn with_gpt(d: DiskFacts, guid: &str, parts: Vec<InstallPartition>) -> Candidate {
        Candidate { facts: d, gpt: Some((guid.into(), parts)), blank: false, signature: None }
    }

    fn mmdata(first_lba: u64) -> InstallPartition {
        InstallPartition {
            number: 4,
            name: DATA_LABEL.into(),
            type_guid: "0FC63DAF-8483-4772-8E79-3D69D8477DE4".into(),
            guid: "99999999-2222-3333-4444-555555555555".into(),
            first_lba,
            last_lba: first_lba + 1_000_000,
        }
    }

    /// (disks before, stick) -> what the installer does, as in Ignition's blackbox tables.
    #[test]
    fn decisions() {
        let stick = || blank(disk("sda", Bus::Usb, 16, "STICK"));
        let nvme = |serial: &str| disk("nvme0n1", Bus::Nvme, 1100, serial);
        let foreign = || with_gpt(nvme("N1"), "aaaaaaaa-0000-4000-8000-000000000000", vec![mmdata(2048)]);
        let cases: Vec<(&str, Vec<Candidate>, &str)> = vec![
            ("blank NVMe", vec![stick(), blank(nvme("N1"))], "write: /dev/nvme0n1 (nvme, 1100 GB, model \"M\", serial N1) is blank"),
            (
                "own install, MMDATA after the image",
                vec![stick(), with_gpt(nvme("N1"), &NODE_GUID.to_uppercase(), vec![mmdata(8_386_560)])],
                "installed: keep MMDATA",
            ),
            ("own install, no data yet", vec![stick(), with_gpt(nvme("N1"), NODE_GUID, vec![])], "installed: keep nothing"),
            (
                "own install, MMDATA overlapping",
                vec![stick(), with_gpt(nvme("N1"), NODE_GUID, vec![mmdata(8_000_000)])],
                "refuse: starts inside",
            ),
            ("foreign GPT", vec![stick(), foreign()], "refuse: add \"N1\" to wipe_disk_serials of node sonic"),
            (
                "foreign GPT, opted in",
                vec![stick(), with_gpt(nvme("OPTED"), "aaaaaaaa-0000-4000-8000-000000000000", vec![mmdata(2048)])],
                "write: its serial is in wipe_disk_serials",
            ),
            (
                "an ext4 without GPT",
                vec![stick(), Candidate { facts: nvme("N1"), gpt: None, blank: false, signature: Some("an ext4 filesystem".into()) }],
                "refuse: holds an ext4 filesystem and no GPT",
            ),
            (
                "data but no serial",
                vec![stick(), Candidate { facts: nvme(""), gpt: None, blank: false, signature: None }],
                "refuse: cannot be opted in",
            ),
            ("only the stick", vec![stick()], "refuse: disks seen besides the stick: none"),
            (
                "too small an NVMe",
                vec![stick(), blank(disk("nvme0n1", Bus::Nvme, 500, "N1"))],
                "refuse: no disk matches node sonic's boot-disk rule (bus=nvme, size>=1000GB)",
            ),
            ("a big USB disk is the stick, never the target", vec![blank(disk("sda", Bus::Nvme, 2000, "S"))], "refuse: no disk matches"),
        ];
        for (name, disks, want) in cases {
            let got = match decide(&manifest(), &disks, "sda") {
                Decision::Write { disk, why, keep } => {
                    assert_eq!(disk, "nvme0n1", "{name}");
                    assert!(keep.is_none(), "{name}");
                    format!("write: {why}")
                }
                Decision::Installed { keep, .. } => format!("installed: keep {}", keep.map_or("nothing".into(), |k| k.name)),
                Decision::Refuse(why) => format!("refuse: {why}"),
            };
            let (kind, text) = want.split_once(": ").unwrap();
            assert!(got.starts_with(kind) && got.contains(text), "{name}: {got}");
        }
    }

    #[test]
    fn by_path_rules_are_refused_before_anything_is_read() {
        let mut m = manifest();
        m.boot_disk.path = Some("pci-*".into());
        assert!(matches!(decide(&m, &[], "sda"), Decision::Refuse(s) if s.contains("by-path")));
    }

    #[test]
    fn kept_data_partition_gets_a_free_number() {
        let m = manifest();
        let mut k = mmdata(8_386_560);
        assert_eq!(final_partitions(&m, Some(&k)).last().unwrap().number, 4);
        k.number = 2;
        let parts = final_partitions(&m, Some(&k));
        assert_eq!(parts.iter().map(|p| p.number).collect::<Vec<_>>(), [1, 2, 3, 4]);
        assert_eq!(final_partitions(&m, None).len(), 3);
    }

    #[test]
    fn load_option_bytes() {
        assert_eq!(
            guid_bytes("C12A7328-F81F-11D2-BA4B-00A0C93EC93B").unwrap(),
            [0x28, 0x73, 0x2a, 0xc1, 0x1f, 0xf8, 0xd2, 0x11, 0xba, 0x4b, 0x00, 0xa0, 0xc9, 0x3e, 0xc9, 0x3b]
        );
        assert!(guid_bytes("not-a-guid").is_none());
        let m = manifest();
        let opt = load_option("mm", &m.partitions[0], "\\EFI\\BOOT\\BOOTX64.EFI").unwrap();
        assert_eq!(&opt[0..4], &[1, 0, 0, 0]);
        let path_len = u16::from_le_bytes([opt[4], opt[5]]) as usize;
        let desc = 6 + 3 * 2; // "mm" + NUL in UCS-2
        assert_eq!(opt.len(), desc + path_len);
        let path = &opt[desc..];
        assert_eq!(&path[..4], &[4, 1, 42, 0]);
        assert_eq!(u64::from_le_bytes(path[8..16].try_into().unwrap()), 2048);
        assert_eq!(u64::from_le_bytes(path[16..24].try_into().unwrap()), 131_072);
        assert_eq!(&path[40..42], &[2, 2]);
        assert_eq!(&path[42..44], &[4, 4]);
        assert_eq!(&path[path_len - 4..], &[0x7f, 0xff, 4, 0]);
        assert_eq!(boot_order_first(&[1, 0, 0x80, 0, 2, 0], 0x80), [0x80, 0, 1, 0, 2, 0]);
        assert_eq!(boot_order_first(&[], 0x80), [0x80, 0]);
    }

    #[test]
    fn progress_line() {
        assert_eq!(progress(500_000_000, 2_000_000_000, 5.0), "0.50 of 2.00 GB (25%), 100 MB/s, 15 s left");
        assert_eq!(progress(0, 0, 0.0), "0.00 of 0.00 GB (100%), 0 MB/s, 0 s left");
    }
}
