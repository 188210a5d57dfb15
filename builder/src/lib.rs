//! mmbuild as a library: fleet loading and validation, base OS, disk images, install media.
//! The `mmbuild` binary is a thin CLI over these modules; integration tests use them directly.

pub mod atomic;
pub mod base;
pub mod build;
pub mod check;
pub mod data;
pub mod diag;
pub mod diskimage;
pub mod esp;
pub mod fat;
pub mod fleet;
pub mod gpt;
pub mod hostcmd;
pub mod hostkeys;
pub mod initramfs;
pub mod kickstart;
pub mod manifest;
pub mod oemdrv;
pub mod qemu;
pub mod reproducible;
pub mod uki;

/// Exit codes: 0 success, 1 invalid input (fleet, profiles, hardware), 2 usage error (clap),
/// 3 missing host tool or environment problem, 4 build failure.
pub mod exit {
    pub const INVALID_INPUT: u8 = 1;
    pub const ENVIRONMENT: u8 = 3;
    pub const BUILD_FAILED: u8 = 4;
}
