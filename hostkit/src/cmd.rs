//! Host commands: run a tool with stdin closed, and on failure report the command line, its exit
//! status and the tail of its stderr (or of its stdout when stderr is empty).
//!
//! Errors that mean "fix the machine, not the input" are typed ([`MissingTool`], [`Unusable`]) so
//! a CLI can map them to its "environment" exit code with [`is_environment`].

use std::ffi::OsStr;
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

/// A required host tool is missing: the CLI maps this to exit code 3 (environment).
#[derive(Debug, thiserror::Error)]
#[error("host tool `{tool}` is missing: install the Debian package `{package}` (apt-get install {package}), or run scripts/install-deps")]
pub struct MissingTool {
    pub tool: String,
    pub package: String,
}

/// The machine cannot do what was asked (not root, no loop devices, ...): exit code 3.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Unusable(pub String);

/// Whether `err` (or anything in its chain) is an environment problem rather than a failed step.
pub fn is_environment(err: &anyhow::Error) -> bool {
    err.chain().any(|e| e.downcast_ref::<MissingTool>().is_some() || e.downcast_ref::<Unusable>().is_some())
}

/// Fail with [`MissingTool`] unless `tool` is on PATH (or is an existing absolute path).
pub fn require_tool(tool: &str, package: &str) -> Result<()> {
    let found = if tool.contains('/') {
        Path::new(tool).exists()
    } else {
        std::env::var_os("PATH").map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file())).unwrap_or(false)
    };
    if found {
        Ok(())
    } else {
        Err(MissingTool { tool: tool.into(), package: package.into() }.into())
    }
}

/// Fail with [`Unusable`] unless running as root; `why` says what needs it.
pub fn require_root(why: &str) -> Result<()> {
    if nix::unistd::geteuid().is_root() {
        Ok(())
    } else {
        Err(Unusable(format!("{why} needs root (it runs mmdebstrap, chroot and mkfs): run it with sudo")).into())
    }
}

/// The command line as a shell would show it, for error messages.
pub fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        let a = a.to_string_lossy();
        if a.is_empty() || a.contains(|c: char| c.is_whitespace() || "'\"$;&|<>(){}*?\\".contains(c)) {
            s.push_str(&format!(" '{}'", a.replace('\'', "'\\''")));
        } else {
            s.push(' ');
            s.push_str(&a);
        }
    }
    s
}

/// The last `lines` non-blank lines of `bytes`, lossily decoded.
pub fn tail(bytes: &[u8], lines: usize) -> String {
    let text = String::from_utf8_lossy(bytes);
    let all: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn check(shown: &str, out: Output) -> Result<Output> {
    check_codes(shown, out, &[0])
}

/// A command ran and exited with a status its caller does not accept. Typed so a caller can
/// match the exit code ([`exit_code`]) instead of the message (ssh's 255: the node was not reached).
#[derive(Debug, thiserror::Error)]
#[error("`{command}` failed ({status}):\n{why}")]
pub struct Failed {
    pub command: String,
    pub status: std::process::ExitStatus,
    /// The tail of its stderr, or of its stdout when stderr was empty.
    pub why: String,
}

/// The exit code of the command whose failure `err` (or anything in its chain) is; None when
/// the error is not a command's exit, or the command was killed by a signal.
pub fn exit_code(err: &anyhow::Error) -> Option<i32> {
    err.chain().find_map(|e| e.downcast_ref::<Failed>()).and_then(|f| f.status.code())
}

fn check_codes(shown: &str, out: Output, ok: &[i32]) -> Result<Output> {
    if !out.status.code().is_some_and(|c| ok.contains(&c)) {
        let mut why = tail(&out.stderr, 15);
        if why.trim().is_empty() {
            why = tail(&out.stdout, 15);
        }
        return Err(Failed { command: shown.to_string(), status: out.status, why }.into());
    }
    Ok(out)
}

/// Run `cmd` and read its stdout as the JSON document `T` (another binary's report: the types
/// live in mmconfig); the exit codes in `ok` are answers, as with [`run_codes`].
pub fn run_json<T: serde::de::DeserializeOwned>(cmd: &mut Command, ok: &[i32]) -> Result<T> {
    let shown = describe(cmd);
    let out = run_codes(cmd, ok)?;
    json_output(&shown, &out.stdout)
}

/// `stdout` of the command `shown` read as the JSON document `T`, with the start of what it
/// printed in the error when it is not that document.
pub fn json_output<T: serde::de::DeserializeOwned>(shown: &str, stdout: &[u8]) -> Result<T> {
    serde_json::from_slice(stdout).with_context(|| {
        let start: String = String::from_utf8_lossy(stdout).chars().take(200).collect();
        format!("`{shown}` did not print the expected JSON document; it printed: {start:?}")
    })
}

/// Run to completion, capturing output; a non-zero exit is an error naming the command.
pub fn run(cmd: &mut Command) -> Result<Output> {
    let shown = describe(cmd);
    let out = cmd.stdin(Stdio::null()).output().with_context(|| format!("starting `{shown}`"))?;
    check(&shown, out)
}

/// Like [`run`], but the exit codes in `ok` are answers, not failures (`blkid` exits 2 when a
/// device holds no signature).
pub fn run_codes(cmd: &mut Command, ok: &[i32]) -> Result<Output> {
    let shown = describe(cmd);
    let out = cmd.stdin(Stdio::null()).output().with_context(|| format!("starting `{shown}`"))?;
    check_codes(&shown, out, ok)
}

/// Run `program args` and return its stdout as text.
pub fn text<S: AsRef<OsStr>>(program: &str, args: &[S]) -> Result<String> {
    let out = run(Command::new(program).args(args))?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Like [`run`], feeding `input` on stdin (from a thread, so large inputs cannot deadlock).
pub fn run_with_input(cmd: &mut Command, input: Vec<u8>) -> Result<Output> {
    run_with_input_codes(cmd, input, &[0])
}

/// [`run_with_input`] where the exit codes in `ok` are answers, not failures.
pub fn run_with_input_codes(cmd: &mut Command, input: Vec<u8>, ok: &[i32]) -> Result<Output> {
    run_feeding(cmd, ok, move |mut stdin| stdin.write_all(&input)).map(|(out, ())| out)
}

/// Run `cmd` with `feed` writing its stdin from a thread (a stream, another process's output),
/// capturing its output; judged as [`run_codes`] judges, so a failure reads the same whatever
/// fed it. The command's own failure comes first: a command that stops reading early breaks
/// the feeder's pipe, and that broken pipe is not the news. What `feed` returned comes back
/// with the output.
pub fn run_feeding<T: Send + 'static>(
    cmd: &mut Command,
    ok: &[i32],
    feed: impl FnOnce(std::process::ChildStdin) -> std::io::Result<T> + Send + 'static,
) -> Result<(Output, T)> {
    let shown = describe(cmd);
    let mut child =
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().with_context(|| format!("starting `{shown}`"))?;
    let stdin = child.stdin.take().context("child stdin")?;
    // The feeder owns stdin and drops it when done: the child sees end-of-file.
    let feeder = std::thread::spawn(move || feed(stdin));
    let out = child.wait_with_output().with_context(|| format!("running `{shown}`"))?;
    let fed = feeder.join().map_err(|_| anyhow::anyhow!("the thread feeding `{shown}` panicked"))?;
    let out = check_codes(&shown, out, ok)?;
    let fed = fed.with_context(|| format!("writing to the stdin of `{shown}`"))?;
    Ok((out, fed))
}

/// Convenience: `run(Command::new(program).args(args))`.
pub fn run_args<I, S>(program: &str, args: I) -> Result<Output>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    run(Command::new(program).args(args))
}

