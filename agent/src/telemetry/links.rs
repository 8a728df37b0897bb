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
    Root,
}

#[derive(Debug)]
struct Held {
    pending: PendingSpan,
    link: Link,
    span_id: [u8; 8],
    /// Used if this span turns out to start a trace.
    own_trace: [u8; 16],
}

/// How spans were linked.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct LinkCounts {
    pub spans: u64,
    pub released: u64,
    /// Parent from the request's `traceparent`.
    pub remote_parent: u64,
    /// A client span whose parent is the server span its thread was serving.
    pub enclosing_server: u64,
    /// A server span whose parent is the client span of the same connection.
    pub same_host_client: u64,
    /// Spans that start a trace.
    pub roots: u64,
    /// Spans released before their wait ended because too many were waiting.
    pub released_early: u64,
}

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
        Self { peer_ns: 1_000_000_000, enclosing_ns: 5_000_000_000, capacity: 65536 }
    }
}

type ConnKey = (Transport, (IpAddr, u16), (IpAddr, u16));

/// Processes seen serving, so their client spans wait for a parent and
/// other processes' don't; bounded.
const MAX_SERVING: usize = 65536;

#[derive(Debug)]
pub struct SpanLinker {
    waits: LinkWaits,
    held: BTreeMap<u64, Held>,
    next_seq: u64,
    /// Client spans waiting for an enclosing server span, by (pid, tid).
    awaiting_enclosing: HashMap<(u32, u32), Vec<u64>>,
    /// Server spans waiting for their client, by (transport, server's local, server's peer).
    awaiting_client: HashMap<ConnKey, Vec<u64>>,
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
                } else {
                    let key = (pending.transport, pending.local, pending.peer);
                    self.awaiting_client.entry(key).or_default().push(seq);
                    Link::Undecided { until_ns: pending.end_ns.saturating_add(self.waits.peer_ns) }
                }
            }
            Role::Client => {
                self.adopt_server_end(seq, &pending);
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
        let held = Held { pending, link, span_id: self.ids.span_id(), own_trace: self.ids.trace_id() };
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
        let mut found = None;
        for (i, seq) in waiting.iter().enumerate() {
            let Some(h) = held.get(seq) else { continue };
            let s = &h.pending;
            let same_stream = match (s.stream_id, client.stream_id) {
                (Some(a), Some(b)) => a == b,
                _ => true,
            };
            if matches!(h.link, Link::Undecided { .. })
                && same_stream
                && client.start_ns <= s.start_ns
                && s.end_ns <= client.end_ns
            {
                found = Some(i);
                break;
            }
        }
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
