//! mm-sync against a real rsync daemon on loopback serving real fixture repositories (an apt
//! archive made by dpkg-deb + apt-ftparchive, an rpm repository made by rpmbuild + createrepo_c).
//! Needs the packages from scripts/install-deps; the space test mounts a tmpfs (root). The daemon
//! and mm-sync run in a private network namespace per test: port 873 is the test's own.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

use hostkit::netns::Netns;
use mmconfig::{CheckKind, NodeConfig, SyncMethod};

fn sh(cmd: &str) -> String {
    let out = Command::new("bash").args(["-euc", cmd]).output().unwrap();
    assert!(out.status.success(), "{cmd}:\n{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

struct Daemon(Child);
impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A fixture world: upstream trees served by rsyncd, a node root, a node config.
struct World {
    dir: tempfile::TempDir,
    port: u16,
    daemon: Option<Daemon>,
    config: PathBuf,
    // Dropped last: the daemon is stopped before its namespace goes.
    ns: Netns,
}

impl World {
    fn new() -> World {
        let dir = tempfile::tempdir().unwrap();
        let port = 873;
        for d in ["up/rpm", "up/apt", "root"] {
            std::fs::create_dir_all(dir.path().join(d)).unwrap();
        }
        std::fs::write(
            dir.path().join("rsyncd.conf"),
            format!("use chroot = no\nread only = yes\n[epel]\npath = {0}/up/rpm\n[debian]\npath = {0}/up/apt\n", dir.path().display()),
        )
        .unwrap();
        let mut w = World { config: dir.path().join("node.toml"), dir, port, daemon: None, ns: Netns::new() };
        w.start_daemon();
        w.write_config(|_| {});
        w
    }

    fn start_daemon(&mut self) {
        let child = self
            .ns
            .cmd("rsync")
            .args(["--daemon", "--no-detach", "--address=127.0.0.1", &format!("--port={}", self.port)])
            .arg(format!("--config={}", self.dir.path().join("rsyncd.conf").display()))
            .arg(format!("--log-file={}", self.dir.path().join("rsyncd.log").display()))
            .spawn()
            .unwrap();
        self.daemon = Some(Daemon(child));
        self.ns.wait_port(self.port);
    }

    fn up(&self, kind: &str) -> PathBuf {
        self.dir.path().join("up").join(kind)
    }
    fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }
    fn tree(&self, project: &str) -> PathBuf {
        self.root().join("srv/mirror").join(project)
    }

    /// The example `ci` node hosting an rpm project (epel) and an apt project (debian, two-stage).
    fn write_config(&self, edit: impl Fn(&mut NodeConfig)) {
        let nodes: Vec<NodeConfig> = serde_json::from_str(include_str!("../../tests/fixtures/example-nodes.json")).unwrap();
        let mut cfg = nodes.into_iter().find(|n| n.node.name == "ci").unwrap();
        let ziply = serde_json::from_str::<Vec<NodeConfig>>(include_str!("../../tests/fixtures/example-nodes.json")).unwrap();
        let debian = ziply.iter().flat_map(|n| n.projects.iter()).find(|p| p.name == "debian").expect("a node hosts debian").clone();
        cfg.projects.push(debian);
        for p in &mut cfg.projects {
            p.sync.upstream = format!("rsync://127.0.0.1:{}/{}/", self.port, p.name);
            p.size_gb = 1;
        }
        edit(&mut cfg);
        std::fs::write(&self.config, cfg.to_toml()).unwrap();
    }

    /// mm-sync inside the test's namespace.
    fn mm_sync_cmd(&self) -> Command {
        self.ns.cmd(env!("CARGO_BIN_EXE_mm-sync"))
    }

    fn mm_sync(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut cmd = self.mm_sync_cmd();
        cmd.arg("--config").arg(&self.config).arg("--root").arg(self.root()).args(args);
        cmd.env_remove("MM_SYNC_BETWEEN_STAGES");
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.output().unwrap()
    }

    fn status(&self, project: &str) -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(self.root().join(format!("var/lib/micromirror/sync/{project}/status.json"))).unwrap())
            .unwrap()
    }

    fn trace(&self, project: &str, dir: &str) -> PathBuf {
        self.tree(project).join(dir).join("ci.mm.example.net")
    }
}

/// A tiny real noarch rpm `name-version-1` in `dest`.
fn rpm(dest: &Path, name: &str, version: &str) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/fixture-rpm");
    sh(&format!("{} {} {name} {version}", script.display(), dest.display()));
}

