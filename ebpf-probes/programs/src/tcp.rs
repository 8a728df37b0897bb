//! TCP connection lifecycle: connect (client established), accept (server),
//! close, on three hook forms that share the state machine below.
//!
//! | step            | kprobe               | fentry              | tracepoint                         |
//! |-----------------|----------------------|---------------------|------------------------------------|
//! | who connects    | `tcp_connect`        | fentry `tcp_connect`| `inet_sock_set_state` CLOSE→SYN_SENT |
//! | state changes   | `tcp_set_state`      | fentry `tcp_set_state` | `sock:inet_sock_set_state`      |
//! | who accepts     | kretprobe `inet_csk_accept` | fexit `inet_csk_accept` | `sys_exit_accept{,4}` + fd → sock |
//!
//! A client's handshake completes in softirq context, where "current" is
//! whatever ran; so the connecting task is remembered per socket when it
//! calls connect, and the events carry that task.

use aya_ebpf::{
    EbpfContext,
    macros::{fentry, fexit, kprobe, kretprobe, map, tracepoint},
    maps::HashMap,
    programs::{FEntryContext, FExitContext, ProbeContext, RetProbeContext, TracePointContext},
};
use kscope_common::{
    AF_INET, AF_INET6, EventHeader, EventKind, HookFormId, IPPROTO_TCP, OFFSET_MISSING, SOCK_DONE, TcpEvent,
    TcpRole, counter_slot, tcp_state,
};

use crate::{
    emit::{count, current_header, output},
    kernel::{self, Endpoints, layout, offset, sock_endpoints},
};

/// What kscope knows of a live connection, by `struct sock` address.
#[derive(Clone, Copy)]
#[repr(C)]
struct Connection {
    /// The connecting or accepting task, as an event header template.
    owner: EventHeader,
    started_ns: u64,
    role: u32,
    established: u32,
}

/// Bounded: a socket that finds the table full is still reported, without
/// its owner or duration, and the miss is counted.
#[map]
static CONNECTIONS: HashMap<u64, Connection> = HashMap::with_max_entries(65536, 0);

/// The task that connected or accepted `sk`, when this sensor saw it
/// (other sensors name a connection's owner by it).
#[inline(always)]
pub(crate) fn connection_owner(sk: u64) -> Option<EventHeader> {
    unsafe { CONNECTIONS.get(sk) }.map(|conn| conn.owner).filter(|owner| owner.pid != 0)
}

/// Where a state change's addresses come from. Read only when an event is
/// emitted, because reading a sock costs several probe reads.
#[derive(Clone, Copy)]
enum EndpointSource<'a> {
    Sock(u64),
    Tracepoint(&'a TracePointContext),
}

impl EndpointSource<'_> {
    // Filled through `&mut` rather than returned: the BPF backend returns
    // large values by stack pointer, which the verifier refuses.
    #[inline(always)]
    fn fill(self, ends: &mut Endpoints) {
        match self {
            Self::Sock(sk) => sock_endpoints(sk, ends),
            Self::Tracepoint(ctx) => tracepoint_endpoints(ctx, ends),
        }
    }
}

/// Addresses from `sock:inet_sock_set_state`'s own record.
#[inline(always)]
fn tracepoint_endpoints(ctx: &TracePointContext, ends: &mut Endpoints) {
    let family: u16 = kernel::tp_read(ctx, layout!(sk_family)).unwrap_or(0);
    ends.family = u32::from(family);
    ends.local_port = kernel::tp_read(ctx, layout!(sk_sport)).unwrap_or(0);
    ends.remote_port = kernel::tp_read(ctx, layout!(sk_dport)).unwrap_or(0);
    if family == AF_INET {
        let local: [u8; 4] = kernel::tp_read(ctx, layout!(sk_saddr)).unwrap_or([0; 4]);
        let remote: [u8; 4] = kernel::tp_read(ctx, layout!(sk_daddr)).unwrap_or([0; 4]);
        ends.local_addr[..4].copy_from_slice(&local);
        ends.remote_addr[..4].copy_from_slice(&remote);
    } else if family == AF_INET6 {
        ends.local_addr = kernel::tp_read(ctx, layout!(sk_saddr_v6)).unwrap_or([0; 16]);
        ends.remote_addr = kernel::tp_read(ctx, layout!(sk_daddr_v6)).unwrap_or([0; 16]);
    }
}

#[inline(always)]
fn emit<C: EbpfContext>(
    ctx: &C,
    header: EventHeader,
    sk: u64,
    role: u32,
    source: EndpointSource<'_>,
    never_established: u32,
    bytes: (u64, u64),
    duration_ns: u64,
) {
    let mut ends = Endpoints::empty();
    source.fill(&mut ends);
    let event = TcpEvent {
        header,
        sock_id: sk,
        role,
        family: ends.family,
        local_port: ends.local_port,
        remote_port: ends.remote_port,
        never_established,
        local_addr: ends.local_addr,
        remote_addr: ends.remote_addr,
        bytes_sent: bytes.0,
        bytes_received: bytes.1,
        duration_ns,
    };
    output(ctx, &event, counter_slot::TCP_OUT);
}

