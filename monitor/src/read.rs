//! The read stage: drains the ring buffer in batches, decodes each record
//! and hands the batch to the next stage; polls the kernel's per-CPU loss
//! and error counters into metrics.

use aya::maps::{MapData, PerCpuArray, RingBuf};
use monitor_common::event::counter;
use tokio::{io::unix::AsyncFd, sync::mpsc};

use crate::{
    decode::{decode, KernelEvent, KERNEL_KINDS},
    metrics::{Metrics, KERNEL_ERROR_REASONS},
};

/// Most records taken from one ring in one go before handing them on.
const BATCH: usize = 1024;

/// The rings, in the order their records are applied.
pub struct Rings {
    pub process: RingBuf<MapData>,
    pub net: RingBuf<MapData>,
}

/// Reads both rings until `shutdown` fires or the next stage goes away.
///
/// Socket events are enriched from the process table, so the exec that
/// named a process must be applied before that process's socket events.
/// Each round therefore takes the socket records first, then the process
/// records, and hands on the process records first: every process record
/// committed before a socket record was produced is in the same batch,
/// ahead of it.
pub async fn run(
    rings: Rings,
    tx: mpsc::Sender<Vec<KernelEvent>>,
    metrics: Metrics,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> std::io::Result<()> {
    // SAFETY: each ring buffer owns its fd and keeps it open for as long as
    // the AsyncFd that owns the ring buffer exists.
    let mut process = unsafe { AsyncFd::register(rings.process) }?;
    // SAFETY: as above.
    let mut net = unsafe { AsyncFd::register(rings.net) }?;
    loop {
        tokio::select! {
            g = process.readable_mut() => { g?.clear_ready(); }
            g = net.readable_mut() => { g?.clear_ready(); }
            _ = shutdown.changed() => break,
        }
        loop {
            let mut socket_batch = Vec::new();
            let net_more = drain(net.get_mut(), &mut socket_batch, &metrics);
            let mut batch = Vec::with_capacity(socket_batch.len() + 64);
            let process_more = drain(process.get_mut(), &mut batch, &metrics);
            batch.append(&mut socket_batch);
            if !batch.is_empty() && tx.send(batch).await.is_err() {
                return Ok(());
            }
            if !net_more && !process_more {
                break;
            }
        }
    }
    Ok(())
}

/// Decodes up to [`BATCH`] records; returns whether more are waiting.
fn drain(ring: &mut RingBuf<MapData>, batch: &mut Vec<KernelEvent>, metrics: &Metrics) -> bool {
    for _ in 0..BATCH {
        let Some(item) = ring.next() else {
            return false;
        };
        match decode(&item) {
            Ok(ev) => batch.push(ev),
            Err(e) => {
                metrics.decode_errors.with_label_values(&[e.as_str()]).inc();
                tracing::warn!(
                    reason = e.as_str(),
                    len = item.len(),
                    "undecodable ring-buffer record dropped"
                );
            }
        }
    }
    true
}

/// Kernel counters, summed over CPUs, mirrored into metrics.
pub struct KernelCounters {
    map: PerCpuArray<MapData, u64>,
    last: [u64; counter::COUNT as usize],
}

impl KernelCounters {
    pub fn new(map: PerCpuArray<MapData, u64>) -> Self {
        Self {
            map,
            last: [0; counter::COUNT as usize],
        }
    }

    /// Adds what the kernel counted since the last poll to the metrics.
    pub fn poll(&mut self, metrics: &Metrics) {
        for (kind, name) in KERNEL_KINDS {
            let delta = self.delta(counter::LOST_BASE + kind);
            if delta > 0 {
                metrics.kernel_lost.with_label_values(&[name]).inc_by(delta);
                tracing::error!(
                    kind = name,
                    lost = delta,
                    "ring buffer full: events lost in the kernel"
                );
            }
        }
        for (index, reason) in counter::ERRORS.into_iter().zip(KERNEL_ERROR_REASONS) {
            let delta = self.delta(index);
            if delta > 0 {
                metrics
                    .kernel_errors
                    .with_label_values(&[reason])
                    .inc_by(delta);
            }
        }
    }

    fn delta(&mut self, index: u32) -> u64 {
        let total: u64 = match self.map.get(&index, 0) {
            Ok(values) => values.iter().sum(),
            Err(_) => return 0,
        };
        let slot = &mut self.last[index as usize];
        let delta = total.saturating_sub(*slot);
        *slot = total;
        delta
    }
}
