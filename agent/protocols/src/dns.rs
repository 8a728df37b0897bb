//! DNS over UDP (one message per datagram) and TCP (2-byte length-prefixed
//! messages that may span or share segments). Wire format is `simple-dns`'s;
//! queries and responses pair by (id, peer, question).

use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use simple_dns::Packet;
use simple_dns::rdata::RData;

use crate::buffer::{DEFAULT_LIMIT, StreamBuffer};
use crate::{
    Confidence, ConnContext, Detail, Direction, DnsDetail, Exchange, ExchangeKind, ParseError, Parser, ParserCounts,
    Privacy, ProtocolId, ProtocolSpec, Role, Segment, Transport,
};

pub static SPEC: ProtocolSpec = ProtocolSpec {
    id: ProtocolId::Dns,
    name: "dns",
    transports: &[Transport::Udp, Transport::Tcp],
    hint_ports: &[53],
    check,
    new_parser,
};

/// Queries waiting for their response; the oldest is dropped (and counted) past this.
pub const MAX_PENDING: usize = 256;
/// Addresses kept from one answer section.
const MAX_ADDRESSES: usize = 32;
const HEADER_LEN: usize = 12;

fn check(segment: &Segment<'_>, ctx: &ConnContext) -> Confidence {
    let (msg, truncated) = match ctx.transport {
        Transport::Udp => (segment.data, segment.missing() > 0),
        Transport::Tcp => {
            let Some((len, msg)) = segment.data.split_first_chunk::<2>() else { return Confidence::No };
            let len = usize::from(u16::from_be_bytes(*len));
            if len < HEADER_LEN {
                return Confidence::No;
            }
            if msg.is_empty() {
                // Some clients write the length prefix on its own: the port decides.
                return Confidence::Maybe;
            }
            (&msg[..len.min(msg.len())], msg.len() < len)
        }
    };
    match Message::parse(msg, truncated) {
        Ok(m) if m.qdcount >= 1 && m.question.is_some() && m.opcode <= 5 => Confidence::Yes,
        _ => Confidence::No,
    }
}

fn new_parser(ctx: &ConnContext, _privacy: Privacy) -> Box<dyn Parser> {
    Box::new(DnsParser::new(ctx.transport))
}

fn malformed(reason: impl Into<String>) -> ParseError {
    ParseError::Malformed { protocol: ProtocolId::Dns, reason: reason.into() }
}

/// Query type mnemonic.
pub fn qtype_name(qtype: u16) -> String {
    match qtype {
        1 => "A".into(),
        2 => "NS".into(),
        5 => "CNAME".into(),
        6 => "SOA".into(),
        12 => "PTR".into(),
        15 => "MX".into(),
        16 => "TXT".into(),
        28 => "AAAA".into(),
        33 => "SRV".into(),
        64 => "SVCB".into(),
        65 => "HTTPS".into(),
        255 => "ANY".into(),
        n => format!("TYPE{n}"),
    }
}

/// Response code mnemonic.
pub fn rcode_name(rcode: u16) -> String {
    match rcode {
        0 => "NOERROR".into(),
        1 => "FORMERR".into(),
        2 => "SERVFAIL".into(),
        3 => "NXDOMAIN".into(),
        4 => "NOTIMP".into(),
        5 => "REFUSED".into(),
        n => format!("RCODE{n}"),
    }
}

/// The first question of a message.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Question {
    name: String,
    qtype: u16,
}

/// What kscope keeps of one DNS message.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Message {
    id: u16,
    response: bool,
    opcode: u8,
    rcode: u16,
    qdcount: u16,
    ancount: u16,
    question: Option<Question>,
    addresses: Vec<IpAddr>,
    /// Why the answer section could not be read, when it could not.
    partial: Option<&'static str>,
}

/// Offset just past the first question's name, or `None` when it does not fit.
fn question_name_end(msg: &[u8]) -> Option<usize> {
    let mut i = HEADER_LEN;
    loop {
        let len = *msg.get(i)?;
        match len & 0xC0 {
            0x00 if len == 0 => return Some(i + 1),
            0x00 => i += 1 + usize::from(len),
            0xC0 => return Some(i + 2).filter(|&end| end <= msg.len()),
            _ => return None,
        }
    }
}

