//! `kscope run`: attach the sensors, drain the buffers, print events, and
//! account for every event until Ctrl-C (or `--duration`).

use std::{
    io::Write,
    sync::{Arc, Mutex, atomic::Ordering::Relaxed},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use aya::{
    Ebpf,
    maps::PerCpuArray,
    sys::{Stats, enable_stats},
};
use kscope_common::{SocketDataConfig, counter_slot, names};
use kscope_protocols::Privacy;
use kscope_schema::{Record, SensorsRecord};
use tokio::{signal::unix::SignalKind, sync::mpsc};

use crate::{
    conntrack::{ConnCounts, ConnTable, ExchangeRecord},
    decode::Event,
    drops::{DropRecord, DropWatch},
    export::{
        MetricsSource, SpanItem,
        otlp::{ExportCounts, MetricsExporter, OtlpConfig, SpanExporter, SpanSender},
        prometheus::PrometheusServer,
    },
    kernel::KernelFeatures,
    loader,
    output::{self, Clock, OutputFormat, Sink},
    preflight,
    recording::Recorder,
    sensors::{self, HookForm, SENSORS, Search, SensorChoice},
    stacks::KernelStacks,
    stats::{LossLedger, ProgramStats, SensorCounts, StatsRecord},
    telemetry::{
        Telemetry, TelemetryOptions,
        health::{self, HealthReading},
        links::IdGenerator,
        metrics::MetricStore,
    },
    transport,
};

#[derive(Debug, Clone)]
pub struct RunOptions {
    pub output: OutputFormat,
    pub hook_form: Option<HookForm>,
    pub stats_interval: Duration,
    pub duration: Option<Duration>,
    pub pages_per_cpu: usize,
    pub queue_capacity: usize,
    /// Bytes of each socket send/receive captured in the kernel.
    pub capture_bytes: u32,
    pub privacy: Privacy,
    /// Print each data event's metadata (never its payload).
    pub data_events: bool,
    /// Connections the connection table tracks at most.
    pub connections: usize,
    /// Save every record read, raw, here (`kscope replay` reads it back).
    pub record: Option<std::path::PathBuf>,
    pub record_limit: u64,
    pub export: ExportOptions,
}

impl ExportOptions {
    /// Whether spans are made (for OTLP, or printed with `--spans`).
    fn traces(&self) -> bool {
        self.print_spans || self.otlp.as_ref().is_some_and(|o| o.traces.is_some())
    }
}

/// Where spans and metrics go besides the console.
#[derive(Debug, Clone, Default)]
pub struct ExportOptions {
    pub otlp: Option<OtlpConfig>,
    pub prometheus_listen: Option<std::net::SocketAddr>,
    /// Print each finished span (with its trace and span ids) as a line.
    pub print_spans: bool,
    /// `traces`/`metrics` are set from what is configured above.
    pub telemetry: TelemetryOptions,
}

/// What the telemetry stage and the exporters did: the summary's `export`.
pub use kscope_schema::ExportSummary;

/// The loaded object and what the kernel offers, before any sensor attaches.
pub struct Prepared {
    pub ebpf: Ebpf,
    pub features: KernelFeatures,
}

/// Preflight, feature detection and load; nothing is attached yet.
pub fn prepare(capture_bytes: u32) -> anyhow::Result<Prepared> {
    preflight::check_capabilities()?;
    if let Some(note) = preflight::ensure_tracefs() {
        tracing::info!("{note}");
    }
    let features = KernelFeatures::detect(&sensors::wanted());
    // kscope's own sockets (its export traffic) would feed back into it.
    let socket_data = SocketDataConfig { capture_bytes, self_tgid: std::process::id() };
    let ebpf = loader::load(&features, &socket_data).context("cannot load kscope's eBPF object")?;
    Ok(Prepared { ebpf, features })
}

/// Each sensor on the best form that attaches (or only `forced`).
pub fn attach_sensors(prepared: &mut Prepared, forced: Option<HookForm>, search: Search) -> Vec<SensorChoice> {
    // aya's own copy of the kernel BTF, which fentry/fexit loading needs:
    // parsed only if a fentry form is tried (seconds under emulation).
    let mut btf: Option<Option<aya::Btf>> = None;
    let ebpf = &mut prepared.ebpf;
    sensors::choose_and_attach(&prepared.features, forced, search, |form| {
        let btf = match form.form {
            HookForm::Fentry => btf.get_or_insert_with(|| aya::Btf::from_sys_fs().ok()).as_ref(),
            HookForm::Kprobe | HookForm::Tracepoint => None,
        };
        sensors::attach_form(ebpf, btf, form)
    })
}

pub async fn run(opts: RunOptions) -> anyhow::Result<()> {
    // Bound before anything attaches: a taken port is an error up front.
    let prometheus = match opts.export.prometheus_listen {
        Some(addr) => Some(PrometheusServer::bind(addr).await.context("--prometheus-listen")?),
        None => None,
    };
    let mut prepared = prepare(opts.capture_bytes)?;
    let clock = Clock::now();
    let started = Instant::now();

    // The buffers are open before any program attaches, so the first
    // events have somewhere to go.
    let cpus = aya::util::online_cpus().map_err(|(what, err)| anyhow::anyhow!("{what}: {err}"))?;
    let possible = aya::util::nr_cpus().map_err(|(what, err)| anyhow::anyhow!("{what}: {err}"))?;
    let ledger = Arc::new(LossLedger::new(cpus.len()));
    let events_map = match prepared.ebpf.take_map(names::EVENTS) {
        Some(aya::maps::Map::PerfEventArray(data)) => data,
        _ => bail!("the eBPF object has no EVENTS perf event array"),
    };
    let (queue, events) = mpsc::channel(opts.queue_capacity);
    // Reads the queue's depth for the health metrics without keeping it open.
    let queue_probe = queue.downgrade();
    let events_waiting = move || queue_probe.upgrade().map_or(0, |q| (q.max_capacity() - q.capacity()) as u64);
    let recorder = match &opts.record {
        Some(path) => Some(Arc::new(
            Recorder::create(path, &clock, opts.record_limit)
                .with_context(|| format!("cannot create the recording {}", path.display()))?,
        )),
        None => None,
    };
    let readers =
        transport::start(events_map, &cpus, opts.pages_per_cpu, Arc::clone(&ledger), queue, recorder.clone())?;

    // Kept open for the run: the kernel counts program run time only while
    // some process holds this fd (or kernel.bpf_stats_enabled is 1).
    let stats_fd = enable_stats(Stats::RunTime).ok();
    let bpf_stats_enabled = stats_fd.is_some()
        || std::fs::read_to_string("/proc/sys/kernel/bpf_stats_enabled").is_ok_and(|s| s.trim() == "1");

    let choices = attach_sensors(&mut prepared, opts.hook_form, Search::FirstThatWorks);
    let Prepared { mut ebpf, features } = prepared;
    report_choices(&choices, &features, opts.output)?;
    if choices.iter().all(|c| c.chosen.is_none()) {
        bail!("no sensor could start on kernel {}; `kscope probe` shows why", features.release);
    }
    let drops_running = choices.iter().any(|c| c.sensor == sensors::drops::SENSOR.name && c.chosen.is_some());
    let mut drop_watch = if drops_running {
        let map =
            ebpf.take_map(names::DROPS).with_context(|| format!("the eBPF object has no {} map", names::DROPS))?;
        Some(DropWatch::new(map, possible).context("cannot read the packet drop counts")?)
    } else {
        None
    };
    let l7 = Arc::new(Mutex::new(ConnCounts::default()));
    let table = ConnTable::new(opts.connections, IDLE_CONNECTION_NS, opts.privacy);
    let sink = Sink { format: opts.output, clock, data_events: opts.data_events };
    let mut exporters = Exporters::start(&opts.export, clock, prometheus);
    let writer = tokio::spawn(write_events(
        events,
        sink,
        table,
        Arc::clone(&ledger),
        Arc::clone(&l7),
        opts.queue_capacity,
        exporters.stage.take(),
    ));

    // Read afresh each time: `ebpf` is borrowed mutably in between, to unload.
    let meters = |ebpf: &Ebpf| -> StatsRecord {
        collect_stats(&Meters {
            ebpf,
            choices: &choices,
            ledger: &ledger,
            l7: &l7,
            bpf_stats_enabled,
            started,
            possible_cpus: possible,
        })
    };
    let mut interval = tokio::time::interval(opts.stats_interval);
    interval.tick().await;
    let mut health_tick = tokio::time::interval(HEALTH_INTERVAL);
    let mut drop_tick = tokio::time::interval(DROP_INTERVAL);
    // Both listeners live for the whole loop: a `ctrl_c()` future made anew
    // in each pass is not listening while a branch body runs, and a SIGINT
    // that arrives then is lost (the QEMU test caught kscope ignoring it).
    let mut sigint = tokio::signal::unix::signal(SignalKind::interrupt())?;
    let mut sigterm = tokio::signal::unix::signal(SignalKind::terminate())?;
    let deadline = async {
        match opts.duration {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
            () = &mut deadline => break,
            _ = interval.tick() => {
                emit_stats(&Record::Stats(meters(&ebpf)), opts.output)?;
            }
            _ = health_tick.tick(), if exporters.metrics_wanted() => {
                exporters.record_health(&meters(&ebpf), &choices, events_waiting());
            }
            _ = drop_tick.tick(), if drop_watch.is_some() => {
                if let Some(watch) = &mut drop_watch {
                    report_drops(watch.poll(output::unix_now_ns()), &clock, opts.output, &exporters);
                }
            }
        }
    }

    // Detach first so no new events arrive, let the readers drain what is
    // already in the rings, then account for everything.
    let summary_programs = meters(&ebpf);
    for choice in &choices {
        for name in &choice.programs {
            sensors::unload(&mut ebpf, name);
        }
    }
    readers.stop().await;
    let _ = writer.await;
    let mut summary = meters(&ebpf);
    // Program costs as they were while attached.
    summary.programs = summary_programs.programs;
    if let Some(watch) = &mut drop_watch {
        report_drops(watch.poll(output::unix_now_ns()), &clock, opts.output, &exporters);
        let count = |slot| kernel_counter(&ebpf, slot, possible);
        summary.drops = Some(watch.summary(count(counter_slot::DROPS_COUNTED), count(counter_slot::DROPS_UNTRACKED)));
    }
    if exporters.metrics_wanted() {
        exporters.record_health(&summary, &choices, 0);
    }
    summary.export = exporters.finish().await;
    emit_stats(&Record::Summary(summary), opts.output)?;
    if let (Some(recorder), Some(path)) = (recorder, &opts.record) {
        recorder.finish().with_context(|| format!("cannot write the recording {}", path.display()))?;
        eprintln!(
            "kscope: recorded {} records to {} ({} beyond --record-limit not recorded)",
            recorder.recorded.load(Relaxed),
            path.display(),
            recorder.skipped.load(Relaxed)
        );
    }
    drop(stats_fd);
    Ok(())
}

fn report_choices(choices: &[SensorChoice], features: &KernelFeatures, format: OutputFormat) -> anyhow::Result<()> {
    match format {
        OutputFormat::Console => {
            let mut err = std::io::stderr().lock();
            writeln!(err, "kscope on kernel {}:", features.release)?;
            for line in output::choice_lines(choices) {
                writeln!(err, "  {line}")?;
            }
        }
        OutputFormat::Json => {
            let record = Record::Sensors(SensorsRecord {
                time_unix_nano: output::unix_now_ns(),
                kernel: features.release.as_str().into(),
                sensors: choices.to_vec(),
            });
            let mut out = std::io::stdout().lock();
            output::write_line(&mut out, &serde_json::to_string(&record)?)?;
            out.flush()?;
        }
    }
    for c in choices {
        if let Some(d) = &c.degraded {
            tracing::warn!(sensor = &*c.sensor, "{d}");
        }
    }
    Ok(())
}

/// Prints a `stats` or `summary` record (other records are not stats:
/// nothing is printed for them).
fn emit_stats(record: &Record<'_>, format: OutputFormat) -> anyhow::Result<()> {
    let (Record::Stats(stats) | Record::Summary(stats)) = record else { return Ok(()) };
    match format {
        OutputFormat::Json => {
            let mut out = std::io::stdout().lock();
            output::write_line(&mut out, &serde_json::to_string(record)?)?;
            out.flush()?;
        }
        OutputFormat::Console => {
            let mut err = std::io::stderr().lock();
            for line in output::stats_lines(record.kind(), stats) {
                writeln!(err, "{line}")?;
            }
        }
    }
    Ok(())
}

/// Everything a stats record is read from.
struct Meters<'a> {
    ebpf: &'a Ebpf,
    choices: &'a [SensorChoice],
    ledger: &'a LossLedger,
    l7: &'a Mutex<ConnCounts>,
    bpf_stats_enabled: bool,
    started: Instant,
    possible_cpus: usize,
}

