//! Requests and responses, as kscope reports them, from real servers and
//! clients on loopback: nginx and curl (HTTP/1.1 and HTTP/2), Python grpcio,
//! dnsmasq and dig. Each test asserts the exact exchange records of both
//! ends against what the client itself reported.

#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

use std::{
    net::{IpAddr, Ipv4Addr},
    process::Command,
    sync::Mutex,
    thread,
    time::{Duration, Instant},
};

use kscope_schema::{
    DnsDetail, ExchangeRecord, HookForm, Record,
    Role::{self, Client, Server},
    Transport,
};
use kscope_tests::{
    agent::{Finished, KscopeRun},
    checks::check_ledger,
    dns::{self, DigAnswer, Dnsmasq},
    grpc::{GrpcServer, grpc_client},
    nginx::{Nginx, NginxOptions},
    records::{self, exchanges, grpc, http, json},
};

/// One kscope at a time: each run's records are its own.
static KERNEL: Mutex<()> = Mutex::new(());

const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// The exchanges process `pid` made or served.
fn exchanges_of<'a>(records: &'a [Record<'static>], pid: u32) -> Vec<&'a ExchangeRecord<'static>> {
    exchanges(records).filter(|e| e.origin.pid == pid).collect()
}

/// (request_bytes, response_bytes): both ends must agree on them.
fn sizes(e: &ExchangeRecord) -> (u64, u64) {
    (e.request_bytes, e.response_bytes)
}

/// What curl said about one transfer (`-w`).
#[derive(Debug)]
struct Transfer {
    status: u32,
    request_bytes: u64,
    response_bytes: u64,
    local_port: u16,
}

const CURL_FORMAT: &str = "%{http_code} %{size_request} %{size_header} %{size_download} %{local_port}\n";

/// Runs curl on `urls` (one connection, kept alive) and returns its pid,
/// each transfer's figures and the wall time.
fn curl(args: &[&str], urls: &[String]) -> (u32, Vec<Transfer>, u64) {
    let mut cmd = Command::new("curl");
    cmd.args(["-s", "-w", CURL_FORMAT]).args(args);
    for url in urls {
        cmd.args(["-o", "/dev/null", url]);
    }
    let started = Instant::now();
    let child = cmd.stdout(std::process::Stdio::piped()).spawn().expect("curl");
    let pid = child.id();
    let out = child.wait_with_output().expect("curl runs");
    let wall = started.elapsed().as_nanos() as u64;
    let text = String::from_utf8_lossy(&out.stdout);
    let transfers = text
        .lines()
        .map(|l| {
            let f: Vec<u64> = l.split(' ').map(|x| x.parse().expect("number")).collect();
            let (status, local_port) = (u32::try_from(f[0]).unwrap(), u16::try_from(f[4]).unwrap());
            Transfer { status, request_bytes: f[1], response_bytes: f[2] + f[3], local_port }
        })
        .collect();
    (pid, transfers, wall)
}

fn worker_pid(nginx: &Nginx) -> u32 {
    let workers = nginx.worker_pids();
    assert_eq!(workers.len(), 1, "one nginx worker: {workers:?}");
    u32::try_from(workers[0]).unwrap()
}

fn stop(kscope: KscopeRun) -> Finished {
    // Past the reorder window, so the last exchanges are out.
    thread::sleep(Duration::from_millis(500));
    let finished = kscope.stop().expect("kscope stops");
    assert_eq!(finished.exit_code, Some(0), "stderr: {}", finished.stderr);
    let summary = finished.summary().expect("summary");
    check_ledger(summary).unwrap();
    assert_eq!(summary.lost_events, 0, "{}", json(summary));
    finished
}

/// The fields of an HTTP/1.1 exchange record that do not depend on timing.
#[derive(Debug, PartialEq)]
struct Http1Fields<'a> {
    protocol: &'a str,
    role: Role,
    method: Option<&'a str>,
    target: &'a str,
    status: Option<u32>,
    request_bytes: u64,
    response_bytes: u64,
    comm: &'a str,
    transport: Transport,
    local_port: u16,
    peer_addr: IpAddr,
    peer_port: u16,
    http_version: Option<&'a str>,
    host: Option<&'a str>,
    partial: Option<&'a str>,
    hook_form: HookForm,
}

