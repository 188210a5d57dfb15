//! The rsync daemon's greeting and module list, spoken directly (what `rsync rsync://host/` does).

use std::net::SocketAddr;
use std::time::Duration;

use super::conn::{Conn, NetError};

/// What an rsync daemon said: its greeting and the modules it lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RsyncListing {
    /// The protocol version from `@RSYNCD: <version>`.
    pub version: String,
    pub modules: Vec<String>,
}

/// Greet an rsync daemon and ask for its module list; the exchange ends within `timeout`.
pub fn rsync_list(addr: SocketAddr, timeout: Duration) -> Result<RsyncListing, NetError> {
    let mut c = Conn::open(addr, timeout)?;
    let mut buf = Vec::new();
    c.read_until(&mut buf, |b| b.contains(&b'\n'))?;
    let greeting = String::from_utf8_lossy(buf.split(|&b| b == b'\n').next().unwrap_or_default()).trim_end().to_string();
    let Some(version) = greeting.strip_prefix("@RSYNCD: ").and_then(|v| v.split_whitespace().next()) else {
        return Err(NetError::Protocol("an rsync daemon", greeting.chars().take(60).collect()));
    };
    let version = version.to_string();
    // Our own greeting, then an empty module name: the daemon lists its modules and exits.
    c.write(b"@RSYNCD: 30.0\n\n")?;
    c.read_until(&mut buf, |b| b.windows(13).any(|w| w == b"@RSYNCD: EXIT"))?;
    let text = String::from_utf8_lossy(&buf).to_string();
    if let Some(err) = text.lines().find(|l| l.starts_with("@ERROR")) {
        return Err(NetError::Protocol("a module list", err.to_string()));
    }
    Ok(RsyncListing { version, modules: parse_module_lines(text.lines().skip(1)) })
}

/// Module names from a daemon's listing: lines `name<spaces>\tcomment`; the motd before them
/// carries no tab in ours, and a name never holds white space.
pub fn parse_module_lines<'a>(lines: impl Iterator<Item = &'a str>) -> Vec<String> {
    lines
        .filter_map(|l| l.split_once('\t'))
        .map(|(name, _)| name.trim())
        .filter(|n| !n.is_empty() && !n.contains(char::is_whitespace))
        .map(String::from)
        .collect()
}
