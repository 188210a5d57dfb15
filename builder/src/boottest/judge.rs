//! boot-test's verdicts from what was seen of a node, apart from the seeing: each check is tested failing on broken facts.

use std::net::IpAddr;
use std::path::Path;
use std::process::Output;

use anyhow::{Context, Result};
use mmconfig::{DataPlacement, NodeConfig};

use super::Check;
use hostkit::net::{HttpResponse, NetError, RsyncListing};

fn check(name: impl Into<String>, ok: bool, detail: String) -> Check {
    Check { name: name.into(), ok, detail, seconds: 0.0 }
}

/// From the console of a stick-installed node. boot-test's firmware prefers the stick at every
/// power-on, so one path is right: the stick writes and verifies the image once and reboots; it
/// boots again, finds its node installed, offers the reinstall, hears nothing and hands over to
/// the disk it wrote; the node's verdict `good` comes after that, from the disk.
pub fn stick(console: &str, node: &str, good: &str) -> Check {
    let lines: Vec<&str> = console.lines().collect();
    let at = |pat: &str| lines.iter().position(|l| l.contains(pat));
    let prefix = format!("mm-install: writing node {node} to /dev/");
    let wrote: Vec<(usize, &str)> = lines
        .iter()
        .enumerate()
        .filter_map(|(i, l)| Some((i, l[l.find(&prefix)? + prefix.len()..].split(':').next().unwrap_or_default())))
        .collect();
    let installer: Vec<&str> =
        lines.iter().copied().filter(|l| l.contains("mm-install:") && !l.contains(": writing: ") && !l.contains(": verifying: ")).collect();
    let problem = match wrote.as_slice() {
        [] => "the stick wrote nothing".to_string(),
        [(_, disk)] => {
            let order = [
                at("mm-install: verified: "),
                at(&format!("mm-install: node {node} installed on /dev/{disk}; rebooting into it")),
                at(&format!("mm-install: /dev/{disk} already holds node {node}: booting it")),
                at(&format!("mm-install: handing over to node {node} on /dev/{disk}")),
                at(good),
            ];
            let steps = [
                "the read-back verification",
                "the reboot into the disk",
                "the stick, booted again, finding its node installed",
                "the hand-over to the disk",
                "the node's ALL GOOD",
            ];
            let mut last = wrote[0].0;
            let mut missing = None;
            for (step, pos) in steps.iter().zip(order) {
                match pos {
                    Some(p) if p > last => last = p,
                    Some(_) => {
                        missing = Some(format!("{step} came out of order"));
                        break;
                    }
                    None => {
                        missing = Some(format!("{step} is missing"));
                        break;
                    }
                }
            }
            if let Some(m) = missing {
                m
            } else if at("mm-install: reinstalling node ").is_some() {
                "the stick reinstalled although nothing was typed at its prompt".into()
            } else {
                String::new()
            }
        }
        more => format!("the stick wrote {} times", more.len()),
    };
    let detail = if problem.is_empty() {
        format!("installed once, handed over to the disk, ALL GOOD from it\ninstaller lines:\n{}", installer.join("\n"))
    } else {
        format!("{problem}\ninstaller lines:\n{}", installer.join("\n"))
    };
    check("install from the stick", problem.is_empty(), detail)
}

/// The console's bond line must show the bond in its configured mode: with 802.3ad, every
/// cabled port's LACP partner state, and each uncabled port as such.
pub fn bond(console: &str, bond: &mmconfig::Bond, ports: usize) -> Check {
    let prefix = format!("{}: ", bond.name);
    let line = console.lines().filter_map(|l| l.find(&prefix).map(|i| l[i..].trim())).find(|l| l.contains(" up") || l.contains(" down"));
    let (ok, detail) = match line {
        None => (false, format!("the console has no line about {}'s ports", bond.name)),
        Some(l) => {
            let down = l.matches("down (no carrier)").count();
            let lacp_shown = bond.mode != "802.3ad" || l.contains("LACP partner");
            if down != ports.saturating_sub(1) {
                (false, format!("{ports} port(s) of which one cabled, but the console says: {l}"))
            } else if !lacp_shown {
                (false, format!("the bond is not in {} mode (no LACP partner state shown): {l}", bond.mode))
            } else {
                (true, l.to_string())
            }
        }
    };
    check(format!("{} ports on the console", bond.name), ok, detail)
}

