//! `mm-firstboot`: converge storage, network and mirror services to the node configuration.

use std::process::ExitCode;

use clap::Parser;

/// Prepare this micro-mirror node from its configuration (MMCONFIG partition or installed file).
#[derive(Parser)]
#[command(name = "mm-firstboot", version)]
struct Cli {}

fn main() -> ExitCode {
    let _cli = Cli::parse();
    eprintln!("mm-firstboot: not built yet in this version (see issue 5)");
    ExitCode::from(3)
}
