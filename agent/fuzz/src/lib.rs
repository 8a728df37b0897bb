//! The driver all protocol fuzz targets share: fuzzer bytes → one
//! connection's segments → the protocol's parser, through the same entry
//! points the agent uses ([`kscope_protocols::PROTOCOLS`], `check`,
//! `new_parser`, [`kscope_protocols::infer`]), checking what must hold for
//! any input.
//!
//! # Input layout
//!
//! A hand-written layout rather than `arbitrary`'s, so that seeds are real
//! messages with a few bytes of framing (see `corpus/` and `make_seeds.py`):
//!
//! ```text
//! byte 0    the connection: bit 0 UDP (else TCP); bits 1-2 role (1 client,
//!           2 server, else unknown); bit 3 keep the query string; bit 4 use
//!           the protocol's first hint port (else ports no protocol hints);
//!           bit 5 UDP segments name their peer (an unconnected socket)
//! then, until the input ends, segments:
//!   byte    bit 0 direction (0 send, 1 receive); bits 1-7 time since the
//!           previous segment, in µs (timestamps never go back)
//!   u16 LE  length of the captured data that follows (cut to what is left)
//!   byte    bytes the syscall moved beyond the captured ones (255: 1 MiB)
//!   data
//! ```
//!
//! A trailing partial segment header is ignored.
//!
//! # Invariants
//!
//! Besides not panicking (and, under ASan, no memory errors in unsafe
//! dependencies): every exchange starts no earlier than the first segment
//! and ends no later than the close, and not before it starts; its kind and
//! detail belong to the protocol; its target is bounded (the reassembly
//! bound, and 1024 bytes for a DNS name: 255 wire bytes, escaped); its
//! request and response bytes are no more than the connection moved. `infer`
//! returns a protocol that takes the transport, and returns one whenever a
//! protocol's `check` says `Yes`.

use std::net::{Ipv4Addr, SocketAddr};

use kscope_protocols::{
    Confidence, ConnContext, Detail, Direction, Exchange, ExchangeKind, PROTOCOLS, Privacy, ProtocolId, ProtocolSpec,
    Role, Segment, Transport, buffer::DEFAULT_LIMIT, infer,
};

/// Where timestamps start (any non-zero value: zero often means "unset").
const T0_NS: u64 = 1_000_000_000;

/// The longest presentation form of a DNS name: 255 wire bytes, each
/// possibly escaped as `\DDD`.
const DNS_TARGET_LIMIT: usize = 1024;

/// Ports that no protocol in the list hints at.
const UNHINTED_PORTS: (u16, u16) = (40_000, 40_001);

/// One decoded segment, owning nothing.
#[derive(Debug, Clone, Copy)]
struct Step {
    direction: Direction,
    timestamp_ns: u64,
    start: usize,
    end: usize,
    extra: u64,
}

