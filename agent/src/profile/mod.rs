//! `kscope profile`: CPU sampling with symbolized kernel and user stacks.
//!
//! One software cpu-clock perf event per online CPU, at `--frequency` Hz,
//! runs `profile_cpu` (ebpf-probes/programs/src/profile.rs), which counts
//! samples by process, thread name and stack pair in kernel maps. At the end
//! the stacks are read once, symbolized (kernel addresses through kallsyms or
//! a vmlinux, user addresses through each process's mappings) and written as
//! folded stacks and a flame graph. Processes are snapshotted while they are
//! alive (at start for `--pid`, then once a second for each new process in
//! the counts map), so one that exits before the end still resolves.
//!
//! Nothing is dropped unseen: samples the counts map had no room for, and
//! stacks the stack map could not keep, are counted in the kernel and
//! reported (`samples: N, lost: M (...)`).

pub mod fold;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::io::{BufWriter, IsTerminal as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use aya::{
    Ebpf, EbpfLoader,
    maps::{HashMap as BpfHashMap, MapData, PerCpuArray, PerCpuHashMap, StackTraceMap},
    programs::{
        PerfEvent, ProgramError,
        perf_event::{PerfEventConfig, PerfEventScope, SamplePolicy, SoftwareEvent},
    },
};
use kscope_common::profile::{MAX_PIDS, ProfileConfig, ProfileKey, STACK_NOT_COLLECTED, errno, names, slot, stacks};
use symbol_resolver::{Kernel, Options, Process, Source, Symbolized, Symbolizer};

pub use fold::parse_duration;

/// `kscope profile`'s options.
#[derive(Debug, clap::Args)]
pub struct ProfileArgs {
    /// Sample only this process (repeatable); default: every process.
    #[arg(long = "pid")]
    pub pids: Vec<u32>,
    /// How long to sample: `10s`, `500ms`, `2m`, or plain seconds (Ctrl-C stops early).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Samples per second on each CPU.
    #[arg(long, default_value_t = 99, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub frequency: u64,
    /// Where the folded stacks go (`comm;outer;...;inner count` lines).
    #[arg(long, default_value = "kscope-profile.folded")]
    pub folded: PathBuf,
    /// Where the flame graph SVG goes.
    #[arg(long, default_value = "kscope-profile.svg")]
    pub svg: PathBuf,
    /// Collect kernel stacks only.
    #[arg(long, conflicts_with = "user_only")]
    pub kernel_only: bool,
    /// Collect user stacks only.
    #[arg(long)]
    pub user_only: bool,
    /// Keep samples of idle CPUs (the swapper tasks, pid 0); skipped by default.
    #[arg(long)]
    pub include_idle: bool,
    /// Distinct stacks the kernel keeps: the stack map's entries (about 1 KiB
    /// each) and hash buckets; raise it when the summary reports stack
    /// collisions. The counts map holds twice as many rows. What does not fit
    /// is counted as lost.
    #[arg(long, default_value_t = 16_384, value_parser = clap::value_parser!(u32).range(64..=MAX_STACKS as i64))]
    pub max_stacks: u32,
}

/// The largest `--max-stacks` (a 1 GiB stack map).
const MAX_STACKS: u32 = 1 << 20;

/// Set by SIGINT/SIGTERM: stop sampling early and still write the results.
static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_stop_signal(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

fn set_stop_handler(install: bool) {
    let handler =
        if install { on_stop_signal as extern "C" fn(libc::c_int) as libc::sighandler_t } else { libc::SIG_DFL };
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, handler);
        libc::signal(libc::SIGTERM, handler);
    }
}

pub fn run(args: &ProfileArgs) -> anyhow::Result<()> {
    let targets = resolve_pids(&args.pids)?;
    crate::preflight::check_capabilities()?;
    check_sample_rate(args.frequency)?;
    // Made before sampling, so a path that cannot be written fails now, not
    // after the profile was taken.
    let folded_file = create(&args.folded)?;
    let svg_file = match create(&args.svg) {
        Ok(file) => file,
        Err(e) => {
            let _ = std::fs::remove_file(&args.folded);
            return Err(e);
        }
    };
    let summary = match profile(args, &targets, folded_file, svg_file) {
        Ok(summary) => summary,
        Err(e) => {
            // No empty or half-written results left behind a failed run.
            let _ = std::fs::remove_file(&args.folded);
            let _ = std::fs::remove_file(&args.svg);
            return Err(e);
        }
    };
    match print_summary(&summary) {
        // Stdout closed early (`| head`): the results are in the files.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other.context("cannot print the summary"),
    }
}

