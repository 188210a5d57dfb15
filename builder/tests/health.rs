//! `mmbuild status` against real daemons on loopback: one nginx serving every fixture node (a
//! server per node, IPv4 and IPv6), rsync daemons for the nodes' modules and for the upstream,
//! a closed port and a socket that accepts and never answers. Needs root, nginx and rsync.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::loopfleet::*;
use serde_json::Value;

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
