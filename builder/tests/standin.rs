//! Stand-in upstreams for boot-test: every example node's trees pass mm-sync's own index check,
//! and inside a private network namespace the real dnsmasq and rsync daemons answer for the
//! node's upstream names (needs root, rsync, dnsmasq and dig from scripts/install-deps).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hostkit::netns::Netns;
use hostkit::testenv::{need, Need};
use mm_sync::repocheck::{check_tree, Excludes};
use mmbuild::boottest::standin::{self, StandIn};
use mmconfig::{CheckKind, NodeConfig};

/// 2025-01-01T00:00:00Z: fixed, so two writes can be compared byte for byte.
const NOW: u64 = 1_735_689_600;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn nodes() -> Vec<NodeConfig> {
    mmbuild::inventory::fleet::load(&repo().join("examples/fleet.toml"), None).map_err(|d| format!("{d:?}")).unwrap().nodes
}

fn node(name: &str) -> NodeConfig {
    nodes().into_iter().find(|n| n.node.name == name).unwrap()
}

fn write(n: &NodeConfig, dir: &Path) -> (StandIn, standin::Written) {
    let plan = standin::plan(n).unwrap();
    let w = standin::write_with(n, &plan, dir, &repo(), NOW).unwrap();
    (plan, w)
}

#[test]
fn every_example_nodes_trees_pass_mm_syncs_check() {
    let mut kinds = BTreeMap::new();
    for n in nodes() {
        let dir = tempfile::tempdir().unwrap();
        let (plan, w) = write(&n, dir.path());
        assert!(w.dnsmasq_conf.is_file());
        assert_eq!(w.rsyncd_confs.len(), plan.hosts.iter().map(|h| h.addrs.len()).sum::<usize>(), "{}", n.node.name);
        for p in &n.projects {
            let tree = standin::project_tree(dir.path(), &plan, p).unwrap();
            let ex = Excludes(p.sync.excludes.clone());
            let r = check_tree(p.sync.check, &tree, &ex, true).unwrap();
            assert!(r.ok(), "{} {}: {:?}", n.node.name, p.name, r.errors);
            match p.sync.check {
                // Release + Packages, and the pool file hashed.
                CheckKind::Apt => assert!(r.indexes >= 2 && r.files_checked >= 3, "{} {}: {r:?}", n.node.name, p.name),
                // repomd + primary, and the package.
                CheckKind::Rpm => assert!(r.indexes >= 2 && r.files_checked >= 2, "{} {}: {r:?}", n.node.name, p.name),
                CheckKind::None => assert!(tree.join("README").is_file()),
            }
            *kinds.entry(format!("{:?}", p.sync.check)).or_insert(0) += 1;
            // Nothing the node would exclude is needed, nor served.
            for rel in hostkit::testenv::tree_files(&tree).keys() {
                assert!(!ex.matches(rel), "{} {}: {rel} is excluded by the profile", n.node.name, p.name);
            }
        }
        // Same input, same bytes.
        let again = tempfile::tempdir().unwrap();
        write(&n, again.path());
        let (a, b) = (hostkit::testenv::tree_files(dir.path()), hostkit::testenv::tree_files(again.path()));
        assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
        for (k, v) in &a {
            if !k.ends_with(".conf") {
                assert_eq!(v, &b[k], "{}: {k} differs between two writes", n.node.name);
            }
        }
    }
    assert_eq!(kinds.len(), 3, "the example fleet covers apt, rpm and none: {kinds:?}");
}

#[test]
fn check_notices_a_broken_tree() {
    // The check above is not vacuous: a package that does not match its index fails it.
    for (node, project, rel) in [
        ("hurricane", "debian", "pool/main/m/mm-standin/mm-standin_1.0_all.deb"),
        ("ziply", "epel", "9/Everything/x86_64/Packages/m/mm-standin-1.0-1.noarch.rpm"),
    ] {
        let n = self::node(node);
        let dir = tempfile::tempdir().unwrap();
        let (plan, _) = write(&n, dir.path());
        let p = n.project(project).unwrap();
        let tree = standin::project_tree(dir.path(), &plan, p).unwrap();
        let path = tree.join(rel);
        let mut b = std::fs::read(&path).unwrap();
        b[0] ^= 1;
        std::fs::write(&path, b).unwrap();
        let r = check_tree(p.sync.check, &tree, &Excludes(p.sync.excludes.clone()), true).unwrap();
        assert!(!r.ok() && r.errors[0].contains("SHA256"), "{node} {project}: {r:?}");
    }
}