fn profile<'a>(
    args: &'a ProfileArgs,
    targets: &[u32],
    folded_file: File,
    svg_file: File,
) -> anyhow::Result<Summary<'a>> {
    let cpus = aya::util::online_cpus().map_err(|(what, err)| anyhow::anyhow!("{what}: {err}"))?;

    let mut ebpf = load(args, targets)?;
    let mut seen = Seen::new();
    for &pid in targets {
        seen.remember(pid);
    }
    attach(&mut ebpf, &cpus, args.frequency)?;
    set_stop_handler(true);
    let sampled = sample(&ebpf, args, targets, &mut seen);
    set_stop_handler(false);
    let (elapsed, ended) = sampled?;
    // Detached before reading, so the counts stop moving.
    if let Some(program) = ebpf.program_mut(names::PROGRAM) {
        let program: &mut PerfEvent = program.try_into()?;
        program.unload().context("cannot detach the profiler")?;
    }
    let collected = collect(&ebpf)?;
    // Processes that appeared after the last tick, while they may still live.
    for (key, _) in &collected.counts {
        seen.remember_new(key.tgid);
    }
    let stacks = fold_stacks(&collected, &seen);

    let lines = fold::folded_lines(&stacks);
    write_folded(folded_file, &args.folded, &lines)?;
    let total: u64 = stacks.values().sum();
    write_svg(svg_file, &args.svg, &lines, args, elapsed, total)?;
    // Processes with user stacks whose mappings were never read: their user
    // frames are [unknown].
    let unresolved: HashSet<u32> = collected
        .counts
        .iter()
        .filter(|(key, _)| key.user_stack_id >= 0 && seen.missed.contains(&key.tgid))
        .map(|(key, _)| key.tgid)
        .collect();
    Ok(Summary {
        args,
        cpus: cpus.len(),
        elapsed,
        ended,
        counters: collected.counters,
        stacks,
        unresolved: unresolved.len(),
    })
}

/// Each `--pid`, as the process (thread group) it belongs to.
fn resolve_pids(pids: &[u32]) -> anyhow::Result<Vec<u32>> {
    if pids.len() > MAX_PIDS as usize {
        bail!("--pid: at most {MAX_PIDS} processes, {} given", pids.len());
    }
    let mut targets = Vec::new();
    for &pid in pids {
        let status = match std::fs::read_to_string(format!("/proc/{pid}/status")) {
            Ok(status) => status,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound || pid == 0 => {
                bail!("--pid {pid}: no such process")
            }
            Err(e) => bail!("--pid {pid}: cannot read /proc/{pid}/status: {e}"),
        };
        let tgid = status
            .lines()
            .find_map(|l| l.strip_prefix("Tgid:"))
            .and_then(|t| t.trim().parse::<u32>().ok())
            .with_context(|| format!("--pid {pid}: no Tgid in /proc/{pid}/status"))?;
        if tgid != pid {
            eprintln!("kscope profile: pid {pid} is a thread of process {tgid}: profiling the whole process");
        }
        if !targets.contains(&tgid) {
            targets.push(tgid);
        }
    }
    Ok(targets)
}

/// The kernel refuses frequencies above `kernel.perf_event_max_sample_rate`
/// with a bare EINVAL; say so before trying.
fn check_sample_rate(frequency: u64) -> anyhow::Result<()> {
    let limit = std::fs::read_to_string("/proc/sys/kernel/perf_event_max_sample_rate")
        .ok()
        .and_then(|text| text.trim().parse::<u64>().ok());
    match limit {
        Some(limit) if frequency > limit => {
            bail!("--frequency {frequency}: above this kernel's limit (kernel.perf_event_max_sample_rate = {limit})")
        }
        _ => Ok(()),
    }
}

fn create(path: &Path) -> anyhow::Result<File> {
    File::create(path).with_context(|| format!("cannot write {}", path.display()))
}

