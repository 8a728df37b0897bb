//! Cumulative metrics per resource, bounded in series; read as OTLP
//! `ResourceMetrics` by the exporters (OTLP push, Prometheus scrape).

use std::{collections::BTreeMap, sync::Arc};

use opentelemetry_proto::tonic::{
    common::v1::{InstrumentationScope, KeyValue, any_value::Value},
    metrics::v1::{
        AggregationTemporality, Gauge, Histogram, HistogramDataPoint, Metric, NumberDataPoint, ResourceMetrics,
        ScopeMetrics, Sum, metric::Data, number_data_point,
    },
};

use super::{
    resource::string_attr,
    semconv::{self as sc, DURATION_BUCKETS, Instrument, MetricDef},
};
use crate::export::Resource;

#[derive(Debug, Clone)]
enum Aggregate {
    Histogram { buckets: [u64; DURATION_BUCKETS.len() + 1], sum: f64, count: u64, min: f64, max: f64 },
    Counter(u64),
    Seconds(f64),
    Gauge(i64),
}

#[derive(Debug, Clone)]
struct Series {
    attributes: Vec<KeyValue>,
    start_unix_ns: u64,
    value: Aggregate,
}

#[derive(Debug)]
struct ResourceEntry {
    resource: Arc<Resource>,
    /// (metric, hash of the sorted attributes) → the series with that hash.
    series: BTreeMap<(MetricDef, u64), Vec<Series>>,
    /// When the process exited (unix ns): kept for one more export or two.
    exited_unix_ns: Option<u64>,
}

/// The attribute of the series points go to past the series bound (the
/// SDKs' cardinality-limit convention).
static OVERFLOW: std::sync::LazyLock<KeyValue> = std::sync::LazyLock::new(|| KeyValue {
    key: "otel.metric.overflow".to_owned(),
    value: Some(opentelemetry_proto::tonic::common::v1::AnyValue { value: Some(Value::BoolValue(true)) }),
    ..Default::default()
});

/// Bounds of a [`MetricStore`].
#[derive(Debug, Clone, Copy)]
pub struct MetricLimits {
    /// Series across all resources; beyond, points go to one overflow series
    /// per metric and resource (`otel.metric.overflow=true`, as the SDKs do).
    pub max_series: usize,
    /// How long an exited process's series are still reported.
    pub exited_retention_ns: u64,
}

impl Default for MetricLimits {
    fn default() -> Self {
        Self { max_series: 20_000, exited_retention_ns: 120_000_000_000 }
    }
}

#[derive(Debug)]
pub struct MetricStore {
    limits: MetricLimits,
    /// By `service.instance.id`: a resource re-read for the same process
    /// keeps its series.
    resources: BTreeMap<String, ResourceEntry>,
    series: usize,
    /// Points recorded into an overflow series.
    pub overflowed_points: u64,
}

/// The identity of a resource: its `service.instance.id`.
fn instance_of(resource: &Resource) -> &str {
    resource
        .attributes
        .iter()
        .find(|kv| kv.key == sc::SERVICE_INSTANCE_ID)
        .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
            Value::StringValue(s) => Some(s.as_str()),
            _ => None,
        })
        .unwrap_or_default()
}

/// Sorts `attributes` by key and hashes them: the series key. Series with
/// equal hashes are told apart by comparing attributes, so a collision
/// costs a comparison, never a merge.
fn canonical(attributes: &mut [&KeyValue]) -> u64 {
    use std::hash::{Hash as _, Hasher as _};
    attributes.sort_by(|a, b| a.key.cmp(&b.key));
    let mut h = std::hash::DefaultHasher::new();
    for kv in attributes.iter() {
        kv.key.hash(&mut h);
        match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
            Some(Value::StringValue(s)) => (0u8, s).hash(&mut h),
            Some(Value::IntValue(i)) => (1u8, i).hash(&mut h),
            Some(Value::BoolValue(b)) => (2u8, b).hash(&mut h),
            Some(Value::DoubleValue(d)) => (3u8, d.to_bits()).hash(&mut h),
            _ => 4u8.hash(&mut h),
        }
    }
    h.finish()
}

impl MetricStore {
    pub fn new(limits: MetricLimits) -> Self {
        Self { limits, resources: BTreeMap::new(), series: 0, overflowed_points: 0 }
    }

    pub fn series(&self) -> usize {
        self.series
    }

