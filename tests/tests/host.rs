//! kscope on this machine's kernel, against real nginx and curl. The kernel
//! here has no kprobes and refuses fentry, so every sensor runs on its
//! tracepoint form; the same checks run on kprobe and fentry in the QEMU
//! guests (tests/tests/vm.rs).

#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

use std::{
    collections::BTreeSet,
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::Mutex,
    thread,
    time::{Duration, Instant},
};

use kscope_schema::{HookForm, ProbeRecord, SensorsRecord};
use kscope_tests::{
    agent::{KscopeRun, kscope_binary, send_signal},
    checks::{ClientRun, Exchange, check_exchange, check_ledger, check_program_stats, check_refused},
    nginx::Nginx,
    records::{execs, json, stats},
};
use serde_json::Value;

/// The tests attach to the same kernel hooks; one at a time keeps each
/// run's records its own.
static KERNEL: Mutex<()> = Mutex::new(());

fn free_port() -> u16 {
    kscope_tests::nginx::free_port().expect("a free port")
}

/// The one nginx worker, which accepts the connections.
fn worker_pid(nginx: &Nginx) -> u32 {
    let workers = nginx.worker_pids();
    assert_eq!(workers.len(), 1, "one nginx worker: {workers:?}");
    u32::try_from(workers[0]).unwrap()
}

fn start_nginx() -> Nginx {
    Nginx::start(&std::env::temp_dir(), "hello from nginx under kscope\n").expect("nginx starts")
}

/// A cgroup v2 group of the test's own, so the records' cgroup id can be
/// checked against the group's inode number.
struct Cgroup {
    path: PathBuf,
}

impl Cgroup {
    fn create(name: &str) -> Self {
        let mounts = std::fs::read_to_string("/proc/mounts").expect("/proc/mounts");
        let root = mounts
            .lines()
            .find_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                (f.get(2) == Some(&"cgroup2")).then(|| PathBuf::from(f[1]))
            })
            .expect("a cgroup2 mount");
        let path = root.join(format!("{name}-{}", std::process::id()));
        let _ = std::fs::create_dir(&path);
        Self { path }
    }

    fn id(&self) -> u64 {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(&self.path).expect("cgroup dir").ino()
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.path);
    }
}

struct CurlRun {
    pid: u32,
    exit_code: u8,
    wall_ns: u64,
    stdout: String,
}

/// Runs curl in `cgroup` (moved there before exec, so exec already counts).
fn curl(cgroup: &Cgroup, args: &[&str]) -> CurlRun {
    let procs = cgroup.path.join("cgroup.procs");
    let mut cmd = Command::new("curl");
    cmd.args(args).stdout(Stdio::piped()).stderr(Stdio::null());
    // SAFETY: between fork and exec only async-signal-safe calls: open,
    // write, close (std::fs would allocate; done with raw libc-free syscalls
    // through std's File is not guaranteed safe), so the path is prepared
    // beforehand and written with a plain write.
    let procs_c = std::ffi::CString::new(procs.as_os_str().as_encoded_bytes()).expect("path");
    unsafe {
        cmd.pre_exec(move || {
            let fd = open(procs_c.as_ptr(), 1);
            if fd < 0 {
                return Err(std::io::Error::last_os_error());
            }
            let ok = write(fd, b"0".as_ptr(), 1) == 1;
            close(fd);
            if ok { Ok(()) } else { Err(std::io::Error::last_os_error()) }
        });
    }
    let started = Instant::now();
    let child = cmd.spawn().expect("curl");
    let pid = child.id();
    let out = child.wait_with_output().expect("curl output");
    let wall_ns = started.elapsed().as_nanos() as u64;
    CurlRun {
        pid,
        exit_code: out.status.code().and_then(|c| u8::try_from(c).ok()).unwrap_or(255),
        wall_ns,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
    }
}

unsafe extern "C" {
    fn open(path: *const std::ffi::c_char, flags: i32, ...) -> i32;
    fn write(fd: i32, buf: *const u8, n: usize) -> isize;
    fn close(fd: i32) -> i32;
}

fn hook_forms<'a>(sensors: &'a SensorsRecord<'static>) -> Vec<(&'a str, Option<HookForm>)> {
    sensors.sensors.iter().map(|s| (&*s.sensor, s.chosen)).collect()
}

