//! Upstream mirror registrations: every hosted project's own application, from the inventory.
//!
//! `overlays/registration/projects.toml` says which format each project's application takes and
//! which inventory facts it needs; the renderers (one module per upstream format, shared parts in [`formats`]) are pure (fleet in, files out);
//! [`export`] writes them atomically, one directory per application.

pub(crate) mod almalinux;
pub(crate) mod debian;
pub mod escape;
pub(crate) mod formats;
pub(crate) mod launchpad;
pub(crate) mod mirrormanager;
pub mod preflight;
pub(crate) mod request;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use mmconfig::{NodeConfig, Profile};
use serde::{Deserialize, Serialize};

use crate::exit::{Exit, Invalid};
use crate::inventory::diag::{Diagnostic, Diagnostics};
use crate::inventory::fleet::{Fleet, NodeFacts};

/// Where the registration data and templates live, relative to the data directory.
pub const DATA_DIR: &str = "overlays/registration";

/// `overlays/registration/projects.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Specs {
    pub labels: BTreeMap<String, String>,
    pub project: BTreeMap<String, Spec>,
}

/// How one project's application is built.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    pub format: Format,
    pub needs: Vec<Need>,
    pub per_node: bool,
    pub markers: Vec<String>,
    pub checker: String,
    #[serde(default)]
    pub fields: Vec<String>,
    #[serde(default)]
    pub categories: Vec<Category>,
    #[serde(default)]
    pub architectures: Vec<String>,
    #[serde(default)]
    pub content: Option<String>,
    /// Address families the upstream's checker connects over; a node needs one of them.
    #[serde(default = "either_family")]
    pub reaches: Vec<Family>,
    /// Why a node without one of `reaches` cannot be served, as the upstream's code shows it.
    #[serde(default)]
    pub reaches_why: Option<String>,
    /// How the project documents serving a node over another family; with it, such a node's
    /// application is written with a warning instead of left out.
    #[serde(default)]
    pub other_family_path: Option<String>,
    /// Country names the upstream spells its own way, by ISO 3166-1 code.
    #[serde(default)]
    pub country_names: BTreeMap<String, String>,
}

fn either_family() -> Vec<Family> {
    vec![Family::Ipv4, Family::Ipv6]
}

/// An IP address family, as `reaches` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    Ipv4,
    Ipv6,
}

impl Family {
    pub fn label(self) -> &'static str {
        match self {
            Family::Ipv4 => "IPv4",
            Family::Ipv6 => "IPv6",
        }
    }

    fn on(self, c: &NodeConfig) -> bool {
        match self {
            Family::Ipv4 => c.node.ipv4.is_some(),
            Family::Ipv6 => c.node.ipv6.is_some(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Format {
    Almalinux,
    Mirrormanager,
    Debian,
    Launchpad,
    Request,
}

/// An inventory fact an application cannot do without.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Need {
    Country,
    StateProvince,
    City,
    Coordinates,
    PortMbps,
    Asn,
    Organisation,
    ContactName,
}

/// A MirrorManager category and where it sits under the project's tree.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Category {
    pub name: String,
    pub path: String,
}

impl Specs {
    pub fn load(data_dir: &Path) -> Result<Specs> {
        let path = data_dir.join(DATA_DIR).join("projects.toml");
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        let specs: Specs = toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {}", path.display(), e.message()))?;
        for (name, spec) in &specs.project {
            if let Some(f) = spec.fields.iter().find(|f| !specs.labels.contains_key(*f)) {
                anyhow::bail!("{}: project.{name}: field \"{f}\" has no entry in [labels]", path.display());
            }
            if spec.format == Format::Mirrormanager && spec.categories.is_empty() {
                anyhow::bail!("{}: project.{name}: a mirrormanager application needs categories", path.display());
            }
            if spec.reaches.is_empty() {
                anyhow::bail!("{}: project.{name}: reaches is empty: name the families the checker connects over", path.display());
            }
            if spec.reaches.len() < 2 && spec.reaches_why.is_none() {
                anyhow::bail!("{}: project.{name}: reaches leaves a family out: say why in reaches_why", path.display());
            }
            if let Some(c) = spec.content.as_deref().filter(|c| spec.format == Format::Launchpad && !launchpad::CONTENTS.contains(c)) {
                anyhow::bail!(
                    "{}: project.{name}: content \"{c}\" is not one of Launchpad's: {}",
                    path.display(),
                    launchpad::CONTENTS.join(", ")
                );
            }
        }
        anyhow::ensure!(specs.project.contains_key("default"), "{}: [project.default] is missing", path.display());
        Ok(specs)
    }

    /// The project's spec, or `[project.default]`.
    pub fn get(&self, project: &str) -> &Spec {
        self.project.get(project).or_else(|| self.project.get("default")).expect("checked in load")
    }
}

/// What to export: nodes and projects (empty = all).
#[derive(Debug, Clone, Default)]
pub struct Selection {
    pub nodes: Vec<String>,
    pub projects: Vec<String>,
}

/// One application: what an operator submits once, to one upstream, for one or more nodes.
#[derive(Debug, Clone)]
pub struct Application<'a> {
    /// Output directory name (relative), e.g. `almalinux`, `epel+fedora`, `debian`.
    pub dir: String,
    pub format: Format,
    /// Projects sharing this application (several only for one MirrorManager instance).
    pub projects: Vec<&'a Profile>,
    /// Nodes the application covers for any of them, in inventory order.
    pub nodes: Vec<&'a NodeConfig>,
    /// Nodes hosting a project whose checker cannot reach them: left out of the application.
    pub left_out: Vec<Note>,
    /// Nodes the application carries although the checker cannot reach them the usual way.
    pub warnings: Vec<Note>,
}

