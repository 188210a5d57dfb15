//! Slow tier: day 2 on a booted node. `mmbuild plan` / `mmbuild apply` over the forwarded ssh
//! port against the build's known_hosts: a project added, the sponsor changed to a hostile
//! string, an admin key rotated, while an HTTP and an rsync download from the node are in flight
//! (both complete intact); right after apply the node serves the change, and a second apply
//! changes nothing; the change survives a reboot; a dropped project is no longer served (404)
//! but keeps its data until --prune.

mod common;
use common::Reaped;

use hostkit::testenv::free_port;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use hostkit::testenv::Need;
use mmbuild::boottest::qemu::{Vm, VmOptions};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn sh(cmd: &str) -> String {
    let out = Command::new("sh").args(["-c", cmd]).output().unwrap();
    assert!(out.status.success(), "{cmd}:\n{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn mmbuild(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mmbuild")).args(args).output().unwrap()
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn curl(url: &str) -> String {
    String::from_utf8_lossy(&Command::new("curl").args(["-s", "--max-time", "10", url]).output().unwrap().stdout).into_owned()
}

const READY: &str = "mm-firstboot: ci.mm.example.net ready - ALL GOOD";
const BOOT_TIMEOUT: Duration = Duration::from_secs(300);

struct Node {
    tmp: tempfile::TempDir,
    out: PathBuf,
    image: PathBuf,
    data: PathBuf,
    /// ssh, http, rsync on the inventory address; ssh on the renumbered address 10.0.2.16.
    ports: (u16, u16, u16, u16),
    /// The ssh port `day2` and `ssh` use (the node's current address).
    via: std::cell::Cell<u16>,
}

impl Node {
    fn fleet(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }

    fn boot(&self, log: &str) -> Vm {
        let mut opts = VmOptions::new(&self.image);
        opts.data_disks = vec![self.data.clone()];
        opts.serial_log = Some(self.tmp.path().join(log));
        let (ssh, http, rsync, renumbered) = self.ports;
        opts.forwards = vec![(ssh, 22), (http, 80), (rsync, 873)];
        opts.forwards_to = vec![(renumbered, std::net::Ipv4Addr::new(10, 0, 2, 16), 22)];
        let mut vm = Vm::start(&opts).unwrap();
        vm.wait_for(READY, BOOT_TIMEOUT).unwrap_or_else(|e| panic!("{e}:\n{}", vm.tail(40)));
        vm
    }

    fn day2(&self, verb: &str, fleet: &str, key: &str, extra: &[&str]) -> Output {
        let started = Instant::now();
        let o = self.day2_start(verb, fleet, key, extra).wait_with_output().unwrap();
        eprintln!("mmbuild {verb} {fleet}: {:.2} s\n{}", started.elapsed().as_secs_f64(), String::from_utf8_lossy(&o.stdout));
        o
    }

    /// `mmbuild VERB` against the node, running (its output piped).
    fn day2_start(&self, verb: &str, fleet: &str, key: &str, extra: &[&str]) -> std::process::Child {
        let connect = format!("ci=127.0.0.1:{}", self.via.get());
        Command::new(env!("CARGO_BIN_EXE_mmbuild"))
            .args([verb, self.fleet(fleet).to_str().unwrap(), "--out", self.out.to_str().unwrap(), "--node", "ci"])
            .args(["--connect", &connect, "-i", self.tmp.path().join(key).to_str().unwrap(), "--data", repo().to_str().unwrap()])
            .args(extra)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    }

    fn ssh(&self, key: &str, command: &str) -> Output {
        self.ssh_via(self.via.get(), 20, key, command)
    }

    fn ssh_via(&self, port: u16, timeout: u32, key: &str, command: &str) -> Output {
        Command::new("ssh")
            .args(["-F", "/dev/null", "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes"])
            .arg("-o")
            .arg(format!("ConnectTimeout={timeout}"))
            .arg("-o")
            .arg(format!("UserKnownHostsFile={}", self.out.join("known_hosts").display()))
            .args(["-o", "HostKeyAlias=ci.mm.example.net", "-o", "IdentitiesOnly=yes", "-i"])
            .arg(self.tmp.path().join(key))
            .args(["-p", &port.to_string(), "mmadmin@127.0.0.1", command])
            .output()
            .unwrap()
    }

