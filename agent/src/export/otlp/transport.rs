//! One export request to the collector over gRPC or HTTP/protobuf, and the
//! OTLP spec's retry rules around it.

use std::{
    error::Error as StdError,
    future::Future,
    hash::{BuildHasher as _, Hasher as _},
    io::Write as _,
    time::Duration,
};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::{
    StatusCode,
    header::{CONTENT_ENCODING, CONTENT_TYPE, HeaderName, HeaderValue, RETRY_AFTER, USER_AGENT},
    http::Uri,
};
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use opentelemetry_proto::tonic::collector::{
    metrics::v1::{
        ExportMetricsServiceRequest, ExportMetricsServiceResponse, metrics_service_client::MetricsServiceClient,
    },
    trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse, trace_service_client::TraceServiceClient},
};
use prost::Message as _;
use tokio::time::{Instant, sleep};
use tonic::{
    Code, Status,
    codec::CompressionEncoding,
    metadata::{MetadataKey, MetadataMap, MetadataValue},
    transport::{Channel, Endpoint},
};

use super::{
    ExportCounts, Stop, Warn, add,
    config::{Compression, Protocol, SignalConfig},
    tls::{self, Alpn, Connector},
};

const USER_AGENT_VALUE: &str = concat!("kscope/", env!("CARGO_PKG_VERSION"));
/// A collector's answer is a few bytes; anything past this is not one.
const MAX_RESPONSE_BYTES: usize = 4 << 20;
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// The collector took the request; it may have rejected part of it.
#[derive(Debug, Default)]
pub(super) struct Accepted {
    pub rejected: u64,
    pub message: String,
}

#[derive(Debug)]
pub(super) enum Failure {
    /// Worth another attempt (the collector is down, busy or throttling).
    Retryable { reason: String, retry_after: Option<Duration> },
    /// The collector refused the data; sending it again would not help.
    Permanent { reason: String },
}

pub(super) struct Transport {
    inner: Inner,
    timeout: Duration,
}

enum Inner {
    Grpc {
        channel: Channel,
        metadata: MetadataMap,
        gzip: bool,
    },
    // Boxed: the client is several times the size of the other variants.
    Http {
        client: Box<Client<Connector, Full<Bytes>>>,
        uri: Uri,
        headers: Vec<(HeaderName, HeaderValue)>,
        gzip: bool,
    },
    /// A configuration that `config` validated but the client library still
    /// refused, or TLS without root certificates; every export fails with
    /// this reason rather than panicking.
    Broken(String),
}

impl Transport {
    /// Must run inside a tokio runtime (the gRPC channel spawns its worker).
    pub fn new(config: &SignalConfig) -> Self {
        let inner = match config.protocol {
            Protocol::Grpc => grpc(config),
            Protocol::HttpProtobuf => http(config),
        }
        .unwrap_or_else(|reason| {
            tracing::warn!("OTLP export to {} cannot work: {reason}", config.endpoint);
            Inner::Broken(reason)
        });
        Self { inner, timeout: config.timeout }
    }

    pub async fn traces(&self, request: &ExportTraceServiceRequest) -> Result<Accepted, Failure> {
        self.attempt(async {
            match &self.inner {
                Inner::Grpc { channel, metadata, gzip } => {
                    let mut client = TraceServiceClient::new(channel.clone());
                    if *gzip {
                        client = client.send_compressed(CompressionEncoding::Gzip);
                    }
                    let request = tonic::Request::from_parts(metadata.clone(), Default::default(), request.clone());
                    let response = client.export(request).await.map_err(|s| status_failure(&s))?.into_inner();
                    Ok(trace_accepted(response))
                }
                Inner::Http { client, uri, headers, gzip } => {
                    let body = post(client, uri, headers, *gzip, request.encode_to_vec()).await?;
                    // A 2xx whose body is not a response still delivered the data.
                    Ok(ExportTraceServiceResponse::decode(body).map(trace_accepted).unwrap_or_default())
                }
                Inner::Broken(reason) => Err(Failure::Permanent { reason: reason.clone() }),
            }
        })
        .await
    }

    pub async fn metrics(&self, request: &ExportMetricsServiceRequest) -> Result<Accepted, Failure> {
        self.attempt(async {
            match &self.inner {
                Inner::Grpc { channel, metadata, gzip } => {
                    let mut client = MetricsServiceClient::new(channel.clone());
                    if *gzip {
                        client = client.send_compressed(CompressionEncoding::Gzip);
                    }
                    let request = tonic::Request::from_parts(metadata.clone(), Default::default(), request.clone());
                    let response = client.export(request).await.map_err(|s| status_failure(&s))?.into_inner();
                    Ok(metrics_accepted(response))
                }
                Inner::Http { client, uri, headers, gzip } => {
                    let body = post(client, uri, headers, *gzip, request.encode_to_vec()).await?;
                    Ok(ExportMetricsServiceResponse::decode(body).map(metrics_accepted).unwrap_or_default())
                }
                Inner::Broken(reason) => Err(Failure::Permanent { reason: reason.clone() }),
            }
        })
        .await
    }

