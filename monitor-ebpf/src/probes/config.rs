//! Changes that turn a machine into a relay or a sniffer, reported with the
//! process that made them ([`ConfigEvent`], on the process ring: they are
//! rare, and their process and ancestry matter).
//!
//! - `cgroup/sysctl` on the cgroup v2 root: every write under
//!   /proc/sys/net, whatever wrote it (`sysctl`, a shell `echo`, any
//!   program). Userspace keeps the relay-enabling ones.
//! - `syscalls:sys_enter_setsockopt`: legacy x_tables ruleset replaces
//!   (iptables-legacy, ip6tables, arptables, ebtables), promiscuous
//!   membership on packet sockets, and socket filters (`SO_ATTACH_*`).
//! - `syscalls:sys_enter_ioctl`: tun/tap creation (`TUNSETIFF`) and
//!   promiscuous mode through `SIOCSIFFLAGS`.
//! - `syscalls:sys_enter_socket`: packet sockets (`AF_PACKET`).
//! - `syscalls:sys_enter_bpf`: BPF program loads by any other process.
//! - `syscalls:sys_enter_sendmsg` and `sys_enter_sendto`: link requests
//!   on rtnetlink sockets, which name the process behind the link
//!   notifications userspace reads (those carry no sender).
//!
//! nftables changes and new tunnel links made over netlink are reported by
//! userspace from the kernel's own netlink notifications, which name the
//! committing process (see the daemon's `dataplane::netlink`).
//!
//! Syscall tracepoints use the generic record: arguments are 8-byte words
//! from offset 16 (`/sys/kernel/tracing/events/syscalls/*/format`).

use aya_ebpf::{
    helpers::{
        bpf_get_current_pid_tgid, bpf_get_current_task, bpf_ktime_get_boot_ns,
        generated::{bpf_probe_read_user, bpf_sysctl_get_name, bpf_sysctl_get_new_value},
    },
    macros::{cgroup_sysctl, tracepoint},
    programs::{SysctlContext, TracePointContext},
};
use monitor_common::event::{
    ConfigEvent, EventHeader, CFG_BPF_PROG, CFG_LINK_REQUEST, CFG_PACKET_SOCKET, CFG_PROMISC,
    CFG_SOCKET_FILTER, CFG_SYSCTL, CFG_TUN, CFG_XTABLES, KIND_CONFIG,
};

use crate::kernel::{
    current_netns, emit, off, offsets_ready, read, scratch, sock_of_fd, task_info, ReadError,
};

/// Set by userspace before load: the monitor's own tgid, whose BPF loads
/// are not reported.
#[unsafe(no_mangle)]
static MONITOR_TGID: u32 = 0;

const SOL_SOCKET: u64 = 1;
const SOL_IP: u64 = 0;
const SOL_IPV6: u64 = 41;
const SOL_PACKET: u64 = 263;
/// `IPT_SO_SET_REPLACE` and `IP6T_SO_SET_REPLACE`.
const XT_SO_SET_REPLACE: u64 = 64;
const ARPT_SO_SET_REPLACE: u64 = 96;
const EBT_SO_SET_ENTRIES: u64 = 128;
const PACKET_ADD_MEMBERSHIP: u64 = 1;
const PACKET_MR_PROMISC: u16 = 1;
const SO_ATTACH_FILTER: u64 = 26;
const SO_ATTACH_BPF: u64 = 50;
const SO_ATTACH_REUSEPORT_CBPF: u64 = 51;
const SO_ATTACH_REUSEPORT_EBPF: u64 = 52;
const TUNSETIFF: u64 = 0x4004_54ca;
const SIOCSIFFLAGS: u64 = 0x8914;
const IFF_PROMISC: u16 = 0x100;
const AF_PACKET: u64 = 17;
const BPF_PROG_LOAD: u64 = 5;
/// `offsetof(union bpf_attr, prog_name)` for `BPF_PROG_LOAD`.
const BPF_ATTR_PROG_NAME: u64 = 48;

const AF_NETLINK: u16 = 16;
const NETLINK_ROUTE: u16 = 0;
const RTM_NEWLINK: u16 = 16;
const RTM_SETLINK: u16 = 19;

/// Returned by cgroup programs: let the operation through.
const ALLOW: i32 = 1;