/// Feeds `data`, decoded as above, to `protocol`'s parser and checks the
/// invariants; panics (a fuzzer crash) when one does not hold.
pub fn run(protocol: ProtocolId, data: &[u8]) {
    let Some((&flags, mut rest)) = data.split_first() else {
        return;
    };
    let spec = spec(protocol);
    let transport = if flags & 1 == 0 { Transport::Tcp } else { Transport::Udp };
    let role = match (flags >> 1) & 3 {
        1 => Some(Role::Client),
        2 => Some(Role::Server),
        _ => None,
    };
    let (local_port, peer_port) = match (flags & 0x10 != 0, spec.hint_ports.first()) {
        (true, Some(&hint)) if role == Some(Role::Server) => (hint, UNHINTED_PORTS.0),
        (true, Some(&hint)) => (UNHINTED_PORTS.0, hint),
        _ => UNHINTED_PORTS,
    };
    let ctx = ConnContext { transport, local_port, peer_port, role };
    let privacy = Privacy { keep_query: flags & 0x08 != 0 };
    let peer =
        (transport == Transport::Udp && flags & 0x20 != 0).then(|| SocketAddr::from((Ipv4Addr::LOCALHOST, peer_port)));

    let mut steps = Vec::new();
    let mut now = T0_NS;
    while let [head, len_lo, len_hi, extra, tail @ ..] = rest {
        let len = usize::from(u16::from_le_bytes([*len_lo, *len_hi])).min(tail.len());
        now += u64::from(head >> 1) * 1_000;
        let start = data.len() - tail.len();
        steps.push(Step {
            direction: if head & 1 == 0 { Direction::Send } else { Direction::Recv },
            timestamp_ns: now,
            start,
            end: start + len,
            extra: if *extra == 255 { 1 << 20 } else { u64::from(*extra) },
        });
        rest = &tail[len..];
    }

    let mut parser = (spec.new_parser)(&ctx, privacy);
    let mut out = Vec::new();
    let mut moved = 0u64;
    for step in &steps {
        let captured = &data[step.start..step.end];
        let segment = Segment {
            direction: step.direction,
            timestamp_ns: step.timestamp_ns,
            data: captured,
            total_len: captured.len() as u64 + step.extra,
            peer,
        };
        moved += segment.total_len;
        check_inference(&segment, &ctx);
        // A malformed segment is an error the agent counts; the parser must
        // stay usable, so keep feeding.
        let _ = parser.feed(&segment, &mut out);
    }
    let close_ns = now + 1_000;
    parser.close(close_ns, &mut out);
    let _ = parser.counts();

    for exchange in &out {
        check_exchange(spec, exchange, close_ns, moved);
    }
}

fn spec(protocol: ProtocolId) -> &'static ProtocolSpec {
    match PROTOCOLS.iter().find(|spec| spec.id == protocol) {
        Some(spec) => spec,
        None => panic!("{protocol:?} is not in kscope_protocols::PROTOCOLS"),
    }
}

fn check_inference(segment: &Segment<'_>, ctx: &ConnContext) {
    let mut claimed = false;
    for spec in PROTOCOLS {
        let confidence = (spec.check)(segment, ctx);
        claimed |= confidence == Confidence::Yes && spec.transports.contains(&ctx.transport);
    }
    match infer(segment, ctx) {
        Some(spec) => assert!(
            spec.transports.contains(&ctx.transport),
            "infer chose {} for {:?}, which it does not run over",
            spec.name,
            ctx.transport
        ),
        None => assert!(!claimed, "a protocol's check said Yes, but infer chose none"),
    }
}

fn check_exchange(spec: &ProtocolSpec, exchange: &Exchange, close_ns: u64, moved: u64) {
    assert!(
        exchange.start_ns <= exchange.end_ns,
        "exchange ends before it starts: {} < {} ({exchange:?})",
        exchange.end_ns,
        exchange.start_ns
    );
    assert!(exchange.start_ns >= T0_NS, "exchange starts before the first segment ({exchange:?})");
    assert!(exchange.end_ns <= close_ns, "exchange ends after the connection closed ({exchange:?})");
    let kind_ok = match spec.id {
        ProtocolId::Http1 => exchange.kind == ExchangeKind::Http1,
        ProtocolId::Http2 => matches!(exchange.kind, ExchangeKind::Http2 | ExchangeKind::Grpc),
        ProtocolId::Dns => exchange.kind == ExchangeKind::Dns,
    };
    assert!(kind_ok, "the {} parser produced a {:?} exchange", spec.name, exchange.kind);
    let detail_ok = match &exchange.detail {
        Detail::Http(_) => matches!(exchange.kind, ExchangeKind::Http1 | ExchangeKind::Http2),
        Detail::Grpc(_) => exchange.kind == ExchangeKind::Grpc,
        Detail::Dns(_) => exchange.kind == ExchangeKind::Dns,
    };
    assert!(detail_ok, "a {:?} exchange with a {:?}", exchange.kind, exchange.detail);
    let limit = if spec.id == ProtocolId::Dns { DNS_TARGET_LIMIT } else { DEFAULT_LIMIT };
    assert!(exchange.target.len() <= limit, "target of {} bytes (bound {limit})", exchange.target.len());
    let counted = exchange.request_bytes.saturating_add(exchange.response_bytes);
    assert!(counted <= moved, "exchange counts {counted} bytes, the connection moved {moved} ({exchange:?})");
}
