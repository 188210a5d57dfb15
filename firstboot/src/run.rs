//! One firstboot run: render files, plan and apply storage, record state and a log.

use std::fmt::Write as _;
use std::path::Path;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use mmconfig::report::{self, RunReport};
use mmconfig::{NodeConfig, ADMIN_USER, DATA_MOUNT, PUSH_USER, STATE_DIR};
use serde::{Deserialize, Serialize};

use crate::accounts;
use crate::apply::Host;
use crate::desired::{render_all, Facts};
use crate::files::{RenderedFile, Verb};
use crate::hostkey::Delivered;
use crate::plan::{self, Change};
use crate::probe::{self, DiskOverride};
use crate::services::{Family, Paths};
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

impl RunState {
    /// The run as `mm-firstboot run --json` reports it.
    pub fn report(&self) -> RunReport {
        RunReport {
            version: report::VERSION,
            fqdn: self.fqdn.clone(),
            outcome: RunReport::outcome_of(&self.changed, &self.problems),
            changes: self.changed.clone(),
            problems: self.problems.clone(),
            notes: self.notes.clone(),
            seconds: self.seconds,
        }
    }
}

/// The report as `mm-firstboot run` prints it: a summary line, then one line per problem.
pub fn render_report(report: &RunReport, storage_seconds: f64) -> String {
    let fqdn = &report.fqdn;
    let mut out = if report.changes.is_empty() {
        format!("mm-firstboot: {fqdn}: nothing to change, storage unchanged ({:.2} s)\n", report.seconds)
    } else {
        format!(
            "mm-firstboot: {fqdn}: {} change(s) in {:.2} s ({storage_seconds:.2} s of it storage steps)\n",
            report.changes.len(),
            report.seconds
        )
    };
    for p in &report.problems {
        let _ = writeln!(out, "mm-firstboot: {fqdn}: PROBLEM: {p}");
    }
    out
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

/// The running image's version, from the target's /etc/os-release.
pub fn image_version(host: &Host) -> Option<String> {
    mmconfig::image::from_os_release(&std::fs::read_to_string(host.path(Path::new("/etc/os-release"))).ok()?)
}

/// Observe what the renderers need. `data_ready`: the data filesystem is (or will be) mounted.
pub fn observe(host: &Host, cfg: &NodeConfig, data_ready: bool) -> Result<Facts> {
    let cert = Path::new(&Paths::default().tls_dir).join(&cfg.node.fqdn).join("fullchain.pem");
    let mut facts = Facts {
        family: family(host),
        nics: probe::nics(),
        // An unusable value is reported by `run` and `status`; here it is simply not used.
        nic_stand_in: crate::standin::read(host).ok().flatten(),
        tls_ready: host.path(&cert).is_file(),
        data_fs_uuid: None,
        data_ready,
        image_version: image_version(host),
        os: host.live().then(crate::os::status),
    };
    observe_data(host, &mut facts, data_ready)?;
    Ok(facts)
}

/// The facts storage steps change (the data filesystem), observed again after them: the rest
/// stays as observed before, each look costing processes (blkid, systemctl, a mount).
fn observe_data(host: &Host, facts: &mut Facts, data_ready: bool) -> Result<()> {
    facts.data_fs_uuid = match probe::mount_source(&host.path(Path::new(DATA_MOUNT))) {
        Some(dev) if dev.starts_with("/dev/") => probe::blkid(&dev)?.get("UUID").cloned(),
        _ => None,
    };
    facts.data_ready = data_ready;
    Ok(())
}

/// Observe disks and mounts and plan storage.
pub fn plan_storage(host: &Host, cfg: &NodeConfig, overrides: &[DiskOverride]) -> Result<Plan> {
    let root_src = probe::mount_source(&host.root);
    let disks = probe::disks(overrides, root_src.as_deref()).context("observing the disks")?;
    let mounted = probe::mount_source(&host.path(Path::new(DATA_MOUNT))).is_some();
    Ok(storage::plan(cfg, &disks, mounted))
}

pub use mmconfig::plan::NodePlan;

pub fn plan(host: &Host, cfg: &NodeConfig, source: &str, key: &Delivered, overrides: &[DiskOverride]) -> Result<NodePlan> {
    let storage = plan_storage(host, cfg, overrides)?;
    let mounted = probe::mount_source(&host.path(Path::new(DATA_MOUNT))).is_some();
    let will_mount = storage.steps.iter().any(|s| matches!(s, storage::Step::Mount { .. }));
    let desired = render_all(cfg, key, &observe(host, cfg, mounted || will_mount)?)?;
    let mut changes = plan::file_changes(host, &desired.early_files);
    changes.extend(storage.steps.iter().map(|step| Change::Storage { step: step.clone() }));
    let late = plan::file_changes(host, &desired.files);
    let (create, own) = plan::account_changes(host, &desired.accounts, &late);
    changes.extend(create);
    changes.extend(late);
    changes.extend(own);
    changes.extend(plan::directory_changes(host, &desired.directories));
    changes.extend(plan::unit_changes(host, &desired.units, &desired.files));
    changes.extend(plan::stale_changes(host, &desired.files, &desired.units));
    changes.extend(plan::service_changes(&changes, desired.early_files.iter().chain(&desired.files)));
    Ok(NodePlan { version: mmconfig::plan::VERSION, fqdn: cfg.node.fqdn.clone(), config_source: source.to_string(), changes, storage })
}

/// Converge the node; returns the state that was recorded.
pub fn run(
    host: &Host,
    cfg: &NodeConfig,
    source: &str,
    key: &Delivered,
    overrides: &[DiskOverride],
    say: &mut dyn FnMut(&str),
) -> Result<RunState> {
    let started = Instant::now();
    let mut st = RunState { config_source: source.to_string(), fqdn: cfg.node.fqdn.clone(), ..Default::default() };

    match crate::standin::read(host) {
        Ok(Some(driver)) => {
            let note = crate::network::stand_in_note(cfg, &driver);
            say(&note);
            st.notes.push(note);
        }
        Ok(None) => {}
        Err(warning) => {
            say(&format!("warning: {warning}"));
            st.notes.push(warning);
        }
    }
    let mounted = probe::mount_source(&host.path(Path::new(DATA_MOUNT))).is_some();
    let mut facts = observe(host, cfg, mounted)?;
    let early = render_all(cfg, key, &facts)?.early_files;
    let early_changes = plan::file_changes(host, &early);
    for change in &early_changes {
        apply_change(host, change, &early, &mut st)?;
    }
    check_host_key(host, key, &mut st);
    let key_changed = early_changes.iter().any(|c| matches!(c, Change::WriteFile { path, .. } if path.starts_with(mmconfig::SSH_HOST_KEY)));
    if key_changed && host.live() && facts.family == Family::Rhel {
        // SELinux: sshd reads only keys labelled for it.
        let _ = hostkit::cmd::text("restorecon", &["-F", mmconfig::SSH_HOST_KEY, &format!("{}.pub", mmconfig::SSH_HOST_KEY)]);
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
    let storage_started = Instant::now();
    for step in &plan.steps {
        say(&format!("storage: {}", step.describe()));
        match host.step(step) {
            Ok(()) => st.changed.push(step.describe()),
            Err(e) => {
                st.problems.push(format!("storage step failed: {}: {e:#}", step.describe()));
                break;
            }
        }
    }
    st.storage_seconds = storage_started.elapsed().as_secs_f64();
    st.problems.extend(plan.problems.iter().map(|p| p.message.clone()));

    // Only a storage step changes the data filesystem: without one, the first look stands.
    let data_ready = if plan.steps.is_empty() {
        mounted
    } else {
        let ready = probe::mount_source(&host.path(Path::new(DATA_MOUNT))).is_some();
        observe_data(host, &mut facts, ready)?;
        ready
    };
    let now = Moment { facts: &facts, booting: host.booting() };
    if let Err(e) = converge_services(host, cfg, key, now, &early_changes, &mut st, say) {
        st.problems.push(format!("mirror services: {e:#}"));
    }
    if host.live() && !now.booting && st.problems.is_empty() {
        st.problems.extend(read_back(host, cfg, data_ready));
    }

    st.seconds = started.elapsed().as_secs_f64();
    st.finished_unix = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    record(host, &st)?;
    Ok(st)
}

/// What the running daemons must show after a converge on a running node, read back from them
/// until they do (bounded): the problems left, none once nginx and rsyncd serve the change.
fn read_back(host: &Host, cfg: &NodeConfig, data_ready: bool) -> Vec<String> {
    let data = host.path(Path::new(DATA_MOUNT));
    let dropped: Vec<(String, String)> = crate::adopt::load_known(host)
        .projects
        .into_iter()
        .filter(|(name, dir)| cfg.project(name).is_none() && data.join(dir).is_dir())
        .collect();
    let want = crate::readback::Expect::new(cfg, |dir| data_ready && data.join(dir).is_dir(), &dropped);
    let http = std::net::SocketAddr::from(([127, 0, 0, 1], Paths::default().http_port));
    let rsync = std::net::SocketAddr::from(([127, 0, 0, 1], 873));
    crate::readback::wait(&want, http, rsync, std::time::Duration::from_secs(20))
        .into_iter()
        .map(|p| format!("after the change: {p}"))
        .collect()
}

/// Carry out one planned change and record it under the plan's own description.
fn apply_change(host: &Host, change: &Change, files: &[RenderedFile], st: &mut RunState) -> Result<()> {
    match change {
        Change::WriteFile { path, .. } => {
            let f = files.iter().find(|f| &f.path == path).context("planned file not rendered")?;
            host.install(f).with_context(|| format!("installing {}", path.display()))?;
        }
        Change::CreateAccount { user } => {
            let a = crate::desired::account(user).with_context(|| format!("no account {user} is known"))?;
            accounts::ensure_user(host, a.user, a.comment, a.system)?;
        }
        Change::OwnSshDir { user } => {
            accounts::own_ssh_dir(host, user)?;
        }
        Change::CreateDirectory { path, owner } => {
            let dir = host.path(path);
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
            if let Some(user) = owner {
                let (uid, gid) = accounts::lookup(host, user).with_context(|| format!("the account {user} does not exist"))?;
                accounts::hand_over(&dir, uid, gid, false)?;
            }
        }
        Change::OwnDirectory { path, user, recursive, lock } => {
            let dir = host.path(path);
            let (uid, gid) = accounts::lookup(host, user).with_context(|| format!("the account {user} does not exist"))?;
            // mm-sync holds this flock for a whole run; an existing lock file is only opened.
            let _held = match lock.as_ref().and_then(|l| std::fs::File::open(host.path(l)).ok()) {
                Some(f) => match nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusiveNonblock) {
                    Ok(held) => Some(held),
                    Err(_) => {
                        st.notes.push(format!("{}: a sync is running; it changes hands at the next mm-firstboot run", dir.display()));
                        return Ok(());
                    }
                },
                None => None,
            };
            let started = Instant::now();
            let n = accounts::hand_over(&dir, uid, gid, *recursive)?;
            st.notes.push(format!("{}: {n} entries handed to {user} in {:.1} s", dir.display(), started.elapsed().as_secs_f64()));
        }
        Change::EnableUnit { unit, target } => {
            host.enable(unit, target)?;
        }
        Change::DisableUnit { unit, target } => {
            host.disable(unit, target)?;
        }
        Change::RemoveFile { path } => {
            let p = host.path(path);
            std::fs::remove_file(&p).with_context(|| format!("removing {}", p.display()))?;
        }
        Change::Storage { step } => host.step(step)?,
        Change::Service { unit, verb, .. } => host.systemctl(&[verb.systemctl(), unit])?,
    }
    st.changed.push(change.describe());
    Ok(())
}

/// sshd's drop-in names only the delivered key, so a node without one has no ssh: a problem for
/// the status report (the key itself is one of the early files).
fn check_host_key(host: &Host, key: &Delivered, st: &mut RunState) {
    let installed = Path::new(mmconfig::SSH_HOST_KEY);
    match key {
        Delivered::Key { .. } => {}
        Delivered::Missing if host.path(installed).is_file() => {
            st.notes.push(format!("no ssh host key delivered with node.toml: keeping {}", installed.display()))
        }
        Delivered::Missing => st.problems.push(format!(
            "no ssh host key delivered with node.toml and none at {}: sshd cannot start; rebuild the node's image or stick with a current mmbuild",
            installed.display()
        )),
        Delivered::Broken(why) => st.problems.push(format!("the delivered ssh host key is unusable ({why}): rebuild the node's image or stick")),
    }
}

/// Where the node stands when the services converge.
#[derive(Debug, Clone, Copy)]
struct Moment<'a> {
    /// What the renderers need, the data filesystem as it is after the storage steps.
    facts: &'a Facts,
    /// systemd is still booting (see [`Host::booting`]).
    booting: bool,
}

