//! Consistency check of a synced tree: every file its apt or rpm indexes reference is present.
//!
//! apt: each `dists/<suite>/Release` (or `InRelease`) lists index files with size and SHA256;
//! each `Packages` index lists pool files with `Size` and `SHA256`. rpm: each
//! `repodata/repomd.xml` lists metadata files with size and checksum; `primary` lists packages.
//! Index files are always hashed (they are small); package files are size-checked, and hashed
//! too with `deep` (a full read of the tree).

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use mmconfig::CheckKind;
use quick_xml::events::Event;
use serde::Serialize;
use sha2::{Digest, Sha256};

#[derive(Debug, Default, Clone, Serialize)]
pub struct Report {
    /// Index files read (Release, Packages, repomd.xml, primary).
    pub indexes: usize,
    /// Files whose presence (and size, and maybe hash) was checked.
    pub files_checked: usize,
    /// One line per problem, with the index that references the file.
    pub errors: Vec<String>,
}

impl Report {
    pub fn ok(&self) -> bool {
        self.errors.is_empty()
    }
}

/// The profile's rsync `--exclude` patterns: files a mirror deliberately trims (other
/// architectures, sources) are referenced by the indexes but must not count as missing.
#[derive(Debug, Clone, Default)]
pub struct Excludes(pub Vec<String>);

impl Excludes {
    /// Whether rsync would have excluded `rel` (a path relative to the tree), following rsync's
    /// rules: `dir/` matches a directory at any depth, `a/b` matches the path's trailing
    /// components (anchored at the root with a leading `/`), a plain pattern any component.
    pub fn matches(&self, rel: &str) -> bool {
        let comps: Vec<&str> = rel.split('/').filter(|c| !c.is_empty() && *c != ".").collect();
        self.0.iter().any(|pat| {
            if let Some(dir) = pat.strip_suffix('/') {
                let dir_comps: Vec<&str> = dir.trim_start_matches('/').split('/').collect();
                let n = dir_comps.len();
                // Only directories: every component but the last.
                let dirs = &comps[..comps.len().saturating_sub(1)];
                if pat.starts_with('/') {
                    return dirs.len() >= n && dir_comps.iter().zip(dirs).all(|(p, c)| mmconfig::glob_match(p, c));
                }
                dirs.windows(n).any(|w| dir_comps.iter().zip(w).all(|(p, c)| mmconfig::glob_match(p, c)))
            } else if pat.contains('/') {
                let pc: Vec<&str> = pat.trim_start_matches('/').split('/').collect();
                let n = pc.len();
                if pat.starts_with('/') {
                    return comps.len() >= n && pc.iter().zip(&comps).all(|(p, c)| mmconfig::glob_match(p, c));
                }
                // Any prefix of the path (a directory on the way down) may end with the pattern.
                (n..=comps.len()).any(|end| pc.iter().zip(&comps[end - n..end]).all(|(p, c)| mmconfig::glob_match(p, c)))
            } else {
                comps.iter().any(|c| mmconfig::glob_match(pat, c))
            }
        })
    }
}

pub fn check_tree(kind: CheckKind, tree: &Path, excludes: &Excludes, deep: bool) -> Result<Report> {
    let mut r = Report::default();
    let mut ctx = Ctx { tree, excludes, deep, r: &mut r };
    match kind {
        CheckKind::None => {}
        CheckKind::Apt => check_apt(&mut ctx)?,
        CheckKind::Rpm => {
            for repomd in find_files(tree, |p| p.ends_with("repodata/repomd.xml"))? {
                check_repomd(&mut ctx, &repomd)?;
            }
        }
    }
    Ok(r)
}

struct Ctx<'a> {
    tree: &'a Path,
    excludes: &'a Excludes,
    deep: bool,
    r: &'a mut Report,
}

