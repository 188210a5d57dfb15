//! Deterministic FAT volumes (ESP, MMCONFIG, OEMDRV) that pass `fsck.vfat -n`.
//!
//! Written with the `fatfs` crate, then repaired in place: fatfs 0.3.6 gives the `.` and `..`
//! entries of every subdirectory a long-name (LFN) entry (rust-fatfs#117), which dosfstools
//! reports as an error. The repair drops those LFN slots so `.` and `..` are entries 0 and 1,
//! and adds the volume-label entry to the root directory that blkid and fsck expect beside the
//! boot sector's label.

use std::fs::File;
use std::io::{Cursor, Read, Seek, SeekFrom, Write};

use anyhow::{bail, ensure, Context, Result};
use fatfs::{Date, DateTime, FatType, FileSystem, FormatVolumeOptions, FsOptions, Time, TimeProvider};

/// Every timestamp in our volumes: 1980-01-01 00:00:00, the FAT epoch, for reproducibility.
#[derive(Debug)]
struct FixedTime;

impl TimeProvider for FixedTime {
    fn get_current_date(&self) -> Date {
        Date { year: 1980, month: 1, day: 1 }
    }
    fn get_current_date_time(&self) -> DateTime {
        DateTime { date: self.get_current_date(), time: Time { hour: 0, min: 0, sec: 0, millis: 0 } }
    }
}

static FIXED_TIME: FixedTime = FixedTime;

/// One file to put into a volume; `path` uses `/` and may contain directories (FAT32 only).
pub struct FatFile<'a> {
    pub path: &'a str,
    pub data: &'a [u8],
}

/// Smallest FAT32 volume dosfstools accepts with 512-byte clusters (65525 clusters + overhead).
pub const FAT32_MIN_BYTES: u64 = 34 * 1024 * 1024;

/// Build a FAT volume of exactly `size` bytes into `out` (written from offset 0).
/// FAT32 when `size >= FAT32_MIN_BYTES`, else FAT16/FAT12 (flat volumes only).
pub fn build(out: &mut File, size: u64, label: &str, volume_id: u32, files: &[FatFile<'_>]) -> Result<()> {
    let bytes = build_bytes(size, label, volume_id, files)?;
    out.set_len(0)?;
    write_sparse_at(out, &bytes, 0).context("writing the FAT volume")
}

/// Write `bytes` at `offset`, skipping all-zero 64 KiB blocks so the file stays sparse
/// (the destination must read as zeros there: a fresh or truncated file).
pub fn write_sparse_at(out: &File, bytes: &[u8], offset: u64) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    const BLOCK: usize = 64 * 1024;
    let end = offset + bytes.len() as u64;
    if out.metadata()?.len() < end {
        out.set_len(end)?;
    }
    for (i, chunk) in bytes.chunks(BLOCK).enumerate() {
        if chunk.iter().any(|&b| b != 0) {
            out.write_all_at(chunk, offset + (i * BLOCK) as u64)?;
        }
    }
    Ok(())
}

