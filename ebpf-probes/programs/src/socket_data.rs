//! Socket payloads: the leading bytes of every send and receive on a TCP or
//! UDP socket, with the call's full byte count, on three hook forms that
//! share the capture code below.
//!
//! | form       | entry (arguments remembered per thread)          | exit (bytes copied, event sent) |
//! |------------|--------------------------------------------------|---------------------------------|
//! | tracepoint | `sys_enter_{read,write,readv,writev,sendto,recvfrom,sendmsg,recvmsg,sendmmsg,recvmmsg,sendfile64}` | `sys_exit_*` |
//! | kprobe     | `tcp_sendmsg`, `tcp_recvmsg`, `udp_sendmsg`, `udp_recvmsg`, `udpv6_sendmsg`, `udpv6_recvmsg` | kretprobes |
//! | fentry     | fentry on the same                                | fexit on the same |
//!
//! Received bytes exist only when the call returns, so every form copies at
//! exit from the buffers it noted at entry. The tracepoint form sees file
//! descriptors: the inode's mode tells a socket from a file or pipe before
//! anything else is read, so files and pipes cost a few reads and no event.

use aya_ebpf::{
    EbpfContext,
    cty::c_void,
    helpers::{bpf_get_current_pid_tgid, bpf_probe_read_kernel, generated::bpf_probe_read_user},
    macros::{fentry, fexit, kprobe, kretprobe, map, tracepoint},
    maps::{LruHashMap, PerCpuArray},
    programs::{FEntryContext, FExitContext, ProbeContext, RetProbeContext, TracePointContext},
};
use kscope_common::{
    AF_INET, AF_INET6, DATA_CAPTURE_MAX, DataDirection, DataSource, EventKind, HookFormId, IPPROTO_TCP, IPPROTO_UDP,
    SocketDataConfig, SocketDataHeader, counter_slot,
};

use crate::{
    emit::{count, count_many, current_header, output_bytes},
    kernel::{self, Endpoints, layout, offset, sock_endpoints},
};

#[unsafe(no_mangle)]
static SOCKET_DATA_CONFIG: SocketDataConfig = SocketDataConfig::default_config();

macro_rules! config {
    ($field:ident) => {
        unsafe { core::ptr::read_volatile(&raw const SOCKET_DATA_CONFIG.$field) }
    };
}

const CAPTURE_MASK: usize = DATA_CAPTURE_MAX - 1;

/// The record as sent: header, then the captured bytes. The data area is
/// twice the largest capture so that a masked offset plus a masked length
/// always stays inside it, which is what the verifier checks.
#[repr(C)]
struct SocketDataEvent {
    header: SocketDataHeader,
    data: [u8; 2 * DATA_CAPTURE_MAX],
}

/// Too large for the BPF stack: built in a per-CPU slot.
#[map]
static DATA_SCRATCH: PerCpuArray<SocketDataEvent> = PerCpuArray::with_max_entries(1, 0);

/// Where a call's bytes are, noted at entry.
mod shape {
    /// `ptr` is one user buffer.
    pub const BUFFER: u32 = 1;
    /// `ptr` is an array of `count` iovecs.
    pub const IOVEC: u32 = 2;
    /// `ptr` is a user `struct msghdr`.
    pub const MSGHDR: u32 = 3;
    /// `ptr` is an array of `count` user `struct mmsghdr`.
    pub const MMSGHDR: u32 = 4;
    /// The bytes are not in user memory (sendfile, kernel pages): counted, not captured.
    pub const UNCAPTURED: u32 = 5;
}

/// One call between its entry and its exit.
#[derive(Clone, Copy)]
#[repr(C)]
struct PendingIo {
    sk: u64,
    ptr: u64,
    count: u64,
    /// A `struct sockaddr` for the datagram's peer (sendto/recvfrom, msg_name).
    name: u64,
    shape: u32,
    source: u32,
    direction: u32,
    protocol: u32,
    /// The iovec array and `name` are kernel copies (kprobe and fentry
    /// forms), not user memory; the payload itself always is user memory.
    meta_in_kernel: u32,
    _pad: u32,
}

