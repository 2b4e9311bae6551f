//! The events the monitor writes, one JSON object per line. The schema is
//! documented in the README; field names here are that schema.

use serde::{Deserialize, Serialize};

pub mod alert;
pub mod catalogue;
pub mod config_change;
pub mod forward;
pub mod relay;
pub mod self_check;
pub mod stdio_link;
pub mod tunnel;

/// Event kinds, a closed set: also the values of the `kind` metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Exec,
    ExecFailed,
    Fork,
    Exit,
    /// A process that was already running when the monitor started.
    Process,
    /// An outbound TCP connection attempt.
    Connect,
    /// The outcome of an outbound TCP connection attempt.
    ConnectResult,
    /// An inbound TCP connection accepted by a process.
    Accept,
    /// A TCP socket listening.
    Listen,
    /// A socket bound to a local address.
    Bind,
    /// A connection or UDP flow ended, with its bytes.
    Close,
    /// The first packet between a UDP socket and a new peer.
    UdpFlow,
    /// Byte counts of a long-lived connection or flow, periodically.
    FlowUpdate,
    /// A connection or listener that existed when the monitor started.
    Connection,
    /// A process relaying traffic between two connections.
    Relay,
    /// Traffic tunnelled inside DNS, ICMP echo or an HTTP connection.
    Tunnel,
    /// Counts of a flow this machine forwards, periodically and at its end.
    Forward,
    /// A forwarded flow that makes the gateway a relay (hairpin, DNAT to a
    /// port not published).
    Transit,
    /// A change that enables relaying or sniffing, with its process.
    ConfigChange,
    /// The monitor's check of itself: a probe detached, the canary missed.
    SelfCheck,
    /// A shell or interpreter fed by a networked process through a pipe,
    /// a fifo or a pty.
    StdioLink,
    /// A detection rule matched.
    Alert,
    /// A match folded into an open alert that brought something new.
    AlertUpdate,
}

impl Kind {
    pub const ALL: [Kind; 23] = [
        Kind::Exec,
        Kind::ExecFailed,
        Kind::Fork,
        Kind::Exit,
        Kind::Process,
        Kind::Connect,
        Kind::ConnectResult,
        Kind::Accept,
        Kind::Listen,
        Kind::Bind,
        Kind::Close,
        Kind::UdpFlow,
        Kind::FlowUpdate,
        Kind::Connection,
        Kind::Relay,
        Kind::Tunnel,
        Kind::Forward,
        Kind::Transit,
        Kind::ConfigChange,
        Kind::SelfCheck,
        Kind::StdioLink,
        Kind::Alert,
        Kind::AlertUpdate,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Exec => "exec",
            Kind::ExecFailed => "exec_failed",
            Kind::Fork => "fork",
            Kind::Exit => "exit",
            Kind::Process => "process",
            Kind::Connect => "connect",
            Kind::ConnectResult => "connect_result",
            Kind::Accept => "accept",
            Kind::Listen => "listen",
            Kind::Bind => "bind",
            Kind::Close => "close",
            Kind::UdpFlow => "udp_flow",
            Kind::FlowUpdate => "flow_update",
            Kind::Connection => "connection",
            Kind::Relay => "relay",
            Kind::Tunnel => "tunnel",
            Kind::Forward => "forward",
            Kind::Transit => "transit",
            Kind::ConfigChange => "config_change",
            Kind::SelfCheck => "self_check",
            Kind::StdioLink => "stdio_link",
            Kind::Alert => "alert",
            Kind::AlertUpdate => "alert_update",
        }
    }
}

/// What one of the standard descriptors 0, 1, 2 refers to.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum FdKind {
    /// Not open.
    #[default]
    None,
    /// A terminal: a pseudo-terminal, console or serial line.
    Tty,
    Pipe,
    Socket,
    /// A regular file.
    File,
    /// A character device that is not a terminal, such as /dev/null.
    Chardev,
    /// Anything else: a directory, block device or anonymous inode.
    Other,
}

