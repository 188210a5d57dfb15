//! Test fixtures: the example fleet's resolved nodes (kept in sync by an mmbuild test).

use mmconfig::NodeConfig;

pub fn node(name: &str) -> NodeConfig {
    let nodes: Vec<NodeConfig> = serde_json::from_str(include_str!("../../tests/fixtures/example-nodes.json")).expect("fixture parses");
    nodes.into_iter().find(|n| n.node.name == name).unwrap_or_else(|| panic!("no example node {name}"))
}
