//! The common base OS (root filesystem image, UKI, ESP), built once and cached by content hash.
//!
//! Two cache layers, so a change to on-node code does not rebuild the OS:
//! - `os/<hash>`: the Debian root from `mmdebstrap` (the release, its `-updates` and `-security`
//!   suites), trimmed (docs, locales, unused kernel modules), keyed by the archives, the package
//!   list, the module keep-list and the recipe;
//! - `base/<hash>`: root ext4 image + initramfs + UKI + ESP image, keyed by the `os` hash, the
//!   `overlays/rootfs` tree, the on-node binaries, the initramfs recipe and the kernel cmdline.
//!
//! Every cache entry is built in a temporary directory and renamed into place when complete, so
//! a killed build never leaves an entry that a later build would reuse.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

use crate::image::fat::FatFile;
use crate::{image::esp, image::initramfs, image::reproducible, image::uki};
use hostkit::apt::Archives;
use hostkit::cmd::{require_tool, run};
use hostkit::ids::{hex, uuid_from};
use mmconfig::os::{Entry, Slot};
use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

/// Bump when the recipe (commands, trimming) changes in a way the inputs do not show.
const OS_RECIPE: &str = "os-recipe-7";
const BASE_RECIPE: &str = "base-recipe-9";
/// systemd-boot (systemd-boot-efi): counts an entry's tries and falls back to the other slot.
pub const BOOT_MANAGER: &str = "/usr/lib/systemd/boot/efi/systemd-bootx64.efi";
/// systemd-boot's configuration, under overlays/.
const LOADER_CONF: &str = "boot/loader.conf";
/// The Debian release; the base also takes its `-updates` and `-security` suites.
const RELEASE: &str = "bookworm";
pub use mmconfig::ROOT_LABEL;
/// 2025-01-01T00:00:00Z: timestamps inside the images when SOURCE_DATE_EPOCH is not set.
const DEFAULT_EPOCH: u64 = 1_735_689_600;

/// Inputs of a base build.
#[derive(Debug, Clone)]
pub struct BaseOptions {
    /// Cache root, e.g. /var/cache/micromirror (outside the repository).
    pub cache_dir: PathBuf,
    /// Data directory holding overlays/ (and hardware/, whose kernel modules go into the initramfs).
    pub data_dir: PathBuf,
    /// Directory holding the static on-node binaries mm-firstboot and mm-sync.
    pub node_bin_dir: PathBuf,
    /// Kernel modules of the hardware models the fleet's nodes resolved to, wherever their files
    /// live (beside the fleet file too): the initramfs must carry what the root disk needs.
    pub fleet_modules: BTreeSet<String>,
    /// Exact package versions to install (`--pin-packages`, the `packages.lock` of an earlier
    /// build); empty: whatever the mirror has.
    pub pins: Vec<(String, String)>,
    pub quiet: bool,
}

/// A built base, ready to be stamped into per-node images.
#[derive(Debug, Clone)]
pub struct Base {
    /// Hex content hash of everything that went into the base.
    pub id: String,
    pub dir: PathBuf,
    /// ext4 filesystem image of the root (label `mmroot`).
    pub root_img: PathBuf,
    /// The unified kernel image of each slot (`root=PARTLABEL=` of that slot), indexed A, B.
    pub ukis: [PathBuf; 2],
    /// The ESP as a FAT32 volume image: systemd-boot, its loader.conf and slot A's UKI as the
    /// blessed entry; identical for every node.
    pub esp_img: PathBuf,
    /// The install stick's ESP: the same kernel and initramfs, told to install (`mm.install`).
    pub install_esp_img: PathBuf,
    /// Whether this call built it (false: reused from the cache).
    pub built: bool,
    /// `name=version` of every package in the OS tree, sorted.
    pub packages: Vec<String>,
    /// The image version (see [`mmconfig::image`]), also in the root's os-release.
    pub image_version: String,
}

pub const NODE_BINARIES: [&str; 2] = ["mm-firstboot", "mm-sync"];
/// The install stick's installer: in the initramfs only (from the same --node-bin directory).
pub const INSTALLER: &str = "mm-install";

/// The on-node binary `bin` in the --node-bin directory `dir`, or how to build it; `carried` says
/// what else carries it, for the message.
pub fn node_binary(dir: &Path, bin: &str, carried: &str) -> Result<PathBuf> {
    let p = dir.join(bin);
    if !p.is_file() {
        bail!(
            "on-node binary {} is missing{carried}: build it with `cargo build --release -p mm-firstboot -p mm-sync --target x86_64-unknown-linux-musl` or point --node-bin at it",
            p.display()
        );
    }
    Ok(p)
}

pub fn source_date_epoch() -> u64 {
    std::env::var("SOURCE_DATE_EPOCH").ok().and_then(|s| s.parse().ok()).unwrap_or(DEFAULT_EPOCH)
}

fn log(quiet: bool, msg: &str) {
    if !quiet {
        eprintln!("mmbuild: {msg}");
    }
}

