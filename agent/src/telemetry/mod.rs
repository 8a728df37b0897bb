//! Exchanges and connection events → spans and metrics, named and shaped by
//! the OpenTelemetry semantic conventions (the version in [`semconv`]).
//!
//! One stage: it reads the connection table's exchange records and the
//! decoded process/TCP events, and hands finished spans (with the resource
//! of the process that made them) and cumulative metrics to the exporters.

pub mod conventions;
pub mod health;
pub mod links;
pub mod metrics;
pub mod resource;
pub mod routes;
pub mod sampling;
pub mod semconv;
pub mod trace_context;

use std::{
    path::PathBuf,
    sync::{Arc, Mutex},
};

use kscope_common::TcpRole;
use kscope_protocols::Detail;
use opentelemetry_proto::tonic::{
    common::v1::any_value::Value,
    trace::v1::{Span, Status},
};

use self::{
    links::{IdGenerator, LinkCounts, LinkWaits, PendingSpan, SpanLinker},
    metrics::{MetricLimits, MetricStore, attr},
    resource::{ProcessRef, ResourceCache},
    routes::RouteTable,
    trace_context::TraceParent,
};
use crate::{
    conntrack::ExchangeRecord,
    decode::{Event, TcpStep},
    export::{Resource, SpanItem},
    output::Clock,
};

#[derive(Debug, Clone)]
pub struct TelemetryOptions {
    /// Make spans (someone takes them).
    pub traces: bool,
    /// Record metrics (someone reads them).
    pub metrics: bool,
    /// Routes per service before the rest share `_OTHER`.
    pub route_cap: usize,
    pub metric_limits: MetricLimits,
    pub link_waits: LinkWaits,
    /// `OTEL_RESOURCE_ATTRIBUTES` given to kscope, added to every resource.
    pub resource_attributes: Vec<(String, String)>,
    /// Where `/proc` is (a DaemonSet mounts the host's elsewhere).
    pub proc_root: PathBuf,
    /// Processes whose resources are cached at most.
    pub processes: usize,
    /// kscope's own pid: the far end of its export connections (a collector
    /// on this host) is not traced, or each export would make a span.
    pub own_pid: u32,
}

impl Default for TelemetryOptions {
    fn default() -> Self {
        Self {
            traces: true,
            metrics: true,
            route_cap: 200,
            metric_limits: MetricLimits::default(),
            link_waits: LinkWaits::default(),
            resource_attributes: Vec::new(),
            proc_root: PathBuf::from("/proc"),
            processes: 16384,
            own_pid: std::process::id(),
        }
    }
}

/// Services whose routes are bounded one by one; beyond, all share `_OTHER`.
const MAX_ROUTED_SERVICES: usize = 1024;

pub struct Telemetry {
    opts: TelemetryOptions,
    clock: Clock,
    resources: ResourceCache,
    routes: RouteTable,
    linker: SpanLinker,
    metrics: Arc<Mutex<MetricStore>>,
    /// Local ends of kscope's own connections (its exports).
    own_endpoints: std::collections::HashSet<(std::net::IpAddr, u16)>,
    /// Exchanges served to kscope itself, not traced.
    pub own_exchanges_skipped: u64,
}

/// kscope's own connections tracked at most (it makes a handful).
const MAX_OWN_ENDPOINTS: usize = 1024;

impl Telemetry {
    pub fn new(opts: TelemetryOptions, clock: Clock, ids: IdGenerator) -> Self {
        let resources = ResourceCache::new(&opts.proc_root, opts.resource_attributes.clone(), opts.processes);
        Self {
            clock,
            resources,
            routes: RouteTable::new(opts.route_cap, MAX_ROUTED_SERVICES),
            linker: SpanLinker::new(opts.link_waits, ids),
            metrics: Arc::new(Mutex::new(MetricStore::new(opts.metric_limits))),
            own_endpoints: std::collections::HashSet::new(),
            own_exchanges_skipped: 0,
            opts,
        }
    }

