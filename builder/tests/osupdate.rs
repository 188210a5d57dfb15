//! Slow tier: whole-OS updates of a live node through `mmbuild apply`, under QEMU + OVMF with the
//! node's real systemd-boot. One node, one data disk, in this order:
//! - v1 (the older kernel Debian's main suite had, when this machine's apt still offers one;
//!   MM_OSUPDATE_OLD_KERNEL=0 to share v2's) boots, syncs epel;
//! - a power cut while `apply` writes v2 into the other slot: the node boots v1 and serves;
//! - a v2 whose slot file does not match the build's manifest is refused before anything is sent;
//! - v2 through `apply`: `os-updated v1 -> v2`, v2's kernel and IMAGE_VERSION, v1's synced data
//!   served, a second apply has nothing to change;
//! - a v3 built broken on purpose (rsyncd masked) fails its health gate on every trial boot and
//!   the node falls back to v2 by itself: `rolled-back` with the gate's reason, and the next
//!   apply holds that image back.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::{repo, text};
use hostkit::testenv::{free_port, Need};
use mmbuild::boottest::qemu::{Vm, VmOptions};

const READY: &str = "mm-firstboot: ci.mm.example.net ready - ALL GOOD";
/// A build from the future: v2 and v3 sort after v1 whatever the packages' dates (systemd-boot
/// boots the newest version).
const V2_EPOCH: &str = "1893456000";
const V3_EPOCH: &str = "1924992000";

