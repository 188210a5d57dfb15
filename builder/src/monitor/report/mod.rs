//! `mmbuild report FLEET --out DIR`: probe the fleet as `status` does, fetch each node's traffic
//! document, and write the fleet's page, one page per sponsor and report.json into DIR.
//!
//! Gathering (network, the pool `status` uses) is here; the numbers ([`model`]), the charts
//! ([`chart`]) and the pages ([`html`]) are pure and unit-tested.

pub(crate) mod chart;
pub(crate) mod html;
pub(crate) mod model;

use std::path::Path;

use anyhow::{Context, Result};
use hostkit::atomic;
use hostkit::net::{self, NetError};
use mmconfig::fleet_report::{self, FleetReport, NodeEntry, ProjectLag};
use mmconfig::traffic::{self, TrafficDoc};
use mmconfig::NodeConfig;

use crate::exit::Exit;
use crate::monitor::health::{self, marker, NodeReport, Options, Severity};
use model::Window;

/// Where a node serves its traffic document.
pub fn traffic_path() -> String {
    format!("/.mm/{}", traffic::FILE)
}

/// Fetch and parse one node's traffic document over the HTTP address that answered `status`'s probes.
pub fn fetch_traffic(cfg: &NodeConfig, probe: &NodeReport, opts: &Options) -> Result<TrafficDoc, String> {
    let addr = health::answering_http(&probe.probe.families).ok_or("no answer over HTTP")?;
    let path = traffic_path();
    let r = net::http(addr, &cfg.node.fqdn, "GET", &path, opts.timeout)
        .and_then(|r| if r.status == 200 { Ok(r.body) } else { Err(NetError::Protocol("200", format!("HTTP {}", r.status))) })
        .map_err(|e| format!("{path} over {addr}: {e}"))?;
    let doc: TrafficDoc = serde_json::from_slice(&r).map_err(|e| format!("{path} does not parse: {e}"))?;
    if doc.version != traffic::VERSION {
        return Err(format!("{path} has version {}, this mmbuild reads {}", doc.version, traffic::VERSION));
    }
    Ok(doc)
}

