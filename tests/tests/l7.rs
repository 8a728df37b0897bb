//! Requests and responses, as kscope reports them, from real servers and
//! clients on loopback: nginx and curl (HTTP/1.1 and HTTP/2), Python grpcio,
//! dnsmasq and dig. Each test asserts the exact exchange records of both
//! ends against what the client itself reported.

#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

use std::{
    net::IpAddr,
    process::Command,
    sync::Mutex,
    thread,
    time::{Duration, Instant},
};

use kscope_tests::{
    agent::KscopeRun,
    checks::check_ledger,
    dns::{self, DigAnswer, Dnsmasq},
    grpc::{GrpcServer, grpc_client},
    nginx::{Nginx, NginxOptions},
};
use serde_json::{Value, json};

/// One kscope at a time: each run's records are its own.
static KERNEL: Mutex<()> = Mutex::new(());

fn exchanges(records: &[Value], pid: u64) -> Vec<&Value> {
    records.iter().filter(|r| r["type"] == "exchange" && r["pid"] == pid).collect()
}

/// What curl said about one transfer (`-w`).
#[derive(Debug)]
struct Transfer {
    status: u64,
    request_bytes: u64,
    response_bytes: u64,
    local_port: u64,
}

const CURL_FORMAT: &str = "%{http_code} %{size_request} %{size_header} %{size_download} %{local_port}\n";

/// Runs curl on `urls` (one connection, kept alive) and returns its pid,
/// each transfer's figures and the wall time.
fn curl(args: &[&str], urls: &[String]) -> (u64, Vec<Transfer>, u64) {
    let mut cmd = Command::new("curl");
    cmd.args(["-s", "-w", CURL_FORMAT]).args(args);
    for url in urls {
        cmd.args(["-o", "/dev/null", url]);
    }
    let started = Instant::now();
    let child = cmd.stdout(std::process::Stdio::piped()).spawn().expect("curl");
    let pid = u64::from(child.id());
    let out = child.wait_with_output().expect("curl runs");
    let wall = started.elapsed().as_nanos() as u64;
    let text = String::from_utf8_lossy(&out.stdout);
    let transfers = text
        .lines()
        .map(|l| {
            let f: Vec<u64> = l.split(' ').map(|x| x.parse().expect("number")).collect();
            Transfer { status: f[0], request_bytes: f[1], response_bytes: f[2] + f[3], local_port: f[4] }
        })
        .collect();
    (pid, transfers, wall)
}

/// The fields of an exchange record that do not depend on timing.
fn fields(record: &Value, keys: &[&str]) -> Value {
    Value::Object(keys.iter().map(|k| ((*k).to_owned(), record[*k].clone())).collect())
}

fn worker_pid(nginx: &Nginx) -> u64 {
    let workers = nginx.worker_pids();
    assert_eq!(workers.len(), 1, "one nginx worker: {workers:?}");
    workers[0]
}

fn stop(kscope: KscopeRun) -> Vec<Value> {
    // Past the reorder window, so the last exchanges are out.
    thread::sleep(Duration::from_millis(500));
    let finished = kscope.stop().expect("kscope stops");
    assert_eq!(finished.exit_code, Some(0), "stderr: {}", finished.stderr);
    let summary = finished.summary().expect("summary").clone();
    check_ledger(&summary).unwrap();
    assert_eq!(summary["lost_events"], 0, "{summary}");
    finished.records
}