/// Hold `<entry>.lock` beside a cache entry while it is checked and built: builds sharing a cache
/// (two operators, the parallel test lanes) build each entry once, and the later one reuses it
/// instead of replacing a tree the other is reading. Released when dropped, or when the process dies.
fn lock_entry(entry: &Path, quiet: bool) -> Result<Flock<File>> {
    let parent = entry.parent().expect("a cache entry has a parent");
    fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    let path = entry.with_extension("lock");
    let f =
        OpenOptions::new().create(true).truncate(false).write(true).open(&path).with_context(|| format!("opening {}", path.display()))?;
    match Flock::lock(f, FlockArg::LockExclusiveNonblock) {
        Ok(held) => Ok(held),
        Err((f, Errno::EWOULDBLOCK)) => {
            log(quiet, &format!("waiting for another build of {} to finish", entry.display()));
            Flock::lock(f, FlockArg::LockExclusive).map_err(|(_, e)| e).with_context(|| format!("locking {}", path.display()))
        }
        Err((_, e)) => Err(e).with_context(|| format!("locking {}", path.display())),
    }
}

/// Build the base, or reuse the cached one with the same content hash.
pub fn ensure_base(opts: &BaseOptions) -> Result<Base> {
    for (tool, pkg) in [("mmdebstrap", "mmdebstrap"), ("mkfs.ext4", "e2fsprogs"), ("objcopy", "binutils"), ("zstd", "zstd")] {
        require_tool(tool, pkg)?;
    }
    require_tool(uki::STUB, "systemd-boot-efi")?;
    require_tool(BOOT_MANAGER, "systemd-boot-efi")?;
    for bin in NODE_BINARIES.iter().chain([&INSTALLER]) {
        node_binary(&opts.node_bin_dir, bin, "")?;
    }
    let overlays = opts.data_dir.join("overlays");
    let packages = read_list(&overlays.join("base/packages"))?;
    let keep = read_list(&overlays.join("base/modules-keep"))?;
    // The archives this machine's apt uses (the operator's choice), unless overridden.
    let archives = hostkit::apt::archives(RELEASE)?;
    let sources_path = overlays.join(SOURCES_TEMPLATE);
    let sources = fs::read_to_string(&sources_path).with_context(|| format!("reading {}", sources_path.display()))?;

    let mut h = Sha256::new();
    let pins: Vec<String> = opts.pins.iter().map(|(n, v)| format!("{n}={v}")).collect();
    let os_inputs = [OS_RECIPE, RELEASE, &archives.main, &archives.security, &sources, &packages.join("\n"), &keep.join("\n")];
    for part in os_inputs.iter().copied().chain([pins.join("\n").as_str()]) {
        h.update(part.as_bytes());
        h.update([0]);
    }
    let os_id = hex(&h.finalize());
    let os_dir = opts.cache_dir.join("os").join(&os_id[..16]);
    {
        // Held only while the tree is missing: a finished tree is never changed, so the bases
        // built on it need no lock of it.
        let _building = lock_entry(&os_dir, opts.quiet)?;
        if !os_dir.join("root").is_dir() {
            let t = Instant::now();
            log(
                opts.quiet,
                &format!("building the OS tree {} (mmdebstrap {RELEASE}, -updates, -security; {} packages)", &os_id[..16], packages.len()),
            );
            build_os(opts, &os_dir, &packages, &keep, &archives, &sources)?;
            log(opts.quiet, &format!("OS tree built in {:.1} s", t.elapsed().as_secs_f64()));
        }
    }
    let lock = os_dir.join(PACKAGES_LOCK);
    let installed: Vec<String> =
        fs::read_to_string(&lock).with_context(|| format!("reading {}", lock.display()))?.lines().map(String::from).collect();
    let newest_path = os_dir.join(NEWEST_PACKAGE_FILE);
    let newest: u64 = fs::read_to_string(&newest_path)
        .with_context(|| format!("reading {}", newest_path.display()))?
        .trim()
        .parse()
        .with_context(|| format!("{}: not a time", newest_path.display()))?;

    let mut hw_modules = hardware_modules(&opts.data_dir)?;
    hw_modules.extend(opts.fleet_modules.iter().cloned());
    // What the initramfs needs whatever the model: the install stick's USB path and efivarfs.
    hw_modules.extend(read_list(&overlays.join("initramfs/modules"))?);
    let cmdline_template = fs::read_to_string(overlays.join("base/cmdline")).context("reading overlays/base/cmdline")?;
    let cmdlines = Slot::ALL.map(|slot| render_cmdline(&cmdline_template, slot));
    let [cmdline_a, cmdline_b] = cmdlines;
    let cmdlines = [cmdline_a?, cmdline_b?];
    let loader_conf = overlays.join(LOADER_CONF);
    // The base is named after what the OS layer holds, not how it was asked for: a build pinned
    // to an earlier build's packages.lock resolves to the same set and so to the same base.
    let mut h = Sha256::new();
    for part in os_inputs.iter().copied().chain([installed.join("\n").as_str()]) {
        h.update(part.as_bytes());
        h.update([0]);
    }
    let os_content_id = hex(&h.finalize());
    let mut h = Sha256::new();
    h.update(BASE_RECIPE.as_bytes());
    h.update(os_content_id.as_bytes());
    h.update(source_date_epoch().to_le_bytes());
    for c in &cmdlines {
        h.update(c.trim().as_bytes());
        h.update([0]);
    }
    hash_file(&mut h, &loader_conf)?;
    hash_file(&mut h, Path::new(BOOT_MANAGER))?;
    h.update(hw_modules.iter().cloned().collect::<Vec<_>>().join(",").as_bytes());
    hash_file(&mut h, &overlays.join("initramfs/init"))?;
    hash_tree(&mut h, &overlays.join("rootfs"))?;
    for bin in NODE_BINARIES.iter().chain([&INSTALLER]) {
        hash_file(&mut h, &opts.node_bin_dir.join(bin))?;
    }
    let id = hex(&h.finalize());
    // The later of the newest package and the source's date: a base with newer packages or newer
    // code sorts after the one before it, which is how systemd-boot picks the newest slot.
    let image_version = mmconfig::image::version(newest.max(source_date_epoch()), &id);
    let dir = opts.cache_dir.join("base").join(&id[..16]);
    let base = Base {
        id: id.clone(),
        root_img: dir.join("root.ext4"),
        ukis: Slot::ALL.map(|slot| dir.join(slot_uki_name(slot))),
        esp_img: dir.join("esp.img"),
        install_esp_img: dir.join("esp-install.img"),
        dir: dir.clone(),
        built: false,
        packages: installed,
        image_version: image_version.clone(),
    };
    let _lock = lock_entry(&dir, opts.quiet)?;
    if dir.join("complete").is_file() {
        log(opts.quiet, &format!("reusing base {} from {}", &id[..16], dir.display()));
        return Ok(base);
    }
    let t = Instant::now();
    log(opts.quiet, &format!("building base {}", &id[..16]));
    let parent = opts.cache_dir.join("base");
    fs::create_dir_all(&parent).with_context(|| format!("creating {}", parent.display()))?;
    let tmp = tempfile::Builder::new().prefix(".build-").tempdir_in(&parent).context("creating a build directory")?;
    build_base(opts, &os_dir.join("root"), tmp.path(), &cmdlines, &loader_conf, &hw_modules, &id, &image_version)?;
    fs::write(tmp.path().join("complete"), format!("{id}\n"))?;
    let tmp = tmp.keep();
    if dir.exists() {
        fs::remove_dir_all(&dir).with_context(|| format!("removing the incomplete {}", dir.display()))?;
    }
    fs::rename(&tmp, &dir).with_context(|| format!("moving the base into {}", dir.display()))?;
    log(opts.quiet, &format!("base built in {:.1} s", t.elapsed().as_secs_f64()));
    Ok(Base { built: true, ..base })
}