fn collect_stats(meters: &Meters<'_>) -> StatsRecord {
    let Meters { ebpf, choices, ledger, l7, bpf_stats_enabled, started, possible_cpus } = *meters;
    let mut programs = Vec::new();
    for choice in choices {
        for name in &choice.programs {
            let info = ebpf.program(name).and_then(|p| p.info().ok());
            if let Some(info) = info {
                programs.push(ProgramStats::new(
                    choice.sensor.clone(),
                    name.clone(),
                    info.run_count(),
                    info.run_time().as_nanos() as u64,
                ));
            }
        }
    }
    let count = |slot: u32| kernel_counter(ebpf, slot, possible_cpus);
    let sensors = SENSORS
        .iter()
        .map(|s| SensorCounts {
            sensor: s.name.into(),
            emitted: count(s.counter_slot),
            emit_failed: count(s.counter_slot + 1),
            table_full: s.table_full_slot.map_or(0, count),
            unreported: s.unreported_slot.map_or(0, count),
        })
        .collect();
    let snapshot = ledger.snapshot();
    StatsRecord {
        time_unix_nano: output::unix_now_ns(),
        uptime_ns: started.elapsed().as_nanos() as u64,
        bpf_stats_enabled,
        programs,
        sensors,
        lost_events: snapshot.lost(),
        ledger: snapshot,
        l7: *l7.lock().unwrap_or_else(std::sync::PoisonError::into_inner),
        export: None,
        drops: None,
    }
}

