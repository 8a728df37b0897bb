//! Shared pieces of kscope's integration tests: starting kscope and reading
//! its JSON output into the types of `kscope-schema`, the checks both host
//! and guest runs apply to it, the QEMU harness that boots Debian's cloud
//! kernels, and the real servers and clients the tests drive (nginx; HTTP/2,
//! gRPC and DNS for the L7 tests; an OTLP receiver for the export tests).

pub mod agent;
pub mod checks;
pub mod dns;
pub mod grpc;
pub mod h2;
pub mod netns;
pub mod otlp;
pub mod records;

pub use kscope_harness::{nginx, send_signal, vm, wait_timeout, workspace_root};
