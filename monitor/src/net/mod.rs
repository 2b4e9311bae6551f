//! The enrich stage for sockets: a flow table joining connection ends,
//! kept current from kernel socket events and the kernel's per-flow
//! counters, and seeded at start from sock_diag.

pub mod links;
pub mod maps;
pub mod netns;
pub mod relay;
pub mod sensors;
pub mod sides;
pub mod sockdiag;
pub mod table;
mod tracker;
pub mod tunnel;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

pub use table::{Flow, FlowId, FlowTable};
#[cfg(any(test, feature = "fuzzing"))]
pub use tracker::MemFlows;
pub use tracker::{connect_result, FlowMap, NetSettings, NetTracker, CONNECT_RESULTS};

use crate::{clock::BootClock, event::Endpoint, process::ProcessTable};

/// What the relay and tunnel detectors read besides the events: the flow
/// table, the kernel's counters, the process table, the clock, and the
/// sides of the gateway's namespace when known.
#[derive(Clone, Copy)]
pub struct Context<'a> {
    pub net: &'a NetTracker,
    pub map: &'a dyn FlowMap,
    pub procs: &'a ProcessTable,
    pub clock: &'a BootClock,
    pub sides: Option<&'a sides::SideMap>,
}

/// A flow that a socket event opened (`true`: an accept, an established
/// connect, a UDP or ICMP flow's first packet) or ended (`false`), with the
/// event's record.
pub fn flow_change(ev: &crate::event::Event) -> Option<(FlowId, bool, &crate::event::NetRecord)> {
    use crate::event::Event;
    let (r, open) = match ev {
        Event::Accept(r) | Event::UdpFlow(r) => (r, true),
        Event::ConnectResult(r) if r.result.as_deref() == Some("established") => (r, true),
        // A listener's close ends no flow.
        Event::Close(r) if r.state.is_none() => (r, false),
        _ => return None,
    };
    let id = FlowId {
        socket: r.socket,
        proto: r.proto?,
        remote: r.remote?,
    };
    Some((id, open, r))
}

/// An address from a kernel record (16 bytes, IPv4 stored v4-mapped) as
/// an `IpAddr`, IPv4 when it is v4-mapped.
pub fn ip_from_kernel(raw: [u8; 16]) -> IpAddr {
    let v6 = Ipv6Addr::from(raw);
    match v6.to_ipv4_mapped() {
        Some(v4) => IpAddr::V4(v4),
        None => IpAddr::V6(v6),
    }
}

/// The 16-byte kernel form of an address.
pub fn ip_to_kernel(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

pub fn endpoint(raw: [u8; 16], port: u16) -> Endpoint {
    Endpoint {
        addr: ip_from_kernel(raw),
        port,
    }
}

/// The unspecified IPv4 endpoint, for events without a remote end.
pub fn unspecified() -> Endpoint {
    Endpoint {
        addr: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        port: 0,
    }
}

#[derive(Debug, Clone, serde::Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct NetworkConfig {
    pub flow_table_capacity: usize,
    pub flow_update_secs: u64,
    pub udp_idle_secs: u64,
    pub tcp_idle_secs: u64,
    pub sweep_secs: toml::Spanned<u64>,
    pub seed_events: bool,
}

impl Default for NetworkConfig {
    fn default() -> Self {
        Self {
            flow_table_capacity: monitor_common::limits::FLOWS_MAX as usize,
            flow_update_secs: 30,
            udp_idle_secs: 60,
            tcp_idle_secs: 3600,
            sweep_secs: toml::Spanned::new(0..0, 5),
            seed_events: true,
        }
    }
}

impl NetworkConfig {
    /// The flow tracker's timings.
    pub fn settings(&self) -> crate::net::NetSettings {
        crate::net::NetSettings {
            update_interval_ns: crate::clock::secs_to_ns(self.flow_update_secs),
            udp_idle_ns: crate::clock::secs_to_ns(self.udp_idle_secs),
            tcp_idle_ns: crate::clock::secs_to_ns(self.tcp_idle_secs),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v4_mapped_addresses_show_as_ipv4() {
        let raw = ip_to_kernel("192.0.2.7".parse().expect("ip"));
        assert_eq!(ip_from_kernel(raw).to_string(), "192.0.2.7");
        let raw = ip_to_kernel("2001:db8::1".parse().expect("ip"));
        assert_eq!(ip_from_kernel(raw).to_string(), "2001:db8::1");
        assert_eq!(ip_from_kernel([0; 16]).to_string(), "::");
    }
}

/// The flow picture's metrics: connections and flows opened and ended,
/// their bytes, the flow tables.
#[derive(Clone)]
pub struct NetMetrics {
    pub net_opened: prometheus::IntCounterVec,
    pub net_closed: prometheus::IntCounterVec,
    pub net_sent_bytes: prometheus::IntCounterVec,
    pub net_received_bytes: prometheus::IntCounterVec,
    pub net_connect_results: prometheus::IntCounterVec,
    pub net_flow_table_entries: prometheus::IntGauge,
    pub net_flow_table_evictions: prometheus::IntCounter,
    pub net_kernel_flows: prometheus::IntGauge,
}

impl NetMetrics {
    pub fn register(registry: &prometheus::Registry) -> Self {
        use crate::{
            event::{Direction, Proto},
            metrics::{counter, counter_vec, gauge},
        };
        let m = Self {
            net_opened: counter_vec(
                registry,
                "net_connections_opened_total",
                "TCP connections established and UDP flows started, by protocol and direction.",
                &["proto", "direction"],
            ),
            net_closed: counter_vec(
                registry,
                "net_connections_closed_total",
                "TCP connections and UDP flows ended, by protocol and direction.",
                &["proto", "direction"],
            ),
            net_sent_bytes: counter_vec(
                registry,
                "net_sent_bytes_total",
                "Payload bytes sent by local sockets, by protocol (counted at flow updates and ends).",
                &["proto"],
            ),
            net_received_bytes: counter_vec(
                registry,
                "net_received_bytes_total",
                "Payload bytes received by local sockets, by protocol (counted at flow updates and ends).",
                &["proto"],
            ),
            net_connect_results: counter_vec(
                registry,
                "net_connect_results_total",
                "Outcomes of outbound TCP connection attempts.",
                &["result"],
            ),
            net_flow_table_entries: gauge(
                registry,
                "net_flow_table_entries",
                "Connections and UDP flows in the flow table.",
            ),
            net_flow_table_evictions: counter(
                registry,
                "net_flow_table_evictions_total",
                "Flows evicted from the full flow table.",
            ),
            net_kernel_flows: gauge(
                registry,
                "net_kernel_flows",
                "Flows in the kernel's counter map at the last sweep.",
            ),
        };
        for proto in Proto::ALL {
            for d in [Direction::Outbound, Direction::Inbound] {
                m.net_opened
                    .with_label_values(&[proto.as_str(), d.as_str()]);
                m.net_closed
                    .with_label_values(&[proto.as_str(), d.as_str()]);
            }
            m.net_sent_bytes.with_label_values(&[proto.as_str()]);
            m.net_received_bytes.with_label_values(&[proto.as_str()]);
        }
        for r in CONNECT_RESULTS {
            m.net_connect_results.with_label_values(&[r]);
        }
        m
    }
}
