//! Where and how to export, resolved the way every OpenTelemetry SDK does it
//! (the OTLP exporter and SDK environment variable specifications), with
//! kscope's command-line flags winning over the environment.
//!
//! Resolution is a pure function of an environment lookup and the flags, so
//! every rule is unit-tested without touching the process environment.
//!
//! Precedence, per setting and signal: the per-signal flag, the generic flag,
//! the per-signal variable (`OTEL_EXPORTER_OTLP_TRACES_*`), the generic
//! variable (`OTEL_EXPORTER_OTLP_*`), the default. An empty variable counts
//! as unset (the SDK specification says so).
//!
//! TLS: an `https://` endpoint uses TLS, trusting the system's root
//! certificates unless `OTEL_EXPORTER_OTLP_CERTIFICATE` names a PEM file of
//! CA certificates to trust instead; `OTEL_EXPORTER_OTLP_CLIENT_KEY` and
//! `_CLIENT_CERTIFICATE` give a client identity for mTLS. A gRPC endpoint
//! without a scheme (`collector:4317`) uses TLS unless
//! `OTEL_EXPORTER_OTLP_INSECURE` is true; a scheme always wins over it. The
//! PEM files are read and checked here, so a bad one stops kscope at start;
//! for an `http://` endpoint they are not read.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use hyper::http::{HeaderName, HeaderValue, Uri};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::tls;

pub const ENDPOINT: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";
pub const PROTOCOL: &str = "OTEL_EXPORTER_OTLP_PROTOCOL";
pub const HEADERS: &str = "OTEL_EXPORTER_OTLP_HEADERS";
pub const TIMEOUT: &str = "OTEL_EXPORTER_OTLP_TIMEOUT";
pub const COMPRESSION: &str = "OTEL_EXPORTER_OTLP_COMPRESSION";
pub const TRACES_EXPORTER: &str = "OTEL_TRACES_EXPORTER";
pub const METRICS_EXPORTER: &str = "OTEL_METRICS_EXPORTER";
pub const METRIC_EXPORT_INTERVAL: &str = "OTEL_METRIC_EXPORT_INTERVAL";
pub const BSP_MAX_QUEUE_SIZE: &str = "OTEL_BSP_MAX_QUEUE_SIZE";
pub const BSP_MAX_EXPORT_BATCH_SIZE: &str = "OTEL_BSP_MAX_EXPORT_BATCH_SIZE";
pub const BSP_SCHEDULE_DELAY: &str = "OTEL_BSP_SCHEDULE_DELAY";
pub const RESOURCE_ATTRIBUTES: &str = "OTEL_RESOURCE_ATTRIBUTES";
/// A PEM file of the CA certificates to trust instead of the system's.
pub const CERTIFICATE: &str = "OTEL_EXPORTER_OTLP_CERTIFICATE";
/// mTLS: the PEM files of kscope's private key and certificate (chain).
pub const CLIENT_KEY: &str = "OTEL_EXPORTER_OTLP_CLIENT_KEY";
pub const CLIENT_CERTIFICATE: &str = "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE";
/// Plaintext for a gRPC endpoint given without a scheme.
pub const INSECURE: &str = "OTEL_EXPORTER_OTLP_INSECURE";

/// The names [`ConfigError`] uses for [`OtlpFlags`]' fields: the command
/// line should spell its flags this way so that errors name what the user
/// typed.
pub mod flag {
    pub const ENDPOINT: &str = "--otlp-endpoint";
    pub const PROTOCOL: &str = "--otlp-protocol";
    pub const HEADER: &str = "--otlp-header";
    pub const TIMEOUT: &str = "--otlp-timeout";
    pub const TRACES_ENDPOINT: &str = "--otlp-traces-endpoint";
    pub const METRICS_ENDPOINT: &str = "--otlp-metrics-endpoint";
    pub const METRIC_EXPORT_INTERVAL: &str = "--otlp-metric-export-interval";
    pub const QUEUE_SIZE: &str = "--otlp-queue-size";
    pub const CERTIFICATE: &str = "--otlp-certificate";
    pub const CLIENT_KEY: &str = "--otlp-client-key";
    pub const CLIENT_CERTIFICATE: &str = "--otlp-client-certificate";
}

