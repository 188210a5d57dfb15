//! The status report for remote hands: on the console, in /etc/issue, and as JSON.

use std::path::Path;

use mmconfig::{NodeConfig, DATA_MOUNT};
use serde::Serialize;

use crate::apply::Host;
use crate::bonding::{self, BondStatus};
use crate::network::{self, Nic};
use crate::probe;
use crate::run::RunState;

#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub fqdn: String,
    /// `IMAGE_VERSION` of the running root; None on a host that is not one of our images.
    pub image_version: Option<String>,
    pub lines: Vec<String>,
    /// What is wrong and what to check; empty when all is well.
    pub problems: Vec<String>,
    /// The emulated NIC's driver standing in for the model's (QEMU boot test only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nic_stand_in: Option<String>,
    /// The bond's ports as the bonding driver reports them (models with a bond).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bond: Option<BondStatus>,
}

impl Status {
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }

    /// The verdict line, also the marker the QEMU tests wait for.
    pub fn verdict(&self) -> String {
        if self.ok() {
            format!("mm-firstboot: {} ready - ALL GOOD, you can leave", self.fqdn)
        } else {
            format!("mm-firstboot: {} NEEDS ATTENTION: {}", self.fqdn, self.problems[0])
        }
    }

    pub fn render(&self) -> String {
        let mut s = format!("==== Micro Mirror {} ====\n", self.fqdn);
        for l in &self.lines {
            s.push_str(&format!("  {l}\n"));
        }
        for p in &self.problems {
            s.push_str(&format!("  PROBLEM: {p}\n"));
        }
        s.push_str(&self.verdict());
        s.push('\n');
        s
    }
}

/// stdout of a command that succeeded (status probes tolerate failures).
fn output(program: &str, args: &[&str]) -> Option<String> {
    hostkit::cmd::text(program, args).ok()
}

/// Ok(how) when the gateway answered; Err(details) otherwise.
fn gateway_answers(gw: &str) -> Result<&'static str, String> {
    let ping = hostkit::cmd::text("ping", &["-c", "1", "-W", "2", gw]);
    if ping.is_ok() {
        return Ok("answers ping");
    }
    // Some gateways (and QEMU's user network) drop ICMP: a resolved neighbour entry means the
    // gateway answered ARP/ND, which is what a cabling check needs.
    let neigh = output("ip", &["neigh", "show", "to", gw]).unwrap_or_default();
    if neigh.contains("lladdr") {
        return Ok("answers ARP/ND (no ping reply)");
    }
    let why = ping.err().map(|e| format!("{e:#}")).unwrap_or_default();
    Err(format!("{why}; neighbour: {}", neigh.trim()))
}

/// Status code of a plain HTTP/1.0 GET, with short timeouts (a status check must not hang).
pub fn http_status(addr: &str, path: &str) -> std::io::Result<u16> {
    let sock = addr.parse().map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{addr}: {e}")))?;
    crate::readback::get(sock, path).map(|(code, _)| code)
}

