//! OTLP export of spans and metrics to a collector, over gRPC or
//! HTTP/protobuf, in plaintext or TLS (mTLS too), configured as every
//! OpenTelemetry SDK is ([`config`]).
//!
//! Spans go through a bounded queue that never blocks the pipeline: when the
//! collector is slow or down, spans beyond the bound are dropped and
//! counted, and export resumes by itself when the collector is back. Metrics
//! are read from a [`MetricsSource`](super::MetricsSource) at each interval;
//! they are cumulative, so a lost export costs resolution, not totals.
//!
//! Every span offered ends up in exactly one of [`ExportCounts`]'
//! `spans_exported`, `spans_dropped`, `spans_failed` or (still) in
//! `queue_depth`, so the ledger adds up at any quiet moment.

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, Instant},
};

use tokio::sync::watch;

pub mod config;
mod metrics;
mod spans;
mod tls;
mod transport;

pub use config::{
    ClientIdentity, Compression, ConfigError, MetricsConfig, OtlpConfig, OtlpFlags, Protocol, SignalConfig, TlsConfig,
    TraceConfig, resource_attributes_from_env,
};
pub use metrics::MetricsExporter;
pub use spans::{SpanExporter, SpanSender, group as group_by_resource};

/// What the exporters did, shared with whoever reports it.
#[derive(Debug, Default)]
pub struct ExportCounts {
    /// Every span handed to [`SpanSender::offer`].
    pub spans_offered: AtomicU64,
    /// Accepted by the collector.
    pub spans_exported: AtomicU64,
    /// Not queued: the queue was full.
    pub spans_dropped: AtomicU64,
    /// Given up after retries, refused for good, or rejected by the
    /// collector's partial success.
    pub spans_failed: AtomicU64,
    pub metric_points_exported: AtomicU64,
    pub metric_points_failed: AtomicU64,
    /// Export attempts (spans and metrics, retries included).
    pub export_requests: AtomicU64,
    /// Attempts that failed (each retry counts).
    pub export_failures: AtomicU64,
    pub retries: AtomicU64,
    /// Spans queued or being sent: offered and not yet exported or failed.
    pub queue_depth: AtomicU64,
}

/// [`ExportCounts`] at one moment, as the summary's `export.otlp` prints it
/// (named `ExportCounts` in the schema; here that name is the counters).
pub use kscope_schema::ExportCounts as ExportCountsSnapshot;

impl ExportCounts {
    pub fn snapshot(&self) -> ExportCountsSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        ExportCountsSnapshot {
            spans_offered: get(&self.spans_offered),
            spans_exported: get(&self.spans_exported),
            spans_dropped: get(&self.spans_dropped),
            spans_failed: get(&self.spans_failed),
            metric_points_exported: get(&self.metric_points_exported),
            metric_points_failed: get(&self.metric_points_failed),
            export_requests: get(&self.export_requests),
            export_failures: get(&self.export_failures),
            retries: get(&self.retries),
            queue_depth: get(&self.queue_depth),
        }
    }
}

fn add(counter: &AtomicU64, n: usize) {
    counter.fetch_add(u64::try_from(n).unwrap_or(u64::MAX), Ordering::Relaxed);
}

/// Whether the exporter is stopping: the watched value turned true, or its
/// sender is gone (nobody is left to stop it later).
struct Stop {
    rx: watch::Receiver<bool>,
    stopped: bool,
}

impl Stop {
    fn new(rx: watch::Receiver<bool>) -> Self {
        Self { rx, stopped: false }
    }

    fn is_stopped(&mut self) -> bool {
        if !self.stopped {
            self.stopped = *self.rx.borrow() || self.rx.has_changed().is_err();
        }
        self.stopped
    }

    /// Returns once stopping; cancel-safe (the state is the watched value).
    async fn wait(&mut self) {
        if !self.stopped {
            // An error means the sender is gone: stopping too.
            let _ = self.rx.wait_for(|stop| *stop).await;
            self.stopped = true;
        }
    }
}

/// Failures are logged at most once per [`WARN_EVERY`], with how many were
/// not: a collector down for an hour must not flood the log.
const WARN_EVERY: Duration = Duration::from_secs(10);

struct Warn {
    signal: &'static str,
    last: Option<Instant>,
    suppressed: u64,
}

impl Warn {
    fn new(signal: &'static str) -> Self {
        Self { signal, last: None, suppressed: 0 }
    }

    fn warn(&mut self, message: &str) {
        let now = Instant::now();
        if self.last.is_some_and(|last| now.duration_since(last) < WARN_EVERY) {
            self.suppressed += 1;
            return;
        }
        tracing::warn!(signal = self.signal, suppressed = self.suppressed, "OTLP export: {message}");
        self.last = Some(now);
        self.suppressed = 0;
    }
}
