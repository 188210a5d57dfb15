//! The fleet inventory, parsed and validated against the repository's profiles and hardware:
//! any text gives a fleet or diagnostics (with line:col inside the text), never a panic.
use std::path::Path;

use mmbuild::inventory::data::DataDirs;
use mmbuild::inventory::diag::Diagnostic;

/// The property, on one input: a panic is a finding.
pub fn run(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let path = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/fleet.toml"));
    let Err(diags) = mmbuild::inventory::fleet::parse(path, text, DataDirs::for_fleet(path, None)) else { return };
    assert!(!diags.is_empty(), "a rejected fleet names at least one problem");
    for d in &diags.0 {
        assert!(!d.message.is_empty(), "{d}");
        if d.file == path.display().to_string() {
            assert!(d.line >= 1, "no position in the fleet: {d}");
            inside(text, d);
        } else {
            // About a data file the fleet names (the repository's profiles and hardware): a
            // position, where it has one, is inside that file.
            let other =
                std::fs::read_to_string(&d.file).unwrap_or_else(|e| panic!("a diagnostic names a file that cannot be read ({e}): {d}"));
            if d.line > 0 {
                inside(&other, d);
            }
        }
    }
}

/// Line and column (1-based, in characters) of a place in `text`, its very end included, shown as FILE:LINE:COL.
fn inside(text: &str, d: &Diagnostic) {
    let lines: Vec<&str> = text.split('\n').collect();
    assert!(d.line <= lines.len(), "line {} outside the text's {} lines: {d}", d.line, lines.len());
    let width = lines[d.line - 1].chars().count();
    assert!(d.col >= 1 && d.col <= width + 1, "column {} outside line {} ({width} characters): {d}", d.col, d.line);
    assert!(d.to_string().starts_with(&format!("{}:{}:{}: error: ", d.file, d.line, d.col)), "{d}");
}
