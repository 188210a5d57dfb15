//! mm-sync's engine: one project's rsync stages under a lock, then the trace, the consistency
//! check and the run records (status JSON, log, Prometheus textfile metrics).

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use hostkit::atomic::write_mode;
use mmconfig::{CheckKind, NodeConfig, Profile, DATA_MOUNT, METRICS_DIR, SYNC_STATE_DIR};

use crate::outcome::{Exit, Outcome, SyncStatus};
use crate::overview::{self, Overview};
use crate::records::{render_metrics, render_trace};
use crate::repocheck;
use crate::stages::{is_rsync_temp, parse_stats, rsync_ok, rsync_stages, trace_rel, Stats};
use crate::tracefacts;

/// Where mm-sync reads and writes: the node's paths under `root` (`/` on the node).
#[derive(Debug, Clone)]
pub struct Env {
    pub root: PathBuf,
    pub rsync: String,
    pub keep_log_days: u64,
}

impl Env {
    fn under(&self, p: &str) -> PathBuf {
        self.root.join(p.trim_start_matches('/'))
    }
    pub fn tree(&self, p: &Profile) -> PathBuf {
        self.under(DATA_MOUNT).join(&p.directory)
    }
    pub fn state_dir(&self, p: &Profile) -> PathBuf {
        self.under(SYNC_STATE_DIR).join(&p.name)
    }
    pub fn status_file(&self, p: &Profile) -> PathBuf {
        self.under(&mmconfig::sync_status_file(&p.name))
    }
    pub fn metrics_file(&self, p: &Profile) -> PathBuf {
        self.under(METRICS_DIR).join(format!("mm_sync_{}.prom", p.name.replace('-', "_")))
    }
}

/// Per-run overrides from the command line (the node's bandwidth cap comes from its config).
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub bwlimit_kbps: Option<u64>,
    pub timeout_seconds: Option<u32>,
    pub deep_check: bool,
}

pub fn load_status(env: &Env, p: &Profile) -> Option<SyncStatus> {
    serde_json::from_str(&fs::read_to_string(env.status_file(p)).ok()?).ok()
}

/// A held per-project lock (released when dropped, also when the process dies).
pub struct Lock(#[allow(dead_code)] nix::fcntl::Flock<File>);

pub fn try_lock(env: &Env, p: &Profile) -> Result<Option<Lock>> {
    let dir = env.state_dir(p);
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join("lock");
    let f =
        OpenOptions::new().create(true).truncate(false).write(true).open(&path).with_context(|| format!("opening {}", path.display()))?;
    match nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusiveNonblock) {
        Ok(l) => Ok(Some(Lock(l))),
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => Ok(None),
        Err((_, e)) => Err(e).with_context(|| format!("locking {}", path.display())),
    }
}

/// Remove what a killed rsync left: `.~tmp~` directories (--delay-updates) and `.name.XXXXXX`
/// temporary files. Only called under the project's lock. Returns how many were removed.
pub fn clean_stale_temps(tree: &Path) -> Result<usize> {
    let mut removed = 0;
    let mut stack = vec![tree.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let ft = e.file_type()?;
            if ft.is_dir() && name == ".~tmp~" {
                fs::remove_dir_all(e.path()).with_context(|| format!("removing {}", e.path().display()))?;
                removed += 1;
            } else if ft.is_dir() {
                stack.push(e.path());
            } else if ft.is_file() && is_rsync_temp(&name) {
                fs::remove_file(e.path()).with_context(|| format!("removing {}", e.path().display()))?;
                removed += 1;
            }
        }
    }
    Ok(removed)
}

fn now_unix() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Free and total bytes of the filesystem holding `path`.
pub fn fs_space(path: &Path) -> Option<(u64, u64)> {
    let s = nix::sys::statvfs::statvfs(path).ok()?;
    let frag = s.fragment_size() as u64;
    Some((s.blocks_available() as u64 * frag, s.blocks() as u64 * frag))
}

