//! Records sent from the kernel to userspace through the ring buffers.
//!
//! Every record starts with [`EventHeader`]; the decoder reads the header
//! first and relies on `kind` and `size` being at offsets 0 and 4. Records
//! with variable data (paths, arguments) carry the lengths of each part in
//! their fixed part, and the parts follow it in the order the fields list.

use crate::assert_size;

/// `EventHeader::kind` of a successful exec ([`ExecEvent`]).
pub const KIND_EXEC: u32 = 1;
/// `EventHeader::kind` of a failed exec attempt ([`ExecFailedEvent`]).
pub const KIND_EXEC_FAILED: u32 = 2;
/// `EventHeader::kind` of a new process ([`ForkEvent`]); threads are not reported.
pub const KIND_FORK: u32 = 3;
/// `EventHeader::kind` of a whole process ending ([`ExitEvent`]).
pub const KIND_EXIT: u32 = 4;
/// `EventHeader::kind` of an outbound TCP connect attempt ([`NetEvent`]).
pub const KIND_NET_CONNECT: u32 = 5;
/// `EventHeader::kind` of the outcome of a TCP connect ([`NetEvent`], `errno`).
pub const KIND_NET_CONNECT_RESULT: u32 = 6;
/// `EventHeader::kind` of a TCP socket starting to listen ([`NetEvent`]).
pub const KIND_NET_LISTEN: u32 = 7;
/// `EventHeader::kind` of an accepted TCP connection ([`NetEvent`]).
pub const KIND_NET_ACCEPT: u32 = 8;
/// `EventHeader::kind` of a successful `bind` ([`NetEvent`]).
pub const KIND_NET_BIND: u32 = 9;
/// `EventHeader::kind` of a TCP connection or listener closing ([`NetEvent`]).
pub const KIND_NET_CLOSE: u32 = 10;
/// `EventHeader::kind` of the first packet between a UDP socket and a peer.
pub const KIND_NET_UDP_FLOW: u32 = 11;
/// `EventHeader::kind` of an inet UDP socket being released ([`NetEvent`]).
pub const KIND_NET_RELEASE: u32 = 12;
/// `EventHeader::kind` of a network configuration change ([`ConfigEvent`]).
pub const KIND_CONFIG: u32 = 13;
/// `EventHeader::kind` of a synthetic record of the benchmark producer
/// ([`BenchEvent`]); only `cargo xtask bench` turns that producer on.
pub const KIND_BENCH: u32 = 14;
/// One past the largest kind; sizes the per-kind loss counters.
pub const KIND_COUNT: u32 = 15;

/// Fixed header of every record.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EventHeader {
    /// One of the `KIND_*` constants.
    pub kind: u32,
    /// Total size of the record in bytes, header and variable data included.
    pub size: u32,
    /// `bpf_ktime_get_boot_ns()` when the event happened.
    pub ts_boot_ns: u64,
    /// Process id (kernel tgid) the event is about.
    pub pid: u32,
    /// Thread id (kernel pid) that triggered the event.
    pub tid: u32,
}
assert_size!(EventHeader, 24);

/// Identity and credentials of the task an event is about.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TaskInfo {
    /// `real_parent->tgid`.
    pub ppid: u32,
    pub uid: u32,
    pub euid: u32,
    pub gid: u32,
    pub egid: u32,
    /// Audit login uid, `u32::MAX` when unset or when the kernel has no audit.
    pub auid: u32,
    /// `task->start_boottime` of the thread-group leader, in ns since boot.
    pub start_boot_ns: u64,
    /// cgroup v2 id of the task.
    pub cgroup_id: u64,
    /// `task->comm`, NUL-padded.
    pub comm: [u8; 16],
    /// The task's namespaces, by inode number.
    pub ns: Namespaces,
}
assert_size!(TaskInfo, 72);

/// Inode numbers of a task's namespaces, as `/proc/PID/ns/*` shows them;
/// 0 where the kernel had none to read (an exiting task has dropped its
/// `nsproxy`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Namespaces {
    /// `nsproxy->net_ns`.
    pub net: u32,
    /// `nsproxy->mnt_ns`.
    pub mnt: u32,
    /// The pid namespace the task's pid lives in
    /// (`task_active_pid_ns`), not `nsproxy->pid_ns_for_children`.
    pub pid: u32,
    /// `nsproxy->uts_ns`.
    pub uts: u32,
}
assert_size!(Namespaces, 16);

