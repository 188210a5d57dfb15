//! `mmbuild status`: probe every node of a fleet (per address family) and judge its health and lag.
//!
//! Probing (network, bounded threads, timeouts) and judging (pure, unit-tested) are separate:
//! [`probe_fleet`] gathers raw observations, [`judge`] turns them into findings.

pub(crate) mod marker;
pub(crate) mod table;
pub(crate) mod upstream;

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mmconfig::public::{self, PublicRollback, PublicStatus, PATH as PUBLIC_STATUS_PATH};
use mmconfig::sync::SyncOutcome;
use mmconfig::NodeConfig;
use serde::Serialize;

use hostkit::net::{self, tls, NetError, RsyncListing};
use marker::{Lag, Marker};

/// Version of the `--json` document; bump when a field changes meaning.
pub const JSON_VERSION: u32 = 1;

pub const HTTP_PORT: u16 = 80;
pub const RSYNC_PORT: u16 = 873;
pub const HTTPS_PORT: u16 = 443;

/// `--resolve NODE:PORT=ADDR:PORT`: connect to ADDR:PORT instead of NODE's inventory address on PORT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolve {
    pub node: String,
    pub port: u16,
    pub to: SocketAddr,
}

impl FromStr for Resolve {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let usage = || format!("{s:?}: expected NODE:PORT=ADDR:PORT, e.g. ziply:80=127.0.0.1:8080 or ziply:873=[::1]:8873");
        let (left, right) = s.split_once('=').ok_or_else(usage)?;
        let (node, port) = left.rsplit_once(':').ok_or_else(usage)?;
        let port = port.parse().map_err(|_| usage())?;
        let to = right.parse().map_err(|_| usage())?;
        if node.is_empty() {
            return Err(usage());
        }
        Ok(Resolve { node: node.to_string(), port, to })
    }
}

#[derive(Debug, Clone)]
pub struct Options {
    /// Per connection to a node (connect + request + answer).
    pub timeout: Duration,
    /// Per upstream marker fetch.
    pub upstream_timeout: Duration,
    /// Nodes probed at once.
    pub jobs: usize,
    pub resolve: Vec<Resolve>,
    /// Added to a profile's maximum sync interval before a lag counts as a failure.
    pub lag_margin: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    Ipv4,
    Ipv6,
}

impl Family {
    pub fn of(addr: &SocketAddr) -> Family {
        if addr.is_ipv4() {
            Family::Ipv4
        } else {
            Family::Ipv6
        }
    }
    pub fn label(self) -> &'static str {
        match self {
            Family::Ipv4 => "IPv4",
            Family::Ipv6 => "IPv6",
        }
    }
}

/// Where to reach `port` of `cfg`'s node, per family: the inventory addresses, or the overrides.
pub fn endpoints(cfg: &NodeConfig, port: u16, resolve: &[Resolve]) -> Vec<SocketAddr> {
    let over: Vec<SocketAddr> = resolve.iter().filter(|r| r.node == cfg.node.name && r.port == port).map(|r| r.to).collect();
    if !over.is_empty() {
        return over;
    }
    let host = |a: &str| a.split('/').next().and_then(|h| IpAddr::from_str(h).ok());
    [cfg.node.ipv4.as_ref().map(|a| a.address.as_str()), cfg.node.ipv6.as_ref().map(|a| a.address.as_str())]
        .into_iter()
        .flatten()
        .filter_map(host)
        .map(|ip| SocketAddr::new(ip, port))
        .collect()
}

/// Result of one probe, as observed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "outcome")]
pub enum Seen<T> {
    Ok {
        value: T,
    },
    Failed {
        error: String,
        silent: bool,
    },
    /// Not tried: an earlier probe of the same address got no answer.
    Skipped,
}

impl<T> Seen<T> {
    fn from(r: Result<T, NetError>) -> Self {
        match r {
            Ok(value) => Seen::Ok { value },
            Err(e) => Seen::Failed { silent: e.is_silent(), error: e.to_string() },
        }
    }
    fn silent(&self) -> bool {
        matches!(self, Seen::Failed { silent: true, .. })
    }
}

