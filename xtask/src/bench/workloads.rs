//! Parts 1 and 2 of the bench: each fixed workload without and with kscope,
//! in alternating pairs; throughput, kscope's CPU per event, and (for the
//! keep-alive workload) what kscope made of the requests.

use std::{collections::BTreeMap, thread, time::Duration};

use anyhow::Context as _;
use kscope_schema::StatsRecord;
use serde_json::{Value, json};

use super::{
    HostContext, REPS, SETTLE,
    kscope::{HttpExchanges, Kscope},
    load::{Load, LoadResult, run_load},
    report::median,
    summary::SummaryFigures as _,
};

/// One measured phase of a workload.
#[derive(Debug, Clone)]
pub(super) struct Phase {
    pub(super) rep: usize,
    pub(super) load: LoadResult,
    /// Present for the phases run under kscope.
    pub(super) kscope: Option<KscopeMeasure>,
}

/// kscope's side of a phase.
#[derive(Debug, Clone)]
pub(super) struct KscopeMeasure {
    /// utime + stime over the load (after start-up settled, until SIGINT).
    pub(super) cpu_ns: u64,
    /// utime + stime from exec to the end of settling.
    pub(super) startup_cpu_ns: u64,
    pub(super) summary: StatsRecord,
    /// Each sensor's hook form, from the sensors record.
    pub(super) forms: BTreeMap<String, String>,
    /// How long after the load kscope's CPU kept growing (work it had
    /// queued), when the phase waited for that; its CPU is in `cpu_ns`.
    pub(super) drain: Option<Duration>,
    /// The HTTP/1 exchange records of the nginx port, when counted.
    pub(super) http: Option<HttpExchanges>,
}

impl KscopeMeasure {
    pub(super) fn ns_per_event(&self) -> Option<f64> {
        (self.summary.events_read() > 0).then(|| self.cpu_ns as f64 / self.summary.events_read() as f64)
    }
}

/// One of the two fixed workloads and its phases.
#[derive(Debug, Clone)]
pub(super) struct Workload {
    pub(super) name: &'static str,
    pub(super) unit: &'static str,
    pub(super) load: Load,
    pub(super) baseline: Vec<Phase>,
    pub(super) with_kscope: Vec<Phase>,
}

impl Workload {
    pub(super) fn rate(&self, phase: &Phase) -> f64 {
        match self.load {
            Load::Spawn { .. } => phase.load.spawns_per_s,
            Load::KeepAlive { .. } => phase.load.requests_per_s,
            _ => phase.load.connections_per_s,
        }
        .unwrap_or(0.0)
    }

    /// Operations (connections, spawns, requests) of a phase: wrk's own
    /// count for keep-alive requests, rate x wall otherwise.
    pub(super) fn operations(&self, phase: &Phase) -> f64 {
        match self.load {
            Load::KeepAlive { .. } => phase.load.wrk_requests as f64,
            _ => self.rate(phase) * phase.load.wall.as_secs_f64(),
        }
    }

    /// kscope CPU ns per operation (request, for keep-alive), median over
    /// the with-kscope phases.
    pub(super) fn cpu_ns_per_operation(&self) -> Option<f64> {
        let per: Vec<f64> = self
            .measures()
            .filter_map(|(p, k)| {
                let ops = self.operations(p);
                (ops > 0.0).then(|| k.cpu_ns as f64 / ops)
            })
            .collect();
        median(&per)
    }

    pub(super) fn rates(&self, phases: &[Phase]) -> Vec<f64> {
        phases.iter().map(|p| self.rate(p)).collect()
    }

    pub(super) fn ratio(&self) -> Option<f64> {
        let base = median(&self.rates(&self.baseline))?;
        let with = median(&self.rates(&self.with_kscope))?;
        (base > 0.0).then(|| with / base)
    }

    pub(super) fn measures(&self) -> impl Iterator<Item = (&Phase, &KscopeMeasure)> {
        self.with_kscope.iter().filter_map(|p| p.kscope.as_ref().map(|k| (p, k)))
    }

    pub(super) fn ns_per_event(&self) -> Option<f64> {
        median(&self.measures().filter_map(|(_, k)| k.ns_per_event()).collect::<Vec<_>>())
    }

    pub(super) fn events_per_s(&self) -> Option<f64> {
        median(&self.measures().map(|(p, k)| events_per_s(k, p.load.wall)).collect::<Vec<_>>())
    }

    /// The sensor this workload exercises, and what one operation is.
    pub(super) fn operation(&self) -> (&'static str, &'static str) {
        match self.load {
            Load::Spawn { .. } => ("process", "spawn"),
            Load::KeepAlive { .. } => ("socket_data", "request"),
            _ => ("tcp", "connection"),
        }
    }

