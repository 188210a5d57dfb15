//! `mm-firstboot`: converge storage, network and mirror services to the node configuration.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use mm_firstboot::apply::Host;
use mm_firstboot::probe::DiskOverride;
use mm_firstboot::{config, console, run};

/// Exit codes, also in --help and README. A storage or service step that fails is a problem
/// (3): the run carries on and reports it on the console; 4 is for a run that could not go on.
const OK: u8 = 0;
const BAD_CONFIG: u8 = 1;
const NEEDS_HANDS: u8 = 3;
const FAILED: u8 = 4;

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
State and a log of every run: /var/lib/micromirror/firstboot/.\n\n\
EXIT STATUS: 0 all good; 1 no or invalid configuration; 2 wrong command line; 3 converged as far \
as possible but something needs hands: a missing disk, no link, foreign data, or a step that failed \
(the run reports it, carries on with the rest, and a re-run retries it); 4 the run itself stopped \
(the disks could not be read, files or the state could not be written)."
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
    /// Print what `run` would change and why; changes nothing.
    Plan {
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
    let loaded = match config::load(&host, cli.config.as_deref(), matches!(cli.command, Cmd::Run)) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("mm-firstboot: error: {e:#}");
            return ExitCode::from(BAD_CONFIG);
        }
    };
    let cfg = &loaded.config;
    let result = match cli.command {
        Cmd::Plan { json } => run::plan_storage(&host, cfg, &cli.disks).and_then(|plan| {
            let files = run::render_files(&host, cfg);
            if json {
                println!("{}", serde_json::to_string_pretty(&plan)?);
            } else {
                println!("node {} (config from {})", cfg.node.fqdn, loaded.source);
                for f in &files {
                    let same = std::fs::read(host.path(&f.path)).is_ok_and(|old| old == f.contents);
                    println!("  {} {}", if same { "unchanged" } else { "write    " }, f.path.display());
                }
                for n in &plan.notes {
                    println!("  storage: {n}");
                }
                for s in &plan.steps {
                    println!("  step: {}", run::describe_step(s));
                }
                for p in &plan.problems {
                    println!("  PROBLEM: {}", p.message);
                }
            }
            Ok(if plan.problems.is_empty() { OK } else { NEEDS_HANDS })
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
                    OK
                } else {
                    NEEDS_HANDS
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
                // agetty expands backslash escapes in /etc/issue (\l, \4, \S...): the report's own
                // backslashes (a sponsor's name) are doubled so they print as themselves.
                let issue =
                    mm_firstboot::files::RenderedFile::new("/etc/issue", 0o644, format!("{}\n\\l\n\n", text.replace('\\', "\\\\")));
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
            res.context("writing /etc/issue").map(|_| if st.ok() { OK } else { NEEDS_HANDS })
        }
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("mm-firstboot: error: {e:#}");
            ExitCode::from(FAILED)
        }
    }
}
