//! The small privileged layer: files under `--root`, and disk commands on explicit devices.
//!
//! Every operation checks its post-condition first, so a run killed at any point and started
//! again picks up where it stopped. `MM_FIRSTBOOT_FAIL_AT=<step>` makes a step fail on purpose
//! (fault tests).

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use hostkit::cmd::{run, text as cmd};
use mmconfig::{DATA_LABEL, DATA_MOUNT};

use crate::files::RenderedFile;
use crate::probe;
use crate::storage::Step;

pub struct Host {
    /// Target tree; `/` on a real node.
    pub root: PathBuf,
    fail_at: Option<String>,
}

impl Host {
    pub fn new(root: &Path) -> Host {
        Host { root: root.to_path_buf(), fail_at: std::env::var("MM_FIRSTBOOT_FAIL_AT").ok() }
    }

    /// True on the real node (systemctl and udev are ours to use).
    pub fn live(&self) -> bool {
        self.root == Path::new("/")
    }

    pub fn path(&self, on_node: &Path) -> PathBuf {
        self.root.join(on_node.strip_prefix("/").unwrap_or(on_node))
    }

    fn checkpoint(&self, step: &str) -> Result<()> {
        if self.fail_at.as_deref() == Some(step) {
            bail!("injected failure at step {step} (MM_FIRSTBOOT_FAIL_AT)");
        }
        Ok(())
    }

    /// Install `f` atomically unless it is already there with the same contents and mode.
    /// Returns whether anything changed.
    pub fn install(&self, f: &RenderedFile) -> Result<bool> {
        let dest = self.path(&f.path);
        if let (Ok(old), Ok(meta)) = (fs::read(&dest), fs::metadata(&dest)) {
            if old == f.contents && meta.permissions().mode() & 0o7777 == f.mode {
                return Ok(false);
            }
        }
        hostkit::atomic::write_mode(&dest, f.mode, &f.contents)?;
        Ok(true)
    }

    fn wants_link(&self, unit: &str, target: &str) -> PathBuf {
        self.path(Path::new("/etc/systemd/system")).join(format!("{target}.wants")).join(unit)
    }

    /// Whether `unit` has its wants symlink in `target`.
    pub fn enabled(&self, unit: &str, target: &str) -> bool {
        fs::symlink_metadata(self.wants_link(unit, target)).is_ok()
    }

    /// Where `unit`'s file is installed on the node, if it is.
    fn unit_file(&self, unit: &str) -> Option<PathBuf> {
        ["/etc/systemd/system", "/usr/lib/systemd/system", "/lib/systemd/system"]
            .iter()
            .map(|d| Path::new(d).join(unit))
            .find(|p| self.path(p).exists())
    }

    pub fn unit_installed(&self, unit: &str) -> bool {
        self.unit_file(unit).is_some()
    }