    /// Wait until the node's nginx serves `path` containing `needle` (after a boot).
    fn http_shows(&self, path: &str, needle: &str) -> String {
        let t = Instant::now();
        loop {
            let body = curl(&format!("http://127.0.0.1:{}{path}", self.ports.1));
            if body.contains(needle) {
                return body;
            }
            assert!(t.elapsed() < Duration::from_secs(60), "{path} never showed {needle:?}:\n{body}");
            std::thread::sleep(Duration::from_secs(1));
        }
    }

    /// The node's rsync module names, now.
    fn rsync_modules(&self) -> Vec<String> {
        let out = Command::new("rsync").args(["--contimeout=10", &format!("rsync://127.0.0.1:{}/", self.ports.2)]).output().unwrap();
        assert!(out.status.success(), "listing the modules: {}", text(&out));
        String::from_utf8_lossy(&out.stdout).lines().filter_map(|l| l.split_once('\t')).map(|(m, _)| m.trim().to_string()).collect()
    }

    /// The HTTP status of `path` on the node, now.
    fn http_code(&self, path: &str) -> String {
        let url = format!("http://127.0.0.1:{}{path}", self.ports.1);
        let out = Command::new("curl").args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "10", &url]).output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// An HTTP and an rsync download of the node's 6 MiB epel file, each paced to 128 KiB/s
    /// (about 48 s: longer than an apply under TCG), running once both have bytes on the disk.
    /// The HTTP client is our own paced reader: curl 7.88's --limit-rate does not hold (it read
    /// the whole file in 0.1 s here).
    fn downloads(&self, name: &str) -> Downloads {
        let dir = self.tmp.path().join(name);
        std::fs::create_dir_all(dir.join("rsync")).unwrap();
        let (port, file) = (self.ports.1, dir.join("http.bin"));
        let http = std::thread::spawn(move || paced_get(port, "/epel/big/payload.bin", 128 << 10, &file));
        let rsync = Command::new("rsync")
            .args(["--bwlimit=128", "--inplace", &format!("rsync://127.0.0.1:{}/epel/big/payload.bin", self.ports.2)])
            .arg(dir.join("rsync/"))
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let d = Downloads { dir, http: Some(http), rsync: Reaped(rsync) };
        let t = Instant::now();
        while d.bytes("http.bin") == 0 || d.bytes("rsync/payload.bin") == 0 {
            assert!(t.elapsed() < Duration::from_secs(60), "the downloads never started");
            std::thread::sleep(Duration::from_millis(200));
        }
        d
    }
}

/// GET `path` from the node's nginx at `rate` bytes a second into `out`, through a small receive
/// buffer so that nginx is still sending while we read (the kernel would otherwise take megabytes
/// at once); the body's length, or why it failed.
fn paced_get(port: u16, path: &str, rate: usize, out: &Path) -> Result<u64, String> {
    use nix::sys::socket::{connect, setsockopt, socket, sockopt, AddressFamily, SockFlag, SockType, SockaddrIn};
    use std::io::{Read, Write};
    let fd = socket(AddressFamily::Inet, SockType::Stream, SockFlag::empty(), None).map_err(|e| e.to_string())?;
    setsockopt(&fd, sockopt::RcvBuf, &(16 << 10)).map_err(|e| e.to_string())?;
    connect(std::os::fd::AsRawFd::as_raw_fd(&fd), &SockaddrIn::new(127, 0, 0, 1, port)).map_err(|e| e.to_string())?;
    let mut s = std::net::TcpStream::from(fd);
    s.set_read_timeout(Some(Duration::from_secs(30))).map_err(|e| e.to_string())?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: ci\r\n\r\n").as_bytes()).map_err(|e| e.to_string())?;
    let mut f = std::fs::File::create(out).map_err(|e| e.to_string())?;
    let (started, mut head, mut body, mut buf) = (Instant::now(), Vec::new(), 0u64, [0u8; 4096]);
    let mut in_body = false;
    loop {
        let n = s.read(&mut buf).map_err(|e| format!("after {body} bytes: {e}"))?;
        if n == 0 {
            break;
        }
        let data = if in_body {
            buf[..n].to_vec()
        } else {
            head.extend_from_slice(&buf[..n]);
            let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") else { continue };
            if !head.starts_with(b"HTTP/1.1 200") {
                return Err(String::from_utf8_lossy(&head).into_owned());
            }
            in_body = true;
            head.split_off(end + 4)
        };
        f.write_all(&data).map_err(|e| e.to_string())?;
        body += data.len() as u64;
        let due = Duration::from_secs_f64(body as f64 / rate as f64);
        if let Some(wait) = due.checked_sub(started.elapsed()) {
            std::thread::sleep(wait);
        }
    }
    Ok(body)
}

