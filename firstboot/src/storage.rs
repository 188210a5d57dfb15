//! Data-disk planning: a pure function from (configuration, observed disks) to steps.
//!
//! The rule that matters: a disk that holds anything we did not create (a filesystem, a
//! partition table, non-zero bytes) is never written, unless the fleet lists its serial in
//! `wipe_disk_serials`. A missing disk is reported, never "fixed" by using another one.

use mmconfig::{DataPlacement, DiskFacts, NodeConfig, DATA_LABEL};
use serde::Serialize;

/// Smallest free space on the boot disk worth a data partition.
pub const MIN_DATA_BYTES: u64 = 1 << 30;

/// What is on a disk, as far as planning cares.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "kebab-case")]
pub enum Content {
    /// No partition table, no filesystem signature, first and last MiB all zero.
    Blank,
    /// Our data filesystem: the partition (or whole disk) with an XFS labelled MMDATA.
    MmData { device: String, growable: bool },
    /// Our GPT with one partition named MMDATA but no filesystem yet (a run was interrupted).
    MmPartition { device: String },
    /// Anything else; `what` says what was found.
    Foreign { what: String },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Disk {
    pub facts: DiskFacts,
    /// `/dev/...` node of the whole disk.
    pub device: String,
    pub content: Content,
    /// Holds the running root or the MMCONFIG partition.
    pub is_boot: bool,
    /// Boot disk only: free bytes after the last partition (after relocating the backup GPT).
    pub free_tail_bytes: u64,
}

pub use mmconfig::plan::{Problem, Step, StoragePlan as Plan};

fn describe(d: &Disk) -> String {
    let model = d.facts.model.trim();
    let model = if model.is_empty() { String::new() } else { format!("{model}, ") };
    format!("{} ({model}{:.0} GB, serial {})", d.facts.kname, d.facts.size_bytes as f64 / 1e9, d.facts.serial)
}

/// Decide what to do with the data disk. `mounted` tells whether /srv/mirror already holds MMDATA.
pub fn plan(cfg: &NodeConfig, disks: &[Disk], mounted: bool) -> Plan {
    let mut p = Plan::default();
    match &cfg.hardware.storage.data {
        DataPlacement::Disk { rule } => {
            let mut candidates: Vec<&Disk> = disks.iter().filter(|d| !d.is_boot && rule.matches(&d.facts)).collect();
            // The same deterministic order as the kickstart %pre.
            candidates.sort_by(|a, b| a.facts.order_key().cmp(&b.facts.order_key()));
            for d in disks.iter().filter(|d| d.is_boot && rule.matches(&d.facts)) {
                p.notes.push(format!("{} is the boot disk: never a data disk", describe(d)));
            }
            if candidates.is_empty() {
                p.problems.push(Problem {
                    message: format!(
                        "no data disk found matching {}: check that the data disk is connected and powered; nothing was formatted",
                        rule.describe()
                    ),
                });
                return p;
            }
            // An existing MMDATA anywhere among the candidates wins: never start over elsewhere.
            let chosen = candidates
                .iter()
                .find(|d| matches!(d.content, Content::MmData { .. }))
                .or_else(|| candidates.iter().find(|d| matches!(d.content, Content::MmPartition { .. })))
                .or_else(|| candidates.iter().find(|d| d.content == Content::Blank))
                .or_else(|| candidates.iter().find(|d| cfg.node.wipe_disk_serials.contains(&d.facts.serial)))
                .copied();
            for d in &candidates {
                if Some(*d) != chosen {
                    if let Content::Foreign { what } = &d.content {
                        p.notes.push(format!("{} holds {what}: left untouched", describe(d)));
                    }
                }
            }
            let Some(d) = chosen else {
                let first = candidates[0];
                let what = match &first.content {
                    Content::Foreign { what } => what.clone(),
                    other => format!("{other:?}"),
                };
                p.problems.push(Problem {
                    message: format!(
                        "data disk {} holds {what}: left untouched. To use it for mirror data, add serial \"{}\" to wipe_disk_serials for this node in the fleet, or replace the disk",
                        describe(first),
                        first.facts.serial
                    ),
                });
                return p;
            };
            p.data_disk = Some(describe(d));
            match &d.content {
                Content::MmData { device, .. } => existing(&mut p, d, device, mounted),
                Content::MmPartition { .. } => {
                    p.notes.push(format!(
                        "{}: MMDATA partition without a filesystem (an earlier run was interrupted): finishing it",
                        describe(d)
                    ));
                    p.steps.push(Step::MakeFs { disk: d.device.clone() });
                    p.steps.push(Step::Mount { disk: d.device.clone() });
                }
                Content::Blank => {
                    p.notes.push(format!("{} is blank: creating the data filesystem", describe(d)));
                    p.steps.push(Step::PartitionWhole { device: d.device.clone() });
                    p.steps.push(Step::MakeFs { disk: d.device.clone() });
                    p.steps.push(Step::Mount { disk: d.device.clone() });
                }
                Content::Foreign { what } => {
                    p.notes.push(format!("{} holds {what}; the fleet opted in to wiping serial {}", describe(d), d.facts.serial));
                    p.steps.push(Step::Wipe { device: d.device.clone(), serial: d.facts.serial.clone() });
                    p.steps.push(Step::PartitionWhole { device: d.device.clone() });
                    p.steps.push(Step::MakeFs { disk: d.device.clone() });
                    p.steps.push(Step::Mount { disk: d.device.clone() });
                }
            }
        }
        DataPlacement::BootDisk => {
            let Some(boot) = disks.iter().find(|d| d.is_boot) else {
                p.problems.push(Problem { message: "cannot find the boot disk (the disk holding the root filesystem)".into() });
                return p;
            };
            p.data_disk = Some(describe(boot));
            match &boot.content {
                Content::MmData { device, .. } => existing(&mut p, boot, device, mounted),
                Content::MmPartition { .. } => {
                    p.steps.push(Step::MakeFs { disk: boot.device.clone() });
                    p.steps.push(Step::Mount { disk: boot.device.clone() });
                }
                _ if boot.free_tail_bytes >= MIN_DATA_BYTES => {
                    p.notes.push(format!(
                        "boot disk {} has {:.0} GB free after its partitions: adding the data partition there",
                        describe(boot),
                        boot.free_tail_bytes as f64 / 1e9
                    ));
                    p.steps.push(Step::AddPartition { device: boot.device.clone() });
                    p.steps.push(Step::MakeFs { disk: boot.device.clone() });
                    p.steps.push(Step::Mount { disk: boot.device.clone() });
                }
                _ => p.problems.push(Problem {
                    message: format!(
                        "boot disk {} has no free space for mirror data: was the image written to a disk of the right size?",
                        describe(boot)
                    ),
                }),
            }
        }
    }
    p
}

fn existing(p: &mut Plan, d: &Disk, device: &str, mounted: bool) {
    if let Content::MmData { growable: true, .. } = d.content {
        p.notes.push(format!("{}: the disk grew, growing the data filesystem", describe(d)));
        p.steps.push(Step::Grow { disk: d.device.clone(), device: device.to_string() });
    }
    if mounted {
        p.notes.push(format!("{DATA_LABEL} on {device} is mounted: storage unchanged"));
    } else {
        p.notes.push(format!("{DATA_LABEL} found on {device}: mounting it, nothing is formatted"));
        p.steps.push(Step::Mount { disk: d.device.clone() });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testdata::node;
    use mmconfig::Bus;

    fn disk(kname: &str, serial: &str, content: Content, is_boot: bool) -> Disk {
        Disk {
            facts: DiskFacts {
                kname: kname.into(),
                bus: Some(Bus::Virtio),
                model: "QEMU".into(),
                serial: serial.into(),
                by_path: Some(format!("pci-0000:00:0{}.0", kname.len())),
                size_bytes: 8_000_000_000,
                removable: false,
            },
            device: format!("/dev/{kname}"),
            content,
            is_boot,
            free_tail_bytes: 0,
        }
    }
    fn boot() -> Disk {
        disk("vda", "MMBOOT", Content::Foreign { what: "the OS partitions".into() }, true)
    }
    fn mmdata(dev: &str) -> Content {
        Content::MmData { device: dev.into(), growable: false }
    }
    fn foreign() -> Content {
        Content::Foreign { what: "an ext4 filesystem".into() }
    }

    /// (case, disks, already mounted) -> (steps, problem substring or "")
    #[test]
    fn separate_data_disk_matrix() {
        let cfg = node("ci"); // qemu: data on a second virtio disk
        type Case = (&'static str, Vec<Disk>, bool, Vec<Step>, &'static str);
        let cases: Vec<Case> = vec![
            (
                "blank, first run",
                vec![boot(), disk("vdb", "D1", Content::Blank, false)],
                false,
                vec![
                    Step::PartitionWhole { device: "/dev/vdb".into() },
                    Step::MakeFs { disk: "/dev/vdb".into() },
                    Step::Mount { disk: "/dev/vdb".into() },
                ],
                "",
            ),
            ("MMDATA with files, rerun", vec![boot(), disk("vdb", "D1", mmdata("/dev/vdb1"), false)], true, vec![], ""),
            (
                "MMDATA after reboot",
                vec![boot(), disk("vdb", "D1", mmdata("/dev/vdb1"), false)],
                false,
                vec![Step::Mount { disk: "/dev/vdb".into() }],
                "",
            ),
            ("foreign ext4", vec![boot(), disk("vdb", "D1", foreign(), false)], false, vec![], "holds an ext4 filesystem: left untouched"),
            (
                "foreign partition table",
                vec![boot(), disk("vdb", "D1", Content::Foreign { what: "a dos partition table".into() }, false)],
                false,
                vec![],
                "add serial \"D1\" to wipe_disk_serials",
            ),
            ("no disk", vec![boot()], false, vec![], "no data disk found matching bus=virtio"),
            (
                "two candidates, blank second",
                vec![boot(), disk("vdb", "D1", foreign(), false), disk("vdc", "D2", Content::Blank, false)],
                false,
                vec![
                    Step::PartitionWhole { device: "/dev/vdc".into() },
                    Step::MakeFs { disk: "/dev/vdc".into() },
                    Step::Mount { disk: "/dev/vdc".into() },
                ],
                "",
            ),
            (
                "two candidates, MMDATA wins over blank",
                vec![boot(), disk("vdb", "D1", Content::Blank, false), disk("vdc", "D2", mmdata("/dev/vdc1"), false)],
                false,
                vec![Step::Mount { disk: "/dev/vdc".into() }],
                "",
            ),
            (
                "interrupted after partitioning",
                vec![boot(), disk("vdb", "D1", Content::MmPartition { device: "/dev/vdb1".into() }, false)],
                false,
                vec![Step::MakeFs { disk: "/dev/vdb".into() }, Step::Mount { disk: "/dev/vdb".into() }],
                "",
            ),
            (
                "grown disk",
                vec![boot(), disk("vdb", "D1", Content::MmData { device: "/dev/vdb1".into(), growable: true }, false)],
                true,
                vec![Step::Grow { disk: "/dev/vdb".into(), device: "/dev/vdb1".into() }],
                "",
            ),
        ];
        for (name, disks, mounted, steps, problem) in cases {
            let p = plan(&cfg, &disks, mounted);
            assert_eq!(p.steps, steps, "case {name}: {p:#?}");
            if problem.is_empty() {
                assert!(p.problems.is_empty(), "case {name}: {:?}", p.problems);
            } else {
                assert!(p.problems.iter().any(|x| x.message.contains(problem)), "case {name}: {:?}", p.problems);
            }
            // The boot disk is never touched.
            assert!(p.steps.iter().all(|s| !format!("{s:?}").contains("/dev/vda")), "case {name}");
        }
    }

    #[test]
    fn wipe_needs_the_serial_opt_in() {
        let mut cfg = node("ci");
        let disks = vec![boot(), disk("vdb", "D1", foreign(), false)];
        assert!(plan(&cfg, &disks, false).steps.is_empty());
        cfg.node.wipe_disk_serials = vec!["OTHER".into()];
        assert!(plan(&cfg, &disks, false).steps.is_empty());
        cfg.node.wipe_disk_serials = vec!["D1".into()];
        let p = plan(&cfg, &disks, false);
        assert_eq!(p.steps[0], Step::Wipe { device: "/dev/vdb".into(), serial: "D1".into() });
        assert_eq!(p.steps.len(), 4);
    }

    #[test]
    fn single_disk_hardware_uses_free_space_only() {
        let cfg = node("ziply"); // wasp: data on the boot disk
        let mut b = boot();
        b.facts.bus = Some(Bus::Sata);
        b.free_tail_bytes = 1_900_000_000_000;
        let p = plan(&cfg, &[b.clone()], false);
        assert_eq!(
            p.steps,
            vec![
                Step::AddPartition { device: "/dev/vda".into() },
                Step::MakeFs { disk: "/dev/vda".into() },
                Step::Mount { disk: "/dev/vda".into() }
            ]
        );
        b.free_tail_bytes = 10 << 20;
        let p = plan(&cfg, &[b.clone()], false);
        assert!(p.steps.is_empty() && p.problems[0].message.contains("no free space"));
        b.content = mmdata("/dev/vda4");
        assert_eq!(plan(&cfg, &[b], true).steps, vec![]);
    }
}
