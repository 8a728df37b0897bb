//! Events, exchanges, spans and drops as the JSON records of
//! `kscope_schema` (README, "JSON output"). Events and exchanges are built
//! from borrowed fields: the hot path allocates no string per record.

use std::borrow::Cow;

use kscope_common::TcpRole;
use kscope_protocols::{Detail as L7Detail, Direction, ExchangeKind, Role, Transport};
use kscope_schema as schema;
use opentelemetry_proto::tonic::{
    common::v1::{AnyValue, any_value::Value as AnyValueKind},
    trace::v1::{Span, span::SpanKind, status::StatusCode},
};
use schema::{AttributeValue, Origin, Record};

use super::{Clock, sock_id};
use crate::{
    conntrack::ExchangeRecord,
    decode::{self, Event, TcpStep},
    drops::DropRecord,
    export::SpanItem,
    sensors::hook_form_of,
};

pub(super) fn tcp_role(role: TcpRole) -> schema::Role {
    match role {
        TcpRole::Client => schema::Role::Client,
        TcpRole::Server => schema::Role::Server,
    }
}

pub(super) fn l7_role(role: Role) -> schema::Role {
    match role {
        Role::Client => schema::Role::Client,
        Role::Server => schema::Role::Server,
    }
}

pub(super) fn transport(transport: Transport) -> schema::Transport {
    match transport {
        Transport::Tcp => schema::Transport::Tcp,
        Transport::Udp => schema::Transport::Udp,
    }
}

pub(super) fn direction(direction: Direction) -> schema::Direction {
    match direction {
        Direction::Send => schema::Direction::Send,
        Direction::Recv => schema::Direction::Recv,
    }
}

/// The record's who and when; `timestamp_ns` is monotonic (the kernel's).
fn origin<'a>(o: &'a decode::Origin, timestamp_ns: u64, clock: &Clock) -> Origin<'a> {
    Origin {
        time_unix_nano: clock.unix_nanos(timestamp_ns),
        hook_form: hook_form_of(o.hook_form),
        pid: o.pid,
        tid: o.tid,
        comm: Cow::Borrowed(o.comm.as_str()),
        cgroup_id: o.cgroup_id,
    }
}

/// One event as its JSON record.
pub fn event_record<'a>(event: &'a Event, clock: &Clock) -> Record<'a> {
    let origin = origin(event.origin(), event.origin().timestamp_ns, clock);
    match event {
        Event::Exec(e) => Record::Exec(schema::ExecRecord {
            origin,
            ppid: e.ppid,
            filename: Cow::Borrowed(&e.filename),
            filename_truncated: e.filename_truncated,
        }),
        Event::Exit(e) => Record::Exit(schema::ExitRecord {
            origin,
            ppid: e.ppid,
            exit_code: e.exit_code,
            signal: e.signal,
            lifetime_ns: e.lifetime_ns,
        }),
        Event::Tcp(t) => {
            let record = schema::TcpRecord {
                origin,
                sock_id: sock_id(t.sock_id),
                role: t.role.map(tcp_role),
                local_addr: t.local.0,
                local_port: t.local.1,
                remote_addr: t.remote.0,
                remote_port: t.remote.1,
                close: (t.step == TcpStep::Close).then_some(schema::CloseDetail {
                    bytes_sent: t.bytes_sent,
                    bytes_received: t.bytes_received,
                    duration_ns: t.duration_ns,
                    never_established: t.never_established,
                }),
            };
            match t.step {
                TcpStep::Connect => Record::Connect(record),
                TcpStep::Accept => Record::Accept(record),
                TcpStep::Close => Record::Close(record),
            }
        }
        Event::Retransmit(r) => Record::Retransmit(schema::RetransmitRecord {
            origin,
            sock_id: sock_id(r.sock_id),
            state: Cow::Borrowed(decode::tcp_state_name(r.state)),
            local_addr: r.local.0,
            local_port: r.local.1,
            remote_addr: r.remote.0,
            remote_port: r.remote.1,
            stack: r.frames.iter().map(|f| Cow::Borrowed(&**f)).collect(),
        }),
        Event::Data(d) => Record::Data(schema::DataRecord {
            origin,
            sock_id: sock_id(d.sock_id),
            transport: transport(d.transport),
            direction: direction(d.direction),
            source: Cow::Borrowed(d.source.name()),
            total_len: d.total_len,
            captured_len: d.data.len() as u64,
            local_addr: d.local.0,
            local_port: d.local.1,
            remote_addr: d.remote.0,
            remote_port: d.remote.1,
            peer: d.peer,
        }),
    }
}

