//! Whole-OS updates on the node: which slot runs, the boot entries on the ESP, writing the other
//! slot ([`install`]) and the health gate of a slot on trial ([`gate`]).

pub mod gate;
pub mod install;

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use mmconfig::os::{Entry, EntryState, GateRecord, OsStatus, Rollback, Slot, ENTRY_DIR, ESP_MOUNT, GATE_DIR, OS_STATUS_VERSION};

/// systemd-boot's vendor GUID for its EFI variables.
const LOADER_GUID: &str = "4a67b082-0a4c-41cf-b6c7-440b29bb8c4f";

/// The running slot, from the kernel command line the UKI carried.
pub fn running_slot() -> Option<Slot> {
    Slot::from_cmdline(&std::fs::read_to_string("/proc/cmdline").ok()?)
}

/// `IMAGE_VERSION` of the running root.
pub fn running_version() -> Option<String> {
    mmconfig::image::from_os_release(&std::fs::read_to_string("/etc/os-release").ok()?)
}

/// systemd-boot booted an entry with a tries counter: this boot is a trial.
pub fn on_trial() -> bool {
    Path::new(&format!("/sys/firmware/efi/efivars/LoaderBootCountPath-{LOADER_GUID}")).exists()
}

/// The disk holding the running root (`vda` for `/dev/vda3`), from sysfs.
fn root_disk() -> Result<String> {
    let dev = crate::probe::mount_source(Path::new("/")).context("finding the root filesystem's device")?;
    let name = dev.trim_start_matches("/dev/").to_string();
    let link = std::fs::canonicalize(format!("/sys/class/block/{name}")).with_context(|| format!("finding {name} in sysfs"))?;
    let disk = link.parent().and_then(|p| p.file_name()).context("the root device has no parent disk")?;
    Ok(disk.to_string_lossy().into_owned())
}

/// The partition of the root's disk whose GPT name is `name` (`/dev/vda4`).
pub fn partition_named(name: &str) -> Result<PathBuf> {
    let disk = root_disk()?;
    let dir = format!("/sys/block/{disk}");
    for entry in std::fs::read_dir(&dir).with_context(|| format!("reading {dir}"))?.flatten() {
        if crate::probe::partname(&entry.path()).as_deref() != Some(name) {
            continue;
        }
        let text = std::fs::read_to_string(entry.path().join("uevent")).unwrap_or_default();
        if let Some(dev) = text.lines().find_map(|l| l.strip_prefix("DEVNAME=")) {
            return Ok(PathBuf::from("/dev").join(dev));
        }
    }
    bail!("no partition named {name} on /dev/{disk}: this node has the single-root layout of images before A/B slots; reinstall it from its install stick to get two slots")
}

/// Mount the ESP at [`ESP_MOUNT`] (where systemd-bless-boot looks) unless it is mounted.
pub fn mount_esp() -> Result<PathBuf> {
    let at = PathBuf::from(ESP_MOUNT);
    if crate::probe::mount_source(&at).is_some() {
        return Ok(at);
    }
    let dev = partition_named("ESP")?;
    std::fs::create_dir_all(&at).with_context(|| format!("creating {}", at.display()))?;
    hostkit::cmd::text("mount", &["-t", "vfat", "-o", "umask=0077,noexec,nosuid,nodev", &dev.to_string_lossy(), ESP_MOUNT])
        .with_context(|| format!("mounting the ESP {} at {ESP_MOUNT}", dev.display()))?;
    Ok(at)
}

/// Our boot entries in the ESP mounted at `esp`, with their file names.
pub fn entries(esp: &Path) -> Vec<(String, Entry)> {
    let dir = esp.join(ENTRY_DIR);
    let mut out: Vec<(String, Entry)> = std::fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            Entry::parse(&name).map(|entry| (name, entry))
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// The gate records on the ESP, newest first.
pub fn gate_records(esp: &Path) -> Vec<GateRecord> {
    let mut out: Vec<GateRecord> = std::fs::read_dir(esp.join(GATE_DIR))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| serde_json::from_slice(&std::fs::read(e.path()).ok()?).ok())
        .collect();
    out.sort_by_key(|r| std::cmp::Reverse(r.at));
    out
}

