//! Sockets that exist when the monitor starts, from the kernel's sock_diag
//! netlink interface (`NETLINK_SOCK_DIAG`, `inet_diag`), with the process
//! owning each found through /proc/PID/fd.
//!
//! sock_diag reports the same socket cookie the eBPF programs see, so a
//! connection found here and its later events are one socket.

use std::{
    collections::HashMap,
    fs, io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    path::Path,
};

use crate::event::{Endpoint, Proto};

const NETLINK_SOCK_DIAG: i32 = 4;
const SOCK_DIAG_BY_FAMILY: u16 = 20;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_DUMP: u16 = 0x300;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLMSG_HDR: usize = 16;
/// `struct inet_diag_msg`.
const INET_DIAG_MSG: usize = 72;

/// One socket as sock_diag reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiagSocket {
    pub proto: Proto,
    /// TCP state number (`include/net/tcp_states.h`); 7 (close) for an
    /// unconnected UDP socket.
    pub state: u8,
    pub local: Endpoint,
    pub remote: Endpoint,
    pub inode: u32,
    pub cookie: u64,
    pub uid: u32,
}

fn ip(family: u8, raw: &[u8]) -> IpAddr {
    if family == libc::AF_INET as u8 {
        IpAddr::V4(Ipv4Addr::new(raw[0], raw[1], raw[2], raw[3]))
    } else {
        let mut b = [0u8; 16];
        b.copy_from_slice(&raw[..16]);
        let v6 = Ipv6Addr::from(b);
        v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4)
    }
}

/// Parses one `inet_diag_msg`.
pub fn parse_msg(proto: Proto, m: &[u8]) -> Option<DiagSocket> {
    if m.len() < INET_DIAG_MSG {
        return None;
    }
    let family = m[0];
    let state = m[1];
    // struct inet_diag_sockid starts at 4: sport, dport (big endian),
    // src[4], dst[4] (32-bit words), if, cookie[2].
    let sport = u16::from_be_bytes([m[4], m[5]]);
    let dport = u16::from_be_bytes([m[6], m[7]]);
    let src = ip(family, &m[8..24]);
    let dst = ip(family, &m[24..40]);
    let c0 = u32::from_ne_bytes([m[44], m[45], m[46], m[47]]) as u64;
    let c1 = u32::from_ne_bytes([m[48], m[49], m[50], m[51]]) as u64;
    let uid = u32::from_ne_bytes([m[64], m[65], m[66], m[67]]);
    let inode = u32::from_ne_bytes([m[68], m[69], m[70], m[71]]);
    Some(DiagSocket {
        proto,
        state,
        local: Endpoint {
            addr: src,
            port: sport,
        },
        remote: Endpoint {
            addr: dst,
            port: dport,
        },
        inode,
        cookie: c0 | (c1 << 32),
        uid,
    })
}