    /// The series of `attributes` (in any order), made if new; cloned
    /// only then.
    fn series_mut(
        &mut self,
        resource: &Arc<Resource>,
        def: MetricDef,
        mut attributes: Vec<&KeyValue>,
        now_unix_ns: u64,
    ) -> &mut Series {
        let id = instance_of(resource);
        if !self.resources.contains_key(id) {
            self.resources.insert(
                id.to_owned(),
                ResourceEntry { resource: Arc::clone(resource), series: BTreeMap::new(), exited_unix_ns: None },
            );
        }
        let Some(entry) = self.resources.get_mut(id) else { unreachable!("inserted above") };
        let same = |s: &Series, attributes: &[&KeyValue]| s.attributes.iter().eq(attributes.iter().copied());
        let mut key = canonical(&mut attributes);
        let exists = entry.series.get(&(def, key)).is_some_and(|v| v.iter().any(|s| same(s, &attributes)));
        if !exists && self.series >= self.limits.max_series {
            self.overflowed_points += 1;
            attributes = vec![&OVERFLOW];
            key = canonical(&mut attributes);
        }
        let same_hash = entry.series.entry((def, key)).or_default();
        let index = match same_hash.iter().position(|s| same(s, &attributes)) {
            Some(i) => i,
            None => {
                self.series += 1;
                same_hash.push(Series {
                    attributes: attributes.into_iter().cloned().collect(),
                    start_unix_ns: now_unix_ns,
                    value: match def.instrument {
                        Instrument::DurationHistogram => Aggregate::Histogram {
                            buckets: [0; DURATION_BUCKETS.len() + 1],
                            sum: 0.0,
                            count: 0,
                            min: f64::INFINITY,
                            max: f64::NEG_INFINITY,
                        },
                        Instrument::Counter => Aggregate::Counter(0),
                        Instrument::SecondsCounter => Aggregate::Seconds(0.0),
                        Instrument::Gauge => Aggregate::Gauge(0),
                    },
                });
                same_hash.len() - 1
            }
        };
        &mut same_hash[index]
    }

    /// One duration, in seconds, into a histogram, with those of `from`'s
    /// attributes named in `keys` (nothing is cloned for a known series).
    pub fn record_from(
        &mut self,
        resource: &Arc<Resource>,
        def: MetricDef,
        (from, keys): (&[KeyValue], &[&str]),
        seconds: f64,
        now_unix_ns: u64,
    ) {
        let picked = keys.iter().filter_map(|k| from.iter().find(|kv| kv.key == *k)).collect();
        let series = self.series_mut(resource, def, picked, now_unix_ns);
        observe(&mut series.value, seconds);
    }

    /// One duration, in seconds, into a histogram.
    pub fn record(
        &mut self,
        resource: &Arc<Resource>,
        def: MetricDef,
        attributes: Vec<KeyValue>,
        seconds: f64,
        now_unix_ns: u64,
    ) {
        let series = self.series_mut(resource, def, attributes.iter().collect(), now_unix_ns);
        observe(&mut series.value, seconds);
    }

    pub fn add(
        &mut self,
        resource: &Arc<Resource>,
        def: MetricDef,
        attributes: Vec<KeyValue>,
        value: u64,
        now_unix_ns: u64,
    ) {
        if let Aggregate::Counter(total) =
            &mut self.series_mut(resource, def, attributes.iter().collect(), now_unix_ns).value
        {
            *total = total.saturating_add(value);
        }
    }

    /// Sets a counter to a cumulative total kept elsewhere (kscope's own counters).
    pub fn set_total(
        &mut self,
        resource: &Arc<Resource>,
        def: MetricDef,
        attributes: Vec<KeyValue>,
        total: u64,
        now_unix_ns: u64,
    ) {
        if let Aggregate::Counter(t) =
            &mut self.series_mut(resource, def, attributes.iter().collect(), now_unix_ns).value
        {
            *t = total;
        }
    }

    /// Sets a seconds counter to a cumulative total kept elsewhere.
    pub fn set_seconds(
        &mut self,
        resource: &Arc<Resource>,
        def: MetricDef,
        attributes: Vec<KeyValue>,
        total: f64,
        now_unix_ns: u64,
    ) {
        if let Aggregate::Seconds(t) =
            &mut self.series_mut(resource, def, attributes.iter().collect(), now_unix_ns).value
        {
            *t = total;
        }
    }

    pub fn set_gauge(
        &mut self,
        resource: &Arc<Resource>,
        def: MetricDef,
        attributes: Vec<KeyValue>,
        value: i64,
        now_unix_ns: u64,
    ) {
        if let Aggregate::Gauge(v) = &mut self.series_mut(resource, def, attributes.iter().collect(), now_unix_ns).value
        {
            *v = value;
        }
    }

