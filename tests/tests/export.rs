//! kscope's OTLP exporters against a real OTLP receiver (tests/src/otlp.rs),
//! over gRPC and HTTP/protobuf: what arrives is exactly what was offered,
//! grouped by resource under kscope's scope and schema; the counts add up
//! when the collector is down, refuses, throttles or rejects part of a
//! request; and export resumes by itself when the collector comes back.
//! Over TLS too: with a CA made at test time, to `localhost` and to
//! `127.0.0.1`, failing (counted, not hanging) with the wrong CA and, under
//! mTLS, without a client certificate the receiver trusts.

#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

use std::{
    collections::{BTreeSet, HashMap},
    sync::Arc,
    time::Duration,
};

use kscope::{
    export::{
        MetricsSource, SpanItem,
        otlp::{
            ExportCounts, ExportCountsSnapshot, MetricsConfig, MetricsExporter, OtlpConfig, OtlpFlags, SpanExporter,
            SpanSender, TraceConfig,
        },
    },
    telemetry::semconv::{SCHEMA_URL, SCOPE_NAME},
};
use kscope_tests::otlp::{Answer, PemDir, Protocol, Receiver, ServerTls, TestCa, wait_until};
use opentelemetry_proto::tonic::{
    common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value::Value},
    metrics::v1::{
        AggregationTemporality, Gauge, Histogram, HistogramDataPoint, Metric, NumberDataPoint, ResourceMetrics,
        ScopeMetrics, Sum, metric::Data, number_data_point,
    },
    resource::v1::Resource,
    trace::v1::{ResourceSpans, ScopeSpans, Span, Status, span::SpanKind, status::StatusCode},
};
use tokio::{runtime::Runtime, sync::watch, task::JoinHandle};

/// Generous: arrival waits never assert speed, only that it happens.
const ARRIVAL: Duration = Duration::from_secs(15);

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

fn start(protocol: Protocol) -> Receiver {
    match protocol {
        Protocol::Grpc => Receiver::start_grpc(0),
        Protocol::Http => Receiver::start_http(0),
    }
    .unwrap()
}

/// The configuration as kscope resolves it: the receiver as the generic
/// endpoint flag, the rest from `vars`.
fn resolve(receiver: &Receiver, vars: &[(&str, &str)]) -> OtlpConfig {
    resolve_at(receiver, &receiver.endpoint_url(), vars)
}

/// Likewise with the receiver at `endpoint` (another name for its host).
fn resolve_at(receiver: &Receiver, endpoint: &str, vars: &[(&str, &str)]) -> OtlpConfig {
    let vars: HashMap<String, String> = vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
    let flags = OtlpFlags {
        endpoint: Some(endpoint.to_owned()),
        protocol: Some(
            match receiver.protocol() {
                Protocol::Grpc => "grpc",
                Protocol::Http => "http/protobuf",
            }
            .to_owned(),
        ),
        ..OtlpFlags::default()
    };
    OtlpConfig::resolve(|name| vars.get(name).cloned(), &flags).unwrap().unwrap()
}

/// Spans leave in batches of `batch` (or at shutdown): the schedule delay
/// is an hour unless `vars` set it, so that a slow test machine cannot
/// split the batches the assertions count.
fn trace_config(receiver: &Receiver, batch: usize, vars: &[(&str, &str)]) -> TraceConfig {
    trace_config_at(receiver, &receiver.endpoint_url(), batch, vars)
}

fn trace_config_at(receiver: &Receiver, endpoint: &str, batch: usize, vars: &[(&str, &str)]) -> TraceConfig {
    let batch = batch.to_string();
    let mut all = vec![("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", batch.as_str()), ("OTEL_BSP_SCHEDULE_DELAY", "3600000")];
    all.extend_from_slice(vars);
    resolve_at(receiver, endpoint, &all).traces.unwrap()
}

struct Spans {
    runtime: Runtime,
    sender: Option<SpanSender>,
    task: Option<JoinHandle<()>>,
    counts: Arc<ExportCounts>,
}

impl Spans {
    fn spawn(config: TraceConfig) -> Self {
        let runtime = runtime();
        let counts = Arc::new(ExportCounts::default());
        let (sender, task) = {
            let _runtime = runtime.enter();
            SpanExporter::spawn(config, Arc::clone(&counts))
        };
        Self { runtime, sender: Some(sender), task: Some(task), counts }
    }

    fn offer(&self, resource: &Arc<Resource>, span: Span) {
        self.sender.as_ref().unwrap().offer(SpanItem { resource: Arc::clone(resource), span });
    }

    fn counts(&self) -> ExportCountsSnapshot {
        self.counts.snapshot()
    }

