//! `mm-sync --traffic` against a real nginx (the shipped log format) and a real rsync daemon on
//! loopback in a private network namespace, fed known traffic from several client networks of
//! both families: the counts are exact across logrotate (create and copytruncate, the real
//! logrotate) and repeated runs, and no client address or user agent reaches any output.
//! Needs root and nginx, rsync, curl, logrotate (scripts/install-deps).

use std::path::{Path, PathBuf};
use std::process::{Child, Command};

use hostkit::netns::Netns;
use mmconfig::traffic::{FamilyDay, TrafficDoc};
use mmconfig::NodeConfig;

/// An agent a client sends: it must never reach an output.
const AGENT: &str = "SecretAgent/7 \"quoted\" project=evil rt=1";
/// Client sources: two IPv4 /24s (127.0.0.0/8 is all loopback) and two IPv6 /48s, plus the
/// loopback itself (a third /48 on IPv6).
const V4: &[&str] = &["127.0.1.10", "127.0.1.20", "127.0.2.10"];
const V6: &[&str] = &["2001:db8:1:1::10", "2001:db8:1:2::20", "2001:db8:2::10"];

fn run(c: &mut Command) -> String {
    let out = c.output().unwrap();
    assert!(out.status.success(), "{c:?}:\n{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A daemon in the foreground, stopped by SIGTERM: nginx's master then stops its workers
/// (SIGKILL would leave them running, holding the test's output open).
struct Daemon(Child);
impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg("-TERM").arg(self.0.id().to_string()).status();
        let _ = self.0.wait();
    }
}

/// What the test sent, per project and family, as the clients measured it.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Sent {
    http_2xx: u64,
    http_4xx: u64,
    http_bytes: u64,
    rsync_sessions: u64,
    rsync_bytes: u64,
}

struct World {
    dir: tempfile::TempDir,
    config: PathBuf,
    nginx: Option<Daemon>,
    rsyncd: Option<Daemon>,
    expected: std::collections::BTreeMap<(String, bool), Sent>,
    ns: Netns,
}

