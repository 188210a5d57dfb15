//! The documentation is true: mmbuild's man pages (one per verb) and bash completion match the
//! command line, README.md lists --help's exit codes and an inventory that passes check, every link
//! and cited man page exists, and mmbuild-fleet.toml(5) documents exactly the keys check accepts.
//! `MM_UPDATE_DOCS=1 cargo test -p mmbuild --test docs` rewrites the generated files.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

#[path = "../../tests/manpages.rs"]
mod manpages;

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
    manpages::check_man_pages(&repo(), "man", cmd.clone(), "1", REGENERATE);
    let mut bash = Vec::new();
    clap_complete::generate(clap_complete::Shell::Bash, &mut cmd.clone(), "mmbuild", &mut bash);
    check_generated(&repo(), "man/mmbuild.bash", &bash, REGENERATE);
}

#[test]
fn readme_and_help_list_the_same_exit_codes() {
    check_exit_codes_documented(&repo(), "README.md", "mmbuild", env!("CARGO_BIN_EXE_mmbuild"), &mmbuild::exit::Exit::help());
}

/// README.md's minimal inventory, its first ```toml block.
fn readme_inventory() -> String {
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    readme.split("```toml\n").nth(1).and_then(|rest| rest.split("```").next()).expect("README.md has a ```toml block").to_string()
}

