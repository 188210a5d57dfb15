//! Least privilege on the node, measured by the real tools: `systemd-analyze security --offline`
//! scores the rendered sync units and firstboot's own, the data filesystem's mount unit keeps
//! nosuid/nodev/noexec, and the push account's sudoers rule starts exactly its project's sync.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{node, run, Tree};
use mmconfig::{METRICS_DIR, PUBLIC_DIR, SYNC_STATE_DIR, SYNC_USER};

/// "OK" in systemd-analyze's words: 4.0 and below.
const MAX_EXPOSURE: f64 = 4.0;

/// `systemd-analyze security --offline=true --root=ROOT UNIT`: the overall exposure (0.0 .. 10.0)
/// and every line it printed.
fn exposure(root: &Path, unit: &str) -> (f64, String) {
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--no-pager"])
        .arg(format!("--root={}", root.display()))
        .arg(unit)
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let line = text
        .lines()
        .find(|l| l.contains("Overall exposure level for"))
        .unwrap_or_else(|| panic!("systemd-analyze security {unit}: no overall exposure:\n{text}"));
    let figure = line.rsplit(':').next().unwrap().split_whitespace().next().unwrap();
    (figure.parse().unwrap_or_else(|_| panic!("{line}")), text)
}

fn sync_units(t: &Tree) -> Vec<(String, String)> {
    t.services
        .files
        .iter()
        .filter(|f| f.path.starts_with("/etc/systemd/system") && f.path.extension().is_some_and(|e| e == "service"))
        .map(|f| (f.path.file_name().unwrap().to_string_lossy().into_owned(), String::from_utf8(f.contents.clone()).unwrap()))
        .filter(|(n, _)| n.starts_with("mm-sync-"))
        .collect()
}