#[test]
fn tracepoint_forms_report_nginx_and_curl_exactly() {
    let _kernel = KERNEL.lock().unwrap_or_else(|e| e.into_inner());
    let nginx = start_nginx();
    let cgroup = Cgroup::create("kscope-test-curl");
    let kscope = KscopeRun::start(&["--stats-interval", "1"]).expect("kscope starts");
    assert_eq!(
        hook_forms(kscope.sensors()),
        ["process", "tcp", "socket_data", "retransmit", "drops"].map(|s| (s, Some(HookForm::Tracepoint)))
    );
    // Tracepoint is the process and tcp sensors' first choice: nothing
    // better was rejected. Socket data prefers fentry and kprobe, which
    // this kernel lacks.
    for sensor in &kscope.sensors().sensors {
        let rejected: Vec<HookForm> = sensor.rejected.iter().map(|r| r.form).collect();
        let expected: &[HookForm] =
            if sensor.sensor == "socket_data" { &[HookForm::Fentry, HookForm::Kprobe] } else { &[] };
        assert_eq!(rejected, expected, "{}", json(sensor));
    }

    let url = format!("http://127.0.0.1:{}/index.html", nginx.port);
    let ok = curl(&cgroup, &["-s", "-w", "\n%{size_request} %{size_header} %{size_download}", &url]);
    assert_eq!(ok.exit_code, 0);
    let (body, sizes) = ok.stdout.rsplit_once('\n').expect("curl -w line");
    assert_eq!(body, "hello from nginx under kscope\n");
    let sizes: Vec<u64> = sizes.split(' ').map(|s| s.parse().expect("size")).collect();

    let closed_port = free_port();
    let refused = curl(&cgroup, &["-s", &format!("http://127.0.0.1:{closed_port}/")]);
    assert_eq!(refused.exit_code, 7, "curl: couldn't connect");

    let missing = curl(&cgroup, &["-s", "-f", &format!("http://127.0.0.1:{}/missing", nginx.port)]);
    assert_eq!(missing.exit_code, 22, "curl -f on a 404");

    let v6 = curl(
        &cgroup,
        &[
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{size_request} %{size_header} %{size_download}",
            &format!("http://[::1]:{}/index.html", nginx.port),
        ],
    );
    assert_eq!(v6.exit_code, 0);
    let v6_sizes: Vec<u64> = v6.stdout.split(' ').map(|s| s.parse().expect("size")).collect();

    thread::sleep(Duration::from_millis(1500));
    let finished = kscope.stop().expect("kscope stops");
    assert_eq!(finished.exit_code, Some(0), "stderr: {}", finished.stderr);
    let records = &finished.records;

    let exchange = |run: &CurlRun, addr: &str, sent: Option<u64>, received: Option<u64>| Exchange {
        client: ClientRun {
            pid: run.pid,
            ppid: std::process::id(),
            comm: "curl".into(),
            filename: "/usr/bin/curl".into(),
            exit_code: run.exit_code,
            cgroup_id: Some(cgroup.id()),
            wall_ns: run.wall_ns,
        },
        server_pid: worker_pid(&nginx),
        server_comm: "nginx".into(),
        server_port: nginx.port,
        addr: addr.parse().unwrap(),
        client_sent: sent,
        client_received: received,
        hook_form: HookForm::Tracepoint,
    };
    let errors: Vec<String> = [
        check_exchange(records, &exchange(&ok, "127.0.0.1", Some(sizes[0]), Some(sizes[1] + sizes[2]))),
        check_exchange(records, &exchange(&missing, "127.0.0.1", None, None)),
        check_exchange(records, &exchange(&v6, "::1", Some(v6_sizes[0]), Some(v6_sizes[1] + v6_sizes[2]))),
        check_refused(records, refused.pid, closed_port, "curl", HookForm::Tracepoint),
    ]
    .into_iter()
    .filter_map(Result::err)
    .collect();
    assert!(errors.is_empty(), "{}", errors.join("\n---\n"));

    // Periodic stats while running, and a summary whose counts add up.
    assert!(stats(records).count() >= 1);
    let summary = finished.summary().expect("a summary record at exit");
    check_ledger(summary).unwrap();
    check_program_stats(summary, &["process_exec_tp", "process_exit_tp", "tcp_state_tp", "tcp_accept4_tp"]).unwrap();
    assert_eq!(summary.lost_events, 0);
}

