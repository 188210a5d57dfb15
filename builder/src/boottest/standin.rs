//! Stand-in upstreams for `mmbuild boot-test`: which rsync hosts a node syncs from, and the tiny, valid trees, rsyncd and dnsmasq configurations that answer for them inside the test's network namespace.
//!
//! The node's image is not modified: its upstream host names resolve (through a dnsmasq on the
//! node's own resolver addresses) to stand-in addresses from 198.18.0.0/15 and fd00:5eed::/64,
//! where one rsync daemon per address serves each upstream module. Each project's tree holds just
//! enough for the node's first sync and mm-sync's index check: an apt suite or an rpm repository
//! with one tiny package, README, the upstream-written freshness markers
//! (`overlays/monitoring/markers.toml`) and, for ftpsync archives, the upstream's trace file.
//!
//! Names and paths come from profiles and the fleet file: anything that is not a plain DNS name,
//! rsync module name or path segment is refused with an error rather than escaped.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use handlebars::Handlebars;
use hostkit::atomic;
use hostkit::net::{Authority, Host};
use mmconfig::marker::Civil;
use mmconfig::{CheckKind, NodeConfig, Profile};
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::monitor::health::marker::{self, MarkerKind};

/// Where the templates live, relative to the data directory.
pub const TEMPLATES: &str = "overlays/boot-test";
/// rsync's port when the URL names none.
pub const RSYNC_PORT: u16 = 873;
/// The apt suite every stand-in archive carries.
pub const SUITE: &str = "mm-standin";
/// Base of the stand-in IPv4 addresses (198.18.0.0/15, RFC 2544 benchmarking: never routed).
const V4_BASE: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 0);
/// Base of the stand-in IPv6 addresses (fd00:5eed::/64, unique local).
const V6_BASE: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x5eed, 0, 0, 0, 0, 0, 0);
const PACKAGE: &str = "mm-standin";
const VERSION: &str = "1.0";

/// Everything one node's boot test needs to answer for its upstreams.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StandIn {
    /// Sorted by name, then port.
    pub hosts: Vec<StandInHost>,
    /// The node's resolvers (`node.dns`): where the stand-in dnsmasq listens.
    pub resolvers: Vec<IpAddr>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StandInHost {
    /// Host as written in the URL (a DNS name, or a literal IP without brackets).
    pub name: String,
    /// Addresses the stand-in listens on: for a DNS name one from 198.18.0.0/15 and one from
    /// fd00:5eed::/64 (only the families the node has, or both when it has none); for a literal IP, that IP.
    pub addrs: Vec<IpAddr>,
    /// From the URL, default 873.
    pub port: u16,
    /// Sorted by name.
    pub modules: Vec<StandInModule>,
}

impl StandInHost {
    /// Whether the name is a literal IP (no DNS entry for it).
    pub fn is_literal(&self) -> bool {
        self.name.parse::<IpAddr>().is_ok()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StandInModule {
    /// The rsync module.
    pub name: String,
    /// Names of the node's projects synced from this module, in the node's order.
    pub projects: Vec<String>,
}

/// What [`write`] produced: the lead starts one `rsync --daemon --no-detach --config=C` per conf
/// and one `dnsmasq --keep-in-foreground --conf-file=D`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    /// One per (host, address), in plan order.
    pub rsyncd_confs: Vec<PathBuf>,
    pub dnsmasq_conf: PathBuf,
}

/// One upstream URL, split and checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    pub host: String,
    pub port: u16,
    pub module: String,
    /// Path segments below the module (empty: the module's root).
    pub sub: Vec<String>,
}

impl Upstream {
    /// The project's tree relative to the module directory.
    pub fn sub_path(&self) -> PathBuf {
        self.sub.iter().collect()
    }
}

