//! Forwarded traffic: TC egress programs on the gateway's interfaces count
//! the packets the machine routes (not those it sends itself) per flow, at
//! line rate, with no event per packet.
//!
//! Egress is the one place that sees the routing decision and the NAT
//! result together: `ingress_ifindex` is set only on packets that came in
//! by another interface, and the packet's conntrack entry (`skb->_nfct`)
//! holds the flow's tuple before NAT (original direction) and the tuple of
//! its replies after NAT. Both directions of a flow count in one entry,
//! keyed by the original tuple. Userspace reads and ends the entries.

use aya_ebpf::{
    bindings::{__sk_buff, TC_ACT_UNSPEC},
    helpers::{bpf_ktime_get_boot_ns, bpf_skb_load_bytes},
    macros::classifier,
    programs::TcContext,
};
use monitor_common::{
    event::{
        counter, FwdStats, FwdTuple, FWD_CONNTRACK, FWD_FIN_ORIG, FWD_FIN_REPLY, FWD_RST,
        PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP,
    },
    offsets::OFFSET_MISSING,
};

use crate::{
    kernel::{
        last_seen, off, offsets_ready, read, v4_mapped, ReadError, AF_INET, BPF_NOEXIST, ETH_P_IP,
        ETH_P_IPV6,
    },
    maps::{count, FWD_FLOWS, FWD_SCRATCH, IFACES},
    probes::atomic_add,
};

const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88A8;
const TCP_FIN: u8 = 0x01;
const TCP_RST: u8 = 0x04;
/// `ctinfo` values from `IP_CT_IS_REPLY` on are reply-direction packets;
/// 7 is `IP_CT_UNTRACKED`.
const IP_CT_IS_REPLY: u64 = 3;
const IP_CT_UNTRACKED: u64 = 7;
const NFCT_INFOMASK: u64 = 7;

/// Per-CPU working memory: the key and first value of a new flow, header
/// bytes and the two conntrack tuples, kept off the 512-byte stack.
#[repr(C)]
pub struct FwdScratch {
    key: monitor_common::event::FwdKey,
    /// `key` reversed, for packets without conntrack.
    rev: monitor_common::event::FwdKey,
    fresh: FwdStats,
    header: [u8; 40],
    l4: [u8; 16],
    ct: [[u8; 40]; 2],
}

/// Counts a forwarded packet; never drops or changes it.
#[classifier]
pub fn forward_tc_egress(ctx: TcContext) -> i32 {
    account(&ctx);
    TC_ACT_UNSPEC
}