    /// (max - min) / median of the baseline rates, in percent: how much the
    /// machine's other work moved the figures.
    pub(super) fn baseline_spread_percent(&self) -> Option<f64> {
        let rates = self.rates(&self.baseline);
        let max = rates.iter().copied().reduce(f64::max)?;
        let min = rates.iter().copied().reduce(f64::min)?;
        let mid = median(&rates)?;
        (mid > 0.0).then(|| 100.0 * (max - min) / mid)
    }

    /// Total BPF time of `sensor`'s programs (every sensor's, for `None`)
    /// per operation of this workload (connection, spawn or request), over
    /// all its with-kscope phases.
    pub(super) fn bpf_ns_per_operation(&self, sensor: Option<&str>) -> Option<f64> {
        let mut time = 0u64;
        let mut operations = 0.0;
        for (phase, k) in self.measures() {
            time += k.summary.bpf_time_ns(sensor);
            operations += self.operations(phase);
        }
        (operations > 0.0).then(|| time as f64 / operations)
    }

    pub(super) fn cpu_percent(&self) -> Option<f64> {
        median(&self.measures().map(|(p, k)| cpu_percent(k.cpu_ns, p.load.wall)).collect::<Vec<_>>())
    }

    /// For the keep-alive workload: what kscope made of the requests, summed
    /// over its with-kscope phases.
    pub(super) fn l7_totals(&self) -> Option<L7Totals> {
        if !matches!(self.load, Load::KeepAlive { .. }) {
            return None;
        }
        let mut t = L7Totals::default();
        for (p, k) in self.measures() {
            let s = &k.summary;
            let l7 = &s.l7;
            let http = k.http.unwrap_or_default();
            t.phases += 1;
            t.requests += p.load.wrk_requests;
            t.exchanges += l7.exchanges;
            t.http.all += http.all;
            t.http.client += http.client;
            t.http.server += http.server;
            t.http.partial += http.partial;
            t.segments += l7.segments;
            t.parse_errors += l7.parse_errors;
            t.unpaired_dropped += l7.parser_unpaired_dropped;
            t.lost_events += s.lost_events;
            t.queue_dropped += s.ledger.queue_dropped;
            t.emit_failed += s.emit_failed();
            t.events_read += s.events_read();
        }
        Some(t)
    }
}

/// [`Workload::l7_totals`].
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct L7Totals {
    pub(super) phases: usize,
    /// Requests wrk completed.
    pub(super) requests: u64,
    /// The summaries' `l7.exchanges`: every protocol, every process.
    pub(super) exchanges: u64,
    /// Counted in the output: HTTP/1 on nginx's port, by side.
    pub(super) http: HttpExchanges,
    pub(super) segments: u64,
    pub(super) parse_errors: u64,
    pub(super) unpaired_dropped: u64,
    pub(super) events_read: u64,
    pub(super) lost_events: u64,
    pub(super) queue_dropped: u64,
    pub(super) emit_failed: u64,
}

impl L7Totals {
    pub(super) fn per_request(&self, n: u64) -> Option<f64> {
        (self.requests > 0).then(|| n as f64 / self.requests as f64)
    }

    pub(super) fn json(&self) -> Value {
        json!({
            "phases": self.phases, "wrk_requests": self.requests,
            "exchanges": self.exchanges, "exchanges_per_request": self.per_request(self.exchanges),
            "http_client_exchanges": self.http.client, "http_server_exchanges": self.http.server,
            "http_partial_exchanges": self.http.partial, "all_exchange_records": self.http.all,
            "http_exchanges_per_request": self.per_request(self.http.client + self.http.server),
            "expected_exchanges_per_request": 2,
            "segments": self.segments, "segments_per_request": self.per_request(self.segments),
            "parse_errors": self.parse_errors, "parser_unpaired_dropped": self.unpaired_dropped,
            "events_read": self.events_read, "lost_events": self.lost_events,
            "queue_dropped": self.queue_dropped, "emit_failed": self.emit_failed,
            "output": "kscope run --output json to a file: JSON serialization and write(2) are in the measured CPU",
        })
    }
}

pub(super) fn events_per_s(k: &KscopeMeasure, wall: Duration) -> f64 {
    k.summary.events_read() as f64 / wall.as_secs_f64().max(1e-9)
}

pub(super) fn cpu_percent(cpu_ns: u64, wall: Duration) -> f64 {
    100.0 * cpu_ns as f64 / (wall.as_nanos() as f64).max(1.0)
}