    fn wait(&self, what: &str, check: impl Fn(&ExportCountsSnapshot) -> bool) -> ExportCountsSnapshot {
        wait_until(ARRIVAL, || {
            let c = self.counts();
            check(&c).then_some(c)
        })
        .unwrap_or_else(|e| panic!("{what}: {e}; counts {:?}", self.counts()))
    }

    /// Drops the sender (the task flushes and ends) and waits for the end.
    fn finish(mut self) -> ExportCountsSnapshot {
        self.sender = None;
        let task = self.task.take().unwrap();
        self.runtime.block_on(async { tokio::time::timeout(Duration::from_secs(60), task).await }).unwrap().unwrap();
        self.counts()
    }
}

fn string(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue { value: Some(Value::StringValue(value.to_owned())) }),
        ..Default::default()
    }
}

fn int(key: &str, value: i64) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue { value: Some(Value::IntValue(value)) }),
        ..Default::default()
    }
}

fn resource(service: &str, pid: i64) -> Arc<Resource> {
    Arc::new(Resource {
        attributes: vec![string("service.name", service), int("process.pid", pid), string("host.name", "test-host")],
        ..Default::default()
    })
}

fn span(name: &str, i: u64) -> Span {
    let mut trace_id = vec![0xab; 16];
    trace_id[8..].copy_from_slice(&i.to_be_bytes());
    Span {
        trace_id,
        span_id: (i + 1).to_be_bytes().to_vec(),
        name: name.to_owned(),
        kind: SpanKind::Client as i32,
        start_time_unix_nano: 1_700_000_000_000_000_000 + i * 1000,
        end_time_unix_nano: 1_700_000_000_000_000_000 + i * 1000 + 250,
        attributes: vec![string("http.request.method", "GET"), int("test.index", i64::try_from(i).unwrap())],
        status: Some(Status { code: StatusCode::Ok as i32, message: String::new() }),
        ..Default::default()
    }
}

