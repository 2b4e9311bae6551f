//! Sockets: who owns them, their TCP life cycle, and per-flow byte counts.
//!
//! - `cgroup/sock_create` and `cgroup/sock_release` on the cgroup v2 root
//!   record and forget the owner of every TCP and UDP socket, by cookie.
//! - `tp_btf/inet_sock_set_state` (`include/trace/events/sock.h`) follows
//!   TCP state changes: connect attempts and results, listen, close.
//! - `syscalls:sys_exit_accept{,4}` and `sys_{enter,exit}_bind` name the
//!   process that accepted a connection or bound a socket.
//! - `cgroup_skb/{ingress,egress}` count payload bytes and packets per
//!   socket and peer at line rate, in `FLOWS`; no event per packet, except
//!   the first packet between a UDP socket and a new peer.

use aya_ebpf::{
    bindings::{__sk_buff, bpf_sock, BPF_RB_AVAIL_DATA, BPF_RB_RING_SIZE},
    helpers::{
        bpf_get_current_pid_tgid, bpf_get_current_task, bpf_get_socket_cookie,
        bpf_ktime_get_boot_ns, bpf_sk_fullsock, bpf_skb_load_bytes,
    },
    macros::{btf_tracepoint, cgroup_skb, cgroup_sock, tracepoint},
    programs::{BtfTracePointContext, SkBuffContext, SockContext, TracePointContext},
};
use aya_log_ebpf::debug;
use monitor_common::event::{
    counter, EventHeader, FlowKey, FlowStats, IoKey, IoStats, NetEvent, ProxyHead, SockOwner,
    Trigger, UnixLinks, AFTER_ANSWER_HTTP, AFTER_ANSWER_OTHER, FP_CAPTURE_MORE, FP_HTTP,
    FP_HTTP_CONNECT, FP_HTTP_PROXY, FP_NONE, FP_SOCKS4, FP_SOCKS4A, FP_SOCKS5, KIND_NET_ACCEPT,
    KIND_NET_BIND, KIND_NET_CLOSE, KIND_NET_CONNECT, KIND_NET_CONNECT_RESULT, KIND_NET_LISTEN,
    KIND_NET_RELEASE, KIND_NET_UDP_FLOW, PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP,
    PROXY_HEAD_BYTES, UNIX_LINKS_KEPT,
};
use monitor_common::limits::{NET_SHARE_EVENTS, NET_SHARE_WINDOW_NS};
use monitor_common::offsets::OFFSET_MISSING;

use crate::{
    kernel::{
        current_netns, last_seen, off, read, sk_netns, sk_tuple, sock_of_fd, v4_mapped, wakeup,
        ReadError, AF_INET, AF_INET6, AF_UNIX, BPF_NOEXIST, ETH_P_IP, ETH_P_IPV6,
    },
    maps::{
        count, Share, FLOWS, LAST_RECV, NET_EVENTS, NET_SHARES, PACKET_SCRATCH, PROXY_HEADS,
        SOCK_CALLS, SOCK_IO, SOCK_OWNERS, UNIX_LINKS,
    },
    probes::atomic_add,
};

// TCP states, include/net/tcp_states.h.
const TCP_ESTABLISHED: i32 = 1;
const TCP_SYN_SENT: i32 = 2;
const TCP_CLOSE: i32 = 7;
const TCP_LISTEN: i32 = 10;
/// SYN in the TCP header's flags byte (offset 13).
const TCP_FLAG_SYN: u8 = 0x02;

const SOCK_STREAM: u32 = 1;
const SOCK_DGRAM: u32 = 2;
const SOCK_RAW: u32 = 3;
// ICMP echo types.
const ICMP_ECHO: u8 = 8;
const ICMP_ECHOREPLY: u8 = 0;
const ICMPV6_ECHO: u8 = 128;
const ICMPV6_ECHOREPLY: u8 = 129;
/// DNS: flows to or from this port keep their first bytes (the query
/// names), for the tunnel tests.
const DNS_PORT: u16 = 53;
// IPv6 extension headers with the generic (next header, length) layout.
const IPPROTO_HOPOPTS: u8 = 0;
const IPPROTO_ROUTING: u8 = 43;
const IPPROTO_DSTOPTS: u8 = 60;
/// Extension headers skipped before a packet counts as unparsed.
const IPV6_EXT_MAX: usize = 4;

/// Returned by cgroup programs: let the operation or packet through.
const ALLOW: i32 = 1;

#[inline(always)]
fn now() -> u64 {
    // SAFETY: helper without arguments.
    unsafe { bpf_ktime_get_boot_ns() }
}

/// The current task as a socket owner.
#[inline(always)]
fn current_owner() -> SockOwner {
    let pid_tgid = bpf_get_current_pid_tgid();
    // SAFETY: helper without arguments.
    let task = unsafe { bpf_get_current_task() };
    SockOwner {
        tgid: (pid_tgid >> 32) as u32,
        pid: pid_tgid as u32,
        netns: current_netns(task).unwrap_or(0),
        _pad: 0,
        comm: aya_ebpf::helpers::bpf_get_current_comm().unwrap_or_default(),
    }
}

#[inline(always)]
fn set_owner(cookie: u64, owner: &SockOwner) {
    if SOCK_OWNERS.insert(cookie, owner, 0).is_err() {
        count(counter::SOCK_OWNER_FULL);
    }
}

#[inline(always)]
fn owner_of(cookie: u64) -> SockOwner {
    // SAFETY: the value is copied out at once.
    unsafe { SOCK_OWNERS.get(cookie) }
        .copied()
        .unwrap_or_default()
}

