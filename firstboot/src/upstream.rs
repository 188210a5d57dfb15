//! Turn-up check of each hosted project's upstream from this node's network, per address family.
//!
//! A sponsor network that blocks outbound rsync is what the on-site engineer must hear about
//! before leaving: the console verdict includes these problems.

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use hostkit::net::{Authority, Conn, NetError};

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Family {
    IPv4,
    IPv6,
}

/// What an upstream URL names: scheme, host, port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub scheme: String,
    pub host: String,
    pub port: u16,
}

/// `rsync://host[:port]/module/`, `http://...`, `https://...`; IPv6 literals in brackets.
pub fn parse_url(url: &str) -> Option<Target> {
    let (scheme, rest) = url.split_once("://")?;
    let default = match scheme {
        "rsync" => 873,
        "http" => 80,
        "https" => 443,
        _ => return None,
    };
    let authority = Authority::parse(rest.split('/').next()?).ok()?;
    Some(Target { scheme: scheme.to_string(), host: authority.host_bare(), port: authority.port.unwrap_or(default) })
}

/// How the upstream answered over one family.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", content = "detail", rename_all = "kebab-case")]
pub enum Reach {
    /// The greeting (rsync), a response (http) or a connection (https) came back.
    Answers,
    /// The name has no address of this family.
    NoAddress,
    /// The name did not resolve at all.
    Unresolved(String),
    /// Addresses exist but nothing useful came back.
    Fails(String),
}

/// The state of a project's sync as the console reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", content = "detail", rename_all = "kebab-case")]
pub enum SyncState {
    NeverRun,
    Running,
    Succeeded { age_seconds: u64 },
    Failed(String),
}

/// One project's upstream as seen from this node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Upstream {
    pub project: String,
    pub url: String,
    /// Per family the node has an address in.
    pub families: Vec<(Family, Reach)>,
    pub sync: SyncState,
}

/// Ask `url`'s upstream to speak over `family` within `timeout`.
pub fn probe(url: &str, family: Family, timeout: Duration) -> Reach {
    let Some(t) = parse_url(url) else { return Reach::Fails(format!("{url} is not an rsync or http(s) URL")) };
    let addrs: Vec<SocketAddr> = match (t.host.as_str(), t.port).to_socket_addrs() {
        Ok(a) => a.collect(),
        Err(e) => return Reach::Unresolved(e.to_string()),
    };
    let addrs: Vec<SocketAddr> = addrs.into_iter().filter(|a| a.is_ipv4() == (family == Family::IPv4)).collect();
    if addrs.is_empty() {
        return Reach::NoAddress;
    }
    // Two addresses at most (a round-robin name): the turn-up check must stay short.
    let mut last = String::new();
    for a in addrs.iter().take(2) {
        match speak(&t, *a, timeout) {
            Ok(()) => return Reach::Answers,
            Err(e) => last = format!("{a}: {e}"),
        }
    }
    Reach::Fails(last)
}

fn speak(t: &Target, addr: SocketAddr, timeout: Duration) -> Result<(), String> {
    let mut c = Conn::open(addr, timeout).map_err(|e| e.to_string())?;
    let no_greeting = |e: NetError| match e {
        NetError::Timeout(_) => format!("connected, but no greeting within {timeout:?}"),
        e => e.to_string(),
    };
    let want: &[u8] = match t.scheme.as_str() {
        "rsync" => b"@RSYNCD:",
        "http" => {
            // The Host header is the URL's authority: an IPv6 literal in brackets, a port unless 80.
            let host = Authority::parse(&t.host).map_err(|e| e.to_string())?.host_text();
            let host = if t.port == 80 { host } else { format!("{host}:{}", t.port) };
            c.write(format!("HEAD / HTTP/1.0\r\nHost: {host}\r\nUser-Agent: mm-firstboot\r\n\r\n").as_bytes()).map_err(no_greeting)?;
            b"HTTP/"
        }
        // No TLS client on the node: an accepted connection on 443 is what the network decides.
        _ => return Ok(()),
    };
    let mut buf = Vec::new();
    c.read_until(&mut buf, |b| b.len() >= want.len()).map_err(no_greeting)?;
    if buf.starts_with(want) {
        Ok(())
    } else {
        let seen: String = String::from_utf8_lossy(&buf).chars().take(40).filter(|c| !c.is_control()).collect();
        Err(format!("unexpected answer {seen:?} (a proxy or captive portal?)"))
    }
}