/// One of the kernel programs' `EVENTS_EMITTED` counters, summed over CPUs.
fn kernel_counter(ebpf: &Ebpf, slot: u32, possible_cpus: usize) -> u64 {
    ebpf.map(names::EVENTS_EMITTED)
        .and_then(|map| PerCpuArray::<_, u64>::try_from(map).ok())
        .and_then(|c| c.get(&slot, 0).ok())
        .map(|values| values.iter().take(possible_cpus).sum())
        .unwrap_or(0)
}

/// How often the kernel's packet drop counts are read.
const DROP_INTERVAL: Duration = Duration::from_secs(1);

/// Counts the drop records into the metrics and prints them (on stdout,
/// with the events).
fn report_drops(records: Vec<DropRecord>, clock: &Clock, format: OutputFormat, exporters: &Exporters) {
    if records.is_empty() {
        return;
    }
    exporters.record_drops(&records, clock.unix_nanos(output::monotonic_now_ns()));
    let mut out = std::io::stdout().lock();
    for record in records {
        let line = match format {
            OutputFormat::Json => output::drop_json(record),
            OutputFormat::Console => output::drop_line(&record),
        };
        // A closed stdout is not an error for the run: the counts go on.
        let _ = output::write_line(&mut out, &line);
    }
    let _ = out.flush();
}