/// The upstream rpm repository: one package and a `bytes`-long random file, indexed.
fn rpm_repo_with_big_file(w: &World, bytes: u64) {
    let up = w.up("rpm");
    rpm(&up.join("Packages"), "alpha", "1.0");
    sh(&format!("head -c {bytes} /dev/urandom > {}/Packages/big.iso", up.display()));
    createrepo(&up);
}

fn createrepo(repo: &Path) {
    sh(&format!("createrepo_c --quiet --general-compress-type=gz {}", repo.display()));
}

/// A tiny .deb `name_version_all.deb` in the pool.
fn deb(archive: &Path, name: &str, version: &str) {
    let pkg = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(pkg.path().join("DEBIAN")).unwrap();
    std::fs::write(
        pkg.path().join("DEBIAN/control"),
        format!("Package: {name}\nVersion: {version}\nArchitecture: all\nMaintainer: t <t@example.org>\nDescription: fixture\n"),
    )
    .unwrap();
    let pool = archive.join(format!("pool/main/{}/{name}", &name[..1]));
    std::fs::create_dir_all(&pool).unwrap();
    sh(&format!(
        "dpkg-deb --root-owner-group -Zgzip --build {} {}/{name}_{version}_all.deb >/dev/null",
        pkg.path().display(),
        pool.display()
    ));
}

/// Packages(.gz) and Release for dists/stable from the pool, as a real archive has them.
fn apt_index(archive: &Path) {
    sh(&format!(
        "cd {0} && mkdir -p dists/stable/main/binary-amd64 && apt-ftparchive packages pool > dists/stable/main/binary-amd64/Packages \
         && gzip -9nkf dists/stable/main/binary-amd64/Packages \
         && rm -f dists/stable/Release && apt-ftparchive -o APT::FTPArchive::Release::Suite=stable release dists/stable > .Release.tmp && mv .Release.tmp dists/stable/Release",
        archive.display()
    ));
}

/// rsync's quick check compares whole-second mtimes and sizes: an index regenerated within the
/// same second at the same size would look unchanged, which real upstreams never produce.
fn next_second() {
    std::thread::sleep(Duration::from_millis(1100));
}

