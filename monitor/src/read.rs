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

/// Most records taken from the ring in one go before handing them on.
const BATCH: usize = 1024;

/// Reads until `shutdown` fires or the next stage goes away.
pub async fn run(
    ring: RingBuf<MapData>,
    tx: mpsc::Sender<Vec<KernelEvent>>,
    metrics: Metrics,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> std::io::Result<()> {
    // SAFETY: the ring buffer owns its fd and keeps it open for as long as
    // the AsyncFd that owns the ring buffer exists.
    let mut fd = unsafe { AsyncFd::register(ring) }?;
    loop {
        let mut guard = tokio::select! {
            g = fd.readable_mut() => g?,
            _ = shutdown.changed() => break,
        };
        let ring = guard.get_inner_mut();
        let mut batch = Vec::with_capacity(64);
        let mut drained = true;
        while let Some(item) = ring.next() {
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
            if batch.len() >= BATCH {
                drained = false;
                break;
            }
        }
        if drained {
            guard.clear_ready();
        }
        drop(guard);
        if !batch.is_empty() && tx.send(batch).await.is_err() {
            break;
        }
    }
    Ok(())
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
                tracing::error!(kind = name, lost = delta, "ring buffer full: events lost in the kernel");
            }
        }
        let errors = [
            counter::READ_ERRORS,
            counter::SCRATCH_ERRORS,
            counter::ATTEMPT_ERRORS,
            counter::SOCK_OWNER_FULL,
            counter::FLOW_MAP_FULL,
            counter::PACKETS_UNPARSED,
        ];
        for (index, reason) in errors.into_iter().zip(KERNEL_ERROR_REASONS) {
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
