//! The loads a phase drives: wrk against nginx (one connection per request,
//! or keep-alive) and threads spawning `/bin/true`.

use std::{
    fs::{self, File},
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicU64, Ordering},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, anyhow, ensure};

use super::HostContext;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Load {
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
    pub(super) fn label(self) -> String {
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
pub(super) struct LoadResult {
    pub(super) wall: Duration,
    /// wrk's Requests/sec with `Connection: close` (each one a connection).
    pub(super) connections_per_s: Option<f64>,
    /// wrk's Requests/sec with keep-alive.
    pub(super) requests_per_s: Option<f64>,
    /// Requests wrk completed ("N requests in"), whichever mode.
    pub(super) wrk_requests: u64,
    /// wrk's socket errors and non-2xx answers: a workload that fails fast
    /// would otherwise look like a fast one.
    pub(super) wrk_errors: u64,
    pub(super) spawns_per_s: Option<f64>,
    pub(super) spawn_failures: u64,
}

pub(super) fn run_load(ctx: &HostContext<'_>, load: Load, duration: Duration) -> anyhow::Result<LoadResult> {
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
pub(super) struct WrkResult {
    pub(super) requests_per_s: f64,
    /// "N requests in": what completed, for costs per request.
    pub(super) requests: u64,
    pub(super) errors: u64,
}

/// wrk with `Connection: close`.
pub(super) fn run_wrk(
    ctx: &HostContext<'_>,
    threads: u32,
    connections: u32,
    duration: Duration,
) -> anyhow::Result<WrkResult> {
    WrkRun::start(ctx, threads, connections, duration, true)?.finish(duration)
}

/// A wrk process writing its report to a file (so a full pipe cannot stall
/// it), killed if dropped before it finished.
pub(super) struct WrkRun {
    pub(super) child: ChildGuard,
    pub(super) output: PathBuf,
}

impl WrkRun {
    /// `close`: one connection per request (`Connection: close`); otherwise
    /// wrk's default keep-alive.
    pub(super) fn start(
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

    pub(super) fn finish(mut self, duration: Duration) -> anyhow::Result<WrkResult> {
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
pub(super) fn parse_wrk(text: &str) -> anyhow::Result<WrkResult> {
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
pub(super) fn spawn_loop(workers: u32, duration: Duration) -> anyhow::Result<(f64, u64)> {
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

/// Kills a child that is still running when dropped (an error path).
pub(super) struct ChildGuard(pub(super) Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
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
}
