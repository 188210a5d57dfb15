//! Ubuntu: one Launchpad mirror entry per node (archive or release content).

use anyhow::{Context, Result};
use mmconfig::{NodeConfig, Profile};
use serde::Serialize;

use super::formats::{bandwidth, facts, json, urls, Rendered, Templates};
use super::{Application, OutFile, Specs};
use crate::fleet::Fleet;

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

pub fn mirror(fleet: &Fleet, specs: &Specs, cfg: &NodeConfig, p: &Profile) -> LaunchpadMirror {
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

pub(super) fn render(t: &Templates, fleet: &Fleet, specs: &Specs, app: &Application<'_>) -> Result<Rendered> {
    let p = app.projects[0];
    let entries: Vec<LaunchpadMirror> = app.nodes.iter().map(|c| mirror(fleet, specs, c, p)).collect();
    let ctx = serde_json::json!({ "entries": entries, "url": p.registration.url, "project": p.name });
    let page = t.md.render("launchpad.md.hbs", &ctx).context("rendering launchpad.md.hbs")?;
    let files = vec![
        OutFile { path: format!("{}/launchpad.json", app.dir), contents: json(&entries)? },
        OutFile { path: format!("{}/launchpad.md", app.dir), contents: page.into_bytes() },
    ];
    Ok((files, ctx))
}

#[cfg(test)]
mod tests {
    use super::super::formats::{test_fleet, test_node};
    use super::*;

    #[test]
    fn content_follows_the_project_and_speed_the_port() {
        let (fleet, specs) = test_fleet(&test_node("a", 5, "\"ubuntu-releases\", \"ubuntu\"", "port_mbps = 10000"), "");
        let cfg = fleet.node("a").unwrap();
        let rel = mirror(&fleet, &specs, cfg, cfg.project("ubuntu-releases").unwrap());
        let arch = mirror(&fleet, &specs, cfg, cfg.project("ubuntu").unwrap());
        assert_eq!((rel.content.as_str(), arch.content.as_str()), ("Release", "Archive"));
        assert_eq!((rel.speed.as_str(), rel.country.as_str()), ("10 Gbit/s", "Netherlands"));
        assert_eq!(arch.http_base_url, "http://a.mm.example.net/ubuntu/");
        assert_eq!(arch.https_base_url, None);
        assert_eq!(arch.rsync_base_url, "rsync://a.mm.example.net/ubuntu/");
    }
}
