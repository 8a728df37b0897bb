//! One exchange → its span's name, kind, status and attributes, and the
//! duration histogram it counts in, by the semantic conventions' rules.

use std::net::IpAddr;

use kscope_protocols::{Detail, DnsDetail, GrpcDetail, HttpDetail, Role, Transport};
use opentelemetry_proto::tonic::{
    common::v1::{AnyValue, ArrayValue, KeyValue, any_value::Value},
    trace::v1::{span::SpanKind, status::StatusCode},
};

use super::{
    resource::{int_attr, string_attr},
    semconv::{self as sc, MetricDef},
};
use crate::conntrack::ExchangeRecord;

/// What the conventions make of one exchange.
#[derive(Debug, Clone, PartialEq)]
pub struct Described {
    pub name: String,
    pub kind: SpanKind,
    pub status: StatusCode,
    pub status_message: String,
    pub span_attributes: Vec<KeyValue>,
    /// The histogram this exchange counts in, and which of the span's
    /// attributes it carries (low-cardinality ones only; absent ones are left out).
    pub metric: Option<(MetricDef, &'static [&'static str])>,
}

const KNOWN_METHODS: &[&str] = &["GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"];

// Each histogram's attributes, taken from its span's.
const HTTP_SERVER_METRIC: &[&str] = &[
    sc::HTTP_REQUEST_METHOD,
    sc::URL_SCHEME,
    sc::HTTP_ROUTE,
    sc::HTTP_RESPONSE_STATUS_CODE,
    sc::NETWORK_PROTOCOL_NAME,
    sc::NETWORK_PROTOCOL_VERSION,
    sc::ERROR_TYPE,
];
const HTTP_CLIENT_METRIC: &[&str] = &[
    sc::HTTP_REQUEST_METHOD,
    sc::URL_SCHEME,
    sc::SERVER_ADDRESS,
    sc::SERVER_PORT,
    sc::HTTP_RESPONSE_STATUS_CODE,
    sc::NETWORK_PROTOCOL_NAME,
    sc::NETWORK_PROTOCOL_VERSION,
    sc::ERROR_TYPE,
];
const RPC_SERVER_METRIC: &[&str] =
    &[sc::RPC_SYSTEM, sc::RPC_SERVICE, sc::RPC_METHOD, sc::RPC_GRPC_STATUS_CODE, sc::ERROR_TYPE];
const RPC_CLIENT_METRIC: &[&str] = &[
    sc::RPC_SYSTEM,
    sc::RPC_SERVICE,
    sc::RPC_METHOD,
    sc::RPC_GRPC_STATUS_CODE,
    sc::SERVER_ADDRESS,
    sc::SERVER_PORT,
    sc::ERROR_TYPE,
];
const DNS_LOOKUP_METRIC: &[&str] = &[sc::DNS_QUESTION_NAME, sc::ERROR_TYPE];

/// gRPC codes that make a *server* span an error; any non-zero code makes
/// a client span one.
const GRPC_SERVER_ERRORS: &[u32] = &[2, 4, 12, 13, 14, 15];

/// `route` is the template of the HTTP path (from [`super::routes`]).
pub fn describe(record: &ExchangeRecord, route: &str) -> Described {
    let ex = &record.exchange;
    let kind = match ex.role {
        Role::Server => SpanKind::Server,
        Role::Client => SpanKind::Client,
    };
    let mut attrs = Vec::with_capacity(20);
    let peer = ex.peer.map_or(record.peer, |p| (p.ip().to_canonical(), p.port()));
    let local = (record.local.0.to_canonical(), record.local.1);
    let mut described = match &ex.detail {
        Detail::Http(http) => describe_http(record, http, route, kind, &mut attrs, (local, peer)),
        Detail::Grpc(grpc) => describe_grpc(record, grpc, kind, &mut attrs, (local, peer)),
        Detail::Dns(dns) => describe_dns(record, dns, kind, &mut attrs, (local, peer)),
    };
    attrs.push(string_attr(sc::NETWORK_PEER_ADDRESS, peer.0.to_string()));
    attrs.push(int_attr(sc::NETWORK_PEER_PORT, i64::from(peer.1)));
    attrs.push(string_attr(
        sc::NETWORK_TRANSPORT,
        match record.transport {
            Transport::Tcp => "tcp",
            Transport::Udp => "udp",
        },
    ));
    attrs.push(int_attr(sc::THREAD_ID, i64::from(record.origin.tid)));
    if let Some(partial) = &ex.partial {
        attrs.push(string_attr(sc::KSCOPE_PARTIAL, partial.clone()));
    }
    if record.tcp_retransmits > 0 {
        attrs.push(int_attr(sc::KSCOPE_TCP_RETRANSMITS, i64::from(record.tcp_retransmits)));
    }
    described.span_attributes = attrs;
    described
}

