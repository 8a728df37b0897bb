//! Per-CPU perf rings → decoded events on a bounded queue. One reader task
//! per CPU; the kernel's lost-record counts are kept per CPU, and whatever
//! the bounded queue cannot take is counted, never buffered without bound.
//!
//! Readers wake when a ring is a quarter full or every `FLUSH_INTERVAL`,
//! whichever comes first: batching the wakeups is what keeps the kernel side
//! cheap (see `ring.rs`), and the interval bounds how late an event prints.

mod ring;

use std::{
    os::fd::AsFd as _,
    sync::{Arc, atomic::Ordering::Relaxed},
    time::Duration,
};

use anyhow::Context as _;
use aya::maps::MapData;
use tokio::{
    io::unix::AsyncFd,
    sync::{mpsc, watch},
    task::JoinHandle,
};

use self::ring::PerfRing;
use crate::{
    decode::{Event, decode},
    recording::Recorder,
    stats::LossLedger,
};

/// The longest an event waits in a ring that is not yet a quarter full.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(100);

/// The running readers; [`Readers::stop`] drains each ring one last time.
pub struct Readers {
    tasks: Vec<JoinHandle<()>>,
    stop: watch::Sender<bool>,
    /// The perf event array stays open while its rings are read.
    _map: MapData,
}

impl Readers {
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

/// Opens one ring per online CPU, installs it in the kernel programs'
/// `EVENTS` array, and starts draining them.
pub fn start(
    map: MapData,
    cpus: &[u32],
    pages_per_cpu: usize,
    ledger: Arc<LossLedger>,
    queue: mpsc::Sender<Event>,
    recorder: Option<Arc<Recorder>>,
) -> anyhow::Result<Readers> {
    let (stop, stopped) = watch::channel(false);
    let mut tasks = Vec::with_capacity(cpus.len());
    for (slot, &cpu) in cpus.iter().enumerate() {
        let ring =
            PerfRing::open(cpu, pages_per_cpu).with_context(|| format!("cannot open the perf ring of CPU {cpu}"))?;
        ring::install(map.fd().as_fd(), cpu, &ring)
            .with_context(|| format!("cannot install the perf ring of CPU {cpu}"))?;
        // SAFETY: the ring owns its perf fd, which stays open and the same
        // until the ring (owned by the AsyncFd) is dropped.
        let fd = unsafe { AsyncFd::register(ring) }
            .map_err(|err| anyhow::anyhow!("cannot register a perf ring with tokio: {err}"))?;
        tasks.push(tokio::spawn(drain(
            fd,
            slot,
            Arc::clone(&ledger),
            queue.clone(),
            stopped.clone(),
            recorder.clone(),
        )));
    }
    Ok(Readers { tasks, stop, _map: map })
}

async fn drain(
    mut fd: AsyncFd<PerfRing>,
    slot: usize,
    ledger: Arc<LossLedger>,
    queue: mpsc::Sender<Event>,
    mut stop: watch::Receiver<bool>,
    recorder: Option<Arc<Recorder>>,
) {
    let mut batch = Vec::new();
    loop {
        let last = tokio::select! {
            ready = fd.readable_mut() => match ready {
                // Readiness is cleared before draining, so data that lands
                // during the drain wakes the next wait.
                Ok(mut guard) => { guard.clear_ready(); false }
                Err(_) => true,
            },
            () = tokio::time::sleep(FLUSH_INTERVAL) => false,
            _ = stop.changed() => true,
        };
        let drained = fd.get_mut().drain(|bytes| {
            if let Some(recorder) = &recorder {
                recorder.record(bytes);
            }
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
        });
        ledger.read_per_cpu[slot].fetch_add(drained.samples, Relaxed);
        ledger.lost_per_cpu[slot].fetch_add(drained.lost, Relaxed);
        ledger.ring_errors.fetch_add(drained.malformed, Relaxed);
        for event in batch.drain(..) {
            if queue.try_send(event).is_err() {
                ledger.queue_dropped.fetch_add(1, Relaxed);
            }
        }
        if last {
            return;
        }
    }
}
