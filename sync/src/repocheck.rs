//! Consistency check of a synced tree: every file its apt or rpm indexes reference is present.
//!
//! apt: each `dists/<suite>/Release` (or `InRelease`) lists index files with size and SHA256;
//! each `Packages` index lists pool files with `Size` and `SHA256`. rpm: each
//! `repodata/repomd.xml` lists metadata files with size and checksum; `primary` lists packages.
//! Index files are always hashed (they are small); package files are size-checked, and hashed
//! too with `deep` (a full read of the tree).

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io::{self, BufReader, Read, Write};
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

/// How much work one upstream index may make the check do. An upstream is not trusted: a small
/// compressed file can expand without end (a decompression bomb), list absurdly many entries or
/// nest XML without end. Past a bound the index is reported as a check error naming it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Bytes of one decompressed `Packages` or `primary.xml`.
    pub index_bytes: u64,
    /// Bytes of one `Release`/`InRelease` or `repomd.xml` (read uncompressed).
    pub top_bytes: u64,
    /// Entries listed by one index.
    pub entries: usize,
    /// Nesting depth of XML elements.
    pub xml_depth: usize,
}

/// Debian's largest `Packages` (sid, amd64, main) is about 100 MB uncompressed and Fedora's
/// `primary.xml` (Everything) a few hundred MB: 1 GiB leaves room for growth while keeping one
/// index (held in memory while it is read) within a small node's RAM.
pub const MAX_INDEX_BYTES: u64 = 1 << 30;
/// A `Release`/`InRelease` lists a few thousand index files (Debian sid's is under 1 MB) and a
/// `repomd.xml` a dozen (a few KB): 64 MiB is far beyond any real one.
pub const MAX_TOP_BYTES: u64 = 64 << 20;
/// Debian's biggest `Packages` has about 70,000 stanzas and Fedora's primary about 75,000
/// packages; one million is over ten times that and bounds the memory of the entry list
/// (a few hundred bytes each).
pub const MAX_ENTRIES: usize = 1_000_000;
/// repomd.xml and primary.xml nest 4 levels deep; 64 is plenty and stops pathological nesting.
pub const MAX_XML_DEPTH: usize = 64;

impl Default for Limits {
    fn default() -> Self {
        Limits { index_bytes: MAX_INDEX_BYTES, top_bytes: MAX_TOP_BYTES, entries: MAX_ENTRIES, xml_depth: MAX_XML_DEPTH }
    }
}

pub fn check_tree(kind: CheckKind, tree: &Path, excludes: &Excludes, deep: bool) -> Result<Report> {
    check_tree_with(kind, tree, excludes, deep, &Limits::default())
}