/// The socket process `tgid` last received data on, with what it had
/// received from and sent to it so far (all zero when unknown: kernels
/// without the activity tracepoints, or a process that received nothing).
#[inline(always)]
fn trigger_of(tgid: u32) -> Trigger {
    // SAFETY: values are copied out at once.
    let Some(cookie) = (unsafe { LAST_RECV.get(&tgid) }).copied() else {
        return Trigger::default();
    };
    let key = IoKey {
        tgid,
        _pad: 0,
        cookie,
    };
    // SAFETY: as above.
    match unsafe { SOCK_IO.get(&key) } {
        Some(io) => Trigger {
            cookie,
            bytes_received: io.bytes_received,
            bytes_sent: io.bytes_sent,
        },
        None => Trigger {
            cookie,
            ..Trigger::default()
        },
    }
}

/// Whether an event of process `tgid` is to be shed: only while the ring
/// is more than half full (the reader is behind), and only once the
/// process used up its share of the current window. Processes that add
/// little (a relay's few connections) never reach their share, so a flood
/// from one process cannot starve their events. Updates race between CPUs;
/// the share is approximate, which is all it needs to be.
#[inline(always)]
fn over_fair_share(tgid: u32) -> bool {
    let size = NET_EVENTS.query(BPF_RB_RING_SIZE as u64);
    if NET_EVENTS.query(BPF_RB_AVAIL_DATA as u64) * 2 < size {
        return false;
    }
    let t = now();
    match NET_SHARES.get_ptr_mut(&tgid) {
        // SAFETY: a live map value; racing writers only blur the count.
        Some(share) => unsafe {
            if t.wrapping_sub((*share).window_ns) >= NET_SHARE_WINDOW_NS {
                (*share).window_ns = t;
                (*share).used = 1;
                false
            } else {
                (*share).used += 1;
                (*share).used > NET_SHARE_EVENTS
            }
        },
        None => {
            let _ = NET_SHARES.insert(
                &tgid,
                &Share {
                    window_ns: t,
                    used: 1,
                },
                0,
            );
            false
        }
    }
}

/// Reserves a socket event in the ring buffer, fills its header from
/// `owner`, lets `fill` add the rest, and submits it. Built in place: a
/// `NetEvent` on the stack would not fit beside the packet parser's.
#[inline(always)]
fn emit(
    kind: u32,
    cookie: u64,
    proto: u8,
    owner: &SockOwner,
    fill: impl FnOnce(&mut NetEvent) -> Result<(), ReadError>,
) -> Result<(), ReadError> {
    if over_fair_share(owner.tgid) {
        count(counter::NET_SHED);
        count(counter::LOST_BASE + kind);
        return Ok(());
    }
    // Decided before the reservation, which the query would count.
    let wake = wakeup(&NET_EVENTS, core::mem::size_of::<NetEvent>() as u64);
    let Some(mut entry) = NET_EVENTS.reserve::<NetEvent>(0) else {
        count(counter::LOST_BASE + kind);
        return Ok(());
    };
    let ev = entry.as_mut_ptr();
    // SAFETY: the reserved record is exactly one NetEvent; zero it first
    // so no stale ring-buffer bytes leak into unset fields.
    let ev = unsafe {
        core::ptr::write_bytes(ev, 0, 1);
        &mut *ev
    };
    ev.header = EventHeader {
        kind,
        size: core::mem::size_of::<NetEvent>() as u32,
        ts_boot_ns: now(),
        pid: owner.tgid,
        tid: owner.pid,
    };
    ev.cookie = cookie;
    ev.netns = owner.netns;
    ev.proto = proto;
    ev.comm = owner.comm;
    match fill(ev) {
        Ok(()) => {
            entry.submit(wake);
            Ok(())
        }
        Err(e) => {
            entry.discard(0);
            Err(e)
        }
    }
}

#[inline(always)]
fn is_inet_tcp_udp(sk: *mut bpf_sock) -> Option<u8> {
    // SAFETY: the context's socket is valid for the program's run.
    let (family, ty, proto) = unsafe { ((*sk).family, (*sk).type_, (*sk).protocol) };
    if family != AF_INET as u32 && family != AF_INET6 as u32 {
        return None;
    }
    match (ty, proto as u8) {
        (SOCK_STREAM, PROTO_TCP) => Some(PROTO_TCP),
        (SOCK_DGRAM, PROTO_UDP) => Some(PROTO_UDP),
        // Ping sockets and raw ICMP sockets: their echo flows count.
        (SOCK_DGRAM | SOCK_RAW, p @ (PROTO_ICMP | PROTO_ICMPV6)) => Some(p),
        _ => None,
    }
}

/// Every new TCP or UDP socket: remember who created it.
#[cgroup_sock(sock_create)]
pub fn net_sock_create(ctx: SockContext) -> i32 {
    if is_inet_tcp_udp(ctx.sock).is_some() {
        // SAFETY: the context is a socket.
        let cookie = unsafe { bpf_get_socket_cookie(ctx.sock.cast()) };
        set_owner(cookie, &current_owner());
    }
    ALLOW
}

/// A TCP or UDP socket's last reference is gone. UDP flows end here; a TCP
/// socket's owner is kept until the state machine reaches CLOSE.
#[cgroup_sock(sock_release)]
pub fn net_sock_release(ctx: SockContext) -> i32 {
    let Some(proto) = is_inet_tcp_udp(ctx.sock) else {
        return ALLOW;
    };
    // SAFETY: the context is a socket.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.sock.cast()) };
    if proto != PROTO_TCP {
        let owner = owner_of(cookie);
        let _ = emit(KIND_NET_RELEASE, cookie, proto, &owner, |_| Ok(()));
        let _ = SOCK_OWNERS.remove(cookie);
    } else if unsafe { (*ctx.sock).state } == TCP_CLOSE as u32 {
        let _ = SOCK_OWNERS.remove(cookie);
    }
    ALLOW
}