/// Build a FAT volume in memory (see [`build`]).
pub fn build_bytes(size: u64, label: &str, volume_id: u32, files: &[FatFile<'_>]) -> Result<Vec<u8>> {
    let label11 = label_bytes(label)?;
    ensure!(size.is_multiple_of(512), "FAT volume size {size} is not a multiple of 512");
    let fat32 = size >= FAT32_MIN_BYTES;
    if !fat32 {
        if let Some(f) = files.iter().find(|f| f.path.contains('/')) {
            bail!("{}: directories need a FAT32 volume of at least {FAT32_MIN_BYTES} bytes", f.path);
        }
    }
    // Build in memory: our volumes are small (tens of MiB) and the repair pass needs random access.
    let mut img = Cursor::new(vec![0u8; size as usize]);
    let mut opts = FormatVolumeOptions::new().volume_label(label11).volume_id(volume_id);
    opts = if fat32 { opts.fat_type(FatType::Fat32).bytes_per_cluster(512) } else { opts.bytes_per_cluster(2048) };
    fatfs::format_volume(&mut img, opts).context("formatting the FAT volume")?;
    {
        let fs = FileSystem::new(&mut img, FsOptions::new().time_provider(&FIXED_TIME)).context("opening the new FAT volume")?;
        let mut sorted: Vec<&FatFile<'_>> = files.iter().collect();
        sorted.sort_by_key(|f| f.path);
        for f in sorted {
            let root = fs.root_dir();
            let parts: Vec<&str> = f.path.split('/').collect();
            for depth in 1..parts.len() {
                root.create_dir(&parts[..depth].join("/")).with_context(|| format!("creating directory for {}", f.path))?;
            }
            let mut file = root.create_file(f.path).with_context(|| format!("creating {}", f.path))?;
            file.truncate().ok();
            file.write_all(f.data).with_context(|| format!("writing {} ({} bytes)", f.path, f.data.len()))?;
        }
        fs.unmount().context("flushing the FAT volume")?;
    }
    let mut bytes = img.into_inner();
    repair(&mut bytes, &label11)?;
    Ok(bytes)
}

fn label_bytes(label: &str) -> Result<[u8; 11]> {
    ensure!(
        !label.is_empty()
            && label.len() <= 11
            && label.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_' || b == b'-'),
        "FAT volume label {label:?} must be 1-11 characters of A-Z, 0-9, '_' and '-'"
    );
    let mut out = [b' '; 11];
    out[..label.len()].copy_from_slice(label.as_bytes());
    Ok(out)
}

const ENTRY: usize = 32;
const ATTR_LFN: u8 = 0x0F;
const ATTR_VOLUME: u8 = 0x08;
const ATTR_DIR: u8 = 0x10;

struct Geometry {
    fat32: bool,
    bytes_per_sector: usize,
    cluster: usize,
    fat_start: usize,
    /// FAT12/16: the fixed root directory region.
    root_region: (usize, usize),
    data_start: usize,
    root_cluster: u32,
}

fn geometry(b: &[u8]) -> Geometry {
    let u16_at = |o: usize| u16::from_le_bytes([b[o], b[o + 1]]) as usize;
    let u32_at = |o: usize| u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
    let bps = u16_at(11);
    let spc = b[13] as usize;
    let reserved = u16_at(14);
    let fats = b[16] as usize;
    let root_entries = u16_at(17);
    let fat16_size = u16_at(22);
    let fat32 = fat16_size == 0;
    let fat_size = if fat32 { u32_at(36) as usize } else { fat16_size };
    let fat_start = reserved * bps;
    let root_start = fat_start + fats * fat_size * bps;
    let root_len = root_entries * ENTRY;
    let root_len_sectors = root_len.div_ceil(bps) * bps;
    Geometry {
        fat32,
        bytes_per_sector: bps,
        cluster: bps * spc,
        fat_start,
        root_region: (root_start, root_len),
        data_start: root_start + if fat32 { 0 } else { root_len_sectors },
        root_cluster: if fat32 { u32_at(44) } else { 0 },
    }
}

impl Geometry {
    fn chain(&self, b: &[u8], first: u32) -> Vec<usize> {
        let mut out = Vec::new();
        let mut c = first;
        while (2..0x0FFF_FFF7).contains(&c) && out.len() < b.len() / self.cluster {
            out.push(self.data_start + (c as usize - 2) * self.cluster);
            let o = self.fat_start + c as usize * 4;
            c = u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]) & 0x0FFF_FFFF;
        }
        out
    }
}

/// Fix fatfs's directory quirks in place (see the module header).
fn repair(b: &mut [u8], label: &[u8; 11]) -> Result<()> {
    let g = geometry(b);
    ensure!(g.bytes_per_sector == 512, "unexpected FAT sector size {}", g.bytes_per_sector);
    let root: Vec<(usize, usize)> =
        if g.fat32 { g.chain(b, g.root_cluster).into_iter().map(|o| (o, g.cluster)).collect() } else { vec![g.root_region] };
    add_volume_label(b, &root, label)?;
    if g.fat32 {
        let mut pending: Vec<(u32, bool)> = subdirs(b, &root).into_iter().map(|c| (c, true)).collect();
        while let Some((first, parent_is_root)) = pending.pop() {
            let chunks: Vec<(usize, usize)> = g.chain(b, first).into_iter().map(|o| (o, g.cluster)).collect();
            fix_dots(b, &chunks, parent_is_root);
            pending.extend(subdirs(b, &chunks).into_iter().map(|c| (c, false)));
        }
        write_free_count(b, &g);
    }
    Ok(())
}

