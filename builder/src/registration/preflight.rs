//! `--check`: is a node ready to be registered? Plain HTTP GETs of the upstream checker's marker
//! files and of the node's own trace, and the rsync daemon's module list, per address family.
//!
//! The connections are hostkit's network layer, as `mmbuild status` uses.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hostkit::net::{self, NetError};
use mmconfig::{NodeConfig, Profile};

/// How to reach the nodes.
#[derive(Debug, Clone)]
pub struct Probe {
    /// Per node name, addresses to probe instead of the node's own (tests, NAT, a jump host).
    pub connect: BTreeMap<String, Vec<IpAddr>>,
    pub http_port: u16,
    /// Probed only where the fleet serves HTTPS.
    pub https_port: u16,
    pub rsync_port: u16,
    /// CA bundle for HTTPS instead of the system's (a private CA, a test).
    pub cacert: Option<std::path::PathBuf>,
    pub timeout: Duration,
    pub now: SystemTime,
}

impl Default for Probe {
    fn default() -> Self {
        Probe {
            connect: BTreeMap::new(),
            http_port: 80,
            https_port: 443,
            rsync_port: 873,
            cacert: None,
            timeout: Duration::from_secs(10),
            now: SystemTime::now(),
        }
    }
}

/// Endpoints that refused or timed out, with the error: asked once per node, not once per project.
pub type Unreachable = BTreeMap<SocketAddr, String>;

/// One node's project to probe, with the markers its upstream reads.
pub type Pair<'a> = (&'a NodeConfig, &'a Profile, &'a [String]);

