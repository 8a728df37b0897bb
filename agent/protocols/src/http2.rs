//! HTTP/2 (RFC 9113) and gRPC over it.
//!
//! One parser per connection. Each direction is a stream of frames parsed
//! incrementally across segments: frame headers and the payloads of control
//! and header frames are reassembled in a bounded [`StreamBuffer`], DATA
//! payloads are never buffered, only counted (and, for gRPC, walked for the
//! 5-byte message prefixes). Bytes a syscall moved but the sensor did not
//! capture advance through the current frame's payload; when they run past
//! it the direction has lost its framing and waits for a segment that starts
//! with a plausible frame header.
//!
//! Each direction has its own HPACK decoder ([`hpack`]); a connection first
//! seen mid-way decodes what static-table indexes and literals give and says
//! in [`Exchange::partial`] how many dynamic references were unknown.
//!
//! Streams pair by id; an exchange is emitted once both directions ended
//! (END_STREAM) or the stream was reset, or at close.

pub mod hpack;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use crate::buffer::{DEFAULT_LIMIT, StreamBuffer};
use crate::{
    Confidence, ConnContext, Detail, Direction, Exchange, ExchangeKind, GrpcDetail, HttpDetail, ParseError, Parser,
    ParserCounts, Privacy, ProtocolId, ProtocolSpec, Role, Segment, Transport,
};
use hpack::{Decoded, Decoder, Field, Incomplete};

pub static SPEC: ProtocolSpec = ProtocolSpec {
    id: ProtocolId::Http2,
    name: "http2",
    transports: &[Transport::Tcp],
    // gRPC's customary port; content still has to look like frames.
    hint_ports: &[50051],
    check,
    new_parser,
};

/// The client connection preface (RFC 9113 §3.4).
pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const FRAME_HEADER_LEN: usize = 9;
/// Streams tracked at once per connection; more evict the oldest.
pub const MAX_STREAMS: usize = 256;
/// Largest header block (HEADERS + CONTINUATION fragments) reassembled.
pub const MAX_HEADER_BLOCK: usize = DEFAULT_LIMIT;
/// Largest frame payload buffered (all but DATA, which is streamed).
const MAX_BUFFERED_PAYLOAD: usize = DEFAULT_LIMIT - FRAME_HEADER_LEN;
/// SETTINGS_MAX_FRAME_SIZE's initial value: inference trusts no larger frame.
const DEFAULT_MAX_FRAME: u32 = 16_384;

const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const PRIORITY: u8 = 0x2;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const PUSH_PROMISE: u8 = 0x5;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;
const WINDOW_UPDATE: u8 = 0x8;
const CONTINUATION: u8 = 0x9;

const END_STREAM: u8 = 0x1;
const ACK: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY_FLAG: u8 = 0x20;

const SETTINGS_HEADER_TABLE_SIZE: u16 = 0x1;

fn malformed(reason: impl Into<String>) -> ParseError {
    ParseError::Malformed { protocol: ProtocolId::Http2, reason: reason.into() }
}

fn index(direction: Direction) -> usize {
    match direction {
        Direction::Send => 0,
        Direction::Recv => 1,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FrameHeader {
    len: u32,
    kind: u8,
    flags: u8,
    stream: u32,
    /// Timestamp of the segment that brought the header's first byte.
    start_ns: u64,
}

impl FrameHeader {
    fn parse(bytes: &[u8], start_ns: u64) -> Option<Self> {
        let b: &[u8; FRAME_HEADER_LEN] = bytes.get(..FRAME_HEADER_LEN)?.try_into().ok()?;
        Some(Self {
            len: u32::from_be_bytes([0, b[0], b[1], b[2]]),
            kind: b[3],
            flags: b[4],
            stream: u32::from_be_bytes([b[5], b[6], b[7], b[8]]) & 0x7fff_ffff,
            start_ns,
        })
    }

    fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }

    /// The stream-id and fixed-length rules of RFC 9113 §6 (connection
    /// errors). Unknown types pass: extensions must be ignored.
    fn validate(&self) -> Result<(), ParseError> {
        let on_stream = self.stream != 0;
        let ok = match self.kind {
            DATA | HEADERS | CONTINUATION | PUSH_PROMISE => on_stream,
            PRIORITY => on_stream && self.len == 5,
            RST_STREAM => on_stream && self.len == 4,
            SETTINGS => !on_stream && self.len.is_multiple_of(6) && (!self.has(ACK) || self.len == 0),
            PING => !on_stream && self.len == 8,
            GOAWAY => !on_stream && self.len >= 8,
            WINDOW_UPDATE => self.len == 4,
            _ => true,
        };
        if ok {
            Ok(())
        } else {
            Err(malformed(format!(
                "frame type {:#x} with length {} on stream {} breaks RFC 9113 §6",
                self.kind, self.len, self.stream
            )))
        }
    }

    /// Stricter than [`validate`](Self::validate), for guessing whether bytes
    /// are HTTP/2 at all: a known type, only defined flags, no reserved bit,
    /// no frame larger than the default maximum.
    fn plausible(bytes: &[u8]) -> Option<Self> {
        let header = Self::parse(bytes, 0)?;
        let defined_flags = match header.kind {
            DATA => END_STREAM | PADDED,
            HEADERS => END_STREAM | END_HEADERS | PADDED | PRIORITY_FLAG,
            SETTINGS | PING => ACK,
            PUSH_PROMISE => END_HEADERS | PADDED,
            CONTINUATION => END_HEADERS,
            PRIORITY | RST_STREAM | GOAWAY | WINDOW_UPDATE => 0,
            _ => return None,
        };
        let reserved = bytes[5] & 0x80 != 0;
        let plausible = header.flags & !defined_flags == 0
            && !reserved
            && header.len <= DEFAULT_MAX_FRAME
            && header.validate().is_ok();
        plausible.then_some(header)
    }
}

/// Whether a frame at the start of `data` is one that only HTTP/2 would send.
fn distinctive(header: &FrameHeader, payload: &[u8]) -> bool {
    match header.kind {
        SETTINGS => {
            // Known identifiers (RFC 9113, 8441, 9218) with legal values.
            payload.chunks_exact(6).all(|s| {
                let id = u16::from_be_bytes([s[0], s[1]]);
                let value = u32::from_be_bytes([s[2], s[3], s[4], s[5]]);
                match id {
                    0x2 | 0x8 | 0x9 => value <= 1,
                    0x4 => value <= 0x7fff_ffff,
                    0x5 => (16_384..=16_777_215).contains(&value),
                    0x1 | 0x3 | 0x6 => true,
                    _ => false,
                }
            })
        }
        HEADERS => header.stream % 2 == 1 && header.len > 0,
        WINDOW_UPDATE => payload.len() < 4 || u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]]) != 0,
        PING | GOAWAY | RST_STREAM => true,
        _ => false,
    }
}

