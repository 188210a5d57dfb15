//! The syntax of single inventory values: DNS labels and domains, URLs, e-mail addresses, ssh
//! public keys, MAC addresses, AS numbers and one-line texts, each with the reason it is refused.

/// A free-text field that registrations print: one non-empty line.
pub fn check_text(s: &str) -> Result<(), &'static str> {
    if s.trim().is_empty() {
        Err("is empty")
    } else if s.chars().any(|c| c.is_control() || c == '\u{2028}' || c == '\u{2029}') {
        Err("contains control characters (newlines, tabs): write it on one line")
    } else {
        Ok(())
    }
}

/// Why `asn` cannot be a public network's AS number, if it cannot.
pub fn asn_problem(asn: i64) -> Option<&'static str> {
    Some(match asn {
        i64::MIN..=0 | 4_294_967_296.. => "is out of range (AS numbers are 1 to 4294967295)",
        23456 => "is AS_TRANS (RFC 6793), a placeholder for 4-byte AS numbers: give the network's real AS number",
        64496..=64511 | 65536..=65551 => "is reserved for documentation (RFC 5398): give the sponsor network's real AS number",
        64512..=65534 | 4_200_000_000..=4_294_967_294 => "is a private AS number (RFC 6996): give the sponsor network's public AS number",
        65535 | 4_294_967_295 => "is reserved (RFC 7300)",
        65552..=131071 => "is reserved by IANA and not assigned to any network",
        _ => return None,
    })
}

/// A DNS label: 1-63 of a-z, 0-9 and '-', not starting or ending with '-'.
pub fn check_label(label: &str) -> Result<(), String> {
    if label.is_empty() {
        return Err("it is empty".into());
    }
    if label.len() > 63 {
        return Err(format!("it is {} characters long (at most 63)", label.len()));
    }
    if let Some(c) = label.chars().find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-')) {
        let hint = if c.is_ascii_uppercase() { " (use lower case)" } else { "" };
        return Err(format!("character '{c}' is not allowed (only a-z, 0-9 and '-'){hint}"));
    }
    if label.starts_with('-') || label.ends_with('-') {
        return Err("it starts or ends with '-'".into());
    }
    Ok(())
}

pub fn check_domain(domain: &str) -> Result<(), String> {
    if domain.len() > 253 {
        return Err("longer than 253 characters".into());
    }
    if !domain.contains('.') {
        return Err("it needs at least two labels, e.g. mm.example.net".into());
    }
    for label in domain.split('.') {
        check_label(label).map_err(|why| format!("label \"{label}\": {why}"))?;
    }
    Ok(())
}

pub fn looks_like_email(s: &str) -> bool {
    match s.split_once('@') {
        Some((user, host)) => !user.is_empty() && host.contains('.') && !s.chars().any(|c| c.is_whitespace() || c.is_control()),
        None => false,
    }
}

pub fn check_http_url(url: &str) -> Result<(), String> {
    let rest = url.strip_prefix("https://").or_else(|| url.strip_prefix("http://")).ok_or("must start with http:// or https://")?;
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = host.rsplit_once('@').map_or(host, |(_, h)| h);
    if host.is_empty() {
        return Err("has no host name".into());
    }
    if url.chars().any(|c| c.is_whitespace() || c.is_control() || c == '"' || c == '<' || c == '>') {
        return Err("contains spaces, quotes or angle brackets: percent-encode them".into());
    }
    Ok(())
}

const SSH_KEY_TYPES: &[&str] = &[
    "ssh-ed25519",
    "ssh-rsa",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
];

