//! Running other programs: the one way every subcommand starts a command and
//! reports its failure, `cargo` from the workspace root, and whether we are
//! root.

use std::{ffi::OsStr, path::PathBuf, process::Command};

use anyhow::{Context as _, Result, bail};

/// The workspace root, found as the tests find it (run-time manifest
/// directory first; see `kscope_harness::workspace_root`).
pub fn workspace_root() -> PathBuf {
    kscope_harness::workspace_root()
}

/// The `cargo` that runs xtask (`CARGO`), else the one on PATH, in the
/// workspace root.
pub fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(workspace_root());
    cmd
}

/// Runs `cmd` with the terminal as its stdio (so apt's and cargo's progress
/// shows) and fails with the command line and exit status if it fails.
pub fn exec(cmd: &mut Command) -> Result<()> {
    let status = cmd.status().with_context(|| format!("could not start `{}`", describe(cmd)))?;
    if !status.success() {
        bail!("`{}` failed ({status})", describe(cmd));
    }
    Ok(())
}

/// The command line of `cmd` for messages, with the variables it sets in
/// front (`RUSTFLAGS=... cargo build`); removed variables are not shown.
pub fn describe(cmd: &Command) -> String {
    let env = cmd
        .get_envs()
        .filter_map(|(name, value)| Some(format!("{}={}", name.to_string_lossy(), value?.to_string_lossy())));
    let line = std::iter::once(cmd.get_program()).chain(cmd.get_args()).map(OsStr::to_string_lossy);
    env.chain(line.map(String::from)).collect::<Vec<_>>().join(" ")
}

/// The last non-empty line of a command's output, for messages.
pub fn last_line(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("").trim().to_owned()
}

pub use kscope_harness::is_root;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workspace_root_is_this_checkout() {
        assert!(workspace_root().join("xtask/src/process.rs").is_file(), "{}", workspace_root().display());
    }

    #[test]
    fn describe_joins_variables_program_and_args() {
        let mut cmd = Command::new("apt-get");
        cmd.args(["install", "-y", "curl"]);
        assert_eq!(describe(&cmd), "apt-get install -y curl");
        cmd.env("DEBIAN_FRONTEND", "noninteractive").env_remove("RUSTC");
        assert_eq!(describe(&cmd), "DEBIAN_FRONTEND=noninteractive apt-get install -y curl");
    }

    #[test]
    fn last_line_skips_blank_lines() {
        assert_eq!(last_line(b"first\nE: the reason  \n\n"), "E: the reason");
        assert_eq!(last_line(b""), "");
    }
}
