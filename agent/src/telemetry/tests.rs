//! The telemetry stage on built exchange records: span content, links, metrics.

use std::net::{IpAddr, Ipv4Addr};

use kscope_common::HookFormId;
use kscope_protocols::{Detail, DnsDetail, Exchange, ExchangeKind, GrpcDetail, HttpDetail, Role, Transport};
use opentelemetry_proto::tonic::{
    common::v1::{KeyValue, any_value::Value},
    metrics::v1::metric::Data,
    trace::v1::{span::SpanKind, status::StatusCode},
};

use super::*;
use crate::decode::Origin;

const NGINX: u32 = 100;
const APP: u32 = 200;
const CURL: u32 = 300;
const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

fn ip(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, last))
}

fn telemetry() -> Telemetry {
    let opts = TelemetryOptions {
        proc_root: PathBuf::from("/nonexistent-proc"),
        link_waits: LinkWaits { peer_ns: 1_000, enclosing_ns: 10_000, capacity: 100 },
        ..TelemetryOptions::default()
    };
    Telemetry::new(opts, Clock::from_offset(1_000_000_000_000), IdGenerator::seeded(7))
}

fn http(role: Role, pid: u32, tid: u32, target: &str, status: Option<u32>, (start, end): (u64, u64)) -> ExchangeRecord {
    ExchangeRecord {
        exchange: Exchange {
            kind: ExchangeKind::Http1,
            role,
            method: Some("GET".into()),
            target: target.into(),
            status,
            start_ns: start,
            end_ns: end,
            request_bytes: 80,
            response_bytes: 200,
            peer: None,
            partial: None,
            detail: Detail::Http(HttpDetail {
                version: "1.1".into(),
                host: Some("shop.test:8080".into()),
                ..Default::default()
            }),
        },
        origin: Origin {
            hook_form: HookFormId::Tracepoint,
            pid,
            tid,
            timestamp_ns: end,
            cgroup_id: 1,
            comm: if pid == NGINX { "nginx" } else { "app" }.into(),
        },
        sock_id: 1,
        transport: Transport::Tcp,
        local: (ip(1), 8080),
        peer: (ip(2), 40000),
        tcp_retransmits: 0,
    }
}

/// The client end of `server`'s connection.
fn client_of(server: &ExchangeRecord, pid: u32, (start, end): (u64, u64)) -> ExchangeRecord {
    let mut c = http(Role::Client, pid, pid, &server.exchange.target, server.exchange.status, (start, end));
    c.local = server.peer;
    c.peer = server.local;
    c
}

fn get<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a Value> {
    attrs.iter().find(|kv| kv.key == key).and_then(|kv| kv.value.as_ref()?.value.as_ref())
}

fn s(v: &str) -> Value {
    Value::StringValue(v.into())
}

fn drain(t: &mut Telemetry, now: u64) -> Vec<SpanItem> {
    let mut out = Vec::new();
    t.release(now, &mut out);
    out
}

fn by_name<'a>(spans: &'a [SpanItem], name: &str, kind: SpanKind) -> &'a Span {
    &spans.iter().find(|s| s.span.name == name && s.span.kind == kind as i32).expect("span present").span
}

