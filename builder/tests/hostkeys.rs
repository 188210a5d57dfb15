//! Per-node ssh host keys through the real binary (kickstart path, seconds): each node its own
//! key, reused by later builds, carried by its OEMDRV stick, listed in known_hosts; a lost state
//! directory is an error, never a new key. The disk-image path is in tests/image.rs (slow tier).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

const NODES: [&str; 5] = ["ziply", "sonic", "hurricane", "v6only", "ci"];

fn node_bin() -> PathBuf {
    let dir = std::env::var_os("MM_NODE_BIN").map(PathBuf::from).unwrap_or_else(|| repo().join("target/x86_64-unknown-linux-musl/release"));
    assert!(dir.join("mm-firstboot").is_file(), "build the on-node binaries first (scripts/test does)");
    dir
}

fn mmbuild(out: &Path, state: &Path, extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mmbuild"))
        .arg("build")
        .arg(repo().join("examples/fleet.toml"))
        .arg("--out")
        .arg(out)
        .arg("--state")
        .arg(state)
        .args(["--kickstart-only", "--quiet", "--node-bin"])
        .arg(node_bin())
        .args(extra)
        .output()
        .unwrap()
}

fn ok(o: Output) -> String {
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "mmbuild failed:\n{err}");
    err
}

fn tool(cmd: &mut Command) -> String {
    let o = cmd.output().unwrap();
    assert!(o.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

/// The known_hosts line naming `fqdn` first.
fn line<'a>(known_hosts: &'a str, fqdn: &str) -> &'a str {
    known_hosts.lines().find(|l| l.split(',').next() == Some(fqdn) || l.split(' ').next() == Some(fqdn)).unwrap()
}

#[test]
fn each_node_gets_its_own_key_on_its_stick_reused_by_later_builds() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    ok(mmbuild(&a, &state, &[]));
    ok(mmbuild(&b, &state, &[]));
    assert_eq!(mode(&state), 0o700);

    let known_hosts = std::fs::read_to_string(a.join("known_hosts")).unwrap();
    assert_eq!(known_hosts.lines().count(), NODES.len(), "{known_hosts}");
    assert_eq!(known_hosts, std::fs::read_to_string(b.join("known_hosts")).unwrap());
    // Only the addresses a node has, without prefix lengths.
    let v6only = line(&known_hosts, "v6only.mm.example.net");
    let hosts = v6only.split(' ').next().unwrap();
    assert_eq!(hosts.split(',').count(), 2, "{v6only}");
    assert!(!hosts.contains('/'), "{v6only}");
    let manifest: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(a.join("manifest.json")).unwrap()).unwrap();
    assert!(manifest["artifacts"].as_array().unwrap().iter().any(|x| x["path"] == "known_hosts" && x["kind"] == "known-hosts"));
    tool(Command::new("sha256sum").args(["-c", "--quiet", "SHA256SUMS"]).current_dir(&a));

    let mut seen = Vec::new();
    for node in NODES {
        let fqdn = format!("{node}.mm.example.net");
        let stick = a.join(node).join("oemdrv.img");
        assert_eq!(mode(&stick), 0o600, "the stick holds a private key");
        assert_eq!(std::fs::read(&stick).unwrap(), std::fs::read(b.join(node).join("oemdrv.img")).unwrap(), "{node}: sticks differ");
        // The key on the stick is the one in the state directory ...
        let key_state = state.join(node).join("ssh_host_ed25519_key");
        assert_eq!(mode(&key_state), 0o600);
        let copy = tmp.path().join(format!("{node}.key"));
        tool(Command::new("mcopy").args(["-n", "-i"]).arg(&stick).arg("::ssh_host_ed25519_key").arg(&copy));
        assert_eq!(std::fs::read(&copy).unwrap(), std::fs::read(&key_state).unwrap());
        // ... and its public half is what known_hosts (checked by ssh-keygen itself) says.
        std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o600)).unwrap();
        let public = tool(Command::new("ssh-keygen").args(["-y", "-f"]).arg(&copy));
        let public: Vec<&str> = public.split_whitespace().take(2).collect();
        let found = tool(Command::new("ssh-keygen").args(["-F", &fqdn, "-f"]).arg(a.join("known_hosts")));
        assert!(found.contains(&public.join(" ")), "{node}: {found}");
        let pub_on_stick = tool(Command::new("mtype").arg("-i").arg(&stick).arg("::ssh_host_ed25519_key.pub"));
        assert_eq!(pub_on_stick.trim(), format!("{} {fqdn}", public.join(" ")));
        // The manifest's fingerprint is ssh-keygen's.
        let fp = tool(Command::new("ssh-keygen").args(["-l", "-f"]).arg(state.join(node).join("ssh_host_ed25519_key.pub")));
        assert_eq!(manifest["host_keys"][node].as_str().unwrap(), fp.split_whitespace().nth(1).unwrap());
        // node.toml stays free of it (it is printed and shown).
        let toml = tool(Command::new("mtype").arg("-i").arg(&stick).arg("::node.toml"));
        assert!(!toml.contains("PRIVATE KEY") && !toml.contains(public[1]), "{toml}");
        seen.push(public[1].to_string());
    }
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), NODES.len(), "two nodes share a host key");

    // The kickstart installs it owner-only beside node.toml and stops AlmaLinux from making others.
    let ks = std::fs::read_to_string(a.join("ci/ks.cfg")).unwrap();
    assert!(ks.contains("install -D -m 0600 \"$stick/ssh_host_ed25519_key\" \"$sysroot/etc/micromirror/ssh_host_ed25519_key\""), "{ks}");
    assert!(ks.contains("systemctl mask sshd-keygen@rsa.service sshd-keygen@ecdsa.service sshd-keygen@ed25519.service"), "{ks}");
}

