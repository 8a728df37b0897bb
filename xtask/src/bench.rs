//! `cargo xtask bench`: what kscope costs the machine it watches, in one run.
//!
//! 1. Throughput of two fixed workloads (short TCP connections to nginx
//!    driven by wrk, and `/bin/true` spawns) without and with `kscope run`,
//!    alternated several times; the medians and their ratio.
//! 2. kscope's own CPU time per event it read, from /proc/<pid>/stat.
//! 3. A load ramp: the highest event rate kscope read with nothing lost, and
//!    the first rate at which it lost events, if any.
//! 4. The cost of one program run per hook form: here (tracepoints, the only
//!    form this kernel allows) from the summary's BPF run-time statistics, and
//!    for kprobe, fentry and tracepoint in Debian's 6.1 and 6.12 kernels under
//!    QEMU (unless `--no-vm`).
//!
//! The report is printed as text and written to `target/bench/report.json`.
//!
//! This module uses `crate::{workspace_root, build, build_static, is_root}`
//! from main.rs, so the binaries are built exactly as `cargo xtask build` and
//! `cargo xtask test` build them.

use std::{
    collections::BTreeMap,
    fs::{self, File},
    io::{BufRead as _, BufReader, Read, Seek, SeekFrom},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicU64, Ordering},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, anyhow, bail, ensure};
use kscope_harness::{
    nginx::Nginx,
    send_signal,
    vm::{GuestFile, guest_kernels, run_in_guest},
};
use serde_json::{Value, json};

/// Options of `cargo xtask bench`.
#[derive(Debug, clap::Args)]
pub struct BenchOptions {
    /// seconds per measured phase
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// skip the QEMU part
    #[arg(long)]
    pub no_vm: bool,
}

/// Baseline/with-kscope pairs per workload. Three gives a real median, and
/// the order inside a pair flips each time so slow drift (thermal, other
/// tenants) does not always count against the same side.
const REPS: usize = 3;

/// After kscope reports its sensors it still opens its buffers and starts its
/// tasks; its CPU is sampled after this so start-up cost is not charged to
/// the events of the phase (it is reported separately).
const SETTLE: Duration = Duration::from_millis(300);

/// Loading the object and attaching takes well under a second here; this
/// only bounds a kscope that hangs.
const KSCOPE_START_TIMEOUT: Duration = Duration::from_secs(60);
const KSCOPE_STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// Bounds the wait for kscope to work through what it queued during a load.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Requests, and spawns, per pass of a hook form in each guest. TCG makes
/// each one take milliseconds; two passes of 100 keep a boot around a minute
/// while giving averages over hundreds of hits per program.
const VM_ITERATIONS: u32 = 100;
/// `--duration` of kscope in the guest: only a bound, the script stops it
/// with SIGINT once its workload is done.
const VM_KSCOPE_DURATION_S: u32 = 300;
const VM_TIMEOUT: Duration = Duration::from_secs(900);
const VM_FORMS: [&str; 3] = ["kprobe", "fentry", "tracepoint"];

/// The forms in the order the guest runs them: forward then backward, so a
/// change in the host's load during the boot (TCG runs on the host's CPUs)
/// weighs on every form alike instead of on whichever ran last.
fn vm_pass_order() -> Vec<&'static str> {
    VM_FORMS.iter().chain(VM_FORMS.iter().rev()).copied().collect()
}

/// `cargo xtask bench`.
pub fn bench(opts: &BenchOptions) -> anyhow::Result<()> {
    ensure!(opts.seconds >= 1, "--seconds must be at least 1");
    ensure!(
        crate::is_root(),
        "bench needs root: kscope loads eBPF programs (run it as root, e.g. `sudo cargo xtask bench`)"
    );
    for (tool, package) in [("nginx", "nginx-light"), ("wrk", "wrk"), ("getconf", "libc-bin")] {
        which(tool)
            .with_context(|| format!("bench needs {tool} (apt-get install -y {package}, or `cargo xtask setup`)"))?;
    }
    let root = crate::workspace_root();
    // Always through cargo: measuring a stale binary would report old code.
    let kscope = crate::build()?;
    let phase = Duration::from_secs(opts.seconds);
    let clk_tck = clock_ticks_per_second()?;
    let scratch = ScratchDir::create()?;

    let machine = json!({
        "kernel": read_trimmed("/proc/sys/kernel/osrelease")?,
        "cpus": thread::available_parallelism().map(usize::from).unwrap_or(1),
        "loadavg_at_start": read_trimmed("/proc/loadavg")?,
        "clk_tck": clk_tck,
        "kscope": kscope.display().to_string(),
        "kscope_built": binary_age(&kscope),
        "seconds_per_phase": opts.seconds,
        "reps": REPS,
    });
    println!(
        "bench: kscope {} ({}), {} s per phase, {REPS} pairs per workload",
        kscope.display(),
        binary_age(&kscope),
        opts.seconds
    );

    let host = {
        let nginx = Nginx::start(scratch.path(), "kscope bench\n")?;
        let ctx = HostContext { kscope: &kscope, dir: scratch.path(), port: nginx.port, clk_tck };
        // Warm nginx, the page cache and the socket tables so the first
        // measured phase is not the slow one.
        run_wrk(&ctx, 1, 8, Duration::from_secs(1)).context("warm-up wrk run")?;
        let workloads = measure_workloads(&ctx, phase)?;
        let ramp = measure_ramp(&ctx, phase)?;
        HostResults { workloads, ramp }
    };

    let vm = if opts.no_vm {
        println!("bench: QEMU part skipped (--no-vm)");
        None
    } else {
        let static_kscope = crate::build_static()?;
        Some(measure_vms(&root, &static_kscope)?)
    };

    let report = Report { machine, host, vm };
    println!("\n{}", report.text());
    let out_dir = root.join("target/bench");
    fs::create_dir_all(&out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    let out = out_dir.join("report.json");
    let body = serde_json::to_string_pretty(&report.json()).context("serializing the report")?;
    fs::write(&out, body + "\n").with_context(|| format!("writing {}", out.display()))?;
    println!("bench: report written to {}", out.display());
    Ok(())
}

// ------------------------------------------------------------------ workloads

/// What the host phases share.
struct HostContext<'a> {
    kscope: &'a Path,
    dir: &'a Path,
    port: u16,
    clk_tck: u64,
}

/// A load to drive for one phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Load {
    /// wrk with `Connection: close`: every request is a new TCP connection.
    Wrk { threads: u32, connections: u32 },
    /// Threads each spawning `/bin/true` and waiting for it, back to back.
    Spawn { workers: u32 },
    /// Both at once, for the highest event rates.
    Mixed { connections: u32, workers: u32 },
    /// wrk with keep-alive (its default): many HTTP requests per connection,
    /// so the load is the socket_data sensor and kscope's L7 parsers.
    KeepAlive { threads: u32, connections: u32 },
}