/// Split `rsync://HOST[:PORT]/MODULE[/SUB/...]/`; refuses what is not a plain name or path.
pub fn parse_upstream(url: &str) -> Result<Upstream> {
    let why = |what: String| anyhow::anyhow!("upstream {url:?}: {what}");
    let rest = url.strip_prefix("rsync://").ok_or_else(|| why("not an rsync:// URL".into()))?;
    let (authority, path) = rest.split_once('/').ok_or_else(|| why("no module after the host".into()))?;
    let authority = Authority::parse(authority).map_err(|e| why(e.to_string()))?;
    let host = match &authority.host {
        Host::Ip(ip) => ip.to_string(),
        Host::Name(name) => {
            check_dns_name(name).map_err(why)?;
            name.clone()
        }
    };
    let port = authority.port.unwrap_or(RSYNC_PORT);
    let mut segs = path.split('/').collect::<Vec<_>>();
    if segs.last() == Some(&"") {
        segs.pop();
    }
    let Some((module, sub)) = segs.split_first() else { return Err(why("no module after the host".into())) };
    check_module(module).map_err(why)?;
    for s in sub {
        check_segment(s).map_err(why)?;
    }
    Ok(Upstream { host, port, module: module.to_string(), sub: sub.iter().map(|s| s.to_string()).collect() })
}

/// A DNS name dnsmasq can take as is: dot-separated labels of letters, digits and inner hyphens.
pub fn check_dns_name(name: &str) -> Result<(), String> {
    let ok_label = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if name.is_empty() || name.len() > 253 || !name.split('.').all(ok_label) {
        return Err(format!("host {name:?} is not a DNS name (letters, digits, inner hyphens, dot-separated) or an IP address"));
    }
    if name.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return Err(format!("host {name:?} is neither an IPv4 address nor a DNS name"));
    }
    Ok(())
}

/// An rsync module name rsyncd.conf can take between brackets as is.
pub fn check_module(name: &str) -> Result<(), String> {
    check_segment(name).map_err(|_| format!("module {name:?} is not a plain rsync module name (letters, digits, `.`, `_`, `-`)"))
}

/// A path segment usable in rsyncd.conf and on disk as is: letters, digits, `.`, `_`, `-`, `+`,
/// not `.`/`..`, not hidden.
pub fn check_segment(seg: &str) -> Result<(), String> {
    let ok = !seg.is_empty()
        && seg.len() <= 128
        && !seg.starts_with('.')
        && !seg.starts_with('-')
        && seg.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'+'));
    if ok {
        Ok(())
    } else {
        Err(format!("path segment {seg:?} is not plain (letters, digits, `.`, `_`, `-`, `+`; not hidden, not `..`)"))
    }
}

/// Plan for one node: every upstream of its projects; deterministic.
pub fn plan(cfg: &NodeConfig) -> Result<StandIn> {
    let node = &cfg.node.name;
    // (host, port) -> module -> projects.
    let mut hosts: BTreeMap<(String, u16), BTreeMap<String, Vec<String>>> = BTreeMap::new();
    for p in &cfg.projects {
        let up = parse_upstream(&p.sync.upstream).with_context(|| format!("node {node}, project {}", p.name))?;
        hosts.entry((up.host, up.port)).or_default().entry(up.module).or_default().push(p.name.clone());
    }
    let resolvers = cfg
        .node
        .dns
        .iter()
        .map(|d| d.parse::<IpAddr>().with_context(|| format!("node {node}: resolver {d:?} in dns is not an IP address")))
        .collect::<Result<Vec<_>>>()?;
    let (v4, v6) = match (cfg.node.ipv4.is_some(), cfg.node.ipv6.is_some()) {
        (false, false) => (true, true),
        f => f,
    };
    // One address pair per distinct DNS name, numbered in name order.
    let mut names: Vec<&str> = hosts.keys().map(|(h, _)| h.as_str()).filter(|h| h.parse::<IpAddr>().is_err()).collect();
    names.dedup();
    let mut out = Vec::new();
    for ((name, port), modules) in &hosts {
        let addrs = match name.parse::<IpAddr>() {
            Ok(ip) => vec![ip],
            Err(_) => {
                let i = names.iter().position(|n| n == name).expect("listed above") as u32 + 1;
                let mut a = Vec::new();
                if v4 {
                    a.push(IpAddr::V4(Ipv4Addr::from(u32::from(V4_BASE) + i)));
                }
                if v6 {
                    a.push(IpAddr::V6(Ipv6Addr::from(u128::from(V6_BASE) + u128::from(i))));
                }
                a
            }
        };
        let modules = modules.iter().map(|(m, p)| StandInModule { name: m.clone(), projects: p.clone() }).collect();
        out.push(StandInHost { name: name.clone(), addrs, port: *port, modules });
    }
    Ok(StandIn { hosts: out, resolvers })
}