/// The OS layer's list of installed packages (`name=version`), also written to build outputs.
pub const PACKAGES_LOCK: &str = "packages.lock";
/// The OS layer's newest package file time (Unix seconds), the dated part of the image version.
const NEWEST_PACKAGE_FILE: &str = "newest-package";
/// The node's apt sources (deb822), under overlays/.
const SOURCES_TEMPLATE: &str = "base/debian.sources.hbs";
const NODE_SOURCES: &str = "etc/apt/sources.list.d/debian.sources";

fn build_os(opts: &BaseOptions, os_dir: &Path, packages: &[String], keep: &[String], archives: &Archives, sources: &str) -> Result<()> {
    let parent = os_dir.parent().expect("os dir has a parent");
    fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    let debs = opts.cache_dir.join("debs");
    fs::create_dir_all(&debs)?;
    let tmp = tempfile::Builder::new().prefix(".build-").tempdir_in(parent).context("creating a build directory")?;
    let root = tmp.path().join("root");
    // Keep the downloaded .debs outside the tree so an input change does not re-download.
    let debs_q = shell_quote(&debs.display().to_string());
    let mut cmd = Command::new("mmdebstrap");
    if !opts.pins.is_empty() {
        // apt preferences for the build only: the node must take its security updates later.
        let prefs = tmp.path().join("pins.pref");
        fs::write(&prefs, reproducible::apt_preferences(&opts.pins))?;
        let prefs_q = shell_quote(&prefs.display().to_string());
        cmd.arg(format!("--setup-hook=mkdir -p \"$1/etc/apt/preferences.d\" && cp {prefs_q} \"$1/etc/apt/preferences.d/mm-pins.pref\""));
        cmd.arg("--customize-hook=rm -f \"$1/etc/apt/preferences.d/mm-pins.pref\"");
    }
    cmd.arg("--variant=minbase")
        .arg(format!("--include={}", packages.join(",")))
        .arg("--aptopt=Acquire::Languages \"none\"")
        .arg("--dpkgopt=path-exclude=/usr/share/doc/*")
        .arg("--dpkgopt=path-include=/usr/share/doc/*/copyright")
        .arg("--dpkgopt=path-exclude=/usr/share/man/*")
        .arg("--dpkgopt=path-exclude=/usr/share/info/*")
        .arg("--dpkgopt=path-exclude=/usr/share/locale/*")
        .arg("--dpkgopt=path-include=/usr/share/locale/locale.alias")
        .arg(format!("--setup-hook=mkdir -p \"$1/var/cache/apt/archives\" && find {debs_q} -name '*.deb' -exec cp -t \"$1/var/cache/apt/archives/\" {{}} +"))
        // Debian's own initramfs is never booted (the UKI carries ours): skip building it.
        .arg("--essential-hook=chroot \"$1\" dpkg-divert --quiet --local --rename --add /usr/sbin/update-initramfs && ln -sf /bin/true \"$1/usr/sbin/update-initramfs\"")
        .arg(format!("--customize-hook=find \"$1/var/cache/apt/archives\" -name '*.deb' -exec cp -n -t {debs_q} {{}} +"))
        .arg(RELEASE)
        .arg(&root)
        .args(build_sources(archives))
        .env("SOURCE_DATE_EPOCH", source_date_epoch().to_string());
    run(&mut cmd).context("building the Debian root with mmdebstrap")?;
    trim(&root, keep)?;
    remove_leftovers(&root)?;
    // mmdebstrap left its one-line sources.list; the node gets Debian's deb822 form.
    fs::remove_file(root.join("etc/apt/sources.list")).context("removing mmdebstrap's /etc/apt/sources.list")?;
    hostkit::atomic::write(&root.join(NODE_SOURCES), render_sources(sources, archives)?.as_bytes())?;
    let newest = reproducible::newest_package_file(&root)?;
    fs::write(tmp.path().join(NEWEST_PACKAGE_FILE), format!("{newest}\n"))?;
    let installed = reproducible::installed_packages(&root)?;
    let unmet = reproducible::unmet_pins(&opts.pins, &installed);
    if !unmet.is_empty() {
        bail!(
            "--pin-packages: the archives did not give the pinned versions (point MM_DEBIAN_MIRROR and MM_DEBIAN_SECURITY_MIRROR at snapshots that have them):\n  {}",
            unmet.join("\n  ")
        );
    }
    fs::write(tmp.path().join(PACKAGES_LOCK), installed.iter().map(|p| format!("{p}\n")).collect::<String>())?;
    fs::rename(tmp.keep(), os_dir).with_context(|| format!("moving the OS tree into {}", os_dir.display()))?;
    Ok(())
}