/// Ids of the loaded BPF programs or maps (`kind` is "prog" or "map").
fn bpf_ids(kind: &str) -> BTreeSet<u64> {
    let out = Command::new("bpftool").args([kind, "show", "--json"]).output().expect("bpftool");
    let list: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    list.as_array().map(|a| a.iter().filter_map(|p| p["id"].as_u64()).collect()).unwrap_or_default()
}

#[test]
fn sigkill_leaves_no_program_or_map_behind() {
    let _kernel = KERNEL.lock().unwrap_or_else(|e| e.into_inner());
    let before = (bpf_ids("prog"), bpf_ids("map"));
    let kscope = KscopeRun::start(&[]).expect("kscope starts");
    let ours = (
        bpf_ids("prog").difference(&before.0).copied().collect::<BTreeSet<_>>(),
        bpf_ids("map").difference(&before.1).copied().collect::<BTreeSet<_>>(),
    );
    // Both sensors' tracepoint programs (5) and the maps they share.
    assert!(ours.0.len() >= 5 && ours.1.len() >= 5, "kscope's programs and maps are loaded: {ours:?}");
    kscope.kill().expect("SIGKILL");
    // The kernel frees them once the last fd closes, a little later.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left: (Vec<u64>, Vec<u64>) = (
            bpf_ids("prog").intersection(&ours.0).copied().collect(),
            bpf_ids("map").intersection(&ours.1).copied().collect(),
        );
        if left.0.is_empty() && left.1.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "left behind after SIGKILL: programs {:?}, maps {:?}", left.0, left.1);
        thread::sleep(Duration::from_millis(100));
    }
    assert!(!Path::new("/sys/fs/bpf/kscope").exists(), "kscope pins nothing");
}

#[test]
fn probe_names_each_rejected_form_and_its_reason() {
    let _kernel = KERNEL.lock().unwrap_or_else(|e| e.into_inner());
    let out = Command::new(kscope_binary().unwrap()).args(["probe"]).output().expect("kscope probe");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}\n{}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("kernel "), "{text}");
    let table = lines.iter().position(|l| *l == "kernel functions hooked by kprobe and fentry forms:").expect("{text}");
    assert_eq!(
        lines[1..table],
        [
            "process      tracepoint (process exec and exit)",
            "             fallback fentry: unavailable: fexit:bprm_execve: EPERM from BPF_PROG_LOAD",
            "             fallback kprobe: unavailable: CONFIG_KPROBES not set (no kprobe PMU at /sys/bus/event_source/devices/kprobe)",
            "tcp          tracepoint (TCP connect, accept and close)",
            "             fallback fentry: unavailable: fentry:tcp_connect: EPERM from BPF_PROG_LOAD",
            "             fallback kprobe: unavailable: CONFIG_KPROBES not set (no kprobe PMU at /sys/bus/event_source/devices/kprobe)",
            "socket_data  tracepoint (leading bytes of TCP and UDP sends and receives)",
            "             rejected fentry: fentry:tcp_sendmsg: EPERM from BPF_PROG_LOAD",
            "             rejected kprobe: CONFIG_KPROBES not set (no kprobe PMU at /sys/bus/event_source/devices/kprobe)",
            "retransmit   tracepoint (TCP retransmits with the kernel stack)",
            "             fallback fentry: unavailable: fentry:tcp_retransmit_skb: EPERM from BPF_PROG_LOAD",
            "             fallback kprobe: unavailable: CONFIG_KPROBES not set (no kprobe PMU at /sys/bus/event_source/devices/kprobe)",
            "drops        tracepoint (packet drops by reason and kernel location)",
        ],
        "{text}"
    );
    // Each hooked function's names, as /proc/kallsyms itself lists them:
    // the name and its compiler clones (`name.isra.0`, `name.cold`, ...).
    let kallsyms = std::fs::read_to_string("/proc/kallsyms").unwrap();
    let rows = &lines[table + 1..];
    let functions: Vec<&str> = rows.iter().map(|r| r.split_whitespace().next().unwrap()).collect();
    for f in ["tcp_connect", "tcp_retransmit_skb", "tcp_sendmsg", "tcp_sendpage", "bprm_execve", "do_exit"] {
        assert!(functions.contains(&f), "{f} in {text}");
    }
    for (row, function) in rows.iter().zip(&functions) {
        let mut names: Vec<&str> = kallsyms
            .lines()
            .filter_map(|l| {
                let mut f = l.split_whitespace();
                let (_, kind, name) = (f.next()?, f.next()?, f.next()?);
                let clone = name.strip_prefix(function).and_then(|rest| rest.strip_prefix('.')).is_some_and(|rest| {
                    ["isra", "constprop", "part", "cold", "lto_priv", "localalias", "llvm"]
                        .iter()
                        .any(|w| rest.starts_with(w))
                });
                ("Tt".contains(kind) && (name == *function || clone)).then_some(name)
            })
            .collect();
        names.dedup();
        // The plain name first, then the clones in kallsyms order.
        names.sort_by_key(|n| n != function);
        let expected = match names.as_slice() {
            [] => "not in kallsyms (inlined or absent)".to_owned(),
            [only] if only == function => "in kallsyms".to_owned(),
            names => format!("in kallsyms as {}", names.join(", ")),
        };
        let rest = row.trim_start().strip_prefix(function).unwrap().trim_start();
        assert!(rest.starts_with(&format!("{expected};")), "{row}: expected {expected}");
        // Every function is in BTF here except those the kernel lacks.
        assert_eq!(rest.contains("; in BTF"), !names.is_empty(), "{row}");
    }
}

