//! What kscope must have reported about a known workload: the exact exec,
//! exit, connect, accept and close records, and a ledger that adds up. The
//! host tests and the QEMU guests apply the same checks.

use serde_json::Value;

/// A client process the test ran and knows everything about.
#[derive(Debug, Clone)]
pub struct ClientRun {
    pub pid: u64,
    pub ppid: u64,
    pub comm: String,
    pub filename: String,
    pub exit_code: u64,
    /// The cgroup v2 id the client ran in, when the test placed it.
    pub cgroup_id: Option<u64>,
    /// Wall-clock time around the client's run: an upper bound for its
    /// lifetime and its connection's duration.
    pub wall_ns: u64,
}

/// One request from a client to a server over loopback.
#[derive(Debug, Clone)]
pub struct Exchange {
    pub client: ClientRun,
    pub server_pid: u64,
    pub server_comm: String,
    pub server_port: u64,
    /// The loopback address used, "127.0.0.1" or "::1".
    pub addr: String,
    /// Bytes the client wrote and read on the socket, when the client can
    /// say (curl's `-w %{size_request}` and header + body sizes).
    pub client_sent: Option<u64>,
    pub client_received: Option<u64>,
    pub hook_form: String,
}

/// A connection may close a little after its client exited: the active
/// closer's socket waits in FIN_WAIT2 for the peer's FIN.
const CLOSE_SLACK_NS: u64 = 250_000_000;

fn of_type<'a>(records: &'a [Value], kind: &str) -> impl Iterator<Item = &'a Value> {
    records.iter().filter(move |r| r["type"] == kind)
}

/// Exactly one record matching `pred`, or a message saying what was found.
fn one<'a>(records: &'a [Value], kind: &str, what: &str, pred: impl Fn(&Value) -> bool) -> Result<&'a Value, String> {
    let found: Vec<&Value> = of_type(records, kind).filter(|r| pred(r)).collect();
    match found.as_slice() {
        [one] => Ok(one),
        [] => {
            let seen: Vec<String> = of_type(records, kind).take(8).map(ToString::to_string).collect();
            Err(format!("no {kind} record for {what}; first {kind} records: {}", seen.join("\n")))
        }
        many => Err(format!("{} {kind} records for {what}: {many:?}", many.len())),
    }
}

struct Problems(Vec<String>);

impl Problems {
    fn expect(&mut self, what: &str, record: &Value, field: &str, want: impl Into<Value>) {
        let want = want.into();
        if record[field] != want {
            self.0.push(format!("{what}: {field} is {} but should be {want}; record {record}", record[field]));
        }
    }
    fn within(&mut self, what: &str, record: &Value, field: &str, low: u64, high: u64) {
        match record[field].as_u64() {
            Some(v) if (low..=high).contains(&v) => {}
            _ => self
                .0
                .push(format!("{what}: {field} is {} but should be in {low}..={high}; record {record}", record[field])),
        }
    }
}

fn ns(record: &Value) -> u64 {
    record["time_unix_nano"].as_u64().unwrap_or(0)
}

