//! Shared by the service tests: the example nodes, rendering into a temporary tree, a private
//! network namespace per test (its own loopback, so fixed ports never collide with another test
//! or the host), and daemons stopped when the test ends.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use mm_firstboot::services::{render_services, Family, Paths, Services};
use mmconfig::NodeConfig;

pub use hostkit::netns::Netns;

pub fn node(name: &str) -> NodeConfig {
    let nodes: Vec<NodeConfig> = serde_json::from_str(include_str!("../../../tests/fixtures/example-nodes.json")).unwrap();
    nodes.into_iter().find(|n| n.node.name == name).unwrap()
}

/// Runs `cmd`, fails the test with its output unless it succeeds; stdout + stderr.
pub fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{cmd:?} failed:\n{text}");
    text
}

/// A daemon stopped with SIGTERM when the test ends (nginx's master then stops its workers,
/// which would otherwise outlive the test holding its output pipes).
pub struct Daemon(pub Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg(self.0.id().to_string()).status();
        let _ = self.0.wait();
    }
}

pub struct Tree {
    pub dir: tempfile::TempDir,
    pub root: PathBuf,
    pub paths: Paths,
    pub services: Services,
}

impl Tree {
    /// Renders `cfg` with every path inside a temporary tree and installs the files there.
    /// Ports are the real ones: the daemons run in a [`Netns`].
    pub fn new(cfg: &NodeConfig) -> Tree {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        let p = |s: &str| root.join(s).to_string_lossy().into_owned();
        let paths = Paths {
            family: Family::Debian,
            data_root: p("srv/mirror"),
            nginx_dir: p("etc/nginx/micromirror"),
            log_dir: p("log"),
            rsync_dir: p("etc"),
            http_port: 80,
            https_port: 443,
            tls_dir: p("etc/letsencrypt/live"),
            acme_dir: p("acme"),
            tls_ready: cfg.fleet.https,
            run_dir: p("run"),
        };
        // nginx's workers run as the distribution's account (www-data): the tree must be theirs
        // to read, as /srv/mirror is on the node.
        std::fs::set_permissions(&root, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        std::fs::create_dir_all(root.join("run")).unwrap();
        if cfg.fleet.https {
            // A self-signed stand-in for the Let's Encrypt certificate, where certbot puts it.
            let live = root.join("etc/letsencrypt/live").join(&cfg.node.fqdn);
            std::fs::create_dir_all(&live).unwrap();
            run(Command::new("openssl")
                .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2", "-subj"])
                .arg(format!("/CN={}", cfg.node.fqdn))
                .arg("-keyout")
                .arg(live.join("privkey.pem"))
                .arg("-out")
                .arg(live.join("fullchain.pem")));
        }
        std::fs::create_dir_all(root.join("log")).unwrap();
        std::fs::create_dir_all(&paths.data_root).unwrap();
        let services = render_services(cfg, &paths).unwrap();
        for f in &services.files {
            // Files placed by `paths` are already inside the tree; the rest are node paths.
            let dest = if f.path.starts_with(&root) { f.path.clone() } else { root.join(f.path.strip_prefix("/").unwrap_or(&f.path)) };
            std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
            std::fs::write(&dest, &f.contents).unwrap();
        }
        Tree { dir, root, paths, services }
    }

    pub fn data(&self) -> PathBuf {
        PathBuf::from(&self.paths.data_root)
    }

    /// The rendered main nginx.conf inside the tree: it includes the tree's rendered site
    /// (relative to its own directory) and the host's real modules and mime.types.
    pub fn nginx_main_conf(&self) -> PathBuf {
        self.root.join("etc/nginx/nginx.conf")
    }

    /// `nginx -t`, then nginx in the foreground inside `ns`, up once port 80 listens.
    pub fn start_nginx(&self, ns: &Netns) -> Daemon {
        let conf = self.nginx_main_conf();
        run(Command::new("nginx").arg("-t").arg("-c").arg(&conf));
        let d = Daemon(
            ns.cmd("nginx").arg("-c").arg(&conf).args(["-g", "daemon off;"]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap(),
        );
        ns.wait_port(self.paths.http_port);
        if self.paths.tls_ready {
            ns.wait_port(self.paths.https_port);
        }
        d
    }
}

/// Waits until nginx's access log (the micromirror format: address first, status after the
/// quoted request) records `n` responses with `status` to addresses starting with `from`; fails
/// the test after `within`. nginx's own record of what it did, instead of a fixed sleep.
pub fn await_logged(t: &Tree, from: &str, status: u16, n: usize, within: std::time::Duration) {
    let log = Path::new(&t.paths.log_dir).join("micromirror-access.log");
    let deadline = std::time::Instant::now() + within;
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let seen = text
            .lines()
            .filter(|l| l.starts_with(from))
            .filter(|l| l.split('"').nth(2).and_then(|r| r.split_whitespace().next()) == Some(status.to_string().as_str()))
            .count();
        if seen >= n {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "{}: {seen} responses {status} to {from}*, not {n}, after {within:?}", log.display());
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// `curl` inside `ns`: (status line "CODE content/type", body).
pub fn curl(ns: &Netns, url: &str) -> (String, Vec<u8>) {
    let out = ns.cmd("curl").args(["-sk", "-m", "20", "-o", "-", "-w", "\n%{http_code} %{content_type}", url]).output().unwrap();
    let mut body = out.stdout;
    let pos = body.iter().rposition(|&b| b == b'\n').unwrap();
    let meta = String::from_utf8_lossy(&body[pos + 1..]).into_owned();
    body.truncate(pos);
    (meta, body)
}

/// Evaluates an XPath expression over an HTML file with libxml2's HTML parser (`xmllint --html`).
pub fn html_xpath(file: &Path, expr: &str) -> String {
    let out = Command::new("xmllint").args(["--html", "--xpath", expr]).arg(file).output().unwrap();
    assert!(out.status.success(), "xmllint --xpath {expr} {}: {}", file.display(), String::from_utf8_lossy(&out.stderr));
    // xmllint ends what it prints with a newline of its own.
    let text = String::from_utf8(out.stdout).unwrap();
    text.strip_suffix('\n').unwrap_or(&text).to_string()
}
