//! The index decoders (gzip, xz, zstd, plain) on any bytes: the first byte picks the format; the
//! output never exceeds the bound, and nothing panics.
use mm_sync::repocheck::decode_index;

const LIMIT: u64 = 1 << 20;

/// The property, on one input: a panic is a finding.
pub fn run(data: &[u8]) {
    let Some((&which, rest)) = data.split_first() else { return };
    let name = ["Packages", "Packages.gz", "Packages.xz", "Packages.zst"][usize::from(which) % 4];
    if let Ok(out) = decode_index(name, rest, LIMIT) {
        assert!(out.len() as u64 <= LIMIT);
    }
}
