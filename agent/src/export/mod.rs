//! Where spans and metrics leave kscope: OTLP (gRPC or HTTP/protobuf) and a
//! Prometheus endpoint. Console and JSON lines stay in `output`.
//!
//! The telemetry stage hands over OTLP protobuf values (from
//! `opentelemetry-proto`): finished spans with the resource (process) they
//! belong to, and a source of cumulative metrics read at each export.

use std::sync::Arc;

pub use opentelemetry_proto::tonic::{metrics::v1::ResourceMetrics, resource::v1::Resource, trace::v1::Span};

pub mod otlp;
pub mod prometheus;

/// One finished span and the resource (the traced process) it belongs to.
/// Spans of one process share one `Arc`, so exporters group by pointer.
#[derive(Debug, Clone)]
pub struct SpanItem {
    pub resource: Arc<Resource>,
    pub span: Span,
}

/// The current cumulative metrics, one entry per resource; called at each
/// export or scrape.
pub type MetricsSource = Arc<dyn Fn() -> Vec<ResourceMetrics> + Send + Sync>;
