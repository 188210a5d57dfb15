//! `mmbuild write`: the pure plan (facts before -> decision) as a table, then the real binary on
//! loop devices this test creates (root): written bytes verified, same node rewritten, mounted,
//! foreign, partition and tampered-source cases refused with nothing written.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use mmbuild::ship::write::{plan, Content, Facts, Kind, Member, Ours, Refusal};

const GB: u64 = 1_000_000_000;

fn stick(size: u64) -> Facts {
    Facts {
        path: "/dev/disk/by-id/usb-Stick_0001-0:0".into(),
        dev: "/dev/sdx".into(),
        kind: Kind::Disk,
        size,
        logical_block_size: 512,
        removable: true,
        read_only: false,
        transport: "usb".into(),
        model: "Generic Stick".into(),
        serial: "0001".into(),
        members: vec![Member { dev: "/dev/sdx".into(), size, ..Member::default() }],
        system: Vec::new(),
    }
}

fn with_part(mut f: Facts, content: Content, edit: impl FnOnce(&mut Member)) -> Facts {
    f.members[0].content = Content { pttype: "gpt".into(), ptuuid: "11111111-2222-3333-4444-555555555555".into(), ..Content::default() };
    let mut m = Member { dev: format!("/dev/sdx{}", f.members.len()), size: GB, content, ..Member::default() };
    edit(&mut m);
    f.members.push(m);
    f
}

fn ext4(label: &str) -> Content {
    Content { fstype: "ext4".into(), label: label.into(), uuid: "0b5e...".into(), ..Content::default() }
}

/// (case, facts, image bytes, --force, Ok(target state) or Err(refusal kind), text the message must hold)
type Case = (&'static str, Facts, u64, bool, Result<&'static str, &'static str>, &'static str);

#[test]
fn plan_table() {
    let ours = Ours::of("fleet", "ci");
    let other = Ours::of("fleet", "other");
    let image = 2 * GB;
    let mut own_disk = stick(16 * GB);
    own_disk.members[0].content = Content { pttype: "gpt".into(), ptuuid: ours.ptuuid.to_uppercase(), ..Content::default() };
    let mut own_stick = stick(16 * GB);
    own_stick.members[0].content =
        Content { fstype: "vfat".into(), label: "OEMDRV".into(), uuid: ours.fat_uuid.clone(), ..Content::default() };
    let mut own_install_stick = stick(16 * GB);
    own_install_stick.members[0].content = Content { pttype: "gpt".into(), ptuuid: ours.stick_ptuuid.clone(), ..Content::default() };
    let mut other_install_stick = stick(16 * GB);
    other_install_stick.members[0].content = Content { pttype: "gpt".into(), ptuuid: other.stick_ptuuid.clone(), ..Content::default() };
    let mut other_disk = stick(16 * GB);
    other_disk.members[0].content = Content { pttype: "gpt".into(), ptuuid: other.ptuuid.clone(), ..Content::default() };
    let mut system = with_part(stick(500 * GB), ext4("root"), |_| {});
    system.system = vec!["/".into(), "/boot/efi".into()];
    let mut ro = stick(16 * GB);
    ro.read_only = true;
    let mut partition = Facts::not_block("/dev/sdx1", "");
    partition.kind = Kind::Partition { disk: "/dev/sdx".into() };
    let mut odd_sectors = stick(16 * GB);
    odd_sectors.logical_block_size = 4096;

    let table: Vec<Case> = vec![
        ("blank stick", stick(16 * GB), image, false, Ok("blank"), ""),
        ("system disk", system.clone(), image, false, Err("system_disk"), "running system (/, /boot/efi)"),
        ("system disk, forced", system, image, true, Err("system_disk"), "--force or not"),
        (
            "mounted partition, forced",
            with_part(stick(16 * GB), ext4("photos"), |m| m.mounts = vec!["/media/op/photos".into()]),
            image,
            true,
            Err("in_use"),
            "umount /media/op/photos",
        ),
        (
            "swap partition",
            with_part(stick(16 * GB), Content::default(), |m| m.swap = true),
            image,
            true,
            Err("in_use"),
            "swapoff /dev/sdx1",
        ),
        (
            "held by dm",
            with_part(stick(16 * GB), Content::default(), |m| m.holders = vec!["dm-3".into()]),
            image,
            true,
            Err("in_use"),
            "dm-3",
        ),
        ("read-only", ro, image, true, Err("read_only"), "read-only"),
        ("too small", stick(GB), image, true, Err("too_small"), "has 1.0 GB, the image needs 2.0 GB"),
        ("not whole blocks", odd_sectors, image + 512, false, Err("unaligned"), "4096-byte"),
        ("2 TB disk", stick(2000 * GB), image, false, Err("too_large"), "serial 0001"),
        ("2 TB disk, forced", stick(2000 * GB), image, true, Ok("blank"), ""),
        ("foreign filesystem", with_part(stick(16 * GB), ext4("home"), |_| {}), image, false, Err("foreign"), "/dev/sdx1 ext4 \"home\""),
        ("foreign filesystem, forced", with_part(stick(16 * GB), ext4("home"), |_| {}), image, true, Ok("foreign"), ""),
        ("this node's disk image", own_disk, image, false, Ok("ours"), ""),
        ("this node's OEMDRV stick", own_stick, image, false, Ok("ours"), ""),
        ("this node's install stick", own_install_stick, image, false, Ok("ours"), ""),
        ("another node's install stick", other_install_stick, image, false, Err("foreign"), "gpt"),
        ("another node's disk image", other_disk, image, false, Err("foreign"), "gpt"),
        ("a partition", partition, image, true, Err("partition"), "--to /dev/sdx"),
        ("a regular file", Facts::not_block("disk.img", "a regular file"), image, true, Err("not_block_device"), "whole disk"),
    ];
    for (case, facts, len, force, want, text) in table {
        let got = plan(&facts, len, &ours, force);
        match (&got, want) {
            (Ok(p), Ok(state)) => {
                assert_eq!(p.target_state, state, "{case}");
                assert_eq!(p.bytes, len, "{case}");
                assert_eq!(!p.forced.is_empty(), force && (facts.size > 128 * GB || state == "foreign"), "{case}: {p:?}");
            }
            (Err(r), Err(kind)) => {
                assert_eq!(r.kind(), kind, "{case}: {r}");
                assert!(r.to_string().contains(text), "{case}: {r}");
            }
            _ => panic!("{case}: got {got:?}, want {want:?}"),
        }
    }
}

