//! The generated documentation is current: mmbuild(1) and its bash completion under `man/`
//! (for operators' machines) match the command line, and README lists the same exit codes as
//! --help. `MM_UPDATE_DOCS=1 cargo test -p mmbuild --test docs` rewrites the generated files.

use std::path::{Path, PathBuf};

use clap::CommandFactory;
use mmbuild::cli::Cli;
use mmbuild::exit::Exit;

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
    assert!(committed == generated, "{rel} is stale: run MM_UPDATE_DOCS=1 cargo test -p mmbuild --test docs");
}

#[test]
fn man_page_and_completion_are_current() {
    // Without the commit in --version: the page must not change with every commit.
    let cmd = Cli::command().version(env!("CARGO_PKG_VERSION"));
    let mut man = Vec::new();
    clap_mangen::Man::new(cmd.clone()).section("1").manual("micro mirror").render(&mut man).unwrap();
    check_generated("man/mmbuild.1", man);
    let mut bash = Vec::new();
    clap_complete::generate(clap_complete::Shell::Bash, &mut cmd.clone(), "mmbuild", &mut bash);
    check_generated("man/mmbuild.bash", bash);
}

#[test]
fn readme_and_help_list_the_same_exit_codes() {
    let help = Exit::help();
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    assert!(readme.contains(&format!("`mmbuild` {help}")), "README.md must carry this line:\n`mmbuild` {help}");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mmbuild")).arg("--help").output().unwrap();
    let shown = String::from_utf8_lossy(&out.stdout).split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(shown.contains(&help), "--help lacks the exit codes:\n{shown}");
}
