//! `report.json`, what `mmbuild report` writes beside the fleet's pages and reads back next run.
//!
//! The same numbers as the pages. The previous run's file is the memory of a node's last known
//! figures: a node that does not answer keeps them, with the time they were gathered.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Version of the layout; bump when a field changes meaning.
pub const VERSION: u32 = 1;
/// File name in the report's directory.
pub const FILE: &str = "report.json";

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FleetReport {
    pub version: u32,
    pub fleet: String,
    pub generated_unix: u64,
    /// The window shown: `since_days` UTC days ending with `last_day`, both `YYYY-MM-DD`.
    pub since_days: u32,
    pub first_day: String,
    pub last_day: String,
    /// No node failed a check (`mmbuild status`'s verdict).
    pub healthy: bool,
    /// Every node's figures summed (last known ones included), over the window.
    pub totals: Counts,
    /// Per project, over the window.
    pub projects: BTreeMap<String, Counts>,
    /// The fleet's traffic per day, oldest first, every day of the window.
    pub days: Vec<DayCounts>,
    /// In inventory order.
    pub nodes: Vec<NodeEntry>,
}

/// Served bytes and requests; `bytes` counts both families, `ipv6_bytes` the IPv6 part of them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Counts {
    pub bytes: u64,
    pub ipv6_bytes: u64,
    pub http_requests: u64,
    pub rsync_sessions: u64,
}

impl Counts {
    pub fn add(&mut self, o: &Counts) {
        self.bytes += o.bytes;
        self.ipv6_bytes += o.ipv6_bytes;
        self.http_requests += o.http_requests;
        self.rsync_sessions += o.rsync_sessions;
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DayCounts {
    /// `YYYY-MM-DD`, UTC.
    pub date: String,
    pub projects: BTreeMap<String, Counts>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MonthCounts {
    /// `YYYY-MM`, UTC.
    pub month: String,
    pub projects: BTreeMap<String, Counts>,
}

/// One node: this run's verdict, and its figures (this run's, or the last known ones).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeEntry {
    pub node: String,
    pub fqdn: String,
    pub sponsor: String,
    pub sponsor_url: String,
    /// `status`'s verdict this run: `ok`, `warn` or `fail`.
    pub state: String,
    /// `status`'s findings this run, worst first.
    pub findings: Vec<String>,
    /// The node's traffic document was fetched this run: the figures below are current.
    pub answered: bool,
    /// Why not, when it was not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// When the figures below were gathered (this run, or the run that last reached the node);
    /// None: never reached.
    pub figures_unix: Option<u64>,
    pub image_version: Option<String>,
    pub lag: Vec<ProjectLag>,
    pub totals: Counts,
    pub projects: BTreeMap<String, Counts>,
    /// Days with traffic, oldest first.
    pub days: Vec<DayCounts>,
    /// Months with traffic, oldest first.
    pub months: Vec<MonthCounts>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProjectLag {
    pub project: String,
    /// Seconds behind the upstream (or since the node's last sync); None: not measured.
    pub lag_seconds: Option<u64>,
    pub allowed_seconds: u64,
}
