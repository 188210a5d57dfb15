//! Making images: the common base OS, each node's UKI, ESP and GPT disk image, their manifest and host keys.

pub mod base;
pub mod build;
pub(crate) mod diskimage;
pub(crate) mod esp;
pub mod fat;
pub mod gpt;
pub(crate) mod hostkeys;
pub(crate) mod initramfs;
pub(crate) mod manifest;
pub(crate) mod reproducible;
pub(crate) mod uki;