fn check(segment: &Segment<'_>, _ctx: &ConnContext) -> Confidence {
    let data = segment.data;
    if data.len() >= 8 && PREFACE.starts_with(&data[..data.len().min(PREFACE.len())]) {
        return Confidence::Yes;
    }
    // A connection first seen mid-way: the payload must be a run of
    // plausible frames that tiles it (the last one may run past the
    // capture), with at least one frame only HTTP/2 would send.
    let mut pos = 0;
    let mut strong = false;
    let mut frames = 0;
    while pos < data.len() {
        let rest = &data[pos..];
        if rest.len() < FRAME_HEADER_LEN {
            // A header cut short: only believable when the capture was.
            if segment.missing() == 0 {
                return Confidence::No;
            }
            break;
        }
        let Some(header) = FrameHeader::plausible(rest) else {
            return Confidence::No;
        };
        let payload = &rest[FRAME_HEADER_LEN..rest.len().min(FRAME_HEADER_LEN + header.len as usize)];
        strong |= distinctive(&header, payload);
        frames += 1;
        pos += FRAME_HEADER_LEN + header.len as usize;
    }
    match (frames, strong) {
        (0, _) => Confidence::No,
        (_, true) => Confidence::Yes,
        (_, false) => Confidence::Maybe,
    }
}

fn new_parser(ctx: &ConnContext, privacy: Privacy) -> Box<dyn Parser> {
    Box::new(Http2Parser::new(ctx.role, privacy))
}

/// Counts gRPC's length-prefixed messages (1-byte flag, 4-byte length)
/// across the DATA payloads of one direction of one stream.
#[derive(Debug, Clone, Copy, Default)]
struct MessageCounter {
    count: u32,
    prefix_got: u8,
    len: u32,
    body_remaining: u64,
    /// Uncaptured bytes covered a prefix: the count is a lower bound.
    lost: bool,
}

impl MessageCounter {
    fn feed(&mut self, mut data: &[u8]) {
        while !self.lost && !data.is_empty() {
            if self.body_remaining > 0 {
                let take = data.len().min(usize::try_from(self.body_remaining).unwrap_or(usize::MAX));
                self.body_remaining -= take as u64;
                data = &data[take..];
                continue;
            }
            let byte = data[0];
            data = &data[1..];
            if self.prefix_got == 0 {
                if byte > 1 {
                    // Not a compressed flag: this is not gRPC framing.
                    self.lost = true;
                }
            } else {
                self.len = (self.len << 8) | u32::from(byte);
            }
            self.prefix_got += 1;
            if self.prefix_got == 5 {
                self.count = self.count.saturating_add(1);
                self.body_remaining = u64::from(self.len);
                self.prefix_got = 0;
                self.len = 0;
            }
        }
    }

    fn skip(&mut self, n: u64) {
        if n == 0 || self.lost {
            return;
        }
        if self.prefix_got == 0 && n <= self.body_remaining {
            self.body_remaining -= n;
        } else {
            self.lost = true;
        }
    }
}