/// The connecting task calls connect: remember it for the handshake's end.
#[inline(always)]
fn on_connect(sk: u64, form: HookFormId) {
    let owner = current_header(EventKind::TcpConnect as u32, form as u32);
    let conn = Connection { started_ns: owner.timestamp_ns, owner, role: TcpRole::Client as u32, established: 0 };
    if CONNECTIONS.insert(sk, conn, 0).is_err() {
        count(counter_slot::TCP_TABLE_FULL);
    }
}

/// The new states the state machine below acts on. About half of a
/// connection's changes (FIN_WAIT1, FIN_WAIT2, CLOSE_WAIT, LAST_ACK, ...)
/// are none of these and return after one read.
#[inline(always)]
fn acts_on(new: i32) -> bool {
    matches!(new, tcp_state::SYN_SENT | tcp_state::ESTABLISHED | tcp_state::CLOSE)
}

/// Every TCP state change, whichever form saw it.
#[inline(always)]
fn on_state_change<C: EbpfContext>(ctx: &C, form: HookFormId, sk: u64, old: i32, new: i32, ends: EndpointSource<'_>) {
    if new == tcp_state::ESTABLISHED && old == tcp_state::SYN_SENT {
        let Some(conn) = CONNECTIONS.get_ptr_mut(sk) else {
            return;
        };
        let conn = unsafe { &mut *conn };
        conn.established = 1;
        let mut header = conn.owner;
        header.kind = EventKind::TcpConnect as u32;
        header.hook_form = form as u32;
        header.timestamp_ns = unsafe { aya_ebpf::helpers::bpf_ktime_get_ns() };
        emit(ctx, header, sk, TcpRole::Client as u32, ends, 0, (0, 0), 0);
    } else if new == tcp_state::ESTABLISHED && old == tcp_state::SYN_RECV {
        // The accepting task is not known yet (this is softirq); accept
        // fills it in.
        let mut owner = EventHeader::zeroed();
        owner.timestamp_ns = unsafe { aya_ebpf::helpers::bpf_ktime_get_ns() };
        let conn = Connection { started_ns: owner.timestamp_ns, owner, role: TcpRole::Server as u32, established: 1 };
        if CONNECTIONS.insert(sk, conn, 0).is_err() {
            count(counter_slot::TCP_TABLE_FULL);
        }
    } else if new == tcp_state::CLOSE {
        on_close(ctx, form, sk, old, ends);
    }
}

#[inline(always)]
fn on_close<C: EbpfContext>(ctx: &C, form: HookFormId, sk: u64, old: i32, ends: EndpointSource<'_>) {
    let now = unsafe { aya_ebpf::helpers::bpf_ktime_get_ns() };
    let known = unsafe { CONNECTIONS.get(sk) }.copied();
    let (mut header, role, never_established, duration) = match known {
        Some(conn) => {
            let _ = CONNECTIONS.remove(sk);
            let never = u32::from(conn.established == 0);
            (conn.owner, conn.role, never, now.saturating_sub(conn.started_ns))
        }
        // Listeners and half-open children never were connections.
        None if old == tcp_state::SYN_RECV || old == tcp_state::LISTEN => return,
        // Opened before kscope started: reported with what the sock still
        // says. The task running now may be any task a softirq interrupted,
        // so the owner is reported unknown (pid 0) rather than guessed.
        None => (EventHeader::zeroed(), 0, 0, 0),
    };
    header.kind = EventKind::TcpClose as u32;
    header.hook_form = form as u32;
    header.timestamp_ns = now;
    // `bytes_received` is receive sequence space: the peer's FIN takes one
    // number of it, and `tcp_fin` marks the sock SOCK_DONE when it does. A
    // FIN_WAIT2 sock handed to a timewait sock before the FIN came never
    // got it. Without the flag's offset, states from which only a received
    // FIN leads to CLOSE tell (off by one in that FIN_WAIT2 case).
    let fin_received = match kernel::read::<u64>(sk, offset!(sk_flags)) {
        Ok(flags) => flags & (1 << SOCK_DONE) != 0,
        Err(_) => {
            matches!(old, tcp_state::FIN_WAIT2 | tcp_state::CLOSE_WAIT | tcp_state::LAST_ACK | tcp_state::CLOSING)
        }
    };
    let received = kernel::read::<u64>(sk, offset!(tcp_bytes_received)).unwrap_or(0);
    let bytes = (
        kernel::read::<u64>(sk, offset!(tcp_bytes_sent)).unwrap_or(0),
        received.saturating_sub(u64::from(fin_received)),
    );
    emit(ctx, header, sk, role, ends, never_established, bytes, duration);
}

