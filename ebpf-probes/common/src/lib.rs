//! The records kscope's kernel programs write into the per-CPU event buffers,
//! and the read-only configuration the daemon hands them at load time.
//!
//! Every type is `#[repr(C)]` with explicit padding so that the kernel and the
//! daemon agree on the layout byte for byte; flags are `u32`, never `bool`,
//! so no type has implicit padding (which `aya::Pod` would make unsound).
#![no_std]

pub mod profile;

/// Length of a task's `comm`, as in the kernel's `TASK_COMM_LEN`.
pub const COMM_LEN: usize = 16;
/// Bytes of an exec's filename that the kernel program copies.
pub const FILENAME_LEN: usize = 256;

/// Discriminant in every event's header; the decoder rejects anything else.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    ProcessExec = 1,
    ProcessExit = 2,
    TcpConnect = 3,
    TcpAccept = 4,
    TcpClose = 5,
    /// Leading bytes of one socket send or receive: a [`SocketDataHeader`]
    /// followed by `captured_len` payload bytes.
    SocketData = 6,
    /// A TCP segment retransmitted: [`TcpRetransmitEvent`].
    TcpRetransmit = 7,
}

impl EventKind {
    pub const fn from_u32(value: u32) -> Option<Self> {
        match value {
            1 => Some(Self::ProcessExec),
            2 => Some(Self::ProcessExit),
            3 => Some(Self::TcpConnect),
            4 => Some(Self::TcpAccept),
            5 => Some(Self::TcpClose),
            6 => Some(Self::SocketData),
            7 => Some(Self::TcpRetransmit),
            _ => None,
        }
    }
}

/// Which hook form produced an event; carried so that a mixed-form run can be
/// told apart in the output.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HookFormId {
    Kprobe = 1,
    Fentry = 2,
    Tracepoint = 3,
}

impl HookFormId {
    pub const fn from_u32(value: u32) -> Option<Self> {
        match value {
            1 => Some(Self::Kprobe),
            2 => Some(Self::Fentry),
            3 => Some(Self::Tracepoint),
            _ => None,
        }
    }
}

/// Fields every event starts with. `pid` is the thread-group id (what users
/// call the pid) and `tid` the thread; both are as seen from the initial pid
/// namespace.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct EventHeader {
    pub kind: u32,
    pub hook_form: u32,
    pub pid: u32,
    pub tid: u32,
    /// `bpf_ktime_get_ns`: CLOCK_MONOTONIC, nanoseconds.
    pub timestamp_ns: u64,
    pub cgroup_id: u64,
    pub comm: [u8; COMM_LEN],
}

impl EventHeader {
    pub const fn zeroed() -> Self {
        Self { kind: 0, hook_form: 0, pid: 0, tid: 0, timestamp_ns: 0, cgroup_id: 0, comm: [0; COMM_LEN] }
    }
}

/// A successful execve/execveat.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ProcessExecEvent {
    pub header: EventHeader,
    pub ppid: u32,
    /// Bytes of `filename` that hold the name (without its NUL).
    pub filename_len: u32,
    /// Non-zero when the kernel's filename was longer than `FILENAME_LEN - 1`.
    pub filename_truncated: u32,
    pub _pad: u32,
    pub filename: [u8; FILENAME_LEN],
}

/// A thread-group leader's exit.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ProcessExitEvent {
    pub header: EventHeader,
    pub ppid: u32,
    /// The kernel's wait status: exit code in bits 8..16, terminating signal
    /// in bits 0..7.
    pub exit_status: u32,
    /// Time since the process started (`task_struct.start_time`).
    pub lifetime_ns: u64,
}

/// Which end of a TCP connection the traced process is.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TcpRole {
    Client = 1,
    Server = 2,
}

impl TcpRole {
    pub const fn from_u32(value: u32) -> Option<Self> {
        match value {
            1 => Some(Self::Client),
            2 => Some(Self::Server),
            _ => None,
        }
    }
}

pub const AF_INET: u16 = 2;
pub const AF_INET6: u16 = 10;

