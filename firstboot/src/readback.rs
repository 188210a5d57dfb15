//! After a converge on a running node: read the configuration back from the daemons that serve
//! it (the listing's sponsor, each hosted path, the rsync module list), so that `run` reports
//! converged only once the services really run it.

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use mmconfig::NodeConfig;

/// What the running services must show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expect {
    /// Text the top-level listing must carry (the sponsor's name as a visitor reads it).
    pub listing_text: String,
    /// HTTP paths that must answer 200: the hosted projects whose tree exists.
    pub served: Vec<String>,
    /// HTTP paths that must answer 404: projects no longer hosted whose data is kept.
    pub not_served: Vec<String>,
    /// rsync modules that must be listed, and ones that must not.
    pub modules: Vec<String>,
    pub no_modules: Vec<String>,
}

impl Expect {
    /// `exists(dir)`: the project's tree is on the data filesystem; `dropped`: (name, directory)
    /// of each project no longer hosted whose data is kept.
    pub fn new(cfg: &NodeConfig, exists: impl Fn(&str) -> bool, dropped: &[(String, String)]) -> Expect {
        Expect {
            listing_text: cfg.node.sponsor.name.chars().filter(|c| !c.is_control()).collect(),
            served: cfg.projects.iter().filter(|p| exists(&p.directory)).map(|p| p.http_path.clone()).collect(),
            not_served: dropped.iter().map(|(_, dir)| format!("/{dir}/")).collect(),
            modules: cfg.projects.iter().map(|p| p.rsync_module.clone()).collect(),
            no_modules: dropped.iter().map(|(name, _)| name.clone()).collect(),
        }
    }
}

/// What the services showed, as read by [`observe`].
#[derive(Debug, Clone)]
pub struct Seen {
    /// (path, its status or the error asking for it)
    pub http: Vec<(String, Result<u16, String>)>,
    /// The body of `/`.
    pub listing: String,
    /// Module names the rsync daemon lists, or why they could not be read.
    pub modules: Result<Vec<String>, String>,
}

/// Every expectation `seen` does not meet, in words for the run's problems (empty: converged).
pub fn unmet(want: &Expect, seen: &Seen) -> Vec<String> {
    let mut out = Vec::new();
    if !decode_entities(&seen.listing).contains(&want.listing_text) {
        out.push(format!("the listing at / does not show the sponsor {:?} yet", want.listing_text));
    }
    let status = |path: &str| seen.http.iter().find(|(p, _)| p == path).map(|(_, s)| s.clone());
    for (paths, code) in [(&want.served, 200), (&want.not_served, 404)] {
        for p in paths {
            match status(p) {
                Some(Ok(c)) if c == code => {}
                Some(Ok(c)) => out.push(format!("HTTP {p} answers {c}, not {code}")),
                Some(Err(e)) => out.push(format!("HTTP {p}: {e}")),
                None => out.push(format!("HTTP {p} was not asked")),
            }
        }
    }
    match &seen.modules {
        Ok(list) => {
            for m in want.modules.iter().filter(|m| !list.contains(m)) {
                out.push(format!("the rsync daemon does not list the module {m}"));
            }
            for m in want.no_modules.iter().filter(|m| list.contains(m)) {
                out.push(format!("the rsync daemon still lists the dropped module {m}"));
            }
        }
        Err(e) => out.push(format!("listing the rsync modules: {e}")),
    }
    out
}

/// Ask nginx on `http` and the rsync daemon on `rsync` (loopback addresses) what they serve now.
pub fn observe(want: &Expect, http: SocketAddr, rsync: SocketAddr) -> Seen {
    let listing = match get(http, "/") {
        Ok((_, body)) => String::from_utf8_lossy(&body).into_owned(),
        Err(e) => format!("(GET / failed: {e})"),
    };
    let http = want
        .served
        .iter()
        .chain(&want.not_served)
        .map(|p| (p.clone(), get(http, p).map(|(code, _)| code).map_err(|e| e.to_string())))
        .collect();
    Seen { http, listing, modules: modules(rsync) }
}

