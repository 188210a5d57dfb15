//! The fleet inventory, parsed and validated against the repository's profiles and hardware:
//! any text gives a fleet or diagnostics (with line:col inside the text), never a panic.
#![no_main]
use std::path::Path;

use libfuzzer_sys::fuzz_target;
use mmbuild::data::DataDirs;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let path = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/fleet.toml"));
    match mmbuild::fleet::parse(path, text, DataDirs::for_fleet(path, None)) {
        Ok(_) => {}
        Err(d) => {
            assert!(!d.is_empty(), "a rejected fleet names at least one problem");
            let shown = d.to_string();
            assert!(!shown.is_empty());
        }
    }
});
