//! mmbuild's command line (the binary, the man page and the completions are made from it).

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::image::build::ImageFormat;

/// `--version`: the crate version and the git commit the binary was built from.
pub const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (", env!("MM_GIT_COMMIT"), ")");

#[derive(Parser)]
#[command(
    name = "mmbuild",
    version = VERSION,
    about = "Build micro-mirror node images and install media from a fleet inventory",
    long_about = "mmbuild reads a fleet inventory (TOML: fleet, defaults, one [[node]] per server), \
resolves each node against the project profiles (profiles/<name>.toml) and hardware models \
(hardware/<name>.toml), and produces per node a bootable UEFI disk image and an AlmaLinux \
kickstart with its OEMDRV install stick.\n\n\
Profiles and hardware are looked up beside the fleet file first, then in mmbuild's data \
directory (the repository, or $MMBUILD_DATA, or /usr/share/micromirror); --data overrides both.",
    after_long_help = crate::exit::Exit::help()
)]
pub struct Cli {
    /// Directory holding profiles/ and hardware/ (default: beside the fleet file, then built-in).
    #[arg(long, global = true, value_name = "DIR")]
    pub data: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
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
        /// Also build each node's install stick image, DIR/<node>/install.img: booted from USB on
        /// the node, it writes disk.img to the disk the hardware model's boot-disk rule picks
        /// (blank, this node's earlier install, or a serial in wipe_disk_serials; never anything
        /// else), keeps MMDATA, verifies, and boots the installed system. Costs one more copy
        /// and hash of the image per node. Raw format only.
        #[arg(long, conflicts_with = "kickstart_only")]
        install_stick: bool,
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
    /// Show, per node, what `apply` would change on the live nodes; changes nothing.
    ///
    /// Over ssh as the admin account (the real OpenSSH client, BatchMode, StrictHostKeyChecking
    /// against DIR/known_hosts written by the build: a node whose key differs is refused, never
    /// trusted), per node: the node.toml change (unified diff of the installed copy against the
    /// inventory), the on-node binaries whose version differs from --node-bin, and every file,
    /// unit, account, directory and storage step that the node's own `mm-firstboot plan` lists
    /// for the new configuration.
    Plan(Day2Args),
    /// Bring the live nodes to the inventory: new binaries, the new node.toml, the node's converge.
    ///
    /// Per node, in parallel (--jobs): the on-node binaries when their version differs (written
    /// atomically, the previous kept as /usr/bin/NAME.prev), `mm-firstboot install-config` (the
    /// node keeps it across reboots: it wins over MMCONFIG until MMCONFIG itself changes) and
    /// `mm-firstboot run`. A node with nothing to change is left alone. Dropped projects stop
    /// being served and synced; their data stays until --prune. A change of addresses, gateway,
    /// interface or resolvers is applied commit-confirmed: the node converges on its own, this
    /// command reaches it on its new address and confirms; unconfirmed within
    /// --confirm-timeout it rolls back to the previous network by itself. One node failing or
    /// unreachable never stops the others. EXIT STATUS 0 when every node converged (or had
    /// nothing to change), 6 otherwise.
    Apply(Day2Args),
    /// Export files for other systems from the inventory.
    Export {
        #[command(subcommand)]
        kind: ExportKind,
    },
    /// Boot every built node image in its hardware model's shape and check it before it ships.
    ///
    /// Per node, on its own thread and private network namespace (needs root): a sparse copy of
    /// DIR/<node>/disk.img (the shipped file is never written) on the bus and at a size the
    /// model's boot-disk rule accepts (NVMe, SATA/AHCI, virtio), a blank data disk where the
    /// model has one, its NIC count (a bond's ports) on a bridge standing for the sponsor's
    /// switch, the pinned MAC if any. QEMU cannot emulate every part: where it has none of the
    /// model's NIC drivers (r8169, ixgbe, mlx4_en), the closest emulated NIC stands in, the node
    /// is told so through QEMU's fw_cfg (real servers have none) and the report names it.
    ///
    /// The node keeps its inventory addresses: the namespace holds its gateways, its resolvers
    /// (dnsmasq answering each upstream's name with a stand-in address) and a stand-in rsync
    /// daemon per upstream serving a tiny, valid tree per project (apt, rpm, Arch lastsync,
    /// ftpsync trace), so the first syncs can succeed; checks connect from an address inside the
    /// fleet's admin prefixes. Checked with a timeout: the console verdict (ALL GOOD), HTTP 200
    /// naming the sponsor on every project path and the rsync module list per address family,
    /// every project's first sync (its trace file), the ssh host key against DIR/known_hosts,
    /// and after power-off the data disk layout (MMDATA where the model puts it; with
    /// --foreign-disk, a disk holding an ext4 filesystem left untouched).
    ///
    /// Prints a table (node, shape, seconds to HTTP 200, verdict, failures). KVM when it really
    /// works, TCG otherwise (MM_QEMU_ACCEL=kvm|tcg forces it). EXIT STATUS: 0 when every node
    /// passed, 6 when one failed, 1 invalid fleet or --node, 3 missing tool or not root.
    BootTest {
        /// The fleet inventory the images were built from.
        fleet: PathBuf,
        /// The build's output directory (DIR/<node>/disk.img, DIR/known_hosts); a failed node's
        /// console log stays in DIR/<node>/boot-test/.
        #[arg(long, short, value_name = "DIR")]
        out: PathBuf,
        /// Test only this node (repeatable); default: every node.
        #[arg(long = "node", value_name = "NAME")]
        nodes: Vec<String>,
        /// Nodes booted at once (each takes --memory and two CPUs of QEMU).
        #[arg(long, short, default_value_t = 1)]
        jobs: usize,
        /// Also write the results as JUnit XML to FILE.
        #[arg(long, value_name = "FILE")]
        junit: Option<PathBuf>,
        /// Keep a failed node's VM disks beside its console log.
        #[arg(long)]
        keep: bool,
        /// Attach one more disk, shaped like the data disk, holding an ext4 filesystem: the node
        /// must not touch it.
        #[arg(long)]
        foreign_disk: bool,
        /// Boot DIR/<node>/install.img (`build --install-stick`) as a USB stick with a blank boot
        /// disk of the model's shape instead of disk.img: the stick must install the node, hand
        /// over to the installed disk when the firmware boots the stick again, and the installed
        /// node must pass every check.
        #[arg(long)]
        from_stick: bool,
        /// Seconds per node from power-on to ALL GOOD and the first syncs.
        #[arg(long, default_value_t = 900, value_name = "SECONDS")]
        timeout: u64,
        /// Guest memory in MiB.
        #[arg(long, default_value_t = 1024)]
        memory: u32,
        /// Print the results as JSON (versioned) instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// Write a node's disk image or OEMDRV stick onto a whole disk or USB stick, and verify it.
    ///
    /// The source, DIR/<node>/disk.img (--artifact disk) or DIR/<node>/oemdrv.img (--artifact
    /// oemdrv), is first checked against its line in DIR/SHA256SUMS. The target must be a whole
    /// disk (/dev/sdb, /dev/disk/by-id/usb-..., never a partition). Refused, --force or not: the
    /// disk this computer runs from (/, /boot, /boot/efi, swap, through partitions, dm and md),
    /// a disk with a mounted partition, swap or a dm/md device on it (the message says what to
    /// umount), a read-only or too small disk. Refused unless --force: a disk larger than 128 GB
    /// (not a stick), a disk holding a partition table or filesystem that is not this node's
    /// earlier write (the message lists what it holds, blkid TYPE and LABEL per partition). A
    /// disk holding this same node's image or stick is overwritten without --force.
    ///
    /// The device is opened exclusively (the kernel refuses while anything holds it), the whole
    /// image is written with O_DIRECT in 4 MiB blocks, zeros included, synced, then read back
    /// and its SHA-256 compared with SHA256SUMS; finally the kernel rereads the partition table.
    /// Progress (bytes, rate, ETA) on a terminal only. EXIT STATUS: 0 written and verified
    /// (--dry-run: the plan allows it), 7 refused (nothing written), 4 writing or verifying
    /// failed (do not use the disk), 1 invalid fleet or --node, 3 not root.
    Write {
        /// The fleet inventory the images were built from.
        fleet: PathBuf,
        /// The build's output directory (DIR/<node>/disk.img, DIR/SHA256SUMS).
        #[arg(long, short, value_name = "DIR")]
        out: PathBuf,
        /// The node whose image to write.
        #[arg(long, value_name = "NAME")]
        node: String,
        /// The whole disk to overwrite, e.g. /dev/sdb or /dev/disk/by-id/usb-... (`lsblk -d -o NAME,SIZE,TRAN,MODEL,SERIAL`).
        #[arg(long, value_name = "DEVICE")]
        to: PathBuf,
        /// Which build output to write.
        #[arg(long, value_enum, default_value = "disk")]
        artifact: crate::ship::write::Artifact,
        /// Also write to a disk larger than 128 GB or holding someone else's data (never to the
        /// running system's disk or a disk in use).
        #[arg(long)]
        force: bool,
        /// Print the plan (target, model, serial, size, transport, what it holds, bytes to
        /// write) and change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Print the plan and the result as JSON (versioned), no progress.
        #[arg(long)]
        json: bool,
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
        #[command(flatten)]
        probe: ProbeArgs,
        /// The fleet's build (`mmbuild build --out DIR`): a node not running its image version
        /// is reported behind (a warning).
        #[arg(long, short, value_name = "DIR")]
        out: Option<PathBuf>,
    },
    /// Write the fleet's traffic report: one static HTML page for everyone, one per sponsor, and
    /// report.json.
    ///
    /// Probes every node as `status` does (same judgement, same --node/--jobs/--timeout/--resolve),
    /// then fetches each answering node's traffic document (/.mm/traffic.json, written by
    /// `mm-sync --traffic`) and writes into DIR, each file atomically: index.html (per node its
    /// sponsor, state, image version and lag per project; bytes served per project per day as
    /// charts; the fleet's totals), sponsor-<slug>.html (what that sponsor's nodes served per
    /// project and per month, and the share over IPv6) and report.json (the same numbers,
    /// versioned: "version": 1). The pages are self-contained (inline CSS and SVG, nothing
    /// loaded from elsewhere) and open from file://.
    ///
    /// A node that does not answer keeps the figures of DIR/report.json from the previous run,
    /// shown with their age: run it into the same DIR each time.
    ///
    /// EXIT STATUS: 0 every node healthy, 5 at least one node failed a check (the report is still
    /// written), 1 invalid fleet or a --resolve/--node naming no node of it, 2 wrong command line,
    /// 4 DIR could not be written or its report.json could not be read.
    Report {
        /// The fleet inventory.
        fleet: PathBuf,
        /// Directory the pages and report.json are written to (created if missing).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Days of traffic shown, ending today (UTC).
        #[arg(long, value_name = "DAYS", default_value_t = 90, value_parser = clap::value_parser!(u32).range(1..=400))]
        since: u32,
        #[command(flatten)]
        probe: ProbeArgs,
    },
}

/// How `status` and `report` reach the nodes.
#[derive(clap::Args)]
pub struct ProbeArgs {
    /// Probe only this node (repeatable); default: every node.
    #[arg(long = "node", value_name = "NAME")]
    pub nodes: Vec<String>,
    /// Nodes probed at once.
    #[arg(long, short, default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub jobs: u16,
    /// Seconds one connection to a node may take (connect, ask, answer); a node that does not
    /// answer costs this once per family.
    #[arg(long, value_name = "SECONDS", default_value_t = 5.0)]
    pub timeout: f64,
    /// Seconds fetching one upstream marker may take.
    #[arg(long, value_name = "SECONDS", default_value_t = 10.0)]
    pub upstream_timeout: f64,
    /// Minutes of lag tolerated on top of a profile's maximum sync interval.
    #[arg(long, value_name = "MINUTES", default_value_t = 60)]
    pub lag_margin: u64,
    /// Probe ADDR:PORT instead of NODE's inventory address for PORT (80 http, 873 rsync, 443
    /// https; the family is ADDR's: give one per family to probe both).
    #[arg(long, value_name = "NODE:PORT=ADDR:PORT")]
    pub resolve: Vec<crate::monitor::health::Resolve>,
}

impl ProbeArgs {
    pub fn options(&self) -> crate::monitor::health::Options {
        let secs = |s: f64| std::time::Duration::from_secs_f64(if s.is_finite() { s.clamp(0.05, 3600.0) } else { 5.0 });
        crate::monitor::health::Options {
            timeout: secs(self.timeout),
            upstream_timeout: secs(self.upstream_timeout),
            jobs: usize::from(self.jobs),
            resolve: self.resolve.clone(),
            lag_margin: std::time::Duration::from_secs(self.lag_margin.saturating_mul(60)),
        }
    }
}

#[derive(clap::Args)]
pub struct Day2Args {
    /// The fleet inventory.
    pub fleet: PathBuf,
    /// The build's output directory: its known_hosts holds the keys the nodes must present.
    #[arg(long, short, value_name = "DIR")]
    pub out: PathBuf,
    /// Only this node (repeatable); default: every node.
    #[arg(long = "node", value_name = "NAME")]
    pub nodes: Vec<String>,
    /// Nodes worked on in parallel.
    #[arg(long, short, default_value_t = 8)]
    pub jobs: usize,
    /// Directory with the on-node binaries to roll out [default: as for build].
    #[arg(long, value_name = "DIR")]
    pub node_bin: Option<PathBuf>,
    /// Reach NODE at HOST[:PORT] instead of its first inventory address and port 22
    /// (repeatable), e.g. a port forward or a jump host's tunnel. The host key is still checked
    /// under the node's FQDN.
    #[arg(long, value_name = "NODE=HOST[:PORT]")]
    pub connect: Vec<crate::day2::remote::Connect>,
    /// apply: where NODE answers after a network change (default: its new inventory address,
    /// port 22), e.g. a second port forward.
    #[arg(long, value_name = "NODE=HOST[:PORT]")]
    pub connect_new: Vec<crate::day2::remote::Connect>,
    /// The admin's ssh private key (default: ssh's own choice, e.g. the agent).
    #[arg(long, short = 'i', value_name = "FILE")]
    pub identity: Option<PathBuf>,
    /// apply: delete this dropped project's data on nodes that no longer host it (repeatable).
    #[arg(long, value_name = "PROJECT")]
    pub prune: Vec<String>,
    /// apply: seconds a network change has to be confirmed from the new address before the node
    /// rolls it back.
    #[arg(long, default_value_t = 300, value_name = "SECONDS")]
    pub confirm_timeout: u64,
    /// Seconds before an ssh connection attempt gives up.
    #[arg(long, default_value_t = 10, value_name = "SECONDS")]
    pub connect_timeout: u64,
    /// apply: nodes whose OS image may reboot at the same time.
    #[arg(long, default_value_t = 2, value_name = "N")]
    pub max_reboots: usize,
    /// apply: roll the OS out to this node first, alone; the others follow only if it comes back
    /// on the new image.
    #[arg(long, value_name = "NODE")]
    pub canary: Option<String>,
    /// apply: go on rolling the OS out after a node rolled back (default: no node starts an OS
    /// update after the first rollback).
    #[arg(long)]
    pub keep_going: bool,
    /// apply: offer an image again to nodes on which it rolled back.
    #[arg(long)]
    pub retry_os: bool,
    /// apply: boots a new image gets on a node before it falls back to the running one.
    #[arg(long, default_value_t = mmconfig::os::DEFAULT_TRIES, value_name = "N")]
    pub trial_boots: u32,
    /// apply: seconds a node has to come back on its new image (or on the old one, rolled back).
    #[arg(long, default_value_t = 1200, value_name = "SECONDS")]
    pub os_timeout: u64,
    /// The per-node results as JSON (versioned).
    #[arg(long)]
    pub json: bool,
}

#[derive(Subcommand)]
pub enum ExportKind {
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
        /// The fleet's build (`mmbuild build --out DIR`): adds an alert for nodes whose
        /// node_exporter reports another image version than this build's for over 7 days.
        #[arg(long, value_name = "DIR")]
        build: Option<PathBuf>,
    },
    /// Every hosted project's own mirror application for every node, in the upstream's format.
    ///
    /// Writes one directory per application (what one submission to one upstream covers; one
    /// MirrorManager site carries every node, one AlmaLinux pull request every mirrors.d file,
    /// one e-mail every node where the project accepts that), each with a README.md saying
    /// what to submit where, in which order, and what the upstream checks afterwards; DIR/README.md
    /// lists them all. Formats: AlmaLinux mirrors.d/<fqdn>.yml, MirrorManager checklist.json and
    /// checklist.md (Fedora, EPEL, Rocky, RPM Fusion), Debian form.json, form.md and
    /// Mirrors.masterlist, Launchpad launchpad.json and launchpad.md (Ubuntu), and request.md and
    /// request.json for every other project. The inventory needs what the applications ask
    /// for (location, port_mbps, [fleet] organisation ...): missing fields are errors naming the
    /// projects that need them, and nothing is written.
    ///
    /// With --check, each node is probed first (per address: HTTP GET of the upstream checker's
    /// marker files and of the node's own trace, whose age must be within the project's
    /// interval; the same markers over HTTPS with the certificate verified, by curl, where the
    /// fleet serves HTTPS; the rsync daemon's module list); an application is marked NOT READY
    /// with the reasons in its README and on stdout.
    ///
    /// Outputs are deterministic (same inventory, same bytes; with --check, same probe results)
    /// and written atomically. EXIT STATUS: 0 written (and ready, with --check); 1 invalid or
    /// incomplete inventory; 2 wrong command line; 5 written, but --check found an application
    /// not ready.
    Registrations(RegistrationsArgs),
    /// An Ansible inventory and a converge playbook, for teams that drive the fleet with Ansible.
    ///
    /// Writes DIR/inventory.yml (groups fleet_*, hardware_*, project_*, sponsor_*, names reduced
    /// to Ansible's rules; host variables ansible_host = the first address, ansible_user =
    /// mmadmin, mm_fqdn, mm_address, mm_addresses, mm_hardware, mm_projects, mm_sponsor; every
    /// value from the inventory tagged !unsafe so Ansible never evaluates it as a template),
    /// DIR/host_vars/<node>/node.toml (exactly what `apply` ships to that node), DIR/known_hosts
    /// (the build's host keys of these nodes; the inventory makes ssh check them under the
    /// node's FQDN with StrictHostKeyChecking=yes), DIR/converge.yml (the on-node converge of
    /// `apply`: install-config, run, commit-confirmed network changes; exit 3 of the converge
    /// is "needs attention", not a failure) and DIR/README.md (how to run it). Deterministic,
    /// written atomically; files of nodes no longer exported are removed. EXIT STATUS: 0
    /// written; 1 invalid inventory, unknown --node, or a node without a host key in
    /// --known-hosts (nothing written); 2 wrong command line.
    Ansible(AnsibleArgs),
}