fn scope() -> InstrumentationScope {
    InstrumentationScope {
        name: SCOPE_NAME.to_owned(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        ..Default::default()
    }
}

fn resource_spans(resource: &Resource, spans: Vec<Span>) -> ResourceSpans {
    ResourceSpans {
        resource: Some(resource.clone()),
        scope_spans: vec![ScopeSpans { scope: Some(scope()), spans, schema_url: SCHEMA_URL.to_owned() }],
        schema_url: SCHEMA_URL.to_owned(),
    }
}

fn has_header(headers: &[(String, String)], name: &str, value: &str) -> bool {
    headers.iter().any(|(k, v)| k == name && v == value)
}

/// Five spans of two processes, interleaved, leave as one batch of two
/// resources, each span exactly as offered, in offer order.
fn spans_arrive(protocol: Protocol, gzip: bool) {
    let receiver = start(protocol);
    let compression = if gzip { "gzip" } else { "none" };
    let config = trace_config(
        &receiver,
        5,
        &[("OTEL_EXPORTER_OTLP_HEADERS", "x-tenant=acme%20corp"), ("OTEL_EXPORTER_OTLP_COMPRESSION", compression)],
    );
    let spans = Spans::spawn(config);
    let (a, b) = (resource("checkout", 101), resource("payments", 202));
    let offered = [
        (&a, span("GET /cart", 0)),
        (&b, span("charge", 1)),
        (&a, span("GET /item", 2)),
        (&b, span("refund", 3)),
        (&a, span("POST /buy", 4)),
    ];
    for (resource, span) in &offered {
        spans.offer(resource, span.clone());
    }
    receiver.wait_for_spans(5, ARRIVAL).unwrap();
    let counts = spans.finish();

    let traces = receiver.traces();
    assert_eq!(traces.len(), 1, "one batch of five");
    assert_eq!(
        traces[0].resource_spans,
        vec![
            resource_spans(&a, vec![span("GET /cart", 0), span("GET /item", 2), span("POST /buy", 4)]),
            resource_spans(&b, vec![span("charge", 1), span("refund", 3)]),
        ]
    );
    let headers = receiver.headers();
    assert_eq!(headers.len(), 1);
    assert!(has_header(&headers[0], "x-tenant", "acme corp"), "{headers:?}");
    if gzip {
        let encoding = match protocol {
            Protocol::Grpc => "grpc-encoding",
            Protocol::Http => "content-encoding",
        };
        assert!(has_header(&headers[0], encoding, "gzip"), "{headers:?}");
    }
    assert_eq!(
        counts,
        ExportCountsSnapshot { spans_offered: 5, spans_exported: 5, export_requests: 1, ..Default::default() }
    );
}

#[test]
fn spans_arrive_grpc() {
    spans_arrive(Protocol::Grpc, false);
}

#[test]
fn spans_arrive_http() {
    spans_arrive(Protocol::Http, false);
}

#[test]
fn spans_arrive_gzip_grpc() {
    spans_arrive(Protocol::Grpc, true);
}

#[test]
fn spans_arrive_gzip_http() {
    spans_arrive(Protocol::Http, true);
}

/// Spans still queued when the last sender is dropped are sent before the
/// task ends, without waiting for the schedule delay (an hour here).
fn shutdown_flushes(protocol: Protocol) {
    let receiver = start(protocol);
    let spans = Spans::spawn(trace_config(&receiver, 512, &[]));
    let r = resource("svc", 1);
    for i in 0..7 {
        spans.offer(&r, span(&format!("s{i}"), i));
    }
    let counts = spans.finish();
    assert_eq!(
        receiver.spans().into_iter().map(|(_, s)| s).collect::<Vec<_>>(),
        (0..7).map(|i| span(&format!("s{i}"), i)).collect::<Vec<_>>()
    );
    assert_eq!(
        counts,
        ExportCountsSnapshot { spans_offered: 7, spans_exported: 7, export_requests: 1, ..Default::default() }
    );
}

#[test]
fn shutdown_flushes_grpc() {
    shutdown_flushes(Protocol::Grpc);
}

#[test]
fn shutdown_flushes_http() {
    shutdown_flushes(Protocol::Http);
}

/// With the collector down, shutdown tries once and gives the rest up
/// rather than waiting out a timeout per batch.
fn shutdown_with_collector_down(protocol: Protocol) {
    let mut receiver = start(protocol);
    receiver.stop();
    let spans = Spans::spawn(trace_config(&receiver, 512, &[("OTEL_BSP_MAX_QUEUE_SIZE", "2000")]));
    let r = resource("svc", 1);
    for i in 0..2000 {
        spans.offer(&r, span("s", i));
    }
    let counts = spans.finish();
    assert_eq!(
        counts,
        ExportCountsSnapshot {
            spans_offered: 2000,
            spans_failed: 2000,
            export_requests: 1,
            export_failures: 1,
            ..Default::default()
        }
    );
}

#[test]
fn shutdown_with_collector_down_grpc() {
    shutdown_with_collector_down(Protocol::Grpc);
}

#[test]
fn shutdown_with_collector_down_http() {
    shutdown_with_collector_down(Protocol::Http);
}

/// The collector goes down after a first batch: 50,000 spans meet a queue
/// of 1,000. Exactly 49,000 are dropped, the queue never holds more than
/// 1,000, and once the collector is back the 1,000 arrive, then later
/// spans, all without restarting the exporter.
fn collector_down_then_back(protocol: Protocol) {
    let mut receiver = start(protocol);
    // The last spans of a burst leave after 200 ms.
    let spans = Spans::spawn(trace_config(
        &receiver,
        512,
        &[("OTEL_BSP_MAX_QUEUE_SIZE", "1000"), ("OTEL_BSP_SCHEDULE_DELAY", "200")],
    ));
    let r = resource("svc", 7);
    // A connection to lose.
    for i in 0..5 {
        spans.offer(&r, span(&format!("before{i}"), 200_000 + i));
    }
    receiver.wait_for_spans(5, ARRIVAL).unwrap();
    spans.wait("the first spans exported", |c| c.spans_exported == 5 && c.queue_depth == 0);
    receiver.stop();

    for i in 0..50_000 {
        spans.offer(&r, span(&format!("s{i}"), i));
        if i % 1000 == 0 {
            assert!(spans.counts().queue_depth <= 1000, "{:?}", spans.counts());
        }
    }
    let counts = spans.counts();
    assert_eq!(
        (counts.spans_offered, counts.spans_dropped, counts.queue_depth, counts.spans_exported, counts.spans_failed),
        (50_005, 49_000, 1000, 5, 0)
    );
    // Attempts fail and are retried while the collector is down.
    spans.wait("a retry", |c| c.retries >= 1);
    assert_eq!(spans.counts().queue_depth, 1000);

    receiver.restart().unwrap();
    spans.wait("the queued spans exported", |c| c.spans_exported == 1005);
    let names = |receiver: &Receiver| receiver.spans().into_iter().map(|(_, s)| s.name).collect::<Vec<_>>();
    let arrived = names(&receiver);
    assert_eq!(arrived.len(), 1005, "no span twice");
    assert_eq!(
        arrived[5..].iter().cloned().collect::<BTreeSet<_>>(),
        (0..1000).map(|i| format!("s{i}")).collect::<BTreeSet<_>>()
    );

    for i in 0..10 {
        spans.offer(&r, span(&format!("after{i}"), 100_000 + i));
    }
    receiver.wait_for_spans(1015, ARRIVAL).unwrap();
    let counts = spans.finish();
    let arrived = names(&receiver);
    assert_eq!(&arrived[1005..], (0..10).map(|i| format!("after{i}")).collect::<Vec<_>>());
    assert_eq!(
        (counts.spans_offered, counts.spans_exported, counts.spans_dropped, counts.spans_failed, counts.queue_depth),
        (50_015, 1015, 49_000, 0, 0)
    );
    assert_eq!(
        counts.spans_offered,
        counts.spans_exported + counts.spans_dropped + counts.spans_failed + counts.queue_depth
    );
    assert_eq!(counts.export_requests, counts.export_failures + receiver.traces().len() as u64);
    assert_eq!(counts.retries, counts.export_failures, "every failure here is retried, none given up");
}

#[test]
fn collector_down_then_back_grpc() {
    collector_down_then_back(Protocol::Grpc);
}

#[test]
fn collector_down_then_back_http() {
    collector_down_then_back(Protocol::Http);
}

/// A refusal that is not retryable (gRPC INVALID_ARGUMENT, HTTP 400) fails
/// the batch at once; the next batch goes out as usual.
fn refused_batch_fails(protocol: Protocol) {
    let receiver = start(protocol);
    receiver.answer_next([Answer::Invalid]);
    let spans = Spans::spawn(trace_config(&receiver, 5, &[]));
    let r = resource("svc", 1);
    for i in 0..5 {
        spans.offer(&r, span("refused", i));
    }
    spans.wait("the batch failed", |c| c.spans_failed == 5);
    // Sent as the last sender goes.
    for i in 0..3 {
        spans.offer(&r, span("accepted", i));
    }
    let counts = spans.finish();
    assert_eq!(receiver.refused(), 1);
    assert_eq!(
        receiver.spans().into_iter().map(|(_, s)| s).collect::<Vec<_>>(),
        (0..3).map(|i| span("accepted", i)).collect::<Vec<_>>()
    );
    assert_eq!(
        counts,
        ExportCountsSnapshot {
            spans_offered: 8,
            spans_exported: 3,
            spans_failed: 5,
            export_requests: 2,
            export_failures: 1,
            ..Default::default()
        }
    );
}

#[test]
fn refused_batch_fails_grpc() {
    refused_batch_fails(Protocol::Grpc);
}

#[test]
fn refused_batch_fails_http() {
    refused_batch_fails(Protocol::Http);
}

/// Unavailable and throttled answers are retried until accepted; the batch
/// arrives once.
fn retryable_answers_are_retried(protocol: Protocol) {
    let receiver = start(protocol);
    receiver.answer_next([Answer::Unavailable, Answer::Throttle { retry_after_secs: 1 }, Answer::Unavailable]);
    let spans = Spans::spawn(trace_config(&receiver, 5, &[]));
    let r = resource("svc", 1);
    for i in 0..5 {
        spans.offer(&r, span("s", i));
    }
    receiver.wait_for_spans(5, ARRIVAL).unwrap();
    let counts = spans.finish();
    assert_eq!((receiver.refused(), receiver.traces().len()), (3, 1));
    assert_eq!(
        receiver.spans().into_iter().map(|(_, s)| s).collect::<Vec<_>>(),
        (0..5).map(|i| span("s", i)).collect::<Vec<_>>()
    );
    assert_eq!(
        counts,
        ExportCountsSnapshot {
            spans_offered: 5,
            spans_exported: 5,
            export_requests: 4,
            export_failures: 3,
            retries: 3,
            ..Default::default()
        }
    );
}

#[test]
fn retryable_answers_are_retried_grpc() {
    retryable_answers_are_retried(Protocol::Grpc);
}

#[test]
fn retryable_answers_are_retried_http() {
    retryable_answers_are_retried(Protocol::Http);
}

/// A batch still refused after the retry time is given up (its spans
/// failed); the exporter goes on with the next.
fn gives_up_after_retry_time(protocol: Protocol) {
    let receiver = start(protocol);
    receiver.set_default_answer(Answer::Unavailable);
    let mut config = trace_config(&receiver, 5, &[]);
    config.max_retry_time = Duration::from_secs(1);
    let spans = Spans::spawn(config);
    let r = resource("svc", 1);
    for i in 0..5 {
        spans.offer(&r, span("lost", i));
    }
    let given_up = spans.wait("the batch given up", |c| c.spans_failed == 5);
    assert!(given_up.retries >= 1, "{given_up:?}");
    assert_eq!(given_up.export_requests, given_up.retries + 1);
    receiver.set_default_answer(Answer::Ok);
    for i in 0..5 {
        spans.offer(&r, span("kept", i));
    }
    receiver.wait_for_spans(5, ARRIVAL).unwrap();
    let counts = spans.finish();
    assert_eq!(
        receiver.spans().into_iter().map(|(_, s)| s).collect::<Vec<_>>(),
        (0..5).map(|i| span("kept", i)).collect::<Vec<_>>()
    );
    assert_eq!((counts.spans_offered, counts.spans_exported, counts.spans_failed, counts.queue_depth), (10, 5, 5, 0));
}

#[test]
fn gives_up_after_retry_time_grpc() {
    gives_up_after_retry_time(Protocol::Grpc);
}

#[test]
fn gives_up_after_retry_time_http() {
    gives_up_after_retry_time(Protocol::Http);
}

/// Spans a collector rejects in a partial success count as failed.
fn partial_success(protocol: Protocol) {
    let receiver = start(protocol);
    receiver.answer_next([Answer::PartialReject(2)]);
    let spans = Spans::spawn(trace_config(&receiver, 5, &[]));
    let r = resource("svc", 1);
    for i in 0..5 {
        spans.offer(&r, span("s", i));
    }
    receiver.wait_for_spans(5, ARRIVAL).unwrap();
    let counts = spans.finish();
    assert_eq!(
        counts,
        ExportCountsSnapshot {
            spans_offered: 5,
            spans_exported: 3,
            spans_failed: 2,
            export_requests: 1,
            ..Default::default()
        }
    );
}

#[test]
fn partial_success_grpc() {
    partial_success(Protocol::Grpc);
}

#[test]
fn partial_success_http() {
    partial_success(Protocol::Http);
}

fn number(value: i64, attrs: Vec<KeyValue>) -> NumberDataPoint {
    NumberDataPoint {
        attributes: attrs,
        start_time_unix_nano: 1_700_000_000_000_000_000,
        time_unix_nano: 1_700_000_060_000_000_000,
        value: Some(number_data_point::Value::AsInt(value)),
        ..Default::default()
    }
}

/// Two processes: a gauge of 2 points and a sum of 3 for one, a histogram
/// of 1 for the other: 6 data points an export.
fn metrics_fixture() -> Vec<ResourceMetrics> {
    let scope_metrics =
        |metrics| vec![ScopeMetrics { scope: Some(scope()), metrics, schema_url: SCHEMA_URL.to_owned() }];
    vec![
        ResourceMetrics {
            resource: Some((*resource("checkout", 101)).clone()),
            scope_metrics: scope_metrics(vec![
                Metric {
                    name: "process.open_connections".to_owned(),
                    unit: "{connection}".to_owned(),
                    data: Some(Data::Gauge(Gauge {
                        data_points: vec![
                            number(3, vec![string("network.transport", "tcp")]),
                            number(1, vec![string("network.transport", "udp")]),
                        ],
                    })),
                    ..Default::default()
                },
                Metric {
                    name: "http.client.requests".to_owned(),
                    unit: "{request}".to_owned(),
                    data: Some(Data::Sum(Sum {
                        data_points: vec![
                            number(10, vec![string("http.response.status_code", "200")]),
                            number(2, vec![string("http.response.status_code", "404")]),
                            number(1, vec![string("http.response.status_code", "500")]),
                        ],
                        aggregation_temporality: AggregationTemporality::Cumulative as i32,
                        is_monotonic: true,
                    })),
                    ..Default::default()
                },
            ]),
            schema_url: SCHEMA_URL.to_owned(),
        },
        ResourceMetrics {
            resource: Some((*resource("payments", 202)).clone()),
            scope_metrics: scope_metrics(vec![Metric {
                name: "http.server.request.duration".to_owned(),
                unit: "s".to_owned(),
                data: Some(Data::Histogram(Histogram {
                    data_points: vec![HistogramDataPoint {
                        start_time_unix_nano: 1_700_000_000_000_000_000,
                        time_unix_nano: 1_700_000_060_000_000_000,
                        count: 4,
                        sum: Some(0.5),
                        bucket_counts: vec![1, 2, 1],
                        explicit_bounds: vec![0.1, 0.2],
                        ..Default::default()
                    }],
                    aggregation_temporality: AggregationTemporality::Cumulative as i32,
                })),
                ..Default::default()
            }]),
            schema_url: SCHEMA_URL.to_owned(),
        },
    ]
}

fn metrics_config(receiver: &Receiver) -> MetricsConfig {
    resolve(
        receiver,
        &[("OTEL_METRIC_EXPORT_INTERVAL", "300"), ("OTEL_EXPORTER_OTLP_METRICS_HEADERS", "x-signal=metrics")],
    )
    .metrics
    .unwrap()
}

/// The source's metrics leave at each interval, exactly, and once more on
/// stop; the data points are counted.
fn metrics_export(protocol: Protocol) {
    let receiver = start(protocol);
    let runtime = runtime();
    let counts = Arc::new(ExportCounts::default());
    let source: MetricsSource = Arc::new(metrics_fixture);
    let (stop, stop_rx) = watch::channel(false);
    let task = {
        let _runtime = runtime.enter();
        MetricsExporter::spawn(metrics_config(&receiver), source, Arc::clone(&counts), stop_rx)
    };
    let before_stop = receiver.wait_for_metrics(3, ARRIVAL).unwrap().len();
    stop.send(true).unwrap();
    runtime.block_on(async { tokio::time::timeout(Duration::from_secs(30), task).await }).unwrap().unwrap();

    let requests = receiver.metrics();
    assert!(requests.len() > before_stop, "one more export on stop");
    for request in &requests {
        assert_eq!(request.resource_metrics, metrics_fixture());
    }
    assert!(receiver.headers().iter().all(|h| has_header(h, "x-signal", "metrics")));
    let n = requests.len() as u64;
    assert_eq!(
        counts.snapshot(),
        ExportCountsSnapshot { metric_points_exported: 6 * n, export_requests: n, ..Default::default() }
    );
}

#[test]
fn metrics_export_grpc() {
    metrics_export(Protocol::Grpc);
}

#[test]
fn metrics_export_http() {
    metrics_export(Protocol::Http);
}

/// Data points a collector rejects count as failed; a refused export
/// fails all of its points.
fn metrics_failures(protocol: Protocol) {
    let receiver = start(protocol);
    receiver.answer_next([Answer::PartialReject(4), Answer::Invalid]);
    let runtime = runtime();
    let counts = Arc::new(ExportCounts::default());
    let (stop, stop_rx) = watch::channel(false);
    let task = {
        let _runtime = runtime.enter();
        MetricsExporter::spawn(metrics_config(&receiver), Arc::new(metrics_fixture), Arc::clone(&counts), stop_rx)
    };
    // The partial success, the refusal, then one accepted.
    receiver.wait_for_metrics(2, ARRIVAL).unwrap();
    drop(stop);
    runtime.block_on(async { tokio::time::timeout(Duration::from_secs(30), task).await }).unwrap().unwrap();
    let accepted = receiver.metrics().len() as u64;
    assert_eq!(receiver.refused(), 1);
    assert_eq!(
        counts.snapshot(),
        ExportCountsSnapshot {
            metric_points_exported: 6 * accepted - 4,
            metric_points_failed: 4 + 6,
            export_requests: accepted + 1,
            export_failures: 1,
            ..Default::default()
        }
    );
}

#[test]
fn metrics_failures_grpc() {
    metrics_failures(Protocol::Grpc);
}

#[test]
fn metrics_failures_http() {
    metrics_failures(Protocol::Http);
}

/// The receiver itself: 404 off the OTLP paths, 400 on a body that is not
/// OTLP, refused connections once stopped.
#[test]
fn receiver_http_errors_and_stop() {
    use std::{
        io::{Read as _, Write as _},
        net::TcpStream,
    };
    let mut receiver = start(Protocol::Http);
    let addr = receiver.addr();
    let request = |path: &str, body: &[u8]| {
        let mut stream = TcpStream::connect(addr).unwrap();
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes()).unwrap();
        stream.write_all(body).unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        response.lines().next().unwrap_or_default().to_owned()
    };
    assert_eq!(request("/v1/logs", b""), "HTTP/1.1 404 Not Found");
    assert_eq!(request("/v1/traces", b"\xff\xff\xff"), "HTTP/1.1 400 Bad Request");
    assert_eq!(request("/v1/traces", b""), "HTTP/1.1 200 OK", "an empty request is a valid one");
    assert_eq!(receiver.traces().len(), 1);
    receiver.stop();
    assert!(TcpStream::connect(addr).is_err(), "stopped means refused");
    receiver.restart().unwrap();
    assert_eq!(request("/v1/metrics", b""), "HTTP/1.1 200 OK");
    assert_eq!((receiver.traces().len(), receiver.metrics().len()), (1, 1));
}

