//! The documented fields of the JSON records and the console lines.

use serde_json::{Value, json};

use super::*;
use crate::decode::{
    decode,
    tests::{bytes_of, tcp_close},
};

fn event_json(event: &Event, clock: &Clock) -> Value {
    let mut out = Vec::new();
    write_event_json(&mut out, event, clock);
    serde_json::from_slice(&out).unwrap()
}

fn sock_id_text(kernel_address: u64) -> String {
    sock_id(kernel_address).to_string()
}

#[test]
fn json_record_has_the_documented_fields() {
    let clock = Clock { realtime_minus_monotonic_ns: 1_700_000_000_000_000_000 };
    let event = decode(&bytes_of(&tcp_close())).unwrap();
    let value = event_json(&event, &clock);
    assert_eq!(
        value,
        json!({
            "type": "tcp.close", "time_unix_nano": 1_700_000_000_000_001_000u64,
            "hook_form": "tracepoint", "pid": 4242, "tid": 4243, "comm": "curl", "cgroup_id": 77,
            "sock_id": sock_id_text(0xffff_8880_0000_1000), "role": "client",
            "local_addr": "127.0.0.1", "local_port": 40000, "remote_addr": "127.0.0.1", "remote_port": 8080,
            "bytes_sent": 78, "bytes_received": 600, "duration_ns": 5_000_000, "never_established": false
        })
    );
}

#[test]
fn sock_ids_join_records_without_showing_kernel_addresses() {
    let token = sock_id_text(0xffff_8880_0000_1000);
    assert_eq!(token, sock_id_text(0xffff_8880_0000_1000));
    assert_ne!(token, sock_id_text(0xffff_8880_0000_1040));
    assert_eq!(token.len(), 16);
    assert!(!token.contains("ffff8880"), "{token}");
}

#[test]
fn console_line_reads_left_to_right() {
    let clock = Clock { realtime_minus_monotonic_ns: 0 };
    let event = decode(&bytes_of(&tcp_close())).unwrap();
    assert_eq!(
        event_line(&event, &clock),
        "00:00:00.000 close   pid=4242 comm=curl 127.0.0.1:40000 -> 127.0.0.1:8080 role=client sent=78 received=600 duration=5.00ms"
    );
}

fn retransmit() -> Event {
    let Ok(Event::Retransmit(mut r)) = decode(&bytes_of(&crate::decode::tests::retransmit_record())) else {
        panic!("not a retransmit")
    };
    r.frames = ["__tcp_retransmit_skb+0x4ea", "tcp_retransmit_skb+0x12", "tcp_retransmit_timer+0x667"]
        .into_iter()
        .map(std::sync::Arc::from)
        .collect();
    Event::Retransmit(r)
}

#[test]
fn retransmit_shows_the_stack_as_symbols_only() {
    let clock = Clock { realtime_minus_monotonic_ns: 1_700_000_000_000_000_000 };
    let value = event_json(&retransmit(), &clock);
    assert_eq!(
        value,
        json!({
            "type": "tcp.retransmit", "time_unix_nano": 1_700_000_000_000_001_000u64,
            "hook_form": "tracepoint", "pid": 4242, "tid": 4243, "comm": "curl", "cgroup_id": 77,
            "sock_id": sock_id_text(0xffff_8880_0000_2000), "state": "ESTABLISHED",
            "local_addr": "10.213.0.1", "local_port": 45792, "remote_addr": "10.213.0.2", "remote_port": 9099,
            "stack": ["__tcp_retransmit_skb+0x4ea", "tcp_retransmit_skb+0x12", "tcp_retransmit_timer+0x667"]
        })
    );
    assert!(!value.to_string().contains("ffffffff81"), "no raw kernel address: {value}");
    let clock = Clock { realtime_minus_monotonic_ns: 0 };
    assert_eq!(
        event_line(&retransmit(), &clock),
        "00:00:00.000 retrans pid=4242 comm=curl 10.213.0.1:45792 -> 10.213.0.2:9099 state=ESTABLISHED \
         stack=__tcp_retransmit_skb+0x4ea <- tcp_retransmit_skb+0x12 <- tcp_retransmit_timer+0x667"
    );
}

