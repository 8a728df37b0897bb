use super::*;
use crate::Segment;
use proptest::prelude::*;

use Direction::{Recv, Send};

const CTX: ConnContext = ConnContext { transport: Transport::Tcp, local_port: 40000, peer_port: 8080, role: None };

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut out = len.to_be_bytes()[1..].to_vec();
    out.push(kind);
    out.push(flags);
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

fn settings(pairs: &[(u16, u32)]) -> Vec<u8> {
    let payload: Vec<u8> =
        pairs.iter().flat_map(|(id, v)| [&id.to_be_bytes()[..], &v.to_be_bytes()[..]].concat()).collect();
    frame(SETTINGS, 0, 0, &payload)
}

fn grpc_message(body: &[u8]) -> Vec<u8> {
    let mut out = vec![0];
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(body);
    out
}

/// An independent HPACK encoder (literal or indexed, never Huffman).
fn encode(encoder: &mut loona_hpack::Encoder<'_>, headers: &[(&str, &str)]) -> Vec<u8> {
    encoder.encode(headers.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes())))
}

/// Hand-made HPACK representations, for what the encoder above never emits.
fn int(value: usize, prefix: u8, first: u8) -> Vec<u8> {
    let mut out = loona_hpack::encoder::encode_integer(value, prefix);
    out[0] |= first;
    out
}
fn lit(first: u8, prefix: u8, name_index: usize, value: &str) -> Vec<u8> {
    let mut out = int(name_index, prefix, first);
    out.extend(int(value.len(), 7, 0));
    out.extend_from_slice(value.as_bytes());
    out
}
/// Literal with incremental indexing, name from the table.
fn lit_indexed(name_index: usize, value: &str) -> Vec<u8> {
    lit(0x40, 6, name_index, value)
}
fn huffman_literal(name_index: usize, value: &str) -> Vec<u8> {
    let mut coded = Vec::new();
    httlib_huffman::encode(value.as_bytes(), &mut coded).expect("encodable");
    let mut out = int(name_index, 4, 0);
    out.extend(int(coded.len(), 7, 0x80));
    out.extend(coded);
    out
}

fn seg(direction: Direction, timestamp_ns: u64, data: &[u8]) -> Segment<'_> {
    Segment { direction, timestamp_ns, data, total_len: data.len() as u64, peer: None }
}

/// Feeds `(direction, timestamp, bytes)` in order, then closes at `close_ns` if given.
fn run(parser: &mut Http2Parser, segments: &[(Direction, u64, Vec<u8>)], close_ns: Option<u64>) -> Vec<Exchange> {
    let mut out = Vec::new();
    for (direction, ts, data) in segments {
        parser.feed(&seg(*direction, *ts, data), &mut out).expect("well-formed");
    }
    if let Some(ns) = close_ns {
        parser.close(ns, &mut out);
    }
    out
}

fn parse(segments: &[(Direction, u64, Vec<u8>)]) -> Vec<Exchange> {
    run(&mut Http2Parser::default(), segments, None)
}

fn http(
    method: &str,
    target: &str,
    status: Option<u32>,
    (start_ns, end_ns): (u64, u64),
    (request_bytes, response_bytes): (u64, u64),
    host: &str,
    stream_id: u32,
) -> Exchange {
    Exchange {
        kind: ExchangeKind::Http2,
        role: Role::Client,
        method: Some(method.to_string()),
        target: target.to_string(),
        status,
        start_ns,
        end_ns,
        request_bytes,
        response_bytes,
        peer: None,
        partial: None,
        detail: Detail::Http(HttpDetail {
            version: "2".to_string(),
            host: Some(host.to_string()),
            traceparent: None,
            tracestate: None,
            stream_id: Some(stream_id),
        }),
    }
}

/// Reads a recording in `testdata/` (see the comments at its top).
fn recording(text: &str) -> Vec<(Direction, u64, Vec<u8>)> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|line| {
            let mut parts = line.split(' ');
            let direction = if parts.next() == Some("S") { Send } else { Recv };
            let ts = parts.next().and_then(|t| t.parse().ok()).expect("timestamp");
            let hex = parts.next().unwrap_or("");
            let bytes =
                (0..hex.len() / 2).map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).expect("hex")).collect();
            (direction, ts, bytes)
        })
        .collect()
}

const GET_HEADERS: &[(&str, &str)] =
    &[(":method", "GET"), (":scheme", "http"), (":authority", "example.com"), (":path", "/hello?name=x")];

