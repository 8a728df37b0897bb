//! `cargo xtask run`: set up, build, and run `kscope run` as root.

use std::process::Command;

use crate::{build, process};

pub fn run(args: &[String]) -> anyhow::Result<()> {
    let binary = build::build()?;
    let mut cmd = if process::is_root() {
        Command::new(&binary)
    } else {
        let mut sudo = Command::new("sudo");
        sudo.arg(&binary);
        sudo
    };
    cmd.arg("run").args(args);
    process::exec(&mut cmd)
}
