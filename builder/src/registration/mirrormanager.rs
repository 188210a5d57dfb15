//! MirrorManager (Fedora, EPEL, Rocky, RPM Fusion): one site, one host per node, categories and
//! one URL per protocol per category, as a JSON checklist and a printable page.

use anyhow::{Context, Result};
use serde::Serialize;

use super::formats::{facts, json, urls, Rendered, Templates};
use super::{Application, OutFile, Specs};
use crate::inventory::fleet::Fleet;

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
    pub urls: Vec<String>,
}

pub fn checklist(fleet: &Fleet, specs: &Specs, app: &Application<'_>) -> MmChecklist {
    let org = fleet
        .registration
        .organisation
        .clone()
        .unwrap_or(crate::inventory::fleet::Organisation { name: String::new(), url: String::new() });
    let hosts = app
        .nodes
        .iter()
        .map(|c| {
            let f = facts(fleet, c);
            let mut categories = Vec::new();
            for p in app.projects.iter().filter(|p| app.covers(c, &p.name)) {
                let u = urls(c, p);
                for cat in &specs.get(&p.name).categories {
                    let mut list = vec![format!("{}{}", u.http, cat.path)];
                    if let Some(h) = &u.https {
                        list.push(format!("{h}{}", cat.path));
                    }
                    list.push(format!("{}{}", u.rsync, cat.path));
                    categories.push(MmCategory { project: p.name.clone(), category: cat.name.clone(), urls: list });
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

pub(super) fn render(t: &Templates, fleet: &Fleet, specs: &Specs, app: &Application<'_>) -> Result<Rendered> {
    let list = checklist(fleet, specs, app);
    let page = t.md.render("mirrormanager.md.hbs", &list).context("rendering mirrormanager.md.hbs")?;
    let files = vec![
        OutFile { path: format!("{}/checklist.json", app.dir), contents: json(&list)? },
        OutFile { path: format!("{}/checklist.md", app.dir), contents: page.into_bytes() },
    ];
    Ok((files, serde_json::to_value(&list)?))
}

#[cfg(test)]
mod tests {
    use super::super::formats::{test_fleet, test_node};
    use super::super::{plan, Selection};
    use super::*;

    #[test]
    fn one_site_one_host_per_node_and_a_url_per_protocol_per_category() {
        let nodes = test_node("a", 5, "\"rpmfusion\"", "asn = 3320") + &test_node("b", 6, "\"rpmfusion\"", "");
        let (fleet, specs) = test_fleet(&nodes, "https = true");
        let apps = plan(&fleet, &specs, &Selection::default()).unwrap();
        let list = checklist(&fleet, &specs, &apps[0]);
        assert_eq!(list.site.name, "T");
        assert_eq!(list.hosts.iter().map(|h| h.name.as_str()).collect::<Vec<_>>(), ["a.mm.example.net", "b.mm.example.net"]);
        let a = &list.hosts[0];
        assert_eq!((a.asn, a.asn_clients, a.bandwidth_int, a.country.as_str()), (Some(3320), true, 2500, "NL"));
        assert_eq!((list.hosts[1].asn, list.hosts[1].asn_clients), (None, false));
        assert_eq!(a.categories.len(), 4);
        assert_eq!(a.categories[1].category, "RPMFUSION free EL");
        assert_eq!(
            a.categories[1].urls,
            [
                "http://a.mm.example.net/rpmfusion/free/el/",
                "https://a.mm.example.net/rpmfusion/free/el/",
                "rsync://a.mm.example.net/rpmfusion/free/el/"
            ]
        );
    }
}
