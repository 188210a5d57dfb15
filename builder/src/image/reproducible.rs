//! Cold-cache reproducibility of the base: the package set (listed and pinnable), ext4 inode times the host clock leaks in.
//!
//! `mkfs.ext4 -d` (e2fsprogs 1.47.0) copies each file's atime and ctime from the staging tree.
//! Neither can be set from userspace to a fixed value (ctime is the kernel's clock at the last
//! chmod/rename/touch; atime moves when a file is read), so two builds differ in every inode.
//! After mkfs, debugfs sets both to SOURCE_DATE_EPOCH on every inode in use.

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};

use hostkit::cmd::run;

/// `name=version` of every package installed in `root`, sorted (dpkg's own database).
pub fn installed_packages(root: &Path) -> Result<Vec<String>> {
    let admin = root.join("var/lib/dpkg");
    let out = run(Command::new("dpkg-query").arg(format!("--admindir={}", admin.display())).args([
        "-W",
        "-f",
        "${db:Status-Abbrev}\t${Package}=${Version}\n",
    ]))
    .context("listing the installed packages")?;
    let mut list: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .filter(|(status, _)| status.trim() == "ii")
        .map(|(_, pv)| pv.to_string())
        .collect();
    list.sort();
    list.dedup();
    Ok(list)
}

/// The newest modification time (Unix seconds) of the files under /usr that dpkg installed in
/// `root` (its `info/*.list`). Debian builds clamp a package's files to its changelog date, so
/// this dates the newest package; files maintainer scripts write are not listed, and their times
/// are the build's own.
pub fn newest_package_file(root: &Path) -> Result<u64> {
    use std::os::unix::fs::MetadataExt;
    let info = root.join("var/lib/dpkg/info");
    let mut newest = None;
    for entry in std::fs::read_dir(&info).with_context(|| format!("reading {}", info.display()))? {
        let path = entry?.path();
        if path.extension().is_none_or(|e| e != "list") {
            continue;
        }
        let list = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        for file in list.lines().filter(|l| l.starts_with("/usr/")) {
            // Trimmed files (docs, modules) are gone; directories carry the extraction time.
            if let Ok(meta) = std::fs::symlink_metadata(root.join(&file[1..])) {
                if meta.is_file() {
                    newest = newest.max(Some(meta.mtime().max(0) as u64));
                }
            }
        }
    }
    newest.with_context(|| format!("{}: no installed file under /usr", info.display()))
}

/// A package pin list: `name=version` per line (what the build writes as `packages.lock`);
/// blank lines and `#` comments allowed. Errors name `file:line`.
pub fn parse_pins(text: &str, file: &str) -> Result<Vec<(String, String)>> {
    let mut pins = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let Some((name, version)) = line.split_once('=') else {
            bail!("{file}:{}: expected NAME=VERSION, got {line:?}", i + 1);
        };
        // Debian policy: names [a-z0-9+.-], versions [A-Za-z0-9.+~:-]; anything else would be
        // read by apt as more than a version (the pins become an apt preferences file).
        let name_ok = !name.is_empty() && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "+.-".contains(c));
        let version_ok = !version.is_empty() && version.chars().all(|c| c.is_ascii_alphanumeric() || ".+~:-".contains(c));
        if !name_ok || !version_ok {
            bail!("{file}:{}: {line:?} is not a Debian package name and version", i + 1);
        }
        pins.push((name.to_string(), version.to_string()));
    }
    Ok(pins)
}

/// apt preferences holding every pinned package at exactly its version (priority 1001: also
/// when the mirror has a newer one).
pub fn apt_preferences(pins: &[(String, String)]) -> String {
    let mut out = String::from("# Written by mmbuild from --pin-packages; removed from the tree after the build.\n\n");
    for (name, version) in pins {
        let _ = write!(out, "Package: {name}\nPin: version {version}\nPin-Priority: 1001\n\n");
    }
    out
}

/// Pinned packages whose installed version differs (or which are not installed), as lines.
pub fn unmet_pins(pins: &[(String, String)], installed: &[String]) -> Vec<String> {
    pins.iter()
        .filter_map(|(name, version)| {
            let have = installed.iter().find_map(|pv| pv.split_once('=').filter(|(n, _)| n == name).map(|(_, v)| v));
            match have {
                Some(v) if v == version => None,
                Some(v) => Some(format!("{name}: pinned {version}, installed {v}")),
                None => Some(format!("{name}: pinned {version}, not installed")),
            }
        })
        .collect()
}