/// Dumps every socket of one family and protocol in this network namespace.
pub fn dump(family: u8, proto: Proto) -> io::Result<Vec<DiagSocket>> {
    // SAFETY: plain socket(2) call; the fd is owned right away.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            NETLINK_SOCK_DIAG,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a new descriptor nobody else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut req = Vec::with_capacity(NLMSG_HDR + 56);
    req.extend_from_slice(&((NLMSG_HDR + 56) as u32).to_ne_bytes());
    req.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    req.extend_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    req.extend_from_slice(&1u32.to_ne_bytes()); // seq
    req.extend_from_slice(&0u32.to_ne_bytes()); // pid
                                                // struct inet_diag_req_v2
    req.push(family);
    req.push(match proto {
        Proto::Tcp => libc::IPPROTO_TCP as u8,
        Proto::Udp => libc::IPPROTO_UDP as u8,
        Proto::Icmp => libc::IPPROTO_ICMP as u8,
    });
    req.push(0); // idiag_ext
    req.push(0); // pad
    req.extend_from_slice(&u32::MAX.to_ne_bytes()); // all states
    req.extend_from_slice(&[0u8; 48]); // inet_diag_sockid: match all
                                       // SAFETY: sending a fully initialised buffer on our socket.
    let n = unsafe { libc::send(fd.as_raw_fd(), req.as_ptr().cast(), req.len(), 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut out = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        // SAFETY: receiving into our buffer of the given length.
        let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut at = 0usize;
        let data = &buf[..n as usize];
        while at + NLMSG_HDR <= data.len() {
            let len =
                u32::from_ne_bytes([data[at], data[at + 1], data[at + 2], data[at + 3]]) as usize;
            let ty = u16::from_ne_bytes([data[at + 4], data[at + 5]]);
            if len < NLMSG_HDR || at + len > data.len() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "malformed sock_diag reply",
                ));
            }
            match ty {
                NLMSG_DONE => return Ok(out),
                NLMSG_ERROR => {
                    let code = data
                        .get(at + NLMSG_HDR..at + NLMSG_HDR + 4)
                        .map_or(0, |b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]));
                    return Err(io::Error::from_raw_os_error(-code));
                }
                SOCK_DIAG_BY_FAMILY => {
                    if let Some(s) = parse_msg(proto, &data[at + NLMSG_HDR..at + len]) {
                        out.push(s);
                    }
                }
                _ => {}
            }
            at += (len + 3) & !3;
        }
    }
}

/// Every TCP and UDP socket, IPv4 and IPv6, in this network namespace.
pub fn dump_all() -> io::Result<Vec<DiagSocket>> {
    let mut all = Vec::new();
    for proto in [Proto::Tcp, Proto::Udp] {
        for family in [libc::AF_INET as u8, libc::AF_INET6 as u8] {
            all.extend(dump(family, proto)?);
        }
    }
    Ok(all)
}

/// Socket inode to owning pid, from the `socket:[N]` links in /proc/PID/fd.
/// A socket shared by several processes maps to the lowest pid.
pub fn socket_owners(proc_root: &Path) -> HashMap<u32, u32> {
    let mut owners = HashMap::new();
    let Ok(dir) = fs::read_dir(proc_root) else {
        return owners;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(fds) = fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            let Ok(link) = fs::read_link(fd.path()) else {
                continue;
            };
            let Some(inode) = link
                .to_str()
                .and_then(|l| l.strip_prefix("socket:["))
                .and_then(|l| l.strip_suffix(']'))
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            owners
                .entry(inode)
                .and_modify(|p: &mut u32| *p = (*p).min(pid))
                .or_insert(pid);
        }
    }
    owners
}

/// Name of a TCP state, for seeded `connection` events.
pub fn tcp_state_name(state: u8) -> &'static str {
    match state {
        1 => "established",
        2 => "syn_sent",
        3 => "syn_recv",
        4 => "fin_wait1",
        5 => "fin_wait2",
        6 => "time_wait",
        7 => "close",
        8 => "close_wait",
        9 => "last_ack",
        10 => "listen",
        11 => "closing",
        _ => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use std::net::{TcpListener, TcpStream};

    use super::*;

    #[test]
    fn finds_a_loopback_connection_with_its_owner() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let client = TcpStream::connect(addr).expect("connect");
        let (_server, _) = listener.accept().expect("accept");
        let local = client.local_addr().expect("local");
        let all = dump(libc::AF_INET as u8, Proto::Tcp).expect("sock_diag dump");
        let found = all
            .iter()
            .find(|s| s.local.port == local.port() && s.remote.port == addr.port())
            .expect("client socket in dump");
        assert_eq!(found.state, 1);
        assert_eq!(found.local.addr, local.ip());
        assert_ne!(found.cookie, 0);
        let owners = socket_owners(Path::new("/proc"));
        assert_eq!(owners.get(&found.inode), Some(&std::process::id()));
        assert!(all
            .iter()
            .any(|s| s.state == 10 && s.local.port == addr.port()));
    }

    #[test]
    fn short_messages_are_ignored() {
        assert!(parse_msg(Proto::Tcp, &[0u8; 10]).is_none());
    }
}
