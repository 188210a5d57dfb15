//! `mmbuild export prometheus`: file_sd targets, blackbox modules and alert rules from the fleet.
//!
//! Templates live in `overlays/monitoring/`; everything taken from the inventory goes through an
//! escaper for where it lands (JSON for targets, YAML scalars, PromQL strings and regexes).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use anyhow::{Context, Result};
use handlebars::{handlebars_helper, Handlebars};
use mmconfig::{NodeConfig, DATA_MOUNT};
use serde_json::{json, Value};

use crate::exit::{self, Exit};
use crate::inventory::fleet;
use crate::monitor::health::marker;
use hostkit::atomic;

/// node_exporter's port on every node.
pub const NODE_EXPORTER_PORT: u16 = 9100;
/// Days a node may run another image than the fleet's build before it alerts (a roll-out, a
/// node down for repair and the weekend fit in).
pub const IMAGE_BEHIND_DAYS: u32 = 7;
/// Minutes added to a profile's maximum sync interval before a sync counts as stale (the same
/// default as `mmbuild status --lag-margin`).
pub const MARGIN_MINUTES: u32 = 60;

/// A YAML double-quoted scalar: every control character escaped, so no input ends the line.
pub fn yaml_str(s: &str) -> String {
    let mut o = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            // U+FFFE/U+FFFF are outside YAML's printable set: go-yaml refuses the file (fuzz finding).
            c if c.is_control() || matches!(c, '\u{2028}' | '\u{2029}' | '\u{feff}' | '\u{fffe}' | '\u{ffff}') => {
                o.push_str(&format!("\\u{:04x}", c as u32))
            }
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

/// A PromQL double-quoted string literal.
pub fn promql_str(s: &str) -> String {
    let mut o = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            '\n' => o.push_str("\\n"),
            c if c.is_control() => o.push_str(&format!("\\u{:04x}", c as u32)),
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

/// `s` matched literally inside an RE2 regular expression.
pub fn regex_quote(s: &str) -> String {
    let mut o = String::new();
    for c in s.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            o.push('\\');
        }
        o.push(c);
    }
    o
}

/// One line of a YAML comment: no line breaks.
fn comment(s: &str) -> String {
    s.chars().map(|c| if c.is_control() || c == '\u{2028}' || c == '\u{2029}' { ' ' } else { c }).collect()
}

handlebars_helper!(yaml_h: |s: str| yaml_str(s));
handlebars_helper!(promql_h: |s: str| promql_str(s));
handlebars_helper!(comment_h: |s: str| comment(s));

fn registry(dir: &Path) -> Result<Handlebars<'static>> {
    let mut h = Handlebars::new();
    h.set_strict_mode(true);
    h.register_escape_fn(handlebars::no_escape);
    h.register_helper("yaml", Box::new(yaml_h));
    h.register_helper("promql_str", Box::new(promql_h));
    h.register_helper("comment", Box::new(comment_h));
    for name in ["prometheus.yml", "blackbox.yml", "rules.yml"] {
        let path = dir.join(format!("{name}.hbs"));
        h.register_template_file(name, &path).with_context(|| format!("loading template {}", path.display()))?;
    }
    Ok(h)
}

/// The host part of an inventory address (`192.0.2.10/31` -> `192.0.2.10`), bracketed for IPv6.
fn host(addr: &str, v6: bool) -> String {
    let a = addr.split('/').next().unwrap_or(addr);
    if v6 {
        format!("[{a}]")
    } else {
        a.to_string()
    }
}

/// (family name, blackbox ip protocol, the node's address in URL form) for each family it has.
fn families(n: &NodeConfig) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    if let Some(a) = &n.node.ipv4 {
        out.push(("ipv4", host(&a.address, false)));
    }
    if let Some(a) = &n.node.ipv6 {
        out.push(("ipv6", host(&a.address, true)));
    }
    out
}

fn proto(family: &str) -> &'static str {
    if family == "ipv4" {
        "ip4"
    } else {
        "ip6"
    }
}

/// Blackbox module ids for each rsync module of the fleet: `mm_rsync_<module>`, made unique.
fn rsync_module_ids(nodes: &[NodeConfig]) -> BTreeMap<String, String> {
    let modules: BTreeSet<&str> = nodes.iter().flat_map(|n| n.projects.iter().map(|p| p.rsync_module.as_str())).collect();
    let mut ids = BTreeMap::new();
    let mut used = BTreeSet::new();
    for m in modules {
        let base: String = m.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '_' }).collect();
        let mut id = format!("mm_rsync_{base}");
        let mut i = 2;
        while !used.insert(id.clone()) {
            id = format!("mm_rsync_{base}_{i}");
            i += 1;
        }
        ids.insert(m.to_string(), id);
    }
    ids
}

fn node_labels(n: &NodeConfig) -> serde_json::Map<String, Value> {
    let mut l = serde_json::Map::new();
    l.insert("node".into(), json!(n.node.name));
    l.insert("fqdn".into(), json!(n.node.fqdn));
    l.insert("sponsor".into(), json!(n.node.sponsor.name));
    l.insert("hardware".into(), json!(n.hardware.name));
    l
}

