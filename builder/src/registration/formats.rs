//! The applications in each upstream's own format: AlmaLinux mirrors.d YAML, MirrorManager
//! checklists, Debian's form and masterlist stanza, Launchpad entries and request texts.
//!
//! Text comes from the templates in `overlays/registration/`, each rendered by a Handlebars
//! registry whose escape function is its target language's (Markdown, YAML, deb822), so every
//! `{{value}}` from the inventory arrives escaped; JSON is serde's.

use std::path::Path;

use anyhow::{bail, Context, Result};
use handlebars::{handlebars_helper, Handlebars};
use mmconfig::{NodeConfig, Profile};
use serde::Serialize;

use super::escape::{deb822_value, md_code, md_text, yaml_quote};
use super::{Application, Format, OutFile, Readiness, Specs};
use crate::fleet::{Fleet, NodeFacts};

handlebars_helper!(code_h: |s: str| md_code(s));

/// The three registries, one per target language.
pub struct Templates {
    md: Handlebars<'static>,
    yaml: Handlebars<'static>,
    deb822: Handlebars<'static>,
}

impl Templates {
    pub fn load(dir: &Path) -> Result<Templates> {
        fn registry(escape: fn(&str) -> String) -> Handlebars<'static> {
            let mut h = Handlebars::new();
            h.set_strict_mode(true);
            h.register_escape_fn(escape);
            h.register_helper("code", Box::new(code_h));
            h
        }
        let mut t = Templates { md: registry(md_text), yaml: registry(yaml_quote), deb822: registry(deb822_value) };
        let add = |h: &mut Handlebars<'static>, name: &str| -> Result<()> {
            let path = dir.join(name);
            let text = std::fs::read_to_string(&path).with_context(|| format!("reading template {}", path.display()))?;
            h.register_template_string(name, text).with_context(|| format!("parsing template {}", path.display()))
        };
        for name in [
            "README.md.hbs",
            "index.md.hbs",
            "mirrormanager.md.hbs",
            "debian.md.hbs",
            "launchpad.md.hbs",
            "request.md.hbs",
            "steps/almalinux.md.hbs",
            "steps/mirrormanager.md.hbs",
            "steps/debian.md.hbs",
            "steps/launchpad.md.hbs",
            "steps/request.md.hbs",
        ] {
            add(&mut t.md, name)?;
        }
        add(&mut t.yaml, "mirror.yml.hbs")?;
        add(&mut t.deb822, "masterlist.hbs")?;
        Ok(t)
    }
}

/// One node as the templates see it.
#[derive(Debug, Clone, Serialize)]
pub struct NodeView {
    pub name: String,
    pub fqdn: String,
    pub sponsor: String,
    pub sponsor_url: String,
    pub country: Option<String>,
    pub country_name: Option<String>,
    pub state_province: Option<String>,
    pub city: Option<String>,
    /// "City, State, Country".
    pub location: Option<String>,
    pub latitude: Option<f64>,
    pub longitude: Option<f64>,
    pub asn: Option<u32>,
    pub port_mbps: Option<u32>,
    /// "10 Gbit/s".
    pub bandwidth: Option<String>,
    /// Host addresses, IPv4 first.
    pub addresses: Vec<String>,
}

/// One project on one node.
#[derive(Debug, Clone, Serialize)]
pub struct Urls {
    pub http: String,
    pub https: Option<String>,
    pub rsync: String,
}