/// By thread: a thread is in one socket call at a time. LRU, so a thread
/// that dies inside a call leaves nothing behind for long.
#[map]
static IN_FLIGHT: LruHashMap<u64, PendingIo> = LruHashMap::with_max_entries(16384, 0);

/// Iovecs of one call captured from (gRPC writes a frame header and its
/// payload as separate slices, a dozen or more per call); messages of one `sendmmsg`/`recvmmsg`,
/// and iovecs of each of those (DNS resolvers and UDP servers use one).
/// Bytes in iovecs beyond these are counted, not captured.
const MAX_IOVECS: u32 = 32;
const MAX_MMSG: u32 = 8;
const MAX_MMSG_IOVECS: u32 = 2;
/// uapi layouts (stable ABI): `struct user_msghdr` and `struct mmsghdr`.
const MSGHDR_NAME: u64 = 0;
const MSGHDR_IOV: u64 = 16;
const MSGHDR_IOVLEN: u64 = 24;
const MMSGHDR_SIZE: u64 = 64;
const MMSGHDR_LEN: u64 = 56;
const IOVEC_SIZE: u64 = 16;

#[inline(always)]
fn read_meta<T>(address: u64, in_kernel: u32) -> Result<T, i32> {
    if address == 0 {
        return Err(-1);
    }
    if in_kernel != 0 {
        unsafe { bpf_probe_read_kernel(address as *const T) }
    } else {
        unsafe { aya_ebpf::helpers::bpf_probe_read_user(address as *const T) }
    }
}

/// The socket's protocol when it is an IPv4/IPv6 TCP or UDP socket.
#[inline(always)]
fn inet_protocol(sk: u64) -> Option<u32> {
    let family: u16 = kernel::read(sk, offset!(sk_family)).ok()?;
    if family != AF_INET && family != AF_INET6 {
        return None;
    }
    let protocol: u16 = kernel::read(sk, offset!(sk_protocol)).ok()?;
    (protocol == IPPROTO_TCP || protocol == IPPROTO_UDP).then_some(u32::from(protocol))
}

#[inline(always)]
fn is_self() -> bool {
    (bpf_get_current_pid_tgid() >> 32) as u32 == config!(self_tgid)
}

#[inline(always)]
fn remember(sk: u64, pending: PendingIo) {
    let mut pending = pending;
    let Some(protocol) = inet_protocol(sk) else {
        return;
    };
    pending.sk = sk;
    pending.protocol = protocol;
    if IN_FLIGHT.insert(bpf_get_current_pid_tgid(), pending, 0).is_err() {
        count(counter_slot::DATA_INFLIGHT_FULL);
    }
}

