//! OTLP metrics → Prometheus text exposition format 0.0.4, following the
//! OpenTelemetry "Prometheus and OpenMetrics Compatibility" specification
//! (section "OTLP Metric points to Prometheus") the way the Collector's and
//! the Go SDK's Prometheus exporters implement it.

use std::{
    collections::{BTreeMap, btree_map::Entry},
    fmt::Write as _,
};

use opentelemetry_proto::tonic::{
    common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value},
    metrics::v1::{
        AggregationTemporality, DataPointFlags, HistogramDataPoint, Metric, NumberDataPoint, ResourceMetrics,
        SummaryDataPoint, metric::Data, number_data_point,
    },
    resource::v1::Resource,
};

/// The resource attributes that become `job` and `instance` instead of
/// `target_info` labels.
const SERVICE_NAME: &str = "service.name";
const SERVICE_NAMESPACE: &str = "service.namespace";
const SERVICE_INSTANCE_ID: &str = "service.instance.id";

const TARGET_INFO: &str = "target_info";
const TARGET_INFO_HELP: &str = "Target metadata";

/// OTLP (UCUM) units and their Prometheus words, as in the Collector's and
/// Prometheus' `otlptranslator`. `1` is dimensionless: only gauges get a
/// suffix for it (`ratio`, see [`metric_name`]).
const UNITS: &[(&str, &str)] = &[
    ("d", "days"),
    ("h", "hours"),
    ("min", "minutes"),
    ("s", "seconds"),
    ("ms", "milliseconds"),
    ("us", "microseconds"),
    ("ns", "nanoseconds"),
    ("By", "bytes"),
    ("KiBy", "kibibytes"),
    ("MiBy", "mebibytes"),
    ("GiBy", "gibibytes"),
    ("TiBy", "tebibytes"),
    ("KBy", "kilobytes"),
    ("MBy", "megabytes"),
    ("GBy", "gigabytes"),
    ("TBy", "terabytes"),
    ("m", "meters"),
    ("V", "volts"),
    ("A", "amperes"),
    ("J", "joules"),
    ("W", "watts"),
    ("g", "grams"),
    ("Cel", "celsius"),
    ("Hz", "hertz"),
    ("1", ""),
    ("%", "percent"),
];

/// Units after a `/`: singular, so `By/s` reads `bytes_per_second`.
const PER_UNITS: &[(&str, &str)] =
    &[("s", "second"), ("m", "minute"), ("h", "hour"), ("d", "day"), ("w", "week"), ("mo", "month"), ("y", "year")];

/// The Prometheus type of a family, which also decides the name suffixes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
    Summary,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Self::Counter => "counter",
            Self::Gauge => "gauge",
            Self::Histogram => "histogram",
            Self::Summary => "summary",
        }
    }
}

/// What the OTLP data was, for the parts of name translation that depend on
/// more than the Prometheus type (`_ratio` is for OTLP gauges only, not for
/// non-monotonic sums, which are Prometheus gauges too).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    /// A cumulative monotonic Sum.
    Counter,
    /// An OTLP Gauge.
    Gauge,
    /// A non-monotonic Sum, a Histogram or a Summary.
    Other,
}

/// A label set, sorted by name (the order the Go client writes them in).
type Labels = Vec<(String, String)>;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Number {
    Int(i64),
    Double(f64),
}

#[derive(Debug, Clone, PartialEq)]
enum Samples {
    Value(Number),
    Histogram {
        /// Finite upper bounds and the cumulative count up to each.
        buckets: Vec<(f64, u64)>,
        sum: Option<f64>,
        count: u64,
    },
    Summary {
        quantiles: Vec<(f64, f64)>,
        sum: f64,
        count: u64,
    },
}

#[derive(Debug)]
struct Family {
    kind: Kind,
    help: String,
    series: BTreeMap<Labels, Samples>,
}

/// Renders `metrics` in the Prometheus text format 0.0.4: families sorted by
/// name, series sorted by labels, so equal input gives equal text.
///
/// Data this format cannot carry (delta temporality, exponential
/// histograms) is left out, with a debug log; nothing here fails.
pub fn render(metrics: &[ResourceMetrics]) -> String {
    let mut families = BTreeMap::new();
    for resource_metrics in metrics {
        let resource = ResourceLabels::new(resource_metrics.resource.as_ref());
        if let Some(labels) = resource.target_info() {
            let series = vec![(labels, Samples::Value(Number::Int(1)))];
            add_family(&mut families, TARGET_INFO.to_owned(), Kind::Gauge, TARGET_INFO_HELP, series);
        }
        for scope_metrics in &resource_metrics.scope_metrics {
            for metric in &scope_metrics.metrics {
                add_metric(&mut families, &resource, scope_metrics.scope.as_ref(), metric);
            }
        }
    }
    write_families(&families)
}

/// Translates one OTLP metric and merges its series into `families`.
fn add_metric(
    families: &mut BTreeMap<String, Family>,
    resource: &ResourceLabels,
    scope: Option<&InstrumentationScope>,
    metric: &Metric,
) {
    let context = PointContext { resource, scope };
    let (kind, shape, series) = match &metric.data {
        Some(Data::Gauge(gauge)) => (Kind::Gauge, Shape::Gauge, number_series(&context, &gauge.data_points)),
        // Delta points are dropped, which the specification allows: turning
        // them into the cumulative values a scrape needs means keeping state
        // per series across scrapes, and the telemetry stage hands us
        // cumulative metrics anyway. An unspecified temporality is invalid
        // OTLP.
        Some(Data::Sum(sum)) if sum.aggregation_temporality != AggregationTemporality::Cumulative as i32 => {
            skipped(metric, "not cumulative");
            return;
        }
        Some(Data::Sum(sum)) if sum.is_monotonic => {
            (Kind::Counter, Shape::Counter, number_series(&context, &sum.data_points))
        }
        Some(Data::Sum(sum)) => (Kind::Gauge, Shape::Other, number_series(&context, &sum.data_points)),
        Some(Data::Histogram(histogram))
            if histogram.aggregation_temporality != AggregationTemporality::Cumulative as i32 =>
        {
            skipped(metric, "not cumulative");
            return;
        }
        Some(Data::Histogram(histogram)) => {
            (Kind::Histogram, Shape::Other, histogram_series(&context, &histogram.data_points))
        }
        Some(Data::Summary(summary)) => (Kind::Summary, Shape::Other, summary_series(&context, &summary.data_points)),
        // Prometheus carries these as native histograms, which the text
        // format 0.0.4 cannot express.
        Some(Data::ExponentialHistogram(_)) => {
            skipped(metric, "exponential histograms have no text format 0.0.4 form");
            return;
        }
        None => return,
    };
    if series.is_empty() {
        return;
    }
    let Some(name) = metric_name(&metric.name, &metric.unit, shape) else {
        skipped(metric, "no valid characters in its name");
        return;
    };
    add_family(families, name, kind, &metric.description, series);
}