#[test]
fn plan_groups_hosts_and_modules_and_keeps_sub_paths() {
    let sonic = node("sonic");
    let plan = standin::plan(&sonic).unwrap();
    let kernel = plan.hosts.iter().find(|h| h.name == "mirrors.kernel.org").unwrap();
    assert_eq!(kernel.port, 873);
    let mods: Vec<_> = kernel.modules.iter().map(|m| (m.name.as_str(), m.projects.clone())).collect();
    assert_eq!(mods, vec![("fedora-enchilada", vec!["fedora".to_string()]), ("fedora-epel", vec!["epel".to_string()])]);
    // Both families: sonic has IPv4 and IPv6.
    assert!(kernel.addrs.iter().any(|a| a.is_ipv4()) && kernel.addrs.iter().any(|a| a.is_ipv6()));
    let dir = tempfile::tempdir().unwrap();
    standin::write_with(&sonic, &plan, dir.path(), &repo(), NOW).unwrap();
    let fedora = standin::project_tree(dir.path(), &plan, sonic.project("fedora").unwrap()).unwrap();
    assert!(fedora.ends_with("modules/fedora-enchilada/linux"), "{}", fedora.display());
    assert!(fedora.join("repodata/repomd.xml").is_file());

    // The IPv6-only node: IPv6 stand-ins only, resolvers IPv6.
    let v6 = standin::plan(&node("v6only")).unwrap();
    assert!(v6.hosts.iter().all(|h| h.addrs.iter().all(|a| a.is_ipv6())), "{v6:?}");
    assert!(v6.resolvers.iter().all(|a| a.is_ipv6()));

    // A literal IP with a port (the CI node): that IP, no DNS record.
    let ci = node("ci");
    let plan = standin::plan(&ci).unwrap();
    assert_eq!(plan.hosts[0].addrs, vec!["10.0.2.2".parse::<IpAddr>().unwrap()]);
    assert_eq!(plan.hosts[0].port, 10873);
    let dir = tempfile::tempdir().unwrap();
    let w = standin::write_with(&ci, &plan, dir.path(), &repo(), NOW).unwrap();
    let conf = std::fs::read_to_string(&w.dnsmasq_conf).unwrap();
    assert!(!conf.contains("host-record"), "{conf}");
    assert!(conf.contains("listen-address=10.0.2.3"), "{conf}");
    let rsyncd = std::fs::read_to_string(&w.rsyncd_confs[0]).unwrap();
    assert!(rsyncd.contains("address = 10.0.2.2\nport = 10873\n") && rsyncd.contains("[epel]"), "{rsyncd}");
}

#[test]
fn hostile_module_names_and_paths_are_refused_not_escaped() {
    for (url, why) in [
        ("rsync://mirrors.kernel.org/epel]\n[etc/", "module"),
        ("rsync://mirrors.kernel.org/epel/../../etc/", "path segment"),
        ("rsync://evil\nlisten-address=0.0.0.0/epel/", "DNS name"),
    ] {
        let mut n = node("ci");
        n.projects[0].sync.upstream = url.into();
        let e = format!("{:#}", standin::plan(&n).unwrap_err());
        assert!(e.contains("node ci, project epel") && e.contains(why), "{url:?}: {e}");
    }
    // A plan built by hand is checked again before anything is rendered.
    let n = node("ci");
    let mut plan = standin::plan(&n).unwrap();
    plan.hosts[0].modules[0].name = "epel]\nuid = root\n[x".into();
    let dir = tempfile::tempdir().unwrap();
    let e = format!("{:#}", standin::write_with(&n, &plan, dir.path(), &repo(), NOW).unwrap_err());
    assert!(e.contains("module"), "{e}");
    // A directory that would break the config files' lines.
    let bad = dir.path().join("a\nport = 1");
    let plan = standin::plan(&n).unwrap();
    assert!(standin::write_with(&n, &plan, &bad, &repo(), NOW).is_err());
}

#[test]
fn dnsmasq_accepts_the_rendered_config() {
    if need(&[Need::Tool("dnsmasq")]).is_err() {
        return;
    }
    for n in nodes() {
        let dir = tempfile::tempdir().unwrap();
        let (_, w) = write(&n, dir.path());
        let out = hostkit::cmd::run(Command::new("dnsmasq").arg("--test").arg(format!("--conf-file={}", w.dnsmasq_conf.display())));
        assert!(out.is_ok(), "{}: {:#}", n.node.name, out.unwrap_err());
    }
}

/// Daemons started for one test, killed when it ends.
struct Daemons(Vec<Child>);

