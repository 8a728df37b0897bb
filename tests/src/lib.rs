//! Shared pieces of kscope's integration tests: the QEMU harness that boots
//! Debian's cloud kernels, and the checks that both host and guest runs apply
//! to kscope's JSON output.

pub mod vm;