const S_IFMT: u32 = 0o170000;
const S_IFSOCK: u32 = 0o140000;
const S_IFREG: u32 = 0o100000;
const S_IFCHR: u32 = 0o020000;
const S_IFIFO: u32 = 0o010000;

impl FdKind {
    /// The name the JSON form uses.
    pub fn as_str(self) -> &'static str {
        match self {
            FdKind::None => "none",
            FdKind::Tty => "tty",
            FdKind::Pipe => "pipe",
            FdKind::Socket => "socket",
            FdKind::File => "file",
            FdKind::Chardev => "chardev",
            FdKind::Other => "other",
        }
    }

    /// Classifies an inode by its mode and, for character devices, its
    /// major number. Used for kernel records and for /proc alike.
    pub fn classify(mode: u32, major: u32) -> Self {
        if mode == 0 {
            return FdKind::None;
        }
        match mode & S_IFMT {
            S_IFSOCK => FdKind::Socket,
            S_IFIFO => FdKind::Pipe,
            S_IFREG => FdKind::File,
            S_IFCHR if is_tty_major(major) => FdKind::Tty,
            S_IFCHR => FdKind::Chardev,
            _ => FdKind::Other,
        }
    }
}

/// Character-device majors of terminals (Documentation/admin-guide/devices.txt):
/// 2-4 legacy ptys and virtual consoles, 5 /dev/tty, console and ptmx,
/// 136-143 Unix98 pty slaves, 166 ACM modems, 188 USB serial, 204 low-density
/// serial ports (ARM boards), 229 hypervisor consoles.
fn is_tty_major(major: u32) -> bool {
    matches!(major, 2..=5 | 136..=143 | 166 | 188 | 204 | 229)
}

/// One ancestor of a process: its pid and executable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Ancestor {
    pub pid: u32,
    /// Shared with the process table's entry (every event of a descendant
    /// names it).
    pub exe: Option<std::sync::Arc<str>>,
    /// This ancestor forked the process before it in the chain (the event's
    /// process, for the first), which has since been re-parented: the
    /// ancestor exited and the kernel names a subreaper or init instead.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub reparented: bool,
}

/// Identity and credentials common to process events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Task {
    pub pid: u32,
    pub tid: u32,
    pub ppid: u32,
    pub uid: u32,
    pub euid: u32,
    pub gid: u32,
    pub egid: u32,
    /// Audit login uid; absent when unset.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub auid: Option<u32>,
    pub comm: String,
    pub cgroup_id: u64,
    #[serde(default)]
    pub namespaces: Namespaces,
    /// cgroup v2 path; absent when the cgroup is gone or cgroup v2 is not
    /// mounted.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub cgroup: Option<std::sync::Arc<str>>,
    /// The container the cgroup path names, when a known runtime made it.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub container_id: Option<std::sync::Arc<str>>,
}

/// Inode numbers of a process's namespaces, as `/proc/PID/ns/*` links
/// show them (`net:[4026531840]`); 0 when not known.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema,
)]
pub struct Namespaces {
    pub net: u32,
    pub mnt: u32,
    pub pid: u32,
    pub uts: u32,
}

impl Namespaces {
    /// The kernel record's namespaces.
    pub fn from_kernel(ns: &monitor_common::event::Namespaces) -> Self {
        Self {
            net: ns.net,
            mnt: ns.mnt,
            pid: ns.pid,
            uts: ns.uts,
        }
    }
}

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Termination {
    /// `exit(code)`.
    Exited { code: u8 },
    /// Killed by a signal.
    Signaled { signal: u8, core_dumped: bool },
}

impl Termination {
    /// Decodes `task->exit_code` as `wait(2)` does.
    pub fn from_wait_status(status: u32) -> Self {
        let signal = (status & 0x7f) as u8;
        if signal == 0 {
            Termination::Exited {
                code: ((status >> 8) & 0xff) as u8,
            }
        } else {
            Termination::Signaled {
                signal,
                core_dumped: status & 0x80 != 0,
            }
        }
    }
}

