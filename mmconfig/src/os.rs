//! Whole-OS updates: the two root slots, their boot entries on the ESP, and what a node reports.
//!
//! Each slot is a GPT partition named `mmroot-a`/`mmroot-b` holding a whole root filesystem; its
//! kernel comes with it as a unified kernel image in `/EFI/Linux/` whose command line names that
//! partition. systemd-boot lists those images, counts the tries of an entry whose name carries a
//! `+LEFT[-DONE]` counter, and puts an entry with no tries left after every other one; the node's
//! health gate lets `systemd-bless-boot` drop the counter once the slot really serves.

use serde::{Deserialize, Serialize};

/// Version of [`OsStatus`] and [`Installed`] as JSON.
pub const OS_STATUS_VERSION: u32 = 1;
/// Boots a new slot gets before systemd-boot falls back to the other one.
pub const DEFAULT_TRIES: u32 = 3;
/// Where systemd-boot finds unified kernel images (Type #2 entries), relative to the ESP.
pub const ENTRY_DIR: &str = "EFI/Linux";
/// What the health gate of each trial boot concluded (`gate-<version>.json`), relative to the ESP.
pub const GATE_DIR: &str = "EFI/micromirror";
/// Where the node mounts its ESP (systemd-bless-boot looks there).
pub const ESP_MOUNT: &str = "/efi";
const ENTRY_PREFIX: &str = "micromirror-";

/// What a new slot takes over from the running one: the installed configuration and host key,
/// firstboot's and mm-sync's state, the machine's identity, TLS certificates and the metrics
/// textfiles. Everything else is the image's.
pub const CARRIED: [&str; 5] = ["/etc/micromirror", "/var/lib/micromirror", "/etc/machine-id", "/etc/letsencrypt", "/var/lib/prometheus"];

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Slot {
    A,
    B,
}

impl Slot {
    pub const ALL: [Slot; 2] = [Slot::A, Slot::B];

    pub fn letter(self) -> &'static str {
        match self {
            Slot::A => "a",
            Slot::B => "b",
        }
    }

    /// The GPT partition name of the slot (the UKI's `root=PARTLABEL=`).
    pub const fn partlabel(self) -> &'static str {
        match self {
            Slot::A => "mmroot-a",
            Slot::B => "mmroot-b",
        }
    }

    pub fn other(self) -> Slot {
        match self {
            Slot::A => Slot::B,
            Slot::B => Slot::A,
        }
    }

    pub fn from_partlabel(label: &str) -> Option<Slot> {
        Slot::ALL.into_iter().find(|s| s.partlabel() == label)
    }

    /// The slot a kernel command line boots (`root=PARTLABEL=mmroot-X`).
    pub fn from_cmdline(cmdline: &str) -> Option<Slot> {
        cmdline.split_whitespace().find_map(|a| a.strip_prefix("root=PARTLABEL=")).and_then(Slot::from_partlabel)
    }
}

impl std::fmt::Display for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.letter())
    }
}

/// One boot entry: `micromirror-<version>-<slot>[+LEFT[-DONE]].efi` in [`ENTRY_DIR`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub version: String,
    pub slot: Slot,
    /// Tries left; `None`: no counter (blessed, or never on trial).
    pub tries_left: Option<u32>,
    pub tries_done: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EntryState {
    /// No counter: boots whenever it sorts first.
    Good,
    /// On trial with tries left.
    Trial,
    /// No tries left: systemd-boot never picks it while another entry is bootable.
    Bad,
}

impl Entry {
    /// A new entry on trial with `tries` boots.
    pub fn trial(version: &str, slot: Slot, tries: u32) -> Entry {
        Entry { version: version.to_string(), slot, tries_left: Some(tries), tries_done: None }
    }

    pub fn file_name(&self) -> String {
        let counter = match (self.tries_left, self.tries_done) {
            (Some(l), Some(d)) => format!("+{l}-{d}"),
            (Some(l), None) => format!("+{l}"),
            _ => String::new(),
        };
        format!("{ENTRY_PREFIX}{}-{}{counter}.efi", self.version, self.slot)
    }