/// Look at the machine now and judge it against the configuration and the last run.
pub fn status(host: &Host, cfg: &NodeConfig, last: Option<&RunState>) -> Status {
    let mut lines = Vec::new();
    let mut problems = Vec::new();
    lines.push(format!("sponsor: {}", cfg.node.sponsor.name.chars().filter(|c| !c.is_control()).collect::<String>()));
    let image_version = crate::run::image_version(host);
    lines.push(format!("image: {}", image_version.as_deref().unwrap_or("unknown (no IMAGE_VERSION in /etc/os-release)")));
    if host.live() {
        lines.extend(crate::os::render(&crate::os::status()).lines().map(|l| format!("os: {l}")));
    }

    let stand_in = match crate::standin::read(host) {
        Ok(Some(driver)) => {
            lines.push(network::stand_in_note(cfg, &driver));
            Some(driver)
        }
        Ok(None) => None,
        Err(warning) => {
            lines.push(format!("network: {warning}"));
            None
        }
    };
    let nics = probe::nics();
    let ports: Vec<&Nic> = network::select_ports(cfg, &nics, stand_in.as_deref());
    for n in &nics {
        let used = ports.iter().any(|p| p.name == n.name);
        lines.push(format!(
            "port {} ({}, {}): link {}{}",
            n.name,
            n.mac,
            n.driver,
            if n.carrier { "UP" } else { "down" },
            if used { " [uplink]" } else { "" }
        ));
    }
    if ports.is_empty() {
        problems.push(match &cfg.node.interface_mac {
            Some(mac) => format!("no network port with MAC {mac}: check the fleet's interface.mac or the NIC"),
            None => match &stand_in {
                Some(d) => format!(
                    "no network port matches drivers {:?} or the test stand-in {d}: check the boot test's NIC",
                    cfg.hardware.network.nic.drivers
                ),
                None => format!("no network port matches drivers {:?}: is the network card seated?", cfg.hardware.network.nic.drivers),
            },
        });
    }
    let bond_cfg = cfg.hardware.network.bond.as_ref();
    // A bond with one cabled port serves: its other ports are notes from the bond's report.
    let bond_serves = bond_cfg.is_some() && ports.iter().any(|p| p.carrier);
    for p in &ports {
        if !p.carrier && !bond_serves {
            problems.push(format!(
                "no link on port {} (MAC {}): plug the uplink cable into this port and check the switch port",
                p.name, p.mac
            ));
        }
    }
    let mut bond = None;
    if let Some(b) = bond_cfg {
        let file = host.path(Path::new("/proc/net/bonding")).join(&b.name);
        let read = || std::fs::read_to_string(&file).map(|t| bonding::parse(&t));
        let mut report = read();
        // Right after link-up a partner needs a few LACP frames (1 s apart at the fast rate).
        for _ in 0..5 {
            if !(host.live() && report.as_ref().is_ok_and(BondStatus::settling)) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_secs(1));
            report = read();
        }
        match report {
            Ok(st) => {
                let (l, p) = bonding::verdict(&b.name, &st, stand_in.is_some());
                lines.extend(l);
                problems.extend(p);
                bond = Some(st);
            }
            Err(e) if host.live() => lines.push(format!("{}: no bonding status ({e}): the bond is not set up", b.name)),
            Err(_) => {}
        }
    }
    if let Some(addrs) = output("ip", &["-brief", "address"]) {
        // Only interfaces that carry addresses (not lo, not an idle bond0 the driver created).
        for l in addrs.lines().filter(|l| !l.starts_with("lo ") && l.split_whitespace().count() > 2) {
            lines.push(format!("address {}", l.split_whitespace().collect::<Vec<_>>().join(" ")));
        }
    }
    for gw in [cfg.node.ipv4.as_ref().map(|a| &a.gateway), cfg.node.ipv6.as_ref().map(|a| &a.gateway)].into_iter().flatten() {
        if host.live() && !ports.is_empty() {
            match gateway_answers(gw) {
                Ok(how) => lines.push(format!("gateway {gw}: {how}")),
                Err(details) => {
                    problems.push(format!("gateway {gw} does not answer: check the cable and the sponsor's switch port/VLAN ({details})"))
                }
            }
        }
    }

    let mp = host.path(Path::new(DATA_MOUNT));
    match probe::mount_source(&mp) {
        Some(src) => {
            let df = output("df", &["-B1", "--output=avail,size", &mp.to_string_lossy()]).unwrap_or_default();
            let nums: Vec<u64> = df.lines().nth(1).unwrap_or("").split_whitespace().filter_map(|n| n.parse().ok()).collect();
            let free = nums
                .first()
                .map(|b| format!(", {:.1} GB free of {:.1} GB", *b as f64 / 1e9, nums.get(1).copied().unwrap_or(0) as f64 / 1e9))
                .unwrap_or_default();
            lines.push(format!("data disk: {src} mounted at {DATA_MOUNT}{free}"));
        }
        None => problems.push(format!("the data disk is not mounted at {DATA_MOUNT}: see the storage lines above")),
    }
    if let Some(last) = last {
        if let Some(d) = &last.data_disk {
            lines.push(format!("data disk chosen: {d}"));
        }
        for p in &last.problems {
            if !problems.contains(p) {
                problems.insert(0, p.clone());
            }
        }
    } else {
        problems.push("mm-firstboot has not run yet".into());
    }
    if host.live() {
        let mut units = vec!["mm-firstboot", "systemd-networkd"];
        units.extend(crate::run::family(host).units());
        let names: Vec<String> = units.iter().map(|u| format!("{u}.service")).collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        // Units that are not installed are left out (the family lists what may be there).
        let states: Vec<String> =
            units.iter().zip(host.unit_states(&refs)).filter_map(|(u, state)| state.map(|s| format!("{u} {s}"))).collect();
        lines.push(format!("services: {}", states.join(", ")));
        for s in &states {
            let (unit, state) = s.split_once(' ').unwrap_or((s, ""));
            if state != "active" && state != "activating" {
                problems.push(format!("service {unit} is {state}: the mirror team can see why with journalctl; nothing to do on site"));
            }
        }
        match http_status("127.0.0.1:80", "/") {
            Ok(200) => lines.push("http: the mirror answers 200 on port 80".into()),
            Ok(code) => problems.push(format!("http: the mirror answers {code} on port 80: the mirror team must look at nginx")),
            Err(e) => problems.push(format!("http: nothing answers on port 80 ({e}): the mirror team must look at nginx")),
        }
        upstreams(host, cfg, &mut lines, &mut problems);
    }
    for (name, dir, bytes) in crate::adopt::leftovers(host, cfg) {
        lines.push(format!(
            "no longer hosted: {name} keeps {:.1} GB in {}; free it with `mmbuild apply --prune {name}`",
            bytes as f64 / 1e9,
            dir.display()
        ));
    }
    Status { fqdn: cfg.node.fqdn.clone(), image_version, lines, problems, nic_stand_in: stand_in, bond }
}