impl Load {
    fn label(self) -> String {
        match self {
            Load::Wrk { threads, connections } => format!("wrk -t{threads} -c{connections}"),
            Load::Spawn { workers } => format!("spawn x{workers}"),
            Load::Mixed { connections, workers } => format!("wrk -t2 -c{connections} + spawn x{workers}"),
            Load::KeepAlive { threads, connections } => format!("wrk -t{threads} -c{connections} keep-alive"),
        }
    }
}

/// What a load achieved.
#[derive(Debug, Clone, Default)]
struct LoadResult {
    wall: Duration,
    /// wrk's Requests/sec with `Connection: close` (each one a connection).
    connections_per_s: Option<f64>,
    /// wrk's Requests/sec with keep-alive.
    requests_per_s: Option<f64>,
    /// Requests wrk completed ("N requests in"), whichever mode.
    wrk_requests: u64,
    /// wrk's socket errors and non-2xx answers: a workload that fails fast
    /// would otherwise look like a fast one.
    wrk_errors: u64,
    spawns_per_s: Option<f64>,
    spawn_failures: u64,
}

fn run_load(ctx: &HostContext<'_>, load: Load, duration: Duration) -> anyhow::Result<LoadResult> {
    let started = Instant::now();
    let mut result = LoadResult::default();
    match load {
        Load::Wrk { threads, connections } => {
            let wrk = run_wrk(ctx, threads, connections, duration)?;
            result.connections_per_s = Some(wrk.requests_per_s);
            result.wrk_requests = wrk.requests;
            result.wrk_errors = wrk.errors;
        }
        Load::KeepAlive { threads, connections } => {
            let wrk = WrkRun::start(ctx, threads, connections, duration, false)?.finish(duration)?;
            result.requests_per_s = Some(wrk.requests_per_s);
            result.wrk_requests = wrk.requests;
            result.wrk_errors = wrk.errors;
        }
        Load::Spawn { workers } => {
            let (rate, failures) = spawn_loop(workers, duration)?;
            result.spawns_per_s = Some(rate);
            result.spawn_failures = failures;
        }
        Load::Mixed { connections, workers } => {
            // wrk runs in the background for the same duration while this
            // thread drives the spawners.
            let wrk = WrkRun::start(ctx, 2, connections, duration, true)?;
            let (rate, failures) = spawn_loop(workers, duration)?;
            let wrk = wrk.finish(duration)?;
            result.connections_per_s = Some(wrk.requests_per_s);
            result.wrk_requests = wrk.requests;
            result.wrk_errors = wrk.errors;
            result.spawns_per_s = Some(rate);
            result.spawn_failures = failures;
        }
    }
    result.wall = started.elapsed();
    Ok(result)
}

#[derive(Debug, Clone, Copy)]
struct WrkResult {
    requests_per_s: f64,
    /// "N requests in": what completed, for costs per request.
    requests: u64,
    errors: u64,
}

/// wrk with `Connection: close`.
fn run_wrk(ctx: &HostContext<'_>, threads: u32, connections: u32, duration: Duration) -> anyhow::Result<WrkResult> {
    WrkRun::start(ctx, threads, connections, duration, true)?.finish(duration)
}

/// A wrk process writing its report to a file (so a full pipe cannot stall
/// it), killed if dropped before it finished.
struct WrkRun {
    child: ChildGuard,
    output: PathBuf,
}

impl WrkRun {
    /// `close`: one connection per request (`Connection: close`); otherwise
    /// wrk's default keep-alive.
    fn start(
        ctx: &HostContext<'_>,
        threads: u32,
        connections: u32,
        duration: Duration,
        close: bool,
    ) -> anyhow::Result<Self> {
        let mode = if close { "close" } else { "keepalive" };
        let output = ctx.dir.join(format!("wrk-{threads}-{connections}-{mode}.out"));
        let file = File::create(&output).with_context(|| format!("creating {}", output.display()))?;
        let mut cmd = Command::new("wrk");
        cmd.arg(format!("-t{threads}"))
            .arg(format!("-c{connections}"))
            .arg(format!("-d{}s", duration.as_secs().max(1)));
        if close {
            cmd.args(["-H", "Connection: close"]);
        }
        cmd.arg(format!("http://127.0.0.1:{}/", ctx.port))
            .stdin(Stdio::null())
            .stdout(Stdio::from(file))
            .stderr(Stdio::null());
        let child = cmd.spawn().context("starting wrk")?;
        Ok(Self { child: ChildGuard(child), output })
    }

    fn finish(mut self, duration: Duration) -> anyhow::Result<WrkResult> {
        // wrk stops itself after -d; the margin covers its start and report.
        let status = kscope_harness::wait_timeout(&mut self.child.0, duration + Duration::from_secs(30))?
            .ok_or_else(|| anyhow!("wrk did not finish within {duration:?} + 30 s; killed"))?;
        let text = fs::read_to_string(&self.output).with_context(|| format!("reading {}", self.output.display()))?;
        ensure!(status.success(), "wrk failed ({status}):\n{text}");
        parse_wrk(&text).with_context(|| format!("unexpected wrk output:\n{text}"))
    }
}

/// Reads `N requests in`, `Requests/sec:`, `Socket errors:` and
/// `Non-2xx or 3xx responses:`.
fn parse_wrk(text: &str) -> anyhow::Result<WrkResult> {
    let mut requests_per_s = None;
    let mut requests = None;
    let mut errors = 0;
    for line in text.lines().map(str::trim) {
        if let Some((count, _)) = line.split_once(" requests in ") {
            requests = Some(count.trim().parse::<u64>().context("the request count is not a number")?);
        } else if let Some(rate) = line.strip_prefix("Requests/sec:") {
            requests_per_s = Some(rate.trim().parse::<f64>().context("Requests/sec is not a number")?);
        } else if let Some(counts) = line.strip_prefix("Socket errors:") {
            // "connect 0, read 0, write 0, timeout 0"
            errors += counts.split(',').filter_map(|c| c.split_whitespace().nth(1)?.parse::<u64>().ok()).sum::<u64>();
        } else if let Some(count) = line.strip_prefix("Non-2xx or 3xx responses:") {
            errors += count.trim().parse::<u64>().context("non-2xx count is not a number")?;
        }
    }
    let requests_per_s = requests_per_s.ok_or_else(|| anyhow!("no Requests/sec line"))?;
    let requests = requests.ok_or_else(|| anyhow!("no \"requests in\" line"))?;
    Ok(WrkResult { requests_per_s, requests, errors })
}