/// Appends one event's JSON record (no newline) to `out`.
pub fn write_event_json(out: &mut Vec<u8>, event: &Event, clock: &Clock) {
    // Serializing plain structs of numbers and strings into a Vec cannot fail.
    let _ = serde_json::to_writer(out, &event_record(event, clock));
}

/// One completed exchange as its JSON record.
pub fn exchange_record<'a>(record: &'a ExchangeRecord, clock: &Clock) -> Record<'a> {
    let e = &record.exchange;
    let detail = match &e.detail {
        L7Detail::Http(h) => {
            let http = schema::HttpDetail {
                http_version: Cow::Borrowed(&h.version),
                host: h.host.as_deref().map(Cow::Borrowed),
                traceparent: h.traceparent.as_deref().map(Cow::Borrowed),
                stream_id: h.stream_id,
            };
            // The parsers pair HTTP details only with these two kinds.
            match e.kind {
                ExchangeKind::Http2 => schema::ExchangeDetail::Http2(http),
                ExchangeKind::Http1 | ExchangeKind::Grpc | ExchangeKind::Dns => schema::ExchangeDetail::Http1(http),
            }
        }
        L7Detail::Grpc(g) => schema::ExchangeDetail::Grpc(schema::GrpcDetail {
            grpc_service: Cow::Borrowed(&g.service),
            grpc_method: Cow::Borrowed(&g.method),
            authority: g.authority.as_deref().map(Cow::Borrowed),
            grpc_message: g.grpc_message.as_deref().map(Cow::Borrowed),
            traceparent: g.traceparent.as_deref().map(Cow::Borrowed),
            stream_id: g.stream_id,
            request_messages: g.request_messages,
            response_messages: g.response_messages,
        }),
        L7Detail::Dns(d) => schema::ExchangeDetail::Dns(schema::DnsDetail {
            dns_id: d.id,
            dns_type: Cow::Borrowed(&d.qtype),
            dns_rcode: d.rcode.as_deref().map(Cow::Borrowed),
            dns_answer_count: d.answer_count,
            dns_addresses: Cow::Borrowed(d.addresses.as_slice()),
        }),
    };
    Record::Exchange(schema::ExchangeRecord {
        origin: origin(&record.origin, e.start_ns, clock),
        role: l7_role(e.role),
        method: e.method.as_deref().map(Cow::Borrowed),
        target: Cow::Borrowed(&e.target),
        status: e.status,
        duration_ns: e.end_ns.saturating_sub(e.start_ns),
        request_bytes: e.request_bytes,
        response_bytes: e.response_bytes,
        sock_id: sock_id(record.sock_id),
        transport: transport(record.transport),
        // Dual-stack sockets (gRPC's, Java's) show IPv4 peers as
        // ::ffff:a.b.c.d; people look for a.b.c.d.
        local_addr: record.local.0.to_canonical(),
        local_port: record.local.1,
        peer_addr: record.peer.0.to_canonical(),
        peer_port: record.peer.1,
        partial: e.partial.as_deref().map(Cow::Borrowed),
        tcp_retransmits: record.tcp_retransmits,
        detail,
    })
}

/// Appends one exchange's JSON record (no newline) to `out`.
pub fn write_exchange_json(out: &mut Vec<u8>, record: &ExchangeRecord, clock: &Clock) {
    let _ = serde_json::to_writer(out, &exchange_record(record, clock));
}

/// A drop record as JSON: `{"type":"drop", …}`.
pub fn drop_json(record: DropRecord) -> String {
    serde_json::to_string(&Record::Drop(record)).unwrap_or_default()
}