    /// The entry a file name in [`ENTRY_DIR`] describes; `None` for anything that is not ours.
    pub fn parse(name: &str) -> Option<Entry> {
        let stem = name.strip_prefix(ENTRY_PREFIX)?.strip_suffix(".efi")?;
        let (id, counter) = match stem.split_once('+') {
            Some((id, c)) => (id, Some(c)),
            None => (stem, None),
        };
        let (version, slot) = id.rsplit_once('-')?;
        let slot = Slot::ALL.into_iter().find(|s| s.letter() == slot)?;
        crate::image::is_version(version).then_some(())?;
        let (tries_left, tries_done) = match counter {
            None => (None, None),
            Some(c) => {
                let (l, d) = match c.split_once('-') {
                    Some((l, d)) => (l, Some(d.parse().ok()?)),
                    None => (c, None),
                };
                (Some(l.parse().ok()?), d)
            }
        };
        Some(Entry { version: version.to_string(), slot, tries_left, tries_done })
    }

    pub fn state(&self) -> EntryState {
        match self.tries_left {
            None => EntryState::Good,
            Some(0) => EntryState::Bad,
            Some(_) => EntryState::Trial,
        }
    }
}

/// The entry systemd-boot (252) starts when nobody chooses: entries with no tries left after all
/// others, then the newest version first as systemd compares versions (all our images share one
/// `IMAGE_ID`, its sort key), then more tries left first.
pub fn next_boot(entries: &[Entry]) -> Option<&Entry> {
    entries.iter().min_by(|a, b| {
        (a.state() == EntryState::Bad)
            .cmp(&(b.state() == EntryState::Bad))
            .then_with(|| verscmp(&b.version, &a.version))
            .then_with(|| b.tries_left.unwrap_or(u32::MAX).cmp(&a.tries_left.unwrap_or(u32::MAX)))
    })
}

/// systemd's `strverscmp_improved` (what systemd-boot orders entries by, and `systemd-analyze
/// compare-versions` prints): digit runs compare as numbers, `-` and `.` separate segments and a
/// string with a separator where the other has a segment is older. Our versions are plain ASCII.
pub fn verscmp(a: &str, b: &str) -> std::cmp::Ordering {
    use std::cmp::Ordering::Equal;
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.is_empty() || b.is_empty() {
        return a.cmp(b);
    }
    let valid = |c: u8| c.is_ascii_alphanumeric() || b"~-^.".contains(&c);
    let at = |s: &[u8], i: usize| s.get(i).copied().unwrap_or(0);
    let (mut i, mut j) = (0, 0);
    loop {
        while i < a.len() && !valid(a[i]) {
            i += 1;
        }
        while j < b.len() && !valid(b[j]) {
            j += 1;
        }
        // '~' makes the string older, even against its end.
        if at(a, i) == b'~' || at(b, j) == b'~' {
            let r = (at(a, i) != b'~').cmp(&(at(b, j) != b'~'));
            if r != Equal {
                return r;
            }
            i += 1;
            j += 1;
        }
        if at(a, i) == 0 || at(b, j) == 0 {
            return at(a, i).cmp(&at(b, j));
        }
        // So does each other separator where the other string goes on with a segment.
        for sep in [b'-', b'^', b'.'] {
            if at(a, i) == sep || at(b, j) == sep {
                let r = (at(a, i) != sep).cmp(&(at(b, j) != sep));
                if r != Equal {
                    return r;
                }
                i += 1;
                j += 1;
            }
        }
        let (ca, cb) = (at(a, i), at(b, j));
        let (ea, eb);
        if ca.is_ascii_digit() || cb.is_ascii_digit() {
            let r = ca.is_ascii_digit().cmp(&cb.is_ascii_digit());
            if r != Equal {
                return r;
            }
            while at(a, i) == b'0' {
                i += 1;
            }
            while at(b, j) == b'0' {
                j += 1;
            }
            ea = i + a[i..].iter().take_while(|c| c.is_ascii_digit()).count();
            eb = j + b[j..].iter().take_while(|c| c.is_ascii_digit()).count();
            let r = (ea - i).cmp(&(eb - j)).then_with(|| a[i..ea].cmp(&b[j..eb]));
            if r != Equal {
                return r;
            }
        } else {
            ea = i + a[i..].iter().take_while(|c| c.is_ascii_alphabetic()).count();
            eb = j + b[j..].iter().take_while(|c| c.is_ascii_alphabetic()).count();
            let n = (ea - i).min(eb - j);
            let r = a[i..i + n].cmp(&b[j..j + n]).then_with(|| (ea - i).cmp(&(eb - j)));
            if r != Equal {
                return r;
            }
        }
        i = ea;
        j = eb;
    }
}

