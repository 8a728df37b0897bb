//! HTTP/1.x: requests and responses over one TCP connection, paired FIFO
//! (keep-alive and pipelining), with `Content-Length`, chunked and
//! close-delimited bodies. Header grammar is `httparse`'s; bodies are counted,
//! never kept, and only the method, path, `Host` and `traceparent` of a
//! request survive parsing.

use std::collections::VecDeque;

use crate::buffer::{DEFAULT_LIMIT, StreamBuffer};
use crate::{
    Confidence, ConnContext, Detail, Exchange, ExchangeKind, HttpDetail, ParseError, Parser, ParserCounts, Privacy,
    ProtocolId, ProtocolSpec, Role, Segment, Transport,
};

pub static SPEC: ProtocolSpec = ProtocolSpec {
    id: ProtocolId::Http1,
    name: "http1",
    transports: &[Transport::Tcp],
    hint_ports: &[80, 8080, 8000],
    check,
    new_parser,
};

/// Methods that make a payload an HTTP/1 request for inference and resynchronisation.
const METHODS: &[&[u8]] = &[b"GET", b"POST", b"PUT", b"DELETE", b"HEAD", b"OPTIONS", b"PATCH", b"CONNECT", b"TRACE"];
/// Requests waiting for their response; more are dropped and counted.
pub const MAX_PENDING: usize = 64;
/// Header lines httparse is given room for.
const MAX_HEADERS: usize = 128;
/// Longest target kept (bytes); longer ones are cut at a character boundary.
const MAX_TARGET: usize = 2048;
/// Longest `Host`, `traceparent` or `tracestate` value kept (W3C bounds tracestate at 512).
const MAX_VALUE: usize = 512;
/// Longest chunk-size line (with extensions) accepted.
const MAX_CHUNK_LINE: usize = 1024;

fn starts_request(data: &[u8]) -> bool {
    METHODS.iter().any(|m| data.starts_with(m) && data.get(m.len()) == Some(&b' '))
}

fn starts_response(data: &[u8]) -> bool {
    data.starts_with(b"HTTP/1.0 ") || data.starts_with(b"HTTP/1.1 ")
}

fn check(segment: &Segment<'_>, _ctx: &ConnContext) -> Confidence {
    let data = segment.data;
    // "PRI" is no method of ours, so the HTTP/2 preface never matches; say it outright anyway.
    if data.starts_with(b"PRI * HTTP/2.0") {
        return Confidence::No;
    }
    if starts_request(data) || starts_response(data) { Confidence::Yes } else { Confidence::No }
}

fn new_parser(ctx: &ConnContext, privacy: Privacy) -> Box<dyn Parser> {
    Box::new(Http1Parser::new(ctx.role, privacy))
}

fn malformed(reason: impl Into<String>) -> ParseError {
    ParseError::Malformed { protocol: ProtocolId::Http1, reason: reason.into() }
}

/// Cuts `s` to at most `max` bytes at a character boundary.
fn bounded(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

fn add_reason(partial: &mut Option<String>, reason: &str) {
    match partial {
        Some(p) if p.split("; ").any(|r| r == reason) => {}
        Some(p) => {
            p.push_str("; ");
            p.push_str(reason);
        }
        None => *partial = Some(reason.to_owned()),
    }
}

/// How a body ends.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Framing {
    Length(u64),
    Chunked(Chunk),
    /// A response without length: it ends when the connection closes.
    UntilClose,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Chunk {
    /// Reading a chunk-size line (kept: it is short and bounded).
    Size(Vec<u8>),
    /// Chunk data still to come.
    Data(u64),
    /// The CRLF after chunk data.
    DataEnd,
    /// Trailer section after the last chunk: bytes on the current line.
    Trailer(usize),
}

/// What a body step ended with.
enum BodyStep {
    /// Consumed this many bytes; the body goes on.
    More(usize),
    /// Consumed this many bytes; the body is complete.
    Done(usize),
}

fn parse_chunk_size(line: &[u8]) -> Option<u64> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let size = line.split(|&b| b == b';').next().unwrap_or_default();
    let size = std::str::from_utf8(size).ok()?.trim_matches([' ', '\t']);
    if size.is_empty() || size.len() > 16 {
        return None;
    }
    u64::from_str_radix(size, 16).ok()
}

impl Framing {
    /// Consumes body bytes from `data`.
    fn step(&mut self, data: &[u8]) -> Result<BodyStep, &'static str> {
        match self {
            Self::Length(remaining) => {
                let take = (*remaining).min(data.len() as u64);
                *remaining -= take;
                // `take` is at most data.len(), so it fits a usize.
                let take = take as usize;
                Ok(if *remaining == 0 { BodyStep::Done(take) } else { BodyStep::More(take) })
            }
            Self::UntilClose => Ok(BodyStep::More(data.len())),
            Self::Chunked(chunk) => {
                let mut i = 0;
                while i < data.len() {
                    match chunk {
                        Chunk::Size(line) => match data[i..].iter().position(|&b| b == b'\n') {
                            Some(j) => {
                                if line.len() + j > MAX_CHUNK_LINE {
                                    return Err("chunk size line too long");
                                }
                                line.extend_from_slice(&data[i..i + j]);
                                i += j + 1;
                                *chunk = match parse_chunk_size(line) {
                                    Some(0) => Chunk::Trailer(0),
                                    Some(size) => Chunk::Data(size),
                                    None => return Err("invalid chunk size"),
                                };
                            }
                            None => {
                                if line.len() + data.len() - i > MAX_CHUNK_LINE {
                                    return Err("chunk size line too long");
                                }
                                line.extend_from_slice(&data[i..]);
                                i = data.len();
                            }
                        },
                        Chunk::Data(remaining) => {
                            let take = (*remaining).min((data.len() - i) as u64);
                            *remaining -= take;
                            i += take as usize;
                            if *remaining == 0 {
                                *chunk = Chunk::DataEnd;
                            }
                        }
                        Chunk::DataEnd => {
                            match data[i] {
                                b'\r' => {}
                                b'\n' => *chunk = Chunk::Size(Vec::new()),
                                _ => return Err("chunk data longer than its size"),
                            }
                            i += 1;
                        }
                        Chunk::Trailer(line_len) => {
                            let b = data[i];
                            i += 1;
                            match b {
                                b'\n' if *line_len == 0 => return Ok(BodyStep::Done(i)),
                                b'\n' => *line_len = 0,
                                b'\r' => {}
                                _ => *line_len = line_len.saturating_add(1),
                            }
                        }
                    }
                }
                Ok(BodyStep::More(i))
            }
        }
    }

    /// Accounts for `n` body bytes that went by uncaptured. Returns how many
    /// of them the body took and whether it is complete, or `None` when the
    /// framing can no longer be followed (chunk sizes not seen).
    fn skip(&mut self, n: u64) -> Option<(u64, bool)> {
        match self {
            Self::Length(remaining) => {
                let take = (*remaining).min(n);
                *remaining -= take;
                Some((take, *remaining == 0))
            }
            Self::UntilClose => Some((n, false)),
            Self::Chunked(chunk) => {
                let mut left = n;
                loop {
                    match chunk {
                        _ if left == 0 => return Some((n, false)),
                        Chunk::Data(remaining) => {
                            let take = (*remaining).min(left);
                            *remaining -= take;
                            left -= take;
                            if *remaining == 0 {
                                *chunk = Chunk::DataEnd;
                            }
                        }
                        // Writers put the CRLF in the same write as the data;
                        // assume it, and expect the next size line.
                        Chunk::DataEnd => {
                            left = left.saturating_sub(2);
                            *chunk = Chunk::Size(Vec::new());
                        }
                        Chunk::Size(_) | Chunk::Trailer(_) => return None,
                    }
                }
            }
        }
    }
}

