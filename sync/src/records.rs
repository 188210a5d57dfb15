//! What a finished run leaves for others to read: the ftpsync-style trace for mirror checkers and
//! the Prometheus textfile metrics for node_exporter. Pure renderers.

use mmconfig::marker::Civil;
use mmconfig::NodeConfig;

use crate::outcome::{Outcome, SyncStatus};

/// What a trace reports about the synced tree itself ([`crate::tracefacts`] reads it).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TreeFacts {
    /// `Archive serial` of the upstream's `project/trace/master`, which ftpsync copies.
    pub serial: Option<String>,
    /// Debian architecture names whose indexes the tree carries (`all`, `amd64`, `source`),
    /// sorted; empty for a tree that is not a Debian-format archive.
    pub architectures: Vec<String>,
}

/// The trace ftpsync writes, so that the checkers built for ftpsync read it: the first line is
/// `date -u` (Debian's mirror-status and `Mirror::Trace` parse it with
/// `%a %b %d %H:%M:%S UTC %Y` and call anything else an invalid trace), then `Key: value` lines
/// under the keys ftpsync uses (archvsync's README, "Mirror trace files"). The software is named
/// under `Creator` only: `Used ftpsync version` with a version that is not ftpsync's would make
/// `Mirror::Trace` call the mirror an old ftpsync and disable it.
pub fn render_trace(cfg: &NodeConfig, upstream: &str, st: &SyncStatus, tree: &TreeFacts) -> String {
    let upstream_host = upstream.trim_start_matches("rsync://").split(['/', ':']).next().unwrap_or(upstream);
    let rate = if st.seconds > 0.0 { (st.bytes_received as f64 / st.seconds) as u64 } else { 0 };
    let finished = Civil::from_unix(st.finished_unix);
    let mut t =
        format!("{}\nDate: {}\nDate-Started: {}\n", finished.date_u(), finished.rfc2822(), Civil::from_unix(st.started_unix).rfc2822());
    if let Some(serial) = &tree.serial {
        t.push_str(&format!("Archive serial: {serial}\n"));
    }
    t.push_str(&format!(
        "Creator: mm-sync {ver}\nRunning on host: {host}\nMaintainer: {contact}\nSponsor: {sponsor} <{url}>\n",
        ver = env!("CARGO_PKG_VERSION"),
        host = cfg.node.fqdn,
        contact = mmconfig::plain(&cfg.fleet.contact),
        sponsor = mmconfig::plain(&cfg.node.sponsor.name),
        url = mmconfig::plain(&cfg.node.sponsor.url),
    ));
    if !tree.architectures.is_empty() {
        t.push_str(&format!("Architectures: {}\n", tree.architectures.join(" ")));
    }
    t.push_str(&format!(
        "Upstream-mirror: {upstream_host}\nTotal bytes received in rsync: {rx}\nTotal time spent in rsync: {secs}\nAverage rate: {rate} B/s\n",
        rx = st.bytes_received,
        secs = st.seconds.round() as u64,
    ));
    t
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

    /// Keys an ftpsync trace may carry (archvsync's README, "Mirror trace files", and
    /// bin/ftpsync's tracefile()).
    const FTPSYNC_KEYS: [&str; 21] = [
        "Date",
        "Date-Started",
        "Archive serial",
        "Used ftpsync version",
        "Creator",
        "Running on host",
        "Maintainer",
        "Sponsor",
        "Country",
        "Location",
        "Throughput",
        "Trigger",
        "Architectures",
        "Architectures-Configuration",
        "Upstream-mirror",
        "Rsync-Transport",
        "Total bytes received in rsync",
        "Total time spent in stage1 rsync",
        "Total time spent in stage2 rsync",
        "Total time spent in rsync",
        "Average rate",
    ];

    /// Python reads the trace as Debian's checkers do: the first line with strptime and
    /// `%a %b %d %H:%M:%S UTC %Y` (mirror-status), every other line as `Key: value` with a
    /// `[\w -]+` key (Mirror::Trace), `Date` and `Date-Started` as RFC 2822 (email.utils).
    fn read_as_debian_does(trace: &str) -> serde_json::Value {
        let script = r#"
import calendar, datetime, email.utils, json, re, sys
lines = sys.stdin.read().split("\n")
assert lines[-1] == "", "the trace ends with a newline"
first = datetime.datetime.strptime(lines[0], "%a %b %d %H:%M:%S UTC %Y")
fields = {}
for line in lines[1:-1]:
    m = re.match(r"^([\w -]+): (.*)$", line)
    assert m, "not a Key: value line: %r" % line
    fields[m.group(1)] = m.group(2)
out = {"first": calendar.timegm(first.timetuple()), "fields": fields}
for k in ("Date", "Date-Started"):
    out[k] = int(email.utils.parsedate_to_datetime(fields[k]).timestamp())
json.dump(out, sys.stdout)
"#;
        let mut child = std::process::Command::new("python3")
            .args(["-c", script])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("python3 runs");
        use std::io::Write;
        child.stdin.take().unwrap().write_all(trace.as_bytes()).unwrap();
        let o = child.wait_with_output().unwrap();
        assert!(o.status.success(), "python rejects the trace:\n{trace}\n{}", String::from_utf8_lossy(&o.stderr));
        serde_json::from_slice(&o.stdout).unwrap()
    }

    #[test]
    fn the_trace_reads_as_ftpsyncs_to_debians_checkers() {
        let cfg = crate::testdata::node("hurricane");
        // Finished Sun Dec  6 12:00:00 UTC 2026 (a single-digit day, space-padded by date -u).
        let st = SyncStatus {
            project: "debian".into(),
            result: Outcome::Success,
            started_unix: 1_796_557_800,
            finished_unix: 1_796_558_400,
            seconds: 600.0,
            bytes_received: 6_000_000,
            ..Default::default()
        };
        let tree = TreeFacts { serial: Some("2026120601".into()), architectures: vec!["all".into(), "amd64".into(), "source".into()] };
        let trace = render_trace(&cfg, "rsync://upstream.example:873/debian/", &st, &tree);
        assert!(trace.starts_with("Sun Dec  6 12:00:00 UTC 2026\nDate: Sun, 06 Dec 2026 12:00:00 +0000\n"), "{trace}");
        let got = read_as_debian_does(&trace);
        assert_eq!(
            (got["first"].as_u64(), got["Date"].as_u64(), got["Date-Started"].as_u64()),
            (Some(1_796_558_400), Some(1_796_558_400), Some(1_796_557_800))
        );
        let fields = got["fields"].as_object().unwrap();
        for key in fields.keys() {
            assert!(FTPSYNC_KEYS.contains(&key.as_str()), "{key} is no ftpsync key");
        }
        let f = |k: &str| fields[k].as_str().unwrap().to_string();
        assert_eq!(f("Archive serial"), "2026120601");
        assert_eq!(f("Architectures"), "all amd64 source");
        assert_eq!(f("Running on host"), "hurricane.mm.example.net");
        assert_eq!(f("Sponsor"), "Hurricane Electric <https://he.net/>");
        assert_eq!(f("Upstream-mirror"), "upstream.example");
        assert_eq!((f("Total time spent in rsync"), f("Average rate")), ("600".into(), "10000 B/s".into()));
        assert!(f("Creator").starts_with("mm-sync ") && !fields.contains_key("Used ftpsync version"));

        // A tree that is no Debian archive: no serial, no Architectures line.
        let plain = render_trace(&cfg, "rsync://upstream.example/epel/", &st, &TreeFacts::default());
        let fields = read_as_debian_does(&plain)["fields"].as_object().unwrap().clone();
        assert!(!fields.contains_key("Architectures") && !fields.contains_key("Archive serial"), "{plain}");
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