#[test]
fn drop_records_read_as_counts_at_a_place() {
    let record = crate::drops::DropRecord {
        time_unix_nano: 3_600_000_000_000,
        reason: "NO_SOCKET".into(),
        reason_code: 3,
        protocol: "ipv4".into(),
        netns: 4_026_531_840,
        location: "tcp_v4_rcv+0x99".into(),
        function: "tcp_v4_rcv".into(),
        count: 12,
        total: 40,
    };
    assert_eq!(
        drop_line(&record),
        "01:00:00.000 drop    12 packets NO_SOCKET at tcp_v4_rcv+0x99 (ipv4, netns 4026531840), 40 in all"
    );
    let no_device = crate::drops::DropRecord { time_unix_nano: 0, netns: 0, count: 1, ..record.clone() };
    assert_eq!(drop_line(&no_device), "00:00:00.000 drop    1 packet NO_SOCKET at tcp_v4_rcv+0x99 (ipv4), 40 in all");
    let value: Value =
        serde_json::from_str(&drop_json(crate::drops::DropRecord { time_unix_nano: 5, ..record })).unwrap();
    assert_eq!(
        value,
        json!({
            "type": "drop", "time_unix_nano": 5, "reason": "NO_SOCKET", "reason_code": 3, "protocol": "ipv4",
            "netns": 4_026_531_840u32, "location": "tcp_v4_rcv+0x99", "function": "tcp_v4_rcv", "count": 12,
            "total": 40
        })
    );
}

#[test]
fn probe_explains_each_hooked_function() {
    use crate::kernel::FunctionReport;
    let report = |function: &str, names: &[&str], traceable, btf, why: Option<&str>| FunctionReport {
        function: function.into(),
        kallsyms_names: names.iter().map(|n| (*n).to_owned()).collect(),
        traceable,
        btf,
        kprobe_unusable: why.map(str::to_owned),
    };
    let lines = function_lines(&[
        report("tcp_connect", &["tcp_connect"], Some(true), true, None),
        report("do_exit", &["do_exit", "do_exit.cold"], None, true, None),
        report("tcp_sendpage", &[], Some(false), false, Some("tcp_sendpage is not in this kernel (inlined or absent)")),
        report(
            "foo",
            &["foo.isra.0"],
            None,
            false,
            Some("foo is only in this kernel as foo.isra.0 (a compiler clone)"),
        ),
    ]);
    assert_eq!(
        lines,
        [
            "kernel functions hooked by kprobe and fentry forms:",
            "  tcp_connect              in kallsyms; traceable; in BTF",
            "  do_exit                  in kallsyms as do_exit, do_exit.cold; traceability unknown; in BTF",
            "  tcp_sendpage             not in kallsyms (inlined or absent); not traceable; not in BTF; kprobe: tcp_sendpage is not in this kernel (inlined or absent)",
            "  foo                      in kallsyms as foo.isra.0; traceability unknown; not in BTF; kprobe: foo is only in this kernel as foo.isra.0 (a compiler clone)",
        ]
    );
}

fn exit_at(ts: u64) -> Event {
    let mut raw = kscope_common::ProcessExitEvent {
        header: crate::decode::tests::header(kscope_common::EventKind::ProcessExit),
        ppid: 1,
        exit_status: 0,
        lifetime_ns: 0,
    };
    raw.header.timestamp_ns = ts;
    decode(&bytes_of(&raw)).unwrap()
}

fn stamps(events: &[Event]) -> Vec<u64> {
    events.iter().map(|e| e.origin().timestamp_ns).collect()
}

#[test]
fn reorder_lets_out_in_time_order_up_to_the_watermark() {
    let mut r = Reorder::new(100);
    for ts in [30, 10, 50, 20, 40] {
        r.push(exit_at(ts));
    }
    assert_eq!(stamps(&r.ready(35)), vec![10, 20, 30]);
    assert_eq!(r.len(), 2);
    assert_eq!(stamps(&r.ready(u64::MAX)), vec![40, 50]);
}

#[test]
fn reorder_is_bounded() {
    let mut r = Reorder::new(2);
    for ts in [3, 1, 2, 5] {
        r.push(exit_at(ts));
    }
    // Nothing is due yet, but only two may wait: the oldest go early.
    assert_eq!(stamps(&r.ready(0)), vec![1, 2]);
    assert_eq!(r.len(), 2);
}

