//! The inventory: the fleet file and its data directories, read, checked and reported with file:line diagnostics.

pub mod check;
pub(crate) mod countries;
pub mod data;
pub mod diag;
pub mod fleet;
pub(crate) mod syntax;