fn load(args: &ProfileArgs, targets: &[u32]) -> anyhow::Result<Ebpf> {
    let config = ProfileConfig {
        filter_pids: u32::from(!targets.is_empty()),
        stacks: if args.kernel_only {
            stacks::KERNEL
        } else if args.user_only {
            stacks::USER
        } else {
            stacks::KERNEL | stacks::USER
        },
        include_idle: u32::from(args.include_idle),
        _pad: 0,
    };
    // The object declares the profiler's maps with one entry each (every
    // command loads the whole object); they get their real sizes here.
    let mut ebpf = EbpfLoader::new()
        .override_global(names::PROFILE_CONFIG, &config, true)
        .map_max_entries(names::STACKS, args.max_stacks)
        .map_max_entries(names::COUNTS, args.max_stacks.saturating_mul(2))
        .map_max_entries(names::PIDS, MAX_PIDS)
        .load(crate::loader::probes()?)
        .context("cannot load kscope's eBPF object")?;
    if !targets.is_empty() {
        let mut pids: BpfHashMap<_, u32, u32> =
            BpfHashMap::try_from(ebpf.map_mut(names::PIDS).context("no PROFILE_PIDS map in the eBPF object")?)?;
        for &tgid in targets {
            pids.insert(tgid, 1, 0).context("cannot fill the profiler's pid filter")?;
        }
    }
    Ok(ebpf)
}

fn attach(ebpf: &mut Ebpf, cpus: &[u32], frequency: u64) -> anyhow::Result<()> {
    let program: &mut PerfEvent =
        ebpf.program_mut(names::PROGRAM).context("no profile_cpu program in the eBPF object")?.try_into()?;
    program.load().map_err(|e| match e {
        // The verifier's log is many lines; the reason is in the error.
        ProgramError::LoadError { io_error, verifier_log } => {
            tracing::debug!("verifier log:\n{verifier_log}");
            anyhow::anyhow!("the kernel refused the profiler's program: {io_error}")
        }
        other => anyhow::Error::from(other).context("cannot load the profiler's program"),
    })?;
    for &cpu in cpus {
        program
            .attach(
                PerfEventConfig::Software(SoftwareEvent::CpuClock),
                PerfEventScope::AllProcessesOneCpu { cpu },
                SamplePolicy::Frequency(frequency),
                false,
            )
            .map_err(|e| attach_error(cpu, frequency, e))?;
    }
    Ok(())
}

/// One line naming what to change.
fn attach_error(cpu: u32, frequency: u64, error: ProgramError) -> anyhow::Error {
    let ProgramError::SyscallError(syscall) = &error else {
        return anyhow::Error::from(error).context(format!("cannot attach the profiler on CPU {cpu}"));
    };
    let io = &syscall.io_error;
    let what = format!("{} on CPU {cpu}", syscall.call);
    match io.raw_os_error() {
        Some(libc::EACCES | libc::EPERM) => {
            let paranoid = std::fs::read_to_string("/proc/sys/kernel/perf_event_paranoid").unwrap_or_default();
            anyhow::anyhow!(
                "{what}: {io}: CPU sampling of every process needs CAP_PERFMON (or CAP_SYS_ADMIN); kernel.perf_event_paranoid = {}",
                paranoid.trim()
            )
        }
        Some(libc::ENOENT | libc::ENODEV | libc::EOPNOTSUPP) => {
            anyhow::anyhow!("{what}: {io}: this kernel has no software cpu-clock perf event")
        }
        Some(libc::EINVAL) => anyhow::anyhow!(
            "{what}: {io}: the kernel refused sampling at {frequency} Hz (see kernel.perf_event_max_sample_rate)"
        ),
        _ => anyhow::anyhow!("{what}: {io}"),
    }
}

/// How sampling ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ended {
    Duration,
    Interrupted,
    TargetsExited,
}

