//! Pieces shared by kscope's integration tests (the `kscope-tests` crate)
//! and `cargo xtask bench`: nginx as a real server, QEMU guests booting
//! Debian's cloud kernels, and waiting for or signalling child processes.
//!
//! It depends on nothing of kscope's own, so `xtask` compiles on a machine
//! where the eBPF toolchain is not installed yet.

pub mod nginx;
pub mod vm;

use std::{
    path::{Path, PathBuf},
    process::{Child, ExitStatus},
    time::{Duration, Instant},
};

use anyhow::Context as _;

/// The workspace root: the nearest directory holding `Cargo.lock` above the
/// running package's manifest directory (cargo sets `CARGO_MANIFEST_DIR`
/// when it runs a test or `cargo run`), else above this crate's at build
/// time. Run time comes first because cargo hashes path packages relative
/// to their workspace, so a copy of the repository sharing a target
/// directory can be handed this crate built in another checkout, whose
/// build-time path names that checkout.
pub fn workspace_root() -> PathBuf {
    let running =
        std::env::var_os("CARGO_MANIFEST_DIR").map(PathBuf::from).filter(|dir| dir.join("Cargo.toml").is_file());
    let start = running.unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    start.ancestors().find(|dir| dir.join("Cargo.lock").is_file()).map(Path::to_path_buf).unwrap_or(start)
}

/// Waits for `child` up to `timeout`; `None` when the timeout passed, after
/// the child was killed and reaped (so no test leaves a process behind).
pub fn wait_timeout(child: &mut Child, timeout: Duration) -> anyhow::Result<Option<ExitStatus>> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().context("waiting for a child process")? {
            return Ok(Some(status));
        }
        if Instant::now() >= deadline {
            // Already exited is the only way kill fails here; wait reaps it.
            let _ = child.kill();
            child.wait().context("reaping a killed child process")?;
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

unsafe extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
    #[link_name = "geteuid"]
    fn libc_geteuid() -> u32;
}

/// Whether this process runs as root (effective uid 0): installing,
/// mounting and loading eBPF programs need it.
pub fn is_root() -> bool {
    // SAFETY: geteuid(2) takes nothing and cannot fail.
    unsafe { libc_geteuid() == 0 }
}

/// kill(2): e.g. SIGINT (2) for what Ctrl-C does, SIGTERM (15).
pub fn send_signal(pid: u32, signal: i32) {
    // SAFETY: kill(2) takes plain integers and touches no memory of ours.
    unsafe { libc_kill(pid as i32, signal) };
}
