//! The kernel's own notifications of configuration changes, from netlink
//! multicast groups joined in the watched network namespace:
//! - `NFNLGRP_NFTABLES`: every nftables commit (so iptables-nft too) ends
//!   with a `NEWGEN` message naming the committing process's pid and name,
//!   whatever syscall or library made it;
//! - `RTNLGRP_LINK`: links created (a tunnel or overlay kind) and
//!   interfaces whose promiscuous flag turned on. Since Linux 6.3 a link
//!   created over netlink is announced with the creator's port id.
//!
//! The sockets are non-blocking and read at each data plane scan. When the
//! kernel drops notifications because the socket buffer was full, the
//! overrun is counted.

use std::{
    collections::{BTreeMap, BTreeSet},
    io,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
};

const NETLINK_ROUTE: i32 = 0;
const NETLINK_NETFILTER: i32 = 12;
const SOL_NETLINK: i32 = 270;
const NETLINK_ADD_MEMBERSHIP: i32 = 1;
const NFNLGRP_NFTABLES: u32 = 7;
const RTNLGRP_LINK: u32 = 1;
const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFT_MSG_NEWGEN: u16 = 15;
const NFTA_GEN_PROC_PID: u16 = 2;
const NFTA_GEN_PROC_NAME: u16 = 3;
const RTM_NEWLINK: u16 = 16;
const IFLA_IFNAME: u16 = 3;
const IFLA_LINKINFO: u16 = 18;
const IFLA_INFO_KIND: u16 = 1;
const IFF_PROMISC: u32 = 0x100;
/// `ifi_change` of a link's first announcement.
const CHANGE_ALL: u32 = u32::MAX;
const NLMSG_HDRLEN: usize = 16;
const NLA_TYPE_MASK: u16 = 0x3fff;

/// Link kinds that carry traffic for another network: tunnels and overlays.
/// `tun` and `tap` are reported from the kernel's `TUNSETIFF`, with the
/// exact process, so not here.
const TUNNEL_KINDS: [&str; 16] = [
    "gre",
    "gretap",
    "ip6gre",
    "ip6gretap",
    "erspan",
    "ip6erspan",
    "ipip",
    "sit",
    "ip6tnl",
    "vti",
    "vti6",
    "vxlan",
    "geneve",
    "wireguard",
    "l2tp",
    "bareudp",
];

/// A change announced by the kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// One nftables commit.
    Nftables {
        pid: u32,
        comm: String,
        /// Operations by message name (`newrule`, `delchain`, ...).
        ops: BTreeMap<String, u32>,
        tables: BTreeSet<String>,
    },
    /// A tunnel or overlay link created.
    LinkCreated {
        ifindex: u32,
        name: String,
        kind: String,
        /// The creator's netlink port id, 0 when not announced.
        portid: u32,
    },
    /// An interface's promiscuous flag turned on.
    PromiscOn {
        ifindex: u32,
        name: String,
        portid: u32,
    },
}

/// Both notification sockets.
pub struct Watcher {
    /// `None` until the kernel has nfnetlink: a kernel that builds it as a
    /// module may load it only when the first firewall tool runs.
    nftables: Option<OwnedFd>,
    links: OwnedFd,
    /// nftables messages of the commit in progress.
    pending_ops: BTreeMap<String, u32>,
    pending_tables: BTreeSet<String>,
    /// Times the kernel reported dropped notifications.
    pub overruns: u64,
}

impl Watcher {
    /// Joins the groups, in the calling thread's network namespace. Only
    /// the link group is required; see `join_nftables` for the other.
    pub fn open() -> io::Result<Self> {
        let mut w = Self {
            nftables: None,
            links: subscribe(NETLINK_ROUTE, RTNLGRP_LINK)?,
            pending_ops: BTreeMap::new(),
            pending_tables: BTreeSet::new(),
            overruns: 0,
        };
        if let Err(e) = w.join_nftables() {
            tracing::warn!(error = %e, "cannot join the nftables notification group yet (no nfnetlink in the kernel?); nftables commits are not reported until it can, retried every rescan");
        }
        Ok(w)
    }

    /// Whether nftables commits are being watched.
    pub fn nftables_joined(&self) -> bool {
        self.nftables.is_some()
    }