/// One step of a TCP connection's life: connect, accept or close. Addresses
/// are in network byte order (IPv4 in the first four bytes); ports are in
/// host byte order.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct TcpEvent {
    pub header: EventHeader,
    /// The kernel's `struct sock` address: joins connect/accept to close.
    pub sock_id: u64,
    pub role: u32,
    pub family: u32,
    pub local_port: u16,
    pub remote_port: u16,
    /// Non-zero on a close when the connection was never established
    /// (a refused or timed-out connect).
    pub never_established: u32,
    pub local_addr: [u8; 16],
    pub remote_addr: [u8; 16],
    /// On close: `tcp_sock.bytes_sent`, payload bytes sent (retransmits included).
    pub bytes_sent: u64,
    /// On close: payload bytes received (`tcp_sock.bytes_received` less the
    /// peer's FIN).
    pub bytes_received: u64,
    /// On close: time since connect or accept was seen; zero when kscope
    /// started after the connection opened.
    pub duration_ns: u64,
}

/// Kernel stack frames a retransmit event carries (innermost first).
pub const KERNEL_STACK_FRAMES: usize = 32;

/// One retransmitted TCP segment (SYNs included), with the connection as
/// the kernel saw it and the kernel stack that retransmitted it. The header
/// names the connection's owner (the task that connected or accepted) when
/// the TCP sensor saw it, else pid 0: retransmits run in timers and
/// softirqs, where the current task is whoever was interrupted.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct TcpRetransmitEvent {
    pub header: EventHeader,
    /// `struct sock` address, as `TcpEvent::sock_id`.
    pub sock_id: u64,
    pub family: u32,
    /// The connection's TCP state (`tcp_state`) at the retransmit.
    pub state: u32,
    pub local_port: u16,
    pub remote_port: u16,
    /// Bytes of `stack` that `bpf_get_stack` filled (a multiple of 8); 0
    /// when it failed.
    pub stack_bytes: u32,
    pub local_addr: [u8; 16],
    pub remote_addr: [u8; 16],
    pub stack: [u64; KERNEL_STACK_FRAMES],
}

/// What the packet drop sensor aggregates by, in the kernel: one counter
/// per distinct key in the `DROPS` map, so a drop storm costs a map update
/// per packet and no event.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DropKey {
    /// Kernel address the packet was freed from (`skb:kfree_skb`'s
    /// `location`: the caller of `kfree_skb_reason`).
    pub location: u64,
    /// `enum skb_drop_reason` as this kernel numbers it (0 before 5.17,
    /// whose tracepoint has no reason).
    pub reason: u32,
    /// Inode of the network namespace of the device the packet was on
    /// (`/proc/PID/ns/net` names it `net:[inode]`); 0 when the packet had no
    /// device (or the offsets are unknown).
    pub netns: u32,
    /// `skb->protocol`, an `ETH_P_*` value in host byte order.
    pub protocol: u16,
    pub _pad: u16,
    pub _pad2: u32,
}

/// Distinct (location, reason, protocol) keys the kernel tracks; drops of
/// a new key beyond this are counted in `counter_slot::DROPS_UNTRACKED`.
pub const DROP_KEYS_MAX: u32 = 4096;

/// Largest capture the kernel programs can make per call (exclusive): the
/// capture size is masked with `DATA_CAPTURE_MAX - 1`, which the verifier
/// needs to bound every copy. A power of two.
pub const DATA_CAPTURE_MAX: usize = 8192;
/// Default bytes captured per call: a typical HTTP header block.
pub const DATA_CAPTURE_DEFAULT: u32 = 4096;

#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DataDirection {
    Send = 1,
    Recv = 2,
}

impl DataDirection {
    pub const fn from_u32(value: u32) -> Option<Self> {
        match value {
            1 => Some(Self::Send),
            2 => Some(Self::Recv),
            _ => None,
        }
    }
}

/// Which call moved the bytes: a syscall (tracepoint form) or a kernel
/// function (kprobe and fentry forms).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DataSource {
    Read = 1,
    Write = 2,
    Readv = 3,
    Writev = 4,
    Sendto = 5,
    Recvfrom = 6,
    Sendmsg = 7,
    Recvmsg = 8,
    Sendmmsg = 9,
    Recvmmsg = 10,
    Sendfile = 11,
    TcpSendmsg = 12,
    TcpRecvmsg = 13,
    UdpSendmsg = 14,
    UdpRecvmsg = 15,
    /// sendfile/splice into TCP before 6.5 (pages, counted not captured).
    TcpSendpage = 16,
}

