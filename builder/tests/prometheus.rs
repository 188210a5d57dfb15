//! `mmbuild export prometheus`: the output checked by the real promtool (config, rules, rule unit
//! tests) and the blackbox modules exercised by a real blackbox_exporter against a real rsync
//! daemon and nginx on loopback. Needs promtool, prometheus-blackbox-exporter, rsync, nginx.

use hostkit::testenv::free_port;
use std::collections::BTreeSet;
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
    // The rules the fleet calls for (two per project it mirrors, the fleet-wide ones once), read
    // back with a real YAML parser; promtool must count exactly as many.
    let fleet = mmbuild::inventory::fleet::load(&repo().join("examples/fleet.toml"), None).unwrap();
    let projects: BTreeSet<&str> = fleet.nodes.iter().flat_map(|n| n.projects.iter().map(|p| p.name.as_str())).collect();
    assert!(projects.len() > 1, "{projects:?}");
    let mut want: Vec<(String, String)> =
        projects.iter().flat_map(|p| ["MirrorSyncStale", "MirrorSyncMetricsStale"].map(|a| (a.to_string(), p.to_string()))).collect();
    want.extend(FLEET_WIDE_ALERTS.iter().map(|a| (a.to_string(), String::new())));
    want.sort();
    let mut got: Vec<(String, String)> = rules_of(&out.join("rules.yml")).into_iter().map(|r| (r.alert, r.project)).collect();
    got.sort();
    assert_eq!(got, want);
    let rules = run(Command::new("promtool").arg("check").arg("rules").arg(out.join("rules.yml")));
    assert!(rules.contains(&format!("SUCCESS: {} rules found", want.len())), "{rules}");
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
    // The build adds exactly one rule to what the same fleet gets without it; promtool counts
    // what the YAML holds.
    let without = dir.path().join("without");
    run(Command::new(env!("CARGO_BIN_EXE_mmbuild")).args(["export", "prometheus"]).arg(&fleet).arg("--out").arg(&without));
    let alerts = |f: &Path| rules_of(f).into_iter().map(|r| (r.alert, r.project)).collect::<Vec<_>>();
    let (mut with, mut plain) = (alerts(&out.join("rules.yml")), alerts(&without.join("rules.yml")));
    plain.push(("MirrorNodeImageBehind".to_string(), String::new()));
    with.sort();
    plain.sort();
    assert_eq!(with, plain);
    let rules = run(Command::new("promtool").arg("check").arg("rules").arg(out.join("rules.yml")));
    assert!(rules.contains(&format!("SUCCESS: {} rules found", with.len())), "{rules}");
    std::fs::copy(repo().join("builder/tests/fixtures/prometheus-image-rules-test.yml"), out.join("image-test.yml")).unwrap();
    let t = run(Command::new("promtool").arg("test").arg("rules").arg(out.join("image-test.yml")));
    assert!(t.contains("SUCCESS"), "{t}");

    std::fs::write(&manifest, r#"{"fleet": "example", "artifacts": []}"#).unwrap();
    let o = export();
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("no image_version"), "{}", String::from_utf8_lossy(&o.stderr));
}

/// The alerts every fleet gets once, whatever it mirrors.
const FLEET_WIDE_ALERTS: &[&str] = &[
    "MirrorSyncFailed",
    "MirrorConsistencyErrors",
    "MirrorTextfileUnreadable",
    "MirrorNodeDown",
    "MirrorDiskFullIn7Days",
    "MirrorProbeFailing",
    "MirrorCertExpiringSoon",
    "MirrorNodeRolledBack",
    "MirrorNodeServesNothing",
    "MirrorTrafficCountsStale",
];

/// One alerting rule as a YAML parser reads it.
struct Rule {
    alert: String,
    project: String,
    expr: String,
}

/// A real YAML parser's output, one tab-separated record per line (fields hold no tab or newline).
fn python_yaml(file: &Path, script: &str) -> Vec<Vec<String>> {
    let text =
        run(Command::new("python3").args(["-c", &format!("import sys, yaml\nd = yaml.safe_load(open(sys.argv[1]))\n{script}")]).arg(file));
    text.lines().map(|l| l.split('\t').map(String::from).collect()).collect()
}

fn rules_of(file: &Path) -> Vec<Rule> {
    let script = "for g in d['groups']:\n for r in g['rules']:\n  print(r['alert'], r.get('labels', {}).get('project', ''), ' '.join(r['expr'].split()), sep='\\t')";
    python_yaml(file, script).into_iter().map(|f| Rule { alert: f[0].clone(), project: f[1].clone(), expr: f[2].clone() }).collect()
}