    /// Joins the nftables group, in the calling thread's network namespace.
    pub fn join_nftables(&mut self) -> io::Result<()> {
        if self.nftables.is_none() {
            self.nftables = Some(subscribe(NETLINK_NETFILTER, NFNLGRP_NFTABLES)?);
        }
        Ok(())
    }

    /// Everything announced since the last call.
    pub fn poll(&mut self) -> Vec<Notice> {
        let mut out = Vec::new();
        let mut buf = vec![0u8; 1 << 16];
        while let Some(n) = self.recv(true, &mut buf) {
            for (ty, payload) in messages(&buf[..n]) {
                self.nftables_message(ty, payload, &mut out);
            }
        }
        while let Some(n) = self.recv(false, &mut buf) {
            for (ty, payload) in messages(&buf[..n]) {
                if let Some(notice) = link_message(ty, payload.0, payload.1) {
                    out.push(notice);
                }
            }
        }
        out
    }

    /// One datagram; `None` when there is nothing more to read.
    fn recv(&mut self, nftables: bool, buf: &mut [u8]) -> Option<usize> {
        let fd = if nftables {
            self.nftables.as_ref()?
        } else {
            &self.links
        };
        loop {
            // SAFETY: a valid fd and buffer.
            let n = unsafe {
                libc::recv(
                    fd.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    libc::MSG_DONTWAIT,
                )
            };
            if n > 0 {
                return Some(n as usize);
            }
            let err = io::Error::last_os_error();
            match err.raw_os_error() {
                Some(libc::ENOBUFS) => {
                    self.overruns += 1;
                    tracing::warn!("netlink notifications were dropped by the kernel (socket buffer full); some configuration changes may be missing");
                }
                Some(libc::EINTR) => {}
                _ => return None,
            }
        }
    }

    fn nftables_message(
        &mut self,
        ty: u16,
        (header, payload): (&[u8], &[u8]),
        out: &mut Vec<Notice>,
    ) {
        let _ = header;
        if ty >> 8 != NFNL_SUBSYS_NFTABLES {
            return;
        }
        let msg = ty & 0xff;
        // After the 4-byte nfgenmsg.
        let attrs = payload.get(4..).unwrap_or_default();
        if msg == NFT_MSG_NEWGEN {
            let mut pid = 0;
            let mut comm = String::new();
            for (at, value) in attributes(attrs) {
                match at {
                    NFTA_GEN_PROC_PID if value.len() >= 4 => {
                        pid = u32::from_be_bytes([value[0], value[1], value[2], value[3]]);
                    }
                    NFTA_GEN_PROC_NAME => comm = c_string(value),
                    _ => {}
                }
            }
            if self.pending_ops.is_empty() {
                return;
            }
            out.push(Notice::Nftables {
                pid,
                comm,
                ops: std::mem::take(&mut self.pending_ops),
                tables: std::mem::take(&mut self.pending_tables),
            });
            return;
        }
        let Some(name) = nft_message_name(msg) else {
            return;
        };
        *self.pending_ops.entry(name.to_owned()).or_default() += 1;
        // Attribute 1 is the table name in every table, chain, rule, set,
        // element, object and flowtable message.
        if let Some((_, table)) = attributes(attrs).find(|(t, _)| *t == 1) {
            let family = match payload.first() {
                Some(1) => "inet",
                Some(2) => "ip",
                Some(3) => "arp",
                Some(5) => "netdev",
                Some(7) => "bridge",
                Some(10) => "ip6",
                _ => "",
            };
            self.pending_tables
                .insert(format!("{family} {}", c_string(table)).trim().to_owned());
        }
    }
}

/// Names of the nftables messages that change the ruleset.
fn nft_message_name(msg: u16) -> Option<&'static str> {
    Some(match msg {
        0 => "newtable",
        2 => "deltable",
        3 => "newchain",
        5 => "delchain",
        6 => "newrule",
        8 => "delrule",
        9 => "newset",
        11 => "delset",
        12 => "newsetelem",
        14 => "delsetelem",
        18 => "newobj",
        20 => "delobj",
        22 => "newflowtable",
        24 => "delflowtable",
        26 => "destroytable",
        27 => "destroychain",
        28 => "destroyrule",
        29 => "destroyset",
        30 => "destroysetelem",
        31 => "destroyobj",
        32 => "destroyflowtable",
        _ => return None,
    })
}

