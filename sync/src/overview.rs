//! `mm-sync --status`: every project's last result, age and size, and the data disk's room.
//! Pure: the engine gathers the records, this module judges and renders them.

use mmconfig::Profile;
use serde::Serialize;

use crate::outcome::{Outcome, SyncStatus};

/// One line of `mm-sync --status`.
#[derive(Debug, Clone, Serialize)]
pub struct ProjectStatus {
    pub project: String,
    /// None: never run.
    #[serde(serialize_with = "result_or_never")]
    pub result: Option<Outcome>,
    pub last_success_unix: Option<u64>,
    pub age_seconds: Option<u64>,
    pub tree_bytes: u64,
    pub message: String,
    /// Overdue: no success within the profile's maximum interval.
    pub stale: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Overview {
    pub projects: Vec<ProjectStatus>,
    pub data_free_bytes: Option<u64>,
    pub data_total_bytes: Option<u64>,
    pub warnings: Vec<String>,
}

fn result_or_never<S: serde::Serializer>(r: &Option<Outcome>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(r.map_or("never run", Outcome::as_str))
}

/// Judge the records: `statuses` pairs each hosted profile with its last status, `space` is the
/// data filesystem's (free, total) bytes.
pub fn build(statuses: &[(&Profile, Option<SyncStatus>)], now: u64, space: Option<(u64, u64)>) -> Overview {
    let mut warnings = Vec::new();
    let mut growth = 0u64;
    let projects: Vec<ProjectStatus> = statuses
        .iter()
        .map(|(p, s)| {
            let last = s.as_ref().and_then(|s| s.last_success_unix);
            let age = last.map(|t| now.saturating_sub(t));
            let stale = age.is_none_or(|a| a > u64::from(p.sync.max_interval_minutes) * 60);
            growth += s.as_ref().map_or(0, |s| s.bytes_transferred);
            ProjectStatus {
                project: p.name.clone(),
                result: s.as_ref().map(|s| s.result),
                last_success_unix: last,
                age_seconds: age,
                tree_bytes: s.as_ref().map_or(0, |s| s.tree_bytes),
                message: s.as_ref().map(|s| s.message.clone()).unwrap_or_default(),
                stale,
            }
        })
        .collect();
    if let Some((free, total)) = space {
        if free < total / 10 {
            warnings.push(format!(
                "the data disk is {:.0}% full: {:.1} GB free",
                100.0 - free as f64 * 100.0 / total as f64,
                free as f64 / 1e9
            ));
        }
        if growth > 0 && free < growth.saturating_mul(2) {
            warnings.push(format!(
                "{:.1} GB free is less than two more syncs like the last ones ({:.1} GB each)",
                free as f64 / 1e9,
                growth as f64 / 1e9
            ));
        }
    }
    Overview { projects, data_free_bytes: space.map(|s| s.0), data_total_bytes: space.map(|s| s.1), warnings }
}

pub fn render_overview(o: &Overview) -> String {
    let mut s = format!("{:<18} {:<14} {:>12} {:>10}  {}\n", "PROJECT", "RESULT", "LAST SUCCESS", "SIZE", "MESSAGE");
    for p in &o.projects {
        let age = match p.age_seconds {
            Some(a) if a < 3600 => format!("{}m ago", a / 60),
            Some(a) if a < 172_800 => format!("{}h ago", a / 3600),
            Some(a) => format!("{}d ago", a / 86400),
            None => "never".into(),
        };
        let flag = if p.stale { " (OVERDUE)" } else { "" };
        s.push_str(&format!(
            "{:<18} {:<14} {:>12} {:>9.1}G  {}{flag}\n",
            p.project,
            p.result.map_or("never run", Outcome::as_str),
            age,
            p.tree_bytes as f64 / 1e9,
            p.message
        ));
    }
    if let (Some(free), Some(total)) = (o.data_free_bytes, o.data_total_bytes) {
        s.push_str(&format!("data disk: {:.1} GB free of {:.1} GB\n", free as f64 / 1e9, total as f64 / 1e9));
    }
    for w in &o.warnings {
        s.push_str(&format!("WARNING: {w}\n"));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testdata::node;

    #[test]
    fn overdue_never_run_and_a_filling_disk_are_reported() {
        let cfg = node("ziply");
        let p = &cfg.projects[0];
        let max = u64::from(p.sync.max_interval_minutes) * 60;
        let fresh = SyncStatus { result: Outcome::Success, last_success_unix: Some(1000), bytes_transferred: 40, ..Default::default() };
        let o = build(&[(p, Some(fresh.clone()))], 1000 + max, Some((500, 1000)));
        assert!(!o.projects[0].stale, "exactly at the maximum interval is not overdue");
        assert!(o.warnings.is_empty(), "{:?}", o.warnings);
        let o = build(&[(p, Some(fresh)), (p, None)], 1001 + max, Some((50, 1000)));
        assert!(o.projects[0].stale);
        assert!(o.projects[1].stale && o.projects[1].result.is_none());
        assert!(o.warnings[0].contains("95% full"), "{:?}", o.warnings);
        let text = render_overview(&o);
        assert!(text.contains("(OVERDUE)") && text.contains("never run"), "{text}");
        let json = serde_json::to_value(&o).unwrap();
        assert_eq!(json["projects"][1]["result"], "never run");
    }
}
