//! kscope: an eBPF observability agent. `kscope run` streams process and TCP
//! lifecycle events; `kscope probe` shows which hook form each sensor uses on
//! this kernel and why better ones were rejected.

use std::{io::Write, process::ExitCode, time::Duration};

use clap::{Parser, Subcommand};
use kscope::{output, output::OutputFormat, run, run::RunOptions, sensors, sensors::HookForm};

#[derive(Debug, Parser)]
#[command(name = "kscope", version, about = "eBPF observability agent")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
#[expect(clippy::large_enum_variant, reason = "parsed once at startup; boxing buys nothing")]
enum Command {
    /// Attach the sensors and print events until Ctrl-C.
    Run {
        /// How events are printed.
        #[arg(long, value_enum, default_value_t = OutputFormat::Console)]
        output: OutputFormat,
        /// Run every sensor on this hook form only (fails a sensor that cannot).
        #[arg(long, value_enum)]
        hook_form: Option<HookForm>,
        /// Seconds between stats records.
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
        stats_interval: u64,
        /// Stop after this many seconds (default: run until Ctrl-C).
        #[arg(long)]
        duration: Option<f64>,
        /// Pages of each per-CPU buffer (a power of two).
        #[arg(long, default_value_t = 64, value_parser = parse_pages)]
        buffer_pages: usize,
        /// Events the queue between buffers and output holds before dropping (counted).
        #[arg(long, default_value_t = 65536, value_parser = clap::value_parser!(u64).range(1..))]
        queue: u64,
        /// Bytes of each socket send and receive captured (what is cut off is counted).
        #[arg(long, default_value_t = kscope_common::DATA_CAPTURE_DEFAULT,
              value_parser = clap::value_parser!(u32).range(0..kscope_common::DATA_CAPTURE_MAX as i64))]
        capture_bytes: u32,
        /// Keep the query string of HTTP targets (off: it may carry secrets).
        #[arg(long)]
        keep_query: bool,
        /// Also print one record per socket send/receive (metadata only, never payload).
        #[arg(long)]
        data_events: bool,
        /// Connections the connection table tracks at most (more are counted, not parsed).
        #[arg(long, default_value_t = 16384, value_parser = clap::value_parser!(u64).range(1..))]
        connections: u64,
        /// Save every record read from the kernel, raw, to this file (payloads included: handle with care).
        #[arg(long)]
        record: Option<std::path::PathBuf>,
        /// Bytes the recording may grow to; records beyond are counted, not written.
        #[arg(long, default_value_t = 256 << 20)]
        record_limit: u64,
        #[command(flatten)]
        export: ExportArgs,
    },
    /// Replay a recording (`run --record`) through decode, the connection table and the parsers.
    Replay {
        recording: std::path::PathBuf,
        #[arg(long, value_enum, default_value_t = OutputFormat::Console)]
        output: OutputFormat,
        /// Keep only these processes' records (repeatable; with --comm, either matches).
        #[arg(long = "pid")]
        pids: Vec<u32>,
        /// Keep only records of threads with this comm (repeatable).
        #[arg(long = "comm")]
        comms: Vec<String>,
        /// Write the (filtered) recording here instead of replaying it.
        #[arg(long)]
        save: Option<std::path::PathBuf>,
        #[arg(long)]
        keep_query: bool,
        #[arg(long)]
        data_events: bool,
    },
    /// Resolve kernel, process or ELF addresses to symbols (with file:line and inlined frames when debug info is there).
    #[command(group(clap::ArgGroup::new("target").required(true).args(["kernel", "pid", "elf"])))]
    Symbolize {
        /// The addresses are the running kernel's.
        #[arg(long)]
        kernel: bool,
        /// The addresses are this process's.
        #[arg(long)]
        pid: Option<u32>,
        /// The addresses are this ELF file's virtual addresses.
        #[arg(long)]
        elf: Option<std::path::PathBuf>,
        #[arg(long, value_enum, default_value_t = OutputFormat::Console)]
        output: OutputFormat,
        /// Addresses, 0x-prefixed hex or decimal.
        #[arg(required = true, value_parser = kscope::symbolize::parse_address)]
        addresses: Vec<u64>,
    },
    /// Show, per sensor, the hook form this kernel allows and why better forms were rejected.
    Probe {
        #[arg(long, value_enum, default_value_t = OutputFormat::Console)]
        output: OutputFormat,
    },
    /// Sample CPU stacks (kernel and user) and write folded stacks and a flame graph.
    Profile(kscope::profile::ProfileArgs),
}