/// The packet's own tuple, read from its headers starting `l2` bytes in.
/// Returns (protocol headers length, TCP flags).
#[inline(always)]
fn parse(skb: *mut __sk_buff, l2: u32, w: &mut FwdScratch) -> Option<(u32, u8)> {
    let mut l3 = l2 & 0x3f;
    let mut eth = [0u8; 2];
    if l3 >= 14 {
        // SAFETY: 2 bytes into a 2-byte stack buffer.
        if unsafe { bpf_skb_load_bytes(skb.cast(), 12, eth.as_mut_ptr().cast(), 2) } != 0 {
            return None;
        }
        let ty = u16::from_be_bytes(eth);
        if ty == ETH_P_8021Q || ty == ETH_P_8021AD {
            l3 += 4;
        }
    }
    // SAFETY: context field read.
    let protocol = u16::from_be(unsafe { (*skb).protocol } as u16);
    let t = &mut w.key.orig;
    let h = &mut w.header;
    let (proto, l4_at) = if protocol == ETH_P_IP {
        // SAFETY: 20 bytes into a 40-byte buffer.
        if unsafe { bpf_skb_load_bytes(skb.cast(), l3 & 0x3f, h.as_mut_ptr().cast(), 20) } != 0 {
            return None;
        }
        t.src = v4_mapped([h[12], h[13], h[14], h[15]]);
        t.dst = v4_mapped([h[16], h[17], h[18], h[19]]);
        (h[9], l3 + ((h[0] & 0x0f) as u32) * 4)
    } else if protocol == ETH_P_IPV6 {
        // SAFETY: 40 bytes into a 40-byte buffer.
        if unsafe { bpf_skb_load_bytes(skb.cast(), l3 & 0x3f, h.as_mut_ptr().cast(), 40) } != 0 {
            return None;
        }
        t.src.copy_from_slice(&h[8..24]);
        t.dst.copy_from_slice(&h[24..40]);
        (h[6], l3 + 40)
    } else {
        return None;
    };
    let l4 = &mut w.l4;
    // SAFETY: 14 bytes into a 16-byte buffer.
    if unsafe { bpf_skb_load_bytes(skb.cast(), l4_at & 0xff, l4.as_mut_ptr().cast(), 14) } != 0 {
        return None;
    }
    let (l4_len, flags) = match proto {
        PROTO_TCP => (((l4[12] >> 4) as u32) * 4, l4[13]),
        PROTO_UDP => (8, 0),
        // Echo requests and replies: their identifier stands in for both
        // ports, so a request and its reply are one flow either way.
        PROTO_ICMP if l4[0] == 8 || l4[0] == 0 => {
            let id = u16::from_be_bytes([l4[4], l4[5]]);
            t.sport = id;
            t.dport = id;
            t.proto = proto;
            return Some((l4_at - l2 + 8, 0));
        }
        PROTO_ICMPV6 if l4[0] == 128 || l4[0] == 129 => {
            let id = u16::from_be_bytes([l4[4], l4[5]]);
            t.sport = id;
            t.dport = id;
            t.proto = proto;
            return Some((l4_at - l2 + 8, 0));
        }
        _ => return None,
    };
    t.sport = u16::from_be_bytes([l4[0], l4[1]]);
    t.dport = u16::from_be_bytes([l4[2], l4[3]]);
    t.proto = proto;
    Some((l4_at - l2 + l4_len, flags))
}

/// Converts a kernel `struct nf_conntrack_tuple` (src: 16-byte address,
/// port, l3num; dst: 16-byte address, port, protonum, dir).
#[inline(always)]
fn from_conntrack(raw: &[u8; 40], out: &mut FwdTuple) {
    let l3num = u16::from_ne_bytes([raw[18], raw[19]]);
    if l3num == AF_INET {
        out.src = v4_mapped([raw[0], raw[1], raw[2], raw[3]]);
        out.dst = v4_mapped([raw[20], raw[21], raw[22], raw[23]]);
    } else {
        out.src.copy_from_slice(&raw[0..16]);
        out.dst.copy_from_slice(&raw[20..36]);
    }
    out.sport = u16::from_be_bytes([raw[16], raw[17]]);
    out.dport = u16::from_be_bytes([raw[36], raw[37]]);
    out.proto = raw[38];
}

/// Replaces the packet tuple in `w.key` by conntrack's original tuple and
/// fills `w.fresh.reply`; returns the packet's direction (0 original, 1
/// reply), or `None` when the packet has no usable conntrack entry.
#[inline(always)]
fn conntrack(skb: *mut __sk_buff, w: &mut FwdScratch) -> Result<Option<usize>, ReadError> {
    let nfct_off = off!(sk_buff_nfct);
    let tuple_off = off!(nf_conn_tuple_orig);
    let hash_size = off!(nf_conntrack_tuple_hash_size);
    if nfct_off == OFFSET_MISSING as u64
        || tuple_off == OFFSET_MISSING as u64
        || hash_size == OFFSET_MISSING as u64
    {
        return Ok(None);
    }
    // The context of a TC program is the kernel's `struct sk_buff`.
    let nfct: u64 = read(skb as u64, nfct_off)?;
    let ctinfo = nfct & NFCT_INFOMASK;
    let ct = nfct & !NFCT_INFOMASK;
    if ct == 0 || ctinfo == IP_CT_UNTRACKED {
        return Ok(None);
    }
    w.ct[0] = read(ct, tuple_off)?;
    w.ct[1] = read(ct, tuple_off + hash_size)?;
    from_conntrack(&w.ct[0], &mut w.key.orig);
    from_conntrack(&w.ct[1], &mut w.fresh.reply);
    Ok(Some(if ctinfo >= IP_CT_IS_REPLY { 1 } else { 0 }))
}