    /// The store the exporters read.
    pub fn metric_store(&self) -> Arc<Mutex<MetricStore>> {
        Arc::clone(&self.metrics)
    }

    /// kscope's own resource.
    pub fn agent_resource(&self) -> Arc<Resource> {
        self.resources.agent()
    }

    pub fn link_counts(&self) -> LinkCounts {
        self.linker.counts
    }

    /// Spans waiting for a parent.
    pub fn waiting_spans(&self) -> usize {
        self.linker.len()
    }

    /// Route templates that fell into `_OTHER`.
    pub fn routes_overflowed(&self) -> u64 {
        self.routes.overflowed
    }

    fn store(&self) -> std::sync::MutexGuard<'_, MetricStore> {
        self.metrics.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn on_event(&mut self, event: &Event) {
        match event {
            Event::Exec(exec) => self.resources.on_exec(exec.origin.pid, &exec.filename),
            Event::Exit(exit) => {
                let pid = exit.origin.pid;
                if self.opts.metrics {
                    let resource = self.resources.get(ProcessRef { pid, comm: exit.origin.comm.as_str() });
                    let now = self.clock.unix_nanos(exit.origin.timestamp_ns);
                    self.store().exited(&resource, now);
                }
                self.resources.on_exit(pid);
                self.linker.forget_process(pid);
            }
            Event::Tcp(tcp) => {
                let pid = tcp.origin.pid;
                if pid == self.opts.own_pid {
                    let local = (tcp.local.0.to_canonical(), tcp.local.1);
                    match tcp.step {
                        TcpStep::Connect if self.own_endpoints.len() < MAX_OWN_ENDPOINTS => {
                            self.own_endpoints.insert(local);
                        }
                        TcpStep::Close => {
                            self.own_endpoints.remove(&local);
                        }
                        _ => {}
                    }
                    return;
                }
                if tcp.step == TcpStep::Accept {
                    self.linker.note_serving(pid);
                }
                if !self.opts.metrics || pid == 0 {
                    return;
                }
                let resource = self.resources.get(ProcessRef { pid, comm: tcp.origin.comm.as_str() });
                let now = self.clock.unix_nanos(tcp.origin.timestamp_ns);
                let role = match tcp.role {
                    Some(TcpRole::Client) => "client",
                    Some(TcpRole::Server) => "server",
                    None => "unknown",
                };
                let role = || vec![attr(semconv::KSCOPE_TCP_ROLE, role)];
                let mut store = self.store();
                match tcp.step {
                    TcpStep::Connect | TcpStep::Accept => {
                        store.add(&resource, semconv::TCP_CONNECTIONS_OPENED, role(), 1, now);
                    }
                    TcpStep::Close => {
                        store.add(&resource, semconv::TCP_CONNECTIONS_CLOSED, role(), 1, now);
                        for (direction, bytes) in [("transmit", tcp.bytes_sent), ("receive", tcp.bytes_received)] {
                            let attrs = vec![attr(semconv::NETWORK_IO_DIRECTION, direction)];
                            store.add(&resource, semconv::TCP_IO, attrs, bytes, now);
                        }
                    }
                }
            }
            Event::Retransmit(rtx) => {
                if !self.opts.metrics || rtx.origin.pid == self.opts.own_pid && rtx.origin.pid != 0 {
                    return;
                }
                let resource = match rtx.origin.pid {
                    0 => self.agent_resource(),
                    pid => self.resources.get(ProcessRef { pid, comm: rtx.origin.comm.as_str() }),
                };
                let now = self.clock.unix_nanos(rtx.origin.timestamp_ns);
                let attrs = vec![attr(semconv::KSCOPE_TCP_STATE, crate::decode::tcp_state_name(rtx.state))];
                self.store().add(&resource, semconv::TCP_RETRANSMITS, attrs, 1, now);
            }
            Event::Data(_) => {}
        }
    }

