//! One node over the real OpenSSH client: the node's key checked against the build's
//! `known_hosts` (never trust on first use), batch mode, one reused connection per node.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use anyhow::{Context, Result};
use mmconfig::{NodeConfig, ADMIN_USER};

/// Where and how to reach one node.
#[derive(Debug, Clone)]
pub struct Ssh {
    pub fqdn: String,
    /// Address (or name) to connect to; the host key is looked up under `fqdn` regardless.
    pub host: String,
    pub port: u16,
    pub known_hosts: PathBuf,
    pub identity: Option<PathBuf>,
    /// Directory for the connection-sharing socket (one master connection per node).
    pub control_dir: PathBuf,
    pub connect_timeout: u64,
}

/// The node's first configured address (IPv4, else IPv6) without its prefix length.
pub fn node_address(cfg: &NodeConfig) -> Option<String> {
    let strip = |a: &str| a.split('/').next().unwrap_or(a).to_string();
    cfg.node.ipv4.as_ref().map(|v4| strip(&v4.address)).or_else(|| cfg.node.ipv6.as_ref().map(|v6| strip(&v6.address)))
}

/// `NODE=HOST[:PORT]` (an IPv6 host in brackets when a port follows).
pub fn parse_connect(s: &str) -> Result<(String, String, Option<u16>), String> {
    let (node, target) = s.split_once('=').ok_or_else(|| format!("{s}: expected NODE=HOST[:PORT]"))?;
    if node.is_empty() {
        return Err(format!("{s}: expected NODE=HOST[:PORT]"));
    }
    let a = hostkit::net::Authority::parse(target).map_err(|e| format!("{s}: {e}"))?;
    let (host, port) = (a.host_bare(), a.port);
    Ok((node.to_string(), host, port))
}

impl Ssh {
    fn command(&self) -> Command {
        let mut c = Command::new("ssh");
        c.args(["-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes"])
            .arg("-o")
            .arg(format!("UserKnownHostsFile={}", self.known_hosts.display()))
            .args(["-o", "GlobalKnownHostsFile=/dev/null", "-o", "CheckHostIP=no"])
            .arg("-o")
            .arg(format!("HostKeyAlias={}", self.fqdn))
            .args(["-o", "ControlMaster=auto", "-o", "ControlPersist=120"])
            .arg("-o")
            .arg(format!("ControlPath={}", self.control_dir.join("%C").display()))
            .arg("-o")
            .arg(format!("ConnectTimeout={}", self.connect_timeout))
            .args(["-o", "ServerAliveInterval=10", "-o", "ServerAliveCountMax=3"])
            .arg("-p")
            .arg(self.port.to_string());
        if let Some(id) = &self.identity {
            c.arg("-i").arg(id).args(["-o", "IdentitiesOnly=yes"]);
        }
        c.arg(format!("{ADMIN_USER}@{}", self.host)).arg("--");
        c
    }

    /// Run `remote` (a shell command line on the node); failure names the node and the command.
    pub fn run(&self, remote: &str, input: Option<&[u8]>) -> Result<Output> {
        let mut c = self.command();
        c.arg(remote);
        let out = match input {
            Some(bytes) => hostkit::cmd::run_with_input(&mut c, bytes.to_vec()),
            None => hostkit::cmd::run(&mut c),
        };
        out.map_err(|e| e.context(format!("{} ({}:{})", self.fqdn, self.host, self.port)))
    }

    /// Like [`Ssh::run`], but the remote exit codes in `ok` are answers (mm-firstboot's 3).
    pub fn run_codes(&self, remote: &str, input: Option<&[u8]>, ok: &[i32]) -> Result<Output> {
        let mut c = self.command();
        c.arg(remote);
        let out = match input {
            Some(bytes) => hostkit::cmd::run_with_input_codes(&mut c, bytes.to_vec(), ok),
            None => hostkit::cmd::run_codes(&mut c, ok),
        };
        out.map_err(|e| e.context(format!("{} ({}:{})", self.fqdn, self.host, self.port)))
    }

    /// Run `remote` with `file` compressed by zstd on its stdin, streamed (nothing is held in
    /// memory or on disk); the node's output and the compressed bytes sent.
    pub fn run_streaming_zstd(&self, remote: &str, file: &Path) -> Result<(Output, u64)> {
        use std::io::{Read, Write};
        use std::process::Stdio;
        let mut zstd = Command::new("zstd")
            .args(["-q", "-c", "-T0", "-3"])
            .arg(file)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting zstd")?;
        let mut c = self.command();
        c.arg(remote).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let shown = format!("ssh {}@{} {remote}", ADMIN_USER, self.host);
        let mut child = c.spawn().with_context(|| format!("starting `{shown}`"))?;
        let mut to_node = child.stdin.take().context("ssh's stdin")?;
        let mut from_zstd = zstd.stdout.take().context("zstd's stdout")?;
        let pump = std::thread::spawn(move || -> std::io::Result<u64> {
            let mut buf = vec![0u8; 1 << 20];
            let mut sent = 0u64;
            loop {
                let n = from_zstd.read(&mut buf)?;
                if n == 0 {
                    return Ok(sent);
                }
                to_node.write_all(&buf[..n])?;
                sent += n as u64;
            }
        });
        let out = child.wait_with_output().with_context(|| format!("waiting for `{shown}`"))?;
        let sent = pump.join().map_err(|_| anyhow::anyhow!("the sending thread panicked"))?;
        // The node's refusal first: it may stop reading before zstd is done, which breaks zstd's pipe.
        if !out.status.success() {
            return Err(anyhow::Error::new(hostkit::cmd::Failed {
                command: shown,
                status: out.status,
                why: hostkit::cmd::tail(&out.stderr, 15),
            })
            .context(format!("{} ({}:{})", self.fqdn, self.host, self.port)));
        }
        let z = zstd.wait_with_output().context("waiting for zstd")?;
        if !z.status.success() {
            anyhow::bail!("zstd -c {} failed: {}", file.display(), hostkit::cmd::tail(&z.stderr, 5));
        }
        let sent = sent.with_context(|| format!("sending {} to {}", file.display(), self.fqdn))?;
        Ok((out, sent))
    }

    /// Close the shared connection (ignored when none is open).
    pub fn close(&self) {
        let mut c = self.command();
        c.args(["-O", "exit"]);
        let _ = c.stdin(std::process::Stdio::null()).output();
    }
}

/// A private directory for the control sockets (sockets must not be reachable by others).
pub fn control_dir() -> Result<tempfile::TempDir> {
    // Short path: a unix socket path is limited to ~100 bytes.
    Ok(tempfile::Builder::new().prefix("mm-ssh.").tempdir_in(Path::new("/tmp"))?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_overrides_parse() {
        assert_eq!(parse_connect("ci=127.0.0.1:2222").unwrap(), ("ci".into(), "127.0.0.1".into(), Some(2222)));
        assert_eq!(parse_connect("ci=[::1]:22").unwrap(), ("ci".into(), "::1".into(), Some(22)));
        assert_eq!(parse_connect("ci=2001:db8::5").unwrap(), ("ci".into(), "2001:db8::5".into(), None));
        assert_eq!(parse_connect("ci=node.example").unwrap(), ("ci".into(), "node.example".into(), None));
        assert!(parse_connect("ci").is_err());
        assert!(parse_connect("ci=h:x").unwrap_err().contains("bad port"));
    }
}
