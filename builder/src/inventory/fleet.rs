//! Fleet inventory: parse, validate (every error with file:line:col) and resolve per-node configs.
//!
//! Parsing goes through toml's spanned document tree so that one broken `[[node]]` does not hide
//! the errors of the others: each section is deserialized on its own, then checked semantically.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use mmconfig::{FleetInfo, Ipv4Config, Ipv6Config, Node, NodeConfig, Profile, Sponsor, SCHEMA_VERSION};
use serde::Deserialize;
use toml::de::{DeTable, DeValue, ValueDeserializer};
use toml::Spanned;

use crate::inventory::countries::{load_countries, COUNTRIES_FILE};
use crate::inventory::data::{DataCache, DataDirs, Lookup};
use crate::inventory::diag::{Diagnostics, SourceFile};
use crate::inventory::syntax::{
    asn_problem, check_domain, check_http_url, check_label, check_ssh_key, check_text, looks_like_email, normalize_mac,
};

/// A validated fleet, every node resolved against its profiles and hardware.
#[derive(Debug, Clone)]
pub struct Fleet {
    pub path: PathBuf,
    pub name: String,
    /// Nodes in inventory order.
    pub nodes: Vec<NodeConfig>,
    /// The data directory (profiles/, hardware/, overlays/) that was used.
    pub data_dir: PathBuf,
    /// Operator-side facts only registrations read (never in node.toml).
    pub registration: RegistrationFacts,
}

