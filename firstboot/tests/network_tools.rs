//! The network configuration read by the programs that read it on the node: systemd-networkd's
//! own parser (started in a private mount and network namespace, cut off from the host's D-Bus)
//! for our image, and NetworkManager's keyfile reader (libnm through
//! `fixtures/nm-keyfile-check.py`: parse, normalize, verify) for AlmaLinux, where what
//! NetworkManager understood is compared with the fleet's addresses. Needs root, python3-gi and
//! gir1.2-nm-1.0 (install-deps); no NetworkManager daemon runs.

use std::path::Path;
use std::process::Command;

use mm_firstboot::network::{render_networkd, render_nm_keyfiles, select_ports, Nic};
use mmconfig::NodeConfig;

fn node(name: &str) -> NodeConfig {
    let nodes: Vec<NodeConfig> = serde_json::from_str(include_str!("../../tests/fixtures/example-nodes.json")).unwrap();
    nodes.into_iter().find(|n| n.node.name == name).unwrap()
}

fn nic(name: &str, mac: &str, driver: &str) -> Nic {
    Nic { name: name.into(), mac: mac.into(), driver: driver.into(), carrier: true }
}

/// The ports each example node's hardware has.
fn nics(name: &str) -> Vec<Nic> {
    match name {
        "ziply" | "v6only" => vec![nic("enp1s0", "00:11:22:33:44:55", "r8169")],
        "sonic" => vec![nic("enp1s0", "24:8a:07:aa:bb:00", "mlx4_en"), nic("enp1s0d1", "24:8a:07:aa:bb:01", "mlx4_en")],
        "hurricane" => vec![nic("enp3s0f0", "00:1b:21:00:00:01", "ixgbe"), nic("enp3s0f1", "00:1b:21:00:00:02", "ixgbe")],
        "ci" => vec![nic("ens3", "52:54:00:12:34:56", "virtio_net")],
        _ => unreachable!(),
    }
}

/// NetworkManager's reading of the keyfiles rendered for `cfg`, one JSON object per file.
fn nm_read(cfg: &NodeConfig, nics: &[Nic]) -> Vec<serde_json::Value> {
    let dir = tempfile::tempdir().unwrap();
    let files = render_nm_keyfiles(cfg, &select_ports(cfg, nics, None));
    let mut paths = Vec::new();
    for f in &files {
        let p = dir.path().join(f.path.file_name().unwrap());
        std::fs::write(&p, &f.contents).unwrap();
        paths.push(p);
    }
    let checker = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/nm-keyfile-check.py");
    // Debian's python3 (python3-gi lives there), not whichever python3 is first on PATH.
    let out = Command::new("/usr/bin/python3").arg(&checker).args(&paths).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "NetworkManager rejects the keyfiles of {}:\n{}{text}\n(needs python3-gi and gir1.2-nm-1.0: scripts/install-deps)",
        cfg.node.name,
        String::from_utf8_lossy(&out.stderr)
    );
    text.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

fn strs(v: &serde_json::Value) -> Vec<String> {
    v.as_array().unwrap().iter().map(|x| x.as_str().unwrap().to_string()).collect()
}

/// The IP part of a connection as NetworkManager read it, against the node's addresses.
fn assert_addresses(cfg: &NodeConfig, c: &serde_json::Value) {
    let name = &cfg.node.name;
    match &cfg.node.ipv4 {
        Some(a) => {
            assert_eq!(c["ipv4"]["method"], "manual", "{name}: {c}");
            assert_eq!(strs(&c["ipv4"]["addresses"]), std::slice::from_ref(&a.address), "{name}: {c}");
            assert_eq!(c["ipv4"]["gateway"], a.gateway.as_str(), "{name}: {c}");
        }
        None => assert_eq!(c["ipv4"]["method"], "disabled", "{name}: {c}"),
    }
    match &cfg.node.ipv6 {
        Some(a) => {
            assert_eq!(c["ipv6"]["method"], "manual", "{name}: {c}");
            assert_eq!(strs(&c["ipv6"]["addresses"]), std::slice::from_ref(&a.address), "{name}: {c}");
            assert_eq!(c["ipv6"]["gateway"], a.gateway.as_str(), "{name}: {c}");
        }
        None => assert_eq!(c["ipv6"]["method"], "disabled", "{name}: {c}"),
    }
    let mut dns = strs(&c["ipv4"]["dns"]);
    dns.extend(strs(&c["ipv6"]["dns"]));
    assert_eq!(dns, cfg.node.dns, "{name}: resolvers, v4 then v6: {c}");
}

