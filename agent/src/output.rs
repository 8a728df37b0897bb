//! Events and stats as people read them: one line per event on the console,
//! or JSON lines with stable field names (documented in the README).

use std::{
    cmp::Reverse,
    collections::BinaryHeap,
    hash::{BuildHasher, RandomState},
    io::Write,
    net::IpAddr,
    sync::OnceLock,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use kscope_common::TcpRole;
use serde::Serialize;
#[cfg(test)]
use serde_json::{Value, json};

use kscope_protocols::{Detail as L7Detail, Direction, Role, Transport};

use crate::{
    conntrack::{ConnCounts, ExchangeRecord},
    decode::{Event, TcpStep},
    sensors::{HookForm, SensorChoice},
    stats::{LedgerSnapshot, ProgramStats, SensorCounts},
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    Console,
    Json,
}

/// Turns kernel monotonic timestamps into wall-clock time.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    realtime_minus_monotonic_ns: i128,
}

fn clock_ns(clock: libc::clockid_t) -> i128 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid out-pointer for clock_gettime.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    i128::from(ts.tv_sec) * 1_000_000_000 + i128::from(ts.tv_nsec)
}

impl Clock {
    pub fn now() -> Self {
        let mono = clock_ns(libc::CLOCK_MONOTONIC);
        let real = clock_ns(libc::CLOCK_REALTIME);
        Self { realtime_minus_monotonic_ns: real - mono }
    }

    /// The clock of a recorded run.
    pub fn from_offset(realtime_minus_monotonic_ns: i128) -> Self {
        Self { realtime_minus_monotonic_ns }
    }

    pub fn offset(&self) -> i128 {
        self.realtime_minus_monotonic_ns
    }

    pub fn unix_nanos(&self, monotonic_ns: u64) -> u64 {
        u64::try_from(i128::from(monotonic_ns) + self.realtime_minus_monotonic_ns).unwrap_or(0)
    }
}

/// The kernel's socket address would hand every reader of kscope's output
/// a kernel pointer (defeating KASLR); a keyed hash, with a key drawn once
/// per run, joins a connection's records just as well.
pub fn sock_token(kernel_address: u64) -> String {
    SockToken::of(kernel_address).as_str().to_owned()
}

/// [`sock_token`] without a string allocated per record.
#[derive(Clone, Copy)]
pub struct SockToken([u8; 16]);

impl SockToken {
    pub fn of(kernel_address: u64) -> Self {
        let key = *SOCK_TOKEN_KEY.get_or_init(|| RandomState::new().hash_one(0u64));
        let hash = std::hash::BuildHasherDefault::<std::hash::DefaultHasher>::default().hash_one((key, kernel_address));
        let mut hex = [0u8; 16];
        for (i, digit) in hex.iter_mut().enumerate() {
            *digit = b"0123456789abcdef"[((hash >> (60 - 4 * i)) & 0xf) as usize];
        }
        Self(hex)
    }

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).unwrap_or("")
    }
}

impl Serialize for SockToken {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

static SOCK_TOKEN_KEY: OnceLock<u64> = OnceLock::new();

/// Fixes the key of [`sock_token`] (replays print the same ids every time);
/// only before the first token is made.
pub fn fix_sock_token_key(key: u64) {
    let _ = SOCK_TOKEN_KEY.set(key);
}

/// CLOCK_MONOTONIC now, the clock the kernel programs stamp events with.
pub fn monotonic_now_ns() -> u64 {
    u64::try_from(clock_ns(libc::CLOCK_MONOTONIC)).unwrap_or(0)
}

/// Holds events briefly so that events read from different CPUs' rings come
/// out in time order. Bounded: past `capacity` the oldest is let out early.
pub struct Reorder {
    heap: BinaryHeap<Reverse<Pending>>,
    capacity: usize,
    seq: u64,
}

struct Pending {
    timestamp_ns: u64,
    seq: u64,
    // Boxed: the heap moves entries at every level of a push and pop, and
    // with 150 ms of events at 100k/s those moves of whole events were a
    // fifth of kscope's CPU.
    event: Box<Event>,
}

impl PartialEq for Pending {
    fn eq(&self, other: &Self) -> bool {
        (self.timestamp_ns, self.seq) == (other.timestamp_ns, other.seq)
    }
}
impl Eq for Pending {}
impl PartialOrd for Pending {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Pending {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.timestamp_ns, self.seq).cmp(&(other.timestamp_ns, other.seq))
    }
}

impl Reorder {
    pub fn new(capacity: usize) -> Self {
        Self { heap: BinaryHeap::new(), capacity: capacity.max(1), seq: 0 }
    }

    pub fn push(&mut self, event: Event) {
        self.seq += 1;
        let timestamp_ns = event.origin().timestamp_ns;
        self.heap.push(Reverse(Pending { timestamp_ns, seq: self.seq, event: Box::new(event) }));
    }

    /// Events stamped at or before `until_ns`, oldest first, plus the oldest
    /// of any beyond capacity.
    pub fn ready(&mut self, until_ns: u64) -> Vec<Event> {
        let mut out = Vec::new();
        while let Some(Reverse(first)) = self.heap.peek() {
            if first.timestamp_ns > until_ns && self.heap.len() <= self.capacity {
                break;
            }
            if let Some(Reverse(p)) = self.heap.pop() {
                out.push(*p.event);
            }
        }
        out
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }
}

