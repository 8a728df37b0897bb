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
//! The binaries are built by `crate::build`, exactly as `cargo xtask build`
//! and `cargo xtask test` build them. The parts:
//!
//! - [`load`]: the load drivers (wrk, a spawn loop);
//! - [`kscope`]: `kscope run` as a measured child process;
//! - [`summary`]: kscope's records read through `kscope_schema`, and what the
//!   report derives from its summary;
//! - [`workloads`]: 1 and 2, pairs of phases without and with kscope;
//! - [`ramp`]: 3, the load ramp;
//! - [`vm`]: 4 in QEMU guests (the guest runs `vm_pass.sh`);
//! - [`report`]: the text and JSON report.

mod kscope;
mod load;
mod ramp;
mod report;
mod summary;
mod vm;
mod workloads;

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    thread,
    time::Duration,
};

use anyhow::{Context as _, anyhow, ensure};
use kscope_harness::nginx::Nginx;
use serde_json::json;

use crate::{build, process, process::workspace_root};
use load::run_wrk;
use ramp::measure_ramp;
use report::{HostResults, Report};
use vm::measure_vms;
use workloads::measure_workloads;

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

/// `cargo xtask bench`.
pub fn bench(opts: &BenchOptions) -> anyhow::Result<()> {
    ensure!(opts.seconds >= 1, "--seconds must be at least 1");
    ensure!(
        process::is_root(),
        "bench needs root: kscope loads eBPF programs (run it as root, e.g. `sudo cargo xtask bench`)"
    );
    for (tool, package) in [("nginx", "nginx-light"), ("wrk", "wrk"), ("getconf", "libc-bin")] {
        which(tool)
            .with_context(|| format!("bench needs {tool} (apt-get install -y {package}, or `cargo xtask setup`)"))?;
    }
    let root = workspace_root();
    // Always through cargo: measuring a stale binary would report old code.
    let kscope = build::build()?;
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
        let static_kscope = build::build_static()?;
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

/// What the host phases share.
struct HostContext<'a> {
    kscope: &'a Path,
    dir: &'a Path,
    port: u16,
    clk_tck: u64,
}

// ----------------------------------------------------------------- helpers

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

/// A private directory for nginx, wrk and kscope output, removed on drop.
struct ScratchDir(PathBuf);

impl ScratchDir {
    fn create() -> anyhow::Result<Self> {
        // One per call: unit tests make several at once in one process, and
        // each removes its own when dropped.
        static MADE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = MADE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("kscope-bench-{}-{n}", std::process::id()));
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
