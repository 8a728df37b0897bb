//! What the bench reads of kscope's output, through `kscope_schema`'s types:
//! the sensors record (the hook form each sensor got) and the summary record
//! (ledger, program costs, L7 counts). A line that is not the record
//! expected is an error naming the line, never a zero.

use std::collections::BTreeMap;

use anyhow::bail;
use kscope_schema::{HookForm, ProgramStats, Record, SensorsRecord, StatsRecord, parse_line};
use serde_json::{Value, json};

/// The sensors record: kscope's first line.
pub(super) fn sensors_record(line: &str) -> anyhow::Result<SensorsRecord<'static>> {
    match parse_line(line)? {
        Record::Sensors(sensors) => Ok(sensors),
        other => bail!("expected kscope's sensors record, got a record of type {:?}: {line}", other.kind()),
    }
}

/// The summary record: kscope's last line.
pub(super) fn summary_record(line: &str) -> anyhow::Result<StatsRecord> {
    match parse_line(line)? {
        Record::Summary(summary) => Ok(summary),
        other => bail!("expected kscope's summary record, got a record of type {:?}: {line}", other.kind()),
    }
}

/// sensor -> chosen hook form ("none" when it could not start).
pub(super) fn chosen_forms(sensors: &SensorsRecord<'_>) -> BTreeMap<String, String> {
    sensors.sensors.iter().map(|s| (s.sensor.to_string(), s.chosen.map_or("none", HookForm::name).to_owned())).collect()
}

/// What the report derives from a summary.
pub(super) trait SummaryFigures {
    /// Events read from the per-CPU buffers, all CPUs.
    fn events_read(&self) -> u64;
    /// Sum over sensors of events the kernel could not put in a buffer.
    fn emit_failed(&self) -> u64;
    /// Every way the ledger can say an event did not make it: none did.
    fn lossless(&self) -> bool;
    /// Total BPF run time of `sensor`'s programs (every sensor's, for `None`).
    fn bpf_time_ns(&self, sensor: Option<&str>) -> u64;
    /// The summary as `target/bench/report.json` has it.
    fn json(&self) -> Value;
}

impl SummaryFigures for StatsRecord {
    fn events_read(&self) -> u64 {
        self.ledger.read()
    }

    fn emit_failed(&self) -> u64 {
        self.sensors.iter().map(|s| s.emit_failed).sum()
    }

    fn lossless(&self) -> bool {
        self.lost_events == 0
            && self.ledger.queue_dropped == 0
            && self.emit_failed() == 0
            && self.ledger.decode_errors == 0
    }

    fn bpf_time_ns(&self, sensor: Option<&str>) -> u64 {
        self.programs.iter().filter(|p| sensor.is_none_or(|s| p.sensor == s)).map(|p| p.run_time_ns).sum()
    }

    fn json(&self) -> Value {
        let l7 = &self.l7;
        json!({
            "events_read": self.events_read(), "lost_events": self.lost_events,
            "queue_dropped": self.ledger.queue_dropped, "emit_failed": self.emit_failed(),
            "decode_errors": self.ledger.decode_errors, "written": self.ledger.written,
            "bpf_stats_enabled": self.bpf_stats_enabled,
            "programs": self.programs.iter().map(program_json).collect::<Vec<_>>(),
            "l7": {
                "segments": l7.segments, "analyzed": self.ledger.analyzed, "bytes_total": l7.bytes_total,
                "bytes_captured": l7.bytes_captured, "unclassified_segments": l7.unclassified_segments,
                "parse_errors": l7.parse_errors, "table_full": l7.table_full, "exchanges": l7.exchanges,
                "parser_malformed": l7.parser_malformed, "parser_unpaired_dropped": l7.parser_unpaired_dropped,
            },
        })
    }
}

/// Average ns per run, from the totals (so also right for merged programs).
pub(super) fn avg_ns(p: &ProgramStats) -> Option<f64> {
    (p.run_count > 0).then(|| p.run_time_ns as f64 / p.run_count as f64)
}

pub(super) fn program_json(p: &ProgramStats) -> Value {
    json!({
        "sensor": p.sensor, "program": p.program, "run_count": p.run_count,
        "run_time_ns": p.run_time_ns, "avg_ns_per_run": avg_ns(p),
    })
}

/// Sums run counts and run times per (sensor, program), in first-seen order.
pub(super) fn merge_programs<'a>(programs: impl Iterator<Item = &'a ProgramStats>) -> Vec<ProgramStats> {
    let mut merged: Vec<ProgramStats> = Vec::new();
    for p in programs {
        match merged.iter_mut().find(|m| m.sensor == p.sensor && m.program == p.program) {
            Some(m) => {
                *m = ProgramStats::new(
                    m.sensor.clone(),
                    m.program.clone(),
                    m.run_count + p.run_count,
                    m.run_time_ns + p.run_time_ns,
                )
            }
            None => merged.push(p.clone()),
        }
    }
    merged
}