pub fn node_view(cfg: &NodeConfig, facts: &NodeFacts) -> NodeView {
    let loc = facts.location.as_ref();
    let location = loc.map(|l| {
        [l.city.as_deref(), l.state_province.as_deref(), Some(l.country_name.as_str())].into_iter().flatten().collect::<Vec<_>>().join(", ")
    });
    let addresses = [cfg.node.ipv4.as_ref().map(|a| &a.address), cfg.node.ipv6.as_ref().map(|a| &a.address)]
        .into_iter()
        .flatten()
        .map(|a| a.split('/').next().unwrap_or(a).to_string())
        .collect();
    NodeView {
        name: cfg.node.name.clone(),
        fqdn: cfg.node.fqdn.clone(),
        sponsor: cfg.node.sponsor.name.clone(),
        sponsor_url: cfg.node.sponsor.url.clone(),
        country: loc.map(|l| l.country.clone()),
        country_name: loc.map(|l| l.country_name.clone()),
        state_province: loc.and_then(|l| l.state_province.clone()),
        city: loc.and_then(|l| l.city.clone()),
        location,
        latitude: loc.and_then(|l| l.latitude),
        longitude: loc.and_then(|l| l.longitude),
        asn: facts.asn,
        port_mbps: facts.port_mbps,
        bandwidth: facts.port_mbps.map(bandwidth),
        addresses,
    }
}

/// Mbit/s as people write it: `1 Gbit/s`, `2.5 Gbit/s`, `100 Mbit/s`.
pub fn bandwidth(mbps: u32) -> String {
    if mbps >= 1000 && mbps.is_multiple_of(100) {
        let g = f64::from(mbps) / 1000.0;
        format!("{g} Gbit/s")
    } else {
        format!("{mbps} Mbit/s")
    }
}

pub fn urls(cfg: &NodeConfig, p: &Profile) -> Urls {
    let fqdn = &cfg.node.fqdn;
    Urls {
        http: format!("http://{fqdn}{}", p.http_path),
        https: cfg.fleet.https.then(|| format!("https://{fqdn}{}", p.http_path)),
        rsync: format!("rsync://{fqdn}/{}/", p.rsync_module),
    }
}

/// `3h` for a profile synced every three hours.
pub fn update_frequency(p: &Profile) -> String {
    format!("{}h", p.sync.every_hours)
}

fn facts<'a>(fleet: &'a Fleet, cfg: &NodeConfig) -> std::borrow::Cow<'a, NodeFacts> {
    match fleet.registration.nodes.get(&cfg.node.name) {
        Some(f) => std::borrow::Cow::Borrowed(f),
        None => std::borrow::Cow::Owned(NodeFacts::default()),
    }
}

fn json(value: &impl Serialize) -> Result<Vec<u8>> {
    let mut s = serde_json::to_string_pretty(value).context("serializing JSON")?;
    s.push('\n');
    Ok(s.into_bytes())
}

#[derive(Serialize)]
struct ProjectView<'a> {
    name: &'a str,
    description: &'a str,
    homepage: &'a str,
    method: &'a str,
    url: &'a str,
    notes: &'a str,
    checker: &'a str,
    update_frequency: String,
    upstream: &'a str,
    markers: &'a [String],
}

fn project_view<'a>(specs: &'a Specs, p: &'a Profile) -> ProjectView<'a> {
    let spec = specs.get(&p.name);
    ProjectView {
        name: &p.name,
        description: &p.description,
        homepage: &p.homepage,
        method: &p.registration.method,
        url: &p.registration.url,
        notes: &p.registration.notes,
        checker: &spec.checker,
        update_frequency: update_frequency(p),
        upstream: &p.sync.upstream,
        markers: &spec.markers,
    }
}

#[derive(Serialize)]
struct ReadyView {
    node: String,
    project: String,
    ready: bool,
    problems: Vec<String>,
}

fn ready_views(app: &Application<'_>, readiness: Option<&Readiness>) -> Option<Vec<ReadyView>> {
    let r = readiness?;
    let mut out = Vec::new();
    for c in &app.nodes {
        for p in app.projects.iter().filter(|p| c.project(&p.name).is_some()) {
            let problems = r.get(&(c.node.name.clone(), p.name.clone())).cloned().unwrap_or_default();
            out.push(ReadyView { node: c.node.fqdn.clone(), project: p.name.clone(), ready: problems.is_empty(), problems });
        }
    }
    Some(out)
}