/// One output line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Event {
    Exec(Box<ExecRecord>),
    ExecFailed(Box<ExecFailedRecord>),
    Fork(ForkRecord),
    Exit(ExitRecord),
    Process(Box<ProcessRecord>),
    Connect(Box<NetRecord>),
    ConnectResult(Box<NetRecord>),
    Accept(Box<NetRecord>),
    Listen(Box<NetRecord>),
    Bind(Box<NetRecord>),
    Close(Box<NetRecord>),
    UdpFlow(Box<NetRecord>),
    FlowUpdate(Box<NetRecord>),
    Connection(Box<NetRecord>),
    Relay(Box<relay::RelayRecord>),
    Tunnel(Box<tunnel::TunnelRecord>),
    Forward(Box<forward::ForwardRecord>),
    Transit(Box<forward::ForwardRecord>),
    ConfigChange(Box<config_change::ConfigChangeRecord>),
    SelfCheck(Box<self_check::SelfCheckRecord>),
    StdioLink(Box<stdio_link::StdioLinkRecord>),
}

impl Event {
    pub fn kind(&self) -> Kind {
        match self {
            Event::Exec(_) => Kind::Exec,
            Event::ExecFailed(_) => Kind::ExecFailed,
            Event::Fork(_) => Kind::Fork,
            Event::Exit(_) => Kind::Exit,
            Event::Process(_) => Kind::Process,
            Event::Connect(_) => Kind::Connect,
            Event::ConnectResult(_) => Kind::ConnectResult,
            Event::Accept(_) => Kind::Accept,
            Event::Listen(_) => Kind::Listen,
            Event::Bind(_) => Kind::Bind,
            Event::Close(_) => Kind::Close,
            Event::UdpFlow(_) => Kind::UdpFlow,
            Event::FlowUpdate(_) => Kind::FlowUpdate,
            Event::Connection(_) => Kind::Connection,
            Event::Relay(_) => Kind::Relay,
            Event::Tunnel(_) => Kind::Tunnel,
            Event::Forward(_) => Kind::Forward,
            Event::Transit(_) => Kind::Transit,
            Event::ConfigChange(_) => Kind::ConfigChange,
            Event::SelfCheck(_) => Kind::SelfCheck,
            Event::StdioLink(_) => Kind::StdioLink,
        }
    }

    /// A socket event of kind `kind` (one of the network kinds).
    pub fn net(kind: Kind, record: NetRecord) -> Self {
        let r = Box::new(record);
        match kind {
            Kind::Connect => Event::Connect(r),
            Kind::ConnectResult => Event::ConnectResult(r),
            Kind::Accept => Event::Accept(r),
            Kind::Listen => Event::Listen(r),
            Kind::Bind => Event::Bind(r),
            Kind::UdpFlow => Event::UdpFlow(r),
            Kind::FlowUpdate => Event::FlowUpdate(r),
            Kind::Connection => Event::Connection(r),
            _ => Event::Close(r),
        }
    }
}

/// Transport protocol of a socket event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    Tcp,
    Udp,
    /// ICMP or ICMPv6 echo: a flow per echo identifier, which stands in for
    /// both ports.
    Icmp,
}

impl Proto {
    pub const ALL: [Proto; 3] = [Proto::Tcp, Proto::Udp, Proto::Icmp];

    pub fn as_str(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
            Proto::Icmp => "icmp",
        }
    }

    /// The protocol of a kernel record's protocol number (`PROTO_*`).
    pub fn from_kernel(raw: u8) -> Self {
        use monitor_common::event::{PROTO_ICMP, PROTO_ICMPV6, PROTO_UDP};
        match raw {
            PROTO_UDP => Proto::Udp,
            PROTO_ICMP | PROTO_ICMPV6 => Proto::Icmp,
            _ => Proto::Tcp,
        }
    }

    /// The kernel's protocol number for a flow of this protocol with a peer
    /// at `peer` (ICMP has one per IP version).
    pub fn to_kernel(self, peer: std::net::IpAddr) -> u8 {
        use monitor_common::event::{PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP};
        match self {
            Proto::Tcp => PROTO_TCP,
            Proto::Udp => PROTO_UDP,
            Proto::Icmp if peer.is_ipv4() => PROTO_ICMP,
            Proto::Icmp => PROTO_ICMPV6,
        }
    }
}