#[derive(Debug, Clone)]
struct Stream {
    id: u32,
    start_ns: u64,
    method: Option<String>,
    path: Option<String>,
    authority: Option<String>,
    grpc: bool,
    traceparent: Option<String>,
    tracestate: Option<String>,
    status: Option<u32>,
    grpc_status: Option<u32>,
    grpc_message: Option<String>,
    response_seen: bool,
    /// Frame bytes seen per direction (indexed by [`index`]): captured, or
    /// moved uncaptured inside a frame whose header was seen; never the
    /// length a header declares for bytes that did not go by.
    bytes: [u64; 2],
    ended: [bool; 2],
    messages: [MessageCounter; 2],
    unknown_refs: u32,
    unknown_why: Option<Incomplete>,
    /// A header block of the stream was not seen (capture gap, bound).
    block_lost: bool,
    /// Frames of the stream went by unparsed.
    gap: bool,
}

/// A header block being assembled from HEADERS/PUSH_PROMISE + CONTINUATION.
#[derive(Debug, Clone)]
struct Block {
    stream: u32,
    end_stream: bool,
    push: bool,
    fragments: Vec<u8>,
    /// Part of the block was not seen or did not fit: it cannot be decoded.
    lost: bool,
    /// Frame bytes of the block that went by so far.
    bytes: u64,
    start_ns: u64,
}

/// Where a direction is in its frame stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rx {
    /// Nothing seen yet: the client preface may come.
    Start,
    Preface(usize),
    /// Assembling a frame header in the buffer.
    Header,
    /// Assembling a (non-DATA) frame's payload in the buffer.
    Payload(FrameHeader),
    Data(DataRx),
    /// A payload nobody needs (unknown type, too large, already lost).
    Skip(u64),
    /// Framing lost: waiting for a segment that starts with a frame header.
    Lost,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct DataRx {
    header: FrameHeader,
    /// PADDED and the pad length not read yet.
    need_pad_len: bool,
    data_remaining: u64,
    pad_remaining: u64,
}

#[derive(Debug)]
struct Side {
    rx: Rx,
    buf: StreamBuffer,
    /// The first bytes of the direction, held until there are enough to
    /// tell a preface or frame header from the middle of a frame.
    start: Vec<u8>,
}

/// Everything but the per-direction framing state.
#[derive(Debug)]
struct Conn {
    privacy: Privacy,
    /// The direction the client sends in, once known.
    client: Option<Direction>,
    /// Whether the client preface was seen (the role is then certain).
    preface_seen: bool,
    /// Decided on the first payload: the connection was seen from its start.
    from_start: Option<bool>,
    decoders: [Decoder; 2],
    blocks: [Option<Block>; 2],
    /// Per direction, the stream the current frame's payload bytes count
    /// for as they go by (captured or not); `None`: no stream's.
    payload_stream: [Option<u32>; 2],
    streams: BTreeMap<u32, Stream>,
    counts: ParserCounts,
    /// The first error of the segment being fed.
    error: Option<ParseError>,
}

#[derive(Debug)]
pub struct Http2Parser {
    sides: [Side; 2],
    conn: Conn,
}

impl Default for Http2Parser {
    fn default() -> Self {
        Self::new(None, Privacy::default())
    }
}

impl Http2Parser {
    pub fn new(role: Option<Role>, privacy: Privacy) -> Self {
        let side = || Side { rx: Rx::Start, buf: StreamBuffer::new(DEFAULT_LIMIT), start: Vec::new() };
        Self {
            sides: [side(), side()],
            conn: Conn {
                privacy,
                client: role.map(Role::request_direction),
                preface_seen: false,
                from_start: None,
                decoders: [Decoder::new(None), Decoder::new(None)],
                blocks: [None, None],
                payload_stream: [None, None],
                streams: BTreeMap::new(),
                counts: ParserCounts::default(),
                error: None,
            },
        }
    }

    /// Parses captured bytes. A framing error loses the direction's framing
    /// (it resynchronises at a later segment that starts with a frame header).
    fn consume(&mut self, d: Direction, data: &[u8], ts: u64, out: &mut Vec<Exchange>) {
        if let Err(error) = self.consume_frames(d, data, ts, out) {
            let side = &mut self.sides[index(d)];
            side.rx = Rx::Lost;
            side.buf.clear();
            self.conn.lose_framing(d);
            self.conn.counts.malformed += 1;
            self.conn.error.get_or_insert(error);
        }
    }

