//! `stats` (every `--stats-interval`) and `summary` (at exit): the loss
//! ledger, stage by stage, and what each program and sensor cost and did.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use crate::DropSummary;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatsRecord {
    pub time_unix_nano: u64,
    pub uptime_ns: u64,
    /// Whether the kernel kept BPF run-time statistics (`programs`' times).
    pub bpf_stats_enabled: bool,
    pub programs: Vec<ProgramStats>,
    pub sensors: Vec<SensorCounts>,
    pub ledger: LedgerSnapshot,
    /// Events the kernel could not hand to a full buffer, in all.
    pub lost_events: u64,
    /// What the connection table and parsers made of the data events.
    pub l7: ConnCounts,
    /// Spans and metrics made and exported (summary only, when exporting).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub export: Option<ExportSummary>,
    /// Packet drops by reason and location (summary only, with the drop sensor).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drops: Option<DropSummary>,
}

impl StatsRecord {
    /// The counts of one sensor, by name.
    pub fn sensor(&self, name: &str) -> Option<&SensorCounts> {
        self.sensors.iter().find(|s| s.sensor == name)
    }

    /// The statistics of one program, by name.
    pub fn program(&self, name: &str) -> Option<&ProgramStats> {
        self.programs.iter().find(|p| p.program == name)
    }
}

/// Every event from the per-CPU buffers to the output, counted where it
/// went.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerSnapshot {
    pub read_per_cpu: Vec<u64>,
    pub lost_per_cpu: Vec<u64>,
    pub decoded: u64,
    pub decode_errors: u64,
    pub ring_errors: u64,
    pub queue_dropped: u64,
    pub written: u64,
    pub analyzed: u64,
}

impl LedgerSnapshot {
    pub fn read(&self) -> u64 {
        self.read_per_cpu.iter().sum()
    }
    pub fn lost(&self) -> u64 {
        self.lost_per_cpu.iter().sum()
    }
}

/// Per-sensor counts from the kernel's `EVENTS_EMITTED` array.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SensorCounts {
    pub sensor: Cow<'static, str>,
    /// Events handed to the per-CPU buffers.
    pub emitted: u64,
    /// Events the buffers refused (full), or bookkeeping that did not fit.
    pub emit_failed: u64,
    /// Connections the kernel's bounded table had no room for: still
    /// reported, but without their owner and duration.
    pub table_full: u64,
    /// Seen but not reported (socket data: `sendmmsg`/`recvmmsg` messages
    /// past the batch the sensor captures per call).
    pub unreported: u64,
}

/// BPF run-time statistics of one attached program.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProgramStats {
    pub sensor: Cow<'static, str>,
    pub program: String,
    pub run_count: u64,
    pub run_time_ns: u64,
    /// `run_time_ns / run_count`: what one hit costs the traced code.
    pub avg_ns_per_run: u64,
}

impl ProgramStats {
    pub fn new(sensor: impl Into<Cow<'static, str>>, program: String, run_count: u64, run_time_ns: u64) -> Self {
        let avg_ns_per_run = run_time_ns.checked_div(run_count).unwrap_or(0);
        Self { sensor: sensor.into(), program, run_count, run_time_ns, avg_ns_per_run }
    }
}

/// What the connection table did with what it was given.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnCounts {
    /// Data events handed to the table.
    pub segments: u64,
    /// Bytes those calls moved, and how many of them were captured.
    pub bytes_total: u64,
    pub bytes_captured: u64,
    /// Segments of connections whose protocol is not (yet) known.
    pub unclassified_segments: u64,
    /// Connections given up on: no protocol matched their first payloads.
    pub unknown_protocol_connections: u64,
    /// Segments a parser rejected.
    pub parse_errors: u64,
    /// Connections not tracked because the table was full.
    pub table_full: u64,
    /// Connections closed for being idle.
    pub expired: u64,
    pub exchanges: u64,
    /// Summed from the parsers, of connections already closed plus open ones.
    pub parser_malformed: u64,
    pub parser_overflow_bytes: u64,
    pub parser_unpaired_dropped: u64,
}

/// What the telemetry stage and the exporters did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportSummary {
    pub spans: LinkCounts,
    /// Spans made and not yet released (waiting for a parent).
    pub spans_waiting: u64,
    pub otlp: ExportCounts,
    pub metric_series: u64,
    pub metric_overflowed_points: u64,
    pub routes_overflowed: u64,
    /// Exchanges a local collector served to kscope's own exports: not traced.
    pub own_exchanges_skipped: u64,
}

/// How spans were linked.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkCounts {
    pub spans: u64,
    pub released: u64,
    /// Parent from the request's `traceparent`.
    pub remote_parent: u64,
    /// A client span whose parent is the server span its thread was serving.
    pub enclosing_server: u64,
    /// A server span whose parent is the client span of the same connection.
    pub same_host_client: u64,
    /// Spans that start a trace.
    pub roots: u64,
    /// Spans released before their wait ended because too many were waiting.
    pub released_early: u64,
}

/// The OTLP exporters' counts at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportCounts {
    pub spans_offered: u64,
    pub spans_exported: u64,
    pub spans_dropped: u64,
    pub spans_failed: u64,
    pub metric_points_exported: u64,
    pub metric_points_failed: u64,
    pub export_requests: u64,
    pub export_failures: u64,
    pub retries: u64,
    pub queue_depth: u64,
}
