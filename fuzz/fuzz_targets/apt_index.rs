//! apt `Release` and `Packages` parsing: bounded entry counts, no panic on any text.
#![no_main]
use libfuzzer_sys::fuzz_target;
use mm_sync::repocheck::{packages_entries, release_sha256};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(e) = release_sha256(&text, 50) {
        assert!(e.len() <= 50);
        assert!(e.iter().all(|(h, _, p)| !h.contains(char::is_whitespace) && !p.contains(char::is_whitespace) && !p.is_empty()));
    }
    if let Ok(e) = packages_entries(&text, 50) {
        assert!(e.len() <= 50);
    }
});
