//! Unified kernel image: systemd's EFI stub with the kernel, initramfs, cmdline and os-release.
//!
//! One UKI serves every node (nothing node-specific is in it), so firmware boots it directly as
//! \EFI\BOOT\BOOTX64.EFI: no boot loader, no boot menu, no loader configuration to get wrong.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result};

use crate::hostcmd::run;

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
    // objcopy stamps the PE header with the current time unless told the build's.
    cmd.env("SOURCE_DATE_EPOCH", crate::base::source_date_epoch().to_string());
    run(&mut cmd).context("assembling the unified kernel image")?;
    Ok(())
}
