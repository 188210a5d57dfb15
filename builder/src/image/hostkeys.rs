//! Per-node ssh host keys: kept in the fleet's state directory, delivered with each node's own data, published in `OUT/known_hosts`.
//!
//! The state directory (`--state`, default `$MM_STATE/<fleet>` or
//! `/var/lib/micromirror/state/<fleet>`) holds `<node>/ssh_host_ed25519_key` (0600) and its
//! `.pub`, in directories of mode 0700. Keys are made once with the real `ssh-keygen` (the
//! reference implementation: exactly the format sshd loads, no crypto code of ours) and reused
//! by every later build, so images stay byte-identical. A key that an earlier build published
//! (its `known_hosts` or `manifest.json` in the output directory) but that the state directory
//! no longer holds is an error, never a silent new key: operators trust the old one.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};
use mmconfig::{NodeConfig, HOST_KEY_FILE, HOST_KEY_PUB_FILE};
use sha2::{Digest, Sha256};

use hostkit::cmd::{require_tool, Unusable};

/// The output file listing every node's host key.
pub const KNOWN_HOSTS: &str = "known_hosts";
/// The only key type we make; sshd is configured with this key alone.
pub const KEY_TYPE: &str = "ssh-ed25519";

/// One node's host key pair as it is delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostKey {
    /// The OpenSSH private key file, byte for byte.
    pub private: Vec<u8>,
    /// `ssh-ed25519 AAAA...`: type and base64 blob, no comment.
    pub public: String,
}

impl HostKey {
    /// `SHA256:...` as `ssh-keygen -l` prints it.
    pub fn fingerprint(&self) -> String {
        fingerprint(&self.public).unwrap_or_default()
    }

    /// The `.pub` file delivered beside the private key.
    pub fn pub_file(&self, fqdn: &str) -> String {
        format!("{} {fqdn}\n", self.public)
    }
}

/// `SHA256:<base64, no padding>` of a public key's blob (`type base64 [comment]`).
pub fn fingerprint(public: &str) -> Option<String> {
    let blob = crate::inventory::syntax::base64_decode(public.split_whitespace().nth(1)?)?;
    Some(format!("SHA256:{}", base64_nopad(&Sha256::digest(&blob))))
}