/// `mmbuild check` on fleet `text`: whether it passed, and its stderr.
fn check_fleet(text: &str) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let fleet = dir.path().join("fleet.toml");
    std::fs::write(&fleet, text).unwrap();
    let out =
        std::process::Command::new(env!("CARGO_BIN_EXE_mmbuild")).arg("check").arg(&fleet).env("MMBUILD_DATA", repo()).output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn readme_minimal_inventory_passes_check() {
    let (ok, stderr) = check_fleet(&readme_inventory());
    assert!(ok, "README.md's minimal inventory fails mmbuild check:\n{stderr}");
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

/// The keys each `.SS` subsection of a hand-written page documents: the `.B KEY` line after each
/// `.TP` or `.TQ`.
fn documented_keys(page: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut section = None;
    let mut tagged = false;
    for line in page.lines() {
        if let Some(name) = line.strip_prefix(".SS ") {
            section = Some(name.trim_matches('"').to_string());
            out.entry(name.trim_matches('"').to_string()).or_default();
        } else if line.starts_with(".SH ") {
            section = None;
        } else if let (true, Some(s), Some(key)) = (tagged, &section, line.strip_prefix(".B ")) {
            out.get_mut(s).unwrap().insert(key.trim().to_string());
        }
        tagged = line == ".TP" || line == ".TQ";
    }
    out
}

/// mmbuild-fleet.toml(5) is written by hand: it stays true because each of its tables documents
/// exactly the keys `mmbuild check` accepts there. Each probe puts an unknown key into one table
/// of README.md's minimal inventory, and serde's refusal lists that table's keys.
#[test]
fn fleet_toml_page_documents_exactly_the_keys_mmbuild_accepts() {
    let page = std::fs::read_to_string(repo().join("man/mmbuild-fleet.toml.5")).unwrap();
    let documented = documented_keys(&page);
    let base = readme_inventory();
    let after_fleet = |line: &str| base.replacen("[fleet]\n", &format!("[fleet]\n{line}\n"), 1);
    let append = |line: &str| format!("{base}{line}\n");
    let probes: Vec<(&str, String)> = vec![
        ("[fleet]", after_fleet("mm_probe = 1")),
        ("organisation", after_fleet(r#"organisation = { name = "Org", url = "https://org.example/", mm_probe = 1 }"#)),
        ("registration_contact", after_fleet(r#"registration_contact = { name = "Ops", email = "ops@example.net", mm_probe = 1 }"#)),
        ("[defaults]", append("[defaults]\nmm_probe = 1")),
        ("[[node]]", append("mm_probe = 1")),
        ("sponsor", base.replacen("sponsor = { ", "sponsor = { mm_probe = 1, ", 1)),
        ("ipv4, ipv6", base.replacen("ipv4 = { ", "ipv4 = { mm_probe = 1, ", 1)),
        ("ipv4, ipv6", base.replacen("ipv6 = { ", "ipv6 = { mm_probe = 1, ", 1)),
        ("interface", append(r#"interface = { mac = "52:54:00:12:34:56", mm_probe = 1 }"#)),
        ("location", append(r#"location = { country = "NL", mm_probe = 1 }"#)),
    ];
    let mut wrong = Vec::new();
    for (table, fleet) in &probes {
        assert_ne!(fleet, &base, "the probe for {table} changed nothing: README.md's inventory no longer has what it replaces");
        let (ok, stderr) = check_fleet(fleet);
        let refusal = stderr.lines().find(|l| l.contains("unknown field `mm_probe`"));
        let refusal = refusal.unwrap_or_else(|| panic!("mmbuild check did not refuse mm_probe in {table} (passed: {ok}):\n{stderr}"));
        let expected = refusal.split_once("expected").map(|(_, list)| list).unwrap_or("");
        let accepted: BTreeSet<String> = expected.split('`').skip(1).step_by(2).map(String::from).collect();
        assert!(!accepted.is_empty(), "no key list in: {refusal}");
        let on_page = documented.get(*table).cloned().unwrap_or_default();
        if accepted != on_page {
            wrong.push(format!(
                "{table}: undocumented {:?}, documented but refused {:?}",
                accepted.difference(&on_page).collect::<Vec<_>>(),
                on_page.difference(&accepted).collect::<Vec<_>>()
            ));
        }
    }
    assert!(wrong.is_empty(), "man/mmbuild-fleet.toml.5 disagrees with mmbuild check:\n{}", wrong.join("\n"));
}

/// Every man page in the repository, by its name as cited (`mmbuild-build(1)`), with its text.
fn man_pages() -> BTreeMap<String, String> {
    let repo = repo();
    let mut out = BTreeMap::new();
    for dir in [repo.join("man"), repo.join("overlays/rootfs/usr/share/man/man8")] {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if let Some((stem, section)) = name.rsplit_once('.').filter(|(_, s)| s.len() == 1 && s.chars().all(|c| c.is_ascii_digit())) {
                out.insert(format!("{stem}({section})"), std::fs::read_to_string(&path).unwrap());
            }
        }
    }
    out
}

/// The man pages `text` cites, as `name(N)`. Roff's `\-` and font escapes are undone first, and
/// `.BR name (N)` joined.
fn citations(text: &str) -> BTreeSet<String> {
    let text = text.replace("\\-", "-").replace("\\fB", "").replace("\\fI", "").replace("\\fR", "").replace("\\fP", "");
    let text: String = text
        .lines()
        .map(|l| if l.starts_with(".BR ") || l.starts_with(".IR ") { l.replacen(" (", "(", 1) } else { l.to_string() } + "\n")
        .collect();
    let bytes = text.as_bytes();
    let mut out = BTreeSet::new();
    for (i, _) in text.match_indices('(') {
        let cited = bytes.get(i + 1).is_some_and(|c| (b'1'..=b'8').contains(c)) && bytes.get(i + 2) == Some(&b')');
        let start = text[..i].rfind(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c))).map_or(0, |p| p + 1);
        let name = text[start..i].trim_start_matches(|c: char| !c.is_ascii_lowercase());
        if cited && !name.is_empty() {
            out.insert(format!("{name}({})", bytes[i + 1] as char));
        }
    }
    out
}

/// Pages of other projects the docs cite; every other cited page must be in this repository.
const SYSTEM_PAGES: &[&str] = &["syncfs(2)", "unshare(2)"];

/// README.md, docs/, the man pages and every --help text cite only pages that exist: ours in
/// `man/` or the image's `/usr/share/man`, others' from SYSTEM_PAGES.
#[test]
fn every_cited_man_page_exists() {
    let repo = repo();
    let pages = man_pages();
    let mut sources: Vec<(String, String)> = vec![("README.md".into(), std::fs::read_to_string(repo.join("README.md")).unwrap())];
    for entry in std::fs::read_dir(repo.join("docs")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "md") {
            sources.push((format!("docs/{}", path.file_name().unwrap().to_string_lossy()), std::fs::read_to_string(&path).unwrap()));
        }
    }
    sources.extend(pages.iter().map(|(name, text)| (name.clone(), text.clone())));
    for (binary, cmd) in [
        ("mmbuild", mmbuild::cli::Cli::command()),
        ("mm-firstboot", mm_firstboot::cli::Cli::command()),
        ("mm-sync", mm_sync::cli::Cli::command()),
    ] {
        sources.extend(manpages::help_texts(cmd).into_iter().map(|h| (format!("{binary} --help"), h)));
    }
    let mut missing = Vec::new();
    let mut cited = 0;
    for (source, text) in &sources {
        for page in citations(text) {
            cited += 1;
            if !pages.contains_key(&page) && !SYSTEM_PAGES.contains(&page.as_str()) {
                missing.push(format!("{source} cites {page}"));
            }
        }
    }
    assert!(cited > 20, "only {cited} citations found: is the pattern still right?");
    assert!(
        missing.is_empty(),
        "cited man pages that do not exist (generate them, or list another project's in SYSTEM_PAGES):\n{}",
        missing.join("\n")
    );
}

/// Every man page renders without a groff warning (a bad macro, a broken escape).
#[test]
fn man_pages_render_without_warnings() {
    if hostkit::testenv::need(&[hostkit::testenv::Need::Tool("groff")]).is_err() {
        return;
    }
    let repo = repo();
    let mut warned = Vec::new();
    for dir in [repo.join("man"), repo.join("overlays/rootfs/usr/share/man/man8")] {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e.len() == 1) {
                let out = std::process::Command::new("groff").args(["-t", "-man", "-ww", "-z"]).arg(&path).output().unwrap();
                if !out.status.success() || !out.stderr.is_empty() {
                    warned.push(format!("{}: {}", path.display(), String::from_utf8_lossy(&out.stderr)));
                }
            }
        }
    }
    assert!(warned.is_empty(), "groff warns:\n{}", warned.join("\n"));
}