/// Run one rsync stage, its output appended to `log`; returns (exit code, stats). Not through
/// hostkit's runner: rsync's stderr streams into the run log as it happens, and its exit code is
/// an answer to judge (24 is fine), not an error.
fn rsync_stage(env: &Env, args: &[String], log: &mut File) -> Result<(i32, Stats)> {
    writeln!(log, "$ {} {}", env.rsync, args.join(" "))?;
    let mut child = Command::new(&env.rsync)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log.try_clone()?)
        .spawn()
        .with_context(|| format!("starting {} (is rsync installed?)", env.rsync))?;
    let mut out = String::new();
    child.stdout.take().context("rsync stdout")?.read_to_string(&mut out)?;
    let status = child.wait()?;
    log.write_all(out.as_bytes())?;
    Ok((status.code().unwrap_or(-1), parse_stats(&out)))
}

/// Sync `p` once. Returns the exit code and the recorded status (None when the lock was busy).
pub fn sync_project(
    env: &Env,
    cfg: &NodeConfig,
    p: &Profile,
    ov: &Overrides,
    say: &mut dyn FnMut(&str),
) -> Result<(Exit, Option<SyncStatus>)> {
    // Before anything is created: a run as the wrong account must leave nothing of its own.
    let denied = crate::permissions::problems(env, p);
    if !denied.is_empty() {
        for why in &denied {
            say(&format!("error: {}: {why}", p.name));
        }
        return Ok((Exit::NotPermitted, None));
    }
    let Some(_lock) = try_lock(env, p)? else {
        say(&format!(
            "{}: another mm-sync run holds the lock ({}); not starting a second one",
            p.name,
            env.state_dir(p).join("lock").display()
        ));
        return Ok((Exit::Busy, None));
    };
    let started = Instant::now();
    let previous = load_status(env, p);
    let mut st = SyncStatus {
        project: p.name.clone(),
        upstream: p.sync.upstream.clone(),
        started_unix: now_unix(),
        last_success_unix: previous.as_ref().and_then(|s| s.last_success_unix),
        ..Default::default()
    };
    let tree = env.tree(p);
    fs::create_dir_all(&tree).with_context(|| format!("creating {}", tree.display()))?;
    let logs = env.state_dir(p).join("logs");
    fs::create_dir_all(&logs).with_context(|| format!("creating {}", logs.display()))?;
    prune_logs(&logs, env.keep_log_days);
    let log_path = logs.join(format!("{}.log", st.started_unix));
    let mut log =
        OpenOptions::new().create(true).append(true).open(&log_path).with_context(|| format!("opening {}", log_path.display()))?;
    st.log = log_path.display().to_string();

    // Visible to --status while it runs; found by the next run if this one is killed.
    let running = SyncStatus { result: Outcome::Running, ..st.clone() };
    write_mode(&env.status_file(p), 0o644, (serde_json::to_string_pretty(&running)? + "\n").as_bytes())?;
    publish(env, cfg, &mut log);

    if let Err(e) = sync_locked(env, cfg, p, ov, previous.as_ref(), &mut st, &mut log, say) {
        // Whatever broke after the lock (disk full writing the trace, an unreadable index), the
        // run is recorded as failed: status and metrics never keep claiming the previous run.
        st.result = Outcome::Failed;
        st.message = format!("{e:#}");
    }
    st.finished_unix = now_unix();
    st.seconds = started.elapsed().as_secs_f64();
    writeln!(log, "result: {} ({}) after {:.1} s", st.result, st.message, st.seconds)?;
    write_mode(&env.status_file(p), 0o644, (serde_json::to_string_pretty(&st)? + "\n").as_bytes())?;
    write_mode(&env.metrics_file(p), 0o644, render_metrics(&st, fs_space(&tree).map(|s| s.0)).as_bytes())?;
    publish(env, cfg, &mut log);
    Ok((Exit::of(&st), Some(st)))
}

