//! The report's numbers (pure): a node's traffic document summed per project, day and month over the window.

use std::collections::BTreeMap;

use mmconfig::fleet_report::{Counts, DayCounts, FleetReport, MonthCounts, NodeEntry};
use mmconfig::traffic::{self, ProjectDay, TrafficDoc};

/// The window: `days` UTC days ending with day number `last` (days since 1970-01-01).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub last: i64,
    pub days: u32,
}

impl Window {
    pub fn ending(unix: u64, days: u32) -> Window {
        Window { last: i64::try_from(unix / 86_400).unwrap_or(0), days: days.max(1) }
    }
    pub fn first(&self) -> i64 {
        self.last - i64::from(self.days) + 1
    }
    pub fn contains(&self, day: i64) -> bool {
        (self.first()..=self.last).contains(&day)
    }
    /// Every date of the window, oldest first.
    pub fn dates(&self) -> Vec<String> {
        (self.first()..=self.last).map(traffic::date_of).collect()
    }
}

/// One project's day as the report counts it.
pub fn counts_of(p: &ProjectDay) -> Counts {
    Counts {
        bytes: p.bytes(),
        ipv6_bytes: p.ipv6.bytes(),
        http_requests: p.ipv4.requests() + p.ipv6.requests(),
        rsync_sessions: p.ipv4.rsync_sessions + p.ipv6.rsync_sessions,
    }
}

/// The figures of one node's document inside the window: per day (days with traffic), per
/// month, per project and in all. Days outside the window or not dates are left out.
pub struct NodeFigures {
    pub days: Vec<DayCounts>,
    pub months: Vec<MonthCounts>,
    pub projects: BTreeMap<String, Counts>,
    pub totals: Counts,
}

pub fn node_figures(doc: &TrafficDoc, window: Window) -> NodeFigures {
    let mut by_day: BTreeMap<i64, BTreeMap<String, Counts>> = BTreeMap::new();
    for d in &doc.days {
        let Some(n) = traffic::day_of(&d.date).filter(|n| window.contains(*n)) else { continue };
        let day = by_day.entry(n).or_default();
        for (project, p) in &d.projects {
            day.entry(project.clone()).or_default().add(&counts_of(p));
        }
    }
    let days: Vec<DayCounts> = by_day.into_iter().map(|(n, projects)| DayCounts { date: traffic::date_of(n), projects }).collect();
    let months = months_of(&days);
    let mut projects: BTreeMap<String, Counts> = BTreeMap::new();
    let mut totals = Counts::default();
    for d in &days {
        for (p, c) in &d.projects {
            projects.entry(p.clone()).or_default().add(c);
            totals.add(c);
        }
    }
    NodeFigures { days, months, projects, totals }
}

/// Days summed per calendar month (`YYYY-MM`), oldest first.
pub fn months_of(days: &[DayCounts]) -> Vec<MonthCounts> {
    let mut by_month: BTreeMap<String, BTreeMap<String, Counts>> = BTreeMap::new();
    for d in days {
        let month = d.date.get(..7).unwrap_or(&d.date).to_string();
        let m = by_month.entry(month).or_default();
        for (p, c) in &d.projects {
            m.entry(p.clone()).or_default().add(c);
        }
    }
    by_month.into_iter().map(|(month, projects)| MonthCounts { month, projects }).collect()
}

/// Sum the nodes' days into the fleet's, every day of the window present (zero when quiet).
pub fn sum_days<'a>(nodes: impl IntoIterator<Item = &'a NodeEntry>, window: Window) -> Vec<DayCounts> {
    let dates = window.dates();
    let mut out: Vec<DayCounts> = dates.iter().map(|d| DayCounts { date: d.clone(), projects: BTreeMap::new() }).collect();
    for n in nodes {
        for d in &n.days {
            let Some(i) = traffic::day_of(&d.date).filter(|x| window.contains(*x)).map(|x| (x - window.first()) as usize) else {
                continue;
            };
            for (p, c) in &d.projects {
                out[i].projects.entry(p.clone()).or_default().add(c);
            }
        }
    }
    out
}

/// The fleet's totals and per-project sums, from its nodes' entries.
pub fn fleet_totals(r: &mut FleetReport) {
    (r.totals, r.projects) = sums(&r.nodes);
}

/// The totals and per-project sums of `nodes` (the fleet's, or one sponsor's).
pub fn sums<'a>(nodes: impl IntoIterator<Item = &'a NodeEntry>) -> (Counts, BTreeMap<String, Counts>) {
    let mut totals = Counts::default();
    let mut projects: BTreeMap<String, Counts> = BTreeMap::new();
    for n in nodes {
        totals.add(&n.totals);
        for (p, c) in &n.projects {
            projects.entry(p.clone()).or_default().add(c);
        }
    }
    (totals, projects)
}

/// The IPv6 share of `c`'s bytes, in percent with one decimal (`42.5 %`); `-` when nothing was served.
pub fn ipv6_share(c: &Counts) -> String {
    if c.bytes == 0 {
        return "-".to_string();
    }
    // Integer per-mille, rounded half up, so the figure is exact and stable across platforms.
    let permille = (u128::from(c.ipv6_bytes) * 1000 + u128::from(c.bytes) / 2) / u128::from(c.bytes);
    format!("{}.{} %", permille / 10, permille % 10)
}

