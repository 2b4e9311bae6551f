//! The kernel's flow counters and socket owners, read through aya.

use aya::maps::{HashMap, MapData};
use monitor_common::event::{FlowKey, FlowStats, SockOwner};

use super::FlowMap;

pub struct KernelFlows {
    pub flows: HashMap<MapData, FlowKey, FlowStats>,
    pub owners: HashMap<MapData, u64, SockOwner>,
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
    /// Records the owner of a socket that existed before the monitor.
    pub fn set_owner(&mut self, socket: u64, owner: SockOwner) -> Result<(), aya::maps::MapError> {
        self.owners.insert(socket, owner, 0)
    }
}
