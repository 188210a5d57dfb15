//! Static network configuration: systemd-networkd files (our Debian image) and NetworkManager
//! keyfiles (AlmaLinux kickstart installs), rendered by pure functions from the node config.

use std::fmt::Write as _;

use mmconfig::{glob_match, NodeConfig};

use crate::files::RenderedFile;

/// One network port as the node sees it (from /sys/class/net).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Nic {
    pub name: String,
    pub mac: String,
    pub driver: String,
    pub carrier: bool,
}

/// The ports the configuration uses: the MAC pin, or the hardware rule's `count` ports,
/// cabled ports first, then by name (deterministic). `stand_in`: the driver of the emulated NIC
/// that QEMU's boot test attached in place of the model's (see [`crate::standin`]); its ports
/// count as matching the rule's `drivers`. None on real hardware.
pub fn select_ports<'a>(cfg: &NodeConfig, nics: &'a [Nic], stand_in: Option<&str>) -> Vec<&'a Nic> {
    if let Some(mac) = &cfg.node.interface_mac {
        return nics.iter().filter(|n| n.mac.eq_ignore_ascii_case(mac)).collect();
    }
    let rule = &cfg.hardware.network.nic;
    let mut matching: Vec<&Nic> = nics
        .iter()
        .filter(|n| rule.drivers.is_empty() || rule.drivers.iter().any(|d| d == &n.driver) || stand_in == Some(n.driver.as_str()))
        .filter(|n| rule.name.as_deref().is_none_or(|g| glob_match(g, &n.name)))
        .collect();
    matching.sort_by(|a, b| (!a.carrier, &a.name).cmp(&(!b.carrier, &b.name)));
    matching.truncate(rule.count as usize);
    matching
}

/// The console's note when a stand-in is in use (not a problem: the boot test asked for it).
pub fn stand_in_note(cfg: &NodeConfig, driver: &str) -> String {
    let drivers = &cfg.hardware.network.nic.drivers;
    if drivers.iter().any(|d| d == driver) {
        format!("network: test stand-in: {driver} is the model's own driver (QEMU boot test)")
    } else if drivers.is_empty() {
        format!("network: test stand-in: {driver} (the hardware model takes any driver; QEMU boot test)")
    } else {
        format!("network: test stand-in: {driver} ports count as {} (QEMU boot test)", drivers.join("/"))
    }
}

/// `[Network]` addresses, DNS and routes shared by the plain and the bond layout.
fn networkd_addressing(cfg: &NodeConfig) -> String {
    let n = &cfg.node;
    let mut s = String::from("[Network]\n");
    for a in [n.ipv4.as_ref().map(|a| &a.address), n.ipv6.as_ref().map(|a| &a.address)].into_iter().flatten() {
        let _ = writeln!(s, "Address={a}");
    }
    for d in &n.dns {
        let _ = writeln!(s, "DNS={d}");
    }
    // Static only: no DHCP, no router advertisements that could add a second default route.
    s.push_str("DHCP=no\nIPv6AcceptRA=no\nLinkLocalAddressing=ipv6\n");
    for gw in [n.ipv4.as_ref().map(|a| &a.gateway), n.ipv6.as_ref().map(|a| &a.gateway)].into_iter().flatten() {
        // On-link: a /31 peer (RFC 3021) or a gateway outside a narrow prefix is still reachable.
        let _ = write!(s, "\n[Route]\nGateway={gw}\nGatewayOnLink=yes\n");
    }
    s
}

/// systemd-networkd files for `ports` (see [`select_ports`]).
pub fn render_networkd(cfg: &NodeConfig, ports: &[&Nic]) -> Vec<RenderedFile> {
    let dir = "/etc/systemd/network";
    let header = "# Written by mm-firstboot from the node configuration; changes are overwritten.\n";
    let mut files = Vec::new();
    match &cfg.hardware.network.bond {
        None => {
            let port_match = match ports.first() {
                Some(p) => format!("MACAddress={}", p.mac),
                None => "MACAddress=00:00:00:00:00:00".to_string(),
            };
            let body = format!("{header}[Match]\n{port_match}\n\n[Link]\nRequiredForOnline=yes\n\n{}", networkd_addressing(cfg));
            files.push(RenderedFile::new(format!("{dir}/10-mm-uplink.network"), 0o644, body));
        }
        Some(bond) => {
            let netdev = format!(
                "{header}[NetDev]\nName={}\nKind=bond\n\n[Bond]\nMode={}\nTransmitHashPolicy={}\nLACPTransmitRate={}\nMIIMonitorSec={}ms\n",
                bond.name, bond.mode, bond.xmit_hash_policy, bond.lacp_rate, bond.miimon_ms
            );
            files.push(RenderedFile::new(format!("{dir}/10-mm-{}.netdev", bond.name), 0o644, netdev));
            let macs: Vec<&str> = ports.iter().map(|p| p.mac.as_str()).collect();
            let members = format!("{header}[Match]\nMACAddress={}\n\n[Network]\nBond={}\n", macs.join(" "), bond.name);
            files.push(RenderedFile::new(format!("{dir}/20-mm-{}-ports.network", bond.name), 0o644, members));
            let body = format!("{header}[Match]\nName={}\n\n[Link]\nRequiredForOnline=yes\n\n{}", bond.name, networkd_addressing(cfg));
            files.push(RenderedFile::new(format!("{dir}/30-mm-{}.network", bond.name), 0o644, body));
        }
    }
    files
}