    fn consume_frames(
        &mut self,
        d: Direction,
        mut data: &[u8],
        ts: u64,
        out: &mut Vec<Exchange>,
    ) -> Result<(), ParseError> {
        let side = &mut self.sides[index(d)];
        let conn = &mut self.conn;
        while !data.is_empty() {
            match side.rx {
                Rx::Start => {
                    side.rx = if PREFACE.starts_with(&data[..data.len().min(PREFACE.len())]) {
                        Rx::Preface(0)
                    } else {
                        Rx::Header
                    };
                }
                Rx::Preface(matched) => {
                    let take = (PREFACE.len() - matched).min(data.len());
                    if data[..take] != PREFACE[matched..matched + take] {
                        return Err(malformed("broken client preface"));
                    }
                    data = &data[take..];
                    side.rx = if matched + take == PREFACE.len() {
                        conn.on_preface(d);
                        Rx::Header
                    } else {
                        Rx::Preface(matched + take)
                    };
                }
                Rx::Header => {
                    let take = (FRAME_HEADER_LEN - side.buf.len()).min(data.len());
                    side.buf.push(&data[..take], 0, ts);
                    data = &data[take..];
                    if side.buf.len() == FRAME_HEADER_LEN {
                        let header = FrameHeader::parse(side.buf.bytes(), side.buf.first_ns())
                            .ok_or_else(|| malformed("frame header"))?;
                        side.buf.clear();
                        side.rx = conn.start_frame(d, header, ts, out)?;
                        if let Rx::Payload(header) = side.rx
                            && header.len == 0
                        {
                            conn.on_frame(d, &header, &[], ts, out);
                            side.rx = Rx::Header;
                        }
                    }
                }
                Rx::Payload(header) => {
                    let take = (header.len as usize - side.buf.len()).min(data.len());
                    side.buf.push(&data[..take], 0, ts);
                    conn.payload_bytes(d, take as u64);
                    data = &data[take..];
                    if side.buf.len() == header.len as usize {
                        conn.on_frame(d, &header, side.buf.bytes(), ts, out);
                        side.buf.clear();
                        side.rx = Rx::Header;
                    }
                }
                Rx::Data(mut rx) => {
                    if rx.need_pad_len {
                        let pad = u64::from(data[0]);
                        conn.payload_bytes(d, 1);
                        data = &data[1..];
                        if pad > rx.data_remaining {
                            return Err(malformed("DATA padding longer than the frame"));
                        }
                        rx.need_pad_len = false;
                        rx.data_remaining -= pad;
                        rx.pad_remaining = pad;
                    } else if rx.data_remaining > 0 {
                        let take = data.len().min(usize::try_from(rx.data_remaining).unwrap_or(usize::MAX));
                        conn.on_data(d, rx.header.stream, &data[..take]);
                        conn.payload_bytes(d, take as u64);
                        rx.data_remaining -= take as u64;
                        data = &data[take..];
                    } else {
                        let take = data.len().min(usize::try_from(rx.pad_remaining).unwrap_or(usize::MAX));
                        conn.payload_bytes(d, take as u64);
                        rx.pad_remaining -= take as u64;
                        data = &data[take..];
                    }
                    side.rx = conn.data_progress(d, rx, ts, out);
                }
                Rx::Skip(remaining) => {
                    let take = data.len().min(usize::try_from(remaining).unwrap_or(usize::MAX));
                    conn.payload_bytes(d, take as u64);
                    data = &data[take..];
                    side.rx = if remaining == take as u64 { Rx::Header } else { Rx::Skip(remaining - take as u64) };
                }
                Rx::Lost => return Ok(()),
            }
        }
        Ok(())
    }

    /// Advances over `n` bytes that went by uncaptured.
    fn skip(&mut self, d: Direction, mut n: u64, ts: u64, out: &mut Vec<Exchange>) {
        let side = &mut self.sides[index(d)];
        let conn = &mut self.conn;
        while n > 0 {
            match side.rx {
                Rx::Payload(header) => {
                    let remaining = u64::from(header.len) - side.buf.len() as u64;
                    side.buf.clear();
                    conn.frame_lost(d, &header, ts, out);
                    side.rx = Rx::Skip(remaining);
                }
                Rx::Data(mut rx) => {
                    if rx.need_pad_len {
                        // The split between data and padding is unknown:
                        // the rest of the frame is skipped as a whole.
                        rx.need_pad_len = false;
                        if rx.data_remaining > 0 {
                            // More than any message body left: the counter loses its framing.
                            conn.on_data_lost(d, rx.header.stream, u64::MAX);
                        }
                        rx.pad_remaining = rx.data_remaining;
                        rx.data_remaining = 0;
                        conn.payload_bytes(d, 1);
                        n -= 1;
                    } else if rx.data_remaining > 0 {
                        let take = n.min(rx.data_remaining);
                        conn.on_data_lost(d, rx.header.stream, take);
                        conn.payload_bytes(d, take);
                        rx.data_remaining -= take;
                        n -= take;
                    } else {
                        let take = n.min(rx.pad_remaining);
                        conn.payload_bytes(d, take);
                        rx.pad_remaining -= take;
                        n -= take;
                    }
                    side.rx = conn.data_progress(d, rx, ts, out);
                }
                Rx::Skip(remaining) => {
                    let take = n.min(remaining);
                    conn.payload_bytes(d, take);
                    n -= take;
                    side.rx = if take == remaining { Rx::Header } else { Rx::Skip(remaining - take) };
                }
                Rx::Start | Rx::Preface(_) | Rx::Header | Rx::Lost => {
                    // Uncaptured bytes where a frame header should be.
                    side.buf.clear();
                    if side.rx != Rx::Lost {
                        conn.lose_framing(d);
                    }
                    side.rx = Rx::Lost;
                    return;
                }
            }
        }
    }
}

