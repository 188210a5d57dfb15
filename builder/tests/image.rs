//! Slow tier: real base OS, real images, real QEMU + OVMF boots (TCG here).
//! Needs root, the host tools from scripts/install-deps and the musl on-node binaries.

mod common;
use common::Reaped;

use hostkit::testenv::free_port;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use hostkit::testenv::{LoopPart, Need};

use mmbuild::boottest::qemu::{Vm, VmOptions};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn mmbuild(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_mmbuild")).args(args).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "mmbuild {args:?} failed:\n{stderr}");
    stderr
}

/// Build `nodes` of `fleet` into `out`, the host keys in `state` (every test its own).
fn build(fleet: &Path, out: &Path, state: &Path, nodes: &[&str]) -> String {
    let data = repo();
    let mut args = vec!["build", fleet.to_str().unwrap(), "--out", out.to_str().unwrap(), "--quiet"];
    args.extend(["--state", state.to_str().unwrap(), "--data", data.to_str().unwrap()]);
    for n in nodes {
        args.extend(["--node", n]);
    }
    mmbuild(&args)
}

fn sh(cmd: &str) -> String {
    let out = Command::new("sh").args(["-c", cmd]).output().unwrap();
    assert!(out.status.success(), "{cmd}:\n{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn sha(path: &Path) -> String {
    sh(&format!("sha256sum {}", path.display())).split_whitespace().next().unwrap().to_string()
}

#[test]
#[ignore = "slow: builds the base OS and images"]
fn images_are_clean_reproducible_and_independent_per_node() {
    if hostkit::testenv::need(&[Need::Root, Need::Tool("mmdebstrap")]).is_err() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let fleet = repo().join("examples/fleet.toml");
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    let state = tmp.path().join("state");
    build(&fleet, &a, &state, &["ci", "ziply"]);
    build(&fleet, &b, &state, &["ci", "ziply"]);
    let img = a.join("ci/disk.img");

    // Checksums verify from the output directory; the manifest names every artifact.
    sh(&format!("cd {} && sha256sum -c --quiet SHA256SUMS", a.display()));
    let manifest: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(a.join("manifest.json")).unwrap()).unwrap();
    let arts = manifest["artifacts"].as_array().unwrap();
    // Per node: the disk image (built from the base) plus the kickstart and OEMDRV stick (no base);
    // known_hosts, the base's packages.lock and its OS payload (slot content, both UKIs) for the fleet.
    assert_eq!(arts.len(), 11, "{manifest}");
    for kind in ["os-root", "os-uki-a", "os-uki-b"] {
        assert!(arts.iter().any(|x| x["kind"] == kind && x["node"] == "" && x["base_id"].is_string()), "{kind}: {manifest}");
    }
    assert!(arts.iter().any(|x| x["path"] == "packages.lock" && x["kind"] == "package-lock"), "{manifest}");
    let disks: Vec<&serde_json::Value> = arts.iter().filter(|x| x["kind"] == "disk-image").collect();
    assert_eq!(disks.len(), 2);
    assert!(disks.iter().all(|x| x["base_id"].as_str().is_some_and(|s| s.len() == 64)));
    assert!(arts.iter().all(|x| x["sha256"].as_str().unwrap().len() == 64));

    // Filesystems and partition table are clean, checked by their own tools.
    let v = sh(&format!("sgdisk -v {}", img.display()));
    assert!(v.contains("No problems found"), "{v}");
    let (esp, config, root) = (LoopPart::attach(&img, 1, true), LoopPart::attach(&img, 2, true), LoopPart::attach(&img, 3, true));
    sh(&format!("fsck.vfat -n {}", esp.0));
    sh(&format!("fsck.vfat -n {}", config.0));
    sh(&format!("e2fsck -fn {}", root.0));
    assert_eq!(sh(&format!("blkid -o value -s LABEL {}", config.0)).trim(), "MMCONFIG");
    assert_eq!(sh(&format!("blkid -o value -s LABEL {}", root.0)).trim(), "mmroot");
    // Two root slots by GPT name; slot B ships empty and costs no allocated bytes.
    let names = sh(&format!("sgdisk -p {}", img.display()));
    // Partition rows only: the number, start, end, size (two words), code, name.
    let named: Vec<&str> = names
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|w| w.len() == 7 && w[0].parse::<u32>().is_ok())
        .map(|w| w[6])
        .collect();
    assert_eq!(named, ["ESP", "MMCONFIG", "mmroot-a", "mmroot-b"], "{names}");
    let slot_b = sh(&format!("sgdisk -i 4 {}", img.display()));
    let lba = |key: &str| -> u64 {
        slot_b.lines().find_map(|l| l.strip_prefix(key)).unwrap().split_whitespace().next().unwrap().parse().unwrap()
    };
    let (first, last) = (lba("First sector: "), lba("Last sector: "));
    let f = std::fs::File::open(&img).unwrap();
    let fd = std::os::fd::AsRawFd::as_raw_fd(&f);
    let data = nix::unistd::lseek(fd, (first * 512) as i64, nix::unistd::Whence::SeekData);
    assert!(!matches!(data, Ok(at) if (at as u64) <= last * 512), "slot B holds data at {data:?} ({first}..={last})");
    // The ESP: systemd-boot as the removable-media loader, its configuration, slot A's UKI.
    let esp_files = sh(&format!("mdir -/ -b -i {} ::/", esp.0));
    let version = manifest["image_version"].as_str().unwrap();
    for want in ["::/EFI/BOOT/BOOTX64.EFI", "::/loader/loader.conf", &format!("::/EFI/Linux/micromirror-{version}-a.efi")] {
        assert!(esp_files.lines().any(|l| l.trim() == want), "{want} not on the ESP:\n{esp_files}");
    }
    let loader = sh(&format!("mtype -i {} ::/EFI/BOOT/BOOTX64.EFI | head -c 1000000 | grep -c systemd-boot || true", esp.0));
    assert_ne!(loader.trim(), "0", "the ESP's loader is not systemd-boot");

    // MMCONFIG holds exactly the node's configuration and, beside it, its own host key.
    let listing = sh(&format!("mdir -b -i {} ::/", config.0));
    let mut names: Vec<&str> = listing.lines().map(str::trim).collect();
    names.sort();
    assert_eq!(names, ["::/node.toml", "::/ssh_host_ed25519_key", "::/ssh_host_ed25519_key.pub"], "{listing}");
    let key_on_disk = sh(&format!("mtype -i {} ::/ssh_host_ed25519_key", config.0));
    assert_eq!(key_on_disk.as_bytes(), std::fs::read(state.join("ci/ssh_host_ed25519_key")).unwrap());
    let pub_on_disk = sh(&format!("mtype -i {} ::/ssh_host_ed25519_key.pub", config.0));
    let known_hosts = std::fs::read_to_string(a.join("known_hosts")).unwrap();
    let ci_line = known_hosts.lines().find(|l| l.starts_with("ci.mm.example.net,10.0.2.15,fec0::15 ")).expect("ci in known_hosts");
    assert!(pub_on_disk.starts_with(ci_line.split_once(' ').unwrap().1), "{pub_on_disk} vs {ci_line}");
    // The root filesystem (shared by every node) carries no host key at all.
    let etc_ssh = sh(&format!("debugfs -R 'ls -p /etc/ssh' {} 2>/dev/null", root.0));
    assert!(etc_ssh.contains("/sshd_config/"), "debugfs did not list /etc/ssh:\n{etc_ssh}");
    assert!(!etc_ssh.contains("ssh_host_"), "a host key in the shared root:\n{etc_ssh}");
    // Current: no package of the root is older than what this machine's apt offers from the
    // release's -security and -updates suites; the root's os-release names the manifest's version.
    let status = sh(&format!("debugfs -R 'cat /var/lib/dpkg/status' {} 2>/dev/null", root.0));
    let installed = installed_from_status(&status);
    assert!(installed.len() > 100, "the root's dpkg status lists {} packages", installed.len());
    let behind = behind_apt(&installed);
    for line in &behind {
        eprintln!("behind: {line}");
    }
    assert!(
        behind.is_empty(),
        "{} of {} packages are older than the security/updates suites:\n{}",
        behind.len(),
        installed.len(),
        behind.join("\n")
    );
    let os_release = sh(&format!("debugfs -R 'cat /usr/lib/os-release' {} 2>/dev/null", root.0));
    let version = manifest["image_version"].as_str().expect("manifest.json has image_version");
    assert_eq!(mmconfig::image::from_os_release(&os_release).as_deref(), Some(version), "{os_release}");
    // The node's apt sources: the three suites in deb822, no one-line list beside them.
    let sources = sh(&format!("debugfs -R 'cat /etc/apt/sources.list.d/debian.sources' {} 2>/dev/null", root.0));
    assert!(sources.contains("Suites: bookworm bookworm-updates\n") && sources.contains("Suites: bookworm-security\n"), "{sources}");
    assert!(!sh(&format!("debugfs -R 'ls /etc/apt' {} 2>/dev/null", root.0)).contains("sources.list "), "a one-line sources.list is left");
    // Images hold a private key: owner-only.
    assert_eq!(std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&img).unwrap().permissions()) & 0o777, 0o600);
    let on_disk = sh(&format!("mtype -i {} ::/node.toml", config.0));
    let expected = sh(&format!("{} check --json {}", env!("CARGO_BIN_EXE_mmbuild"), fleet.display()));
    let nodes: Vec<mmconfig::NodeConfig> = serde_json::from_str(&expected).unwrap();
    let ci = nodes.iter().find(|n| n.node.name == "ci").unwrap();
    assert_eq!(mmconfig::NodeConfig::from_toml(&on_disk, "MMCONFIG").unwrap(), *ci);
    assert_eq!(on_disk, ci.to_toml());
    drop((esp, config, root));
    // Another node, another key.
    let ziply_config = LoopPart::attach(&a.join("ziply/disk.img"), 2, true);
    assert_ne!(sh(&format!("mtype -i {} ::/ssh_host_ed25519_key", ziply_config.0)), key_on_disk, "ci and ziply share a host key");
    drop(ziply_config);

    // Sparse, and reproducible byte for byte.
    let meta = std::fs::metadata(&img).unwrap();
    let allocated = std::os::unix::fs::MetadataExt::blocks(&meta) * 512;
    assert!(allocated < meta.len() * 3 / 4, "image not sparse: {allocated} of {}", meta.len());
    for node in ["ci", "ziply"] {
        assert_eq!(sha(&a.join(node).join("disk.img")), sha(&b.join(node).join("disk.img")), "{node}: two builds differ");
    }

    // Changing one node changes only that node's image.
    let changed = tmp.path().join("fleet.toml");
    std::fs::write(&changed, std::fs::read_to_string(&fleet).unwrap().replace("Ziply Fiber", "Ziply Fiber Inc")).unwrap();
    let c = tmp.path().join("c");
    mmbuild(&[
        "build",
        changed.to_str().unwrap(),
        "--out",
        c.to_str().unwrap(),
        "--quiet",
        "--data",
        repo().to_str().unwrap(),
        "--state",
        state.to_str().unwrap(),
        "--node",
        "ci",
        "--node",
        "ziply",
    ]);
    assert_eq!(sha(&a.join("ci/disk.img")), sha(&c.join("ci/disk.img")), "ci changed although only ziply did");
    assert_ne!(sha(&a.join("ziply/disk.img")), sha(&c.join("ziply/disk.img")));
}

