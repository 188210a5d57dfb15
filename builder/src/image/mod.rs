//! Making images: the common base OS, each node's UKI, ESP and GPT disk image, their manifest and host keys.

pub mod base;
pub mod build;
pub mod diskimage;
pub mod esp;
pub mod fat;
pub mod gpt;
pub mod hostkeys;
pub mod initramfs;
pub mod manifest;
pub mod reproducible;
pub mod uki;