    /// Remove a unit's wants symlink; whether it was there.
    pub fn disable(&self, unit: &str, target: &str) -> Result<bool> {
        let link = self.wants_link(unit, target);
        match fs::remove_file(&link) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e).with_context(|| format!("disabling {unit}")),
        }
    }

    /// Enable a unit by its wants symlink (works on a --root tree too). `Some(changed)`, or
    /// `None` when the unit is not installed in the target.
    pub fn enable(&self, unit: &str, target: &str) -> Result<Option<bool>> {
        let link = self.wants_link(unit, target);
        if fs::symlink_metadata(&link).is_ok() {
            return Ok(Some(false));
        }
        let Some(unit_path) = self.unit_file(unit) else {
            return Ok(None);
        };
        let wants = link.parent().context("wants directory")?;
        fs::create_dir_all(wants)?;
        std::os::unix::fs::symlink(&unit_path, &link).with_context(|| format!("enabling {unit}"))?;
        Ok(Some(true))
    }

    /// Each unit's ActiveState on the live node, None when it is not installed (or on a --root
    /// tree), in one systemctl call: every call is a D-Bus round trip early in boot.
    pub fn unit_states(&self, units: &[&str]) -> Vec<Option<String>> {
        if !self.live() || units.is_empty() {
            return vec![None; units.len()];
        }
        // A failed call reads as "no unit known": the console then reports them as not running.
        let out = run(Command::new("systemctl").args(["show", "--property=LoadState,ActiveState", "--"]).args(units))
            .map(|o| o.stdout)
            .unwrap_or_default();
        // One block of Key=Value lines per unit, in the order asked, separated by blank lines.
        let text = String::from_utf8_lossy(&out);
        let mut blocks = text.split("\n\n").map(|block| {
            let get = |key: &str| block.lines().find_map(|l| l.strip_prefix(key)).map(str::to_string);
            match get("LoadState=").as_deref() {
                Some("loaded") => get("ActiveState="),
                _ => None,
            }
        });
        units.iter().map(|_| blocks.next().flatten()).collect()
    }

    /// Whether each unit is active on the live node (all false on a --root tree).
    pub fn units_active(&self, units: &[&str]) -> Vec<bool> {
        self.unit_states(units).into_iter().map(|s| s.as_deref() == Some("active")).collect()
    }

    /// The live node is still booting: systemd's jobs for the units we are ordered before wait
    /// for us, so a run must queue its jobs, never wait for them. A failed query counts as booting
    /// (never wait when unsure).
    pub fn booting(&self) -> bool {
        if !self.live() {
            return false;
        }
        let state = run(Command::new("systemctl").args(["show", "--property=SystemState"])).map(|o| o.stdout).unwrap_or_default();
        !matches!(String::from_utf8_lossy(&state).trim(), "SystemState=running" | "SystemState=degraded")
    }

    /// systemctl on the live node; a no-op on a --root tree.
    pub fn systemctl(&self, args: &[&str]) -> Result<()> {
        if self.live() {
            cmd("systemctl", args)?;
        }
        Ok(())
    }

    pub fn step(&self, step: &Step) -> Result<()> {
        match step {
            Step::Wipe { device, .. } => {
                self.checkpoint("wipe")?;
                cmd("wipefs", &["-a", device])?;
                cmd("sgdisk", &["--zap-all", device])?;
            }
            Step::PartitionWhole { device } => {
                self.checkpoint("partition")?;
                cmd("sgdisk", &["-o", "-n", "1:0:0", "-t", "1:8300", "-c", &format!("1:{DATA_LABEL}"), device])?;
                self.reread(device, false)?;
            }
            Step::AddPartition { device } => {
                self.checkpoint("partition")?;
                // The image was written to a larger disk: the backup GPT sits where the image ended.
                cmd("sgdisk", &["-e", device])?;
                cmd("sgdisk", &["-n", "0:0:0", "-t", "0:8300", "-c", &format!("0:{DATA_LABEL}"), device])?;
                self.reread(device, true)?;
            }
            Step::MakeFs { disk } => {
                self.checkpoint("mkfs")?;
                let part = self.data_partition(disk)?;
                // No -f: mkfs.xfs refuses to overwrite an existing signature, a last safety net.
                // -K: no discard pass over the whole device (minutes on some large SSDs; fstrim does it later).
                cmd("mkfs.xfs", &["-q", "-K", "-L", DATA_LABEL, &part])?;
            }
            Step::Grow { disk, device } => {
                self.checkpoint("grow")?;
                let num = fs::read_to_string(format!("/sys/class/block/{}/partition", device.trim_start_matches("/dev/")))
                    .context("reading the partition number")?;
                let num = num.trim();
                let start = fs::read_to_string(format!("/sys/class/block/{}/start", device.trim_start_matches("/dev/")))?;
                let guid = probe::blkid(device)?.get("PART_ENTRY_UUID").cloned().context("reading the partition GUID")?;
                cmd("sgdisk", &["-e", disk])?;
                // Same start, same GUID, new end: the filesystem inside is untouched.
                cmd(
                    "sgdisk",
                    &[
                        "-d",
                        num,
                        "-n",
                        &format!("{num}:{}:0", start.trim()),
                        "-t",
                        &format!("{num}:8300"),
                        "-c",
                        &format!("{num}:{DATA_LABEL}"),
                        "-u",
                        &format!("{num}:{guid}"),
                        disk,
                    ],
                )?;
                self.reread(disk, true)?;
                self.mount_now(device)?;
                cmd("xfs_growfs", &[self.path(Path::new(DATA_MOUNT))])?;
            }
            Step::Mount { disk } => {
                self.checkpoint("mount")?;
                // The planned disk's filesystem, never "any MMDATA": a second MMDATA disk (a
                // colleague's USB disk, another node's drive) must not be mounted by label.
                let part = self.data_fs(disk)?;
                let uuid = probe::blkid(&part)?.get("UUID").cloned().with_context(|| format!("{part} has no filesystem UUID"))?;
                self.install(&crate::services::render_mount_unit(&uuid)?)?;
                self.enable("srv-mirror.mount", "local-fs.target")?;
                self.mount_now(&part)?;
            }
        }
        Ok(())
    }

    fn reread(&self, disk: &str, in_use: bool) -> Result<()> {
        if !in_use {
            let _ = cmd("blockdev", &["--rereadpt", disk]);
        }
        // A busy boot disk refuses a full re-read, and some kernels (loop devices in containers)
        // do not scan at all: tell the kernel about the partitions one by one, which always works.
        let _ = cmd("partx", &["-u", disk]);
        let _ = cmd("partx", &["-a", disk]);
        // No `udevadm settle`: the steps that follow find partitions through sysfs and create
        // missing device nodes themselves, and settle waits for every pending event of the boot.
        Ok(())
    }

    /// The first device of `disk` (the disk itself with `whole`, then its partitions in order)
    /// whose blkid fields satisfy `wanted`, waiting up to 5 s for the kernel and udev. A probe
    /// that keeps failing is reported with the answer, not taken for "not there".
    fn find_on_disk(&self, disk: &str, whole: bool, wanted: impl Fn(&BTreeMap<String, String>) -> bool, what: &str) -> Result<String> {
        let kname = disk.trim_start_matches("/dev/");
        let mut last_error = None;
        for _ in 0..50 {
            let mut names: Vec<String> = fs::read_dir(format!("/sys/block/{kname}"))
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(kname) && n != kname)
                .collect();
            names.sort();
            if whole {
                names.insert(0, kname.to_string());
            }
            for n in names {
                probe::ensure_node(&n);
                let dev = format!("/dev/{n}");
                if !Path::new(&dev).exists() {
                    continue;
                }
                match probe::blkid(&dev) {
                    Ok(id) if wanted(&id) => return Ok(dev),
                    Ok(_) => {}
                    // udev may still hold a new partition open: look again.
                    Err(e) => last_error = Some(e),
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        match last_error {
            Some(e) => Err(e.context(format!("no {what} found on {disk}"))),
            None => bail!("no {what} found on {disk}"),
        }
    }

    /// The XFS filesystem labelled MMDATA on `disk`: the whole disk or one of its partitions (by
    /// filesystem label: Anaconda's `part --label` sets no GPT name).
    fn data_fs(&self, disk: &str) -> Result<String> {
        let is_data =
            |id: &BTreeMap<String, String>| id.get("LABEL").is_some_and(|l| l == DATA_LABEL) && id.get("TYPE").is_some_and(|t| t == "xfs");
        self.find_on_disk(disk, true, is_data, &format!("XFS filesystem labelled {DATA_LABEL}"))
    }

    /// The partition named MMDATA in the GPT of `disk` (which may not hold a filesystem yet).
    fn data_partition(&self, disk: &str) -> Result<String> {
        let named = |id: &BTreeMap<String, String>| id.get("PART_ENTRY_NAME").is_some_and(|n| n == DATA_LABEL);
        self.find_on_disk(disk, false, named, &format!("partition named {DATA_LABEL}"))
    }

    fn mount_now(&self, device: &str) -> Result<()> {
        let mp = self.path(Path::new(DATA_MOUNT));
        if probe::mount_source(&mp).is_some() {
            return Ok(());
        }
        fs::create_dir_all(&mp)?;
        cmd("mount", &["-t", "xfs", "-o", "noatime,nosuid,nodev,noexec", device, &mp.to_string_lossy()])?;
        Ok(())
    }
}