/// What one address family of a node answered.
#[derive(Debug, Clone, Serialize)]
pub struct FamilyProbe {
    pub family: Family,
    pub http_address: Option<SocketAddr>,
    /// Per project: the status code of `HEAD <http_path>`.
    pub http: Vec<(String, Seen<u16>)>,
    pub rsync_address: Option<SocketAddr>,
    pub rsync: Option<Seen<RsyncSeen>>,
    /// Only when the fleet serves HTTPS.
    pub https_address: Option<SocketAddr>,
    pub tls: Option<Seen<tls::TlsSeen>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RsyncSeen {
    pub version: String,
    pub modules: Vec<String>,
}

impl From<RsyncListing> for RsyncSeen {
    fn from(l: RsyncListing) -> Self {
        RsyncSeen { version: l.version, modules: l.modules }
    }
}

/// Raw observations of one node.
#[derive(Debug, Clone, Serialize)]
pub struct NodeProbe {
    pub families: Vec<FamilyProbe>,
    /// Per project: the body of its freshness marker (or its own trace) as the node serves it.
    pub markers: BTreeMap<String, Seen<String>>,
    /// The node's public status document (`/.mm/status.json`), when HTTP answered.
    pub public: Option<Seen<String>>,
}

/// The node's own word, from its public document, that `project` has never synced yet: its
/// first sync is running or not started. Then a missing trace is turn-up, not a failure.
fn first_sync_pending(doc: Option<&PublicStatus>, project: &str) -> Option<&'static str> {
    let p = doc?.projects.iter().find(|p| p.project == project && p.last_success_unix.is_none())?;
    match p.result {
        SyncOutcome::Running => Some("first sync running"),
        SyncOutcome::NeverRun => Some("first sync not started yet"),
        _ => None,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Ok,
    Warn,
    Fail,
}

impl Severity {
    pub fn word(self) -> &'static str {
        match self {
            Severity::Ok => "OK",
            Severity::Warn => "WARN",
            Severity::Fail => "FAIL",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub severity: Severity,
    pub text: String,
}

/// One project's freshness on one node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Freshness {
    pub project: String,
    /// `upstream-marker` (lag against the upstream) or `node-trace` (age of the node's own trace).
    pub basis: &'static str,
    pub node_unix: Option<u64>,
    pub upstream_unix: Option<u64>,
    /// Seconds behind the upstream (basis upstream-marker) or since the last sync (node-trace).
    pub lag_seconds: Option<u64>,
    pub allowed_seconds: u64,
}

/// The image a node runs (its public document's word) against the fleet's build.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ImageState {
    pub running: Option<String>,
    /// The image version of the build `--out` names, when given.
    pub fleet: Option<String>,
    /// The node runs another image than the fleet's build; None when either is unknown.
    pub behind: Option<bool>,
    /// The newest image that failed its trial boots on the node (its public document's word).
    pub last_rollback: Option<PublicRollback>,
}

impl ImageState {
    fn new(running: Option<String>, fleet: Option<&str>) -> ImageState {
        let behind = running.as_deref().zip(fleet).map(|(r, f)| r != f);
        ImageState { running, fleet: fleet.map(String::from), behind, last_rollback: None }
    }
}

/// The verdict on one node.
#[derive(Debug, Clone, Serialize)]
pub struct NodeReport {
    pub node: String,
    pub fqdn: String,
    pub health: Severity,
    /// Per family: "ok", "fail" or "none" (the node has no such address).
    pub ipv4: &'static str,
    pub ipv6: &'static str,
    pub freshness: Vec<Freshness>,
    pub image: ImageState,
    /// Worst first.
    pub findings: Vec<Finding>,
    pub probe: NodeProbe,
}

/// The upstream markers fetched for this run, keyed by the URL fetched.
pub type UpstreamMarkers = BTreeMap<String, Result<String, String>>;

/// The URL of `project`'s upstream marker for a node, when its project has one.
pub fn upstream_marker_url(p: &mmconfig::Profile, m: &Marker) -> String {
    format!("{}{}", p.sync.upstream, m.path)
}

/// The path the node serves `p`'s freshness evidence under: the upstream's marker, or our trace.
pub fn node_marker_path(cfg: &NodeConfig, p: &mmconfig::Profile, m: Option<&Marker>) -> String {
    match m {
        Some(m) => format!("{}{}", p.http_path, m.path),
        None => format!("{}{}/{}", p.http_path, p.freshness.trace_dir.trim_matches('/'), cfg.node.fqdn),
    }
}

