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
is unusable; 4 a build step failed; 5 `status`: at least one node is not healthy."
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
    /// kickstart and its OEMDRV install stick), DIR/SHA256SUMS (check with
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
    /// Probe every node of the fleet now and say whether it is healthy and how far it lags.
    ///
    /// Per node and per address family (IPv4 and IPv6 separately, from the inventory): HTTP 200
    /// on every hosted project's path, the rsync daemon's greeting and module list (every hosted
    /// project's module must be there), and per project the lag behind its upstream: the
    /// upstream's own freshness marker (overlays/monitoring/markers.toml: Arch lastsync,
    /// AlmaLinux TIME, Debian's ftpsync trace, repomd.xml revision) is fetched with rsync at the
    /// same moment as the node's copy over HTTP; projects without one are judged by the age of
    /// the node's own trace. A lag past the profile's maximum sync interval plus --lag-margin
    /// fails. Prints one line per node, worst first (colour only on a terminal), or --json
    /// (versioned: "version": 1).
    ///
    /// Where the fleet serves HTTPS, the certificate on 443 per family (through `openssl
    /// s_client`): it must verify for the node's FQDN; under 14 days left warns, expired fails.
    ///
    /// ADDRESSES: --resolve NODE:PORT=ADDR:PORT (repeatable) sends the probes of NODE's PORT (80
    /// http, 873 rsync, 443 https) to ADDR:PORT instead of the inventory address; the family is the
    /// address's, so give one per family to probe both. Used by tests and to probe through a
    /// tunnel. Upstreams come from the fleet ([defaults].upstreams / per-node upstreams).
    ///
    /// EXIT STATUS: 0 every node healthy (warnings allowed, e.g. an upstream that could not be
    /// reached), 5 at least one node failed a check, 1 invalid fleet or a --resolve/--node naming
    /// no node of it, 2 wrong command line.
    Status {
        /// The fleet inventory.
        fleet: PathBuf,
        /// Print the report as JSON (versioned) instead of the table.
        #[arg(long)]
        json: bool,
        /// Probe only this node (repeatable); default: every node.
        #[arg(long = "node", value_name = "NAME")]
        nodes: Vec<String>,
        /// Nodes probed at once.
        #[arg(long, short, default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..=256))]
        jobs: u16,
        /// Seconds one connection to a node may take (connect, ask, answer); a node that does not
        /// answer costs this once per family.
        #[arg(long, value_name = "SECONDS", default_value_t = 5.0)]
        timeout: f64,
        /// Seconds fetching one upstream marker may take.
        #[arg(long, value_name = "SECONDS", default_value_t = 10.0)]
        upstream_timeout: f64,
        /// Minutes of lag tolerated on top of a profile's maximum sync interval.
        #[arg(long, value_name = "MINUTES", default_value_t = 60)]
        lag_margin: u64,
        /// Probe ADDR:PORT instead of NODE's inventory address for PORT (see ADDRESSES above).
        #[arg(long, value_name = "NODE:PORT=ADDR:PORT")]
        resolve: Vec<mmbuild::health::Resolve>,
    },
    /// Write monitoring configuration derived from the fleet inventory.
    Export {
        #[command(subcommand)]
        kind: ExportKind,
    },
}

#[derive(Subcommand)]
enum ExportKind {
    /// Prometheus + blackbox_exporter configuration for the whole fleet.
    ///
    /// Writes DIR/prometheus.yml (an example scrape configuration), DIR/blackbox.yml (one module
    /// per address family: HTTP 200, rsync greeting via tcp query_response, TLS), DIR/rules.yml
    /// (alerts derived from the profiles: sync stale past the maximum interval plus a margin,
    /// last sync failed, consistency check errors, textfile metrics stale or unreadable, data
    /// disk full within 7 days, probe failing per family, certificate expiring within 14 days,
    /// node down) and file_sd target files DIR/targets/node.json and DIR/targets/blackbox.json,
    /// labelled node, sponsor, hardware, project, family. Check them with
    /// `promtool check config DIR/prometheus.yml`. Every file is written atomically; the same
    /// fleet gives the same bytes.
    Prometheus {
        /// The fleet inventory.
        fleet: PathBuf,
        /// Output directory.
        #[arg(long, short, value_name = "DIR")]
        out: PathBuf,
        /// Where Prometheus reaches the blackbox exporter.
        #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:9115")]
        blackbox: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Check { fleet, json, node_toml } => check::run(&fleet, cli.data.as_deref(), json, node_toml.as_deref()),
        Command::Build { fleet, out, nodes, format, kickstart_only, jobs, cache, node_bin, quiet } => {
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
        Command::Status { fleet, json, nodes, jobs, timeout, upstream_timeout, lag_margin, resolve } => {
            let secs = |s: f64| std::time::Duration::from_secs_f64(if s.is_finite() { s.clamp(0.05, 3600.0) } else { 5.0 });
            let opts = mmbuild::health::Options {
                timeout: secs(timeout),
                upstream_timeout: secs(upstream_timeout),
                jobs: usize::from(jobs),
                resolve,
                lag_margin: std::time::Duration::from_secs(lag_margin.saturating_mul(60)),
            };
            mmbuild::status::run(&fleet, cli.data.as_deref(), json, &nodes, &opts)
        }
        Command::Export { kind: ExportKind::Prometheus { fleet, out, blackbox } } => {
            mmbuild::prometheus::run(&fleet, cli.data.as_deref(), &out, &blackbox)
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