/// A test CA, its certificate in a PEM file, and a receiver over TLS with a
/// certificate it issued for `localhost` and `127.0.0.1`; under `mtls` the
/// receiver requires a client certificate the CA signed.
struct Tls {
    ca: TestCa,
    dir: PemDir,
    ca_file: String,
    receiver: Receiver,
}

impl Tls {
    fn start(protocol: Protocol, mtls: bool) -> Self {
        let ca = TestCa::new("kscope test CA").unwrap();
        let dir = PemDir::new().unwrap();
        let ca_file = dir.write("ca.pem", &ca.pem()).unwrap();
        let server =
            ServerTls { identity: ca.server(&["localhost", "127.0.0.1"]).unwrap(), client_ca: mtls.then(|| ca.der()) };
        let receiver = Receiver::start_tls(protocol, 0, &server).unwrap();
        Self { ca, dir, ca_file, receiver }
    }

    /// A client identity `ca` signed, as PEM files: (key, certificate).
    fn client_files(&self, ca: &TestCa, name: &str) -> (String, String) {
        let identity = ca.client("kscope").unwrap();
        (
            self.dir.write(&format!("{name}-key.pem"), &identity.key_pem).unwrap(),
            self.dir.write(&format!("{name}-cert.pem"), &identity.certificate_pem).unwrap(),
        )
    }
}