/// OTLP and Prometheus export. Each OTLP flag wins over its
/// `OTEL_EXPORTER_OTLP_*` variable; OTLP is on when an endpoint is set.
#[derive(Debug, clap::Args)]
struct ExportArgs {
    /// OTLP collector endpoint, like OTEL_EXPORTER_OTLP_ENDPOINT (HTTP: /v1/traces and /v1/metrics appended).
    #[arg(long)]
    otlp_endpoint: Option<String>,
    /// `grpc` or `http/protobuf` (default), like OTEL_EXPORTER_OTLP_PROTOCOL.
    #[arg(long)]
    otlp_protocol: Option<String>,
    /// A header sent with every export, `name=value` (repeatable), like OTEL_EXPORTER_OTLP_HEADERS.
    #[arg(long = "otlp-header")]
    otlp_headers: Vec<String>,
    /// Seconds one export may take, like OTEL_EXPORTER_OTLP_TIMEOUT (which is in ms).
    #[arg(long)]
    otlp_timeout: Option<f64>,
    /// Traces endpoint, used as is, like OTEL_EXPORTER_OTLP_TRACES_ENDPOINT.
    #[arg(long)]
    otlp_traces_endpoint: Option<String>,
    /// Metrics endpoint, used as is, like OTEL_EXPORTER_OTLP_METRICS_ENDPOINT.
    #[arg(long)]
    otlp_metrics_endpoint: Option<String>,
    /// Seconds between metric exports, like OTEL_METRIC_EXPORT_INTERVAL (which is in ms).
    #[arg(long)]
    otlp_metric_export_interval: Option<f64>,
    /// PEM file of the CA certificates to trust for https endpoints, like OTEL_EXPORTER_OTLP_CERTIFICATE.
    #[arg(long)]
    otlp_certificate: Option<std::path::PathBuf>,
    /// PEM private key for mutual TLS, like OTEL_EXPORTER_OTLP_CLIENT_KEY.
    #[arg(long)]
    otlp_client_key: Option<std::path::PathBuf>,
    /// PEM certificate (chain) for mutual TLS, like OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE.
    #[arg(long)]
    otlp_client_certificate: Option<std::path::PathBuf>,
    /// Spans the export queue holds (more are dropped and counted), like OTEL_BSP_MAX_QUEUE_SIZE.
    #[arg(long)]
    otlp_queue_size: Option<usize>,
    /// Also print each finished span, with its trace, span and parent ids (JSON: `"type": "span"` records).
    #[arg(long)]
    spans: bool,
    /// Serve the metrics for Prometheus at http://ADDR/metrics (off unless given), e.g. 0.0.0.0:9464.
    #[arg(long)]
    prometheus_listen: Option<std::net::SocketAddr>,
    /// HTTP routes each service reports at most; the rest share `_OTHER`.
    #[arg(long, default_value_t = 200)]
    route_cap: usize,
    /// Metric series kept at most; beyond, points go to an overflow series.
    #[arg(long, default_value_t = 20_000)]
    metric_series: usize,
}

impl ExportArgs {
    fn resolve(self) -> anyhow::Result<run::ExportOptions> {
        use kscope::export::otlp::{OtlpConfig, OtlpFlags, resource_attributes_from_env};
        let seconds = |flag: &str, v: Option<f64>| -> anyhow::Result<Option<Duration>> {
            v.map(|v| Duration::try_from_secs_f64(v).map_err(|e| anyhow::anyhow!("{flag}: {e}"))).transpose()
        };
        let flags = OtlpFlags {
            endpoint: self.otlp_endpoint,
            protocol: self.otlp_protocol,
            headers: self.otlp_headers,
            timeout: seconds("--otlp-timeout", self.otlp_timeout)?,
            traces_endpoint: self.otlp_traces_endpoint,
            metrics_endpoint: self.otlp_metrics_endpoint,
            metric_export_interval: seconds("--otlp-metric-export-interval", self.otlp_metric_export_interval)?,
            queue_size: self.otlp_queue_size,
            certificate: self.otlp_certificate,
            client_key: self.otlp_client_key,
            client_certificate: self.otlp_client_certificate,
        };
        let otlp = OtlpConfig::from_process_env(&flags)?;
        let telemetry = kscope::telemetry::TelemetryOptions {
            resource_attributes: resource_attributes_from_env(|name| std::env::var(name).ok())?,
            route_cap: self.route_cap,
            metric_limits: kscope::telemetry::metrics::MetricLimits {
                max_series: self.metric_series,
                // An exited process's series stay for two exports (and two
                // minutes of scrapes), so its last totals are read.
                exited_retention_ns: otlp
                    .as_ref()
                    .and_then(|o| o.metrics.as_ref())
                    .map_or(0, |m| 2 * m.interval.as_nanos() as u64)
                    .max(120_000_000_000),
            },
            ..Default::default()
        };
        Ok(run::ExportOptions { otlp, prometheus_listen: self.prometheus_listen, print_spans: self.spans, telemetry })
    }
}

