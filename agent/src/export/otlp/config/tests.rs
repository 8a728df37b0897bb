use std::{collections::HashMap, time::Duration};

use super::*;
use crate::export::otlp::tls::testing::{Ca, Leaf, TempDir};

fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + use<> {
    let map: HashMap<String, String> = vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
    move |name| map.get(name).cloned()
}

fn resolve(vars: &[(&str, &str)], flags: &OtlpFlags) -> Result<Option<OtlpConfig>, ConfigError> {
    OtlpConfig::resolve(env(vars), flags)
}

fn config(vars: &[(&str, &str)]) -> OtlpConfig {
    resolve(vars, &OtlpFlags::default()).unwrap().unwrap()
}

fn traces(vars: &[(&str, &str)]) -> TraceConfig {
    config(vars).traces.unwrap()
}

fn metrics(vars: &[(&str, &str)]) -> MetricsConfig {
    config(vars).metrics.unwrap()
}

fn error(vars: &[(&str, &str)]) -> ConfigError {
    resolve(vars, &OtlpFlags::default()).unwrap_err()
}

fn err(name: &str, value: &str, reason: &str) -> ConfigError {
    ConfigError { name: name.to_owned(), value: value.to_owned(), reason: reason.to_owned() }
}

fn http(endpoint: &str) -> SignalConfig {
    SignalConfig {
        endpoint: endpoint.to_owned(),
        protocol: Protocol::HttpProtobuf,
        headers: Vec::new(),
        timeout: Duration::from_secs(10),
        compression: Compression::None,
        tls: None,
    }
}

/// An `https://` endpoint trusting the system's roots.
fn https(endpoint: &str) -> SignalConfig {
    SignalConfig { tls: Some(TlsConfig::default()), ..http(endpoint) }
}

fn grpc(endpoint: &str) -> SignalConfig {
    SignalConfig { protocol: Protocol::Grpc, ..http(endpoint) }
}

fn headers(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}

#[test]
fn export_is_off_without_an_endpoint() {
    assert_eq!(resolve(&[], &OtlpFlags::default()), Ok(None));
    // Settings without an endpoint do not turn it on, nor are they checked.
    assert_eq!(resolve(&[(PROTOCOL, "grpc"), (TIMEOUT, "oops")], &OtlpFlags::default()), Ok(None));
    // An empty variable is unset.
    assert_eq!(resolve(&[(ENDPOINT, ""), (ENDPOINT, " ")], &OtlpFlags::default()), Ok(None));
}

#[test]
fn export_generic_http_endpoint_gets_signal_paths_and_defaults() {
    assert_eq!(
        config(&[(ENDPOINT, "http://collector:4318")]),
        OtlpConfig {
            traces: Some(TraceConfig {
                export: http("http://collector:4318/v1/traces"),
                max_queue_size: 16_384,
                max_export_batch_size: 512,
                schedule_delay: Duration::from_millis(1000),
                max_retry_time: Duration::from_secs(30),
            }),
            metrics: Some(MetricsConfig {
                export: http("http://collector:4318/v1/metrics"),
                interval: Duration::from_millis(60_000),
            }),
        }
    );
}

#[test]
fn export_generic_http_endpoint_trailing_slash_and_path() {
    assert_eq!(traces(&[(ENDPOINT, "http://c:4318/")]).export.endpoint, "http://c:4318/v1/traces");
    assert_eq!(traces(&[(ENDPOINT, "http://c:4318/otlp")]).export.endpoint, "http://c:4318/otlp/v1/traces");
    assert_eq!(metrics(&[(ENDPOINT, "http://c:4318/otlp/")]).export.endpoint, "http://c:4318/otlp/v1/metrics");
    assert_eq!(traces(&[(ENDPOINT, "  http://[::1]:4318  ")]).export.endpoint, "http://[::1]:4318/v1/traces");
}

