//! Metrics: at each interval, the source's cumulative metrics go out in one
//! request. A failed export is retried only until the next one is due,
//! which carries the same totals.

use std::sync::Arc;

use opentelemetry_proto::tonic::{
    collector::metrics::v1::ExportMetricsServiceRequest,
    metrics::v1::{ResourceMetrics, metric::Data},
};
use tokio::{
    sync::watch,
    task::JoinHandle,
    time::{Instant, sleep_until},
};

use super::{
    ExportCounts, Stop, Warn, add,
    config::MetricsConfig,
    transport::{Sent, Transport, send},
};
use crate::export::MetricsSource;

pub struct MetricsExporter;

impl MetricsExporter {
    /// Starts exporting every `config.interval` on the current tokio
    /// runtime. When `stop` turns true (or its sender is dropped) the task
    /// exports once more, without retries, and ends.
    pub fn spawn(
        config: MetricsConfig,
        source: MetricsSource,
        counts: Arc<ExportCounts>,
        stop: watch::Receiver<bool>,
    ) -> JoinHandle<()> {
        tokio::spawn(run(config, source, counts, Stop::new(stop)))
    }
}

async fn run(config: MetricsConfig, source: MetricsSource, counts: Arc<ExportCounts>, mut stop: Stop) {
    let transport = Transport::new(&config.export);
    let mut warn = Warn::new("metrics");
    let mut next = Instant::now() + config.interval;
    loop {
        tokio::select! {
            () = sleep_until(next) => {}
            () = stop.wait() => {}
        }
        let stopping = stop.is_stopped();
        next += config.interval;
        let now = Instant::now();
        if next <= now {
            // Behind (a long retry, a stalled runtime): skip what was missed.
            next = now + config.interval;
        }
        let deadline = if stopping { now } else { next };

        let resource_metrics = source();
        let points = data_points(&resource_metrics);
        if points > 0 {
            let request = ExportMetricsServiceRequest { resource_metrics };
            let transport = &transport;
            let request = &request;
            match send(|| transport.metrics(request), deadline, &counts, &mut stop, &mut warn).await {
                Sent::Accepted(accepted) => {
                    let rejected = usize::try_from(accepted.rejected).unwrap_or(usize::MAX).min(points);
                    add(&counts.metric_points_exported, points - rejected);
                    add(&counts.metric_points_failed, rejected);
                    if rejected > 0 {
                        warn.warn(&format!(
                            "the collector rejected {rejected} of {points} data points: {}",
                            accepted.message
                        ));
                    }
                }
                Sent::Failed(reason) => {
                    add(&counts.metric_points_failed, points);
                    warn.warn(&format!("{points} data points not exported: {reason}"));
                }
            }
        }
        if stopping {
            break;
        }
    }
}

/// Data points in gauges, sums, histograms and summaries.
pub(super) fn data_points(resource_metrics: &[ResourceMetrics]) -> usize {
    resource_metrics
        .iter()
        .flat_map(|r| &r.scope_metrics)
        .flat_map(|s| &s.metrics)
        .map(|m| match &m.data {
            Some(Data::Gauge(g)) => g.data_points.len(),
            Some(Data::Sum(s)) => s.data_points.len(),
            Some(Data::Histogram(h)) => h.data_points.len(),
            Some(Data::ExponentialHistogram(h)) => h.data_points.len(),
            Some(Data::Summary(s)) => s.data_points.len(),
            None => 0,
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::metrics::v1::{
        ExponentialHistogram, ExponentialHistogramDataPoint, Gauge, Histogram, HistogramDataPoint, Metric,
        NumberDataPoint, ScopeMetrics, Sum, Summary, SummaryDataPoint,
    };

    use super::*;

    fn metric(data: Option<Data>) -> Metric {
        Metric { data, ..Default::default() }
    }

    #[test]
    fn export_counts_data_points_of_every_kind() {
        let n = NumberDataPoint::default;
        let resource = |metrics| ResourceMetrics {
            scope_metrics: vec![ScopeMetrics { metrics, ..Default::default() }],
            ..Default::default()
        };
        let metrics = vec![
            resource(vec![
                metric(Some(Data::Gauge(Gauge { data_points: vec![n(), n()] }))),
                metric(Some(Data::Sum(Sum { data_points: vec![n(), n(), n()], ..Default::default() }))),
                metric(None),
            ]),
            resource(vec![
                metric(Some(Data::Histogram(Histogram {
                    data_points: vec![HistogramDataPoint::default()],
                    ..Default::default()
                }))),
                metric(Some(Data::ExponentialHistogram(ExponentialHistogram {
                    data_points: vec![ExponentialHistogramDataPoint::default(); 4],
                    ..Default::default()
                }))),
                metric(Some(Data::Summary(Summary { data_points: vec![SummaryDataPoint::default(); 5] }))),
            ]),
        ];
        assert_eq!(data_points(&metrics), 2 + 3 + 1 + 4 + 5);
        assert_eq!(data_points(&[]), 0);
    }
}
