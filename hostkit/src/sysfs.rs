//! The bus a block device hangs on, read from its sysfs device path: one classifier for firstboot's disk probe and `mmbuild write`.

use std::path::Path;

use mmconfig::Bus;

/// The bus of the disk whose resolved sysfs path is `devpath`
/// (`/sys/devices/pci0000:00/0000:00:1f.2/ata1/host0/target0:0:0/0:0:0:0/block/sda`).
///
/// Path components are matched, not substrings, and in an order that settles overlaps: a USB
/// or SATA disk sits under a SCSI host too, and a virtio-scsi disk under a virtio device.
/// SCSI needs both a `hostN` and a `targetH:C:I` ancestor: the SCSI midlayer puts every disk
/// it attaches (SAS, FC, iSCSI, virtio-scsi, USB, SATA) under a Scsi_Host and a scsi_target,
/// so one without the other is not a SCSI disk, and either alone would take in other devices
/// (an MMC card under `.../mmc_host/...` once matched `/host` as a substring; other firmware
/// paths may hold a `hostN` component without any SCSI in them).
pub fn bus_of_path(devpath: &Path) -> Option<Bus> {
    let parts: Vec<String> = devpath.components().map(|c| c.as_os_str().to_string_lossy().into_owned()).collect();
    let has =
        |prefix: &str| parts.iter().any(|p| p.strip_prefix(prefix).is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_digit())));
    Some(if has("usb") {
        Bus::Usb
    } else if has("nvme") || parts.iter().any(|p| p == "nvme") {
        Bus::Nvme
    } else if has("virtio") {
        Bus::Virtio
    } else if has("ata") {
        Bus::Sata
    } else if has("host") && has("target") {
        Bus::Scsi
    } else {
        return None;
    })
}

/// [`bus_of_path`] of `/sys/block/NAME` (or any link to a block device's sysfs directory).
pub fn bus_of(sys_block: &Path) -> Option<Bus> {
    bus_of_path(&std::fs::canonicalize(sys_block).ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn real_device_paths() {
        let table: &[(&str, Option<Bus>)] = &[
            ("/sys/devices/pci0000:00/0000:00:1f.2/ata1/host0/target0:0:0/0:0:0:0/block/sda", Some(Bus::Sata)),
            ("/sys/devices/pci0000:00/0000:00:14.0/usb2/2-1/2-1:1.0/host6/target6:0:0/6:0:0:0/block/sdb", Some(Bus::Usb)),
            ("/sys/devices/pci0000:00/0000:00:1d.0/0000:3d:00.0/nvme/nvme0/nvme0n1", Some(Bus::Nvme)),
            ("/sys/devices/virtual/nvme-fabrics/ctl/nvme1/nvme1n1", Some(Bus::Nvme)),
            ("/sys/devices/pci0000:00/0000:00:04.0/virtio1/block/vda", Some(Bus::Virtio)),
            // virtio-scsi: the controller is a virtio device; its disks are virtio to us.
            ("/sys/devices/pci0000:00/0000:00:05.0/virtio2/host2/target2:0:0/2:0:0:0/block/sdc", Some(Bus::Virtio)),
            (
                "/sys/devices/pci0000:00/0000:00:01.0/0000:01:00.0/host0/port-0:0/end_device-0:0/target0:0:0/0:0:0:0/block/sdd",
                Some(Bus::Scsi),
            ),
            ("/sys/devices/platform/host3/session1/target3:0:0/3:0:0:0/block/sde", Some(Bus::Scsi)),
            // Only one of the two SCSI ancestors: not a SCSI disk.
            ("/sys/devices/platform/host4/block/xyz", None),
            ("/sys/devices/platform/fe320000.mmc/mmc_host/mmc0/mmc0:0001/block/mmcblk0", None),
            ("/sys/devices/virtual/block/loop0", None),
            ("/sys/devices/virtual/block/dm-0", None),
            // A name that merely starts like a bus is not one.
            ("/sys/devices/platform/atari-disk/block/x", None),
        ];
        for (path, want) in table {
            assert_eq!(bus_of_path(Path::new(path)), *want, "{path}");
        }
    }
}