#[test]
fn refusals_say_what_to_do() {
    let r = Refusal::Mismatch { path: "o/ci/disk.img".into(), sums: "o/SHA256SUMS".into(), expected: "aa".into(), actual: "bb".into() };
    assert!(r.to_string().contains("rebuild"), "{r}");
    let r = Refusal::Foreign { dev: "/dev/sdx".into(), model: "m".into(), serial: "s".into(), holds: "x".into() };
    assert!(r.to_string().contains("--force"), "{r}");
}

// ---- real loop devices ------------------------------------------------------------------------

fn sh(cmd: &str) -> String {
    let out = Command::new("sh").args(["-c", cmd]).output().unwrap();
    assert!(out.status.success(), "{cmd}:\n{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Invert the byte at `at` in `file` in place; returns the byte it held.
fn flip(file: &Path, at: u64) -> u8 {
    use std::io::{Read, Seek, SeekFrom, Write};
    let mut f = std::fs::OpenOptions::new().read(true).write(true).open(file).unwrap();
    let mut b = [0u8];
    f.seek(SeekFrom::Start(at)).unwrap();
    f.read_exact(&mut b).unwrap();
    f.seek(SeekFrom::Start(at)).unwrap();
    f.write_all(&[!b[0]]).unwrap();
    b[0]
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

struct Fixture {
    dir: tempfile::TempDir,
    out: PathBuf,
    image_len: u64,
    image_sha: String,
    /// Byte offset of the root partition (holding a random pattern) in the image.
    root_offset: u64,
    loops: Vec<String>,
    mounts: Vec<PathBuf>,
}

// Small: debug builds hash at a few MB/s, and every run hashes the source and the read-back.
const IMAGE_MIB: u64 = 32;

impl Fixture {
    /// A fake build output for node `ci` (its real GPT with the fleet-derived disk GUID, a
    /// pattern in the root partition, zeros elsewhere) and its SHA256SUMS line. None: not root.
    fn new() -> Option<Fixture> {
        use hostkit::testenv::{need, Need};
        need(&[Need::Root, Need::LoopDevices, Need::Tool("sgdisk"), Need::Tool("mkfs.ext4"), Need::Tool("blkid")]).ok()?;
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        std::fs::create_dir_all(out.join("ci")).unwrap();
        let fleet = mmbuild::inventory::fleet::load(&repo().join("examples/fleet.toml"), None).unwrap();
        let layout = mmbuild::image::gpt::layout(8 << 20, (IMAGE_MIB - 8 - 8 - 2) << 20);
        let path = out.join("ci/disk.img");
        let mut f = std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(true).open(&path).unwrap();
        f.set_len(layout.total).unwrap();
        mmbuild::image::gpt::write(&mut f, &layout, &fleet.name, "ci").unwrap();
        drop(f);
        // A pattern (not zeros) in the root partition, so a short or misplaced write shows.
        sh(&format!(
            "head -c {} /dev/urandom | dd of={} bs=1M seek={} conv=notrunc status=none",
            8 << 20,
            path.display(),
            layout.root.0 >> 20
        ));
        let image_sha = sh(&format!("sha256sum {}", path.display())).split_whitespace().next().unwrap().to_string();
        std::fs::write(out.join("SHA256SUMS"), format!("{image_sha}  ci/disk.img\n")).unwrap();
        Some(Fixture { image_len: layout.total, image_sha, root_offset: layout.root.0, out, dir, loops: Vec::new(), mounts: Vec::new() })
    }

    /// A 256 MiB sparse disk whose first 96 MiB are 0xff (so written zeros are seen), prepared by
    /// `prep` (a shell snippet given $IMG), attached with partition scanning.
    fn disk(&mut self, name: &str, prep: &str) -> String {
        let img = self.dir.path().join(format!("{name}.target"));
        let i = img.display();
        sh(&format!("head -c {} /dev/zero | tr '\\0' '\\377' > {i} && truncate -s 256M {i}", 96 << 20));
        if !prep.is_empty() {
            sh(&format!("IMG={}; {prep}", img.display()));
        }
        let dev = sh(&format!("losetup --show -f -P {}", img.display()));
        self.loops.push(dev.clone());
        dev
    }

    fn write(&self, dev: &str, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_mmbuild"))
            .arg("write")
            .arg(repo().join("examples/fleet.toml"))
            .arg("--out")
            .arg(&self.out)
            .args(["--node", "ci", "--to", dev])
            .args(args)
            .output()
            .unwrap()
    }

    fn device_sha(&self, dev: &str) -> String {
        sh(&format!("head -c {} {dev} | sha256sum", self.image_len)).split_whitespace().next().unwrap().to_string()
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        for m in &self.mounts {
            let _ = Command::new("umount").arg(m).status();
        }
        for l in &self.loops {
            let _ = Command::new("losetup").args(["-d", l]).status();
        }
    }
}

#[test]
fn writes_verifies_and_rewrites_the_same_node() {
    let Some(mut f) = Fixture::new() else { return };
    let dev = f.disk("blank", "");
    let before = f.device_sha(&dev);

    let o = f.write(&dev, &["--dry-run"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let out = text(&o);
    for want in ["nothing (blank)", "loop", &format!("write      {} bytes", f.image_len), "nothing written"] {
        assert!(out.contains(want), "missing {want:?}:\n{out}");
    }
    assert_eq!(f.device_sha(&dev), before, "--dry-run wrote");

    let o = f.write(&dev, &["--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(doc["plan"]["target_state"], "blank");
    assert_eq!(doc["written"]["sha256"], f.image_sha.as_str());
    assert_eq!(f.device_sha(&dev), f.image_sha, "device content differs from the image");
    let rate = doc["written"]["write_rate"].as_f64().unwrap();

    // The same node's earlier write is overwritten without --force.
    let o = f.write(&dev, &[]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("this node's earlier write"), "{}", text(&o));
    assert!(text(&o).contains("sha256 matches"), "{}", text(&o));

    // The same bytes with dd, for comparison (figures only, never asserted).
    sh(&format!("blockdev --flushbufs {dev}"));
    let t = std::time::Instant::now();
    sh(&format!("dd if={} of={dev} bs=4M oflag=direct conv=fsync status=none", f.out.join("ci/disk.img").display()));
    let dd = f.image_len as f64 / t.elapsed().as_secs_f64();
    eprintln!(
        "write rate, {} MiB image to a loop device: mmbuild write {:.0} MB/s (this build's profile), dd bs=4M oflag=direct {:.0} MB/s",
        f.image_len >> 20,
        rate / 1e6,
        dd / 1e6
    );
}

#[test]
fn a_mounted_partition_is_refused_even_forced_and_foreign_data_needs_force() {
    let Some(mut f) = Fixture::new() else { return };
    let dev = f.disk("used", "sgdisk -o -n1:0:+32M -t1:8300 $IMG >/dev/null");
    // Without udev the kernel's partition list and /dev may lag the table (as in firstboot's tests).
    let k = dev.trim_start_matches("/dev/");
    sh(&format!("partx -a {dev} 2>/dev/null || true; [ -b {dev}p1 ] || mknod {dev}p1 b $(tr : ' ' < /sys/block/{k}/{k}p1/dev)"));
    sh(&format!("mkfs.ext4 -q -L photos {dev}p1"));
    let mnt = f.dir.path().join("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    sh(&format!("mount {dev}p1 {}", mnt.display()));
    f.mounts.push(mnt.clone());

    for args in [&[][..], &["--force"][..]] {
        let o = f.write(&dev, args);
        assert_eq!(o.status.code(), Some(7), "{args:?}: {}", text(&o));
        assert!(text(&o).contains(&format!("umount {}", mnt.display())), "{}", text(&o));
        assert!(text(&o).contains("nothing was written"), "{}", text(&o));
    }
    // Named by its partition: told to use the whole disk.
    let o = f.write(&format!("{dev}p1"), &["--force"]);
    assert_eq!(o.status.code(), Some(7), "{}", text(&o));
    assert!(text(&o).contains(&format!("--to {dev}")), "{}", text(&o));

    sh(&format!("umount {}", mnt.display()));
    f.mounts.clear();
    // Taken after umount: unmounting ext4 itself writes its superblock.
    let before = f.device_sha(&dev);
    let o = f.write(&dev, &[]);
    assert_eq!(o.status.code(), Some(7), "{}", text(&o));
    assert!(text(&o).contains(&format!("{dev}p1 ext4 \"photos\"")) && text(&o).contains("--force"), "{}", text(&o));
    assert_eq!(f.device_sha(&dev), before, "a refusal wrote");

    let o = f.write(&dev, &["--force", "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(doc["plan"]["target_state"], "foreign");
    assert_eq!(f.device_sha(&dev), f.image_sha);
}

#[test]
fn a_tampered_source_is_refused() {
    let Some(mut f) = Fixture::new() else { return };
    let dev = f.disk("t", "");
    let before = f.device_sha(&dev);
    // One byte inside the root partition's pattern flipped: same length, different content.
    let img = f.out.join("ci/disk.img");
    let at = f.root_offset + (1 << 20) + 12345;
    let byte = flip(&img, at);
    assert_eq!(std::fs::metadata(&img).unwrap().len(), f.image_len, "the tampering must not grow the image");
    assert_ne!(sh(&format!("sha256sum {}", img.display())).split_whitespace().next().unwrap(), f.image_sha, "byte {byte} at {at}");
    let o = f.write(&dev, &[]);
    assert_eq!(o.status.code(), Some(7), "{}", text(&o));
    assert!(text(&o).contains("does not match its line in") && text(&o).contains("rebuild"), "{}", text(&o));
    std::fs::write(f.out.join("SHA256SUMS"), "").unwrap();
    let o = f.write(&dev, &["--json"]);
    assert_eq!(o.status.code(), Some(7), "{}", text(&o));
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(doc["refused"]["kind"], "source_not_listed");
    assert_eq!(f.device_sha(&dev), before, "a refusal wrote");
}

/// The disk under this machine's `/`, found from mountinfo and sysfs (not named by the test).
fn root_disk() -> Option<String> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let majmin = info.lines().find(|l| l.split(' ').nth(4) == Some("/"))?.split(' ').nth(2)?.to_string();
    let mut sys = std::fs::canonicalize(format!("/sys/dev/block/{majmin}")).ok()?;
    if sys.join("partition").exists() {
        sys = sys.parent()?.to_path_buf();
    }
    if sys.join("slaves").read_dir().ok()?.next().is_some() {
        return None;
    }
    let dev = format!("/dev/{}", sys.file_name()?.to_string_lossy());
    Path::new(&dev).exists().then_some(dev)
}

#[test]
fn the_running_systems_disk_is_refused_even_forced() {
    let Some(f) = Fixture::new() else { return };
    let Some(dev) = root_disk() else {
        // The dm/LVM case is built below (a_disk_under_the_system_through_dm_is_refused).
        hostkit::testenv::skip("/ is not on a plain disk or partition here");
        return;
    };
    // --dry-run as a second guard: even a broken plan must not write this machine's disk.
    let o = f.write(&dev, &["--force", "--dry-run"]);
    assert_eq!(o.status.code(), Some(7), "{}", text(&o));
    assert!(text(&o).contains("running system (/"), "{}", text(&o));
}

/// A device-mapper device, removed on drop (after the swap or mount on it is gone).
struct Dm(String);

impl Dm {
    /// A linear dm device over all of `dev`, as LVM makes them.
    fn linear(name: &str, dev: &str) -> Dm {
        let sectors = sh(&format!("blockdev --getsz {dev}"));
        sh(&format!("dmsetup create {name} --table '0 {sectors} linear {dev} 0'"));
        Dm(name.to_string())
    }
    fn path(&self) -> String {
        format!("/dev/mapper/{}", self.0)
    }
}

impl Drop for Dm {
    fn drop(&mut self) {
        let _ = Command::new("swapoff").arg(self.path()).status();
        let _ = Command::new("dmsetup").args(["remove", "--retry", &self.0]).status();
    }
}

/// `mmbuild write ... --force --dry-run --json` with `prep` (a shell snippet) run first in a
/// private mount namespace: mounts made there are the "running system" this one run sees.
fn write_in_namespace(f: &Fixture, dev: &str, prep: &str) -> Output {
    Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &format!("{prep} && exec \"$@\""), "sh"])
        .arg(env!("CARGO_BIN_EXE_mmbuild"))
        .arg("write")
        .arg(repo().join("examples/fleet.toml"))
        .arg("--out")
        .arg(&f.out)
        .args(["--node", "ci", "--to", dev, "--force", "--dry-run", "--json"])
        .output()
        .unwrap()
}

/// The running system's /boot on a dm device (an LV, as LVM builds them) on the target, and swap
/// on a dm device on another target: both refused as the system's disk, --force or not.
#[test]
fn a_disk_under_the_system_through_dm_is_refused() {
    use hostkit::testenv::{need, Need};
    let Some(mut f) = Fixture::new() else { return };
    if need(&[Need::Tool("dmsetup"), Need::DeviceMapper, Need::Tool("unshare"), Need::Tool("mkswap")]).is_err() {
        return;
    }
    let id = std::process::id();
    let dev = f.disk("under-boot", "");
    let boot = Dm::linear(&format!("mmtest-boot-{id}"), &dev);
    sh(&format!("mkfs.ext4 -q {}", boot.path()));
    let before = f.device_sha(&dev);
    let o = write_in_namespace(&f, &dev, &format!("mount {} /boot", boot.path()));
    assert_eq!(o.status.code(), Some(7), "{}", text(&o));
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(doc["refused"]["kind"], "system_disk", "{doc}");
    assert!(doc["refused"]["message"].as_str().unwrap().contains("running system (/boot)"), "{doc}");
    // Without the mount the same disk is only held by dm: in use, named, still not written.
    let o = write_in_namespace(&f, &dev, "true");
    assert_eq!(o.status.code(), Some(7), "{}", text(&o));
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(doc["refused"]["kind"], "in_use", "{doc}");
    assert!(doc["refused"]["message"].as_str().unwrap().contains("dmsetup remove"), "{doc}");
    assert_eq!(f.device_sha(&dev), before, "a refusal wrote");

    let dev = f.disk("under-swap", "");
    let swap = Dm::linear(&format!("mmtest-swap-{id}"), &dev);
    sh(&format!("mkswap -q {0} && swapon {0}", swap.path()));
    let o = write_in_namespace(&f, &dev, "true");
    sh(&format!("swapoff {}", swap.path()));
    assert_eq!(o.status.code(), Some(7), "{}", text(&o));
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(doc["refused"]["kind"], "system_disk", "{doc}");
    assert!(doc["refused"]["message"].as_str().unwrap().contains("running system (swap)"), "{doc}");
}

/// Something else writes to the target while mmbuild writes and reads back (here: a thread
/// inverting one byte of the loop device's backing file): the read-back differs, exit 4, and the
/// message says not to use the disk.
#[test]
fn a_read_back_that_differs_fails_with_exit_4() {
    use std::os::unix::fs::FileExt;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let Some(mut f) = Fixture::new() else { return };
    let dev = f.disk("flaky", "");
    let at = f.root_offset + (2 << 20) + 777;
    let mut b = [0u8];
    std::fs::File::open(f.out.join("ci/disk.img")).unwrap().read_exact_at(&mut b, at).unwrap();
    let backing = std::fs::OpenOptions::new().write(true).open(f.dir.path().join("flaky.target")).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let tamper = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                backing.write_all_at(&[!b[0]], at).unwrap();
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        })
    };
    let o = f.write(&dev, &[]);
    stop.store(true, Ordering::Relaxed);
    tamper.join().unwrap();
    assert_eq!(o.status.code(), Some(4), "{}", text(&o));
    assert!(text(&o).contains("the data read back does not match") && text(&o).contains("do not use it"), "{}", text(&o));
}

/// Two filesystems on one disk (an ext4 with a FAT boot sector over its unused first sector:
/// blkid -p exits 8, "ambivalent"): holding data, refused without --force, never blank.
#[test]
fn conflicting_signatures_are_foreign_never_blank() {
    let Some(mut f) = Fixture::new() else { return };
    if hostkit::testenv::need(&[hostkit::testenv::Need::Tool("mkfs.vfat")]).is_err() {
        return;
    }
    let dev = f.disk(
        "both",
        "mkfs.ext4 -q -F $IMG && truncate -s 16M $IMG.fat && mkfs.vfat $IMG.fat >/dev/null \
         && dd if=$IMG.fat of=$IMG bs=512 count=1 conv=notrunc status=none",
    );
    let probe = Command::new("blkid").args(["-p", &dev]).output().unwrap();
    assert_eq!(probe.status.code(), Some(8), "the fixture must be ambivalent: {}", text(&probe));
    let before = f.device_sha(&dev);
    let o = f.write(&dev, &["--json"]);
    assert_eq!(o.status.code(), Some(7), "{}", text(&o));
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(doc["refused"]["kind"], "foreign", "{doc}");
    assert!(doc["refused"]["message"].as_str().unwrap().contains("conflicting signatures"), "{doc}");
    assert_eq!(f.device_sha(&dev), before, "a refusal wrote");
}

/// A device node, in the test's own directory, for partition `n` of loop device `dev` as the
/// kernel lists it (no udev here; a node in /dev may be stale from an earlier loop).
fn part_dev(f: &Fixture, dev: &str, n: u32) -> String {
    let k = dev.trim_start_matches("/dev/");
    let node = f.dir.path().join(format!("{k}p{n}"));
    sh(&format!("partx -a {dev} 2>/dev/null || true; rm -f {0}; mknod {0} b $(tr : ' ' < /sys/block/{k}/{k}p{n}/dev)", node.display()));
    node.display().to_string()
}

/// A new, empty file open for reading and writing (what the build's image writers take).
fn rw_file(path: &Path) -> std::fs::File {
    std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(true).open(path).unwrap()
}

/// The SHA-256 of `bytes` bytes of `path` from `skip`, by the real sha256sum.
fn sha_range(path: &str, skip: u64, bytes: u64) -> String {
    sh(&format!("tail -c +{} {path} | head -c {bytes} | sha256sum", skip + 1)).split_whitespace().next().unwrap().to_string()
}

/// The other two artifacts, built by the build's own code (the OEMDRV volume by `oemdrv::write`,
/// the install stick by `stick::write_stick` around the fixture's disk image) and written for
/// real: the bytes land, blkid sees this node's volume id and stick GUID, the stick's header
/// names the node and its payload is the disk image; a rewrite needs no --force, another
/// node's OEMDRV stick does.
#[test]
fn oemdrv_and_install_sticks_are_written_and_recognised() {
    let Some(mut f) = Fixture::new() else { return };
    if hostkit::testenv::need(&[hostkit::testenv::Need::Tool("fsck.vfat")]).is_err() {
        return;
    }
    let fleet = mmbuild::inventory::fleet::load(&repo().join("examples/fleet.toml"), None).unwrap();
    let ci = fleet.nodes.iter().find(|n| n.node.name == "ci").unwrap();
    let other = fleet.nodes.iter().find(|n| n.node.name != "ci").unwrap();
    let ours = Ours::of(&fleet.name, "ci");
    let oemdrv = |node: &str, path: &Path| {
        let mut file = rw_file(path);
        let files: [(&str, &[u8]); 2] = [("ks.cfg", b"# kickstart of the test\n"), ("node.toml", node.as_bytes())];
        mmbuild::ship::oemdrv::write(&mut file, &fleet.name, node, &files).unwrap();
    };
    oemdrv("ci", &f.out.join("ci/oemdrv.img"));
    install_img(&f, ci);
    let mut sums = std::fs::read_to_string(f.out.join("SHA256SUMS")).unwrap();
    for a in ["oemdrv.img", "install.img"] {
        sums +=
            &format!("{}  ci/{a}\n", sh(&format!("sha256sum < {}", f.out.join("ci").join(a).display())).split_whitespace().next().unwrap());
    }
    std::fs::write(f.out.join("SHA256SUMS"), sums).unwrap();
    let built = f.out.join("ci");
    let len = |a: &str| std::fs::metadata(built.join(a)).unwrap().len();
    let want = |a: &str| sha_range(&built.join(a).display().to_string(), 0, len(a));
    let probe = |dev: &str, tag: &str| sh(&format!("blkid -p -s {tag} -o value {dev}"));

    // OEMDRV: onto a blank stick, read back by blkid and fsck.vfat as this node's volume.
    let dev = f.disk("oemdrv", "");
    let o = f.write(&dev, &["--artifact", "oemdrv", "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!((doc["plan"]["target_state"].as_str(), doc["plan"]["bytes"].as_u64()), (Some("blank"), Some(len("oemdrv.img"))));
    assert_eq!(sha_range(&dev, 0, len("oemdrv.img")), want("oemdrv.img"));
    assert_eq!((probe(&dev, "LABEL"), probe(&dev, "UUID")), ("OEMDRV".to_string(), ours.fat_uuid.clone()));
    sh(&format!("fsck.vfat -n {dev}"));
    let read = mmbuild::image::fat::read_file(&mut std::fs::File::open(&dev).unwrap(), "node.toml").unwrap();
    assert_eq!(read, b"ci");
    let o = f.write(&dev, &["--artifact", "oemdrv"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("this node's earlier write"), "{}", text(&o));
    // Another node's OEMDRV stick is not ours: refused, untouched, until --force.
    let theirs = f.dir.path().join("theirs-oemdrv.img");
    oemdrv(&other.node.name, &theirs);
    sh(&format!("dd if={} of={dev} bs=1M conv=fsync status=none", theirs.display()));
    let before = sha_range(&dev, 0, len("oemdrv.img"));
    let o = f.write(&dev, &["--artifact", "oemdrv", "--json"]);
    assert_eq!(o.status.code(), Some(7), "{}", text(&o));
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(doc["refused"]["kind"], "foreign", "{doc}");
    assert_eq!(sha_range(&dev, 0, len("oemdrv.img")), before, "a refusal wrote");
    let o = f.write(&dev, &["--artifact", "oemdrv", "--force"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(sha_range(&dev, 0, len("oemdrv.img")), want("oemdrv.img"));

    // The install stick: its GPT carries the stick GUID, MMINSTALL holds the header naming the
    // node and image, then the disk image itself.
    let dev = f.disk("install", "");
    let o = f.write(&dev, &["--artifact", "install", "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(sha_range(&dev, 0, len("install.img")), want("install.img"));
    assert_eq!(probe(&dev, "PTUUID"), ours.stick_ptuuid);
    let payload = part_dev(&f, &dev, 2);
    assert_eq!(probe(&payload, "PART_ENTRY_NAME"), mmconfig::install::INSTALL_LABEL);
    let mut raw = vec![0u8; mmconfig::install::HEADER_BYTES];
    std::os::unix::fs::FileExt::read_exact_at(&std::fs::File::open(&payload).unwrap(), &mut raw, 0).unwrap();
    let m = mmconfig::install::InstallManifest::from_header(&raw).unwrap();
    assert_eq!((m.node.as_str(), m.image_sha256.as_str(), m.image_bytes), ("ci", f.image_sha.as_str(), f.image_len));
    assert_eq!(sha_range(&payload, mmconfig::install::PAYLOAD_OFFSET, f.image_len), f.image_sha);
    let o = f.write(&dev, &["--artifact", "install"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("this node's earlier write"), "{}", text(&o));
}

/// Builds DIR/ci/install.img by the build's own `stick::write_stick` around the fixture's disk
/// image (an ESP and a root as long as the fixture image's, a patterned installer ESP).
fn install_img(f: &Fixture, ci: &mmconfig::NodeConfig) -> PathBuf {
    let base_dir = f.dir.path().join("base");
    std::fs::create_dir_all(&base_dir).unwrap();
    let sized = |name: &str, len: u64| {
        let p = base_dir.join(name);
        std::fs::File::create(&p).unwrap().set_len(len).unwrap();
        p
    };
    let install_esp = base_dir.join("install-esp.img");
    sh(&format!("head -c {} /dev/urandom > {}", 3 << 20, install_esp.display()));
    let base = mmbuild::image::base::Base {
        id: "test".into(),
        dir: base_dir.clone(),
        root_img: sized("root.img", (IMAGE_MIB - 8 - 8 - 2) << 20),
        ukis: [base_dir.join("uki-a.efi"), base_dir.join("uki-b.efi")],
        esp_img: sized("esp.img", 8 << 20),
        install_esp_img: install_esp,
        built: false,
        packages: Vec::new(),
        image_version: "20261201.000000-aaaaaaaaaaaa".into(),
    };
    let path = f.out.join("ci/install.img");
    let mut stick = rw_file(&path);
    mmbuild::ship::stick::write_stick(&mut stick, &base, ci, &f.out.join("ci/disk.img"), &f.image_sha).unwrap();
    path
}

/// The installer's own write (`installer::write_image`, what mm-install runs) from a real
/// stick's MMINSTALL partition to a loop disk: verified and partitioned when the stick is good;
/// a stick whose payload no longer matches its header's SHA-256 (one byte inverted inside the
/// root partition) fails verification, says so, and leaves the disk without a partition table.
#[test]
fn the_installer_refuses_to_partition_a_disk_whose_read_back_differs() {
    let Some(mut f) = Fixture::new() else { return };
    let fleet = mmbuild::inventory::fleet::load(&repo().join("examples/fleet.toml"), None).unwrap();
    let ci = fleet.nodes.iter().find(|n| n.node.name == "ci").unwrap();
    let img = install_img(&f, ci);
    let stick = sh(&format!("losetup --show -f -P {}", img.display()));
    f.loops.push(stick.clone());
    let part = PathBuf::from(part_dev(&f, &stick, 2));
    let mut raw = vec![0u8; mmconfig::install::HEADER_BYTES];
    std::os::unix::fs::FileExt::read_exact_at(&std::fs::File::open(&part).unwrap(), &mut raw, 0).unwrap();
    let m = mmconfig::install::InstallManifest::from_header(&raw).unwrap();
    let tag = |dev: &str, tag: &str| {
        let o = Command::new("blkid").args(["-p", "-s", tag, "-o", "value", dev]).output().unwrap();
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    };
    let pttype = |dev: &str| format!("{} {}", tag(dev, "PTTYPE"), tag(dev, "PTUUID")).trim().to_string();
    let install = |disk: &str| {
        let mut said = Vec::new();
        let r = mm_firstboot::installer::write_image(&mut |s| said.push(s.to_string()), &m, &part, disk, None);
        (r, said.join("\n"))
    };

    let good = f.disk("installed", "");
    let (r, said) = install(&good);
    r.unwrap_or_else(|e| panic!("{e:#}\n{said}"));
    assert!(said.contains(&format!("verified: {good} holds the image (sha256 {})", f.image_sha)), "{said}");
    assert_eq!(pttype(&good), format!("gpt {}", m.disk_guid));

    // The stick goes bad under the header: one byte of the root partition's pattern inverted.
    let at = mmconfig::install::PAYLOAD_OFFSET + f.root_offset + (3 << 20) + 321;
    {
        use std::os::unix::fs::FileExt;
        let dev = std::fs::OpenOptions::new().read(true).write(true).open(&part).unwrap();
        let mut b = [0u8];
        dev.read_exact_at(&mut b, at).unwrap();
        dev.write_all_at(&[!b[0]], at).unwrap();
        dev.sync_all().unwrap();
    }
    let bad = f.disk("faulty", "");
    let (r, said) = install(&bad);
    let err = format!("{:#}", r.expect_err("a read-back that differs was accepted"));
    assert!(
        err.starts_with(&format!("verification failed: {bad} read back as sha256 "))
            && err.contains(&format!("the image is {}", f.image_sha))
            && err.contains("the partition table was not written"),
        "{err}"
    );
    assert!(!said.contains("verified") && !said.contains("partition table written"), "{said}");
    assert_eq!(pttype(&bad), "", "a disk that failed verification got a partition table");
}
