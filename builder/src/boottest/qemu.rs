//! Booting node images under QEMU + OVMF: for operators (`mmbuild qemu`) and for tests (`Vm`).
//!
//! KVM is used only when it really works: `/dev/kvm` can exist and still fail every guest
//! ("KVM internal error"), so the probe boots OVMF for a few seconds and looks at what it printed.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use hostkit::cmd::require_tool;
pub use mmconfig::disk::Bus;

pub const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
pub const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";
/// The MAC of the first NIC; tests pin nodes to it.
pub const GUEST_MAC: &str = "52:54:00:12:34:56";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    Kvm,
    Tcg,
}

/// One more disk, on the bus its hardware model names (boot-test's machine shapes).
#[derive(Debug, Clone)]
pub struct GuestDisk {
    pub path: PathBuf,
    pub bus: Bus,
    /// What the guest reads as the disk's serial number (wipe_disk_serials, rules).
    pub serial: String,
}

/// A NIC on a host tap device (instead of QEMU's user network).
#[derive(Debug, Clone)]
pub struct GuestNic {
    /// QEMU device model, e.g. `virtio-net-pci`, `e1000e`.
    pub device: String,
    pub mac: String,
    /// Tap device in the network namespace QEMU starts in.
    pub tap: String,
}

#[derive(Debug, Clone)]
pub struct VmOptions {
    pub image: PathBuf,
    /// Bus of the boot disk (`image`).
    pub boot_bus: Bus,
    /// Extra virtio disks (data disks), in order; each gets serial `MMDISK<n>`.
    pub data_disks: Vec<PathBuf>,
    pub memory_mib: u32,
    pub cpus: u32,
    /// host port -> guest port, on 127.0.0.1.
    pub forwards: Vec<(u16, u16)>,
    /// host port -> (guest address, guest port): a guest that changes its address (renumbering).
    pub forwards_to: Vec<(u16, std::net::Ipv4Addr, u16)>,
    /// Discard writes to the image (the image file stays as built).
    pub snapshot: bool,
    /// Serial console to this file (tests); None = on the terminal.
    pub serial_log: Option<PathBuf>,
    /// None = probe.
    pub accel: Option<Accel>,
    /// Disks after `data_disks`, each on its own bus.
    pub disks: Vec<GuestDisk>,
    /// Non-empty: these NICs on tap devices replace the user-network NIC (and `forwards`).
    pub nics: Vec<GuestNic>,
    /// `-fw_cfg name=NAME,string=VALUE`: facts for the guest that only a VM can carry.
    pub fw_cfg: Vec<(String, String)>,
    /// Indexes into `nics` whose cable is pulled from power-on (the guest sees no carrier).
    pub links_down: Vec<usize>,
    /// A guest reboot restarts the machine (the install stick reboots into the installed disk);
    /// false: QEMU exits instead.
    pub reboot: bool,
    /// The serial console also takes typed input ([`Vm::type_line`]).
    pub serial_input: bool,
}

impl VmOptions {
    pub fn new(image: impl Into<PathBuf>) -> Self {
        VmOptions {
            image: image.into(),
            boot_bus: Bus::Virtio,
            data_disks: Vec::new(),
            memory_mib: 1024,
            cpus: 2,
            forwards: Vec::new(),
            forwards_to: Vec::new(),
            snapshot: false,
            serial_log: None,
            accel: None,
            disks: Vec::new(),
            nics: Vec::new(),
            fw_cfg: Vec::new(),
            links_down: Vec::new(),
            reboot: false,
            serial_input: false,
        }
    }
}

/// A running VM; killed when dropped.
pub struct Vm {
    child: Child,
    serial: Option<PathBuf>,
    _vars: tempfile::TempDir,
    pub accel: Accel,
    pub started: Instant,
}

