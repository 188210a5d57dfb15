//! One HTTP/1.0 request (HEAD or GET) per connection, its status and at most 1 MiB of body.

use std::net::SocketAddr;
use std::time::Duration;

use super::conn::{Conn, NetError};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpResponse {
    pub status: u16,
    pub body: Vec<u8>,
}

/// `method` (`GET` or `HEAD`) `path` from `addr` with `Host: host` (a whole authority, port and
/// IPv6 brackets included: [`super::Authority::host_header`]); the exchange ends within `timeout`.
pub fn http(addr: SocketAddr, host: &str, method: &str, path: &str, timeout: Duration) -> Result<HttpResponse, NetError> {
    let mut c = Conn::open(addr, timeout)?;
    let host: String = host.chars().filter(|c| c.is_ascii_graphic()).collect();
    let path: String = path.chars().filter(|c| c.is_ascii_graphic()).collect();
    c.write(format!("{method} {path} HTTP/1.0\r\nHost: {host}\r\nUser-Agent: micromirror\r\nConnection: close\r\n\r\n").as_bytes())?;
    let mut buf = Vec::new();
    // HEAD has no body: stop at the end of the headers instead of waiting for the close.
    let head_only = method == "HEAD";
    c.read_until(&mut buf, |b| head_only && b.windows(4).any(|w| w == b"\r\n\r\n"))?;
    parse_response(&buf)
}

pub(crate) fn parse_response(buf: &[u8]) -> Result<HttpResponse, NetError> {
    let first = buf.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(first).trim_end().to_string();
    let mut words = line.split(' ');
    let (Some(proto), Some(code)) = (words.next(), words.next()) else {
        return Err(NetError::Protocol("HTTP", line.chars().take(60).collect()));
    };
    let status = match (proto.starts_with("HTTP/1."), code.parse::<u16>()) {
        (true, Ok(c)) => c,
        _ => return Err(NetError::Protocol("HTTP", line.chars().take(60).collect())),
    };
    let body = match buf.windows(4).position(|w| w == b"\r\n\r\n") {
        Some(i) => buf[i + 4..].to_vec(),
        None => Vec::new(),
    };
    Ok(HttpResponse { status, body })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses() {
        let r = parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi").unwrap();
        assert_eq!((r.status, r.body.as_slice()), (200, &b"hi"[..]));
        assert_eq!(parse_response(b"HTTP/1.1 404 Not Found\r\n\r\n").unwrap().status, 404);
        assert!(matches!(parse_response(b"@RSYNCD: 31.0\n"), Err(NetError::Protocol(..))));
        assert!(matches!(parse_response(b""), Err(NetError::Protocol(..))));
    }
}
