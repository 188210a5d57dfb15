//! The generated documentation is current: mmbuild(1) and its bash completion (for operators' machines)
//! match the command line, and README.md lists the same exit codes as --help.
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
    check_exit_codes_documented(&repo(), "README.md", "mmbuild", env!("CARGO_BIN_EXE_mmbuild"), &mmbuild::exit::Exit::help());
}

#[test]
fn readme_minimal_inventory_passes_check() {
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let toml = readme.split("```toml\n").nth(1).and_then(|rest| rest.split("```").next()).expect("README.md has a ```toml block");
    let dir = tempfile::tempdir().unwrap();
    let fleet = dir.path().join("fleet.toml");
    std::fs::write(&fleet, toml).unwrap();
    let out =
        std::process::Command::new(env!("CARGO_BIN_EXE_mmbuild")).arg("check").arg(&fleet).env("MMBUILD_DATA", repo()).output().unwrap();
    assert!(out.status.success(), "README.md's minimal inventory fails mmbuild check:\n{}", String::from_utf8_lossy(&out.stderr));
}

/// GitHub's anchor for a heading: lower case, punctuation dropped, spaces as hyphens.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// The headings of a Markdown page outside code blocks, as anchors.
fn anchors(text: &str) -> Vec<String> {
    let mut fence = false;
    let mut out = Vec::new();
    for line in text.lines() {
        if line.starts_with("```") {
            fence = !fence;
        } else if !fence && line.starts_with('#') {
            out.push(anchor(line.trim_start_matches('#')));
        }
    }
    out
}

#[test]
fn every_relative_link_in_readme_and_docs_resolves() {
    let repo = repo();
    let mut pages = vec![repo.join("README.md")];
    for entry in std::fs::read_dir(repo.join("docs")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "md") {
            pages.push(path);
        }
    }
    let mut broken = Vec::new();
    let mut checked = 0;
    for page in &pages {
        let text = std::fs::read_to_string(page).unwrap();
        for target in text.split("](").skip(1).filter_map(|rest| rest.split_once(')').map(|(t, _)| t)) {
            if target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            checked += 1;
            let (file, fragment) = target.split_once('#').unwrap_or((target, ""));
            let path = if file.is_empty() { page.clone() } else { page.parent().unwrap().join(file) };
            let Ok(body) = std::fs::read_to_string(&path) else {
                broken.push(format!("{}: {target}: no such file", page.display()));
                continue;
            };
            if !fragment.is_empty() && !anchors(&body).iter().any(|a| a == fragment) {
                broken.push(format!("{}: {target}: no heading with that anchor", page.display()));
            }
        }
    }
    assert!(checked > 20, "only {checked} links found: is the link pattern still right?");
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}
