//! Recorded event streams: the raw records the kernel programs wrote, as
//! read from the rings, saved by `kscope run --record` so that a real run can
//! be replayed through decode → connection table → output (`kscope replay`,
//! the golden tests, the pipeline benchmark).
//!
//! Format: the magic `KSREC001`, the run's realtime-minus-monotonic clock
//! offset (i64, little endian, nanoseconds), then each record as a u32
//! little-endian length and its bytes.

use std::{
    fs::File,
    io::{BufWriter, Write},
    path::Path,
    sync::{
        Mutex,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
};

use crate::{
    conntrack::ConnTable,
    decode::{Event, decode},
    output::{Clock, Sink},
};

pub const MAGIC: &[u8; 8] = b"KSREC001";
/// No record the kernel programs write comes near this.
const MAX_RECORD: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum RecordingError {
    #[error("not a kscope recording (no KSREC001 magic)")]
    NotARecording,
    #[error("recording truncated at byte {0}")]
    Truncated(usize),
    #[error("record of {len} bytes at byte {at} exceeds the {MAX_RECORD}-byte bound")]
    TooLarge { len: usize, at: usize },
}

/// Writes records as the rings deliver them, up to `limit` bytes; records
/// beyond it are counted, not written.
#[derive(Debug)]
pub struct Recorder {
    out: Mutex<BufWriter<File>>,
    limit: u64,
    written_bytes: AtomicU64,
    pub recorded: AtomicU64,
    pub skipped: AtomicU64,
}

impl Recorder {
    pub fn create(path: &Path, clock: &Clock, limit: u64) -> std::io::Result<Self> {
        let mut out = BufWriter::new(File::create(path)?);
        out.write_all(MAGIC)?;
        let offset = i64::try_from(clock.offset()).unwrap_or(0);
        out.write_all(&offset.to_le_bytes())?;
        Ok(Self {
            out: Mutex::new(out),
            limit,
            written_bytes: AtomicU64::new(16),
            recorded: AtomicU64::new(0),
            skipped: AtomicU64::new(0),
        })
    }

    pub fn record(&self, bytes: &[u8]) {
        let size = 4 + bytes.len() as u64;
        if self.written_bytes.fetch_add(size, Relaxed) + size > self.limit {
            self.skipped.fetch_add(1, Relaxed);
            return;
        }
        let mut out = self.out.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let ok = out.write_all(&(bytes.len() as u32).to_le_bytes()).and_then(|()| out.write_all(bytes));
        if ok.is_ok() {
            self.recorded.fetch_add(1, Relaxed);
        } else {
            self.skipped.fetch_add(1, Relaxed);
        }
    }

    pub fn finish(&self) -> std::io::Result<()> {
        self.out.lock().unwrap_or_else(std::sync::PoisonError::into_inner).flush()
    }
}

/// A recording read back.
#[derive(Debug, Clone)]
pub struct Recording {
    pub clock: Clock,
    pub records: Vec<Vec<u8>>,
}

impl Recording {
    pub fn parse(bytes: &[u8]) -> Result<Self, RecordingError> {
        let Some(rest) = bytes.strip_prefix(MAGIC.as_slice()) else {
            return Err(RecordingError::NotARecording);
        };
        let offset: [u8; 8] = rest.get(..8).and_then(|b| b.try_into().ok()).ok_or(RecordingError::Truncated(8))?;
        let clock = Clock::from_offset(i128::from(i64::from_le_bytes(offset)));
        let mut at = 16;
        let mut records = Vec::new();
        while at < bytes.len() {
            let len: [u8; 4] =
                bytes.get(at..at + 4).and_then(|b| b.try_into().ok()).ok_or(RecordingError::Truncated(at))?;
            let len = u32::from_le_bytes(len) as usize;
            if len > MAX_RECORD {
                return Err(RecordingError::TooLarge { len, at });
            }
            let record = bytes.get(at + 4..at + 4 + len).ok_or(RecordingError::Truncated(at))?;
            records.push(record.to_vec());
            at += 4 + len;
        }
        Ok(Self { clock, records })
    }

    /// Writes the recording (e.g. after keeping only some processes' records).
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        let mut out = BufWriter::new(File::create(path)?);
        out.write_all(MAGIC)?;
        out.write_all(&i64::try_from(self.clock.offset()).unwrap_or(0).to_le_bytes())?;
        for record in &self.records {
            out.write_all(&(record.len() as u32).to_le_bytes())?;
            out.write_all(record)?;
        }
        out.flush()
    }

    /// Keeps the records that decode and belong to one of `pids` or carry
    /// one of `comms`, plus the ones that do not decode (they are part of
    /// what a replay must survive).
    pub fn retain(&mut self, pids: &[u32], comms: &[String]) {
        self.records.retain(|r| match decode(r) {
            Ok(event) => pids.contains(&event.origin().pid) || comms.iter().any(|c| event.origin().comm == c.as_str()),
            Err(_) => true,
        });
    }
}

/// What a replay did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReplayCounts {
    pub records: u64,
    pub decode_errors: u64,
    pub lines: u64,
    pub exchanges: u64,
}

/// Replays records through decode and the connection table into `text`, as
/// `kscope run` would print them: each event in time order, followed by the
/// exchanges it completed; at the end, what the connections still held.
pub fn replay(records: &[Vec<u8>], sink: &Sink, table: &mut ConnTable, text: &mut Vec<u8>) -> ReplayCounts {
    let mut counts = ReplayCounts::default();
    let mut events: Vec<Event> = Vec::with_capacity(records.len());
    for record in records {
        counts.records += 1;
        match decode(record) {
            Ok(event) => events.push(event),
            Err(_) => counts.decode_errors += 1,
        }
    }
    // What the reorder window does in a live run; stable, like it.
    events.sort_by_key(|e| e.origin().timestamp_ns);
    let mut exchanges = Vec::new();
    let mut last_ns = 0;
    for event in &events {
        last_ns = event.origin().timestamp_ns;
        if sink.event(event, text) {
            counts.lines += 1;
        }
        table.on_event(event, &mut exchanges);
        for record in exchanges.drain(..) {
            counts.exchanges += 1;
            sink.exchange(&record, text);
        }
    }
    table.close_all(last_ns, &mut exchanges);
    for record in exchanges.drain(..) {
        counts.exchanges += 1;
        sink.exchange(&record, text);
    }
    counts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_damage() {
        let dir = std::env::temp_dir().join(format!("kscope-rec-{}", std::process::id()));
        let recording = Recording { clock: Clock::from_offset(42), records: vec![vec![1, 2, 3], vec![], vec![9; 300]] };
        recording.write(&dir).unwrap();
        let bytes = std::fs::read(&dir).unwrap();
        let _ = std::fs::remove_file(&dir);
        let back = Recording::parse(&bytes).unwrap();
        assert_eq!(back.records, recording.records);
        assert_eq!(back.clock.offset(), 42);
        assert!(matches!(Recording::parse(b"KSREC00"), Err(RecordingError::NotARecording)));
        for cut in 17..bytes.len() {
            if Recording::parse(&bytes[..cut]).is_ok() {
                // Only cuts at record boundaries parse.
                assert!([16 + 7, 16 + 7 + 4].contains(&cut), "cut {cut}");
            }
        }
        let mut huge = bytes[..16].to_vec();
        huge.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(Recording::parse(&huge), Err(RecordingError::TooLarge { .. })));
    }
}
