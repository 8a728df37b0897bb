//! What kscope must have reported about a known workload: the exact exec,
//! exit, connect, accept and close records, and a ledger that adds up. The
//! host tests and the QEMU guests apply the same checks.

use std::{fmt::Debug, net::IpAddr};

use kscope_schema::{HookForm, Record, Role, StatsRecord};
use serde::Serialize;

use crate::records::{accepts, close_detail, closes, connects, execs, exits, json, one};

/// A client process the test ran and knows everything about.
#[derive(Debug, Clone)]
pub struct ClientRun {
    pub pid: u32,
    pub ppid: u32,
    pub comm: String,
    pub filename: String,
    pub exit_code: u8,
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
    pub server_pid: u32,
    pub server_comm: String,
    pub server_port: u16,
    /// The loopback address used, 127.0.0.1 or ::1.
    pub addr: IpAddr,
    /// Bytes the client wrote and read on the socket, when the client can
    /// say (curl's `-w %{size_request}` and header + body sizes).
    pub client_sent: Option<u64>,
    pub client_received: Option<u64>,
    pub hook_form: HookForm,
}

/// A connection may close a little after its client exited: the active
/// closer's socket waits in FIN_WAIT2 for the peer's FIN.
const CLOSE_SLACK_NS: u64 = 250_000_000;

struct Problems(Vec<String>);

impl Problems {
    /// `field` of `record` (named as the JSON names it) is `got` and should
    /// be `want`.
    fn expect<G: PartialEq<W> + Debug, W: Debug>(
        &mut self,
        what: &str,
        record: &impl Serialize,
        field: &str,
        got: G,
        want: W,
    ) {
        if got != want {
            self.0.push(format!("{what}: {field} is {got:?} but should be {want:?}; record {}", json(record)));
        }
    }

    fn within(&mut self, what: &str, record: &impl Serialize, field: &str, got: u64, low: u64, high: u64) {
        if !(low..=high).contains(&got) {
            self.0.push(format!("{what}: {field} is {got} but should be in {low}..={high}; record {}", json(record)));
        }
    }

    fn result(self) -> Result<(), String> {
        if self.0.is_empty() { Ok(()) } else { Err(self.0.join("\n")) }
    }
}

