//! The kernel's flow counters and socket owners, read through aya.

use aya::maps::{HashMap, MapData};
use monitor_common::event::{FlowKey, FlowStats, IoKey, IoStats, SockOwner};

use super::FlowMap;

pub struct KernelFlows {
    pub flows: HashMap<MapData, FlowKey, FlowStats>,
    pub owners: HashMap<MapData, u64, SockOwner>,
    /// Per-process socket activity (`SOCK_IO`, an LRU hash).
    pub io: HashMap<MapData, IoKey, IoStats>,
}

impl FlowMap for KernelFlows {
    fn get(&self, key: &FlowKey) -> Option<FlowStats> {
        self.flows.get(key, 0).ok()
    }

    fn remove(&mut self, key: &FlowKey) {
        // Already gone is fine: the kernel removes TCP flows at close.
        let _ = self.flows.remove(key);
    }

    fn entries(&self) -> Vec<(FlowKey, FlowStats)> {
        self.flows.iter().filter_map(Result::ok).collect()
    }

    fn owner(&self, socket: u64) -> Option<SockOwner> {
        self.owners.get(&socket, 0).ok()
    }
}

impl KernelFlows {
    /// Every (process, socket) activity record.
    pub fn io_entries(&self) -> Vec<(IoKey, IoStats)> {
        self.io.iter().filter_map(Result::ok).collect()
    }

    /// Records the owner of a socket that existed before the monitor.
    pub fn set_owner(&mut self, socket: u64, owner: SockOwner) -> Result<(), aya::maps::MapError> {
        self.owners.insert(socket, owner, 0)
    }
}