fn role(role: Option<TcpRole>) -> Option<&'static str> {
    role.map(|r| match r {
        TcpRole::Client => "client",
        TcpRole::Server => "server",
    })
}

fn step(step: TcpStep) -> &'static str {
    match step {
        TcpStep::Connect => "tcp.connect",
        TcpStep::Accept => "tcp.accept",
        TcpStep::Close => "tcp.close",
    }
}

/// One event as a JSON record; field names are part of kscope's interface
/// (README, "JSON output"). Serialized straight from borrowed fields: no
/// intermediate map per event.
#[derive(Serialize)]
struct EventRecord<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    time_unix_nano: u64,
    hook_form: &'static str,
    pid: u32,
    tid: u32,
    comm: &'a str,
    cgroup_id: u64,
    #[serde(flatten)]
    detail: Detail<'a>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum Detail<'a> {
    Exec { ppid: u32, filename: &'a str, filename_truncated: bool },
    Exit { ppid: u32, exit_code: Option<u8>, signal: Option<u8>, lifetime_ns: u64 },
    Tcp(TcpDetail),
    Data(DataDetail<'a>),
    Retransmit(RetransmitDetail<'a>),
}

/// A retransmit: the connection and the kernel stack, symbolized (the raw
/// addresses are not printed: they would give away the kernel's KASLR
/// offset).
#[derive(Serialize)]
struct RetransmitDetail<'a> {
    sock_id: SockToken,
    state: &'static str,
    local_addr: IpAddr,
    local_port: u16,
    remote_addr: IpAddr,
    remote_port: u16,
    stack: Vec<&'a str>,
}

/// A data event's metadata (`--data-events`); never its payload.
#[derive(Serialize)]
struct DataDetail<'a> {
    sock_id: SockToken,
    transport: &'static str,
    direction: &'static str,
    source: &'static str,
    total_len: u64,
    captured_len: usize,
    local_addr: IpAddr,
    local_port: u16,
    remote_addr: IpAddr,
    remote_port: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    peer: Option<&'a std::net::SocketAddr>,
}

fn transport_name(t: Transport) -> &'static str {
    match t {
        Transport::Tcp => "tcp",
        Transport::Udp => "udp",
    }
}

fn direction_name(d: Direction) -> &'static str {
    match d {
        Direction::Send => "send",
        Direction::Recv => "recv",
    }
}

fn l7_role(r: Role) -> &'static str {
    match r {
        Role::Client => "client",
        Role::Server => "server",
    }
}

#[derive(Serialize)]
struct TcpDetail {
    sock_id: SockToken,
    role: Option<&'static str>,
    local_addr: IpAddr,
    local_port: u16,
    remote_addr: IpAddr,
    remote_port: u16,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    close: Option<CloseDetail>,
}

#[derive(Serialize)]
struct CloseDetail {
    bytes_sent: u64,
    bytes_received: u64,
    duration_ns: u64,
    never_established: bool,
}

fn record<'a>(event: &'a Event, clock: &Clock) -> EventRecord<'a> {
    let o = event.origin();
    let (kind, detail) = match event {
        Event::Exec(e) => (
            "process.exec",
            Detail::Exec { ppid: e.ppid, filename: &e.filename, filename_truncated: e.filename_truncated },
        ),
        Event::Exit(e) => (
            "process.exit",
            Detail::Exit { ppid: e.ppid, exit_code: e.exit_code, signal: e.signal, lifetime_ns: e.lifetime_ns },
        ),
        Event::Tcp(t) => (
            step(t.step),
            Detail::Tcp(TcpDetail {
                sock_id: SockToken::of(t.sock_id),
                role: role(t.role),
                local_addr: t.local.0,
                local_port: t.local.1,
                remote_addr: t.remote.0,
                remote_port: t.remote.1,
                close: (t.step == TcpStep::Close).then_some(CloseDetail {
                    bytes_sent: t.bytes_sent,
                    bytes_received: t.bytes_received,
                    duration_ns: t.duration_ns,
                    never_established: t.never_established,
                }),
            }),
        ),
        Event::Retransmit(r) => (
            "tcp.retransmit",
            Detail::Retransmit(RetransmitDetail {
                sock_id: SockToken::of(r.sock_id),
                state: crate::decode::tcp_state_name(r.state),
                local_addr: r.local.0,
                local_port: r.local.1,
                remote_addr: r.remote.0,
                remote_port: r.remote.1,
                stack: r.frames.iter().map(|f| &**f).collect(),
            }),
        ),
        Event::Data(d) => (
            "socket.data",
            Detail::Data(DataDetail {
                sock_id: SockToken::of(d.sock_id),
                transport: transport_name(d.transport),
                direction: direction_name(d.direction),
                source: d.source.name(),
                total_len: d.total_len,
                captured_len: d.data.len(),
                local_addr: d.local.0,
                local_port: d.local.1,
                remote_addr: d.remote.0,
                remote_port: d.remote.1,
                peer: d.peer.as_ref(),
            }),
        ),
    };
    EventRecord {
        kind,
        time_unix_nano: clock.unix_nanos(o.timestamp_ns),
        hook_form: HookForm::from(o.hook_form).name(),
        pid: o.pid,
        tid: o.tid,
        comm: o.comm.as_str(),
        cgroup_id: o.cgroup_id,
        detail,
    }
}

