//! The retransmit and packet drop sensors on this machine's kernel, against
//! real traffic between two network namespaces joined by a veth pair:
//! - a connection whose data the server's nftables rule drops for a while,
//!   so the client's kernel retransmits it (the kernel here has no netem);
//! - TCP connects and UDP datagrams to closed ports, which the server's
//!   kernel drops with NO_SOCKET.
//!
//! The records must name the connection, its owner and the kernel stack
//! that retransmitted; the drop counts must equal nftables' own counter,
//! and add up to the summary's.

#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

use std::{
    io::{BufRead, BufReader, Write},
    process::{Command, Stdio},
    thread,
    time::Duration,
};

use kscope_schema::{HookForm, Record, RetransmitRecord, Role};
use kscope_tests::{
    agent::{KscopeRun, scrape_metrics},
    checks::check_ledger,
    netns::VethPair,
    records::{drops, exchanges, json, retransmits},
};

const DATA_PORT: u16 = 9099;
const CLOSED_TCP_PORT: u16 = 9098;
const CLOSED_UDP_PORT: u16 = 9097;
const CLOSED_TRIES: u64 = 20;

/// An HTTP/1.1 server for one upload: reads the headers and the body,
/// answers with the body's length.
const SERVER: &str = r#"
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(5)
print("listening", flush=True)
c, _ = s.accept(); buf = b""
while b"\r\n\r\n" not in buf:
    buf += c.recv(65536)
head, body = buf.split(b"\r\n\r\n", 1)
length = int([l.split(b":")[1] for l in head.split(b"\r\n") if l.lower().startswith(b"content-length")][0])
while len(body) < length:
    body += c.recv(65536)
answer = str(len(body)).encode()
c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(answer), answer)); c.close()
"#;

/// Connects, says its port, waits for a line, uploads 20000 bytes in an
/// HTTP/1.1 POST, prints the answer's body.
const CLIENT: &str = r#"
import socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])))
print(s.getsockname()[1], flush=True)
sys.stdin.readline()
s.sendall(b"POST /upload HTTP/1.1\r\nHost: kscope\r\nContent-Length: 20000\r\n\r\n" + b"x" * 20000)
answer = b""
while True:
    d = s.recv(65536)
    if not d: break
    answer += d
print(answer.split(b"\r\n\r\n", 1)[1].decode(), flush=True)
"#;

/// TCP connects and UDP datagrams to closed ports.
const CLOSED: &str = r#"
import socket, sys
host, tcp, udp, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
refused = 0
for _ in range(n):
    try:
        socket.create_connection((host, tcp), timeout=2).close()
    except ConnectionRefusedError:
        refused += 1
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for _ in range(n):
    u.sendto(b"x", (host, udp))
print(refused, flush=True)
"#;

fn python(ns: &str, script: &str, args: &[&str]) -> Command {
    let mut cmd = VethPair::command(ns, "python3");
    cmd.arg("-c").arg(script).args(args);
    cmd
}

fn function(frame: &str) -> &str {
    frame.split(['+', ' ']).next().unwrap_or(frame)
}