/// Inode numbers in use, from `dumpe2fs` output (every group's range minus its free inodes).
pub fn used_inodes(dumpe2fs: &str) -> Result<Vec<u64>> {
    let field = |name: &str| -> Result<u64> {
        dumpe2fs
            .lines()
            .find_map(|l| l.strip_prefix(name).map(|v| v.trim().parse::<u64>()))
            .with_context(|| format!("dumpe2fs: no {name}"))?
            .with_context(|| format!("dumpe2fs: bad {name}"))
    };
    let per_group = field("Inodes per group:")?;
    let count = field("Inode count:")?;
    let mut free = vec![false; count as usize + 1];
    // "Group 7: (Blocks ...", not the header's "Group descriptor size:".
    let is_group = |l: &str| l.strip_prefix("Group ").and_then(|r| r.split(':').next()).is_some_and(|n| n.parse::<u64>().is_ok());
    // The header has a "Free inodes:" count too; only the groups' lines are ranges.
    let first_group = dumpe2fs.lines().position(is_group).context("dumpe2fs: no groups")?;
    for line in dumpe2fs.lines().skip(first_group) {
        let Some(ranges) = line.trim().strip_prefix("Free inodes:").map(str::trim) else { continue };
        for r in ranges.split(',').map(str::trim).filter(|r| !r.is_empty()) {
            let (a, b) = r.split_once('-').unwrap_or((r, r));
            let (a, b): (u64, u64) = (a.parse().context("dumpe2fs: free inode range")?, b.parse().context("dumpe2fs: free inode range")?);
            for i in a..=b.min(count) {
                free[i as usize] = true;
            }
        }
    }
    let groups = dumpe2fs.lines().filter(|l| is_group(l)).count() as u64;
    anyhow::ensure!(groups * per_group == count, "dumpe2fs: {groups} groups of {per_group} inodes, but {count} inodes");
    Ok((1..=count).filter(|&i| !free[i as usize]).collect())
}

