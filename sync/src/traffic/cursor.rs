//! Reading a log incrementally across restarts and logrotate (create or copytruncate), each line once.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Where the last run stopped in a log: the file (inode and the hash of its first line, which
/// tells a truncated-and-rewritten file from the one read) and the end of its last whole line.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cursor {
    pub inode: u64,
    pub offset: u64,
    /// SHA-256 of the first line (hex); None while the file had no whole line.
    pub first_line: Option<String>,
}

/// A line longer than this is not one nginx or rsyncd writes; it is skipped unread.
pub const MAX_LINE: usize = 64 * 1024;

/// What one read found beside the lines.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Progress {
    pub cursor: Cursor,
    /// Lines of the previous file read after a rotation.
    pub from_rotated: u64,
    /// The log was rotated and the rotated file was not found (compressed already, or removed):
    /// the lines written to it after the last run are lost to the counts.
    pub rotated_missing: Option<PathBuf>,
}

fn first_line(f: &mut File) -> io::Result<Option<String>> {
    f.seek(SeekFrom::Start(0))?;
    let mut buf = Vec::new();
    BufReader::new(f.take(MAX_LINE as u64)).read_until(b'\n', &mut buf)?;
    Ok(buf.ends_with(b"\n").then(|| format!("{:x}", Sha256::digest(&buf))))
}

/// Read the lines from `offset`; a last line without its newline is left for the next run
/// unless `to_end` (a rotated file: nothing more will be written to it). Returns the offset
/// after the last line handed out.
fn lines_from(f: File, offset: u64, to_end: bool, line: &mut dyn FnMut(Option<&[u8]>)) -> io::Result<(u64, u64)> {
    let mut r = BufReader::with_capacity(256 * 1024, f);
    r.seek(SeekFrom::Start(offset))?;
    let (mut pos, mut n) = (offset, 0u64);
    let mut buf = Vec::with_capacity(1024);
    loop {
        buf.clear();
        let got = r.by_ref().take(MAX_LINE as u64 + 1).read_until(b'\n', &mut buf)?;
        if got == 0 {
            break;
        }
        let whole = buf.ends_with(b"\n");
        if !whole && buf.len() > MAX_LINE {
            // Skip the rest of an overlong line a buffer at a time, then report it unread.
            pos += got as u64;
            loop {
                let avail = r.fill_buf()?;
                if avail.is_empty() {
                    break;
                }
                let (take, end) = match avail.iter().position(|&b| b == b'\n') {
                    Some(i) => (i + 1, true),
                    None => (avail.len(), false),
                };
                r.consume(take);
                pos += take as u64;
                if end {
                    break;
                }
            }
            n += 1;
            line(None);
            continue;
        }
        if !whole && !to_end {
            break;
        }
        pos += got as u64;
        n += 1;
        line(Some(buf.strip_suffix(b"\n").unwrap_or(&buf)));
    }
    Ok((pos, n))
}

/// The file logrotate moved the log to (`NAME.1`; with `delaycompress` it stays uncompressed
/// until the next rotation).
pub fn rotated(path: &Path) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(".1");
    PathBuf::from(p)
}

