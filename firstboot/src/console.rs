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
    judge(cfg, &gather(host, cfg), last)
}

/// What the report is judged from: read from the running machine by [`gather`], or given by a
/// test. `live` facts (services, HTTP, upstreams, gateways) are gathered only on the live host.
#[derive(Debug, Clone)]
pub struct Facts {
    pub live: bool,
    pub image_version: Option<String>,
    /// `os:` lines, the A/B slots' report.
    pub os_lines: Vec<String>,
    /// The boot test's stand-in NIC driver, or why its marker could not be read.
    pub stand_in: Result<Option<String>, String>,
    pub nics: Vec<Nic>,
    /// The bond's report from /proc/net/bonding (None: the model has no bond).
    pub bond: Option<Result<BondStatus, String>>,
    /// `ip -brief address`.
    pub addresses: Option<String>,
    /// Each gateway and whether (how) it answers; asked only when live with a port.
    pub gateways: Vec<(String, Result<&'static str, String>)>,
    /// What is mounted at the data mount point, and `df`'s bytes (available, size).
    pub data_disk: Option<(String, Vec<u64>)>,
    /// `unit state` of each installed unit (live only).
    pub units: Option<Vec<String>>,
    /// The mirror's answer on port 80 (live only).
    pub http: Option<Result<u16, String>>,
    pub upstreams: Vec<crate::upstream::Upstream>,
    /// Projects no longer hosted: (name, directory, bytes).
    pub leftovers: Vec<(String, std::path::PathBuf, u64)>,
}

/// Read the facts of the running machine (or of `host`'s root).
pub fn gather(host: &Host, cfg: &NodeConfig) -> Facts {
    let live = host.live();
    let stand_in = crate::standin::read(host);
    let nics = probe::nics();
    let ports = network::select_ports(cfg, &nics, stand_in.as_ref().ok().and_then(|d| d.as_deref()));
    let bond = cfg.hardware.network.bond.as_ref().map(|b| {
        let file = host.path(Path::new("/proc/net/bonding")).join(&b.name);
        let read = || std::fs::read_to_string(&file).map(|t| bonding::parse(&t)).map_err(|e| e.to_string());
        let mut report = read();
        // Right after link-up a partner needs a few LACP frames (1 s apart at the fast rate).
        for _ in 0..5 {
            if !(live && report.as_ref().is_ok_and(BondStatus::settling)) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_secs(1));
            report = read();
        }
        report
    });
    let mut gateways = Vec::new();
    if live && !ports.is_empty() {
        for gw in [cfg.node.ipv4.as_ref().map(|a| &a.gateway), cfg.node.ipv6.as_ref().map(|a| &a.gateway)].into_iter().flatten() {
            gateways.push((gw.to_string(), gateway_answers(gw)));
        }
    }
    let mp = host.path(Path::new(DATA_MOUNT));
    let data_disk = probe::mount_source(&mp).map(|src| {
        let df = output("df", &["-B1", "--output=avail,size", &mp.to_string_lossy()]).unwrap_or_default();
        (src, df.lines().nth(1).unwrap_or("").split_whitespace().filter_map(|n| n.parse().ok()).collect())
    });
    let (mut units, mut http, mut ups) = (None, None, Vec::new());
    if live {
        let mut names = vec!["mm-firstboot", "systemd-networkd"];
        names.extend(crate::run::family(host).units());
        let services: Vec<String> = names.iter().map(|u| format!("{u}.service")).collect();
        let refs: Vec<&str> = services.iter().map(String::as_str).collect();
        // Units that are not installed are left out (the family lists what may be there).
        units = Some(names.iter().zip(host.unit_states(&refs)).filter_map(|(u, state)| state.map(|s| format!("{u} {s}"))).collect());
        http = Some(http_status("127.0.0.1:80", "/").map_err(|e| e.to_string()));
        ups = upstreams(host, cfg);
    }
    Facts {
        live,
        image_version: crate::run::image_version(host),
        os_lines: if live { crate::os::render(&crate::os::status()).lines().map(|l| format!("os: {l}")).collect() } else { Vec::new() },
        stand_in,
        nics,
        bond,
        addresses: output("ip", &["-brief", "address"]),
        gateways,
        data_disk,
        units,
        http,
        upstreams: ups,
        leftovers: crate::adopt::leftovers(host, cfg),
    }
}

