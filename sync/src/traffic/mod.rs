//! `mm-sync --traffic`: count what the node served, per project, from nginx's and rsyncd's logs.
//!
//! The parsers ([`nginx`], [`rsyncd`]) and the counts ([`tally`]) are pure; [`cursor`] reads a
//! log across rotations; this module loads the state, feeds it the new lines and writes the
//! state, the public document and node_exporter's textfile, each atomically.

pub mod cursor;
pub mod nginx;
pub mod rsyncd;
pub mod tally;

use std::io::Read;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use hostkit::atomic::write_mode;
use mmconfig::{NodeConfig, DATA_MOUNT, METRICS_DIR, PUBLIC_DIR, TRAFFIC_STATE_DIR};
use sha2::{Digest, Sha256};

use crate::engine::Env;
use tally::State;

/// The logs, as the rendered nginx site and rsyncd.conf name them.
pub const NGINX_LOG: &str = "/var/log/nginx/micromirror-access.log";
pub const RSYNCD_LOG: &str = "/var/log/nginx/rsyncd.log";

/// Where one run reads and writes, under `env.root`.
#[derive(Debug, Clone)]
pub struct Files {
    pub nginx_log: PathBuf,
    pub rsyncd_log: PathBuf,
    pub state: PathBuf,
    pub document: PathBuf,
    pub metrics: PathBuf,
}

impl Files {
    pub fn new(env: &Env) -> Files {
        let under = |p: &str| env.root.join(p.trim_start_matches('/'));
        Files {
            nginx_log: under(NGINX_LOG),
            rsyncd_log: under(RSYNCD_LOG),
            state: under(TRAFFIC_STATE_DIR).join("state.json"),
            document: under(DATA_MOUNT).join(PUBLIC_DIR).join(mmconfig::traffic::FILE),
            metrics: under(METRICS_DIR).join("mm_traffic.prom"),
        }
    }
}

/// What a run did, for its one line of output.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    pub nginx_lines: u64,
    pub rsyncd_lines: u64,
    /// Rotated logs that were gone before their last lines were read.
    pub lost: Vec<PathBuf>,
}

fn load(path: &std::path::Path) -> Result<State> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(State::new()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let st: State = serde_json::from_str(&text)
        .with_context(|| format!("{} does not parse: move it aside to count afresh from the logs' current ends", path.display()))?;
    if st.version != tally::STATE_VERSION {
        bail!("{} has version {}, this mm-sync reads {}", path.display(), st.version, tally::STATE_VERSION);
    }
    Ok(st)
}

/// A run's 32 bytes from the kernel's generator; a day opened in the run gets SHA-256(them, day)
/// as its salt: as unguessable, and one read a run.
fn run_secret() -> Result<[u8; 32]> {
    let mut b = [0u8; 32];
    std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut b)).context("reading /dev/urandom for the day's salt")?;
    Ok(b)
}