#[test]
fn a_server_span_with_a_traceparent_joins_that_trace() {
    let mut t = telemetry();
    let mut record = http(Role::Server, NGINX, NGINX, "/users/123?token=x", Some(200), (1_000, 3_000));
    if let Detail::Http(h) = &mut record.exchange.detail {
        h.traceparent = Some(TRACEPARENT.into());
        h.tracestate = Some("rojo=1".into());
    }
    t.on_exchange(&record);
    let spans = drain(&mut t, 3_000);
    assert_eq!(spans.len(), 1);
    let span = &spans[0].span;
    assert_eq!(span.name, "GET /users/{id}");
    assert_eq!(span.kind, SpanKind::Server as i32);
    assert_eq!(trace_context::hex(&span.trace_id), "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(trace_context::hex(&span.parent_span_id), "00f067aa0ba902b7");
    assert_eq!(span.trace_state, "rojo=1");
    assert_eq!(span.flags, 0x301);
    assert_eq!(span.span_id.len(), 8);
    assert_eq!((span.start_time_unix_nano, span.end_time_unix_nano), (1_000_000_001_000, 1_000_000_003_000));
    assert_eq!(span.status.as_ref().map(|s| s.code), Some(StatusCode::Unset as i32));
    let a = &span.attributes;
    assert_eq!(get(a, "http.request.method"), Some(&s("GET")));
    assert_eq!(get(a, "url.path"), Some(&s("/users/123")));
    assert_eq!(get(a, "url.query"), Some(&s("token=x")));
    assert_eq!(get(a, "url.scheme"), Some(&s("http")));
    assert_eq!(get(a, "http.route"), Some(&s("/users/{id}")));
    assert_eq!(get(a, "http.response.status_code"), Some(&Value::IntValue(200)));
    assert_eq!(get(a, "server.address"), Some(&s("shop.test")));
    assert_eq!(get(a, "server.port"), Some(&Value::IntValue(8080)));
    assert_eq!(get(a, "client.address"), Some(&s("127.0.0.2")));
    assert_eq!(get(a, "network.peer.address"), Some(&s("127.0.0.2")));
    assert_eq!(get(a, "network.peer.port"), Some(&Value::IntValue(40000)));
    assert_eq!(get(a, "network.protocol.version"), Some(&s("1.1")));
    assert_eq!(get(a, "error.type"), None);
    assert_eq!(t.link_counts().remote_parent, 1);
}

#[test]
fn a_call_made_while_serving_is_the_server_spans_child() {
    let mut t = telemetry();
    let inbound = http(Role::Server, APP, 201, "/checkout", Some(502), (1_000, 9_000));
    let mut outbound = http(Role::Client, APP, 201, "/stock/42", Some(503), (2_000, 5_000));
    outbound.local = (ip(1), 50000);
    outbound.peer = (ip(9), 9000);
    t.on_event(&Event::Tcp(crate::decode::TcpConnEvent {
        origin: inbound.origin.clone(),
        step: TcpStep::Accept,
        sock_id: 1,
        role: Some(TcpRole::Server),
        local: inbound.local,
        remote: inbound.peer,
        never_established: false,
        bytes_sent: 0,
        bytes_received: 0,
        duration_ns: 0,
    }));
    t.on_exchange(&outbound);
    // The client span waits for the request its thread is serving.
    assert!(drain(&mut t, 5_000).is_empty());
    t.on_exchange(&inbound);
    let spans = drain(&mut t, 9_000 + 1_000);
    assert_eq!(spans.len(), 2);
    let server = by_name(&spans, "GET /checkout", SpanKind::Server);
    let client = by_name(&spans, "GET /stock/{id}", SpanKind::Client);
    assert_eq!(client.trace_id, server.trace_id);
    assert_eq!(client.parent_span_id, server.span_id);
    assert!(server.parent_span_id.is_empty());
    assert_eq!(server.status.as_ref().map(|s| s.code), Some(StatusCode::Error as i32));
    assert_eq!(get(&server.attributes, "error.type"), Some(&s("502")));
    assert_eq!(get(&client.attributes, "error.type"), Some(&s("503")));
    assert_eq!(get(&client.attributes, "url.full"), Some(&s("http://shop.test:8080/stock/42")));
    assert_eq!(t.link_counts().enclosing_server, 1);
}

#[test]
fn both_ends_of_a_local_connection_share_one_trace() {
    let mut t = telemetry();
    let server = http(Role::Server, NGINX, NGINX, "/", Some(200), (2_000, 3_000));
    let client = client_of(&server, CURL, (1_500, 3_500));
    t.on_exchange(&server);
    // The server waits (briefly) for its client.
    assert!(drain(&mut t, 3_100).is_empty());
    t.on_exchange(&client);
    let spans = drain(&mut t, 3_500);
    assert_eq!(spans.len(), 2);
    let s_span = by_name(&spans, "GET /", SpanKind::Server);
    let c_span = by_name(&spans, "GET /", SpanKind::Client);
    assert_eq!(s_span.trace_id, c_span.trace_id);
    assert_eq!(s_span.parent_span_id, c_span.span_id);
    assert!(c_span.parent_span_id.is_empty());
    assert_eq!(t.link_counts().same_host_client, 1);
}

#[test]
fn a_server_end_completing_after_its_client_still_joins_its_trace() {
    let mut t = telemetry();
    // The server's write returned after the client's read: timestamps from
    // two CPUs overlap rather than nest.
    let server = http(Role::Server, NGINX, NGINX, "/", Some(200), (2_000, 3_600));
    let client = client_of(&server, CURL, (1_500, 3_500));
    let earlier = client_of(&http(Role::Server, NGINX, NGINX, "/", Some(200), (500, 900)), CURL, (400, 1_000));
    t.on_exchange(&earlier);
    t.on_exchange(&client);
    let first = drain(&mut t, 3_500);
    assert_eq!(first.len(), 2, "curl never served: its spans go at once");
    t.on_exchange(&server);
    let spans = drain(&mut t, 3_600);
    assert_eq!(spans.len(), 1);
    let c_span = &first[1].span;
    assert_eq!(spans[0].span.trace_id, c_span.trace_id);
    assert_eq!(spans[0].span.parent_span_id, c_span.span_id);
    assert_eq!(t.link_counts().same_host_client, 1);
}

#[test]
fn a_client_whose_send_returned_after_the_answer_still_joins_its_trace() {
    let mut t = telemetry();
    // The client's sendmsg delivered the request, then its thread was
    // preempted: the server received, answered and returned before the
    // client's send did.
    let server = http(Role::Server, NGINX, NGINX, "/", Some(200), (2_000, 2_400));
    let client = client_of(&server, CURL, (2_500, 2_600));
    // A later request on the same connection is not this server span's client.
    let later = client_of(&server, CURL, (2_700, 2_900));
    t.on_exchange(&server);
    t.on_exchange(&client);
    t.on_exchange(&later);
    let spans = drain(&mut t, 2_900);
    assert_eq!(spans.len(), 3);
    let s_span = by_name(&spans, "GET /", SpanKind::Server);
    let clients = spans.iter().map(|s| &s.span).filter(|s| s.kind == SpanKind::Client as i32);
    let c_span = clients.min_by_key(|s| s.start_time_unix_nano).unwrap();
    assert_eq!(s_span.trace_id, c_span.trace_id);
    assert_eq!(s_span.parent_span_id, c_span.span_id);
    assert_eq!(t.link_counts().same_host_client, 1);
}

#[test]
fn unmatched_spans_start_traces_when_their_wait_ends() {
    let mut t = telemetry();
    let server = http(Role::Server, NGINX, NGINX, "/", Some(200), (2_000, 3_000));
    t.on_exchange(&server);
    assert!(drain(&mut t, 3_999).is_empty());
    let spans = drain(&mut t, 4_000);
    assert_eq!(spans.len(), 1);
    assert!(spans[0].span.parent_span_id.is_empty());
    assert_eq!(spans[0].span.trace_id.len(), 16);
    // A client of a process that never served is released at once.
    let client = http(Role::Client, CURL, CURL, "/", Some(200), (5_000, 6_000));
    t.on_exchange(&client);
    assert_eq!(drain(&mut t, 6_000).len(), 1);
    assert_eq!(t.link_counts().roots, 2);
}

#[test]
fn waiting_spans_are_bounded() {
    let mut t = telemetry();
    for i in 0..150u64 {
        t.on_exchange(&http(Role::Server, NGINX, NGINX, "/", Some(200), (i * 10, i * 10 + 5)));
    }
    let spans = drain(&mut t, 0);
    assert_eq!(spans.len(), 50);
    assert_eq!(t.waiting_spans(), 100);
    assert_eq!(t.link_counts().released_early, 50);
    let mut rest = Vec::new();
    t.finish(&mut rest);
    assert_eq!(rest.len(), 100);
}

fn grpc(role: Role, status: u32) -> ExchangeRecord {
    let mut r = http(role, APP, APP, "kscope.test.Echo/Say", Some(status), (1_000, 2_000));
    r.exchange.kind = ExchangeKind::Grpc;
    r.exchange.method = None;
    r.exchange.detail = Detail::Grpc(GrpcDetail {
        service: "kscope.test.Echo".into(),
        method: "Say".into(),
        authority: Some("127.0.0.1:50051".into()),
        grpc_message: Some("no such key".into()),
        stream_id: 1,
        request_messages: 1,
        response_messages: 0,
        ..Default::default()
    });
    r
}

#[test]
fn grpc_status_follows_the_conventions_per_side() {
    let mut t = telemetry();
    t.on_exchange(&grpc(Role::Server, 5));
    t.on_exchange(&grpc(Role::Client, 5));
    let mut spans = Vec::new();
    t.finish(&mut spans);
    let server = by_name(&spans, "kscope.test.Echo/Say", SpanKind::Server);
    let client = by_name(&spans, "kscope.test.Echo/Say", SpanKind::Client);
    assert_eq!(server.status.as_ref().map(|s| s.code), Some(StatusCode::Unset as i32));
    let status = client.status.as_ref().unwrap();
    assert_eq!((status.code, status.message.as_str()), (StatusCode::Error as i32, "no such key"));
    for span in [server, client] {
        assert_eq!(get(&span.attributes, "rpc.system"), Some(&s("grpc")));
        assert_eq!(get(&span.attributes, "rpc.service"), Some(&s("kscope.test.Echo")));
        assert_eq!(get(&span.attributes, "rpc.method"), Some(&s("Say")));
        assert_eq!(get(&span.attributes, "rpc.grpc.status_code"), Some(&Value::IntValue(5)));
        assert_eq!(get(&span.attributes, "server.address"), Some(&s("127.0.0.1")));
        assert_eq!(get(&span.attributes, "server.port"), Some(&Value::IntValue(50051)));
    }
    let metrics = t.metric_store().lock().unwrap().snapshot(0);
    let names: Vec<_> = metrics[0].scope_metrics[0].metrics.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, ["rpc.client.call.duration", "rpc.server.call.duration"]);
}

