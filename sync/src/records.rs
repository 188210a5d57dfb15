//! What a finished run leaves for others to read: the ftpsync-style trace for mirror checkers and
//! the Prometheus textfile metrics for node_exporter. Pure renderers.

use mmconfig::{NodeConfig, Profile, SyncMethod};

use crate::outcome::{Outcome, SyncStatus};

/// RFC 2822 date in UTC, as ftpsync writes in trace files.
pub fn rfc2822(unix: u64) -> String {
    let c = mmconfig::marker::Civil::from_unix(unix);
    format!("{}, {:02} {} {} {} +0000", c.weekday, c.day, c.month_name(), c.year, c.hms())
}

/// An ftpsync-style trace: what mirror checkers (Debian's, Ubuntu's) read for freshness.
pub fn render_trace(cfg: &NodeConfig, p: &Profile, upstream: &str, st: &SyncStatus) -> String {
    let upstream_host = upstream.trim_start_matches("rsync://").split(['/', ':']).next().unwrap_or(upstream);
    let rate = if st.seconds > 0.0 { (st.bytes_received as f64 / st.seconds) as u64 } else { 0 };
    format!(
        "{date}\nDate: {date}\nDate-Started: {started}\nArchive serial: {serial}\nUsed mm-sync version: {ver}\n\
Running on host: {host}\nMaintainer: {contact}\nSponsor: {sponsor}\nUpstream-mirror: {up}\nSync-method: {method}\n\
Total bytes received in rsync: {rx}\nTotal time spent in rsync: {secs}\nAverage rate: {rate} B/s\n",
        date = rfc2822(st.finished_unix),
        started = rfc2822(st.started_unix),
        serial = st.finished_unix,
        ver = env!("CARGO_PKG_VERSION"),
        host = cfg.node.fqdn,
        contact = mmconfig::plain(&cfg.fleet.contact),
        sponsor = mmconfig::plain(&cfg.node.sponsor.name),
        up = upstream_host,
        method = match p.sync.method {
            SyncMethod::Single => "rsync",
            SyncMethod::TwoStage => "rsync two-stage",
        },
        rx = st.bytes_received,
        secs = st.seconds.round() as u64,
    )
}

/// Prometheus textfile metrics for node_exporter.
pub fn render_metrics(st: &SyncStatus, tree_free_bytes: Option<u64>) -> String {
    let l = format!("{{project=\"{}\"}}", st.project.replace(['"', '\\', '\n'], "_"));
    let mut m = String::new();
    let mut g = |name: &str, help: &str, v: String| {
        m.push_str(&format!("# HELP {name} {help}\n# TYPE {name} gauge\n{name}{l} {v}\n"));
    };
    g("mm_sync_last_success_timestamp_seconds", "End of the last successful sync.", st.last_success_unix.unwrap_or(0).to_string());
    g("mm_sync_last_run_timestamp_seconds", "End of the last sync run.", st.finished_unix.to_string());
    g("mm_sync_last_run_success", "1 if the last run succeeded.", u8::from(st.result == Outcome::Success).to_string());
    g("mm_sync_last_run_duration_seconds", "Duration of the last run.", format!("{:.3}", st.seconds));
    g("mm_sync_last_run_files_transferred", "Files transferred by the last run.", st.files_transferred.to_string());
    g("mm_sync_last_run_bytes_transferred", "File bytes transferred by the last run.", st.bytes_transferred.to_string());
    g("mm_sync_tree_bytes", "Size of the upstream tree at the last run.", st.tree_bytes.to_string());
    g("mm_sync_check_errors", "Problems found by the last consistency check.", st.check_errors.to_string());
    if let Some(free) = tree_free_bytes {
        g("mm_sync_data_free_bytes", "Free bytes on the data filesystem.", free.to_string());
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(rfc2822(0), "Thu, 01 Jan 1970 00:00:00 +0000");
        assert_eq!(rfc2822(1_795_574_348), "Wed, 25 Nov 2026 02:39:08 +0000");
    }

    #[test]
    fn metrics_are_prometheus_text() {
        let st = SyncStatus { project: "epel".into(), result: Outcome::Success, last_success_unix: Some(5), ..Default::default() };
        let m = render_metrics(&st, Some(7));
        assert!(m.contains("mm_sync_last_success_timestamp_seconds{project=\"epel\"} 5\n"));
        assert!(m.contains("mm_sync_last_run_success{project=\"epel\"} 1\n"));
        assert!(m.contains("mm_sync_data_free_bytes{project=\"epel\"} 7\n"));
    }
}
