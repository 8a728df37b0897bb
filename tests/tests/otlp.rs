//! kscope's OTLP and Prometheus output on the host kernel, against real
//! servers and clients (nginx and curl, grpcio, dnsmasq and dig) and a real
//! OTLP receiver (tests/src/otlp.rs): span names, kinds, attributes and
//! parent links; histogram counts equal to the requests sent; `/metrics`
//! accepted by promtool; the collector down under load, then back.

#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

use std::{collections::HashMap, io::Write as _, process::Command, sync::Mutex, thread, time::Duration};

use kscope_schema::{ExportSummary, StatsRecord};
use kscope_tests::{
    agent::{Finished, KscopeRun},
    checks::check_ledger,
    dns::{self, Dnsmasq},
    grpc::{GrpcServer, grpc_client},
    nginx::{Nginx, NginxOptions, free_port},
    otlp::Receiver,
    records::{self, json},
};
use opentelemetry_proto::tonic::{
    collector::metrics::v1::ExportMetricsServiceRequest,
    common::v1::{KeyValue, any_value::Value},
    metrics::v1::metric::Data,
    resource::v1::Resource,
    trace::v1::{Span, span::SpanKind, status::StatusCode},
};

static KERNEL: Mutex<()> = Mutex::new(());

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_ID: &str = "00f067aa0ba902b7";

fn traceparent() -> String {
    format!("00-{TRACE_ID}-{PARENT_ID}-01")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn attr<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a Value> {
    attrs.iter().find(|kv| kv.key == key).and_then(|kv| kv.value.as_ref()?.value.as_ref())
}

fn s(v: &str) -> Value {
    Value::StringValue(v.into())
}

fn int(v: i64) -> Value {
    Value::IntValue(v)
}

fn pid_of(resource: &Resource) -> i64 {
    match attr(&resource.attributes, "process.pid") {
        Some(Value::IntValue(p)) => *p,
        _ => -1,
    }
}

/// Spans of process `pid` whose attribute `key` is `value`.
fn spans_where<'a>(spans: &'a [(Resource, Span)], pid: u32, key: &str, value: &Value) -> Vec<&'a (Resource, Span)> {
    spans.iter().filter(|(r, s)| pid_of(r) == i64::from(pid) && attr(&s.attributes, key) == Some(value)).collect()
}

fn one<'a>(found: Vec<&'a (Resource, Span)>, what: &str) -> &'a (Resource, Span) {
    assert_eq!(found.len(), 1, "{what}: {found:#?}");
    found[0]
}

/// Data-point counts of histogram `name` per process, summed over attribute sets
/// (from the last export: metrics are cumulative).
fn histogram_counts(requests: &[ExportMetricsServiceRequest], name: &str) -> HashMap<i64, u64> {
    let mut counts = HashMap::new();
    let Some(last) = requests.last() else { return counts };
    for rm in &last.resource_metrics {
        let pid = rm.resource.as_ref().map_or(-1, pid_of);
        for m in rm.scope_metrics.iter().flat_map(|s| &s.metrics).filter(|m| m.name == name) {
            if let Some(Data::Histogram(h)) = &m.data {
                *counts.entry(pid).or_default() += h.data_points.iter().map(|p| p.count).sum::<u64>();
            }
        }
    }
    counts
}

fn stop(kscope: KscopeRun) -> Finished {
    thread::sleep(Duration::from_millis(500));
    let finished = kscope.stop().expect("kscope stops");
    assert_eq!(finished.exit_code, Some(0), "stderr: {}", finished.stderr);
    let summary = finished.summary().expect("summary");
    check_ledger(summary).unwrap();
    check_export_ledger(export_of(summary));
    finished
}

/// What the summary says the telemetry stage and the exporters did.
fn export_of(summary: &StatsRecord) -> &ExportSummary {
    summary.export.as_ref().unwrap_or_else(|| panic!("no export counts in the summary: {}", json(summary)))
}

