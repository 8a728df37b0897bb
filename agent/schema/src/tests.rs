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

/// Lines of the records that are not events, as kscope printed them before
/// it serialised from these types.
#[test]
fn stats_summary_sensors_and_drop_lines() {
    let drop = r#"{"type":"drop","time_unix_nano":5,"reason":"NO_SOCKET","reason_code":3,"protocol":"ipv4","netns":7,"location":"tcp_v4_rcv+0x99","function":"tcp_v4_rcv","count":12,"total":40}"#;
    let Record::Drop(d) = round_trip(drop) else { panic!("not a drop") };
    assert_eq!((d.time_unix_nano, &*d.reason, d.count), (5, "NO_SOCKET", 12));
    let stats = r#"{"type":"stats","time_unix_nano":1,"uptime_ns":2,"bpf_stats_enabled":true,"programs":[{"sensor":"tcp","program":"tcp_connect","run_count":4,"run_time_ns":1000,"avg_ns_per_run":250}],"sensors":[{"sensor":"tcp","emitted":1,"emit_failed":2,"table_full":3,"unreported":4}],"ledger":{"read_per_cpu":[1,2],"lost_per_cpu":[0,3],"decoded":4,"decode_errors":5,"ring_errors":6,"queue_dropped":7,"written":8,"analyzed":9},"lost_events":3,"l7":{"segments":1,"bytes_total":2,"bytes_captured":3,"unclassified_segments":4,"unknown_protocol_connections":5,"parse_errors":6,"table_full":7,"expired":8,"exchanges":9,"parser_malformed":10,"parser_overflow_bytes":11,"parser_unpaired_dropped":12}}"#;
    let Record::Stats(s) = round_trip(stats) else { panic!("not stats") };
    assert_eq!((s.ledger.read(), s.sensor("tcp").map(|c| c.unreported), s.export), (3, Some(4), None));
    let summary = r#"{"type":"summary","time_unix_nano":1,"uptime_ns":2,"bpf_stats_enabled":true,"programs":[{"sensor":"tcp","program":"tcp_connect","run_count":4,"run_time_ns":1000,"avg_ns_per_run":250}],"sensors":[{"sensor":"tcp","emitted":1,"emit_failed":2,"table_full":3,"unreported":4}],"ledger":{"read_per_cpu":[1,2],"lost_per_cpu":[0,3],"decoded":4,"decode_errors":5,"ring_errors":6,"queue_dropped":7,"written":8,"analyzed":9},"lost_events":3,"l7":{"segments":1,"bytes_total":2,"bytes_captured":3,"unclassified_segments":4,"unknown_protocol_connections":5,"parse_errors":6,"table_full":7,"expired":8,"exchanges":9,"parser_malformed":10,"parser_overflow_bytes":11,"parser_unpaired_dropped":12},"export":{"spans":{"spans":1,"released":2,"remote_parent":3,"enclosing_server":4,"same_host_client":5,"roots":6,"released_early":7},"spans_waiting":8,"otlp":{"spans_offered":13,"spans_exported":14,"spans_dropped":15,"spans_failed":16,"metric_points_exported":17,"metric_points_failed":18,"export_requests":19,"export_failures":20,"retries":21,"queue_depth":22},"metric_series":9,"metric_overflowed_points":10,"routes_overflowed":11,"own_exchanges_skipped":12},"drops":{"counted":1,"untracked":2,"keys":3,"top":[{"reason":"NO_SOCKET","reason_code":3,"protocol":"ipv4","netns":7,"location":"tcp_v4_rcv+0x99","function":"tcp_v4_rcv","count":12,"total":40}]}}"#;
    let Record::Summary(s) = round_trip(summary) else { panic!("not a summary") };
    assert_eq!(s.export.map(|e| e.otlp.queue_depth), Some(22));
    // The summary's top drops carry no time of their own.
    assert_eq!(s.drops.map(|d| d.top[0].time_unix_nano), Some(0));
    let sensors = r#"{"kernel":"6.1.0","sensors":[{"chosen":"fentry","degraded":"d","description":"TCP","fallbacks":[{"form":"kprobe","unavailable":null},{"form":"tracepoint","unavailable":"u"}],"hooks":["fentry:x"],"programs":["a"],"rejected":[{"form":"tracepoint","reason":"no"}],"sensor":"tcp"},{"chosen":null,"degraded":null,"description":"D","fallbacks":[],"hooks":[],"programs":[],"rejected":[],"sensor":"drops"}],"time_unix_nano":77,"type":"sensors"}"#;
    let Record::Sensors(s) = round_trip(sensors) else { panic!("not sensors") };
    assert_eq!(s.sensor("drops").map(|c| c.chosen), Some(None));
}

