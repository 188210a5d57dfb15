//! Ubuntu: one Launchpad mirror entry per node (archive or CD image content), in the terms of
//! Launchpad's own vocabularies.

use anyhow::{Context, Result};
use mmconfig::{NodeConfig, Profile};
use serde::Serialize;

use super::formats::{bandwidth, facts, json, urls, Rendered, Templates};
use super::{Application, OutFile, Specs};
use crate::inventory::fleet::Fleet;

/// The titles of Launchpad's `MirrorContent` (launchpad, lib/lp/registry/interfaces/distributionmirror.py).
pub const CONTENTS: [&str; 2] = ["Archive", "CD Image"];

/// Launchpad's `MirrorSpeed`: each title with its link speed in kbit/s (same file).
pub const SPEEDS: [(u64, &str); 15] = [
    (128, "128 Kbps"),
    (256, "256 Kbps"),
    (512, "512 Kbps"),
    (1_000, "1 Mbps"),
    (2_000, "2 Mbps"),
    (10_000, "10 Mbps"),
    (45_000, "45 Mbps"),
    (100_000, "100 Mbps"),
    (1_000_000, "1 Gbps"),
    (2_000_000, "2 Gbps"),
    (4_000_000, "4 Gbps"),
    (10_000_000, "10 Gbps"),
    (20_000_000, "20 Gbps"),
    (50_000_000, "50 Gbps"),
    (100_000_000, "100 Gbps"),
];

/// The fastest `MirrorSpeed` title the port reaches: a mirror never claims more than its link.
pub fn speed(port_mbps: u32) -> &'static str {
    let kbps = u64::from(port_mbps) * 1000;
    SPEEDS.iter().rev().find(|(k, _)| *k <= kbps).map_or(SPEEDS[0].1, |(_, t)| t)
}

/// One `DistributionMirror` as Launchpad's "Register a new mirror" form asks for it; the field
/// names are the interface's.
#[derive(Debug, Clone, Serialize)]
pub struct LaunchpadMirror {
    /// "Name": short and unique across Launchpad, `[a-z0-9][a-z0-9+.-]+`.
    pub name: String,
    /// "Organisation": the name of the organisation hosting the mirror.
    pub display_name: String,
    pub description: String,
    pub http_base_url: String,
    pub https_base_url: Option<String>,
    pub rsync_base_url: String,
    /// "Link Speed": a `MirrorSpeed` title.
    pub speed: String,
    /// "Location".
    pub country: String,
    /// A `MirrorContent` title.
    pub content: String,
    pub official_candidate: bool,
}

pub fn mirror(fleet: &Fleet, specs: &Specs, cfg: &NodeConfig, p: &Profile) -> LaunchpadMirror {
    let f = facts(fleet, cfg);
    let u = urls(cfg, p);
    let content = specs.get(&p.name).content.clone().unwrap_or_else(|| CONTENTS[0].into());
    LaunchpadMirror {
        // One node may carry both Ubuntu entries (archive and CD images): the project keeps the names apart.
        name: format!("{}-{}", cfg.node.fqdn.to_ascii_lowercase(), p.name),
        display_name: cfg.node.sponsor.name.clone(),
        description: format!(
            "Micro Mirror node of {} hosted by {}, {} uplink",
            fleet.registration.organisation.as_ref().map_or(fleet.name.as_str(), |o| o.name.as_str()),
            cfg.node.sponsor.name,
            f.port_mbps.map(bandwidth).unwrap_or_default()
        ),
        http_base_url: u.http,
        https_base_url: u.https,
        rsync_base_url: u.rsync,
        speed: f.port_mbps.map(speed).unwrap_or_default().to_string(),
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
    fn content_follows_the_project_and_speed_rounds_the_port_down_to_a_title() {
        let (fleet, specs) = test_fleet(&test_node("a", 5, "\"ubuntu-releases\", \"ubuntu\"", "port_mbps = 10000"), "");
        let cfg = fleet.node("a").unwrap();
        let rel = mirror(&fleet, &specs, cfg, cfg.project("ubuntu-releases").unwrap());
        let arch = mirror(&fleet, &specs, cfg, cfg.project("ubuntu").unwrap());
        assert_eq!((rel.content.as_str(), arch.content.as_str()), ("CD Image", "Archive"));
        assert_eq!((rel.name.as_str(), arch.name.as_str()), ("a.mm.example.net-ubuntu-releases", "a.mm.example.net-ubuntu"));
        assert_eq!((rel.display_name.as_str(), rel.speed.as_str(), rel.country.as_str()), ("S", "10 Gbps", "Netherlands"));
        assert_eq!(arch.http_base_url, "http://a.mm.example.net/ubuntu/");
        assert_eq!(arch.https_base_url, None);
        assert_eq!(arch.rsync_base_url, "rsync://a.mm.example.net/ubuntu/");
        for (mbps, title) in [
            (1, "1 Mbps"),
            (100, "100 Mbps"),
            (999, "100 Mbps"),
            (1000, "1 Gbps"),
            (2500, "2 Gbps"),
            (25_000, "20 Gbps"),
            (400_000, "100 Gbps"),
        ] {
            assert_eq!(speed(mbps), title, "{mbps} Mbit/s");
        }
    }
}