/// Why [`run_with_deadline`] has no output to show.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeadlineError {
    #[error("running {0}: {1}")]
    Start(String, String),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

/// Run `cmd` (stdin closed, output captured); killed and an error once `timeout` has passed.
pub fn run_with_deadline(cmd: Command, timeout: Duration) -> Result<Output, DeadlineError> {
    run_with_deadline_input(cmd, None, timeout)
}

/// [`run_with_deadline`] with `input` on stdin (then closed) when there is one.
pub fn run_with_deadline_input(mut cmd: Command, input: Option<Vec<u8>>, timeout: Duration) -> Result<Output, DeadlineError> {
    let program = cmd.get_program().to_string_lossy().into_owned();
    let stdin = if input.is_some() { Stdio::piped() } else { Stdio::null() };
    let mut child = cmd
        .stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| DeadlineError::Start(program.clone(), e.to_string()))?;
    if let (Some(input), Some(mut w)) = (input, child.stdin.take()) {
        // A child that never reads must not block us: the write is a thread's, ended by the kill.
        std::thread::spawn(move || w.write_all(&input));
    }
    // Readers in threads: a chatty child must never block on a full pipe while we wait.
    let mut so = child.stdout.take();
    let mut se = child.stderr.take();
    let out = std::thread::spawn(move || {
        let mut b = Vec::new();
        if let Some(s) = so.as_mut() {
            let _ = s.take(4 << 20).read_to_end(&mut b);
        }
        b
    });
    let err = std::thread::spawn(move || {
        let mut b = Vec::new();
        if let Some(s) = se.as_mut() {
            let _ = s.take(1 << 20).read_to_end(&mut b);
        }
        b
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break st,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(DeadlineError::Timeout(timeout));
            }
            Err(e) => return Err(DeadlineError::Start(program, e.to_string())),
        }
    };
    Ok(Output { status, stdout: out.join().unwrap_or_default(), stderr: err.join().unwrap_or_default() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_names_the_command_and_its_stderr() {
        let err = run(Command::new("sh").args(["-c", "echo one >&2; echo boom >&2; exit 3"])).unwrap_err().to_string();
        assert!(err.contains("`sh -c 'echo one >&2; echo boom >&2; exit 3'` failed"), "{err}");
        assert!(err.ends_with("one\nboom"), "{err}");
    }

    #[test]
    fn only_the_tail_of_a_long_stderr_is_kept() {
        let err = run(Command::new("sh").args(["-c", "seq 1 100 >&2; exit 1"])).unwrap_err().to_string();
        assert!(err.ends_with("86\n87\n88\n89\n90\n91\n92\n93\n94\n95\n96\n97\n98\n99\n100"), "{err}");
        assert!(!err.contains("\n85\n"), "{err}");
    }

    #[test]
    fn a_failure_carries_its_exit_code() {
        let err = run(Command::new("sh").args(["-c", "echo gone >&2; exit 255"])).unwrap_err().context("reaching the node");
        assert_eq!(exit_code(&err), Some(255));
        assert_eq!(exit_code(&anyhow::anyhow!("exit status: 255")), None);
    }

    #[test]
    fn run_json_reads_the_document_and_names_what_is_not_one() {
        #[derive(serde::Deserialize, Debug, PartialEq)]
        struct Doc {
            version: u32,
        }
        let doc: Doc = run_json(Command::new("sh").args(["-c", "echo '{\"version\": 1}'; exit 3"]), &[0, 3]).unwrap();
        assert_eq!(doc, Doc { version: 1 });
        let err = run_json::<Doc>(Command::new("echo").arg("PROBLEM: no disk"), &[0]).unwrap_err();
        assert!(
            format!("{err:#}")
                .contains("`echo 'PROBLEM: no disk'` did not print the expected JSON document; it printed: \"PROBLEM: no disk\\n\""),
            "{err:#}"
        );
        let err = run_json::<Doc>(Command::new("sh").args(["-c", "exit 4"]), &[0, 3]).unwrap_err();
        assert_eq!(exit_code(&err), Some(4));
    }

    #[test]
    fn stdout_is_shown_when_stderr_is_empty() {
        let err = run_args("sh", ["-c", "echo only-on-stdout; false"]).unwrap_err().to_string();
        assert!(err.contains("only-on-stdout"), "{err}");
    }

    #[test]
    fn accepted_codes_are_answers_and_stdin_is_closed() {
        let out = run_codes(Command::new("sh").args(["-c", "echo x; exit 2"]), &[0, 2]).unwrap();
        assert_eq!(out.stdout, b"x\n");
        let err = run_codes(Command::new("sh").args(["-c", "exit 3"]), &[0, 2]).unwrap_err().to_string();
        assert!(err.contains("exit status: 3"), "{err}");
        // A command that reads stdin sees end-of-file instead of hanging on the caller's terminal.
        assert_eq!(text("sh", &["-c", "cat; echo done"]).unwrap(), "done\n");
    }

    #[test]
    fn missing_tool_names_the_package_and_is_an_environment_error() {
        let err = require_tool("no-such-tool-xyz", "xyz-utils").unwrap_err();
        assert!(err.downcast_ref::<MissingTool>().is_some());
        assert!(err.to_string().contains("apt-get install xyz-utils"));
        assert!(is_environment(&err.context("building the base")));
        assert!(require_tool("sh", "dash").is_ok());
        assert!(!is_environment(&anyhow::anyhow!("mkfs failed")));
    }

    #[test]
    fn large_stdin_does_not_deadlock() {
        let input = vec![b'x'; 4 << 20];
        let out = run_with_input(Command::new("wc").arg("-c"), input).unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), (4 << 20).to_string());
        let err = run_with_input(Command::new("sh").args(["-c", "cat >/dev/null; echo nope >&2; exit 2"]), b"abc".to_vec()).unwrap_err();
        assert!(err.to_string().contains("nope"), "{err}");
    }

    #[test]
    fn a_fed_command_fails_as_any_other_and_its_own_failure_comes_first() {
        let (out, n) = run_feeding(Command::new("wc").arg("-c"), &[0], |mut w| w.write_all(b"12345").map(|()| 5)).unwrap();
        assert_eq!((String::from_utf8_lossy(&out.stdout).trim(), n), ("5", 5));
        // The command exits without reading: the feeder's broken pipe is not what is reported.
        let big = vec![0u8; 8 << 20];
        let err =
            run_feeding(Command::new("sh").args(["-c", "echo refused >&2; exit 7"]), &[0], move |mut w| w.write_all(&big)).unwrap_err();
        let f = err.downcast_ref::<Failed>().expect("a Failed");
        assert_eq!((f.command.as_str(), f.status.code(), f.why.as_str()), ("sh -c 'echo refused >&2; exit 7'", Some(7), "refused"));
        assert_eq!(exit_code(&err), Some(7));
    }

    #[test]
    fn a_deadline_kills_and_input_is_fed() {
        let out = run_with_deadline_input(Command::new("cat"), Some(b"hi".to_vec()), Duration::from_secs(5)).unwrap();
        assert_eq!(out.stdout, b"hi");
        let t = Duration::from_millis(200);
        let mut sleep = Command::new("sleep");
        sleep.arg("5");
        assert_eq!(run_with_deadline(sleep, t).unwrap_err(), DeadlineError::Timeout(t));
        assert!(matches!(run_with_deadline(Command::new("/nonexistent/x"), t), Err(DeadlineError::Start(..))));
    }
}
