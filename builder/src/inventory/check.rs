//! `mmbuild check`: validate a fleet inventory and print every error.

use std::path::Path;

use anyhow::{Context, Result};

use crate::exit::{Exit, Invalid};
use crate::inventory::fleet;

/// Validate `fleet_path`; print every error on stderr (one per line) or a summary on stdout.
/// With `node_toml`, print that node's `node.toml` (what MMCONFIG and OEMDRV carry) instead.
pub fn run(fleet_path: &Path, data: Option<&Path>, json: bool, node_toml: Option<&str>) -> Result<Exit> {
    match fleet::load(fleet_path, data) {
        Err(diags) => {
            let n = diags.len();
            let text = format!("{diags}{}: {n} error{} found\n", fleet_path.display(), if n == 1 { "" } else { "s" });
            Err(Invalid::diagnostics(text).into())
        }
        Ok(fleet) if node_toml.is_some() => {
            let name = node_toml.unwrap_or_default();
            match fleet.node(name) {
                Some(cfg) => {
                    print!("{}", cfg.to_toml());
                    Ok(Exit::Ok)
                }
                None => {
                    let known: Vec<&str> = fleet.nodes.iter().map(|c| c.node.name.as_str()).collect();
                    let text = format!("{}: error: --node-toml {name}: no such node (nodes: {})\n", fleet_path.display(), known.join(", "));
                    Err(Invalid::diagnostics(text).into())
                }
            }
        }
        Ok(fleet) if json => {
            let out = serde_json::to_string_pretty(&fleet.nodes).context("serializing the resolved nodes")?;
            println!("{out}");
            Ok(Exit::Ok)
        }
        Ok(fleet) => {
            println!("{}: fleet \"{}\" is valid: {} node(s)", fleet_path.display(), fleet.name, fleet.nodes.len());
            for n in &fleet.nodes {
                let used: u64 = n.projects.iter().map(|p| p.size_gb).sum();
                let projects: Vec<&str> = n.projects.iter().map(|p| p.name.as_str()).collect();
                let addrs: Vec<&str> = [n.node.ipv4.as_ref().map(|a| a.address.as_str()), n.node.ipv6.as_ref().map(|a| a.address.as_str())]
                    .into_iter()
                    .flatten()
                    .collect();
                println!(
                    "  {:<28} {:<9} {:<40} {:>5}/{} GB  {}",
                    n.node.fqdn,
                    n.hardware.name,
                    addrs.join(" "),
                    used,
                    n.hardware.data_capacity_gb,
                    projects.join(",")
                );
            }
            Ok(Exit::Ok)
        }
    }
}
