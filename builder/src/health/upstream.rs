//! Fetch one small file from an upstream (rsync:// through the real rsync client, http:// directly).

use std::io::Read;
use std::net::ToSocketAddrs;
use std::process::{Command, Output, Stdio};
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
    let mut cmd = Command::new("rsync");
    cmd.args(["--no-motd", "-q", "--max-size=1m", "--contimeout", &secs, "--timeout", &secs, "--"]).arg(url).arg(&dest);
    // rsync's own timeouts cover stalls after connecting; the deadline covers everything else.
    let out = run_with_deadline(cmd, timeout + Duration::from_millis(500))?;
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

/// Run `cmd` (stdin closed, output captured); killed and an error once `timeout` has passed.
pub fn run_with_deadline(mut cmd: Command, timeout: Duration) -> Result<Output, String> {
    let program = cmd.get_program().to_string_lossy().into_owned();
    let mut child =
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().map_err(|e| format!("running {program}: {e}"))?;
    // Readers in threads: a chatty child must never block on a full pipe while we wait.
    let mut so = child.stdout.take();
    let mut se = child.stderr.take();
    let out = std::thread::spawn(move || {
        let mut b = Vec::new();
        if let Some(s) = so.as_mut() {
            let _ = s.take(4 << 20).read_to_end(&mut b);
        }
        b
    });
    let err = std::thread::spawn(move || {
        let mut b = Vec::new();
        if let Some(s) = se.as_mut() {
            let _ = s.take(1 << 20).read_to_end(&mut b);
        }
        b
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break st,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("no answer within {timeout:?}"));
            }
            Err(e) => return Err(format!("waiting for {program}: {e}")),
        }
    };
    Ok(Output { status, stdout: out.join().unwrap_or_default(), stderr: err.join().unwrap_or_default() })
}