/// What one trial boot's health gate concluded, kept on the ESP so the other slot can say why it
/// took over.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GateRecord {
    pub version: String,
    pub slot: Slot,
    pub passed: bool,
    /// What failed, in the gate's words; empty when it passed.
    pub problems: Vec<String>,
    /// Seconds since the epoch.
    pub at: u64,
}

/// A slot that used up its tries; the node runs the other one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rollback {
    pub version: String,
    pub slot: Slot,
    /// The gate's last verdict, or why there is none (a hang or a panic uses up a try too).
    pub reason: String,
    /// When the gate last judged it (seconds since the epoch), if it ever did.
    pub at: Option<u64>,
}

/// `mm-firstboot os status --json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OsStatus {
    pub version: u32,
    /// `IMAGE_VERSION` of the running root.
    pub image_version: Option<String>,
    /// The running slot; `None` on a root that is not in a slot (AlmaLinux, a test tree).
    pub slot: Option<Slot>,
    /// The running slot boots on trial: its gate has not passed yet.
    pub trial: bool,
    pub entries: Vec<Entry>,
    /// Slots that failed their tries, newest first.
    pub rollbacks: Vec<Rollback>,
}

impl OsStatus {
    pub fn rolled_back(&self, version: &str) -> Option<&Rollback> {
        self.rollbacks.iter().find(|r| r.version == version)
    }
}

/// What mm-firstboot leaves for the node's other programs about its OS, at [`SEEN_PATH`]
/// (mm-sync's public document reads it). Only what changes with an update or a rollback, so
/// that rendering it on every run changes nothing between them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OsSeen {
    pub version: u32,
    pub image_version: Option<String>,
    pub slot: Option<Slot>,
    /// The newest slot that failed its tries.
    #[serde(default)]
    pub last_rollback: Option<Rollback>,
}

/// Where [`OsSeen`] lives on the node (world-readable: nothing in it is secret).
pub const SEEN_PATH: &str = "/var/lib/micromirror/os.json";

impl OsStatus {
    pub fn seen(&self) -> OsSeen {
        OsSeen { version: 1, image_version: self.image_version.clone(), slot: self.slot, last_rollback: self.rollbacks.first().cloned() }
    }
}

