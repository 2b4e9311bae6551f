//! Which side of the gateway an address is on: the role of the interface
//! that reaches it (`wan`, `lan`, ...), `local` for the gateway itself.
//! Relays are rated by the sides their legs reach: wan to lan reaches
//! inside, wan to wan makes the gateway a hop of a chain.

use std::net::IpAddr;

pub use crate::event::Side;

/// One connected network of an interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subnet {
    pub addr: IpAddr,
    pub prefix: u8,
    pub side: Side,
}

/// The sides of one network namespace: its interfaces' subnets and own
/// addresses, and the side of its default route.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SideMap {
    /// Inode of the namespace the map describes.
    pub netns: u32,
    pub subnets: Vec<Subnet>,
    /// The namespace's own addresses.
    pub local: Vec<IpAddr>,
    /// The side of the interface carrying the default route, if any.
    pub default: Option<Side>,
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

/// Whether `ip` is in `net/prefix` (same family).
fn contains(net: IpAddr, prefix: u8, ip: IpAddr) -> bool {
    match (net, ip) {
        (IpAddr::V4(n), IpAddr::V4(a)) => {
            let bits = u32::from(prefix.min(32));
            let mask = if bits == 0 {
                0
            } else {
                u32::MAX << (32 - bits)
            };
            u32::from(n) & mask == u32::from(a) & mask
        }
        (IpAddr::V6(n), IpAddr::V6(a)) => {
            let bits = u32::from(prefix.min(128));
            let mask = if bits == 0 {
                0
            } else {
                u128::MAX << (128 - bits)
            };
            u128::from(n) & mask == u128::from(a) & mask
        }
        _ => false,
    }
}

impl SideMap {
    /// The side `remote` is on, for a socket in namespace `netns`.
    pub fn side(&self, netns: u32, remote: IpAddr) -> Side {
        let ip = canonical(remote);
        if ip.is_loopback() {
            return Side::Local;
        }
        if netns != self.netns || self.netns == 0 {
            return Side::Unknown;
        }
        if self.local.iter().any(|l| canonical(*l) == ip) {
            return Side::Local;
        }
        self.subnets
            .iter()
            .filter(|s| contains(canonical(s.addr), s.prefix, ip))
            .max_by_key(|s| s.prefix)
            .map(|s| s.side)
            .or(self.default)
            .unwrap_or(Side::Unknown)
    }
}

/// The addresses of the current namespace's interfaces: `(interface, address,
/// prefix length)`.
pub fn addresses() -> std::io::Result<Vec<(String, IpAddr, u8)>> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list freed below.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let mut out = Vec::new();
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: a node of the list getifaddrs returned.
        let ifa = unsafe { &*cur };
        cur = ifa.ifa_next;
        if ifa.ifa_addr.is_null() || ifa.ifa_name.is_null() {
            continue;
        }
        // SAFETY: a NUL-terminated name from the kernel.
        let name = unsafe { std::ffi::CStr::from_ptr(ifa.ifa_name) }
            .to_string_lossy()
            .into_owned();
        // SAFETY: sockaddr pointers of the node, read by their family.
        let (addr, prefix) = unsafe {
            match i32::from((*ifa.ifa_addr).sa_family) {
                libc::AF_INET => {
                    let a = &*(ifa.ifa_addr as *const libc::sockaddr_in);
                    let ip = IpAddr::V4(u32::from_be(a.sin_addr.s_addr).into());
                    let prefix = if ifa.ifa_netmask.is_null() {
                        32
                    } else {
                        let m = &*(ifa.ifa_netmask as *const libc::sockaddr_in);
                        u32::from_be(m.sin_addr.s_addr).count_ones() as u8
                    };
                    (ip, prefix)
                }
                libc::AF_INET6 => {
                    let a = &*(ifa.ifa_addr as *const libc::sockaddr_in6);
                    let ip = IpAddr::V6(a.sin6_addr.s6_addr.into());
                    let prefix = if ifa.ifa_netmask.is_null() {
                        128
                    } else {
                        let m = &*(ifa.ifa_netmask as *const libc::sockaddr_in6);
                        u128::from_be_bytes(m.sin6_addr.s6_addr).count_ones() as u8
                    };
                    (ip, prefix)
                }
                _ => continue,
            }
        };
        out.push((name, addr, prefix));
    }
    // SAFETY: the list getifaddrs allocated.
    unsafe { libc::freeifaddrs(head) };
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map() -> SideMap {
        SideMap {
            netns: 7,
            subnets: vec![
                Subnet {
                    addr: "192.0.2.66".parse().expect("ip"),
                    prefix: 26,
                    side: Side::Wan,
                },
                Subnet {
                    addr: "10.77.0.1".parse().expect("ip"),
                    prefix: 24,
                    side: Side::Lan,
                },
                Subnet {
                    addr: "10.77.0.128".parse().expect("ip"),
                    prefix: 25,
                    side: Side::Mgmt,
                },
            ],
            local: vec![
                "192.0.2.66".parse().expect("ip"),
                "10.77.0.1".parse().expect("ip"),
            ],
            default: Some(Side::Wan),
        }
    }

    #[test]
    fn addresses_fall_on_their_interface_side() {
        let m = map();
        let side = |a: &str| m.side(7, a.parse().expect("ip"));
        assert_eq!(side("10.77.0.10"), Side::Lan);
        assert_eq!(side("10.77.0.200"), Side::Mgmt, "longest prefix wins");
        assert_eq!(side("192.0.2.70"), Side::Wan);
        assert_eq!(side("198.51.100.20"), Side::Wan, "by the default route");
        assert_eq!(side("10.77.0.1"), Side::Local);
        assert_eq!(side("127.0.0.1"), Side::Local);
        assert_eq!(side("::ffff:10.77.0.10"), Side::Lan);
        assert_eq!(m.side(8, "10.77.0.10".parse().expect("ip")), Side::Unknown);
        let no_default = SideMap {
            default: None,
            ..map()
        };
        assert_eq!(
            no_default.side(7, "198.51.100.20".parse().expect("ip")),
            Side::Unknown
        );
    }

    #[test]
    fn this_namespace_lists_its_loopback() {
        let all = addresses().expect("getifaddrs");
        assert!(all.iter().any(|(_, a, _)| a.is_loopback()), "{all:?}");
    }
}