/// Test records as kscope prints them, built from the schema's types.
#[cfg(test)]
pub(super) mod fixtures {
    use kscope_schema::{ConnCounts, LedgerSnapshot, ProgramStats, SensorCounts, StatsRecord};

    /// A summary line with these programs, `read_per_cpu` and `l7.exchanges`.
    pub(in crate::bench) fn summary_line(
        programs: &[(&'static str, &str, u64, u64)],
        read_per_cpu: &[u64],
        exchanges: u64,
    ) -> String {
        let record = StatsRecord {
            time_unix_nano: 1,
            uptime_ns: 2,
            bpf_stats_enabled: true,
            programs: programs
                .iter()
                .map(|&(sensor, program, runs, ns)| ProgramStats::new(sensor, program.to_owned(), runs, ns))
                .collect(),
            sensors: vec![SensorCounts {
                sensor: "tcp".into(),
                emitted: 9,
                emit_failed: 1,
                table_full: 0,
                unreported: 0,
            }],
            ledger: LedgerSnapshot {
                read_per_cpu: read_per_cpu.to_vec(),
                lost_per_cpu: vec![0; read_per_cpu.len()],
                decoded: read_per_cpu.iter().sum(),
                queue_dropped: 5,
                written: 2,
                ..LedgerSnapshot::default()
            },
            lost_events: 2,
            l7: ConnCounts { segments: 40, exchanges, parse_errors: 1, ..ConnCounts::default() },
            export: None,
            drops: None,
        };
        serde_json::to_string(&kscope_schema::Record::Summary(record)).expect("serializes")
    }
}

#[cfg(test)]
mod tests {
    use super::{fixtures::summary_line, *};

    #[test]
    fn summary_fields_are_read() {
        let s = summary_record(&summary_line(&[("tcp", "tcp_state_tp", 4, 1000)], &[3, 4], 20)).expect("parses");
        assert_eq!(
            (s.events_read(), s.lost_events, s.ledger.queue_dropped, s.emit_failed(), s.ledger.written),
            (7, 2, 5, 1, 2)
        );
        assert_eq!(avg_ns(&s.programs[0]), Some(250.0));
        assert_eq!((s.l7.segments, s.l7.exchanges, s.l7.parse_errors, s.l7.table_full), (40, 20, 1, 0));
        assert!(!s.lossless());
        assert_eq!(s.json()["l7"]["exchanges"], 20);
    }

    #[test]
    fn a_record_that_does_not_parse_is_an_error_naming_the_line() {
        // A field renamed, and one missing: not zeros.
        let renamed = summary_line(&[], &[1], 0).replace("\"lost_events\"", "\"lost\"");
        let err = summary_record(&renamed).expect_err("lost_events is missing");
        assert!(format!("{err:#}").contains(&renamed), "{err:#}");
        let sensors = r#"{"type":"sensors","time_unix_nano":1,"kernel":"6.1.0","sensors":[]}"#;
        let err = summary_record(sensors).expect_err("not a summary");
        assert!(format!("{err:#}").contains("got a record of type \"sensors\""), "{err:#}");
        assert!(sensors_record(sensors).is_ok());
        assert!(sensors_record("{\"type\":\"sensors\"}").is_err());
    }

    #[test]
    fn chosen_forms_name_the_form_or_none() {
        let line = r#"{"type":"sensors","time_unix_nano":1,"kernel":"6.1.0","sensors":[
            {"sensor":"process","description":"d","chosen":"kprobe","rejected":[],"programs":[],"hooks":[],"degraded":null,"fallbacks":[]},
            {"sensor":"tcp","description":"d","chosen":null,"rejected":[],"programs":[],"hooks":[],"degraded":null,"fallbacks":[]}]}"#;
        let forms = chosen_forms(&sensors_record(&line.replace('\n', "")).expect("parses"));
        assert_eq!(forms.get("process").map(String::as_str), Some("kprobe"));
        assert_eq!(forms.get("tcp").map(String::as_str), Some("none"));
    }

    #[test]
    fn merged_programs_add_up_and_average_over_all_runs() {
        let a =
            [ProgramStats::new("process", "exec".into(), 10, 5000), ProgramStats::new("tcp", "connect".into(), 1, 7)];
        let b = [ProgramStats::new("process", "exec".into(), 30, 3000)];
        let merged = merge_programs(a.iter().chain(&b));
        assert_eq!(merged.len(), 2);
        assert_eq!((merged[0].run_count, merged[0].run_time_ns, avg_ns(&merged[0])), (40, 8000, Some(200.0)));
        assert_eq!(merged[0].avg_ns_per_run, 200);
    }
}