fn sh(cmd: &str) -> String {
    let out = Command::new("sh").args(["-c", cmd]).output().unwrap();
    assert!(out.status.success(), "{cmd}:\n{}", text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

struct Lab {
    tmp: tempfile::TempDir,
    image: PathBuf,
    data: PathBuf,
    /// ssh, http.
    ports: (u16, u16),
}

impl Lab {
    fn path(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }

    fn start(&self, log: &str) -> Vm {
        let mut opts = VmOptions::new(&self.image);
        opts.data_disks = vec![self.data.clone()];
        opts.serial_log = Some(self.path(log));
        opts.forwards = vec![(self.ports.0, 22), (self.ports.1, 80)];
        // The node reboots itself onto a new slot, and again for each failed trial.
        opts.reboot = true;
        Vm::start(&opts).unwrap()
    }

    fn build(&self, out: &str, epoch: Option<&str>, data: &Path, pins: Option<&Path>) -> String {
        let t = Instant::now();
        let mut c = Command::new(env!("CARGO_BIN_EXE_mmbuild"));
        c.args(["build", self.path("fleet.toml").to_str().unwrap(), "--out", self.path(out).to_str().unwrap(), "--node", "ci", "--quiet"])
            .args(["--state", self.path("state").to_str().unwrap(), "--data", data.to_str().unwrap()]);
        if let Some(p) = pins {
            c.arg("--pin-packages").arg(p);
        }
        if let Some(e) = epoch {
            c.env("SOURCE_DATE_EPOCH", e);
        }
        let o = c.output().unwrap();
        assert!(o.status.success(), "{}", text(&o));
        let m: serde_json::Value = serde_json::from_slice(&std::fs::read(self.path(out).join("manifest.json")).unwrap()).unwrap();
        let v = m["image_version"].as_str().unwrap().to_string();
        eprintln!("TIME build {out} ({v}): {:.0} s", t.elapsed().as_secs_f64());
        v
    }

    fn apply(&self, out: &str, extra: &[&str]) -> (Output, serde_json::Value) {
        let t = Instant::now();
        let o = self.apply_start(out, extra).wait_with_output().unwrap();
        eprintln!("TIME apply --out {out} {extra:?}: {:.0} s\n{}", t.elapsed().as_secs_f64(), String::from_utf8_lossy(&o.stderr));
        let report = serde_json::from_slice(&o.stdout).unwrap_or(serde_json::Value::Null);
        (o, report)
    }

    fn apply_start(&self, out: &str, extra: &[&str]) -> std::process::Child {
        Command::new(env!("CARGO_BIN_EXE_mmbuild"))
            .args(["apply", self.path("fleet.toml").to_str().unwrap(), "--out", self.path(out).to_str().unwrap(), "--node", "ci"])
            .args(["--connect", &format!("ci=127.0.0.1:{}", self.ports.0), "-i", self.path("key").to_str().unwrap()])
            .args(["--data", repo().to_str().unwrap(), "--json", "--os-timeout", "900"])
            .args(extra)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    }

    fn ssh(&self, command: &str) -> Output {
        Command::new("ssh")
            .args(["-F", "/dev/null", "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", "-o", "ConnectTimeout=20"])
            .arg("-o")
            .arg(format!("UserKnownHostsFile={}", self.path("v1/known_hosts").display()))
            .args(["-o", "HostKeyAlias=ci.mm.example.net", "-o", "IdentitiesOnly=yes", "-i"])
            .arg(self.path("key"))
            .args(["-p", &self.ports.0.to_string(), "mmadmin@127.0.0.1", command])
            .output()
            .unwrap()
    }

    fn ssh_ok(&self, command: &str) -> String {
        let o = self.ssh(command);
        assert!(o.status.success(), "{command}: {}", text(&o));
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    fn os_status(&self) -> serde_json::Value {
        serde_json::from_str(&self.ssh_ok("sudo mm-firstboot os status --json")).unwrap()
    }

    fn http(&self, path: &str) -> (String, Vec<u8>) {
        let url = format!("http://127.0.0.1:{}{path}", self.ports.1);
        let o = Command::new("curl").args(["-s", "--max-time", "20", "-w", "\n%{http_code}", &url]).output().unwrap();
        let mut body = o.stdout;
        let nl = body.iter().rposition(|&b| b == b'\n').unwrap_or(0);
        let code = String::from_utf8_lossy(&body[nl + 1..]).into_owned();
        body.truncate(nl);
        (code, body)
    }
}

/// Wait until the console shows `needle` for the `n`th time (a reboot keeps the earlier boots'
/// lines in the log).
fn wait_nth(vm: &mut Vm, needle: &str, n: usize, timeout: Duration) {
    let t = Instant::now();
    while vm.serial().matches(needle).count() < n {
        assert!(!vm.exited(), "QEMU exited; console tail:\n{}", vm.tail(40));
        assert!(t.elapsed() < timeout, "the console did not show {needle:?} {n} times within {} s:\n{}", timeout.as_secs(), vm.tail(60));
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// An older kernel than the candidate, from the Debian main suite this machine's apt knows (the
/// point release's, before the security suite's); None when there is none.
fn older_kernel() -> Option<(String, String)> {
    let policy = sh("apt-cache madison linux-image-amd64");
    let candidate = sh("apt-cache policy linux-image-amd64");
    let candidate = candidate.lines().find_map(|l| l.trim().strip_prefix("Candidate: "))?.trim().to_string();
    let older = policy
        .lines()
        .map(|l| l.split('|').map(str::trim).collect::<Vec<_>>())
        .find(|f| f.len() >= 3 && f[1] != candidate && f[2].contains("bookworm/main") && !f[1].contains("bpo"))?;
    Some((older[1].to_string(), candidate))
}

#[test]
#[ignore = "slow: builds three images and rolls them out to a node under QEMU + OVMF"]
fn apply_rolls_the_os_into_the_other_slot_and_a_bad_image_rolls_back() {
    if hostkit::testenv::need(&[Need::Root, Need::Tool("mmdebstrap"), Need::Tool("qemu-system-x86_64"), Need::Tool("ssh")]).is_err() {
        return;
    }
    let started = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let up = tmp.path().join("upstream");
    sh(&format!("{} {}/epel/Packages hello 1.0", repo().join("scripts/fixture-rpm").display(), up.display()));
    sh(&format!("createrepo_c --quiet {}/epel", up.display()));
    let conf = tmp.path().join("rsyncd.conf");
    std::fs::write(&conf, format!("use chroot = no\nread only = yes\n[epel]\npath = {}/epel\n", up.display())).unwrap();
    let port = free_port("127.0.0.1");
    let _daemon = common::rsync_daemon(&conf, port);
    sh(&format!("ssh-keygen -q -t ed25519 -N '' -C os -f {}", tmp.path().join("key").display()));
    let key = std::fs::read_to_string(tmp.path().join("key.pub")).unwrap();
    let fleet = std::fs::read_to_string(repo().join("examples/fleet.toml"))
        .unwrap()
        .replacen("admin_ssh_keys = [\n", &format!("admin_ssh_keys = [\n  \"{}\",\n", key.trim()), 1)
        .replacen("admin_prefixes = [\"192.0.2.0/24\",", "admin_prefixes = [\"10.0.2.2/32\", \"192.0.2.0/24\",", 1);
    std::fs::write(tmp.path().join("fleet.toml"), common::upstreams_on(&fleet, port)).unwrap();
    let lab = Lab {
        image: tmp.path().join("ci.img"),
        data: tmp.path().join("data.img"),
        ports: (free_port("127.0.0.1"), free_port("127.0.0.1")),
        tmp,
    };

    // v1 carries the main suite's older kernel where apt has one (a base of its own, about 6
    // minutes here), v2 the current one, so `uname -r` tells the slots apart. MM_OSUPDATE_OLD_KERNEL=0
    // gives v1 the base the other slow tests built (cached) and the same kernel as v2.
    let kernels = if std::env::var_os("MM_OSUPDATE_OLD_KERNEL").is_some_and(|v| v == "0") { None } else { older_kernel() };
    let pins = lab.path("v1-pins.lock");
    match &kernels {
        Some((old, _)) => std::fs::write(&pins, format!("linux-image-amd64={old}\n")).unwrap(),
        None => eprintln!("NOTE: v1 and v2 share their kernel (apt offers no older one, or MM_OSUPDATE_OLD_KERNEL=0)"),
    }
    let v1 = lab.build("v1", None, &repo(), kernels.as_ref().map(|_| pins.as_path()));
    let v2 = lab.build("v2", Some(V2_EPOCH), &repo(), None);
    // v3: the same OS with rsyncd masked, which its health gate must catch.
    let broken = lab.path("broken-data");
    sh(&format!("cp -a {}/overlays {}/profiles {}/hardware {}/", repo().display(), repo().display(), repo().display(), {
        std::fs::create_dir_all(&broken).unwrap();
        broken.display()
    }));
    std::os::unix::fs::symlink("/dev/null", broken.join("overlays/rootfs/etc/systemd/system/rsync.service")).unwrap();
    let v3 = lab.build("v3", Some(V3_EPOCH), &broken, None);
    assert!(v1 < v2 && v2 < v3, "{v1} {v2} {v3}");
    {
        use std::os::unix::fs::MetadataExt;
        // Slot B is a hole in the shipped image: apparent size counts it, allocated does not.
        let m = std::fs::metadata(lab.path("v2/ci/disk.img")).unwrap();
        let zstd = sh(&format!("zstd -c -T0 -3 {} | wc -c", lab.path("v2/os/root.img").display()));
        let mib = |b: u64| b >> 20;
        eprintln!("BENCH os-image-mib {} {} {}", mib(m.len()), mib(m.blocks() * 512), mib(zstd.trim().parse().unwrap()));
    }

    sh(&format!("cp --sparse=always {} {}", lab.path("v1/ci/disk.img").display(), lab.image.display()));
    std::fs::File::create(&lab.data).unwrap().set_len(4 << 30).unwrap();
    let mut vm = lab.start("console.log");
    wait_nth(&mut vm, READY, 1, Duration::from_secs(300));
    let t = Instant::now();
    while !lab.ssh("test -d /srv/mirror/epel/repodata").status.success() {
        assert!(t.elapsed() < Duration::from_secs(180), "epel's first sync never landed");
        std::thread::sleep(Duration::from_secs(2));
    }
    let st = lab.os_status();
    assert_eq!(
        (st["image_version"].as_str(), st["slot"].as_str(), st["trial"].as_bool()),
        (Some(v1.as_str()), Some("a"), Some(false)),
        "{st}"
    );
    let kernel_v1 = lab.ssh_ok("uname -rv");
    if let Some((old, _)) = &kernels {
        assert!(kernel_v1.contains(old.as_str()), "v1 runs {kernel_v1}, not {old}");
    }

    // Power cut while the other slot is being written: v1 boots again and serves.
    let mut apply = lab.apply_start("v2", &[]);
    let t = Instant::now();
    // zstd -d runs on the node exactly while the slot is written.
    while !lab.ssh("pgrep -x zstd").status.success() {
        assert!(t.elapsed() < Duration::from_secs(300), "the slot write never started");
        std::thread::sleep(Duration::from_millis(500));
    }
    std::thread::sleep(Duration::from_secs(2));
    drop(vm);
    let _ = apply.kill();
    let cut = apply.wait_with_output().unwrap();
    eprintln!("apply cut off: {}", text(&cut));
    let mut vm = lab.start("console-after-cut.log");
    wait_nth(&mut vm, READY, 1, Duration::from_secs(300));
    let st = lab.os_status();
    assert_eq!((st["image_version"].as_str(), st["slot"].as_str()), (Some(v1.as_str()), Some("a")), "after the power cut: {st}");
    assert!(st["entries"].as_array().unwrap().iter().all(|e| e["slot"] == "a"), "a half-written slot has a boot entry: {st}");
    assert_eq!(lab.http("/epel/repodata/").0, "200");

    // A slot file that is not the build's: refused before anything reaches the node.
    let root = lab.path("v2/os/root.img");
    let f = std::fs::OpenOptions::new().read(true).write(true).open(&root).unwrap();
    let at = 600 << 20;
    let mut byte = [0u8; 1];
    std::os::unix::fs::FileExt::read_exact_at(&f, &mut byte, at).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, &[byte[0] ^ 0xff], at).unwrap();
    let (o, report) = lab.apply("v2", &[]);
    assert_eq!(o.status.code(), Some(6), "{}", text(&o));
    assert!(report["nodes"][0]["message"].as_str().unwrap().contains("refusing to send it"), "{report}");
    assert!(lab.ssh("test ! -e /run/micromirror-os.efi").status.success(), "the refused image's kernel reached the node");
    std::os::unix::fs::FileExt::write_all_at(&f, &byte, at).unwrap();
    drop(f);

    // v2 through apply: the node reboots onto it, its gate passes, it serves v1's data.
    let t = Instant::now();
    let (o, report) = lab.apply("v2", &[]);
    let seconds = t.elapsed().as_secs_f64();
    assert_eq!(o.status.code(), Some(0), "{}\n{}", text(&o), vm.tail(60));
    let node = &report["nodes"][0];
    assert_eq!(node["result"], "os-updated", "{report}");
    assert!(node["message"].as_str().unwrap().starts_with(&format!("os-updated {v1} -> {v2}")), "{report}");
    eprintln!("BENCH os-update-apply-to-serving {seconds:.0} {}", node["os_bytes_sent"].as_u64().unwrap() >> 20);
    let st = lab.os_status();
    assert_eq!(
        (st["image_version"].as_str(), st["slot"].as_str(), st["trial"].as_bool()),
        (Some(v2.as_str()), Some("b"), Some(false)),
        "{st}"
    );
    assert!(lab.ssh_ok("grep IMAGE_VERSION /etc/os-release").contains(&v2));
    let kernel_v2 = lab.ssh_ok("uname -rv");
    if let Some((_, current)) = &kernels {
        assert!(kernel_v2.contains(current.as_str()), "v2 runs {kernel_v2}, not {current}");
        assert_ne!(kernel_v1, kernel_v2);
    }
    let (code, body) = lab.http("/epel/repodata/repomd.xml");
    assert_eq!(code, "200", "v1's synced data is not served by v2");
    assert!(String::from_utf8_lossy(&body).contains("<repomd"), "{}", String::from_utf8_lossy(&body));
    let (o, report) = lab.apply("v2", &[]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(report["nodes"][0]["result"], "nothing-to-change", "a second apply: {report}");

    // v3 fails its gate on each of its two trial boots; the node comes back on v2 by itself.
    let t = Instant::now();
    let (o, report) = lab.apply("v3", &["--trial-boots", "2"]);
    eprintln!("BENCH os-rollback-to-serving {:.0}", t.elapsed().as_secs_f64());
    assert_eq!(o.status.code(), Some(6), "{}\n{}", text(&o), vm.tail(80));
    let node = &report["nodes"][0];
    assert_eq!(node["result"], "rolled-back", "{report}");
    assert!(node["message"].as_str().unwrap().contains("rsync.service"), "the gate's reason: {report}");
    let st = lab.os_status();
    assert_eq!((st["image_version"].as_str(), st["slot"].as_str()), (Some(v2.as_str()), Some("b")), "{st}");
    assert_eq!(st["rollbacks"][0]["version"], v3.as_str(), "{st}");
    assert_eq!(vm.serial().matches("failed its health gate").count(), 2, "two trial boots:\n{}", vm.tail(80));
    assert_eq!(lab.http("/epel/repodata/repomd.xml").0, "200");
    let (o, report) = lab.apply("v3", &[]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(report["nodes"][0]["result"], "os-held", "the rolled-back image is not offered again: {report}");
    eprintln!("TIME osupdate test: {:.0} s", started.elapsed().as_secs_f64());
}