/// Every file of one application, its README.md included.
pub fn render_application(
    t: &Templates,
    fleet: &Fleet,
    specs: &Specs,
    app: &Application<'_>,
    readiness: Option<&Readiness>,
) -> Result<Vec<OutFile>> {
    let (mut files, steps_ctx) = match app.format {
        Format::Almalinux => almalinux(t, fleet, app)?,
        Format::Mirrormanager => mirrormanager(t, fleet, specs, app)?,
        Format::Debian => debian(t, fleet, specs, app)?,
        Format::Launchpad => launchpad(t, fleet, specs, app)?,
        Format::Request => request(t, fleet, specs, app)?,
    };
    let step_template = match app.format {
        Format::Almalinux => "steps/almalinux.md.hbs",
        Format::Mirrormanager => "steps/mirrormanager.md.hbs",
        Format::Debian => "steps/debian.md.hbs",
        Format::Launchpad => "steps/launchpad.md.hbs",
        Format::Request => "steps/request.md.hbs",
    };
    let steps = t.md.render(step_template, &steps_ctx).with_context(|| format!("rendering {step_template}"))?;
    let ready = ready_views(app, readiness);
    let not_ready = ready.as_ref().is_some_and(|r| r.iter().any(|v| !v.ready));
    let ctx = serde_json::json!({
        "dir": app.dir,
        "fleet": fleet.name,
        "projects": app.projects.iter().map(|p| project_view(specs, p)).collect::<Vec<_>>(),
        "nodes": app.nodes.iter().map(|c| node_view(c, &facts(fleet, c))).collect::<Vec<_>>(),
        "files": files.iter().map(|f| f.path.strip_prefix(&format!("{}/", app.dir)).unwrap_or(&f.path).to_string()).collect::<Vec<_>>(),
        "steps": steps.trim_end(),
        "checked": ready.is_some(),
        "not_ready": not_ready,
        "readiness": ready,
    });
    let readme = t.md.render("README.md.hbs", &ctx).context("rendering README.md.hbs")?;
    files.push(OutFile { path: format!("{}/README.md", app.dir), contents: readme.into_bytes() });
    Ok(files)
}