/// The spec's default protocol. Note its default port (4318) differs from
/// gRPC's (4317): an endpoint on 4317 needs `grpc` said explicitly.
pub const DEFAULT_PROTOCOL: Protocol = Protocol::HttpProtobuf;
pub const DEFAULT_GRPC_ENDPOINT: &str = "http://localhost:4317";
pub const DEFAULT_HTTP_ENDPOINT: &str = "http://localhost:4318";
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(10_000);
pub const DEFAULT_METRIC_EXPORT_INTERVAL: Duration = Duration::from_millis(60_000);
/// Larger than the SDK's 2048: an agent sees every process's spans, and a
/// short collector outage should not cost them all.
pub const DEFAULT_QUEUE_SIZE: usize = 16_384;
pub const DEFAULT_BATCH_SIZE: usize = 512;
/// Shorter than the SDK's 5 s, so spans show up in a collector about as
/// soon as they do on the console.
pub const DEFAULT_SCHEDULE_DELAY: Duration = Duration::from_millis(1_000);
/// How long one batch of spans is retried before its spans count as failed.
pub const DEFAULT_MAX_RETRY_TIME: Duration = Duration::from_secs(30);

/// What the user set that kscope cannot use: the variable (or flag), its
/// value and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{name}={value:?}: {reason}")]
pub struct ConfigError {
    pub name: String,
    pub value: String,
    pub reason: String,
}

impl ConfigError {
    fn new(name: &str, value: &str, reason: impl Into<String>) -> Self {
        Self { name: name.to_owned(), value: value.to_owned(), reason: reason.into() }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Grpc,
    HttpProtobuf,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Grpc => "grpc",
            Self::HttpProtobuf => "http/protobuf",
        }
    }

    fn parse(name: &str, value: &str) -> Result<Self, ConfigError> {
        match value.trim() {
            "grpc" => Ok(Self::Grpc),
            "http/protobuf" => Ok(Self::HttpProtobuf),
            "http/json" => Err(ConfigError::new(name, value, "http/json is not supported; use http/protobuf or grpc")),
            _ => Err(ConfigError::new(name, value, "expected grpc or http/protobuf")),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
}

impl Compression {
    fn parse(name: &str, value: &str) -> Result<Self, ConfigError> {
        match value.trim() {
            "none" => Ok(Self::None),
            "gzip" => Ok(Self::Gzip),
            _ => Err(ConfigError::new(name, value, "expected gzip or none")),
        }
    }
}

/// How one signal's requests go out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignalConfig {
    /// HTTP: the URL requests are POSTed to (`…/v1/traces`). gRPC: the
    /// collector's base URL; the service path is gRPC's own.
    pub endpoint: String,
    pub protocol: Protocol,
    /// Sent with every request (gRPC metadata or HTTP headers); names are
    /// lower-cased, values percent-decoded.
    pub headers: Vec<(String, String)>,
    /// For one export attempt, connecting included.
    pub timeout: Duration,
    pub compression: Compression,
    /// How an `https://` endpoint is secured; `None` for `http://`.
    pub tls: Option<TlsConfig>,
}

/// TLS for one signal, its PEM files read and checked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsConfig {
    /// The CA certificates to trust instead of the system's roots
    /// (`OTEL_EXPORTER_OTLP_CERTIFICATE`); `None`: the system's.
    pub ca_certificates: Option<Vec<CertificateDer<'static>>>,
    /// The identity kscope presents for mTLS.
    pub client_identity: Option<ClientIdentity>,
}

