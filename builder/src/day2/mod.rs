//! Day 2: show and apply a changed inventory on live nodes. Per node, over ssh as the admin
//! account: the node's own `mm-firstboot plan` against the new node.toml, the binaries'
//! versions, then (apply) new binaries when they differ, `install-config` and the node's own
//! idempotent converge; and when the build holds a newer OS image than the node runs, that image
//! into the node's other slot, a reboot onto it on trial and the wait for the verdict of its
//! health gate. Nodes run in parallel; one that fails or cannot be reached never stops the
//! others, and OS reboots are bounded (`Rollout`).

pub mod ansible;
pub mod remote;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use mmconfig::os::{OsStatus, Slot};
use mmconfig::plan::{Change, NodePlan};
use mmconfig::report::{RunOutcome, RunReport};
use mmconfig::NodeConfig;
use serde::Serialize;

use crate::inventory::fleet::Fleet;
use remote::Ssh;

pub struct Options {
    pub out: PathBuf,
    pub nodes: Vec<String>,
    pub jobs: usize,
    /// Directory with the static on-node binaries to roll out.
    pub node_bin: PathBuf,
    /// NODE -> (host, port) instead of the inventory's first address and port 22.
    pub connect: Vec<(String, String, Option<u16>)>,
    /// NODE -> (host, port) where the node answers after a network change (instead of its new
    /// inventory address).
    pub connect_new: Vec<(String, String, Option<u16>)>,
    pub identity: Option<PathBuf>,
    /// Projects whose data to delete on nodes that no longer host them.
    pub prune: Vec<String>,
    /// Seconds a network change has to be confirmed from the new address before it rolls back.
    pub confirm_timeout: u64,
    pub connect_timeout: u64,
    pub rollout: Rollout,
}

/// How an OS image rolls out over the fleet.
#[derive(Debug, Clone)]
pub struct Rollout {
    /// Nodes rebooting onto a new image at the same time.
    pub max_reboots: usize,
    /// This node first, alone; the others only once it runs the new image.
    pub canary: Option<String>,
    /// Go on after a rollback (default: no new OS update starts after one).
    pub keep_going: bool,
    /// Offer an image again where it rolled back.
    pub retry_os: bool,
    pub trial_boots: u32,
    /// Seconds a node has to come back from its reboot with a verdict.
    pub timeout: u64,
}

/// What happened on one node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    NothingToChange,
    /// plan: what apply would change.
    Changes,
    Converged,
    /// Converged and rebooted onto the build's image, which passed its health gate.
    OsUpdated,
    /// The new image failed its tries; the node runs the previous one again.
    RolledBack,
    /// Converged, but the OS update was not started (a rollback elsewhere, the canary, or this
    /// image rolled back here before).
    OsHeld,
    NeedsAttention,
    Unreachable,
    Failed,
}

impl Outcome {
    pub fn ok(self) -> bool {
        matches!(self, Outcome::NothingToChange | Outcome::Changes | Outcome::Converged | Outcome::OsUpdated | Outcome::OsHeld)
    }

    fn word(self) -> &'static str {
        match self {
            Outcome::NothingToChange => "nothing-to-change",
            Outcome::Changes => "changes",
            Outcome::Converged => "converged",
            Outcome::OsUpdated => "os-updated",
            Outcome::RolledBack => "rolled-back",
            Outcome::OsHeld => "os-held",
            Outcome::NeedsAttention => "needs-attention",
            Outcome::Unreachable => "unreachable",
            Outcome::Failed => "failed",
        }
    }
}

/// The node's image against the build's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OsChange {
    /// The running image (None: not one of ours, or too old to say).
    pub from: Option<String>,
    pub to: String,
}

/// What happened on one node.
#[derive(Debug, Clone, Serialize)]
pub struct NodeResult {
    pub node: String,
    pub fqdn: String,
    pub result: Outcome,
    /// The node.toml change as a unified diff (installed vs new), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub config_diff: Option<String>,
    /// Every change `mm-firstboot plan` lists (its own words).
    pub changes: Vec<String>,
    /// Binaries whose version differs: (name, on the node, here).
    pub binaries: Vec<(String, String, String)>,
    /// The OS image to roll, when the node's differs from the build's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub os: Option<OsChange>,
    /// Compressed bytes of the OS image sent to the node.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub os_bytes_sent: Option<u64>,
    pub message: String,
    pub seconds: f64,
}