impl<'a> Http1Fields<'a> {
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
            local_port: e.local_port,
            peer_addr: e.peer_addr,
            peer_port: e.peer_port,
            http_version: http(e).map(|h| &*h.http_version),
            host: http(e).and_then(|h| h.host.as_deref()),
            partial: e.partial.as_deref(),
            hook_form: e.origin.hook_form,
        }
    }
}

#[test]
fn http1_keep_alive_exchanges_of_nginx_and_curl() {
    let _kernel = KERNEL.lock().unwrap_or_else(|e| e.into_inner());
    let options = NginxOptions { status_locations: true, h2c: false, sendfile: true };
    let nginx = Nginx::start_with(&std::env::temp_dir(), "hello from nginx under kscope\n", options).unwrap();
    let kscope = KscopeRun::start(&[]).expect("kscope starts");
    let base = format!("http://127.0.0.1:{}", nginx.port);
    let paths = ["/index.html?token=hush", "/missing", "/fail", "/created"];
    let urls: Vec<String> = paths.iter().map(|p| format!("{base}{p}")).collect();
    let (pid, transfers, wall) = curl(&["-H", "Authorization: Bearer s3cr3t-t0ken"], &urls);
    assert_eq!(transfers.iter().map(|t| t.status).collect::<Vec<_>>(), vec![200, 404, 500, 201]);
    let run = stop(kscope);
    let records = &run.records;

    let port = nginx.port;
    let host = format!("127.0.0.1:{port}");
    let targets = ["/index.html", "/missing", "/fail", "/created"];
    let expected = |role: Role, comm: &'static str, t: &Transfer, target: &'static str| {
        let (local_port, peer_port) = if role == Client { (t.local_port, port) } else { (port, t.local_port) };
        Http1Fields {
            protocol: "http1",
            role,
            method: Some("GET"),
            target,
            status: Some(t.status),
            request_bytes: t.request_bytes,
            response_bytes: t.response_bytes,
            comm,
            transport: Transport::Tcp,
            local_port,
            peer_addr: LOOPBACK,
            peer_port,
            http_version: Some("1.1"),
            host: Some(&host),
            partial: None,
            hook_form: HookForm::Tracepoint,
        }
    };
    for (role, who, comm) in [(Client, pid, "curl"), (Server, worker_pid(&nginx), "nginx")] {
        let got = exchanges_of(records, who);
        let got_fields: Vec<Http1Fields> = got.iter().map(|e| Http1Fields::of(e)).collect();
        let want: Vec<Http1Fields> =
            transfers.iter().zip(targets).map(|(t, target)| expected(role, comm, t, target)).collect();
        assert_eq!(got_fields, want, "{role:?} exchanges");
        // Keep-alive: requests curl sent from one local port share one
        // connection (nginx may close after an error response, and curl
        // then opens another; its `local_port` above says which). The
        // converse does not hold: the kernel may hand the next connection
        // the memory of the sock just freed, and so the same id.
        for (a, b) in got.iter().zip(got.iter().skip(1)) {
            if a.local_port == b.local_port && a.peer_port == b.peer_port {
                assert_eq!(a.sock_id, b.sock_id, "{}\n{}", json(a), json(b));
            }
        }
        for r in &got {
            let d = r.duration_ns;
            assert!(d > 0 && d < wall, "{role:?} duration {d} outside (0, {wall}): {}", json(r));
        }
    }
    // Query strings and header values stay home: in no field of any line.
    let text = &run.stdout;
    assert!(!text.contains("hush") && !text.contains("s3cr3t"), "a secret was printed");
}

/// Runs nghttp on `urls`, multiplexed on one connection; returns its pid
/// and, per stream as nghttp reported it, (stream id, status, path).
fn nghttp(urls: &[String]) -> (u32, Vec<(u32, u32, String)>) {
    let child = Command::new("nghttp")
        .arg("-ns")
        .args(urls)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("nghttp (Debian's nghttp2-client)");
    let pid = child.id();
    let out = child.wait_with_output().expect("nghttp runs");
    assert!(out.status.success(), "nghttp failed");
    // The `-s` table: "id responseEnd requestStart process code size path".
    let mut streams: Vec<(u32, u32, String)> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let path = f.get(6)?.to_string();
            Some((f.first()?.parse().ok()?, f.get(4)?.parse().ok()?, path))
        })
        .collect();
    streams.sort();
    (pid, streams)
}

