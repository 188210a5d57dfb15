//! Slow tier: the install stick (`build --install-stick`) under QEMU + OVMF, as a USB storage
//! device beside the honeybee's 1.1 TB NVMe: a blank disk is installed and served from, a disk
//! holding foreign data is left alone, and a reinstall keeps MMDATA.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{mmbuild, repo, text};
use hostkit::testenv::{LoopPart, Need};
use mmbuild::boottest::qemu::{GuestDisk, Vm, VmOptions};
use mmconfig::Bus;

const NODE: &str = "sonic";
const NVME_BYTES: u64 = 1_100_000_000_000;

fn sh(cmd: &str) -> String {
    let out = Command::new("sh").args(["-c", cmd]).output().unwrap();
    assert!(out.status.success(), "{cmd}:\n{}", text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The disk's first and last 64 MiB: a primary GPT, MBR or superblock at the start, a backup GPT
/// at the end.
fn sha_ends(path: &Path) -> String {
    sh(&format!("{{ head -c 64M {0}; tail -c 64M {0}; }} | sha256sum", path.display()))
}

/// The GPT's partitions of `img` as (number, name): the layout is the build's, read from the disk.
fn partitions(img: &Path) -> Vec<(u32, String)> {
    let gpt = gpt::GptConfig::new().writable(false).open(img).unwrap_or_else(|e| panic!("the GPT of {}: {e}", img.display()));
    gpt.partitions().iter().map(|(n, p)| (*n, p.name.clone())).collect()
}

/// The number of the first partition of `img` whose name starts with `name`.
fn number(img: &Path, name: &str) -> u32 {
    let parts = partitions(img);
    parts.iter().find(|(_, n)| n.starts_with(name)).unwrap_or_else(|| panic!("{}: no partition {name}: {parts:?}", img.display())).0
}

/// The stick (a sparse copy of install.img) on USB and `nvme` on NVMe; QEMU exits on reboot.
fn stick_vm(dir: &Path, stick: &Path, nvme: &Path) -> Vm {
    let copy = dir.join("stick.img");
    sh(&format!("cp --sparse=always {} {}", stick.display(), copy.display()));
    let mut opts = VmOptions::new(&copy);
    opts.boot_bus = Bus::Usb;
    opts.serial_log = Some(dir.join("console.log"));
    opts.serial_input = true;
    opts.disks.push(GuestDisk { path: nvme.to_path_buf(), bus: Bus::Nvme, serial: "MMBT-NVME".into() });
    Vm::start(&opts).unwrap()
}

#[test]
#[ignore = "slow: builds the honeybee node's stick and boots it under QEMU + OVMF three times"]
fn install_stick_installs_refuses_foreign_data_and_keeps_mmdata_on_reinstall() {
    if hostkit::testenv::need(&[
        Need::Root,
        Need::LoopDevices,
        Need::Tool("mmdebstrap"),
        Need::Tool("qemu-system-x86_64"),
        Need::Tool("dnsmasq"),
    ])
    .is_err()
    {
        return;
    }
    let started = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let fleet = repo().join("examples/fleet.toml");
    let (fleet, out, state, data) = (fleet.to_str().unwrap(), tmp.path().join("out"), tmp.path().join("state"), repo());
    let (out_s, state_s, data_s) = (out.to_str().unwrap(), state.to_str().unwrap(), data.to_str().unwrap());
    let o = mmbuild(&["build", fleet, "--out", out_s, "--quiet", "--state", state_s, "--data", data_s, "--node", NODE, "--install-stick"]);
    assert!(o.status.success(), "{}", text(&o));
    let mut lap = Instant::now();
    let mut took = |what: &str| {
        eprintln!("install: {what}: {:.0} s", lap.elapsed().as_secs_f64());
        lap = Instant::now();
    };
    took("build with the stick");
    let stick = out.join(NODE).join("install.img");
    let image = out.join(NODE).join("disk.img");

    // 1. Blank NVMe, stick left in and first in the firmware's order: installs once; booted
    //    again, it offers the reinstall, nothing is typed, and it hands over; ALL GOOD comes after
    //    that, from the NVMe, and the node passes every boot-test check (HTTP 200, ssh host key
    //    from known_hosts, MMDATA on the NVMe). boot-test's "install from the stick" check
    //    requires that whole order; one boot serves all of it.
    let junit = tmp.path().join("junit.xml");
    let o = mmbuild(&[
        "boot-test",
        fleet,
        "--out",
        out_s,
        "--data",
        data_s,
        "--node",
        NODE,
        "--from-stick",
        "--junit",
        junit.to_str().unwrap(),
    ]);
    let report = text(&o);
    eprintln!("{report}");
    assert!(o.status.success() && report.contains("1 of 1 node(s) passed"), "{report}");
    let xml = std::fs::read_to_string(&junit).unwrap();
    for check in ["install from the stick", "console verdict ALL GOOD", "data disk layout", "ssh host key", "http IPv4 /epel/"] {
        assert!(xml.contains(&format!("name=\"{check}\"")), "{check}:\n{xml}");
    }
    assert!(xml.contains("installed once, handed over to the disk, ALL GOOD from it"), "{xml}");
    assert!(xml.contains("mm-install: handing over to node sonic on /dev/nvme0n1"), "{xml}");
    assert!(report.contains("sonic: note: installed from install.img on a USB stick"), "{report}");
    let sums = Command::new("sha256sum").args(["-c", "SHA256SUMS"]).current_dir(&out).output().unwrap();
    assert!(sums.status.success(), "the stick image changed: {}", text(&sums));
    took("1. install, hand-over, ALL GOOD from the NVMe (boot-test --from-stick)");

    // 2. The NVMe holds someone's ext4: nothing is written, the console names it and the serial.
    let dir = tmp.path().join("foreign");
    std::fs::create_dir_all(&dir).unwrap();
    let nvme = dir.join("nvme.img");
    std::fs::File::create(&nvme).unwrap().set_len(NVME_BYTES).unwrap();
    sh(&format!("mkfs.ext4 -q -F -L photos -E lazy_itable_init=1,lazy_journal_init=1 {}", nvme.display()));
    let before = sha_ends(&nvme);
    let mut vm = stick_vm(&dir, &stick, &nvme);
    vm.wait_for("power the machine off", Duration::from_secs(600)).unwrap_or_else(|e| panic!("{e:#}"));
    let console = vm.serial();
    drop(vm);
    assert!(console.contains("NOTHING WAS WRITTEN: /dev/nvme0n1 (nvme, 1100 GB"), "{console}");
    assert!(console.contains("holds an ext2/3/4 filesystem and no GPT"), "{console}");
    assert!(console.contains("add \"MMBT-NVME\" to wipe_disk_serials of node sonic"), "{console}");
    assert_eq!(sha_ends(&nvme), before, "the foreign disk was written");
    took("2. foreign data refused");

    // 3. A reinstall over this node's earlier install: MMDATA (with a canary) follows the image
    //    in the disk's free space, as firstboot lays it out, and the root holds a stray file.
    let dir = tmp.path().join("reinstall");
    std::fs::create_dir_all(&dir).unwrap();
    let nvme = dir.join("nvme.img");
    sh(&format!("cp --sparse=always {} {}", image.display(), nvme.display()));
    std::fs::OpenOptions::new().write(true).open(&nvme).unwrap().set_len(NVME_BYTES).unwrap();
    sh(&format!("sgdisk -e {0} && sgdisk -n 0:0:0 -t 0:8300 -c 0:MMDATA {0}", nvme.display()));
    let (data_n, root_n) = (number(&nvme, mmconfig::DATA_LABEL), number(&nvme, mmconfig::ROOT_LABEL));
    let mmdata_guid = |nvme: &Path| sh(&format!("sgdisk -i {data_n} {} | grep 'unique GUID'", nvme.display()));
    let guid_before = mmdata_guid(&nvme);
    let mnt = dir.join("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    {
        let data = LoopPart::attach(&nvme, data_n, false);
        sh(&format!("mkfs.xfs -q -L MMDATA {} && mount {} {}", data.0, data.0, mnt.display()));
        std::fs::write(mnt.join("canary"), "mirror data").unwrap();
        sh(&format!("umount {}", mnt.display()));
        let root = LoopPart::attach(&nvme, root_n, false);
        sh(&format!("mount {} {}", root.0, mnt.display()));
        std::fs::write(mnt.join("etc/stray"), "from the old install").unwrap();
        sh(&format!("umount {}", mnt.display()));
    }
    let mut vm = stick_vm(&dir, &stick, &nvme);
    vm.wait_for("type reinstall and Enter", Duration::from_secs(600)).unwrap_or_else(|e| panic!("{e:#}"));
    vm.type_line("reinstall").unwrap();
    // The installer reboots when done; this VM exits instead of rebooting.
    vm.wait_for("rebooting into it", Duration::from_secs(900)).unwrap_or_else(|e| panic!("{e:#}"));
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !vm.exited() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(500));
    }
    let console = vm.serial();
    drop(vm);
    assert!(console.contains("reinstalling node sonic on /dev/nvme0n1"), "{console}");
    assert!(console.contains("partition table written; MMDATA kept"), "{console}");
    assert_eq!(mmdata_guid(&nvme), guid_before, "MMDATA's partition entry changed");
    {
        let data = LoopPart::attach(&nvme, data_n, true);
        sh(&format!("mount -o ro,norecovery {} {}", data.0, mnt.display()));
        let canary = std::fs::read_to_string(mnt.join("canary"));
        sh(&format!("umount {}", mnt.display()));
        assert_eq!(canary.unwrap(), "mirror data", "the canary did not survive");
        let root = LoopPart::attach(&nvme, root_n, true);
        sh(&format!("mount -o ro,noload {} {}", root.0, mnt.display()));
        let stray = mnt.join("etc/stray").exists();
        sh(&format!("umount {}", mnt.display()));
        assert!(!stray, "the OS was not replaced");
    }
    // The partitions are the image's, byte for byte, and MMDATA kept its number.
    assert_eq!(number(&nvme, mmconfig::DATA_LABEL), data_n);
    for (n, _) in partitions(&image) {
        let range = |img: &Path| sh(&format!("partx -g -o START,SECTORS -n {n} {}", img.display()));
        assert_eq!(range(&nvme), range(&image), "partition {n} moved");
        let (a, b) = (LoopPart::attach(&nvme, n, true), LoopPart::attach(&image, n, true));
        assert_eq!(sh(&format!("sha256sum < {}", a.0)), sh(&format!("sha256sum < {}", b.0)), "partition {n} differs");
    }
    took("3. reinstall keeps MMDATA");
    eprintln!("install: whole test {:.0} s", started.elapsed().as_secs_f64());
}