/// Two downloads from the node in flight across an apply.
struct Downloads {
    dir: PathBuf,
    http: Option<std::thread::JoinHandle<Result<u64, String>>>,
    rsync: Reaped,
}

impl Downloads {
    fn bytes(&self, file: &str) -> u64 {
        std::fs::metadata(self.dir.join(file)).map_or(0, |m| m.len())
    }

    /// Both are still transferring; otherwise how each ended.
    fn assert_running(&mut self) {
        let mut ended = Vec::new();
        if self.http.as_ref().is_some_and(|h| h.is_finished()) {
            let result = self.http.take().unwrap().join().unwrap();
            ended.push(format!("HTTP: {result:?} after {} bytes", self.bytes("http.bin")));
        }
        if let Some(status) = self.rsync.0.try_wait().unwrap() {
            let mut err = String::new();
            std::io::Read::read_to_string(self.rsync.0.stderr.as_mut().unwrap(), &mut err).unwrap();
            ended.push(format!("rsync: {status} after {} bytes: {err}", self.bytes("rsync/payload.bin")));
        }
        assert!(ended.is_empty(), "downloads ended before apply did (cut off, or too fast to prove anything): {ended:?}");
    }

    /// Both end successfully with exactly `want`.
    fn finish(mut self, want: &[u8]) {
        let http = self.http.take().unwrap().join().unwrap();
        assert_eq!(http, Ok(want.len() as u64), "the HTTP download in flight during apply was cut off");
        let status = self.rsync.0.wait().unwrap();
        let mut err = String::new();
        std::io::Read::read_to_string(self.rsync.0.stderr.as_mut().unwrap(), &mut err).unwrap();
        assert!(status.success(), "the rsync download in flight during apply was cut off: {status} {err}");
        for file in ["http.bin", "rsync/payload.bin"] {
            assert!(std::fs::read(self.dir.join(file)).unwrap() == want, "{file} is not the file");
        }
    }
}

