//! rpm `repomd.xml` (`data`) and `primary.xml` (`package`) parsing under small bounds: an
//! error or entries within the bounds, never a panic.
use mm_sync::repocheck::{rpm_entries, Limits};

/// The property, on one input: a panic is a finding.
pub fn run(data: &[u8]) {
    let limits = Limits { index_bytes: 1 << 20, top_bytes: 1 << 20, entries: 20, xml_depth: 8 };
    for element in [&b"data"[..], b"package"] {
        if let Ok(e) = rpm_entries(data, element, &limits) {
            assert!(e.len() <= limits.entries);
        }
    }
}