/// What one of fds 0, 1 and 2 refers to: the inode's mode, device and
/// number. `mode == 0` means the descriptor is closed.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StdioFd {
    /// `inode->i_mode` (file type and permission bits).
    pub mode: u32,
    /// `inode->i_rdev` in the kernel's encoding: major `>> 20`, minor `& 0xfffff`.
    pub rdev: u32,
    /// `inode->i_ino`: for a pipe or fifo, what joins the process to the
    /// process at its other end (one's stdout is the other's stdin).
    pub ino: u64,
}
assert_size!(StdioFd, 16);

/// The argument block was longer than [`crate::limits::ARGV_MAX`] and was cut.
pub const EXEC_ARGV_TRUNCATED: u32 = 1 << 0;
/// The executable path was deeper or longer than the path bounds and was cut.
pub const EXEC_EXE_TRUNCATED: u32 = 1 << 1;
/// The working directory was deeper or longer than the path bounds and was cut.
pub const EXEC_CWD_TRUNCATED: u32 = 1 << 2;
/// The argument block could not be read from the new process's memory.
pub const EXEC_ARGV_UNREADABLE: u32 = 1 << 3;
/// The filename of a failed exec was longer than the path bound and was cut.
pub const EXEC_FILENAME_TRUNCATED: u32 = 1 << 4;

/// A successful `execve`/`execveat`, from `sched_process_exec`.
///
/// Followed by `exe_len` bytes of executable path, `cwd_len` bytes of
/// working directory and `argv_len` bytes of arguments. Paths are sent as
/// NUL-terminated components from the leaf up to the root (the kernel walks
/// dentries upwards); arguments as the process's own NUL-separated block.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExecEvent {
    pub header: EventHeader,
    pub task: TaskInfo,
    /// Thread id that called exec, when it was not the thread-group leader.
    pub old_tid: u32,
    /// `EXEC_*` flags.
    pub flags: u32,
    pub stdio: [StdioFd; 3],
    /// Link count of the executable's inode: 0 for a deleted file or a memfd.
    pub exe_nlink: u32,
    pub exe_len: u16,
    pub cwd_len: u16,
    pub argv_len: u32,
    pub _pad: u32,
}
assert_size!(ExecEvent, 168);

/// `ExecFailedEvent::syscall` for `execve`.
pub const SYSCALL_EXECVE: u32 = 0;
/// `ExecFailedEvent::syscall` for `execveat`.
pub const SYSCALL_EXECVEAT: u32 = 1;

/// An `execve`/`execveat` that returned an error.
///
/// Followed by `filename_len` bytes of the filename as the caller passed it,
/// `cwd_len` bytes of working directory (components, leaf first) and
/// `argv_len` bytes of NUL-terminated arguments.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExecFailedEvent {
    pub header: EventHeader,
    pub task: TaskInfo,
    /// Positive errno.
    pub errno: i32,
    /// `SYSCALL_EXECVE` or `SYSCALL_EXECVEAT`.
    pub syscall: u32,
    /// `execveat` directory fd (`AT_FDCWD` for `execve`).
    pub dirfd: i32,
    /// `execveat` flags.
    pub at_flags: u32,
    /// `EXEC_*` flags.
    pub flags: u32,
    pub filename_len: u16,
    pub cwd_len: u16,
    pub argv_len: u32,
    pub _pad: u32,
}
assert_size!(ExecFailedEvent, 128);

/// A new process (a `fork`/`clone` without `CLONE_THREAD`).
/// `header.pid` is the child; `task` describes the child.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ForkEvent {
    pub header: EventHeader,
    pub task: TaskInfo,
}
assert_size!(ForkEvent, 96);

/// The last thread of a process exited.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExitEvent {
    pub header: EventHeader,
    pub task: TaskInfo,
    /// `task->exit_code` as `wait(2)` encodes it: signal in bits 0-6, core
    /// dump in bit 7, exit status in bits 8-15.
    pub exit_code: u32,
    pub _pad: u32,
}
assert_size!(ExitEvent, 104);

