//! The collector's counts: daily totals, counters since install, and the distinct client networks of the open days.

use std::collections::{BTreeMap, HashSet};
use std::net::IpAddr;

use mmconfig::traffic::{self, Day, ProjectDay, TrafficDoc, KEEP_DAYS};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::cursor::Cursor;
use super::nginx::Hit;

/// Distinct networks a project and family counts a day at most: 8 MiB of hashes (and as many
/// more for the set's slack) however many addresses a botnet brings. Beyond it the day's
/// count stops growing; the document's figure is then a floor.
pub const MAX_NETWORKS: usize = 1 << 20;

/// A day's networks stay countable while no line of a day two later has been read: nginx
/// writes a request's line when it ends, so a day's last long downloads arrive after midnight.
const OPEN_DAYS: i64 = 2;

/// Everything the collector keeps between runs, written atomically as one file: the offsets
/// and the counts they produced can never disagree, so a crash or reboot counts nothing twice.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct State {
    pub version: u32,
    pub nginx: Cursor,
    pub rsyncd: Cursor,
    /// Daily totals by day number (days since 1970-01-01, UTC).
    pub days: BTreeMap<i64, BTreeMap<String, ProjectDay>>,
    /// Since the collector first ran, never reset: the Prometheus counters.
    pub totals: BTreeMap<String, ProjectDay>,
    /// The days whose networks are still being counted.
    pub open: BTreeMap<i64, OpenDay>,
    /// rsync daemon sessions seen starting and not yet ending, by the daemon's process id.
    pub sessions: BTreeMap<u32, Session>,
    /// Lines read and not counted, by reason (never the lines themselves).
    pub skipped: BTreeMap<String, u64>,
    pub lines: u64,
}

pub const STATE_VERSION: u32 = 1;

/// One open day: its salt (random, this node's, gone with the day) and the salted hashes of
/// the networks seen, per project, IPv4 then IPv6. Never an address.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpenDay {
    pub salt: [u8; 16],
    pub networks: BTreeMap<String, [HashSet<u64>; 2]>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Session {
    pub project: String,
    pub ipv6: bool,
    /// When it began: a session whose end was never logged is dropped after a day.
    pub day: i64,
}

/// IPv4-mapped IPv6 addresses are IPv4 clients.
pub fn is_v6(addr: &IpAddr) -> bool {
    match addr {
        IpAddr::V4(_) => false,
        IpAddr::V6(a) => a.to_ipv4_mapped().is_none(),
    }
}

/// The client's network (IPv4 /24, IPv6 /48) hashed with the day's salt.
pub fn network_hash(salt: &[u8; 16], addr: &IpAddr) -> u64 {
    let mut h = Sha256::new();
    h.update(salt);
    match addr {
        IpAddr::V6(a) if a.to_ipv4_mapped().is_none() => {
            h.update([6]);
            h.update(&a.octets()[..6]);
        }
        IpAddr::V6(a) => {
            h.update([4]);
            h.update(&a.to_ipv4_mapped().map_or([0; 4], |v| v.octets())[..3]);
        }
        IpAddr::V4(a) => {
            h.update([4]);
            h.update(&a.octets()[..3]);
        }
    }
    let d = h.finalize();
    u64::from_le_bytes(d[..8].try_into().unwrap_or_default())
}

impl State {
    pub fn new() -> State {
        State { version: STATE_VERSION, ..Default::default() }
    }

    fn both(&mut self, day: i64, project: &str, f: impl Fn(&mut ProjectDay)) {
        f(self.days.entry(day).or_default().entry(project.to_string()).or_default());
        f(self.totals.entry(project.to_string()).or_default());
    }

    /// Count one HTTP request; `salt(day)` makes a day's salt when the day opens.
    pub fn http(&mut self, hit: &Hit, salt: &mut dyn FnMut(i64) -> [u8; 16]) {
        let v6 = is_v6(&hit.addr);
        let (status, bytes) = (hit.status, hit.bytes);
        self.both(hit.day, hit.project, |p| {
            let f = p.family_mut(v6);
            match status {
                200..=299 => f.http_2xx += 1,
                300..=399 => f.http_3xx += 1,
                400..=499 => f.http_4xx += 1,
                500..=599 => f.http_5xx += 1,
                _ => {}
            }
            f.http_bytes += bytes;
        });
        if self.open_day(hit.day, salt) {
            let open = self.open.get_mut(&hit.day).expect("opened above");
            let hash = network_hash(&open.salt, &hit.addr);
            let set = &mut open.networks.entry(hit.project.to_string()).or_default()[usize::from(v6)];
            if set.len() < MAX_NETWORKS && set.insert(hash) {
                self.days.entry(hit.day).or_default().entry(hit.project.to_string()).or_default().family_mut(v6).http_networks += 1;
            }
        }
    }

