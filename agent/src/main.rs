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
    /// Show, per sensor, the hook form this kernel allows and why better forms were rejected.
    Probe {
        #[arg(long, value_enum, default_value_t = OutputFormat::Console)]
        output: OutputFormat,
    },
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
        } => {
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
            };
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .map_err(anyhow::Error::from)
                .and_then(|rt| rt.block_on(run::run(opts)))
        }
        Command::Probe { output } => probe(output),
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
    output::fix_sock_token_key(0);
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
            for line in output::choice_lines(&choices) {
                writeln!(out, "{line}")?;
            }
        }
        OutputFormat::Json => {
            let record = serde_json::json!({
                "type": "probe",
                "kernel": prepared.features.release,
                "sensors": choices,
            });
            writeln!(out, "{record}")?;
        }
    }
    Ok(())
}
