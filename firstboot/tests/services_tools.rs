//! The rendered services checked and run by their real tools: nginx (serving for real), nft,
//! systemd-analyze, rsync --daemon, sshd -t, visudo, sysctl, agetty, xmllint. Daemons run in a
//! private network namespace per test, so their ports are the real ones and reserved for the
//! whole test. Needs root and the packages from install-deps.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::{await_logged, curl, html_xpath, node, run, Daemon, Netns, Tree};
use mm_firstboot::services::systemd_arg;

const HOSTILE: &str = "CI \"Labs\" & <Sons> '; rm -rf / #";
/// A contact the fleet validator accepts (no spaces, one @) that is hostile everywhere else:
/// quotes, markup, shell and systemd expansions, an agetty escape, XPath braces, rsync's %.
const HOSTILE_CONTACT: &str = "o\"hara'<ops>&$HOME\\l{concat('a','b')}%n@example.net";
/// A sponsor with agetty escapes (\l the tty, \4 an address) and markup.
const BACKSLASH_SPONSOR: &str = "Back\\slash \\l \\4 \"q\" <b>{x}</b> 100%";

#[test]
fn nginx_accepts_the_config_and_serves_listings_with_the_sponsor_and_files_unchanged() {
    let cfg = node("ci");
    assert_eq!(cfg.node.sponsor.name, HOSTILE);
    let t = Tree::new(&cfg);

    // A mirror tree with the files that must never be altered.
    let epel = t.data().join("epel/9/Everything/x86_64");
    std::fs::create_dir_all(epel.join("repodata")).unwrap();
    let repomd = b"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<repomd xmlns=\"http://linux.duke.edu/metadata/repo\"><revision>1</revision></repomd>\n";
    std::fs::write(epel.join("repodata/repomd.xml"), repomd).unwrap();
    let inrelease = b"-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA512\n\nOrigin: test\n";
    std::fs::write(epel.join("InRelease"), inrelease).unwrap();
    let iso: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(epel.join("boot.iso"), &iso).unwrap();

    let ns = Netns::new();
    let _nginx = t.start_nginx(&ns);
    let base = "http://127.0.0.1";

    let (meta, body) = curl(&ns, &format!("{base}/epel/9/Everything/x86_64/"));
    let html = String::from_utf8_lossy(&body);
    assert!(meta.starts_with("200 text/html"), "{meta}");
    assert!(html.contains("This is a Micro Mirror node hosted by <a href=\"https://ci.example/?a=1&amp;b=2\">CI \"Labs\" &amp; &lt;Sons&gt; '; rm -rf / #</a>"), "{html}");
    assert!(html.contains("repodata/") && html.contains("boot.iso"), "{html}");
    assert!(html.contains("mailto:mirror@example.net"), "{html}");

    for (path, want) in [("repodata/repomd.xml", &repomd[..]), ("InRelease", &inrelease[..]), ("boot.iso", &iso[..])] {
        let (meta, body) = curl(&ns, &format!("{base}/epel/9/Everything/x86_64/{path}"));
        assert!(meta.starts_with("200"), "{path}: {meta}");
        assert!(body == want, "{path} was altered in transit");
    }
    let (meta, body) = curl(&ns, &format!("{base}/robots.txt"));
    assert!(meta.starts_with("200") && String::from_utf8_lossy(&body).contains("Disallow: /"));
    let (meta, _) = curl(&ns, &format!("{base}/epel"));
    assert!(meta.starts_with("301"), "a directory without its slash redirects: {meta}");
    // mm-sync's public freshness document: served as JSON, listed nowhere.
    std::fs::create_dir_all(PathBuf::from(&t.paths.data_root).join(".mm")).unwrap();
    std::fs::write(PathBuf::from(&t.paths.data_root).join(".mm/status.json"), b"{\"version\": 1}\n").unwrap();
    let (meta, body) = curl(&ns, &format!("{base}/.mm/status.json"));
    assert!(meta.starts_with("200 application/json") && body == b"{\"version\": 1}\n", "{meta}");
    let root_listing = String::from_utf8_lossy(&curl(&ns, &format!("{base}/")).1).into_owned();
    assert!(root_listing.contains("href=\"./epel/\"") && !root_listing.contains(".mm/"), "the status directory is listed: {root_listing}");
    // What the data directory holds besides the hosted projects (a dropped project's kept tree,
    // a stray file) is never served, nor listed.
    std::fs::create_dir_all(t.data().join("gimp/v2.10")).unwrap();
    std::fs::write(t.data().join("gimp/v2.10/gimp.tar.bz2"), b"stale").unwrap();
    std::fs::write(t.data().join("stray.txt"), b"stray").unwrap();
    for path in ["/gimp/v2.10/gimp.tar.bz2", "/gimp/", "/gimp", "/stray.txt", "/.mm/"] {
        let (meta, _) = curl(&ns, &format!("{base}{path}"));
        assert!(meta.starts_with("404") || (path == "/.mm/" && meta.starts_with("403")), "{path}: {meta}");
    }
    let root_listing = String::from_utf8_lossy(&curl(&ns, &format!("{base}/")).1).into_owned();
    assert!(
        root_listing.contains("href=\"./epel/\"") && !root_listing.contains("gimp") && !root_listing.contains("stray"),
        "{root_listing}"
    );
    let log = std::fs::read_to_string(t.root.join("log/micromirror-access.log")).unwrap();
    assert!(log.contains("project=epel") && log.contains(" 300000 "), "{log}");
}

