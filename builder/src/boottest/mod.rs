//! `mmbuild boot-test`: boot each built node image in its hardware model's shape, against
//! stand-in upstreams on its own addresses, and judge it the way remote hands and the fleet would.

pub(crate) mod judge;
pub(crate) mod lab;
pub mod qemu;
pub mod report;
pub(crate) mod shape;
pub mod standin;

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use mmconfig::NodeConfig;
use serde::Serialize;

use crate::boottest::qemu::{GuestDisk, GuestNic, Vm, VmOptions};
use crate::inventory::fleet::Fleet;
use hostkit::net;
use lab::Lab;
use shape::Shape;

/// How long a guest may print nothing before boot-test blames the host and starts it again.
const SILENT_START: Duration = Duration::from_secs(120);

#[derive(Debug, Clone)]
pub struct Options {
    /// The build's output directory: DIR/<node>/disk.img and DIR/known_hosts.
    pub out: PathBuf,
    pub nodes: Vec<String>,
    pub jobs: usize,
    /// Seconds from power-on until the node must have said ALL GOOD and finished its first syncs.
    pub timeout: Duration,
    /// Keep the VM disks of a failed node under DIR/<node>/boot-test/.
    pub keep: bool,
    /// Add a disk holding a foreign filesystem that the node must leave alone.
    pub foreign_disk: bool,
    /// Install from DIR/<node>/install.img on a USB stick onto a blank boot disk first.
    pub from_stick: bool,
    pub memory_mib: u32,
}

/// One check of one node, as the report and JUnit show it.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: String,
    pub ok: bool,
    pub detail: String,
    pub seconds: f64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct NodeResult {
    pub node: String,
    pub shape: String,
    /// What differs from the real machine (stand-in parts).
    pub notes: Vec<String>,
    pub accel: String,
    /// From QEMU start to the first HTTP 200 on the first project's path.
    pub seconds_to_http_200: Option<f64>,
    /// The console's verdict line, or why there is none.
    pub verdict: String,
    pub checks: Vec<Check>,
    pub seconds: f64,
    /// Where the console log (and, with --keep, the disks) of a failed node stayed.
    pub kept: Option<PathBuf>,
}

impl NodeResult {
    pub fn passed(&self) -> bool {
        !self.checks.is_empty() && self.checks.iter().all(|c| c.ok)
    }
}

/// The run's exit status: success only when every node passed every check.
pub fn exit_status(results: &[NodeResult]) -> crate::exit::Exit {
    if results.iter().all(NodeResult::passed) {
        crate::exit::Exit::Ok
    } else {
        crate::exit::Exit::NodesFailed
    }
}

/// Boots the selected nodes, `jobs` at a time, each on its own thread and network namespace.
pub fn run(fleet: &Fleet, opts: &Options) -> Result<Vec<NodeResult>> {
    hostkit::cmd::require_root("boot-test makes network namespaces, tap devices and bridges")?;
    for (tool, package) in
        [("qemu-system-x86_64", "qemu-system-x86"), ("dnsmasq", "dnsmasq"), ("rsync", "rsync"), ("ssh-keyscan", "openssh-client")]
    {
        hostkit::cmd::require_tool(tool, package)?;
    }
    let nodes: Vec<&NodeConfig> =
        if opts.nodes.is_empty() { fleet.nodes.iter().collect() } else { opts.nodes.iter().filter_map(|n| fleet.node(n)).collect() };
    for cfg in &nodes {
        let image = opts.out.join(&cfg.node.name).join("disk.img");
        if !image.is_file() {
            anyhow::bail!("{}: no image for node {} (run `mmbuild build` with this --out first)", image.display(), cfg.node.name);
        }
    }
    Ok(hostkit::pool::map(&nodes, opts.jobs, |cfg| {
        // A thread per node: the network namespace it enters dies with it.
        std::thread::scope(|s2| s2.spawn(|| boot_one(cfg, opts)).join().unwrap_or_else(|_| failed(cfg, "boot-test itself panicked")))
    }))
}

fn failed(cfg: &NodeConfig, why: &str) -> NodeResult {
    NodeResult {
        node: cfg.node.name.clone(),
        verdict: why.to_string(),
        checks: vec![Check { name: "boot".into(), ok: false, detail: why.to_string(), seconds: 0.0 }],
        ..NodeResult::default()
    }
}

