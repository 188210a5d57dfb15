//! `mm-firstboot`: converge storage, network and mirror services to the node configuration.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use mm_firstboot::apply::Host;
use mm_firstboot::probe::DiskOverride;
use mm_firstboot::{config, console, run};

use mm_firstboot::Exit;

#[derive(Parser)]
#[command(
    name = "mm-firstboot",
    version,
    about = "Bring a micro-mirror node to the state its configuration describes",
    long_about = "mm-firstboot runs early on every boot. It reads the node configuration (--config, \
else node.toml on the partition labelled MMCONFIG, else /etc/micromirror/node.toml), writes the \
hostname and the static network configuration (systemd-networkd, or NetworkManager keyfiles on \
AlmaLinux), and prepares the data disk: a blank disk chosen by the hardware profile's rule gets \
GPT + XFS labelled MMDATA mounted at /srv/mirror; an existing MMDATA is mounted (and grown); a disk \
with anything else on it is left untouched and reported, unless the fleet lists its serial in \
wipe_disk_serials. Re-running on a converged node changes nothing.\n\n\
State and a log of every run: /var/lib/micromirror/firstboot/.",
    after_long_help = Exit::help()
)]
struct Cli {
    /// Node configuration file instead of MMCONFIG / /etc/micromirror/node.toml.
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Target root directory (tests, or preparing a mounted node disk).
    #[arg(long, global = true, value_name = "DIR", default_value = "/")]
    root: PathBuf,
    /// Consider only this disk, as DEVICE[:BUS[:SERIAL]] (repeatable; tests and recovery).
    #[arg(long = "disk", global = true, value_name = "DEV[:BUS[:SERIAL]]")]
    disks: Vec<DiskOverride>,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Print every file (with a diff), account, directory, unit and storage step that `run`
    /// would change, in the order it would; changes nothing. "nothing to change" exactly when
    /// `run` would change nothing.
    Plan {
        /// The plan as JSON (what `mmbuild plan` reads over ssh).
        #[arg(long)]
        json: bool,
    },
    /// Converge the node now.
    Run,
    /// Report the node's state for remote hands (and the last run).
    Status {
        #[arg(long)]
        json: bool,
        /// Also write /etc/issue and print to the console.
        #[arg(long)]
        console: bool,
    },
}

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
        Cmd::Plan { json } => run::plan(&host, cfg, &loaded.source, &cli.disks).and_then(|plan| {
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
            run::run(&host, cfg, &loaded.source, &cli.disks, &mut say).map(|st| {
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
