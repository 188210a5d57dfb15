//! apt `Release` and `Packages` parsing: bounded entry counts, no panic on any text.
use mm_sync::repocheck::{packages_entries, release_sha256};

/// The property, on one input: a panic is a finding.
pub fn run(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Ok(e) = release_sha256(&text, 50) {
        assert!(e.len() <= 50);
        assert!(e.iter().all(|(h, _, p)| !h.contains(char::is_whitespace) && !p.contains(char::is_whitespace) && !p.is_empty()));
    }
    if let Ok(e) = packages_entries(&text, 50) {
        assert!(e.len() <= 50);
    }
}