fn boot(image: &Path, disks: &[PathBuf], log: &Path, forwards: Vec<(u16, u16)>) -> Vm {
    let mut opts = VmOptions::new(image);
    opts.data_disks = disks.to_vec();
    opts.serial_log = Some(log.to_path_buf());
    opts.forwards = forwards;
    Vm::start(&opts).unwrap()
}

const BOOT_TIMEOUT: Duration = Duration::from_secs(300);

/// `(name, version)` of every installed package of a dpkg status file.
fn installed_from_status(status: &str) -> Vec<(String, String)> {
    status
        .split("\n\n")
        .filter(|para| para.lines().any(|l| l == "Status: install ok installed"))
        .filter_map(|para| {
            let field = |f: &str| para.lines().find_map(|l| l.strip_prefix(f)).map(str::to_string);
            Some((field("Package: ")?, field("Version: ")?))
        })
        .collect()
}

/// The installed packages older than this machine's newest version of them in the release's
/// -security or -updates suite (`apt-cache madison`), as `name installed < newest (suite)`.
fn behind_apt(installed: &[(String, String)]) -> Vec<String> {
    let names: Vec<&str> = installed.iter().map(|(n, _)| n.as_str()).collect();
    let out = Command::new("apt-cache").arg("madison").args(&names).output().unwrap();
    let madison = String::from_utf8_lossy(&out.stdout);
    let newer = |a: &str, b: &str| Command::new("dpkg").args(["--compare-versions", a, "gt", b]).status().unwrap().success();
    let mut behind = Vec::new();
    for (name, have) in installed {
        let mut newest: Option<(String, String)> = None;
        for line in madison.lines() {
            let f: Vec<&str> = line.split('|').map(str::trim).collect();
            let [pkg, version, source] = f.as_slice() else { continue };
            let suite = source.split_whitespace().nth(1).and_then(|s| s.split('/').next()).unwrap_or("");
            if pkg != name || !source.ends_with(" Packages") || !(suite.ends_with("-security") || suite.ends_with("-updates")) {
                continue;
            }
            if newest.as_ref().is_none_or(|(v, _)| newer(version, v)) {
                newest = Some((version.to_string(), suite.to_string()));
            }
        }
        if let Some((v, suite)) = newest.filter(|(v, _)| newer(v, have)) {
            behind.push(format!("{name} {have} < {v} ({suite})"));
        }
    }
    behind
}

