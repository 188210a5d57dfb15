//! What `mm-firstboot plan --json` prints and `mmbuild plan`/`apply` read: the node's own plan, typed.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::{DATA_LABEL, DATA_MOUNT};

/// Version of the plan's layout; bump when a field changes meaning. A plan without one is
/// version 1 (mm-firstboot printed none before the layout moved here).
pub const VERSION: u32 = 1;

/// How a running unit takes a change to a file it reads, gentlest first. Both verbs leave a
/// stopped unit stopped (`try-`): starting what is not running is a separate step of `run`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verb {
    /// The daemon re-reads its configuration in place; connections in flight carry on
    /// (`systemctl try-reload-or-restart`).
    Reload,
    /// Only a new process takes it: resource limits, command-line arguments, a oneshot's effect
    /// (`systemctl try-restart`).
    Restart,
}

impl Verb {
    pub fn systemctl(self) -> &'static str {
        match self {
            Verb::Reload => "try-reload-or-restart",
            Verb::Restart => "try-restart",
        }
    }

    pub fn word(self) -> &'static str {
        match self {
            Verb::Reload => "reload",
            Verb::Restart => "restart",
        }
    }
}

/// One step of preparing the data disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "step", rename_all = "kebab-case")]
pub enum Step {
    /// Destroy every signature on the disk (only with the operator's opt-in).
    Wipe { device: String, serial: String },
    /// New GPT with one partition named MMDATA spanning the disk.
    PartitionWhole { device: String },
    /// Move the backup GPT to the real end of the disk and add an MMDATA partition in the free
    /// space after the last partition; existing partitions are not touched.
    AddPartition { device: String },
    /// mkfs.xfs -L MMDATA on the MMDATA partition of `disk`.
    MakeFs { disk: String },
    /// Grow the MMDATA partition to the end of the disk and the filesystem with it.
    Grow { disk: String, device: String },
    /// Install and enable srv-mirror.mount and mount the data filesystem of `disk` now.
    Mount { disk: String },
}

impl Step {
    /// The step's name in the plan's JSON.
    pub fn name(&self) -> &'static str {
        match self {
            Step::Wipe { .. } => "wipe",
            Step::PartitionWhole { .. } => "partition-whole",
            Step::AddPartition { .. } => "add-partition",
            Step::MakeFs { .. } => "make-fs",
            Step::Grow { .. } => "grow",
            Step::Mount { .. } => "mount",
        }
    }

    /// One line, as the console and the run log say it.
    pub fn describe(&self) -> String {
        match self {
            Step::Wipe { device, serial } => format!("wiping {device} (serial {serial}, opted in by the fleet)"),
            Step::PartitionWhole { device } => format!("creating a GPT with one {DATA_LABEL} partition on {device}"),
            Step::AddPartition { device } => format!("adding a {DATA_LABEL} partition in the free space of {device}"),
            Step::MakeFs { disk } => format!("creating the XFS filesystem {DATA_LABEL} on {disk}"),
            Step::Grow { device, .. } => format!("growing {device} and its filesystem to the end of the disk"),
            Step::Mount { disk } => format!("mounting the data filesystem of {disk} at {DATA_MOUNT} (srv-mirror.mount)"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    /// One line for remote hands: what is wrong and what to check.
    pub message: String,
}

/// What to do about the data disk, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct StoragePlan {
    pub steps: Vec<Step>,
    pub problems: Vec<Problem>,
    /// Why: one line per decision, for `plan` output and the run log.
    pub notes: Vec<String>,
    /// The disk chosen for data, by kernel name, model and serial.
    pub data_disk: Option<String>,
}

/// One change `run` would make.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Change {
    WriteFile {
        path: PathBuf,
        mode: u32,
        /// Unified diff against the installed file; None for a new file or a private one (keys).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        diff: Option<String>,
        new: bool,
    },
    CreateAccount {
        user: String,
    },
    /// The account's home and `~/.ssh` (and its keys) handed to it, `.ssh` mode 0700.
    OwnSshDir {
        user: String,
    },
    /// Created mode 0755, owned by `owner` (root when absent).
    CreateDirectory {
        path: PathBuf,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        owner: Option<String>,
    },
    /// An existing directory handed to `user`; with `recursive` everything in it too (a project
    /// tree synced as root before syncs ran as the sync account).
    OwnDirectory {
        path: PathBuf,
        user: String,
        recursive: bool,
        /// The project's sync lock, held while its tree changes hands: a sync still running as
        /// root would otherwise leave files the sync account cannot replace.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        lock: Option<PathBuf>,
    },
    EnableUnit {
        unit: String,
        target: String,
    },
    /// A unit of something no longer configured (a dropped project's sync): stopped, disabled.
    DisableUnit {
        unit: String,
        target: String,
    },
    /// A unit file of something no longer configured.
    RemoveFile {
        path: PathBuf,
    },
    Storage {
        #[serde(flatten)]
        step: Step,
    },
    /// A running unit takes a change to files it reads, with the gentlest verb that works; a
    /// stopped unit stays stopped. Units whose files did not change are not touched.
    Service {
        unit: String,
        verb: Verb,
        because: Vec<PathBuf>,
    },
}