/// Remove what a mirror appliance never uses; keep the root lean.
fn trim(root: &Path, keep: &[String]) -> Result<()> {
    for dir in ["boot/initrd.img", "var/cache/apt/archives", "var/lib/apt/lists", "usr/share/doc", "usr/share/man", "usr/share/info"] {
        let p = root.join(dir);
        let parent = p.parent().unwrap().to_path_buf();
        let stem = p.file_name().unwrap().to_string_lossy().into_owned();
        for entry in fs::read_dir(&parent).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name == stem || (stem == "initrd.img" && name.starts_with("initrd.img")) {
                let path = entry.path();
                if path.is_dir() {
                    // Keep the directory itself (apt expects it), empty it.
                    for e in fs::read_dir(&path)?.flatten() {
                        let ep = e.path();
                        if ep.file_name().is_some_and(|n| n == "partial" || n == "lock") {
                            continue;
                        }
                        if ep.is_dir() {
                            fs::remove_dir_all(&ep)?
                        } else {
                            fs::remove_file(&ep)?
                        }
                    }
                } else {
                    fs::remove_file(&path)?;
                }
            }
        }
    }
    let kver = kernel_version(root)?;
    let moddir = root.join("usr/lib/modules").join(&kver);
    let kernel_dir = moddir.join("kernel");
    let deps = fs::read_to_string(moddir.join("modules.dep")).context("reading modules.dep")?;
    let kept = modules_to_keep(&deps, keep);
    trim_modules(&kernel_dir, &kernel_dir, &|rel| kept.contains(rel))?;
    run(Command::new("chroot").arg(root).args(["depmod", "-a", &kver])).context("regenerating modules.dep")?;
    // An empty machine-id makes systemd treat the first boot as first boot on every node.
    fs::write(root.join("etc/machine-id"), b"")?;
    Ok(())
}

/// The modules (paths under `kernel/`) the keep list selects, plus every module they need
/// (transitively, from the untrimmed `modules.dep`), as mkosi resolves its module includes: a kept
/// module must load, and usbcore without usb-common once left every USB stick unreadable.
/// A module the list refuses (its last matching line is a `!` line) is never kept, and neither is
/// any module that needs it: `net/*` kept batman-adv, which brought back cfg80211, which
/// systemd-networkd's nl80211 query then loaded on every boot to print regulatory.db failures.
fn modules_to_keep(deps: &str, keep: &[String]) -> BTreeSet<String> {
    let under_kernel = |m: &str| m.strip_prefix("kernel/").map(String::from);
    let needs: BTreeMap<String, Vec<String>> = deps
        .lines()
        .filter_map(|l| l.split_once(':'))
        .filter_map(|(m, ds)| Some((under_kernel(m)?, ds.split_whitespace().filter_map(under_kernel).collect())))
        .collect();
    let mut loads: BTreeMap<&str, bool> = BTreeMap::new();
    fn loadable<'a>(m: &'a str, needs: &'a BTreeMap<String, Vec<String>>, keep: &[String], memo: &mut BTreeMap<&'a str, bool>) -> bool {
        if let Some(&known) = memo.get(m) {
            return known;
        }
        // Cycles do not occur in modules.dep; the provisional entry keeps a broken file finite.
        memo.insert(m, true);
        let ok = module_rule(m, keep) != Some(false) && needs.get(m).into_iter().flatten().all(|d| loadable(d, needs, keep, memo));
        memo.insert(m, ok);
        ok
    }
    let mut kept: BTreeSet<String> = BTreeSet::new();
    let mut todo: Vec<String> = needs.keys().filter(|m| module_kept(m, keep) && loadable(m, &needs, keep, &mut loads)).cloned().collect();
    while let Some(m) = todo.pop() {
        if kept.insert(m.clone()) {
            todo.extend(needs.get(&m).into_iter().flatten().filter(|d| !kept.contains(*d)).cloned());
        }
    }
    kept
}