#[test]
fn probe_line() {
    let line = r#"{"functions":[{"btf":true,"function":"f","kallsyms_names":["f","f.cold"],"kprobe_unusable":"x","traceable":null}],"kernel":"6.1.0","sensors":[{"chosen":"fentry","degraded":"d","description":"TCP","fallbacks":[{"form":"kprobe","unavailable":null},{"form":"tracepoint","unavailable":"u"}],"hooks":["fentry:x"],"programs":["a"],"rejected":[{"form":"tracepoint","reason":"no"}],"sensor":"tcp"},{"chosen":null,"degraded":null,"description":"D","fallbacks":[],"hooks":[],"programs":[],"rejected":[],"sensor":"drops"}],"type":"probe"}"#;
    let probe: ProbeRecord = serde_json::from_str(line).unwrap();
    assert_eq!(probe.functions[0].traceable, None);
    let again = serde_json::to_value(&probe).unwrap();
    assert_eq!(again, serde_json::from_str::<serde_json::Value>(line).unwrap());
}

#[test]
fn symbolize_lines() {
    for line in [
        r#"{"address":"0x1004","code":{"column":null,"file":"a.c","line":3},"inlined":[{"code":{"column":0,"file":"a.c","line":5},"name":"in1"},{"code":null,"name":"in2"}],"module":"m","offset":4,"size":10,"symbol":"tcp_v4_rcv","symbol_address":"0x1000"}"#,
        r#"{"address":"0x1000","code":null,"inlined":[],"module":null,"offset":0,"size":null,"symbol":"x","symbol_address":"0x1000"}"#,
        r#"{"address":"0x5","unknown":"the address is not mapped"}"#,
    ] {
        let record: SymbolizeRecord<'static> = serde_json::from_str(line).unwrap();
        let again = serde_json::to_value(&record).unwrap();
        assert_eq!(again, serde_json::from_str::<serde_json::Value>(line).unwrap(), "{line}");
    }
    let resolved: SymbolizeRecord<'static> = serde_json::from_str(r#"{"address":"0x1004","code":{"column":null,"file":"a.c","line":3},"inlined":[{"code":{"column":0,"file":"a.c","line":5},"name":"in1"},{"code":null,"name":"in2"}],"module":"m","offset":4,"size":10,"symbol":"tcp_v4_rcv","symbol_address":"0x1000"}"#).unwrap();
    let SymbolizeRecord::Resolved(r) = resolved else { panic!("not resolved") };
    assert_eq!((r.address, r.symbol_address, r.offset), (HexAddress(0x1004), HexAddress(0x1000), 4));
    let unknown: SymbolizeRecord<'static> =
        serde_json::from_str(r#"{"address":"0x5","unknown":"the address is not mapped"}"#).unwrap();
    assert!(matches!(unknown, SymbolizeRecord::Unknown(UnknownAddress { address: HexAddress(5), .. })));
    assert!(serde_json::from_str::<SymbolizeRecord<'static>>(r#"{"address":"5","unknown":"x"}"#).is_err());
}

#[test]
fn span_line() {
    let line = r#"{"type":"span","time_unix_nano":3723006500000,"trace_id":"4b4b4b4b4b4b4b4b4b4b4b4b4b4b4b4b","span_id":"0102030405060708","parent_span_id":"","trace_state":"","name":"GET /users/{id}","kind":"server","start_time_unix_nano":3723004000000,"end_time_unix_nano":3723006500000,"status":"error","status_message":"","service_name":"nginx","pid":42,"attributes":{"http.response.status_code":503,"http.route":"/users/{id}","error":true,"ratio":0.5,"list":["a",1,null]}}"#;
    let Record::Span(s) = round_trip(line) else { panic!("not a span") };
    assert_eq!(
        (s.kind, s.status, s.int_attribute("http.response.status_code")),
        (SpanKind::Server, SpanStatus::Error, Some(503))
    );
    assert_eq!(s.str_attribute("http.route"), Some("/users/{id}"));
    let no_resource = line.replace(r#""service_name":"nginx","pid":42"#, r#""service_name":null,"pid":null"#);
    let Record::Span(s) = round_trip(&no_resource) else { panic!("not a span") };
    assert_eq!((s.service_name, s.pid), (None, None));
}

/// Every record of the golden replays (tests/golden) reads into the types
/// and prints back the same.
#[test]
fn golden_records() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/golden");
    let mut records = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if !path.to_string_lossy().ends_with(".expected.jsonl") {
            continue;
        }
        for line in std::fs::read_to_string(&path).unwrap().lines().filter(|l| !l.trim().is_empty()) {
            round_trip(line);
            records += 1;
        }
    }
    assert!(records > 0, "no golden records in {dir}");
}

#[test]
fn data_lines() {
    let udp = r#"{"type":"socket.data","time_unix_nano":1795469641333832794,"hook_form":"tracepoint","pid":13588,"tid":13588,"comm":"dnsmasq","cgroup_id":1,"sock_id":"28367a17307fe29c","transport":"udp","direction":"recv","source":"recvmsg","total_len":56,"captured_len":56,"local_addr":"127.0.0.1","local_port":38829,"remote_addr":"0.0.0.0","remote_port":0,"peer":"127.0.0.1:58473"}"#;
    let Record::Data(d) = round_trip(udp) else { panic!("not data") };
    assert_eq!((d.transport, d.direction, d.peer.map(|p| p.port())), (Transport::Udp, Direction::Recv, Some(58473)));
    let tcp = r#"{"type":"socket.data","time_unix_nano":1795469641384897938,"hook_form":"tracepoint","pid":13663,"tid":13664,"comm":"isc-net-0000","cgroup_id":1,"sock_id":"855879fec2317cc5","transport":"tcp","direction":"send","source":"writev","total_len":58,"captured_len":58,"local_addr":"127.0.0.1","local_port":44893,"remote_addr":"127.0.0.1","remote_port":38829}"#;
    let Record::Data(d) = round_trip(tcp) else { panic!("not data") };
    assert_eq!((d.source.as_ref(), d.peer), ("writev", None));
}

#[test]
fn average_of_no_runs_is_zero() {
    assert_eq!(ProgramStats::new("tcp", "p".into(), 0, 10).avg_ns_per_run, 0);
    assert_eq!(ProgramStats::new("tcp", "p".into(), 4, 1000).avg_ns_per_run, 250);
}

/// What `name()` says is what serde prints.
#[test]
fn names_are_the_printed_values() {
    fn printed<T: serde::Serialize>(value: T) -> String {
        serde_json::to_value(value).unwrap().as_str().unwrap().to_owned()
    }
    for form in [HookForm::Kprobe, HookForm::Fentry, HookForm::Tracepoint] {
        assert_eq!(printed(form), form.name());
    }
    for role in [Role::Client, Role::Server] {
        assert_eq!(printed(role), role.name());
    }
    for transport in [Transport::Tcp, Transport::Udp] {
        assert_eq!(printed(transport), transport.name());
    }
    for direction in [Direction::Send, Direction::Recv] {
        assert_eq!(printed(direction), direction.name());
    }
    for kind in [
        SpanKind::Unspecified,
        SpanKind::Internal,
        SpanKind::Server,
        SpanKind::Client,
        SpanKind::Producer,
        SpanKind::Consumer,
    ] {
        assert_eq!(printed(kind), kind.name());
    }
    for status in [SpanStatus::Unset, SpanStatus::Ok, SpanStatus::Error] {
        assert_eq!(printed(status), status.name());
    }
}