/// Checks the whole life of one exchange; every problem is listed.
pub fn check_exchange(records: &[Value], ex: &Exchange) -> Result<(), String> {
    let mut p = Problems(Vec::new());
    let c = &ex.client;
    let pid = c.pid;
    let result = (|| -> Result<(), String> {
        let exec = one(records, "process.exec", &format!("pid {pid} {}", c.filename), |r| {
            r["pid"] == pid && r["filename"] == c.filename.as_str()
        })?;
        p.expect("exec", exec, "comm", c.comm.as_str());
        p.expect("exec", exec, "ppid", c.ppid);
        p.expect("exec", exec, "tid", pid);
        p.expect("exec", exec, "hook_form", ex.hook_form.as_str());
        p.expect("exec", exec, "filename_truncated", false);
        if let Some(cgroup) = c.cgroup_id {
            p.expect("exec", exec, "cgroup_id", cgroup);
        }

        let exit = one(records, "process.exit", &format!("pid {pid}"), |r| r["pid"] == pid)?;
        p.expect("exit", exit, "comm", c.comm.as_str());
        p.expect("exit", exit, "exit_code", c.exit_code);
        p.expect("exit", exit, "signal", Value::Null);
        p.expect("exit", exit, "ppid", c.ppid);
        p.expect("exit", exit, "hook_form", ex.hook_form.as_str());
        p.within("exit", exit, "lifetime_ns", 1, c.wall_ns);

        let port = ex.server_port;
        let connect = one(records, "tcp.connect", &format!("pid {pid} to port {port}"), |r| {
            r["pid"] == pid && r["remote_port"] == port
        })?;
        let client_port = connect["local_port"].as_u64().unwrap_or(0);
        p.expect("connect", connect, "comm", c.comm.as_str());
        p.expect("connect", connect, "role", "client");
        p.expect("connect", connect, "remote_addr", ex.addr.as_str());
        p.expect("connect", connect, "local_addr", ex.addr.as_str());
        p.expect("connect", connect, "hook_form", ex.hook_form.as_str());
        if let Some(cgroup) = c.cgroup_id {
            p.expect("connect", connect, "cgroup_id", cgroup);
        }
        if client_port == 0 {
            p.0.push(format!("connect: no local port: {connect}"));
        }

        let accept = one(records, "tcp.accept", &format!("port {port} from client port {client_port}"), |r| {
            r["local_port"] == port && r["remote_port"] == client_port
        })?;
        p.expect("accept", accept, "pid", ex.server_pid);
        p.expect("accept", accept, "comm", ex.server_comm.as_str());
        p.expect("accept", accept, "role", "server");
        p.expect("accept", accept, "remote_addr", ex.addr.as_str());
        p.expect("accept", accept, "local_addr", ex.addr.as_str());
        p.expect("accept", accept, "hook_form", ex.hook_form.as_str());

        let client_close = one(records, "tcp.close", &format!("client port {client_port}"), |r| {
            r["local_port"] == client_port && r["remote_port"] == port
        })?;
        p.expect("client close", client_close, "pid", pid);
        p.expect("client close", client_close, "comm", c.comm.as_str());
        p.expect("client close", client_close, "role", "client");
        p.expect("client close", client_close, "never_established", false);
        p.expect("client close", client_close, "sock_id", connect["sock_id"].clone());
        p.within("client close", client_close, "duration_ns", 1, c.wall_ns + CLOSE_SLACK_NS);
        if let Some(sent) = ex.client_sent {
            p.expect("client close", client_close, "bytes_sent", sent);
        }
        if let Some(received) = ex.client_received {
            p.expect("client close", client_close, "bytes_received", received);
        }
        if client_close["bytes_sent"].as_u64().unwrap_or(0) == 0 {
            p.0.push(format!("client close: sent nothing: {client_close}"));
        }

        let server_close = one(records, "tcp.close", &format!("server port {port} to {client_port}"), |r| {
            r["local_port"] == port && r["remote_port"] == client_port
        })?;
        p.expect("server close", server_close, "pid", ex.server_pid);
        p.expect("server close", server_close, "role", "server");
        p.expect("server close", server_close, "sock_id", accept["sock_id"].clone());
        // What one end sent, the other received: the counts are the kernel's
        // own (less the peer's FIN, which the sensor tells by SOCK_DONE, also
        // when a server closed in FIN_WAIT2 and a timewait sock took the FIN).
        p.expect("server close", server_close, "bytes_received", client_close["bytes_sent"].clone());
        p.expect("server close", server_close, "bytes_sent", client_close["bytes_received"].clone());
        p.within("server close", server_close, "duration_ns", 1, c.wall_ns + CLOSE_SLACK_NS);

        // A socket's close may follow its process's exit: the active closer
        // waits in FIN_WAIT2 for the peer's FIN after close() returned.
        for (first, then) in [
            (("exec", exec), ("connect", connect)),
            (("connect", connect), ("exit", exit)),
            (("connect", connect), ("client close", client_close)),
        ] {
            if ns(first.1) > ns(then.1) {
                p.0.push(format!("{} came after {}", first.0, then.0));
            }
        }
        if ns(accept) < ns(connect) {
            p.0.push("accept came before connect".into());
        }
        Ok(())
    })();
    if let Err(missing) = result {
        p.0.push(missing);
    }
    if p.0.is_empty() { Ok(()) } else { Err(p.0.join("\n")) }
}

