//! Events, exchanges, spans, drops and stats as lines people read (UTC
//! time of day first).

use std::{net::IpAddr, time::Duration};

use kscope_protocols::Detail as L7Detail;

// The JSON records' names for roles, transports and the like are the
// console's too.
use super::{
    Clock,
    json::{direction, l7_role, resource_pid, service_name, span_kind, span_status, tcp_role, transport},
};
use crate::{
    conntrack::ExchangeRecord,
    decode::{Event, TcpStep},
    drops::DropRecord,
    export::SpanItem,
    kernel::FunctionReport,
    sensors::SensorChoice,
    stats::StatsRecord,
};

fn endpoint(addr: &(IpAddr, u16)) -> String {
    match addr.0 {
        IpAddr::V4(ip) => format!("{ip}:{}", addr.1),
        IpAddr::V6(ip) => format!("[{ip}]:{}", addr.1),
    }
}

fn wall_time(unix_ns: u64) -> String {
    let secs = unix_ns / 1_000_000_000;
    let ms = (unix_ns / 1_000_000) % 1000;
    format!("{:02}:{:02}:{:02}.{ms:03}", (secs / 3600) % 24, (secs / 60) % 60, secs % 60)
}

pub fn human_duration(ns: u64) -> String {
    let d = Duration::from_nanos(ns);
    if d >= Duration::from_secs(1) {
        format!("{:.2}s", d.as_secs_f64())
    } else if d >= Duration::from_millis(1) {
        format!("{:.2}ms", d.as_secs_f64() * 1e3)
    } else {
        format!("{:.1}us", d.as_secs_f64() * 1e6)
    }
}

/// The console line of one event (UTC time of day first).
pub fn event_line(event: &Event, clock: &Clock) -> String {
    let o = event.origin();
    let time = wall_time(clock.unix_nanos(o.timestamp_ns));
    let who = format!("pid={} comm={}", o.pid, o.comm);
    match event {
        Event::Exec(e) => format!(
            "{time} exec    {who} ppid={} cgroup={} filename={}{}",
            e.ppid,
            o.cgroup_id,
            e.filename,
            if e.filename_truncated { "…" } else { "" }
        ),
        Event::Exit(e) => {
            let how = match (e.exit_code, e.signal) {
                (_, Some(sig)) => format!("signal={sig}"),
                (Some(code), None) => format!("code={code}"),
                (None, None) => "code=?".into(),
            };
            format!("{time} exit    {who} ppid={} {how} lifetime={}", e.ppid, human_duration(e.lifetime_ns))
        }
        Event::Data(d) => format!(
            "{time} data    {who} {} -> {} {} {} {} total={} captured={}",
            endpoint(&d.local),
            endpoint(&d.remote),
            transport(d.transport).name(),
            direction(d.direction).name(),
            d.source.name(),
            d.total_len,
            d.data.len()
        ),
        Event::Retransmit(r) => {
            let stack: Vec<&str> = r.frames.iter().map(|f| &**f).collect();
            format!(
                "{time} retrans {who} {} -> {} state={} stack={}",
                endpoint(&r.local),
                endpoint(&r.remote),
                crate::decode::tcp_state_name(r.state),
                stack.join(" <- ")
            )
        }
        Event::Tcp(t) => {
            let arrow = format!("{} -> {}", endpoint(&t.local), endpoint(&t.remote));
            let role = t.role.map_or("unknown", |r| tcp_role(r).name());
            match t.step {
                TcpStep::Connect => format!("{time} connect {who} {arrow} role={role}"),
                TcpStep::Accept => format!("{time} accept  {who} {arrow} role={role}"),
                TcpStep::Close => format!(
                    "{time} close   {who} {arrow} role={role} sent={} received={} duration={}{}",
                    t.bytes_sent,
                    t.bytes_received,
                    human_duration(t.duration_ns),
                    if t.never_established { " never-established" } else { "" }
                ),
            }
        }
    }
}

/// The console line of one exchange.
pub fn exchange_line(record: &ExchangeRecord, clock: &Clock) -> String {
    let e = &record.exchange;
    let o = &record.origin;
    let time = wall_time(clock.unix_nanos(e.start_ns));
    let status = e.status.map_or_else(|| "-".to_owned(), |s| s.to_string());
    let what = match &e.detail {
        L7Detail::Dns(d) => format!("{} {}", d.qtype, e.target),
        _ => format!("{} {}", e.method.as_deref().unwrap_or("-"), e.target),
    };
    format!(
        "{time} {:<7} pid={} comm={} {} {} -> {} {what} status={status} duration={} req={}B resp={}B{}",
        e.kind.name(),
        o.pid,
        o.comm,
        l7_role(e.role).name(),
        endpoint(&(record.local.0.to_canonical(), record.local.1)),
        endpoint(&(record.peer.0.to_canonical(), record.peer.1)),
        human_duration(e.end_ns.saturating_sub(e.start_ns)),
        e.request_bytes,
        e.response_bytes,
        e.partial.as_ref().map(|p| format!(" partial=\"{p}\"")).unwrap_or_default()
    )
}

