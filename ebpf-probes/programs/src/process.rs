//! Process lifecycle: exec and exit, on three hook forms.
//!
//! - tracepoint: `sched:sched_process_exec`, `sched:sched_process_exit`
//! - kprobe: `bprm_execve` (entry keeps the `linux_binprm`, return emits on
//!   success), `do_exit`
//! - fentry: fexit `bprm_execve`, fentry `do_exit`

use aya_ebpf::{
    EbpfContext,
    helpers::{bpf_get_current_pid_tgid, bpf_probe_read_kernel_str_bytes},
    macros::{fentry, fexit, kprobe, kretprobe, map, tracepoint},
    maps::{HashMap, PerCpuArray},
    programs::{FEntryContext, FExitContext, ProbeContext, RetProbeContext, TracePointContext},
};
use kscope_common::{
    EventKind, FILENAME_LEN, HookFormId, OFFSET_MISSING, ProcessExecEvent, ProcessExitEvent, counter_slot,
};

use crate::{
    emit::{current_header, output},
    kernel::{self, layout, offset},
};

/// The exec event is too large for the 512-byte BPF stack next to its
/// callers' frames, so it is built in a per-CPU scratch slot.
#[map]
static EXEC_SCRATCH: PerCpuArray<ProcessExecEvent> = PerCpuArray::with_max_entries(1, 0);

/// `linux_binprm` pointers between `bprm_execve`'s entry and return, by tid.
/// Bounded; an exec whose entry did not fit is not reported (and counted).
#[map]
static EXEC_IN_FLIGHT: HashMap<u32, u64> = HashMap::with_max_entries(8192, 0);

/// `filename` is a kernel string's address.
#[inline(always)]
fn emit_exec<C: EbpfContext>(ctx: &C, form: HookFormId, filename: *const u8) {
    let Some(event) = EXEC_SCRATCH.get_ptr_mut(0) else {
        return;
    };
    let event = unsafe { &mut *event };
    event.header = current_header(EventKind::ProcessExec as u32, form as u32);
    event.ppid = kernel::current_ppid();
    event._pad = 0;
    let len = match unsafe { bpf_probe_read_kernel_str_bytes(filename, &mut event.filename) } {
        Ok(name) => name.len(),
        Err(_) => 0,
    };
    // `str_bytes` stops at the buffer's end minus the NUL: a name that fills
    // the buffer may have been cut.
    event.filename_truncated = u32::from(len >= FILENAME_LEN - 1);
    event.filename_len = len as u32;
    output(ctx, event, counter_slot::PROCESS_OUT);
}

#[inline(always)]
fn emit_exit<C: EbpfContext>(ctx: &C, form: HookFormId, exit_status: u32) {
    let header = current_header(EventKind::ProcessExit as u32, form as u32);
    let event = ProcessExitEvent {
        ppid: kernel::current_ppid(),
        exit_status,
        lifetime_ns: kernel::current_process_lifetime(header.timestamp_ns),
        header,
    };
    output(ctx, &event, counter_slot::PROCESS_OUT);
}

#[inline(always)]
fn is_group_leader() -> bool {
    let pid_tgid = bpf_get_current_pid_tgid();
    (pid_tgid >> 32) == (pid_tgid & 0xffff_ffff)
}

#[inline(always)]
fn binprm_filename(bprm: u64) -> *const u8 {
    kernel::read::<u64>(bprm, offset!(binprm_filename)).unwrap_or(0) as *const u8
}

// ---- tracepoint form ----

#[tracepoint(category = "sched", name = "sched_process_exec")]
pub fn process_exec_tp(ctx: TracePointContext) -> u32 {
    // __data_loc: low 16 bits are the string's offset in the record.
    let Ok(data_loc) = kernel::tp_read::<u32>(&ctx, layout!(exec_filename)) else {
        return 0;
    };
    let filename = unsafe { ctx.as_ptr().cast::<u8>().add((data_loc & 0xffff) as usize) };
    emit_exec(&ctx, HookFormId::Tracepoint, filename);
    0
}

#[tracepoint(category = "sched", name = "sched_process_exit")]
pub fn process_exit_tp(ctx: TracePointContext) -> u32 {
    let group_dead = layout!(exit_group_dead);
    let last_of_group = if group_dead == OFFSET_MISSING {
        is_group_leader()
    } else {
        kernel::tp_read::<u8>(&ctx, group_dead).unwrap_or(0) != 0
    };
    if !last_of_group {
        return 0;
    }
    // The tracepoint runs after do_exit stored the status in the task.
    let status: i32 = kernel::read(kernel::current_task(), offset!(task_exit_code)).unwrap_or(0);
    emit_exit(&ctx, HookFormId::Tracepoint, status as u32);
    0
}

// ---- kprobe form ----

#[kprobe]
pub fn process_exec_kprobe(ctx: ProbeContext) -> u32 {
    let bprm: u64 = ctx.arg(0).unwrap_or(0);
    let tid = bpf_get_current_pid_tgid() as u32;
    if EXEC_IN_FLIGHT.insert(tid, bprm, 0).is_err() {
        crate::emit::count(counter_slot::PROCESS_OUT_FAILED);
    }
    0
}

#[kretprobe]
pub fn process_exec_kretprobe(ctx: RetProbeContext) -> u32 {
    let tid = bpf_get_current_pid_tgid() as u32;
    let Some(bprm) = (unsafe { EXEC_IN_FLIGHT.get(tid) }).copied() else {
        return 0;
    };
    let _ = EXEC_IN_FLIGHT.remove(tid);
    let ret: i64 = ctx.ret();
    if ret == 0 {
        // bprm_execve's caller frees the binprm only after it returns.
        emit_exec(&ctx, HookFormId::Kprobe, binprm_filename(bprm));
    }
    0
}

#[kprobe]
pub fn process_exit_kprobe(ctx: ProbeContext) -> u32 {
    if !is_group_leader() {
        return 0;
    }
    let code: i64 = ctx.arg(0).unwrap_or(0);
    emit_exit(&ctx, HookFormId::Kprobe, code as u32);
    0
}

// ---- fentry form ----

#[fexit(function = "bprm_execve")]
pub fn process_exec_fexit(ctx: FExitContext) -> u32 {
    let ret: i64 = ctx.ret().unwrap_or(-1);
    if ret == 0 {
        let bprm: u64 = ctx.arg(0);
        emit_exec(&ctx, HookFormId::Fentry, binprm_filename(bprm));
    }
    0
}

#[fentry(function = "do_exit")]
pub fn process_exit_fentry(ctx: FEntryContext) -> u32 {
    if !is_group_leader() {
        return 0;
    }
    let code: i64 = ctx.arg(0);
    emit_exit(&ctx, HookFormId::Fentry, code as u32);
    0
}