/// A project's page over one address family: HTTP 200 naming the sponsor as the page carries it.
pub fn http(family: &str, path: &str, sponsor: &str, got: &Result<HttpResponse, NetError>) -> Check {
    let sponsor = html_text(sponsor);
    let (ok, detail) = match got {
        Ok(h) if h.status == 200 && String::from_utf8_lossy(&h.body).contains(&sponsor) => (true, String::new()),
        Ok(h) if h.status == 200 => (false, format!("the page does not name the sponsor as {sponsor:?}")),
        Ok(h) => (false, format!("HTTP {}", h.status)),
        Err(e) => (false, e.to_string()),
    };
    check(format!("http {family} {path}"), ok, detail)
}

/// The rsync daemon over one address family lists every project's module.
pub fn rsync_modules(family: &str, cfg: &NodeConfig, got: &Result<RsyncListing, NetError>) -> Check {
    let (ok, detail) = match got {
        Ok(l) => {
            let missing: Vec<&str> =
                cfg.projects.iter().map(|p| p.rsync_module.as_str()).filter(|m| !l.modules.iter().any(|x| x == m)).collect();
            (missing.is_empty(), if missing.is_empty() { String::new() } else { format!("modules missing: {}", missing.join(" ")) })
        }
        Err(e) => (false, e.to_string()),
    };
    check(format!("rsync {family} modules"), ok, detail)
}

/// A project's first sync, seen as its trace file; `last` is the final answer before the deadline.
pub fn first_sync(project: &str, path: &str, last: &Result<HttpResponse, NetError>) -> Check {
    let (ok, detail) = match last {
        Ok(h) if h.status == 200 => (true, String::new()),
        Ok(h) => (false, format!("{path}: HTTP {} (the first sync did not finish in time)", h.status)),
        Err(e) => (false, format!("{path}: {e} (the first sync did not finish in time)")),
    };
    check(format!("first sync {project}"), ok, detail)
}

/// The key `known_hosts` (its text) records for `fqdn`.
pub fn recorded_key(known_hosts: &str, fqdn: &str) -> Option<String> {
    known_hosts
        .lines()
        .find(|l| l.split_whitespace().next().is_some_and(|names| names.split(',').any(|n| n == fqdn)))
        .and_then(|l| l.split_whitespace().nth(2).map(str::to_string))
}

/// The ed25519 key `ssh-keyscan` (its run, `scan`) saw at `addr`, against the one the build recorded.
pub fn host_key(want: &str, addr: IpAddr, scan: &std::io::Result<Output>) -> Check {
    let (ok, detail) = match scan {
        Ok(o) => {
            let text = String::from_utf8_lossy(&o.stdout);
            let got: Vec<&str> = text.lines().filter_map(|l| l.split_whitespace().nth(2)).collect();
            match got.first() {
                Some(k) if *k == want => (true, String::new()),
                Some(k) => (false, format!("the node presents {k}, the build recorded {want}")),
                None => (false, format!("no ed25519 key from {addr}:22: {}", hostkit::cmd::tail(&o.stderr, 3))),
            }
        }
        Err(e) => (false, format!("running ssh-keyscan: {e}")),
    };
    check("ssh host key", ok, detail)
}

/// After power-off, from the disks in `work`: MMDATA where the hardware model puts it, and the
/// foreign disk's ends hashed as before the boot (`foreign`: the disk, its hash then, its hash now).
pub fn layout(placement: &DataPlacement, work: &Path, foreign: Option<(&Path, &str, Result<String>)>) -> Check {
    let mut problems = Vec::new();
    let boot = work.join("boot.img");
    let data = work.join("data.img");
    let (with, without): (Vec<&Path>, Vec<&Path>) = match placement {
        DataPlacement::BootDisk => (vec![&boot], vec![]),
        DataPlacement::Disk { .. } => (vec![&data], vec![&boot]),
    };
    for disk in with {
        match partition_names(disk) {
            Ok(names) if names.iter().any(|n| n == mmconfig::DATA_LABEL) => {}
            Ok(names) => {
                problems.push(format!("{}: no {} partition (partitions: {})", file_name(disk), mmconfig::DATA_LABEL, names.join(", ")))
            }
            Err(e) => problems.push(format!("{}: {e:#}", file_name(disk))),
        }
    }
    for disk in without {
        if partition_names(disk).is_ok_and(|names| names.iter().any(|n| n == mmconfig::DATA_LABEL)) {
            problems.push(format!("{}: holds {} although the model puts data on its own disk", file_name(disk), mmconfig::DATA_LABEL));
        }
    }
    if let Some((path, before, after)) = foreign {
        match after {
            Ok(after) if after == before => {}
            Ok(_) => problems.push(format!("the foreign disk {} was written to", file_name(path))),
            Err(e) => problems.push(format!("{e:#}")),
        }
    }
    check("data disk layout", problems.is_empty(), problems.join("; "))
}