/// The directory (below `dir`) of one host's modules.
pub fn host_dir(dir: &Path, h: &StandInHost) -> PathBuf {
    dir.join("hosts").join(format!("{}-{}", h.name.replace(':', "_"), h.port))
}

/// Where one project's tree is written under `dir` (the module directory plus the URL's sub-path).
pub fn project_tree(dir: &Path, plan: &StandIn, p: &Profile) -> Result<PathBuf> {
    let up = parse_upstream(&p.sync.upstream)?;
    let h = plan
        .hosts
        .iter()
        .find(|h| h.name == up.host && h.port == up.port)
        .with_context(|| format!("project {}: its upstream host {} is not in the plan", p.name, up.host))?;
    Ok(host_dir(dir, h).join("modules").join(&up.module).join(up.sub_path()))
}

/// A path rendered into a config file: refused when a newline or another control character
/// (or `#`, a comment in dnsmasq) would change the file's meaning.
fn config_path(p: &Path) -> Result<String> {
    let s = p.to_str().with_context(|| format!("{}: not UTF-8; choose a plain directory for the stand-in", p.display()))?;
    if s.chars().any(|c| c.is_control() || c == '#' || c == ',') || s.trim() != s {
        bail!("{s:?}: control characters, `#`, `,` or surrounding blanks cannot be written into rsyncd.conf/dnsmasq.conf; choose a plain directory");
    }
    Ok(s.to_string())
}

fn templates(data_dir: &Path) -> Result<Handlebars<'static>> {
    let dir = data_dir.join(TEMPLATES);
    let mut h = Handlebars::new();
    h.set_strict_mode(true);
    for name in ["rsyncd.conf", "dnsmasq.conf", "Release", "Packages", "repomd.xml", "primary.xml", "README", "ftpsync-trace", "package"] {
        let path = dir.join(format!("{name}.hbs"));
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading template {}", path.display()))?;
        h.register_template_string(name, text).with_context(|| format!("parsing template {}", path.display()))?;
    }
    Ok(h)
}

/// Renders with the template's target escaping: XML templates escape, the others take values
/// that were checked to be plain.
fn render(h: &mut Handlebars<'static>, name: &str, data: &serde_json::Value) -> Result<String> {
    if name.ends_with(".xml") {
        h.register_escape_fn(mmconfig::xml_escape);
    } else {
        h.register_escape_fn(handlebars::no_escape);
    }
    h.render(name, data).with_context(|| format!("rendering {TEMPLATES}/{name}.hbs"))
}

fn sha256(b: &[u8]) -> String {
    format!("{:x}", Sha256::digest(b))
}

fn gzip(b: &[u8]) -> Result<Vec<u8>> {
    // mtime 0 in the header: the same tree gives the same bytes.
    let mut e = flate2::GzBuilder::new().mtime(0).write(Vec::new(), flate2::Compression::best());
    e.write_all(b)?;
    Ok(e.finish()?)
}

