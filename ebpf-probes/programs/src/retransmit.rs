//! TCP retransmits, with the kernel stack that retransmitted and the
//! connection's owner.
//!
//! | form       | hook                                   | fires                          |
//! |------------|----------------------------------------|--------------------------------|
//! | tracepoint | `tcp:tcp_retransmit_skb`               | each segment sent again        |
//! | kprobe     | `tcp_retransmit_skb`                   | each attempt (failed ones too) |
//! | fentry     | fentry `tcp_retransmit_skb`            | each attempt (failed ones too) |

use aya_ebpf::{
    EbpfContext,
    helpers::{bpf_ktime_get_ns, generated::bpf_get_stack},
    macros::{fentry, kprobe, map, tracepoint},
    maps::PerCpuArray,
    programs::{FEntryContext, ProbeContext, TracePointContext},
};
use kscope_common::{
    AF_INET, AF_INET6, EventHeader, EventKind, HookFormId, KERNEL_STACK_FRAMES, OFFSET_MISSING, TcpRetransmitEvent,
    counter_slot,
};

use crate::{
    emit::output,
    kernel::{self, Endpoints, layout, offset, sock_endpoints},
    tcp::connection_owner,
};

/// The event is built here: with its stack it is too big for the BPF stack.
#[map]
static RETRANSMIT_SCRATCH: PerCpuArray<TcpRetransmitEvent> = PerCpuArray::with_max_entries(1, 0);

#[inline(always)]
fn emit<C: EbpfContext>(ctx: &C, form: HookFormId, sk: u64, state: u32, ends: &Endpoints) {
    let Some(event) = RETRANSMIT_SCRATCH.get_ptr_mut(0) else {
        return;
    };
    let event = unsafe { &mut *event };
    let mut header = connection_owner(sk).unwrap_or(EventHeader::zeroed());
    header.kind = EventKind::TcpRetransmit as u32;
    header.hook_form = form as u32;
    header.timestamp_ns = unsafe { bpf_ktime_get_ns() };
    event.header = header;
    event.sock_id = sk;
    event.family = ends.family;
    event.state = state;
    event.local_port = ends.local_port;
    event.remote_port = ends.remote_port;
    event.local_addr = ends.local_addr;
    event.remote_addr = ends.remote_addr;
    let size = (KERNEL_STACK_FRAMES * 8) as u32;
    // Flags 0: the kernel stack, innermost frame first.
    let filled = unsafe { bpf_get_stack(ctx.as_ptr(), event.stack.as_mut_ptr().cast(), size, 0) };
    event.stack_bytes = if filled > 0 { filled as u32 } else { 0 };
    output(ctx, event, counter_slot::RETRANSMIT_OUT);
}

// ---- tracepoint form ----

#[tracepoint(category = "tcp", name = "tcp_retransmit_skb")]
pub fn tcp_retransmit_tp(ctx: TracePointContext) -> u32 {
    if layout!(rtx_skaddr) == OFFSET_MISSING {
        return 0;
    }
    let sk: u64 = kernel::tp_read(&ctx, layout!(rtx_skaddr)).unwrap_or(0);
    let state: i32 = kernel::tp_read(&ctx, layout!(rtx_state)).unwrap_or(0);
    let mut ends = Endpoints::empty();
    let family: u16 = kernel::tp_read(&ctx, layout!(rtx_family)).unwrap_or(0);
    ends.family = u32::from(family);
    ends.local_port = kernel::tp_read(&ctx, layout!(rtx_sport)).unwrap_or(0);
    ends.remote_port = kernel::tp_read(&ctx, layout!(rtx_dport)).unwrap_or(0);
    if family == AF_INET {
        let local: [u8; 4] = kernel::tp_read(&ctx, layout!(rtx_saddr)).unwrap_or([0; 4]);
        let remote: [u8; 4] = kernel::tp_read(&ctx, layout!(rtx_daddr)).unwrap_or([0; 4]);
        ends.local_addr[..4].copy_from_slice(&local);
        ends.remote_addr[..4].copy_from_slice(&remote);
    } else if family == AF_INET6 {
        ends.local_addr = kernel::tp_read(&ctx, layout!(rtx_saddr_v6)).unwrap_or([0; 16]);
        ends.remote_addr = kernel::tp_read(&ctx, layout!(rtx_daddr_v6)).unwrap_or([0; 16]);
    }
    emit(&ctx, HookFormId::Tracepoint, sk, state as u32, &ends);
    0
}

// ---- kprobe and fentry forms: tcp_retransmit_skb(sk, skb, segs) ----

#[inline(always)]
fn from_sock<C: EbpfContext>(ctx: &C, form: HookFormId, sk: u64) {
    let mut ends = Endpoints::empty();
    sock_endpoints(sk, &mut ends);
    let state = u32::from(kernel::read::<u8>(sk, offset!(sk_state)).unwrap_or(0));
    emit(ctx, form, sk, state, &ends);
}

#[kprobe]
pub fn tcp_retransmit_kprobe(ctx: ProbeContext) -> u32 {
    let sk: u64 = ctx.arg(0).unwrap_or(0);
    from_sock(&ctx, HookFormId::Kprobe, sk);
    0
}

#[fentry(function = "tcp_retransmit_skb")]
pub fn tcp_retransmit_fentry(ctx: FEntryContext) -> u32 {
    let sk: u64 = ctx.arg(0);
    from_sock(&ctx, HookFormId::Fentry, sk);
    0
}