fn boot_one(cfg: &NodeConfig, opts: &Options) -> NodeResult {
    let work = opts.out.join(&cfg.node.name).join("boot-test");
    let started = Instant::now();
    let mut result = match Node::prepare(cfg, opts, &work) {
        Ok(node) => node.boot_and_check(),
        Err(e) => failed(cfg, &format!("{e:#}")),
    };
    result.seconds = started.elapsed().as_secs_f64();
    let keep_all = !result.passed() && opts.keep;
    for disk in ["boot.img", "data.img", "foreign.img", "stick.img"] {
        if !keep_all {
            let _ = std::fs::remove_file(work.join(disk));
        }
    }
    if result.passed() {
        let _ = std::fs::remove_dir_all(&work);
    } else {
        result.kept = Some(work);
    }
    eprintln!("boot-test: {}: {} in {:.0} s", cfg.node.name, if result.passed() { "passed" } else { "FAILED" }, result.seconds);
    result
}

/// One node's machine, wired and ready to power on.
struct Node<'a> {
    cfg: &'a NodeConfig,
    opts: &'a Options,
    shape: Shape,
    work: PathBuf,
    vm: VmOptions,
    known_hosts: PathBuf,
    /// Hash of the foreign disk's first and last bytes before the boot.
    foreign: Option<(PathBuf, String)>,
    lab: Option<Lab>,
    upstream: Option<tempfile::TempDir>,
}

/// Hashed at each end of the foreign disk: its first sectors hold a primary GPT, MBR or
/// superblock, its last a backup GPT (or an md superblock), the places a writer would touch.
const FOREIGN_HASHED_BYTES: u64 = 64 << 20;