/// (http code, curl exit code) of each transfer of a `curl --parallel` run's `-w` lines.
fn codes(out: &[u8]) -> Vec<(u16, i32)> {
    String::from_utf8_lossy(out)
        .lines()
        .filter_map(|l| {
            let (code, exit) = l.split_once(' ')?;
            Some((code.parse().ok()?, exit.parse().ok()?))
        })
        .collect()
}

/// Two addresses of one IPv6 /64 share the per-client connection limit (a subscriber's LAN is
/// one client); an address of another /64 is served meanwhile.
#[test]
fn ipv6_clients_are_limited_by_their_64() {
    let t = Tree::new(&node("ci"));
    std::fs::create_dir_all(t.data().join("epel")).unwrap();
    std::fs::write(t.data().join("epel/big.iso"), vec![7u8; 1 << 20]).unwrap();
    let ns = Netns::new();
    // Small packets and buffers: a download stays in nginx while the slow client reads it.
    run(ns.cmd("ip").args(["link", "set", "lo", "mtu", "1500"]));
    run(ns.cmd("sysctl").args(["-q", "-w", "net.ipv4.tcp_rmem=4096 16384 65536", "net.ipv4.tcp_wmem=4096 16384 65536"]));
    for a in ["2001:db8:0:1::a", "2001:db8:0:1::b", "2001:db8:0:2::c"] {
        run(ns.cmd("ip").args(["-6", "addr", "add", &format!("{a}/128"), "dev", "lo", "nodad"]));
    }
    let _nginx = t.start_nginx(&ns);
    let site = std::fs::read_to_string(t.root.join("etc/nginx/sites-enabled/default")).unwrap();
    let limit = site.lines().find_map(|l| l.trim().strip_prefix("limit_conn mm_conn ")).unwrap();
    let limit: usize = limit.trim_end_matches(';').parse().unwrap();
    let per_address = limit * 3 / 5; // together over the limit, each alone under it
    let urls: Vec<&str> = (0..per_address).flat_map(|_| ["-o", "/dev/null", "http://[::1]/epel/big.iso"]).collect();
    let flood = |source: &str| {
        Daemon(
            ns.cmd("curl")
                .args(["-s", "--parallel", "--parallel-immediate", "--parallel-max", "300", "--interface", source])
                .args(["--limit-rate", "1k", "-m", "8", "-w", "%{http_code} %{exitcode}\\n"])
                .args(&urls)
                .stdout(Stdio::piped())
                .spawn()
                .unwrap(),
        )
    };
    let mut a = flood("2001:db8:0:1::a");
    let mut b = flood("2001:db8:0:1::b");
    // The /64 is at its limit once nginx has refused every transfer beyond it (the held ones
    // take far longer than the curls' -m 8 at 1 kB/s).
    await_logged(&t, "2001:db8:0:1::", 429, 2 * per_address - limit, std::time::Duration::from_secs(6));
    let other = ["-s", "--interface", "2001:db8:0:2::c", "-m", "5", "-o", "/dev/null", "-w", "%{http_code}", "http://[::1]/epel/"];
    let other = run(ns.cmd("curl").args(other));
    assert_eq!(other, "200", "another /64 is refused while one /64 is at its limit");
    let mut all = Vec::new();
    for d in [&mut a, &mut b] {
        let mut out = Vec::new();
        std::io::Read::read_to_end(d.0.stdout.as_mut().unwrap(), &mut out).unwrap();
        all.extend(codes(&out));
    }
    let refused = all.iter().filter(|(code, _)| *code == 429).count();
    let held = all.iter().filter(|(code, exit)| *code == 200 && *exit == 28).count();
    assert_eq!((held, refused), (limit, 2 * per_address - limit), "(held, refused) of {} transfers", all.len());
}