/// The addresses of one family: HTTP, rsync, HTTPS.
type FamilyAddrs = (Option<SocketAddr>, Option<SocketAddr>, Option<SocketAddr>);

fn probe_family(cfg: &NodeConfig, family: Family, addrs: FamilyAddrs, timeout: Duration) -> FamilyProbe {
    let (http, rsync, https) = addrs;
    let fqdn = cfg.node.fqdn.as_str();
    let (http_res, rsync_res, tls_res) = std::thread::scope(|s| {
        let r = s.spawn(move || rsync.map(|a| Seen::from(net::rsync_list(a, timeout).map(RsyncSeen::from))));
        let t = s.spawn(move || https.map(|a| Seen::from(tls::probe(a, fqdn, None, timeout))));
        let mut out = Vec::new();
        let mut silent = false;
        for p in &cfg.projects {
            let Some(addr) = http else { break };
            let seen =
                if silent { Seen::Skipped } else { Seen::from(net::http(addr, fqdn, "HEAD", &p.http_path, timeout).map(|r| r.status)) };
            silent |= seen.silent();
            out.push((p.name.clone(), seen));
        }
        (out, r.join().unwrap_or(None), t.join().unwrap_or(None))
    });
    FamilyProbe { family, http_address: http, http: http_res, rsync_address: rsync, rsync: rsync_res, https_address: https, tls: tls_res }
}

/// Probe one node: every family in parallel, then its freshness markers over the first family
/// whose HTTP answered.
pub fn probe_node(cfg: &NodeConfig, markers: &BTreeMap<String, Marker>, opts: &Options) -> NodeProbe {
    let http = endpoints(cfg, HTTP_PORT, &opts.resolve);
    let rsync = endpoints(cfg, RSYNC_PORT, &opts.resolve);
    let https = if cfg.fleet.https { endpoints(cfg, HTTPS_PORT, &opts.resolve) } else { Vec::new() };
    let mut fams: Vec<Family> = http.iter().chain(&rsync).map(Family::of).collect();
    fams.sort();
    fams.dedup();
    let pick = |list: &[SocketAddr], f: Family| list.iter().find(|a| Family::of(a) == f).copied();
    let families: Vec<FamilyProbe> = std::thread::scope(|s| {
        let handles: Vec<_> = fams
            .iter()
            .map(|&f| {
                let addrs = (pick(&http, f), pick(&rsync, f), pick(&https, f));
                s.spawn(move || probe_family(cfg, f, addrs, opts.timeout))
            })
            .collect();
        handles.into_iter().filter_map(|h| h.join().ok()).collect()
    });
    let answering = answering_http(&families);
    let mut seen = BTreeMap::new();
    let mut silent = false;
    for p in &cfg.projects {
        let path = node_marker_path(cfg, p, markers.get(&p.name));
        let s = match answering {
            None => Seen::Skipped,
            Some(_) if silent => Seen::Skipped,
            Some(addr) => Seen::from(net::http(addr, &cfg.node.fqdn, "GET", &path, opts.timeout).and_then(|r| {
                if r.status == 200 {
                    Ok(String::from_utf8_lossy(&r.body).into_owned())
                } else {
                    Err(NetError::Protocol("200", format!("HTTP {} for {path}", r.status)))
                }
            })),
        };
        silent |= s.silent();
        seen.insert(p.name.clone(), s);
    }
    let public = answering.filter(|_| !silent).map(|addr| {
        Seen::from(net::http(addr, &cfg.node.fqdn, "GET", PUBLIC_STATUS_PATH, opts.timeout).and_then(|r| {
            if r.status == 200 {
                Ok(String::from_utf8_lossy(&r.body).into_owned())
            } else {
                Err(NetError::Protocol("200", format!("HTTP {}", r.status)))
            }
        }))
    });
    NodeProbe { families, markers: seen, public }
}

