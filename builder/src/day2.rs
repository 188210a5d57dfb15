//! Day 2: show and apply a changed inventory on live nodes. Per node, over ssh as the admin
//! account: the node's own `mm-firstboot plan` against the new node.toml, the binaries'
//! versions, then (apply) new binaries when they differ, `install-config` and the node's own
//! idempotent converge. Nodes run in parallel; one that fails or cannot be reached never stops
//! the others.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use mmconfig::NodeConfig;
use serde::Serialize;

use crate::fleet::Fleet;
use crate::remote::{self, Ssh};

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
}

/// What happened on one node.
#[derive(Debug, Clone, Serialize)]
pub struct NodeResult {
    pub node: String,
    pub fqdn: String,
    /// nothing-to-change, changes (plan), converged, needs-attention, unreachable, failed
    pub result: String,
    /// The node.toml change as a unified diff (installed vs new), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub config_diff: Option<String>,
    /// Every change `mm-firstboot plan` lists (its own words).
    pub changes: Vec<String>,
    /// Binaries whose version differs: (name, on the node, here).
    pub binaries: Vec<(String, String, String)>,
    pub message: String,
    pub seconds: f64,
}

impl NodeResult {
    fn ok(&self) -> bool {
        matches!(self.result.as_str(), "nothing-to-change" | "changes" | "converged")
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Format version of this JSON.
    pub version: u32,
    pub nodes: Vec<NodeResult>,
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
    let known_hosts = opts.out.join(crate::hostkeys::KNOWN_HOSTS);
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
    let control = remote::control_dir()?;
    let results = Mutex::new(Vec::new());
    let queue = Mutex::new(selected.iter());
    std::thread::scope(|s| {
        for _ in 0..opts.jobs.max(1).min(selected.len().max(1)) {
            s.spawn(|| loop {
                let Some(cfg) = queue.lock().expect("queue lock").next() else {
                    break;
                };
                let started = Instant::now();
                let ssh = ssh_for(cfg, opts, &known_hosts, control.path());
                let mut r = NodeResult {
                    node: cfg.node.name.clone(),
                    fqdn: cfg.node.fqdn.clone(),
                    result: String::new(),
                    config_diff: None,
                    changes: Vec::new(),
                    binaries: Vec::new(),
                    message: String::new(),
                    seconds: 0.0,
                };
                if let Err(e) = one_node(cfg, opts, &ssh, &local, apply, &mut r) {
                    let text = format!("{e:#}");
                    // ssh exits 255 for its own failures: no connection, or a host key mismatch.
                    if text.contains("exit status: 255") {
                        r.result = "unreachable".into();
                        r.message = format!(
                            "ssh could not log in: the node does not answer, or its host key is not the one in known_hosts ({text})"
                        );
                    } else {
                        r.result = "failed".into();
                        r.message = text;
                    }
                }
                ssh.close();
                r.seconds = started.elapsed().as_secs_f64();
                results.lock().expect("results lock").push(r);
            });
        }
    });
    let mut nodes = results.into_inner().expect("results lock");
    nodes.sort_by(|a, b| a.node.cmp(&b.node));
    Ok(Report { version: 1, nodes })
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
    /// None when the node's mm-firstboot gave no plan (missing, or too old to plan this).
    plan: Option<serde_json::Value>,
}

/// The survey as one remote command: every ssh round trip costs a key exchange's worth of
/// latency on a slow link, so a node with nothing to change costs exactly one.
fn survey_command() -> String {
    let versions: Vec<String> = BINARIES.iter().map(|b| format!("v=$({b} --version 2>/dev/null) || v=none; echo \"$v\"")).collect();
    format!(
        "f={}; if [ -r \"$f\" ]; then wc -c < \"$f\"; cat \"$f\"; else echo 0; fi; {}; sudo mm-firstboot --config - plan --json || true",
        mmconfig::INSTALLED_CONFIG,
        versions.join("; ")
    )
}

/// Split [`survey_command`]'s output: the file's length, the file, one version line per binary,
/// the plan's JSON. The length prefix keeps a hostile node.toml from faking the other parts.
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
    Ok(Survey { installed, versions, plan: serde_json::from_slice(rest).ok() })
}

fn one_node(
    cfg: &NodeConfig,
    opts: &Options,
    ssh: &Ssh,
    local: &[(String, PathBuf, String)],
    apply: bool,
    r: &mut NodeResult,
) -> Result<()> {
    let new_toml = cfg.to_toml();
    let survey = ssh.run(&survey_command(), Some(new_toml.as_bytes()))?;
    let Survey { installed, versions, mut plan } = parse_survey(&survey.stdout)?;
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
            // Atomic on the node: a temporary beside the binary, the old one kept for rollback.
            let script = format!(
                "set -e; t=$(mktemp /usr/bin/.{name}.XXXXXX); cat > \"$t\"; chmod 0755 \"$t\"; \
                 if [ -e /usr/bin/{name} ]; then cp -p /usr/bin/{name} /usr/bin/{name}.prev; fi; mv -f \"$t\" /usr/bin/{name}"
            );
            ssh.run(&format!("sudo sh -c '{script}'"), Some(&bytes)).with_context(|| format!("installing {name}"))?;
        }
        // The new binary's own plan: it may render what the old one did not.
        let out = ssh.run_codes("sudo mm-firstboot --config - plan --json", Some(new_toml.as_bytes()), &[0, 3])?;
        plan = Some(serde_json::from_slice(&out.stdout).context("reading the node's plan")?);
    }
    let plan = plan.with_context(|| format!("the node's mm-firstboot gave no plan: {}", hostkit::cmd::tail(&survey.stderr, 5)))?;
    r.changes = plan_lines(&plan);
    for p in &opts.prune {
        r.changes.push(format!("prune {p} (delete its data)"));
    }
    let nothing = r.config_diff.is_none() && r.binaries.is_empty() && r.changes.is_empty();
    if nothing {
        r.result = "nothing-to-change".into();
        r.message = "nothing to change".into();
        return Ok(());
    }
    if !apply {
        r.result = "changes".into();
        r.message = format!("{} change(s)", r.changes.len() + usize::from(!r.binaries.is_empty()));
        return Ok(());
    }
    let old: Option<NodeConfig> = NodeConfig::from_toml(&installed, "the node's node.toml").ok();
    let renumber = old.as_ref().is_some_and(|o| o.node.network_differs(&cfg.node));
    let confirm = if renumber { format!(" --confirm-within {}", opts.confirm_timeout) } else { String::new() };
    ssh.run(&format!("sudo mm-firstboot install-config -{confirm}"), Some(new_toml.as_bytes())).context("installing the configuration")?;
    if renumber {
        return renumbered(cfg, opts, ssh, r);
    }
    let run = ssh.run_codes("sudo mm-firstboot run", None, &[0, 3]).context("converging")?;
    for p in &opts.prune {
        let out = ssh.run(&format!("sudo mm-firstboot prune {}", shell_word(p)), None)?;
        r.message.push_str(String::from_utf8_lossy(&out.stdout).trim());
        r.message.push(' ');
    }
    finish(run, r);
    Ok(())
}