/// A `curl --http2-prior-knowledge` style exchange, client side.
fn prior_knowledge_get() -> Vec<(Direction, u64, Vec<u8>)> {
    let mut client = loona_hpack::Encoder::new();
    let mut server = loona_hpack::Encoder::new();
    let request = encode(&mut client, GET_HEADERS);
    let response = encode(&mut server, &[(":status", "200"), ("content-type", "text/plain")]);
    vec![
        (
            Send,
            10,
            [PREFACE, &settings(&[(3, 100), (4, 1 << 24)]), &frame(HEADERS, END_STREAM | END_HEADERS, 1, &request)]
                .concat(),
        ),
        (Recv, 20, [settings(&[(3, 128)]), frame(SETTINGS, ACK, 0, &[])].concat()),
        (Send, 30, frame(SETTINGS, ACK, 0, &[])),
        (Recv, 40, [frame(HEADERS, END_HEADERS, 1, &response), frame(DATA, END_STREAM, 1, b"hello\n")].concat()),
    ]
}

#[test]
fn check_accepts_preface_and_frames_only() {
    let yes = |data: &[u8]| check(&seg(Send, 0, data), &CTX);
    assert_eq!(yes(PREFACE), Confidence::Yes);
    assert_eq!(yes(&PREFACE[..16]), Confidence::Yes);
    assert_eq!(yes(&settings(&[(3, 100), (4, 65535)])), Confidence::Yes);
    assert_eq!(yes(&frame(HEADERS, END_HEADERS, 3, &[0x82, 0x84])), Confidence::Yes);
    assert_eq!(yes(&frame(WINDOW_UPDATE, 0, 0, &[0, 0, 1, 0])), Confidence::Yes);
    // DATA alone is only plausible; a frame with undefined flags or an
    // even-stream SETTINGS is not HTTP/2.
    assert_eq!(yes(&frame(DATA, 0, 1, b"abc")), Confidence::Maybe);
    assert_eq!(yes(&frame(SETTINGS, 0, 1, &[0; 6])), Confidence::No);
    assert_eq!(yes(&frame(HEADERS, 0x40, 1, &[0x82])), Confidence::No);
    // Unknown settings must be ignored (RFC 9113 §6.5.2): plausible only.
    assert_eq!(yes(&settings(&[(0x77, 1)])), Confidence::Maybe);
    // Trailing bytes that are not a frame.
    assert_eq!(yes(&[settings(&[(3, 1)]), b"xyz".to_vec()].concat()), Confidence::No);
    assert_eq!(yes(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"), Confidence::No);
    assert_eq!(yes(b"HTTP/1.1 200 OK\r\n\r\n"), Confidence::No);
    assert_eq!(yes(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03]), Confidence::No);
    assert_eq!(yes(b""), Confidence::No);
    // A frame cut by the capture.
    let cut = settings(&[(3, 100), (4, 65535)]);
    let segment = Segment { direction: Send, timestamp_ns: 0, data: &cut[..15], total_len: 21, peer: None };
    assert_eq!(check(&segment, &CTX), Confidence::Yes);
    assert_eq!(crate::infer(&seg(Send, 0, PREFACE), &CTX).map(|s| s.id), Some(ProtocolId::Http2));
}

#[test]
fn prior_knowledge_get_with_settings_exchange() {
    let segments = prior_knowledge_get();
    let request_bytes = 9 + segments[0].2.len() as u64 - PREFACE.len() as u64 - 21;
    let response_bytes = segments[3].2.len() as u64;
    assert_eq!(
        parse(&segments),
        vec![http("GET", "/hello", Some(200), (10, 40), (request_bytes - 9, response_bytes), "example.com", 1)]
    );
    // The query stays only when opted in.
    let mut keep = Http2Parser::new(None, Privacy { keep_query: true });
    assert_eq!(run(&mut keep, &segments, None)[0].target, "/hello?name=x");
}

#[test]
fn server_side_sees_the_same_exchange_with_server_role() {
    let segments: Vec<_> = prior_knowledge_get().into_iter().map(|(d, ts, b)| (d.reverse(), ts, b)).collect();
    let exchanges = parse(&segments);
    assert_eq!(exchanges.len(), 1);
    assert_eq!(exchanges[0].role, Role::Server);
    assert_eq!((exchanges[0].method.as_deref(), exchanges[0].status), (Some("GET"), Some(200)));
}

/// Real bytes: two multiplexed GETs of nghttp against nghttpd (Huffman
/// coding, PRIORITY frames, dynamic-table reuse by both sides, the server's
/// SETTINGS arriving before the client's preface).
#[test]
fn nghttp_recording_two_streams() {
    let segments = recording(include_str!("../../testdata/nghttp_two_streams.txt"));
    let exchanges = parse(&segments);
    assert_eq!(
        exchanges,
        vec![
            http("GET", "/a.txt", Some(200), (2_137_000, 2_621_000), (57, 9 + 92 + 9 + 13), "127.0.0.1:28443", 13),
            http("GET", "/b.txt", Some(200), (2_137_000, 2_621_000), (27, 9 + 12 + 9 + 3000), "127.0.0.1:28443", 15),
        ]
    );
}

#[test]
fn multiplexed_streams_complete_out_of_order() {
    let mut client = loona_hpack::Encoder::new();
    let mut server = loona_hpack::Encoder::new();
    let req1 = encode(
        &mut client,
        &[(":method", "POST"), (":path", "/upload"), (":authority", "a.test"), (":scheme", "https")],
    );
    let req3 =
        encode(&mut client, &[(":method", "GET"), (":path", "/fast"), (":authority", "a.test"), (":scheme", "https")]);
    let resp3 = encode(&mut server, &[(":status", "204")]);
    let resp1 = encode(&mut server, &[(":status", "201")]);
    let segments = vec![
        (
            Send,
            100,
            [PREFACE.to_vec(), settings(&[]), frame(HEADERS, END_HEADERS, 1, &req1), frame(DATA, 0, 1, b"part1")]
                .concat(),
        ),
        (Send, 110, [frame(HEADERS, END_HEADERS | END_STREAM, 3, &req3), frame(DATA, 0, 1, b"part2")].concat()),
        (Recv, 120, [settings(&[]), frame(HEADERS, END_HEADERS | END_STREAM, 3, &resp3)].concat()),
        (Send, 130, [frame(WINDOW_UPDATE, 0, 1, &[0, 0, 1, 0]), frame(DATA, END_STREAM, 1, b"end")].concat()),
        (Recv, 140, frame(HEADERS, END_HEADERS | END_STREAM, 1, &resp1)),
    ];
    let req1_bytes = (9 + req1.len() + 14 + 14 + 13 + 12) as u64;
    assert_eq!(
        parse(&segments),
        vec![
            http("GET", "/fast", Some(204), (110, 120), (9 + req3.len() as u64, 9 + resp3.len() as u64), "a.test", 3),
            http("POST", "/upload", Some(201), (100, 140), (req1_bytes, 9 + resp1.len() as u64), "a.test", 1),
        ]
    );
}

#[test]
fn continuation_padding_and_priority() {
    let mut client = loona_hpack::Encoder::new();
    let block =
        encode(&mut client, &[(":method", "GET"), (":path", "/long/path/for/continuation"), (":authority", "c.test")]);
    let (a, rest) = block.split_at(10);
    let (b, c) = rest.split_at(10);
    // HEADERS with PADDED (3 bytes) and PRIORITY, then two CONTINUATIONs.
    let mut headers_payload = vec![3, 0, 0, 0, 0, 16];
    headers_payload.extend_from_slice(a);
    headers_payload.extend_from_slice(&[0, 0, 0]);
    // Padded DATA: pad length 4, "ok", 4 bytes of padding.
    let data = frame(DATA, PADDED | END_STREAM, 1, &[4, b'o', b'k', 0, 0, 0, 0]);
    let segments = vec![
        (
            Send,
            5,
            [
                PREFACE.to_vec(),
                settings(&[]),
                frame(HEADERS, PADDED | PRIORITY_FLAG | END_STREAM, 1, &headers_payload),
                frame(CONTINUATION, 0, 1, b),
            ]
            .concat(),
        ),
        (Send, 6, frame(CONTINUATION, END_HEADERS, 1, c)),
        (Recv, 7, [settings(&[]), frame(HEADERS, END_HEADERS, 1, &[0x88]), data].concat()),
    ];
    let request_bytes = (9 + headers_payload.len() + 9 + b.len() + 9 + c.len()) as u64;
    assert_eq!(
        parse(&segments),
        vec![http("GET", "/long/path/for/continuation", Some(200), (5, 7), (request_bytes, 10 + 16), "c.test", 1)]
    );
}

#[test]
fn dynamic_table_reuse_across_requests_with_huffman() {
    // Request 1 inserts :authority and :path; request 2 indexes them (62, 63).
    let req1 = [vec![0x82, 0x87], lit_indexed(1, "api.example.com"), lit_indexed(4, "/v1/items")].concat();
    let req2 = vec![0x82, 0x87, 0x80 | 62, 0x80 | 63];
    // Response 2 carries a Huffman-coded :status literal (not indexed).
    let resp2 = huffman_literal(8, "404");
    let segments = vec![
        (Send, 1, [PREFACE.to_vec(), settings(&[]), frame(HEADERS, END_HEADERS | END_STREAM, 1, &req1)].concat()),
        (Recv, 2, [settings(&[]), frame(HEADERS, END_HEADERS | END_STREAM, 1, &[0x88])].concat()),
        (Send, 3, frame(HEADERS, END_HEADERS | END_STREAM, 3, &req2)),
        (Recv, 4, frame(HEADERS, END_HEADERS | END_STREAM, 3, &resp2)),
    ];
    assert_eq!(
        parse(&segments),
        vec![
            http("GET", "/v1/items", Some(200), (1, 2), (9 + req1.len() as u64, 10), "api.example.com", 1),
            http("GET", "/v1/items", Some(404), (3, 4), (13, 9 + resp2.len() as u64), "api.example.com", 3),
        ]
    );
}

/// The server allows an 8 KiB table; the client's first block resizes to it
/// and inserts more than 4 KiB, so the second request's reference to the
/// oldest entry only resolves with the larger table.
#[test]
fn settings_header_table_size_change() {
    let pad = "p".repeat(3000);
    let req1 =
        [int(8192, 5, 0x20), vec![0x82, 0x87], lit_indexed(1, "big.test"), lit_indexed(4, "/one"), lit(0x40, 6, 0, "")]
            .concat();
    // The last literal above has an empty new name; replace it with x-pad.
    let req1 = [&req1[..req1.len() - 2], &[0x40, 5][..], b"x-pad", &int(pad.len(), 7, 0), pad.as_bytes()].concat();
    let req2 = [vec![0x82, 0x87], lit_indexed(4, "/two"), lit(0x40, 6, 0, "")].concat();
    let req2 = [&req2[..req2.len() - 2], &[0x40, 6][..], b"x-pad2", &int(pad.len(), 7, 0), pad.as_bytes()].concat();
    // Now the table holds x-pad2, /two, x-pad, /one, :authority (index 66).
    let req3 = vec![0x82, 0x87, 0x80 | 65, 0x80 | 66];
    let client = |table_size: Option<u32>| {
        let server_settings = table_size.map_or_else(|| settings(&[]), |size| settings(&[(1, size)]));
        vec![
            (Send, 1, [PREFACE.to_vec(), settings(&[])].concat()),
            (Recv, 2, server_settings),
            (Send, 3, frame(HEADERS, END_HEADERS | END_STREAM, 1, &req1)),
            (Send, 4, frame(HEADERS, END_HEADERS | END_STREAM, 3, &req2)),
            (Send, 5, frame(HEADERS, END_HEADERS | END_STREAM, 5, &req3)),
            (Recv, 6, frame(HEADERS, END_HEADERS | END_STREAM, 5, &[0x88])),
        ]
    };
    let exchanges = run(&mut Http2Parser::default(), &client(Some(8192)), Some(9));
    let third = http("GET", "/one", Some(200), (5, 6), (9 + req3.len() as u64, 10), "big.test", 5);
    assert_eq!(exchanges[0], third);
    // Without the SETTINGS the resize exceeds the allowed 4 KiB: the
    // oldest entry is gone and the reference says so.
    let mut exchanges = run(&mut Http2Parser::default(), &client(None), Some(9));
    assert_eq!(
        exchanges.remove(0),
        Exchange {
            target: String::new(),
            method: Some("GET".to_string()),
            partial: Some(
                "hpack: 2 dynamic-table references unknown (table larger than kept); unknown: :path, :authority"
                    .to_string()
            ),
            detail: Detail::Http(HttpDetail {
                version: "2".to_string(),
                host: None,
                traceparent: None,
                tracestate: None,
                stream_id: Some(5)
            }),
            ..third
        }
    );
    // A SETTINGS of 0 empties the table at once.
    let mut decoder = Decoder::new(None);
    decoder.decode(&lit_indexed(1, "x.test")).expect("valid");
    assert_eq!(decoder.table_len(), 1);
    decoder.set_limit(0);
    assert_eq!(decoder.table_len(), 0);
}

#[test]
fn mid_way_join_yields_partial_with_static_and_literal_fields() {
    // No preface: the connection was already up. The request uses static
    // :method, a literal :path, and dynamic entries (authority, user-agent) never seen.
    let req = [vec![0x83, 0x87], lit(0x00, 4, 4, "/orders/42"), vec![0x80 | 62, 0x80 | 63]].concat();
    let segments = vec![
        (Send, 1, frame(HEADERS, END_HEADERS, 7, &req)),
        (Send, 2, frame(DATA, END_STREAM, 7, b"{}")),
        (Recv, 3, [frame(HEADERS, END_HEADERS, 7, &[0x88]), frame(DATA, END_STREAM, 7, b"ok")].concat()),
    ];
    assert_eq!(check(&seg(Send, 1, &segments[0].2), &CTX), Confidence::Yes);
    assert_eq!(
        parse(&segments),
        vec![Exchange {
            partial: Some(
                "hpack: 2 dynamic-table references unknown (connection seen mid-way); unknown: :authority".to_string()
            ),
            detail: Detail::Http(HttpDetail {
                version: "2".to_string(),
                host: None,
                traceparent: None,
                tracestate: None,
                stream_id: Some(7)
            }),
            ..http("POST", "/orders/42", Some(200), (1, 3), (9 + req.len() as u64 + 11, 10 + 11), "", 7)
        }]
    );
}

#[test]
fn mid_way_join_in_the_middle_of_a_frame_waits_for_a_frame_boundary() {
    let req = [vec![0x82, 0x87], lit(0x00, 4, 4, "/x"), lit(0x00, 4, 1, "m.test")].concat();
    let segments = vec![
        // The tail of some DATA frame: not a frame header.
        (Recv, 1, vec![0xff; 30]),
        (Send, 2, frame(HEADERS, END_HEADERS | END_STREAM, 9, &req)),
        (Recv, 3, frame(HEADERS, END_HEADERS | END_STREAM, 9, &[0x88])),
    ];
    let mut parser = Http2Parser::default();
    let mut out = Vec::new();
    for (d, ts, data) in &segments {
        parser.feed(&seg(*d, *ts, data), &mut out).expect("tolerated");
    }
    assert_eq!(out, vec![http("GET", "/x", Some(200), (2, 3), (9 + req.len() as u64, 10), "m.test", 9)]);
}

fn grpc(
    target: (&str, &str),
    status: Option<u32>,
    (start_ns, end_ns): (u64, u64),
    (request_bytes, response_bytes): (u64, u64),
    grpc_message: Option<&str>,
    stream_id: u32,
    (request_messages, response_messages): (u32, u32),
) -> Exchange {
    Exchange {
        kind: ExchangeKind::Grpc,
        role: Role::Client,
        method: Some("POST".to_string()),
        target: format!("{}/{}", target.0, target.1),
        status,
        start_ns,
        end_ns,
        request_bytes,
        response_bytes,
        peer: None,
        partial: None,
        detail: Detail::Grpc(GrpcDetail {
            service: target.0.to_string(),
            method: target.1.to_string(),
            authority: Some("127.0.0.1:28551".to_string()),
            grpc_message: grpc_message.map(str::to_string),
            traceparent: None,
            tracestate: None,
            stream_id,
            request_messages,
            response_messages,
        }),
    }
}

/// Real bytes from grpcio: unary OK, server-streaming with 3 messages, and
/// NOT_FOUND with a percent-encoded grpc-message.
#[test]
fn grpcio_recording_unary_streaming_and_error() {
    let segments = recording(include_str!("../../testdata/grpc_python.txt"));
    let exchanges = parse(&segments);
    // Frame bytes per stream and direction, as a plain frame walk of the recording counts them.
    let service = "demo.v1.Greeter";
    assert_eq!(
        exchanges,
        vec![
            grpc((service, "SayHello"), Some(0), (1_726_000, 7_711_000), (272, 151), None, 1, (1, 1)),
            grpc((service, "ListItems"), Some(0), (9_353_000, 11_352_000), (84, 97), None, 3, (1, 3)),
            grpc(
                (service, "Lookup"),
                Some(5),
                (14_145_000, 15_032_000),
                (78, 65),
                Some("no such user: bob é"),
                5,
                (1, 0)
            ),
        ]
    );
}

fn grpc_request(encoder: &mut loona_hpack::Encoder<'_>, path: &str) -> Vec<u8> {
    encode(
        encoder,
        &[
            (":method", "POST"),
            (":scheme", "http"),
            (":path", path),
            (":authority", "127.0.0.1:28551"),
            ("content-type", "application/grpc"),
            ("te", "trailers"),
            ("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
            ("tracestate", "rojo=00f067aa0ba902b7"),
            ("authorization", "Bearer secret"),
        ],
    )
}

#[test]
fn grpc_trailers_only_response_and_traceparent() {
    let mut client = loona_hpack::Encoder::new();
    let mut server = loona_hpack::Encoder::new();
    let req = grpc_request(&mut client, "/pkg.Svc/Get");
    let body = [grpc_message(b"ab"), grpc_message(b"")].concat();
    let resp = encode(
        &mut server,
        &[
            (":status", "200"),
            ("content-type", "application/grpc"),
            ("grpc-status", "7"),
            ("grpc-message", "denied%20here"),
        ],
    );
    let segments = vec![
        (
            Send,
            1,
            [PREFACE.to_vec(), settings(&[]), frame(HEADERS, END_HEADERS, 1, &req), frame(DATA, END_STREAM, 1, &body)]
                .concat(),
        ),
        (Recv, 2, [settings(&[]), frame(HEADERS, END_HEADERS | END_STREAM, 1, &resp)].concat()),
    ];
    let mut expected = grpc(
        ("pkg.Svc", "Get"),
        Some(7),
        (1, 2),
        ((9 + req.len() + 9 + body.len()) as u64, 9 + resp.len() as u64),
        Some("denied here"),
        1,
        (2, 0),
    );
    if let Detail::Grpc(detail) = &mut expected.detail {
        detail.traceparent = Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".to_string());
        detail.tracestate = Some("rojo=00f067aa0ba902b7".to_string());
    }
    let exchanges = parse(&segments);
    assert_eq!(exchanges, vec![expected]);
    assert!(!format!("{exchanges:?}").contains("secret"));
}

#[test]
fn grpc_messages_counted_across_data_frames_and_uncaptured_bytes() {
    let mut client = loona_hpack::Encoder::new();
    let mut server = loona_hpack::Encoder::new();
    let req = grpc_request(&mut client, "/pkg.Svc/Stream");
    let resp = encode(&mut server, &[(":status", "200"), ("content-type", "application/grpc")]);
    let trailers = encode(&mut server, &[("grpc-status", "0")]);
    // Three response messages: the second (10 KB) spans two DATA frames and
    // most of it is not captured.
    let big = vec![7u8; 10_000];
    let stream_body = [grpc_message(b"one"), grpc_message(&big)].concat();
    let (part1, part2) = stream_body.split_at(5000);
    let data1 = frame(DATA, 0, 1, part1);
    let data2 = frame(DATA, 0, 1, part2);
    let data3 = frame(DATA, 0, 1, &grpc_message(b"three"));
    let mut segments = vec![
        (
            Send,
            1,
            [
                PREFACE.to_vec(),
                settings(&[]),
                frame(HEADERS, END_HEADERS, 1, &req),
                frame(DATA, END_STREAM, 1, &grpc_message(b"q")),
            ]
            .concat(),
        ),
        (Recv, 2, [settings(&[]), frame(HEADERS, END_HEADERS, 1, &resp)].concat()),
    ];
    let mut parser = Http2Parser::default();
    let mut out = run(&mut parser, &segments, None);
    // Only the first 4 KiB of each DATA syscall is captured.
    for (ts, data) in [(3, &data1), (4, &data2)] {
        let segment = Segment {
            direction: Recv,
            timestamp_ns: ts,
            data: &data[..4096],
            total_len: data.len() as u64,
            peer: None,
        };
        parser.feed(&segment, &mut out).expect("well-formed");
    }
    segments.clear();
    segments.push((Recv, 5, [data3.clone(), frame(HEADERS, END_HEADERS | END_STREAM, 1, &trailers)].concat()));
    out.extend(run(&mut parser, &segments, None));
    let response_bytes = (9 + resp.len() + data1.len() + data2.len() + data3.len() + 9 + trailers.len()) as u64;
    let request_bytes = (9 + req.len() + 9 + 6) as u64;
    let mut expected = grpc(("pkg.Svc", "Stream"), Some(0), (1, 5), (request_bytes, response_bytes), None, 1, (1, 3));
    if let Detail::Grpc(detail) = &mut expected.detail {
        detail.traceparent = Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".to_string());
        detail.tracestate = Some("rojo=00f067aa0ba902b7".to_string());
    }
    assert_eq!(out, vec![expected]);
    assert_eq!(parser.counts(), ParserCounts::default());
}

#[test]
fn rst_stream_ends_the_stream_and_close_flushes_open_ones() {
    let mut client = loona_hpack::Encoder::new();
    let req1 = encode(&mut client, GET_HEADERS);
    let req3 = encode(&mut client, &[(":method", "GET"), (":path", "/slow"), (":authority", "example.com")]);
    let segments = vec![
        (Send, 1, [PREFACE.to_vec(), settings(&[]), frame(HEADERS, END_HEADERS | END_STREAM, 1, &req1)].concat()),
        (Send, 2, frame(HEADERS, END_HEADERS | END_STREAM, 3, &req3)),
        (Recv, 3, [settings(&[]), frame(RST_STREAM, 0, 1, &[0, 0, 0, 8])].concat()),
    ];
    let exchanges = run(&mut Http2Parser::default(), &segments, Some(50));
    assert_eq!(
        exchanges,
        vec![
            http("GET", "/hello", None, (1, 3), (9 + req1.len() as u64, 13), "example.com", 1),
            Exchange {
                partial: Some("connection closed before the stream ended".to_string()),
                ..http("GET", "/slow", None, (2, 50), (9 + req3.len() as u64, 0), "example.com", 3)
            },
        ]
    );
}

/// Feeds `data` of which only the first `captured` bytes were captured.
fn feed_cut(parser: &mut Http2Parser, out: &mut Vec<Exchange>, d: Direction, ts: u64, data: &[u8], captured: usize) {
    let segment =
        Segment { direction: d, timestamp_ns: ts, data: &data[..captured], total_len: data.len() as u64, peer: None };
    parser.feed(&segment, out).expect("well-formed");
}

/// A frame header that declares far more payload than ever goes by (the
/// fuzzer's case: server side, a DATA frame of 3 MB on a connection that
/// moved 280 bytes): the exchange counts the bytes that went by, captured
/// or not, never the declared length.
#[test]
fn bytes_counted_are_bytes_seen_not_declared_lengths() {
    let mut client = loona_hpack::Encoder::new();
    let req = encode(&mut client, GET_HEADERS);
    let headers = frame(HEADERS, END_HEADERS, 1, &req);
    let mut data_header = frame(DATA, END_STREAM, 1, &[]);
    data_header[..3].copy_from_slice(&3_158_069u32.to_be_bytes()[1..]);
    let server = Some(Role::Server);
    // All captured: 7 bytes of the DATA payload, then the connection closes.
    let mut parser = Http2Parser::new(server, Privacy::default());
    let mut out = Vec::new();
    let first = [PREFACE.to_vec(), settings(&[]), headers.clone(), data_header.clone(), b"payload".to_vec()].concat();
    feed_cut(&mut parser, &mut out, Recv, 1, &first, first.len());
    parser.close(9, &mut out);
    assert_eq!(out.len(), 1);
    assert_eq!((out[0].request_bytes, out[0].response_bytes), ((headers.len() + 9 + 7) as u64, 0));
    assert_eq!(out[0].role, Role::Server);
    // The same with 100 more bytes moved but not captured: they count too.
    let mut parser = Http2Parser::new(server, Privacy::default());
    let mut out = Vec::new();
    let moved = [first.clone(), vec![0; 100]].concat();
    feed_cut(&mut parser, &mut out, Recv, 1, &moved, first.len());
    parser.close(9, &mut out);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].request_bytes, (headers.len() + 9 + 7 + 100) as u64);
}