fn nm_ip_sections(cfg: &NodeConfig) -> String {
    let n = &cfg.node;
    let mut s = String::new();
    let v4dns: Vec<&str> = n.dns.iter().filter(|d| !d.contains(':')).map(String::as_str).collect();
    let v6dns: Vec<&str> = n.dns.iter().filter(|d| d.contains(':')).map(String::as_str).collect();
    match &n.ipv4 {
        Some(a) => {
            let _ = write!(s, "\n[ipv4]\nmethod=manual\naddress1={},{}\n", a.address, a.gateway);
            if !v4dns.is_empty() {
                let _ = writeln!(s, "dns={};", v4dns.join(";"));
            }
        }
        None => s.push_str("\n[ipv4]\nmethod=disabled\n"),
    }
    match &n.ipv6 {
        Some(a) => {
            let _ = write!(s, "\n[ipv6]\nmethod=manual\naddr-gen-mode=eui64\naddress1={},{}\n", a.address, a.gateway);
            if !v6dns.is_empty() {
                let _ = writeln!(s, "dns={};", v6dns.join(";"));
            }
        }
        None => s.push_str("\n[ipv6]\nmethod=disabled\n"),
    }
    s
}

/// NetworkManager keyfiles (mode 0600, as NetworkManager requires) for AlmaLinux installs.
pub fn render_nm_keyfiles(cfg: &NodeConfig, ports: &[&Nic]) -> Vec<RenderedFile> {
    let dir = "/etc/NetworkManager/system-connections";
    let header = "# Written by mm-firstboot from the node configuration; changes are overwritten.\n";
    let mut files = Vec::new();
    match &cfg.hardware.network.bond {
        None => {
            let mac = ports.first().map_or("00:00:00:00:00:00", |p| p.mac.as_str());
            let body = format!(
                "{header}[connection]\nid=mm-uplink\ntype=ethernet\nautoconnect=true\n\n[ethernet]\nmac-address={mac}\n{}",
                nm_ip_sections(cfg)
            );
            files.push(RenderedFile::new(format!("{dir}/mm-uplink.nmconnection"), 0o600, body));
        }
        Some(bond) => {
            let mode = if bond.mode == "802.3ad" { "802.3ad" } else { bond.mode.as_str() };
            let body = format!(
                "{header}[connection]\nid={name}\ntype=bond\ninterface-name={name}\nautoconnect=true\n\n[bond]\nmode={mode}\nxmit_hash_policy={}\nlacp_rate={}\nmiimon={}\n{}",
                bond.xmit_hash_policy,
                bond.lacp_rate,
                bond.miimon_ms,
                nm_ip_sections(cfg),
                name = bond.name
            );
            files.push(RenderedFile::new(format!("{dir}/mm-{}.nmconnection", bond.name), 0o600, body));
            for (i, p) in ports.iter().enumerate() {
                // master/slave-type, not controller/port-type: those keys only exist from
                // NetworkManager 1.46 (AlmaLinux 9.4); older ones ignore them and the port
                // would come up on its own with DHCP. Newer ones still read these.
                let port = format!(
                    "{header}[connection]\nid=mm-{}-port{i}\ntype=ethernet\nmaster={}\nslave-type=bond\nautoconnect=true\n\n[ethernet]\nmac-address={}\n",
                    bond.name, bond.name, p.mac
                );
                files.push(RenderedFile::new(format!("{dir}/mm-{}-port{i}.nmconnection", bond.name), 0o600, port));
            }
        }
    }
    files
}