impl Ctx<'_> {
    /// False (and nothing recorded) for files the profile excludes on purpose.
    fn wanted(&self, path: &Path) -> bool {
        let rel = path.strip_prefix(self.tree).unwrap_or(path);
        !self.excludes.matches(&rel.to_string_lossy())
    }
}

fn sha256_file(path: &Path) -> Result<String> {
    let mut f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h).with_context(|| format!("reading {}", path.display()))?;
    Ok(format!("{:x}", h.finalize()))
}

/// `rel` under `base`, unless it is absolute or climbs out with `..`: an index is upstream data
/// and must not make the check read files outside the mirror.
fn inside(base: &Path, rel: &str) -> Option<PathBuf> {
    let p = Path::new(rel);
    p.components().all(|c| matches!(c, std::path::Component::Normal(_) | std::path::Component::CurDir)).then(|| base.join(p))
}

/// Check one referenced file; records an error naming `index`.
fn check_file(r: &mut Report, index: &Path, path: &Path, size: Option<u64>, sha256: Option<&str>) {
    r.files_checked += 1;
    let meta = match fs::metadata(path) {
        Ok(m) => m,
        Err(_) => {
            r.errors.push(format!("{}: missing {}", index.display(), path.display()));
            return;
        }
    };
    if let Some(want) = size {
        if meta.len() != want {
            r.errors.push(format!("{}: {} is {} bytes, the index says {want}", index.display(), path.display(), meta.len()));
            return;
        }
    }
    if let Some(want) = sha256 {
        match sha256_file(path) {
            Ok(got) if got.eq_ignore_ascii_case(want) => {}
            Ok(got) => r.errors.push(format!("{}: {} has SHA256 {got}, the index says {want}", index.display(), path.display())),
            Err(e) => r.errors.push(format!("{}: {e:#}", index.display())),
        }
    }
}

