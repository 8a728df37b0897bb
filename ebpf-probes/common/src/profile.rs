//! Records of the CPU profiler (`kscope profile`).
//!
//! The kernel program does not send events: it counts samples in a map keyed
//! by [`ProfileKey`] (process, thread name, kernel and user stack ids) that
//! the daemon reads once at the end, so the cost per sample is two stack
//! walks and one map update, whatever the sampling frequency.

use crate::COMM_LEN;

/// Names of the profiler's globals, maps and program.
pub mod names {
    pub const PROFILE_CONFIG: &str = "PROFILE_CONFIG";
    /// `BPF_MAP_TYPE_STACK_TRACE`: stack id → instruction pointers.
    pub const STACKS: &str = "PROFILE_STACKS";
    /// Per-CPU hash [`super::ProfileKey`] → samples.
    pub const COUNTS: &str = "PROFILE_COUNTS";
    /// Hash of the sampled processes (tgid → 1) when `filter_pids` is set.
    pub const PIDS: &str = "PROFILE_PIDS";
    /// Per-CPU array of [`super::slot`] counters.
    pub const COUNTERS: &str = "PROFILE_COUNTERS";
    /// The perf-event program.
    pub const PROGRAM: &str = "profile_cpu";
}

/// Which stacks a sample collects ([`ProfileConfig::stacks`]).
pub mod stacks {
    pub const KERNEL: u32 = 1;
    pub const USER: u32 = 2;
}

/// A stack id field that holds no id: the stack was not asked for
/// (`--kernel-only`, `--user-only`). Other negative values are the error
/// `bpf_get_stackid` returned (`-EFAULT`: no stack of that kind, e.g. a
/// kernel stack for a sample taken in user mode; `-EEXIST`: its hash bucket
/// held another stack; `-ENOMEM`: the stack map was full).
pub const STACK_NOT_COLLECTED: i32 = i32::MIN;

/// The kernel's errno values the daemon tells apart in stack ids.
pub mod errno {
    pub const EFAULT: i32 = 14;
    pub const ENOMEM: i32 = 12;
    pub const EEXIST: i32 = 17;
}

/// Maximum processes `--pid` may name: the size of the `PROFILE_PIDS` map.
pub const MAX_PIDS: u32 = 64;

/// The read-only settings of the profiler, written before load.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProfileConfig {
    /// Non-zero: sample only processes in `PROFILE_PIDS`.
    pub filter_pids: u32,
    /// [`stacks`] bits.
    pub stacks: u32,
    /// Non-zero: keep samples of idle CPUs (the per-CPU swapper tasks,
    /// pid 0), which are otherwise counted in [`slot::IDLE`] and dropped.
    pub include_idle: u32,
    pub _pad: u32,
}

impl ProfileConfig {
    pub const fn default_config() -> Self {
        Self { filter_pids: 0, stacks: stacks::KERNEL | stacks::USER, include_idle: 0, _pad: 0 }
    }
}

/// One row of the counts map: samples of one thread name in one process
/// with the same pair of stacks.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ProfileKey {
    /// The process (thread-group id), whose mappings the user stack is in.
    pub tgid: u32,
    /// A `PROFILE_STACKS` id, or a negative error / [`STACK_NOT_COLLECTED`].
    pub kernel_stack_id: i32,
    pub user_stack_id: i32,
    pub _pad: u32,
    /// The thread's name, NUL-padded.
    pub comm: [u8; COMM_LEN],
}

/// Slots of the per-CPU `PROFILE_COUNTERS` array. Every sample that passes
/// the filters is in [`SAMPLES`](slot::SAMPLES); what could not be recorded
/// in full is in one of the other slots, so nothing is dropped unseen.
pub mod slot {
    /// Samples taken of the processes profiled (idle and filtered ones excluded).
    pub const SAMPLES: u32 = 0;
    /// Idle samples (pid 0) skipped.
    pub const IDLE: u32 = 1;
    /// Samples not recorded at all: the counts map had no room for a new key.
    pub const COUNTS_FULL: u32 = 2;
    /// Samples recorded with a stack missing because the stack map was full
    /// (`-ENOMEM`).
    pub const STACK_MAP_FULL: u32 = 3;
    /// Samples recorded with a stack missing because its hash bucket held
    /// another stack (`-EEXIST`).
    pub const STACK_COLLISION: u32 = 4;
    /// Samples recorded with a stack missing for another error.
    pub const STACK_ERROR: u32 = 5;
    pub const COUNT: u32 = 8;
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: repr(C), integers and integer arrays only, explicit padding.
    unsafe impl aya::Pod for super::ProfileConfig {}
    unsafe impl aya::Pod for super::ProfileKey {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::size_of;

    #[test]
    fn layouts_have_no_implicit_padding() {
        assert_eq!(size_of::<ProfileConfig>(), 16);
        assert_eq!(size_of::<ProfileKey>(), 16 + COMM_LEN);
    }
}
