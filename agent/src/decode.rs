//! Bytes from the per-CPU buffers → typed events. The kernel is an untrusted
//! producer here: every length and enum value is checked, and a record that
//! does not check out is an error the caller counts, never a panic.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use bytes::Bytes;
use kscope_common::{
    AF_INET, AF_INET6, COMM_LEN, DATA_CAPTURE_MAX, DataDirection, DataSource, EventHeader, EventKind, HookFormId,
    IPPROTO_TCP, IPPROTO_UDP, KERNEL_STACK_FRAMES, ProcessExecEvent, ProcessExitEvent, SocketDataHeader, TcpEvent,
    TcpRetransmitEvent, TcpRole,
};
use kscope_protocols::{Direction, Transport};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("record of {0} bytes is shorter than an event header")]
    TooShort(usize),
    #[error("unknown event kind {0}")]
    UnknownKind(u32),
    #[error("{kind:?} record of {got} bytes, expected at least {want}")]
    Truncated { kind: EventKind, got: usize, want: usize },
    #[error("unknown hook form {0}")]
    UnknownHookForm(u32),
    #[error("unknown TCP role {0}")]
    UnknownRole(u32),
    #[error("unknown address family {0}")]
    UnknownFamily(u32),
    #[error("filename length {0} exceeds its buffer")]
    BadFilenameLength(u32),
    #[error("unknown data direction {0}")]
    UnknownDirection(u32),
    #[error("unknown data source {0}")]
    UnknownSource(u32),
    #[error("unknown socket protocol {0}")]
    UnknownProtocol(u32),
    #[error("kernel stack of {0} bytes: not a whole number of frames within the record")]
    BadStackLength(u32),
    #[error("captured length {captured} exceeds the record ({available} bytes follow the header) or the total {total}")]
    BadCaptureLength { captured: u32, available: usize, total: u64 },
}

/// Who and when, common to every event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub hook_form: HookFormId,
    pub pid: u32,
    pub tid: u32,
    pub timestamp_ns: u64,
    pub cgroup_id: u64,
    pub comm: Comm,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Exec(ExecEvent),
    Exit(ExitEvent),
    Tcp(TcpConnEvent),
    Data(SocketData),
    Retransmit(Retransmit),
}

impl Event {
    pub fn origin(&self) -> &Origin {
        match self {
            Self::Exec(e) => &e.origin,
            Self::Exit(e) => &e.origin,
            Self::Tcp(e) => &e.origin,
            Self::Data(e) => &e.origin,
            Self::Retransmit(e) => &e.origin,
        }
    }
}

