//! The generated documentation is current: the man page and bash completion in overlays/rootfs
//! (installed into every image) match the command line, and README lists the same exit codes as
//! --help. `MM_UPDATE_DOCS=1 cargo test -p mm-firstboot --test docs` rewrites the generated files.

use std::path::{Path, PathBuf};

use clap::CommandFactory;
use mm_firstboot::cli::Cli;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn check_generated(rel: &str, generated: Vec<u8>) {
    let path = repo().join(rel);
    if std::env::var_os("MM_UPDATE_DOCS").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &generated).unwrap();
    }
    let committed = std::fs::read(&path).unwrap_or_default();
    assert!(committed == generated, "{rel} is stale: run MM_UPDATE_DOCS=1 cargo test -p mm-firstboot --test docs");
}

#[test]
fn man_page_and_completion_are_current() {
    // Without the commit in --version: the page must not change with every commit.
    let cmd = Cli::command().version(env!("CARGO_PKG_VERSION"));
    let mut man = Vec::new();
    clap_mangen::Man::new(cmd.clone()).section("8").manual("micro mirror").render(&mut man).unwrap();
    check_generated("overlays/rootfs/usr/share/man/man8/mm-firstboot.8", man);
    let mut bash = Vec::new();
    clap_complete::generate(clap_complete::Shell::Bash, &mut cmd.clone(), "mm-firstboot", &mut bash);
    check_generated("overlays/rootfs/usr/share/bash-completion/completions/mm-firstboot", bash);
}

#[test]
fn readme_and_help_list_the_same_exit_codes() {
    let help = mm_firstboot::Exit::help();
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    assert!(readme.contains(&format!("`mm-firstboot` {help}")), "README.md must carry this line:\n`mm-firstboot` {help}");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mm-firstboot")).arg("--help").output().unwrap();
    let shown = String::from_utf8_lossy(&out.stdout).split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(shown.contains(&help), "--help lacks the exit codes:\n{shown}");
}
