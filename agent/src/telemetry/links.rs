//! Puts spans into traces: a received `traceparent` makes a server span its
//! child; a client call made by a thread while it serves a request becomes
//! that server span's child; the two ends of one connection on this host
//! (client span, server span) land in one trace, the server's parent being
//! the client's span.
//!
//! Exchanges complete inner-first (a server's response is sent before its
//! client reads it; a downstream call returns before the request that made
//! it), so a span's parent always arrives after it. Spans wait here, bounded
//! in time and number, until their parent arrives or the wait ends.

use std::{
    collections::{BTreeMap, HashMap, HashSet, VecDeque},
    net::IpAddr,
    sync::Arc,
};

use kscope_protocols::{Role, Transport};
use opentelemetry_proto::tonic::trace::v1::Span;

use super::trace_context::TraceParent;
use crate::export::{Resource, SpanItem};

/// OTLP span flags: the "is remote" bit is known, and set.
const FLAG_HAS_IS_REMOTE: u32 = 0x100;
const FLAG_IS_REMOTE: u32 = 0x200;
/// Trace flags kscope sets on a trace it starts: sampled (it records all).
const SAMPLED: u32 = 0x01;

/// A span with what linking needs to know of it; ids are filled at release.
#[derive(Debug, Clone)]
pub struct PendingSpan {
    pub resource: Arc<Resource>,
    pub span: Span,
    pub role: Role,
    pub pid: u32,
    pub tid: u32,
    /// Kernel monotonic times of the exchange.
    pub start_ns: u64,
    pub end_ns: u64,
    pub transport: Transport,
    pub local: (IpAddr, u16),
    pub peer: (IpAddr, u16),
    /// HTTP/2 stream, to pair the two ends of one multiplexed connection.
    pub stream_id: Option<u32>,
    /// The request's valid `traceparent` and its `tracestate`.
    pub remote: Option<(TraceParent, String)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Link {
    /// Waiting for a parent until this monotonic time.
    Undecided {
        until_ns: u64,
    },
    Remote,
    Local(u64),
    /// A parent already released (the client end of this connection).
    Known {
        trace_id: [u8; 16],
        span_id: [u8; 8],
    },
    Root,
}

/// A client span recently seen, for the server end of its connection
/// that may come later (each end's exchange completes at a syscall's
/// return, and the client's may return first).
#[derive(Debug)]
struct RecentClient {
    seq: u64,
    start_ns: u64,
    end_ns: u64,
    stream_id: Option<u32>,
    /// Filled when the client span is released.
    ids: Option<([u8; 16], [u8; 8])>,
}

/// How well a client exchange and a server exchange are the two ends of one
/// request on one connection: `None` if they can't be, else the distance of
/// their starts (smaller is better). Timestamps are taken at syscall returns
/// on different CPUs, so only causal order is trusted, and only one order is
/// causal: the server's receive returned before it answered, which is before
/// the client's read of the answer returned. The client's send is not: its
/// data is delivered inside the syscall, so the server can receive, answer
/// and return while the client's thread is still preempted on its way out of
/// `sendmsg` (seen with dig and dnsmasq on a loaded 2-CPU machine).
fn ends_distance(client: (u64, u64, Option<u32>), server: (u64, u64, Option<u32>)) -> Option<u64> {
    let same_stream = match (client.2, server.2) {
        (Some(a), Some(b)) => a == b,
        _ => true,
    };
    (same_stream && server.0 <= client.1).then(|| client.0.abs_diff(server.0))
}

/// Recent client spans remembered at most.
const MAX_RECENT_CLIENTS: usize = 65536;

#[derive(Debug)]
struct Held {
    pending: PendingSpan,
    link: Link,
    span_id: [u8; 8],
    /// Used if this span turns out to start a trace.
    own_trace: [u8; 16],
}

/// How spans were linked (the summary's `export.spans`).
pub use kscope_schema::LinkCounts;

/// Waits and bounds for [`SpanLinker`].
#[derive(Debug, Clone, Copy)]
pub struct LinkWaits {
    /// How long a server span waits for the client span of its connection.
    pub peer_ns: u64,
    /// How long a client span of a serving process waits for the server
    /// span that encloses it (longer requests lose the link).
    pub enclosing_ns: u64,
    /// Spans held at most.
    pub capacity: usize,
}

impl Default for LinkWaits {
    fn default() -> Self {
        Self { peer_ns: 1_000_000_000, enclosing_ns: 5_000_000_000, capacity: 16384 }
    }
}

type ConnKey = (Transport, (IpAddr, u16), (IpAddr, u16));

/// Processes seen serving, so their client spans wait for a parent and
/// other processes' don't; bounded.
const MAX_SERVING: usize = 65536;

#[derive(Debug)]
pub struct SpanLinker {
    waits: LinkWaits,
    /// Boxed: a span is large, and B-tree nodes move their values.
    held: BTreeMap<u64, Box<Held>>,
    next_seq: u64,
    /// Client spans waiting for an enclosing server span, by (pid, tid).
    awaiting_enclosing: HashMap<(u32, u32), Vec<u64>>,
    /// Server spans waiting for their client, by (transport, server's local, server's peer).
    awaiting_client: HashMap<ConnKey, Vec<u64>>,
    /// Client spans of the last `peer_ns`, by (transport, client's peer, client's local).
    recent_clients: HashMap<ConnKey, VecDeque<RecentClient>>,
    recent_count: usize,
    serving: HashSet<u32>,
    serving_order: VecDeque<u32>,
    ids: IdGenerator,
    pub counts: LinkCounts,
}

impl SpanLinker {
    pub fn new(waits: LinkWaits, ids: IdGenerator) -> Self {
        Self {
            waits,
            held: BTreeMap::new(),
            next_seq: 0,
            awaiting_enclosing: HashMap::new(),
            awaiting_client: HashMap::new(),
            recent_clients: HashMap::new(),
            recent_count: 0,
            serving: HashSet::new(),
            serving_order: VecDeque::new(),
            ids,
            counts: LinkCounts::default(),
        }
    }

