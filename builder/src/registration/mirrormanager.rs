//! MirrorManager (Fedora, EPEL, Rocky, RPM Fusion): one site, one host per node, categories and
//! one URL per protocol per category, as a JSON checklist and a printable page.

use anyhow::{Context, Result};
use serde::Serialize;

use super::formats::{facts, json, urls, Rendered, Templates};
use super::{Application, OutFile, Specs};
use crate::fleet::Fleet;

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
    pub always_up2date: bool,
    pub urls: Vec<String>,
}

pub fn mirrormanager_checklist(fleet: &Fleet, specs: &Specs, app: &Application<'_>) -> MmChecklist {
    let org = fleet.registration.organisation.clone().unwrap_or(crate::fleet::Organisation { name: String::new(), url: String::new() });
    let hosts = app
        .nodes
        .iter()
        .map(|c| {
            let f = facts(fleet, c);
            let mut categories = Vec::new();
            for p in app.projects.iter().filter(|p| c.project(&p.name).is_some()) {
                let u = urls(c, p);
                for cat in &specs.get(&p.name).categories {
                    let mut list = vec![format!("{}{}", u.http, cat.path)];
                    if let Some(h) = &u.https {
                        list.push(format!("{h}{}", cat.path));
                    }
                    list.push(format!("{}{}", u.rsync, cat.path));
                    categories.push(MmCategory { project: p.name.clone(), category: cat.name.clone(), always_up2date: true, urls: list });
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
    let list = mirrormanager_checklist(fleet, specs, app);
    let page = t.md.render("mirrormanager.md.hbs", &list).context("rendering mirrormanager.md.hbs")?;
    let files = vec![
        OutFile { path: format!("{}/checklist.json", app.dir), contents: json(&list)? },
        OutFile { path: format!("{}/checklist.md", app.dir), contents: page.into_bytes() },
    ];
    Ok((files, serde_json::to_value(&list)?))
}
