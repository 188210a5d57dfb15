//! `mmbuild check`: one fixture per validation rule, asserting exit code and the error text.

use std::path::{Path, PathBuf};
use std::process::Command;

const KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOozE4famK1j6NfXCWFhGYm39GKIAWKfHlpUtwM5i4R9 ops@example.net";

/// A valid two-node fleet; each case edits one thing.
fn valid_fleet() -> String {
    format!(
        r#"[fleet]
name = "t"
domain = "mm.example.net"
contact = "mirror@example.net"
admin_ssh_keys = ["{KEY}"]
admin_prefixes = ["192.0.2.0/24", "2001:db8:ffff::/48"]

[defaults]
hardware = "wasp"
projects = ["epel"]
dns = ["9.9.9.9"]

[[node]]
name = "alpha"
sponsor = {{ name = "Alpha & Co", url = "https://alpha.example/" }}
ipv4 = {{ address = "192.0.2.10/31", gateway = "192.0.2.11" }}
ipv6 = {{ address = "2001:db8:10::2/64", gateway = "2001:db8:10::1" }}

[[node]]
name = "beta"
hardware = "qemu"
sponsor = {{ name = "Beta", url = "http://beta.example/" }}
ipv4 = {{ address = "10.0.2.15/24", gateway = "10.0.2.2" }}
"#
    )
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

struct Outcome {
    code: i32,
    stdout: String,
    stderr: String,
}

fn check_text(text: &str, extra: &[&str]) -> Outcome {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fleet.toml");
    std::fs::write(&path, text).unwrap();
    check_path(&path, extra)
}

fn check_path(path: &Path, extra: &[&str]) -> Outcome {
    let out = Command::new(env!("CARGO_BIN_EXE_mmbuild")).arg("check").arg(path).args(extra).env("MMBUILD_DATA", repo()).output().unwrap();
    Outcome {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into(),
        stderr: String::from_utf8_lossy(&out.stderr).into(),
    }
}

#[test]
fn valid_fleet_passes() {
    let out = check_text(&valid_fleet(), &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.contains("alpha.mm.example.net"), "{}", out.stdout);
    assert!(out.stderr.is_empty(), "{}", out.stderr);
}

#[test]
fn example_fleet_passes_and_resolves_every_node() {
    let out = check_path(&repo().join("examples/fleet.toml"), &["--json"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let nodes: Vec<mmconfig::NodeConfig> = serde_json::from_str(&out.stdout).unwrap();
    let hw: std::collections::BTreeSet<_> = nodes.iter().map(|n| n.hardware.name.as_str()).collect();
    assert_eq!(hw.into_iter().collect::<Vec<_>>(), ["honeybee", "qemu", "termite", "wasp"]);
    assert!(nodes.iter().any(|n| n.node.ipv4.is_none() && n.node.ipv6.is_some()), "an IPv6-only node");
    assert!(nodes.iter().any(|n| n.node.ipv4.as_ref().is_some_and(|a| a.address.ends_with("/31"))), "a /31 node");
    let ci = nodes.iter().find(|n| n.hardware.name == "qemu").unwrap();
    assert_eq!(ci.node.ipv4.as_ref().unwrap().address, "10.0.2.15/24");
    assert_eq!(ci.node.ipv4.as_ref().unwrap().gateway, "10.0.2.2");
    // The per-node upstream override reaches the resolved profile.
    assert_eq!(ci.project("epel").unwrap().sync.upstream, "rsync://10.0.2.2:10873/epel/");
}

/// (case, edit of the valid fleet, expected exact error lines (substring match per line)).
type Case = (&'static str, Box<dyn Fn(String) -> String>, Vec<&'static str>);

fn cases() -> Vec<Case> {
    vec![
        ("toml syntax", Box::new(|f| f.replace("name = \"alpha\"", "name = \"alpha")), vec![":14:", "error: TOML syntax"]),
        (
            "unknown key in node",
            Box::new(|f| f.replace("name = \"alpha\"", "name = \"alpha\"\ncolour = \"red\"")),
            vec![":15:1: error: node \"alpha\": unknown field `colour`"],
        ),
        ("unknown top-level section", Box::new(|f| f + "\n[extras]\nx = 1\n"), vec![":25:2: error: unknown top-level key `extras`"]),
        (
            "push keys for a project whose upstream does not push",
            Box::new(|f| f.replace("admin_prefixes = [", &format!("push_keys = {{ epel = [\"{KEY}\"] }}\nadmin_prefixes = ["))),
            vec![":6:22: error: [fleet] push_keys.epel: the epel profile has push = false"],
        ),
        (
            "push keys for a project no node hosts, and a broken push key",
            Box::new(|f| f.replace("admin_prefixes = [", "push_keys = { debian = [\"ssh-ed25519 AAAA!\"] }\nadmin_prefixes = [")),
            vec![":6:24: error: [fleet] push_keys.debian: no node hosts \"debian\"", ":6:25: error: [fleet] push_keys.debian: "],
        ),
        (
            "a second key smuggled into one entry",
            Box::new(|f| f.replace(&format!("admin_ssh_keys = [\"{KEY}\"]"), &format!("admin_ssh_keys = [\"{KEY}\\n{KEY}\"]"))),
            vec![":5:19: error: [fleet] admin_ssh_keys: the key contains a line break or control character"],
        ),
        ("missing key", Box::new(|f| f.replace("contact = \"mirror@example.net\"\n", "")), vec!["error: [fleet]: missing field `contact`"]),
        (
            "duplicate node name",
            Box::new(|f| f.replace("name = \"beta\"", "name = \"alpha\"")),
            vec![":20:8: error: node \"alpha\": name is used twice (first at line 14)"],
        ),
        (
            "node name not a DNS label",
            Box::new(|f| f.replace("name = \"alpha\"", "name = \"Alpha_1\"")),
            vec![":14:8: error: node \"Alpha_1\": name is not a valid DNS label: character 'A' is not allowed"],
        ),
        (
            "bad fleet domain",
            Box::new(|f| f.replace("domain = \"mm.example.net\"", "domain = \"mm..example\"")),
            vec![":3:10: error: [fleet] domain \"mm..example\" is not a valid DNS name"],
        ),
        (
            "gateway outside /31",
            Box::new(|f| f.replace("gateway = \"192.0.2.11\"", "gateway = \"192.0.2.13\"")),
            vec![":16:47: error: node \"alpha\": ipv4.gateway 192.0.2.13 is not inside 192.0.2.10/31"],
        ),
        (
            "ipv6 gateway outside /127",
            Box::new(|f| {
                f.replace("\"2001:db8:10::2/64\", gateway = \"2001:db8:10::1\"", "\"2001:db8:10::2/127\", gateway = \"2001:db8:10::1\"")
            }),
            vec!["error: node \"alpha\": ipv6.gateway 2001:db8:10::1 is not inside 2001:db8:10::2/127"],
        ),
        (
            "address does not parse",
            Box::new(|f| f.replace("10.0.2.15/24", "10.0.2.315/24")),
            vec![":23:20: error: node \"beta\": ipv4.address \"10.0.2.315/24\" is not an IPv4 address"],
        ),
        (
            "network address used as host",
            Box::new(|f| f.replace("10.0.2.15/24", "10.0.2.0/24")),
            vec!["error: node \"beta\": ipv4.address 10.0.2.0 is the network address of 10.0.2.0/24"],
        ),
        (
            "address used twice",
            Box::new(|f| f.replace("10.0.2.15/24\", gateway = \"10.0.2.2\"", "192.0.2.10/24\", gateway = \"192.0.2.1\"")),
            vec![":23:20: error: node \"beta\": address 192.0.2.10 is already used by node \"alpha\" (line 16)"],
        ),
        (
            "no address at all",
            Box::new(|f| f.replace("ipv4 = { address = \"10.0.2.15/24\", gateway = \"10.0.2.2\" }\n", "")),
            vec!["error: node \"beta\": has neither ipv4 nor ipv6"],
        ),
        (
            "ipv4 resolver on an IPv6-only node",
            Box::new(|f| {
                f.replace(
                    "ipv4 = { address = \"10.0.2.15/24\", gateway = \"10.0.2.2\" }",
                    "ipv6 = { address = \"2001:db8:99::2/64\", gateway = \"2001:db8:99::1\" }",
                )
            }),
            vec!["error: node \"beta\": dns server 9.9.9.9 is IPv4 but the node is IPv6-only"],
        ),
        (
            "unknown profile",
            Box::new(|f| f.replace("hardware = \"qemu\"", "hardware = \"qemu\"\nprojects = [\"epel\", \"nosuch\"]")),
            vec![":22:21: error: node \"beta\": unknown project \"nosuch\" (known: ", "epel"],
        ),
        (
            "unknown hardware",
            Box::new(|f| f.replace("hardware = \"qemu\"", "hardware = \"cray\"")),
            vec![":21:12: error: node \"beta\": unknown hardware \"cray\" (known: honeybee, qemu, termite, wasp"],
        ),
        (
            "sponsor url not http",
            Box::new(|f| f.replace("http://beta.example/", "ftp://beta.example/")),
            vec![":22:34: error: node \"beta\": sponsor.url \"ftp://beta.example/\" must start with http:// or https://"],
        ),
        (
            "ssh key not a key",
            Box::new(|f| f.replace(KEY, "ssh-ed25519 AAAAC3Nza... ops@example")),
            vec![":5:19: error: [fleet] admin_ssh_keys: the ssh-ed25519 key's data is not valid base64"],
        ),
        (
            "ssh key type mismatch",
            Box::new(|f| f.replace(KEY, &KEY.replace("ssh-ed25519 ", "ssh-rsa "))),
            vec!["error: [fleet] admin_ssh_keys: the key's data says \"ssh-ed25519\" but the line says \"ssh-rsa\""],
        ),
        (
            "admin prefix with host bits",
            Box::new(|f| f.replace("192.0.2.0/24", "192.0.2.7/24")),
            vec![":6:19: error: [fleet] admin_prefixes: 192.0.2.7/24 has host bits set (did you mean 192.0.2.0/24?)"],
        ),
        (
            "bad MAC pin",
            Box::new(|f| f.replace("name = \"beta\"", "name = \"beta\"\ninterface = { mac = \"52:54:00:zz:00:01\" }")),
            vec!["error: node \"beta\": interface.mac \"52:54:00:zz:00:01\" is not a MAC address"],
        ),
        (
            "upstream override not rsync",
            Box::new(|f| f.replace("name = \"beta\"", "name = \"beta\"\nupstreams = { epel = \"http://x/\" }")),
            vec!["error: node \"beta\": upstreams.epel = \"http://x/\" must be an rsync:// URL ending in /"],
        ),
    ]
}

#[test]
fn every_rule_has_a_failing_fixture_with_a_precise_message() {
    let mut failures = Vec::new();
    for (name, edit, expected) in cases() {
        let text = edit(valid_fleet());
        let out = check_text(&text, &[]);
        let ok = out.code == 1 && expected.iter().all(|e| out.stderr.contains(e)) && !out.stderr.contains("panicked");
        if !ok {
            failures.push(format!("case {name}: exit {}, stderr:\n{}", out.code, out.stderr));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn all_errors_are_reported_not_just_the_first() {
    let text = valid_fleet()
        .replace("gateway = \"192.0.2.11\"", "gateway = \"192.0.2.13\"")
        .replace("http://beta.example/", "ftp://beta.example/")
        .replace("name = \"beta\"", "name = \"beta\"\ncolour = 1");
    let out = check_text(&text, &[]);
    assert_eq!(out.code, 1);
    let errors: Vec<&str> = out.stderr.lines().filter(|l| l.contains(": error: ")).collect();
    assert_eq!(errors.len(), 2, "{}", out.stderr);
    assert!(out.stderr.contains("192.0.2.13"));
    assert!(out.stderr.contains("unknown field `colour`"), "a broken node section does not hide the others: {}", out.stderr);
    assert!(out.stderr.contains("2 errors found"));
}

#[test]
fn capacity_overflow_says_by_how_much() {
    // A fleet-local profile beside the fleet file wins over the built-in data.
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("profiles")).unwrap();
    let epel = std::fs::read_to_string(repo().join("profiles/epel.toml")).unwrap();
    let big = epel.replace("name = \"epel\"", "name = \"huge\"").replacen("size_gb = ", "size_gb = 1800 # was ", 1);
    std::fs::write(dir.path().join("profiles/huge.toml"), big).unwrap();
    let path = dir.path().join("fleet.toml");
    std::fs::write(&path, valid_fleet().replace("projects = [\"epel\"]", "projects = [\"epel\", \"huge\"]")).unwrap();
    let out = check_path(&path, &[]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(out.stderr.contains("error: node \"alpha\": projects need"), "{}", out.stderr);
    assert!(out.stderr.contains("but hardware \"wasp\" holds 1900 GB"), "{}", out.stderr);
    assert!(out.stderr.contains("GB too much"), "{}", out.stderr);
    // The qemu node (1000 GB) overflows as well; both are reported.
    assert!(out.stderr.contains("error: node \"beta\": projects need"), "{}", out.stderr);
}

#[test]
fn broken_profile_file_is_reported_with_its_own_position() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("profiles")).unwrap();
    let epel = std::fs::read_to_string(repo().join("profiles/epel.toml")).unwrap();
    std::fs::write(dir.path().join("profiles/epel.toml"), epel.replace("[sync]", "[sync]\nspeed = 3")).unwrap();
    let path = dir.path().join("fleet.toml");
    std::fs::write(&path, valid_fleet()).unwrap();
    let out = check_path(&path, &[]);
    assert_eq!(out.code, 1);
    let line = epel.lines().position(|l| l == "[sync]").unwrap() + 2;
    assert!(out.stderr.contains(&format!("profiles/epel.toml:{line}:1: error: unknown field `speed`")), "{}", out.stderr);
    // Reported once, although two nodes use the profile.
    assert_eq!(out.stderr.matches("unknown field `speed`").count(), 1, "{}", out.stderr);
}

/// `--data DIR` is the one place searched: not the fleet's own directory, not the built-in data.
#[test]
fn data_dir_replaces_the_lookup_order() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("profiles")).unwrap();
    let epel = std::fs::read_to_string(repo().join("profiles/epel.toml")).unwrap();
    std::fs::write(dir.path().join("profiles/epel.toml"), epel.replace("[sync]", "[sync]\nspeed = 3")).unwrap();
    let path = dir.path().join("fleet.toml");
    std::fs::write(&path, valid_fleet()).unwrap();
    // Without --data the broken copy beside the fleet wins over the built-in one.
    let beside = check_path(&path, &[]);
    assert!(beside.code == 1 && beside.stderr.contains("unknown field `speed`"), "{}", beside.stderr);
    // --data the repository: the copy beside the fleet is not read.
    let out = check_path(&path, &["--data", repo().to_str().unwrap()]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    // --data an empty directory: the built-in data ($MMBUILD_DATA here) is not searched either.
    let empty = tempfile::tempdir().unwrap();
    let out = check_path(&path, &["--data", empty.path().to_str().unwrap()]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    for want in ["unknown project \"epel\"", "unknown hardware \"wasp\"", "unknown hardware \"qemu\""] {
        assert!(out.stderr.contains(want), "{want}: {}", out.stderr);
    }
    assert!(!out.stderr.contains("speed"), "{}", out.stderr);
}

#[test]
fn garbage_input_never_panics() {
    for text in ["", "\u{0}\u{1}", "[[node]]\n[[node]]\n", "fleet = 3\nnode = 4", "[fleet]\nname = [1, {a = 2}]\n", "node = [1, \"x\"]"] {
        let out = check_text(text, &[]);
        assert_eq!(out.code, 1, "input {text:?}: {}", out.stderr);
        assert!(!out.stderr.contains("panicked"), "input {text:?}: {}", out.stderr);
        assert!(out.stderr.contains("error:"), "input {text:?}: {}", out.stderr);
    }
}

#[test]
fn missing_file_is_a_clear_error() {
    let out = check_path(Path::new("/nonexistent/fleet.toml"), &[]);
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("/nonexistent/fleet.toml: error: cannot read the fleet file"), "{}", out.stderr);
}

#[test]
fn firstboot_fixture_matches_the_example_fleet() {
    // firstboot's unit tests use the resolved example nodes; regenerate with
    // `mmbuild check --json examples/fleet.toml > tests/fixtures/example-nodes.json`.
    let out = check_path(&repo().join("examples/fleet.toml"), &["--json"]);
    let fixture = std::fs::read_to_string(repo().join("tests/fixtures/example-nodes.json")).unwrap();
    assert_eq!(out.stdout, fixture, "tests/fixtures/example-nodes.json is stale");
}

/// A hardware model beside the fleet file is the one used everywhere, including the kernel
/// modules that go into the base's initramfs.
#[test]
fn fleet_local_hardware_reaches_the_initramfs_module_list() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("hardware")).unwrap();
    let qemu = std::fs::read_to_string(repo().join("hardware/qemu.toml")).unwrap();
    let local = qemu.replace("name = \"qemu\"", "name = \"raidbox\"").replace("\"sd_mod\"]", "\"sd_mod\", \"megaraid_sas\"]");
    std::fs::write(dir.path().join("hardware/raidbox.toml"), local).unwrap();
    let fleet = dir.path().join("fleet.toml");
    std::fs::write(&fleet, valid_fleet().replace("hardware = \"qemu\"", "hardware = \"raidbox\"")).unwrap();
    std::env::set_var("MMBUILD_DATA", repo());
    let loaded = mmbuild::inventory::fleet::load(&fleet, None).unwrap_or_else(|d| panic!("{d}"));
    let beta = loaded.nodes.iter().find(|n| n.node.name == "beta").unwrap();
    assert_eq!(beta.hardware.name, "raidbox");
    let modules = mmbuild::image::build::fleet_kernel_modules(&loaded);
    assert!(modules.contains("megaraid_sas"), "{modules:?}");
    assert!(modules.contains("ahci"), "the wasp's modules too: {modules:?}");
}