/// `NetEvent::proto` for TCP.
pub const PROTO_TCP: u8 = 6;
/// `NetEvent::proto` for UDP.
pub const PROTO_UDP: u8 = 17;
/// `FlowKey::proto` of an ICMP echo flow over IPv4 (the echo identifier
/// stands in for both ports).
pub const PROTO_ICMP: u8 = 1;
/// The same over IPv6.
pub const PROTO_ICMPV6: u8 = 58;

/// One socket event. Addresses are 16 bytes in network order; IPv4
/// addresses are stored v4-mapped (`::ffff:a.b.c.d`). Ports are host order.
/// `header.pid` is the owning process (0 when unknown).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetEvent {
    pub header: EventHeader,
    /// Socket cookie (`bpf_get_socket_cookie`), stable for the socket's life.
    pub cookie: u64,
    /// Inode number of the socket's network namespace.
    pub netns: u32,
    /// `PROTO_TCP` or `PROTO_UDP`.
    pub proto: u8,
    /// TCP state before and after, for state-change events. For
    /// `KIND_NET_UDP_FLOW`, `new_state` is 1 when the first packet was sent
    /// and 0 when it was received.
    pub old_state: u8,
    pub new_state: u8,
    /// For `KIND_NET_CLOSE`: the flow's `FP_*` fingerprints, received in
    /// the low four bits and sent in the high four.
    pub fingerprints: u8,
    pub local_addr: [u8; 16],
    pub remote_addr: [u8; 16],
    pub local_port: u16,
    pub remote_port: u16,
    /// Positive errno of a failed connect, 0 otherwise.
    pub errno: i32,
    /// First packet seen on the flow, boot ns (0 when none was counted).
    pub first_ns: u64,
    pub bytes_out: u64,
    pub bytes_in: u64,
    pub pkts_out: u64,
    pub pkts_in: u64,
    /// For `KIND_NET_CLOSE`: the first payload byte received and sent,
    /// boot ns (0: none).
    pub first_in_ns: u64,
    pub first_out_ns: u64,
    /// For `KIND_NET_CONNECT` and `KIND_NET_ACCEPT`: the socket the
    /// process last received data on before this call (cookie 0: none
    /// known), and what the process had received from and sent to it
    /// until then. A proxy reads a request and then dials; this names the
    /// request's connection and how much of it came before the dial.
    pub trigger: Trigger,
    /// `comm` of the owner.
    pub comm: [u8; 16],
}
assert_size!(NetEvent, 176);

/// The connection a process last received data on, with its byte counts
/// as the process saw them (`sock_recv_length`/`sock_send_length`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Trigger {
    pub cookie: u64,
    pub bytes_received: u64,
    pub bytes_sent: u64,
}
assert_size!(Trigger, 24);

/// Owner of a socket, by cookie, as the kernel learnt it (creation,
/// connect, listen, accept, bind). Userspace seeds it for sockets that
/// existed before the monitor.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SockOwner {
    pub tgid: u32,
    pub pid: u32,
    pub netns: u32,
    pub _pad: u32,
    pub comm: [u8; 16],
}
assert_size!(SockOwner, 32);

/// Key of the per-flow counters: a socket and one peer. TCP sockets have
/// one peer; a UDP socket has one entry per peer it exchanges packets with.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FlowKey {
    pub cookie: u64,
    pub peer_addr: [u8; 16],
    pub peer_port: u16,
    pub proto: u8,
    pub _pad: [u8; 5],
}
assert_size!(FlowKey, 32);