impl DataSource {
    pub const ALL: [Self; 16] = [
        Self::Read,
        Self::Write,
        Self::Readv,
        Self::Writev,
        Self::Sendto,
        Self::Recvfrom,
        Self::Sendmsg,
        Self::Recvmsg,
        Self::Sendmmsg,
        Self::Recvmmsg,
        Self::Sendfile,
        Self::TcpSendmsg,
        Self::TcpRecvmsg,
        Self::UdpSendmsg,
        Self::UdpRecvmsg,
        Self::TcpSendpage,
    ];

    pub const fn from_u32(value: u32) -> Option<Self> {
        let mut i = 0;
        while i < Self::ALL.len() {
            if Self::ALL[i] as u32 == value {
                return Some(Self::ALL[i]);
            }
            i += 1;
        }
        None
    }

    pub const fn name(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Write => "write",
            Self::Readv => "readv",
            Self::Writev => "writev",
            Self::Sendto => "sendto",
            Self::Recvfrom => "recvfrom",
            Self::Sendmsg => "sendmsg",
            Self::Recvmsg => "recvmsg",
            Self::Sendmmsg => "sendmmsg",
            Self::Recvmmsg => "recvmmsg",
            Self::Sendfile => "sendfile",
            Self::TcpSendmsg => "tcp_sendmsg",
            Self::TcpRecvmsg => "tcp_recvmsg",
            Self::UdpSendmsg => "udp_sendmsg",
            Self::UdpRecvmsg => "udp_recvmsg",
            Self::TcpSendpage => "tcp_sendpage",
        }
    }
}

pub const IPPROTO_UDP: u16 = 17;

/// One send or receive on a TCP or UDP socket (one message of a
/// `sendmmsg`/`recvmmsg`). `captured_len` payload bytes follow it in the
/// record. Addresses as in [`TcpEvent`]; `peer_*` is the datagram's own
/// address on an unconnected UDP socket (`sendto`, `recvfrom`, `msg_name`),
/// family zero otherwise.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct SocketDataHeader {
    pub header: EventHeader,
    /// `struct sock` address, as `TcpEvent::sock_id`.
    pub sock_id: u64,
    /// Bytes the call moved. More than `captured_len` means the rest was
    /// not captured (capture size, or pages the kernel sent itself).
    pub total_len: u64,
    pub captured_len: u32,
    pub direction: u32,
    pub source: u32,
    /// IPPROTO_TCP or IPPROTO_UDP.
    pub protocol: u32,
    pub family: u32,
    pub local_port: u16,
    pub remote_port: u16,
    pub local_addr: [u8; 16],
    pub remote_addr: [u8; 16],
    pub peer_family: u32,
    pub peer_port: u16,
    pub _pad: u16,
    pub peer_addr: [u8; 16],
}

/// The read-only settings of the socket data sensor.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SocketDataConfig {
    /// Bytes captured per call, below [`DATA_CAPTURE_MAX`].
    pub capture_bytes: u32,
    /// kscope's own process, whose sockets are never captured (its export
    /// traffic would feed back into itself).
    pub self_tgid: u32,
}

impl SocketDataConfig {
    pub const fn default_config() -> Self {
        Self { capture_bytes: DATA_CAPTURE_DEFAULT, self_tgid: 0 }
    }
}