    /// Open `day` if it is not too old, closing (forgetting the salt and hashes of) days that
    /// fall out of the window. False: the day is closed, its networks are no longer counted.
    fn open_day(&mut self, day: i64, salt: &mut dyn FnMut(i64) -> [u8; 16]) -> bool {
        let newest = self.open.keys().next_back().copied().unwrap_or(day).max(day);
        self.open.retain(|d, _| *d > newest - OPEN_DAYS);
        if day <= newest - OPEN_DAYS {
            return false;
        }
        self.open.entry(day).or_insert_with(|| OpenDay { salt: salt(day), networks: BTreeMap::new() });
        true
    }

    /// An rsync session began: remember its module's project until it ends.
    pub fn rsync_start(&mut self, pid: u32, project: &str, addr: &IpAddr, day: i64) {
        // A session lasts minutes to hours; one never seen ending (a killed daemon) goes after a day.
        self.sessions.retain(|_, s| s.day >= day - 1);
        self.sessions.insert(pid, Session { project: project.to_string(), ipv6: is_v6(addr), day });
    }

    /// An rsync session ended having sent `bytes`, on `day`. Sessions of other modules (the
    /// module list, refused ones) were never started and are not counted.
    pub fn rsync_end(&mut self, pid: u32, bytes: u64, day: i64) {
        let Some(s) = self.sessions.remove(&pid) else { return };
        self.both(day, &s.project, |p| {
            let f = p.family_mut(s.ipv6);
            f.rsync_sessions += 1;
            f.rsync_bytes += bytes;
        });
    }

    pub fn skip(&mut self, why: &str) {
        *self.skipped.entry(why.to_string()).or_default() += 1;
    }

    /// Keep [`KEEP_DAYS`] days up to the newest.
    pub fn prune(&mut self) {
        if let Some(&newest) = self.days.keys().next_back() {
            self.days.retain(|d, _| *d > newest - KEEP_DAYS as i64);
        }
    }

    /// The public document.
    pub fn document(&self, node: &str, now: u64) -> TrafficDoc {
        let days = self.days.iter().map(|(d, p)| Day { date: traffic::date_of(*d), projects: p.clone() }).collect();
        TrafficDoc { version: traffic::VERSION, node: node.to_string(), generated_unix: now, days }
    }

