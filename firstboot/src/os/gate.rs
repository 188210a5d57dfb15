//! The health gate of a slot on trial: the node must really work before systemd-bless-boot keeps
//! the slot. Only what an image can break counts: an unreachable upstream or a dead uplink
//! would fail the previous slot as well, so they never roll an update back.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use mmconfig::os::{GateRecord, GATE_DIR};
use mmconfig::{NodeConfig, DATA_LABEL, DATA_MOUNT};

/// What the gate reads from the running node.
#[derive(Debug, Clone)]
pub struct Facts {
    /// `ip -brief address` output.
    pub addresses: String,
    /// sshd's greeting on the loopback, or why there is none.
    pub ssh: Result<String, String>,
    /// A filesystem labelled MMDATA exists, and whether it is mounted at /srv/mirror.
    pub data_exists: bool,
    pub data_mounted: bool,
    /// What nginx and rsyncd do not serve yet (readback's words).
    pub serving: Vec<String>,
    /// Serving units that are masked or failed: they will not come up by waiting.
    pub broken: Vec<String>,
}

/// The units a node serves with.
const SERVING_UNITS: [&str; 3] = ["nginx.service", "rsync.service", "ssh.service"];

/// Every reason the slot is not healthy yet; empty: bless it.
pub fn problems(cfg: &NodeConfig, f: &Facts) -> Vec<String> {
    let mut out = Vec::new();
    let assigned = |addr: &str| f.addresses.split_whitespace().any(|w| w == addr);
    for addr in [cfg.node.ipv4.as_ref().map(|a| &a.address), cfg.node.ipv6.as_ref().map(|a| &a.address)].into_iter().flatten() {
        if !assigned(addr) {
            out.push(format!("the address {addr} is not configured on any interface"));
        }
    }
    match &f.ssh {
        Ok(greeting) if greeting.starts_with("SSH-2.0-") => {}
        Ok(other) => out.push(format!("sshd answers {other:?}, not an SSH-2.0 greeting")),
        Err(e) => out.push(format!("sshd does not answer on port 22: {e}")),
    }
    if f.data_exists && !f.data_mounted {
        out.push(format!("the {DATA_LABEL} filesystem is not mounted at {DATA_MOUNT}"));
    }
    out.extend(f.broken.iter().map(|u| format!("{u} is broken")));
    out.extend(f.serving.iter().cloned());
    out
}

/// `systemctl show -p Id,LoadState,ActiveState` output: the units masked or failed.
pub fn broken_units(show: &str) -> Vec<String> {
    show.split("\n\n")
        .filter_map(|block| {
            let field = |k: &str| block.lines().find_map(|l| l.strip_prefix(k)?.strip_prefix('='));
            let (id, load, active) = (field("Id")?, field("LoadState")?, field("ActiveState")?);
            (load == "masked" || active == "failed").then(|| format!("{id} ({load}, {active})"))
        })
        .collect()
}

fn observe(cfg: &NodeConfig) -> Facts {
    let data = Path::new(DATA_MOUNT);
    let data_mounted = crate::probe::mount_source(data).is_some();
    let want = crate::readback::Expect::new(cfg, |dir| data_mounted && data.join(dir).is_dir(), &[]);
    let http = SocketAddr::from(([127, 0, 0, 1], 80));
    let rsync = SocketAddr::from(([127, 0, 0, 1], 873));
    Facts {
        addresses: hostkit::cmd::text("ip", &["-brief", "address"]).unwrap_or_default(),
        ssh: greeting(SocketAddr::from(([127, 0, 0, 1], 22))),
        data_exists: hostkit::cmd::text("blkid", &["-L", DATA_LABEL]).is_ok(),
        data_mounted,
        serving: crate::readback::unmet(&want, &crate::readback::observe(&want, http, rsync)),
        broken: broken_units(
            &hostkit::cmd::text("systemctl", &[&["show", "-p", "Id,LoadState,ActiveState"][..], &SERVING_UNITS[..]].concat())
                .unwrap_or_default(),
        ),
    }
}