#[test]
fn a_failed_lookup_and_its_metric() {
    let mut t = telemetry();
    let mut r = http(Role::Client, CURL, CURL, "nope.kscope.test", Some(3), (1_000, 2_000_001_000));
    r.transport = Transport::Udp;
    r.peer = (ip(53), 53);
    r.exchange.kind = ExchangeKind::Dns;
    r.exchange.method = None;
    r.exchange.detail = Detail::Dns(DnsDetail {
        id: 7,
        qtype: "AAAA".into(),
        rcode: Some("NXDOMAIN".into()),
        answer_count: 0,
        addresses: Vec::new(),
    });
    t.on_exchange(&r);
    let spans = drain(&mut t, 3_000_000_000);
    let span = by_name(&spans, "DNS AAAA", SpanKind::Client);
    assert_eq!(get(&span.attributes, "dns.question.name"), Some(&s("nope.kscope.test")));
    assert_eq!(get(&span.attributes, "kscope.dns.question.type"), Some(&s("AAAA")));
    assert_eq!(get(&span.attributes, "kscope.dns.response_code"), Some(&s("NXDOMAIN")));
    assert_eq!(get(&span.attributes, "error.type"), Some(&s("host_not_found")));
    assert_eq!(get(&span.attributes, "network.transport"), Some(&s("udp")));
    assert_eq!(get(&span.attributes, "server.port"), Some(&Value::IntValue(53)));
    let metrics = t.metric_store().lock().unwrap().snapshot(0);
    let metric = &metrics[0].scope_metrics[0].metrics[0];
    assert_eq!((metric.name.as_str(), metric.unit.as_str()), ("dns.lookup.duration", "s"));
    let Some(Data::Histogram(h)) = &metric.data else { panic!("not a histogram") };
    assert_eq!(h.data_points[0].count, 1);
    assert_eq!(h.data_points[0].sum, Some(2.0));
    assert_eq!(get(&h.data_points[0].attributes, "error.type"), Some(&s("host_not_found")));
}