#[derive(clap::Args)]
pub struct AnsibleArgs {
    /// The fleet inventory.
    pub fleet: PathBuf,
    /// Output directory.
    #[arg(long, short, value_name = "DIR")]
    pub out: PathBuf,
    /// The known_hosts a build wrote (`mmbuild build --out BUILD` writes BUILD/known_hosts).
    #[arg(long, value_name = "FILE")]
    pub known_hosts: PathBuf,
    /// Only this node (repeatable); default: every node.
    #[arg(long = "node", value_name = "NAME")]
    pub nodes: Vec<String>,
}

#[derive(clap::Args)]
pub struct RegistrationsArgs {
    /// The fleet inventory.
    pub fleet: PathBuf,
    /// Output directory.
    #[arg(long, short, value_name = "DIR")]
    pub out: PathBuf,
    /// Only this node (repeatable); default: every node.
    #[arg(long = "node", value_name = "NAME")]
    pub nodes: Vec<String>,
    /// Only this project (repeatable); default: every hosted project.
    #[arg(long = "project", value_name = "NAME")]
    pub projects: Vec<String>,
    /// Probe the nodes and mark applications whose node does not serve the project yet.
    #[arg(long)]
    pub check: bool,
    /// Probe NODE at HOST instead of its inventory addresses (repeatable; every address a name
    /// resolves to), e.g. ci=127.0.0.1 or ci=[::1]. The same grammar as plan/apply's --connect;
    /// a :PORT is refused here, the probe's ports are --http-port, --https-port and --rsync-port.
    #[arg(long, value_name = "NODE=HOST[:PORT]", requires = "check")]
    pub connect: Vec<crate::day2::remote::Connect>,
    /// HTTP port the probe connects to.
    #[arg(long, default_value_t = 80, requires = "check")]
    pub http_port: u16,
    /// HTTPS port the probe connects to (fleets with https = true).
    #[arg(long, default_value_t = 443, requires = "check")]
    pub https_port: u16,
    /// CA certificates for the HTTPS probe instead of the system's.
    #[arg(long, value_name = "FILE", requires = "check")]
    pub cacert: Option<PathBuf>,
    /// rsync daemon port the probe connects to.
    #[arg(long, default_value_t = 873, requires = "check")]
    pub rsync_port: u16,
    /// Seconds before a probe connection gives up.
    #[arg(long, default_value_t = 10, requires = "check")]
    pub timeout: u64,
    /// Print the applications (and the preflight's findings) as JSON.
    #[arg(long)]
    pub json: bool,
}