#[test]
fn https_serves_the_same_tree_and_answers_acme_challenges() {
    let mut cfg = node("ci");
    cfg.fleet.https = true;
    let t = Tree::new(&cfg);
    std::fs::create_dir_all(t.data().join("epel")).unwrap();
    std::fs::write(t.data().join("epel/a.txt"), b"same bytes\n").unwrap();
    let token = PathBuf::from(&t.paths.acme_dir).join(".well-known/acme-challenge/tok3n");
    std::fs::create_dir_all(token.parent().unwrap()).unwrap();
    std::fs::write(&token, b"tok3n.thumbprint").unwrap();
    let ns = Netns::new();
    let _nginx = t.start_nginx(&ns);
    let (_, body) = curl(&ns, "https://127.0.0.1/epel/a.txt");
    assert_eq!(body, b"same bytes\n");
    let (_, listing) = curl(&ns, "https://127.0.0.1/epel/");
    assert!(String::from_utf8_lossy(&listing).contains("hosted by"), "{}", String::from_utf8_lossy(&listing));
    let (_, challenge) = curl(&ns, "http://127.0.0.1/.well-known/acme-challenge/tok3n");
    assert_eq!(challenge, b"tok3n.thumbprint");
    let service = t.services.files.iter().find(|f| f.path.ends_with("mm-certbot.service")).expect("certbot unit");
    let text = String::from_utf8_lossy(&service.contents);
    assert!(text.contains("--email \"mirror@example.net\"") && text.contains("--domain \"ci.mm.example.net\""), "{text}");
    assert!(t.services.enable.contains(&("mm-certbot.timer".into(), "timers.target".into())));
}

#[test]
fn nftables_ruleset_passes_nft_check() {
    for name in ["ci", "v6only", "hurricane"] {
        let t = Tree::new(&node(name));
        let conf = t.root.join("etc/nftables.conf");
        run(Command::new("nft").arg("-c").arg("-f").arg(&conf));
        // Also without /etc/protocols and /etc/services: a lean node may not have them, and
        // nft resolves protocol and service names through them.
        let script =
            format!("mount --bind /dev/null /etc/protocols && mount --bind /dev/null /etc/services && nft -c -f {}", conf.display());
        run(Command::new("unshare").args(["-m", "sh", "-c", &script]));
    }
}

