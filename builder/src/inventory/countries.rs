//! The country table registrations name countries by (`overlays/registration/countries.tsv`).

use std::collections::BTreeMap;
use std::path::Path;

use crate::inventory::diag::Diagnostic;

/// The ISO 3166-1 alpha-2 table, relative to the data directory.
pub const COUNTRIES_FILE: &str = "overlays/registration/countries.tsv";

/// `CODE<TAB>Name` lines; `#` comments.
pub fn load_countries(path: &Path) -> Result<BTreeMap<String, String>, Diagnostic> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Diagnostic::at_file(path, format!("cannot read the country table: {e} (reinstall mmbuild's data)")))?;
    let mut table = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        match line.split_once('\t') {
            Some((code, name)) if code.len() == 2 && code.bytes().all(|b| b.is_ascii_uppercase()) && !name.trim().is_empty() => {
                table.insert(code.to_string(), name.trim().to_string());
            }
            _ => {
                return Err(Diagnostic {
                    file: path.display().to_string(),
                    line: i + 1,
                    col: 1,
                    message: "expected an upper-case ISO 3166-1 alpha-2 code, a tab and the country's name".into(),
                })
            }
        }
    }
    Ok(table)
}