fn skipped(metric: &Metric, why: &str) {
    tracing::debug!(metric = %metric.name, why, "Prometheus exposition leaves out a metric");
}

/// Merges series into the family `name`: the same metric from several
/// resources or scopes is one family.
fn add_family(
    families: &mut BTreeMap<String, Family>,
    name: String,
    kind: Kind,
    help: &str,
    series: Vec<(Labels, Samples)>,
) {
    let family = match families.entry(name) {
        Entry::Vacant(entry) => entry.insert(Family { kind, help: help.to_owned(), series: BTreeMap::new() }),
        Entry::Occupied(entry) => {
            // The specification: drop the entire metric rather than emit two
            // TYPE lines for one name. Debug, not warn: this repeats on
            // every scrape.
            if entry.get().kind != kind {
                tracing::debug!(
                    family = %entry.key(),
                    kind = kind.as_str(),
                    existing = entry.get().kind.as_str(),
                    "Prometheus exposition drops a metric whose name is taken by another type"
                );
                return;
            }
            let family = entry.into_mut();
            // Conflicting HELP keeps one (the first non-empty) and keeps the
            // points, as the specification asks.
            if family.help.is_empty() {
                help.clone_into(&mut family.help);
            }
            family
        }
    };
    for (labels, samples) in series {
        // Two points with the same labels would be the same Prometheus
        // series twice, which scrapers reject; the first one stays.
        if let Entry::Vacant(entry) = family.series.entry(labels) {
            entry.insert(samples);
        }
    }
}

/// Where a point sits, for the labels it gets besides its attributes.
struct PointContext<'a> {
    resource: &'a ResourceLabels,
    scope: Option<&'a InstrumentationScope>,
}

impl PointContext<'_> {
    /// The labels of one point: its attributes, the scope's name and version,
    /// and the resource's `job` and `instance`. `reserved` names a label the
    /// family type adds itself (`le`, `quantile`), so an attribute of that
    /// name cannot make the label appear twice.
    fn labels(&self, attributes: &[KeyValue], reserved: Option<&str>) -> Labels {
        let mut labels = attribute_labels(attributes);
        if let Some(reserved) = reserved {
            labels.remove(reserved);
        }
        if let Some(scope) = self.scope {
            labels.insert("otel_scope_name".to_owned(), scope.name.clone());
            labels.insert("otel_scope_version".to_owned(), scope.version.clone());
        }
        self.resource.add_identity(&mut labels);
        finish_labels(labels)
    }
}

/// Drops empty values (Prometheus treats an empty label as an absent one, so
/// keeping them would only make equal series look different).
fn finish_labels(labels: BTreeMap<String, String>) -> Labels {
    labels.into_iter().filter(|(_, value)| !value.is_empty()).collect()
}

fn recorded(flags: u32) -> bool {
    flags & DataPointFlags::NoRecordedValueMask as u32 == 0
}

fn number_series(context: &PointContext<'_>, points: &[NumberDataPoint]) -> Vec<(Labels, Samples)> {
    points
        .iter()
        .filter(|point| recorded(point.flags))
        .filter_map(|point| {
            let value = match point.value? {
                number_data_point::Value::AsInt(v) => Number::Int(v),
                number_data_point::Value::AsDouble(v) => Number::Double(v),
            };
            Some((context.labels(&point.attributes, None), Samples::Value(value)))
        })
        .collect()
}

fn histogram_series(context: &PointContext<'_>, points: &[HistogramDataPoint]) -> Vec<(Labels, Samples)> {
    points
        .iter()
        .filter(|point| recorded(point.flags))
        .filter_map(|point| {
            let buckets = cumulative_buckets(point)?;
            let samples = Samples::Histogram { buckets, sum: point.sum, count: point.count };
            Some((context.labels(&point.attributes, Some("le")), samples))
        })
        .collect()
}

/// The `le` buckets of a histogram point, cumulative as Prometheus counts
/// them; `None` for a malformed point. The `+Inf` bucket is not included:
/// it is the point's count.
fn cumulative_buckets(point: &HistogramDataPoint) -> Option<Vec<(f64, u64)>> {
    // OTLP allows a point with no buckets at all (only count and sum).
    if point.bucket_counts.is_empty() {
        return Some(Vec::new());
    }
    if point.bucket_counts.len() != point.explicit_bounds.len() + 1 || point.explicit_bounds.iter().any(|b| b.is_nan())
    {
        tracing::debug!(
            bounds = point.explicit_bounds.len(),
            counts = point.bucket_counts.len(),
            "Prometheus exposition leaves out a malformed histogram point"
        );
        return None;
    }
    let mut total = 0u64;
    Some(
        point
            .explicit_bounds
            .iter()
            .zip(&point.bucket_counts)
            .map(|(&bound, &count)| {
                total = total.saturating_add(count);
                (bound, total)
            })
            // An explicit +Inf bound would repeat the `+Inf` bucket.
            .filter(|(bound, _)| *bound != f64::INFINITY)
            .collect(),
    )
}

fn summary_series(context: &PointContext<'_>, points: &[SummaryDataPoint]) -> Vec<(Labels, Samples)> {
    points
        .iter()
        .filter(|point| recorded(point.flags))
        .map(|point| {
            let quantiles = point.quantile_values.iter().map(|q| (q.quantile, q.value)).collect();
            let samples = Samples::Summary { quantiles, sum: point.sum, count: point.count };
            (context.labels(&point.attributes, Some("quantile")), samples)
        })
        .collect()
}

