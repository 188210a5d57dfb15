//! Host commands: run a tool, and on failure report the command line and the tail of its stderr.

use std::ffi::OsStr;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use anyhow::{bail, Context, Result};

/// A required host tool is missing: the CLI maps this to exit code 3 (environment).
#[derive(Debug, thiserror::Error)]
#[error("host tool `{tool}` is missing: install the Debian package `{package}` (apt-get install {package}), or run scripts/install-deps")]
pub struct MissingTool {
    pub tool: String,
    pub package: String,
}

/// Fail with [`MissingTool`] unless `tool` is on PATH (or is an existing absolute path).
pub fn require_tool(tool: &str, package: &str) -> Result<()> {
    let found = if tool.starts_with('/') {
        Path::new(tool).exists()
    } else {
        std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
            .unwrap_or(false)
    };
    if found {
        Ok(())
    } else {
        Err(MissingTool { tool: tool.into(), package: package.into() }.into())
    }
}

fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        let a = a.to_string_lossy();
        if a.contains(' ') || a.is_empty() {
            s.push_str(&format!(" '{a}'"));
        } else {
            s.push(' ');
            s.push_str(&a);
        }
    }
    s
}

fn tail(bytes: &[u8], lines: usize) -> String {
    let text = String::from_utf8_lossy(bytes);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Run to completion, capturing output; a non-zero exit is an error naming the command.
pub fn run(cmd: &mut Command) -> Result<Output> {
    let shown = describe(cmd);
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("starting `{shown}`"))?;
    if !out.status.success() {
        let mut why = tail(&out.stderr, 15);
        if why.trim().is_empty() {
            why = tail(&out.stdout, 15);
        }
        bail!("`{shown}` failed ({}):\n{why}", out.status);
    }
    Ok(out)
}

/// Convenience: `run(Command::new(program).args(args))`.
pub fn run_args<I, S>(program: &str, args: I) -> Result<Output>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    run(Command::new(program).args(args))
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
    fn missing_tool_names_the_package() {
        let err = require_tool("no-such-tool-xyz", "xyz-utils").unwrap_err();
        assert!(err.downcast_ref::<MissingTool>().is_some());
        assert!(err.to_string().contains("apt-get install xyz-utils"));
        assert!(require_tool("sh", "dash").is_ok());
    }
}
