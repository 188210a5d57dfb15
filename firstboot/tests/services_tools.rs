//! The rendered services checked and run by their real tools: nginx (serving for real), nft,
//! systemd-analyze, rsync --daemon, sshd -t. Needs root and the packages from install-deps.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use mm_firstboot::services::{render_services, Paths, Services};
use mmconfig::NodeConfig;

const HOSTILE: &str = "CI \"Labs\" & <Sons> '; rm -rf / #";

fn node(name: &str) -> NodeConfig {
    let nodes: Vec<NodeConfig> = serde_json::from_str(include_str!("fixtures/example-nodes.json")).unwrap();
    nodes.into_iter().find(|n| n.node.name == name).unwrap()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{cmd:?} failed:\n{text}");
    text
}

struct Tree {
    _dir: tempfile::TempDir,
    root: PathBuf,
    paths: Paths,
    services: Services,
}

/// Render `cfg` with every path inside a temporary tree and install the files there.
fn tree(cfg: &NodeConfig) -> Tree {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let p = |s: &str| root.join(s).to_string_lossy().into_owned();
    let paths = Paths {
        family: mm_firstboot::services::Family::Debian,
        data_root: p("srv/mirror"),
        nginx_dir: p("etc/nginx/micromirror"),
        log_dir: p("log"),
        rsync_dir: p("etc"),
        http_port: free_port(),
        https_port: free_port(),
        tls_dir: p("etc/letsencrypt/live"),
        acme_dir: p("acme"),
        tls_ready: cfg.fleet.https,
    };
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
    let services = render_services(cfg, &paths).unwrap();
    for f in &services.files {
        // Files placed by `paths` are already inside the tree; the rest are node paths.
        let dest = if f.path.starts_with(&root) { f.path.clone() } else { root.join(f.path.strip_prefix("/").unwrap_or(&f.path)) };
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        std::fs::write(&dest, &f.contents).unwrap();
    }
    Tree { _dir: dir, root, paths, services }
}

/// A main nginx.conf inside the tree that includes the rendered site.
fn nginx_main_conf(t: &Tree) -> PathBuf {
    let site = t.root.join("etc/nginx/sites-enabled/default");
    let conf = t.root.join("nginx.conf");
    std::fs::write(
        &conf,
        format!(
            "user root;\npid {r}/nginx.pid;\nerror_log {r}/log/error.log;\nload_module /usr/lib/nginx/modules/ngx_http_xslt_filter_module.so;\n\
events {{}}\nhttp {{\n include /etc/nginx/mime.types;\n client_body_temp_path {r}/tmp;\n proxy_temp_path {r}/tmp;\n fastcgi_temp_path {r}/tmp;\n uwsgi_temp_path {r}/tmp;\n scgi_temp_path {r}/tmp;\n include {site};\n}}\n",
            r = t.root.display(),
            site = site.display()
        ),
    )
    .unwrap();
    conf
}

struct Daemon(Child);
impl Drop for Daemon {
    fn drop(&mut self) {
        // SIGTERM, not SIGKILL: nginx's master then stops its workers, which would otherwise
        // outlive the test holding its output pipes.
        let _ = Command::new("kill").arg(self.0.id().to_string()).status();
        let _ = self.0.wait();
    }
}

fn wait_port(port: u16) {
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("nothing listens on {port}");
}

fn curl(url: &str) -> (String, Vec<u8>) {
    let out = Command::new("curl").args(["-s", "-m", "20", "-o", "-", "-w", "\n%{http_code} %{content_type}", url]).output().unwrap();
    let mut body = out.stdout;
    let pos = body.iter().rposition(|&b| b == b'\n').unwrap();
    let meta = String::from_utf8_lossy(&body[pos + 1..]).into_owned();
    body.truncate(pos);
    (meta, body)
}