/// The report from its facts: lines for remote hands, and each problem with what to check.
pub fn judge(cfg: &NodeConfig, f: &Facts, last: Option<&RunState>) -> Status {
    let mut lines = Vec::new();
    let mut problems = Vec::new();
    lines.push(format!("sponsor: {}", cfg.node.sponsor.name.chars().filter(|c| !c.is_control()).collect::<String>()));
    let image_version = f.image_version.clone();
    lines.push(format!("image: {}", image_version.as_deref().unwrap_or("unknown (no IMAGE_VERSION in /etc/os-release)")));
    lines.extend(f.os_lines.iter().cloned());

    let stand_in = match &f.stand_in {
        Ok(Some(driver)) => {
            lines.push(network::stand_in_note(cfg, driver));
            Some(driver.clone())
        }
        Ok(None) => None,
        Err(warning) => {
            lines.push(format!("network: {warning}"));
            None
        }
    };
    let nics = &f.nics;
    let ports: Vec<&Nic> = network::select_ports(cfg, nics, stand_in.as_deref());
    for n in nics {
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
    if let (Some(b), Some(report)) = (bond_cfg, &f.bond) {
        match report {
            Ok(st) => {
                let (l, p) = bonding::verdict(&b.name, st, stand_in.is_some());
                lines.extend(l);
                problems.extend(p);
                bond = Some(st.clone());
            }
            Err(e) if f.live => lines.push(format!("{}: no bonding status ({e}): the bond is not set up", b.name)),
            Err(_) => {}
        }
    }
    if let Some(addrs) = &f.addresses {
        // Only interfaces that carry addresses (not lo, not an idle bond0 the driver created).
        for l in addrs.lines().filter(|l| !l.starts_with("lo ") && l.split_whitespace().count() > 2) {
            lines.push(format!("address {}", l.split_whitespace().collect::<Vec<_>>().join(" ")));
        }
    }
    for (gw, answer) in &f.gateways {
        match answer {
            Ok(how) => lines.push(format!("gateway {gw}: {how}")),
            Err(details) => {
                problems.push(format!("gateway {gw} does not answer: check the cable and the sponsor's switch port/VLAN ({details})"))
            }
        }
    }

    match &f.data_disk {
        Some((src, nums)) => {
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
    if let Some(states) = &f.units {
        lines.push(format!("services: {}", states.join(", ")));
        for s in states {
            let (unit, state) = s.split_once(' ').unwrap_or((s, ""));
            if state != "active" && state != "activating" {
                problems.push(format!("service {unit} is {state}: the mirror team can see why with journalctl; nothing to do on site"));
            }
        }
    }
    match &f.http {
        Some(Ok(200)) => lines.push("http: the mirror answers 200 on port 80".into()),
        Some(Ok(code)) => problems.push(format!("http: the mirror answers {code} on port 80: the mirror team must look at nginx")),
        Some(Err(e)) => problems.push(format!("http: nothing answers on port 80 ({e}): the mirror team must look at nginx")),
        None => {}
    }
    for u in &f.upstreams {
        let (l, p) = crate::upstream::verdict(u);
        lines.extend(l);
        problems.extend(p);
    }
    for (name, dir, bytes) in &f.leftovers {
        lines.push(format!(
            "no longer hosted: {name} keeps {:.1} GB in {}; free it with `mmbuild apply --prune {name}`",
            *bytes as f64 / 1e9,
            dir.display()
        ));
    }
    Status { fqdn: cfg.node.fqdn.clone(), image_version, lines, problems, nic_stand_in: stand_in, bond }
}

/// Each hosted project's upstream, reachable from this network over each family, and its sync.
fn upstreams(host: &Host, cfg: &NodeConfig) -> Vec<crate::upstream::Upstream> {
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
    upstream::observe(cfg, sync_state, std::time::Duration::from_secs(4))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testdata::node;

    fn nic(name: &str, mac: &str, driver: &str, carrier: bool) -> Nic {
        Nic { name: name.into(), mac: mac.into(), driver: driver.into(), carrier }
    }

    /// Node ci (QEMU model, virtio_net) as a healthy live node sees itself.
    fn healthy() -> Facts {
        Facts {
            live: true,
            image_version: Some("20261201.000000-aaaaaaaaaaaa".into()),
            os_lines: vec!["os: slot a (blessed)".into()],
            stand_in: Ok(None),
            nics: vec![nic("ens3", "52:54:00:12:34:56", "virtio_net", true)],
            bond: None,
            addresses: Some("lo UNKNOWN 127.0.0.1/8\nens3 UP 10.0.2.15/24 fec0::15/64\n".into()),
            gateways: vec![("10.0.2.2".into(), Ok("answers ARP")), ("fec0::2".into(), Ok("answers NDP"))],
            data_disk: Some(("/dev/vdb1".into(), vec![90_000_000_000, 100_000_000_000])),
            units: Some(vec!["mm-firstboot active".into(), "nginx active".into(), "rsync activating".into()]),
            http: Some(Ok(200)),
            upstreams: Vec::new(),
            leftovers: Vec::new(),
        }
    }

    fn ran(problems: &[&str]) -> RunState {
        RunState { problems: problems.iter().map(|p| p.to_string()).collect(), data_disk: Some("/dev/vdb".into()), ..RunState::default() }
    }

    /// (case, node, facts, the last run, the problems wanted in order).
    type Case = (&'static str, &'static str, Facts, Option<RunState>, Vec<&'static str>);

    /// Each problem the console can report, fired by one broken fact: (case, node, facts, last
    /// run's problems, the problems wanted in order).
    #[test]
    fn each_problem_fires_from_its_fact_and_only_then() {
        let ok = healthy();
        let st = judge(&node("ci"), &ok, Some(&ran(&[])));
        assert!(st.ok() && st.verdict() == format!("mm-firstboot: {} ready - ALL GOOD, you can leave", st.fqdn), "{}", st.render());
        for want in [
            "image: 20261201.000000-aaaaaaaaaaaa",
            "port ens3 (52:54:00:12:34:56, virtio_net): link UP [uplink]",
            "address ens3 UP 10.0.2.15/24 fec0::15/64",
            "gateway 10.0.2.2: answers ARP",
            "data disk: /dev/vdb1 mounted at /srv/mirror, 90.0 GB free of 100.0 GB",
            "data disk chosen: /dev/vdb",
            "services: mm-firstboot active, nginx active, rsync activating",
            "http: the mirror answers 200 on port 80",
        ] {
            assert!(st.lines.iter().any(|l| l == want), "missing {want:?}:\n{}", st.render());
        }
        let with = |edit: fn(&mut Facts)| {
            let mut f = healthy();
            edit(&mut f);
            f
        };
        let cases: Vec<Case> = vec![
            (
                "no NIC of the model's driver",
                "ci",
                with(|f| f.nics = vec![nic("eth0", "52:54:00:00:00:09", "e1000", true)]),
                Some(ran(&[])),
                vec!["no network port matches drivers [\"virtio_net\"]: is the network card seated?"],
            ),
            (
                "the boot test's stand-in, no port",
                "ci",
                with(|f| {
                    f.stand_in = Ok(Some("e1000e".into()));
                    f.nics.clear();
                }),
                Some(ran(&[])),
                vec!["no network port matches drivers [\"virtio_net\"] or the test stand-in e1000e: check the boot test's NIC"],
            ),
            (
                "pinned MAC missing",
                "sonic",
                with(|f| f.nics = vec![nic("ens1", "24:8a:07:aa:bb:02", "mlx4_en", true)]),
                Some(ran(&[])),
                vec!["no network port with MAC 24:8a:07:aa:bb:01: check the fleet's interface.mac or the NIC"],
            ),
            (
                "no carrier",
                "ci",
                with(|f| f.nics[0].carrier = false),
                Some(ran(&[])),
                vec!["no link on port ens3 (MAC 52:54:00:12:34:56): plug the uplink cable into this port and check the switch port"],
            ),
            (
                "gateway silent",
                "ci",
                with(|f| f.gateways[1].1 = Err("no NDP answer in 3 s".into())),
                Some(ran(&[])),
                vec!["gateway fec0::2 does not answer: check the cable and the sponsor's switch port/VLAN (no NDP answer in 3 s)"],
            ),
            (
                "no data disk",
                "ci",
                with(|f| f.data_disk = None),
                Some(ran(&[])),
                vec!["the data disk is not mounted at /srv/mirror: see the storage lines above"],
            ),
            ("never ran", "ci", healthy(), None, vec!["mm-firstboot has not run yet"]),
            (
                "the run's own problems come first",
                "ci",
                with(|f| f.http = Some(Ok(502))),
                Some(ran(&["/dev/vdb holds foreign data: nothing was formatted"])),
                vec![
                    "/dev/vdb holds foreign data: nothing was formatted",
                    "http: the mirror answers 502 on port 80: the mirror team must look at nginx",
                ],
            ),
            (
                "a unit failed",
                "ci",
                with(|f| f.units.as_mut().unwrap()[1] = "nginx failed".into()),
                Some(ran(&[])),
                vec!["service nginx is failed: the mirror team can see why with journalctl; nothing to do on site"],
            ),
            (
                "nothing on port 80",
                "ci",
                with(|f| f.http = Some(Err("Connection refused (os error 111)".into()))),
                Some(ran(&[])),
                vec!["http: nothing answers on port 80 (Connection refused (os error 111)): the mirror team must look at nginx"],
            ),
        ];
        for (case, name, facts, last, want) in cases {
            let st = judge(&node(name), &facts, last.as_ref());
            assert_eq!(st.problems, want, "{case}:\n{}", st.render());
            assert_eq!(st.verdict(), format!("mm-firstboot: {} NEEDS ATTENTION: {}", st.fqdn, want[0]), "{case}");
        }
    }

    /// Not live (an image tree, `--root`): what was not gathered is no problem; an unreadable
    /// stand-in marker is a note, not a problem.
    #[test]
    fn facts_not_gathered_are_not_problems() {
        let mut f = healthy();
        f.live = false;
        (f.units, f.http, f.gateways, f.os_lines) = (None, None, Vec::new(), Vec::new());
        f.stand_in = Err("/run/micromirror/nic-stand-in: not a driver name".into());
        let st = judge(&node("ci"), &f, Some(&ran(&[])));
        assert!(st.ok(), "{}", st.render());
        assert!(st.lines.contains(&"network: /run/micromirror/nic-stand-in: not a driver name".to_string()), "{}", st.render());
        assert!(!st.lines.iter().any(|l| l.starts_with("services:") || l.starts_with("http:") || l.starts_with("os:")), "{}", st.render());
    }
}
