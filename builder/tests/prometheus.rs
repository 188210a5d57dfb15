//! `mmbuild export prometheus`: the output checked by the real promtool (config, rules, rule unit
//! tests) and the blackbox modules exercised by a real blackbox_exporter against a real rsync
//! daemon and nginx on loopback. Needs promtool, prometheus-blackbox-exporter, rsync, nginx.

use hostkit::testenv::free_port;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

struct Daemon(Child);
impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg(self.0.id().to_string()).status();
        let _ = self.0.wait();
    }
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn wait_port(port: u16) {
    for _ in 0..200 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!("nothing listens on {port}");
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{cmd:?} failed:\n{text}");
    text
}

fn export(fleet: &Path, out: &Path) {
    run(Command::new(env!("CARGO_BIN_EXE_mmbuild")).args(["export", "prometheus"]).arg(fleet).arg("--out").arg(out));
}

#[test]
fn promtool_accepts_the_config_and_rules_and_the_rule_tests_pass() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path();
    export(&repo().join("examples/fleet.toml"), out);
    let cfg = run(Command::new("promtool").arg("check").arg("config").arg(out.join("prometheus.yml")));
    assert!(cfg.contains("SUCCESS: 1 rule files found"), "{cfg}");
    let rules = run(Command::new("promtool").arg("check").arg("rules").arg(out.join("rules.yml")));
    assert!(rules.contains("SUCCESS: 27 rules found"), "{rules}");
    run(Command::new("prometheus-blackbox-exporter").arg("--config.check").arg("--config.file").arg(out.join("blackbox.yml")));
    // Fires when stale, silent when fresh (and the other alerts): promtool's own unit tests.
    std::fs::copy(repo().join("builder/tests/fixtures/prometheus-rules-test.yml"), out.join("rules-test.yml")).unwrap();
    let t = run(Command::new("promtool").arg("test").arg("rules").arg(out.join("rules-test.yml")));
    assert!(t.contains("SUCCESS"), "{t}");

    // Same fleet, same bytes; a rerun replaces every file atomically (no temporaries left).
    let again = dir.path().join("again");
    export(&repo().join("examples/fleet.toml"), &again);
    for f in ["prometheus.yml", "blackbox.yml", "rules.yml", "targets/node.json", "targets/blackbox.json"] {
        assert_eq!(std::fs::read(out.join(f)).unwrap(), std::fs::read(again.join(f)).unwrap(), "{f}");
    }
    let names: Vec<String> =
        std::fs::read_dir(again.join("targets")).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert_eq!(names.len(), 2, "{names:?}");
}

