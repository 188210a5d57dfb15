//! A TCP connection whose connect, every read and every write end by one deadline, with a typed error.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// Cap on any answer read: markers, listings and repomd.xml are a few KiB.
pub(crate) const MAX_BODY: usize = 1 << 20;

/// Why a connection or an exchange failed, phrased for the operator.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NetError {
    #[error("connection refused")]
    Refused,
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("{0}")]
    Io(String),
    /// The peer answered, but not in the protocol asked for: (what was expected, what came).
    #[error("not {0}: {1:?}")]
    Protocol(&'static str, String),
}

impl NetError {
    /// The far end did not answer at all: later probes of the same address would wait as well.
    pub fn is_silent(&self) -> bool {
        matches!(self, NetError::Timeout(_))
    }
}

fn classify(e: io::Error, timeout: Duration) -> NetError {
    match e.kind() {
        io::ErrorKind::ConnectionRefused => NetError::Refused,
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => NetError::Timeout(timeout),
        _ => NetError::Io(e.to_string()),
    }
}

/// A connection whose every read and write ends by the deadline set when it was opened.
pub struct Conn {
    s: TcpStream,
    deadline: Instant,
    timeout: Duration,
}

impl Conn {
    /// Connect to `addr`; the connect and everything after it end within `timeout`.
    pub fn open(addr: SocketAddr, timeout: Duration) -> Result<Conn, NetError> {
        let deadline = Instant::now() + timeout;
        let s = TcpStream::connect_timeout(&addr, timeout).map_err(|e| classify(e, timeout))?;
        Ok(Conn { s, deadline, timeout })
    }

    fn left(&self) -> Result<Duration, NetError> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            Err(NetError::Timeout(self.timeout))
        } else {
            Ok(left)
        }
    }

    pub fn write(&mut self, b: &[u8]) -> Result<(), NetError> {
        let left = self.left()?;
        self.s.set_write_timeout(Some(left)).map_err(|e| classify(e, self.timeout))?;
        self.s.write_all(b).map_err(|e| classify(e, self.timeout))
    }

    /// Read into `buf` until EOF, `done(buf)` or 1 MiB.
    pub fn read_until(&mut self, buf: &mut Vec<u8>, done: impl Fn(&[u8]) -> bool) -> Result<(), NetError> {
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

/// The first line a server says on its own once connected (sshd's `SSH-2.0-...`, rsyncd's
/// `@RSYNCD: 31.0`), without its line end; the exchange ends within `timeout`.
pub fn greeting(addr: SocketAddr, timeout: Duration) -> Result<String, NetError> {
    let mut c = Conn::open(addr, timeout)?;
    let mut buf = Vec::new();
    c.read_until(&mut buf, |b| b.contains(&b'\n') || b.len() >= 255)?;
    let line = buf.split(|&b| b == b'\n').next().unwrap_or_default();
    Ok(String::from_utf8_lossy(line).trim_end().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closed_port_is_refused_and_silent_listener_times_out() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let t = Duration::from_millis(300);
        let start = Instant::now();
        assert_eq!(crate::net::rsync_list(addr, t), Err(NetError::Timeout(t)));
        assert_eq!(crate::net::http(addr, "x", "GET", "/", t), Err(NetError::Timeout(t)));
        assert!(start.elapsed() < Duration::from_secs(3));
        // A port bound but never listening: refused, and no parallel test can take it meanwhile
        // (a released port could be, which made this flaky).
        use nix::sys::socket::{bind, getsockname, socket, AddressFamily, SockFlag, SockType, SockaddrIn};
        use std::os::fd::AsRawFd;
        let closed = socket(AddressFamily::Inet, SockType::Stream, SockFlag::SOCK_CLOEXEC, None).unwrap();
        bind(closed.as_raw_fd(), &SockaddrIn::new(127, 0, 0, 1, 0)).unwrap();
        let port = getsockname::<SockaddrIn>(closed.as_raw_fd()).unwrap().port();
        assert_eq!(crate::net::rsync_list(SocketAddr::from(([127, 0, 0, 1], port)), t), Err(NetError::Refused));
        assert_eq!(greeting(SocketAddr::from(([127, 0, 0, 1], port)), t), Err(NetError::Refused));
        assert_eq!(greeting(addr, t), Err(NetError::Timeout(t)));
    }

    #[test]
    fn a_greeting_is_the_first_line() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            s.write_all(b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\nmore").unwrap();
            // Held open: the greeting must not wait for the close.
            std::thread::sleep(Duration::from_secs(2));
        });
        assert_eq!(greeting(addr, Duration::from_secs(1)).unwrap(), "SSH-2.0-OpenSSH_9.2p1 Debian-2");
        server.join().unwrap();
    }
}
