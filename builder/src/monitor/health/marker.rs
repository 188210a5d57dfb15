//! Upstream freshness markers for `mmbuild status`: the shared parsing (mmconfig) plus the table
//! loaded from the data directory (`overlays/monitoring/markers.toml`).

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result};

pub use mmconfig::marker::*;

/// Markers by project name.
pub fn load(data_dir: &Path) -> Result<BTreeMap<String, Marker>> {
    let path = data_dir.join("overlays/monitoring/markers.toml");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    parse_table(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_markers_load_and_name_real_profiles() {
        let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let m = load(&repo).unwrap();
        for name in m.keys() {
            assert!(repo.join("profiles").join(format!("{name}.toml")).is_file(), "{name} has no profile");
        }
        assert_eq!(m["archlinux"], Marker { kind: MarkerKind::Epoch, path: "lastsync".into() });
    }
}