/// Appends one event's JSON record (no newline) to `out`.
pub fn write_event_json(out: &mut Vec<u8>, event: &Event, clock: &Clock) {
    // Serializing plain structs of numbers and strings into a Vec cannot fail.
    let _ = serde_json::to_writer(out, &record(event, clock));
}

#[cfg(test)]
pub fn event_json(event: &Event, clock: &Clock) -> Value {
    let mut out = Vec::new();
    write_event_json(&mut out, event, clock);
    serde_json::from_slice(&out).unwrap_or(Value::Null)
}

fn endpoint(addr: &(IpAddr, u16)) -> String {
    match addr.0 {
        IpAddr::V4(ip) => format!("{ip}:{}", addr.1),
        IpAddr::V6(ip) => format!("[{ip}]:{}", addr.1),
    }
}

fn wall_time(unix_ns: u64) -> String {
    let secs = unix_ns / 1_000_000_000;
    let ms = (unix_ns / 1_000_000) % 1000;
    format!("{:02}:{:02}:{:02}.{ms:03}", (secs / 3600) % 24, (secs / 60) % 60, secs % 60)
}

pub fn human_duration(ns: u64) -> String {
    let d = Duration::from_nanos(ns);
    if d >= Duration::from_secs(1) {
        format!("{:.2}s", d.as_secs_f64())
    } else if d >= Duration::from_millis(1) {
        format!("{:.2}ms", d.as_secs_f64() * 1e3)
    } else {
        format!("{:.1}us", d.as_secs_f64() * 1e6)
    }
}

/// The console line of one event (UTC time of day first).
pub fn event_line(event: &Event, clock: &Clock) -> String {
    let o = event.origin();
    let time = wall_time(clock.unix_nanos(o.timestamp_ns));
    let who = format!("pid={} comm={}", o.pid, o.comm);
    match event {
        Event::Exec(e) => format!(
            "{time} exec    {who} ppid={} cgroup={} filename={}{}",
            e.ppid,
            o.cgroup_id,
            e.filename,
            if e.filename_truncated { "…" } else { "" }
        ),
        Event::Exit(e) => {
            let how = match (e.exit_code, e.signal) {
                (_, Some(sig)) => format!("signal={sig}"),
                (Some(code), None) => format!("code={code}"),
                (None, None) => "code=?".into(),
            };
            format!("{time} exit    {who} ppid={} {how} lifetime={}", e.ppid, human_duration(e.lifetime_ns))
        }
        Event::Data(d) => format!(
            "{time} data    {who} {} -> {} {} {} {} total={} captured={}",
            endpoint(&d.local),
            endpoint(&d.remote),
            transport_name(d.transport),
            direction_name(d.direction),
            d.source.name(),
            d.total_len,
            d.data.len()
        ),
        Event::Retransmit(r) => {
            let stack: Vec<&str> = r.frames.iter().map(|f| &**f).collect();
            format!(
                "{time} retrans {who} {} -> {} state={} stack={}",
                endpoint(&r.local),
                endpoint(&r.remote),
                crate::decode::tcp_state_name(r.state),
                stack.join(" <- ")
            )
        }
        Event::Tcp(t) => {
            let arrow = format!("{} -> {}", endpoint(&t.local), endpoint(&t.remote));
            let role = role(t.role).unwrap_or("unknown");
            match t.step {
                TcpStep::Connect => format!("{time} connect {who} {arrow} role={role}"),
                TcpStep::Accept => format!("{time} accept  {who} {arrow} role={role}"),
                TcpStep::Close => format!(
                    "{time} close   {who} {arrow} role={role} sent={} received={} duration={}{}",
                    t.bytes_sent,
                    t.bytes_received,
                    human_duration(t.duration_ns),
                    if t.never_established { " never-established" } else { "" }
                ),
            }
        }
    }
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// One completed exchange as a JSON record (README, "Exchanges").
#[derive(Serialize)]
struct ExchangeJson<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    time_unix_nano: u64,
    hook_form: &'static str,
    protocol: &'static str,
    role: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    method: Option<&'a str>,
    target: &'a str,
    status: Option<u32>,
    duration_ns: u64,
    request_bytes: u64,
    response_bytes: u64,
    pid: u32,
    tid: u32,
    comm: &'a str,
    cgroup_id: u64,
    sock_id: SockToken,
    transport: &'static str,
    local_addr: IpAddr,
    local_port: u16,
    peer_addr: IpAddr,
    peer_port: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    partial: Option<&'a str>,
    /// Retransmits of the connection while the exchange was outstanding.
    #[serde(skip_serializing_if = "is_zero")]
    tcp_retransmits: u32,
    #[serde(flatten)]
    detail: ExchangeDetailJson<'a>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum ExchangeDetailJson<'a> {
    Http {
        http_version: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        host: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        traceparent: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        stream_id: Option<u32>,
    },
    Grpc {
        grpc_service: &'a str,
        grpc_method: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        authority: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        grpc_message: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        traceparent: Option<&'a str>,
        stream_id: u32,
        request_messages: u32,
        response_messages: u32,
    },
    Dns {
        dns_id: u16,
        dns_type: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        dns_rcode: Option<&'a str>,
        dns_answer_count: u16,
        dns_addresses: &'a [IpAddr],
    },
}

fn exchange_json<'a>(record: &'a ExchangeRecord, clock: &Clock) -> ExchangeJson<'a> {
    let e = &record.exchange;
    let o = &record.origin;
    let detail = match &e.detail {
        L7Detail::Http(h) => ExchangeDetailJson::Http {
            http_version: &h.version,
            host: h.host.as_deref(),
            traceparent: h.traceparent.as_deref(),
            stream_id: h.stream_id,
        },
        L7Detail::Grpc(g) => ExchangeDetailJson::Grpc {
            grpc_service: &g.service,
            grpc_method: &g.method,
            authority: g.authority.as_deref(),
            grpc_message: g.grpc_message.as_deref(),
            traceparent: g.traceparent.as_deref(),
            stream_id: g.stream_id,
            request_messages: g.request_messages,
            response_messages: g.response_messages,
        },
        L7Detail::Dns(d) => ExchangeDetailJson::Dns {
            dns_id: d.id,
            dns_type: &d.qtype,
            dns_rcode: d.rcode.as_deref(),
            dns_answer_count: d.answer_count,
            dns_addresses: &d.addresses,
        },
    };
    ExchangeJson {
        kind: "exchange",
        time_unix_nano: clock.unix_nanos(e.start_ns),
        hook_form: HookForm::from(o.hook_form).name(),
        protocol: e.kind.name(),
        role: l7_role(e.role),
        method: e.method.as_deref(),
        target: &e.target,
        status: e.status,
        duration_ns: e.end_ns.saturating_sub(e.start_ns),
        request_bytes: e.request_bytes,
        response_bytes: e.response_bytes,
        pid: o.pid,
        tid: o.tid,
        comm: o.comm.as_str(),
        cgroup_id: o.cgroup_id,
        sock_id: SockToken::of(record.sock_id),
        transport: transport_name(record.transport),
        // Dual-stack sockets (gRPC's, Java's) show IPv4 peers as
        // ::ffff:a.b.c.d; people look for a.b.c.d.
        local_addr: record.local.0.to_canonical(),
        local_port: record.local.1,
        peer_addr: record.peer.0.to_canonical(),
        peer_port: record.peer.1,
        partial: e.partial.as_deref(),
        tcp_retransmits: record.tcp_retransmits,
        detail,
    }
}

