//! `kscope profile` on this machine's kernel, against a C program that spins
//! in a known function (tests/fixtures/profile/spin.c, built here with gcc
//! -O0 and frame pointers so its user stacks unwind through `main`).

#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Mutex, OnceLock},
    time::Duration,
};

use kscope_tests::{agent::kscope_binary, wait_timeout, workspace_root};

/// One profile at a time: the system-wide one must not see another test's
/// spinner, and two spinners would share the CPUs.
static KERNEL: Mutex<()> = Mutex::new(());

/// The spinner's file name, and so its comm.
const SPINNER: &str = "kscope_spin";
const TARGET: &str = "kscope_spin_target";

fn lock() -> std::sync::MutexGuard<'static, ()> {
    KERNEL.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn work_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("kscope-profile-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    })
}

fn spinner_binary() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let source = workspace_root().join("tests/fixtures/profile/spin.c");
        let bin = work_dir().join(SPINNER);
        let out = Command::new("gcc")
            .args(["-O0", "-g", "-fno-omit-frame-pointer", "-o"])
            .arg(&bin)
            .arg(&source)
            .output()
            .expect("gcc runs (cargo xtask setup installs it)");
        assert!(out.status.success(), "gcc failed: {}", String::from_utf8_lossy(&out.stderr));
        bin
    })
}

/// The spinner, killed and reaped when dropped. It also stops by itself after
/// `seconds`, so a crashed test leaves nothing spinning for long.
struct Spinner(Child);

impl Spinner {
    fn start(seconds: f64) -> Self {
        let child = Command::new(spinner_binary())
            .arg(seconds.to_string())
            .stdout(Stdio::null())
            .spawn()
            .expect("the spinner starts");
        Self(child)
    }

    fn pid(&self) -> u32 {
        self.0.id()
    }

    /// CPU seconds it has used so far (`/proc/PID/stat` utime + stime).
    fn cpu_seconds(&self) -> f64 {
        cpu_seconds(self.pid())
    }
}

/// CPU seconds process `pid` has used: utime + stime of `/proc/PID/stat`,
/// in USER_HZ ticks (100 per second on Linux/x86).
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the `(comm)`, which may hold spaces: state is field 3,
    // utime and stime are fields 14 and 15.
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    ticks as f64 / 100.0
}

/// What a profile should hold of the spinner: the machine may be shared, so
/// the measure is the spinner's own CPU time, not the wall clock.
#[derive(Debug, Clone, Copy)]
enum Expect {
    /// It used `cpu` seconds over `wall` seconds around a profile that
    /// sampled for `sampled` of them, at `frequency`: its CPU share times the
    /// sampled time. Sampling is statistical and the tick count coarse,
    /// hence the wide band.
    Share { cpu: f64, wall: f64, sampled: f64, frequency: f64 },
    /// It used `cpu` seconds in all (so no more can have been sampled) and
    /// when sampling began is not known.
    AtMost { cpu: f64, frequency: f64 },
}

fn check_sample_count(samples: u64, expect: Expect, what: &str) {
    let n = samples as f64;
    let ok = match expect {
        Expect::Share { cpu, wall, sampled, frequency } => {
            let expected = cpu / wall * sampled * frequency;
            n >= 0.6 * expected - 5.0 && n <= 1.4 * expected + 5.0
        }
        Expect::AtMost { cpu, frequency } => n <= 1.4 * cpu * frequency + 5.0,
    };
    assert!(ok, "{what}: {samples} samples, {expect:?}");
}

impl Drop for Spinner {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Profile {
    success: bool,
    stdout: String,
    stderr: String,
    /// Stack → samples, from the folded file.
    stacks: BTreeMap<String, u64>,
    svg: String,
}

impl Profile {
    fn total(&self) -> u64 {
        self.stacks.values().sum()
    }

    /// `samples: N, lost: M (...)` from the summary.
    fn summary_numbers(&self) -> (u64, u64) {
        let line = self.stdout.lines().find(|l| l.starts_with("samples: ")).expect("a samples line");
        let number = |after: &str| -> u64 {
            let rest = &line[line.find(after).unwrap() + after.len()..];
            rest.split(|c: char| !c.is_ascii_digit()).next().unwrap().parse().unwrap()
        };
        (number("samples: "), number("lost: "))
    }

