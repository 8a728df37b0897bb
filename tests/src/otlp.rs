//! A real OTLP collector endpoint for the export tests: gRPC (tonic's
//! `TraceService` and `MetricsService`) or HTTP/1 (`POST /v1/traces`,
//! `/v1/metrics`, protobuf bodies, gzip or not), keeping every request it
//! accepted.
//!
//! It runs on a tokio runtime of its own, so synchronous tests drive it the
//! way they drive nginx or dnsmasq; it can be stopped (the listener and
//! every connection closed: a collector that died) and restarted on the same
//! port, and told how to answer (unavailable, invalid, throttled, partial
//! success) to exercise the exporter's retries.
//!
//! With [`ServerTls`] it serves over TLS, optionally requiring a client
//! certificate (mTLS), with certificates from a [`TestCa`] made at test
//! time.

use std::{
    collections::VecDeque,
    convert::Infallible,
    io::Read as _,
    net::{Ipv4Addr, SocketAddr, TcpListener as StdListener},
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicUsize, Ordering},
        mpsc,
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::{Method, Request, Response, StatusCode, body::Incoming, service::service_fn};
use hyper_util::rt::{TokioExecutor, TokioIo};
use opentelemetry_proto::tonic::{
    collector::{
        metrics::v1::{
            ExportMetricsPartialSuccess, ExportMetricsServiceRequest, ExportMetricsServiceResponse,
            metrics_service_server::{MetricsService, MetricsServiceServer},
        },
        trace::v1::{
            ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
            trace_service_server::{TraceService, TraceServiceServer},
        },
    },
    resource::v1::Resource,
    trace::v1::Span,
};
use prost::Message as _;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    runtime::Runtime,
    task::JoinSet,
};
use tokio_rustls::{
    TlsAcceptor,
    rustls::{
        self, RootCertStore,
        crypto::{CryptoProvider, ring},
        pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer},
        server::WebPkiClientVerifier,
    },
};
use tonic::{codec::CompressionEncoding, codegen::Service as _};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Grpc,
    Http,
}

/// How the receiver answers a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// Accepted and kept.
    Ok,
    /// gRPC UNAVAILABLE, HTTP 503: retryable.
    Unavailable,
    /// gRPC RESOURCE_EXHAUSTED, HTTP 429 with `Retry-After: seconds`.
    Throttle { retry_after_secs: u64 },
    /// gRPC INVALID_ARGUMENT, HTTP 400: not retryable.
    Invalid,
    /// Accepted and kept, with a partial success rejecting this many spans
    /// or data points.
    PartialReject(i64),
}

#[derive(Default)]
struct State {
    traces: Mutex<Vec<ExportTraceServiceRequest>>,
    metrics: Mutex<Vec<ExportMetricsServiceRequest>>,
    /// The headers (gRPC metadata) of every well-formed request.
    headers: Mutex<Vec<Vec<(String, String)>>>,
    script: Mutex<VecDeque<Answer>>,
    default_answer: Mutex<Option<Answer>>,
    refused: Mutex<usize>,
    /// TLS handshakes that failed (or did not finish in time).
    tls_failures: Mutex<usize>,
}

/// A poisoned lock only means another test thread panicked; the data is
/// still what was received.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl State {
    /// The answer to the next well-formed request; counts the refusals.
    fn answer(&self, headers: Vec<(String, String)>) -> Answer {
        lock(&self.headers).push(headers);
        let answer = lock(&self.script).pop_front().or(*lock(&self.default_answer)).unwrap_or(Answer::Ok);
        if !matches!(answer, Answer::Ok | Answer::PartialReject(_)) {
            *lock(&self.refused) += 1;
        }
        answer
    }
}

pub struct Receiver {
    protocol: Protocol,
    addr: SocketAddr,
    state: Arc<State>,
    runtime: Runtime,
    server: Option<Server>,
    tls: Option<TlsAcceptor>,
}

/// The accept task and word of its end (its listener and connections are
/// closed by then).
struct Server {
    task: tokio::task::JoinHandle<()>,
    closed: mpsc::Receiver<()>,
}

/// Sends on drop: the serving future is gone, listener included.
struct Closed(mpsc::Sender<()>);

impl Drop for Closed {
    fn drop(&mut self) {
        let _ = self.0.send(());
    }
}

