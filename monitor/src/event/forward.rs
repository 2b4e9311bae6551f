//! The `forward` and `transit` events: flows the gateway routes.

use serde::{Deserialize, Serialize};

use super::{Endpoint, Proto};

/// What an interface is for. A closed set: also a metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Faces the internet (or the operator's upstream).
    Wan,
    /// Faces the protected network.
    Lan,
    /// The management network.
    Mgmt,
    /// A tunnel or overlay (tun, wireguard, gre, ...).
    Tunnel,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Wan, Role::Lan, Role::Mgmt, Role::Tunnel];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Wan => "wan",
            Role::Lan => "lan",
            Role::Mgmt => "mgmt",
            Role::Tunnel => "tunnel",
        }
    }
}

/// A flow's two ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Tuple {
    pub src: Endpoint,
    pub dst: Endpoint,
}

/// Interface a flow came in or left by.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct IfaceSide {
    pub iface: Option<String>,
    /// Absent for an interface the monitor does not watch.
    pub role: Option<Role>,
}

/// Counts of one direction.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema,
)]
pub struct Counts {
    /// IP bytes, headers included.
    pub bytes: u64,
    /// Transport payload bytes.
    pub payload_bytes: u64,
    pub packets: u64,
}

/// Why a forwarded flow is a relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum TransitReason {
    /// In from wan, out to wan: the gateway is a hop between two outside hosts.
    Hairpin,
    /// In from wan, DNAT'd to the inside on a port not declared published.
    DnatUnpublished,
}

impl TransitReason {
    pub const ALL: [TransitReason; 2] = [TransitReason::Hairpin, TransitReason::DnatUnpublished];

    pub fn as_str(self) -> &'static str {
        match self {
            TransitReason::Hairpin => "hairpin",
            TransitReason::DnatUnpublished => "dnat_unpublished",
        }
    }
}

/// A `forward` or `transit` line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ForwardRecord {
    pub ts: String,
    /// When the first packet was counted.
    pub first_seen: String,
    /// One id per flow, shared by all its lines.
    pub flow_id: u64,
    pub netns: u32,
    pub proto: Proto,
    /// The flow as it arrived, before any NAT.
    pub original: Tuple,
    /// The flow as it left, after NAT (the original when there was none).
    pub translated: Tuple,
    /// none, dnat, snat or dnat+snat.
    pub nat: String,
    /// Whether conntrack tracked it (without, NAT is not visible).
    pub conntrack: bool,
    #[serde(rename = "in")]
    pub in_: IfaceSide,
    pub out: IfaceSide,
    /// The original direction (from `original.src`).
    pub forward: Counts,
    /// Replies.
    pub reply: Counts,
    /// active, or ended.
    pub state: String,
    /// fin, rst or idle, for ended flows.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub end_reason: Option<String>,
    /// Set on `transit` lines.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub reason: Option<TransitReason>,
}