/// Install, enable and (on the live node) start the mirror services; running units take only the
/// changes to files they read. `early`: the changes run made before storage (host key, network).
fn converge_services(
    host: &Host,
    cfg: &NodeConfig,
    key: &Delivered,
    now: Moment,
    early: &[Change],
    st: &mut RunState,
    say: &mut dyn FnMut(&str),
) -> Result<()> {
    let Moment { facts, booting } = now;
    let data_ready = facts.data_ready;
    let family = facts.family;
    if cfg.fleet.https {
        std::fs::create_dir_all(host.path(Path::new(&Paths::default().acme_dir))).context("creating the ACME webroot")?;
    }
    let desired = render_all(cfg, key, facts)?;
    let files = plan::file_changes(host, &desired.files);
    let (create, own) = plan::account_changes(host, &desired.accounts, &files);
    if !host.live() && !host.path(Path::new("/etc/passwd")).exists() {
        st.notes.push(format!("no /etc/passwd under {}: accounts not created", host.root.display()));
    }
    // systemd loads a unit file it has not seen on first use; only a rewritten one, or a drop-in
    // for a unit already loaded, needs a daemon-reload (which costs a second or more early in boot).
    let units_rewritten = files.iter().any(|c| {
        matches!(c, Change::WriteFile { path, new, .. } if path.starts_with("/etc/systemd/system")
            && (!new || path.parent().and_then(Path::extension).is_some_and(|e| e == "d")))
    });
    let enable = plan::unit_changes(host, &desired.units, &desired.files);
    let stale = plan::stale_changes(host, &desired.files, &desired.units);
    // A dropped project's timer must not fire again; its data stays (status says how much).
    let stop: Vec<String> = stale
        .iter()
        .filter_map(|c| if let Change::RemoveFile { path } = c { path.file_name().map(|n| n.to_string_lossy().into_owned()) } else { None })
        .collect();
    let dirs = plan::directory_changes(host, &desired.directories);
    for change in create.iter().chain(&files).chain(&own).chain(&dirs).chain(&enable).chain(&stale) {
        apply_change(host, change, &desired.files, st)?;
    }
    crate::adopt::remember(host, cfg)?;
    // Recorded here, carried out below on the live node: plan and run list the same changes.
    let mut written = early.to_vec();
    written.extend(files.iter().cloned());
    let services = plan::service_changes(&written, desired.early_files.iter().chain(&desired.files));
    st.changed.extend(services.iter().map(Change::describe));
    // At boot the units wait for us (we are ordered before them): queue, never wait. On a
    // running node wait for each job, so that `run` returns once the services run the change
    // (systemd bounds each job by the unit's own timeout) and a failed job is reported.
    let queue: &[&str] = if booting { &["--no-block"] } else { &[] };
    if host.live() && !stop.is_empty() {
        let mut args = vec!["stop"];
        args.extend(queue);
        args.extend(stop.iter().map(String::as_str));
        if let Err(e) = host.systemctl(&args) {
            st.problems.push(format!("stopping {}: {e:#}", stop.join(" ")));
        }
    }
    let units_rewritten = units_rewritten || stale.iter().any(|c| matches!(c, Change::RemoveFile { .. }));
    let missing: Vec<&str> = desired.units.iter().map(|(u, _)| u.as_str()).filter(|u| !host.unit_installed(u)).collect();
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
    if family == Family::Rhel {
        rhel_fixups(host, st);
    }
    let units: Vec<&str> = desired.units.iter().map(|(u, _)| u.as_str()).filter(|u| !missing.contains(u)).collect();
    // One systemctl call learns what runs (each call costs a D-Bus round trip, a third of a second
    // early in an emulated boot); networkd is asked along when the network files changed.
    let network_changed = early.iter().any(|c| matches!(c, Change::WriteFile { path, .. } if path.starts_with("/etc/systemd/network")));
    let mut asked = units.clone();
    if network_changed {
        asked.push(NETWORKD);
    }
    let mut active = host.units_active(&asked);
    if network_changed && active.pop() == Some(true) {
        // A day-2 change (at boot we run before networkd): networkd reconfigures every link a
        // new, changed or removed .network file matches.
        say("network: configuration changed, reloading systemd-networkd");
        if let Err(e) = hostkit::cmd::text("networkctl", &["reload"]) {
            st.problems.push(format!("reloading the network configuration: {e:#}"));
        }
    }
    // The firewall must hold before the network comes up. At boot nftables.service's start, queued
    // below, sees to it: the unit is ordered before network-pre.target, which networkd waits for.
    // Otherwise (no such unit, or it is not running on a running node) load the ruleset now. A
    // running nftables.service takes a changed ruleset by its reload (a service change below).
    let load_firewall = match units.iter().zip(&active).find(|(u, _)| **u == NFTABLES) {
        Some((_, running)) => !running && !booting,
        None => true,
    };
    if load_firewall {
        if let Err(e) = hostkit::cmd::text("nft", &["-f", family.nft_conf()]) {
            st.problems.push(format!("loading the firewall: {e:#}"));
        }
    }
    // At boot the first syncs join the one queued start; on a running node the start waits for
    // its jobs, and a sync runs for minutes, so they are queued on their own.
    let first = if data_ready { first_syncs(host, cfg) } else { Vec::new() };
    if !first.is_empty() {
        say(&format!("services: starting the first sync of {}", first.join(" ")));
    }
    let joined: &[String] = if booting { &first } else { &[] };
    let mut calls: Vec<(&str, &[&str], Vec<String>)> =
        systemctl_batches(&units, &active, &services, &missing, joined).into_iter().map(|(verb, list)| (verb, queue, list)).collect();
    if !booting && !first.is_empty() {
        calls.push(("start", &["--no-block"], first));
    }
    for (verb, flags, list) in calls {
        let mut args = vec![verb];
        args.extend(flags);
        args.extend(list.iter().map(String::as_str));
        if let Err(e) = host.systemctl(&args) {
            st.problems.push(format!("systemctl {verb} {}: {e:#}", list.join(" ")));
        }
    }
    Ok(())
}