/// A client certificate (chain) and its private key (Debug elides the key).
#[derive(Debug, PartialEq, Eq)]
pub struct ClientIdentity {
    pub certificate_chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

impl Clone for ClientIdentity {
    fn clone(&self) -> Self {
        Self { certificate_chain: self.certificate_chain.clone(), key: self.key.clone_key() }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceConfig {
    pub export: SignalConfig,
    /// Spans waiting or being sent, at most; more are dropped (and counted).
    pub max_queue_size: usize,
    pub max_export_batch_size: usize,
    /// The longest a span waits for its batch to fill.
    pub schedule_delay: Duration,
    /// How long one batch is retried before its spans count as failed. No
    /// variable sets it; tests shorten it.
    pub max_retry_time: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsConfig {
    pub export: SignalConfig,
    pub interval: Duration,
}

/// Both signals; `None` where the signal is off (`OTEL_*_EXPORTER=none`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtlpConfig {
    pub traces: Option<TraceConfig>,
    pub metrics: Option<MetricsConfig>,
}

/// The command line's OTLP flags; each wins over its variables.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OtlpFlags {
    /// Generic, like `OTEL_EXPORTER_OTLP_ENDPOINT` (HTTP: `/v1/<signal>` is
    /// appended).
    pub endpoint: Option<String>,
    pub protocol: Option<String>,
    /// Each `name=value` (value percent-decoded); when any is given they
    /// replace the variables' headers rather than add to them.
    pub headers: Vec<String>,
    pub timeout: Option<Duration>,
    /// Per signal, used as is.
    pub traces_endpoint: Option<String>,
    pub metrics_endpoint: Option<String>,
    pub metric_export_interval: Option<Duration>,
    pub queue_size: Option<usize>,
    /// Like `OTEL_EXPORTER_OTLP_CERTIFICATE`: CA certificates (PEM).
    pub certificate: Option<PathBuf>,
    /// Like `OTEL_EXPORTER_OTLP_CLIENT_KEY`: kscope's private key (PEM).
    pub client_key: Option<PathBuf>,
    /// Like `OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE` (PEM).
    pub client_certificate: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Signal {
    Traces,
    Metrics,
}

impl Signal {
    fn var(self, suffix: &str) -> String {
        let signal = match self {
            Self::Traces => "TRACES",
            Self::Metrics => "METRICS",
        };
        format!("OTEL_EXPORTER_OTLP_{signal}_{suffix}")
    }

    fn path(self) -> &'static str {
        match self {
            Self::Traces => "v1/traces",
            Self::Metrics => "v1/metrics",
        }
    }

    fn endpoint_flag(self, flags: &OtlpFlags) -> Option<(&'static str, &str)> {
        match self {
            Self::Traces => flags.traces_endpoint.as_deref().map(|v| (flag::TRACES_ENDPOINT, v)),
            Self::Metrics => flags.metrics_endpoint.as_deref().map(|v| (flag::METRICS_ENDPOINT, v)),
        }
    }
}

/// One setting as found: where (variable or flag name) and its value.
struct Found {
    name: String,
    value: String,
}

/// The environment with empty values as unset.
struct Env<F>(F);

impl<F: Fn(&str) -> Option<String>> Env<F> {
    fn get(&self, name: &str) -> Option<Found> {
        (self.0)(name).filter(|v| !v.trim().is_empty()).map(|value| Found { name: name.to_owned(), value })
    }