impl World {
    fn new() -> World {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        let logs = root.join("var/log/nginx");
        std::fs::create_dir_all(&logs).unwrap();
        for (p, size) in [("epel", 100_000), ("debian", 250_000)] {
            let d = root.join("srv/mirror").join(p);
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("file.bin"), vec![b'x'; size]).unwrap();
            std::fs::write(d.join("small"), b"small\n").unwrap();
        }
        let nodes: Vec<NodeConfig> = serde_json::from_str(include_str!("../../tests/fixtures/example-nodes.json")).unwrap();
        let debian = nodes.iter().flat_map(|n| n.projects.iter()).find(|p| p.name == "debian").unwrap().clone();
        let mut cfg = nodes.into_iter().find(|n| n.node.name == "ci").unwrap();
        cfg.projects.push(debian);
        let config = dir.path().join("node.toml");
        std::fs::write(&config, cfg.to_toml()).unwrap();
        let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let map: String = cfg.projects.iter().map(|p| format!("    ~^{} {};\n", p.http_path, p.name)).collect();
        // The shipped log format, included as the node's site includes it.
        std::fs::write(
            dir.path().join("nginx.conf"),
            format!(
                "daemon off;\nmaster_process on;\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\n\
                 events {{ worker_connections 64; }}\nhttp {{\n  access_log off;\n  include {fmt};\n\
                 map $uri $mm_project {{\n    default \"-\";\n{map}  }}\n\
                 server {{\n    listen 127.0.0.1:80;\n    listen [::]:80;\n    root {root}/srv/mirror;\n\
                 access_log {logs}/micromirror-access.log micromirror;\n  }}\n}}\n",
                d = dir.path().display(),
                fmt = repo.join("overlays/services/nginx-log-format.conf").display(),
                root = root.display(),
                logs = logs.display(),
            ),
        )
        .unwrap();
        let modules: String =
            cfg.projects.iter().map(|p| format!("[{}]\npath = {}/srv/mirror/{}\n", p.rsync_module, root.display(), p.directory)).collect();
        std::fs::write(
            dir.path().join("rsyncd.conf"),
            format!(
                "use chroot = no\nread only = yes\nreverse lookup = no\nlog file = {}/rsyncd.log\npid file = {}/rsyncd.pid\n{modules}",
                logs.display(),
                dir.path().display()
            ),
        )
        .unwrap();
        let ns = Netns::new();
        for a in V4 {
            run(ns.cmd("ip").args(["addr", "add", &format!("{a}/32"), "dev", "lo"]));
        }
        for a in V6 {
            run(ns.cmd("ip").args(["-6", "addr", "add", &format!("{a}/128"), "dev", "lo", "nodad"]));
        }
        let mut w = World { dir, config, nginx: None, rsyncd: None, expected: Default::default(), ns };
        w.start();
        w
    }

    fn start(&mut self) {
        let conf = self.dir.path().join("nginx.conf");
        run(self.ns.cmd("nginx").arg("-t").arg("-c").arg(&conf));
        self.nginx = Some(Daemon(self.ns.cmd("nginx").arg("-c").arg(&conf).spawn().unwrap()));
        let rconf = self.dir.path().join("rsyncd.conf");
        self.rsyncd = Some(Daemon(
            self.ns
                .cmd("rsync")
                .args(["--daemon", "--no-detach", "--port=873"])
                .arg(format!("--config={}", rconf.display()))
                .spawn()
                .unwrap(),
        ));
        self.ns.wait_port(80);
        self.ns.wait_port(873);
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    /// One HTTP request from `src`; what nginx sent is what curl received (headers + body).
    fn get(&mut self, src: &str, path: &str) {
        let v6 = src.contains(':');
        let host = if v6 { "[::1]" } else { "127.0.0.1" };
        let out = run(self.ns.cmd("curl").args(["-s", "-o", "/dev/null", "-A", AGENT, "--interface", src]).args([
            "-w",
            "%{http_code} %{size_header} %{size_download}",
            &format!("http://{host}{path}"),
        ]));
        let f: Vec<u64> = out.split_whitespace().map(|x| x.parse().unwrap()).collect();
        let project = path.trim_start_matches('/').split('/').next().unwrap().to_string();
        if project != "epel" && project != "debian" {
            return;
        }
        let e = self.expected.entry((project, v6)).or_default();
        match f[0] {
            200..=299 => e.http_2xx += 1,
            400..=499 => e.http_4xx += 1,
            c => panic!("unexpected status {c}"),
        }
        e.http_bytes += f[1] + f[2];
    }

    /// One rsync session from `src`, through a relay in the namespace that connects to the
    /// daemon from `src` and counts every byte the daemon sends. The daemon reports its
    /// protocol's bytes, without the greeting and checksum negotiation (95 bytes with rsync
    /// 3.5): the session's own figure, read from the line it appended, must lie just under
    /// the relay's count, and it is what the collector must sum.
    fn rsync(&mut self, src: &str, module: &str) {
        let log = self.root().join("var/log/nginx/rsyncd.log");
        let before = std::fs::metadata(&log).map_or(0, |m| m.len()) as usize;
        let v6 = src.contains(':');
        let dest = self.dir.path().join(format!("pull-{src}-{module}"));
        let _ = std::fs::remove_dir_all(&dest);
        let (port_tx, port_rx) = std::sync::mpsc::channel();
        let holder = self.ns.holder_path();
        let source: std::net::IpAddr = src.parse().unwrap();
        let relay = std::thread::spawn(move || relay_once(&holder, source, port_tx));
        let port: u16 = port_rx.recv().unwrap();
        run(self.ns.cmd("rsync").args(["-a"]).arg(format!("rsync://127.0.0.1:{port}/{module}/")).arg(&dest));
        let wire = relay.join().unwrap();
        // The daemon logs its figure as its session process ends, after the client may have.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let sent: u64 = loop {
            let text = std::fs::read(&log).unwrap();
            let new = String::from_utf8_lossy(&text[before.min(text.len())..]).into_owned();
            if let Some(n) = new.lines().find_map(|l| l.split("] sent ").nth(1)?.split(' ').next()?.parse().ok()) {
                break n;
            }
            assert!(std::time::Instant::now() < deadline, "the daemon logged no end of session:\n{new}");
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        assert!(sent <= wire && wire - sent < 128, "the daemon says it sent {sent}, the relay saw {wire}");
        let e = self.expected.entry((module.to_string(), v6)).or_default();
        e.rsync_sessions += 1;
        e.rsync_bytes += sent;
    }

    /// A known mix: per source one large and one small file of each project, a 404, a path of no project.
    fn traffic(&mut self) {
        for src in V4.iter().chain(V6) {
            for p in ["epel", "debian"] {
                self.get(src, &format!("/{p}/file.bin"));
                self.get(src, &format!("/{p}/small"));
            }
            self.get(src, "/epel/missing");
            self.get(src, "/robots.txt");
        }
        self.rsync(V4[0], "epel");
        self.rsync(V6[2], "debian");
        self.rsync(V6[0], "debian");
    }

    fn collect(&self) {
        let out = self
            .ns
            .cmd(env!("CARGO_BIN_EXE_mm-sync"))
            .arg("--config")
            .arg(&self.config)
            .arg("--root")
            .arg(self.root())
            .arg("--traffic")
            .output()
            .unwrap();
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        println!("{text}");
        assert!(out.status.success() && !text.contains("warning"), "{text}");
    }

    fn doc(&self) -> TrafficDoc {
        serde_json::from_str(&std::fs::read_to_string(self.root().join("srv/mirror/.mm/traffic.json")).unwrap()).unwrap()
    }

    /// The document's totals over every day, per project and family, against what was sent.
    fn assert_counts(&self, networks: &[(&str, bool, u64)]) {
        let doc = self.doc();
        let mut got: std::collections::BTreeMap<(String, bool), FamilyDay> = Default::default();
        for d in &doc.days {
            for (p, pd) in &d.projects {
                for (v6, f) in [(false, &pd.ipv4), (true, &pd.ipv6)] {
                    let g = got.entry((p.clone(), v6)).or_default();
                    g.http_2xx += f.http_2xx;
                    g.http_3xx += f.http_3xx;
                    g.http_4xx += f.http_4xx;
                    g.http_5xx += f.http_5xx;
                    g.http_bytes += f.http_bytes;
                    g.http_networks += f.http_networks;
                    g.rsync_sessions += f.rsync_sessions;
                    g.rsync_bytes += f.rsync_bytes;
                }
            }
        }
        for (key, want) in &self.expected {
            let g = got.remove(key).unwrap_or_default();
            let seen = Sent {
                http_2xx: g.http_2xx,
                http_4xx: g.http_4xx,
                http_bytes: g.http_bytes,
                rsync_sessions: g.rsync_sessions,
                rsync_bytes: g.rsync_bytes,
            };
            assert_eq!(&seen, want, "{key:?}");
            assert_eq!((g.http_3xx, g.http_5xx), (0, 0), "{key:?}");
        }
        assert!(got.values().all(|g| *g == FamilyDay::default()), "counted more than was sent: {got:?}");
        for (p, v6, n) in networks {
            let counted: u64 = doc
                .days
                .iter()
                .filter_map(|d| d.projects.get(*p))
                .map(|pd| if *v6 { pd.ipv6.http_networks } else { pd.ipv4.http_networks })
                .sum();
            assert_eq!(counted, *n, "{p} v6={v6} networks");
        }
    }

    /// Every file the collector writes, read whole: no address, no agent.
    fn assert_private(&self) {
        let files = [
            self.root().join("srv/mirror/.mm/traffic.json"),
            self.root().join("var/lib/micromirror/traffic/state.json"),
            self.root().join("var/lib/prometheus/node-exporter/mm_traffic.prom"),
        ];
        for f in &files {
            let text = std::fs::read_to_string(f).unwrap();
            for secret in V4.iter().chain(V6).copied().chain([
                "127.0.0.1",
                "::1\"",
                "127.0.1",
                "2001:db8",
                "SecretAgent",
                "file.bin",
                "small",
                "missing",
            ]) {
                assert!(!text.contains(secret), "{secret} in {}", f.display());
            }
        }
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&files[1]).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "the state holds the open days' salts");
    }

    /// The real logrotate with `create` or `copytruncate`, as Debian's nginx rotation does
    /// (delaycompress, then nginx told to reopen its log).
    fn logrotate(&self, how: &str) {
        let logs = self.root().join("var/log/nginx");
        let conf = self.dir.path().join(format!("logrotate-{how}.conf"));
        std::fs::write(
            &conf,
            format!(
                "{}/*.log {{\n  rotate 3\n  compress\n  delaycompress\n  {how}\n  postrotate\n    kill -USR1 $(cat {}/nginx.pid)\n  endscript\n}}\n",
                logs.display(),
                self.dir.path().display()
            ),
        )
        .unwrap();
        run(Command::new("logrotate").args(["-f", "-s"]).arg(self.dir.path().join("logrotate.state")).arg(&conf));
        assert!(logs.join("micromirror-access.log.1").exists());
        // nginx reopens its log in the master's signal handler; wait until the new file is its.
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
}

