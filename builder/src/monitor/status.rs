//! `mmbuild status FLEET`: load the fleet, probe it (against the fleet's build with `--out`),
//! print the table or `--json`, exit by health.

use std::io::IsTerminal;
use std::path::Path;

use anyhow::{Context, Result};

use crate::monitor::health::{self, marker, table, Options};
use mmconfig::NodeConfig;

use crate::exit::{self, Exit};
use crate::inventory::fleet;

/// Load the fleet and pick the nodes `--node` names (every node without one), checking that
/// each `--resolve` names a node of it.
pub fn select(fleet_path: &Path, data: Option<&Path>, nodes: &[String], opts: &Options) -> Result<(fleet::Fleet, Vec<NodeConfig>)> {
    let fleet = fleet::open(fleet_path, data)?;
    for r in &opts.resolve {
        if fleet.node(&r.node).is_none() {
            return exit::invalid(format!("--resolve {}:{}: no node {:?} in {}", r.node, r.port, r.node, fleet_path.display()));
        }
    }
    let mut selected = Vec::new();
    for name in nodes {
        match fleet.node(name) {
            Some(n) => selected.push(n.clone()),
            None => return exit::invalid(format!("--node {name}: no such node in {}", fleet_path.display())),
        }
    }
    if selected.is_empty() {
        selected = fleet.nodes.clone();
    }
    Ok((fleet, selected))
}

pub fn run(fleet_path: &Path, data: Option<&Path>, json: bool, nodes: &[String], opts: &Options, out: Option<&Path>) -> Result<Exit> {
    let (fleet, selected) = select(fleet_path, data, nodes, opts)?;
    let fleet_image = match out.map(crate::image::manifest::image_version).transpose() {
        Ok(v) => v,
        Err(e) => return exit::invalid(format!("--out: {e:#}")),
    };
    let markers = marker::load(&fleet.data_dir).context("loading the freshness markers")?;
    let report = health::probe_fleet(&fleet.name, &selected, &markers, opts, fleet_image.as_deref());
    if json {
        println!("{}", serde_json::to_string_pretty(&report).context("serializing the report")?);
    } else {
        print!("{}", table::render(&report, std::io::stdout().is_terminal()));
    }
    Ok(if report.healthy { Exit::Ok } else { Exit::NotReady })
}