/// One run: read both logs from where the last run stopped, then replace the state, the
/// public document and the metrics.
pub fn collect(cfg: &NodeConfig, files: &Files, now: u64) -> Result<Summary> {
    let mut st = load(&files.state)?;
    let today = i64::try_from(now / 86_400).unwrap_or(i64::MAX - 1);
    let mut sum = Summary::default();
    let secret = run_secret()?;
    let mut salt = |day: i64| {
        let d = Sha256::new().chain_update(secret).chain_update(day.to_le_bytes()).finalize();
        let mut s = [0u8; 16];
        s.copy_from_slice(&d[..16]);
        s
    };
    let at = st.nginx.clone();
    let r = cursor::read(&files.nginx_log, &at, &mut |line| {
        st.lines += 1;
        sum.nginx_lines += 1;
        match line.map(nginx::parse) {
            // A clock gone wrong must not make a far day the newest: 400 days before it would
            // be pruned.
            Some(Ok(hit)) if hit.day > today + 1 => st.skip("future-time"),
            Some(Ok(hit)) => st.http(&hit, &mut salt),
            Some(Err(nginx::Skip::NoProject)) => st.skip("no-project"),
            Some(Err(nginx::Skip::Malformed)) => st.skip("malformed"),
            None => st.skip("too-long"),
        }
    })
    .with_context(|| format!("reading {}", files.nginx_log.display()))?;
    st.nginx = r.cursor;
    sum.lost.extend(r.rotated_missing);
    let module = |m: &str| cfg.projects.iter().find(|p| p.rsync_module == m).map(|p| p.name.clone());
    let at = st.rsyncd.clone();
    let r = cursor::read(&files.rsyncd_log, &at, &mut |line| {
        st.lines += 1;
        sum.rsyncd_lines += 1;
        match line.map(rsyncd::parse) {
            Some(rsyncd::Event::Start { day, .. } | rsyncd::Event::End { day, .. }) if day > today + 1 => st.skip("future-time"),
            Some(rsyncd::Event::Start { pid, day, module: m, addr }) => {
                if let Some(project) = module(m) {
                    st.rsync_start(pid, &project, &addr, day);
                }
            }
            Some(rsyncd::Event::End { pid, day, sent }) => st.rsync_end(pid, sent, day),
            Some(rsyncd::Event::Other) => {}
            None => st.skip("too-long"),
        }
    })
    .with_context(|| format!("reading {}", files.rsyncd_log.display()))?;
    st.rsyncd = r.cursor;
    sum.lost.extend(r.rotated_missing);
    st.prune();
    // Every hosted project has its counters from the first run on: "no requests" is a zero the
    // alert rules can see, not a missing series.
    for p in &cfg.projects {
        st.totals.entry(p.name.clone()).or_default();
    }
    // The state first: the outputs are made from it and a crash between them is repaired by
    // the next run, while the state alone decides what has been counted.
    let write = |path: &std::path::Path, mode: u32, bytes: &[u8]| -> Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        write_mode(path, mode, bytes).with_context(|| format!("writing {}", path.display()))
    };
    // 0600: the open days' salts and network hashes are the collector's alone.
    write(&files.state, 0o600, &serde_json::to_vec(&st)?)?;
    let doc = st.document(&cfg.node.fqdn, now);
    write(&files.document, 0o644, (serde_json::to_string_pretty(&doc)? + "\n").as_bytes())?;
    write(&files.metrics, 0o644, st.metrics(now).as_bytes())?;
    Ok(sum)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_from_a_wrong_clock_is_skipped_and_history_stays() {
        let d = tempfile::tempdir().unwrap();
        let env = Env { root: d.path().into(), rsync: String::new(), keep_log_days: 0 };
        let files = Files::new(&env);
        std::fs::create_dir_all(files.nginx_log.parent().unwrap()).unwrap();
        let line =
            |date: &str| format!("192.0.2.1 - - [{date}:06:00:00 +0000] \"GET /epel/x HTTP/1.1\" 200 1 2 \"-\" \"-\" project=epel rt=0\n");
        std::fs::write(&files.nginx_log, line("07/Dec/2026") + &line("07/Dec/2099")).unwrap();
        let cfg = crate::testdata::node("ci");
        let now = 20_794 * 86_400 + 7 * 3600;
        let sum = collect(&cfg, &files, now).unwrap();
        assert_eq!(sum.nginx_lines, 2);
        let doc: mmconfig::traffic::TrafficDoc = serde_json::from_str(&std::fs::read_to_string(&files.document).unwrap()).unwrap();
        assert_eq!(doc.days.iter().map(|d| d.date.as_str()).collect::<Vec<_>>(), ["2026-12-07"]);
        assert!(std::fs::read_to_string(&files.metrics).unwrap().contains("mm_traffic_lines_skipped_total{reason=\"future-time\"} 1\n"));
        // The state is the collector's alone, and a second run reads nothing twice.
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&files.state).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(collect(&cfg, &files, now).unwrap().nginx_lines, 0);
    }
}
