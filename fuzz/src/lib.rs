//! The fuzz targets' properties, one module each: libFuzzer runs them (fuzz_targets/, nightly), and `cargo test` replays every committed seed through them on stable (builder/tests/fuzz_seeds.rs).

pub mod apt_index;
pub mod decode_index;
pub mod escapers;
pub mod fleet;
pub mod node_toml;
pub mod rpm_index;
pub mod rsync_stats;

/// A target's property on one input.
pub type Property = fn(&[u8]);

/// Every target by its name (its `[[bin]]` in Cargo.toml and its seeds in fuzz/seeds/NAME).
pub const TARGETS: &[(&str, Property)] = &[
    ("apt_index", apt_index::run),
    ("decode_index", decode_index::run),
    ("escapers", escapers::run),
    ("fleet", fleet::run),
    ("node_toml", node_toml::run),
    ("rpm_index", rpm_index::run),
    ("rsync_stats", rsync_stats::run),
];
