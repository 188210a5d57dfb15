//! mmbuild as a library, one folder per stage of an operator's path: the inventory, the image,
//! shipping it, boot-testing it, day 2, monitoring and registration.
//! The `mmbuild` binary is a thin CLI over these modules; integration tests use them directly.

pub mod boottest;
pub mod cli;
pub mod day2;
pub mod image;
pub mod inventory;
pub mod monitor;
pub mod registration;
pub mod ship;

/// Exit status of `mmbuild`: one enum, listed by `--help` and README.md through [`exit::Exit::help`]
/// (a test holds the three to the same text). Verbs return an [`exit::Exit`] or an error, and
/// `main` turns either into the process's status in one place.
pub mod exit {
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Exit {
        Ok = 0,
        InvalidInput = 1,
        Usage = 2,
        Environment = 3,
        BuildFailed = 4,
        NotReady = 5,
        NodesFailed = 6,
        Refused = 7,
    }

    impl Exit {
        pub const ALL: [Exit; 8] = [
            Exit::Ok,
            Exit::InvalidInput,
            Exit::Usage,
            Exit::Environment,
            Exit::BuildFailed,
            Exit::NotReady,
            Exit::NodesFailed,
            Exit::Refused,
        ];

        pub fn meaning(self) -> &'static str {
            match self {
                Exit::Ok => "success",
                Exit::InvalidInput => "invalid fleet, profile or hardware file (every error is printed as FILE:LINE:COL: error: ...)",
                Exit::Usage => "wrong command line",
                Exit::Environment => {
                    "a host tool is missing or the environment is unusable (also: the host key state directory lost, unreadable \
                     or too open; the message says what to do)"
                }
                Exit::BuildFailed => "a build step failed (`write`: writing or the read-back check failed)",
                Exit::NotReady => {
                    "`export registrations --check` wrote the applications but found one not ready, or `status`/`report`: at \
                     least one node is not healthy (`report` still writes its pages)"
                }
                Exit::NodesFailed => {
                    "`plan`/`apply`: a node could not be reached, failed or needs attention (the others were still done); \
                     `boot-test`: a node failed a check"
                }
                Exit::Refused => "`write` refused the target or the source and wrote nothing (the message says why and what to do)",
            }
        }

        pub fn help() -> String {
            hostkit::exit_help(Exit::ALL.iter().map(|e| (*e as u8, e.meaning())))
        }
    }

    impl From<Exit> for std::process::ExitCode {
        fn from(e: Exit) -> Self {
            std::process::ExitCode::from(e as u8)
        }
    }

    /// The operator's input is wrong (exit 1). The text already says where and why (diagnostics
    /// as FILE:LINE:COL, or one `mmbuild: error:` line); `main` prints it as it is. Callers match
    /// the type, never the text.
    #[derive(Debug)]
    pub struct Invalid(String);

    impl Invalid {
        /// Diagnostics printed as they are (each line ends in a newline).
        pub fn diagnostics(d: impl std::fmt::Display) -> Self {
            Invalid(d.to_string())
        }

        /// One line, `mmbuild: error: MESSAGE`.
        pub fn error(message: impl std::fmt::Display) -> Self {
            Invalid(format!("mmbuild: error: {message}\n"))
        }
    }

    impl std::fmt::Display for Invalid {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0.trim_end_matches('\n'))
        }
    }

    impl std::error::Error for Invalid {}

    /// Stop a verb with exit 1: `return invalid(format!(...))`.
    pub fn invalid<T>(message: impl std::fmt::Display) -> anyhow::Result<T> {
        Err(Invalid::error(message).into())
    }
}