/// Waits out the duration. Four times a second snapshots processes new in
/// the counts map (a short-lived one has to be caught alive for its user
/// frames to resolve); once a second refreshes the progress line.
fn sample(ebpf: &Ebpf, args: &ProfileArgs, targets: &[u32], seen: &mut Seen) -> anyhow::Result<(Duration, Ended)> {
    let counters = counters_map(ebpf)?;
    let counts = counts_map(ebpf)?;
    let progress = std::io::stderr().is_terminal();
    let started = Instant::now();
    let tick = Duration::from_millis(250);
    let mut ticks: u32 = 0;
    let ended = loop {
        let elapsed = started.elapsed();
        if elapsed >= args.duration {
            break Ended::Duration;
        }
        if STOP.load(Ordering::Relaxed) {
            break Ended::Interrupted;
        }
        if elapsed >= tick * (ticks + 1) {
            ticks += 1;
            for key in counts.keys().flatten() {
                seen.remember_new(key.tgid);
            }
            if ticks.is_multiple_of(4) {
                // Refreshed: libraries loaded since the last snapshot.
                for &pid in targets {
                    seen.remember(pid);
                }
                if progress {
                    let samples = counter(&counters, slot::SAMPLES);
                    eprint!(
                        "\r\x1b[Kkscope profile: {}s / {}, {samples} samples",
                        elapsed.as_secs(),
                        human(args.duration)
                    );
                }
                if !targets.is_empty() && targets.iter().all(|pid| !Path::new(&format!("/proc/{pid}")).exists()) {
                    break Ended::TargetsExited;
                }
            }
        }
        let next = (tick * (ticks + 1)).min(args.duration);
        std::thread::sleep(next.saturating_sub(started.elapsed()).min(Duration::from_millis(100)));
    };
    if progress {
        eprint!("\r\x1b[K");
    }
    let elapsed = started.elapsed().min(args.duration);
    let samples = counter(&counters, slot::SAMPLES);
    let how = match ended {
        Ended::Duration => String::new(),
        Ended::Interrupted => " (interrupted)".into(),
        Ended::TargetsExited => " (every profiled process exited)".into(),
    };
    eprintln!(
        "kscope profile: sampled {} at {} Hz on {} CPUs{how}: {samples} samples",
        human(elapsed),
        args.frequency,
        aya::util::online_cpus().map_or(0, |c| c.len())
    );
    Ok((elapsed, ended))
}

fn human(duration: Duration) -> String {
    if duration.subsec_millis() == 0 {
        format!("{}s", duration.as_secs())
    } else {
        format!("{:.1}s", duration.as_secs_f64())
    }
}

fn counters_map(ebpf: &Ebpf) -> anyhow::Result<PerCpuArray<&MapData, u64>> {
    Ok(PerCpuArray::try_from(ebpf.map(names::COUNTERS).context("no PROFILE_COUNTERS map")?)?)
}

fn counts_map(ebpf: &Ebpf) -> anyhow::Result<PerCpuHashMap<&MapData, ProfileKey, u64>> {
    Ok(PerCpuHashMap::try_from(ebpf.map(names::COUNTS).context("no PROFILE_COUNTS map")?)?)
}

/// One counter summed over CPUs (0 if it cannot be read).
fn counter(counters: &PerCpuArray<&MapData, u64>, slot: u32) -> u64 {
    counters.get(&slot, 0).map_or(0, |values| values.iter().sum())
}

/// What the kernel recorded.
struct Collected {
    /// By slot.
    counters: [u64; slot::COUNT as usize],
    counts: Vec<(ProfileKey, u64)>,
    /// Stack id → instruction pointers, innermost first.
    stacks: HashMap<i32, Vec<u64>>,
}

fn collect(ebpf: &Ebpf) -> anyhow::Result<Collected> {
    let counter_map = counters_map(ebpf)?;
    let mut counters = [0; slot::COUNT as usize];
    for (slot, value) in (0..).zip(counters.iter_mut()) {
        *value = counter(&counter_map, slot);
    }
    let mut counts = Vec::new();
    for entry in counts_map(ebpf)?.iter() {
        let (key, per_cpu) = entry.context("cannot read the profiler's counts")?;
        let count: u64 = per_cpu.iter().sum();
        if count > 0 {
            counts.push((key, count));
        }
    }
    let stack_map: StackTraceMap<&MapData> =
        StackTraceMap::try_from(ebpf.map(names::STACKS).context("no PROFILE_STACKS map")?)?;
    let mut stacks = HashMap::new();
    for (key, _) in &counts {
        for id in [key.kernel_stack_id, key.user_stack_id] {
            if id >= 0 && !stacks.contains_key(&id) {
                // A stack the map no longer has reads as empty (it cannot
                // happen without BPF_F_REUSE_STACKID, which is not used).
                let ips = stack_map.get(&id.cast_unsigned(), 0).map(|s| s.frames().iter().map(|f| f.ip).collect());
                stacks.insert(id, ips.unwrap_or_default());
            }
        }
    }
    Ok(Collected { counters, counts, stacks })
}

