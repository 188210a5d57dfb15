//! `mmbuild`: validates a fleet inventory and builds per-node images and install media.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use mmbuild::build::{self, BuildOptions, ImageFormat, Outcome};
use mmbuild::hostcmd;
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
is unusable (also: the host key state directory lost, unreadable or too open; the message says what to do); 4 a build step failed."
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
        /// Print this node's resolved node.toml (what its MMCONFIG partition and OEMDRV stick carry).
        #[arg(long, value_name = "NODE", conflicts_with = "json")]
        node_toml: Option<String>,
    },
    /// Build every node's disk image (and install media) into an output directory.
    ///
    /// The common base OS (Debian bookworm root, initramfs, UKI, ESP) is built once and cached by
    /// content hash under --cache; each node then costs one sparse copy plus its own GPT and
    /// MMCONFIG partition. Writes DIR/<node>/disk.img, DIR/<node>/ks.cfg and DIR/<node>/oemdrv.img (the AlmaLinux
    /// kickstart and its OEMDRV install stick; images and sticks carry the node's own ssh host
    /// key from --state and are mode 0600), DIR/known_hosts (one line per node:
    /// `fqdn,ipv4,ipv6 ssh-ed25519 AAAA...`), DIR/SHA256SUMS (check with
    /// `cd DIR && sha256sum -c SHA256SUMS`) and DIR/manifest.json. Every file is written to a
    /// temporary name and renamed when complete: a killed build leaves no partial output.
    Build {
        /// The fleet inventory.
        fleet: PathBuf,
        /// Output directory.
        #[arg(long, short, value_name = "DIR")]
        out: PathBuf,
        /// Build only this node (repeatable); default: every node.
        #[arg(long = "node", value_name = "NAME")]
        nodes: Vec<String>,
        /// Disk image format.
        #[arg(long, value_enum, default_value = "raw")]
        format: ImageFormat,
        /// Only the kickstart and OEMDRV install media; no base OS, no disk images.
        #[arg(long)]
        kickstart_only: bool,
        /// Nodes built in parallel (default: the number of CPUs).
        #[arg(long, short)]
        jobs: Option<usize>,
        /// Cache directory for the base OS and downloaded packages [default: $MM_CACHE or /var/cache/micromirror].
        #[arg(long, value_name = "DIR")]
        cache: Option<PathBuf>,
        /// Directory with the static on-node binaries mm-firstboot and mm-sync
        /// [default: $MM_NODE_BIN or target/x86_64-unknown-linux-musl/release of this source tree].
        #[arg(long, value_name = "DIR")]
        node_bin: Option<PathBuf>,
        /// The fleet's host key state directory: one ed25519 ssh host key per node, made once
        /// and reused by every later build (0700, keys 0600; keep it outside --out and back it
        /// up) [default: $MM_STATE/<fleet> or /var/lib/micromirror/state/<fleet>].
        #[arg(long, value_name = "DIR")]
        state: Option<PathBuf>,
        /// Replace this node's host key with a new one on purpose (repeatable), e.g. after the
        /// state directory was lost or the node's disk was stolen. Its line in known_hosts changes.
        #[arg(long = "new-host-keys", value_name = "NODE")]
        new_host_keys: Vec<String>,
        /// Install exactly the package versions of FILE (`name=version` lines: the
        /// DIR/packages.lock an earlier build wrote), to rebuild the same base later. Versions
        /// older than the mirror's need MM_DEBIAN_MIRROR pointing at a snapshot that has them.
        #[arg(long, value_name = "FILE")]
        pin_packages: Option<PathBuf>,
        /// No progress output, only errors.
        #[arg(long, short)]
        quiet: bool,
    },
    /// Boot a node image under QEMU + OVMF with the serial console on this terminal.
    ///
    /// Uses KVM when it really works (probed by booting the firmware), TCG otherwise; force with
    /// MM_QEMU_ACCEL=kvm|tcg. User networking with the guest's ports 80 and 873 forwarded to
    /// 127.0.0.1. Quit with Ctrl-A X.
    Qemu {
        /// A disk image from `mmbuild build` (raw or .qcow2).
        image: PathBuf,
        /// Attach a data disk: a size (8G, 512M) for a new blank sparse disk, or an image file (repeatable).
        #[arg(long = "data-disk", value_name = "SIZE|FILE")]
        data_disks: Vec<String>,
        /// Host port for the guest's HTTP (80).
        #[arg(long, default_value_t = 8080)]
        http_port: u16,
        /// Host port for the guest's rsync daemon (873).
        #[arg(long, default_value_t = 8873)]
        rsync_port: u16,
        /// Guest memory in MiB.
        #[arg(long, default_value_t = 1024)]
        memory: u32,
        /// Discard the guest's writes to the image.
        #[arg(long)]
        snapshot: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Check { fleet, json, node_toml } => check::run(&fleet, cli.data.as_deref(), json, node_toml.as_deref()),
        Command::Build { fleet, out, nodes, format, kickstart_only, jobs, cache, node_bin, state, new_host_keys, pin_packages, quiet } => {
            let opts = BuildOptions {
                fleet,
                data: cli.data.clone(),
                out,
                nodes,
                format,
                kickstart_only,
                jobs: jobs.unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get())),
                cache: cache.unwrap_or_else(build::default_cache),
                node_bin: node_bin.unwrap_or_else(build::default_node_bin),
                state,
                new_host_keys,
                pin_packages,
                quiet,
            };
            build::run_build(&opts).map(|outcome| match outcome {
                Outcome::Built(_) => ExitCode::SUCCESS,
                Outcome::InvalidInput(msg) => {
                    eprint!("{msg}");
                    if !msg.ends_with('\n') {
                        eprintln!();
                    }
                    ExitCode::from(exit::INVALID_INPUT)
                }
            })
        }
        Command::Qemu { image, data_disks, http_port, rsync_port, memory, snapshot } => {
            run_qemu(image, data_disks, http_port, rsync_port, memory, snapshot)
        }
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("mmbuild: error: {err:#}");
            let code = if hostcmd::is_environment(&err) { exit::ENVIRONMENT } else { exit::BUILD_FAILED };
            ExitCode::from(code)
        }
    }
}

fn run_qemu(image: PathBuf, data_disks: Vec<String>, http: u16, rsync: u16, memory: u32, snapshot: bool) -> anyhow::Result<ExitCode> {
    use anyhow::Context;
    use mmbuild::qemu::{self, Vm, VmOptions};
    let scratch = std::env::temp_dir().join(format!("mmbuild-qemu-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).with_context(|| format!("creating {}", scratch.display()))?;
    let mut opts = VmOptions::new(image);
    for (i, spec) in data_disks.iter().enumerate() {
        let disk = qemu::data_disk(spec, &scratch, i)?;
        eprintln!("mmbuild: data disk {i}: {}", disk.display());
        opts.data_disks.push(disk);
    }
    opts.forwards = vec![(http, 80), (rsync, 873)];
    opts.memory_mib = memory;
    opts.snapshot = snapshot;
    let vm = Vm::start(&opts)?;
    eprintln!("mmbuild: booting with {:?}; http://127.0.0.1:{http}/ and rsync://127.0.0.1:{rsync}/ once up; Ctrl-A X quits", vm.accel);
    let status = vm.wait()?;
    Ok(if status.success() { ExitCode::SUCCESS } else { ExitCode::from(exit::BUILD_FAILED) })
}
