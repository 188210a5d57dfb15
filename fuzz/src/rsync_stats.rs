//! `rsync --stats` output parsing: any text gives numbers, never a panic; a number rsync prints
//! with thousands separators reads back as itself.
use mm_sync::stages::parse_stats;

/// The property, on one input: a panic is a finding.
pub fn run(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    parse_stats(&text);
    if data.len() >= 8 {
        let n = u64::from_le_bytes(data[..8].try_into().unwrap());
        let mut grouped = String::new();
        for (i, c) in n.to_string().chars().enumerate() {
            if i > 0 && (n.to_string().len() - i) % 3 == 0 {
                grouped.push(',');
            }
            grouped.push(c);
        }
        let out = format!("{text}\nNumber of regular files transferred: {grouped}\n");
        // The first matching line wins: only assert when the fuzzed text has none.
        if !text.lines().any(|l| l.trim().starts_with("Number of regular files transferred:")) {
            assert_eq!(parse_stats(&out).files_transferred, n, "{out:?}");
        }
    }
}