    /// The process behind `resource` exited: its series go after the retention.
    pub fn exited(&mut self, resource: &Resource, now_unix_ns: u64) {
        if let Some(entry) = self.resources.get_mut(instance_of(resource)) {
            entry.exited_unix_ns.get_or_insert(now_unix_ns);
        }
    }

    /// Drops exited processes' series past the retention.
    pub fn expire(&mut self, now_unix_ns: u64) {
        let retention = self.limits.exited_retention_ns;
        let mut dropped = 0;
        self.resources.retain(|_, e| {
            let keep = e.exited_unix_ns.is_none_or(|t| now_unix_ns.saturating_sub(t) < retention);
            if !keep {
                dropped += e.series.values().map(Vec::len).sum::<usize>();
            }
            keep
        });
        self.series -= dropped;
    }

    /// Every series, cumulative, as OTLP.
    pub fn snapshot(&self, now_unix_ns: u64) -> Vec<ResourceMetrics> {
        self.resources.values().map(|entry| resource_metrics(entry, now_unix_ns)).collect()
    }
}

fn observe(value: &mut Aggregate, seconds: f64) {
    if let Aggregate::Histogram { buckets, sum, count, min, max } = value {
        let seconds = if seconds.is_finite() && seconds >= 0.0 { seconds } else { 0.0 };
        // Buckets are upper-inclusive, as OTLP's explicit bounds are.
        let i = DURATION_BUCKETS.iter().position(|b| seconds <= *b).unwrap_or(DURATION_BUCKETS.len());
        buckets[i] += 1;
        *sum += seconds;
        *count += 1;
        *min = min.min(seconds);
        *max = max.max(seconds);
    }
}

fn resource_metrics(entry: &ResourceEntry, now: u64) -> ResourceMetrics {
    let mut metrics: Vec<Metric> = Vec::new();
    for ((def, _), series) in entry.series.iter().flat_map(|(k, v)| v.iter().map(move |s| (k, s))) {
        if metrics.last().is_none_or(|m| m.name != def.name) {
            metrics.push(Metric {
                name: def.name.to_owned(),
                description: def.description.to_owned(),
                unit: def.unit.to_owned(),
                metadata: Vec::new(),
                data: Some(match def.instrument {
                    Instrument::DurationHistogram => Data::Histogram(Histogram {
                        data_points: Vec::new(),
                        aggregation_temporality: AggregationTemporality::Cumulative as i32,
                    }),
                    Instrument::Counter | Instrument::SecondsCounter => Data::Sum(Sum {
                        data_points: Vec::new(),
                        aggregation_temporality: AggregationTemporality::Cumulative as i32,
                        is_monotonic: true,
                    }),
                    Instrument::Gauge => Data::Gauge(Gauge { data_points: Vec::new() }),
                }),
            });
        }
        let Some(data) = metrics.last_mut().and_then(|m| m.data.as_mut()) else { continue };
        match (data, &series.value) {
            (Data::Histogram(h), Aggregate::Histogram { buckets, sum, count, min, max }) => {
                h.data_points.push(HistogramDataPoint {
                    attributes: series.attributes.clone(),
                    start_time_unix_nano: series.start_unix_ns,
                    time_unix_nano: now,
                    count: *count,
                    sum: Some(*sum),
                    bucket_counts: buckets.to_vec(),
                    explicit_bounds: DURATION_BUCKETS.to_vec(),
                    exemplars: Vec::new(),
                    flags: 0,
                    min: (*count > 0).then_some(*min),
                    max: (*count > 0).then_some(*max),
                });
            }
            (Data::Sum(s), Aggregate::Counter(v)) => s.data_points.push(NumberDataPoint {
                attributes: series.attributes.clone(),
                start_time_unix_nano: series.start_unix_ns,
                time_unix_nano: now,
                value: Some(number_data_point::Value::AsInt(i64::try_from(*v).unwrap_or(i64::MAX))),
                ..Default::default()
            }),
            (Data::Sum(s), Aggregate::Seconds(v)) => s.data_points.push(NumberDataPoint {
                attributes: series.attributes.clone(),
                start_time_unix_nano: series.start_unix_ns,
                time_unix_nano: now,
                value: Some(number_data_point::Value::AsDouble(*v)),
                ..Default::default()
            }),
            (Data::Gauge(g), Aggregate::Gauge(v)) => g.data_points.push(NumberDataPoint {
                attributes: series.attributes.clone(),
                time_unix_nano: now,
                value: Some(number_data_point::Value::AsInt(*v)),
                ..Default::default()
            }),
            _ => {}
        }
    }
    ResourceMetrics {
        resource: Some((*entry.resource).clone()),
        scope_metrics: vec![ScopeMetrics {
            scope: Some(InstrumentationScope {
                name: sc::SCOPE_NAME.to_owned(),
                version: env!("CARGO_PKG_VERSION").to_owned(),
                ..Default::default()
            }),
            metrics,
            schema_url: sc::SCHEMA_URL.to_owned(),
        }],
        schema_url: sc::SCHEMA_URL.to_owned(),
    }
}

