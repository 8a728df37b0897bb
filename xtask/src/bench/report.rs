//! The bench's report: text for the terminal, JSON for
//! `target/bench/report.json`.

use std::collections::BTreeMap;

use kscope_schema::ProgramStats;
use serde_json::{Value, json};

use super::{
    REPS,
    ramp::RampStep,
    summary::{SummaryFigures as _, avg_ns, merge_programs, program_json},
    vm::{VM_FORMS, VM_ITERATIONS, VmKernel, vm_pass_order},
    workloads::{Phase, Workload, cpu_percent, events_per_s},
};

pub(super) struct HostResults {
    pub(super) workloads: Vec<Workload>,
    pub(super) ramp: Vec<RampStep>,
}

pub(super) struct Report {
    pub(super) machine: Value,
    pub(super) host: HostResults,
    pub(super) vm: Option<Vec<VmKernel>>,
}

/// Per program over all with-kscope phases of the fixed workloads: runs and
/// run time are summed, so the average weighs every hit equally.
pub(super) fn host_program_costs(workloads: &[Workload]) -> Vec<(String, ProgramStats)> {
    let mut by_program: BTreeMap<(String, String), (String, Vec<&ProgramStats>)> = BTreeMap::new();
    for (_, k) in workloads.iter().flat_map(Workload::measures) {
        for p in &k.summary.programs {
            let form = k.forms.get(p.sensor.as_ref()).cloned().unwrap_or_else(|| "?".into());
            by_program.entry((p.sensor.to_string(), p.program.clone())).or_insert_with(|| (form, Vec::new())).1.push(p);
        }
    }
    by_program
        .into_values()
        .flat_map(|(form, runs)| merge_programs(runs.into_iter()).into_iter().map(move |p| (form.clone(), p)))
        .collect()
}

impl Report {
    pub(super) fn max_lossless(&self) -> Option<&RampStep> {
        self.host.ramp.iter().filter(|s| s.lossless()).max_by(|a, b| a.events_per_s().total_cmp(&b.events_per_s()))
    }

    pub(super) fn first_losses(&self) -> Vec<&RampStep> {
        self.host.ramp.iter().filter(|s| !s.lossless()).collect()
    }