impl Conn {
    fn on_preface(&mut self, d: Direction) {
        self.preface_seen = true;
        self.client = Some(d);
    }

    fn client_dir(&self) -> Direction {
        self.client.unwrap_or(Direction::Send)
    }

    /// This direction's framing is lost: its header blocks and DATA go by unseen.
    fn lose_framing(&mut self, d: Direction) {
        let i = index(d);
        self.decoders[i].mark_incomplete(Incomplete::Gap);
        if let Some(block) = self.blocks[i].take()
            && let Some(stream) = self.streams.get_mut(&block.stream)
        {
            stream.block_lost = true;
        }
        for stream in self.streams.values_mut() {
            stream.gap = true;
            stream.messages[i].lost = true;
        }
    }

    fn stream_bytes(&mut self, d: Direction, stream: u32, bytes: u64) {
        if let Some(stream) = self.streams.get_mut(&stream) {
            stream.bytes[index(d)] += bytes;
        }
    }

    /// `n` bytes of the current frame's payload went by (captured or not):
    /// they count for the header block being assembled on the frame's
    /// stream, else for the stream itself.
    fn payload_bytes(&mut self, d: Direction, n: u64) {
        let i = index(d);
        let Some(id) = self.payload_stream[i] else {
            return;
        };
        match &mut self.blocks[i] {
            Some(block) if block.stream == id => block.bytes += n,
            _ => self.stream_bytes(d, id, n),
        }
    }

    /// A frame header arrived: returns what to do with its payload.
    fn start_frame(
        &mut self,
        d: Direction,
        header: FrameHeader,
        ts: u64,
        out: &mut Vec<Exchange>,
    ) -> Result<Rx, ParseError> {
        let i = index(d);
        header.validate()?;
        // Only the header counts now; the payload counts as it goes by
        // (`payload_bytes`), for it may never come.
        self.payload_stream[i] = None;
        let on_stream = (header.stream != 0).then_some(header.stream);
        match (&mut self.blocks[i], header.kind) {
            (Some(block), CONTINUATION) if block.stream == header.stream => {
                block.bytes += FRAME_HEADER_LEN as u64;
                if !block.push {
                    self.payload_stream[i] = on_stream;
                }
            }
            (Some(_), _) => return Err(malformed("header block interrupted before END_HEADERS")),
            (None, CONTINUATION) => {
                if self.decoders[i].incomplete().is_none() {
                    return Err(malformed("CONTINUATION without a header block"));
                }
                // After a gap: the block it continues was not seen.
                return Ok(Rx::Skip(u64::from(header.len)));
            }
            (None, HEADERS | PUSH_PROMISE) => {
                self.blocks[i] = Some(Block {
                    stream: header.stream,
                    end_stream: header.kind == HEADERS && header.has(END_STREAM),
                    push: header.kind == PUSH_PROMISE,
                    fragments: Vec::new(),
                    lost: false,
                    bytes: FRAME_HEADER_LEN as u64,
                    start_ns: header.start_ns,
                });
                if header.kind == HEADERS {
                    self.payload_stream[i] = on_stream;
                }
            }
            (None, _) => {
                self.stream_bytes(d, header.stream, FRAME_HEADER_LEN as u64);
                self.payload_stream[i] = on_stream;
            }
        }
        if header.kind == DATA {
            let rx = DataRx {
                header,
                need_pad_len: header.has(PADDED) && header.len > 0,
                data_remaining: u64::from(header.len).saturating_sub(u64::from(header.has(PADDED))),
                pad_remaining: 0,
            };
            if header.has(PADDED) && header.len == 0 {
                return Err(malformed("padded DATA without a pad length"));
            }
            return Ok(self.data_progress(d, rx, ts, out));
        }
        if header.kind > CONTINUATION {
            return Ok(Rx::Skip(u64::from(header.len)));
        }
        if header.len as usize > MAX_BUFFERED_PAYLOAD {
            self.counts.overflow_bytes += u64::from(header.len);
            self.frame_lost(d, &header, ts, out);
            return Ok(Rx::Skip(u64::from(header.len)));
        }
        Ok(Rx::Payload(header))
    }

    /// Moves a DATA frame along; at its end, applies END_STREAM.
    fn data_progress(&mut self, d: Direction, rx: DataRx, ts: u64, out: &mut Vec<Exchange>) -> Rx {
        if rx.need_pad_len || rx.data_remaining > 0 || rx.pad_remaining > 0 {
            return Rx::Data(rx);
        }
        if rx.header.has(END_STREAM) {
            self.end_stream(d, rx.header.stream, ts, out);
        }
        Rx::Header
    }