/// Every span made is exported, dropped, failed or still queued.
fn check_export_ledger(export: &ExportSummary) {
    let otlp = &export.otlp;
    let shown = json(export);
    assert_eq!(export.spans.released, otlp.spans_offered, "{shown}");
    assert_eq!(
        otlp.spans_offered,
        otlp.spans_exported + otlp.spans_dropped + otlp.spans_failed + otlp.queue_depth,
        "{shown}"
    );
    assert_eq!(export.spans_waiting, 0, "{shown}");
}

fn curl(args: &[&str]) -> u32 {
    let child = Command::new("curl").args(["-s", "-o", "/dev/null"]).args(args).spawn().expect("curl");
    let pid = child.id();
    assert!(child.wait_with_output().expect("curl runs").status.success());
    pid
}

#[test]
fn http_spans_links_and_histograms_reach_a_grpc_collector() {
    let _kernel = KERNEL.lock().unwrap_or_else(|e| e.into_inner());
    let receiver = Receiver::start_grpc(0).unwrap();
    let nginx = Nginx::start_with(&std::env::temp_dir(), "hello\n", NginxOptions::default()).unwrap();
    let endpoint = receiver.endpoint_url();
    let kscope = KscopeRun::start(&[
        "--otlp-endpoint",
        &endpoint,
        "--otlp-protocol",
        "grpc",
        "--otlp-metric-export-interval",
        "1",
        "--spans",
    ])
    .unwrap();
    let base = format!("http://127.0.0.1:{}", nginx.port);
    let tp = traceparent();
    let traced = curl(&["-H", &format!("traceparent: {tp}"), &format!("{base}/index.html")]);
    let plain = curl(&[&format!("{base}/users/123")]);
    let finished = stop(kscope);
    let worker = nginx.worker_pids()[0] as u32;
    let spans = receiver.wait_for_spans(4, Duration::from_secs(10)).unwrap();

    // With a traceparent: both ends join the caller's trace as its children.
    for (pid, kind) in [(worker, SpanKind::Server), (traced, SpanKind::Client)] {
        let (resource, span) = one(spans_where(&spans, pid, "http.response.status_code", &int(200)), "traced request");
        assert_eq!(span.name, "GET /index.html");
        assert_eq!(span.kind, kind as i32);
        assert_eq!((hex(&span.trace_id), hex(&span.parent_span_id)), (TRACE_ID.into(), PARENT_ID.into()));
        assert_eq!(span.flags & 0x300, 0x300, "remote parent");
        let name = if kind == SpanKind::Server { "nginx" } else { "curl" };
        assert_eq!(attr(&resource.attributes, "service.name"), Some(&s(name)));
        assert_eq!(attr(&resource.attributes, "process.executable.name"), Some(&s(name)));
        assert_eq!(attr(&span.attributes, "http.request.method"), Some(&s("GET")));
        assert_eq!(attr(&span.attributes, "server.port"), Some(&int(i64::from(nginx.port))));
        assert_eq!(attr(&span.attributes, "network.protocol.version"), Some(&s("1.1")));
        assert_eq!(span.status.as_ref().map(|s| s.code), Some(StatusCode::Unset as i32));
    }
    // Without: curl's span starts a trace and nginx's (the other end of the
    // connection) is its child.
    let (_, client) = one(spans_where(&spans, plain, "http.response.status_code", &int(404)), "plain client");
    let (_, server) = one(spans_where(&spans, worker, "http.response.status_code", &int(404)), "plain server");
    assert_eq!(client.name, "GET /users/{id}");
    assert_eq!(server.name, "GET /users/{id}");
    assert_eq!(server.kind, SpanKind::Server as i32);
    assert!(client.parent_span_id.is_empty());
    assert_eq!(server.trace_id, client.trace_id);
    assert_eq!(server.parent_span_id, client.span_id);
    assert_ne!(hex(&client.trace_id), TRACE_ID);
    assert_eq!(attr(&server.attributes, "url.path"), Some(&s("/users/123")));
    assert_eq!(attr(&server.attributes, "http.route"), Some(&s("/users/{id}")));
    // 404: an error for the client, not for the server.
    assert_eq!(client.status.as_ref().map(|s| s.code), Some(StatusCode::Error as i32));
    assert_eq!(attr(&client.attributes, "error.type"), Some(&s("404")));
    assert_eq!(server.status.as_ref().map(|s| s.code), Some(StatusCode::Unset as i32));
    assert_eq!(attr(&server.attributes, "error.type"), None);

    // Histogram counts equal the requests each process made or served.
    let metrics = receiver.metrics();
    let server_counts = histogram_counts(&metrics, "http.server.request.duration");
    assert_eq!(server_counts.get(&i64::from(worker)), Some(&2), "{server_counts:?}");
    let client_counts = histogram_counts(&metrics, "http.client.request.duration");
    assert_eq!(client_counts.get(&i64::from(traced)), Some(&1), "{client_counts:?}");
    assert_eq!(client_counts.get(&i64::from(plain)), Some(&1), "{client_counts:?}");
    let export = export_of(finished.summary().unwrap());
    assert!(export.otlp.spans_exported >= 4, "{}", json(export));
    assert_eq!(export.spans.remote_parent, 2, "{}", json(export));
    assert_eq!(export.spans.same_host_client, 1, "{}", json(export));
    // `--spans` printed the very spans that were exported.
    let printed: Vec<(String, String, String)> = records::spans(&finished.records)
        .map(|r| (r.trace_id.to_string(), r.span_id.to_string(), r.name.to_string()))
        .collect();
    for (_, span) in spans.iter().filter(|(r, _)| [worker, traced, plain].iter().any(|p| pid_of(r) == i64::from(*p))) {
        let id = (hex(&span.trace_id), hex(&span.span_id), span.name.clone());
        assert!(printed.contains(&id), "{id:?} not among the printed spans {printed:?}");
    }
    // Schema URL and scope on what arrived.
    let traces = receiver.traces();
    let rs = &traces[0].resource_spans[0];
    assert_eq!(rs.schema_url, "https://opentelemetry.io/schemas/1.27.0");
    assert_eq!(rs.scope_spans[0].scope.as_ref().map(|s| s.name.as_str()), Some("kscope"));
}

