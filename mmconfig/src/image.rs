//! The image version: stamped by the builder into the node's os-release, read back on the node.
//!
//! `YYYYMMDD.HHMMSS-<12 hex>`: the UTC time of the newest file any installed package shipped
//! (Debian clamps a package's files to its changelog date, so a base with a newer package gets a
//! later time), then the start of the base's content hash. Same base, same version; as plain
//! strings, versions of different package sets sort older-first.

/// `IMAGE_ID=` of every node's os-release.
pub const IMAGE_ID: &str = "micromirror";

/// The version of a base whose newest package file dates from `newest_package_unix`.
pub fn version(newest_package_unix: u64, base_id: &str) -> String {
    let c = crate::marker::Civil::from_unix(newest_package_unix);
    let hash: String = base_id.chars().take(12).collect();
    format!("{:04}{:02}{:02}.{:02}{:02}{:02}-{hash}", c.year, c.month, c.day, c.hour, c.minute, c.second)
}

/// The lines appended to the image's os-release.
pub fn os_release_lines(version: &str) -> String {
    format!("IMAGE_ID={IMAGE_ID}\nIMAGE_VERSION={version}\n")
}

/// `IMAGE_VERSION` of an os-release text written by [`os_release_lines`]; `None` on a root that
/// is not one of our images, or a value that is not a version (the text may be anyone's).
pub fn from_os_release(text: &str) -> Option<String> {
    let field = |name: &str| text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix('=')).map(|v| v.trim().trim_matches('"'));
    if field("IMAGE_ID")? != IMAGE_ID {
        return None;
    }
    let v = field("IMAGE_VERSION")?;
    is_version(v).then(|| v.to_string())
}

/// Whether `v` can be an image version: short, lowercase letters, digits, `.` and `-` (it goes
/// into file names on the ESP and into commands).
pub fn is_version(v: &str) -> bool {
    !v.is_empty() && v.len() <= 64 && v.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || ".-".contains(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_name_the_newest_package_time_and_the_base_and_sort_by_time() {
        let id = "3f2a9c1e0b7d5a66aa";
        assert_eq!(version(0, id), "19700101.000000-3f2a9c1e0b7d");
        // 2026-11-04T02:45:42Z (an rsync build) and a leap day.
        assert_eq!(version(1_793_760_342, id), "20261104.024542-3f2a9c1e0b7d");
        assert_eq!(version(951_782_400 + 3661, id), "20000229.010101-3f2a9c1e0b7d");
        let older = version(1_793_760_342, "ffffffffffff");
        let newer = version(1_793_760_343, "000000000000");
        assert!(older < newer, "{older} {newer}");
        assert_ne!(version(5, "aaaaaaaaaaaa"), version(5, "aaaaaaaaaaab"));
    }

    #[test]
    fn os_release_round_trips_and_foreign_or_odd_values_are_not_versions() {
        let v = version(1_793_760_342, "3f2a9c1e0b7d");
        let text = format!("PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nID=debian\n{}", os_release_lines(&v));
        assert_eq!(from_os_release(&text).as_deref(), Some(v.as_str()));
        assert_eq!(from_os_release("ID=debian\nIMAGE_VERSION=1\n"), None);
        assert_eq!(from_os_release("IMAGE_ID=other\nIMAGE_VERSION=1\n"), None);
        assert_eq!(from_os_release("IMAGE_ID=micromirror\nIMAGE_VERSION=\"1 \x1b[31m\"\n"), None);
        assert_eq!(from_os_release("IMAGE_ID=\"micromirror\"\nIMAGE_VERSION=\"2\"\n").as_deref(), Some("2"));
    }
}
