//! The `config_change` event.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::ProcessRef;

/// What changed. A closed set: also the `type` label of the metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    /// A forwarding-related sysctl written (`ip_forward`, `forwarding`, ...).
    Sysctl,
    /// The packet filter ruleset changed (nftables or legacy x_tables).
    Netfilter,
    /// A tunnel or overlay interface created.
    Tunnel,
    /// An interface put in promiscuous mode.
    Promisc,
    /// A packet (`AF_PACKET`) socket opened.
    PacketSocket,
    /// A filter attached to a socket.
    SocketFilter,
    /// A BPF program loaded by another process.
    BpfProgram,
}

impl Change {
    pub const ALL: [Change; 7] = [
        Change::Sysctl,
        Change::Netfilter,
        Change::Tunnel,
        Change::Promisc,
        Change::PacketSocket,
        Change::SocketFilter,
        Change::BpfProgram,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Change::Sysctl => "sysctl",
            Change::Netfilter => "netfilter",
            Change::Tunnel => "tunnel",
            Change::Promisc => "promisc",
            Change::PacketSocket => "packet_socket",
            Change::SocketFilter => "socket_filter",
            Change::BpfProgram => "bpf_program",
        }
    }
}

/// One `config_change` line. Which optional fields are set depends on
/// `change`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ConfigChangeRecord {
    pub ts: String,
    pub change: Change,
    /// Network namespace where it happened (0 when not known).
    pub netns: u32,
    /// How the process was learnt: `exact` (in the kernel, in the process's
    /// own context), `netlink` (the pid the notification names) or `unknown`.
    pub attribution: String,
    pub process: Option<ProcessRef>,
    /// sysctl: path under /proc/sys (`net/ipv4/ip_forward`).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub sysctl: Option<String>,
    /// sysctl: the value written.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub value: Option<String>,
    /// sysctl: whether the value turns the setting on.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub enabled: Option<bool>,
    /// netfilter: `nftables` or `xtables`.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub backend: Option<String>,
    /// netfilter: the tables touched.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub tables: Vec<String>,
    /// netfilter (nftables): operations of the commit, by name.
    #[serde(skip_serializing_if = "BTreeMap::is_empty", default)]
    pub ops: BTreeMap<String, u32>,
    /// tunnel, promisc: the interface.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub iface: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub ifindex: Option<u32>,
    /// tunnel: the link kind (`gre`, `vxlan`, `wireguard`, `tun`, `tap`, ...).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub link_kind: Option<String>,
    /// promisc: `ioctl`, `packet_membership` or `netlink`.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub method: Option<String>,
    /// packet_socket: `raw`, `dgram` or the number; socket_filter: the
    /// socket's family.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub socket: Option<String>,
    /// socket_filter: `classic` (cBPF) or `ebpf`; bpf_program: its type.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub filter: Option<String>,
    /// bpf_program: its name (may be empty).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub program: Option<String>,
}