/// `targets/node.json`: node_exporter on each node, over IPv4 where it has it.
pub fn node_targets(nodes: &[NodeConfig]) -> Value {
    let groups: Vec<Value> = nodes
        .iter()
        .filter_map(|n| {
            let (_, addr) = families(n).into_iter().next()?;
            Some(json!({"targets": [format!("{addr}:{NODE_EXPORTER_PORT}")], "labels": node_labels(n)}))
        })
        .collect();
    Value::Array(groups)
}

/// `targets/blackbox.json`: per node, family and project an HTTP and an rsync probe; per node
/// and family an HTTPS probe when the fleet serves HTTPS.
pub fn blackbox_targets(nodes: &[NodeConfig]) -> Value {
    let ids = rsync_module_ids(nodes);
    let mut groups = Vec::new();
    for n in nodes {
        for (family, addr) in families(n) {
            let group = |target: String, probe: &str, module: String, project: Option<&str>| {
                let mut l = node_labels(n);
                if let Some(p) = project {
                    l.insert("project".into(), json!(p));
                }
                l.insert("family".into(), json!(family));
                l.insert("probe".into(), json!(probe));
                l.insert("module".into(), json!(module));
                l.insert("__param_module".into(), json!(module));
                json!({"targets": [target], "labels": l})
            };
            for p in &n.projects {
                groups.push(group(format!("http://{addr}{}", p.http_path), "http", format!("mm_http_{family}"), Some(&p.name)));
                groups.push(group(format!("{addr}:873"), "rsync", format!("{}_{family}", ids[&p.rsync_module]), Some(&p.name)));
            }
            if n.fleet.https {
                // The certificate names the FQDN: the exporter resolves it within the family.
                groups.push(group(format!("https://{}/", n.node.fqdn), "https", format!("mm_http_{family}"), None));
            }
        }
    }
    Value::Array(groups)
}

/// Every output file, by path relative to the output directory; `image_version` is the fleet
/// build's, when known.
pub fn render(
    fleet_name: &str,
    nodes: &[NodeConfig],
    templates: &Path,
    blackbox: &str,
    image_version: Option<&str>,
) -> Result<BTreeMap<String, String>> {
    let h = registry(templates)?;
    let ids = rsync_module_ids(nodes);
    let fams = [("ipv4", "ip4"), ("ipv6", "ip6")];
    let rsync: Vec<Value> = ids
        .iter()
        .flat_map(|(module, id)| {
            fams.iter().map(move |(f, _)| json!({"module": module, "module_id": format!("{id}_{f}"), "proto": proto(f)}))
        })
        .collect();
    let mut projects: BTreeMap<&str, &mmconfig::Profile> = BTreeMap::new();
    for p in nodes.iter().flat_map(|n| n.projects.iter()) {
        projects.entry(p.name.as_str()).or_insert(p);
    }
    let projects: Vec<Value> = projects
        .values()
        .map(|p| {
            json!({
                "name": p.name,
                "max_interval_minutes": p.sync.max_interval_minutes,
                "margin_minutes": MARGIN_MINUTES,
                "allowed_seconds": marker::allowed_lag(p.sync.max_interval_minutes, u64::from(MARGIN_MINUTES) * 60),
                // mm-sync's textfile: mm_sync_<project, - as _>.prom (node_exporter may give the full path).
                "file_regex": format!("(.*/)?{}", regex_quote(&format!("mm_sync_{}.prom", p.name.replace('-', "_")))),
            })
        })
        .collect();
    let data = json!({
        "fleet": fleet_name,
        "blackbox": blackbox,
        "families": fams.iter().map(|(n, p)| json!({"name": n, "proto": p})).collect::<Vec<_>>(),
        "rsync": rsync,
        "projects": projects,
        "data_mount": DATA_MOUNT,
        "image_version": image_version,
        "image_behind_days": IMAGE_BEHIND_DAYS,
    });
    let mut out = BTreeMap::new();
    for name in ["prometheus.yml", "blackbox.yml", "rules.yml"] {
        out.insert(name.to_string(), h.render(name, &data).with_context(|| format!("rendering {name}"))?);
    }
    let pretty = |v: &Value| serde_json::to_string_pretty(v).map(|s| s + "\n").context("serializing targets");
    out.insert("targets/node.json".into(), pretty(&node_targets(nodes))?);
    out.insert("targets/blackbox.json".into(), pretty(&blackbox_targets(nodes))?);
    Ok(out)
}