/// Why a (node, project) pair is left out or carried with a warning.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Note {
    pub node: String,
    pub project: String,
    pub why: String,
}

impl Application<'_> {
    /// Whether the application registers `c` for `project`.
    pub fn covers(&self, c: &NodeConfig, project: &str) -> bool {
        c.project(project).is_some() && !self.left_out.iter().any(|n| n.node == c.node.name && n.project == project)
    }
}

/// Whether the upstream's checker can reach `c`: None if it can, else whether the application
/// is written anyway (the project documents another path) and why.
fn out_of_reach(spec: &Spec, c: &NodeConfig) -> Option<(bool, String)> {
    if spec.reaches.iter().any(|f| f.on(c)) {
        return None;
    }
    let need = spec.reaches.iter().map(|f| f.label()).collect::<Vec<_>>().join(" or ");
    let why = spec.reaches_why.as_deref().unwrap_or("its checker connects over no other family");
    Some(match &spec.other_family_path {
        Some(path) => (true, format!("no {need} address: {why}; the project documents another way: {path}")),
        None => (false, format!("no {need} address: {why} (give the node an {need} address to register it)")),
    })
}

/// The projects and notes of one application while [`plan`] collects them.
struct Group<'a> {
    format: Format,
    projects: BTreeMap<String, &'a Profile>,
    left_out: Vec<Note>,
    warnings: Vec<Note>,
}

