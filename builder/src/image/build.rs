//! `mmbuild build`: per-node disk images and install media (kickstart + OEMDRV stick) with checksums and a manifest.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use mmconfig::NodeConfig;

use crate::image::base::{self, Base, BaseOptions};
use crate::image::hostkeys::{self, HostKey};
use crate::image::manifest::{self, Artifact};
use crate::inventory::fleet::{self, Fleet};
use crate::{image::diskimage, image::reproducible, ship::kickstart, ship::oemdrv, ship::stick};
use hostkit::atomic;
use hostkit::cmd::{require_tool, run};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ImageFormat {
    /// Sparse raw disk image (write it with dd or bmaptool).
    Raw,
    /// qcow2 (qemu-img convert of the raw image).
    Qcow2,
}

#[derive(Debug, Clone)]
pub struct BuildOptions {
    pub fleet: PathBuf,
    pub data: Option<PathBuf>,
    pub out: PathBuf,
    pub nodes: Vec<String>,
    pub format: ImageFormat,
    pub kickstart_only: bool,
    /// Also DIR/<node>/install.img (raw format only).
    pub install_stick: bool,
    pub jobs: usize,
    pub cache: PathBuf,
    pub node_bin: PathBuf,
    /// The fleet's host key state directory; None: [`hostkeys::default_state_dir`].
    pub state: Option<PathBuf>,
    /// Nodes whose host key is replaced by a new one on purpose.
    pub new_host_keys: Vec<String>,
    /// A `packages.lock` of an earlier build: install exactly those versions.
    pub pin_packages: Option<PathBuf>,
    pub quiet: bool,
}

/// Why a build stopped: bad input (exit 1) or a failed step (the error).
pub enum Outcome {
    Built(Vec<Artifact>),
    InvalidInput(String),
}

/// Default cache: `$MM_CACHE`, else /var/cache/micromirror.
pub fn default_cache() -> PathBuf {
    std::env::var_os("MM_CACHE").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/var/cache/micromirror"))
}

/// Default on-node binaries: `$MM_NODE_BIN`, else the workspace's musl release directory.
pub fn default_node_bin() -> PathBuf {
    std::env::var_os("MM_NODE_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/x86_64-unknown-linux-musl/release"))
}