/// The console line of one span.
pub fn span_line(item: &SpanItem) -> String {
    let span = &item.span;
    let hex = crate::telemetry::trace_context::hex;
    let pid = resource_pid(item).map_or_else(|| "null".to_owned(), |pid| pid.to_string());
    let parent = if span.parent_span_id.is_empty() { "-".to_owned() } else { hex(&span.parent_span_id) };
    format!(
        "{} span    pid={pid} service={} {} {:?} {} duration={} trace={} span={} parent={parent}",
        wall_time(span.start_time_unix_nano),
        service_name(item).unwrap_or("?"),
        span_kind(span.kind).name(),
        span.name,
        span_status(span).name(),
        human_duration(span.end_time_unix_nano.saturating_sub(span.start_time_unix_nano)),
        hex(&span.trace_id),
        hex(&span.span_id),
    )
}

/// `12:00:01.000 drop    12 packets NO_SOCKET at tcp_v4_rcv+0x2a5 (ipv4, netns 4026531840), 40 in all`.
pub fn drop_line(record: &DropRecord) -> String {
    format!(
        "{} drop    {} packet{} {} at {} ({}), {} in all",
        wall_time(record.time_unix_nano),
        record.count,
        if record.count == 1 { "" } else { "s" },
        record.reason,
        record.location,
        drop_where(record),
        record.total
    )
}

/// `ipv4, netns 4026531840` (no netns when the packet had no device).
fn drop_where(record: &DropRecord) -> String {
    match record.netns {
        0 => record.protocol.clone(),
        netns => format!("{}, netns {netns}", record.protocol),
    }
}

/// A `stats` or `summary` record (`kind`) as lines.
pub fn stats_lines(kind: &str, stats: &StatsRecord) -> Vec<String> {
    let l = &stats.ledger;
    let mut lines = vec![format!(
        "kscope {}: {} events read, {} lost in the kernel (per CPU {:?}), {} undecodable, {} dropped at the queue, {} written",
        kind,
        l.read(),
        l.lost(),
        l.lost_per_cpu,
        l.decode_errors,
        l.queue_dropped,
        l.written
    )];
    let c = &stats.l7;
    lines.push(format!(
        "  l7: {} segments ({} of {} bytes captured), {} exchanges, {} unclassified segments, {} parse errors, {} connections not tracked (table full), {} expired",
        c.segments, c.bytes_captured, c.bytes_total, c.exchanges, c.unclassified_segments, c.parse_errors, c.table_full, c.expired
    ));
    for s in &stats.sensors {
        lines.push(format!(
            "  sensor {:<12} emitted={} emit_failed={} table_full={} unreported={}",
            s.sensor, s.emitted, s.emit_failed, s.table_full, s.unreported
        ));
    }
    if let Some(drops) = &stats.drops {
        let top: Vec<String> = drops
            .top
            .iter()
            .map(|d| format!("{} {} at {} ({})", d.total, d.reason, d.location, drop_where(d)))
            .collect();
        let untracked = match drops.untracked {
            0 => String::new(),
            n => format!(" ({n} of them untracked: the drop map was full)"),
        };
        lines.push(format!(
            "  dropped {} packets{untracked}{}{}",
            drops.counted + drops.untracked,
            if top.is_empty() { "" } else { ": " },
            top.join(", ")
        ));
    }
    if stats.bpf_stats_enabled {
        for p in &stats.programs {
            lines.push(format!(
                "  program {:<24} runs={} avg={}ns total={}",
                p.program,
                p.run_count,
                p.avg_ns_per_run,
                human_duration(p.run_time_ns)
            ));
        }
    } else {
        lines.push("  program costs unavailable: BPF run-time statistics could not be enabled".into());
    }
    lines
}

pub fn choice_lines(choices: &[SensorChoice]) -> Vec<String> {
    let mut lines = Vec::new();
    for c in choices {
        match c.chosen {
            Some(form) => lines.push(format!("{:<12} {form:<10} ({})", c.sensor, c.description)),
            None => lines.push(format!("{:<12} {:<10} ({})", c.sensor, "NOT RUNNING", c.description)),
        }
        for r in &c.rejected {
            lines.push(format!("             rejected {}: {}", r.form, r.reason));
        }
        if let Some(d) = &c.degraded {
            lines.push(format!("             degraded: {d}"));
        }
        for f in &c.fallbacks {
            match &f.unavailable {
                None => lines.push(format!("             fallback {}: available", f.form)),
                Some(reason) => lines.push(format!("             fallback {}: unavailable: {reason}", f.form)),
            }
        }
    }
    lines
}

/// `kscope probe`'s table of hooked kernel functions.
pub fn function_lines(reports: &[FunctionReport]) -> Vec<String> {
    let mut lines = vec!["kernel functions hooked by kprobe and fentry forms:".to_owned()];
    for r in reports {
        let names = match r.kallsyms_names.as_slice() {
            [] => "not in kallsyms (inlined or absent)".to_owned(),
            [only] if *only == r.function => "in kallsyms".to_owned(),
            names => format!("in kallsyms as {}", names.join(", ")),
        };
        let ftrace = match r.traceable {
            Some(true) => "traceable",
            Some(false) => "not traceable",
            None => "traceability unknown",
        };
        let btf = if r.btf { "in BTF" } else { "not in BTF" };
        let kprobe = match &r.kprobe_unusable {
            None => String::new(),
            Some(why) => format!("; kprobe: {why}"),
        };
        lines.push(format!("  {:<24} {names}; {ftrace}; {btf}{kprobe}", r.function));
    }
    lines
}