impl NodeResult {
    fn ok(&self) -> bool {
        self.result.ok()
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Format version of this JSON.
    pub version: u32,
    pub nodes: Vec<NodeResult>,
}

/// The build's OS image: the slot content and both slots' UKIs, as its manifest lists them.
#[derive(Debug, Clone)]
struct Payload {
    version: String,
    root: PathBuf,
    root_sha256: String,
    root_bytes: u64,
    /// Slot A's and slot B's UKI with their SHA-256.
    ukis: [(PathBuf, String); 2],
}

impl Payload {
    /// The OS payload of the build in `out`; None when it has none (kickstarts only, or a build
    /// from before A/B slots).
    fn load(out: &Path) -> Result<Option<Payload>> {
        let m = crate::image::manifest::read(out)?;
        let Some(version) = m.image_version.clone() else { return Ok(None) };
        let find = |kind: &str| m.artifacts.iter().find(|a| a.kind == kind);
        let (Some(root), Some(a), Some(b)) = (find("os-root"), find("os-uki-a"), find("os-uki-b")) else { return Ok(None) };
        Ok(Some(Payload {
            version,
            root: out.join(&root.path),
            root_sha256: root.sha256.clone(),
            root_bytes: root.size,
            ukis: [(out.join(&a.path), a.sha256.clone()), (out.join(&b.path), b.sha256.clone())],
        }))
    }

    /// Every file against the manifest, before anything is sent: a tampered or truncated file
    /// is refused here, not discovered on the node.
    fn verify(&self) -> Result<()> {
        for (path, want) in [(&self.root, &self.root_sha256), (&self.ukis[0].0, &self.ukis[0].1), (&self.ukis[1].0, &self.ukis[1].1)] {
            let got = crate::image::manifest::sha256_file(path)?;
            if &got != want {
                bail!(
                    "{} has sha256 {got}, the build's manifest says {want}: refusing to send it (rebuild, or restore the file)",
                    path.display()
                );
            }
        }
        Ok(())
    }
}

/// Shared by the nodes' threads: the reboot slots, the stop after a rollback, the payload check.
struct Gate {
    reboots: Mutex<usize>,
    freed: Condvar,
    max: usize,
    stop: AtomicBool,
    verified: OnceLock<std::result::Result<(), String>>,
}

impl Gate {
    fn acquire(&self) {
        let mut n = self.reboots.lock().expect("reboot lock");
        while *n >= self.max.max(1) {
            n = self.freed.wait(n).expect("reboot lock");
        }
        *n += 1;
    }

