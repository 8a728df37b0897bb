//! The userspace pipeline over a recorded stream: decode → connection table
//! → HTTP/1 parser (and, separately, with console or JSON output, or with
//! the telemetry stage making spans and metrics, and then the OTLP
//! protobuf encoding of those spans), in completed exchanges per second on
//! one core.
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
    export::{SpanItem, otlp::group_by_resource},
    output::{Clock, OutputFormat, Sink},
    recording::{Recording, replay},
    telemetry::{Telemetry, TelemetryOptions, links::IdGenerator},
};
use kscope_common::EventKind;
use kscope_protocols::Privacy;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;

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

/// One pass through the stages up to completed exchanges and then the
/// telemetry stage, in the order `run` feeds it (an event's exchanges, then
/// the event); spans released at the end of the pass. With `encode`, the
/// released spans are grouped and encoded as the OTLP exporter does for a
/// batch. Returns the spans made and the bytes encoded.
fn telemetry_pass(records: &[Vec<u8>], spans: &mut Vec<SpanItem>, encode: bool) -> (usize, usize) {
    let mut table = ConnTable::new(1 << 20, u64::MAX, Privacy::default());
    let opts = TelemetryOptions { proc_root: "/nonexistent".into(), ..Default::default() };
    let mut telemetry = Telemetry::new(opts, Clock::from_offset(0), IdGenerator::seeded(1));
    let mut events: Vec<Event> = records.iter().filter_map(|r| decode(r).ok()).collect();
    events.sort_by_key(|e| e.origin().timestamp_ns);
    let mut exchanges = Vec::with_capacity(1024);
    let mut last_ns = 0;
    for event in &events {
        last_ns = event.origin().timestamp_ns;
        table.on_event(event, &mut exchanges);
        for record in exchanges.drain(..) {
            telemetry.on_exchange(&record);
        }
        telemetry.on_event(event);
    }
    table.close_all(last_ns, &mut exchanges);
    for record in exchanges.drain(..) {
        telemetry.on_exchange(&record);
    }
    spans.clear();
    telemetry.release(last_ns, spans);
    telemetry.finish(spans);
    let made = spans.len();
    let bytes = if encode {
        let request = ExportTraceServiceRequest { resource_spans: group_by_resource(spans.drain(..)) };
        request.encode_to_vec().len()
    } else {
        0
    };
    (made, bytes)
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
    // Every exchange → spans and metrics; spans released at the end.
    let mut spans = Vec::with_capacity(8 * 1024);
    let (made, bytes) = telemetry_pass(&records, &mut spans, true);
    assert_eq!(made as u64, exchanges, "one span per exchange");
    assert!(bytes > 0);
    for (name, encode) in [("decode+conntrack+http1+telemetry", false), ("decode+conntrack+http1+telemetry+otlp", true)]
    {
        group.bench_function(name, |b| {
            b.iter(|| black_box(telemetry_pass(black_box(&records), &mut spans, encode)));
        });
    }
    group.finish();
}

criterion_group!(benches, pipeline);
criterion_main!(benches);