/// Offers `n` spans named `name` (indices from `first`) and waits for the
/// exporter to end; the spans and the counts.
fn export_spans(config: TraceConfig, name: &str, first: u64, n: u64) -> (Vec<Span>, ExportCountsSnapshot) {
    let spans = Spans::spawn(config);
    let r = resource("svc", 1);
    let offered: Vec<Span> = (first..first + n).map(|i| span(name, i)).collect();
    for s in &offered {
        spans.offer(&r, s.clone());
    }
    (offered, spans.finish())
}

fn exported(n: u64) -> ExportCountsSnapshot {
    ExportCountsSnapshot { spans_offered: n, spans_exported: n, export_requests: 1, ..Default::default() }
}

/// Retried for a second, then given up: every span failed, none dropped,
/// every attempt a failure.
fn assert_failed(counts: &ExportCountsSnapshot, n: u64) {
    assert_eq!(
        (counts.spans_offered, counts.spans_exported, counts.spans_failed, counts.spans_dropped, counts.queue_depth),
        (n, 0, n, 0, 0),
        "{counts:?}"
    );
    assert!(counts.export_requests >= 1, "{counts:?}");
    assert_eq!(counts.export_failures, counts.export_requests, "{counts:?}");
    assert_eq!(counts.retries + 1, counts.export_requests, "{counts:?}");
}