/// Regular files under `dir` (symlinks not followed) for which `keep` holds, sorted.
fn find_files(dir: &Path, keep: impl Fn(&Path) -> bool) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let entries = match fs::read_dir(&d) {
            Ok(e) => e,
            Err(e) if d == dir => return Err(e).with_context(|| format!("reading {}", d.display())),
            Err(_) => continue,
        };
        for e in entries.flatten() {
            let ft = e.file_type()?;
            let p = e.path();
            if ft.is_dir() {
                stack.push(p);
            } else if ft.is_file() && keep(&p) {
                out.push(p);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// The contents of an index, decompressed by its extension.
fn read_index(path: &Path) -> Result<Vec<u8>> {
    let f = BufReader::new(File::open(path).with_context(|| format!("opening {}", path.display()))?);
    let mut out = Vec::new();
    let name = path.to_string_lossy();
    let res = if name.ends_with(".gz") {
        flate2::bufread::MultiGzDecoder::new(f).read_to_end(&mut out).map(|_| ())
    } else if name.ends_with(".xz") {
        let mut f = f;
        lzma_rs::xz_decompress(&mut f, &mut out).map_err(|e| std::io::Error::other(format!("{e:?}")))
    } else if name.ends_with(".bz2") || name.ends_with(".lz4") {
        Err(std::io::Error::other("this compression is not supported by the check"))
    } else if name.ends_with(".zst") {
        ruzstd::decoding::StreamingDecoder::new(f).map_err(std::io::Error::other).and_then(|mut d| d.read_to_end(&mut out).map(|_| ()))
    } else {
        let mut f = f;
        f.read_to_end(&mut out).map(|_| ())
    };
    res.with_context(|| format!("decompressing {}", path.display()))?;
    Ok(out)
}

const COMPRESSIONS: [&str; 5] = ["", ".gz", ".xz", ".zst", ".bz2"];

fn strip_compression(rel: &str) -> &str {
    COMPRESSIONS[1..].iter().find_map(|c| rel.strip_suffix(c)).unwrap_or(rel)
}

fn check_apt(ctx: &mut Ctx<'_>) -> Result<()> {
    let tree = ctx.tree;
    let dists = tree.join("dists");
    if !dists.is_dir() {
        ctx.r.errors.push(format!("{}: no dists/ directory: not an apt archive", tree.display()));
        return Ok(());
    }
    let releases = find_files(&dists, |p| p.file_name().is_some_and(|n| n == "Release" || n == "InRelease"))?;
    // InRelease and Release describe the same suite: read one per directory.
    let mut suites = BTreeSet::new();
    for rel in releases {
        let dir = rel.parent().unwrap_or(&dists).to_path_buf();
        if !suites.insert(dir.clone()) {
            continue;
        }
        let text = String::from_utf8_lossy(&fs::read(&rel).with_context(|| format!("reading {}", rel.display()))?).into_owned();
        ctx.r.indexes += 1;
        let entries = release_sha256(&text);
        let listed: BTreeSet<&str> = entries.iter().map(|(_, _, p)| p.as_str()).collect();
        for (hash, size, relpath) in &entries {
            let Some(path) = inside(&dir, relpath) else {
                ctx.r.errors.push(format!("{}: names {relpath:?}, outside the suite", rel.display()));
                continue;
            };
            if !ctx.wanted(&path) {
                continue;
            }
            // Release lists every compression of an index; a mirror may lack some of them, but
            // never all: only the absence of every variant is an error.
            if !path.exists() {
                let stem = strip_compression(relpath);
                let any =
                    COMPRESSIONS.iter().any(|c| listed.contains(format!("{stem}{c}").as_str()) && dir.join(format!("{stem}{c}")).exists());
                if any {
                    continue;
                }
            }
            check_file(ctx.r, &rel, &path, Some(*size), Some(hash));
        }
        // The pool files of each Packages index, read from the best variant present.
        let stems: BTreeSet<&str> = entries.iter().map(|(_, _, p)| strip_compression(p)).filter(|p| p.ends_with("/Packages")).collect();
        for stem in stems {
            let Some(index) = COMPRESSIONS.iter().map(|c| dir.join(format!("{stem}{c}"))).find(|p| p.is_file()) else {
                continue;
            };
            let data = match read_index(&index) {
                Ok(d) => d,
                Err(e) => {
                    ctx.r.errors.push(format!("{e:#}"));
                    continue;
                }
            };
            ctx.r.indexes += 1;
            for (filename, size, sha) in packages_entries(&String::from_utf8_lossy(&data)) {
                let Some(path) = inside(tree, &filename) else {
                    ctx.r.errors.push(format!("{}: names {filename:?}, outside the archive", index.display()));
                    continue;
                };
                if ctx.wanted(&path) {
                    check_file(ctx.r, &index, &path, size, if ctx.deep { sha.as_deref() } else { None });
                }
            }
        }
    }
    Ok(())
}

/// (sha256, size, path) lines of a Release file's `SHA256:` field.
pub fn release_sha256(text: &str) -> Vec<(String, u64, String)> {
    let mut out = Vec::new();
    let mut inside = false;
    for line in text.lines() {
        if line.starts_with("SHA256:") {
            inside = true;
            continue;
        }
        if inside {
            if !line.starts_with(' ') {
                inside = false;
                continue;
            }
            let f: Vec<&str> = line.split_whitespace().collect();
            if let [hash, size, path] = f[..] {
                if let Ok(size) = size.parse() {
                    out.push((hash.to_string(), size, path.to_string()));
                }
            }
        }
    }
    out
}

/// (Filename, Size, SHA256) of each stanza of a Packages index.
pub fn packages_entries(text: &str) -> Vec<(String, Option<u64>, Option<String>)> {
    let mut out = Vec::new();
    for stanza in text.split("\n\n") {
        let field =
            |name: &str| stanza.lines().find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(':')).map(|v| v.trim().to_string()));
        if let Some(f) = field("Filename") {
            out.push((f, field("Size").and_then(|s| s.parse().ok()), field("SHA256")));
        }
    }
    out
}

