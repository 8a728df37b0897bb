//! The L7 test harnesses on their own, without kscope: each server starts,
//! its client gets the real answers the kscope tests will later expect to
//! see decoded (HTTP/2 over h2c with nghttpd/nghttp, gRPC with Python's
//! grpcio, DNS with dnsmasq and dig over UDP and TCP, and glibc's
//! getaddrinfo in its own network namespace).

use std::net::IpAddr;

use kscope_tests::{
    dns::{self, Dnsmasq},
    grpc::{GrpcServer, grpc_client},
    h2::{Nghttpd, curl_h2, nghttp},
};

type Result = anyhow::Result<()>;

#[test]
fn h2c_several_streams_on_one_connection() -> Result {
    let big: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    let server = Nghttpd::start(&std::env::temp_dir(), &[("index.html", b"hello h2\n"), ("data/big.bin", &big)])?;
    let urls = [server.url("/index.html"), server.url("/data/big.bin"), server.url("/missing")];
    let run = nghttp(&urls, &[])?;
    assert!(run.status.success(), "nghttp failed ({}): {}", run.status, run.stderr);
    let got: Vec<(u16, u64)> = run.responses.iter().map(|r| (r.status, r.body_bytes)).collect();
    assert_eq!(got.len(), 3, "{run:?}");
    assert_eq!(got[0], (200, 9));
    assert_eq!(got[1], (200, 100_000));
    // nghttpd's own 404 page.
    assert_eq!(got[2].0, 404);
    assert!(run.pid > 0);

    // curl: one URL per connection (see h2.rs).
    let curl = curl_h2(&server.url("/data/big.bin"), &[])?;
    assert!(curl.status.success(), "{curl:?}");
    assert_eq!((curl.http_code, curl.http_version.as_str(), curl.body_bytes), (200, "2", 100_000));
    Ok(())
}

#[test]
fn h2c_upload_is_echoed() -> Result {
    let server = Nghttpd::start(&std::env::temp_dir(), &[("echo", b"")])?;
    let body = std::env::temp_dir().join(format!("kscope-h2-body-{}", std::process::id()));
    std::fs::write(&body, vec![b'x'; 5000])?;
    let run = nghttp(&[server.url("/echo")], &["-d", &body.to_string_lossy()]);
    let _ = std::fs::remove_file(&body);
    let run = run?;
    assert!(run.status.success(), "nghttp failed ({}): {}", run.status, run.stderr);
    assert_eq!(run.responses.iter().map(|r| (r.status, r.body_bytes)).collect::<Vec<_>>(), [(200, 5000)]);
    Ok(())
}

#[test]
fn grpc_unary_streaming_and_error_on_one_channel() -> Result {
    let server = GrpcServer::start()?;
    let traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let run = grpc_client(&server.target(), &["Say:hello", "Count:3", "Fail"], &[("traceparent", traceparent)])?;
    assert!(run.status.success(), "client failed ({}): {}", run.status, run.stderr);
    let calls: Vec<(&str, &str, Option<&str>, Vec<&str>)> = run
        .calls
        .iter()
        .map(|c| {
            (c.method.as_str(), c.code.as_str(), c.details.as_deref(), c.messages.iter().map(String::as_str).collect())
        })
        .collect();
    assert_eq!(
        calls,
        [
            ("Say", "OK", None, vec!["hello"]),
            ("Count", "OK", None, vec!["0", "1", "2"]),
            ("Fail", "NOT_FOUND", Some("no such thing"), vec![]),
        ]
    );
    assert_ne!(run.pid, server.pid());
    Ok(())
}

#[test]
fn dns_over_udp_and_tcp() -> Result {
    let server = Dnsmasq::start(&std::env::temp_dir())?;
    for tcp in [false, true] {
        let a = server.dig(dns::WWW, "A", tcp)?;
        assert_eq!(a.rcode.as_deref(), Some("NOERROR"), "tcp={tcp} {a:?}");
        assert_eq!(a.addresses(), [IpAddr::V4(dns::WWW_V4)], "tcp={tcp}");
        assert_eq!(a.records[0].name, format!("{}.", dns::WWW));

        let aaaa = server.dig(dns::API, "AAAA", tcp)?;
        assert_eq!(aaaa.addresses(), [IpAddr::V6(dns::API_V6)], "tcp={tcp} {aaaa:?}");

        let nx = server.dig(dns::MISSING, "A", tcp)?;
        assert_eq!(nx.rcode.as_deref(), Some("NXDOMAIN"), "tcp={tcp} {nx:?}");
        assert!(nx.records.is_empty());
        assert!(nx.status.is_some_and(|s| s.success()));
    }
    let log = server.log();
    assert!(log.contains(&format!("query[A] {} from 127.0.0.1", dns::MISSING)), "{log}");
    Ok(())
}

#[test]
fn glibc_resolver_gets_a_and_aaaa() -> Result {
    let server = Dnsmasq::start_in_netns(&std::env::temp_dir())?;
    let www = server.getaddrinfo(dns::WWW)?;
    assert!(www.status.success(), "{www:?}\n{}", server.log());
    let mut got = www.addresses.clone();
    got.sort();
    assert_eq!(got, [IpAddr::V4(dns::WWW_V4), IpAddr::V6(dns::WWW_V6)], "{}", server.log());
    // Both queries reached dnsmasq.
    let log = server.log();
    for qtype in ["A", "AAAA"] {
        assert!(log.contains(&format!("query[{qtype}] {} from 127.0.0.1", dns::WWW)), "{log}");
    }

    let missing = server.getaddrinfo(dns::MISSING)?;
    assert_eq!(missing.status.code(), Some(2), "getent: not found; {missing:?}");
    assert!(missing.addresses.is_empty());

    // dig works in the namespace too, on port 53.
    let a = server.dig(dns::API, "A", true)?;
    assert_eq!(a.addresses(), [IpAddr::V4(dns::API_V4)]);
    Ok(())
}
