//! Events and stats as people read them: one line per event on the console
//! (`console`), or JSON lines, the records of `kscope_schema` (`json`),
//! with stable field names (documented in the README). Also the clock, the
//! socket ids and the reorder window the lines go through.

mod console;
mod json;
#[cfg(test)]
mod tests;

use std::{
    cmp::Reverse,
    collections::BinaryHeap,
    hash::{BuildHasher, RandomState},
    io::Write,
    sync::OnceLock,
    time::{SystemTime, UNIX_EPOCH},
};

pub use console::{
    choice_lines, drop_line, event_line, exchange_line, function_lines, human_duration, span_line, stats_lines,
};
pub use json::{
    drop_json, event_record, exchange_record, span_record, write_event_json, write_exchange_json, write_span_json,
};
use kscope_schema::SockId;

use crate::{conntrack::ExchangeRecord, decode::Event};

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
pub fn sock_id(kernel_address: u64) -> SockId {
    let key = *SOCK_ID_KEY.get_or_init(|| RandomState::new().hash_one(0u64));
    SockId::from_hash(
        std::hash::BuildHasherDefault::<std::hash::DefaultHasher>::default().hash_one((key, kernel_address)),
    )
}

static SOCK_ID_KEY: OnceLock<u64> = OnceLock::new();

/// Fixes the key of [`sock_id`] (replays print the same ids every time);
/// only before the first id is made.
pub fn fix_sock_id_key(key: u64) {
    let _ = SOCK_ID_KEY.set(key);
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
            OutputFormat::Json => write_span_json(text, item),
        }
        text.push(b'\n');
    }
}

/// CLOCK_REALTIME now, in nanoseconds since the Unix epoch.
pub fn unix_now_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
}

/// Writes one line; a closed stdout (e.g. `| head`) ends output quietly.
pub fn write_line(out: &mut impl Write, line: &str) -> std::io::Result<()> {
    out.write_all(line.as_bytes())?;
    out.write_all(b"\n")
}
