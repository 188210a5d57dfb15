//! One line of nginx's `micromirror` access log (overlays/services/nginx-log-format.conf), read into what is counted.

use std::net::IpAddr;

/// What one request counts for; the address is used for its network and dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hit<'a> {
    pub addr: IpAddr,
    /// Days since 1970-01-01, UTC, of the time nginx logged the request.
    pub day: i64,
    pub status: u16,
    /// `$bytes_sent`: the whole response, headers included.
    pub bytes: u64,
    pub project: &'a str,
}

/// Why a line was not counted (the collector counts these, it never logs the line).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    /// Not a hosted project's path (`project=-`: `/`, `/.mm/`, `/robots.txt`, a 404 elsewhere).
    NoProject,
    /// Not in the expected format (a truncated line, another format).
    Malformed,
}

/// Read one line (without its newline). The fixed fields are read from both ends: the address
/// and time from the start, `project=` and `rt=` from the end, the status and sizes after the
/// request. nginx writes `"` inside a variable as `\x22`, so the quoted request ends at the first `" `.
pub fn parse(line: &[u8]) -> Result<Hit<'_>, Skip> {
    let line = std::str::from_utf8(line).map_err(|_| Skip::Malformed)?;
    let rest = line.strip_suffix('\r').unwrap_or(line);
    let (rest, rt) = rest.rsplit_once(" rt=").ok_or(Skip::Malformed)?;
    if rt.contains(' ') {
        return Err(Skip::Malformed);
    }
    let (_, project) = rest.rsplit_once(" project=").ok_or(Skip::Malformed)?;
    let (addr, rest) = line.split_once(' ').ok_or(Skip::Malformed)?;
    let addr: IpAddr = addr.parse().map_err(|_| Skip::Malformed)?;
    // `$remote_user` comes from the client and may hold " [", never a quote: the time is the
    // bracket right before the first `] "`.
    let close = rest.find("] \"").ok_or(Skip::Malformed)?;
    let open = rest[..close].rfind(" [").ok_or(Skip::Malformed)?;
    let day = day_of_time_local(&rest[open + 2..close]).ok_or(Skip::Malformed)?;
    let after_request = &rest[close + 3..];
    let end = after_request.find("\" ").ok_or(Skip::Malformed)?;
    let mut fields = after_request[end + 2..].splitn(4, ' ');
    let status: u16 = fields.next().and_then(|s| s.parse().ok()).ok_or(Skip::Malformed)?;
    let _body: u64 = fields.next().and_then(|s| s.parse().ok()).ok_or(Skip::Malformed)?;
    let bytes: u64 = fields.next().and_then(|s| s.parse().ok()).ok_or(Skip::Malformed)?;
    if project == "-" {
        return Err(Skip::NoProject);
    }
    if !valid_project(project) {
        return Err(Skip::Malformed);
    }
    Ok(Hit { addr, day, status, bytes, project })
}

