//! kscope's own health as metrics, on kscope's resource: events per sensor,
//! events lost per CPU, each stage's counts, spans and data points by
//! outcome, queue depths, the hook form of each sensor, and each program's
//! cost.

use std::sync::Arc;

use super::{
    metrics::{MetricStore, attr},
    resource::int_attr,
    semconv as sc,
};
use crate::{export::Resource, sensors::SensorChoice, stats::StatsRecord};

/// Everything the health metrics are read from, at one moment.
#[derive(Debug)]
pub struct HealthReading<'a> {
    pub stats: &'a StatsRecord,
    pub choices: &'a [SensorChoice],
    /// Spans by outcome (`exported`, `dropped`, `failed`, ...).
    pub spans: &'a [(&'static str, u64)],
    /// Metric data points by outcome.
    pub data_points: &'a [(&'static str, u64)],
    /// Items waiting, by stage (`events`, `spans_linking`, `export`).
    pub queues: &'a [(&'static str, u64)],
}

pub fn record(store: &mut MetricStore, agent: &Arc<Resource>, reading: &HealthReading<'_>, now_unix_ns: u64) {
    let HealthReading { stats, choices, spans, data_points, queues } = reading;
    let now = now_unix_ns;
    for s in &stats.sensors {
        store.set_total(agent, sc::KSCOPE_SENSOR_EVENTS, vec![attr(sc::KSCOPE_SENSOR, &*s.sensor)], s.emitted, now);
        store.set_total(
            agent,
            sc::KSCOPE_SENSOR_EVENTS_FAILED,
            vec![attr(sc::KSCOPE_SENSOR, &*s.sensor)],
            s.emit_failed,
            now,
        );
    }
    for (cpu, lost) in stats.ledger.lost_per_cpu.iter().enumerate() {
        let cpu = i64::try_from(cpu).unwrap_or(i64::MAX);
        store.set_total(agent, sc::KSCOPE_EVENTS_LOST, vec![int_attr(sc::KSCOPE_CPU, cpu)], *lost, now);
    }
    let ledger = &stats.ledger;
    for (stage, count) in [
        ("read", ledger.read()),
        ("decoded", ledger.decoded),
        ("decode_errors", ledger.decode_errors),
        ("ring_errors", ledger.ring_errors),
        ("queue_dropped", ledger.queue_dropped),
        ("written", ledger.written),
        ("analyzed", ledger.analyzed),
    ] {
        store.set_total(agent, sc::KSCOPE_PIPELINE_EVENTS, vec![attr(sc::KSCOPE_STAGE, stage)], count, now);
    }
    let l7 = &stats.l7;
    for (reason, count) in
        [("parse_error", l7.parse_errors), ("unclassified", l7.unclassified_segments), ("table_full", l7.table_full)]
    {
        store.set_total(agent, sc::KSCOPE_L7_UNPARSED, vec![attr(sc::KSCOPE_OUTCOME, reason)], count, now);
    }
    store.set_total(agent, sc::KSCOPE_EXCHANGES, Vec::new(), l7.exchanges, now);
    for (outcome, count) in *spans {
        store.set_total(agent, sc::KSCOPE_SPANS, vec![attr(sc::KSCOPE_OUTCOME, *outcome)], *count, now);
    }
    for (outcome, count) in *data_points {
        store.set_total(agent, sc::KSCOPE_DATA_POINTS, vec![attr(sc::KSCOPE_OUTCOME, *outcome)], *count, now);
    }
    for (stage, depth) in *queues {
        let depth = i64::try_from(*depth).unwrap_or(i64::MAX);
        store.set_gauge(agent, sc::KSCOPE_QUEUE_DEPTH, vec![attr(sc::KSCOPE_STAGE, *stage)], depth, now);
    }
    for choice in *choices {
        if let Some(form) = choice.chosen {
            let attrs = vec![attr(sc::KSCOPE_SENSOR, &*choice.sensor), attr(sc::KSCOPE_HOOK_FORM, form.name())];
            store.set_gauge(agent, sc::KSCOPE_HOOK_FORM_INFO, attrs, 1, now);
        }
    }
    for p in &stats.programs {
        let attrs = || vec![attr(sc::KSCOPE_SENSOR, &*p.sensor), attr(sc::KSCOPE_PROGRAM, p.program.clone())];
        store.set_total(agent, sc::KSCOPE_PROGRAM_RUNS, attrs(), p.run_count, now);
        store.set_seconds(agent, sc::KSCOPE_PROGRAM_RUN_TIME, attrs(), p.run_time_ns as f64 / 1e9, now);
    }
}
