//! The glanceable table of `mmbuild status`: one line per node, worst first.

use super::{marker, FleetReport, NodeReport, Severity};

/// Worst project lag of a node, as `project lag` (or `-` when nothing was measured).
fn worst_lag(n: &NodeReport) -> String {
    n.freshness
        .iter()
        .filter_map(|f| f.lag_seconds.map(|l| (l.saturating_mul(1000) / f.allowed_seconds.max(1), l, f)))
        .max_by_key(|(ratio, _, _)| *ratio)
        .map_or("-".into(), |(_, l, f)| format!("{} {}{}", f.project, marker::human(l), if f.basis == "node-trace" { " ago" } else { "" }))
}

fn paint(s: &str, sev: Severity, colour: bool) -> String {
    if !colour {
        return s.to_string();
    }
    let code = match sev {
        Severity::Ok => "32",
        Severity::Warn => "33",
        Severity::Fail => "1;31",
    };
    format!("\x1b[{code}m{s}\x1b[0m")
}

/// Printable: control characters from the network never reach the terminal.
fn clean(s: &str) -> String {
    s.chars().map(|c| if c.is_control() { '?' } else { c }).collect()
}

/// The image the node runs, `(behind)` when it is not the fleet's build, and the last image that
/// rolled back on it.
fn image(n: &NodeReport) -> String {
    let mut s = n.image.running.as_deref().map_or("-".to_string(), clean);
    if n.image.behind == Some(true) {
        s.push_str(" (behind)");
    }
    if let Some(r) = &n.image.last_rollback {
        let when = r.at_unix.map(|t| format!(" {}", mmconfig::traffic::date_of((t / 86_400) as i64))).unwrap_or_default();
        s.push_str(&format!(", {} rolled back{when}", clean(&r.image_version)));
    }
    s
}

pub fn render(r: &FleetReport, colour: bool) -> String {
    let w = r.nodes.iter().map(|n| n.node.chars().count()).max().unwrap_or(4).max(4);
    let lags: Vec<String> = r.nodes.iter().map(worst_lag).collect();
    let lw = lags.iter().map(|l| l.chars().count()).max().unwrap_or(0).max("WORST LAG".len());
    let images: Vec<String> = r.nodes.iter().map(image).collect();
    let iw = images.iter().map(|i| i.chars().count()).max().unwrap_or(0).max("IMAGE".len());
    let mut s = format!("{:<w$}  {:<6}{:<6}{:<6}{:<lw$}  {:<iw$}  {}\n", "NODE", "STATE", "IPv4", "IPv6", "WORST LAG", "IMAGE", "PROBLEM");
    for ((n, lag), img) in r.nodes.iter().zip(&lags).zip(&images) {
        let problem = match n.findings.first() {
            None => "-".to_string(),
            Some(f) if n.findings.len() == 1 => clean(&f.text),
            Some(f) => format!("{} (+{} more)", clean(&f.text), n.findings.len() - 1),
        };
        s.push_str(&format!(
            "{:<w$}  {}{:<6}{:<6}{:<lw$}  {:<iw$}  {}\n",
            n.node,
            paint(&format!("{:<6}", n.health.word()), n.health, colour),
            n.ipv4,
            n.ipv6,
            lag,
            img,
            problem
        ));
    }
    let count = |sev: Severity| r.nodes.iter().filter(|n| n.health == sev).count();
    s.push_str(&format!(
        "{} node(s): {} ok, {} warn, {} fail; fleet {}\n",
        r.nodes.len(),
        count(Severity::Ok),
        count(Severity::Warn),
        count(Severity::Fail),
        if r.healthy { "healthy" } else { "NOT healthy" }
    ));
    s
}

#[cfg(test)]
mod tests {
    use super::super::*;
    use super::*;