/// How long an event waits for earlier ones from other CPUs: longer than
/// the rings' flush interval, so a slow ring's events still sort in.
const REORDER_WINDOW_NS: u64 = transport::FLUSH_INTERVAL.as_nanos() as u64 + 50_000_000;

/// Connections with no data for this long are closed and forgotten (UDP
/// sockets have no close kscope sees; TCP closes may be lost).
const IDLE_CONNECTION_NS: u64 = 120_000_000_000;

async fn write_events(
    mut events: mpsc::Receiver<Event>,
    sink: Sink,
    mut table: ConnTable,
    ledger: Arc<LossLedger>,
    l7: Arc<Mutex<ConnCounts>>,
    capacity: usize,
    mut stage: Option<TelemetryStage>,
) {
    let mut reorder = output::Reorder::new(capacity);
    let mut stacks: Option<KernelStacks> = None;
    let mut spans = Vec::new();
    let mut batch = Vec::with_capacity(256);
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    let mut open = true;
    let mut exchanges = Vec::new();
    while open {
        tokio::select! {
            n = events.recv_many(&mut batch, 256) => {
                open = n > 0;
                for event in batch.drain(..) {
                    reorder.push(event);
                }
            }
            _ = tick.tick() => {}
        }
        let now = output::monotonic_now_ns();
        let until = if open { now.saturating_sub(REORDER_WINDOW_NS) } else { u64::MAX };
        let mut ready = reorder.ready(until);
        if ready.iter().any(|e| matches!(e, Event::Retransmit(_))) {
            // Parsed on first need: kallsyms costs tens of milliseconds.
            stacks.get_or_insert_with(KernelStacks::default).symbolize_events(&mut ready);
        }
        for event in &ready {
            let before = exchanges.len();
            table.on_event(event, &mut exchanges);
            if let Some(stage) = &mut stage {
                // In event order: an exit after an exchange must not take
                // the process's resource before the exchange is described.
                stage.exchanges(&exchanges[before..]);
                stage.telemetry.on_event(event);
            }
        }
        let before = exchanges.len();
        if open {
            table.expire(until, &mut exchanges);
        } else {
            table.close_all(now, &mut exchanges);
        }
        if let Some(stage) = &mut stage {
            stage.exchanges(&exchanges[before..]);
            stage.release(open.then_some(until), &mut spans);
        }
        write_lines(&ready, &exchanges, &spans, &sink, &ledger);
        exchanges.clear();
        spans.clear();
        *l7.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = table.counts();
    }
}