    pub(super) fn text(&self) -> String {
        let mut out = String::new();
        let m = &self.machine;
        out += "==================== kscope benchmark ====================\n";
        out += &format!(
            "host kernel {}, {} CPUs, load average at start {}; {} s per phase; {}\n",
            m["kernel"].as_str().unwrap_or("?"),
            m["cpus"],
            m["loadavg_at_start"].as_str().unwrap_or("?"),
            m["seconds_per_phase"],
            m["kscope"].as_str().unwrap_or("?"),
        );

        let load_1min: f64 =
            m["loadavg_at_start"].as_str().and_then(|l| l.split_whitespace().next()?.parse().ok()).unwrap_or(0.0);
        if load_1min > 0.5 {
            out += &format!(
                "note: 1-minute load average {load_1min} at start: other work on this machine adds noise to every figure\n"
            );
        }
        out += &format!(
            "\n1. Throughput without / with `kscope run --output json --stats-interval 1` (median of {REPS}, goal ratio >= 0.98)\n"
        );
        let mut rows = vec![row([
            "workload",
            "unit",
            "baseline",
            "with kscope",
            "ratio",
            "baseline spread",
            "samples base | with",
        ])];
        for w in &self.host.workloads {
            let fmt = |v: &[f64]| v.iter().map(|x| format!("{x:.0}")).collect::<Vec<_>>().join(" ");
            rows.push(row([
                w.name.to_owned(),
                w.unit.to_owned(),
                opt(median(&w.rates(&w.baseline)), 0),
                opt(median(&w.rates(&w.with_kscope)), 0),
                opt(w.ratio(), 3),
                w.baseline_spread_percent().map_or("-".into(), |p| format!("{p:.0}%")),
                format!("{} | {}", fmt(&w.rates(&w.baseline)), fmt(&w.rates(&w.with_kscope))),
            ]));
        }
        out += &table(&rows);
        // A ratio smaller than the baseline's own spread says little.
        if self.host.workloads.iter().any(|w| w.baseline_spread_percent().is_some_and(|p| p > 10.0)) {
            out += "   note: baseline samples spread over 10%: the machine was busy with other work; rerun on a quiet machine\n";
        }
        let errors: u64 = self
            .host
            .workloads
            .iter()
            .flat_map(|w| w.baseline.iter().chain(&w.with_kscope))
            .map(|p| p.load.wrk_errors + p.load.spawn_failures)
            .sum();
        if errors > 0 {
            out += &format!("   note: {errors} wrk socket errors / non-2xx answers / failed spawns over all phases\n");
        }

        out += "\n2. kscope CPU per event (utime+stime over the load, start-up excluded; median of the with-kscope phases)\n";
        let mut rows = vec![row([
            "workload",
            "events/s read",
            "kscope CPU",
            "ns CPU/event",
            "start-up CPU",
            "lost",
            "queue dropped",
        ])];
        for w in &self.host.workloads {
            let startup = median(&w.measures().map(|(_, k)| k.startup_cpu_ns as f64 / 1e6).collect::<Vec<_>>());
            let lost: u64 = w.measures().map(|(_, k)| k.summary.lost_events).sum();
            let dropped: u64 = w.measures().map(|(_, k)| k.summary.ledger.queue_dropped).sum();
            rows.push(row([
                w.name.to_owned(),
                opt(w.events_per_s(), 0),
                w.cpu_percent().map_or("-".into(), |c| format!("{c:.1}%")),
                opt(w.ns_per_event(), 0),
                startup.map_or("-".into(), |s| format!("{s:.0} ms")),
                lost.to_string(),
                dropped.to_string(),
            ]));
        }
        out += &table(&rows);

        for w in &self.host.workloads {
            let Some(t) = w.l7_totals() else { continue };
            out += &format!("\n2b. L7 (socket_data sensor, connection table, HTTP/1 parser): {}\n", w.name);
            out += &format!(
                "   throughput ratio {} (goal >= 0.98); kscope CPU {} ns per request, {} of a CPU \
                 (median of {}; includes the work it did after wrk stopped, median {} s)\n",
                opt(w.ratio(), 3),
                opt(w.cpu_ns_per_operation(), 0),
                w.cpu_percent().map_or("-".into(), |c| format!("{c:.1}%")),
                t.phases,
                opt(median(&w.measures().filter_map(|(_, k)| k.drain.map(|d| d.as_secs_f64())).collect::<Vec<_>>()), 1),
            );
            out += &format!(
                "   BPF: socket_data sensor {} ns per request, all sensors {} ns per request\n",
                opt(w.bpf_ns_per_operation(Some("socket_data")), 0),
                opt(w.bpf_ns_per_operation(None), 0),
            );
            out += &format!(
                "   over all with-kscope phases: wrk made {} requests; kscope reported {} exchanges ({} per request; \
                 expected 2: one for wrk's side, one for nginx's), of them HTTP/1 on nginx's port {} client + {} server \
                 ({} per request, {} partial)\n",
                t.requests,
                t.exchanges,
                opt(t.per_request(t.exchanges), 3),
                t.http.client,
                t.http.server,
                opt(t.per_request(t.http.client + t.http.server), 3),
                t.http.partial,
            );
            out += &format!(
                "   {} data segments ({} per request), {} parse errors, {} unpaired dropped; {} events read, \
                 lost {} in the kernel, {} dropped at the queue, {} emit failed\n",
                t.segments,
                opt(t.per_request(t.segments), 2),
                t.parse_errors,
                t.unpaired_dropped,
                t.events_read,
                t.lost_events,
                t.queue_dropped,
                t.emit_failed,
            );
            let mut rows = vec![row([
                "pair",
                "req/s base | with",
                "requests",
                "exchanges",
                "HTTP client+server",
                "lost",
                "queue dropped",
                "kscope CPU",
                "ns CPU/req",
                "BPF ns/req",
            ])];
            for p in &w.with_kscope {
                let Some(k) = &p.kscope else { continue };
                let base = w.baseline.iter().find(|b| b.rep == p.rep).map(|b| w.rate(b));
                let requests = p.load.wrk_requests;
                let per = |n: f64| (requests > 0).then(|| n / requests as f64);
                let bpf: u64 =
                    k.summary.programs.iter().filter(|x| x.sensor == "socket_data").map(|x| x.run_time_ns).sum();
                rows.push(row([
                    (p.rep + 1).to_string(),
                    format!("{} | {:.0}", opt(base, 0), w.rate(p)),
                    requests.to_string(),
                    k.summary.l7.exchanges.to_string(),
                    k.http.map_or("-".into(), |h| format!("{} + {}", h.client, h.server)),
                    k.summary.lost_events.to_string(),
                    k.summary.ledger.queue_dropped.to_string(),
                    format!("{:.1}%", cpu_percent(k.cpu_ns, p.load.wall)),
                    opt(per(k.cpu_ns as f64), 0),
                    opt(per(bpf as f64), 0),
                ]));
            }
            out += &table(&rows);
            out += "   kscope ran with --output json into a file: serializing ~2 exchange records per request and \
                    writing them are part of its CPU (console output is not used).\n";
        }

        out += "\n3. Event-rate ramp (each family stops at its first loss; default buffers)\n";
        let mut rows = vec![row([
            "load",
            "events/s read",
            "conn/s",
            "spawns/s",
            "kscope CPU",
            "lost",
            "queue dropped",
            "emit failed",
        ])];
        for s in &self.host.ramp {
            let k = &s.kscope.summary;
            rows.push(row([
                s.load.label(),
                format!("{:.0}", s.events_per_s()),
                opt(s.result.connections_per_s, 0),
                opt(s.result.spawns_per_s, 0),
                format!("{:.1}%", cpu_percent(s.kscope.cpu_ns, s.result.wall)),
                k.lost_events.to_string(),
                k.ledger.queue_dropped.to_string(),
                k.emit_failed().to_string(),
            ]));
        }
        out += &table(&rows);
        match self.max_lossless() {
            Some(s) => {
                out +=
                    &format!("   highest rate with zero loss: {:.0} events/s ({})\n", s.events_per_s(), s.load.label())
            }
            None => out += "   no step ran without loss\n",
        }
        let losses = self.first_losses();
        if losses.is_empty() {
            out += "   no loss at any step\n";
        }
        for s in losses {
            out += &format!(
                "   first loss in family {}: at {:.0} events/s ({}): lost {}, queue dropped {}, emit failed {}\n",
                s.family,
                s.events_per_s(),
                s.load.label(),
                s.kscope.summary.lost_events,
                s.kscope.summary.ledger.queue_dropped,
                s.kscope.summary.emit_failed()
            );
        }

        out += "\n4. Cost per program run (BPF run-time stats: avg ns per hit)\n";
        out += &format!("   host, kernel {} (all with-kscope phases of 1.):\n", m["kernel"].as_str().unwrap_or("?"));
        let mut rows = vec![row(["form", "sensor", "program", "runs", "avg ns/run"])];
        for (form, p) in host_program_costs(&self.host.workloads) {
            rows.push(row([
                form,
                p.sensor.to_string(),
                p.program.clone(),
                p.run_count.to_string(),
                opt(avg_ns(&p), 0),
            ]));
        }
        out += &indent(&table(&rows));
        for w in &self.host.workloads {
            let (sensor, unit) = w.operation();
            out += &format!(
                "     {sensor} sensor, all programs: {} BPF ns per {unit} ({})\n",
                opt(w.bpf_ns_per_operation(Some(sensor)), 0),
                w.load.label()
            );
        }
        match &self.vm {
            None => out += "   QEMU: skipped (--no-vm)\n",
            Some(kernels) => {
                out += &format!(
                    "   QEMU/TCG guests: {VM_ITERATIONS} wget + {VM_ITERATIONS} /bin/true per pass, 2 passes per form in the order {};\n   \
                     emulation inflates absolute ns: compare forms within one kernel.\n",
                    vm_pass_order().join(" ")
                );
                for k in kernels {
                    out += &format!(
                        "   {} (kernel {}), boot+run {:.1} s:\n",
                        k.label,
                        k.release.as_deref().unwrap_or("?"),
                        k.boot_and_run_s
                    );
                    if let Some(err) = &k.error {
                        out += &format!("   ERROR: {}\n", tail_lines(err, 30));
                    }
                    let mut rows = vec![row(["form", "sensor", "program", "runs", "avg ns/run"])];
                    for form in VM_FORMS {
                        for p in k.programs(form) {
                            rows.push(row([
                                form.to_owned(),
                                p.sensor.to_string(),
                                p.program.clone(),
                                p.run_count.to_string(),
                                opt(avg_ns(&p), 0),
                            ]));
                        }
                    }
                    out += &indent(&table(&rows));
                    let mut header = vec!["BPF ns per operation (all programs of a sensor)".to_owned()];
                    header.extend(VM_FORMS.map(str::to_owned));
                    let mut rows = vec![header];
                    for (sensor, unit) in [("process", "spawn"), ("tcp", "connection")] {
                        let mut cells = vec![format!("{sensor} (per {unit})")];
                        cells.extend(VM_FORMS.map(|form| opt(k.ns_per_operation(form, sensor), 0)));
                        rows.push(cells);
                    }
                    out += &indent(&table(&rows));
                    for f in &k.passes {
                        let not_forced: Vec<String> = f
                            .forms
                            .iter()
                            .filter(|(_, chosen)| **chosen != f.form)
                            .map(|(s, c)| format!("{s} on {c}"))
                            .collect();
                        if !not_forced.is_empty() {
                            out += &format!("   note: with --hook-form {}: {}\n", f.form, not_forced.join(", "));
                        }
                        if let Some(problem) = &f.problem {
                            out += &format!("   problem with {}: {problem}\n", f.form);
                        }
                    }
                }
            }
        }
        out
    }