#[test]
fn http_histograms_count_each_request_under_its_route() {
    let mut t = telemetry();
    for (i, path) in ["/users/1", "/users/2", "/users/3", "/health"].iter().enumerate() {
        let i = i as u64;
        t.on_exchange(&http(Role::Server, NGINX, NGINX, path, Some(200), (i * 100, i * 100 + 50)));
    }
    let metrics = t.metric_store().lock().unwrap().snapshot(0);
    let metric = &metrics[0].scope_metrics[0].metrics[0];
    assert_eq!(metric.name, "http.server.request.duration");
    let Some(Data::Histogram(h)) = &metric.data else { panic!("not a histogram") };
    let counts: Vec<_> = h.data_points.iter().map(|p| (get(&p.attributes, "http.route").cloned(), p.count)).collect();
    assert_eq!(counts, [(Some(s("/health")), 1), (Some(s("/users/{id}")), 3)]);
}

fn retransmit(pid: u32, comm: &str, state: u32) -> Event {
    Event::Retransmit(crate::decode::Retransmit {
        origin: Origin {
            hook_form: HookFormId::Tracepoint,
            pid,
            tid: pid,
            timestamp_ns: 5_000,
            cgroup_id: 0,
            comm: comm.into(),
        },
        sock_id: 1,
        state,
        local: (ip(1), 40000),
        remote: (ip(2), 8080),
        stack: vec![1, 2],
        frames: Vec::new(),
    })
}