    /// Spans waiting.
    pub fn len(&self) -> usize {
        self.held.len()
    }

    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }

    /// Notes that `pid` serves requests (an accepted connection, or a
    /// server exchange), so its client calls may have a parent.
    pub fn note_serving(&mut self, pid: u32) {
        if self.serving.insert(pid) {
            self.serving_order.push_back(pid);
            if self.serving_order.len() > MAX_SERVING
                && let Some(old) = self.serving_order.pop_front()
            {
                self.serving.remove(&old);
            }
        }
    }

    pub fn forget_process(&mut self, pid: u32) {
        if self.serving.remove(&pid) {
            self.serving_order.retain(|p| *p != pid);
        }
    }

    pub fn add(&mut self, pending: PendingSpan) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.counts.spans += 1;
        let link = match pending.role {
            Role::Server => {
                self.note_serving(pending.pid);
                self.adopt_enclosed(seq, &pending);
                if pending.remote.is_some() {
                    Link::Remote
                } else if let Some(link) = self.client_seen(&pending) {
                    self.counts.same_host_client += 1;
                    link
                } else {
                    let key = (pending.transport, pending.local, pending.peer);
                    self.awaiting_client.entry(key).or_default().push(seq);
                    Link::Undecided { until_ns: pending.end_ns.saturating_add(self.waits.peer_ns) }
                }
            }
            Role::Client => {
                self.adopt_server_end(seq, &pending);
                self.remember_client(seq, &pending);
                if pending.remote.is_some() {
                    Link::Remote
                } else if self.serving.contains(&pending.pid) {
                    self.awaiting_enclosing.entry((pending.pid, pending.tid)).or_default().push(seq);
                    Link::Undecided { until_ns: pending.end_ns.saturating_add(self.waits.enclosing_ns) }
                } else {
                    Link::Root
                }
            }
        };
        let held = Box::new(Held { pending, link, span_id: self.ids.span_id(), own_trace: self.ids.trace_id() });
        self.held.insert(seq, held);
    }

    /// Client spans of this thread inside the new server span become its children.
    fn adopt_enclosed(&mut self, parent: u64, server: &PendingSpan) {
        let Some(waiting) = self.awaiting_enclosing.get_mut(&(server.pid, server.tid)) else { return };
        let held = &mut self.held;
        let counts = &mut self.counts;
        waiting.retain(|seq| {
            let Some(h) = held.get_mut(seq) else { return false };
            if !matches!(h.link, Link::Undecided { .. }) {
                return false;
            }
            if h.pending.start_ns >= server.start_ns && h.pending.end_ns <= server.end_ns {
                h.link = Link::Local(parent);
                counts.enclosing_server += 1;
                return false;
            }
            true
        });
        if waiting.is_empty() {
            self.awaiting_enclosing.remove(&(server.pid, server.tid));
        }
    }

    /// The server span of this client's request, seen at the other end of
    /// the same connection, becomes its child.
    fn adopt_server_end(&mut self, parent: u64, client: &PendingSpan) {
        let key = (client.transport, client.peer, client.local);
        let Some(waiting) = self.awaiting_client.get_mut(&key) else { return };
        let held = &mut self.held;
        let ends = (client.start_ns, client.end_ns, client.stream_id);
        let found = waiting
            .iter()
            .enumerate()
            .filter_map(|(i, seq)| {
                let h = held.get(seq)?;
                let s = &h.pending;
                if !matches!(h.link, Link::Undecided { .. }) {
                    return None;
                }
                ends_distance(ends, (s.start_ns, s.end_ns, s.stream_id)).map(|d| (d, i))
            })
            .min()
            .map(|(_, i)| i);
        if let Some(i) = found {
            let seq = waiting.remove(i);
            if let Some(h) = held.get_mut(&seq) {
                h.link = Link::Local(parent);
                self.counts.same_host_client += 1;
            }
        }
        waiting.retain(|seq| held.get(seq).is_some_and(|h| matches!(h.link, Link::Undecided { .. })));
        if waiting.is_empty() {
            self.awaiting_client.remove(&key);
        }
    }

    fn remember_client(&mut self, seq: u64, client: &PendingSpan) {
        if self.recent_count >= MAX_RECENT_CLIENTS {
            return;
        }
        let key = (client.transport, client.peer, client.local);
        self.recent_clients.entry(key).or_default().push_back(RecentClient {
            seq,
            start_ns: client.start_ns,
            end_ns: client.end_ns,
            stream_id: client.stream_id,
            ids: None,
        });
        self.recent_count += 1;
    }

    /// The client end of this server span's request, if it came first.
    fn client_seen(&mut self, server: &PendingSpan) -> Option<Link> {
        let key = (server.transport, server.local, server.peer);
        let recent = self.recent_clients.get_mut(&key)?;
        let ends = (server.start_ns, server.end_ns, server.stream_id);
        let (_, i) = recent
            .iter()
            .enumerate()
            .filter_map(|(i, c)| ends_distance((c.start_ns, c.end_ns, c.stream_id), ends).map(|d| (d, i)))
            .min()?;
        let client = recent.remove(i)?;
        self.recent_count -= 1;
        match client.ids {
            Some((trace_id, span_id)) => Some(Link::Known { trace_id, span_id }),
            None if self.held.contains_key(&client.seq) => Some(Link::Local(client.seq)),
            None => None,
        }
    }

    /// Forgets client spans whose server end would have come by now.
    fn expire_recent_clients(&mut self, now_ns: u64) {
        let peer_ns = self.waits.peer_ns;
        let mut removed = 0;
        self.recent_clients.retain(|_, list| {
            let before = list.len();
            list.retain(|c| c.end_ns.saturating_add(peer_ns) > now_ns);
            removed += before - list.len();
            !list.is_empty()
        });
        self.recent_count -= removed;
    }

    /// Releases every span whose trace is settled at monotonic time `now_ns`.
    pub fn release(&mut self, now_ns: u64, out: &mut Vec<SpanItem>) {
        for h in self.held.values_mut() {
            if let Link::Undecided { until_ns } = h.link
                && until_ns <= now_ns
            {
                h.link = Link::Root;
            }
        }
        if self.held.len() > self.waits.capacity {
            let excess = self.held.len() - self.waits.capacity;
            for h in self.held.values_mut().filter(|h| matches!(h.link, Link::Undecided { .. })).take(excess) {
                h.link = Link::Root;
                self.counts.released_early += 1;
            }
        }
        self.release_settled(out);
        self.expire_recent_clients(now_ns);
    }

    /// Releases everything: no parent will come.
    pub fn finish(&mut self, out: &mut Vec<SpanItem>) {
        for h in self.held.values_mut() {
            if matches!(h.link, Link::Undecided { .. }) {
                h.link = Link::Root;
            }
        }
        self.release_settled(out);
        self.awaiting_client.clear();
        self.awaiting_enclosing.clear();
        self.recent_clients.clear();
        self.recent_count = 0;
    }

    fn release_settled(&mut self, out: &mut Vec<SpanItem>) {
        let mut settled: HashMap<u64, Option<([u8; 16], String)>> = HashMap::new();
        let seqs: Vec<u64> = self.held.keys().copied().collect();
        for seq in &seqs {
            self.trace_of(*seq, &mut settled, 0);
        }
        // Ascending: a child (older) goes before its parent, whose span id
        // it needs, leaves.
        for seq in seqs {
            let Some(Some((trace_id, trace_state))) = settled.get(&seq).cloned() else { continue };
            let Some(h) = self.held.get(&seq) else { continue };
            let remote = h.pending.remote.as_ref().map(|(tp, _)| *tp);
            let (parent, flags) = match (h.link, remote) {
                (Link::Remote, Some(tp)) => {
                    self.counts.remote_parent += 1;
                    (tp.parent_id.to_vec(), u32::from(tp.flags) | FLAG_HAS_IS_REMOTE | FLAG_IS_REMOTE)
                }
                (Link::Known { span_id, .. }, _) => (span_id.to_vec(), SAMPLED | FLAG_HAS_IS_REMOTE),
                (Link::Local(p), _) if self.held.contains_key(&p) => {
                    let parent = self.held.get(&p).map(|p| p.span_id.to_vec()).unwrap_or_default();
                    (parent, SAMPLED | FLAG_HAS_IS_REMOTE)
                }
                _ => {
                    self.counts.roots += 1;
                    (Vec::new(), SAMPLED | FLAG_HAS_IS_REMOTE)
                }
            };
            let Some(h) = self.held.remove(&seq) else { continue };
            if h.pending.role == Role::Client {
                let key = (h.pending.transport, h.pending.peer, h.pending.local);
                if let Some(c) = self.recent_clients.get_mut(&key).and_then(|l| l.iter_mut().find(|c| c.seq == seq)) {
                    c.ids = Some((trace_id, h.span_id));
                }
            }
            let mut span = h.pending.span;
            span.trace_id = trace_id.to_vec();
            span.span_id = h.span_id.to_vec();
            span.parent_span_id = parent;
            span.trace_state = trace_state;
            span.flags = flags;
            self.counts.released += 1;
            out.push(SpanItem { resource: h.pending.resource, span });
        }
    }

    /// The trace (id, tracestate) of `seq`, `None` while it is not settled.
    fn trace_of(
        &self,
        seq: u64,
        settled: &mut HashMap<u64, Option<([u8; 16], String)>>,
        depth: u32,
    ) -> Option<([u8; 16], String)> {
        if let Some(known) = settled.get(&seq) {
            return known.clone();
        }
        let h = self.held.get(&seq)?;
        let trace = match h.link {
            Link::Undecided { .. } => None,
            Link::Root => Some((h.own_trace, String::new())),
            Link::Remote => h.pending.remote.as_ref().map(|(tp, state)| (tp.trace_id, state.clone())),
            Link::Known { trace_id, .. } => Some((trace_id, String::new())),
            // Parents are newer, so chains end; the depth bound is for safety.
            Link::Local(p) if depth < 64 && self.held.contains_key(&p) => self.trace_of(p, settled, depth + 1),
            Link::Local(_) => Some((h.own_trace, String::new())),
        };
        settled.insert(seq, trace.clone());
        trace
    }
}

/// Random trace and span ids (splitmix64 seeded per run; a fixed seed makes
/// replays repeatable).
#[derive(Debug, Clone)]
pub struct IdGenerator {
    state: u64,
}

impl IdGenerator {
    pub fn random() -> Self {
        use std::hash::BuildHasher;
        let seed = std::collections::hash_map::RandomState::new().hash_one(crate::output::monotonic_now_ns());
        Self { state: seed }
    }

    pub fn seeded(seed: u64) -> Self {
        Self { state: seed }
    }

    fn next(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    pub fn span_id(&mut self) -> [u8; 8] {
        loop {
            let id = self.next();
            if id != 0 {
                return id.to_be_bytes();
            }
        }
    }

    pub fn trace_id(&mut self) -> [u8; 16] {
        let mut id = [0u8; 16];
        id[..8].copy_from_slice(&self.span_id());
        id[8..].copy_from_slice(&self.next().to_be_bytes());
        id
    }
}