/// `inet_sock_set_state(const struct sock *sk, int oldstate, int newstate)`.
#[btf_tracepoint(function = "inet_sock_set_state")]
pub fn net_inet_sock_set_state(ctx: BtfTracePointContext) -> i32 {
    if try_set_state(&ctx).is_err() {
        debug!(
            &ctx,
            "net_inet_sock_set_state: kernel read failed; event dropped"
        );
    }
    0
}

fn try_set_state(ctx: &BtfTracePointContext) -> Result<(), ReadError> {
    let sk: *mut core::ffi::c_void = ctx.arg(0);
    let old: i32 = ctx.arg(1);
    let new: i32 = ctx.arg(2);
    let proto: u16 = read(sk as u64, off!(sock_sk_protocol))?;
    if proto != PROTO_TCP as u16 {
        return Ok(());
    }
    // SAFETY: a BTF `struct sock *` from the tracepoint. Called on every
    // transition: it assigns the socket its cookie, which the accept hook
    // can then read from `sk_cookie` (it cannot call the helper itself).
    let cookie = unsafe { bpf_get_socket_cookie(sk) };
    let kind = match (old, new) {
        (TCP_CLOSE, TCP_SYN_SENT) => KIND_NET_CONNECT,
        (TCP_SYN_SENT, TCP_ESTABLISHED) | (TCP_SYN_SENT, TCP_CLOSE) => KIND_NET_CONNECT_RESULT,
        (TCP_CLOSE, TCP_LISTEN) => KIND_NET_LISTEN,
        (_, TCP_CLOSE) => KIND_NET_CLOSE,
        _ => return Ok(()),
    };
    let sk = sk as u64;
    let owner = if kind == KIND_NET_CONNECT || kind == KIND_NET_LISTEN {
        // connect() and listen() run in the calling process.
        let owner = current_owner();
        set_owner(cookie, &owner);
        owner
    } else {
        owner_of(cookie)
    };
    let sent = emit(kind, cookie, PROTO_TCP, &owner, |ev| {
        ev.netns = sk_netns(sk)?;
        ev.old_state = old as u8;
        ev.new_state = new as u8;
        if kind == KIND_NET_CONNECT {
            ev.trigger = trigger_of(owner.tgid);
        }
        let (local, lport, remote, rport) = sk_tuple(sk)?;
        ev.local_addr = local;
        ev.local_port = lport;
        ev.remote_addr = remote;
        ev.remote_port = rport;
        if new == TCP_CLOSE {
            if old == TCP_SYN_SENT {
                ev.errno = read(sk, off!(sock_sk_err))?;
            }
            let key = flow_key(cookie, remote, rport);
            // SAFETY: the value is read before the entry is removed below.
            if let Some(stats) = unsafe { FLOWS.get(&key) } {
                // The port may already be released at CLOSE (TIME_WAIT
                // hands it to the timewait socket); the packets knew it.
                if ev.local_port == 0 {
                    ev.local_addr = stats.local_addr;
                    ev.local_port = stats.local_port;
                }
                ev.first_ns = stats.first_ns;
                ev.first_in_ns = stats.first_in_ns;
                ev.first_out_ns = stats.first_out_ns;
                ev.fingerprints = (stats.fp_in & 0x0f) | ((stats.fp_out & 0x0f) << 4);
                ev.bytes_out = stats.bytes_out;
                ev.bytes_in = stats.bytes_in;
                ev.pkts_out = stats.pkts_out;
                ev.pkts_in = stats.pkts_in;
            }
        }
        Ok(())
    });
    // At CLOSE the flow's counters and owner leave the maps whether or not
    // the event found room in the ring: a full ring must not leak entries
    // (a connection flood would otherwise fill the counter map and blind
    // every later flow, relays included).
    if new == TCP_CLOSE {
        if let Ok((_, _, remote, rport)) = sk_tuple(sk) {
            let _ = FLOWS.remove(&flow_key(cookie, remote, rport));
        }
        let _ = SOCK_OWNERS.remove(cookie);
    }
    sent
}

#[inline(always)]
fn flow_key(cookie: u64, peer_addr: [u8; 16], peer_port: u16) -> FlowKey {
    FlowKey {
        cookie,
        peer_addr,
        peer_port,
        proto: PROTO_TCP,
        _pad: [0; 5],
    }
}

/// Returns the socket behind the fd an accept returned, if any.
#[inline(always)]
fn accepted(ctx: &TracePointContext) -> Result<(), ReadError> {
    // SAFETY: offset of the generic syscall-exit record.
    let ret: i64 = unsafe { ctx.read_at::<i64>(16) }.map_err(|_| ReadError)?;
    if ret < 0 {
        return Ok(());
    }
    // SAFETY: helper without arguments.
    let task = unsafe { bpf_get_current_task() };
    let Some(sk) = sock_of_fd(task, ret as u64)? else {
        return Ok(());
    };
    let proto: u16 = read(sk, off!(sock_sk_protocol))?;
    let family: u16 = read(sk, off!(sock_common_skc_family))?;
    if proto != PROTO_TCP as u16 || (family != AF_INET && family != AF_INET6) {
        return Ok(());
    }
    // The cookie was assigned when the connection was established.
    let cookie: u64 = read(sk, off!(sock_common_skc_cookie))?;
    let owner = current_owner();
    set_owner(cookie, &owner);
    emit(KIND_NET_ACCEPT, cookie, PROTO_TCP, &owner, |ev| {
        ev.netns = sk_netns(sk)?;
        ev.trigger = trigger_of(owner.tgid);
        let (local, lport, remote, rport) = sk_tuple(sk)?;
        ev.local_addr = local;
        ev.local_port = lport;
        ev.remote_addr = remote;
        ev.remote_port = rport;
        Ok(())
    })
}

