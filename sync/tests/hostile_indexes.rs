//! The consistency check against hostile upstream indexes: decompression bombs (made at test time
//! by the real gzip, xz and zstd), absurd entry counts, deep XML, paths that climb out, are
//! absolute or hold a NUL. Each gives a check error naming the file, never a panic, an
//! unbounded read or a read outside the mirror; `mm-sync --check` reports them with exit 5.

use std::path::Path;
use std::process::Command;

use hostkit::testenv::{need, Need};
use mm_sync::repocheck::{check_tree_with, Excludes, Limits, Report, MAX_XML_DEPTH};
use mmconfig::{CheckKind, NodeConfig};
use sha2::{Digest, Sha256};

/// Small bounds, so a bomb is cheap to make and to detect; the real ones are the same code.
const SMALL: Limits = Limits { index_bytes: 1 << 20, top_bytes: 64 << 10, entries: 100, xml_depth: MAX_XML_DEPTH };

fn write(path: &Path, data: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, data).unwrap();
}

/// `data` through `tool` (gzip, xz, zstd) at its fastest.
fn compress(tool: &str, data: Vec<u8>) -> Vec<u8> {
    hostkit::cmd::run_with_input(Command::new(tool).args(["-c", "-1"]), data).unwrap().stdout
}

fn sha256(data: &[u8]) -> String {
    format!("{:x}", Sha256::digest(data))
}

fn check(kind: CheckKind, tree: &Path, limits: &Limits) -> Report {
    check_tree_with(kind, tree, &Excludes::default(), false, limits).unwrap()
}

/// An apt suite whose Release lists `name` (with its real size and hash) holding `data`.
fn apt_tree(tree: &Path, name: &str, data: &[u8]) {
    let suite = tree.join("dists/stable");
    write(&suite.join(name), data);
    write(&suite.join("Release"), format!("Suite: stable\nSHA256:\n {} {} {name}\n", sha256(data), data.len()).as_bytes());
}

/// An rpm repository whose repomd.xml lists `primary` (real size and hash) holding `data`.
fn rpm_tree(tree: &Path, primary: &str, data: &[u8]) {
    write(&tree.join("repodata").join(primary), data);
    let repomd = format!(
        r#"<?xml version="1.0"?><repomd><data type="primary"><checksum type="sha256">{}</checksum><location href="repodata/{primary}"/><size>{}</size></data></repomd>"#,
        sha256(data),
        data.len()
    );
    write(&tree.join("repodata/repomd.xml"), repomd.as_bytes());
}

fn one_error_with(r: &Report, parts: &[&str]) {
    assert!(r.errors.iter().any(|e| parts.iter().all(|p| e.contains(p))), "no error with {parts:?} in {:#?}", r.errors);
}

#[test]
fn decompression_bombs_stop_at_the_bound_naming_the_file() {
    if need(&[Need::Tool("gzip"), Need::Tool("xz"), Need::Tool("zstd")]).is_err() {
        return;
    }
    // 8 MiB of zeros (8 times the bound) compresses to a few KB: a bomb at this scale.
    let zeros = vec![0u8; 8 << 20];
    for (tool, ext) in [("gzip", "gz"), ("xz", "xz"), ("zstd", "zst")] {
        let bomb = compress(tool, zeros.clone());
        assert!(bomb.len() < 64 << 10, "{tool}: {} bytes", bomb.len());
        let dir = tempfile::tempdir().unwrap();
        apt_tree(dir.path(), &format!("main/binary-amd64/Packages.{ext}"), &bomb);
        let r = check(CheckKind::Apt, dir.path(), &SMALL);
        one_error_with(&r, &[&format!("Packages.{ext}"), "larger than 1 MiB once decompressed", "decompression bomb"]);

        let dir = tempfile::tempdir().unwrap();
        rpm_tree(dir.path(), &format!("x-primary.xml.{ext}"), &bomb);
        let r = check(CheckKind::Rpm, dir.path(), &SMALL);
        one_error_with(&r, &[&format!("x-primary.xml.{ext}"), "larger than 1 MiB"]);
    }
    // Just under the bound is read (an honest big index is not a bomb).
    let dir = tempfile::tempdir().unwrap();
    apt_tree(dir.path(), "main/binary-amd64/Packages.gz", &compress("gzip", vec![b'\n'; (1 << 20) - 1]));
    let r = check(CheckKind::Apt, dir.path(), &SMALL);
    assert!(r.ok() && r.indexes == 2, "{r:#?}");
}

#[test]
fn oversized_release_and_repomd_are_errors_not_reads() {
    let dir = tempfile::tempdir().unwrap();
    write(&dir.path().join("dists/stable/Release"), &vec![b' '; (64 << 10) + 1]);
    let r = check(CheckKind::Apt, dir.path(), &SMALL);
    one_error_with(&r, &["dists/stable/Release", "larger than 65536 bytes"]);

    let dir = tempfile::tempdir().unwrap();
    write(&dir.path().join("repodata/repomd.xml"), &vec![b' '; (64 << 10) + 1]);
    let r = check(CheckKind::Rpm, dir.path(), &SMALL);
    one_error_with(&r, &["repodata/repomd.xml", "larger than 65536 bytes"]);
}