/// The accepting task got `sk` from accept(): record it as the owner.
#[inline(always)]
fn on_accept<C: EbpfContext>(ctx: &C, form: HookFormId, sk: u64) {
    if sk == 0 {
        return;
    }
    let header = current_header(EventKind::TcpAccept as u32, form as u32);
    match CONNECTIONS.get_ptr_mut(sk) {
        Some(conn) => unsafe { (*conn).owner = header },
        None => {
            let conn = Connection {
                started_ns: header.timestamp_ns,
                owner: header,
                role: TcpRole::Server as u32,
                established: 1,
            };
            if CONNECTIONS.insert(sk, conn, 0).is_err() {
                count(counter_slot::TCP_TABLE_FULL);
            }
        }
    }
    emit(ctx, header, sk, TcpRole::Server as u32, EndpointSource::Sock(sk), 0, (0, 0), 0);
}

#[inline(always)]
fn sock_state(sk: u64) -> i32 {
    i32::from(kernel::read::<u8>(sk, offset!(sk_state)).unwrap_or(0))
}

// ---- tracepoint form ----

#[tracepoint(category = "sock", name = "inet_sock_set_state")]
pub fn tcp_state_tp(ctx: TracePointContext) -> u32 {
    if layout!(sk_skaddr) == OFFSET_MISSING {
        return 0;
    }
    let new: i32 = kernel::tp_read(&ctx, layout!(sk_newstate)).unwrap_or(0);
    if !acts_on(new) {
        return 0;
    }
    let protocol: u16 = kernel::tp_read(&ctx, layout!(sk_protocol)).unwrap_or(0);
    if protocol != IPPROTO_TCP {
        return 0;
    }
    let sk: u64 = kernel::tp_read(&ctx, layout!(sk_skaddr)).unwrap_or(0);
    let old: i32 = kernel::tp_read(&ctx, layout!(sk_oldstate)).unwrap_or(0);
    if old == tcp_state::CLOSE && new == tcp_state::SYN_SENT {
        on_connect(sk, HookFormId::Tracepoint);
        return 0;
    }
    on_state_change(&ctx, HookFormId::Tracepoint, sk, old, new, EndpointSource::Tracepoint(&ctx));
    0
}

/// Shared by `sys_exit_accept` and `sys_exit_accept4`, whose records match.
#[inline(always)]
fn accept_tp(ctx: &TracePointContext) -> u32 {
    let fd: i64 = kernel::tp_read(ctx, layout!(accept_ret)).unwrap_or(-1);
    if fd < 0 {
        return 0;
    }
    if let Ok(sk) = kernel::current_fd_sock(fd as u32) {
        on_accept(ctx, HookFormId::Tracepoint, sk);
    }
    0
}

#[tracepoint(category = "syscalls", name = "sys_exit_accept4")]
pub fn tcp_accept4_tp(ctx: TracePointContext) -> u32 {
    accept_tp(&ctx)
}

#[tracepoint(category = "syscalls", name = "sys_exit_accept")]
pub fn tcp_accept_tp(ctx: TracePointContext) -> u32 {
    accept_tp(&ctx)
}

// ---- kprobe form ----

#[kprobe]
pub fn tcp_connect_kprobe(ctx: ProbeContext) -> u32 {
    let sk: u64 = ctx.arg(0).unwrap_or(0);
    on_connect(sk, HookFormId::Kprobe);
    0
}

#[kprobe]
pub fn tcp_set_state_kprobe(ctx: ProbeContext) -> u32 {
    let sk: u64 = ctx.arg(0).unwrap_or(0);
    let new: i32 = ctx.arg(1).unwrap_or(0);
    if acts_on(new) {
        on_state_change(&ctx, HookFormId::Kprobe, sk, sock_state(sk), new, EndpointSource::Sock(sk));
    }
    0
}

#[kretprobe]
pub fn tcp_accept_kretprobe(ctx: RetProbeContext) -> u32 {
    let sk: u64 = ctx.ret();
    on_accept(&ctx, HookFormId::Kprobe, sk);
    0
}

// ---- fentry form ----

#[fentry(function = "tcp_connect")]
pub fn tcp_connect_fentry(ctx: FEntryContext) -> u32 {
    let sk: u64 = ctx.arg(0);
    on_connect(sk, HookFormId::Fentry);
    0
}

#[fentry(function = "tcp_set_state")]
pub fn tcp_set_state_fentry(ctx: FEntryContext) -> u32 {
    let sk: u64 = ctx.arg(0);
    let new: i32 = ctx.arg(1);
    if acts_on(new) {
        on_state_change(&ctx, HookFormId::Fentry, sk, sock_state(sk), new, EndpointSource::Sock(sk));
    }
    0
}

#[fexit(function = "inet_csk_accept")]
pub fn tcp_accept_fexit(ctx: FExitContext) -> u32 {
    let sk: u64 = ctx.ret().unwrap_or(0);
    on_accept(&ctx, HookFormId::Fentry, sk);
    0
}