/// The slots that used up their tries, and why, from the entries and the gates' records.
pub fn rollbacks(entries: &[Entry], gates: &[GateRecord]) -> Vec<Rollback> {
    entries
        .iter()
        .filter(|e| e.state() == EntryState::Bad)
        .map(|e| {
            let last = gates.iter().find(|g| g.version == e.version && g.slot == e.slot);
            let reason = match last {
                Some(g) if !g.passed => format!("its health gate failed: {}", g.problems.join("; ")),
                Some(_) => "it passed its gate once but did not stay up: a hang or a panic used up its tries".into(),
                None => "it never reached its health gate: it hung or panicked while booting".into(),
            };
            Rollback { version: e.version.clone(), slot: e.slot, reason, at: last.map(|g| g.at) }
        })
        .collect()
}

/// The node's OS state (`mm-firstboot os status`).
pub fn status() -> OsStatus {
    let esp = mount_esp().ok();
    let entries: Vec<Entry> = esp.as_deref().map(entries).unwrap_or_default().into_iter().map(|(_, e)| e).collect();
    let gates = esp.as_deref().map(gate_records).unwrap_or_default();
    OsStatus {
        version: OS_STATUS_VERSION,
        image_version: running_version(),
        slot: running_slot(),
        trial: on_trial() && !blessed(),
        rollbacks: rollbacks(&entries, &gates),
        entries,
    }
}

/// systemd-bless-boot already marked this boot good (its state outlives the trial's variable).
fn blessed() -> bool {
    hostkit::cmd::text("systemctl", &["is-active", "--quiet", "systemd-bless-boot.service"]).is_ok()
}

/// The lines `status` prints and the console shows.
pub fn render(st: &OsStatus) -> String {
    let mut s = String::new();
    match (st.slot, &st.image_version) {
        (Some(slot), Some(v)) => s.push_str(&format!(
            "image {v} in slot {slot}{}\n",
            if st.trial { ", on trial (its health gate has not passed yet)" } else { "" }
        )),
        (None, Some(v)) => s.push_str(&format!("image {v}, not in an A/B slot\n")),
        _ => s.push_str("not a Micro Mirror image\n"),
    }
    if let Some(next) = mmconfig::os::next_boot(&st.entries) {
        s.push_str(&format!("next boot: {} in slot {}\n", next.version, next.slot));
    }
    for r in &st.rollbacks {
        s.push_str(&format!("rolled back from {} (slot {}): {}\n", r.version, r.slot, r.reason));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    const V1: &str = "20261101.000000-aaaaaaaaaaaa";
    const V2: &str = "20261201.000000-bbbbbbbbbbbb";

    #[test]
    fn a_slot_out_of_tries_is_a_rollback_with_the_gates_reason() {
        let bad = Entry { version: V2.into(), slot: Slot::B, tries_left: Some(0), tries_done: Some(3) };
        let good = Entry { version: V1.into(), slot: Slot::A, tries_left: None, tries_done: None };
        let gate = GateRecord { version: V2.into(), slot: Slot::B, passed: false, problems: vec!["nginx does not answer".into()], at: 7 };
        let r = rollbacks(&[good.clone(), bad.clone()], std::slice::from_ref(&gate));
        assert_eq!(r.len(), 1);
        assert_eq!((r[0].version.as_str(), r[0].slot, r[0].at), (V2, Slot::B, Some(7)));
        assert!(r[0].reason.contains("nginx does not answer"), "{}", r[0].reason);
        let hung = rollbacks(std::slice::from_ref(&bad), &[]);
        assert!(hung[0].reason.contains("never reached its health gate"), "{}", hung[0].reason);
        // A slot still on trial, or blessed, is no rollback.
        assert!(rollbacks(&[good, Entry { tries_left: Some(1), ..bad }], &[gate]).is_empty());
    }
}
