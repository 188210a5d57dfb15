//! Debian: the submission form's fields and a `Mirrors.masterlist` stanza per node.

use anyhow::{Context, Result};
use mmconfig::{NodeConfig, Profile};
use serde::Serialize;

use super::formats::{facts, json, node_view, Rendered, Templates};
use super::{Application, OutFile, Specs};
use crate::inventory::fleet::Fleet;

#[derive(Debug, Clone, Serialize)]
pub struct DebianSite {
    /// The registered site name; mm-sync's trace project/trace/<fqdn> carries the same name.
    pub site: String,
    /// "NL Netherlands", the name as Debian's masterlist spells it.
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
    pub maintainer_name: String,
    pub maintainer_email: String,
    pub push: bool,
}

/// The architectures a trimmed Debian profile carries: the release architectures whose
/// `binary-<arch>/` the profile does not exclude.
pub fn carried_architectures(specs: &Specs, p: &Profile) -> Vec<String> {
    specs.get(&p.name).architectures.iter().filter(|a| !p.sync.excludes.contains(&format!("binary-{a}/"))).cloned().collect()
}

pub fn site(fleet: &Fleet, specs: &Specs, cfg: &NodeConfig, p: &Profile) -> DebianSite {
    let f = facts(fleet, cfg);
    let loc = f.location.as_ref();
    let v = node_view(cfg, &f);
    let host = p.sync.upstream.trim_start_matches("rsync://").split(['/', ':']).next().unwrap_or_default().to_string();
    DebianSite {
        site: cfg.node.fqdn.clone(),
        country: loc
            .map(|l| format!("{} {}", l.country, specs.get(&p.name).country_names.get(&l.country).unwrap_or(&l.country_name)))
            .unwrap_or_default(),
        location: [v.city.as_deref(), v.state_province.as_deref()].into_iter().flatten().collect::<Vec<_>>().join(", "),
        archive_architectures: carried_architectures(specs, p),
        archive_http: p.http_path.clone(),
        archive_https: cfg.fleet.https.then(|| p.http_path.clone()),
        archive_rsync: format!("{}/", p.rsync_module),
        upstream: host,
        trace_file: format!("{}/{}", p.freshness.trace_dir.trim_matches('/'), cfg.node.fqdn),
        sponsor_name: cfg.node.sponsor.name.clone(),
        sponsor_url: cfg.node.sponsor.url.clone(),
        maintainer_name: fleet.registration.contact_name.clone().unwrap_or_default(),
        maintainer_email: fleet.registration.contact.clone(),
        push: p.sync.push,
    }
}

pub(super) fn render(t: &Templates, fleet: &Fleet, specs: &Specs, app: &Application<'_>) -> Result<Rendered> {
    let p = app.projects[0];
    let sites: Vec<DebianSite> = app.nodes.iter().map(|c| site(fleet, specs, c, p)).collect();
    let mut masterlist = String::new();
    for s in &sites {
        if !masterlist.is_empty() {
            masterlist.push('\n');
        }
        let ctx = serde_json::json!({
            "s": s,
            "archs": s.archive_architectures.join(" "),
            "sponsor": format!("{} {}", s.sponsor_name, s.sponsor_url),
            "maintainer": format!("{} <{}>", s.maintainer_name, s.maintainer_email),
        });
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

#[cfg(test)]
mod tests {
    use super::super::formats::{test_fleet, test_node};
    use super::*;

    #[test]
    fn site_name_is_the_trace_name_and_architectures_follow_the_excludes() {
        let (fleet, specs) =
            test_fleet(&test_node("a", 5, "\"debian\"", ""), "registration_contact = { name = \"Mx Admin\", email = \"adm@example.net\" }");
        let cfg = fleet.node("a").unwrap();
        let mut p = cfg.project("debian").unwrap().clone();
        let s = site(&fleet, &specs, cfg, &p);
        assert_eq!(s.site, "a.mm.example.net");
        assert_eq!(s.trace_file, "project/trace/a.mm.example.net");
        assert_eq!((s.country.as_str(), s.location.as_str()), ("NL Netherlands", "Utrecht, Utrecht"));
        assert_eq!(s.archive_architectures, ["amd64", "arm64", "i386"]);
        assert_eq!((s.maintainer_name.as_str(), s.maintainer_email.as_str()), ("Mx Admin", "adm@example.net"));
        p.sync.excludes.retain(|e| e != "binary-riscv64/");
        p.sync.excludes.push("binary-i386/".into());
        assert_eq!(carried_architectures(&specs, &p), ["amd64", "arm64", "riscv64"]);
    }

    #[test]
    fn countries_carry_the_names_debians_masterlist_uses() {
        for (code, want) in [("MD", "MD Moldova"), ("TR", "TR Turkey"), ("TW", "TW Taiwan"), ("VN", "VN Vietnam"), ("NL", "NL Netherlands")]
        {
            let node = test_node("a", 5, "\"debian\"", &format!("location = {{ country = \"{code}\", city = \"C\" }}"));
            let (fleet, specs) = test_fleet(&node, "");
            let cfg = fleet.node("a").unwrap();
            assert_eq!(site(&fleet, &specs, cfg, cfg.project("debian").unwrap()).country, want);
        }
    }
}