/// Builds one [`ConfigEvent`] for the current task in the scratch slot,
/// lets `fill` complete it, and sends it.
#[inline(always)]
fn report(
    change: u32,
    fill: impl FnOnce(&mut ConfigEvent) -> Result<(), ReadError>,
) -> Result<(), ReadError> {
    if !offsets_ready() {
        return Ok(());
    }
    let Some(buf) = scratch() else { return Ok(()) };
    // SAFETY: the slot is SCRATCH_BYTES long and 8-byte aligned.
    let ev = unsafe { &mut *(buf as *mut ConfigEvent) };
    *ev = ConfigEvent::default();
    // SAFETY: helper without arguments.
    let task = unsafe { bpf_get_current_task() };
    task_info(task, &mut ev.task)?;
    ev.netns = current_netns(task)?;
    ev.change = change;
    fill(ev)?;
    let pid_tgid = bpf_get_current_pid_tgid();
    ev.header = EventHeader {
        kind: KIND_CONFIG,
        size: core::mem::size_of::<ConfigEvent>() as u32,
        // SAFETY: helper without arguments.
        ts_boot_ns: unsafe { bpf_ktime_get_boot_ns() },
        pid: (pid_tgid >> 32) as u32,
        tid: pid_tgid as u32,
    };
    emit(buf, core::mem::size_of::<ConfigEvent>(), KIND_CONFIG);
    Ok(())
}

/// Copies up to 64 bytes of user memory; a short or failed read leaves
/// the rest zero (the field is informative, the event still counts).
#[inline(always)]
fn user_bytes(dst: &mut [u8; 64], src: u64, len: u32) {
    // SAFETY: at most 64 bytes into a 64-byte buffer.
    unsafe { bpf_probe_read_user(dst.as_mut_ptr().cast(), len.min(64), src as *const _) };
}

/// Syscall argument `n` of a generic `sys_enter_*` record.
#[inline(always)]
fn arg(ctx: &TracePointContext, n: usize) -> u64 {
    // SAFETY: offsets inside the generic syscall-entry record.
    unsafe { ctx.read_at::<u64>(16 + 8 * n) }.unwrap_or(0)
}

/// Writes under /proc/sys/net, whichever process made them. Never denies.
#[cgroup_sysctl]
pub fn config_sysctl(ctx: SysctlContext) -> i32 {
    // SAFETY: context field read.
    if unsafe { (*ctx.sysctl).write } == 0 {
        return ALLOW;
    }
    let _ = report(CFG_SYSCTL, |ev| {
        // SAFETY: 64-byte buffers; flags 0 asks for the full path.
        unsafe {
            bpf_sysctl_get_name(ctx.sysctl, ev.name.as_mut_ptr().cast(), 64, 0);
            bpf_sysctl_get_new_value(ctx.sysctl, ev.value.as_mut_ptr().cast(), 64);
        }
        if &ev.name[..4] != b"net/" {
            return Err(ReadError);
        }
        Ok(())
    });
    ALLOW
}

#[tracepoint(category = "syscalls", name = "sys_enter_setsockopt")]
pub fn config_sys_enter_setsockopt(ctx: TracePointContext) -> i32 {
    let (fd, level, optname, optval) = (arg(&ctx, 0), arg(&ctx, 1), arg(&ctx, 2), arg(&ctx, 3));
    let _ = match (level, optname) {
        (SOL_IP | SOL_IPV6, XT_SO_SET_REPLACE)
        | (SOL_IP, ARPT_SO_SET_REPLACE)
        | (SOL_IP, EBT_SO_SET_ENTRIES) => report(CFG_XTABLES, |ev| {
            ev.arg0 = level;
            ev.arg1 = optname;
            // Every *_replace struct starts with the 32-byte table name.
            user_bytes(&mut ev.name, optval, 32);
            Ok(())
        }),
        (SOL_PACKET, PACKET_ADD_MEMBERSHIP) => {
            // struct packet_mreq { int mr_ifindex; unsigned short mr_type; ... }
            let mut mreq = [0u8; 8];
            // SAFETY: 8 bytes into an 8-byte buffer.
            unsafe { bpf_probe_read_user(mreq.as_mut_ptr().cast(), 8, optval as *const _) };
            if u16::from_ne_bytes([mreq[4], mreq[5]]) != PACKET_MR_PROMISC {
                return 0;
            }
            report(CFG_PROMISC, |ev| {
                ev.arg0 = 2;
                ev.arg1 = i32::from_ne_bytes([mreq[0], mreq[1], mreq[2], mreq[3]]) as u64;
                Ok(())
            })
        }
        (
            SOL_SOCKET,
            SO_ATTACH_FILTER | SO_ATTACH_BPF | SO_ATTACH_REUSEPORT_CBPF | SO_ATTACH_REUSEPORT_EBPF,
        ) => report(CFG_SOCKET_FILTER, |ev| {
            ev.arg0 = optname;
            // SAFETY: helper without arguments.
            let task = unsafe { bpf_get_current_task() };
            if let Some(sk) = sock_of_fd(task, fd)? {
                let family: u16 = read(sk, off!(sock_common_skc_family))?;
                ev.arg1 = family as u64;
            }
            Ok(())
        }),
        _ => Ok(()),
    };
    0
}

