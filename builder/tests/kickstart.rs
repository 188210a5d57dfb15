//! Kickstarts and OEMDRV sticks: ksvalidator on every example node, what the files must say,
//! hostile fleet text kept as data, the %pre disk/NIC choice run on fake /sys + /dev trees, and
//! the OEMDRV image checked by dosfstools, blkid and mtools.

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use mmbuild::{inventory::fleet, ship::kickstart};
use mmconfig::NodeConfig;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// ksvalidator is part of the test toolchain (scripts/install-deps): missing means failing.
fn require(tool: &str, how: &str) {
    let found = Command::new("sh").args(["-c", &format!("command -v {tool}")]).output().unwrap().status.success();
    assert!(found, "`{tool}` is missing: {how} (or run scripts/install-deps)");
}

fn load(fleet_path: &Path) -> fleet::Fleet {
    fleet::load(fleet_path, None).unwrap_or_else(|d| panic!("{} does not validate:\n{d}", fleet_path.display()))
}

fn render(f: &fleet::Fleet, node: &str) -> (NodeConfig, String) {
    let cfg = f.node(node).unwrap_or_else(|| panic!("no node {node}")).clone();
    let ks = kickstart::render_kickstart(&cfg, &kickstart::templates_dir(&f.data_dir)).unwrap();
    (cfg, ks)
}

