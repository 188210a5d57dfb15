//! The node's network as seen from its port: a private network namespace holding the gateway,
//! the resolvers, the stand-in upstreams and a client inside one of the fleet's admin prefixes.
//!
//! The namespace belongs to the calling thread (unshare(2) on that thread only): every socket
//! the thread opens and every process it starts (QEMU, dnsmasq, rsync, ssh-keyscan) lives in it,
//! and it vanishes with them, so a killed run leaves nothing behind on the host.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use ipnet::IpNet;
use mmconfig::NodeConfig;

use hostkit::cmd::run;

/// Name of the bridge standing for the sponsor's switch.
const BRIDGE: &str = "mmbt-br";

/// Daemons started in the namespace; killed when dropped.
pub struct Lab {
    daemons: Vec<(String, Child)>,
}

fn ip(args: &[&str]) -> Result<()> {
    run(Command::new("ip").args(args)).map(|_| ())
}

/// `addr` (with prefix length) on `dev`; IPv6 without duplicate address detection, which would
/// hold the address back for a second and a half.
fn add_addr(addr: IpAddr, prefix_len: u8, dev: &str) -> Result<()> {
    let cidr = format!("{addr}/{prefix_len}");
    if addr.is_ipv6() {
        ip(&["addr", "add", &cidr, "dev", dev, "nodad"])
    } else {
        ip(&["addr", "add", &cidr, "dev", dev])
    }
}

fn host_len(a: IpAddr) -> u8 {
    if a.is_ipv6() {
        128
    } else {
        32
    }
}

/// Moves the calling thread into a new, empty network namespace with loopback up.
pub fn enter_private_netns() -> Result<()> {
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).context("unshare(CLONE_NEWNET): boot-test needs root")?;
    ip(&["link", "set", "lo", "up"])
}

fn addr_of(s: &str) -> Result<IpNet> {
    s.parse::<IpNet>().with_context(|| format!("address {s:?} of the node configuration"))
}

/// The first address of an admin prefix of `family` that is neither the node's nor its gateway's.
fn admin_client(cfg: &NodeConfig, v6: bool, taken: &[IpAddr]) -> Option<IpAddr> {
    cfg.fleet
        .admin_prefixes
        .iter()
        .filter_map(|p| p.parse::<IpNet>().ok())
        .filter(|p| matches!(p, IpNet::V6(_)) == v6)
        .find_map(|p| p.hosts().take(16).find(|a| !taken.contains(a)))
}

impl Lab {
    /// Bridge with one tap per NIC, the gateways on the bridge, the resolvers and stand-in
    /// upstream addresses on loopback, and a /32 (/128) route to the node from the client address.
    /// Call on a thread that ran [`enter_private_netns`].
    pub fn wire(cfg: &NodeConfig, taps: &[String], local: &[IpAddr]) -> Result<Lab> {
        ip(&["link", "add", "name", BRIDGE, "type", "bridge", "forward_delay", "0", "stp_state", "0"])?;
        for tap in taps {
            ip(&["tuntap", "add", "dev", tap, "mode", "tap"])?;
            ip(&["link", "set", tap, "master", BRIDGE, "up"])?;
        }
        ip(&["link", "set", BRIDGE, "up"])?;
        let n = &cfg.node;
        let mut on_bridge: Vec<IpAddr> = Vec::new();
        for (node_addr, gateway, v6) in [
            (n.ipv4.as_ref().map(|a| a.address.as_str()), n.ipv4.as_ref().map(|a| a.gateway.as_str()), false),
            (n.ipv6.as_ref().map(|a| a.address.as_str()), n.ipv6.as_ref().map(|a| a.gateway.as_str()), true),
        ] {
            let (Some(node_addr), Some(gateway)) = (node_addr, gateway) else { continue };
            let node_net = addr_of(node_addr)?;
            let gw: IpAddr = gateway.parse().with_context(|| format!("gateway {gateway:?} of node {}", n.name))?;
            // The gateway with the node's prefix length: on-link like the sponsor's router.
            add_addr(gw, if is_link_local(gw) { 64 } else { node_net.prefix_len() }, BRIDGE)?;
            on_bridge.push(gw);
            // The checks connect from inside an admin prefix where the fleet has one (ssh and
            // metrics are open only to those), else from the gateway.
            let from = admin_client(cfg, v6, &[node_net.addr(), gw]).unwrap_or(gw);
            if from != gw {
                add_addr(from, host_len(from), BRIDGE)?;
                on_bridge.push(from);
            }
            let to = format!("{}/{}", node_net.addr(), host_len(from));
            ip(&["route", "replace", &to, "dev", BRIDGE, "src", &from.to_string()])?;
        }
        for a in local.iter().filter(|a| !on_bridge.contains(a)) {
            add_addr(*a, host_len(*a), "lo")?;
        }
        Ok(Lab { daemons: Vec::new() })
    }

    /// Starts a daemon that stays in the foreground; its output goes to `log`.
    pub fn start(&mut self, what: &str, mut cmd: Command, log: &Path) -> Result<()> {
        let out = std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let err = out.try_clone().context("duplicating a log file handle")?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .with_context(|| format!("starting {what}: {}", hostkit::cmd::describe(&cmd)))?;
        self.daemons.push((what.to_string(), child));
        Ok(())
    }

    /// Waits until `addr` accepts TCP connections (or UDP daemons had time to bind), failing
    /// with the daemon's log when one of them exited.
    pub fn wait_listening(&mut self, addr: SocketAddr, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if hostkit::net::Conn::open(addr, Duration::from_millis(300)).is_ok() {
                return Ok(());
            }
            for (what, child) in &mut self.daemons {
                if let Ok(Some(status)) = child.try_wait() {
                    bail!("{what} exited ({status}) before {addr} answered");
                }
            }
            if Instant::now() > deadline {
                bail!("nothing listens on {addr} after {} s", timeout.as_secs());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn is_link_local(a: IpAddr) -> bool {
    match a {
        IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) == 0xfe80,
        IpAddr::V4(v4) => v4.is_link_local(),
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for (_, child) in &mut self.daemons {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The node's own addresses (without prefix), IPv4 first.
pub fn node_addrs(cfg: &NodeConfig) -> Vec<IpAddr> {
    let n = &cfg.node;
    let v4 = n.ipv4.as_ref().and_then(|a| a.address.parse::<ipnet::Ipv4Net>().ok()).map(|a| IpAddr::V4(a.addr()));
    let v6 = n.ipv6.as_ref().and_then(|a| a.address.parse::<ipnet::Ipv6Net>().ok()).map(|a| IpAddr::V6(a.addr()));
    v4.into_iter().chain(v6).collect()
}