#[test]
#[ignore = "slow: boots the example qemu node under QEMU + OVMF"]
fn qemu_node_boots_formats_blank_disk_and_keeps_data_across_reboots() {
    if hostkit::testenv::need(&[Need::Root, Need::Tool("mmdebstrap"), Need::Tool("qemu-system-x86_64")]).is_err() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port("127.0.0.1");
    let (up, daemon) = upstream(tmp.path(), port);
    let out = tmp.path().join("out");
    // The example fleet, plus this host as an admin (QEMU's user network shows it as 10.0.2.2)
    // with a key of ours, so the test can log in over the forwarded ssh port.
    let admin_key = tmp.path().join("admin_key");
    sh(&format!("ssh-keygen -q -t ed25519 -N '' -C test-admin -f {}", admin_key.display()));
    let admin_pub = std::fs::read_to_string(admin_key.with_extension("pub")).unwrap();
    let fleet = tmp.path().join("fleet.toml");
    let text = std::fs::read_to_string(repo().join("examples/fleet.toml")).unwrap();
    let text = text.replacen("admin_ssh_keys = [\n", &format!("admin_ssh_keys = [\n  \"{}\",\n", admin_pub.trim()), 1);
    let text = text.replacen("admin_prefixes = [\"192.0.2.0/24\",", "admin_prefixes = [\"10.0.2.2/32\", \"192.0.2.0/24\",", 1);
    let text = common::upstreams_on(&text, port);
    // 4 MiB/s: a 48 MiB file takes long enough for the test to cut the power halfway.
    let ci_upstream = format!("upstreams = {{ epel = \"rsync://10.0.2.2:{port}/epel/\" }}\n");
    assert!(text.contains(&ci_upstream));
    let text = text.replacen(&ci_upstream, &format!("{ci_upstream}sync_bwlimit_kbps = 4096\n"), 1);
    std::fs::write(&fleet, text).unwrap();
    build(&fleet, &out, &tmp.path().join("state"), &["ci"]);
    let image = tmp.path().join("ci.img");
    sh(&format!("cp --sparse=always {} {}", out.join("ci/disk.img").display(), image.display()));
    let data = tmp.path().join("data.img");
    std::fs::File::create(&data).unwrap().set_len(4 << 30).unwrap();
    let ready = "mm-firstboot: ci.mm.example.net ready";

    // First boot: blank data disk formatted and mounted, configured address, status on console.
    let log1 = tmp.path().join("boot1.log");
    let (ssh_port, metrics_port) = (free_port("127.0.0.1"), free_port("127.0.0.1"));
    let mut vm = boot(&image, std::slice::from_ref(&data), &log1, vec![(ssh_port, 22), (metrics_port, 9100)]);
    let t = vm.wait_for(ready, BOOT_TIMEOUT).unwrap();
    eprintln!("boot 1: QEMU start -> ready marker in {:.1} s ({:?})", t.as_secs_f64(), vm.accel);
    let console = vm.serial();
    assert!(console.contains("vdb (4 GB, serial MMDISK0) is blank: creating the data filesystem"), "{console}");
    assert!(console.contains("address enp0s3 UP 10.0.2.15/24 fec0::15/64"), "{}", vm.tail(30));
    assert!(console.contains("data disk: /dev/vdb1 mounted at /srv/mirror"), "{}", vm.tail(30));
    // Remote hands read this screen: no firmware noise from modules no server needs (cfg80211's
    // regulatory.db came in with batman-adv and the laptop drivers, now refused by the build).
    assert!(!console.contains("firmware: failed to load"), "firmware failures on the console:\n{console}");
    // The units the first boot writes are new to systemd (or shipped unchanged in the image):
    // no daemon-reload, which costs seconds under emulation.
    assert!(!console.contains("reloading systemd"), "the first boot reloaded systemd:\n{console}");

    // The node presents exactly the key the build published: ssh checks it strictly against
    // OUT/known_hosts, and the node has no other host key.
    let ssh = |known_hosts: &Path, command: &str| {
        Command::new("ssh")
            .args(["-F", "/dev/null", "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", "-o", "ConnectTimeout=20"])
            .arg("-o")
            .arg(format!("UserKnownHostsFile={}", known_hosts.display()))
            .args(["-o", "HostKeyAlias=ci.mm.example.net", "-o", "IdentitiesOnly=yes", "-i"])
            .arg(&admin_key)
            .args(["-p", &ssh_port.to_string(), "mmadmin@127.0.0.1", command])
            .output()
            .unwrap()
    };
    let known_hosts = out.join("known_hosts");
    let t = std::time::Instant::now();
    let listing = loop {
        let o = ssh(&known_hosts, "ls /etc/ssh");
        if o.status.success() {
            break String::from_utf8_lossy(&o.stdout).into_owned();
        }
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        assert!(!err.contains("Host key verification failed"), "the node's host key is not the published one: {err}");
        assert!(t.elapsed() < Duration::from_secs(120), "no ssh login: {err}\n{}", vm.tail(40));
        std::thread::sleep(Duration::from_secs(2));
    };
    let host_keys: Vec<&str> = listing.lines().filter(|l| l.starts_with("ssh_host_")).collect();
    assert_eq!(host_keys, ["ssh_host_ed25519_key", "ssh_host_ed25519_key.pub"], "{listing}");
    // Another node's key under ci's name: ssh refuses the node.
    let text = std::fs::read_to_string(&known_hosts).unwrap();
    let key_of = |fqdn: &str| text.lines().find(|l| l.starts_with(fqdn)).unwrap().split_once(' ').unwrap().1.to_string();
    let forged = tmp.path().join("forged_known_hosts");
    std::fs::write(&forged, text.replace(&key_of("ci.mm.example.net,"), &key_of("ziply.mm.example.net,"))).unwrap();
    let o = ssh(&forged, "true");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("Host key verification failed"), "{err}");

    // Monitoring from the inventory: a real Prometheus runs the exported configuration and
    // scrapes the node's node_exporter (the host is an admin source here), which carries
    // mm-sync's textfile metrics once the first sync has landed.
    let scraped =
        prometheus_scrape(&fleet, tmp.path(), metrics_port, "mm_sync_last_success_timestamp_seconds{node=\"ci\",project=\"epel\"}");
    assert!(scraped > 1.0e9, "mm_sync_last_success_timestamp_seconds = {scraped}\n{}", vm.tail(30));

    // Power loss in the middle of a sync. What the node wrote and flushed before (a canary)
    // must survive; the upstream grows by a new package and a large file that the node's
    // bandwidth limit makes take a while, and the power is cut while it is half transferred.
    let run = |command: &str| stdout_of(command, ssh(&known_hosts, command), &vm);
    // What no mirror server uses is not in the image (udev loaded KVM for QEMU's emulated SVM,
    // the kernel's AES and SHA accelerators for the CPU's flags, and probed a PS/2 mouse on every
    // boot); the data filesystem's module loads while udev settles, not at firstboot's first mount.
    let lsmod = run("lsmod");
    let loaded: Vec<&str> = lsmod.lines().filter_map(|l| l.split_whitespace().next()).collect();
    assert!(["xfs", "virtio_net", "crc32c_intel"].iter().all(|m| loaded.contains(m)), "{lsmod}");
    let refused = [
        "kvm",
        "kvm_amd",
        "kvm_intel",
        "psmouse",
        "pcspkr",
        "aesni_intel",
        "ghash_clmulni_intel",
        "sha1_ssse3",
        "sha256_ssse3",
        "sha512_ssse3",
    ];
    for refused in refused {
        assert!(!loaded.contains(&refused), "{refused} is loaded:\n{lsmod}");
    }
    let early = run("sudo journalctl -b -u systemd-modules-load --no-pager");
    assert!(early.contains("Inserted module 'xfs'"), "{early}");
    run("echo 'mirror data that must survive' | sudo tee /srv/mirror/canary.bin >/dev/null && sync");
    let old_repomd = std::fs::read(up.join("repodata/repomd.xml")).unwrap();
    grow_upstream(&up);
    run("sudo systemctl start --no-block mm-sync-epel.service");
    let t = std::time::Instant::now();
    loop {
        // rsync's temporary or its --delay-updates copy of the large file, by size in bytes.
        let sizes = run("sudo find /srv/mirror/epel -name '*zz-big*' -printf '%s\\n'");
        if sizes.lines().filter_map(|l| l.trim().parse::<u64>().ok()).any(|b| b > 4 << 20) {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(180), "the large file never started arriving:\n{}", vm.tail(30));
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(
        run("sudo systemctl is-active mm-sync-epel.service || true").trim() == "activating",
        "the sync finished before the power cut: raise the file size or lower the node's bandwidth limit"
    );
    drop(vm); // power cut (SIGKILL to QEMU): no shutdown, no unmount
    eprintln!("boot 1: power cut {:.1} s into the second sync", t.elapsed().as_secs_f64());

    // Second boot, without its upstream (a sponsor network that blocks outbound rsync looks the
    // same): the console verdict is not ALL GOOD and names the upstream and the port.
    drop(daemon);
    let log2 = tmp.path().join("boot2.log");
    let http_port = free_port("127.0.0.1");
    let mut vm = boot(&image, std::slice::from_ref(&data), &log2, vec![(ssh_port, 22), (http_port, 80)]);
    let upstream_down = format!(
        "mm-firstboot: ci.mm.example.net NEEDS ATTENTION: upstream rsync://10.0.2.2:{port}/epel/ does not answer from this network (outbound TCP {port})"
    );
    vm.wait_for(&upstream_down, BOOT_TIMEOUT).unwrap_or_else(|e| panic!("{e}:\n{}", vm.tail(40)));
    let console = vm.serial();
    assert!(!console.contains("ALL GOOD"), "{}", vm.tail(40));
    assert!(!console.contains("creating the XFS filesystem"), "second boot formatted again:\n{console}");
    assert!(console.contains("storage unchanged") || console.contains("MMDATA found on /dev/vdb1: mounting it"), "{console}");
    let run = |command: &str| stdout_of(command, ssh(&known_hosts, command), &vm);
    // The node replayed the data filesystem's log itself, without errors.
    let xfs = run("sudo dmesg | grep -i xfs || true");
    eprintln!("boot 2 kernel log, XFS:\n{xfs}");
    assert!(xfs.contains("Ending recovery"), "no log recovery after a power cut: was the filesystem clean?\n{xfs}");
    for bad in ["Corruption", "corruption", "Internal error", "Shutting down filesystem", "failed"] {
        assert!(!xfs.contains(bad), "{bad}:\n{xfs}");
    }
    assert_eq!(run("cat /srv/mirror/canary.bin"), "mirror data that must survive\n");
    // The served tree is the last complete one: the old index, nothing of the interrupted sync.
    assert_eq!(curl(&format!("http://127.0.0.1:{http_port}/epel/repodata/repomd.xml")), (200, old_repomd));
    assert_eq!(curl(&format!("http://127.0.0.1:{http_port}/epel/Packages/zz-big.img")).0, 404);
    let listing = String::from_utf8_lossy(&curl(&format!("http://127.0.0.1:{http_port}/epel/Packages/")).1).into_owned();
    assert!(!listing.contains("zz-big") && !listing.contains("later"), "the interrupted sync shows:\n{listing}");

    // The upstream is back: the next sync converges to it and leaves no temporaries behind.
    let _daemon = serve_upstream(tmp.path(), &up, port);
    run("sudo systemctl start --no-block mm-sync-epel.service");
    let new_repomd = std::fs::read(up.join("repodata/repomd.xml")).unwrap();
    let t = std::time::Instant::now();
    while curl(&format!("http://127.0.0.1:{http_port}/epel/repodata/repomd.xml")).1 != new_repomd {
        assert!(t.elapsed() < Duration::from_secs(300), "the sync after the power cut never converged:\n{}", vm.tail(30));
        std::thread::sleep(Duration::from_secs(3));
    }
    eprintln!("boot 2: sync after the power cut converged in {:.1} s", t.elapsed().as_secs_f64());
    assert_eq!(curl(&format!("http://127.0.0.1:{http_port}/epel/Packages/zz-big.img")).0, 200);
    let on_node = run("sha256sum /srv/mirror/epel/Packages/zz-big.img");
    assert_eq!(on_node.split_whitespace().next(), Some(sha(&up.join("Packages/zz-big.img")).as_str()), "zz-big.img differs on the node");
    while run("sudo systemctl is-active mm-sync-epel.service || true").trim() == "activating" {
        assert!(t.elapsed() < Duration::from_secs(400), "the sync never ended:\n{}", vm.tail(30));
        std::thread::sleep(Duration::from_secs(2));
    }
    let status = run("sudo -u mmsync mm-sync --status");
    assert!(status.lines().any(|l| l.starts_with("epel ") && l.contains(" success ")), "{status}");
    assert_eq!(run("sudo find /srv/mirror/epel -name '.~tmp~' -o -name '.*zz-big*'"), "", "temporaries left behind");

    // A clean shutdown; then, from outside, the data filesystem checks clean and holds the canary.
    let _ = ssh(&known_hosts, "sudo systemctl poweroff");
    vm.wait_for("reboot: Power down", Duration::from_secs(180)).unwrap_or_else(|e| panic!("{e}:\n{}", vm.tail(30)));
    drop(vm);
    let mnt = tmp.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let lo = LoopPart::attach(&data, 1, true);
    sh(&format!("xfs_repair -n {}", lo.0));
    sh(&format!("mount -o ro {} {}", lo.0, mnt.display()));
    let canary = std::fs::read(mnt.join("canary.bin"));
    sh(&format!("umount {}", mnt.display()));
    drop(lo);
    assert_eq!(canary.unwrap(), b"mirror data that must survive\n");

    // A fresh node with a disk holding someone else's ext4: reported, left byte-identical.
    let foreign_tree = tmp.path().join("foreign");
    std::fs::create_dir(&foreign_tree).unwrap();
    std::fs::write(foreign_tree.join("family-photos.txt"), b"precious").unwrap();
    let foreign = tmp.path().join("foreign.img");
    sh(&format!("mkfs.ext4 -q -L photos -d {} {} 256M", foreign_tree.display(), foreign.display()));
    let before = sha(&foreign);
    let fresh = tmp.path().join("fresh.img");
    sh(&format!("cp --sparse=always {} {}", out.join("ci/disk.img").display(), fresh.display()));
    let log3 = tmp.path().join("boot3.log");
    let mut vm = boot(&fresh, std::slice::from_ref(&foreign), &log3, vec![]);
    vm.wait_for("mm-firstboot: ci.mm.example.net NEEDS ATTENTION", BOOT_TIMEOUT).unwrap();
    let console = vm.serial();
    assert!(console.contains("holds an ext4 filesystem labelled \"photos\": left untouched"), "{console}");
    assert!(console.contains("add serial \"MMDISK0\" to wipe_disk_serials"), "{console}");
    drop(vm);
    assert_eq!(sha(&foreign), before, "the foreign disk was modified");
}