/// One send or receive on a TCP or UDP socket and the bytes captured of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocketData {
    pub origin: Origin,
    pub sock_id: u64,
    pub direction: Direction,
    pub source: DataSource,
    pub transport: Transport,
    pub local: (IpAddr, u16),
    pub remote: (IpAddr, u16),
    /// The datagram's own peer on an unconnected UDP socket.
    pub peer: Option<SocketAddr>,
    /// Bytes the call moved; `data` holds the leading ones.
    pub total_len: u64,
    pub data: Bytes,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecEvent {
    pub origin: Origin,
    pub ppid: u32,
    pub filename: String,
    pub filename_truncated: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExitEvent {
    pub origin: Origin,
    pub ppid: u32,
    /// Set when the process exited (by `exit`), with its code.
    pub exit_code: Option<u8>,
    /// Set when a signal ended it.
    pub signal: Option<u8>,
    pub lifetime_ns: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TcpStep {
    Connect,
    Accept,
    Close,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpConnEvent {
    pub origin: Origin,
    pub step: TcpStep,
    pub sock_id: u64,
    /// `None` for a connection that was open before kscope started.
    pub role: Option<TcpRole>,
    pub local: (IpAddr, u16),
    pub remote: (IpAddr, u16),
    pub never_established: bool,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub duration_ns: u64,
}

/// A retransmitted TCP segment. `origin` is the connection's owner when
/// the TCP sensor knew it, else pid 0.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retransmit {
    pub origin: Origin,
    pub sock_id: u64,
    /// The kernel's TCP state number (`include/net/tcp_states.h`).
    pub state: u32,
    pub local: (IpAddr, u16),
    pub remote: (IpAddr, u16),
    /// Kernel return addresses, innermost first.
    pub stack: Vec<u64>,
    /// `stack` symbolized (`tcp_retransmit_skb+0x1c`), filled after
    /// decoding by [`crate::stacks::KernelStacks`]; empty until then.
    pub frames: Vec<std::sync::Arc<str>>,
}

/// The name of a TCP state number, as `ss` prints it.
pub fn tcp_state_name(state: u32) -> &'static str {
    match state {
        1 => "ESTABLISHED",
        2 => "SYN_SENT",
        3 => "SYN_RECV",
        4 => "FIN_WAIT1",
        5 => "FIN_WAIT2",
        6 => "TIME_WAIT",
        7 => "CLOSE",
        8 => "CLOSE_WAIT",
        9 => "LAST_ACK",
        10 => "LISTEN",
        11 => "CLOSING",
        12 => "NEW_SYN_RECV",
        _ => "UNKNOWN",
    }
}

fn retransmit(bytes: &[u8], origin: Origin) -> Result<Retransmit, DecodeError> {
    let raw: TcpRetransmitEvent = record(bytes, EventKind::TcpRetransmit)?;
    let frames = raw.stack_bytes as usize / 8;
    if !raw.stack_bytes.is_multiple_of(8) || frames > KERNEL_STACK_FRAMES {
        return Err(DecodeError::BadStackLength(raw.stack_bytes));
    }
    Ok(Retransmit {
        origin,
        sock_id: raw.sock_id,
        state: raw.state,
        local: (address(raw.family, raw.local_addr)?, raw.local_port),
        remote: (address(raw.family, raw.remote_addr)?, raw.remote_port),
        stack: raw.stack[..frames].to_vec(),
        frames: Vec::new(),
    })
}

/// Copies a `#[repr(C)]` plain-data record out of `bytes` (which may be
/// unaligned; perf samples are only 8-byte aligned after their size word).
fn read_record<T: Copy>(bytes: &[u8]) -> Option<T> {
    if bytes.len() < size_of::<T>() {
        return None;
    }
    // SAFETY: the length is checked above; `T` is one of the kscope_common
    // records, made of integers only, so any bit pattern is a valid value.
    Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) })
}

fn record<T: Copy>(bytes: &[u8], kind: EventKind) -> Result<T, DecodeError> {
    read_record(bytes).ok_or(DecodeError::Truncated { kind, got: bytes.len(), want: size_of::<T>() })
}

/// A task's `comm`, kept inline: every event has one, and a string
/// allocated per event showed in the pipeline's profile.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Comm {
    bytes: [u8; COMM_LEN],
    len: u8,
}

impl Comm {
    /// Up to the first NUL; bytes that are not UTF-8 become `?`.
    pub fn new(raw: &[u8]) -> Self {
        let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len()).min(COMM_LEN);
        let mut bytes = [0u8; COMM_LEN];
        bytes[..end].copy_from_slice(&raw[..end]);
        if std::str::from_utf8(&bytes[..end]).is_err() {
            for b in &mut bytes[..end] {
                if !b.is_ascii() {
                    *b = b'?';
                }
            }
        }
        Self { bytes, len: end as u8 }
    }

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.bytes[..usize::from(self.len)]).unwrap_or("")
    }
}

impl std::fmt::Display for Comm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::fmt::Debug for Comm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.as_str())
    }
}

