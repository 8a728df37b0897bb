//! Shared pieces of kscope's integration tests: starting kscope and reading
//! its JSON output, the checks both host and guest runs apply to it, and the
//! QEMU harness that boots Debian's cloud kernels.

pub mod agent;
pub mod checks;
pub mod vm;

use std::path::{Path, PathBuf};

/// The workspace root (tests/ sits in it).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(Path::to_path_buf).unwrap_or_default()
}
