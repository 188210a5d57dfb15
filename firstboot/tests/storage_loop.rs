//! mm-firstboot against real loop devices and a --root tree (needs root): disk states before ->
//! run(s) -> disk states after, and the bytes of pre-existing data never change.

use std::path::PathBuf;
use std::process::{Command, Output};

fn sh(cmd: &str) -> String {
    let out = Command::new("sh").args(["-c", cmd]).output().unwrap();
    assert!(out.status.success(), "{cmd}:\n{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

struct Fixture {
    dir: tempfile::TempDir,
    root: PathBuf,
    config: PathBuf,
    loops: Vec<String>,
}

impl Fixture {
    /// None (the test skips, saying why) where root or loop devices are missing.
    fn new(wipe_serials: &[&str]) -> Option<Fixture> {
        use hostkit::testenv::{need, Need};
        need(&[Need::Root, Need::LoopDevices, Need::Tool("mkfs.xfs"), Need::Tool("sgdisk")]).ok()?;
        let dir = tempfile::tempdir().unwrap();
        let nodes: Vec<mmconfig::NodeConfig> = serde_json::from_str(include_str!("../../tests/fixtures/example-nodes.json")).unwrap();
        let mut ci = nodes.into_iter().find(|n| n.node.name == "ci").unwrap();
        ci.node.wipe_disk_serials = wipe_serials.iter().map(|s| s.to_string()).collect();
        let config = dir.path().join("node.toml");
        std::fs::write(&config, ci.to_toml()).unwrap();
        // The node's own host key travels beside node.toml (without one, sshd could not start).
        sh(&format!("ssh-keygen -q -t ed25519 -N '' -C ci -f {}", dir.path().join(mmconfig::HOST_KEY_FILE).display()));
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::write(root.join("etc/os-release"), "ID=debian\n").unwrap();
        Some(Fixture { dir, root, config, loops: Vec::new() })
    }

    /// A 1 GiB sparse disk prepared by `prep` (a shell snippet given $IMG), as a loop device.
    fn disk(&mut self, name: &str, prep: &str) -> String {
        let img = self.dir.path().join(format!("{name}.img"));
        sh(&format!("truncate -s 1G {}", img.display()));
        if !prep.is_empty() {
            sh(&format!("IMG={} T={}; {prep}", img.display(), self.dir.path().display()));
        }
        let dev = sh(&format!("losetup --show -f -P {}", img.display()));
        self.loops.push(dev.clone());
        dev
    }

    fn run(&self, disks: &[(&str, &str)], fail_at: Option<&str>) -> Output {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_mm-firstboot"));
        cmd.arg("--root").arg(&self.root).arg("--config").arg(&self.config);
        for (dev, serial) in disks {
            cmd.arg("--disk").arg(format!("{dev}:virtio:{serial}"));
        }
        cmd.arg("run");
        if let Some(step) = fail_at {
            cmd.env("MM_FIRSTBOOT_FAIL_AT", step);
        } else {
            cmd.env_remove("MM_FIRSTBOOT_FAIL_AT");
        }
        cmd.output().unwrap()
    }

    /// `mm-firstboot --root --config [--disk ...] ARGS` (run, plan, status, ...).
    fn cli(&self, disks: &[(&str, &str)], args: &[&str]) -> Output {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_mm-firstboot"));
        cmd.arg("--root").arg(&self.root).arg("--config").arg(&self.config).env_remove("MM_FIRSTBOOT_FAIL_AT");
        for (dev, serial) in disks {
            cmd.arg("--disk").arg(format!("{dev}:virtio:{serial}"));
        }
        cmd.args(args).output().unwrap()
    }

    /// [`Fixture::cli`] in a new network and mount namespace with sysfs mounted afresh: the
    /// binary sees no network port (sysfs shows the namespace of whoever mounted it).
    fn cli_without_ports(&self, disks: &[(&str, &str)], args: &[&str]) -> Output {
        let mut cmd = Command::new("unshare");
        cmd.args(["--net", "--mount", "sh", "-c", "mount -t sysfs sysfs /sys && exec \"$@\"", "sh", env!("CARGO_BIN_EXE_mm-firstboot")]);
        cmd.arg("--root").arg(&self.root).arg("--config").arg(&self.config).env_remove("MM_FIRSTBOOT_FAIL_AT");
        for (dev, serial) in disks {
            cmd.arg("--disk").arg(format!("{dev}:virtio:{serial}"));
        }
        cmd.args(args).output().unwrap()
    }

    /// A minimal account database and the units the Debian packages would ship.
    fn debian_tree(&self) {
        let etc = self.root.join("etc");
        std::fs::write(etc.join("passwd"), "root:x:0:0:root:/root:/bin/bash\n").unwrap();
        std::fs::write(etc.join("group"), "root:x:0:\n").unwrap();
        std::fs::write(etc.join("shadow"), "root:*:19000:0:99999:7:::\n").unwrap();
        std::fs::write(etc.join("gshadow"), "root:*::\n").unwrap();
        let units = self.root.join("lib/systemd/system");
        std::fs::create_dir_all(&units).unwrap();
        for u in mm_firstboot::services::Family::Debian.units() {
            std::fs::write(units.join(format!("{u}.service")), "[Service]\nExecStart=/bin/true\n").unwrap();
        }
    }

    fn mountpoint(&self) -> PathBuf {
        self.root.join("srv/mirror")
    }

    fn mounted(&self) -> bool {
        Command::new("mountpoint").arg("-q").arg(self.mountpoint()).status().unwrap().success()
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.mountpoint()).status();
        for l in &self.loops {
            let _ = Command::new("losetup").args(["-d", l]).status();
        }
    }
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn device_sha(dev: &str) -> String {
    sh(&format!("sha256sum {dev}")).split_whitespace().next().unwrap().to_string()
}

#[test]
fn blank_disk_is_formatted_once_and_data_survives_reruns() {
    let Some(mut f) = Fixture::new(&[]) else { return };
    let dev = f.disk("blank", "");
    let out = f.run(&[(&dev, "D1")], None);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("is blank: creating the data filesystem"), "{}", text(&out));
    assert!(f.mounted());
    assert_eq!(sh(&format!("findmnt -n -o FSTYPE,LABEL {}", f.mountpoint().display())), "xfs    MMDATA");
    assert!(f.root.join("etc/systemd/system/srv-mirror.mount").is_file());
    assert!(std::fs::symlink_metadata(f.root.join("etc/systemd/system/local-fs.target.wants/srv-mirror.mount")).is_ok());
    std::fs::write(f.mountpoint().join("file.bin"), vec![7u8; 100_000]).unwrap();

    // Rerun on the converged node: nothing changes, and it says so.
    let out = f.run(&[(&dev, "D1")], None);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("nothing to change, storage unchanged"), "{}", text(&out));

    // After a reboot (unmounted): mounted again, never formatted again.
    sh(&format!("umount {}", f.mountpoint().display()));
    let out = f.run(&[(&dev, "D1")], None);
    assert!(text(&out).contains("MMDATA found on"), "{}", text(&out));
    assert!(!text(&out).contains("creating the XFS"), "{}", text(&out));
    assert_eq!(std::fs::read(f.mountpoint().join("file.bin")).unwrap(), vec![7u8; 100_000]);
    let state = std::fs::read_to_string(f.root.join("var/lib/micromirror/firstboot/state.json")).unwrap();
    assert!(state.contains("\"problems\": []"), "{state}");
}

