//! The connection table: per socket, what kscope knows of a connection
//! (its process, ends and role) and the protocol parser its payloads feed.
//! Data events come in time order; completed exchanges go out.
//!
//! Bounded: at most [`ConnTable::capacity`] connections (new ones beyond
//! that are counted and not parsed), each parser's buffers are bounded by
//! the protocols crate, and connections idle longer than the idle timeout
//! are closed (their unanswered requests reported) and forgotten.

use std::net::{IpAddr, SocketAddr};

use kscope_protocols::{
    ConnContext, Direction, Exchange, Parser, ParserCounts, Privacy, Role, Segment, Transport, infer,
};

use crate::decode::{Event, Origin, SocketData, TcpConnEvent, TcpStep};

/// Payloads inspected before a connection is declared not to speak any
/// protocol kscope knows.
const INFERENCE_ATTEMPTS: u32 = 8;
/// Bytes of undecided payloads kept, so that a message read in pieces
/// (dnsmasq reads a DNS-over-TCP length prefix one byte at a time) is
/// judged whole and then parsed from its first byte.
const INFERENCE_BYTES: usize = 8192;

/// A payload kept while the connection's protocol is undecided.
struct HeldSegment {
    direction: Direction,
    timestamp_ns: u64,
    data: bytes::Bytes,
    total_len: u64,
    peer: Option<SocketAddr>,
}

impl HeldSegment {
    fn segment(&self) -> Segment<'_> {
        Segment {
            direction: self.direction,
            timestamp_ns: self.timestamp_ns,
            data: &self.data,
            total_len: self.total_len,
            peer: self.peer,
        }
    }
}

/// One completed exchange and where it happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExchangeRecord {
    pub exchange: Exchange,
    pub origin: Origin,
    pub sock_id: u64,
    pub transport: Transport,
    pub local: (IpAddr, u16),
    /// The connection's peer, or the datagram's peer on an unconnected socket.
    pub peer: (IpAddr, u16),
    /// TCP segments the connection retransmitted since the exchange before
    /// this one completed (so, while this one was outstanding): a slow
    /// exchange with retransmits was slowed by the network.
    pub tcp_retransmits: u32,
}

/// What the table did with what it was given: for the loss ledger (the
/// stats record's `l7`).
pub use kscope_schema::ConnCounts;

enum Verdict {
    Undecided { attempts: u32, held: Vec<HeldSegment>, held_bytes: usize },
    Parsing { parser: Box<dyn Parser> },
    Unknown,
}

struct Connection {
    transport: Transport,
    origin: Origin,
    local: (IpAddr, u16),
    remote: (IpAddr, u16),
    role: Option<Role>,
    verdict: Verdict,
    last_seen_ns: u64,
    /// Retransmits since the last exchange completed.
    retransmits: u32,
}

pub struct ConnTable {
    connections: std::collections::HashMap<u64, Connection>,
    capacity: usize,
    idle_ns: u64,
    privacy: Privacy,
    counts: ConnCounts,
    /// Parser counts of connections already removed.
    closed_parser_counts: ParserCounts,
    exchanges: Vec<Exchange>,
}

impl std::fmt::Debug for ConnTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnTable").field("connections", &self.connections.len()).field("counts", &self.counts).finish()
    }
}

