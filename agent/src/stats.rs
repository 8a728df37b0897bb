//! The loss ledger: what every stage of an event's trip saw, so the counts
//! add up from the kernel to the output and nothing is lost unseen.
//!
//!   kernel: handed to the buffer (per sensor) + refused by a full buffer
//!   transport: samples read (per CPU) + lost records the kernel reported (per CPU)
//!   decode: decoded + rejected
//!   output: written + analyzed (data events, into the connection table) + dropped at the bounded queue

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// The ledger and the kernel's counts as the `stats` and `summary` records print them.
pub use kscope_schema::{LedgerSnapshot, ProgramStats, SensorCounts, StatsRecord};

#[derive(Debug)]
pub struct LossLedger {
    pub read_per_cpu: Vec<AtomicU64>,
    pub lost_per_cpu: Vec<AtomicU64>,
    pub decoded: AtomicU64,
    pub decode_errors: AtomicU64,
    /// Ring records with impossible headers; the rest of that drain is
    /// skipped, so an unknown number of events went with each.
    pub ring_errors: AtomicU64,
    pub queue_dropped: AtomicU64,
    pub written: AtomicU64,
    /// Data events handed to the connection table (printed or not).
    pub analyzed: AtomicU64,
}

impl LossLedger {
    pub fn new(cpus: usize) -> Self {
        Self {
            read_per_cpu: (0..cpus).map(|_| AtomicU64::new(0)).collect(),
            lost_per_cpu: (0..cpus).map(|_| AtomicU64::new(0)).collect(),
            decoded: AtomicU64::new(0),
            decode_errors: AtomicU64::new(0),
            ring_errors: AtomicU64::new(0),
            queue_dropped: AtomicU64::new(0),
            written: AtomicU64::new(0),
            analyzed: AtomicU64::new(0),
        }
    }

    pub fn snapshot(&self) -> LedgerSnapshot {
        let load = |v: &[AtomicU64]| v.iter().map(|c| c.load(Relaxed)).collect::<Vec<_>>();
        LedgerSnapshot {
            read_per_cpu: load(&self.read_per_cpu),
            lost_per_cpu: load(&self.lost_per_cpu),
            decoded: self.decoded.load(Relaxed),
            decode_errors: self.decode_errors.load(Relaxed),
            ring_errors: self.ring_errors.load(Relaxed),
            queue_dropped: self.queue_dropped.load(Relaxed),
            written: self.written.load(Relaxed),
            analyzed: self.analyzed.load(Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_sums_per_cpu() {
        let ledger = LossLedger::new(2);
        ledger.read_per_cpu[0].fetch_add(3, Relaxed);
        ledger.read_per_cpu[1].fetch_add(4, Relaxed);
        ledger.lost_per_cpu[1].fetch_add(5, Relaxed);
        let snap = ledger.snapshot();
        assert_eq!((snap.read(), snap.lost()), (7, 5));
        assert_eq!(snap.lost_per_cpu, vec![0, 5]);
    }
}