/// A request waiting for its response.
#[derive(Debug, Clone)]
struct Pending {
    seq: u64,
    method: String,
    target: String,
    version: &'static str,
    host: Option<String>,
    traceparent: Option<String>,
    tracestate: Option<String>,
    start_ns: u64,
    bytes: u64,
    partial: Option<String>,
    is_head: bool,
    is_connect: bool,
}

/// The response being read.
#[derive(Debug)]
struct Response {
    /// `None` for a response to a request that was not seen (joined
    /// mid-way, or dropped for the bound): read for framing, never emitted.
    request: Option<Pending>,
    status: u16,
    bytes: u64,
    partial: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    /// Not in step with the stream: waits for a segment that starts a message.
    Seeking,
    /// Reading a start line and headers (a prefix may be buffered).
    Head,
    Body(Framing),
    /// Lost the framing inside a message: its bytes are counted until a
    /// segment starts a new message.
    Lost,
    /// After `101 Switching Protocols` or a successful `CONNECT`: not HTTP/1 any more.
    Tunnel,
}

#[derive(Debug)]
struct Side {
    state: State,
    buf: StreamBuffer,
    /// Timestamp of the last segment of this direction.
    last_ns: u64,
}

impl Side {
    fn new(state: State) -> Self {
        Self { state, buf: StreamBuffer::new(DEFAULT_LIMIT), last_ns: 0 }
    }
}

/// Request head fields kept after parsing.
struct RequestHead {
    method: String,
    target: String,
    version: &'static str,
    host: Option<String>,
    traceparent: Option<String>,
    tracestate: Option<String>,
    framing: Option<Framing>,
}

struct ResponseHead {
    status: u16,
    /// Transfer-Encoding and Content-Length, read before the request is known.
    chunked: bool,
    other_encoding: bool,
    length: Option<u64>,
}

fn version_name(minor: Option<u8>) -> &'static str {
    if minor == Some(0) { "1.0" } else { "1.1" }
}

