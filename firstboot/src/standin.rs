//! The QEMU boot test's NIC stand-in: a driver name passed in through QEMU's fw_cfg, which real servers do not have.
//!
//! `mmbuild boot-test` boots a node's unmodified image with an emulated NIC (e1000e, virtio-net)
//! where the hardware model names a driver QEMU cannot emulate (r8169, ixgbe, mlx4_en), and says
//! so with `-fw_cfg name=opt/org.micromirror/nic-stand-in,string=<driver>`. Ports with that driver
//! then count as matching the model's NIC rule. fw_cfg is a QEMU device: on a real server the
//! file never exists, so nothing changes there.

use std::io::Read as _;
use std::path::Path;

use crate::apply::Host;

/// The fw_cfg item's name, as QEMU's `-fw_cfg name=` takes it.
pub const FW_CFG_NAME: &str = "opt/org.micromirror/nic-stand-in";

/// Where the qemu_fw_cfg module shows the items (one directory level per `/` of the name).
const FW_CFG_DIR: &str = "/sys/firmware/qemu_fw_cfg";

/// Longest driver name accepted (the kernel's own are far shorter).
const MAX_LEN: usize = 32;

/// The stand-in driver from the raw fw_cfg bytes. Err says why the value is ignored, without
/// echoing it (it comes from outside the image).
pub fn parse(raw: &[u8]) -> Result<String, String> {
    // QEMU's `string=` stores no NUL; a `file=` written with echo ends in a newline.
    let value = raw.strip_suffix(b"\n").unwrap_or(raw);
    let value = value.strip_suffix(b"\0").unwrap_or(value);
    let ok = !value.is_empty()
        && value.len() <= MAX_LEN
        && value[0].is_ascii_alphanumeric()
        && value.iter().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'_' || *b == b'-');
    if ok {
        Ok(String::from_utf8_lossy(value).into_owned())
    } else {
        Err(format!(
            "ignoring the NIC stand-in in QEMU fw_cfg {FW_CFG_NAME}: {} bytes, not a driver name (a-z, 0-9, _ and -, at most {MAX_LEN})",
            raw.len()
        ))
    }
}

/// Whether the firmware says this is a QEMU machine (DMI vendor, or fw_cfg's ACPI device): only
/// there is the fw_cfg module worth loading.
fn looks_like_qemu(host: &Host) -> bool {
    let vendor = std::fs::read_to_string(host.path(Path::new("/sys/class/dmi/id/sys_vendor"))).unwrap_or_default();
    vendor.trim() == "QEMU" || host.path(Path::new("/sys/bus/acpi/devices/QEMU0002:00")).exists()
}

/// The stand-in driver the boot test named: Ok(None) on real hardware (and in QEMU without one),
/// Err(warning) for a value that is not a driver name or cannot be read. Under `--root DIR` the
/// fw_cfg tree is read below DIR and no module is loaded.
pub fn read(host: &Host) -> Result<Option<String>, String> {
    let dir = host.path(Path::new(FW_CFG_DIR));
    if host.live() && !dir.exists() && looks_like_qemu(host) {
        // udev may not have loaded it yet this early in boot; a failure leaves the directory absent.
        let _ = hostkit::cmd::text("modprobe", &["qemu_fw_cfg"]);
    }
    let raw = dir.join("by_name").join(FW_CFG_NAME).join("raw");
    let file = match std::fs::File::open(&raw) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("ignoring the NIC stand-in: reading {}: {e}", raw.display())),
    };
    let mut bytes = Vec::new();
    // One byte more than any valid value: a huge item is refused without reading it all.
    file.take(MAX_LEN as u64 + 2)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("ignoring the NIC stand-in: reading {}: {e}", raw.display()))?;
    parse(&bytes).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn driver_names_pass_anything_else_is_refused_without_echo() {
        assert_eq!(parse(b"e1000e").unwrap(), "e1000e");
        assert_eq!(parse(b"virtio_net\n").unwrap(), "virtio_net");
        assert_eq!(parse(b"mlx4_en\0").unwrap(), "mlx4_en");
        for bad in [&b""[..], b"\n", b"E1000E", b"e1000e; rm -rf /", b"../../etc", b"-x", b"a\nb", b"\x1b[2Jx", &[b'a'; 33]] {
            let err = parse(bad).unwrap_err();
            assert!(err.contains("not a driver name"), "{err}");
            assert!(!err.contains("rm -rf") && !err.contains('\x1b') && !err.contains("etc"), "echoes the value: {err}");
        }
    }

    fn write_item(root: &Path, bytes: &[u8]) {
        let dir = root.join("sys/firmware/qemu_fw_cfg/by_name").join(FW_CFG_NAME);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("raw"), bytes).unwrap();
    }

    #[test]
    fn read_under_root() {
        let root = tempfile::tempdir().unwrap();
        let host = Host::new(root.path());
        assert_eq!(read(&host), Ok(None), "no fw_cfg: real hardware");
        write_item(root.path(), b"e1000e");
        assert_eq!(read(&host), Ok(Some("e1000e".into())));
        write_item(root.path(), &vec![b'a'; 4096]);
        assert!(read(&host).unwrap_err().contains("34 bytes"), "read is bounded");
    }
}
