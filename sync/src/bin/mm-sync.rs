//! `mm-sync`: keep one hosted project in step with its upstream.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use mm_sync::{overview, Env, Exit, Overrides};
use mmconfig::{NodeConfig, INSTALLED_CONFIG};

#[derive(Parser)]
#[command(
    name = "mm-sync",
    version,
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
struct Cli {
    /// The project to sync (or to check with --check).
    project: Option<String>,
    /// Check the tree against its apt/rpm indexes instead of syncing.
    #[arg(long, requires = "project")]
    check: bool,
    /// Show every project: last success, age, result, size, free space.
    #[arg(long, conflicts_with_all = ["project", "check"])]
    status: bool,
    /// Machine-readable output for --check and --status.
    #[arg(long)]
    json: bool,
    /// Also verify the SHA256 of every package file (reads the whole tree).
    #[arg(long)]
    deep: bool,
    /// Bandwidth cap in KiB/s for this run (default: the node's, else the profile's).
    #[arg(long, value_name = "KBPS")]
    bwlimit: Option<u64>,
    /// rsync I/O timeout in seconds for this run (default: the profile's).
    #[arg(long, value_name = "SECONDS")]
    timeout: Option<u32>,
    /// Keep run logs this many days.
    #[arg(long, default_value_t = 14, value_name = "DAYS")]
    keep_logs: u64,
    /// Node configuration file.
    #[arg(long, value_name = "FILE", default_value = INSTALLED_CONFIG)]
    config: PathBuf,
    /// Prefix for every node path (data, state, metrics): tests and recovery.
    #[arg(long, value_name = "DIR", default_value = "/")]
    root: PathBuf,
    /// rsync program to run.
    #[arg(long, value_name = "PATH", default_value = "rsync", hide = true)]
    rsync: String,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let cfg = match NodeConfig::load(&cli.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("mm-sync: error: {e}");
            return Exit::BadConfig.into();
        }
    };
    let env = Env { root: cli.root.clone(), rsync: cli.rsync.clone(), keep_log_days: cli.keep_logs };
    if cli.status {
        let o = mm_sync::gather_overview(&env, &cfg);
        if cli.json {
            println!("{}", serde_json::to_string_pretty(&o).unwrap_or_default());
        } else {
            print!("{}", overview::render_overview(&o));
        }
        return if o.warnings.is_empty() { Exit::Ok } else { Exit::NoSpace }.into();
    }
    let Some(name) = cli.project.as_deref() else {
        eprintln!("mm-sync: error: name a project (hosted here: {}), or use --status", names(&cfg));
        return Exit::Usage.into();
    };
    let Some(p) = cfg.project(name) else {
        eprintln!("mm-sync: error: {} does not host {name:?} (hosted here: {})", cfg.node.fqdn, names(&cfg));
        return Exit::BadConfig.into();
    };
    if cli.check {
        return match mm_sync::check_project(&env, p, cli.deep) {
            Ok(r) => {
                if cli.json {
                    println!("{}", serde_json::to_string_pretty(&r).unwrap_or_default());
                } else {
                    for e in &r.errors {
                        println!("{name}: PROBLEM: {e}");
                    }
                    println!("{name}: {} index(es), {} file(s) checked, {} problem(s)", r.indexes, r.files_checked, r.errors.len());
                }
                if r.ok() { Exit::Ok } else { Exit::Inconsistent }.into()
            }
            Err(e) => {
                eprintln!("mm-sync: error: {e:#}");
                Exit::SyncFailed.into()
            }
        };
    }
    let ov = Overrides { bwlimit_kbps: cli.bwlimit, timeout_seconds: cli.timeout, deep_check: cli.deep };
    let mut say = |m: &str| eprintln!("mm-sync: {m}");
    match mm_sync::sync_project(&env, &cfg, p, &ov, &mut say) {
        Ok((code, st)) => {
            if let Some(st) = st {
                eprintln!("mm-sync: {name}: {} in {:.1} s: {}", st.result, st.seconds, st.message);
            }
            code.into()
        }
        Err(e) => {
            eprintln!("mm-sync: error: {name}: {e:#}");
            Exit::SyncFailed.into()
        }
    }
}

fn names(cfg: &NodeConfig) -> String {
    cfg.projects.iter().map(|p| p.name.as_str()).collect::<Vec<_>>().join(", ")
}
