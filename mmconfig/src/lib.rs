//! The node configuration contract: what `mmbuild` writes for a node and `mm-firstboot`/`mm-sync` read.
//!
//! Three documents live here:
//! - [`Profile`]: one mirrored project (`profiles/<name>.toml`),
//! - [`Hardware`]: one server model (`hardware/<name>.toml`),
//! - [`NodeConfig`]: everything one node needs, fully resolved (fleet + node + hardware +
//!   profiles), written as `node.toml` to the node's `MMCONFIG` partition or OEMDRV stick.
//!
//! Every struct rejects unknown keys, so a typo in a data file is an error, never ignored.

use serde::{Deserialize, Serialize};

pub mod disk;
pub mod fleet_report;
pub mod image;
pub mod install;
pub mod marker;
pub mod os;
pub mod plan;
pub mod public;
pub mod report;
pub mod sync;
pub mod traffic;
pub use disk::{glob_match, Bus, DiskFacts, DiskRule};

/// Version of the [`NodeConfig`] layout. Bump when a field changes meaning.
pub const SCHEMA_VERSION: u32 = 1;

/// File name of the resolved node configuration on `MMCONFIG` / `OEMDRV`.
pub const NODE_CONFIG_FILE: &str = "node.toml";
/// Filesystem label of the per-node configuration partition.
pub const CONFIG_LABEL: &str = "MMCONFIG";
/// Filesystem label of the data filesystem that firstboot creates.
pub const DATA_LABEL: &str = "MMDATA";
/// Label of the root filesystem (ext4) in either slot; the slots' GPT names are in [`os::Slot`].
pub const ROOT_LABEL: &str = "mmroot";
/// Where the data filesystem is mounted on the node.
pub const DATA_MOUNT: &str = "/srv/mirror";
/// Where firstboot and mm-sync keep state and logs.
pub const STATE_DIR: &str = "/var/lib/micromirror";
/// The admin account created on every node for the fleet's ssh keys.
pub const ADMIN_USER: &str = "mmadmin";
/// The account upstreams log in as to trigger a sync (ssh forced command, nothing else).
pub const PUSH_USER: &str = "mmpush";
/// The unprivileged system account every sync runs as: it owns the project trees, mm-sync's
/// state and its metrics, and nothing else (no login shell, no password, no ssh).
pub const SYNC_USER: &str = "mmsync";
/// Where mm-sync publishes the node's freshness document, under the data mount (`/.mm/status.json`).
pub const PUBLIC_DIR: &str = ".mm";
/// Where the node configuration is installed on the node's root filesystem.
pub const INSTALLED_CONFIG: &str = "/etc/micromirror/node.toml";
/// The node's own ssh host private key, beside `node.toml` on `MMCONFIG` and `OEMDRV` (never
/// inside node.toml: that file is printed and shown).
pub const HOST_KEY_FILE: &str = "ssh_host_ed25519_key";
/// Its public half (`ssh-ed25519 AAAA... <fqdn>`).
pub const HOST_KEY_PUB_FILE: &str = "ssh_host_ed25519_key.pub";
/// Where a kickstart install keeps the delivered key (beside [`INSTALLED_CONFIG`]).
pub const INSTALLED_HOST_KEY: &str = "/etc/micromirror/ssh_host_ed25519_key";
/// Where firstboot installs it for sshd, the only `HostKey` sshd is configured with.
pub const SSH_HOST_KEY: &str = "/etc/ssh/ssh_host_ed25519_key";
/// mm-sync's per-project state directory (`<project>/status.json`, the lock, the run logs).
pub const SYNC_STATE_DIR: &str = "/var/lib/micromirror/sync";
/// Where `mm-sync --traffic` keeps its offsets and counts (systemd's `StateDirectory=` of its unit).
pub const TRAFFIC_STATE_DIR: &str = "/var/lib/micromirror/traffic";
/// node_exporter's textfile collector directory, where mm-sync writes its metrics.
pub const METRICS_DIR: &str = "/var/lib/prometheus/node-exporter";

/// One line of text with no control characters (motd, rsyncd values, trace files: each runs
/// to the end of its line, so a newline in fleet input would start a new field).
pub fn plain(s: &str) -> String {
    s.chars().map(|c| if c.is_control() { ' ' } else { c }).collect()
}

/// XML text and attribute content (the node's listing stylesheet, boot-test's stand-in indexes).
pub fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // Neither is an XML 1.0 `Char`: one would make the document unloadable.
            c if c.is_control() || c == '\u{fffe}' || c == '\u{ffff}' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// mm-sync's status file of `project`: written after every run, firstboot reads it to start