    /// One attempt, connecting included, within the configured timeout.
    async fn attempt(&self, attempt: impl Future<Output = Result<Accepted, Failure>>) -> Result<Accepted, Failure> {
        tokio::time::timeout(self.timeout, attempt).await.unwrap_or_else(|_| {
            Err(Failure::Retryable { reason: format!("no answer within {:?}", self.timeout), retry_after: None })
        })
    }
}

fn trace_accepted(response: ExportTraceServiceResponse) -> Accepted {
    response
        .partial_success
        .map(|p| Accepted { rejected: u64::try_from(p.rejected_spans).unwrap_or(0), message: p.error_message })
        .unwrap_or_default()
}

fn metrics_accepted(response: ExportMetricsServiceResponse) -> Accepted {
    response
        .partial_success
        .map(|p| Accepted { rejected: u64::try_from(p.rejected_data_points).unwrap_or(0), message: p.error_message })
        .unwrap_or_default()
}

fn grpc(config: &SignalConfig) -> Result<Inner, String> {
    let endpoint = Endpoint::from_shared(config.endpoint.clone())
        .and_then(|e| e.user_agent(USER_AGENT_VALUE))
        .map_err(|e| format!("gRPC endpoint {}: {}", config.endpoint, chain(&e)))?
        .connect_timeout(config.timeout);
    let mut metadata = MetadataMap::new();
    for (name, value) in &config.headers {
        let key =
            MetadataKey::from_bytes(name.as_bytes()).map_err(|_| format!("header {name:?} is not gRPC metadata"))?;
        let value = MetadataValue::try_from(value.as_str())
            .map_err(|_| format!("the value of header {name} is not gRPC metadata"))?;
        metadata.append(key, value);
    }
    // Lazily: the collector may come up after kscope; the channel connects
    // (and reconnects) on demand. TLS is rustls under tonic, as for HTTP;
    // the connect timeout covers the handshake.
    let channel = match &config.tls {
        Some(tls) => endpoint.connect_with_connector_lazy(tls::connector(Some(tls), Alpn::H2)?),
        None => endpoint.connect_lazy(),
    };
    Ok(Inner::Grpc { channel, metadata, gzip: config.compression == Compression::Gzip })
}

fn http(config: &SignalConfig) -> Result<Inner, String> {
    let uri = config.endpoint.parse::<Uri>().map_err(|e| format!("HTTP endpoint {}: {e}", config.endpoint))?;
    let headers = config
        .headers
        .iter()
        .map(|(name, value)| {
            let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| format!("header {name:?} is not valid"))?;
            let value = HeaderValue::from_str(value).map_err(|_| format!("the value of header {name} is not valid"))?;
            Ok((name, value))
        })
        .collect::<Result<_, String>>()?;
    let connector = tls::connector(config.tls.as_ref(), Alpn::Http1)?;
    let client = Box::new(Client::builder(TokioExecutor::new()).build(connector));
    Ok(Inner::Http { client, uri, headers, gzip: config.compression == Compression::Gzip })
}

/// POSTs one protobuf body; the response body on a 2xx.
async fn post(
    client: &Client<Connector, Full<Bytes>>,
    uri: &Uri,
    headers: &[(HeaderName, HeaderValue)],
    gzip: bool,
    body: Vec<u8>,
) -> Result<Bytes, Failure> {
    let body = if gzip {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        encoder
            .write_all(&body)
            .and_then(|()| encoder.finish())
            .map_err(|e| Failure::Permanent { reason: format!("gzip: {e}") })?
    } else {
        body
    };
    let mut request = hyper::Request::post(uri.clone())
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| Failure::Permanent { reason: format!("POST {uri}: {e}") })?;
    let request_headers = request.headers_mut();
    for (name, value) in headers {
        request_headers.append(name.clone(), value.clone());
    }
    // After the user's headers: these describe the body and must be right.
    request_headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/x-protobuf"));
    request_headers.insert(USER_AGENT, HeaderValue::from_static(USER_AGENT_VALUE));
    if gzip {
        request_headers.insert(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    }

    let response = client
        .request(request)
        .await
        .map_err(|e| Failure::Retryable { reason: format!("POST {uri}: {}", chain(&e)), retry_after: None })?;
    let status = response.status();
    let retry_after = response
        .headers()
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let body = Limited::new(response.into_body(), MAX_RESPONSE_BYTES).collect().await.map(|b| b.to_bytes());
    if status.is_success() {
        // The data arrived even if the answer did not.
        return Ok(body.unwrap_or_default());
    }
    let reason = format!("POST {uri}: {status} {}", snippet(&body.unwrap_or_default()));
    match status {
        StatusCode::TOO_MANY_REQUESTS
        | StatusCode::BAD_GATEWAY
        | StatusCode::SERVICE_UNAVAILABLE
        | StatusCode::GATEWAY_TIMEOUT => Err(Failure::Retryable { reason, retry_after }),
        _ => Err(Failure::Permanent { reason }),
    }
}

/// The start of an error body (a protobuf `Status`, or text), printable.
fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body.get(..200).unwrap_or(body));
    text.chars().map(|c| if c.is_control() { ' ' } else { c }).collect::<String>().trim().to_owned()
}