impl Change {
    /// One line, as the plan prints it and the run log records it.
    pub fn describe(&self) -> String {
        match self {
            Change::WriteFile { path, new: true, .. } => format!("create {}", path.display()),
            Change::WriteFile { path, .. } => format!("update {}", path.display()),
            Change::CreateAccount { user } => format!("create the account {user}"),
            Change::OwnSshDir { user } => format!("give {user} its home and ssh keys"),
            Change::CreateDirectory { path, owner: None } => format!("create the directory {}", path.display()),
            Change::CreateDirectory { path, owner: Some(u) } => format!("create the directory {} owned by {u}", path.display()),
            Change::OwnDirectory { path, user, recursive: true, .. } => format!("hand {} and everything in it to {user}", path.display()),
            Change::OwnDirectory { path, user, recursive: false, .. } => format!("hand {} to {user}", path.display()),
            Change::EnableUnit { unit, .. } => format!("enable {unit}"),
            Change::DisableUnit { unit, .. } => format!("stop and disable {unit}"),
            Change::RemoveFile { path } => format!("remove {}", path.display()),
            Change::Storage { step } => step.describe(),
            Change::Service { unit, verb, because } => {
                format!("{} {unit} if running ({} changed)", verb.word(), joined(because))
            }
        }
    }

    /// One line for the operator's table: the change's kind and what it touches
    /// (`write-file /etc/rsyncd.conf`, `reload nginx.service (... changed)`).
    pub fn summary(&self) -> String {
        match self {
            Change::WriteFile { path, .. } => format!("write-file {}", path.display()),
            Change::CreateAccount { user } => format!("create-account {user}"),
            Change::OwnSshDir { user } => format!("own-ssh-dir {user}"),
            Change::CreateDirectory { path, .. } => format!("create-directory {}", path.display()),
            Change::OwnDirectory { path, .. } => format!("own-directory {}", path.display()),
            Change::EnableUnit { unit, .. } => format!("enable-unit {unit}"),
            Change::DisableUnit { unit, .. } => format!("disable-unit {unit}"),
            Change::RemoveFile { path } => format!("remove-file {}", path.display()),
            Change::Storage { step } => format!("storage {}", step.name()),
            Change::Service { unit, verb, because } => format!("{} {unit} ({} changed)", verb.word(), joined(because)),
        }
    }
}

fn joined(paths: &[PathBuf]) -> String {
    paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
}

/// Everything `run` would change, in the order it would, and the storage plan behind it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodePlan {
    #[serde(default = "first_version")]
    pub version: u32,
    pub fqdn: String,
    pub config_source: String,
    pub changes: Vec<Change>,
    pub storage: StoragePlan,
}

fn first_version() -> u32 {
    1
}

impl NodePlan {
    /// Exactly when `run` would change nothing.
    pub fn converged(&self) -> bool {
        self.changes.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plan_reads_back_as_it_was_written_and_names_each_change() {
        let plan = NodePlan {
            version: VERSION,
            fqdn: "a.mm.example.net".into(),
            config_source: "/etc/micromirror/node.toml".into(),
            changes: vec![
                Change::WriteFile { path: "/etc/rsyncd.conf".into(), mode: 0o644, diff: None, new: false },
                Change::EnableUnit { unit: "mm-sync-epel.timer".into(), target: "timers.target".into() },
                Change::Storage { step: Step::Mount { disk: "/dev/vdb".into() } },
                Change::Service {
                    unit: "nginx.service".into(),
                    verb: Verb::Reload,
                    because: vec!["/etc/nginx/nginx.conf".into(), "/etc/nginx/micromirror/listing.xslt".into()],
                },
            ],
            storage: StoragePlan::default(),
        };
        let json = serde_json::to_string(&plan).unwrap();
        assert!(json.contains(r#"{"kind":"storage","step":"mount","disk":"/dev/vdb"}"#), "{json}");
        assert_eq!(serde_json::from_str::<NodePlan>(&json).unwrap(), plan);
        let lines: Vec<String> = plan.changes.iter().map(Change::summary).collect();
        assert_eq!(
            lines,
            [
                "write-file /etc/rsyncd.conf",
                "enable-unit mm-sync-epel.timer",
                "storage mount",
                "reload nginx.service (/etc/nginx/nginx.conf, /etc/nginx/micromirror/listing.xslt changed)"
            ]
        );
        // Every step's name is the tag serde writes.
        for step in [
            Step::Wipe { device: "d".into(), serial: "s".into() },
            Step::PartitionWhole { device: "d".into() },
            Step::AddPartition { device: "d".into() },
            Step::MakeFs { disk: "d".into() },
            Step::Grow { disk: "d".into(), device: "p".into() },
            Step::Mount { disk: "d".into() },
        ] {
            let v: serde_json::Value = serde_json::to_value(&step).unwrap();
            assert_eq!(v["step"], step.name());
        }
    }

    #[test]
    fn a_plan_from_before_versions_is_version_one() {
        let p: NodePlan = serde_json::from_str(
            r#"{"fqdn":"a","config_source":"-","changes":[],"storage":{"steps":[],"problems":[],"notes":[],"data_disk":null}}"#,
        )
        .unwrap();
        assert_eq!(p.version, 1);
        assert!(p.converged());
    }
}
