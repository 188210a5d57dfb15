//! The one TLS check: a server's leaf certificate for a name (expiry, verification) and HTTPS GETs, through the real `openssl s_client`.
//!
//! Why the openssl tool and not curl or a crate: no TLS crate is in Cargo.lock, and curl cannot
//! report the expiry of a certificate it refuses (its `-k` drops the name check too), while
//! `s_client` reports the expiry and the verify result for the name in one handshake, against
//! the system's trust store or a given CA file. The TCP connection is opened first through
//! [`Conn`], so "refused" and "no answer" are typed [`NetError`]s, not words read from openssl.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use super::conn::{Conn, NetError};
use super::http::{parse_response, HttpResponse};
use crate::cmd::{run_with_deadline_input, DeadlineError};

/// What the handshake showed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TlsSeen {
    /// The leaf certificate's notAfter, UNIX seconds.
    pub not_after_unix: u64,
    /// Whether the chain verifies for the name, against the trust store (or the CA file given).
    pub verify: Verify,
}

/// OpenSSL's verify result: `0 (ok)`, `62 (hostname mismatch)`, `18 (self-signed certificate)`...
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verify {
    /// None when openssl printed no verify result.
    pub code: Option<u32>,
    pub text: String,
}

impl Verify {
    pub fn ok(&self) -> bool {
        self.code == Some(0)
    }
}

impl std::fmt::Display for Verify {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.code {
            Some(c) => write!(f, "{c} ({})", self.text),
            None => f.write_str(&self.text),
        }
    }
}

