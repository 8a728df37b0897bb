//! CPU profiler: perf-event sampling of kernel and user stacks.
//!
//! The daemon opens one software cpu-clock event per online CPU at the chosen
//! frequency and attaches `profile_cpu` to each. Every sample walks the
//! stacks into `PROFILE_STACKS` and adds one to its row of `PROFILE_COUNTS`;
//! nothing goes through the event buffers. Whatever cannot be recorded in
//! full is counted in `PROFILE_COUNTERS` (see `kscope_common::profile::slot`).
//!
//! The maps are declared with one entry: the object is loaded whole by every
//! command, and only `kscope profile` sizes them for real at load time
//! (`EbpfLoader::map_max_entries`), so `kscope run` does not carry a
//! preallocated stack map it never uses.

use aya_ebpf::{
    bindings::{BPF_F_USER_STACK, BPF_NOEXIST},
    helpers::{bpf_get_current_comm, bpf_get_current_pid_tgid},
    macros::{map, perf_event},
    maps::{HashMap, PerCpuArray, PerCpuHashMap, StackTrace},
    programs::{PerfEventContext, tracing::StackIdContext},
};
use kscope_common::profile::{ProfileConfig, ProfileKey, STACK_NOT_COLLECTED, errno, slot, stacks};

#[unsafe(no_mangle)]
static PROFILE_CONFIG: ProfileConfig = ProfileConfig::default_config();

macro_rules! config {
    ($field:ident) => {
        unsafe { core::ptr::read_volatile(&raw const PROFILE_CONFIG.$field) }
    };
}

#[map(name = "PROFILE_STACKS")]
static PROFILE_STACKS: StackTrace = StackTrace::with_max_entries(1, 0);

/// Per CPU, so counting needs no atomic add (the BPF target has no
/// compare-and-swap, and Rust offers no fetch-add without it); the daemon
/// sums the CPUs.
#[map(name = "PROFILE_COUNTS")]
static PROFILE_COUNTS: PerCpuHashMap<ProfileKey, u64> = PerCpuHashMap::with_max_entries(1, 0);

#[map(name = "PROFILE_PIDS")]
static PROFILE_PIDS: HashMap<u32, u32> = HashMap::with_max_entries(1, 0);

#[map(name = "PROFILE_COUNTERS")]
static PROFILE_COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(slot::COUNT, 0);

#[inline(always)]
fn count(slot: u32) {
    if let Some(counter) = PROFILE_COUNTERS.get_ptr_mut(slot) {
        // Per-CPU slot, and a perf-event program does not nest on its CPU.
        unsafe { *counter += 1 };
    }
}

/// A stack id, or the negative error `bpf_get_stackid` gave.
#[inline(always)]
fn stack_id(ctx: &PerfEventContext, flags: u64) -> i32 {
    // No BPF_F_REUSE_STACKID: reusing a bucket would silently move earlier
    // samples onto the new stack; a collision is counted instead.
    match ctx.get_stackid(&PROFILE_STACKS, flags) {
        Ok(id) => id as i32,
        Err(err) => err,
    }
}

/// Whether a stack id says the stack was lost (as opposed to there being
/// no such stack, `-EFAULT`, or it not being asked for).
#[inline(always)]
fn lost_slot(id: i32) -> Option<u32> {
    if id >= 0 || id == STACK_NOT_COLLECTED || id == -errno::EFAULT {
        None
    } else if id == -errno::ENOMEM {
        Some(slot::STACK_MAP_FULL)
    } else if id == -errno::EEXIST {
        Some(slot::STACK_COLLISION)
    } else {
        Some(slot::STACK_ERROR)
    }
}

#[perf_event]
pub fn profile_cpu(ctx: PerfEventContext) -> u32 {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    if tgid == 0 && config!(include_idle) == 0 {
        count(slot::IDLE);
        return 0;
    }
    // Before any stack walk: unrelated processes cost one lookup.
    if config!(filter_pids) != 0 && PROFILE_PIDS.get_ptr(tgid).is_none() {
        return 0;
    }
    count(slot::SAMPLES);
    let wanted = config!(stacks);
    let kernel_stack_id = if wanted & stacks::KERNEL != 0 { stack_id(&ctx, 0) } else { STACK_NOT_COLLECTED };
    let user_stack_id =
        if wanted & stacks::USER != 0 { stack_id(&ctx, u64::from(BPF_F_USER_STACK)) } else { STACK_NOT_COLLECTED };
    // One count per sample, for the worse of its two stacks.
    if let Some(lost) = lost_slot(kernel_stack_id).or(lost_slot(user_stack_id)) {
        count(lost);
    }
    let key =
        ProfileKey { tgid, kernel_stack_id, user_stack_id, _pad: 0, comm: bpf_get_current_comm().unwrap_or([0; 16]) };
    add_sample(&key);
    0
}

#[inline(always)]
fn add_sample(key: &ProfileKey) {
    if let Some(samples) = PROFILE_COUNTS.get_ptr_mut(key) {
        unsafe { *samples += 1 };
        return;
    }
    // A new row. NOEXIST: another CPU may have added it since the lookup,
    // and its count must not be overwritten; then this CPU's slot of that
    // row is counted into instead.
    match PROFILE_COUNTS.insert(key, 1u64, u64::from(BPF_NOEXIST)) {
        Ok(()) => {}
        Err(err) if err == -errno::EEXIST => match PROFILE_COUNTS.get_ptr_mut(key) {
            Some(samples) => unsafe { *samples += 1 },
            None => count(slot::COUNTS_FULL),
        },
        // -E2BIG: the map is full.
        Err(_) => count(slot::COUNTS_FULL),
    }
}