/// The call returned `ret`: capture and send what it moved.
#[inline(always)]
fn finish<C: EbpfContext, const SHAPE: u32>(ctx: &C, form: HookFormId, ret: i64) {
    let key = bpf_get_current_pid_tgid();
    let Some(pending) = (unsafe { IN_FLIGHT.get(key) }).copied() else {
        return;
    };
    let _ = IN_FLIGHT.remove(key);
    if ret <= 0 {
        return;
    }
    let Some(event) = DATA_SCRATCH.get_ptr_mut(0) else {
        return;
    };
    let event = unsafe { &mut *event };
    fill_header(&mut event.header, &pending, form);
    let ret = ret as u64;
    // Each exit program handles the one shape its entry notes: one path
    // for the verifier to walk, not five. (The kprobe and fentry entries
    // note BUFFER, IOVEC or UNCAPTURED, whichever the iterator is.)
    if SHAPE != 0 && pending.shape != SHAPE {
        return;
    }
    match if SHAPE == 0 { pending.shape } else { SHAPE } {
        shape::BUFFER => {
            let captured = copy_user(event, 0, pending.ptr, ret);
            send(ctx, event, &pending, ret, captured, pending.name);
        }
        shape::IOVEC => {
            let captured = copy_iovecs::<MAX_IOVECS>(event, pending.ptr, pending.count, ret, pending.meta_in_kernel);
            send(ctx, event, &pending, ret, captured, pending.name);
        }
        // Only syscall forms note these (SHAPE is then the constant).
        shape::MSGHDR if SHAPE != 0 => {
            let msg = pending.ptr;
            let iov: u64 = read_meta(msg + MSGHDR_IOV, 0).unwrap_or(0);
            let iovlen: u64 = read_meta(msg + MSGHDR_IOVLEN, 0).unwrap_or(0);
            let name: u64 = read_meta(msg + MSGHDR_NAME, 0).unwrap_or(0);
            let captured = copy_iovecs::<MAX_IOVECS>(event, iov, iovlen, ret, 0);
            send(ctx, event, &pending, ret, captured, name);
        }
        shape::MMSGHDR if SHAPE != 0 => {
            // `ret` counts messages; each says its own length.
            for i in 0..MAX_MMSG {
                if u64::from(i) >= ret || u64::from(i) >= pending.count {
                    break;
                }
                let msg = pending.ptr + u64::from(i) * MMSGHDR_SIZE;
                let len: u32 = read_meta(msg + MMSGHDR_LEN, 0).unwrap_or(0);
                let iov: u64 = read_meta(msg + MSGHDR_IOV, 0).unwrap_or(0);
                let iovlen: u64 = read_meta(msg + MSGHDR_IOVLEN, 0).unwrap_or(0);
                let name: u64 = read_meta(msg + MSGHDR_NAME, 0).unwrap_or(0);
                let captured = copy_iovecs::<MAX_MMSG_IOVECS>(event, iov, iovlen, u64::from(len), 0);
                send(ctx, event, &pending, u64::from(len), captured, name);
            }
            let handled = if pending.count < u64::from(MAX_MMSG) { pending.count } else { u64::from(MAX_MMSG) };
            if ret > handled {
                count_many(counter_slot::DATA_MESSAGES_BEYOND_BATCH, ret - handled);
            }
        }
        _ => send(ctx, event, &pending, ret, 0, 0),
    }
}

#[inline(always)]
fn fill_header(header: &mut SocketDataHeader, pending: &PendingIo, form: HookFormId) {
    header.header = current_header(EventKind::SocketData as u32, form as u32);
    header.sock_id = pending.sk;
    header.direction = pending.direction;
    header.source = pending.source;
    header.protocol = pending.protocol;
    let mut ends = Endpoints::empty();
    sock_endpoints(pending.sk, &mut ends);
    header.family = ends.family;
    header.local_port = ends.local_port;
    header.remote_port = ends.remote_port;
    header.local_addr = ends.local_addr;
    header.remote_addr = ends.remote_addr;
}

/// `value`, hidden from the optimiser: LLVM drops a mask it can prove
/// redundant, but the verifier tracks bounds less precisely than LLVM and
/// needs the mask right before the copy.
#[inline(always)]
fn opaque(value: u32) -> u32 {
    let slot = value;
    unsafe { core::ptr::read_volatile(&raw const slot) }
}

/// Copies up to the capture size of `len` user bytes at `src` to `offset`
/// of the data area; returns the bytes copied.
#[inline(always)]
fn copy_user(event: &mut SocketDataEvent, offset: u32, src: u64, len: u64) -> u32 {
    let capture = config!(capture_bytes) & CAPTURE_MASK as u32;
    if offset >= capture || src == 0 {
        return 0;
    }
    let room = u64::from(capture - offset);
    let want = opaque((if len < room { len } else { room }) as u32) & CAPTURE_MASK as u32;
    let at = opaque(offset) as usize & CAPTURE_MASK;
    let ok =
        unsafe { bpf_probe_read_user(event.data.as_mut_ptr().add(at).cast::<c_void>(), want, src as *const c_void) };
    if ok == 0 { want } else { 0 }
}

