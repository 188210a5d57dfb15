//! What a run ended in, how it is recorded (status.json), and the exit code it gives.

use serde::{Deserialize, Serialize};

/// The result of one run, as status.json and `--status` spell it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
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

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Running => "running",
            Outcome::Success => "success",
            Outcome::Failed => "failed",
            Outcome::Inconsistent => "inconsistent",
            Outcome::NoSpace => "no-space",
        }
    }

    /// The exit status of a run that ended this way.
    pub fn exit(self) -> Exit {
        match self {
            Outcome::Success => Exit::Ok,
            Outcome::Running | Outcome::Failed => Exit::SyncFailed,
            Outcome::Inconsistent => Exit::Inconsistent,
            Outcome::NoSpace => Exit::NoSpace,
        }
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Exit status of `mm-sync`; `--help` and docs/sync.md list [`Exit::ALL`] through [`Exit::help`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Ok = 0,
    BadConfig = 1,
    Usage = 2,
    SyncFailed = 4,
    Inconsistent = 5,
    NoSpace = 6,
    /// The account running the sync may not write where it writes (or does not own the tree).
    NotPermitted = 7,
    /// Another run of the same project holds the lock.
    Busy = 10,
}

impl Exit {
    pub const ALL: [Exit; 8] =
        [Exit::Ok, Exit::BadConfig, Exit::Usage, Exit::SyncFailed, Exit::Inconsistent, Exit::NoSpace, Exit::NotPermitted, Exit::Busy];

    pub fn code(self) -> u8 {
        self as u8
    }

    pub fn meaning(self) -> &'static str {
        match self {
            Exit::Ok => "success",
            Exit::BadConfig => "no or invalid configuration, unknown project",
            Exit::Usage => "wrong command line",
            Exit::SyncFailed => "rsync failed (the previous tree is still served)",
            Exit::Inconsistent => "the consistency check found problems",
            Exit::NoSpace => "not enough space on the data disk",
            Exit::NotPermitted => {
                "the account running it does not own the project's tree or may not write where a sync writes (each path is named)"
            }
            Exit::Busy => "another run of this project is in progress",
        }
    }

    /// The EXIT STATUS paragraph of --help and docs/sync.md.
    pub fn help() -> String {
        hostkit::exit_help(Exit::ALL.iter().map(|e| (e.code(), e.meaning())))
    }
}

impl From<Exit> for std::process::ExitCode {
    fn from(e: Exit) -> Self {
        std::process::ExitCode::from(e.code())
    }
}

/// What one run did; also the status file, so the last success survives failed runs.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct SyncStatus {
    pub project: String,
    pub upstream: String,
    pub result: Outcome,
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_read_back_as_written() {
        for o in [Outcome::Running, Outcome::Success, Outcome::Failed, Outcome::Inconsistent, Outcome::NoSpace] {
            let json = serde_json::to_string(&o).unwrap();
            assert_eq!(json, format!("\"{}\"", o.as_str()));
            assert_eq!(serde_json::from_str::<Outcome>(&json).unwrap(), o);
        }
        assert_eq!(Outcome::NoSpace.exit().code(), 6);
        assert!(Exit::help().starts_with("EXIT STATUS: 0 success; 1 no or invalid configuration"), "{}", Exit::help());
    }
}
