//! `mmbuild export ansible` checked by the real Ansible (ansible-core from PyPI, scripts/install-deps):
//! the inventory parsed back by `ansible-inventory --list` (groups, host variables, a hostile
//! sponsor intact as data and never evaluated), the playbook by `ansible-playbook --syntax-check`,
//! each node's node.toml byte for byte, deterministic output, nothing written on bad input.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

const HOSTILE: &str = "CI \"Labs\" & <Sons> '; rm -rf / # {{ lookup('pipe', 'touch MARKER') }} {% raw %} x\u{2028}\u{feff}: - [a] *b";

/// The example fleet with a hostile sponsor on `ci` (a Jinja lookup that would create MARKER if
/// Ansible ever evaluated it) and two sponsors whose names reduce to the same group name.
fn hostile_fleet(dir: &Path, marker: &Path) -> PathBuf {
    let text = std::fs::read_to_string(repo().join("examples/fleet.toml")).unwrap();
    let ci = r#"sponsor = { name = "CI \"Labs\" & <Sons> '; rm -rf / #", url"#;
    assert!(text.contains(ci));
    let hostile = HOSTILE.replace("MARKER", &marker.display().to_string());
    let text = text
        .replace(ci, &format!("sponsor = {{ name = {}, url", toml_str(&hostile)))
        .replace(r#"sponsor = { name = "Hurricane Electric""#, r#"sponsor = { name = "Sponsor & Co (Labs)""#);
    let path = dir.join("fleet.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn toml_str(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

const NODES: [&str; 5] = ["ziply", "sonic", "hurricane", "v6only", "ci"];

/// A known_hosts as `mmbuild build` writes it, for `nodes`.
fn known_hosts(dir: &Path, nodes: &[&str]) -> PathBuf {
    let mut text = String::new();
    for (i, n) in nodes.iter().enumerate() {
        let dir = dir.join(format!("k{i}"));
        std::fs::create_dir_all(&dir).unwrap();
        let key = dir.join("key");
        tool(Command::new("ssh-keygen").args(["-q", "-t", "ed25519", "-N", "", "-C", "", "-f"]).arg(&key));
        let public = std::fs::read_to_string(key.with_extension("pub")).unwrap();
        text.push_str(&format!("{n}.mm.example.net,192.0.2.99 {}\n", public.trim()));
    }
    let path = dir.join("known_hosts");
    std::fs::write(&path, text).unwrap();
    path
}

fn export(fleet: &Path, out: &Path, kh: &Path, extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mmbuild"))
        .arg("--data")
        .arg(repo())
        .args(["export", "ansible"])
        .arg(fleet)
        .arg("--out")
        .arg(out)
        .arg("--known-hosts")
        .arg(kh)
        .args(extra)
        .output()
        .unwrap()
}

fn tool(cmd: &mut Command) -> String {
    let o = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e} (scripts/install-deps installs it)"));
    assert!(o.status.success(), "{cmd:?}:\n{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Ansible quietly, with no user configuration leaking in.
fn ansible(program: &str, dir: &Path) -> Command {
    let cfg = dir.join("..").join("ansible.cfg");
    std::fs::write(&cfg, "").unwrap();
    let mut c = Command::new(program);
    c.current_dir(dir)
        .env("ANSIBLE_CONFIG", cfg)
        .env("ANSIBLE_LOCAL_TEMP", dir.join(".ansible-tmp"))
        .env("ANSIBLE_HOME", dir.join(".ansible-home"))
        // Its own ssh master connections: a shared one would skip the host key check of the next run.
        .env("ANSIBLE_SSH_CONTROL_PATH_DIR", dir.join(".ansible-cp"))
        .env("ANSIBLE_NOCOLOR", "1");
    c
}

/// ansible-inventory prints `!unsafe` values as {"__ansible_unsafe": value}.
fn plain(v: &Value) -> Value {
    match v {
        Value::Object(m) if m.len() == 1 && m.contains_key("__ansible_unsafe") => plain(&m["__ansible_unsafe"]),
        Value::Object(m) => Value::Object(m.iter().map(|(k, v)| (k.clone(), plain(v))).collect()),
        Value::Array(a) => Value::Array(a.iter().map(plain).collect()),
        other => other.clone(),
    }
}

#[test]
fn inventory_and_playbook_pass_the_real_ansible() {
    let tmp = tempfile::tempdir().unwrap();
    let marker = tmp.path().join("evaluated");
    let fleet_path = hostile_fleet(tmp.path(), &marker);
    let kh = known_hosts(tmp.path(), &NODES);
    let out = tmp.path().join("ansible");
    let o = export(&fleet_path, &out, &kh, &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    let inv = ansible("ansible-inventory", &out).args(["-i", "inventory.yml", "--list"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&inv.stderr);
    assert!(inv.status.success(), "{stderr}");
    assert!(!stderr.contains("WARNING"), "ansible-inventory warned:\n{stderr}");
    let list = plain(&serde_json::from_slice::<Value>(&inv.stdout).unwrap());
    let hosts = |g: &str| -> Vec<String> {
        list[g]["hosts"]
            .as_array()
            .unwrap_or_else(|| panic!("no group {g}: {list:#}"))
            .iter()
            .map(|h| h.as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(hosts("fleet_example_mm"), NODES);
    assert_eq!(hosts("hardware_wasp"), ["ziply", "v6only"]);
    assert_eq!(hosts("hardware_qemu"), ["ci"]);
    assert_eq!(hosts("project_epel"), ["ziply", "sonic", "ci"]);
    assert_eq!(hosts("project_ubuntu_releases"), ["ziply", "sonic"]);
    assert_eq!(hosts("sponsor_ziply_fiber"), ["ziply"]);
    assert_eq!(hosts("sponsor_o_brien_sons_hosting"), ["v6only"]);
    // "Sponsor & Co <Labs>" and "Sponsor & Co (Labs)": two groups, never one.
    let similar: Vec<&String> = list.as_object().unwrap().keys().filter(|g| g.starts_with("sponsor_sponsor_co_labs_")).collect();
    assert_eq!(similar.len(), 2, "{similar:?}");
    assert_ne!(hosts(similar[0]), hosts(similar[1]));
    for g in list.as_object().unwrap().keys().filter(|g| *g != "_meta") {
        assert!(g.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'), "group name {g:?}");
    }

    let vars = &list["_meta"]["hostvars"];
    let ci = &vars["ci"];
    assert_eq!(ci["ansible_host"], "10.0.2.15");
    assert_eq!(ci["ansible_user"], "mmadmin");
    assert_eq!(ci["mm_fqdn"], "ci.mm.example.net");
    assert_eq!(ci["mm_addresses"], serde_json::json!(["10.0.2.15", "fec0::15"]));
    assert_eq!(ci["mm_hardware"], "qemu");
    assert_eq!(ci["mm_projects"], serde_json::json!(["epel"]));
    let hostile = HOSTILE.replace("MARKER", &marker.display().to_string());
    assert_eq!(ci["mm_sponsor"]["name"], hostile.as_str(), "the sponsor name changed on its way through YAML");
    assert_eq!(ci["mm_sponsor"]["url"], "https://ci.example/?a=1&b=2");
    assert_eq!(vars["v6only"]["ansible_host"], "2001:db8:40::10");
    assert_eq!(vars["hurricane"]["mm_projects"], serde_json::json!(["ubuntu", "debian", "almalinux", "rocky"]));

    // Used in a task, the hostile name stays text: the lookup in it never runs. The ssh options
    // resolve per host to the known_hosts beside the inventory and the node's FQDN.
    let debug =
        tool(ansible("ansible", &out).args(["-i", "inventory.yml", "ci", "-m", "ansible.builtin.debug", "-a", "var=mm_sponsor.name"]));
    assert!(!marker.exists(), "Ansible evaluated the sponsor name as a template:\n{debug}");
    assert!(debug.contains("touch "), "{debug}");
    let args = tool(ansible("ansible", &out).args([
        "-i",
        "inventory.yml",
        "ci",
        "-m",
        "ansible.builtin.debug",
        "-a",
        "var=ansible_ssh_common_args",
    ]));
    let kh_path = out.canonicalize().unwrap().join("known_hosts");
    for want in [
        "-o StrictHostKeyChecking=yes".to_string(),
        format!("-o UserKnownHostsFile=\\\"{}\\\"", kh_path.display()),
        "-o GlobalKnownHostsFile=/dev/null".into(),
        "-o HostKeyAlias=ci.mm.example.net".into(),
    ] {
        assert!(args.contains(&want), "{want} missing from:\n{args}");
    }

    tool(ansible("ansible-playbook", &out).args(["-i", "inventory.yml", "converge.yml", "--syntax-check"]));
    let tasks = tool(ansible("ansible-playbook", &out).args(["-i", "inventory.yml", "converge.yml", "--list-tasks"]));
    for t in ["Install the configuration (mm-firstboot install-config)", "Converge (mm-firstboot run)", "Confirm the network change"] {
        assert!(tasks.contains(t), "{t} missing:\n{tasks}");
    }

    // Each node's host_vars hold exactly its resolved node.toml (what `apply` ships), and Ansible
    // does not take it for a variables file.
    let fleet = mmbuild::inventory::fleet::load(&fleet_path, Some(&repo())).unwrap();
    for n in &fleet.nodes {
        let got = std::fs::read_to_string(out.join("host_vars").join(&n.node.name).join("node.toml")).unwrap();
        assert_eq!(got, n.to_toml(), "{}", n.node.name);
    }
    // known_hosts: the build's key per node, under the node's FQDN and current addresses.
    let written = std::fs::read_to_string(out.join("known_hosts")).unwrap();
    let build = std::fs::read_to_string(&kh).unwrap();
    assert_eq!(written.lines().count(), NODES.len());
    let ci_key = build.lines().find(|l| l.starts_with("ci.")).unwrap().split_once(' ').unwrap().1;
    assert!(written.contains(&format!("ci.mm.example.net,10.0.2.15,fec0::15 {ci_key}\n")), "{written}");
    assert!(std::fs::read_to_string(out.join("README.md")).unwrap().contains("ansible-playbook -i inventory.yml converge.yml"));
}

#[test]
fn deterministic_selection_and_nothing_written_on_bad_input() {
    let tmp = tempfile::tempdir().unwrap();
    let fleet = hostile_fleet(tmp.path(), &tmp.path().join("m"));
    let kh = known_hosts(tmp.path(), &NODES);
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    assert!(export(&fleet, &a, &kh, &[]).status.success());
    assert!(export(&fleet, &b, &kh, &[]).status.success());
    assert_eq!(hostkit::testenv::tree_files(&a), hostkit::testenv::tree_files(&b), "same inventory, same bytes");

    // Exporting fewer nodes into the same directory drops the others' files, nothing else.
    std::fs::write(a.join("site.yml"), "# the team's own\n").unwrap();
    assert!(export(&fleet, &a, &kh, &["--node", "ci", "--node", "sonic"]).status.success());
    let left: Vec<String> = hostkit::testenv::tree_files(&a).into_keys().filter(|p| p.starts_with("host_vars/")).collect();
    assert_eq!(left, ["host_vars/ci/node.toml", "host_vars/sonic/node.toml"]);
    assert!(!a.join("host_vars/ziply").exists());
    assert!(a.join("site.yml").exists());
    let inv = std::fs::read_to_string(a.join("inventory.yml")).unwrap();
    assert!(!inv.contains("ziply"), "{inv}");

    // Unknown node, or a node the build has no key for: exit 1, the reason, nothing written.
    let c = tmp.path().join("c");
    let o = export(&fleet, &c, &kh, &["--node", "nosuch"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("no node \"nosuch\""));
    let partial = known_hosts(&tmp.path().join("p"), &["ziply", "sonic", "hurricane", "ci"]);
    let o = export(&fleet, &c, &partial, &[]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("no host key for v6only") && err.contains("mmbuild build"), "{err}");
    assert!(!c.exists());
}

/// A real sshd on loopback standing in for node `ci`'s ssh (the node side of the converge needs
/// a node: the QEMU test in tests/day2.rs covers it for `apply`).
struct Sshd {
    child: std::process::Child,
    port: u16,
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn sshd(dir: &Path, host_key: &Path, client_pub: &Path) -> Sshd {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let cfg = dir.join("sshd_config");
    std::fs::write(
        &cfg,
        format!(
            "ListenAddress 127.0.0.1\nPort {port}\nHostKey {}\nAuthorizedKeysFile {}\nStrictModes no\nUsePAM no\n\
             PasswordAuthentication no\nKbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\nPidFile {}\n",
            host_key.display(),
            client_pub.display(),
            dir.join("sshd.pid").display()
        ),
    )
    .unwrap();
    let child = Command::new("/usr/sbin/sshd").args(["-D", "-e", "-f"]).arg(&cfg).stderr(std::process::Stdio::null()).spawn().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(std::time::Instant::now() < deadline, "sshd did not listen on {port}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    Sshd { child, port }
}

#[test]
fn ansible_ssh_trusts_only_the_builds_host_key() {
    if hostkit::testenv::need(&[hostkit::testenv::Need::Root, hostkit::testenv::Need::Tool("ssh")]).is_err() {
        return;
    }
    assert!(Path::new("/usr/sbin/sshd").is_file(), "openssh-server missing (scripts/install-deps installs it)");
    let tmp = tempfile::tempdir().unwrap();
    let keys = |name: &str| {
        let k = tmp.path().join(name);
        tool(Command::new("ssh-keygen").args(["-q", "-t", "ed25519", "-N", "", "-C", "", "-f"]).arg(&k));
        k
    };
    let (host, other, client) = (keys("host"), keys("other"), keys("client"));
    let node = sshd(tmp.path(), &host, &client.with_extension("pub"));
    let fleet = hostile_fleet(tmp.path(), &tmp.path().join("m"));
    let user = tool(Command::new("id").arg("-un")).trim().to_string();

    for (key, trusted) in [(&host, true), (&other, false)] {
        let public = std::fs::read_to_string(key.with_extension("pub")).unwrap();
        let kh = tmp.path().join("build_known_hosts");
        std::fs::write(&kh, format!("ci.mm.example.net,10.0.2.15 {}", public.trim())).unwrap();
        let out = tmp.path().join(if trusted { "good" } else { "bad" });
        let o = export(&fleet, &out, &kh, &["--node", "ci"]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        // Reach "ci" on loopback as this user: a second inventory, as README.md says for an old address.
        std::fs::write(
            out.join("here.yml"),
            format!(
                "all:\n  hosts:\n    ci:\n      ansible_host: 127.0.0.1\n      ansible_port: {}\n      ansible_user: {user}\n",
                node.port
            ),
        )
        .unwrap();
        let ping = ansible("ansible", &out)
            .args(["-i", "inventory.yml", "-i", "here.yml", "ci", "-m", "ansible.builtin.ping", "--private-key"])
            .arg(&client)
            .output()
            .unwrap();
        let said = format!("{}{}", String::from_utf8_lossy(&ping.stdout), String::from_utf8_lossy(&ping.stderr));
        if trusted {
            assert!(ping.status.success() && said.contains("\"pong\""), "the build's key was not accepted:\n{said}");
        } else {
            assert!(!ping.status.success() && said.contains("UNREACHABLE"), "a node with another key was trusted:\n{said}");
            assert!(said.contains("Host key verification failed") || said.contains("REMOTE HOST IDENTIFICATION HAS CHANGED"), "{said}");
        }
    }
}

fn sh(cmd: &str) -> String {
    tool(Command::new("sh").args(["-c", cmd])).trim().to_string()
}

/// A scratch node for the real mm-firstboot: its own --root tree and a 1 GiB loop device as the
/// data disk, detached again on drop.
struct ScratchNode {
    root: PathBuf,
    disk: String,
}

impl Drop for ScratchNode {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.root.join("srv/mirror")).stderr(std::process::Stdio::null()).status();
        let _ = Command::new("losetup").args(["-d", &self.disk]).status();
    }
}

fn recap(run: &Output, host: &str) -> String {
    let out = String::from_utf8_lossy(&run.stdout);
    out.lines().find(|l| l.starts_with(host) && l.contains("ok=")).unwrap_or_else(|| panic!("no recap for {host}:\n{out}")).to_string()
}

#[test]
fn the_playbook_converges_a_node_with_the_real_mm_firstboot() {
    use hostkit::testenv::{need, Need};
    if need(&[Need::Root, Need::LoopDevices, Need::Tool("ssh"), Need::Tool("sudo"), Need::Tool("mkfs.xfs"), Need::Tool("sgdisk")]).is_err()
    {
        return;
    }
    let firstboot = Path::new(env!("CARGO_BIN_EXE_mmbuild")).with_file_name("mm-firstboot");
    assert!(firstboot.is_file(), "{} missing: cargo build -p mm-firstboot first (scripts/test does)", firstboot.display());
    let tmp = tempfile::tempdir().unwrap();
    let keys = |name: &str| {
        let k = tmp.path().join(name);
        tool(Command::new("ssh-keygen").args(["-q", "-t", "ed25519", "-N", "", "-C", "", "-f"]).arg(&k));
        k
    };
    let (host, client) = (keys("host"), keys("client"));
    let sshd = sshd(tmp.path(), &host, &client.with_extension("pub"));

    let root = tmp.path().join("root");
    std::fs::create_dir_all(root.join("etc/ssh")).unwrap();
    std::fs::write(root.join("etc/os-release"), "ID=debian\n").unwrap();
    let img = tmp.path().join("data.img");
    sh(&format!("truncate -s 1G {}", img.display()));
    let node = ScratchNode { disk: sh(&format!("losetup --show -f {}", img.display())), root };
    // The node's own host key, as an image carries it (without one the converge needs attention).
    std::fs::copy(&host, node.root.join("etc/ssh/ssh_host_ed25519_key")).unwrap();
    std::fs::copy(host.with_extension("pub"), node.root.join("etc/ssh/ssh_host_ed25519_key.pub")).unwrap();
    let program = tmp.path().join("mm-firstboot");
    std::fs::write(
        &program,
        format!("#!/bin/sh\nexec {} --root {} --disk {}:virtio:D1 \"$@\"\n", firstboot.display(), node.root.display(), node.disk),
    )
    .unwrap();
    sh(&format!("chmod 0755 {}", program.display()));

    let fleet = hostile_fleet(tmp.path(), &tmp.path().join("m"));
    let kh = tmp.path().join("build_known_hosts");
    // sonic's entry reaches the same scratch node: its configuration must be refused there.
    let public = std::fs::read_to_string(host.with_extension("pub")).unwrap();
    std::fs::write(&kh, format!("ci.mm.example.net {0}\nsonic.mm.example.net {0}\n", public.trim())).unwrap();
    let out = tmp.path().join("ansible");
    assert!(export(&fleet, &out, &kh, &["--node", "ci", "--node", "sonic"]).status.success());
    let user = sh("id -un");
    std::fs::write(
        out.join("here.yml"),
        format!(
            "all:\n  hosts:\n    ci: &here\n      ansible_host: 127.0.0.1\n      ansible_port: {}\n      ansible_user: {user}\n      mm_firstboot: {}\n    sonic: *here\n",
            sshd.port,
            program.display()
        ),
    )
    .unwrap();
    let leftovers =
        || std::fs::read_dir("/tmp").unwrap().filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().ends_with(".node.toml")).count();
    let before = leftovers();
    let play = |limit: &str| {
        let o = ansible("ansible-playbook", &out)
            .args(["-i", "inventory.yml", "-i", "here.yml", "converge.yml", "--limit", limit, "--private-key"])
            .arg(&client)
            .output()
            .unwrap();
        let text = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
        (o, text)
    };

    let (first, text) = play("ci");
    assert!(first.status.success(), "{text}");
    let r = recap(&first, "ci");
    assert!(r.contains("failed=0") && r.contains("unreachable=0") && !r.contains("changed=0"), "{r}\n{text}");
    let installed = std::fs::read_to_string(node.root.join("etc/micromirror/node.toml")).unwrap();
    assert_eq!(installed, std::fs::read_to_string(out.join("host_vars/ci/node.toml")).unwrap(), "the node got another node.toml");
    assert!(installed.contains("touch "), "the hostile sponsor did not arrive as text");

    let (second, text) = play("ci");
    assert!(second.status.success(), "{text}");
    assert!(recap(&second, "ci").contains("changed=0"), "a second run changed something:\n{text}");

    // Converged but needs attention (the host key gone): exit 3 is reported, not a failure.
    std::fs::remove_file(node.root.join("etc/ssh/ssh_host_ed25519_key")).unwrap();
    let (third, text) = play("ci");
    assert!(third.status.success(), "{text}");
    assert!(recap(&third, "ci").contains("failed=0"), "{text}");
    assert!(text.contains("Needs attention") && text.contains("PROBLEM: no ssh host key"), "{text}");

    // Another node's configuration is refused by the node: that host fails, the node keeps its own.
    let (other, text) = play("sonic");
    assert!(!other.status.success(), "{text}");
    assert!(recap(&other, "sonic").contains("failed=1"), "{text}");
    assert!(text.contains("refusing to adopt another node's identity"), "{text}");
    assert_eq!(std::fs::read_to_string(node.root.join("etc/micromirror/node.toml")).unwrap(), installed);
    assert_eq!(leftovers(), before, "a temporary node.toml was left in /tmp");
}