impl Drop for Daemons {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn dig(ns: &Netns, server: IpAddr, name: &str, rtype: &str) -> String {
    let out = hostkit::cmd::run(ns.cmd("dig").args([format!("@{server}"), name.into(), rtype.into(), "+time=1".into(), "+tries=5".into()]))
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Answers of `dig` (the ANSWER section's last column).
fn answers(text: &str) -> Vec<String> {
    text.lines()
        .skip_while(|l| !l.starts_with(";; ANSWER SECTION"))
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .filter_map(|l| l.split_whitespace().last().map(String::from))
        .collect()
}

/// Boots the node's stand-ins in a namespace and fetches `fetch` (project names) by URL, the
/// names resolved by the stand-in dnsmasq (the client sees only it in its resolv.conf).
fn serve_and_fetch(name: &str, fetch: &[&str]) {
    let n = node(name);
    let dir = tempfile::tempdir().unwrap();
    // rsyncd drops to nobody when run as root: it must reach the trees.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let (plan, w) = write(&n, &dir.path().join("standin"));
    let ns = Netns::new();
    for a in plan.hosts.iter().flat_map(|h| h.addrs.iter()).chain(&plan.resolvers) {
        let (fam, len, extra) = if a.is_ipv4() { ("-4", 32, None) } else { ("-6", 128, Some("nodad")) };
        let mut c = ns.cmd("ip");
        c.args([fam, "addr", "add", &format!("{a}/{len}"), "dev", "lo"]).args(extra);
        hostkit::cmd::run(&mut c).unwrap();
    }
    let mut daemons = Daemons(Vec::new());
    let spawn = |c: &mut Command| c.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::inherit()).spawn().unwrap();
    for conf in &w.rsyncd_confs {
        daemons.0.push(spawn(ns.cmd("rsync").args(["--daemon", "--no-detach"]).arg(format!("--config={}", conf.display()))));
    }
    daemons.0.push(spawn(ns.cmd("dnsmasq").arg("--keep-in-foreground").arg(format!("--conf-file={}", w.dnsmasq_conf.display()))));
    ns.wait_port(53);

    // Every planned name answers with its stand-in addresses, at every resolver, both families.
    for h in plan.hosts.iter().filter(|h| !h.is_literal()) {
        for r in &plan.resolvers {
            for (rtype, v4) in [("A", true), ("AAAA", false)] {
                let mut got = answers(&dig(&ns, *r, &h.name, rtype));
                got.sort();
                let mut want: Vec<String> = h.addrs.iter().filter(|a| a.is_ipv4() == v4).map(|a| a.to_string()).collect();
                want.sort();
                assert_eq!(got, want, "{name}: {rtype} {} at {r}", h.name);
            }
        }
    }
    // Anything else does not exist, and nothing is forwarded.
    for other in ["example.org", "mirrors.kernel.org.evil.example", "localhost"] {
        let out = dig(&ns, plan.resolvers[0], other, "A");
        assert!(out.contains("status: NXDOMAIN"), "{name}: {other}: {out}");
    }

    // The client resolves through the stand-in resolver only (its own mount namespace).
    let resolv = dir.path().join("resolv.conf");
    let text: String = plan.resolvers.iter().map(|r| format!("nameserver {r}\n")).collect();
    std::fs::write(&resolv, text).unwrap();
    for project in fetch {
        let p = n.project(project).unwrap();
        let dest = dir.path().join("fetched").join(project);
        std::fs::create_dir_all(&dest).unwrap();
        let script = format!(
            "mount --bind {} /etc/resolv.conf && exec rsync -a --timeout=10 {} {}/",
            resolv.display(),
            p.sync.upstream,
            dest.display()
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let out = ns.cmd("unshare").args(["--mount", "sh", "-c", &script]).output().unwrap();
            if out.status.success() {
                break;
            }
            // rsyncd may still be starting: its port opens a moment after dnsmasq's.
            assert!(Instant::now() < deadline, "{name}: fetching {}: {}", p.sync.upstream, String::from_utf8_lossy(&out.stderr));
            std::thread::sleep(Duration::from_millis(100));
        }
        let r = check_tree(p.sync.check, &dest, &Excludes(p.sync.excludes.clone()), true).unwrap();
        assert!(r.ok() && r.indexes >= 2, "{name} {project}: fetched tree: {r:?}");
    }
    drop(daemons);
}

#[test]
fn stand_ins_answer_inside_a_namespace() {
    if need(&[Need::Root, Need::Tool("rsync"), Need::Tool("dnsmasq"), Need::Tool("dig"), Need::Tool("unshare")]).is_err() {
        return;
    }
    // apt (Debian) and rpm (AlmaLinux) on a dual-stack node; then a module's sub-path (Fedora).
    serve_and_fetch("hurricane", &["debian", "almalinux"]);
    serve_and_fetch("sonic", &["fedora"]);
}