#[test]
fn services_are_installed_enabled_and_owned_once() {
    let Some(mut f) = Fixture::new(&[]) else { return };
    f.debian_tree();
    let etc = f.root.join("etc");
    let dev = f.disk("blank", "");
    let out = f.run(&[(&dev, "D1")], None);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));

    let passwd = std::fs::read_to_string(etc.join("passwd")).unwrap();
    let line = passwd.lines().find(|l| l.starts_with("mmadmin:")).unwrap_or_else(|| panic!("no mmadmin in {passwd}"));
    let uid: u32 = line.split(':').nth(2).unwrap().parse().unwrap();
    assert!(std::fs::read_to_string(etc.join("shadow")).unwrap().contains("mmadmin:*:"), "password must be '*' (keys only), not locked");
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let keys = f.root.join("home/mmadmin/.ssh/authorized_keys");
    let meta = std::fs::metadata(&keys).unwrap();
    assert_eq!((meta.uid(), meta.permissions().mode() & 0o777), (uid, 0o600));
    assert_eq!(std::fs::metadata(keys.parent().unwrap()).unwrap().permissions().mode() & 0o777, 0o700);
    assert!(std::fs::read_to_string(&keys).unwrap().starts_with("ssh-ed25519 "));

    for link in
        ["multi-user.target.wants/nginx.service", "multi-user.target.wants/nftables.service", "timers.target.wants/mm-sync-epel.timer"]
    {
        let p = f.root.join("etc/systemd/system").join(link);
        let target = std::fs::read_link(&p).unwrap_or_else(|e| panic!("{link} not enabled: {e}"));
        // Absolute, as on the node (like `systemctl enable --root`): resolve it inside the tree.
        assert!(f.root.join(target.strip_prefix("/").unwrap()).is_file(), "{link} dangles");
    }
    assert!(f.mountpoint().join("epel").is_dir(), "the project directory is created on the data filesystem");
    let xslt = std::fs::read_to_string(f.root.join("etc/nginx/micromirror/listing.xslt")).unwrap();
    assert!(xslt.contains("CI &quot;Labs&quot; &amp; &lt;Sons&gt; &apos;; rm -rf / #"), "{xslt}");
    assert!(std::fs::read_to_string(f.root.join("etc/nginx/sites-enabled/default")).unwrap().contains("location ^~ \"/epel/\""));

    let out = f.run(&[(&dev, "D1")], None);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("nothing to change"), "a second run must change nothing:\n{}", text(&out));
    assert_eq!(std::fs::read_to_string(etc.join("passwd")).unwrap().lines().filter(|l| l.starts_with("mmadmin:")).count(), 1);
}

