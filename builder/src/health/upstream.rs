//! Fetch one small file from an upstream (rsync:// through the real rsync client, http:// directly).

use std::io::Read;
use std::net::ToSocketAddrs;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

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
    let with_port = if hostport.rsplit_once(':').is_some_and(|(_, p)| p.parse::<u16>().is_ok()) && !hostport.ends_with(']') {
        hostport.to_string()
    } else {
        format!("{hostport}:80")
    };
    let addr =
        with_port.to_socket_addrs().map_err(|e| format!("{hostport}: {e}"))?.next().ok_or_else(|| format!("{hostport}: no address"))?;
    let host = hostport.rsplit_once(':').map_or(hostport, |(h, _)| h);
    let r = super::probe::http(addr, host, "GET", &path, timeout).map_err(|e| e.to_string())?;
    if r.status != 200 {
        return Err(format!("HTTP {}", r.status));
    }
    Ok(String::from_utf8_lossy(&r.body).into_owned())
}

fn fetch_rsync(url: &str, timeout: Duration) -> Result<String, String> {
    let dir = tempfile::tempdir().map_err(|e| format!("a temporary directory: {e}"))?;
    let dest = dir.path().join("marker");
    let secs = timeout.as_secs().max(1).to_string();
    let mut child = Command::new("rsync")
        .args(["--no-motd", "-q", "--max-size=1m", "--contimeout", &secs, "--timeout", &secs, "--"])
        .arg(url)
        .arg(&dest)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("running rsync: {e}"))?;
    // rsync's own timeouts cover stalls after connecting; this covers everything else.
    let deadline = Instant::now() + timeout + Duration::from_millis(500);
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break st,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("no answer within {timeout:?}"));
            }
            Err(e) => return Err(format!("waiting for rsync: {e}")),
        }
    };
    if !status.success() {
        let mut err = String::new();
        if let Some(mut e) = child.stderr.take() {
            let _ = e.read_to_string(&mut err);
        }
        let first = err.lines().find(|l| !l.trim().is_empty()).unwrap_or("").trim().to_string();
        return Err(format!("rsync exit {}: {first}", status.code().unwrap_or(-1)));
    }
    let mut body = Vec::new();
    std::fs::File::open(&dest)
        .and_then(|f| f.take(1 << 20).read_to_end(&mut body))
        .map_err(|e| format!("reading the fetched marker: {e}"))?;
    Ok(String::from_utf8_lossy(&body).into_owned())
}
