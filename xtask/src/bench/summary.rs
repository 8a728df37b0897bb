//! What the report takes from kscope's records: the final summary (ledger,
//! program costs, L7 counts) and the hook form each sensor got.

use std::collections::BTreeMap;

use anyhow::anyhow;
use serde_json::{Value, json};

/// The parts of the final "summary" record the report uses.
#[derive(Debug, Clone, Default)]
pub(super) struct Summary {
    pub(super) events_read: u64,
    pub(super) lost_events: u64,
    pub(super) queue_dropped: u64,
    pub(super) decode_errors: u64,
    pub(super) written: u64,
    /// Sum over sensors of events the kernel could not put in a buffer.
    pub(super) emit_failed: u64,
    pub(super) bpf_stats_enabled: bool,
    pub(super) programs: Vec<ProgramCost>,
    /// The summary's `l7` object (absent from kscope builds before it).
    pub(super) l7: Option<L7Counts>,
}

/// What kscope's connection table and parsers made of the data events
/// (agent/src/conntrack.rs `ConnCounts`), plus the ledger's `analyzed`.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct L7Counts {
    pub(super) segments: u64,
    pub(super) analyzed: u64,
    pub(super) bytes_total: u64,
    pub(super) bytes_captured: u64,
    pub(super) unclassified_segments: u64,
    pub(super) parse_errors: u64,
    pub(super) table_full: u64,
    pub(super) exchanges: u64,
    pub(super) parser_malformed: u64,
    pub(super) parser_unpaired_dropped: u64,
}

impl L7Counts {
    pub(super) fn json(&self) -> Value {
        json!({
            "segments": self.segments, "analyzed": self.analyzed, "bytes_total": self.bytes_total,
            "bytes_captured": self.bytes_captured, "unclassified_segments": self.unclassified_segments,
            "parse_errors": self.parse_errors, "table_full": self.table_full, "exchanges": self.exchanges,
            "parser_malformed": self.parser_malformed, "parser_unpaired_dropped": self.parser_unpaired_dropped,
        })
    }
}

#[derive(Debug, Clone)]
pub(super) struct ProgramCost {
    pub(super) sensor: String,
    pub(super) program: String,
    pub(super) run_count: u64,
    pub(super) run_time_ns: u64,
}

impl ProgramCost {
    pub(super) fn avg_ns(&self) -> Option<f64> {
        (self.run_count > 0).then(|| self.run_time_ns as f64 / self.run_count as f64)
    }
}

pub(super) fn parse_summary(record: &Value) -> anyhow::Result<Summary> {
    let u = |v: &Value, what: &str| v.as_u64().ok_or_else(|| anyhow!("summary field {what} is not a number: {v}"));
    let ledger = &record["ledger"];
    let sum = |field: &str| -> anyhow::Result<u64> {
        ledger[field]
            .as_array()
            .ok_or_else(|| anyhow!("summary ledger has no {field} array"))?
            .iter()
            .map(|v| u(v, field))
            .sum()
    };
    let mut emit_failed = 0;
    for sensor in record["sensors"].as_array().into_iter().flatten() {
        emit_failed += u(&sensor["emit_failed"], "emit_failed")?;
    }
    let mut programs = Vec::new();
    for p in record["programs"].as_array().into_iter().flatten() {
        programs.push(ProgramCost {
            sensor: p["sensor"].as_str().unwrap_or_default().to_owned(),
            program: p["program"].as_str().unwrap_or_default().to_owned(),
            run_count: u(&p["run_count"], "run_count")?,
            run_time_ns: u(&p["run_time_ns"], "run_time_ns")?,
        });
    }
    let l7 = record.get("l7").filter(|v| v.is_object()).map(|l7| {
        let n = |v: &Value| v.as_u64().unwrap_or(0);
        L7Counts {
            segments: n(&l7["segments"]),
            analyzed: n(&ledger["analyzed"]),
            bytes_total: n(&l7["bytes_total"]),
            bytes_captured: n(&l7["bytes_captured"]),
            unclassified_segments: n(&l7["unclassified_segments"]),
            parse_errors: n(&l7["parse_errors"]),
            table_full: n(&l7["table_full"]),
            exchanges: n(&l7["exchanges"]),
            parser_malformed: n(&l7["parser_malformed"]),
            parser_unpaired_dropped: n(&l7["parser_unpaired_dropped"]),
        }
    });
    Ok(Summary {
        events_read: sum("read_per_cpu")?,
        lost_events: u(&record["lost_events"], "lost_events")?,
        queue_dropped: u(&ledger["queue_dropped"], "queue_dropped")?,
        decode_errors: u(&ledger["decode_errors"], "decode_errors")?,
        written: u(&ledger["written"], "written")?,
        emit_failed,
        bpf_stats_enabled: record["bpf_stats_enabled"].as_bool().unwrap_or(false),
        programs,
        l7,
    })
}

/// sensor -> chosen hook form ("none" when it could not start).
pub(super) fn parse_forms(sensors_record: &Value) -> BTreeMap<String, String> {
    sensors_record["sensors"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| (s["sensor"].as_str().unwrap_or("?").to_owned(), s["chosen"].as_str().unwrap_or("none").to_owned()))
        .collect()
}

/// Sums run counts and run times per (sensor, program), in first-seen order.
pub(super) fn merge_programs<'a>(summaries: impl Iterator<Item = &'a Summary>) -> Vec<ProgramCost> {
    let mut merged: Vec<ProgramCost> = Vec::new();
    for p in summaries.flat_map(|s| &s.programs) {
        match merged.iter_mut().find(|m| m.sensor == p.sensor && m.program == p.program) {
            Some(m) => {
                m.run_count += p.run_count;
                m.run_time_ns += p.run_time_ns;
            }
            None => merged.push(p.clone()),
        }
    }
    merged
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn summary_fields_are_read() {
        let record = json!({
            "type": "summary", "bpf_stats_enabled": true, "lost_events": 2,
            "programs": [{"sensor": "tcp", "program": "tcp_state_tp", "run_count": 4, "run_time_ns": 1000, "avg_ns_per_run": 250}],
            "sensors": [{"sensor": "tcp", "emitted": 9, "emit_failed": 1, "table_full": 0}],
            "ledger": {"read_per_cpu": [3, 4], "lost_per_cpu": [0, 2], "decoded": 7, "decode_errors": 0, "queue_dropped": 5, "written": 2},
        });
        let s = parse_summary(&record).expect("parses");
        assert_eq!((s.events_read, s.lost_events, s.queue_dropped, s.emit_failed, s.written), (7, 2, 5, 1, 2));
        assert_eq!(s.programs[0].avg_ns(), Some(250.0));
        assert!(s.l7.is_none());
        let mut record = record;
        record["l7"] = json!({"segments": 40, "exchanges": 20, "parse_errors": 1});
        let l7 = parse_summary(&record).expect("parses").l7.expect("has l7");
        assert_eq!((l7.segments, l7.exchanges, l7.parse_errors, l7.table_full), (40, 20, 1, 0));
    }
}