    /// The per-signal variable, else the generic one.
    fn signal(&self, signal: Signal, suffix: &str, generic: &str) -> Option<Found> {
        self.get(&signal.var(suffix)).or_else(|| self.get(generic))
    }
}

impl OtlpConfig {
    /// The OTLP export configuration, or `None` when no endpoint is set
    /// anywhere (OTLP export is off) or both signals are off.
    ///
    /// Any endpoint, generic or per signal, flag or variable, turns export
    /// on; a signal then without an endpoint of its own goes to the spec's
    /// default (`http://localhost:4318/v1/<signal>`, gRPC
    /// `http://localhost:4317`) unless `OTEL_<SIGNAL>S_EXPORTER=none`.
    /// Settings of a signal that is off are not checked.
    ///
    /// `env` looks a variable up: `|name| std::env::var(name).ok()` for the
    /// process environment.
    pub fn resolve(env: impl Fn(&str) -> Option<String>, flags: &OtlpFlags) -> Result<Option<Self>, ConfigError> {
        let env = Env(env);
        let any_endpoint = flags.endpoint.is_some()
            || flags.traces_endpoint.is_some()
            || flags.metrics_endpoint.is_some()
            || [ENDPOINT.to_owned(), Signal::Traces.var("ENDPOINT"), Signal::Metrics.var("ENDPOINT")]
                .iter()
                .any(|var| env.get(var).is_some());
        if !any_endpoint {
            return Ok(None);
        }
        let traces = if exporter_enabled(&env, TRACES_EXPORTER)? { Some(trace_config(&env, flags)?) } else { None };
        let metrics = if exporter_enabled(&env, METRICS_EXPORTER)? {
            let interval = match flags.metric_export_interval {
                Some(d) => positive_duration(flag::METRIC_EXPORT_INTERVAL, d)?,
                None => env
                    .get(METRIC_EXPORT_INTERVAL)
                    .map(|f| millis(&f))
                    .transpose()?
                    .unwrap_or(DEFAULT_METRIC_EXPORT_INTERVAL),
            };
            Some(MetricsConfig { export: signal_config(&env, flags, Signal::Metrics)?, interval })
        } else {
            None
        };
        if traces.is_none() && metrics.is_none() {
            return Ok(None);
        }
        Ok(Some(Self { traces, metrics }))
    }

