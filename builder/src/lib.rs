//! mmbuild as a library: fleet loading and validation, base OS, disk images, install media.
//! The `mmbuild` binary is a thin CLI over these modules; integration tests use them directly.

pub mod base;
pub mod build;
pub mod ansible;
pub mod check;
pub mod data;
pub mod diag;
pub mod diskimage;
pub mod esp;
pub mod fat;
pub mod fleet;
pub mod gpt;
pub mod health;
pub mod hostkeys;
pub mod initramfs;
pub mod kickstart;
pub mod manifest;
pub mod oemdrv;
pub mod prometheus;
pub mod qemu;
pub mod day2;
pub mod registration;
pub mod remote;
pub mod reproducible;
pub mod status;
pub mod uki;

/// Exit codes: 0 success, 1 invalid input (fleet, profiles, hardware), 2 usage error (clap),
/// 3 missing host tool or environment problem, 4 build failure, 5 `export registrations --check`
/// wrote everything but found an application not ready, or `status`: the fleet is not healthy,
/// 6 `plan`/`apply`: a node could not be reached, failed, or needs attention (every other node
/// was still done).
pub mod exit {
    pub const INVALID_INPUT: u8 = 1;
    pub const ENVIRONMENT: u8 = 3;
    pub const BUILD_FAILED: u8 = 4;
    pub const NOT_READY: u8 = 5;
    pub const UNHEALTHY: u8 = 5;
    pub const NODES_FAILED: u8 = 6;
}