/// Spawns `/bin/true` from `workers` threads until `duration` has passed;
/// returns spawns per second and how many spawns failed.
fn spawn_loop(workers: u32, duration: Duration) -> anyhow::Result<(f64, u64)> {
    let done = AtomicU64::new(0);
    let failed = AtomicU64::new(0);
    let started = Instant::now();
    let deadline = started + duration;
    thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| {
                while Instant::now() < deadline {
                    // Inherited stdio: opening /dev/null per spawn would add
                    // work that is not the spawn being measured.
                    match Command::new("/bin/true").status() {
                        Ok(status) if status.success() => done.fetch_add(1, Ordering::Relaxed),
                        _ => failed.fetch_add(1, Ordering::Relaxed),
                    };
                }
            });
        }
    });
    let elapsed = started.elapsed().as_secs_f64();
    let (done, failed) = (done.into_inner(), failed.into_inner());
    ensure!(done > 0, "no /bin/true spawn succeeded ({failed} failed)");
    Ok((done as f64 / elapsed, failed))
}

// ------------------------------------------------------------ 1 and 2: pairs

/// One measured phase of a workload.
#[derive(Debug, Clone)]
struct Phase {
    rep: usize,
    load: LoadResult,
    /// Present for the phases run under kscope.
    kscope: Option<KscopeMeasure>,
}

/// kscope's side of a phase.
#[derive(Debug, Clone)]
struct KscopeMeasure {
    /// utime + stime over the load (after start-up settled, until SIGINT).
    cpu_ns: u64,
    /// utime + stime from exec to the end of settling.
    startup_cpu_ns: u64,
    summary: Summary,
    /// Each sensor's hook form, from the sensors record.
    forms: BTreeMap<String, String>,
    /// How long after the load kscope's CPU kept growing (work it had
    /// queued), when the phase waited for that; its CPU is in `cpu_ns`.
    drain: Option<Duration>,
    /// The HTTP/1 exchange records of the nginx port, when counted.
    http: Option<HttpExchanges>,
}

impl KscopeMeasure {
    fn ns_per_event(&self) -> Option<f64> {
        (self.summary.events_read > 0).then(|| self.cpu_ns as f64 / self.summary.events_read as f64)
    }
}

/// Exchange records in kscope's output: all of them, and the HTTP/1 ones of
/// the bench's nginx port by side (wrk is the client, nginx the server).
#[derive(Debug, Clone, Copy, Default)]
struct HttpExchanges {
    all: u64,
    client: u64,
    server: u64,
    /// Of client + server, those marked partial (a side not seen whole).
    partial: u64,
}

/// One of the two fixed workloads and its phases.
#[derive(Debug, Clone)]
struct Workload {
    name: &'static str,
    unit: &'static str,
    load: Load,
    baseline: Vec<Phase>,
    with_kscope: Vec<Phase>,
}

impl Workload {
    fn rate(&self, phase: &Phase) -> f64 {
        match self.load {
            Load::Spawn { .. } => phase.load.spawns_per_s,
            Load::KeepAlive { .. } => phase.load.requests_per_s,
            _ => phase.load.connections_per_s,
        }
        .unwrap_or(0.0)
    }

    /// Operations (connections, spawns, requests) of a phase: wrk's own
    /// count for keep-alive requests, rate x wall otherwise.
    fn operations(&self, phase: &Phase) -> f64 {
        match self.load {
            Load::KeepAlive { .. } => phase.load.wrk_requests as f64,
            _ => self.rate(phase) * phase.load.wall.as_secs_f64(),
        }
    }

    /// kscope CPU ns per operation (request, for keep-alive), median over
    /// the with-kscope phases.
    fn cpu_ns_per_operation(&self) -> Option<f64> {
        let per: Vec<f64> = self
            .measures()
            .filter_map(|(p, k)| {
                let ops = self.operations(p);
                (ops > 0.0).then(|| k.cpu_ns as f64 / ops)
            })
            .collect();
        median(&per)
    }

    fn rates(&self, phases: &[Phase]) -> Vec<f64> {
        phases.iter().map(|p| self.rate(p)).collect()
    }

    fn ratio(&self) -> Option<f64> {
        let base = median(&self.rates(&self.baseline))?;
        let with = median(&self.rates(&self.with_kscope))?;
        (base > 0.0).then(|| with / base)
    }

    fn measures(&self) -> impl Iterator<Item = (&Phase, &KscopeMeasure)> {
        self.with_kscope.iter().filter_map(|p| p.kscope.as_ref().map(|k| (p, k)))
    }

    fn ns_per_event(&self) -> Option<f64> {
        median(&self.measures().filter_map(|(_, k)| k.ns_per_event()).collect::<Vec<_>>())
    }

    fn events_per_s(&self) -> Option<f64> {
        median(&self.measures().map(|(p, k)| events_per_s(k, p.load.wall)).collect::<Vec<_>>())
    }

    /// The sensor this workload exercises, and what one operation is.
    fn operation(&self) -> (&'static str, &'static str) {
        match self.load {
            Load::Spawn { .. } => ("process", "spawn"),
            Load::KeepAlive { .. } => ("socket_data", "request"),
            _ => ("tcp", "connection"),
        }
    }

    /// (max - min) / median of the baseline rates, in percent: how much the
    /// machine's other work moved the figures.
    fn baseline_spread_percent(&self) -> Option<f64> {
        let rates = self.rates(&self.baseline);
        let max = rates.iter().copied().reduce(f64::max)?;
        let min = rates.iter().copied().reduce(f64::min)?;
        let mid = median(&rates)?;
        (mid > 0.0).then(|| 100.0 * (max - min) / mid)
    }

    /// Total BPF time of `sensor`'s programs (every sensor's, for `None`)
    /// per operation of this workload (connection, spawn or request), over
    /// all its with-kscope phases.
    fn bpf_ns_per_operation(&self, sensor: Option<&str>) -> Option<f64> {
        let mut time = 0u64;
        let mut operations = 0.0;
        for (phase, k) in self.measures() {
            time += k
                .summary
                .programs
                .iter()
                .filter(|p| sensor.is_none_or(|s| p.sensor == s))
                .map(|p| p.run_time_ns)
                .sum::<u64>();
            operations += self.operations(phase);
        }
        (operations > 0.0).then(|| time as f64 / operations)
    }

    fn cpu_percent(&self) -> Option<f64> {
        median(&self.measures().map(|(p, k)| cpu_percent(k.cpu_ns, p.load.wall)).collect::<Vec<_>>())
    }

