//! Running other programs: the one way every subcommand starts a command and
//! reports its failure, `cargo` from the workspace root, and whether we are
//! root.

use std::{ffi::OsStr, fs, path::PathBuf, process::Command};

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

/// Whether the effective uid is 0: from /proc (no libc needed), else from
/// `id -u`.
pub fn is_root() -> Result<bool> {
    if let Some(uid) = fs::read_to_string("/proc/self/status").ok().as_deref().and_then(parse_effective_uid) {
        return Ok(uid == 0);
    }
    let mut cmd = Command::new("id");
    cmd.arg("-u");
    let out = cmd.output().with_context(|| format!("could not run `{}` to check for root", describe(&cmd)))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let uid: u32 =
        text.trim().parse().with_context(|| format!("`{}` printed {:?}, not a uid", describe(&cmd), text.trim()))?;
    Ok(uid == 0)
}

/// The effective uid from /proc/self/status ("Uid: real effective saved fs").
fn parse_effective_uid(status: &str) -> Option<u32> {
    status.lines().find_map(|l| l.strip_prefix("Uid:"))?.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workspace_root_is_this_checkout() {
        assert!(workspace_root().join("xtask/src/process.rs").is_file(), "{}", workspace_root().display());
    }

    #[test]
    fn effective_uid_parsing() {
        let status = "Name:\tcat\nUmask:\t0022\nUid:\t1000\t0\t0\t0\nGid:\t1000\t1000\t1000\t1000\n";
        assert_eq!(parse_effective_uid(status), Some(0));
        assert_eq!(parse_effective_uid("Uid:\t0\t1000\t1000\t1000\n"), Some(1000));
        assert_eq!(parse_effective_uid("Name:\tcat\n"), None);
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