/// Spans reach a TLS receiver at `https://localhost:PORT` and at
/// `https://127.0.0.1:PORT`, trusting the test CA through the generic and
/// then the per-signal variable; exactly as offered.
fn tls_spans_arrive(protocol: Protocol) {
    let tls = Tls::start(protocol, false);
    let receiver = &tls.receiver;
    let r = resource("svc", 1);
    let hosts =
        [("localhost", "OTEL_EXPORTER_OTLP_CERTIFICATE"), ("127.0.0.1", "OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE")];
    for (i, (host, variable)) in hosts.into_iter().enumerate() {
        let endpoint = receiver.url_for(host);
        assert!(endpoint.starts_with("https://"), "{endpoint}");
        let config = trace_config_at(receiver, &endpoint, 3, &[(variable, &tls.ca_file)]);
        let (offered, counts) = export_spans(config, host, 3 * i as u64, 3);
        assert_eq!(counts, exported(3), "{host}");
        let traces = receiver.traces();
        assert_eq!(traces.len(), i + 1, "{host}");
        assert_eq!(traces[i].resource_spans, vec![resource_spans(&r, offered)], "{host}");
    }
    assert_eq!(receiver.tls_failures(), 0);
}

#[test]
fn tls_spans_arrive_grpc() {
    tls_spans_arrive(Protocol::Grpc);
}

