//! `config_change` events: changes that let an intruder use the machine as
//! a relay or a sniffer, each with the process that made it. They come from
//! the kernel ([`ConfigEvent`], exact process) and from the kernel's netlink
//! notifications ([`super::netlink::Notice`], process named by the
//! notification).

use std::{
    collections::{BTreeMap, HashMap},
    time::{Duration, Instant},
};

use monitor_common::event::{
    ConfigEvent, CFG_BPF_PROG, CFG_LINK_REQUEST, CFG_PACKET_SOCKET, CFG_PROMISC, CFG_SOCKET_FILTER,
    CFG_SYSCTL, CFG_TUN, CFG_XTABLES,
};

use super::netlink::Notice;
use crate::{
    clock::BootClock, decode::c_str, escape::escape, net::NetTracker, process::ProcessTable,
};

pub use crate::event::config_change::{Change, ConfigChangeRecord};

impl ConfigChangeRecord {
    fn new(ts: String, change: Change, netns: u32) -> Self {
        Self {
            ts,
            change,
            netns,
            attribution: "exact".to_owned(),
            process: None,
            sysctl: None,
            value: None,
            enabled: None,
            backend: None,
            tables: Vec::new(),
            ops: BTreeMap::new(),
            iface: None,
            ifindex: None,
            link_kind: None,
            method: None,
            socket: None,
            filter: None,
            program: None,
        }
    }
}

/// Sysctls (last path component) whose change can make the machine
/// forward or answer for addresses it does not own.
const RELAY_SYSCTLS: [&str; 7] = [
    "ip_forward",
    "forwarding",
    "bc_forwarding",
    "mc_forwarding",
    "route_localnet",
    "proxy_arp",
    "proxy_ndp",
];

/// A kernel promiscuous-mode request this recent explains a netlink
/// notification of the same interface, which is then not reported twice.
const PROMISC_EXPLAINS: Duration = Duration::from_secs(3);

/// A link request this recent, in the same namespace, is taken as the
/// cause of a link notification.
const REQUEST_EXPLAINS: Duration = Duration::from_secs(3);

/// Turns kernel records and netlink notices into `config_change` events.
#[derive(Default)]
pub struct Changes {
    /// Interfaces (by name and by index) of recent kernel promisc requests.
    recent_promisc: HashMap<String, Instant>,
    /// Recent rtnetlink link requests, oldest first.
    link_requests: std::collections::VecDeque<LinkRequest>,
}

/// An rtnetlink link request seen in the kernel.
struct LinkRequest {
    netns: u32,
    at: Instant,
    pid: u32,
    comm: String,
    /// The interface it names: by index (`ip link set`), by name (`ip link
    /// add`), or both.
    ifindex: u32,
    name: Option<String>,
}

/// Link requests remembered at once.
const LINK_REQUESTS_MAX: usize = 64;