/// Inside the namespace at `holder`: accept one connection on an ephemeral loopback port (sent
/// back on `port`), connect to the daemon on port 873 from `source`, relay both ways until both
/// ends close; the bytes the daemon sent.
fn relay_once(holder: &Path, source: std::net::IpAddr, port: std::sync::mpsc::Sender<u16>) -> u64 {
    use nix::sys::socket::{bind, connect, socket, AddressFamily, SockFlag, SockType, SockaddrStorage};
    use std::io::{Read, Write};
    use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
    let ns = std::fs::File::open(holder).unwrap();
    nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    port.send(listener.local_addr().unwrap().port()).unwrap();
    let (client, _) = listener.accept().unwrap();
    let family = if source.is_ipv6() { AddressFamily::Inet6 } else { AddressFamily::Inet };
    let fd = socket(family, SockType::Stream, SockFlag::SOCK_CLOEXEC, None).unwrap();
    let daemon_addr: SocketAddr = if source.is_ipv6() { "[::1]:873".parse().unwrap() } else { "127.0.0.1:873".parse().unwrap() };
    bind(std::os::fd::AsRawFd::as_raw_fd(&fd), &SockaddrStorage::from(SocketAddr::new(source, 0))).unwrap();
    connect(std::os::fd::AsRawFd::as_raw_fd(&fd), &SockaddrStorage::from(daemon_addr)).unwrap();
    let daemon = TcpStream::from(fd);
    let copy = |mut from: TcpStream, mut to: TcpStream| {
        std::thread::spawn(move || {
            let (mut n, mut buf) = (0u64, vec![0u8; 65536]);
            loop {
                match from.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(k) => {
                        to.write_all(&buf[..k]).unwrap();
                        n += k as u64;
                    }
                }
            }
            let _ = to.shutdown(Shutdown::Write);
            n
        })
    };
    let up = copy(client.try_clone().unwrap(), daemon.try_clone().unwrap());
    let down = copy(daemon, client);
    up.join().unwrap();
    down.join().unwrap()
}