/// Processes seen alive, and the symbolizer that remembers them.
struct Seen {
    symbolizer: Symbolizer,
    tried: HashSet<u32>,
    /// Processes gone (or unreadable) before a snapshot could be taken.
    missed: HashSet<u32>,
    /// Processes snapshotted at least once.
    snapshotted: HashSet<u32>,
}

impl Seen {
    fn new() -> Self {
        // Names only: folded stacks have no place for source lines, and DWARF
        // lookups would make symbolizing large binaries slow.
        let options = Options { code_info: false, inlined: false, ..Options::default() };
        Self {
            symbolizer: Symbolizer::with_options(options),
            tried: HashSet::new(),
            missed: HashSet::new(),
            snapshotted: HashSet::new(),
        }
    }

    /// Snapshots (or refreshes) a live process.
    fn remember(&mut self, tgid: u32) {
        self.tried.insert(tgid);
        match self.symbolizer.remember_process(tgid) {
            Ok(()) => {
                self.missed.remove(&tgid);
                self.snapshotted.insert(tgid);
            }
            Err(error) => {
                tracing::debug!("process {tgid} not snapshotted: {error}");
                if !self.snapshotted.contains(&tgid) {
                    self.missed.insert(tgid);
                }
            }
        }
    }

    /// Snapshots a process the first time it is seen (idle, pid 0, has no
    /// address space).
    fn remember_new(&mut self, tgid: u32) {
        if tgid != 0 && !self.tried.contains(&tgid) {
            self.remember(tgid);
        }
    }

    /// The file `tgid` had mapped at `addr`, from its snapshot.
    fn module(&self, tgid: u32, addr: u64) -> Option<String> {
        self.symbolizer.mapped_file(tgid, addr).map(|path| path.to_string_lossy().into_owned())
    }
}

/// The address to look up for frame `index` of a stack: a caller's frame
/// holds the return address, which may already be the next function's first
/// byte (a call that does not return ends its function), so the byte before
/// it, still in the call instruction, is looked up instead.
fn lookup_address(index: usize, ip: u64) -> u64 {
    if index == 0 { ip } else { ip.saturating_sub(1) }
}

/// Names per looked-up address.
type Resolved = HashMap<u64, Vec<String>>;

fn fold_stacks(collected: &Collected, seen: &Seen) -> BTreeMap<String, u64> {
    // Kernel addresses in one batch; user addresses in one batch per process.
    let mut kernel_addrs = HashSet::new();
    let mut user_addrs: HashMap<u32, HashSet<u64>> = HashMap::new();
    for (key, _) in &collected.counts {
        if let Some(ips) = collected.stacks.get(&key.kernel_stack_id) {
            kernel_addrs.extend(ips.iter().enumerate().map(|(i, &ip)| lookup_address(i, ip)));
        }
        if let Some(ips) = collected.stacks.get(&key.user_stack_id) {
            user_addrs
                .entry(key.tgid)
                .or_default()
                .extend(ips.iter().enumerate().map(|(i, &ip)| lookup_address(i, ip)));
        }
    }
    let symbolizer = &seen.symbolizer;
    let kernel = resolve(symbolizer, &Source::Kernel(Kernel::default()), kernel_addrs, |_| None, true);
    let user: HashMap<u32, Resolved> = user_addrs
        .into_iter()
        .map(|(tgid, addrs)| {
            let resolved =
                resolve(symbolizer, &Source::Process(Process { pid: tgid }), addrs, |a| seen.module(tgid, a), false);
            (tgid, resolved)
        })
        .collect();

    let no_names = Resolved::new();
    let mut folded = BTreeMap::new();
    for (key, count) in &collected.counts {
        let user_frames = frames(
            key.user_stack_id,
            &collected.stacks,
            user.get(&key.tgid).unwrap_or(&no_names),
            fold::MISSED_USER_STACK,
        );
        let kernel_missed = format!("{}{}", fold::MISSED_KERNEL_STACK, fold::KERNEL_SUFFIX);
        let kernel_frames = frames(key.kernel_stack_id, &collected.stacks, &kernel, &kernel_missed);
        let stack = fold::folded_stack(&fold::comm_name(&key.comm), &user_frames, &kernel_frames);
        *folded.entry(stack).or_insert(0) += count;
    }
    folded
}