/// Where and how records are printed.
#[derive(Debug, Clone, Copy)]
pub struct Sink {
    pub format: OutputFormat,
    pub clock: Clock,
    /// Print data events' metadata too.
    pub data_events: bool,
}

impl Sink {
    /// Appends one event's line to `text`; data events only when asked for.
    /// Returns whether a line was written.
    pub fn event(&self, event: &Event, text: &mut Vec<u8>) -> bool {
        if matches!(event, Event::Data(_)) && !self.data_events {
            return false;
        }
        match self.format {
            OutputFormat::Console => text.extend_from_slice(event_line(event, &self.clock).as_bytes()),
            OutputFormat::Json => write_event_json(text, event, &self.clock),
        }
        text.push(b'\n');
        true
    }

    pub fn exchange(&self, record: &ExchangeRecord, text: &mut Vec<u8>) {
        match self.format {
            OutputFormat::Console => text.extend_from_slice(exchange_line(record, &self.clock).as_bytes()),
            OutputFormat::Json => write_exchange_json(text, record, &self.clock),
        }
        text.push(b'\n');
    }

    /// One finished span (`run --spans`): a readable line, or a JSON record.
    pub fn span(&self, item: &crate::export::SpanItem, text: &mut Vec<u8>) {
        match self.format {
            OutputFormat::Console => text.extend_from_slice(span_line(item).as_bytes()),
            OutputFormat::Json => {
                let _ = serde_json::to_writer(&mut *text, &span_json(item));
            }
        }
        text.push(b'\n');
    }
}

fn any_value_json(value: Option<&opentelemetry_proto::tonic::common::v1::AnyValue>) -> serde_json::Value {
    use opentelemetry_proto::tonic::common::v1::any_value::Value as V;
    match value.and_then(|v| v.value.as_ref()) {
        Some(V::StringValue(s)) => s.clone().into(),
        Some(V::IntValue(i)) => (*i).into(),
        Some(V::BoolValue(b)) => (*b).into(),
        Some(V::DoubleValue(d)) => (*d).into(),
        Some(V::ArrayValue(a)) => a.values.iter().map(|v| any_value_json(Some(v))).collect(),
        _ => serde_json::Value::Null,
    }
}

fn span_kind_name(kind: i32) -> &'static str {
    use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
    match SpanKind::try_from(kind) {
        Ok(SpanKind::Server) => "server",
        Ok(SpanKind::Client) => "client",
        Ok(SpanKind::Internal) => "internal",
        Ok(SpanKind::Producer) => "producer",
        Ok(SpanKind::Consumer) => "consumer",
        _ => "unspecified",
    }
}