impl Changes {
    /// A kernel record, or `None` when it is not a change worth reporting
    /// (a sysctl unrelated to forwarding).
    pub fn from_kernel(
        &mut self,
        ev: &ConfigEvent,
        now: Instant,
        procs: &ProcessTable,
        clock: &BootClock,
    ) -> Option<ConfigChangeRecord> {
        let ts = clock.rfc3339(ev.header.ts_boot_ns);
        let name = escape(c_str(&ev.name));
        let comm = escape(c_str(&ev.task.comm));
        let mut r = match ev.change {
            CFG_LINK_REQUEST => {
                if self.link_requests.len() >= LINK_REQUESTS_MAX {
                    self.link_requests.pop_front();
                }
                let mut msg = ev.value.to_vec();
                msg.extend_from_slice(&ev.name);
                let (ifindex, name) = super::netlink::link_request_target(&msg);
                self.link_requests.push_back(LinkRequest {
                    netns: ev.netns,
                    at: now,
                    pid: ev.header.pid,
                    comm,
                    ifindex,
                    name,
                });
                return None;
            }
            CFG_SYSCTL => {
                let leaf = name.rsplit('/').next().unwrap_or_default();
                if !RELAY_SYSCTLS.contains(&leaf) {
                    return None;
                }
                let value = escape(c_str(&ev.value)).trim().to_owned();
                let mut r = ConfigChangeRecord::new(ts, Change::Sysctl, ev.netns);
                r.enabled = Some(value.parse::<i64>().is_ok_and(|v| v != 0));
                r.sysctl = Some(name);
                r.value = Some(value);
                r
            }
            CFG_XTABLES => {
                let mut r = ConfigChangeRecord::new(ts, Change::Netfilter, ev.netns);
                r.backend = Some("xtables".to_owned());
                let family = match (ev.arg0, ev.arg1) {
                    (41, _) => "ip6",
                    (_, 96) => "arp",
                    (_, 128) => "bridge",
                    _ => "ip",
                };
                r.tables = vec![format!("{family} {name}")];
                r
            }
            CFG_PROMISC => {
                let mut r = ConfigChangeRecord::new(ts, Change::Promisc, ev.netns);
                if ev.arg0 == 1 {
                    r.method = Some("ioctl".to_owned());
                    self.recent_promisc.insert(name.clone(), now);
                    r.iface = Some(name);
                } else {
                    r.method = Some("packet_membership".to_owned());
                    r.ifindex = Some(ev.arg1 as u32);
                    self.recent_promisc.insert(format!("#{}", ev.arg1), now);
                }
                r
            }
            CFG_PACKET_SOCKET => {
                let mut r = ConfigChangeRecord::new(ts, Change::PacketSocket, ev.netns);
                r.socket = Some(match ev.arg0 & 0xf {
                    3 => "raw".to_owned(),
                    2 => "dgram".to_owned(),
                    10 => "packet".to_owned(),
                    t => t.to_string(),
                });
                r
            }
            CFG_SOCKET_FILTER => {
                let mut r = ConfigChangeRecord::new(ts, Change::SocketFilter, ev.netns);
                r.filter = Some(
                    match ev.arg0 {
                        26 | 51 => "classic",
                        _ => "ebpf",
                    }
                    .to_owned(),
                );
                r.socket = Some(family_name(ev.arg1));
                r
            }
            CFG_BPF_PROG => {
                let mut r = ConfigChangeRecord::new(ts, Change::BpfProgram, ev.netns);
                r.filter = Some(prog_type_name(ev.arg0));
                r.program = Some(name);
                r
            }
            CFG_TUN => {
                let mut r = ConfigChangeRecord::new(ts, Change::Tunnel, ev.netns);
                // IFF_TUN 0x1, IFF_TAP 0x2.
                r.link_kind = Some(if ev.arg0 & 2 != 0 { "tap" } else { "tun" }.to_owned());
                r.iface = Some(name).filter(|n| !n.is_empty());
                r
            }
            _ => return None,
        };
        r.process = NetTracker::process_ref(procs, ev.header.pid, &comm);
        Some(r)
    }