fn write_lines(events: &[Event], exchanges: &[ExchangeRecord], spans: &[SpanItem], sink: &Sink, ledger: &LossLedger) {
    let mut text: Vec<u8> = Vec::new();
    let (mut lines, mut analyzed) = (0u64, 0u64);
    for event in events {
        let printed = sink.event(event, &mut text);
        // A data event is accounted for by the connection table, printed or not.
        if matches!(event, Event::Data(_)) {
            analyzed += 1;
        } else if printed {
            lines += 1;
        }
    }
    for record in exchanges {
        sink.exchange(record, &mut text);
    }
    for span in spans {
        sink.span(span, &mut text);
    }
    ledger.analyzed.fetch_add(analyzed, Relaxed);
    if text.is_empty() {
        return;
    }
    let mut out = std::io::stdout().lock();
    if out.write_all(&text).and_then(|()| out.flush()).is_err() {
        // stdout closed (e.g. piped into `head`): keep draining so the
        // counts stay honest, but stop writing.
        ledger.queue_dropped.fetch_add(lines, Relaxed);
        return;
    }
    ledger.written.fetch_add(lines, Relaxed);
}

/// How often kscope's own health metrics are refreshed from the kernel's
/// counters (only when metrics are exported or scraped).
const HEALTH_INTERVAL: Duration = Duration::from_secs(1);

/// The telemetry stage as the writer task runs it: spans made from the
/// exchanges go to the OTLP queue.
struct TelemetryStage {
    telemetry: Telemetry,
    spans: Option<SpanSender>,
    summary: Arc<Mutex<ExportSummary>>,
    /// Keep released spans for the writer to print (`--spans`).
    print: bool,
}

impl TelemetryStage {
    /// `until`: events up to this monotonic time are in; `None` at the end.
    fn exchanges(&mut self, exchanges: &[ExchangeRecord]) {
        for record in exchanges {
            self.telemetry.on_exchange(record);
        }
    }

    fn release(&mut self, until: Option<u64>, spans: &mut Vec<SpanItem>) {
        match until {
            Some(until) => self.telemetry.release(until, spans),
            None => self.telemetry.finish(spans),
        }
        if let Some(sender) = &self.spans {
            if self.print {
                for span in spans.iter() {
                    sender.offer(span.clone());
                }
            } else {
                for span in spans.drain(..) {
                    sender.offer(span);
                }
            }
        }
        if !self.print {
            spans.clear();
        }
        let mut summary = self.summary.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        summary.spans = self.telemetry.link_counts();
        summary.spans_waiting = self.telemetry.waiting_spans() as u64;
        summary.routes_overflowed = self.telemetry.routes_overflowed();
        summary.own_exchanges_skipped = self.telemetry.own_exchanges_skipped;
    }
}

/// The telemetry stage's shared parts and the exporters' tasks.
struct Exporters {
    /// Moved into the writer task.
    stage: Option<TelemetryStage>,
    store: Option<Arc<Mutex<MetricStore>>>,
    agent: Option<Arc<crate::export::Resource>>,
    counts: Arc<ExportCounts>,
    summary: Arc<Mutex<ExportSummary>>,
    span_task: Option<tokio::task::JoinHandle<()>>,
    metrics_task: Option<tokio::task::JoinHandle<()>>,
    prometheus_task: Option<tokio::task::JoinHandle<()>>,
    stop: tokio::sync::watch::Sender<bool>,
    flush_timeout: Duration,
    clock: Clock,
}