    /// For the keep-alive workload: what kscope made of the requests, summed
    /// over its with-kscope phases.
    fn l7_totals(&self) -> Option<L7Totals> {
        if !matches!(self.load, Load::KeepAlive { .. }) {
            return None;
        }
        let mut t = L7Totals::default();
        for (p, k) in self.measures() {
            let s = &k.summary;
            let l7 = s.l7.unwrap_or_default();
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
            t.queue_dropped += s.queue_dropped;
            t.emit_failed += s.emit_failed;
            t.events_read += s.events_read;
        }
        Some(t)
    }
}

/// [`Workload::l7_totals`].
#[derive(Debug, Clone, Copy, Default)]
struct L7Totals {
    phases: usize,
    /// Requests wrk completed.
    requests: u64,
    /// The summaries' `l7.exchanges`: every protocol, every process.
    exchanges: u64,
    /// Counted in the output: HTTP/1 on nginx's port, by side.
    http: HttpExchanges,
    segments: u64,
    parse_errors: u64,
    unpaired_dropped: u64,
    events_read: u64,
    lost_events: u64,
    queue_dropped: u64,
    emit_failed: u64,
}

impl L7Totals {
    fn per_request(&self, n: u64) -> Option<f64> {
        (self.requests > 0).then(|| n as f64 / self.requests as f64)
    }

    fn json(&self) -> Value {
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

fn events_per_s(k: &KscopeMeasure, wall: Duration) -> f64 {
    k.summary.events_read as f64 / wall.as_secs_f64().max(1e-9)
}

fn cpu_percent(cpu_ns: u64, wall: Duration) -> f64 {
    100.0 * cpu_ns as f64 / (wall.as_nanos() as f64).max(1.0)
}

fn measure_workloads(ctx: &HostContext<'_>, duration: Duration) -> anyhow::Result<Vec<Workload>> {
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

fn run_phase(
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
fn phase_line(phase: &Phase) -> String {
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
            k.summary.events_read,
            events_per_s(k, phase.load.wall),
            k.summary.lost_events,
            k.summary.queue_dropped,
            cpu_percent(k.cpu_ns, phase.load.wall)
        ));
        if let Some(l7) = &k.summary.l7 {
            parts.push(format!("{} exchanges, {} parse errors", l7.exchanges, l7.parse_errors));
        }
        if let Some(http) = &k.http {
            parts.push(format!("HTTP/1 exchanges on nginx's port: {} client + {} server", http.client, http.server));
        }
        if let Some(drain) = k.drain {
            parts.push(format!("busy {:.1} s after the load", drain.as_secs_f64()));
        }
    }
    parts.join(", ")
}

// ---------------------------------------------------------------- 3: ramp

#[derive(Debug, Clone)]
struct RampStep {
    family: &'static str,
    load: Load,
    result: LoadResult,
    kscope: KscopeMeasure,
}

impl RampStep {
    fn events_per_s(&self) -> f64 {
        events_per_s(&self.kscope, self.result.wall)
    }