/// Files whose contents depend on when and where the build ran (logs, caches, seeds), not on
/// the packages: removed, or emptied where something expects the file.
fn remove_leftovers(root: &Path) -> Result<()> {
    fn clear_logs(dir: &Path) -> Result<()> {
        for entry in fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
            let path = entry?.path();
            let meta = fs::symlink_metadata(&path)?;
            if meta.is_dir() {
                clear_logs(&path)?;
            } else if meta.is_file() && meta.len() > 0 {
                fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
            }
        }
        Ok(())
    }
    clear_logs(&root.join("var/log"))?;
    for dir in ["var/cache/man", "var/cache/apt", "var/cache/debconf", "var/lib/dpkg"] {
        let Ok(entries) = fs::read_dir(root.join(dir)) else { continue };
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            let stale = match dir {
                "var/cache/man" => true,
                "var/cache/apt" => name.ends_with(".bin"),
                _ => name.ends_with("-old"),
            };
            if stale {
                if path.is_dir() {
                    fs::remove_dir_all(&path)?
                } else {
                    fs::remove_file(&path)?
                }
            }
        }
    }
    for f in ["var/cache/ldconfig/aux-cache", "var/lib/systemd/random-seed", "var/lib/dbus/machine-id"] {
        match fs::remove_file(root.join(f)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e).with_context(|| format!("removing /{f}")),
            _ => {}
        }
    }
    // Copied from the build host by mmdebstrap; firstboot writes the node's own.
    let resolv = root.join("etc/resolv.conf");
    let _ = fs::remove_file(&resolv);
    fs::write(&resolv, b"")?;
    Ok(())
}

fn trim_modules(top: &Path, dir: &Path, kept: &dyn Fn(&str) -> bool) -> Result<()> {
    for entry in fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        let rel = path.strip_prefix(top).unwrap().to_string_lossy().into_owned();
        if path.is_dir() {
            trim_modules(top, &path, kept)?;
            if fs::read_dir(&path)?.next().is_none() {
                fs::remove_dir(&path)?;
            }
        } else if !kept(&rel) {
            fs::remove_file(&path)?;
        }
    }
    Ok(())
}

/// Keep-list semantics: the last matching line wins; `!glob` removes.
fn module_kept(rel: &str, keep: &[String]) -> bool {
    module_rule(rel, keep) == Some(true)
}

/// What the keep list says of a module: the last matching line wins; `Some(false)` when it is
/// a `!` line, `None` when no line matches.
fn module_rule(rel: &str, keep: &[String]) -> Option<bool> {
    let mut rule = None;
    for line in keep {
        let (negate, glob) = line.strip_prefix('!').map_or((false, line.as_str()), |g| (true, g));
        if mmconfig::disk::glob_match(glob, rel) {
            rule = Some(!negate);
        }
    }
    rule
}

pub fn kernel_version(root: &Path) -> Result<String> {
    let dir = root.join("usr/lib/modules");
    let mut versions: Vec<String> = fs::read_dir(&dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    versions.sort();
    versions.pop().with_context(|| format!("no kernel in {}", dir.display()))
}

/// Union of every hardware profile's kernel modules, plus what the root filesystem needs.
fn hardware_modules(data_dir: &Path) -> Result<BTreeSet<String>> {
    let mut mods: BTreeSet<String> = ["ext4", "crc32c_generic", "virtio_pci", "virtio_blk"].iter().map(|s| s.to_string()).collect();
    let dir = data_dir.join("hardware");
    for entry in fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "toml") {
            let text = fs::read_to_string(&path)?;
            let hw: mmconfig::Hardware = toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
            mods.extend(hw.kernel_modules);
        }
    }
    Ok(mods)
}

/// The apt sources of the build, one-line form as mmdebstrap takes them: the same archives and
/// suites the node's deb822 sources name.
fn build_sources(a: &Archives) -> [String; 3] {
    [
        format!("deb {} {RELEASE} main", a.main),
        format!("deb {} {RELEASE}-updates main", a.main),
        format!("deb {} {RELEASE}-security main", a.security),
    ]
}

/// overlays/base/debian.sources.hbs for `archives` (URIs checked free of whitespace by hostkit::apt).
fn render_sources(template: &str, archives: &Archives) -> Result<String> {
    let mut h = handlebars::Handlebars::new();
    h.set_strict_mode(true);
    h.register_escape_fn(handlebars::no_escape);
    h.render_template(template, &serde_json::json!({ "release": RELEASE, "main": archives.main, "security": archives.security }))
        .with_context(|| format!("rendering overlays/{SOURCES_TEMPLATE}"))
}

