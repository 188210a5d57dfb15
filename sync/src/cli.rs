//! mm-sync's command line (the binary, the man page and the completions are made from it).

use std::path::PathBuf;

use clap::Parser;
use mmconfig::INSTALLED_CONFIG;

use crate::Exit;

/// `--version`: the crate version and the git commit the binary was built from.
pub const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (", env!("MM_GIT_COMMIT"), ")");

#[derive(Parser)]
#[command(
    name = "mm-sync",
    version = crate::cli::VERSION,
    about = "Keep one hosted project in step with its upstream mirror",
    long_about = "mm-sync PROJECT runs the real rsync the way the project's profile says: one pass, or \
two stages for apt-style archives (everything but the indexes first, then the indexes with deletes last, \
so clients never see an index pointing at a file not yet there). One run per project at a time (a lock \
under /var/lib/micromirror/sync/PROJECT); files a killed run left are cleaned first; a run that would not \
fit on the data disk is refused. Only after a successful run and consistency check is the project's trace \
file (TRACE_DIR/FQDN) written, so mirror checkers can trust it. Every run leaves status.json, a log under \
/var/lib/micromirror/sync/PROJECT/logs and Prometheus metrics in /var/lib/prometheus/node-exporter.",
    after_long_help = Exit::help()
)]
pub struct Cli {
    /// The project to sync (or to check with --check).
    pub project: Option<String>,
    /// Check the tree against its apt/rpm indexes instead of syncing.
    #[arg(long, requires = "project")]
    pub check: bool,
    /// Show every project: last success, age, result, size, free space.
    #[arg(long, conflicts_with_all = ["project", "check"])]
    pub status: bool,
    /// Count what the node served since the last run, per project, from nginx's and rsyncd's
    /// logs: the public /.mm/traffic.json (daily totals, no addresses) and the mm_traffic_*
    /// metrics. Run every 5 minutes by mm-traffic.timer.
    #[arg(long, conflicts_with_all = ["project", "check", "status"])]
    pub traffic: bool,
    /// Machine-readable output for --check and --status.
    #[arg(long)]
    pub json: bool,
    /// Also verify the SHA256 of every package file (reads the whole tree).
    #[arg(long)]
    pub deep: bool,
    /// Bandwidth cap in KiB/s for this run (default: the node's, else the profile's).
    #[arg(long, value_name = "KBPS")]
    pub bwlimit: Option<u64>,
    /// rsync I/O timeout in seconds for this run (default: the profile's).
    #[arg(long, value_name = "SECONDS")]
    pub timeout: Option<u32>,
    /// Keep run logs this many days.
    #[arg(long, default_value_t = 14, value_name = "DAYS")]
    pub keep_logs: u64,
    /// Node configuration file.
    #[arg(long, value_name = "FILE", default_value = INSTALLED_CONFIG)]
    pub config: PathBuf,
    /// Prefix for every node path (data, state, metrics): tests and recovery.
    #[arg(long, value_name = "DIR", default_value = "/")]
    pub root: PathBuf,
    /// rsync program to run.
    #[arg(long, value_name = "PATH", default_value = "rsync", hide = true)]
    pub rsync: String,
}
