//! Upstream freshness markers: the files an upstream writes and mirrors only copy (Arch
//! `lastsync`, AlmaLinux `TIME`, ftpsync traces, repomd revisions), how each encodes its time,
//! and the lag between two copies. The table itself is `overlays/monitoring/markers.toml`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// How a marker file encodes the time the upstream last changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MarkerKind {
    /// A UNIX time, integer or float (Arch `lastsync`, AlmaLinux `TIME`).
    Epoch,
    /// ftpsync trace: the first line is a date (`date -u` or RFC 2822).
    FtpsyncTrace,
    /// `<revision>` of repodata/repomd.xml (createrepo writes a UNIX time).
    Repomd,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Marker {
    pub kind: MarkerKind,
    /// Relative to the project's root.
    pub path: String,
}

/// Parse and check a marker table (`[project] kind = ..., path = ...`).
pub fn parse_table(text: &str) -> Result<BTreeMap<String, Marker>, String> {
    let markers: BTreeMap<String, Marker> = toml::from_str(text).map_err(|e| e.to_string())?;
    for (name, m) in &markers {
        if m.path.starts_with('/') || m.path.split('/').any(|c| c == ".." || c.is_empty()) {
            return Err(format!("[{name}] path {:?} must be relative, without empty or .. components", m.path));
        }
    }
    Ok(markers)
}

/// The time a marker's content stands for, in UNIX seconds; None when it does not parse.
pub fn parse(kind: MarkerKind, body: &str) -> Option<u64> {
    match kind {
        MarkerKind::Epoch => parse_epoch(body.trim()),
        MarkerKind::FtpsyncTrace => parse_date(body.lines().next()?.trim()),
        MarkerKind::Repomd => {
            let start = body.find("<revision>")? + "<revision>".len();
            let end = start + body[start..].find("</revision>")?;
            parse_epoch(body[start..end].trim())
        }
    }
}

fn parse_epoch(s: &str) -> Option<u64> {
    let int = s.split('.').next()?;
    if int.is_empty() || !int.bytes().all(|b| b.is_ascii_digit()) || int.len() > 12 {
        return None;
    }
    if let Some(frac) = s.split_once('.').map(|x| x.1) {
        if !frac.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
    }
    int.parse().ok()
}

pub const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
/// Weekdays from 1970-01-01, a Thursday.
const WEEKDAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];

/// A UNIX time as the calendar shows it in UTC; what [`parse_date`] reads back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Civil {
    pub weekday: &'static str,
    pub year: i64,
    /// 1-12.
    pub month: usize,
    pub day: u32,
    pub hour: u64,
    pub minute: u64,
    pub second: u64,
}

impl Civil {
    /// Howard Hinnant's civil_from_days.
    pub fn from_unix(unix: u64) -> Civil {
        let days = (unix / 86_400) as i64;
        let secs = unix % 86_400;
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
        let month = if mp < 10 { mp + 3 } else { mp - 9 } as usize;
        Civil {
            weekday: WEEKDAYS[days.rem_euclid(7) as usize],
            year: yoe + era * 400 + i64::from(month <= 2),
            month,
            day,
            hour: secs / 3600,
            minute: secs / 60 % 60,
            second: secs % 60,
        }
    }

    pub fn month_name(&self) -> &'static str {
        MONTHS[self.month - 1]
    }

    /// `hh:mm:ss`.
    pub fn hms(&self) -> String {
        format!("{:02}:{:02}:{:02}", self.hour, self.minute, self.second)
    }

    /// `Sun Dec  6 12:00:00 UTC 2026`: `date -u` in the POSIX locale, the first line of an
    /// ftpsync trace (Debian's checkers read it with `%a %b %d %H:%M:%S UTC %Y`).
    pub fn date_u(&self) -> String {
        format!("{} {} {:>2} {} UTC {}", self.weekday, self.month_name(), self.day, self.hms(), self.year)
    }

    /// `Sun, 06 Dec 2026 12:00:00 +0000`: RFC 2822 in UTC (`date -u -R`, a trace's `Date:`).
    pub fn rfc2822(&self) -> String {
        format!("{}, {:02} {} {} {} +0000", self.weekday, self.day, self.month_name(), self.year, self.hms())
    }
}