/// Syncs run as the sync account: a fresh node gives it its directories; a node whose trees
/// were synced as root (before this version) hands them over once, and converges after.
#[test]
fn the_sync_account_owns_what_mm_sync_writes_and_takes_over_root_trees_once() {
    use std::os::unix::fs::MetadataExt;
    let Some(mut f) = Fixture::new(&[]) else { return };
    f.debian_tree();
    let dev = f.disk("blank", "");
    let out = f.run(&[(&dev, "D1")], None);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let passwd = std::fs::read_to_string(f.root.join("etc/passwd")).unwrap();
    let line = passwd.lines().find(|l| l.starts_with("mmsync:")).unwrap_or_else(|| panic!("no mmsync in {passwd}"));
    let fields: Vec<&str> = line.split(':').collect();
    let (uid, gid): (u32, u32) = (fields[2].parse().unwrap(), fields[3].parse().unwrap());
    assert!(uid < 1000 && fields[6] == "/usr/sbin/nologin", "a system account without a login shell: {line}");
    assert!(!f.root.join("home/mmsync").exists(), "no home");
    let owner = |p: &std::path::Path| std::fs::symlink_metadata(p).map(|m| (m.uid(), m.gid(), m.mode() & 0o7777)).unwrap();
    let tree = f.mountpoint().join("epel");
    for d in
        [tree.clone(), f.mountpoint().join(".mm"), f.root.join("var/lib/micromirror/sync"), f.root.join("var/lib/prometheus/node-exporter")]
    {
        assert_eq!(owner(&d), (uid, gid, 0o755), "{}", d.display());
    }
    assert_eq!(owner(&f.mountpoint()).0, 0, "the mount point stays root's");

    // What an older version left: a tree, state and lock synced and written as root.
    std::fs::create_dir_all(tree.join("9/x86_64/repodata")).unwrap();
    std::fs::write(tree.join("9/x86_64/repodata/repomd.xml"), "<repomd/>").unwrap();
    std::os::unix::fs::symlink("/etc/shadow", tree.join("9/escape")).unwrap();
    let state = f.root.join("var/lib/micromirror/sync/epel");
    std::fs::create_dir_all(state.join("logs")).unwrap();
    std::fs::write(state.join("lock"), "").unwrap();
    std::fs::write(state.join("status.json"), "{}").unwrap();
    sh(&format!("chown -R 0:0 {} {}", tree.display(), f.root.join("var/lib/micromirror/sync").display()));
    let plan = text(&f.cli(&[(&dev, "D1")], &["plan"]));
    for want in [
        format!("hand {} and everything in it to mmsync", "/srv/mirror/epel"),
        "hand /var/lib/micromirror/sync and everything in it to mmsync".to_string(),
    ] {
        assert!(plan.contains(&want), "{want} not planned:\n{plan}");
    }

    // A sync holding its lock (one still running as root) keeps its tree until the next run.
    let held = std::fs::File::open(state.join("lock")).unwrap();
    let held = nix::fcntl::Flock::lock(held, nix::fcntl::FlockArg::LockExclusiveNonblock).unwrap();
    let out = f.run(&[(&dev, "D1")], None);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(owner(&tree).0, 0, "handed over under a running sync");
    assert_eq!(owner(&state.join("status.json")).0, uid, "the state directory has no such wait");
    drop(held);

    let out = f.run(&[(&dev, "D1")], None);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    for p in ["", "9", "9/x86_64/repodata", "9/x86_64/repodata/repomd.xml", "9/escape"] {
        assert_eq!(owner(&tree.join(p)).0, uid, "{p}");
    }
    assert_eq!(std::fs::metadata("/etc/shadow").unwrap().uid(), 0, "the symlink was followed");
    let out = f.run(&[(&dev, "D1")], None);
    assert!(text(&out).contains("nothing to change"), "a handed-over node converges:\n{}", text(&out));
}