/// The ruleset on packets, not only `nft -c`: the node's namespace and a peer's on a veth pair.
/// Mirror ports answer anyone; ssh and metrics answer the admin prefixes only, and others'
/// packets to them are dropped unanswered; everything the node sends carries DSCP CS1. The same
/// probes before the ruleset is loaded show that the ruleset is what closes and marks.
#[test]
fn nftables_closes_admin_ports_to_others_and_marks_egress_cs1_on_packets() {
    let cfg = node("ziply");
    assert!(!cfg.projects.iter().any(|p| p.sync.push), "ziply takes no upstream push: its ssh is admin-only");
    assert_eq!(cfg.fleet.admin_prefixes, ["192.0.2.0/24", "2001:db8:ffff::/48"]);
    let t = Tree::new(&cfg);
    let conf = t.root.join("etc/nftables.conf");
    let probe = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/nft-probe.py");
    let (host, peer) = (Netns::new(), Netns::new());
    // The peer's UDP receiver, which also names the peer's namespace (by its pid) for the veth.
    let mut recv = peer.cmd("python3").arg(&probe).args(["recv", "5000"]).stdout(Stdio::piped()).spawn().unwrap();
    let mut received = BufReader::new(recv.stdout.take().unwrap()).lines().map(Result::unwrap);
    assert_eq!(received.next().as_deref(), Some("listening"));
    let recv = Daemon(recv);
    let ip = |ns: &Netns, args: &str| run(ns.cmd("ip").args(args.split(' ')));
    ip(&host, "link add n0 type veth peer name p0");
    ip(&host, &format!("link set p0 netns {}", recv.0.id()));
    for (ns, dev, last) in [(&host, "n0", 1), (&peer, "p0", 2)] {
        ip(ns, &format!("addr add 198.51.100.{last}/24 dev {dev}"));
        ip(ns, &format!("addr add 192.0.2.{last}/24 dev {dev}"));
        ip(ns, &format!("addr add 2001:db8:1::{last}/64 dev {dev} nodad"));
        ip(ns, &format!("addr add 2001:db8:ffff::{last}/64 dev {dev} nodad"));
        ip(ns, &format!("link set {dev} up"));
    }
    let mut listen =
        host.cmd("python3").arg(&probe).args(["listen", "22", "80", "873", "9100", "8080"]).stdout(Stdio::piped()).spawn().unwrap();
    assert_eq!(BufReader::new(listen.stdout.take().unwrap()).lines().next().unwrap().unwrap(), "listening");
    let _listen = Daemon(listen);
    // From, to, port, and what the ruleset makes of it.
    let cases = [
        ("198.51.100.2", "198.51.100.1", "80", "open"),
        ("198.51.100.2", "198.51.100.1", "22", "dropped"),
        ("198.51.100.2", "198.51.100.1", "9100", "dropped"),
        ("192.0.2.2", "192.0.2.1", "22", "open"),
        ("192.0.2.2", "192.0.2.1", "9100", "open"),
        ("192.0.2.2", "192.0.2.1", "8080", "dropped"),
        ("2001:db8:1::2", "2001:db8:1::1", "873", "open"),
        ("2001:db8:1::2", "2001:db8:1::1", "22", "dropped"),
        ("2001:db8:1::2", "2001:db8:1::1", "9100", "dropped"),
        ("2001:db8:ffff::2", "2001:db8:ffff::1", "22", "open"),
        ("2001:db8:ffff::2", "2001:db8:ffff::1", "9100", "open"),
    ];
    let reach =
        |from: &str, to: &str, port: &str| run(peer.cmd("python3").arg(&probe).args(["connect", from, to, port])).trim().to_string();
    let mut marks = |ns: &Netns| -> Vec<String> {
        for to in ["198.51.100.2", "2001:db8:1::2"] {
            run(ns.cmd("python3").arg(&probe).args(["send", to, "5000"]));
        }
        let mut got: Vec<String> = received.by_ref().take(2).collect();
        got.sort();
        got
    };

    for (from, to, port, _) in cases {
        assert_eq!(reach(from, to, port), "open", "without the ruleset, {from} -> {to}:{port}");
    }
    assert_eq!(marks(&host), ["IPv4 0", "IPv6 0"], "unmarked without the ruleset");
    run(host.cmd("nft").arg("-f").arg(&conf));
    for (from, to, port, want) in cases {
        assert_eq!(reach(from, to, port), want, "{from} -> {to}:{port}");
    }
    // CS1 is DSCP 8: the TOS byte / traffic class 8 << 2.
    assert_eq!(marks(&host), ["IPv4 32", "IPv6 32"], "egress not marked CS1");
    drop(recv);
}

/// Units the node's distribution ships and ours only order against or want: absent from the
/// test's --root on purpose, so verify may say they are not found, and only they.
const EXTERNAL_UNITS: &[&str] = &[
    "nginx.service",
    "rsync.service",
    "rsyncd.service",
    "ssh.service",
    "sshd.service",
    "prometheus-node-exporter.service",
    "node_exporter.service",
    "NetworkManager.service",
    "systemd-networkd.service",
    "nftables.service",
];

