//! The generated documentation is current: mmbuild(1) and its bash completion (for operators' machines)
//! match the command line, and README lists the same exit codes as --help.
//! `MM_UPDATE_DOCS=1 cargo test -p mmbuild --test docs` rewrites the generated files.

use std::path::{Path, PathBuf};

use clap::CommandFactory;
use hostkit::testenv::{check_exit_codes_documented, check_generated};
use mmbuild::cli::Cli;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

const REGENERATE: &str = "cargo test -p mmbuild --test docs";

#[test]
fn man_page_and_completion_are_current() {
    // Without the commit in --version: the page must not change with every commit.
    let cmd = Cli::command().version(env!("CARGO_PKG_VERSION"));
    let mut man = Vec::new();
    clap_mangen::Man::new(cmd.clone()).section("1").manual("micro mirror").render(&mut man).unwrap();
    check_generated(&repo(), "man/mmbuild.1", &man, REGENERATE);
    let mut bash = Vec::new();
    clap_complete::generate(clap_complete::Shell::Bash, &mut cmd.clone(), "mmbuild", &mut bash);
    check_generated(&repo(), "man/mmbuild.bash", &bash, REGENERATE);
}

#[test]
fn readme_and_help_list_the_same_exit_codes() {
    check_exit_codes_documented(&repo(), "mmbuild", env!("CARGO_BIN_EXE_mmbuild"), &mmbuild::exit::Exit::help());
}
