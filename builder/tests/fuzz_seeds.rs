//! The fuzz targets in every `cargo test`, on stable: each target's property (fuzz/src/) compiles
//! here and every committed seed (fuzz/seeds/TARGET) passes it. libFuzzer and its sanitizers need
//! nightly and a 36-minute build (scripts/fuzz); a target that stops compiling or a seed that
//! fails its property is caught here instead, in seconds.

mod common;

#[path = "../../fuzz/src/lib.rs"]
mod mm_fuzz;

use std::collections::BTreeSet;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Instant;

use common::repo;

#[test]
fn every_fuzz_target_passes_its_committed_seeds() {
    let fuzz = repo().join("fuzz");
    let targets: BTreeSet<&str> = mm_fuzz::TARGETS.iter().map(|(name, _)| *name).collect();
    // The replay covers what cargo-fuzz builds, each entry runs the property replayed here, and
    // every seed directory belongs to a target.
    let manifest: toml::Table = std::fs::read_to_string(fuzz.join("Cargo.toml")).unwrap().parse().unwrap();
    let bins: BTreeSet<&str> = manifest["bin"].as_array().unwrap().iter().map(|b| b["name"].as_str().unwrap()).collect();
    assert_eq!(bins, targets, "fuzz/Cargo.toml's [[bin]] targets against mm_fuzz::TARGETS");
    for t in &targets {
        let entry = std::fs::read_to_string(fuzz.join(format!("fuzz_targets/{t}.rs"))).unwrap();
        assert!(entry.contains(&format!("mm_fuzz::{t}::run(data)")), "fuzz_targets/{t}.rs does not run mm_fuzz::{t}::run");
    }
    let seed_dirs: BTreeSet<String> =
        std::fs::read_dir(fuzz.join("seeds")).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert_eq!(seed_dirs.iter().map(String::as_str).collect::<BTreeSet<_>>(), targets, "fuzz/seeds/* against the targets");

    let started = Instant::now();
    let mut failures = Vec::new();
    let mut replayed = 0;
    for (name, run) in mm_fuzz::TARGETS {
        let mut seeds: Vec<_> = std::fs::read_dir(fuzz.join("seeds").join(name)).unwrap().map(|e| e.unwrap().path()).collect();
        seeds.sort();
        assert!(!seeds.is_empty(), "fuzz/seeds/{name} holds no seed");
        for seed in seeds {
            let data = std::fs::read(&seed).unwrap();
            replayed += 1;
            if let Err(panic) = catch_unwind(AssertUnwindSafe(|| run(&data))) {
                let why = panic.downcast_ref::<String>().cloned().or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()));
                failures.push(format!("{name} {}: {}", seed.display(), why.unwrap_or_default()));
            }
        }
    }
    eprintln!("fuzz seeds: {replayed} replayed through {} targets in {:.2} s", targets.len(), started.elapsed().as_secs_f64());
    assert!(failures.is_empty(), "seeds that fail their target's property:\n{}", failures.join("\n"));
}
