//! mm-firstboot and mm-sync: bring a micro-mirror node to the state its configuration describes.

pub mod accounts;
pub mod adopt;
pub mod apply;
pub mod bonding;
pub mod cli;
pub mod config;
pub mod console;
pub mod desired;
pub mod files;
pub mod hostkey;
pub mod install;
pub mod installer;
pub mod network;
pub mod os;
pub mod plan;
pub mod probe;
pub mod readback;
pub mod run;
pub mod services;
pub mod standin;
pub mod storage;
pub mod upstream;

#[cfg(test)]
mod testdata;

/// Exit status of `mm-firstboot`; `--help` and docs/firstboot.md list [`Exit::ALL`] through [`Exit::help`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Ok = 0,
    BadConfig = 1,
    Usage = 2,
    NeedsHands = 3,
    Failed = 4,
}

impl Exit {
    pub const ALL: [Exit; 5] = [Exit::Ok, Exit::BadConfig, Exit::Usage, Exit::NeedsHands, Exit::Failed];

    pub fn meaning(self) -> &'static str {
        match self {
            Exit::Ok => "all good",
            Exit::BadConfig => "no or invalid configuration",
            Exit::Usage => "wrong command line",
            Exit::NeedsHands => {
                "converged as far as possible but something needs hands: a missing disk, no link, foreign data, or a step that \
                 failed (reported, the rest still converged, retried by the next run)"
            }
            Exit::Failed => "the run itself stopped (the disks could not be read, files or the state could not be written)",
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
