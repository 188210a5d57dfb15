//! Locating and loading the data files: `profiles/<name>.toml` and `hardware/<name>.toml`.
//!
//! A fleet may carry its own profiles and hardware beside the fleet file; those win over the
//! built-in ones (the repository's, `$MMBUILD_DATA`, or an installed share directory).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use mmconfig::{Hardware, Profile};
use serde::de::DeserializeOwned;

use crate::inventory::diag::{Diagnostic, Diagnostics, SourceFile};

/// The ordered list of directories searched for data files.
#[derive(Debug, Clone)]
pub struct DataDirs {
    /// Searched in order; the first directory with the file wins.
    pub search: Vec<PathBuf>,
    /// Where overlays/ is taken from (the override, or the built-in data directory).
    pub primary: PathBuf,
}

impl DataDirs {
    /// `--data DIR` alone, or: the fleet file's directory, then the built-in data directory.
    pub fn for_fleet(fleet: &Path, data_override: Option<&Path>) -> DataDirs {
        if let Some(dir) = data_override {
            return DataDirs { search: vec![dir.to_path_buf()], primary: dir.to_path_buf() };
        }
        let builtin = builtin_data_dir();
        let beside = fleet.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new(".")).to_path_buf();
        let mut search = vec![beside];
        if !search.iter().any(|d| same_dir(d, &builtin)) {
            search.push(builtin.clone());
        }
        DataDirs { search, primary: builtin }
    }

    /// Names available in `kind` (`profiles` or `hardware`), sorted, over all directories.
    pub fn known(&self, kind: &str) -> Vec<String> {
        let mut names: Vec<String> = self
            .search
            .iter()
            .filter_map(|d| std::fs::read_dir(d.join(kind)).ok())
            .flatten()
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let p = e.path();
                (p.extension()? == "toml").then(|| p.file_stem()?.to_str().map(String::from))?
            })
            .collect();
        names.sort();
        names.dedup();
        names
    }

    fn find(&self, kind: &str, name: &str) -> Option<PathBuf> {
        self.search.iter().map(|d| d.join(kind).join(format!("{name}.toml"))).find(|p| p.is_file())
    }
}

fn same_dir(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// `$MMBUILD_DATA`, else the source tree this binary was built from, else the directory
/// `../share/micromirror` beside the executable, else `/usr/share/micromirror`.
pub fn builtin_data_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("MMBUILD_DATA") {
        return PathBuf::from(dir);
    }
    let source_tree = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    if source_tree.join("profiles").is_dir() {
        return source_tree.canonicalize().unwrap_or(source_tree);
    }
    if let Some(share) = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|bin| bin.join("../share/micromirror")))
        .filter(|p| p.join("profiles").is_dir())
    {
        return share;
    }
    PathBuf::from("/usr/share/micromirror")
}

/// Loads each data file once and remembers the outcome, so a hardware model used by ten nodes
/// reports a broken file once.
#[derive(Debug)]
pub struct DataCache {
    pub dirs: DataDirs,
    profiles: BTreeMap<String, Option<Profile>>,
    hardware: BTreeMap<String, Option<Hardware>>,
}

/// What happened when a data file was looked up.
pub enum Lookup<T> {
    Found(T),
    /// No file with that name in any data directory.
    Unknown,
    /// The file exists but is broken; its errors were already reported.
    Broken,
}

impl DataCache {
    pub fn new(dirs: DataDirs) -> Self {
        DataCache { dirs, profiles: BTreeMap::new(), hardware: BTreeMap::new() }
    }

    pub fn profile(&mut self, name: &str, diags: &mut Diagnostics) -> Lookup<Profile> {
        if !self.profiles.contains_key(name) {
            let loaded = load_named::<Profile>(&self.dirs, "profiles", name, |p| &p.name, diags);
            self.profiles.insert(name.to_string(), loaded);
        }
        lookup(&self.profiles, &self.dirs, "profiles", name)
    }

