//! Files that firstboot renders for the node: path on the node, mode and contents.

use std::path::PathBuf;

/// One file to install on the node. `path` is absolute on the node; appliers prefix `--root`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderedFile {
    pub path: PathBuf,
    pub mode: u32,
    pub contents: Vec<u8>,
}

impl RenderedFile {
    pub fn new(path: impl Into<PathBuf>, mode: u32, contents: impl Into<Vec<u8>>) -> Self {
        RenderedFile { path: path.into(), mode, contents: contents.into() }
    }
}