/// The fields of an HTTP/2 exchange record the clients can vouch for.
#[derive(Debug, PartialEq)]
struct Http2Fields<'a> {
    protocol: &'a str,
    role: Role,
    method: Option<&'a str>,
    target: &'a str,
    status: Option<u32>,
    http_version: Option<&'a str>,
    host: Option<&'a str>,
    stream_id: Option<u32>,
    partial: Option<&'a str>,
}

impl<'a> Http2Fields<'a> {
    fn of(e: &'a ExchangeRecord<'static>) -> Self {
        Self {
            protocol: e.protocol(),
            role: e.role,
            method: e.method.as_deref(),
            target: &e.target,
            status: e.status,
            http_version: http(e).map(|h| &*h.http_version),
            host: http(e).and_then(|h| h.host.as_deref()),
            stream_id: http(e).and_then(|h| h.stream_id),
            partial: e.partial.as_deref(),
        }
    }

    /// What one end must have seen of `streams`: (stream id, status, path).
    fn wanted(role: Role, host: &'a str, streams: &'a [(u32, u32, String)]) -> Vec<Self> {
        streams
            .iter()
            .map(|(stream, status, target)| Self {
                protocol: "http2",
                role,
                method: Some("GET"),
                target,
                status: Some(*status),
                http_version: Some("2"),
                host: Some(host),
                stream_id: Some(*stream),
                partial: None,
            })
            .collect()
    }
}

#[test]
fn http2_streams_of_nginx_with_curl_and_nghttp() {
    let _kernel = KERNEL.lock().unwrap_or_else(|e| e.into_inner());
    let options = NginxOptions { status_locations: true, h2c: true, sendfile: false };
    let nginx = Nginx::start_with(&std::env::temp_dir(), "hello over h2c\n", options).unwrap();
    let port = nginx.h2c_port.unwrap();
    let kscope = KscopeRun::start(&[]).expect("kscope starts");
    let url = |p: &str| format!("http://127.0.0.1:{port}{p}");
    let (curl_pid, transfers, _) = curl(&["--http2-prior-knowledge"], &[url("/index.html")]);
    assert_eq!(transfers[0].status, 200);
    let (nghttp_pid, streams) = nghttp(&[url("/index.html"), url("/missing"), url("/fail")]);
    assert_eq!(streams.iter().map(|s| s.1).collect::<Vec<_>>(), vec![200, 404, 500], "{streams:?}");
    let run = stop(kscope);
    let records = &run.records;

    let host = format!("127.0.0.1:{port}");
    let want = |role, streams| Http2Fields::wanted(role, &host, streams);
    let curl_streams = vec![(1, 200, "/index.html".to_owned())];
    let client_curl = exchanges_of(records, curl_pid);
    let client_nghttp = exchanges_of(records, nghttp_pid);
    let server = exchanges_of(records, worker_pid(&nginx));
    fn project<'a>(got: &[&'a ExchangeRecord<'static>]) -> Vec<Http2Fields<'a>> {
        got.iter().map(|e| Http2Fields::of(e)).collect()
    }
    assert_eq!(project(&client_curl), want(Client, &curl_streams), "curl's exchanges");
    assert_eq!(project(&client_nghttp), want(Client, &streams), "nghttp's exchanges");
    let mut server_want = want(Server, &curl_streams);
    server_want.extend(want(Server, &streams));
    assert_eq!(project(&server), server_want, "nginx's exchanges");
    // Both ends saw the same frames of each stream.
    let clients: Vec<&ExchangeRecord> = client_curl.iter().chain(&client_nghttp).copied().collect();
    for (c, s) in clients.iter().zip(&server) {
        assert_eq!(sizes(c), sizes(s), "{} / {}", json(c), json(s));
    }
    // A 200's DATA frame carries the body, after two frame headers at least.
    assert!(client_curl[0].response_bytes >= 9 + 9 + "hello over h2c\n".len() as u64);
}

