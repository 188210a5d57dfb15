//! rpm `repomd.xml` (`data`) and `primary.xml` (`package`) parsing under small bounds: an
//! error or entries within the bounds, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use mm_sync::repocheck::{rpm_entries, Limits};

fuzz_target!(|data: &[u8]| {
    let limits = Limits { index_bytes: 1 << 20, top_bytes: 1 << 20, entries: 20, xml_depth: 8 };
    for element in [&b"data"[..], b"package"] {
        if let Ok(e) = rpm_entries(data, element, &limits) {
            assert!(e.len() <= limits.entries);
        }
    }
});