/// `MM_QEMU_ACCEL=kvm|tcg` forces the choice; otherwise probe once per process.
pub fn accel() -> Accel {
    static CHOICE: OnceLock<Accel> = OnceLock::new();
    *CHOICE.get_or_init(|| choose_accel(std::env::var("MM_QEMU_ACCEL").ok().as_deref(), kvm_works))
}

/// The choice from its facts: a forced `kvm` or `tcg` wins without probing; otherwise KVM only
/// when `kvm_works` (the probe) says a guest really ran under it, else TCG.
fn choose_accel(forced: Option<&str>, kvm_works: impl FnOnce() -> bool) -> Accel {
    match forced {
        Some("kvm") => Accel::Kvm,
        Some("tcg") => Accel::Tcg,
        _ if kvm_works() => Accel::Kvm,
        _ => Accel::Tcg,
    }
}

/// Whether the probe's serial output shows OVMF's boot manager running: a `/dev/kvm` that fails
/// every guest prints nothing there (its "KVM internal error" goes to stderr).
fn firmware_ran(serial: &str) -> bool {
    serial.contains("BdsDxe") || serial.contains("Shell>")
}

fn kvm_works() -> bool {
    if fs::OpenOptions::new().read(true).write(true).open("/dev/kvm").is_err() {
        return false;
    }
    let Ok(dir) = tempfile::tempdir() else {
        return false;
    };
    let vars = dir.path().join("vars.fd");
    let serial = dir.path().join("serial.log");
    if fs::copy(OVMF_VARS, &vars).is_err() {
        return false;
    }
    let child = Command::new("qemu-system-x86_64")
        .args(["-accel", "kvm", "-machine", "q35", "-m", "256", "-nodefaults", "-display", "none", "-net", "none"])
        .arg("-drive")
        .arg(format!("if=pflash,format=raw,readonly=on,file={OVMF_CODE}"))
        .arg("-drive")
        .arg(format!("if=pflash,format=raw,file={}", vars.display()))
        .arg("-serial")
        .arg(format!("file:{}", serial.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn();
    let Ok(mut child) = child else { return false };
    let deadline = Instant::now() + Duration::from_secs(8);
    let mut ok = false;
    while Instant::now() < deadline {
        if firmware_ran(&fs::read_to_string(&serial).unwrap_or_default()) {
            ok = true;
            break;
        }
        if let Ok(Some(_)) = child.try_wait() {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let _ = child.kill();
    let _ = child.wait();
    ok
}

impl Vm {
    pub fn start(opts: &VmOptions) -> Result<Vm> {
        require_tool("qemu-system-x86_64", "qemu-system-x86 (from bookworm-backports)")?;
        for f in [OVMF_CODE, OVMF_VARS] {
            if !Path::new(f).is_file() {
                bail!("{f} is missing: install the Debian package `ovmf`");
            }
        }
        if !opts.image.is_file() {
            bail!("{}: no such disk image (build it with `mmbuild build`)", opts.image.display());
        }
        let vars_dir = tempfile::tempdir().context("creating a directory for the UEFI variables")?;
        let vars = vars_dir.path().join("OVMF_VARS.fd");
        fs::copy(OVMF_VARS, &vars).context("copying the UEFI variable store")?;
        let accel = opts.accel.unwrap_or_else(accel);
        let format = if opts.image.extension().is_some_and(|e| e == "qcow2") { "qcow2" } else { "raw" };

        let mut cmd = Command::new("qemu-system-x86_64");
        cmd.args(["-machine", "q35", "-nodefaults", "-display", "none"]);
        if !opts.reboot {
            cmd.arg("-no-reboot");
        }
        match accel {
            Accel::Kvm => cmd.args(["-accel", "kvm", "-cpu", "host"]),
            Accel::Tcg => cmd.args(["-accel", "tcg,thread=multi", "-cpu", "max"]),
        };
        cmd.args(["-m", &opts.memory_mib.to_string(), "-smp", &opts.cpus.to_string()]);
        cmd.arg("-drive").arg(format!("if=pflash,format=raw,readonly=on,file={OVMF_CODE}"));
        cmd.arg("-drive").arg(format!("if=pflash,format=raw,file={}", vars.display()));
        let snap = if opts.snapshot { ",snapshot=on" } else { "" };
        cmd.arg("-drive").arg(format!("file={},format={format},if=none,id=boot{snap}", opts.image.display()));
        let mut buses = Buses::default();
        let boot = buses.device(&mut cmd, opts.boot_bus, "boot", "MMBOOT", true);
        cmd.args(["-device", &boot]);
        for (i, disk) in opts.data_disks.iter().enumerate() {
            cmd.arg("-drive").arg(format!("file={},format=raw,if=none,id=data{i}", disk.display()));
            cmd.arg("-device").arg(format!("virtio-blk-pci,drive=data{i},serial=MMDISK{i}"));
        }
        for (i, disk) in opts.disks.iter().enumerate() {
            let id = format!("disk{i}");
            cmd.arg("-drive").arg(format!("file={},format=raw,if=none,id={id}", disk.path.display()));
            let device = buses.device(&mut cmd, disk.bus, &id, &disk.serial, false);
            cmd.args(["-device", &device]);
        }
        if opts.nics.is_empty() {
            let mut fwd: String = opts.forwards.iter().map(|(h, g)| format!(",hostfwd=tcp:127.0.0.1:{h}-:{g}")).collect();
            fwd.extend(opts.forwards_to.iter().map(|(h, a, g)| format!(",hostfwd=tcp:127.0.0.1:{h}-{a}:{g}")));
            cmd.arg("-netdev").arg(format!("user,id=net0,ipv4=on,ipv6=on{fwd}"));
            cmd.arg("-device").arg(format!("virtio-net-pci,netdev=net0,mac={GUEST_MAC}"));
        }
        for (i, nic) in opts.nics.iter().enumerate() {
            cmd.arg("-netdev").arg(format!("tap,id=net{i},ifname={},script=no,downscript=no", nic.tap));
            // Each NIC behind its own PCIe root port, as on a server board: an igb also claims
            // slots for its virtual functions, which collide on the root bus.
            cmd.arg("-device").arg(format!("pcie-root-port,id=nicport{i},chassis={},slot={}", i + 1, i + 1));
            cmd.arg("-device").arg(format!("{},netdev=net{i},mac={},bus=nicport{i}", nic.device, nic.mac));
        }
        for (name, value) in &opts.fw_cfg {
            cmd.arg("-fw_cfg").arg(format!("name={name},string={value}"));
        }
        match &opts.serial_log {
            Some(log) if opts.serial_input => {
                // A socket for typing on the console (Vm::type_line), everything printed logged.
                let sock = vars_dir.path().join("serial.sock");
                cmd.arg("-chardev").arg(format!("socket,id=ser0,path={},server=on,wait=off,logfile={}", sock.display(), log.display()));
                cmd.args(["-serial", "chardev:ser0"]);
                cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
            }
            Some(log) => {
                cmd.arg("-serial").arg(format!("file:{}", log.display()));
                cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
            }
            None => {
                cmd.args(["-serial", "mon:stdio"]);
            }
        }
        let qmp = vars_dir.path().join("qmp.sock");
        if !opts.links_down.is_empty() {
            // Paused until the links are set, so the guest never sees the pulled cable plugged.
            cmd.arg("-S").arg("-qmp").arg(format!("unix:{},server=on,wait=off", qmp.display()));
        }
        let mut child = cmd.spawn().context("starting qemu-system-x86_64")?;
        if !opts.links_down.is_empty() {
            let mut commands: Vec<String> =
                opts.links_down.iter().map(|i| format!(r#"{{"execute":"set_link","arguments":{{"name":"net{i}","up":false}}}}"#)).collect();
            commands.push(r#"{"execute":"cont"}"#.into());
            if let Err(e) = qmp_commands(&qmp, &commands) {
                let _ = child.kill();
                let out = child.wait_with_output().context("waiting for QEMU")?;
                return Err(e.context(format!("QEMU: {}", hostkit::cmd::tail(&out.stderr, 5))));
            }
        }
        Ok(Vm { child, serial: opts.serial_log.clone(), _vars: vars_dir, accel, started: Instant::now() })
    }

    /// Type `line` and Enter on the guest's serial console (VMs with a `serial_log`).
    pub fn type_line(&self, line: &str) -> Result<()> {
        use std::io::Write as _;
        let sock = self._vars.path().join("serial.sock");
        let mut s = std::os::unix::net::UnixStream::connect(&sock).with_context(|| format!("connecting to {}", sock.display()))?;
        s.write_all(format!("{line}\r").as_bytes()).context("typing on the serial console")?;
        // The chardev keeps one client: stay connected long enough for the guest to read it.
        std::thread::sleep(Duration::from_secs(2));
        Ok(())
    }

    /// What the guest printed on its serial console so far.
    pub fn serial(&self) -> String {
        self.serial.as_ref().and_then(|p| fs::read(p).ok()).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default()
    }

    /// Wait until the serial console shows `needle`; error (with the console's tail) on timeout
    /// or if QEMU exits.
    pub fn wait_for(&mut self, needle: &str, timeout: Duration) -> Result<Duration> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.serial().contains(needle) {
                return Ok(self.started.elapsed());
            }
            if let Some(status) = self.child.try_wait()? {
                bail!("QEMU exited ({status}) before the console showed {needle:?}; console tail:\n{}", self.tail(40));
            }
            if Instant::now() > deadline {
                bail!("the console did not show {needle:?} within {} s; console tail:\n{}", timeout.as_secs(), self.tail(40));
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// Whether QEMU has exited (the guest powered off, or QEMU failed).
    pub fn exited(&mut self) -> bool {
        !matches!(self.child.try_wait(), Ok(None))
    }

    pub fn tail(&self, lines: usize) -> String {
        let s = self.serial();
        let all: Vec<&str> = s.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Run interactively until QEMU exits (operator use).
    pub fn wait(mut self) -> Result<std::process::ExitStatus> {
        Ok(self.child.wait()?)
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends `commands` over QEMU's QMP socket at `path` (waiting for it to appear), failing on
/// the first error QEMU answers.
fn qmp_commands(path: &Path, commands: &[String]) -> Result<()> {
    use std::io::{BufRead, BufReader, Write};
    use std::os::unix::net::UnixStream;
    let deadline = Instant::now() + Duration::from_secs(20);
    let stream = loop {
        match UnixStream::connect(path) {
            Ok(s) => break s,
            Err(e) if Instant::now() > deadline => {
                return Err(e).with_context(|| format!("connecting to QEMU's QMP socket {}", path.display()))
            }
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    };
    stream.set_read_timeout(Some(Duration::from_secs(20))).context("setting a QMP timeout")?;
    let mut reader = BufReader::new(stream.try_clone().context("cloning the QMP socket")?);
    let mut writer = stream;
    let mut line = String::new();
    // The greeting, then one answer per command (events may come in between).
    reader.read_line(&mut line).context("reading QMP's greeting")?;
    for c in std::iter::once(r#"{"execute":"qmp_capabilities"}"#).chain(commands.iter().map(String::as_str)) {
        writer.write_all(format!("{c}\n").as_bytes()).context("writing to QMP")?;
        loop {
            line.clear();
            if reader.read_line(&mut line).context("reading QMP's answer")? == 0 {
                bail!("QEMU closed QMP during {c}");
            }
            if line.contains("\"error\"") {
                bail!("QEMU refused {c}: {}", line.trim());
            }
            if line.contains("\"return\"") {
                break;
            }
        }
    }
    Ok(())
}

/// Controllers added on demand, and the next free AHCI port (q35 has six: ide.0 to ide.5).
#[derive(Default)]
struct Buses {
    ahci_port: u32,
    xhci: bool,
    scsi: bool,
}

impl Buses {
    /// The `-device` for drive `id` on `bus`, adding its controller to `cmd` the first time.
    fn device(&mut self, cmd: &mut Command, bus: Bus, id: &str, serial: &str, boot: bool) -> String {
        let boot = if boot { ",bootindex=0" } else { "" };
        match bus {
            Bus::Virtio => format!("virtio-blk-pci,drive={id},serial={serial}{boot}"),
            Bus::Nvme => format!("nvme,drive={id},serial={serial}{boot}"),
            Bus::Sata => {
                let port = self.ahci_port;
                self.ahci_port += 1;
                format!("ide-hd,drive={id},bus=ide.{port},serial={serial}{boot}")
            }
            Bus::Usb => {
                if !std::mem::replace(&mut self.xhci, true) {
                    cmd.args(["-device", "qemu-xhci,id=xhci"]);
                }
                format!("usb-storage,bus=xhci.0,drive={id},serial={serial},removable=on{boot}")
            }
            Bus::Scsi => {
                if !std::mem::replace(&mut self.scsi, true) {
                    cmd.args(["-device", "virtio-scsi-pci,id=scsi"]);
                }
                format!("scsi-hd,bus=scsi.0,drive={id},serial={serial}{boot}")
            }
        }
    }
}

/// `SIZE` (e.g. `8G`, `512M`) creates a sparse blank disk in `dir`; anything else is a path.
pub fn data_disk(spec: &str, dir: &Path, index: usize) -> Result<PathBuf> {
    let (num, mult) = match spec.chars().last() {
        Some('G') | Some('g') => (&spec[..spec.len() - 1], 1u64 << 30),
        Some('M') | Some('m') => (&spec[..spec.len() - 1], 1u64 << 20),
        _ => (spec, 0),
    };
    match (mult, num.parse::<u64>()) {
        (m, Ok(n)) if m > 0 => {
            let path = dir.join(format!("data{index}.img"));
            let f = fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
            f.set_len(n * m)?;
            Ok(path)
        }
        _ => {
            let p = PathBuf::from(spec);
            if !p.exists() {
                bail!("--data-disk {spec}: neither a size (8G, 512M) nor an existing file");
            }
            Ok(p)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kvm_only_when_forced_or_a_guest_ran_under_it_else_tcg() {
        let never = || -> bool { panic!("probed although MM_QEMU_ACCEL chose") };
        assert_eq!(choose_accel(Some("kvm"), never), Accel::Kvm);
        assert_eq!(choose_accel(Some("tcg"), never), Accel::Tcg);
        // (MM_QEMU_ACCEL, what the probe says) -> the choice.
        for (forced, works, want) in [
            (None, true, Accel::Kvm),
            (None, false, Accel::Tcg),
            (Some(""), false, Accel::Tcg),
            (Some("KVM"), false, Accel::Tcg),
            (Some("hvf"), true, Accel::Kvm),
        ] {
            let mut probed = false;
            let got = choose_accel(forced, || {
                probed = true;
                works
            });
            assert_eq!((got, probed), (want, true), "{forced:?} with a probe saying {works}");
        }
    }

    #[test]
    fn the_probe_believes_only_the_firmware_s_boot_manager() {
        for (serial, ran) in [
            ("BdsDxe: loading Boot0001 \"UEFI QEMU DVD-ROM\"", true),
            ("\x1b[2J\x1b[01;01HUEFI Interactive Shell v2.2\nShell> ", true),
            ("", false),
            // What a broken /dev/kvm leaves: nothing from the firmware.
            ("KVM internal error. Suberror: 1\nemulation failure", false),
            ("BdsDx", false),
        ] {
            assert_eq!(firmware_ran(serial), ran, "{serial:?}");
        }
    }
}