pub fn run(fleet_path: &Path, data: Option<&Path>, out: &Path, blackbox: &str, build: Option<&Path>) -> Result<Exit> {
    let fleet = fleet::open(fleet_path, data)?;
    if !hostkit::net::Authority::parse(blackbox).is_ok_and(|a| a.port.is_some()) {
        return exit::invalid(format!("--blackbox {blackbox:?}: expected HOST:PORT"));
    }
    let image_version = match build.map(crate::image::manifest::image_version).transpose() {
        Ok(v) => v,
        Err(e) => return exit::invalid(format!("--build: {e:#}")),
    };
    let files = render(&fleet.name, &fleet.nodes, &fleet.data_dir.join("overlays/monitoring"), blackbox, image_version.as_deref())?;
    for (rel, text) in &files {
        atomic::write(&out.join(rel), text.as_bytes())?;
    }
    println!("{}: wrote {} files for {} node(s) to {}", fleet_path.display(), files.len(), fleet.nodes.len(), out.display());
    Ok(Exit::Ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example() -> (String, Vec<NodeConfig>, std::path::PathBuf) {
        let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let f = fleet::load(&repo.join("examples/fleet.toml"), None).unwrap();
        (f.name, f.nodes, repo.join("overlays/monitoring"))
    }

    #[test]
    fn yaml_str_escapes_the_non_characters_yaml_refuses() {
        assert_eq!(yaml_str("a\u{ffff}b\u{fffe}"), r#""a\uffffb\ufffe""#);
    }

    #[test]
    fn escapers() {
        assert_eq!(yaml_str("a\"b\\c\nd\u{85}"), "\"a\\\"b\\\\c\\u000ad\\u0085\"");
        assert_eq!(promql_str("ep\"el\\"), "\"ep\\\"el\\\\\"");
        assert_eq!(regex_quote("mm_sync_a.b+c.prom"), "mm_sync_a\\.b\\+c\\.prom");
    }

    #[test]
    fn rules_follow_each_profile_interval_and_the_metric_names_mm_sync_writes() {
        let (name, nodes, t) = example();
        let out = render(&name, &nodes, &t, "127.0.0.1:9115", None).unwrap();
        let rules = &out["rules.yml"];
        // archlinux: 1440 min + 60 min margin; epel the same; almalinux 360 + 60.
        assert!(rules.contains("time() - mm_sync_last_success_timestamp_seconds{project=\"archlinux\"} > 90000\n"), "{rules}");
        assert!(rules.contains("time() - mm_sync_last_success_timestamp_seconds{project=\"almalinux\"} > 25200\n"), "{rules}");
        assert!(rules.contains("node_textfile_mtime_seconds{file=~\"(.*/)?mm_sync_ubuntu_releases\\\\.prom\"} > "), "{rules}");
        // The image alert only when the fleet's build is known, its version a PromQL string.
        assert!(!rules.contains("MirrorNodeImageBehind"));
        let with = render(&name, &nodes, &t, "127.0.0.1:9115", Some("20261104.024542-3f2a9c1e0b7d")).unwrap();
        assert!(
            with["rules.yml"].contains("mm_image_info{image_version!=\"20261104.024542-3f2a9c1e0b7d\"} == 1\n        for: 7d\n"),
            "{}",
            with["rules.yml"]
        );
        // Every hosted project once, no project that no node hosts.
        assert_eq!(rules.matches("alert: MirrorSyncStale").count(), 10);
        assert!(!rules.contains("\"kde\""));
        for metric in ["mm_sync_last_run_success", "mm_sync_check_errors", "mm_sync_last_success_timestamp_seconds"] {
            let src = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../sync/src/records.rs")).unwrap();
            assert!(src.contains(&format!("\"{metric}\"")), "mm-sync no longer writes {metric}");
        }
    }

    #[test]
    fn targets_carry_labels_per_family_and_hostile_sponsors_stay_data() {
        let (name, nodes, t) = example();
        let out = render(&name, &nodes, &t, "127.0.0.1:9115", None).unwrap();
        let bb: Value = serde_json::from_str(&out["targets/blackbox.json"]).unwrap();
        let ci_rsync: Vec<&Value> =
            bb.as_array().unwrap().iter().filter(|g| g["labels"]["node"] == "ci" && g["labels"]["probe"] == "rsync").collect();
        assert_eq!(ci_rsync.len(), 2, "one per family");
        assert_eq!(ci_rsync[0]["targets"][0], "10.0.2.15:873");
        assert_eq!(ci_rsync[1]["targets"][0], "[fec0::15]:873");
        assert_eq!(ci_rsync[1]["labels"]["__param_module"], "mm_rsync_epel_ipv6");
        assert_eq!(ci_rsync[0]["labels"]["sponsor"], "CI \"Labs\" & <Sons> '; rm -rf / #");
        assert!(bb.as_array().unwrap().iter().all(|g| g["labels"]["node"] != "v6only" || g["labels"]["family"] == "ipv6"));
        let node: Value = serde_json::from_str(&out["targets/node.json"]).unwrap();
        let v6only = node.as_array().unwrap().iter().find(|g| g["labels"]["node"] == "v6only").unwrap();
        assert_eq!(v6only["targets"][0], "[2001:db8:40::10]:9100");
        assert!(out["blackbox.yml"].contains("  mm_rsync_epel_ipv6:\n"));
        assert!(out["blackbox.yml"].contains("        - send: \"epel\"\n"));
        // Deterministic.
        assert_eq!(out, render(&name, &nodes, &t, "127.0.0.1:9115", None).unwrap());
    }
}