/// The time written into markers and indexes: `SOURCE_DATE_EPOCH` when set (reproducible output),
/// else now, so freshness checks against the stand-in see a fresh upstream.
fn stamp() -> u64 {
    std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0))
}

/// `Sat, 01 Jan 2025 00:00:00 UTC` (Release files' Date).
pub fn release_date(t: u64) -> String {
    let c = Civil::from_unix(t);
    format!("{}, {:02} {} {} {} UTC", c.weekday, c.day, c.month_name(), c.year, c.hms())
}

/// Write under `dir`: per host a directory tree, one rsyncd.conf per stand-in address, and a
/// dnsmasq.conf answering every planned DNS name on the node's resolver addresses. The
/// directories above `dir` must be searchable by `nobody` (rsyncd drops to it when run as root).
pub fn write(cfg: &NodeConfig, plan: &StandIn, dir: &Path) -> Result<Written> {
    write_with(cfg, plan, dir, &crate::inventory::data::builtin_data_dir(), stamp())
}

/// [`write`] with the data directory and the time given (tests).
pub fn write_with(cfg: &NodeConfig, plan: &StandIn, dir: &Path, data_dir: &Path, now: u64) -> Result<Written> {
    let mut h = templates(data_dir)?;
    let markers = marker::load(data_dir)?;
    let node = &cfg.node.name;
    config_path(dir)?;
    // Re-check the plan: it is a public struct and may have been built by hand.
    for host in &plan.hosts {
        if !host.is_literal() {
            check_dns_name(&host.name).map_err(|e| anyhow::anyhow!("node {node}: {e}"))?;
        }
        for m in &host.modules {
            check_module(&m.name).map_err(|e| anyhow::anyhow!("node {node}, host {}: {e}", host.name))?;
        }
    }
    for p in &cfg.projects {
        let tree = project_tree(dir, plan, p).with_context(|| format!("node {node}"))?;
        write_tree(&mut h, &markers, p, &tree, now)
            .with_context(|| format!("node {node}, project {}: writing its stand-in tree", p.name))?;
    }
    let mut rsyncd_confs = Vec::new();
    for host in &plan.hosts {
        let hd = host_dir(dir, host);
        let modules: Vec<_> = host
            .modules
            .iter()
            .map(|m| {
                Ok(json!({
                    "name": m.name,
                    "path": config_path(&hd.join("modules").join(&m.name))?,
                    "projects": m.projects.iter().map(|p| check_segment(p).map(|_| p.as_str())).collect::<Result<Vec<_>, _>>()
                        .map_err(|e| anyhow::anyhow!("node {node}: project name: {e}"))?.join(", "),
                }))
            })
            .collect::<Result<_>>()?;
        for m in &host.modules {
            let md = hd.join("modules").join(&m.name);
            std::fs::create_dir_all(&md).with_context(|| format!("creating {}", md.display()))?;
        }
        for addr in &host.addrs {
            let tag = addr.to_string().replace(':', "_");
            let conf = hd.join(format!("rsyncd-{tag}.conf"));
            let text = render(
                &mut h,
                "rsyncd.conf",
                &json!({
                    "host": host.name,
                    "address": addr.to_string(),
                    "port": host.port,
                    "log_file": config_path(&hd.join(format!("rsyncd-{tag}.log")))?,
                    "modules": modules,
                }),
            )?;
            atomic::write(&conf, text.as_bytes())?;
            rsyncd_confs.push(conf);
        }
    }
    let records: Vec<_> = plan
        .hosts
        .iter()
        .filter(|h| !h.is_literal())
        .map(|h| (h.name.as_str(), h.addrs.iter().map(|a| a.to_string()).collect::<Vec<_>>().join(",")))
        .collect::<BTreeMap<_, _>>()
        .into_iter()
        .map(|(name, addrs)| json!({"name": name, "addrs": addrs}))
        .collect();
    let dnsmasq_conf = dir.join("dnsmasq.conf");
    let text = render(
        &mut h,
        "dnsmasq.conf",
        &json!({
            "listen": plan.resolvers.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
            "log_file": config_path(&dir.join("dnsmasq.log"))?,
            "records": records,
        }),
    )?;
    atomic::write(&dnsmasq_conf, text.as_bytes())?;
    Ok(Written { rsyncd_confs, dnsmasq_conf })
}