    pub(super) fn json(&self) -> Value {
        let phase_json = |p: &Phase| {
            json!({
                "rep": p.rep,
                "wall_s": p.load.wall.as_secs_f64(),
                "connections_per_s": p.load.connections_per_s,
                "requests_per_s": p.load.requests_per_s,
                "wrk_requests": p.load.wrk_requests,
                "spawns_per_s": p.load.spawns_per_s,
                "wrk_errors": p.load.wrk_errors,
                "spawn_failures": p.load.spawn_failures,
                "kscope": p.kscope.as_ref().map(|k| json!({
                    "cpu_ns": k.cpu_ns, "startup_cpu_ns": k.startup_cpu_ns, "ns_per_event": k.ns_per_event(),
                    "events_per_s": events_per_s(k, p.load.wall), "forms": k.forms, "summary": k.summary.json(),
                    "drain_s": k.drain.map(|d| d.as_secs_f64()),
                    "http_exchanges_on_nginx_port": k.http.map(|h| json!({
                        "all_exchange_records": h.all, "client": h.client, "server": h.server, "partial": h.partial,
                    })),
                })),
            })
        };
        let workloads: Vec<Value> = self
            .host
            .workloads
            .iter()
            .map(|w| {
                json!({
                    "workload": w.name, "load": w.load.label(), "unit": w.unit,
                    "baseline_median": median(&w.rates(&w.baseline)),
                    "with_kscope_median": median(&w.rates(&w.with_kscope)),
                    "ratio": w.ratio(),
                    "kscope_ns_per_event_median": w.ns_per_event(),
                    "kscope_events_per_s_median": w.events_per_s(),
                    "kscope_cpu_percent_median": w.cpu_percent(),
                    "kscope_cpu_ns_per_operation_median": w.cpu_ns_per_operation(),
                    "bpf_ns_per_operation": {
                        "sensor": w.operation().0,
                        "per": w.operation().1,
                        "ns": w.bpf_ns_per_operation(Some(w.operation().0)),
                        "all_sensors_ns": w.bpf_ns_per_operation(None),
                    },
                    "l7": w.l7_totals().map(|t| t.json()),
                    "baseline_spread_percent": w.baseline_spread_percent(),
                    "baseline": w.baseline.iter().map(phase_json).collect::<Vec<_>>(),
                    "with_kscope": w.with_kscope.iter().map(phase_json).collect::<Vec<_>>(),
                })
            })
            .collect();
        let step_json = |s: &RampStep| {
            json!({
                "family": s.family, "load": s.load.label(), "wall_s": s.result.wall.as_secs_f64(),
                "events_per_s": s.events_per_s(), "lossless": s.lossless(),
                "connections_per_s": s.result.connections_per_s, "spawns_per_s": s.result.spawns_per_s,
                "kscope_cpu_percent": cpu_percent(s.kscope.cpu_ns, s.result.wall),
                "summary": s.kscope.summary.json(),
            })
        };
        let host_programs: Vec<Value> = host_program_costs(&self.host.workloads)
            .iter()
            .map(|(form, p)| json!({"form": form, "sensor": p.sensor, "program": p.program, "run_count": p.run_count, "run_time_ns": p.run_time_ns, "avg_ns_per_run": avg_ns(p)}))
            .collect();
        let vm = self.vm.as_ref().map(|kernels| {
            kernels
                .iter()
                .map(|k| {
                    json!({
                        "label": k.label, "kernel": k.release, "boot_and_run_s": k.boot_and_run_s, "error": k.error,
                        "iterations_per_pass": VM_ITERATIONS,
                        "per_form": VM_FORMS.iter().map(|form| json!({
                            "form": form,
                            "process_bpf_ns_per_spawn": k.ns_per_operation(form, "process"),
                            "tcp_bpf_ns_per_connection": k.ns_per_operation(form, "tcp"),
                            "programs": k.programs(form).iter().map(program_json).collect::<Vec<_>>(),
                        })).collect::<Vec<_>>(),
                        "passes": k.passes.iter().map(|f| json!({
                            "form": f.form, "chosen": f.forms, "workload_s": f.workload_s, "problem": f.problem,
                            "summary": f.summary.as_ref().map(|s| s.json()),
                        })).collect::<Vec<_>>(),
                    })
                })
                .collect::<Vec<_>>()
        });
        json!({
            "machine": self.machine,
            "throughput": workloads,
            "ramp": {
                "steps": self.host.ramp.iter().map(step_json).collect::<Vec<_>>(),
                "max_lossless": self.max_lossless().map(step_json),
                "first_losses": self.first_losses().into_iter().map(step_json).collect::<Vec<_>>(),
            },
            "hook_cost": { "host": host_programs, "vm": vm },
        })
    }
}