fn family_health(f: &FamilyProbe, cfg: &NodeConfig, now: u64, findings: &mut Vec<Finding>) -> bool {
    let fam = f.family.label();
    let mut ok = true;
    let mut fail = |text: String| {
        findings.push(Finding { severity: Severity::Fail, text });
    };
    if let Some(addr) = f.http_address {
        let mut reported_silence = false;
        for (project, seen) in &f.http {
            let path = cfg.project(project).map_or("?", |p| p.http_path.as_str());
            match seen {
                Seen::Ok { value: 200 } => {}
                Seen::Ok { value } => {
                    ok = false;
                    fail(format!("{fam} http {addr}: {path} answers {value}"));
                }
                Seen::Failed { error, .. } => {
                    ok = false;
                    fail(format!("{fam} http {addr}: {error}"));
                    reported_silence = true;
                }
                Seen::Skipped if reported_silence => {}
                Seen::Skipped => {
                    ok = false;
                }
            }
            if reported_silence {
                break;
            }
        }
    }
    if let (Some(addr), Some(seen)) = (f.rsync_address, &f.rsync) {
        match seen {
            Seen::Ok { value } => {
                let missing: Vec<&str> =
                    cfg.projects.iter().map(|p| p.rsync_module.as_str()).filter(|m| !value.modules.iter().any(|x| x == m)).collect();
                if !missing.is_empty() {
                    ok = false;
                    fail(format!(
                        "{fam} rsync {addr}: module {} missing (the daemon lists: {})",
                        missing.join(", "),
                        if value.modules.is_empty() { "nothing".to_string() } else { value.modules.join(", ") }
                    ));
                }
            }
            Seen::Failed { error, .. } => {
                ok = false;
                fail(format!("{fam} rsync {addr}: {error}"));
            }
            Seen::Skipped => ok = false,
        }
    }
    if let (Some(addr), Some(seen)) = (f.https_address, &f.tls) {
        match seen {
            Seen::Ok { value } => {
                let left = value.not_after_unix as i64 - now as i64;
                if left <= 0 {
                    ok = false;
                    fail(format!("{fam} https {addr}: the certificate expired {} ago", marker::human(left.unsigned_abs())));
                } else if left < CERT_WARN_SECONDS {
                    findings.push(Finding {
                        severity: Severity::Warn,
                        text: format!("{fam} https {addr}: the certificate expires in {}", marker::human(left as u64)),
                    });
                }
                if !value.verify.ok() {
                    ok = false;
                    findings.push(Finding {
                        severity: Severity::Fail,
                        text: format!("{fam} https {addr}: the certificate does not verify for {}: {}", cfg.node.fqdn, value.verify),
                    });
                }
            }
            // Before its first certificate a node has no 443 listener: worth a look, not an alarm.
            Seen::Failed { error, .. } => findings.push(Finding { severity: Severity::Warn, text: format!("{fam} https {addr}: {error}") }),
            Seen::Skipped => {}
        }
    }
    ok
}

/// Certificates closer to expiry than this are reported (Let's Encrypt renews at 30 days left).
pub const CERT_WARN_SECONDS: i64 = 14 * 86400;