fn ksvalidate(text: &str, what: &str) {
    require("ksvalidator", "pip install pykickstart");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ks.cfg");
    std::fs::write(&path, text).unwrap();
    let out = Command::new("ksvalidator").args(["-v", "RHEL9"]).arg(&path).output().unwrap();
    assert!(
        out.status.success(),
        "ksvalidator -v RHEL9 rejects {what}:\n{}{}\n--- file ---\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The bodies of every `%pre`/`%post` section, with their header lines.
fn scripts(ks: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut cur: Option<(String, String)> = None;
    for line in ks.lines() {
        if let Some((head, body)) = cur.as_mut() {
            if line.trim() == "%end" {
                out.push((head.clone(), body.clone()));
                cur = None;
            } else {
                body.push_str(line);
                body.push('\n');
            }
        } else if line.starts_with("%pre") || line.starts_with("%post") {
            cur = Some((line.to_string(), String::new()));
        }
    }
    assert!(cur.is_none(), "unterminated section");
    out
}

fn pre_script(ks: &str) -> String {
    scripts(ks).into_iter().find(|(h, _)| h.starts_with("%pre")).expect("a %pre section").1
}

fn bash_n(script: &str, what: &str) {
    let out = Command::new("bash").args(["-n", "-c", script]).output().unwrap();
    assert!(out.status.success(), "{what} does not parse: {}", String::from_utf8_lossy(&out.stderr));
}

/// Kernel disk names (sda, vdb2, nvme0n1p1) anywhere outside comments.
fn kernel_disk_names(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    for line in text.lines().filter(|l| !l.trim_start().starts_with('#')) {
        for tok in line.split(|c: char| !c.is_ascii_alphanumeric()) {
            let b = tok.as_bytes();
            let sd = (tok.starts_with("sd") || tok.starts_with("vd") || tok.starts_with("hd"))
                && b.len() >= 3
                && b[2..].iter().take_while(|c| c.is_ascii_lowercase()).count() >= 1
                && tok[2..].trim_start_matches(|c: char| c.is_ascii_lowercase()).chars().all(|c| c.is_ascii_digit())
                && tok.len() <= 6;
            let nvme =
                tok.starts_with("nvme") && tok[4..].contains('n') && tok[4..].chars().all(|c| c.is_ascii_digit() || c == 'n' || c == 'p');
            if sd || (nvme && tok.len() > 4) {
                found.push(tok.to_string());
            }
        }
    }
    found
}

#[test]
fn every_example_node_validates_and_says_what_matters() {
    let f = load(&repo().join("examples/fleet.toml"));
    let names: Vec<&str> = f.nodes.iter().map(|n| n.node.name.as_str()).collect();
    assert_eq!(names, ["ziply", "sonic", "hurricane", "v6only", "ci"]);
    for name in names {
        let (cfg, ks) = render(&f, name);
        ksvalidate(&ks, &format!("node {name}"));
        let has = |s: &str| assert!(ks.contains(s), "node {name}: missing {s:?}");
        let lacks = |s: &str| assert!(!ks.contains(s), "node {name}: unexpected {s:?}");
        for s in [
            "\ntext\n",
            "\ntimezone Etc/UTC --utc\n",
            "\nrootpw --lock\n",
            "\nuser --name=mmadmin --groups=wheel --lock\n",
            "\nsshkey --username=mmadmin \"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOozE4famK1j6NfXCWFhGYm39GKIAWKfHlpUtwM5i4R9 ops@example.net\"\n",
            "\n%include /tmp/mm-network.ks\n",
            "\n%include /tmp/mm-disk.ks\n",
            "\n%pre --interpreter=/bin/bash --erroronfail",
            "PasswordAuthentication no",
            "noc@example.net'",
            "mount -t vfat -o ro /dev/disk/by-label/OEMDRV",
            "sha256sum -c SHA256SUMS",
            "install -D -m 0755 \"$stick/mm-firstboot\" \"$sysroot/usr/bin/mm-firstboot\"",
            "install -D -m 0755 \"$stick/mm-sync\" \"$sysroot/usr/bin/mm-sync\"",
            "install -D -m 0644 \"$stick/node.toml\" \"$sysroot/etc/micromirror/node.toml\"",
            "\"$sysroot/etc/systemd/system/mm-firstboot.service\"",
            "systemctl enable mm-firstboot.service mm-firstboot-status.service",
            "\nnginx\n",
            "\nrsync-daemon\n",
            "\nxfsprogs\n",
            "repo --name=epel",
            "DATA_LABEL='MMDATA'",
            "DATA_MOUNT='/srv/mirror'",
            "disk/by-id",
            "/sys/block",
        ] {
            has(s);
        }
        has(&format!("\nnetwork --hostname={}\n", cfg.node.fqdn));
        let nameservers = format!("--nameserver={} --activate", cfg.node.dns.join(","));
        has(&nameservers);
        // The hardware profile's disk rule is what %pre matches.
        let rule = cfg.hardware.storage.boot_disk.describe();
        has(&format!("BOOT_RULE_TEXT='{rule}'"));
        assert!(kernel_disk_names(&ks).is_empty(), "node {name}: kernel disk names {:?}", kernel_disk_names(&ks));
        for (head, body) in scripts(&ks) {
            bash_n(&body, &format!("node {name}: {head}"));
        }
        match name {
            "ziply" => {
                has("--ip=192.0.2.10 --netmask=255.255.255.254 --gateway=192.0.2.11 --ipv6=2001:db8:10::2/64 --ipv6gateway=2001:db8:10::1");
                has("DATA_ON='boot-disk'");
                has("BOOT_RULE=('sata' '' '' '' '100' '')");
                lacks("--noipv4");
                lacks("--noipv6");
            }
            "sonic" => {
                has("NIC_MAC='24:8a:07:aa:bb:01'");
                has("--ipv6=2001:db8:20::2/127 --ipv6gateway=2001:db8:20::3");
                has("BOOT_RULE=('nvme' '' '' '' '1000' '')");
            }
            "hurricane" => {
                has("BOND='bond0'");
                has("\nmode=802.3ad,xmit_hash_policy=layer3+4,lacp_rate=fast,miimon=100\n");
                has("--bondslaves=%s --bondopts=%s");
                has("--ip=203.0.113.4 --netmask=255.255.255.248 --gateway=203.0.113.1 --ipv6=2001:db8:30::4/64 --ipv6gateway=fe80::1");
                has("DATA_ON='disk'");
                has("DATA_RULE=('sata' '' '' '' '4000' '')");
                has("WIPE_SERIALS=('ZL2PQ7XK' )");
                has("--noformat");
            }
            "v6only" => {
                has("--bootproto=static --noipv4 --ipv6=2001:db8:40::10/64 --ipv6gateway=2001:db8:40::1 --nameserver=2620:fe::fe,2620:fe::9");
                lacks("--ip=");
            }
            "ci" => {
                has("--ip=10.0.2.15 --netmask=255.255.255.0 --gateway=10.0.2.2 --ipv6=fec0::15/64");
                has("BOOT_RULE=('virtio' '' '' '' '' '')");
            }
            _ => unreachable!(),
        }
        address_families(&cfg, &ks);
    }
}

/// A missing address family is switched off (`--noipv4`/`--noipv6`), a present one configured.
fn address_families(cfg: &NodeConfig, ks: &str) {
    let name = &cfg.node.name;
    let (v4, v6) = (cfg.node.ipv4.is_some(), cfg.node.ipv6.is_some());
    assert_eq!(ks.contains("--noipv4"), !v4, "node {name}: --noipv4 iff no ipv4");
    assert_eq!(ks.contains(" --ip="), v4, "node {name}: --ip= iff ipv4");
    assert_eq!(ks.contains("--noipv6"), !v6, "node {name}: --noipv6 iff no ipv6");
    assert_eq!(ks.contains(" --ipv6="), v6, "node {name}: --ipv6= iff ipv6");
}

/// examples/fleet.toml with ziply made IPv4-only.
fn v4_only_fleet(dir: &Path) -> fleet::Fleet {
    let text = std::fs::read_to_string(repo().join("examples/fleet.toml")).unwrap();
    let v4 = text.replace("ipv6 = { address = \"2001:db8:10::2/64\", gateway = \"2001:db8:10::1\" }\n", "dns = [\"9.9.9.9\"]\n");
    assert_ne!(v4, text, "ziply's ipv6 line moved: update this test");
    let path = dir.join("fleet.toml");
    std::fs::write(&path, v4).unwrap();
    load(&path)
}

#[test]
fn a_v4_only_node_says_noipv6() {
    let dir = tempfile::tempdir().unwrap();
    let (cfg, ks) = render(&v4_only_fleet(dir.path()), "ziply");
    assert!(cfg.node.ipv4.is_some() && cfg.node.ipv6.is_none());
    ksvalidate(&ks, "v4-only ziply");
    assert!(ks.contains("--gateway=192.0.2.11 --noipv6 --nameserver="), "{ks}");
    address_families(&cfg, &ks);
}

/// Hostile text; what would run is a harmless canary: `touch "$T/pwned"` with `T` a temporary
/// directory the test then checks (never anything that could hurt the machine running the tests).
const HOSTILE: &[&str] = &[
    "\"; touch \"$T/pwned\" #",
    "O'Brien & <Sons>",
    "$(touch \"$T/pwned\")",
    "`touch \"$T/pwned\"`",
    "x' ; touch \"$T/pwned\" ; echo '",
    "\\\"%end",
];
/// URLs may not hold spaces or quotes (the validator refuses them): `${IFS}` stands in.
const HOSTILE_URL: &str = "https://evil.example/?q=$(touch${IFS}$T/pwned)&r=`touch${IFS}$T/pwned`;s=${IFS}";

/// A directory for the canary; fails the test if anything touched it.
struct Canary(tempfile::TempDir);

impl Canary {
    fn new() -> Canary {
        Canary(tempfile::tempdir().unwrap())
    }
    fn env(&self) -> (&'static str, &Path) {
        ("T", self.0.path())
    }
    fn assert_untouched(&self, what: &str) {
        assert!(!self.0.path().join("pwned").exists(), "{what}: hostile text was executed");
    }
}

/// Writes examples/fleet.toml with every node's sponsor name replaced by hostile text, its
/// sponsor URL by [`HOSTILE_URL`], and its wipe_disk_serials by the hostile text and "S1": the
/// serials are the free text that reaches the %pre script (the sponsor only reaches a comment).
fn hostile_fleet(dir: &Path, text: &str) -> PathBuf {
    let mut doc: toml::Table = std::fs::read_to_string(repo().join("examples/fleet.toml")).unwrap().parse().unwrap();
    for node in doc["node"].as_array_mut().unwrap() {
        let sponsor = node["sponsor"].as_table_mut().unwrap();
        sponsor.insert("name".into(), toml::Value::String(text.into()));
        sponsor.insert("url".into(), toml::Value::String(HOSTILE_URL.into()));
        let serials = [text, "S1"].map(|s| toml::Value::String(s.into()));
        node.as_table_mut().unwrap().insert("wipe_disk_serials".into(), toml::Value::Array(serials.into()));
    }
    let path = dir.join("fleet.toml");
    std::fs::write(&path, toml::to_string(&doc).unwrap()).unwrap();
    path
}

#[test]
fn hostile_sponsor_text_stays_data() {
    for (i, text) in HOSTILE.iter().enumerate() {
        let dir = tempfile::tempdir().unwrap();
        let f = load(&hostile_fleet(dir.path(), text));
        for cfg in &f.nodes {
            let (_, ks) = render(&f, &cfg.node.name);
            ksvalidate(&ks, &format!("hostile sponsor #{i} on {}", cfg.node.name));
            // The sponsor appears once, on its comment line; besides that only the %pre's list
            // of serials holds the text (quoted, or the line would not give it back below).
            let lines: Vec<&str> = ks.lines().filter(|l| l.contains(text) && !l.starts_with("WIPE_SERIALS=(")).collect();
            assert_eq!(lines, [format!("# Hosted by: {text}")], "hostile text #{i} escaped its comment");
            assert!(!ks.contains("evil.example"), "the sponsor URL has no business in a kickstart");
            for (head, body) in scripts(&ks) {
                bash_n(&body, &format!("{head} with hostile sponsor #{i}"));
            }
        }
        // The %pre really runs (as root, on a fake tree) over a boot disk holding data, so it
        // walks the serials to find S1: the canary stays untouched and bash reads the list back
        // as exactly the two serials.
        let canary = Canary::new();
        let mut t = Tree::new();
        t.disk("sda", SATA, 2000, "BIG SSD", "S1", Some("ata-BIG_SSD_S1"), Some("pci-0000:00:1f.2-ata-1"), Holds::Ext4);
        t.nic("enp1s0", "r8169", "00:11:22:33:44:55", true);
        let (_, ks) = render(&f, "ziply");
        let out = t.run_pre_env(&ks, &[canary.env()]);
        let log = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "{log}");
        assert!(log.contains("erased, serial S1 is in wipe_disk_serials"), "{log}");
        canary.assert_untouched(&format!("%pre with hostile serial #{i}"));
        let list = ks.lines().find(|l| l.starts_with("WIPE_SERIALS=(")).unwrap();
        let read = Command::new("bash")
            .args(["-c", &format!("{list}\nprintf '%s\\0' \"${{WIPE_SERIALS[@]}}\"")])
            .env(canary.env().0, canary.env().1)
            .output()
            .unwrap();
        assert!(read.status.success(), "{list}: {}", String::from_utf8_lossy(&read.stderr));
        assert_eq!(String::from_utf8_lossy(&read.stdout), format!("{text}\0S1\0"), "hostile serial #{i}: {list}");
        canary.assert_untouched(&format!("WIPE_SERIALS with hostile serial #{i}"));
    }
    // Line breaks never reach a template: the fleet validator refuses them.
    let dir = tempfile::tempdir().unwrap();
    let path = hostile_fleet(dir.path(), "line\n%end\nreboot");
    let err = fleet::load(&path, None).map(|_| ()).unwrap_err().to_string();
    assert!(err.contains("control characters"), "{err}");
}

#[test]
fn hostile_ssh_key_comment_is_one_quoted_word() {
    let dir = tempfile::tempdir().unwrap();
    let key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOozE4famK1j6NfXCWFhGYm39GKIAWKfHlpUtwM5i4R9 o'brien \"$(touch \"$T/pwned\")\" `touch \"$T/pwned\"` \\";
    let text = std::fs::read_to_string(repo().join("examples/fleet.toml")).unwrap();
    let mut doc: toml::Table = text.parse().unwrap();
    doc["fleet"].as_table_mut().unwrap().insert("admin_ssh_keys".into(), toml::Value::Array(vec![toml::Value::String(key.into())]));
    let path = dir.path().join("fleet.toml");
    std::fs::write(&path, toml::to_string(&doc).unwrap()).unwrap();
    // A key comment is free text to OpenSSH: the validator accepts it, so it must stay data.
    let f = fleet::load(&path, None).unwrap_or_else(|d| panic!("the fleet validator refuses a valid key with an odd comment:\n{d}"));
    let (_, ks) = render(&f, "ziply");
    ksvalidate(&ks, "hostile ssh key comment");
    // pykickstart sees exactly the key as one argument.
    let line = ks.lines().find(|l| l.starts_with("sshkey ")).unwrap();
    let out = Command::new("python3").args(["-c", "import shlex,sys; print(shlex.split(sys.argv[1])[2], end='')", line]).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), key);
    // The %post writes it verbatim into authorized_keys.
    let post = scripts(&ks).into_iter().find(|(h, _)| h.starts_with("%post --interpreter")).unwrap().1;
    let printf = post.lines().find(|l| l.starts_with("printf '%s\\n' ")).unwrap();
    let printf = printf.split(" >").next().unwrap();
    let canary = Canary::new();
    let (k, v) = canary.env();
    let out = Command::new("bash").args(["-c", printf]).env(k, v).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), format!("{key}\n"));
    canary.assert_untouched("the %post's authorized_keys line");
}

