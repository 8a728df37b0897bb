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

use std::{
    collections::BTreeSet,
    net::{IpAddr, Ipv4Addr},
    path::PathBuf,
    time::Duration,
};

use kscope_schema::{
    CloseDetail, Direction, DropRecord, ExchangeRecord, Fallback, HookForm, ProbeRecord, Record, Rejection,
    Role::{self, Client, Server},
    SensorsRecord, SockId, StatsRecord, TcpRecord, Transport, parse_line,
};
use kscope_tests::{
    checks::{ClientRun, Exchange, check_exchange, check_ledger, check_program_stats, check_refused},
    records::{
        accepts, close_detail, closes, connects, data_events, drops, exchanges, exits, http, json, one, retransmits,
        summary,
    },
    vm::{GuestFile, guest_kernels, run_in_guest},
    workspace_root,
};

const FORMS: [HookForm; 3] = [HookForm::Kprobe, HookForm::Fentry, HookForm::Tracepoint];
const PORT: u16 = 8080;
const CLOSED_PORT: u16 = 8081;
const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

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

fn num<T: std::str::FromStr>(line: &str, key: &str) -> T {
    field(line, key).parse().unwrap_or_else(|_| panic!("{key} is not a number in {line}"))
}

/// Centiseconds from /proc/uptime ("12.34").
fn uptime_ns(text: &str) -> u64 {
    let (s, cs) = text.split_once('.').unwrap_or((text, "0"));
    s.parse::<u64>().unwrap_or(0) * 1_000_000_000 + cs.parse::<u64>().unwrap_or(0) * 10_000_000
}

fn programs_of<'a>(sensors: &'a SensorsRecord<'static>) -> Vec<&'a str> {
    sensors.sensors.iter().flat_map(|s| &s.programs).map(String::as_str).collect()
}

/// Sources of data events per form and direction: the hooked kernel
/// functions, or the syscalls.
fn data_sources(form: HookForm, direction: Direction) -> &'static [&'static str] {
    match (form, direction) {
        (HookForm::Tracepoint, Direction::Send) => &["write", "writev", "sendto", "sendmsg", "sendmmsg", "sendfile"],
        (HookForm::Tracepoint, Direction::Recv) => &["read", "readv", "recvfrom", "recvmsg", "recvmmsg"],
        (_, Direction::Send) => &["tcp_sendmsg", "tcp_sendpage"],
        (_, Direction::Recv) => &["tcp_recvmsg"],
    }
}

/// The socket data events of one end of a connection: every one on the
/// expected hook form, from the expected process and source; their byte
/// counts per direction.
fn data_totals(
    records: &[Record<'static>],
    (local_port, remote_port): (u16, u16),
    pid: u32,
    form: HookForm,
) -> Result<(u64, u64, BTreeSet<String>), String> {
    let (mut sent, mut received, mut sources) = (0, 0, BTreeSet::new());
    for d in data_events(records).filter(|d| d.local_port == local_port && d.remote_port == remote_port) {
        if d.origin.pid != pid
            || d.origin.hook_form != form
            || d.transport != Transport::Tcp
            || !data_sources(form, d.direction).contains(&&*d.source)
            || d.captured_len > d.total_len
        {
            return Err(format!("unexpected data event (pid {pid}, form {form}): {}", json(d)));
        }
        match d.direction {
            Direction::Send => sent += d.total_len,
            Direction::Recv => received += d.total_len,
        }
        sources.insert(d.source.to_string());
    }
    Ok((sent, received, sources))
}

/// The fields of one end's HTTP exchange that the connection's other
/// records determine.
#[derive(Debug, PartialEq)]
struct HttpFields<'a> {
    protocol: &'a str,
    role: Role,
    method: Option<&'a str>,
    target: &'a str,
    status: Option<u32>,
    request_bytes: u64,
    response_bytes: u64,
    comm: &'a str,
    transport: Transport,
    local_addr: IpAddr,
    local_port: u16,
    peer_addr: IpAddr,
    peer_port: u16,
    http_version: Option<&'a str>,
    host: Option<&'a str>,
    partial: Option<&'a str>,
    hook_form: HookForm,
    sock_id: SockId,
}