/// Each hosted project's upstream, reachable from this network over each family, and its sync.
fn upstreams(host: &Host, cfg: &NodeConfig, lines: &mut Vec<String>, problems: &mut Vec<String>) {
    use crate::upstream::{self, SyncState};
    use mmconfig::sync::{SyncOutcome, SyncRecord};
    let units: Vec<String> = cfg.projects.iter().map(|p| format!("mm-sync-{}.service", p.name)).collect();
    let refs: Vec<&str> = units.iter().map(String::as_str).collect();
    let states = host.unit_states(&refs);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let sync_state = |project: &str| {
        let i = cfg.projects.iter().position(|p| p.name == project).unwrap_or(0);
        if matches!(states.get(i).and_then(|s| s.as_deref()), Some("active" | "activating")) {
            return SyncState::Running;
        }
        let file = host.path(Path::new(&mmconfig::sync_status_file(project)));
        let Some(st) = std::fs::read_to_string(file).ok().and_then(|t| serde_json::from_str::<SyncRecord>(&t).ok()) else {
            return SyncState::NeverRun;
        };
        if st.result == SyncOutcome::Success {
            SyncState::Succeeded { age_seconds: now.saturating_sub(st.finished_unix) }
        } else {
            let msg: String = st.message.chars().filter(|c| !c.is_control()).take(160).collect();
            SyncState::Failed(format!("{}: {msg}", st.result))
        }
    };
    for u in upstream::observe(cfg, sync_state, std::time::Duration::from_secs(4)) {
        let (l, p) = upstream::verdict(&u);
        lines.extend(l);
        problems.extend(p);
    }
}