#[inline(always)]
fn account(ctx: &TcContext) {
    if !offsets_ready() {
        return;
    }
    let skb = ctx.skb.skb;
    // SAFETY: context field reads.
    let (in_if, out_if, len, segs) = unsafe {
        (
            (*skb).ingress_ifindex,
            (*skb).ifindex,
            (*skb).len,
            (*skb).gso_segs,
        )
    };
    // Packets this machine sends have no ingress interface.
    if in_if == 0 {
        return;
    }
    let Some(iface) = (unsafe { IFACES.get(&out_if) }) else {
        return;
    };
    let (l2, netns) = (iface.l2_len, iface.netns);
    let Some(w) = FWD_SCRATCH.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: per-CPU slot, only this program uses it while it runs.
    let w = unsafe { &mut *w };
    let Some((headers, tcp_flags)) = parse(skb, l2, w) else {
        return;
    };
    w.key.netns = netns;
    w.fresh.reply = FwdTuple::default();
    let (mut dir, tracked) = match conntrack(skb, w) {
        Ok(Some(d)) => (d, true),
        _ => (0, false),
    };
    if !tracked {
        // Without conntrack the first packet seen defines the original
        // direction: a packet whose reverse is known is a reply.
        let (k, r) = (&w.key, &mut w.rev);
        r.orig.src = k.orig.dst;
        r.orig.dst = k.orig.src;
        r.orig.sport = k.orig.dport;
        r.orig.dport = k.orig.sport;
        r.orig.proto = k.orig.proto;
        r.netns = k.netns;
        if FWD_FLOWS.get_ptr(&w.rev).is_some() {
            w.key = w.rev;
            dir = 1;
        }
    }
    let segs = segs.max(1) as u64;
    let payload = (len.saturating_sub(l2) as u64).saturating_sub(headers as u64);
    let ip_bytes = payload + segs * headers as u64;
    let seen = last_seen();
    let stats = match FWD_FLOWS.get_ptr_mut(&w.key) {
        Some(s) => s,
        None => {
            let f = &mut w.fresh;
            f.dir = Default::default();
            // SAFETY: helper without arguments.
            f.first_ns = unsafe { bpf_ktime_get_boot_ns() };
            f.last_ns = seen;
            f.flags = if tracked { FWD_CONNTRACK } else { 0 };
            // Fails when the map is full or another CPU inserted it first;
            // the lookup below tells which.
            let _ = FWD_FLOWS.insert(&w.key, &w.fresh, BPF_NOEXIST);
            match FWD_FLOWS.get_ptr_mut(&w.key) {
                Some(s) => s,
                None => {
                    count(counter::FWD_MAP_FULL);
                    return;
                }
            }
        }
    };
    let mut flags = 0;
    if tcp_flags & TCP_FIN != 0 {
        flags |= if dir == 0 {
            FWD_FIN_ORIG
        } else {
            FWD_FIN_REPLY
        };
    }
    if tcp_flags & TCP_RST != 0 {
        flags |= FWD_RST;
    }
    // SAFETY: a live map value; other CPUs update it too, hence the atomic
    // adds. The interface indexes and flags are idempotent stores.
    unsafe {
        let d = &raw mut (*stats).dir[dir & 1];
        (*d).in_ifindex = in_if;
        (*d).out_ifindex = out_if;
        atomic_add(&raw mut (*d).bytes, ip_bytes);
        atomic_add(&raw mut (*d).payload, payload);
        atomic_add(&raw mut (*d).packets, segs);
        (*stats).last_ns = seen;
        if flags != 0 {
            (*stats).flags |= flags;
        }
    }
}
