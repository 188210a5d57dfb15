//! Deterministic identifiers: hex digests and UUIDs derived from names, so a rebuild gives the
//! same GPT GUIDs, filesystem UUIDs and hash seeds.

use sha2::{Digest, Sha256};

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// An RFC 4122 (version 4 layout) UUID string derived from `id` and `role`.
pub fn uuid_from(id: &str, role: &str) -> String {
    let d = Sha256::digest(format!("{id}\0{role}").as_bytes());
    let mut b = [0u8; 16];
    b.copy_from_slice(&d[..16]);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex(&b);
    format!("{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_uuids_are_stable_and_well_formed() {
        let a = uuid_from("abc", "root-fs");
        assert_eq!(a, uuid_from("abc", "root-fs"));
        assert_ne!(a, uuid_from("abc", "esp"));
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "4", "version nibble");
        assert!(matches!(&a[19..20], "8" | "9" | "a" | "b"), "variant bits: {a}");
    }

    #[test]
    fn hex_is_lower_case_and_padded() {
        assert_eq!(hex(&[0, 0x0f, 0xab]), "000fab");
    }
}