impl Receiver {
    /// A gRPC receiver on 127.0.0.1:`port` (0: any free port).
    pub fn start_grpc(port: u16) -> anyhow::Result<Self> {
        Self::start(Protocol::Grpc, port)
    }

    /// An HTTP/protobuf receiver on 127.0.0.1:`port` (0: any free port).
    pub fn start_http(port: u16) -> anyhow::Result<Self> {
        Self::start(Protocol::Http, port)
    }

    pub fn start(protocol: Protocol, port: u16) -> anyhow::Result<Self> {
        Self::start_with(protocol, port, None)
    }

    /// A gRPC receiver over TLS (ALPN `h2`) on 127.0.0.1:`port`.
    pub fn start_grpc_tls(port: u16, tls: &ServerTls) -> anyhow::Result<Self> {
        Self::start_tls(Protocol::Grpc, port, tls)
    }

    /// An HTTP/protobuf receiver over TLS (ALPN `http/1.1`).
    pub fn start_http_tls(port: u16, tls: &ServerTls) -> anyhow::Result<Self> {
        Self::start_tls(Protocol::Http, port, tls)
    }

    pub fn start_tls(protocol: Protocol, port: u16, tls: &ServerTls) -> anyhow::Result<Self> {
        Self::start_with(protocol, port, Some(tls.acceptor(protocol)?))
    }

    fn start_with(protocol: Protocol, port: u16, tls: Option<TlsAcceptor>) -> anyhow::Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("otlp-receiver")
            .enable_all()
            .build()
            .context("starting the OTLP receiver's runtime")?;
        let mut receiver = Self {
            protocol,
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
            state: Arc::default(),
            runtime,
            server: None,
            tls,
        };
        receiver.serve()?;
        Ok(receiver)
    }

    fn serve(&mut self) -> anyhow::Result<()> {
        // Bound here, synchronously: the port is known and taken when start
        // returns, and a failure to bind is the caller's error.
        let listener = StdListener::bind(self.addr).with_context(|| format!("binding {}", self.addr))?;
        listener.set_nonblocking(true).context("a non-blocking listener")?;
        self.addr = listener.local_addr().context("the receiver's address")?;
        let (tx, closed) = mpsc::channel();
        let task =
            self.runtime.spawn(accept(listener, self.protocol, self.tls.clone(), Arc::clone(&self.state), Closed(tx)));
        self.server = Some(Server { task, closed });
        Ok(())
    }

    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT` (`https://` over TLS): the exporter's
    /// generic endpoint.
    pub fn endpoint_url(&self) -> String {
        self.url_for(&self.addr.ip().to_string())
    }

    /// The endpoint with another name for this host, such as `localhost`.
    pub fn url_for(&self, host: &str) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{host}:{}", self.addr.port())
    }

    /// TLS handshakes that failed: a client that did not trust the
    /// receiver, or (mTLS) brought no certificate the receiver trusts.
    pub fn tls_failures(&self) -> usize {
        *lock(&self.state.tls_failures)
    }

    /// Closes the listener and every connection: new connections are
    /// refused until [`restart`](Self::restart).
    pub fn stop(&mut self) {
        if let Some(server) = self.server.take() {
            server.task.abort();
            // Aborting an idle task drops it at once; the bound only keeps
            // a wedged runtime from hanging the test.
            let _ = server.closed.recv_timeout(Duration::from_secs(10));
        }
    }

    /// Listens again on the same port, keeping what was received.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        if self.server.is_some() {
            bail!("the receiver on {} is running", self.addr);
        }
        self.serve()
    }

    /// Answers the next requests so, in order, before the default.
    pub fn answer_next(&self, answers: impl IntoIterator<Item = Answer>) {
        lock(&self.state.script).extend(answers);
    }

    /// How requests are answered once the scripted answers are used up.
    pub fn set_default_answer(&self, answer: Answer) {
        *lock(&self.state.default_answer) = Some(answer);
    }

    /// Requests answered with an error.
    pub fn refused(&self) -> usize {
        *lock(&self.state.refused)
    }

    /// The accepted trace requests, in arrival order.
    pub fn traces(&self) -> Vec<ExportTraceServiceRequest> {
        lock(&self.state.traces).clone()
    }

    pub fn metrics(&self) -> Vec<ExportMetricsServiceRequest> {
        lock(&self.state.metrics).clone()
    }

    /// The headers (gRPC: metadata) of every well-formed request, refused
    /// ones included; names lower-case.
    pub fn headers(&self) -> Vec<Vec<(String, String)>> {
        lock(&self.state.headers).clone()
    }

    /// Every accepted span with its resource.
    pub fn spans(&self) -> Vec<(Resource, Span)> {
        lock(&self.state.traces)
            .iter()
            .flat_map(|r| &r.resource_spans)
            .flat_map(|rs| {
                let resource = rs.resource.clone().unwrap_or_default();
                rs.scope_spans.iter().flat_map(|ss| &ss.spans).map(move |s| (resource.clone(), s.clone()))
            })
            .collect()
    }

    /// Waits up to `timeout` for at least `count` spans.
    pub fn wait_for_spans(&self, count: usize, timeout: Duration) -> anyhow::Result<Vec<(Resource, Span)>> {
        wait_until(timeout, || {
            let spans = self.spans();
            (spans.len() >= count).then_some(spans)
        })
        .with_context(|| format!("{} of {count} spans arrived within {timeout:?}", self.spans().len()))
    }

    /// Waits up to `timeout` for at least `count` metrics requests.
    pub fn wait_for_metrics(
        &self,
        count: usize,
        timeout: Duration,
    ) -> anyhow::Result<Vec<ExportMetricsServiceRequest>> {
        wait_until(timeout, || {
            let metrics = self.metrics();
            (metrics.len() >= count).then_some(metrics)
        })
        .with_context(|| format!("{} of {count} metrics requests arrived within {timeout:?}", self.metrics().len()))
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Polls `check` every 20 ms until it gives a value or `timeout` passes.
pub fn wait_until<T>(timeout: Duration, mut check: impl FnMut() -> Option<T>) -> anyhow::Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return Ok(value);
        }
        if Instant::now() >= deadline {
            bail!("not within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

async fn accept(
    listener: StdListener,
    protocol: Protocol,
    tls: Option<TlsAcceptor>,
    state: Arc<State>,
    closed: Closed,
) {
    // Declared first, dropped last: after the listener and connections.
    let _closed = closed;
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("OTLP receiver: cannot listen: {e}");
            return;
        }
    };
    // Dropped (so aborted) with this task: stop closes connections too.
    let mut connections = JoinSet::new();
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of descriptors and the like: pass, rather than spin.
                eprintln!("OTLP receiver: accept: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        while connections.try_join_next().is_some() {}
        let state = Arc::clone(&state);
        let tls = tls.clone();
        connections.spawn(async move {
            let Some(acceptor) = tls else { return serve(protocol, stream, state).await };
            // In the connection's task, so that a slow handshake holds up
            // no other; bounded, so that a client that stalls cannot hold
            // this one forever.
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(stream)) => serve(protocol, stream, state).await,
                Ok(Err(_)) | Err(_) => *lock(&state.tls_failures) += 1,
            }
        });
    }
}

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