impl Message {
    /// Parses a message; `truncated` when the capture holds only its start.
    fn parse(msg: &[u8], truncated: bool) -> Result<Self, &'static str> {
        let header: &[u8; HEADER_LEN] = msg.first_chunk().ok_or("shorter than a DNS header")?;
        let word = |i: usize| u16::from_be_bytes([header[i], header[i + 1]]);
        let (id, flags, qdcount, ancount, nscount, arcount) = (word(0), word(2), word(4), word(6), word(8), word(10));
        // Every question takes 5 bytes at least, every record 11: counts
        // beyond that are garbage (and would make the parser allocate for them).
        let records = u64::from(ancount) + u64::from(nscount) + u64::from(arcount);
        let least = u64::from(qdcount) * 5 + if truncated { 0 } else { records * 11 };
        if least > (msg.len() - HEADER_LEN) as u64 {
            return Err("section counts larger than the message");
        }
        let mut message = Self {
            id,
            response: flags & 0x8000 != 0,
            opcode: ((flags >> 11) & 0xF) as u8,
            rcode: flags & 0xF,
            qdcount,
            ancount,
            question: None,
            addresses: Vec::new(),
            partial: None,
        };
        let qtype_at = if qdcount > 0 { question_name_end(msg) } else { None };
        let qtype = qtype_at.and_then(|i| msg.get(i..i + 2)).map(|b| u16::from_be_bytes([b[0], b[1]]));
        match Packet::parse(msg) {
            Ok(packet) => {
                if let (Some(q), Some(qtype)) = (packet.questions.first(), qtype) {
                    message.question = Some(Question { name: q.qname.to_string(), qtype });
                }
                message.addresses = packet
                    .answers
                    .iter()
                    .filter_map(|rr| match &rr.rdata {
                        RData::A(a) => Some(IpAddr::V4(Ipv4Addr::from(a.address))),
                        RData::AAAA(a) => Some(IpAddr::V6(Ipv6Addr::from(a.address))),
                        _ => None,
                    })
                    .take(MAX_ADDRESSES)
                    .collect();
            }
            Err(_) => {
                // Read the header and the first question alone: the answers
                // were not captured, or hold records the crate rejects, or the
                // question has a type or class it does not know.
                let (Some(at), Some(qtype)) = (qtype_at, qtype) else {
                    return if qdcount == 0 && records == 0 { Ok(message) } else { Err("malformed DNS message") };
                };
                let mut first = msg.get(..at + 4).ok_or("question not captured")?.to_vec();
                first[4..12].copy_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]);
                first[at..at + 4].copy_from_slice(&[0, 1, 0, 1]);
                let packet = Packet::parse(&first).map_err(|_| "malformed DNS question")?;
                let q = packet.questions.first().ok_or("malformed DNS question")?;
                message.question = Some(Question { name: q.qname.to_string(), qtype });
                if records > 0 || qdcount > 1 {
                    message.partial = Some(if truncated { "answers not captured" } else { "answers not parsed" });
                }
            }
        }
        Ok(message)
    }
}

/// A query waiting for its response.
#[derive(Debug, Clone)]
struct Query {
    id: u16,
    peer: Option<SocketAddr>,
    direction: Direction,
    question: Option<Question>,
    start_ns: u64,
    bytes: u64,
    partial: Option<&'static str>,
}

/// One direction of a TCP connection.
#[derive(Debug)]
struct TcpSide {
    buf: StreamBuffer,
    /// Uncaptured bytes of the current message still to come.
    skip: u64,
    /// The captured start of a message whose tail is uncaptured, with its
    /// length and start: processed when its last byte went by.
    held: Option<(Vec<u8>, u64, u64)>,
    /// Lost the message boundaries: wait for a segment that starts a message.
    lost: bool,
}

impl TcpSide {
    fn new() -> Self {
        Self { buf: StreamBuffer::new(DEFAULT_LIMIT), skip: 0, held: None, lost: false }
    }
}

/// Whether a TCP segment plausibly starts with a length-prefixed query or response.
fn starts_tcp_message(data: &[u8]) -> bool {
    let Some(prefix) = data.first_chunk::<6>() else { return false };
    let len = u16::from_be_bytes([prefix[0], prefix[1]]);
    let opcode = (prefix[4] >> 3) & 0xF;
    len >= HEADER_LEN as u16 && opcode == 0 && data.get(6..8) == Some(&[0, 1])
}

/// One DNS socket: a connection, or an unconnected UDP socket with many peers.
#[derive(Debug)]
pub struct DnsParser {
    transport: Transport,
    /// TCP streams, by direction: [Send, Recv].
    tcp: [TcpSide; 2],
    pending: VecDeque<Query>,
    counts: ParserCounts,
}

impl DnsParser {
    pub fn new(transport: Transport) -> Self {
        Self {
            transport,
            tcp: [TcpSide::new(), TcpSide::new()],
            pending: VecDeque::new(),
            counts: ParserCounts::default(),
        }
    }