    /// [`resolve`](Self::resolve) over the process environment.
    pub fn from_process_env(flags: &OtlpFlags) -> Result<Option<Self>, ConfigError> {
        Self::resolve(|name| std::env::var(name).ok(), flags)
    }
}

/// `OTEL_RESOURCE_ATTRIBUTES` (`k=v,k2=v2`, values percent-decoded), in
/// the order given; empty when unset.
pub fn resource_attributes_from_env(
    env: impl Fn(&str) -> Option<String>,
) -> Result<Vec<(String, String)>, ConfigError> {
    match Env(env).get(RESOURCE_ATTRIBUTES) {
        Some(found) => key_values(&found.name, &found.value),
        None => Ok(Vec::new()),
    }
}

/// `OTEL_TRACES_EXPORTER` and the like: a comma-separated list in which
/// kscope knows `otlp` and `none`; unset means `otlp`.
fn exporter_enabled<F: Fn(&str) -> Option<String>>(env: &Env<F>, var: &str) -> Result<bool, ConfigError> {
    let Some(found) = env.get(var) else { return Ok(true) };
    let mut otlp = false;
    for name in found.value.split(',').map(str::trim) {
        match name {
            "otlp" => otlp = true,
            "none" => {}
            _ => {
                return Err(ConfigError::new(
                    var,
                    &found.value,
                    format!("kscope exports with otlp (or none), not {name:?}"),
                ));
            }
        }
    }
    Ok(otlp)
}

fn trace_config<F: Fn(&str) -> Option<String>>(env: &Env<F>, flags: &OtlpFlags) -> Result<TraceConfig, ConfigError> {
    let max_queue_size = match flags.queue_size {
        Some(n) => positive_count(flag::QUEUE_SIZE, &n.to_string())?,
        None => env
            .get(BSP_MAX_QUEUE_SIZE)
            .map(|f| positive_count(&f.name, &f.value))
            .transpose()?
            .unwrap_or(DEFAULT_QUEUE_SIZE),
    };
    let max_export_batch_size = match env.get(BSP_MAX_EXPORT_BATCH_SIZE) {
        Some(f) => {
            let n = positive_count(&f.name, &f.value)?;
            if n > max_queue_size {
                return Err(ConfigError::new(
                    &f.name,
                    &f.value,
                    format!("larger than the queue ({max_queue_size} spans)"),
                ));
            }
            n
        }
        None => DEFAULT_BATCH_SIZE.min(max_queue_size),
    };
    let schedule_delay =
        env.get(BSP_SCHEDULE_DELAY).map(|f| millis_or_zero(&f)).transpose()?.unwrap_or(DEFAULT_SCHEDULE_DELAY);
    Ok(TraceConfig {
        export: signal_config(env, flags, Signal::Traces)?,
        max_queue_size,
        max_export_batch_size,
        schedule_delay,
        max_retry_time: DEFAULT_MAX_RETRY_TIME,
    })
}

fn signal_config<F: Fn(&str) -> Option<String>>(
    env: &Env<F>,
    flags: &OtlpFlags,
    signal: Signal,
) -> Result<SignalConfig, ConfigError> {
    let protocol = match &flags.protocol {
        Some(p) => Protocol::parse(flag::PROTOCOL, p)?,
        None => match env.signal(signal, "PROTOCOL", PROTOCOL) {
            Some(f) => Protocol::parse(&f.name, &f.value)?,
            None => DEFAULT_PROTOCOL,
        },
    };

    // Only a generic endpoint gets the signal's path appended.
    let signal_endpoint =
        signal.endpoint_flag(flags).map(|(name, value)| Found { name: name.to_owned(), value: value.to_owned() });
    let generic_flag =
        flags.endpoint.as_ref().map(|value| Found { name: flag::ENDPOINT.to_owned(), value: value.clone() });
    let found = match (signal_endpoint, generic_flag) {
        (Some(f), _) => Some((f, true)),
        (None, Some(f)) => Some((f, false)),
        (None, None) => match env.get(&signal.var("ENDPOINT")) {
            Some(f) => Some((f, true)),
            None => env.get(ENDPOINT).map(|f| (f, false)),
        },
    };
    let (endpoint, secure) = match (found, protocol) {
        (Some((f, per_signal)), _) => endpoint(env, signal, &f, protocol, !per_signal)?,
        (None, Protocol::Grpc) => (DEFAULT_GRPC_ENDPOINT.to_owned(), false),
        (None, Protocol::HttpProtobuf) => (format!("{DEFAULT_HTTP_ENDPOINT}/{}", signal.path()), false),
    };
    let tls = if secure { Some(tls_config(env, flags, signal)?) } else { None };

    let headers = if flags.headers.is_empty() {
        match env.signal(signal, "HEADERS", HEADERS) {
            Some(f) => headers(&f.name, &f.value)?,
            None => Vec::new(),
        }
    } else {
        let mut all = Vec::new();
        for h in &flags.headers {
            all.extend(headers(flag::HEADER, h)?);
        }
        all
    };

    let timeout = match flags.timeout {
        Some(d) => positive_duration(flag::TIMEOUT, d)?,
        None => env.signal(signal, "TIMEOUT", TIMEOUT).map(|f| millis(&f)).transpose()?.unwrap_or(DEFAULT_TIMEOUT),
    };
    let compression = match env.signal(signal, "COMPRESSION", COMPRESSION) {
        Some(f) => Compression::parse(&f.name, &f.value)?,
        None => Compression::None,
    };
    Ok(SignalConfig { endpoint, protocol, headers, timeout, compression, tls })
}

/// A PEM file named by a flag or variable.
struct PemFile {
    name: String,
    path: PathBuf,
}

/// PEM files are small; this bounds what a wrong path (a device, a log)
/// can cost.
const MAX_PEM_BYTES: u64 = 4 << 20;

impl PemFile {
    /// The flag, else the per-signal variable, else the generic one.
    fn find<F: Fn(&str) -> Option<String>>(
        env: &Env<F>,
        signal: Signal,
        flag: (&str, Option<&PathBuf>),
        suffix: &str,
        generic: &str,
    ) -> Option<Self> {
        match flag {
            (name, Some(path)) => Some(Self { name: name.to_owned(), path: path.clone() }),
            (_, None) => {
                env.signal(signal, suffix, generic).map(|f| Self { name: f.name, path: PathBuf::from(f.value.trim()) })
            }
        }
    }

    fn error(&self, reason: impl Into<String>) -> ConfigError {
        ConfigError::new(&self.name, &self.path.display().to_string(), reason)
    }

    fn read(&self) -> Result<Vec<u8>, ConfigError> {
        read_limited(&self.path).map_err(|reason| self.error(reason))
    }
}

fn read_limited(path: &Path) -> Result<Vec<u8>, String> {
    use std::io::Read as _;
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_PEM_BYTES + 1).read_to_end(&mut bytes))
        .map_err(|e| format!("cannot read it: {e}"))?;
    if bytes.len() as u64 > MAX_PEM_BYTES {
        return Err(format!("larger than {} MiB: not a PEM file", MAX_PEM_BYTES >> 20));
    }
    Ok(bytes)
}