/// Bytes in binary units, three significant figures: `0 B`, `512 B`, `1.50 KiB`, `42.0 GiB`, `1.23 TiB`.
pub fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    if b < 1024 {
        return format!("{b} B");
    }
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    let text = if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    };
    format!("{text} {}", UNITS[u])
}

/// `12`, `1 234`, `12 345 678`: thousands apart, for counts.
pub fn grouped(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push('\u{202f}');
        }
        out.push(c);
    }
    out
}

/// A file-name-safe slug of a sponsor's name: lower-case ASCII letters and digits, `-` between words.
pub fn slug(name: &str) -> String {
    let mut out = String::new();
    for c in name.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('-') && !out.is_empty() {
            out.push('-');
        }
    }
    let out = out.trim_end_matches('-').chars().take(48).collect::<String>();
    if out.is_empty() {
        "sponsor".to_string()
    } else {
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mmconfig::traffic::{Day, FamilyDay};

    fn fam(bytes: u64, rsync: u64, reqs: u64) -> FamilyDay {
        FamilyDay { http_2xx: reqs, http_bytes: bytes, rsync_bytes: rsync, rsync_sessions: u64::from(rsync > 0), ..Default::default() }
    }

    fn day(date: &str, project: &str, v4: FamilyDay, v6: FamilyDay) -> Day {
        Day { date: date.into(), projects: [(project.to_string(), ProjectDay { ipv4: v4, ipv6: v6 })].into() }
    }

    #[test]
    fn months_sum_their_days_and_the_window_cuts_both_ends() {
        let doc = TrafficDoc {
            version: 1,
            node: "n".into(),
            generated_unix: 0,
            days: vec![
                day("2026-10-31", "arch", fam(999, 0, 1), FamilyDay::default()), // before the window
                day("2026-11-29", "arch", fam(100, 0, 2), fam(50, 0, 1)),
                day("2026-11-30", "arch", fam(10, 5, 1), FamilyDay::default()),
                day("2026-11-30", "epel", FamilyDay::default(), fam(7, 0, 1)),
                day("2026-12-01", "arch", fam(1, 0, 1), fam(2, 3, 1)),
                day("not-a-date", "arch", fam(5, 0, 1), FamilyDay::default()),
                day("2026-12-08", "arch", fam(5, 0, 1), FamilyDay::default()), // after it
            ],
        };
        let w = Window { last: traffic::day_of("2026-12-07").unwrap(), days: 10 };
        assert_eq!(traffic::date_of(w.first()), "2026-11-28");
        let f = node_figures(&doc, w);
        assert_eq!(f.days.iter().map(|d| d.date.as_str()).collect::<Vec<_>>(), ["2026-11-29", "2026-11-30", "2026-12-01"]);
        let months: Vec<(&str, &str, u64, u64)> = f
            .months
            .iter()
            .flat_map(|m| m.projects.iter().map(move |(p, c)| (m.month.as_str(), p.as_str(), c.bytes, c.ipv6_bytes)))
            .collect();
        assert_eq!(months, [("2026-11", "arch", 165, 50), ("2026-11", "epel", 7, 7), ("2026-12", "arch", 6, 5)]);
        assert_eq!(f.projects["arch"], Counts { bytes: 171, ipv6_bytes: 55, http_requests: 6, rsync_sessions: 2 });
        assert_eq!(f.totals.bytes, 178);
        let fleet = sum_days([&NodeEntry { days: f.days.clone(), ..Default::default() }], w);
        assert_eq!(fleet.len(), 10, "every day of the window");
        assert_eq!((fleet[1].projects["arch"].bytes, fleet[2].projects["arch"].bytes), (150, 15));
        assert!(fleet[0].projects.is_empty());
    }

    #[test]
    fn ipv6_share_rounds_and_says_when_there_is_nothing() {
        let c = |bytes, ipv6_bytes| Counts { bytes, ipv6_bytes, ..Default::default() };
        assert_eq!(ipv6_share(&c(0, 0)), "-");
        assert_eq!(ipv6_share(&c(1000, 425)), "42.5 %");
        assert_eq!(ipv6_share(&c(3, 1)), "33.3 %");
        assert_eq!(ipv6_share(&c(3, 2)), "66.7 %");
        assert_eq!(ipv6_share(&c(7, 7)), "100.0 %");
        assert_eq!(ipv6_share(&c(u64::MAX, u64::MAX / 2)), "50.0 %", "no overflow");
    }

    #[test]
    fn human_units_and_slugs() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.50 KiB");
        assert_eq!(human_bytes(42 << 30), "42.0 GiB");
        assert_eq!(human_bytes(300 << 40), "300 TiB");
        assert_eq!(grouped(12_345_678), "12\u{202f}345\u{202f}678");
        assert_eq!(grouped(999), "999");
        assert_eq!(slug("Ziply Fiber, Inc."), "ziply-fiber-inc");
        assert_eq!(slug("<script>alert(1)</script>"), "script-alert-1-script");
        assert_eq!(slug("../../"), "sponsor");
    }
}
