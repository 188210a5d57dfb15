//! A node's hardware model as a QEMU machine: disk buses and sizes its rules accept, NICs, MACs.

use mmconfig::disk::{Bus, DiskRule};
use mmconfig::{DataPlacement, NodeConfig};
use serde::Serialize;

const GB: u64 = 1_000_000_000;
const MIB: u64 = 1 << 20;

/// fw_cfg entry that tells the node which emulated NIC driver stands in for its model's.
pub const NIC_STAND_IN_FW_CFG: &str = "opt/org.micromirror/nic-stand-in";

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DiskShape {
    pub bus: Bus,
    pub size_bytes: u64,
    pub serial: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NicShape {
    /// QEMU device model.
    pub device: &'static str,
    /// The Linux driver the guest binds to it.
    pub driver: &'static str,
    pub mac: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Shape {
    pub boot: DiskShape,
    pub data: Option<DiskShape>,
    pub nics: Vec<NicShape>,
    /// Set when QEMU has none of the model's NIC drivers: this emulated driver stands in, and the
    /// node is told so through fw_cfg (which real hardware never has).
    pub nic_stand_in: Option<&'static str>,
    /// What differs from the real machine, for the report.
    pub notes: Vec<String>,
}

impl Shape {
    /// One line for the report, e.g. `sata 110 GB boot, 1x e1000e (stands in for r8169)`.
    pub fn summary(&self) -> String {
        let disk = |d: &DiskShape, role: &str| format!("{} {} GB {role}", d.bus.as_str(), d.size_bytes / GB);
        let mut parts = vec![disk(&self.boot, "boot")];
        if let Some(d) = &self.data {
            parts.push(disk(d, "data"));
        }
        let nic = self.nics.first().map_or("none", |n| n.device);
        let stand_in = self.nic_stand_in.map(|_| " (stand-in)").unwrap_or_default();
        parts.push(format!("{}x {nic}{stand_in}", self.nics.len()));
        parts.join(", ")
    }
}

/// The QEMU device for a Linux NIC driver, when QEMU emulates that very part.
fn emulated(driver: &str) -> Option<(&'static str, &'static str)> {
    match driver {
        "virtio_net" => Some(("virtio-net-pci", "virtio_net")),
        "e1000e" => Some(("e1000e", "e1000e")),
        "e1000" => Some(("e1000", "e1000")),
        "igb" => Some(("igb", "igb")),
        _ => None,
    }
}

/// The closest emulated part: Intel's 10G and 1G server NICs share igb's queueing model; every
/// other (Realtek, Mellanox) gets the common e1000e.
fn closest(driver: &str) -> (&'static str, &'static str) {
    match driver {
        "ixgbe" | "ixgbevf" | "i40e" | "ice" => ("igb", "igb"),
        _ => ("e1000e", "e1000e"),
    }
}

/// A size the rule accepts: 10 % over its minimum, or a common SSD size under its maximum, and
/// never smaller than `at_least` (the image itself for a boot disk). Whole MiB, in bytes.
fn size_for(rule: &DiskRule, fallback_gb: u64, at_least: u64) -> u64 {
    let gb = match (rule.min_size_gb, rule.max_size_gb) {
        (Some(min), Some(max)) => (min + (max - min) / 2).max(min),
        (Some(min), None) => min + min.div_ceil(10),
        (None, Some(max)) => max.min(240),
        (None, None) => fallback_gb,
    };
    (gb * GB).max(at_least).div_ceil(MIB) * MIB
}

/// A locally administered MAC (QEMU's 52:54:00 prefix), stable per node and port.
fn mac_for(node: &str, port: usize) -> String {
    let h = hostkit::ids::uuid_from(node, &format!("nic{port}"));
    let b = h.replace('-', "");
    format!("52:54:00:{}:{}:{}", &b[0..2], &b[2..4], &b[4..6])
}

/// The machine for `cfg`, its boot image being `image_bytes` long.
pub fn shape(cfg: &NodeConfig, image_bytes: u64) -> Shape {
    let hw = &cfg.hardware;
    let mut notes = Vec::new();
    let boot_rule = &hw.storage.boot_disk;
    let boot_bus = boot_rule.bus.unwrap_or(Bus::Virtio);
    let boot =
        DiskShape { bus: boot_bus, size_bytes: size_for(boot_rule, image_bytes.div_ceil(GB) + 4, image_bytes), serial: "MMBT-BOOT".into() };
    let data_rule = match &hw.storage.data {
        DataPlacement::BootDisk => None,
        DataPlacement::Disk { rule } => Some(rule),
    };
    let data = data_rule.map(|rule| DiskShape {
        bus: rule.bus.unwrap_or(Bus::Virtio),
        size_bytes: size_for(rule, 16, 0),
        serial: rule.serial.clone().unwrap_or_else(|| "MMBT-DATA".into()),
    });
    for (role, rule) in [("boot", Some(boot_rule)), ("data", data_rule)] {
        if rule.is_some_and(|r| r.model.is_some() || r.path.is_some()) {
            notes.push(format!("the {role} disk rule names a model or by-path the emulated disk does not have"));
        }
    }
    let rule = &hw.network.nic;
    let real = rule.drivers.iter().find_map(|d| emulated(d));
    let (device, driver, nic_stand_in) = match (real, rule.drivers.first()) {
        (Some((dev, drv)), _) => (dev, drv, None),
        (None, None) => ("virtio-net-pci", "virtio_net", None),
        (None, Some(wanted)) => {
            let (dev, drv) = closest(wanted);
            notes.push(format!("QEMU has no {wanted} NIC: {dev} stands in (told to the node through fw_cfg)"));
            (dev, drv, Some(drv))
        }
    };
    let count = (rule.count.max(1)) as usize;
    let nics = (0..count)
        .map(|i| {
            let mac = match (&cfg.node.interface_mac, i) {
                (Some(pin), 0) => pin.to_ascii_lowercase(),
                _ => mac_for(&cfg.node.name, i),
            };
            NicShape { device, driver, mac }
        })
        .collect();
    Shape { boot, data, nics, nic_stand_in, notes }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example(name: &str) -> NodeConfig {
        let nodes: Vec<NodeConfig> = serde_json::from_str(include_str!("../../../tests/fixtures/example-nodes.json")).unwrap();
        nodes.into_iter().find(|n| n.node.name == name).unwrap()
    }

    #[test]
    fn every_example_model_gets_disks_its_rules_accept() {
        // (node, boot bus, boot GB, data (bus, GB), NIC device, count, stand-in)
        type Row = (&'static str, Bus, u64, Option<(Bus, u64)>, &'static str, usize, Option<&'static str>);
        let table: [Row; 4] = [
            ("ci", Bus::Virtio, 8, Some((Bus::Virtio, 16)), "virtio-net-pci", 1, None),
            ("ziply", Bus::Sata, 110, None, "e1000e", 1, Some("e1000e")),
            ("sonic", Bus::Nvme, 1100, None, "e1000e", 1, Some("e1000e")),
            ("hurricane", Bus::Sata, 240, Some((Bus::Sata, 4400)), "igb", 2, Some("igb")),
        ];
        for (node, bus, gb, data, device, count, stand_in) in table {
            let cfg = example(node);
            let s = shape(&cfg, 3_500_000_000);
            assert_eq!((s.boot.bus, s.boot.size_bytes / GB), (bus, gb), "{node}");
            assert_eq!(s.data.as_ref().map(|d| (d.bus, d.size_bytes / GB)), data, "{node}");
            assert_eq!((s.nics[0].device, s.nics.len(), s.nic_stand_in), (device, count, stand_in), "{node}");
            assert_eq!(s.boot.size_bytes % MIB, 0);
            // The rule itself must accept what we emulate.
            let rule = &cfg.hardware.storage.boot_disk;
            assert!(
                rule.min_size_gb.is_none_or(|m| s.boot.size_bytes >= m * GB)
                    && rule.max_size_gb.is_none_or(|m| s.boot.size_bytes <= m * GB),
                "{node}"
            );
        }
    }

    #[test]
    fn pinned_mac_is_the_first_port_and_the_others_are_stable() {
        let s = shape(&example("sonic"), 1);
        assert_eq!(s.nics[0].mac, "24:8a:07:aa:bb:01");
        let h = shape(&example("hurricane"), 1);
        assert_ne!(h.nics[0].mac, h.nics[1].mac);
        assert_eq!(h.nics, shape(&example("hurricane"), 1).nics);
        assert!(h.nics[0].mac.starts_with("52:54:00:"));
        assert!(h.summary().contains("2x igb (stand-in)"), "{}", h.summary());
    }

    #[test]
    fn a_boot_disk_is_never_smaller_than_its_image() {
        let cfg = example("ci");
        assert!(shape(&cfg, 20 * GB + 1).boot.size_bytes > 20 * GB);
    }
}