/// One `<data>` entry of repomd.xml, or one `<package>` of primary.xml.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RpmEntry {
    pub kind: String,
    pub href: String,
    pub size: Option<u64>,
    pub sha256: Option<String>,
}

/// Entries of repomd.xml (`data`) or primary.xml (`package`).
pub fn rpm_entries(xml: &[u8], element: &[u8]) -> Result<Vec<RpmEntry>> {
    let mut reader = quick_xml::Reader::from_reader(xml);
    let mut buf = Vec::new();
    let mut out = Vec::new();
    let mut cur: Option<RpmEntry> = None;
    let mut in_checksum_sha256 = false;
    let mut in_size_text = false;
    loop {
        let ev = reader.read_event_into(&mut buf).context("parsing XML")?;
        match &ev {
            Event::Start(e) | Event::Empty(e) => {
                let name = e.local_name();
                let attr = |k: &[u8]| {
                    e.attributes()
                        .flatten()
                        .find(|a| a.key.local_name().as_ref() == k)
                        .and_then(|a| a.unescape_value().ok().map(|v| v.into_owned()))
                };
                if name.as_ref() == element {
                    cur = Some(RpmEntry { kind: attr(b"type").unwrap_or_default(), ..Default::default() });
                } else if let Some(c) = cur.as_mut() {
                    match name.as_ref() {
                        b"location" => c.href = attr(b"href").unwrap_or_default(),
                        // primary: <size package="N"/>; repomd: <size>N</size>.
                        b"size" => match attr(b"package") {
                            Some(n) => c.size = n.parse().ok(),
                            None => in_size_text = matches!(ev, Event::Start(_)),
                        },
                        b"checksum" => in_checksum_sha256 = matches!(ev, Event::Start(_)) && attr(b"type").as_deref() == Some("sha256"),
                        _ => {}
                    }
                }
            }
            Event::Text(t) => {
                if let Some(c) = cur.as_mut() {
                    let text = t.unescape().map(|s| s.trim().to_string()).unwrap_or_default();
                    if in_checksum_sha256 {
                        c.sha256 = Some(text);
                    } else if in_size_text {
                        c.size = text.parse().ok();
                    }
                }
            }
            Event::End(e) => match e.local_name().as_ref() {
                b"checksum" => in_checksum_sha256 = false,
                b"size" => in_size_text = false,
                n if n == element => out.extend(cur.take()),
                _ => {}
            },
            Event::Eof => break,
            _ => {}
        }
        buf.clear();
    }
    Ok(out)
}

