//! `mmbuild export ansible`: an Ansible inventory, each node's node.toml, known_hosts and a converge playbook.
//!
//! The inventory is YAML rendered from `overlays/ansible/inventory.yml.hbs`; every value from the
//! fleet inventory goes out as an escaped double-quoted scalar tagged `!unsafe`, so Ansible reads
//! it as data and never evaluates it as a Jinja template. Group and host names are keys reduced
//! to Ansible's rules. The playbook (`converge.yml`) holds no fleet data and is copied as is.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use handlebars::{handlebars_helper, Handlebars};
use mmconfig::{NodeConfig, ADMIN_USER};
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::inventory::fleet::Fleet;
use crate::registration::escape::{md_text, yaml_quote};

/// Templates and the playbook, under the data directory.
pub const DATA_DIR: &str = "overlays/ansible";
/// The list of files the last export wrote (so a dropped node's files go away, nothing else).
pub const WRITTEN_LIST: &str = ".mmbuild-ansible";

/// A value from the fleet inventory as Ansible data: a YAML double-quoted scalar tagged `!unsafe`.
pub fn yaml_unsafe(s: &str) -> String {
    format!("!unsafe {}", yaml_quote(s))
}

handlebars_helper!(key_h: |s: str| yaml_quote(s));

/// `s` reduced to what Ansible accepts in a group name after a prefix: ASCII letters and digits
/// lowercased, every other run of characters one `_`, none at either end.
pub fn slug(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.is_empty() && !out.ends_with('_') {
            out.push('_');
        }
    }
    while out.ends_with('_') {
        out.pop();
    }
    out
}

fn short_hash(s: &str) -> String {
    Sha256::digest(s.as_bytes()).iter().take(4).map(|b| format!("{b:02x}")).collect()
}

/// Group names for the distinct `names` of one kind: `PREFIX_slug`, or `PREFIX_slug_HASH` where
/// two different names share a slug or nothing is left of the name (`PREFIX_HASH`), so two
/// sponsors never end up in one group by accident.
pub fn group_names(prefix: &str, names: &BTreeSet<&str>) -> BTreeMap<String, String> {
    let mut by_slug: BTreeMap<String, usize> = BTreeMap::new();
    for n in names {
        *by_slug.entry(slug(n)).or_default() += 1;
    }
    names
        .iter()
        .map(|n| {
            let s = slug(n);
            let name = match (s.is_empty(), by_slug[&s] > 1) {
                (true, _) => format!("{prefix}_{}", short_hash(n)),
                (false, true) => format!("{prefix}_{s}_{}", short_hash(n)),
                (false, false) => format!("{prefix}_{s}"),
            };
            (n.to_string(), name)
        })
        .collect()
}

/// Every group and its members (in the order given): the fleet, each hardware model, each
/// hosted project, each sponsor.
pub fn groups(fleet_name: &str, nodes: &[&NodeConfig]) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let fleet = group_names("fleet", &BTreeSet::from([fleet_name]));
    let hw = group_names("hardware", &nodes.iter().map(|n| n.hardware.name.as_str()).collect());
    let proj = group_names("project", &nodes.iter().flat_map(|n| n.projects.iter().map(|p| p.name.as_str())).collect());
    let sponsor = group_names("sponsor", &nodes.iter().map(|n| n.node.sponsor.name.as_str()).collect());
    for n in nodes {
        let name = &n.node.name;
        let mut member = |g: &String| out.entry(g.clone()).or_default().push(name.clone());
        member(&fleet[fleet_name]);
        member(&hw[n.hardware.name.as_str()]);
        for p in &n.projects {
            member(&proj[p.name.as_str()]);
        }
        member(&sponsor[n.node.sponsor.name.as_str()]);
    }
    out
}