/// (case, disk preparation) -> untouched, reported, exit 3.
#[test]
fn foreign_content_is_left_byte_identical() {
    let cases = [
        ("ext4 with files", "mkdir $T/tree && echo precious > $T/tree/photo.txt && mkfs.ext4 -q -F -d $T/tree $IMG", "an ext4 filesystem"),
        ("foreign partition table", "sgdisk -n 1:0:+100M -t 1:8300 -c 1:backup $IMG >/dev/null", "a gpt partition table with 1 partition"),
        ("unknown bytes", "printf 'not zero' | dd of=$IMG conv=notrunc status=none", "non-zero data in its first or last MiB"),
    ];
    for (case, prep, what) in cases {
        let Some(mut f) = Fixture::new(&[]) else { return };
        let dev = f.disk("foreign", prep);
        let before = device_sha(&dev);
        let out = f.run(&[(&dev, "D1")], None);
        assert_eq!(out.status.code(), Some(3), "case {case}: {}", text(&out));
        assert!(text(&out).contains(what), "case {case}: {}", text(&out));
        assert!(text(&out).contains("left untouched"), "case {case}: {}", text(&out));
        assert!(text(&out).contains("add serial \"D1\" to wipe_disk_serials"), "case {case}: {}", text(&out));
        assert!(!f.mounted(), "case {case}");
        assert_eq!(device_sha(&dev), before, "case {case}: the disk changed");
    }
}

#[test]
fn missing_disk_is_reported_and_nothing_else_is_touched() {
    let Some(mut f) = Fixture::new(&[]) else { return };
    // A disk on another bus: the qemu rule (virtio) does not match it.
    let other = f.disk("usb", "");
    let before = device_sha(&other);
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mm-firstboot"));
    cmd.arg("--root").arg(&f.root).arg("--config").arg(&f.config).arg("--disk").arg(format!("{other}:usb:U1")).arg("run");
    let out = cmd.output().unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(text(&out).contains("no data disk found matching bus=virtio"), "{}", text(&out));
    assert_eq!(device_sha(&other), before);
}

#[test]
fn opted_in_serial_is_wiped_and_used() {
    let Some(mut f) = Fixture::new(&["OLD1"]) else { return };
    let dev = f.disk("old", "mkfs.ext4 -q -F $IMG");
    let out = f.run(&[(&dev, "OLD1")], None);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("wiping"), "{}", text(&out));
    assert!(f.mounted());
}

#[test]
fn a_run_failing_at_any_step_converges_on_rerun() {
    for step in ["partition", "mkfs", "mount"] {
        let Some(mut f) = Fixture::new(&[]) else { return };
        let dev = f.disk("blank", "");
        let out = f.run(&[(&dev, "D1")], Some(step));
        assert_eq!(out.status.code(), Some(3), "step {step}: {}", text(&out));
        assert!(text(&out).contains(&format!("injected failure at step {step}")), "step {step}: {}", text(&out));
        let out = f.run(&[(&dev, "D1")], None);
        assert_eq!(out.status.code(), Some(0), "step {step}: rerun did not converge: {}", text(&out));
        assert!(f.mounted(), "step {step}");
        std::fs::write(f.mountpoint().join("x"), b"kept").unwrap();
        let out = f.run(&[(&dev, "D1")], None);
        assert!(text(&out).contains("nothing to change"), "step {step}: {}", text(&out));
        assert_eq!(std::fs::read(f.mountpoint().join("x")).unwrap(), b"kept");
    }
}

