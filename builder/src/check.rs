//! `mmbuild check`: validate a fleet inventory and print every error.
use std::path::Path;
use std::process::ExitCode;
pub fn run(_fleet: &Path, _data: Option<&Path>, _json: bool) -> anyhow::Result<ExitCode> {
    anyhow::bail!("check is not implemented yet")
}
