//! `mmbuild status` against real daemons on loopback: one nginx serving every fixture node (a
//! server per node, IPv4 and IPv6), rsync daemons for the nodes' modules and for the upstream,
//! a closed port and a socket that accepts and never answers. Needs root, nginx and rsync.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hostkit::testenv::free_port;
use serde_json::Value;

const KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOozE4famK1j6NfXCWFhGYm39GKIAWKfHlpUtwM5i4R9 ops@example.net";
const DOMAIN: &str = "mm.example.net";

struct Daemon(Child);
impl Drop for Daemon {
    fn drop(&mut self) {
        // SIGTERM: nginx's master then stops its workers too.
        let _ = Command::new("kill").arg(self.0.id().to_string()).status();
        let _ = self.0.wait();
    }
}

fn wait_port(addr: SocketAddr) {
    for _ in 0..200 {
        if std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!("nothing listens on {addr}");
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

fn repomd(rev: u64) -> String {
    format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<repomd xmlns=\"http://linux.duke.edu/metadata/repo\">\n  <revision>{rev}</revision>\n</repomd>\n")
}

/// A trace line as `date -u` writes it.
fn trace(unix: u64) -> String {
    let out = Command::new("date").args(["-u", "-d", &format!("@{unix}"), "+%a %b %e %H:%M:%S UTC %Y"]).output().unwrap();
    format!("{}\nArchive serial: {unix}\n", String::from_utf8(out.stdout).unwrap().trim())
}

/// How a fixture node behaves.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    /// Same markers as the upstream, every module.
    Fresh,
    /// archlinux 30 h behind its upstream (allowed 24 h + 1 h).
    Lagging,
    /// Nothing listens.
    Down,
    /// The rsync daemon lacks the gimp module.
    WrongModule,
    /// Accepts connections and never says a word.
    Silent,
    /// Its public document: epel's last sync failed, gimp missing, kde no longer in the inventory.
    Drifted,
    /// Just turned up: gimp's first sync is still running, so gimp has no trace yet.
    FirstSync,
}

struct Fixture {
    dir: tempfile::TempDir,
    fleet: PathBuf,
    resolve: Vec<String>,
    _daemons: Vec<Daemon>,
    _silent: Vec<TcpListener>,
}