/// `README.md` at the top of the output: every application and the order to submit them in.
pub fn render_index(
    t: &Templates,
    fleet: &Fleet,
    specs: &Specs,
    apps: &[Application<'_>],
    readiness: Option<&Readiness>,
) -> Result<OutFile> {
    let rows: Vec<serde_json::Value> = apps
        .iter()
        .map(|a| {
            let ready = ready_views(a, readiness);
            serde_json::json!({
                "dir": a.dir,
                "format": a.format,
                "projects": a.projects.iter().map(|p| project_view(specs, p)).collect::<Vec<_>>(),
                "nodes": a.nodes.iter().map(|c| c.node.fqdn.clone()).collect::<Vec<_>>(),
                "checked": ready.is_some(),
                "not_ready": ready.as_ref().is_some_and(|r| r.iter().any(|v| !v.ready)),
            })
        })
        .collect();
    let ctx = serde_json::json!({ "fleet": fleet.name, "applications": rows, "checked": readiness.is_some() });
    let text = t.md.render("index.md.hbs", &ctx).context("rendering index.md.hbs")?;
    Ok(OutFile { path: "README.md".into(), contents: text.into_bytes() })
}

// ---------------------------------------------------------------------------------------------
// AlmaLinux: one mirrors.d/<fqdn>.yml per node, all in one pull request.

/// The fields of an AlmaLinux `mirrors.d/<name>.yml`.
#[derive(Debug, Clone, Serialize)]
pub struct AlmaMirror {
    pub name: String,
    pub http: Option<String>,
    pub https: Option<String>,
    pub rsync: Option<String>,
    pub update_frequency: String,
    pub sponsor: String,
    pub sponsor_url: String,
    pub email: String,
    pub asn: Option<u32>,
    pub country: String,
    pub state_province: String,
    pub city: String,
}

/// The rules AlmaLinux's CI and reviewers apply to a mirror file; empty = acceptable.
pub fn almalinux_problems(m: &AlmaMirror) -> Vec<String> {
    let mut p = Vec::new();
    if m.name.contains("://") {
        p.push(format!("name \"{}\" has a scheme: give the host name only", m.name));
    }
    if m.name.ends_with('/') || m.name.contains('/') {
        p.push(format!("name \"{}\" has a slash: give the host name only, no path or trailing slash", m.name));
    }
    if m.name.is_empty() || crate::fleet::check_label(m.name.split('.').next().unwrap_or("")).is_err() || !m.name.contains('.') {
        p.push(format!("name \"{}\" is not a fully qualified host name", m.name));
    }
    if m.http.is_none() && m.https.is_none() {
        p.push("address needs http or https (rsync alone is not accepted)".into());
    }
    for (scheme, url) in [("http", &m.http), ("https", &m.https), ("rsync", &m.rsync)] {
        if let Some(u) = url {
            let host = u.strip_prefix(&format!("{scheme}://")).and_then(|r| r.split('/').next());
            if host != Some(m.name.as_str()) {
                p.push(format!("address.{scheme} \"{u}\" must be {scheme}://{}/...", m.name));
            }
        }
    }
    let f = &m.update_frequency;
    if !(f.len() >= 2 && f.ends_with('h') && f[..f.len() - 1].bytes().all(|b| b.is_ascii_digit()) && !f.starts_with('0')) {
        p.push(format!("update_frequency \"{f}\" must be hours like 3h"));
    }
    if m.sponsor.trim().is_empty() {
        p.push("sponsor is empty".into());
    }
    if !(m.sponsor_url.starts_with("http://") || m.sponsor_url.starts_with("https://")) {
        p.push(format!("sponsor_url \"{}\" must be an http(s) URL", m.sponsor_url));
    }
    if !(m.country.len() == 2 && m.country.bytes().all(|b| b.is_ascii_uppercase())) {
        p.push(format!("geolocation.country \"{}\" must be an ISO 3166-1 alpha-2 code", m.country));
    }
    if m.city.trim().is_empty() || m.state_province.trim().is_empty() {
        p.push("geolocation needs state_province and city".into());
    }
    p
}

pub fn almalinux_mirror(fleet: &Fleet, cfg: &NodeConfig, p: &Profile) -> AlmaMirror {
    let u = urls(cfg, p);
    let f = facts(fleet, cfg);
    let loc = f.location.as_ref();
    AlmaMirror {
        name: cfg.node.fqdn.clone(),
        http: Some(u.http),
        https: u.https,
        rsync: Some(u.rsync),
        update_frequency: update_frequency(p),
        sponsor: cfg.node.sponsor.name.clone(),
        sponsor_url: cfg.node.sponsor.url.clone(),
        email: fleet.registration.contact.clone(),
        asn: f.asn,
        country: loc.map(|l| l.country.clone()).unwrap_or_default(),
        state_province: loc.and_then(|l| l.state_province.clone()).unwrap_or_default(),
        city: loc.and_then(|l| l.city.clone()).unwrap_or_default(),
    }
}

type Rendered = (Vec<OutFile>, serde_json::Value);

fn almalinux(t: &Templates, fleet: &Fleet, app: &Application<'_>) -> Result<Rendered> {
    let p = app.projects[0];
    let mut files = Vec::new();
    for c in &app.nodes {
        let m = almalinux_mirror(fleet, c, p);
        let problems = almalinux_problems(&m);
        if !problems.is_empty() {
            bail!("node \"{}\": the AlmaLinux mirror file would be rejected: {}", c.node.name, problems.join("; "));
        }
        let text = t.yaml.render("mirror.yml.hbs", &m).context("rendering mirror.yml.hbs")?;
        files.push(OutFile { path: format!("{}/mirrors.d/{}.yml", app.dir, m.name), contents: text.into_bytes() });
    }
    let ctx = serde_json::json!({
        "url": p.registration.url,
        "files": app.nodes.iter().map(|c| format!("mirrors.d/{}.yml", c.node.fqdn)).collect::<Vec<_>>(),
    });
    Ok((files, ctx))
}

// ---------------------------------------------------------------------------------------------
// MirrorManager: one site, one host per node, categories and URLs per project.

#[derive(Debug, Clone, Serialize)]
pub struct MmChecklist {
    pub instance: String,
    pub projects: Vec<String>,
    pub site: MmSite,
    pub hosts: Vec<MmHost>,
}

#[derive(Debug, Clone, Serialize)]
pub struct MmSite {
    pub name: String,
    pub org_url: String,
    pub private: bool,
    pub admin_contact: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct MmHost {
    pub name: String,
    pub country: String,
    pub bandwidth_int: u32,
    pub private: bool,
    pub internet2: bool,
    pub asn: Option<u32>,
    /// Send clients from the host's AS here (only with an ASN).
    pub asn_clients: bool,
    pub robot_email: String,
    pub comment: String,
    /// Client prefixes to prefer this host for: the sponsor's, not the node's own link.
    pub netblocks: Vec<String>,
    pub categories: Vec<MmCategory>,
}

#[derive(Debug, Clone, Serialize)]
pub struct MmCategory {
    pub project: String,
    pub category: String,
    pub always_up2date: bool,
    pub urls: Vec<String>,
}

pub fn mirrormanager_checklist(fleet: &Fleet, specs: &Specs, app: &Application<'_>) -> MmChecklist {
    let org = fleet.registration.organisation.clone().unwrap_or(crate::fleet::Organisation { name: String::new(), url: String::new() });
    let hosts = app
        .nodes
        .iter()
        .map(|c| {
            let f = facts(fleet, c);
            let mut categories = Vec::new();
            for p in app.projects.iter().filter(|p| c.project(&p.name).is_some()) {
                let u = urls(c, p);
                for cat in &specs.get(&p.name).categories {
                    let mut list = vec![format!("{}{}", u.http, cat.path)];
                    if let Some(h) = &u.https {
                        list.push(format!("{h}{}", cat.path));
                    }
                    list.push(format!("{}{}", u.rsync, cat.path));
                    categories.push(MmCategory { project: p.name.clone(), category: cat.name.clone(), always_up2date: true, urls: list });
                }
            }
            MmHost {
                name: c.node.fqdn.clone(),
                country: f.location.as_ref().map(|l| l.country.clone()).unwrap_or_default(),
                bandwidth_int: f.port_mbps.unwrap_or(0),
                private: false,
                internet2: false,
                asn: f.asn,
                asn_clients: f.asn.is_some(),
                robot_email: fleet.registration.contact.clone(),
                comment: format!("Micro Mirror node hosted by {} ({})", c.node.sponsor.name, c.node.sponsor.url),
                netblocks: Vec::new(),
                categories,
            }
        })
        .collect();
    MmChecklist {
        instance: app.projects[0].registration.url.clone(),
        projects: app.projects.iter().map(|p| p.name.clone()).collect(),
        site: MmSite { name: org.name, org_url: org.url, private: false, admin_contact: fleet.registration.contact.clone() },
        hosts,
    }
}

fn mirrormanager(t: &Templates, fleet: &Fleet, specs: &Specs, app: &Application<'_>) -> Result<Rendered> {
    let list = mirrormanager_checklist(fleet, specs, app);
    let page = t.md.render("mirrormanager.md.hbs", &list).context("rendering mirrormanager.md.hbs")?;
    let files = vec![
        OutFile { path: format!("{}/checklist.json", app.dir), contents: json(&list)? },
        OutFile { path: format!("{}/checklist.md", app.dir), contents: page.into_bytes() },
    ];
    Ok((files, serde_json::to_value(&list)?))
}

// ---------------------------------------------------------------------------------------------
// Debian: the submission form's fields and a Mirrors.masterlist stanza per node.

#[derive(Debug, Clone, Serialize)]
pub struct DebianSite {
    /// The registered site name; mm-sync's trace project/trace/<fqdn> carries the same name.
    pub site: String,
    /// "NL Netherlands".
    pub country: String,
    pub location: String,
    pub archive_architectures: Vec<String>,
    pub archive_http: String,
    pub archive_https: Option<String>,
    pub archive_rsync: String,
    pub upstream: String,
    pub trace_file: String,
    pub sponsor_name: String,
    pub sponsor_url: String,
    pub maintainer: String,
    pub push: bool,
}

/// The architectures a trimmed Debian profile carries: the release architectures whose
/// `binary-<arch>/` the profile does not exclude.
pub fn carried_architectures(specs: &Specs, p: &Profile) -> Vec<String> {
    specs.get(&p.name).architectures.iter().filter(|a| !p.sync.excludes.contains(&format!("binary-{a}/"))).cloned().collect()
}

pub fn debian_site(fleet: &Fleet, specs: &Specs, cfg: &NodeConfig, p: &Profile) -> DebianSite {
    let f = facts(fleet, cfg);
    let loc = f.location.as_ref();
    let v = node_view(cfg, &f);
    let host = p.sync.upstream.trim_start_matches("rsync://").split(['/', ':']).next().unwrap_or_default().to_string();
    DebianSite {
        site: cfg.node.fqdn.clone(),
        country: loc.map(|l| format!("{} {}", l.country, l.country_name)).unwrap_or_default(),
        location: [v.city.as_deref(), v.state_province.as_deref()].into_iter().flatten().collect::<Vec<_>>().join(", "),
        archive_architectures: carried_architectures(specs, p),
        archive_http: p.http_path.clone(),
        archive_https: cfg.fleet.https.then(|| p.http_path.clone()),
        archive_rsync: format!("{}/", p.rsync_module),
        upstream: host,
        trace_file: format!("{}/{}", p.freshness.trace_dir.trim_matches('/'), cfg.node.fqdn),
        sponsor_name: cfg.node.sponsor.name.clone(),
        sponsor_url: cfg.node.sponsor.url.clone(),
        maintainer: fleet.registration.contact.clone(),
        push: p.sync.push,
    }
}

fn debian(t: &Templates, fleet: &Fleet, specs: &Specs, app: &Application<'_>) -> Result<Rendered> {
    let p = app.projects[0];
    let sites: Vec<DebianSite> = app.nodes.iter().map(|c| debian_site(fleet, specs, c, p)).collect();
    let mut masterlist = String::new();
    for s in &sites {
        if !masterlist.is_empty() {
            masterlist.push('\n');
        }
        let ctx = serde_json::json!({ "s": s, "archs": s.archive_architectures.join(" "), "sponsor": format!("{} {}", s.sponsor_name, s.sponsor_url) });
        masterlist.push_str(&t.deb822.render("masterlist.hbs", &ctx).context("rendering masterlist.hbs")?);
    }
    let ctx = serde_json::json!({ "sites": sites, "url": p.registration.url });
    let page = t.md.render("debian.md.hbs", &ctx).context("rendering debian.md.hbs")?;
    let files = vec![
        OutFile { path: format!("{}/form.json", app.dir), contents: json(&sites)? },
        OutFile { path: format!("{}/form.md", app.dir), contents: page.into_bytes() },
        OutFile { path: format!("{}/Mirrors.masterlist", app.dir), contents: masterlist.into_bytes() },
    ];
    Ok((files, ctx))
}

// ---------------------------------------------------------------------------------------------
// Ubuntu: one Launchpad mirror entry per node (archive or release content).

#[derive(Debug, Clone, Serialize)]
pub struct LaunchpadMirror {
    pub display_name: String,
    pub description: String,
    pub organisation_url: String,
    pub http_base_url: String,
    pub https_base_url: Option<String>,
    pub rsync_base_url: String,
    pub speed: String,
    pub country: String,
    pub content: String,
    pub official_candidate: bool,
}

pub fn launchpad_mirror(fleet: &Fleet, specs: &Specs, cfg: &NodeConfig, p: &Profile) -> LaunchpadMirror {
    let f = facts(fleet, cfg);
    let u = urls(cfg, p);
    let content = specs.get(&p.name).content.clone().unwrap_or_else(|| "Archive".into());
    LaunchpadMirror {
        display_name: format!("{} ({})", cfg.node.fqdn, cfg.node.sponsor.name),
        description: format!(
            "Micro Mirror node of {} hosted by {}, {} uplink",
            fleet.registration.organisation.as_ref().map_or(fleet.name.as_str(), |o| o.name.as_str()),
            cfg.node.sponsor.name,
            f.port_mbps.map(bandwidth).unwrap_or_default()
        ),
        organisation_url: cfg.node.sponsor.url.clone(),
        http_base_url: u.http,
        https_base_url: u.https,
        rsync_base_url: u.rsync,
        speed: f.port_mbps.map(bandwidth).unwrap_or_default(),
        country: f.location.as_ref().map(|l| l.country_name.clone()).unwrap_or_default(),
        content,
        official_candidate: true,
    }
}

fn launchpad(t: &Templates, fleet: &Fleet, specs: &Specs, app: &Application<'_>) -> Result<Rendered> {
    let p = app.projects[0];
    let entries: Vec<LaunchpadMirror> = app.nodes.iter().map(|c| launchpad_mirror(fleet, specs, c, p)).collect();
    let ctx = serde_json::json!({ "entries": entries, "url": p.registration.url, "project": p.name });
    let page = t.md.render("launchpad.md.hbs", &ctx).context("rendering launchpad.md.hbs")?;
    let files = vec![
        OutFile { path: format!("{}/launchpad.json", app.dir), contents: json(&entries)? },
        OutFile { path: format!("{}/launchpad.md", app.dir), contents: page.into_bytes() },
    ];
    Ok((files, ctx))
}

// ---------------------------------------------------------------------------------------------
// Everything else: the fields the project's process asks for, and a text to send.

#[derive(Debug, Clone, Serialize)]
pub struct Field {
    pub key: String,
    pub label: String,
    pub value: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct RequestNode {
    pub node: String,
    pub fields: Vec<Field>,
}

pub fn request_fields(fleet: &Fleet, specs: &Specs, cfg: &NodeConfig, p: &Profile) -> Vec<Field> {
    let f = facts(fleet, cfg);
    let v = node_view(cfg, &f);
    let u = urls(cfg, p);
    let spec = specs.get(&p.name);
    spec.fields
        .iter()
        .filter_map(|key| {
            let value = match key.as_str() {
                "name" => Some(v.fqdn.clone()),
                "sponsor" => Some(format!("{} ({})", v.sponsor, v.sponsor_url)),
                "location" => v.location.clone(),
                "country" => v.country.as_ref().map(|c| format!("{} ({c})", v.country_name.clone().unwrap_or_default())),
                "coordinates" => v.latitude.zip(v.longitude).map(|(a, b)| format!("{a}, {b}")),
                "bandwidth" => v.bandwidth.clone(),
                "http" => Some(u.http.clone()),
                "https" => u.https.clone(),
                "rsync" => Some(u.rsync.clone()),
                "upstream" => Some(p.sync.upstream.clone()),
                "contact" => Some(fleet.registration.contact.clone()),
                "alternate_contact" => (cfg.fleet.contact != fleet.registration.contact).then(|| cfg.fleet.contact.clone()),
                "addresses" => Some(v.addresses.join(", ")),
                "asn" => v.asn.map(|a| format!("AS{a}")),
                "update_frequency" => Some(format!("every {} hours", p.sync.every_hours)),
                _ => None,
            }?;
            Some(Field { key: key.clone(), label: specs.labels.get(key).cloned().unwrap_or_else(|| key.clone()), value })
        })
        .collect()
}

fn request(t: &Templates, fleet: &Fleet, specs: &Specs, app: &Application<'_>) -> Result<Rendered> {
    let p = app.projects[0];
    let spec = specs.get(&p.name);
    let nodes: Vec<RequestNode> =
        app.nodes.iter().map(|c| RequestNode { node: c.node.fqdn.clone(), fields: request_fields(fleet, specs, c, p) }).collect();
    let org = fleet.registration.organisation.as_ref();
    let ctx = serde_json::json!({
        "project": p.name,
        "description": p.description,
        "method": p.registration.method,
        "url": p.registration.url,
        "notes": p.registration.notes,
        "per_node": spec.per_node,
        "organisation": org.map(|o| &o.name),
        "organisation_url": org.map(|o| &o.url),
        "fleet": fleet.name,
        "contact": fleet.registration.contact,
        "nodes": nodes,
    });
    let text = t.md.render("request.md.hbs", &ctx).context("rendering request.md.hbs")?;
    let doc = serde_json::json!({
        "project": p.name,
        "method": p.registration.method,
        "url": p.registration.url,
        "one_request_per_node": spec.per_node,
        "nodes": nodes,
    });
    let files = vec![
        OutFile { path: format!("{}/request.json", app.dir), contents: json(&doc)? },
        OutFile { path: format!("{}/request.md", app.dir), contents: text.into_bytes() },
    ];
    Ok((files, ctx))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mirror() -> AlmaMirror {
        AlmaMirror {
            name: "a.mm.example.net".into(),
            http: Some("http://a.mm.example.net/almalinux/".into()),
            https: None,
            rsync: Some("rsync://a.mm.example.net/almalinux/".into()),
            update_frequency: "3h".into(),
            sponsor: "S".into(),
            sponsor_url: "https://s.example/".into(),
            email: "m@example.net".into(),
            asn: None,
            country: "NL".into(),
            state_province: "Noord-Holland".into(),
            city: "Amsterdam".into(),
        }
    }

    #[test]
    fn almalinux_rules_accept_a_good_file_and_name_each_fault() {
        assert!(almalinux_problems(&mirror()).is_empty(), "{:?}", almalinux_problems(&mirror()));
        type Edit = fn(&mut AlmaMirror);
        let cases: Vec<(Edit, &str)> = vec![
            (|m| m.name = "https://a.mm.example.net".into(), "has a scheme"),
            (|m| m.name = "a.mm.example.net/".into(), "no path or trailing slash"),
            (|m| m.http = None, "needs http or https"),
            (|m| m.update_frequency = "3 hours".into(), "must be hours like 3h"),
            (|m| m.update_frequency = "".into(), "must be hours like 3h"),
            (|m| m.sponsor_url = "ftp://s".into(), "sponsor_url"),
            (|m| m.country = "nl".into(), "ISO 3166-1"),
            (|m| m.city = String::new(), "state_province and city"),
            (|m| m.rsync = Some("rsync://other.example/almalinux/".into()), "address.rsync"),
        ];
        for (edit, want) in cases {
            let mut m = mirror();
            edit(&mut m);
            let p = almalinux_problems(&m);
            assert!(p.iter().any(|x| x.contains(want)), "{want}: {p:?}");
        }
    }

    #[test]
    fn bandwidth_reads_like_a_port() {
        assert_eq!(bandwidth(1000), "1 Gbit/s");
        assert_eq!(bandwidth(10000), "10 Gbit/s");
        assert_eq!(bandwidth(2500), "2.5 Gbit/s");
        assert_eq!(bandwidth(100), "100 Mbit/s");
        assert_eq!(bandwidth(1234), "1234 Mbit/s");
    }
}