    fn exchange(query: Query, response: Option<(&Message, u64, u64)>) -> Exchange {
        let (status, end_ns, response_bytes) = match response {
            Some((m, end_ns, bytes)) => (Some(u32::from(m.rcode)), end_ns, bytes),
            None => (None, query.start_ns, 0),
        };
        let partial =
            [query.partial, response.and_then(|(m, _, _)| m.partial)].into_iter().flatten().collect::<Vec<_>>();
        let partial = if partial.is_empty() { None } else { Some(partial.join("; ")) };
        let (target, qtype) = query.question.map_or((String::new(), String::new()), |q| (q.name, qtype_name(q.qtype)));
        Exchange {
            kind: ExchangeKind::Dns,
            role: Role::from_request_direction(query.direction),
            method: None,
            target,
            status,
            start_ns: query.start_ns,
            end_ns,
            request_bytes: query.bytes,
            response_bytes,
            peer: query.peer,
            partial,
            detail: Detail::Dns(DnsDetail {
                id: query.id,
                qtype,
                rcode: response.map(|(m, _, _)| rcode_name(m.rcode)),
                answer_count: response.map_or(0, |(m, _, _)| m.ancount),
                addresses: response.map(|(m, _, _)| m.addresses.clone()).unwrap_or_default(),
            }),
        }
    }

    /// One whole message (or the captured start of one).
    #[allow(clippy::too_many_arguments)]
    fn on_message(
        &mut self,
        direction: Direction,
        peer: Option<SocketAddr>,
        msg: &[u8],
        size: u64,
        truncated: bool,
        (start_ns, end_ns): (u64, u64),
        out: &mut Vec<Exchange>,
    ) -> Result<(), ParseError> {
        let message = match Message::parse(msg, truncated) {
            Ok(m) => m,
            Err(reason) => {
                self.counts.malformed += 1;
                return Err(malformed(reason));
            }
        };
        let same_question = |a: &Option<Question>, b: &Option<Question>| match (a, b) {
            (Some(a), Some(b)) => a.qtype == b.qtype && a.name.eq_ignore_ascii_case(&b.name),
            _ => true,
        };
        if !message.response {
            // A retransmission (same id, peer and question) is the same query.
            if let Some(q) = self.pending.iter_mut().find(|q| {
                q.id == message.id
                    && q.peer == peer
                    && q.direction == direction
                    && same_question(&q.question, &message.question)
            }) {
                q.bytes = q.bytes.saturating_add(size);
                return Ok(());
            }
            if self.pending.len() >= MAX_PENDING {
                self.pending.pop_front();
                self.counts.unpaired_dropped += 1;
            }
            self.pending.push_back(Query {
                id: message.id,
                peer,
                direction,
                question: message.question,
                start_ns,
                bytes: size,
                partial: message.partial.map(|_| "query not captured whole"),
            });
            return Ok(());
        }
        let matches = |q: &Query, exact_peer: bool| {
            q.id == message.id
                && q.direction == direction.reverse()
                && (q.peer == peer || (!exact_peer && (q.peer.is_none() || peer.is_none())))
                && same_question(&q.question, &message.question)
        };
        let found = self
            .pending
            .iter()
            .position(|q| matches(q, true))
            .or_else(|| self.pending.iter().position(|q| matches(q, false)));
        // A response to a query not seen (joined mid-way, or dropped) has nothing to pair with.
        if let Some(query) = found.and_then(|i| self.pending.remove(i)) {
            out.push(Self::exchange(query, Some((&message, end_ns, size))));
        }
        Ok(())
    }