/// Every (node, project) pair the selection covers, grouped into applications; a node whose
/// address families the upstream's checker cannot reach is left out (or carried with a warning)
/// and named in the application's notes.
pub fn plan<'a>(fleet: &'a Fleet, specs: &Specs, sel: &Selection) -> Result<Vec<Application<'a>>, String> {
    for n in &sel.nodes {
        if fleet.node(n).is_none() {
            let known: Vec<&str> = fleet.nodes.iter().map(|c| c.node.name.as_str()).collect();
            return Err(format!("--node {n}: no such node (nodes: {})", known.join(", ")));
        }
    }
    let nodes: Vec<&NodeConfig> = fleet.nodes.iter().filter(|c| sel.nodes.is_empty() || sel.nodes.contains(&c.node.name)).collect();
    for p in &sel.projects {
        if !nodes.iter().any(|c| c.project(p).is_some()) {
            let hosted: BTreeSet<&str> = nodes.iter().flat_map(|c| c.projects.iter().map(|p| p.name.as_str())).collect();
            return Err(format!(
                "--project {p}: no selected node hosts it (hosted: {})",
                hosted.into_iter().collect::<Vec<_>>().join(", ")
            ));
        }
    }
    // Group key: the MirrorManager instance for mirrormanager projects, else the project.
    let mut groups: BTreeMap<String, Group<'a>> = BTreeMap::new();
    for c in &nodes {
        for p in &c.projects {
            if !sel.projects.is_empty() && !sel.projects.contains(&p.name) {
                continue;
            }
            let spec = specs.get(&p.name);
            let key = match spec.format {
                Format::Mirrormanager => format!("mirrormanager {}", p.registration.url),
                _ => p.name.clone(),
            };
            let g = groups.entry(key).or_insert_with(|| Group {
                format: spec.format,
                projects: BTreeMap::new(),
                left_out: Vec::new(),
                warnings: Vec::new(),
            });
            g.projects.entry(p.name.clone()).or_insert(p);
            if let Some((written, why)) = out_of_reach(spec, c) {
                let note = Note { node: c.node.name.clone(), project: p.name.clone(), why };
                let list = if written { &mut g.warnings } else { &mut g.left_out };
                list.push(note);
            }
        }
    }
    let mut apps: Vec<Application<'a>> = groups
        .into_values()
        .map(|g| {
            let projects: Vec<&Profile> = g.projects.into_values().collect();
            let dir = projects.iter().map(|p| p.name.as_str()).collect::<Vec<_>>().join("+");
            let mut app = Application { dir, format: g.format, projects, nodes: Vec::new(), left_out: g.left_out, warnings: g.warnings };
            app.nodes = nodes.iter().copied().filter(|c| app.projects.iter().any(|p| app.covers(c, &p.name))).collect();
            app
        })
        .collect();
    apps.sort_by(|a, b| a.dir.cmp(&b.dir));
    Ok(apps)
}

