//! The `tunnel` event.

use serde::{Deserialize, Serialize};

use super::{Direction, Endpoint, ProcessRef, Proto, Side};

/// What protocol a tunnel hides in. A closed set: also a metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Carrier {
    Dns,
    Icmp,
    Http,
}

impl Carrier {
    pub const ALL: [Carrier; 3] = [Carrier::Dns, Carrier::Icmp, Carrier::Http];

    pub fn as_str(self) -> &'static str {
        match self {
            Carrier::Dns => "dns",
            Carrier::Icmp => "icmp",
            Carrier::Http => "http",
        }
    }
}

/// A `tunnel` event: a flow of the gateway's own, or one it forwards,
/// carrying traffic inside a protocol that should not carry it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct TunnelRecord {
    pub ts: String,
    pub protocol: Carrier,
    /// Why, in a few words with the figures.
    pub reason: String,
    /// A flow the gateway routes (a LAN host's tunnel), not its own.
    pub forwarded: bool,
    /// Inode of the network namespace of the socket, or of the interfaces
    /// that forward the flow.
    pub netns: u32,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub process: Option<ProcessRef>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub socket: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub flow_id: Option<u64>,
    pub proto: Proto,
    /// For the gateway's own sockets its end; for a forwarded flow the
    /// host that started it.
    pub local: Endpoint,
    pub remote: Endpoint,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub direction: Option<Direction>,
    /// The side of the gateway the far end is on.
    pub side: Side,
    pub packets_sent: u64,
    pub packets_received: u64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
}
