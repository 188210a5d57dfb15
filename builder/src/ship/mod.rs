//! Shipping a node: its kickstart and OEMDRV volume, the install stick, and writing an image to a disk.

pub mod kickstart;
pub mod oemdrv;
pub mod stick;
pub mod write;