/// Refresh the public freshness document (`/.mm/status.json`); a failure there is logged, never
/// the sync's result.
fn publish(env: &Env, cfg: &NodeConfig, log: &mut File) {
    if let Err(e) = crate::public::write(env, cfg) {
        let _ = writeln!(log, "public status document: {e:#}");
    }
}

#[allow(clippy::too_many_arguments)]
fn sync_locked(
    env: &Env,
    cfg: &NodeConfig,
    p: &Profile,
    ov: &Overrides,
    previous: Option<&SyncStatus>,
    st: &mut SyncStatus,
    log: &mut File,
    say: &mut dyn FnMut(&str),
) -> Result<()> {
    let tree = env.tree(p);
    // Only a killed run leaves temporaries: no walk of a multi-terabyte tree on every run.
    if previous.is_some_and(|s| s.result == Outcome::Running) {
        let removed = clean_stale_temps(&tree)?;
        say(&format!("{}: the previous run was interrupted; removed {removed} temporary file(s) it left", p.name));
        writeln!(log, "previous run interrupted: removed {removed} stale temporary file(s)")?;
    }
    let bwlimit = bwlimit_kbps(ov, cfg, p);
    let timeout = ov.timeout_seconds.unwrap_or(p.sync.timeout_seconds);
    let stages = rsync_stages(p, &p.sync.upstream, &tree, &cfg.node.fqdn, bwlimit, timeout);

    (st.result, st.message) = match space_problem(env, p, previous, &stages, log)? {
        Some(msg) => (Outcome::NoSpace, msg),
        None => run_stages(env, p, &stages, st, log, say)?,
    };
    // A run that changed nothing leaves the tree the last clean check saw: no need to re-read it.
    let unchanged = st.files_transferred == 0 && st.files_deleted == 0;
    let clean_before = previous.is_some_and(|s| s.result == Outcome::Success && s.check_errors == 0);
    let synced = st.result == Outcome::Success;
    if synced && unchanged && clean_before && !ov.deep_check {
        writeln!(log, "check: skipped, nothing changed since the last clean check")?;
    } else if synced && p.sync.check != CheckKind::None {
        let report = repocheck::check_tree(p.sync.check, &tree, &repocheck::Excludes(p.sync.excludes.clone()), ov.deep_check)?;
        st.check_errors = report.errors.len();
        for e in &report.errors {
            writeln!(log, "check: {e}")?;
        }
        if !report.ok() {
            st.result = Outcome::Inconsistent;
            st.message = format!("{} index problem(s), first: {}", report.errors.len(), report.errors[0]);
        }
    }
    if st.result == Outcome::Success {
        let finished = now_unix();
        st.finished_unix = finished;
        st.seconds = finished.saturating_sub(st.started_unix) as f64;
        st.message = format!("{} file(s), {} bytes transferred", st.files_transferred, st.bytes_transferred);
        // The data reaches the disk before the trace and the success do: rsync does not fsync,
        // and a power cut right after a sync lost files the node had already reported synced.
        let dir = File::open(&tree).with_context(|| format!("opening {}", tree.display()))?;
        nix::unistd::syncfs(dir.as_raw_fd()).with_context(|| format!("syncfs on {}", tree.display()))?;
        // Only now: a checker reading the trace must be able to trust the whole tree.
        write_mode(
            &tree.join(trace_rel(p, &cfg.node.fqdn)),
            0o644,
            render_trace(cfg, &p.sync.upstream, st, &tracefacts::read(&tree)).as_bytes(),
        )?;
        if let Some(ts) = &p.freshness.timestamp_file {
            write_mode(&tree.join(ts.trim_start_matches('/')), 0o644, format!("{finished}\n").as_bytes())?;
        }
        st.last_success_unix = Some(finished);
    }
    Ok(())
}

