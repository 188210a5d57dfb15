//! What a run ended in, how it is recorded (status.json), and the exit code it gives.

/// The result of one run, as status.json and `--status` spell it, and the record itself: the
/// contract with mm-firstboot's console and the public document, so they live in mmconfig.
pub use mmconfig::sync::{SyncOutcome as Outcome, SyncRecord as SyncStatus};

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
    /// The upstream could not be reached or went silent: a failed run, recorded
    /// as one, that the unit does not count as failed (the timer retries; staleness alerts).
    UpstreamUnreachable = 11,
}

impl Exit {
    pub const ALL: [Exit; 9] = [
        Exit::Ok,
        Exit::BadConfig,
        Exit::Usage,
        Exit::SyncFailed,
        Exit::Inconsistent,
        Exit::NoSpace,
        Exit::NotPermitted,
        Exit::Busy,
        Exit::UpstreamUnreachable,
    ];

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
            Exit::UpstreamUnreachable => {
                "the upstream could not be reached or went silent (rsync exit 10, 30 or 35): the run failed and is recorded so, the previous tree is still served, the next scheduled run retries"
            }
        }
    }

    /// The exit status of a run that ended this way.
    pub fn of(run: &SyncStatus) -> Exit {
        match run.result {
            Outcome::Success => Exit::Ok,
            Outcome::Failed if run.rsync_exit.is_some_and(crate::stages::upstream_unreachable) => Exit::UpstreamUnreachable,
            // A run never records NeverRun; Running is what a killed run leaves.
            Outcome::NeverRun | Outcome::Running | Outcome::Failed => Exit::SyncFailed,
            Outcome::Inconsistent => Exit::Inconsistent,
            Outcome::NoSpace => Exit::NoSpace,
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
        let run = |result: Outcome, rsync_exit: Option<i32>| SyncStatus { result, rsync_exit, ..Default::default() };
        assert_eq!(Exit::of(&run(Outcome::NoSpace, None)).code(), 6);
        // An upstream that did not answer is no unit failure; one that answered wrongly is.
        for (code, exit) in [
            (10, Exit::UpstreamUnreachable),
            (35, Exit::UpstreamUnreachable),
            (5, Exit::SyncFailed),
            (23, Exit::SyncFailed),
            (12, Exit::SyncFailed),
        ] {
            assert_eq!(Exit::of(&run(Outcome::Failed, Some(code))), exit, "rsync exit {code}");
        }
        assert_eq!(Exit::of(&run(Outcome::Failed, None)), Exit::SyncFailed, "a failure after rsync (the trace, the index)");
        assert!(Exit::help().starts_with("EXIT STATUS: 0 success; 1 no or invalid configuration"), "{}", Exit::help());
    }
}
