//! `mm-firstboot`: converge storage, network and mirror services to the node configuration.

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use mm_firstboot::apply::Host;
use mm_firstboot::cli::{Cli, Cmd, OsCmd};
use mm_firstboot::{config, console, run};

use mm_firstboot::Exit;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let host = Host::new(&cli.root);
    match day2(&host, &cli) {
        Some(Ok(code)) => return code.into(),
        Some(Err(e)) => {
            eprintln!("mm-firstboot: error: {e:#}");
            return Exit::Failed.into();
        }
        None => {}
    }
    if let Cmd::Os(os) = &cli.command {
        if let Some(code) = os_command(os) {
            return code.into();
        }
    }
    if matches!(cli.command, Cmd::Run { .. }) {
        // A reboot inside a network change's confirmation window loses the transient timer.
        if let Err(e) = resume_pending(&host) {
            eprintln!("mm-firstboot: warning: {e:#}");
        }
    }
    let loaded = match config::load(&host, cli.config.as_deref()) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("mm-firstboot: error: {e:#}");
            return Exit::BadConfig.into();
        }
    };
    let cfg = &loaded.config;
    let result = match cli.command {
        Cmd::Plan { json } => run::plan(&host, cfg, &loaded.source, &loaded.host_key, &cli.disks).and_then(|plan| {
            if json {
                println!("{}", serde_json::to_string_pretty(&plan)?);
            } else {
                print!("{}", run::render_plan(&plan));
            }
            Ok(if plan.storage.problems.is_empty() { Exit::Ok } else { Exit::NeedsHands })
        }),
        Cmd::Run { json } => {
            let fqdn = cfg.node.fqdn.clone();
            // With --json stdout carries the report alone: progress goes to stderr.
            let mut say = |m: &str| {
                if json {
                    eprintln!("mm-firstboot: {fqdn}: {m}");
                } else {
                    println!("mm-firstboot: {fqdn}: {m}");
                }
            };
            run::run(&host, cfg, &loaded.source, &loaded.host_key, &cli.disks, &mut say).and_then(|st| {
                let report = st.report();
                if json {
                    println!("{}", serde_json::to_string_pretty(&report)?);
                } else {
                    print!("{}", run::render_report(&report, st.storage_seconds));
                }
                Ok(if report.problems.is_empty() { Exit::Ok } else { Exit::NeedsHands })
            })
        }
        Cmd::Status { json, console: to_console } => {
            let last = run::load_state(&host);
            let st = console::status(&host, cfg, last.as_ref());
            let text = st.render();
            if json {
                println!("{}", serde_json::to_string_pretty(&st).unwrap_or_default());
            } else {
                print!("{text}");
            }
            let res = if to_console {
                // agetty expands backslash escapes in /etc/issue (\l, \4, \S...): the report's own
                // backslashes (a sponsor's name) are doubled so they print as themselves.
                let issue = mm_firstboot::files::RenderedFile::new("/etc/issue", 0o644, format!("{}\n\\l\n\n", text.replace('\\', "\\\\")));
                host.install(&issue).map(|_| {
                    if host.live() {
                        // Straight to the console device too: the person at the VGA screen may not look at a log.
                        if let Ok(mut c) = std::fs::OpenOptions::new().write(true).open("/dev/console") {
                            let _ = c.write_all(text.as_bytes());
                        }
                    }
                })
            } else {
                Ok(())
            };
            res.context("writing /etc/issue").map(|_| if st.ok() { Exit::Ok } else { Exit::NeedsHands })
        }
        Cmd::Os(OsCmd::Gate { timeout }) => mm_firstboot::os::gate::run(cfg, std::time::Duration::from_secs(timeout)).map(|record| {
            if record.passed {
                println!("mm-firstboot: image {} in slot {} passed its health gate", record.version, record.slot);
                Exit::Ok
            } else {
                for p in &record.problems {
                    println!("mm-firstboot: gate: PROBLEM: {p}");
                }
                println!("mm-firstboot: image {} in slot {} failed its health gate: rebooting uses up a try", record.version, record.slot);
                Exit::NeedsHands
            }
        }),
        Cmd::InstallConfig { .. } | Cmd::Confirm | Cmd::Rollback | Cmd::Prune { .. } | Cmd::Os(_) => unreachable!("handled before"),
    };
    match result {
        Ok(code) => code.into(),
        Err(e) => {
            eprintln!("mm-firstboot: error: {e:#}");
            Exit::Failed.into()
        }
    }
}

