//! mm-sync's record of a project's last run (`<SYNC_STATE_DIR>/<project>/status.json`) and its outcome, as mm-firstboot and the public document read them.

use serde::{Deserialize, Serialize};

/// How a project's sync stands. mm-sync records every value but [`SyncOutcome::NeverRun`], which
/// readers use for a project without a record.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SyncOutcome {
    /// No run has been recorded yet.
    NeverRun,
    /// Written when a run starts: found by the next run if this one is killed.
    #[default]
    Running,
    Success,
    /// rsync failed; the previous tree is still served.
    Failed,
    /// The consistency check found problems in the new tree.
    Inconsistent,
    /// Refused before starting: the sync would not fit on the data disk.
    NoSpace,
}

impl SyncOutcome {
    pub const ALL: [SyncOutcome; 6] = [
        SyncOutcome::NeverRun,
        SyncOutcome::Running,
        SyncOutcome::Success,
        SyncOutcome::Failed,
        SyncOutcome::Inconsistent,
        SyncOutcome::NoSpace,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SyncOutcome::NeverRun => "never-run",
            SyncOutcome::Running => "running",
            SyncOutcome::Success => "success",
            SyncOutcome::Failed => "failed",
            SyncOutcome::Inconsistent => "inconsistent",
            SyncOutcome::NoSpace => "no-space",
        }
    }

    /// A state the project is expected to pass through on its way to a first success, not a fault.
    pub fn is_healthy(self) -> bool {
        matches!(self, SyncOutcome::NeverRun | SyncOutcome::Running | SyncOutcome::Success)
    }
}

impl std::fmt::Display for SyncOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What one run did; also the status file, so the last success survives failed runs.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct SyncRecord {
    pub project: String,
    pub upstream: String,
    pub result: SyncOutcome,
    pub message: String,
    pub started_unix: u64,
    pub finished_unix: u64,
    pub seconds: f64,
    pub files_transferred: u64,
    #[serde(default)]
    pub files_deleted: u64,
    /// Sum of the sizes of the files rsync transferred (what the disk had to take).
    pub bytes_transferred: u64,
    /// Bytes received on the wire.
    pub bytes_received: u64,
    /// Size of the upstream tree as rsync saw it.
    pub tree_bytes: u64,
    pub check_errors: usize,
    pub last_success_unix: Option<u64>,
    pub log: String,
    /// The exit status of the rsync stage that failed the run, when one did: it tells an upstream
    /// that did not answer from one that answered wrongly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rsync_exit: Option<i32>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_read_back_as_written() {
        for o in SyncOutcome::ALL {
            let json = serde_json::to_string(&o).unwrap();
            assert_eq!(json, format!("\"{}\"", o.as_str()));
            assert_eq!(serde_json::from_str::<SyncOutcome>(&json).unwrap(), o);
        }
        assert!(serde_json::from_str::<SyncOutcome>("\"done\"").is_err());
    }
}
