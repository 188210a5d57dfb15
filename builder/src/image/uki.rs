//! Unified kernel image: systemd's EFI stub with the kernel, initramfs, cmdline and os-release.
//!
//! One UKI serves every node (nothing node-specific is in it), so firmware boots it directly as
//! \EFI\BOOT\BOOTX64.EFI: no boot loader, no boot menu, no loader configuration to get wrong.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result};

use hostkit::cmd::run;

/// systemd-boot-efi's stub (bookworm has no ukify; objcopy adds the sections).
pub const STUB: &str = "/usr/lib/systemd/boot/efi/linuxx64.efi.stub";

pub fn build(kernel: &Path, initrd: &Path, os_release: &Path, cmdline: &str, dest: &Path) -> Result<()> {
    let dir = dest.parent().context("UKI destination has no directory")?;
    let cmdline_file = dir.join("cmdline.txt");
    std::fs::write(&cmdline_file, cmdline.as_bytes()).context("writing the cmdline section")?;
    // Section addresses as systemd 252 documents for objcopy-built UKIs: well apart, so the
    // kernel and initramfs never overlap whatever their size.
    let mut cmd = Command::new("objcopy");
    for (name, file, vma) in [
        (".osrel", os_release, "0x20000"),
        (".cmdline", cmdline_file.as_path(), "0x30000"),
        (".linux", kernel, "0x2000000"),
        (".initrd", initrd, "0x3000000"),
    ] {
        cmd.arg("--add-section").arg(format!("{name}={}", file.display()));
        cmd.arg("--change-section-vma").arg(format!("{name}={vma}"));
    }
    cmd.arg(STUB).arg(dest);
    run(&mut cmd).context("assembling the unified kernel image")?;
    // objcopy 2.40 stamps the PE header with the current time (it ignores SOURCE_DATE_EPOCH):
    // the build's time instead, and the header checksum recomputed.
    let mut pe = std::fs::read(dest).with_context(|| format!("reading {}", dest.display()))?;
    set_pe_timestamp(&mut pe, crate::image::base::source_date_epoch() as u32)?;
    std::fs::write(dest, &pe).with_context(|| format!("writing {}", dest.display()))?;
    Ok(())
}

fn u32_at(b: &[u8], at: usize) -> Result<u32> {
    b.get(at..at + 4).map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]])).context("truncated PE header")
}

/// Offset of the PE checksum field (optional header + 64).
fn checksum_offset(pe: &[u8]) -> Result<usize> {
    let nt = u32_at(pe, 0x3c)? as usize;
    anyhow::ensure!(pe.get(nt..nt + 4) == Some(b"PE\0\0".as_slice()), "not a PE image");
    Ok(nt + 24 + 64)
}

/// The PE image checksum (as `imagehlp`'s CheckSumMappedFile): 16-bit one's-complement-style
/// sum of the file with the checksum field as zero, plus the file length.
pub fn pe_checksum(pe: &[u8]) -> Result<u32> {
    let skip = checksum_offset(pe)?;
    let mut sum: u64 = 0;
    for (i, chunk) in pe.chunks(2).enumerate() {
        let at = i * 2;
        if at >= skip && at < skip + 4 {
            continue;
        }
        sum += u64::from(u16::from_le_bytes([chunk[0], *chunk.get(1).unwrap_or(&0)]));
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum = (sum & 0xffff) + (sum >> 16);
    Ok((sum as u32).wrapping_add(pe.len() as u32))
}

/// Set the COFF header's TimeDateStamp and recompute the checksum.
pub fn set_pe_timestamp(pe: &mut [u8], stamp: u32) -> Result<()> {
    let nt = u32_at(pe, 0x3c)? as usize;
    let sum_at = checksum_offset(pe)?;
    pe[nt + 8..nt + 12].copy_from_slice(&stamp.to_le_bytes());
    let sum = pe_checksum(pe)?;
    pe[sum_at..sum_at + 4].copy_from_slice(&sum.to_le_bytes());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn objcopy(dir: &Path, name: &str) -> Vec<u8> {
        let (section, out) = (dir.join("section"), dir.join(name));
        std::fs::write(&section, b"ID=test\n").unwrap();
        run(Command::new("objcopy")
            .arg("--add-section")
            .arg(format!(".osrel={}", section.display()))
            .args(["--change-section-vma", ".osrel=0x20000", STUB])
            .arg(&out))
        .unwrap();
        std::fs::read(out).unwrap()
    }

    #[test]
    fn pe_timestamp_is_fixed_and_the_checksum_stays_right() {
        let d = tempfile::tempdir().unwrap();
        let mut a = objcopy(d.path(), "a");
        // objcopy's own checksum is what ours computes.
        let sum_at = checksum_offset(&a).unwrap();
        assert_eq!(u32_at(&a, sum_at).unwrap(), pe_checksum(&a).unwrap());
        std::thread::sleep(std::time::Duration::from_millis(1100));
        let mut b = objcopy(d.path(), "b");
        assert_ne!(a, b, "objcopy became deterministic: drop set_pe_timestamp");
        set_pe_timestamp(&mut a, 1_735_689_600).unwrap();
        set_pe_timestamp(&mut b, 1_735_689_600).unwrap();
        assert!(a == b);
        std::fs::write(d.path().join("fixed"), &a).unwrap();
        let dump = run(Command::new("objdump").arg("-p").arg(d.path().join("fixed"))).unwrap();
        let dump = String::from_utf8_lossy(&dump.stdout).into_owned();
        assert!(dump.contains("Time/Date\t\tWed Jan  1 00:00:00 2025"), "{dump}");
        assert!(dump.contains(&format!("CheckSum\t\t{:08x}", pe_checksum(&a).unwrap())), "{dump}");
    }
}