/// Every fact an application needs but the inventory lacks, as file:line:col errors naming the
/// projects whose registrations need it.
pub fn missing_facts(fleet: &Fleet, specs: &Specs, apps: &[Application<'_>]) -> Diagnostics {
    let file = fleet.path.display().to_string();
    // (node or "" for the fleet, field) -> projects needing it
    let mut wanted: BTreeMap<(String, &'static str), BTreeSet<String>> = BTreeMap::new();
    for app in apps {
        for c in &app.nodes {
            let facts = fleet.registration.nodes.get(&c.node.name).cloned().unwrap_or_default();
            for p in app.projects.iter().filter(|p| app.covers(c, &p.name)) {
                for need in &specs.get(&p.name).needs {
                    if let Some(field) = absent(fleet, &facts, *need) {
                        let who = if matches!(need, Need::Organisation | Need::ContactName) { String::new() } else { c.node.name.clone() };
                        wanted.entry((who, field)).or_default().insert(p.name.clone());
                    }
                }
            }
        }
    }
    let mut diags = Diagnostics::default();
    for ((node, field), projects) in wanted {
        let projects: Vec<String> = projects.into_iter().collect();
        let which = format!(
            "the {} registration{} need{} it",
            join_and(&projects),
            plural(projects.len()),
            if projects.len() == 1 { "s" } else { "" }
        );
        let d = if node.is_empty() {
            let at = fleet.registration.fleet_at;
            Diagnostic {
                file: file.clone(),
                line: at.line,
                col: at.col,
                message: format!("[fleet] {field} is missing: {which} (add {})", example(field)),
            }
        } else {
            let at = fleet.registration.nodes.get(&node).map(|f| f.at).unwrap_or_default();
            Diagnostic {
                file: file.clone(),
                line: at.line,
                col: at.col,
                message: format!("node \"{node}\": {field} is missing: {which} (add {} to the node or to [defaults])", example(field)),
            }
        };
        diags.push(d);
    }
    diags.sorted()
}

fn absent(fleet: &Fleet, f: &NodeFacts, need: Need) -> Option<&'static str> {
    let loc = f.location.as_ref();
    let missing = match need {
        Need::Country => loc.is_none(),
        Need::StateProvince => loc.is_none_or(|l| l.state_province.is_none()),
        Need::City => loc.is_none_or(|l| l.city.is_none()),
        Need::Coordinates => loc.is_none_or(|l| l.latitude.is_none()),
        Need::PortMbps => f.port_mbps.is_none(),
        Need::Asn => f.asn.is_none(),
        Need::Organisation => fleet.registration.organisation.is_none(),
        Need::ContactName => fleet.registration.contact_name.is_none(),
    };
    missing.then_some(match need {
        _ if loc.is_none() && matches!(need, Need::Country | Need::StateProvince | Need::City | Need::Coordinates) => "location",
        Need::Country => "location",
        Need::StateProvince => "location.state_province",
        Need::City => "location.city",
        Need::Coordinates => "location.latitude/longitude",
        Need::PortMbps => "port_mbps",
        Need::Asn => "asn",
        Need::Organisation => "organisation",
        Need::ContactName => "registration_contact.name",
    })
}

fn example(field: &str) -> &'static str {
    match field {
        "location" => "location = { country = \"NL\", state_province = \"...\", city = \"...\" }",
        "location.state_province" => "state_province = \"...\" to its location",
        "location.city" => "city = \"...\" to its location",
        "location.latitude/longitude" => "latitude = 52.37, longitude = 4.90 to its location",
        "port_mbps" => "port_mbps = 1000",
        "asn" => "asn = 64500",
        "registration_contact.name" => "registration_contact = { name = \"...\", email = \"...\" }",
        _ => "organisation = { name = \"...\", url = \"https://...\" }",
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

/// `a`, `a and b`, `a, b and c`.
pub fn join_and(items: &[String]) -> String {
    match items {
        [] => String::new(),
        [one] => one.clone(),
        [rest @ .., last] => format!("{} and {last}", rest.join(", ")),
    }
}

/// A file of the export, relative to the output directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutFile {
    pub path: String,
    pub contents: Vec<u8>,
}

/// What `--check` found per (node, project): empty = ready.
pub type Readiness = BTreeMap<(String, String), Vec<String>>;

/// Render every application of `apps` (pure: same inputs, same bytes).
pub fn render(fleet: &Fleet, specs: &Specs, apps: &[Application<'_>], readiness: Option<&Readiness>) -> Result<Vec<OutFile>> {
    let t = formats::Templates::load(&fleet.data_dir.join(DATA_DIR))?;
    let mut files = Vec::new();
    // An application whose every node was left out has nothing to submit: only the index names it.
    for app in apps.iter().filter(|a| !a.nodes.is_empty()) {
        files.extend(formats::render_application(&t, fleet, specs, app, readiness)?);
    }
    files.push(formats::render_index(&t, fleet, specs, apps, readiness)?);
    Ok(files)
}

/// The list of files the last export wrote into its output directory.
pub const WRITTEN_LIST: &str = ".mmbuild-registrations";

/// Write `files` under `out`, each atomically, then remove what the previous export into `out`
/// wrote and this one did not (a node or project since dropped); nothing else is touched.
pub fn write(out: &Path, files: &[OutFile]) -> Result<Vec<PathBuf>> {
    let files: Vec<(&str, &[u8])> = files.iter().map(|f| (f.path.as_str(), f.contents.as_slice())).collect();
    hostkit::atomic::write_listed(out, WRITTEN_LIST, &files)
}

/// `mmbuild export registrations`.
#[derive(Debug, Clone)]
pub struct ExportOptions {
    pub fleet: PathBuf,
    pub data: Option<PathBuf>,
    pub out: PathBuf,
    pub selection: Selection,
    /// Probe the nodes first (`--check`).
    pub check: Option<preflight::Probe>,
    pub json: bool,
}

#[derive(Serialize)]
struct Summary<'a> {
    dir: &'a str,
    format: Format,
    projects: Vec<&'a str>,
    nodes: Vec<&'a str>,
    /// None without --check.
    ready: Option<bool>,
    problems: BTreeMap<String, Vec<String>>,
    /// Nodes left out: the upstream's checker cannot reach them.
    not_written: &'a [Note],
    /// Nodes carried although the checker cannot reach them the usual way.
    warnings: &'a [Note],
}

pub fn run(opts: &ExportOptions) -> Result<Exit> {
    let fleet = crate::inventory::fleet::open(&opts.fleet, opts.data.as_deref())?;
    let specs = Specs::load(&fleet.data_dir)?;
    let apps = match plan(&fleet, &specs, &opts.selection) {
        Ok(a) => a,
        Err(msg) => return Err(Invalid::diagnostics(format!("{}: error: {msg}\n", opts.fleet.display())).into()),
    };
    let missing = missing_facts(&fleet, &specs, &apps);
    if !missing.is_empty() {
        let n = missing.len();
        let text = format!("{missing}{}: {n} registration field{} missing: nothing written\n", opts.fleet.display(), plural(n));
        return Err(Invalid::diagnostics(text).into());
    }
    let readiness = opts.check.as_ref().map(|probe| {
        let mut pairs = Vec::new();
        let mut seen = BTreeSet::new();
        for app in &apps {
            for c in &app.nodes {
                for p in app.projects.iter().filter(|p| app.covers(c, &p.name)) {
                    if seen.insert((c.node.name.as_str(), p.name.as_str())) {
                        pairs.push((*c, *p, specs.get(&p.name).markers.as_slice()));
                    }
                }
            }
        }
        preflight::check_all(&pairs, probe)
    });
    let files = render(&fleet, &specs, &apps, readiness.as_ref())?;
    write(&opts.out, &files)?;

    let summaries: Vec<Summary<'_>> = apps
        .iter()
        .map(|a| {
            let mut problems = BTreeMap::new();
            for c in &a.nodes {
                for p in &a.projects {
                    if let Some(list) = readiness.as_ref().and_then(|r| r.get(&(c.node.name.clone(), p.name.clone()))) {
                        if !list.is_empty() {
                            problems.insert(format!("{} {}", c.node.name, p.name), list.clone());
                        }
                    }
                }
            }
            Summary {
                dir: &a.dir,
                format: a.format,
                projects: a.projects.iter().map(|p| p.name.as_str()).collect(),
                nodes: a.nodes.iter().map(|c| c.node.name.as_str()).collect(),
                ready: readiness.as_ref().map(|_| problems.is_empty()),
                problems,
                not_written: &a.left_out,
                warnings: &a.warnings,
            }
        })
        .collect();
    if opts.json {
        println!("{}", serde_json::to_string_pretty(&summaries)?);
    } else {
        for s in &summaries {
            let state = match s.ready {
                _ if s.nodes.is_empty() => "NOT WRITTEN",
                None => "written (not checked)",
                Some(true) => "ready",
                Some(false) => "NOT READY",
            };
            let dir = opts.out.join(s.dir);
            println!(
                "{:<40} {:<14} {} node(s)  {state}",
                format!("{}/", dir.display()),
                format!("{:?}", s.format).to_lowercase(),
                s.nodes.len()
            );
            for (what, list) in &s.problems {
                for p in list {
                    println!("    {what}: {p}");
                }
            }
            for n in s.not_written {
                println!("    {} {}: not written: {}", n.node, n.project, n.why);
            }
            for n in s.warnings {
                println!("    {} {}: written with a warning: {}", n.node, n.project, n.why);
            }
        }
        let written = apps.iter().filter(|a| !a.nodes.is_empty()).count();
        println!("{}: {} file(s) in {written} application(s)", opts.out.display(), files.len());
    }
    let not_ready = summaries.iter().any(|s| s.ready == Some(false));
    Ok(if not_ready { Exit::NotReady } else { Exit::Ok })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_refuses_paths_that_leave_the_output_directory() {
        let dir = tempfile::tempdir().unwrap();
        for bad in ["../x", "/etc/x", "a/../../x", ""] {
            let err = write(dir.path(), &[OutFile { path: bad.into(), contents: b"x".to_vec() }]).unwrap_err();
            assert!(err.to_string().contains("not a plain relative path"), "{bad}: {err}");
        }
        write(dir.path(), &[OutFile { path: "a/b.md".into(), contents: b"x".to_vec() }]).unwrap();
        assert_eq!(std::fs::read(dir.path().join("a/b.md")).unwrap(), b"x");
    }

    #[test]
    fn lists_read_naturally() {
        assert_eq!(join_and(&["a".into()]), "a");
        assert_eq!(join_and(&["a".into(), "b".into()]), "a and b");
        assert_eq!(join_and(&["a".into(), "b".into(), "c".into()]), "a, b and c");
    }

    /// An IPv6-only node hosting AlmaLinux, whose checker reaches IPv4 only.
    fn v6_only() -> (Fleet, Specs) {
        formats::test_fleet(
            "\n[[node]]\nname = \"v\"\nprojects = [\"almalinux\"]\nsponsor = { name = \"S\", url = \"https://s.example/\" }\n\
ipv6 = { address = \"2001:db8::2/64\", gateway = \"2001:db8::1\" }\ndns = [\"2620:fe::fe\"]\n",
            "",
        )
    }

    #[test]
    fn a_node_the_checker_cannot_reach_is_left_out_unless_the_project_documents_a_way() {
        let (fleet, mut specs) = v6_only();
        let apps = plan(&fleet, &specs, &Selection::default()).unwrap();
        assert!(apps[0].nodes.is_empty() && apps[0].warnings.is_empty(), "{apps:?}");
        assert_eq!((apps[0].left_out[0].node.as_str(), apps[0].left_out[0].project.as_str()), ("v", "almalinux"));
        assert!(apps[0].left_out[0].why.starts_with("no IPv4 address: AlmaLinux's mirror service resolves only"), "{apps:?}");
        let files = render(&fleet, &specs, &apps, None).unwrap();
        assert_eq!(files.iter().map(|f| f.path.as_str()).collect::<Vec<_>>(), ["README.md"]);

        specs.project.get_mut("almalinux").unwrap().other_family_path = Some("its mirror list also takes AAAA-only hosts".into());
        let apps = plan(&fleet, &specs, &Selection::default()).unwrap();
        assert!(apps[0].left_out.is_empty() && apps[0].nodes.len() == 1, "{apps:?}");
        assert!(apps[0].warnings[0].why.ends_with("the project documents another way: its mirror list also takes AAAA-only hosts"));
        let files = render(&fleet, &specs, &apps, None).unwrap();
        let readme = files.iter().find(|f| f.path == "almalinux/README.md").unwrap();
        let readme = String::from_utf8_lossy(&readme.contents);
        assert!(readme.contains("## Written with a warning\n\n- `v` (almalinux): no IPv4 address"), "{readme}");
    }

    #[test]
    fn specs_refuse_vocabulary_and_family_mistakes() {
        let dir = tempfile::tempdir().unwrap();
        let shipped = std::fs::read_to_string(crate::inventory::data::builtin_data_dir().join(DATA_DIR).join("projects.toml")).unwrap();
        std::fs::create_dir_all(dir.path().join(DATA_DIR)).unwrap();
        for (from, to, want) in [
            ("content = \"CD Image\"", "content = \"Release\"", "content \"Release\" is not one of Launchpad's: Archive, CD Image"),
            ("reaches = [\"ipv4\"]", "reaches = []", "reaches is empty"),
            ("reaches_why = ", "# reaches_why = ", "reaches leaves a family out: say why in reaches_why"),
        ] {
            assert!(shipped.contains(from), "{from}");
            std::fs::write(dir.path().join(DATA_DIR).join("projects.toml"), shipped.replacen(from, to, 1)).unwrap();
            let err = Specs::load(dir.path()).unwrap_err().to_string();
            assert!(err.contains(want), "{to}: {err}");
        }
    }

    #[test]
    fn the_shipped_specs_load_and_cover_every_format() {
        let specs = Specs::load(&crate::inventory::data::builtin_data_dir()).unwrap();
        let formats: BTreeSet<Format> = specs.project.values().map(|s| s.format).collect();
        assert_eq!(formats.len(), 5, "{formats:?}");
        assert_eq!(specs.get("videolan").format, Format::Request);
        assert_eq!(specs.get("epel").format, Format::Mirrormanager);
    }
}