#[test]
fn grpc_and_dns_spans_over_otlp_http() {
    let _kernel = KERNEL.lock().unwrap_or_else(|e| e.into_inner());
    let receiver = Receiver::start_http(0).unwrap();
    let grpc = GrpcServer::start().unwrap();
    let dnsmasq = Dnsmasq::start(&std::env::temp_dir()).unwrap();
    let endpoint = receiver.endpoint_url();
    let kscope = KscopeRun::start(&["--otlp-endpoint", &endpoint, "--otlp-metric-export-interval", "1"]).unwrap();
    let tp = traceparent();
    let run = grpc_client(&grpc.target(), &["Say:hello", "Fail"], &[("traceparent", &tp)]).unwrap();
    assert!(run.status.success(), "{}", run.stderr);
    let found = dnsmasq.dig(dns::WWW, "A", false).unwrap();
    let missing = dnsmasq.dig(dns::MISSING, "A", false).unwrap();
    stop(kscope);
    let spans = receiver.wait_for_spans(8, Duration::from_secs(10)).unwrap();

    for (method, code) in [("Say", 0), ("Fail", 5)] {
        let (_, server) = one(spans_where(&spans, grpc.pid(), "rpc.method", &s(method)), "grpc server span");
        let (_, client) = one(spans_where(&spans, run.pid, "rpc.method", &s(method)), "grpc client span");
        for span in [server, client] {
            assert_eq!(span.name, format!("kscope.test.Echo/{method}"));
            assert_eq!(attr(&span.attributes, "rpc.system"), Some(&s("grpc")));
            assert_eq!(attr(&span.attributes, "rpc.service"), Some(&s("kscope.test.Echo")));
            assert_eq!(attr(&span.attributes, "rpc.grpc.status_code"), Some(&int(code)));
            assert_eq!((hex(&span.trace_id), hex(&span.parent_span_id)), (TRACE_ID.into(), PARENT_ID.into()));
        }
        assert_eq!(server.kind, SpanKind::Server as i32);
        assert_eq!(client.kind, SpanKind::Client as i32);
        // NOT_FOUND is a client error only, by the conventions.
        let client_status = if code == 0 { StatusCode::Unset } else { StatusCode::Error };
        assert_eq!(client.status.as_ref().map(|s| s.code), Some(client_status as i32));
        assert_eq!(server.status.as_ref().map(|s| s.code), Some(StatusCode::Unset as i32));
    }
    for (answer, name, error) in [(&found, dns::WWW, None), (&missing, dns::MISSING, Some(s("host_not_found")))] {
        let (resource, span) = one(spans_where(&spans, answer.pid, "dns.question.name", &s(name)), "dig span");
        assert_eq!(span.name, "DNS A");
        assert_eq!(span.kind, SpanKind::Client as i32);
        assert_eq!(attr(&resource.attributes, "service.name"), Some(&s("dig")));
        assert_eq!(attr(&span.attributes, "error.type"), error.as_ref());
        assert_eq!(attr(&span.attributes, "network.transport"), Some(&s("udp")));
        let rcode = if error.is_some() { "NXDOMAIN" } else { "NOERROR" };
        assert_eq!(attr(&span.attributes, "kscope.dns.response_code"), Some(&s(rcode)));
        // dnsmasq's end of the same query is its child.
        let (_, server) = one(spans_where(&spans, dnsmasq.pid(), "dns.question.name", &s(name)), "dnsmasq span");
        assert_eq!(server.kind, SpanKind::Server as i32);
        assert_eq!(
            (server.trace_id.clone(), server.parent_span_id.clone()),
            (span.trace_id.clone(), span.span_id.clone())
        );
    }
    let metrics = receiver.metrics();
    assert_eq!(histogram_counts(&metrics, "rpc.server.call.duration").get(&i64::from(grpc.pid())), Some(&2));
    assert_eq!(histogram_counts(&metrics, "rpc.client.call.duration").get(&i64::from(run.pid)), Some(&2));
    let lookups = histogram_counts(&metrics, "dns.lookup.duration");
    assert_eq!((lookups.get(&i64::from(found.pid)), lookups.get(&i64::from(missing.pid))), (Some(&1), Some(&1)));
}

