//! Loopback fleets for `status` and `report`: one nginx serving every fixture node (a server per
//! node, IPv4 and IPv6), rsync daemons per node and family and for the upstream, closed ports and
//! sockets that accept and never answer. Needs root, nginx and rsync.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hostkit::testenv::free_port;
use serde_json::Value;

pub const KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOozE4famK1j6NfXCWFhGYm39GKIAWKfHlpUtwM5i4R9 ops@example.net";
pub const DOMAIN: &str = "mm.example.net";

pub struct Daemon(pub Child);
impl Drop for Daemon {
    fn drop(&mut self) {
        // SIGTERM: nginx's master then stops its workers too.
        let _ = Command::new("kill").arg(self.0.id().to_string()).status();
        let _ = self.0.wait();
    }
}

pub fn wait_port(addr: SocketAddr) {
    for _ in 0..200 {
        if std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!("nothing listens on {addr}");
}

pub fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

pub fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

pub fn repomd(rev: u64) -> String {
    format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<repomd xmlns=\"http://linux.duke.edu/metadata/repo\">\n  <revision>{rev}</revision>\n</repomd>\n")
}

/// A trace line as `date -u` writes it.
pub fn trace(unix: u64) -> String {
    let out = Command::new("date").args(["-u", "-d", &format!("@{unix}"), "+%a %b %e %H:%M:%S UTC %Y"]).output().unwrap();
    format!("{}\nArchive serial: {unix}\n", String::from_utf8(out.stdout).unwrap().trim())
}

/// How a fixture node behaves.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Kind {
    /// Same markers as the upstream, every module.
    Fresh,
    /// archlinux 30 h behind its upstream (allowed 24 h + 1 h).
    Lagging,
    /// Nothing listens.
    Down,
    /// The rsync daemon lacks the gimp module.
    WrongModule,
    /// Accepts connections and never says a word.
    Silent,
    /// Its public document: epel's last sync failed, gimp missing, kde no longer in the inventory.
    Drifted,
    /// Just turned up: gimp's first sync is still running, so gimp has no trace yet.
    FirstSync,
}

pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub fleet: PathBuf,
    pub resolve: Vec<String>,
    _daemons: Vec<Daemon>,
    _silent: Vec<TcpListener>,
}

impl Fixture {
    /// The directory nginx serves as `name`'s document root.
    pub fn root(&self, name: &str) -> PathBuf {
        self.dir.path().join("nodes").join(name)
    }
}