/// Per-flow counters, kept by the `cgroup_skb` programs at line rate.
/// Bytes are transport payload bytes (headers excluded).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowStats {
    pub local_addr: [u8; 16],
    pub local_port: u16,
    /// `FP_*` protocol fingerprint of the first payload received and sent.
    pub fp_in: u8,
    pub fp_out: u8,
    /// For a connection this machine opened with an HTTP request
    /// (`fp_out == FP_HTTP`): what it sent first once an answer had come,
    /// `AFTER_ANSWER_HTTP` (another request) or `AFTER_ANSWER_OTHER` (the
    /// protocol changed: a websocket, a tunnel); 0 until then.
    pub after_answer: u8,
    pub _pad: [u8; 3],
    pub first_ns: u64,
    /// Last packet, in `CLOCK_MONOTONIC` at tick resolution
    /// (`bpf_ktime_get_coarse_ns`: a precise clock read costs each packet
    /// about 25 ns); the daemon adds `BOOTTIME - MONOTONIC` when it reads
    /// the map (`clock::last_seen_to_boot`). `first_ns` is boot time.
    pub last_ns: u64,
    pub bytes_out: u64,
    pub bytes_in: u64,
    pub pkts_out: u64,
    pub pkts_in: u64,
    /// TCP: the sequence number just past the last payload byte counted,
    /// each way, so bytes that cross the hook twice (a retransmission) are
    /// counted once. Meaningful once `bytes_out`/`bytes_in` is not 0.
    pub next_seq_out: u32,
    pub next_seq_in: u32,
    /// First payload byte received and sent, boot ns (0: none yet). A
    /// relay cannot pass on data before it arrived: the order of these
    /// tells a relay from two unrelated exchanges of equal size.
    pub first_in_ns: u64,
    pub first_out_ns: u64,
}
assert_size!(FlowStats, 96);

/// No known proxy protocol in the first payload.
pub const FP_NONE: u8 = 0;
/// SOCKS4 request (`04 01|02 port ip user\0`).
pub const FP_SOCKS4: u8 = 1;
/// SOCKS4a request (SOCKS4 with ip `0.0.0.x`, x != 0, and a host name).
pub const FP_SOCKS4A: u8 = 2;
/// SOCKS5 greeting (`05 n methods...`).
pub const FP_SOCKS5: u8 = 3;
/// HTTP `CONNECT host:port` request.
pub const FP_HTTP_CONNECT: u8 = 4;
/// HTTP request in absolute form (`GET http://host/ ...`): a request to
/// a forward proxy.
pub const FP_HTTP_PROXY: u8 = 5;
/// An HTTP request to a server (`GET /path ...`, origin form): not a proxy
/// request; marks the connections whose later traffic the tunnel test
/// watches. Its bytes are not kept.
pub const FP_HTTP: u8 = 6;
/// `FlowStats::after_answer`: the next request was HTTP again.
pub const AFTER_ANSWER_HTTP: u8 = 1;
/// `FlowStats::after_answer`: what followed the answer was not HTTP.
pub const AFTER_ANSWER_OTHER: u8 = 2;
/// Mask of the protocol in `FlowStats::fp_in`/`fp_out`.
pub const FP_PROTO_MASK: u8 = 0x0f;
/// Set in `fp_in`/`fp_out` while the next payload of that direction is
/// still to be captured into `ProxyHead` (a SOCKS5 greeting comes before
/// the request that names the target).
pub const FP_CAPTURE_MORE: u8 = 0x80;

/// Bytes of a connection's first payload kept per direction when it looks
/// like a proxy request (see [`ProxyHead`]).
pub const PROXY_HEAD_BYTES: usize = 64;

/// The first payload bytes of a connection whose first payload looked
/// like a proxy request, each direction that did, for the daemon to read
/// the address it names. Never written out: events carry the protocol and
/// the address only.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProxyHead {
    /// Bytes captured so far, received and sent.
    pub len_in: u16,
    pub len_out: u16,
    pub _pad: u32,
    /// Twice the kept size: the programs write at a bounded offset below
    /// `PROXY_HEAD_BYTES` with a length of at most `PROXY_HEAD_BYTES`, and
    /// the verifier must see room for both.
    pub data_in: [u8; 2 * PROXY_HEAD_BYTES],
    pub data_out: [u8; 2 * PROXY_HEAD_BYTES],
}

assert_size!(ProxyHead, 8 + 4 * PROXY_HEAD_BYTES);

impl Default for ProxyHead {
    fn default() -> Self {
        Self {
            len_in: 0,
            len_out: 0,
            _pad: 0,
            data_in: [0; 2 * PROXY_HEAD_BYTES],
            data_out: [0; 2 * PROXY_HEAD_BYTES],
        }
    }
}

