//! `mm-sync`: keep one hosted project in step with its upstream.

use std::process::ExitCode;

use clap::Parser;

/// Synchronise a hosted project from its upstream mirror.
#[derive(Parser)]
#[command(name = "mm-sync", version)]
struct Cli {}

fn main() -> ExitCode {
    let _cli = Cli::parse();
    eprintln!("mm-sync: not built yet in this version (see issue 7)");
    ExitCode::from(3)
}