fn resolve(
    symbolizer: &Symbolizer,
    source: &Source,
    addrs: HashSet<u64>,
    module: impl Fn(u64) -> Option<String>,
    kernel: bool,
) -> Resolved {
    let addrs: Vec<u64> = addrs.into_iter().collect();
    let results: Vec<Symbolized> = symbolizer.symbolize(source, &addrs);
    addrs
        .iter()
        .zip(&results)
        .map(|(&addr, result)| {
            // Only an address no symbol covers is named by its file.
            let file = matches!(result, Symbolized::Unknown(_)).then(|| module(addr)).flatten();
            (addr, fold::frames_for(result, kernel, file.as_deref()))
        })
        .collect()
}

/// A stack's frames, outermost first; a lost stack is one frame saying so,
/// a stack that does not exist (a kernel stack of a sample taken in user
/// mode, a user stack of a kernel thread) or was not asked for is none.
fn frames(id: i32, stacks: &HashMap<i32, Vec<u64>>, resolved: &Resolved, missed: &str) -> Vec<String> {
    if id == STACK_NOT_COLLECTED || id == -errno::EFAULT {
        return Vec::new();
    }
    let Some(ips) = stacks.get(&id) else {
        return vec![missed.to_owned()];
    };
    let mut names = Vec::with_capacity(ips.len());
    for (index, &ip) in ips.iter().enumerate().rev() {
        match resolved.get(&lookup_address(index, ip)) {
            Some(frame_names) => names.extend(frame_names.iter().cloned()),
            None => names.push(fold::UNKNOWN.to_owned()),
        }
    }
    names
}

fn write_folded(file: File, path: &Path, lines: &[String]) -> anyhow::Result<()> {
    let mut out = BufWriter::new(file);
    for line in lines {
        writeln!(out, "{line}").with_context(|| format!("cannot write {}", path.display()))?;
    }
    out.flush().with_context(|| format!("cannot write {}", path.display()))
}

fn write_svg(
    file: File,
    path: &Path,
    lines: &[String],
    args: &ProfileArgs,
    elapsed: Duration,
    total: u64,
) -> anyhow::Result<()> {
    let mut options = inferno::flamegraph::Options::default();
    options.title = "kscope profile".into();
    options.subtitle = Some(format!("{total} samples at {} Hz over {}", args.frequency, human(elapsed)));
    options.count_name = "samples".into();
    // Kernel frames (`_[k]`) orange, C++/Rust `::` names yellow, others red;
    // colours follow names, so two runs colour alike.
    options.colors = inferno::flamegraph::color::Palette::Multi(inferno::flamegraph::color::MultiPalette::Perl);
    options.hash = true;
    let mut out = BufWriter::new(file);
    let written = if total == 0 {
        // inferno refuses an empty profile (and logs an error): a
        // placeholder says what happened instead.
        out.write_all(EMPTY_SVG.as_bytes())
    } else {
        inferno::flamegraph::from_lines(&mut options, lines.iter().map(String::as_str), &mut out)
    };
    written.and_then(|()| out.flush()).with_context(|| format!("cannot write the flame graph {}", path.display()))
}

const EMPTY_SVG: &str = r#"<?xml version="1.0" standalone="no"?>
<svg version="1.1" width="600" height="60" xmlns="http://www.w3.org/2000/svg">
<text x="300" y="35" text-anchor="middle" font-family="Verdana" font-size="14">kscope profile: no samples</text>
</svg>
"#;

struct Summary<'a> {
    args: &'a ProfileArgs,
    cpus: usize,
    elapsed: Duration,
    ended: Ended,
    counters: [u64; slot::COUNT as usize],
    stacks: BTreeMap<String, u64>,
    /// Processes whose user frames could not be resolved.
    unresolved: usize,
}