type Ends = ((IpAddr, u16), (IpAddr, u16));

fn blank(name: String, kind: SpanKind) -> Described {
    Described {
        name,
        kind,
        status: StatusCode::Unset,
        status_message: String::new(),
        span_attributes: Vec::new(),
        metric: None,
    }
}

/// `host[:port]` of a Host header or `:authority` (IPv6 in brackets).
fn split_host(host: &str) -> (String, Option<u16>) {
    let host = host.trim();
    if let Some((addr, after)) = host.strip_prefix('[').and_then(|rest| rest.split_once(']')) {
        return (addr.to_owned(), after.strip_prefix(':').and_then(|p| p.parse().ok()));
    }
    match host.rsplit_once(':') {
        Some((name, port)) if !name.contains(':') => (name.to_owned(), port.parse().ok()),
        _ => (host.to_owned(), None),
    }
}

/// The server's address and port as the conventions want them: what the
/// client asked for (Host/authority) when known, else the socket's.
fn server_address(authority: Option<&str>, kind: SpanKind, (local, peer): Ends) -> (String, u16) {
    let socket = if kind == SpanKind::Server { local } else { peer };
    match authority.map(split_host) {
        Some((name, port)) if !name.is_empty() => (name, port.unwrap_or(socket.1)),
        _ => (socket.0.to_string(), socket.1),
    }
}

fn describe_http(
    record: &ExchangeRecord,
    http: &HttpDetail,
    route: &str,
    kind: SpanKind,
    attrs: &mut Vec<KeyValue>,
    ends: Ends,
) -> Described {
    let ex = &record.exchange;
    let original = ex.method.as_deref().unwrap_or("");
    let method = if KNOWN_METHODS.contains(&original) { original } else { sc::OTHER };
    let (path, query) = match ex.target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (ex.target.as_str(), None),
    };
    let status = ex.status;
    let error_type = match (kind, status) {
        (_, None) => Some(sc::ERROR_NO_RESPONSE.to_owned()),
        (SpanKind::Server, Some(s)) if s >= 500 => Some(s.to_string()),
        (SpanKind::Client, Some(s)) if s >= 400 => Some(s.to_string()),
        _ => None,
    };
    let (server, server_port) = server_address(http.host.as_deref(), kind, ends);
    // Server: `{method} {http.route}`; client: `{method} {url.template}`.
    let mut described = blank(format!("{method} {route}"), kind);
    attrs.push(string_attr(sc::HTTP_REQUEST_METHOD, method));
    if method == sc::OTHER && !original.is_empty() {
        attrs.push(string_attr(sc::HTTP_REQUEST_METHOD_ORIGINAL, original));
    }
    attrs.push(string_attr(sc::URL_SCHEME, "http"));
    if kind == SpanKind::Server {
        attrs.push(string_attr(sc::URL_PATH, path));
        if let Some(q) = query {
            attrs.push(string_attr(sc::URL_QUERY, q));
        }
        attrs.push(string_attr(sc::HTTP_ROUTE, route));
        attrs.push(string_attr(sc::CLIENT_ADDRESS, ends.1.0.to_string()));
        attrs.push(int_attr(sc::CLIENT_PORT, i64::from(ends.1.1)));
    } else {
        let authority = if server_port == 80 { server.clone() } else { format!("{server}:{server_port}") };
        let authority = if server.contains(':') { format!("[{server}]:{server_port}") } else { authority };
        attrs.push(string_attr(sc::URL_FULL, format!("http://{authority}{}", ex.target)));
        attrs.push(string_attr(sc::URL_TEMPLATE, route));
    }
    attrs.push(string_attr(sc::SERVER_ADDRESS, server));
    attrs.push(int_attr(sc::SERVER_PORT, i64::from(server_port)));
    if let Some(s) = status {
        attrs.push(int_attr(sc::HTTP_RESPONSE_STATUS_CODE, i64::from(s)));
    }
    attrs.push(string_attr(sc::NETWORK_PROTOCOL_NAME, "http"));
    attrs.push(string_attr(sc::NETWORK_PROTOCOL_VERSION, http.version.clone()));
    if let Some(e) = error_type {
        described.status = StatusCode::Error;
        attrs.push(string_attr(sc::ERROR_TYPE, e.clone()));
    }
    described.metric = Some(if kind == SpanKind::Server {
        (sc::HTTP_SERVER_REQUEST_DURATION, HTTP_SERVER_METRIC)
    } else {
        (sc::HTTP_CLIENT_REQUEST_DURATION, HTTP_CLIENT_METRIC)
    });
    described
}

