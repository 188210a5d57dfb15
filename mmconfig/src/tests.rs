use super::*;

#[test]
fn every_shipped_profile_and_hardware_parses() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for dir in ["profiles", "hardware"] {
        let mut seen = 0;
        for entry in std::fs::read_dir(root.join(dir)).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().and_then(|e| e.to_str()) != Some("toml") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            let stem = path.file_stem().unwrap().to_str().unwrap();
            let name = if dir == "profiles" {
                toml::from_str::<Profile>(&text).map(|p| p.name)
            } else {
                toml::from_str::<Hardware>(&text).map(|h| h.name)
            }
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert_eq!(name, stem, "{}: name must equal the file stem", path.display());
            seen += 1;
        }
        assert!(seen > 0, "no files in {dir}/");
    }
}

#[test]
fn unknown_keys_are_rejected() {
    let err = toml::from_str::<Sponsor>("name = \"a\"\nurl = \"b\"\ncolour = \"red\"\n").unwrap_err();
    assert!(err.to_string().contains("colour"), "{err}");
}

#[test]
fn schema_mismatch_is_a_clear_error() {
    let err = NodeConfig::from_toml("schema = 99\n", "node.toml").unwrap_err();
    assert!(err.to_string().contains("schema version 99"), "{err}");
}
