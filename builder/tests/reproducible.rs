//! Slow tier: a build of a node from an empty base cache (`MM_CACHE`) gives the same bytes, in
//! every artifact and every cached base file, as a reference: the shared cache's base of the same
//! package set when it has one (in CI, itself a cold build earlier in the run: this also proves a
//! cached base is what a cold build would give), else a second cold build pinned to the first
//! one's `packages.lock`. When they differ, diffoscope's report is in the failure message.
//! Needs root, network access to the Debian mirror and the tools from scripts/install-deps.

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn build(cache: &Path, state: &Path, out: &Path, extra: &[&str]) {
    let o = Command::new(env!("CARGO_BIN_EXE_mmbuild"))
        .arg("build")
        .arg(repo().join("examples/fleet.toml"))
        .arg("--out")
        .arg(out)
        .arg("--state")
        .arg(state)
        .args(["--node", "ci", "--quiet"])
        .args(extra)
        .env("MM_CACHE", cache)
        .output()
        .unwrap();
    assert!(o.status.success(), "mmbuild failed:\n{}", String::from_utf8_lossy(&o.stderr));
}

/// Every regular file under `dir`, relative, sorted.
fn files(dir: &Path) -> Vec<PathBuf> {
    fn walk(top: &Path, dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(top, &p, out);
            } else {
                out.push(p.strip_prefix(top).unwrap().to_path_buf());
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// The sha256 of `p`; a file sha256sum cannot read fails the test (two missing files are not
/// "the same").
fn sha256(p: &Path) -> String {
    let o = Command::new("sha256sum").arg(p).output().unwrap();
    assert!(o.status.success(), "sha256sum {}: {}", p.display(), String::from_utf8_lossy(&o.stderr));
    let sum = String::from_utf8_lossy(&o.stdout).split_whitespace().next().unwrap_or_default().to_string();
    assert!(sum.len() == 64 && sum.bytes().all(|b| b.is_ascii_hexdigit()), "sha256sum {}: {sum:?}", p.display());
    sum
}

fn same(a: &Path, b: &Path) -> bool {
    sha256(a) == sha256(b)
}

#[test]
#[should_panic(expected = "sha256sum")]
fn two_missing_files_are_not_the_same() {
    let tmp = tempfile::tempdir().unwrap();
    same(&tmp.path().join("a"), &tmp.path().join("b"));
}

#[test]
fn same_tells_equal_from_different_bytes() {
    let tmp = tempfile::tempdir().unwrap();
    let p = |n: &str, b: &[u8]| {
        let p = tmp.path().join(n);
        std::fs::write(&p, b).unwrap();
        p
    };
    let (a, a2, b) = (p("a", b"x"), p("a2", b"x"), p("b", b"y"));
    assert!(same(&a, &a2));
    assert!(!same(&a, &b));
}

/// diffoscope's text report of `a` vs `b` (bounded in size and time).
fn diffoscope(a: &Path, b: &Path) -> String {
    let o = Command::new("timeout")
        .args(["900", "diffoscope", "--no-progress", "--text", "-", "--max-report-size", "300000", "--exclude-directory-metadata", "no"])
        .arg(a)
        .arg(b)
        .output();
    match o {
        Ok(o) => format!(
            "$ diffoscope {} {}\n{}{}",
            a.display(),
            b.display(),
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
        Err(e) => format!("diffoscope could not run ({e}): apt-get install diffoscope"),
    }
}

/// The only entry of `dir` (the fresh cache's layers hold one build each).
fn only_entry(dir: &Path) -> PathBuf {
    let entries: Vec<PathBuf> = std::fs::read_dir(dir).unwrap().flatten().map(|e| e.path()).filter(|p| p.is_dir()).collect();
    assert_eq!(entries.len(), 1, "{}: {entries:?}", dir.display());
    entries[0].clone()
}

#[test]
#[ignore = "slow: builds the base OS from an empty cache (twice when the shared cache has no base of that package set)"]
fn a_cold_build_is_byte_identical_to_the_cached_base_or_a_second_cold_build() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    let cache_a = tmp.path().join("cache-a");
    let (out_a, out_b) = (tmp.path().join("out-a"), tmp.path().join("out-b"));
    build(&cache_a, &state, &out_a, &[]);
    let lock = out_a.join("packages.lock");
    let (base_a, os_a) = (only_entry(&cache_a.join("base")), only_entry(&cache_a.join("os")));
    let shared = mmbuild::image::build::default_cache();
    // The OS layer is named after the inputs (not the packages the archive gave), the base after
    // the packages: the shared cache serves as the reference when both hold this build's set.
    let shared_os = shared.join("os").join(os_a.file_name().unwrap());
    let from_shared = std::fs::read(shared_os.join("packages.lock")).ok() == std::fs::read(os_a.join("packages.lock")).ok()
        && shared.join("base").join(base_a.file_name().unwrap()).join("root.ext4").is_file();
    let (cache_b, os_b) = if from_shared {
        eprintln!("reference: the base in the shared cache {}", shared.display());
        build(&shared, &state, &out_b, &[]);
        (shared, shared_os)
    } else {
        eprintln!("reference: a second cold build (the shared cache has no base of this package set)");
        let cache_b = tmp.path().join("cache-b");
        // It asks for exactly the package set the first one got.
        build(&cache_b, &state, &out_b, &["--pin-packages", lock.to_str().unwrap()]);
        let os_b = only_entry(&cache_b.join("os"));
        (cache_b, os_b)
    };

    // The manifest lists every package with its version, as packages.lock does.
    let manifest: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out_a.join("manifest.json")).unwrap()).unwrap();
    let listed: Vec<&str> = manifest["packages"].as_array().unwrap().iter().map(|p| p.as_str().unwrap()).collect();
    assert!(listed.iter().any(|p| p.starts_with("openssh-server=")) && listed.iter().any(|p| p.starts_with("linux-image-")), "{listed:?}");
    assert_eq!(std::fs::read_to_string(&lock).unwrap(), listed.iter().map(|p| format!("{p}\n")).collect::<String>());

    // Every output and every cached base file.
    let mut pairs: Vec<(PathBuf, PathBuf)> = Vec::new();
    assert_eq!(files(&out_a), files(&out_b), "the builds wrote different files");
    pairs.extend(files(&out_a).into_iter().map(|f| (out_a.join(&f), out_b.join(&f))));
    let base_b = cache_b.join("base").join(base_a.file_name().unwrap());
    assert!(
        base_b.is_dir(),
        "{}: no base of the same id, the inputs differ: {:?}",
        base_b.display(),
        std::fs::read_dir(cache_b.join("base"))
    );
    for f in ["root.ext4", "initrd.cpio.zst", "uki-a.efi", "uki-b.efi", "esp.img"] {
        pairs.push((base_a.join(f), base_b.join(f)));
    }
    let differ: Vec<&(PathBuf, PathBuf)> = pairs.iter().filter(|(a, b)| !same(a, b)).collect();
    if differ.is_empty() {
        return;
    }
    let mut report = format!("cold builds differ in {} file(s):\n", differ.len());
    for (a, _) in &differ {
        report.push_str(&format!("  {}\n", a.display()));
    }
    // diffoscope without libguestfs sees an ext4 image as bytes: compare the trees it came from.
    report.push_str(&diffoscope(&os_a.join("root"), &os_b.join("root")));
    for (a, b) in differ.iter().filter(|(a, _)| a.ends_with("uki-a.efi") || a.ends_with("initrd.cpio.zst")) {
        report.push_str(&diffoscope(a, b));
    }
    if differ.iter().any(|(a, _)| a.ends_with("root.ext4")) {
        let cmp = Command::new("sh")
            .arg("-c")
            .arg(format!("cmp -l {} {} | wc -l", base_a.join("root.ext4").display(), base_b.join("root.ext4").display()))
            .output()
            .unwrap();
        report.push_str(&format!("root.ext4: {} bytes differ\n", String::from_utf8_lossy(&cmp.stdout).trim()));
    }
    panic!("{report}");
}