fn base64_nopad(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, &b)| n | (u32::from(b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

/// `$MM_STATE/<fleet>`, else `/var/lib/micromirror/state/<fleet>`.
pub fn default_state_dir(fleet: &str) -> PathBuf {
    let root = std::env::var_os("MM_STATE").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/var/lib/micromirror/state"));
    root.join(fleet)
}

/// One `known_hosts` line per node: `fqdn,ipv4,ipv6 ssh-ed25519 AAAA...` (only the addresses
/// the node has, without their prefix length).
pub fn render_known_hosts(nodes: &[&NodeConfig], keys: &BTreeMap<String, HostKey>) -> String {
    let mut out = String::new();
    for cfg in nodes {
        let Some(key) = keys.get(&cfg.node.name) else { continue };
        let mut hosts = vec![cfg.node.fqdn.clone()];
        let addrs = [cfg.node.ipv4.as_ref().map(|a| &a.address), cfg.node.ipv6.as_ref().map(|a| &a.address)];
        for a in addrs.into_iter().flatten() {
            // Validated by the fleet check; a bare address (no prefix) is kept as written.
            hosts.push(a.parse::<ipnet::IpNet>().map_or_else(|_| a.clone(), |n| n.addr().to_string()));
        }
        out.push_str(&format!("{} {}\n", hosts.join(","), key.public));
    }
    out
}

/// `host -> public key` of a known_hosts text (first host name of each line; comments,
/// markers and hashed names are skipped).
pub fn parse_known_hosts(text: &str) -> BTreeMap<String, String> {
    let mut map = BTreeMap::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with('@')) {
        let mut f = line.split_whitespace();
        let (Some(hosts), Some(kind), Some(blob)) = (f.next(), f.next(), f.next()) else { continue };
        if let Some(first) = hosts.split(',').next().filter(|h| !h.starts_with('|')) {
            map.insert(first.to_string(), format!("{kind} {blob}"));
        }
    }
    map
}

/// What earlier builds into the output directory published: node -> (fingerprint, where).
#[derive(Debug, Default)]
pub struct Published(BTreeMap<String, Vec<(String, String)>>);

impl Published {
    /// Read `out/known_hosts` and the `host_keys` of `out/manifest.json` (when it is this fleet's).
    pub fn read(out: &Path, fleet_name: &str, nodes: &[NodeConfig]) -> Published {
        let mut p = Published::default();
        let kh = out.join(KNOWN_HOSTS);
        if let Ok(text) = fs::read_to_string(&kh) {
            let by_host = parse_known_hosts(&text);
            for cfg in nodes {
                if let Some(fp) = by_host.get(&cfg.node.fqdn).and_then(|k| fingerprint(k)) {
                    p.add(&cfg.node.name, fp, kh.display().to_string());
                }
            }
        }
        let mf = out.join("manifest.json");
        if let Ok(m) = fs::read_to_string(&mf).map(|t| serde_json::from_str::<crate::image::manifest::Manifest>(&t)) {
            if let Ok(m) = m.map_err(|_| ()).and_then(|m| if m.fleet == fleet_name { Ok(m) } else { Err(()) }) {
                for (node, fp) in m.host_keys {
                    p.add(&node, fp, mf.display().to_string());
                }
            }
        }
        p
    }

    pub fn add(&mut self, node: &str, fingerprint: String, source: String) {
        self.0.entry(node.to_string()).or_default().push((fingerprint, source));
    }

    fn get(&self, node: &str) -> &[(String, String)] {
        self.0.get(node).map_or(&[], Vec::as_slice)
    }
}

/// What [`ensure`] did, for the build's log.
#[derive(Debug, Default)]
pub struct Report {
    pub created: Vec<String>,
    pub rotated: Vec<String>,
}

/// Open (create, 0700) the state directory, then load every node's key, making keys for new
/// nodes and for the nodes in `rotate`. Every problem is reported at once, as one
/// [`Unusable`] error (exit 3) that says what to do.
pub fn ensure(
    state: &Path,
    out: &Path,
    nodes: &[NodeConfig],
    published: &Published,
    rotate: &[String],
) -> Result<(BTreeMap<String, HostKey>, Report)> {
    require_tool("ssh-keygen", "openssh-client")?;
    open_state_dir(state, out)?;
    let mut keys = BTreeMap::new();
    let mut report = Report::default();
    let mut problems = Vec::new();
    for cfg in nodes {
        let name = &cfg.node.name;
        match node_key(state, cfg, published, rotate.contains(name)) {
            Ok((key, made)) => {
                match made {
                    Made::Loaded => {}
                    Made::New => report.created.push(format!("{name} {}", key.fingerprint())),
                    Made::Rotated(old) => report.rotated.push(format!("{name} {old} -> {}", key.fingerprint())),
                }
                keys.insert(name.clone(), key);
            }
            Err(p) => problems.push(p),
        }
    }
    if !problems.is_empty() {
        return Err(Unusable(format!("host key state {}:\n  {}", state.display(), problems.join("\n  "))).into());
    }
    Ok((keys, report))
}

enum Made {
    Loaded,
    New,
    Rotated(String),
}

fn mode(meta: &fs::Metadata) -> u32 {
    meta.permissions().mode() & 0o7777
}

fn open_state_dir(state: &Path, out: &Path) -> Result<()> {
    match fs::metadata(state) {
        Ok(meta) if !meta.is_dir() => return Err(Unusable(format!("host key state {} is not a directory", state.display())).into()),
        Ok(meta) if mode(&meta) & 0o077 != 0 => {
            return Err(Unusable(format!(
                "host key state {} has mode {:04o}: it holds private keys, nobody but its owner may enter it (chmod 700 {})",
                state.display(),
                mode(&meta),
                state.display()
            ))
            .into())
        }
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            fs::DirBuilder::new().recursive(true).mode(0o700).create(state).with_context(|| format!("creating {}", state.display()))?;
        }
        Err(e) => return Err(e).with_context(|| format!("reading the host key state {}", state.display())),
    }
    // Outputs get copied around and published; private keys must not live among them.
    let (s, o) = (state.canonicalize()?, out.canonicalize().unwrap_or_else(|_| out.to_path_buf()));
    if s.starts_with(&o) {
        return Err(Unusable(format!(
            "host key state {} is inside the output directory {}: keep it outside (--state DIR)",
            state.display(),
            out.display()
        ))
        .into());
    }
    Ok(())
}