/// A connect to a port nobody listens on: one close that never
/// established, and no connect record.
pub fn check_refused(records: &[Value], pid: u64, port: u64, comm: &str, hook_form: &str) -> Result<(), String> {
    let mut p = Problems(Vec::new());
    match one(records, "tcp.close", &format!("refused connect of pid {pid}"), |r| {
        r["pid"] == pid && r["remote_port"] == port
    }) {
        Ok(close) => {
            p.expect("refused", close, "never_established", true);
            p.expect("refused", close, "role", "client");
            p.expect("refused", close, "comm", comm);
            p.expect("refused", close, "bytes_sent", 0);
            p.expect("refused", close, "bytes_received", 0);
            p.expect("refused", close, "hook_form", hook_form);
        }
        Err(e) => p.0.push(e),
    }
    if of_type(records, "tcp.connect").any(|r| r["pid"] == pid && r["remote_port"] == port) {
        p.0.push(format!("a refused connect of pid {pid} was reported as connected"));
    }
    if p.0.is_empty() { Ok(()) } else { Err(p.0.join("\n")) }
}

/// The summary's counts add up stage by stage: every event the kernel
/// handed over was read, decoded and written, or counted where it stopped.
pub fn check_ledger(summary: &Value) -> Result<(), String> {
    let l = &summary["ledger"];
    let sum = |v: &Value| v.as_array().map(|a| a.iter().filter_map(Value::as_u64).sum::<u64>()).unwrap_or(0);
    let read = sum(&l["read_per_cpu"]);
    let lost = sum(&l["lost_per_cpu"]);
    let decoded = l["decoded"].as_u64().unwrap_or(0);
    let errors = l["decode_errors"].as_u64().unwrap_or(0);
    let written = l["written"].as_u64().unwrap_or(0);
    let dropped = l["queue_dropped"].as_u64().unwrap_or(0);
    let analyzed = l["analyzed"].as_u64().unwrap_or(0);
    let emitted: u64 =
        summary["sensors"].as_array().map(|a| a.iter().filter_map(|s| s["emitted"].as_u64()).sum()).unwrap_or(0);
    let mut problems = Vec::new();
    if emitted != read {
        problems.push(format!("kernel emitted {emitted} but {read} were read"));
    }
    if read != decoded + errors {
        problems.push(format!("{read} read but {decoded} decoded + {errors} rejected"));
    }
    if decoded != written + analyzed + dropped {
        problems.push(format!("{decoded} decoded but {written} written + {analyzed} analyzed + {dropped} dropped"));
    }
    // Every data event analyzed reached the connection table.
    if summary["l7"]["segments"].as_u64() != Some(analyzed) {
        problems.push(format!(
            "{analyzed} data events analyzed but the connection table took {}",
            summary["l7"]["segments"]
        ));
    }
    if summary["lost_events"].as_u64() != Some(lost) {
        problems.push("lost_events differs from the per-CPU sum".into());
    }
    if read == 0 {
        problems.push("no events at all".into());
    }
    if problems.is_empty() { Ok(()) } else { Err(format!("{}\nsummary: {summary}", problems.join("\n"))) }
}

/// Per-program BPF stats are present for every attached program, with runs
/// and a cost per run.
pub fn check_program_stats(summary: &Value, programs: &[&str]) -> Result<(), String> {
    if summary["bpf_stats_enabled"] != true {
        return Err(format!("BPF stats not enabled: {summary}"));
    }
    let listed = summary["programs"].as_array().cloned().unwrap_or_default();
    for name in programs {
        let Some(p) = listed.iter().find(|p| p["program"] == *name) else {
            return Err(format!("no stats for program {name}: {summary}"));
        };
        let runs = p["run_count"].as_u64().unwrap_or(0);
        let total = p["run_time_ns"].as_u64().unwrap_or(0);
        if runs == 0 || total == 0 || p["avg_ns_per_run"].as_u64() != Some(total / runs) {
            return Err(format!("program {name} has implausible stats: {p}"));
        }
    }
    Ok(())
}
