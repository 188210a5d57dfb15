//! Network probes with hard timeouts: plain HTTP/1.0 requests and the rsync daemon greeting.
//!
//! Deliberately small: one connection per probe, no redirects, no keep-alive, bounded reads, so
//! a node that accepts and never answers costs exactly one timeout.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// Cap on any response we read: markers and repomd.xml are a few KiB.
const MAX_BODY: usize = 1 << 20;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpResponse {
    pub status: u16,
    pub body: Vec<u8>,
}

/// Why a probe failed, phrased for the operator.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProbeError {
    #[error("connection refused")]
    Refused,
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("{0}")]
    Io(String),
    #[error("not {0}: {1:?}")]
    Protocol(&'static str, String),
}

impl ProbeError {
    /// The far end did not answer at all: later probes of the same address would wait as well.
    pub fn is_silent(&self) -> bool {
        matches!(self, ProbeError::Timeout(_))
    }
}

fn classify(e: io::Error, timeout: Duration) -> ProbeError {
    match e.kind() {
        io::ErrorKind::ConnectionRefused => ProbeError::Refused,
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => ProbeError::Timeout(timeout),
        _ => ProbeError::Io(e.to_string()),
    }
}

/// A connection whose every read and write ends by `deadline`.
struct Conn {
    s: TcpStream,
    deadline: Instant,
    timeout: Duration,
}

impl Conn {
    fn open(addr: SocketAddr, timeout: Duration) -> Result<Conn, ProbeError> {
        let deadline = Instant::now() + timeout;
        let s = TcpStream::connect_timeout(&addr, timeout).map_err(|e| classify(e, timeout))?;
        Ok(Conn { s, deadline, timeout })
    }

    fn left(&self) -> Result<Duration, ProbeError> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            Err(ProbeError::Timeout(self.timeout))
        } else {
            Ok(left)
        }
    }

    fn write(&mut self, b: &[u8]) -> Result<(), ProbeError> {
        let left = self.left()?;
        self.s.set_write_timeout(Some(left)).map_err(|e| classify(e, self.timeout))?;
        self.s.write_all(b).map_err(|e| classify(e, self.timeout))
    }

    /// Read until EOF, `done(buffer)` or the cap.
    fn read_until(&mut self, buf: &mut Vec<u8>, done: impl Fn(&[u8]) -> bool) -> Result<(), ProbeError> {
        let mut chunk = [0u8; 16384];
        while !done(buf) && buf.len() < MAX_BODY {
            let left = self.left()?;
            self.s.set_read_timeout(Some(left)).map_err(|e| classify(e, self.timeout))?;
            match self.s.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(classify(e, self.timeout)),
            }
        }
        Ok(())
    }
}

/// `GET` (or `HEAD`) `path` from `addr` with `Host: host`; the whole exchange ends within `timeout`.
pub fn http(addr: SocketAddr, host: &str, method: &str, path: &str, timeout: Duration) -> Result<HttpResponse, ProbeError> {
    let mut c = Conn::open(addr, timeout)?;
    let host: String = host.chars().filter(|c| c.is_ascii_graphic()).collect();
    let path: String = path.chars().filter(|c| c.is_ascii_graphic()).collect();
    c.write(format!("{method} {path} HTTP/1.0\r\nHost: {host}\r\nUser-Agent: mmbuild-status\r\nConnection: close\r\n\r\n").as_bytes())?;
    let mut buf = Vec::new();
    // HEAD has no body: stop at the end of the headers instead of waiting for the close.
    let head_only = method == "HEAD";
    c.read_until(&mut buf, |b| head_only && b.windows(4).any(|w| w == b"\r\n\r\n"))?;
    parse_response(&buf)
}