/// Key of the per-process socket activity map: a thread group and a
/// socket it sent or received on.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct IoKey {
    pub tgid: u32,
    pub _pad: u32,
    pub cookie: u64,
}
assert_size!(IoKey, 16);

/// What a process did on a socket through `sendmsg`/`recvmsg` (which
/// `read`, `write`, `send*`, `recv*`, `sendfile` and splice into a socket
/// all reach).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IoStats {
    pub first_ns: u64,
    /// Last call, boot time: a tracing program may not read the coarse
    /// clock the packet counters use.
    pub last_ns: u64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
}
assert_size!(IoStats, 32);

/// Unix stream connections a process moved data on lately, by tgid
/// (`UNIX_LINKS`): each connection as one id that both of its ends share,
/// so two processes joined by a unix socket (`socat ... UNIX-CONNECT:` on
/// one side, `UNIX-LISTEN:` on the other; a web server and its FastCGI
/// workers) show the same id. The ids are opaque (made from the two
/// sockets' kernel addresses) and never written out.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UnixLinks {
    pub ids: [u64; UNIX_LINKS_KEPT],
    /// Slot the next new id goes to, modulo `UNIX_LINKS_KEPT`.
    pub next: u64,
}
assert_size!(UnixLinks, 8 * UNIX_LINKS_KEPT + 8);

/// Unix connections remembered per process, newest replacing oldest.
pub const UNIX_LINKS_KEPT: usize = 4;

impl UnixLinks {
    /// Whether two processes' recent unix connections share one.
    pub fn joined(&self, other: &Self) -> bool {
        self.ids
            .iter()
            .any(|&id| id != 0 && other.ids.contains(&id))
    }
}

/// A change to the machine's network configuration that can turn it into
/// a relay or a sniffer, with the process that made it (`KIND_CONFIG`).
/// `change` is one of the `CFG_*` constants, which also say what `arg0`,
/// `arg1`, `name` and `value` hold.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConfigEvent {
    pub header: EventHeader,
    pub task: TaskInfo,
    pub change: u32,
    /// Network namespace inode of the process.
    pub netns: u32,
    pub arg0: u64,
    pub arg1: u64,
    /// NUL-padded; cut at 64 bytes.
    pub name: [u8; 64],
    /// NUL-padded; cut at 64 bytes.
    pub value: [u8; 64],
}
assert_size!(ConfigEvent, 248);

impl Default for ConfigEvent {
    fn default() -> Self {
        Self {
            header: EventHeader::default(),
            task: TaskInfo::default(),
            change: 0,
            netns: 0,
            arg0: 0,
            arg1: 0,
            name: [0; 64],
            value: [0; 64],
        }
    }
}

/// A sysctl written (`cgroup/sysctl`): `name` is the path under
/// /proc/sys (`net/ipv4/ip_forward`), `value` the new value as written.
/// Only the relay-enabling ones are reported (see the eBPF filter).
pub const CFG_SYSCTL: u32 = 1;
/// A legacy x_tables ruleset replaced (`setsockopt *_SO_SET_REPLACE`):
/// `arg0` the socket level, `arg1` the option, `name` the table.
pub const CFG_XTABLES: u32 = 2;
/// Promiscuous mode requested: `arg0` is 1 for `ioctl(SIOCSIFFLAGS)`
/// (`name` the interface) and 2 for `PACKET_ADD_MEMBERSHIP` (`arg1` the
/// interface index).
pub const CFG_PROMISC: u32 = 3;
/// A packet socket opened (`socket(AF_PACKET, ...)`): `arg0` the type,
/// `arg1` the protocol (network order, as passed).
pub const CFG_PACKET_SOCKET: u32 = 4;
/// A filter attached to a socket (`SO_ATTACH_FILTER`, `SO_ATTACH_BPF`):
/// `arg0` the option, `arg1` the socket's address family.
pub const CFG_SOCKET_FILTER: u32 = 5;
/// A BPF program loaded (`bpf(BPF_PROG_LOAD)`): `arg0` the program type,
/// `name` its name.
pub const CFG_BPF_PROG: u32 = 6;
/// A tun or tap interface attached (`ioctl(TUNSETIFF)`): `arg0` the
/// `IFF_*` flags, `name` the requested interface name.
pub const CFG_TUN: u32 = 7;
/// A request to create or change a link sent over rtnetlink (`ip link
/// add`, `ip link set`): `arg0` the message type, `arg1` its flags,
/// `value` then `name` the message's first 128 bytes. Not a
/// change by itself: it names the process behind the kernel's link
/// notification that follows.
pub const CFG_LINK_REQUEST: u32 = 8;