    fn counts_map_full(&self) -> u64 {
        let line = self.stdout.lines().find(|l| l.starts_with("samples: ")).unwrap();
        let rest = &line[line.find("counts map full: ").unwrap() + "counts map full: ".len()..];
        rest.split(|c: char| !c.is_ascii_digit()).next().unwrap().parse().unwrap()
    }
}

/// Runs `kscope profile ARGS --folded F --svg S` and reads what it wrote.
fn profile(name: &str, args: &[&str]) -> Profile {
    let dir = work_dir();
    let folded = dir.join(format!("{name}.folded"));
    let svg = dir.join(format!("{name}.svg"));
    let (stdout_path, stderr_path) = (dir.join(format!("{name}.stdout")), dir.join(format!("{name}.stderr")));
    let _ = std::fs::remove_file(&folded);
    let _ = std::fs::remove_file(&svg);
    let mut child = Command::new(kscope_binary().unwrap())
        .arg("profile")
        .args(args)
        .arg("--folded")
        .arg(&folded)
        .arg("--svg")
        .arg(&svg)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&stdout_path).unwrap())
        .stderr(std::fs::File::create(&stderr_path).unwrap())
        .spawn()
        .expect("kscope starts");
    let status = wait_timeout(&mut child, Duration::from_secs(120)).unwrap().expect("kscope profile ends in 120 s");
    let stdout = std::fs::read_to_string(&stdout_path).unwrap();
    let stderr = std::fs::read_to_string(&stderr_path).unwrap();
    let mut stacks = BTreeMap::new();
    if let Ok(text) = std::fs::read_to_string(&folded) {
        for line in text.lines() {
            let (stack, count) = line.rsplit_once(' ').unwrap_or_else(|| panic!("not `stack count`: {line:?}"));
            let count: u64 = count.parse().unwrap_or_else(|_| panic!("count is not a number: {line:?}"));
            assert!(!stack.is_empty() && count > 0, "empty stack or zero count: {line:?}");
            assert!(stacks.insert(stack.to_owned(), count).is_none(), "stack listed twice: {line:?}");
        }
    }
    let svg = std::fs::read_to_string(&svg).unwrap_or_default();
    Profile { success: status.success(), stdout, stderr, stacks, svg }
}

fn frames(stack: &str) -> Vec<&str> {
    stack.split(';').collect()
}

/// The flame graph is an SVG document (inferno's), balanced, naming `name`.
fn check_svg(svg: &str, name: &str) {
    assert!(svg.starts_with("<?xml"), "not XML: {}", &svg[..svg.len().min(200)]);
    assert!(svg.contains("<svg") && svg.trim_end().ends_with("</svg>"), "not one SVG document");
    assert_eq!(svg.matches("<g>").count() + svg.matches("<g ").count(), svg.matches("</g>").count(), "unbalanced <g>");
    assert!(svg.contains(name), "the flame graph does not name {name}");
}

/// Checks the stacks of one spinner profiled alone: most samples in the
/// target function, called from `main`, under the spinner's comm.
fn check_spinner_stacks(p: &Profile, expect: Expect) {
    let total = p.total();
    assert!(total >= 20, "{total} samples\nstdout:\n{}\nstderr:\n{}", p.stdout, p.stderr);
    check_sample_count(total, expect, "the spinner");
    let mut in_target = 0;
    for (stack, count) in &p.stacks {
        let f = frames(stack);
        assert_eq!(f[0], SPINNER, "the comm comes first: {stack}");
        if let Some(i) = f.iter().position(|frame| *frame == TARGET) {
            assert_eq!(f[i - 1], "main", "{TARGET} is called by main: {stack}");
            in_target += count;
        }
    }
    let share = in_target as f64 / total as f64;
    assert!(share >= 0.8, "{:.1}% of samples in {TARGET}, expected at least 80%:\n{:#?}", share * 100.0, p.stacks);
    // Every sample made it: the summary's samples are the folded ones plus
    // any the counts map had no room for.
    let (samples, lost) = p.summary_numbers();
    assert_eq!(samples, total + p.counts_map_full(), "summary and folded file disagree:\n{}", p.stdout);
    assert!(lost * 10 <= samples, "more than 10% lost:\n{}", p.stdout);
    assert!(
        p.stdout.lines().any(|l| l.contains("%  ") && l.contains(&format!(" {TARGET} ("))),
        "the summary's top leaves name {TARGET}:\n{}",
        p.stdout
    );
    eprintln!(
        "{TARGET}: {in_target} of {total} samples ({:.1}%), summary samples {samples}, lost {lost}",
        share * 100.0
    );
    check_svg(&p.svg, TARGET);
}

#[test]
fn profiles_one_process_with_its_stacks() {
    let _guard = lock();
    let spinner = Spinner::start(60.0);
    let pid = spinner.pid().to_string();
    let (before, started) = (spinner.cpu_seconds(), std::time::Instant::now());
    let p = profile("pid", &["--pid", &pid, "--duration", "3", "--frequency", "199"]);
    let (cpu, wall) = (spinner.cpu_seconds() - before, started.elapsed().as_secs_f64());
    assert!(p.success, "kscope profile failed:\n{}\n{}", p.stdout, p.stderr);
    check_spinner_stacks(&p, Expect::Share { cpu, wall, sampled: 3.0, frequency: 199.0 });
}