/// Judge one node's observations against its configuration and the upstream markers.
pub fn judge(
    cfg: &NodeConfig,
    probe: NodeProbe,
    markers: &BTreeMap<String, Marker>,
    upstream: &UpstreamMarkers,
    now: u64,
    lag_margin: u64,
    fleet_image: Option<&str>,
) -> NodeReport {
    let mut findings = Vec::new();
    let mut fam_state = |f: Family| match probe.families.iter().find(|x| x.family == f) {
        None => "none",
        Some(fp) => {
            if family_health(fp, cfg, now, &mut findings) {
                "ok"
            } else {
                "fail"
            }
        }
    };
    let ipv4 = fam_state(Family::Ipv4);
    let ipv6 = fam_state(Family::Ipv6);
    if probe.families.is_empty() {
        findings.push(Finding { severity: Severity::Fail, text: "no address to probe (the inventory gives none)".into() });
    }
    // Parsed once per node; public_findings reports it when it does not parse.
    let public_doc: Option<PublicStatus> = match &probe.public {
        Some(Seen::Ok { value }) => serde_json::from_str(value).ok(),
        _ => None,
    };
    let mut freshness = Vec::new();
    for p in &cfg.projects {
        let m = markers.get(&p.name);
        let allowed = marker::allowed_lag(p.sync.max_interval_minutes, lag_margin);
        let mut fr = Freshness {
            project: p.name.clone(),
            basis: if m.is_some() { "upstream-marker" } else { "node-trace" },
            node_unix: None,
            upstream_unix: None,
            lag_seconds: None,
            allowed_seconds: allowed,
        };
        let kind = m.map_or(marker::MarkerKind::FtpsyncTrace, |m| m.kind);
        let path = node_marker_path(cfg, p, m);
        match probe.markers.get(&p.name) {
            Some(Seen::Ok { value }) => match marker::parse(kind, value) {
                Some(t) => fr.node_unix = Some(t),
                None => findings.push(Finding { severity: Severity::Fail, text: format!("{}: {path} on the node does not parse", p.name) }),
            },
            Some(Seen::Failed { error, .. }) => match first_sync_pending(public_doc.as_ref(), &p.name) {
                Some(pending) => {
                    findings.push(Finding { severity: Severity::Warn, text: format!("{}: {pending} ({path}: {error})", p.name) })
                }
                None => {
                    let what = if m.is_some() { "the upstream's marker" } else { "no trace yet (never synced?)" };
                    findings.push(Finding { severity: Severity::Fail, text: format!("{}: {path}: {error} ({what})", p.name) });
                }
            },
            // The node's HTTP already failed and is reported as such.
            Some(Seen::Skipped) | None => {}
        }
        match m {
            Some(m) => {
                let url = upstream_marker_url(p, m);
                match upstream.get(&url) {
                    Some(Ok(body)) => match marker::parse(m.kind, body) {
                        Some(t) => fr.upstream_unix = Some(t),
                        None => findings.push(Finding {
                            severity: Severity::Warn,
                            text: format!("{}: upstream marker {url} does not parse: lag unknown", p.name),
                        }),
                    },
                    Some(Err(e)) => findings.push(Finding {
                        severity: Severity::Warn,
                        text: format!("{}: upstream {url} unavailable ({e}): lag unknown", p.name),
                    }),
                    None => {}
                }
                if let (Some(u), Some(n)) = (fr.upstream_unix, fr.node_unix) {
                    fr.lag_seconds = Some(match marker::lag(u, n) {
                        Lag::Current => 0,
                        Lag::Behind { seconds } => seconds,
                    });
                }
            }
            None => fr.lag_seconds = fr.node_unix.map(|t| now.saturating_sub(t)),
        }
        if let Some(lag) = fr.lag_seconds.filter(|l| *l > allowed) {
            let how = if m.is_some() { "behind its upstream" } else { "since the last successful sync" };
            findings.push(Finding {
                severity: Severity::Fail,
                text: format!("{}: {} {how} (allowed {})", p.name, marker::human(lag), marker::human(allowed)),
            });
        }
        freshness.push(fr);
    }
    if let Some(seen) = &probe.public {
        public_findings(cfg, seen, &mut findings);
    }
    let mut image = ImageState::new(public_doc.as_ref().and_then(|d| d.image_version.as_deref()).map(shown), fleet_image);
    image.last_rollback = public_doc.as_ref().and_then(|d| d.last_rollback.clone());
    if let (Some(true), Some(running), Some(fleet)) = (image.behind, &image.running, fleet_image) {
        findings.push(Finding {
            severity: Severity::Warn,
            text: format!("runs image {running}, not the fleet's build {fleet}: roll the build out to it"),
        });
    }
    findings.sort_by_key(|f| std::cmp::Reverse(f.severity));
    let health = findings.first().map_or(Severity::Ok, |f| f.severity);
    NodeReport { node: cfg.node.name.clone(), fqdn: cfg.node.fqdn.clone(), health, ipv4, ipv6, freshness, image, findings, probe }
}

/// The whole run, as `--json` prints it.
#[derive(Debug, Clone, Serialize)]
pub struct FleetReport {
    pub version: u32,
    pub fleet: String,
    pub generated_unix: u64,
    pub healthy: bool,
    /// Worst first, then by name.
    pub nodes: Vec<NodeReport>,
    pub upstreams: BTreeMap<String, UpstreamSeen>,
}

#[derive(Debug, Clone, Serialize)]
pub struct UpstreamSeen {
    pub ok: bool,
    pub error: Option<String>,
}

