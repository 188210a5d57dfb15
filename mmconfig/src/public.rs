//! The node's public freshness document, `http://<node>/.mm/status.json`: written by mm-sync, read by `mmbuild status`.
//!
//! Nothing private: no upstream URLs (they may carry credentials), no messages, logs or admin
//! addresses. Readers take documents of older and newer nodes: fields added later default.

use serde::{Deserialize, Serialize};

use crate::sync::SyncOutcome;

/// Version of the document's layout; bump when a field changes meaning.
pub const VERSION: u32 = 1;
/// Its URL path on every node, and its path under the data mount (nginx's root). nginx's
/// listings skip dot entries and rsync exports project directories only, so it shows up nowhere else.
pub const PATH: &str = "/.mm/status.json";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PublicProject {
    pub project: String,
    pub result: SyncOutcome,
    #[serde(default)]
    pub last_success_unix: Option<u64>,
    #[serde(default)]
    pub last_run_unix: Option<u64>,
    /// The upstream-written marker this node serves (relative to the project), and its time.
    #[serde(default)]
    pub upstream_marker: Option<String>,
    #[serde(default)]
    pub upstream_marker_unix: Option<u64>,
    #[serde(default)]
    pub tree_bytes: u64,
    #[serde(default)]
    pub check_errors: u64,
}

/// An image that rolled back: its version and time only (the gate's reasons stay on the node).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublicRollback {
    pub image_version: String,
    #[serde(default)]
    pub at_unix: Option<u64>,
}

impl From<&crate::os::Rollback> for PublicRollback {
    fn from(r: &crate::os::Rollback) -> Self {
        PublicRollback { image_version: r.version.clone(), at_unix: r.at }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PublicStatus {
    pub version: u32,
    #[serde(default)]
    pub node: String,
    /// `IMAGE_VERSION` of the running root's os-release; `None` on a host that is not our image
    /// (and absent from nodes built before images had versions).
    #[serde(default)]
    pub image_version: Option<String>,
    /// The newest image that failed its trial boots on this node, and when its gate last judged
    /// it; absent when none did (or on nodes before A/B slots).
    #[serde(default)]
    pub last_rollback: Option<PublicRollback>,
    #[serde(default)]
    pub generated_unix: u64,
    #[serde(default)]
    pub data_free_bytes: Option<u64>,
    #[serde(default)]
    pub data_total_bytes: Option<u64>,
    #[serde(default)]
    pub projects: Vec<PublicProject>,
}

impl PublicStatus {
    /// The path under the data mount where the document lives.
    pub fn rel_path() -> &'static str {
        PATH.trim_start_matches('/')
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_older_nodes_document_reads_with_defaults() {
        let old = r#"{"version":1,"projects":[{"project":"epel","result":"never-run"}]}"#;
        let doc: PublicStatus = serde_json::from_str(old).unwrap();
        assert_eq!((doc.image_version, doc.projects[0].result, doc.projects[0].check_errors), (None, SyncOutcome::NeverRun, 0));
        assert_eq!(PublicStatus::rel_path(), ".mm/status.json");
        assert_eq!(PublicStatus::rel_path().split('/').next(), Some(crate::PUBLIC_DIR));
    }
}
