//! Protocol inference and parsing over captured socket payloads.
//!
//! The connection table (in the agent) hands each connection's payloads, in
//! order, to this crate as [`Segment`]s. This crate knows nothing about the
//! kernel, the transport or the output: it turns segments into completed
//! [`Exchange`]s.
//!
//! Adding a protocol touches [`PROTOCOLS`] and one new module, nothing else.

use std::net::SocketAddr;

pub mod buffer;
pub mod dns;
pub mod http1;
pub mod http2;

/// Which way a payload went, seen from the traced process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    Send,
    Recv,
}

impl Direction {
    pub fn reverse(self) -> Self {
        match self {
            Self::Send => Self::Recv,
            Self::Recv => Self::Send,
        }
    }
}

/// The traced process's side of an exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    Client,
    Server,
}

impl Role {
    /// The side that sends a request is the client.
    pub fn from_request_direction(direction: Direction) -> Self {
        match direction {
            Direction::Send => Self::Client,
            Direction::Recv => Self::Server,
        }
    }

    /// Which way requests go for this role.
    pub fn request_direction(self) -> Direction {
        match self {
            Self::Client => Direction::Send,
            Self::Server => Direction::Recv,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    Tcp,
    Udp,
}

/// One payload of one syscall (or one message of a `sendmmsg`/`recvmmsg`).
#[derive(Debug, Clone, Copy)]
pub struct Segment<'a> {
    pub direction: Direction,
    /// Monotonic nanoseconds (the kernel's clock), when the syscall returned.
    pub timestamp_ns: u64,
    /// The leading bytes the sensor captured.
    pub data: &'a [u8],
    /// How many bytes the syscall moved. When larger than `data.len()`, the
    /// tail was not captured: parsers account for it as bytes they cannot
    /// see, never guess its content.
    pub total_len: u64,
    /// The peer of this datagram when the socket is not connected (UDP
    /// `sendto`/`recvfrom`); `None` means the connection's peer.
    pub peer: Option<SocketAddr>,
}

impl Segment<'_> {
    /// Bytes the syscall moved that the sensor did not capture.
    pub fn missing(&self) -> u64 {
        self.total_len.saturating_sub(self.data.len() as u64)
    }
}

/// What is known about a connection before its content is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnContext {
    pub transport: Transport,
    pub local_port: u16,
    pub peer_port: u16,
    /// Known when kscope saw the connect or accept; `None` for connections
    /// that existed before it started.
    pub role: Option<Role>,
}

/// What users opted into keeping. Off by default: header values, query
/// strings and bodies stay home.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Privacy {
    /// Keep the query string of HTTP targets.
    pub keep_query: bool,
}

impl Privacy {
    /// The part of a request path kscope may report.
    pub fn target(self, path: &str) -> &str {
        if self.keep_query { path } else { path.split('?').next().unwrap_or_default() }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProtocolId {
    Http1,
    Http2,
    Dns,
}

/// What an exchange was, after parsing: gRPC is HTTP/2 with a gRPC content type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExchangeKind {
    Http1,
    Http2,
    Grpc,
    Dns,
}

impl ExchangeKind {
    pub fn name(self) -> &'static str {
        match self {
            Self::Http1 => "http1",
            Self::Http2 => "http2",
            Self::Grpc => "grpc",
            Self::Dns => "dns",
        }
    }
}