    fn release(&self) {
        *self.reboots.lock().expect("reboot lock") -= 1;
        self.freed.notify_one();
    }
}

impl Report {
    pub fn all_ok(&self) -> bool {
        self.nodes.iter().all(NodeResult::ok)
    }
}

const BINARIES: [&str; 2] = ["mm-firstboot", "mm-sync"];

fn local_version(bin: &Path) -> Result<String> {
    let out = hostkit::cmd::run(std::process::Command::new(bin).arg("--version"))
        .with_context(|| format!("{} is the binary to roll out: build it first (scripts/test does)", bin.display()))?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Plan (`apply == false`) or apply the fleet's configuration on the selected nodes.
pub fn run(fleet: &Fleet, opts: &Options, apply: bool) -> Result<Report> {
    let known_hosts = opts.out.join(crate::image::hostkeys::KNOWN_HOSTS);
    if !known_hosts.is_file() {
        bail!(
            "{} is missing: day-2 commands trust only the host keys a build published; run `mmbuild build` (or --kickstart-only) with this --out first",
            known_hosts.display()
        );
    }
    for n in &opts.nodes {
        if fleet.node(n).is_none() {
            bail!("no node {n:?} in {}", fleet.path.display());
        }
    }
    let mut local = Vec::new();
    for b in BINARIES {
        let path = opts.node_bin.join(b);
        local.push((b.to_string(), path.clone(), local_version(&path)?));
    }
    let selected: Vec<&NodeConfig> = fleet.nodes.iter().filter(|n| opts.nodes.is_empty() || opts.nodes.contains(&n.node.name)).collect();
    if let Some(c) = &opts.rollout.canary {
        if !selected.iter().any(|n| &n.node.name == c) {
            bail!("--canary {c}: no such node among the selected ones");
        }
    }
    let payload = Payload::load(&opts.out)?;
    let control = remote::control_dir()?;
    let gate = Gate {
        reboots: Mutex::new(0),
        freed: Condvar::new(),
        max: opts.rollout.max_reboots,
        stop: AtomicBool::new(false),
        verified: OnceLock::new(),
    };
    let ctx =
        Ctx { opts, local: &local, apply, payload: payload.as_ref(), gate: &gate, known_hosts: &known_hosts, control: control.path() };
    let mut results: Vec<NodeResult> = Vec::new();
    let (canary, rest): (Vec<&NodeConfig>, Vec<&NodeConfig>) =
        selected.iter().partition(|n| opts.rollout.canary.as_deref() == Some(n.node.name.as_str()));
    for wave in [canary, rest] {
        let done = hostkit::pool::map(&wave, opts.jobs, |cfg| node_result(cfg, &ctx));
        results.extend(done);
        // A canary that did not come back on the new image holds the others' OS update.
        let held = results.iter().any(|r| r.os.is_some() && r.result != Outcome::OsUpdated);
        if apply && opts.rollout.canary.is_some() && held {
            gate.stop.store(true, Ordering::SeqCst);
        }
    }
    let mut nodes = results;
    nodes.sort_by(|a, b| a.node.cmp(&b.node));
    Ok(Report { version: 1, nodes })
}

/// Everything a node's thread reads.
struct Ctx<'a> {
    opts: &'a Options,
    local: &'a [(String, PathBuf, String)],
    apply: bool,
    payload: Option<&'a Payload>,
    gate: &'a Gate,
    known_hosts: &'a Path,
    control: &'a Path,
}

fn node_result(cfg: &NodeConfig, ctx: &Ctx) -> NodeResult {
    let started = Instant::now();
    let ssh = ssh_for(cfg, ctx.opts, ctx.known_hosts, ctx.control);
    let mut r = NodeResult {
        node: cfg.node.name.clone(),
        fqdn: cfg.node.fqdn.clone(),
        result: Outcome::Failed,
        config_diff: None,
        changes: Vec::new(),
        binaries: Vec::new(),
        os: None,
        os_bytes_sent: None,
        message: String::new(),
        seconds: 0.0,
    };
    if let Err(e) = one_node(cfg, ctx, &ssh, &mut r) {
        // ssh exits 255 for its own failures: no connection, or a host key mismatch.
        if hostkit::cmd::exit_code(&e) == Some(255) {
            r.result = Outcome::Unreachable;
            r.message = format!("ssh could not log in: the node does not answer, or its host key is not the one in known_hosts ({e:#})");
        } else {
            r.result = Outcome::Failed;
            r.message = format!("{e:#}");
        }
    }
    ssh.close();
    r.seconds = started.elapsed().as_secs_f64();
    r
}

fn ssh_for(cfg: &NodeConfig, opts: &Options, known_hosts: &Path, control: &Path) -> Ssh {
    let over = opts.connect.iter().find(|(n, _, _)| *n == cfg.node.name);
    Ssh {
        fqdn: cfg.node.fqdn.clone(),
        host: over.map(|o| o.1.clone()).or_else(|| remote::node_address(cfg)).unwrap_or_else(|| cfg.node.fqdn.clone()),
        port: over.and_then(|o| o.2).unwrap_or(22),
        known_hosts: known_hosts.to_path_buf(),
        identity: opts.identity.clone(),
        control_dir: control.to_path_buf(),
        connect_timeout: opts.connect_timeout,
    }
}

/// What one round trip learns from a node: its installed node.toml, its binaries' versions and
/// its own plan against the inventory's configuration (fed on stdin, the only reader of it).
#[derive(Debug)]
struct Survey {
    installed: String,
    versions: Vec<String>,
    /// The node's OS slots (None: an mm-firstboot from before A/B slots).
    os: Option<OsStatus>,
    /// The node's plan, or why there is none (mm-firstboot missing, too old to plan this, or
    /// answering in a layout this mmbuild cannot read).
    plan: Result<NodePlan, String>,
}

/// The survey as one remote command: every ssh round trip costs a key exchange's worth of
/// latency on a slow link, so a node with nothing to change costs exactly one.
fn survey_command() -> String {
    let versions: Vec<String> = BINARIES.iter().map(|b| format!("v=$({b} --version 2>/dev/null) || v=none; echo \"$v\"")).collect();
    format!(
        "f={}; if [ -r \"$f\" ]; then wc -c < \"$f\"; cat \"$f\"; else echo 0; fi; {}; \
         s=$(sudo -n mm-firstboot os status --json 2>/dev/null | tr -d '\\n') || s=; echo \"$s\"; \
         sudo mm-firstboot --config - plan --json || true",
        mmconfig::INSTALLED_CONFIG,
        versions.join("; ")
    )
}

/// Split [`survey_command`]'s output: the file's length, the file, one version line per binary,
/// the OS status on one line, the plan's JSON. The length prefix keeps a hostile node.toml from faking the other parts.
fn parse_survey(out: &[u8]) -> Result<Survey> {
    let bad = || anyhow::anyhow!("the node's answer to the survey is malformed: {}", String::from_utf8_lossy(&out[..out.len().min(200)]));
    let nl = out.iter().position(|&b| b == b'\n').ok_or_else(bad)?;
    let len: usize = std::str::from_utf8(&out[..nl]).ok().and_then(|t| t.trim().parse().ok()).ok_or_else(bad)?;
    let rest = out.get(nl + 1..).ok_or_else(bad)?;
    let installed = String::from_utf8_lossy(rest.get(..len).ok_or_else(bad)?).into_owned();
    let mut rest = &rest[len..];
    let mut versions = Vec::new();
    for _ in BINARIES {
        let nl = rest.iter().position(|&b| b == b'\n').ok_or_else(bad)?;
        versions.push(String::from_utf8_lossy(&rest[..nl]).trim().to_string());
        rest = &rest[nl + 1..];
    }
    let nl = rest.iter().position(|&b| b == b'\n').ok_or_else(bad)?;
    let os = serde_json::from_slice(&rest[..nl]).ok();
    rest = &rest[nl + 1..];
    let plan = if rest.iter().all(u8::is_ascii_whitespace) {
        Err("it printed none".to_string())
    } else {
        serde_json::from_slice(rest).map_err(|e| format!("its JSON does not read as a plan: {e}"))
    };
    Ok(Survey { installed, versions, os, plan })
}

/// The shell (no single quotes: it runs inside `sh -c '...'`) that installs stdin as
/// `DIR/NAME`: atomic (a temporary beside the binary, renamed over it, so the node never runs a
/// half-written binary), the old one kept as `NAME.prev` for a rollback.
fn install_binary_script(dir: &str, name: &str) -> String {
    format!(
        "set -e; t=$(mktemp {dir}/.{name}.XXXXXX); cat > \"$t\"; chmod 0755 \"$t\"; \
         if [ -e {dir}/{name} ]; then cp -p {dir}/{name} {dir}/{name}.prev; fi; mv -f \"$t\" {dir}/{name}"
    )
}

fn one_node(cfg: &NodeConfig, ctx: &Ctx, ssh: &Ssh, r: &mut NodeResult) -> Result<()> {
    let (opts, local, apply) = (ctx.opts, ctx.local, ctx.apply);
    let new_toml = cfg.to_toml();
    let survey = ssh.run(&survey_command(), Some(new_toml.as_bytes()))?;
    let Survey { installed, versions, os, mut plan } = parse_survey(&survey.stdout)?;
    if let Some(p) = ctx.payload {
        let running = os.as_ref().and_then(|o| o.image_version.clone());
        if running.as_deref() != Some(p.version.as_str()) {
            r.os = Some(OsChange { from: running, to: p.version.clone() });
        }
    }
    if installed != new_toml {
        r.config_diff = Some(
            similar::TextDiff::from_lines(installed.as_str(), new_toml.as_str())
                .unified_diff()
                .context_radius(1)
                .header("node.toml (on the node)", "node.toml (inventory)")
                .to_string(),
        );
    }
    for ((name, _, here), there) in local.iter().zip(versions) {
        if &there != here {
            r.binaries.push((name.clone(), there, here.clone()));
        }
    }
    if apply && !r.binaries.is_empty() {
        for (name, path, _) in local.iter().filter(|(n, _, _)| r.binaries.iter().any(|b| &b.0 == n)) {
            let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
            let script = install_binary_script("/usr/bin", name);
            ssh.run(&format!("sudo sh -c '{script}'"), Some(&bytes)).with_context(|| format!("installing {name}"))?;
        }
        // The new binary's own plan: it may render what the old one did not.
        let out = ssh.run_codes("sudo mm-firstboot --config - plan --json", Some(new_toml.as_bytes()), &[0, 3])?;
        plan = Ok(hostkit::cmd::json_output("sudo mm-firstboot --config - plan --json", &out.stdout)?);
    }
    let plan =
        plan.map_err(|why| anyhow::anyhow!("the node's mm-firstboot gave no plan ({why}): {}", hostkit::cmd::tail(&survey.stderr, 5)))?;
    r.changes = plan.changes.iter().map(Change::summary).collect();
    for p in &opts.prune {
        r.changes.push(format!("prune {p} (delete its data)"));
    }
    let converge = r.config_diff.is_some() || !r.binaries.is_empty() || !r.changes.is_empty();
    if let Some(change) = &r.os {
        r.changes.push(format!("os {} -> {}", change.from.as_deref().unwrap_or("(unknown)"), change.to));
    }
    let nothing = r.config_diff.is_none() && r.binaries.is_empty() && r.changes.is_empty();
    if nothing {
        r.result = Outcome::NothingToChange;
        r.message = "nothing to change".into();
        return Ok(());
    }
    if !apply {
        r.result = Outcome::Changes;
        r.message = format!("{} change(s)", r.changes.len() + usize::from(!r.binaries.is_empty()));
        return Ok(());
    }
    let old: Option<NodeConfig> = NodeConfig::from_toml(&installed, "the node's node.toml").ok();
    let renumber = old.as_ref().is_some_and(|o| o.node.network_differs(&cfg.node));
    let confirm = if renumber { format!(" --confirm-within {}", opts.confirm_timeout) } else { String::new() };
    if converge {
        ssh.run(&format!("sudo mm-firstboot install-config -{confirm}"), Some(new_toml.as_bytes()))
            .context("installing the configuration")?;
        if renumber {
            renumbered(cfg, opts, ssh, r)?;
            if r.os.is_some() {
                r.message.push_str("; the OS update waits for the next apply, from the new address");
            }
            return Ok(());
        }
        let run = ssh.run_codes("sudo mm-firstboot run --json", None, &[0, 3]).context("converging")?;
        let run: RunReport = hostkit::cmd::json_output("mm-firstboot run --json", &run.stdout).context("converging")?;
        for p in &opts.prune {
            let out = ssh.run(&format!("sudo mm-firstboot prune {}", shell_word(p)), None)?;
            r.message.push_str(String::from_utf8_lossy(&out.stdout).trim());
            r.message.push(' ');
        }
        finish(run, r);
        if r.result != Outcome::Converged {
            return Ok(());
        }
    } else {
        r.result = Outcome::Converged;
    }
    if let (Some(change), Some(payload)) = (r.os.clone(), ctx.payload) {
        let os =
            os.context("the node's mm-firstboot reports no OS slots: roll out the binaries first (this apply did), then apply again")?;
        roll_os(ctx, ssh, &os, &change, payload, r)?;
    }
    Ok(())
}

/// The node's own report of its converge (mmconfig's wire type), as the node's result.
fn finish(run: RunReport, r: &mut NodeResult) {
    match run.outcome {
        RunOutcome::NeedsAttention => {
            r.result = Outcome::NeedsAttention;
            r.message.push_str(&run.problems.join("; "));
        }
        RunOutcome::NothingToChange => {
            r.result = Outcome::Converged;
            r.message.push_str(&format!("nothing to change ({:.2} s)", run.seconds));
        }
        RunOutcome::Converged => {
            r.result = Outcome::Converged;
            r.message.push_str(&format!("{} change(s) in {:.2} s", run.changes.len(), run.seconds));
        }
    }
}

/// Send the build's image into the node's other slot, reboot onto it on trial and wait for the
/// verdict: back on the new image once its gate passed, or back on the old one, rolled back.
fn roll_os(ctx: &Ctx, ssh: &Ssh, os: &OsStatus, change: &OsChange, p: &Payload, r: &mut NodeResult) -> Result<()> {
    let rollout = &ctx.opts.rollout;
    if let Some(rb) = os.rolled_back(&p.version).filter(|_| !rollout.retry_os) {
        r.result = Outcome::OsHeld;
        r.message = format!("image {} rolled back here before ({}); --retry-os offers it again", p.version, rb.reason);
        return Ok(());
    }
    let slot = os.slot.context("the node's root is not in an A/B slot: reinstall it from its install stick to get two slots")?;
    if ctx.gate.stop.load(Ordering::SeqCst) {
        r.result = Outcome::OsHeld;
        r.message =
            "OS update not started: an earlier node of this roll-out rolled back or the canary failed (--keep-going goes on)".into();
        return Ok(());
    }
    if let Err(why) = ctx.gate.verified.get_or_init(|| p.verify().map_err(|e| format!("{e:#}"))) {
        bail!("{why}");
    }
    let target = slot.other();
    let (uki, uki_sha) = &p.ukis[usize::from(target == Slot::B)];
    let staged = "/run/micromirror-os.efi";
    let bytes = std::fs::read(uki).with_context(|| format!("reading {}", uki.display()))?;
    ssh.run(&format!("sudo sh -c 'umask 077; cat > {staged}'"), Some(&bytes)).context("sending the kernel image")?;
    ctx.gate.acquire();
    let rolled = (|| -> Result<()> {
        let install = format!(
            "sudo mm-firstboot os install --image-version {} --sha256 {} --bytes {} --uki {staged} --uki-sha256 {uki_sha} --tries {}",
            p.version, p.root_sha256, p.root_bytes, rollout.trial_boots
        );
        let (out, sent) = ssh.run_streaming_zstd(&install, &p.root).context("writing the new image into the other slot")?;
        r.os_bytes_sent = Some(sent);
        let installed: mmconfig::os::Installed = serde_json::from_slice(&out.stdout)
            .with_context(|| format!("reading the node's answer: {}", hostkit::cmd::tail(&out.stdout, 3)))?;
        let boot_id = ssh.run("cat /proc/sys/kernel/random/boot_id", None)?.stdout;
        // The connection dies with the node: its exit status says nothing.
        let _ = ssh.run("sudo systemctl reboot", None);
        ssh.close();
        wait_for_verdict(ssh, &boot_id, change, &installed, rollout.timeout, r)
    })();
    ctx.gate.release();
    if r.result == Outcome::RolledBack && !rollout.keep_going {
        ctx.gate.stop.store(true, Ordering::SeqCst);
    }
    rolled
}

/// Poll the node after its reboot until it runs the new image with its gate passed, or runs the
/// old one with the new one rolled back; every boot of a trial changes the boot id.
fn wait_for_verdict(
    ssh: &Ssh,
    old_boot: &[u8],
    change: &OsChange,
    installed: &mmconfig::os::Installed,
    timeout: u64,
    r: &mut NodeResult,
) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(timeout);
    let from = change.from.clone().unwrap_or_default();
    let mut last = String::from("the node did not answer after its reboot");
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_secs(5));
        let out = match ssh.run("cat /proc/sys/kernel/random/boot_id; sudo -n mm-firstboot os status --json", None) {
            Ok(o) => o,
            Err(e) => {
                last = format!("{e:#}");
                ssh.close();
                continue;
            }
        };
        let nl = out.stdout.iter().position(|&b| b == b'\n').unwrap_or(0);
        if out.stdout[..nl] == *old_boot.strip_suffix(b"\n").unwrap_or(old_boot) {
            last = "the node has not rebooted yet".into();
            continue;
        }
        let st: OsStatus = serde_json::from_slice(&out.stdout[nl + 1..]).context("reading the node's OS status")?;
        let running = st.image_version.clone().unwrap_or_default();
        if running == installed.image_version && !st.trial {
            r.result = Outcome::OsUpdated;
            r.message = format!("os-updated {from} -> {} (slot {})", installed.image_version, installed.slot);
            return Ok(());
        }
        if running == from {
            if let Some(rb) = st.rolled_back(&installed.image_version) {
                r.result = Outcome::RolledBack;
                r.message = format!("rolled-back: {} failed its tries, the node runs {from} again: {}", installed.image_version, rb.reason);
                return Ok(());
            }
        }
        last = format!("running {running}{}", if st.trial { " on trial" } else { "" });
    }
    bail!("no verdict within {timeout} s of the reboot onto {} (last seen: {last})", installed.image_version)
}