impl<'a> HttpFields<'a> {
    fn of(e: &'a ExchangeRecord<'static>) -> Self {
        Self {
            protocol: e.protocol(),
            role: e.role,
            method: e.method.as_deref(),
            target: &e.target,
            status: e.status,
            request_bytes: e.request_bytes,
            response_bytes: e.response_bytes,
            comm: &e.origin.comm,
            transport: e.transport,
            local_addr: e.local_addr,
            local_port: e.local_port,
            peer_addr: e.peer_addr,
            peer_port: e.peer_port,
            http_version: http(e).map(|h| &*h.http_version),
            host: http(e).and_then(|h| h.host.as_deref()),
            partial: e.partial.as_deref(),
            hook_form: e.origin.hook_form,
            sock_id: e.sock_id,
        }
    }
}

/// One wget's request, as both ends' exchange records and data events must
/// show it: a forked httpd child serves it, the byte counts are the
/// kernel's counts of the connection, the socket ids those of the connect
/// and the accept. `sendpage`: the kernel sends httpd's file through
/// `tcp_sendpage` (before 6.5), which the kprobe and fentry forms must show
/// as the body's data event (counted, not captured).
fn check_http(
    records: &[Record<'static>],
    header: &str,
    (client_key, target, status): (&str, &str, u32),
    form: HookForm,
    sendpage: bool,
) -> Result<(), String> {
    let client_pid: u32 = num(header, client_key);
    let httpd: u32 = num(header, "httpd");
    let what = format!("{target} (wget pid {client_pid})");
    let connect =
        one(connects(records), "tcp.connect", &what, |r| r.origin.pid == client_pid && r.remote_port == PORT)?;
    let client_port = connect.local_port;
    let accept = one(accepts(records), "tcp.accept", &what, |r| r.local_port == PORT && r.remote_port == client_port)?;
    let ends = |local: u16, remote: u16| move |r: &TcpRecord| r.local_port == local && r.remote_port == remote;
    let client_close = one(closes(records), "tcp.close", &what, ends(client_port, PORT))?;
    let server_close = one(closes(records), "tcp.close", &what, ends(PORT, client_port))?;
    let (client_moved, server_moved) = (close_detail(client_close)?, close_detail(server_close)?);
    let client = one(exchanges(records), "exchange", &format!("client of {what}"), |r| r.origin.pid == client_pid)?;
    let server = one(exchanges(records), "exchange", &format!("server of {what}"), |r| {
        r.role == Server && r.local_port == PORT && r.peer_port == client_port
    })?;
    // busybox httpd forks a child per connection (no exec): the parent
    // accepts, the child reads the request and answers.
    let server_pid = server.origin.pid;
    one(exits(records), "process.exit", &format!("httpd child {server_pid}"), |r| {
        r.origin.pid == server_pid && r.ppid == httpd && r.origin.comm == "httpd"
    })?;
    let host = format!("127.0.0.1:{PORT}");
    let expected = |role: Role, end: &TcpRecord, moved: CloseDetail, (comm, local_port, peer_port)| {
        let (sent, received) = (moved.bytes_sent, moved.bytes_received);
        let (request_bytes, response_bytes) = if role == Client { (sent, received) } else { (received, sent) };
        HttpFields {
            protocol: "http1",
            role,
            method: Some("GET"),
            target,
            status: Some(status),
            request_bytes,
            response_bytes,
            comm,
            transport: Transport::Tcp,
            local_addr: LOOPBACK,
            local_port,
            peer_addr: LOOPBACK,
            peer_port,
            http_version: Some("1.1"),
            host: Some(&host),
            partial: None,
            hook_form: form,
            sock_id: end.sock_id,
        }
    };
    let mut problems = Vec::new();
    for (record, moved, want) in [
        (client, client_moved, expected(Client, connect, client_moved, ("wget", client_port, PORT))),
        (server, server_moved, expected(Server, accept, server_moved, ("httpd", PORT, client_port))),
    ] {
        let got = HttpFields::of(record);
        if got != want {
            problems.push(format!("exchange\n  got  {got:?}\n  want {want:?}"));
        }
        let duration = record.duration_ns;
        if duration == 0 || duration > moved.duration_ns {
            problems.push(format!("exchange duration {duration} outside the connection's: {}", json(record)));
        }
    }
    // What one end sent, the other received.
    if (client.request_bytes, client.response_bytes) != (server.request_bytes, server.response_bytes) {
        problems.push(format!("the two ends disagree on the bytes:\n  {}\n  {}", json(client), json(server)));
    }
    if client.origin.cgroup_id != num::<u64>(header, "cgroup") {
        problems.push(format!("client exchange not in the test's cgroup: {}", json(client)));
    }
    // The data events behind them: what each end moved, by the expected
    // hooks, adds up to the kernel's byte counts of the connection.
    for (end, pid, close, moved) in [
        ((client_port, PORT), client_pid, client_close, client_moved),
        ((PORT, client_port), server_pid, server_close, server_moved),
    ] {
        match data_totals(records, end, pid, form) {
            Ok((sent, received, sources)) => {
                if (sent, received) != (moved.bytes_sent, moved.bytes_received) {
                    problems.push(format!(
                        "data events of pid {pid} sent {sent} and received {received}, close says {}",
                        json(close)
                    ));
                }
                // httpd sends a file with sendfile: counted, not captured.
                if form == HookForm::Tracepoint && pid == server_pid && status == 200 && !sources.contains("sendfile") {
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

fn check_form(section: &str, form: HookForm, sendpage: bool) -> Result<(), String> {
    let mut lines = section.lines();
    let header = lines.next().unwrap_or_default();
    let (output, stderr) = section.split_once("@@stderr").unwrap_or((section, ""));
    let context = || format!("\n[{form}] header: {header}\nstderr: {stderr}");
    if num::<i32>(header, "kscope") != 0 || num::<i32>(header, "wcode") != 0 {
        return Err(format!("kscope or wget failed{}", context()));
    }
    if !header.ends_with("body=hello from busybox httpd under kscope") {
        return Err(format!("wget got the wrong body{}", context()));
    }
    let records = output
        .lines()
        .skip(1)
        .filter(|l| l.starts_with('{'))
        .map(parse_line)
        .collect::<Result<Vec<Record<'static>>, _>>()
        .map_err(|e| format!("{e}{}", context()))?;
    let Some(Record::Sensors(sensors)) = records.first() else {
        return Err(format!("no sensors record{}", context()));
    };
    for s in &sensors.sensors {
        // The drop sensor has only a tracepoint form: forced onto another,
        // it must stay off and say why.
        if s.sensor == "drops" && form != HookForm::Tracepoint {
            let why = vec![Rejection { form, reason: format!("drops has no {form} form") }];
            if s.chosen.is_some() || s.rejected != why {
                return Err(format!(
                    "drops forced onto {form} should be off, rejected {}: {}{}",
                    json(&why),
                    json(s),
                    context()
                ));
            }
        } else if s.chosen != Some(form) {
            return Err(format!("sensor {} is on {:?} not {form}: {}{}", s.sensor, s.chosen, json(s), context()));
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
        addr: LOOPBACK,
        client_sent: None,
        client_received: None,
        hook_form: form,
    };
    check_exchange(&records, &exchange).map_err(|e| format!("{e}{}", context()))?;
    if num::<i32>(header, "rcode") != 1 {
        return Err(format!("wget to a closed port should exit 1{}", context()));
    }
    check_refused(&records, num(header, "refused"), CLOSED_PORT, "wget", form)
        .map_err(|e| format!("{e}{}", context()))?;
    let summary = summary(&records).ok_or_else(|| format!("no summary{}", context()))?;
    check_ledger(summary).map_err(|e| format!("{e}{}", context()))?;
    if summary.l7.parse_errors != 0 || summary.l7.parser_malformed != 0 {
        return Err(format!("the HTTP parser rejected what it was fed: {}{}", json(&summary.l7), context()));
    }
    if num::<i32>(header, "mcode") != 1 {
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
        .copied()
        .filter(|p| !p.starts_with("tcp_accept"))
        .filter(|p| {
            !p.starts_with("data_")
                || p.starts_with("data_tcp_")
                || ["data_read_", "data_write_", "data_sendfile_"].iter().any(|s| p.starts_with(s))
        })
        .collect();
    // nc's SYN retransmits ran the retransmit sensor's program of this form.
    let retransmit_program = match form {
        HookForm::Tracepoint => "tcp_retransmit_tp",
        HookForm::Fentry => "tcp_retransmit_fentry",
        HookForm::Kprobe => "tcp_retransmit_kprobe",
    };
    if !ran.contains(&retransmit_program) {
        return Err(format!("{retransmit_program} is not among the attached programs {programs:?}{}", context()));
    }
    check_program_stats(summary, &ran).map_err(|e| format!("{e}{}", context()))?;
    check_retransmits(&records, num(header, "nc"), form).map_err(|e| format!("{e}{}", context()))?;
    if form == HookForm::Tracepoint {
        check_drops(&records, summary).map_err(|e| format!("{e}{}", context()))?;
    } else if summary.drops.is_some() || drops(&records).next().is_some() {
        return Err(format!("drop counts without the drop sensor: {}{}", json(&summary.drops), context()));
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
fn check_retransmits(records: &[Record<'static>], nc: u32, form: HookForm) -> Result<(), String> {
    let of_nc: Vec<_> = retransmits(records).filter(|r| r.remote_port == 9000).collect();
    if of_nc.is_empty() {
        let all: Vec<String> = retransmits(records).map(json).collect();
        return Err(format!("no tcp.retransmit record of nc (pid {nc}) to port 9000; all retransmits: {all:?}"));
    }
    // (Its sock_id is 16 hex digits, or the record would not have parsed.)
    for r in &of_nc {
        let stack: Vec<&str> = r.stack.iter().map(|f| function_of(f)).collect();
        let through = stack.iter().any(|f| ["tcp_retransmit_skb", "__tcp_retransmit_skb"].contains(f));
        if r.origin.pid != nc
            || r.origin.comm != "nc"
            || r.origin.hook_form != form
            || r.state != "SYN_SENT"
            || r.remote_addr != IpAddr::V4(Ipv4Addr::new(10, 99, 0, 2))
            || !through
            || !stack.contains(&"tcp_retransmit_timer")
        {
            return Err(format!("unexpected retransmit record of nc (pid {nc}, form {form}): {}", json(r)));
        }
    }
    Ok(())
}

/// The SYNs that found no socket (wget's to the closed port, nc's to
/// 10.99.0.2): counted by reason and location, all of them tracked.
fn check_drops(records: &[Record<'static>], summary: &StatsRecord) -> Result<(), String> {
    let Some(totals) = &summary.drops else {
        return Err(format!("no drops in the summary: {}", json(summary)));
    };
    if totals.untracked != 0 || totals.counted == 0 {
        return Err(format!("summary drops: {}", json(totals)));
    }
    let no_socket = |r: &DropRecord| {
        &*r.reason == "NO_SOCKET" && r.function == "tcp_v4_rcv" && r.protocol == "ipv4" && r.total >= 1
    };
    if !drops(records).any(no_socket) {
        let all: Vec<String> = drops(records).map(json).collect();
        return Err(format!("no NO_SOCKET drop at tcp_v4_rcv among the drop records {all:?}"));
    }
    if !totals.top.iter().any(no_socket) {
        return Err(format!("no NO_SOCKET drop at tcp_v4_rcv in the summary's top drops: {}", json(totals)));
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
        if !section.starts_with(form.name()) {
            failures.push(format!("section order: expected {form}, got {}", section.lines().next().unwrap_or("")));
        } else if let Err(e) =
            check_form(section, *form, sendfile_uses_tcp_sendpage(label) && *form != HookForm::Tracepoint)
        {
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
    use HookForm::{Fentry, Kprobe, Tracepoint};
    let available = |forms: &[HookForm]| -> Vec<Fallback> {
        forms.iter().map(|&form| Fallback { form, unavailable: None }).collect()
    };
    let expected = [
        ("process", Tracepoint, available(&[Fentry, Kprobe])),
        ("tcp", Tracepoint, available(&[Fentry, Kprobe])),
        ("socket_data", Fentry, available(&[Kprobe, Tracepoint])),
        ("retransmit", Tracepoint, available(&[Fentry, Kprobe])),
        ("drops", Tracepoint, available(&[])),
    ];
    match serde_json::from_str::<ProbeRecord>(probe.trim()) {
        Ok(probe) => {
            if probe.sensors.len() != expected.len() {
                failures.push(format!("probe lists {} sensors: {}", probe.sensors.len(), json(&probe)));
            }
            for (s, (name, chosen, fallbacks)) in probe.sensors.iter().zip(&expected) {
                if s.sensor != *name || s.chosen != Some(*chosen) || !s.rejected.is_empty() || s.fallbacks != *fallbacks
                {
                    failures.push(format!("probe: {}", json(s)));
                }
            }
        }
        Err(e) => failures.push(format!("probe output is not a probe record ({e}): {probe}")),
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