#[test]
fn nginx_accepts_the_config_and_serves_listings_with_the_sponsor_and_files_unchanged() {
    let cfg = node("ci");
    assert_eq!(cfg.node.sponsor.name, HOSTILE);
    let t = tree(&cfg);
    let conf = nginx_main_conf(&t);
    run(Command::new("nginx").arg("-t").arg("-c").arg(&conf));

    // A mirror tree with the files that must never be altered.
    let epel = PathBuf::from(&t.paths.data_root).join("epel/9/Everything/x86_64");
    std::fs::create_dir_all(epel.join("repodata")).unwrap();
    let repomd = b"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<repomd xmlns=\"http://linux.duke.edu/metadata/repo\"><revision>1</revision></repomd>\n";
    std::fs::write(epel.join("repodata/repomd.xml"), repomd).unwrap();
    let inrelease = b"-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA512\n\nOrigin: test\n";
    std::fs::write(epel.join("InRelease"), inrelease).unwrap();
    let iso: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(epel.join("boot.iso"), &iso).unwrap();

    let port = t.paths.http_port;
    let _nginx = Daemon(
        Command::new("nginx").arg("-c").arg(&conf).args(["-g", "daemon off;"]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap(),
    );
    wait_port(port);
    let base = format!("http://127.0.0.1:{port}");

    let (meta, body) = curl(&format!("{base}/epel/9/Everything/x86_64/"));
    let html = String::from_utf8_lossy(&body);
    assert!(meta.starts_with("200 text/html"), "{meta}");
    assert!(html.contains("This is a Micro Mirror node hosted by <a href=\"https://ci.example/?a=1&amp;b=2\">CI \"Labs\" &amp; &lt;Sons&gt; '; rm -rf / #</a>"), "{html}");
    assert!(html.contains("repodata/") && html.contains("boot.iso"), "{html}");
    assert!(html.contains("mailto:mirror@example.net"), "{html}");

    for (path, want) in [("repodata/repomd.xml", &repomd[..]), ("InRelease", &inrelease[..]), ("boot.iso", &iso[..])] {
        let (meta, body) = curl(&format!("{base}/epel/9/Everything/x86_64/{path}"));
        assert!(meta.starts_with("200"), "{path}: {meta}");
        assert!(body == want, "{path} was altered in transit");
    }
    let (meta, body) = curl(&format!("{base}/robots.txt"));
    assert!(meta.starts_with("200") && String::from_utf8_lossy(&body).contains("Disallow: /"));
    let (meta, _) = curl(&format!("{base}/epel"));
    assert!(meta.starts_with("301"), "a directory without its slash redirects: {meta}");
    // mm-sync's public freshness document: served as JSON, listed nowhere.
    std::fs::create_dir_all(PathBuf::from(&t.paths.data_root).join(".mm")).unwrap();
    std::fs::write(PathBuf::from(&t.paths.data_root).join(".mm/status.json"), b"{\"version\": 1}\n").unwrap();
    let (meta, body) = curl(&format!("{base}/.mm/status.json"));
    assert!(meta.starts_with("200 application/json") && body == b"{\"version\": 1}\n", "{meta}");
    let root_listing = String::from_utf8_lossy(&curl(&format!("{base}/")).1).into_owned();
    assert!(
        root_listing.contains("href=\"epel/\"") && !root_listing.contains("href=\".mm"),
        "the status directory is listed: {root_listing}"
    );
    let log = std::fs::read_to_string(t.root.join("log/micromirror-access.log")).unwrap();
    assert!(log.contains("project=epel") && log.contains(" 300000 "), "{log}");
}

#[test]
fn https_serves_the_same_tree_and_answers_acme_challenges() {
    let mut cfg = node("ci");
    cfg.fleet.https = true;
    let t = tree(&cfg);
    let conf = nginx_main_conf(&t);
    run(Command::new("nginx").arg("-t").arg("-c").arg(&conf));
    std::fs::create_dir_all(PathBuf::from(&t.paths.data_root).join("epel")).unwrap();
    std::fs::write(PathBuf::from(&t.paths.data_root).join("epel/a.txt"), b"same bytes\n").unwrap();
    let token = PathBuf::from(&t.paths.acme_dir).join(".well-known/acme-challenge/tok3n");
    std::fs::create_dir_all(token.parent().unwrap()).unwrap();
    std::fs::write(&token, b"tok3n.thumbprint").unwrap();
    let _nginx = Daemon(
        Command::new("nginx").arg("-c").arg(&conf).args(["-g", "daemon off;"]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap(),
    );
    wait_port(t.paths.https_port);
    let https = format!("https://127.0.0.1:{}", t.paths.https_port);
    let out = run(Command::new("curl").args(["-sk", &format!("{https}/epel/a.txt")]));
    assert_eq!(out, "same bytes\n");
    let listing = run(Command::new("curl").args(["-sk", &format!("{https}/epel/")]));
    assert!(listing.contains("hosted by"), "{listing}");
    let challenge =
        run(Command::new("curl").args(["-s", &format!("http://127.0.0.1:{}/.well-known/acme-challenge/tok3n", t.paths.http_port)]));
    assert_eq!(challenge, "tok3n.thumbprint");
    let service = t.services.files.iter().find(|f| f.path.ends_with("mm-certbot.service")).expect("certbot unit");
    let text = String::from_utf8_lossy(&service.contents);
    assert!(text.contains("--email \"mirror@example.net\"") && text.contains("--domain \"ci.mm.example.net\""), "{text}");
    assert!(t.services.enable.contains(&("mm-certbot.timer".into(), "timers.target".into())));
}

#[test]
fn nftables_ruleset_passes_nft_check() {
    for name in ["ci", "v6only", "hurricane"] {
        let t = tree(&node(name));
        let conf = t.root.join("etc/nftables.conf");
        run(Command::new("nft").arg("-c").arg("-f").arg(&conf));
        // Also without /etc/protocols and /etc/services: a lean node may not have them, and
        // nft resolves protocol and service names through them.
        let script =
            format!("mount --bind /dev/null /etc/protocols && mount --bind /dev/null /etc/services && nft -c -f {}", conf.display());
        run(Command::new("unshare").args(["-m", "sh", "-c", &script]));
    }
}

#[test]
fn systemd_units_pass_systemd_analyze_verify() {
    let mut cfg = node("ziply");
    cfg.fleet.https = true;
    let t = tree(&cfg);
    // verify resolves ExecStart= inside --root.
    let bin = t.root.join("usr/bin");
    std::fs::create_dir_all(&bin).unwrap();
    for b in ["mm-sync", "mm-firstboot", "certbot"] {
        std::fs::copy("/bin/true", bin.join(b)).unwrap();
    }
    let units: Vec<PathBuf> = t
        .services
        .files
        .iter()
        .filter(|f| f.path.starts_with("/etc/systemd/system"))
        .map(|f| t.root.join(f.path.strip_prefix("/").unwrap()))
        .collect();
    assert_eq!(units.len(), 8, "3 projects x service + timer, certbot service + timer");
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let unit_dir = t.root.join("etc/systemd/system");
    let mut extra = Vec::new();
    for u in [
        repo.join("overlays/firstboot/srv-mirror.mount"),
        repo.join("overlays/rootfs/etc/systemd/system/mm-firstboot.service"),
        repo.join("overlays/rootfs/etc/systemd/system/mm-firstboot-status.service"),
    ] {
        let dest = unit_dir.join(u.file_name().unwrap());
        std::fs::copy(&u, &dest).unwrap();
        extra.push(dest);
    }
    // The host's own units (targets, nginx, ...) so dependencies resolve inside --root.
    std::fs::create_dir_all(t.root.join("usr/lib/systemd")).unwrap();
    run(Command::new("cp").args(["-a", "/usr/lib/systemd/system"]).arg(t.root.join("usr/lib/systemd/")));
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg("--man=no")
        .arg(format!("--root={}", t.root.display()))
        .args(&units)
        .args(&extra)
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    // Units we do not ship (nginx.service, ...) are referenced by ordering only; those are fine.
    let bad: Vec<&str> = text.lines().filter(|l| !l.contains("not found") && !l.trim().is_empty()).collect();
    assert!(out.status.success() && bad.is_empty(), "systemd-analyze verify:\n{text}");
}

#[test]
fn rsync_daemon_serves_one_read_only_module_per_project() {
    let cfg = node("ziply");
    let t = tree(&cfg);
    for p in &cfg.projects {
        std::fs::create_dir_all(PathBuf::from(&t.paths.data_root).join(&p.directory)).unwrap();
    }
    let file = PathBuf::from(&t.paths.data_root).join("epel/hello.txt");
    std::fs::write(&file, b"hello from the mirror\n").unwrap();
    let port = free_port();
    let _d = Daemon(
        Command::new("rsync")
            .args(["--daemon", "--no-detach", "--port", &port.to_string(), "--config"])
            .arg(t.root.join("etc/rsyncd.conf"))
            .spawn()
            .unwrap(),
    );
    wait_port(port);
    let list = run(Command::new("rsync").arg(format!("rsync://127.0.0.1:{port}/")));
    for p in &cfg.projects {
        assert!(list.lines().any(|l| l.starts_with(&p.rsync_module)), "{}: {list}", p.rsync_module);
    }
    assert!(list.contains("a Micro Mirror node hosted by Ziply Fiber"), "motd: {list}");
    let dest = t.root.join("fetched.txt");
    run(Command::new("rsync").arg(format!("rsync://127.0.0.1:{port}/epel/hello.txt")).arg(&dest));
    assert_eq!(std::fs::read(&dest).unwrap(), b"hello from the mirror\n");
    // Read-only and no checksum runs.
    let push = Command::new("rsync").arg(&dest).arg(format!("rsync://127.0.0.1:{port}/epel/x.txt")).output().unwrap();
    assert!(!push.status.success());
    let sum = Command::new("rsync").args(["-c", &format!("rsync://127.0.0.1:{port}/epel/hello.txt")]).arg(&dest).output().unwrap();
    assert!(!sum.status.success() && String::from_utf8_lossy(&sum.stderr).contains("refuse"), "{}", String::from_utf8_lossy(&sum.stderr));
}

#[test]
fn sshd_accepts_the_drop_in() {
    let t = tree(&node("ci"));
    let key = t.root.join("hostkey");
    run(Command::new("ssh-keygen").args(["-q", "-t", "ed25519", "-N", "", "-f"]).arg(&key));
    std::fs::create_dir_all("/run/sshd").unwrap();
    let conf = t.root.join("sshd_config");
    std::fs::write(&conf, format!("HostKey {}\nInclude {}/etc/ssh/sshd_config.d/*.conf\n", key.display(), t.root.display())).unwrap();
    run(Command::new("/usr/sbin/sshd").arg("-t").arg("-f").arg(&conf));
    let dump = run(Command::new("/usr/sbin/sshd").arg("-T").arg("-f").arg(&conf).args(["-C", "user=mmadmin,host=x,addr=192.0.2.1"]));
    assert!(
        dump.contains("passwordauthentication no") && dump.contains("permitrootlogin no") && dump.contains("allowusers mmadmin"),
        "{dump}"
    );
}