fn describe_grpc(
    record: &ExchangeRecord,
    grpc: &GrpcDetail,
    kind: SpanKind,
    attrs: &mut Vec<KeyValue>,
    ends: Ends,
) -> Described {
    let mut described = blank(format!("{}/{}", grpc.service, grpc.method), kind);
    attrs.push(string_attr(sc::RPC_SYSTEM, "grpc"));
    attrs.push(string_attr(sc::RPC_SERVICE, grpc.service.clone()));
    attrs.push(string_attr(sc::RPC_METHOD, grpc.method.clone()));
    let (server, server_port) = server_address(grpc.authority.as_deref(), kind, ends);
    attrs.push(string_attr(sc::SERVER_ADDRESS, server));
    attrs.push(int_attr(sc::SERVER_PORT, i64::from(server_port)));
    attrs.push(string_attr(sc::NETWORK_PROTOCOL_NAME, "http"));
    attrs.push(string_attr(sc::NETWORK_PROTOCOL_VERSION, "2"));
    match record.exchange.status {
        Some(code) => {
            attrs.push(int_attr(sc::RPC_GRPC_STATUS_CODE, i64::from(code)));
            let error = match kind {
                SpanKind::Server => GRPC_SERVER_ERRORS.contains(&code),
                _ => code != 0,
            };
            if error {
                described.status = StatusCode::Error;
                described.status_message = grpc.grpc_message.clone().unwrap_or_default();
                attrs.push(string_attr(sc::ERROR_TYPE, code.to_string()));
            }
        }
        None => {
            described.status = StatusCode::Error;
            attrs.push(string_attr(sc::ERROR_TYPE, sc::ERROR_NO_RESPONSE));
        }
    }
    described.metric = Some(if kind == SpanKind::Server {
        (sc::RPC_SERVER_CALL_DURATION, RPC_SERVER_METRIC)
    } else {
        (sc::RPC_CLIENT_CALL_DURATION, RPC_CLIENT_METRIC)
    });
    described
}

/// `error.type` of a failed lookup: getaddrinfo's names where one applies.
fn dns_error(rcode: Option<&str>) -> Option<String> {
    match rcode {
        None => Some(sc::ERROR_NO_RESPONSE.to_owned()),
        Some("NOERROR") => None,
        Some("NXDOMAIN") => Some("host_not_found".to_owned()),
        Some("SERVFAIL") => Some("try_again".to_owned()),
        Some("REFUSED" | "NOTIMP" | "FORMERR") => Some("no_recovery".to_owned()),
        Some(other) => Some(other.to_ascii_lowercase()),
    }
}

fn describe_dns(
    record: &ExchangeRecord,
    dns: &DnsDetail,
    kind: SpanKind,
    attrs: &mut Vec<KeyValue>,
    ends: Ends,
) -> Described {
    let mut described = blank(format!("DNS {}", dns.qtype), kind);
    let name = record.exchange.target.clone();
    attrs.push(string_attr(sc::DNS_QUESTION_NAME, name.clone()));
    attrs.push(string_attr(sc::KSCOPE_DNS_QUESTION_TYPE, dns.qtype.clone()));
    if let Some(rcode) = &dns.rcode {
        attrs.push(string_attr(sc::KSCOPE_DNS_RESPONSE_CODE, rcode.clone()));
    }
    if !dns.addresses.is_empty() {
        let values =
            dns.addresses.iter().map(|a| AnyValue { value: Some(Value::StringValue(a.to_string())) }).collect();
        attrs.push(KeyValue {
            key: sc::DNS_ANSWERS.to_owned(),
            value: Some(AnyValue { value: Some(Value::ArrayValue(ArrayValue { values })) }),
            ..Default::default()
        });
    }
    let server = if kind == SpanKind::Server { ends.0 } else { ends.1 };
    attrs.push(string_attr(sc::SERVER_ADDRESS, server.0.to_string()));
    attrs.push(int_attr(sc::SERVER_PORT, i64::from(server.1)));
    if let Some(e) = dns_error(dns.rcode.as_deref()) {
        described.status = StatusCode::Error;
        attrs.push(string_attr(sc::ERROR_TYPE, e.clone()));
    }
    // The conventions define a lookup metric (the client's view) only.
    if kind == SpanKind::Client {
        described.metric = Some((sc::DNS_LOOKUP_DURATION, DNS_LOOKUP_METRIC));
    }
    described
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_headers_split() {
        assert_eq!(split_host("api.internal:8080"), ("api.internal".to_owned(), Some(8080)));
        assert_eq!(split_host("api.internal"), ("api.internal".to_owned(), None));
        assert_eq!(split_host("[fd00::1]:443"), ("fd00::1".to_owned(), Some(443)));
        assert_eq!(split_host("fd00::1"), ("fd00::1".to_owned(), None));
        assert_eq!(split_host("h:notaport"), ("h".to_owned(), None));
    }
}