/// The node's addresses without prefix length, IPv4 first.
pub fn addresses(cfg: &NodeConfig) -> Vec<String> {
    let strip = |a: &str| a.split('/').next().unwrap_or(a).to_string();
    cfg.node.ipv4.iter().map(|a| strip(&a.address)).chain(cfg.node.ipv6.iter().map(|a| strip(&a.address))).collect()
}

/// `inventory.yml` (pure: same nodes, same bytes).
pub fn render_inventory(templates: &Path, fleet_name: &str, nodes: &[&NodeConfig]) -> Result<String> {
    let mut h = Handlebars::new();
    h.set_strict_mode(true);
    h.register_escape_fn(yaml_unsafe);
    h.register_helper("key", Box::new(key_h));
    let path = templates.join("inventory.yml.hbs");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading template {}", path.display()))?;
    h.register_template_string("inventory", text).with_context(|| format!("parsing template {}", path.display()))?;
    let hosts: Vec<_> = nodes
        .iter()
        .map(|n| {
            let addrs = addresses(n);
            json!({
                "name": n.node.name,
                "fqdn": n.node.fqdn,
                // No address at all: ssh resolves the FQDN.
                "address": addrs.first().cloned().unwrap_or_else(|| n.node.fqdn.clone()),
                "addresses": addrs,
                "hardware": n.hardware.name,
                "projects": n.projects.iter().map(|p| &p.name).collect::<Vec<_>>(),
                "sponsor": { "name": n.node.sponsor.name, "url": n.node.sponsor.url },
            })
        })
        .collect();
    let groups: Vec<_> = groups(fleet_name, nodes).into_iter().map(|(name, hosts)| json!({ "name": name, "hosts": hosts })).collect();
    let data = json!({ "fleet": fleet_name, "admin_user": ADMIN_USER, "hosts": hosts, "groups": groups });
    h.render("inventory", &data).with_context(|| format!("rendering {}", path.display()))
}

/// known_hosts for `nodes`: one line per node, `fqdn,ipv4,ipv6 KEY`, the key taken from the
/// build's known_hosts (`build`: fqdn -> `ssh-ed25519 AAAA...`). Err: the nodes without a key.
pub fn render_known_hosts(nodes: &[&NodeConfig], build: &BTreeMap<String, String>) -> Result<String, Vec<String>> {
    let mut out = String::new();
    let mut missing = Vec::new();
    for n in nodes {
        match build.get(&n.node.fqdn) {
            Some(key) => {
                let hosts: Vec<String> = std::iter::once(n.node.fqdn.clone()).chain(addresses(n)).collect();
                out.push_str(&format!("{} {key}\n", hosts.join(",")));
            }
            None => missing.push(n.node.name.clone()),
        }
    }
    if missing.is_empty() {
        Ok(out)
    } else {
        Err(missing)
    }
}

/// `README.md` of the export.
pub fn render_readme(templates: &Path, fleet_name: &str, nodes: &[&NodeConfig]) -> Result<String> {
    let mut h = Handlebars::new();
    h.set_strict_mode(true);
    h.register_escape_fn(md_text);
    let path = templates.join("README.md.hbs");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading template {}", path.display()))?;
    h.register_template_string("readme", text).with_context(|| format!("parsing template {}", path.display()))?;
    let names: Vec<&str> = nodes.iter().map(|n| n.node.name.as_str()).collect();
    let data = json!({ "fleet": fleet_name, "admin_user": ADMIN_USER, "count": nodes.len(), "nodes": names });
    h.render("readme", &data).with_context(|| format!("rendering {}", path.display()))
}

/// Every file of the export: relative path and contents (pure).
pub fn render_all(templates: &Path, fleet_name: &str, nodes: &[&NodeConfig], known_hosts: &str) -> Result<Vec<(String, Vec<u8>)>> {
    let playbook = templates.join("converge.yml");
    let mut files = vec![
        ("inventory.yml".to_string(), render_inventory(templates, fleet_name, nodes)?.into_bytes()),
        ("known_hosts".to_string(), known_hosts.as_bytes().to_vec()),
        ("converge.yml".to_string(), std::fs::read(&playbook).with_context(|| format!("reading {}", playbook.display()))?),
        ("README.md".to_string(), render_readme(templates, fleet_name, nodes)?.into_bytes()),
    ];
    for n in nodes {
        files.push((format!("host_vars/{}/node.toml", n.node.name), n.to_toml().into_bytes()));
    }
    Ok(files)
}