    /// A netlink notice from the watched namespace.
    pub fn from_notice(
        &mut self,
        notice: Notice,
        netns: u32,
        now: Instant,
        procs: &ProcessTable,
        clock: &BootClock,
    ) -> Option<ConfigChangeRecord> {
        self.recent_promisc
            .retain(|_, at| now.duration_since(*at) < PROMISC_EXPLAINS);
        while self
            .link_requests
            .front()
            .is_some_and(|r| now.duration_since(r.at) >= REQUEST_EXPLAINS)
        {
            self.link_requests.pop_front();
        }
        let requests = &self.link_requests;
        let requester = |ifindex: u32, name: &str| {
            requests
                .iter()
                .rev()
                .find(|r| {
                    r.netns == netns
                        && ((r.ifindex != 0 && r.ifindex == ifindex)
                            || r.name.as_deref() == Some(name))
                })
                .map(|r| (r.pid, r.comm.clone()))
        };
        let ts = clock.rfc3339(BootClock::boot_now_ns());
        // A netlink socket's port id is its process's pid unless the
        // process has several sockets or chose one; it is trusted only
        // when it names a process the table knows.
        let announced = |portid: u32| (portid != 0).then(|| (portid, String::new()));
        let (mut r, by) = match notice {
            Notice::Nftables {
                pid,
                comm,
                ops,
                tables,
            } => {
                let mut r = ConfigChangeRecord::new(ts, Change::Netfilter, netns);
                r.backend = Some("nftables".to_owned());
                r.ops = ops;
                r.tables = tables.into_iter().collect();
                (r, Some((pid, comm)))
            }
            Notice::LinkCreated {
                ifindex,
                name,
                kind,
                portid,
            } => {
                let by = announced(portid).or_else(|| requester(ifindex, &name));
                let mut r = ConfigChangeRecord::new(ts, Change::Tunnel, netns);
                r.iface = Some(name);
                r.ifindex = Some(ifindex);
                r.link_kind = Some(kind);
                (r, by)
            }
            Notice::PromiscOn {
                ifindex,
                name,
                portid,
            } => {
                if self.recent_promisc.contains_key(&name)
                    || self.recent_promisc.contains_key(&format!("#{ifindex}"))
                {
                    return None;
                }
                let by = announced(portid).or_else(|| requester(ifindex, &name));
                let mut r = ConfigChangeRecord::new(ts, Change::Promisc, netns);
                r.method = Some("netlink".to_owned());
                r.iface = Some(name);
                r.ifindex = Some(ifindex);
                (r, by)
            }
        };
        r.process = by
            .filter(|(pid, _)| *pid != 0 && procs.get(*pid).is_some())
            .and_then(|(pid, comm)| NetTracker::process_ref(procs, pid, &comm));
        r.attribution = if r.process.is_some() {
            "netlink"
        } else {
            "unknown"
        }
        .to_owned();
        Some(r)
    }
}

fn family_name(family: u64) -> String {
    match family {
        1 => "unix".to_owned(),
        2 => "inet".to_owned(),
        10 => "inet6".to_owned(),
        16 => "netlink".to_owned(),
        17 => "packet".to_owned(),
        f => f.to_string(),
    }
}

/// `enum bpf_prog_type` names, from include/uapi/linux/bpf.h.
fn prog_type_name(t: u64) -> String {
    const NAMES: [&str; 33] = [
        "unspec",
        "socket_filter",
        "kprobe",
        "sched_cls",
        "sched_act",
        "tracepoint",
        "xdp",
        "perf_event",
        "cgroup_skb",
        "cgroup_sock",
        "lwt_in",
        "lwt_out",
        "lwt_xmit",
        "sock_ops",
        "sk_skb",
        "cgroup_device",
        "sk_msg",
        "raw_tracepoint",
        "cgroup_sock_addr",
        "lwt_seg6local",
        "lirc_mode2",
        "sk_reuseport",
        "flow_dissector",
        "cgroup_sysctl",
        "raw_tracepoint_writable",
        "cgroup_sockopt",
        "tracing",
        "struct_ops",
        "ext",
        "lsm",
        "sk_lookup",
        "syscall",
        "netfilter",
    ];
    NAMES
        .get(t as usize)
        .map_or_else(|| t.to_string(), |n| (*n).to_owned())
}

#[cfg(test)]
mod tests {
    use monitor_common::event::{EventHeader, TaskInfo};

    use super::*;

    fn kernel(change: u32, name: &[u8], value: &[u8], arg0: u64, arg1: u64) -> ConfigEvent {
        let mut ev = ConfigEvent {
            header: EventHeader {
                pid: 4242,
                ..Default::default()
            },
            task: TaskInfo::default(),
            change,
            netns: 7,
            arg0,
            arg1,
            ..Default::default()
        };
        ev.name[..name.len()].copy_from_slice(name);
        ev.value[..value.len()].copy_from_slice(value);
        ev
    }

    fn table() -> ProcessTable {
        ProcessTable::new(64, Duration::from_secs(60))
    }

