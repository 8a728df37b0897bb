//! Golden tests: event streams recorded from real runs (`kscope run
//! --record`, trimmed to the processes of each scenario) replayed through
//! decode, the connection table and the parsers (`kscope replay`), with the
//! records they must give checked in beside them.
//!
//! `record_goldens` (ignored) makes them again from real servers and
//! clients: `KSCOPE_BIN=target/debug/kscope cargo test -p kscope-tests --test
//! golden -- --ignored record_goldens`. Review the diff of the expected files
//! before committing: the live tests in l7.rs assert the same scenarios
//! against what the clients themselves reported.

#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

use std::{
    path::{Path, PathBuf},
    process::Command,
    thread,
    time::Duration,
};

use kscope_schema::{
    Record,
    Role::{self, Client, Server},
    parse_line,
};
use kscope_tests::{
    agent::{KscopeRun, kscope_binary},
    dns::{self, Dnsmasq},
    grpc::{GrpcServer, grpc_client},
    nginx::{Nginx, NginxOptions},
    records::exchanges,
    workspace_root,
};
use serde_json::Value;

/// Exchanges an expected file must hold: (protocol, role, count).
type Holds = &'static [(&'static str, Role, usize)];

/// Each scenario and the exchanges its expected records must hold, so a
/// recording that lost its traffic cannot be blessed unnoticed.
const SCENARIOS: &[(&str, Holds)] = &[
    ("http1_nginx_curl", &[("http1", Client, 3), ("http1", Server, 3)]),
    ("http2_nginx_nghttp", &[("http2", Client, 3), ("http2", Server, 3)]),
    ("grpc_grpcio", &[("grpc", Client, 3), ("grpc", Server, 3)]),
    ("dns_dig_dnsmasq", &[("dns", Client, 3), ("dns", Server, 3)]),
];

fn golden_dir() -> PathBuf {
    workspace_root().join("tests/golden")
}

/// Each line of `text` as a record, which prints back as the very same JSON:
/// nothing in it lies outside the schema, so comparing records compares
/// everything the lines say.
fn records_exactly(text: &str, what: &str) -> Vec<Record<'static>> {
    text.lines()
        .map(|line| {
            let record = parse_line(line).unwrap_or_else(|e| panic!("{what}: {e}"));
            let again = serde_json::to_value(&record).unwrap();
            let original: Value = serde_json::from_str(line).unwrap();
            assert_eq!(again, original, "{what}: the record prints back differently than the line");
            record
        })
        .collect()
}

fn replay(recording: &Path) -> Vec<Record<'static>> {
    let out = Command::new(kscope_binary().unwrap())
        .args(["replay", "--output", "json"])
        .arg(recording)
        .output()
        .expect("kscope replay");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    records_exactly(&String::from_utf8_lossy(&out.stdout), &format!("kscope replay {}", recording.display()))
}

fn read_expected(name: &str) -> Vec<Record<'static>> {
    let path = golden_dir().join(format!("{name}.expected.jsonl"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    records_exactly(&text, &path.display().to_string())
}

#[test]
fn replays_give_the_expected_records() {
    for (name, wanted) in SCENARIOS {
        let got = replay(&golden_dir().join(format!("{name}.rec")));
        let expected = read_expected(name);
        for (protocol, role, count) in *wanted {
            let n = exchanges(&expected).filter(|e| e.protocol() == *protocol && e.role == *role).count();
            assert_eq!(n, *count, "{name}: {protocol} {role:?} exchanges in the expected records");
        }
        assert_eq!(got.len(), expected.len(), "{name}: number of records");
        for (i, (g, e)) in got.iter().zip(&expected).enumerate() {
            assert_eq!(g, e, "{name}: record {i}");
        }
    }
}

/// A recording cut short anywhere still replays, with an error, not a panic.
#[test]
fn truncated_recordings_are_errors() {
    let bytes = std::fs::read(golden_dir().join("dns_dig_dnsmasq.rec")).unwrap();
    let dir = std::env::temp_dir().join(format!("kscope-golden-cut-{}", std::process::id()));
    for cut in [3, 20, bytes.len() / 2, bytes.len() - 1] {
        std::fs::write(&dir, &bytes[..cut]).unwrap();
        let out = Command::new(kscope_binary().unwrap()).arg("replay").arg(&dir).output().expect("kscope replay");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "cut at {cut}: {stderr}");
        assert!(stderr.starts_with("error: "), "{stderr}");
    }
    let _ = std::fs::remove_file(&dir);
}