/// `syscalls:sys_exit_accept`: the new fd at 16.
#[tracepoint(category = "syscalls", name = "sys_exit_accept")]
pub fn net_sys_exit_accept(ctx: TracePointContext) -> i32 {
    if accepted(&ctx).is_err() {
        debug!(
            &ctx,
            "net_sys_exit_accept: kernel read failed; event dropped"
        );
    }
    0
}

/// `syscalls:sys_exit_accept4`: the new fd at 16.
#[tracepoint(category = "syscalls", name = "sys_exit_accept4")]
pub fn net_sys_exit_accept4(ctx: TracePointContext) -> i32 {
    if accepted(&ctx).is_err() {
        debug!(
            &ctx,
            "net_sys_exit_accept4: kernel read failed; event dropped"
        );
    }
    0
}

/// `syscalls:sys_enter_bind`: fd at 16.
#[tracepoint(category = "syscalls", name = "sys_enter_bind")]
pub fn net_sys_enter_bind(ctx: TracePointContext) -> i32 {
    // SAFETY: offset of the generic syscall-entry record.
    if let Ok(fd) = unsafe { ctx.read_at::<u64>(16) } {
        if SOCK_CALLS
            .insert(bpf_get_current_pid_tgid(), fd, 0)
            .is_err()
        {
            count(counter::ATTEMPT_ERRORS);
        }
    }
    0
}

/// `syscalls:sys_exit_bind`: return value at 16.
#[tracepoint(category = "syscalls", name = "sys_exit_bind")]
pub fn net_sys_exit_bind(ctx: TracePointContext) -> i32 {
    if try_bound(&ctx).is_err() {
        debug!(&ctx, "net_sys_exit_bind: kernel read failed; event dropped");
    }
    0
}

fn try_bound(ctx: &TracePointContext) -> Result<(), ReadError> {
    let key = bpf_get_current_pid_tgid();
    // SAFETY: the value is copied out before the entry is removed.
    let Some(fd) = (unsafe { SOCK_CALLS.get(key) }).copied() else {
        return Ok(());
    };
    let _ = SOCK_CALLS.remove(key);
    // SAFETY: offset of the generic syscall-exit record.
    let ret: i64 = unsafe { ctx.read_at::<i64>(16) }.map_err(|_| ReadError)?;
    if ret != 0 {
        return Ok(());
    }
    // SAFETY: helper without arguments.
    let task = unsafe { bpf_get_current_task() };
    let Some(sk) = sock_of_fd(task, fd)? else {
        return Ok(());
    };
    let family: u16 = read(sk, off!(sock_common_skc_family))?;
    let proto: u16 = read(sk, off!(sock_sk_protocol))?;
    let proto = proto as u8;
    if (family != AF_INET && family != AF_INET6) || (proto != PROTO_TCP && proto != PROTO_UDP) {
        return Ok(());
    }
    let cookie: u64 = read(sk, off!(sock_common_skc_cookie))?;
    let owner = current_owner();
    set_owner(cookie, &owner);
    emit(KIND_NET_BIND, cookie, proto, &owner, |ev| {
        ev.netns = sk_netns(sk)?;
        let (local, lport, _, _) = sk_tuple(sk)?;
        ev.local_addr = local;
        ev.local_port = lport;
        Ok(())
    })
}

/// Counts a packet of a TCP or UDP socket; never drops it.
#[cgroup_skb]
pub fn net_skb_ingress(ctx: SkBuffContext) -> i32 {
    account(&ctx, false);
    ALLOW
}

/// See [`net_skb_ingress`].
#[cgroup_skb]
pub fn net_skb_egress(ctx: SkBuffContext) -> i32 {
    account(&ctx, true);
    ALLOW
}

/// Per-CPU working memory of the packet counters: the flow key, the first
/// value of a new flow and the header bytes, kept off the 512-byte stack.
#[repr(C)]
pub struct PacketScratch {
    key: FlowKey,
    fresh: FlowStats,
    header: [u8; 40],
    l4: [u8; 16],
    /// The first payload bytes of a flow's first payload each way.
    first: [u8; 16],
    /// Never written: the initial value of a `PROXY_HEADS` entry (too big
    /// for the stack).
    blank: ProxyHead,
}