/// A header block frame too large to buffer ends its block at once (lost),
/// but only the part of its payload that goes by counts.
#[test]
fn oversized_header_block_counts_only_what_went_by() {
    let mut huge = frame(HEADERS, END_HEADERS, 1, &[]);
    huge[..3].copy_from_slice(&(MAX_BUFFERED_PAYLOAD as u32 + 1).to_be_bytes()[1..]);
    let mut parser = Http2Parser::default();
    let mut out = Vec::new();
    let first = [PREFACE.to_vec(), settings(&[]), huge, vec![0x82; 20]].concat();
    feed_cut(&mut parser, &mut out, Send, 1, &[first.clone(), vec![0; 30]].concat(), first.len());
    parser.close(9, &mut out);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].request_bytes, 9 + 20 + 30);
    assert!(out[0].partial.as_deref().is_some_and(|p| p.contains("a header block was not seen")));
}

/// A padded DATA frame whose pad length byte was not captured: the rest of
/// the frame is skipped whole (data and padding), framing kept, every byte
/// counted once.
#[test]
fn uncaptured_pad_length_keeps_framing() {
    let mut client = loona_hpack::Encoder::new();
    let req = encode(&mut client, GET_HEADERS);
    let headers = frame(HEADERS, END_HEADERS, 1, &req);
    let padded = frame(DATA, PADDED | END_STREAM, 1, &[[3].as_slice(), b"body", &[0; 3]].concat());
    let next = frame(HEADERS, END_HEADERS | END_STREAM, 3, &encode(&mut client, GET_HEADERS));
    let mut parser = Http2Parser::default();
    let mut out = Vec::new();
    let first = [PREFACE.to_vec(), settings(&[]), headers.clone(), padded[..9].to_vec()].concat();
    // The header of the DATA frame captured, its pad length byte not.
    feed_cut(&mut parser, &mut out, Send, 1, &[first.clone(), padded[9..10].to_vec()].concat(), first.len());
    // The rest of the frame, then the next request.
    let rest = [padded[10..].to_vec(), next.clone()].concat();
    feed_cut(&mut parser, &mut out, Send, 2, &rest, rest.len());
    let responses = [settings(&[]), frame(HEADERS, END_HEADERS | END_STREAM, 1, &[0x88])].concat();
    feed_cut(&mut parser, &mut out, Recv, 3, &responses, responses.len());
    let response = frame(HEADERS, END_HEADERS | END_STREAM, 3, &[0x88]);
    feed_cut(&mut parser, &mut out, Recv, 4, &response, response.len());
    let summary: Vec<_> = out.iter().map(|e| (e.request_bytes, e.response_bytes, e.status, e.end_ns)).collect();
    assert_eq!(
        summary,
        vec![((headers.len() + padded.len()) as u64, 10, Some(200), 3), (next.len() as u64, 10, Some(200), 4),]
    );
}