fn parse_pages(text: &str) -> Result<usize, String> {
    let pages: usize = text.parse().map_err(|_| format!("{text:?} is not a number"))?;
    if pages.is_power_of_two() && pages <= 4096 {
        Ok(pages)
    } else {
        Err(format!("{pages} is not a power of two between 1 and 4096"))
    }
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("KSCOPE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run {
            output,
            hook_form,
            stats_interval,
            duration,
            buffer_pages,
            queue,
            capture_bytes,
            keep_query,
            data_events,
            connections,
            record,
            record_limit,
            export,
        } => {
            let export = match export.resolve() {
                Ok(e) => e,
                Err(err) => {
                    eprintln!("error: {err:#}");
                    return ExitCode::from(2);
                }
            };
            let duration = match duration.map(Duration::try_from_secs_f64).transpose() {
                Ok(d) => d,
                Err(err) => {
                    eprintln!("error: --duration: {err}");
                    return ExitCode::from(2);
                }
            };
            let opts = RunOptions {
                output,
                hook_form,
                stats_interval: Duration::from_secs(stats_interval),
                duration,
                pages_per_cpu: buffer_pages,
                queue_capacity: usize::try_from(queue).unwrap_or(usize::MAX),
                capture_bytes,
                privacy: kscope_protocols::Privacy { keep_query },
                data_events,
                connections: usize::try_from(connections).unwrap_or(usize::MAX),
                record,
                record_limit,
                export,
            };
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .map_err(anyhow::Error::from)
                .and_then(|rt| rt.block_on(run::run(opts)))
        }
        Command::Probe { output } => probe(output),
        Command::Profile(args) => kscope::profile::run(&args),
        Command::Symbolize { kernel: _, pid, elf, output, addresses } => {
            let target = match (pid, elf) {
                (Some(pid), _) => kscope::symbolize::Target::Process(pid),
                (None, Some(path)) => kscope::symbolize::Target::Elf(path),
                (None, None) => kscope::symbolize::Target::Kernel,
            };
            kscope::symbolize::symbolize(&target, &addresses, output)
        }
        Command::Replay { recording, output, pids, comms, save, keep_query, data_events } => {
            replay(&recording, output, (&pids, &comms), save.as_deref(), keep_query, data_events)
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // One line: the whole chain, no backtrace.
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn replay(
    path: &std::path::Path,
    format: OutputFormat,
    (pids, comms): (&[u32], &[String]),
    save: Option<&std::path::Path>,
    keep_query: bool,
    data_events: bool,
) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut recording = kscope::recording::Recording::parse(&bytes).with_context(|| format!("{}", path.display()))?;
    if !pids.is_empty() || !comms.is_empty() {
        recording.retain(pids, comms);
    }
    if let Some(save) = save {
        recording.write(save).with_context(|| format!("cannot write {}", save.display()))?;
        eprintln!("kscope: saved {} records to {}", recording.records.len(), save.display());
        return Ok(());
    }
    // Replays print the same ids each time.
    output::fix_sock_id_key(0);
    let sink = output::Sink { format, clock: recording.clock, data_events };
    let mut table = kscope::conntrack::ConnTable::new(usize::MAX, u64::MAX, kscope_protocols::Privacy { keep_query });
    let mut text = Vec::new();
    let counts = kscope::recording::replay(&recording.records, &sink, &mut table, &mut text);
    std::io::stdout().lock().write_all(&text)?;
    eprintln!(
        "kscope replay: {} records, {} undecodable, {} lines, {} exchanges",
        counts.records, counts.decode_errors, counts.lines, counts.exchanges
    );
    Ok(())
}

/// Loads and attaches every form of every sensor, as `run` would (so
/// fentry's load-time refusal is seen), reports which work, and detaches
/// all of them on exit.
fn probe(format: OutputFormat) -> anyhow::Result<()> {
    let mut prepared = run::prepare(kscope_common::DATA_CAPTURE_DEFAULT)?;
    let choices = run::attach_sensors(&mut prepared, None, sensors::Search::EveryForm);
    let mut out = std::io::stdout().lock();
    match format {
        OutputFormat::Console => {
            writeln!(out, "kernel {}", prepared.features.release)?;
            for line in
                output::choice_lines(&choices).into_iter().chain(output::function_lines(&prepared.features.functions))
            {
                writeln!(out, "{line}")?;
            }
        }
        OutputFormat::Json => {
            let record = kscope_schema::ProbeRecord {
                kernel: prepared.features.release.clone(),
                sensors: choices,
                functions: prepared.features.functions.clone(),
            };
            writeln!(out, "{}", serde_json::to_string(&record)?)?;
        }
    }
    Ok(())
}