/// An OpenSSH public key line: `TYPE BASE64 [comment]`, the blob's embedded type equal to TYPE.
pub fn check_ssh_key(line: &str) -> Result<(), String> {
    // One key per entry: a newline in the comment would smuggle a second authorized_keys line
    // (without the forced command a push key must have).
    if line.chars().any(|c| c.is_control() || c == '\u{2028}' || c == '\u{2029}') {
        return Err("the key contains a line break or control character: give one key per entry, on one line".into());
    }
    let mut parts = line.split_whitespace();
    let (Some(kind), Some(blob)) = (parts.next(), parts.next()) else {
        return Err(format!("\"{}\" is not an ssh public key (expected \"ssh-ed25519 AAAA... comment\")", short(line)));
    };
    if !SSH_KEY_TYPES.contains(&kind) {
        return Err(format!("key type \"{}\" is not an ssh public key type (expected one of {})", short(kind), SSH_KEY_TYPES.join(", ")));
    }
    let bytes = base64_decode(blob).ok_or_else(|| format!("the {kind} key's data is not valid base64 (was it truncated or wrapped?)"))?;
    let embedded = bytes
        .get(..4)
        .map(|l| u32::from_be_bytes([l[0], l[1], l[2], l[3]]) as usize)
        .and_then(|n| bytes.get(4..4 + n))
        .map(String::from_utf8_lossy);
    match embedded {
        Some(t) if t == kind => Ok(()),
        Some(t) => Err(format!("the key's data says \"{t}\" but the line says \"{kind}\"")),
        None => Err(format!("the {kind} key's data is too short (was it truncated?)")),
    }
}

fn short(s: &str) -> String {
    if s.chars().count() > 40 {
        format!("{}...", s.chars().take(37).collect::<String>())
    } else {
        s.to_string()
    }
}

/// Standard base64 with padding, as in OpenSSH public keys.
pub(crate) fn base64_decode(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(4) {
        return None;
    }
    let val = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(s.len() / 4 * 3);
    for (i, chunk) in bytes.chunks(4).enumerate() {
        let last = i == bytes.len() / 4 - 1;
        let pad = chunk.iter().rev().take_while(|&&c| c == b'=').count();
        if pad > 2 || (pad > 0 && !last) {
            return None;
        }
        let mut n = 0u32;
        for &c in &chunk[..4 - pad] {
            n = (n << 6) | val(c)?;
        }
        n <<= 6 * pad as u32;
        let b = n.to_be_bytes();
        out.extend_from_slice(&b[1..4 - pad]);
    }
    Some(out)
}

/// `52:54:00:AB:cd:ef` or with `-` → lower-case colon form.
pub fn normalize_mac(mac: &str) -> Option<String> {
    let parts: Vec<&str> = mac.split([':', '-']).collect();
    if parts.len() != 6 || !parts.iter().all(|p| p.len() == 2 && p.chars().all(|c| c.is_ascii_hexdigit())) {
        return None;
    }
    Some(parts.join(":").to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trips_known_values() {
        assert_eq!(base64_decode("AAAAC3NzaC1lZDI1NTE5").unwrap()[4..], *b"ssh-ed25519");
        assert_eq!(base64_decode("Zm9vYg==").unwrap(), b"foob");
        assert_eq!(base64_decode("Zm9vYmE=").unwrap(), b"fooba");
        assert!(base64_decode("Zm9v!mE=").is_none());
        assert!(base64_decode("Zm9").is_none());
        assert!(base64_decode("Zg==Zm9v").is_none());
    }

    #[test]
    fn labels() {
        assert!(check_label("sponsor-1").is_ok());
        assert!(check_label("Sponsor").unwrap_err().contains("lower case"));
        assert!(check_label("-a").is_err());
        assert!(check_label(&"a".repeat(64)).is_err());
        assert!(check_label("a_b").is_err());
    }

    #[test]
    fn macs() {
        assert_eq!(normalize_mac("52-54-00-AB-cd-EF").unwrap(), "52:54:00:ab:cd:ef");
        assert!(normalize_mac("52:54:00:ab:cd").is_none());
        assert!(normalize_mac("52:54:00:ab:cd:zz").is_none());
    }

    #[test]
    fn urls() {
        assert!(check_http_url("https://sponsor.example/").is_ok());
        assert!(check_http_url("ftp://x").is_err());
        assert!(check_http_url("https:///path").is_err());
        assert!(check_http_url("https://a.example/x\"><script>").is_err());
    }
}