/// A synthetic record: the benchmark producer's way to measure how fast
/// the daemon drains the ring, with exact loss accounting.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BenchEvent {
    pub header: EventHeader,
    /// Index of the record in its burst.
    pub seq: u64,
}
assert_size!(BenchEvent, 32);

/// `sched_get_priority_max(BENCH_MAGIC | n)` asks the benchmark producer,
/// when attached, for a burst of `n` (at most [`BENCH_BURST_MAX`]) records.
pub const BENCH_MAGIC: u64 = 0x4557_0000;
pub const BENCH_BURST_MAX: u64 = 256;

/// A direction-free 5-tuple of a forwarded packet. Addresses are 16 bytes
/// in network order, IPv4 v4-mapped; ports host order.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FwdTuple {
    pub src: [u8; 16],
    pub dst: [u8; 16],
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
    pub _pad: [u8; 3],
}
assert_size!(FwdTuple, 40);

/// Key of a forwarded flow: the tuple of its first packet before any NAT
/// (conntrack's original direction). Both directions of the flow count in
/// one entry.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FwdKey {
    pub orig: FwdTuple,
    /// Network namespace inode of the interfaces (from `IfaceInfo`).
    pub netns: u32,
    pub _pad: u32,
}
assert_size!(FwdKey, 48);

/// One direction of a forwarded flow.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FwdDir {
    /// IP bytes (headers included, as a flow exporter counts them).
    pub bytes: u64,
    /// Transport payload bytes.
    pub payload: u64,
    pub packets: u64,
    /// Interface the packets came in by and left by.
    pub in_ifindex: u32,
    pub out_ifindex: u32,
}
assert_size!(FwdDir, 32);

/// Counters of one forwarded flow, kept at line rate by the TC programs.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FwdStats {
    /// conntrack's reply tuple (what the answer looks like after NAT);
    /// all zero when the packet had no conntrack entry.
    pub reply: FwdTuple,
    /// Index 0: the original direction; 1: replies.
    pub dir: [FwdDir; 2],
    pub first_ns: u64,
    /// Last packet, in `CLOCK_MONOTONIC` at tick resolution
    /// (`bpf_ktime_get_coarse_ns`: a precise clock read costs each packet
    /// about 25 ns); the daemon adds `BOOTTIME - MONOTONIC` when it reads
    /// the map (`clock::last_seen_to_boot`). `first_ns` is boot time.
    pub last_ns: u64,
    /// `FWD_*` flags.
    pub flags: u32,
    pub _pad: u32,
}
assert_size!(FwdStats, 128);

/// The flow has a conntrack entry, so `reply` is set.
pub const FWD_CONNTRACK: u32 = 1 << 0;
/// A TCP FIN went each way, or a RST either way: the flow has ended.
pub const FWD_FIN_ORIG: u32 = 1 << 1;
pub const FWD_FIN_REPLY: u32 = 1 << 2;
pub const FWD_RST: u32 = 1 << 3;

/// What the TC programs need to know about an interface, by ifindex.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IfaceInfo {
    /// Bytes of link-layer header before the IP header (14 on Ethernet,
    /// 0 on tun and IP tunnels).
    pub l2_len: u32,
    /// Inode of the interface's network namespace, copied into `FwdKey`.
    pub netns: u32,
}
assert_size!(IfaceInfo, 8);

