//! Fetch one small file from an upstream (rsync:// through the real rsync client, http:// directly).

use std::io::Read;
use std::process::Command;
use std::time::Duration;

use hostkit::net::{self, Authority};

/// Body of `url` (at most 1 MiB), or why it could not be fetched within `timeout`.
pub fn fetch(url: &str, timeout: Duration) -> Result<String, String> {
    if url.starts_with("rsync://") {
        fetch_rsync(url, timeout)
    } else if let Some(rest) = url.strip_prefix("http://") {
        fetch_http(rest, timeout)
    } else {
        Err(format!("{url}: only rsync:// and http:// upstreams are fetched"))
    }
}

fn fetch_http(rest: &str, timeout: Duration) -> Result<String, String> {
    let (hostport, path) = rest.split_once('/').map_or((rest, "/".to_string()), |(h, p)| (h, format!("/{p}")));
    let authority = Authority::parse(hostport).map_err(|e| e.to_string())?;
    let addr = authority
        .socket_addrs(80)
        .map_err(|e| format!("{hostport}: {e}"))?
        .into_iter()
        .next()
        .ok_or_else(|| format!("{hostport}: no address"))?;
    // The Host header is the authority itself, port included (RFC 9110 7.2).
    let r = net::http(addr, &authority.host_header(), "GET", &path, timeout).map_err(|e| e.to_string())?;
    if r.status != 200 {
        return Err(format!("HTTP {}", r.status));
    }
    Ok(String::from_utf8_lossy(&r.body).into_owned())
}

fn fetch_rsync(url: &str, timeout: Duration) -> Result<String, String> {
    let dir = tempfile::tempdir().map_err(|e| format!("a temporary directory: {e}"))?;
    let dest = dir.path().join("marker");
    let secs = timeout.as_secs().max(1).to_string();
    let mut cmd = Command::new("rsync");
    cmd.args(["--no-motd", "-q", "--max-size=1m", "--contimeout", &secs, "--timeout", &secs, "--"]).arg(url).arg(&dest);
    // rsync's own timeouts cover stalls after connecting; the deadline covers everything else.
    let out = hostkit::cmd::run_with_deadline(cmd, timeout + Duration::from_millis(500)).map_err(|e| e.to_string())?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let first = err.lines().find(|l| !l.trim().is_empty()).unwrap_or("").trim().to_string();
        return Err(format!("rsync exit {}: {first}", out.status.code().unwrap_or(-1)));
    }
    let mut body = Vec::new();
    std::fs::File::open(&dest)
        .and_then(|f| f.take(1 << 20).read_to_end(&mut body))
        .map_err(|e| format!("reading the fetched marker: {e}"))?;
    Ok(String::from_utf8_lossy(&body).into_owned())
}

#[cfg(test)]
mod authority_tests {
    use super::*;

    #[test]
    fn ipv6_literals_keep_their_brackets_and_a_missing_port_is_80() {
        for (authority, connect) in [
            ("[2001:db8::1]", "[2001:db8::1]:80"),
            ("[2001:db8::1]:8080", "[2001:db8::1]:8080"),
            ("mirror.example", "mirror.example:80"),
            ("mirror.example:8080", "mirror.example:8080"),
            ("192.0.2.1", "192.0.2.1:80"),
        ] {
            let a = Authority::parse(authority).unwrap();
            assert_eq!(format!("{}:{}", a.host_text(), a.port.unwrap_or(80)), connect, "{authority}");
        }
        let addr = Authority::parse("[2001:db8::1]").unwrap().socket_addrs(80).unwrap()[0];
        assert_eq!(addr.to_string(), "[2001:db8::1]:80");
    }

    #[test]
    fn the_host_header_is_the_whole_authority() {
        use std::io::Write;
        let Ok(listener) = std::net::TcpListener::bind("[::1]:0") else {
            eprintln!("SKIPPED: no IPv6 loopback");
            return;
        };
        let port = listener.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut request = Vec::new();
            let mut buf = [0u8; 1024];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = std::io::Read::read(&mut s, &mut buf).unwrap();
                request.extend_from_slice(&buf[..n]);
            }
            s.write_all(b"HTTP/1.0 200 OK\r\n\r\nmarker").unwrap();
            String::from_utf8(request).unwrap()
        });
        let body = fetch(&format!("http://[::1]:{port}/project/trace"), Duration::from_secs(5)).unwrap();
        assert_eq!(body, "marker");
        let request = server.join().unwrap();
        assert!(request.starts_with("GET /project/trace HTTP/1.0\r\n"), "{request}");
        assert!(request.contains(&format!("\r\nHost: [::1]:{port}\r\n")), "{request}");
    }
}