fn span_status(span: &opentelemetry_proto::tonic::trace::v1::Span) -> &'static str {
    use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
    match span.status.as_ref().map(|s| StatusCode::try_from(s.code)) {
        Some(Ok(StatusCode::Error)) => "error",
        Some(Ok(StatusCode::Ok)) => "ok",
        _ => "unset",
    }
}

fn resource_value<'a>(
    item: &'a crate::export::SpanItem,
    key: &str,
) -> Option<&'a opentelemetry_proto::tonic::common::v1::AnyValue> {
    item.resource.attributes.iter().find(|kv| kv.key == key).and_then(|kv| kv.value.as_ref())
}

/// The JSON record of one span: ids in hex, attributes as an object.
pub fn span_json(item: &crate::export::SpanItem) -> serde_json::Value {
    let span = &item.span;
    let hex = crate::telemetry::trace_context::hex;
    let attributes: serde_json::Map<String, serde_json::Value> =
        span.attributes.iter().map(|kv| (kv.key.clone(), any_value_json(kv.value.as_ref()))).collect();
    serde_json::json!({
        "type": "span",
        "time_unix_nano": span.end_time_unix_nano,
        "trace_id": hex(&span.trace_id),
        "span_id": hex(&span.span_id),
        "parent_span_id": hex(&span.parent_span_id),
        "trace_state": span.trace_state,
        "name": span.name,
        "kind": span_kind_name(span.kind),
        "start_time_unix_nano": span.start_time_unix_nano,
        "end_time_unix_nano": span.end_time_unix_nano,
        "status": span_status(span),
        "status_message": span.status.as_ref().map(|s| s.message.as_str()).unwrap_or(""),
        "service_name": any_value_json(resource_value(item, "service.name")),
        "pid": any_value_json(resource_value(item, "process.pid")),
        "attributes": attributes,
    })
}

/// The console line of one span.
pub fn span_line(item: &crate::export::SpanItem) -> String {
    let span = &item.span;
    let hex = crate::telemetry::trace_context::hex;
    let service = any_value_json(resource_value(item, "service.name"));
    let pid = any_value_json(resource_value(item, "process.pid"));
    let parent = if span.parent_span_id.is_empty() { "-".to_owned() } else { hex(&span.parent_span_id) };
    format!(
        "{} span    pid={pid} service={} {} {:?} {} duration={} trace={} span={} parent={parent}",
        wall_time(span.start_time_unix_nano),
        service.as_str().unwrap_or("?"),
        span_kind_name(span.kind),
        span.name,
        span_status(span),
        human_duration(span.end_time_unix_nano.saturating_sub(span.start_time_unix_nano)),
        hex(&span.trace_id),
        hex(&span.span_id),
    )
}

/// Appends one exchange's JSON record (no newline) to `out`.
pub fn write_exchange_json(out: &mut Vec<u8>, record: &ExchangeRecord, clock: &Clock) {
    let _ = serde_json::to_writer(out, &exchange_json(record, clock));
}

/// The console line of one exchange.
pub fn exchange_line(record: &ExchangeRecord, clock: &Clock) -> String {
    let e = &record.exchange;
    let o = &record.origin;
    let time = wall_time(clock.unix_nanos(e.start_ns));
    let status = e.status.map_or_else(|| "-".to_owned(), |s| s.to_string());
    let what = match &e.detail {
        L7Detail::Dns(d) => format!("{} {}", d.qtype, e.target),
        _ => format!("{} {}", e.method.as_deref().unwrap_or("-"), e.target),
    };
    format!(
        "{time} {:<7} pid={} comm={} {} {} -> {} {what} status={status} duration={} req={}B resp={}B{}",
        e.kind.name(),
        o.pid,
        o.comm,
        l7_role(e.role),
        endpoint(&(record.local.0.to_canonical(), record.local.1)),
        endpoint(&(record.peer.0.to_canonical(), record.peer.1)),
        human_duration(e.end_ns.saturating_sub(e.start_ns)),
        e.request_bytes,
        e.response_bytes,
        e.partial.as_ref().map(|p| format!(" partial=\"{p}\"")).unwrap_or_default()
    )
}

/// The periodic stats record and the summary at exit share this shape.
#[derive(Debug, Clone, Serialize)]
pub struct StatsRecord {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub time_unix_nano: u64,
    pub uptime_ns: u64,
    pub bpf_stats_enabled: bool,
    pub programs: Vec<ProgramStats>,
    pub sensors: Vec<SensorCounts>,
    pub ledger: LedgerSnapshot,
    pub lost_events: u64,
    /// What the connection table and parsers made of the data events.
    pub l7: ConnCounts,
    /// Spans and metrics made and exported (summary only, when exporting).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub export: Option<crate::run::ExportSummary>,
    /// Packet drops by reason and location (summary only, with the drop sensor).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drops: Option<crate::drops::DropSummary>,
}