/// Copies from an iovec array, in order, until `total` bytes or the capture
/// size; returns the bytes copied. The running offset lives in the record
/// (`captured_len`), not in a register: the verifier then sees an unknown,
/// masked value each round instead of one exact value per path, and the
/// number of states it explores stays linear in the iovec count.
#[inline(always)]
fn copy_iovecs<const MAX_IOVECS: u32>(
    event: &mut SocketDataEvent,
    iov: u64,
    iovcnt: u64,
    total: u64,
    in_kernel: u32,
) -> u32 {
    // Bytes still to account for live in the record too (`total_len`,
    // rewritten by `send`), for the same reason.
    let captured = &raw mut event.header.captured_len;
    let left = &raw mut event.header.total_len;
    unsafe {
        core::ptr::write_volatile(captured, 0);
        core::ptr::write_volatile(left, total);
    }
    for i in 0..MAX_IOVECS {
        if u64::from(i) >= iovcnt {
            break;
        }
        let remaining = unsafe { core::ptr::read_volatile(left) };
        if remaining == 0 {
            break;
        }
        let entry = iov + u64::from(i) * IOVEC_SIZE;
        let base: u64 = read_meta(entry, in_kernel).unwrap_or(0);
        let len: u64 = read_meta(entry + 8, in_kernel).unwrap_or(0);
        let len = if len < remaining { len } else { remaining };
        unsafe { core::ptr::write_volatile(left, remaining - len) };
        let offset = unsafe { core::ptr::read_volatile(captured) };
        let got = copy_user(event, offset, base, len);
        unsafe { core::ptr::write_volatile(captured, offset.wrapping_add(got) & CAPTURE_MASK as u32) };
    }
    unsafe { core::ptr::read_volatile(captured) }
}

/// Sends one record: header, then `captured` bytes.
#[inline(always)]
fn send<C: EbpfContext>(
    ctx: &C,
    event: &mut SocketDataEvent,
    pending: &PendingIo,
    total: u64,
    captured: u32,
    name: u64,
) {
    event.header.total_len = total;
    event.header.captured_len = captured;
    event.header.peer_family = 0;
    event.header.peer_port = 0;
    event.header.peer_addr = [0; 16];
    // A connected socket has its peer in the sock; only an unconnected
    // datagram socket needs the call's own address.
    if pending.protocol == u32::from(IPPROTO_UDP) && event.header.remote_port == 0 {
        read_peer(&mut event.header, name, pending.meta_in_kernel);
    }
    let size = size_of::<SocketDataHeader>() + (opaque(captured) as usize & CAPTURE_MASK);
    output_bytes(ctx, core::ptr::from_mut(event).cast(), size as u64, counter_slot::DATA_OUT);
}

#[inline(always)]
fn read_peer(header: &mut SocketDataHeader, name: u64, in_kernel: u32) {
    let Ok(family) = read_meta::<u16>(name, in_kernel) else {
        return;
    };
    header.peer_port = u16::from_be(read_meta(name + 2, in_kernel).unwrap_or(0));
    if family == AF_INET {
        let addr: [u8; 4] = read_meta(name + 4, in_kernel).unwrap_or([0; 4]);
        header.peer_addr[..4].copy_from_slice(&addr);
        header.peer_family = u32::from(family);
    } else if family == AF_INET6 {
        header.peer_addr = read_meta(name + 8, in_kernel).unwrap_or([0; 16]);
        header.peer_family = u32::from(family);
    }
}

// ---- tracepoint form ----

#[inline(always)]
fn tp_arg(ctx: &TracePointContext, index: u32) -> u64 {
    let base = layout!(syscall_args);
    kernel::tp_read(ctx, base.wrapping_add(index * 8)).unwrap_or(0)
}

/// A syscall on file descriptor argument 0: note it if the fd is a socket.
#[inline(always)]
fn syscall_enter(ctx: &TracePointContext, source: DataSource, direction: DataDirection, io_shape: u32) {
    if is_self() || layout!(syscall_args) == kscope_common::OFFSET_MISSING {
        return;
    }
    let fd = tp_arg(ctx, 0);
    let Ok(sk) = kernel::current_fd_socket_sock(fd as u32) else {
        return;
    };
    let name = match source {
        DataSource::Sendto | DataSource::Recvfrom => tp_arg(ctx, 4),
        _ => 0,
    };
    let pending = PendingIo {
        sk: 0,
        ptr: tp_arg(ctx, 1),
        count: tp_arg(ctx, 2),
        name,
        shape: io_shape,
        source: source as u32,
        direction: direction as u32,
        protocol: 0,
        meta_in_kernel: 0,
        _pad: 0,
    };
    remember(sk, pending);
}

#[inline(always)]
fn syscall_exit<const SHAPE: u32>(ctx: &TracePointContext) -> u32 {
    let ret: i64 = kernel::tp_read(ctx, layout!(syscall_ret)).unwrap_or(-1);
    finish::<_, SHAPE>(ctx, HookFormId::Tracepoint, ret);
    0
}