/// The commands that change which configuration the node has (they must work when the current
/// one does not load); None for the others.
fn day2(host: &Host, cli: &Cli) -> Option<anyhow::Result<Exit>> {
    use mm_firstboot::adopt;
    let partition = || if host.live() { config::partition_text().ok().flatten() } else { None };
    Some(match &cli.command {
        Cmd::InstallConfig { file, confirm_within } => (|| {
            let text = config::read_text(file)?;
            let current = config::load(host, cli.config.as_deref()).ok().map(|l| l.config);
            let adopted = match adopt::install_config(host, current.as_ref(), &text, partition().as_deref(), *confirm_within) {
                Ok(a) => a,
                Err(e) => {
                    eprintln!("mm-firstboot: error: {e:#}");
                    return Ok(Exit::BadConfig);
                }
            };
            if let (Some(by), Some(secs)) = (adopted.confirm_by_unix, confirm_within) {
                if host.live() {
                    // A transient timer: gone after a reboot, when firstboot itself checks the deadline.
                    let _ = hostkit::cmd::text("systemctl", &["stop", "mm-config-rollback.timer"]);
                    hostkit::cmd::text(
                        "systemd-run",
                        &[
                            "--unit=mm-config-rollback",
                            &format!("--on-active={secs}"),
                            "--timer-property=AccuracySec=1s",
                            "/usr/bin/mm-firstboot",
                            "rollback",
                        ],
                    )
                    .context("scheduling the rollback")?;
                }
                println!("mm-firstboot: network change adopted: confirm before {by} (unix time) or it rolls back");
            }
            println!("{}", serde_json::to_string(&adopted)?);
            Ok(Exit::Ok)
        })(),
        Cmd::Confirm => (|| {
            let had = adopt::confirm(host)?;
            if host.live() {
                let _ = hostkit::cmd::text("systemctl", &["stop", "mm-config-rollback.timer"]);
            }
            println!("mm-firstboot: {}", if had { "network change confirmed" } else { "nothing to confirm" });
            Ok(Exit::Ok)
        })(),
        Cmd::Rollback => (|| match adopt::rollback(host, partition().as_deref())? {
            None => {
                println!("mm-firstboot: nothing to roll back");
                Ok(Exit::Ok)
            }
            Some(_) => {
                println!("mm-firstboot: the network change was not confirmed: back to the previous configuration");
                let loaded = config::load(host, None)?;
                let fqdn = loaded.config.node.fqdn.clone();
                let mut say = |m: &str| println!("mm-firstboot: {fqdn}: {m}");
                let st = run::run(host, &loaded.config, &loaded.source, &loaded.host_key, &cli.disks, &mut say)?;
                Ok(if st.problems.is_empty() { Exit::Ok } else { Exit::NeedsHands })
            }
        })(),
        Cmd::Prune { project } => (|| {
            let loaded = config::load(host, cli.config.as_deref())?;
            match adopt::prune(host, &loaded.config, project) {
                Ok(bytes) => {
                    println!("mm-firstboot: {project}: deleted, {:.2} GB freed", bytes as f64 / 1e9);
                    Ok(Exit::Ok)
                }
                Err(e) => {
                    eprintln!("mm-firstboot: error: {e:#}");
                    Ok(Exit::BadConfig)
                }
            }
        })(),
        _ => return None,
    })
}

/// An unconfirmed network change whose deadline passed (the node rebooted meanwhile) rolls back
/// now; one still inside its window gets its timer again.
fn resume_pending(host: &Host) -> anyhow::Result<()> {
    use mm_firstboot::adopt;
    let Some(p) = adopt::load_pending(host) else {
        return Ok(());
    };
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    if now >= p.deadline_unix {
        let partition = if host.live() { config::partition_text().ok().flatten() } else { None };
        adopt::rollback(host, partition.as_deref())?;
        println!("mm-firstboot: an unconfirmed network change expired: back to the previous configuration");
    } else if host.live() {
        let left = p.deadline_unix - now;
        hostkit::cmd::text(
            "systemd-run",
            &[
                "--unit=mm-config-rollback",
                &format!("--on-active={left}"),
                "--timer-property=AccuracySec=1s",
                "/usr/bin/mm-firstboot",
                "rollback",
            ],
        )?;
    }
    Ok(())
}

/// The `os` verbs that need no node configuration; None for `gate`, which does.
fn os_command(cmd: &OsCmd) -> Option<Exit> {
    let result = match cmd {
        OsCmd::Status { json } => {
            let st = mm_firstboot::os::status();
            if *json {
                println!("{}", serde_json::to_string_pretty(&st).unwrap_or_default());
            } else {
                print!("{}", mm_firstboot::os::render(&st));
            }
            Ok(Exit::Ok)
        }
        OsCmd::Install { image_version, sha256, bytes, uki, uki_sha256, tries } => {
            let req = mm_firstboot::os::install::Request { image_version, sha256, bytes: *bytes, uki, uki_sha256, tries: *tries };
            mm_firstboot::os::install::install(&req, std::io::stdin()).map(|done| {
                println!("{}", serde_json::to_string(&done).unwrap_or_default());
                Exit::Ok
            })
        }
        OsCmd::Gate { .. } => return None,
    };
    Some(result.unwrap_or_else(|e| {
        eprintln!("mm-firstboot: error: {e:#}");
        Exit::Failed
    }))
}