/// An `RTM_NEWLINK` worth reporting.
fn link_message(ty: u16, header: &[u8], payload: &[u8]) -> Option<Notice> {
    if ty != RTM_NEWLINK || payload.len() < 16 {
        return None;
    }
    let portid = u32::from_ne_bytes(header[12..16].try_into().ok()?);
    let ifindex = i32::from_ne_bytes(payload[4..8].try_into().ok()?) as u32;
    let flags = u32::from_ne_bytes(payload[8..12].try_into().ok()?);
    let change = u32::from_ne_bytes(payload[12..16].try_into().ok()?);
    let mut name = String::new();
    let mut kind = String::new();
    for (at, value) in attributes(&payload[16..]) {
        match at {
            IFLA_IFNAME => name = c_string(value),
            IFLA_LINKINFO => {
                if let Some((_, k)) = attributes(value).find(|(t, _)| *t == IFLA_INFO_KIND) {
                    kind = c_string(k);
                }
            }
            _ => {}
        }
    }
    if change == CHANGE_ALL {
        return TUNNEL_KINDS
            .contains(&kind.as_str())
            .then_some(Notice::LinkCreated {
                ifindex,
                name,
                kind,
                portid,
            });
    }
    (change & IFF_PROMISC != 0 && flags & IFF_PROMISC != 0).then_some(Notice::PromiscOn {
        ifindex,
        name,
        portid,
    })
}

/// The interface an `RTM_NEWLINK`/`RTM_SETLINK` request (its first bytes)
/// names: `ifi_index`, and `IFLA_IFNAME` when it is among the attributes.
pub fn link_request_target(msg: &[u8]) -> (u32, Option<String>) {
    let ifindex = msg
        .get(NLMSG_HDRLEN + 4..NLMSG_HDRLEN + 8)
        .and_then(|b| b.try_into().ok())
        .map_or(0, |b| i32::from_ne_bytes(b) as u32);
    let name = msg
        .get(NLMSG_HDRLEN + 16..)
        .and_then(|attrs| attributes(attrs).find(|(t, _)| *t == IFLA_IFNAME))
        .map(|(_, v)| c_string(v));
    (ifindex, name)
}

/// The netlink messages of a datagram: (type, (header, payload)).
fn messages(buf: &[u8]) -> impl Iterator<Item = (u16, (&[u8], &[u8]))> {
    let mut at = 0;
    std::iter::from_fn(move || {
        let header = buf.get(at..at + NLMSG_HDRLEN)?;
        let len = u32::from_ne_bytes(header[0..4].try_into().ok()?) as usize;
        if len < NLMSG_HDRLEN || at + len > buf.len() {
            return None;
        }
        let ty = u16::from_ne_bytes([header[4], header[5]]);
        let payload = &buf[at + NLMSG_HDRLEN..at + len];
        at += (len + 3) & !3;
        Some((ty, (header, payload)))
    })
}

/// Netlink attributes: (type, value).
fn attributes(buf: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    let mut at = 0;
    std::iter::from_fn(move || {
        let h = buf.get(at..at + 4)?;
        let len = u16::from_ne_bytes([h[0], h[1]]) as usize;
        let ty = u16::from_ne_bytes([h[2], h[3]]) & NLA_TYPE_MASK;
        if len < 4 || at + len > buf.len() {
            return None;
        }
        let value = &buf[at + 4..at + len];
        at += (len + 3) & !3;
        Some((ty, value))
    })
}

fn c_string(raw: &[u8]) -> String {
    crate::escape::escape(crate::decode::c_str(raw))
}

