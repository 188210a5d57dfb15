//! The rsync command lines of a sync, and what rsync reports: pure functions of the profile.

use std::path::Path;

use mmconfig::{Profile, SyncMethod};

/// Numbers from `rsync --stats`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    pub files_transferred: u64,
    pub files_deleted: u64,
    pub transferred_bytes: u64,
    pub total_bytes: u64,
    pub received_bytes: u64,
}

pub fn parse_stats(out: &str) -> Stats {
    let num = |prefix: &str| {
        out.lines()
            .find_map(|l| l.trim().strip_prefix(prefix))
            .and_then(|v| v.split_whitespace().next().map(|n| n.replace([',', '.'], "")))
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    Stats {
        files_transferred: num("Number of regular files transferred:"),
        files_deleted: num("Number of deleted files:"),
        transferred_bytes: num("Total transferred file size:"),
        total_bytes: num("Total file size:"),
        received_bytes: num("Total bytes received:"),
    }
}

/// Our own trace file, relative to the tree: protected from the upstream's deletes.
pub fn trace_rel(p: &Profile, fqdn: &str) -> String {
    format!("{}/{fqdn}", p.freshness.trace_dir.trim_matches('/'))
}

/// The rsync argument lists, one per stage (without the program name).
///
/// Two-stage (apt-style): stage 1 takes everything but the indexes and deletes nothing, so the
/// old indexes keep pointing at files that still exist; stage 2 takes the indexes and deletes.
pub fn rsync_stages(p: &Profile, upstream: &str, dest: &Path, fqdn: &str, bwlimit: u64, timeout: u32) -> Vec<Vec<String>> {
    let mut protect = vec![format!("--filter=P /{}", trace_rel(p, fqdn)), format!("--exclude=/{}", trace_rel(p, fqdn))];
    if let Some(ts) = &p.freshness.timestamp_file {
        protect.push(format!("--filter=P /{}", ts.trim_start_matches('/')));
    }
    let stage = |first_of_two: bool| {
        let mut a: Vec<String> = p.sync.rsync_flags.iter().filter(|f| !(first_of_two && f.starts_with("--delete"))).cloned().collect();
        a.push("--stats".into());
        // Whatever the profile's -a implies: an upstream never places device nodes or FIFOs here.
        a.extend(["--no-devices".to_string(), "--no-specials".to_string()]);
        a.push(format!("--timeout={timeout}"));
        if bwlimit > 0 {
            a.push(format!("--bwlimit={bwlimit}"));
        }
        a.extend(protect.iter().cloned());
        // rsync protects its own --delay-updates directory; excluding it by hand together with
        // --delete-excluded would let rsync delete the staged files before it renames them.
        a.extend(p.sync.excludes.iter().filter(|e| e.trim_end_matches('/') != ".~tmp~").map(|e| format!("--exclude={e}")));
        if first_of_two {
            a.extend(p.sync.index_patterns.iter().map(|e| format!("--exclude={e}")));
        } else if p.sync.delete_excluded {
            a.push("--delete-excluded".into());
        }
        a.push(upstream.to_string());
        a.push(format!("{}/", dest.display()));
        a
    };
    match p.sync.method {
        SyncMethod::Single => vec![stage(false)],
        SyncMethod::TwoStage => vec![stage(true), stage(false)],
    }
}

/// rsync exit 24 (files vanished on the sender while listing) is normal on a live upstream.
pub fn rsync_ok(code: i32) -> bool {
    code == 0 || code == 24
}

/// Whether rsync's exit status says the upstream could not be reached or went silent (rsync(1),
/// EXIT VALUES): 10 a socket error (refused, reset, unreachable), 30 a timeout in the transfer,
/// 35 a timeout waiting for the daemon. The timer's next run is the remedy, not a person. Not 5:
/// the daemon answered and refused the session, for a full house or for a module it does not
/// have, and only the second needs a person, which the status alone cannot tell.
pub fn upstream_unreachable(code: i32) -> bool {
    matches!(code, 10 | 30 | 35)
}

/// rsync's temporary name for `name`: `.name.XXXXXX`.
pub fn is_rsync_temp(name: &str) -> bool {
    let Some(rest) = name.strip_prefix('.') else {
        return false;
    };
    match rest.rsplit_once('.') {
        Some((base, suffix)) => !base.is_empty() && suffix.len() == 6 && suffix.chars().all(|c| c.is_ascii_alphanumeric()),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testdata::node;

    #[test]
    fn two_stage_holds_back_indexes_and_deletes() {
        let cfg = node("ziply");
        let mut p = cfg.projects[0].clone();
        p.sync.method = SyncMethod::TwoStage;
        p.sync.index_patterns = vec!["Packages*".into(), "InRelease".into()];
        p.sync.rsync_flags = vec!["-rlpt".into(), "--delete-delay".into(), "--delay-updates".into()];
        p.sync.delete_excluded = true;
        let s = rsync_stages(&p, "rsync://u/x/", Path::new("/srv/mirror/x"), "n.example", 0, 600);
        assert_eq!(s.len(), 2);
        assert!(s[0].contains(&"--exclude=Packages*".to_string()) && s[0].contains(&"--exclude=InRelease".to_string()));
        assert!(!s[0].iter().any(|a| a.starts_with("--delete")), "stage 1 must not delete: {:?}", s[0]);
        assert!(!s[1].contains(&"--exclude=Packages*".to_string()));
        assert!(s[1].contains(&"--delete-delay".to_string()) && s[1].contains(&"--delete-excluded".to_string()));
        for st in &s {
            assert_eq!(st[st.len() - 2..], ["rsync://u/x/".to_string(), "/srv/mirror/x/".to_string()]);
            assert!(st.contains(&format!("--filter=P /{}/n.example", p.freshness.trace_dir)));
        }
        let single = rsync_stages(&cfg.projects[0], "rsync://u/x/", Path::new("/d"), "n", 512, 60);
        assert_eq!(single.len(), 1);
        assert!(single[0].contains(&"--bwlimit=512".to_string()) && single[0].contains(&"--timeout=60".to_string()));
    }

    #[test]
    fn stats_parsing_handles_thousands_separators() {
        let out = "Number of files: 1,234 (reg: 1,000)\nNumber of regular files transferred: 1,002\nTotal file size: 12,345,678 bytes\nTotal transferred file size: 345,678 bytes\nTotal bytes received: 400,000\n";
        assert_eq!(
            parse_stats(out),
            Stats {
                files_transferred: 1002,
                files_deleted: 0,
                transferred_bytes: 345_678,
                total_bytes: 12_345_678,
                received_bytes: 400_000
            }
        );
        assert_eq!(parse_stats("Number of deleted files: 3 (reg: 3)\n").files_deleted, 3);
    }

    #[test]
    fn rsync_temp_names() {
        assert!(is_rsync_temp(".foo.rpm.Ab12Cd"));
        assert!(!is_rsync_temp(".htaccess"));
        assert!(!is_rsync_temp("foo.rpm.Ab12Cd"));
        assert!(!is_rsync_temp(".foo.rpm"));
    }
}