/// Fills `w.key` and `w.fresh` local fields from the packet headers;
/// returns the header length to subtract from the packet length.
#[inline(always)]
fn parse(
    ctx: &SkBuffContext,
    skb: *mut __sk_buff,
    w: &mut PacketScratch,
    egress: bool,
) -> Option<u32> {
    // SAFETY: reading a context field the verifier rewrites.
    let protocol = match u16::from_be(unsafe { (*skb).protocol } as u16) {
        // Some local output paths leave skb->protocol unset; the IP
        // version nibble tells.
        0 => match ctx.load::<u8>(0).ok()? >> 4 {
            4 => ETH_P_IP,
            6 => ETH_P_IPV6,
            _ => return None,
        },
        p => p,
    };
    let h = &mut w.header;
    let (proto, l3) = if protocol == ETH_P_IP {
        // SAFETY: the buffer is at least 20 bytes long.
        if unsafe { bpf_skb_load_bytes(skb.cast(), 0, h.as_mut_ptr().cast(), 20) } != 0 {
            return None;
        }
        let (src, dst) = ([h[12], h[13], h[14], h[15]], [h[16], h[17], h[18], h[19]]);
        let (local, peer) = if egress { (src, dst) } else { (dst, src) };
        w.fresh.local_addr = v4_mapped(local);
        w.key.peer_addr = v4_mapped(peer);
        (h[9], ((h[0] & 0x0f) as u32) * 4)
    } else if protocol == ETH_P_IPV6 {
        // SAFETY: the buffer is 40 bytes long.
        if unsafe { bpf_skb_load_bytes(skb.cast(), 0, h.as_mut_ptr().cast(), 40) } != 0 {
            return None;
        }
        let (local, peer) = if egress { (8, 24) } else { (24, 8) };
        w.fresh.local_addr.copy_from_slice(&h[local..local + 16]);
        w.key.peer_addr.copy_from_slice(&h[peer..peer + 16]);
        // Skip extension headers that use the generic layout: hop-by-hop
        // (BIG TCP puts a jumbo payload option there on GSO packets over
        // 64 KiB), routing and destination options.
        let mut next = h[6];
        let mut at = 40u32;
        for _ in 0..IPV6_EXT_MAX {
            if next != IPPROTO_HOPOPTS && next != IPPROTO_ROUTING && next != IPPROTO_DSTOPTS {
                break;
            }
            let mut ext = [0u8; 2];
            // SAFETY: a 2-byte stack buffer.
            if unsafe { bpf_skb_load_bytes(skb.cast(), at & 0x1ff, ext.as_mut_ptr().cast(), 2) }
                != 0
            {
                return None;
            }
            next = ext[0];
            at += (ext[1] as u32 + 1) * 8;
        }
        (next, at)
    } else {
        return None;
    };
    let l4 = &mut w.l4;
    // SAFETY: the buffer is 16 bytes long.
    if unsafe { bpf_skb_load_bytes(skb.cast(), l3 & 0x3ff, l4.as_mut_ptr().cast(), 14) } != 0 {
        return None;
    }
    let sport = u16::from_be_bytes([l4[0], l4[1]]);
    let dport = u16::from_be_bytes([l4[2], l4[3]]);
    let l4len = match proto {
        PROTO_TCP => ((l4[12] >> 4) as u32) * 4,
        PROTO_UDP => 8,
        // Echo requests and replies only: `type code csum id seq`; the
        // identifier names the flow on both sides.
        PROTO_ICMP if l4[0] == ICMP_ECHO || l4[0] == ICMP_ECHOREPLY => 8,
        PROTO_ICMPV6 if l4[0] == ICMPV6_ECHO || l4[0] == ICMPV6_ECHOREPLY => 8,
        _ => return None,
    };
    let (local, peer) = if proto == PROTO_ICMP || proto == PROTO_ICMPV6 {
        (sport_of_echo(l4), sport_of_echo(l4))
    } else if egress {
        (sport, dport)
    } else {
        (dport, sport)
    };
    w.fresh.local_port = local;
    w.key.peer_port = peer;
    w.key.proto = proto;
    Some(l3 + l4len)
}

/// The identifier of an ICMP echo header.
#[inline(always)]
fn sport_of_echo(l4: &[u8; 16]) -> u16 {
    u16::from_be_bytes([l4[4], l4[5]])
}

#[inline(always)]
fn account(ctx: &SkBuffContext, egress: bool) {
    let skb = ctx.skb.skb;
    // SAFETY: context field read; may be null.
    let sk = unsafe { (*skb).__bindgen_anon_2.sk };
    if sk.is_null() {
        return;
    }
    // SAFETY: checked non-null above.
    let sk = unsafe { bpf_sk_fullsock(sk) };
    if sk.is_null() {
        return;
    }
    // SAFETY: a full socket from bpf_sk_fullsock.
    let (ty, state, sk_proto) = unsafe { ((*sk).type_, (*sk).state, (*sk).protocol) };
    // TCP and UDP sockets, and ICMP ones (raw or ping sockets: an echo
    // tunnel's).
    let icmp = sk_proto == PROTO_ICMP as u32 || sk_proto == PROTO_ICMPV6 as u32;
    if !(ty == SOCK_STREAM || ty == SOCK_DGRAM || (ty == SOCK_RAW && icmp))
        || state == TCP_LISTEN as u32
    {
        return;
    }
    let Some(w) = PACKET_SCRATCH.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: per-CPU slot, only this program uses it while it runs.
    let w = unsafe { &mut *w };
    let Some(headers) = parse(ctx, skb, w, egress) else {
        // ICMP other than echo is no flow; anything else is a parse miss.
        if !icmp {
            count(counter::PACKETS_UNPARSED);
        }
        return;
    };
    // SAFETY: the context is an skb with a socket.
    w.key.cookie = unsafe { bpf_get_socket_cookie(skb.cast()) };
    // The kernel answers pings from sockets of its own, which no process
    // created: only a process's ICMP sockets have flows.
    if icmp && unsafe { SOCK_OWNERS.get(w.key.cookie) }.is_none() {
        return;
    }
    // SAFETY: context field reads.
    let (len, segs) = unsafe { ((*skb).len, (*skb).gso_segs) };
    let segs = segs.max(1) as u64;
    let payload = len.saturating_sub(headers) as u64;
    let seen = last_seen();
    let stats = match FLOWS.get_ptr_mut(&w.key) {
        Some(s) => s,
        None => {
            w.fresh.first_ns = now();
            w.fresh.last_ns = seen;
            w.fresh.bytes_out = 0;
            w.fresh.bytes_in = 0;
            w.fresh.pkts_out = 0;
            w.fresh.pkts_in = 0;
            w.fresh.next_seq_out = 0;
            w.fresh.next_seq_in = 0;
            w.fresh.first_in_ns = 0;
            w.fresh.first_out_ns = 0;
            w.fresh.fp_in = 0;
            w.fresh.fp_out = 0;
            w.fresh.after_answer = 0;
            // Fails when the map is full or another CPU inserted it first;
            // the lookup below tells which.
            if FLOWS.insert(&w.key, &w.fresh, BPF_NOEXIST).is_ok() && w.key.proto != PROTO_TCP {
                new_udp_flow(w, egress);
            }
            match FLOWS.get_ptr_mut(&w.key) {
                Some(s) => s,
                None => {
                    count(counter::FLOW_MAP_FULL);
                    return;
                }
            }
        }
    };
    if payload > 0 {
        first_payload(skb, w, stats, egress, headers, payload);
    }
    let payload = if w.key.proto == PROTO_TCP {
        new_tcp_payload(w, stats, egress, payload)
    } else {
        payload
    };
    // SAFETY: a map value; other CPUs update it concurrently, hence the
    // atomic adds (BPF_XADD).
    unsafe {
        (*stats).last_ns = seen;
        if egress {
            atomic_add(&raw mut (*stats).bytes_out, payload);
            atomic_add(&raw mut (*stats).pkts_out, segs);
        } else {
            atomic_add(&raw mut (*stats).bytes_in, payload);
            atomic_add(&raw mut (*stats).pkts_in, segs);
        }
    }
}

