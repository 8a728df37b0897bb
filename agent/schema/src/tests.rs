//! Lines as kscope printed them (from the README and the golden records)
//! parse into the types, and the types print them back field for field.

use super::*;

fn round_trip(line: &str) -> Record<'static> {
    let record = parse_line(line).unwrap();
    let again: serde_json::Value = serde_json::to_value(&record).unwrap();
    let original: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(again, original, "printed back differently");
    record
}

#[test]
fn exchange_lines() {
    let http = r#"{"type":"exchange","time_unix_nano":1767225600000000000,"hook_form":"tracepoint","protocol":"http1","role":"server","method":"GET","target":"/index.html","status":200,"duration_ns":106600,"request_bytes":89,"response_bytes":253,"pid":24680,"tid":24680,"comm":"nginx","cgroup_id":1,"sock_id":"0123456789abcdef","transport":"tcp","local_addr":"127.0.0.1","local_port":18091,"peer_addr":"127.0.0.1","peer_port":35760,"http_version":"1.1","host":"localhost"}"#;
    let Record::Exchange(e) = round_trip(http) else { panic!("not an exchange") };
    assert_eq!((e.protocol(), e.role, e.status, e.origin.pid), ("http1", Role::Server, Some(200), 24680));
    assert_eq!(e.tcp_retransmits, 0);
    let dns = r#"{"type":"exchange","time_unix_nano":1,"hook_form":"kprobe","protocol":"dns","role":"client","target":"www.kscope.test","status":null,"duration_ns":1,"request_bytes":56,"response_bytes":0,"pid":2,"tid":3,"comm":"isc-net-0000","cgroup_id":1,"sock_id":"fedcba9876543210","transport":"udp","local_addr":"::1","local_port":5,"peer_addr":"::1","peer_port":53,"partial":"no response","tcp_retransmits":2,"dns_id":7,"dns_type":"AAAA","dns_answer_count":0,"dns_addresses":[]}"#;
    let Record::Exchange(e) = round_trip(dns) else { panic!("not an exchange") };
    assert!(matches!(e.detail, ExchangeDetail::Dns(DnsDetail { dns_id: 7, .. })));
    assert_eq!((e.status, e.tcp_retransmits, e.transport), (None, 2, Transport::Udp));
}

#[test]
fn event_lines() {
    let close = r#"{"type":"tcp.close","time_unix_nano":5,"hook_form":"fentry","pid":1,"tid":1,"comm":"curl","cgroup_id":9,"sock_id":"00000000000000ff","role":"client","local_addr":"127.0.0.1","local_port":1,"remote_addr":"127.0.0.1","remote_port":2,"bytes_sent":172,"bytes_received":592,"duration_ns":683400,"never_established":false}"#;
    let Record::Close(t) = round_trip(close) else { panic!("not a close") };
    assert_eq!(t.close.map(|c| c.bytes_received), Some(592));
    let connect = r#"{"type":"tcp.connect","time_unix_nano":5,"hook_form":"tracepoint","pid":1,"tid":1,"comm":"curl","cgroup_id":9,"sock_id":"00000000000000ff","role":null,"local_addr":"127.0.0.1","local_port":1,"remote_addr":"127.0.0.1","remote_port":2}"#;
    let Record::Connect(t) = round_trip(connect) else { panic!("not a connect") };
    assert_eq!((t.role, t.close), (None, None));
    let exit = r#"{"type":"process.exit","time_unix_nano":5,"hook_form":"tracepoint","pid":1,"tid":1,"comm":"sh","cgroup_id":9,"ppid":0,"exit_code":null,"signal":9,"lifetime_ns":3}"#;
    assert!(matches!(round_trip(exit), Record::Exit(ExitRecord { signal: Some(9), exit_code: None, .. })));
}

#[test]
fn bad_lines_are_errors_not_zeros() {
    // A renamed or missing field, a wrong type, an unknown record type.
    for line in [
        r#"{"type":"tcp.close","time_unix_nano":5}"#,
        r#"{"type":"stats","time_unix_nano":"soon"}"#,
        r#"{"type":"teleport","time_unix_nano":5}"#,
        r#"{"time_unix_nano":5}"#,
        "not json",
    ] {
        assert!(parse_line(line).is_err(), "{line}");
    }
    let bad_id = r#"{"type":"tcp.connect","time_unix_nano":5,"hook_form":"tracepoint","pid":1,"tid":1,"comm":"c","cgroup_id":9,"sock_id":"xyz","role":null,"local_addr":"127.0.0.1","local_port":1,"remote_addr":"127.0.0.1","remote_port":2}"#;
    assert!(parse_line(bad_id).unwrap_err().to_string().contains("sock_id"));
}

#[test]
fn sock_ids_are_hex_of_the_hash() {
    assert_eq!(SockId::from_hash(0xff).as_str(), "00000000000000ff");
    assert_eq!(SockId::from_hash(u64::MAX).to_string(), "ffffffffffffffff");
}
