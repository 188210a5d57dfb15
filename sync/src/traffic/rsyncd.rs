//! One line of the rsync daemon's log: a session's start (its module and client) or its end (bytes sent).

use std::net::IpAddr;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event<'a> {
    /// `rsync on MODULE/PATH from HOST (ADDR)`.
    Start { pid: u32, day: i64, module: &'a str, addr: IpAddr },
    /// `sent N bytes  received M bytes  total size T`.
    End { pid: u32, day: i64, sent: u64 },
    /// Any other line (connects, module lists, errors).
    Other,
}

/// `2026/12/07 06:17:39 [30499] message`: the daemon logs local time, which is UTC on the node.
pub fn parse(line: &[u8]) -> Event<'_> {
    parse_opt(line).unwrap_or(Event::Other)
}

fn parse_opt(line: &[u8]) -> Option<Event<'_>> {
    let line = std::str::from_utf8(line).ok()?;
    let (date, rest) = line.split_once(' ')?;
    let (_time, rest) = rest.split_once(" [")?;
    let (pid, msg) = rest.split_once("] ")?;
    let pid: u32 = pid.parse().ok()?;
    let mut d = date.splitn(3, '/');
    let (y, m, dd) = (d.next()?.parse().ok()?, d.next()?.parse().ok()?, d.next()?.parse().ok()?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&dd) {
        return None;
    }
    let day = mmconfig::marker::days_from_civil(y, m, dd);
    if let Some(req) = msg.strip_prefix("rsync on ") {
        // The requested path may hold " from ": the client part is the last one.
        let (path, client) = req.rsplit_once(" from ")?;
        let addr = client.rsplit_once(" (")?.1.strip_suffix(')')?.parse().ok()?;
        let module = path.split('/').next()?;
        return Some(Event::Start { pid, day, module, addr });
    }
    if let Some(sent) = msg.strip_prefix("sent ") {
        let (n, rest) = sent.split_once(' ')?;
        rest.starts_with("bytes").then_some(())?;
        return Some(Event::End { pid, day, sent: n.parse().ok()? });
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_as_rsync_3_logs_it() {
        // Lines as the daemon wrote them in the loopback test (reverse lookup = no).
        let start = parse(b"2026/12/07 06:17:39 [30499] rsync on debian/pool/ from UNKNOWN (2001:db8::7)");
        assert_eq!(start, Event::Start { pid: 30499, day: 20_794, module: "debian", addr: "2001:db8::7".parse().unwrap() });
        let end = parse(b"2026/12/07 06:17:40 [30499] sent 143 bytes  received 51 bytes  total size 6");
        assert_eq!(end, Event::End { pid: 30499, day: 20_794, sent: 143 });
        let odd = parse(b"2026/12/07 06:17:39 [1] rsync on epel/a from b/ from UNKNOWN (192.0.2.1)");
        assert_eq!(odd, Event::Start { pid: 1, day: 20_794, module: "epel", addr: "192.0.2.1".parse().unwrap() });
    }

    #[test]
    fn everything_else_is_other() {
        for l in [
            &b"2026/12/07 06:17:39 [30516] module-list request from UNKNOWN (127.0.0.1)"[..],
            b"2026/12/07 06:17:39 [30499] connect from UNKNOWN (127.0.0.1)",
            b"2026/12/07 06:17:39 [30499] rsync on debian/ from UNKNOWN (not-an-ip)",
            b"2026/12/07 06:17:39 [x] sent 1 bytes",
            b"2026/13/07 06:17:39 [1] sent 1 bytes  received 2 bytes",
            b"2026/12/07 06:17:39 [1] sent many bytes",
            b"",
        ] {
            assert_eq!(parse(l), Event::Other, "{}", String::from_utf8_lossy(l));
        }
    }
}