#[test]
fn malformed_frames_are_errors_and_the_parser_resynchronises() {
    let mut parser = Http2Parser::default();
    let mut out = Vec::new();
    let feed =
        |parser: &mut Http2Parser, out: &mut Vec<Exchange>, d, ts, data: &[u8]| parser.feed(&seg(d, ts, data), out);
    assert!(feed(&mut parser, &mut out, Send, 1, PREFACE).is_ok());
    // SETTINGS with a length that is not a multiple of 6.
    assert!(feed(&mut parser, &mut out, Send, 2, &frame(SETTINGS, 0, 0, &[0; 5])).is_err());
    assert_eq!(parser.counts().malformed, 1);
    // Garbage while lost: skipped, no error.
    assert!(feed(&mut parser, &mut out, Send, 3, &[0xee; 7]).is_ok());
    // A bad Huffman string: an error for the block, framing intact.
    let bad = [0x82, 0x04, 0x81, 0xff];
    assert!(feed(&mut parser, &mut out, Send, 4, &frame(HEADERS, END_HEADERS | END_STREAM, 1, &bad)).is_err());
    let good = [vec![0x82, 0x87], lit(0, 4, 4, "/ok"), lit(0, 4, 1, "r.test")].concat();
    assert!(feed(&mut parser, &mut out, Send, 5, &frame(HEADERS, END_HEADERS | END_STREAM, 3, &good)).is_ok());
    assert!(feed(&mut parser, &mut out, Recv, 6, &frame(HEADERS, END_HEADERS | END_STREAM, 3, &[0x88])).is_ok());
    assert_eq!(out.len(), 1);
    assert_eq!((out[0].target.as_str(), out[0].status), ("/ok", Some(200)));
    assert_eq!(parser.counts().malformed, 2);
}

