//! Shared pieces of kscope's integration tests: starting kscope and reading
//! its JSON output, the checks both host and guest runs apply to it, the
//! QEMU harness that boots Debian's cloud kernels, and the real servers and
//! clients the tests drive (nginx; HTTP/2, gRPC and DNS for the L7 tests;
//! an OTLP receiver for the export tests).

pub mod agent;
pub mod checks;
pub mod dns;
pub mod grpc;
pub mod h2;
pub mod netns;
pub mod nginx;
pub mod otlp;
pub mod vm;

use std::{
    path::{Path, PathBuf},
    process::{Child, ExitStatus},
    time::{Duration, Instant},
};

use anyhow::Context as _;

/// The workspace root (tests/ sits in it).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(Path::to_path_buf).unwrap_or_default()
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
