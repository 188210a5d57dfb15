//! mm-sync: keep a node's hosted projects in step with their upstreams.
//!
//! Pure parts (`stages`, `records`, `overview`, `outcome`, `repocheck`'s parsers) are apart from
//! the `engine`, which takes the lock, runs rsync and writes the records.

pub mod cli;
pub mod engine;
pub mod outcome;
pub mod overview;
pub mod permissions;
pub mod public;
pub mod records;
pub mod repocheck;
pub mod stages;
pub mod tracefacts;
pub mod traffic;

pub use engine::{check_project, gather_overview, load_status, sync_project, Env, Overrides};
pub use outcome::{Exit, Outcome, SyncStatus};

#[cfg(test)]
mod testdata;