#[test]
fn forced_form_that_cannot_run_fails_with_the_reason() {
    let _kernel = KERNEL.lock().unwrap_or_else(|e| e.into_inner());
    let out = Command::new(kscope_binary().unwrap())
        .args(["run", "--hook-form", "kprobe", "--duration", "1"])
        .output()
        .expect("kscope run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("rejected kprobe: CONFIG_KPROBES not set"), "{stderr}");
    assert!(!stderr.contains("rejected fentry"), "only the forced form is tried: {stderr}");
    assert!(stderr.lines().last().unwrap_or("").starts_with("error: no sensor could start on kernel"), "{stderr}");
}

#[test]
fn unprivileged_run_names_the_missing_capabilities() {
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all"])
        .arg(kscope_binary().unwrap())
        .args(["run"])
        .output()
        .expect("setpriv");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(stderr.starts_with("error: kscope needs CAP_BPF and CAP_PERFMON to load eBPF programs"), "{stderr}");
}

#[test]
fn unknown_option_is_a_usage_error() {
    let out = Command::new(kscope_binary().unwrap()).args(["run", "--no-such-flag"]).output().expect("kscope");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.starts_with("error: unexpected argument '--no-such-flag' found"), "{stderr}");
}

#[test]
fn unmounted_tracefs_is_mounted_for_the_run() {
    let _kernel = KERNEL.lock().unwrap_or_else(|e| e.into_inner());
    // In a private mount namespace, so the machine's own mount is untouched.
    let script = format!(
        "umount /sys/kernel/tracing && ! test -e /sys/kernel/tracing/events && {} probe --output json",
        kscope_binary().unwrap().display()
    );
    let out = Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c", &script])
        .output()
        .expect("unshare");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let record: ProbeRecord = serde_json::from_str(stdout.trim()).expect("a probe record");
    let chosen = |i: usize| record.sensors.get(i).and_then(|s| s.chosen);
    assert_eq!(chosen(0), Some(HookForm::Tracepoint), "{}", json(&record));
    assert_eq!(chosen(1), Some(HookForm::Tracepoint), "{}", json(&record));
}

#[test]
fn a_stalled_reader_loses_events_and_says_how_many() {
    let _kernel = KERNEL.lock().unwrap_or_else(|e| e.into_inner());
    // One-page rings fill after a dozen exec events; stopping kscope's
    // process keeps its readers from draining them, so the kernel must
    // refuse events, and the ledger must say so.
    let kscope = KscopeRun::start(&["--buffer-pages", "1"]).expect("kscope starts");
    send_signal(kscope.pid(), 19); // SIGSTOP
    for _ in 0..300 {
        let status = Command::new("/bin/true").status().expect("/bin/true");
        assert!(status.success());
    }
    send_signal(kscope.pid(), 18); // SIGCONT
    thread::sleep(Duration::from_millis(500));
    let finished = kscope.stop().expect("kscope stops");
    let summary = finished.summary().expect("summary");
    let process = summary.sensors.first().unwrap();
    assert_eq!(process.sensor, "process");
    let (refused, emitted) = (process.emit_failed, process.emitted);
    assert!(refused > 0, "nothing was refused: {}", json(summary));
    assert!(emitted + refused >= 600, "300 execs and 300 exits: {}", json(summary));
    // Every refusal the kernel's lost records have reported so far is one
    // the programs counted; the last may still be waiting for the next event
    // on its CPU, so the programs' count is the authority.
    assert!(summary.lost_events <= refused, "{}", json(summary));
    check_ledger(summary).unwrap();
    // The events that did get through are still whole.
    let execs = execs(&finished.records).filter(|r| r.filename == "/bin/true").count();
    assert!(execs > 0 && execs < 300, "{execs} of 300 execs got through");
}

