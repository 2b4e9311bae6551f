//! The `relay` event.

use serde::{Deserialize, Serialize};

use super::{Direction, Endpoint, ProcessRef, Proto, Side};

/// How a relay was recognised. A closed set: also a metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// A proxy request on one leg named the address the other leg dialled.
    Fingerprint,
    /// The bytes of a request and its answer went through, exactly or but
    /// for the proxy handshake the relaying process read before it dialled.
    Exchange,
    /// Both ways carried `relay.volume_bytes` and balance.
    Bulk,
    /// Low volume, both ways moving together over several samples.
    Interactive,
    /// The second leg's bytes travelled inside the first, framed (an
    /// encrypted or multiplexed tunnel: an sshd serving a forward).
    Tunnel,
}

impl Method {
    pub const ALL: [Method; 5] = [
        Method::Fingerprint,
        Method::Exchange,
        Method::Bulk,
        Method::Interactive,
        Method::Tunnel,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Method::Fingerprint => "fingerprint",
            Method::Exchange => "exchange",
            Method::Bulk => "bulk",
            Method::Interactive => "interactive",
            Method::Tunnel => "tunnel",
        }
    }
}

/// How the processes holding the two legs are joined.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Via {
    /// One process holds both legs.
    Process,
    /// A process and one of its ancestors (a leg handed to a child).
    Ancestor,
    /// Two processes joined by a pipe or fifo (one's stdout is the
    /// other's stdin).
    Pipe,
    /// Two processes that pass data over one unix stream connection.
    Unix,
}

/// One leg of a relay.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Leg {
    pub socket: u64,
    pub proto: Proto,
    pub local: Endpoint,
    pub remote: Endpoint,
    pub direction: Option<Direction>,
    /// The side of the gateway the far end is on.
    pub side: Side,
    /// The process holding the leg, when another than the relay's.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub pid: Option<u32>,
    pub bytes_received: u64,
    pub bytes_sent: u64,
    /// When the leg's first packet was seen.
    pub start: String,
    /// A proxy protocol in the leg's first bytes, either way.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub fingerprint: Option<String>,
}

/// The proxy request seen on a leg: its protocol and the target it named.
/// Never the payload itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ProxyRequest {
    pub protocol: String,
    /// `addr:port` or `host:port`; absent when the captured bytes did not
    /// reach it (an authenticating SOCKS5 client, a long host name).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub target: Option<String>,
}

/// A `relay` event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct RelayRecord {
    pub ts: String,
    pub process: Option<ProcessRef>,
    pub method: Method,
    /// `inbound+outbound`, `outbound+outbound` (a reverse tunnel) or
    /// `inbound+inbound`.
    pub mode: String,
    /// The sides the two legs reach, first leg first: `wan->lan` reaches
    /// inside, `wan->wan` makes the gateway a hop between outside hosts.
    pub path: String,
    pub via: Via,
    pub legs: [Leg; 2],
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub proxy: Option<ProxyRequest>,
    /// The process is a declared proxy (`relay.allowed_proxies`) serving
    /// on a declared port: reported, raises no alert.
    #[serde(default)]
    pub allowed: bool,
}