/// the first sync of a project that never synced.
pub fn sync_status_file(project: &str) -> String {
    format!("{SYNC_STATE_DIR}/{project}/status.json")
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {message}")]
    Parse { path: String, message: String },
    #[error("{path}: schema version {found} is not supported (this program reads {SCHEMA_VERSION})")]
    Schema { path: String, found: u32 },
}

/// One mirrored project, as described by `profiles/<name>.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// Short name, equal to the file stem (`epel` for `profiles/epel.toml`).
    pub name: String,
    pub description: String,
    pub homepage: String,
    /// Expected size on disk in GB (10^9 bytes), used for capacity planning.
    pub size_gb: u64,
    /// URL path the project is served under, e.g. `/epel/`. Starts and ends with `/`.
    pub http_path: String,
    /// rsync module name the node exports the project as.
    pub rsync_module: String,
    /// Directory under the data mount holding the tree, e.g. `epel`.
    pub directory: String,
    pub sync: SyncSpec,
    pub freshness: Freshness,
    pub registration: Registration,
}

/// How a project is kept in step with its upstream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncSpec {
    /// Default upstream, e.g. `rsync://rsync.example.org/epel/` (ends with `/`).
    /// A fleet may override it for all nodes or per node.
    pub upstream: String,
    pub method: SyncMethod,
    /// rsync options for every stage (no source/destination, no excludes).
    pub rsync_flags: Vec<String>,
    /// rsync `--exclude` patterns.
    #[serde(default)]
    pub excludes: Vec<String>,
    /// Pass `--delete-excluded`: used where the profile trims arches or sources.
    #[serde(default)]
    pub delete_excluded: bool,
    /// Two-stage only: index files synced in the second stage, e.g. `Packages*`, `InRelease`.
    #[serde(default)]
    pub index_patterns: Vec<String>,
    /// Hours between scheduled runs (the node adds a random minute).
    pub every_hours: u32,
    /// Upstream's limits on how often a mirror may pull, in minutes.
    pub min_interval_minutes: u32,
    pub max_interval_minutes: u32,
    /// rsync `--timeout` in seconds.
    pub timeout_seconds: u32,
    /// rsync `--bwlimit` in KiB/s; 0 = unlimited. Overridable per node.
    #[serde(default)]
    pub bwlimit_kbps: u64,
    /// Upstream can trigger a sync by push (ssh forced command).
    #[serde(default)]
    pub push: bool,
    /// Kind of index the consistency check reads.
    pub check: CheckKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SyncMethod {
    /// One rsync pass.
    Single,
    /// Everything but the indexes first, then the indexes with deletes last (apt, openSUSE).
    TwoStage,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CheckKind {
    /// apt archive: `dists/*/Release` and the `Packages` files it lists.
    Apt,
    /// rpm repositories: every `repodata/repomd.xml` and what it references.
    Rpm,
    /// No index to check (ISO trees, pacman, misc).
    None,
}

/// What upstream crawlers read to judge freshness.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Freshness {
    /// ftpsync-style trace directory relative to the project root, e.g. `project/trace`;
    /// the node writes `<dir>/<fqdn>` after each successful sync.
    pub trace_dir: String,
    /// Optional timestamp file the project's checker reads (e.g. AlmaLinux `timestamp.txt`),
    /// relative to the project root; written with the UNIX time of the last success.
    #[serde(default)]
    pub timestamp_file: Option<String>,
}

/// How the node is registered with the project's mirror list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Registration {
    /// `mirrormanager`, `github-pr`, `launchpad`, `email`, `web-form`, `mirrorbits`, `none`.
    pub method: String,
    pub url: String,
    pub notes: String,
}

/// One server model, as described by `hardware/<name>.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hardware {
    pub name: String,
    pub description: String,
    /// Only `uefi` is supported.
    pub firmware: String,
    /// Kernel consoles, primary last, e.g. `["tty0", "ttyS0,115200n8"]`.
    pub consoles: Vec<String>,
    /// Usable data capacity in GB (10^9 bytes) after the OS.
    pub data_capacity_gb: u64,
    /// Kernel modules the boot and data disks and NICs need: kept in the image and named to the
    /// kickstart; the initramfs loads the disk ones (NIC drivers load from the root, by udev).
    #[serde(default)]
    pub kernel_modules: Vec<String>,
    pub storage: Storage,
    pub network: HwNetwork,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Storage {
    /// The disk the OS is installed on.
    pub boot_disk: DiskRule,
    /// Where mirror data lives.
    pub data: DataPlacement,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "on", rename_all = "kebab-case", deny_unknown_fields)]