/// A network change: converge detached (our connection goes away with the old address), reach
/// the node on its new address with the same host key, confirm; unconfirmed, it rolls back.
fn renumbered(cfg: &NodeConfig, opts: &Options, old: &Ssh, r: &mut NodeResult) -> Result<()> {
    old.run("sudo systemd-run --no-block --unit=mm-firstboot-apply --collect /usr/bin/mm-firstboot run", None)
        .context("starting the converge")?;
    old.close();
    let mut new = old.clone();
    match opts.connect_new.iter().find(|(n, _, _)| *n == cfg.node.name) {
        Some((_, host, port)) => {
            new.host = host.clone();
            new.port = port.unwrap_or(22);
        }
        None => {
            new.host = remote::node_address(cfg).unwrap_or_else(|| cfg.node.fqdn.clone());
            new.port = 22;
        }
    }
    let deadline = Instant::now() + Duration::from_secs(opts.confirm_timeout.saturating_sub(5).max(10));
    let mut last = None;
    while Instant::now() < deadline {
        match new.run("sudo mm-firstboot confirm", None) {
            Ok(_) => {
                r.result = Outcome::Converged;
                r.message = format!("renumbered: confirmed from {}", new.host);
                return Ok(());
            }
            Err(e) => last = Some(e),
        }
        std::thread::sleep(Duration::from_secs(3));
    }
    let why = last.map(|e| format!("{e:#}")).unwrap_or_default();
    bail!("the node did not answer on its new address {} before the confirmation timeout: it rolls back to its previous address on its own ({why})", new.host)
}

