//! `mm-install`: the install stick's installer, started by its initramfs (`mm.install` on the
//! kernel command line). See docs/install-stick.md.

use std::process::ExitCode;

use mm_firstboot::installer::{self, Console};

fn main() -> ExitCode {
    let mut con = Console::open();
    match installer::run(&mut con) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            con.say(&format!("error: {e:#}"));
            ExitCode::FAILURE
        }
    }
}