const NETWORKD: &str = "systemd-networkd.service";
const NFTABLES: &str = "nftables.service";

/// The systemctl calls that bring running units in line, one call per verb and not per unit (each
/// call costs a D-Bus round trip, seconds under emulation): start what is not running (and `also`),
/// then the reloads, then the restarts that the written files call for. A unit that is started
/// reads its new files anyway, so it gets no reload or restart (at boot, none is running and the
/// start is the only call). Units not installed are left out.
fn systemctl_batches(
    units: &[&str],
    active: &[bool],
    services: &[Change],
    missing: &[&str],
    also: &[String],
) -> Vec<(&'static str, Vec<String>)> {
    let stopped: Vec<&str> = units.iter().zip(active).filter(|(_, a)| !**a).map(|(u, _)| *u).collect();
    let start: Vec<String> = stopped.iter().map(|u| u.to_string()).chain(also.iter().cloned()).collect();
    let mut batches: Vec<(&str, Vec<String>)> = vec![("start", start)];
    for verb in [Verb::Reload, Verb::Restart] {
        let list: Vec<String> = services
            .iter()
            .filter_map(|c| match c {
                Change::Service { unit, verb: v, .. }
                    if *v == verb && !missing.contains(&unit.as_str()) && !stopped.contains(&unit.as_str()) =>
                {
                    Some(unit.clone())
                }
                _ => None,
            })
            .collect();
        batches.push((verb.systemctl(), list));
    }
    batches.retain(|(_, list)| !list.is_empty());
    batches
}