/// Byte offsets of kernel struct members, read from the running kernel's BTF
/// by the daemon and written into the programs' read-only data before load.
/// A value of `u32::MAX` means "not present on this kernel"; the program
/// then leaves the field zero instead of reading a wrong address.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelOffsets {
    pub task_real_parent: u32,
    pub task_tgid: u32,
    pub task_start_time: u32,
    pub task_exit_code: u32,
    pub task_group_leader: u32,
    pub task_files: u32,
    pub files_fdt: u32,
    pub fdtable_fd: u32,
    pub fdtable_max_fds: u32,
    pub file_private_data: u32,
    pub socket_sk: u32,
    pub sk_daddr: u32,
    pub sk_rcv_saddr: u32,
    pub sk_dport: u32,
    pub sk_num: u32,
    pub sk_family: u32,
    pub sk_v6_daddr: u32,
    pub sk_v6_rcv_saddr: u32,
    pub tcp_bytes_received: u32,
    pub tcp_bytes_sent: u32,
    pub binprm_filename: u32,
    /// `sock_common.skc_state`, a single byte.
    pub sk_state: u32,
    pub file_f_inode: u32,
    pub inode_i_mode: u32,
    pub sk_protocol: u32,
    /// Kernel `struct msghdr` and its `iov_iter`.
    pub msghdr_msg_name: u32,
    pub msghdr_msg_iter: u32,
    pub iov_iter_type: u32,
    /// `iov_iter.ubuf` (single user buffer).
    pub iov_iter_ubuf: u32,
    /// `iov_iter.__iov` (6.4+) or `iov` (before): the user iovec array.
    pub iov_iter_iov: u32,
    pub iov_iter_nr_segs: u32,
    /// Values of `enum iter_type` on this kernel (they were renumbered in 6.4).
    pub iter_ubuf_value: u32,
    pub iter_iovec_value: u32,
    /// `sock.sk_flags` (an unsigned long of `enum sock_flags` bits).
    pub sk_flags: u32,
    /// `sk_buff.dev`, `net_device.nd_net` (its `struct net *`), and the
    /// network namespace's inode within `struct net` (`ns.inum`).
    pub skb_dev: u32,
    pub netdev_nd_net: u32,
    pub net_ns_inum: u32,
}

pub const OFFSET_MISSING: u32 = u32::MAX;

impl KernelOffsets {
    pub const fn missing() -> Self {
        Self {
            task_real_parent: OFFSET_MISSING,
            task_tgid: OFFSET_MISSING,
            task_start_time: OFFSET_MISSING,
            task_exit_code: OFFSET_MISSING,
            task_group_leader: OFFSET_MISSING,
            task_files: OFFSET_MISSING,
            files_fdt: OFFSET_MISSING,
            fdtable_fd: OFFSET_MISSING,
            fdtable_max_fds: OFFSET_MISSING,
            file_private_data: OFFSET_MISSING,
            socket_sk: OFFSET_MISSING,
            sk_daddr: OFFSET_MISSING,
            sk_rcv_saddr: OFFSET_MISSING,
            sk_dport: OFFSET_MISSING,
            sk_num: OFFSET_MISSING,
            sk_family: OFFSET_MISSING,
            sk_v6_daddr: OFFSET_MISSING,
            sk_v6_rcv_saddr: OFFSET_MISSING,
            tcp_bytes_received: OFFSET_MISSING,
            tcp_bytes_sent: OFFSET_MISSING,
            binprm_filename: OFFSET_MISSING,
            sk_state: OFFSET_MISSING,
            file_f_inode: OFFSET_MISSING,
            inode_i_mode: OFFSET_MISSING,
            sk_protocol: OFFSET_MISSING,
            msghdr_msg_name: OFFSET_MISSING,
            msghdr_msg_iter: OFFSET_MISSING,
            iov_iter_type: OFFSET_MISSING,
            iov_iter_ubuf: OFFSET_MISSING,
            iov_iter_iov: OFFSET_MISSING,
            iov_iter_nr_segs: OFFSET_MISSING,
            iter_ubuf_value: OFFSET_MISSING,
            iter_iovec_value: OFFSET_MISSING,
            sk_flags: OFFSET_MISSING,
            skb_dev: OFFSET_MISSING,
            netdev_nd_net: OFFSET_MISSING,
            net_ns_inum: OFFSET_MISSING,
        }
    }
}