pub enum DataPlacement {
    /// A partition in the boot disk's free space (single-disk models).
    BootDisk,
    /// A whole separate disk chosen by a rule.
    Disk { rule: DiskRule },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HwNetwork {
    /// How to find the uplink port(s).
    pub nic: NicRule,
    /// LACP bond over every matching port (termite).
    #[serde(default)]
    pub bond: Option<Bond>,
}

/// Selects network ports by driver and/or name pattern (as udev reports them).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct NicRule {
    /// Kernel driver names, e.g. `["e1000e", "r8169"]`. Empty = any.
    #[serde(default)]
    pub drivers: Vec<String>,
    /// Interface name glob, e.g. `en*`.
    #[serde(default)]
    pub name: Option<String>,
    /// How many ports to use (1, or the bond members).
    pub count: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bond {
    /// Interface name of the bond, e.g. `bond0`.
    pub name: String,
    /// Linux bonding mode; `802.3ad` for LACP.
    pub mode: String,
    /// `layer3+4` etc.
    pub xmit_hash_policy: String,
    pub lacp_rate: String,
    pub miimon_ms: u32,
}

/// Everything one node needs, resolved by `mmbuild` from the fleet inventory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    pub schema: u32,
    pub fleet: FleetInfo,
    pub node: Node,
    pub hardware: Hardware,
    /// Hosted projects, in the order the fleet lists them, upstreams resolved.
    pub projects: Vec<Profile>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FleetInfo {
    pub name: String,
    pub domain: String,
    pub contact: String,
    pub admin_ssh_keys: Vec<String>,
    /// CIDR prefixes allowed to reach ssh and metrics.
    pub admin_prefixes: Vec<String>,
    /// Obtain Let's Encrypt certificates and serve HTTPS.
    #[serde(default)]
    pub https: bool,
    /// Per project, the upstream's ssh keys allowed to trigger a sync by push (profiles with
    /// `push = true`); each key can only start that project's sync.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub push_keys: std::collections::BTreeMap<String, Vec<String>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Node {
    pub name: String,
    /// `<name>.<fleet domain>`.
    pub fqdn: String,
    pub sponsor: Sponsor,
    #[serde(default)]
    pub ipv4: Option<Ipv4Config>,
    #[serde(default)]
    pub ipv6: Option<Ipv6Config>,
    pub dns: Vec<String>,
    /// Pin the uplink to one MAC instead of the hardware's NIC rule.
    #[serde(default)]
    pub interface_mac: Option<String>,
    /// Serial numbers of disks the operator allows firstboot to wipe if they hold foreign data.
    #[serde(default)]
    pub wipe_disk_serials: Vec<String>,
    /// Per-node rsync bandwidth cap in KiB/s overriding every profile's; None = profile's.
    #[serde(default)]
    pub sync_bwlimit_kbps: Option<u64>,
}

impl Node {
    /// Whether `other` is reached differently (addresses, gateways, resolvers, uplink pin): such a
    /// change is applied commit-confirmed, since it can cut the operator off.
    pub fn network_differs(&self, other: &Node) -> bool {
        self.ipv4 != other.ipv4 || self.ipv6 != other.ipv6 || self.dns != other.dns || self.interface_mac != other.interface_mac
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sponsor {
    pub name: String,
    pub url: String,
}

/// Static IPv4: `address` is `a.b.c.d/len`; the gateway may be the /31 peer (on-link).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ipv4Config {
    pub address: String,
    pub gateway: String,
}

/// Static IPv6: `address` is `addr/len`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ipv6Config {
    pub address: String,
    pub gateway: String,
}

impl NodeConfig {
    /// Parse a `node.toml`; `path` is only used in error messages.
    pub fn from_toml(text: &str, path: &str) -> Result<Self, ConfigError> {
        #[derive(Deserialize)]
        struct Probe {
            schema: u32,
        }
        let probe: Probe = toml::from_str(text).map_err(|e| ConfigError::Parse { path: path.to_string(), message: e.to_string() })?;
        if probe.schema != SCHEMA_VERSION {
            return Err(ConfigError::Schema { path: path.to_string(), found: probe.schema });
        }
        toml::from_str(text).map_err(|e| ConfigError::Parse { path: path.to_string(), message: e.to_string() })
    }

    /// Read and parse a `node.toml` file.
    pub fn load(path: &std::path::Path) -> Result<Self, ConfigError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Parse { path: shown.clone(), message: e.to_string() })?;
        Self::from_toml(&text, &shown)
    }

    /// Serialize deterministically (field order is the struct order).
    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("NodeConfig always serializes")
    }

    pub fn project(&self, name: &str) -> Option<&Profile> {
        self.projects.iter().find(|p| p.name == name)
    }
}

#[cfg(test)]
mod tests;