/// A flow's first payload each way: stamps it, and reads its first bytes
/// for a proxy protocol; a flow whose first payload was a SOCKS5 greeting
/// also has its next payload read (the request naming the target). Every
/// other packet returns at the first test.
#[inline(always)]
fn first_payload(
    skb: *mut __sk_buff,
    w: &mut PacketScratch,
    stats: *mut FlowStats,
    egress: bool,
    headers: u32,
    payload: u64,
) {
    // SAFETY: reading a live map value.
    let (counted, fp) = unsafe {
        if egress {
            ((*stats).bytes_out, (*stats).fp_out)
        } else {
            ((*stats).bytes_in, (*stats).fp_in)
        }
    };
    if counted != 0 {
        if fp & FP_CAPTURE_MORE != 0 {
            capture_more(skb, w, stats, egress, headers, payload);
        } else if egress && fp == FP_HTTP {
            after_answer(skb, w, stats, headers, payload);
        }
        return;
    }
    // SAFETY: a live map value; one writer per direction in practice.
    unsafe {
        if egress {
            (*stats).first_out_ns = now();
        } else {
            (*stats).first_in_ns = now();
        }
    }
    // A SOCKS5 greeting can be as short as three bytes (`05 01 00`).
    if payload < 3 {
        return;
    }
    let n = if payload >= 16 { 16 } else { payload as u32 };
    // In [1, 16] in a form the verifier follows.
    let n = ((n - 1) & 15) + 1;
    let b = &mut w.first;
    *b = [0; 16];
    // SAFETY: at most 16 bytes into a 16-byte buffer.
    if unsafe { bpf_skb_load_bytes(skb.cast(), headers & 0x3ff, b.as_mut_ptr().cast(), n) } != 0 {
        return;
    }
    let mut fp = fingerprint(b, payload as u32);
    if fp == FP_NONE {
        // ICMP echo and DNS flows keep their first bytes without a
        // fingerprint: what a tunnel carries shows there.
        let p = w.key.proto;
        if p == PROTO_ICMP
            || p == PROTO_ICMPV6
            || (p == PROTO_UDP && (w.key.peer_port == DNS_PORT || w.fresh.local_port == DNS_PORT))
        {
            capture_head(skb, w, egress, headers, payload, 0);
        }
        return;
    }
    let more = fp == FP_SOCKS5 && socks5_greeting_only(b, payload);
    // A plain HTTP request is only marked: web traffic must not churn the
    // map of proxy requests.
    if fp != FP_HTTP && capture_head(skb, w, egress, headers, payload, 0) && more {
        fp |= FP_CAPTURE_MORE;
    }
    // SAFETY: a live map value.
    unsafe {
        if egress {
            (*stats).fp_out = fp;
        } else {
            (*stats).fp_in = fp;
        }
    }
}

/// On a connection opened with an HTTP request: whether what it sends
/// first once an answer came is HTTP again (keep-alive) or something else
/// (a websocket, a tunnel inside the stream). Decided once.
#[inline(always)]
fn after_answer(
    skb: *mut __sk_buff,
    w: &mut PacketScratch,
    stats: *mut FlowStats,
    headers: u32,
    payload: u64,
) {
    // SAFETY: reading a live map value.
    let (done, answered) = unsafe { ((*stats).after_answer, (*stats).bytes_in) };
    if done != 0 || answered == 0 {
        return;
    }
    let b = &mut w.first;
    *b = [0; 16];
    // A request line is at least 16 bytes (`GET / HTTP/1.0\r\n`); a
    // shorter payload is something else.
    // SAFETY: 16 bytes into a 16-byte buffer.
    let read = payload >= 16
        && unsafe { bpf_skb_load_bytes(skb.cast(), headers & 0x3ff, b.as_mut_ptr().cast(), 16) }
            == 0;
    let verdict = if read && request_line(b).is_some() {
        AFTER_ANSWER_HTTP
    } else {
        AFTER_ANSWER_OTHER
    };
    // SAFETY: a live map value.
    unsafe { (*stats).after_answer = verdict };
}

/// Whether a SOCKS5 first payload is the greeting alone, the request that
/// names the target still to come.
#[inline(always)]
fn socks5_greeting_only(b: &[u8; 16], payload: u64) -> bool {
    payload == 2 + b[1] as u64
}