    pub fn on_exchange(&mut self, record: &ExchangeRecord) {
        if !self.opts.traces && !self.opts.metrics {
            return;
        }
        let origin = &record.origin;
        let peer = (record.peer.0.to_canonical(), record.peer.1);
        if record.exchange.role == kscope_protocols::Role::Server && self.own_endpoints.contains(&peer) {
            self.own_exchanges_skipped += 1;
            return;
        }
        let resource = self.resources.get(ProcessRef { pid: origin.pid, comm: origin.comm.as_str() });
        let ex = &record.exchange;
        let (remote, stream_id) = match &ex.detail {
            Detail::Http(h) => (trace_parent(h.traceparent.as_deref(), h.tracestate.as_deref()), h.stream_id),
            Detail::Grpc(g) => (trace_parent(g.traceparent.as_deref(), g.tracestate.as_deref()), Some(g.stream_id)),
            Detail::Dns(_) => (None, None),
        };
        let route = match &ex.detail {
            Detail::Http(_) => self.routes.route(service_name(&resource), &ex.target),
            Detail::Grpc(_) | Detail::Dns(_) => String::new(),
        };
        let described = conventions::describe(record, &route);
        let (start, end) = (self.clock.unix_nanos(ex.start_ns), self.clock.unix_nanos(ex.end_ns.max(ex.start_ns)));
        if self.opts.metrics
            && let Some((def, keys)) = described.metric
        {
            let seconds = ex.end_ns.saturating_sub(ex.start_ns) as f64 / 1e9;
            self.store().record_from(&resource, def, (&described.span_attributes, keys), seconds, end);
        }
        if !self.opts.traces {
            return;
        }
        let span = Span {
            name: described.name,
            kind: described.kind as i32,
            start_time_unix_nano: start,
            end_time_unix_nano: end,
            attributes: described.span_attributes,
            status: Some(Status { message: described.status_message, code: described.status as i32 }),
            ..Default::default()
        };
        let peer = ex.peer.map_or(record.peer, |p| (p.ip(), p.port()));
        self.linker.add(PendingSpan {
            resource,
            span,
            role: ex.role,
            pid: origin.pid,
            tid: origin.tid,
            start_ns: ex.start_ns,
            end_ns: ex.end_ns,
            transport: record.transport,
            local: (record.local.0.to_canonical(), record.local.1),
            peer: (peer.0.to_canonical(), peer.1),
            stream_id,
            remote,
        });
    }

    /// Spans whose trace is settled at monotonic time `now_ns`; drops
    /// exited processes' metrics past their retention.
    pub fn release(&mut self, now_ns: u64, out: &mut Vec<SpanItem>) {
        self.linker.release(now_ns, out);
        if self.opts.metrics {
            let now = self.clock.unix_nanos(now_ns);
            self.store().expire(now);
        }
    }

    /// Every span still waiting (the run is ending).
    pub fn finish(&mut self, out: &mut Vec<SpanItem>) {
        self.linker.finish(out);
    }
}

fn trace_parent(traceparent: Option<&str>, tracestate: Option<&str>) -> Option<(TraceParent, String)> {
    let tp = TraceParent::parse(traceparent?)?;
    Some((tp, trace_context::tracestate(tracestate)))
}

pub fn service_name(resource: &Resource) -> &str {
    resource
        .attributes
        .iter()
        .find(|kv| kv.key == semconv::SERVICE_NAME)
        .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
            Value::StringValue(s) => Some(s.as_str()),
            _ => None,
        })
        .unwrap_or_default()
}

/// The attributes of `kscope.network.packet.drops` for one drop record:
/// the function without its offset, so a series is one place in the code.
pub fn drop_attributes(record: &crate::drops::DropRecord) -> Vec<opentelemetry_proto::tonic::common::v1::KeyValue> {
    let mut attrs = vec![
        attr(semconv::KSCOPE_DROP_REASON, &*record.reason),
        attr(semconv::KSCOPE_DROP_LOCATION, record.function.as_str()),
        attr(semconv::KSCOPE_DROP_PROTOCOL, record.protocol.as_str()),
    ];
    if record.netns != 0 {
        attrs.push(attr(semconv::KSCOPE_NETNS, record.netns.to_string()));
    }
    attrs
}

#[cfg(test)]
mod tests;