#[test]
fn tls_spans_arrive_http() {
    tls_spans_arrive(Protocol::Http);
}

/// A receiver whose CA kscope does not trust (another CA named, or only
/// the system's roots): each batch is retried, then counted failed.
fn tls_untrusted_receiver_fails(protocol: Protocol) {
    let tls = Tls::start(protocol, false);
    let other = TestCa::new("another CA").unwrap();
    let other_file = tls.dir.write("other-ca.pem", &other.pem()).unwrap();
    for vars in [&[("OTEL_EXPORTER_OTLP_CERTIFICATE", other_file.as_str())][..], &[]] {
        let mut config = trace_config_at(&tls.receiver, &tls.receiver.url_for("localhost"), 5, vars);
        config.max_retry_time = Duration::from_secs(1);
        let (_, counts) = export_spans(config, "untrusted", 0, 5);
        assert_failed(&counts, 5);
    }
    assert!(tls.receiver.spans().is_empty());
    // The receiver counts a refused handshake on its own task, after the
    // client has already given up: wait for it rather than race it.
    let failures = kscope_tests::otlp::wait_until(Duration::from_secs(10), || {
        let n = tls.receiver.tls_failures();
        (n >= 2).then_some(n)
    });
    assert!(failures.is_ok(), "{} refused handshakes seen", tls.receiver.tls_failures());
}