/// `systemd-analyze verify` of `units` inside `t.root` (with the host's own units beside them);
/// everything it prints must be about an [`EXTERNAL_UNITS`] entry not being found.
fn systemd_verify(t: &Tree, units: &[PathBuf]) {
    // verify resolves ExecStart= inside --root.
    let bin = t.root.join("usr/bin");
    std::fs::create_dir_all(&bin).unwrap();
    for b in ["mm-sync", "mm-firstboot", "certbot"] {
        std::fs::copy("/bin/true", bin.join(b)).unwrap();
    }
    if !t.root.join("usr/lib/systemd/system").exists() {
        std::fs::create_dir_all(t.root.join("usr/lib/systemd")).unwrap();
        run(Command::new("cp").args(["-a", "/usr/lib/systemd/system"]).arg(t.root.join("usr/lib/systemd/")));
    }
    for u in EXTERNAL_UNITS {
        let _ = std::fs::remove_file(t.root.join("usr/lib/systemd/system").join(u));
    }
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg("--man=no")
        .arg(format!("--root={}", t.root.display()))
        .args(units)
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let bad: Vec<&str> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .filter(|l| {
            !(l.contains("not found")
                && EXTERNAL_UNITS.iter().any(|u| l.contains(&format!("{u} ")) || l.contains(&format!("'{u}'")) || l.ends_with(u)))
        })
        .collect();
    assert!(out.status.success() && bad.is_empty(), "systemd-analyze verify:\n{text}");
}

#[test]
fn systemd_units_pass_systemd_analyze_verify() {
    let mut cfg = node("ziply");
    cfg.fleet.https = true;
    let t = Tree::new(&cfg);
    let mut units: Vec<PathBuf> = t
        .services
        .files
        .iter()
        .filter(|f| f.path.parent() == Some(Path::new("/etc/systemd/system")))
        .map(|f| t.root.join(f.path.strip_prefix("/").unwrap()))
        .collect();
    assert_eq!(units.len(), 10, "3 projects x service + timer, traffic service + timer, certbot service + timer");
    // nginx's own unit (Debian's, as installed) with our drop-in beside it: verify reads both.
    assert!(t.root.join("etc/systemd/system/nginx.service.d/micromirror.conf").exists());
    std::fs::copy("/lib/systemd/system/nginx.service", t.root.join("etc/systemd/system/nginx.service")).unwrap();
    for b in ["usr/sbin/nginx", "sbin/start-stop-daemon"] {
        std::fs::create_dir_all(t.root.join(b).parent().unwrap()).unwrap();
        std::fs::copy("/bin/true", t.root.join(b)).unwrap();
    }
    units.push(t.root.join("etc/systemd/system/nginx.service"));
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let unit_dir = t.root.join("etc/systemd/system");
    let mount = mm_firstboot::services::render_mount_unit("0a1b2c3d-0000-4000-8000-000000000001").unwrap();
    let mount_dest = t.root.join(mount.path.strip_prefix("/").unwrap());
    std::fs::write(&mount_dest, &mount.contents).unwrap();
    units.push(mount_dest);
    for u in [
        repo.join("overlays/rootfs/etc/systemd/system/mm-firstboot.service"),
        repo.join("overlays/rootfs/etc/systemd/system/mm-firstboot-status.service"),
    ] {
        let dest = unit_dir.join(u.file_name().unwrap());
        std::fs::copy(&u, &dest).unwrap();
        units.push(dest);
    }
    systemd_verify(&t, &units);
}

/// rsyncd in `ns` on port 873 with the tree's configuration.
fn rsyncd(t: &Tree, ns: &Netns) -> Daemon {
    let d = Daemon(
        ns.cmd("rsync").args(["--daemon", "--no-detach", "--port", "873", "--config"]).arg(t.root.join("etc/rsyncd.conf")).spawn().unwrap(),
    );
    ns.wait_port(873);
    d
}

#[test]
fn rsync_daemon_serves_one_read_only_module_per_project() {
    let cfg = node("ziply");
    let t = Tree::new(&cfg);
    for p in &cfg.projects {
        std::fs::create_dir_all(t.data().join(&p.directory)).unwrap();
    }
    std::fs::write(t.data().join("epel/hello.txt"), b"hello from the mirror\n").unwrap();
    let ns = Netns::new();
    let _d = rsyncd(&t, &ns);
    let list = run(ns.cmd("rsync").arg("rsync://127.0.0.1/"));
    for p in &cfg.projects {
        assert!(list.lines().any(|l| l.starts_with(&p.rsync_module)), "{}: {list}", p.rsync_module);
    }
    assert!(list.contains("a Micro Mirror node hosted by Ziply Fiber"), "motd: {list}");
    let dest = t.root.join("fetched.txt");
    run(ns.cmd("rsync").arg("rsync://127.0.0.1/epel/hello.txt").arg(&dest));
    assert_eq!(std::fs::read(&dest).unwrap(), b"hello from the mirror\n");
    // Read-only and no checksum runs.
    let push = ns.cmd("rsync").arg(&dest).arg("rsync://127.0.0.1/epel/x.txt").output().unwrap();
    assert!(!push.status.success());
    let sum = ns.cmd("rsync").args(["-c", "rsync://127.0.0.1/epel/hello.txt"]).arg(&dest).output().unwrap();
    assert!(!sum.status.success() && String::from_utf8_lossy(&sum.stderr).contains("refuse"), "{}", String::from_utf8_lossy(&sum.stderr));
}

