//! `blkid -p` (the low-level probe) read one way for firstboot's disk classifier and `mmbuild write`.
//!
//! On the disk-safety path "could not look" must never read as "nothing there". blkid itself
//! exits 2 both for "no signature" and, silently, for a device that does not exist or is a
//! directory: [`probe`] opens the device first, and [`parse`] takes exit 2 as "nothing" only when
//! blkid said nothing; exit 8 (several conflicting signatures) is never "nothing" either.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

/// What the probe found on a device.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Signatures {
    /// `-o export` fields: TYPE, LABEL, UUID, PTTYPE, PTUUID, PART_ENTRY_NAME, ...
    pub fields: BTreeMap<String, String>,
    /// Several conflicting signatures (exit 8): something is there, blkid will not say what.
    pub ambivalent: bool,
}

impl Signatures {
    pub fn get(&self, key: &str) -> Option<&str> {
        self.fields.get(key).map(String::as_str)
    }

    /// Nothing at all: no field and not ambivalent.
    pub fn is_blank(&self) -> bool {
        self.fields.keys().all(|k| k == "DEVNAME") && !self.ambivalent
    }
}

/// Why a device could not be probed. Never to be read as "blank".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProbeError {
    #[error("{dev}: cannot be probed ({why}); check the device name and run as root")]
    Unreadable { dev: String, why: String },
    #[error("{dev}: `blkid -p` failed ({status}): {why}")]
    Failed { dev: String, status: String, why: String },
}

/// Read `blkid -p -o export` output by its exit code: 0 found, 2 nothing (when blkid printed no
/// error), 8 ambivalent; anything else, or a 2 with an error message, is a [`ProbeError`].
pub fn parse(dev: &str, code: Option<i32>, stdout: &str, stderr: &str) -> Result<Signatures, ProbeError> {
    let fields = || stdout.lines().filter_map(|l| l.split_once('=')).map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let failed = |status: String| ProbeError::Failed { dev: dev.into(), status, why: stderr.trim().to_string() };
    match code {
        Some(0) => Ok(Signatures { fields: fields(), ambivalent: false }),
        Some(2) if stderr.trim().is_empty() => Ok(Signatures::default()),
        Some(8) => Ok(Signatures { fields: fields(), ambivalent: true }),
        Some(c) => Err(failed(format!("exit {c}"))),
        None => Err(failed("killed by a signal".into())),
    }
}

/// `blkid -p -o export DEV`, after making sure DEV is there to be read (blkid would say
/// "nothing" for a missing one).
pub fn probe(dev: &str) -> anyhow::Result<Signatures> {
    let unreadable = |why: String| ProbeError::Unreadable { dev: dev.into(), why };
    let meta = std::fs::metadata(dev).map_err(|e| unreadable(e.to_string()))?;
    if meta.is_dir() {
        return Err(unreadable("a directory".into()).into());
    }
    std::fs::File::open(Path::new(dev)).map_err(|e| unreadable(e.to_string()))?;
    crate::cmd::require_tool("blkid", "util-linux")?;
    let out = Command::new("blkid")
        .args(["-p", "-o", "export", dev])
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| anyhow::anyhow!("starting `blkid -p -o export {dev}`: {e}"))?;
    Ok(parse(dev, out.status.code(), &String::from_utf8_lossy(&out.stdout), &String::from_utf8_lossy(&out.stderr))?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_table() {
        let ext4 = "DEVNAME=/dev/x\nUUID=ab\nTYPE=ext4\nLABEL=a=b\n";
        // (exit code, stdout, stderr) -> Ok(fstype, ambivalent, blank) or Err
        type Want = Result<(Option<&'static str>, bool, bool), ()>;
        let table: &[(Option<i32>, &str, &str, Want)] = &[
            (Some(0), ext4, "", Ok((Some("ext4"), false, false))),
            (Some(0), "DEVNAME=/dev/x\nPTTYPE=gpt\n", "", Ok((None, false, false))),
            (Some(2), "", "", Ok((None, false, true))),
            (Some(2), "", "blkid: error: /dev/x: Permission denied", Err(())),
            (Some(8), "", "blkid: /dev/x: ambivalent result (probably more filesystems on the device)", Ok((None, true, false))),
            (Some(4), "", "usage", Err(())),
            (Some(1), "", "", Err(())),
            (None, "", "", Err(())),
        ];
        for (code, out, err, want) in table {
            let got = parse("/dev/x", *code, out, err);
            match (got, want) {
                (Ok(s), Ok((fstype, ambivalent, blank))) => {
                    assert_eq!(s.get("TYPE"), *fstype, "{code:?}");
                    assert_eq!(s.ambivalent, *ambivalent, "{code:?}");
                    assert_eq!(s.is_blank(), *blank, "{code:?}");
                }
                (Err(e), Err(())) => assert!(e.to_string().starts_with("/dev/x: "), "{e}"),
                (got, want) => panic!("exit {code:?} {err:?}: got {got:?}, want {want:?}"),
            }
        }
        assert_eq!(parse("d", Some(0), "LABEL=a=b\n", "").unwrap().get("LABEL"), Some("a=b"), "a value may hold '='");
    }

    fn sh(cmd: &str) {
        let o = Command::new("sh").args(["-c", cmd]).output().unwrap();
        assert!(o.status.success(), "{cmd}: {}", String::from_utf8_lossy(&o.stderr));
    }

    /// The real blkid on image files: each answer, and the two failures blkid itself reports as
    /// "nothing found" (exit 2, silently).
    #[test]
    fn the_real_blkid_on_images() {
        if crate::testenv::need(&[
            crate::testenv::Need::Tool("blkid"),
            crate::testenv::Need::Tool("mkfs.ext4"),
            crate::testenv::Need::Tool("mkfs.vfat"),
        ])
        .is_err()
        {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display();
        sh(&format!("truncate -s 16M {d}/zeros {d}/ext4 {d}/fat && mkfs.ext4 -q -F -L data {d}/ext4 && mkfs.vfat {d}/fat >/dev/null"));
        // An ext4 with a FAT boot sector over its unused first sector: two filesystems, exit 8.
        sh(&format!("cp {d}/ext4 {d}/both && dd if={d}/fat of={d}/both bs=512 count=1 conv=notrunc status=none"));
        let p = |n: &str| dir.path().join(n).to_string_lossy().into_owned();
        let ext4 = probe(&p("ext4")).unwrap();
        assert_eq!((ext4.get("TYPE"), ext4.get("LABEL"), ext4.is_blank()), (Some("ext4"), Some("data"), false));
        assert!(probe(&p("zeros")).unwrap().is_blank());
        let both = probe(&p("both")).unwrap();
        assert!(both.ambivalent && !both.is_blank(), "{both:?}");
        for missing in [p("nonexistent"), d.to_string()] {
            let st = Command::new("blkid").args(["-p", "-o", "export", &missing]).status().unwrap();
            assert_eq!(st.code(), Some(2), "blkid itself calls {missing} blank");
            let e = probe(&missing).unwrap_err();
            assert!(matches!(e.downcast_ref::<ProbeError>(), Some(ProbeError::Unreadable { .. })), "{missing}: {e}");
        }
    }
}