/// Read back until every expectation holds or `within` has passed (nginx applies a reload a
/// moment after systemd's job ends); the expectations still unmet at the end.
pub fn wait(want: &Expect, http: SocketAddr, rsync: SocketAddr, within: Duration) -> Vec<String> {
    let started = Instant::now();
    loop {
        let problems = unmet(want, &observe(want, http, rsync));
        if problems.is_empty() || started.elapsed() >= within {
            return problems;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A plain HTTP/1.0 GET of the local daemon, bounded by 5 s: the status and at most 1 MiB of
/// the body (the console's status check uses it too).
pub fn get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, Vec<u8>)> {
    hostkit::net::http(addr, "localhost", "GET", path, Duration::from_secs(5)).map(|r| (r.status, r.body)).map_err(std::io::Error::other)
}

/// The module names `rsync rsync://ADDR/` lists (rsync prints `name<spaces>\tcomment` per
/// module, after the motd, whose lines carry no tab).
fn modules(addr: SocketAddr) -> Result<Vec<String>, String> {
    let out = Command::new("rsync")
        .args(["--contimeout=5", "--timeout=10", &format!("rsync://{addr}/")])
        .output()
        .map_err(|e| format!("running rsync: {e}"))?;
    if !out.status.success() {
        return Err(format!("rsync exited {}: {}", out.status, hostkit::cmd::tail(&out.stderr, 3)));
    }
    Ok(parse_modules(&String::from_utf8_lossy(&out.stdout)))
}

fn parse_modules(listing: &str) -> Vec<String> {
    hostkit::net::parse_module_lines(listing.lines())
}

/// The character references an HTML serializer writes for text (libxslt's html output method).
fn decode_entities(html: &str) -> String {
    html.replace("&lt;", "<").replace("&gt;", ">").replace("&quot;", "\"").replace("&#39;", "'").replace("&amp;", "&")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(listing: &str, http: &[(&str, u16)], modules: &[&str]) -> Seen {
        Seen {
            http: http.iter().map(|(p, c)| (p.to_string(), Ok(*c))).collect(),
            listing: listing.into(),
            modules: Ok(modules.iter().map(|m| m.to_string()).collect()),
        }
    }

    #[test]
    fn converged_only_when_every_daemon_shows_the_change() {
        let want = Expect {
            listing_text: "CI \"Labs\" & <Sons>".into(),
            served: vec!["/epel/".into()],
            not_served: vec!["/gimp/".into()],
            modules: vec!["epel".into()],
            no_modules: vec!["gimp".into()],
        };
        let page = "<a href=\"x\">CI \"Labs\" &amp; &lt;Sons&gt;</a>";
        let good = seen(page, &[("/epel/", 200), ("/gimp/", 404)], &["epel"]);
        assert_eq!(unmet(&want, &good), Vec::<String>::new());
        // Each expectation fails on its own.
        let cases: [(Seen, &str); 5] = [
            (seen("<a>Old Sponsor</a>", &[("/epel/", 200), ("/gimp/", 404)], &["epel"]), "does not show the sponsor"),
            (seen(page, &[("/epel/", 404), ("/gimp/", 404)], &["epel"]), "HTTP /epel/ answers 404, not 200"),
            (seen(page, &[("/epel/", 200), ("/gimp/", 200)], &["epel"]), "HTTP /gimp/ answers 200, not 404"),
            (seen(page, &[("/epel/", 200), ("/gimp/", 404)], &[]), "does not list the module epel"),
            (seen(page, &[("/epel/", 200), ("/gimp/", 404)], &["epel", "gimp"]), "still lists the dropped module gimp"),
        ];
        for (s, why) in cases {
            let problems = unmet(&want, &s);
            assert!(problems.len() == 1 && problems[0].contains(why), "{why}: {problems:?}");
        }
        let down = Seen { modules: Err("connection refused".into()), ..good };
        assert!(unmet(&want, &down)[0].contains("connection refused"));
    }

    #[test]
    fn module_names_come_from_tabbed_lines_only() {
        let out = "Welcome to the mirror of CI Labs\nepel           \tFedora EPEL\nubuntu-releases\tUbuntu images\n\n";
        assert_eq!(parse_modules(out), ["epel", "ubuntu-releases"]);
    }
}
