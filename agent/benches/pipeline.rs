//! The userspace pipeline over a recorded stream: decode → connection table
//! → HTTP/1 parser (and, separately, with JSON output), in completed
//! exchanges per second on one core.
//!
//! The stream is tests/golden/http1_nginx_curl.rec (curl and nginx on
//! loopback, three keep-alive requests, both ends: six exchanges) repeated
//! as many distinct connections, each copy with its own socket ids and
//! later timestamps, so the connection table holds many connections.
//!
//!     cargo bench -p kscope --bench pipeline

#![allow(clippy::unwrap_used, reason = "a benchmark fails loudly")]

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use kscope::{
    conntrack::ConnTable,
    decode::{Event, decode},
    output::{Clock, OutputFormat, Sink},
    recording::{Recording, replay},
};
use kscope_common::EventKind;
use kscope_protocols::Privacy;

/// Copies of the recorded connections in one pass.
const COPIES: u64 = 200;

/// Offsets in every record (kscope_common::EventHeader, then TcpEvent's and
/// SocketDataHeader's sock_id).
const KIND_AT: usize = 0;
const TIMESTAMP_AT: usize = 16;
const SOCK_ID_AT: usize = 48;

fn stream() -> (Vec<Vec<u8>>, u64) {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/golden/http1_nginx_curl.rec");
    let recording = Recording::parse(&std::fs::read(path).unwrap()).unwrap();
    let span = 10_000_000_000u64;
    let mut records = Vec::new();
    for copy in 0..COPIES {
        for record in &recording.records {
            let mut record = record.clone();
            let kind = u32::from_le_bytes(record[KIND_AT..KIND_AT + 4].try_into().unwrap());
            let ts = u64::from_le_bytes(record[TIMESTAMP_AT..TIMESTAMP_AT + 8].try_into().unwrap());
            record[TIMESTAMP_AT..TIMESTAMP_AT + 8].copy_from_slice(&(ts + copy * span).to_le_bytes());
            if kind >= EventKind::TcpConnect as u32 {
                let sock = u64::from_le_bytes(record[SOCK_ID_AT..SOCK_ID_AT + 8].try_into().unwrap());
                record[SOCK_ID_AT..SOCK_ID_AT + 8].copy_from_slice(&(sock ^ (copy << 40)).to_le_bytes());
            }
            records.push(record);
        }
    }
    // Count what one pass completes rather than assuming it.
    let sink = Sink { format: OutputFormat::Json, clock: Clock::from_offset(0), data_events: false };
    let counts = replay(&records, &sink, &mut ConnTable::new(1 << 20, u64::MAX, Privacy::default()), &mut Vec::new());
    assert_eq!(counts.exchanges, 6 * COPIES, "the recording holds six exchanges");
    (records, counts.exchanges)
}

fn pipeline(c: &mut Criterion) {
    let (records, exchanges) = stream();
    let mut group = c.benchmark_group("pipeline");
    group.throughput(Throughput::Elements(exchanges));
    for (name, format) in
        [("decode+conntrack+http1+console", OutputFormat::Console), ("decode+conntrack+http1+json", OutputFormat::Json)]
    {
        group.bench_function(name, |b| {
            let sink = Sink { format, clock: Clock::from_offset(0), data_events: false };
            let mut text = Vec::with_capacity(1 << 20);
            b.iter(|| {
                text.clear();
                let mut table = ConnTable::new(1 << 20, u64::MAX, Privacy::default());
                black_box(replay(black_box(&records), &sink, &mut table, &mut text));
            });
        });
    }
    // The stages up to completed exchanges, without rendering them.
    group.bench_function("decode+conntrack+http1", |b| {
        let mut out = Vec::with_capacity(1024);
        b.iter(|| {
            let mut table = ConnTable::new(1 << 20, u64::MAX, Privacy::default());
            let mut events: Vec<Event> = records.iter().filter_map(|r| decode(r).ok()).collect();
            events.sort_by_key(|e| e.origin().timestamp_ns);
            let mut completed = 0;
            for event in &events {
                table.on_event(event, &mut out);
                completed += out.len();
                out.clear();
            }
            black_box(completed)
        });
    });
    group.finish();
}

criterion_group!(benches, pipeline);
criterion_main!(benches);
