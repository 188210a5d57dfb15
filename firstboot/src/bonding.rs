//! A bond's ports, their carrier and their LACP partners, from the bonding driver's /proc/net/bonding/<bond>.

use serde::Serialize;

/// The switch at the other end of a port, as LACP sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Partner {
    /// The partner system's MAC address (the switch).
    Mac(String),
    /// No LACP partner has answered.
    None,
    /// The file does not say (a reader without CAP_NET_ADMIN sees no per-port LACP details).
    Unknown,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BondPort {
    pub name: String,
    /// MII status up.
    pub carrier: bool,
    pub partner: Partner,
    /// The driver is still in its first minute of looking for a partner (churn state
    /// "monitoring"): a partner may yet answer (within a few seconds at the fast LACP rate).
    #[serde(skip)]
    pub settling: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct BondStatus {
    /// "Bonding Mode:" as the driver words it.
    pub mode: String,
    pub ports: Vec<BondPort>,
}

impl BondStatus {
    pub fn lacp(&self) -> bool {
        self.mode.contains("802.3ad")
    }

    /// A cabled port has no partner yet but the driver is still looking: worth reading again shortly.
    pub fn settling(&self) -> bool {
        self.lacp() && self.ports.iter().any(|p| p.carrier && p.settling && !matches!(p.partner, Partner::Mac(_)))
    }
}

const NO_MAC: &str = "00:00:00:00:00:00";

/// A MAC as the kernel prints it (%pM); anything else is not taken for one.
fn mac(s: &str) -> Option<String> {
    let s = s.trim().to_ascii_lowercase();
    let ok = s.len() == 17 && s.bytes().enumerate().all(|(i, b)| if i % 3 == 2 { b == b':' } else { b.is_ascii_hexdigit() });
    ok.then_some(s)
}

#[derive(Default)]
struct RawPort {
    name: String,
    mii_up: bool,
    aggregator: Option<String>,
    partner_churn: Option<String>,
    details_partner_mac: Option<String>,
}

/// Parse the text of /proc/net/bonding/<bond> (the layout of the kernel's bond_procfs.c, from
/// 2.6 kernels to today's; unknown lines are skipped).
pub fn parse(text: &str) -> BondStatus {
    let mut mode = String::new();
    let mut active_aggregator: Option<String> = None;
    let mut active_partner: Option<String> = None;
    let mut in_active_info = false;
    let mut in_partner_details = false;
    let mut raw: Vec<RawPort> = Vec::new();
    for line in text.lines() {
        let trimmed = line.trim();
        let (key, value) = match trimmed.split_once(':') {
            Some((k, v)) => (k.trim(), v.trim()),
            None => (trimmed, ""),
        };
        if key == "Slave Interface" {
            raw.push(RawPort { name: value.to_string(), ..Default::default() });
            in_active_info = false;
            in_partner_details = false;
            continue;
        }
        let Some(port) = raw.last_mut() else {
            match key {
                "Bonding Mode" => mode = value.to_string(),
                "Active Aggregator Info" => in_active_info = true,
                "Aggregator ID" if in_active_info => active_aggregator = Some(value.to_string()),
                "Partner Mac Address" if in_active_info => active_partner = mac(value),
                _ => {}
            }
            continue;
        };
        match key {
            "MII Status" => port.mii_up = value == "up",
            "Aggregator ID" => port.aggregator = Some(value.to_string()),
            "Partner Churn State" => port.partner_churn = Some(value.to_string()),
            "details actor lacp pdu" => in_partner_details = false,
            "details partner lacp pdu" => in_partner_details = true,
            "system mac address" if in_partner_details => port.details_partner_mac = mac(value),
            _ => {}
        }
    }
    let ports = raw
        .into_iter()
        .map(|p| {
            // Per-port details are root's view; without them the active aggregator's partner is
            // every member's partner, and a churned partner state means none answered.
            let known = p
                .details_partner_mac
                .clone()
                .or_else(|| (p.aggregator.is_some() && p.aggregator == active_aggregator).then(|| active_partner.clone()).flatten());
            let partner = match known {
                Some(m) if m != NO_MAC => Partner::Mac(m),
                Some(_) => Partner::None,
                None if p.partner_churn.as_deref() == Some("churned") => Partner::None,
                None => Partner::Unknown,
            };
            BondPort { name: p.name, carrier: p.mii_up, partner, settling: p.partner_churn.as_deref() == Some("monitoring") }
        })
        .collect();
    BondStatus { mode, ports }
}

/// Interface names come from the kernel, but never print control characters to a console.
fn clean(s: &str) -> String {
    s.chars().filter(|c| !c.is_control()).collect()
}

/// Console lines and problems for bond `name`. A bond with a working port (carrier and, in
/// 802.3ad, an LACP partner) serves: a port without cable or partner is a note. No working
/// port at all is a problem, except that `no_lacp_expected` (QEMU's boot test, whose network
/// speaks no LACP) turns "no partner anywhere" into a note.
pub fn verdict(name: &str, st: &BondStatus, no_lacp_expected: bool) -> (Vec<String>, Vec<String>) {
    let name = clean(name);
    let mut lines = Vec::new();
    let mut problems = Vec::new();
    if st.ports.is_empty() {
        problems.push(format!("{name} has no ports: the network configuration did not add the NICs to the bond"));
        return (lines, problems);
    }
    let lacp = st.lacp();
    let summary: Vec<String> = st
        .ports
        .iter()
        .map(|p| {
            let port = clean(&p.name);
            match (&p.partner, p.carrier) {
                (_, false) => format!("{port} down (no carrier)"),
                (_, true) if !lacp => format!("{port} up"),
                (Partner::Mac(m), true) => format!("{port} up, LACP partner {m}"),
                (Partner::None, true) => format!("{port} up, no LACP partner"),
                (Partner::Unknown, true) => format!("{port} up, LACP partner unknown"),
            }
        })
        .collect();
    lines.push(format!("{name}: {}", summary.join("; ")));
    let up: Vec<&BondPort> = st.ports.iter().filter(|p| p.carrier).collect();
    if up.is_empty() {
        problems.push(format!("{name}: no port has link: plug the uplink cables in and check the switch ports"));
        return (lines, problems);
    }
    if !lacp {
        return (lines, problems);
    }
    let partnerless: Vec<&&BondPort> = up.iter().filter(|p| p.partner == Partner::None).collect();
    let any_partner = up.iter().any(|p| matches!(p.partner, Partner::Mac(_)));
    let undecided = up.iter().any(|p| p.partner == Partner::Unknown);
    if !any_partner && !undecided && !no_lacp_expected {
        let ports: Vec<String> = partnerless.iter().map(|p| clean(&p.name)).collect();
        problems.push(format!(
            "{name}: no port has an LACP partner ({}): the switch ports must be in one LACP (802.3ad) group; ask the sponsor's network team",
            ports.join(", ")
        ));
    } else {
        for p in partnerless {
            let why = if no_lacp_expected && !any_partner { " (expected: the QEMU boot test's network speaks no LACP)" } else { "" };
            lines
                .push(format!("{name}: port {} has no LACP partner: check that the switch port is in the LACP group{why}", clean(&p.name)));
        }
    }
    for p in st.ports.iter().filter(|p| !p.carrier) {
        lines.push(format!("{name}: port {} has no link: the bond runs without it; plug its cable in for redundancy", clean(&p.name)));
    }
    (lines, problems)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> BondStatus {
        let text = std::fs::read_to_string(format!("{}/tests/fixtures/bonding/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap();
        parse(&text)
    }

    fn port(name: &str, carrier: bool, partner: Partner) -> BondPort {
        BondPort { name: name.into(), carrier, partner, settling: false }
    }

    #[test]
    fn both_ports_with_the_switch_as_partner() {
        let st = fixture("lacp-both-ports.txt");
        assert!(st.lacp());
        let sw = Partner::Mac("44:38:39:ff:00:01".into());
        assert_eq!(st.ports, [port("enp2s0f0", true, sw.clone()), port("enp2s0f1", true, sw)]);
        let (lines, problems) = verdict("bond0", &st, false);
        assert_eq!(lines, ["bond0: enp2s0f0 up, LACP partner 44:38:39:ff:00:01; enp2s0f1 up, LACP partner 44:38:39:ff:00:01"]);
        assert!(problems.is_empty(), "{problems:?}");
    }

    #[test]
    fn one_port_down_the_other_without_partner() {
        let st = fixture("one-port-down-no-partner.txt");
        assert_eq!(st.ports, [port("enp2s0f0", false, Partner::None), port("enp2s0f1", true, Partner::None)]);
        let (lines, problems) = verdict("bond0", &st, false);
        assert_eq!(lines[0], "bond0: enp2s0f0 down (no carrier); enp2s0f1 up, no LACP partner");
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].starts_with("bond0: no port has an LACP partner (enp2s0f1)"), "{problems:?}");
        // Under QEMU's boot test the same state is serviceable and says which port lacks a partner.
        let (lines, problems) = verdict("bond0", &st, true);
        assert!(problems.is_empty(), "{problems:?}");
        assert!(lines
            .iter()
            .any(|l| l.starts_with("bond0: port enp2s0f1 has no LACP partner: check that the switch port is in the LACP group")));
        assert!(lines.iter().any(|l| l.starts_with("bond0: port enp2s0f0 has no link")), "{lines:?}");
    }

    #[test]
    fn without_details_the_active_aggregator_and_churn_decide() {
        let st = fixture("one-partnerless-unprivileged.txt");
        assert_eq!(st.ports, [port("enp2s0f0", true, Partner::Mac("44:38:39:ff:00:01".into())), port("enp2s0f1", true, Partner::None)]);
        let (lines, problems) = verdict("bond0", &st, false);
        assert!(problems.is_empty(), "one working port serves: {problems:?}");
        assert_eq!(lines[1], "bond0: port enp2s0f1 has no LACP partner: check that the switch port is in the LACP group");
    }

    #[test]
    fn no_link_anywhere_is_a_problem() {
        let st = BondStatus { mode: "IEEE 802.3ad Dynamic link aggregation".into(), ports: vec![port("a", false, Partner::None)] };
        assert!(verdict("bond0", &st, true).1[0].contains("no port has link"));
        assert!(verdict("bond0", &BondStatus::default(), false).1[0].contains("has no ports"));
    }

    #[test]
    fn a_port_still_in_its_first_minute_is_settling() {
        let text =
            std::fs::read_to_string(format!("{}/tests/fixtures/bonding/one-port-down-no-partner.txt", env!("CARGO_MANIFEST_DIR"))).unwrap();
        assert!(!parse(&text).settling(), "churned: the driver stopped looking");
        let fresh = text.replace("Partner Churn State: churned", "Partner Churn State: monitoring");
        let st = parse(&fresh);
        assert!(st.ports[1].settling && st.settling(), "{st:?}");
        assert!(
            !parse(&fresh.replace("MII Status: up\nSpeed: 1000", "MII Status: down\nSpeed: 1000")).settling(),
            "only cabled ports count"
        );
        assert!(!fixture("lacp-both-ports.txt").settling());
    }

    #[test]
    fn garbage_is_not_a_partner() {
        let st = parse(
            "Bonding Mode: IEEE 802.3ad\nSlave Interface: x\x1b[2J\nMII Status: up\ndetails partner lacp pdu:\n system mac address: evil\n",
        );
        assert_eq!(st.ports[0].partner, Partner::Unknown);
        assert_eq!(verdict("bond0", &st, false).0[0], "bond0: x[2J up, LACP partner unknown");
    }
}
