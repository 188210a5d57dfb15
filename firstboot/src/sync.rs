//! mm-sync's engine: one project's rsync stages under a lock, then the trace, the consistency
//! check and the run records (status JSON, log, Prometheus textfile metrics).

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use mmconfig::{CheckKind, NodeConfig, Profile, SyncMethod, DATA_MOUNT, METRICS_DIR, SYNC_STATE_DIR};
use serde::{Deserialize, Serialize};

use crate::files::write_atomic;
use crate::repocheck;

/// Exit codes of `mm-sync`, also in its --help.
pub mod exit {
    pub const OK: u8 = 0;
    pub const BAD_CONFIG: u8 = 1;
    pub const SYNC_FAILED: u8 = 4;
    pub const INCONSISTENT: u8 = 5;
    pub const NO_SPACE: u8 = 6;
    /// Another run of the same project holds the lock.
    pub const BUSY: u8 = 10;
}

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

/// What one run did; also the status file, so the last success survives failed runs.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct SyncStatus {
    pub project: String,
    pub upstream: String,
    /// success, failed, inconsistent, no-space
    pub result: String,
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

pub fn load_status(env: &Env, p: &Profile) -> Option<SyncStatus> {
    serde_json::from_str(&fs::read_to_string(env.status_file(p)).ok()?).ok()
}

/// Numbers from `rsync --stats`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    pub files_transferred: u64,
    pub files_deleted: u64,
    pub transferred_bytes: u64,
    pub total_bytes: u64,
    pub received_bytes: u64,
}