#[test]
fn a_lost_state_directory_is_an_error_never_a_new_key() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    let out = tmp.path().join("out");
    ok(mmbuild(&out, &state, &[]));
    let before = std::fs::read_to_string(out.join("known_hosts")).unwrap();

    // The whole directory gone.
    let moved = tmp.path().join("backup");
    std::fs::rename(&state, &moved).unwrap();
    let o = mmbuild(&out, &state, &[]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(3), "{err}");
    for node in NODES {
        assert!(err.contains(&format!("node {node}: ")) && err.contains(&format!("--new-host-keys {node}")), "{err}");
    }
    assert!(err.contains("is missing, but") && err.contains("restore"), "{err}");
    assert!(!state.join("ci/ssh_host_ed25519_key").exists(), "a key was made behind the operator's back");
    assert_eq!(std::fs::read_to_string(out.join("known_hosts")).unwrap(), before);

    // Restored: builds again, same keys. Then one key lost: only that node is an error.
    std::fs::remove_dir_all(&state).unwrap();
    std::fs::rename(&moved, &state).unwrap();
    ok(mmbuild(&out, &state, &[]));
    assert_eq!(std::fs::read_to_string(out.join("known_hosts")).unwrap(), before);
    std::fs::remove_file(state.join("sonic/ssh_host_ed25519_key")).unwrap();
    let o = mmbuild(&out, &state, &[]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(3), "{err}");
    assert!(err.contains("node sonic: ") && !err.contains("node ci: "), "{err}");

    // Rotating deliberately: only that node's line changes.
    let stderr = ok(mmbuild(&out, &state, &["--new-host-keys", "sonic"]));
    assert!(stderr.contains("host key of node sonic (none) -> SHA256:"), "{stderr}");
    let after = std::fs::read_to_string(out.join("known_hosts")).unwrap();
    for node in NODES {
        let fqdn = format!("{node}.mm.example.net");
        assert_eq!(line(&before, &fqdn) == line(&after, &fqdn), node != "sonic", "{node}");
    }

    // A key readable by others is refused until fixed; an unknown node name is a usage error.
    std::fs::set_permissions(state.join("ci/ssh_host_ed25519_key"), std::fs::Permissions::from_mode(0o644)).unwrap();
    let o = mmbuild(&out, &state, &[]);
    assert_eq!(o.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&o.stderr).contains("chmod 600"));
    std::fs::set_permissions(state.join("ci/ssh_host_ed25519_key"), std::fs::Permissions::from_mode(0o600)).unwrap();
    let o = mmbuild(&out, &state, &["--new-host-keys", "nosuch"]);
    assert_eq!(o.status.code(), Some(1), "{}", String::from_utf8_lossy(&o.stderr));
    // Keys never go into the output directory.
    let o = mmbuild(&out, &out.join("state"), &[]);
    assert_eq!(o.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&o.stderr).contains("inside the output directory"));
}