/// Records one scenario: kscope runs with `--record` while `traffic` runs,
/// then the recording is trimmed to the processes `traffic` names.
fn record(name: &str, traffic: impl FnOnce() -> (Vec<u32>, Vec<&'static str>)) {
    let raw = std::env::temp_dir().join(format!("kscope-golden-{name}-{}.rec", std::process::id()));
    let kscope = KscopeRun::start(&["--record", raw.to_str().unwrap()]).expect("kscope starts");
    let (pids, comms) = traffic();
    thread::sleep(Duration::from_millis(500));
    let finished = kscope.stop().expect("kscope stops");
    assert_eq!(finished.exit_code, Some(0), "{}", finished.stderr);
    let rec = golden_dir().join(format!("{name}.rec"));
    let mut cmd = Command::new(kscope_binary().unwrap());
    cmd.arg("replay").arg(&raw).arg("--save").arg(&rec);
    for pid in pids {
        cmd.args(["--pid", &pid.to_string()]);
    }
    for comm in comms {
        cmd.args(["--comm", comm]);
    }
    assert!(cmd.status().expect("kscope replay --save").success());
    let _ = std::fs::remove_file(&raw);
    // Through `Value`, so the keys stay sorted as in the files checked in.
    let lines: Vec<String> = replay(&rec).iter().map(|r| serde_json::to_value(r).unwrap().to_string()).collect();
    std::fs::write(golden_dir().join(format!("{name}.expected.jsonl")), lines.join("\n") + "\n").unwrap();
}

#[test]
#[ignore = "makes the golden recordings again; run by hand, then review the diff"]
fn record_goldens() {
    std::fs::create_dir_all(golden_dir()).unwrap();
    let options = NginxOptions { status_locations: true, h2c: true, sendfile: true };
    let nginx = Nginx::start_with(&std::env::temp_dir(), "hello from a golden run\n", options).unwrap();
    let worker = nginx.worker_pids()[0] as u32;
    record("http1_nginx_curl", || {
        let base = format!("http://127.0.0.1:{}", nginx.port);
        let child = Command::new("curl")
            .args(["-s", "-o", "/dev/null", &format!("{base}/index.html"), "-o", "/dev/null"])
            .arg(format!("{base}/missing"))
            .args(["-o", "/dev/null", &format!("{base}/fail")])
            .spawn()
            .unwrap();
        let pid = child.id();
        assert!(child.wait_with_output().unwrap().status.success());
        (vec![pid, worker], vec![])
    });
    record("http2_nginx_nghttp", || {
        let port = nginx.h2c_port.unwrap();
        let urls: Vec<String> =
            ["/index.html", "/missing", "/fail"].iter().map(|p| format!("http://127.0.0.1:{port}{p}")).collect();
        let child = Command::new("nghttp").arg("-n").args(&urls).spawn().unwrap();
        let pid = child.id();
        assert!(child.wait_with_output().unwrap().status.success());
        (vec![pid, worker], vec![])
    });
    drop(nginx);
    let server = GrpcServer::start().unwrap();
    record("grpc_grpcio", || {
        let run = grpc_client(&server.target(), &["Say:hello", "Count:3", "Fail"], &[]).unwrap();
        assert!(run.status.success(), "{}", run.stderr);
        (vec![run.pid, server.pid()], vec![])
    });
    drop(server);
    let dnsmasq = Dnsmasq::start(&std::env::temp_dir()).unwrap();
    record("dns_dig_dnsmasq", || {
        let mut pids = vec![dnsmasq.pid()];
        for (name, qtype, tcp) in [(dns::WWW, "A", false), (dns::API, "AAAA", true), (dns::MISSING, "A", false)] {
            pids.push(dnsmasq.dig(name, qtype, tcp).unwrap().pid);
        }
        // dnsmasq answers TCP in a forked child.
        (pids, vec!["dnsmasq"])
    });
}