    /// Every way the ledger can say an event did not make it.
    fn lossless(&self) -> bool {
        let s = &self.kscope.summary;
        s.lost_events == 0 && s.queue_dropped == 0 && s.emit_failed == 0 && s.decode_errors == 0
    }
}

/// Each family goes up in steps until kscope loses events (or the steps end);
/// on 2 CPUs the generators compete with kscope, which is part of the answer.
fn measure_ramp(ctx: &HostContext<'_>, duration: Duration) -> anyhow::Result<Vec<RampStep>> {
    let families: [(&str, Vec<Load>); 3] = [
        ("spawn", [1, 2, 4, 8, 16].into_iter().map(|workers| Load::Spawn { workers }).collect()),
        (
            "wrk",
            [(1, 8), (2, 32), (2, 128), (2, 256)]
                .into_iter()
                .map(|(threads, connections)| Load::Wrk { threads, connections })
                .collect(),
        ),
        (
            "mixed",
            [(32, 2), (64, 4), (128, 16)]
                .into_iter()
                .map(|(connections, workers)| Load::Mixed { connections, workers })
                .collect(),
        ),
    ];
    let mut steps = Vec::new();
    for (family, loads) in families {
        for load in loads {
            println!("bench: ramp {} ...", load.label());
            let phase =
                run_phase(ctx, load, duration, true, 0).with_context(|| format!("ramp step {}", load.label()))?;
            println!("bench:   {}", phase_line(&phase));
            let kscope = phase.kscope.ok_or_else(|| anyhow!("ramp phase ran without kscope"))?;
            let step = RampStep { family, load, result: phase.load, kscope };
            let lost = !step.lossless();
            steps.push(step);
            if lost {
                break;
            }
        }
    }
    Ok(steps)
}

// ----------------------------------------------------------------- kscope

/// The parts of the final "summary" record the report uses.
#[derive(Debug, Clone, Default)]
struct Summary {
    events_read: u64,
    lost_events: u64,
    queue_dropped: u64,
    decode_errors: u64,
    written: u64,
    /// Sum over sensors of events the kernel could not put in a buffer.
    emit_failed: u64,
    bpf_stats_enabled: bool,
    programs: Vec<ProgramCost>,
    /// The summary's `l7` object (absent from kscope builds before it).
    l7: Option<L7Counts>,
}

/// What kscope's connection table and parsers made of the data events
/// (agent/src/conntrack.rs `ConnCounts`), plus the ledger's `analyzed`.
#[derive(Debug, Clone, Copy, Default)]
struct L7Counts {
    segments: u64,
    analyzed: u64,
    bytes_total: u64,
    bytes_captured: u64,
    unclassified_segments: u64,
    parse_errors: u64,
    table_full: u64,
    exchanges: u64,
    parser_malformed: u64,
    parser_unpaired_dropped: u64,
}

impl L7Counts {
    fn json(&self) -> Value {
        json!({
            "segments": self.segments, "analyzed": self.analyzed, "bytes_total": self.bytes_total,
            "bytes_captured": self.bytes_captured, "unclassified_segments": self.unclassified_segments,
            "parse_errors": self.parse_errors, "table_full": self.table_full, "exchanges": self.exchanges,
            "parser_malformed": self.parser_malformed, "parser_unpaired_dropped": self.parser_unpaired_dropped,
        })
    }
}

#[derive(Debug, Clone)]
struct ProgramCost {
    sensor: String,
    program: String,
    run_count: u64,
    run_time_ns: u64,
}

impl ProgramCost {
    fn avg_ns(&self) -> Option<f64> {
        (self.run_count > 0).then(|| self.run_time_ns as f64 / self.run_count as f64)
    }
}

fn parse_summary(record: &Value) -> anyhow::Result<Summary> {
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
fn parse_forms(sensors_record: &Value) -> BTreeMap<String, String> {
    sensors_record["sensors"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| (s["sensor"].as_str().unwrap_or("?").to_owned(), s["chosen"].as_str().unwrap_or("none").to_owned()))
        .collect()
}

/// `kscope run --output json --stats-interval 1` writing to a file; killed
/// (and its files removed) if dropped without [`Kscope::stop`].
struct Kscope {
    child: Child,
    stdout: PathBuf,
    stderr: PathBuf,
    forms: BTreeMap<String, String>,
}

impl Kscope {
    /// Starts kscope and waits for its sensors record, i.e. until every
    /// sensor is attached.
    fn start(ctx: &HostContext<'_>) -> anyhow::Result<Self> {
        let stdout = ctx.dir.join("kscope.jsonl");
        let stderr = ctx.dir.join("kscope.err");
        let out = File::create(&stdout).with_context(|| format!("creating {}", stdout.display()))?;
        let err = File::create(&stderr).with_context(|| format!("creating {}", stderr.display()))?;
        let child = Command::new(ctx.kscope)
            .args(["run", "--output", "json", "--stats-interval", "1"])
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .spawn()
            .with_context(|| format!("starting {}", ctx.kscope.display()))?;
        let mut kscope = Self { child, stdout, stderr, forms: BTreeMap::new() };
        let deadline = Instant::now() + KSCOPE_START_TIMEOUT;
        loop {
            if let Some(record) = kscope.first_record()? {
                ensure!(record["type"] == "sensors", "kscope's first record is not the sensors record: {record}");
                kscope.forms = parse_forms(&record);
                return Ok(kscope);
            }
            if let Some(status) = kscope.child.try_wait().context("waiting for kscope")? {
                bail!("kscope exited ({status}) before reporting its sensors: {}", kscope.stderr_text());
            }
            ensure!(
                Instant::now() < deadline,
                "kscope did not report its sensors within {KSCOPE_START_TIMEOUT:?}: {}",
                kscope.stderr_text()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// The first complete line of its output, if written yet. Only the head
    /// is read: events may already be streaming after it.
    fn first_record(&self) -> anyhow::Result<Option<Value>> {
        let mut head = Vec::new();
        File::open(&self.stdout)
            .and_then(|f| f.take(1 << 20).read_to_end(&mut head))
            .with_context(|| format!("reading {}", self.stdout.display()))?;
        let Some(end) = head.iter().position(|&b| b == b'\n') else {
            return Ok(None);
        };
        let line = String::from_utf8_lossy(&head[..end]);
        serde_json::from_str(&line).map(Some).with_context(|| format!("kscope's first line is not JSON: {line}"))
    }

    fn stderr_text(&self) -> String {
        fs::read_to_string(&self.stderr).unwrap_or_default().trim().to_owned()
    }

    /// kscope's utime + stime so far, all threads.
    fn cpu_ns(&self, clk_tck: u64) -> anyhow::Result<u64> {
        let path = format!("/proc/{}/stat", self.child.id());
        let stat = fs::read_to_string(&path).with_context(|| format!("reading {path} (did kscope exit?)"))?;
        let ticks = parse_stat_cpu_ticks(&stat).with_context(|| format!("parsing {path}: {stat}"))?;
        Ok(ticks.saturating_mul(1_000_000_000) / clk_tck.max(1))
    }

    /// After a load: waits until kscope's CPU time grows by at most one
    /// tick per half second (it has worked through what it queued), up to
    /// [`DRAIN_TIMEOUT`]. Returns its CPU then and how long that took.
    fn wait_idle(&self, clk_tck: u64) -> anyhow::Result<(u64, Duration)> {
        let started = Instant::now();
        let tick_ns = 1_000_000_000 / clk_tck.max(1);
        let mut last = self.cpu_ns(clk_tck)?;
        loop {
            thread::sleep(Duration::from_millis(500));
            let now = self.cpu_ns(clk_tck)?;
            if now.saturating_sub(last) <= tick_ns || started.elapsed() >= DRAIN_TIMEOUT {
                return Ok((now, started.elapsed()));
            }
            last = now;
        }
    }

    /// SIGINT (what Ctrl-C does), wait for the exit, and read the summary;
    /// with `port`, also count the exchange records of its output (after it
    /// exited: not in its measured CPU).
    fn stop_counting(mut self, port: Option<u16>) -> anyhow::Result<(Summary, Option<HttpExchanges>)> {
        send_signal(self.child.id(), 2);
        let status = kscope_harness::wait_timeout(&mut self.child, KSCOPE_STOP_TIMEOUT)?
            .ok_or_else(|| anyhow!("kscope did not exit within {KSCOPE_STOP_TIMEOUT:?} of SIGINT; killed"))?;
        ensure!(status.success(), "kscope exited with {status}: {}", self.stderr_text());
        let record = last_summary(&self.stdout)?;
        let http = port.map(|port| count_http_exchanges(&self.stdout, port)).transpose()?;
        Ok((parse_summary(&record)?, http))
    }
}

impl Drop for Kscope {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // Its links are fd-based: the kernel detaches everything on exit.
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        // The event log of a phase is tens of MB; only its summary is kept.
        let _ = fs::remove_file(&self.stdout);
        let _ = fs::remove_file(&self.stderr);
    }
}

/// utime + stime (fields 14 and 15) of a /proc/<pid>/stat line. The fields
/// are counted after the last ')' because comm may contain spaces or ')'.
fn parse_stat_cpu_ticks(stat: &str) -> anyhow::Result<u64> {
    let (_, rest) = stat.rsplit_once(')').ok_or_else(|| anyhow!("no ')' after comm"))?;
    // rest starts at field 3 (state): utime is field 14, stime field 15.
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| -> anyhow::Result<u64> {
        fields
            .get(n - 3)
            .ok_or_else(|| anyhow!("no field {n}"))?
            .parse()
            .with_context(|| format!("field {n} is not a number"))
    };
    Ok(field(14)? + field(15)?)
}

/// Exchange records in a JSON-lines file: all, and HTTP/1 ones of `port` by
/// side. Substring matches on kscope's own serialization (serde_json, no
/// spaces, field order fixed), so a 100 MB file takes well under a second.
fn count_http_exchanges(path: &Path, port: u16) -> anyhow::Result<HttpExchanges> {
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let (local, peer) = (format!("\"local_port\":{port},"), format!("\"peer_port\":{port},"));
    let mut counts = HttpExchanges::default();
    for line in BufReader::with_capacity(1 << 20, file).split(b'\n') {
        let line = line.with_context(|| format!("reading {}", path.display()))?;
        let Ok(line) = std::str::from_utf8(&line) else { continue };
        if !line.starts_with("{\"type\":\"exchange\"") {
            continue;
        }
        counts.all += 1;
        if !line.contains("\"protocol\":\"http1\"") {
            continue;
        }
        let side = if line.contains("\"role\":\"client\"") && line.contains(&peer) {
            &mut counts.client
        } else if line.contains("\"role\":\"server\"") && line.contains(&local) {
            &mut counts.server
        } else {
            continue;
        };
        *side += 1;
        if line.contains("\"partial\":") {
            counts.partial += 1;
        }
    }
    Ok(counts)
}

/// The last "summary" record of a JSON-lines file, reading only its tail
/// (the file holds every event of the phase before it).
fn last_summary(path: &Path) -> anyhow::Result<Value> {
    const TAIL: u64 = 256 * 1024;
    let mut file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let len = file.metadata().with_context(|| format!("reading metadata of {}", path.display()))?.len();
    file.seek(SeekFrom::Start(len.saturating_sub(TAIL))).with_context(|| format!("seeking in {}", path.display()))?;
    let mut tail = Vec::new();
    file.read_to_end(&mut tail).with_context(|| format!("reading {}", path.display()))?;
    String::from_utf8_lossy(&tail)
        .lines()
        .rev()
        .filter(|line| line.contains("\"summary\""))
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .find(|record| record["type"] == "summary")
        .ok_or_else(|| anyhow!("no summary record at the end of {}", path.display()))
}

// ----------------------------------------------------------------- QEMU

/// One pass of one hook form in a guest.
#[derive(Debug, Clone)]
struct VmPass {
    form: String,
    /// Each sensor's chosen form: a sensor that cannot use the forced form
    /// does not run, and its programs are then missing from the table.
    forms: BTreeMap<String, String>,
    summary: Option<Summary>,
    workload_s: Option<f64>,
    problem: Option<String>,
}

#[derive(Debug, Clone)]
struct VmKernel {
    label: String,
    release: Option<String>,
    boot_and_run_s: f64,
    passes: Vec<VmPass>,
    error: Option<String>,
}

impl VmKernel {
    /// The programs of `form`, summed over its passes.
    fn programs(&self, form: &str) -> Vec<ProgramCost> {
        merge_programs(self.passes.iter().filter(|p| p.form == form).filter_map(|p| p.summary.as_ref()))
    }

    /// Total BPF time of `sensor`'s programs per operation of the workload
    /// (a connection for "tcp", a spawn for "process"): the figure that
    /// compares forms, since a kprobe form may need two programs (entry and
    /// return) where a tracepoint needs one.
    fn ns_per_operation(&self, form: &str, sensor: &str) -> Option<f64> {
        let passes = self.passes.iter().filter(|p| p.form == form && p.summary.is_some()).count();
        // Each pass runs N wget (a connection and a spawn each) and N /bin/true.
        let per_pass = match sensor {
            "tcp" => VM_ITERATIONS,
            "process" => 2 * VM_ITERATIONS,
            _ => return None,
        };
        let operations = f64::from(per_pass) * passes as f64;
        let time: u64 = self.programs(form).iter().filter(|p| p.sensor == sensor).map(|p| p.run_time_ns).sum();
        (operations > 0.0).then(|| time as f64 / operations)
    }
}

/// Sums run counts and run times per (sensor, program), in first-seen order.
fn merge_programs<'a>(summaries: impl Iterator<Item = &'a Summary>) -> Vec<ProgramCost> {
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

fn vm_script() -> String {
    let forms = vm_pass_order().join(" ");
    format!(
        // busybox --install -s puts httpd in /usr/sbin and wget in
        // /usr/bin (not /bin): they are found through PATH.
        r#"N={VM_ITERATIONS}
mkdir -p /www
echo "kscope bench" > /www/index.html
httpd -f -p 127.0.0.1:8080 -h /www &
HTTPD=$!
P=0
for FORM in {forms}; do
    P=$((P+1)); OUT=/tmp/$P-$FORM
    /usr/bin/kscope run --output json --hook-form $FORM --duration {VM_KSCOPE_DURATION_S} > $OUT.jsonl 2> $OUT.err &
    K=$!
    i=0
    until grep -q '"type":"sensors"' $OUT.jsonl 2>/dev/null; do
        kill -0 $K 2>/dev/null || break
        i=$((i+1)); [ $i -gt 600 ] && break
        sleep 0.2
    done
    U0=$(cut -d' ' -f1 /proc/uptime)
    i=0; FAILED=0
    while [ $i -lt $N ]; do wget -q -O /dev/null http://127.0.0.1:8080/ || FAILED=$((FAILED+1)); i=$((i+1)); done
    i=0; while [ $i -lt $N ]; do /bin/true; i=$((i+1)); done
    U1=$(cut -d' ' -f1 /proc/uptime)
    kill -INT $K 2>/dev/null; wait $K; KCODE=$?
    echo "@@form $FORM kscope=$KCODE wget_failed=$FAILED u0=$U0 u1=$U1"
    head -n 1 $OUT.jsonl
    grep '"type":"summary"' $OUT.jsonl | tail -n 1
    echo "@@stderr"
    head -n 20 $OUT.err
done
kill $HTTPD
"#
    )
}

fn measure_vms(root: &Path, static_kscope: &Path) -> anyhow::Result<Vec<VmKernel>> {
    let cache = root.join("target/vm/kernels");
    let work = root.join("target/vm/work");
    fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    // Not /kscope: the harness keeps its script in the /kscope directory.
    let files = [GuestFile { host: static_kscope.to_path_buf(), guest: "/usr/bin/kscope".into() }];
    let script = vm_script();
    let mut kernels = Vec::new();
    for kernel in guest_kernels() {
        println!("bench: QEMU {} ...", kernel.label);
        let vmlinuz = kernel.fetch(&cache).with_context(|| format!("fetching the {} kernel", kernel.label))?;
        // A guest that fails is reported, not fatal: the other kernel and the
        // host figures are still worth having.
        let result = match run_in_guest(&vmlinuz, &files, &script, &work, VM_TIMEOUT) {
            Ok(run) => {
                let mut result = parse_vm_output(kernel.label, &run.output);
                result.boot_and_run_s = run.boot_and_run.as_secs_f64();
                if run.exit_code != 0 && result.error.is_none() {
                    result.error = Some(format!("guest script exited {}; its output:\n{}", run.exit_code, run.output));
                }
                result
            }
            Err(err) => VmKernel {
                label: kernel.label.to_owned(),
                release: None,
                boot_and_run_s: 0.0,
                passes: Vec::new(),
                error: Some(format!("{err:#}")),
            },
        };
        println!(
            "bench:   {} in {:.1} s{}",
            kernel.label,
            result.boot_and_run_s,
            result.error.as_deref().map(|e| format!(": {e}")).unwrap_or_default()
        );
        kernels.push(result);
    }
    Ok(kernels)
}

fn parse_vm_output(label: &str, output: &str) -> VmKernel {
    let mut result =
        VmKernel { label: label.to_owned(), release: None, boot_and_run_s: 0.0, passes: Vec::new(), error: None };
    for section in output.split("@@form ").skip(1) {
        let (body, stderr) = section.split_once("@@stderr").unwrap_or((section, ""));
        let mut lines = body.lines();
        let header = lines.next().unwrap_or_default();
        let field = |key: &str| header.split_whitespace().find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='));
        let form = header.split_whitespace().next().unwrap_or("?").to_owned();
        let records: Vec<Value> =
            lines.filter(|l| l.starts_with('{')).filter_map(|l| serde_json::from_str(l).ok()).collect();
        let sensors = records.iter().find(|r| r["type"] == "sensors");
        if let Some(release) = sensors.and_then(|s| s["kernel"].as_str()) {
            result.release = Some(release.to_owned());
        }
        let summary = records.iter().find(|r| r["type"] == "summary").map(parse_summary);
        let workload_s =
            match (field("u0").and_then(|v| v.parse::<f64>().ok()), field("u1").and_then(|v| v.parse::<f64>().ok())) {
                (Some(u0), Some(u1)) => Some(u1 - u0),
                _ => None,
            };
        let mut problem = None;
        if field("kscope") != Some("0") {
            problem = Some(format!("kscope exited {}: {}", field("kscope").unwrap_or("?"), stderr.trim()));
        } else if field("wget_failed") != Some("0") {
            problem = Some(format!("{} of {VM_ITERATIONS} wget requests failed", field("wget_failed").unwrap_or("?")));
        }
        let summary = match summary {
            Some(Ok(summary)) => Some(summary),
            Some(Err(err)) => {
                problem.get_or_insert_with(|| format!("bad summary: {err:#}"));
                None
            }
            None => {
                problem.get_or_insert_with(|| format!("no summary record: {}", stderr.trim()));
                None
            }
        };
        result.passes.push(VmPass {
            form,
            forms: sensors.map(parse_forms).unwrap_or_default(),
            summary,
            workload_s,
            problem,
        });
    }
    let order = vm_pass_order();
    let reported: Vec<&str> = result.passes.iter().map(|p| p.form.as_str()).collect();
    if reported != order {
        result.error = Some(format!("the guest reported passes {reported:?}, not {order:?}; its output:\n{output}"));
    }
    result
}

// ----------------------------------------------------------------- report

struct HostResults {
    workloads: Vec<Workload>,
    ramp: Vec<RampStep>,
}

struct Report {
    machine: Value,
    host: HostResults,
    vm: Option<Vec<VmKernel>>,
}

/// Per program over all with-kscope phases of the fixed workloads: runs and
/// run time are summed, so the average weighs every hit equally.
fn host_program_costs(workloads: &[Workload]) -> Vec<(String, ProgramCost)> {
    let mut by_program: BTreeMap<(String, String), (String, ProgramCost)> = BTreeMap::new();
    for (_, k) in workloads.iter().flat_map(Workload::measures) {
        for p in &k.summary.programs {
            let form = k.forms.get(&p.sensor).cloned().unwrap_or_else(|| "?".into());
            let entry = by_program
                .entry((p.sensor.clone(), p.program.clone()))
                .or_insert_with(|| (form, ProgramCost { run_count: 0, run_time_ns: 0, ..p.clone() }));
            entry.1.run_count += p.run_count;
            entry.1.run_time_ns += p.run_time_ns;
        }
    }
    by_program.into_values().collect()
}

impl Report {
    fn max_lossless(&self) -> Option<&RampStep> {
        self.host.ramp.iter().filter(|s| s.lossless()).max_by(|a, b| a.events_per_s().total_cmp(&b.events_per_s()))
    }

    fn first_losses(&self) -> Vec<&RampStep> {
        self.host.ramp.iter().filter(|s| !s.lossless()).collect()
    }

    fn text(&self) -> String {
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
            let dropped: u64 = w.measures().map(|(_, k)| k.summary.queue_dropped).sum();
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
                    k.summary.l7.map_or("-".into(), |l| l.exchanges.to_string()),
                    k.http.map_or("-".into(), |h| format!("{} + {}", h.client, h.server)),
                    k.summary.lost_events.to_string(),
                    k.summary.queue_dropped.to_string(),
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
                k.queue_dropped.to_string(),
                k.emit_failed.to_string(),
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
                s.kscope.summary.queue_dropped,
                s.kscope.summary.emit_failed
            );
        }

        out += "\n4. Cost per program run (BPF run-time stats: avg ns per hit)\n";
        out += &format!("   host, kernel {} (all with-kscope phases of 1.):\n", m["kernel"].as_str().unwrap_or("?"));
        let mut rows = vec![row(["form", "sensor", "program", "runs", "avg ns/run"])];
        for (form, p) in host_program_costs(&self.host.workloads) {
            rows.push(row([form, p.sensor.clone(), p.program.clone(), p.run_count.to_string(), opt(p.avg_ns(), 0)]));
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
                                p.sensor.clone(),
                                p.program.clone(),
                                p.run_count.to_string(),
                                opt(p.avg_ns(), 0),
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

    fn json(&self) -> Value {
        let summary_json = |s: &Summary| {
            json!({
                "events_read": s.events_read, "lost_events": s.lost_events, "queue_dropped": s.queue_dropped,
                "emit_failed": s.emit_failed, "decode_errors": s.decode_errors, "written": s.written,
                "bpf_stats_enabled": s.bpf_stats_enabled,
                "programs": s.programs.iter().map(program_json).collect::<Vec<_>>(),
                "l7": s.l7.as_ref().map(L7Counts::json),
            })
        };
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
                    "events_per_s": events_per_s(k, p.load.wall), "forms": k.forms, "summary": summary_json(&k.summary),
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
                "summary": summary_json(&s.kscope.summary),
            })
        };
        let host_programs: Vec<Value> = host_program_costs(&self.host.workloads)
            .iter()
            .map(|(form, p)| json!({"form": form, "sensor": p.sensor, "program": p.program, "run_count": p.run_count, "run_time_ns": p.run_time_ns, "avg_ns_per_run": p.avg_ns()}))
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
                            "summary": f.summary.as_ref().map(summary_json),
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

fn program_json(p: &ProgramCost) -> Value {
    json!({
        "sensor": p.sensor, "program": p.program, "run_count": p.run_count,
        "run_time_ns": p.run_time_ns, "avg_ns_per_run": p.avg_ns(),
    })
}

fn row<const N: usize>(cells: [impl Into<String>; N]) -> Vec<String> {
    cells.into_iter().map(Into::into).collect()
}

/// Left-aligned columns, two spaces apart, with a rule under the header.
fn table(rows: &[Vec<String>]) -> String {
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

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("  {l}\n")).collect()
}

fn opt(value: Option<f64>, decimals: usize) -> String {
    value.map_or_else(|| "-".into(), |v| format!("{v:.decimals$}"))
}

fn median(values: &[f64]) -> Option<f64> {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(sorted[n / 2]),
        _ => Some((sorted[n / 2 - 1] + sorted[n / 2]) / 2.0),
    }
}

fn tail_lines(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

// ----------------------------------------------------------------- helpers

/// The binary at `path`, built by `build` only if it is missing, so the
/// bench measures what is already built unless there is nothing to measure.
/// How long ago the binary was built, so a stale binary shows in the report.
fn binary_age(path: &Path) -> String {
    fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .map_or_else(|| "build time unknown".into(), |age| format!("built {} min ago", age.as_secs() / 60))
}

fn which(tool: &str) -> anyhow::Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(tool))
        .find(|candidate| candidate.is_file())
        .ok_or_else(|| anyhow!("{tool} not found on PATH"))
}

