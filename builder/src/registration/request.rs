//! Every other project: the fields its process asks for, and a text to send or paste.

use anyhow::{Context, Result};
use mmconfig::{NodeConfig, Profile};
use serde::Serialize;

use super::formats::{facts, json, node_view, urls, Rendered, Templates};
use super::{Application, OutFile, Specs};
use crate::inventory::fleet::Fleet;

#[derive(Debug, Clone, Serialize)]
pub struct Field {
    pub key: String,
    pub label: String,
    pub value: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct RequestNode {
    pub node: String,
    pub fields: Vec<Field>,
}

pub fn fields(fleet: &Fleet, specs: &Specs, cfg: &NodeConfig, p: &Profile) -> Vec<Field> {
    let f = facts(fleet, cfg);
    let v = node_view(cfg, &f);
    let u = urls(cfg, p);
    let spec = specs.get(&p.name);
    spec.fields
        .iter()
        .filter_map(|key| {
            let value = match key.as_str() {
                "name" => Some(v.fqdn.clone()),
                "sponsor" => Some(format!("{} ({})", v.sponsor, v.sponsor_url)),
                "location" => v.location.clone(),
                "country" => v.country.as_ref().map(|c| format!("{} ({c})", v.country_name.clone().unwrap_or_default())),
                "coordinates" => v.latitude.zip(v.longitude).map(|(a, b)| format!("{a}, {b}")),
                "bandwidth" => v.bandwidth.clone(),
                "http" => Some(u.http.clone()),
                "https" => u.https.clone(),
                "rsync" => Some(u.rsync.clone()),
                "upstream" => Some(p.sync.upstream.clone()),
                "contact" => Some(fleet.registration.contact.clone()),
                "alternate_contact" => (cfg.fleet.contact != fleet.registration.contact).then(|| cfg.fleet.contact.clone()),
                "addresses" => Some(v.addresses.join(", ")),
                "asn" => v.asn.map(|a| format!("AS{a}")),
                "update_frequency" => Some(format!("every {} hours", p.sync.every_hours)),
                _ => None,
            }?;
            Some(Field { key: key.clone(), label: specs.labels.get(key).cloned().unwrap_or_else(|| key.clone()), value })
        })
        .collect()
}

pub(super) fn render(t: &Templates, fleet: &Fleet, specs: &Specs, app: &Application<'_>) -> Result<Rendered> {
    let p = app.projects[0];
    let spec = specs.get(&p.name);
    let nodes: Vec<RequestNode> =
        app.nodes.iter().map(|c| RequestNode { node: c.node.fqdn.clone(), fields: fields(fleet, specs, c, p) }).collect();
    let org = fleet.registration.organisation.as_ref();
    let ctx = serde_json::json!({
        "project": p.name,
        "description": p.description,
        "method": p.registration.method,
        "url": p.registration.url,
        "notes": p.registration.notes,
        "per_node": spec.per_node,
        "organisation": org.map(|o| &o.name),
        "organisation_url": org.map(|o| &o.url),
        "fleet": fleet.name,
        "contact": fleet.registration.contact,
        "nodes": nodes,
    });
    let text = t.md.render("request.md.hbs", &ctx).context("rendering request.md.hbs")?;
    let doc = serde_json::json!({
        "project": p.name,
        "method": p.registration.method,
        "url": p.registration.url,
        "one_request_per_node": spec.per_node,
        "nodes": nodes,
    });
    let files = vec![
        OutFile { path: format!("{}/request.json", app.dir), contents: json(&doc)? },
        OutFile { path: format!("{}/request.md", app.dir), contents: text.into_bytes() },
    ];
    Ok((files, ctx))
}

#[cfg(test)]
mod tests {
    use super::super::formats::{test_fleet, test_node};
    use super::*;

    fn keys(fields: &[Field]) -> Vec<&str> {
        fields.iter().map(|f| f.key.as_str()).collect()
    }

    #[test]
    fn fields_come_in_the_projects_order_and_absent_facts_are_left_out() {
        let (fleet, specs) = test_fleet(
            &test_node("a", 5, "\"archlinux\", \"opensuse\"", "location = { country = \"NL\", latitude = 52.1, longitude = 5.1 }"),
            "",
        );
        let cfg = fleet.node("a").unwrap();
        let arch = fields(&fleet, &specs, cfg, cfg.project("archlinux").unwrap());
        // No https (the fleet serves none), no alternate contact (it would repeat the contact).
        assert_eq!(keys(&arch), ["name", "country", "http", "rsync", "bandwidth", "upstream", "contact", "sponsor"]);
        assert_eq!(arch[1].value, "Netherlands (NL)");
        assert_eq!(arch[4].value, "2.5 Gbit/s");
        let suse = fields(&fleet, &specs, cfg, cfg.project("opensuse").unwrap());
        let coords = suse.iter().find(|f| f.key == "coordinates").unwrap();
        assert_eq!((coords.label.as_str(), coords.value.as_str()), ("Latitude, longitude", "52.1, 5.1"));
        assert_eq!(suse.iter().find(|f| f.key == "location").unwrap().value, "Netherlands");

        let (fleet, specs) =
            test_fleet(&test_node("a", 5, "\"archlinux\"", ""), "registration_contact = \"reg@example.net\"\nhttps = true");
        let cfg = fleet.node("a").unwrap();
        let arch = fields(&fleet, &specs, cfg, cfg.project("archlinux").unwrap());
        let get = |k: &str| arch.iter().find(|f| f.key == k).map(|f| f.value.as_str());
        assert_eq!((get("contact"), get("alternate_contact")), (Some("reg@example.net"), Some("mirror@example.net")));
        assert_eq!(get("https"), Some("https://a.mm.example.net/archlinux/"));
    }
}