macro_rules! syscall_programs {
    ($($enter:ident, $exit:ident, $enter_tp:literal, $exit_tp:literal, $source:ident, $direction:ident, $shape:ident;)*) => {$(
        #[tracepoint(category = "syscalls", name = $enter_tp)]
        pub fn $enter(ctx: TracePointContext) -> u32 {
            syscall_enter(&ctx, DataSource::$source, DataDirection::$direction, shape::$shape);
            0
        }

        #[tracepoint(category = "syscalls", name = $exit_tp)]
        pub fn $exit(ctx: TracePointContext) -> u32 {
            syscall_exit::<{ shape::$shape }>(&ctx)
        }
    )*};
}

syscall_programs! {
    data_read_enter, data_read_exit, "sys_enter_read", "sys_exit_read", Read, Recv, BUFFER;
    data_write_enter, data_write_exit, "sys_enter_write", "sys_exit_write", Write, Send, BUFFER;
    data_readv_enter, data_readv_exit, "sys_enter_readv", "sys_exit_readv", Readv, Recv, IOVEC;
    data_writev_enter, data_writev_exit, "sys_enter_writev", "sys_exit_writev", Writev, Send, IOVEC;
    data_sendto_enter, data_sendto_exit, "sys_enter_sendto", "sys_exit_sendto", Sendto, Send, BUFFER;
    data_recvfrom_enter, data_recvfrom_exit, "sys_enter_recvfrom", "sys_exit_recvfrom", Recvfrom, Recv, BUFFER;
    data_sendmsg_enter, data_sendmsg_exit, "sys_enter_sendmsg", "sys_exit_sendmsg", Sendmsg, Send, MSGHDR;
    data_recvmsg_enter, data_recvmsg_exit, "sys_enter_recvmsg", "sys_exit_recvmsg", Recvmsg, Recv, MSGHDR;
    data_sendmmsg_enter, data_sendmmsg_exit, "sys_enter_sendmmsg", "sys_exit_sendmmsg", Sendmmsg, Send, MMSGHDR;
    data_recvmmsg_enter, data_recvmmsg_exit, "sys_enter_recvmmsg", "sys_exit_recvmmsg", Recvmmsg, Recv, MMSGHDR;
    data_sendfile_enter, data_sendfile_exit, "sys_enter_sendfile64", "sys_exit_sendfile64", Sendfile, Send, UNCAPTURED;
}

// ---- kprobe and fentry forms ----

/// A kernel send/receive function's `(sk, msg)`: note where `msg`'s
/// iterator points before the call moves it.
#[inline(always)]
fn function_enter(sk: u64, msg: u64, source: DataSource, direction: DataDirection) {
    if is_self() || sk == 0 || msg == 0 {
        return;
    }
    let iter = msg + u64::from(offset!(msghdr_msg_iter));
    let iter_type: u8 = kernel::read(iter, offset!(iov_iter_type)).unwrap_or(u8::MAX);
    let (io_shape, ptr, count) = if u32::from(iter_type) == offset!(iter_ubuf_value) {
        (shape::BUFFER, kernel::read::<u64>(iter, offset!(iov_iter_ubuf)).unwrap_or(0), 1)
    } else if u32::from(iter_type) == offset!(iter_iovec_value) {
        (
            shape::IOVEC,
            kernel::read::<u64>(iter, offset!(iov_iter_iov)).unwrap_or(0),
            kernel::read::<u64>(iter, offset!(iov_iter_nr_segs)).unwrap_or(0),
        )
    } else {
        (shape::UNCAPTURED, 0, 0)
    };
    let pending = PendingIo {
        sk: 0,
        ptr,
        count,
        name: kernel::read(msg, offset!(msghdr_msg_name)).unwrap_or(0),
        shape: io_shape,
        source: source as u32,
        direction: direction as u32,
        protocol: 0,
        meta_in_kernel: 1,
        _pad: 0,
    };
    remember(sk, pending);
}

