#!/usr/bin/env python3
"""Writes the seed corpus (corpus/<target>/) in the fuzz targets' input
layout (see src/lib.rs): one flags byte, then segments of
[direction | gap << 1][u16 LE length][uncaptured bytes][data].

Run from anywhere: python3 agent/fuzz/make_seeds.py
"""
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))

TCP, UDP = 0, 1
CLIENT, SERVER = 1 << 1, 2 << 1
KEEP_QUERY, HINT_PORT, UDP_PEER = 1 << 3, 1 << 4, 1 << 5
SEND, RECV = 0, 1


def conn(flags, *segments):
    out = bytes([flags])
    for direction, data, *rest in segments:
        gap_us = rest[0] if rest else 10
        assert 0 <= gap_us < 128 and len(data) < 65536
        extra = rest[1] if len(rest) > 1 else 0
        out += bytes([direction | (gap_us << 1)]) + struct.pack("<H", len(data)) + bytes([extra]) + data
    return out


def h2_frame(kind, flags, stream, payload):
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload


def dns_query(qid, name, qtype, rd=True):
    header = struct.pack(">HHHHHH", qid, 0x0100 if rd else 0, 1, 0, 0, 0)
    qname = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
    return header + qname + struct.pack(">HH", qtype, 1)


def tcp_framed(message):
    return struct.pack(">H", len(message)) + message


def dns_answer_a(qid, name, addr):
    query = dns_query(qid, name, 1)
    header = struct.pack(">HHHHHH", qid, 0x8180, 1, 1, 0, 0)
    answer = b"\xc0\x0c" + struct.pack(">HHIH", 1, 1, 60, 4) + bytes(addr)
    return header + query[12:] + answer


def dns_nxdomain(qid, name, qtype):
    query = dns_query(qid, name, qtype)
    return struct.pack(">HHHHHH", qid, 0x8183, 1, 0, 0, 0) + query[12:]


HTTP1_REQ = b"GET /index.html?user=alice HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUser-Agent: curl/7.88.1\r\nAccept: */*\r\n\r\n"
HTTP1_RESP = (
    b"HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Type: text/html\r\nContent-Length: 5\r\n"
    b"Connection: keep-alive\r\n\r\nhello"
)
HTTP1_POST = b"POST /api/v1/items HTTP/1.1\r\nHost: api\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
HTTP1_404 = b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
SETTINGS = h2_frame(4, 0, 0, struct.pack(">HI", 3, 100) + struct.pack(">HI", 4, 65535))
SETTINGS_ACK = h2_frame(4, 1, 0, b"")
# HEADERS, END_STREAM | END_HEADERS, stream 1: :method GET, :scheme http,
# :path /index.html (literal without indexing, indexed name 4), :authority.
REQ_BLOCK = b"\x82\x86" + b"\x04\x0b/index.html" + b"\x01\x0e127.0.0.1:8443"
HEADERS = h2_frame(1, 0x05, 1, REQ_BLOCK)
# :status 200 (indexed 8), then DATA "hello" with END_STREAM.
RESP = h2_frame(1, 0x04, 1, b"\x88") + h2_frame(0, 0x01, 1, b"hello")
# gRPC: POST /kscope.test.Echo/Say, content-type application/grpc, te trailers.
GRPC_BLOCK = (
    b"\x83\x86" + b"\x04\x15/kscope.test.Echo/Say" + b"\x01\x0f127.0.0.1:50051"
    + b"\x0f\x10\x10application/grpc" + b"\x00\x02te\x08trailers"
)
GRPC_REQ = h2_frame(1, 0x04, 1, GRPC_BLOCK) + h2_frame(0, 0x01, 1, b"\x00\x00\x00\x00\x02hi")
GRPC_RESP = (
    h2_frame(1, 0x04, 1, b"\x88" + b"\x0f\x10\x10application/grpc")
    + h2_frame(0, 0x00, 1, b"\x00\x00\x00\x00\x02hi")
    + h2_frame(1, 0x05, 1, b"\x00\x0bgrpc-status\x010")
)

SEEDS = {
    "http1": {
        "get-200": conn(TCP | CLIENT | HINT_PORT, (SEND, HTTP1_REQ), (RECV, HTTP1_RESP, 80)),
        "get-split-server": conn(
            TCP | SERVER | HINT_PORT,
            (RECV, HTTP1_REQ[:20]),
            (RECV, HTTP1_REQ[20:]),
            (SEND, HTTP1_RESP[:40]),
            (SEND, HTTP1_RESP[40:], 5),
        ),
        "post-chunked-404-unknown-role": conn(TCP | KEEP_QUERY, (SEND, HTTP1_POST), (RECV, HTTP1_404, 120)),
        "pipelined-truncated": conn(TCP | CLIENT, (SEND, HTTP1_REQ + HTTP1_REQ), (RECV, HTTP1_RESP, 30, 200)),
    },
    "http2": {
        "preface-settings-headers": conn(
            TCP | CLIENT | HINT_PORT,
            (SEND, PREFACE + SETTINGS + HEADERS),
            (RECV, SETTINGS + SETTINGS_ACK),
            (RECV, RESP, 50),
        ),
        "grpc-unary": conn(
            TCP | SERVER,
            (RECV, PREFACE + SETTINGS),
            (RECV, GRPC_REQ),
            (SEND, SETTINGS + SETTINGS_ACK),
            (SEND, GRPC_RESP, 40),
        ),
    },
    "dns": {
        "udp-a-query-answer": conn(
            UDP | CLIENT | HINT_PORT,
            (SEND, dns_query(0x1234, "www.kscope.test", 1)),
            (RECV, dns_answer_a(0x1234, "www.kscope.test", [10, 1, 2, 3]), 120),
        ),
        "udp-a-aaaa-unconnected": conn(
            UDP | CLIENT | HINT_PORT | UDP_PEER,
            (SEND, dns_query(7, "nope.kscope.test", 1)),
            (SEND, dns_query(8, "nope.kscope.test", 28), 0),
            (RECV, dns_nxdomain(8, "nope.kscope.test", 28), 100),
            (RECV, dns_nxdomain(7, "nope.kscope.test", 1), 2),
        ),
        "tcp-length-prefixed": conn(
            TCP | SERVER | HINT_PORT,
            (RECV, tcp_framed(dns_query(0x4242, "www.kscope.test", 1))),
            (SEND, tcp_framed(dns_answer_a(0x4242, "www.kscope.test", [10, 1, 2, 3])), 90),
        ),
    },
}


def main():
    for target, seeds in SEEDS.items():
        directory = os.path.join(HERE, "corpus", target)
        os.makedirs(directory, exist_ok=True)
        for name, data in seeds.items():
            with open(os.path.join(directory, name), "wb") as f:
                f.write(data)
            print(f"{target}/{name}: {len(data)} bytes")


if __name__ == "__main__":
    main()
