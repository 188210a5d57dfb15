//! `mmbuild`: validates a fleet inventory and builds per-node images and install media.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use mmbuild::{check, exit};

#[derive(Parser)]
#[command(
    name = "mmbuild",
    version,
    about = "Build micro-mirror node images and install media from a fleet inventory",
    long_about = "mmbuild reads a fleet inventory (TOML: fleet, defaults, one [[node]] per server), \
resolves each node against the project profiles (profiles/<name>.toml) and hardware models \
(hardware/<name>.toml), and produces per node a bootable UEFI disk image and an AlmaLinux \
kickstart with its OEMDRV install stick.\n\n\
Profiles and hardware are looked up beside the fleet file first, then in mmbuild's data \
directory (the repository, or $MMBUILD_DATA, or /usr/share/micromirror); --data overrides both.\n\n\
EXIT STATUS: 0 success; 1 invalid fleet, profile or hardware file (every error is printed as \
FILE:LINE:COL: error: ...); 2 wrong command line; 3 a host tool is missing or the environment \
is unusable; 4 a build step failed."
)]
struct Cli {
    /// Directory holding profiles/ and hardware/ (default: beside the fleet file, then built-in).
    #[arg(long, global = true, value_name = "DIR")]
    data: Option<PathBuf>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Validate a fleet inventory and print every error found.
    ///
    /// Checks TOML syntax, unknown and missing keys, node names (unique DNS labels, valid FQDN),
    /// addresses and gateways (inside their prefix, /31 and /127 included, never used twice),
    /// profile and hardware names, sponsor URLs, ssh keys and whether the projects fit the
    /// hardware's data capacity. Exit 0 when valid, 1 otherwise.
    Check {
        /// The fleet inventory, e.g. examples/fleet.toml.
        fleet: PathBuf,
        /// Print the resolved per-node configuration as JSON on success.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Check { fleet, json } => check::run(&fleet, cli.data.as_deref(), json),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("mmbuild: error: {err:#}");
            ExitCode::from(exit::BUILD_FAILED)
        }
    }
}