/// /etc/hostname, /etc/hosts and /etc/resolv.conf (no resolver daemon on the node).
pub fn render_host_identity(cfg: &NodeConfig) -> Vec<RenderedFile> {
    let n = &cfg.node;
    let mut hosts = String::from("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n");
    for a in [n.ipv4.as_ref().map(|a| &a.address), n.ipv6.as_ref().map(|a| &a.address)].into_iter().flatten() {
        let ip = a.split('/').next().unwrap_or(a);
        let _ = writeln!(hosts, "{ip}\t{} {}", n.fqdn, n.name);
    }
    let resolv: String = n.dns.iter().map(|d| format!("nameserver {d}\n")).collect();
    vec![
        RenderedFile::new("/etc/hostname", 0o644, format!("{}\n", n.fqdn)),
        RenderedFile::new("/etc/hosts", 0o644, hosts),
        RenderedFile::new("/etc/resolv.conf", 0o644, resolv),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testdata::node;

    fn nic(name: &str, mac: &str, driver: &str, carrier: bool) -> Nic {
        Nic { name: name.into(), mac: mac.into(), driver: driver.into(), carrier }
    }

    fn text(files: &[RenderedFile], suffix: &str) -> String {
        let f = files.iter().find(|f| f.path.to_string_lossy().ends_with(suffix)).unwrap_or_else(|| panic!("no {suffix}"));
        String::from_utf8(f.contents.clone()).unwrap()
    }

    /// The `Address=` values of a networkd file, parsed: (address, prefix length).
    fn addresses(network: &str) -> Vec<(std::net::IpAddr, u8)> {
        network
            .lines()
            .filter_map(|l| l.strip_prefix("Address="))
            .map(|a| {
                let (ip, len) = a.split_once('/').unwrap_or_else(|| panic!("no prefix length: {a}"));
                (ip.parse().unwrap_or_else(|e| panic!("{a}: {e}")), len.parse().unwrap_or_else(|e| panic!("{a}: {e}")))
            })
            .collect()
    }

    fn addr(a: &str, len: u8) -> (std::net::IpAddr, u8) {
        (a.parse().unwrap(), len)
    }

    #[test]
    fn slash31_gets_an_on_link_peer_gateway() {
        let cfg = node("ziply");
        let nics = [nic("enp1s0", "aa:bb:cc:00:00:01", "r8169", true)];
        let ports = select_ports(&cfg, &nics, None);
        let files = render_networkd(&cfg, &ports);
        let net = text(&files, "10-mm-uplink.network");
        assert!(net.contains("[Match]\nMACAddress=aa:bb:cc:00:00:01\n"), "{net}");
        assert_eq!(addresses(&net), [addr("192.0.2.10", 31), addr("2001:db8:10::2", 64)], "{net}");
        assert!(net.contains("[Route]\nGateway=192.0.2.11\nGatewayOnLink=yes\n"));
        assert!(net.contains("[Route]\nGateway=2001:db8:10::1\nGatewayOnLink=yes\n"));
        assert!(net.contains("DHCP=no") && net.contains("IPv6AcceptRA=no"));
    }

    #[test]
    fn cabled_port_wins_then_name_order() {
        let cfg = node("sonic"); // pinned by MAC
        let nics = [nic("ens1", "24:8a:07:aa:bb:02", "mlx4_en", true), nic("ens1d1", "24:8a:07:aa:bb:01", "mlx4_en", false)];
        assert_eq!(select_ports(&cfg, &nics, None)[0].name, "ens1d1", "the MAC pin wins over carrier");
        let cfg = node("ziply");
        let nics = [
            nic("eno1", "aa:00:00:00:00:01", "r8169", false),
            nic("eno2", "aa:00:00:00:00:02", "r8169", true),
            nic("wl0", "aa:00:00:00:00:03", "iwlwifi", true),
        ];
        let picked = select_ports(&cfg, &nics, None);
        assert_eq!(picked.len(), 1);
        assert_eq!(picked[0].name, "eno2");
    }

    #[test]
    fn a_test_stand_in_counts_as_the_models_driver() {
        let cfg = node("hurricane"); // termite: two ixgbe ports, bonded
        let nics = [
            nic("ens3", "52:54:00:00:00:03", "virtio_net", true),
            nic("ens4", "52:54:00:00:00:04", "e1000e", true),
            nic("ens5", "52:54:00:00:00:05", "e1000e", false),
        ];
        assert!(select_ports(&cfg, &nics, None).is_empty(), "without the stand-in no emulated NIC is chosen");
        let names: Vec<&str> = select_ports(&cfg, &nics, Some("e1000e")).iter().map(|n| n.name.as_str()).collect();
        assert_eq!(names, ["ens4", "ens5"], "only the stand-in's driver, cabled first");
        let ports = select_ports(&cfg, &nics, Some("e1000e"));
        let members = text(&render_networkd(&cfg, &ports), "20-mm-bond0-ports.network");
        assert!(members.contains("MACAddress=52:54:00:00:00:04 52:54:00:00:00:05\n"), "{members}");
        // Real ports still match beside a stand-in.
        let mixed = [nic("enp2s0f0", "00:1b:21:00:00:01", "ixgbe", true), nic("ens4", "52:54:00:00:00:04", "e1000e", true)];
        assert_eq!(select_ports(&cfg, &mixed, Some("e1000e")).len(), 2);
        assert_eq!(stand_in_note(&cfg, "e1000e"), "network: test stand-in: e1000e ports count as ixgbe (QEMU boot test)");
        assert_eq!(
            stand_in_note(&node("ci"), "virtio_net"),
            "network: test stand-in: virtio_net is the model's own driver (QEMU boot test)"
        );
    }

    #[test]
    fn the_mac_pin_wins_over_a_stand_in() {
        let cfg = node("sonic"); // pinned to 24:8a:07:aa:bb:01
        let nics = [nic("ens3", "52:54:00:00:00:03", "virtio_net", true), nic("ens4", "24:8A:07:AA:BB:01", "e1000e", false)];
        let picked = select_ports(&cfg, &nics, Some("virtio_net"));
        assert_eq!(picked.len(), 1);
        assert_eq!(picked[0].name, "ens4", "the pinned MAC, not the stand-in's other port");
    }

    #[test]
    fn termite_bonds_both_ports_with_lacp() {
        let cfg = node("hurricane");
        let nics = [nic("enp2s0f0", "00:1b:21:00:00:01", "ixgbe", true), nic("enp2s0f1", "00:1b:21:00:00:02", "ixgbe", true)];
        let files = render_networkd(&cfg, &select_ports(&cfg, &nics, None));
        let netdev = text(&files, "10-mm-bond0.netdev");
        assert!(netdev.contains("Kind=bond") && netdev.contains("Mode=802.3ad") && netdev.contains("LACPTransmitRate=fast"));
        assert!(text(&files, "20-mm-bond0-ports.network").contains("MACAddress=00:1b:21:00:00:01 00:1b:21:00:00:02\n"));
        let bond = text(&files, "30-mm-bond0.network");
        assert!(bond.contains("Name=bond0"), "{bond}");
        assert_eq!(addresses(&bond)[0], addr("203.0.113.4", 29), "{bond}");
        let nm = render_nm_keyfiles(&cfg, &select_ports(&cfg, &nics, None));
        assert!(text(&nm, "mm-bond0.nmconnection").contains("type=bond\ninterface-name=bond0"));
        assert!(text(&nm, "mm-bond0-port1.nmconnection").contains("master=bond0\nslave-type=bond"));
        assert!(nm.iter().all(|f| f.mode == 0o600));
    }

    #[test]
    fn ipv6_only_node_disables_ipv4() {
        let cfg = node("v6only");
        let nics = [nic("eno1", "aa:00:00:00:00:01", "r8169", true)];
        let net = text(&render_networkd(&cfg, &select_ports(&cfg, &nics, None)), ".network");
        assert_eq!(addresses(&net), [addr("2001:db8:40::10", 64)], "{net}");
        let nm = text(&render_nm_keyfiles(&cfg, &select_ports(&cfg, &nics, None)), "mm-uplink.nmconnection");
        assert!(nm.contains("[ipv4]\nmethod=disabled"), "{nm}");
        assert!(nm.contains("address1=2001:db8:40::10/64,2001:db8:40::1"), "{nm}");
        assert!(nm.contains("dns=2620:fe::fe;2620:fe::9;"), "{nm}");
    }

    #[test]
    fn hostname_is_the_fqdn() {
        let files = render_host_identity(&node("ci"));
        assert_eq!(text(&files, "/etc/hostname"), "ci.mm.example.net\n");
        assert!(text(&files, "/etc/hosts").contains("10.0.2.15\tci.mm.example.net ci\n"));
        assert_eq!(text(&files, "/etc/resolv.conf"), "nameserver 10.0.2.3\n");
    }
}