#[test]
fn grpc_unary_streaming_and_failing_calls_of_grpcio() {
    let _kernel = KERNEL.lock().unwrap_or_else(|e| e.into_inner());
    let server = GrpcServer::start().expect("grpcio server");
    let kscope = KscopeRun::start(&[]).expect("kscope starts");
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let run = grpc_client(&server.target(), &["Say:hello", "Count:3", "Fail"], &[("traceparent", traceparent)])
        .expect("grpc client");
    assert!(run.status.success(), "{}", run.stderr);
    let codes: Vec<(&str, usize)> = run.calls.iter().map(|c| (c.code.as_str(), c.messages.len())).collect();
    assert_eq!(codes, vec![("OK", 1), ("OK", 3), ("NOT_FOUND", 0)]);
    assert_eq!(run.calls[2].details.as_deref(), Some("no such thing"));
    let finished = stop(kscope);
    let records = &finished.records;

    let targets = ["Say", "Count", "Fail"].map(|method| format!("kscope.test.Echo/{method}"));
    let want = |role| -> Vec<GrpcFields> {
        [("Say", 0, None, 1, 1), ("Count", 0, None, 3, 3), ("Fail", 5, Some("no such thing"), 5, 0)]
            .into_iter()
            .zip(&targets)
            .map(|((method, status, message, stream, responses), target)| GrpcFields {
                protocol: "grpc",
                role,
                method: Some("POST"),
                target,
                status: Some(status),
                grpc_service: Some("kscope.test.Echo"),
                grpc_method: Some(method),
                grpc_message: message,
                traceparent: Some(traceparent),
                stream_id: Some(stream),
                request_messages: Some(1),
                response_messages: Some(responses),
                partial: None,
                peer_addr: LOOPBACK,
                transport: Transport::Tcp,
            })
            .collect()
    };
    for (role, pid) in [(Client, run.pid), (Server, server.pid())] {
        let got: Vec<GrpcFields> = exchanges_of(records, pid).into_iter().map(GrpcFields::of).collect();
        assert_eq!(got, want(role), "{role:?} exchanges");
    }
    let client = exchanges_of(records, run.pid);
    let server_side = exchanges_of(records, server.pid());
    for (c, s) in client.iter().zip(&server_side) {
        assert_eq!(sizes(c), sizes(s), "{} / {}", json(c), json(s));
        assert_eq!(c.local_port, s.peer_port);
        assert_eq!(s.local_port, server.port);
    }
}

/// The fields of a gRPC exchange record that do not depend on timing or on
/// the connection's ports.
#[derive(Debug, PartialEq)]
struct GrpcFields<'a> {
    protocol: &'a str,
    role: Role,
    method: Option<&'a str>,
    target: &'a str,
    status: Option<u32>,
    grpc_service: Option<&'a str>,
    grpc_method: Option<&'a str>,
    grpc_message: Option<&'a str>,
    traceparent: Option<&'a str>,
    stream_id: Option<u32>,
    request_messages: Option<u32>,
    response_messages: Option<u32>,
    partial: Option<&'a str>,
    peer_addr: IpAddr,
    transport: Transport,
}

impl<'a> GrpcFields<'a> {
    fn of(e: &'a ExchangeRecord<'static>) -> Self {
        let g = grpc(e);
        Self {
            protocol: e.protocol(),
            role: e.role,
            method: e.method.as_deref(),
            target: &e.target,
            status: e.status,
            grpc_service: g.map(|g| &*g.grpc_service),
            grpc_method: g.map(|g| &*g.grpc_method),
            grpc_message: g.and_then(|g| g.grpc_message.as_deref()),
            traceparent: g.and_then(|g| g.traceparent.as_deref()),
            stream_id: g.map(|g| g.stream_id),
            request_messages: g.map(|g| g.request_messages),
            response_messages: g.map(|g| g.response_messages),
            partial: e.partial.as_deref(),
            peer_addr: e.peer_addr,
            transport: e.transport,
        }
    }
}

/// The fields of a DNS exchange record that do not depend on timing or on
/// the connection's ports.
#[derive(Debug, PartialEq)]
struct DnsFields<'a> {
    protocol: &'a str,
    role: Role,
    target: &'a str,
    status: Option<u32>,
    dns: Option<DnsDetail<'a>>,
    transport: Transport,
    partial: Option<&'a str>,
}

impl<'a> DnsFields<'a> {
    fn of(e: &'a ExchangeRecord<'static>) -> Self {
        Self {
            protocol: e.protocol(),
            role: e.role,
            target: &e.target,
            status: e.status,
            dns: records::dns(e).cloned(),
            transport: e.transport,
            partial: e.partial.as_deref(),
        }
    }