/// The metric names a PromQL expression reads: identifiers outside string literals and outside
/// `{...}` label matchers, not followed by `(` (functions).
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let (mut quote, mut braces, mut word) = (None, 0, String::new());
    let mut chars = expr.chars().chain(std::iter::once(' ')).peekable();
    while let Some(c) = chars.next() {
        if let Some(q) = quote {
            if c == '\\' {
                chars.next();
            } else if c == q {
                quote = None;
            }
            continue;
        }
        if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
            word.push(c);
            continue;
        }
        if !word.is_empty() && braces == 0 && c != '(' && !word.starts_with(|d: char| d.is_ascii_digit()) {
            names.insert(std::mem::take(&mut word));
        }
        word.clear();
        match c {
            '"' | '\'' | '`' => quote = Some(c),
            '{' => braces += 1,
            '}' => braces -= 1,
            _ => {}
        }
    }
    names
}

#[test]
fn metric_names_are_read_from_promql() {
    let got = metric_names(r#"time() - mm_a{project="x{y}", file=~"(.*/)?mm_b"} > 9 - max(mm_c[5m]) * 86400"#);
    assert_eq!(got, ["mm_a", "mm_c"].map(String::from).into(), "{got:?}");
}

/// Every `mm_*` series the rules and their unit tests read is one mm-sync really writes (its
/// textfile renderer, the one the node runs); the textfile mtime rule watches the file mm-sync
/// writes. A renamed metric would leave alerts that can never fire.
#[test]
fn the_rules_read_the_series_mm_sync_writes() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path();
    export(&repo().join("examples/fleet.toml"), out);
    let st = mm_sync::outcome::SyncStatus { project: "epel".into(), ..Default::default() };
    // What mm-firstboot writes beside it: the image, its slot and the last rollback.
    let os = mmconfig::os::OsStatus {
        version: 1,
        image_version: Some("20261104.024542-3f2a9c1e0b7d".into()),
        slot: Some(mmconfig::os::Slot::A),
        trial: false,
        entries: vec![],
        rollbacks: vec![mmconfig::os::Rollback {
            version: "20261201.000000-bbbbbbbbbbbb".into(),
            slot: mmconfig::os::Slot::B,
            reason: String::new(),
            at: Some(1),
        }],
    };
    let image = mm_firstboot::services::render_image_metric("20261104.024542-3f2a9c1e0b7d", Some(&os)).unwrap();
    let mut traffic = mm_sync::traffic::tally::State::new();
    traffic.skip("malformed");
    let text = mm_sync::records::render_metrics(&st, Some(1)) + &traffic.metrics(1) + &String::from_utf8(image.contents).unwrap();
    let emitted: BTreeSet<String> =
        text.lines().filter_map(|l| l.strip_prefix("# TYPE ")?.split_whitespace().next().map(String::from)).collect();
    assert!(emitted.contains("mm_sync_check_errors"), "{emitted:?}");
    let rules = rules_of(&out.join("rules.yml"));
    let read: BTreeSet<String> = rules.iter().flat_map(|r| metric_names(&r.expr)).filter(|n| n.starts_with("mm_")).collect();
    assert!(read.len() >= 3, "{read:?}");
    let series = python_yaml(
        &repo().join("builder/tests/fixtures/prometheus-rules-test.yml"),
        "for t in d['tests']:\n for s in t['input_series']:\n  print(s['series'])",
    );
    let fed: BTreeSet<String> =
        series.iter().map(|f| f[0].split('{').next().unwrap().to_string()).filter(|n| n.starts_with("mm_")).collect();
    assert!(!fed.is_empty());
    for name in read.iter().chain(&fed) {
        assert!(
            emitted.contains(name),
            "{name} is read by the alert rules or their tests, but mm-sync and mm-firstboot write only {emitted:?}"
        );
    }

    // The file label the staleness rule matches: the path mm-sync writes, for each project.
    let fleet = mmbuild::inventory::fleet::load(&repo().join("examples/fleet.toml"), None).unwrap();
    let env = mm_sync::engine::Env { root: "/".into(), rsync: String::new(), keep_log_days: 0 };
    let mut checked = 0;
    for p in fleet.nodes.iter().flat_map(|n| &n.projects) {
        let file = env.metrics_file(p).display().to_string();
        let rule = rules.iter().find(|r| r.alert == "MirrorSyncMetricsStale" && r.project == p.name).unwrap();
        let regex = rule.expr.split("file=~").nth(1).and_then(|r| r.split('}').next()).unwrap();
        // Prometheus anchors label regexes: fullmatch. The regex is a PromQL string (JSON-like quoting).
        let ok = run(Command::new("python3").args([
            "-c",
            "import json, re, sys; print(bool(re.fullmatch(json.loads(sys.argv[1]), sys.argv[2])))",
            regex,
            &file,
        ]));
        assert_eq!(ok.trim(), "True", "{} rule regex {regex} does not match {file}", p.name);
        checked += 1;
    }
    assert!(checked > 0);
    let epel = fleet.nodes.iter().flat_map(|n| &n.projects).find(|p| p.name == "epel").unwrap();
    let epel_file = env.metrics_file(epel).display().to_string();
    for f in series.iter().filter(|f| f[0].starts_with("node_textfile_mtime_seconds")) {
        assert!(f[0].contains(&format!("file=\"{epel_file}\"")), "the rule tests feed a file mm-sync does not write: {}", f[0]);
    }
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