/// The CA certificates and client identity of an `https://` endpoint.
fn tls_config<F: Fn(&str) -> Option<String>>(
    env: &Env<F>,
    flags: &OtlpFlags,
    signal: Signal,
) -> Result<TlsConfig, ConfigError> {
    let ca_certificates =
        match PemFile::find(env, signal, (flag::CERTIFICATE, flags.certificate.as_ref()), "CERTIFICATE", CERTIFICATE) {
            Some(file) => {
                let certificates = tls::parse_certificates(&file.read()?).map_err(|r| file.error(r))?;
                tls::root_store(&certificates).map_err(|r| file.error(r))?;
                Some(certificates)
            }
            None => None,
        };
    let key = PemFile::find(env, signal, (flag::CLIENT_KEY, flags.client_key.as_ref()), "CLIENT_KEY", CLIENT_KEY);
    let certificate = PemFile::find(
        env,
        signal,
        (flag::CLIENT_CERTIFICATE, flags.client_certificate.as_ref()),
        "CLIENT_CERTIFICATE",
        CLIENT_CERTIFICATE,
    );
    let client_identity = match (key, certificate) {
        (None, None) => None,
        (Some(key), None) => {
            let partner =
                key.name.replace("CLIENT_KEY", "CLIENT_CERTIFICATE").replace("client-key", "client-certificate");
            return Err(key.error(format!("a client key needs its certificate: {partner} is not set")));
        }
        (None, Some(certificate)) => {
            let partner = certificate
                .name
                .replace("CLIENT_CERTIFICATE", "CLIENT_KEY")
                .replace("client-certificate", "client-key");
            return Err(certificate.error(format!("a client certificate needs its key: {partner} is not set")));
        }
        (Some(key), Some(certificate)) => {
            let certificate_chain = tls::parse_certificates(&certificate.read()?).map_err(|r| certificate.error(r))?;
            let private_key = tls::parse_key(&key.read()?).map_err(|r| key.error(r))?;
            tls::check_key(&private_key).map_err(|r| key.error(r))?;
            let identity = ClientIdentity { certificate_chain, key: private_key };
            tls::check_identity(&identity).map_err(|r| {
                key.error(format!("not usable with the client certificate {}: {r}", certificate.path.display()))
            })?;
            Some(identity)
        }
    };
    Ok(TlsConfig { ca_certificates, client_identity })
}

/// `OTEL_EXPORTER_OTLP_INSECURE`, a boolean as the SDK specification has
/// them: `true` (any case) is true; anything else false, with a warning
/// unless it is `false` or empty.
fn insecure<F: Fn(&str) -> Option<String>>(env: &Env<F>, signal: Signal) -> bool {
    let Some(found) = env.signal(signal, "INSECURE", INSECURE) else { return false };
    let value = found.value.trim();
    if value.eq_ignore_ascii_case("true") {
        return true;
    }
    if !value.eq_ignore_ascii_case("false") {
        tracing::warn!("{}={:?} is neither true nor false: taken as false (TLS)", found.name, found.value);
    }
    false
}

/// Headers kscope can send: valid HTTP names (lower-cased, as gRPC
/// metadata requires) and values.
fn headers(name: &str, raw: &str) -> Result<Vec<(String, String)>, ConfigError> {
    key_values(name, raw)?
        .into_iter()
        .map(|(key, value)| {
            let key = key.to_ascii_lowercase();
            if HeaderName::from_bytes(key.as_bytes()).is_err() {
                return Err(ConfigError::new(name, raw, format!("{key:?} is not a valid header name")));
            }
            if HeaderValue::from_str(&value).is_err() {
                return Err(ConfigError::new(name, raw, format!("the value of {key} is not a valid header value")));
            }
            Ok((key, value))
        })
        .collect()
}

