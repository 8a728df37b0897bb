//! The OpenTelemetry semantic conventions kscope follows: one version, one
//! place for every attribute and metric name.
//!
//! The names are those of semconv 1.27.0 (sent as the schema URL), with one
//! exception: the RPC duration histograms use the later
//! `rpc.{server,client}.call.duration` names in seconds (the 1.27 names were
//! `rpc.{server,client}.duration` in milliseconds), keeping the 1.27 RPC
//! attributes. Attributes the conventions do not define carry a `kscope.`
//! prefix.

/// The semantic conventions version the names below come from; sent as the
/// schema URL of every resource and scope.
pub const VERSION: &str = "1.27.0";
pub const SCHEMA_URL: &str = "https://opentelemetry.io/schemas/1.27.0";

/// The instrumentation scope of everything kscope produces.
pub const SCOPE_NAME: &str = "kscope";

// Resource.
pub const SERVICE_NAME: &str = "service.name";
pub const SERVICE_INSTANCE_ID: &str = "service.instance.id";
pub const HOST_NAME: &str = "host.name";
pub const PROCESS_PID: &str = "process.pid";
pub const PROCESS_EXECUTABLE_NAME: &str = "process.executable.name";
pub const PROCESS_EXECUTABLE_PATH: &str = "process.executable.path";
pub const CONTAINER_ID: &str = "container.id";
pub const TELEMETRY_DISTRO_NAME: &str = "telemetry.distro.name";
pub const TELEMETRY_DISTRO_VERSION: &str = "telemetry.distro.version";

// HTTP.
pub const HTTP_REQUEST_METHOD: &str = "http.request.method";
pub const HTTP_REQUEST_METHOD_ORIGINAL: &str = "http.request.method_original";
pub const HTTP_RESPONSE_STATUS_CODE: &str = "http.response.status_code";
pub const HTTP_ROUTE: &str = "http.route";
pub const URL_PATH: &str = "url.path";
pub const URL_QUERY: &str = "url.query";
pub const URL_SCHEME: &str = "url.scheme";
pub const URL_FULL: &str = "url.full";
pub const URL_TEMPLATE: &str = "url.template";

// Network.
pub const SERVER_ADDRESS: &str = "server.address";
pub const SERVER_PORT: &str = "server.port";
pub const CLIENT_ADDRESS: &str = "client.address";
pub const CLIENT_PORT: &str = "client.port";
pub const NETWORK_PEER_ADDRESS: &str = "network.peer.address";
pub const NETWORK_PEER_PORT: &str = "network.peer.port";
pub const NETWORK_PROTOCOL_NAME: &str = "network.protocol.name";
pub const NETWORK_PROTOCOL_VERSION: &str = "network.protocol.version";
pub const NETWORK_TRANSPORT: &str = "network.transport";
pub const NETWORK_IO_DIRECTION: &str = "network.io.direction";
pub const THREAD_ID: &str = "thread.id";
pub const ERROR_TYPE: &str = "error.type";

// RPC.
pub const RPC_SYSTEM: &str = "rpc.system";
pub const RPC_SERVICE: &str = "rpc.service";
pub const RPC_METHOD: &str = "rpc.method";
pub const RPC_GRPC_STATUS_CODE: &str = "rpc.grpc.status_code";

// DNS: only the name is in the conventions.
pub const DNS_QUESTION_NAME: &str = "dns.question.name";
pub const DNS_ANSWERS: &str = "dns.answers";
pub const KSCOPE_DNS_QUESTION_TYPE: &str = "kscope.dns.question.type";
pub const KSCOPE_DNS_RESPONSE_CODE: &str = "kscope.dns.response_code";

// kscope's own.
pub const KSCOPE_PARTIAL: &str = "kscope.partial";
pub const KSCOPE_SENSOR: &str = "kscope.sensor";
pub const KSCOPE_HOOK_FORM: &str = "kscope.hook_form";
pub const KSCOPE_PROGRAM: &str = "kscope.program";
pub const KSCOPE_CPU: &str = "kscope.cpu";
pub const KSCOPE_TCP_ROLE: &str = "kscope.tcp.role";
pub const KSCOPE_OUTCOME: &str = "kscope.outcome";
pub const KSCOPE_STAGE: &str = "kscope.stage";

/// `error.type` when a request got no response (connection closed, or the
/// response was not seen).
pub const ERROR_NO_RESPONSE: &str = "kscope.no_response";
/// The conventions' value for "none of the known values".
pub const OTHER: &str = "_OTHER";

/// The bucket boundaries the conventions advise for every duration histogram
/// kscope records.
pub const DURATION_BUCKETS: [f64; 14] =
    [0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Instrument {
    /// Explicit-bucket histogram of seconds, [`DURATION_BUCKETS`].
    DurationHistogram,
    /// Monotonic cumulative sum of integers.
    Counter,
    /// Monotonic cumulative sum of seconds (a double).
    SecondsCounter,
    /// Last value.
    Gauge,
}

/// A metric's identity as exported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MetricDef {
    pub name: &'static str,
    pub unit: &'static str,
    pub description: &'static str,
    pub instrument: Instrument,
}

const fn histogram(name: &'static str, description: &'static str) -> MetricDef {
    MetricDef { name, unit: "s", description, instrument: Instrument::DurationHistogram }
}