#[test]
fn networkmanager_reads_every_example_node_as_the_fleet_says() {
    for name in ["ziply", "sonic", "v6only", "ci"] {
        let cfg = node(name);
        let conns = nm_read(&cfg, &nics(name));
        assert_eq!(conns.len(), 1, "{name}: {conns:?}");
        let c = &conns[0];
        assert_eq!(
            (c["id"].as_str(), c["type"].as_str(), c["autoconnect"].as_bool()),
            (Some("mm-uplink"), Some("802-3-ethernet"), Some(true))
        );
        let want_mac = if name == "sonic" { "24:8A:07:AA:BB:01" } else { &nics(name)[0].mac.to_uppercase() };
        assert_eq!(c["mac"].as_str().map(str::to_uppercase).as_deref(), Some(want_mac), "{name}: the uplink is bound by MAC: {c}");
        assert_addresses(&cfg, c);
    }
}

#[test]
fn networkmanager_reads_the_lacp_bond_and_its_ports() {
    let cfg = node("hurricane");
    let conns = nm_read(&cfg, &nics("hurricane"));
    assert_eq!(conns.len(), 3, "{conns:?}");
    let bond = conns.iter().find(|c| c["type"] == "bond").unwrap_or_else(|| panic!("{conns:?}"));
    assert_eq!(bond["interface"], "bond0");
    for (k, v) in [("mode", "802.3ad"), ("xmit_hash_policy", "layer3+4"), ("lacp_rate", "fast"), ("miimon", "100")] {
        assert_eq!(bond["bond"][k], v, "bond option {k}: {bond}");
    }
    assert_addresses(&cfg, bond);
    let mut ports: Vec<String> = conns
        .iter()
        .filter(|c| c["type"] == "802-3-ethernet")
        .map(|c| {
            assert_eq!((c["controller"].as_str(), c["port_type"].as_str()), (Some("bond0"), Some("bond")), "{c}");
            c["mac"].as_str().unwrap().to_lowercase()
        })
        .collect();
    ports.sort();
    assert_eq!(ports, ["00:1b:21:00:00:01", "00:1b:21:00:00:02"]);
}

/// Every example node's networkd files in one directory (file names prefixed with the node),
/// read by systemd-networkd itself; a deliberately wrong file shows the warnings are seen.
#[test]
fn systemd_networkd_parses_every_file_without_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("network");
    std::fs::create_dir(&conf).unwrap();
    let mut ours = Vec::new();
    for name in ["ziply", "sonic", "hurricane", "v6only", "ci"] {
        let cfg = node(name);
        for f in render_networkd(&cfg, &select_ports(&cfg, &nics(name), None)) {
            let file = format!("{name}-{}", f.path.file_name().unwrap().to_string_lossy());
            std::fs::write(conf.join(&file), &f.contents).unwrap();
            ours.push(file);
        }
    }
    assert!(ours.iter().any(|f| f.ends_with(".netdev")) && ours.len() >= 7, "{ours:?}");
    std::fs::write(conf.join("zz-control.network"), "[Match]\nName=none0\n\n[Network]\nAddress=192.0.2.1/24\nNoSuchKey=1\n").unwrap();
    // Private mounts: our files at /etc/systemd/network, empty /run/systemd, /run/dbus and
    // /var/lib/systemd (no host bus, no host state); a private network namespace (only lo).
    let script = format!(
        "mount --bind {conf} /etc/systemd/network && for d in /run/systemd /run/dbus /var/lib/systemd; do mkdir -p $d && mount -t tmpfs none $d; done \
         && SYSTEMD_LOG_LEVEL=debug SYSTEMD_LOG_TARGET=console timeout 3 /lib/systemd/systemd-networkd; true",
        conf = conf.display()
    );
    let out = Command::new("unshare").args(["--mount", "--net", "sh", "-c", &script]).output().unwrap();
    let log = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(log.contains("/etc/systemd/network/zz-control.network:6: Unknown key"), "networkd did not read the files:\n{log}");
    let about_ours: Vec<&str> = log.lines().filter(|l| ours.iter().any(|f| l.contains(&format!("/etc/systemd/network/{f}:")))).collect();
    assert!(about_ours.is_empty(), "systemd-networkd warns about our files:\n{}", about_ours.join("\n"));
}