    /// What one end must have seen of a query dig made and reported.
    fn wanted(role: Role, answer: &'a DigAnswer, name: &'a str, qtype: &'a str, transport: Transport) -> Self {
        let rcode = answer.rcode.as_deref().unwrap();
        Self {
            protocol: "dns",
            role,
            target: name,
            status: Some(if rcode == "NOERROR" { 0 } else { 3 }),
            dns: Some(DnsDetail {
                dns_id: answer.id.unwrap(),
                dns_type: qtype.into(),
                dns_rcode: Some(rcode.into()),
                dns_answer_count: u16::try_from(answer.records.len()).unwrap(),
                dns_addresses: answer.addresses().into(),
            }),
            transport,
            partial: None,
        }
    }
}

#[test]
fn dns_queries_of_dig_and_answers_of_dnsmasq_over_udp_and_tcp() {
    let _kernel = KERNEL.lock().unwrap_or_else(|e| e.into_inner());
    let server = Dnsmasq::start(&std::env::temp_dir()).expect("dnsmasq");
    let kscope = KscopeRun::start(&[]).expect("kscope starts");
    let queries = [(dns::WWW, "A", false), (dns::API, "AAAA", true), (dns::MISSING, "A", false)];
    let answers: Vec<DigAnswer> =
        queries.iter().map(|(name, qtype, tcp)| server.dig(name, qtype, *tcp).expect("dig")).collect();
    assert_eq!(answers[0].addresses(), [IpAddr::V4(dns::WWW_V4)]);
    assert_eq!(answers[1].addresses(), [IpAddr::V6(dns::API_V6)]);
    assert_eq!(answers[2].rcode.as_deref(), Some("NXDOMAIN"));
    let finished = stop(kscope);
    let records = &finished.records;

    // dnsmasq forks a child per TCP connection: the server side is every
    // dnsmasq process.
    let server_got: Vec<&ExchangeRecord> = exchanges(records).filter(|e| e.origin.comm == "dnsmasq").collect();
    assert_eq!(server_got[0].origin.pid, server.pid());
    let mut server_want = Vec::new();
    for ((name, qtype, tcp), answer) in queries.iter().zip(&answers) {
        let transport = if *tcp { Transport::Tcp } else { Transport::Udp };
        let got: Vec<DnsFields> = exchanges_of(records, answer.pid).into_iter().map(DnsFields::of).collect();
        assert_eq!(got, vec![DnsFields::wanted(Client, answer, name, qtype, transport)], "dig {name} {qtype}");
        let client = exchanges_of(records, answer.pid)[0];
        assert_eq!((client.peer_addr, client.peer_port), (LOOPBACK, server.port));
        server_want.push(DnsFields::wanted(Server, answer, name, qtype, transport));
    }
    let server_fields: Vec<DnsFields> = server_got.iter().map(|e| DnsFields::of(e)).collect();
    assert_eq!(server_fields, server_want, "dnsmasq's exchanges");
    // dnsmasq answers on one unconnected UDP socket: each exchange names
    // its own client, the dig process's port.
    for (record, answer) in server_got.iter().zip(&answers) {
        let client = exchanges_of(records, answer.pid)[0];
        assert_eq!(record.peer_port, client.local_port, "{}", json(record));
        assert_eq!(record.request_bytes, client.request_bytes);
        assert_eq!(record.response_bytes, client.response_bytes);
    }
}