fn run_stages(
    env: &Env,
    p: &Profile,
    stages: &[Vec<String>],
    st: &mut SyncStatus,
    log: &mut File,
    say: &mut dyn FnMut(&str),
) -> Result<(Outcome, String)> {
    for (i, args) in stages.iter().enumerate() {
        if i > 0 {
            // Fault-injection point for the two-stage ordering test: the upstream changes here.
            if let Ok(hook) = std::env::var("MM_SYNC_BETWEEN_STAGES") {
                let ran = hostkit::cmd::run(Command::new("sh").args(["-c", &hook]));
                writeln!(log, "between-stages hook: {}", ran.map_or_else(|e| format!("{e:#}"), |_| "ok".into()))?;
            }
        }
        say(&format!("{}: stage {}/{} from {}", p.name, i + 1, stages.len(), p.sync.upstream));
        let (code, stats) = rsync_stage(env, args, log)?;
        st.files_transferred += stats.files_transferred;
        st.files_deleted += stats.files_deleted;
        st.bytes_transferred += stats.transferred_bytes;
        st.bytes_received += stats.received_bytes;
        st.tree_bytes = stats.total_bytes;
        if !rsync_ok(code) {
            st.rsync_exit = Some(code);
            let log_text = fs::read(&st.log).unwrap_or_default();
            let msg = format!("rsync stage {} exited {code}: {}", i + 1, hostkit::cmd::tail(&log_text, 3).replace('\n', " | "));
            return Ok((Outcome::Failed, msg));
        }
    }
    Ok((Outcome::Success, String::new()))
}

/// Why this run must not start for lack of space, if so. The growth estimate is the last run's
/// transferred bytes; before the first success, an `rsync --dry-run` of the last stage measures it.
/// The run's bandwidth limit in KB/s (0: none): this run's `--bwlimit`, else the node's
/// `sync_bwlimit_kbps`, else the profile's.
fn bwlimit_kbps(ov: &Overrides, cfg: &NodeConfig, p: &Profile) -> u64 {
    ov.bwlimit_kbps.or(cfg.node.sync_bwlimit_kbps).unwrap_or(p.sync.bwlimit_kbps)
}

fn space_problem(env: &Env, p: &Profile, previous: Option<&SyncStatus>, stages: &[Vec<String>], log: &mut File) -> Result<Option<String>> {
    let Some((free, total)) = fs_space(&env.tree(p)) else {
        return Ok(None);
    };
    let need = match space_estimate(previous, p.size_gb, free, total) {
        Some(need) => need,
        None => {
            let mut args = stages.last().cloned().unwrap_or_default();
            args.insert(0, "--dry-run".into());
            let (code, stats) = rsync_stage(env, &args, log)?;
            if !rsync_ok(code) {
                return Ok(None); // the real run reports the upstream's problem
            }
            stats.transferred_bytes
        }
    };
    Ok(short_of_space(need, free, total))
}

/// Bytes this run will need: the last successful run's transfer; before the first success,
/// nothing when the profile's whole size (`size_gb`) clearly fits, else `None`: measure it with
/// an `rsync --dry-run` (a second file list, paid only on a tight disk).
fn space_estimate(previous: Option<&SyncStatus>, size_gb: u64, free: u64, total: u64) -> Option<u64> {
    // A failed or refused run's figure says nothing about what the next one needs.
    match previous.filter(|s| s.result == Outcome::Success) {
        Some(s) => Some(s.bytes_transferred),
        None if size_gb.saturating_mul(1_000_000_000).saturating_add(total / 100) <= free => Some(0),
        None => None,
    }
}

/// Why a run needing `need` bytes must not start on a disk of `total` bytes with `free` left.
fn short_of_space(need: u64, free: u64, total: u64) -> Option<String> {
    // Keep 1% free: XFS and the logs need room, and a full disk stops nginx logging.
    let reserve = total / 100;
    (need.saturating_add(reserve) > free).then(|| {
        format!(
            "not enough space on the data disk: this sync needs about {:.2} GB, {:.2} GB free (keeping {:.2} GB in reserve)",
            need as f64 / 1e9,
            free as f64 / 1e9,
            reserve as f64 / 1e9
        )
    })
}