const HTTP_KEYS: &[&str] = &[
    "protocol",
    "role",
    "method",
    "target",
    "status",
    "request_bytes",
    "response_bytes",
    "comm",
    "transport",
    "local_port",
    "peer_addr",
    "peer_port",
    "http_version",
    "host",
    "partial",
    "hook_form",
];

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
    let records = stop(kscope);

    let port = u64::from(nginx.port);
    let host = format!("127.0.0.1:{port}");
    let targets = ["/index.html", "/missing", "/fail", "/created"];
    let expected = |role: &str, comm: &str, t: &Transfer, target: &str| {
        let (local_port, peer_port) = if role == "client" { (t.local_port, port) } else { (port, t.local_port) };
        json!({
            "protocol": "http1", "role": role, "method": "GET", "target": target, "status": t.status,
            "request_bytes": t.request_bytes, "response_bytes": t.response_bytes, "comm": comm,
            "transport": "tcp", "local_port": local_port, "peer_addr": "127.0.0.1", "peer_port": peer_port,
            "http_version": "1.1", "host": host, "partial": null, "hook_form": "tracepoint",
        })
    };
    for (role, who, comm) in [("client", pid, "curl"), ("server", worker_pid(&nginx), "nginx")] {
        let got = exchanges(&records, who);
        let got_fields: Vec<Value> = got.iter().map(|r| fields(r, HTTP_KEYS)).collect();
        let want: Vec<Value> =
            transfers.iter().zip(targets).map(|(t, target)| expected(role, comm, t, target)).collect();
        assert_eq!(got_fields, want, "{role} exchanges");
        // Keep-alive: requests curl sent from one local port share one
        // connection (nginx may close after an error response, and curl
        // then opens another; its `local_port` above says which). The
        // converse does not hold: the kernel may hand the next connection
        // the memory of the sock just freed, and so the same id.
        for (a, b) in got.iter().zip(got.iter().skip(1)) {
            if a["local_port"] == b["local_port"] && a["peer_port"] == b["peer_port"] {
                assert_eq!(a["sock_id"], b["sock_id"], "{a}\n{b}");
            }
        }
        for r in &got {
            let d = r["duration_ns"].as_u64().unwrap();
            assert!(d > 0 && d < wall, "{role} duration {d} outside (0, {wall}): {r}");
        }
    }
    // Query strings and header values stay home.
    let text = records.iter().map(Value::to_string).collect::<String>();
    assert!(!text.contains("hush") && !text.contains("s3cr3t"), "a secret was printed");
}