/// The OTLP spec's retryable codes, and anything that failed below gRPC
/// (connecting, a reset connection).
fn status_failure(status: &Status) -> Failure {
    let reason = format!("gRPC {:?}: {}", status.code(), status.message());
    let retryable = matches!(
        status.code(),
        Code::Cancelled
            | Code::DeadlineExceeded
            | Code::ResourceExhausted
            | Code::Aborted
            | Code::OutOfRange
            | Code::Unavailable
            | Code::DataLoss
    ) || is_connection_error(status);
    if retryable {
        let reason = match status.source() {
            Some(source) => format!("{reason}: {}", chain(source)),
            None => reason,
        };
        Failure::Retryable { reason, retry_after: None }
    } else {
        Failure::Permanent { reason }
    }
}

fn is_connection_error(status: &Status) -> bool {
    let mut source = status.source();
    while let Some(e) = source {
        if e.is::<tonic::transport::Error>() || e.is::<hyper::Error>() || e.is::<std::io::Error>() {
            return true;
        }
        source = e.source();
    }
    false
}

/// An error and its causes on one line: hyper's and tonic's top-level
/// messages ("client error (Connect)") say little on their own.
fn chain(e: &(dyn StdError + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

pub(super) enum Sent {
    Accepted(Accepted),
    /// Given up: refused for good, out of time, or stopping.
    Failed(String),
}

/// Attempts until accepted, refused for good, `deadline` or stopping:
/// exponential backoff with jitter (200 ms doubling to 5 s), or the
/// collector's Retry-After (seconds; a wait past `deadline` gives up at
/// once). Once stopping, failures are not retried.
pub(super) async fn send<F, Fut>(
    mut attempt: F,
    deadline: Instant,
    counts: &ExportCounts,
    stop: &mut Stop,
    warn: &mut Warn,
) -> Sent
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Accepted, Failure>>,
{
    let mut backoff = FIRST_BACKOFF;
    loop {
        add(&counts.export_requests, 1);
        let (reason, retry_after) = match attempt().await {
            Ok(accepted) => return Sent::Accepted(accepted),
            Err(Failure::Permanent { reason }) => {
                add(&counts.export_failures, 1);
                return Sent::Failed(reason);
            }
            Err(Failure::Retryable { reason, retry_after }) => {
                add(&counts.export_failures, 1);
                (reason, retry_after)
            }
        };
        if stop.is_stopped() {
            return Sent::Failed(format!("{reason} (not retried: stopping)"));
        }
        let wait = retry_after.unwrap_or_else(|| jitter(backoff));
        backoff = (backoff * 2).min(MAX_BACKOFF);
        if Instant::now() + wait > deadline {
            return Sent::Failed(format!("{reason} (gave up retrying)"));
        }
        warn.warn(&format!("{reason}; retrying in {wait:?}"));
        tokio::select! {
            () = sleep(wait) => {}
            () = stop.wait() => return Sent::Failed(format!("{reason} (not retried: stopping)")),
        }
        add(&counts.retries, 1);
    }
}

/// Between half and all of `d`, so that agents that lost the same collector
/// do not all come back at the same instant.
fn jitter(d: Duration) -> Duration {
    // Each RandomState is freshly keyed: a random number without a crate.
    let random = std::collections::hash_map::RandomState::new().build_hasher().finish();
    let fraction = random as f64 / u64::MAX as f64;
    d.mul_f64(0.5 + fraction / 2.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn retryable(status: &Status) -> bool {
        matches!(status_failure(status), Failure::Retryable { .. })
    }

    #[test]
    fn export_grpc_codes_retryable_per_otlp_spec() {
        for code in [
            Code::Cancelled,
            Code::DeadlineExceeded,
            Code::ResourceExhausted,
            Code::Aborted,
            Code::OutOfRange,
            Code::Unavailable,
            Code::DataLoss,
        ] {
            assert!(retryable(&Status::new(code, "x")), "{code:?}");
        }
        for code in [
            Code::Unknown,
            Code::InvalidArgument,
            Code::NotFound,
            Code::AlreadyExists,
            Code::PermissionDenied,
            Code::FailedPrecondition,
            Code::Unimplemented,
            Code::Internal,
            Code::Unauthenticated,
        ] {
            assert!(!retryable(&Status::new(code, "x")), "{code:?}");
        }
        // Whatever the code, a failure to reach the collector is retried.
        let refused = Status::from_error(Box::new(std::io::Error::from(std::io::ErrorKind::ConnectionRefused)));
        assert!(retryable(&refused));
    }

    #[test]
    fn export_jitter_is_between_half_and_all() {
        for _ in 0..1000 {
            let d = jitter(Duration::from_millis(200));
            assert!(d >= Duration::from_millis(100) && d <= Duration::from_millis(200), "{d:?}");
        }
    }

    #[test]
    fn export_error_snippet_is_printable_and_short() {
        assert_eq!(snippet(b"\x08\x03\x12\x0bbad\nrequest"), "bad request");
        assert_eq!(snippet(&[b'a'; 500]).len(), 200);
    }
}