/// The labels a resource gives: `job` and `instance` on every series, the
/// rest of its attributes on its `target_info`.
#[derive(Debug, Default)]
struct ResourceLabels {
    job: Option<String>,
    instance: Option<String>,
    info: BTreeMap<String, String>,
}

impl ResourceLabels {
    fn new(resource: Option<&Resource>) -> Self {
        let Some(resource) = resource else { return Self::default() };
        let find = |key: &str| {
            resource.attributes.iter().find(|kv| kv.key == key).map(|kv| any_value_string(kv.value.as_ref()))
        };
        let namespace = find(SERVICE_NAMESPACE).filter(|ns| !ns.is_empty());
        let job = find(SERVICE_NAME).map(|name| match namespace {
            Some(namespace) => format!("{namespace}/{name}"),
            None => name,
        });
        let rest: Vec<KeyValue> = resource
            .attributes
            .iter()
            .filter(|kv| ![SERVICE_NAME, SERVICE_NAMESPACE, SERVICE_INSTANCE_ID].contains(&kv.key.as_str()))
            .cloned()
            .collect();
        Self { job, instance: find(SERVICE_INSTANCE_ID), info: attribute_labels(&rest) }
    }

    fn add_identity(&self, labels: &mut BTreeMap<String, String>) {
        if let Some(job) = &self.job {
            labels.insert("job".to_owned(), job.clone());
        }
        if let Some(instance) = &self.instance {
            labels.insert("instance".to_owned(), instance.clone());
        }
    }

    /// The labels of this resource's `target_info`, or `None` when it has no
    /// attributes besides those in `job` and `instance` (the Collector's
    /// rule: such a `target_info` would say nothing).
    fn target_info(&self) -> Option<Labels> {
        let mut labels = self.info.clone();
        labels.retain(|_, value| !value.is_empty());
        if labels.is_empty() {
            return None;
        }
        self.add_identity(&mut labels);
        Some(finish_labels(labels))
    }
}

/// Attributes as labels: keys sanitized, and attributes whose keys collide
/// after sanitizing merged into one label, values joined with `;` in the
/// order of the original keys (the specification's rule).
fn attribute_labels(attributes: &[KeyValue]) -> BTreeMap<String, String> {
    let mut groups: BTreeMap<String, Vec<(&str, String)>> = BTreeMap::new();
    for kv in attributes {
        if let Some(name) = label_name(&kv.key) {
            groups.entry(name).or_default().push((&kv.key, any_value_string(kv.value.as_ref())));
        }
    }
    groups
        .into_iter()
        .map(|(name, mut values)| {
            values.sort_by(|a, b| a.0.cmp(b.0));
            let joined = values.into_iter().map(|(_, value)| value).collect::<Vec<_>>().join(";");
            (name, joined)
        })
        .collect()
}

/// An attribute value as a label value, per the OpenTelemetry attribute
/// specification: strings as they are, other scalars in their usual text,
/// arrays and maps as JSON, bytes as base64.
fn any_value_string(value: Option<&AnyValue>) -> String {
    match value.and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::DoubleValue(d)) => plain_float(*d),
        Some(any_value::Value::BytesValue(bytes)) => base64(bytes),
        Some(v @ (any_value::Value::ArrayValue(_) | any_value::Value::KvlistValue(_))) => json(Some(v)).to_string(),
        // A string-table index only means something in the profiles signal,
        // which has the table; a metric cannot resolve it.
        Some(any_value::Value::StringValueStrindex(_)) | None => String::new(),
    }
}

fn json(value: Option<&any_value::Value>) -> serde_json::Value {
    use serde_json::Value as J;
    match value {
        Some(any_value::Value::StringValue(s)) => J::String(s.clone()),
        Some(any_value::Value::BoolValue(b)) => J::Bool(*b),
        Some(any_value::Value::IntValue(i)) => J::from(*i),
        // JSON has no infinities or NaN; the text stands in for them.
        Some(any_value::Value::DoubleValue(d)) => {
            serde_json::Number::from_f64(*d).map_or_else(|| J::String(plain_float(*d)), J::Number)
        }
        Some(any_value::Value::BytesValue(bytes)) => J::String(base64(bytes)),
        Some(any_value::Value::ArrayValue(array)) => {
            J::Array(array.values.iter().map(|v| json(v.value.as_ref())).collect())
        }
        Some(any_value::Value::KvlistValue(list)) => J::Object(
            list.values
                .iter()
                .map(|kv| (kv.key.clone(), json(kv.value.as_ref().and_then(|v| v.value.as_ref()))))
                .collect(),
        ),
        Some(any_value::Value::StringValueStrindex(_)) | None => J::Null,
    }
}

/// A double attribute in positional notation (Go's `'f', -1`, what the
/// Collector uses), with Prometheus' spelling of the non-finite values.
fn plain_float(value: f64) -> String {
    if value.is_finite() { value.to_string() } else { format_float(value) }
}

/// Standard base64 with padding (RFC 4648), for bytes attributes.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], chunk.get(1).copied().unwrap_or(0), chunk.get(2).copied().unwrap_or(0)];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Replaces every character `valid` rejects with `_` and collapses runs of
/// `_` into one (the specification's rule for names and label keys).
fn sanitize(raw: &str, valid: impl Fn(char) -> bool) -> String {
    let mut out = String::with_capacity(raw.len());
    for c in raw.chars() {
        let c = if valid(c) { c } else { '_' };
        if !(c == '_' && out.ends_with('_')) {
            out.push(c);
        }
    }
    out
}

/// Prometheus names cannot start with a digit: such a name gets a leading
/// `_`.
fn no_leading_digit(mut name: String) -> String {
    if name.starts_with(|c: char| c.is_ascii_digit()) {
        name.insert(0, '_');
    }
    name
}

/// A label name (`[a-zA-Z_][a-zA-Z0-9_]*`) from an attribute key; `None`
/// for an empty key. Collapsing `_` also means no key becomes a name in
/// Prometheus' reserved `__` space.
fn label_name(key: &str) -> Option<String> {
    let name = sanitize(key, |c| c.is_ascii_alphanumeric() || c == '_');
    (!name.is_empty()).then(|| no_leading_digit(name))
}