/// Indices into the per-CPU `COUNTERS` array. Indices below [`KIND_COUNT`]
/// count records of that kind the ring buffer had no room for.
pub mod counter {
    /// Records lost because the ring buffer was full, for kind `k`: index
    /// `LOST_BASE + k`, for every `k < KIND_COUNT`.
    pub const LOST_BASE: u32 = 0;
    /// A kernel memory read failed while building a record.
    pub const READ_ERRORS: u32 = 16;
    /// The scratch slot could not be looked up.
    pub const SCRATCH_ERRORS: u32 = 17;
    /// The exec-attempt map was full (failed exec may go unreported).
    pub const ATTEMPT_ERRORS: u32 = 18;
    /// The socket-owner map was full: a socket's events name no process.
    pub const SOCK_OWNER_FULL: u32 = 19;
    /// The flow-counter map was full: a flow's bytes were not counted.
    pub const FLOW_MAP_FULL: u32 = 20;
    /// Packets the flow counters could not parse (not TCP/UDP, IPv6 with
    /// extension headers, truncated headers).
    pub const PACKETS_UNPARSED: u32 = 21;
    /// The socket-activity map was full: a process's use of a socket was
    /// not recorded.
    pub const IO_MAP_FULL: u32 = 22;
    /// The forwarded-flow map was full: a routed flow was not counted.
    pub const FWD_MAP_FULL: u32 = 23;
    /// Socket events shed because their process was over its share of a
    /// ring under pressure (each is also counted as lost for its kind).
    pub const NET_SHED: u32 = 24;
    /// Number of counters.
    pub const COUNT: u32 = 32;
    /// Every error counter, in the order userspace names them.
    pub const ERRORS: [u32; 9] = [
        READ_ERRORS,
        SCRATCH_ERRORS,
        ATTEMPT_ERRORS,
        SOCK_OWNER_FULL,
        FLOW_MAP_FULL,
        PACKETS_UNPARSED,
        IO_MAP_FULL,
        FWD_MAP_FULL,
        NET_SHED,
    ];
}

#[cfg(test)]
mod tests {
    use core::mem::offset_of;

    use super::*;

    /// The decoder reads `kind` and `size` before it knows the record type.
    #[test]
    fn header_fields_are_where_the_decoder_reads_them() {
        assert_eq!(offset_of!(EventHeader, kind), 0);
        assert_eq!(offset_of!(EventHeader, size), 4);
        assert_eq!(offset_of!(EventHeader, ts_boot_ns), 8);
        assert_eq!(offset_of!(ExecEvent, header), 0);
        assert_eq!(offset_of!(ExecFailedEvent, header), 0);
        assert_eq!(offset_of!(ForkEvent, header), 0);
        assert_eq!(offset_of!(ExitEvent, header), 0);
    }

    /// Variable data follows the fixed part, so every fixed part must keep
    /// 8-byte alignment and the length fields must sit where the kernel
    /// writes them.
    #[test]
    fn fixed_parts_keep_alignment_and_length_fields() {
        for size in [
            size_of::<ExecEvent>(),
            size_of::<ExecFailedEvent>(),
            size_of::<ForkEvent>(),
            size_of::<ExitEvent>(),
        ] {
            assert_eq!(size % 8, 0);
        }
        assert_eq!(offset_of!(ExecEvent, task), 24);
        assert_eq!(offset_of!(ExecEvent, stdio), 104);
        assert_eq!(offset_of!(ExecEvent, exe_len), 156);
        assert_eq!(offset_of!(ExecEvent, argv_len), 160);
        assert_eq!(offset_of!(ExecFailedEvent, filename_len), 116);
        assert_eq!(offset_of!(ExitEvent, exit_code), 96);
        assert_eq!(offset_of!(TaskInfo, comm), 40);
        assert_eq!(offset_of!(NetEvent, header), 0);
        assert_eq!(size_of::<NetEvent>() % 8, 0);
        assert_eq!(offset_of!(NetEvent, trigger), 136);
        assert_eq!(offset_of!(FlowStats, first_in_ns), 80);
        assert_eq!(size_of::<ProxyHead>() % 8, 0);
    }

    #[test]
    fn counters_do_not_overlap_loss_slots() {
        for c in counter::ERRORS {
            assert!((counter::LOST_BASE + KIND_COUNT..counter::COUNT).contains(&c));
        }
    }
}
