//! Man pages from a clap command line: the binary's page and one per verb (`mmbuild-build(1)`,
//! `mm-firstboot-os-install(8)`), the pages clap_mangen's SUBCOMMANDS section names. Shared by the
//! crates' `tests/docs.rs` through `#[path]`, so the three binaries' pages are made one way.

use std::path::Path;

/// Renders `cmd`'s page and every visible verb's (recursively) into `repo/dir` as NAME.SECTION,
/// checks each against the committed file, and refuses a committed `BINARY-*.SECTION` page no
/// verb makes any more (with `MM_UPDATE_DOCS`, it is removed). The list of pages made.
#[allow(dead_code)] // each crate's docs test uses a part
pub fn check_man_pages(repo: &Path, dir: &str, cmd: clap::Command, section: &str, regenerate: &str) -> Vec<String> {
    // `help` is a verb of the command line, not a page: clap_mangen would cite BINARY-help.
    let mut cmd = cmd.disable_help_subcommand(true);
    cmd.build();
    let binary = cmd.get_name().to_string();
    // Every page names the binary and its version, as the binary's own page does.
    let source = format!("{binary} {}", cmd.get_version().unwrap_or_default());
    let mut made = Vec::new();
    let mut stack = vec![cmd];
    while let Some(c) = stack.pop() {
        stack.extend(c.get_subcommands().filter(|s| !s.is_hide_set()).cloned());
        let man = clap_mangen::Man::new(c).section(section).manual("micro mirror").source(source.clone());
        let mut page = Vec::new();
        man.render(&mut page).expect("rendering a man page");
        let file = man.get_filename();
        hostkit::testenv::check_generated(repo, &format!("{dir}/{file}"), &page, regenerate);
        made.push(file);
    }
    let stale: Vec<String> = std::fs::read_dir(repo.join(dir))
        .expect("reading the man page directory")
        .map(|e| e.expect("reading the man page directory").file_name().to_string_lossy().into_owned())
        .filter(|f| f.starts_with(&format!("{binary}-")) && f.ends_with(&format!(".{section}")) && !made.contains(f))
        .collect();
    for f in &stale {
        if std::env::var_os("MM_UPDATE_DOCS").is_some() {
            std::fs::remove_file(repo.join(dir).join(f)).expect("removing a stale man page");
        } else {
            panic!("{dir}/{f} belongs to no verb of {binary} any more: run MM_UPDATE_DOCS=1 {regenerate}");
        }
    }
    made.sort();
    made
}

/// Every help text of `cmd` and its verbs, as `--help` shows them: what they cite must exist.
#[allow(dead_code)]
pub fn help_texts(cmd: clap::Command) -> Vec<String> {
    let mut cmd = cmd;
    cmd.build();
    let mut out = Vec::new();
    let mut stack = vec![cmd];
    while let Some(mut c) = stack.pop() {
        stack.extend(c.get_subcommands().cloned());
        out.push(c.render_long_help().to_string());
    }
    out
}