async fn serve<S>(protocol: Protocol, stream: S, state: Arc<State>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    match protocol {
        Protocol::Grpc => serve_grpc(stream, state).await,
        Protocol::Http => serve_http(stream, state).await,
    }
}

const METRICS_SERVICE_PREFIX: &str = "/opentelemetry.proto.collector.metrics.v1.MetricsService/";

async fn serve_grpc<S>(stream: S, state: Arc<State>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let traces = TraceServiceServer::new(Traces(Arc::clone(&state))).accept_compressed(CompressionEncoding::Gzip);
    let metrics = MetricsServiceServer::new(Metrics(state)).accept_compressed(CompressionEncoding::Gzip);
    // Two services on one connection without tonic's router (an axum
    // dependency): dispatch on the method path.
    let service = service_fn(move |request: Request<Incoming>| {
        let mut traces = traces.clone();
        let mut metrics = metrics.clone();
        async move {
            if request.uri().path().starts_with(METRICS_SERVICE_PREFIX) {
                metrics.call(request).await
            } else {
                traces.call(request).await
            }
        }
    });
    // An error is the client going away: nothing to do.
    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
        .serve_connection(TokioIo::new(stream), service)
        .await;
}

fn metadata(metadata: &tonic::metadata::MetadataMap) -> Vec<(String, String)> {
    metadata
        .clone()
        .into_headers()
        .iter()
        .map(|(k, v)| (k.as_str().to_owned(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
        .collect()
}

fn grpc_refusal(answer: Answer) -> tonic::Status {
    match answer {
        Answer::Throttle { .. } => tonic::Status::resource_exhausted("the receiver is throttling"),
        Answer::Invalid => tonic::Status::invalid_argument("the receiver refuses this"),
        _ => tonic::Status::unavailable("the receiver is unavailable"),
    }
}

struct Traces(Arc<State>);

#[tonic::async_trait]
impl TraceService for Traces {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let answer = self.0.answer(metadata(request.metadata()));
        let response = trace_response(&self.0, answer, request.into_inner()).ok_or_else(|| grpc_refusal(answer))?;
        Ok(tonic::Response::new(response))
    }
}

struct Metrics(Arc<State>);

#[tonic::async_trait]
impl MetricsService for Metrics {
    async fn export(
        &self,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        let answer = self.0.answer(metadata(request.metadata()));
        let response = metrics_response(&self.0, answer, request.into_inner()).ok_or_else(|| grpc_refusal(answer))?;
        Ok(tonic::Response::new(response))
    }
}

/// Keeps the request and says what to answer; `None` when refusing.
fn trace_response(
    state: &State,
    answer: Answer,
    request: ExportTraceServiceRequest,
) -> Option<ExportTraceServiceResponse> {
    let partial_success = match answer {
        Answer::Ok => None,
        Answer::PartialReject(n) => {
            Some(ExportTracePartialSuccess { rejected_spans: n, error_message: format!("rejected {n} spans") })
        }
        _ => return None,
    };
    lock(&state.traces).push(request);
    Some(ExportTraceServiceResponse { partial_success })
}

fn metrics_response(
    state: &State,
    answer: Answer,
    request: ExportMetricsServiceRequest,
) -> Option<ExportMetricsServiceResponse> {
    let partial_success = match answer {
        Answer::Ok => None,
        Answer::PartialReject(n) => Some(ExportMetricsPartialSuccess {
            rejected_data_points: n,
            error_message: format!("rejected {n} data points"),
        }),
        _ => return None,
    };
    lock(&state.metrics).push(request);
    Some(ExportMetricsServiceResponse { partial_success })
}

async fn serve_http<S>(stream: S, state: Arc<State>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |request| handle_http(request, Arc::clone(&state)));
    let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
}

fn reply(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response
}

async fn handle_http(request: Request<Incoming>, state: Arc<State>) -> Result<Response<Full<Bytes>>, Infallible> {
    let traces = match (request.method(), request.uri().path()) {
        (&Method::POST, "/v1/traces") => true,
        (&Method::POST, "/v1/metrics") => false,
        _ => return Ok(reply(StatusCode::NOT_FOUND, "not an OTLP path")),
    };
    let headers: Vec<(String, String)> = request
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str().to_owned(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
        .collect();
    let gzip = request.headers().get(hyper::header::CONTENT_ENCODING).is_some_and(|v| v == "gzip");
    let body = match request.into_body().collect().await {
        Ok(body) => body.to_bytes(),
        Err(e) => return Ok(reply(StatusCode::BAD_REQUEST, format!("reading the body: {e}"))),
    };
    let body = if gzip {
        let mut plain = Vec::new();
        if let Err(e) = flate2::read::GzDecoder::new(&body[..]).read_to_end(&mut plain) {
            return Ok(reply(StatusCode::BAD_REQUEST, format!("gunzip: {e}")));
        }
        Bytes::from(plain)
    } else {
        body
    };
    let response = if traces {
        let Ok(decoded) = ExportTraceServiceRequest::decode(body) else {
            return Ok(reply(StatusCode::BAD_REQUEST, "not an ExportTraceServiceRequest"));
        };
        let answer = state.answer(headers);
        trace_response(&state, answer, decoded).map(|r| r.encode_to_vec()).ok_or(answer)
    } else {
        let Ok(decoded) = ExportMetricsServiceRequest::decode(body) else {
            return Ok(reply(StatusCode::BAD_REQUEST, "not an ExportMetricsServiceRequest"));
        };
        let answer = state.answer(headers);
        metrics_response(&state, answer, decoded).map(|r| r.encode_to_vec()).ok_or(answer)
    };
    Ok(match response {
        Ok(body) => {
            let mut response = reply(StatusCode::OK, body);
            response
                .headers_mut()
                .insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static("application/x-protobuf"));
            response
        }
        Err(Answer::Throttle { retry_after_secs }) => {
            let mut response = reply(StatusCode::TOO_MANY_REQUESTS, "throttled");
            response.headers_mut().insert(hyper::header::RETRY_AFTER, retry_after_secs.into());
            response
        }
        Err(Answer::Invalid) => reply(StatusCode::BAD_REQUEST, "the receiver refuses this"),
        Err(_) => reply(StatusCode::SERVICE_UNAVAILABLE, "the receiver is unavailable"),
    })
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(ring::default_provider())
}

/// A certificate authority made at test time (ECDSA P-256).
pub struct TestCa(CertifiedIssuer<'static, KeyPair>);

impl TestCa {
    pub fn new(name: &str) -> anyhow::Result<Self> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        Ok(Self(CertifiedIssuer::self_signed(params, KeyPair::generate()?)?))
    }

    /// The CA's certificate, PEM.
    pub fn pem(&self) -> String {
        self.0.pem()
    }

    pub fn der(&self) -> CertificateDer<'static> {
        self.0.der().clone()
    }

    /// A server certificate for `names`: DNS names or IP addresses.
    pub fn server(&self, names: &[&str]) -> anyhow::Result<Identity> {
        self.issue(names, ExtendedKeyUsagePurpose::ServerAuth)
    }

    /// A client certificate (for mTLS) naming `name`.
    pub fn client(&self, name: &str) -> anyhow::Result<Identity> {
        self.issue(&[name], ExtendedKeyUsagePurpose::ClientAuth)
    }

    fn issue(&self, names: &[&str], usage: ExtendedKeyUsagePurpose) -> anyhow::Result<Identity> {
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let mut params = CertificateParams::new(names.clone())?;
        params.distinguished_name.push(DnType::CommonName, names.first().cloned().unwrap_or_default());
        params.extended_key_usages = vec![usage];
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate()?;
        let certificate = params.signed_by(&key, &self.0)?;
        Ok(Identity {
            certificate: certificate.der().clone(),
            certificate_pem: certificate.pem(),
            key_der: key.serialize_der(),
            key_pem: key.serialize_pem(),
        })
    }
}

