//! A private network namespace for one test: its own loopback, so daemons listen on their real
//! ports, reserved for the whole test, and never meet another test's or the host's (test support
//! for every crate, like [`crate::testenv`]).

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A network namespace held open by a `sleep` for as long as this value lives. Commands made by
/// [`Netns::cmd`] run inside it; its loopback is up and every port is free.
pub struct Netns {
    holder: Child,
}

impl Default for Netns {
    fn default() -> Self {
        Netns::new()
    }
}

impl Netns {
    pub fn new() -> Netns {
        // pdeathsig: the holder goes with the test thread even when the test run is killed.
        let holder = Command::new("setpriv")
            .args(["--pdeathsig", "KILL", "--", "unshare", "--net", "sleep", "infinity"])
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let ns = Netns { holder };
        // unshare has entered its namespace once /proc shows it in another one than ours.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let own = std::fs::read_link(format!("/proc/{}/ns/net", ns.holder.id()));
            let ours = std::fs::read_link("/proc/self/ns/net");
            if matches!((&own, &ours), (Ok(a), Ok(b)) if a != b) {
                break;
            }
            assert!(Instant::now() < deadline, "unshare --net did not start");
            std::thread::sleep(Duration::from_millis(10));
        }
        let up = ns.cmd("ip").args(["link", "set", "lo", "up"]).output().unwrap();
        assert!(up.status.success(), "ip link set lo up: {}", String::from_utf8_lossy(&up.stderr));
        ns
    }

    /// `program` run inside the namespace (nsenter execs it: the child's pid is the program's).
    pub fn cmd(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net=/proc/{}/ns/net", self.holder.id())).arg("--").arg(program);
        c
    }

    /// Moves the calling thread into the namespace; threads it spawns afterwards start there
    /// too, and every socket they open belongs to it.
    pub fn enter(&self) {
        let fd = std::fs::File::open(format!("/proc/{}/ns/net", self.holder.id())).unwrap();
        nix::sched::setns(fd, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
    }

    /// The namespace's file, for a thread to `setns` into.
    pub fn holder_path(&self) -> std::path::PathBuf {
        format!("/proc/{}/ns/net", self.holder.id()).into()
    }

    /// Waits until something listens on TCP `port` inside the namespace (IPv4 or IPv6).
    pub fn wait_port(&self, port: u16) {
        let want = format!(":{port:04X} ");
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            for table in ["tcp", "tcp6"] {
                let text = std::fs::read_to_string(format!("/proc/{}/net/{table}", self.holder.id())).unwrap_or_default();
                // Columns: sl local_address rem_address st ...; st 0A is LISTEN.
                if text.lines().skip(1).any(|l| {
                    let f: Vec<&str> = l.split_whitespace().collect();
                    f.len() > 3 && format!("{} ", f[1]).ends_with(&want) && f[3] == "0A"
                }) {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("nothing listens on port {port} in the test's namespace");
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = self.holder.kill();
        let _ = self.holder.wait();
    }
}