/// Which side started a connection or flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// This machine's socket opened it (connect, or sent the first UDP packet).
    Outbound,
    /// A peer opened it (accepted, or sent the first UDP packet).
    Inbound,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Outbound => "outbound",
            Direction::Inbound => "inbound",
        }
    }
}

/// An address and port. IPv4-mapped IPv6 addresses are shown as IPv4.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Endpoint {
    pub addr: std::net::IpAddr,
    pub port: u16,
}

/// The process behind a socket event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ProcessRef {
    pub pid: u32,
    pub comm: String,
    pub uid: Option<u32>,
    /// Audit login uid; absent outside login sessions.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub auid: Option<u32>,
    pub exe: Option<String>,
    pub argv: Vec<String>,
    pub ancestry: Vec<Ancestor>,
}

/// The process at the other end of a connection, when it is on this machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct PeerRef {
    pub pid: u32,
    pub exe: Option<String>,
}

/// One socket event; which fields are present depends on the kind.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default, schemars::JsonSchema)]
pub struct NetRecord {
    pub ts: String,
    pub proto: Option<Proto>,
    /// Inode number of the socket's network namespace.
    pub netns: u32,
    /// Socket cookie: one id per socket, shared by all its events.
    pub socket: u64,
    pub local: Option<Endpoint>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub remote: Option<Endpoint>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub direction: Option<Direction>,
    /// The owning process; null when the monitor does not know it.
    pub process: Option<ProcessRef>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub peer_process: Option<PeerRef>,
    /// connect_result: established, refused, timed_out, unreachable,
    /// aborted or error.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub result: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub errno: Option<i32>,
    /// close: closed, idle, released, evicted.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub bytes_sent: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub bytes_received: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub packets_sent: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub packets_received: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub duration_ms: Option<u64>,
    /// connection: the TCP state (established, listen, ...) or `bound`.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub state: Option<String>,
    #[serde(skip_serializing_if = "std::ops::Not::not", default)]
    pub seeded: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ExecRecord {
    /// RFC 3339 wall-clock time.
    pub ts: String,
    #[serde(flatten)]
    pub task: Task,
    pub exe: String,
    /// The executable has no links left: deleted, or a memfd.
    pub exe_deleted: bool,
    pub exe_truncated: bool,
    pub argv: Vec<String>,
    pub argv_truncated: bool,
    pub cwd: String,
    pub cwd_truncated: bool,
    pub stdio: [FdKind; 3],
    pub ancestry: Vec<Ancestor>,
    /// The executable of the process that gave this one an audit login
    /// uid its parent did not have: a login service (sshd, login, cron)
    /// opening a session, or anything else forging one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loginuid_set_by: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ExecFailedRecord {
    pub ts: String,
    #[serde(flatten)]
    pub task: Task,
    /// `execve` or `execveat`.
    pub syscall: String,
    /// The path the caller asked for, as given.
    pub filename: String,
    pub errno: i32,
    /// Symbolic errno, such as `ENOENT`.
    pub error: String,
    pub argv: Vec<String>,
    pub argv_truncated: bool,
    pub cwd: String,
    /// The caller's own executable, from the process table.
    pub exe: Option<String>,
    pub ancestry: Vec<Ancestor>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ForkRecord {
    pub ts: String,
    #[serde(flatten)]
    pub task: Task,
    /// The executable inherited from the parent.
    pub exe: Option<String>,
    /// The executable of the process that gave this one an audit login
    /// uid its parent did not have: a login service (sshd, login, cron)
    /// opening a session, or anything else forging one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loginuid_set_by: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ExitRecord {
    pub ts: String,
    #[serde(flatten)]
    pub task: Task,
    pub exe: Option<String>,
    /// Exit status, when the process called exit.
    pub exit_code: Option<u8>,
    /// Signal number, when a signal ended the process.
    pub signal: Option<u8>,
    pub core_dumped: bool,
    /// Milliseconds from process start to exit.
    pub lifetime_ms: Option<u64>,
}

/// A process found in /proc at start.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ProcessRecord {
    pub ts: String,
    pub seeded: bool,
    pub pid: u32,
    pub ppid: u32,
    pub uid: u32,
    pub euid: u32,
    pub gid: u32,
    pub egid: u32,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub auid: Option<u32>,
    pub comm: String,
    /// Absent for kernel threads.
    pub exe: Option<String>,
    pub exe_deleted: bool,
    pub argv: Vec<String>,
    pub cwd: Option<String>,
    pub stdio: [FdKind; 3],
    pub ancestry: Vec<Ancestor>,
    #[serde(default)]
    pub namespaces: Namespaces,
    /// cgroup v2 path, from /proc/PID/cgroup.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub cgroup: Option<std::sync::Arc<str>>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub container_id: Option<std::sync::Arc<str>>,
}

/// The side of the gateway a connection's far end is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    Wan,
    Lan,
    Mgmt,
    Tunnel,
    /// Loopback, or one of the gateway's own addresses.
    Local,
    /// A namespace the monitor has no map of, or no route.
    Unknown,
}

