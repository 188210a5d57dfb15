//! Host plumbing shared by every crate: running commands, writing files atomically, derived ids.
//!
//! One home for each, so an error from `blkid` on the node reads like one from `mkfs.ext4` in the
//! builder, and no output anywhere is written in place.

pub mod apt;
pub mod atomic;
pub mod blkid;
pub mod cmd;
pub mod ids;
pub mod net;
#[cfg(any(test, feature = "testing"))]
pub mod netns;
pub mod pool;
pub mod sysfs;
#[cfg(any(test, feature = "testing"))]
pub mod testenv;

/// The EXIT STATUS paragraph of a binary's --help (and README): `EXIT STATUS: 0 success; 1 ...`.
pub fn exit_help<'a>(codes: impl IntoIterator<Item = (u8, &'a str)>) -> String {
    let list: Vec<String> = codes.into_iter().map(|(c, m)| format!("{c} {m}")).collect();
    format!("EXIT STATUS: {}.", list.join("; "))
}
