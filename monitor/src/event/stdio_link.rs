//! The `stdio_link` event.

use serde::{Deserialize, Serialize};

use super::{Direction, Endpoint, ProcessRef, Proto};

/// A shell or interpreter whose input (and maybe output) is joined, through
/// a pipe, a fifo or a pseudo-terminal, to another process that holds a
/// network connection: the plumbing of `sh -i <fifo | nc host port >fifo`,
/// of `curl ... | sh`, of an interpreter that keeps the socket and hands the
/// shell a pty. Reported once per shell, whichever started first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct StdioLinkRecord {
    pub ts: String,
    /// The shell or interpreter.
    pub process: ProcessRef,
    /// Which of its descriptors are joined to the peer: 0 (what it reads),
    /// 1 (where it writes).
    pub fds: Vec<u8>,
    /// `pipe` (a pipe or a fifo) or `pty` (the peer holds the terminal's
    /// master side).
    pub via: String,
    /// The process at the other end, which holds the connection.
    pub peer: ProcessRef,
    /// One network connection of the peer's.
    pub connection: LinkedConnection,
}

/// The peer's connection, as socket events name one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct LinkedConnection {
    pub proto: Proto,
    pub local: Endpoint,
    pub remote: Endpoint,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub direction: Option<Direction>,
}