impl Exporters {
    fn start(opts: &ExportOptions, clock: Clock, prometheus: Option<PrometheusServer>) -> Self {
        let counts = Arc::new(ExportCounts::default());
        let summary = Arc::new(Mutex::new(ExportSummary::default()));
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        let traces = opts.otlp.as_ref().and_then(|o| o.traces.clone());
        let metrics = opts.otlp.as_ref().and_then(|o| o.metrics.clone());
        let mut this = Self {
            stage: None,
            store: None,
            agent: None,
            counts: Arc::clone(&counts),
            summary: Arc::clone(&summary),
            span_task: None,
            metrics_task: None,
            prometheus_task: None,
            stop,
            flush_timeout: Duration::from_secs(1),
            clock,
        };
        if !opts.traces() && metrics.is_none() && prometheus.is_none() {
            return this;
        }
        let mut telemetry_opts = opts.telemetry.clone();
        telemetry_opts.traces = opts.traces();
        telemetry_opts.metrics = metrics.is_some() || prometheus.is_some();
        let telemetry = Telemetry::new(telemetry_opts, clock, IdGenerator::random());
        let store = telemetry.metric_store();
        this.agent = Some(telemetry.agent_resource());
        let spans = traces.map(|config| {
            this.flush_timeout = this.flush_timeout.max(config.export.timeout + Duration::from_secs(1));
            let (sender, task) = SpanExporter::spawn(config, Arc::clone(&counts));
            this.span_task = Some(task);
            sender
        });
        let source: MetricsSource = {
            let store = Arc::clone(&store);
            Arc::new(move || {
                let now = output::unix_now_ns();
                store.lock().unwrap_or_else(std::sync::PoisonError::into_inner).snapshot(now)
            })
        };
        if let Some(config) = metrics {
            this.flush_timeout = this.flush_timeout.max(config.export.timeout + Duration::from_secs(1));
            this.metrics_task =
                Some(MetricsExporter::spawn(config, Arc::clone(&source), Arc::clone(&counts), stop_rx.clone()));
        }
        if let Some(server) = prometheus {
            tracing::info!("serving Prometheus metrics on http://{}/metrics", server.local_addr());
            let mut stop_rx = stop_rx;
            this.prometheus_task = Some(tokio::spawn(server.run(source, async move {
                let _ = stop_rx.wait_for(|stop| *stop).await;
            })));
        }
        this.store = Some(store);
        this.stage = Some(TelemetryStage { telemetry, spans, summary, print: opts.print_spans });
        this
    }

    fn metrics_wanted(&self) -> bool {
        self.store.is_some()
    }

    /// Drops are host-wide: they go on kscope's own resource.
    fn record_drops(&self, records: &[DropRecord], now: u64) {
        let (Some(store), Some(agent)) = (&self.store, &self.agent) else { return };
        let mut store = store.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        for record in records {
            store.add(
                agent,
                crate::telemetry::semconv::PACKET_DROPS,
                crate::telemetry::drop_attributes(record),
                record.count,
                now,
            );
        }
    }

    fn record_health(&self, stats: &StatsRecord, choices: &[SensorChoice], events_waiting: u64) {
        let (Some(store), Some(agent)) = (&self.store, &self.agent) else { return };
        let otlp = self.counts.snapshot();
        let waiting = self.summary.lock().unwrap_or_else(std::sync::PoisonError::into_inner).spans_waiting;
        let spans = [("exported", otlp.spans_exported), ("dropped", otlp.spans_dropped), ("failed", otlp.spans_failed)];
        let data_points = [("exported", otlp.metric_points_exported), ("failed", otlp.metric_points_failed)];
        let queues = [("events", events_waiting), ("export", otlp.queue_depth), ("linking", waiting)];
        let reading = HealthReading { stats, choices, spans: &spans, data_points: &data_points, queues: &queues };
        let mut store = store.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        health::record(&mut store, agent, &reading, self.clock.unix_nanos(output::monotonic_now_ns()));
    }

    /// Flushes: spans already queued are sent (the writer, done, has
    /// dropped its sender), metrics exported once more; then the totals.
    async fn finish(mut self) -> Option<ExportSummary> {
        self.store.as_ref()?;
        let _ = self.stop.send(true);
        for task in [self.span_task.take(), self.metrics_task.take(), self.prometheus_task.take()].into_iter().flatten()
        {
            if tokio::time::timeout(self.flush_timeout, task).await.is_err() {
                tracing::warn!(
                    "an exporter did not finish within {:?}; what it held is not counted as exported",
                    self.flush_timeout
                );
            }
        }
        let mut summary = *self.summary.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        summary.otlp = self.counts.snapshot();
        if let Some(store) = &self.store {
            let store = store.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            summary.metric_series = store.series() as u64;
            summary.metric_overflowed_points = store.overflowed_points;
        }
        Some(summary)
    }
}