/// Probe every hosted project's upstream over each family the node has, all at once (distinct
/// URLs once); `sync_state` says where each project's sync stands.
pub fn observe(cfg: &mmconfig::NodeConfig, sync_state: impl Fn(&str) -> SyncState, timeout: Duration) -> Vec<Upstream> {
    let mut fams = Vec::new();
    if cfg.node.ipv4.is_some() {
        fams.push(Family::IPv4);
    }
    if cfg.node.ipv6.is_some() {
        fams.push(Family::IPv6);
    }
    let mut urls: Vec<&str> = cfg.projects.iter().map(|p| p.sync.upstream.as_str()).collect();
    urls.sort();
    urls.dedup();
    let results: Vec<((&str, Family), Reach)> = std::thread::scope(|s| {
        let handles: Vec<_> =
            urls.iter().flat_map(|u| fams.iter().map(move |f| ((*u, *f), s.spawn(move || probe(u, *f, timeout))))).collect();
        handles.into_iter().map(|(k, h)| (k, h.join().unwrap_or_else(|_| Reach::Fails("probe panicked".into())))).collect()
    });
    cfg.projects
        .iter()
        .map(|p| Upstream {
            project: p.name.clone(),
            url: p.sync.upstream.clone(),
            families: fams
                .iter()
                .map(|f| {
                    (*f, results.iter().find(|((u, g), _)| *u == p.sync.upstream && g == f).map_or(Reach::NoAddress, |(_, r)| r.clone()))
                })
                .collect(),
            sync: sync_state(&p.name),
        })
        .collect()
}

fn family_name(f: Family) -> &'static str {
    match f {
        Family::IPv4 => "IPv4",
        Family::IPv6 => "IPv6",
    }
}

fn human_age(secs: u64) -> String {
    match secs {
        0..=3599 => format!("{} min ago", secs / 60),
        3600..=172_799 => format!("{} h ago", secs / 3600),
        _ => format!("{} days ago", secs / 86400),
    }
}