/// A string attribute, for callers building metric attributes.
pub fn attr(key: &str, value: impl Into<String>) -> KeyValue {
    string_attr(key, value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::resource::int_attr;

    fn resource(instance: &str) -> Arc<Resource> {
        Arc::new(Resource {
            attributes: vec![string_attr(sc::SERVICE_NAME, "shop"), string_attr(sc::SERVICE_INSTANCE_ID, instance)],
            ..Default::default()
        })
    }

    fn histogram(rm: &ResourceMetrics, name: &str) -> Vec<HistogramDataPoint> {
        rm.scope_metrics[0]
            .metrics
            .iter()
            .filter(|m| m.name == name)
            .flat_map(|m| match &m.data {
                Some(Data::Histogram(h)) => h.data_points.clone(),
                _ => Vec::new(),
            })
            .collect()
    }

    #[test]
    fn durations_land_in_the_conventions_buckets() {
        let mut store = MetricStore::new(MetricLimits::default());
        let r = resource("a");
        let attrs = || vec![attr(sc::HTTP_ROUTE, "/x"), attr(sc::HTTP_REQUEST_METHOD, "GET")];
        for s in [0.001, 0.005, 0.0051, 0.3, 42.0] {
            store.record(&r, sc::HTTP_SERVER_REQUEST_DURATION, attrs(), s, 10);
        }
        // Same attributes in another order: the same series.
        store.record(&r, sc::HTTP_SERVER_REQUEST_DURATION, attrs().into_iter().rev().collect(), 0.001, 10);
        let snap = store.snapshot(20);
        assert_eq!(snap.len(), 1);
        let points = histogram(&snap[0], "http.server.request.duration");
        assert_eq!(points.len(), 1);
        let p = &points[0];
        assert_eq!(p.count, 6);
        assert_eq!(p.bucket_counts, vec![3, 1, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1]);
        assert_eq!(p.explicit_bounds, DURATION_BUCKETS.to_vec());
        assert_eq!(p.min, Some(0.001));
        assert_eq!(p.max, Some(42.0));
        assert!((p.sum.unwrap() - 42.3121).abs() < 1e-9);
        assert_eq!((p.start_time_unix_nano, p.time_unix_nano), (10, 20));
        assert_eq!(snap[0].schema_url, sc::SCHEMA_URL);
        assert_eq!(p.attributes[0].key, sc::HTTP_REQUEST_METHOD);
    }

    #[test]
    fn series_are_bounded_with_an_overflow_series() {
        let mut store = MetricStore::new(MetricLimits { max_series: 2, ..Default::default() });
        let r = resource("a");
        for code in [200, 404, 500, 503] {
            store.record(
                &r,
                sc::HTTP_SERVER_REQUEST_DURATION,
                vec![int_attr(sc::HTTP_RESPONSE_STATUS_CODE, code)],
                0.1,
                1,
            );
        }
        let points = histogram(&store.snapshot(2)[0], "http.server.request.duration");
        assert_eq!(points.len(), 3);
        assert_eq!(store.overflowed_points, 2);
        let overflow: Vec<_> = points.iter().filter(|p| p.attributes[0].key == "otel.metric.overflow").collect();
        assert_eq!(overflow.len(), 1);
        assert_eq!(overflow[0].count, 2);
    }

    #[test]
    fn exited_processes_go_after_the_retention() {
        let mut store = MetricStore::new(MetricLimits { max_series: 10, exited_retention_ns: 100 });
        let (a, b) = (resource("a"), resource("b"));
        store.add(&a, sc::TCP_CONNECTIONS_OPENED, vec![], 3, 0);
        store.add(&b, sc::TCP_CONNECTIONS_OPENED, vec![], 1, 0);
        store.exited(&a, 1000);
        store.expire(1099);
        assert_eq!(store.snapshot(1099).len(), 2);
        store.expire(1100);
        let snap = store.snapshot(1100);
        assert_eq!(snap.len(), 1);
        assert_eq!(store.series(), 1);
        let Some(Data::Sum(sum)) = &snap[0].scope_metrics[0].metrics[0].data else { panic!("not a sum") };
        assert!(sum.is_monotonic);
        assert_eq!(sum.data_points[0].value, Some(number_data_point::Value::AsInt(1)));
    }
}