impl Side {
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Wan => "wan",
            Side::Lan => "lan",
            Side::Mgmt => "mgmt",
            Side::Tunnel => "tunnel",
            Side::Local => "local",
            Side::Unknown => "unknown",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fd_kinds_from_mode() {
        assert_eq!(FdKind::classify(0, 0), FdKind::None);
        assert_eq!(FdKind::classify(0o140777, 0), FdKind::Socket);
        assert_eq!(FdKind::classify(0o010600, 0), FdKind::Pipe);
        assert_eq!(FdKind::classify(0o100644, 0), FdKind::File);
        assert_eq!(FdKind::classify(0o020620, 136), FdKind::Tty);
        assert_eq!(FdKind::classify(0o020666, 1), FdKind::Chardev);
        assert_eq!(FdKind::classify(0o040755, 0), FdKind::Other);
    }

    #[test]
    fn wait_status_decoding() {
        assert_eq!(
            Termination::from_wait_status(0),
            Termination::Exited { code: 0 }
        );
        assert_eq!(
            Termination::from_wait_status(3 << 8),
            Termination::Exited { code: 3 }
        );
        assert_eq!(
            Termination::from_wait_status(9),
            Termination::Signaled {
                signal: 9,
                core_dumped: false
            }
        );
        assert_eq!(
            Termination::from_wait_status(0x80 | 11),
            Termination::Signaled {
                signal: 11,
                core_dumped: true
            }
        );
    }

    #[test]
    fn kind_tag_is_snake_case() {
        let e = Event::Fork(ForkRecord {
            ts: "t".into(),
            task: Task {
                pid: 2,
                tid: 2,
                ppid: 1,
                uid: 0,
                euid: 0,
                gid: 0,
                egid: 0,
                auid: None,
                comm: "x".into(),
                cgroup_id: 1,
                namespaces: Namespaces::default(),
                cgroup: None,
                container_id: None,
            },
            exe: None,
            loginuid_set_by: None,
        });
        let v = serde_json::to_value(&e).expect("serialize");
        assert_eq!(v["kind"], "fork");
        for k in [
            FdKind::None,
            FdKind::Tty,
            FdKind::Pipe,
            FdKind::Socket,
            FdKind::File,
            FdKind::Chardev,
            FdKind::Other,
        ] {
            assert_eq!(serde_json::to_value(k).expect("fd kind"), k.as_str());
        }
        assert_eq!(v["pid"], 2);
        for k in Kind::ALL {
            assert_eq!(serde_json::to_value(k).expect("kind"), k.as_str());
        }
    }
}
