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
}

/// What the table did with what it was given: for the loss ledger.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct ConnCounts {
    /// Data events handed to the table.
    pub segments: u64,
    /// Bytes those calls moved, and how many of them were captured.
    pub bytes_total: u64,
    pub bytes_captured: u64,
    /// Segments of connections whose protocol is not (yet) known.
    pub unclassified_segments: u64,
    /// Connections given up on: no protocol matched their first payloads.
    pub unknown_protocol_connections: u64,
    /// Segments a parser rejected.
    pub parse_errors: u64,
    /// Connections not tracked because the table was full.
    pub table_full: u64,
    /// Connections closed for being idle.
    pub expired: u64,
    pub exchanges: u64,
    /// Summed from the parsers, of connections already closed plus open ones.
    pub parser_malformed: u64,
    pub parser_overflow_bytes: u64,
    pub parser_unpaired_dropped: u64,
}

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

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    pub fn len(&self) -> usize {
        self.connections.len()
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
                },
            );
        }
        let Some(conn) = self.connections.get_mut(&data.sock_id) else {
            return;
        };
        conn.last_seen_ns = now;
        conn.origin = data.origin.clone();
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
        let (sock_id, conn) = (data.sock_id, &*conn);
        drain(&mut self.exchanges, conn, sock_id, &mut self.counts, out);
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
        drain(&mut self.exchanges, &conn, sock_id, &mut self.counts, out);
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

fn drain(
    exchanges: &mut Vec<Exchange>,
    conn: &Connection,
    sock_id: u64,
    counts: &mut ConnCounts,
    out: &mut Vec<ExchangeRecord>,
) {
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
        });
    }
}