impl ConnTable {
    pub fn new(capacity: usize, idle_ns: u64, privacy: Privacy) -> Self {
        Self {
            connections: std::collections::HashMap::new(),
            capacity,
            idle_ns,
            privacy,
            counts: ConnCounts::default(),
            closed_parser_counts: ParserCounts::default(),
            exchanges: Vec::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.connections.len()
    }

    pub fn is_empty(&self) -> bool {
        self.connections.is_empty()
    }

    pub fn counts(&self) -> ConnCounts {
        let mut counts = self.counts;
        let mut parsers = self.closed_parser_counts;
        for conn in self.connections.values() {
            if let Verdict::Parsing { parser, .. } = &conn.verdict {
                add_counts(&mut parsers, parser.counts());
            }
        }
        counts.parser_malformed = parsers.malformed;
        counts.parser_overflow_bytes = parsers.overflow_bytes;
        counts.parser_unpaired_dropped = parsers.unpaired_dropped;
        counts
    }

    /// Takes one event, in time order; completed exchanges go to `out`.
    pub fn on_event(&mut self, event: &Event, out: &mut Vec<ExchangeRecord>) {
        match event {
            Event::Data(data) => self.on_data(data, out),
            Event::Tcp(tcp) => self.on_tcp(tcp, out),
            Event::Retransmit(rtx) => {
                if let Some(conn) = self.connections.get_mut(&rtx.sock_id) {
                    conn.retransmits = conn.retransmits.saturating_add(1);
                }
            }
            Event::Exec(_) | Event::Exit(_) => {}
        }
    }

    fn on_tcp(&mut self, tcp: &TcpConnEvent, out: &mut Vec<ExchangeRecord>) {
        match tcp.step {
            TcpStep::Connect | TcpStep::Accept => {
                // A sock address can be reused after a close kscope did not
                // see: whatever was there belongs to an older connection.
                self.close(tcp.sock_id, tcp.origin.timestamp_ns, out);
                if self.connections.len() >= self.capacity {
                    self.counts.table_full += 1;
                    return;
                }
                let role = if tcp.step == TcpStep::Connect { Role::Client } else { Role::Server };
                self.connections.insert(
                    tcp.sock_id,
                    Connection {
                        transport: Transport::Tcp,
                        origin: tcp.origin.clone(),
                        local: tcp.local,
                        remote: tcp.remote,
                        role: Some(role),
                        verdict: Verdict::Undecided { attempts: 0, held: Vec::new(), held_bytes: 0 },
                        last_seen_ns: tcp.origin.timestamp_ns,
                        retransmits: 0,
                    },
                );
            }
            TcpStep::Close => self.close(tcp.sock_id, tcp.origin.timestamp_ns, out),
        }
    }

    fn on_data(&mut self, data: &SocketData, out: &mut Vec<ExchangeRecord>) {
        self.counts.segments += 1;
        self.counts.bytes_total = self.counts.bytes_total.saturating_add(data.total_len);
        self.counts.bytes_captured += data.data.len() as u64;
        let now = data.origin.timestamp_ns;
        if self.connections.get(&data.sock_id).is_some_and(|c| c.transport != data.transport) {
            self.close(data.sock_id, now, out);
        }
        if !self.connections.contains_key(&data.sock_id) {
            if self.connections.len() >= self.capacity {
                self.counts.table_full += 1;
                return;
            }
            self.connections.insert(
                data.sock_id,
                Connection {
                    transport: data.transport,
                    origin: data.origin.clone(),
                    local: data.local,
                    remote: data.remote,
                    role: None,
                    verdict: Verdict::Undecided { attempts: 0, held: Vec::new(), held_bytes: 0 },
                    last_seen_ns: now,
                    retransmits: 0,
                },
            );
        }
        let Some(conn) = self.connections.get_mut(&data.sock_id) else {
            return;
        };
        conn.last_seen_ns = now;
        // The latest caller.
        let origin = &mut conn.origin;
        (origin.hook_form, origin.pid, origin.tid, origin.timestamp_ns, origin.cgroup_id) =
            (data.origin.hook_form, data.origin.pid, data.origin.tid, now, data.origin.cgroup_id);
        origin.comm = data.origin.comm;
        // Addresses as the sock has them now (a client's local port is
        // known only after connect).
        conn.local = data.local;
        conn.remote = data.remote;
        let segment = Segment {
            direction: data.direction,
            timestamp_ns: now,
            data: &data.data,
            total_len: data.total_len,
            peer: data.peer,
        };
        if let Verdict::Undecided { attempts, held, held_bytes } = &mut conn.verdict {
            if data.data.is_empty() {
                self.counts.unclassified_segments += 1;
                return;
            }
            let ctx = ConnContext {
                transport: conn.transport,
                local_port: conn.local.1,
                peer_port: data.peer.map_or(conn.remote.1, |p| p.port()),
                role: conn.role,
            };
            // Datagrams stand alone; a stream is judged on what this
            // direction sent so far, joined.
            let joined;
            let judged = if conn.transport == Transport::Tcp && held.iter().any(|h| h.direction == data.direction) {
                let mut bytes: Vec<u8> = held
                    .iter()
                    .filter(|h| h.direction == data.direction)
                    .flat_map(|h| h.data.iter().copied())
                    .collect();
                bytes.extend_from_slice(&data.data);
                joined = bytes;
                Segment { data: &joined, ..segment }
            } else {
                segment
            };
            match infer(&judged, &ctx) {
                Some(spec) => {
                    let mut parser = (spec.new_parser)(&ctx, self.privacy);
                    for earlier in held.drain(..) {
                        let _ = parser.feed(&earlier.segment(), &mut self.exchanges);
                    }
                    conn.verdict = Verdict::Parsing { parser };
                }
                None => {
                    *attempts += 1;
                    if *attempts >= INFERENCE_ATTEMPTS || *held_bytes + data.data.len() > INFERENCE_BYTES {
                        self.counts.unclassified_segments += held.len() as u64 + 1;
                        conn.verdict = Verdict::Unknown;
                        self.counts.unknown_protocol_connections += 1;
                    } else if conn.transport == Transport::Tcp {
                        *held_bytes += data.data.len();
                        held.push(HeldSegment {
                            direction: data.direction,
                            timestamp_ns: now,
                            data: data.data.clone(),
                            total_len: data.total_len,
                            peer: data.peer,
                        });
                    } else {
                        self.counts.unclassified_segments += 1;
                    }
                    return;
                }
            }
        }
        match &mut conn.verdict {
            Verdict::Parsing { parser, .. } => {
                if parser.feed(&segment, &mut self.exchanges).is_err() {
                    self.counts.parse_errors += 1;
                }
            }
            Verdict::Unknown | Verdict::Undecided { .. } => {
                self.counts.unclassified_segments += 1;
                return;
            }
        }
        drain(&mut self.exchanges, conn, data.sock_id, &mut self.counts, out);
    }

    /// The connection is over: its parser reports what was still open.
    pub fn close(&mut self, sock_id: u64, now_ns: u64, out: &mut Vec<ExchangeRecord>) {
        let Some(mut conn) = self.connections.remove(&sock_id) else {
            return;
        };
        match &mut conn.verdict {
            Verdict::Parsing { parser, .. } => {
                parser.close(now_ns, &mut self.exchanges);
                add_counts(&mut self.closed_parser_counts, parser.counts());
            }
            Verdict::Undecided { held, .. } => self.counts.unclassified_segments += held.len() as u64,
            Verdict::Unknown => {}
        }
        drain(&mut self.exchanges, &mut conn, sock_id, &mut self.counts, out);
    }

    /// Closes connections idle since before `now_ns - idle`.
    pub fn expire(&mut self, now_ns: u64, out: &mut Vec<ExchangeRecord>) {
        let cutoff = now_ns.saturating_sub(self.idle_ns);
        let idle: Vec<u64> =
            self.connections.iter().filter(|(_, c)| c.last_seen_ns < cutoff).map(|(id, _)| *id).collect();
        for sock_id in idle {
            self.counts.expired += 1;
            self.close(sock_id, now_ns, out);
        }
    }

    /// Closes everything (kscope is stopping).
    pub fn close_all(&mut self, now_ns: u64, out: &mut Vec<ExchangeRecord>) {
        let all: Vec<u64> = self.connections.keys().copied().collect();
        for sock_id in all {
            self.close(sock_id, now_ns, out);
        }
    }
}

fn add_counts(sum: &mut ParserCounts, more: ParserCounts) {
    sum.malformed += more.malformed;
    sum.overflow_bytes += more.overflow_bytes;
    sum.unpaired_dropped += more.unpaired_dropped;
}

/// Completed exchanges → records. Exchanges that complete together (a
/// pipelined or multiplexed batch) each carry the retransmits since the
/// last batch.
fn drain(
    exchanges: &mut Vec<Exchange>,
    conn: &mut Connection,
    sock_id: u64,
    counts: &mut ConnCounts,
    out: &mut Vec<ExchangeRecord>,
) {
    let completed = !exchanges.is_empty();
    for exchange in exchanges.drain(..) {
        counts.exchanges += 1;
        let peer = exchange.peer.map_or(conn.remote, |p: SocketAddr| (p.ip(), p.port()));
        out.push(ExchangeRecord {
            exchange,
            origin: conn.origin.clone(),
            sock_id,
            transport: conn.transport,
            local: conn.local,
            peer,
            tcp_retransmits: conn.retransmits,
        });
    }
    if completed {
        conn.retransmits = 0;
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use bytes::Bytes;
    use kscope_common::{DataSource, HookFormId, TcpRole};

    use super::*;

    const LOCAL: (IpAddr, u16) = (IpAddr::V4(Ipv4Addr::LOCALHOST), 8080);
    const REMOTE: (IpAddr, u16) = (IpAddr::V4(Ipv4Addr::LOCALHOST), 40000);
    const SOCK: u64 = 0xffff_8880_0000_1000;

    fn origin(ts: u64) -> Origin {
        Origin {
            hook_form: HookFormId::Tracepoint,
            pid: 7,
            tid: 8,
            timestamp_ns: ts,
            cgroup_id: 9,
            comm: "nginx".into(),
        }
    }

    fn data(ts: u64, direction: Direction, bytes: &[u8]) -> Event {
        Event::Data(SocketData {
            origin: origin(ts),
            sock_id: SOCK,
            direction,
            source: DataSource::Read,
            transport: Transport::Tcp,
            local: LOCAL,
            remote: REMOTE,
            peer: None,
            total_len: bytes.len() as u64,
            data: Bytes::copy_from_slice(bytes),
        })
    }

    fn tcp(ts: u64, step: TcpStep) -> Event {
        Event::Tcp(TcpConnEvent {
            origin: origin(ts),
            step,
            sock_id: SOCK,
            role: Some(TcpRole::Server),
            local: LOCAL,
            remote: REMOTE,
            never_established: false,
            bytes_sent: 0,
            bytes_received: 0,
            duration_ns: 0,
        })
    }

    fn table() -> ConnTable {
        ConnTable::new(4, 1_000, Privacy::default())
    }

    const RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi";

    fn retransmit(ts: u64, sock_id: u64) -> Event {
        Event::Retransmit(crate::decode::Retransmit {
            origin: origin(ts),
            sock_id,
            state: 1,
            local: LOCAL,
            remote: REMOTE,
            stack: Vec::new(),
            frames: Vec::new(),
        })
    }

    #[test]
    fn an_exchange_carries_the_retransmits_made_while_it_was_outstanding() {
        let mut t = table();
        let mut out = Vec::new();
        let request = |ts| data(ts, Direction::Recv, b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n");
        for event in [
            tcp(1, TcpStep::Accept),
            request(2),
            retransmit(3, SOCK),
            retransmit(4, SOCK),
            // Another connection's: not this one's.
            retransmit(5, SOCK + 64),
            data(6, Direction::Send, RESPONSE),
            request(7),
            data(8, Direction::Send, RESPONSE),
        ] {
            t.on_event(&event, &mut out);
        }
        let retransmits: Vec<u32> = out.iter().map(|r| r.tcp_retransmits).collect();
        assert_eq!(retransmits, [2, 0], "the second exchange saw none: {out:?}");
    }

    #[test]
    fn a_request_read_in_pieces_is_judged_whole_and_parsed_from_its_first_byte() {
        let mut t = table();
        let mut out = Vec::new();
        for event in [
            tcp(1, TcpStep::Accept),
            data(2, Direction::Recv, b"G"),
            data(3, Direction::Recv, b"ET /a HTTP/1.1\r\nHost: x\r\n\r\n"),
            data(4, Direction::Send, RESPONSE),
        ] {
            t.on_event(&event, &mut out);
        }
        assert_eq!(out.len(), 1, "{out:?}");
        let record = &out[0];
        assert_eq!(record.exchange.role, Role::Server);
        assert_eq!((record.exchange.method.as_deref(), record.exchange.target.as_str()), (Some("GET"), "/a"));
        assert_eq!(record.exchange.status, Some(200));
        assert_eq!((record.exchange.start_ns, record.exchange.end_ns), (2, 4));
        assert_eq!((record.origin.pid, record.sock_id, record.local, record.peer), (7, SOCK, LOCAL, REMOTE));
        let counts = t.counts();
        assert_eq!((counts.segments, counts.unclassified_segments, counts.exchanges), (3, 0, 1));
        assert_eq!((counts.bytes_total, counts.bytes_captured), (1 + 27 + 40, 1 + 27 + 40));
    }

    #[test]
    fn unknown_protocols_are_given_up_on_and_counted() {
        let mut t = table();
        let mut out = Vec::new();
        for i in 0..(INFERENCE_ATTEMPTS as u64 + 3) {
            t.on_event(&data(i, Direction::Recv, b"\x16\x03\x01 not a protocol kscope knows"), &mut out);
        }
        assert!(out.is_empty());
        let counts = t.counts();
        assert_eq!(counts.unknown_protocol_connections, 1);
        assert_eq!(counts.unclassified_segments, counts.segments);
    }

    #[test]
    fn close_reports_a_request_still_waiting() {
        let mut t = table();
        let mut out = Vec::new();
        t.on_event(&tcp(1, TcpStep::Accept), &mut out);
        t.on_event(&data(2, Direction::Recv, b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n"), &mut out);
        assert!(out.is_empty());
        t.on_event(&tcp(9, TcpStep::Close), &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!((out[0].exchange.status, out[0].exchange.target.as_str()), (None, "/slow"));
        assert!(t.is_empty());
    }

    #[test]
    fn the_table_is_bounded_and_idle_connections_expire() {
        let mut t = ConnTable::new(2, 1_000, Privacy::default());
        let mut out = Vec::new();
        for sock in 0..3u64 {
            let Event::Data(mut d) = data(10, Direction::Recv, b"GET / HTTP/1.1\r\n\r\n") else { unreachable!() };
            d.sock_id = sock;
            t.on_event(&Event::Data(d), &mut out);
        }
        assert_eq!((t.len(), t.counts().table_full), (2, 1));
        t.expire(10 + 999, &mut out);
        assert_eq!(t.len(), 2, "not idle long enough yet");
        t.expire(10 + 1_001, &mut out);
        assert!(t.is_empty());
        assert_eq!(t.counts().expired, 2);
        // Each expired connection's unanswered request is reported.
        assert_eq!(out.iter().filter(|r| r.exchange.status.is_none()).count(), 2);
    }

    #[test]
    fn a_new_connection_on_a_reused_sock_starts_afresh() {
        let mut t = table();
        let mut out = Vec::new();
        t.on_event(&tcp(1, TcpStep::Accept), &mut out);
        t.on_event(&data(2, Direction::Recv, b"GET /old HTTP/1.1\r\nHost: x\r\n\r\n"), &mut out);
        // The close was lost; the kernel reused the sock for a new connection.
        t.on_event(&tcp(3, TcpStep::Accept), &mut out);
        assert_eq!(out.len(), 1, "the old connection's request is reported");
        t.on_event(&data(4, Direction::Recv, b"GET /new HTTP/1.1\r\nHost: x\r\n\r\n"), &mut out);
        t.on_event(&data(5, Direction::Send, RESPONSE), &mut out);
        assert_eq!(out.len(), 2);
        assert_eq!((out[1].exchange.target.as_str(), out[1].exchange.status), ("/new", Some(200)));
    }
}
