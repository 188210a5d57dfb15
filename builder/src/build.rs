//! `mmbuild build`: per-node disk images (and install media) with checksums and a manifest.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use mmconfig::NodeConfig;

use crate::base::{self, Base, BaseOptions};
use crate::fleet::{self, Fleet};
use crate::hostcmd::{require_tool, run};
use crate::manifest::{self, Artifact};
use crate::{atomic, diskimage};

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
    pub jobs: usize,
    pub cache: PathBuf,
    pub node_bin: PathBuf,
    pub quiet: bool,
}

/// Why a build stopped: bad input (exit 1) or a failed step (the error).
pub enum Outcome {
    Built(Vec<Artifact>),
    InvalidInput(String),
}

/// Default cache: `$MM_CACHE`, else /var/cache/micromirror.
pub fn default_cache() -> PathBuf {
    std::env::var_os("MM_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/micromirror"))
}

/// Default on-node binaries: `$MM_NODE_BIN`, else the workspace's musl release directory.
pub fn default_node_bin() -> PathBuf {
    std::env::var_os("MM_NODE_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../target/x86_64-unknown-linux-musl/release")
        })
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
    std::fs::create_dir_all(&opts.out)
        .with_context(|| format!("creating {}", opts.out.display()))?;
    if opts.format == ImageFormat::Qcow2 {
        require_tool("qemu-img", "qemu-utils")?;
    }
    let base = if opts.kickstart_only {
        None
    } else {
        Some(base::ensure_base(&BaseOptions {
            cache_dir: opts.cache.clone(),
            data_dir: fleet.data_dir.clone(),
            node_bin_dir: opts.node_bin.clone(),
            quiet: opts.quiet,
        })?)
    };

    let started = Instant::now();
    let bar = progress(opts.quiet, selected.len());
    let results: Mutex<Vec<Result<Vec<Artifact>>>> = Mutex::new(Vec::new());
    let queue = Mutex::new(selected.iter());
    std::thread::scope(|s| {
        for _ in 0..opts.jobs.max(1).min(selected.len().max(1)) {
            s.spawn(|| loop {
                let Some(cfg) = queue.lock().expect("queue lock").next() else {
                    break;
                };
                let t = Instant::now();
                let r = build_node(opts, base.as_ref(), cfg)
                    .with_context(|| format!("node {}", cfg.node.name));
                match &bar {
                    Some(b) => {
                        b.set_message(cfg.node.name.clone());
                        b.inc(1);
                    }
                    None if !opts.quiet => eprintln!(
                        "mmbuild: node {} done in {:.2} s",
                        cfg.node.name,
                        t.elapsed().as_secs_f64()
                    ),
                    None => {}
                }
                results.lock().expect("results lock").push(r);
            });
        }
    });
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let mut artifacts = Vec::new();
    for r in results.into_inner().expect("results lock") {
        artifacts.extend(r?);
    }
    manifest::update(&opts.out, &fleet.name, artifacts.clone())?;
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

fn select<'a>(
    fleet: &'a Fleet,
    names: &[String],
) -> std::result::Result<Vec<&'a NodeConfig>, String> {
    if names.is_empty() {
        return Ok(fleet.nodes.iter().collect());
    }
    let mut out = Vec::new();
    for n in names {
        match fleet.node(n) {
            Some(cfg) => out.push(cfg),
            None => {
                let known: Vec<&str> = fleet.nodes.iter().map(|c| c.node.name.as_str()).collect();
                return Err(format!(
                    "{}: error: --node {n}: no such node (nodes: {})",
                    fleet.path.display(),
                    known.join(", ")
                ));
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
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} nodes {msg}",
        )
        .expect("valid template"),
    );
    Some(bar)
}

fn build_node(opts: &BuildOptions, base: Option<&Base>, cfg: &NodeConfig) -> Result<Vec<Artifact>> {
    let node = &cfg.node.name;
    let dir = opts.out.join(node);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut artifacts = Vec::new();
    if let Some(base) = base {
        let rel = match opts.format {
            ImageFormat::Raw => {
                let rel = format!("{node}/disk.img");
                atomic::write_with(&opts.out.join(&rel), |f| {
                    diskimage::write_image(f, base, cfg).map(|_| ())
                })?;
                rel
            }
            ImageFormat::Qcow2 => {
                let rel = format!("{node}/disk.qcow2");
                let raw = tempfile::Builder::new()
                    .prefix(".disk.")
                    .suffix(".raw")
                    .tempfile_in(&dir)?;
                diskimage::write_image(&mut raw.reopen()?, base, cfg)?;
                atomic::write_with(&opts.out.join(&rel), |f| {
                    let tmp = dir.join(".disk.qcow2.part");
                    run(Command::new("qemu-img")
                        .args(["convert", "-q", "-f", "raw", "-O", "qcow2"])
                        .arg(raw.path())
                        .arg(&tmp))?;
                    let mut src = std::fs::File::open(&tmp)?;
                    std::io::copy(&mut src, f)?;
                    std::fs::remove_file(&tmp)?;
                    Ok(())
                })?;
                rel
            }
        };
        artifacts.push(Artifact::describe(
            &opts.out,
            &rel,
            node,
            "disk-image",
            Some(&base.id),
        )?);
    }
    if artifacts.is_empty() {
        bail!("nothing to build for node {node}: --kickstart-only needs the kickstart producer, which this version does not have yet");
    }
    Ok(artifacts)
}