/// One completed request and its response (or a request whose response
/// never came, when the connection closed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exchange {
    pub kind: ExchangeKind,
    pub role: Role,
    /// HTTP method; `None` for DNS.
    pub method: Option<String>,
    /// HTTP path (query only if opted in), gRPC `service/method`, DNS name.
    pub target: String,
    /// HTTP status, gRPC status, DNS rcode; `None` when no response came.
    pub status: Option<u32>,
    /// When the first byte of the request was sent or received.
    pub start_ns: u64,
    /// When the last byte of the response was sent or received.
    pub end_ns: u64,
    /// Bytes of the request and response on the wire (headers, bodies, frames).
    pub request_bytes: u64,
    pub response_bytes: u64,
    /// The peer of a datagram exchange on an unconnected socket.
    pub peer: Option<SocketAddr>,
    /// Set when some of the exchange was not seen (connection joined
    /// mid-way, capture cut short, HPACK dynamic entries unknown) and which
    /// fields that left empty.
    pub partial: Option<String>,
    pub detail: Detail,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Detail {
    Http(HttpDetail),
    Grpc(GrpcDetail),
    Dns(DnsDetail),
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HttpDetail {
    /// "1.0", "1.1" or "2".
    pub version: String,
    /// `Host` or `:authority`.
    pub host: Option<String>,
    /// W3C `traceparent` of the request, when it carried one.
    pub traceparent: Option<String>,
    /// W3C `tracestate` of the request (meaningful only with a traceparent).
    pub tracestate: Option<String>,
    /// HTTP/2 stream id.
    pub stream_id: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GrpcDetail {
    pub service: String,
    pub method: String,
    pub authority: Option<String>,
    pub grpc_message: Option<String>,
    pub traceparent: Option<String>,
    pub tracestate: Option<String>,
    pub stream_id: u32,
    /// Length-prefixed messages seen in each direction.
    pub request_messages: u32,
    pub response_messages: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DnsDetail {
    pub id: u16,
    /// Query type mnemonic: "A", "AAAA", "CNAME", ... or "TYPE<n>".
    pub qtype: String,
    /// Rcode mnemonic: "NOERROR", "NXDOMAIN", ...
    pub rcode: Option<String>,
    pub answer_count: u16,
    /// A and AAAA addresses in the answer section.
    pub addresses: Vec<std::net::IpAddr>,
}

/// How sure an inference is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Confidence {
    No,
    /// Plausible, e.g. a port hint with content that does not contradict it.
    Maybe,
    /// The content says so (a request line, the HTTP/2 preface, a well-formed DNS header with a question).
    Yes,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("{protocol:?}: {reason}")]
    Malformed { protocol: ProtocolId, reason: String },
    #[error("{protocol:?}: message larger than the {limit}-byte reassembly bound")]
    TooLarge { protocol: ProtocolId, limit: usize },
}

/// Counters a parser keeps about what it could not use. The connection
/// table sums them into the loss ledger.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ParserCounts {
    /// Segments or messages rejected as malformed.
    pub malformed: u64,
    /// Bytes dropped because a message outgrew the reassembly bound.
    pub overflow_bytes: u64,
    /// Requests dropped because too many were outstanding.
    pub unpaired_dropped: u64,
}

/// The contract every protocol implements: one parser per connection.
pub trait Parser: Send {
    /// Feeds the next segment of the connection, in order. Completed
    /// exchanges are pushed into `out`. A malformed segment is an error the
    /// caller counts; the parser stays usable (it resynchronises or gives up
    /// on the connection, its choice).
    fn feed(&mut self, segment: &Segment<'_>, out: &mut Vec<Exchange>) -> Result<(), ParseError>;

    /// The connection closed: push requests still waiting for a response
    /// (status `None`) so they are not lost silently.
    fn close(&mut self, timestamp_ns: u64, out: &mut Vec<Exchange>);

    fn counts(&self) -> ParserCounts;
}

/// One entry of the protocol list.
pub struct ProtocolSpec {
    pub id: ProtocolId,
    pub name: &'static str,
    pub transports: &'static [Transport],
    /// Ports that make the protocol likely. A hint only: content decides.
    pub hint_ports: &'static [u16],
    /// Looks at a connection's first payload(s).
    pub check: fn(&Segment<'_>, &ConnContext) -> Confidence,
    pub new_parser: fn(&ConnContext, Privacy) -> Box<dyn Parser>,
}

impl std::fmt::Debug for ProtocolSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProtocolSpec").field("id", &self.id).field("name", &self.name).finish()
    }
}

/// The one list of protocols kscope understands. Order breaks ties.
pub static PROTOCOLS: &[&ProtocolSpec] = &[&http2::SPEC, &http1::SPEC, &dns::SPEC];

/// Picks the protocol of a connection from one of its payloads, or `None`
/// when nothing claims it (yet). Content decides; a port hint only breaks a
/// `Maybe`.
pub fn infer(segment: &Segment<'_>, ctx: &ConnContext) -> Option<&'static ProtocolSpec> {
    let mut best: Option<(&'static ProtocolSpec, Confidence, bool)> = None;
    for spec in PROTOCOLS {
        if !spec.transports.contains(&ctx.transport) {
            continue;
        }
        let confidence = (spec.check)(segment, ctx);
        if confidence == Confidence::No {
            continue;
        }
        let hinted = spec.hint_ports.contains(&ctx.peer_port) || spec.hint_ports.contains(&ctx.local_port);
        if confidence == Confidence::Yes {
            return Some(spec);
        }
        if hinted && best.is_none_or(|(_, _, b)| !b) {
            best = Some((spec, confidence, hinted));
        }
    }
    best.map(|(spec, _, _)| spec)
}