/// Counter values of `name` per (service.name, state attribute).
fn retransmit_counts(t: &Telemetry) -> Vec<(String, String, u64)> {
    use opentelemetry_proto::tonic::metrics::v1::number_data_point;
    let mut out = Vec::new();
    for rm in t.metric_store().lock().unwrap().snapshot(0) {
        let service = rm.resource.as_ref().and_then(|r| get(&r.attributes, "service.name").cloned());
        for metric in rm.scope_metrics.iter().flat_map(|s| &s.metrics).filter(|m| m.name == "kscope.tcp.retransmits") {
            let Some(Data::Sum(sum)) = &metric.data else { panic!("not a sum") };
            assert!(sum.is_monotonic);
            for p in &sum.data_points {
                let Some(number_data_point::Value::AsInt(v)) = p.value else { panic!("not an int") };
                let state = get(&p.attributes, "kscope.tcp.state").cloned();
                let text = |v: Option<Value>| match v {
                    Some(Value::StringValue(s)) => s,
                    other => format!("{other:?}"),
                };
                out.push((text(service.clone()), text(state), v as u64));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn retransmits_count_on_the_owners_resource_or_kscopes() {
    let mut t = telemetry();
    t.on_event(&retransmit(CURL, "curl", 1));
    t.on_event(&retransmit(CURL, "curl", 1));
    t.on_event(&retransmit(CURL, "curl", 2));
    // Opened before kscope started: no owner known.
    t.on_event(&retransmit(0, "", 4));
    assert_eq!(
        retransmit_counts(&t),
        [
            ("curl".to_owned(), "ESTABLISHED".to_owned(), 2),
            ("curl".to_owned(), "SYN_SENT".to_owned(), 1),
            ("kscope".to_owned(), "FIN_WAIT1".to_owned(), 1),
        ]
    );
}
