//! mm-firstboot and mm-sync: bring a micro-mirror node to the state its configuration describes.

pub mod files;
pub mod network;
pub mod storage;

#[cfg(test)]
mod testdata;
