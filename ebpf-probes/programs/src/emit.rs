//! Handing events to the per-CPU buffers, and counting what was handed over
//! and what the buffer refused.

use aya_ebpf::{
    EbpfContext,
    bindings::BPF_F_CURRENT_CPU,
    cty::c_void,
    helpers::{
        bpf_get_current_cgroup_id, bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_ktime_get_ns,
        generated::bpf_perf_event_output,
    },
    macros::map,
    maps::{PerCpuArray, PerfEventArray},
};
use kscope_common::{EventHeader, counter_slot};

#[map(name = "EVENTS")]
static EVENTS: PerfEventArray<u8> = PerfEventArray::new(0);

#[map(name = "EVENTS_EMITTED")]
static EVENTS_EMITTED: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter_slot::COUNT, 0);

#[inline(always)]
pub fn count(slot: u32) {
    if let Some(counter) = EVENTS_EMITTED.get_ptr_mut(slot) {
        // Per-CPU slot: no other CPU writes it, and a program is not
        // preempted by itself on the same CPU.
        unsafe { *counter += 1 };
    }
}

#[inline(always)]
pub fn count_many(slot: u32, n: u64) {
    if let Some(counter) = EVENTS_EMITTED.get_ptr_mut(slot) {
        unsafe { *counter += n };
    }
}

/// Writes `event` to this CPU's buffer; `slot` counts successes and
/// `slot + 1` failures (a full buffer).
#[inline(always)]
pub fn output<C: EbpfContext, E>(ctx: &C, event: &E, slot: u32) {
    let map = core::ptr::from_ref(&EVENTS).cast_mut().cast();
    let ret = unsafe {
        bpf_perf_event_output(
            ctx.as_ptr(),
            map,
            u64::from(BPF_F_CURRENT_CPU as u32),
            core::ptr::from_ref(event).cast_mut().cast(),
            size_of::<E>() as u64,
        )
    };
    count(if ret == 0 { slot } else { slot + 1 });
}

/// Writes `size` bytes at `record` (a variable-length record) to this
/// CPU's buffer, counted as [`output`] does.
#[inline(always)]
pub fn output_bytes<C: EbpfContext>(ctx: &C, record: *mut c_void, size: u64, slot: u32) {
    let map = core::ptr::from_ref(&EVENTS).cast_mut().cast();
    let ret = unsafe { bpf_perf_event_output(ctx.as_ptr(), map, u64::from(BPF_F_CURRENT_CPU as u32), record, size) };
    count(if ret == 0 { slot } else { slot + 1 });
}

/// The header for an event about the current task.
#[inline(always)]
pub fn current_header(kind: u32, hook_form: u32) -> EventHeader {
    let pid_tgid = bpf_get_current_pid_tgid();
    EventHeader {
        kind,
        hook_form,
        pid: (pid_tgid >> 32) as u32,
        tid: pid_tgid as u32,
        timestamp_ns: unsafe { bpf_ktime_get_ns() },
        cgroup_id: unsafe { bpf_get_current_cgroup_id() },
        comm: bpf_get_current_comm().unwrap_or([0; 16]),
    }
}