fn finish(run: std::process::Output, r: &mut NodeResult) {
    let text = String::from_utf8_lossy(&run.stdout);
    let problems: Vec<&str> = text.lines().filter(|l| l.contains("PROBLEM:")).collect();
    if run.status.code() == Some(0) {
        r.result = "converged".into();
        r.message.push_str(text.lines().last().unwrap_or("").trim());
    } else {
        r.result = "needs-attention".into();
        r.message.push_str(&problems.join("; "));
    }
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
                r.result = "converged".into();
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

/// The plan's changes in mm-firstboot's own words (its JSON carries the structure; the text is
/// what an operator reads).
fn plan_lines(plan: &serde_json::Value) -> Vec<String> {
    plan["changes"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            let kind = c["kind"].as_str().unwrap_or("change");
            let what = c["path"].as_str().or(c["unit"].as_str()).or(c["user"].as_str()).or(c["step"].as_str()).unwrap_or("");
            format!("{kind} {what}")
        })
        .collect()
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
        s.push_str(&format!("{:<16} {:<18} {:>7.1}  {}\n", n.node, n.result, n.seconds, n.message.lines().next().unwrap_or("")));
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

    fn result(node: &str, result: &str) -> NodeResult {
        NodeResult {
            node: node.into(),
            fqdn: format!("{node}.mm.example.net"),
            result: result.into(),
            config_diff: None,
            changes: Vec::new(),
            binaries: Vec::new(),
            message: result.into(),
            seconds: 1.0,
        }
    }

    #[test]
    fn failures_come_first_and_exit_status_follows_them() {
        let mut ok = result("alpha", "converged");
        ok.changes = vec!["write-file /etc/rsyncd.conf".into()];
        ok.config_diff = Some("-a = 1\n+a = 2\n".into());
        let report = Report { version: 1, nodes: vec![ok, result("beta", "unreachable"), result("gamma", "nothing-to-change")] };
        assert!(!report.all_ok());
        let text = render(&report, true);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[1].starts_with("beta") && lines[1].contains("unreachable"), "{text}");
        assert!(text.contains("applied on alpha.mm.example.net:\n  +a = 2\n  -a = 1\n") || text.contains("  -a = 1\n  +a = 2\n"), "{text}");
        assert!(text.contains("  write-file /etc/rsyncd.conf\n"), "{text}");
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["version"], 1);
        assert!(Report { version: 1, nodes: vec![result("a", "nothing-to-change"), result("b", "changes")] }.all_ok());
    }

    #[test]
    fn survey_answers_split_by_length_not_by_content() {
        // A node.toml whose text looks like the parts after it changes nothing.
        let toml = "name = \"x\"\nmm-firstboot 9.9\n{\"changes\": []}\n";
        let out = format!("{}\n{toml}mm-firstboot 0.1.0 (abc)\nnone\n{{\"changes\": [1]}}\n", toml.len());
        let s = parse_survey(out.as_bytes()).unwrap();
        assert_eq!(s.installed, toml);
        assert_eq!(s.versions, ["mm-firstboot 0.1.0 (abc)", "none"]);
        assert_eq!(s.plan.unwrap()["changes"][0], 1);
        // A fresh node: no file.
        let s = parse_survey(b"0\nnone\nnone\n{}").unwrap();
        assert_eq!((s.installed.as_str(), s.versions.len()), ("", 2));
        // No plan (an old or missing mm-firstboot): known, not an error yet.
        assert!(parse_survey(b"0\nnone\nnone\n").unwrap().plan.is_none());
        // Truncated answers are errors, never a panic.
        for cut in [0, 2, 10, toml.len() + 20] {
            assert!(parse_survey(&out.as_bytes()[..cut]).is_err(), "{cut}");
        }
        assert!(parse_survey(b"999\nshort").is_err());
    }

    #[test]
    fn plan_lines_name_what_changes() {
        let plan = serde_json::json!({"changes": [
            {"kind": "write-file", "path": "/etc/rsyncd.conf", "mode": 420, "new": false},
            {"kind": "enable-unit", "unit": "mm-sync-epel.timer", "target": "timers.target"},
            {"kind": "storage", "step": "mount", "disk": "/dev/vdb"}
        ]});
        assert_eq!(plan_lines(&plan), ["write-file /etc/rsyncd.conf", "enable-unit mm-sync-epel.timer", "storage mount"]);
    }
}