#[test]
fn counts_are_exact_across_rotations_and_runs_and_keep_no_address() {
    let mut w = World::new();
    w.traffic();
    w.collect();
    // /24s 127.0.1 and 127.0.2; /48s 2001:db8:1 and 2001:db8:2, per project that was asked.
    w.assert_counts(&[("epel", false, 2), ("epel", true, 2), ("debian", false, 2), ("debian", true, 2)]);
    w.assert_private();

    // A run with nothing new counts nothing again.
    w.collect();
    w.assert_counts(&[("epel", false, 2), ("epel", true, 2), ("debian", false, 2), ("debian", true, 2)]);

    // Traffic, then a rotation by rename + create before the collector runs: the rest of the
    // old file is read from the rotated one.
    w.traffic();
    w.logrotate("create");
    w.traffic();
    w.collect();
    w.assert_counts(&[("epel", false, 2), ("epel", true, 2), ("debian", false, 2), ("debian", true, 2)]);

    // The same with copytruncate (the second rotation compresses the first; .1 is the copy).
    w.traffic();
    w.logrotate("copytruncate");
    w.traffic();
    w.collect();
    w.collect();
    w.assert_counts(&[("epel", false, 2), ("epel", true, 2), ("debian", false, 2), ("debian", true, 2)]);
    w.assert_private();

    let prom = std::fs::read_to_string(w.root().join("var/lib/prometheus/node-exporter/mm_traffic.prom")).unwrap();
    let want = &w.expected[&("epel".to_string(), true)];
    assert!(prom.contains(&format!("mm_traffic_http_bytes_total{{project=\"epel\",family=\"ipv6\"}} {}\n", want.http_bytes)), "{prom}");
    let out = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::fs::File::open(w.root().join("var/lib/prometheus/node-exporter/mm_traffic.prom")).unwrap())
        .output()
        .unwrap();
    assert!(out.status.success(), "promtool check metrics:\n{}", String::from_utf8_lossy(&out.stderr));
}

