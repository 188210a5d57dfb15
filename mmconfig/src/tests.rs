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

#[test]
fn the_required_profiles_exist_and_are_coherent() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../profiles");
    let required = [
        "ubuntu-releases", "ubuntu", "debian", "fedora", "epel", "archlinux", "manjaro", "almalinux", "rocky",
        "alpine", "opensuse", "videolan", "gimp", "tdf", "kde", "kali-images", "rpmfusion", "fdroid",
    ];
    for name in required {
        let path = root.join(format!("{name}.toml"));
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let p: Profile = toml::from_str(&text).unwrap();
        assert!(p.sync.upstream.starts_with("rsync://") && p.sync.upstream.ends_with('/'), "{name}: upstream");
        assert!(p.http_path.starts_with('/') && p.http_path.ends_with('/'), "{name}: http_path");
        assert_eq!(p.sync.method == SyncMethod::TwoStage, !p.sync.index_patterns.is_empty(), "{name}: index patterns iff two-stage");
        assert!(p.sync.min_interval_minutes <= p.sync.every_hours * 60, "{name}: schedule faster than upstream allows");
        assert!(p.sync.every_hours * 60 <= p.sync.max_interval_minutes, "{name}: schedule slower than upstream requires");
        assert!(p.size_gb > 0 && p.sync.timeout_seconds > 0, "{name}");
    }
}