/// Console lines and problems for one upstream: pure, so every combination is unit-tested.
pub fn verdict(u: &Upstream) -> (Vec<String>, Vec<String>) {
    let mut problems = Vec::new();
    let port = parse_url(&u.url).map_or(0, |t| t.port);
    let what = |f: &Family, r: &Reach| {
        let state = match r {
            Reach::Answers => "answers".to_string(),
            Reach::NoAddress => "no address".to_string(),
            Reach::Unresolved(_) => "name does not resolve".to_string(),
            Reach::Fails(e) => format!("no answer ({e})"),
        };
        format!("{} {state}", family_name(*f))
    };
    let per_family: Vec<String> = u.families.iter().map(|(f, r)| what(f, r)).collect();
    let sync = match &u.sync {
        SyncState::NeverRun => "first sync not started yet".to_string(),
        SyncState::Running => "first sync running".to_string(),
        SyncState::Succeeded { age_seconds } => format!("last sync ok {}", human_age(*age_seconds)),
        SyncState::Failed(m) => format!("last sync FAILED: {m}"),
    };
    let lines = vec![format!("upstream of {}: {} - {}; {sync}", u.project, u.url, per_family.join(", "))];

    let answering: Vec<Family> = u.families.iter().filter(|(_, r)| *r == Reach::Answers).map(|(f, _)| *f).collect();
    let failing: Vec<Family> = u.families.iter().filter(|(_, r)| matches!(r, Reach::Fails(_))).map(|(f, _)| *f).collect();
    let unresolved = u.families.iter().find_map(|(_, r)| if let Reach::Unresolved(e) = r { Some(e.clone()) } else { None });
    if let Some(e) = unresolved.filter(|_| answering.is_empty()) {
        let host = parse_url(&u.url).map(|t| t.host).unwrap_or_default();
        problems.push(format!("upstream {} cannot be looked up ({host}: {e}): check that DNS works from this network", u.url));
    } else if !failing.is_empty() && answering.is_empty() {
        problems.push(format!("upstream {} does not answer from this network (outbound TCP {port})", u.url));
    } else if !failing.is_empty() {
        let bad: Vec<&str> = failing.iter().map(|f| family_name(*f)).collect();
        let good: Vec<&str> = answering.iter().map(|f| family_name(*f)).collect();
        problems.push(format!(
            "upstream {} does not answer over {} from this network (outbound TCP {port}); {} works",
            u.url,
            bad.join(" and "),
            good.join(" and ")
        ));
    } else if answering.is_empty() && !u.families.is_empty() {
        let fams: Vec<&str> = u.families.iter().map(|(f, _)| family_name(*f)).collect();
        problems.push(format!(
            "upstream {} has no {} address, the only kind this node has: the mirror team must pick another upstream",
            u.url,
            fams.join("/")
        ));
    }
    // A running first sync is normal at turn-up; a failed one is reported unless the upstream
    // problem above already explains it.
    if let SyncState::Failed(m) = &u.sync {
        if problems.is_empty() {
            problems.push(format!(
                "the last sync of {} failed ({m}): the mirror team can see why in mm-sync --status; nothing to do on site",
                u.project
            ));
        }
    }
    (lines, problems)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn up(families: Vec<(Family, Reach)>, sync: SyncState) -> Upstream {
        Upstream { project: "epel".into(), url: "rsync://mirror.example.org/epel/".into(), families, sync }
    }

    /// A one-shot server on `bind` that sends `answer` after reading a request (when `read`),
    /// and hands back what it was sent.
    fn server(bind: &str, read: bool, answer: &'static [u8]) -> Option<(u16, std::thread::JoinHandle<String>)> {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind(bind).ok()?;
        let port = listener.local_addr().unwrap().port();
        Some((
            port,
            std::thread::spawn(move || {
                let (mut s, _) = listener.accept().unwrap();
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while read && !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    let n = s.read(&mut buf).unwrap();
                    request.extend_from_slice(&buf[..n]);
                }
                s.write_all(answer).unwrap();
                std::thread::sleep(Duration::from_millis(600));
                String::from_utf8(request).unwrap()
            }),
        ))
    }

    #[test]
    fn greetings_answers_and_silence_over_a_real_socket() {
        let t = Duration::from_millis(400);
        let (port, s) = server("127.0.0.1:0", false, b"@RSYNCD: 31.0\n").unwrap();
        assert_eq!(probe(&format!("rsync://127.0.0.1:{port}/epel/"), Family::IPv4, t), Reach::Answers);
        s.join().unwrap();
        let (port, s) = server("127.0.0.1:0", false, b"").unwrap();
        let silent = probe(&format!("rsync://127.0.0.1:{port}/epel/"), Family::IPv4, t);
        assert_eq!(silent, Reach::Fails(format!("127.0.0.1:{port}: connected, but no greeting within {t:?}")));
        s.join().unwrap();
        let (port, s) = server("127.0.0.1:0", false, b"<html>login</html>").unwrap();
        let portal = probe(&format!("rsync://127.0.0.1:{port}/epel/"), Family::IPv4, t);
        assert!(matches!(&portal, Reach::Fails(m) if m.contains("unexpected answer \"<html>login</html>\"")), "{portal:?}");
        s.join().unwrap();
        // An IPv6 literal: the Host header keeps its brackets and names the port.
        let Some((port, s)) = server("[::1]:0", true, b"HTTP/1.0 200 OK\r\n\r\n") else {
            eprintln!("SKIPPED: no IPv6 loopback");
            return;
        };
        assert_eq!(probe(&format!("http://[::1]:{port}/epel/"), Family::IPv6, t), Reach::Answers);
        let request = s.join().unwrap();
        assert!(request.contains(&format!("\r\nHost: [::1]:{port}\r\n")), "{request}");
    }

    #[test]
    fn urls() {
        assert_eq!(parse_url("rsync://h.example/epel/"), Some(Target { scheme: "rsync".into(), host: "h.example".into(), port: 873 }));
        assert_eq!(parse_url("rsync://10.0.2.2:10873/epel/").unwrap().port, 10873);
        assert_eq!(parse_url("rsync://[2001:db8::1]:8873/x/").unwrap().host, "2001:db8::1");
        assert_eq!(parse_url("https://h.example/x/").unwrap().port, 443);
        assert_eq!(parse_url("ftp://h/x"), None);
        assert_eq!(parse_url("rsync://h:notaport/x"), None);
        assert_eq!(parse_url("rsync:///x"), None);
    }

    #[test]
    fn unreachable_everywhere_is_the_outbound_port_message() {
        let u = up(
            vec![(Family::IPv4, Reach::Fails("timed out".into())), (Family::IPv6, Reach::Fails("refused".into()))],
            SyncState::Failed("rsync exit 10".into()),
        );
        let (lines, problems) = verdict(&u);
        assert_eq!(problems, ["upstream rsync://mirror.example.org/epel/ does not answer from this network (outbound TCP 873)"]);
        assert!(lines[0].contains("IPv4 no answer (timed out), IPv6 no answer (refused); last sync FAILED: rsync exit 10"), "{lines:?}");
    }

    #[test]
    fn one_family_broken_names_it() {
        let (_, problems) =
            verdict(&up(vec![(Family::IPv4, Reach::Answers), (Family::IPv6, Reach::Fails("no route".into()))], SyncState::Running));
        assert_eq!(
            problems,
            ["upstream rsync://mirror.example.org/epel/ does not answer over IPv6 from this network (outbound TCP 873); IPv4 works"]
        );
    }

    #[test]
    fn running_first_sync_is_not_a_failure() {
        let (lines, problems) = verdict(&up(vec![(Family::IPv4, Reach::Answers), (Family::IPv6, Reach::NoAddress)], SyncState::Running));
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(lines, ["upstream of epel: rsync://mirror.example.org/epel/ - IPv4 answers, IPv6 no address; first sync running"]);
        let (_, p) = verdict(&up(vec![(Family::IPv4, Reach::Answers)], SyncState::NeverRun));
        assert!(p.is_empty());
    }

    #[test]
    fn failed_sync_with_a_reachable_upstream_is_reported() {
        let (_, p) = verdict(&up(vec![(Family::IPv4, Reach::Answers)], SyncState::Failed("no space".into())));
        assert_eq!(p.len(), 1);
        assert!(p[0].starts_with("the last sync of epel failed (no space)"), "{p:?}");
        let (_, ok) = verdict(&up(vec![(Family::IPv4, Reach::Answers)], SyncState::Succeeded { age_seconds: 7200 }));
        assert!(ok.is_empty());
    }

    #[test]
    fn dns_and_missing_families() {
        let (_, p) = verdict(&up(vec![(Family::IPv4, Reach::Unresolved("failed to lookup".into()))], SyncState::NeverRun));
        assert!(p[0].contains("cannot be looked up (mirror.example.org: failed to lookup)"), "{p:?}");
        let (_, p) = verdict(&up(vec![(Family::IPv6, Reach::NoAddress)], SyncState::NeverRun));
        assert!(p[0].contains("has no IPv6 address"), "{p:?}");
    }
}