/// Load or make one node's key; `Err` is one line for the operator.
fn node_key(state: &Path, cfg: &NodeConfig, published: &Published, rotate: bool) -> std::result::Result<(HostKey, Made), String> {
    let name = &cfg.node.name;
    let dir = state.join(name);
    let path = dir.join(HOST_KEY_FILE);
    let fix = format!("restore {} from a backup of the state directory, or make a new key deliberately with `--new-host-keys {name}` (then replace the node's line in every known_hosts that trusts it)", path.display());
    let claims = published.get(name);
    let old = match fs::symlink_metadata(&path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(format!("node {name}: cannot read {}: {e}: {fix}", path.display())),
        Ok(meta) if !meta.is_file() => return Err(format!("node {name}: {} is not a regular file: {fix}", path.display())),
        Ok(meta) if !rotate && mode(&meta) & 0o077 != 0 => {
            return Err(format!(
                "node {name}: {} has mode {:04o}: a private key must be readable by its owner only (chmod 600 {})",
                path.display(),
                mode(&meta),
                path.display()
            ))
        }
        Ok(_) if rotate => Some(load(&path).map(|k| k.fingerprint()).unwrap_or_else(|_| "(unreadable)".into())),
        Ok(_) => {
            let key = load(&path).map_err(|e| format!("node {name}: {} is unreadable ({e}): {fix}", path.display()))?;
            if let Some((fp, source)) = claims.iter().find(|(fp, _)| *fp != key.fingerprint()) {
                return Err(format!(
                    "node {name}: {} is {}, but {source} names {fp} for it: is --state the directory the earlier build used? If the node really has a new key, rotate it with `--new-host-keys {name}`",
                    path.display(),
                    key.fingerprint()
                ));
            }
            return Ok((key, Made::Loaded));
        }
    };
    if old.is_none() && !rotate {
        if let Some((fp, source)) = claims.first() {
            return Err(format!("node {name}: {} is missing, but {source} names its key {fp}: {fix}", path.display()));
        }
    }
    let key = generate(&dir, &cfg.node.fqdn).map_err(|e| format!("node {name}: making a host key in {}: {e:#}", dir.display()))?;
    let made = match old {
        Some(fp) => Made::Rotated(fp),
        None if rotate => Made::Rotated("(none)".into()),
        None => Made::New,
    };
    Ok((key, made))
}

/// Read a private key and derive its public half with `ssh-keygen -y` (which also proves the
/// file is a key ssh can use).
pub fn load(path: &Path) -> Result<HostKey> {
    let private = fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let out = hostkit::cmd::run(Command::new("ssh-keygen").args(["-y", "-P", "", "-f"]).arg(path)).context("ssh-keygen cannot load it")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let mut f = stdout.split_whitespace();
    match (f.next(), f.next()) {
        (Some(KEY_TYPE), Some(blob)) => Ok(HostKey { private, public: format!("{KEY_TYPE} {blob}") }),
        (Some(other), _) => anyhow::bail!("a {other} key, not {KEY_TYPE}"),
        _ => anyhow::bail!("ssh-keygen -y printed no public key"),
    }
}