/// Checks the whole life of one exchange; every problem is listed.
pub fn check_exchange(records: &[Record<'static>], ex: &Exchange) -> Result<(), String> {
    let mut p = Problems(Vec::new());
    let c = &ex.client;
    let pid = c.pid;
    let form = ex.hook_form;
    let result = (|| -> Result<(), String> {
        let exec = one(execs(records), "process.exec", &format!("pid {pid} {}", c.filename), |r| {
            r.origin.pid == pid && r.filename == c.filename.as_str()
        })?;
        p.expect("exec", exec, "comm", &exec.origin.comm, c.comm.as_str());
        p.expect("exec", exec, "ppid", exec.ppid, c.ppid);
        p.expect("exec", exec, "tid", exec.origin.tid, pid);
        p.expect("exec", exec, "hook_form", exec.origin.hook_form, form);
        p.expect("exec", exec, "filename_truncated", exec.filename_truncated, false);
        if let Some(cgroup) = c.cgroup_id {
            p.expect("exec", exec, "cgroup_id", exec.origin.cgroup_id, cgroup);
        }

        let exit = one(exits(records), "process.exit", &format!("pid {pid}"), |r| r.origin.pid == pid)?;
        p.expect("exit", exit, "comm", &exit.origin.comm, c.comm.as_str());
        p.expect("exit", exit, "exit_code", exit.exit_code, Some(c.exit_code));
        p.expect("exit", exit, "signal", exit.signal, None);
        p.expect("exit", exit, "ppid", exit.ppid, c.ppid);
        p.expect("exit", exit, "hook_form", exit.origin.hook_form, form);
        p.within("exit", exit, "lifetime_ns", exit.lifetime_ns, 1, c.wall_ns);

        let port = ex.server_port;
        let connect = one(connects(records), "tcp.connect", &format!("pid {pid} to port {port}"), |r| {
            r.origin.pid == pid && r.remote_port == port
        })?;
        let client_port = connect.local_port;
        p.expect("connect", connect, "comm", &connect.origin.comm, c.comm.as_str());
        p.expect("connect", connect, "role", connect.role, Some(Role::Client));
        p.expect("connect", connect, "remote_addr", connect.remote_addr, ex.addr);
        p.expect("connect", connect, "local_addr", connect.local_addr, ex.addr);
        p.expect("connect", connect, "hook_form", connect.origin.hook_form, form);
        if let Some(cgroup) = c.cgroup_id {
            p.expect("connect", connect, "cgroup_id", connect.origin.cgroup_id, cgroup);
        }
        if client_port == 0 {
            p.0.push(format!("connect: no local port: {}", json(connect)));
        }

        let accept =
            one(accepts(records), "tcp.accept", &format!("port {port} from client port {client_port}"), |r| {
                r.local_port == port && r.remote_port == client_port
            })?;
        p.expect("accept", accept, "pid", accept.origin.pid, ex.server_pid);
        p.expect("accept", accept, "comm", &accept.origin.comm, ex.server_comm.as_str());
        p.expect("accept", accept, "role", accept.role, Some(Role::Server));
        p.expect("accept", accept, "remote_addr", accept.remote_addr, ex.addr);
        p.expect("accept", accept, "local_addr", accept.local_addr, ex.addr);
        p.expect("accept", accept, "hook_form", accept.origin.hook_form, form);

        let client_close = one(closes(records), "tcp.close", &format!("client port {client_port}"), |r| {
            r.local_port == client_port && r.remote_port == port
        })?;
        let client_moved = close_detail(client_close)?;
        p.expect("client close", client_close, "pid", client_close.origin.pid, pid);
        p.expect("client close", client_close, "comm", &client_close.origin.comm, c.comm.as_str());
        p.expect("client close", client_close, "role", client_close.role, Some(Role::Client));
        p.expect("client close", client_close, "never_established", client_moved.never_established, false);
        p.expect("client close", client_close, "sock_id", client_close.sock_id, connect.sock_id);
        p.within("client close", client_close, "duration_ns", client_moved.duration_ns, 1, c.wall_ns + CLOSE_SLACK_NS);
        if let Some(sent) = ex.client_sent {
            p.expect("client close", client_close, "bytes_sent", client_moved.bytes_sent, sent);
        }
        if let Some(received) = ex.client_received {
            p.expect("client close", client_close, "bytes_received", client_moved.bytes_received, received);
        }
        if client_moved.bytes_sent == 0 {
            p.0.push(format!("client close: sent nothing: {}", json(client_close)));
        }

        let server_close = one(closes(records), "tcp.close", &format!("server port {port} to {client_port}"), |r| {
            r.local_port == port && r.remote_port == client_port
        })?;
        let server_moved = close_detail(server_close)?;
        p.expect("server close", server_close, "pid", server_close.origin.pid, ex.server_pid);
        p.expect("server close", server_close, "role", server_close.role, Some(Role::Server));
        p.expect("server close", server_close, "sock_id", server_close.sock_id, accept.sock_id);
        // What one end sent, the other received: the counts are the kernel's
        // own (less the peer's FIN, which the sensor tells by SOCK_DONE, also
        // when a server closed in FIN_WAIT2 and a timewait sock took the FIN).
        p.expect("server close", server_close, "bytes_received", server_moved.bytes_received, client_moved.bytes_sent);
        p.expect("server close", server_close, "bytes_sent", server_moved.bytes_sent, client_moved.bytes_received);
        p.within("server close", server_close, "duration_ns", server_moved.duration_ns, 1, c.wall_ns + CLOSE_SLACK_NS);

        // A socket's close may follow its process's exit: the active closer
        // waits in FIN_WAIT2 for the peer's FIN after close() returned.
        let (exec_ns, connect_ns) = (exec.origin.time_unix_nano, connect.origin.time_unix_nano);
        for (first, then) in [
            (("exec", exec_ns), ("connect", connect_ns)),
            (("connect", connect_ns), ("exit", exit.origin.time_unix_nano)),
            (("connect", connect_ns), ("client close", client_close.origin.time_unix_nano)),
        ] {
            if first.1 > then.1 {
                p.0.push(format!("{} came after {}", first.0, then.0));
            }
        }
        if accept.origin.time_unix_nano < connect_ns {
            p.0.push("accept came before connect".into());
        }
        Ok(())
    })();
    if let Err(missing) = result {
        p.0.push(missing);
    }
    p.result()
}

/// A connect to a port nobody listens on: one close that never
/// established, and no connect record.
pub fn check_refused(
    records: &[Record<'static>],
    pid: u32,
    port: u16,
    comm: &str,
    hook_form: HookForm,
) -> Result<(), String> {
    let mut p = Problems(Vec::new());
    let close = one(closes(records), "tcp.close", &format!("refused connect of pid {pid}"), |r| {
        r.origin.pid == pid && r.remote_port == port
    });
    match close.and_then(|close| Ok((close, close_detail(close)?))) {
        Ok((close, moved)) => {
            p.expect("refused", close, "never_established", moved.never_established, true);
            p.expect("refused", close, "role", close.role, Some(Role::Client));
            p.expect("refused", close, "comm", &close.origin.comm, comm);
            p.expect("refused", close, "bytes_sent", moved.bytes_sent, 0);
            p.expect("refused", close, "bytes_received", moved.bytes_received, 0);
            p.expect("refused", close, "hook_form", close.origin.hook_form, hook_form);
        }
        Err(e) => p.0.push(e),
    }
    if connects(records).any(|r| r.origin.pid == pid && r.remote_port == port) {
        p.0.push(format!("a refused connect of pid {pid} was reported as connected"));
    }
    p.result()
}

/// The summary's counts add up stage by stage: every event the kernel
/// handed over was read, decoded and written, or counted where it stopped.
pub fn check_ledger(summary: &StatsRecord) -> Result<(), String> {
    let l = &summary.ledger;
    let (read, lost) = (l.read(), l.lost());
    let (decoded, errors, written, dropped, analyzed) =
        (l.decoded, l.decode_errors, l.written, l.queue_dropped, l.analyzed);
    let emitted: u64 = summary.sensors.iter().map(|s| s.emitted).sum();
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
    if summary.l7.segments != analyzed {
        problems.push(format!("{analyzed} data events analyzed but the connection table took {}", summary.l7.segments));
    }
    if summary.lost_events != lost {
        problems.push("lost_events differs from the per-CPU sum".into());
    }
    if read == 0 {
        problems.push("no events at all".into());
    }
    if problems.is_empty() { Ok(()) } else { Err(format!("{}\nsummary: {}", problems.join("\n"), json(summary))) }
}

/// Per-program BPF stats are present for every attached program, with runs
/// and a cost per run.
pub fn check_program_stats(summary: &StatsRecord, programs: &[&str]) -> Result<(), String> {
    if !summary.bpf_stats_enabled {
        return Err(format!("BPF stats not enabled: {}", json(summary)));
    }
    for name in programs {
        let Some(p) = summary.program(name) else {
            return Err(format!("no stats for program {name}: {}", json(summary)));
        };
        let (runs, total) = (p.run_count, p.run_time_ns);
        if runs == 0 || total == 0 || p.avg_ns_per_run != total / runs {
            return Err(format!("program {name} has implausible stats: {}", json(p)));
        }
    }
    Ok(())
}