/// With the fleet's build, an alert for nodes on another image for over a week (promtool's own
/// unit tests); a build without an image version is refused.
#[test]
fn the_image_alert_fires_for_a_node_on_another_image_for_a_week() {
    let dir = tempfile::tempdir().unwrap();
    let (out, build) = (dir.path().join("out"), dir.path().join("build"));
    std::fs::create_dir_all(&build).unwrap();
    let manifest = build.join("manifest.json");
    std::fs::write(&manifest, r#"{"image_version": "20261104.024542-3f2a9c1e0b7d", "fleet": "example", "artifacts": []}"#).unwrap();
    let fleet = repo().join("examples/fleet.toml");
    let export = || {
        Command::new(env!("CARGO_BIN_EXE_mmbuild"))
            .args(["export", "prometheus"])
            .arg(&fleet)
            .arg("--out")
            .arg(&out)
            .arg("--build")
            .arg(&build)
            .output()
            .unwrap()
    };
    let o = export();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let rules = run(Command::new("promtool").arg("check").arg("rules").arg(out.join("rules.yml")));
    assert!(rules.contains("SUCCESS: 28 rules found"), "{rules}");
    std::fs::copy(repo().join("builder/tests/fixtures/prometheus-image-rules-test.yml"), out.join("image-test.yml")).unwrap();
    let t = run(Command::new("promtool").arg("test").arg("rules").arg(out.join("image-test.yml")));
    assert!(t.contains("SUCCESS"), "{t}");

    std::fs::write(&manifest, r#"{"fleet": "example", "artifacts": []}"#).unwrap();
    let o = export();
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("no image_version"), "{}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn an_invalid_fleet_exports_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let fleet = dir.path().join("fleet.toml");
    std::fs::write(&fleet, "[fleet]\nname = 1\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_mmbuild"))
        .args(["export", "prometheus"])
        .arg(&fleet)
        .arg("--out")
        .arg(dir.path().join("o"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("fleet.toml:"), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!dir.path().join("o").exists());
}

/// Ask the exporter to probe `target` with `module`: whether probe_success is 1, and the
/// exporter's own log of the probe (`debug=true`) for a failure message.
fn probe(exporter: u16, module: &str, target: &str) -> (bool, String) {
    let url = format!("http://127.0.0.1:{exporter}/probe?module={module}&target={target}&debug=true");
    let out = Command::new("curl").args(["-s", "-m", "20", &url]).output().unwrap();
    let body = String::from_utf8_lossy(&out.stdout).into_owned();
    let line = body.lines().find(|l| l.starts_with("probe_success ")).unwrap_or_else(|| panic!("{url}: {body}"));
    (line.ends_with(" 1"), body)
}

/// Each daemon still running after its port answered: the answer came from it, not from a
/// process that took the port first.
fn assert_running(daemons: &mut [(&str, &mut Daemon)]) {
    for (name, d) in daemons {
        assert!(d.0.try_wait().unwrap().is_none(), "{name} exited; its port was taken or its config refused");
    }
}

#[test]
fn blackbox_modules_probe_a_real_rsync_daemon_and_nginx_per_family() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let out = d.join("export");
    export(&repo().join("examples/fleet.toml"), &out);

    // A node's services: rsync module epel (no archlinux), nginx serving /epel/.
    std::fs::create_dir_all(d.join("tree/epel")).unwrap();
    let rport = free_port("127.0.0.1");
    std::fs::write(
        d.join("rsyncd.conf"),
        format!(
            "use chroot = no\nuid = root\ngid = root\nmotd file = {0}/motd\n[epel]\n    path = {0}/tree/epel\n    comment = EPEL\n",
            d.display()
        ),
    )
    .unwrap();
    // A motd before the greeting's answer, as the nodes have: the expect must look past it.
    std::fs::write(d.join("motd"), "node.example - a Micro Mirror node\nProjects: epel\n").unwrap();
    let mut rsync_d = Daemon(
        Command::new("rsync")
            .args(["--daemon", "--no-detach", "--address=127.0.0.1", &format!("--port={rport}")])
            .arg(format!("--config={}", d.join("rsyncd.conf").display()))
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let hport = free_port("127.0.0.1");
    std::fs::write(
        d.join("nginx.conf"),
        format!(
            "pid {0}/nginx.pid;\nevents {{}}\nhttp {{\n access_log off;\n client_body_temp_path {0}/tmp;\n proxy_temp_path {0}/tmp;\n fastcgi_temp_path {0}/tmp;\n uwsgi_temp_path {0}/tmp;\n scgi_temp_path {0}/tmp;\n server {{\n  listen 127.0.0.1:{hport};\n  root {0}/tree;\n  location / {{ autoindex on; }}\n }}\n}}\n",
            d.display()
        ),
    )
    .unwrap();
    let mut nginx_d = Daemon(
        Command::new("nginx")
            .args(["-e", &d.join("nginx-error.log").to_string_lossy(), "-c"])
            .arg(d.join("nginx.conf"))
            .args(["-g", "daemon off;"])
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let bport = free_port("127.0.0.1");
    let mut bb_d = Daemon(
        Command::new("prometheus-blackbox-exporter")
            .arg("--config.file")
            .arg(out.join("blackbox.yml"))
            .arg(format!("--web.listen-address=127.0.0.1:{bport}"))
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    for p in [rport, hport, bport] {
        wait_port(p);
    }
    assert_running(&mut [("rsync --daemon", &mut rsync_d), ("nginx", &mut nginx_d), ("blackbox_exporter", &mut bb_d)]);
    let rsync = format!("127.0.0.1:{rport}");
    let http = |path: &str| format!("http://127.0.0.1:{hport}{path}");
    for (module, target, want, why) in [
        ("mm_rsync_epel_ipv4", rsync.clone(), true, "the greeting, then module epel admitted"),
        ("mm_rsync_archlinux_ipv4", rsync.clone(), false, "a module the daemon does not have fails"),
        ("mm_rsync_epel_ipv6", rsync.clone(), false, "the IPv6 module never falls back to IPv4"),
        ("mm_http_ipv4", http("/epel/"), true, "a listing answers 200"),
        ("mm_http_ipv4", http("/archlinux/"), false, "404 fails"),
        ("mm_http_ipv6", http("/epel/"), false, "the IPv6 module never falls back to IPv4"),
    ] {
        let (ok, log) = probe(bport, module, &target);
        assert_eq!(ok, want, "{why}: {module} on {target}; the exporter's log:\n{log}");
    }
}