/// `mm-firstboot plan` on the fixture's tree and disk, with `extra` arguments.
fn plan_output(f: &Fixture, dev: &str, extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mm-firstboot"))
        .arg("--root")
        .arg(&f.root)
        .arg("--config")
        .arg(&f.config)
        .arg("--disk")
        .arg(format!("{dev}:virtio:D1"))
        .arg("plan")
        .args(extra)
        .output()
        .unwrap()
}

fn plan_json(f: &Fixture, dev: &str) -> serde_json::Value {
    let out = plan_output(f, dev, &["--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Plan changes nothing, lists exactly what run then changes, and says "nothing to change" on a
/// converged node; a changed installed file shows up with its diff.
#[test]
fn plan_lists_exactly_what_run_changes() {
    let Some(mut f) = Fixture::new(&[]) else { return };
    f.debian_tree();
    let dev = f.disk("blank", "");
    let before = device_sha(&dev);
    let plan = plan_json(&f, &dev);
    let planned: Vec<String> = plan["changes"].as_array().unwrap().iter().map(|c| c["kind"].as_str().unwrap().to_string()).collect();
    for kind in ["write-file", "storage", "create-account", "own-ssh-dir", "create-directory", "enable-unit"] {
        assert!(planned.iter().any(|k| k == kind), "no {kind} in the plan: {planned:?}");
    }
    assert!(plan["changes"].as_array().unwrap().iter().any(|c| c["path"] == "/etc/systemd/network/10-mm-uplink.network"));
    assert_eq!(device_sha(&dev), before, "plan touched the disk");
    assert!(!f.root.join("etc/systemd/network").exists(), "plan wrote a file");

    let text_plan = text(&plan_output(&f, &dev, &[]));
    let planned_lines: Vec<String> = text_plan
        .lines()
        .skip(1)
        .filter(|l| l.starts_with("  ") && !l.starts_with("    ") && !l.starts_with("  storage: "))
        .map(|l| l.trim().to_string())
        .collect();
    let out = f.run(&[(&dev, "D1")], None);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(f.root.join("var/lib/micromirror/firstboot/state.json")).unwrap()).unwrap();
    let changed: Vec<String> = state["changed"].as_array().unwrap().iter().map(|c| c.as_str().unwrap().to_string()).collect();
    assert_eq!(planned_lines, changed, "plan and run disagree");

    let again = plan_json(&f, &dev);
    assert_eq!(again["changes"], serde_json::json!([]), "a converged node must plan nothing: {again}");
    let converged = text(&plan_output(&f, &dev, &[]));
    assert!(converged.ends_with("  nothing to change\n"), "{converged}");

    // Someone edited the installed nginx site (or a new mm-firstboot renders it differently).
    let site = f.root.join("etc/nginx/sites-enabled/default");
    let rendered = std::fs::read_to_string(&site).unwrap();
    std::fs::write(&site, rendered.replace("autoindex on;", "autoindex off;")).unwrap();
    let drift = plan_json(&f, &dev);
    let changes = drift["changes"].as_array().unwrap();
    assert_eq!(changes.len(), 2, "{drift}");
    assert_eq!(changes[0]["path"], "/etc/nginx/sites-enabled/default");
    // nginx alone takes the change, by a reload: connections in flight carry on.
    assert_eq!(
        changes[1],
        serde_json::json!({"kind": "service", "unit": "nginx.service", "verb": "reload", "because": ["/etc/nginx/sites-enabled/default"]})
    );
    let diff = changes[0]["diff"].as_str().unwrap();
    assert!(diff.lines().any(|l| l.starts_with('-') && l.contains("autoindex off;")), "{diff}");
    assert!(diff.lines().any(|l| l.starts_with('+') && l.contains("autoindex on;")), "{diff}");
    let out = f.run(&[(&dev, "D1")], None);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(std::fs::read_to_string(&site).unwrap(), rendered);
}

fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("not JSON ({e}):\n{}", text(out)))
}

fn strings(v: &serde_json::Value) -> Vec<String> {
    v.as_array().unwrap_or_else(|| panic!("not an array: {v}")).iter().map(|x| x.as_str().unwrap().to_string()).collect()
}

