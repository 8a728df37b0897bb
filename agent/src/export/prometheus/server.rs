//! The scrape endpoint: a small HTTP/1 server answering `GET /metrics`.

use std::{convert::Infallible, future::Future, net::SocketAddr, pin::pin, sync::Arc, time::Duration};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{
    Method, Request, Response, StatusCode,
    body::Incoming,
    header::{ALLOW, CONTENT_TYPE, HeaderValue},
    server::conn::http1,
    service::service_fn,
};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::{
    net::{TcpListener, TcpStream},
    sync::Semaphore,
    task::JoinSet,
};

use super::text::render;
use crate::export::MetricsSource;

/// The exposition format version the body is written in.
pub const CONTENT_TYPE_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Connections served at once. Scrapers keep one connection each, so this is
/// far more than needed; beyond it connections are closed at once, so a
/// flood of clients costs no memory.
const MAX_CONNECTIONS: usize = 64;

/// How long to wait after a failed `accept` (e.g. out of file descriptors)
/// before trying again, so the loop does not spin on a persistent error.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);

const METRICS_PATH: &str = "/metrics";

#[derive(Debug, thiserror::Error)]
pub enum PrometheusError {
    #[error("cannot listen for Prometheus scrapes on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
}

/// A bound, not yet serving, Prometheus endpoint. Binding first lets the
/// caller learn the port when it asked for port 0.
#[derive(Debug)]
pub struct PrometheusServer {
    listener: TcpListener,
    local_addr: SocketAddr,
}

/// Binds `listen` and serves scrapes of `source` until `shutdown` completes.
pub async fn serve(listen: SocketAddr, source: MetricsSource, shutdown: impl Future) -> Result<(), PrometheusError> {
    PrometheusServer::bind(listen).await?.run(source, shutdown).await;
    Ok(())
}

impl PrometheusServer {
    pub async fn bind(listen: SocketAddr) -> Result<Self, PrometheusError> {
        let bind_error = |source| PrometheusError::Bind { addr: listen, source };
        let listener = TcpListener::bind(listen).await.map_err(bind_error)?;
        let local_addr = listener.local_addr().map_err(bind_error)?;
        Ok(Self { listener, local_addr })
    }

    /// The address actually bound (the real port when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serves until `shutdown` completes, then closes the listener and every
    /// open connection. Errors of single connections are logged and never
    /// end the server.
    pub async fn run(self, source: MetricsSource, shutdown: impl Future) {
        let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        let mut connections = JoinSet::new();
        let mut shutdown = pin!(shutdown);
        loop {
            tokio::select! {
                biased;
                _ = &mut shutdown => break,
                // Reaps finished connections so the set does not grow.
                Some(finished) = connections.join_next(), if !connections.is_empty() => {
                    if let Err(e) = finished {
                        tracing::debug!(error = %e, "Prometheus scrape connection task ended abnormally");
                    }
                }
                accepted = self.listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
                            tracing::debug!(%peer, limit = MAX_CONNECTIONS, "Prometheus endpoint busy; closing connection");
                            continue;
                        };
                        let source = Arc::clone(&source);
                        connections.spawn(async move {
                            serve_connection(stream, peer, source).await;
                            drop(slot);
                        });
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "Prometheus endpoint cannot accept a connection");
                        tokio::time::sleep(ACCEPT_RETRY).await;
                    }
                },
            }
        }
        connections.shutdown().await;
    }
}

async fn serve_connection(stream: TcpStream, peer: SocketAddr, source: MetricsSource) {
    let service = service_fn(move |request| {
        let response = respond(&request, &source);
        async move { Ok::<_, Infallible>(response) }
    });
    // The timer enables hyper's header read timeout (30 s by default), which
    // also closes idle keep-alive connections, so a silent client cannot
    // hold one of the connection slots forever.
    let connection = http1::Builder::new().timer(TokioTimer::new()).serve_connection(TokioIo::new(stream), service);
    if let Err(e) = connection.await {
        tracing::debug!(%peer, error = %e, "Prometheus scrape connection failed");
    }
}