pub fn run_build(opts: &BuildOptions) -> Result<Outcome> {
    let fleet = match fleet::load(&opts.fleet, opts.data.as_deref()) {
        Ok(f) => f,
        Err(diags) => return Ok(Outcome::InvalidInput(diags.to_string())),
    };
    let selected = match select(&fleet, &opts.nodes) {
        Ok(s) => s,
        Err(msg) => return Ok(Outcome::InvalidInput(msg)),
    };
    if let Err(msg) = select(&fleet, &opts.new_host_keys) {
        return Ok(Outcome::InvalidInput(msg.replace("--node", "--new-host-keys")));
    }
    std::fs::create_dir_all(&opts.out).with_context(|| format!("creating {}", opts.out.display()))?;
    let media = InstallMedia::load(opts, &fleet)?;
    // Every node of the fleet gets its key now, so known_hosts always lists the whole fleet.
    let state = opts.state.clone().unwrap_or_else(|| hostkeys::default_state_dir(&fleet.name));
    let published = hostkeys::Published::read(&opts.out, &fleet.name, &fleet.nodes);
    let (keys, report) = hostkeys::ensure(&state, &opts.out, &fleet.nodes, &published, &opts.new_host_keys)?;
    if !opts.quiet {
        for k in &report.created {
            eprintln!("mmbuild: new host key for node {k} in {}", state.display());
        }
    }
    for k in &report.rotated {
        eprintln!("mmbuild: host key of node {k} replaced as asked (--new-host-keys): update every known_hosts that trusts it");
    }
    if opts.format == ImageFormat::Qcow2 {
        require_tool("qemu-img", "qemu-utils")?;
        if opts.install_stick {
            return Ok(Outcome::InvalidInput("--install-stick carries the raw disk.img: build with --format raw\n".into()));
        }
    }
    let pins = match &opts.pin_packages {
        Some(p) => {
            let text = std::fs::read_to_string(p).with_context(|| format!("reading --pin-packages {}", p.display()))?;
            match reproducible::parse_pins(&text, &p.display().to_string()) {
                Ok(pins) => pins,
                Err(e) => return Ok(Outcome::InvalidInput(format!("{e:#}"))),
            }
        }
        None => Vec::new(),
    };
    let base = if opts.kickstart_only {
        None
    } else {
        Some(base::ensure_base(&BaseOptions {
            cache_dir: opts.cache.clone(),
            data_dir: fleet.data_dir.clone(),
            node_bin_dir: opts.node_bin.clone(),
            fleet_modules: fleet_kernel_modules(&fleet),
            pins,
            quiet: opts.quiet,
        })?)
    };

    let started = Instant::now();
    let bar = progress(opts.quiet, selected.len());
    let results = hostkit::pool::map(&selected, opts.jobs, |cfg| {
        let t = Instant::now();
        let r = build_node(opts, base.as_ref(), &media, cfg, &keys[&cfg.node.name]).with_context(|| format!("node {}", cfg.node.name));
        match &bar {
            Some(b) => {
                b.set_message(cfg.node.name.clone());
                b.inc(1);
            }
            None if !opts.quiet => eprintln!("mmbuild: node {} done in {:.2} s", cfg.node.name, t.elapsed().as_secs_f64()),
            None => {}
        }
        r
    });
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let mut artifacts = Vec::new();
    for r in results {
        artifacts.extend(r?);
    }
    let all: Vec<&NodeConfig> = fleet.nodes.iter().collect();
    atomic::write(&opts.out.join(hostkeys::KNOWN_HOSTS), hostkeys::render_known_hosts(&all, &keys).as_bytes())?;
    artifacts.push(Artifact::describe(&opts.out, hostkeys::KNOWN_HOSTS, "", "known-hosts", None)?);
    let packages = base.as_ref().map(|b| b.packages.clone()).unwrap_or_default();
    if !packages.is_empty() {
        let lock: String = packages.iter().map(|p| format!("{p}\n")).collect();
        atomic::write(&opts.out.join(base::PACKAGES_LOCK), lock.as_bytes())?;
        artifacts.push(Artifact::describe(&opts.out, base::PACKAGES_LOCK, "", "package-lock", base.as_ref().map(|b| b.id.as_str()))?);
    }
    if let Some(b) = &base {
        artifacts.extend(os_payload(&opts.out, b)?);
    }
    let fingerprints = keys.iter().map(|(n, k)| (n.clone(), k.fingerprint())).collect();
    let image_version = base.as_ref().map(|b| b.image_version.as_str());
    manifest::update(&opts.out, &fleet.name, artifacts.clone(), &fingerprints, &packages, image_version)?;
    if !opts.quiet {
        eprintln!(
            "mmbuild: {} node(s) in {:.2} s; outputs, SHA256SUMS and manifest.json in {}",
            selected.len(),
            started.elapsed().as_secs_f64(),
            opts.out.display()
        );
    }
    Ok(Outcome::Built(artifacts))
}