#[test]
fn stream_count_is_bounded() {
    let mut parser = Http2Parser::default();
    let mut out = Vec::new();
    parser.feed(&seg(Send, 0, PREFACE), &mut out).expect("preface");
    for i in 0..(MAX_STREAMS as u32 + 10) {
        let block = [vec![0x82, 0x87, 0x84], lit(0, 4, 1, "s.test")].concat();
        parser.feed(&seg(Send, 1, &frame(HEADERS, END_HEADERS | END_STREAM, 2 * i + 1, &block)), &mut out).expect("ok");
    }
    assert_eq!(parser.conn.streams.len(), MAX_STREAMS);
    assert_eq!(parser.counts().unpaired_dropped, 10);
    parser.close(2, &mut out);
    assert_eq!(out.len(), MAX_STREAMS);
}

fn split_feed(segments: &[(Direction, u64, Vec<u8>)], cuts: &[usize]) -> Vec<Exchange> {
    let mut parser = Http2Parser::default();
    let mut out = Vec::new();
    for (i, (d, ts, data)) in segments.iter().enumerate() {
        let cut = cuts.get(i).copied().unwrap_or(0) % (data.len() + 1);
        let (a, b) = data.split_at(cut);
        for part in [a, b] {
            parser.feed(&seg(*d, *ts, part), &mut out).expect("well-formed");
        }
    }
    parser.close(u64::MAX, &mut out);
    out
}