    fn node(
        name: &str,
        health: Severity,
        findings: Vec<&str>,
        fresh: Vec<(&str, &'static str, Option<u64>, u64)>,
        running: Option<&str>,
    ) -> NodeReport {
        NodeReport {
            node: name.into(),
            fqdn: format!("{name}.mm.example.net"),
            health,
            ipv4: "ok",
            ipv6: if health == Severity::Fail { "fail" } else { "none" },
            freshness: fresh
                .into_iter()
                .map(|(p, basis, lag, allowed)| Freshness {
                    project: p.into(),
                    basis,
                    node_unix: None,
                    upstream_unix: None,
                    lag_seconds: lag,
                    allowed_seconds: allowed,
                })
                .collect(),
            image: ImageState::new(running.map(String::from), Some("20261104.024542-3f2a9c1e0b7d")),
            findings: findings.into_iter().map(|t| Finding { severity: health, text: t.into() }).collect(),
            probe: NodeProbe { families: vec![], markers: Default::default(), public: None },
        }
    }

    use mmconfig::public::PublicRollback;

    #[test]
    fn one_line_per_node_worst_lag_relative_to_its_allowance_and_no_colour_off_a_tty() {
        let r = FleetReport {
            version: 1,
            fleet: "f".into(),
            generated_unix: 0,
            healthy: false,
            nodes: vec![
                node(
                    "lagging",
                    Severity::Fail,
                    vec!["archlinux: 26h10m behind its upstream (allowed 25h00m)", "IPv6 http [::1]:80: connection refused"],
                    // epel is further behind in seconds but well inside its allowance.
                    vec![("epel", "upstream-marker", Some(100_000), 1_000_000), ("archlinux", "upstream-marker", Some(94_200), 90_000)],
                    Some("20261001.000000-aaaaaaaaaaaa"),
                ),
                node("fresh", Severity::Ok, vec![], vec![("epel", "node-trace", Some(420), 90_000)], Some("20261104.024542-3f2a9c1e0b7d")),
                node("old", Severity::Ok, vec![], vec![], None),
                {
                    let mut n = node("held", Severity::Ok, vec![], vec![], Some("20261104.024542-3f2a9c1e0b7d"));
                    n.image.last_rollback =
                        Some(PublicRollback { image_version: "20261201.000000-bbbbbbbbbbbb".into(), at_unix: Some(1_796_000_000) });
                    n
                },
            ],
            upstreams: Default::default(),
        };
        let t = render(&r, false);
        let want = "\
NODE     STATE IPv4  IPv6  WORST LAG         IMAGE                                                                              PROBLEM
lagging  FAIL  ok    fail  archlinux 26h10m  20261001.000000-aaaaaaaaaaaa (behind)                                              archlinux: 26h10m behind its upstream (allowed 25h00m) (+1 more)
fresh    OK    ok    none  epel 7m ago       20261104.024542-3f2a9c1e0b7d                                                       -
old      OK    ok    none  -                 -                                                                                  -
held     OK    ok    none  -                 20261104.024542-3f2a9c1e0b7d, 20261201.000000-bbbbbbbbbbbb rolled back 2026-11-30  -
4 node(s): 3 ok, 0 warn, 1 fail; fleet NOT healthy
";
        assert_eq!(t, want);
        assert!(!t.contains('\x1b'));
        let c = render(&r, true);
        assert!(c.contains("\x1b[1;31mFAIL  \x1b[0m") && c.contains("\x1b[32mOK    \x1b[0m"), "{c}");
    }

    #[test]
    fn hostile_text_from_the_network_is_neutralised() {
        let r = FleetReport {
            version: 1,
            fleet: "f".into(),
            generated_unix: 0,
            healthy: false,
            nodes: vec![node("x", Severity::Fail, vec!["bad \x1b[2J module"], vec![], Some("1\x1b[2J"))],
            upstreams: Default::default(),
        };
        let t = render(&r, false);
        assert!(t.contains("bad ?[2J module") && t.contains("1?[2J (behind)") && !t.contains('\x1b'), "{t}");
    }
}
