//! The generated documentation is current: mm-sync(8) (and a page per verb, should it get any) and its bash completion (installed into every image)
//! match the command line, and docs/sync.md lists the same exit codes as --help.
//! `MM_UPDATE_DOCS=1 cargo test -p mm-sync --test docs` rewrites the generated files.

use std::path::{Path, PathBuf};

#[path = "../../tests/manpages.rs"]
mod manpages;

use clap::CommandFactory;
use hostkit::testenv::{check_exit_codes_documented, check_generated};
use mm_sync::cli::Cli;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

const REGENERATE: &str = "cargo test -p mm-sync --test docs";

#[test]
fn man_page_and_completion_are_current() {
    // Without the commit in --version: the page must not change with every commit.
    let cmd = Cli::command().version(env!("CARGO_PKG_VERSION"));
    manpages::check_man_pages(&repo(), "overlays/rootfs/usr/share/man/man8", cmd.clone(), "8", REGENERATE);
    let mut bash = Vec::new();
    clap_complete::generate(clap_complete::Shell::Bash, &mut cmd.clone(), "mm-sync", &mut bash);
    check_generated(&repo(), "overlays/rootfs/usr/share/bash-completion/completions/mm-sync", &bash, REGENERATE);
}

#[test]
fn readme_and_help_list_the_same_exit_codes() {
    check_exit_codes_documented(&repo(), "docs/sync.md", "mm-sync", env!("CARGO_BIN_EXE_mm-sync"), &mm_sync::Exit::help());
}
