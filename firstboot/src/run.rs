//! One firstboot run: render files, plan and apply storage, record state and a log.

use std::fmt::Write as _;
use std::path::Path;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use mmconfig::{NodeConfig, DATA_MOUNT, STATE_DIR};
use serde::{Deserialize, Serialize};

use crate::apply::Host;
use crate::files::RenderedFile;
use crate::network;
use crate::probe::{self, DiskOverride};
use crate::storage::{self, Plan};

/// What the last run did, kept in /var/lib/micromirror/firstboot/state.json.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RunState {
    pub finished_unix: u64,
    pub seconds: f64,
    pub config_source: String,
    pub fqdn: String,
    /// Files and steps that changed something; empty on a converged node.
    pub changed: Vec<String>,
    /// Lines for remote hands; empty when all is well.
    pub problems: Vec<String>,
    pub notes: Vec<String>,
    pub data_disk: Option<String>,
}

pub fn state_path(host: &Host) -> std::path::PathBuf {
    host.path(Path::new(STATE_DIR)).join("firstboot/state.json")
}

pub fn load_state(host: &Host) -> Option<RunState> {
    serde_json::from_str(&std::fs::read_to_string(state_path(host)).ok()?).ok()
}

/// The OS family of the target: NetworkManager keyfiles on RHEL-likes, networkd elsewhere.
fn uses_network_manager(host: &Host) -> bool {
    let text = std::fs::read_to_string(host.path(Path::new("/etc/os-release"))).unwrap_or_default();
    text.lines().any(|l| {
        (l.starts_with("ID=") || l.starts_with("ID_LIKE="))
            && ["rhel", "almalinux", "rocky", "fedora", "centos"].iter().any(|id| l.contains(id))
    })
}

/// Everything firstboot renders, in install order.
pub fn render_files(host: &Host, cfg: &NodeConfig) -> Vec<RenderedFile> {
    let mut files = network::render_host_identity(cfg);
    let nics = probe::nics();
    let ports = network::select_ports(cfg, &nics);
    if uses_network_manager(host) {
        files.extend(network::render_nm_keyfiles(cfg, &ports));
    } else {
        files.extend(network::render_networkd(cfg, &ports));
    }
    files
}

/// Observe disks and mounts and plan storage.
pub fn plan_storage(host: &Host, cfg: &NodeConfig, overrides: &[DiskOverride]) -> Result<Plan> {
    let root_src = probe::mount_source(&host.root);
    let disks = probe::disks(overrides, root_src.as_deref()).context("observing the disks")?;
    let mounted = probe::mount_source(&host.path(Path::new(DATA_MOUNT))).is_some();
    Ok(storage::plan(cfg, &disks, mounted))
}

/// Converge the node; returns the state that was recorded.
pub fn run(host: &Host, cfg: &NodeConfig, source: &str, overrides: &[DiskOverride], say: &mut dyn FnMut(&str)) -> Result<RunState> {
    let started = Instant::now();
    let mut st = RunState { config_source: source.to_string(), fqdn: cfg.node.fqdn.clone(), ..Default::default() };

    for f in render_files(host, cfg) {
        if host.install(&f).with_context(|| format!("installing {}", f.path.display()))? {
            st.changed.push(format!("wrote {}", f.path.display()));
        }
    }
    if host.live() {
        // The getty banner and every service started after us see the FQDN right away.
        nix::unistd::sethostname(&cfg.node.fqdn).context("setting the hostname")?;
    }

    let plan = plan_storage(host, cfg, overrides)?;
    st.notes.extend(plan.notes.iter().cloned());
    st.data_disk = plan.data_disk.clone();
    for note in &plan.notes {
        say(&format!("storage: {note}"));
    }
    for step in &plan.steps {
        say(&format!("storage: {}", describe_step(step)));
        match host.step(step) {
            Ok(()) => st.changed.push(describe_step(step)),
            Err(e) => {
                st.problems.push(format!("storage step failed: {}: {e:#}", describe_step(step)));
                break;
            }
        }
    }
    st.problems.extend(plan.problems.iter().map(|p| p.message.clone()));

    st.seconds = started.elapsed().as_secs_f64();
    st.finished_unix = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    record(host, &st)?;
    Ok(st)
}

pub fn describe_step(step: &storage::Step) -> String {
    use storage::Step::*;
    match step {
        Wipe { device, serial } => format!("wiping {device} (serial {serial}, opted in by the fleet)"),
        PartitionWhole { device } => format!("creating a GPT with one {} partition on {device}", mmconfig::DATA_LABEL),
        AddPartition { device } => format!("adding a {} partition in the free space of {device}", mmconfig::DATA_LABEL),
        MakeFs { disk } => format!("creating the XFS filesystem {} on {disk}", mmconfig::DATA_LABEL),
        Grow { device, .. } => format!("growing {device} and its filesystem to the end of the disk"),
        Mount => format!("mounting the data filesystem at {DATA_MOUNT} (srv-mirror.mount)"),
    }
}

/// Write state.json and append this run to the log, atomically for the state.
fn record(host: &Host, st: &RunState) -> Result<()> {
    let json = serde_json::to_string_pretty(st)? + "\n";
    host.install(&RenderedFile::new(Path::new(STATE_DIR).join("firstboot/state.json"), 0o644, json))?;
    let mut log = format!("run finished {} after {:.2} s, config from {}\n", st.finished_unix, st.seconds, st.config_source);
    for c in &st.changed {
        let _ = writeln!(log, "  changed: {c}");
    }
    if st.changed.is_empty() {
        log.push_str("  nothing changed: the node was already converged\n");
    }
    for p in &st.problems {
        let _ = writeln!(log, "  PROBLEM: {p}");
    }
    let path = host.path(Path::new(STATE_DIR)).join("firstboot/runs.log");
    use std::io::Write;
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .and_then(|mut f| f.write_all(log.as_bytes()))
        .with_context(|| format!("appending to {}", path.display()))?;
    Ok(())
}