/// What `mmbuild apply` writes into a live node's other slot: the root filesystem and both
/// slots' UKIs, under `os/` (hashed once per base: the cache keeps each file's SHA-256 beside it).
fn os_payload(out: &Path, base: &Base) -> Result<Vec<Artifact>> {
    let files = [(&base.root_img, OS_ROOT, "os-root"), (&base.ukis[0], OS_UKI_A, "os-uki-a"), (&base.ukis[1], OS_UKI_B, "os-uki-b")];
    let mut artifacts = Vec::new();
    for (src, rel, kind) in files {
        let sha = cached_sha256(src)?;
        let dest = out.join(rel);
        let fresh = std::fs::metadata(&dest).is_ok_and(|m| m.len() == std::fs::metadata(src).map(|s| s.len()).unwrap_or(0))
            && manifest::read(out).is_ok_and(|m| m.artifacts.iter().any(|a| a.path == rel && a.sha256 == sha));
        if !fresh {
            if let Some(dir) = dest.parent() {
                std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            }
            let len = std::fs::metadata(src).with_context(|| format!("reading {}", src.display()))?.len();
            atomic::write_with_mode(&dest, 0o644, |f| {
                f.set_len(len).context("sizing the copy")?;
                diskimage::copy_sparse(src, f, 0)
            })?;
        }
        artifacts.push(Artifact::with_sha256(out, rel, "", kind, Some(&base.id), sha)?);
    }
    Ok(artifacts)
}

/// Where a build keeps the OS payload, relative to its output directory.
pub const OS_ROOT: &str = "os/root.img";
pub const OS_UKI_A: &str = "os/uki-a.efi";
pub const OS_UKI_B: &str = "os/uki-b.efi";

/// The SHA-256 of a file in the (immutable) base cache, computed once and kept as `FILE.sha256`.
fn cached_sha256(path: &Path) -> Result<String> {
    let side = PathBuf::from(format!("{}.sha256", path.display()));
    if let Ok(text) = std::fs::read_to_string(&side) {
        let text = text.trim();
        if text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(text.to_string());
        }
    }
    let sha = manifest::sha256_file(path)?;
    atomic::write(&side, format!("{sha}\n").as_bytes())?;
    Ok(sha)
}

/// Kernel modules of every hardware model the fleet's nodes use, wherever its file was found
/// (beside the fleet file or built in): the base's initramfs carries them.
pub fn fleet_kernel_modules(fleet: &Fleet) -> std::collections::BTreeSet<String> {
    fleet.nodes.iter().flat_map(|n| n.hardware.kernel_modules.iter().cloned()).collect()
}

fn select<'a>(fleet: &'a Fleet, names: &[String]) -> std::result::Result<Vec<&'a NodeConfig>, String> {
    if names.is_empty() {
        return Ok(fleet.nodes.iter().collect());
    }
    let mut out = Vec::new();
    for n in names {
        match fleet.node(n) {
            Some(cfg) => out.push(cfg),
            None => {
                let known: Vec<&str> = fleet.nodes.iter().map(|c| c.node.name.as_str()).collect();
                return Err(format!("{}: error: --node {n}: no such node (nodes: {})", fleet.path.display(), known.join(", ")));
            }
        }
    }
    Ok(out)
}

fn progress(quiet: bool, n: usize) -> Option<ProgressBar> {
    use std::io::IsTerminal;
    if quiet || !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = ProgressBar::new(n as u64);
    bar.set_style(ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} nodes {msg}").expect("valid template"));
    Some(bar)
}

/// What every node's install stick shares: the kickstart templates, the on-node binaries and
/// the unit files, read once per build.
struct InstallMedia {
    fleet: String,
    templates: PathBuf,
    /// (file name on the stick, contents): binaries, then units.
    shared: Vec<(String, Vec<u8>)>,
}

impl InstallMedia {
    fn load(opts: &BuildOptions, fleet: &Fleet) -> Result<InstallMedia> {
        let mut shared = Vec::new();
        for bin in base::NODE_BINARIES {
            let p = base::node_binary(&opts.node_bin, bin, " (the OEMDRV stick carries it)")?;
            shared.push((bin.to_string(), std::fs::read(&p).with_context(|| format!("reading {}", p.display()))?));
        }
        let units = fleet.data_dir.join("overlays/rootfs/etc/systemd/system");
        for unit in kickstart::UNITS {
            let p = units.join(unit);
            shared.push((unit.to_string(), std::fs::read(&p).with_context(|| format!("reading unit file {}", p.display()))?));
        }
        Ok(InstallMedia { fleet: fleet.name.clone(), templates: kickstart::templates_dir(&fleet.data_dir), shared })
    }
}