/// What upstream mirror registrations need beyond the node configuration: who runs the fleet,
/// where each node stands and how it is connected.
#[derive(Debug, Clone, Default)]
pub struct RegistrationFacts {
    pub organisation: Option<Organisation>,
    /// `[fleet] registration_contact`'s e-mail, else `[fleet] contact`.
    pub contact: String,
    /// `[fleet] registration_contact`'s name, where given as `{ name, email }`.
    pub contact_name: Option<String>,
    /// Where `[fleet]` starts, for messages about a missing fleet-level field.
    pub fleet_at: Pos,
    /// Per node name.
    pub nodes: BTreeMap<String, NodeFacts>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Organisation {
    pub name: String,
    pub url: String,
}

#[derive(Debug, Clone, Default)]
pub struct NodeFacts {
    pub location: Option<Location>,
    pub asn: Option<u32>,
    pub port_mbps: Option<u32>,
    /// Where the node's `name` is, for messages about a missing field.
    pub at: Pos,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Location {
    /// ISO 3166-1 alpha-2, upper case.
    pub country: String,
    /// The English short name from `overlays/registration/countries.tsv`.
    pub country_name: String,
    pub state_province: Option<String>,
    pub city: Option<String>,
    pub latitude: Option<f64>,
    pub longitude: Option<f64>,
}

/// A 1-based line and column in the fleet file.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pos {
    pub line: usize,
    pub col: usize,
}

impl Fleet {
    pub fn node(&self, name: &str) -> Option<&NodeConfig> {
        self.nodes.iter().find(|n| n.node.name == name)
    }
}

type S<T> = Spanned<T>;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFleet {
    name: S<String>,
    domain: S<String>,
    contact: S<String>,
    admin_ssh_keys: S<Vec<S<String>>>,
    admin_prefixes: S<Vec<S<String>>>,
    #[serde(default)]
    https: bool,
    #[serde(default)]
    push_keys: std::collections::BTreeMap<String, S<Vec<S<String>>>>,
    /// Who runs the fleet, as upstream registrations name it (MirrorManager's site, ...).
    organisation: Option<S<RawOrganisation>>,
    /// Where upstream mirror admins write, an e-mail address or `{ name, email }`; default: `contact`.
    registration_contact: Option<S<RawContact>>,
}

/// `registration_contact`: a plain e-mail address, or a person's name with it (Debian's form
/// asks for both).
enum RawContact {
    Email(String),
    Named { name: S<String>, email: S<String> },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNamedContact {
    name: S<String>,
    email: S<String>,
}

impl<'de> Deserialize<'de> for RawContact {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = RawContact;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an e-mail address or { name = \"...\", email = \"...\" }")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<RawContact, E> {
                Ok(RawContact::Email(s.to_string()))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<RawContact, A::Error> {
                let c = RawNamedContact::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
                Ok(RawContact::Named { name: c.name, email: c.email })
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOrganisation {
    name: S<String>,
    url: S<String>,
}

#[derive(Deserialize, Clone)]
#[serde(deny_unknown_fields)]
struct RawLocation {
    country: S<String>,
    state_province: Option<S<String>>,
    city: Option<S<String>>,
    latitude: Option<S<f64>>,
    longitude: Option<S<f64>>,
}

/// Keys that may appear in `[defaults]` and be overridden per node.
#[derive(Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
struct RawDefaults {
    hardware: Option<S<String>>,
    projects: Option<S<Vec<S<String>>>>,
    dns: Option<S<Vec<S<String>>>>,
    /// Upstream rsync URL per project name, overriding the profile's.
    upstreams: Option<BTreeMap<S<String>, S<String>>>,
    sync_bwlimit_kbps: Option<S<u64>>,
    location: Option<S<RawLocation>>,
    asn: Option<S<i64>>,
    port_mbps: Option<S<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNode {
    name: S<String>,
    hardware: Option<S<String>>,
    projects: Option<S<Vec<S<String>>>>,
    sponsor: S<RawSponsor>,
    ipv4: Option<S<RawAddr>>,
    ipv6: Option<S<RawAddr>>,
    dns: Option<S<Vec<S<String>>>>,
    interface: Option<S<RawInterface>>,
    upstreams: Option<BTreeMap<S<String>, S<String>>>,
    sync_bwlimit_kbps: Option<S<u64>>,
    /// Serial numbers of disks whose foreign contents firstboot may wipe.
    #[serde(default)]
    wipe_disk_serials: Vec<S<String>>,
    /// Where the node stands (registrations; with `[defaults]` fallback).
    location: Option<S<RawLocation>>,
    /// The sponsor network's AS number.
    asn: Option<S<i64>>,
    /// The node's port speed in Mbit/s.
    port_mbps: Option<S<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSponsor {
    name: S<String>,
    url: S<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAddr {
    address: S<String>,
    gateway: S<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInterface {
    mac: S<String>,
}

/// Collects errors for one source file.
struct Checker<'a> {
    src: SourceFile<'a>,
    diags: Diagnostics,
}

impl Checker<'_> {
    fn err(&mut self, span: Range<usize>, message: impl Into<String>) {
        let d = self.src.error(Some(span), message);
        self.diags.push(d);
    }

    fn node_err(&mut self, node: &str, span: Range<usize>, message: impl AsRef<str>) {
        self.err(span, format!("node \"{node}\": {}", message.as_ref()));
    }

    /// Deserialize one section; on failure report it (with `context`) and return None.
    fn section<T: for<'de> Deserialize<'de>>(&mut self, value: Spanned<DeValue<'_>>, context: &str) -> Option<T> {
        let whole = value.span();
        match T::deserialize(ValueDeserializer::from(value)) {
            Ok(v) => Some(v),
            Err(e) => {
                let msg = e.message().trim().replace('\n', " ");
                let hint = if msg.starts_with("unknown field") {
                    " (remove it or fix its spelling)"
                } else if msg.starts_with("missing field") {
                    " (add it)"
                } else {
                    ""
                };
                self.err(e.span().unwrap_or(whole), format!("{context}{msg}{hint}"));
                None
            }
        }
    }
}

/// [`load`] for a verb: every problem found becomes an [`crate::exit::Invalid`] error (exit 1).
pub fn open(path: &Path, data_override: Option<&Path>) -> anyhow::Result<Fleet> {
    load(path, data_override).map_err(|d| crate::exit::Invalid::diagnostics(d).into())
}

/// Load and validate `path`; on failure, every problem found.
pub fn load(path: &Path, data_override: Option<&Path>) -> Result<Fleet, Diagnostics> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Diagnostics::single(path, &format!("cannot read the fleet file: {e} (check the path)")))?;
    let dirs = DataDirs::for_fleet(path, data_override);
    parse(path, &text, dirs)
}

/// Validate fleet `text` (named `path` in messages) against the data in `dirs`.
pub fn parse(path: &Path, text: &str, dirs: DataDirs) -> Result<Fleet, Diagnostics> {
    let mut ck = Checker { src: SourceFile::new(path, text), diags: Diagnostics::default() };
    let (doc, syntax) = DeTable::parse_recoverable(text);
    if !syntax.is_empty() {
        for e in syntax {
            let msg = format!("TOML syntax: {}", e.message().trim().replace('\n', " "));
            ck.err(e.span().unwrap_or(0..0), msg);
        }
        return Err(ck.diags.sorted());
    }

    let mut fleet_sec = None;
    let mut defaults_sec = None;
    let mut node_secs = Vec::new();
    let doc_span = doc.span();
    for (key, value) in doc.into_inner() {
        match key.get_ref().as_ref() {
            "fleet" => fleet_sec = Some(value),
            "defaults" => defaults_sec = Some(value),
            "node" => match value.into_inner() {
                DeValue::Array(items) => node_secs = items.into_iter().collect(),
                _ => ck.err(key.span(), "`node` must be an array of tables: write each node as [[node]]"),
            },
            other => ck.err(key.span(), format!("unknown top-level key `{other}` (expected [fleet], [defaults] and [[node]] sections)")),
        }
    }

    let fleet_at = fleet_sec.as_ref().map(|v| ck.src.line_col(v.span().start)).map(|(line, col)| Pos { line, col }).unwrap_or_default();
    let fleet: Option<RawFleet> = match fleet_sec {
        Some(v) => ck.section(v, "[fleet]: "),
        None => {
            ck.err(doc_span.start..doc_span.start, "missing [fleet] section (add name, domain, contact, admin_ssh_keys, admin_prefixes)");
            None
        }
    };
    let defaults: RawDefaults = defaults_sec.and_then(|v| ck.section(v, "[defaults]: ")).unwrap_or_default();
    if node_secs.is_empty() {
        ck.err(doc_span.start..doc_span.start, "the fleet has no [[node]] sections: add at least one node");
    }

    if let Some(f) = &fleet {
        check_fleet(&mut ck, f);
    }
    let mut data = DataCache::new(dirs.clone());
    let mut data_diags = Diagnostics::default();
    let mut countries = Countries::Unloaded;
    let mut facts = RegistrationFacts { fleet_at, ..Default::default() };
    if let Some(f) = &fleet {
        facts.organisation = check_organisation(&mut ck, f);
        (facts.contact, facts.contact_name) = match f.registration_contact.as_ref().map(|c| c.get_ref()) {
            None => (f.contact.get_ref().clone(), None),
            Some(RawContact::Email(e)) => (e.clone(), None),
            Some(RawContact::Named { name, email }) => (email.get_ref().clone(), Some(name.get_ref().clone())),
        };
    }
    let default_facts = check_defaults_facts(&mut ck, &defaults, &dirs, &mut countries);

    let mut nodes = Vec::new();
    let mut names: HashMap<String, Range<usize>> = HashMap::new();
    let mut addresses: HashMap<IpAddr, (String, usize)> = HashMap::new();
    for (i, sec) in node_secs.into_iter().enumerate() {
        let hint = node_name_hint(&sec).unwrap_or_else(|| format!("#{}", i + 1));
        let Some(raw) = ck.section::<RawNode>(sec, &format!("node \"{hint}\": ")) else {
            continue;
        };
        let resolved = check_node(&mut ck, fleet.as_ref(), &defaults, &raw, &mut data, &mut data_diags);
        let name = raw.name.get_ref().clone();
        let node_facts = check_node_facts(&mut ck, &raw, &default_facts, &dirs, &mut countries);
        facts.nodes.entry(name.clone()).or_insert(node_facts);
        if let Some(first) = names.get(&name) {
            let (line, _) = ck.src.line_col(first.start);
            ck.node_err(&name, raw.name.span(), format!("name is used twice (first at line {line}): node names must be unique"));
        } else {
            names.insert(name.clone(), raw.name.span());
        }
        for addr in [&raw.ipv4, &raw.ipv6].into_iter().flatten() {
            let a = addr.get_ref();
            let Some(ip) = a.address.get_ref().split('/').next().and_then(|s| s.parse::<IpAddr>().ok()) else {
                continue;
            };
            match addresses.get(&ip) {
                Some((other, line)) => {
                    let msg = format!(
                        "address {ip} is already used by node \"{other}\" (line {line}): every address must be unique in the fleet"
                    );
                    ck.node_err(&name, a.address.span(), msg);
                }
                None => {
                    let line = ck.src.line_col(a.address.span().start).0;
                    addresses.insert(ip, (name.clone(), line));
                }
            }
        }
        nodes.extend(resolved);
    }

    if let Some(f) = &fleet {
        check_push_keys(&mut ck, f, &nodes);
    }
    let mut diags = ck.diags;
    diags.0.extend(data_diags.0);
    match fleet {
        Some(f) if diags.is_empty() => {
            Ok(Fleet { path: path.to_path_buf(), name: f.name.into_inner(), nodes, data_dir: dirs.primary, registration: facts })
        }
        _ => Err(diags.sorted()),
    }
}

/// Push keys only for projects some node hosts and whose upstream pushes (`push = true`).
fn check_push_keys(ck: &mut Checker<'_>, f: &RawFleet, nodes: &[NodeConfig]) {
    for (project, keys) in &f.push_keys {
        let profile = nodes.iter().flat_map(|n| &n.projects).find(|p| &p.name == project);
        match profile {
            None => ck.err(keys.span(), format!("[fleet] push_keys.{project}: no node hosts \"{project}\" (remove the entry or add the project to a node)")),
            Some(p) if !p.sync.push => ck.err(
                keys.span(),
                format!("[fleet] push_keys.{project}: the {project} profile has push = false: its upstream does not push, only the schedule syncs it"),
            ),
            Some(_) => {}
        }
    }
}

/// The `name` of a node section, for messages about a section that failed to deserialize.
fn node_name_hint(sec: &Spanned<DeValue<'_>>) -> Option<String> {
    let DeValue::Table(t) = sec.get_ref() else {
        return None;
    };
    t.iter().find(|(k, _)| k.get_ref().as_ref() == "name").and_then(|(_, v)| match v.get_ref() {
        DeValue::String(s) => Some(s.to_string()),
        _ => None,
    })
}

fn check_fleet(ck: &mut Checker<'_>, f: &RawFleet) {
    if f.name.get_ref().trim().is_empty() {
        ck.err(f.name.span(), "[fleet] name is empty: give the fleet a name");
    }
    if let Err(why) = check_domain(f.domain.get_ref()) {
        ck.err(f.domain.span(), format!("[fleet] domain \"{}\" is not a valid DNS name: {why}", f.domain.get_ref()));
    }
    let c = f.contact.get_ref();
    if !looks_like_email(c) {
        ck.err(f.contact.span(), format!("[fleet] contact \"{c}\" is not an e-mail address (write user@example.net)"));
    }
    if f.admin_ssh_keys.get_ref().is_empty() {
        ck.err(f.admin_ssh_keys.span(), "[fleet] admin_ssh_keys is empty: without a key nobody can log in to the nodes");
    }
    for key in f.admin_ssh_keys.get_ref() {
        if let Err(why) = check_ssh_key(key.get_ref()) {
            ck.err(key.span(), format!("[fleet] admin_ssh_keys: {why}"));
        }
    }
    for (project, keys) in &f.push_keys {
        for key in keys.get_ref() {
            if let Err(why) = check_ssh_key(key.get_ref()) {
                ck.err(key.span(), format!("[fleet] push_keys.{project}: {why}"));
            }
        }
    }
    if f.admin_prefixes.get_ref().is_empty() {
        ck.err(f.admin_prefixes.span(), "[fleet] admin_prefixes is empty: ssh and metrics would be reachable by nobody");
    }
    for p in f.admin_prefixes.get_ref() {
        match p.get_ref().parse::<IpNet>() {
            Ok(net) if net.trunc() != net => {
                ck.err(p.span(), format!("[fleet] admin_prefixes: {net} has host bits set (did you mean {}?)", net.trunc()))
            }
            Ok(_) => {}
            Err(_) => ck.err(
                p.span(),
                format!("[fleet] admin_prefixes: \"{}\" is not a prefix (write 192.0.2.0/24 or 2001:db8::/48)", p.get_ref()),
            ),
        }
    }
}

/// The country table, loaded when the first location needs it.
enum Countries {
    Unloaded,
    Loaded(BTreeMap<String, String>),
    Broken,
}

impl Countries {
    fn get(&mut self, ck: &mut Checker<'_>, dirs: &DataDirs) -> Option<&BTreeMap<String, String>> {
        if let Countries::Unloaded = self {
            let path = dirs.primary.join(COUNTRIES_FILE);
            *self = match load_countries(&path) {
                Ok(t) => Countries::Loaded(t),
                Err(d) => {
                    ck.diags.push(d);
                    Countries::Broken
                }
            };
        }
        match self {
            Countries::Loaded(t) => Some(t),
            _ => None,
        }
    }
}

fn check_organisation(ck: &mut Checker<'_>, f: &RawFleet) -> Option<Organisation> {
    match f.registration_contact.as_ref().map(|c| (c.get_ref(), c.span())) {
        Some((RawContact::Email(e), span)) if !looks_like_email(e) => {
            ck.err(span, format!("[fleet] registration_contact \"{e}\" is not an e-mail address (write user@example.net)"));
        }
        Some((RawContact::Named { name, email }, _)) => {
            if let Err(why) = check_text(name.get_ref()) {
                ck.err(name.span(), format!("[fleet] registration_contact.name {why}"));
            }
            if !looks_like_email(email.get_ref()) {
                ck.err(
                    email.span(),
                    format!("[fleet] registration_contact.email \"{}\" is not an e-mail address (write user@example.net)", email.get_ref()),
                );
            }
        }
        _ => {}
    }
    let org = f.organisation.as_ref()?.get_ref();
    let mut ok = true;
    if let Err(why) = check_text(org.name.get_ref()) {
        ck.err(org.name.span(), format!("[fleet] organisation.name {why}"));
        ok = false;
    }
    if let Err(why) = check_http_url(org.url.get_ref()) {
        ck.err(org.url.span(), format!("[fleet] organisation.url \"{}\" {why}", org.url.get_ref()));
        ok = false;
    }
    ok.then(|| Organisation { name: org.name.get_ref().clone(), url: org.url.get_ref().clone() })
}

/// `[defaults]` registration facts, validated once; nodes without their own inherit them.
fn check_defaults_facts(ck: &mut Checker<'_>, d: &RawDefaults, dirs: &DataDirs, countries: &mut Countries) -> NodeFacts {
    NodeFacts {
        location: d.location.as_ref().and_then(|l| check_location(ck, "[defaults] ", l.get_ref(), dirs, countries)),
        asn: d.asn.as_ref().and_then(|a| check_asn(ck, "[defaults] ", a)),
        port_mbps: d.port_mbps.as_ref().and_then(|p| check_port(ck, "[defaults] ", p)),
        at: Pos::default(),
    }
}

fn check_node_facts(ck: &mut Checker<'_>, raw: &RawNode, defaults: &NodeFacts, dirs: &DataDirs, countries: &mut Countries) -> NodeFacts {
    let ctx = format!("node \"{}\": ", raw.name.get_ref());
    let (line, col) = ck.src.line_col(raw.name.span().start);
    NodeFacts {
        location: match &raw.location {
            Some(l) => check_location(ck, &ctx, l.get_ref(), dirs, countries),
            None => defaults.location.clone(),
        },
        asn: match &raw.asn {
            Some(a) => check_asn(ck, &ctx, a),
            None => defaults.asn,
        },
        port_mbps: match &raw.port_mbps {
            Some(p) => check_port(ck, &ctx, p),
            None => defaults.port_mbps,
        },
        at: Pos { line, col },
    }
}

fn check_location(ck: &mut Checker<'_>, ctx: &str, l: &RawLocation, dirs: &DataDirs, countries: &mut Countries) -> Option<Location> {
    let before = ck.diags.len();
    let code = l.country.get_ref();
    let mut country_name = String::new();
    if let Some(table) = countries.get(ck, dirs) {
        match table.get(code.as_str()) {
            Some(n) => country_name = n.clone(),
            None => {
                let upper = code.to_ascii_uppercase();
                let hint = if upper == "UK" {
                    " (the United Kingdom's code is GB)".to_string()
                } else if table.contains_key(&upper) {
                    format!(" (write it in upper case: \"{upper}\")")
                } else {
                    format!(" (two letters such as NL, US, DE; the list is {COUNTRIES_FILE})")
                };
                ck.err(l.country.span(), format!("{ctx}location.country \"{code}\" is not an ISO 3166-1 alpha-2 country code{hint}"));
            }
        }
    }
    for (field, value) in [("state_province", &l.state_province), ("city", &l.city)] {
        if let Some(v) = value {
            if let Err(why) = check_text(v.get_ref()) {
                ck.err(v.span(), format!("{ctx}location.{field} {why}"));
            }
        }
    }
    for (field, value, limit) in [("latitude", &l.latitude, 90.0), ("longitude", &l.longitude, 180.0)] {
        if let Some(v) = value {
            let x = *v.get_ref();
            if !x.is_finite() || x.abs() > limit {
                ck.err(v.span(), format!("{ctx}location.{field} {x} is out of range (-{limit} to {limit} degrees, decimal)"));
            }
        }
    }
    match (&l.latitude, &l.longitude) {
        (Some(v), None) => ck.err(v.span(), format!("{ctx}location has a latitude but no longitude: give both or neither")),
        (None, Some(v)) => ck.err(v.span(), format!("{ctx}location has a longitude but no latitude: give both or neither")),
        _ => {}
    }
    (ck.diags.len() == before).then(|| Location {
        country: code.clone(),
        country_name,
        state_province: l.state_province.as_ref().map(|v| v.get_ref().clone()),
        city: l.city.as_ref().map(|v| v.get_ref().clone()),
        latitude: l.latitude.as_ref().map(|v| *v.get_ref()),
        longitude: l.longitude.as_ref().map(|v| *v.get_ref()),
    })
}

fn check_asn(ck: &mut Checker<'_>, ctx: &str, asn: &S<i64>) -> Option<u32> {
    let n = *asn.get_ref();
    match asn_problem(n) {
        Some(why) => {
            ck.err(asn.span(), format!("{ctx}asn {n} {why}"));
            None
        }
        None => u32::try_from(n).ok(),
    }
}

fn check_port(ck: &mut Checker<'_>, ctx: &str, port: &S<i64>) -> Option<u32> {
    let n = *port.get_ref();
    if (1..=400_000).contains(&n) {
        return u32::try_from(n).ok();
    }
    ck.err(port.span(), format!("{ctx}port_mbps {n} is not a port speed (Mbit/s, 1 to 400000: 1000 for 1 GbE, 10000 for 10 GbE)"));
    None
}

/// Validate one node and resolve it; returns None if anything is wrong with it.
fn check_node(
    ck: &mut Checker<'_>,
    fleet: Option<&RawFleet>,
    defaults: &RawDefaults,
    raw: &RawNode,
    data: &mut DataCache,
    data_diags: &mut Diagnostics,
) -> Option<NodeConfig> {
    let errors_before = ck.diags.len();
    let name = raw.name.get_ref().as_str();
    let name_span = raw.name.span();
    if let Err(why) = check_label(name) {
        ck.node_err(name, name_span.clone(), format!("name is not a valid DNS label: {why}"));
    }
    let fqdn = fleet.map(|f| format!("{name}.{}", f.domain.get_ref()));
    if let Some(fqdn) = &fqdn {
        if fqdn.len() > 253 {
            ck.node_err(name, name_span.clone(), format!("FQDN {fqdn} is longer than 253 characters"));
        }
    }
    let hardware = check_hardware(ck, defaults, raw, data, data_diags);
    let mut profiles = check_projects(ck, defaults, raw, data, data_diags);
    check_upstreams(ck, defaults, raw, &mut profiles);
    if let Some(hw) = &hardware {
        check_capacity(ck, raw, hw, &profiles);
    }
    check_sponsor(ck, raw);
    let ipv4 = raw.ipv4.as_ref().and_then(|a| check_ipv4(ck, name, a.get_ref()));
    let ipv6 = raw.ipv6.as_ref().and_then(|a| check_ipv6(ck, name, a.get_ref()));
    if raw.ipv4.is_none() && raw.ipv6.is_none() {
        ck.node_err(name, name_span.clone(), "has neither ipv4 nor ipv6: give it at least one static address");
    }
    let dns = check_dns(ck, defaults, raw);
    let interface_mac = check_interface(ck, raw);
    let wipe = check_wipe(ck, raw);
    let bwlimit = raw.sync_bwlimit_kbps.as_ref().or(defaults.sync_bwlimit_kbps.as_ref()).map(|b| *b.get_ref());

    if ck.diags.len() > errors_before {
        return None;
    }
    let (fleet, hardware, fqdn) = (fleet?, hardware?, fqdn?);
    let sponsor = raw.sponsor.get_ref();
    Some(NodeConfig {
        schema: SCHEMA_VERSION,
        fleet: fleet_info(fleet),
        node: Node {
            name: name.to_string(),
            fqdn,
            sponsor: Sponsor { name: sponsor.name.get_ref().clone(), url: sponsor.url.get_ref().clone() },
            ipv4,
            ipv6,
            dns,
            interface_mac,
            wipe_disk_serials: wipe,
            sync_bwlimit_kbps: bwlimit,
        },
        hardware,
        projects: profiles,
    })
}

/// The node's hardware model (its own or [defaults]'s), looked up in the data directories.
fn check_hardware(
    ck: &mut Checker<'_>,
    defaults: &RawDefaults,
    raw: &RawNode,
    data: &mut DataCache,
    data_diags: &mut Diagnostics,
) -> Option<mmconfig::Hardware> {
    let (name, name_span) = (raw.name.get_ref().as_str(), raw.name.span());
    match raw.hardware.as_ref().or(defaults.hardware.as_ref()) {
        None => {
            ck.node_err(name, name_span.clone(), "no hardware: set hardware = \"...\" on the node or in [defaults]");
            None
        }
        Some(hw) => match data.hardware(hw.get_ref(), data_diags) {
            Lookup::Found(h) => Some(h),
            Lookup::Broken => None,
            Lookup::Unknown => {
                let known = data.dirs.known("hardware").join(", ");
                ck.node_err(
                    name,
                    hw.span(),
                    format!("unknown hardware \"{}\" (known: {known}; or add hardware/{}.toml)", hw.get_ref(), hw.get_ref()),
                );
                None
            }
        },
    }
}

/// The node's projects (its own list or [defaults]'s), each profile looked up once.
fn check_projects(
    ck: &mut Checker<'_>,
    defaults: &RawDefaults,
    raw: &RawNode,
    data: &mut DataCache,
    data_diags: &mut Diagnostics,
) -> Vec<Profile> {
    let (name, name_span) = (raw.name.get_ref().as_str(), raw.name.span());
    let mut profiles: Vec<Profile> = Vec::new();
    match raw.projects.as_ref().or(defaults.projects.as_ref()) {
        None => ck.node_err(name, name_span.clone(), "no projects: set projects = [...] on the node or in [defaults]"),
        Some(list) if list.get_ref().is_empty() => {
            ck.node_err(name, list.span(), "projects is empty: a mirror node hosts at least one project")
        }
        Some(list) => {
            for p in list.get_ref() {
                if profiles.iter().any(|q| &q.name == p.get_ref()) {
                    ck.node_err(name, p.span(), format!("project \"{}\" is listed twice", p.get_ref()));
                    continue;
                }
                match data.profile(p.get_ref(), data_diags) {
                    Lookup::Found(prof) => profiles.push(prof),
                    Lookup::Broken => {}
                    Lookup::Unknown => {
                        let known = data.dirs.known("profiles").join(", ");
                        ck.node_err(
                            name,
                            p.span(),
                            format!("unknown project \"{}\" (known: {known}; or add profiles/{}.toml)", p.get_ref(), p.get_ref()),
                        );
                    }
                }
            }
        }
    }
    profiles
}

/// Upstream overrides (node entries win over [defaults]'s), applied to the profiles they name.
fn check_upstreams(ck: &mut Checker<'_>, defaults: &RawDefaults, raw: &RawNode, profiles: &mut [Profile]) {
    let name = raw.name.get_ref().as_str();
    let mut upstreams: BTreeMap<String, S<String>> = BTreeMap::new();
    for table in [&defaults.upstreams, &raw.upstreams].into_iter().flatten() {
        for (project, url) in table {
            upstreams.insert(project.get_ref().clone(), url.clone());
        }
    }
    for (project, url) in &upstreams {
        if !(url.get_ref().starts_with("rsync://") && url.get_ref().ends_with('/')) {
            ck.node_err(name, url.span(), format!("upstreams.{project} = \"{}\" must be an rsync:// URL ending in /", url.get_ref()));
        }
    }
    for (project, url) in raw.upstreams.iter().flatten() {
        if !profiles.iter().any(|p| p.name == *project.get_ref()) {
            ck.node_err(name, url.span(), format!("upstreams.{} overrides a project this node does not host", project.get_ref()));
        }
    }
    for p in profiles.iter_mut() {
        if let Some(url) = upstreams.get(&p.name) {
            p.sync.upstream = url.get_ref().clone();
        }
    }
}

/// The projects' sizes against what the hardware holds.
fn check_capacity(ck: &mut Checker<'_>, raw: &RawNode, hw: &mmconfig::Hardware, profiles: &[Profile]) {
    let (name, name_span) = (raw.name.get_ref().as_str(), raw.name.span());
    let need: u64 = profiles.iter().map(|p| p.size_gb).sum();
    if need > hw.data_capacity_gb {
        let span = raw.projects.as_ref().map_or(name_span.clone(), |p| p.span());
        let sizes = profiles.iter().map(|p| format!("{} {} GB", p.name, p.size_gb)).collect::<Vec<_>>().join(", ");
        ck.node_err(
            name,
            span,
            format!(
                "projects need {need} GB ({sizes}) but hardware \"{}\" holds {} GB: {} GB too much; drop a project or use larger hardware",
                hw.name,
                hw.data_capacity_gb,
                need - hw.data_capacity_gb
            ),
        );
    }
}

fn check_sponsor(ck: &mut Checker<'_>, raw: &RawNode) {
    let name = raw.name.get_ref().as_str();
    let sponsor = raw.sponsor.get_ref();
    let sponsor_name = sponsor.name.get_ref();
    if sponsor_name.trim().is_empty() {
        ck.node_err(name, sponsor.name.span(), "sponsor.name is empty");
    } else if sponsor_name.chars().any(char::is_control) {
        ck.node_err(name, sponsor.name.span(), "sponsor.name contains control characters (newlines, tabs): write it on one line");
    }
    if let Err(why) = check_http_url(sponsor.url.get_ref()) {
        ck.node_err(name, sponsor.url.span(), format!("sponsor.url \"{}\" {why}", sponsor.url.get_ref()));
    }
}

/// The resolvers (the node's own or [defaults]'s), each of a family the node has.
fn check_dns(ck: &mut Checker<'_>, defaults: &RawDefaults, raw: &RawNode) -> Vec<String> {
    let (name, name_span) = (raw.name.get_ref().as_str(), raw.name.span());
    let mut dns = Vec::new();
    match raw.dns.as_ref().or(defaults.dns.as_ref()) {
        None => ck.node_err(name, name_span.clone(), "no dns servers: set dns = [...] on the node or in [defaults]"),
        Some(list) if list.get_ref().is_empty() => ck.node_err(name, list.span(), "dns is empty: give at least one resolver"),
        Some(list) => {
            for server in list.get_ref() {
                match server.get_ref().parse::<IpAddr>() {
                    Err(_) => ck.node_err(name, server.span(), format!("dns server \"{}\" is not an IP address", server.get_ref())),
                    Ok(IpAddr::V4(_)) if raw.ipv4.is_none() => ck.node_err(
                        name,
                        server.span(),
                        format!("dns server {} is IPv4 but the node is IPv6-only: use an IPv6 resolver", server.get_ref()),
                    ),
                    Ok(IpAddr::V6(_)) if raw.ipv6.is_none() => ck.node_err(
                        name,
                        server.span(),
                        format!("dns server {} is IPv6 but the node has no IPv6: use an IPv4 resolver", server.get_ref()),
                    ),
                    Ok(ip) => dns.push(ip.to_string()),
                }
            }
        }
    }
    dns
}

/// The MAC address the node's port is pinned to, normalized.
fn check_interface(ck: &mut Checker<'_>, raw: &RawNode) -> Option<String> {
    let name = raw.name.get_ref().as_str();
    raw.interface.as_ref().and_then(|i| {
        let mac = i.get_ref().mac.get_ref();
        match normalize_mac(mac) {
            Some(m) => Some(m),
            None => {
                ck.node_err(
                    name,
                    i.get_ref().mac.span(),
                    format!("interface.mac \"{mac}\" is not a MAC address (write 52:54:00:12:34:56)"),
                );
                None
            }
        }
    })
}

fn check_wipe(ck: &mut Checker<'_>, raw: &RawNode) -> Vec<String> {
    let name = raw.name.get_ref().as_str();
    let mut wipe = Vec::new();
    for serial in &raw.wipe_disk_serials {
        if serial.get_ref().trim().is_empty() {
            ck.node_err(name, serial.span(), "wipe_disk_serials has an empty serial");
        } else {
            wipe.push(serial.get_ref().clone());
        }
    }
    wipe
}

fn fleet_info(f: &RawFleet) -> FleetInfo {
    FleetInfo {
        name: f.name.get_ref().clone(),
        domain: f.domain.get_ref().to_ascii_lowercase(),
        contact: f.contact.get_ref().clone(),
        admin_ssh_keys: f.admin_ssh_keys.get_ref().iter().map(|k| k.get_ref().trim().to_string()).collect(),
        admin_prefixes: f.admin_prefixes.get_ref().iter().map(|p| p.get_ref().clone()).collect(),
        https: f.https,
        push_keys: f
            .push_keys
            .iter()
            .map(|(project, keys)| (project.clone(), keys.get_ref().iter().map(|k| k.get_ref().trim().to_string()).collect()))
            .collect(),
    }
}

fn check_ipv4(ck: &mut Checker<'_>, node: &str, a: &RawAddr) -> Option<Ipv4Config> {
    let net = match a.address.get_ref().parse::<Ipv4Net>() {
        Ok(n) => n,
        Err(_) => {
            let msg = format!("ipv4.address \"{}\" is not an IPv4 address with prefix length (write 192.0.2.10/31)", a.address.get_ref());
            ck.node_err(node, a.address.span(), msg);
            return None;
        }
    };
    let gw = match a.gateway.get_ref().parse::<std::net::Ipv4Addr>() {
        Ok(g) => g,
        Err(_) => {
            ck.node_err(node, a.gateway.span(), format!("ipv4.gateway \"{}\" is not an IPv4 address", a.gateway.get_ref()));
            return None;
        }
    };
    let mut ok = true;
    // /31 (RFC 3021) and /32 have no network or broadcast address to avoid.
    if net.prefix_len() <= 30 && (net.addr() == net.network() || net.addr() == net.broadcast()) {
        let which = if net.addr() == net.network() { "network" } else { "broadcast" };
        ck.node_err(
            node,
            a.address.span(),
            format!("ipv4.address {} is the {which} address of {}: use a host address", net.addr(), net.trunc()),
        );
        ok = false;
    }
    if gw == net.addr() {
        ck.node_err(node, a.gateway.span(), format!("ipv4.gateway {gw} is the node's own address"));
        ok = false;
    } else if !net.contains(&gw) {
        ck.node_err(node, a.gateway.span(), format!("ipv4.gateway {gw} is not inside {net} (the gateway must be on the node's link)"));
        ok = false;
    }
    ok.then(|| Ipv4Config { address: net.to_string(), gateway: gw.to_string() })
}

fn check_ipv6(ck: &mut Checker<'_>, node: &str, a: &RawAddr) -> Option<Ipv6Config> {
    let net = match a.address.get_ref().parse::<Ipv6Net>() {
        Ok(n) => n,
        Err(_) => {
            let msg = format!("ipv6.address \"{}\" is not an IPv6 address with prefix length (write 2001:db8::2/64)", a.address.get_ref());
            ck.node_err(node, a.address.span(), msg);
            return None;
        }
    };
    let gw = match a.gateway.get_ref().parse::<std::net::Ipv6Addr>() {
        Ok(g) => g,
        Err(_) => {
            ck.node_err(node, a.gateway.span(), format!("ipv6.gateway \"{}\" is not an IPv6 address", a.gateway.get_ref()));
            return None;
        }
    };
    let mut ok = true;
    // A link-local gateway (fe80::/10) is valid on any link.
    let link_local = (gw.segments()[0] & 0xffc0) == 0xfe80;
    if gw == net.addr() {
        ck.node_err(node, a.gateway.span(), format!("ipv6.gateway {gw} is the node's own address"));
        ok = false;
    } else if !link_local && !net.contains(&gw) {
        ck.node_err(
            node,
            a.gateway.span(),
            format!("ipv6.gateway {gw} is not inside {net} (the gateway must be on the node's link, or link-local fe80::)"),
        );
        ok = false;
    }
    if net.prefix_len() < 127 && net.addr() == net.network() {
        ck.node_err(
            node,
            a.address.span(),
            format!("ipv6.address {} is the subnet-router anycast address of {}: use a host address", net.addr(), net.trunc()),
        );
        ok = false;
    }
    ok.then(|| Ipv6Config { address: net.to_string(), gateway: gw.to_string() })
}