/// Every node's problems per project, the nodes probed in parallel (a dead node costs its
/// timeouts once, not once per node before it).
pub fn check_all(pairs: &[Pair<'_>], probe: &Probe) -> BTreeMap<(String, String), Vec<String>> {
    let mut by_node: BTreeMap<&str, Vec<Pair<'_>>> = BTreeMap::new();
    for &(c, p, m) in pairs {
        by_node.entry(c.node.name.as_str()).or_default().push((c, p, m));
    }
    std::thread::scope(|s| {
        let handles: Vec<_> = by_node
            .into_values()
            .map(|list| {
                s.spawn(move || {
                    let mut dead = Unreachable::new();
                    list.into_iter()
                        .map(|(c, p, m)| ((c.node.name.clone(), p.name.clone()), check(c, p, m, probe, &mut dead)))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().expect("a probe thread panicked")).collect()
    })
}

/// Everything that keeps `project` on `cfg` from being registered; empty = ready.
pub fn check(cfg: &NodeConfig, p: &Profile, markers: &[String], probe: &Probe, dead: &mut Unreachable) -> Vec<String> {
    let addrs: Vec<IpAddr> = match probe.connect.get(&cfg.node.name) {
        Some(a) => a.clone(),
        None => [cfg.node.ipv4.as_ref().map(|a| &a.address), cfg.node.ipv6.as_ref().map(|a| &a.address)]
            .into_iter()
            .flatten()
            .filter_map(|a| a.split('/').next()?.parse().ok())
            .collect(),
    };
    let mut problems = Vec::new();
    for ip in addrs {
        // Each family on its own: a broken IPv6 path fails a registration as surely as a broken IPv4 one.
        let family = if ip.is_ipv4() { "IPv4" } else { "IPv6" };
        let http = SocketAddr::new(ip, probe.http_port);
        let mut say = |what: String| problems.push(format!("{family} {ip}: {what}"));
        let base = format!("http://{}{}", cfg.node.fqdn, p.http_path);
        let reach = match dead.get(&http) {
            Some(e) => Err(e.clone()),
            None => http_get(http, &cfg.node.fqdn, &p.http_path, probe.timeout),
        };
        match reach {
            Err(e) => {
                say(format!("HTTP port {} unreachable ({e})", probe.http_port));
                dead.insert(http, e);
            }
            Ok(_) => {
                for m in markers {
                    match http_get(http, &cfg.node.fqdn, &format!("{}{m}", p.http_path), probe.timeout) {
                        Err(e) => say(format!("{base}{m}: {e}")),
                        Ok((200, body)) if m.ends_with("repomd.xml") && !String::from_utf8_lossy(&body).contains("<repomd") => {
                            say(format!("{base}{m} is not repository metadata (altered in transit?)"))
                        }
                        Ok((200, _)) => {}
                        Ok((code, _)) => say(format!("{base}{m}: HTTP {code} (the upstream's checker reads it)")),
                    }
                }
                let trace = format!("{}/{}", p.freshness.trace_dir.trim_matches('/'), cfg.node.fqdn);
                match http_get(http, &cfg.node.fqdn, &format!("{}{trace}", p.http_path), probe.timeout) {
                    Err(e) => say(format!("{base}{trace}: {e}")),
                    Ok((200, body)) => {
                        let first = String::from_utf8_lossy(&body).lines().next().unwrap_or("").to_string();
                        // Either form mmbuild status reads: mm-sync writes `date -u`, as ftpsync does.
                        match mmconfig::marker::parse_date(first.trim()).and_then(|t| i64::try_from(t).ok()) {
                            None => {
                                say(format!("{base}{trace}: first line \"{}\" is not a date", first.chars().take(60).collect::<String>()))
                            }
                            Some(at) => {
                                let now = probe.now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
                                let age_min = (now - at) / 60;
                                let limit = i64::from(p.sync.max_interval_minutes);
                                if age_min > limit {
                                    say(format!(
                                        "last sync finished {} ago, more than the {} the project allows",
                                        minutes(age_min),
                                        minutes(limit)
                                    ));
                                }
                            }
                        }
                    }
                    Ok((code, _)) => say(format!("{base}{trace}: HTTP {code}: no complete sync of {} yet", p.name)),
                }
            }
        }
        if cfg.fleet.https {
            // The certificate verified for the node's name, as the upstreams' checkers do.
            let base = format!("https://{}:{}{}", cfg.node.fqdn, probe.https_port, p.http_path);
            let https = SocketAddr::new(ip, probe.https_port);
            let ca = probe.cacert.as_deref();
            let first = match dead.get(&https) {
                Some(e) => Err(e.clone()),
                None => match net::tls::probe(https, &cfg.node.fqdn, ca, probe.timeout) {
                    Ok(seen) if seen.verify.ok() => Ok(()),
                    Ok(seen) => Err(format!("the certificate does not verify for {}: {}", cfg.node.fqdn, seen.verify)),
                    Err(e) => Err(e.to_string()),
                },
            };
            match first {
                Err(e) => {
                    say(format!("HTTPS: {e}"));
                    dead.insert(https, e);
                }
                Ok(()) => {
                    for m in markers {
                        match net::tls::https_get(https, &cfg.node.fqdn, &format!("{}{m}", p.http_path), ca, probe.timeout) {
                            Ok(r) if r.status == 200 => {}
                            Ok(r) => say(format!("{base}{m}: HTTP {}", r.status)),
                            Err(e) => say(format!("{base}{m}: {e}")),
                        }
                    }
                }
            }
        }
        let rsync = SocketAddr::new(ip, probe.rsync_port);
        let listed = match dead.get(&rsync) {
            Some(e) => Err((true, e.clone())),
            None => net::rsync_list(rsync, probe.timeout).map(|l| l.modules).map_err(|e| match e {
                // It answered, in another protocol: the address is alive for the other probes.
                NetError::Protocol(..) => (false, e.to_string()),
                e => (true, format!("unreachable ({e})")),
            }),
        };
        match listed {
            Err((dead_address, e)) => {
                say(format!("rsync port {}: {e}", probe.rsync_port));
                if dead_address {
                    dead.insert(rsync, e);
                }
            }
            Ok(mods) if !mods.iter().any(|m| m == &p.rsync_module) => {
                say(format!("the rsync daemon does not offer the module \"{}\" (offers: {})", p.rsync_module, mods.join(", ")))
            }
            Ok(_) => {}
        }
    }
    problems
}

fn minutes(m: i64) -> String {
    if m >= 120 {
        format!("{} h", m / 60)
    } else {
        format!("{m} min")
    }
}

/// One HTTP/1.0 GET through hostkit's network layer: the status and at most 1 MiB of body.
pub fn http_get(addr: SocketAddr, host: &str, path: &str, timeout: Duration) -> Result<(u16, Vec<u8>), String> {
    net::http(addr, host, "GET", path, timeout).map(|r| (r.status, r.body)).map_err(|e| e.to_string())
}