/// `mm-firstboot os install --json`: a slot written, checked and armed for the next boot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Installed {
    pub version: u32,
    pub slot: Slot,
    pub image_version: String,
    /// The boot entry's file name in [`ENTRY_DIR`].
    pub entry: String,
    pub bytes: u64,
    pub seconds: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    const V1: &str = "20261101.000000-aaaaaaaaaaaa";
    const V2: &str = "20261201.000000-bbbbbbbbbbbb";

    fn e(version: &str, slot: Slot, left: Option<u32>, done: Option<u32>) -> Entry {
        Entry { version: version.into(), slot, tries_left: left, tries_done: done }
    }

    #[test]
    fn entry_names_round_trip_and_foreign_files_are_not_entries() {
        for entry in [e(V1, Slot::A, None, None), e(V2, Slot::B, Some(3), None), e(V2, Slot::B, Some(0), Some(3))] {
            assert_eq!(Entry::parse(&entry.file_name()).as_ref(), Some(&entry), "{}", entry.file_name());
        }
        assert_eq!(e(V2, Slot::B, Some(1), Some(2)).file_name(), format!("micromirror-{V2}-b+1-2.efi"));
        for foreign in [
            "BOOTX64.EFI",
            "micromirror-.efi",
            &format!("micromirror-{V1}-c.efi"),
            &format!("micromirror-{V1}-a+x.efi"),
            "micromirror-1 2-a.efi",
        ] {
            assert_eq!(Entry::parse(foreign), None, "{foreign}");
        }
    }

    /// (entries on the ESP) -> the slot systemd-boot starts.
    #[test]
    fn the_next_boot_is_the_newest_entry_with_tries_left() {
        let table: [(&str, Vec<Entry>, Option<Slot>); 7] = [
            ("shipped image: one blessed slot", vec![e(V1, Slot::A, None, None)], Some(Slot::A)),
            ("v2 armed on trial", vec![e(V1, Slot::A, None, None), e(V2, Slot::B, Some(3), None)], Some(Slot::B)),
            ("v2 with a try used", vec![e(V1, Slot::A, None, None), e(V2, Slot::B, Some(2), Some(1))], Some(Slot::B)),
            ("v2 out of tries: v1 again", vec![e(V2, Slot::B, Some(0), Some(3)), e(V1, Slot::A, None, None)], Some(Slot::A)),
            ("v2 blessed", vec![e(V1, Slot::A, None, None), e(V2, Slot::B, None, None)], Some(Slot::B)),
            (
                "both out of tries: the newest still tries",
                vec![e(V1, Slot::A, Some(0), None), e(V2, Slot::B, Some(0), None)],
                Some(Slot::B),
            ),
            ("nothing", vec![], None),
        ];
        for (case, entries, want) in table {
            assert_eq!(next_boot(&entries).map(|e| e.slot), want, "{case}");
        }
    }

    /// Checked against systemd's own comparison where this machine has it (systemd 252+).
    #[test]
    fn versions_compare_as_systemd_boot_compares_them() {
        use std::cmp::Ordering::*;
        let table = [
            ("20261207.061500-3f2a9c1e0b7d", "20261207.061500-10ab00000000", Less),
            ("20261207.061500-aaaaaaaaaaaa", "20261208.000000-000000000000", Less),
            ("20261207.061500-ab", "20261207.061500-ab", Equal),
            ("20261207.061500-ab1", "20261207.061500-ab", Greater),
            ("20261207.061500-0012", "20261207.061500-12", Equal),
            ("1.2", "1-2", Greater),
            ("1~rc1", "1", Less),
            ("1a", "1b", Less),
            ("1.10", "1.9", Greater),
        ];
        let systemd = std::process::Command::new("systemd-analyze")
            .args(["compare-versions", "1", "lt", "2"])
            .output()
            .is_ok_and(|o| o.status.success());
        for (a, b, want) in table {
            assert_eq!(verscmp(a, b), want, "{a} vs {b}");
            assert_eq!(verscmp(b, a), want.reverse(), "{b} vs {a}");
            if systemd {
                let op = match want {
                    Less => "lt",
                    Equal => "eq",
                    Greater => "gt",
                };
                let ok = std::process::Command::new("systemd-analyze").args(["compare-versions", a, op, b]).status().unwrap().success();
                assert!(ok, "systemd-analyze does not find {a} {op} {b}");
            }
        }
    }

    #[test]
    fn a_slot_comes_from_the_command_line() {
        assert_eq!(Slot::from_cmdline("console=ttyS0 root=PARTLABEL=mmroot-b rw"), Some(Slot::B));
        assert_eq!(Slot::from_cmdline("root=LABEL=mmroot rw"), None);
        assert_eq!(Slot::A.other(), Slot::B);
    }
}