/// `ssh-keygen -t ed25519` into a temporary directory beside the key, then renamed into place
/// (the `.pub` first: a key file present means a complete pair).
fn generate(dir: &Path, fqdn: &str) -> Result<HostKey> {
    fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).with_context(|| format!("creating {}", dir.display()))?;
    let meta = fs::metadata(dir)?;
    anyhow::ensure!(mode(&meta) & 0o077 == 0, "{} has mode {:04o} (chmod 700 {})", dir.display(), mode(&meta), dir.display());
    let tmp = tempfile::Builder::new().prefix(".new-").tempdir_in(dir)?;
    let new = tmp.path().join(HOST_KEY_FILE);
    hostkit::cmd::run(Command::new("ssh-keygen").args(["-q", "-t", "ed25519", "-N", "", "-C", fqdn, "-f"]).arg(&new))?;
    let key = load(&new)?;
    fs::set_permissions(&new, fs::Permissions::from_mode(0o600))?;
    fs::write(tmp.path().join(HOST_KEY_PUB_FILE), key.pub_file(fqdn))?;
    for f in [tmp.path().join(HOST_KEY_PUB_FILE), new.clone()] {
        fs::File::open(&f)?.sync_all()?;
    }
    fs::rename(tmp.path().join(HOST_KEY_PUB_FILE), dir.join(HOST_KEY_PUB_FILE))?;
    fs::rename(&new, dir.join(HOST_KEY_FILE))?;
    fs::File::open(dir)?.sync_all()?;
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, v4: Option<&str>, v6: Option<&str>) -> NodeConfig {
        let all: Vec<NodeConfig> = serde_json::from_str(include_str!("../../../tests/fixtures/example-nodes.json")).unwrap();
        let mut cfg = all.into_iter().find(|n| n.node.name == "ci").unwrap();
        cfg.fleet.name = "f".into();
        cfg.node.name = name.into();
        cfg.node.fqdn = format!("{name}.mm.example.net");
        cfg.node.ipv4 = v4.map(|a| mmconfig::Ipv4Config { address: a.into(), gateway: "192.0.2.1".into() });
        cfg.node.ipv6 = v6.map(|a| mmconfig::Ipv6Config { address: a.into(), gateway: "fe80::1".into() });
        cfg
    }

    fn key(public: &str) -> HostKey {
        HostKey { private: b"private".to_vec(), public: public.into() }
    }

    #[test]
    fn known_hosts_has_only_the_addresses_a_node_has() {
        let a = node("a", Some("192.0.2.10/31"), Some("2001:DB8:10::2/64"));
        let b = node("b", None, Some("2001:db8::5/64"));
        let c = node("c", Some("198.51.100.7/24"), None);
        let keys: BTreeMap<String, HostKey> = [("a", "ssh-ed25519 AAAAa"), ("b", "ssh-ed25519 AAAAb"), ("c", "ssh-ed25519 AAAAc")]
            .iter()
            .map(|(n, k)| (n.to_string(), key(k)))
            .collect();
        let text = render_known_hosts(&[&a, &b, &c], &keys);
        assert_eq!(
            text,
            "a.mm.example.net,192.0.2.10,2001:db8:10::2 ssh-ed25519 AAAAa\n\
             b.mm.example.net,2001:db8::5 ssh-ed25519 AAAAb\n\
             c.mm.example.net,198.51.100.7 ssh-ed25519 AAAAc\n"
        );
        let parsed = parse_known_hosts(&text);
        assert_eq!(parsed["b.mm.example.net"], "ssh-ed25519 AAAAb");
        assert_eq!(parsed.len(), 3);
        assert!(parse_known_hosts("# c\n@revoked x ssh-ed25519 A\n|1|hashed ssh-ed25519 A\n").is_empty());
    }

    #[test]
    fn fingerprint_matches_ssh_keygen() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path().join("node");
        let k = generate(&d, "x.example").unwrap();
        let out = Command::new("ssh-keygen").args(["-l", "-f"]).arg(d.join(HOST_KEY_PUB_FILE)).output().unwrap();
        let printed = String::from_utf8(out.stdout).unwrap();
        assert_eq!(printed.split_whitespace().nth(1).unwrap(), k.fingerprint(), "{printed}");
        assert_eq!(fs::read_to_string(d.join(HOST_KEY_PUB_FILE)).unwrap(), k.pub_file("x.example"));
        assert_eq!(fs::metadata(d.join(HOST_KEY_FILE)).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(fs::read_dir(&d).unwrap().count(), 2, "temporary files left behind");
        assert_eq!(base64_nopad(b"foob"), "Zm9vYg");
    }

    struct Setup {
        _tmp: tempfile::TempDir,
        state: PathBuf,
        out: PathBuf,
        nodes: Vec<NodeConfig>,
    }

    fn setup() -> Setup {
        let tmp = tempfile::tempdir().unwrap();
        let state = tmp.path().join("state/fleet");
        let out = tmp.path().join("out");
        fs::create_dir_all(&out).unwrap();
        let nodes = vec![node("a", Some("192.0.2.10/31"), None), node("b", None, Some("2001:db8::5/64"))];
        Setup { state, out, nodes, _tmp: tmp }
    }

    fn err_text(r: Result<(BTreeMap<String, HostKey>, Report)>) -> String {
        let e = r.expect_err("must fail");
        assert!(hostkit::cmd::is_environment(&e), "{e:#}");
        format!("{e:#}")
    }

    #[test]
    fn missing_state_dir_is_created_private_and_keys_are_reused() {
        let s = setup();
        let (first, report) = ensure(&s.state, &s.out, &s.nodes, &Published::default(), &[]).unwrap();
        assert_eq!(report.created.len(), 2);
        assert_ne!(first["a"], first["b"], "two nodes share a key");
        assert_eq!(fs::metadata(&s.state).unwrap().permissions().mode() & 0o777, 0o700);
        assert_eq!(fs::metadata(s.state.join("a")).unwrap().permissions().mode() & 0o777, 0o700);
        let (again, report) = ensure(&s.state, &s.out, &s.nodes, &Published::default(), &[]).unwrap();
        assert_eq!(first, again);
        assert!(report.created.is_empty());
    }

    #[test]
    fn a_lost_state_dir_is_an_error_when_an_earlier_build_published_keys() {
        let s = setup();
        let (keys, _) = ensure(&s.state, &s.out, &s.nodes, &Published::default(), &[]).unwrap();
        let cfgs: Vec<&NodeConfig> = s.nodes.iter().collect();
        fs::write(s.out.join(KNOWN_HOSTS), render_known_hosts(&cfgs, &keys)).unwrap();
        let published = Published::read(&s.out, "f", &s.nodes);
        fs::remove_dir_all(&s.state).unwrap();
        let text = err_text(ensure(&s.state, &s.out, &s.nodes, &published, &[]));
        assert!(text.contains("node a: ") && text.contains("node b: "), "{text}");
        assert!(text.contains("is missing, but") && text.contains(&keys["a"].fingerprint()), "{text}");
        assert!(text.contains("--new-host-keys a") && text.contains("restore"), "{text}");
        // Nothing was made behind the operator's back.
        assert!(!s.state.join("a").join(HOST_KEY_FILE).exists());
        // Rotating deliberately makes a new key for that node only; the other still fails.
        let text = err_text(ensure(&s.state, &s.out, &s.nodes, &published, &["a".into()]));
        assert!(!text.contains("node a: ") && text.contains("node b: "), "{text}");
        let (new, _) = ensure(&s.state, &s.out, &s.nodes, &published, &["a".into(), "b".into()]).unwrap();
        assert_ne!(new["a"], keys["a"]);
    }

    #[test]
    fn a_partial_state_dir_fails_for_the_lost_node_only_and_new_nodes_get_keys() {
        let s = setup();
        let (keys, _) = ensure(&s.state, &s.out, &s.nodes[..1], &Published::default(), &[]).unwrap();
        let mut published = Published::default();
        published.add("a", keys["a"].fingerprint(), "manifest.json".into());
        // b is new: it gets a key. a is intact: reused.
        let (both, report) = ensure(&s.state, &s.out, &s.nodes, &published, &[]).unwrap();
        assert_eq!(both["a"], keys["a"]);
        assert_eq!(report.created, vec![format!("b {}", both["b"].fingerprint())]);
        fs::remove_file(s.state.join("a").join(HOST_KEY_FILE)).unwrap();
        let text = err_text(ensure(&s.state, &s.out, &s.nodes, &published, &[]));
        assert!(text.contains("node a: ") && !text.contains("node b: "), "{text}");
    }

    #[test]
    fn unreadable_wrong_mode_and_foreign_keys_are_errors() {
        let s = setup();
        let (keys, _) = ensure(&s.state, &s.out, &s.nodes, &Published::default(), &[]).unwrap();
        let a = s.state.join("a").join(HOST_KEY_FILE);
        let good = fs::read(&a).unwrap();
        // Garbage in the key file: never replaced silently.
        fs::write(&a, b"-----BEGIN OPENSSH PRIVATE KEY-----\ngarbage\n").unwrap();
        let text = err_text(ensure(&s.state, &s.out, &s.nodes, &Published::default(), &[]));
        assert!(text.contains("node a: ") && text.contains("is unreadable"), "{text}");
        assert_eq!(fs::read(&a).unwrap(), b"-----BEGIN OPENSSH PRIVATE KEY-----\ngarbage\n");
        // A directory where the key should be.
        fs::remove_file(&a).unwrap();
        fs::create_dir(&a).unwrap();
        assert!(err_text(ensure(&s.state, &s.out, &s.nodes, &Published::default(), &[])).contains("not a regular file"));
        fs::remove_dir(&a).unwrap();
        fs::write(&a, &good).unwrap();
        // Modes: the key readable by others, then the directory.
        fs::set_permissions(&a, fs::Permissions::from_mode(0o644)).unwrap();
        let text = err_text(ensure(&s.state, &s.out, &s.nodes, &Published::default(), &[]));
        assert!(text.contains("mode 0644") && text.contains("chmod 600"), "{text}");
        fs::set_permissions(&a, fs::Permissions::from_mode(0o600)).unwrap();
        fs::set_permissions(&s.state, fs::Permissions::from_mode(0o755)).unwrap();
        let text = err_text(ensure(&s.state, &s.out, &s.nodes, &Published::default(), &[]));
        assert!(text.contains("mode 0755") && text.contains("chmod 700"), "{text}");
        fs::set_permissions(&s.state, fs::Permissions::from_mode(0o700)).unwrap();
        // A state dir whose key is not the published one (another fleet's, an old backup).
        let mut published = Published::default();
        published.add("a", "SHA256:somethingelse".into(), "known_hosts".into());
        let text = err_text(ensure(&s.state, &s.out, &s.nodes, &published, &[]));
        assert!(text.contains(&keys["a"].fingerprint()) && text.contains("SHA256:somethingelse"), "{text}");
        // Inside the output directory.
        let text = err_text(ensure(&s.out.join("state"), &s.out, &s.nodes, &Published::default(), &[]));
        assert!(text.contains("inside the output directory"), "{text}");
    }
}
