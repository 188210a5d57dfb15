//! What a privileged test needs from the machine, checked up front: a test that cannot run here
//! says why and skips, instead of failing deep inside with a confusing error. `scripts/test`
//! sets `MM_REQUIRE_PRIVILEGED=1` (CI runs as root), which turns every such skip into a failure,
//! so a green CI never hides a test that did not run.

use std::path::Path;
use std::process::Command;

/// `Ok(())` when the test can run; otherwise the reason (or a panic under MM_REQUIRE_PRIVILEGED).
pub fn need(what: &[Need]) -> Result<(), String> {
    let missing: Vec<String> = what.iter().filter_map(|n| n.unmet()).collect();
    if missing.is_empty() {
        return Ok(());
    }
    let why = format!("needs {}", missing.join(", "));
    if std::env::var_os("MM_REQUIRE_PRIVILEGED").is_some() {
        panic!("{why} (MM_REQUIRE_PRIVILEGED is set: this machine must run every test)");
    }
    eprintln!("SKIPPED: {why}");
    Err(why)
}

#[derive(Debug, Clone, Copy)]
pub enum Need {
    Root,
    /// Loop devices can be attached (`losetup -f` finds one).
    LoopDevices,
    /// A program on PATH.
    Tool(&'static str),
}

impl Need {
    fn unmet(self) -> Option<String> {
        match self {
            Need::Root if !nix::unistd::geteuid().is_root() => Some("root".into()),
            Need::LoopDevices => {
                let ok = Path::new("/dev/loop-control").exists()
                    && Command::new("losetup").arg("-f").output().is_ok_and(|o| o.status.success());
                (!ok).then(|| "loop devices (/dev/loop-control and a free loop device)".into())
            }
            Need::Tool(t) => {
                let found = std::env::var_os("PATH").is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(t).is_file()));
                (!found).then(|| format!("`{t}` on PATH (scripts/install-deps installs it)"))
            }
            Need::Root => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_tool_is_named() {
        assert_eq!(Need::Tool("no-such-tool-xyz").unmet().unwrap(), "`no-such-tool-xyz` on PATH (scripts/install-deps installs it)");
        assert!(Need::Tool("sh").unmet().is_none());
    }
}