/// `Mon Nov 30 21:00:01 UTC 2026` (ftpsync, `date -u`) or `Mon, 30 Nov 2026 21:00:01 +0000` (RFC 2822).
pub fn parse_date(s: &str) -> Option<u64> {
    let words: Vec<&str> = s.split([' ', ',']).filter(|w| !w.is_empty()).collect();
    let month = |w: &str| MONTHS.iter().position(|m| m.eq_ignore_ascii_case(w)).map(|i| i as u32 + 1);
    let (day, mon, year, time, zone) = match words.as_slice() {
        // date -u: weekday month day time zone year
        [_, mon, day, time, zone, year] if month(mon).is_some() => (*day, month(mon)?, *year, *time, *zone),
        // RFC 2822: [weekday,] day month year time zone
        [_, day, mon, year, time, zone] | [day, mon, year, time, zone] => (*day, month(mon)?, *year, *time, *zone),
        _ => return None,
    };
    let offset: i64 = match zone {
        "UTC" | "GMT" | "Z" | "+0000" | "-0000" => 0,
        z if z.len() == 5 && (z.starts_with('+') || z.starts_with('-')) => {
            let h: i64 = z[1..3].parse().ok()?;
            let m: i64 = z[3..5].parse().ok()?;
            let v = h * 3600 + m * 60;
            if z.starts_with('-') {
                -v
            } else {
                v
            }
        }
        _ => return None,
    };
    let day: u32 = day.parse().ok()?;
    let year: i64 = year.parse().ok()?;
    let hms: Vec<u32> = time.split(':').map(|x| x.parse().ok()).collect::<Option<_>>()?;
    let [h, mi, se] = hms.as_slice() else { return None };
    if !(1..=31).contains(&day) || *h > 23 || *mi > 59 || *se > 60 {
        return None;
    }
    let days = days_from_civil(year, mon, day);
    let t = days * 86400 + i64::from(*h) * 3600 + i64::from(*mi) * 60 + i64::from(*se) - offset;
    u64::try_from(t).ok()
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = i64::from((m + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// How far a node is behind: what it serves against what its upstream serves at the same moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "state")]
pub enum Lag {
    /// Same marker as the upstream, or newer (the node synced from a fresher upstream address).
    Current,
    /// The upstream's marker is this many seconds newer than the node's.
    Behind { seconds: u64 },
}

pub fn lag(upstream: u64, node: u64) -> Lag {
    match upstream.checked_sub(node) {
        Some(0) | None => Lag::Current,
        Some(s) => Lag::Behind { seconds: s },
    }
}

/// Seconds a project may fall behind before it counts as lagging: the profile's maximum sync
/// interval plus the margin a sync itself takes.
pub fn allowed_lag(max_interval_minutes: u32, margin_seconds: u64) -> u64 {
    u64::from(max_interval_minutes) * 60 + margin_seconds
}

/// `3d4h`, `26h10m`, `7m`, `0s`: short, for the table.
pub fn human(secs: u64) -> String {
    match secs {
        0..=59 => format!("{secs}s"),
        60..=3599 => format!("{}m", secs / 60),
        3600..=172_799 => format!("{}h{:02}m", secs / 3600, secs / 60 % 60),
        _ => format!("{}d{}h", secs / 86400, secs / 3600 % 24),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_reject_escaping_paths() {
        assert!(parse_table("[a]\nkind = \"epoch\"\npath = \"../x\"\n").is_err());
        assert!(parse_table("[a]\nkind = \"epoch\"\npath = \"/x\"\n").is_err());
        assert!(parse_table("[a]\nkind = \"nope\"\npath = \"x\"\n").is_err());
        assert_eq!(parse_table("[a]\nkind = \"epoch\"\npath = \"lastsync\"\n").unwrap()["a"].kind, MarkerKind::Epoch);
    }

    #[test]
    fn arch_lastsync_and_alma_time() {
        assert_eq!(parse(MarkerKind::Epoch, "1764536401\n"), Some(1_764_536_401));
        assert_eq!(parse(MarkerKind::Epoch, "1764536401.583412\n"), Some(1_764_536_401));
        assert_eq!(parse(MarkerKind::Epoch, "<html>404</html>"), None);
        assert_eq!(parse(MarkerKind::Epoch, ""), None);
        assert_eq!(parse(MarkerKind::Epoch, "-5"), None);
        assert_eq!(parse(MarkerKind::Epoch, "1.2.3"), None);
    }

    #[test]
    fn ftpsync_trace_first_line_either_date_format() {
        // 2026-11-30 21:00:01 UTC = 1796072401
        let want = Some(1_796_072_401);
        assert_eq!(parse(MarkerKind::FtpsyncTrace, "Mon Nov 30 21:00:01 UTC 2026\nDate: x\n"), want);
        assert_eq!(parse(MarkerKind::FtpsyncTrace, "Mon, 30 Nov 2026 21:00:01 +0000\n"), want);
        assert_eq!(parse(MarkerKind::FtpsyncTrace, "30 Nov 2026 22:00:01 +0100\n"), want);
        assert_eq!(parse(MarkerKind::FtpsyncTrace, "Mon Nov 30 21:00:01 PST 2026\n"), None, "unknown zones are not guessed");
        assert_eq!(parse(MarkerKind::FtpsyncTrace, "Archive serial: 2026113001\n"), None);
        assert_eq!(parse_date("Thu Jan  1 00:00:00 UTC 1970"), Some(0));
        assert_eq!(parse_date("Tue, 29 Feb 2028 12:00:00 +0000"), Some(1_835_438_400));
    }

    #[test]
    fn both_trace_date_forms_are_written_as_their_tools_print_them_and_read_back() {
        // 2026-12-06 12:00:00 UTC, a Sunday; single-digit days are space-padded by date -u.
        let c = Civil::from_unix(1_796_558_400);
        assert_eq!(c.date_u(), "Sun Dec  6 12:00:00 UTC 2026");
        assert_eq!(c.rfc2822(), "Sun, 06 Dec 2026 12:00:00 +0000");
        assert_eq!(Civil::from_unix(0).rfc2822(), "Thu, 01 Jan 1970 00:00:00 +0000");
        assert_eq!(Civil::from_unix(1_795_574_348).date_u(), "Wed Nov 25 02:39:08 UTC 2026");
        for t in [0, 1_796_558_400, 1_835_438_400] {
            let c = Civil::from_unix(t);
            assert_eq!((parse_date(&c.date_u()), parse_date(&c.rfc2822())), (Some(t), Some(t)));
        }
    }

    #[test]
    fn repomd_revision() {
        let xml = "<?xml version=\"1.0\"?>\n<repomd xmlns=\"http://linux.duke.edu/metadata/repo\">\n  <revision>1764536401</revision>\n  <data type=\"primary\"/></repomd>";
        assert_eq!(parse(MarkerKind::Repomd, xml), Some(1_764_536_401));
        assert_eq!(parse(MarkerKind::Repomd, "<repomd><data/></repomd>"), None);
        assert_eq!(parse(MarkerKind::Repomd, "<revision>abc</revision>"), None);
    }

    #[test]
    fn lag_is_upstream_minus_node_never_negative() {
        assert_eq!(lag(1000, 1000), Lag::Current);
        assert_eq!(lag(1000, 1200), Lag::Current);
        assert_eq!(lag(100_000, 4000), Lag::Behind { seconds: 96_000 });
        assert_eq!(allowed_lag(360, 3600), 25_200);
    }

    #[test]
    fn human_durations() {
        assert_eq!(human(0), "0s");
        assert_eq!(human(420), "7m");
        assert_eq!(human(94_200), "26h10m");
        assert_eq!(human(273_600), "3d4h");
    }
}