#[test]
fn absurd_entry_counts_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let stanzas: String = (0..101).map(|i| format!("Package: p{i}\nFilename: pool/p{i}.deb\nSize: 1\n\n")).collect();
    apt_tree(dir.path(), "main/binary-amd64/Packages", stanzas.as_bytes());
    let r = check(CheckKind::Apt, dir.path(), &SMALL);
    one_error_with(&r, &["main/binary-amd64/Packages", "lists more than 100 entries"]);
    assert_eq!(r.files_checked, 1, "only the index itself was checked: {r:#?}");

    let dir = tempfile::tempdir().unwrap();
    let lines: String = (0..101).map(|i| format!(" {} 1 main/f{i}\n", "0".repeat(64))).collect();
    write(&dir.path().join("dists/stable/Release"), format!("SHA256:\n{lines}").as_bytes());
    let r = check(CheckKind::Apt, dir.path(), &SMALL);
    one_error_with(&r, &["dists/stable/Release", "lists more than 100 entries"]);

    let dir = tempfile::tempdir().unwrap();
    let pkgs: String = (0..101).map(|i| format!(r#"<package type="rpm"><location href="p{i}.rpm"/></package>"#)).collect();
    rpm_tree(dir.path(), "x-primary.xml", format!("<metadata>{pkgs}</metadata>").as_bytes());
    let r = check(CheckKind::Rpm, dir.path(), &SMALL);
    one_error_with(&r, &["x-primary.xml", "lists more than 100 entries"]);
}

#[test]
fn deeply_nested_xml_is_refused_at_the_default_depth() {
    let limits = Limits::default();
    let deep = |n: usize| format!("{}{}", "<a>".repeat(n), "</a>".repeat(n));
    let dir = tempfile::tempdir().unwrap();
    write(&dir.path().join("repodata/repomd.xml"), format!("<repomd>{}</repomd>", deep(100_000)).as_bytes());
    let r = check(CheckKind::Rpm, dir.path(), &limits);
    one_error_with(&r, &["repodata/repomd.xml", &format!("nested deeper than {MAX_XML_DEPTH}")]);

    let dir = tempfile::tempdir().unwrap();
    rpm_tree(dir.path(), "x-primary.xml", format!("<metadata><package>{}</package></metadata>", deep(MAX_XML_DEPTH)).as_bytes());
    let r = check(CheckKind::Rpm, dir.path(), &limits);
    one_error_with(&r, &["x-primary.xml", "nested deeper"]);
    // Real metadata nests a handful of levels: well within the bound.
    let dir = tempfile::tempdir().unwrap();
    write(&dir.path().join("p.rpm"), b"x");
    rpm_tree(
        dir.path(),
        "x-primary.xml",
        format!(r#"<metadata><package><location href="p.rpm"/>{}</package></metadata>"#, deep(8)).as_bytes(),
    );
    let r = check(CheckKind::Rpm, dir.path(), &limits);
    assert!(r.ok() && r.files_checked == 2, "{r:#?}");
}

#[test]
fn index_paths_that_climb_out_are_absolute_or_hold_nul_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let hostile = ["../../../etc/passwd", "/etc/passwd", "pool/a\0b.deb"];
    let stanzas: String = hostile.iter().map(|f| format!("Package: x\nFilename: {f}\nSize: 1\n\n")).collect();
    apt_tree(dir.path(), "main/binary-amd64/Packages", stanzas.as_bytes());
    let r = check(CheckKind::Apt, dir.path(), &Limits::default());
    one_error_with(&r, &["main/binary-amd64/Packages", "../../../etc/passwd", "`..`"]);
    one_error_with(&r, &["main/binary-amd64/Packages", "\"/etc/passwd\"", "absolute"]);
    one_error_with(&r, &["main/binary-amd64/Packages", "NUL"]);
    assert_eq!(r.errors.len(), 3, "{:#?}", r.errors);

    let dir = tempfile::tempdir().unwrap();
    write(&dir.path().join("dists/stable/Release"), format!("SHA256:\n {} 1 ../../../etc/passwd\n", "0".repeat(64)).as_bytes());
    let r = check(CheckKind::Apt, dir.path(), &Limits::default());
    one_error_with(&r, &["dists/stable/Release", "`..`"]);

    let dir = tempfile::tempdir().unwrap();
    let pkgs: String =
        hostile.iter().map(|h| format!(r#"<package type="rpm"><location href="{}"/></package>"#, h.replace('\0', "&#0;"))).collect();
    rpm_tree(dir.path(), "x-primary.xml", format!("<metadata>{pkgs}</metadata>").as_bytes());
    let r = check(CheckKind::Rpm, dir.path(), &Limits::default());
    one_error_with(&r, &["x-primary.xml", "`..`"]);
    one_error_with(&r, &["x-primary.xml", "absolute"]);
}

#[test]
fn mm_sync_check_reports_hostile_indexes_as_problems_with_exit_5() {
    let dir = tempfile::tempdir().unwrap();
    let nodes: Vec<NodeConfig> = serde_json::from_str(include_str!("../../tests/fixtures/example-nodes.json")).unwrap();
    let cfg = nodes.into_iter().find(|n| n.projects.iter().any(|p| p.name == "debian")).unwrap();
    let p = cfg.project("debian").unwrap();
    let tree = dir.path().join("root").join(mmconfig::DATA_MOUNT.trim_start_matches('/')).join(&p.directory);
    apt_tree(&tree, "main/binary-amd64/Packages", b"Package: x\nFilename: ../../../../etc/shadow\nSize: 1\n");
    let config = dir.path().join("node.toml");
    write(&config, cfg.to_toml().as_bytes());
    let out = Command::new(env!("CARGO_BIN_EXE_mm-sync"))
        .arg("--config")
        .arg(&config)
        .arg("--root")
        .arg(dir.path().join("root"))
        .args(["--check", "debian"])
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(5), "{text}");
    assert!(
        text.contains("debian: PROBLEM: ") && text.contains("main/binary-amd64/Packages: names \"../../../../etc/shadow\": `..`"),
        "{text}"
    );
}