/// Copies up to `PROXY_HEAD_BYTES - at` payload bytes of this packet into
/// the flow's `PROXY_HEADS` entry at `at`, creating the entry when `at` is
/// 0. Returns whether the bytes were kept.
#[inline(always)]
fn capture_head(
    skb: *mut __sk_buff,
    w: &mut PacketScratch,
    egress: bool,
    headers: u32,
    payload: u64,
    at: u32,
) -> bool {
    // The other direction may have made the entry already: keep it.
    if at == 0 {
        let _ = PROXY_HEADS.insert(&w.key, &w.blank, BPF_NOEXIST);
    }
    let Some(head) = PROXY_HEADS.get_ptr_mut(&w.key) else {
        return false;
    };
    let at = at & (PROXY_HEAD_BYTES as u32 - 1);
    let room = PROXY_HEAD_BYTES as u64 - at as u64;
    let n = if payload < room { payload } else { room } as u32;
    if n == 0 {
        return false;
    }
    // In [1, PROXY_HEAD_BYTES] in a form the verifier follows.
    let n = ((n - 1) & (PROXY_HEAD_BYTES as u32 - 1)) + 1;
    // SAFETY: `at` < PROXY_HEAD_BYTES and `n` <= PROXY_HEAD_BYTES, inside
    // a buffer of twice that size.
    unsafe {
        let (buf, len) = if egress {
            ((*head).data_out.as_mut_ptr(), &raw mut (*head).len_out)
        } else {
            ((*head).data_in.as_mut_ptr(), &raw mut (*head).len_in)
        };
        if bpf_skb_load_bytes(skb.cast(), headers & 0x3ff, buf.add(at as usize).cast(), n) != 0 {
            return false;
        }
        *len = (at + n) as u16;
    }
    true
}

/// The payload after a SOCKS5 greeting: appended to the flow's head, then
/// the capture of that direction is done.
#[inline(always)]
fn capture_more(
    skb: *mut __sk_buff,
    w: &mut PacketScratch,
    stats: *mut FlowStats,
    egress: bool,
    headers: u32,
    payload: u64,
) {
    // SAFETY: values copied out at once.
    let at = match unsafe { PROXY_HEADS.get(&w.key) } {
        Some(h) => {
            if egress {
                h.len_out
            } else {
                h.len_in
            }
        }
        None => 0,
    } as u32;
    if at > 0 && at < PROXY_HEAD_BYTES as u32 {
        capture_head(skb, w, egress, headers, payload, at);
    }
    // SAFETY: a live map value.
    unsafe {
        if egress {
            (*stats).fp_out &= !FP_CAPTURE_MORE;
        } else {
            (*stats).fp_in &= !FP_CAPTURE_MORE;
        }
    }
}

/// The part of a TCP segment's payload not counted before, by sequence
/// number: a retransmitted segment (a slow receiver, a lost ACK) crosses
/// the hook again and must not count twice. Moves the flow's next sequence
/// number on. One flow's one direction is handled on one CPU at a time in
/// practice (the socket lock on egress, one receive queue on ingress), so
/// the plain read and write are enough.
#[inline(always)]
fn new_tcp_payload(w: &PacketScratch, stats: *mut FlowStats, egress: bool, payload: u64) -> u64 {
    if payload == 0 {
        return 0;
    }
    let l4 = &w.l4;
    let mut seq = u32::from_be_bytes([l4[4], l4[5], l4[6], l4[7]]);
    // Data on a SYN (TCP Fast Open) starts one past its sequence number.
    if l4[13] & TCP_FLAG_SYN != 0 {
        seq = seq.wrapping_add(1);
    }
    let end = seq.wrapping_add(payload as u32);
    // SAFETY: a live map value.
    unsafe {
        let (counted, next) = if egress {
            ((*stats).bytes_out, &raw mut (*stats).next_seq_out)
        } else {
            ((*stats).bytes_in, &raw mut (*stats).next_seq_in)
        };
        if counted == 0 {
            *next = end;
            return payload;
        }
        let ahead = end.wrapping_sub(*next) as i32;
        if ahead <= 0 {
            return 0;
        }
        *next = end;
        (ahead as u64).min(payload)
    }
}

/// The first packet between a UDP socket and a peer.
#[inline(never)]
fn new_udp_flow(w: &PacketScratch, egress: bool) {
    let owner = owner_of(w.key.cookie);
    let _ = emit(KIND_NET_UDP_FLOW, w.key.cookie, w.key.proto, &owner, |ev| {
        // 1: the first packet left this machine.
        ev.new_state = egress as u8;
        ev.local_addr = w.fresh.local_addr;
        ev.local_port = w.fresh.local_port;
        ev.remote_addr = w.key.peer_addr;
        ev.remote_port = w.key.peer_port;
        ev.first_ns = w.fresh.first_ns;
        Ok(())
    });
}

/// `sock_send_length(struct sock *sk, int ret, int flags)` and
/// `sock_recv_length(...)` (Linux 6.4+): every `sendmsg`/`recvmsg` on a
/// socket, in the calling process. Aggregated per (process, socket).
#[btf_tracepoint(function = "sock_send_length")]
pub fn net_sock_send_length(ctx: BtfTracePointContext) -> i32 {
    let _ = record_io(&ctx, true);
    0
}

/// See [`net_sock_send_length`].
#[btf_tracepoint(function = "sock_recv_length")]
pub fn net_sock_recv_length(ctx: BtfTracePointContext) -> i32 {
    let _ = record_io(&ctx, false);
    0
}

