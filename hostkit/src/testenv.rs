//! What a privileged test needs from the machine, checked up front: a test that cannot run here
//! says why and skips, instead of failing deep inside with a confusing error. `scripts/test`
//! sets `MM_REQUIRE_PRIVILEGED=1` (CI runs as root), which turns every such skip into a failure,
//! so a green CI never hides a test that did not run.

use std::path::Path;
use std::process::Command;

pub mod fit;
pub mod png;

/// `Ok(())` when the test can run; otherwise the reason (or a panic under MM_REQUIRE_PRIVILEGED).
pub fn need(what: &[Need]) -> Result<(), String> {
    let unmet: Vec<(Need, String)> = what.iter().filter_map(|n| n.unmet().map(|why| (*n, why))).collect();
    if unmet.is_empty() {
        return Ok(());
    }
    let why = format!("needs {}", unmet.iter().map(|(_, w)| w.as_str()).collect::<Vec<_>>().join(", "));
    // A kernel built without a feature cannot be fixed by installing anything: CI's own machines
    // (firecracker kernels without device-mapper) skip those tests loudly, and a machine that
    // must run them sets MM_REQUIRE_KERNEL_FEATURES.
    let kernel_only = unmet.iter().all(|(n, _)| matches!(n, Need::DeviceMapper));
    if kernel_only && std::env::var_os("MM_REQUIRE_KERNEL_FEATURES").is_none() {
        eprintln!("SKIPPED (this kernel lacks it): {why}");
    } else {
        skip(&why);
    }
    Err(why)
}

/// Say why a test cannot run here and let it return; a panic under MM_REQUIRE_PRIVILEGED.
pub fn skip(why: &str) {
    if std::env::var_os("MM_REQUIRE_PRIVILEGED").is_some() {
        panic!("{why} (MM_REQUIRE_PRIVILEGED is set: this machine must run every test)");
    }
    eprintln!("SKIPPED: {why}");
}

#[derive(Debug, Clone, Copy)]
pub enum Need {
    Root,
    /// Loop devices can be attached (`losetup -f` finds one).
    LoopDevices,
    /// A program on PATH.
    Tool(&'static str),
    /// The kernel's device-mapper (`dmsetup targets` answers): dm devices can be created.
    DeviceMapper,
}

impl Need {
    fn unmet(self) -> Option<String> {
        match self {
            Need::Root if !nix::unistd::geteuid().is_root() => Some("root".into()),
            Need::LoopDevices => {
                let ok =
                    Path::new("/dev/loop-control").exists() && Command::new("losetup").arg("-f").output().is_ok_and(|o| o.status.success());
                (!ok).then(|| "loop devices (/dev/loop-control and a free loop device)".into())
            }
            Need::Tool(t) => {
                let found = std::env::var_os("PATH").is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(t).is_file()));
                (!found).then(|| format!("`{t}` on PATH (scripts/install-deps installs it)"))
            }
            Need::DeviceMapper => {
                let ok = Command::new("dmsetup").arg("targets").output().is_ok_and(|o| o.status.success());
                (!ok).then(|| "the kernel's device-mapper (`dmsetup targets` fails: no dm_mod here)".into())
            }
            Need::Root => None,
        }
    }
}

/// A generated file (man page, completion) is what is committed at `repo/rel`; with
/// `MM_UPDATE_DOCS` set, it is rewritten first. Panics with the command that regenerates it.
pub fn check_generated(repo: &Path, rel: &str, generated: &[u8], regenerate: &str) {
    let path = repo.join(rel);
    if std::env::var_os("MM_UPDATE_DOCS").is_some() {
        std::fs::create_dir_all(path.parent().unwrap_or(repo)).expect("creating the docs directory");
        std::fs::write(&path, generated).expect("writing the generated file");
    }
    let committed = std::fs::read(&path).unwrap_or_default();
    assert!(committed == generated, "{rel} is stale: run MM_UPDATE_DOCS=1 {regenerate}");
}

/// The binary's page (`doc`, relative to the repository) carries its EXIT STATUS line exactly as
/// its --help shows it.
pub fn check_exit_codes_documented(repo: &Path, doc: &str, binary: &str, exe: &str, help: &str) {
    let page = std::fs::read_to_string(repo.join(doc)).unwrap_or_else(|e| panic!("reading {doc}: {e}"));
    assert!(page.contains(&format!("`{binary}` {help}")), "{doc} must carry this line:\n`{binary}` {help}");
    let out = Command::new(exe).arg("--help").output().expect("running --help");
    let shown = String::from_utf8_lossy(&out.stdout).split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(shown.contains(help), "{binary} --help lacks the exit codes:\n{shown}");
}

/// Every file under `dir` (recursively) by its path relative to `dir`, with its bytes: for
/// comparing whole output trees.
pub fn tree_files(dir: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    let mut out = std::collections::BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.insert(p.strip_prefix(dir).unwrap().to_string_lossy().into_owned(), std::fs::read(&p).unwrap());
            }
        }
    }
    out
}

/// Partition `n` of a disk image file as its own loop device (no udev needed); detached on drop.
pub struct LoopPart(pub String);

impl LoopPart {
    pub fn attach(image: &Path, n: u32, read_only: bool) -> LoopPart {
        let geo = Command::new("partx").args(["-g", "-o", "START,SECTORS", "-n", &n.to_string()]).arg(image).output().unwrap();
        assert!(geo.status.success(), "partx {}: {}", image.display(), String::from_utf8_lossy(&geo.stderr));
        let v: Vec<u64> = String::from_utf8_lossy(&geo.stdout).split_whitespace().map(|x| x.parse().unwrap()).collect();
        let mut cmd = Command::new("losetup");
        cmd.args(["--show", "-f", "-o", &(v[0] * 512).to_string(), "--sizelimit", &(v[1] * 512).to_string()]);
        if read_only {
            cmd.arg("-r");
        }
        let out = cmd.arg(image).output().unwrap();
        assert!(out.status.success(), "losetup {}: {}", image.display(), String::from_utf8_lossy(&out.stderr));
        LoopPart(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }
}

impl Drop for LoopPart {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.0]).status();
    }
}

/// A TCP port nothing listens on now on `ip`, never the same one twice in this process: two
/// daemons a test starts side by side would otherwise be handed the same port now and then
/// (the kernel may pick a just-released port again), and one of them would quietly lose it.
pub fn free_port(ip: &str) -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    loop {
        let port = std::net::TcpListener::bind((ip, 0)).unwrap().local_addr().unwrap().port();
        let mut given = GIVEN.lock().unwrap();
        if !given.contains(&port) {
            given.push(port);
            return port;
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