fn check_repomd(ctx: &mut Ctx<'_>, repomd: &Path) -> Result<()> {
    let repo = repomd.parent().and_then(Path::parent).context("repomd.xml outside a repodata directory")?;
    ctx.r.indexes += 1;
    let xml = fs::read(repomd).with_context(|| format!("reading {}", repomd.display()))?;
    let data = match rpm_entries(&xml, b"data") {
        Ok(d) => d,
        Err(e) => {
            ctx.r.errors.push(format!("{}: {e:#}", repomd.display()));
            return Ok(());
        }
    };
    for d in &data {
        let Some(path) = inside(repo, &d.href) else {
            ctx.r.errors.push(format!("{}: names {:?}, outside the repository", repomd.display(), d.href));
            continue;
        };
        let before = ctx.r.errors.len();
        check_file(ctx.r, repomd, &path, d.size, d.sha256.as_deref());
        if d.kind != "primary" || ctx.r.errors.len() != before {
            continue;
        }
        let primary = match read_index(&path).and_then(|x| rpm_entries(&x, b"package")) {
            Ok(p) => p,
            Err(e) => {
                ctx.r.errors.push(format!("{}: {e:#}", path.display()));
                continue;
            }
        };
        ctx.r.indexes += 1;
        for p in primary {
            let Some(pkg) = inside(repo, &p.href) else {
                ctx.r.errors.push(format!("{}: names {:?}, outside the repository", path.display(), p.href));
                continue;
            };
            if ctx.wanted(&pkg) {
                check_file(ctx.r, &path, &pkg, p.size, if ctx.deep { p.sha256.as_deref() } else { None });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excludes_follow_rsync_rules() {
        let ex =
            Excludes(vec!["SRPMS/".into(), "binary-armel/".into(), "*_armel.deb".into(), "installer-*/current".into(), "/top/".into()]);
        assert!(ex.matches("SRPMS/a.rpm"));
        assert!(ex.matches("9/Everything/SRPMS/Packages/a.rpm"));
        assert!(!ex.matches("Packages/SRPMS"), "a file named like a directory pattern");
        assert!(ex.matches("dists/bookworm/main/binary-armel/Packages.xz"));
        assert!(ex.matches("pool/main/a/a_1_armel.deb"));
        assert!(!ex.matches("pool/main/a/a_1_amd64.deb"));
        assert!(ex.matches("dists/x/main/installer-amd64/current/images/x"));
        assert!(ex.matches("top/x"));
        assert!(!ex.matches("a/top/x"));
    }

    #[test]
    fn index_paths_stay_inside_the_tree() {
        let base = Path::new("/srv/mirror/epel");
        assert_eq!(inside(base, "Packages/a.rpm"), Some(base.join("Packages/a.rpm")));
        assert_eq!(inside(base, "../../../etc/shadow"), None);
        assert_eq!(inside(base, "/etc/shadow"), None);
        assert_eq!(inside(base, "a/../../x"), None);
    }

    #[test]
    fn release_sha256_section_only() {
        let text = "Origin: x\nMD5Sum:\n 0123 10 main/binary-amd64/Packages\nSHA256:\n abcd 42 main/binary-amd64/Packages\n ef01 20 main/binary-amd64/Packages.gz\nAcquire-By-Hash: yes\n";
        assert_eq!(
            release_sha256(text),
            vec![("abcd".into(), 42, "main/binary-amd64/Packages".into()), ("ef01".into(), 20, "main/binary-amd64/Packages.gz".into())]
        );
    }

    #[test]
    fn packages_stanzas() {
        let text = "Package: a\nFilename: pool/main/a/a_1_all.deb\nSize: 100\nSHA256: ff\n\nPackage: b\nFilename: pool/main/b/b.deb\n";
        assert_eq!(
            packages_entries(text),
            vec![("pool/main/a/a_1_all.deb".into(), Some(100), Some("ff".into())), ("pool/main/b/b.deb".into(), None, None)]
        );
    }

    #[test]
    fn repomd_and_primary_entries() {
        let repomd = br#"<?xml version="1.0"?><repomd xmlns="http://linux.duke.edu/metadata/repo"><revision>1</revision>
<data type="primary"><checksum type="sha256">aa</checksum><open-checksum type="sha256">bb</open-checksum>
<location href="repodata/aa-primary.xml.gz"/><timestamp>1</timestamp><size>123</size><open-size>456</open-size></data></repomd>"#;
        let d = rpm_entries(repomd, b"data").unwrap();
        assert_eq!(
            d,
            vec![RpmEntry {
                kind: "primary".into(),
                href: "repodata/aa-primary.xml.gz".into(),
                size: Some(123),
                sha256: Some("aa".into())
            }]
        );
        let primary = br#"<metadata><package type="rpm"><name>x</name><checksum type="sha256" pkgid="YES">cc</checksum>
<size package="789" installed="1" archive="2"/><location href="Packages/x/x-1.noarch.rpm"/></package></metadata>"#;
        let p = rpm_entries(primary, b"package").unwrap();
        assert_eq!(
            p,
            vec![RpmEntry { kind: "rpm".into(), href: "Packages/x/x-1.noarch.rpm".into(), size: Some(789), sha256: Some("cc".into()) }]
        );
    }
}