#[test]
fn tls_untrusted_receiver_fails_grpc() {
    tls_untrusted_receiver_fails(Protocol::Grpc);
}

#[test]
fn tls_untrusted_receiver_fails_http() {
    tls_untrusted_receiver_fails(Protocol::Http);
}

/// A receiver that requires a client certificate its CA signed: without
/// one, or with one of another CA, exports fail; with one, they arrive.
fn mtls(protocol: Protocol) {
    let tls = Tls::start(protocol, true);
    let receiver = &tls.receiver;
    let endpoint = receiver.url_for("localhost");
    let ca = ("OTEL_EXPORTER_OTLP_CERTIFICATE", tls.ca_file.as_str());

    let (stranger_key, stranger_cert) = tls.client_files(&TestCa::new("stranger CA").unwrap(), "stranger");
    let refused: [&[(&str, &str)]; 2] = [
        &[ca],
        &[
            ca,
            ("OTEL_EXPORTER_OTLP_CLIENT_KEY", &stranger_key),
            ("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", &stranger_cert),
        ],
    ];
    for vars in refused {
        let mut config = trace_config_at(receiver, &endpoint, 5, vars);
        config.max_retry_time = Duration::from_secs(1);
        let (_, counts) = export_spans(config, "refused", 0, 5);
        assert_failed(&counts, 5);
    }
    assert!(receiver.spans().is_empty());
    assert!(receiver.tls_failures() >= 2, "{}", receiver.tls_failures());

    let (key, cert) = tls.client_files(&tls.ca, "kscope");
    let vars =
        [ca, ("OTEL_EXPORTER_OTLP_TRACES_CLIENT_KEY", &key), ("OTEL_EXPORTER_OTLP_TRACES_CLIENT_CERTIFICATE", &cert)];
    let (offered, counts) = export_spans(trace_config_at(receiver, &endpoint, 5, &vars), "accepted", 0, 5);
    assert_eq!(counts, exported(5));
    assert_eq!(receiver.traces().len(), 1);
    assert_eq!(receiver.traces()[0].resource_spans, vec![resource_spans(&resource("svc", 1), offered)]);
}

#[test]
fn mtls_grpc() {
    mtls(Protocol::Grpc);
}

#[test]
fn mtls_http() {
    mtls(Protocol::Http);
}

/// Metrics take the same TLS road: over mTLS to `127.0.0.1`, exactly.
fn tls_metrics_export(protocol: Protocol) {
    let tls = Tls::start(protocol, true);
    let (key, cert) = tls.client_files(&tls.ca, "kscope");
    let config = resolve(
        &tls.receiver,
        &[
            ("OTEL_METRIC_EXPORT_INTERVAL", "300"),
            ("OTEL_EXPORTER_OTLP_METRICS_CERTIFICATE", &tls.ca_file),
            ("OTEL_EXPORTER_OTLP_CLIENT_KEY", &key),
            ("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", &cert),
        ],
    )
    .metrics
    .unwrap();
    assert!(config.export.endpoint.starts_with("https://127.0.0.1:"), "{}", config.export.endpoint);
    let runtime = runtime();
    let counts = Arc::new(ExportCounts::default());
    let (stop, stop_rx) = watch::channel(false);
    let task = {
        let _runtime = runtime.enter();
        MetricsExporter::spawn(config, Arc::new(metrics_fixture), Arc::clone(&counts), stop_rx)
    };
    tls.receiver.wait_for_metrics(1, ARRIVAL).unwrap();
    stop.send(true).unwrap();
    runtime.block_on(async { tokio::time::timeout(Duration::from_secs(30), task).await }).unwrap().unwrap();
    let requests = tls.receiver.metrics();
    for request in &requests {
        assert_eq!(request.resource_metrics, metrics_fixture());
    }
    let n = requests.len() as u64;
    assert_eq!(
        counts.snapshot(),
        ExportCountsSnapshot { metric_points_exported: 6 * n, export_requests: n, ..Default::default() }
    );
    assert_eq!(tls.receiver.tls_failures(), 0);
}

#[test]
fn tls_metrics_export_grpc() {
    tls_metrics_export(Protocol::Grpc);
}

#[test]
fn tls_metrics_export_http() {
    tls_metrics_export(Protocol::Http);
}