/// Where the fields the tracepoint programs read sit in each tracepoint's
/// record, from `/sys/kernel/tracing/events/*/*/format`. The layout is
/// published by the kernel but not frozen: it has shifted between releases.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TracepointLayout {
    /// sched:sched_process_exec `__data_loc char[] filename`.
    pub exec_filename: u32,
    /// sched:sched_process_exit `group_dead` (absent before 6.x: `OFFSET_MISSING`).
    pub exit_group_dead: u32,
    /// sock:inet_sock_set_state fields.
    pub sk_skaddr: u32,
    pub sk_oldstate: u32,
    pub sk_newstate: u32,
    pub sk_sport: u32,
    pub sk_dport: u32,
    pub sk_family: u32,
    pub sk_protocol: u32,
    pub sk_saddr: u32,
    pub sk_daddr: u32,
    pub sk_saddr_v6: u32,
    pub sk_daddr_v6: u32,
    /// syscalls:sys_exit_accept{,4} `ret`.
    pub accept_ret: u32,
    /// First argument of a `syscalls:sys_enter_*` record (`sys_enter_read`'s
    /// `fd`); the others follow, eight bytes each.
    pub syscall_args: u32,
    /// `ret` of a `syscalls:sys_exit_*` record (`sys_exit_read`'s).
    pub syscall_ret: u32,
    /// tcp:tcp_retransmit_skb fields.
    pub rtx_skaddr: u32,
    pub rtx_state: u32,
    pub rtx_sport: u32,
    pub rtx_dport: u32,
    pub rtx_family: u32,
    pub rtx_saddr: u32,
    pub rtx_daddr: u32,
    pub rtx_saddr_v6: u32,
    pub rtx_daddr_v6: u32,
    /// skb:kfree_skb fields (`reason` is absent before 5.17).
    pub drop_skbaddr: u32,
    pub drop_location: u32,
    pub drop_protocol: u32,
    pub drop_reason: u32,
}

impl TracepointLayout {
    pub const fn missing() -> Self {
        Self {
            exec_filename: OFFSET_MISSING,
            exit_group_dead: OFFSET_MISSING,
            sk_skaddr: OFFSET_MISSING,
            sk_oldstate: OFFSET_MISSING,
            sk_newstate: OFFSET_MISSING,
            sk_sport: OFFSET_MISSING,
            sk_dport: OFFSET_MISSING,
            sk_family: OFFSET_MISSING,
            sk_protocol: OFFSET_MISSING,
            sk_saddr: OFFSET_MISSING,
            sk_daddr: OFFSET_MISSING,
            sk_saddr_v6: OFFSET_MISSING,
            sk_daddr_v6: OFFSET_MISSING,
            accept_ret: OFFSET_MISSING,
            syscall_args: OFFSET_MISSING,
            syscall_ret: OFFSET_MISSING,
            rtx_skaddr: OFFSET_MISSING,
            rtx_state: OFFSET_MISSING,
            rtx_sport: OFFSET_MISSING,
            rtx_dport: OFFSET_MISSING,
            rtx_family: OFFSET_MISSING,
            rtx_saddr: OFFSET_MISSING,
            rtx_daddr: OFFSET_MISSING,
            rtx_saddr_v6: OFFSET_MISSING,
            rtx_daddr_v6: OFFSET_MISSING,
            drop_skbaddr: OFFSET_MISSING,
            drop_location: OFFSET_MISSING,
            drop_protocol: OFFSET_MISSING,
            drop_reason: OFFSET_MISSING,
        }
    }
}

/// The kernel's TCP states the programs test for (include/net/tcp_states.h).
pub mod tcp_state {
    pub const ESTABLISHED: i32 = 1;
    pub const SYN_SENT: i32 = 2;
    pub const SYN_RECV: i32 = 3;
    pub const FIN_WAIT2: i32 = 5;
    pub const CLOSE: i32 = 7;
    pub const CLOSE_WAIT: i32 = 8;
    pub const LAST_ACK: i32 = 9;
    pub const LISTEN: i32 = 10;
    pub const CLOSING: i32 = 11;
}

pub const IPPROTO_TCP: u16 = 6;

/// Bit of `sock.sk_flags` that `tcp_fin` sets when the peer's FIN is
/// processed (`enum sock_flags`: SOCK_DEAD is 0, SOCK_DONE 1; unchanged
/// since 2.6).
pub const SOCK_DONE: u32 = 1;

/// Names of the globals and maps the daemon addresses by string; one place so
/// the two sides cannot drift.
pub mod names {
    pub const KERNEL_OFFSETS: &str = "KERNEL_OFFSETS";
    pub const TRACEPOINT_LAYOUT: &str = "TRACEPOINT_LAYOUT";
    pub const EVENTS: &str = "EVENTS";
    pub const EVENTS_EMITTED: &str = "EVENTS_EMITTED";
    pub const SOCKET_DATA_CONFIG: &str = "SOCKET_DATA_CONFIG";
    pub const DROPS: &str = "DROPS";
}

