//! A lean initramfs: busybox, the storage modules every hardware model needs, `/init`, and the
//! install stick's `mm-install`.
//!
//! Written as a reproducible cpio (newc; sorted entries, fixed owners and times) and compressed
//! with zstd, which the Debian kernel unpacks natively.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

/// Build `dest` from the root tree `root` with kernel `kver`, loading `modules` (and their
/// dependencies) before looking for the root filesystem; `installer` is the static mm-install.
pub fn build(root: &Path, kver: &str, modules: &BTreeSet<String>, init: &Path, installer: &Path, dest: &Path) -> Result<()> {
    let moddir = root.join("usr/lib/modules").join(kver);
    let dep_text = fs::read_to_string(moddir.join("modules.dep")).with_context(|| format!("reading modules.dep of {kver}"))?;
    let builtin = fs::read_to_string(moddir.join("modules.builtin")).unwrap_or_default();
    let order = module_order(&dep_text, &builtin, modules)?;

    let mut cpio = Cpio::default();
    for d in ["bin", "dev", "etc", "lib", "lib/modules", "newroot", "proc", "sys"] {
        cpio.dir(d);
    }
    cpio.char_dev("dev/console", 5, 1);
    cpio.file("bin/busybox", 0o755, &fs::read(root.join("bin/busybox")).context("reading busybox from the root (package busybox-static)")?);
    cpio.file("init", 0o755, &fs::read(init).with_context(|| format!("reading {}", init.display()))?);
    // The install stick's installer (static), run by /init when the command line says mm.install.
    cpio.file("bin/mm-install", 0o755, &fs::read(installer).with_context(|| format!("reading {}", installer.display()))?);
    let mut listed = String::new();
    let mut dirs = BTreeSet::new();
    for rel in &order {
        let parent = Path::new(rel).parent().map(|p| p.to_string_lossy().into_owned()).unwrap_or_default();
        let mut acc = String::from("lib/modules");
        for part in parent.split('/').filter(|p| !p.is_empty()) {
            acc = format!("{acc}/{part}");
            if dirs.insert(acc.clone()) {
                cpio.dir(&acc);
            }
        }
        cpio.file(&format!("lib/modules/{rel}"), 0o644, &fs::read(moddir.join(rel)).with_context(|| format!("reading module {rel}"))?);
        listed.push_str(rel);
        listed.push('\n');
    }
    cpio.file("etc/modules.order", 0o644, listed.as_bytes());
    let raw = cpio.finish();

    let mut child = Command::new("zstd")
        .args(["-q", "-19", "-c", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .context("starting zstd")?;
    let mut stdin = child.stdin.take().expect("piped");
    let writer = std::thread::spawn(move || stdin.write_all(&raw));
    let out = child.wait_with_output().context("running zstd")?;
    writer.join().expect("zstd writer thread").context("feeding zstd")?;
    if !out.status.success() {
        bail!("zstd failed compressing the initramfs");
    }
    fs::write(dest, out.stdout).with_context(|| format!("writing {}", dest.display()))?;
    Ok(())
}

/// Module files (relative to the modules directory) in load order: dependencies first.
/// Built-in modules need no file; a module that is neither is an error naming it.
///
/// NIC drivers (under `kernel/drivers/net/`) are left out: the initramfs only has to find the
/// root, and udev loads a NIC's driver from the root for the NICs really present. Loading every
/// model's NIC drivers here (ixgbe, mlx4, r8169, bonding with tls) cost about 1.3 s of every
/// emulated boot, on machines that have none of those cards.
pub fn module_order(dep_text: &str, builtin: &str, wanted: &BTreeSet<String>) -> Result<Vec<String>> {
    let norm = |s: &str| s.replace('-', "_");
    let name_of = |path: &str| norm(Path::new(path).file_name().unwrap().to_string_lossy().trim_end_matches(".ko"));
    let mut deps: BTreeMap<String, (String, Vec<String>)> = BTreeMap::new();
    for line in dep_text.lines() {
        let Some((path, rest)) = line.split_once(':') else {
            continue;
        };
        deps.insert(name_of(path), (path.to_string(), rest.split_whitespace().map(String::from).collect()));
    }
    let builtin: BTreeSet<String> = builtin.lines().map(name_of).collect();
    let mut order = Vec::new();
    let mut seen = BTreeSet::new();
    fn visit(
        path: &str,
        deps: &BTreeMap<String, (String, Vec<String>)>,
        seen: &mut BTreeSet<String>,
        order: &mut Vec<String>,
        name_of: &dyn Fn(&str) -> String,
    ) {
        if !seen.insert(path.to_string()) {
            return;
        }
        if let Some((_, ds)) = deps.get(&name_of(path)) {
            for d in ds {
                visit(d, deps, seen, order, name_of);
            }
        }
        order.push(path.to_string());
    }
    for m in wanted {
        match deps.get(&norm(m)) {
            Some((path, _)) if is_nic_driver(path) => {}
            Some((path, _)) => visit(path, &deps, &mut seen, &mut order, &name_of),
            None if builtin.contains(&norm(m)) => {}
            None => bail!("kernel module {m} (from a hardware profile) is neither a module nor built into the kernel: check its name or overlays/base/modules-keep"),
        }
    }
    Ok(order)
}

fn is_nic_driver(path: &str) -> bool {
    path.starts_with("kernel/drivers/net/")
}

/// Minimal cpio "newc" writer with fixed owners, times and inode numbers.
#[derive(Default)]
struct Cpio {
    buf: Vec<u8>,
    ino: u32,
}

impl Cpio {
    fn entry(&mut self, name: &str, mode: u32, rdev: (u32, u32), data: &[u8]) {
        self.ino += 1;
        let header = format!(
            "070701{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}",
            self.ino,
            mode,
            0,
            0,
            1,
            0,
            data.len(),
            0,
            0,
            rdev.0,
            rdev.1,
            name.len() + 1,
            0
        );
        self.buf.extend_from_slice(header.as_bytes());
        self.buf.extend_from_slice(name.as_bytes());
        self.buf.push(0);
        self.pad();
        self.buf.extend_from_slice(data);
        self.pad();
    }
    fn pad(&mut self) {
        while !self.buf.len().is_multiple_of(4) {
            self.buf.push(0);
        }
    }
    fn dir(&mut self, name: &str) {
        self.entry(name, 0o040755, (0, 0), &[]);
    }
    fn file(&mut self, name: &str, perm: u32, data: &[u8]) {
        self.entry(name, 0o100000 | perm, (0, 0), data);
    }
    fn char_dev(&mut self, name: &str, major: u32, minor: u32) {
        self.entry(name, 0o020600, (major, minor), &[]);
    }
    fn finish(mut self) -> Vec<u8> {
        self.ino = 0;
        self.entry("TRAILER!!!", 0, (0, 0), &[]);
        self.buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEP: &str = "kernel/fs/ext4/ext4.ko: kernel/fs/jbd2/jbd2.ko kernel/fs/mbcache.ko kernel/lib/crc16.ko\n\
kernel/fs/jbd2/jbd2.ko:\nkernel/fs/mbcache.ko:\nkernel/lib/crc16.ko:\n\
kernel/drivers/block/virtio_blk.ko:\nkernel/drivers/net/ethernet/mellanox/mlx4/mlx4_en.ko: kernel/drivers/net/ethernet/mellanox/mlx4/mlx4_core.ko\n\
kernel/drivers/net/ethernet/mellanox/mlx4/mlx4_core.ko:\n\
kernel/drivers/usb/storage/usb-storage.ko: kernel/drivers/usb/core/usbcore.ko\nkernel/drivers/usb/core/usbcore.ko:\n";

    #[test]
    fn dependencies_load_first_and_builtins_need_no_file() {
        let wanted: BTreeSet<String> = ["ext4", "usb_storage", "virtio_pci"].iter().map(|s| s.to_string()).collect();
        let order = module_order(DEP, "kernel/drivers/virtio/virtio_pci.ko\n", &wanted).unwrap();
        let pos = |n: &str| order.iter().position(|p| p.ends_with(n)).unwrap();
        assert!(pos("jbd2.ko") < pos("ext4.ko"));
        assert!(pos("usbcore.ko") < pos("usb-storage.ko"));
        assert_eq!(order.len(), 6);
    }

    #[test]
    fn nic_drivers_are_left_to_udev_in_the_root() {
        let wanted: BTreeSet<String> = ["mlx4_en", "mlx4_core", "virtio_blk"].iter().map(|s| s.to_string()).collect();
        let order = module_order(DEP, "", &wanted).unwrap();
        assert_eq!(order, ["kernel/drivers/block/virtio_blk.ko"]);
    }

    #[test]
    fn unknown_module_is_a_clear_error() {
        let wanted: BTreeSet<String> = ["nosuchmod".to_string()].into();
        let err = module_order(DEP, "", &wanted).unwrap_err().to_string();
        assert!(err.contains("kernel module nosuchmod"), "{err}");
    }

    #[test]
    fn cpio_is_deterministic_and_aligned() {
        let mk = || {
            let mut c = Cpio::default();
            c.dir("bin");
            c.file("bin/x", 0o755, b"abc");
            c.finish()
        };
        let a = mk();
        assert_eq!(a, mk());
        assert_eq!(a.len() % 4, 0);
        assert!(a.starts_with(b"070701"));
    }
}