    fn on_data(&mut self, d: Direction, stream: u32, data: &[u8]) {
        if let Some(stream) = self.streams.get_mut(&stream) {
            stream.messages[index(d)].feed(data);
        }
    }

    fn on_data_lost(&mut self, d: Direction, stream: u32, n: u64) {
        if let Some(stream) = self.streams.get_mut(&stream) {
            stream.messages[index(d)].skip(n);
        }
    }

    /// A non-DATA frame whose payload was not (or not all) seen.
    fn frame_lost(&mut self, d: Direction, header: &FrameHeader, ts: u64, out: &mut Vec<Exchange>) {
        let i = index(d);
        match header.kind {
            HEADERS | PUSH_PROMISE | CONTINUATION => {
                // The block's insertions into the dynamic table are unknown.
                self.decoders[i].mark_incomplete(Incomplete::Gap);
                if let Some(block) = &mut self.blocks[i] {
                    block.lost = true;
                    block.fragments = Vec::new();
                    if header.has(END_HEADERS) {
                        self.finish_block(d, ts, out);
                    }
                }
            }
            RST_STREAM => self.reset(header.stream, ts, out),
            _ => {}
        }
    }

    fn on_frame(&mut self, d: Direction, header: &FrameHeader, payload: &[u8], ts: u64, out: &mut Vec<Exchange>) {
        let i = index(d);
        match header.kind {
            HEADERS | PUSH_PROMISE | CONTINUATION => {
                let fragment = if header.kind == CONTINUATION {
                    payload
                } else {
                    match header_fragment(header, payload) {
                        Some(fragment) => fragment,
                        None => {
                            self.counts.malformed += 1;
                            self.error.get_or_insert(malformed("HEADERS padding or priority longer than the frame"));
                            self.frame_lost(d, header, ts, out);
                            return;
                        }
                    }
                };
                let Some(block) = &mut self.blocks[i] else {
                    return;
                };
                if !block.lost {
                    if block.fragments.len() + fragment.len() > MAX_HEADER_BLOCK {
                        self.counts.overflow_bytes += (block.fragments.len() + fragment.len()) as u64;
                        block.lost = true;
                        block.fragments = Vec::new();
                        self.decoders[i].mark_incomplete(Incomplete::Gap);
                    } else {
                        block.fragments.extend_from_slice(fragment);
                    }
                }
                if header.has(END_HEADERS) {
                    self.finish_block(d, ts, out);
                }
            }
            SETTINGS if !header.has(ACK) => {
                for setting in payload.chunks_exact(6) {
                    if u16::from_be_bytes([setting[0], setting[1]]) == SETTINGS_HEADER_TABLE_SIZE {
                        let value = u32::from_be_bytes([setting[2], setting[3], setting[4], setting[5]]);
                        // The sender's decoder: it decodes what the peer sends.
                        self.decoders[index(d.reverse())].set_limit(value);
                    }
                }
            }
            RST_STREAM => self.reset(header.stream, ts, out),
            _ => {}
        }
    }

    /// Decodes a complete header block. An undecodable block is an error
    /// for the stream, not the connection: the framing is intact.
    fn finish_block(&mut self, d: Direction, ts: u64, out: &mut Vec<Exchange>) {
        let i = index(d);
        let Some(block) = self.blocks[i].take() else {
            return;
        };
        let decoded = if block.lost {
            None
        } else {
            match self.decoders[i].decode(&block.fragments) {
                Ok(decoded) => Some(decoded),
                Err(e) => {
                    self.counts.malformed += 1;
                    self.decoders[i].mark_incomplete(Incomplete::BadBlock);
                    self.error.get_or_insert(malformed(e.to_string()));
                    None
                }
            }
        };
        if !block.push {
            self.on_header_block(d, &block, decoded.as_ref(), ts, out);
        }
    }