/// `scripts/bench`: CPU time of one collector run over a million new nginx lines (one day of a
/// busy node: 100,000 IPv4 /24s and 50,000 IPv6 /48s, two projects), the peak resident size of
/// the run, and the state it leaves. Ignored by default.
#[test]
#[ignore]
fn bench_collector_million_lines() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let logs = root.join("var/log/nginx");
    std::fs::create_dir_all(&logs).unwrap();
    let nodes: Vec<NodeConfig> = serde_json::from_str(include_str!("../../tests/fixtures/example-nodes.json")).unwrap();
    let cfg = nodes.into_iter().find(|n| n.node.name == "ci").unwrap();
    let config = dir.path().join("node.toml");
    std::fs::write(&config, cfg.to_toml()).unwrap();
    let mut w = std::io::BufWriter::new(std::fs::File::create(logs.join("micromirror-access.log")).unwrap());
    const LINES: u64 = 1_000_000;
    for i in 0..LINES {
        let addr = if i % 3 == 2 {
            format!("2001:db8:{:x}:{:x}::{:x}", i % 50_000, i % 7, i % 251)
        } else {
            let n = i % 100_000;
            format!("{}.{}.{}.{}", 10 + n / 65_536, n / 256 % 256, n % 256, i % 250 + 1)
        };
        let project = if i % 5 == 0 { "debian" } else { "epel" };
        writeln!(
            w,
            "{addr} - - [07/Dec/2026:{:02}:{:02}:{:02} +0000] \"GET /{project}/9/Everything/x86_64/Packages/p/pkg-{i}.rpm HTTP/1.1\" 200 123456 123789 \"-\" \"libdnf (AlmaLinux 9.5; generic; Linux.x86_64)\" project={project} rt=0.012",
            i * 86_400 / LINES / 3600,
            i * 86_400 / LINES / 60 % 60,
            i * 86_400 / LINES % 60
        )
        .unwrap();
    }
    w.flush().unwrap();
    drop(w);
    // Python's resource module reads the child's rusage (CPU time and peak resident size).
    let started = std::time::Instant::now();
    let out = Command::new("python3")
        .args([
            "-c",
            "import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True); \
             r = resource.getrusage(resource.RUSAGE_CHILDREN); print(r.ru_utime + r.ru_stime, r.ru_maxrss)",
            env!("CARGO_BIN_EXE_mm-sync"),
            "--config",
        ])
        .arg(&config)
        .arg("--root")
        .arg(&root)
        .arg("--traffic")
        .output()
        .unwrap();
    let wall = started.elapsed().as_secs_f64();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let figures = String::from_utf8_lossy(&out.stdout).into_owned();
    let (cpu, rss_kib) = figures.trim().split_once(' ').unwrap();
    let cpu: f64 = cpu.parse().unwrap();
    let rss_kib: u64 = rss_kib.parse().unwrap();
    let state = std::fs::metadata(root.join("var/lib/micromirror/traffic/state.json")).unwrap().len();
    let doc: TrafficDoc = serde_json::from_str(&std::fs::read_to_string(root.join("srv/mirror/.mm/traffic.json")).unwrap()).unwrap();
    let epel = &doc.days[0].projects["epel"];
    assert_eq!(doc.days[0].projects.values().map(|p| p.ipv4.requests() + p.ipv6.requests()).sum::<u64>(), LINES);
    // 100,000 /24s of which those with n % 5 != 0 carry epel; 50,000 /48s likewise.
    assert_eq!((epel.ipv4.http_networks, epel.ipv6.http_networks), (80_000, 40_000));
    println!("BENCH traffic-cpu-per-million-lines {cpu:.2} {wall:.2}");
    println!("BENCH traffic-peak-rss-mib {}", rss_kib / 1024);
    println!("BENCH traffic-state-kib {}", state / 1024);
    println!("BENCH traffic-networks {} {}", epel.ipv4.http_networks, epel.ipv6.http_networks);
}