/// [`check_tree`] with other bounds (tests use small ones to exercise them cheaply).
pub fn check_tree_with(kind: CheckKind, tree: &Path, excludes: &Excludes, deep: bool, limits: &Limits) -> Result<Report> {
    let mut r = Report::default();
    let mut ctx = Ctx { tree, excludes, deep, limits, r: &mut r };
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
    limits: &'a Limits,
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

/// `rel` under `base`, or why not: an index is upstream data and must not make the check read
/// files outside the mirror (absolute paths, `..`) or hand the OS a name it cannot take (NUL).
pub fn inside(base: &Path, rel: &str) -> Result<PathBuf, &'static str> {
    use std::path::Component;
    if rel.is_empty() {
        return Err("an empty path");
    }
    if rel.contains('\0') {
        return Err("a NUL byte in the path");
    }
    let p = Path::new(rel);
    for c in p.components() {
        match c {
            Component::Normal(_) | Component::CurDir => {}
            Component::ParentDir => return Err("`..` in the path, climbing out"),
            Component::RootDir | Component::Prefix(_) => return Err("an absolute path"),
        }
    }
    Ok(base.join(p))
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

/// A reader that fails once more than `limit` bytes came through: the decompressed size of an
/// index is only known by reading it.
struct Capped<R> {
    inner: R,
    left: u64,
    limit: u64,
}

fn too_big(limit: u64) -> io::Error {
    io::Error::other(format!(
        "larger than {} once decompressed, the check's bound for one index (a decompression bomb, or not an index)",
        human(limit)
    ))
}

fn human(n: u64) -> String {
    if n >= 1 << 20 && n.is_multiple_of(1 << 20) {
        format!("{} MiB", n >> 20)
    } else {
        format!("{n} bytes")
    }
}

impl<R: Read> Read for Capped<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // One byte past the limit tells "exactly at the limit" from "over it".
        let want = buf.len().min(usize::try_from(self.left.saturating_add(1)).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        if n as u64 > self.left {
            return Err(too_big(self.limit));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

/// A writer into memory that fails past `limit` bytes (xz decodes into a writer).
struct CappedVec {
    out: Vec<u8>,
    limit: u64,
}

impl Write for CappedVec {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.out.len() as u64 + buf.len() as u64 > self.limit {
            return Err(too_big(self.limit));
        }
        self.out.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The contents of an index named `name`, decompressed by its extension, at most `limit` bytes.
pub fn decode_index(name: &str, input: impl io::BufRead, limit: u64) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    if name.ends_with(".gz") {
        Capped { inner: flate2::bufread::MultiGzDecoder::new(input), left: limit, limit }.read_to_end(&mut out)?;
    } else if name.ends_with(".xz") {
        let mut input = input;
        let mut w = CappedVec { out, limit };
        // lzma-rs reports our writer's error as its own: tell the bound from a corrupt file.
        if let Err(e) = lzma_rs::xz_decompress(&mut input, &mut w) {
            return Err(match e {
                lzma_rs::error::Error::IoError(io) => io,
                e => io::Error::other(format!("{e:?}")),
            });
        }
        out = w.out;
    } else if name.ends_with(".bz2") || name.ends_with(".lz4") {
        return Err(io::Error::other("this compression is not supported by the check"));
    } else if name.ends_with(".zst") {
        let d = ruzstd::decoding::StreamingDecoder::new(input).map_err(io::Error::other)?;
        Capped { inner: d, left: limit, limit }.read_to_end(&mut out)?;
    } else {
        Capped { inner: input, left: limit, limit }.read_to_end(&mut out)?;
    }
    Ok(out)
}

/// The contents of the index at `path`, decompressed by its extension, at most `limit` bytes.
fn read_index(path: &Path, limit: u64) -> Result<Vec<u8>> {
    let f = BufReader::new(File::open(path).with_context(|| format!("opening {}", path.display()))?);
    decode_index(&path.to_string_lossy(), f, limit).with_context(|| format!("decompressing {}", path.display()))
}

/// An uncompressed top-level index (Release, repomd.xml), at most `limit` bytes.
fn read_top(path: &Path, limit: u64) -> Result<Vec<u8>> {
    let f = BufReader::new(File::open(path).with_context(|| format!("opening {}", path.display()))?);
    let mut out = Vec::new();
    Capped { inner: f, left: limit, limit }.read_to_end(&mut out).with_context(|| format!("reading {}", path.display()))?;
    Ok(out)
}

/// The error for an index listing more than `max` entries.
fn too_many(max: usize) -> String {
    format!("lists more than {max} entries, the check's bound for one index")
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
        let text = match read_top(&rel, ctx.limits.top_bytes) {
            Ok(t) => String::from_utf8_lossy(&t).into_owned(),
            Err(e) => {
                ctx.r.errors.push(format!("{e:#}"));
                continue;
            }
        };
        ctx.r.indexes += 1;
        let entries = match release_sha256(&text, ctx.limits.entries) {
            Ok(e) => e,
            Err(e) => {
                ctx.r.errors.push(format!("{}: {e}", rel.display()));
                continue;
            }
        };
        let listed: BTreeSet<&str> = entries.iter().map(|(_, _, p)| p.as_str()).collect();
        for (hash, size, relpath) in &entries {
            let path = match inside(&dir, relpath) {
                Ok(p) => p,
                Err(why) => {
                    ctx.r.errors.push(format!("{}: names {relpath:?}: {why}, not a file of the suite", rel.display()));
                    continue;
                }
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
            let data = match read_index(&index, ctx.limits.index_bytes) {
                Ok(d) => d,
                Err(e) => {
                    ctx.r.errors.push(format!("{e:#}"));
                    continue;
                }
            };
            ctx.r.indexes += 1;
            let entries = match packages_entries(&String::from_utf8_lossy(&data), ctx.limits.entries) {
                Ok(e) => e,
                Err(e) => {
                    ctx.r.errors.push(format!("{}: {e}", index.display()));
                    continue;
                }
            };
            drop(data);
            for (filename, size, sha) in entries {
                let path = match inside(tree, &filename) {
                    Ok(p) => p,
                    Err(why) => {
                        ctx.r.errors.push(format!("{}: names {filename:?}: {why}, not a file of the archive", index.display()));
                        continue;
                    }
                };
                if ctx.wanted(&path) {
                    check_file(ctx.r, &index, &path, size, if ctx.deep { sha.as_deref() } else { None });
                }
            }
        }
    }
    Ok(())
}

/// (sha256, size, path) lines of a Release file's `SHA256:` field; at most `max` of them.
pub fn release_sha256(text: &str, max: usize) -> Result<Vec<(String, u64, String)>, String> {
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
                    if out.len() == max {
                        return Err(too_many(max));
                    }
                    out.push((hash.to_string(), size, path.to_string()));
                }
            }
        }
    }
    Ok(out)
}