    fn feed_tcp(&mut self, segment: &Segment<'_>, out: &mut Vec<Exchange>) -> Result<(), ParseError> {
        let d = usize::from(segment.direction == Direction::Recv);
        let ts = segment.timestamp_ns;
        let mut data = segment.data;
        let mut missing = segment.missing();
        let mut result = Ok(());
        // The uncaptured tail of a message cut short earlier.
        if self.tcp[d].skip > 0 {
            let side = &mut self.tcp[d];
            let take = side.skip.min(data.len() as u64);
            data = &data[take as usize..];
            side.skip -= take;
            let take = side.skip.min(missing);
            side.skip -= take;
            missing -= take;
            if side.skip > 0 {
                return Ok(());
            }
            if let Some((msg, len, start_ns)) = side.held.take() {
                result = self.on_message(segment.direction, segment.peer, &msg, len, true, (start_ns, ts), out);
            }
        } else if self.tcp[d].lost {
            if !starts_tcp_message(data) {
                return Ok(());
            }
            self.tcp[d].lost = false;
        }
        while !data.is_empty() {
            let side = &mut self.tcp[d];
            let room = DEFAULT_LIMIT.saturating_sub(side.buf.len()).min(data.len());
            if room == 0 {
                // One message larger than the buffer: keep its start only.
                let dropped = data.len() as u64;
                self.counts.overflow_bytes = self.counts.overflow_bytes.saturating_add(dropped);
                missing = missing.saturating_add(dropped);
                break;
            }
            side.buf.push(&data[..room], 0, ts);
            data = &data[room..];
            loop {
                let side = &mut self.tcp[d];
                let bytes = side.buf.bytes();
                let Some(prefix) = bytes.first_chunk::<2>() else { break };
                let len = usize::from(u16::from_be_bytes(*prefix));
                if len < HEADER_LEN {
                    side.buf.clear();
                    side.lost = true;
                    self.counts.malformed += 1;
                    return Err(malformed("TCP message shorter than a DNS header"));
                }
                if bytes.len() < 2 + len {
                    break;
                }
                let msg = bytes[2..2 + len].to_vec();
                let start_ns = side.buf.first_ns();
                side.buf.consume(2 + len, ts);
                let r = self.on_message(segment.direction, segment.peer, &msg, len as u64, false, (start_ns, ts), out);
                result = result.and(r);
            }
        }
        if missing > 0 {
            let side = &mut self.tcp[d];
            let bytes = side.buf.bytes();
            match bytes.first_chunk::<2>().map(|p| 2 + u64::from(u16::from_be_bytes(*p))) {
                // The length itself went uncaptured: the boundaries are lost.
                None => side.lost = true,
                Some(whole) => {
                    let remaining = whole.saturating_sub(bytes.len() as u64);
                    let msg = bytes[2..].to_vec();
                    let start_ns = side.buf.first_ns();
                    side.buf.clear();
                    let len = whole - 2;
                    if missing >= remaining {
                        side.lost = missing > remaining;
                        let r = self.on_message(segment.direction, segment.peer, &msg, len, true, (start_ns, ts), out);
                        result = result.and(r);
                    } else {
                        side.skip = remaining - missing;
                        side.held = Some((msg, len, start_ns));
                    }
                }
            }
        }
        result
    }
}

impl Parser for DnsParser {
    fn feed(&mut self, segment: &Segment<'_>, out: &mut Vec<Exchange>) -> Result<(), ParseError> {
        match self.transport {
            Transport::Udp => {
                let ts = segment.timestamp_ns;
                let truncated = segment.missing() > 0;
                self.on_message(
                    segment.direction,
                    segment.peer,
                    segment.data,
                    segment.total_len,
                    truncated,
                    (ts, ts),
                    out,
                )
            }
            Transport::Tcp => self.feed_tcp(segment, out),
        }
    }

    fn close(&mut self, timestamp_ns: u64, out: &mut Vec<Exchange>) {
        for query in std::mem::take(&mut self.pending) {
            let mut exchange = Self::exchange(query, None);
            exchange.end_ns = timestamp_ns;
            out.push(exchange);
        }
        self.tcp = [TcpSide::new(), TcpSide::new()];
    }

    fn counts(&self) -> ParserCounts {
        self.counts
    }
}