pub fn rsyncd(dir: &Path, name: &str, addr: &str, modules: &[(&str, PathBuf)]) -> (Daemon, SocketAddr) {
    let port = free_port(addr);
    let conf = dir.join(format!("{name}.conf"));
    let mut text = format!("use chroot = no\nuid = root\ngid = root\nread only = yes\nlog file = {}/{name}.log\n", dir.display());
    for (m, path) in modules {
        text.push_str(&format!("[{m}]\n    path = {}\n    comment = fixture {m}\n", path.display()));
    }
    write(&conf, &text);
    let child = Command::new("rsync")
        .args(["--daemon", "--no-detach", &format!("--config={}", conf.display()), &format!("--port={port}"), &format!("--address={addr}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let sa = SocketAddr::new(addr.parse().unwrap(), port);
    wait_port(sa);
    (Daemon(child), sa)
}

pub const PROJECTS: [&str; 3] = ["archlinux", "epel", "gimp"];

/// Nodes named after their kind (`<kind><i>`); the upstream is reachable unless `upstream_down`.
pub fn fixture(nodes: &[Kind], upstream_down: bool) -> Fixture {
    fixture_with(nodes, upstream_down, None)
}

/// With `tls_days`, the fleet serves HTTPS and each node a self-signed certificate valid that long.
pub fn fixture_with(nodes: &[Kind], upstream_down: bool, tls_days: Option<u32>) -> Fixture {
    fixture_sponsored(nodes, upstream_down, tls_days, &|i| format!("Sponsor {i}"))
}

/// With node `i`'s sponsor named `sponsor(i)` (any text: it is quoted for TOML here).
pub fn fixture_sponsored(nodes: &[Kind], upstream_down: bool, tls_days: Option<u32>, sponsor: &dyn Fn(usize) -> String) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let t = now();
    let epel_marker = "9/Everything/x86_64/repodata/repomd.xml";
    // The upstream.
    write(&d.join("upstream/archlinux/lastsync"), &format!("{t}\n"));
    write(&d.join("upstream/epel").join(epel_marker), &repomd(t - 600));
    let mut daemons = Vec::new();
    let upstream = if upstream_down {
        SocketAddr::from(([127, 0, 0, 1], free_port("127.0.0.1")))
    } else {
        let (dm, sa) =
            rsyncd(d, "upstream", "127.0.0.1", &[("archlinux", d.join("upstream/archlinux")), ("epel", d.join("upstream/epel"))]);
        daemons.push(dm);
        sa
    };
    let https = tls_days.is_some();
    if let Some(days) = tls_days {
        let out = Command::new("openssl")
            .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=fixture.invalid", "-days", &days.to_string(), "-keyout"])
            .arg(d.join("key.pem"))
            .arg("-out")
            .arg(d.join("cert.pem"))
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    let mut fleet = format!(
        "[fleet]\nname = \"loop\"\ndomain = \"{DOMAIN}\"\ncontact = \"mirror@example.net\"\nadmin_ssh_keys = [\"{KEY}\"]\n\
admin_prefixes = [\"192.0.2.0/24\"]\nhttps = {https}\n\n[defaults]\nhardware = \"wasp\"\nprojects = [\"archlinux\", \"epel\", \"gimp\"]\n\
dns = [\"9.9.9.9\", \"2620:fe::fe\"]\nupstreams = {{ archlinux = \"rsync://{upstream}/archlinux/\", epel = \"rsync://{upstream}/epel/\" }}\n"
    );
    let mut servers = String::new();
    let mut resolve = Vec::new();
    let mut silent = Vec::new();
    let mut served: Vec<SocketAddr> = Vec::new();
    let full: Vec<(&str, PathBuf)> = PROJECTS.iter().map(|p| (*p, d.join("modules").join(p))).collect();
    for p in PROJECTS {
        std::fs::create_dir_all(d.join("modules").join(p)).unwrap();
    }
    for (i, kind) in nodes.iter().enumerate() {
        let name = format!("{}{i}", format!("{kind:?}").to_lowercase());
        fleet.push_str(&format!(
            "\n[[node]]\nname = \"{name}\"\nsponsor = {{ name = {sponsor}, url = \"https://s{i}.example/\" }}\n\
ipv4 = {{ address = \"192.0.2.{a}/31\", gateway = \"192.0.2.{b}\" }}\nipv6 = {{ address = \"2001:db8:{i}::2/64\", gateway = \"2001:db8:{i}::1\" }}\n",
            sponsor = serde_json::Value::String(sponsor(i)),
            a = 2 * (i + 1),
            b = 2 * (i + 1) + 1
        ));
        let root = d.join("nodes").join(&name);
        let fqdn = format!("{name}.{DOMAIN}");
        let arch_t = if *kind == Kind::Lagging { t - 30 * 3600 } else { t };
        write(&root.join("archlinux/lastsync"), &format!("{arch_t}\n"));
        write(&root.join("epel").join(epel_marker), &repomd(t - 600));
        if *kind == Kind::FirstSync {
            // firstboot makes the (empty) project directory before the first sync.
            std::fs::create_dir_all(root.join("gimp")).unwrap();
        } else {
            write(&root.join("gimp/.mirror-trace").join(&fqdn), &trace(t - 3600));
        }
        let doc = match kind {
            Kind::Drifted => [("archlinux", "success"), ("epel", "failed"), ("kde", "success")],
            Kind::FirstSync => [("archlinux", "success"), ("epel", "success"), ("gimp", "running")],
            _ => [("archlinux", "success"), ("epel", "success"), ("gimp", "success")],
        };
        let projects: Vec<Value> = doc.iter().map(|(p, r)| serde_json::json!({"project": p, "result": r, "check_errors": 0})).collect();
        // The drifted node also runs an older image than the fleet's build (FLEET_IMAGE).
        let image = if *kind == Kind::Drifted { OLD_IMAGE } else { FLEET_IMAGE };
        // The drifted node tried the fleet's build and fell back (what mm-sync publishes then).
        let rollback = (*kind == Kind::Drifted).then(|| serde_json::json!({"image_version": FLEET_IMAGE, "at_unix": 1_796_000_000}));
        write(
            &root.join(".mm/status.json"),
            &serde_json::json!({"version": 1, "node": fqdn, "image_version": image, "projects": projects, "last_rollback": rollback})
                .to_string(),
        );
        let (h4, h6, r4, r6) = match kind {
            Kind::Fresh | Kind::Lagging | Kind::WrongModule | Kind::Drifted | Kind::FirstSync => {
                let (p4, p6) = (free_port("127.0.0.1"), free_port("::1"));
                let mut tls = String::new();
                if https {
                    let (t4, t6) = (free_port("127.0.0.1"), free_port("::1"));
                    tls = format!(
                        " listen 127.0.0.1:{t4} ssl;\n listen [::1]:{t6} ssl;\n ssl_certificate {d}/cert.pem;\n ssl_certificate_key {d}/key.pem;\n",
                        d = d.display()
                    );
                    resolve.push(format!("{name}:443=127.0.0.1:{t4}"));
                    resolve.push(format!("{name}:443=[::1]:{t6}"));
                }
                servers.push_str(&format!(
                    "server {{\n listen 127.0.0.1:{p4};\n listen [::1]:{p6};\n{tls} root {};\n location / {{ autoindex on; }}\n}}\n",
                    root.display()
                ));
                // One daemon per node and family, as on a real fleet (rsync's listen backlog is 5:
                // a daemon shared by fifty nodes drops connections under parallel probing).
                let mods: Vec<(&str, PathBuf)> = if *kind == Kind::WrongModule {
                    vec![full[0].clone(), full[1].clone(), ("gimp-old", full[2].1.clone())]
                } else {
                    full.clone()
                };
                let (a, r4) = rsyncd(d, &format!("{name}-4"), "127.0.0.1", &mods);
                let (b, r6) = rsyncd(d, &format!("{name}-6"), "::1", &mods);
                daemons.extend([a, b]);
                served.extend([SocketAddr::from(([127, 0, 0, 1], p4)), format!("[::1]:{p6}").parse().unwrap()]);
                (SocketAddr::from(([127, 0, 0, 1], p4)), format!("[::1]:{p6}").parse().unwrap(), r4, r6)
            }
            Kind::Down => {
                let c4 = SocketAddr::from(([127, 0, 0, 1], free_port("127.0.0.1")));
                let c6: SocketAddr = format!("[::1]:{}", free_port("::1")).parse().unwrap();
                (c4, c6, c4, c6)
            }
            Kind::Silent => {
                let l4 = TcpListener::bind("127.0.0.1:0").unwrap();
                let l6 = TcpListener::bind("[::1]:0").unwrap();
                let (a4, a6) = (l4.local_addr().unwrap(), l6.local_addr().unwrap());
                silent.extend([l4, l6]);
                (a4, a6, a4, a6)
            }
        };
        for (port, addr) in [(80, h4), (80, h6), (873, r4), (873, r6)] {
            resolve.push(format!("{name}:{port}={addr}"));
        }
        if https && matches!(kind, Kind::Down | Kind::Silent) {
            resolve.push(format!("{name}:443={h4}"));
            resolve.push(format!("{name}:443={h6}"));
        }
    }
    if !servers.is_empty() {
        let conf = d.join("nginx.conf");
        write(
            &conf,
            &format!(
                "user root;\npid {r}/nginx.pid;\nerror_log {r}/nginx-error.log;\nevents {{}}\nhttp {{\n access_log off;\n client_body_temp_path {r}/tmp;\n\
 proxy_temp_path {r}/tmp;\n fastcgi_temp_path {r}/tmp;\n uwsgi_temp_path {r}/tmp;\n scgi_temp_path {r}/tmp;\n{servers}}}\n",
                r = d.display()
            ),
        );
        let child = Command::new("nginx")
            .args(["-e", &d.join("nginx-error.log").to_string_lossy(), "-c"])
            .arg(&conf)
            .args(["-g", "daemon off;"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        daemons.push(Daemon(child));
        for a in &served {
            wait_port(*a);
        }
    }
    let path = d.join("fleet.toml");
    write(&path, &fleet);
    Fixture { dir, fleet: path, resolve, _daemons: daemons, _silent: silent }
}

pub const FLEET_IMAGE: &str = "20261104.024542-3f2a9c1e0b7d";
pub const OLD_IMAGE: &str = "20261001.000000-aaaaaaaaaaaa";