impl<'a> Node<'a> {
    fn prepare(cfg: &'a NodeConfig, opts: &'a Options, work: &Path) -> Result<Node<'a>> {
        let _ = std::fs::remove_dir_all(work);
        std::fs::create_dir_all(work).with_context(|| format!("creating {}", work.display()))?;
        let image = opts.out.join(&cfg.node.name).join("disk.img");
        let image_len = std::fs::metadata(&image).with_context(|| format!("reading {}", image.display()))?.len();
        let mut shape = shape::shape(cfg, image_len);
        // The shipped image stays as built: the machine boots a sparse copy grown to the disk's size.
        let boot = work.join("boot.img");
        let mut vm = if opts.from_stick {
            let stick = opts.out.join(&cfg.node.name).join("install.img");
            if !stick.is_file() {
                bail!("{}: no install stick image; build it with `mmbuild build --install-stick`", stick.display());
            }
            let copy = work.join("stick.img");
            hostkit::cmd::run(Command::new("cp").arg("--sparse=always").arg(&stick).arg(&copy))?;
            sparse_disk(&boot, shape.boot.size_bytes)?;
            let mut vm = VmOptions::new(&copy);
            vm.boot_bus = mmconfig::Bus::Usb;
            // The firmware prefers the stick at every power-on (bootindex): the stick must hand
            // over to the installed disk instead of installing again.
            vm.reboot = true;
            vm.disks.push(GuestDisk { path: boot.clone(), bus: shape.boot.bus, serial: "MMBT-BOOT".into() });
            shape.notes.push("installed from install.img on a USB stick left in (the firmware boots the stick first)".into());
            vm
        } else {
            hostkit::cmd::run(Command::new("cp").arg("--sparse=always").arg(&image).arg(&boot))?;
            sparse_disk(&boot, shape.boot.size_bytes)?;
            let mut vm = VmOptions::new(&boot);
            vm.boot_bus = shape.boot.bus;
            vm
        };
        vm.memory_mib = opts.memory_mib;
        vm.serial_log = Some(work.join("console.log"));
        if let Some(d) = &shape.data {
            let path = work.join("data.img");
            sparse_disk(&path, d.size_bytes)?;
            vm.disks.push(GuestDisk { path, bus: d.bus, serial: d.serial.clone() });
        }
        let mut foreign = None;
        if opts.foreign_disk {
            // Shaped like the data disk (or the boot disk): a candidate the rules would accept.
            let like = shape.data.as_ref().unwrap_or(&shape.boot);
            let path = work.join("foreign.img");
            sparse_disk(&path, like.size_bytes)?;
            hostkit::cmd::run(
                Command::new("mkfs.ext4").args(["-q", "-F", "-L", "FOREIGN", "-E", "lazy_itable_init=1,lazy_journal_init=1"]).arg(&path),
            )?;
            foreign = Some((path.clone(), hash_ends(&path)?));
            vm.disks.push(GuestDisk { path, bus: like.bus, serial: "MMBT-FOREIGN".into() });
        }
        vm.nics = shape
            .nics
            .iter()
            .enumerate()
            .map(|(i, n)| GuestNic { device: n.device.into(), mac: n.mac.clone(), tap: format!("mmbt{i}") })
            .collect();
        // A bond's other ports come up uncabled: the node must serve from one port and say so.
        vm.links_down = (1..vm.nics.len()).collect();
        if let Some(driver) = shape.nic_stand_in {
            vm.fw_cfg.push((shape::NIC_STAND_IN_FW_CFG.into(), driver.into()));
        }
        Ok(Node {
            cfg,
            opts,
            shape,
            work: work.to_path_buf(),
            vm,
            known_hosts: opts.out.join("known_hosts"),
            foreign,
            lab: None,
            upstream: None,
        })
    }

    /// The stand-in upstreams and resolvers, in this thread's new network namespace.
    fn wire(&mut self) -> Result<()> {
        lab::enter_private_netns()?;
        let plan = standin::plan(self.cfg).context("planning the stand-in upstreams")?;
        // rsync's daemon serves as `nobody`: every directory above the trees must let it in,
        // which DIR (it holds host keys and images, mode 0700 is likely) need not.
        let upstream =
            tempfile::Builder::new().prefix("mmbt-upstream-").tempdir().context("creating a directory for the stand-in upstreams")?;
        std::fs::set_permissions(upstream.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .with_context(|| format!("opening {} to the rsync daemon", upstream.path().display()))?;
        let dir = upstream.path();
        let written = standin::write(self.cfg, &plan, dir).context("writing the stand-in upstreams")?;
        let mut local: Vec<IpAddr> = plan.resolvers.clone();
        local.extend(plan.hosts.iter().flat_map(|h| h.addrs.iter().copied()));
        let taps: Vec<String> = self.vm.nics.iter().map(|n| n.tap.clone()).collect();
        let mut lab = Lab::wire(self.cfg, &taps, &local)?;
        let mut dns = Command::new("dnsmasq");
        dns.arg("--keep-in-foreground").arg(format!("--conf-file={}", written.dnsmasq_conf.display()));
        lab.start("dnsmasq", dns, &self.work.join("dnsmasq.log"))?;
        for (i, conf) in written.rsyncd_confs.iter().enumerate() {
            let mut rsyncd = Command::new("rsync");
            rsyncd.args(["--daemon", "--no-detach"]).arg(format!("--config={}", conf.display()));
            lab.start("the stand-in rsync daemon", rsyncd, &self.work.join(format!("rsyncd{i}.log")))?;
        }
        for h in &plan.hosts {
            for a in &h.addrs {
                lab.wait_listening(SocketAddr::new(*a, h.port), Duration::from_secs(10))?;
            }
        }
        self.lab = Some(lab);
        self.upstream = Some(upstream);
        Ok(())
    }

    fn boot_and_check(mut self) -> NodeResult {
        let cfg = self.cfg;
        let mut r = NodeResult {
            node: cfg.node.name.clone(),
            shape: self.shape.summary(),
            notes: self.shape.notes.clone(),
            ..NodeResult::default()
        };
        if let Err(e) = self.wire() {
            r.verdict = "not booted".into();
            r.checks.push(Check { name: "stand-in network".into(), ok: false, detail: format!("{e:#}"), seconds: 0.0 });
            return r;
        }
        let mut vm = match Vm::start(&self.vm) {
            Ok(vm) => vm,
            Err(e) => {
                r.verdict = "not booted".into();
                r.checks.push(Check { name: "boot".into(), ok: false, detail: format!("{e:#}"), seconds: 0.0 });
                return r;
            }
        };
        r.accel = format!("{:?}", vm.accel).to_lowercase();
        eprintln!("boot-test: {}: booting ({}) under {}", cfg.node.name, r.shape, r.accel);
        let addrs = lab::node_addrs(cfg);
        let fqdn = &cfg.node.fqdn;
        let first_path = cfg.projects.first().map_or("/".to_string(), |p| p.http_path.clone());
        let mut deadline = vm.started + self.opts.timeout;
        let mut restarted = false;
        let good = format!("mm-firstboot: {fqdn} ready - ALL GOOD");
        let attention = format!("mm-firstboot: {fqdn} NEEDS ATTENTION");
        // Poll the console and HTTP together: the first 200 usually comes before the verdict.
        let verdict_ok = loop {
            if r.seconds_to_http_200.is_none() {
                if let Some(a) = addrs.first() {
                    if net::http(SocketAddr::new(*a, 80), fqdn, "GET", &first_path, Duration::from_secs(3)).is_ok_and(|h| h.status == 200) {
                        r.seconds_to_http_200 = Some(vm.started.elapsed().as_secs_f64());
                        eprintln!("boot-test: {}: HTTP 200 after {:.0} s", cfg.node.name, vm.started.elapsed().as_secs_f64());
                    }
                }
            }
            let console = vm.serial();
            if let Some(line) = console.lines().find(|l| l.contains(&good) || l.contains(&attention)) {
                // The journal may forward it with a kernel timestamp and a unit prefix.
                r.verdict = line.find(fqdn.as_str()).map_or(line, |i| &line[i..]).trim().to_string();
                break line.contains(&good);
            }
            // OVMF prints within seconds of starting. A guest that printed nothing at all never
            // ran (a host problem, not the image's): start it once more and say so.
            if console.is_empty() && !restarted && vm.started.elapsed() > SILENT_START {
                restarted = true;
                r.notes.push(format!("QEMU printed nothing in {} s: started it again", SILENT_START.as_secs()));
                eprintln!("boot-test: {}: no console output in {} s, starting QEMU again", cfg.node.name, SILENT_START.as_secs());
                drop(vm);
                vm = match Vm::start(&self.vm) {
                    Ok(vm) => vm,
                    Err(e) => {
                        r.verdict = "not booted".into();
                        r.checks.push(Check { name: "boot".into(), ok: false, detail: format!("{e:#}"), seconds: 0.0 });
                        return r;
                    }
                };
                deadline = vm.started + self.opts.timeout;
                continue;
            }
            if Instant::now() > deadline {
                r.verdict = format!("no verdict within {} s", self.opts.timeout.as_secs());
                break false;
            }
            if vm.exited() {
                r.verdict = "QEMU exited before a verdict".into();
                break false;
            }
            std::thread::sleep(Duration::from_secs(1));
        };
        let t = vm.started.elapsed().as_secs_f64();
        let detail = if verdict_ok { String::new() } else { format!("{}\nconsole tail:\n{}", r.verdict, vm.tail(30)) };
        r.checks.push(Check { name: "console verdict ALL GOOD".into(), ok: verdict_ok, detail, seconds: t });
        if let Some(bond) = &cfg.hardware.network.bond {
            r.checks.push(judge::bond(&vm.serial(), bond, self.vm.nics.len()));
        }
        if self.opts.from_stick {
            r.checks.push(judge::stick(&vm.serial(), &cfg.node.name, &good));
        }
        if verdict_ok {
            self.serve_checks(&mut r, &addrs, deadline);
            r.checks.push(self.host_key_check());
        }
        drop(vm);
        r.checks.push(self.layout_check());
        r
    }

    /// HTTP 200 with the sponsor on every project path and the rsync modules, per family; then
    /// each project's first sync, seen as its trace file.
    fn serve_checks(&self, r: &mut NodeResult, addrs: &[IpAddr], deadline: Instant) {
        let cfg = self.cfg;
        let fqdn = &cfg.node.fqdn;
        let timeout = Duration::from_secs(10);
        let timed = |t0: Instant, c: Check| Check { seconds: t0.elapsed().as_secs_f64(), ..c };
        for a in addrs {
            let family = if a.is_ipv6() { "IPv6" } else { "IPv4" };
            for p in &cfg.projects {
                let t0 = Instant::now();
                let got = net::http(SocketAddr::new(*a, 80), fqdn, "GET", &p.http_path, timeout);
                r.checks.push(timed(t0, judge::http(family, &p.http_path, &cfg.node.sponsor.name, &got)));
            }
            let t0 = Instant::now();
            let got = net::rsync_list(SocketAddr::new(*a, 873), timeout);
            r.checks.push(timed(t0, judge::rsync_modules(family, cfg, &got)));
        }
        let Some(a) = addrs.first() else { return };
        for p in &cfg.projects {
            let t0 = Instant::now();
            let path = format!("{}{}/{}", p.http_path, p.freshness.trace_dir.trim_matches('/'), fqdn);
            let last = loop {
                let got = net::http(SocketAddr::new(*a, 80), fqdn, "GET", &path, timeout);
                if got.as_ref().is_ok_and(|h| h.status == 200) || Instant::now() > deadline {
                    break got;
                }
                std::thread::sleep(Duration::from_secs(2));
            };
            r.checks.push(timed(t0, judge::first_sync(&p.name, &path, &last)));
        }
    }

    /// The node presents the host key the build recorded in DIR/known_hosts.
    fn host_key_check(&self) -> Check {
        let t0 = Instant::now();
        let fqdn = &self.cfg.node.fqdn;
        let failed = |detail: String| Check { name: "ssh host key".into(), ok: false, detail, seconds: 0.0 };
        let Some(want) = std::fs::read_to_string(&self.known_hosts).ok().and_then(|text| judge::recorded_key(&text, fqdn)) else {
            return failed(format!("{}: no line for {fqdn}", self.known_hosts.display()));
        };
        let Some(addr) = lab::node_addrs(self.cfg).into_iter().next() else {
            return failed("the node has no address".into());
        };
        let scan = Command::new("ssh-keyscan").args(["-T", "15", "-t", "ed25519"]).arg(addr.to_string()).output();
        Check { seconds: t0.elapsed().as_secs_f64(), ..judge::host_key(&want, addr, &scan) }
    }

    /// After power-off: MMDATA where the hardware model puts it, and a foreign disk untouched.
    fn layout_check(&self) -> Check {
        let t0 = Instant::now();
        let foreign = self.foreign.as_ref().map(|(path, before)| (path.as_path(), before.as_str(), hash_ends(path)));
        Check { seconds: t0.elapsed().as_secs_f64(), ..judge::layout(&self.cfg.hardware.storage.data, &self.work, foreign) }
    }
}