    #[test]
    fn forwarding_sysctls_are_reported_with_their_value_and_others_are_not() {
        let mut c = Changes::default();
        let clock = BootClock::new();
        let t = table();
        let now = Instant::now();
        let on = kernel(CFG_SYSCTL, b"net/ipv4/ip_forward", b"1\n", 0, 0);
        let r = c.from_kernel(&on, now, &t, &clock).expect("reported");
        assert_eq!(r.change, Change::Sysctl);
        assert_eq!(r.enabled, Some(true));
        assert_eq!(r.value.as_deref(), Some("1"));
        assert_eq!(r.process.as_ref().map(|p| p.pid), Some(4242));
        let v6 = kernel(CFG_SYSCTL, b"net/ipv6/conf/all/forwarding", b"0", 0, 0);
        assert_eq!(
            c.from_kernel(&v6, now, &t, &clock).and_then(|r| r.enabled),
            Some(false)
        );
        let other = kernel(CFG_SYSCTL, b"net/ipv4/tcp_syncookies", b"1", 0, 0);
        assert!(c.from_kernel(&other, now, &t, &clock).is_none());
    }

    #[test]
    fn kernel_promisc_explains_the_netlink_notice_that_follows() {
        let mut c = Changes::default();
        let clock = BootClock::new();
        let t = table();
        let now = Instant::now();
        let req = kernel(CFG_PROMISC, b"", b"", 2, 5);
        assert!(c.from_kernel(&req, now, &t, &clock).is_some());
        let notice = |ifindex| Notice::PromiscOn {
            ifindex,
            name: "eth9".to_owned(),
            portid: 0,
        };
        assert!(c.from_notice(notice(5), 7, now, &t, &clock).is_none());
        let r = c
            .from_notice(notice(6), 7, now, &t, &clock)
            .expect("another interface is reported");
        assert_eq!(r.attribution, "unknown");
    }

    #[test]
    fn link_notices_are_attributed_to_the_request_that_named_the_interface() {
        let mut c = Changes::default();
        let clock = BootClock::new();
        let mut t = table();
        let now = Instant::now();
        for pid in [100, 200] {
            t.insert(crate::process::Process::for_test(pid, 1, "/usr/bin/ip"));
        }
        // `ip link add vx0 ...` (pid 100) names the link; `ip link set
        // lan0 promisc on` (pid 200) names ifindex 4.
        let mut add = [0u8; 128];
        add[4..6].copy_from_slice(&16u16.to_ne_bytes());
        add[32..34].copy_from_slice(&8u16.to_ne_bytes());
        add[34..36].copy_from_slice(&3u16.to_ne_bytes());
        add[36..40].copy_from_slice(b"vx0\0");
        let mut set = [0u8; 128];
        set[4..6].copy_from_slice(&16u16.to_ne_bytes());
        set[20..24].copy_from_slice(&4i32.to_ne_bytes());
        for (pid, msg) in [(100, add), (200, set)] {
            let mut ev = kernel(CFG_LINK_REQUEST, &msg[64..], &msg[..64], 16, 0);
            ev.header.pid = pid;
            assert!(
                c.from_kernel(&ev, now, &t, &clock).is_none(),
                "not a change by itself"
            );
        }
        let created = Notice::LinkCreated {
            ifindex: 9,
            name: "vx0".to_owned(),
            kind: "vxlan".to_owned(),
            portid: 0,
        };
        let r = c.from_notice(created, 7, now, &t, &clock).expect("tunnel");
        assert_eq!(r.process.map(|p| p.pid), Some(100));
        assert_eq!(r.attribution, "netlink");
        let promisc = Notice::PromiscOn {
            ifindex: 4,
            name: "lan0".to_owned(),
            portid: 0,
        };
        let r = c.from_notice(promisc, 7, now, &t, &clock).expect("promisc");
        assert_eq!(r.process.map(|p| p.pid), Some(200));
        let elsewhere = Notice::PromiscOn {
            ifindex: 4,
            name: "lan0".to_owned(),
            portid: 0,
        };
        let r = c
            .from_notice(elsewhere, 8, now, &t, &clock)
            .expect("promisc");
        assert_eq!(
            r.attribution, "unknown",
            "requests from another namespace do not count"
        );
    }

    #[test]
    fn bpf_program_types_are_named() {
        assert_eq!(prog_type_name(1), "socket_filter");
        assert_eq!(prog_type_name(6), "xdp");
        assert_eq!(prog_type_name(99), "99");
    }
}