#[tracepoint(category = "syscalls", name = "sys_enter_ioctl")]
pub fn config_sys_enter_ioctl(ctx: TracePointContext) -> i32 {
    let cmd = arg(&ctx, 1) & 0xffff_ffff;
    if cmd != TUNSETIFF && cmd != SIOCSIFFLAGS {
        return 0;
    }
    let ifreq = arg(&ctx, 2);
    // struct ifreq { char ifr_name[16]; short ifr_flags; ... }
    let mut req = [0u8; 64];
    user_bytes(&mut req, ifreq, 18);
    let flags = u16::from_ne_bytes([req[16], req[17]]);
    let _ = if cmd == TUNSETIFF {
        report(CFG_TUN, |ev| {
            ev.arg0 = flags as u64;
            ev.name[..16].copy_from_slice(&req[..16]);
            Ok(())
        })
    } else if flags & IFF_PROMISC != 0 {
        report(CFG_PROMISC, |ev| {
            ev.arg0 = 1;
            ev.name[..16].copy_from_slice(&req[..16]);
            Ok(())
        })
    } else {
        Ok(())
    };
    0
}

#[tracepoint(category = "syscalls", name = "sys_enter_socket")]
pub fn config_sys_enter_socket(ctx: TracePointContext) -> i32 {
    if arg(&ctx, 0) == AF_PACKET {
        let _ = report(CFG_PACKET_SOCKET, |ev| {
            ev.arg0 = arg(&ctx, 1);
            ev.arg1 = arg(&ctx, 2);
            Ok(())
        });
    }
    0
}

#[tracepoint(category = "syscalls", name = "sys_enter_bpf")]
pub fn config_sys_enter_bpf(ctx: TracePointContext) -> i32 {
    if arg(&ctx, 0) != BPF_PROG_LOAD {
        return 0;
    }
    // SAFETY: reading a static the loader sets.
    let me = unsafe { core::ptr::read_volatile(&MONITOR_TGID) };
    if (bpf_get_current_pid_tgid() >> 32) as u32 == me {
        return 0;
    }
    let attr = arg(&ctx, 1);
    let _ = report(CFG_BPF_PROG, |ev| {
        let mut ty = [0u8; 64];
        user_bytes(&mut ty, attr, 4);
        ev.arg0 = u32::from_ne_bytes([ty[0], ty[1], ty[2], ty[3]]) as u64;
        user_bytes(&mut ev.name, attr + BPF_ATTR_PROG_NAME, 16);
        Ok(())
    });
    0
}

/// Reports the first netlink message of `buf` when `fd` is an rtnetlink
/// socket and the message creates or changes a link.
#[inline(always)]
fn link_request(fd: u64, buf: u64) -> Result<(), ReadError> {
    // SAFETY: helper without arguments.
    let task = unsafe { bpf_get_current_task() };
    let Some(sk) = sock_of_fd(task, fd)? else {
        return Ok(());
    };
    let family: u16 = read(sk, off!(sock_common_skc_family))?;
    let protocol: u16 = read(sk, off!(sock_sk_protocol))?;
    if family != AF_NETLINK || protocol != NETLINK_ROUTE {
        return Ok(());
    }
    // struct nlmsghdr { u32 len; u16 type; u16 flags; ... }
    let mut h = [0u8; 64];
    user_bytes(&mut h, buf, 8);
    let ty = u16::from_ne_bytes([h[4], h[5]]);
    if ty != RTM_NEWLINK && ty != RTM_SETLINK {
        return Ok(());
    }
    report(CFG_LINK_REQUEST, |ev| {
        ev.arg0 = ty as u64;
        ev.arg1 = u16::from_ne_bytes([h[6], h[7]]) as u64;
        // The message's first 128 bytes (ifinfomsg and the first
        // attributes), for userspace to find the interface.
        user_bytes(&mut ev.value, buf, 64);
        user_bytes(&mut ev.name, buf + 64, 64);
        Ok(())
    })
}

/// `sendmsg(fd, msg, flags)`: the first iovec of `msg` holds the message.
#[tracepoint(category = "syscalls", name = "sys_enter_sendmsg")]
pub fn config_sys_enter_sendmsg(ctx: TracePointContext) -> i32 {
    let (fd, msg) = (arg(&ctx, 0), arg(&ctx, 1));
    // struct user_msghdr: msg_iov at offset 16; struct iovec: iov_base at 0.
    let mut p = [0u8; 64];
    user_bytes(&mut p, msg + 16, 8);
    let iov = u64::from_ne_bytes([p[0], p[1], p[2], p[3], p[4], p[5], p[6], p[7]]);
    user_bytes(&mut p, iov, 8);
    let base = u64::from_ne_bytes([p[0], p[1], p[2], p[3], p[4], p[5], p[6], p[7]]);
    let _ = link_request(fd, base);
    0
}

/// `sendto(fd, buf, len, flags, addr, addrlen)`.
#[tracepoint(category = "syscalls", name = "sys_enter_sendto")]
pub fn config_sys_enter_sendto(ctx: TracePointContext) -> i32 {
    let _ = link_request(arg(&ctx, 0), arg(&ctx, 1));
    0
}
