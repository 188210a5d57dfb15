//! One node over the real OpenSSH client: the node's key checked against the build's
//! `known_hosts` (never trust on first use), batch mode, one reused connection per node.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use anyhow::{Context, Result};
use hostkit::net::Authority;
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

/// `--connect NODE=HOST[:PORT]`, the one grammar of every verb that reaches nodes: reach NODE at
/// HOST (an IPv6 address in brackets when a port follows; a bare one is taken too) instead of
/// its inventory address. hostkit's [`Authority`] parses the HOST[:PORT] part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connect {
    pub node: String,
    pub at: Authority,
}

impl std::str::FromStr for Connect {
    type Err = String;
    fn from_str(s: &str) -> Result<Connect, String> {
        let (node, target) = s.split_once('=').ok_or_else(|| format!("{s}: expected NODE=HOST[:PORT]"))?;
        if node.is_empty() {
            return Err(format!("{s}: expected NODE=HOST[:PORT]"));
        }
        let at = Authority::parse(target).map_err(|e| format!("{s}: {e}"))?;
        Ok(Connect { node: node.to_string(), at })
    }
}

/// `NODE=HOST[:PORT]` as (node, host without brackets, port).
pub fn parse_connect(s: &str) -> Result<(String, String, Option<u16>), String> {
    let c: Connect = s.parse()?;
    Ok((c.node, c.at.host_bare(), c.at.port))
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
        let mut from_zstd = zstd.stdout.take().context("zstd's stdout")?;
        let mut c = self.command();
        c.arg(remote);
        // hostkit's runner judges ssh (the node's refusal first, its exit code kept for the caller).
        let pumped = hostkit::cmd::run_feeding(&mut c, &[0], move |mut to_node| -> std::io::Result<u64> {
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
        let (out, sent) = match pumped {
            Ok(done) => done,
            Err(e) => {
                let _ = zstd.kill();
                let _ = zstd.wait();
                return Err(e.context(format!("{} ({}:{})", self.fqdn, self.host, self.port)));
            }
        };
        let z = zstd.wait_with_output().context("waiting for zstd")?;
        if !z.status.success() {
            anyhow::bail!("zstd -c {} failed: {}", file.display(), hostkit::cmd::tail(&z.stderr, 5));
        }
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