fn parse_response(buf: &[u8]) -> Result<HttpResponse, ProbeError> {
    let first = buf.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(first).trim_end().to_string();
    let mut words = line.split(' ');
    let (Some(proto), Some(code)) = (words.next(), words.next()) else {
        return Err(ProbeError::Protocol("HTTP", line.chars().take(60).collect()));
    };
    let status = match (proto.starts_with("HTTP/1."), code.parse::<u16>()) {
        (true, Ok(c)) => c,
        _ => return Err(ProbeError::Protocol("HTTP", line.chars().take(60).collect())),
    };
    let body = match buf.windows(4).position(|w| w == b"\r\n\r\n") {
        Some(i) => buf[i + 4..].to_vec(),
        None => Vec::new(),
    };
    Ok(HttpResponse { status, body })
}

/// What an rsync daemon said: its greeting and the modules it lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RsyncListing {
    /// The protocol version from `@RSYNCD: <version>`.
    pub version: String,
    pub modules: Vec<String>,
}

/// Greet an rsync daemon and ask for its module list (what `rsync rsync://host/` does).
pub fn rsync_list(addr: SocketAddr, timeout: Duration) -> Result<RsyncListing, ProbeError> {
    let mut c = Conn::open(addr, timeout)?;
    let mut buf = Vec::new();
    c.read_until(&mut buf, |b| b.contains(&b'\n'))?;
    let greeting = String::from_utf8_lossy(buf.split(|&b| b == b'\n').next().unwrap_or_default()).trim_end().to_string();
    let Some(version) = greeting.strip_prefix("@RSYNCD: ").and_then(|v| v.split_whitespace().next()) else {
        return Err(ProbeError::Protocol("an rsync daemon", greeting.chars().take(60).collect()));
    };
    let version = version.to_string();
    // Our own greeting, then an empty module name: the daemon lists its modules and exits.
    c.write(b"@RSYNCD: 30.0\n\n")?;
    c.read_until(&mut buf, |b| b.windows(13).any(|w| w == b"@RSYNCD: EXIT"))?;
    let text = String::from_utf8_lossy(&buf).to_string();
    if let Some(err) = text.lines().find(|l| l.starts_with("@ERROR")) {
        return Err(ProbeError::Protocol("a module list", err.to_string()));
    }
    // Module lines are "name<spaces>\tcomment"; the motd (before them) has no tabs in ours.
    let modules = text
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once('\t'))
        .map(|(name, _)| name.trim())
        .filter(|n| !n.is_empty() && !n.contains(char::is_whitespace))
        .map(String::from)
        .collect();
    Ok(RsyncListing { version, modules })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses() {
        let r = parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi").unwrap();
        assert_eq!((r.status, r.body.as_slice()), (200, &b"hi"[..]));
        assert_eq!(parse_response(b"HTTP/1.1 404 Not Found\r\n\r\n").unwrap().status, 404);
        assert!(matches!(parse_response(b"@RSYNCD: 31.0\n"), Err(ProbeError::Protocol(..))));
        assert!(matches!(parse_response(b""), Err(ProbeError::Protocol(..))));
    }

    #[test]
    fn closed_port_is_refused_and_silent_listener_times_out() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let t = Duration::from_millis(300);
        let start = Instant::now();
        assert_eq!(rsync_list(addr, t), Err(ProbeError::Timeout(t)));
        assert_eq!(http(addr, "x", "GET", "/", t), Err(ProbeError::Timeout(t)));
        assert!(start.elapsed() < Duration::from_secs(3));
        // A port bound but never listening: refused, and no parallel test can take it meanwhile
        // (a released port could be, which made this flaky).
        use nix::sys::socket::{bind, getsockname, socket, AddressFamily, SockFlag, SockType, SockaddrIn};
        use std::os::fd::AsRawFd;
        let closed = socket(AddressFamily::Inet, SockType::Stream, SockFlag::SOCK_CLOEXEC, None).unwrap();
        bind(closed.as_raw_fd(), &SockaddrIn::new(127, 0, 0, 1, 0)).unwrap();
        let port = getsockname::<SockaddrIn>(closed.as_raw_fd()).unwrap().port();
        assert_eq!(rsync_list(SocketAddr::from(([127, 0, 0, 1], port)), t), Err(ProbeError::Refused));
    }
}