/// A certificate and its private key (PKCS#8).
#[derive(Clone)]
pub struct Identity {
    pub certificate: CertificateDer<'static>,
    pub certificate_pem: String,
    pub key_der: Vec<u8>,
    pub key_pem: String,
}

impl Identity {
    fn key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_der.clone()))
    }
}

/// How a receiver serves TLS.
#[derive(Clone)]
pub struct ServerTls {
    pub identity: Identity,
    /// mTLS: a client must present a certificate this CA signed.
    pub client_ca: Option<CertificateDer<'static>>,
}

impl ServerTls {
    fn acceptor(&self, protocol: Protocol) -> anyhow::Result<TlsAcceptor> {
        let builder = rustls::ServerConfig::builder_with_provider(provider()).with_safe_default_protocol_versions()?;
        let builder = match &self.client_ca {
            Some(ca) => {
                let mut roots = RootCertStore::empty();
                roots.add(ca.clone())?;
                let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider()).build()?;
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let mut config = builder
            .with_single_cert(vec![self.identity.certificate.clone()], self.identity.key())
            .context("the receiver's certificate")?;
        config.alpn_protocols = match protocol {
            Protocol::Grpc => vec![b"h2".to_vec()],
            Protocol::Http => vec![b"http/1.1".to_vec()],
        };
        Ok(TlsAcceptor::from(Arc::new(config)))
    }
}

/// A scratch directory for PEM files, removed on drop.
pub struct PemDir(PathBuf);

impl PemDir {
    pub fn new() -> anyhow::Result<Self> {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("kscope-tests-pem-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(Self(dir))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// Writes `contents` to `name`; its path, as the variables take it.
    pub fn write(&self, name: &str, contents: &str) -> anyhow::Result<String> {
        let path = self.0.join(name);
        std::fs::write(&path, contents).with_context(|| format!("writing {}", path.display()))?;
        path.to_str().map(str::to_owned).context("a temp dir path that is not UTF-8")
    }
}

impl Drop for PemDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
