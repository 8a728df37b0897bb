//! The Prometheus endpoint: OTLP metrics translated to the Prometheus text
//! exposition format (0.0.4) as the OpenTelemetry "Prometheus and
//! OpenMetrics Compatibility" specification describes, served over HTTP at
//! `/metrics`.

mod server;
mod text;

pub use server::{CONTENT_TYPE_TEXT, PrometheusError, PrometheusServer, serve};
pub use text::render;