/// An endpoint URL, with `/v1/<signal>` appended for a generic HTTP one
/// (`append`), and whether it uses TLS. A gRPC endpoint may come without a
/// scheme (`host:port`): it gets `https` unless `OTEL_EXPORTER_OTLP_INSECURE`
/// says otherwise.
fn endpoint<F: Fn(&str) -> Option<String>>(
    env: &Env<F>,
    signal: Signal,
    found: &Found,
    protocol: Protocol,
    append: bool,
) -> Result<(String, bool), ConfigError> {
    let err = |reason: &str| ConfigError::new(&found.name, &found.value, reason);
    let raw = found.value.trim();
    let uri: Uri = raw.parse().map_err(|_| err("not a URL"))?;
    let secure = match uri.scheme_str() {
        Some("http") => false,
        Some("https") => true,
        Some(_) => return Err(err("the scheme must be http or https")),
        None if protocol == Protocol::Grpc => !insecure(env, signal),
        None => return Err(err("expected a URL with a scheme, such as http://localhost:4318")),
    };
    let scheme = if secure { "https" } else { "http" };
    let Some(authority) = uri.authority() else { return Err(err("the URL has no host")) };
    if authority.host().is_empty() {
        return Err(err("the URL has no host"));
    }
    if uri.query().is_some() {
        return Err(err("a query string is not supported"));
    }
    let url = match protocol {
        Protocol::HttpProtobuf if append => {
            format!("{scheme}://{authority}{}/{}", uri.path().trim_end_matches('/'), signal.path())
        }
        _ if uri.scheme().is_none() => format!("{scheme}://{authority}"),
        _ => raw.to_owned(),
    };
    Ok((url, secure))
}

/// `k=v,k2=v2` as the W3C baggage format the spec names: items trimmed,
/// empty items skipped, values percent-decoded.
fn key_values(name: &str, raw: &str) -> Result<Vec<(String, String)>, ConfigError> {
    let mut out = Vec::new();
    for item in raw.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let Some((key, value)) = item.split_once('=') else {
            return Err(ConfigError::new(name, raw, format!("{item:?} is not key=value")));
        };
        let key = key.trim();
        if key.is_empty() {
            return Err(ConfigError::new(name, raw, format!("{item:?} has an empty key")));
        }
        let value =
            percent_decode(value.trim()).map_err(|why| ConfigError::new(name, raw, format!("{item:?}: {why}")))?;
        out.push((key.to_owned(), value));
    }
    Ok(out)
}

fn percent_decode(s: &str) -> Result<String, &'static str> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let digit = |j: usize| bytes.get(j).and_then(|&c| char::from(c).to_digit(16));
            let (Some(hi), Some(lo)) = (digit(i + 1), digit(i + 2)) else {
                return Err("`%` not followed by two hex digits");
            };
            // Two hex digits make at most 0xff.
            out.push(u8::try_from(hi * 16 + lo).map_err(|_| "bad percent escape")?);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "percent-decodes to invalid UTF-8")
}

/// Milliseconds, more than zero.
fn millis(found: &Found) -> Result<Duration, ConfigError> {
    let d = millis_or_zero(found)?;
    if d.is_zero() {
        return Err(ConfigError::new(&found.name, &found.value, "must be more than 0 ms"));
    }
    Ok(d)
}

fn millis_or_zero(found: &Found) -> Result<Duration, ConfigError> {
    found
        .value
        .trim()
        .parse::<u64>()
        .map(Duration::from_millis)
        .map_err(|_| ConfigError::new(&found.name, &found.value, "expected a whole number of milliseconds"))
}

fn positive_duration(name: &str, d: Duration) -> Result<Duration, ConfigError> {
    if d.is_zero() {
        return Err(ConfigError::new(name, &format!("{d:?}"), "must be more than zero"));
    }
    Ok(d)
}

fn positive_count(name: &str, value: &str) -> Result<usize, ConfigError> {
    match value.trim().parse::<usize>() {
        Ok(0) => Err(ConfigError::new(name, value, "must be more than 0")),
        Ok(n) => Ok(n),
        Err(_) => Err(ConfigError::new(name, value, "expected a whole number")),
    }
}

#[cfg(test)]
mod tests;