/// A drop record as JSON: `{"type":"drop", …}`.
pub fn drop_json(record: &crate::drops::DropRecord, now_unix_ns: u64) -> String {
    #[derive(Serialize)]
    struct DropJson<'a> {
        #[serde(rename = "type")]
        kind: &'static str,
        time_unix_nano: u64,
        #[serde(flatten)]
        record: &'a crate::drops::DropRecord,
    }
    serde_json::to_string(&DropJson { kind: "drop", time_unix_nano: now_unix_ns, record }).unwrap_or_default()
}

/// `12:00:01.000 drop    12 packets NO_SOCKET at tcp_v4_rcv+0x2a5 (ipv4, netns 4026531840), 40 in all`.
pub fn drop_line(record: &crate::drops::DropRecord, now_unix_ns: u64) -> String {
    format!(
        "{} drop    {} packet{} {} at {} ({}), {} in all",
        wall_time(now_unix_ns),
        record.count,
        if record.count == 1 { "" } else { "s" },
        record.reason,
        record.location,
        drop_where(record),
        record.total
    )
}

/// `ipv4, netns 4026531840` (no netns when the packet had no device).
fn drop_where(record: &crate::drops::DropRecord) -> String {
    match record.netns {
        0 => record.protocol.clone(),
        netns => format!("{}, netns {netns}", record.protocol),
    }
}

pub fn unix_now_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
}

pub fn stats_lines(stats: &StatsRecord) -> Vec<String> {
    let l = &stats.ledger;
    let mut lines = vec![format!(
        "kscope {}: {} events read, {} lost in the kernel (per CPU {:?}), {} undecodable, {} dropped at the queue, {} written",
        stats.kind,
        l.read(),
        l.lost(),
        l.lost_per_cpu,
        l.decode_errors,
        l.queue_dropped,
        l.written
    )];
    let c = &stats.l7;
    lines.push(format!(
        "  l7: {} segments ({} of {} bytes captured), {} exchanges, {} unclassified segments, {} parse errors, {} connections not tracked (table full), {} expired",
        c.segments, c.bytes_captured, c.bytes_total, c.exchanges, c.unclassified_segments, c.parse_errors, c.table_full, c.expired
    ));
    for s in &stats.sensors {
        lines.push(format!(
            "  sensor {:<12} emitted={} emit_failed={} table_full={} unreported={}",
            s.sensor, s.emitted, s.emit_failed, s.table_full, s.unreported
        ));
    }
    if let Some(drops) = &stats.drops {
        let top: Vec<String> = drops
            .top
            .iter()
            .map(|d| format!("{} {} at {} ({})", d.total, d.reason, d.location, drop_where(d)))
            .collect();
        let untracked = match drops.untracked {
            0 => String::new(),
            n => format!(" ({n} of them untracked: the drop map was full)"),
        };
        lines.push(format!(
            "  dropped {} packets{untracked}{}{}",
            drops.counted + drops.untracked,
            if top.is_empty() { "" } else { ": " },
            top.join(", ")
        ));
    }
    if stats.bpf_stats_enabled {
        for p in &stats.programs {
            lines.push(format!(
                "  program {:<24} runs={} avg={}ns total={}",
                p.program,
                p.run_count,
                p.avg_ns_per_run,
                human_duration(p.run_time_ns)
            ));
        }
    } else {
        lines.push("  program costs unavailable: BPF run-time statistics could not be enabled".into());
    }
    lines
}

pub fn choice_lines(choices: &[SensorChoice]) -> Vec<String> {
    let mut lines = Vec::new();
    for c in choices {
        match c.chosen {
            Some(form) => lines.push(format!("{:<12} {form:<10} ({})", c.sensor, c.description)),
            None => lines.push(format!("{:<12} {:<10} ({})", c.sensor, "NOT RUNNING", c.description)),
        }
        for r in &c.rejected {
            lines.push(format!("             rejected {}: {}", r.form, r.reason));
        }
        if let Some(d) = &c.degraded {
            lines.push(format!("             degraded: {d}"));
        }
        for f in &c.fallbacks {
            match &f.unavailable {
                None => lines.push(format!("             fallback {}: available", f.form)),
                Some(reason) => lines.push(format!("             fallback {}: unavailable: {reason}", f.form)),
            }
        }
    }
    lines
}

/// `kscope probe`'s table of hooked kernel functions.
pub fn function_lines(reports: &[crate::kernel::FunctionReport]) -> Vec<String> {
    let mut lines = vec!["kernel functions hooked by kprobe and fentry forms:".to_owned()];
    for r in reports {
        let names = match r.kallsyms_names.as_slice() {
            [] => "not in kallsyms (inlined or absent)".to_owned(),
            [only] if *only == r.function => "in kallsyms".to_owned(),
            names => format!("in kallsyms as {}", names.join(", ")),
        };
        let ftrace = match r.traceable {
            Some(true) => "traceable",
            Some(false) => "not traceable",
            None => "traceability unknown",
        };
        let btf = if r.btf { "in BTF" } else { "not in BTF" };
        let kprobe = match &r.kprobe_unusable {
            None => String::new(),
            Some(why) => format!("; kprobe: {why}"),
        };
        lines.push(format!("  {:<24} {names}; {ftrace}; {btf}{kprobe}", r.function));
    }
    lines
}

