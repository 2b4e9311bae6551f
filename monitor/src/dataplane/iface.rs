//! The gateway's interfaces: discovery in a network namespace, their roles
//! and link-layer header length.

use std::{
    ffi::CStr,
    fs::File,
    io,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    path::Path,
};

use serde::Deserialize;

use crate::net::sides::{Side, SideMap, Subnet};

pub use crate::event::forward::Role;

/// `{ name = "eth0", role = "wan" }` in `[dataplane] interfaces`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IfaceRole {
    pub name: String,
    pub role: Role,
}

/// An interface as the kernel lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub ifindex: u32,
    pub name: String,
    /// `ARPHRD_*` hardware type.
    pub hw_type: u16,
    /// Carries a default route (IPv4 or IPv6).
    pub default_route: bool,
}

const ARPHRD_ETHER: u16 = 1;
const ARPHRD_LOOPBACK: u16 = 772;

impl Link {
    /// Bytes before the IP header in a packet on this link as TC sees it.
    pub fn l2_len(&self) -> u32 {
        if self.hw_type == ARPHRD_ETHER {
            14
        } else {
            0
        }
    }
}

/// A watched interface with its role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Iface {
    pub link: Link,
    pub role: Role,
}

/// The roles of `links`: configured ones first, then the default (the
/// default-route interface is wan, non-Ethernet links are tunnels, the
/// rest lan). Loopback is never watched.
pub fn assign(links: &[Link], configured: &[IfaceRole]) -> Vec<Iface> {
    links
        .iter()
        .filter(|l| l.hw_type != ARPHRD_LOOPBACK && l.name != "lo")
        .map(|l| {
            let role = configured
                .iter()
                .find(|c| c.name == l.name)
                .map(|c| c.role)
                .unwrap_or(if l.default_route {
                    Role::Wan
                } else if l.hw_type != ARPHRD_ETHER {
                    Role::Tunnel
                } else {
                    Role::Lan
                });
            Iface {
                link: l.clone(),
                role,
            }
        })
        .collect()
}

impl Role {
    /// The side of the gateway an interface of this role faces.
    pub fn side(self) -> Side {
        match self {
            Role::Wan => Side::Wan,
            Role::Lan => Side::Lan,
            Role::Mgmt => Side::Mgmt,
            Role::Tunnel => Side::Tunnel,
        }
    }
}

/// The sides of the calling thread's namespace (inode `netns`): each
/// interface's subnets with its role, its own addresses, and the role of
/// the default route.
pub fn sides(netns: u32, configured: &[IfaceRole]) -> io::Result<SideMap> {
    let links = list()?;
    let ifaces = assign(&links, configured);
    let role_of = |name: &str| ifaces.iter().find(|i| i.link.name == name).map(|i| i.role);
    let mut map = SideMap {
        netns,
        default: ifaces
            .iter()
            .find(|i| i.link.default_route)
            .map(|i| i.role.side()),
        ..SideMap::default()
    };
    for (name, addr, prefix) in crate::net::sides::addresses()? {
        map.local.push(addr);
        if let Some(role) = role_of(&name) {
            map.subnets.push(Subnet {
                addr,
                prefix,
                side: role.side(),
            });
        }
    }
    Ok(map)
}

/// Runs `f` with this thread in the network namespace at `path` (the
/// thread's own when `None`), then moves the thread back. Sockets made in
/// `f` stay in that namespace.
pub fn in_netns<T>(path: Option<&Path>, f: impl FnOnce() -> T) -> io::Result<T> {
    let Some(path) = path else { return Ok(f()) };
    let home = File::open("/proc/thread-self/ns/net")?;
    let target = File::open(path).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("network namespace {}: {e}", path.display()),
        )
    })?;
    setns(&target)
        .map_err(|e| io::Error::new(e.kind(), format!("entering {}: {e}", path.display())))?;
    let out = f();
    setns(&home).expect("returning to the monitor's own network namespace must not fail");
    Ok(out)
}