fn print_summary(s: &Summary<'_>) -> std::io::Result<()> {
    let c = &s.counters;
    let at = |slot: u32| c.get(slot as usize).copied().unwrap_or(0);
    let (full, map_full, collisions, errors) =
        (at(slot::COUNTS_FULL), at(slot::STACK_MAP_FULL), at(slot::STACK_COLLISION), at(slot::STACK_ERROR));
    let lost = full + map_full + collisions + errors;
    let total: u64 = s.stacks.values().sum();
    let mut out = std::io::stdout().lock();
    let scope = match s.args.pids.len() {
        0 => "every process".to_owned(),
        _ => format!("pid {}", s.args.pids.iter().map(u32::to_string).collect::<Vec<_>>().join(",")),
    };
    writeln!(
        out,
        "kscope profile: {scope}, {} at {} Hz on {} CPUs{}",
        human(s.elapsed),
        s.args.frequency,
        s.cpus,
        if s.ended == Ended::Interrupted { " (interrupted)" } else { "" }
    )?;
    writeln!(
        out,
        "samples: {}, lost: {lost} (counts map full: {full}, stack map full: {map_full}, stack collisions: {collisions}, stack errors: {errors})",
        at(slot::SAMPLES)
    )?;
    if collisions > 0 && s.args.max_stacks < MAX_STACKS {
        // The stack map is a hash table without chaining: a stack whose
        // bucket holds another is refused (reusing the bucket would move
        // earlier samples onto the new stack).
        writeln!(
            out,
            "hint: --max-stacks {} (now {}) makes stack collisions rarer",
            s.args.max_stacks.saturating_mul(4).min(MAX_STACKS),
            s.args.max_stacks
        )?;
    }
    if !s.args.include_idle {
        writeln!(out, "idle samples skipped: {}", at(slot::IDLE))?;
    }
    if s.unresolved > 0 {
        writeln!(
            out,
            "{} processes exited before their mappings were read: their user frames are [unknown]",
            s.unresolved
        )?;
    }
    if total == 0 {
        writeln!(out, "no samples: the profiled processes did not run on a CPU")?;
    } else {
        writeln!(out, "top leaf functions:")?;
        for (name, count) in fold::top_leaves(&s.stacks, 5) {
            writeln!(out, "  {:5.1}%  {name} ({count})", 100.0 * count as f64 / total as f64)?;
        }
    }
    writeln!(out, "wrote {} ({} stacks) and {}", s.args.folded.display(), s.stacks.len(), s.args.svg.display())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;

    #[derive(Debug, clap::Parser)]
    struct Cli {
        #[command(flatten)]
        args: ProfileArgs,
    }

    fn parse(args: &[&str]) -> Result<ProfileArgs, clap::Error> {
        Cli::try_parse_from(std::iter::once("profile").chain(args.iter().copied())).map(|cli| cli.args)
    }

    #[test]
    fn options_have_bounded_defaults() {
        let args = parse(&[]).unwrap();
        assert_eq!((args.duration, args.frequency), (Duration::from_secs(10), 99));
        assert_eq!(args.folded, Path::new("kscope-profile.folded"));
        assert_eq!(args.svg, Path::new("kscope-profile.svg"));
        let args = parse(&["--pid", "1", "--pid", "2", "--duration", "500ms", "--frequency", "10000"]).unwrap();
        assert_eq!((args.pids, args.duration, args.frequency), (vec![1, 2], Duration::from_millis(500), 10_000));
        assert!(parse(&["--frequency", "0"]).is_err());
        assert!(parse(&["--frequency", "10001"]).is_err());
        assert!(parse(&["--kernel-only", "--user-only"]).is_err());
        assert!(parse(&["--duration", "0s"]).is_err());
    }

    #[test]
    fn stacks_read_outermost_first_and_say_what_was_lost() {
        // Innermost first, as bpf_get_stackid stores them; callers' return
        // addresses are looked up one byte back.
        let stacks = HashMap::from([(7, vec![0x1010, 0x2005, 0x3005])]);
        let resolved: Resolved = HashMap::from([
            (0x1010, vec!["leaf".to_owned()]),
            (0x2004, vec!["main".to_owned(), "inlined".to_owned()]),
            (0x3004, vec!["_start".to_owned()]),
        ]);
        assert_eq!(frames(7, &stacks, &resolved, "[missed]"), ["_start", "main", "inlined", "leaf"]);
        assert_eq!(frames(-errno::EEXIST, &stacks, &resolved, "[missed]"), ["[missed]"]);
        assert_eq!(frames(-errno::ENOMEM, &stacks, &resolved, "[missed]"), ["[missed]"]);
        assert!(frames(-errno::EFAULT, &stacks, &resolved, "[missed]").is_empty());
        assert!(frames(STACK_NOT_COLLECTED, &stacks, &resolved, "[missed]").is_empty());
        let partly = HashMap::from([(8, vec![0x9999, 0x2005])]);
        assert_eq!(frames(8, &partly, &resolved, "[missed]"), ["main", "inlined", "[unknown]"]);
    }
}