// `mmbuild status --json` has always shown the verify result as openssl prints it.
impl serde::Serialize for Verify {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

fn s_client(addr: SocketAddr, name: &str, cacert: Option<&Path>) -> Command {
    let mut cmd = Command::new("openssl");
    cmd.args(["s_client", "-connect", &addr.to_string(), "-servername", name, "-verify_hostname", name]);
    if let Some(ca) = cacert {
        cmd.arg("-CAfile").arg(ca);
    }
    cmd
}

/// Run `cmd` within `timeout`. openssl says little of why it could not connect: only when it
/// printed nothing and failed is the address asked through [`Conn`] (typed refusal and silence),
/// so a server that answers costs one connection, not two.
fn run(addr: SocketAddr, mut cmd: Command, input: Option<Vec<u8>>, timeout: Duration) -> Result<std::process::Output, NetError> {
    let started = Instant::now();
    cmd.env("LC_ALL", "C");
    let out = run_with_deadline_input(cmd, input, timeout).map_err(|e| match e {
        DeadlineError::Timeout(_) => NetError::Timeout(timeout),
        DeadlineError::Start(p, why) => NetError::Io(format!("cannot run {p}: {why} (install openssl)")),
    })?;
    if out.stdout.is_empty() && !out.status.success() {
        drop(Conn::open(addr, timeout.saturating_sub(started.elapsed()).max(Duration::from_millis(100)))?);
    }
    Ok(out)
}

/// openssl's own reason, for the operator: its first error line.
fn reason(stderr: &[u8], fallback: &str) -> String {
    let err = String::from_utf8_lossy(stderr);
    err.lines().find(|l| l.contains("error")).unwrap_or(fallback).trim().chars().take(160).collect()
}

/// Handshake with `addr` for `name` and read the leaf certificate, within `timeout`; `cacert`
/// instead of the system's trust store.
pub fn probe(addr: SocketAddr, name: &str, cacert: Option<&Path>, timeout: Duration) -> Result<TlsSeen, NetError> {
    let out = run(addr, s_client(addr, name, cacert), None, timeout)?;
    parse(&String::from_utf8_lossy(&out.stdout)).ok_or_else(|| NetError::Protocol("a TLS server", reason(&out.stderr, "no certificate")))
}

/// `GET path` over TLS from `addr` as `name` (the `Host:` header too), the certificate verified
/// for `name` or no answer at all; the status and at most 1 MiB of body, within `timeout`.
pub fn https_get(addr: SocketAddr, name: &str, path: &str, cacert: Option<&Path>, timeout: Duration) -> Result<HttpResponse, NetError> {
    let mut cmd = s_client(addr, name, cacert);
    // -quiet: only the server's bytes on stdout (and it reads on after our request ends).
    cmd.args(["-quiet", "-verify_return_error"]);
    let path: String = path.chars().filter(|c| c.is_ascii_graphic()).collect();
    let request = format!("GET {path} HTTP/1.0\r\nHost: {name}\r\nUser-Agent: micromirror\r\nConnection: close\r\n\r\n");
    let out = run(addr, cmd, Some(request.into_bytes()), timeout)?;
    if out.stdout.is_empty() {
        return Err(NetError::Protocol("a verified TLS server", reason(&out.stderr, "no answer over TLS")));
    }
    parse_response(&out.stdout)
}

/// The leaf's notAfter and the verify result from `openssl s_client` (OpenSSL 3) output.
pub fn parse(text: &str) -> Option<TlsSeen> {
    let leaf = text.lines().find(|l| l.trim_start().starts_with("v:NotBefore:"))?;
    let not_after = leaf.split("NotAfter: ").nth(1)?.trim();
    let verify = match text.lines().find_map(|l| l.trim().strip_prefix("Verify return code: ")) {
        None => Verify { code: None, text: "unknown".into() },
        Some(v) => match v.split_once(' ').and_then(|(c, t)| Some((c.parse().ok()?, t))) {
            Some((code, t)) => Verify { code: Some(code), text: t.trim_start_matches('(').trim_end_matches(')').to_string() },
            None => Verify { code: None, text: v.to_string() },
        },
    };
    Some(TlsSeen { not_after_unix: parse_asn1_time(not_after)?, verify })
}

/// `Dec 10 22:02:15 2026 GMT` as OpenSSL prints ASN.1 times.
fn parse_asn1_time(s: &str) -> Option<u64> {
    let w: Vec<&str> = s.split_whitespace().collect();
    let [mon, day, time, year, "GMT"] = w.as_slice() else { return None };
    mmconfig::marker::parse_date(&format!("{day} {mon} {year} {time} +0000"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leaf_expiry_and_verify_result() {
        let out = "CONNECTED(00000003)\n---\nCertificate chain\n 0 s:CN = t.example\n   i:CN = t.example\n   a:PKEY: rsaEncryption\n   v:NotBefore: Nov 30 22:02:15 2026 GMT; NotAfter: Dec 10 22:02:15 2026 GMT\n 1 s:CN = ca\n   v:NotBefore: Jan  1 00:00:00 2020 GMT; NotAfter: Jan  1 00:00:00 2040 GMT\n---\nVerify return code: 18 (self-signed certificate)\n";
        let t = parse(out).unwrap();
        assert_eq!(t.not_after_unix, 1_796_940_135);
        assert_eq!((t.verify.code, t.verify.text.as_str(), t.verify.ok()), (Some(18), "self-signed certificate", false));
        assert_eq!(t.verify.to_string(), "18 (self-signed certificate)");
        assert_eq!(serde_json::to_value(&t).unwrap()["verify"], "18 (self-signed certificate)");
        assert!(parse(&out.replace("18 (self-signed certificate)", "0 (ok)")).unwrap().verify.ok());
        assert_eq!(parse("CONNECTED\nno peer certificate available\n"), None);
    }

    /// The real openssl on both ends: `s_server` with a certificate for one name.
    #[test]
    fn a_real_server_verified_by_name_and_ca() {
        if crate::testenv::need(&[crate::testenv::Need::Tool("openssl")]).is_err() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        let ok = Command::new("openssl")
            .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2"])
            .args(["-subj", "/CN=good.example", "-addext", "subjectAltName=DNS:good.example", "-keyout"])
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(ok.success());
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut server = Command::new("openssl")
            .args(["s_server", "-quiet", "-www", "-accept", &port.to_string(), "-cert"])
            .arg(&cert)
            .arg("-key")
            .arg(&key)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let t = Duration::from_secs(5);
        let start = Instant::now();
        while Conn::open(addr, t).is_err() && start.elapsed() < t {
            std::thread::sleep(Duration::from_millis(50));
        }
        let good = probe(addr, "good.example", Some(&cert), t).unwrap();
        assert!(good.verify.ok(), "{good:?}");
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
        assert!((now + 86400..=now + 2 * 86400 + 60).contains(&good.not_after_unix), "{good:?}");
        assert_eq!(probe(addr, "bad.example", Some(&cert), t).unwrap().verify.code, Some(62), "hostname mismatch");
        assert_eq!(probe(addr, "good.example", None, t).unwrap().verify.code, Some(18), "self-signed, no CA given");
        // s_server -www answers any GET with 200 and its status page.
        let r = https_get(addr, "good.example", "/", Some(&cert), t).unwrap();
        assert_eq!(r.status, 200, "{:?}", String::from_utf8_lossy(&r.body));
        assert!(matches!(https_get(addr, "bad.example", "/", Some(&cert), t), Err(NetError::Protocol(..))));
        let _ = server.kill();
        let _ = server.wait();
        assert_eq!(probe(addr, "good.example", None, t), Err(NetError::Refused));
    }
}