/// FAT32 keeps a free-cluster hint in the FSInfo sector; fatfs leaves it "unknown", which
/// fsck reports. Count the free FAT entries and record them.
fn write_free_count(b: &mut [u8], g: &Geometry) {
    let fsinfo = u16::from_le_bytes([b[48], b[49]]) as usize * g.bytes_per_sector;
    let total_sectors = u32::from_le_bytes([b[32], b[33], b[34], b[35]]) as usize;
    let clusters = (total_sectors * g.bytes_per_sector - g.data_start) / g.cluster;
    let free = (2..clusters + 2)
        .filter(|c| {
            let o = g.fat_start + c * 4;
            u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]) & 0x0FFF_FFFF == 0
        })
        .count() as u32;
    b[fsinfo + 488..fsinfo + 492].copy_from_slice(&free.to_le_bytes());
}

fn read_dir(b: &[u8], chunks: &[(usize, usize)]) -> Vec<[u8; ENTRY]> {
    let mut entries = Vec::new();
    for &(off, len) in chunks {
        for e in b[off..off + len].chunks_exact(ENTRY) {
            entries.push(e.try_into().expect("32-byte chunk"));
        }
    }
    entries
}

fn write_dir(b: &mut [u8], chunks: &[(usize, usize)], entries: &[[u8; ENTRY]]) {
    let mut it = entries.iter();
    for &(off, len) in chunks {
        for slot in b[off..off + len].chunks_exact_mut(ENTRY) {
            slot.copy_from_slice(it.next().unwrap_or(&[0u8; ENTRY]));
        }
    }
}

fn live(entries: &[[u8; ENTRY]]) -> impl Iterator<Item = &[u8; ENTRY]> {
    entries.iter().take_while(|e| e[0] != 0)
}

/// First clusters of the subdirectories listed in a directory (not `.`/`..`).
fn subdirs(b: &[u8], chunks: &[(usize, usize)]) -> Vec<u32> {
    live(&read_dir(b, chunks))
        .filter(|e| e[0] != 0xE5 && e[11] != ATTR_LFN && e[11] & ATTR_DIR != 0 && e[0] != b'.')
        .map(|e| (u32::from(u16::from_le_bytes([e[20], e[21]])) << 16) | u32::from(u16::from_le_bytes([e[26], e[27]])))
        .collect()
}

/// Drop the LFN slots in front of `.`/`..`; a `..` that points at the root must say cluster 0.
fn fix_dots(b: &mut [u8], chunks: &[(usize, usize)], parent_is_root: bool) {
    let entries = read_dir(b, chunks);
    let live: Vec<[u8; ENTRY]> = live(&entries).copied().collect();
    let mut kept: Vec<[u8; ENTRY]> = Vec::with_capacity(live.len());
    for e in live {
        let is_dot = e[11] != ATTR_LFN && (&e[..11] == b".          " || &e[..11] == b"..         ");
        let mut e = e;
        if is_dot {
            while kept.last().is_some_and(|p| p[11] == ATTR_LFN) {
                kept.pop();
            }
            if parent_is_root && e[1] == b'.' {
                e[20..22].fill(0);
                e[26..28].fill(0);
            }
        }
        kept.push(e);
    }
    write_dir(b, chunks, &kept);
}

fn add_volume_label(b: &mut [u8], root: &[(usize, usize)], label: &[u8; 11]) -> Result<()> {
    let mut entries = read_dir(b, root);
    let used = live(&entries).count();
    if live(&entries).any(|e| e[11] == ATTR_VOLUME) {
        return Ok(());
    }
    ensure!(used < entries.len(), "no room for the volume label in the root directory");
    // The label entry goes first, where DOS and blkid look for it.
    let mut label_entry = [0u8; ENTRY];
    label_entry[..11].copy_from_slice(label);
    label_entry[11] = ATTR_VOLUME;
    label_entry[24] = 0x21; // date field: 1980-01-01
    entries.insert(0, label_entry);
    entries.truncate(entries.len() - 1);
    write_dir(b, root, &entries);
    Ok(())
}

