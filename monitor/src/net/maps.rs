//! The kernel's flow counters and socket owners, read through aya.

use std::{collections::HashSet, hash::Hash};

use aya::{
    maps::{HashMap, IterableMap as _, MapData},
    Pod,
};
use monitor_common::event::{FlowKey, FlowStats, IoKey, IoStats, ProxyHead, SockOwner, UnixLinks};

use super::FlowMap;

pub struct KernelFlows {
    pub flows: HashMap<MapData, FlowKey, FlowStats>,
    pub owners: HashMap<MapData, u64, SockOwner>,
    /// Per-process socket activity (`SOCK_IO`, an LRU hash).
    pub io: HashMap<MapData, IoKey, IoStats>,
    /// First bytes of flows that looked like proxy requests
    /// (`PROXY_HEADS`, an LRU hash).
    pub heads: HashMap<MapData, FlowKey, ProxyHead>,
    /// Each process's recent unix connections (`UNIX_LINKS`, an LRU hash).
    pub unix: HashMap<MapData, u32, UnixLinks>,
}

/// A kernel counter whose last-seen stamp is monotonic (see
/// `FlowStats::last_ns`); the daemon works in boot time.
pub trait LastSeen {
    fn last_seen_to_boot(self, offset: u64) -> Self;
}

impl LastSeen for FlowStats {
    fn last_seen_to_boot(mut self, offset: u64) -> Self {
        self.last_ns = crate::clock::last_seen_to_boot(self.last_ns, offset);
        self
    }
}

/// Stamped in boot time already (tracing programs may not read the coarse
/// clock).
impl LastSeen for IoStats {
    fn last_seen_to_boot(self, _offset: u64) -> Self {
        self
    }
}

impl LastSeen for monitor_common::event::FwdStats {
    fn last_seen_to_boot(mut self, offset: u64) -> Self {
        self.last_ns = crate::clock::last_seen_to_boot(self.last_ns, offset);
        self
    }
}

impl FlowMap for KernelFlows {
    fn get(&self, key: &FlowKey) -> Option<FlowStats> {
        let offset = crate::clock::monotonic_to_boot_ns();
        self.flows
            .get(key, 0)
            .ok()
            .map(|s| s.last_seen_to_boot(offset))
    }

    fn remove(&mut self, key: &FlowKey) {
        // Already gone is fine: the kernel removes TCP flows at close.
        let _ = self.flows.remove(key);
    }

    fn entries(&self) -> Vec<(FlowKey, FlowStats)> {
        entries(&self.flows)
    }

    fn owner(&self, socket: u64) -> Option<SockOwner> {
        self.owners.get(&socket, 0).ok()
    }

    fn io(&self, key: &IoKey) -> Option<IoStats> {
        self.io.get(key, 0).ok()
    }

    fn proxy_head(&self, key: &FlowKey) -> Option<ProxyHead> {
        self.heads.get(key, 0).ok()
    }

    fn unix_links(&self, tgid: u32) -> Option<UnixLinks> {
        self.unix.get(&tgid, 0).ok()
    }
}

impl KernelFlows {
    /// Every (process, socket) activity record.
    pub fn io_entries(&self) -> Vec<(IoKey, IoStats)> {
        entries(&self.io)
    }

    /// Records the owner of a socket that existed before the monitor.
    pub fn set_owner(&mut self, socket: u64, owner: SockOwner) -> Result<(), aya::maps::MapError> {
        self.owners.insert(socket, owner, 0)
    }
}

/// Every entry of a kernel hash map, each key once, walking at most as
/// many keys as the map can hold, last-seen stamps in boot time.
///
/// The kernel's key walk (`BPF_MAP_GET_NEXT_KEY`) starts over from the
/// first key when the key it stands on was deleted meanwhile, and under a
/// connection flood flows are deleted all the time: an unbounded walk then
/// revisits keys without end (one measured walk grew the daemon to 4 GiB and
/// stalled the pipeline). The bound is the map's capacity, and keys seen
/// twice are dropped; a walk cut short misses some entries until the next.
pub fn entries<K: Pod + Hash + Eq, V: Pod + LastSeen>(map: &HashMap<MapData, K, V>) -> Vec<(K, V)> {
    let limit = map
        .map()
        .info()
        .map_or(usize::MAX, |i| i.max_entries() as usize);
    let offset = crate::clock::monotonic_to_boot_ns();
    let mut seen = HashSet::new();
    map.iter()
        .take(limit)
        .filter_map(Result::ok)
        .filter(|(k, _)| seen.insert(*k))
        .map(|(k, v)| (k, v.last_seen_to_boot(offset)))
        .collect()
}

#[cfg(test)]
mod tests {
    use monitor_common::event::FwdStats;

    use super::*;

    #[test]
    fn packet_counters_move_to_boot_time_and_socket_calls_stay() {
        let flow = FlowStats {
            first_ns: 100,
            last_ns: 50,
            ..Default::default()
        };
        let moved = flow.last_seen_to_boot(1_000);
        assert_eq!((moved.first_ns, moved.last_ns), (100, 1_050));
        let fwd = FwdStats {
            last_ns: 50,
            ..Default::default()
        };
        assert_eq!(fwd.last_seen_to_boot(1_000).last_ns, 1_050);
        let io = IoStats {
            first_ns: 10,
            last_ns: 50,
            ..Default::default()
        };
        assert_eq!(io.last_seen_to_boot(1_000), io);
    }
}