/// The previous run's report in `dir`, when there is one of this version.
pub fn previous(dir: &Path) -> Result<Option<FleetReport>> {
    let path = dir.join(fleet_report::FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let unreadable = || format!("{} does not parse: move it aside (the nodes' last known figures start afresh)", path.display());
    /// Only the version: a report of another layout is set aside, not misread.
    #[derive(serde::Deserialize)]
    struct Layout {
        version: Option<u64>,
    }
    let version = serde_json::from_str::<Layout>(&text).with_context(unreadable)?.version;
    if version != Some(u64::from(fleet_report::VERSION)) {
        eprintln!(
            "mmbuild: warning: {} has version {version:?}, this mmbuild writes {}: its last known figures are not used",
            path.display(),
            fleet_report::VERSION
        );
        return Ok(None);
    }
    let r = serde_json::from_str(&text).with_context(unreadable)?;
    Ok(Some(r))
}

/// One node's entry: this run's verdict, and this run's figures or the last known ones.
pub fn entry(
    cfg: &NodeConfig,
    probe: &NodeReport,
    doc: Result<&TrafficDoc, &str>,
    last: Option<&NodeEntry>,
    now: u64,
    window: Window,
) -> NodeEntry {
    let mut e = NodeEntry {
        node: cfg.node.name.clone(),
        fqdn: cfg.node.fqdn.clone(),
        sponsor: cfg.node.sponsor.name.clone(),
        sponsor_url: cfg.node.sponsor.url.clone(),
        state: format!("{:?}", probe.health).to_lowercase(),
        findings: probe.findings.iter().map(|f| format!("{} {}", f.severity.word(), f.text)).collect(),
        answered: doc.is_ok(),
        error: doc.err().map(String::from),
        figures_unix: None,
        image_version: probe.image.running.clone(),
        lag: probe
            .freshness
            .iter()
            .map(|f| ProjectLag { project: f.project.clone(), lag_seconds: f.lag_seconds, allowed_seconds: f.allowed_seconds })
            .collect(),
        ..Default::default()
    };
    match (doc, last) {
        (Ok(doc), _) => {
            let f = model::node_figures(doc, window);
            e.figures_unix = Some(now);
            (e.days, e.months, e.projects, e.totals) = (f.days, f.months, f.projects, f.totals);
        }
        (Err(_), Some(last)) if last.figures_unix.is_some() => {
            e.figures_unix = last.figures_unix;
            e.image_version = last.image_version.clone();
            e.lag = last.lag.clone();
            (e.days, e.months, e.projects, e.totals) = (last.days.clone(), last.months.clone(), last.projects.clone(), last.totals);
        }
        (Err(_), _) => {}
    }
    e
}

pub fn run(fleet_path: &Path, data: Option<&Path>, out: &Path, since: u32, nodes: &[String], opts: &Options) -> Result<Exit> {
    let (fleet, selected) = crate::monitor::status::select(fleet_path, data, nodes, opts)?;
    // Templates and the previous report are read before any node is asked: a broken install
    // or a damaged report.json stops the run before it costs the fleet a probe.
    let templates = html::registry(&fleet.data_dir.join("overlays/report"))?;
    let before = previous(out)?;
    let markers = marker::load(&fleet.data_dir).context("loading the freshness markers")?;
    let probed = health::probe_fleet(&fleet.name, &selected, &markers, opts, None);
    let by_name = |name: &str| probed.nodes.iter().find(|r| r.node == name);
    let pairs: Vec<(&NodeConfig, &NodeReport)> = selected.iter().filter_map(|c| by_name(&c.node.name).map(|r| (c, r))).collect();
    let docs = hostkit::pool::map(&pairs, opts.jobs, |(cfg, r)| fetch_traffic(cfg, r, opts));
    let now = probed.generated_unix;
    let window = Window::ending(now, since);
    let mut report = FleetReport {
        version: fleet_report::VERSION,
        fleet: fleet.name.clone(),
        generated_unix: now,
        since_days: window.days,
        first_day: traffic::date_of(window.first()),
        last_day: traffic::date_of(window.last),
        healthy: probed.healthy,
        ..Default::default()
    };
    for ((cfg, r), doc) in pairs.iter().zip(&docs) {
        let doc = doc.as_ref().map_err(String::as_str);
        let last = before.as_ref().and_then(|b| b.nodes.iter().find(|n| n.node == cfg.node.name));
        report.nodes.push(entry(cfg, r, doc, last, now, window));
    }
    model::fleet_totals(&mut report);
    report.days = model::sum_days(&report.nodes, window);
    let pages = html::render(&templates, &report, window)?;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let mut page_bytes = 0;
    for (name, text) in &pages {
        atomic::write(&out.join(name), text.as_bytes()).with_context(|| format!("writing {}", out.join(name).display()))?;
        page_bytes += text.len();
    }
    // Last: report.json is the memory of the next run; the pages it describes are already there.
    let json = serde_json::to_string_pretty(&report).context("serializing report.json")?;
    atomic::write(&out.join(fleet_report::FILE), json.as_bytes())?;
    let down = report.nodes.iter().filter(|n| !n.answered).count();
    let failing = probed.nodes.iter().filter(|n| n.health == Severity::Fail).count();
    println!(
        "{}: {} node(s), {} answered, {} not ({} failing a check); {} served {} .. {} ({} over IPv6); wrote {} page(s), {} bytes, and {} to {}",
        fleet.name,
        report.nodes.len(),
        report.nodes.len() - down,
        down,
        failing,
        model::human_bytes(report.totals.bytes),
        report.first_day,
        report.last_day,
        model::ipv6_share(&report.totals),
        pages.len(),
        page_bytes,
        fleet_report::FILE,
        out.display()
    );
    Ok(if report.healthy { Exit::Ok } else { Exit::NotReady })
}
