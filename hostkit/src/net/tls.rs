//! A TLS server's leaf certificate for a name: its expiry and whether it verifies, through the real `openssl s_client`.

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TlsSeen {
    /// The leaf certificate's notAfter, UNIX seconds.
    pub not_after_unix: u64,
    /// `0 (ok)` when the chain verifies against the system's trust store for the name.
    pub verify: String,
}

/// Handshake with `addr` for `name` and read the leaf certificate, within `timeout`.
pub fn probe(addr: SocketAddr, name: &str, timeout: Duration) -> Result<TlsSeen, String> {
    let mut cmd = Command::new("openssl");
    cmd.args(["s_client", "-connect", &addr.to_string(), "-servername", name, "-verify_hostname", name]);
    let out = crate::cmd::run_with_deadline(cmd, timeout)?;
    let text = String::from_utf8_lossy(&out.stdout);
    parse(&text).ok_or_else(|| {
        let err = String::from_utf8_lossy(&out.stderr);
        let why =
            err.lines().find(|l| l.contains("errno") || l.contains("error") || l.contains("refused")).unwrap_or("no certificate").trim();
        if why.contains("refused") || why.contains("errno=111") {
            "connection refused".to_string()
        } else {
            why.chars().take(120).collect()
        }
    })
}

/// The leaf's notAfter and the verify result from `openssl s_client` (OpenSSL 3) output.
pub fn parse(text: &str) -> Option<TlsSeen> {
    let leaf = text.lines().find(|l| l.trim_start().starts_with("v:NotBefore:"))?;
    let not_after = leaf.split("NotAfter: ").nth(1)?.trim();
    let verify = text.lines().find_map(|l| l.trim().strip_prefix("Verify return code: ")).unwrap_or("unknown").to_string();
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
    #[test]
    fn leaf_expiry_and_verify_result() {
        let out = "CONNECTED(00000003)\n---\nCertificate chain\n 0 s:CN = t.example\n   i:CN = t.example\n   a:PKEY: rsaEncryption\n   v:NotBefore: Nov 30 22:02:15 2026 GMT; NotAfter: Dec 10 22:02:15 2026 GMT\n 1 s:CN = ca\n   v:NotBefore: Jan  1 00:00:00 2020 GMT; NotAfter: Jan  1 00:00:00 2040 GMT\n---\nVerify return code: 18 (self-signed certificate)\n";
        let t = super::parse(out).unwrap();
        assert_eq!(t.not_after_unix, 1_796_940_135);
        assert_eq!(t.verify, "18 (self-signed certificate)");
        assert_eq!(super::parse("CONNECTED\nno peer certificate available\n"), None);
    }
}
