//! Packet drops (`skb:kfree_skb`), counted in the kernel per (location,
//! reason, network namespace, protocol): the daemon reads the counts, not
//! one event per packet, so a drop storm costs one map update per packet.

use aya_ebpf::{
    macros::{map, tracepoint},
    maps::PerCpuHashMap,
    programs::TracePointContext,
};
use kscope_common::{DROP_KEYS_MAX, DropKey, OFFSET_MISSING, counter_slot};

use crate::{
    emit::count,
    kernel::{self, layout, offset},
};

/// The inode of the network namespace of `skb`'s device: skb->dev->nd_net
/// ->ns.inum; 0 without a device (a packet dropped before it had one) or
/// without BTF offsets.
#[inline(always)]
fn netns_of(skb: u64) -> u32 {
    let dev: u64 = kernel::read(skb, offset!(skb_dev)).unwrap_or(0);
    let net: u64 = kernel::read(dev, offset!(netdev_nd_net)).unwrap_or(0);
    kernel::read(net, offset!(net_ns_inum)).unwrap_or(0)
}

/// Per-CPU counts: no atomics, and each CPU's first drop of a key inserts
/// only its own slot.
#[map(name = "DROPS")]
static DROPS: PerCpuHashMap<DropKey, u64> = PerCpuHashMap::with_max_entries(DROP_KEYS_MAX, 0);

#[tracepoint(category = "skb", name = "kfree_skb")]
pub fn packet_drop_tp(ctx: TracePointContext) -> u32 {
    if layout!(drop_location) == OFFSET_MISSING {
        return 0;
    }
    let key = DropKey {
        location: kernel::tp_read(&ctx, layout!(drop_location)).unwrap_or(0),
        // Absent before 5.17: every drop is then reason 0.
        reason: kernel::tp_read(&ctx, layout!(drop_reason)).unwrap_or(0),
        netns: netns_of(kernel::tp_read(&ctx, layout!(drop_skbaddr)).unwrap_or(0)),
        protocol: kernel::tp_read(&ctx, layout!(drop_protocol)).unwrap_or(0),
        _pad: 0,
        _pad2: 0,
    };
    match DROPS.get_ptr_mut(&key) {
        Some(counter) => unsafe { *counter += 1 },
        None => {
            if DROPS.insert(&key, &1, 0).is_err() {
                count(counter_slot::DROPS_UNTRACKED);
                return 0;
            }
        }
    }
    count(counter_slot::DROPS_COUNTED);
    0
}