pub(super) fn measure_workloads(ctx: &HostContext<'_>, duration: Duration) -> anyhow::Result<Vec<Workload>> {
    let mut workloads = vec![
        Workload {
            name: "short TCP connections (nginx + wrk -t1 -c8, Connection: close)",
            unit: "connections/s",
            load: Load::Wrk { threads: 1, connections: 8 },
            baseline: Vec::new(),
            with_kscope: Vec::new(),
        },
        Workload {
            name: "process spawns (/bin/true, 1 spawner)",
            unit: "spawns/s",
            load: Load::Spawn { workers: 1 },
            baseline: Vec::new(),
            with_kscope: Vec::new(),
        },
        Workload {
            name: "HTTP/1.1 keep-alive requests (nginx + wrk -t2 -c32)",
            unit: "requests/s",
            load: Load::KeepAlive { threads: 2, connections: 32 },
            baseline: Vec::new(),
            with_kscope: Vec::new(),
        },
    ];
    for rep in 0..REPS {
        for workload in &mut workloads {
            let order = if rep % 2 == 0 { [false, true] } else { [true, false] };
            for with_kscope in order {
                let side = if with_kscope { "with kscope" } else { "baseline" };
                println!("bench: [{}/{REPS}] {} {side} ...", rep + 1, workload.load.label());
                let phase = run_phase(ctx, workload.load, duration, with_kscope, rep)
                    .with_context(|| format!("{} {side}, pair {}", workload.load.label(), rep + 1))?;
                println!("bench:   {}", phase_line(&phase));
                if with_kscope {
                    workload.with_kscope.push(phase);
                } else {
                    workload.baseline.push(phase);
                }
            }
        }
    }
    Ok(workloads)
}

pub(super) fn run_phase(
    ctx: &HostContext<'_>,
    load: Load,
    duration: Duration,
    with_kscope: bool,
    rep: usize,
) -> anyhow::Result<Phase> {
    if !with_kscope {
        let result = run_load(ctx, load, duration)?;
        return Ok(Phase { rep, load: result, kscope: None });
    }
    let kscope = Kscope::start(ctx)?;
    thread::sleep(SETTLE);
    let cpu_start = kscope.cpu_ns(ctx.clk_tck)?;
    let result = run_load(ctx, load, duration)?;
    // The L7 path queues far more than the others: charge the requests with
    // the work kscope still does on them after wrk stopped.
    let l7 = matches!(load, Load::KeepAlive { .. });
    let (cpu_end, drain) = if l7 {
        let (cpu, drain) = kscope.wait_idle(ctx.clk_tck)?;
        (cpu, Some(drain))
    } else {
        (kscope.cpu_ns(ctx.clk_tck)?, None)
    };
    let forms = kscope.forms.clone();
    let (summary, http) = kscope.stop_counting(l7.then_some(ctx.port))?;
    Ok(Phase {
        rep,
        load: result,
        kscope: Some(KscopeMeasure {
            cpu_ns: cpu_end.saturating_sub(cpu_start),
            startup_cpu_ns: cpu_start,
            summary,
            forms,
            drain,
            http,
        }),
    })
}

/// One progress line per phase, so a long run shows it is alive.
pub(super) fn phase_line(phase: &Phase) -> String {
    let mut parts = Vec::new();
    if let Some(rate) = phase.load.connections_per_s {
        parts.push(format!("{rate:.0} connections/s"));
    }
    if let Some(rate) = phase.load.requests_per_s {
        parts.push(format!("{rate:.0} requests/s ({} requests)", phase.load.wrk_requests));
    }
    if let Some(rate) = phase.load.spawns_per_s {
        parts.push(format!("{rate:.0} spawns/s"));
    }
    if phase.load.wrk_errors + phase.load.spawn_failures > 0 {
        parts.push(format!("{} wrk errors, {} failed spawns", phase.load.wrk_errors, phase.load.spawn_failures));
    }
    if let Some(k) = &phase.kscope {
        parts.push(format!(
            "kscope read {} events ({:.0}/s), lost {}, queue-dropped {}, CPU {:.1}%",
            k.summary.events_read(),
            events_per_s(k, phase.load.wall),
            k.summary.lost_events,
            k.summary.ledger.queue_dropped,
            cpu_percent(k.cpu_ns, phase.load.wall)
        ));
        let l7 = &k.summary.l7;
        parts.push(format!("{} exchanges, {} parse errors", l7.exchanges, l7.parse_errors));
        if let Some(http) = &k.http {
            parts.push(format!("HTTP/1 exchanges on nginx's port: {} client + {} server", http.client, http.server));
        }
        if let Some(drain) = k.drain {
            parts.push(format!("busy {:.1} s after the load", drain.as_secs_f64()));
        }
    }
    parts.join(", ")
}