#[allow(clippy::too_many_arguments)]
fn build_base(
    opts: &BaseOptions,
    os_root: &Path,
    out: &Path,
    cmdlines: &[String; 2],
    loader_conf: &Path,
    modules: &BTreeSet<String>,
    id: &str,
    image_version: &str,
) -> Result<()> {
    let staging = out.join("root");
    run(Command::new("cp").args(["-a", "--reflink=auto"]).arg(os_root).arg(&staging)).context("copying the OS tree")?;
    let overlay = opts.data_dir.join("overlays/rootfs");
    if overlay.is_dir() {
        run(Command::new("cp").args(["-a", "--no-preserve=ownership"]).arg(format!("{}/.", overlay.display())).arg(&staging))
            .context("copying overlays/rootfs into the root")?;
    }
    remove_host_keys(&staging)?;
    // /etc/os-release links here; the UKI embeds it too.
    let os_release = staging.join("usr/lib/os-release");
    let mut text = fs::read_to_string(&os_release).with_context(|| format!("reading {}", os_release.display()))?;
    text.push_str(&mmconfig::image::os_release_lines(image_version));
    hostkit::atomic::write(&os_release, text.as_bytes())?;
    for bin in NODE_BINARIES {
        let dest = staging.join("usr/bin").join(bin);
        fs::copy(opts.node_bin_dir.join(bin), &dest).with_context(|| format!("installing {bin}"))?;
        fs::set_permissions(&dest, fs::Permissions::from_mode(0o755))?;
    }
    let epoch = source_date_epoch();
    run(Command::new("find").arg(&staging).args([
        "-newermt",
        &format!("@{epoch}"),
        "-exec",
        "touch",
        "-h",
        "-d",
        &format!("@{epoch}"),
        "{}",
        "+",
    ]))
    .context("clamping timestamps to SOURCE_DATE_EPOCH")?;

    let kver = kernel_version(&staging)?;
    let initrd = out.join("initrd.cpio.zst");
    let init = opts.data_dir.join("overlays/initramfs/init");
    initramfs::build(&staging, &kver, modules, &init, &opts.node_bin_dir.join(INSTALLER), &initrd)?;
    let kernel = staging.join("boot").join(format!("vmlinuz-{kver}"));
    let os_release = staging.join("usr/lib/os-release");
    for (slot, cmdline) in Slot::ALL.into_iter().zip(cmdlines) {
        uki::build(&kernel, &initrd, &os_release, cmdline.trim(), &out.join(slot_uki_name(slot)))?;
    }
    let entry = Entry { version: image_version.to_string(), slot: Slot::A, tries_left: None, tries_done: None };
    let boot_manager = fs::read(BOOT_MANAGER).with_context(|| format!("reading {BOOT_MANAGER}"))?;
    let loader = fs::read(loader_conf).with_context(|| format!("reading {}", loader_conf.display()))?;
    let uki_a = fs::read(out.join(slot_uki_name(Slot::A))).context("reading slot A's UKI")?;
    let entry_path = format!("{}/{}", mmconfig::os::ENTRY_DIR, entry.file_name());
    esp::build(
        &out.join("esp.img"),
        id,
        &[
            FatFile { path: esp::REMOVABLE_PATH, data: &boot_manager },
            FatFile { path: "loader/loader.conf", data: &loader },
            FatFile { path: &entry_path, data: &uki_a },
        ],
    )?;
    let install_uki = out.join("INSTALL.EFI");
    let install_cmdline = format!("{} {}", cmdlines[0].trim(), mmconfig::install::INSTALL_FLAG);
    uki::build(&kernel, &initrd, &os_release, &install_cmdline, &install_uki)?;
    let install = fs::read(&install_uki).context("reading the installer's UKI")?;
    esp::build(&out.join("esp-install.img"), &format!("{id}-install"), &[FatFile { path: esp::REMOVABLE_PATH, data: &install }])?;

    make_ext4(&staging, &out.join("root.ext4"), id)?;
    reproducible::clamp_ext4_times(&out.join("root.ext4"), epoch)?;
    fs::remove_dir_all(&staging).context("removing the staging tree")?;
    Ok(())
}

/// openssh-server's postinst made host keys inside the shared tree: every node would carry the
/// same private key. Each node gets its own from its MMCONFIG partition instead.
pub fn remove_host_keys(root: &Path) -> Result<()> {
    let dir = root.join("etc/ssh");
    for entry in fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        if name.starts_with("ssh_host_") && (name.ends_with("_key") || name.ends_with("_key.pub")) {
            fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
        }
    }
    Ok(())
}

