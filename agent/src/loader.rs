//! The embedded eBPF object, loaded with this kernel's offsets and record
//! layouts written into its read-only globals.

use aya::{Ebpf, EbpfLoader};
use kscope_common::{SocketDataConfig, names};

use crate::kernel::KernelFeatures;

/// Built by agent/build.rs from ebpf-probes/programs; embedded so the binary
/// runs alone on another host. `kscope profile` loads it with its own
/// settings (profile.rs).
pub static PROBES: &[u8] = aya::include_bytes_aligned!(env!("KSCOPE_PROBES_OBJECT"));

pub fn load(features: &KernelFeatures, socket_data: &SocketDataConfig) -> anyhow::Result<Ebpf> {
    let ebpf = EbpfLoader::new()
        .override_global(names::SOCKET_DATA_CONFIG, socket_data, true)
        .override_global(names::KERNEL_OFFSETS, &features.offsets, true)
        .override_global(names::TRACEPOINT_LAYOUT, &features.tracepoint_layout, true)
        .load(PROBES)?;
    Ok(ebpf)
}