/// Rendering runs on the connection's task: it is a short, CPU-only walk
/// over the current metrics, not worth a blocking-pool hop.
fn respond(request: &Request<Incoming>, source: &MetricsSource) -> Response<Full<Bytes>> {
    if request.uri().path() != METRICS_PATH {
        return status(StatusCode::NOT_FOUND, "not found; metrics are at /metrics\n");
    }
    if request.method() != Method::GET && request.method() != Method::HEAD {
        let mut response = status(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD\n");
        response.headers_mut().insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    let mut response = Response::new(Full::new(Bytes::from(render(&source()))));
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE_TEXT));
    response
}

fn status(code: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = code;
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    response
}

#[cfg(test)]
mod tests {
    use std::{
        io::{Read as _, Write as _},
        net::{Ipv4Addr, TcpStream as StdTcpStream},
    };

    use opentelemetry_proto::tonic::{
        common::v1::{AnyValue, KeyValue, any_value},
        metrics::v1::{
            AggregationTemporality, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum, metric::Data,
            number_data_point,
        },
        resource::v1::Resource,
    };

    use tokio::io::AsyncReadExt as _;

    use super::*;

    fn metrics() -> Vec<ResourceMetrics> {
        let counter = Metric {
            name: "kscope.scrapes".to_owned(),
            description: "Scrapes.".to_owned(),
            data: Some(Data::Sum(Sum {
                data_points: vec![NumberDataPoint {
                    value: Some(number_data_point::Value::AsInt(5)),
                    ..Default::default()
                }],
                aggregation_temporality: AggregationTemporality::Cumulative as i32,
                is_monotonic: true,
            })),
            ..Default::default()
        };
        let name = KeyValue {
            key: "service.name".to_owned(),
            value: Some(AnyValue { value: Some(any_value::Value::StringValue("kscope".to_owned())) }),
            ..Default::default()
        };
        vec![ResourceMetrics {
            resource: Some(Resource { attributes: vec![name], ..Default::default() }),
            scope_metrics: vec![ScopeMetrics { metrics: vec![counter], ..Default::default() }],
            ..Default::default()
        }]
    }

    struct HttpResponse {
        status: u16,
        headers: Vec<(String, String)>,
        body: String,
    }

    impl HttpResponse {
        fn header(&self, name: &str) -> Option<&str> {
            self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
        }
    }