/// `status --json` under `--root`: the termite (bonded ixgbe ports) booted by QEMU's boot test
/// with an e1000e stand-in in fw_cfg, and the bonding driver's report of one cabled port without
/// an LACP partner and one without carrier. A hostile fw_cfg value is ignored with a warning.
#[test]
fn status_shows_the_stand_in_and_the_bond_ports() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let item = root.join("sys/firmware/qemu_fw_cfg/by_name/opt/org.micromirror/nic-stand-in");
    std::fs::create_dir_all(&item).unwrap();
    std::fs::create_dir_all(root.join("proc/net/bonding")).unwrap();
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::write(
        root.join("etc/os-release"),
        format!("ID=debian\n{}", mmconfig::image::os_release_lines("20261104.024542-3f2a9c1e0b7d")),
    )
    .unwrap();
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/bonding/one-port-down-no-partner.txt");
    std::fs::copy(fixture, root.join("proc/net/bonding/bond0")).unwrap();
    let node_toml = dir.path().join("node.toml");
    std::fs::write(&node_toml, node("hurricane").to_toml()).unwrap();
    let status = |fw_cfg: &[u8]| {
        std::fs::write(item.join("raw"), fw_cfg).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_mm-firstboot"))
            .arg("--root")
            .arg(&root)
            .arg("--config")
            .arg(&node_toml)
            .args(["status", "--json"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(3), "not run yet: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };

    let st = status(b"e1000e");
    let lines = strs(&st["lines"]);
    assert_eq!(st["nic_stand_in"], "e1000e", "{st}");
    // Which image the node runs, for remote hands and the operator on the phone.
    assert_eq!(st["image_version"], "20261104.024542-3f2a9c1e0b7d", "{st}");
    assert!(lines.contains(&"image: 20261104.024542-3f2a9c1e0b7d".to_string()), "{st}");
    assert!(lines.contains(&"network: test stand-in: e1000e ports count as ixgbe (QEMU boot test)".to_string()), "{st}");
    assert!(lines.contains(&"bond0: enp2s0f0 down (no carrier); enp2s0f1 up, no LACP partner".to_string()), "{st}");
    assert!(
        lines.iter().any(|l| l.starts_with("bond0: port enp2s0f1 has no LACP partner: check that the switch port is in the LACP group")),
        "{st}"
    );
    let ports = st["bond"]["ports"].as_array().unwrap();
    assert_eq!(
        (ports[1]["name"].as_str(), ports[1]["carrier"].as_bool(), ports[1]["partner"].as_str()),
        (Some("enp2s0f1"), Some(true), Some("none"))
    );
    let problems = strs(&st["problems"]);
    assert!(!problems.iter().any(|p| p.contains("LACP")), "under the boot test a missing partner is a note: {st}");

    // The same bond on real hardware (no fw_cfg value usable): no partner anywhere is a problem.
    let st = status(b"e1000e; reboot\n");
    assert!(st.get("nic_stand_in").is_none(), "{st}");
    let lines = strs(&st["lines"]);
    assert!(lines.iter().any(|l| l.starts_with("network: ignoring the NIC stand-in") && !l.contains("reboot")), "{st}");
    assert!(strs(&st["problems"]).iter().any(|p| p.starts_with("bond0: no port has an LACP partner (enp2s0f1)")), "{st}");
}