/// `Content-Length` value(s): repeated equal values are one value (RFC 9110 8.6).
fn content_length(headers: &[httparse::Header<'_>]) -> Result<Option<u64>, &'static str> {
    let mut length = None;
    for h in headers.iter().filter(|h| h.name.eq_ignore_ascii_case("content-length")) {
        for value in h.value.split(|&b| b == b',') {
            let value = std::str::from_utf8(value).map_err(|_| "invalid Content-Length")?.trim();
            if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
                return Err("invalid Content-Length");
            }
            let n: u64 = value.parse().map_err(|_| "invalid Content-Length")?;
            if length.is_some_and(|l| l != n) {
                return Err("conflicting Content-Length");
            }
            length = Some(n);
        }
    }
    Ok(length)
}

/// (`chunked` is the final transfer coding, some other coding is present).
fn transfer_encoding(headers: &[httparse::Header<'_>]) -> (bool, bool) {
    let mut last = None;
    for h in headers.iter().filter(|h| h.name.eq_ignore_ascii_case("transfer-encoding")) {
        for coding in h.value.split(|&b| b == b',') {
            let coding = coding.trim_ascii();
            if !coding.is_empty() {
                last = Some(coding.eq_ignore_ascii_case(b"chunked"));
            }
        }
    }
    match last {
        Some(true) => (true, false),
        Some(false) => (false, true),
        None => (false, false),
    }
}

fn header_value(headers: &[httparse::Header<'_>], name: &str) -> Option<String> {
    headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case(name))
        .and_then(|h| std::str::from_utf8(h.value).ok())
        .map(|v| bounded(v.trim(), MAX_VALUE))
}

fn request_head(req: &httparse::Request<'_, '_>, privacy: Privacy) -> Result<RequestHead, &'static str> {
    let method = req.method.unwrap_or_default();
    let path = req.path.unwrap_or_default();
    let target = privacy.target(path);
    let (chunked, other) = transfer_encoding(req.headers);
    let framing = if chunked {
        Some(Framing::Chunked(Chunk::Size(Vec::new())))
    } else if other {
        // A request body must be delimited; nothing else can be trusted.
        return Err("request Transfer-Encoding without chunked");
    } else {
        match content_length(req.headers)? {
            Some(0) | None => None,
            Some(n) => Some(Framing::Length(n)),
        }
    };
    Ok(RequestHead {
        method: bounded(method, MAX_VALUE),
        target: bounded(target, MAX_TARGET),
        version: version_name(req.version),
        host: header_value(req.headers, "host"),
        traceparent: header_value(req.headers, "traceparent"),
        tracestate: header_value(req.headers, "tracestate"),
        framing,
    })
}

fn parser_config() -> httparse::ParserConfig {
    let mut config = httparse::ParserConfig::default();
    config
        .allow_obsolete_multiline_headers_in_responses(true)
        .allow_spaces_after_header_name_in_responses(true)
        .ignore_invalid_headers_in_responses(true)
        .ignore_invalid_headers_in_requests(true);
    config
}

/// Parses a request head: `Ok(None)` when more bytes are needed.
fn parse_request(bytes: &[u8], privacy: Privacy) -> Result<Option<(usize, RequestHead)>, String> {
    let mut headers = vec![httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match parser_config().parse_request(&mut req, bytes) {
        Ok(httparse::Status::Complete(n)) => Ok(Some((n, request_head(&req, privacy)?))),
        Ok(httparse::Status::Partial) => Ok(None),
        Err(e) => Err(format!("request head: {e}")),
    }
}

/// Parses what was captured of a request head cut short by the capture:
/// the complete lines, with the header block closed after them.
fn parse_truncated_request(bytes: &[u8], privacy: Privacy) -> Option<RequestHead> {
    let end = bytes.iter().rposition(|&b| b == b'\n')?;
    let mut closed = bytes[..=end].to_vec();
    closed.extend_from_slice(b"\r\n");
    let mut headers = vec![httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match parser_config().parse_request(&mut req, &closed) {
        Ok(httparse::Status::Complete(_)) => {
            let mut head = request_head(&req, privacy).ok()?;
            head.framing = None;
            Some(head)
        }
        _ => None,
    }
}

/// The status of a response head cut short by the capture.
fn parse_truncated_response(bytes: &[u8]) -> Option<u16> {
    let end = bytes.iter().rposition(|&b| b == b'\n')?;
    let mut closed = bytes[..=end].to_vec();
    closed.extend_from_slice(b"\r\n");
    match parse_response(&closed) {
        Ok(Some((_, head))) => Some(head.status),
        _ => None,
    }
}

fn parse_response(bytes: &[u8]) -> Result<Option<(usize, ResponseHead)>, String> {
    let mut headers = vec![httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    match parser_config().parse_response(&mut resp, bytes) {
        Ok(httparse::Status::Complete(n)) => {
            let (chunked, other_encoding) = transfer_encoding(resp.headers);
            let length = if chunked || other_encoding { None } else { content_length(resp.headers)? };
            let head = ResponseHead { status: resp.code.unwrap_or_default(), chunked, other_encoding, length };
            Ok(Some((n, head)))
        }
        Ok(httparse::Status::Partial) => Ok(None),
        Err(e) => Err(format!("response head: {e}")),
    }
}

/// One HTTP/1.x connection.
#[derive(Debug)]
pub struct Http1Parser {
    role: Option<Role>,
    privacy: Privacy,
    requests: Side,
    responses: Side,
    /// Requests without a response yet, oldest first.
    queue: VecDeque<Pending>,
    /// Sequence numbers pair responses with requests, including dropped ones.
    next_request: u64,
    next_response: u64,
    /// The request whose body is being read.
    current_request: Option<u64>,
    current_response: Option<Response>,
    /// Bytes of interim (1xx) responses, counted into the final one.
    interim_bytes: u64,
    counts: ParserCounts,
}

enum Kind {
    Request,
    Response,
}

impl Http1Parser {
    pub fn new(role: Option<Role>, privacy: Privacy) -> Self {
        // With the role known from connect/accept the stream is read from its
        // first byte; otherwise it may have been joined mid-way.
        let start = if role.is_some() { State::Head } else { State::Seeking };
        Self {
            role,
            privacy,
            requests: Side::new(start.clone()),
            responses: Side::new(start),
            queue: VecDeque::new(),
            next_request: 0,
            next_response: 0,
            current_request: None,
            current_response: None,
            interim_bytes: 0,
            counts: ParserCounts::default(),
        }
    }

    fn side(&mut self, kind: &Kind) -> &mut Side {
        match kind {
            Kind::Request => &mut self.requests,
            Kind::Response => &mut self.responses,
        }
    }

    fn add_request_bytes(&mut self, n: u64) {
        let Some(seq) = self.current_request else { return };
        if let Some(p) = self.queue.iter_mut().rev().find(|p| p.seq == seq) {
            p.bytes = p.bytes.saturating_add(n);
        } else if let Some(p) = self.current_response.as_mut().and_then(|r| r.request.as_mut()).filter(|p| p.seq == seq)
        {
            p.bytes = p.bytes.saturating_add(n);
        }
    }

    fn add_bytes(&mut self, kind: &Kind, n: u64) {
        match kind {
            Kind::Request => self.add_request_bytes(n),
            Kind::Response => {
                if let Some(r) = self.current_response.as_mut() {
                    r.bytes = r.bytes.saturating_add(n);
                }
            }
        }
    }

    fn exchange(&self, p: Pending, status: Option<u32>, end_ns: u64, response_bytes: u64) -> Exchange {
        Exchange {
            kind: ExchangeKind::Http1,
            role: self.role.unwrap_or(Role::Client),
            method: Some(p.method),
            target: p.target,
            status,
            start_ns: p.start_ns,
            end_ns,
            request_bytes: p.bytes,
            response_bytes,
            peer: None,
            partial: p.partial,
            detail: Detail::Http(HttpDetail {
                version: p.version.to_owned(),
                host: p.host,
                traceparent: p.traceparent,
                tracestate: p.tracestate,
                stream_id: None,
            }),
        }
    }

    /// The current response is complete at `end_ns`.
    fn finish_response(&mut self, end_ns: u64, reason: Option<&str>, out: &mut Vec<Exchange>) {
        let Some(resp) = self.current_response.take() else { return };
        let Some(mut request) = resp.request else { return };
        if let Some(p) = &resp.partial {
            add_reason(&mut request.partial, p);
        }
        if let Some(r) = reason {
            add_reason(&mut request.partial, r);
        }
        if self.current_request == Some(request.seq) {
            self.current_request = None;
        }
        let bytes = resp.bytes;
        out.push(self.exchange(request, Some(u32::from(resp.status)), end_ns, bytes));
    }

    fn on_request_head(&mut self, head: RequestHead, header_bytes: u64, start_ns: u64, partial: Option<&str>) {
        let seq = self.next_request;
        self.next_request += 1;
        self.current_request = Some(seq);
        if self.queue.len() >= MAX_PENDING {
            self.counts.unpaired_dropped += 1;
            return;
        }
        let is_head = head.method.eq_ignore_ascii_case("HEAD");
        let is_connect = head.method.eq_ignore_ascii_case("CONNECT");
        self.queue.push_back(Pending {
            seq,
            method: head.method,
            target: head.target,
            version: head.version,
            host: head.host,
            traceparent: head.traceparent,
            tracestate: head.tracestate,
            start_ns,
            bytes: header_bytes,
            partial: partial.map(str::to_owned),
            is_head,
            is_connect,
        });
    }

    /// A final response began: pairs it with its request (FIFO) and makes it
    /// the current response. Returns whether the request was HEAD, CONNECT.
    fn pair_response(&mut self, status: u16, header_bytes: u64, partial: Option<&str>) -> (bool, bool) {
        let request = if self.next_response < self.next_request {
            let seq = self.next_response;
            self.next_response += 1;
            while self.queue.front().is_some_and(|p| p.seq < seq) {
                self.queue.pop_front();
                self.counts.unpaired_dropped += 1;
            }
            if self.queue.front().is_some_and(|p| p.seq == seq) { self.queue.pop_front() } else { None }
        } else {
            None
        };
        let bytes = header_bytes.saturating_add(std::mem::take(&mut self.interim_bytes));
        let flags = request.as_ref().map_or((false, false), |p| (p.is_head, p.is_connect));
        self.current_response = Some(Response { request, status, bytes, partial: partial.map(str::to_owned) });
        flags
    }

    /// A response head was read: returns the state the response side goes to.
    fn on_response_head(&mut self, head: ResponseHead, header_bytes: u64, ts: u64, out: &mut Vec<Exchange>) -> State {
        if (100..200).contains(&head.status) && head.status != 101 {
            self.interim_bytes = self.interim_bytes.saturating_add(header_bytes);
            return State::Head;
        }
        let (is_head, is_connect) = self.pair_response(head.status, header_bytes, None);
        let status = head.status;
        let tunnel = status == 101 || (is_connect && (200..300).contains(&status));
        let framing = if tunnel || is_head || status < 200 || status == 204 || status == 304 {
            None
        } else if head.chunked {
            Some(Framing::Chunked(Chunk::Size(Vec::new())))
        } else if head.other_encoding {
            Some(Framing::UntilClose)
        } else {
            match head.length {
                Some(0) => None,
                Some(n) => Some(Framing::Length(n)),
                None => Some(Framing::UntilClose),
            }
        };
        match framing {
            Some(f) => State::Body(f),
            None => {
                self.finish_response(ts, None, out);
                if tunnel {
                    self.requests.state = State::Tunnel;
                    State::Tunnel
                } else {
                    State::Head
                }
            }
        }
    }

    /// Parses a head from `rest` (after any buffered prefix). Returns the
    /// bytes of `rest` it used: all of them, buffered, when the head is not
    /// complete yet.
    fn parse_head(&mut self, kind: &Kind, rest: &[u8], ts: u64, out: &mut Vec<Exchange>) -> Result<usize, ParseError> {
        let privacy = self.privacy;
        let side = self.side(kind);
        let buffered = side.buf.len();
        let (bytes, start_ns): (&[u8], u64) = if buffered == 0 {
            (rest, ts)
        } else {
            // Only what a head can still use goes into the buffer.
            let dropped = side.buf.push(rest, 0, ts);
            if dropped > 0 {
                side.buf.clear();
                side.buf.take_gap();
                side.state = State::Seeking;
                self.counts.overflow_bytes = self.counts.overflow_bytes.saturating_add((buffered + rest.len()) as u64);
                return Err(ParseError::TooLarge { protocol: ProtocolId::Http1, limit: DEFAULT_LIMIT });
            }
            (side.buf.bytes(), side.buf.first_ns())
        };
        let parsed = match kind {
            Kind::Request => parse_request(bytes, privacy).map(|r| r.map(|(n, h)| (n, Ok(h)))),
            Kind::Response => parse_response(bytes).map(|r| r.map(|(n, h)| (n, Err(h)))),
        };
        let side = self.side(kind);
        match parsed {
            Err(reason) => {
                side.buf.clear();
                Err(malformed(reason))
            }
            Ok(None) => {
                if buffered == 0 {
                    let dropped = side.buf.push(rest, 0, ts);
                    if dropped > 0 {
                        side.buf.clear();
                        self.counts.overflow_bytes = self.counts.overflow_bytes.saturating_add(rest.len() as u64);
                        return Err(ParseError::TooLarge { protocol: ProtocolId::Http1, limit: DEFAULT_LIMIT });
                    }
                }
                Ok(rest.len())
            }
            Ok(Some((n, head))) => {
                side.buf.clear();
                let used = n.saturating_sub(buffered);
                let state = match head {
                    Ok(head) => {
                        let framing = head.framing.clone();
                        self.on_request_head(head, n as u64, start_ns, None);
                        match framing {
                            Some(f) => State::Body(f),
                            None => {
                                self.current_request = None;
                                State::Head
                            }
                        }
                    }
                    Err(head) => self.on_response_head(head, n as u64, ts, out),
                };
                self.side(kind).state = state;
                Ok(used)
            }
        }
    }

    /// The body of the current message ended.
    fn body_done(&mut self, kind: &Kind, ts: u64, out: &mut Vec<Exchange>) {
        match kind {
            Kind::Request => self.current_request = None,
            Kind::Response => self.finish_response(ts, None, out),
        }
        self.side(kind).state = State::Head;
    }

    /// Captured bytes of one segment, in a state that reads them.
    fn on_data(&mut self, kind: &Kind, data: &[u8], ts: u64, out: &mut Vec<Exchange>) -> Result<(), ParseError> {
        let mut rest = data;
        while !rest.is_empty() {
            let state = self.side(kind).state.clone();
            match state {
                State::Head => {
                    let used = self.parse_head(kind, rest, ts, out)?;
                    rest = &rest[used.min(rest.len())..];
                }
                State::Body(mut framing) => {
                    let step = framing.step(rest);
                    match step {
                        Err(reason) => return Err(malformed(reason)),
                        Ok(BodyStep::More(n)) => {
                            self.add_bytes(kind, n as u64);
                            self.side(kind).state = State::Body(framing);
                            rest = &rest[n.min(rest.len())..];
                        }
                        Ok(BodyStep::Done(n)) => {
                            self.add_bytes(kind, n as u64);
                            self.body_done(kind, ts, out);
                            rest = &rest[n.min(rest.len())..];
                        }
                    }
                }
                State::Seeking | State::Lost | State::Tunnel => break,
            }
        }
        Ok(())
    }

    /// The uncaptured tail of a segment.
    fn on_missing(&mut self, kind: &Kind, missing: u64, ts: u64, out: &mut Vec<Exchange>) {
        let state = self.side(kind).state.clone();
        match state {
            State::Head => {
                let privacy = self.privacy;
                let side = self.side(kind);
                if side.buf.is_empty() {
                    // A message began where nothing was captured.
                    side.state = State::Seeking;
                    return;
                }
                let bytes = (side.buf.len() as u64).saturating_add(missing);
                let start_ns = side.buf.first_ns();
                let head = match kind {
                    Kind::Request => parse_truncated_request(side.buf.bytes(), privacy).map(Ok),
                    Kind::Response => parse_truncated_response(side.buf.bytes()).map(Err),
                };
                side.buf.clear();
                side.state = State::Lost;
                match head {
                    Some(Ok(head)) => self.on_request_head(head, bytes, start_ns, Some("request headers not captured")),
                    Some(Err(status)) if status >= 200 || status == 101 => {
                        self.pair_response(status, bytes, Some("response headers not captured"));
                    }
                    Some(Err(_)) => self.interim_bytes = self.interim_bytes.saturating_add(bytes),
                    None => self.side(kind).state = State::Seeking,
                }
            }
            State::Body(mut framing) => match framing.skip(missing) {
                Some((taken, done)) => {
                    self.add_bytes(kind, taken);
                    if done {
                        self.body_done(kind, ts, out);
                        if taken < missing {
                            // The next message began uncaptured.
                            self.side(kind).state = State::Seeking;
                        }
                    } else {
                        self.side(kind).state = State::Body(framing);
                    }
                }
                None => {
                    self.add_bytes(kind, missing);
                    if let Kind::Response = kind
                        && let Some(r) = self.current_response.as_mut()
                    {
                        add_reason(&mut r.partial, "chunked body not captured");
                    }
                    self.side(kind).state = State::Lost;
                }
            },
            State::Lost => self.add_bytes(kind, missing),
            State::Seeking | State::Tunnel => {}
        }
    }

    fn feed_side(&mut self, kind: Kind, segment: &Segment<'_>, out: &mut Vec<Exchange>) -> Result<(), ParseError> {
        let data = segment.data;
        let ts = segment.timestamp_ns;
        let starts = match kind {
            Kind::Request => starts_request(data),
            Kind::Response => starts_response(data),
        };
        let state = self.side(&kind).state.clone();
        match state {
            State::Tunnel => return Ok(()),
            State::Seeking if !starts => return Ok(()),
            State::Seeking => self.side(&kind).state = State::Head,
            State::Lost if starts => {
                if let Kind::Response = kind {
                    let last = self.responses.last_ns;
                    self.finish_response(last, None, out);
                } else {
                    self.current_request = None;
                }
                self.side(&kind).state = State::Head;
            }
            State::Lost => {
                self.add_bytes(&kind, segment.total_len.max(data.len() as u64));
                self.side(&kind).last_ns = ts;
                // The last write of a chunked body is usually small and whole.
                if let Kind::Response = kind
                    && segment.missing() == 0
                    && data.ends_with(b"0\r\n\r\n")
                {
                    self.finish_response(ts, None, out);
                    self.responses.state = State::Head;
                }
                return Ok(());
            }
            State::Head | State::Body(_) => {}
        }
        self.side(&kind).last_ns = ts;
        if let Err(e) = self.on_data(&kind, data, ts, out) {
            self.counts.malformed += 1;
            let side = self.side(&kind);
            side.buf.clear();
            side.state = State::Seeking;
            match kind {
                Kind::Request => self.current_request = None,
                Kind::Response => self.finish_response(ts, Some("malformed response"), out),
            }
            return Err(e);
        }
        if segment.missing() > 0 {
            self.on_missing(&kind, segment.missing(), ts, out);
        }
        Ok(())
    }
}

impl Parser for Http1Parser {
    fn feed(&mut self, segment: &Segment<'_>, out: &mut Vec<Exchange>) -> Result<(), ParseError> {
        let role = match self.role {
            Some(role) => role,
            None => {
                let role = if starts_request(segment.data) {
                    Role::from_request_direction(segment.direction)
                } else if starts_response(segment.data) {
                    Role::from_request_direction(segment.direction.reverse())
                } else {
                    // Joined mid-way: wait for the start of a message.
                    return Ok(());
                };
                self.role = Some(role);
                role
            }
        };
        let kind = if segment.direction == role.request_direction() { Kind::Request } else { Kind::Response };
        self.feed_side(kind, segment, out)
    }

    fn close(&mut self, timestamp_ns: u64, out: &mut Vec<Exchange>) {
        if let Some(resp) = &self.current_response {
            let complete = self.responses.state == State::Body(Framing::UntilClose) && resp.partial.is_none();
            let reason = if complete { None } else { Some("response incomplete at close") };
            let last = self.responses.last_ns;
            self.finish_response(last, reason, out);
        }
        let interim = std::mem::take(&mut self.interim_bytes);
        for (i, p) in std::mem::take(&mut self.queue).into_iter().enumerate() {
            let bytes = if i == 0 { interim } else { 0 };
            out.push(self.exchange(p, None, timestamp_ns, bytes));
        }
        self.current_request = None;
        self.requests = Side::new(State::Seeking);
        self.responses = Side::new(State::Seeking);
    }

    fn counts(&self) -> ParserCounts {
        self.counts
    }
}

impl Default for Http1Parser {
    fn default() -> Self {
        Self::new(None, Privacy::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Direction::{Recv, Send};
    use crate::{Direction, infer};

    const CURL_GET: &[u8] =
        b"GET /index.html HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUser-Agent: curl/7.88.1\r\nAccept: */*\r\n\r\n";

    fn nginx_head(status: &str, length: usize) -> Vec<u8> {
        format!(
            "HTTP/1.1 {status}\r\nServer: nginx/1.22.1\r\nDate: Mon, 04 Mar 2024 10:00:00 GMT\r\n\
             Content-Type: text/html\r\nContent-Length: {length}\r\n\
             Last-Modified: Tue, 13 Jun 2023 15:08:10 GMT\r\nConnection: keep-alive\r\n\
             ETag: \"64888a1a-267\"\r\nAccept-Ranges: bytes\r\n\r\n"
        )
        .into_bytes()
    }

    fn nginx_response(status: &str, body: &[u8]) -> Vec<u8> {
        let mut r = nginx_head(status, body.len());
        r.extend_from_slice(body);
        r
    }

    fn curl_get(path: &str) -> Vec<u8> {
        format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUser-Agent: curl/7.88.1\r\nAccept: */*\r\n\r\n")
            .into_bytes()
    }

    /// (direction, timestamp, captured bytes, bytes the syscall moved)
    type Seg = (Direction, u64, Vec<u8>, u64);

    fn whole(direction: Direction, ts: u64, data: &[u8]) -> Seg {
        (direction, ts, data.to_vec(), data.len() as u64)
    }

    fn ctx(role: Option<Role>) -> ConnContext {
        ConnContext { transport: Transport::Tcp, local_port: 40000, peer_port: 8080, role }
    }

    fn run_with(parser: &mut Http1Parser, segments: &[Seg], close_ns: Option<u64>) -> (Vec<Exchange>, usize) {
        let mut out = Vec::new();
        let mut errors = 0;
        for (direction, ts, data, total) in segments {
            let segment = Segment { direction: *direction, timestamp_ns: *ts, data, total_len: *total, peer: None };
            if parser.feed(&segment, &mut out).is_err() {
                errors += 1;
            }
        }
        if let Some(ts) = close_ns {
            parser.close(ts, &mut out);
        }
        (out, errors)
    }

    fn run(role: Option<Role>, privacy: Privacy, segments: &[Seg], close_ns: Option<u64>) -> Vec<Exchange> {
        let mut parser = Http1Parser::new(role, privacy);
        let (out, errors) = run_with(&mut parser, segments, close_ns);
        assert_eq!(errors, 0);
        out
    }

    #[allow(clippy::too_many_arguments)]
    fn http(
        role: Role,
        method: &str,
        target: &str,
        status: Option<u32>,
        (start_ns, end_ns): (u64, u64),
        (request_bytes, response_bytes): (usize, usize),
        version: &str,
        host: Option<&str>,
        partial: Option<&str>,
    ) -> Exchange {
        Exchange {
            kind: ExchangeKind::Http1,
            role,
            method: Some(method.to_owned()),
            target: target.to_owned(),
            status,
            start_ns,
            end_ns,
            request_bytes: request_bytes as u64,
            response_bytes: response_bytes as u64,
            peer: None,
            partial: partial.map(str::to_owned),
            detail: Detail::Http(HttpDetail {
                version: version.to_owned(),
                host: host.map(str::to_owned),
                traceparent: None,
                tracestate: None,
                stream_id: None,
            }),
        }
    }

    const HOST: Option<&str> = Some("127.0.0.1:8080");

    fn client(target: &str, status: u32, ts: (u64, u64), bytes: (usize, usize)) -> Exchange {
        http(Role::Client, "GET", target, Some(status), ts, bytes, "1.1", HOST, None)
    }

    #[test]
    fn check_recognises_requests_and_responses_but_not_http2() {
        let probe = |data: &[u8]| {
            let segment = Segment { direction: Send, timestamp_ns: 0, data, total_len: data.len() as u64, peer: None };
            check(&segment, &ctx(None))
        };
        assert_eq!(probe(CURL_GET), Confidence::Yes);
        assert_eq!(probe(b"OPTIONS * HTTP/1.1\r\n"), Confidence::Yes);
        assert_eq!(probe(b"HTTP/1.1 200 OK\r\n"), Confidence::Yes);
        assert_eq!(probe(b"HTTP/1.0 404 Not Found\r\n"), Confidence::Yes);
        assert_eq!(probe(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), Confidence::No);
        assert_eq!(probe(b"GETX / HTTP/1.1\r\n"), Confidence::No);
        assert_eq!(probe(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"), Confidence::No);
        assert_eq!(probe(b""), Confidence::No);
        let segment = Segment { direction: Send, timestamp_ns: 0, data: CURL_GET, total_len: 80, peer: None };
        assert_eq!(infer(&segment, &ctx(None)).map(|s| s.id), Some(ProtocolId::Http1));
    }

    #[test]
    fn keep_alive_three_exchanges_as_client() {
        let body = vec![b'x'; 615];
        let ok = nginx_response("200 OK", &body);
        let not_found = nginx_response("404 Not Found", b"<html>404</html>");
        let segments = [
            whole(Send, 100, CURL_GET),
            whole(Recv, 200, &ok),
            whole(Send, 300, &curl_get("/a")),
            whole(Recv, 400, &not_found),
            whole(Send, 500, &curl_get("/b")),
            whole(Recv, 600, &ok),
        ];
        let out = run(None, Privacy::default(), &segments, Some(700));
        assert_eq!(
            out,
            vec![
                client("/index.html", 200, (100, 200), (CURL_GET.len(), ok.len())),
                client("/a", 404, (300, 400), (curl_get("/a").len(), not_found.len())),
                client("/b", 200, (500, 600), (curl_get("/b").len(), ok.len())),
            ]
        );
    }

    #[test]
    fn server_role_from_context_and_request_direction() {
        let ok = nginx_response("200 OK", b"hello\n");
        let segments = [whole(Recv, 10, CURL_GET), whole(Send, 20, &ok)];
        let expected = vec![http(
            Role::Server,
            "GET",
            "/index.html",
            Some(200),
            (10, 20),
            (CURL_GET.len(), ok.len()),
            "1.1",
            HOST,
            None,
        )];
        assert_eq!(run(Some(Role::Server), Privacy::default(), &segments, None), expected);
        assert_eq!(run(None, Privacy::default(), &segments, None), expected);
    }

    #[test]
    fn pipelined_requests_pair_fifo() {
        let mut requests = curl_get("/one");
        requests.extend_from_slice(&curl_get("/two?x=1"));
        requests.extend_from_slice(&curl_get("/three"));
        let r1 = nginx_response("200 OK", b"one");
        let r2 = nginx_response("404 Not Found", b"two!");
        let r3 = nginx_response("500 Internal Server Error", b"three");
        let mut both = r1.clone();
        both.extend_from_slice(&r2);
        let segments = [whole(Send, 1, &requests), whole(Recv, 2, &both), whole(Recv, 3, &r3)];
        let out = run(None, Privacy::default(), &segments, None);
        assert_eq!(
            out,
            vec![
                client("/one", 200, (1, 2), (curl_get("/one").len(), r1.len())),
                client("/two", 404, (1, 2), (curl_get("/two?x=1").len(), r2.len())),
                client("/three", 500, (1, 3), (curl_get("/three").len(), r3.len())),
            ]
        );
    }

    fn chunked_response() -> Vec<Vec<u8>> {
        // Split inside the size line, inside chunk data, inside the CRLF and the trailers.
        vec![
            b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Mon, 04 Mar 2024 10:00:00 GMT\r\n\
              Content-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: keep-alive\r\n\r\n1"
                .to_vec(),
            b"4;ext=1\r\n0123456789abcdef".to_vec(),
            b"ghij\r".to_vec(),
            b"\n5\r\nhello\r\n0\r\nExpires: never\r".to_vec(),
            b"\n\r\n".to_vec(),
        ]
    }

    #[test]
    fn chunked_body_across_segments() {
        let parts = chunked_response();
        let total: usize = parts.iter().map(Vec::len).sum();
        let mut segments = vec![whole(Send, 1, CURL_GET)];
        for (i, part) in parts.iter().enumerate() {
            segments.push(whole(Recv, 10 + i as u64, part));
        }
        segments.push(whole(Send, 20, &curl_get("/next")));
        segments.push(whole(Recv, 21, &nginx_response("204 No Content", b"")));
        let out = run(None, Privacy::default(), &segments, None);
        let r204 = nginx_response("204 No Content", b"").len();
        assert_eq!(
            out,
            vec![
                client("/index.html", 200, (1, 14), (CURL_GET.len(), total)),
                client("/next", 204, (20, 21), (curl_get("/next").len(), r204)),
            ]
        );
    }

    #[test]
    fn chunked_request_body() {
        let head = b"POST /upload HTTP/1.1\r\nHost: api\r\nTransfer-Encoding: chunked\r\n\r\n";
        let body = b"4\r\nwiki\r\n0\r\n\r\n";
        let ok = nginx_response("201 Created", b"");
        let segments = [whole(Recv, 1, head), whole(Recv, 2, body), whole(Send, 3, &ok)];
        let out = run(Some(Role::Server), Privacy::default(), &segments, None);
        assert_eq!(
            out,
            vec![http(
                Role::Server,
                "POST",
                "/upload",
                Some(201),
                (1, 3),
                (head.len() + body.len(), ok.len()),
                "1.1",
                Some("api"),
                None,
            )]
        );
    }

    #[test]
    fn expect_100_continue_reports_the_final_status() {
        let head = b"PUT /file HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUser-Agent: curl/7.88.1\r\nAccept: */*\r\n\
                     Content-Length: 2000\r\nExpect: 100-continue\r\n\r\n";
        let interim = b"HTTP/1.1 100 Continue\r\n\r\n";
        let body = vec![b'b'; 2000];
        let created = nginx_response("201 Created", b"");
        let segments = [
            whole(Send, 1, head),
            whole(Recv, 2, interim),
            whole(Send, 3, &body[..1000]),
            whole(Send, 4, &body[1000..]),
            whole(Recv, 5, &created),
        ];
        let out = run(None, Privacy::default(), &segments, None);
        assert_eq!(
            out,
            vec![http(
                Role::Client,
                "PUT",
                "/file",
                Some(201),
                (1, 5),
                (head.len() + 2000, interim.len() + created.len()),
                "1.1",
                HOST,
                None,
            )]
        );
    }

    #[test]
    fn head_response_has_no_body_and_204_304_neither() {
        let head_req = b"HEAD / HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUser-Agent: curl/7.88.1\r\nAccept: */*\r\n\r\n";
        // Content-Length of the resource, but no body follows.
        let head_resp = nginx_head("200 OK", 615);
        let r304 = b"HTTP/1.1 304 Not Modified\r\nServer: nginx/1.22.1\r\nDate: Mon, 04 Mar 2024 10:00:00 GMT\r\n\
                     Last-Modified: Tue, 13 Jun 2023 15:08:10 GMT\r\nConnection: keep-alive\r\nETag: \"64888a1a-267\"\r\n\r\n";
        let r204 = b"HTTP/1.1 204 No Content\r\nServer: nginx/1.22.1\r\nContent-Length: 0\r\n\r\n";
        let segments = [
            whole(Send, 1, head_req),
            whole(Recv, 2, &head_resp),
            whole(Send, 3, &curl_get("/cached")),
            whole(Recv, 4, r304),
            whole(Send, 5, &curl_get("/empty")),
            whole(Recv, 6, r204),
        ];
        let out = run(None, Privacy::default(), &segments, None);
        assert_eq!(
            out,
            vec![
                http(
                    Role::Client,
                    "HEAD",
                    "/",
                    Some(200),
                    (1, 2),
                    (head_req.len(), head_resp.len()),
                    "1.1",
                    HOST,
                    None
                ),
                client("/cached", 304, (3, 4), (curl_get("/cached").len(), r304.len())),
                client("/empty", 204, (5, 6), (curl_get("/empty").len(), r204.len())),
            ]
        );
    }

    #[test]
    fn close_delimited_response_ends_at_close() {
        let req = b"GET /old HTTP/1.0\r\nHost: legacy\r\n\r\n";
        let head = b"HTTP/1.0 200 OK\r\nServer: SimpleHTTP/0.6 Python/3.11.2\r\nContent-type: text/plain\r\n\r\n";
        let segments =
            [whole(Send, 1, req), whole(Recv, 2, head), whole(Recv, 3, b"part one "), (Recv, 4, vec![], 5000)];
        let mut parser = Http1Parser::new(None, Privacy::default());
        let (out, errors) = run_with(&mut parser, &segments, None);
        assert_eq!((out.len(), errors), (0, 0));
        let mut out = Vec::new();
        parser.close(9, &mut out);
        assert_eq!(
            out,
            vec![http(
                Role::Client,
                "GET",
                "/old",
                Some(200),
                (1, 4),
                (req.len(), head.len() + 9 + 5000),
                "1.0",
                Some("legacy"),
                None
            )]
        );
        // A second close has nothing more to say.
        parser.close(10, &mut out);
        assert_eq!(out.len(), 1);
    }

    #[test]
    fn uncaptured_bodies_count() {
        // nginx's sendfile: the body shows up as a syscall with nothing captured.
        let head = nginx_head("200 OK", 1_000_000);
        // A 4 KiB capture of a large write: the rest of the body is uncaptured.
        let big = nginx_response("200 OK", &vec![b'z'; 20_000]);
        let segments = [
            whole(Send, 1, CURL_GET),
            whole(Recv, 2, &head),
            (Recv, 3, vec![], 600_000),
            (Recv, 4, vec![], 400_000),
            whole(Send, 5, &curl_get("/big")),
            (Recv, 6, big[..4096].to_vec(), big.len() as u64),
            whole(Send, 7, &curl_get("/after")),
            whole(Recv, 8, &nginx_response("200 OK", b"ok")),
        ];
        let out = run(None, Privacy::default(), &segments, None);
        assert_eq!(
            out,
            vec![
                client("/index.html", 200, (1, 4), (CURL_GET.len(), head.len() + 1_000_000)),
                client("/big", 200, (5, 6), (curl_get("/big").len(), big.len())),
                client("/after", 200, (7, 8), (curl_get("/after").len(), nginx_response("200 OK", b"ok").len())),
            ]
        );
    }

    #[test]
    fn uncaptured_chunked_body_is_followed_when_writes_hold_whole_chunks() {
        let head = b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nTransfer-Encoding: chunked\r\n\r\n";
        let mut chunk = b"2000\r\n".to_vec();
        chunk.extend_from_slice(&[b'c'; 0x2000]);
        chunk.extend_from_slice(b"\r\n");
        let segments = [
            whole(Send, 1, CURL_GET),
            whole(Recv, 2, head),
            (Recv, 3, chunk[..4096].to_vec(), chunk.len() as u64),
            (Recv, 4, chunk[..4096].to_vec(), chunk.len() as u64),
            whole(Recv, 5, b"0\r\n\r\n"),
        ];
        let out = run(None, Privacy::default(), &segments, None);
        assert_eq!(out, vec![client("/index.html", 200, (1, 5), (CURL_GET.len(), head.len() + 2 * chunk.len() + 5))]);
    }

    #[test]
    fn query_string_is_stripped_unless_kept() {
        let req = curl_get("/search?q=secret&page=2");
        let ok = nginx_response("200 OK", b"[]");
        let segments = [whole(Send, 1, &req), whole(Recv, 2, &ok)];
        assert_eq!(
            run(None, Privacy::default(), &segments, None),
            vec![client("/search", 200, (1, 2), (req.len(), ok.len()))]
        );
        assert_eq!(
            run(None, Privacy { keep_query: true }, &segments, None),
            vec![client("/search?q=secret&page=2", 200, (1, 2), (req.len(), ok.len()))]
        );
    }

    #[test]
    fn only_host_and_trace_context_are_kept() {
        let req = b"GET /api/me HTTP/1.1\r\nHost: api.internal\r\nAuthorization: Bearer s3cr3t-t0ken\r\n\
                    Cookie: session=c00k13\r\ntraceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\n\
                    tracestate: congo=t61rcWkgMzE\r\n\r\n";
        let ok = nginx_response("200 OK", b"{}");
        let mut parser = Http1Parser::new(None, Privacy::default());
        let (mut out, _) = run_with(&mut parser, &[whole(Send, 1, req)], None);
        for secret in ["s3cr3t", "c00k13"] {
            assert!(!format!("{parser:?}").contains(secret));
        }
        let (more, _) = run_with(&mut parser, &[whole(Recv, 2, &ok)], None);
        out.extend(more);
        let mut expected = http(
            Role::Client,
            "GET",
            "/api/me",
            Some(200),
            (1, 2),
            (req.len(), ok.len()),
            "1.1",
            Some("api.internal"),
            None,
        );
        if let Detail::Http(d) = &mut expected.detail {
            d.traceparent = Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_owned());
            d.tracestate = Some("congo=t61rcWkgMzE".to_owned());
        }
        assert_eq!(out, vec![expected]);
        assert!(!format!("{out:?}").contains("s3cr3t"));
        assert!(!format!("{out:?}").contains("c00k13"));
    }

    #[test]
    fn joined_mid_way_skips_to_the_next_message() {
        let ok = nginx_response("200 OK", b"fresh");
        let segments = [
            // The tail of a body, then a response whose request was not seen.
            whole(Recv, 1, b"</body></html>\n"),
            whole(Recv, 2, &nginx_response("200 OK", b"stale")),
            whole(Send, 3, CURL_GET),
            whole(Recv, 4, &ok),
        ];
        assert_eq!(
            run(None, Privacy::default(), &segments, None),
            vec![client("/index.html", 200, (3, 4), (CURL_GET.len(), ok.len()))]
        );
        // Joined in the middle of a request body on the server side.
        let segments = [
            whole(Recv, 1, b"name=value&other=1"),
            whole(Send, 2, &nginx_response("200 OK", b"x")),
            whole(Recv, 3, CURL_GET),
            whole(Send, 4, &ok),
        ];
        let expected =
            http(Role::Server, "GET", "/index.html", Some(200), (3, 4), (CURL_GET.len(), ok.len()), "1.1", HOST, None);
        assert_eq!(run(None, Privacy::default(), &segments, None), vec![expected]);
    }

    #[test]
    fn request_headers_beyond_the_capture_are_partial() {
        let mut req = b"GET /big-cookie HTTP/1.1\r\nHost: shop\r\nCookie: ".to_vec();
        req.extend_from_slice(&[b'k'; 6000]);
        req.extend_from_slice(b"\r\nAccept: */*\r\n\r\n");
        let ok = nginx_response("200 OK", b"cart");
        let segments = [(Send, 1, req[..4096].to_vec(), req.len() as u64), whole(Recv, 2, &ok)];
        let out = run(None, Privacy::default(), &segments, None);
        assert_eq!(
            out,
            vec![http(
                Role::Client,
                "GET",
                "/big-cookie",
                Some(200),
                (1, 2),
                (req.len(), ok.len()),
                "1.1",
                Some("shop"),
                Some("request headers not captured"),
            )]
        );
    }

    #[test]
    fn close_emits_requests_without_response() {
        let segments = [whole(Send, 1, &curl_get("/slow")), whole(Send, 2, &curl_get("/slower"))];
        let out = run(None, Privacy::default(), &segments, Some(50));
        assert_eq!(
            out,
            vec![
                http(Role::Client, "GET", "/slow", None, (1, 50), (curl_get("/slow").len(), 0), "1.1", HOST, None),
                http(Role::Client, "GET", "/slower", None, (2, 50), (curl_get("/slower").len(), 0), "1.1", HOST, None),
            ]
        );
    }

    #[test]
    fn incomplete_response_at_close_is_partial() {
        let head = nginx_head("200 OK", 100);
        let segments = [whole(Send, 1, CURL_GET), whole(Recv, 2, &head), whole(Recv, 3, &[b'a'; 40])];
        let out = run(None, Privacy::default(), &segments, Some(9));
        let mut expected = client("/index.html", 200, (1, 3), (CURL_GET.len(), head.len() + 40));
        expected.partial = Some("response incomplete at close".to_owned());
        assert_eq!(out, vec![expected]);
    }

    #[test]
    fn garbage_is_an_error_and_the_parser_recovers() {
        let mut parser = Http1Parser::new(Some(Role::Client), Privacy::default());
        let ok = nginx_response("200 OK", b"ok");
        let segments = [
            whole(Send, 1, b"\x00\x01\x02 not http\r\n\r\n"),
            whole(Send, 2, CURL_GET),
            whole(Recv, 3, b"\xff\xfe garbage"),
            whole(Recv, 4, &ok),
        ];
        let (out, errors) = run_with(&mut parser, &segments, None);
        assert_eq!(errors, 2);
        assert_eq!(parser.counts().malformed, 2);
        // The response after the garbage pairs with the request before it.
        let mut expected = client("/index.html", 200, (1, 4), (CURL_GET.len(), ok.len()));
        expected.start_ns = 2;
        assert_eq!(out, vec![expected]);
        let mut parser = Http1Parser::new(Some(Role::Client), Privacy::default());
        let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n";
        let (out, errors) = run_with(&mut parser, &[whole(Send, 1, CURL_GET), whole(Recv, 2, chunked)], None);
        assert_eq!(errors, 1);
        let mut expected = client("/index.html", 200, (1, 2), (CURL_GET.len(), chunked.len() - 4));
        expected.partial = Some("malformed response".to_owned());
        assert_eq!(out, vec![expected]);
    }

    #[test]
    fn upgrade_stops_parsing() {
        let req = b"GET /ws HTTP/1.1\r\nHost: chat\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n";
        let resp = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n";
        let segments = [
            whole(Send, 1, req),
            whole(Recv, 2, resp),
            whole(Send, 3, b"\x81\x05hello"),
            whole(Recv, 4, b"\x81\x02hi"),
        ];
        let out = run(None, Privacy::default(), &segments, Some(5));
        assert_eq!(
            out,
            vec![http(
                Role::Client,
                "GET",
                "/ws",
                Some(101),
                (1, 2),
                (req.len(), resp.len()),
                "1.1",
                Some("chat"),
                None
            )]
        );
    }

    #[test]
    fn outstanding_requests_are_bounded() {
        let mut parser = Http1Parser::new(None, Privacy::default());
        let segments: Vec<Seg> = (0..MAX_PENDING as u64 + 3).map(|i| whole(Send, i, CURL_GET)).collect();
        let (out, _) = run_with(&mut parser, &segments, None);
        assert!(out.is_empty());
        assert_eq!(parser.counts().unpaired_dropped, 3);
        let mut out = Vec::new();
        parser.close(1000, &mut out);
        assert_eq!(out.len(), MAX_PENDING);
    }

    /// A realistic conversation, each message one segment.
    fn conversation() -> Vec<Seg> {
        let mut segments = vec![
            whole(Send, 1, CURL_GET),
            whole(Recv, 2, &nginx_response("200 OK", &[b'h'; 300])),
            whole(Send, 3, b"POST /form?a=1 HTTP/1.1\r\nHost: h\r\nContent-Length: 11\r\n\r\nhello=world"),
            whole(
                Recv,
                4,
                b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 302 Found\r\nLocation: /\r\nContent-Length: 0\r\n\r\n",
            ),
        ];
        segments.push(whole(Send, 5, &curl_get("/chunks")));
        segments.push(whole(Recv, 6, &chunked_response().concat()));
        segments.push(whole(Send, 7, b"HEAD /h HTTP/1.0\r\n\r\n"));
        segments.push(whole(Recv, 8, &nginx_head("200 OK", 99)));
        segments.push(whole(Send, 9, &curl_get("/end")));
        segments.push(whole(Recv, 10, b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end"));
        segments
    }

    fn split(segments: &[Seg], cuts: &[usize]) -> Vec<Seg> {
        let mut out = Vec::new();
        for (i, (direction, ts, data, _)) in segments.iter().enumerate() {
            let cut = cuts.get(i).copied().unwrap_or(0) % (data.len() + 1);
            for part in [&data[..cut], &data[cut..]] {
                if !part.is_empty() {
                    out.push(whole(*direction, *ts, part));
                }
            }
        }
        out
    }

    #[test]
    fn conversation_is_parsed_whole() {
        let out = run(Some(Role::Client), Privacy::default(), &conversation(), Some(11));
        let statuses: Vec<_> = out.iter().map(|e| (e.target.as_str(), e.status, e.end_ns)).collect();
        assert_eq!(
            statuses,
            vec![
                ("/index.html", Some(200), 2),
                ("/form", Some(302), 4),
                ("/chunks", Some(200), 6),
                ("/h", Some(200), 8),
                ("/end", Some(200), 10)
            ]
        );
    }

    proptest::proptest! {
        #[test]
        fn splitting_segments_changes_nothing(cuts in proptest::collection::vec(0usize..2000, 10)) {
            let segments = conversation();
            let expected = run(Some(Role::Client), Privacy::default(), &segments, Some(11));
            let split = split(&segments, &cuts);
            proptest::prop_assert_eq!(run(Some(Role::Client), Privacy::default(), &split, Some(11)), expected);
        }

        #[test]
        fn random_bytes_never_panic(
            chunks in proptest::collection::vec((proptest::bool::ANY, proptest::collection::vec(proptest::num::u8::ANY, 0..300), 0u64..10_000), 0..20),
            prefix in 0usize..3,
        ) {
            let mut parser = Http1Parser::new(None, Privacy::default());
            let mut out = Vec::new();
            let starts: [&[u8]; 3] = [b"", b"GET / HTTP/1.1\r\n", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"];
            for (i, (send, data, extra)) in chunks.iter().enumerate() {
                let mut bytes = if i < 2 { starts[prefix].to_vec() } else { Vec::new() };
                bytes.extend_from_slice(data);
                let direction = if *send { Send } else { Recv };
                let segment = Segment { direction, timestamp_ns: i as u64, data: &bytes, total_len: bytes.len() as u64 + extra, peer: None };
                let _ = parser.feed(&segment, &mut out);
            }
            parser.close(99, &mut out);
        }
    }

    proptest::proptest! {
        #[test]
        fn cut_and_mutated_conversations_never_panic(
            edits in proptest::collection::vec((0usize..10, 0usize..800, proptest::num::u8::ANY, 0usize..5), 0..12),
            role in proptest::option::of(proptest::bool::ANY),
        ) {
            let mut segments = conversation();
            for (seg, at, byte, what) in edits {
                let (_, _, data, total) = &mut segments[seg];
                if data.is_empty() {
                    continue;
                }
                let at = at % data.len();
                match what {
                    // A capture cut short: the syscall still moved the bytes.
                    0 => data.truncate(at),
                    1 => *total += at as u64,
                    _ => {
                        data[at] = byte;
                        *total = (*total).max(data.len() as u64);
                    }
                }
            }
            let role = role.map(|client| if client { Role::Client } else { Role::Server });
            let mut parser = Http1Parser::new(role, Privacy::default());
            let (out, _) = run_with(&mut parser, &segments, Some(11));
            proptest::prop_assert!(out.len() <= 5 + MAX_PENDING);
        }
    }

    #[test]
    fn every_single_split_of_the_conversation() {
        let segments = conversation();
        let expected = run(Some(Role::Client), Privacy::default(), &segments, Some(11));
        for (i, (_, _, data, _)) in segments.iter().enumerate() {
            for cut in 1..data.len() {
                let mut cuts = vec![0; segments.len()];
                cuts[i] = cut;
                let split = split(&segments, &cuts);
                assert_eq!(
                    run(Some(Role::Client), Privacy::default(), &split, Some(11)),
                    expected,
                    "segment {i} cut {cut}"
                );
            }
        }
    }
}