/// `plan --json` and `status --json` for machines, with the exit codes --help and README give:
/// 0 all good, 1 configuration, 2 command line, 3 needs hands, 4 the run stopped.
#[test]
fn plan_and_status_speak_json_with_the_documented_exit_codes() {
    let Some(mut f) = Fixture::new(&[]) else { return };
    let dev = f.disk("blank", "");
    let disks = [(dev.as_str(), "D1")];
    let out = f.cli(&disks, &["plan", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let plan = json(&out);
    let steps: Vec<&str> = plan["storage"]["steps"].as_array().unwrap().iter().map(|s| s["step"].as_str().unwrap()).collect();
    assert_eq!(steps, ["partition-whole", "make-fs", "mount"], "{plan}");
    assert!(plan["storage"]["problems"].as_array().unwrap().is_empty(), "{plan}");
    assert!(plan["storage"]["data_disk"].as_str().unwrap().contains("serial D1"), "{plan}");

    // Before any run: the console report asks for attention, exit 3.
    let out = f.cli(&disks, &["status", "--json"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let st = json(&out);
    assert_eq!(st["fqdn"], "ci.mm.example.net");
    assert!(strings(&st["problems"]).contains(&"mm-firstboot has not run yet".to_string()), "{st}");
    let out = f.cli(&disks, &["status"]);
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stdout).contains("NEEDS ATTENTION: "), "{}", text(&out));

    // After a run: storage and the run are no longer problems. Status reads the machine's network
    // ports, so it runs in a network namespace of its own (sysfs mounted there: no port at all);
    // what is left is exactly that, and it needs hands: 3.
    assert_eq!(f.run(&disks, None).status.code(), Some(0));
    let out = f.cli_without_ports(&disks, &["status", "--json"]);
    let st = json(&out);
    assert_eq!(strings(&st["problems"]), ["no network port matches drivers [\"virtio_net\"]: is the network card seated?"], "{st}");
    assert_eq!(out.status.code(), Some(3), "{st}");
    let out = f.cli(&disks, &["plan", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(json(&out)["changes"], serde_json::json!([]), "a converged node plans nothing: {}", text(&out));

    // A disk holding foreign data: plan says why, exit 3.
    let Some(mut g) = Fixture::new(&[]) else { return };
    let foreign = g.disk("foreign", "mkfs.ext4 -q -F $IMG");
    let out = g.cli(&[(foreign.as_str(), "F1")], &["plan", "--json"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let plan = json(&out);
    assert!(plan["storage"]["steps"].as_array().unwrap().is_empty(), "{plan}");
    assert!(plan["storage"]["problems"][0]["message"].as_str().unwrap().contains("add serial \"F1\" to wipe_disk_serials"), "{plan}");

    // The run stops (a file where a directory must be): 4, and the error says where.
    let Some(h) = Fixture::new(&[]) else { return };
    std::fs::write(h.root.join("etc/systemd"), b"").unwrap();
    let out = h.cli(&[("/dev/null", "N1")], &["run"]);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    assert!(text(&out).contains("etc/systemd/network: Not a directory"), "{}", text(&out));
    // No configuration: 1. A wrong command line: 2.
    let out = Command::new(env!("CARGO_BIN_EXE_mm-firstboot"))
        .arg("--root")
        .arg(&h.root)
        .args(["--config", "/nonexistent/node.toml", "plan"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("/nonexistent/node.toml"), "{}", text(&out));
    let out = Command::new(env!("CARGO_BIN_EXE_mm-firstboot")).arg("frobnicate").output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    // --help documents the same codes.
    let help = String::from_utf8(Command::new(env!("CARGO_BIN_EXE_mm-firstboot")).arg("--help").output().unwrap().stdout).unwrap();
    let help = help.split_whitespace().collect::<Vec<_>>().join(" ");
    for code in [
        "0 all good",
        "1 no or invalid configuration",
        "2 wrong command line",
        "3 converged as far as possible",
        "4 the run itself stopped",
    ] {
        assert!(help.contains(code), "--help lacks {code:?}: {help}");
    }
}

/// The single-disk models (wasp, honeybee): the image's GPT holds ESP, MMCONFIG and the root;
/// firstboot adds MMDATA in the free space behind them, and grows it when the disk grows, never
/// touching the OS partitions.
/// `run --json` prints the typed report alone on stdout (progress goes to stderr): what changed,
/// what needs hands, and the outcome `mmbuild apply` reads instead of the human lines.
#[test]
fn run_json_reports_changes_problems_and_outcome() {
    use mmconfig::report::{RunOutcome, RunReport};
    let report = |out: &Output| -> RunReport {
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("stdout is not a run report ({e}):\n{}", text(out)))
    };
    let Some(mut f) = Fixture::new(&[]) else { return };
    let dev = f.disk("blank", "");
    let disks = [(dev.as_str(), "D1")];
    let out = f.cli(&disks, &["run", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let first = report(&out);
    assert_eq!((first.version, first.outcome, first.fqdn.as_str()), (1, RunOutcome::Converged, "ci.mm.example.net"), "{first:?}");
    assert!(first.problems.is_empty(), "{first:?}");
    assert!(first.changes.iter().any(|c| c.contains("/etc/nginx/nginx.conf")), "{first:?}");
    assert_eq!(first.changes.len(), first.changes.iter().collect::<std::collections::BTreeSet<_>>().len(), "{first:?}");
    let again = report(&f.cli(&disks, &["run", "--json"]));
    assert_eq!((again.outcome, again.changes.len()), (RunOutcome::NothingToChange, 0), "{again:?}");

    let Some(mut g) = Fixture::new(&[]) else { return };
    let foreign = g.disk("foreign", "mkfs.ext4 -q -F $IMG");
    let out = g.cli(&[(foreign.as_str(), "F1")], &["run", "--json"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let hands = report(&out);
    assert_eq!(hands.outcome, RunOutcome::NeedsAttention, "{hands:?}");
    assert!(hands.problems.iter().any(|p| p.contains("wipe_disk_serials")), "{hands:?}");
}

#[test]
fn single_disk_gets_a_data_partition_beside_the_os_and_grows_with_the_disk() {
    let Some(mut f) = Fixture::new(&[]) else { return };
    let mut cfg: serde_json::Value =
        serde_json::from_str(&serde_json::to_string(&mmconfig::NodeConfig::load(&f.config).unwrap()).unwrap()).unwrap();
    cfg["hardware"]["storage"]["data"] = serde_json::json!({"on": "boot-disk"});
    let cfg: mmconfig::NodeConfig = serde_json::from_value(cfg).unwrap();
    std::fs::write(&f.config, cfg.to_toml()).unwrap();
    // The layout mmbuild writes, on a 2 GiB disk.
    let dev = f.disk(
        "os",
        "truncate -s 2G $IMG && sgdisk -n 1:1M:+64M -t 1:ef00 -c 1:esp -n 2:0:+8M -t 2:0700 -c 2:MMCONFIG -n 3:0:+256M -t 3:8304 -c 3:root $IMG >/dev/null",
    );
    // The kernel's partition list may lag the table (partx, as probe does); without udev the
    // device nodes are made from sysfs.
    sh(&format!("partx -a {dev} 2>/dev/null || true"));
    let k = dev.trim_start_matches("/dev/");
    for n in 1..=3 {
        sh(&format!("[ -b {dev}p{n} ] || mknod {dev}p{n} b $(tr : ' ' < /sys/block/{k}/{k}p{n}/dev)"));
    }
    sh(&format!("mkfs.vfat -n ESP {dev}p1 >/dev/null && mkfs.vfat -n MMCONFIG {dev}p2 >/dev/null && mkfs.ext4 -q -L mmroot {dev}p3"));
    // The OS partitions' bytes and their table entries (GUIDs, start, end, name).
    let os_sha = || sh(&format!("cat {dev}p1 {dev}p2 {dev}p3 | sha256sum; for n in 1 2 3; do sgdisk -i $n {dev}; done"));
    let before = os_sha();

    let out = f.run(&[(&dev, "B1")], None);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("adding the data partition there"), "{}", text(&out));
    assert!(f.mounted());
    assert_eq!(sh(&format!("blkid -o value -s LABEL {dev}p4")), "MMDATA");
    assert_eq!(sh(&format!("blkid -o value -s TYPE {dev}p4")), "xfs");
    sh(&format!("sgdisk -v {dev} | grep -q 'No problems found'"));
    assert_eq!(os_sha(), before, "the OS partitions changed");
    let size = |m: &PathBuf| sh(&format!("df -B1 --output=size {} | tail -1", m.display())).parse::<u64>().unwrap();
    let first = size(&f.mountpoint());
    assert!(first > 1_500_000_000, "{first}");
    std::fs::write(f.mountpoint().join("kept"), b"mirror data").unwrap();

    // The sponsor's disk turns out bigger (or the image went onto a bigger one): +2 GiB.
    let img = f.dir.path().join("os.img");
    sh(&format!("truncate -s 4G {} && losetup -c {dev}", img.display()));
    let out = f.run(&[(&dev, "B1")], None);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("the disk grew, growing the data filesystem"), "{}", text(&out));
    let grown = size(&f.mountpoint());
    assert!(grown > first + 1_900_000_000, "{first} -> {grown}");
    assert_eq!(std::fs::read(f.mountpoint().join("kept")).unwrap(), b"mirror data");
    assert_eq!(os_sha(), before, "the OS partitions changed while growing");
    sh(&format!("sgdisk -v {dev} | grep -q 'No problems found'"));
    let out = f.run(&[(&dev, "B1")], None);
    assert!(text(&out).contains("nothing to change"), "{}", text(&out));
}

/// A network change adopted with `--confirm-within` whose deadline passed while the node was
/// down (its transient rollback timer died with it) is rolled back by the next boot's `run`,
/// before the configuration is read; a change still inside its window stays adopted.
#[test]
fn an_unconfirmed_network_change_past_its_deadline_rolls_back_at_the_next_run() {
    let Some(mut f) = Fixture::new(&[]) else { return };
    let dev = f.disk("blank", "");
    let disk = format!("{dev}:virtio:D1");
    // The installed configuration (and its host key beside it), as on a running node.
    let etc = f.root.join("etc/micromirror");
    std::fs::create_dir_all(&etc).unwrap();
    for k in [mmconfig::HOST_KEY_FILE.to_string(), format!("{}.pub", mmconfig::HOST_KEY_FILE)] {
        std::fs::copy(f.dir.path().join(&k), etc.join(&k)).unwrap();
    }
    let original = std::fs::read_to_string(&f.config).unwrap();
    std::fs::write(etc.join("node.toml"), &original).unwrap();
    let mut moved: mmconfig::NodeConfig = mmconfig::NodeConfig::from_toml(&original, "test").unwrap();
    moved.node.dns = vec!["192.0.2.53".into()];
    let moved_file = f.dir.path().join("moved.toml");
    std::fs::write(&moved_file, moved.to_toml()).unwrap();
    // Without --config: what a booting node runs.
    let firstboot = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_mm-firstboot"))
            .arg("--root")
            .arg(&f.root)
            .args(["--disk", &disk])
            .args(args)
            .env_remove("MM_FIRSTBOOT_FAIL_AT")
            .output()
            .unwrap()
    };
    let adopt = |within: &str| {
        let out = firstboot(&["install-config", moved_file.to_str().unwrap(), "--confirm-within", within]);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
        assert!(text(&out).contains("network change adopted: confirm before"), "{}", text(&out));
        assert_eq!(std::fs::read_to_string(etc.join("node.toml")).unwrap(), moved.to_toml());
    };
    const EXPIRED: &str = "an unconfirmed network change expired: back to the previous configuration";

    // Inside its window: the boot leaves it adopted (the operator may still confirm).
    adopt("3600");
    let out = firstboot(&["run"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(!text(&out).contains(EXPIRED), "{}", text(&out));
    assert_eq!(std::fs::read_to_string(etc.join("node.toml")).unwrap(), moved.to_toml());
    let out = firstboot(&["confirm"]);
    assert!(text(&out).contains("network change confirmed"), "{}", text(&out));
    std::fs::write(etc.join("node.toml"), &original).unwrap();

    // Past its deadline (0 s: already passed at the next boot): rolled back, then converged on
    // the previous configuration; the run after that has nothing pending.
    adopt("0");
    let out = firstboot(&["run"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains(EXPIRED), "{}", text(&out));
    let now = std::fs::read_to_string(etc.join("node.toml")).unwrap();
    assert!(!now.contains("192.0.2.53") && now == mmconfig::NodeConfig::from_toml(&original, "test").unwrap().to_toml(), "{now}");
    let out = firstboot(&["run"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(!text(&out).contains(EXPIRED), "rolled back twice: {}", text(&out));
}
