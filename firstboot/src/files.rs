//! Files that firstboot renders for the node: path on the node, mode, contents, and which running
//! units read them.

use std::path::PathBuf;

pub use mmconfig::plan::Verb;

/// One file to install on the node. `path` is absolute on the node; appliers prefix `--root`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderedFile {
    pub path: PathBuf,
    pub mode: u32,
    pub contents: Vec<u8>,
    /// The running units that read this file only when (re)started or reloaded, and the verb that
    /// makes them take a change. Empty for files read afresh on every use (rsyncd.conf, keys in
    /// authorized_keys, sudoers, robots.txt, a sync's node.toml).
    pub read_by: Vec<(String, Verb)>,
}

impl RenderedFile {
    pub fn new(path: impl Into<PathBuf>, mode: u32, contents: impl Into<Vec<u8>>) -> Self {
        RenderedFile { path: path.into(), mode, contents: contents.into(), read_by: Vec::new() }
    }

    /// `unit` reads this file at start (or reload): a change to it needs `verb`.
    pub fn read_by(mut self, unit: &str, verb: Verb) -> Self {
        self.read_by.push((unit.to_string(), verb));
        self
    }
}
