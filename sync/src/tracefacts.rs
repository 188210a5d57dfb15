//! What the trace says about the synced tree, read from it as ftpsync does: the upstream master
//! trace's archive serial and the architectures whose indexes the tree carries.

use std::collections::BTreeSet;
use std::path::Path;

use crate::records::TreeFacts;

pub fn read(tree: &Path) -> TreeFacts {
    TreeFacts { serial: master_serial(tree), architectures: architectures(tree) }
}

/// ftpsync copies `Archive serial` from `project/trace/master`; a value that is not a plain
/// serial is left out rather than carried into our own trace.
fn master_serial(tree: &Path) -> Option<String> {
    let text = std::fs::read_to_string(tree.join("project/trace/master")).ok()?;
    let serial = text.lines().find_map(|l| l.strip_prefix("Archive serial:"))?.trim();
    (!serial.is_empty() && serial.len() <= 32 && serial.bytes().all(|b| b.is_ascii_alphanumeric())).then(|| serial.to_string())
}

/// Every `dists/<suite>/<component>/binary-<arch>/` as `<arch>` and `.../source/` as `source`:
/// what the tree serves, whatever the profile meant to exclude.
fn architectures(tree: &Path) -> Vec<String> {
    let dirs = |p: &Path| -> Vec<std::path::PathBuf> {
        std::fs::read_dir(p).map(|rd| rd.flatten().map(|e| e.path()).filter(|p| p.is_dir()).collect()).unwrap_or_default()
    };
    let mut found = BTreeSet::new();
    for suite in dirs(&tree.join("dists")) {
        for component in dirs(&suite) {
            for index in dirs(&component) {
                let name = index.file_name().and_then(|n| n.to_str()).unwrap_or_default();
                let arch = if name == "source" { Some(name) } else { name.strip_prefix("binary-") };
                if let Some(a) =
                    arch.filter(|a| !a.is_empty() && a.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'))
                {
                    found.insert(a.to_string());
                }
            }
        }
    }
    found.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serial_and_architectures_come_from_the_tree() {
        let dir = tempfile::tempdir().unwrap();
        let t = dir.path();
        for d in [
            "dists/trixie/main/binary-amd64",
            "dists/trixie/main/binary-all",
            "dists/trixie/main/source",
            "dists/trixie/contrib/binary-arm64",
            "dists/trixie/main/i18n",
            "dists/trixie/main/binary-Evil\nx",
        ] {
            std::fs::create_dir_all(t.join(d)).unwrap();
        }
        std::os::unix::fs::symlink("trixie", t.join("dists/stable")).unwrap();
        std::fs::create_dir_all(t.join("project/trace")).unwrap();
        std::fs::write(t.join("project/trace/master"), "Sun Dec  6 09:00:00 UTC 2026\nDate: x\nArchive serial: 2026120603\n").unwrap();
        assert_eq!(
            read(t),
            TreeFacts {
                serial: Some("2026120603".into()),
                architectures: vec!["all".into(), "amd64".into(), "arm64".into(), "source".into()]
            }
        );

        std::fs::write(t.join("project/trace/master"), "Archive serial: 20\u{7}26\n").unwrap();
        assert_eq!(read(t).serial, None);
        assert_eq!(read(&t.join("nothing")), TreeFacts::default());
    }
}