/// Sum of the drop records' counts for (reason, function) of IPv4 packets
/// in network namespace `netns`.
fn dropped(records: &[Record<'static>], reason: &str, function: &str, netns: u64) -> u64 {
    drops(records)
        .filter(|r| &*r.reason == reason && r.function == function && r.protocol == "ipv4")
        .filter(|r| u64::from(r.netns) == netns)
        .map(|r| r.count)
        .sum()
}

/// A Prometheus sample's value: the first line of `name{…}` whose labels
/// contain every one of `labels`.
fn sample(body: &str, name: &str, labels: &[&str]) -> Option<f64> {
    body.lines().find_map(|line| {
        let rest = line.strip_prefix(name)?.strip_prefix('{')?;
        let (set, value) = rest.rsplit_once("} ")?;
        labels.iter().all(|l| set.contains(l)).then(|| value.trim().parse().ok())?
    })
}

#[test]
fn retransmits_and_drops_between_namespaces() {
    let pair = VethPair::create("net").unwrap();
    let mut server = python(&pair.server, SERVER, &[&pair.server_addr, &DATA_PORT.to_string()])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut server_out = BufReader::new(server.stdout.take().unwrap());
    let mut line = String::new();
    server_out.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "listening");

    let metrics_port = kscope_tests::nginx::free_port().unwrap();
    let listen = format!("127.0.0.1:{metrics_port}");
    let kscope = KscopeRun::start(&["--stats-interval", "100", "--prometheus-listen", &listen]).unwrap();

    let mut client = python(&pair.client, CLIENT, &[&pair.server_addr, &DATA_PORT.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let client_pid = client.id();
    let mut client_out = BufReader::new(client.stdout.take().unwrap());
    line.clear();
    client_out.read_line(&mut line).unwrap();
    let client_port: u16 = line.trim().parse().unwrap();

    // The connection is up; now its data is lost until the rule goes.
    pair.drop_tcp_to(DATA_PORT).unwrap();
    writeln!(client.stdin.as_mut().unwrap(), "go").unwrap();
    thread::sleep(Duration::from_millis(1500));
    let nft_dropped = pair.dropped().unwrap();
    pair.stop_dropping().unwrap();
    line.clear();
    client_out.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "20000", "the data got through once the rule went");
    assert!(client.wait().unwrap().success());
    assert!(server.wait().unwrap().success());

    let closed = python(
        &pair.client,
        CLOSED,
        &[&pair.server_addr, &CLOSED_TCP_PORT.to_string(), &CLOSED_UDP_PORT.to_string(), &CLOSED_TRIES.to_string()],
    )
    .output()
    .unwrap();
    assert_eq!(String::from_utf8_lossy(&closed.stdout).trim(), CLOSED_TRIES.to_string(), "every connect refused");

    // Drops are read once a second.
    thread::sleep(Duration::from_millis(1500));
    let (status, body) = scrape_metrics(metrics_port).unwrap();
    let run = kscope.stop().unwrap();
    assert_eq!(run.exit_code, Some(0), "{}", run.stderr);
    let records = &run.records;

    // Retransmits: the client's connection, named by its owner, with the
    // stack of the timer that sent the data again.
    let retransmits: Vec<&RetransmitRecord> =
        retransmits(records).filter(|r| r.local_port == client_port && r.remote_port == DATA_PORT).collect();
    assert!(!retransmits.is_empty(), "no retransmit of port {client_port}: {records:?}");
    assert!(nft_dropped >= 2, "the rule dropped the data and at least one retransmit: {nft_dropped}");
    let mut timer = 0;
    for r in &retransmits {
        let shown = json(r);
        assert_eq!(r.origin.pid, client_pid, "{shown}");
        assert_eq!(r.origin.comm, "python3", "{shown}");
        assert_eq!(r.origin.hook_form, HookForm::Tracepoint, "{shown}");
        assert_eq!(r.local_addr.to_string(), pair.client_addr, "{shown}");
        assert_eq!(r.remote_addr.to_string(), pair.server_addr, "{shown}");
        assert!(["ESTABLISHED", "FIN_WAIT1"].contains(&&*r.state), "{shown}");
        let stack: Vec<&str> = r.stack.iter().map(|f| function(f)).collect();
        assert!(stack.contains(&"tcp_retransmit_skb"), "{shown}");
        assert!(!stack.contains(&"[unknown]"), "every frame resolves: {shown}");
        timer += usize::from(stack.contains(&"tcp_retransmit_timer"));
    }
    assert!(timer >= 1, "a retransmit timed out (tcp_retransmit_timer): {retransmits:?}");
    // The upload's exchange, as the client saw it, carries them; the
    // server's end retransmitted nothing.
    let exchange = |role: Role, local_port: u16| {
        exchanges(records)
            .find(|e| e.role == role && e.local_port == local_port)
            .unwrap_or_else(|| panic!("no {role:?} exchange: {records:?}"))
    };
    let client_exchange = exchange(Role::Client, client_port);
    assert_eq!(client_exchange.target, "/upload", "{}", json(client_exchange));
    assert_eq!(client_exchange.status, Some(200), "{}", json(client_exchange));
    assert_eq!(client_exchange.tcp_retransmits as usize, retransmits.len(), "{}", json(client_exchange));
    let server_exchange = exchange(Role::Server, DATA_PORT);
    assert_eq!(server_exchange.tcp_retransmits, 0, "{}", json(server_exchange));

    // Drops in the server's namespace, nobody else's: nftables' own count,
    // and one per connect and per datagram to the closed ports.
    let server_ns = VethPair::inode(&pair.server).unwrap();
    assert_eq!(dropped(records, "NETFILTER_DROP", "nft_do_chain", server_ns), nft_dropped, "{records:?}");
    assert_eq!(dropped(records, "NO_SOCKET", "tcp_v4_rcv", server_ns), CLOSED_TRIES, "{records:?}");
    assert_eq!(dropped(records, "NO_SOCKET", "__udp4_lib_rcv", server_ns), CLOSED_TRIES, "{records:?}");
    for r in drops(records) {
        assert!(r.count >= 1 && r.count <= r.total, "{}", json(r));
        assert_eq!(r.function, function(&r.location), "{}", json(r));
    }

    // The counts add up: every drop the kernel counted is in a record.
    let summary = run.summary().unwrap();
    check_ledger(summary).unwrap();
    let drops_summary = summary.drops.as_ref().unwrap_or_else(|| panic!("no drops in the summary: {}", json(summary)));
    let recorded: u64 = drops(records).map(|r| r.count).sum();
    assert_eq!(drops_summary.counted, recorded, "{}", json(drops_summary));
    assert_eq!(drops_summary.untracked, 0);
    assert!(
        drops_summary.top.iter().any(|t| &*t.reason == "NO_SOCKET" && t.function == "tcp_v4_rcv"),
        "summary top: {}",
        json(drops_summary)
    );
    let retransmit_sensor = summary.sensor("retransmit");
    assert!(retransmit_sensor.unwrap().emitted >= retransmits.len() as u64);

    // And as metrics: the client's retransmits on its resource, drops on kscope's.
    assert_eq!(status, "HTTP/1.1 200 OK");
    let rtx = sample(&body, "kscope_tcp_retransmits_total", &[]).unwrap_or(0.0);
    assert!(rtx >= 1.0, "{body}");
    let nft = sample(
        &body,
        "kscope_network_packet_drops_total",
        &[
            "kscope_drop_reason=\"NETFILTER_DROP\"",
            "kscope_drop_location=\"nft_do_chain\"",
            "kscope_drop_protocol=\"ipv4\"",
            &format!("kscope_network_namespace=\"{server_ns}\""),
        ],
    );
    assert_eq!(nft, Some(nft_dropped as f64), "{body}");
}