/// Slots of the per-CPU `EVENTS_EMITTED` counter array: how many events each
/// sensor handed to `bpf_perf_event_output`, and how many it failed to hand
/// over (the buffer was full), so the ledger can add up from the first stage.
pub mod counter_slot {
    pub const PROCESS_OUT: u32 = 0;
    pub const PROCESS_OUT_FAILED: u32 = 1;
    pub const TCP_OUT: u32 = 2;
    pub const TCP_OUT_FAILED: u32 = 3;
    pub const TCP_TABLE_FULL: u32 = 4;
    pub const DATA_OUT: u32 = 5;
    pub const DATA_OUT_FAILED: u32 = 6;
    /// A call whose arguments found the in-flight table full (not captured).
    pub const DATA_INFLIGHT_FULL: u32 = 7;
    /// Messages of a `sendmmsg`/`recvmmsg` beyond the ones the sensor
    /// reports per call (their bytes are not in any event).
    pub const DATA_MESSAGES_BEYOND_BATCH: u32 = 8;
    pub const RETRANSMIT_OUT: u32 = 9;
    pub const RETRANSMIT_OUT_FAILED: u32 = 10;
    /// Drops counted into the `DROPS` map. Not events: the drop sensor
    /// writes nothing into the event buffers, so its own event slot is
    /// [`NO_EVENTS`] and the ledger's sums stay those of events.
    pub const DROPS_COUNTED: u32 = 11;
    /// Drops of a new key when the `DROPS` map was full.
    pub const DROPS_UNTRACKED: u32 = 12;
    /// Never written (nor `NO_EVENTS + 1`): the event slot of a sensor that
    /// emits no events.
    pub const NO_EVENTS: u32 = 14;
    pub const COUNT: u32 = 16;
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: each type is repr(C), made only of integers and integer arrays,
    // with explicit padding fields, so every bit pattern is valid and no byte
    // is uninitialised.
    unsafe impl aya::Pod for super::KernelOffsets {}
    unsafe impl aya::Pod for super::TracepointLayout {}
    unsafe impl aya::Pod for super::SocketDataConfig {}
    unsafe impl aya::Pod for super::DropKey {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::size_of;

    // The decoder and the kernel programs agree on these sizes; a change here
    // is a wire change and must be deliberate.
    #[test]
    fn wire_sizes_are_fixed() {
        assert_eq!(size_of::<EventHeader>(), 48);
        assert_eq!(size_of::<ProcessExecEvent>(), 48 + 16 + FILENAME_LEN);
        assert_eq!(size_of::<ProcessExitEvent>(), 48 + 16);
        assert_eq!(size_of::<TcpEvent>(), 48 + 8 + 8 + 8 + 32 + 24);
        assert_eq!(size_of::<SocketDataHeader>(), 48 + 16 + 20 + 4 + 32 + 8 + 16);
        assert_eq!(size_of::<KernelOffsets>(), 37 * 4);
        assert_eq!(size_of::<TracepointLayout>(), 29 * 4);
        assert_eq!(size_of::<TcpRetransmitEvent>(), 48 + 8 + 8 + 8 + 32 + 8 * KERNEL_STACK_FRAMES);
        assert_eq!(size_of::<DropKey>(), 24);
    }

    #[test]
    fn kinds_round_trip() {
        for kind in [
            EventKind::ProcessExec,
            EventKind::ProcessExit,
            EventKind::TcpConnect,
            EventKind::TcpAccept,
            EventKind::TcpClose,
            EventKind::SocketData,
            EventKind::TcpRetransmit,
        ] {
            assert_eq!(EventKind::from_u32(kind as u32), Some(kind));
        }
        assert_eq!(EventKind::from_u32(0), None);
        assert_eq!(EventKind::from_u32(8), None);
        for source in DataSource::ALL {
            assert_eq!(DataSource::from_u32(source as u32), Some(source));
        }
        assert_eq!(DataSource::from_u32(0), None);
    }
}
