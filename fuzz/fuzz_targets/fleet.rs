//! The fleet inventory, parsed and validated against the repository's profiles and hardware:
//! any text gives a fleet or diagnostics (with line:col inside the text), never a panic.
#![no_main]
use std::path::Path;

use libfuzzer_sys::fuzz_target;
use mmbuild::data::DataDirs;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let path = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/fleet.toml"));
    let Err(diags) = mmbuild::fleet::parse(path, text, DataDirs::for_fleet(path, None)) else { return };
    assert!(!diags.is_empty(), "a rejected fleet names at least one problem");
    let lines: Vec<&str> = text.split('\n').collect();
    for d in &diags.0 {
        assert!(!d.message.is_empty(), "{d}");
        if d.file != path.display().to_string() {
            // About a data file the fleet names (the repository's profiles and hardware).
            assert!(Path::new(&d.file).is_file(), "a diagnostic names a file that is not there: {d}");
            continue;
        }
        // Line and column (1-based, in characters) of a place in the text, its very end included.
        assert!(d.line >= 1 && d.line <= lines.len(), "line {} outside the text's {} lines: {d}", d.line, lines.len());
        let width = lines[d.line - 1].chars().count();
        assert!(d.col >= 1 && d.col <= width + 1, "column {} outside line {} ({width} characters): {d}", d.col, d.line);
        assert!(d.to_string().starts_with(&format!("{}:{}:{}: error: ", d.file, d.line, d.col)), "{d}");
    }
});