/// One project's tree: README, its index (apt/rpm), its upstream markers and ftpsync trace.
fn write_tree(h: &mut Handlebars<'static>, markers: &BTreeMap<String, marker::Marker>, p: &Profile, tree: &Path, now: u64) -> Result<()> {
    let up = parse_upstream(&p.sync.upstream)?;
    let put = |rel: &str, bytes: &[u8]| -> Result<()> {
        for seg in rel.split('/') {
            check_segment(seg)
                .or_else(|e| if seg.starts_with('.') && check_segment(&seg[1..]).is_ok() { Ok(()) } else { Err(e) })
                .map_err(|e| anyhow::anyhow!("{rel:?}: {e}"))?;
        }
        atomic::write(&tree.join(rel), bytes)
    };
    let base = json!({"project": p.name, "upstream": p.sync.upstream, "package": PACKAGE, "version": VERSION});
    put("README", render(h, "README", &base)?.as_bytes())?;
    let marker = markers.get(&p.name);
    match p.sync.check {
        CheckKind::Apt => {
            let deb = render(h, "package", &base)?;
            let filename = format!("pool/main/m/{PACKAGE}/{PACKAGE}_{VERSION}_all.deb");
            put(&filename, deb.as_bytes())?;
            let mut d = base.clone();
            d["filename"] = json!(filename);
            d["size"] = json!(deb.len());
            d["sha256"] = json!(sha256(deb.as_bytes()));
            let packages = render(h, "Packages", &d)?;
            let gz = gzip(packages.as_bytes())?;
            let dists = format!("dists/{SUITE}");
            put(&format!("{dists}/main/binary-amd64/Packages"), packages.as_bytes())?;
            put(&format!("{dists}/main/binary-amd64/Packages.gz"), &gz)?;
            let files = [("main/binary-amd64/Packages", packages.as_bytes()), ("main/binary-amd64/Packages.gz", &gz[..])]
                .iter()
                .map(|(path, b)| json!({"path": path, "size": b.len(), "sha256": sha256(b)}))
                .collect::<Vec<_>>();
            let release = render(h, "Release", &json!({"project": p.name, "suite": SUITE, "date": release_date(now), "files": files}))?;
            put(&format!("{dists}/Release"), release.as_bytes())?;
        }
        CheckKind::Rpm => {
            // Where the upstream's marker says its repomd.xml is (EPEL's 9/Everything/x86_64), else the root.
            let repo = match marker {
                Some(m) if m.kind == MarkerKind::Repomd => m.path.strip_suffix("repodata/repomd.xml").unwrap_or("").trim_end_matches('/'),
                _ => "",
            };
            let at = |rel: &str| if repo.is_empty() { rel.to_string() } else { format!("{repo}/{rel}") };
            let rpm = render(h, "package", &base)?;
            let href = format!("Packages/m/{PACKAGE}-{VERSION}-1.noarch.rpm");
            put(&at(&href), rpm.as_bytes())?;
            let mut d = base.clone();
            d["href"] = json!(href);
            d["size"] = json!(rpm.len());
            d["sha256"] = json!(sha256(rpm.as_bytes()));
            d["time"] = json!(now);
            let primary = render(h, "primary.xml", &d)?;
            let gz = gzip(primary.as_bytes())?;
            let gz_sha = sha256(&gz);
            let primary_href = format!("repodata/{gz_sha}-primary.xml.gz");
            put(&at(&primary_href), &gz)?;
            let repomd = render(
                h,
                "repomd.xml",
                &json!({"revision": now, "sha256": gz_sha, "open_sha256": sha256(primary.as_bytes()), "href": primary_href,
                        "size": gz.len(), "open_size": primary.len()}),
            )?;
            put(&at("repodata/repomd.xml"), repomd.as_bytes())?;
        }
        CheckKind::None => {}
    }
    match marker {
        Some(m) if m.kind == MarkerKind::Epoch => put(&m.path, format!("{now}\n").as_bytes())?,
        Some(m) if m.kind == MarkerKind::FtpsyncTrace => put(&m.path, trace(h, &up.host, now)?.as_bytes())?,
        _ => {}
    }
    // ftpsync archives (Debian, Ubuntu) carry each upstream's own trace beside the node's.
    if p.freshness.trace_dir.trim_matches('/') == "project/trace" {
        put(&format!("project/trace/{}", up.host.replace(':', "_")), trace(h, &up.host, now)?.as_bytes())?;
    }
    Ok(())
}