/// The Prometheus metric name (`[a-zA-Z_:][a-zA-Z0-9_:]*`) of an OTLP metric:
/// the name sanitized, then the unit suffix unless the name already ends
/// with it, then `_total` for counters. `None` for an empty name.
fn metric_name(name: &str, unit: &str, shape: Shape) -> Option<String> {
    let mut base = sanitize(name, |c| c.is_ascii_alphanumeric() || c == '_' || c == ':');
    if base.is_empty() {
        return None;
    }
    // The unit goes before `_total`, so a counter already named `…_total`
    // loses that suffix first and gets it back at the end.
    if shape == Shape::Counter
        && let Some(stem) = base.strip_suffix("_total").filter(|stem| !stem.is_empty())
    {
        base.truncate(stem.len());
    }
    let unit = if shape == Shape::Gauge && unit.trim() == "1" { Some("ratio".to_owned()) } else { unit_suffix(unit) };
    if let Some(unit) = unit
        && !base.trim_end_matches('_').ends_with(&format!("_{unit}"))
    {
        append(&mut base, &unit);
    }
    if shape == Shape::Counter {
        append(&mut base, "total");
    }
    Some(no_leading_digit(base))
}

/// Appends `_suffix` without doubling an `_` the sanitized name ended with.
fn append(name: &mut String, suffix: &str) {
    let kept = name.trim_end_matches('_').len();
    // A name of only underscores keeps one, so the result still has them.
    name.truncate(kept.max(usize::from(name.starts_with('_'))));
    if !name.ends_with('_') {
        name.push('_');
    }
    name.push_str(suffix);
}

/// The name suffix for an OTLP unit: annotations in `{}` dropped, known
/// units spelled out (`ms` → `milliseconds`), others sanitized, and `x/y` as
/// `x_per_y`. `None` when nothing is left (`{packet}`, `1`).
fn unit_suffix(unit: &str) -> Option<String> {
    let unit = drop_annotations(unit);
    let (main, per) = match unit.split_once('/') {
        Some((main, per)) => (main, Some(per)),
        None => (unit.as_str(), None),
    };
    let main = unit_word(main, UNITS);
    let per = per.map(|per| unit_word(per, PER_UNITS)).unwrap_or_default();
    match (main.is_empty(), per.is_empty()) {
        (true, true) => None,
        (false, true) => Some(main),
        (true, false) => Some(format!("per_{per}")),
        (false, false) => Some(format!("{main}_per_{per}")),
    }
}

fn drop_annotations(unit: &str) -> String {
    let mut out = String::with_capacity(unit.len());
    let mut depth = 0usize;
    for c in unit.chars() {
        match c {
            '{' => depth += 1,
            '}' => depth = depth.saturating_sub(1),
            _ if depth == 0 => out.push(c),
            _ => {}
        }
    }
    out
}

/// A unit (or per-unit) as a name word: from `table`, or else the unit
/// itself with what is not a name character turned into `_`.
fn unit_word(unit: &str, table: &[(&str, &str)]) -> String {
    let unit = unit.trim();
    match table.iter().find(|(otlp, _)| *otlp == unit) {
        Some((_, word)) => (*word).to_owned(),
        None => sanitize(unit, |c| c.is_ascii_alphanumeric() || c == '_').trim_matches('_').to_owned(),
    }
}

fn write_families(families: &BTreeMap<String, Family>) -> String {
    let mut out = String::new();
    for (name, family) in families {
        if family.series.is_empty() {
            continue;
        }
        // The Go client leaves out the HELP line of a family without help.
        if !family.help.is_empty() {
            out.push_str("# HELP ");
            out.push_str(name);
            out.push(' ');
            escape_help(&mut out, &family.help);
            out.push('\n');
        }
        let _ = writeln!(out, "# TYPE {name} {}", family.kind.as_str());
        for (labels, samples) in &family.series {
            write_samples(&mut out, name, labels, samples);
        }
    }
    out
}

fn write_samples(out: &mut String, name: &str, labels: &Labels, samples: &Samples) {
    match samples {
        Samples::Value(Number::Int(v)) => write_sample(out, name, "", labels, None, &v.to_string()),
        Samples::Value(Number::Double(v)) => write_sample(out, name, "", labels, None, &format_float(*v)),
        Samples::Histogram { buckets, sum, count } => {
            for (bound, cumulative) in buckets {
                let le = format_float(*bound);
                write_sample(out, name, "_bucket", labels, Some(("le", &le)), &cumulative.to_string());
            }
            write_sample(out, name, "_bucket", labels, Some(("le", "+Inf")), &count.to_string());
            if let Some(sum) = sum {
                write_sample(out, name, "_sum", labels, None, &format_float(*sum));
            }
            write_sample(out, name, "_count", labels, None, &count.to_string());
        }
        Samples::Summary { quantiles, sum, count } => {
            for (quantile, value) in quantiles {
                let q = format_float(*quantile);
                write_sample(out, name, "", labels, Some(("quantile", &q)), &format_float(*value));
            }
            write_sample(out, name, "_sum", labels, None, &format_float(*sum));
            write_sample(out, name, "_count", labels, None, &count.to_string());
        }
    }
}

/// One sample line; `extra` (`le`, `quantile`) goes last, as the Go client
/// writes it.
fn write_sample(out: &mut String, name: &str, suffix: &str, labels: &Labels, extra: Option<(&str, &str)>, value: &str) {
    out.push_str(name);
    out.push_str(suffix);
    let mut all = labels.iter().map(|(k, v)| (k.as_str(), v.as_str())).chain(extra).peekable();
    if all.peek().is_some() {
        out.push('{');
        for (i, (key, value)) in all.enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(key);
            out.push_str("=\"");
            escape_label_value(out, value);
            out.push('"');
        }
        out.push('}');
    }
    out.push(' ');
    out.push_str(value);
    out.push('\n');
}