#[test]
fn glibc_a_and_aaaa_sent_together_are_paired() {
    let _kernel = KERNEL.lock().unwrap_or_else(|e| e.into_inner());
    let server = Dnsmasq::start_in_netns(&std::env::temp_dir()).expect("dnsmasq in a netns");
    let kscope = KscopeRun::start(&[]).expect("kscope starts");
    let resolved = server.getaddrinfo(dns::WWW).expect("getent");
    let mut addresses = resolved.addresses.clone();
    addresses.sort();
    assert_eq!(addresses, [IpAddr::V4(dns::WWW_V4), IpAddr::V6(dns::WWW_V6)]);
    let finished = stop(kscope);
    let records = &finished.records;

    /// The fields of the A and AAAA exchanges that glibc's resolver can
    /// vouch for.
    #[derive(Debug, PartialEq)]
    struct Fields<'a> {
        protocol: &'a str,
        role: Role,
        target: &'a str,
        status: Option<u32>,
        dns_type: Option<&'a str>,
        dns_rcode: Option<&'a str>,
        dns_addresses: Option<&'a [IpAddr]>,
        transport: Transport,
    }
    let (a, aaaa) = ([IpAddr::V4(dns::WWW_V4)], [IpAddr::V6(dns::WWW_V6)]);
    let want = |role| -> Vec<Fields> {
        [("A", &a[..]), ("AAAA", &aaaa[..])]
            .map(|(qtype, addresses)| Fields {
                protocol: "dns",
                role,
                target: dns::WWW,
                status: Some(0),
                dns_type: Some(qtype),
                dns_rcode: Some("NOERROR"),
                dns_addresses: Some(addresses),
                transport: Transport::Udp,
            })
            .into()
    };
    for (role, pid) in [(Client, resolved.pid), (Server, server.pid())] {
        let mut got: Vec<Fields> = exchanges_of(records, pid)
            .into_iter()
            .map(|e| {
                let d = records::dns(e);
                Fields {
                    protocol: e.protocol(),
                    role: e.role,
                    target: &e.target,
                    status: e.status,
                    dns_type: d.map(|d| &*d.dns_type),
                    dns_rcode: d.and_then(|d| d.dns_rcode.as_deref()),
                    dns_addresses: d.map(|d| &*d.dns_addresses),
                    transport: e.transport,
                }
            })
            .collect();
        got.sort_by_key(|f| f.dns_type.unwrap_or("").to_owned());
        assert_eq!(got, want(role), "{role:?} exchanges");
    }
    // Both queries left in one sendmmsg: the client's data events say so.
    let ids: Vec<Option<u16>> =
        exchanges_of(records, resolved.pid).iter().map(|e| records::dns(e).map(|d| d.dns_id)).collect();
    assert_ne!(ids[0], ids[1]);
}

/// A connection opened before kscope started: no connect or accept was
/// seen, so the role comes from the content (who sent the request).
#[test]
fn a_connection_older_than_kscope_is_picked_up() {
    use std::io::{BufRead, BufReader, Write};
    let _kernel = KERNEL.lock().unwrap_or_else(|e| e.into_inner());
    let nginx = Nginx::start(&std::env::temp_dir(), "opened before kscope\n").unwrap();
    let script = "import socket, sys\n\
                  s = socket.create_connection(('127.0.0.1', int(sys.argv[1])))\n\
                  print(s.getsockname()[1], flush=True)\n\
                  sys.stdin.readline()\n\
                  s.sendall(b'GET /index.html HTTP/1.1\\r\\nHost: old\\r\\n\\r\\n')\n\
                  got = b''\n\
                  while b'opened before kscope' not in got: got += s.recv(65536)\n\
                  print(len(got), flush=True)\n";
    let mut child = Command::new("python3")
        .args(["-c", script, &nginx.port.to_string()])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let local_port: u16 = lines.next().unwrap().unwrap().parse().unwrap();
    let kscope = KscopeRun::start(&[]).expect("kscope starts");
    writeln!(child.stdin.take().unwrap()).unwrap();
    let received: u64 = lines.next().unwrap().unwrap().parse().unwrap();
    assert!(child.wait().unwrap().success());
    let finished = stop(kscope);
    let records = &finished.records;

    /// The fields of the one exchange the client knows.
    #[derive(Debug, PartialEq)]
    struct Fields<'a> {
        protocol: &'a str,
        role: Role,
        method: Option<&'a str>,
        target: &'a str,
        status: Option<u32>,
        host: Option<&'a str>,
        local_port: u16,
        peer_port: u16,
        response_bytes: u64,
    }
    let fields = |pid| -> Vec<Fields> {
        exchanges_of(records, pid)
            .into_iter()
            .map(|e| Fields {
                protocol: e.protocol(),
                role: e.role,
                method: e.method.as_deref(),
                target: &e.target,
                status: e.status,
                host: http(e).and_then(|h| h.host.as_deref()),
                local_port: e.local_port,
                peer_port: e.peer_port,
                response_bytes: e.response_bytes,
            })
            .collect()
    };
    let want = |role, local_port, peer_port| Fields {
        protocol: "http1",
        role,
        method: Some("GET"),
        target: "/index.html",
        status: Some(200),
        host: Some("old"),
        local_port,
        peer_port,
        response_bytes: received,
    };
    assert_eq!(fields(child.id()), vec![want(Client, local_port, nginx.port)]);
    assert_eq!(fields(worker_pid(&nginx)), vec![want(Server, nginx.port, local_port)]);
}