fn setns(ns: &File) -> io::Result<()> {
    // SAFETY: a valid namespace fd and a namespace type constant.
    if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The interfaces of the calling thread's network namespace.
pub fn list() -> io::Result<Vec<Link>> {
    let defaults = default_route_ifaces();
    // SAFETY: plain socket creation.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh fd we own.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: if_nameindex returns a list ended by a zero entry, freed below.
    let list = unsafe { libc::if_nameindex() };
    if list.is_null() {
        return Err(io::Error::last_os_error());
    }
    let mut links = Vec::new();
    let mut at = list;
    // SAFETY: walking the array up to its terminating zero entry.
    unsafe {
        while (*at).if_index != 0 && !(*at).if_name.is_null() {
            let name = CStr::from_ptr((*at).if_name).to_string_lossy().into_owned();
            let hw_type = hw_type(&sock, &name).unwrap_or(0);
            links.push(Link {
                ifindex: (*at).if_index,
                default_route: defaults.contains(&name),
                name,
                hw_type,
            });
            at = at.add(1);
        }
        libc::if_freenameindex(list);
    }
    Ok(links)
}

/// `ARPHRD_*` type of interface `name`, from `SIOCGIFHWADDR`.
fn hw_type(sock: &OwnedFd, name: &str) -> io::Result<u16> {
    // SAFETY: an all-zero ifreq is valid.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(name.bytes().take(15)) {
        *dst = src as libc::c_char;
    }
    // SAFETY: a valid socket and ifreq.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFHWADDR, &mut req) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: SIOCGIFHWADDR fills the hwaddr member of the union.
    Ok(unsafe { req.ifr_ifru.ifru_hwaddr.sa_family })
}

/// Interfaces that carry a default route, from the calling thread's
/// namespace (`/proc/thread-self/net`, not `/proc/net`, which follows the
/// process's first thread).
fn default_route_ifaces() -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(v4) = std::fs::read_to_string("/proc/thread-self/net/route") {
        out.extend(default_v4(&v4));
    }
    if let Ok(v6) = std::fs::read_to_string("/proc/thread-self/net/ipv6_route") {
        out.extend(default_v6(&v6));
    }
    out
}

/// `Iface Destination Gateway Flags ... Mask ...`: destination and mask 0.
fn default_v4(table: &str) -> Vec<String> {
    table
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() > 7 && f[1] == "00000000" && f[7] == "00000000").then(|| f[0].to_owned())
        })
        .collect()
}

/// `dst dst_len src src_len next_hop metric ref use flags iface`: ::/0
/// routes other than the unreachable one on lo.
fn default_v6(table: &str) -> Vec<String> {
    table
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() == 10 && f[0].bytes().all(|b| b == b'0') && f[1] == "00" && f[9] != "lo")
                .then(|| f[9].to_owned())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(ifindex: u32, name: &str, hw_type: u16, default_route: bool) -> Link {
        Link {
            ifindex,
            name: name.to_owned(),
            hw_type,
            default_route,
        }
    }

    #[test]
    fn default_roles_follow_the_default_route() {
        let links = [
            link(1, "lo", ARPHRD_LOOPBACK, false),
            link(2, "eth0", ARPHRD_ETHER, true),
            link(3, "eth1", ARPHRD_ETHER, false),
            link(4, "wg0", 65534, false),
        ];
        let roles: Vec<(String, Role)> = assign(&links, &[])
            .into_iter()
            .map(|i| (i.link.name, i.role))
            .collect();
        assert_eq!(
            roles,
            [
                ("eth0".to_owned(), Role::Wan),
                ("eth1".to_owned(), Role::Lan),
                ("wg0".to_owned(), Role::Tunnel)
            ]
        );
    }

    #[test]
    fn configured_roles_win() {
        let links = [
            link(2, "eth0", ARPHRD_ETHER, true),
            link(3, "eth1", ARPHRD_ETHER, false),
        ];
        let configured = [IfaceRole {
            name: "eth1".to_owned(),
            role: Role::Mgmt,
        }];
        let roles: Vec<Role> = assign(&links, &configured)
            .into_iter()
            .map(|i| i.role)
            .collect();
        assert_eq!(roles, [Role::Wan, Role::Mgmt]);
    }

    #[test]
    fn default_routes_parse() {
        let v4 =
            "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
                  wan0\t00000000\t010200C6\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
                  lan0\t00004D0A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n";
        assert_eq!(default_v4(v4), ["wan0"]);
        let v6 = "00000000000000000000000000000000 00 00000000000000000000000000000000 00 20010db8000000000000000000000001 00000400 00000001 00000000 00000003 wan0\n\
                  00000000000000000000000000000000 00 00000000000000000000000000000000 00 00000000000000000000000000000000 ffffffff 00000001 00000000 00200200       lo\n";
        assert_eq!(default_v6(v6), ["wan0"]);
    }
}