/// Polls `done` every 20 ms until it holds; fails the test after `secs` seconds.
fn wait_until(what: &str, secs: u64, mut done: impl FnMut() -> bool) {
    let t = Instant::now();
    while !done() {
        assert!(t.elapsed() < Duration::from_secs(secs), "gave up waiting after {secs} s for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Bytes rsync has written so far into its temporary `.<name>.XXXXXX` in `dir` (0 if none yet).
fn in_flight(dir: &Path, name: &str) -> u64 {
    let prefix = format!(".{name}.");
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .max()
        .unwrap_or(0)
}

fn files(dir: &Path) -> Vec<String> {
    let out = sh(&format!("cd {} && find . -type f ! -path './.mirror-trace/*' ! -path './project/trace/*' | sort", dir.display()));
    out.lines().map(String::from).collect()
}

#[test]
fn single_stage_first_sync_update_delete_exclude_and_check() {
    let w = World::new();
    // A contact the fleet validator accepts and that is hostile to any format: it reaches the
    // trace file as one line of text.
    let contact = "o\"hara'<ops>&$HOME\\l%n@example.net";
    w.write_config(|c| c.fleet.contact = contact.into());
    let up = w.up("rpm");
    rpm(&up.join("Packages"), "alpha", "1.0");
    rpm(&up.join("Packages"), "beta", "1.0");
    rpm(&up.join("SRPMS"), "alpha-src", "1.0"); // excluded by the epel profile
    createrepo(&up);

    let out = w.mm_sync(&["epel"], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let tree = w.tree("epel");
    assert!(!tree.join("SRPMS").exists(), "excluded directory was synced");
    assert_eq!(files(&tree), files(&up).into_iter().filter(|f| !f.starts_with("./SRPMS")).collect::<Vec<_>>());
    let trace = std::fs::read_to_string(w.trace("epel", ".mirror-trace")).unwrap();
    assert!(trace.contains("Running on host: ci.mm.example.net"), "{trace}");
    assert!(trace.lines().any(|l| l == format!("Maintainer: {contact}")), "{trace}");
    let st = w.status("epel");
    assert_eq!(st["result"], "success");
    assert!(st["files_transferred"].as_u64().unwrap() >= 4, "{st}");
    let metrics = std::fs::read_to_string(w.root().join("var/lib/prometheus/node-exporter/mm_sync_epel.prom")).unwrap();
    assert!(metrics.contains("mm_sync_last_run_success{project=\"epel\"} 1"), "{metrics}");
    let logs = std::fs::read_dir(w.root().join("var/lib/micromirror/sync/epel/logs")).unwrap().count();
    assert_eq!(logs, 1);

    // Update: one package replaced, one removed; a stale local file in an excluded path goes too.
    next_second();
    std::fs::remove_dir_all(up.join("Packages")).unwrap();
    rpm(&up.join("Packages"), "alpha", "2.0");
    createrepo(&up);
    std::fs::create_dir_all(tree.join("debug")).unwrap();
    std::fs::write(tree.join("debug/old.rpm"), b"x").unwrap();
    let out = w.mm_sync(&["epel"], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let now = files(&tree);
    assert!(now.iter().any(|f| f.contains("alpha-2.0")), "{now:?}");
    assert!(!now.iter().any(|f| f.contains("beta") || f.contains("alpha-1.0")), "deleted upstream but kept: {now:?}");
    assert!(!tree.join("debug/old.rpm").exists(), "--delete-excluded must remove excluded local files");
    assert!(w.trace("epel", ".mirror-trace").exists(), "our trace must survive the upstream's deletes");

    let out = w.mm_sync(&["--check", "epel"], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("0 problem(s)"), "{}", text(&out));

    // A broken tree: one package truncated, repodata file missing.
    let pkg = sh(&format!("ls {}/Packages/*.rpm | head -1", tree.display()));
    std::fs::write(&pkg, b"short").unwrap();
    let filelists = sh(&format!("ls {}/repodata/*filelists.xml.gz", tree.display()));
    std::fs::remove_file(&filelists).unwrap();
    let out = w.mm_sync(&["--check", "epel"], &[]);
    assert_eq!(out.status.code(), Some(5), "{}", text(&out));
    assert!(text(&out).contains("is 5 bytes, the index says"), "{}", text(&out));
    assert!(text(&out).contains(&format!("missing {filelists}")), "{}", text(&out));
    assert!(text(&out).contains("2 problem(s)"), "{}", text(&out));
}

#[test]
fn two_stage_never_exposes_an_index_pointing_at_a_missing_file() {
    let w = World::new();
    let up = w.up("apt");
    deb(&up, "alpha", "1");
    apt_index(&up);
    let out = w.mm_sync(&["debian"], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    // ftpsync's trace: `date -u` first (Debian's checkers reject anything else there), and the
    // architectures the synced indexes carry.
    let trace = std::fs::read_to_string(w.trace("debian", "project/trace")).unwrap();
    let first = trace.lines().next().unwrap_or_default();
    assert!(first.split_whitespace().nth(4) == Some("UTC") && mmconfig::marker::parse_date(first).is_some(), "{trace}");
    assert!(trace.lines().any(|l| l == "Architectures: amd64"), "{trace}");

    // Upstream moves on: alpha 1 -> 2. Between our two stages it moves again (beta appears).
    next_second();
    std::fs::remove_dir_all(up.join("pool")).unwrap();
    deb(&up, "alpha", "2");
    apt_index(&up);
    let snap = w.dir.path().join("between");
    let staging = w.dir.path().join("staging");
    deb(&staging, "beta", "1");
    // Between the stages: record what a client would see now, then change the upstream.
    let script = w.dir.path().join("between-stages.sh");
    std::fs::write(
        &script,
        format!(
            "{bin} --config {cfg} --root {root} --check debian > {snap}.check 2>&1; echo $? > {snap}.code\n\
             cp {tree}/dists/stable/main/binary-amd64/Packages {snap}.packages\n\
             cp -r {staging}/pool/main/b {up}/pool/main/\n\
             cd {up} && apt-ftparchive packages pool > dists/stable/main/binary-amd64/Packages && gzip -9nkf dists/stable/main/binary-amd64/Packages\n\
             rm -f dists/stable/Release; apt-ftparchive -o APT::FTPArchive::Release::Suite=stable release dists/stable > .Release.tmp && mv .Release.tmp dists/stable/Release\n",
            bin = env!("CARGO_BIN_EXE_mm-sync"),
            cfg = w.config.display(),
            root = w.root().display(),
            snap = snap.display(),
            tree = w.tree("debian").display(),
            staging = staging.display(),
            up = up.display(),
        ),
    )
    .unwrap();
    let hook = format!("bash -e {}", script.display());
    let out = w.mm_sync(&["debian"], &[("MM_SYNC_BETWEEN_STAGES", &hook)]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));

    // After stage 1: the old index is still in place and every file it names is still there.
    assert_eq!(
        std::fs::read_to_string(format!("{}.code", snap.display())).unwrap().trim(),
        "0",
        "{}",
        std::fs::read_to_string(format!("{}.check", snap.display())).unwrap()
    );
    let between = std::fs::read_to_string(format!("{}.packages", snap.display())).unwrap();
    assert!(between.contains("alpha_1_all.deb"), "stage 1 must not replace the index: {between}");
    assert!(std::fs::read_to_string(format!("{}.check", snap.display())).unwrap().contains("0 problem(s)"));

    // After stage 2: the newest index, its files present, the old package deleted.
    let tree = w.tree("debian");
    let packages = std::fs::read_to_string(tree.join("dists/stable/main/binary-amd64/Packages")).unwrap();
    assert!(packages.contains("beta_1_all.deb") && packages.contains("alpha_2_all.deb"), "{packages}");
    assert!(tree.join("pool/main/b/beta/beta_1_all.deb").exists());
    assert!(!tree.join("pool/main/a/alpha/alpha_1_all.deb").exists(), "deletes happen in stage 2");
    let out = w.mm_sync(&["--check", "debian"], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("0 problem(s)") && !text(&out).contains(" 0 file(s) checked"), "{}", text(&out));
}

#[test]
fn keep_logs_prunes_run_logs_older_than_its_days() {
    let w = World::new();
    let up = w.up("rpm");
    rpm(&up.join("Packages"), "alpha", "1.0");
    createrepo(&up);
    let logs = w.root().join("var/lib/micromirror/sync/epel/logs");
    std::fs::create_dir_all(&logs).unwrap();
    for (name, age) in [("1.log", "20 days ago"), ("2.log", "5 days ago")] {
        std::fs::write(logs.join(name), "an earlier run").unwrap();
        sh(&format!("touch -d '{age}' {}", logs.join(name).display()));
    }
    let names = || {
        let mut v: Vec<String> = std::fs::read_dir(&logs).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        v.sort();
        v
    };
    // The default keeps 14 days: only the 20-day-old log goes, beside this run's own.
    let out = w.mm_sync(&["epel"], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let after = names();
    assert!(!after.contains(&"1.log".to_string()) && after.contains(&"2.log".to_string()) && after.len() == 2, "{after:?}");
    // --keep-logs 1: the 5-day-old one goes too; the run's own log (written now) stays.
    next_second();
    let out = w.mm_sync(&["--keep-logs", "1", "epel"], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let last = names();
    assert!(!last.contains(&"2.log".to_string()) && last.len() == 2 && last.iter().all(|n| n.len() > 6), "{last:?}");
}

#[test]
fn a_second_run_is_refused_while_the_lock_is_held() {
    let w = World::new();
    rpm(&w.up("rpm").join("Packages"), "alpha", "1.0");
    createrepo(&w.up("rpm"));
    let lock_dir = w.root().join("var/lib/micromirror/sync/epel");
    std::fs::create_dir_all(&lock_dir).unwrap();
    let lock = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(lock_dir.join("lock")).unwrap();
    let held = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusiveNonblock).unwrap();
    let out = w.mm_sync(&["epel"], &[]);
    assert_eq!(out.status.code(), Some(10), "{}", text(&out));
    assert!(text(&out).contains("another mm-sync run holds the lock"), "{}", text(&out));
    assert!(!w.tree("epel").join("repodata").exists(), "the refused run must not sync");
    drop(held);
    let out = w.mm_sync(&["epel"], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    // Nothing changed upstream: the tree is the one the last clean check saw.
    std::thread::sleep(Duration::from_millis(1100)); // a new log file name (start second)
    assert_eq!(w.mm_sync(&["epel"], &[]).status.code(), Some(0));
    let log = std::fs::read_to_string(w.status("epel")["log"].as_str().unwrap()).unwrap();
    assert!(log.contains("check: skipped, nothing changed since the last clean check"), "{log}");
}

#[test]
fn upstream_dying_mid_run_leaves_the_previous_tree_and_trace() {
    let mut w = World::new();
    let up = w.up("rpm");
    rpm(&up.join("Packages"), "alpha", "1.0");
    std::fs::write(up.join("Packages/a-notes.txt"), b"first notes\n").unwrap();
    createrepo(&up);
    assert_eq!(w.mm_sync(&["epel"], &[]).status.code(), Some(0));
    let tree = w.tree("epel");
    let before = sh(&format!("cd {} && find . -type f | sort | xargs sha256sum", tree.display()));
    let trace_before = std::fs::read(w.trace("epel", ".mirror-trace")).unwrap();
    let success_before = w.status("epel")["last_success_unix"].clone();

    // Upstream changes a file that sorts before a new 20 MB one, pulled at 2 MB/s: the changed
    // file is complete before the big one starts, so without --delay-updates it would already be
    // in the served tree when the daemon dies.
    next_second();
    std::fs::write(up.join("Packages/a-notes.txt"), b"second notes, longer\n").unwrap();
    sh(&format!("head -c 20000000 /dev/urandom > {}/Packages/big.iso", up.display()));
    rpm(&up.join("Packages"), "gamma", "1.0");
    createrepo(&up);
    let mut cmd = w.mm_sync_cmd();
    cmd.arg("--config").arg(&w.config).arg("--root").arg(w.root()).args(["--bwlimit", "2000", "--timeout", "5", "epel"]);
    let child = std::thread::spawn(move || cmd.output().unwrap());
    // The kill lands mid-transfer: part of big.iso has arrived, not all of it.
    wait_until("rsync to be inside big.iso", 60, || in_flight(&tree.join("Packages"), "big.iso") > 1_000_000);
    // SIGKILL the daemon and the child serving us: the upstream vanishes mid-transfer.
    let pid = w.daemon.as_ref().unwrap().0.id();
    sh(&format!("pkill -KILL -P {pid}; kill -KILL {pid}"));
    w.daemon = None;
    let out = child.join().unwrap();
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));

    let after = sh(&format!("cd {} && find . -type f ! -path '*/.~tmp~/*' ! -name '.*.??????' | sort | xargs sha256sum", tree.display()));
    assert_eq!(after, before, "the served tree changed after a failed run");
    assert_eq!(std::fs::read(tree.join("Packages/a-notes.txt")).unwrap(), b"first notes\n", "an update went live before the run completed");
    assert_eq!(std::fs::read(w.trace("epel", ".mirror-trace")).unwrap(), trace_before, "trace rewritten after a failed run");
    let st = w.status("epel");
    assert_eq!(st["result"], "failed", "{st}");
    assert_eq!(st["last_success_unix"], success_before);
    assert!(st["message"].as_str().unwrap().contains("rsync stage 1 exited"), "{st}");
    let metrics = std::fs::read_to_string(w.root().join("var/lib/prometheus/node-exporter/mm_sync_epel.prom")).unwrap();
    assert!(metrics.contains("mm_sync_last_run_success{project=\"epel\"} 0"), "{metrics}");

    // Upstream back: the next run converges and leaves no temporary files.
    w.start_daemon();
    let out = w.mm_sync(&["epel"], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(tree.join("Packages/big.iso").exists());
    assert_eq!(sh(&format!("cd {} && find . -name '.~tmp~' -o -name '.*.??????' | wc -l", tree.display())), "0");
    assert_eq!(w.mm_sync(&["--check", "epel"], &[]).status.code(), Some(0));
}

/// A closed port at the upstream (a sponsor's firewall at turn-up) fails the run as a run, with
/// rsync's own status kept, but exits 11, which the unit counts as no failure of its own; an
/// upstream that answers with an unknown module is a failure of the unit (4).
#[test]
fn an_upstream_that_does_not_answer_fails_the_run_but_not_the_unit() {
    let mut w = World::new();
    w.daemon = None;
    let out = w.mm_sync(&["epel"], &[]);
    assert_eq!(out.status.code(), Some(11), "{}", text(&out));
    let st = w.status("epel");
    assert_eq!((st["result"].as_str(), st["rsync_exit"].as_i64()), (Some("failed"), Some(10)), "{st}");
    let metrics = std::fs::read_to_string(w.root().join("var/lib/prometheus/node-exporter/mm_sync_epel.prom")).unwrap();
    assert!(metrics.contains("mm_sync_last_run_success{project=\"epel\"} 0"), "{metrics}");

    w.start_daemon();
    w.write_config(|cfg| cfg.projects[0].sync.upstream = format!("rsync://127.0.0.1:{}/nosuch/", w.port));
    let out = w.mm_sync(&["epel"], &[]);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    assert_eq!(w.status("epel")["rsync_exit"].as_i64(), Some(5), "{}", w.status("epel"));
}

#[test]
fn a_killed_run_is_found_and_its_temporaries_cleaned() {
    let w = World::new();
    rpm_repo_with_big_file(&w, 20_000_000);
    // SIGKILL mm-sync and its rsync together (a power cut, or systemd killing the cgroup).
    let mut child = {
        use std::os::unix::process::CommandExt;
        w.mm_sync_cmd()
            .arg("--config")
            .arg(&w.config)
            .arg("--root")
            .arg(w.root())
            .args(["--bwlimit", "2000", "epel"])
            .process_group(0)
            .spawn()
            .unwrap()
    };
    let packages = w.tree("epel").join("Packages");
    wait_until("rsync to be inside big.iso", 60, || in_flight(&packages, "big.iso") > 1_000_000);
    sh(&format!("kill -KILL -- -{}", child.id()));
    let _ = child.wait();
    assert_eq!(w.status("epel")["result"], "running", "a killed run must be recognisable");
    let temps = |tree: &Path| sh(&format!("cd {} && find . -name '.~tmp~' -o -name '.*.??????' | wc -l", tree.display()));
    assert_ne!(temps(&w.tree("epel")), "0", "the kill should have left rsync temporaries behind");

    let out = w.mm_sync(&["epel"], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("the previous run was interrupted; removed"), "{}", text(&out));
    assert_eq!(temps(&w.tree("epel")), "0");
    assert_eq!(w.status("epel")["result"], "success");
}

#[test]
fn a_sync_that_cannot_fit_is_refused_before_it_starts() {
    let w = World::new();
    rpm_repo_with_big_file(&w, 6_000_000);
    let mnt = w.root().join("srv/mirror");
    std::fs::create_dir_all(&mnt).unwrap();
    sh(&format!("mount -t tmpfs -o size=4m mm-sync-test {}", mnt.display()));
    let out = w.mm_sync(&["epel"], &[]);
    let _ = Command::new("umount").arg(&mnt).status();
    assert_eq!(out.status.code(), Some(6), "{}", text(&out));
    assert!(text(&out).contains("not enough space on the data disk"), "{}", text(&out));
    assert_eq!(w.status("epel")["result"], "no-space");
}

#[test]
fn status_lists_every_project() {
    let w = World::new();
    rpm(&w.up("rpm").join("Packages"), "alpha", "1.0");
    createrepo(&w.up("rpm"));
    assert_eq!(w.mm_sync(&["epel"], &[]).status.code(), Some(0));
    let out = w.mm_sync(&["--status", "--json"], &[]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out)));
    let projects = v["projects"].as_array().unwrap();
    assert_eq!(projects.len(), 2);
    assert_eq!(projects[0]["project"], "epel");
    assert_eq!(projects[0]["result"], "success");
    assert_eq!(projects[0]["stale"], false);
    assert_eq!(projects[1]["result"], "never run");
    assert_eq!(projects[1]["stale"], true);
    let out = w.mm_sync(&["--status"], &[]);
    assert!(text(&out).contains("epel") && text(&out).contains("never"), "{}", text(&out));
    let out = w.mm_sync(&["nosuch"], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("does not host \"nosuch\" (hosted here: epel, debian)"), "{}", text(&out));
    // The profiles used here really are what the test thinks they are.
    let cfg = NodeConfig::load(&w.config).unwrap();
    assert_eq!(cfg.project("debian").unwrap().sync.method, SyncMethod::TwoStage);
    assert_eq!(cfg.project("epel").unwrap().sync.check, CheckKind::Rpm);
}

/// mm-sync run with `args` only (no --config/--root from a World).
fn mm_sync_bare(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mm-sync")).args(args).output().unwrap()
}

#[test]
fn usage_and_configuration_errors_exit_2_and_1_with_the_reason() {
    let w = World::new();
    // Wrong command line: 2.
    let out = w.mm_sync(&[], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("name a project (hosted here: epel, debian), or use --status"), "{}", text(&out));
    for args in [&["--check"][..], &["--status", "epel"], &["--bwlimit", "fast", "epel"], &["--frobnicate", "epel"]] {
        let out = w.mm_sync(args, &[]);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", text(&out));
        assert!(text(&out).contains("error: ") && text(&out).contains("--help"), "{args:?}: {}", text(&out));
    }
    // No configuration, a broken one, one from a future schema: 1, naming the file.
    let missing = w.dir.path().join("missing.toml");
    let out = mm_sync_bare(&["--config", missing.to_str().unwrap(), "epel"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains(missing.to_str().unwrap()), "{}", text(&out));
    let broken = w.dir.path().join("broken.toml");
    std::fs::write(&broken, "schema = 1\n[fleet\nname = \"x\"\n").unwrap();
    let out = mm_sync_bare(&["--config", broken.to_str().unwrap(), "--root", w.root().to_str().unwrap(), "epel"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains(broken.to_str().unwrap()) && text(&out).contains("line 2"), "{}", text(&out));
    let future = w.dir.path().join("future.toml");
    std::fs::write(&future, std::fs::read_to_string(&w.config).unwrap().replacen("schema = 1", "schema = 99", 1)).unwrap();
    let out = mm_sync_bare(&["--config", future.to_str().unwrap(), "--status"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("99"), "{}", text(&out));
    // Nothing was run or recorded by any of them.
    assert!(!w.root().join("var/lib/micromirror/sync/epel").exists());
}

#[test]
fn deep_check_finds_a_package_of_the_right_size_with_the_wrong_bytes() {
    let w = World::new();
    let up = w.up("rpm");
    rpm(&up.join("Packages"), "alpha", "1.0");
    rpm(&up.join("Packages"), "beta", "1.0");
    createrepo(&up);
    assert_eq!(w.mm_sync(&["epel"], &[]).status.code(), Some(0));
    let pkg = w.tree("epel").join("Packages/beta-1.0-1.noarch.rpm");
    let mut bytes = std::fs::read(&pkg).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&pkg, &bytes).unwrap();
    // Sizes only: nothing to see.
    let out = w.mm_sync(&["--check", "epel"], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    // --deep reads the package and compares its SHA256 with primary's checksum.
    let out = w.mm_sync(&["--check", "--deep", "epel"], &[]);
    assert_eq!(out.status.code(), Some(5), "{}", text(&out));
    assert!(text(&out).contains(&format!("{} has SHA256 ", pkg.display())) && text(&out).contains("1 problem(s)"), "{}", text(&out));
    let out = w.mm_sync(&["--check", "--deep", "--json", "epel"], &[]);
    assert_eq!(out.status.code(), Some(5));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out)));
    assert_eq!(v["errors"].as_array().map(Vec::len), Some(1), "{v}");
}

/// A tmpfs data disk, unmounted when the test ends (also when it fails).
struct Tmpfs(PathBuf);
impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(at).unwrap();
        sh(&format!("mount -t tmpfs -o size={size} mm-sync-test {}", at.display()));
        Tmpfs(at.to_path_buf())
    }
}
impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn status_exits_6_when_the_data_disk_runs_out_of_room() {
    let w = World::new();
    let disk = Tmpfs::mount(&w.root().join("srv/mirror"), "16m");
    let out = w.mm_sync(&["--status", "--json"], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["warnings"].as_array().unwrap().is_empty(), "{v}");
    assert_eq!(v["data_total_bytes"].as_u64(), Some(16 << 20), "{v}");
    // Fill it past 90 %.
    sh(&format!("head -c 15500000 /dev/zero > {}/filler", disk.0.display()));
    let out = w.mm_sync(&["--status", "--json"], &[]);
    assert_eq!(out.status.code(), Some(6), "{}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["warnings"][0].as_str().unwrap().contains("% full"), "{v}");
    let out = w.mm_sync(&["--status"], &[]);
    assert_eq!(out.status.code(), Some(6));
    assert!(text(&out).contains("% full"), "{}", text(&out));
}

#[test]
fn each_run_publishes_the_public_freshness_document() {
    let w = World::new();
    let up = w.up("rpm");
    rpm(&up.join("Packages"), "alpha", "1.0");
    createrepo(&up);
    // The upstream's own marker (an EPEL 9 repository's repomd revision), copied, never written.
    let sub = up.join("9/Everything/x86_64");
    rpm(&sub.join("Packages"), "beta", "1.0");
    createrepo(&sub);
    let repomd = std::fs::read_to_string(sub.join("repodata/repomd.xml")).unwrap();
    let rev: u64 = repomd.split("<revision>").nth(1).unwrap().split('<').next().unwrap().parse().unwrap();
    // The image version the root's os-release carries (as the builder stamps it).
    std::fs::create_dir_all(w.root().join("etc")).unwrap();
    std::fs::write(
        w.root().join("etc/os-release"),
        format!("ID=debian\n{}", mmconfig::image::os_release_lines("20261104.024542-3f2a9c1e0b7d")),
    )
    .unwrap();

    let out = w.mm_sync(&["epel"], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let doc_path = w.root().join("srv/mirror/.mm/status.json");
    let doc: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&doc_path).unwrap()).unwrap();
    assert_eq!(doc["version"], 1);
    assert_eq!(doc["node"], "ci.mm.example.net");
    assert_eq!(doc["image_version"], "20261104.024542-3f2a9c1e0b7d");
    let epel = &doc["projects"][0];
    assert_eq!((epel["project"].as_str(), epel["result"].as_str()), (Some("epel"), Some("success")), "{doc}");
    assert_eq!(epel["last_success_unix"], w.status("epel")["last_success_unix"]);
    assert_eq!(epel["upstream_marker"], "9/Everything/x86_64/repodata/repomd.xml");
    assert_eq!(epel["upstream_marker_unix"].as_u64(), Some(rev));
    assert!(epel["tree_bytes"].as_u64().unwrap() > 0);
    assert_eq!(doc["projects"][1]["result"], "never-run");
    assert!(doc["data_free_bytes"].as_u64().unwrap() > 0);
    let text = std::fs::read_to_string(&doc_path).unwrap();
    assert!(!text.contains("rsync://") && !text.contains("/logs/"), "private details in the public document: {text}");
    // Written atomically: nothing else in its directory.
    assert_eq!(std::fs::read_dir(doc_path.parent().unwrap()).unwrap().count(), 1);
}

/// On the node syncs run as the unprivileged sync account that owns the trees. Here a uid of its
/// own (no capabilities, no new privileges, no groups, as the unit's sandbox leaves it) syncs
/// into a tree it owns from the real daemon; a directory it may not write, a tree that is
/// root's, or root running a sync on the account's tree are each refused before anything is
/// written, naming the path.
#[test]
fn the_sync_account_syncs_its_own_tree_and_is_refused_anything_else() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let w = World::new();
    let up = w.up("rpm");
    rpm(&up.join("Packages"), "alpha", "1.0");
    createrepo(&up);
    let (uid, gid) = (64123, 64123);
    // What mm-firstboot leaves on the node: the account's directories, root's mount point.
    std::fs::set_permissions(w.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let owned = ["srv/mirror/epel", "srv/mirror/.mm", "var/lib/micromirror/sync", "var/lib/prometheus/node-exporter"];
    for d in owned {
        std::fs::create_dir_all(w.root().join(d)).unwrap();
        sh(&format!("chown {uid}:{gid} {}", w.root().join(d).display()));
    }
    let as_account = |args: &[&str]| {
        let mut cmd = w.ns.cmd("setpriv");
        cmd.args([
            &format!("--reuid={uid}"),
            &format!("--regid={gid}"),
            "--clear-groups",
            "--no-new-privs",
            "--bounding-set=-all",
            "--inh-caps=-all",
        ]);
        cmd.arg("--").arg(env!("CARGO_BIN_EXE_mm-sync")).arg("--config").arg(&w.config).arg("--root").arg(w.root()).args(args);
        cmd.env_remove("MM_SYNC_BETWEEN_STAGES").output().unwrap()
    };
    let out = as_account(&["epel"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(w.status("epel")["result"], "success");
    let tree = w.tree("epel");
    assert!(files(&tree).iter().any(|f| f.contains("alpha-1.0")), "{:?}", files(&tree));
    let written = [
        tree.join(".mirror-trace/ci.mm.example.net"),
        w.root().join("var/lib/micromirror/sync/epel/status.json"),
        w.root().join("var/lib/micromirror/sync/epel/lock"),
        w.root().join("var/lib/prometheus/node-exporter/mm_sync_epel.prom"),
        w.root().join("srv/mirror/.mm/status.json"),
    ];
    for f in &written {
        let m = std::fs::metadata(f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        assert_eq!(m.uid(), uid, "{}", f.display());
    }
    let foreign = sh(&format!("find {} -not -uid {uid} | head -3", tree.display()));
    assert!(foreign.is_empty(), "not the account's: {foreign}");
    // Served by nginx and rsyncd's nobody: world-readable.
    assert_eq!(std::fs::metadata(w.root().join("srv/mirror/.mm/status.json")).unwrap().mode() & 0o004, 0o004);

    let status = std::fs::read(w.root().join("var/lib/micromirror/sync/epel/status.json")).unwrap();
    let refused = |out: &Output, names: &str| {
        assert_eq!(out.status.code(), Some(7), "{}", text(out));
        assert!(text(out).contains(names), "the message must name {names}:\n{}", text(out));
        let now = std::fs::read(w.root().join("var/lib/micromirror/sync/epel/status.json")).unwrap();
        assert_eq!(now, status, "a refused run must leave the records alone");
    };
    // The metrics directory back to root's (a package upgrade resetting it, say).
    let metrics = w.root().join("var/lib/prometheus/node-exporter");
    sh(&format!("chown 0:0 {}", metrics.display()));
    let out = as_account(&["epel"]);
    refused(&out, &format!("{} is not writable by uid {uid}: owned by root (uid 0), mode 0755 (Permission denied)", metrics.display()));
    sh(&format!("chown {uid}:{gid} {}", metrics.display()));
    // A tree still root's (synced as root by an older version, not yet handed over).
    sh(&format!("chown 0:0 {}", tree.display()));
    let out = as_account(&["epel"]);
    refused(&out, &format!("{} belongs to root (uid 0), not to uid {uid}", tree.display()));
    sh(&format!("chown {uid}:{gid} {}", tree.display()));
    // root running a sync by hand would leave files the account cannot replace.
    let out = w.mm_sync(&["epel"], &[]);
    refused(&out, &format!("{} belongs to uid {uid}, not to root (uid 0)", tree.display()));
    assert!(text(&out).contains("systemctl start mm-sync-epel.service"), "{}", text(&out));
    // And the account syncs again once all is its own.
    let out = as_account(&["epel"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
}
