//! mm-firstboot's command line (the binary, the man page and the completions are made from it).

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::probe::DiskOverride;
use crate::Exit;

/// `--version`: the crate version and the git commit the binary was built from.
pub const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (", env!("MM_GIT_COMMIT"), ")");

#[derive(Parser)]
#[command(
    name = "mm-firstboot",
    version = crate::cli::VERSION,
    about = "Bring a micro-mirror node to the state its configuration describes",
    long_about = "mm-firstboot runs early on every boot. It reads the node configuration (--config, \
else node.toml on the partition labelled MMCONFIG, else /etc/micromirror/node.toml), installs \
the node's own ssh host key delivered beside that node.toml as /etc/ssh/ssh_host_ed25519_key \
(sshd's only host key), writes the hostname and the static network configuration (systemd-networkd, or NetworkManager keyfiles on \
AlmaLinux), and prepares the data disk: a blank disk chosen by the hardware profile's rule gets \
GPT + XFS labelled MMDATA mounted at /srv/mirror; an existing MMDATA is mounted (and grown); a disk \
with anything else on it is left untouched and reported, unless the fleet lists its serial in \
wipe_disk_serials. Re-running on a converged node changes nothing.\n\n\
State and a log of every run: /var/lib/micromirror/firstboot/.",
    after_long_help = Exit::help()
)]
pub struct Cli {
    /// Node configuration file instead of MMCONFIG / /etc/micromirror/node.toml.
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Target root directory (tests, or preparing a mounted node disk).
    #[arg(long, global = true, value_name = "DIR", default_value = "/")]
    pub root: PathBuf,
    /// Consider only this disk, as DEVICE[:BUS[:SERIAL]] (repeatable; tests and recovery).
    #[arg(long = "disk", global = true, value_name = "DEV[:BUS[:SERIAL]]")]
    pub disks: Vec<DiskOverride>,
    #[command(subcommand)]
    pub command: Cmd,
}

#[derive(Subcommand)]
pub enum Cmd {
    /// Print every file (with a diff), account, directory, unit and storage step that `run`
    /// would change, in the order it would; changes nothing. "nothing to change" exactly when
    /// `run` would change nothing.
    Plan {
        /// The plan as JSON (what `mmbuild plan` reads over ssh).
        #[arg(long)]
        json: bool,
    },
    /// Converge the node now.
    Run {
        /// Print the run's report as JSON instead of progress lines (what `mmbuild apply`
        /// reads over ssh): version, outcome (nothing-to-change, converged, needs-attention),
        /// changes, problems, notes, seconds.
        #[arg(long)]
        json: bool,
    },
    /// Adopt a new node configuration from the operator (`mmbuild apply` sends it): checked to
    /// be for this very node, installed as /etc/micromirror/node.toml (the previous one kept as
    /// node.toml.prev), and from then on preferred over MMCONFIG at boot. Does not converge: run
    /// `run` next.
    InstallConfig {
        /// The new node.toml, `-` for stdin.
        file: PathBuf,
        /// A change of addresses, gateways, interface or resolvers rolls back on its own after
        /// this many seconds unless `confirm` runs first (commit-confirmed renumbering).
        #[arg(long, value_name = "SECONDS")]
        confirm_within: Option<u64>,
    },
    /// Keep a network change adopted with --confirm-within (the operator reached the node).
    Confirm,
    /// Go back to the configuration before an unconfirmed network change and converge (run by
    /// the timer install-config starts; by hand in a pinch).
    Rollback,
    /// Delete the data of a project this node no longer hosts, and say how much space it freed.
    Prune { project: String },
    /// Whole-OS updates: the two root slots, their boot entries, the health gate.
    #[command(subcommand)]
    Os(OsCmd),
    /// Report the node's state for remote hands (and the last run).
    Status {
        #[arg(long)]
        json: bool,
        /// Also write /etc/issue and print to the console.
        #[arg(long)]
        console: bool,
    },
}

#[derive(Subcommand)]
pub enum OsCmd {
    /// The running image and slot, whether it boots on trial, the boot entries on the ESP, the
    /// slots that rolled back and why.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Write a new image into the slot that is not running: the zstd-compressed slot content on
    /// stdin, checked against --sha256 before its boot entry is armed with --tries boots on trial.
    /// The running slot, MMCONFIG and MMDATA are never written. Reboot to try it.
    Install {
        /// The image's IMAGE_VERSION (it must sort after the running one).
        #[arg(long, value_name = "VERSION")]
        image_version: String,
        /// SHA-256 of the uncompressed slot content.
        #[arg(long, value_name = "HEX")]
        sha256: String,
        /// Length of the uncompressed slot content in bytes.
        #[arg(long, value_name = "BYTES")]
        bytes: u64,
        /// The slot's unified kernel image, already copied to the node.
        #[arg(long, value_name = "FILE")]
        uki: PathBuf,
        #[arg(long, value_name = "HEX")]
        uki_sha256: String,
        /// Boots the new slot gets before systemd-boot falls back to the running one.
        #[arg(long, default_value_t = mmconfig::os::DEFAULT_TRIES)]
        tries: u32,
    },
    /// Judge a slot on trial (run by mm-os-gate.service before boot-complete.target): addresses
    /// configured, sshd answering, MMDATA mounted, nginx and rsyncd serving. Exit 0 lets
    /// systemd-bless-boot keep the slot; otherwise the unit reboots and the try is used up.
    Gate {
        /// Seconds to wait for the node to become healthy.
        #[arg(long, default_value_t = 180)]
        timeout: u64,
    },
}