/// The hooked functions return `int`: only the low half of the return
/// register is theirs. `return -EAGAIN` leaves 0x00000000_fffffff5 in it,
/// which read whole would count as 4 GiB received.
#[inline(always)]
fn function_ret(raw: i64) -> i64 {
    i64::from(raw as i32)
}

/// `tcp_sendpage(sk, page, offset, size, flags)`: sendfile and splice into
/// TCP before 6.5. The bytes are page-cache pages, so they are counted,
/// not captured.
#[inline(always)]
fn sendpage_enter(sk: u64) {
    if is_self() || sk == 0 {
        return;
    }
    let pending = PendingIo {
        sk: 0,
        ptr: 0,
        count: 0,
        name: 0,
        shape: shape::UNCAPTURED,
        source: DataSource::TcpSendpage as u32,
        direction: DataDirection::Send as u32,
        protocol: 0,
        meta_in_kernel: 1,
        _pad: 0,
    };
    remember(sk, pending);
}

#[kprobe]
pub fn data_tcp_sendpage_kp(ctx: ProbeContext) -> u32 {
    sendpage_enter(ctx.arg(0).unwrap_or(0));
    0
}

#[kretprobe]
pub fn data_tcp_sendpage_krp(ctx: RetProbeContext) -> u32 {
    let ret: i64 = ctx.ret();
    finish::<_, { shape::UNCAPTURED }>(&ctx, HookFormId::Kprobe, function_ret(ret));
    0
}

#[fentry(function = "tcp_sendpage")]
pub fn data_tcp_sendpage_fe(ctx: FEntryContext) -> u32 {
    sendpage_enter(ctx.arg(0));
    0
}

#[fexit(function = "tcp_sendpage")]
pub fn data_tcp_sendpage_fx(ctx: FExitContext) -> u32 {
    let ret: i64 = ctx.ret().unwrap_or(-1);
    finish::<_, { shape::UNCAPTURED }>(&ctx, HookFormId::Fentry, function_ret(ret));
    0
}

macro_rules! function_programs {
    ($($kprobe:ident, $kretprobe:ident, $fentry:ident, $fexit:ident, $function:literal, $source:ident, $direction:ident;)*) => {$(
        #[kprobe]
        pub fn $kprobe(ctx: ProbeContext) -> u32 {
            function_enter(ctx.arg(0).unwrap_or(0), ctx.arg(1).unwrap_or(0), DataSource::$source, DataDirection::$direction);
            0
        }

        #[kretprobe]
        pub fn $kretprobe(ctx: RetProbeContext) -> u32 {
            let ret = function_ret(ctx.ret());
            finish::<_, 0>(&ctx, HookFormId::Kprobe, ret);
            0
        }

        #[fentry(function = $function)]
        pub fn $fentry(ctx: FEntryContext) -> u32 {
            function_enter(ctx.arg(0), ctx.arg(1), DataSource::$source, DataDirection::$direction);
            0
        }

        #[fexit(function = $function)]
        pub fn $fexit(ctx: FExitContext) -> u32 {
            let ret = function_ret(ctx.ret().unwrap_or(-1));
            finish::<_, 0>(&ctx, HookFormId::Fentry, ret);
            0
        }
    )*};
}

function_programs! {
    data_tcp_send_kp, data_tcp_send_krp, data_tcp_send_fe, data_tcp_send_fx, "tcp_sendmsg", TcpSendmsg, Send;
    data_tcp_recv_kp, data_tcp_recv_krp, data_tcp_recv_fe, data_tcp_recv_fx, "tcp_recvmsg", TcpRecvmsg, Recv;
    data_udp_send_kp, data_udp_send_krp, data_udp_send_fe, data_udp_send_fx, "udp_sendmsg", UdpSendmsg, Send;
    data_udp_recv_kp, data_udp_recv_krp, data_udp_recv_fe, data_udp_recv_fx, "udp_recvmsg", UdpRecvmsg, Recv;
    data_udp6_send_kp, data_udp6_send_krp, data_udp6_send_fe, data_udp6_send_fx, "udpv6_sendmsg", UdpSendmsg, Send;
    data_udp6_recv_kp, data_udp6_recv_krp, data_udp6_recv_fe, data_udp6_recv_fx, "udpv6_recvmsg", UdpRecvmsg, Recv;
}