pub(super) fn row<const N: usize>(cells: [impl Into<String>; N]) -> Vec<String> {
    cells.into_iter().map(Into::into).collect()
}

/// Left-aligned columns, two spaces apart, with a rule under the header.
pub(super) fn table(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| rows.iter().filter_map(|r| r.get(c)).map(|cell| cell.chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for (i, r) in rows.iter().enumerate() {
        let line: Vec<String> = r.iter().zip(&widths).map(|(cell, w)| format!("{cell:<w$}")).collect();
        out += "   ";
        out += line.join("  ").trim_end();
        out += "\n";
        if i == 0 {
            out += "   ";
            out += &widths.iter().map(|w| "-".repeat(*w)).collect::<Vec<_>>().join("  ");
            out += "\n";
        }
    }
    out
}

pub(super) fn indent(text: &str) -> String {
    text.lines().map(|l| format!("  {l}\n")).collect()
}

pub(super) fn opt(value: Option<f64>, decimals: usize) -> String {
    value.map_or_else(|| "-".into(), |v| format!("{v:.decimals$}"))
}

pub(super) fn median(values: &[f64]) -> Option<f64> {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(sorted[n / 2]),
        _ => Some((sorted[n / 2 - 1] + sorted[n / 2]) / 2.0),
    }
}

pub(super) fn tail_lines(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0]), Some(2.5));
    }
}