fn rsyncd(dir: &Path, name: &str, addr: &str, modules: &[(&str, PathBuf)]) -> (Daemon, SocketAddr) {
    let port = free_port(addr);
    let conf = dir.join(format!("{name}.conf"));
    let mut text = format!("use chroot = no\nuid = root\ngid = root\nread only = yes\nlog file = {}/{name}.log\n", dir.display());
    for (m, path) in modules {
        text.push_str(&format!("[{m}]\n    path = {}\n    comment = fixture {m}\n", path.display()));
    }
    write(&conf, &text);
    let child = Command::new("rsync")
        .args(["--daemon", "--no-detach", &format!("--config={}", conf.display()), &format!("--port={port}"), &format!("--address={addr}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let sa = SocketAddr::new(addr.parse().unwrap(), port);
    wait_port(sa);
    (Daemon(child), sa)
}

const PROJECTS: [&str; 3] = ["archlinux", "epel", "gimp"];

/// Nodes named after their kind (`<kind><i>`); the upstream is reachable unless `upstream_down`.
fn fixture(nodes: &[Kind], upstream_down: bool) -> Fixture {
    fixture_with(nodes, upstream_down, None)
}

/// With `tls_days`, the fleet serves HTTPS and each node a self-signed certificate valid that long.
fn fixture_with(nodes: &[Kind], upstream_down: bool, tls_days: Option<u32>) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let t = now();
    let epel_marker = "9/Everything/x86_64/repodata/repomd.xml";
    // The upstream.
    write(&d.join("upstream/archlinux/lastsync"), &format!("{t}\n"));
    write(&d.join("upstream/epel").join(epel_marker), &repomd(t - 600));
    let mut daemons = Vec::new();
    let upstream = if upstream_down {
        SocketAddr::from(([127, 0, 0, 1], free_port("127.0.0.1")))
    } else {
        let (dm, sa) =
            rsyncd(d, "upstream", "127.0.0.1", &[("archlinux", d.join("upstream/archlinux")), ("epel", d.join("upstream/epel"))]);
        daemons.push(dm);
        sa
    };
    let https = tls_days.is_some();
    if let Some(days) = tls_days {
        let out = Command::new("openssl")
            .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=fixture.invalid", "-days", &days.to_string(), "-keyout"])
            .arg(d.join("key.pem"))
            .arg("-out")
            .arg(d.join("cert.pem"))
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    let mut fleet = format!(
        "[fleet]\nname = \"loop\"\ndomain = \"{DOMAIN}\"\ncontact = \"mirror@example.net\"\nadmin_ssh_keys = [\"{KEY}\"]\n\
admin_prefixes = [\"192.0.2.0/24\"]\nhttps = {https}\n\n[defaults]\nhardware = \"wasp\"\nprojects = [\"archlinux\", \"epel\", \"gimp\"]\n\
dns = [\"9.9.9.9\", \"2620:fe::fe\"]\nupstreams = {{ archlinux = \"rsync://{upstream}/archlinux/\", epel = \"rsync://{upstream}/epel/\" }}\n"
    );
    let mut servers = String::new();
    let mut resolve = Vec::new();
    let mut silent = Vec::new();
    let mut served: Vec<SocketAddr> = Vec::new();
    let full: Vec<(&str, PathBuf)> = PROJECTS.iter().map(|p| (*p, d.join("modules").join(p))).collect();
    for p in PROJECTS {
        std::fs::create_dir_all(d.join("modules").join(p)).unwrap();
    }
    for (i, kind) in nodes.iter().enumerate() {
        let name = format!("{}{i}", format!("{kind:?}").to_lowercase());
        fleet.push_str(&format!(
            "\n[[node]]\nname = \"{name}\"\nsponsor = {{ name = \"Sponsor {i}\", url = \"https://s{i}.example/\" }}\n\
ipv4 = {{ address = \"192.0.2.{a}/31\", gateway = \"192.0.2.{b}\" }}\nipv6 = {{ address = \"2001:db8:{i}::2/64\", gateway = \"2001:db8:{i}::1\" }}\n",
            a = 2 * (i + 1),
            b = 2 * (i + 1) + 1
        ));
        let root = d.join("nodes").join(&name);
        let fqdn = format!("{name}.{DOMAIN}");
        let arch_t = if *kind == Kind::Lagging { t - 30 * 3600 } else { t };
        write(&root.join("archlinux/lastsync"), &format!("{arch_t}\n"));
        write(&root.join("epel").join(epel_marker), &repomd(t - 600));
        if *kind == Kind::FirstSync {
            // firstboot makes the (empty) project directory before the first sync.
            std::fs::create_dir_all(root.join("gimp")).unwrap();
        } else {
            write(&root.join("gimp/.mirror-trace").join(&fqdn), &trace(t - 3600));
        }
        let doc = match kind {
            Kind::Drifted => [("archlinux", "success"), ("epel", "failed"), ("kde", "success")],
            Kind::FirstSync => [("archlinux", "success"), ("epel", "success"), ("gimp", "running")],
            _ => [("archlinux", "success"), ("epel", "success"), ("gimp", "success")],
        };
        let projects: Vec<Value> = doc.iter().map(|(p, r)| serde_json::json!({"project": p, "result": r, "check_errors": 0})).collect();
        // The drifted node also runs an older image than the fleet's build (FLEET_IMAGE).
        let image = if *kind == Kind::Drifted { OLD_IMAGE } else { FLEET_IMAGE };
        // The drifted node tried the fleet's build and fell back (what mm-sync publishes then).
        let rollback = (*kind == Kind::Drifted).then(|| serde_json::json!({"image_version": FLEET_IMAGE, "at_unix": 1_796_000_000}));
        write(
            &root.join(".mm/status.json"),
            &serde_json::json!({"version": 1, "node": fqdn, "image_version": image, "projects": projects, "last_rollback": rollback})
                .to_string(),
        );
        let (h4, h6, r4, r6) = match kind {
            Kind::Fresh | Kind::Lagging | Kind::WrongModule | Kind::Drifted | Kind::FirstSync => {
                let (p4, p6) = (free_port("127.0.0.1"), free_port("::1"));
                let mut tls = String::new();
                if https {
                    let (t4, t6) = (free_port("127.0.0.1"), free_port("::1"));
                    tls = format!(
                        " listen 127.0.0.1:{t4} ssl;\n listen [::1]:{t6} ssl;\n ssl_certificate {d}/cert.pem;\n ssl_certificate_key {d}/key.pem;\n",
                        d = d.display()
                    );
                    resolve.push(format!("{name}:443=127.0.0.1:{t4}"));
                    resolve.push(format!("{name}:443=[::1]:{t6}"));
                }
                servers.push_str(&format!(
                    "server {{\n listen 127.0.0.1:{p4};\n listen [::1]:{p6};\n{tls} root {};\n location / {{ autoindex on; }}\n}}\n",
                    root.display()
                ));
                // One daemon per node and family, as on a real fleet (rsync's listen backlog is 5:
                // a daemon shared by fifty nodes drops connections under parallel probing).
                let mods: Vec<(&str, PathBuf)> = if *kind == Kind::WrongModule {
                    vec![full[0].clone(), full[1].clone(), ("gimp-old", full[2].1.clone())]
                } else {
                    full.clone()
                };
                let (a, r4) = rsyncd(d, &format!("{name}-4"), "127.0.0.1", &mods);
                let (b, r6) = rsyncd(d, &format!("{name}-6"), "::1", &mods);
                daemons.extend([a, b]);
                served.extend([SocketAddr::from(([127, 0, 0, 1], p4)), format!("[::1]:{p6}").parse().unwrap()]);
                (SocketAddr::from(([127, 0, 0, 1], p4)), format!("[::1]:{p6}").parse().unwrap(), r4, r6)
            }
            Kind::Down => {
                let c4 = SocketAddr::from(([127, 0, 0, 1], free_port("127.0.0.1")));
                let c6: SocketAddr = format!("[::1]:{}", free_port("::1")).parse().unwrap();
                (c4, c6, c4, c6)
            }
            Kind::Silent => {
                let l4 = TcpListener::bind("127.0.0.1:0").unwrap();
                let l6 = TcpListener::bind("[::1]:0").unwrap();
                let (a4, a6) = (l4.local_addr().unwrap(), l6.local_addr().unwrap());
                silent.extend([l4, l6]);
                (a4, a6, a4, a6)
            }
        };
        for (port, addr) in [(80, h4), (80, h6), (873, r4), (873, r6)] {
            resolve.push(format!("{name}:{port}={addr}"));
        }
        if https && matches!(kind, Kind::Down | Kind::Silent) {
            resolve.push(format!("{name}:443={h4}"));
            resolve.push(format!("{name}:443={h6}"));
        }
    }
    if !servers.is_empty() {
        let conf = d.join("nginx.conf");
        write(
            &conf,
            &format!(
                "user root;\npid {r}/nginx.pid;\nerror_log {r}/nginx-error.log;\nevents {{}}\nhttp {{\n access_log off;\n client_body_temp_path {r}/tmp;\n\
 proxy_temp_path {r}/tmp;\n fastcgi_temp_path {r}/tmp;\n uwsgi_temp_path {r}/tmp;\n scgi_temp_path {r}/tmp;\n{servers}}}\n",
                r = d.display()
            ),
        );
        let child = Command::new("nginx")
            .args(["-e", &d.join("nginx-error.log").to_string_lossy(), "-c"])
            .arg(&conf)
            .args(["-g", "daemon off;"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        daemons.push(Daemon(child));
        for a in &served {
            wait_port(*a);
        }
    }
    let path = d.join("fleet.toml");
    write(&path, &fleet);
    Fixture { dir, fleet: path, resolve, _daemons: daemons, _silent: silent }
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
    took: Duration,
}

fn status(f: &Fixture, extra: &[&str]) -> Run {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mmbuild"));
    cmd.arg("--data").arg(repo()).arg("status").arg(&f.fleet).args(extra);
    for r in &f.resolve {
        cmd.arg("--resolve").arg(r);
    }
    let t0 = Instant::now();
    let out = cmd.output().unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        took: t0.elapsed(),
    }
}

fn node<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["nodes"].as_array().unwrap().iter().find(|n| n["node"] == name).unwrap_or_else(|| panic!("no {name} in {report}"))
}

fn findings(n: &Value) -> Vec<String> {
    n["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| format!("{} {}", f["severity"].as_str().unwrap(), f["text"].as_str().unwrap()))
        .collect()
}

fn lag(n: &Value, project: &str) -> Option<u64> {
    n["freshness"].as_array().unwrap().iter().find(|f| f["project"] == project).unwrap()["lag_seconds"].as_u64()
}

#[test]
fn fresh_lagging_down_wrong_module_and_silent_nodes() {
    let f = fixture(&[Kind::Fresh, Kind::Lagging, Kind::Down, Kind::WrongModule, Kind::Silent], false);
    let run = status(&f, &["--json", "--timeout", "1"]);
    assert_eq!(run.code, 5, "unhealthy fleet: {}\n{}", run.stdout, run.stderr);
    let r: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(r["version"], 1);
    assert_eq!(r["healthy"], false);
    let names: Vec<&str> = r["nodes"].as_array().unwrap().iter().map(|n| n["node"].as_str().unwrap()).collect();
    assert_eq!(names, ["down2", "lagging1", "silent4", "wrongmodule3", "fresh0"], "worst first, then by name");

    let fresh = node(&r, "fresh0");
    assert_eq!((fresh["health"].as_str(), fresh["ipv4"].as_str(), fresh["ipv6"].as_str()), (Some("ok"), Some("ok"), Some("ok")), "{fresh}");
    assert_eq!(lag(fresh, "archlinux"), Some(0));
    assert_eq!(lag(fresh, "epel"), Some(0));
    // gimp has no upstream marker: the age of the node's own trace.
    let gimp = lag(fresh, "gimp").unwrap();
    assert!((3600..3700).contains(&gimp), "{gimp}");
    assert!(findings(fresh).is_empty(), "{:?}", findings(fresh));

    let lagging = node(&r, "lagging1");
    assert_eq!(lag(lagging, "archlinux"), Some(30 * 3600));
    assert_eq!(findings(lagging), ["fail archlinux: 30h00m behind its upstream (allowed 25h00m)"]);
    assert_eq!(lagging["ipv4"], "ok");

    let down = node(&r, "down2");
    assert_eq!((down["ipv4"].as_str(), down["ipv6"].as_str()), (Some("fail"), Some("fail")));
    let fd = findings(down);
    assert!(fd.iter().any(|t| t.starts_with("fail IPv4 http 127.0.0.1:") && t.ends_with("connection refused")), "{fd:?}");
    assert!(fd.iter().any(|t| t.starts_with("fail IPv6 rsync [::1]:") && t.ends_with("connection refused")), "{fd:?}");

    let wrong = node(&r, "wrongmodule3");
    let fw = findings(wrong);
    assert_eq!(fw.len(), 2, "{fw:?}");
    assert!(fw.iter().all(|t| t.contains("module gimp missing (the daemon lists: archlinux, epel, gimp-old)")), "{fw:?}");

    let silent = node(&r, "silent4");
    let fs = findings(silent);
    assert!(fs.iter().any(|t| t.starts_with("fail IPv4 http") && t.ends_with("no answer within 1s")), "{fs:?}");
    assert!(fs.iter().any(|t| t.starts_with("fail IPv6 rsync") && t.ends_with("no answer within 1s")), "{fs:?}");
    // One timeout per address, not one per project.
    assert_eq!(fs.len(), 4, "{fs:?}");
    eprintln!("five nodes, one silent, --timeout 1: {:?}", run.took);

    assert_eq!(r["upstreams"].as_object().unwrap().values().filter(|u| u["ok"] == true).count(), 2, "{}", r["upstreams"]);
}

#[test]
fn the_public_document_shows_failed_syncs_and_inventory_drift() {
    let f = fixture(&[Kind::Drifted], false);
    let run = status(&f, &["--json"]);
    assert_eq!(run.code, 5, "{}", run.stderr);
    let r: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(
        findings(node(&r, "drifted0")),
        [
            "fail epel: the last sync ended failed",
            "warn kde: served by the node but no longer in the inventory (rebuild the node's configuration)",
            "warn gimp: in the inventory but not on the node (added since it was built: rebuild its configuration)",
        ]
    );
}

const FLEET_IMAGE: &str = "20261104.024542-3f2a9c1e0b7d";
const OLD_IMAGE: &str = "20261001.000000-aaaaaaaaaaaa";

#[test]
fn nodes_not_on_the_fleets_build_are_behind_in_the_table_and_the_json() {
    let f = fixture(&[Kind::Fresh, Kind::Drifted], false);
    let build = f.dir.path().join("build");
    write(&build.join("manifest.json"), &serde_json::json!({"image_version": FLEET_IMAGE, "fleet": "x", "artifacts": []}).to_string());
    let run = status(&f, &["--json", "--out", build.to_str().unwrap()]);
    let r: Value = serde_json::from_str(&run.stdout).unwrap();
    let (fresh, drifted) = (node(&r, "fresh0"), node(&r, "drifted1"));
    assert_eq!(fresh["image"], serde_json::json!({"running": FLEET_IMAGE, "fleet": FLEET_IMAGE, "behind": false, "last_rollback": null}));
    let rolled = serde_json::json!({"image_version": FLEET_IMAGE, "at_unix": 1_796_000_000});
    assert_eq!(drifted["image"], serde_json::json!({"running": OLD_IMAGE, "fleet": FLEET_IMAGE, "behind": true, "last_rollback": rolled}));
    let want = format!("warn runs image {OLD_IMAGE}, not the fleet's build {FLEET_IMAGE}: roll the build out to it");
    assert!(findings(drifted).contains(&want), "{:?}", findings(drifted));
    assert!(findings(fresh).is_empty(), "{:?}", findings(fresh));
    let table = status(&f, &["--out", build.to_str().unwrap()]).stdout;
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("drifted1") && l.contains(&format!("{OLD_IMAGE} (behind), {FLEET_IMAGE} rolled back 2026-11-30"))),
        "{table}"
    );
    // Without the build, the version is shown and nothing is judged.
    let r: Value = serde_json::from_str(&status(&f, &["--json"]).stdout).unwrap();
    assert_eq!(
        node(&r, "drifted1")["image"],
        serde_json::json!({"running": OLD_IMAGE, "fleet": null, "behind": null, "last_rollback": rolled})
    );
    // A build directory without an image version is invalid input, and the message says why.
    write(&build.join("manifest.json"), r#"{"fleet": "x", "artifacts": []}"#);
    let bad = status(&f, &["--out", build.to_str().unwrap()]);
    assert_eq!(bad.code, 1, "{}", bad.stderr);
    assert!(bad.stderr.contains("manifest.json: no image_version"), "{}", bad.stderr);
}

#[test]
fn a_first_sync_still_running_is_a_warning_not_a_failure() {
    let f = fixture(&[Kind::FirstSync], false);
    let run = status(&f, &["--json"]);
    assert_eq!(run.code, 0, "{}", run.stdout);
    let r: Value = serde_json::from_str(&run.stdout).unwrap();
    let fs = findings(node(&r, "firstsync0"));
    assert_eq!(fs.len(), 1, "{fs:?}");
    assert!(fs[0].starts_with("warn gimp: first sync running (/gimp/.mirror-trace/firstsync0."), "{fs:?}");
}

#[test]
fn healthy_fleet_exits_zero_with_a_table() {
    let f = fixture(&[Kind::Fresh, Kind::Fresh], false);
    let run = status(&f, &[]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert!(lines[0].starts_with("NODE    STATE IPv4  IPv6  WORST LAG"), "{}", run.stdout);
    assert!(lines[1].starts_with("fresh0  OK    ok    ok    gimp 1h0"), "{}", run.stdout);
    assert_eq!(lines.last().unwrap(), &"2 node(s): 2 ok, 0 warn, 0 fail; fleet healthy");
    assert!(!run.stdout.contains('\x1b'), "no colour off a terminal");
    // --node narrows the run.
    let one = status(&f, &["--node", "fresh1"]);
    assert_eq!(one.stdout.lines().count(), 3, "{}", one.stdout);
}

#[test]
fn an_unreachable_upstream_warns_without_failing_the_node() {
    let f = fixture(&[Kind::Fresh], true);
    let run = status(&f, &["--json", "--upstream-timeout", "2"]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let r: Value = serde_json::from_str(&run.stdout).unwrap();
    let n = node(&r, "fresh0");
    assert_eq!(n["health"], "warn");
    let fs = findings(n);
    assert_eq!(fs.len(), 2, "{fs:?}");
    assert!(fs[0].starts_with("warn archlinux: upstream rsync://127.0.0.1:") && fs[0].contains("lag unknown"), "{fs:?}");
    assert_eq!(lag(n, "archlinux"), None);
}

#[test]
fn bad_resolve_and_unknown_nodes_are_usage_errors() {
    let f = fixture(&[Kind::Down], false);
    let bad =
        Command::new(env!("CARGO_BIN_EXE_mmbuild")).args(["status"]).arg(&f.fleet).args(["--resolve", "down0=1.2.3.4"]).output().unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("expected NODE:PORT=ADDR:PORT"));
    let unknown = Command::new(env!("CARGO_BIN_EXE_mmbuild"))
        .args(["status"])
        .arg(&f.fleet)
        .args(["--resolve", "nosuch:80=127.0.0.1:1"])
        .output()
        .unwrap();
    assert_eq!(unknown.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("no node \"nosuch\""), "{}", String::from_utf8_lossy(&unknown.stderr));
    // An unknown --node is refused before anything is probed, even beside a known one.
    let started = std::time::Instant::now();
    let o = Command::new(env!("CARGO_BIN_EXE_mmbuild"))
        .args(["status"])
        .arg(&f.fleet)
        .args(["--node", "down0", "--node", "nosuch"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains(&format!("mmbuild: error: --node nosuch: no such node in {}", f.fleet.display())), "{err}");
    assert!(o.stdout.is_empty(), "a table was printed: {}", String::from_utf8_lossy(&o.stdout));
    assert!(started.elapsed() < std::time::Duration::from_secs(2), "probed first: {:?}", started.elapsed());
    let _ = &f.dir;
}

#[test]
fn tls_expiry_and_verification_per_family() {
    let f = fixture_with(&[Kind::Fresh, Kind::Down], false, Some(10));
    let run = status(&f, &["--json", "--timeout", "2"]);
    let r: Value = serde_json::from_str(&run.stdout).unwrap();
    let fs = findings(node(&r, "fresh0"));
    // Both families: a self-signed certificate for another name fails, its near expiry warns.
    let verify: Vec<&String> =
        fs.iter().filter(|t| t.starts_with("fail ") && t.contains("does not verify for fresh0.mm.example.net")).collect();
    assert_eq!(verify.len(), 2, "{fs:?}");
    let expiry: Vec<&String> = fs
        .iter()
        .filter(|t| t.starts_with("warn ") && (t.ends_with("the certificate expires in 9d23h") || t.ends_with("expires in 10d0h")))
        .collect();
    assert_eq!(expiry.len(), 2, "{fs:?}");
    assert!(fs.iter().any(|t| t.starts_with("warn IPv6 https [::1]:")), "{fs:?}");
    // No listener on 443 is a warning (a node before its first certificate), next to its real failures.
    let fd = findings(node(&r, "down1"));
    assert!(fd.iter().any(|t| t.starts_with("warn IPv4 https 127.0.0.1:") && t.ends_with("connection refused")), "{fd:?}");
}

/// `scripts/bench`: 50 nodes on loopback (one nginx, one rsync daemon per family), --jobs 16.
/// Prints the wall time; asserts only that every node was judged healthy.
#[test]
#[ignore]
fn bench_fifty_nodes() {
    let f = fixture(&[Kind::Fresh; 50], false);
    let mut best = Duration::MAX;
    for _ in 0..3 {
        let run = status(&f, &["--jobs", "16", "--json"]);
        let r: Value = serde_json::from_str(&run.stdout).unwrap_or_default();
        let bad: Vec<Vec<String>> = r["nodes"].as_array().into_iter().flatten().filter(|n| n["health"] == "fail").map(findings).collect();
        assert_eq!(run.code, 0, "{bad:?}\n{}", run.stderr);
        best = best.min(run.took);
    }
    println!("BENCH status-50-all-answer {:.2}", best.as_secs_f64());
    let g = fixture(&[[Kind::Fresh; 45].as_slice(), &[Kind::Silent; 5]].concat(), false);
    let run = status(&g, &["--jobs", "16", "--json", "--timeout", "2"]);
    assert_eq!(run.code, 5);
    println!("BENCH status-50-five-silent-timeout-2 {:.2}", run.took.as_secs_f64());
}
