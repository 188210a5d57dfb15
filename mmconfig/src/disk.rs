//! Disk selection rules (by bus, model, serial, size, by-path), never by kernel name.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "kebab-case")]
pub enum Bus {
    Sata,
    Nvme,
    Virtio,
    Usb,
    Scsi,
}

impl Bus {
    pub fn as_str(self) -> &'static str {
        match self {
            Bus::Sata => "sata",
            Bus::Nvme => "nvme",
            Bus::Virtio => "virtio",
            Bus::Usb => "usb",
            Bus::Scsi => "scsi",
        }
    }
}

/// A rule that selects disks. Every field that is set must match. When several disks match,
/// the tie-break is deterministic: smallest by-path first (see [`DiskRule::pick`] users).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct DiskRule {
    #[serde(default)]
    pub bus: Option<Bus>,
    /// Glob on the model string (`*` and `?`), case-insensitive.
    #[serde(default)]
    pub model: Option<String>,
    /// Exact serial number.
    #[serde(default)]
    pub serial: Option<String>,
    /// Glob on the `/dev/disk/by-path/` name, e.g. `pci-0000:00:1f.2-ata-1*`.
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub min_size_gb: Option<u64>,
    #[serde(default)]
    pub max_size_gb: Option<u64>,
}

/// What the node observed about one disk (from sysfs/udev).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskFacts {
    /// Kernel name, e.g. `sda`; for messages only.
    pub kname: String,
    pub bus: Option<Bus>,
    pub model: String,
    pub serial: String,
    /// `/dev/disk/by-path/` name without the directory, if any.
    pub by_path: Option<String>,
    pub size_bytes: u64,
    pub removable: bool,
}

impl DiskFacts {
    /// The deterministic order among disks a rule matches, shared with the kickstart `%pre`:
    /// by-path name first (disks without one after all others), then the kernel name.
    pub fn order_key(&self) -> (bool, &str, &str) {
        (self.by_path.is_none(), self.by_path.as_deref().unwrap_or(&self.kname), &self.kname)
    }
}

impl DiskRule {
    /// The disk this rule picks among `disks`: the first match in [`DiskFacts::order_key`] order.
    pub fn pick<'a>(&self, disks: impl IntoIterator<Item = &'a DiskFacts>) -> Option<&'a DiskFacts> {
        disks.into_iter().filter(|d| self.matches(d)).min_by(|a, b| a.order_key().cmp(&b.order_key()))
    }

    pub fn matches(&self, disk: &DiskFacts) -> bool {
        let gb = disk.size_bytes / 1_000_000_000;
        self.bus.is_none_or(|b| disk.bus == Some(b))
            && self.model.as_deref().is_none_or(|m| glob_match(&m.to_lowercase(), &disk.model.to_lowercase()))
            && self.serial.as_deref().is_none_or(|s| s == disk.serial)
            && self.path.as_deref().is_none_or(|p| disk.by_path.as_deref().is_some_and(|bp| glob_match(p, bp)))
            && self.min_size_gb.is_none_or(|min| gb >= min)
            && self.max_size_gb.is_none_or(|max| gb <= max)
    }

    /// A human description, e.g. `bus=nvme, size>=1000GB`.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(b) = self.bus {
            parts.push(format!("bus={}", b.as_str()));
        }
        if let Some(m) = &self.model {
            parts.push(format!("model={m}"));
        }
        if let Some(s) = &self.serial {
            parts.push(format!("serial={s}"));
        }
        if let Some(p) = &self.path {
            parts.push(format!("path={p}"));
        }
        if let Some(v) = self.min_size_gb {
            parts.push(format!("size>={v}GB"));
        }
        if let Some(v) = self.max_size_gb {
            parts.push(format!("size<={v}GB"));
        }
        if parts.is_empty() {
            "any disk".to_string()
        } else {
            parts.join(", ")
        }
    }
}

/// Shell-style glob with `*` and `?` only.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            pi += 1;
            mark = ti;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn disk(bus: Bus, model: &str, gb: u64) -> DiskFacts {
        DiskFacts {
            kname: "sda".into(),
            bus: Some(bus),
            model: model.into(),
            serial: "S1".into(),
            by_path: Some("pci-0000:00:11.0-ata-1".into()),
            size_bytes: gb * 1_000_000_000,
            removable: false,
        }
    }

    #[test]
    fn globs() {
        assert!(glob_match("*", ""));
        assert!(glob_match("ab*cd?", "abXXcdZ"));
        assert!(!glob_match("ab*cd?", "abXXcd"));
        assert!(glob_match("pci-*-ata-1", "pci-0000:00:11.0-ata-1"));
    }

    #[test]
    fn rule_fields_all_must_match() {
        let rule = DiskRule { bus: Some(Bus::Sata), min_size_gb: Some(1000), ..Default::default() };
        assert!(rule.matches(&disk(Bus::Sata, "X", 2000)));
        assert!(!rule.matches(&disk(Bus::Nvme, "X", 2000)));
        assert!(!rule.matches(&disk(Bus::Sata, "X", 500)));
        let by_model = DiskRule { model: Some("samsung*".into()), ..Default::default() };
        assert!(by_model.matches(&disk(Bus::Nvme, "Samsung SSD 970", 1)));
        assert!(!by_model.matches(&disk(Bus::Nvme, "WDC", 1)));
        assert_eq!(rule.describe(), "bus=sata, size>=1000GB");
    }
}