#[test]
fn durations_pick_a_unit() {
    assert_eq!(human_duration(1_500), "1.5us");
    assert_eq!(human_duration(2_500_000), "2.50ms");
    assert_eq!(human_duration(3_000_000_000), "3.00s");
}

#[test]
fn spans_as_lines_and_records() {
    use crate::telemetry::resource::{int_attr, string_attr};
    use opentelemetry_proto::tonic::trace::v1::{Span, Status, span::SpanKind, status::StatusCode};
    let item = crate::export::SpanItem {
        resource: std::sync::Arc::new(crate::export::Resource {
            attributes: vec![string_attr("service.name", "nginx"), int_attr("process.pid", 42)],
            ..Default::default()
        }),
        span: Span {
            trace_id: vec![0x4b; 16],
            span_id: vec![1, 2, 3, 4, 5, 6, 7, 8],
            name: "GET /users/{id}".into(),
            kind: SpanKind::Server as i32,
            start_time_unix_nano: 3_723_004_000_000,
            end_time_unix_nano: 3_723_006_500_000,
            attributes: vec![int_attr("http.response.status_code", 503)],
            status: Some(Status { message: String::new(), code: StatusCode::Error as i32 }),
            ..Default::default()
        },
    };
    assert_eq!(
        span_line(&item),
        "01:02:03.004 span    pid=42 service=nginx server \"GET /users/{id}\" error duration=2.50ms \
         trace=4b4b4b4b4b4b4b4b4b4b4b4b4b4b4b4b span=0102030405060708 parent=-"
    );
    assert_eq!(
        serde_json::to_value(span_record(&item)).unwrap(),
        json!({
            "type": "span", "time_unix_nano": 3_723_006_500_000u64,
            "trace_id": "4b4b4b4b4b4b4b4b4b4b4b4b4b4b4b4b", "span_id": "0102030405060708", "parent_span_id": "",
            "trace_state": "", "name": "GET /users/{id}", "kind": "server",
            "start_time_unix_nano": 3_723_004_000_000u64, "end_time_unix_nano": 3_723_006_500_000u64,
            "status": "error", "status_message": "", "service_name": "nginx", "pid": 42,
            "attributes": {"http.response.status_code": 503},
        })
    );
}

/// Socket ids replaced by the order they first appear in: which records
/// they join, without the key (this process's, shared with other tests).
fn ids_by_join(mut records: Vec<Value>) -> Vec<Value> {
    let mut seen: Vec<String> = Vec::new();
    for record in &mut records {
        if let Some(id) = record.get_mut("sock_id") {
            let text = id.as_str().unwrap().to_owned();
            let index = seen.iter().position(|s| *s == text).unwrap_or_else(|| {
                seen.push(text);
                seen.len() - 1
            });
            *id = json!(index);
        }
    }
    records
}

/// The golden replays (tests/golden, which the tests crate checks against
/// the binary) through the library: the same records, field for field.
#[test]
fn replays_print_the_golden_records() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/golden");
    for name in ["dns_dig_dnsmasq", "grpc_grpcio", "http1_nginx_curl", "http2_nginx_nghttp"] {
        let bytes = std::fs::read(format!("{dir}/{name}.rec")).unwrap();
        let recording = crate::recording::Recording::parse(&bytes).unwrap();
        let sink = Sink { format: OutputFormat::Json, clock: recording.clock, data_events: false };
        let mut table = crate::conntrack::ConnTable::new(usize::MAX, u64::MAX, kscope_protocols::Privacy::default());
        let mut text = Vec::new();
        crate::recording::replay(&recording.records, &sink, &mut table, &mut text);
        let printed = serde_json::Deserializer::from_slice(&text).into_iter::<Value>().map(Result::unwrap).collect();
        let expected = std::fs::read_to_string(format!("{dir}/{name}.expected.jsonl")).unwrap();
        let expected = expected.lines().map(|line| serde_json::from_str(line).unwrap()).collect();
        assert_eq!(ids_by_join(printed), ids_by_join(expected), "{name}");
    }
}