    pub fn hardware(&mut self, name: &str, diags: &mut Diagnostics) -> Lookup<Hardware> {
        if !self.hardware.contains_key(name) {
            let loaded = load_named::<Hardware>(&self.dirs, "hardware", name, |h| &h.name, diags);
            if let Some(hw) = &loaded {
                check_hardware(hw, &self.dirs, diags);
            }
            self.hardware.insert(name.to_string(), loaded);
        }
        lookup(&self.hardware, &self.dirs, "hardware", name)
    }
}

fn lookup<T: Clone>(cache: &BTreeMap<String, Option<T>>, dirs: &DataDirs, kind: &str, name: &str) -> Lookup<T> {
    match cache.get(name) {
        Some(Some(v)) => Lookup::Found(v.clone()),
        _ if dirs.find(kind, name).is_none() => Lookup::Unknown,
        _ => Lookup::Broken,
    }
}

/// Parse `<dir>/<kind>/<name>.toml`; errors go to `diags` with the data file's position.
fn load_named<T: DeserializeOwned>(
    dirs: &DataDirs,
    kind: &str,
    name: &str,
    name_of: impl Fn(&T) -> &String,
    diags: &mut Diagnostics,
) -> Option<T> {
    let path = dirs.find(kind, name)?;
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) => {
            diags.push(Diagnostic::at_file(&path, format!("cannot read: {e}")));
            return None;
        }
    };
    let src = SourceFile::new(&path, &text);
    match toml::from_str::<T>(&text) {
        Ok(v) if name_of(&v) != name => {
            let span = text.find("name").map(|s| s..s + 4);
            diags.push(src.error(span, format!("name = \"{}\" must equal the file name \"{name}\"", name_of(&v))));
            None
        }
        Ok(v) => Some(v),
        Err(e) => {
            diags.push(src.error(e.span(), format!("{} (in this {kind} file)", e.message().trim())));
            None
        }
    }
}

/// Rules a hardware file must follow beyond its syntax.
fn check_hardware(hw: &Hardware, dirs: &DataDirs, diags: &mut Diagnostics) {
    let path = dirs.find("hardware", &hw.name).unwrap_or_default();
    if hw.firmware != "uefi" {
        diags.push(Diagnostic::at_file(&path, format!("firmware \"{}\" is not supported: only \"uefi\" images are built", hw.firmware)));
    }
    if hw.network.nic.count == 0 {
        diags.push(Diagnostic::at_file(&path, "network.nic.count must be at least 1".to_string()));
    }
    if hw.network.bond.is_none() && hw.network.nic.count > 1 {
        diags.push(Diagnostic::at_file(&path, "network.nic.count > 1 needs a [network.bond] section".to_string()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// README: power loss in the middle of a sync loses nothing served, because every new file
    /// waits in `.~tmp~` until the transfer ends. That holds for each shipped profile only if
    /// every rsync stage mm-sync runs for it carries `--delay-updates`.
    #[test]
    fn every_shipped_profile_syncs_with_delay_updates_in_every_stage() {
        let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let dirs = DataDirs::for_fleet(&repo.join("examples/fleet.toml"), Some(&repo));
        let names = dirs.known("profiles");
        assert!(names.len() >= 10, "{names:?}");
        let mut cache = DataCache::new(dirs);
        for name in names {
            let mut diags = Diagnostics::default();
            let Lookup::Found(p) = cache.profile(&name, &mut diags) else { panic!("profiles/{name}.toml: {diags}") };
            let stages = mm_sync::stages::rsync_stages(&p, &p.sync.upstream, Path::new("/srv/mirror/x"), "n.example", 0, 600);
            for (i, stage) in stages.iter().enumerate() {
                assert!(
                    stage.iter().any(|a| a == "--delay-updates"),
                    "profiles/{name}.toml: stage {} of {}: {stage:?}",
                    i + 1,
                    stages.len()
                );
            }
        }
    }
}
