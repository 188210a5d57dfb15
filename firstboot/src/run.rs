//! One firstboot run: render files, plan and apply storage, record state and a log.

use std::fmt::Write as _;
use std::path::Path;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use mmconfig::{NodeConfig, ADMIN_USER, DATA_MOUNT, PUSH_USER, STATE_DIR};
use serde::{Deserialize, Serialize};

use crate::accounts::{self, UserOutcome};
use crate::apply::Host;
use crate::files::RenderedFile;
use crate::hostkey::Delivered;
use crate::network;
use crate::probe::{self, DiskOverride};
use crate::services::{self, Family, Paths};
use crate::storage::{self, Plan};

/// What the last run did, kept in /var/lib/micromirror/firstboot/state.json.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RunState {
    pub finished_unix: u64,
    pub seconds: f64,
    /// Of which formatting, partitioning and mounting (mkfs.xfs dominates on a blank disk).
    #[serde(default)]
    pub storage_seconds: f64,
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

/// The target's distribution family, from its /etc/os-release.
pub fn family(host: &Host) -> Family {
    Family::from_os_release(&std::fs::read_to_string(host.path(Path::new("/etc/os-release"))).unwrap_or_default())
}

/// Hostname and network files, in install order (the services come after storage).
pub fn render_files(host: &Host, cfg: &NodeConfig) -> Vec<RenderedFile> {
    let mut files = network::render_host_identity(cfg);
    let nics = probe::nics();
    let ports = network::select_ports(cfg, &nics);
    if family(host) == Family::Rhel {
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
pub fn run(
    host: &Host,
    cfg: &NodeConfig,
    source: &str,
    host_key: &Delivered,
    overrides: &[DiskOverride],
    say: &mut dyn FnMut(&str),
) -> Result<RunState> {
    let started = Instant::now();
    let mut st = RunState { config_source: source.to_string(), fqdn: cfg.node.fqdn.clone(), ..Default::default() };

    for f in render_files(host, cfg) {
        if host.install(&f).with_context(|| format!("installing {}", f.path.display()))? {
            st.changed.push(format!("wrote {}", f.path.display()));
        }
    }
    install_host_key(host, host_key, &mut st)?;
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
    let storage_started = Instant::now();
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
    st.storage_seconds = storage_started.elapsed().as_secs_f64();
    st.problems.extend(plan.problems.iter().map(|p| p.message.clone()));

    let data_ready = probe::mount_source(&host.path(Path::new(DATA_MOUNT))).is_some();
    if let Err(e) = converge_services(host, cfg, data_ready, &mut st, say) {
        st.problems.push(format!("mirror services: {e:#}"));
    }

    st.seconds = started.elapsed().as_secs_f64();
    st.finished_unix = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    record(host, &st)?;
    Ok(st)
}

/// The delivered host key, before sshd starts (we are ordered before it); sshd's drop-in names
/// only this key, so a node without one has no ssh: a problem for the status report.
fn install_host_key(host: &Host, key: &Delivered, st: &mut RunState) -> Result<()> {
    let installed = Path::new(mmconfig::SSH_HOST_KEY);
    match key {
        Delivered::Key { .. } => {
            let mut changed = false;
            for f in key.files() {
                if host.install(&f).with_context(|| format!("installing {}", f.path.display()))? {
                    st.changed.push(format!("wrote {}", f.path.display()));
                    changed = true;
                }
            }
            if changed && host.live() && family(host) == Family::Rhel {
                let _ = crate::apply::cmd("restorecon", &["-F", mmconfig::SSH_HOST_KEY, &format!("{}.pub", mmconfig::SSH_HOST_KEY)]);
            }
        }
        Delivered::Missing if host.path(installed).is_file() => {
            st.notes.push(format!("no ssh host key delivered with node.toml: keeping {}", installed.display()))
        }
        Delivered::Missing => st.problems.push(format!(
            "no ssh host key delivered with node.toml and none at {}: sshd cannot start; rebuild the node's image or stick with a current mmbuild",
            installed.display()
        )),
        Delivered::Broken(why) => st.problems.push(format!("the delivered ssh host key is unusable ({why}): rebuild the node's image or stick")),
    }
    Ok(())
}

/// Install, enable and (on the live node) start the mirror services.
fn converge_services(host: &Host, cfg: &NodeConfig, data_ready: bool, st: &mut RunState, say: &mut dyn FnMut(&str)) -> Result<()> {
    let family = family(host);
    let defaults = Paths::default();
    let cert = Path::new(&defaults.tls_dir).join(&cfg.node.fqdn).join("fullchain.pem");
    let tls_ready = host.path(&cert).is_file();
    if cfg.fleet.https {
        std::fs::create_dir_all(host.path(Path::new(&defaults.acme_dir))).context("creating the ACME webroot")?;
    }
    let svc = services::render_services(cfg, &Paths { family, tls_ready, ..defaults })?;
    match accounts::ensure_user(host, ADMIN_USER, "micro mirror fleet admin")? {
        UserOutcome::Created => st.changed.push(format!("created the admin user {ADMIN_USER}")),
        UserOutcome::Exists => {}
        UserOutcome::NoAccountDatabase => st.notes.push(format!("no /etc/passwd under {}: admin user not created", host.root.display())),
    }
    let mut changed = false;
    // systemd loads a unit file it has not seen on first use; only a rewritten one needs a
    // daemon-reload (which costs a second or more early in boot).
    let mut units_rewritten = false;
    for f in &svc.files {
        let existed = host.path(&f.path).exists();
        if host.install(f).with_context(|| format!("installing {}", f.path.display()))? {
            st.changed.push(format!("wrote {}", f.path.display()));
            changed = true;
            units_rewritten |= existed && f.path.starts_with("/etc/systemd/system");
        }
    }
    if svc.push_user && accounts::ensure_user(host, PUSH_USER, "upstream push trigger")? == UserOutcome::Created {
        st.changed.push(format!("created the push user {PUSH_USER}"));
    }
    for user in [ADMIN_USER, PUSH_USER] {
        if accounts::own_ssh_dir(host, user)? {
            st.changed.push(format!("gave {user} its ssh keys"));
        }
    }
    if data_ready {
        // nginx and rsyncd serve these directories; they must exist before the first sync.
        for p in &cfg.projects {
            let dir = host.path(Path::new(DATA_MOUNT)).join(&p.directory);
            if !dir.is_dir() {
                std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
                st.changed.push(format!("created {}", dir.display()));
            }
        }
    }
    let mut missing = Vec::new();
    for (unit, target) in &svc.enable {
        match host.enable(unit, target)? {
            Some(true) => {
                st.changed.push(format!("enabled {unit}"));
                changed = true;
            }
            Some(false) => {}
            None => missing.push(unit.clone()),
        }
    }
    if !missing.is_empty() {
        let msg = format!("units not installed, not enabled: {}", missing.join(", "));
        if host.live() {
            st.problems.push(msg)
        } else {
            st.notes.push(msg)
        }
    }
    if !host.live() {
        return Ok(());
    }
    if units_rewritten {
        say("services: unit files changed, reloading systemd");
        host.systemctl(&["daemon-reload"])?;
    }
    if changed {
        // systemd-sysctl ran before us: apply BBR + fq_codel now rather than at the next boot.
        let _ = crate::apply::cmd("modprobe", &["tcp_bbr"]);
        if let Err(e) = crate::apply::cmd("sysctl", &["-q", "-p", "/etc/sysctl.d/90-micromirror.conf"]) {
            st.problems.push(format!("applying sysctl settings: {e:#}"));
        }
    }
    if family == Family::Rhel {
        // firewalld conflicts with nftables.service and would replace our ruleset.
        if host.units_active(&["firewalld.service"])[0]
            || host.path(Path::new("/etc/systemd/system/multi-user.target.wants/firewalld.service")).exists()
        {
            if let Err(e) = host.systemctl(&["disable", "--now", "--no-block", "firewalld.service"]) {
                st.problems.push(format!("disabling firewalld: {e:#}"));
            }
        }
        // SELinux: files we created under /home need sshd's labels.
        let _ = crate::apply::cmd("restorecon", &["-RF", &format!("/home/{ADMIN_USER}"), &format!("/home/{PUSH_USER}")]);
    }
    // One systemctl call per verb, not per unit: each call costs a D-Bus round trip, which
    // adds up early in boot (and to seconds under emulation).
    let units: Vec<&str> = svc.enable.iter().map(|(u, _)| u.as_str()).filter(|u| !missing.iter().any(|m| m == u)).collect();
    let active = host.units_active(&units);
    // The firewall must hold before the network comes up (we run before network-pre):
    // load it now rather than wait for nftables.service's queued job.
    let nft_active = units.iter().zip(&active).any(|(u, a)| *u == "nftables.service" && *a);
    if changed || !nft_active {
        if let Err(e) = crate::apply::cmd("nft", &["-f", family.nft_conf()]) {
            st.problems.push(format!("loading the firewall: {e:#}"));
        }
    }
    // --no-block: we run early in boot, ordered before these units; waiting would deadlock.
    // Units not running start; running units whose configuration changed reload.
    let mut start: Vec<String> = units.iter().zip(&active).filter(|(_, a)| !**a).map(|(u, _)| u.to_string()).collect();
    let reload: Vec<String> =
        if changed { units.iter().zip(&active).filter(|(_, a)| **a).map(|(u, _)| u.to_string()).collect() } else { Vec::new() };
    if data_ready {
        for p in cfg.projects.iter().filter(|p| !host.path(Path::new(&mmconfig::sync_status_file(&p.name))).exists()) {
            say(&format!("services: starting the first sync of {}", p.name));
            start.push(format!("mm-sync-{}.service", p.name));
        }
    }
    for (verb, list) in [("start", start), ("reload-or-restart", reload)] {
        if list.is_empty() {
            continue;
        }
        let mut args = vec![verb, "--no-block"];
        args.extend(list.iter().map(String::as_str));
        if let Err(e) = host.systemctl(&args) {
            st.problems.push(format!("systemctl {verb} {}: {e:#}", list.join(" ")));
        }
    }
    Ok(())
}

pub fn describe_step(step: &storage::Step) -> String {
    use storage::Step::*;
    match step {
        Wipe { device, serial } => {
            format!("wiping {device} (serial {serial}, opted in by the fleet)")
        }
        PartitionWhole { device } => format!("creating a GPT with one {} partition on {device}", mmconfig::DATA_LABEL),
        AddPartition { device } => format!("adding a {} partition in the free space of {device}", mmconfig::DATA_LABEL),
        MakeFs { disk } => format!("creating the XFS filesystem {} on {disk}", mmconfig::DATA_LABEL),
        Grow { device, .. } => {
            format!("growing {device} and its filesystem to the end of the disk")
        }
        Mount { disk } => {
            format!("mounting the data filesystem of {disk} at {DATA_MOUNT} (srv-mirror.mount)")
        }
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
