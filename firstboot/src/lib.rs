//! mm-firstboot and mm-sync: bring a micro-mirror node to the state its configuration describes.

pub mod accounts;
pub mod apply;
pub mod config;
pub mod console;
pub mod files;
pub mod network;
pub mod probe;
pub mod public;
pub mod repocheck;
pub mod run;
pub mod services;
pub mod storage;
pub mod sync;
pub mod upstream;

#[cfg(test)]
mod testdata;
