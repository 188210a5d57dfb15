//! What the slow image tests share: the repository, running the built mmbuild, its output.
#![allow(dead_code)] // each test binary uses its own part

pub mod loopfleet;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

pub fn mmbuild(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mmbuild")).args(args).output().unwrap()
}

/// stdout then stderr, for assertion messages.
pub fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// Where the example `ci` node's upstreams are: rsync://10.0.2.2:10873/<module>/, and QEMU's user
/// network maps 10.0.2.2 to this host.
pub const EXAMPLE_UPSTREAM: &str = "10.0.2.2:10873";

/// `fleet` (the text of examples/fleet.toml, or a variant of it) with the `ci` node's upstreams on
/// `port` of this host. Each test serving them takes a free port of its own, so tests running side
/// by side (scripts/slow-tier's lanes) never reach each other's daemon.
pub fn upstreams_on(fleet: &str, port: u16) -> String {
    assert!(fleet.contains(EXAMPLE_UPSTREAM), "the fleet has no upstream on {EXAMPLE_UPSTREAM}");
    fleet.replace(EXAMPLE_UPSTREAM, &format!("10.0.2.2:{port}"))
}

/// An rsync daemon with the configuration `conf` on 127.0.0.1:`port`, stopped when dropped.
pub fn rsync_daemon(conf: &Path, port: u16) -> Reaped {
    let mut daemon = Reaped(
        Command::new("rsync")
            .args(["--daemon", "--no-detach", &format!("--port={port}"), "--address=127.0.0.1"])
            .arg(format!("--config={}", conf.display()))
            .spawn()
            .unwrap(),
    );
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert!(daemon.0.try_wait().unwrap().is_none(), "the rsync daemon did not stay up: is port {port} taken?");
    daemon
}

/// A child process killed when the test ends, also when it fails.
pub struct Reaped(pub std::process::Child);
impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
