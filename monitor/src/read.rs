//! The read stage: drains the ring buffer in batches, decodes each record
//! and hands the batch to the next stage; polls the kernel's per-CPU loss
//! and error counters into metrics.

use aya::maps::{Array, MapData, PerCpuArray, RingBuf};
use monitor_common::event::counter;
use tokio::{io::unix::AsyncFd, sync::mpsc};

use prometheus::{IntCounter, IntCounterVec, Registry};

use crate::{
    decode::{decode, DecodeError, KernelEvent, KERNEL_KINDS},
    metrics::{counter, counter_vec},
};

/// Kernel-side counters besides ring-buffer losses: `reason` label values,
/// one per `monitor_common::event::counter::ERRORS` entry, in that order.
pub const KERNEL_ERROR_REASONS: [&str; 9] = [
    "read",
    "scratch",
    "exec_attempt_map_full",
    "sock_owner_map_full",
    "flow_map_full",
    "packet_unparsed",
    "io_map_full",
    "forward_map_full",
    "net_shed",
];

/// The read stage's metrics: what the kernel lost or failed at, what could
/// not be decoded.
#[derive(Clone)]
pub struct ReadMetrics {
    pub kernel_lost: IntCounterVec,
    pub kernel_errors: IntCounterVec,
    pub decode_errors: IntCounterVec,
    pub bench_drained: IntCounter,
}

impl ReadMetrics {
    pub fn register(registry: &Registry) -> Self {
        let kernel_lost = counter_vec(
            registry,
            "kernel_events_lost_total",
            "Events the kernel could not queue because the ring buffer was full, by kind (summed over CPUs).",
            &["kind"],
        );
        let kernel_errors = counter_vec(
            registry,
            "kernel_errors_total",
            "Errors inside the eBPF programs, by reason (summed over CPUs).",
            &["reason"],
        );
        let decode_errors = counter_vec(
            registry,
            "decode_errors_total",
            "Ring-buffer records that could not be decoded, by reason.",
            &["reason"],
        );
        let bench_drained = counter(
            registry,
            "bench_events_drained_total",
            "Synthetic records of the benchmark producer drained (always 0 unless cargo xtask bench turned the producer on).",
        );
        for (_, name) in KERNEL_KINDS {
            kernel_lost.with_label_values(&[name]);
        }
        for r in KERNEL_ERROR_REASONS {
            kernel_errors.with_label_values(&[r]);
        }
        for r in DecodeError::ALL {
            decode_errors.with_label_values(&[r.as_str()]);
        }
        Self {
            kernel_lost,
            kernel_errors,
            decode_errors,
            bench_drained,
        }
    }
}

/// Most records taken from one ring in one go before handing them on.
const BATCH: usize = 1024;

/// How often the rings are read while records keep coming. The programs
/// wake the reader only when it is parked or a ring crosses
/// `limits::RING_WAKEUP_BYTES` (a wakeup per record costs every exec and
/// connection an interrupt), so a record waits at most this long.
pub const POLL_INTERVAL: std::time::Duration = std::time::Duration::from_millis(50);

/// The rings, in the order their records are applied.
pub struct Rings {
    pub process: RingBuf<MapData>,
    pub net: RingBuf<MapData>,
    /// The parked flag the programs read (`limits::MAP_READER`).
    pub parked: Array<MapData, u32>,
}

