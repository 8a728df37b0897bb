//! Reading kscope's records as the types of `kscope-schema`: the records of
//! one kind, the detail of one protocol, exactly one record that matches,
//! and a record printed back as JSON for a failure's message.

use kscope_schema::{
    CloseDetail, DataRecord, DnsDetail, DropRecord, ExchangeDetail, ExchangeRecord, ExecRecord, ExitRecord, GrpcDetail,
    HttpDetail, Record, RetransmitRecord, SpanRecord, StatsRecord, TcpRecord,
};
use serde::Serialize;

/// `fn $name(records) -> impl Iterator<Item = &$ty>`: the records of one
/// `Record` variant, in order.
macro_rules! of_kind {
    ($($(#[$doc:meta])* $name:ident: $variant:ident => $ty:ident;)*) => {$(
        $(#[$doc])*
        pub fn $name<'a>(records: &'a [Record<'static>]) -> impl Iterator<Item = &'a $ty<'static>> + Clone {
            records.iter().filter_map(|r| match r {
                Record::$variant(x) => Some(x),
                _ => None,
            })
        }
    )*};
}

of_kind! {
    /// `process.exec` records.
    execs: Exec => ExecRecord;
    /// `process.exit` records.
    exits: Exit => ExitRecord;
    /// `tcp.connect` records.
    connects: Connect => TcpRecord;
    /// `tcp.accept` records.
    accepts: Accept => TcpRecord;
    /// `tcp.close` records.
    closes: Close => TcpRecord;
    /// `tcp.retransmit` records.
    retransmits: Retransmit => RetransmitRecord;
    /// `socket.data` records (`--data-events`).
    data_events: Data => DataRecord;
    /// `exchange` records.
    exchanges: Exchange => ExchangeRecord;
    /// `span` records (`--spans`).
    spans: Span => SpanRecord;
}

/// `drop` records.
pub fn drops<'a>(records: &'a [Record<'static>]) -> impl Iterator<Item = &'a DropRecord> + Clone {
    records.iter().filter_map(|r| match r {
        Record::Drop(d) => Some(d),
        _ => None,
    })
}

/// The periodic `stats` records (not the summary).
pub fn stats<'a>(records: &'a [Record<'static>]) -> impl Iterator<Item = &'a StatsRecord> + Clone {
    records.iter().filter_map(|r| match r {
        Record::Stats(s) => Some(s),
        _ => None,
    })
}

/// The last `summary` record.
pub fn summary<'a>(records: &'a [Record<'static>]) -> Option<&'a StatsRecord> {
    records.iter().rev().find_map(|r| match r {
        Record::Summary(s) => Some(s),
        _ => None,
    })
}

/// The HTTP/1.x or HTTP/2 detail of an exchange.
pub fn http<'a>(e: &'a ExchangeRecord<'static>) -> Option<&'a HttpDetail<'static>> {
    match &e.detail {
        ExchangeDetail::Http1(h) | ExchangeDetail::Http2(h) => Some(h),
        _ => None,
    }
}

/// The gRPC detail of an exchange.
pub fn grpc<'a>(e: &'a ExchangeRecord<'static>) -> Option<&'a GrpcDetail<'static>> {
    match &e.detail {
        ExchangeDetail::Grpc(g) => Some(g),
        _ => None,
    }
}

/// The DNS detail of an exchange.
pub fn dns<'a>(e: &'a ExchangeRecord<'static>) -> Option<&'a DnsDetail<'static>> {
    match &e.detail {
        ExchangeDetail::Dns(d) => Some(d),
        _ => None,
    }
}

/// What a `tcp.close` record says the connection moved and how long it
/// lived; an error naming the record when it says nothing.
pub fn close_detail(close: &TcpRecord<'static>) -> Result<CloseDetail, String> {
    close.close.ok_or_else(|| format!("a tcp.close record without bytes and duration: {}", json(close)))
}

/// Exactly one of `found` (records of kind `kind`) that matches `pred`, or a
/// message saying what was found instead.
pub fn one<'a, T: Serialize + 'a>(
    found: impl Iterator<Item = &'a T> + Clone,
    kind: &str,
    what: &str,
    pred: impl Fn(&T) -> bool,
) -> Result<&'a T, String> {
    let matching: Vec<&T> = found.clone().filter(|r| pred(r)).collect();
    match matching.as_slice() {
        [one] => Ok(one),
        [] => {
            let seen: Vec<String> = found.take(8).map(json).collect();
            Err(format!("no {kind} record for {what}; first {kind} records: {}", seen.join("\n")))
        }
        many => {
            let many: Vec<String> = many.iter().map(|r| json(*r)).collect();
            Err(format!("{} {kind} records for {what}: {}", many.len(), many.join("\n")))
        }
    }
}

/// A record (or any part of one) as JSON, for messages.
pub fn json(value: &impl Serialize) -> String {
    serde_json::to_string(value).unwrap_or_else(|e| format!("<cannot print: {e}>"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests fail loudly")]

    use kscope_schema::{Role, parse_lines};

    use super::*;

    const LINES: &str = r#"
{"type":"tcp.connect","time_unix_nano":5,"hook_form":"tracepoint","pid":1,"tid":1,"comm":"curl","cgroup_id":9,"sock_id":"00000000000000ff","role":"client","local_addr":"127.0.0.1","local_port":1,"remote_addr":"127.0.0.1","remote_port":2}
{"type":"exchange","time_unix_nano":6,"hook_form":"tracepoint","protocol":"http1","role":"client","method":"GET","target":"/","status":200,"duration_ns":1,"request_bytes":89,"response_bytes":253,"pid":1,"tid":1,"comm":"curl","cgroup_id":9,"sock_id":"00000000000000ff","transport":"tcp","local_addr":"127.0.0.1","local_port":1,"peer_addr":"127.0.0.1","peer_port":2,"http_version":"1.1","host":"localhost"}
{"type":"tcp.close","time_unix_nano":7,"hook_form":"tracepoint","pid":1,"tid":1,"comm":"curl","cgroup_id":9,"sock_id":"00000000000000ff","role":"client","local_addr":"127.0.0.1","local_port":1,"remote_addr":"127.0.0.1","remote_port":2,"bytes_sent":89,"bytes_received":253,"duration_ns":9,"never_established":false}
{"type":"tcp.close","time_unix_nano":8,"hook_form":"tracepoint","pid":1,"tid":1,"comm":"curl","cgroup_id":9,"sock_id":"00000000000000fe","role":null,"local_addr":"127.0.0.1","local_port":3,"remote_addr":"127.0.0.1","remote_port":4}
"#;

    #[test]
    fn kinds_details_and_one() {
        let records = parse_lines(LINES).unwrap();
        assert_eq!(connects(&records).count(), 1);
        assert_eq!(accepts(&records).count(), 0);
        let exchange = exchanges(&records).next().unwrap();
        assert_eq!(http(exchange).and_then(|h| h.host.as_deref()), Some("localhost"));
        assert!(grpc(exchange).is_none() && dns(exchange).is_none());
        let close = one(closes(&records), "tcp.close", "port 1", |c| c.local_port == 1).unwrap();
        assert_eq!(close_detail(close).unwrap().bytes_received, 253);
        // A close without its detail, no match, two matches: messages, not zeros.
        let bare = one(closes(&records), "tcp.close", "port 3", |c| c.local_port == 3).unwrap();
        assert!(close_detail(bare).unwrap_err().contains("\"local_port\":3"));
        let none = one(closes(&records), "tcp.close", "port 9", |c| c.local_port == 9).unwrap_err();
        assert!(none.starts_with("no tcp.close record for port 9; first tcp.close records: {"), "{none}");
        let two = one(closes(&records), "tcp.close", "curl", |c| c.origin.comm == "curl").unwrap_err();
        assert!(two.starts_with("2 tcp.close records for curl: "), "{two}");
        assert_eq!(close.role, Some(Role::Client));
    }
}