#[inline(always)]
fn record_io(ctx: &BtfTracePointContext, sent: bool) -> Result<(), ReadError> {
    let sk: *mut core::ffi::c_void = ctx.arg(0);
    let ret: i64 = ctx.arg::<u64>(1) as i32 as i64;
    if ret <= 0 {
        return Ok(());
    }
    let family: u16 = read(sk as u64, off!(sock_common_skc_family))?;
    if family == AF_UNIX {
        return note_unix_link(sk as u64);
    }
    if family != AF_INET && family != AF_INET6 {
        return Ok(());
    }
    let proto: u16 = read(sk as u64, off!(sock_sk_protocol))?;
    if proto != PROTO_TCP as u16 && proto != PROTO_UDP as u16 {
        return Ok(());
    }
    // SAFETY: a BTF `struct sock *` from the tracepoint.
    let cookie = unsafe { bpf_get_socket_cookie(sk) };
    let key = IoKey {
        tgid: (bpf_get_current_pid_tgid() >> 32) as u32,
        _pad: 0,
        cookie,
    };
    // Tracing programs may not read the coarse clock (`last_seen`).
    let ts = now();
    let stats = match SOCK_IO.get_ptr_mut(&key) {
        Some(s) => s,
        None => {
            let fresh = IoStats {
                first_ns: ts,
                last_ns: ts,
                bytes_sent: 0,
                bytes_received: 0,
            };
            if SOCK_IO.insert(&key, &fresh, BPF_NOEXIST).is_err()
                && SOCK_IO.get_ptr_mut(&key).is_none()
            {
                count(counter::IO_MAP_FULL);
                return Ok(());
            }
            match SOCK_IO.get_ptr_mut(&key) {
                Some(s) => s,
                None => return Ok(()),
            }
        }
    };
    // SAFETY: a map value; concurrent updates use atomic adds.
    unsafe {
        (*stats).last_ns = ts;
        if sent {
            atomic_add(&raw mut (*stats).bytes_sent, ret as u64);
        } else {
            atomic_add(&raw mut (*stats).bytes_received, ret as u64);
        }
    }
    if !sent {
        note_last_recv(key.tgid, cookie);
    }
    Ok(())
}

/// Remembers a connected unix stream socket the current process moved
/// data on (see `UNIX_LINKS`). The id is the same from both ends: made
/// from the two sockets' addresses, lower first. A datagram client of a
/// shared socket (`/dev/log`) is left out: its peer has no peer, and the
/// clients of one server must not look joined to each other.
#[inline(always)]
fn note_unix_link(sk: u64) -> Result<(), ReadError> {
    let peer_off = off!(unix_sock_peer);
    if peer_off == OFFSET_MISSING as u64 {
        return Ok(());
    }
    let ty: u16 = read(sk, off!(sock_sk_type))?;
    // SOCK_STREAM and SOCK_SEQPACKET (5).
    if ty as u32 != SOCK_STREAM && ty != 5 {
        return Ok(());
    }
    let peer: u64 = read(sk, peer_off)?;
    if peer == 0 {
        return Ok(());
    }
    // This socket's own address, read back from its peer: the verifier
    // allows no arithmetic on the tracepoint's trusted pointer itself.
    let me: u64 = read(peer, peer_off)?;
    if me == 0 {
        return Ok(());
    }
    let (lo, hi) = if me < peer { (me, peer) } else { (peer, me) };
    let id = lo.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ hi.rotate_left(29) | 1;
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    match UNIX_LINKS.get_ptr_mut(&tgid) {
        // SAFETY: a live map value of this process; a racing thread of the
        // same process may lose one id, seen again at its next call.
        Some(links) => unsafe {
            let l = &mut *links;
            if l.ids.contains(&id) {
                return Ok(());
            }
            let slot = (l.next as usize) % UNIX_LINKS_KEPT;
            l.ids[slot] = id;
            l.next = l.next.wrapping_add(1);
        },
        None => {
            let mut fresh = UnixLinks::default();
            fresh.ids[0] = id;
            fresh.next = 1;
            let _ = UNIX_LINKS.insert(&tgid, &fresh, 0);
        }
    }
    Ok(())
}

/// Remembers the socket `tgid` received on last (see `LAST_RECV`).
#[inline(always)]
fn note_last_recv(tgid: u32, cookie: u64) {
    match LAST_RECV.get_ptr_mut(&tgid) {
        // SAFETY: a live map value; a racing thread of the same process
        // writes another socket of its own, either is a fair answer.
        Some(last) => unsafe {
            if *last != cookie {
                *last = cookie;
            }
        },
        None => {
            let _ = LAST_RECV.insert(&tgid, &cookie, 0);
        }
    }
}

/// Recognises a proxy protocol in the first payload bytes of a flow.
#[inline(always)]
fn fingerprint(b: &[u8; 16], len: u32) -> u8 {
    // A SOCKS5 greeting: version, method count, methods; alone, or with
    // the request (version 5 again) right behind it.
    if len >= 3 && b[0] == 5 && b[1] >= 1 && b[1] <= 8 {
        let end = 2 + b[1] as u32;
        if len == end || (len > end + 3 && b[(end & 15) as usize] == 5) {
            return FP_SOCKS5;
        }
    }
    if len >= 9 && b[0] == 4 && (b[1] == 1 || b[1] == 2) {
        return if b[4] == 0 && b[5] == 0 && b[6] == 0 && b[7] != 0 {
            FP_SOCKS4A
        } else {
            FP_SOCKS4
        };
    }
    if len >= 8 && b[..8] == *b"CONNECT " {
        return FP_HTTP_CONNECT;
    }
    match request_line(b) {
        Some(b'h') if len >= 12 => FP_HTTP_PROXY,
        Some(b'/') => FP_HTTP,
        _ => FP_NONE,
    }
}

/// The first byte of an HTTP request line's target: a method of 3 to 7
/// capitals and a space, then `/` (origin form, to a server) or `h` of
/// `http://` (absolute form, to a forward proxy).
#[inline(always)]
fn request_line(b: &[u8; 16]) -> Option<u8> {
    let mut k = 0;
    while k < 8 {
        let c = b[k];
        if c == b' ' {
            break;
        }
        if !c.is_ascii_uppercase() {
            return None;
        }
        k += 1;
    }
    if !(3..=7).contains(&k) {
        return None;
    }
    match b[k + 1] {
        b'/' => Some(b'/'),
        b'h' if b[k + 2] == b't'
            && b[k + 3] == b't'
            && b[k + 4] == b'p'
            && b[k + 5] == b':'
            && b[k + 6] == b'/'
            && b[k + 7] == b'/' =>
        {
            Some(b'h')
        }
        _ => None,
    }
}
