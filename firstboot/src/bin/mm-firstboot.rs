//! `mm-firstboot`: converge storage, network and mirror services to the node configuration.

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use mm_firstboot::cli::{Cli, Cmd};
use mm_firstboot::apply::Host;
use mm_firstboot::{config, console, run};

use mm_firstboot::Exit;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let host = Host::new(&cli.root);
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
        Cmd::Run => {
            let fqdn = cfg.node.fqdn.clone();
            let mut say = |m: &str| println!("mm-firstboot: {fqdn}: {m}");
            run::run(&host, cfg, &loaded.source, &loaded.host_key, &cli.disks, &mut say).map(|st| {
                if st.changed.is_empty() {
                    println!("mm-firstboot: {}: nothing to change, storage unchanged ({:.2} s)", cfg.node.fqdn, st.seconds);
                } else {
                    println!(
                        "mm-firstboot: {}: {} change(s) in {:.2} s ({:.2} s of it storage steps)",
                        cfg.node.fqdn,
                        st.changed.len(),
                        st.seconds,
                        st.storage_seconds
                    );
                }
                for p in &st.problems {
                    println!("mm-firstboot: {}: PROBLEM: {p}", cfg.node.fqdn);
                }
                if st.problems.is_empty() {
                    Exit::Ok
                } else {
                    Exit::NeedsHands
                }
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
                let issue = mm_firstboot::files::RenderedFile::new("/etc/issue", 0o644, format!("{text}\n\\l\n\n"));
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
    };
    match result {
        Ok(code) => code.into(),
        Err(e) => {
            eprintln!("mm-firstboot: error: {e:#}");
            Exit::Failed.into()
        }
    }
}