    /// A plain HTTP/1.1 request over a std socket, so the test does not
    /// depend on the server's own HTTP stack to read the answer.
    fn request(addr: SocketAddr, method: &str, path: &str) -> std::io::Result<HttpResponse> {
        let malformed = |what: &str| std::io::Error::other(format!("malformed response: {what}"));
        let mut stream = StdTcpStream::connect(addr)?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        write!(stream, "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw)?;
        let raw = String::from_utf8(raw).map_err(|_| malformed("not UTF-8"))?;
        let (head, body) = raw.split_once("\r\n\r\n").ok_or_else(|| malformed("no end of head"))?;
        let mut lines = head.split("\r\n");
        let status = lines
            .next()
            .and_then(|line| line.strip_prefix("HTTP/1.1 "))
            .and_then(|rest| rest.get(..3))
            .and_then(|code| code.parse().ok())
            .ok_or_else(|| malformed("status line"))?;
        let headers = lines
            .map(|line| {
                let (k, v) = line.split_once(':').ok_or_else(|| malformed(line))?;
                Ok((k.trim().to_owned(), v.trim().to_owned()))
            })
            .collect::<std::io::Result<_>>()?;
        Ok(HttpResponse { status, headers, body: body.to_owned() })
    }

    fn get(addr: SocketAddr, method: &str, path: &str) -> HttpResponse {
        request(addr, method, path).unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn serves_metrics_over_http() {
        let server = PrometheusServer::bind((Ipv4Addr::LOCALHOST, 0).into()).await.unwrap();
        let addr = server.local_addr();
        assert_ne!(addr.port(), 0);
        let source: MetricsSource = Arc::new(metrics);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let running = tokio::spawn(server.run(source, stopped));

        let (ok, head, missing, post) = tokio::task::spawn_blocking(move || {
            (
                get(addr, "GET", "/metrics"),
                get(addr, "HEAD", "/metrics"),
                get(addr, "GET", "/"),
                get(addr, "POST", "/metrics"),
            )
        })
        .await
        .unwrap();

        assert_eq!(ok.status, 200);
        assert_eq!(ok.header("content-type"), Some(CONTENT_TYPE_TEXT));
        let expected = render(&metrics());
        assert!(expected.contains("kscope_scrapes_total{job=\"kscope\"} 5\n"), "{expected}");
        assert_eq!(ok.body, expected);
        assert_eq!(ok.header("content-length"), Some(expected.len().to_string().as_str()));

        assert_eq!(head.status, 200);
        assert_eq!(head.body, "");
        assert_eq!(missing.status, 404);
        assert_eq!(post.status, 405);
        assert_eq!(post.header("allow"), Some("GET, HEAD"));

        stop.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(5), running).await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn shutdown_closes_idle_connections() {
        let server = PrometheusServer::bind((Ipv4Addr::LOCALHOST, 0).into()).await.unwrap();
        let addr = server.local_addr();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let running = tokio::spawn(server.run(Arc::new(metrics), stopped));
        // A client that connects and never sends a request.
        let mut idle = TcpStream::connect(addr).await.unwrap();
        // Served (a GET on another connection answers) before stopping, so
        // the idle one has surely been accepted.
        tokio::task::spawn_blocking(move || get(addr, "GET", "/metrics")).await.unwrap();
        stop.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(5), running).await.unwrap().unwrap();
        let mut buf = [0u8; 1];
        let read = tokio::time::timeout(Duration::from_secs(5), idle.read(&mut buf)).await.unwrap();
        assert_eq!(read.unwrap(), 0, "the server should have closed the idle connection");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn connections_beyond_the_limit_are_closed() {
        let server = PrometheusServer::bind((Ipv4Addr::LOCALHOST, 0).into()).await.unwrap();
        let addr = server.local_addr();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let running = tokio::spawn(server.run(Arc::new(metrics), stopped));
        let mut held = Vec::new();
        for _ in 0..MAX_CONNECTIONS {
            held.push(TcpStream::connect(addr).await.unwrap());
        }
        let mut extra = TcpStream::connect(addr).await.unwrap();
        let mut buf = [0u8; 1];
        // Closed at once (EOF, or a reset if the close raced the connect),
        // long before hyper's 30 s header timeout.
        let read = tokio::time::timeout(Duration::from_secs(5), extra.read(&mut buf)).await.unwrap();
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
        // Closing one held connection frees its slot for a scrape.
        drop(held.pop());
        let scraped = tokio::task::spawn_blocking(move || {
            let deadline = std::time::Instant::now() + Duration::from_secs(5);
            // The server frees the slot once it sees the close; until then
            // a new connection may still be turned away.
            loop {
                match request(addr, "GET", "/metrics") {
                    Ok(response) => break response,
                    Err(_) if std::time::Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
                    Err(e) => panic!("no scrape after a slot was freed: {e}"),
                }
            }
        })
        .await
        .unwrap();
        assert_eq!(scraped.status, 200);
        stop.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(5), running).await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn bind_failure_names_the_address() {
        let taken = PrometheusServer::bind((Ipv4Addr::LOCALHOST, 0).into()).await.unwrap();
        let addr = taken.local_addr();
        let err = serve(addr, Arc::new(Vec::new), std::future::pending::<()>()).await.unwrap_err();
        assert!(matches!(err, PrometheusError::Bind { addr: a, .. } if a == addr), "{err:?}");
        assert!(err.to_string().contains(&addr.to_string()), "{err}");
    }
}