/// What `export` needs besides the loaded fleet.
#[derive(Debug, Clone)]
pub struct Options {
    pub out: PathBuf,
    /// Only these nodes; empty: every node.
    pub nodes: Vec<String>,
    /// The build's known_hosts (`mmbuild build --out DIR` writes DIR/known_hosts).
    pub known_hosts: PathBuf,
}

/// What an export wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub nodes: usize,
    pub groups: usize,
    pub files: Vec<PathBuf>,
}

/// Write the export into `opts.out` (each file atomically).
pub fn export(fleet: &Fleet, opts: &Options) -> Result<Summary> {
    for n in &opts.nodes {
        if fleet.node(n).is_none() {
            return crate::exit::invalid(format!("no node {n:?} in {}", fleet.path.display()));
        }
    }
    let nodes: Vec<&NodeConfig> = fleet.nodes.iter().filter(|n| opts.nodes.is_empty() || opts.nodes.contains(&n.node.name)).collect();
    let text = std::fs::read_to_string(&opts.known_hosts)
        .with_context(|| format!("reading {} (the known_hosts `mmbuild build` wrote into its --out)", opts.known_hosts.display()))?;
    let keys = crate::image::hostkeys::parse_known_hosts(&text);
    let known_hosts = render_known_hosts(&nodes, &keys).map_err(|missing| {
        crate::exit::Invalid::error(format!(
            "{} has no host key for {}: run `mmbuild build` (or --kickstart-only) for the fleet with that --out first, then export again",
            opts.known_hosts.display(),
            missing.join(", ")
        ))
    })?;
    let files = render_all(&fleet.data_dir.join(DATA_DIR), &fleet.name, &nodes, &known_hosts)?;
    let files = write(&opts.out, &files)?;
    Ok(Summary { nodes: nodes.len(), groups: groups(&fleet.name, &nodes).len(), files })
}