fn prune_logs(dir: &Path, keep_days: u64) {
    let cutoff = now_unix().saturating_sub(keep_days * 86400);
    for e in fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.metadata().is_ok_and(|m| (m.mtime() as u64) < cutoff) {
            let _ = fs::remove_file(e.path());
        }
    }
}

/// `mm-sync --check`: the consistency check alone (no lock: it only reads).
pub fn check_project(env: &Env, p: &Profile, deep: bool) -> Result<repocheck::Report> {
    let tree = env.tree(p);
    if !tree.is_dir() {
        bail!("{} does not exist: {} has never synced", tree.display(), p.name);
    }
    repocheck::check_tree(p.sync.check, &tree, &repocheck::Excludes(p.sync.excludes.clone()), deep)
}

/// Read every hosted project's records and judge them (`mm-sync --status`).
pub fn gather_overview(env: &Env, cfg: &NodeConfig) -> Overview {
    let statuses: Vec<_> = cfg.projects.iter().map(|p| (p, load_status(env, p))).collect();
    overview::build(&statuses, now_unix(), fs_space(&env.under(DATA_MOUNT)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testdata::node;

    #[test]
    fn bandwidth_limit_run_over_node_over_profile() {
        // hurricane's node sets sync_bwlimit_kbps; ziply's does not.
        let (capped, free) = (node("hurricane"), node("ziply"));
        let node_cap = capped.node.sync_bwlimit_kbps.expect("hurricane caps its syncs");
        let mut p = capped.projects[0].clone();
        p.sync.bwlimit_kbps = 7;
        let run = Overrides { bwlimit_kbps: Some(3), ..Overrides::default() };
        assert_eq!(bwlimit_kbps(&run, &capped, &p), 3, "the run's --bwlimit wins");
        assert_eq!(bwlimit_kbps(&Overrides::default(), &capped, &p), node_cap, "then the node's");
        assert_eq!(bwlimit_kbps(&Overrides::default(), &free, &p), 7, "then the profile's");
        // An explicit 0 on the command line lifts every limit.
        assert_eq!(bwlimit_kbps(&Overrides { bwlimit_kbps: Some(0), ..Overrides::default() }, &capped, &p), 0);
    }

    #[test]
    fn space_estimate_from_the_last_success_the_profile_size_or_a_measurement() {
        const GB: u64 = 1_000_000_000;
        let run = |result: Outcome, bytes: u64| SyncStatus { result, bytes_transferred: bytes, ..SyncStatus::default() };
        let total = 100 * GB; // 1 GB of it is the reserve
                              // After a success its transfer is the estimate, whatever the profile's size.
        assert_eq!(space_estimate(Some(&run(Outcome::Success, 5 * GB)), 2000, 10 * GB, total), Some(5 * GB));
        // A failed or refused run says nothing: the profile's size decides, when it clearly fits.
        for previous in [None, Some(run(Outcome::Failed, 90 * GB)), Some(run(Outcome::NoSpace, 90 * GB))] {
            assert_eq!(space_estimate(previous.as_ref(), 8, 9 * GB, total), Some(0), "{previous:?}");
            assert_eq!(space_estimate(previous.as_ref(), 9, 9 * GB, total), None, "{previous:?}: measure");
        }
        // 1 % of the disk stays free: refused one byte past that, not at it.
        assert_eq!(short_of_space(9 * GB, 10 * GB, total), None);
        let no = short_of_space(9 * GB + 1, 10 * GB, total).expect("refused");
        assert_eq!(no, "not enough space on the data disk: this sync needs about 9.00 GB, 10.00 GB free (keeping 1.00 GB in reserve)");
    }
}