/// Hand every line of `path` written since `cur` to `line` (None: an overlong line, unread).
/// After a rotation the rest of the old file is read first: by inode when it was renamed
/// (create), by its first line when it was copied (copytruncate).
pub fn read(path: &Path, cur: &Cursor, line: &mut dyn FnMut(Option<&[u8]>)) -> io::Result<Progress> {
    let mut out = Progress::default();
    let current = match File::open(path) {
        Ok(f) => Some(f),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(e),
    };
    let (inode, len, first) = match &current {
        Some(f) => {
            let mut f = f.try_clone()?;
            (f.metadata()?.ino(), f.metadata()?.len(), first_line(&mut f)?)
        }
        None => (0, 0, None),
    };
    let same = current.is_some() && inode == cur.inode && len >= cur.offset && (cur.first_line == first || cur.offset == 0);
    let start = if same {
        cur.offset
    } else {
        if cur.offset > 0 || cur.inode != 0 {
            let old = rotated(path);
            match File::open(&old) {
                Ok(mut f) => {
                    let m = f.metadata()?;
                    let first_old = first_line(&mut f)?;
                    let is_ours =
                        m.len() >= cur.offset && (m.ino() == cur.inode || (cur.first_line.is_some() && first_old == cur.first_line));
                    if is_ours {
                        let (pos, n) = lines_from(f, cur.offset, true, line)?;
                        out.from_rotated = n;
                        // Between the rename and the new file's creation: stay on the old one.
                        out.cursor = Cursor { offset: pos, ..cur.clone() };
                    } else if cur.offset > 0 {
                        out.rotated_missing = Some(old);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    if cur.offset > 0 {
                        out.rotated_missing = Some(old);
                    }
                }
                Err(e) => return Err(e),
            }
        }
        0
    };
    let Some(f) = current else {
        return Ok(out);
    };
    let (offset, _) = lines_from(f, start, false, line)?;
    out.cursor = Cursor { inode, offset, first_line: if offset > 0 { first } else { None } };
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn append(p: &Path, s: &str) {
        std::fs::OpenOptions::new().create(true).append(true).open(p).unwrap().write_all(s.as_bytes()).unwrap();
    }

    fn take(p: &Path, cur: &Cursor) -> (Vec<String>, Progress) {
        let mut got = Vec::new();
        let r = read(p, cur, &mut |l| got.push(l.map_or("<long>".into(), |l| String::from_utf8_lossy(l).into_owned()))).unwrap();
        (got, r)
    }

    #[test]
    fn whole_lines_once_and_a_partial_line_waits() {
        let d = tempfile::tempdir().unwrap();
        let log = d.path().join("a.log");
        let (got, r) = take(&log, &Cursor::default());
        assert_eq!((got.len(), r.cursor.clone(), r.rotated_missing), (0, Cursor::default(), None), "no log yet");
        append(&log, "one\ntwo\nthr");
        let (got, r) = take(&log, &r.cursor);
        assert_eq!(got, ["one", "two"]);
        append(&log, "ee\n");
        let (got, r) = take(&log, &r.cursor);
        assert_eq!(got, ["three"]);
        let (got, _) = take(&log, &r.cursor);
        assert!(got.is_empty());
    }

    #[test]
    fn rotation_by_rename_then_create() {
        let d = tempfile::tempdir().unwrap();
        let log = d.path().join("a.log");
        append(&log, "1\n2\n");
        let (_, r) = take(&log, &Cursor::default());
        append(&log, "3\n");
        std::fs::rename(&log, rotated(&log)).unwrap();
        append(&rotated(&log), "4\n"); // the writer had it open until told to reopen
        append(&log, "5\n");
        let (got, r2) = take(&log, &r.cursor);
        assert_eq!((got, r2.from_rotated), (vec!["3".to_string(), "4".into(), "5".into()], 2));
        let (got, _) = take(&log, &r2.cursor);
        assert!(got.is_empty());
    }

    #[test]
    fn rotation_by_copytruncate() {
        let d = tempfile::tempdir().unwrap();
        let log = d.path().join("a.log");
        append(&log, "1\n2\n");
        let (_, r) = take(&log, &Cursor::default());
        append(&log, "3\n");
        std::fs::copy(&log, rotated(&log)).unwrap();
        std::fs::OpenOptions::new().write(true).truncate(true).open(&log).unwrap();
        // The new file grows past the old offset before the next run: its first line tells it apart.
        append(&log, "new 1\nnew 2\n");
        let (got, r2) = take(&log, &r.cursor);
        assert_eq!(got, ["3", "new 1", "new 2"]);
        assert_eq!(r2.cursor.inode, r.cursor.inode, "the same file, truncated");
    }

    #[test]
    fn a_lost_rotated_file_is_reported() {
        let d = tempfile::tempdir().unwrap();
        let log = d.path().join("a.log");
        append(&log, "1\n");
        let (_, r) = take(&log, &Cursor::default());
        std::fs::rename(&log, d.path().join("a.log.1.gz")).unwrap();
        append(&log, "2\n");
        let (got, r2) = take(&log, &r.cursor);
        assert_eq!((got, r2.rotated_missing), (vec!["2".to_string()], Some(rotated(&log))));
    }

    #[test]
    fn an_overlong_line_is_skipped_whole() {
        let d = tempfile::tempdir().unwrap();
        let log = d.path().join("a.log");
        append(&log, &format!("a\n{}\nb\n", "x".repeat(MAX_LINE * 5)));
        let (got, r) = take(&log, &Cursor::default());
        assert_eq!(got, ["a", "<long>", "b"]);
        assert_eq!(r.cursor.offset, std::fs::metadata(&log).unwrap().len());
    }
}
