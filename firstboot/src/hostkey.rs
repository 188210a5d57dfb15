//! The node's own ssh host key: delivered beside `node.toml`, installed as sshd's only host key.
//!
//! mmbuild makes one ed25519 key per node and publishes it in the fleet's `known_hosts`; the key
//! travels on the node's `MMCONFIG` partition (images) or is copied from the `OEMDRV` stick to
//! `/etc/micromirror/` (kickstart installs). firstboot runs before sshd and installs it as
//! `/etc/ssh/ssh_host_ed25519_key`; sshd's drop-in names only that key.

use std::path::Path;

use mmconfig::{HOST_KEY_FILE, HOST_KEY_PUB_FILE, SSH_HOST_KEY};

use crate::files::RenderedFile;

/// What came with the node configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivered {
    Key {
        private: Vec<u8>,
        public: Vec<u8>,
    },
    /// No key beside node.toml (an image from before per-node keys).
    Missing,
    /// A key file is there but unusable: why.
    Broken(String),
}

impl Delivered {
    /// The pair in `dir` (the directory that holds node.toml), checked for its shape.
    pub fn read_beside(dir: &Path) -> Delivered {
        let private = match std::fs::read(dir.join(HOST_KEY_FILE)) {
            Ok(p) => p,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Delivered::Missing,
            Err(e) => return Delivered::Broken(format!("reading {HOST_KEY_FILE}: {e}")),
        };
        let public = match std::fs::read(dir.join(HOST_KEY_PUB_FILE)) {
            Ok(p) => p,
            Err(e) => return Delivered::Broken(format!("reading {HOST_KEY_PUB_FILE}: {e}")),
        };
        Delivered::check(private, public)
    }

    pub fn check(private: Vec<u8>, public: Vec<u8>) -> Delivered {
        if !private.starts_with(b"-----BEGIN OPENSSH PRIVATE KEY-----\n") {
            return Delivered::Broken(format!("{HOST_KEY_FILE} is not an OpenSSH private key"));
        }
        if !public.starts_with(b"ssh-ed25519 ") || public.iter().filter(|&&b| b == b'\n').count() > 1 {
            return Delivered::Broken(format!("{HOST_KEY_PUB_FILE} is not one ssh-ed25519 public key"));
        }
        Delivered::Key { private, public }
    }

    /// The files to install for sshd (none unless a key was delivered).
    pub fn files(&self) -> Vec<RenderedFile> {
        match self {
            Delivered::Key { private, public } => vec![
                RenderedFile::new(SSH_HOST_KEY, 0o600, private.clone()),
                RenderedFile::new(format!("{SSH_HOST_KEY}.pub"), 0o644, public.clone()),
            ],
            _ => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PRIVATE: &[u8] = b"-----BEGIN OPENSSH PRIVATE KEY-----\nb3Blbn\n-----END OPENSSH PRIVATE KEY-----\n";

    #[test]
    fn a_delivered_pair_becomes_sshds_key_private_to_root() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(Delivered::read_beside(d.path()), Delivered::Missing);
        std::fs::write(d.path().join(HOST_KEY_FILE), PRIVATE).unwrap();
        assert!(matches!(Delivered::read_beside(d.path()), Delivered::Broken(e) if e.contains(".pub")));
        std::fs::write(d.path().join(HOST_KEY_PUB_FILE), "ssh-ed25519 AAAAC3 ci.mm.example.net\n").unwrap();
        let files = Delivered::read_beside(d.path()).files();
        assert_eq!(files.len(), 2);
        assert_eq!((files[0].path.to_str().unwrap(), files[0].mode, files[0].contents.as_slice()), (SSH_HOST_KEY, 0o600, PRIVATE));
        assert_eq!(files[1].mode, 0o644);
        std::fs::write(d.path().join(HOST_KEY_FILE), "node = 1\n").unwrap();
        assert!(matches!(Delivered::read_beside(d.path()), Delivered::Broken(_)));
        assert!(Delivered::Missing.files().is_empty());
    }
}