fn attribute_value(value: Option<&AnyValue>) -> AttributeValue<'_> {
    match value.and_then(|v| v.value.as_ref()) {
        Some(AnyValueKind::StringValue(s)) => AttributeValue::String(Cow::Borrowed(s)),
        Some(AnyValueKind::IntValue(i)) => AttributeValue::Int(*i),
        Some(AnyValueKind::BoolValue(b)) => AttributeValue::Bool(*b),
        Some(AnyValueKind::DoubleValue(d)) => AttributeValue::Double(*d),
        Some(AnyValueKind::ArrayValue(a)) => {
            AttributeValue::Array(a.values.iter().map(|v| attribute_value(Some(v))).collect())
        }
        // Bytes, key-value lists and string-table references are not printed.
        _ => AttributeValue::Null,
    }
}

pub(super) fn span_kind(kind: i32) -> schema::SpanKind {
    match SpanKind::try_from(kind) {
        Ok(SpanKind::Server) => schema::SpanKind::Server,
        Ok(SpanKind::Client) => schema::SpanKind::Client,
        Ok(SpanKind::Internal) => schema::SpanKind::Internal,
        Ok(SpanKind::Producer) => schema::SpanKind::Producer,
        Ok(SpanKind::Consumer) => schema::SpanKind::Consumer,
        Ok(SpanKind::Unspecified) | Err(_) => schema::SpanKind::Unspecified,
    }
}

pub(super) fn span_status(span: &Span) -> schema::SpanStatus {
    match span.status.as_ref().map(|s| StatusCode::try_from(s.code)) {
        Some(Ok(StatusCode::Error)) => schema::SpanStatus::Error,
        Some(Ok(StatusCode::Ok)) => schema::SpanStatus::Ok,
        Some(Ok(StatusCode::Unset) | Err(_)) | None => schema::SpanStatus::Unset,
    }
}

fn resource_value<'a>(item: &'a SpanItem, key: &str) -> Option<&'a AnyValueKind> {
    item.resource.attributes.iter().find(|kv| kv.key == key).and_then(|kv| kv.value.as_ref()?.value.as_ref())
}

/// The resource's `service.name` (always a string: the resource sets it).
pub(super) fn service_name(item: &SpanItem) -> Option<&str> {
    match resource_value(item, crate::telemetry::semconv::SERVICE_NAME) {
        Some(AnyValueKind::StringValue(s)) => Some(s),
        _ => None,
    }
}

/// The resource's `process.pid` (always an integer: the resource sets it).
pub(super) fn resource_pid(item: &SpanItem) -> Option<i64> {
    match resource_value(item, crate::telemetry::semconv::PROCESS_PID) {
        Some(AnyValueKind::IntValue(pid)) => Some(*pid),
        _ => None,
    }
}

/// The JSON record of one span: ids in hex, attributes as an object.
pub fn span_record(item: &SpanItem) -> Record<'_> {
    let span = &item.span;
    let hex = crate::telemetry::trace_context::hex;
    Record::Span(schema::SpanRecord {
        time_unix_nano: span.end_time_unix_nano,
        trace_id: Cow::Owned(hex(&span.trace_id)),
        span_id: Cow::Owned(hex(&span.span_id)),
        parent_span_id: Cow::Owned(hex(&span.parent_span_id)),
        trace_state: Cow::Borrowed(&span.trace_state),
        name: Cow::Borrowed(&span.name),
        kind: span_kind(span.kind),
        start_time_unix_nano: span.start_time_unix_nano,
        end_time_unix_nano: span.end_time_unix_nano,
        status: span_status(span),
        status_message: Cow::Borrowed(span.status.as_ref().map_or("", |s| s.message.as_str())),
        service_name: service_name(item).map(Cow::Borrowed),
        pid: resource_pid(item),
        attributes: span
            .attributes
            .iter()
            .map(|kv| (Cow::Borrowed(kv.key.as_str()), attribute_value(kv.value.as_ref())))
            .collect(),
    })
}

/// Appends one span's JSON record (no newline) to `out`.
pub fn write_span_json(out: &mut Vec<u8>, item: &SpanItem) {
    let _ = serde_json::to_writer(out, &span_record(item));
}