impl Default for DnsParser {
    fn default() -> Self {
        Self::new(Transport::Udp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Direction::{Recv, Send};
    use simple_dns::rdata::{A, AAAA, CNAME};
    use simple_dns::{CLASS, Name, PacketFlag, QCLASS, QTYPE, RCODE, ResourceRecord, TYPE};

    /// What glibc's stub resolver sends for `www.example.test` A: RD set, no EDNS.
    const GLIBC_A_QUERY: &[u8] = b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\
                                   \x03www\x07example\x04test\x00\x00\x01\x00\x01";

    fn query(id: u16, name: &str, qtype: TYPE) -> Vec<u8> {
        let mut packet = Packet::new_query(id);
        packet.set_flags(PacketFlag::RECURSION_DESIRED);
        packet.questions.push(simple_dns::Question::new(
            Name::new_unchecked(name),
            QTYPE::TYPE(qtype),
            QCLASS::CLASS(CLASS::IN),
            false,
        ));
        packet.build_bytes_vec().expect("query")
    }

    fn response(id: u16, name: &str, qtype: TYPE, rcode: RCODE, answers: &[IpAddr]) -> Vec<u8> {
        let mut packet = Packet::new_reply(id);
        packet.set_flags(PacketFlag::RECURSION_DESIRED | PacketFlag::RECURSION_AVAILABLE);
        *packet.rcode_mut() = rcode;
        let qname = Name::new_unchecked(name);
        packet.questions.push(simple_dns::Question::new(
            qname.clone(),
            QTYPE::TYPE(qtype),
            QCLASS::CLASS(CLASS::IN),
            false,
        ));
        if !answers.is_empty() && qtype == TYPE::A {
            // A CNAME first, as resolvers answer for aliases.
            let target = Name::new_unchecked("edge.example.test");
            packet.answers.push(ResourceRecord::new(qname.clone(), CLASS::IN, 300, RData::CNAME(CNAME(target))));
        }
        for address in answers {
            let rdata = match address {
                IpAddr::V4(a) => RData::A(A::from(*a)),
                IpAddr::V6(a) => RData::AAAA(AAAA::from(*a)),
            };
            packet.answers.push(ResourceRecord::new(qname.clone(), CLASS::IN, 300, rdata));
        }
        packet.build_bytes_vec_compressed().expect("response")
    }

    fn udp(direction: Direction, ts: u64, data: &[u8], peer: Option<SocketAddr>) -> Segment<'_> {
        Segment { direction, timestamp_ns: ts, data, total_len: data.len() as u64, peer }
    }

    fn feed_all(parser: &mut DnsParser, segments: &[Segment<'_>], close: Option<u64>) -> (Vec<Exchange>, usize) {
        let mut out = Vec::new();
        let errors = segments.iter().filter(|s| parser.feed(s, &mut out).is_err()).count();
        if let Some(ts) = close {
            parser.close(ts, &mut out);
        }
        (out, errors)
    }

    fn run(transport: Transport, segments: &[Segment<'_>], close: Option<u64>) -> Vec<Exchange> {
        let (out, errors) = feed_all(&mut DnsParser::new(transport), segments, close);
        assert_eq!(errors, 0);
        out
    }

    #[allow(clippy::too_many_arguments)]
    fn dns(
        role: Role,
        id: u16,
        name: &str,
        qtype: &str,
        rcode: Option<u32>,
        (start_ns, end_ns): (u64, u64),
        (request_bytes, response_bytes): (usize, usize),
        answer_count: u16,
        addresses: &[IpAddr],
        peer: Option<SocketAddr>,
    ) -> Exchange {
        Exchange {
            kind: ExchangeKind::Dns,
            role,
            method: None,
            target: name.to_owned(),
            status: rcode,
            start_ns,
            end_ns,
            request_bytes: request_bytes as u64,
            response_bytes: response_bytes as u64,
            peer,
            partial: None,
            detail: Detail::Dns(DnsDetail {
                id,
                qtype: qtype.to_owned(),
                rcode: rcode.map(|r| rcode_name(r as u16)),
                answer_count,
                addresses: addresses.to_vec(),
            }),
        }
    }

    fn v4(s: &str) -> IpAddr {
        s.parse().expect("address")
    }

    fn ctx(transport: Transport) -> ConnContext {
        ConnContext { transport, local_port: 40000, peer_port: 53, role: None }
    }

    fn tcp_framed(messages: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for m in messages {
            out.extend_from_slice(&(m.len() as u16).to_be_bytes());
            out.extend_from_slice(m);
        }
        out
    }

    #[test]
    fn builder_matches_glibc_bytes() {
        assert_eq!(query(0x1234, "www.example.test", TYPE::A), GLIBC_A_QUERY);
    }

    #[test]
    fn check_wants_a_well_formed_message_with_a_question() {
        let probe = |transport, data: &[u8]| check(&udp(Send, 0, data, None), &ctx(transport));
        assert_eq!(probe(Transport::Udp, GLIBC_A_QUERY), Confidence::Yes);
        let answer = response(0x1234, "www.example.test", TYPE::A, RCODE::NoError, &[v4("192.0.2.1")]);
        assert_eq!(probe(Transport::Udp, &answer), Confidence::Yes);
        assert_eq!(probe(Transport::Tcp, &tcp_framed(&[GLIBC_A_QUERY])), Confidence::Yes);
        // The TCP prefix alone, as a first write: plausible, the port decides.
        assert_eq!(probe(Transport::Tcp, &tcp_framed(&[GLIBC_A_QUERY])[..2]), Confidence::Maybe);
        assert_eq!(probe(Transport::Tcp, &[0, 3]), Confidence::No);
        assert_eq!(probe(Transport::Udp, &GLIBC_A_QUERY[..12]), Confidence::No);
        let mut no_question = GLIBC_A_QUERY[..12].to_vec();
        no_question[5] = 0;
        assert_eq!(probe(Transport::Udp, &no_question), Confidence::No);
        assert_eq!(probe(Transport::Udp, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"), Confidence::No);
        assert_eq!(probe(Transport::Tcp, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"), Confidence::No);
        assert_eq!(probe(Transport::Udp, &[0xff; 40]), Confidence::No);
        let segment = udp(Send, 0, GLIBC_A_QUERY, None);
        assert_eq!(crate::infer(&segment, &ctx(Transport::Udp)).map(|s| s.id), Some(ProtocolId::Dns));
    }

    #[test]
    fn a_and_aaaa_pair_whichever_answer_comes_first() {
        let a = query(0x1234, "www.example.test", TYPE::A);
        let aaaa = query(0x5678, "www.example.test", TYPE::AAAA);
        let v6: IpAddr = "2001:db8::1".parse().expect("v6");
        let aaaa_answer = response(0x5678, "www.example.test", TYPE::AAAA, RCODE::NoError, &[v6]);
        let a_answer =
            response(0x1234, "www.example.test", TYPE::A, RCODE::NoError, &[v4("192.0.2.1"), v4("192.0.2.2")]);
        // glibc sends both with one sendmmsg: one timestamp.
        let segments = [
            udp(Send, 100, &a, None),
            udp(Send, 100, &aaaa, None),
            udp(Recv, 150, &aaaa_answer, None),
            udp(Recv, 170, &a_answer, None),
        ];
        let out = run(Transport::Udp, &segments, Some(200));
        assert_eq!(
            out,
            vec![
                dns(
                    Role::Client,
                    0x5678,
                    "www.example.test",
                    "AAAA",
                    Some(0),
                    (100, 150),
                    (aaaa.len(), aaaa_answer.len()),
                    1,
                    &[v6],
                    None
                ),
                dns(
                    Role::Client,
                    0x1234,
                    "www.example.test",
                    "A",
                    Some(0),
                    (100, 170),
                    (a.len(), a_answer.len()),
                    3,
                    &[v4("192.0.2.1"), v4("192.0.2.2")],
                    None
                ),
            ]
        );
    }

    #[test]
    fn nxdomain() {
        let q = query(7, "nope.example.test", TYPE::A);
        let r = response(7, "nope.example.test", TYPE::A, RCODE::NameError, &[]);
        let out = run(Transport::Udp, &[udp(Send, 1, &q, None), udp(Recv, 9, &r, None)], None);
        assert_eq!(
            out,
            vec![dns(Role::Client, 7, "nope.example.test", "A", Some(3), (1, 9), (q.len(), r.len()), 0, &[], None)]
        );
        let Detail::Dns(detail) = &out[0].detail else { panic!("dns detail") };
        assert_eq!(detail.rcode.as_deref(), Some("NXDOMAIN"));
    }

    #[test]
    fn tcp_messages_split_and_shared() {
        let q1 = query(1, "a.example.test", TYPE::A);
        let q2 = query(2, "b.example.test", TYPE::MX);
        let r1 = response(1, "a.example.test", TYPE::A, RCODE::NoError, &[v4("198.51.100.7")]);
        let r2 = response(2, "b.example.test", TYPE::MX, RCODE::ServerFailure, &[]);
        // Both queries in one write; the responses split, the second sharing the first's segment.
        let queries = tcp_framed(&[&q1, &q2]);
        let responses = tcp_framed(&[&r1, &r2]);
        let cut1 = 1;
        let cut2 = r1.len() + 2 + 5;
        let segments = [
            udp(Send, 10, &queries, None),
            udp(Recv, 20, &responses[..cut1], None),
            udp(Recv, 30, &responses[cut1..cut2], None),
            udp(Recv, 40, &responses[cut2..], None),
        ];
        let out = run(Transport::Tcp, &segments, None);
        assert_eq!(
            out,
            vec![
                dns(
                    Role::Client,
                    1,
                    "a.example.test",
                    "A",
                    Some(0),
                    (10, 30),
                    (q1.len(), r1.len()),
                    2,
                    &[v4("198.51.100.7")],
                    None
                ),
                dns(Role::Client, 2, "b.example.test", "MX", Some(2), (10, 40), (q2.len(), r2.len()), 0, &[], None),
            ]
        );
    }

    #[test]
    fn unconnected_server_pairs_by_peer() {
        let p1: SocketAddr = "192.0.2.10:40001".parse().expect("peer");
        let p2: SocketAddr = "192.0.2.11:40001".parse().expect("peer");
        let q1 = query(99, "one.example.test", TYPE::A);
        let q2 = query(99, "two.example.test", TYPE::A);
        let r1 = response(99, "one.example.test", TYPE::A, RCODE::NoError, &[v4("203.0.113.1")]);
        let r2 = response(99, "two.example.test", TYPE::A, RCODE::Refused, &[]);
        let segments = [
            udp(Recv, 1, &q1, Some(p1)),
            udp(Recv, 2, &q2, Some(p2)),
            udp(Send, 3, &r2, Some(p2)),
            udp(Send, 4, &r1, Some(p1)),
        ];
        let out = run(Transport::Udp, &segments, None);
        assert_eq!(
            out,
            vec![
                dns(Role::Server, 99, "two.example.test", "A", Some(5), (2, 3), (q2.len(), r2.len()), 0, &[], Some(p2)),
                dns(
                    Role::Server,
                    99,
                    "one.example.test",
                    "A",
                    Some(0),
                    (1, 4),
                    (q1.len(), r1.len()),
                    2,
                    &[v4("203.0.113.1")],
                    Some(p1)
                ),
            ]
        );
    }

    #[test]
    fn close_emits_unanswered_and_orphans_are_ignored() {
        let q = query(5, "lost.example.test", TYPE::TXT);
        let orphan = response(6, "x.example.test", TYPE::A, RCODE::NoError, &[v4("192.0.2.9")]);
        let out = run(Transport::Udp, &[udp(Recv, 0, &orphan, None), udp(Send, 1, &q, None)], Some(5_000));
        assert_eq!(
            out,
            vec![dns(Role::Client, 5, "lost.example.test", "TXT", None, (1, 5_000), (q.len(), 0), 0, &[], None)]
        );
    }

    #[test]
    fn retransmissions_are_one_query() {
        let q = query(5, "slow.example.test", TYPE::A);
        let r = response(5, "slow.example.test", TYPE::A, RCODE::NoError, &[]);
        let out =
            run(Transport::Udp, &[udp(Send, 1, &q, None), udp(Send, 5, &q, None), udp(Recv, 6, &r, None)], Some(9));
        assert_eq!(
            out,
            vec![dns(Role::Client, 5, "slow.example.test", "A", Some(0), (1, 6), (2 * q.len(), r.len()), 0, &[], None)]
        );
    }

    #[test]
    fn outstanding_queries_are_bounded() {
        let mut parser = DnsParser::new(Transport::Udp);
        let queries: Vec<Vec<u8>> =
            (0..MAX_PENDING as u16 + 4).map(|id| query(id, "n.example.test", TYPE::A)).collect();
        let segments: Vec<_> = queries.iter().map(|q| udp(Send, 1, q, None)).collect();
        let (out, _) = feed_all(&mut parser, &segments, Some(2));
        assert_eq!(out.len(), MAX_PENDING);
        assert_eq!(parser.counts().unpaired_dropped, 4);
        let Detail::Dns(first) = &out[0].detail else { panic!("dns detail") };
        assert_eq!(first.id, 4);
    }

    #[test]
    fn unknown_types_and_uncaptured_answers() {
        let mut q = GLIBC_A_QUERY.to_vec();
        let n = q.len();
        q[n - 4..n - 2].copy_from_slice(&999u16.to_be_bytes());
        // A response whose answers went beyond the capture.
        let big = response(0x1234, "www.example.test", TYPE::A, RCODE::NoError, &[v4("192.0.2.1"); 20]);
        let mut r = big.clone();
        r[n - 4..n - 2].copy_from_slice(&999u16.to_be_bytes());
        let captured = &r[..n + 30];
        let segments = [
            udp(Send, 1, &q, None),
            Segment { direction: Recv, timestamp_ns: 2, data: captured, total_len: r.len() as u64, peer: None },
        ];
        let mut expected = dns(
            Role::Client,
            0x1234,
            "www.example.test",
            "TYPE999",
            Some(0),
            (1, 2),
            (q.len(), r.len()),
            21,
            &[],
            None,
        );
        expected.partial = Some("answers not captured".to_owned());
        assert_eq!(run(Transport::Udp, &segments, None), vec![expected]);
    }

    #[test]
    fn tcp_message_with_uncaptured_tail() {
        let q = query(3, "zone.example.test", TYPE::A);
        let r = response(3, "zone.example.test", TYPE::A, RCODE::NoError, &[v4("192.0.2.1"); 300]);
        let framed = tcp_framed(&[&r]);
        let next_q = query(4, "next.example.test", TYPE::AAAA);
        let next_r = response(4, "next.example.test", TYPE::AAAA, RCODE::NoError, &[]);
        let (fq, fnq, fnr) = (tcp_framed(&[&q]), tcp_framed(&[&next_q]), tcp_framed(&[&next_r]));
        let segments = [
            udp(Send, 1, &fq, None),
            Segment { direction: Recv, timestamp_ns: 2, data: &framed[..4096], total_len: 4500, peer: None },
            Segment { direction: Recv, timestamp_ns: 3, data: &[], total_len: framed.len() as u64 - 4500, peer: None },
            udp(Send, 4, &fnq, None),
            udp(Recv, 5, &fnr, None),
        ];
        let mut first =
            dns(Role::Client, 3, "zone.example.test", "A", Some(0), (1, 3), (q.len(), r.len()), 301, &[], None);
        first.partial = Some("answers not captured".to_owned());
        let second = dns(
            Role::Client,
            4,
            "next.example.test",
            "AAAA",
            Some(0),
            (4, 5),
            (next_q.len(), next_r.len()),
            0,
            &[],
            None,
        );
        assert_eq!(run(Transport::Tcp, &segments, None), vec![first, second]);
    }

    #[test]
    fn garbage_is_an_error() {
        let mut parser = DnsParser::new(Transport::Udp);
        let (_, errors) = feed_all(&mut parser, &[udp(Send, 1, b"\x00\x01garbage", None)], None);
        assert_eq!((errors, parser.counts().malformed), (1, 1));
        let mut parser = DnsParser::new(Transport::Tcp);
        let (out, errors) = feed_all(
            &mut parser,
            &[udp(Send, 1, b"\x00\x03abc", None), udp(Send, 2, &tcp_framed(&[GLIBC_A_QUERY]), None)],
            Some(3),
        );
        assert_eq!((errors, out.len()), (1, 1));
        // Counts that promise more records than the bytes can hold.
        let mut lying = GLIBC_A_QUERY.to_vec();
        lying[6..12].copy_from_slice(&[0xff; 6]);
        let mut parser = DnsParser::new(Transport::Udp);
        assert!(parser.feed(&udp(Send, 1, &lying, None), &mut Vec::new()).is_err());
    }

    fn tcp_conversation() -> (Vec<u8>, Vec<u8>) {
        let q1 = query(1, "a.example.test", TYPE::A);
        let q2 = query(2, "a.example.test", TYPE::AAAA);
        let r1 = response(1, "a.example.test", TYPE::A, RCODE::NoError, &[v4("192.0.2.1")]);
        let r2 = response(2, "a.example.test", TYPE::AAAA, RCODE::NoError, &["2001:db8::2".parse().expect("v6")]);
        (tcp_framed(&[&q1, &q2]), tcp_framed(&[&r2, &r1]))
    }

    fn split_run(queries: &[u8], responses: &[u8], qcuts: &[usize], rcuts: &[usize]) -> Vec<Exchange> {
        let pieces = |data: &[u8], cuts: &[usize]| {
            let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (data.len() + 1)).collect();
            cuts.extend([0, data.len()]);
            cuts.sort_unstable();
            cuts.windows(2).map(|w| data[w[0]..w[1]].to_vec()).filter(|p| !p.is_empty()).collect::<Vec<_>>()
        };
        let (qp, rp) = (pieces(queries, qcuts), pieces(responses, rcuts));
        let mut segments: Vec<Segment<'_>> = qp.iter().map(|p| udp(Send, 1, p, None)).collect();
        segments.extend(rp.iter().map(|p| udp(Recv, 2, p, None)));
        run(Transport::Tcp, &segments, Some(3))
    }

    #[test]
    fn every_single_tcp_split() {
        let (queries, responses) = tcp_conversation();
        let expected = split_run(&queries, &responses, &[], &[]);
        assert_eq!(expected.len(), 2);
        for cut in 1..queries.len() {
            assert_eq!(split_run(&queries, &responses, &[cut], &[]), expected, "query cut {cut}");
        }
        for cut in 1..responses.len() {
            assert_eq!(split_run(&queries, &responses, &[], &[cut]), expected, "response cut {cut}");
        }
    }

    proptest::proptest! {
        #[test]
        fn random_tcp_splits_change_nothing(
            qcuts in proptest::collection::vec(0usize..200, 0..6),
            rcuts in proptest::collection::vec(0usize..200, 0..6),
        ) {
            let (queries, responses) = tcp_conversation();
            let expected = split_run(&queries, &responses, &[], &[]);
            proptest::prop_assert_eq!(split_run(&queries, &responses, &qcuts, &rcuts), expected);
        }

        #[test]
        fn random_bytes_never_panic(
            tcp in proptest::bool::ANY,
            datagrams in proptest::collection::vec((proptest::bool::ANY, proptest::collection::vec(proptest::num::u8::ANY, 0..120), 0u64..300), 0..20),
        ) {
            let transport = if tcp { Transport::Tcp } else { Transport::Udp };
            let mut parser = DnsParser::new(transport);
            let mut out = Vec::new();
            for (i, (send, data, extra)) in datagrams.iter().enumerate() {
                let direction = if *send { Send } else { Recv };
                let segment = Segment { direction, timestamp_ns: i as u64, data, total_len: data.len() as u64 + extra, peer: None };
                let _ = check(&segment, &ctx(transport));
                let _ = parser.feed(&segment, &mut out);
            }
            parser.close(99, &mut out);
        }

        #[test]
        fn mutated_messages_never_panic(flips in proptest::collection::vec((0usize..200, proptest::num::u8::ANY), 1..8), tcp in proptest::bool::ANY) {
            let mut r = response(1, "a.example.test", TYPE::A, RCODE::NoError, &[v4("192.0.2.1"), v4("192.0.2.2")]);
            for (at, byte) in flips {
                let n = r.len();
                r[at % n] = byte;
            }
            let transport = if tcp { Transport::Tcp } else { Transport::Udp };
            let data = if tcp { tcp_framed(&[&r]) } else { r };
            let mut parser = DnsParser::new(transport);
            let mut out = Vec::new();
            let _ = parser.feed(&udp(Recv, 1, &data, None), &mut out);
            let _ = check(&udp(Recv, 1, &data, None), &ctx(transport));
        }
    }
}
