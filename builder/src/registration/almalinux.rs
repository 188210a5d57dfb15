//! AlmaLinux: one `mirrors.d/<fqdn>.yml` per node, all in one pull request; the field rules
//! their CI applies are checked before a file is written.

use anyhow::{bail, Context, Result};
use mmconfig::{NodeConfig, Profile};
use serde::Serialize;

use super::formats::{facts, update_frequency, urls, Rendered, Templates};
use super::{Application, OutFile};
use crate::inventory::fleet::Fleet;

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
    if m.name.is_empty() || crate::inventory::syntax::check_label(m.name.split('.').next().unwrap_or("")).is_err() || !m.name.contains('.')
    {
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

pub fn mirror(fleet: &Fleet, cfg: &NodeConfig, p: &Profile) -> AlmaMirror {
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

pub(super) fn render(t: &Templates, fleet: &Fleet, app: &Application<'_>) -> Result<Rendered> {
    let p = app.projects[0];
    let mut files = Vec::new();
    for c in &app.nodes {
        let m = mirror(fleet, c, p);
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
            // AlmaLinux/mirrors json_schemas/mirror_config/v1.json: name matches
            // ^(?!(http:\/\/|https:\/\/)).*(?<!(\/))$, address requires http or https (anyOf).
            (|m| m.name = "https://a.mm.example.net".into(), "has a scheme"),
            (|m| m.name = "a.mm.example.net/".into(), "no path or trailing slash"),
            (|m| m.http = None, "needs http or https"),
            // The rest: what AlmaLinux/mirrors ci/config_checker.py looks up (geolocation by
            // country, state, city) and how its mirrors.d files write the other fields.
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
}