const fn counter(name: &'static str, unit: &'static str, description: &'static str) -> MetricDef {
    MetricDef { name, unit, description, instrument: Instrument::Counter }
}

const fn gauge(name: &'static str, unit: &'static str, description: &'static str) -> MetricDef {
    MetricDef { name, unit, description, instrument: Instrument::Gauge }
}

pub const HTTP_SERVER_REQUEST_DURATION: MetricDef =
    histogram("http.server.request.duration", "Duration of HTTP server requests.");
pub const HTTP_CLIENT_REQUEST_DURATION: MetricDef =
    histogram("http.client.request.duration", "Duration of HTTP client requests.");
pub const RPC_SERVER_CALL_DURATION: MetricDef =
    histogram("rpc.server.call.duration", "Measures the duration of an incoming Remote Procedure Call (RPC).");
pub const RPC_CLIENT_CALL_DURATION: MetricDef =
    histogram("rpc.client.call.duration", "Measures the duration of an outgoing Remote Procedure Call (RPC).");
pub const DNS_LOOKUP_DURATION: MetricDef =
    histogram("dns.lookup.duration", "Measures the time taken to perform a DNS lookup.");
pub const TCP_CONNECTIONS_OPENED: MetricDef =
    counter("kscope.tcp.connections.opened", "{connection}", "TCP connections established (connect or accept).");
pub const TCP_CONNECTIONS_CLOSED: MetricDef =
    counter("kscope.tcp.connections.closed", "{connection}", "TCP connections closed.");
pub const TCP_IO: MetricDef =
    counter("kscope.tcp.io", "By", "Bytes moved by closed TCP connections, by direction (the kernel's own counts).");
pub const TCP_RETRANSMITS: MetricDef = counter(
    "kscope.tcp.retransmits",
    "{segment}",
    "TCP segments retransmitted, on the connection owner's resource (kscope's own when the owner is unknown).",
);
pub const PACKET_DROPS: MetricDef = counter(
    "kscope.network.packet.drops",
    "{packet}",
    "Packets the kernel dropped, by drop reason and the kernel function that dropped them (host-wide).",
);
/// On a span: TCP segments its connection retransmitted while the exchange
/// was outstanding (present only when some were).
pub const KSCOPE_TCP_RETRANSMITS: &str = "kscope.tcp.retransmits";
/// `kscope.tcp.retransmits`: the connection's TCP state.
pub const KSCOPE_TCP_STATE: &str = "kscope.tcp.state";
/// `kscope.network.packet.drops`: the kernel's drop reason name.
pub const KSCOPE_DROP_REASON: &str = "kscope.drop.reason";
/// `kscope.network.packet.drops`: the kernel function that freed the packet.
pub const KSCOPE_DROP_LOCATION: &str = "kscope.drop.location";
/// `kscope.network.packet.drops`: `ipv4`, `ipv6`, `arp`, or the EtherType in hex.
pub const KSCOPE_DROP_PROTOCOL: &str = "kscope.drop.protocol";
/// `kscope.network.packet.drops`: the network namespace's inode (which pod
/// or container), absent when the packet had no device.
pub const KSCOPE_NETNS: &str = "kscope.network.namespace";

// kscope's own health, on kscope's resource.
pub const KSCOPE_SENSOR_EVENTS: MetricDef =
    counter("kscope.sensor.events", "{event}", "Events each sensor's programs wrote into the per-CPU buffers.");
pub const KSCOPE_SENSOR_EVENTS_FAILED: MetricDef =
    counter("kscope.sensor.events.failed", "{event}", "Events a sensor could not write (buffer full).");
pub const KSCOPE_EVENTS_LOST: MetricDef =
    counter("kscope.events.lost", "{event}", "Events the kernel reported lost, per CPU buffer.");
pub const KSCOPE_PIPELINE_EVENTS: MetricDef =
    counter("kscope.pipeline.events", "{event}", "Events at each userspace stage (read, decoded, dropped, ...).");
pub const KSCOPE_L7_UNPARSED: MetricDef = counter(
    "kscope.l7.unparsed",
    "{segment}",
    "Payload segments not turned into exchanges, by reason (parse error, unknown protocol, table full).",
);
pub const KSCOPE_EXCHANGES: MetricDef = counter("kscope.l7.exchanges", "{exchange}", "Exchanges completed.");
pub const KSCOPE_SPANS: MetricDef =
    counter("kscope.export.spans", "{span}", "Spans by outcome: exported, dropped (queue full), failed.");
pub const KSCOPE_DATA_POINTS: MetricDef =
    counter("kscope.export.data_points", "{data_point}", "Metric data points by outcome: exported, failed.");
pub const KSCOPE_QUEUE_DEPTH: MetricDef =
    gauge("kscope.queue.depth", "{item}", "Items waiting in a bounded queue, by stage.");
pub const KSCOPE_HOOK_FORM_INFO: MetricDef =
    gauge("kscope.sensor.hook_form", "", "1 for the hook form each sensor runs on.");
pub const KSCOPE_PROGRAM_RUNS: MetricDef = counter("kscope.program.runs", "{run}", "Runs of each kernel program.");
pub const KSCOPE_PROGRAM_RUN_TIME: MetricDef = MetricDef {
    name: "kscope.program.run_time",
    unit: "s",
    description: "Time spent in each kernel program (divide by runs: the cost of one hit).",
    instrument: Instrument::SecondsCounter,
};