/// The map in nginx-site.conf.hbs writes a profile's name; profile names are short and plain.
fn valid_project(p: &str) -> bool {
    !p.is_empty() && p.len() <= 64 && p.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

/// `$time_local`: `07/Dec/2026:06:16:42 +0000`, as the UTC day.
pub fn day_of_time_local(t: &str) -> Option<i64> {
    let b = t.as_bytes();
    if !t.is_ascii() || b.len() != 26 || b[2] != b'/' || b[6] != b'/' || b[11] != b':' || b[20] != b' ' {
        return None;
    }
    let num = |s: &str| s.parse::<i64>().ok();
    let day = num(&t[0..2])?;
    let month = mmconfig::marker::MONTHS.iter().position(|m| *m == &t[3..6])? as u32 + 1;
    let year = num(&t[7..11])?;
    let (h, m, s) = (num(&t[12..14])?, num(&t[15..17])?, num(&t[18..20])?);
    let sign = match b[21] {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let offset = sign * (num(&t[22..24])? * 3600 + num(&t[24..26])? * 60);
    if !(1..=31).contains(&day) || h > 23 || m > 59 || s > 60 {
        return None;
    }
    let unix = mmconfig::marker::days_from_civil(year, month, day as u32) * 86_400 + h * 3600 + m * 60 + s - offset;
    Some(unix.div_euclid(86_400))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 20_794; // 2026-12-07

    #[test]
    fn a_logged_request() {
        let l = br#"192.0.2.7 - - [07/Dec/2026:06:16:42 +0000] "GET /archlinux/iso/x.iso HTTP/1.1" 206 1048576 1048990 "-" "curl/7.88.1" project=archlinux rt=0.012"#;
        let h = parse(l).unwrap();
        assert_eq!(h, Hit { addr: "192.0.2.7".parse().unwrap(), day: DAY, status: 206, bytes: 1_048_990, project: "archlinux" });
        let v6 = br#"2001:db8::1 - - [07/Dec/2026:23:59:59 -0100] "HEAD /epel/ HTTP/1.0" 200 0 250 "-" "-" project=epel rt=0.000"#;
        let h = parse(v6).unwrap();
        // 23:59:59 at -01:00 is 00:59:59 UTC the next day.
        assert_eq!((h.addr.is_ipv6(), h.day, h.status, h.bytes), (true, DAY + 1, 200, 250));
    }

    #[test]
    fn hostile_agents_and_requests_cannot_move_the_fields() {
        // nginx escapes a quote in a variable as \x22; an agent can still carry spaces and the
        // words the parser looks for, and the last ones are nginx's own.
        let l = br#"198.51.100.1 - - [07/Dec/2026:06:00:00 +0000] "GET /a\x22 200 9 9 HTTP/1.1" 404 10 153 "x] \x22" "ev\x22il project=epel rt=1" project=archlinux rt=0.001"#;
        let h = parse(l).unwrap();
        assert_eq!((h.status, h.bytes, h.project), (404, 153, "archlinux"));
        // A user name (from the client's Authorization header) that looks like a time.
        let l = br#"198.51.100.1 - a [01/Jan/2020:00:00:00 +0000 [07/Dec/2026:06:00:00 +0000] "GET / HTTP/1.1" 200 1 2 "-" "-" project=epel rt=0"#;
        assert_eq!(parse(l).map(|h| h.day), Ok(DAY));
        let l = "198.51.100.1 - - [07/D\u{e9}c/2026:06:00:0 +0000] \"GET / HTTP/1.1\" 200 1 2 \"-\" \"-\" project=epel rt=0";
        assert_eq!(parse(l.as_bytes()), Err(Skip::Malformed));
    }

    #[test]
    fn lines_not_counted() {
        let no_project =
            br#"192.0.2.7 - - [07/Dec/2026:06:16:42 +0000] "GET /.mm/status.json HTTP/1.1" 200 5 300 "-" "-" project=- rt=0.000"#;
        assert_eq!(parse(no_project), Err(Skip::NoProject));
        for bad in [
            &br#"192.0.2.7 - - [07/Dec/2026:06:16:42 +0000] "GET / HTTP/1.1" 200 5 300 "-" "-""#[..],
            br#"192.0.2.7 - - [07/Dec/2026:06:16:42 +0000] "GET / HTTP/1.1" 200 5 300 "-" "-" project=a b rt=0"#,
            br#"192.0.2.7 - - [07/Dex/2026:06:16:42 +0000] "GET / HTTP/1.1" 200 5 300 "-" "-" project=a rt=0"#,
            br#"not-an-address - - [07/Dec/2026:06:16:42 +0000] "GET / HTTP/1.1" 200 5 300 "-" "-" project=a rt=0"#,
            br#"192.0.2.7 - - [07/Dec/2026:06:16:42 +0000] "GET / HTTP/1.1" 2x0 5 300 "-" "-" project=a rt=0"#,
            br#"192.0.2.7 - - [07/Dec/2026:06:16:42 +0000] "GET / HTTP/1.1" 200 5 -3 "-" "-" project=a rt=0"#,
            br#"192.0.2.7 - - [07/Dec/2026:06:16:42 +0000] "GET"#,
            b"\xff\xfe project=a rt=0",
            b"",
        ] {
            assert_eq!(parse(bad), Err(Skip::Malformed), "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn the_shipped_log_format_has_the_fields_in_this_order() {
        let f = include_str!("../../../overlays/services/nginx-log-format.conf");
        let vars: Vec<&str> =
            f.split('$').skip(1).map(|v| v.split(|c: char| !c.is_ascii_alphanumeric() && c != '_').next().unwrap()).collect();
        assert_eq!(
            vars,
            [
                "remote_addr",
                "remote_user",
                "time_local",
                "request",
                "status",
                "body_bytes_sent",
                "bytes_sent",
                "http_referer",
                "http_user_agent",
                "mm_project",
                "request_time"
            ]
        );
        assert!(f.contains("project=$mm_project rt=$request_time';"), "{f}");
    }
}