/// `max connections` of `module` in the rendered rsyncd.conf.
fn module_limit(t: &Tree, module: &str) -> usize {
    let conf = std::fs::read_to_string(t.root.join("etc/rsyncd.conf")).unwrap();
    let section = conf.split("\n[").find(|s| s.starts_with(&format!("{module}]"))).unwrap_or_else(|| panic!("no [{module}]: {conf}"));
    let line = section.lines().find_map(|l| l.trim().strip_prefix("max connections = ")).unwrap_or_else(|| panic!("{section}"));
    line.parse().unwrap()
}

/// A module full of clients refuses the next one with rsync's own message, another module still
/// serves (each has its lock file), and a place freed is taken again.
#[test]
fn rsync_module_full_refuses_the_next_client_while_others_serve() {
    let cfg = node("ziply");
    let t = Tree::new(&cfg);
    for p in &cfg.projects {
        std::fs::create_dir_all(t.data().join(&p.directory)).unwrap();
    }
    std::fs::write(t.data().join("epel/hello.txt"), b"hello\n").unwrap();
    // Far more than the socket buffers on the way hold: a holder at 1 KiB/s stays for hours.
    std::fs::File::create(t.data().join("epel/big.iso")).unwrap().set_len(256 << 20).unwrap();
    let other = cfg.projects.iter().find(|p| p.rsync_module != "epel").unwrap();
    std::fs::write(t.data().join(&other.directory).join("hi.txt"), b"hi\n").unwrap();
    let other = other.rsync_module.clone();
    let limit = module_limit(&t, "epel");
    assert!((2..=100).contains(&limit), "{limit}");
    let ns = Netns::new();
    let _d = rsyncd(&t, &ns);

    // `limit` real clients, each stuck receiving big.iso: they hold the module's places.
    let holders: Vec<(Daemon, PathBuf)> = (0..limit)
        .map(|i| {
            let dest = t.root.join(format!("hold{i}"));
            std::fs::create_dir_all(&dest).unwrap();
            let child = ns
                .cmd("rsync")
                .args(["--bwlimit=1", "--timeout=120", "rsync://127.0.0.1/epel/big.iso"])
                .arg(&dest)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            (Daemon(child), dest)
        })
        .collect();
    // A holder has its place once it receives: its temporary file exists.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    for (_, dest) in &holders {
        while std::fs::read_dir(dest).unwrap().next().is_none() {
            assert!(std::time::Instant::now() < deadline, "{} holders did not all start receiving", limit);
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    let fetch = |module: &str, file: &str| {
        let dest = t.root.join(format!("fetched-{module}-{file}"));
        let out = ns.cmd("rsync").args(["--timeout=30", &format!("rsync://127.0.0.1/{module}/{file}")]).arg(&dest).output().unwrap();
        (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned(), dest)
    };
    let (ok, err, _) = fetch("epel", "hello.txt");
    assert!(!ok && err.contains(&format!("@ERROR: max connections ({limit}) reached -- try again later")), "{err}");
    let (ok, err, dest) = fetch(&other, "hi.txt");
    assert!(ok, "{other} refused while epel is full: {err}");
    assert_eq!(std::fs::read(dest).unwrap(), b"hi\n");

    // One holder leaves: its place is free again (the daemon's child exits on the closed socket).
    let mut holders = holders;
    drop(holders.pop());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let (ok, err, dest) = fetch("epel", "hello.txt");
        if ok {
            assert_eq!(std::fs::read(dest).unwrap(), b"hello\n");
            break;
        }
        assert!(err.contains("max connections") && std::time::Instant::now() < deadline, "{err}");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

/// The drop-in for the admin alone (ci) and with the push account (hurricane hosts debian,
/// which upstream pushes): `sshd -t` accepts it, `sshd -T` shows what it means per user.
#[test]
fn sshd_accepts_the_drop_in_with_and_without_the_push_account() {
    std::fs::create_dir_all("/run/sshd").unwrap();
    for (name, push) in [("ci", false), ("hurricane", true)] {
        let t = Tree::new(&node(name));
        assert_eq!(t.services.push_user, push, "{name}");
        let key = t.root.join("hostkey");
        run(Command::new("ssh-keygen").args(["-q", "-t", "ed25519", "-N", "", "-f"]).arg(&key));
        let conf = t.root.join("sshd_config");
        std::fs::write(&conf, format!("HostKey {}\nInclude {}/etc/ssh/sshd_config.d/*.conf\n", key.display(), t.root.display())).unwrap();
        run(Command::new("/usr/sbin/sshd").arg("-t").arg("-f").arg(&conf));
        for user in if push { vec!["mmadmin", "mmpush"] } else { vec!["mmadmin"] } {
            let dump = run(Command::new("/usr/sbin/sshd")
                .arg("-T")
                .arg("-f")
                .arg(&conf)
                .args(["-C", &format!("user={user},host=x,addr=198.51.100.7")]));
            assert!(
                dump.contains("\npasswordauthentication no\n")
                    && dump.contains("\npermitrootlogin no\n")
                    && dump.contains("\nkbdinteractiveauthentication no\n"),
                "{name}/{user}: {dump}"
            );
            let allow: Vec<&str> = dump.lines().filter_map(|l| l.strip_prefix("allowusers ")).collect();
            let want: &[&str] = if push {
                &["mmadmin@192.0.2.0/24", "mmadmin@2001:db8:ffff::/48", "mmpush"]
            } else {
                &["mmadmin@192.0.2.0/24", "mmadmin@2001:db8:ffff::/48"]
            };
            assert_eq!(allow, want, "{name}/{user}");
        }
    }
}

#[test]
fn sudoers_files_pass_visudo() {
    for name in ["ci", "hurricane"] {
        let t = Tree::new(&node(name));
        let files: Vec<&PathBuf> = t.services.files.iter().map(|f| &f.path).filter(|p| p.starts_with("/etc/sudoers.d")).collect();
        assert_eq!(files.len(), if name == "hurricane" { 2 } else { 1 }, "{name}: {files:?}");
        for f in files {
            let path = t.root.join(f.strip_prefix("/").unwrap());
            let out = run(Command::new("visudo").arg("-c").arg("-f").arg(&path));
            assert!(out.contains("parsed OK"), "{}: {out}", path.display());
            let text = std::fs::read_to_string(&path).unwrap();
            // Each rule is one command, no wildcard: the push account may start its syncs only.
            for rule in text.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()) {
                assert!(!rule.contains('*'), "{rule}");
            }
        }
    }
}

/// Every key exists in this kernel (read with sysctl), and `sysctl -p` accepts the file in a
/// private network namespace for the per-namespace keys; global ones are only read, never set.
#[test]
fn sysctl_settings_parse_and_name_real_keys() {
    let t = Tree::new(&node("ci"));
    let file = t.root.join("etc/sysctl.d/90-micromirror.conf");
    let text = std::fs::read_to_string(&file).unwrap();
    let settings: Vec<(&str, &str)> = text
        .lines()
        .filter(|l| !l.trim_start().starts_with('#') && !l.trim().is_empty())
        .map(|l| l.split_once('=').map(|(k, v)| (k.trim(), v.trim())).unwrap_or_else(|| panic!("not key = value: {l}")))
        .collect();
    assert!(settings.len() >= 2, "{text}");
    for (k, _) in &settings {
        run(Command::new("sysctl").args(["-n", k]));
    }
    let per_ns: String = settings
        .iter()
        .filter(|(k, _)| k.starts_with("net.ipv4.") || k.starts_with("net.ipv6."))
        .map(|(k, v)| format!("{k} = {v}\n"))
        .collect();
    assert!(!per_ns.is_empty());
    let ns_file = t.root.join("per-namespace.conf");
    std::fs::write(&ns_file, &per_ns).unwrap();
    let applied = run(Command::new("unshare").arg("-n").arg("sysctl").arg("-p").arg(&ns_file));
    assert_eq!(applied.trim(), per_ns.trim(), "sysctl -p in a namespace");
    let available = run(Command::new("sysctl").args(["-n", "net.ipv4.tcp_available_congestion_control"]));
    assert!(available.split_whitespace().any(|c| c == "bbr"), "bbr missing from this kernel: {available}");
}

/// A hostile fleet contact and a sponsor full of escapes, through every file that shows them,
/// each read back by the tool that reads it on the node.
#[test]
fn hostile_contact_and_sponsor_stay_text_everywhere() {
    let mut cfg = node("ci");
    cfg.fleet.contact = HOSTILE_CONTACT.into();
    cfg.fleet.https = true;
    cfg.node.sponsor.name = BACKSLASH_SPONSOR.into();
    let t = Tree::new(&cfg);
    std::fs::create_dir_all(t.data().join("epel")).unwrap();
    let ns = Netns::new();

    // The listing: nginx accepts the stylesheet, the page parses, both are text.
    {
        let _nginx = t.start_nginx(&ns);
        let (meta, body) = curl(&ns, "http://127.0.0.1/epel/");
        assert!(meta.starts_with("200 text/html"), "{meta}");
        let page = t.root.join("listing.html");
        std::fs::write(&page, &body).unwrap();
        let lint = Command::new("xmllint").args(["--html", "--noout"]).arg(&page).output().unwrap();
        assert!(lint.status.success() && lint.stderr.is_empty(), "{}", String::from_utf8_lossy(&lint.stderr));
        let mail = "//div[@role='contentinfo']//a[starts-with(@href, 'mailto:')]";
        assert_eq!(html_xpath(&page, &format!("string({mail})")), HOSTILE_CONTACT);
        let href = html_xpath(&page, &format!("string({mail}/@href)"));
        assert_eq!(percent_decode(href.strip_prefix("mailto:").unwrap()), HOSTILE_CONTACT, "{href}");
        assert_eq!(html_xpath(&page, "string(//p[@class='sponsor']/a)"), BACKSLASH_SPONSOR);
        assert_eq!(html_xpath(&page, "count(//b|//ops)"), "0");
    }

    // rsyncd's motd, as an rsync client lists it.
    let _d = rsyncd(&t, &ns);
    let list = run(ns.cmd("rsync").arg("rsync://127.0.0.1/"));
    assert!(list.lines().any(|l| l == format!("Contact: {HOSTILE_CONTACT}")), "{list}");
    assert!(list.contains(&format!("hosted by {BACKSLASH_SPONSOR} (")), "{list}");

    // The certbot unit: verify accepts it, and the address is one quoted, escaped word.
    let certbot = t.root.join("etc/systemd/system/mm-certbot.service");
    systemd_verify(&t, std::slice::from_ref(&certbot));
    let unit = std::fs::read_to_string(&certbot).unwrap();
    assert!(unit.contains(&format!(" --email {} ", systemd_arg(HOSTILE_CONTACT))), "{unit}");

    // /etc/issue as agetty shows it on the console: the sponsor's backslashes are not escapes.
    let node_toml = t.root.join("node.toml");
    std::fs::write(&node_toml, cfg.to_toml()).unwrap();
    let issue_root = t.root.join("issue-root");
    std::fs::create_dir_all(issue_root.join("etc")).unwrap();
    std::fs::write(issue_root.join("etc/os-release"), "ID=debian\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_mm-firstboot"))
        .arg("--root")
        .arg(&issue_root)
        .arg("--config")
        .arg(&node_toml)
        .args(["status", "--console"])
        .stdout(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "not run yet: {}", String::from_utf8_lossy(&out.stderr));
    let issue = issue_root.join("etc/issue");
    let shown = run(Command::new("script").args(["-qc", &format!("agetty --show-issue --issue-file {}", issue.display()), "/dev/null"]));
    assert!(shown.contains(&format!("sponsor: {BACKSLASH_SPONSOR}\r\n")), "agetty shows:\n{shown}");
}

/// `%XX` sequences decoded (what a mail client does with a mailto: address).
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            // A bare % (not followed by two hex digits) would be a rendering bug: fail on it.
            let hex = s.get(i + 1..i + 3).unwrap_or_else(|| panic!("bare % in {s}"));
            out.push(u8::from_str_radix(hex, 16).unwrap_or_else(|e| panic!("bad escape %{hex} in {s}: {e}")));
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}