#[test]
fn every_single_byte_boundary_gives_the_same_exchanges() {
    let segments = recording(include_str!("../../testdata/grpc_python.txt"));
    let whole = parse(&segments);
    for (i, (_, _, data)) in segments.iter().enumerate() {
        for cut in 0..=data.len() {
            let mut cuts = vec![0; segments.len()];
            cuts[i] = cut;
            assert_eq!(split_feed(&segments, &cuts), whole, "segment {i} cut at {cut}");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn any_split_gives_the_same_exchanges(chunk in 1usize..40, cuts in proptest::collection::vec(0usize..4096, 16)) {
        let segments = [
            recording(include_str!("../../testdata/nghttp_two_streams.txt")),
            recording(include_str!("../../testdata/grpc_python.txt")),
        ];
        for segments in &segments {
            let whole = parse(segments);
            prop_assert_eq!(split_feed(segments, &cuts), whole.clone());
            // And byte runs of `chunk` bytes.
            let mut parser = Http2Parser::default();
            let mut out = Vec::new();
            for (d, ts, data) in segments {
                for part in data.chunks(chunk) {
                    parser.feed(&seg(*d, *ts, part), &mut out).expect("well-formed");
                }
            }
            prop_assert_eq!(out, whole);
        }
    }

    #[test]
    fn random_bytes_never_panic(
        segments in proptest::collection::vec((any::<bool>(), proptest::collection::vec(any::<u8>(), 0..300), 0u64..5000), 0..12),
        preface in any::<bool>(),
    ) {
        let mut parser = Http2Parser::default();
        let mut out = Vec::new();
        if preface {
            let _ = parser.feed(&seg(Send, 0, PREFACE), &mut out);
        }
        for (send, data, missing) in &segments {
            let direction = if *send { Send } else { Recv };
            let segment = Segment { direction, timestamp_ns: 1, data, total_len: data.len() as u64 + missing, peer: None };
            let _ = check(&segment, &CTX);
            let _ = parser.feed(&segment, &mut out);
        }
        parser.close(2, &mut out);
        let moved = if preface { PREFACE.len() as u64 } else { 0 }
            + segments.iter().map(|(_, data, missing)| data.len() as u64 + missing).sum::<u64>();
        for exchange in &out {
            prop_assert!(exchange.request_bytes + exchange.response_bytes <= moved, "{exchange:?} of {moved}");
        }
    }

    #[test]
    fn mutated_recordings_never_panic(flips in proptest::collection::vec((0usize..64, 0usize..4096, any::<u8>()), 1..8)) {
        let mut segments = recording(include_str!("../../testdata/grpc_python.txt"));
        for (s, at, byte) in flips {
            let n = segments.len();
            let data = &mut segments[s % n].2;
            if !data.is_empty() {
                let len = data.len();
                data[at % len] = byte;
            }
        }
        let mut parser = Http2Parser::default();
        let mut out = Vec::new();
        for (d, ts, data) in &segments {
            let _ = parser.feed(&seg(*d, *ts, data), &mut out);
        }
        parser.close(u64::MAX, &mut out);
        let moved = segments.iter().map(|(_, _, data)| data.len() as u64).sum::<u64>();
        for exchange in &out {
            prop_assert!(exchange.request_bytes + exchange.response_bytes <= moved, "{exchange:?} of {moved}");
        }
    }
}