#[test]
fn export_per_signal_endpoint_is_used_as_is_and_wins() {
    let c = config(&[
        (ENDPOINT, "http://generic:4318"),
        ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://traces:9999/custom"),
    ]);
    assert_eq!(c.traces.unwrap().export.endpoint, "http://traces:9999/custom");
    assert_eq!(c.metrics.unwrap().export.endpoint, "http://generic:4318/v1/metrics");

    let c = config(&[("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "http://m:1")]);
    assert_eq!(c.metrics.unwrap().export.endpoint, "http://m:1");
}

#[test]
fn export_a_signal_without_endpoint_gets_the_default_one() {
    // One per-signal endpoint turns export on; the other signal goes to the
    // spec's default collector unless turned off.
    let c = config(&[("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://t:4318/v1/traces")]);
    assert_eq!(c.metrics.unwrap().export.endpoint, "http://localhost:4318/v1/metrics");
    let c = config(&[("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://t:4317"), (PROTOCOL, "grpc")]);
    assert_eq!(c.traces.unwrap().export, grpc("http://t:4317"));
    assert_eq!(c.metrics.unwrap().export, grpc("http://localhost:4317"));
}

#[test]
fn export_grpc_endpoint_is_the_base() {
    let c = config(&[(ENDPOINT, "http://collector:4317"), (PROTOCOL, "grpc")]);
    assert_eq!(c.traces.unwrap().export, grpc("http://collector:4317"));
    assert_eq!(c.metrics.unwrap().export, grpc("http://collector:4317"));
}

#[test]
fn export_per_signal_protocol_wins() {
    let c = config(&[
        (ENDPOINT, "http://c:4317"),
        (PROTOCOL, "grpc"),
        ("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", "http/protobuf"),
    ]);
    assert_eq!(c.traces.unwrap().export, grpc("http://c:4317"));
    assert_eq!(c.metrics.unwrap().export, http("http://c:4317/v1/metrics"));
}

#[test]
fn export_protocol_errors() {
    let e = error(&[(ENDPOINT, "http://c:4318"), (PROTOCOL, "http/json")]);
    assert_eq!(e, err(PROTOCOL, "http/json", "http/json is not supported; use http/protobuf or grpc"));
    assert_eq!(
        e.to_string(),
        r#"OTEL_EXPORTER_OTLP_PROTOCOL="http/json": http/json is not supported; use http/protobuf or grpc"#
    );
    assert_eq!(
        error(&[(ENDPOINT, "http://c:4318"), ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "thrift")]),
        err("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "thrift", "expected grpc or http/protobuf")
    );
}

#[test]
fn export_endpoint_errors() {
    assert_eq!(
        error(&[(ENDPOINT, "localhost:4317")]),
        err(ENDPOINT, "localhost:4317", "expected a URL with a scheme, such as http://localhost:4318")
    );
    assert_eq!(error(&[(ENDPOINT, "ftp://c")]), err(ENDPOINT, "ftp://c", "the scheme must be http or https"));
    assert_eq!(error(&[(ENDPOINT, "not a url")]), err(ENDPOINT, "not a url", "not a URL"));
    assert_eq!(
        error(&[(ENDPOINT, "http://c:4318/?a=b")]),
        err(ENDPOINT, "http://c:4318/?a=b", "a query string is not supported")
    );
    assert_eq!(
        error(&[("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "grpc://m")]),
        err("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "grpc://m", "the scheme must be http or https")
    );
    // Only gRPC takes an endpoint without a scheme.
    assert_eq!(
        error(&[("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "c:4318"), ("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", "grpc")]),
        err(
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "c:4318",
            "expected a URL with a scheme, such as http://localhost:4318"
        )
    );
}

#[test]
fn export_headers_are_parsed_lowercased_and_percent_decoded() {
    let t = traces(&[(ENDPOINT, "http://c:4318"), (HEADERS, "api-key=s3cr%3Dt, X-Tenant = a%20b ,,k=%C3%A9")]);
    assert_eq!(t.export.headers, headers(&[("api-key", "s3cr=t"), ("x-tenant", "a b"), ("k", "é")]));
    // Per signal replaces the generic list.
    let c = config(&[(ENDPOINT, "http://c:4318"), (HEADERS, "a=1,b=2"), ("OTEL_EXPORTER_OTLP_METRICS_HEADERS", "m=3")]);
    assert_eq!(c.traces.unwrap().export.headers, headers(&[("a", "1"), ("b", "2")]));
    assert_eq!(c.metrics.unwrap().export.headers, headers(&[("m", "3")]));
}

#[test]
fn export_header_errors() {
    let e = |h: &str| error(&[(ENDPOINT, "http://c:4318"), (HEADERS, h)]);
    assert_eq!(e("a=1,b"), err(HEADERS, "a=1,b", r#""b" is not key=value"#));
    assert_eq!(e("=v"), err(HEADERS, "=v", r#""=v" has an empty key"#));
    assert_eq!(e("a=%zz"), err(HEADERS, "a=%zz", r#""a=%zz": `%` not followed by two hex digits"#));
    assert_eq!(e("a=%2"), err(HEADERS, "a=%2", r#""a=%2": `%` not followed by two hex digits"#));
    assert_eq!(e("a=%FF"), err(HEADERS, "a=%FF", r#""a=%FF": percent-decodes to invalid UTF-8"#));
    assert_eq!(e("a b=1"), err(HEADERS, "a b=1", r#""a b" is not a valid header name"#));
    assert_eq!(e("a=x%0Ay"), err(HEADERS, "a=x%0Ay", "the value of a is not a valid header value"));
}

#[test]
fn export_timeout_and_compression() {
    let c = config(&[
        (ENDPOINT, "http://c:4318"),
        (TIMEOUT, "2500"),
        ("OTEL_EXPORTER_OTLP_METRICS_TIMEOUT", "700"),
        (COMPRESSION, "gzip"),
        ("OTEL_EXPORTER_OTLP_TRACES_COMPRESSION", "none"),
    ]);
    let (t, m) = (c.traces.unwrap().export, c.metrics.unwrap().export);
    assert_eq!((t.timeout, t.compression), (Duration::from_millis(2500), Compression::None));
    assert_eq!((m.timeout, m.compression), (Duration::from_millis(700), Compression::Gzip));

    let e = |k: &str, v: &str| error(&[(ENDPOINT, "http://c:4318"), (k, v)]);
    assert_eq!(e(TIMEOUT, "10s"), err(TIMEOUT, "10s", "expected a whole number of milliseconds"));
    assert_eq!(e(TIMEOUT, "-1"), err(TIMEOUT, "-1", "expected a whole number of milliseconds"));
    assert_eq!(e(TIMEOUT, "0"), err(TIMEOUT, "0", "must be more than 0 ms"));
    assert_eq!(e(COMPRESSION, "zstd"), err(COMPRESSION, "zstd", "expected gzip or none"));
}

#[test]
fn export_metric_interval_and_batch_settings() {
    let c = config(&[
        (ENDPOINT, "http://c:4318"),
        (METRIC_EXPORT_INTERVAL, "15000"),
        (BSP_MAX_QUEUE_SIZE, "4096"),
        (BSP_MAX_EXPORT_BATCH_SIZE, "256"),
        (BSP_SCHEDULE_DELAY, "0"),
    ]);
    assert_eq!(c.metrics.unwrap().interval, Duration::from_secs(15));
    let t = c.traces.unwrap();
    assert_eq!((t.max_queue_size, t.max_export_batch_size, t.schedule_delay), (4096, 256, Duration::ZERO));

    // A queue smaller than the default batch shrinks the batch with it.
    let t = traces(&[(ENDPOINT, "http://c:4318"), (BSP_MAX_QUEUE_SIZE, "100")]);
    assert_eq!((t.max_queue_size, t.max_export_batch_size), (100, 100));

    let e = |vars: &[(&str, &str)]| error(&[&[(ENDPOINT, "http://c:4318")], vars].concat());
    assert_eq!(
        e(&[(BSP_MAX_QUEUE_SIZE, "100"), (BSP_MAX_EXPORT_BATCH_SIZE, "200")]),
        err(BSP_MAX_EXPORT_BATCH_SIZE, "200", "larger than the queue (100 spans)")
    );
    assert_eq!(e(&[(BSP_MAX_QUEUE_SIZE, "0")]), err(BSP_MAX_QUEUE_SIZE, "0", "must be more than 0"));
    assert_eq!(e(&[(BSP_MAX_QUEUE_SIZE, "lots")]), err(BSP_MAX_QUEUE_SIZE, "lots", "expected a whole number"));
    assert_eq!(
        e(&[(BSP_SCHEDULE_DELAY, "1.5")]),
        err(BSP_SCHEDULE_DELAY, "1.5", "expected a whole number of milliseconds")
    );
    assert_eq!(e(&[(METRIC_EXPORT_INTERVAL, "0")]), err(METRIC_EXPORT_INTERVAL, "0", "must be more than 0 ms"));
}

#[test]
fn export_signals_turned_off() {
    let c = config(&[(ENDPOINT, "http://c:4318"), (TRACES_EXPORTER, "none")]);
    assert_eq!(c.traces, None);
    assert_eq!(c.metrics.unwrap().export.endpoint, "http://c:4318/v1/metrics");
    let c = config(&[(ENDPOINT, "http://c:4318"), (METRICS_EXPORTER, "none"), (TRACES_EXPORTER, "otlp")]);
    assert_eq!((c.traces.is_some(), c.metrics), (true, None));
    // Settings of a signal that is off are not checked.
    assert!(
        config(&[(ENDPOINT, "http://c:4318"), (METRICS_EXPORTER, "none"), (METRIC_EXPORT_INTERVAL, "x")])
            .metrics
            .is_none()
    );
    assert_eq!(
        resolve(
            &[(ENDPOINT, "http://c:4318"), (TRACES_EXPORTER, "none"), (METRICS_EXPORTER, "none")],
            &OtlpFlags::default()
        ),
        Ok(None)
    );
    assert_eq!(
        error(&[(ENDPOINT, "http://c:4318"), (TRACES_EXPORTER, "otlp,zipkin")]),
        err(TRACES_EXPORTER, "otlp,zipkin", r#"kscope exports with otlp (or none), not "zipkin""#)
    );
}

#[test]
fn export_flags_win_over_env() {
    let vars = [
        (ENDPOINT, "http://env:4318"),
        ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://env-traces:4318/v1/traces"),
        (PROTOCOL, "http/protobuf"),
        (HEADERS, "from=env"),
        (TIMEOUT, "1000"),
        (METRIC_EXPORT_INTERVAL, "1000"),
        (BSP_MAX_QUEUE_SIZE, "10"),
    ];
    let flags = OtlpFlags {
        endpoint: Some("http://flag:4317".to_owned()),
        protocol: Some("grpc".to_owned()),
        headers: vec!["a=1".to_owned(), "b=x%20y".to_owned()],
        timeout: Some(Duration::from_secs(3)),
        traces_endpoint: None,
        metrics_endpoint: None,
        metric_export_interval: Some(Duration::from_secs(5)),
        queue_size: Some(1000),
        certificate: None,
        client_key: None,
        client_certificate: None,
    };
    let c = resolve(&vars, &flags).unwrap().unwrap();
    let expected = SignalConfig {
        headers: headers(&[("a", "1"), ("b", "x y")]),
        timeout: Duration::from_secs(3),
        ..grpc("http://flag:4317")
    };
    let t = c.traces.unwrap();
    // The generic flag wins over the per-signal variable too.
    assert_eq!(t.export, expected);
    assert_eq!((t.max_queue_size, t.max_export_batch_size), (1000, 512));
    let m = c.metrics.unwrap();
    assert_eq!((m.export, m.interval), (expected, Duration::from_secs(5)));

    // Per-signal flags are used as is; the generic flag alone turns export on.
    let flags = OtlpFlags {
        endpoint: Some("http://flag:4318".to_owned()),
        traces_endpoint: Some("http://t:1/x".to_owned()),
        ..OtlpFlags::default()
    };
    let c = resolve(&[], &flags).unwrap().unwrap();
    assert_eq!(c.traces.unwrap().export.endpoint, "http://t:1/x");
    assert_eq!(c.metrics.unwrap().export.endpoint, "http://flag:4318/v1/metrics");
    let flags = OtlpFlags { metrics_endpoint: Some("http://m:2".to_owned()), ..OtlpFlags::default() };
    assert_eq!(resolve(&[], &flags).unwrap().unwrap().metrics.unwrap().export.endpoint, "http://m:2");
}

#[test]
fn export_flag_errors_name_the_flag() {
    let with = |flags: OtlpFlags| {
        resolve(&[], &OtlpFlags { endpoint: Some("http://c:4318".to_owned()), ..flags }).unwrap_err()
    };
    assert_eq!(
        with(OtlpFlags { timeout: Some(Duration::ZERO), ..OtlpFlags::default() }),
        err("--otlp-timeout", "0ns", "must be more than zero")
    );
    assert_eq!(
        with(OtlpFlags { headers: vec!["novalue".to_owned()], ..OtlpFlags::default() }),
        err("--otlp-header", "novalue", r#""novalue" is not key=value"#)
    );
    assert_eq!(
        with(OtlpFlags { protocol: Some("http/json".to_owned()), ..OtlpFlags::default() }),
        err("--otlp-protocol", "http/json", "http/json is not supported; use http/protobuf or grpc")
    );
    assert_eq!(
        with(OtlpFlags { queue_size: Some(0), ..OtlpFlags::default() }),
        err("--otlp-queue-size", "0", "must be more than 0")
    );
    assert_eq!(
        with(OtlpFlags { metric_export_interval: Some(Duration::ZERO), ..OtlpFlags::default() }),
        err("--otlp-metric-export-interval", "0ns", "must be more than zero")
    );
    assert_eq!(
        resolve(&[], &OtlpFlags { traces_endpoint: Some("ftp://t".to_owned()), ..OtlpFlags::default() }),
        Err(err("--otlp-traces-endpoint", "ftp://t", "the scheme must be http or https"))
    );
    assert_eq!(
        resolve(
            &[],
            &OtlpFlags {
                endpoint: Some("https://c:4318".to_owned()),
                certificate: Some("/nonexistent/ca.pem".into()),
                ..OtlpFlags::default()
            }
        ),
        Err(err("--otlp-certificate", "/nonexistent/ca.pem", "cannot read it: No such file or directory (os error 2)"))
    );
}

#[test]
fn export_resource_attributes() {
    let attrs = resource_attributes_from_env(env(&[(
        RESOURCE_ATTRIBUTES,
        "deployment.environment=prod%20eu, host.name = node-1 ,k8s.cluster.name=a%2Cb",
    )]))
    .unwrap();
    assert_eq!(
        attrs,
        headers(&[("deployment.environment", "prod eu"), ("host.name", "node-1"), ("k8s.cluster.name", "a,b")])
    );
    assert_eq!(resource_attributes_from_env(env(&[])), Ok(Vec::new()));
    assert_eq!(resource_attributes_from_env(env(&[(RESOURCE_ATTRIBUTES, "")])), Ok(Vec::new()));
    assert_eq!(
        resource_attributes_from_env(env(&[(RESOURCE_ATTRIBUTES, "a=1,oops")])),
        Err(err(RESOURCE_ATTRIBUTES, "a=1,oops", r#""oops" is not key=value"#))
    );
}

fn grpc_tls(endpoint: &str) -> SignalConfig {
    SignalConfig { protocol: Protocol::Grpc, ..https(endpoint) }
}

/// Both signals' export settings.
fn both(vars: &[(&str, &str)], flags: &OtlpFlags) -> (SignalConfig, SignalConfig) {
    let c = resolve(vars, flags).unwrap().unwrap();
    (c.traces.unwrap().export, c.metrics.unwrap().export)
}

fn both_tls(vars: &[(&str, &str)], flags: &OtlpFlags) -> (Option<TlsConfig>, Option<TlsConfig>) {
    let (t, m) = both(&[&[(ENDPOINT, "https://c:4318")], vars].concat(), flags);
    (t.tls, m.tls)
}

fn trusting(cas: &[&Ca]) -> Option<TlsConfig> {
    Some(TlsConfig { ca_certificates: Some(cas.iter().map(|ca| ca.der()).collect()), client_identity: None })
}

fn identity(leaf: &Leaf, chain: &[&CertificateDer<'static>]) -> ClientIdentity {
    let mut certificate_chain = vec![leaf.certificate.clone()];
    certificate_chain.extend(chain.iter().map(|c| (*c).clone()));
    ClientIdentity { certificate_chain, key: leaf.key.clone_key() }
}

fn with_identity(identity: ClientIdentity) -> Option<TlsConfig> {
    Some(TlsConfig { ca_certificates: None, client_identity: Some(identity) })
}

#[test]
fn export_https_endpoints_use_tls() {
    let none = OtlpFlags::default();
    assert_eq!(
        both(&[(ENDPOINT, "https://c:4318/otlp/")], &none),
        (https("https://c:4318/otlp/v1/traces"), https("https://c:4318/otlp/v1/metrics"))
    );
    assert_eq!(
        both(&[(ENDPOINT, "https://c:4317"), (PROTOCOL, "grpc")], &none),
        (grpc_tls("https://c:4317"), grpc_tls("https://c:4317"))
    );
    // Per signal: TLS for one, plaintext for the other.
    assert_eq!(
        both(&[(ENDPOINT, "http://c:4318"), ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "https://t/v1/traces")], &none),
        (https("https://t/v1/traces"), http("http://c:4318/v1/metrics"))
    );
    let flags = OtlpFlags { metrics_endpoint: Some("https://[::1]:4318/m".to_owned()), ..OtlpFlags::default() };
    assert_eq!(both(&[], &flags), (http("http://localhost:4318/v1/traces"), https("https://[::1]:4318/m")));
}

#[test]
fn export_grpc_endpoint_without_scheme_is_tls_unless_insecure() {
    let g = |vars: &[(&str, &str)]| {
        both(&[&[(ENDPOINT, "c:4317"), (PROTOCOL, "grpc")], vars].concat(), &OtlpFlags::default())
    };
    let (secure, plain) = (grpc_tls("https://c:4317"), grpc("http://c:4317"));
    assert_eq!(g(&[]), (secure.clone(), secure.clone()));
    assert_eq!(g(&[(INSECURE, "true")]), (plain.clone(), plain.clone()));
    assert_eq!(g(&[(INSECURE, " True ")]), (plain.clone(), plain.clone()));
    assert_eq!(g(&[(INSECURE, "false")]), (secure.clone(), secure.clone()));
    // Not a boolean: false, as the SDK specification says (with a warning).
    assert_eq!(g(&[(INSECURE, "1")]), (secure.clone(), secure.clone()));
    assert_eq!(g(&[(INSECURE, "")]), (secure.clone(), secure.clone()));
    // Per signal wins.
    assert_eq!(
        g(&[(INSECURE, "true"), ("OTEL_EXPORTER_OTLP_METRICS_INSECURE", "false")]),
        (plain.clone(), secure.clone())
    );
    assert_eq!(g(&[("OTEL_EXPORTER_OTLP_TRACES_INSECURE", "true")]), (plain.clone(), secure.clone()));
    // A scheme wins over INSECURE either way.
    let none = OtlpFlags::default();
    assert_eq!(
        both(&[(ENDPOINT, "https://c:4317"), (PROTOCOL, "grpc"), (INSECURE, "true")], &none),
        (secure.clone(), secure)
    );
    assert_eq!(
        both(&[(ENDPOINT, "http://c:4317"), (PROTOCOL, "grpc"), (INSECURE, "false")], &none),
        (plain.clone(), plain)
    );
    assert_eq!(
        both(&[(ENDPOINT, "[::1]:4317"), (PROTOCOL, "grpc"), (INSECURE, "true")], &none).0,
        grpc("http://[::1]:4317")
    );
    // The flag too.
    let flags = OtlpFlags {
        traces_endpoint: Some("t:4317".to_owned()),
        protocol: Some("grpc".to_owned()),
        ..OtlpFlags::default()
    };
    assert_eq!(both(&[], &flags), (grpc_tls("https://t:4317"), grpc("http://localhost:4317")));
}

#[test]
fn export_tls_certificate_precedence() {
    let dir = TempDir::new();
    let (a, b, c) = (Ca::new("a"), Ca::new("b"), Ca::new("c"));
    let (pa, pb, pc) = (dir.write("a.pem", a.pem()), dir.write("b.pem", b.pem()), dir.write("c.pem", c.pem()));
    let bundle = dir.write("bundle.pem", format!("{}\n{}", a.pem(), b.pem()));
    let none = OtlpFlags::default();
    assert_eq!(both_tls(&[], &none), (Some(TlsConfig::default()), Some(TlsConfig::default())));
    assert_eq!(both_tls(&[(CERTIFICATE, &pa)], &none), (trusting(&[&a]), trusting(&[&a])));
    assert_eq!(
        both_tls(&[(CERTIFICATE, &pa), ("OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE", &pb)], &none),
        (trusting(&[&b]), trusting(&[&a]))
    );
    assert_eq!(
        both_tls(&[("OTEL_EXPORTER_OTLP_METRICS_CERTIFICATE", &pb)], &none),
        (Some(TlsConfig::default()), trusting(&[&b]))
    );
    // The flag wins over both variables.
    let flags = OtlpFlags { certificate: Some(pc.clone().into()), ..OtlpFlags::default() };
    assert_eq!(
        both_tls(&[(CERTIFICATE, &pa), ("OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE", &pb)], &flags),
        (trusting(&[&c]), trusting(&[&c]))
    );
    // Every certificate of a bundle, in order; the path trimmed.
    assert_eq!(both_tls(&[(CERTIFICATE, &bundle)], &none), (trusting(&[&a, &b]), trusting(&[&a, &b])));
    assert_eq!(both_tls(&[(CERTIFICATE, &format!(" {pa} "))], &none).0, trusting(&[&a]));
}

#[test]
fn export_tls_files_are_not_read_for_plaintext_endpoints() {
    let none = OtlpFlags::default();
    let missing = "/nonexistent/x.pem";
    let tls_vars = [(CERTIFICATE, missing), (CLIENT_KEY, missing), (CLIENT_CERTIFICATE, missing)];
    let (t, m) = both(&[&[(ENDPOINT, "http://c:4318")], &tls_vars[..]].concat(), &none);
    assert_eq!((t.tls, m.tls), (None, None));
    let (t, m) =
        both(&[&[(ENDPOINT, "c:4317"), (PROTOCOL, "grpc"), (INSECURE, "true")], &tls_vars[..]].concat(), &none);
    assert_eq!((t.tls, m.tls), (None, None));
    // Only the signal that uses TLS reads its files.
    let (t, m) = both(
        &[
            (ENDPOINT, "http://c:4318"),
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "https://t/v1/traces"),
            ("OTEL_EXPORTER_OTLP_METRICS_CERTIFICATE", missing),
        ],
        &none,
    );
    assert_eq!((t.tls, m.tls), (Some(TlsConfig::default()), None));
}

#[test]
fn export_tls_client_identity() {
    let dir = TempDir::new();
    let ca = Ca::new("ca");
    let (id, other) = (ca.client("kscope"), ca.client("other"));
    let (key, cert) = (dir.write("key.pem", &id.key_pem), dir.write("cert.pem", &id.certificate_pem));
    let (other_key, other_cert) = (dir.write("ok.pem", &other.key_pem), dir.write("oc.pem", &other.certificate_pem));
    let chain = dir.write("chain.pem", format!("{}{}", id.certificate_pem, ca.pem()));
    let ca_file = dir.write("ca.pem", ca.pem());
    let none = OtlpFlags::default();

    let mine = with_identity(identity(&id, &[]));
    assert_eq!(both_tls(&[(CLIENT_KEY, &key), (CLIENT_CERTIFICATE, &cert)], &none), (mine.clone(), mine.clone()));
    // Per signal wins, key and certificate each.
    assert_eq!(
        both_tls(
            &[
                (CLIENT_KEY, &key),
                (CLIENT_CERTIFICATE, &cert),
                ("OTEL_EXPORTER_OTLP_TRACES_CLIENT_KEY", &other_key),
                ("OTEL_EXPORTER_OTLP_TRACES_CLIENT_CERTIFICATE", &other_cert),
            ],
            &none
        ),
        (with_identity(identity(&other, &[])), mine.clone())
    );
    // Flags win over both.
    let flags = OtlpFlags {
        client_key: Some(other_key.clone().into()),
        client_certificate: Some(other_cert.clone().into()),
        ..OtlpFlags::default()
    };
    assert_eq!(
        both_tls(&[(CLIENT_KEY, &key), ("OTEL_EXPORTER_OTLP_METRICS_CLIENT_CERTIFICATE", &cert)], &flags),
        (with_identity(identity(&other, &[])), with_identity(identity(&other, &[])))
    );
    // A chain is sent whole; with a CA to trust as well.
    let ca_der = ca.der();
    assert_eq!(
        both_tls(&[(CLIENT_KEY, &key), (CLIENT_CERTIFICATE, &chain), (CERTIFICATE, &ca_file)], &none).0,
        Some(TlsConfig { ca_certificates: Some(vec![ca.der()]), client_identity: Some(identity(&id, &[&ca_der])) })
    );
    // The key is not printed.
    let debug = format!("{:?}", identity(&id, &[]));
    assert!(debug.contains("[secret key elided]"), "{debug}");
}

#[test]
fn export_tls_file_errors_name_the_variable_and_path() {
    let dir = TempDir::new();
    let ca = Ca::new("ca");
    let (id, other) = (ca.client("kscope"), ca.client("other"));
    let (key, cert) = (dir.write("key.pem", &id.key_pem), dir.write("cert.pem", &id.certificate_pem));
    let other_key = dir.write("other-key.pem", &other.key_pem);
    let empty = dir.write("empty.pem", "");
    let text = dir.write("text.pem", "not PEM at all\n");
    let truncated = dir.write("truncated.pem", "-----BEGIN CERTIFICATE-----\nMIIB\n");
    let not_base64 = dir.write("base64.pem", "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n");
    let not_der = dir.write("der.pem", "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n");
    let directory = dir.path().to_str().unwrap().to_owned();
    let e = |vars: &[(&str, &str)]| error(&[&[(ENDPOINT, "https://c:4318")], vars].concat());

    let missing = "/nonexistent/ca.pem";
    let not_found = "cannot read it: No such file or directory (os error 2)";
    assert_eq!(e(&[(CERTIFICATE, missing)]), err(CERTIFICATE, missing, not_found));
    assert_eq!(
        e(&[(CERTIFICATE, missing)]).to_string(),
        "OTEL_EXPORTER_OTLP_CERTIFICATE=\"/nonexistent/ca.pem\": cannot read it: No such file or directory (os error 2)"
    );
    assert_eq!(
        e(&[(CERTIFICATE, &directory)]),
        err(CERTIFICATE, &directory, "cannot read it: Is a directory (os error 21)")
    );
    let no_certificate = "no CERTIFICATE in the PEM file";
    assert_eq!(e(&[(CERTIFICATE, &empty)]), err(CERTIFICATE, &empty, no_certificate));
    assert_eq!(e(&[(CERTIFICATE, &text)]), err(CERTIFICATE, &text, no_certificate));
    assert_eq!(e(&[(CERTIFICATE, &key)]), err(CERTIFICATE, &key, no_certificate));
    assert_eq!(
        e(&[("OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE", &truncated)]),
        err(
            "OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE",
            &truncated,
            r#"not a valid PEM file: no "-----END CERTIFICATE-----" line"#
        )
    );
    assert_eq!(
        e(&[(CERTIFICATE, &not_base64)]),
        err(CERTIFICATE, &not_base64, "not a valid PEM file: base64 decode error: InvalidCharacter(33)")
    );
    assert_eq!(
        e(&[("OTEL_EXPORTER_OTLP_METRICS_CERTIFICATE", &not_der)]),
        err(
            "OTEL_EXPORTER_OTLP_METRICS_CERTIFICATE",
            &not_der,
            "certificate 1 of 1 is not a usable CA certificate: BadEncoding"
        )
    );

    // Key and certificate come together.
    assert_eq!(
        e(&[(CLIENT_KEY, &key)]),
        err(CLIENT_KEY, &key, "a client key needs its certificate: OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE is not set")
    );
    assert_eq!(
        e(&[("OTEL_EXPORTER_OTLP_METRICS_CLIENT_CERTIFICATE", &cert)]),
        err(
            "OTEL_EXPORTER_OTLP_METRICS_CLIENT_CERTIFICATE",
            &cert,
            "a client certificate needs its key: OTEL_EXPORTER_OTLP_METRICS_CLIENT_KEY is not set"
        )
    );
    let flags = OtlpFlags {
        endpoint: Some("https://c:4318".to_owned()),
        client_key: Some(key.clone().into()),
        ..OtlpFlags::default()
    };
    assert_eq!(
        resolve(&[], &flags),
        Err(err("--otlp-client-key", &key, "a client key needs its certificate: --otlp-client-certificate is not set"))
    );
    assert_eq!(
        e(&[(CLIENT_KEY, &cert), (CLIENT_CERTIFICATE, &cert)]),
        err(CLIENT_KEY, &cert, "no unencrypted PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY in the PEM file")
    );
    assert_eq!(e(&[(CLIENT_KEY, &key), (CLIENT_CERTIFICATE, &key)]), err(CLIENT_CERTIFICATE, &key, no_certificate));
    assert_eq!(e(&[(CLIENT_KEY, missing), (CLIENT_CERTIFICATE, &cert)]), err(CLIENT_KEY, missing, not_found));
    let garbage_key = dir.write("garbage-key.pem", "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n");
    assert_eq!(
        e(&[(CLIENT_KEY, &garbage_key), (CLIENT_CERTIFICATE, &cert)]),
        err(CLIENT_KEY, &garbage_key, "failed to parse private key as RSA, ECDSA, or EdDSA: not a key kscope can use")
    );
    assert_eq!(
        e(&[(CLIENT_KEY, &other_key), (CLIENT_CERTIFICATE, &cert)]),
        err(
            CLIENT_KEY,
            &other_key,
            &format!("not usable with the client certificate {cert}: the key is not the certificate's")
        )
    );
}