fn partition_names(disk: &Path) -> Result<Vec<String>> {
    let gpt = gpt::GptConfig::new().writable(false).open(disk).with_context(|| format!("reading the GPT of {}", disk.display()))?;
    Ok(gpt.partitions().values().map(|p| p.name.clone()).collect())
}

fn file_name(p: &Path) -> String {
    p.file_name().map_or_else(|| p.display().to_string(), |n| n.to_string_lossy().into_owned())
}

/// Text as the listing page carries it (XSLT output escapes these three).
fn html_text(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;
    use std::process::{Command, ExitStatus};

    const GOOD: &str = "mm-firstboot: sonic.mm.example.net ready - ALL GOOD";

    /// What the console of a stick install shows when all goes right in boot-test.
    fn console_lines() -> Vec<String> {
        [
            "mm-install: install stick of node sonic (sonic.mm.example.net, fleet example-mm) on /dev/sda",
            "mm-install: writing node sonic to /dev/nvme0n1: blank",
            "mm-install: writing: 1150 of 1150 MB",
            "mm-install: verified: /dev/nvme0n1 holds the image",
            "mm-install: node sonic installed on /dev/nvme0n1; rebooting into it",
            "mm-install: install stick of node sonic (sonic.mm.example.net, fleet example-mm) on /dev/sda",
            "mm-install: /dev/nvme0n1 already holds node sonic: booting it",
            "mm-install: to write the image again instead (the OS is replaced, nothing else is kept), type reinstall and Enter within 15 s",
            "mm-install: handing over to node sonic on /dev/nvme0n1",
            "[   80.1] mm-firstboot[412]: mm-firstboot: sonic.mm.example.net ready - ALL GOOD",
        ]
        .map(String::from)
        .to_vec()
    }

    #[test]
    fn stick_check_wants_one_verified_install_a_hand_over_then_all_good() {
        let good = console_lines();
        let c = stick(&good.join("\n"), "sonic", GOOD);
        assert!(c.ok && c.detail.starts_with("installed once, handed over"), "{}", c.detail);
        // Each broken console, and the problem its check must name.
        let without = |pat: &str| good.iter().filter(|l| !l.contains(pat)).cloned().collect::<Vec<_>>();
        let with = |i: usize, line: &str| {
            let mut v = good.clone();
            v.insert(i, line.to_string());
            v
        };
        let mut swapped = good.clone();
        swapped.swap(8, 9);
        let table: Vec<(&str, Vec<String>, &str)> = vec![
            ("nothing installed", without("writing node"), "the stick wrote nothing"),
            ("installed twice", with(5, "mm-install: writing node sonic to /dev/nvme0n1: blank"), "the stick wrote 2 times"),
            ("not verified", without("verified:"), "the read-back verification is missing"),
            ("no reboot", without("rebooting into it"), "the reboot into the disk is missing"),
            // The firmware booted the disk: boot-test's firmware prefers the stick, so it did not.
            ("stick not booted again", without("already holds"), "finding its node installed is missing"),
            ("no hand-over", without("handing over"), "the hand-over to the disk is missing"),
            (
                "hand-over to another disk",
                without("handing over").into_iter().chain([good[8].replace("nvme0n1", "sdb")]).collect(),
                "the hand-over to the disk is missing",
            ),
            ("no verdict", without("ALL GOOD"), "the node's ALL GOOD is missing"),
            ("verdict before the hand-over", swapped, "the node's ALL GOOD came out of order"),
            ("reinstalled", with(8, "mm-install: reinstalling node sonic on /dev/nvme0n1"), "reinstalled although nothing was typed"),
        ];
        for (case, console, want) in table {
            let c = stick(&console.join("\n"), "sonic", GOOD);
            assert!(!c.ok && c.detail.contains(want), "{case}: {}", c.detail);
            assert_eq!(c.name, "install from the stick");
        }
    }

    #[test]
    fn bond_check_wants_the_uncabled_port_and_the_lacp_state() {
        let bond = mmconfig::Bond {
            name: "bond0".into(),
            mode: "802.3ad".into(),
            xmit_hash_policy: "layer3+4".into(),
            lacp_rate: "fast".into(),
            miimon_ms: 100,
        };
        let good = "[ 74.0] mm-firstboot[443]:   bond0: enp1s0 up, no LACP partner; enp2s0 down (no carrier)\n";
        let c = super::bond(good, &bond, 2);
        assert!(c.ok && c.detail.starts_with("bond0: enp1s0 up, no LACP partner"), "{}", c.detail);
        // What a bond the bonding module made itself at load (balance-rr, no MII monitor) shows.
        let round_robin = "[ 74.0] mm-firstboot[443]:   bond0: enp2s0 up; enp1s0 up\n";
        let c = super::bond(round_robin, &bond, 2);
        assert!(!c.ok && c.detail.contains("one cabled"), "{}", c.detail);
        let c = super::bond("bond0: enp1s0 up; enp2s0 down (no carrier)\n", &bond, 2);
        assert!(!c.ok && c.detail.contains("not in 802.3ad mode"), "{}", c.detail);
        assert!(!super::bond("nothing here\n", &bond, 2).ok);
    }

    fn page(status: u16, body: &str) -> Result<HttpResponse, NetError> {
        Ok(HttpResponse { status, body: body.as_bytes().to_vec() })
    }

    fn example_node(name: &str) -> NodeConfig {
        let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let fleet = crate::inventory::fleet::load(&repo.join("examples/fleet.toml"), Some(&repo)).expect("example fleet loads");
        fleet.node(name).expect("example node").clone()
    }

    #[test]
    fn serve_checks_fail_on_a_node_that_serves_wrong() {
        let sponsor = "Sponsor & Co <Labs>";
        let c = http("IPv4", "/epel/", sponsor, &page(200, "<p>Sponsored by Sponsor &amp; Co &lt;Labs&gt;</p>"));
        assert!(c.ok && c.name == "http IPv4 /epel/", "{c:?}");
        for (case, got, want) in [
            ("unescaped sponsor", page(200, "Sponsor & Co <Labs>"), "does not name the sponsor as \"Sponsor &amp; Co &lt;Labs&gt;\""),
            ("no page", page(404, "not found"), "HTTP 404"),
            ("nothing listening", Err(NetError::Refused), "connection refused"),
        ] {
            let c = http("IPv6", "/epel/", sponsor, &got);
            assert!(!c.ok && c.name == "http IPv6 /epel/" && c.detail.contains(want), "{case}: {c:?}");
        }

        let cfg = example_node("sonic");
        let all: Vec<String> = cfg.projects.iter().map(|p| p.rsync_module.clone()).collect();
        let listing = |modules: Vec<String>| Ok(RsyncListing { version: "31.0".into(), modules });
        assert!(rsync_modules("IPv4", &cfg, &listing(all.clone())).ok);
        let c = rsync_modules("IPv4", &cfg, &listing(all[1..].to_vec()));
        assert!(!c.ok && c.name == "rsync IPv4 modules" && c.detail == format!("modules missing: {}", all[0]), "{c:?}");
        let c = rsync_modules("IPv6", &cfg, &Err(NetError::Timeout(std::time::Duration::from_secs(10))));
        assert!(!c.ok && c.detail.contains("no answer within 10s"), "{c:?}");

        let trace = "/debian/project/trace/sonic.mm.example.net";
        assert!(first_sync("debian", trace, &page(200, "Mon Dec  7 06:00:00 UTC 2026")).ok);
        let c = first_sync("debian", trace, &page(404, ""));
        assert!(!c.ok && c.name == "first sync debian" && c.detail == format!("{trace}: HTTP 404 (the first sync did not finish in time)"));
    }

    fn scanned(stdout: &str, stderr: &str) -> std::io::Result<Output> {
        Ok(Output { status: ExitStatus::from_raw(0), stdout: stdout.into(), stderr: stderr.into() })
    }

    #[test]
    fn host_key_check_fails_on_another_key_or_none() {
        let known = "ci.mm.example.net,192.0.2.9 ssh-ed25519 AAAAci\nsonic.mm.example.net,192.0.2.10 ssh-ed25519 AAAAsonic\n";
        assert_eq!(recorded_key(known, "sonic.mm.example.net").as_deref(), Some("AAAAsonic"));
        // A name is matched whole, never as a prefix of another.
        assert_eq!(recorded_key(known, "sonic.mm.example"), None);
        let addr: IpAddr = "192.0.2.10".parse().unwrap();
        assert!(host_key("AAAAsonic", addr, &scanned("192.0.2.10 ssh-ed25519 AAAAsonic\n", "")).ok);
        let c = host_key("AAAAsonic", addr, &scanned("192.0.2.10 ssh-ed25519 AAAAother\n", ""));
        assert!(!c.ok && c.name == "ssh host key" && c.detail == "the node presents AAAAother, the build recorded AAAAsonic", "{c:?}");
        let c = host_key("AAAAsonic", addr, &scanned("", "connect to 192.0.2.10 port 22: Connection refused\n"));
        assert!(!c.ok && c.detail.starts_with("no ed25519 key from 192.0.2.10:22: connect to"), "{c:?}");
        let c = host_key("AAAAsonic", addr, &Err(std::io::Error::from(std::io::ErrorKind::NotFound)));
        assert!(!c.ok && c.detail.starts_with("running ssh-keyscan: "), "{c:?}");
    }

    /// A sparse disk of `mib` MiB with a GPT holding partitions named `names` (sgdisk, as a real
    /// disk would carry them); no GPT at all when `names` is empty.
    fn disk(path: &Path, mib: u64, names: &[&str]) {
        std::fs::File::create(path).unwrap().set_len(mib << 20).unwrap();
        if names.is_empty() {
            return;
        }
        let mut cmd = Command::new("sgdisk");
        for (i, n) in names.iter().enumerate() {
            cmd.arg(format!("-n{}:0:+1M", i + 1)).arg(format!("-c{}:{n}", i + 1));
        }
        let o = cmd.arg(path).output().expect("sgdisk runs");
        assert!(o.status.success(), "sgdisk: {}", String::from_utf8_lossy(&o.stderr));
    }

    #[test]
    fn layout_check_fails_on_a_misplaced_or_missing_mmdata_and_a_written_foreign_disk() {
        let dir = tempfile::tempdir().unwrap();
        let w = dir.path();
        let (boot, data, foreign) = (w.join("boot.img"), w.join("data.img"), w.join("foreign.img"));
        let own_disk = DataPlacement::Disk { rule: mmconfig::DiskRule::default() };
        let root = mmconfig::ROOT_LABEL;

        disk(&boot, 8, &["ESP", root, "MMDATA"]);
        assert!(layout(&DataPlacement::BootDisk, w, None).ok);
        disk(&data, 8, &["MMDATA"]);
        let c = layout(&own_disk, w, None);
        assert!(!c.ok && c.detail == "boot.img: holds MMDATA although the model puts data on its own disk", "{c:?}");

        disk(&boot, 8, &["ESP", root]);
        assert!(layout(&own_disk, w, None).ok);
        let c = layout(&DataPlacement::BootDisk, w, None);
        assert!(!c.ok && c.detail == format!("boot.img: no MMDATA partition (partitions: ESP, {root})"), "{c:?}");
        disk(&data, 8, &[]);
        let c = layout(&own_disk, w, None);
        assert!(!c.ok && c.name == "data disk layout" && c.detail.starts_with("data.img: reading the GPT of "), "{c:?}");

        disk(&data, 8, &["MMDATA"]);
        let c = layout(&own_disk, w, Some((&foreign, "before", Ok("after".into()))));
        assert!(!c.ok && c.detail == "the foreign disk foreign.img was written to", "{c:?}");
        assert!(layout(&own_disk, w, Some((&foreign, "same", Ok("same".into())))).ok);
    }

    #[test]
    fn a_failed_check_fails_the_node_and_the_run_with_exit_6_naming_it() {
        use super::super::{exit_status, report, NodeResult};
        let passed = Check { name: "console verdict ALL GOOD".into(), ok: true, detail: String::new(), seconds: 1.0 };
        let node = |checks: Vec<Check>| NodeResult { node: "sonic".into(), checks, ..NodeResult::default() };
        let good = node(vec![passed.clone()]);
        assert_eq!(exit_status(std::slice::from_ref(&good)) as u8, 0);
        // A node with no checks at all never ran: it did not pass.
        assert_eq!(exit_status(&[good.clone(), node(vec![])]) as u8, 6);
        for broken in [
            layout(&DataPlacement::BootDisk, Path::new("/nonexistent"), None),
            host_key("AAAAsonic", "192.0.2.10".parse().unwrap(), &scanned("192.0.2.10 ssh-ed25519 AAAAother\n", "")),
            http("IPv4", "/epel/", "Sponsor", &page(502, "")),
            first_sync("debian", "/debian/project/trace/x", &Err(NetError::Refused)),
        ] {
            let results = [good.clone(), node(vec![passed.clone(), broken.clone()])];
            assert_eq!(exit_status(&results) as u8, 6, "{broken:?}");
            let table = report::table(&results);
            let line = format!("sonic: FAILED {}: {}", broken.name, broken.detail.lines().next().unwrap_or_default());
            assert!(table.contains(&line) && table.contains("1 of 2 node(s) passed"), "{line}\n{table}");
        }
    }
}