pub fn parse_stats(out: &str) -> Stats {
    let num = |prefix: &str| {
        out.lines()
            .find_map(|l| l.trim().strip_prefix(prefix))
            .and_then(|v| v.split_whitespace().next().map(|n| n.replace([',', '.'], "")))
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    Stats {
        files_transferred: num("Number of regular files transferred:"),
        files_deleted: num("Number of deleted files:"),
        transferred_bytes: num("Total transferred file size:"),
        total_bytes: num("Total file size:"),
        received_bytes: num("Total bytes received:"),
    }
}

/// Our own trace file, relative to the tree: protected from the upstream's deletes.
pub fn trace_rel(p: &Profile, fqdn: &str) -> String {
    format!("{}/{fqdn}", p.freshness.trace_dir.trim_matches('/'))
}

/// The rsync argument lists, one per stage (without the program name).
///
/// Two-stage (apt-style): stage 1 takes everything but the indexes and deletes nothing, so the
/// old indexes keep pointing at files that still exist; stage 2 takes the indexes and deletes.
pub fn rsync_stages(p: &Profile, upstream: &str, dest: &Path, fqdn: &str, bwlimit: u64, timeout: u32) -> Vec<Vec<String>> {
    let mut protect = vec![format!("--filter=P /{}", trace_rel(p, fqdn)), format!("--exclude=/{}", trace_rel(p, fqdn))];
    if let Some(ts) = &p.freshness.timestamp_file {
        protect.push(format!("--filter=P /{}", ts.trim_start_matches('/')));
    }
    let stage = |first_of_two: bool| {
        let mut a: Vec<String> = p.sync.rsync_flags.iter().filter(|f| !(first_of_two && f.starts_with("--delete"))).cloned().collect();
        a.push("--stats".into());
        // Whatever the profile's -a implies: an upstream never places device nodes or FIFOs here.
        a.extend(["--no-devices".to_string(), "--no-specials".to_string()]);
        a.push(format!("--timeout={timeout}"));
        if bwlimit > 0 {
            a.push(format!("--bwlimit={bwlimit}"));
        }
        a.extend(protect.iter().cloned());
        // rsync protects its own --delay-updates directory; excluding it by hand together with
        // --delete-excluded would let rsync delete the staged files before it renames them.
        a.extend(p.sync.excludes.iter().filter(|e| e.trim_end_matches('/') != ".~tmp~").map(|e| format!("--exclude={e}")));
        if first_of_two {
            a.extend(p.sync.index_patterns.iter().map(|e| format!("--exclude={e}")));
        } else if p.sync.delete_excluded {
            a.push("--delete-excluded".into());
        }
        a.push(upstream.to_string());
        a.push(format!("{}/", dest.display()));
        a
    };
    match p.sync.method {
        SyncMethod::Single => vec![stage(false)],
        SyncMethod::TwoStage => vec![stage(true), stage(false)],
    }
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

/// rsync's temporary name for `name`: `.name.XXXXXX`.
fn is_rsync_temp(name: &str) -> bool {
    let Some(rest) = name.strip_prefix('.') else {
        return false;
    };
    match rest.rsplit_once('.') {
        Some((base, suffix)) => !base.is_empty() && suffix.len() == 6 && suffix.chars().all(|c| c.is_ascii_alphanumeric()),
        None => false,
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

/// RFC 2822 date in UTC, as ftpsync writes in trace files.
pub fn rfc2822(unix: u64) -> String {
    let days = (unix / 86400) as i64;
    let secs = unix % 86400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    const DOW: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MON: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    format!(
        "{}, {:02} {} {} {:02}:{:02}:{:02} +0000",
        DOW[(days.rem_euclid(7)) as usize],
        day,
        MON[(month - 1) as usize],
        year,
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// An ftpsync-style trace: what mirror checkers (Debian's, Ubuntu's) read for freshness.
pub fn render_trace(cfg: &NodeConfig, p: &Profile, upstream: &str, st: &SyncStatus) -> String {
    let upstream_host = upstream.trim_start_matches("rsync://").split(['/', ':']).next().unwrap_or(upstream);
    let rate = if st.seconds > 0.0 { (st.bytes_received as f64 / st.seconds) as u64 } else { 0 };
    format!(
        "{date}\nDate: {date}\nDate-Started: {started}\nArchive serial: {serial}\nUsed mm-sync version: {ver}\n\
Running on host: {host}\nMaintainer: {contact}\nSponsor: {sponsor}\nUpstream-mirror: {up}\nSync-method: {method}\n\
Total bytes received in rsync: {rx}\nTotal time spent in rsync: {secs}\nAverage rate: {rate} B/s\n",
        date = rfc2822(st.finished_unix),
        started = rfc2822(st.started_unix),
        serial = st.finished_unix,
        ver = env!("CARGO_PKG_VERSION"),
        host = cfg.node.fqdn,
        contact = crate::services::plain(&cfg.fleet.contact),
        sponsor = crate::services::plain(&cfg.node.sponsor.name),
        up = upstream_host,
        method = match p.sync.method {
            SyncMethod::Single => "rsync",
            SyncMethod::TwoStage => "rsync two-stage",
        },
        rx = st.bytes_received,
        secs = st.seconds.round() as u64,
    )
}

/// Prometheus textfile metrics for node_exporter.
pub fn render_metrics(st: &SyncStatus, tree_free_bytes: Option<u64>) -> String {
    let l = format!("{{project=\"{}\"}}", st.project.replace(['"', '\\', '\n'], "_"));
    let mut m = String::new();
    let mut g = |name: &str, help: &str, v: String| {
        m.push_str(&format!("# HELP {name} {help}\n# TYPE {name} gauge\n{name}{l} {v}\n"));
    };
    g("mm_sync_last_success_timestamp_seconds", "End of the last successful sync.", st.last_success_unix.unwrap_or(0).to_string());
    g("mm_sync_last_run_timestamp_seconds", "End of the last sync run.", st.finished_unix.to_string());
    g("mm_sync_last_run_success", "1 if the last run succeeded.", u8::from(st.result == "success").to_string());
    g("mm_sync_last_run_duration_seconds", "Duration of the last run.", format!("{:.3}", st.seconds));
    g("mm_sync_last_run_files_transferred", "Files transferred by the last run.", st.files_transferred.to_string());
    g("mm_sync_last_run_bytes_transferred", "File bytes transferred by the last run.", st.bytes_transferred.to_string());
    g("mm_sync_tree_bytes", "Size of the upstream tree at the last run.", st.tree_bytes.to_string());
    g("mm_sync_check_errors", "Problems found by the last consistency check.", st.check_errors.to_string());
    if let Some(free) = tree_free_bytes {
        g("mm_sync_data_free_bytes", "Free bytes on the data filesystem.", free.to_string());
    }
    m
}

/// Free and total bytes of the filesystem holding `path`.
pub fn fs_space(path: &Path) -> Option<(u64, u64)> {
    let s = nix::sys::statvfs::statvfs(path).ok()?;
    let frag = s.fragment_size() as u64;
    Some((s.blocks_available() as u64 * frag, s.blocks() as u64 * frag))
}

/// Run one rsync stage, its output appended to `log`; returns (exit code, stats).
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

/// rsync exit 24 (files vanished on the sender while listing) is normal on a live upstream.
fn rsync_ok(code: i32) -> bool {
    code == 0 || code == 24
}

fn tail(path: &Path, n: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Sync `p` once. Returns the exit code and the recorded status (None when the lock was busy).
pub fn sync_project(
    env: &Env,
    cfg: &NodeConfig,
    p: &Profile,
    ov: &Overrides,
    say: &mut dyn FnMut(&str),
) -> Result<(u8, Option<SyncStatus>)> {
    let Some(_lock) = try_lock(env, p)? else {
        say(&format!(
            "{}: another mm-sync run holds the lock ({}); not starting a second one",
            p.name,
            env.state_dir(p).join("lock").display()
        ));
        return Ok((exit::BUSY, None));
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
    let running = SyncStatus { result: "running".into(), ..st.clone() };
    write_atomic(&env.status_file(p), 0o644, (serde_json::to_string_pretty(&running)? + "\n").as_bytes())?;
    publish(env, cfg, &mut log);

    let code = match sync_locked(env, cfg, p, ov, previous.as_ref(), &mut st, &mut log, say) {
        Ok(code) => code,
        // Whatever broke after the lock (disk full writing the trace, an unreadable index), the
        // run is recorded as failed: status and metrics never keep claiming the previous run.
        Err(e) => {
            st.result = "failed".into();
            st.message = format!("{e:#}");
            exit::SYNC_FAILED
        }
    };
    st.finished_unix = now_unix();
    st.seconds = started.elapsed().as_secs_f64();
    writeln!(log, "result: {} ({}) after {:.1} s", st.result, st.message, st.seconds)?;
    write_atomic(&env.status_file(p), 0o644, (serde_json::to_string_pretty(&st)? + "\n").as_bytes())?;
    write_atomic(&env.metrics_file(p), 0o644, render_metrics(&st, fs_space(&tree).map(|s| s.0)).as_bytes())?;
    publish(env, cfg, &mut log);
    Ok((code, Some(st)))
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
) -> Result<u8> {
    let tree = env.tree(p);
    // Only a killed run leaves temporaries: no walk of a multi-terabyte tree on every run.
    if previous.is_some_and(|s| s.result == "running") {
        let removed = clean_stale_temps(&tree)?;
        say(&format!("{}: the previous run was interrupted; removed {removed} temporary file(s) it left", p.name));
        writeln!(log, "previous run interrupted: removed {removed} stale temporary file(s)")?;
    }
    let bwlimit = ov.bwlimit_kbps.or(cfg.node.sync_bwlimit_kbps).unwrap_or(p.sync.bwlimit_kbps);
    let timeout = ov.timeout_seconds.unwrap_or(p.sync.timeout_seconds);
    let stages = rsync_stages(p, &p.sync.upstream, &tree, &cfg.node.fqdn, bwlimit, timeout);

    let (mut code, result, message) = match space_problem(env, p, previous, &stages, log)? {
        Some(msg) => (exit::NO_SPACE, "no-space", msg),
        None => run_stages(env, p, &stages, st, log, say)?,
    };
    st.result = result.into();
    st.message = message;
    // A run that changed nothing leaves the tree the last clean check saw: no need to re-read it.
    let unchanged = st.files_transferred == 0 && st.files_deleted == 0;
    let clean_before = previous.is_some_and(|s| s.result == "success" && s.check_errors == 0);
    if code == exit::OK && unchanged && clean_before && !ov.deep_check {
        writeln!(log, "check: skipped, nothing changed since the last clean check")?;
    } else if code == exit::OK && p.sync.check != CheckKind::None {
        let report = repocheck::check_tree(p.sync.check, &tree, &repocheck::Excludes(p.sync.excludes.clone()), ov.deep_check)?;
        st.check_errors = report.errors.len();
        for e in &report.errors {
            writeln!(log, "check: {e}")?;
        }
        if !report.ok() {
            code = exit::INCONSISTENT;
            st.result = "inconsistent".into();
            st.message = format!("{} index problem(s), first: {}", report.errors.len(), report.errors[0]);
        }
    }
    if code == exit::OK {
        let finished = now_unix();
        st.finished_unix = finished;
        st.seconds = finished.saturating_sub(st.started_unix) as f64;
        st.message = format!("{} file(s), {} bytes transferred", st.files_transferred, st.bytes_transferred);
        // Only now: a checker reading the trace must be able to trust the whole tree.
        write_atomic(&tree.join(trace_rel(p, &cfg.node.fqdn)), 0o644, render_trace(cfg, p, &p.sync.upstream, st).as_bytes())?;
        if let Some(ts) = &p.freshness.timestamp_file {
            write_atomic(&tree.join(ts.trim_start_matches('/')), 0o644, format!("{finished}\n").as_bytes())?;
        }
        st.last_success_unix = Some(finished);
    }
    Ok(code)
}

fn run_stages(
    env: &Env,
    p: &Profile,
    stages: &[Vec<String>],
    st: &mut SyncStatus,
    log: &mut File,
    say: &mut dyn FnMut(&str),
) -> Result<(u8, &'static str, String)> {
    for (i, args) in stages.iter().enumerate() {
        if i > 0 {
            // Fault-injection point for the two-stage ordering test: the upstream changes here.
            if let Ok(hook) = std::env::var("MM_SYNC_BETWEEN_STAGES") {
                let ok = Command::new("sh").args(["-c", &hook]).status().is_ok_and(|s| s.success());
                writeln!(log, "between-stages hook: {}", if ok { "ok" } else { "failed" })?;
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
            let msg = format!("rsync stage {} exited {code}: {}", i + 1, tail(Path::new(&st.log), 3).replace('\n', " | "));
            return Ok((exit::SYNC_FAILED, "failed", msg));
        }
    }
    Ok((exit::OK, "success", String::new()))
}

/// Why this run must not start for lack of space, if so. The growth estimate is the last run's
/// transferred bytes; before the first success, an `rsync --dry-run` of the last stage measures it.
fn space_problem(env: &Env, p: &Profile, previous: Option<&SyncStatus>, stages: &[Vec<String>], log: &mut File) -> Result<Option<String>> {
    let Some((free, total)) = fs_space(&env.tree(p)) else {
        return Ok(None);
    };
    // A failed or refused run's figure says nothing about what the next one needs.
    let need = match previous.filter(|s| s.result == "success") {
        Some(s) => s.bytes_transferred,
        // Before the first success: the profile's size is the estimate when it clearly fits;
        // only a tight disk pays for an `rsync --dry-run` (a second file list) to measure.
        None if p.size_gb.saturating_mul(1_000_000_000).saturating_add(total / 100) <= free => 0,
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
    // Keep 1% free: XFS and the logs need room, and a full disk stops nginx logging.
    let reserve = total / 100;
    if need.saturating_add(reserve) > free {
        return Ok(Some(format!(
            "not enough space on the data disk: this sync needs about {:.2} GB, {:.2} GB free (keeping {:.2} GB in reserve)",
            need as f64 / 1e9,
            free as f64 / 1e9,
            reserve as f64 / 1e9
        )));
    }
    Ok(None)
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

/// One line of `mm-sync --status`.
#[derive(Debug, Clone, Serialize)]
pub struct ProjectStatus {
    pub project: String,
    pub result: String,
    pub last_success_unix: Option<u64>,
    pub age_seconds: Option<u64>,
    pub tree_bytes: u64,
    pub message: String,
    /// Overdue: no success within the profile's maximum interval.
    pub stale: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Overview {
    pub projects: Vec<ProjectStatus>,
    pub data_free_bytes: Option<u64>,
    pub data_total_bytes: Option<u64>,
    pub warnings: Vec<String>,
}

pub fn overview(env: &Env, cfg: &NodeConfig) -> Overview {
    let now = now_unix();
    let mut warnings = Vec::new();
    let mut growth = 0u64;
    let projects: Vec<ProjectStatus> = cfg
        .projects
        .iter()
        .map(|p| {
            let s = load_status(env, p);
            let last = s.as_ref().and_then(|s| s.last_success_unix);
            let age = last.map(|t| now.saturating_sub(t));
            let stale = age.is_none_or(|a| a > u64::from(p.sync.max_interval_minutes) * 60);
            growth += s.as_ref().map_or(0, |s| s.bytes_transferred);
            ProjectStatus {
                project: p.name.clone(),
                result: s.as_ref().map_or("never run".into(), |s| s.result.clone()),
                last_success_unix: last,
                age_seconds: age,
                tree_bytes: s.as_ref().map_or(0, |s| s.tree_bytes),
                message: s.map(|s| s.message).unwrap_or_default(),
                stale,
            }
        })
        .collect();
    let space = fs_space(&env.under(DATA_MOUNT));
    if let Some((free, total)) = space {
        if free < total / 10 {
            warnings.push(format!(
                "the data disk is {:.0}% full: {:.1} GB free",
                100.0 - free as f64 * 100.0 / total as f64,
                free as f64 / 1e9
            ));
        }
        if growth > 0 && free < growth.saturating_mul(2) {
            warnings.push(format!(
                "{:.1} GB free is less than two more syncs like the last ones ({:.1} GB each)",
                free as f64 / 1e9,
                growth as f64 / 1e9
            ));
        }
    }
    Overview { projects, data_free_bytes: space.map(|s| s.0), data_total_bytes: space.map(|s| s.1), warnings }
}

pub fn render_overview(o: &Overview) -> String {
    let mut s = format!("{:<18} {:<14} {:>12} {:>10}  {}\n", "PROJECT", "RESULT", "LAST SUCCESS", "SIZE", "MESSAGE");
    for p in &o.projects {
        let age = match p.age_seconds {
            Some(a) if a < 3600 => format!("{}m ago", a / 60),
            Some(a) if a < 172_800 => format!("{}h ago", a / 3600),
            Some(a) => format!("{}d ago", a / 86400),
            None => "never".into(),
        };
        let flag = if p.stale { " (OVERDUE)" } else { "" };
        s.push_str(&format!("{:<18} {:<14} {:>12} {:>9.1}G  {}{flag}\n", p.project, p.result, age, p.tree_bytes as f64 / 1e9, p.message));
    }
    if let (Some(free), Some(total)) = (o.data_free_bytes, o.data_total_bytes) {
        s.push_str(&format!("data disk: {:.1} GB free of {:.1} GB\n", free as f64 / 1e9, total as f64 / 1e9));
    }
    for w in &o.warnings {
        s.push_str(&format!("WARNING: {w}\n"));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testdata::node;

    #[test]
    fn two_stage_holds_back_indexes_and_deletes() {
        let cfg = node("ziply");
        let mut p = cfg.projects[0].clone();
        p.sync.method = SyncMethod::TwoStage;
        p.sync.index_patterns = vec!["Packages*".into(), "InRelease".into()];
        p.sync.rsync_flags = vec!["-rlpt".into(), "--delete-delay".into(), "--delay-updates".into()];
        p.sync.delete_excluded = true;
        let s = rsync_stages(&p, "rsync://u/x/", Path::new("/srv/mirror/x"), "n.example", 0, 600);
        assert_eq!(s.len(), 2);
        assert!(s[0].contains(&"--exclude=Packages*".to_string()) && s[0].contains(&"--exclude=InRelease".to_string()));
        assert!(!s[0].iter().any(|a| a.starts_with("--delete")), "stage 1 must not delete: {:?}", s[0]);
        assert!(!s[1].contains(&"--exclude=Packages*".to_string()));
        assert!(s[1].contains(&"--delete-delay".to_string()) && s[1].contains(&"--delete-excluded".to_string()));
        for st in &s {
            assert_eq!(st[st.len() - 2..], ["rsync://u/x/".to_string(), "/srv/mirror/x/".to_string()]);
            assert!(st.contains(&format!("--filter=P /{}/n.example", p.freshness.trace_dir)));
        }
        let single = rsync_stages(&cfg.projects[0], "rsync://u/x/", Path::new("/d"), "n", 512, 60);
        assert_eq!(single.len(), 1);
        assert!(single[0].contains(&"--bwlimit=512".to_string()) && single[0].contains(&"--timeout=60".to_string()));
    }

    #[test]
    fn stats_parsing_handles_thousands_separators() {
        let out = "Number of files: 1,234 (reg: 1,000)\nNumber of regular files transferred: 1,002\nTotal file size: 12,345,678 bytes\nTotal transferred file size: 345,678 bytes\nTotal bytes received: 400,000\n";
        assert_eq!(
            parse_stats(out),
            Stats {
                files_transferred: 1002,
                files_deleted: 0,
                transferred_bytes: 345_678,
                total_bytes: 12_345_678,
                received_bytes: 400_000
            }
        );
        assert_eq!(parse_stats("Number of deleted files: 3 (reg: 3)\n").files_deleted, 3);
    }

    #[test]
    fn rsync_temp_names() {
        assert!(is_rsync_temp(".foo.rpm.Ab12Cd"));
        assert!(!is_rsync_temp(".htaccess"));
        assert!(!is_rsync_temp("foo.rpm.Ab12Cd"));
        assert!(!is_rsync_temp(".foo.rpm"));
    }

    #[test]
    fn dates() {
        assert_eq!(rfc2822(0), "Thu, 01 Jan 1970 00:00:00 +0000");
        assert_eq!(rfc2822(1_795_574_348), "Wed, 25 Nov 2026 02:39:08 +0000");
    }

    #[test]
    fn metrics_are_prometheus_text() {
        let st = SyncStatus { project: "epel".into(), result: "success".into(), last_success_unix: Some(5), ..Default::default() };
        let m = render_metrics(&st, Some(7));
        assert!(m.contains("mm_sync_last_success_timestamp_seconds{project=\"epel\"} 5\n"));
        assert!(m.contains("mm_sync_last_run_success{project=\"epel\"} 1\n"));
        assert!(m.contains("mm_sync_data_free_bytes{project=\"epel\"} 7\n"));
    }
}