/// `getconf CLK_TCK`: the unit of utime and stime in /proc/<pid>/stat.
fn clock_ticks_per_second() -> anyhow::Result<u64> {
    let out = Command::new("getconf").arg("CLK_TCK").output().context("running getconf CLK_TCK")?;
    ensure!(out.status.success(), "getconf CLK_TCK failed ({})", out.status);
    let text = String::from_utf8_lossy(&out.stdout);
    let ticks: u64 = text.trim().parse().with_context(|| format!("getconf CLK_TCK printed {text:?}"))?;
    ensure!(ticks > 0, "getconf CLK_TCK printed 0");
    Ok(ticks)
}

fn read_trimmed(path: &str) -> anyhow::Result<String> {
    Ok(fs::read_to_string(path).with_context(|| format!("reading {path}"))?.trim().to_owned())
}

/// Kills a child that is still running when dropped (an error path).
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// A private directory for nginx, wrk and kscope output, removed on drop.
struct ScratchDir(PathBuf);

impl ScratchDir {
    fn create() -> anyhow::Result<Self> {
        let path = std::env::temp_dir().join(format!("kscope-bench-{}", std::process::id()));
        fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(Self(path))
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrk_output_is_parsed() {
        let text = "Running 5s test @ http://127.0.0.1:1/\n  1 threads and 8 connections\n  \
                    51234 requests in 5.00s, 12.30MB read\n  Socket errors: connect 0, read 3, write 0, timeout 1\n\
                    Non-2xx or 3xx responses: 2\nRequests/sec:  10246.80\nTransfer/sec:      2.46MB\n";
        let r = parse_wrk(text).expect("parses");
        assert!((r.requests_per_s - 10246.8).abs() < 1e-9);
        assert_eq!((r.requests, r.errors), (51234, 6));
        assert!(parse_wrk("nothing").is_err());
    }

    #[test]
    fn stat_cpu_ticks_skip_odd_comm() {
        let stat = "42 (a) b c) S 1 42 42 0 -1 4194560 100 0 0 0 7 5 0 0 20 0 3 0 100 0 0";
        assert_eq!(parse_stat_cpu_ticks(stat).expect("parses"), 12);
    }

    #[test]
    fn medians() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0]), Some(2.5));
    }

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

    #[test]
    fn http_exchanges_are_counted_per_side_on_the_port() {
        let dir = ScratchDir::create().expect("scratch dir");
        let path = dir.path().join("exchanges.jsonl");
        let exchange = |role: &str, local: u16, peer: u16, extra: &str| {
            format!(
                r#"{{"type":"exchange","protocol":"http1","role":"{role}","status":200,"local_port":{local},"peer_addr":"127.0.0.1","peer_port":{peer},"http_version":"1.1"{extra}}}"#
            )
        };
        let lines = [
            r#"{"type":"sensors","sensors":[]}"#.to_owned(),
            exchange("client", 40000, 8080, ""),
            exchange("server", 8080, 40000, r#","partial":"no response""#),
            exchange("client", 40001, 808, ""),
            r#"{"type":"exchange","protocol":"dns","role":"client","local_port":5353,"peer_port":53,"x":1}"#.to_owned(),
            r#"{"type":"summary"}"#.to_owned(),
        ];
        fs::write(&path, lines.join("\n") + "\n").expect("writes");
        let c = count_http_exchanges(&path, 8080).expect("counts");
        assert_eq!((c.all, c.client, c.server, c.partial), (4, 1, 1, 1));
    }

    #[test]
    fn vm_passes_are_parsed_and_merged_per_form() {
        let summary = |runs: u64, ns: u64| {
            format!(
                r#"{{"type":"summary","bpf_stats_enabled":true,"lost_events":0,"programs":[{{"sensor":"process","program":"process_exec_kp","run_count":{runs},"run_time_ns":{ns}}}],"sensors":[],"ledger":{{"read_per_cpu":[1],"lost_per_cpu":[0],"decoded":1,"decode_errors":0,"queue_dropped":0,"written":1}}}}"#
            )
        };
        let sensors = r#"{"type":"sensors","kernel":"6.1.0-test","sensors":[{"sensor":"process","chosen":"kprobe"}]}"#;
        let output = format!(
            "@@form kprobe kscope=0 wget_failed=0 u0=1.50 u1=3.00\n{sensors}\n{}\n@@stderr\n\
             @@form kprobe kscope=0 wget_failed=0 u0=5.00 u1=6.00\n{sensors}\n{}\n@@stderr\n",
            summary(10, 5000),
            summary(30, 3000)
        );
        let k = parse_vm_output("debian-6.1", &output);
        assert_eq!(k.release.as_deref(), Some("6.1.0-test"));
        assert_eq!(k.passes.len(), 2);
        assert_eq!(k.passes[0].workload_s, Some(1.5));
        assert!(k.passes.iter().all(|p| p.problem.is_none()));
        let merged = k.programs("kprobe");
        assert_eq!((merged[0].run_count, merged[0].avg_ns()), (40, Some(200.0)));
        let spawns = f64::from(2 * 2 * VM_ITERATIONS);
        assert_eq!(k.ns_per_operation("kprobe", "process"), Some(8000.0 / spawns));
        assert_eq!(k.ns_per_operation("fentry", "process"), None);
        assert!(k.error.is_some(), "fentry and tracepoint passes are missing");
    }
}