/// (Filename, Size, SHA256) of one stanza of a Packages index.
pub type PackageEntry = (String, Option<u64>, Option<String>);

/// The [`PackageEntry`] of each stanza of a Packages index; at most `max` of them.
pub fn packages_entries(text: &str, max: usize) -> Result<Vec<PackageEntry>, String> {
    let mut out = Vec::new();
    for stanza in text.split("\n\n") {
        let field =
            |name: &str| stanza.lines().find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(':')).map(|v| v.trim().to_string()));
        if let Some(f) = field("Filename") {
            if out.len() == max {
                return Err(too_many(max));
            }
            out.push((f, field("Size").and_then(|s| s.parse().ok()), field("SHA256")));
        }
    }
    Ok(out)
}

/// One `<data>` entry of repomd.xml, or one `<package>` of primary.xml.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RpmEntry {
    pub kind: String,
    pub href: String,
    pub size: Option<u64>,
    pub sha256: Option<String>,
}

/// Entries of repomd.xml (`data`) or primary.xml (`package`), within `limits` (entries, depth).
pub fn rpm_entries(xml: &[u8], element: &[u8], limits: &Limits) -> Result<Vec<RpmEntry>> {
    let mut reader = quick_xml::Reader::from_reader(xml);
    let mut buf = Vec::new();
    let mut out = Vec::new();
    let mut depth = 0usize;
    let mut cur: Option<RpmEntry> = None;
    let mut in_checksum_sha256 = false;
    let mut in_size_text = false;
    loop {
        let ev = reader.read_event_into(&mut buf).context("parsing XML")?;
        match &ev {
            Event::Start(_) if depth == limits.xml_depth => {
                anyhow::bail!("elements nested deeper than {}, the check's bound (at byte {})", limits.xml_depth, reader.buffer_position())
            }
            Event::Start(_) => depth += 1,
            Event::End(_) => depth = depth.saturating_sub(1),
            _ => {}
        }
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
                n if n == element => {
                    if out.len() == limits.entries {
                        anyhow::bail!("{}", too_many(limits.entries));
                    }
                    out.extend(cur.take())
                }
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
    let xml = match read_top(repomd, ctx.limits.top_bytes) {
        Ok(x) => x,
        Err(e) => {
            ctx.r.errors.push(format!("{e:#}"));
            return Ok(());
        }
    };
    let data = match rpm_entries(&xml, b"data", ctx.limits) {
        Ok(d) => d,
        Err(e) => {
            ctx.r.errors.push(format!("{}: {e:#}", repomd.display()));
            return Ok(());
        }
    };
    for d in &data {
        let path = match inside(repo, &d.href) {
            Ok(p) => p,
            Err(why) => {
                ctx.r.errors.push(format!("{}: names {:?}: {why}, not a file of the repository", repomd.display(), d.href));
                continue;
            }
        };
        let before = ctx.r.errors.len();
        check_file(ctx.r, repomd, &path, d.size, d.sha256.as_deref());
        if d.kind != "primary" || ctx.r.errors.len() != before {
            continue;
        }
        let primary = match read_index(&path, ctx.limits.index_bytes).and_then(|x| rpm_entries(&x, b"package", ctx.limits)) {
            Ok(p) => p,
            Err(e) => {
                ctx.r.errors.push(format!("{}: {e:#}", path.display()));
                continue;
            }
        };
        ctx.r.indexes += 1;
        for p in primary {
            let pkg = match inside(repo, &p.href) {
                Ok(p) => p,
                Err(why) => {
                    ctx.r.errors.push(format!("{}: names {:?}: {why}, not a file of the repository", path.display(), p.href));
                    continue;
                }
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
        assert_eq!(inside(base, "Packages/a.rpm"), Ok(base.join("Packages/a.rpm")));
        assert!(inside(base, "../../../etc/shadow").unwrap_err().contains(".."));
        assert!(inside(base, "/etc/shadow").unwrap_err().contains("absolute"));
        assert!(inside(base, "a/../../x").unwrap_err().contains(".."));
        assert!(inside(base, "a/b\0c").unwrap_err().contains("NUL"));
        assert!(inside(base, "").is_err());
    }

    #[test]
    fn release_sha256_section_only() {
        let text = "Origin: x\nMD5Sum:\n 0123 10 main/binary-amd64/Packages\nSHA256:\n abcd 42 main/binary-amd64/Packages\n ef01 20 main/binary-amd64/Packages.gz\nAcquire-By-Hash: yes\n";
        assert_eq!(
            release_sha256(text, MAX_ENTRIES).unwrap(),
            vec![("abcd".into(), 42, "main/binary-amd64/Packages".into()), ("ef01".into(), 20, "main/binary-amd64/Packages.gz".into())]
        );
    }

    #[test]
    fn packages_stanzas() {
        let text = "Package: a\nFilename: pool/main/a/a_1_all.deb\nSize: 100\nSHA256: ff\n\nPackage: b\nFilename: pool/main/b/b.deb\n";
        assert_eq!(
            packages_entries(text, MAX_ENTRIES).unwrap(),
            vec![("pool/main/a/a_1_all.deb".into(), Some(100), Some("ff".into())), ("pool/main/b/b.deb".into(), None, None)]
        );
    }

    #[test]
    fn repomd_and_primary_entries() {
        let repomd = br#"<?xml version="1.0"?><repomd xmlns="http://linux.duke.edu/metadata/repo"><revision>1</revision>
<data type="primary"><checksum type="sha256">aa</checksum><open-checksum type="sha256">bb</open-checksum>
<location href="repodata/aa-primary.xml.gz"/><timestamp>1</timestamp><size>123</size><open-size>456</open-size></data></repomd>"#;
        let d = rpm_entries(repomd, b"data", &Limits::default()).unwrap();
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
        let p = rpm_entries(primary, b"package", &Limits::default()).unwrap();
        assert_eq!(
            p,
            vec![RpmEntry { kind: "rpm".into(), href: "Packages/x/x-1.noarch.rpm".into(), size: Some(789), sha256: Some("cc".into()) }]
        );
    }
}