#[test]
#[ignore = "slow: boots the example qemu node under QEMU + OVMF and changes it over ssh"]
fn apply_changes_a_live_node_and_nothing_twice() {
    if hostkit::testenv::need(&[Need::Root, Need::Tool("mmdebstrap"), Need::Tool("qemu-system-x86_64"), Need::Tool("ssh")]).is_err() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    // Upstreams: a real rpm repository for epel, a small tree for gimp.
    let up = tmp.path().join("upstream");
    let fixture_rpm = repo().join("scripts/fixture-rpm");
    sh(&format!("{} {}/epel/Packages hello 1.0", fixture_rpm.display(), up.display()));
    sh(&format!("createrepo_c --quiet {}/epel", up.display()));
    std::fs::create_dir_all(up.join("gimp/v2.10")).unwrap();
    std::fs::write(up.join("gimp/v2.10/gimp-2.10.38.tar.bz2"), vec![7u8; 300_000]).unwrap();
    // A file big enough to still be downloading from the node while an apply runs.
    let payload: Vec<u8> = (0..6u32 << 20).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
    std::fs::create_dir_all(up.join("epel/big")).unwrap();
    std::fs::write(up.join("epel/big/payload.bin"), &payload).unwrap();
    let conf = tmp.path().join("rsyncd.conf");
    std::fs::write(&conf, format!("use chroot = no\nread only = yes\n[epel]\npath = {0}/epel\n[gimp]\npath = {0}/gimp\n", up.display()))
        .unwrap();
    let port = free_port("127.0.0.1");
    let _daemon = common::rsync_daemon(&conf, port);

    // Two admin keys: A is in the built image, B replaces it on day 2.
    for k in ["key_a", "key_b"] {
        sh(&format!("ssh-keygen -q -t ed25519 -N '' -C {k} -f {}", tmp.path().join(k).display()));
    }
    let public = |k: &str| std::fs::read_to_string(tmp.path().join(format!("{k}.pub"))).unwrap().trim().to_string();
    let example = std::fs::read_to_string(repo().join("examples/fleet.toml")).unwrap();
    let with_admin = |key: &str| {
        example.replacen("admin_ssh_keys = [\n", &format!("admin_ssh_keys = [\n  \"{key}\",\n"), 1).replacen(
            "admin_prefixes = [\"192.0.2.0/24\",",
            "admin_prefixes = [\"10.0.2.2/32\", \"192.0.2.0/24\",",
            1,
        )
    };
    let v1 = with_admin(&public("key_a"));
    std::fs::write(tmp.path().join("v1.toml"), common::upstreams_on(&v1, port)).unwrap();
    let hostile = "Day2 \\\"Sponsor\\\" <b>&amp; $(touch /tmp/pwned)";
    let v2 = with_admin(&public("key_b"))
        .replace(
            "projects = [\"epel\"]\nsponsor = { name = \"CI \\\"Labs\\\" & <Sons> '; rm -rf / #\"",
            &format!("projects = [\"epel\", \"gimp\"]\nsponsor = {{ name = \"{hostile}\""),
        )
        .replace(
            "upstreams = { epel = \"rsync://10.0.2.2:10873/epel/\" }",
            "upstreams = { epel = \"rsync://10.0.2.2:10873/epel/\", gimp = \"rsync://10.0.2.2:10873/gimp/\" }",
        );
    assert!(v2.contains("projects = [\"epel\", \"gimp\"]") && v2.contains("gimp = \"rsync://10.0.2.2:10873/gimp/\""), "{v2}");
    std::fs::write(tmp.path().join("v2.toml"), common::upstreams_on(&v2, port)).unwrap();
    let v3 = v2.replace("projects = [\"epel\", \"gimp\"]", "projects = [\"epel\"]").replace(hostile, "Day3 Sponsor").replace(
        "upstreams = { epel = \"rsync://10.0.2.2:10873/epel/\", gimp = \"rsync://10.0.2.2:10873/gimp/\" }",
        "upstreams = { epel = \"rsync://10.0.2.2:10873/epel/\" }",
    );
    assert!(!v3.contains("gimp"), "{v3}");
    std::fs::write(tmp.path().join("v3.toml"), common::upstreams_on(&v3, port)).unwrap();

    let out = tmp.path().join("out");
    let data_dir = repo();
    let state = tmp.path().join("state");
    let v1_path = tmp.path().join("v1.toml");
    let built = mmbuild(&[
        "build",
        v1_path.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--node",
        "ci",
        "--quiet",
        "--state",
        state.to_str().unwrap(),
        "--data",
        data_dir.to_str().unwrap(),
    ]);
    assert!(built.status.success(), "{}", text(&built));
    let image = tmp.path().join("ci.img");
    sh(&format!("cp --sparse=always {} {}", out.join("ci/disk.img").display(), image.display()));
    let data = tmp.path().join("data.img");
    std::fs::File::create(&data).unwrap().set_len(4 << 30).unwrap();
    let ports = (free_port("127.0.0.1"), free_port("127.0.0.1"), free_port("127.0.0.1"), free_port("127.0.0.1"));
    let node = Node { tmp, out, image, data, ports, via: std::cell::Cell::new(ports.0) };
    let vm = node.boot("boot1.log");
    let t = Instant::now();
    while !node.ssh("key_a", "test -f /srv/mirror/epel/big/payload.bin").status.success() {
        assert!(t.elapsed() < Duration::from_secs(120), "epel's first sync never landed");
        std::thread::sleep(Duration::from_secs(2));
    }

    // The generated manual pages are in the image and `man` reads them.
    let man = node.ssh("key_a", "MANPAGER=cat man mm-sync");
    assert!(String::from_utf8_lossy(&man.stdout).contains("Keep one hosted project in step"), "{}", text(&man));

    // The inventory it was built from: nothing to change, to plan or to apply. Each verb is one
    // ssh connection; scripts/bench reads these figures (issue 30's target: a no-op apply <= 2 s).
    let t = Instant::now();
    let o = node.day2("plan", "v1.toml", "key_a", &[]);
    let plan_secs = t.elapsed().as_secs_f64();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("nothing-to-change"), "{}", text(&o));
    let t = Instant::now();
    let o = node.day2("apply", "v1.toml", "key_a", &[]);
    let apply_secs = t.elapsed().as_secs_f64();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("nothing-to-change"), "{}", text(&o));
    println!("BENCH day2-noop-plan {plan_secs:.2}");
    println!("BENCH day2-noop-apply {apply_secs:.2}");

    // Day 2: plan shows the change, apply makes it.
    let o = node.day2("plan", "v2.toml", "key_a", &[]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let plan = text(&o);
    assert!(plan.contains("would change on ci.mm.example.net") && plan.contains("mm-sync-gimp.timer"), "{plan}");
    assert!(plan.lines().any(|l| l.trim_start().starts_with('+') && l.contains("gimp")), "the node.toml diff: {plan}");
    assert!(node.ssh("key_a", "test ! -e /etc/systemd/system/mm-sync-gimp.timer").status.success(), "plan changed the node");

    // Downloads from the node in flight across the apply: nothing it changes may cut them off.
    let mut flying = node.downloads("during-v2");
    let o = node.day2("apply", "v2.toml", "key_a", &["--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(report["nodes"][0]["result"], "converged", "{report}");
    flying.assert_running();

    // Right when apply returns: the listing carries the new sponsor as text, escaped exactly once;
    // the new module and path are served.
    let listing = curl(&format!("http://127.0.0.1:{}/", node.ports.1));
    assert!(listing.contains(">Day2 \"Sponsor\" &lt;b&gt;&amp;amp; $(touch /tmp/pwned)</a>"), "the new sponsor, escaped:\n{listing}");
    assert_eq!(node.rsync_modules(), ["epel", "gimp"]);
    assert_eq!(node.http_code("/gimp/"), "200");
    // A second apply at once: nothing to change, nothing changed.
    let state = "sudo cat /var/lib/micromirror/firstboot/state.json";
    let before = String::from_utf8_lossy(&node.ssh("key_b", state).stdout).into_owned();
    let o = node.day2("apply", "v2.toml", "key_b", &[]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("nothing-to-change"), "{}", text(&o));
    let after = String::from_utf8_lossy(&node.ssh("key_b", state).stdout).into_owned();
    assert_eq!(before, after, "a no-op apply ran a converge");
    flying.finish(&payload);

    // Key rotation: A is refused by the key check (not by some other ssh failure), B accepted.
    let refused = node.ssh("key_a", "true");
    assert!(!refused.status.success() && text(&refused).contains("Permission denied (publickey)"), "{}", text(&refused));
    assert!(node.ssh("key_b", "true").status.success(), "the new admin key is refused");
    assert!(node.ssh("key_b", "test ! -e /tmp/pwned").status.success(), "the sponsor string was executed");

    // The gimp sync lands and ends (its first sync was started by the converge): only a sync
    // that ended has its files on the disk, so only then may the power be cut.
    let t = Instant::now();
    let landed =
        "test -f /srv/mirror/gimp/v2.10/gimp-2.10.38.tar.bz2 && test \"$(systemctl show -P ActiveState mm-sync-gimp.service)\" = inactive";
    while !node.ssh("key_b", landed).status.success() {
        assert!(t.elapsed() < Duration::from_secs(120), "gimp never synced");
        std::thread::sleep(Duration::from_secs(2));
    }

    // A power cut and a boot: the applied configuration wins over the build's MMCONFIG copy.
    drop(vm);
    let vm = node.boot("boot2.log");
    node.http_shows("/", "Day2");
    let installed = String::from_utf8_lossy(&node.ssh("key_b", "cat /etc/micromirror/node.toml").stdout).into_owned();
    assert!(installed.contains("gimp"), "{installed}");
    let refused = node.ssh("key_a", "true");
    assert!(text(&refused).contains("Permission denied (publickey)"), "a reboot brought the old admin key back: {}", text(&refused));

    // Dropping gimp (and another sponsor), downloads in flight: no longer synced or served, its
    // data kept and reported; --prune frees it.
    let mut flying = node.downloads("during-v3");
    let o = node.day2("apply", "v3.toml", "key_b", &[]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    flying.assert_running();
    assert!(curl(&format!("http://127.0.0.1:{}/", node.ports.1)).contains(">Day3 Sponsor</a>"), "the listing lags the apply");
    for path in ["/gimp/v2.10/gimp-2.10.38.tar.bz2", "/gimp/", "/gimp"] {
        assert_eq!(node.http_code(path), "404", "{path} of the dropped gimp is still served");
    }
    let listing = curl(&format!("http://127.0.0.1:{}/", node.ports.1));
    assert!(listing.contains("href=\"./epel/\"") && !listing.contains("gimp"), "the dropped gimp is listed:\n{listing}");
    flying.finish(&payload);
    // Each half on its own, with what the node shows: this failed once in a CI-style run
    // (2026-12-01) and passed when run again.
    let show = || {
        let o = node.ssh(
            "key_b",
            "ls -la /srv/mirror/gimp/v2.10/; ls /etc/systemd/system/ | grep gimp; systemctl status --no-pager 'mm-sync-gimp*' | head -30",
        );
        text(&o)
    };
    assert!(
        node.ssh("key_b", "test -f /srv/mirror/gimp/v2.10/gimp-2.10.38.tar.bz2").status.success(),
        "dropping gimp lost its data:\n{}",
        show()
    );
    assert!(
        node.ssh("key_b", "test ! -e /etc/systemd/system/mm-sync-gimp.timer").status.success(),
        "gimp's timer outlived the drop:\n{}",
        show()
    );
    assert_eq!(node.rsync_modules(), ["epel"]);
    let status = String::from_utf8_lossy(&node.ssh("key_b", "sudo mm-firstboot status").stdout).into_owned();
    assert!(status.contains("no longer hosted: gimp keeps"), "{status}");
    let o = node.day2("apply", "v3.toml", "key_b", &["--prune", "gimp"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("freed"), "{}", text(&o));
    assert!(node.ssh("key_b", "test ! -e /srv/mirror/gimp").status.success(), "--prune left the data");
    assert_eq!(node.http_code("/gimp/v2.10/gimp-2.10.38.tar.bz2"), "404");

    // A node presenting another key than the published one is refused (never trusted).
    let known = node.out.join("known_hosts");
    let original = std::fs::read_to_string(&known).unwrap();
    sh(&format!("ssh-keygen -q -t ed25519 -N '' -C impostor -f {}", node.tmp.path().join("impostor").display()));
    let impostor = std::fs::read_to_string(node.tmp.path().join("impostor.pub")).unwrap();
    let ci_line = original.lines().find(|l| l.starts_with("ci.")).unwrap();
    let names = ci_line.split_once(' ').unwrap().0;
    let forged = original.replace(ci_line, &format!("{names} {}", impostor.split(' ').take(2).collect::<Vec<_>>().join(" ")));
    std::fs::write(&known, forged).unwrap();
    let o = node.day2("plan", "v3.toml", "key_b", &[]);
    std::fs::write(&known, original).unwrap();
    assert_eq!(o.status.code(), Some(6), "{}", text(&o));
    assert!(text(&o).contains("unreachable") && text(&o).contains("host key is not the one in known_hosts"), "{}", text(&o));

    // Renumbering, confirmed: the sponsor moves ci to 10.0.2.16; apply reaches it there (the
    // same host key) and confirms; the old address is gone.
    let v4 = v3.replace("ipv4 = { address = \"10.0.2.15/24\"", "ipv4 = { address = \"10.0.2.16/24\"");
    assert_ne!(v4, v3);
    std::fs::write(node.fleet("v4.toml"), &v4).unwrap();
    let moved = format!("ci=127.0.0.1:{}", node.ports.3);
    let o = node.day2("apply", "v4.toml", "key_b", &["--connect-new", &moved, "--confirm-timeout", "120", "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("renumbered: confirmed"), "{}", text(&o));
    node.via.set(node.ports.3);
    assert!(node.ssh("key_b", "ip -4 -o addr show | grep -q 10.0.2.16/24").status.success());
    node.via.set(node.ports.0);
    assert!(!node.ssh("key_b", "true").status.success(), "the old address still answers");

    // Renumbering, unconfirmed (the new address is never reached): the node really moves (it
    // answers on 10.0.2.15 while apply waits for it elsewhere), then rolls back to 10.0.2.16 by
    // itself.
    node.via.set(node.ports.3);
    let apply = node.day2_start("apply", "v3.toml", "key_b", &["--connect-new", "ci=127.0.0.1:9", "--confirm-timeout", "40"]);
    let t = Instant::now();
    let mut moved = false;
    while !moved && t.elapsed() < Duration::from_secs(35) {
        moved = node.ssh_via(node.ports.0, 3, "key_b", "ip -4 -o addr show | grep -q 10.0.2.15/24").status.success();
    }
    let o = apply.wait_with_output().unwrap();
    assert!(moved, "the node never answered on 10.0.2.15 within the confirmation window: {}", text(&o));
    assert_eq!(o.status.code(), Some(6), "{}", text(&o));
    assert!(text(&o).contains("rolls back"), "{}", text(&o));
    let t = Instant::now();
    loop {
        let o = node.ssh_via(node.ports.3, 5, "key_b", "cat /etc/micromirror/node.toml");
        if o.status.success() && String::from_utf8_lossy(&o.stdout).contains("10.0.2.16/24") {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(150), "the node did not roll back to 10.0.2.16: {}", text(&o));
        std::thread::sleep(Duration::from_secs(3));
    }
    drop(vm);
}