/// AlmaLinux: firewalld conflicts with nftables.service and would replace our ruleset; files we
/// created under /home need sshd's SELinux labels.
fn rhel_fixups(host: &Host, st: &mut RunState) {
    if host.units_active(&["firewalld.service"])[0]
        || host.path(Path::new("/etc/systemd/system/multi-user.target.wants/firewalld.service")).exists()
    {
        if let Err(e) = host.systemctl(&["disable", "--now", "--no-block", "firewalld.service"]) {
            st.problems.push(format!("disabling firewalld: {e:#}"));
        }
    }
    let _ = hostkit::cmd::text("restorecon", &["-RF", &format!("/home/{ADMIN_USER}"), &format!("/home/{PUSH_USER}")]);
}

/// The sync service of each project that has never synced: its first sync is queued, never
/// waited for (it runs for minutes).
fn first_syncs(host: &Host, cfg: &NodeConfig) -> Vec<String> {
    cfg.projects
        .iter()
        .filter(|p| !host.path(Path::new(&mmconfig::sync_status_file(&p.name))).exists())
        .map(|p| format!("mm-sync-{}.service", p.name))
        .collect()
}

/// The plan as a person reads it: one line per change, diffs indented under their file.
pub fn render_plan(plan: &NodePlan) -> String {
    let mut out = format!("node {} (config from {})\n", plan.fqdn, plan.config_source);
    for note in &plan.storage.notes {
        let _ = writeln!(out, "  storage: {note}");
    }
    for c in &plan.changes {
        let _ = writeln!(out, "  {}", c.describe());
        if let Change::WriteFile { diff: Some(diff), .. } = c {
            for line in diff.lines() {
                let _ = writeln!(out, "    {line}");
            }
        }
    }
    for p in &plan.storage.problems {
        let _ = writeln!(out, "  PROBLEM: {}", p.message);
    }
    if plan.converged() {
        out.push_str("  nothing to change\n");
    }
    out
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testdata::{node, nodes};

    #[test]
    fn one_systemctl_call_per_verb_starting_what_is_stopped_and_never_a_missing_unit_nor_reloading_a_stopped_one() {
        let service = |unit: &str, verb| Change::Service { unit: unit.into(), verb, because: vec!["/etc/x".into()] };
        let units = ["nginx.service", "rsyncd.service", "mm-sync-epel.timer"];
        let changes = [
            service("nginx.service", Verb::Reload),
            service("rsyncd.service", Verb::Restart),
            service("gone.service", Verb::Reload),
            service("mm-sync-epel.timer", Verb::Restart),
            Change::RemoveFile { path: "/etc/y".into() },
        ];
        let batches = systemctl_batches(&units, &[true, true, false], &changes, &["gone.service"], &[]);
        let owned = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            batches,
            [
                ("start", owned(&["mm-sync-epel.timer"])),
                ("try-reload-or-restart", owned(&["nginx.service"])),
                ("try-restart", owned(&["rsyncd.service"]))
            ]
        );
        // At boot nothing runs yet: one start, the first syncs with it, and no reload or restart.
        let first = owned(&["mm-sync-epel.service"]);
        assert_eq!(
            systemctl_batches(&units, &[false, false, false], &changes, &["gone.service"], &first),
            [("start", owned(&["nginx.service", "rsyncd.service", "mm-sync-epel.timer", "mm-sync-epel.service"]))]
        );
        // Nothing to do: no call at all.
        assert!(systemctl_batches(&units, &[true, true, true], &[], &[], &[]).is_empty());
    }

    /// The unit actions a node converged on `before` takes when its configuration becomes
    /// `after`: (unit, verb), from the files each unit reads.
    fn actions(before: &NodeConfig, after: &NodeConfig, key: (&Delivered, &Delivered)) -> Vec<(String, Verb)> {
        let dir = tempfile::tempdir().unwrap();
        let host = Host::new(dir.path());
        let facts = Facts {
            family: Family::Debian,
            nics: Vec::new(),
            nic_stand_in: None,
            tls_ready: false,
            data_fs_uuid: None,
            data_ready: true,
            image_version: None,
            os: None,
        };
        let old = render_all(before, key.0, &facts).unwrap();
        for f in old.early_files.iter().chain(&old.files) {
            host.install(f).unwrap();
        }
        let new = render_all(after, key.1, &facts).unwrap();
        let files: Vec<RenderedFile> = new.early_files.iter().chain(&new.files).cloned().collect();
        plan::service_changes(&plan::file_changes(&host, &files), files.iter())
            .into_iter()
            .map(|c| match c {
                Change::Service { unit, verb, .. } => (unit, verb),
                other => panic!("not a service change: {other:?}"),
            })
            .collect()
    }

    #[test]
    fn a_change_reaches_only_the_units_that_read_it_with_the_gentlest_verb() {
        let base = node("ziply");
        let key = |k: &str| Delivered::Key { private: format!("private {k}\n").into_bytes(), public: format!("public {k}\n").into_bytes() };
        let (k1, k2) = (key("one"), key("two"));
        let with = |f: &dyn Fn(&mut NodeConfig)| {
            let mut c = base.clone();
            f(&mut c);
            c
        };
        let reload = |u: &str| (u.to_string(), Verb::Reload);
        let fedora = nodes().into_iter().flat_map(|n| n.projects).find(|p| p.name == "fedora").expect("an example node hosts fedora");
        assert!(base.project("fedora").is_none());
        // (what changed, the new configuration, the new host key, the unit actions)
        type Case<'a> = (&'a str, NodeConfig, &'a Delivered, Vec<(String, Verb)>);
        let cases: Vec<Case> = vec![
            ("nothing", base.clone(), &k1, vec![]),
            ("sponsor", with(&|c| c.node.sponsor.name = "Another Sponsor".into()), &k1, vec![reload("nginx.service")]),
            ("project added", with(&|c| c.projects.push(fedora.clone())), &k1, vec![reload("nginx.service")]),
            ("project dropped", with(&|c| c.projects.truncate(1)), &k1, vec![reload("nginx.service")]),
            ("admin keys", with(&|c| c.fleet.admin_ssh_keys = vec!["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE0 new".into()]), &k1, vec![]),
            (
                "admin prefixes",
                with(&|c| c.fleet.admin_prefixes.push("198.51.100.0/24".into())),
                &k1,
                vec![reload("nftables.service"), reload("ssh.service")],
            ),
            ("sync bandwidth cap", with(&|c| c.node.sync_bwlimit_kbps = Some(1000)), &k1, vec![]),
            (
                "addresses",
                with(&|c| {
                    c.node.ipv4.as_mut().expect("ziply has IPv4").address = "192.0.2.99/24".into();
                    c.node.dns = vec!["192.0.2.53".into()];
                }),
                &k1,
                vec![],
            ),
            ("host key", base.clone(), &k2, vec![reload("ssh.service")]),
        ];
        for (what, after, new_key, want) in cases {
            assert_eq!(actions(&base, &after, (&k1, new_key)), want, "{what}");
        }
    }
}
