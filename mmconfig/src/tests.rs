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
    for name in REQUIRED_PROFILES {
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

fn shipped_profiles() -> std::collections::BTreeMap<String, Profile> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../profiles");
    let mut out = std::collections::BTreeMap::new();
    for entry in std::fs::read_dir(&root).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) == Some("toml") {
            let text = std::fs::read_to_string(&path).unwrap();
            let p: Profile = toml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            out.insert(p.name.clone(), p);
        }
    }
    out
}

const REQUIRED_PROFILES: [&str; 18] = [
    "ubuntu-releases",
    "ubuntu",
    "debian",
    "fedora",
    "epel",
    "archlinux",
    "manjaro",
    "almalinux",
    "rocky",
    "alpine",
    "opensuse",
    "videolan",
    "gimp",
    "tdf",
    "kde",
    "kali-images",
    "rpmfusion",
    "fdroid",
];

#[test]
fn profiles_follow_the_shape_and_each_projects_mirroring_rules() {
    let all = shipped_profiles();
    let missing: Vec<_> = REQUIRED_PROFILES.iter().filter(|n| !all.contains_key(**n)).collect();
    assert!(missing.is_empty(), "missing profiles: {missing:?}");

    for (name, p) in &all {
        let s = &p.sync;
        assert!(s.upstream.starts_with("rsync://") && s.upstream.ends_with('/'), "{name}: upstream {}", s.upstream);
        assert!(p.http_path.starts_with('/') && p.http_path.ends_with('/'), "{name}: http_path {}", p.http_path);
        assert_eq!(p.http_path, format!("/{name}/"), "{name}: http_path");
        assert_eq!((p.rsync_module.as_str(), p.directory.as_str()), (name.as_str(), name.as_str()), "{name}");
        assert!(s.rsync_flags.iter().all(|f| f.starts_with('-')), "{name}: rsync_flags must be options only");
        assert!(s.every_hours >= 1, "{name}: every_hours");
        if s.method == SyncMethod::TwoStage {
            assert!(!s.index_patterns.is_empty(), "{name}: two-stage needs index_patterns");
            // An index pattern that is also excluded would never be fetched, not even in stage 2.
            for pat in &s.index_patterns {
                assert!(!s.excludes.contains(pat), "{name}: {pat} is both an index and an exclude");
            }
        }
        if s.check == CheckKind::Apt {
            assert_eq!(s.method, SyncMethod::TwoStage, "{name}: apt archives need two stages");
            assert_eq!(p.freshness.trace_dir, "project/trace", "{name}: apt mirror checkers read project/trace");
            for idx in ["Packages*", "Sources*", "Release*", "InRelease"] {
                assert!(s.index_patterns.iter().any(|x| x == idx), "{name}: {idx} must wait for stage 2");
            }
        }
        // No profile writes a timestamp the project also ships: that would make a stale mirror look fresh.
        assert_eq!(p.freshness.timestamp_file, None, "{name}: timestamp_file");
    }

    let debian = &all["debian"].sync;
    let host = debian.upstream.trim_start_matches("rsync://").split('/').next().unwrap();
    assert!(
        host != "deb.debian.org" && !(host.starts_with("ftp.") && host.ends_with(".debian.org")) && host != "httpredir.debian.org",
        "Debian forbids round-robin upstreams: {host}"
    );
    assert!(debian.push, "Debian mirrors are push-triggered");
    for name in ["fedora", "epel"] {
        let p = &all[name];
        assert!(!p.sync.upstream.contains("dl.fedoraproject.org"), "{name}: dl.fedoraproject.org is for tier 1");
        assert!(p.sync.delete_excluded && p.sync.excludes.iter().any(|e| e == "debug/"), "{name}: trims debug");
    }
    let arch = &all["archlinux"].sync;
    assert_eq!(arch.rsync_flags, ["-rlptH", "--safe-links", "--delete-delay", "--delay-updates"]);
    assert!(arch.min_interval_minutes >= 60 && arch.max_interval_minutes <= 24 * 60 && arch.every_hours <= 24);
    let rocky = &all["rocky"].sync;
    assert!((3..=6).contains(&(24 / rocky.every_hours)), "Rocky asks for about six syncs a day");
}

#[test]
fn a_wasp_node_holds_ubuntu_releases_epel_archlinux_and_two_small_projects() {
    let all = shipped_profiles();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../hardware/wasp.toml");
    let wasp: Hardware = toml::from_str(&std::fs::read_to_string(root).unwrap()).unwrap();
    let set = ["ubuntu-releases", "epel", "archlinux", "gimp", "fdroid"];
    let total: u64 = set.iter().map(|n| all[*n].size_gb).sum();
    // 25 % headroom for growth and rsync's temporary copies during a release.
    assert!(total * 4 <= wasp.data_capacity_gb * 3, "{set:?} need {total} GB, wasp has {}", wasp.data_capacity_gb);
}