/// `mkfs.ext4 -d`: an ext4 image of `tree` with a UUID and hash seed derived from `id`.
fn make_ext4(tree: &Path, dest: &Path, id: &str) -> Result<()> {
    let used = dir_size(tree)?;
    // 512 MiB of room for logs, package updates and certificates; small enough that stamping
    // and hashing a node's image stays cheap. The file stays sparse.
    let size = (used + (512 << 20)).max(1 << 30).div_ceil(64 << 20) * (64 << 20);
    let uuid = uuid_from(id, "root-fs");
    let seed = uuid_from(id, "root-hash-seed");
    let mut cmd = Command::new("mkfs.ext4");
    cmd.args(["-q", "-F", "-L", ROOT_LABEL, "-U", &uuid, "-b", "4096", "-I", "256"])
        .arg("-E")
        .arg(format!("root_owner=0:0,hash_seed={seed},lazy_itable_init=1,lazy_journal_init=1,nodiscard"))
        .arg("-d")
        .arg(tree)
        .arg(dest)
        .arg(format!("{}k", size / 1024))
        .env("E2FSPROGS_FAKE_TIME", source_date_epoch().to_string())
        .env("SOURCE_DATE_EPOCH", source_date_epoch().to_string());
    run(&mut cmd).context("creating the root filesystem image")?;
    Ok(())
}

fn dir_size(p: &Path) -> Result<u64> {
    let out = run(Command::new("du").args(["-sb"]).arg(p))?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace().next().and_then(|s| s.parse().ok()).context("parsing du output")
}

/// overlays/base/cmdline for `slot`, with the names from the shared contract filled in.
fn render_cmdline(template: &str, slot: Slot) -> Result<String> {
    let mut h = handlebars::Handlebars::new();
    h.set_strict_mode(true);
    h.register_escape_fn(handlebars::no_escape);
    h.render_template(template, &serde_json::json!({ "root_partlabel": slot.partlabel() })).context("rendering overlays/base/cmdline")
}

/// The UKI of `slot` in a base directory (and in a build's `os/`).
pub fn slot_uki_name(slot: Slot) -> String {
    format!("uki-{slot}.efi")
}

fn read_list(path: &Path) -> Result<Vec<String>> {
    let text = fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(text.lines().map(|l| l.split('#').next().unwrap_or("").trim()).filter(|l| !l.is_empty()).map(String::from).collect())
}

fn hash_file(h: &mut Sha256, path: &Path) -> Result<()> {
    let data = fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    h.update(path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default().as_bytes());
    h.update((data.len() as u64).to_le_bytes());
    h.update(&data);
    Ok(())
}

