//! The embedded eBPF object, loaded with this kernel's offsets and record
//! layouts written into its read-only globals.

use aya::{Ebpf, EbpfLoader};
use kscope_common::{SocketDataConfig, names};

use crate::kernel::KernelFeatures;

/// Built by agent/build.rs from ebpf-probes/programs; embedded so the binary
/// runs alone on another host. `kscope profile` loads it with its own
/// settings (profile.rs).
static PROBES: &[u8] = aya::include_bytes_aligned!(env!("KSCOPE_PROBES_OBJECT"));

/// The embedded object. Empty when build.rs stubbed it (no eBPF toolchain):
/// libraries and tests built that way must say so, not fail to parse ELF.
pub fn probes() -> anyhow::Result<&'static [u8]> {
    anyhow::ensure!(
        !PROBES.is_empty(),
        "this kscope was built without its kernel programs (the eBPF toolchain was missing): \
         run `cargo xtask setup` and build again"
    );
    Ok(PROBES)
}

pub fn load(features: &KernelFeatures, socket_data: &SocketDataConfig) -> anyhow::Result<Ebpf> {
    let ebpf = EbpfLoader::new()
        .override_global(names::SOCKET_DATA_CONFIG, socket_data, true)
        .override_global(names::KERNEL_OFFSETS, &features.offsets, true)
        .override_global(names::TRACEPOINT_LAYOUT, &features.tracepoint_layout, true)
        .load(probes()?)?;
    Ok(ebpf)
}