fn shell_word(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// The table a person reads: one line per node, failures first, then each node's changes.
pub fn render(report: &Report, apply: bool) -> String {
    let mut nodes: Vec<&NodeResult> = report.nodes.iter().collect();
    nodes.sort_by_key(|n| (n.ok(), n.node.clone()));
    let mut s = format!("{:<16} {:<18} {:>7}  {}\n", "NODE", "RESULT", "SECONDS", "MESSAGE");
    for n in &nodes {
        s.push_str(&format!("{:<16} {:<18} {:>7.1}  {}\n", n.node, n.result.word(), n.seconds, n.message.lines().next().unwrap_or("")));
    }
    for n in nodes.iter().filter(|n| !n.changes.is_empty() || n.config_diff.is_some() || !n.binaries.is_empty()) {
        s.push_str(&format!("\n{} {}:\n", if apply { "applied on" } else { "would change on" }, n.fqdn));
        for (b, there, here) in &n.binaries {
            s.push_str(&format!("  {b}: {there} -> {here}\n"));
        }
        if let Some(d) = &n.config_diff {
            for l in d.lines() {
                s.push_str(&format!("  {l}\n"));
            }
        }
        for c in &n.changes {
            s.push_str(&format!("  {c}\n"));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(node: &str, result: Outcome) -> NodeResult {
        NodeResult {
            node: node.into(),
            fqdn: format!("{node}.mm.example.net"),
            result,
            config_diff: None,
            changes: Vec::new(),
            binaries: Vec::new(),
            os: None,
            os_bytes_sent: None,
            message: result.word().into(),
            seconds: 1.0,
        }
    }

    #[test]
    fn failures_come_first_and_exit_status_follows_them() {
        let mut ok = result("alpha", Outcome::Converged);
        ok.changes = vec!["write-file /etc/rsyncd.conf".into()];
        ok.config_diff = Some("-a = 1\n+a = 2\n".into());
        let report =
            Report { version: 1, nodes: vec![ok, result("beta", Outcome::Unreachable), result("gamma", Outcome::NothingToChange)] };
        assert!(!report.all_ok());
        let text = render(&report, true);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[1].starts_with("beta") && lines[1].contains("unreachable"), "{text}");
        assert!(text.contains("applied on alpha.mm.example.net:\n  -a = 1\n  +a = 2\n  write-file /etc/rsyncd.conf\n"), "{text}");
        assert!(text.contains("  write-file /etc/rsyncd.conf\n"), "{text}");
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["version"], 1);
        assert!(Report {
            version: 1,
            nodes: vec![result("a", Outcome::NothingToChange), result("b", Outcome::Changes), result("c", Outcome::OsHeld)]
        }
        .all_ok());
    }

    #[test]
    fn survey_answers_split_by_length_not_by_content() {
        // A node.toml whose text looks like the parts after it changes nothing.
        let toml = "name = \"x\"\nmm-firstboot 9.9\n{\"changes\": []}\n";
        let os = r#"{"version":1,"image_version":"20261201.000000-bbbbbbbbbbbb","slot":"a","trial":false,"entries":[],"rollbacks":[]}"#;
        let plan = r#"{"fqdn":"x","config_source":"-","changes":[{"kind":"create-account","user":"mirror"}],"storage":{"steps":[],"problems":[],"notes":[],"data_disk":null}}"#;
        let out = format!("{}\n{toml}mm-firstboot 0.1.0 (abc)\nnone\n{os}\n{plan}\n", toml.len());
        let s = parse_survey(out.as_bytes()).unwrap();
        assert_eq!(s.installed, toml);
        assert_eq!(s.versions, ["mm-firstboot 0.1.0 (abc)", "none"]);
        assert_eq!(s.plan.unwrap().changes, [Change::CreateAccount { user: "mirror".into() }]);
        assert_eq!(s.os.unwrap().slot, Some(Slot::A));
        // A fresh node: no file; an mm-firstboot from before A/B slots: no OS status.
        let s = parse_survey(b"0\nnone\nnone\n\n{}").unwrap();
        assert!(s.os.is_none());
        assert_eq!((s.installed.as_str(), s.versions.len()), ("", 2));
        // No plan (an old or missing mm-firstboot): known, not an error yet.
        assert!(parse_survey(b"0\nnone\nnone\n\n").unwrap().plan.is_err());
        // A plan in a layout this side cannot read says so.
        let e = parse_survey(b"0\nnone\nnone\n\n{\"changes\": [1]}").unwrap().plan.unwrap_err();
        assert!(e.contains("does not read as a plan"), "{e}");
        // Truncated answers are errors, never a panic.
        for cut in [0, 2, 10, toml.len() + 20] {
            assert!(parse_survey(&out.as_bytes()[..cut]).is_err(), "{cut}");
        }
        assert!(parse_survey(b"999\nshort").is_err());
    }

    /// The roll-out's install script, run by the real `sh` on a directory standing in for
    /// /usr/bin: the target is never written in place, the old binary is kept as `.prev`.
    #[test]
    fn a_binary_is_installed_by_rename_and_the_old_one_kept_as_prev() {
        use std::io::Write;
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let (bin, prev) = (d.join("mm-sync"), d.join("mm-sync.prev"));
        let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        let temporaries = || -> Vec<std::fs::DirEntry> {
            std::fs::read_dir(d).unwrap().map(|e| e.unwrap()).filter(|e| e.file_name().to_string_lossy().starts_with(".mm-sync.")).collect()
        };
        std::fs::write(&bin, b"old binary").unwrap();
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o700)).unwrap();
        let mut running = std::fs::File::open(&bin).unwrap();
        let new: Vec<u8> = (0..2u32 << 20).map(|i| (i % 251) as u8).collect();
        let install = |dir: &std::path::Path| {
            std::process::Command::new("sh")
                .arg("-c")
                .arg(install_binary_script(&dir.display().to_string(), "mm-sync"))
                .stdin(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        };
        let mut child = install(d);
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(&new[..1 << 20]).unwrap();
        stdin.flush().unwrap();
        // Half sent: it lands in a temporary beside the binary; the binary is still the old one.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while !temporaries().iter().any(|e| e.metadata().unwrap().len() == 1 << 20) {
            assert!(std::time::Instant::now() < deadline, "no temporary holding the first half");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        assert_eq!(std::fs::read(&bin).unwrap(), b"old binary");
        assert!(!prev.exists());
        stdin.write_all(&new[1 << 20..]).unwrap();
        drop(stdin);
        assert!(child.wait().unwrap().success());
        assert!(std::fs::read(&bin).unwrap() == new, "the new binary differs from what was sent");
        assert_eq!(mode(&bin), 0o755);
        assert_eq!((std::fs::read(&prev).unwrap(), mode(&prev)), (b"old binary".to_vec(), 0o700));
        assert!(temporaries().is_empty());
        // Renamed over, not rewritten: a process holding the old binary still reads it whole.
        let mut held = Vec::new();
        std::io::Read::read_to_end(&mut running, &mut held).unwrap();
        assert_eq!(held, b"old binary");

        // The next roll-out keeps the binary it replaces, not the first one.
        let mut child = install(d);
        child.stdin.take().unwrap().write_all(b"third").unwrap();
        assert!(child.wait().unwrap().success());
        assert_eq!((std::fs::read(&bin).unwrap(), std::fs::read(&prev).unwrap() == new), (b"third".to_vec(), true));

        // A first install has nothing to keep.
        let fresh = tempfile::tempdir().unwrap();
        let mut child = install(fresh.path());
        child.stdin.take().unwrap().write_all(b"first").unwrap();
        assert!(child.wait().unwrap().success());
        assert_eq!(std::fs::read(fresh.path().join("mm-sync")).unwrap(), b"first");
        assert!(!fresh.path().join("mm-sync.prev").exists());
    }

    #[test]
    fn the_run_report_decides_the_result_not_its_wording() {
        let judged = |outcome, problems: &[&str]| {
            let run = RunReport {
                version: mmconfig::report::VERSION,
                fqdn: "n.example".into(),
                outcome,
                changes: vec!["write-file /etc/x".into()],
                problems: problems.iter().map(|p| p.to_string()).collect(),
                notes: vec![],
                seconds: 1.5,
            };
            let mut r = NodeResult {
                node: "n".into(),
                fqdn: "n.example".into(),
                result: Outcome::Failed,
                config_diff: None,
                changes: vec![],
                binaries: vec![],
                os: None,
                os_bytes_sent: None,
                message: String::new(),
                seconds: 0.0,
            };
            finish(run, &mut r);
            (r.result, r.message)
        };
        // A problem worded without any marker still needs attention.
        assert_eq!(judged(RunOutcome::NeedsAttention, &["no disk", "no key"]), (Outcome::NeedsAttention, "no disk; no key".into()));
        assert_eq!(judged(RunOutcome::Converged, &[]), (Outcome::Converged, "1 change(s) in 1.50 s".into()));
        assert_eq!(judged(RunOutcome::NothingToChange, &[]).0, Outcome::Converged);
    }
}
