//! What every application format shares: the template registries, the node and project views,
//! URLs, and each application's README; the formats themselves are in the sibling modules.
//!
//! Text comes from the templates in `overlays/registration/`, each rendered by a Handlebars
//! registry whose escape function is its target language's (Markdown, YAML, deb822), so every
//! `{{value}}` from the inventory arrives escaped; JSON is serde's.

use std::path::Path;

use anyhow::{Context, Result};
use handlebars::{handlebars_helper, Handlebars};
use mmconfig::{NodeConfig, Profile};
use serde::Serialize;

use super::escape::{deb822_value, md_code, md_text, yaml_quote};
use super::{Application, Format, OutFile, Readiness, Specs};
use crate::inventory::fleet::{Fleet, NodeFacts};

handlebars_helper!(code_h: |s: str| md_code(s));

/// The three registries, one per target language.
pub struct Templates {
    pub(super) md: Handlebars<'static>,
    pub(super) yaml: Handlebars<'static>,
    pub(super) deb822: Handlebars<'static>,
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

pub(super) fn facts<'a>(fleet: &'a Fleet, cfg: &NodeConfig) -> std::borrow::Cow<'a, NodeFacts> {
    match fleet.registration.nodes.get(&cfg.node.name) {
        Some(f) => std::borrow::Cow::Borrowed(f),
        None => std::borrow::Cow::Owned(NodeFacts::default()),
    }
}

pub(super) fn json(value: &impl Serialize) -> Result<Vec<u8>> {
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
        for p in app.projects.iter().filter(|p| app.covers(c, &p.name)) {
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
        Format::Almalinux => super::almalinux::render(t, fleet, app)?,
        Format::Mirrormanager => super::mirrormanager::render(t, fleet, specs, app)?,
        Format::Debian => super::debian::render(t, fleet, specs, app)?,
        Format::Launchpad => super::launchpad::render(t, fleet, specs, app)?,
        Format::Request => super::request::render(t, fleet, specs, app)?,
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
        "left_out": app.left_out,
        "warnings": app.warnings,
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
                "written": !a.nodes.is_empty(),
                "checked": ready.is_some(),
                "not_ready": ready.as_ref().is_some_and(|r| r.iter().any(|v| !v.ready)),
            })
        })
        .collect();
    let left_out: Vec<&super::Note> = apps.iter().flat_map(|a| &a.left_out).collect();
    let warnings: Vec<&super::Note> = apps.iter().flat_map(|a| &a.warnings).collect();
    let ctx = serde_json::json!({
        "fleet": fleet.name,
        "applications": rows,
        "checked": readiness.is_some(),
        "left_out": left_out,
        "warnings": warnings,
    });
    let text = t.md.render("index.md.hbs", &ctx).context("rendering index.md.hbs")?;
    Ok(OutFile { path: "README.md".into(), contents: text.into_bytes() })
}

/// An application's files and the context its README's steps are rendered with.
pub(super) type Rendered = (Vec<OutFile>, serde_json::Value);

/// A fleet parsed from `text` against the repository's data, for the renderers' unit tests.
#[cfg(test)]
pub(super) fn test_fleet(nodes: &str, fleet_extra: &str) -> (Fleet, Specs) {
    let text = format!(
        "[fleet]\nname = \"t\"\ndomain = \"mm.example.net\"\ncontact = \"mirror@example.net\"\n\
admin_ssh_keys = [\"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOozE4famK1j6NfXCWFhGYm39GKIAWKfHlpUtwM5i4R9 ops@example.net\"]\n\
admin_prefixes = [\"192.0.2.0/24\"]\norganisation = {{ name = \"T\", url = \"https://t.example/\" }}\n{fleet_extra}\n\
[defaults]\nhardware = \"termite\"\ndns = [\"9.9.9.9\"]\nport_mbps = 2500\n\
location = {{ country = \"NL\", state_province = \"Utrecht\", city = \"Utrecht\" }}\n{nodes}"
    );
    let data = crate::inventory::data::builtin_data_dir();
    let dirs = crate::inventory::data::DataDirs { search: vec![data.clone()], primary: data.clone() };
    let fleet = crate::inventory::fleet::parse(Path::new("fleet.toml"), &text, dirs).unwrap_or_else(|d| panic!("{d}"));
    (fleet, Specs::load(&data).unwrap())
}

/// `[[node]]` `name` hosting `projects`, with `extra` lines.
#[cfg(test)]
pub(super) fn test_node(name: &str, n: u8, projects: &str, extra: &str) -> String {
    format!(
        "\n[[node]]\nname = \"{name}\"\nprojects = [{projects}]\nsponsor = {{ name = \"S\", url = \"https://s.example/\" }}\n\
ipv4 = {{ address = \"192.0.2.{}/31\", gateway = \"192.0.2.{}\" }}\n{extra}\n",
        2 * n,
        2 * n + 1
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bandwidth_reads_like_a_port() {
        assert_eq!(bandwidth(1000), "1 Gbit/s");
        assert_eq!(bandwidth(10000), "10 Gbit/s");
        assert_eq!(bandwidth(2500), "2.5 Gbit/s");
        assert_eq!(bandwidth(100), "100 Mbit/s");
        assert_eq!(bandwidth(1234), "1234 Mbit/s");
    }
}
