//! Build script shared by the binaries' crates (`build = "../hostkit/build/git-commit.rs"`):
//! records the git commit they are built from, for `--version`.

fn main() {
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let commit = std::process::Command::new("git")
        .arg("-C")
        .arg(&repo)
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown commit".into());
    println!("cargo:rustc-env=MM_GIT_COMMIT={commit}");
    // A new commit (or branch switch) moves HEAD or the ref it points to.
    for f in ["HEAD", "refs", "packed-refs"] {
        println!("cargo:rerun-if-changed={}", repo.join(".git").join(f).display());
    }
}