    fn on_header_block(
        &mut self,
        d: Direction,
        block: &Block,
        decoded: Option<&Decoded>,
        ts: u64,
        out: &mut Vec<Exchange>,
    ) {
        let i = index(d);
        if self.client.is_none() {
            let is_request = match decoded {
                Some(h) if h.get(Field::Method).is_some() => true,
                Some(h) if h.get(Field::Status).is_some() => false,
                // The side opening odd streams is the client.
                _ => block.stream % 2 == 1 && !self.streams.contains_key(&block.stream),
            };
            self.client = Some(if is_request { d } else { d.reverse() });
        }
        let is_client = self.client == Some(d);
        let why = self.decoders[i].incomplete();
        if !self.streams.contains_key(&block.stream) {
            if !is_client || block.stream.is_multiple_of(2) {
                // A response to a request not seen, or a pushed stream.
                return;
            }
            if self.streams.len() >= MAX_STREAMS
                && let Some((&oldest, _)) = self.streams.iter().next()
            {
                self.streams.remove(&oldest);
                self.counts.unpaired_dropped += 1;
            }
            let h = decoded;
            let get = |field| h.and_then(|h| h.get_str(field));
            let content_type = get(Field::ContentType);
            self.streams.insert(
                block.stream,
                Stream {
                    id: block.stream,
                    start_ns: block.start_ns,
                    method: get(Field::Method),
                    path: get(Field::Path),
                    authority: get(Field::Authority).or_else(|| get(Field::Host)),
                    grpc: content_type.is_some_and(|ct| ct.starts_with("application/grpc")),
                    traceparent: get(Field::Traceparent),
                    tracestate: get(Field::Tracestate),
                    status: None,
                    grpc_status: None,
                    grpc_message: None,
                    response_seen: false,
                    bytes: [0; 2],
                    ended: [false; 2],
                    messages: [MessageCounter::default(); 2],
                    unknown_refs: 0,
                    unknown_why: None,
                    block_lost: false,
                    gap: false,
                },
            );
        }
        let Some(stream) = self.streams.get_mut(&block.stream) else {
            return;
        };
        stream.bytes[i] += block.bytes;
        match decoded {
            None => stream.block_lost = true,
            Some(h) => {
                if h.unknown_refs > 0 {
                    stream.unknown_refs = stream.unknown_refs.saturating_add(h.unknown_refs);
                    stream.unknown_why = stream.unknown_why.or(why).or(Some(Incomplete::Capped));
                }
                if !is_client {
                    stream.response_seen = true;
                    if let Some(status) = h.get_str(Field::Status).and_then(|s| s.parse::<u32>().ok())
                        && stream.status.is_none_or(|old| old < 200)
                    {
                        stream.status = Some(status);
                    }
                    if let Some(status) = h.get_str(Field::GrpcStatus).and_then(|s| s.trim().parse::<u32>().ok()) {
                        stream.grpc_status = Some(status);
                    }
                    if let Some(message) = h.get(Field::GrpcMessage).filter(|m| !m.is_empty()) {
                        stream.grpc_message = Some(percent_decode(message));
                    }
                }
            }
        }
        if block.end_stream {
            self.end_stream(d, block.stream, ts, out);
        }
    }

    fn end_stream(&mut self, d: Direction, id: u32, ts: u64, out: &mut Vec<Exchange>) {
        let Some(stream) = self.streams.get_mut(&id) else {
            return;
        };
        stream.ended[index(d)] = true;
        if stream.ended == [true, true]
            && let Some(stream) = self.streams.remove(&id)
        {
            out.push(self.exchange(stream, ts, None));
        }
    }

    fn reset(&mut self, id: u32, ts: u64, out: &mut Vec<Exchange>) {
        if let Some(stream) = self.streams.remove(&id) {
            out.push(self.exchange(stream, ts, None));
        }
    }

    fn exchange(&self, stream: Stream, end_ns: u64, note: Option<&str>) -> Exchange {
        let request = index(self.client_dir());
        let response = 1 - request;
        let mut notes = Vec::new();
        if stream.unknown_refs > 0 {
            let why = stream.unknown_why.unwrap_or(Incomplete::MidWay);
            let plural = if stream.unknown_refs == 1 { "reference" } else { "references" };
            notes.push(format!("hpack: {} dynamic-table {plural} unknown ({})", stream.unknown_refs, why.describe()));
        }
        if stream.block_lost {
            notes.push("a header block was not seen".to_string());
        }
        if stream.gap {
            notes.push("frames of the stream went by uncaptured".to_string());
        }
        if stream.grpc && stream.messages.iter().any(|m| m.lost) {
            notes.push("grpc: message framing lost, counts are lower bounds".to_string());
        }
        let mut missing = Vec::new();
        // Which fields a loss left empty (nothing to say when nothing was lost).
        if !notes.is_empty() {
            for (name, value) in
                [(":method", &stream.method), (":path", &stream.path), (":authority", &stream.authority)]
            {
                if value.is_none() {
                    missing.push(name);
                }
            }
            if stream.response_seen && stream.status.is_none() && !stream.grpc {
                missing.push(":status");
            }
        }
        if !missing.is_empty() {
            notes.push(format!("unknown: {}", missing.join(", ")));
        }
        if let Some(note) = note {
            notes.push(note.to_string());
        }
        let partial = (!notes.is_empty()).then(|| notes.join("; "));
        let role = Role::from_request_direction(self.client_dir());
        if stream.grpc {
            let path = stream.path.as_deref().unwrap_or("");
            let (service, method) = path.trim_start_matches('/').split_once('/').unwrap_or((path, ""));
            let status = stream.grpc_status.or_else(|| stream.status.and_then(grpc_status_from_http));
            Exchange {
                kind: ExchangeKind::Grpc,
                role,
                method: Some(stream.method.unwrap_or_else(|| "POST".to_string())),
                target: format!("{service}/{method}"),
                status,
                start_ns: stream.start_ns,
                end_ns,
                request_bytes: stream.bytes[request],
                response_bytes: stream.bytes[response],
                peer: None,
                partial,
                detail: Detail::Grpc(GrpcDetail {
                    service: service.to_string(),
                    method: method.to_string(),
                    authority: stream.authority,
                    grpc_message: stream.grpc_message,
                    traceparent: stream.traceparent,
                    tracestate: stream.tracestate,
                    stream_id: stream.id,
                    request_messages: stream.messages[request].count,
                    response_messages: stream.messages[response].count,
                }),
            }
        } else {
            let target = self.privacy.target(stream.path.as_deref().unwrap_or_default()).to_owned();
            Exchange {
                kind: ExchangeKind::Http2,
                role,
                method: stream.method,
                target,
                status: stream.status,
                start_ns: stream.start_ns,
                end_ns,
                request_bytes: stream.bytes[request],
                response_bytes: stream.bytes[response],
                peer: None,
                partial,
                detail: Detail::Http(HttpDetail {
                    version: "2".to_string(),
                    host: stream.authority,
                    traceparent: stream.traceparent,
                    tracestate: stream.tracestate,
                    stream_id: Some(stream.id),
                }),
            }
        }
    }
}

