//! Spans: a bounded queue the pipeline offers to without ever waiting, and
//! a task that batches, groups by resource and sends.

use std::{
    collections::HashMap,
    sync::{Arc, atomic::Ordering},
};

use opentelemetry_proto::tonic::{
    collector::trace::v1::ExportTraceServiceRequest,
    common::v1::InstrumentationScope,
    trace::v1::{ResourceSpans, ScopeSpans},
};
use tokio::{
    sync::{mpsc, watch},
    task::JoinHandle,
    time::{Instant, sleep},
};

use super::{
    ExportCounts, Stop, Warn, add,
    config::TraceConfig,
    transport::{Sent, Transport, send},
};
use crate::{
    export::SpanItem,
    telemetry::semconv::{SCHEMA_URL, SCOPE_NAME},
};

/// Offers spans to the export task; clones share the queue. The task
/// flushes and ends when the last sender is dropped.
#[derive(Clone)]
pub struct SpanSender {
    inner: Arc<SenderInner>,
}

impl std::fmt::Debug for SpanSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpanSender").field("capacity", &self.inner.capacity).finish_non_exhaustive()
    }
}

struct SenderInner {
    // Unbounded as a channel; `counts.queue_depth` is the bound, so that it
    // covers the batch being sent too and memory stays bounded while the
    // collector is down.
    tx: mpsc::UnboundedSender<SpanItem>,
    capacity: u64,
    counts: Arc<ExportCounts>,
    // Dropped with the last sender: tells the task to stop retrying.
    _stop: watch::Sender<bool>,
}

impl SpanSender {
    /// Queues `item` for export, or drops it (counted) when the queue is
    /// full. Never blocks.
    pub fn offer(&self, item: SpanItem) {
        let counts = &self.inner.counts;
        add(&counts.spans_offered, 1);
        let capacity = self.inner.capacity;
        let admitted = counts
            .queue_depth
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |depth| (depth < capacity).then_some(depth + 1))
            .is_ok();
        if !admitted {
            add(&counts.spans_dropped, 1);
            return;
        }
        if self.inner.tx.send(item).is_err() {
            // The task is gone (it only ends once every sender is dropped,
            // so it panicked): the span goes nowhere, and says so.
            counts.queue_depth.fetch_sub(1, Ordering::AcqRel);
            add(&counts.spans_dropped, 1);
        }
    }
}

pub struct SpanExporter;

impl SpanExporter {
    /// Starts the export task on the current tokio runtime.
    pub fn spawn(config: TraceConfig, counts: Arc<ExportCounts>) -> (SpanSender, JoinHandle<()>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let (stop_tx, stop_rx) = watch::channel(false);
        let sender = SpanSender {
            inner: Arc::new(SenderInner {
                tx,
                capacity: u64::try_from(config.max_queue_size).unwrap_or(u64::MAX),
                counts: Arc::clone(&counts),
                _stop: stop_tx,
            }),
        };
        let task = tokio::spawn(run(config, rx, counts, Stop::new(stop_rx)));
        (sender, task)
    }
}

async fn run(
    config: TraceConfig,
    mut rx: mpsc::UnboundedReceiver<SpanItem>,
    counts: Arc<ExportCounts>,
    mut stop: Stop,
) {
    let transport = Transport::new(&config.export);
    let mut warn = Warn::new("traces");
    let batch_size = config.max_export_batch_size.max(1);
    let mut batch = Vec::with_capacity(batch_size);
    // Once a batch failed while stopping, the rest are not tried: a
    // collector that is down would otherwise hold shutdown for a timeout
    // per batch.
    let mut failed_while_stopping = false;
    loop {
        // Idle until a span comes; its batch leaves when full or when it has
        // waited the schedule delay.
        match rx.recv().await {
            Some(item) => batch.push(item),
            None => break,
        }
        let mut closed = false;
        let timer = sleep(config.schedule_delay);
        tokio::pin!(timer);
        while batch.len() < batch_size {
            tokio::select! {
                biased;
                item = rx.recv() => match item {
                    Some(item) => batch.push(item),
                    None => {
                        closed = true;
                        break;
                    }
                },
                () = &mut timer => break,
            }
        }

        let n = batch.len();
        let request = ExportTraceServiceRequest { resource_spans: group(batch.drain(..)) };
        let outcome = if failed_while_stopping {
            Sent::Failed("not sent: the collector failed while stopping".to_owned())
        } else {
            let deadline = if stop.is_stopped() { Instant::now() } else { Instant::now() + config.max_retry_time };
            let request = &request;
            let transport = &transport;
            send(|| transport.traces(request), deadline, &counts, &mut stop, &mut warn).await
        };
        match outcome {
            Sent::Accepted(accepted) => {
                let rejected = usize::try_from(accepted.rejected).unwrap_or(usize::MAX).min(n);
                add(&counts.spans_exported, n - rejected);
                add(&counts.spans_failed, rejected);
                if rejected > 0 {
                    warn.warn(&format!("the collector rejected {rejected} of {n} spans: {}", accepted.message));
                }
            }
            Sent::Failed(reason) => {
                add(&counts.spans_failed, n);
                if stop.is_stopped() {
                    failed_while_stopping = true;
                }
                warn.warn(&format!("{n} spans lost: {reason}"));
            }
        }
        counts.queue_depth.fetch_sub(u64::try_from(n).unwrap_or(u64::MAX), Ordering::AcqRel);
        if closed {
            break;
        }
    }
}