/// A process that exits before the profile ends still resolves: its mappings
/// were snapshotted while it ran.
#[test]
fn resolves_a_process_that_exited_before_the_end() {
    let _guard = lock();
    let child = Command::new(spinner_binary()).arg("2.5").stdout(Stdio::piped()).spawn().expect("the spinner starts");
    let pid = child.id();
    // Reaped as soon as it exits, so its /proc entry is gone, not a zombie's;
    // it says how much CPU it used.
    let reaper = std::thread::spawn(move || child.wait_with_output());
    let p = profile("exited", &["--pid", &pid.to_string(), "--duration", "6s", "--frequency", "199"]);
    let out = reaper.join().unwrap().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let cpu_ms: f64 = stdout.trim().strip_prefix("cpu_ms=").and_then(|n| n.parse().ok()).expect("cpu_ms=N");
    assert!(p.success, "kscope profile failed:\n{}\n{}", p.stdout, p.stderr);
    assert!(
        p.stderr.contains("every profiled process exited"),
        "sampling stops when the process is gone:\n{}",
        p.stderr
    );
    check_spinner_stacks(&p, Expect::AtMost { cpu: cpu_ms / 1000.0, frequency: 199.0 });
}

#[test]
fn profiles_every_process() {
    let _guard = lock();
    let spinner = Spinner::start(60.0);
    // Let it get going before sampling starts.
    std::thread::sleep(Duration::from_millis(200));
    let (before, started) = (spinner.cpu_seconds(), std::time::Instant::now());
    let p = profile("all", &["--duration", "2s", "--frequency", "199"]);
    let (cpu, wall) = (spinner.cpu_seconds() - before, started.elapsed().as_secs_f64());
    assert!(p.success, "kscope profile failed:\n{}\n{}", p.stdout, p.stderr);
    let mut roots: BTreeMap<&str, u64> = BTreeMap::new();
    for (stack, count) in &p.stacks {
        *roots.entry(frames(stack)[0]).or_default() += count;
    }
    let mut ranked: Vec<(&str, u64)> = roots.into_iter().collect();
    ranked.sort_by_key(|r| std::cmp::Reverse(r.1));
    let spinner = ranked.iter().find(|(root, _)| *root == SPINNER).map_or(0, |r| r.1);
    // Other builds may share this machine's CPUs: whatever CPU time the
    // spinner got, the system-wide profile must have sampled it in
    // proportion, under its comm.
    let rank = ranked.iter().position(|(root, _)| *root == SPINNER);
    assert!(spinner >= 20, "{SPINNER}: {spinner} samples: {:?}", &ranked[..ranked.len().min(8)]);
    let expect = Expect::Share { cpu, wall, sampled: 2.0, frequency: 199.0 };
    check_sample_count(spinner, expect, "the spinner, profiled with every process");
    let in_target: u64 =
        p.stacks.iter().filter(|(s, _)| s.starts_with(SPINNER) && s.contains(TARGET)).map(|(_, c)| c).sum();
    assert!(in_target as f64 >= 0.8 * spinner as f64, "{in_target} of {spinner} spinner samples in {TARGET}");
    // Idle CPUs are skipped by default.
    assert!(!p.stacks.keys().any(|s| s.starts_with("swapper")), "idle samples were kept");
    eprintln!(
        "system-wide: {} samples, {SPINNER} {spinner} (rank {rank:?}), top roots {:?}",
        p.total(),
        &ranked[..ranked.len().min(3)]
    );
    check_svg(&p.svg, TARGET);
}

#[test]
fn a_missing_pid_is_a_one_line_error() {
    // Above the largest pid_max the kernel allows (2^22), so never a process.
    let p = profile("missing", &["--pid", "4194999", "--duration", "1"]);
    assert!(!p.success, "kscope profile succeeded for a missing pid:\n{}", p.stdout);
    let lines: Vec<&str> = p.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line on stderr: {:?}", p.stderr);
    assert!(lines[0].contains("4194999") && lines[0].contains("no such process"), "{:?}", lines[0]);
    assert!(p.stacks.is_empty() && p.svg.is_empty(), "nothing written for a failed run");
}

#[test]
fn bad_options_are_refused() {
    for args in [
        &["--frequency", "0"][..],
        &["--frequency", "10001"],
        &["--duration", "soon"],
        &["--kernel-only", "--user-only"],
    ] {
        let p = profile("refused", args);
        assert!(!p.success, "kscope profile accepted {args:?}");
        assert!(p.stderr.contains("error"), "{args:?}: {}", p.stderr);
    }
}