/// The header block fragment of a HEADERS or PUSH_PROMISE payload, without
/// padding, priority or promised stream id.
fn header_fragment<'a>(header: &FrameHeader, payload: &'a [u8]) -> Option<&'a [u8]> {
    let mut body = payload;
    let mut pad = 0;
    if header.has(PADDED) {
        pad = usize::from(*body.first()?);
        body = &body[1..];
    }
    let skip = match header.kind {
        HEADERS if header.has(PRIORITY_FLAG) => 5,
        PUSH_PROMISE => 4,
        _ => 0,
    };
    body = body.get(skip..)?;
    body.get(..body.len().checked_sub(pad)?)
}

/// gRPC's percent-encoding of `grpc-message`.
fn percent_decode(value: &[u8]) -> String {
    let mut out = Vec::with_capacity(value.len());
    let mut i = 0;
    while i < value.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if value[i] == b'%'
            && let (Some(hi), Some(lo)) =
                (value.get(i + 1).copied().and_then(hex), value.get(i + 2).copied().and_then(hex))
        {
            out.push((hi * 16 + lo) as u8);
            i += 3;
            continue;
        }
        out.push(value[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// gRPC's mapping of an HTTP status without `grpc-status` (doc/http-grpc-status-mapping.md).
fn grpc_status_from_http(status: u32) -> Option<u32> {
    Some(match status {
        200 => return None,
        400 => 13,
        401 => 16,
        403 => 7,
        404 => 12,
        429 | 502..=504 => 14,
        _ => 2,
    })
}

impl Parser for Http2Parser {
    fn feed(&mut self, segment: &Segment<'_>, out: &mut Vec<Exchange>) -> Result<(), ParseError> {
        let d = segment.direction;
        let mut data = segment.data;
        let joined;
        let side = &mut self.sides[index(d)];
        if side.rx == Rx::Start {
            if side.start.len() + data.len() < FRAME_HEADER_LEN && segment.missing() == 0 {
                side.start.extend_from_slice(data);
                return Ok(());
            }
            if !side.start.is_empty() {
                joined = [std::mem::take(&mut side.start).as_slice(), data].concat();
                data = &joined;
            }
        }
        if self.conn.from_start.is_none() && !data.is_empty() {
            // Seen from the start when the first bytes are the client preface
            // or the server's initial SETTINGS.
            let from_start = PREFACE.starts_with(&data[..data.len().min(PREFACE.len())])
                || FrameHeader::parse(data, 0).is_some_and(|h| h.kind == SETTINGS && !h.has(ACK) && h.stream == 0);
            self.conn.from_start = Some(from_start);
            if !from_start {
                self.conn.decoders = [Decoder::new(Some(Incomplete::MidWay)), Decoder::new(Some(Incomplete::MidWay))];
            }
        }
        let side = &mut self.sides[index(d)];
        match side.rx {
            Rx::Lost if FrameHeader::plausible(data).is_some() => side.rx = Rx::Header,
            // A direction first seen mid-frame waits for a frame boundary.
            Rx::Start
                if !data.is_empty()
                    && !PREFACE.starts_with(&data[..data.len().min(PREFACE.len())])
                    && FrameHeader::plausible(data).is_none() =>
            {
                side.rx = Rx::Lost;
                self.conn.lose_framing(d);
            }
            _ => {}
        }
        self.consume(d, data, segment.timestamp_ns, out);
        if self.sides[index(d)].rx != Rx::Lost {
            self.skip(d, segment.missing(), segment.timestamp_ns, out);
        }
        self.conn.error.take().map_or(Ok(()), Err)
    }

    fn close(&mut self, timestamp_ns: u64, out: &mut Vec<Exchange>) {
        let streams = std::mem::take(&mut self.conn.streams);
        for stream in streams.into_values() {
            out.push(self.conn.exchange(stream, timestamp_ns, Some("connection closed before the stream ended")));
        }
    }

    fn counts(&self) -> ParserCounts {
        self.conn.counts
    }
}