/// Writes one line; a closed stdout (e.g. `| head`) ends output quietly.
pub fn write_line(out: &mut impl Write, line: &str) -> std::io::Result<()> {
    out.write_all(line.as_bytes())?;
    out.write_all(b"\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::{
        decode,
        tests::{bytes_of, tcp_close},
    };

    #[test]
    fn json_record_has_the_documented_fields() {
        let clock = Clock { realtime_minus_monotonic_ns: 1_700_000_000_000_000_000 };
        let event = decode(&bytes_of(&tcp_close())).unwrap();
        let value = event_json(&event, &clock);
        assert_eq!(
            value,
            json!({
                "type": "tcp.close", "time_unix_nano": 1_700_000_000_000_001_000u64,
                "hook_form": "tracepoint", "pid": 4242, "tid": 4243, "comm": "curl", "cgroup_id": 77,
                "sock_id": sock_token(0xffff_8880_0000_1000), "role": "client",
                "local_addr": "127.0.0.1", "local_port": 40000, "remote_addr": "127.0.0.1", "remote_port": 8080,
                "bytes_sent": 78, "bytes_received": 600, "duration_ns": 5_000_000, "never_established": false
            })
        );
    }

    #[test]
    fn sock_ids_join_records_without_showing_kernel_addresses() {
        let token = sock_token(0xffff_8880_0000_1000);
        assert_eq!(token, sock_token(0xffff_8880_0000_1000));
        assert_ne!(token, sock_token(0xffff_8880_0000_1040));
        assert_eq!(token.len(), 16);
        assert!(!token.contains("ffff8880"), "{token}");
    }

    #[test]
    fn console_line_reads_left_to_right() {
        let clock = Clock { realtime_minus_monotonic_ns: 0 };
        let event = decode(&bytes_of(&tcp_close())).unwrap();
        assert_eq!(
            event_line(&event, &clock),
            "00:00:00.000 close   pid=4242 comm=curl 127.0.0.1:40000 -> 127.0.0.1:8080 role=client sent=78 received=600 duration=5.00ms"
        );
    }

    fn retransmit() -> Event {
        let Ok(Event::Retransmit(mut r)) = decode(&bytes_of(&crate::decode::tests::retransmit_record())) else {
            panic!("not a retransmit")
        };
        r.frames = ["__tcp_retransmit_skb+0x4ea", "tcp_retransmit_skb+0x12", "tcp_retransmit_timer+0x667"]
            .into_iter()
            .map(std::sync::Arc::from)
            .collect();
        Event::Retransmit(r)
    }

    #[test]
    fn retransmit_shows_the_stack_as_symbols_only() {
        let clock = Clock { realtime_minus_monotonic_ns: 1_700_000_000_000_000_000 };
        let value = event_json(&retransmit(), &clock);
        assert_eq!(
            value,
            json!({
                "type": "tcp.retransmit", "time_unix_nano": 1_700_000_000_000_001_000u64,
                "hook_form": "tracepoint", "pid": 4242, "tid": 4243, "comm": "curl", "cgroup_id": 77,
                "sock_id": sock_token(0xffff_8880_0000_2000), "state": "ESTABLISHED",
                "local_addr": "10.213.0.1", "local_port": 45792, "remote_addr": "10.213.0.2", "remote_port": 9099,
                "stack": ["__tcp_retransmit_skb+0x4ea", "tcp_retransmit_skb+0x12", "tcp_retransmit_timer+0x667"]
            })
        );
        assert!(!value.to_string().contains("ffffffff81"), "no raw kernel address: {value}");
        let clock = Clock { realtime_minus_monotonic_ns: 0 };
        assert_eq!(
            event_line(&retransmit(), &clock),
            "00:00:00.000 retrans pid=4242 comm=curl 10.213.0.1:45792 -> 10.213.0.2:9099 state=ESTABLISHED \
             stack=__tcp_retransmit_skb+0x4ea <- tcp_retransmit_skb+0x12 <- tcp_retransmit_timer+0x667"
        );
    }

    #[test]
    fn drop_records_read_as_counts_at_a_place() {
        let record = crate::drops::DropRecord {
            reason: "NO_SOCKET".into(),
            reason_code: 3,
            protocol: "ipv4".into(),
            netns: 4_026_531_840,
            location: "tcp_v4_rcv+0x99".into(),
            function: "tcp_v4_rcv".into(),
            count: 12,
            total: 40,
        };
        assert_eq!(
            drop_line(&record, 3_600_000_000_000),
            "01:00:00.000 drop    12 packets NO_SOCKET at tcp_v4_rcv+0x99 (ipv4, netns 4026531840), 40 in all"
        );
        let no_device = crate::drops::DropRecord { netns: 0, count: 1, ..record.clone() };
        assert_eq!(
            drop_line(&no_device, 0),
            "00:00:00.000 drop    1 packet NO_SOCKET at tcp_v4_rcv+0x99 (ipv4), 40 in all"
        );
        let value: Value = serde_json::from_str(&drop_json(&record, 5)).unwrap();
        assert_eq!(
            value,
            json!({
                "type": "drop", "time_unix_nano": 5, "reason": "NO_SOCKET", "reason_code": 3, "protocol": "ipv4",
                "netns": 4_026_531_840u32, "location": "tcp_v4_rcv+0x99", "function": "tcp_v4_rcv", "count": 12,
                "total": 40
            })
        );
    }

    #[test]
    fn probe_explains_each_hooked_function() {
        use crate::kernel::FunctionReport;
        let report = |function: &str, names: &[&str], traceable, btf, why: Option<&str>| FunctionReport {
            function: function.into(),
            kallsyms_names: names.iter().map(|n| (*n).to_owned()).collect(),
            traceable,
            btf,
            kprobe_unusable: why.map(str::to_owned),
        };
        let lines = function_lines(&[
            report("tcp_connect", &["tcp_connect"], Some(true), true, None),
            report("do_exit", &["do_exit", "do_exit.cold"], None, true, None),
            report(
                "tcp_sendpage",
                &[],
                Some(false),
                false,
                Some("tcp_sendpage is not in this kernel (inlined or absent)"),
            ),
            report(
                "foo",
                &["foo.isra.0"],
                None,
                false,
                Some("foo is only in this kernel as foo.isra.0 (a compiler clone)"),
            ),
        ]);
        assert_eq!(
            lines,
            [
                "kernel functions hooked by kprobe and fentry forms:",
                "  tcp_connect              in kallsyms; traceable; in BTF",
                "  do_exit                  in kallsyms as do_exit, do_exit.cold; traceability unknown; in BTF",
                "  tcp_sendpage             not in kallsyms (inlined or absent); not traceable; not in BTF; kprobe: tcp_sendpage is not in this kernel (inlined or absent)",
                "  foo                      in kallsyms as foo.isra.0; traceability unknown; not in BTF; kprobe: foo is only in this kernel as foo.isra.0 (a compiler clone)",
            ]
        );
    }

    fn exit_at(ts: u64) -> Event {
        let mut raw = kscope_common::ProcessExitEvent {
            header: crate::decode::tests::header(kscope_common::EventKind::ProcessExit),
            ppid: 1,
            exit_status: 0,
            lifetime_ns: 0,
        };
        raw.header.timestamp_ns = ts;
        decode(&bytes_of(&raw)).unwrap()
    }

    fn stamps(events: &[Event]) -> Vec<u64> {
        events.iter().map(|e| e.origin().timestamp_ns).collect()
    }

    #[test]
    fn reorder_lets_out_in_time_order_up_to_the_watermark() {
        let mut r = Reorder::new(100);
        for ts in [30, 10, 50, 20, 40] {
            r.push(exit_at(ts));
        }
        assert_eq!(stamps(&r.ready(35)), vec![10, 20, 30]);
        assert_eq!(r.len(), 2);
        assert_eq!(stamps(&r.ready(u64::MAX)), vec![40, 50]);
    }

    #[test]
    fn reorder_is_bounded() {
        let mut r = Reorder::new(2);
        for ts in [3, 1, 2, 5] {
            r.push(exit_at(ts));
        }
        // Nothing is due yet, but only two may wait: the oldest go early.
        assert_eq!(stamps(&r.ready(0)), vec![1, 2]);
        assert_eq!(r.len(), 2);
    }

    #[test]
    fn durations_pick_a_unit() {
        assert_eq!(human_duration(1_500), "1.5us");
        assert_eq!(human_duration(2_500_000), "2.50ms");
        assert_eq!(human_duration(3_000_000_000), "3.00s");
    }

    #[test]
    fn spans_as_lines_and_records() {
        use crate::telemetry::resource::{int_attr, string_attr};
        use opentelemetry_proto::tonic::trace::v1::{Span, Status, span::SpanKind, status::StatusCode};
        let item = crate::export::SpanItem {
            resource: std::sync::Arc::new(crate::export::Resource {
                attributes: vec![string_attr("service.name", "nginx"), int_attr("process.pid", 42)],
                ..Default::default()
            }),
            span: Span {
                trace_id: vec![0x4b; 16],
                span_id: vec![1, 2, 3, 4, 5, 6, 7, 8],
                name: "GET /users/{id}".into(),
                kind: SpanKind::Server as i32,
                start_time_unix_nano: 3_723_004_000_000,
                end_time_unix_nano: 3_723_006_500_000,
                attributes: vec![int_attr("http.response.status_code", 503)],
                status: Some(Status { message: String::new(), code: StatusCode::Error as i32 }),
                ..Default::default()
            },
        };
        assert_eq!(
            span_line(&item),
            "01:02:03.004 span    pid=42 service=nginx server \"GET /users/{id}\" error duration=2.50ms \
             trace=4b4b4b4b4b4b4b4b4b4b4b4b4b4b4b4b span=0102030405060708 parent=-"
        );
        assert_eq!(
            span_json(&item),
            json!({
                "type": "span", "time_unix_nano": 3_723_006_500_000u64,
                "trace_id": "4b4b4b4b4b4b4b4b4b4b4b4b4b4b4b4b", "span_id": "0102030405060708", "parent_span_id": "",
                "trace_state": "", "name": "GET /users/{id}", "kind": "server",
                "start_time_unix_nano": 3_723_004_000_000u64, "end_time_unix_nano": 3_723_006_500_000u64,
                "status": "error", "status_message": "", "service_name": "nginx", "pid": 42,
                "attributes": {"http.response.status_code": 503},
            })
        );
    }
}