/// Runs nghttp on `urls`, multiplexed on one connection; returns its pid
/// and, per stream as nghttp reported it, (stream id, status, path).
fn nghttp(urls: &[String]) -> (u64, Vec<(u64, u64, String)>) {
    let child = Command::new("nghttp")
        .arg("-ns")
        .args(urls)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("nghttp (Debian's nghttp2-client)");
    let pid = u64::from(child.id());
    let out = child.wait_with_output().expect("nghttp runs");
    assert!(out.status.success(), "nghttp failed");
    // The `-s` table: "id responseEnd requestStart process code size path".
    let mut streams: Vec<(u64, u64, String)> = String::from_utf8_lossy(&out.stdout)
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

#[test]
fn http2_streams_of_nginx_with_curl_and_nghttp() {
    let _kernel = KERNEL.lock().unwrap_or_else(|e| e.into_inner());
    let options = NginxOptions { status_locations: true, h2c: true, sendfile: false };
    let nginx = Nginx::start_with(&std::env::temp_dir(), "hello over h2c\n", options).unwrap();
    let port = u64::from(nginx.h2c_port.unwrap());
    let kscope = KscopeRun::start(&[]).expect("kscope starts");
    let url = |p: &str| format!("http://127.0.0.1:{port}{p}");
    let (curl_pid, transfers, _) = curl(&["--http2-prior-knowledge"], &[url("/index.html")]);
    assert_eq!(transfers[0].status, 200);
    let (nghttp_pid, streams) = nghttp(&[url("/index.html"), url("/missing"), url("/fail")]);
    assert_eq!(streams.iter().map(|s| s.1).collect::<Vec<_>>(), vec![200, 404, 500], "{streams:?}");
    let records = stop(kscope);

    let keys = ["protocol", "role", "method", "target", "status", "http_version", "host", "stream_id", "partial"];
    let host = format!("127.0.0.1:{port}");
    let want = |role: &str, streams: &[(u64, u64, String)]| -> Vec<Value> {
        streams
            .iter()
            .map(|(stream, status, target)| {
                json!({"protocol": "http2", "role": role, "method": "GET", "target": target, "status": status,
                       "http_version": "2", "host": host, "stream_id": stream, "partial": null})
            })
            .collect()
    };
    let curl_streams = vec![(1, 200, "/index.html".to_owned())];
    let client_curl = exchanges(&records, curl_pid);
    let client_nghttp = exchanges(&records, nghttp_pid);
    let server = exchanges(&records, worker_pid(&nginx));
    let project = |got: &[&Value]| got.iter().map(|r| fields(r, &keys)).collect::<Vec<_>>();
    assert_eq!(project(&client_curl), want("client", &curl_streams), "curl's exchanges");
    assert_eq!(project(&client_nghttp), want("client", &streams), "nghttp's exchanges");
    let mut server_want = want("server", &curl_streams);
    server_want.extend(want("server", &streams));
    assert_eq!(project(&server), server_want, "nginx's exchanges");
    // Both ends saw the same frames of each stream.
    let clients: Vec<&Value> = client_curl.iter().chain(&client_nghttp).copied().collect();
    for (c, s) in clients.iter().zip(&server) {
        let sizes = ["request_bytes", "response_bytes"];
        assert_eq!(fields(c, &sizes), fields(s, &sizes), "{c} / {s}");
    }
    // A 200's DATA frame carries the body, after two frame headers at least.
    assert!(client_curl[0]["response_bytes"].as_u64().unwrap() >= 9 + 9 + "hello over h2c\n".len() as u64);
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
    let records = stop(kscope);

    let keys = [
        "protocol",
        "role",
        "method",
        "target",
        "status",
        "grpc_service",
        "grpc_method",
        "grpc_message",
        "traceparent",
        "stream_id",
        "request_messages",
        "response_messages",
        "partial",
        "peer_addr",
        "transport",
    ];
    let want = |role: &str| -> Vec<Value> {
        [("Say", 0, Value::Null, 1, 1), ("Count", 0, Value::Null, 3, 3), ("Fail", 5, json!("no such thing"), 5, 0)]
            .iter()
            .map(|(method, status, message, stream, responses)| {
                json!({"protocol": "grpc", "role": role, "method": "POST", "target": format!("kscope.test.Echo/{method}"),
                       "status": status, "grpc_service": "kscope.test.Echo", "grpc_method": method,
                       "grpc_message": message, "traceparent": traceparent, "stream_id": stream,
                       "request_messages": 1, "response_messages": responses, "partial": null,
                       "peer_addr": "127.0.0.1", "transport": "tcp"})
            })
            .collect()
    };
    for (role, pid) in [("client", u64::from(run.pid)), ("server", u64::from(server.pid()))] {
        let got: Vec<Value> = exchanges(&records, pid).iter().map(|r| fields(r, &keys)).collect();
        assert_eq!(got, want(role), "{role} exchanges");
    }
    let client = exchanges(&records, u64::from(run.pid));
    let server_side = exchanges(&records, u64::from(server.pid()));
    for (c, s) in client.iter().zip(&server_side) {
        let sizes = ["request_bytes", "response_bytes"];
        assert_eq!(fields(c, &sizes), fields(s, &sizes), "{c} / {s}");
        assert_eq!(c["local_port"], s["peer_port"]);
        assert_eq!(s["local_port"], u64::from(server.port));
    }
}

const DNS_KEYS: &[&str] = &[
    "protocol",
    "role",
    "target",
    "status",
    "dns_type",
    "dns_rcode",
    "dns_answer_count",
    "dns_addresses",
    "dns_id",
    "transport",
    "partial",
];

fn dns_record(role: &str, answer: &DigAnswer, name: &str, qtype: &str, transport: &str) -> Value {
    let rcode = answer.rcode.clone().unwrap();
    json!({"protocol": "dns", "role": role, "target": name, "status": if rcode == "NOERROR" { 0 } else { 3 },
           "dns_type": qtype, "dns_rcode": rcode, "dns_answer_count": answer.records.len(),
           "dns_addresses": answer.addresses(), "dns_id": answer.id.unwrap(), "transport": transport,
           "partial": null})
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
    let records = stop(kscope);

    // dnsmasq forks a child per TCP connection: the server side is every
    // dnsmasq process.
    let server_got: Vec<&Value> =
        records.iter().filter(|r| r["type"] == "exchange" && r["comm"] == "dnsmasq").collect();
    assert_eq!(server_got[0]["pid"], u64::from(server.pid()));
    let mut server_want = Vec::new();
    for ((name, qtype, tcp), answer) in queries.iter().zip(&answers) {
        let transport = if *tcp { "tcp" } else { "udp" };
        let got: Vec<Value> = exchanges(&records, u64::from(answer.pid)).iter().map(|r| fields(r, DNS_KEYS)).collect();
        assert_eq!(got, vec![dns_record("client", answer, name, qtype, transport)], "dig {name} {qtype}");
        let client = exchanges(&records, u64::from(answer.pid))[0];
        assert_eq!((&client["peer_addr"], &client["peer_port"]), (&json!("127.0.0.1"), &json!(server.port)));
        server_want.push(dns_record("server", answer, name, qtype, transport));
    }
    let server_fields: Vec<Value> = server_got.iter().map(|r| fields(r, DNS_KEYS)).collect();
    assert_eq!(server_fields, server_want, "dnsmasq's exchanges");
    // dnsmasq answers on one unconnected UDP socket: each exchange names
    // its own client, the dig process's port.
    for (record, answer) in server_got.iter().zip(&answers) {
        let client = exchanges(&records, u64::from(answer.pid))[0];
        assert_eq!(record["peer_port"], client["local_port"], "{record}");
        assert_eq!(record["request_bytes"], client["request_bytes"]);
        assert_eq!(record["response_bytes"], client["response_bytes"]);
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
    let records = stop(kscope);

    let keys = ["protocol", "role", "target", "status", "dns_type", "dns_rcode", "dns_addresses", "transport"];
    let want = |role: &str| -> Vec<Value> {
        [("A", json!([dns::WWW_V4])), ("AAAA", json!([dns::WWW_V6]))]
            .iter()
            .map(|(qtype, addresses)| {
                json!({"protocol": "dns", "role": role, "target": dns::WWW, "status": 0, "dns_type": qtype,
                       "dns_rcode": "NOERROR", "dns_addresses": addresses, "transport": "udp"})
            })
            .collect()
    };
    let sorted = |mut v: Vec<Value>| {
        v.sort_by_key(|r| r["dns_type"].as_str().unwrap_or("").to_owned());
        v
    };
    for (role, pid) in [("client", u64::from(resolved.pid)), ("server", u64::from(server.pid()))] {
        let got: Vec<Value> = exchanges(&records, pid).iter().map(|r| fields(r, &keys)).collect();
        assert_eq!(sorted(got), want(role), "{role} exchanges");
    }
    // Both queries left in one sendmmsg: the client's data events say so.
    let ids: Vec<&Value> = exchanges(&records, u64::from(resolved.pid)).iter().map(|r| &r["dns_id"]).collect();
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
    let local_port: u64 = lines.next().unwrap().unwrap().parse().unwrap();
    let kscope = KscopeRun::start(&[]).expect("kscope starts");
    writeln!(child.stdin.take().unwrap()).unwrap();
    let received: u64 = lines.next().unwrap().unwrap().parse().unwrap();
    assert!(child.wait().unwrap().success());
    let records = stop(kscope);

    let keys = ["protocol", "role", "method", "target", "status", "host", "local_port", "peer_port", "response_bytes"];
    let client = exchanges(&records, u64::from(child.id()));
    let client: Vec<Value> = client.iter().map(|r| fields(r, &keys)).collect();
    assert_eq!(
        client,
        vec![json!({"protocol": "http1", "role": "client", "method": "GET", "target": "/index.html", "status": 200,
                    "host": "old", "local_port": local_port, "peer_port": nginx.port, "response_bytes": received})]
    );
    let server: Vec<Value> = exchanges(&records, worker_pid(&nginx)).iter().map(|r| fields(r, &keys)).collect();
    assert_eq!(
        server,
        vec![json!({"protocol": "http1", "role": "server", "method": "GET", "target": "/index.html", "status": 200,
                    "host": "old", "local_port": nginx.port, "peer_port": local_port, "response_bytes": received})]
    );
}
