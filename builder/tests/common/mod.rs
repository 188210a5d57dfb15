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

/// A child process killed when the test ends, also when it fails.
pub struct Reaped(pub std::process::Child);
impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