fn escape_label_value(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// HELP text escapes only backslash and newline (quotes stay as they are).
fn escape_help(out: &mut String, help: &str) {
    for c in help.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// A double the way the Go client writes sample values and `le` labels
/// (`strconv.FormatFloat(v, 'g', -1, 64)`): the shortest digits that read
/// back exactly, in exponent form (`1e+06`, `1e-05`) when the exponent is
/// below -4 or at least 6, and `+Inf`, `-Inf`, `NaN`.
fn format_float(value: f64) -> String {
    if value.is_nan() {
        return "NaN".to_owned();
    }
    if value.is_infinite() {
        return if value > 0.0 { "+Inf" } else { "-Inf" }.to_owned();
    }
    // Also -0, which the Go client writes as 0.
    if value == 0.0 {
        return "0".to_owned();
    }
    // Rust's `{:e}` gives the same shortest round-trip digits: "d.ddde-x".
    let scientific = format!("{:e}", value.abs());
    let (mantissa, exponent) = scientific.split_once('e').unwrap_or((scientific.as_str(), "0"));
    let exponent: i32 = exponent.parse().unwrap_or(0);
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let mut out = String::with_capacity(digits.len() + 8);
    if value < 0.0 {
        out.push('-');
    }
    if !(-4..6).contains(&exponent) {
        out.push_str(&digits[..1]);
        if digits.len() > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        let _ = write!(out, "e{}{:02}", if exponent < 0 { '-' } else { '+' }, exponent.unsigned_abs());
    } else if exponent < 0 {
        out.push_str("0.");
        out.extend(std::iter::repeat_n('0', exponent.unsigned_abs() as usize - 1));
        out.push_str(&digits);
    } else {
        let int_len = exponent as usize + 1;
        if digits.len() <= int_len {
            out.push_str(&digits);
            out.extend(std::iter::repeat_n('0', int_len - digits.len()));
        } else {
            out.push_str(&digits[..int_len]);
            out.push('.');
            out.push_str(&digits[int_len..]);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::{
        io::Write as _,
        process::{Command, Stdio},
    };

    use opentelemetry_proto::tonic::{
        common::v1::ArrayValue,
        metrics::v1::{Gauge, Histogram, ScopeMetrics, Sum, Summary, summary_data_point::ValueAtQuantile},
    };

    use super::*;

    fn attr(key: &str, value: any_value::Value) -> KeyValue {
        KeyValue { key: key.to_owned(), value: Some(AnyValue { value: Some(value) }), ..Default::default() }
    }

    fn s(key: &str, value: &str) -> KeyValue {
        attr(key, any_value::Value::StringValue(value.to_owned()))
    }

    fn resource(attributes: Vec<KeyValue>, metrics: Vec<Metric>) -> ResourceMetrics {
        ResourceMetrics {
            resource: Some(Resource { attributes, ..Default::default() }),
            scope_metrics: vec![ScopeMetrics {
                scope: Some(InstrumentationScope {
                    name: "kscope".to_owned(),
                    version: "0.1.0".to_owned(),
                    ..Default::default()
                }),
                metrics,
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    fn metric(name: &str, unit: &str, description: &str, data: Data) -> Metric {
        Metric {
            name: name.to_owned(),
            unit: unit.to_owned(),
            description: description.to_owned(),
            data: Some(data),
            ..Default::default()
        }
    }

    fn number(attributes: Vec<KeyValue>, value: number_data_point::Value) -> NumberDataPoint {
        NumberDataPoint { attributes, value: Some(value), ..Default::default() }
    }

    fn gauge(points: Vec<NumberDataPoint>) -> Data {
        Data::Gauge(Gauge { data_points: points })
    }

    fn sum(monotonic: bool, temporality: AggregationTemporality, points: Vec<NumberDataPoint>) -> Data {
        Data::Sum(Sum { data_points: points, aggregation_temporality: temporality as i32, is_monotonic: monotonic })
    }

    fn histogram_point(attributes: Vec<KeyValue>, bounds: &[f64], counts: &[u64], sum: f64) -> HistogramDataPoint {
        HistogramDataPoint {
            attributes,
            count: counts.iter().sum(),
            sum: Some(sum),
            bucket_counts: counts.to_vec(),
            explicit_bounds: bounds.to_vec(),
            ..Default::default()
        }
    }

    fn histogram(points: Vec<HistogramDataPoint>) -> Data {
        Data::Histogram(Histogram {
            data_points: points,
            aggregation_temporality: AggregationTemporality::Cumulative as i32,
        })
    }

    const BOUNDS: [f64; 4] = [0.005, 0.1, 1.0, 2.5];
    const DURATION: &str = "http.server.request.duration";
    const DURATION_HELP: &str = "Duration of HTTP server requests.";

    /// Two resources of one service (two instances), sharing a histogram.
    fn fixture() -> Vec<ResourceMetrics> {
        use AggregationTemporality::{Cumulative, Delta};
        use number_data_point::Value::{AsDouble, AsInt};
        let a = resource(
            vec![
                s("service.name", "kscope"),
                s("service.namespace", "obs"),
                s("service.instance.id", "host-a"),
                s("host.name", "a.example"),
                s("deployment.environment", "prod"),
            ],
            vec![
                metric(
                    DURATION,
                    "s",
                    DURATION_HELP,
                    histogram(vec![
                        histogram_point(
                            vec![
                                s("http.request.method", "GET"),
                                attr("http.response.status_code", any_value::Value::IntValue(200)),
                            ],
                            &BOUNDS,
                            &[1, 2, 0, 1, 0],
                            2.121,
                        ),
                        histogram_point(vec![s("http.request.method", "POST")], &BOUNDS, &[0, 0, 1, 0, 1], 4.5),
                    ]),
                ),
                metric(
                    "kscope.events",
                    "{event}",
                    "Events read from the kernel.",
                    sum(true, Cumulative, vec![number(vec![s("sensor", "tcp")], AsInt(42))]),
                ),
                metric(
                    "process.memory.usage",
                    "By",
                    "Resident memory.",
                    gauge(vec![number(vec![], AsDouble(1_048_576.0))]),
                ),
                metric(
                    "kscope.connections.open",
                    "{connection}",
                    "Open TCP connections.",
                    sum(false, Cumulative, vec![number(vec![], AsInt(3))]),
                ),
                // Left out: a scrape needs cumulative values.
                metric("kscope.delta", "", "Delta.", sum(true, Delta, vec![number(vec![], AsInt(7))])),
            ],
        );
        let b = resource(
            vec![s("service.name", "kscope"), s("service.instance.id", "host-b"), s("host.name", "b.example")],
            vec![
                metric(
                    DURATION,
                    "s",
                    DURATION_HELP,
                    histogram(vec![histogram_point(
                        vec![s("http.request.method", "GET")],
                        &BOUNDS,
                        &[0, 1, 0, 0, 0],
                        0.05,
                    )]),
                ),
                metric(
                    "cpu.utilization",
                    "1",
                    "CPU use, \"busy\" share\\of time\nper core.",
                    gauge(vec![number(
                        // Collide after sanitizing; given out of key order.
                        vec![s("net_peer", "b"), s("path", "C:\\dir \"x\"\nend"), s("net.peer", "a")],
                        AsDouble(0.25),
                    )]),
                ),
            ],
        );
        vec![a, b]
    }

    const FIXTURE_TEXT: &str = r#"# HELP cpu_utilization_ratio CPU use, "busy" share\\of time\nper core.
# TYPE cpu_utilization_ratio gauge
cpu_utilization_ratio{instance="host-b",job="kscope",net_peer="a;b",otel_scope_name="kscope",otel_scope_version="0.1.0",path="C:\\dir \"x\"\nend"} 0.25
# HELP http_server_request_duration_seconds Duration of HTTP server requests.
# TYPE http_server_request_duration_seconds histogram
http_server_request_duration_seconds_bucket{http_request_method="GET",http_response_status_code="200",instance="host-a",job="obs/kscope",otel_scope_name="kscope",otel_scope_version="0.1.0",le="0.005"} 1
http_server_request_duration_seconds_bucket{http_request_method="GET",http_response_status_code="200",instance="host-a",job="obs/kscope",otel_scope_name="kscope",otel_scope_version="0.1.0",le="0.1"} 3
http_server_request_duration_seconds_bucket{http_request_method="GET",http_response_status_code="200",instance="host-a",job="obs/kscope",otel_scope_name="kscope",otel_scope_version="0.1.0",le="1"} 3
http_server_request_duration_seconds_bucket{http_request_method="GET",http_response_status_code="200",instance="host-a",job="obs/kscope",otel_scope_name="kscope",otel_scope_version="0.1.0",le="2.5"} 4
http_server_request_duration_seconds_bucket{http_request_method="GET",http_response_status_code="200",instance="host-a",job="obs/kscope",otel_scope_name="kscope",otel_scope_version="0.1.0",le="+Inf"} 4
http_server_request_duration_seconds_sum{http_request_method="GET",http_response_status_code="200",instance="host-a",job="obs/kscope",otel_scope_name="kscope",otel_scope_version="0.1.0"} 2.121
http_server_request_duration_seconds_count{http_request_method="GET",http_response_status_code="200",instance="host-a",job="obs/kscope",otel_scope_name="kscope",otel_scope_version="0.1.0"} 4
http_server_request_duration_seconds_bucket{http_request_method="GET",instance="host-b",job="kscope",otel_scope_name="kscope",otel_scope_version="0.1.0",le="0.005"} 0
http_server_request_duration_seconds_bucket{http_request_method="GET",instance="host-b",job="kscope",otel_scope_name="kscope",otel_scope_version="0.1.0",le="0.1"} 1
http_server_request_duration_seconds_bucket{http_request_method="GET",instance="host-b",job="kscope",otel_scope_name="kscope",otel_scope_version="0.1.0",le="1"} 1
http_server_request_duration_seconds_bucket{http_request_method="GET",instance="host-b",job="kscope",otel_scope_name="kscope",otel_scope_version="0.1.0",le="2.5"} 1
http_server_request_duration_seconds_bucket{http_request_method="GET",instance="host-b",job="kscope",otel_scope_name="kscope",otel_scope_version="0.1.0",le="+Inf"} 1
http_server_request_duration_seconds_sum{http_request_method="GET",instance="host-b",job="kscope",otel_scope_name="kscope",otel_scope_version="0.1.0"} 0.05
http_server_request_duration_seconds_count{http_request_method="GET",instance="host-b",job="kscope",otel_scope_name="kscope",otel_scope_version="0.1.0"} 1
http_server_request_duration_seconds_bucket{http_request_method="POST",instance="host-a",job="obs/kscope",otel_scope_name="kscope",otel_scope_version="0.1.0",le="0.005"} 0
http_server_request_duration_seconds_bucket{http_request_method="POST",instance="host-a",job="obs/kscope",otel_scope_name="kscope",otel_scope_version="0.1.0",le="0.1"} 0
http_server_request_duration_seconds_bucket{http_request_method="POST",instance="host-a",job="obs/kscope",otel_scope_name="kscope",otel_scope_version="0.1.0",le="1"} 1
http_server_request_duration_seconds_bucket{http_request_method="POST",instance="host-a",job="obs/kscope",otel_scope_name="kscope",otel_scope_version="0.1.0",le="2.5"} 1
http_server_request_duration_seconds_bucket{http_request_method="POST",instance="host-a",job="obs/kscope",otel_scope_name="kscope",otel_scope_version="0.1.0",le="+Inf"} 2
http_server_request_duration_seconds_sum{http_request_method="POST",instance="host-a",job="obs/kscope",otel_scope_name="kscope",otel_scope_version="0.1.0"} 4.5
http_server_request_duration_seconds_count{http_request_method="POST",instance="host-a",job="obs/kscope",otel_scope_name="kscope",otel_scope_version="0.1.0"} 2
# HELP kscope_connections_open Open TCP connections.
# TYPE kscope_connections_open gauge
kscope_connections_open{instance="host-a",job="obs/kscope",otel_scope_name="kscope",otel_scope_version="0.1.0"} 3
# HELP kscope_events_total Events read from the kernel.
# TYPE kscope_events_total counter
kscope_events_total{instance="host-a",job="obs/kscope",otel_scope_name="kscope",otel_scope_version="0.1.0",sensor="tcp"} 42
# HELP process_memory_usage_bytes Resident memory.
# TYPE process_memory_usage_bytes gauge
process_memory_usage_bytes{instance="host-a",job="obs/kscope",otel_scope_name="kscope",otel_scope_version="0.1.0"} 1.048576e+06
# HELP target_info Target metadata
# TYPE target_info gauge
target_info{deployment_environment="prod",host_name="a.example",instance="host-a",job="obs/kscope"} 1
target_info{host_name="b.example",instance="host-b",job="kscope"} 1
"#;

    #[test]
    fn renders_fixture_exactly() {
        let text = render(&fixture());
        assert_eq!(text, FIXTURE_TEXT, "got:\n{text}");
    }

    #[test]
    fn render_is_deterministic_whatever_the_resource_order() {
        let mut reversed = fixture();
        reversed.reverse();
        assert_eq!(render(&reversed), FIXTURE_TEXT);
    }

    #[test]
    fn promtool_accepts_rendered_text() {
        let mut child = match Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
        {
            Ok(child) => child,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                panic!("promtool is not on PATH; run `cargo xtask setup` (it installs the Debian package `prometheus`)")
            }
            Err(e) => panic!("cannot run promtool: {e}"),
        };
        let text = render(&fixture());
        child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "promtool check metrics failed ({}):\n{}{}\ninput:\n{text}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    #[test]
    fn metric_name_translations() {
        use Shape::{Counter, Gauge, Other};
        let cases: &[(&str, &str, Shape, &str)] = &[
            ("http.server.request.duration", "s", Other, "http_server_request_duration_seconds"),
            ("rpc.latency", "ms", Other, "rpc_latency_milliseconds"),
            ("rpc.latency", "us", Other, "rpc_latency_microseconds"),
            ("rpc.latency", "ns", Other, "rpc_latency_nanoseconds"),
            ("uptime", "min", Gauge, "uptime_minutes"),
            ("uptime", "h", Gauge, "uptime_hours"),
            ("uptime", "d", Gauge, "uptime_days"),
            ("memory", "By", Gauge, "memory_bytes"),
            ("memory", "KiBy", Gauge, "memory_kibibytes"),
            ("memory", "MiBy", Gauge, "memory_mebibytes"),
            ("memory", "GBy", Gauge, "memory_gigabytes"),
            ("temperature", "Cel", Gauge, "temperature_celsius"),
            ("clock", "Hz", Gauge, "clock_hertz"),
            ("usage", "%", Gauge, "usage_percent"),
            ("distance", "m", Gauge, "distance_meters"),
            // Not doubled when the name already ends with the unit.
            ("memory_bytes", "By", Gauge, "memory_bytes"),
            ("http.duration.seconds", "s", Other, "http_duration_seconds"),
            // Only at the end counts (OTel spec #4057).
            ("seconds.until.expiry", "s", Gauge, "seconds_until_expiry_seconds"),
            // Counters: unit, then `_total`, never twice.
            ("kscope.events", "{event}", Counter, "kscope_events_total"),
            ("process.cpu.time", "s", Counter, "process_cpu_time_seconds_total"),
            ("requests_total", "", Counter, "requests_total"),
            ("requests_total", "By", Counter, "requests_bytes_total"),
            ("total", "", Counter, "total_total"),
            // `1` is `ratio` for OTLP gauges only.
            ("cpu.utilization", "1", Gauge, "cpu_utilization_ratio"),
            ("cache_hit_ratio", "1", Gauge, "cache_hit_ratio"),
            ("cpu.utilization", "1", Other, "cpu_utilization"),
            ("errors", "1", Counter, "errors_total"),
            // Annotations dropped; `x/y` is `x_per_y`.
            ("network.io", "By/s", Gauge, "network_io_bytes_per_second"),
            ("speed", "m/s", Gauge, "speed_meters_per_second"),
            ("packets.rate", "{packet}/s", Gauge, "packets_rate_per_second"),
            ("requests.rate", "1/s", Gauge, "requests_rate_per_second"),
            ("growth", "By/mo", Gauge, "growth_bytes_per_month"),
            ("queue.depth", "{item}", Gauge, "queue_depth"),
            ("k.items", "k{item}", Gauge, "k_items_k"),
            // Units not in the table are sanitized and kept.
            ("queue.depth", "widgets", Gauge, "queue_depth_widgets"),
            ("flow", "l/min.x", Gauge, "flow_l_per_min_x"),
            // Name characters.
            ("2xx.responses", "", Counter, "_2xx_responses_total"),
            ("http..server--errors", "", Counter, "http_server_errors_total"),
            ("job:rate5m", "", Gauge, "job:rate5m"),
            ("ünïcode.näme", "", Gauge, "_n_code_n_me"),
            ("trailing.", "s", Other, "trailing_seconds"),
            ("trailing.", "", Gauge, "trailing_"),
            ("...", "s", Gauge, "_seconds"),
        ];
        for &(name, unit, shape, expected) in cases {
            assert_eq!(metric_name(name, unit, shape).as_deref(), Some(expected), "{name:?} {unit:?} {shape:?}");
        }
        assert_eq!(metric_name("", "s", Gauge), None);
    }

    #[test]
    fn label_name_translations() {
        let cases = [
            ("http.request.method", Some("http_request_method")),
            ("Content-Type", Some("Content_Type")),
            ("a..b", Some("a_b")),
            ("1st", Some("_1st")),
            ("__reserved", Some("_reserved")),
            ("job:x", Some("job_x")),
            ("", None),
        ];
        for (key, expected) in cases {
            assert_eq!(label_name(key).as_deref(), expected, "{key:?}");
        }
    }

    #[test]
    fn colliding_label_keys_merge_in_original_key_order() {
        let labels = attribute_labels(&[s("a_b", "3"), s("a-b", "2"), s("a.b", "1"), s("c", "x")]);
        // '-' < '.' < '_'
        assert_eq!(labels.get("a_b").map(String::as_str), Some("2;1;3"));
        assert_eq!(labels.len(), 2);
    }

    #[test]
    fn attribute_values_as_label_values() {
        use any_value::Value as V;
        let array = V::ArrayValue(ArrayValue {
            values: vec![
                AnyValue { value: Some(V::IntValue(1)) },
                AnyValue { value: Some(V::StringValue("two".into())) },
            ],
        });
        let cases = [
            (V::BoolValue(true), "true"),
            (V::IntValue(-7), "-7"),
            (V::DoubleValue(1.5), "1.5"),
            (V::DoubleValue(1e20), "100000000000000000000"),
            (V::DoubleValue(f64::INFINITY), "+Inf"),
            (V::BytesValue(b"hello".to_vec()), "aGVsbG8="),
            (V::BytesValue(b"ab".to_vec()), "YWI="),
            (V::BytesValue(b"a".to_vec()), "YQ=="),
            (array, r#"[1,"two"]"#),
        ];
        for (value, expected) in cases {
            assert_eq!(any_value_string(Some(&AnyValue { value: Some(value.clone()) })), expected, "{value:?}");
        }
        assert_eq!(any_value_string(None), "");
    }

    #[test]
    fn floats_like_the_go_client() {
        let cases = [
            (0.005, "0.005"),
            (1.0, "1"),
            (2.5, "2.5"),
            (10.0, "10"),
            (0.1, "0.1"),
            (123_456.0, "123456"),
            (1e6, "1e+06"),
            (1_234_567.0, "1.234567e+06"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (1.5e-7, "1.5e-07"),
            (1e100, "1e+100"),
            (-1.5, "-1.5"),
            (-0.0, "0"),
            (0.0, "0"),
            (f64::MAX, "1.7976931348623157e+308"),
            (f64::INFINITY, "+Inf"),
            (f64::NEG_INFINITY, "-Inf"),
            (f64::NAN, "NaN"),
        ];
        for (value, expected) in cases {
            assert_eq!(format_float(value), expected, "{value:e}");
        }
    }

    #[test]
    fn conflicting_types_drop_the_later_metric_and_duplicates_keep_the_first() {
        use number_data_point::Value::AsInt;
        let r = resource(
            vec![s("service.name", "svc")],
            vec![
                metric("x", "", "First.", gauge(vec![number(vec![], AsInt(1))])),
                metric("x", "", "Second.", gauge(vec![number(vec![], AsInt(2))])),
                // `x` as a counter is `x_total`, but a gauge is already named that.
                metric("x_total", "", "Gauge.", gauge(vec![number(vec![], AsInt(3))])),
                metric("x", "", "", sum(true, AggregationTemporality::Cumulative, vec![number(vec![], AsInt(4))])),
            ],
        );
        let expected = "# HELP x First.\n# TYPE x gauge\nx{job=\"svc\",otel_scope_name=\"kscope\",otel_scope_version=\"0.1.0\"} 1\n\
                        # HELP x_total Gauge.\n# TYPE x_total gauge\nx_total{job=\"svc\",otel_scope_name=\"kscope\",otel_scope_version=\"0.1.0\"} 3\n";
        assert_eq!(render(&[r]), expected);
    }

    #[test]
    fn points_without_values_and_odd_histograms() {
        use number_data_point::Value::AsDouble;
        let no_value =
            NumberDataPoint { flags: DataPointFlags::NoRecordedValueMask as u32, ..number(vec![], AsDouble(1.0)) };
        let empty = HistogramDataPoint { count: 5, sum: None, ..Default::default() };
        let malformed = histogram_point(vec![s("bad", "yes")], &[1.0], &[1], 1.0);
        let explicit_inf = histogram_point(vec![s("inf", "yes")], &[1.0, f64::INFINITY], &[1, 2, 0], 9.0);
        let r = ResourceMetrics {
            scope_metrics: vec![ScopeMetrics {
                metrics: vec![
                    metric("g", "", "G.", gauge(vec![no_value])),
                    metric("h", "", "H.", histogram(vec![empty, malformed, explicit_inf])),
                    metric("nan", "", "N.", gauge(vec![number(vec![], AsDouble(f64::NAN))])),
                ],
                ..Default::default()
            }],
            ..Default::default()
        };
        let expected = "# HELP h H.\n# TYPE h histogram\n\
                        h_bucket{le=\"+Inf\"} 5\nh_count 5\n\
                        h_bucket{inf=\"yes\",le=\"1\"} 1\nh_bucket{inf=\"yes\",le=\"+Inf\"} 3\nh_sum{inf=\"yes\"} 9\nh_count{inf=\"yes\"} 3\n\
                        # HELP nan N.\n# TYPE nan gauge\nnan NaN\n";
        assert_eq!(render(&[r]), expected);
    }

    #[test]
    fn summaries_and_reserved_labels() {
        let point = SummaryDataPoint {
            attributes: vec![s("quantile", "mine"), s("le", "kept")],
            count: 10,
            sum: 2.5,
            quantile_values: vec![
                ValueAtQuantile { quantile: 0.5, value: 0.2 },
                ValueAtQuantile { quantile: 0.99, value: 1.0 },
            ],
            ..Default::default()
        };
        let r = ResourceMetrics {
            scope_metrics: vec![ScopeMetrics {
                metrics: vec![metric("rpc.duration", "s", "", Data::Summary(Summary { data_points: vec![point] }))],
                ..Default::default()
            }],
            ..Default::default()
        };
        let expected = "# TYPE rpc_duration_seconds summary\n\
                        rpc_duration_seconds{le=\"kept\",quantile=\"0.5\"} 0.2\n\
                        rpc_duration_seconds{le=\"kept\",quantile=\"0.99\"} 1\n\
                        rpc_duration_seconds_sum{le=\"kept\"} 2.5\nrpc_duration_seconds_count{le=\"kept\"} 10\n";
        assert_eq!(render(&[r]), expected);
    }

    #[test]
    fn target_info_only_when_there_is_more_than_job_and_instance() {
        let r = resource(vec![s("service.name", "svc"), s("service.instance.id", "i")], vec![]);
        assert_eq!(render(&[r]), "");
        let r = resource(vec![s("service.namespace", ""), s("service.name", "svc"), s("os.type", "linux")], vec![]);
        assert_eq!(
            render(&[r]),
            "# HELP target_info Target metadata\n# TYPE target_info gauge\ntarget_info{job=\"svc\",os_type=\"linux\"} 1\n"
        );
    }
}