/// Write `files` under `out`, then remove what the previous export listed and this one did not
/// write (a node since dropped); nothing else in `out` is touched.
pub fn write(out: &Path, files: &[(String, Vec<u8>)]) -> Result<Vec<PathBuf>> {
    let files: Vec<(&str, &[u8])> = files.iter().map(|(p, b)| (p.as_str(), b.as_slice())).collect();
    hostkit::atomic::write_listed(out, WRITTEN_LIST, &files)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn templates() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(DATA_DIR)
    }

    fn example() -> Fleet {
        let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        crate::inventory::fleet::load(&repo.join("examples/fleet.toml"), Some(&repo)).expect("example fleet loads")
    }

    #[test]
    fn slugs_follow_ansible_group_rules() {
        assert_eq!(slug("Sponsor & Co <Labs>"), "sponsor_co_labs");
        assert_eq!(slug("ubuntu-releases"), "ubuntu_releases");
        assert_eq!(slug("  --Hé llo--  "), "h_llo");
        assert_eq!(slug("株式会社"), "");
        for s in ["CI \"Labs\" & <Sons> '; rm -rf / #", "{{ lookup('pipe', 'id') }}", "a\nb"] {
            assert!(slug(s).chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'), "{s:?}");
        }
    }

    #[test]
    fn distinct_names_never_share_a_group() {
        let names = BTreeSet::from(["A&B", "A B", "Solo", "株式会社", "株式会社 2"]);
        let g = group_names("sponsor", &names);
        assert_eq!(g["Solo"], "sponsor_solo");
        assert!(g["A&B"].starts_with("sponsor_a_b_") && g["A B"].starts_with("sponsor_a_b_"));
        assert_ne!(g["A&B"], g["A B"]);
        assert!(g["株式会社"].len() == "sponsor_".len() + 8);
        assert_eq!(g.values().collect::<BTreeSet<_>>().len(), names.len());
    }

    #[test]
    fn unsafe_scalars_are_tagged_and_escaped() {
        assert_eq!(yaml_unsafe("a \"b\" \\ {{ x }}"), r#"!unsafe "a \"b\" \\ {{ x }}""#);
        assert_eq!(yaml_unsafe("l1\nl2\u{85}"), r#"!unsafe "l1\nl2\N""#);
    }

    #[test]
    fn inventory_groups_and_host_vars() {
        let f = example();
        let nodes: Vec<&NodeConfig> = f.nodes.iter().collect();
        let g = groups(&f.name, &nodes);
        assert_eq!(g["fleet_example_mm"].len(), f.nodes.len());
        assert_eq!(g["hardware_termite"], vec!["hurricane"]);
        assert_eq!(g["project_epel"], vec!["ziply", "sonic", "ci"]);
        assert_eq!(g["sponsor_sponsor_co_labs"], vec!["sonic"]);
        let inv = render_inventory(&templates(), &f.name, &nodes).unwrap();
        // The hostile sponsor only as a tagged, escaped scalar.
        assert!(inv.contains(r#"name: !unsafe "CI \"Labs\" & <Sons> '; rm -rf / #""#), "{inv}");
        assert!(inv.contains("    \"ci\":\n      ansible_host: !unsafe \"10.0.2.15\"\n"), "{inv}");
        assert!(inv.contains("    \"v6only\":\n      ansible_host: !unsafe \"2001:db8:40::10\"\n"), "{inv}");
        assert!(inv.contains("ansible_user: !unsafe \"mmadmin\""));
        assert!(inv.contains("HostKeyAlias={{ mm_fqdn }}") && inv.contains("UserKnownHostsFile=\"{{ inventory_dir }}/known_hosts\""));
        assert_eq!(inv, render_inventory(&templates(), &f.name, &nodes).unwrap(), "deterministic");
    }

    #[test]
    fn known_hosts_per_node_or_the_missing_ones() {
        let f = example();
        let nodes: Vec<&NodeConfig> = f.nodes.iter().filter(|n| ["ziply", "v6only"].contains(&n.node.name.as_str())).collect();
        let mut keys = BTreeMap::from([("ziply.mm.example.net".to_string(), "ssh-ed25519 AAAAziply".to_string())]);
        assert_eq!(render_known_hosts(&nodes, &keys), Err(vec!["v6only".to_string()]));
        keys.insert("v6only.mm.example.net".into(), "ssh-ed25519 AAAAv6".into());
        assert_eq!(
            render_known_hosts(&nodes, &keys).unwrap(),
            "ziply.mm.example.net,192.0.2.10,2001:db8:10::2 ssh-ed25519 AAAAziply\nv6only.mm.example.net,2001:db8:40::10 ssh-ed25519 AAAAv6\n"
        );
    }

    #[test]
    fn every_node_gets_exactly_its_node_toml() {
        let f = example();
        let nodes: Vec<&NodeConfig> = f.nodes.iter().collect();
        let files = render_all(&templates(), &f.name, &nodes, "").unwrap();
        for n in &f.nodes {
            let (_, bytes) = files.iter().find(|(p, _)| *p == format!("host_vars/{}/node.toml", n.node.name)).unwrap();
            assert_eq!(bytes, n.to_toml().as_bytes());
        }
        let readme = String::from_utf8(files.iter().find(|(p, _)| p == "README.md").unwrap().1.clone()).unwrap();
        assert!(readme.contains("5 node(s): ziply, sonic, hurricane, v6only, ci."), "{readme}");
    }
}