/// One `ResourceSpans` per resource (spans of one process share one `Arc`),
/// in the order resources first appear.
pub fn group(items: impl Iterator<Item = SpanItem>) -> Vec<ResourceSpans> {
    let mut index = HashMap::new();
    let mut out: Vec<ResourceSpans> = Vec::new();
    for SpanItem { resource, span } in items {
        let i = *index.entry(Arc::as_ptr(&resource)).or_insert_with(|| {
            out.push(ResourceSpans {
                resource: Some((*resource).clone()),
                scope_spans: vec![ScopeSpans {
                    scope: Some(scope()),
                    spans: Vec::new(),
                    schema_url: SCHEMA_URL.to_owned(),
                }],
                schema_url: SCHEMA_URL.to_owned(),
            });
            out.len() - 1
        });
        if let Some(scope_spans) = out.get_mut(i).and_then(|r| r.scope_spans.first_mut()) {
            scope_spans.spans.push(span);
        }
    }
    out
}

fn scope() -> InstrumentationScope {
    InstrumentationScope {
        name: SCOPE_NAME.to_owned(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::{resource::v1::Resource, trace::v1::Span};

    use super::*;

    fn resource(pid: u32) -> Arc<Resource> {
        Arc::new(Resource { dropped_attributes_count: pid, ..Default::default() })
    }

    fn span(name: &str) -> Span {
        Span { name: name.to_owned(), ..Default::default() }
    }

    #[test]
    fn export_groups_spans_by_resource_pointer_in_first_seen_order() {
        let (a, b) = (resource(1), resource(2));
        // Equal content, another Arc: another process as far as grouping goes.
        let a_again = resource(1);
        let items = [(&b, "b1"), (&a, "a1"), (&b, "b2"), (&a_again, "x1"), (&a, "a2")]
            .into_iter()
            .map(|(r, name)| SpanItem { resource: Arc::clone(r), span: span(name) });
        let grouped = group(items);
        let expected = |r: &Arc<Resource>, names: &[&str]| ResourceSpans {
            resource: Some((**r).clone()),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "kscope".to_owned(),
                    version: env!("CARGO_PKG_VERSION").to_owned(),
                    ..Default::default()
                }),
                spans: names.iter().map(|n| span(n)).collect(),
                schema_url: SCHEMA_URL.to_owned(),
            }],
            schema_url: SCHEMA_URL.to_owned(),
        };
        assert_eq!(
            grouped,
            vec![expected(&b, &["b1", "b2"]), expected(&a, &["a1", "a2"]), expected(&a_again, &["x1"])]
        );
        assert!(group(std::iter::empty()).is_empty());
    }

    #[tokio::test]
    async fn export_offer_drops_beyond_the_queue_without_blocking() {
        // A collector nobody listens on; the batch never leaves within the
        // test, so the queue stays full.
        let config = TraceConfig {
            export: crate::export::otlp::SignalConfig {
                endpoint: "http://127.0.0.1:9/v1/traces".to_owned(),
                protocol: crate::export::otlp::Protocol::HttpProtobuf,
                headers: Vec::new(),
                timeout: std::time::Duration::from_secs(1),
                compression: crate::export::otlp::Compression::None,
                tls: None,
            },
            max_queue_size: 3,
            max_export_batch_size: 2,
            schedule_delay: std::time::Duration::from_secs(3600),
            max_retry_time: std::time::Duration::from_secs(3600),
        };
        let counts = Arc::new(ExportCounts::default());
        let (sender, task) = SpanExporter::spawn(config, Arc::clone(&counts));
        let r = resource(1);
        for i in 0..10 {
            sender.offer(SpanItem { resource: Arc::clone(&r), span: span(&i.to_string()) });
        }
        let c = counts.snapshot();
        assert_eq!((c.spans_offered, c.spans_dropped, c.queue_depth), (10, 7, 3));
        task.abort();
    }
}