/// Read a file back out of a volume image (tests and verification).
pub fn read_file(volume: &mut File, path: &str) -> Result<Vec<u8>> {
    volume.seek(SeekFrom::Start(0))?;
    let fs = FileSystem::new(volume, FsOptions::new()).context("opening FAT volume")?;
    let mut data = Vec::new();
    fs.root_dir().open_file(path).with_context(|| format!("opening {path} in the FAT volume"))?.read_to_end(&mut data)?;
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn build_to_file(size: u64, label: &str, files: &[FatFile<'_>]) -> tempfile::NamedTempFile {
        let mut tmp = tempfile::NamedTempFile::new().unwrap();
        build(tmp.as_file_mut(), size, label, 0x1234_5678, files).unwrap();
        tmp
    }

    fn fsck_clean(path: &std::path::Path) {
        let out = Command::new("fsck.vfat").arg("-n").arg(path).output().expect("fsck.vfat (dosfstools) is installed");
        assert!(
            out.status.success(),
            "fsck.vfat -n failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout).to_lowercase();
        assert!(!text.contains("differences") && !text.contains("will be"), "fsck wanted changes:\n{text}");
    }

    fn blkid(path: &std::path::Path, tag: &str) -> String {
        let out = Command::new("blkid").args(["-p", "-o", "value", "-s", tag]).arg(path).output().unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    #[test]
    fn nested_fat32_volume_passes_fsck_and_reads_back() {
        let big = vec![0xA5u8; 300_000];
        let files = [
            FatFile { path: "EFI/BOOT/BOOTX64.EFI", data: &big },
            FatFile { path: "EFI/Linux/notes.txt", data: b"hello" },
            FatFile { path: "loader/entries/a-long-file-name.conf", data: b"title x\n" },
            FatFile { path: "top.txt", data: b"top" },
        ];
        let mut tmp = build_to_file(64 * 1024 * 1024, "ESP", &files);
        fsck_clean(tmp.path());
        assert_eq!(blkid(tmp.path(), "TYPE"), "vfat");
        assert_eq!(blkid(tmp.path(), "LABEL"), "ESP");
        assert_eq!(read_file(tmp.as_file_mut(), "EFI/BOOT/BOOTX64.EFI").unwrap(), big);
        assert_eq!(read_file(tmp.as_file_mut(), "loader/entries/a-long-file-name.conf").unwrap(), b"title x\n");
    }

    #[test]
    fn small_flat_volume_has_exact_label_and_passes_fsck() {
        let mut tmp = build_to_file(4 * 1024 * 1024, "MMCONFIG", &[FatFile { path: "node.toml", data: b"schema = 1\n" }]);
        fsck_clean(tmp.path());
        assert_eq!(blkid(tmp.path(), "LABEL"), "MMCONFIG");
        assert_eq!(read_file(tmp.as_file_mut(), "node.toml").unwrap(), b"schema = 1\n");
    }

    #[test]
    fn same_inputs_give_the_same_bytes() {
        let files = [FatFile { path: "EFI/BOOT/BOOTX64.EFI", data: b"x" }, FatFile { path: "ks.cfg", data: b"y" }];
        let a = std::fs::read(build_to_file(40 * 1024 * 1024, "OEMDRV", &files).path()).unwrap();
        let b = std::fs::read(build_to_file(40 * 1024 * 1024, "OEMDRV", &files).path()).unwrap();
        assert!(a == b, "two builds differ");
    }

    #[test]
    fn bad_labels_and_nested_small_volumes_are_refused() {
        let mut tmp = tempfile::NamedTempFile::new().unwrap();
        assert!(build(tmp.as_file_mut(), 4 << 20, "lower", 1, &[]).is_err());
        assert!(build(tmp.as_file_mut(), 4 << 20, "TWELVECHARSX", 1, &[]).is_err());
        let err = build(tmp.as_file_mut(), 4 << 20, "OK", 1, &[FatFile { path: "a/b", data: b"" }]).unwrap_err();
        assert!(err.to_string().contains("need a FAT32 volume"), "{err}");
    }
}