fn build_node(opts: &BuildOptions, base: Option<&Base>, media: &InstallMedia, cfg: &NodeConfig, key: &HostKey) -> Result<Vec<Artifact>> {
    let node = &cfg.node.name;
    let dir = opts.out.join(node);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut artifacts = Vec::new();

    // Kickstart and its OEMDRV stick: for every node, with or without a base.
    let ks = kickstart::render_kickstart(cfg, &media.templates)?;
    let ks_rel = format!("{node}/ks.cfg");
    atomic::write(&opts.out.join(&ks_rel), ks.as_bytes())?;
    artifacts.push(Artifact::describe(&opts.out, &ks_rel, node, "kickstart", None)?);
    let node_toml = cfg.to_toml();
    let key_pub = key.pub_file(&cfg.node.fqdn);
    let mut files: Vec<(&str, &[u8])> = vec![
        ("ks.cfg", ks.as_bytes()),
        (mmconfig::NODE_CONFIG_FILE, node_toml.as_bytes()),
        (mmconfig::HOST_KEY_FILE, &key.private),
        (mmconfig::HOST_KEY_PUB_FILE, key_pub.as_bytes()),
    ];
    files.extend(media.shared.iter().map(|(n, d)| (n.as_str(), d.as_slice())));
    let img_rel = format!("{node}/oemdrv.img");
    // The stick and the disk image carry the node's private host key: owner-only files.
    atomic::write_with_mode(&opts.out.join(&img_rel), 0o600, |f| oemdrv::write(f, &media.fleet, node, &files))
        .with_context(|| format!("writing {img_rel}"))?;
    artifacts.push(Artifact::describe(&opts.out, &img_rel, node, "oemdrv", None)?);

    if let Some(base) = base {
        match opts.format {
            ImageFormat::Raw => {
                let rel = format!("{node}/disk.img");
                let sha = atomic::write_with_mode(&opts.out.join(&rel), 0o600, |f| diskimage::write_image(f, base, cfg, key))?;
                artifacts.push(Artifact::with_sha256(&opts.out, &rel, node, "disk-image", Some(&base.id), sha.clone())?);
                if opts.install_stick {
                    let stick = format!("{node}/install.img");
                    atomic::write_with_mode(&opts.out.join(&stick), 0o600, |f| {
                        stick::write_stick(f, base, cfg, &opts.out.join(&rel), &sha)
                    })
                    .with_context(|| format!("writing {stick}"))?;
                    artifacts.push(Artifact::describe(&opts.out, &stick, node, "install-stick", Some(&base.id))?);
                }
            }
            ImageFormat::Qcow2 => {
                let rel = format!("{node}/disk.qcow2");
                let raw = tempfile::Builder::new().prefix(".disk.").suffix(".raw").tempfile_in(&dir)?;
                // The raw image's hash is not an artifact's: the qcow2 file is hashed below.
                diskimage::write_image(&mut raw.reopen()?, base, cfg, key)?;
                atomic::write_with_mode(&opts.out.join(&rel), 0o600, |f| {
                    let tmp = dir.join(".disk.qcow2.part");
                    run(Command::new("qemu-img").args(["convert", "-q", "-f", "raw", "-O", "qcow2"]).arg(raw.path()).arg(&tmp))?;
                    let mut src = std::fs::File::open(&tmp)?;
                    std::io::copy(&mut src, f)?;
                    std::fs::remove_file(&tmp)?;
                    Ok(())
                })?;
                artifacts.push(Artifact::describe(&opts.out, &rel, node, "disk-image", Some(&base.id))?);
            }
        }
    }
    Ok(artifacts)
}