fn trace(h: &mut Handlebars<'static>, host: &str, now: u64) -> Result<String> {
    let c = Civil::from_unix(now);
    let ctx =
        json!({"date": c.date_u(), "rfc2822": c.rfc2822(), "serial": format!("{}{:02}{:02}01", c.year, c.month, c.day), "host": host});
    render(h, "ftpsync-trace", &ctx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_into_host_port_module_and_sub_path() {
        let u = parse_upstream("rsync://mirrors.kernel.org/fedora-enchilada/linux/").unwrap();
        assert_eq!(
            u,
            Upstream { host: "mirrors.kernel.org".into(), port: 873, module: "fedora-enchilada".into(), sub: vec!["linux".into()] }
        );
        let u = parse_upstream("rsync://10.0.2.2:10873/epel/").unwrap();
        assert_eq!((u.host.as_str(), u.port, u.module.as_str()), ("10.0.2.2", 10873, "epel"));
        let u = parse_upstream("rsync://[fd00::1]:8873/m/a/b/").unwrap();
        assert_eq!((u.host.as_str(), u.port, u.sub.len()), ("fd00::1", 8873, 2));
        assert_eq!(parse_upstream("rsync://[fd00::1]/m/").unwrap().port, 873);
    }

    #[test]
    fn unsafe_urls_are_refused_with_the_reason() {
        for (url, why) in [
            ("rsync://host/mod\nlog file = /etc/x/", "module"),
            ("rsync://host/[global]/", "module"),
            ("rsync://host/m/../../etc/", "path segment"),
            ("rsync://host/m/.hidden/", "path segment"),
            ("rsync://ho st/m/", "DNS name"),
            ("rsync://host,1.2.3.4/m/", "DNS name"),
            ("rsync://host:99999/m/", "port"),
            ("rsync://host:/m/", "port"),
            ("rsync://[fd00::1/m/", "`]`"),
            ("rsync://[fd00::1]x/m/", ":PORT"),
            ("rsync://host/", "no module"),
            ("http://host/m/", "rsync://"),
            ("rsync://999.1.1.1/m/", "IPv4"),
        ] {
            let e = parse_upstream(url).unwrap_err().to_string();
            assert!(e.contains(why), "{url:?}: {e}");
        }
    }

    #[test]
    fn release_dates_parse_back() {
        assert_eq!(release_date(1_735_689_600), "Wed, 01 Jan 2025 00:00:00 UTC");
        for t in [0, 951_782_400, 1_735_689_600 + 86_399, 4_102_444_800] {
            assert_eq!(marker::parse_date(&release_date(t)), Some(t), "{}", release_date(t));
        }
    }

    #[test]
    fn config_paths_with_line_breaks_are_refused() {
        assert!(config_path(Path::new("/tmp/a\nport = 1")).is_err());
        assert!(config_path(Path::new("/tmp/a#b")).is_err());
        assert!(config_path(Path::new("/tmp/standin")).is_ok());
    }
}