    /// node_exporter's textfile: counters since the collector first ran, today's networks.
    pub fn metrics(&self, now: u64) -> String {
        let mut m = String::new();
        let label = |s: &str| s.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n");
        let mut family = |name: &str, kind: &str, help: &str, rows: Vec<(String, u64)>| {
            m.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
            for (labels, v) in rows {
                let labels = if labels.is_empty() { labels } else { format!("{{{labels}}}") };
                m.push_str(&format!("{name}{labels} {v}\n"));
            }
        };
        let fams = |p: &ProjectDay| [("ipv4", p.ipv4.clone()), ("ipv6", p.ipv6.clone())];
        let mut requests = Vec::new();
        let (mut http_bytes, mut rsync_bytes, mut sessions) = (Vec::new(), Vec::new(), Vec::new());
        for (project, p) in &self.totals {
            for (fam, f) in fams(p) {
                let l = format!("project=\"{}\",family=\"{fam}\"", label(project));
                for (class, v) in [("2xx", f.http_2xx), ("3xx", f.http_3xx), ("4xx", f.http_4xx), ("5xx", f.http_5xx)] {
                    requests.push((format!("{l},class=\"{class}\""), v));
                }
                http_bytes.push((l.clone(), f.http_bytes));
                rsync_bytes.push((l.clone(), f.rsync_bytes));
                sessions.push((l, f.rsync_sessions));
            }
        }
        family("mm_traffic_http_requests_total", "counter", "HTTP requests served, by project, address family and status class.", requests);
        family("mm_traffic_http_bytes_total", "counter", "Bytes nginx sent, headers included.", http_bytes);
        family("mm_traffic_rsync_sessions_total", "counter", "rsync daemon sessions of the project's module that ended.", sessions);
        family("mm_traffic_rsync_bytes_total", "counter", "Bytes the rsync daemon sent.", rsync_bytes);
        let mut nets = Vec::new();
        if let Some(projects) = self.days.values().next_back() {
            for (project, p) in projects {
                for (fam, f) in fams(p) {
                    nets.push((format!("project=\"{}\",family=\"{fam}\"", label(project)), f.http_networks));
                }
            }
        }
        family("mm_traffic_http_networks", "gauge", "Distinct client networks (/24, /48) on the newest day logged.", nets);
        let skipped = self.skipped.iter().map(|(why, v)| (format!("reason=\"{}\"", label(why)), *v)).collect();
        family("mm_traffic_lines_skipped_total", "counter", "Log lines read and not counted.", skipped);
        family("mm_traffic_lines_total", "counter", "Log lines read.", vec![(String::new(), self.lines)]);
        family("mm_traffic_last_run_timestamp_seconds", "gauge", "End of the collector's last run.", vec![(String::new(), now)]);
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hit<'a>(addr: &str, day: i64, status: u16, bytes: u64, project: &'a str) -> Hit<'a> {
        Hit { addr: addr.parse().unwrap(), day, status, bytes, project }
    }

    fn salts() -> impl FnMut(i64) -> [u8; 16] {
        |day| [day as u8; 16]
    }

    #[test]
    fn requests_bytes_and_networks_per_family() {
        let mut s = State::new();
        let mut salt = salts();
        for (a, st, b) in [("192.0.2.1", 200, 10), ("192.0.2.200", 404, 5), ("198.51.100.1", 304, 1), ("::ffff:198.51.100.9", 500, 1)] {
            s.http(&hit(a, 10, st, b, "epel"), &mut salt);
        }
        for a in ["2001:db8:1:1::1", "2001:db8:1:2::1", "2001:db8:2::1"] {
            s.http(&hit(a, 10, 206, 100, "epel"), &mut salt);
        }
        let d = &s.days[&10]["epel"];
        assert_eq!((d.ipv4.http_2xx, d.ipv4.http_3xx, d.ipv4.http_4xx, d.ipv4.http_5xx), (1, 1, 1, 1));
        // 192.0.2.0/24 and 198.51.100.0/24 (the mapped address is the same /24).
        assert_eq!((d.ipv4.http_bytes, d.ipv4.http_networks), (17, 2));
        // 2001:db8:1::/48 twice, 2001:db8:2::/48 once.
        assert_eq!((d.ipv6.http_2xx, d.ipv6.http_bytes, d.ipv6.http_networks), (3, 300, 2));
        assert_eq!(s.totals["epel"].ipv6.http_bytes, 300);
    }

    #[test]
    fn a_day_closes_two_days_on_and_forgets_its_salt_and_hashes() {
        let mut s = State::new();
        let mut salt = salts();
        s.http(&hit("192.0.2.1", 10, 200, 1, "p"), &mut salt);
        s.http(&hit("192.0.2.1", 11, 200, 1, "p"), &mut salt);
        // Late line of day 10: still counted once.
        s.http(&hit("192.0.2.1", 10, 200, 1, "p"), &mut salt);
        s.http(&hit("198.51.100.1", 10, 200, 1, "p"), &mut salt);
        assert_eq!(s.days[&10]["p"].ipv4.http_networks, 2);
        assert_ne!(s.open[&10].salt, s.open[&11].salt, "a salt per day");
        s.http(&hit("192.0.2.1", 12, 200, 1, "p"), &mut salt);
        assert_eq!(s.open.keys().copied().collect::<Vec<_>>(), [11, 12]);
        // Day 10 is closed: its requests count, its networks no longer can.
        s.http(&hit("203.0.113.1", 10, 200, 1, "p"), &mut salt);
        assert_eq!((s.days[&10]["p"].ipv4.http_2xx, s.days[&10]["p"].ipv4.http_networks), (4, 2));
        assert!(!s.open.contains_key(&10));
    }

    #[test]
    fn rsync_sessions_count_at_their_end_for_their_start_s_module() {
        let mut s = State::new();
        s.rsync_start(7, "debian", &"2001:db8::5".parse().unwrap(), 10);
        s.rsync_end(8, 999, 10); // a module list: never started
        s.rsync_end(7, 1234, 11);
        s.rsync_end(7, 1234, 11); // the pid is forgotten once ended
        let d = &s.days[&11]["debian"].ipv6;
        assert_eq!((d.rsync_sessions, d.rsync_bytes), (1, 1234));
        s.rsync_start(9, "debian", &"192.0.2.1".parse().unwrap(), 10);
        s.rsync_start(10, "debian", &"192.0.2.1".parse().unwrap(), 12);
        assert_eq!(s.sessions.keys().copied().collect::<Vec<_>>(), [10], "an unended session goes after a day");
    }

    #[test]
    fn four_hundred_days_are_kept() {
        let mut s = State::new();
        let mut salt = salts();
        for d in 0..450 {
            s.http(&hit("192.0.2.1", d, 200, 1, "p"), &mut salt);
        }
        s.prune();
        assert_eq!((s.days.len(), *s.days.keys().next().unwrap()), (400, 50));
        assert_eq!(s.totals["p"].ipv4.http_2xx, 450, "counters are never pruned");
        assert_eq!(s.document("n", 1).days[0].date, "1970-02-20");
    }

    #[test]
    fn metrics_are_counters_with_escaped_labels() {
        let mut s = State::new();
        s.http(&hit("192.0.2.1", 10, 200, 7, "epel"), &mut salts());
        s.skip("malformed");
        let m = s.metrics(99);
        for want in [
            "mm_traffic_http_requests_total{project=\"epel\",family=\"ipv4\",class=\"2xx\"} 1\n",
            "mm_traffic_http_bytes_total{project=\"epel\",family=\"ipv4\"} 7\n",
            "mm_traffic_http_networks{project=\"epel\",family=\"ipv4\"} 1\n",
            "mm_traffic_lines_skipped_total{reason=\"malformed\"} 1\n",
            "mm_traffic_last_run_timestamp_seconds 99\n",
        ] {
            assert!(m.contains(want), "{want} not in\n{m}");
        }
    }
}