/// Set atime and ctime of every inode in use in the ext4 image `img` to `epoch` (see above).
pub fn clamp_ext4_times(img: &Path, epoch: u64) -> Result<()> {
    let out = run(Command::new("dumpe2fs").arg(img)).context("reading the root filesystem's inode bitmaps")?;
    let inodes = used_inodes(&String::from_utf8_lossy(&out.stdout))?;
    let mut script = String::with_capacity(inodes.len() * 64);
    for i in inodes {
        let _ = writeln!(script, "sif <{i}> atime @{epoch}\nsif <{i}> ctime @{epoch}");
    }
    let dir = img.parent().unwrap_or(Path::new("."));
    let cmds = tempfile::Builder::new().prefix(".debugfs-").tempfile_in(dir)?;
    std::fs::write(cmds.path(), script)?;
    let out = run(Command::new("debugfs")
        .arg("-w")
        .arg("-f")
        .arg(cmds.path())
        .arg(img)
        .env("E2FSPROGS_FAKE_TIME", epoch.to_string())
        .env("SOURCE_DATE_EPOCH", epoch.to_string()))
    .context("setting the root filesystem's inode times with debugfs")?;
    // debugfs reports a failed command on stderr and still exits 0.
    let err = String::from_utf8_lossy(&out.stderr);
    if let Some(line) = err.lines().find(|l| !l.starts_with("debugfs ") && !l.trim().is_empty()) {
        bail!("debugfs: {line}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_parse_and_refuse_what_is_not_a_version() {
        let p = parse_pins("# lock\nbash=5.2.15-2+b7\n\nlibc6=2.36-9+deb12u10 # comment\n", "p.lock").unwrap();
        assert_eq!(p, [("bash".to_string(), "5.2.15-2+b7".to_string()), ("libc6".into(), "2.36-9+deb12u10".into())]);
        let prefs = apt_preferences(&p);
        assert!(prefs.contains("Package: bash\nPin: version 5.2.15-2+b7\nPin-Priority: 1001\n"), "{prefs}");
        for bad in ["bash", "bash=", "=1", "Bash=1", "bash=1\nPin-Priority: 1", "bash=1 2", "bash=1*"] {
            let e = parse_pins(bad, "p.lock").unwrap_err().to_string();
            assert!(e.starts_with("p.lock:"), "{bad:?}: {e}");
        }
        let installed = vec!["bash=5.2.15-2+b7".to_string(), "libc6=2.36-9+deb12u9".to_string()];
        let mut pins = p.clone();
        pins.push(("zstd".into(), "1.5.4".into()));
        assert_eq!(
            unmet_pins(&pins, &installed),
            ["libc6: pinned 2.36-9+deb12u10, installed 2.36-9+deb12u9", "zstd: pinned 1.5.4, not installed"]
        );
    }

    #[test]
    fn the_newest_package_file_counts_listed_regular_files_under_usr_only() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        let info = root.join("var/lib/dpkg/info");
        for dir in ["var/lib/dpkg/info", "usr/bin", "usr/lib/python3", "etc"] {
            std::fs::create_dir_all(root.join(dir)).unwrap();
        }
        for (f, t) in [("usr/bin/a", "@1000"), ("usr/bin/b", "@2000"), ("etc/conf", "@9000"), ("usr/lib/python3/x.pyc", "@8000")] {
            std::fs::write(root.join(f), "x").unwrap();
            run(Command::new("touch").args(["-d", t]).arg(root.join(f))).unwrap();
        }
        std::os::unix::fs::symlink("a", root.join("usr/bin/link")).unwrap();
        // A conffile a postinst rewrote, a .pyc it compiled (unlisted), a trimmed doc, a symlink, a directory.
        std::fs::write(info.join("p.list"), "/usr\n/usr/bin\n/usr/bin/a\n/usr/bin/link\n/etc/conf\n/usr/share/doc/p/changelog.gz\n")
            .unwrap();
        std::fs::write(info.join("q.list"), "/usr/bin/b\n").unwrap();
        std::fs::write(info.join("q.md5sums"), "/usr/lib/python3/x.pyc\n").unwrap();
        assert_eq!(newest_package_file(root).unwrap(), 2000);
        std::fs::remove_file(info.join("q.list")).unwrap();
        assert_eq!(newest_package_file(root).unwrap(), 1000);
        std::fs::remove_file(info.join("p.list")).unwrap();
        assert!(newest_package_file(root).is_err());
    }

    #[test]
    fn used_inodes_are_the_complement_of_the_free_ranges() {
        let text = "Inode count:              24\nFree inodes:              12\nGroup descriptor size:    64\nFree inodes:              12\nInodes per group:         8\n\
Group 0: (Blocks 0-99)\n  Free inodes: 4-6, 8\nGroup 1: (Blocks 100-199)\n  Free inodes: 9-16\nGroup 2: (Blocks 200-299)\n  Free inodes: \n";
        assert_eq!(used_inodes(text).unwrap(), [1, 2, 3, 7, 17, 18, 19, 20, 21, 22, 23, 24]);
        assert!(used_inodes("Inode count: 8\n").is_err());
    }

    #[test]
    fn clamped_ext4_images_are_identical_whatever_the_host_clock_said() {
        let d = tempfile::tempdir().unwrap();
        let mut images = Vec::new();
        for n in 0..2 {
            let tree = d.path().join(format!("t{n}"));
            std::fs::create_dir_all(tree.join("sub")).unwrap();
            std::fs::write(tree.join("sub/f"), "x").unwrap();
            // A fixed mtime; ctime and atime are whatever the clock says now.
            run(Command::new("touch").args(["-h", "-d", "@1735689600"]).arg(tree.join("sub/f")).arg(tree.join("sub")).arg(&tree)).unwrap();
            std::thread::sleep(std::time::Duration::from_millis(1100));
            let img = d.path().join(format!("i{n}"));
            run(Command::new("mkfs.ext4")
                .args([
                    "-q",
                    "-F",
                    "-U",
                    "11111111-2222-4333-8444-555555555555",
                    "-E",
                    "hash_seed=11111111-2222-4333-8444-555555555555",
                    "-d",
                ])
                .arg(&tree)
                .arg(&img)
                .arg("16M")
                .env("E2FSPROGS_FAKE_TIME", "1735689600"))
            .unwrap();
            images.push(img);
        }
        assert_ne!(std::fs::read(&images[0]).unwrap(), std::fs::read(&images[1]).unwrap(), "mkfs no longer copies ctime: simplify");
        for img in &images {
            clamp_ext4_times(img, 1_735_689_600).unwrap();
            run(Command::new("e2fsck").arg("-fn").arg(img)).unwrap();
        }
        assert!(std::fs::read(&images[0]).unwrap() == std::fs::read(&images[1]).unwrap(), "clamped images differ");
    }
}
