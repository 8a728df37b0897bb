//! Reading kernel structs at offsets the daemon resolved from the running
//! kernel's BTF. Rust eBPF has no CO-RE field relocations, so offsets are
//! data, not code: one object works on every kernel.

use aya_ebpf::helpers::{bpf_get_current_task, bpf_probe_read_kernel};
use kscope_common::{AF_INET, AF_INET6, KernelOffsets, OFFSET_MISSING, TracepointLayout};

#[unsafe(no_mangle)]
pub(crate) static KERNEL_OFFSETS: KernelOffsets = KernelOffsets::missing();

#[unsafe(no_mangle)]
pub(crate) static TRACEPOINT_LAYOUT: TracepointLayout = TracepointLayout::missing();

/// One offset of `KERNEL_OFFSETS`, read so the compiler cannot fold the
/// default (the daemon rewrites .rodata before load).
macro_rules! offset {
    ($field:ident) => {
        unsafe { core::ptr::read_volatile(&raw const $crate::kernel::KERNEL_OFFSETS.$field) }
    };
}
pub(crate) use offset;

macro_rules! layout {
    ($field:ident) => {
        unsafe { core::ptr::read_volatile(&raw const $crate::kernel::TRACEPOINT_LAYOUT.$field) }
    };
}
pub(crate) use layout;

/// Reads a `T` at `base + offset`; `Err` when the offset is unknown on this
/// kernel or the read faults.
#[inline(always)]
pub fn read<T>(base: u64, offset: u32) -> Result<T, i32> {
    if offset == OFFSET_MISSING || base == 0 {
        return Err(-1);
    }
    unsafe { bpf_probe_read_kernel((base + u64::from(offset)) as *const T) }
}

#[inline(always)]
pub fn current_task() -> u64 {
    unsafe { bpf_get_current_task() }
}

/// The thread-group id of the current task's parent.
#[inline(always)]
pub fn current_ppid() -> u32 {
    let parent: u64 = read(current_task(), offset!(task_real_parent)).unwrap_or(0);
    read::<i32>(parent, offset!(task_tgid)).unwrap_or(0) as u32
}

/// Nanoseconds since the current process (its group leader) started.
#[inline(always)]
pub fn current_process_lifetime(now_ns: u64) -> u64 {
    let leader: u64 = read(current_task(), offset!(task_group_leader)).unwrap_or(0);
    match read::<u64>(leader, offset!(task_start_time)) {
        Ok(start) if start <= now_ns => now_ns - start,
        _ => 0,
    }
}

/// The `struct file` behind file descriptor `fd` of the current task:
/// task->files->fdt->fd[fd].
#[inline(always)]
pub fn current_fd_file(fd: u32) -> Result<u64, i32> {
    let files: u64 = read(current_task(), offset!(task_files))?;
    let fdt: u64 = read(files, offset!(files_fdt))?;
    let max_fds: u32 = read(fdt, offset!(fdtable_max_fds))?;
    if fd >= max_fds {
        return Err(-1);
    }
    let fd_array: u64 = read(fdt, offset!(fdtable_fd))?;
    unsafe { bpf_probe_read_kernel((fd_array + u64::from(fd) * 8) as *const u64) }
}

/// The `struct sock` behind file descriptor `fd`, for a descriptor known to
/// be a socket (accept's result): file->private_data (a `struct socket`)->sk.
#[inline(always)]
pub fn current_fd_sock(fd: u32) -> Result<u64, i32> {
    let file = current_fd_file(fd)?;
    let socket: u64 = read(file, offset!(file_private_data))?;
    read(socket, offset!(socket_sk))
}

const S_IFMT: u16 = 0o170000;
const S_IFSOCK: u16 = 0o140000;

/// The `struct sock` behind `fd` when it is a socket, `Err` for files,
/// pipes and everything else: the inode's mode says, before
/// `private_data` is trusted to be a `struct socket`.
#[inline(always)]
pub fn current_fd_socket_sock(fd: u32) -> Result<u64, i32> {
    let file = current_fd_file(fd)?;
    let inode: u64 = read(file, offset!(file_f_inode))?;
    let mode: u16 = read(inode, offset!(inode_i_mode))?;
    if mode & S_IFMT != S_IFSOCK {
        return Err(-1);
    }
    let socket: u64 = read(file, offset!(file_private_data))?;
    read(socket, offset!(socket_sk))
}

/// Reads a tracepoint record field at a layout offset; `Err` when the field
/// does not exist on this kernel.
#[inline(always)]
pub fn tp_read<T>(ctx: &aya_ebpf::programs::TracePointContext, offset: u32) -> Result<T, i32> {
    if offset == OFFSET_MISSING {
        return Err(-1);
    }
    unsafe { ctx.read_at(offset as usize) }
}

#[derive(Clone, Copy)]
pub struct Endpoints {
    pub family: u32,
    pub local_port: u16,
    pub remote_port: u16,
    pub local_addr: [u8; 16],
    pub remote_addr: [u8; 16],
}

impl Endpoints {
    pub const fn empty() -> Self {
        Self { family: 0, local_port: 0, remote_port: 0, local_addr: [0; 16], remote_addr: [0; 16] }
    }
}

/// Addresses read from a `struct sock` (kprobe and fentry forms, and
/// accept in the tracepoint form).
#[inline(always)]
pub fn sock_endpoints(sk: u64, ends: &mut Endpoints) {
    let family: u16 = read(sk, offset!(sk_family)).unwrap_or(0);
    ends.family = u32::from(family);
    ends.local_port = read(sk, offset!(sk_num)).unwrap_or(0);
    ends.remote_port = u16::from_be(read(sk, offset!(sk_dport)).unwrap_or(0));
    if family == AF_INET {
        let local: [u8; 4] = read(sk, offset!(sk_rcv_saddr)).unwrap_or([0; 4]);
        let remote: [u8; 4] = read(sk, offset!(sk_daddr)).unwrap_or([0; 4]);
        ends.local_addr[..4].copy_from_slice(&local);
        ends.remote_addr[..4].copy_from_slice(&remote);
    } else if family == AF_INET6 {
        ends.local_addr = read(sk, offset!(sk_v6_rcv_saddr)).unwrap_or([0; 16]);
        ends.remote_addr = read(sk, offset!(sk_v6_daddr)).unwrap_or([0; 16]);
    }
}