fn sparse_disk(path: &Path, len: u64) -> Result<()> {
    let f = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(false)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.set_len(len).with_context(|| format!("sizing {} to {len} bytes", path.display()))
}

fn hash_ends(path: &Path) -> Result<String> {
    use sha2::{Digest, Sha256};
    use std::io::Read;
    use std::io::{Seek, SeekFrom};
    let mut f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let len = f.metadata().with_context(|| format!("reading {}", path.display()))?.len();
    let mut h = Sha256::new();
    for start in [0, len.saturating_sub(FOREIGN_HASHED_BYTES)] {
        f.seek(SeekFrom::Start(start)).with_context(|| format!("seeking in {}", path.display()))?;
        std::io::copy(&mut (&mut f).take(FOREIGN_HASHED_BYTES), &mut h).with_context(|| format!("reading {}", path.display()))?;
    }
    Ok(format!("{:x}", h.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_foreign_disk_hash_sees_both_ends() {
        use std::os::unix::fs::FileExt;
        let dir = tempfile::tempdir().unwrap();
        let disk = dir.path().join("foreign.img");
        sparse_disk(&disk, 1 << 30).unwrap();
        let f = std::fs::OpenOptions::new().write(true).open(&disk).unwrap();
        let blank = hash_ends(&disk).unwrap();
        // The middle is not looked at; a backup GPT's last sector is.
        f.write_all_at(b"x", 512 << 20).unwrap();
        assert_eq!(hash_ends(&disk).unwrap(), blank);
        f.write_all_at(b"EFI PART", (1 << 30) - 512).unwrap();
        let backup = hash_ends(&disk).unwrap();
        assert_ne!(backup, blank, "a write at the end went unseen");
        f.write_all_at(b"\x55\xaa", 510).unwrap();
        assert_ne!(hash_ends(&disk).unwrap(), backup, "a write at the start went unseen");
    }
}