fn scrape(port: u16) -> (String, String) {
    kscope_tests::agent::scrape_metrics(port).unwrap()
}

#[test]
fn prometheus_metrics_count_requests_and_pass_promtool() {
    let _kernel = KERNEL.lock().unwrap_or_else(|e| e.into_inner());
    let nginx = Nginx::start_with(&std::env::temp_dir(), "hello\n", NginxOptions::default()).unwrap();
    let port = free_port().unwrap();
    let listen = format!("127.0.0.1:{port}");
    let kscope = KscopeRun::start(&["--prometheus-listen", &listen]).unwrap();
    let base = format!("http://127.0.0.1:{}", nginx.port);
    for path in ["/index.html", "/a/1", "/a/2"] {
        curl(&[&format!("{base}{path}")]);
    }
    thread::sleep(Duration::from_millis(1500));
    let (status, body) = scrape(port);
    stop(kscope);
    assert_eq!(status, "HTTP/1.1 200 OK");
    let worker = nginx.worker_pids()[0];
    let count = |route: &str, code: u16| -> Option<u64> {
        body.lines().find_map(|line| {
            let rest = line.strip_prefix("http_server_request_duration_seconds_count{")?;
            let ok = rest.contains(&format!("http_route=\"{route}\""))
                && rest.contains(&format!("http_response_status_code=\"{code}\""))
                && rest.contains("job=\"nginx\"");
            ok.then(|| line.rsplit(' ').next()?.parse().ok()).flatten()
        })
    };
    assert_eq!(count("/index.html", 200), Some(1), "{body}");
    assert_eq!(count("/a/{id}", 404), Some(2), "{body}");
    assert!(body.contains(&format!("process_pid=\"{worker}\"")), "target_info names the worker: {body}");
    assert!(body.contains("# TYPE kscope_sensor_events_total counter"), "{body}");
    assert!(body.contains("kscope_sensor_hook_form{"), "{body}");
    for stage in ["events", "export", "linking"] {
        let series = format!("kscope_stage=\"{stage}\"");
        assert!(body.lines().any(|l| l.starts_with("kscope_queue_depth{") && l.contains(&series)), "{stage}: {body}");
    }
    let hook_form =
        body.lines().find(|l| l.starts_with("kscope_sensor_hook_form{") && l.contains("kscope_sensor=\"tcp\""));
    assert!(hook_form.is_some_and(|l| l.contains("kscope_hook_form=\"tracepoint\"") && l.ends_with(" 1")), "{body}");
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool (cargo xtask setup installs it)");
    promtool.stdin.take().unwrap().write_all(body.as_bytes()).unwrap();
    let out = promtool.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

#[test]
fn collector_down_under_load_drops_counted_spans_then_export_resumes() {
    let _kernel = KERNEL.lock().unwrap_or_else(|e| e.into_inner());
    let mut receiver = Receiver::start_grpc(0).unwrap();
    let nginx = Nginx::start_with(&std::env::temp_dir(), "hello\n", NginxOptions::default()).unwrap();
    let endpoint = receiver.endpoint_url();
    let kscope =
        KscopeRun::start(&["--otlp-endpoint", &endpoint, "--otlp-protocol", "grpc", "--otlp-queue-size", "500"])
            .unwrap();
    let pid = kscope.pid();
    receiver.stop();
    let base = format!("http://127.0.0.1:{}", nginx.port);
    let rss_before = rss_kib(pid);
    let mut rss_peak = rss_before;
    // Well over the queue's 500 spans: 4 rounds of 400 requests, two spans each.
    for round in 0..4 {
        let urls: Vec<String> = (0..400).map(|i| format!("{base}/load/{round}/{i}")).collect();
        let mut cmd = Command::new("curl");
        cmd.arg("-s");
        for url in &urls {
            cmd.args(["-o", "/dev/null", url]);
        }
        assert!(cmd.status().unwrap().success());
        rss_peak = rss_peak.max(rss_kib(pid));
    }
    thread::sleep(Duration::from_secs(2));
    rss_peak = rss_peak.max(rss_kib(pid));
    receiver.restart().unwrap();
    // What the queue held arrives first (retried with backoff); a span made
    // after that finds room again.
    receiver.wait_for_spans(500, Duration::from_secs(40)).unwrap();
    let marker = curl(&[&format!("{base}/after-restart")]);
    // Export resumes by itself: the marker's span arrives while kscope runs.
    let arrived = kscope_tests::otlp::wait_until(Duration::from_secs(40), || {
        let spans = receiver.spans();
        spans
            .iter()
            .any(|(r, s)| pid_of(r) == i64::from(marker) && s.name.starts_with("GET /after-restart"))
            .then_some(())
    });
    let finished = stop(kscope);
    let received = receiver.spans();
    let names: Vec<(i64, &str)> = received.iter().rev().take(5).map(|(r, s)| (pid_of(r), s.name.as_str())).collect();
    arrived.unwrap_or_else(|e| {
        panic!(
            "{e}: marker {marker}, {} spans received, last {names:?}; summary {}",
            received.len(),
            json(&finished.summary().unwrap().export)
        )
    });
    let otlp = export_of(finished.summary().unwrap()).otlp;
    let (dropped, failed) = (otlp.spans_dropped, otlp.spans_failed);
    let otlp = json(&otlp);
    assert!(dropped + failed >= 3200 - 500, "most of 3,200 spans beyond the queue are dropped or failed: {otlp}");
    assert!(dropped > 0, "{otlp}");
    // Bounded: a 500-span queue, not 3,200 spans, whatever the allocator keeps.
    eprintln!("kscope RSS: {rss_before} KiB before, {rss_peak} KiB at most while the collector was down; {otlp}");
    assert!(rss_peak < rss_before + 64 * 1024, "RSS grew from {rss_before} to {rss_peak} KiB");
}