/// Reads both rings until `shutdown` fires or the next stage goes away.
///
/// The stages after this one need the two rings' records in the order the
/// kernel made them: a socket event is enriched from the process table
/// (the exec that named its process comes first), and an exec is judged
/// by what its ancestors did before it (a listening socket makes a
/// service). Under a socket-event flood the socket ring holds a backlog
/// the process ring does not, so reading each ring to its end would apply
/// an exec before the older `listen` of its parent. [`Merge`] therefore
/// hands records on in timestamp order, holding back those of one ring
/// while the other still has older ones unread. The hold is bounded by a
/// batch per ring, and the socket ring's backlog by the kernel's fair
/// shares (see `probes::net::over_fair_share`).
pub async fn run(
    rings: Rings,
    tx: mpsc::Sender<Vec<KernelEvent>>,
    metrics: ReadMetrics,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> std::io::Result<()> {
    // SAFETY: each ring buffer owns its fd and keeps it open for as long as
    // the AsyncFd that owns the ring buffer exists.
    let mut process = unsafe { AsyncFd::register(rings.process) }?;
    // SAFETY: as above.
    let mut net = unsafe { AsyncFd::register(rings.net) }?;
    let mut parked = rings.parked;
    let mut merge = Merge::default();
    let mut poll = tokio::time::interval(POLL_INTERVAL);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Polling while records come; parked (no timer, woken by the first
    // record) once a poll finds the rings empty.
    let mut polling = true;
    loop {
        tokio::select! {
            g = process.readable_mut() => { g?.clear_ready(); }
            g = net.readable_mut() => { g?.clear_ready(); }
            _ = poll.tick(), if polling => {}
            _ = shutdown.changed() => break,
        }
        let Some(read) = read_all(&mut process, &mut net, &mut merge, &tx, &metrics).await else {
            return Ok(());
        };
        if read > 0 {
            if !polling {
                polling = true;
                poll.reset();
            }
            continue;
        }
        if polling {
            // Quiet: park, then look once more for a record added before
            // the programs could see the flag.
            set_parked(&mut parked, true);
            let Some(read) = read_all(&mut process, &mut net, &mut merge, &tx, &metrics).await
            else {
                return Ok(());
            };
            if read > 0 {
                set_parked(&mut parked, false);
            } else {
                polling = false;
            }
        }
    }
    Ok(())
}

/// Reads both rings until both are empty, handing records on in batches;
/// returns how many were read, or `None` when the next stage is gone.
async fn read_all(
    process: &mut AsyncFd<RingBuf<MapData>>,
    net: &mut AsyncFd<RingBuf<MapData>>,
    merge: &mut Merge,
    tx: &mpsc::Sender<Vec<KernelEvent>>,
    metrics: &ReadMetrics,
) -> Option<usize> {
    let mut read = 0;
    loop {
        let before = merge.process.len() + merge.net.len();
        let process_more = drain(process.get_mut(), &mut merge.process, metrics);
        let net_more = drain(net.get_mut(), &mut merge.net, metrics);
        read += merge.process.len() + merge.net.len() - before;
        let batch = merge.take(process_more, net_more);
        if !batch.is_empty() && tx.send(batch).await.is_err() {
            return None;
        }
        if !net_more && !process_more {
            return Some(read);
        }
    }
}

/// Tells the programs whether the reader is parked. A failed write only
/// costs latency (records wait for a ring to cross the wakeup mark), so it
/// is logged, once.
fn set_parked(flag: &mut Array<MapData, u32>, parked: bool) {
    static WARNED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if let Err(e) = flag.set(0, u32::from(parked), 0) {
        if !WARNED.swap(true, std::sync::atomic::Ordering::Relaxed) {
            tracing::warn!(error = %e, "cannot set the reader's parked flag; quiet records may wait");
        }
    }
}

/// Records read from the two rings and not yet handed on.
#[derive(Default)]
struct Merge {
    process: std::collections::VecDeque<KernelEvent>,
    net: std::collections::VecDeque<KernelEvent>,
}

impl Merge {
    /// The records that can go on, oldest first: while both queues hold
    /// records, the older head; once one queue is empty, the other's
    /// records only if that queue's ring had nothing more to read (an
    /// unread record there could be older). Equal timestamps put the
    /// process record first.
    fn take(&mut self, process_more: bool, net_more: bool) -> Vec<KernelEvent> {
        let mut out = Vec::with_capacity(self.process.len() + self.net.len());
        loop {
            let from_process = match (self.process.front(), self.net.front()) {
                (Some(p), Some(n)) => p.ts_boot_ns() <= n.ts_boot_ns(),
                (Some(_), None) if !net_more => true,
                (None, Some(_)) if !process_more => false,
                _ => break,
            };
            let queue = if from_process {
                &mut self.process
            } else {
                &mut self.net
            };
            out.extend(queue.pop_front());
        }
        out
    }
}

/// Decodes records into `queue` until it holds [`BATCH`]; returns whether
/// more may be waiting (always, when the queue was full already).
fn drain(
    ring: &mut RingBuf<MapData>,
    queue: &mut std::collections::VecDeque<KernelEvent>,
    metrics: &ReadMetrics,
) -> bool {
    let room = BATCH.saturating_sub(queue.len());
    if room == 0 {
        return true;
    }
    for _ in 0..room {
        let Some(item) = ring.next() else {
            return false;
        };
        match decode(&item) {
            Ok(ev) => queue.push_back(ev),
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
    pub fn poll(&mut self, metrics: &ReadMetrics) {
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

#[cfg(test)]
mod tests {
    use monitor_common::event::{ForkEvent, NetEvent};

    use super::*;

    fn fork(ts: u64) -> KernelEvent {
        let mut f = ForkEvent::default();
        f.header.ts_boot_ns = ts;
        KernelEvent::Fork(f)
    }

    fn net(ts: u64) -> KernelEvent {
        let mut n = NetEvent::default();
        n.header.ts_boot_ns = ts;
        KernelEvent::Net(n)
    }

    fn order(batch: &[KernelEvent]) -> Vec<u64> {
        batch.iter().map(KernelEvent::ts_boot_ns).collect()
    }

    #[test]
    fn records_go_on_in_timestamp_order_across_the_rings() {
        let mut m = Merge::default();
        m.process.extend([fork(2), fork(5), fork(9)]);
        m.net.extend([net(1), net(2), net(7)]);
        let out = m.take(false, false);
        assert_eq!(order(&out), [1, 2, 2, 5, 7, 9]);
        // At equal times the process record goes first.
        assert!(matches!(out[1], KernelEvent::Fork(_)));
        assert!(m.process.is_empty() && m.net.is_empty());
    }

    #[test]
    fn an_exec_waits_while_older_socket_records_are_unread() {
        // A socket backlog (a flood) ahead of a listen, and an exec made
        // after that listen: the exec must not overtake it.
        let mut m = Merge::default();
        m.net.extend([net(1), net(2)]);
        m.process.push_back(fork(10));
        let out = m.take(false, true);
        assert_eq!(order(&out), [1, 2]);
        assert_eq!(m.process.len(), 1, "held while the socket ring has more");
        m.net.extend([net(3), net(11)]);
        let out = m.take(false, true);
        assert_eq!(order(&out), [3, 10, 11]);
        assert!(m.process.is_empty() && m.net.is_empty());
    }

    #[test]
    fn one_ring_alone_flows_when_the_other_is_drained() {
        let mut m = Merge::default();
        m.net.extend([net(4), net(6)]);
        assert_eq!(order(&m.take(false, true)), [4, 6]);
        m.process.extend([fork(1), fork(3)]);
        // The socket ring may still hold older records: wait.
        assert!(m.take(false, true).is_empty());
        assert_eq!(order(&m.take(true, false)), [1, 3]);
    }
}
