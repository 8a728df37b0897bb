//! Kernel events: process exec and exit, TCP connect, accept, close and
//! retransmit, and (with `--data-events`) the metadata of each send and
//! receive.

use std::{
    borrow::Cow,
    net::{IpAddr, SocketAddr},
};

use serde::{Deserialize, Serialize};

use crate::{Direction, HookForm, Role, SockId, Transport};

/// What every event and exchange says about when, where and who.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Origin<'a> {
    pub time_unix_nano: u64,
    /// The form of the program that saw it.
    pub hook_form: HookForm,
    pub pid: u32,
    pub tid: u32,
    pub comm: Cow<'a, str>,
    /// The cgroup v2 id of the task.
    pub cgroup_id: u64,
}

/// `process.exec`: a program replaced the process image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecRecord<'a> {
    #[serde(flatten)]
    pub origin: Origin<'a>,
    pub ppid: u32,
    pub filename: Cow<'a, str>,
    /// The kernel handed over only the first part of a longer path.
    pub filename_truncated: bool,
}

/// `process.exit`: the whole process ended (not one thread).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitRecord<'a> {
    #[serde(flatten)]
    pub origin: Origin<'a>,
    pub ppid: u32,
    /// `exit(code)`; null when a signal ended it.
    pub exit_code: Option<u8>,
    /// The signal that ended it, if one did.
    pub signal: Option<u8>,
    /// From exec (or fork, for a process that never exec'd) to exit.
    pub lifetime_ns: u64,
}

/// `tcp.connect`, `tcp.accept` and `tcp.close`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TcpRecord<'a> {
    #[serde(flatten)]
    pub origin: Origin<'a>,
    pub sock_id: SockId,
    /// Null when kscope did not see the connection open.
    pub role: Option<Role>,
    pub local_addr: IpAddr,
    pub local_port: u16,
    pub remote_addr: IpAddr,
    pub remote_port: u16,
    /// On `tcp.close` only.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub close: Option<CloseDetail>,
}

/// What a closed connection moved, and how long it lived.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CloseDetail {
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub duration_ns: u64,
    /// Closed before the handshake completed (refused, timed out).
    pub never_established: bool,
}

/// `tcp.retransmit`: a segment sent again, with the kernel stack that sent
/// it, symbolized (raw addresses would give away the kernel's KASLR offset).
/// `pid`/`comm` are the connection's owner (retransmits run in timers).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetransmitRecord<'a> {
    #[serde(flatten)]
    pub origin: Origin<'a>,
    pub sock_id: SockId,
    /// The TCP state, as the kernel names it (`ESTABLISHED`, `SYN_SENT`, ...).
    pub state: Cow<'a, str>,
    pub local_addr: IpAddr,
    pub local_port: u16,
    pub remote_addr: IpAddr,
    pub remote_port: u16,
    /// `function+0xoffset`, innermost first.
    pub stack: Vec<Cow<'a, str>>,
}

/// `socket.data`: one send or receive's metadata; never its payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataRecord<'a> {
    #[serde(flatten)]
    pub origin: Origin<'a>,
    pub sock_id: SockId,
    pub transport: Transport,
    pub direction: Direction,
    /// The call that moved it (`write`, `recvfrom`, ...).
    pub source: Cow<'a, str>,
    /// Bytes the call moved.
    pub total_len: u64,
    /// Of them, the leading bytes captured.
    pub captured_len: u64,
    pub local_addr: IpAddr,
    pub local_port: u16,
    pub remote_addr: IpAddr,
    pub remote_port: u16,
    /// The datagram's peer, for unconnected UDP sockets.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer: Option<SocketAddr>,
}