/// Hash a tree: sorted relative paths, modes, symlink targets and contents.
fn hash_tree(h: &mut Sha256, top: &Path) -> Result<()> {
    fn walk(h: &mut Sha256, top: &Path, dir: &Path) -> Result<()> {
        let mut entries: Vec<PathBuf> = fs::read_dir(dir)?.flatten().map(|e| e.path()).collect();
        entries.sort();
        for p in entries {
            let meta = fs::symlink_metadata(&p)?;
            let rel = p.strip_prefix(top).unwrap().to_string_lossy().into_owned();
            h.update(rel.as_bytes());
            h.update(meta.permissions().mode().to_le_bytes());
            if meta.file_type().is_symlink() {
                h.update(fs::read_link(&p)?.to_string_lossy().as_bytes());
            } else if meta.is_dir() {
                walk(h, top, &p)?;
            } else {
                h.update(fs::read(&p)?);
            }
            h.update([0]);
        }
        Ok(())
    }
    if top.is_dir() {
        walk(h, top, top)?;
    }
    Ok(())
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cache_entry_is_built_by_one_build_at_a_time() {
        use std::time::Duration;
        let tmp = tempfile::tempdir().unwrap();
        let entry = tmp.path().join("base").join("0123456789abcdef");
        let held = lock_entry(&entry, true).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let other = entry.clone();
        let waiter = std::thread::spawn(move || {
            let lock = lock_entry(&other, true).unwrap();
            tx.send(()).unwrap();
            drop(lock);
        });
        assert!(rx.recv_timeout(Duration::from_millis(300)).is_err(), "a second build took the entry while the first held it");
        drop(held);
        rx.recv_timeout(Duration::from_secs(10)).expect("the waiting build never got the entry");
        waiter.join().unwrap();
        assert!(tmp.path().join("base/0123456789abcdef.lock").is_file() && !entry.exists());
    }

    #[test]
    fn module_keep_list_last_match_wins() {
        let keep: Vec<String> = ["net/*", "!net/wireless/*", "drivers/nvme/*"].iter().map(|s| s.to_string()).collect();
        assert!(module_kept("net/ipv6/ipv6.ko", &keep));
        assert!(!module_kept("net/wireless/cfg80211.ko", &keep));
        assert!(module_kept("drivers/nvme/host/nvme.ko", &keep));
        assert!(!module_kept("sound/core/snd.ko", &keep));
    }

    #[test]
    fn a_kept_module_keeps_what_it_needs_transitively_and_nothing_else() {
        let deps =
            "kernel/drivers/usb/storage/usb-storage.ko: kernel/drivers/usb/core/usbcore.ko kernel/drivers/usb/common/usb-common.ko\n\
                    kernel/drivers/usb/core/usbcore.ko: kernel/drivers/usb/common/usb-common.ko\n\
                    kernel/drivers/usb/common/usb-common.ko:\n\
                    kernel/arch/x86/kvm/kvm.ko: kernel/virt/lib/irqbypass.ko\n\
                    kernel/virt/lib/irqbypass.ko:\n\
                    kernel/sound/snd.ko: kernel/sound/soundcore.ko\n\
                    kernel/sound/soundcore.ko:\n";
        let keep: Vec<String> = ["drivers/usb/storage/*", "arch/x86/*"].iter().map(|s| s.to_string()).collect();
        assert_eq!(
            modules_to_keep(deps, &keep).into_iter().collect::<Vec<_>>(),
            [
                "arch/x86/kvm/kvm.ko",
                "drivers/usb/common/usb-common.ko",
                "drivers/usb/core/usbcore.ko",
                "drivers/usb/storage/usb-storage.ko",
                "virt/lib/irqbypass.ko"
            ]
        );
    }

    #[test]
    fn a_refused_module_takes_every_module_that_needs_it_along() {
        let deps = "kernel/net/batman-adv/batman-adv.ko: kernel/net/wireless/cfg80211.ko kernel/lib/crc16.ko\n\
                    kernel/net/wireless/cfg80211.ko: kernel/net/rfkill/rfkill.ko\n\
                    kernel/net/rfkill/rfkill.ko:\n\
                    kernel/lib/crc16.ko:\n\
                    kernel/drivers/platform/x86/thinkpad_acpi.ko: kernel/net/rfkill/rfkill.ko\n\
                    kernel/drivers/platform/x86/wmi.ko:\n\
                    kernel/net/bonding/bonding.ko: kernel/net/tls/tls.ko\n\
                    kernel/net/tls/tls.ko:\n";
        let keep: Vec<String> =
            ["net/*", "drivers/platform/x86/*", "!net/wireless/*", "!net/rfkill/*"].iter().map(|s| s.to_string()).collect();
        assert_eq!(
            modules_to_keep(deps, &keep).into_iter().collect::<Vec<_>>(),
            ["drivers/platform/x86/wmi.ko", "net/bonding/bonding.ko", "net/tls/tls.ko"],
            "batman-adv needs cfg80211 and thinkpad_acpi rfkill: both go; crc16 was only batman-adv's"
        );
    }

    #[test]
    fn the_nodes_sources_name_all_three_suites_as_apt_reads_them_and_the_build_the_same() {
        let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let template = fs::read_to_string(repo.join("overlays").join(SOURCES_TEMPLATE)).unwrap();
        let archives = Archives { main: "http://a.example/debian".into(), security: "http://b.example/debian-security".into() };
        let d = tempfile::tempdir().unwrap();
        fs::create_dir(d.path().join("parts")).unwrap();
        fs::write(d.path().join("parts/debian.sources"), render_sources(&template, &archives).unwrap()).unwrap();
        let out = run(Command::new("apt-get")
            .args(["indextargets", "--no-release-info", "--format", "$(REPO_URI) $(RELEASE) $(COMPONENT)"])
            .args(["-o", "Dir::Etc::SourceList=/dev/null"])
            .arg(format!("-o=Dir::Etc::SourceParts={}", d.path().join("parts").display()))
            .arg(format!("-o=Dir::State::Lists={}", d.path().join("lists").display())))
        .unwrap();
        let seen: BTreeSet<String> = String::from_utf8_lossy(&out.stdout).lines().map(|l| l.replace("/ ", " ")).collect();
        let built: BTreeSet<String> = build_sources(&archives).iter().map(|l| l.trim_start_matches("deb ").to_string()).collect();
        assert_eq!(seen, built, "the node's sources and the build's differ");
        assert_eq!(
            built.into_iter().collect::<Vec<_>>(),
            [
                "http://a.example/debian bookworm main",
                "http://a.example/debian bookworm-updates main",
                "http://b.example/debian-security bookworm-security main"
            ]
        );
    }

    #[test]
    fn host_keys_leave_the_shared_tree_and_nothing_else_does() {
        let d = tempfile::tempdir().unwrap();
        let ssh = d.path().join("etc/ssh");
        std::fs::create_dir_all(&ssh).unwrap();
        for f in ["ssh_host_ed25519_key", "ssh_host_ed25519_key.pub", "ssh_host_rsa_key", "ssh_host_ecdsa_key.pub", "sshd_config", "moduli"]
        {
            std::fs::write(ssh.join(f), "x").unwrap();
        }
        remove_host_keys(d.path()).unwrap();
        let mut left: Vec<String> = fs::read_dir(&ssh).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        left.sort();
        assert_eq!(left, ["moduli", "sshd_config"]);
    }

    #[test]
    fn tree_hash_sees_content_mode_and_names() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("a"), "x").unwrap();
        let digest = |p: &Path| {
            let mut h = Sha256::new();
            hash_tree(&mut h, p).unwrap();
            hex(&h.finalize())
        };
        let first = digest(d.path());
        assert_eq!(first, digest(d.path()));
        std::fs::write(d.path().join("a"), "y").unwrap();
        let second = digest(d.path());
        assert_ne!(first, second);
        std::fs::set_permissions(d.path().join("a"), fs::Permissions::from_mode(0o755)).unwrap();
        assert_ne!(second, digest(d.path()));
    }
}