pub fn now_unix() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The HTTP address of the first family on which a project's path answered at all.
pub fn answering_http(families: &[FamilyProbe]) -> Option<SocketAddr> {
    families.iter().find(|f| f.http.iter().any(|(_, s)| matches!(s, Seen::Ok { .. }))).and_then(|f| f.http_address)
}

/// Probe every node (at most `opts.jobs` at once) while the upstream markers are fetched, then
/// judge, against `fleet_image` (the fleet build's image version) when known.
pub fn probe_fleet(
    fleet_name: &str,
    nodes: &[NodeConfig],
    markers: &BTreeMap<String, Marker>,
    opts: &Options,
    fleet_image: Option<&str>,
) -> FleetReport {
    let mut urls: Vec<String> =
        nodes.iter().flat_map(|n| n.projects.iter()).filter_map(|p| markers.get(&p.name).map(|m| upstream_marker_url(p, m))).collect();
    urls.sort();
    urls.dedup();
    let now = now_unix();
    // The upstream markers are fetched while the nodes are probed, by hostkit's one pool.
    let (upstream, probes): (UpstreamMarkers, Vec<NodeProbe>) = std::thread::scope(|s| {
        let fetches: Vec<_> = urls.iter().map(|u| (u.clone(), s.spawn(|| upstream::fetch(u, opts.upstream_timeout)))).collect();
        let probes = hostkit::pool::map(nodes, opts.jobs, |cfg| probe_node(cfg, markers, opts));
        (fetches.into_iter().map(|(u, h)| (u, h.join().unwrap_or_else(|_| Err("fetch panicked".into())))).collect(), probes)
    });
    let margin = opts.lag_margin.as_secs();
    let mut reports: Vec<NodeReport> =
        nodes.iter().zip(probes).map(|(cfg, p)| judge(cfg, p, markers, &upstream, now, margin, fleet_image)).collect();
    reports.sort_by(|a, b| b.health.cmp(&a.health).then_with(|| a.node.cmp(&b.node)));
    let healthy = reports.iter().all(|r| r.health != Severity::Fail);
    let upstreams = upstream.into_iter().map(|(u, r)| (u, UpstreamSeen { ok: r.is_ok(), error: r.err() })).collect();
    FleetReport { version: JSON_VERSION, fleet: fleet_name.to_string(), generated_unix: now, healthy, nodes: reports, upstreams }
}

/// Printable and short: text from a node is untrusted.
fn shown(s: &str) -> String {
    s.chars().filter(|c| !c.is_control()).take(64).collect()
}

/// What the node's public document says: failed syncs, check errors, and projects added to or
/// removed from the inventory since the node was built.
fn public_findings(cfg: &NodeConfig, seen: &Seen<String>, findings: &mut Vec<Finding>) {
    let mut push = |severity, text| findings.push(Finding { severity, text });
    let body = match seen {
        Seen::Ok { value } => value,
        Seen::Failed { error, .. } => {
            push(Severity::Warn, format!("{PUBLIC_STATUS_PATH}: {error} (built before mm-sync published it, or no sync has run yet)"));
            return;
        }
        Seen::Skipped => return,
    };
    let doc: PublicStatus = match serde_json::from_str(body) {
        Ok(d) => d,
        Err(e) => {
            push(Severity::Warn, format!("{PUBLIC_STATUS_PATH} does not parse: {}", shown(&e.to_string())));
            return;
        }
    };
    if doc.version != public::VERSION {
        push(Severity::Warn, format!("{PUBLIC_STATUS_PATH} has version {}, this mmbuild reads {}", doc.version, public::VERSION));
        return;
    }
    for p in &doc.projects {
        let name = shown(&p.project);
        if cfg.project(&p.project).is_none() {
            push(Severity::Warn, format!("{name}: served by the node but no longer in the inventory (rebuild the node's configuration)"));
            continue;
        }
        if !p.result.is_healthy() {
            push(Severity::Fail, format!("{name}: the last sync ended {}", p.result));
        }
        if p.check_errors > 0 {
            push(Severity::Fail, format!("{name}: {} consistency problem(s) in the served tree", p.check_errors));
        }
    }
    for p in &cfg.projects {
        if !doc.projects.iter().any(|d| d.project == p.name) {
            push(
                Severity::Warn,
                format!("{}: in the inventory but not on the node (added since it was built: rebuild its configuration)", p.name),
            );
        }
    }
}
