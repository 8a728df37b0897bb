//! kscope in Debian's 6.1 and 6.12 cloud kernels under QEMU: each sensor
//! forced onto kprobe, then fentry, then tracepoint, against busybox's httpd
//! and wget, with the same checks as on the host: the lifecycle records, and
//! the HTTP exchanges (a 200 and a 404) of both ends with the socket data
//! events behind them; TCP retransmits (of a SYN nobody answers) with
//! their kernel stacks on every form, and the packet drops behind them on
//! the tracepoint form, the drop sensor's only one. One boot per kernel
//! runs all three forms; `kscope probe` without a forced form must then
//! choose each sensor's first preference.
//!
//! `KSCOPE_SKIP_VM=1` (`cargo xtask test --no-vm`) skips these, loudly.

#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

use std::{collections::BTreeSet, path::PathBuf, time::Duration};

use kscope_tests::{
    checks::{ClientRun, Exchange, check_exchange, check_ledger, check_program_stats, check_refused},
    vm::{GuestFile, guest_kernels, run_in_guest},
    workspace_root,
};
use serde_json::{Value, json};

const FORMS: [&str; 3] = ["kprobe", "fentry", "tracepoint"];
const PORT: u64 = 8080;
const CLOSED_PORT: u64 = 8081;

/// Runs in the guest. For each form: start kscope, wait until it reports
/// its sensors, start nc towards an address that drops its SYNs, fetch a
/// page and a missing page with wget from a fresh cgroup, try a closed
/// port, let nc's first retransmit happen, stop kscope with SIGINT, print
/// everything between markers.
const SCRIPT: &str = r#"
mkdir -p /www /sys/fs/cgroup/kscope-test
echo "hello from busybox httpd under kscope" > /www/index.html
# Debian's busybox shell runs applets through /proc/self/exe; real files
# named after the applets make the execs the test looks for.
mkdir -p /usr/local/bin
cp /bin/busybox /usr/local/bin/wget
cp /bin/busybox /usr/local/bin/httpd
cp /bin/busybox /usr/local/bin/nc
WGET=/usr/local/bin/wget
# 10.99.0.2 goes out on lo and comes back to a host without that address:
# tcp_v4_rcv drops each SYN (NO_SOCKET) and nc's SYN_SENT socket
# retransmits it after 1 s, 3 s, ...
ip route add 10.99.0.2/32 dev lo
# Hundredths of a second since boot (boot takes well over 1 s, so no
# leading zero turns the number octal).
cs() { tr -d . < /proc/uptime | cut -d' ' -f1; }
# Whether a child runs (kill -0 also succeeds on a zombie not yet waited for).
running() { s=$(cut -d' ' -f3 /proc/$1/stat 2>/dev/null); [ -n "$s" ] && [ "$s" != Z ]; }
CGROUP_ID=$(stat -c %i /sys/fs/cgroup/kscope-test)
for FORM in kprobe fentry tracepoint; do
    kscope run --output json --hook-form $FORM --data-events --stats-interval 1 > /tmp/$FORM.jsonl 2> /tmp/$FORM.err &
    K=$!
    i=0
    until grep -q '"type":"sensors"' /tmp/$FORM.jsonl 2>/dev/null; do
        i=$((i+1)); [ $i -gt 600 ] && break
        kill -0 $K 2>/dev/null || break
        sleep 0.2
    done
    # First, so its retransmits (the first after 1 s) happen while the rest
    # of the traffic runs.
    /usr/local/bin/nc -w 3 10.99.0.2 9000 </dev/null &
    NC=$!
    NC0=$(cs)
    # The server starts after kscope: kretprobe and fexit see an accept only
    # if it began after they attached (README, "Known limits").
    /usr/local/bin/httpd -f -p 127.0.0.1:8080 -h /www &
    HTTPD=$!
    i=0
    until wget -q -O /dev/null http://127.0.0.1:8080/index.html 2>/dev/null || [ $i -gt 50 ]; do i=$((i+1)); sleep 0.1; done
    U0=$(cut -d' ' -f1 /proc/uptime)
    sh -c 'echo $$ > /sys/fs/cgroup/kscope-test/cgroup.procs; exec $0 -q -O /tmp/body http://127.0.0.1:8080/index.html' $WGET &
    W=$!; wait $W; WCODE=$?
    U1=$(cut -d' ' -f1 /proc/uptime)
    sh -c 'echo $$ > /sys/fs/cgroup/kscope-test/cgroup.procs; exec $0 -q -O /tmp/none http://127.0.0.1:8080/missing' $WGET 2>/dev/null &
    M=$!; wait $M; MCODE=$?
    sh -c 'echo $$ > /sys/fs/cgroup/kscope-test/cgroup.procs; exec $0 -q -O /tmp/none http://127.0.0.1:8081/' $WGET &
    R=$!; wait $R; RCODE=$?
    sleep 1
    # nc's first retransmit is due 1 s after its SYN: leave it time to show.
    until [ $(( $(cs) - NC0 )) -ge 160 ]; do sleep 0.1; done
    # A kscope that does not stop fails the test with what its threads were
    # doing (stop=), rather than leaving a guest that never powers off.
    STOP=SIGINT
    for SIG in INT TERM KILL; do
        kill -$SIG $K 2>/dev/null
        i=0
        while running $K && [ $i -lt 100 ]; do i=$((i+1)); sleep 0.2; done
        running $K || break
        STOP=SIG$SIG-ignored
        {
            echo "kscope still runs 20 s after SIG$SIG; its threads:"
            for t in /proc/$K/task/*; do
                echo "$t $(cat $t/comm) state=$(cut -d' ' -f3 $t/stat) wchan=$(cat $t/wchan)"
                cat $t/stack
            done
        } >> /tmp/$FORM.err 2>&1
    done
    wait $K; KCODE=$?
    kill $HTTPD; wait $HTTPD
    kill $NC 2>/dev/null; wait $NC
    echo "@@form $FORM shell=$$ httpd=$HTTPD wget=$W wcode=$WCODE missing=$M mcode=$MCODE refused=$R rcode=$RCODE kscope=$KCODE stop=$STOP nc=$NC u0=$U0 u1=$U1 cgroup=$CGROUP_ID wget_path=$WGET body=$(cat /tmp/body)"
    cat /tmp/$FORM.jsonl
    echo "@@stderr"
    cat /tmp/$FORM.err
done
echo "@@probe"
kscope probe --output json
"#;

fn static_kscope() -> PathBuf {
    let path = std::env::var_os("KSCOPE_STATIC_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target/static/x86_64-unknown-linux-gnu/release/kscope"));
    assert!(path.exists(), "{} does not exist: run the tests with `cargo xtask test`", path.display());
    path
}

/// `key=value` pairs of the `@@form` line.
fn field<'a>(line: &'a str, key: &str) -> &'a str {
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(key).and_then(|v| v.strip_prefix('=')))
        .unwrap_or_else(|| panic!("no {key} in {line}"))
}

fn num(line: &str, key: &str) -> u64 {
    field(line, key).parse().unwrap_or_else(|_| panic!("{key} is not a number in {line}"))
}

/// Centiseconds from /proc/uptime ("12.34").
fn uptime_ns(text: &str) -> u64 {
    let (s, cs) = text.split_once('.').unwrap_or((text, "0"));
    s.parse::<u64>().unwrap_or(0) * 1_000_000_000 + cs.parse::<u64>().unwrap_or(0) * 10_000_000
}

fn programs_of(sensors: &Value) -> Vec<String> {
    sensors["sensors"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|s| s["programs"].as_array().cloned().unwrap_or_default())
        .filter_map(|p| p.as_str().map(str::to_owned))
        .collect()
}

/// Sources of data events per form and direction: the hooked kernel
/// functions, or the syscalls.
fn data_sources(form: &str, direction: &str) -> &'static [&'static str] {
    match (form, direction) {
        ("tracepoint", "send") => &["write", "writev", "sendto", "sendmsg", "sendmmsg", "sendfile"],
        ("tracepoint", _) => &["read", "readv", "recvfrom", "recvmsg", "recvmmsg"],
        (_, "send") => &["tcp_sendmsg", "tcp_sendpage"],
        _ => &["tcp_recvmsg"],
    }
}

/// Exactly one record of `kind` matching `pred`.
fn only<'a>(records: &'a [Value], kind: &str, what: &str, pred: impl Fn(&Value) -> bool) -> Result<&'a Value, String> {
    let found: Vec<&Value> = records.iter().filter(|r| r["type"] == kind && pred(r)).collect();
    match found.as_slice() {
        [one] => Ok(one),
        _ => Err(format!("{} {kind} records for {what}: {found:?}", found.len())),
    }
}

/// The socket data events of one end of a connection: every one on the
/// expected hook form, from the expected process and source; their byte
/// counts per direction.
fn data_totals(
    records: &[Value],
    (local_port, remote_port): (u64, u64),
    pid: u64,
    form: &str,
) -> Result<(u64, u64, BTreeSet<String>), String> {
    let (mut sent, mut received, mut sources) = (0, 0, BTreeSet::new());
    for d in records
        .iter()
        .filter(|r| r["type"] == "socket.data" && r["local_port"] == local_port && r["remote_port"] == remote_port)
    {
        let direction = d["direction"].as_str().unwrap_or_default();
        let source = d["source"].as_str().unwrap_or_default();
        let total = d["total_len"].as_u64().unwrap_or(u64::MAX);
        let captured = d["captured_len"].as_u64().unwrap_or(u64::MAX);
        if d["pid"] != pid
            || d["hook_form"] != form
            || d["transport"] != "tcp"
            || !data_sources(form, direction).contains(&source)
            || captured > total
        {
            return Err(format!("unexpected data event (pid {pid}, form {form}): {d}"));
        }
        match direction {
            "send" => sent += total,
            _ => received += total,
        }
        sources.insert(source.to_owned());
    }
    Ok((sent, received, sources))
}

/// One wget's request, as both ends' exchange records and data events must
/// show it: a forked httpd child serves it, the byte counts are the
/// kernel's counts of the connection, the socket ids those of the connect
/// and the accept. `sendpage`: the kernel sends httpd's file through
/// `tcp_sendpage` (before 6.5), which the kprobe and fentry forms must show
/// as the body's data event (counted, not captured).
fn check_http(
    records: &[Value],
    header: &str,
    (client_key, target, status): (&str, &str, u64),
    form: &str,
    sendpage: bool,
) -> Result<(), String> {
    let client_pid = num(header, client_key);
    let httpd = num(header, "httpd");
    let what = format!("{target} (wget pid {client_pid})");
    let connect = only(records, "tcp.connect", &what, |r| r["pid"] == client_pid && r["remote_port"] == PORT)?;
    let client_port = connect["local_port"].as_u64().unwrap_or(0);
    let accept = only(records, "tcp.accept", &what, |r| r["local_port"] == PORT && r["remote_port"] == client_port)?;
    let ends = |local: u64, remote: u64| move |r: &Value| r["local_port"] == local && r["remote_port"] == remote;
    let client_close = only(records, "tcp.close", &what, ends(client_port, PORT))?;
    let server_close = only(records, "tcp.close", &what, ends(PORT, client_port))?;
    let client = only(records, "exchange", &format!("client of {what}"), |r| r["pid"] == client_pid)?;
    let server = only(records, "exchange", &format!("server of {what}"), |r| {
        r["role"] == "server" && r["local_port"] == PORT && r["peer_port"] == client_port
    })?;
    // busybox httpd forks a child per connection (no exec): the parent
    // accepts, the child reads the request and answers.
    let server_pid = server["pid"].as_u64().unwrap_or(0);
    only(records, "process.exit", &format!("httpd child {server_pid}"), |r| {
        r["pid"] == server_pid && r["ppid"] == httpd && r["comm"] == "httpd"
    })?;
    let expected = |role: &str, end: &Value, close: &Value, (comm, local_port, peer_port): (&str, u64, u64)| {
        let (sent, received) =
            (close["bytes_sent"].as_u64().unwrap_or(0), close["bytes_received"].as_u64().unwrap_or(0));
        let (request, response) = if role == "client" { (sent, received) } else { (received, sent) };
        json!({
            "protocol": "http1", "role": role, "method": "GET", "target": target, "status": status,
            "request_bytes": request, "response_bytes": response, "comm": comm, "transport": "tcp",
            "local_addr": "127.0.0.1", "local_port": local_port, "peer_addr": "127.0.0.1", "peer_port": peer_port,
            "http_version": "1.1", "host": format!("127.0.0.1:{PORT}"), "partial": null, "hook_form": form,
            "sock_id": end["sock_id"],
        })
    };
    let mut problems = Vec::new();
    for (record, close, want) in [
        (client, client_close, expected("client", connect, client_close, ("wget", client_port, PORT))),
        (server, server_close, expected("server", accept, server_close, ("httpd", PORT, client_port))),
    ] {
        let got = Value::Object(
            want.as_object().into_iter().flatten().map(|(k, _)| (k.clone(), record[k].clone())).collect(),
        );
        if got != want {
            problems.push(format!("exchange\n  got  {got}\n  want {want}"));
        }
        let duration = record["duration_ns"].as_u64().unwrap_or(0);
        if duration == 0 || duration > close["duration_ns"].as_u64().unwrap_or(0) {
            problems.push(format!("exchange duration {duration} outside the connection's: {record}"));
        }
    }
    // What one end sent, the other received.
    let bytes = |r: &Value, k: &str| r[k].as_u64().unwrap_or(u64::MAX);
    if bytes(client, "request_bytes") != bytes(server, "request_bytes")
        || bytes(client, "response_bytes") != bytes(server, "response_bytes")
    {
        problems.push(format!("the two ends disagree on the bytes:\n  {client}\n  {server}"));
    }
    if client["cgroup_id"] != num(header, "cgroup") {
        problems.push(format!("client exchange not in the test's cgroup: {client}"));
    }
    // The data events behind them: what each end moved, by the expected
    // hooks, adds up to the kernel's byte counts of the connection.
    for (end, pid, close) in
        [((client_port, PORT), client_pid, client_close), ((PORT, client_port), server_pid, server_close)]
    {
        match data_totals(records, end, pid, form) {
            Ok((sent, received, sources)) => {
                let want = (close["bytes_sent"].as_u64().unwrap_or(0), close["bytes_received"].clone());
                if (sent, json!(received)) != want {
                    problems.push(format!(
                        "data events of pid {pid} sent {sent} and received {received}, close says {close}"
                    ));
                }
                // httpd sends a file with sendfile: counted, not captured.
                if form == "tracepoint" && pid == server_pid && status == 200 && !sources.contains("sendfile") {
                    problems.push(format!("no sendfile among httpd's data events: {sources:?}"));
                }
                if sendpage && pid == server_pid && status == 200 && !sources.contains("tcp_sendpage") {
                    problems.push(format!("no tcp_sendpage among httpd's data events: {sources:?}"));
                }
            }
            Err(e) => problems.push(e),
        }
    }
    if problems.is_empty() { Ok(()) } else { Err(format!("{what}:\n{}", problems.join("\n"))) }
}

fn check_form(section: &str, form: &str, sendpage: bool) -> Result<(), String> {
    let mut lines = section.lines();
    let header = lines.next().unwrap_or_default();
    let (json, stderr) = section.split_once("@@stderr").unwrap_or((section, ""));
    let records: Vec<Value> =
        json.lines().skip(1).filter(|l| l.starts_with('{')).filter_map(|l| serde_json::from_str(l).ok()).collect();
    let context = || format!("\n[{form}] header: {header}\nstderr: {stderr}");
    if num(header, "kscope") != 0 || num(header, "wcode") != 0 {
        return Err(format!("kscope or wget failed{}", context()));
    }
    if !header.ends_with("body=hello from busybox httpd under kscope") {
        return Err(format!("wget got the wrong body{}", context()));
    }
    let sensors =
        records.first().filter(|r| r["type"] == "sensors").ok_or_else(|| format!("no sensors record{}", context()))?;
    for s in sensors["sensors"].as_array().into_iter().flatten() {
        // The drop sensor has only a tracepoint form: forced onto another,
        // it must stay off and say why.
        if s["sensor"] == "drops" && form != "tracepoint" {
            let why = json!([{"form": form, "reason": format!("drops has no {form} form")}]);
            if s["chosen"] != Value::Null || s["rejected"] != why {
                return Err(format!("drops forced onto {form} should be off, rejected {why}: {s}{}", context()));
            }
        } else if s["chosen"] != form {
            return Err(format!("sensor {} is on {} not {form}: {s}{}", s["sensor"], s["chosen"], context()));
        }
    }
    let wall_ns = uptime_ns(field(header, "u1")) - uptime_ns(field(header, "u0")) + 20_000_000;
    let exchange = Exchange {
        client: ClientRun {
            pid: num(header, "wget"),
            ppid: num(header, "shell"),
            comm: "wget".into(),
            filename: field(header, "wget_path").into(),
            exit_code: 0,
            cgroup_id: Some(num(header, "cgroup")),
            wall_ns,
        },
        server_pid: num(header, "httpd"),
        server_comm: "httpd".into(),
        server_port: PORT,
        addr: "127.0.0.1".into(),
        client_sent: None,
        client_received: None,
        hook_form: form.into(),
    };
    check_exchange(&records, &exchange).map_err(|e| format!("{e}{}", context()))?;
    if num(header, "rcode") != 1 {
        return Err(format!("wget to a closed port should exit 1{}", context()));
    }
    check_refused(&records, num(header, "refused"), CLOSED_PORT, "wget", form)
        .map_err(|e| format!("{e}{}", context()))?;
    let summary =
        records.iter().rev().find(|r| r["type"] == "summary").ok_or_else(|| format!("no summary{}", context()))?;
    check_ledger(summary).map_err(|e| format!("{e}{}", context()))?;
    if summary["l7"]["parse_errors"] != 0 || summary["l7"]["parser_malformed"] != 0 {
        return Err(format!("the HTTP parser rejected what it was fed: {}{}", summary["l7"], context()));
    }
    if num(header, "mcode") != 1 {
        return Err(format!("wget of a missing page should exit 1{}", context()));
    }
    for run in [("wget", "/index.html", 200), ("missing", "/missing", 404)] {
        check_http(&records, header, run, form, sendpage).map_err(|e| format!("{e}{}", context()))?;
    }
    let programs = programs_of(sensors);
    // Programs that must have run for this workload: accept4 vs accept
    // depends on the libc (busybox uses accept); of the socket data
    // programs, TCP's (wget and httpd use read, write and sendfile).
    let ran: Vec<&str> = programs
        .iter()
        .map(String::as_str)
        .filter(|p| !p.starts_with("tcp_accept"))
        .filter(|p| {
            !p.starts_with("data_")
                || p.starts_with("data_tcp_")
                || ["data_read_", "data_write_", "data_sendfile_"].iter().any(|s| p.starts_with(s))
        })
        .collect();
    // nc's SYN retransmits ran the retransmit sensor's program of this form.
    let retransmit_program = match form {
        "tracepoint" => "tcp_retransmit_tp",
        "fentry" => "tcp_retransmit_fentry",
        _ => "tcp_retransmit_kprobe",
    };
    if !ran.contains(&retransmit_program) {
        return Err(format!("{retransmit_program} is not among the attached programs {programs:?}{}", context()));
    }
    check_program_stats(summary, &ran).map_err(|e| format!("{e}{}", context()))?;
    check_retransmits(&records, num(header, "nc"), form).map_err(|e| format!("{e}{}", context()))?;
    if form == "tracepoint" {
        check_drops(&records, summary).map_err(|e| format!("{e}{}", context()))?;
    } else if summary.get("drops").is_some_and(|d| !d.is_null()) || records.iter().any(|r| r["type"] == "drop") {
        return Err(format!("drop counts without the drop sensor: {}{}", summary["drops"], context()));
    }
    // Last: a kscope that missed SIGINT but stopped on SIGTERM wrote all of
    // the above, worth checking too.
    if field(header, "stop") != "SIGINT" {
        return Err(format!("kscope did not stop on SIGINT (stop={}){}", field(header, "stop"), context()));
    }
    Ok(())
}

/// A frame's function, without its offset or the suffix of a compiler's
/// clone: `__tcp_retransmit_skb.part.0+0x5a4` (6.1) → `__tcp_retransmit_skb`.
fn function_of(frame: &str) -> &str {
    frame.split(['+', '.', ' ']).next().unwrap_or(frame)
}

/// nc's SYNs to 10.99.0.2, sent again by the retransmit timer: at least one
/// record of nc's socket, on this form, in SYN_SENT, with the kernel stack
/// through `tcp_retransmit_skb` (or `__tcp_retransmit_skb`, where the
/// tracepoint sits) from `tcp_retransmit_timer`.
fn check_retransmits(records: &[Value], nc: u64, form: &str) -> Result<(), String> {
    let all: Vec<&Value> = records.iter().filter(|r| r["type"] == "tcp.retransmit").collect();
    let of_nc: Vec<&Value> = all.iter().copied().filter(|r| r["remote_port"] == 9000).collect();
    if of_nc.is_empty() {
        return Err(format!("no tcp.retransmit record of nc (pid {nc}) to port 9000; all retransmits: {all:?}"));
    }
    for r in &of_nc {
        let stack: Vec<&str> =
            r["stack"].as_array().into_iter().flatten().filter_map(Value::as_str).map(function_of).collect();
        let through = stack.iter().any(|f| ["tcp_retransmit_skb", "__tcp_retransmit_skb"].contains(f));
        if r["pid"] != nc
            || r["comm"] != "nc"
            || r["hook_form"] != form
            || r["state"] != "SYN_SENT"
            || r["remote_addr"] != "10.99.0.2"
            || r["sock_id"].as_str().is_none_or(str::is_empty)
            || !through
            || !stack.contains(&"tcp_retransmit_timer")
        {
            return Err(format!("unexpected retransmit record of nc (pid {nc}, form {form}): {r}"));
        }
    }
    Ok(())
}

/// The SYNs that found no socket (wget's to the closed port, nc's to
/// 10.99.0.2): counted by reason and location, all of them tracked.
fn check_drops(records: &[Value], summary: &Value) -> Result<(), String> {
    let drops = &summary["drops"];
    if drops["untracked"] != 0 || drops["counted"].as_u64().unwrap_or(0) == 0 {
        return Err(format!("summary drops: {drops}"));
    }
    let no_socket = |r: &&Value| {
        r["reason"] == "NO_SOCKET"
            && r["function"] == "tcp_v4_rcv"
            && r["protocol"] == "ipv4"
            && r["total"].as_u64().unwrap_or(0) >= 1
    };
    let records: Vec<&Value> = records.iter().filter(|r| r["type"] == "drop").collect();
    if !records.iter().any(no_socket) {
        return Err(format!("no NO_SOCKET drop at tcp_v4_rcv among the drop records {records:?}"));
    }
    if !drops["top"].as_array().into_iter().flatten().any(|r| no_socket(&r)) {
        return Err(format!("no NO_SOCKET drop at tcp_v4_rcv in the summary's top drops: {drops}"));
    }
    Ok(())
}

/// Before 6.5, sendfile and splice hand pages to TCP through
/// `tcp_sendpage`, not `tcp_sendmsg` (6.5 made them `tcp_sendmsg` with
/// `MSG_SPLICE_PAGES`): the socket_data sensor's kprobe and fentry forms
/// hook it where it exists, and httpd's file must show there.
fn sendfile_uses_tcp_sendpage(label: &str) -> bool {
    label == "debian-6.1"
}

fn run_kernel(label: &str) {
    if std::env::var_os("KSCOPE_SKIP_VM").is_some() {
        println!("vm {label}: SKIPPED (KSCOPE_SKIP_VM is set)");
        return;
    }
    let kernel = guest_kernels().into_iter().find(|k| k.label == label).expect("kernel in the matrix");
    let root = workspace_root();
    let vmlinuz = kernel.fetch(&root.join("target/vm/kernels")).expect("fetch the kernel package");
    let files = [GuestFile { host: static_kscope(), guest: "/sbin/kscope".into() }];
    let run = run_in_guest(&vmlinuz, &files, SCRIPT, &root.join("target/vm/work"), Duration::from_secs(600))
        .expect("the guest boots and runs the script");
    // Kept for whoever reads a failure: the guest's whole output.
    let saved = root.join(format!("target/vm/{label}-output.txt"));
    let _ = std::fs::write(&saved, &run.output);
    let mut failures = Vec::new();
    let (forms, probe) = run.output.split_once("@@probe").unwrap_or((&run.output, ""));
    let sections: Vec<&str> = forms.split("@@form ").skip(1).collect();
    for (form, section) in FORMS.iter().zip(&sections) {
        if !section.starts_with(form) {
            failures.push(format!("section order: expected {form}, got {}", section.lines().next().unwrap_or("")));
        } else if let Err(e) = check_form(section, form, sendfile_uses_tcp_sendpage(label) && *form != "tracepoint") {
            failures.push(e);
        }
    }
    if sections.len() != FORMS.len() {
        failures.push(format!("{} of {} forms ran; output:\n{}", sections.len(), FORMS.len(), run.output));
    }
    // Without a forced form every sensor takes its first preference
    // (tracepoint for process, tcp and retransmit, fentry for socket_data),
    // and probe finds the other two forms available behind it; drops has
    // no other form.
    let available = |a: &str, b: &str| json!([{"form": a, "unavailable": null}, {"form": b, "unavailable": null}]);
    let expected = [
        ("process", "tracepoint", available("fentry", "kprobe")),
        ("tcp", "tracepoint", available("fentry", "kprobe")),
        ("socket_data", "fentry", available("kprobe", "tracepoint")),
        ("retransmit", "tracepoint", available("fentry", "kprobe")),
        ("drops", "tracepoint", json!([])),
    ];
    match serde_json::from_str::<Value>(probe.trim()) {
        Ok(probe) => {
            let sensors = probe["sensors"].as_array().cloned().unwrap_or_default();
            if sensors.len() != expected.len() {
                failures.push(format!("probe lists {} sensors: {probe}", sensors.len()));
            }
            for (s, (name, chosen, fallbacks)) in sensors.iter().zip(&expected) {
                if s["sensor"] != *name
                    || s["chosen"] != *chosen
                    || s["rejected"] != json!([])
                    || s["fallbacks"] != *fallbacks
                {
                    failures.push(format!("probe: {s}"));
                }
            }
        }
        Err(e) => failures.push(format!("probe output is not JSON ({e}): {probe}")),
    }
    let took = run.boot_and_run.as_secs_f64();
    if failures.is_empty() {
        println!("vm {label}: ok ({} forms) in {took:.1}s", FORMS.len());
    } else {
        println!("vm {label}: FAILED in {took:.1}s (guest output in {})", saved.display());
        panic!("{}", failures.join("\n=====\n"));
    }
}

#[test]
fn vm_debian_6_1_all_hook_forms() {
    run_kernel("debian-6.1");
}

#[test]
fn vm_debian_6_12_all_hook_forms() {
    run_kernel("debian-6.12");
}