/// A non-blocking netlink socket of `protocol` in `group`.
fn subscribe(protocol: i32, group: u32) -> io::Result<OwnedFd> {
    // SAFETY: plain socket creation.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            protocol,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh fd we own.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: an all-zero sockaddr_nl is valid.
    let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    addr.nl_family = libc::AF_NETLINK as u16;
    // SAFETY: a valid socket and address.
    if unsafe {
        libc::bind(
            sock.as_raw_fd(),
            (&raw const addr).cast(),
            size_of::<libc::sockaddr_nl>() as u32,
        )
    } != 0
    {
        return Err(io::Error::last_os_error());
    }
    let rcvbuf: i32 = 1 << 20;
    for (level, opt, value) in [
        (SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, group as i32),
        (libc::SOL_SOCKET, libc::SO_RCVBUF, rcvbuf),
    ] {
        // SAFETY: a valid socket and an int option.
        if unsafe {
            libc::setsockopt(
                sock.as_raw_fd(),
                level,
                opt,
                (&raw const value).cast(),
                size_of::<i32>() as u32,
            )
        } != 0
        {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(sock)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attr(ty: u16, value: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&((4 + value.len()) as u16).to_ne_bytes());
        v.extend_from_slice(&ty.to_ne_bytes());
        v.extend_from_slice(value);
        while v.len() % 4 != 0 {
            v.push(0);
        }
        v
    }

    fn message(ty: u16, portid: u32, payload: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&((16 + payload.len()) as u32).to_ne_bytes());
        v.extend_from_slice(&ty.to_ne_bytes());
        v.extend_from_slice(&0u16.to_ne_bytes());
        v.extend_from_slice(&0u32.to_ne_bytes());
        v.extend_from_slice(&portid.to_ne_bytes());
        v.extend_from_slice(payload);
        v
    }

    fn ifinfo(ifindex: i32, flags: u32, change: u32, attrs: &[u8]) -> Vec<u8> {
        let mut v = vec![0u8, 0, 1, 0];
        v.extend_from_slice(&ifindex.to_ne_bytes());
        v.extend_from_slice(&flags.to_ne_bytes());
        v.extend_from_slice(&change.to_ne_bytes());
        v.extend_from_slice(attrs);
        v
    }

    #[test]
    fn a_new_gre_link_is_a_tunnel_and_a_new_veth_is_not() {
        let mut attrs = attr(IFLA_IFNAME, b"gre9\0");
        attrs.extend(attr(IFLA_LINKINFO, &attr(IFLA_INFO_KIND, b"gre\0")));
        let msg = message(RTM_NEWLINK, 777, &ifinfo(9, 0, CHANGE_ALL, &attrs));
        let (ty, (h, p)) = messages(&msg).next().expect("one message");
        assert_eq!(
            link_message(ty, h, p),
            Some(Notice::LinkCreated {
                ifindex: 9,
                name: "gre9".to_owned(),
                kind: "gre".to_owned(),
                portid: 777
            })
        );
        let mut attrs = attr(IFLA_IFNAME, b"veth0\0");
        attrs.extend(attr(IFLA_LINKINFO, &attr(IFLA_INFO_KIND, b"veth\0")));
        let msg = message(RTM_NEWLINK, 777, &ifinfo(10, 0, CHANGE_ALL, &attrs));
        let (ty, (h, p)) = messages(&msg).next().expect("one message");
        assert_eq!(link_message(ty, h, p), None);
    }

    #[test]
    fn promisc_turning_on_is_reported_and_other_flag_changes_are_not() {
        let attrs = attr(IFLA_IFNAME, b"eth0\0");
        let on = message(
            RTM_NEWLINK,
            0,
            &ifinfo(2, IFF_PROMISC | 1, IFF_PROMISC, &attrs),
        );
        let (ty, (h, p)) = messages(&on).next().expect("one message");
        assert!(matches!(
            link_message(ty, h, p),
            Some(Notice::PromiscOn { ifindex: 2, .. })
        ));
        let up = message(RTM_NEWLINK, 0, &ifinfo(2, IFF_PROMISC | 1, 1, &attrs));
        let (ty, (h, p)) = messages(&up).next().expect("one message");
        assert_eq!(link_message(ty, h, p), None);
    }

    #[test]
    fn truncated_messages_and_attributes_end_the_walk() {
        let msg = message(RTM_NEWLINK, 0, &ifinfo(2, 0, 0, &[]));
        assert_eq!(messages(&msg[..msg.len() - 1]).count(), 0);
        let a = attr(IFLA_IFNAME, b"eth0\0");
        assert_eq!(attributes(&a[..a.len() - 4]).count(), 0);
        assert_eq!(attributes(&[0xff, 0xff, 0, 0]).count(), 0);
    }
}