fn greeting(addr: SocketAddr) -> Result<String, String> {
    hostkit::net::greeting(addr, Duration::from_secs(3)).map_err(|e| e.to_string())
}

/// Judge the running slot until it is healthy or `within` has passed, and keep the verdict on
/// the ESP (the other slot reads it if this one rolls back).
pub fn run(cfg: &NodeConfig, within: Duration) -> Result<GateRecord> {
    let slot = super::running_slot().context("the running root is not in an A/B slot")?;
    let version = super::running_version().context("the running root has no IMAGE_VERSION")?;
    let started = Instant::now();
    let problems = loop {
        let facts = observe(cfg);
        let p = problems(cfg, &facts);
        if p.is_empty() || !facts.broken.is_empty() || started.elapsed() >= within {
            break p;
        }
        std::thread::sleep(Duration::from_secs(2));
    };
    let record = GateRecord {
        version,
        slot,
        passed: problems.is_empty(),
        problems,
        at: SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()),
    };
    let esp = super::mount_esp()?;
    let dir = esp.join(GATE_DIR);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join(format!("gate-{}-{}.json", record.version, record.slot));
    hostkit::atomic::write(&path, serde_json::to_string_pretty(&record)?.as_bytes())?;
    Ok(record)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn healthy() -> Facts {
        Facts {
            addresses: "lo UNKNOWN 127.0.0.1/8 ::1/128\nenp1s0 UP 192.0.2.10/24 2001:db8::10/64 fe80::1/64\n".into(),
            ssh: Ok("SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u7".into()),
            data_exists: true,
            data_mounted: true,
            serving: vec![],
            broken: vec![],
        }
    }

    /// (what the node shows) -> (the gate's verdict): each check fails alone.
    #[test]
    fn the_gate_passes_only_a_node_that_serves() {
        let mut cfg = crate::testdata::nodes().remove(0);
        cfg.node.ipv4 = Some(mmconfig::Ipv4Config { address: "192.0.2.10/24".into(), gateway: "192.0.2.1".into() });
        cfg.node.ipv6 = Some(mmconfig::Ipv6Config { address: "2001:db8::10/64".into(), gateway: "2001:db8::1".into() });
        assert_eq!(problems(&cfg, &healthy()), Vec::<String>::new());
        let table: [(&str, Facts, &str); 7] = [
            (
                "rsyncd masked",
                Facts { broken: vec!["rsync.service (masked, inactive)".into()], ..healthy() },
                "rsync.service (masked, inactive) is broken",
            ),
            (
                "v6 address missing",
                Facts { addresses: "enp1s0 UP 192.0.2.10/24\n".into(), ..healthy() },
                "2001:db8::10/64 is not configured",
            ),
            (
                "a prefix of the address is not it",
                Facts { addresses: "enp1s0 UP 192.0.2.100/24 2001:db8::10/64\n".into(), ..healthy() },
                "192.0.2.10/24",
            ),
            ("sshd down", Facts { ssh: Err("Connection refused".into()), ..healthy() }, "sshd does not answer"),
            ("something else on 22", Facts { ssh: Ok("HTTP/1.1 400".into()), ..healthy() }, "not an SSH-2.0 greeting"),
            ("data not mounted", Facts { data_mounted: false, ..healthy() }, "MMDATA filesystem is not mounted"),
            ("nginx not serving", Facts { serving: vec!["HTTP /epel/ answers 502, not 200".into()], ..healthy() }, "502"),
        ];
        for (case, facts, want) in table {
            let p = problems(&cfg, &facts);
            assert!(p.len() == 1 && p[0].contains(want), "{case}: {p:?}");
        }
        let show = "Id=nginx.service\nLoadState=loaded\nActiveState=active\n\nId=rsync.service\nLoadState=masked\nActiveState=inactive\n\nId=ssh.service\nLoadState=loaded\nActiveState=failed\n";
        assert_eq!(broken_units(show), ["rsync.service (masked, inactive)", "ssh.service (loaded, failed)"]);
        // No data disk at all (a node waiting for its disk) is not the image's fault.
        assert!(problems(&cfg, &Facts { data_exists: false, data_mounted: false, ..healthy() }).is_empty());
    }
}
