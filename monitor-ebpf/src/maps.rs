//! Maps shared by the programs. Names and sizes come from
//! `monitor_common::limits`; userspace resizes some of them at load time.

use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray, RingBuf},
};
use monitor_common::{
    event::{
        counter, FlowKey, FlowStats, FwdKey, FwdStats, IfaceInfo, IoKey, IoStats, ProxyHead,
        SockOwner, UnixLinks,
    },
    limits::{
        EXEC_ATTEMPTS_MAX, FLOWS_MAX, FWD_FLOWS_MAX, IFACES_MAX, LAST_RECV_MAX, NET_RING_BYTES,
        NET_SHARES_MAX, PROC_RING_BYTES, PROXY_HEADS_MAX, SCRATCH_BYTES, SOCK_CALLS_MAX,
        SOCK_IO_MAX, SOCK_OWNERS_MAX, UNIX_LINKS_MAX,
    },
};

/// Process events (exec, failed exec, fork, exit). Resized by userspace.
#[map(name = "PROC_EVENTS")]
pub static PROC_EVENTS: RingBuf = RingBuf::with_byte_size(PROC_RING_BYTES, 0);

/// Slot 0 is 1 while the reader is parked: waiting for a wakeup with no
/// timed poll running. The first program to add a record clears it and
/// wakes the reader. Written by userspace and the programs.
#[map(name = "READER")]
pub static READER: Array<u32> = Array::with_max_entries(1, 0);

/// Losses and errors, per CPU, indexed by `monitor_common::event::counter`.
#[map(name = "COUNTERS")]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::COUNT, 0);

/// One slot per CPU where variable-size records are assembled before
/// `bpf_ringbuf_output` copies the used part. A plain array indexed by CPU
/// because per-CPU map values are limited to 32 KiB. Userspace sets
/// `max_entries` to the number of possible CPUs.
#[map(name = "SCRATCH")]
pub static SCRATCH: Array<[u8; SCRATCH_BYTES]> = Array::with_max_entries(1, 0);

/// An exec attempt between `sys_enter_execve*` and `sys_exit_execve*`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ExecAttempt {
    pub filename: u64,
    pub argv: u64,
    pub dirfd: i32,
    pub at_flags: u32,
    pub syscall: u32,
    pub _pad: u32,
}

/// Exec attempts in flight, keyed by `pid_tgid`.
#[map(name = "EXEC_ATTEMPTS")]
pub static EXEC_ATTEMPTS: LruHashMap<u64, ExecAttempt> =
    LruHashMap::with_max_entries(EXEC_ATTEMPTS_MAX, 0);

/// Adds one to counter `index` on this CPU.
#[inline(always)]
pub fn count(index: u32) {
    if let Some(p) = COUNTERS.get_ptr_mut(index) {
        // SAFETY: per-CPU slot, only this CPU writes it while we run.
        unsafe { *p += 1 };
    }
}

/// Path-walk state, per CPU (see `kernel::Walk`).
#[map(name = "PATH_WALK")]
pub static PATH_WALK: PerCpuArray<crate::kernel::Walk> = PerCpuArray::with_max_entries(1, 0);

/// Socket events. Separate from process events so a flood of one cannot
/// starve the other. Resized by userspace.
#[map(name = "NET_EVENTS")]
pub static NET_EVENTS: RingBuf = RingBuf::with_byte_size(NET_RING_BYTES, 0);

/// A process's share of the socket-event ring while it is under pressure
/// (see `probes::net::over_fair_share`).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Share {
    pub window_ns: u64,
    pub used: u64,
}

/// Shares by tgid. An LRU: only processes active under pressure matter.
#[map(name = "NET_SHARES")]
pub static NET_SHARES: LruHashMap<u32, Share> = LruHashMap::with_max_entries(NET_SHARES_MAX, 0);

/// Owner of each TCP/UDP socket, by cookie. A plain hash map: when it is
/// full, new sockets go unnamed and the failure is counted, rather than an
/// LRU silently dropping the owner of a live connection.
#[map(name = "SOCK_OWNERS")]
pub static SOCK_OWNERS: HashMap<u64, SockOwner> = HashMap::with_max_entries(SOCK_OWNERS_MAX, 0);

/// Per-flow counters (socket and peer). Entries leave at TCP close, or
/// when userspace ends an idle or released UDP flow.
#[map(name = "FLOWS")]
pub static FLOWS: HashMap<FlowKey, FlowStats> = HashMap::with_max_entries(FLOWS_MAX, 0);

/// `bind` calls in flight: the fd, by `pid_tgid`.
#[map(name = "SOCK_CALLS")]
pub static SOCK_CALLS: LruHashMap<u64, u64> = LruHashMap::with_max_entries(SOCK_CALLS_MAX, 0);

/// Packet counters' working memory (see `probes::net::PacketScratch`).
#[map(name = "PACKET_SCRATCH")]
pub static PACKET_SCRATCH: PerCpuArray<crate::probes::net::PacketScratch> =
    PerCpuArray::with_max_entries(1, 0);

/// Which process used which socket, and how much, from the
/// `sock_send_length`/`sock_recv_length` tracepoints. An LRU: it is a hint
/// for relay detection, and the pairs idle longest matter least.
#[map(name = "SOCK_IO")]
pub static SOCK_IO: LruHashMap<IoKey, IoStats> = LruHashMap::with_max_entries(SOCK_IO_MAX, 0);

/// The first payload bytes of flows whose first payload looked like a
/// proxy request, by flow (see `probes::net::capture_head`). An LRU: the
/// daemon reads an entry when the flow's process dials out, at once.
#[map(name = "PROXY_HEADS")]
pub static PROXY_HEADS: LruHashMap<FlowKey, ProxyHead> =
    LruHashMap::with_max_entries(PROXY_HEADS_MAX, 0);

/// The socket each process last received data on, by tgid: what a
/// connect or accept that follows was triggered by (a proxy reads the
/// request, then dials). An LRU of recent receivers.
#[map(name = "LAST_RECV")]
pub static LAST_RECV: LruHashMap<u32, u64> = LruHashMap::with_max_entries(LAST_RECV_MAX, 0);

/// Each process's recent unix stream connections (see `UnixLinks`), by
/// tgid: how the daemon sees two processes joined by a unix socket, one
/// holding a relay's inbound leg and the other its outbound one. An LRU.
#[map(name = "UNIX_LINKS")]
pub static UNIX_LINKS: LruHashMap<u32, UnixLinks> = LruHashMap::with_max_entries(UNIX_LINKS_MAX, 0);

/// Counters of forwarded flows, by original tuple. Entries leave when
/// userspace reports the flow ended (see `probes::forward`).
#[map(name = "FWD_FLOWS")]
pub static FWD_FLOWS: HashMap<FwdKey, FwdStats> = HashMap::with_max_entries(FWD_FLOWS_MAX, 0);

/// Interfaces the TC programs count on, by ifindex, written by userspace.
#[map(name = "IFACES")]
pub static IFACES: HashMap<u32, IfaceInfo> = HashMap::with_max_entries(IFACES_MAX, 0);

/// Forwarded-flow counters' working memory.
#[map(name = "FWD_SCRATCH")]
pub static FWD_SCRATCH: PerCpuArray<crate::probes::forward::FwdScratch> =
    PerCpuArray::with_max_entries(1, 0);