// ---- %pre on fake /sys and /dev trees ----

/// What a fake disk holds.
#[derive(Clone, Copy)]
enum Holds {
    Nothing,
    Ext4,
    Oemdrv,
    Junk,
    /// One partition with an XFS labelled MMDATA.
    MmdataPartition,
}

struct Tree {
    _dir: tempfile::TempDir,
    root: PathBuf,
    out: PathBuf,
    next_minor: u32,
}

const SATA: &str = "pci0000:00/0000:00:1f.2/ata1/host0/target0:0:0/0:0:0:0";
const NVME: &str = "pci0000:00/0000:00:01.1/0000:01:00.0/nvme/nvme0";
const USB: &str = "pci0000:00/0000:00:14.0/usb1/1-1/1-1:1.0/host6/target6:0:0/6:0:0:0";

fn sh(cmd: &str) {
    let out = Command::new("sh").args(["-c", cmd]).output().unwrap();
    assert!(out.status.success(), "{cmd}: {}", String::from_utf8_lossy(&out.stderr));
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

impl Tree {
    fn new() -> Tree {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        let out = dir.path().join("out");
        for d in ["sys/block", "sys/class/net", "dev/disk/by-id", "dev/disk/by-path", "run/udev/data"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        std::fs::create_dir_all(&out).unwrap();
        Tree { _dir: dir, root, out, next_minor: 0 }
    }

    /// A disk `k` under sysfs `devpath` (its bus comes from the path, as on a real machine).
    #[allow(clippy::too_many_arguments)]
    fn disk(
        &mut self,
        k: &str,
        devpath: &str,
        gb: u64,
        model: &str,
        serial: &str,
        by_id: Option<&str>,
        by_path: Option<&str>,
        holds: Holds,
    ) {
        let dev_dir = self.root.join("sys/devices").join(devpath).join("block").join(k);
        let majmin = format!("8:{}", self.next_minor);
        self.next_minor += 16;
        write(&dev_dir.join("size"), &format!("{}\n", gb * 1_000_000_000 / 512));
        write(&dev_dir.join("dev"), &format!("{majmin}\n"));
        write(&dev_dir.join("removable"), "0\n");
        write(&dev_dir.join("device/model"), &format!("{model}   \n"));
        symlink(Path::new("../devices").join(devpath).join("block").join(k), self.root.join("sys/block").join(k)).unwrap();
        // SATA serials come from udev's database, as in the installer.
        write(&self.root.join(format!("run/udev/data/b{majmin}")), &format!("E:ID_SERIAL_SHORT={serial}\nE:ID_MODEL={model}\n"));
        let dev = self.root.join("dev").join(k);
        sh(&format!("truncate -s 4M {}", dev.display()));
        let link = |dir: &str, name: &str, target: &str| {
            symlink(format!("../../{target}"), self.root.join("dev/disk").join(dir).join(name)).unwrap()
        };
        if let Some(id) = by_id {
            link("by-id", id, k);
        }
        if let Some(p) = by_path {
            link("by-path", p, k);
        }
        match holds {
            Holds::Nothing => {}
            Holds::Ext4 => sh(&format!("mkfs.ext4 -q -F -L old {}", dev.display())),
            Holds::Oemdrv => sh(&format!("mkfs.vfat -n OEMDRV {} >/dev/null", dev.display())),
            Holds::Junk => sh(&format!("printf 'not a filesystem' | dd of={} conv=notrunc status=none", dev.display())),
            Holds::MmdataPartition => {
                let part = format!("{k}1");
                write(&dev_dir.join(&part).join("partition"), "1\n");
                write(&dev_dir.join(&part).join("start"), "2048\n");
                let pdev = self.root.join("dev").join(&part);
                sh(&format!("truncate -s 320M {0} && mkfs.xfs -q -L MMDATA {0}", pdev.display()));
                if let Some(id) = by_id {
                    link("by-id", &format!("{id}-part1"), &part);
                }
                if let Some(p) = by_path {
                    link("by-path", &format!("{p}-part1"), &part);
                }
            }
        }
    }

    fn nic(&self, name: &str, driver: &str, mac: &str, carrier: bool) {
        let n = self.root.join("sys/class/net").join(name);
        write(&n.join("address"), &format!("{mac}\n"));
        write(&n.join("carrier"), if carrier { "1\n" } else { "0\n" });
        std::fs::create_dir_all(n.join("device")).unwrap();
        symlink(format!("../../../bus/pci/drivers/{driver}"), n.join("device/driver")).unwrap();
    }

    fn run_pre(&self, ks: &str) -> Output {
        self.run_pre_env(ks, &[])
    }

    fn run_pre_env(&self, ks: &str, env: &[(&str, &Path)]) -> Output {
        let mut cmd = Command::new("bash");
        cmd.args(["-c", &pre_script(ks)]).env("MM_SYSROOT", &self.root).env("MM_KS_DIR", &self.out);
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.output().unwrap()
    }

    /// Run the %pre; on success return (log, mm-disk.ks, mm-network.ks) after validating the
    /// kickstart with both includes inlined.
    fn pre_ok(&self, ks: &str) -> (String, String, String) {
        let out = self.run_pre(ks);
        let log = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "%pre failed:\n{log}");
        let disk = std::fs::read_to_string(self.out.join("mm-disk.ks")).unwrap();
        let net = std::fs::read_to_string(self.out.join("mm-network.ks")).unwrap();
        let full = ks.replace("%include /tmp/mm-disk.ks\n", &disk).replace("%include /tmp/mm-network.ks\n", &net);
        ksvalidate(&full, "the kickstart with the %pre's includes");
        assert!(kernel_disk_names(&disk).is_empty(), "kernel names in {disk}");
        (log, disk, net)
    }
}

fn example(name: &str) -> String {
    render(&load(&repo().join("examples/fleet.toml")), name).1
}

#[test]
fn pre_picks_the_boot_disk_by_rule_and_grows_data_on_it() {
    let ks = example("ziply"); // wasp: bus=sata, >= 100 GB; data on the boot disk
    let mut t = Tree::new();
    // Too small for the rule, though first by path.
    t.disk("sda", SATA, 64, "SMALL SSD", "S0", Some("ata-SMALL_SSD_S0"), Some("pci-0000:00:1f.2-ata-1"), Holds::Nothing);
    t.disk(
        "sdb",
        &SATA.replace("ata1", "ata2"),
        2000,
        "BIG SSD",
        "S1",
        Some("ata-BIG_SSD_S1"),
        Some("pci-0000:00:1f.2-ata-2"),
        Holds::Nothing,
    );
    t.disk("sdc", USB, 16, "Flash", "U1", Some("usb-Flash_U1-0:0"), Some("pci-0000:00:14.0-usb-0:1:1.0-scsi-0:0:0:0"), Holds::Oemdrv);
    t.nic("enp1s0", "r8169", "00:11:22:33:44:55", true);
    t.nic("wlp2s0", "iwlwifi", "00:11:22:33:44:66", true);
    let (log, disk, net) = t.pre_ok(&ks);
    assert!(disk.contains("ignoredisk --only-use=disk/by-id/ata-BIG_SSD_S1\n"), "{disk}\n{log}");
    assert!(disk.contains("clearpart --all --initlabel --disklabel=gpt --drives=disk/by-id/ata-BIG_SSD_S1\n"), "{disk}");
    assert!(disk.contains("part /boot/efi --fstype=efi --size=600 --ondisk=disk/by-id/ata-BIG_SSD_S1"), "{disk}");
    assert!(disk.contains("part / --fstype=xfs --size=16384 --ondisk=disk/by-id/ata-BIG_SSD_S1\n"), "{disk}");
    assert!(disk.contains("part /srv/mirror --fstype=xfs --label=MMDATA --size=1 --grow --ondisk=disk/by-id/ata-BIG_SSD_S1"), "{disk}");
    assert!(!disk.contains("SMALL") && !disk.contains("usb-"), "{disk}");
    assert!(
        net.contains("network --device=enp1s0 --bootproto=static --ip=192.0.2.10 --netmask=255.255.255.254 --gateway=192.0.2.11"),
        "{net}"
    );
    assert!(log.contains("the OEMDRV stick"), "{log}");
}

/// (boot disk holds, serial opted in) -> install or refuse; the install clears the boot disk.
#[test]
fn pre_erases_a_boot_disk_holding_data_only_when_opted_in() {
    let dir = tempfile::tempdir().unwrap();
    let fleet = dir.path().join("fleet.toml");
    let text = std::fs::read_to_string(repo().join("examples/fleet.toml")).unwrap();
    let opted = text.replacen("name = \"ziply\"\n", "name = \"ziply\"\nwipe_disk_serials = [\"S1\"]\n", 1);
    assert_ne!(opted, text);
    std::fs::write(&fleet, opted).unwrap();
    let with_opt_in = render(&fleet::load(&fleet, Some(&repo())).unwrap(), "ziply").1;
    for (holds, ks, installs) in [(Holds::Ext4, example("ziply"), false), (Holds::Ext4, with_opt_in, true)] {
        let mut t = Tree::new();
        t.disk("sdb", SATA, 2000, "BIG SSD", "S1", Some("ata-BIG_SSD_S1"), Some("pci-0000:00:1f.2-ata-2"), holds);
        t.nic("enp1s0", "r8169", "00:11:22:33:44:55", true);
        if installs {
            let (log, disk, _) = t.pre_ok(&ks);
            assert!(log.contains("erased, serial S1 is in wipe_disk_serials"), "{log}");
            assert!(disk.contains("clearpart --all --initlabel --disklabel=gpt --drives=disk/by-id/ata-BIG_SSD_S1\n"), "{disk}");
        } else {
            let out = t.run_pre(&ks);
            let log = String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
            assert!(!out.status.success(), "{log}");
            assert!(log.contains("the boot disk /dev/sdb (serial S1) holds a ext4 filesystem; refusing to erase it"), "{log}");
            assert!(log.contains("add serial \"S1\" to this node's wipe_disk_serials"), "{log}");
            assert!(!t.out.join("mm-disk.ks").exists(), "no partitioning may be written");
        }
    }
}

#[test]
fn pre_refuses_when_no_disk_matches_the_boot_rule() {
    let ks = example("ziply"); // wasp wants SATA
    let mut t = Tree::new();
    t.disk(
        "nvme0n1",
        NVME,
        2000,
        "Samsung SSD 970",
        "N1",
        Some("nvme-Samsung_SSD_970_N1"),
        Some("pci-0000:01:00.0-nvme-1"),
        Holds::Nothing,
    );
    t.disk("sda", SATA, 50, "SMALL SSD", "S0", Some("ata-SMALL_SSD_S0"), Some("pci-0000:00:1f.2-ata-1"), Holds::Nothing);
    t.nic("enp1s0", "r8169", "00:11:22:33:44:55", true);
    let out = t.run_pre(&ks);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the %pre must fail the install");
    assert!(err.contains("no disk matches the boot disk rule of hardware wasp (bus=sata, size>=100GB)"), "{err}");
    assert!(err.contains("/dev/nvme0n1: bus=nvme model=Samsung SSD 970"), "{err}");
    assert!(!t.out.join("mm-disk.ks").exists());
}

/// termite: boot sata <= 1000 GB, data sata >= 4000 GB, wipe serial ZL2PQ7XK, 2x ixgbe bond.
fn termite_tree(data: Holds, serial: &str) -> Tree {
    let mut t = Tree::new();
    t.disk("sda", SATA, 480, "SSD 480", "A1", Some("ata-SSD_480_A1"), Some("pci-0000:00:1f.2-ata-1"), Holds::Nothing);
    t.disk(
        "sdb",
        &SATA.replace("ata1", "ata2"),
        8000,
        "ST8000NM",
        serial,
        Some(&format!("ata-ST8000NM_{serial}")),
        Some("pci-0000:00:1f.2-ata-2"),
        data,
    );
    t.nic("eno1", "igb", "00:1b:21:00:00:09", true);
    t.nic("enp3s0f0", "ixgbe", "00:1b:21:00:00:01", false);
    t.nic("enp3s0f1", "ixgbe", "00:1b:21:00:00:02", true);
    t
}

#[test]
fn pre_keeps_an_existing_data_disk_and_bonds_the_ports() {
    let ks = example("hurricane");
    let t = termite_tree(Holds::MmdataPartition, "OLD1");
    let (log, disk, net) = t.pre_ok(&ks);
    assert!(disk.contains("ignoredisk --only-use=disk/by-id/ata-SSD_480_A1,disk/by-id/ata-ST8000NM_OLD1\n"), "{disk}");
    assert!(disk.contains("clearpart --all --initlabel --disklabel=gpt --drives=disk/by-id/ata-SSD_480_A1\n"), "{disk}");
    assert!(disk.contains("part /srv/mirror --onpart=disk/by-id/ata-ST8000NM_OLD1-part1 --noformat"), "{disk}");
    assert!(!disk.contains("--label=MMDATA"), "{disk}");
    assert!(log.contains("mounted as it is, not formatted"), "{log}");
    assert!(
        net.contains("network --device=bond0 --bondslaves=enp3s0f1,enp3s0f0 --bondopts=mode=802.3ad,xmit_hash_policy=layer3+4,lacp_rate=fast,miimon=100 --bootproto=static --ip=203.0.113.4"),
        "{net}"
    );
}

#[test]
fn pre_creates_data_on_a_blank_disk() {
    let t = termite_tree(Holds::Nothing, "NEW1");
    let (_, disk, _) = t.pre_ok(&example("hurricane"));
    assert!(
        disk.contains("clearpart --all --initlabel --disklabel=gpt --drives=disk/by-id/ata-SSD_480_A1,disk/by-id/ata-ST8000NM_NEW1\n"),
        "{disk}"
    );
    assert!(disk.contains("part /srv/mirror --fstype=xfs --label=MMDATA --size=1 --grow --ondisk=disk/by-id/ata-ST8000NM_NEW1"), "{disk}");
}

#[test]
fn pre_leaves_a_foreign_data_disk_alone_unless_its_serial_is_opted_in() {
    let ks = example("hurricane");
    for holds in [Holds::Ext4, Holds::Junk] {
        let t = termite_tree(holds, "FOREIGN1");
        let (log, disk, _) = t.pre_ok(&ks);
        assert!(disk.contains("ignoredisk --only-use=disk/by-id/ata-SSD_480_A1\n"), "{disk}");
        assert!(disk.contains("--drives=disk/by-id/ata-SSD_480_A1\n"), "{disk}");
        assert!(!disk.contains("/srv/mirror") && !disk.contains("FOREIGN1"), "{disk}");
        assert!(log.contains("WARNING: data disk /dev/sdb holds") && log.contains("left alone"), "{log}");
    }
    // hurricane's wipe_disk_serials = ["ZL2PQ7XK"]: the operator allowed this one.
    let t = termite_tree(Holds::Ext4, "ZL2PQ7XK");
    let (_, disk, _) = t.pre_ok(&ks);
    assert!(disk.contains("--drives=disk/by-id/ata-SSD_480_A1,disk/by-id/ata-ST8000NM_ZL2PQ7XK\n"), "{disk}");
    assert!(
        disk.contains("part /srv/mirror --fstype=xfs --label=MMDATA --size=1 --grow --ondisk=disk/by-id/ata-ST8000NM_ZL2PQ7XK"),
        "{disk}"
    );
}

#[test]
fn pre_never_installs_over_the_data_disk_and_uses_by_path_without_by_id() {
    // qemu: both virtio disks match the boot rule; the one holding MMDATA is never the boot disk.
    let ks = example("ci");
    let mut t = Tree::new();
    t.disk("vda", "pci0000:00/0000:00:04.0/virtio1", 8, "", "", None, Some("pci-0000:00:04.0"), Holds::MmdataPartition);
    t.disk("vdb", "pci0000:00/0000:00:05.0/virtio2", 8, "", "", None, Some("pci-0000:00:05.0"), Holds::Nothing);
    let n = t.root.join("sys/class/net/ens3");
    write(&n.join("address"), "52:54:00:12:34:56\n");
    write(&n.join("carrier"), "1\n");
    std::fs::create_dir_all(n.join("device")).unwrap();
    symlink("../../../bus/virtio/drivers/virtio_net", n.join("device/driver")).unwrap();
    let (log, disk, net) = t.pre_ok(&ks);
    assert!(log.contains("not installing onto /dev/vda"), "{log}");
    assert!(disk.contains("part /boot --fstype=xfs --size=1024 --ondisk=disk/by-path/pci-0000:00:05.0\n"), "{disk}");
    assert!(disk.contains("part /srv/mirror --onpart=disk/by-path/pci-0000:00:04.0-part1 --noformat"), "{disk}");
    assert!(net.contains("network --device=ens3 "), "{net}");
}

#[test]
fn pre_uses_the_pinned_mac() {
    let ks = example("sonic");
    let mut t = Tree::new();
    t.disk(
        "nvme0n1",
        NVME,
        4000,
        "Samsung SSD 990",
        "N1",
        Some("nvme-Samsung_SSD_990_N1"),
        Some("pci-0000:01:00.0-nvme-1"),
        Holds::Nothing,
    );
    t.nic("enp1s0", "mlx4_en", "24:8a:07:aa:bb:00", true);
    t.nic("enp1s0d1", "mlx4_en", "24:8a:07:aa:bb:01", false);
    let (_, disk, net) = t.pre_ok(&ks);
    assert!(
        net.contains(
            "network --device=24:8a:07:aa:bb:01 --bootproto=static --ip=198.51.100.20 --netmask=255.255.255.254 --gateway=198.51.100.21"
        ),
        "{net}"
    );
    assert!(disk.contains("--ondisk=disk/by-id/nvme-Samsung_SSD_990_N1"), "{disk}");
}

#[test]
fn pre_writes_one_address_family_for_single_stack_nodes() {
    let dir = tempfile::tempdir().unwrap();
    let v4 = v4_only_fleet(dir.path());
    let examples = load(&repo().join("examples/fleet.toml"));
    for (f, name) in [(&v4, "ziply"), (&examples, "v6only")] {
        let (cfg, ks) = render(f, name);
        assert_eq!(cfg.hardware.name, "wasp", "{name}: the fake tree below is a wasp");
        let mut t = Tree::new();
        t.disk("sda", SATA, 2000, "BIG SSD", "S1", Some("ata-BIG_SSD_S1"), Some("pci-0000:00:1f.2-ata-1"), Holds::Nothing);
        t.nic("enp1s0", "r8169", "00:11:22:33:44:55", true);
        // pre_ok validates the kickstart with the written network line included.
        let (_, _, net) = t.pre_ok(&ks);
        let line = net.lines().find(|l| l.starts_with("network --device=enp1s0 ")).unwrap_or_else(|| panic!("{name}: {net}"));
        address_families(&cfg, line);
        match name {
            "ziply" => assert!(line.contains(" --ip=192.0.2.10 --netmask=255.255.255.254 --gateway=192.0.2.11 --noipv6 "), "{line}"),
            _ => assert!(line.contains(" --noipv4 --ipv6=2001:db8:40::10/64 --ipv6gateway=2001:db8:40::1 "), "{line}"),
        }
    }
}

// ---- the OEMDRV stick, built by the real binary ----

fn node_bin() -> PathBuf {
    let dir = std::env::var_os("MM_NODE_BIN").map(PathBuf::from).unwrap_or_else(|| repo().join("target/x86_64-unknown-linux-musl/release"));
    for bin in mmbuild::image::base::NODE_BINARIES {
        assert!(
            dir.join(bin).is_file(),
            "{} is missing: build the on-node binaries first with `cargo build --release -p mm-firstboot -p mm-sync --target x86_64-unknown-linux-musl` (scripts/test does)",
            dir.join(bin).display()
        );
    }
    dir
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{cmd:?}: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn kickstart_only_build_writes_clean_oemdrv_sticks() {
    for (tool, pkg) in [("fsck.vfat", "dosfstools"), ("mdir", "mtools"), ("mcopy", "mtools"), ("blkid", "util-linux")] {
        require(tool, &format!("apt-get install {pkg}"));
    }
    let bins = node_bin();
    let tmp = tempfile::tempdir().unwrap();
    let build = |out: &Path| {
        run(Command::new(env!("CARGO_BIN_EXE_mmbuild"))
            .arg("build")
            .arg(repo().join("examples/fleet.toml"))
            .arg("--out")
            .arg(out)
            .arg("--kickstart-only")
            .arg("--node-bin")
            .arg(&bins)
            .arg("--quiet")
            // --kickstart-only must not touch the base cache at all.
            .env("MM_CACHE", tmp.path().join("no-cache"))
            .env("MM_STATE", tmp.path().join("state")))
    };
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    build(&a);
    build(&b);
    assert!(!tmp.path().join("no-cache").exists(), "--kickstart-only used the base cache");
    run(Command::new("sha256sum").args(["-c", "--quiet", "SHA256SUMS"]).current_dir(&a));
    assert_eq!(std::fs::read(a.join("SHA256SUMS")).unwrap(), std::fs::read(b.join("SHA256SUMS")).unwrap(), "builds differ");
    let manifest: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(a.join("manifest.json")).unwrap()).unwrap();
    let arts = manifest["artifacts"].as_array().unwrap();
    // Two per node, plus known_hosts.
    assert_eq!(arts.len(), 11, "{manifest}");
    for node in ["ziply", "sonic", "hurricane", "v6only", "ci"] {
        for (kind, path) in [("kickstart", format!("{node}/ks.cfg")), ("oemdrv", format!("{node}/oemdrv.img"))] {
            assert!(
                arts.iter().any(|x| x["node"] == node && x["kind"] == kind && x["path"] == path.as_str() && x["base_id"].is_null()),
                "no {kind} for {node} in {manifest}"
            );
        }
        assert!(!a.join(node).join("disk.img").exists());
    }

    let img = a.join("ci/oemdrv.img");
    let size = std::fs::metadata(&img).unwrap().len();
    assert_eq!(size % 512, 0);
    let fsck = run(Command::new("fsck.vfat").arg("-n").arg(&img));
    assert!(!fsck.to_lowercase().contains("will be"), "{fsck}");
    assert_eq!(run(Command::new("blkid").args(["-p", "-o", "value", "-s", "LABEL"]).arg(&img)).trim(), "OEMDRV");
    let listing = run(Command::new("mdir").args(["-b", "-i"]).arg(&img).arg("::"));
    for f in [
        "ks.cfg",
        "node.toml",
        "ssh_host_ed25519_key",
        "ssh_host_ed25519_key.pub",
        "mm-firstboot",
        "mm-sync",
        "mm-firstboot.service",
        "mm-firstboot-status.service",
        "SHA256SUMS",
    ] {
        assert!(listing.lines().any(|l| l.trim_end() == format!("::/{f}")), "{f} not on the stick:\n{listing}");
    }
    // Everything on the stick checks out against its own SHA256SUMS, as the %post checks it.
    let copy = tmp.path().join("stick");
    std::fs::create_dir(&copy).unwrap();
    run(Command::new("mcopy").args(["-n", "-i"]).arg(&img).arg("::*").arg(&copy));
    run(Command::new("sha256sum").args(["-c", "--quiet", "SHA256SUMS"]).current_dir(&copy));
    assert_eq!(std::fs::read(copy.join("ks.cfg")).unwrap(), std::fs::read(a.join("ci/ks.cfg")).unwrap());
    let node_toml = std::fs::read_to_string(copy.join("node.toml")).unwrap();
    assert_eq!(NodeConfig::from_toml(&node_toml, "node.toml").unwrap().node.name, "ci");
    assert_eq!(
        std::fs::read(copy.join("mm-firstboot.service")).unwrap(),
        std::fs::read(repo().join("overlays/rootfs/etc/systemd/system/mm-firstboot.service")).unwrap()
    );
    // The binary copied off the stick runs.
    let fb = copy.join("mm-firstboot");
    std::fs::set_permissions(&fb, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let help = run(Command::new(&fb).arg("--help"));
    assert!(help.contains("Usage"), "{help}");
    // Static: nothing to resolve against AlmaLinux's older glibc.
    let ldd = run(Command::new("sh").arg("-c").arg(format!("ldd {} 2>&1 || true", fb.display())));
    assert!(ldd.contains("not a dynamic executable") || ldd.contains("statically linked"), "{ldd}");
}

#[test]
fn kickstart_only_without_binaries_says_how_to_build_them() {
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_mmbuild"))
        .arg("build")
        .arg(repo().join("examples/fleet.toml"))
        .args(["--kickstart-only", "--quiet", "--out"])
        .arg(tmp.path().join("out"))
        .arg("--node-bin")
        .arg(tmp.path())
        .env("MM_STATE", tmp.path().join("state"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{err}");
    assert!(err.contains("mm-firstboot is missing") && err.contains("x86_64-unknown-linux-musl"), "{err}");
}

/// One table of disks, many rules: the kickstart `%pre` (bash, on a fake /sys + /dev tree) and
/// `DiskRule::pick` (what mm-firstboot uses) choose the same disk, or both refuse.
#[test]
fn pre_and_disk_rule_pick_the_same_disk() {
    // (kernel name, sysfs path, GB, model, serial, by-path)
    type Row<'a> = (&'a str, &'a str, u64, &'a str, &'a str, Option<&'a str>);
    let table: &[Row] = &[
        ("sda", SATA, 240, "KINGSTON SA400", "K1", Some("pci-0000:00:1f.2-ata-2")),
        ("sdb", &SATA.replace("ata1", "ata2"), 2000, "Samsung SSD 870", "S2", Some("pci-0000:00:1f.2-ata-1")),
        ("sdc", &SATA.replace("ata1", "ata3"), 500, "Samsung SSD 860", "S3", None),
        ("nvme0n1", NVME, 1100, "Samsung SSD 990", "N1", Some("pci-0000:01:00.0-nvme-1")),
        ("sdd", USB, 16, "Flash", "U1", Some("pci-0000:00:14.0-usb-0:1:1.0-scsi-0:0:0:0")),
    ];
    let rules = [
        r#"bus = "sata""#,
        r#"bus = "sata"
min_size_gb = 100
max_size_gb = 600"#,
        r#"model = "samsung*""#,
        r#"serial = "S3""#,
        r#"path = "pci-0000:00:1f.2-ata-*""#,
        r#"bus = "nvme"
min_size_gb = 1000"#,
        r#"min_size_gb = 4000"#,
    ];
    let facts: Vec<mmconfig::DiskFacts> = table
        .iter()
        .map(|(k, path, gb, model, serial, by_path)| mmconfig::DiskFacts {
            kname: k.to_string(),
            bus: Some(if path.contains("/nvme") {
                mmconfig::Bus::Nvme
            } else if path.contains("/usb") {
                mmconfig::Bus::Usb
            } else {
                mmconfig::Bus::Sata
            }),
            model: model.to_string(),
            serial: serial.to_string(),
            by_path: by_path.map(String::from),
            size_bytes: gb * 1_000_000_000,
            removable: false,
        })
        .collect();
    let wasp = std::fs::read_to_string(repo().join("hardware/wasp.toml")).unwrap();
    for rule in rules {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("hardware")).unwrap();
        let hw = wasp.replace("bus = \"sata\"\nmin_size_gb = 100", rule);
        std::fs::write(dir.path().join("hardware/wasp.toml"), &hw).unwrap();
        std::fs::copy(repo().join("examples/fleet.toml"), dir.path().join("fleet.toml")).unwrap();
        let f = load(&dir.path().join("fleet.toml"));
        let (cfg, ks) = render(&f, "ziply");
        let by_rule = cfg.hardware.storage.boot_disk.pick(&facts).map(|d| d.kname.clone());

        let mut t = Tree::new();
        for (k, path, gb, model, serial, by_path) in table {
            let by_id = format!("ata-{}_{serial}", model.replace(' ', "_"));
            t.disk(k, path, *gb, model, serial, Some(&by_id), *by_path, Holds::Nothing);
        }
        t.nic("enp1s0", "r8169", "00:11:22:33:44:55", true);
        let out = t.run_pre(&ks);
        let by_pre = out.status.success().then(|| {
            let disk = std::fs::read_to_string(t.out.join("mm-disk.ks")).unwrap();
            let line = disk.lines().find(|l| l.starts_with("ignoredisk --only-use=")).unwrap().to_string();
            table
                .iter()
                .find(|(_, _, _, model, serial, _)| line.ends_with(&format!("ata-{}_{serial}", model.replace(' ', "_"))))
                .unwrap()
                .0
                .to_string()
        });
        assert_eq!(by_pre, by_rule, "rule {rule:?}: %pre and DiskRule::pick disagree\n{}", String::from_utf8_lossy(&out.stderr));
    }
}
