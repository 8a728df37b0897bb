//! Per-CPU perf buffers → decoded events on a bounded queue. One reader task
//! per CPU; the kernel's lost-record counts are kept per CPU, and whatever
//! the bounded queue cannot take is counted, never buffered without bound.

use std::sync::{Arc, atomic::Ordering::Relaxed};

use anyhow::Context as _;
use aya::maps::{
    MapData,
    perf::{PerfEvent, PerfEventArray, PerfEventArrayBuffer},
};
use tokio::{io::unix::AsyncFd, sync::mpsc, task::JoinHandle};

use crate::{
    decode::{Event, decode},
    stats::LossLedger,
};

/// Opens one buffer per online CPU and starts draining them.
pub fn start(
    mut array: PerfEventArray<MapData>,
    cpus: &[u32],
    pages_per_cpu: usize,
    ledger: Arc<LossLedger>,
    queue: mpsc::Sender<Event>,
) -> anyhow::Result<Vec<JoinHandle<()>>> {
    let mut readers = Vec::with_capacity(cpus.len());
    for (slot, &cpu) in cpus.iter().enumerate() {
        let buffer = array
            .open(cpu, Some(pages_per_cpu))
            .with_context(|| format!("cannot open the perf buffer of CPU {cpu}"))?;
        // SAFETY: the buffer owns its perf event fd, which stays open and the
        // same until the buffer (owned by the AsyncFd) is dropped.
        let fd = unsafe { AsyncFd::register(buffer) }
            .map_err(|err| anyhow::anyhow!("cannot register a perf buffer with tokio: {err}"))?;
        readers.push(tokio::spawn(drain(fd, slot, Arc::clone(&ledger), queue.clone())));
    }
    Ok(readers)
}

async fn drain(
    mut fd: AsyncFd<PerfEventArrayBuffer<MapData>>,
    slot: usize,
    ledger: Arc<LossLedger>,
    queue: mpsc::Sender<Event>,
) {
    // Decoded events wait here only for the length of one drain, so the
    // buffer's data_tail advances before the next wakeup.
    let mut batch = Vec::new();
    loop {
        let Ok(mut guard) = fd.readable_mut().await else {
            return;
        };
        guard.get_inner_mut().for_each(|event| match event {
            PerfEvent::Sample { head, tail } => {
                ledger.read_per_cpu[slot].fetch_add(1, Relaxed);
                let record;
                let bytes: &[u8] = if tail.is_empty() {
                    head
                } else {
                    record = [head, tail].concat();
                    &record
                };
                match decode(bytes) {
                    Ok(event) => {
                        ledger.decoded.fetch_add(1, Relaxed);
                        batch.push(event);
                    }
                    Err(err) => {
                        ledger.decode_errors.fetch_add(1, Relaxed);
                        tracing::debug!(%err, cpu = slot, "undecodable record");
                    }
                }
            }
            PerfEvent::Lost { count } => {
                ledger.lost_per_cpu[slot].fetch_add(count, Relaxed);
            }
        });
        guard.clear_ready();
        for event in batch.drain(..) {
            if let Err(mpsc::error::TrySendError::Full(_) | mpsc::error::TrySendError::Closed(_)) =
                queue.try_send(event)
            {
                ledger.queue_dropped.fetch_add(1, Relaxed);
            }
        }
    }
}
