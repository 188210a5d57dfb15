//! The node's public traffic document (`/.mm/traffic.json`): what mm-sync's collector writes and `mmbuild report` reads.
//!
//! Daily totals per hosted project and address family, nothing else: no addresses, no user
//! agents, no paths below the project. A reader checks [`TrafficDoc::version`] and ignores
//! fields it does not know (a node may run a newer image than the operator's mmbuild).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Version of the document's layout; bump when a field changes meaning.
pub const VERSION: u32 = 1;
/// File name beside `status.json` under the data mount's [`crate::PUBLIC_DIR`].
pub const FILE: &str = "traffic.json";
/// How many days the document keeps (the oldest fall off).
pub const KEEP_DAYS: usize = 400;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TrafficDoc {
    pub version: u32,
    pub node: String,
    pub generated_unix: u64,
    /// Oldest first, at most [`KEEP_DAYS`]; a day with no traffic at all may be absent.
    pub days: Vec<Day>,
}

/// One UTC calendar day.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Day {
    /// `YYYY-MM-DD`, UTC.
    pub date: String,
    /// By project name.
    pub projects: BTreeMap<String, ProjectDay>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProjectDay {
    #[serde(default)]
    pub ipv4: FamilyDay,
    #[serde(default)]
    pub ipv6: FamilyDay,
}

impl ProjectDay {
    pub fn family_mut(&mut self, v6: bool) -> &mut FamilyDay {
        if v6 {
            &mut self.ipv6
        } else {
            &mut self.ipv4
        }
    }

    /// Bytes sent over HTTP and rsync, both families.
    pub fn bytes(&self) -> u64 {
        self.ipv4.bytes() + self.ipv6.bytes()
    }
}

/// One family's share of a project's day.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct FamilyDay {
    /// HTTP requests by status class (1xx and anything outside 100-599 are not counted).
    pub http_2xx: u64,
    pub http_3xx: u64,
    pub http_4xx: u64,
    pub http_5xx: u64,
    /// Bytes nginx sent for those requests, headers included (`$bytes_sent`).
    pub http_bytes: u64,
    /// Distinct client networks (IPv4 /24, IPv6 /48) that made an HTTP request that day.
    pub http_networks: u64,
    /// rsync daemon sessions of the project's module that ended that day, and the bytes they were sent.
    pub rsync_sessions: u64,
    pub rsync_bytes: u64,
}

impl FamilyDay {
    pub fn requests(&self) -> u64 {
        self.http_2xx + self.http_3xx + self.http_4xx + self.http_5xx
    }

    pub fn bytes(&self) -> u64 {
        self.http_bytes + self.rsync_bytes
    }
}

/// `YYYY-MM-DD` of a day number (days since 1970-01-01).
pub fn date_of(day: i64) -> String {
    let c = crate::marker::Civil::from_unix(u64::try_from(day.max(0)).unwrap_or(0) * 86_400);
    format!("{:04}-{:02}-{:02}", c.year, c.month, c.day)
}

/// The day number of `YYYY-MM-DD`, when it is one.
pub fn day_of(date: &str) -> Option<i64> {
    let mut it = date.splitn(3, '-');
    let (y, m, d) = (it.next()?, it.next()?, it.next()?);
    if y.len() != 4 || m.len() != 2 || d.len() != 2 {
        return None;
    }
    let (y, m, d): (i64, u32, u32) = (y.parse().ok()?, m.parse().ok()?, d.parse().ok()?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    let day = crate::marker::days_from_civil(y, m, d);
    // 2026-02-31 is not a date: it must read back as itself.
    (date_of(day) == date).then_some(day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_round_trip_and_non_dates_are_refused() {
        assert_eq!(date_of(0), "1970-01-01");
        assert_eq!(day_of("2026-12-07"), Some(20_794));
        assert_eq!(date_of(20_794), "2026-12-07");
        for bad in ["2026-02-31", "2026-13-01", "26-12-07", "2026-12-7", "", "2026-12-07x"] {
            assert_eq!(day_of(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_newer_node_s_fields_are_ignored_and_missing_ones_default() {
        let text = r#"{"version":1,"node":"n","generated_unix":5,"future":1,
            "days":[{"date":"2026-12-07","projects":{"p":{"ipv4":{"http_2xx":3,"http_bytes":10,"new":2}}}}]}"#;
        let d: TrafficDoc = serde_json::from_str(text).unwrap();
        let p = &d.days[0].projects["p"];
        assert_eq!((p.ipv4.requests(), p.bytes(), p.ipv6.requests()), (3, 10, 0));
    }
}
