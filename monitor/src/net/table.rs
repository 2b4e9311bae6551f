//! Bounded table of open connections and UDP flows, indexed so the two
//! ends of a connection on this machine find each other.

use std::collections::HashMap;

use monitor_common::event::Trigger;

use crate::event::{Direction, Endpoint, Proto};

/// One flow: a socket and one peer (a TCP socket has a single peer).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FlowId {
    pub socket: u64,
    pub proto: Proto,
    pub remote: Endpoint,
}

impl FlowId {
    /// The one of two flows with the lower socket, for unordered pairs.
    pub fn min_by_socket(&self, other: &FlowId) -> FlowId {
        if (self.socket, self.remote.port) <= (other.socket, other.remote.port) {
            *self
        } else {
            *other
        }
    }

    /// The one of two flows with the higher socket.
    pub fn max_by_socket(&self, other: &FlowId) -> FlowId {
        if (self.socket, self.remote.port) <= (other.socket, other.remote.port) {
            *other
        } else {
            *self
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Flow {
    pub id: FlowId,
    pub local: Endpoint,
    pub direction: Option<Direction>,
    /// Owning process, 0 when unknown.
    pub owner: u32,
    pub netns: u32,
    /// Boot ns when the monitor learnt of the flow.
    pub seen_ns: u64,
    /// Counters at the last report, for periodic updates and metrics.
    pub reported_out: u64,
    pub reported_in: u64,
    pub last_report_ns: u64,
    /// For connections this machine dialled or accepted: the connection
    /// the process had last received data on before (see
    /// `monitor_common::event::Trigger`); cookie 0 when unknown.
    pub trigger: Trigger,
}

/// Flows by id, with a tuple index for joining the two ends and a socket
/// index for ending every UDP flow of a released socket.
pub struct FlowTable {
    flows: HashMap<FlowId, Flow>,
    by_tuple: HashMap<(Proto, Endpoint, Endpoint), FlowId>,
    by_socket: HashMap<u64, Vec<FlowId>>,
    capacity: usize,
    evictions: u64,
}

impl FlowTable {
    pub fn new(capacity: usize) -> Self {
        Self {
            flows: HashMap::new(),
            by_tuple: HashMap::new(),
            by_socket: HashMap::new(),
            capacity: capacity.max(1),
            evictions: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.flows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.flows.is_empty()
    }

    pub fn evictions(&self) -> u64 {
        self.evictions
    }

    pub fn get(&self, id: &FlowId) -> Option<&Flow> {
        self.flows.get(id)
    }

    pub fn get_mut(&mut self, id: &FlowId) -> Option<&mut Flow> {
        self.flows.get_mut(id)
    }

    /// Inserts or replaces a flow; when the table is full another flow is
    /// evicted and counted.
    pub fn insert(&mut self, flow: Flow) {
        if !self.flows.contains_key(&flow.id) && self.flows.len() >= self.capacity {
            if let Some(victim) = self.flows.keys().next().copied() {
                self.remove(&victim);
                self.evictions += 1;
            }
        }
        let id = flow.id;
        self.by_tuple.insert((id.proto, flow.local, id.remote), id);
        let ids = self.by_socket.entry(id.socket).or_default();
        if !ids.contains(&id) {
            ids.push(id);
        }
        self.flows.insert(id, flow);
    }

    pub fn remove(&mut self, id: &FlowId) -> Option<Flow> {
        let flow = self.flows.remove(id)?;
        let key = (id.proto, flow.local, id.remote);
        if self.by_tuple.get(&key) == Some(id) {
            self.by_tuple.remove(&key);
        }
        if let Some(ids) = self.by_socket.get_mut(&id.socket) {
            ids.retain(|x| x != id);
            if ids.is_empty() {
                self.by_socket.remove(&id.socket);
            }
        }
        Some(flow)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Flow> {
        self.flows.values()
    }

    /// Every flow of one socket.
    pub fn of_socket(&self, socket: u64) -> Vec<FlowId> {
        self.by_socket.get(&socket).cloned().unwrap_or_default()
    }

    /// The other end of a flow, when it is a socket on this machine.
    pub fn peer(&self, proto: Proto, local: Endpoint, remote: Endpoint) -> Option<&Flow> {
        let id = self.by_tuple.get(&(proto, remote, local))?;
        self.flows.get(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(s: &str) -> Endpoint {
        let sa: std::net::SocketAddr = s.parse().expect("socket address");
        Endpoint {
            addr: sa.ip(),
            port: sa.port(),
        }
    }

    fn flow(socket: u64, local: &str, remote: &str) -> Flow {
        Flow {
            id: FlowId {
                socket,
                proto: Proto::Tcp,
                remote: ep(remote),
            },
            local: ep(local),
            direction: None,
            owner: socket as u32,
            netns: 1,
            seen_ns: 0,
            reported_out: 0,
            reported_in: 0,
            last_report_ns: 0,
            trigger: Trigger::default(),
        }
    }

    #[test]
    fn joins_two_ends() {
        let mut t = FlowTable::new(10);
        t.insert(flow(1, "127.0.0.1:5000", "127.0.0.1:80"));
        t.insert(flow(2, "127.0.0.1:80", "127.0.0.1:5000"));
        let peer = t
            .peer(Proto::Tcp, ep("127.0.0.1:5000"), ep("127.0.0.1:80"))
            .expect("server end");
        assert_eq!(peer.owner, 2);
        assert!(t
            .peer(Proto::Udp, ep("127.0.0.1:5000"), ep("127.0.0.1:80"))
            .is_none());
    }

    #[test]
    fn bounded_with_evictions_counted() {
        let mut t = FlowTable::new(100);
        for i in 0..10_000u64 {
            t.insert(flow(
                i,
                "127.0.0.1:1",
                &format!("127.0.0.1:{}", i % 60000 + 1),
            ));
        }
        assert_eq!(t.len(), 100);
        assert_eq!(t.evictions(), 9_900);
        assert!(t.by_tuple.len() <= 100 && t.by_socket.len() <= 100);
    }

    #[test]
    fn remove_cleans_indexes() {
        let mut t = FlowTable::new(10);
        let f = flow(7, "127.0.0.1:1", "127.0.0.1:2");
        let id = f.id;
        t.insert(f);
        assert_eq!(t.of_socket(7), vec![id]);
        t.remove(&id);
        assert!(t.of_socket(7).is_empty());
        assert!(t.is_empty());
    }
}