impl PartialEq<&str> for Comm {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl From<&str> for Comm {
    fn from(text: &str) -> Self {
        Self::new(text.as_bytes())
    }
}

impl serde::Serialize for Comm {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

fn origin(header: &EventHeader) -> Result<Origin, DecodeError> {
    Ok(Origin {
        hook_form: HookFormId::from_u32(header.hook_form).ok_or(DecodeError::UnknownHookForm(header.hook_form))?,
        pid: header.pid,
        tid: header.tid,
        timestamp_ns: header.timestamp_ns,
        cgroup_id: header.cgroup_id,
        comm: Comm::new(&header.comm),
    })
}

fn address(family: u32, raw: [u8; 16]) -> Result<IpAddr, DecodeError> {
    match u16::try_from(family) {
        Ok(AF_INET) => Ok(IpAddr::V4(Ipv4Addr::new(raw[0], raw[1], raw[2], raw[3]))),
        Ok(AF_INET6) => Ok(IpAddr::V6(Ipv6Addr::from(raw))),
        _ => Err(DecodeError::UnknownFamily(family)),
    }
}

fn socket_data(bytes: &[u8], origin: Origin) -> Result<SocketData, DecodeError> {
    let kind = EventKind::SocketData;
    let raw: SocketDataHeader = record(bytes, kind)?;
    let body = &bytes[size_of::<SocketDataHeader>()..];
    let captured = raw.captured_len as usize;
    if captured > body.len() || captured >= DATA_CAPTURE_MAX || raw.captured_len as u64 > raw.total_len {
        return Err(DecodeError::BadCaptureLength {
            captured: raw.captured_len,
            available: body.len(),
            total: raw.total_len,
        });
    }
    let direction = match DataDirection::from_u32(raw.direction) {
        Some(DataDirection::Send) => Direction::Send,
        Some(DataDirection::Recv) => Direction::Recv,
        None => return Err(DecodeError::UnknownDirection(raw.direction)),
    };
    let transport = match u16::try_from(raw.protocol) {
        Ok(IPPROTO_TCP) => Transport::Tcp,
        Ok(IPPROTO_UDP) => Transport::Udp,
        _ => return Err(DecodeError::UnknownProtocol(raw.protocol)),
    };
    let peer = match raw.peer_family {
        0 => None,
        family => Some(SocketAddr::new(address(family, raw.peer_addr)?, raw.peer_port)),
    };
    Ok(SocketData {
        origin,
        sock_id: raw.sock_id,
        direction,
        source: DataSource::from_u32(raw.source).ok_or(DecodeError::UnknownSource(raw.source))?,
        transport,
        local: (address(raw.family, raw.local_addr)?, raw.local_port),
        remote: (address(raw.family, raw.remote_addr)?, raw.remote_port),
        peer,
        total_len: raw.total_len,
        data: Bytes::copy_from_slice(&body[..captured]),
    })
}

/// Decodes one record as the kernel programs wrote it.
pub fn decode(bytes: &[u8]) -> Result<Event, DecodeError> {
    let header: EventHeader = read_record(bytes).ok_or(DecodeError::TooShort(bytes.len()))?;
    let kind = EventKind::from_u32(header.kind).ok_or(DecodeError::UnknownKind(header.kind))?;
    let origin = origin(&header)?;
    match kind {
        EventKind::ProcessExec => {
            let raw: ProcessExecEvent = record(bytes, kind)?;
            let len = raw.filename_len as usize;
            let name = raw.filename.get(..len).ok_or(DecodeError::BadFilenameLength(raw.filename_len))?;
            Ok(Event::Exec(ExecEvent {
                origin,
                ppid: raw.ppid,
                filename: String::from_utf8_lossy(name).into_owned(),
                filename_truncated: raw.filename_truncated != 0,
            }))
        }
        EventKind::ProcessExit => {
            let raw: ProcessExitEvent = record(bytes, kind)?;
            let signal = (raw.exit_status & 0x7f) as u8;
            Ok(Event::Exit(ExitEvent {
                origin,
                ppid: raw.ppid,
                exit_code: (signal == 0).then_some(((raw.exit_status >> 8) & 0xff) as u8),
                signal: (signal != 0).then_some(signal),
                lifetime_ns: raw.lifetime_ns,
            }))
        }
        EventKind::TcpConnect | EventKind::TcpAccept | EventKind::TcpClose => {
            let raw: TcpEvent = record(bytes, kind)?;
            let role = match raw.role {
                0 => None,
                r => Some(TcpRole::from_u32(r).ok_or(DecodeError::UnknownRole(r))?),
            };
            Ok(Event::Tcp(TcpConnEvent {
                origin,
                step: match kind {
                    EventKind::TcpConnect => TcpStep::Connect,
                    EventKind::TcpAccept => TcpStep::Accept,
                    _ => TcpStep::Close,
                },
                sock_id: raw.sock_id,
                role,
                local: (address(raw.family, raw.local_addr)?, raw.local_port),
                remote: (address(raw.family, raw.remote_addr)?, raw.remote_port),
                never_established: raw.never_established != 0,
                bytes_sent: raw.bytes_sent,
                bytes_received: raw.bytes_received,
                duration_ns: raw.duration_ns,
            }))
        }
        EventKind::SocketData => socket_data(bytes, origin).map(Event::Data),
        EventKind::TcpRetransmit => retransmit(bytes, origin).map(Event::Retransmit),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use kscope_common::FILENAME_LEN;

    use super::*;

    pub(crate) fn header(kind: EventKind) -> EventHeader {
        let mut comm = [0u8; COMM_LEN];
        comm[..4].copy_from_slice(b"curl");
        EventHeader {
            kind: kind as u32,
            hook_form: HookFormId::Tracepoint as u32,
            pid: 4242,
            tid: 4243,
            timestamp_ns: 1_000,
            cgroup_id: 77,
            comm,
        }
    }

    pub(crate) fn bytes_of<T>(value: &T) -> Vec<u8> {
        // SAFETY: test records are plain data with explicit padding.
        unsafe { std::slice::from_raw_parts(std::ptr::from_ref(value).cast::<u8>(), size_of::<T>()) }.to_vec()
    }

    pub(crate) fn tcp_close() -> TcpEvent {
        let mut local = [0u8; 16];
        local[..4].copy_from_slice(&[127, 0, 0, 1]);
        TcpEvent {
            header: header(EventKind::TcpClose),
            sock_id: 0xffff_8880_0000_1000,
            role: TcpRole::Client as u32,
            family: u32::from(AF_INET),
            local_port: 40000,
            remote_port: 8080,
            never_established: 0,
            local_addr: local,
            remote_addr: local,
            bytes_sent: 78,
            bytes_received: 600,
            duration_ns: 5_000_000,
        }
    }

    #[test]
    fn decodes_tcp_close() {
        let event = decode(&bytes_of(&tcp_close())).unwrap();
        let Event::Tcp(tcp) = event else { panic!("not tcp: {event:?}") };
        assert_eq!(tcp.step, TcpStep::Close);
        assert_eq!(tcp.role, Some(TcpRole::Client));
        assert_eq!(tcp.local, ("127.0.0.1".parse().unwrap(), 40000));
        assert_eq!(tcp.remote, ("127.0.0.1".parse().unwrap(), 8080));
        assert_eq!((tcp.bytes_sent, tcp.bytes_received, tcp.duration_ns), (78, 600, 5_000_000));
        assert_eq!(tcp.origin.comm, "curl");
        assert_eq!((tcp.origin.pid, tcp.origin.tid, tcp.origin.cgroup_id), (4242, 4243, 77));
    }

    fn socket_data_record(payload: &[u8]) -> Vec<u8> {
        let mut local = [0u8; 16];
        local[..4].copy_from_slice(&[127, 0, 0, 1]);
        let mut peer = [0u8; 16];
        peer[..4].copy_from_slice(&[10, 0, 0, 53]);
        let header = SocketDataHeader {
            header: header(EventKind::SocketData),
            sock_id: 0xffff_8880_0000_2000,
            total_len: 9000,
            captured_len: payload.len() as u32,
            direction: DataDirection::Send as u32,
            source: DataSource::Sendto as u32,
            protocol: u32::from(IPPROTO_UDP),
            family: u32::from(AF_INET),
            local_port: 5353,
            remote_port: 0,
            local_addr: local,
            remote_addr: [0; 16],
            peer_family: u32::from(AF_INET),
            peer_port: 53,
            _pad: 0,
            peer_addr: peer,
        };
        let mut bytes = bytes_of(&header);
        bytes.extend_from_slice(payload);
        // Perf samples are padded to 8 bytes.
        bytes.resize(bytes.len().next_multiple_of(8), 0);
        bytes
    }

    #[test]
    fn decodes_socket_data_with_its_payload_and_datagram_peer() {
        let Event::Data(d) = decode(&socket_data_record(b"hello")).unwrap() else { panic!() };
        assert_eq!(d.direction, Direction::Send);
        assert_eq!(d.source, DataSource::Sendto);
        assert_eq!(d.transport, Transport::Udp);
        assert_eq!(d.local, ("127.0.0.1".parse().unwrap(), 5353));
        assert_eq!(d.peer, Some("10.0.0.53:53".parse().unwrap()));
        assert_eq!((d.total_len, &d.data[..]), (9000, &b"hello"[..]));
        assert_eq!(d.origin.comm, "curl");
    }

    #[test]
    fn socket_data_that_does_not_add_up_is_an_error() {
        let good = socket_data_record(b"hello");
        let at = |field: usize| size_of::<EventHeader>() + field;
        // captured_len beyond the record
        let mut bad = good.clone();
        bad[at(16)..at(20)].copy_from_slice(&100u32.to_le_bytes());
        assert!(matches!(decode(&bad), Err(DecodeError::BadCaptureLength { captured: 100, .. })));
        // captured more than the call moved
        let mut bad = good.clone();
        bad[at(8)..at(16)].copy_from_slice(&2u64.to_le_bytes());
        assert!(matches!(decode(&bad), Err(DecodeError::BadCaptureLength { total: 2, .. })));
        let mut bad = good.clone();
        bad[at(20)..at(24)].copy_from_slice(&9u32.to_le_bytes());
        assert_eq!(decode(&bad), Err(DecodeError::UnknownDirection(9)));
        let mut bad = good.clone();
        bad[at(28)..at(32)].copy_from_slice(&1u32.to_le_bytes());
        assert_eq!(decode(&bad), Err(DecodeError::UnknownProtocol(1)));
        // Every truncation of the header is an error, never a panic.
        for cut in 0..size_of::<SocketDataHeader>() {
            assert!(decode(&good[..cut]).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn comm_stops_at_nul_and_never_holds_invalid_utf8() {
        assert_eq!(Comm::new(b"curl\0junk"), "curl");
        assert_eq!(Comm::new(b"0123456789abcdef"), "0123456789abcdef");
        assert_eq!(Comm::new(b"a\xffb\xc3"), "a?b?");
        assert_eq!(Comm::new(b""), "");
    }

    #[test]
    fn decodes_ipv6() {
        let mut raw = tcp_close();
        raw.family = u32::from(AF_INET6);
        raw.remote_addr = Ipv6Addr::LOCALHOST.octets();
        let Event::Tcp(tcp) = decode(&bytes_of(&raw)).unwrap() else { panic!() };
        assert_eq!(tcp.remote.0, IpAddr::V6(Ipv6Addr::LOCALHOST));
    }

    #[test]
    fn decodes_exec_and_exit() {
        let mut filename = [0u8; FILENAME_LEN];
        filename[..13].copy_from_slice(b"/usr/bin/curl");
        let exec = ProcessExecEvent {
            header: header(EventKind::ProcessExec),
            ppid: 1,
            filename_len: 13,
            filename_truncated: 0,
            _pad: 0,
            filename,
        };
        let Event::Exec(e) = decode(&bytes_of(&exec)).unwrap() else { panic!() };
        assert_eq!((e.filename.as_str(), e.ppid, e.filename_truncated), ("/usr/bin/curl", 1, false));

        let exit =
            ProcessExitEvent { header: header(EventKind::ProcessExit), ppid: 1, exit_status: 7 << 8, lifetime_ns: 9 };
        let Event::Exit(x) = decode(&bytes_of(&exit)).unwrap() else { panic!() };
        assert_eq!((x.exit_code, x.signal, x.lifetime_ns), (Some(7), None, 9));

        let killed = ProcessExitEvent { exit_status: 9, ..exit };
        let Event::Exit(x) = decode(&bytes_of(&killed)).unwrap() else { panic!() };
        assert_eq!((x.exit_code, x.signal), (None, Some(9)));
    }

    #[test]
    fn rejects_bad_records() {
        assert_eq!(decode(&[0; 10]), Err(DecodeError::TooShort(10)));
        let mut h = header(EventKind::TcpClose);
        h.kind = 99;
        assert_eq!(decode(&bytes_of(&h)), Err(DecodeError::UnknownKind(99)));
        let h = header(EventKind::TcpClose);
        assert!(matches!(decode(&bytes_of(&h)), Err(DecodeError::Truncated { .. })));
        let mut raw = tcp_close();
        raw.family = 3;
        assert_eq!(decode(&bytes_of(&raw)), Err(DecodeError::UnknownFamily(3)));
        raw = tcp_close();
        raw.role = 9;
        assert_eq!(decode(&bytes_of(&raw)), Err(DecodeError::UnknownRole(9)));
        raw = tcp_close();
        raw.header.hook_form = 0;
        assert_eq!(decode(&bytes_of(&raw)), Err(DecodeError::UnknownHookForm(0)));
    }

    pub(crate) fn retransmit_record() -> TcpRetransmitEvent {
        let mut local = [0u8; 16];
        local[..4].copy_from_slice(&[10, 213, 0, 1]);
        let mut remote = [0u8; 16];
        remote[..4].copy_from_slice(&[10, 213, 0, 2]);
        let mut stack = [0u64; KERNEL_STACK_FRAMES];
        stack[..3].copy_from_slice(&[0xffff_ffff_8100_0010, 0xffff_ffff_8100_0020, 0xffff_ffff_8100_0030]);
        TcpRetransmitEvent {
            header: header(EventKind::TcpRetransmit),
            sock_id: 0xffff_8880_0000_2000,
            family: u32::from(AF_INET),
            state: 1,
            local_port: 45792,
            remote_port: 9099,
            stack_bytes: 24,
            local_addr: local,
            remote_addr: remote,
            stack,
        }
    }

    #[test]
    fn decodes_retransmit_with_its_stack() {
        let Ok(Event::Retransmit(r)) = decode(&bytes_of(&retransmit_record())) else { panic!("not a retransmit") };
        assert_eq!(r.origin.pid, 4242);
        assert_eq!(r.sock_id, 0xffff_8880_0000_2000);
        assert_eq!(tcp_state_name(r.state), "ESTABLISHED");
        assert_eq!(r.local, ("10.213.0.1".parse().unwrap(), 45792));
        assert_eq!(r.remote, ("10.213.0.2".parse().unwrap(), 9099));
        assert_eq!(r.stack, vec![0xffff_ffff_8100_0010, 0xffff_ffff_8100_0020, 0xffff_ffff_8100_0030]);
        assert!(r.frames.is_empty(), "symbolized later, not by decode");
        let mut raw = retransmit_record();
        raw.stack_bytes = 0;
        let Ok(Event::Retransmit(r)) = decode(&bytes_of(&raw)) else { panic!() };
        assert!(r.stack.is_empty(), "bpf_get_stack failed: no frames, still an event");
        for bad in [12, 8 * KERNEL_STACK_FRAMES as u32 + 8, u32::MAX] {
            raw.stack_bytes = bad;
            assert_eq!(decode(&bytes_of(&raw)), Err(DecodeError::BadStackLength(bad)));
        }
        let short = bytes_of(&retransmit_record());
        assert!(matches!(decode(&short[..100]), Err(DecodeError::Truncated { .. })));
        assert_eq!(tcp_state_name(99), "UNKNOWN");
    }

    #[test]
    fn filename_length_beyond_buffer_is_an_error() {
        let exec = ProcessExecEvent {
            header: header(EventKind::ProcessExec),
            ppid: 1,
            filename_len: 5000,
            filename_truncated: 0,
            _pad: 0,
            filename: [0; FILENAME_LEN],
        };
        assert_eq!(decode(&bytes_of(&exec)), Err(DecodeError::BadFilenameLength(5000)));
    }

    /// Every prefix and every byte flip of a valid record decodes or errors;
    /// nothing panics.
    #[test]
    fn never_panics_on_mangled_records() {
        for good in [bytes_of(&tcp_close()), bytes_of(&retransmit_record())] {
            for len in 0..=good.len() {
                let _ = decode(&good[..len]);
            }
            for i in 0..good.len() {
                for bit in 0..8 {
                    let mut bad = good.clone();
                    bad[i] ^= 1 << bit;
                    let _ = decode(&bad);
                }
            }
        }
    }
}