#[test]
fn sync_units_run_as_the_sync_account_at_exposure_ok_or_better() {
    let t = Tree::new(&node("ziply"));
    let bin = t.root.join("usr/bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::copy("/bin/true", bin.join("mm-sync")).unwrap();
    let units = sync_units(&t);
    assert_eq!(units.len(), 3, "one per hosted project");
    for (name, text) in &units {
        let (figure, report) = exposure(&t.root, name);
        println!("{name}: exposure {figure:.1}");
        assert!(figure <= MAX_EXPOSURE, "{name}: exposure {figure} > {MAX_EXPOSURE}:\n{report}");
        // What the score cannot see: whose the run is and where it may write.
        assert!(text.contains(&format!("\nUser={SYNC_USER}\n")) && text.contains(&format!("\nGroup={SYNC_USER}\n")), "{text}");
        let project = name.trim_start_matches("mm-sync-").trim_end_matches(".service");
        let dir = node("ziply").project(project).unwrap().directory.clone();
        let rw = text.lines().find_map(|l| l.strip_prefix("ReadWritePaths=")).unwrap();
        let rw: Vec<&str> = rw.split_whitespace().collect();
        let data = &t.paths.data_root;
        let want = [format!("-{data}/{dir}"), format!("-{data}/{PUBLIC_DIR}"), format!("-{SYNC_STATE_DIR}"), format!("-{METRICS_DIR}")];
        assert_eq!(rw, want, "{name}: writable beyond its tree, state and metrics?");
        for line in ["ProtectSystem=strict", "NoNewPrivileges=yes", "CapabilityBoundingSet=", "SystemCallFilter=@system-service"] {
            assert!(text.lines().any(|l| l == line), "{name}: no {line}");
        }
    }

    // The figure is read, not assumed: the same unit without its hardening scores far worse.
    let (name, text) = &units[0];
    let bare: String = text.lines().take_while(|l| !l.starts_with("# Least privilege")).map(|l| format!("{l}\n")).collect();
    std::fs::write(t.root.join("etc/systemd/system").join(name), bare).unwrap();
    let (figure, _) = exposure(&t.root, name);
    println!("{name} without its sandbox: exposure {figure:.1}");
    assert!(figure > 9.0, "{figure}");
}

/// The traffic collector reads the logs through the adm group of its unit alone, writes only
/// the public and metrics directories and its own state directory, and has no network.
#[test]
fn traffic_unit_reads_logs_by_group_and_writes_only_its_outputs() {
    let t = Tree::new(&node("ziply"));
    let bin = t.root.join("usr/bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::copy("/bin/true", bin.join("mm-sync")).unwrap();
    let name = "mm-traffic.service";
    let f = t.services.files.iter().find(|f| f.path == Path::new("/etc/systemd/system").join(name)).expect("a traffic unit");
    let text = String::from_utf8(f.contents.clone()).unwrap();
    let (figure, report) = exposure(&t.root, name);
    println!("{name}: exposure {figure:.1}");
    assert!(figure <= MAX_EXPOSURE, "{name}: exposure {figure} > {MAX_EXPOSURE}:\n{report}");
    let data = &t.paths.data_root;
    let rw: Vec<&str> = text.lines().find_map(|l| l.strip_prefix("ReadWritePaths=")).unwrap().split_whitespace().collect();
    assert_eq!(rw, [format!("-{data}/{PUBLIC_DIR}"), format!("-{METRICS_DIR}")]);
    let state = mmconfig::TRAFFIC_STATE_DIR.strip_prefix("/var/lib/").unwrap();
    for line in [
        format!("User={SYNC_USER}"),
        "SupplementaryGroups=adm".into(),
        format!("StateDirectory={state}"),
        "StateDirectoryMode=0700".into(),
        "PrivateNetwork=yes".into(),
        "ExecStart=/usr/bin/mm-sync --traffic".into(),
    ] {
        assert!(text.lines().any(|l| l == line), "{name}: no {line}");
    }
    assert!(t.services.enable.contains(&("mm-traffic.timer".into(), "timers.target".into())));
}

/// firstboot keeps root, the devices and the host's mount namespace (it mounts the data disk);
/// what it can give up it does, and the figure is printed for the README.
#[test]
fn firstboot_unit_takes_the_restrictions_that_leave_it_working() {
    let t = Tree::new(&node("ci"));
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let dir = t.root.join("etc/systemd/system");
    std::fs::create_dir_all(&dir).unwrap();
    for u in ["mm-firstboot.service", "mm-firstboot-status.service"] {
        std::fs::copy(repo.join("overlays/rootfs/etc/systemd/system").join(u), dir.join(u)).unwrap();
        let (figure, _) = exposure(&t.root, u);
        println!("{u}: exposure {figure:.1}");
    }
    let text = std::fs::read_to_string(dir.join("mm-firstboot.service")).unwrap();
    for line in ["LockPersonality=yes", "RestrictSUIDSGID=yes", "SystemCallArchitectures=native"] {
        assert!(text.lines().any(|l| l == line), "no {line}");
    }
    // Any of these would put its mount of the data disk in a namespace of its own.
    for ns in
        ["ProtectSystem=", "PrivateTmp=", "PrivateDevices=", "ProtectHome=", "PrivateMounts=", "ReadWritePaths=", "ProtectControlGroups="]
    {
        assert!(!text.lines().any(|l| l.starts_with(ns)), "{ns} would hide firstboot's mount");
    }
}

#[test]
fn the_data_filesystem_mounts_nosuid_nodev_noexec() {
    let unit = mm_firstboot::services::render_mount_unit("0a1b2c3d-0000-4000-8000-000000000001").unwrap();
    let text = String::from_utf8(unit.contents).unwrap();
    let options = text.lines().find_map(|l| l.strip_prefix("Options=")).unwrap();
    for o in ["nosuid", "nodev", "noexec"] {
        assert!(options.split(',').any(|x| x == o), "{o} missing from {options}");
    }
}

/// The push account's sudoers file, checked by visudo, then asked by sudo itself (with the
/// account present in a private copy of the host's account files): it may run exactly
/// `systemctl start --no-block mm-sync-debian.service` and nothing else.
#[test]
fn the_push_account_may_start_its_projects_sync_and_nothing_else() {
    let t = Tree::new(&node("hurricane"));
    let sudoers: PathBuf = t.root.join("etc/sudoers.d/mmpush");
    run(Command::new("visudo").arg("-c").arg("-f").arg(&sudoers));
    let rules: Vec<String> = std::fs::read_to_string(&sudoers)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(String::from)
        .collect();
    assert_eq!(rules, ["mmpush ALL=(root) NOPASSWD: /usr/bin/systemctl start --no-block mm-sync-debian.service"]);
    // `sudo -l -U mmpush CMD` answers whether the rule allows CMD, without running it.
    let passwd = format!("{}mmpush:x:64000:64000::/nonexistent:/usr/sbin/nologin\n", std::fs::read_to_string("/etc/passwd").unwrap());
    let group = format!("{}mmpush:x:64000:\n", std::fs::read_to_string("/etc/group").unwrap());
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("passwd"), passwd).unwrap();
    std::fs::write(dir.path().join("group"), group).unwrap();
    std::fs::write(dir.path().join("sudoers"), format!("Defaults !syslog\nroot ALL=(ALL) ALL\n{}\n", rules[0])).unwrap();
    let allowed = |cmd: &str| {
        let script = format!(
            "mount --bind {d}/passwd /etc/passwd && mount --bind {d}/group /etc/group && chmod 0440 {d}/sudoers && \
             mount --bind {d}/sudoers /etc/sudoers && sudo -l -U mmpush {cmd}",
            d = dir.path().display()
        );
        Command::new("unshare").args(["-m", "sh", "-c", &script]).output().unwrap().status.success()
    };
    assert!(allowed("/usr/bin/systemctl start --no-block mm-sync-debian.service"));
    for other in [
        "/usr/bin/systemctl start --no-block mm-sync-ubuntu.service",
        "/usr/bin/systemctl stop mm-sync-debian.service",
        "/usr/bin/systemctl start --no-block mm-sync-debian.service nginx.service",
        "/usr/bin/systemctl start mm-sync-debian.service",
        "/bin/sh",
    ] {
        assert!(!allowed(other), "mmpush may run {other}");
    }
}

/// `scripts/bench`: handing a tree synced as root to the sync account, 100,000 files in 1,100
/// directories, once (every entry changes owner) and again (only looked at). Ignored by default.
#[test]
#[ignore]
fn bench_hand_over() {
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    for a in 0..100 {
        for b in 0..10 {
            let d = tree.join(format!("{a}/{b}"));
            std::fs::create_dir_all(&d).unwrap();
            for f in 0..100 {
                std::fs::write(d.join(format!("f{f}")), b"").unwrap();
            }
        }
    }
    run(&mut Command::new("sync"));
    let timed = || {
        let started = std::time::Instant::now();
        let n = mm_firstboot::accounts::hand_over(&tree, 64000, 64000, true).unwrap();
        (n, started.elapsed().as_secs_f64())
    };
    let (n, first) = timed();
    assert_eq!(n, 101_101);
    let (again, second) = timed();
    assert_eq!(again, 0);
    println!("BENCH hand-over-100k {first:.2}");
    println!("BENCH hand-over-100k-again {second:.2}");
}