#[test]
fn console_output_is_one_readable_line_per_event() {
    let _kernel = KERNEL.lock().unwrap_or_else(|e| e.into_inner());
    let nginx = start_nginx();
    let mut kscope = Command::new(kscope_binary().unwrap())
        .args(["run", "--duration", "8"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kscope run");
    // The sensor choice goes to stderr once every sensor is attached.
    let mut stderr_lines = std::io::BufRead::lines(std::io::BufReader::new(kscope.stderr.take().unwrap()));
    let mut report = Vec::new();
    for line in stderr_lines.by_ref() {
        let line = line.unwrap();
        let last = line.trim_start().starts_with("socket_data");
        report.push(line);
        if last {
            break;
        }
    }
    let curl = Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{size_request}",
            &format!("http://127.0.0.1:{}/index.html", nginx.port),
        ])
        .stdout(Stdio::piped())
        .spawn()
        .expect("curl");
    let curl_pid = curl.id();
    let curl_out = curl.wait_with_output().expect("curl");
    assert!(curl_out.status.success());
    let request_bytes = String::from_utf8_lossy(&curl_out.stdout).into_owned();
    let out = kscope.wait_with_output().expect("kscope output");
    report.extend(stderr_lines.map_while(Result::ok));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = report.join("\n");
    assert!(out.status.success(), "{stderr}");

    let me = std::process::id();
    let ours: Vec<&str> = stdout.lines().filter(|l| l.contains(&format!("pid={curl_pid} "))).collect();
    let verb = |l: &&str| l.split_whitespace().nth(1).unwrap_or("").to_owned();
    let mut verbs: Vec<String> = ours.iter().map(verb).collect();
    // exec and connect come first; close, exit and the exchange (printed
    // when its response completed, after the reorder window) in any order
    // (the client's socket may close after curl exited, in FIN_WAIT2).
    verbs[2..].sort();
    assert_eq!(verbs, ["exec", "connect", "close", "exit", "http1"], "{stdout}");
    let line = |v: &str| *ours.iter().find(|l| verb(l) == v).unwrap();
    // "HH:MM:SS.mmm verb ..." with the fields people read.
    for line in &ours {
        let time = line.split(' ').next().unwrap();
        assert!(time.len() == 12 && time.as_bytes()[2] == b':' && time.as_bytes()[8] == b'.', "{line}");
    }
    let exec = line("exec");
    assert!(exec.contains(&format!("exec    pid={curl_pid} comm=curl ppid={me} cgroup=")), "{exec}");
    assert!(exec.ends_with(" filename=/usr/bin/curl"), "{exec}");
    assert!(line("connect").ends_with(&format!("-> 127.0.0.1:{} role=client", nginx.port)), "{stdout}");
    let close = line("close");
    assert!(close.contains(&format!(" role=client sent={request_bytes} received=")), "{close}");
    assert!(close.contains(" duration="), "{close}");
    assert!(line("exit").contains(&format!("exit    pid={curl_pid} comm=curl ppid={me} code=0 lifetime=")), "{stdout}");
    // "HH:MM:SS.mmm http1   pid=P comm=curl client A -> B GET /index.html status=200 duration=D req=NB resp=NB"
    let exchange = line("http1");
    assert!(
        exchange.contains(&format!("http1   pid={curl_pid} comm=curl client 127.0.0.1:"))
            && exchange.contains(&format!(" -> 127.0.0.1:{} GET /index.html status=200 duration=", nginx.port))
            && exchange.contains(&format!(" req={request_bytes}B resp=")),
        "{exchange}"
    );
    let accept =
        stdout.lines().find(|l| l.contains(" accept  ") && l.contains(&format!("127.0.0.1:{} ->", nginx.port)));
    assert!(accept.is_some_and(|l| l.contains("comm=nginx") && l.ends_with("role=server")), "{stdout}");
    // The sensor choice and the summary go to stderr, never between events.
    assert!(stderr.starts_with("kscope on kernel "), "{stderr}");
    assert!(stderr.contains("kscope summary: "), "{stderr}");
    assert!(!stdout.contains("kscope summary"), "{stdout}");
}
