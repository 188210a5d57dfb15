//! `node.toml` (mmconfig): any text parses or gives an error; a parsed config serializes and
//! parses back to itself (what mmbuild writes, the node reads).
use mmconfig::NodeConfig;

/// The property, on one input: a panic is a finding.
pub fn run(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(cfg) = NodeConfig::from_toml(text, "node.toml") {
        let again = NodeConfig::from_toml(&cfg.to_toml(), "node.toml").expect("our own serialization parses");
        assert_eq!(cfg, again, "node.toml round trip");
    }
}