/// The stdout of a command run on the node over ssh; its stderr and the console's tail if it failed.
fn stdout_of(command: &str, o: std::process::Output, vm: &Vm) -> String {
    assert!(o.status.success(), "{command}: {}\n{}", String::from_utf8_lossy(&o.stderr), vm.tail(30));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Export the fleet's Prometheus configuration, point the `ci` node's node_exporter target at
/// `127.0.0.1:port` (QEMU's forward) with its labels kept, run the real Prometheus on it and
/// return the value of `query` once it has one (panics after four minutes).
fn prometheus_scrape(fleet: &Path, dir: &Path, port: u16, query: &str) -> f64 {
    let export = dir.join("prometheus");
    mmbuild(&["export", "prometheus", fleet.to_str().unwrap(), "--out", export.to_str().unwrap()]);
    let targets: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(export.join("targets/node.json")).unwrap()).unwrap();
    let mut ci: Vec<serde_json::Value> = targets.as_array().unwrap().iter().filter(|g| g["labels"]["node"] == "ci").cloned().collect();
    assert_eq!(ci.len(), 1, "{targets}");
    ci[0]["targets"] = serde_json::json!([format!("127.0.0.1:{port}")]);
    std::fs::write(export.join("targets/node.json"), serde_json::to_string(&ci).unwrap()).unwrap();
    std::fs::write(export.join("targets/blackbox.json"), "[]").unwrap();
    // A test cannot wait a minute between scrapes; an emulated node_exporter needs a few seconds.
    let config = std::fs::read_to_string(export.join("prometheus.yml")).unwrap();
    assert!(config.contains("scrape_interval: 1m\n"), "{config}");
    std::fs::write(export.join("prometheus.yml"), config.replace("scrape_interval: 1m\n", "scrape_interval: 20s\n  scrape_timeout: 20s\n"))
        .unwrap();
    let web = free_port("127.0.0.1");
    let _prometheus = Reaped(
        Command::new("prometheus")
            .arg(format!("--config.file={}", export.join("prometheus.yml").display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("tsdb").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{web}"))
            .stderr(std::fs::File::create(dir.join("prometheus.log")).unwrap())
            .spawn()
            .unwrap(),
    );
    let url = format!("http://127.0.0.1:{web}/api/v1/query?query={}", urlencode(query));
    let t = std::time::Instant::now();
    loop {
        let (code, body) = curl(&url);
        if code == 200 {
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
            if let Some(value) = v["data"]["result"][0]["value"][1].as_str() {
                return value.parse().unwrap();
            }
        }
        if t.elapsed() > Duration::from_secs(240) {
            let targets = curl(&format!("http://127.0.0.1:{web}/api/v1/targets")).1;
            let direct = curl(&format!("http://127.0.0.1:{port}/metrics"));
            let direct = String::from_utf8_lossy(&direct.1).lines().filter(|l| l.starts_with("mm_sync_")).collect::<Vec<_>>().join("\n");
            panic!("Prometheus never saw {query}: {}\ncurl of the node's metrics: {direct}", String::from_utf8_lossy(&targets));
        }
        std::thread::sleep(Duration::from_secs(3));
    }
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| if b.is_ascii_alphanumeric() || b"_-.".contains(&b) { (b as char).to_string() } else { format!("%{b:02X}") })
        .collect()
}

/// `curl` a URL from the host; (HTTP status, body). Status 0 when nothing answered.
fn curl(url: &str) -> (u16, Vec<u8>) {
    let out = Command::new("curl").args(["-s", "--max-time", "10", "-o", "-", "-w", "\n%{http_code}", url]).output().unwrap();
    let mut body = out.stdout;
    let split = body.iter().rposition(|&b| b == b'\n').unwrap_or(0);
    let code = String::from_utf8_lossy(&body[split..]).trim().parse().unwrap_or(0);
    body.truncate(split);
    (code, body)
}

/// The `ci` node's epel upstream: a real rpm repository (and one XML file) served by an rsync
/// daemon on the host (QEMU's 10.0.2.2), so the first sync succeeds and the console verdict,
/// which covers the upstream, can be ALL GOOD.
fn upstream(dir: &Path, port: u16) -> (PathBuf, Reaped) {
    let up = dir.join("upstream");
    let fixture_rpm = repo().join("scripts/fixture-rpm");
    sh(&format!("{} {}/Packages hello 1.0", fixture_rpm.display(), up.display()));
    sh(&format!("{} {}/Packages world 2.0", fixture_rpm.display(), up.display()));
    sh(&format!("createrepo_c --quiet {}", up.display()));
    std::fs::create_dir_all(up.join("docs")).unwrap();
    let xml = b"<?xml version=\"1.0\"?>\n<note><to>mirror</to><body>served as is &amp; untouched</body></note>\n";
    std::fs::write(up.join("docs/note.xml"), xml).unwrap();
    let daemon = serve_upstream(dir, &up, port);
    (up, daemon)
}

/// A new upstream state: one more package, a large file (48 MiB, incompressible) and new repodata.
fn grow_upstream(up: &Path) {
    sh(&format!("{} {}/Packages later 3.0", repo().join("scripts/fixture-rpm").display(), up.display()));
    sh(&format!("head -c 48M /dev/urandom > {}/Packages/zz-big.img", up.display()));
    sh(&format!("createrepo_c --quiet {}", up.display()));
}

/// An rsync daemon serving `up` as module `epel` on the host's `port` (the node reaches it as
/// 10.0.2.2, through QEMU's user network), stopped when dropped.
fn serve_upstream(dir: &Path, up: &Path, port: u16) -> Reaped {
    let conf = dir.join("rsyncd.conf");
    std::fs::write(&conf, format!("use chroot = no\nread only = yes\n[epel]\npath = {}\n", up.display())).unwrap();
    common::rsync_daemon(&conf, port)
}

#[test]
#[ignore = "slow: boots the example qemu node under QEMU + OVMF"]
fn qemu_node_syncs_from_upstream_and_serves_http_and_rsync() {
    if hostkit::testenv::need(&[Need::Root, Need::Tool("mmdebstrap"), Need::Tool("qemu-system-x86_64")]).is_err() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port("127.0.0.1");
    let (up, daemon) = upstream(tmp.path(), port);
    let xml = b"<?xml version=\"1.0\"?>\n<note><to>mirror</to><body>served as is &amp; untouched</body></note>\n";

    let out = tmp.path().join("out");
    let fleet = tmp.path().join("fleet.toml");
    std::fs::write(&fleet, common::upstreams_on(&std::fs::read_to_string(repo().join("examples/fleet.toml")).unwrap(), port)).unwrap();
    build(&fleet, &out, &tmp.path().join("state"), &["ci"]);
    let data = tmp.path().join("data.img");
    std::fs::File::create(&data).unwrap().set_len(4 << 30).unwrap();
    let (http, rsync, metrics, ssh) = (free_port("127.0.0.1"), free_port("127.0.0.1"), free_port("127.0.0.1"), free_port("127.0.0.1"));
    let log = tmp.path().join("serve.log");
    let mut opts = VmOptions::new(out.join("ci/disk.img"));
    opts.snapshot = true;
    opts.data_disks = vec![data];
    opts.serial_log = Some(log);
    opts.forwards = vec![(http, 80), (rsync, 873), (metrics, 9100), (ssh, 22)];
    let mut vm = Vm::start(&opts).unwrap();

    // The sponsor's listing page, as soon as nginx answers.
    let listing_url = format!("http://127.0.0.1:{http}/epel/");
    let first_200 = loop {
        if curl(&listing_url).0 == 200 {
            break vm.started.elapsed();
        }
        assert!(vm.started.elapsed() < BOOT_TIMEOUT, "no HTTP 200 from {listing_url}:\n{}", vm.tail(40));
        std::thread::sleep(Duration::from_secs(2));
    };
    eprintln!("serve: QEMU start -> first HTTP 200 of the sponsor page in {:.1} s ({:?})", first_200.as_secs_f64(), vm.accel);
    vm.wait_for("mm-firstboot: ci.mm.example.net ready - ALL GOOD", BOOT_TIMEOUT).unwrap_or_else(|e| panic!("{e}:\n{}", vm.tail(40)));
    let console = vm.serial();
    assert!(!console.contains("FAILED"), "a unit failed on a node that is ALL GOOD:\n{console}");
    assert!(!console.contains("firmware: failed to load"), "firmware failures on the console:\n{console}");
    // The verdict covers the upstream: reachable over IPv4 (the node's IPv6 has no route to an IPv4 literal).
    let verdict = format!("upstream of epel: rsync://10.0.2.2:{port}/epel/ - IPv4 answers, IPv6 no address");
    assert!(console.contains(&verdict), "{}", vm.tail(40));
    if let Some(secs) = console.lines().find_map(|l| l.split(" change(s) in ").nth(1)) {
        eprintln!("serve: firstboot's own run took {}", secs.trim());
    }
    let (_, page) = curl(&listing_url);
    let page = String::from_utf8_lossy(&page).into_owned();
    assert!(page.contains("hosted by"), "{page}");
    assert!(page.contains("CI \"Labs\" &amp; &lt;Sons&gt; '; rm -rf / #"), "sponsor not escaped as text:\n{page}");
    assert!(!page.contains("<Sons>"), "{page}");
    assert!(page.contains("href=\"https://ci.example/?a=1&amp;b=2\""), "{page}");

    // The first sync runs right after firstboot; then every file is served byte for byte.
    let repomd = std::fs::read(up.join("repodata/repomd.xml")).unwrap();
    let t = std::time::Instant::now();
    loop {
        let (code, body) = curl(&format!("http://127.0.0.1:{http}/epel/repodata/repomd.xml"));
        if code == 200 {
            assert_eq!(body, repomd, "repomd.xml not byte-identical");
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(240), "the first sync never landed:\n{}", vm.tail(40));
        std::thread::sleep(Duration::from_secs(2));
    }
    eprintln!("serve: first sync visible over HTTP {:.1} s after the sponsor page", t.elapsed().as_secs_f64());
    assert_eq!(
        curl(&format!("http://127.0.0.1:{http}/epel/docs/note.xml")),
        (200, xml.to_vec()),
        "XML must not go through the listing XSLT"
    );
    let rpm_name = sh(&format!("ls {}/Packages | head -1", up.display())).trim().to_string();
    let (code, body) = curl(&format!("http://127.0.0.1:{http}/epel/Packages/{rpm_name}"));
    assert_eq!((code, body == std::fs::read(up.join("Packages").join(&rpm_name)).unwrap()), (200, true));
    // The trace file only exists after a successful sync and check.
    let (code, trace) = curl(&format!("http://127.0.0.1:{http}/epel/.mirror-trace/ci.mm.example.net"));
    assert_eq!(code, 200, "no trace after the first sync");
    assert!(String::from_utf8_lossy(&trace).contains("Running on host: ci.mm.example.net"));
    assert_eq!(curl(&format!("http://127.0.0.1:{http}/robots.txt")).0, 200);

    // rsync: the module list, then a file fetched and compared.
    let modules = sh(&format!("rsync rsync://127.0.0.1:{rsync}/"));
    assert!(modules.lines().any(|l| l.starts_with("epel")), "{modules}");
    let fetched = tmp.path().join("fetched.xml");
    sh(&format!("rsync rsync://127.0.0.1:{rsync}/epel/repodata/repomd.xml {}", fetched.display()));
    assert_eq!(std::fs::read(&fetched).unwrap(), repomd);

    // Metrics and ssh are only for the fleet's admin prefixes; the host is not one of them.
    assert!(console.contains("prometheus-node-exporter active"), "node exporter must run for this to mean anything:\n{}", vm.tail(30));
    assert_eq!(
        curl(&format!("http://127.0.0.1:{metrics}/metrics")).0,
        0,
        "port 9100 must be closed to non-admin sources:\n{}",
        vm.tail(60)
    );
    // sshd must be running for the closed port to mean anything.
    assert!(console.contains(" ssh active"), "sshd is not active on the node:\n{}", vm.tail(30));
    let ssh_banner = Command::new("curl").args(["-s", "--max-time", "5", &format!("telnet://127.0.0.1:{ssh}")]).output().unwrap();
    assert!(!String::from_utf8_lossy(&ssh_banner.stdout).contains("SSH-2.0"), "ssh answered a non-admin source");

    drop(vm);
    drop(daemon);
}
