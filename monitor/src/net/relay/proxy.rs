//! The target a proxy request names, read from the first bytes of a
//! connection (the kernel keeps them in `PROXY_HEADS` when the first
//! payload looked like a proxy protocol).
//!
//! The bytes serve this classification only: what leaves the monitor is
//! the protocol and the address the request named, never the payload.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use monitor_common::event::{
    FP_HTTP_CONNECT, FP_HTTP_PROXY, FP_PROTO_MASK, FP_SOCKS4, FP_SOCKS4A, FP_SOCKS5,
};

use crate::{escape::escape, event::Endpoint};

/// A proxy protocol, by the `FP_*` code the kernel stored.
pub fn protocol_name(fp: u8) -> Option<&'static str> {
    match fp & FP_PROTO_MASK {
        FP_SOCKS4 => Some("socks4"),
        FP_SOCKS4A => Some("socks4a"),
        FP_SOCKS5 => Some("socks5"),
        FP_HTTP_CONNECT => Some("http_connect"),
        FP_HTTP_PROXY => Some("http_proxy"),
        _ => None,
    }
}

/// Where a proxy request asks to go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Addr(Endpoint),
    /// A host name, escaped for output (it is the client's bytes).
    Host {
        name: String,
        port: u16,
    },
}

impl Target {
    pub fn port(&self) -> u16 {
        match self {
            Target::Addr(e) => e.port,
            Target::Host { port, .. } => *port,
        }
    }

    /// Whether a connection to `remote` is the one this names: the same
    /// address and port, or for a host name (which the proxy resolved out
    /// of sight) the same port.
    pub fn matches(&self, remote: &Endpoint) -> bool {
        match self {
            Target::Addr(e) => e.port == remote.port && same_ip(e.addr, remote.addr),
            Target::Host { port, .. } => *port == remote.port,
        }
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Addr(e) if e.addr.is_ipv6() => write!(f, "[{}]:{}", e.addr, e.port),
            Target::Addr(e) => write!(f, "{}:{}", e.addr, e.port),
            Target::Host { name, port } => write!(f, "{name}:{port}"),
        }
    }
}

fn same_ip(a: IpAddr, b: IpAddr) -> bool {
    let canon = |ip: IpAddr| match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    };
    canon(a) == canon(b)
}

/// A proxy request: its protocol, and the target when the captured bytes
/// name one (a SOCKS5 client that authenticates first, or a host name cut
/// by the capture bound, leaves only the protocol).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub protocol: &'static str,
    pub target: Option<Target>,
}

/// Reads the request in `data`, the first bytes of one direction of a
/// connection whose kernel fingerprint is `fp`.
pub fn parse(fp: u8, data: &[u8]) -> Option<Request> {
    let protocol = protocol_name(fp)?;
    let target = match fp & FP_PROTO_MASK {
        FP_SOCKS4 | FP_SOCKS4A => socks4(data),
        FP_SOCKS5 => socks5(data),
        FP_HTTP_CONNECT => http_connect(data),
        FP_HTTP_PROXY => absolute_form(data),
        _ => None,
    };
    Some(Request { protocol, target })
}

/// `04 CD PORT(2) IP(4) USERID 00 [HOST 00]`; CD 1 connect, 2 bind.
fn socks4(d: &[u8]) -> Option<Target> {
    if d.len() < 9 || d[0] != 4 {
        return None;
    }
    let port = u16::from_be_bytes([d[2], d[3]]);
    let ip = Ipv4Addr::new(d[4], d[5], d[6], d[7]);
    let user_end = 8 + d[8..].iter().position(|&b| b == 0)?;
    if d[4] == 0 && d[5] == 0 && d[6] == 0 && d[7] != 0 {
        // SOCKS4a: the host name follows the user id.
        let rest = &d[user_end + 1..];
        let host = &rest[..rest.iter().position(|&b| b == 0)?];
        return host_target(host, port);
    }
    Some(Target::Addr(Endpoint {
        addr: IpAddr::V4(ip),
        port,
    }))
}

/// Greeting `05 N METHODS...`, then the request `05 CMD 00 ATYP ADDR PORT`.
fn socks5(d: &[u8]) -> Option<Target> {
    if d.len() < 2 || d[0] != 5 {
        return None;
    }
    let req = d.get(2 + d[1] as usize..)?;
    if req.len() < 4 || req[0] != 5 || req[2] != 0 {
        return None;
    }
    let (addr, rest) = match req[3] {
        1 => (
            Some(IpAddr::V4(Ipv4Addr::new(
                *req.get(4)?,
                *req.get(5)?,
                *req.get(6)?,
                *req.get(7)?,
            ))),
            req.get(8..)?,
        ),
        4 => {
            let raw: [u8; 16] = req.get(4..20)?.try_into().ok()?;
            (Some(IpAddr::V6(Ipv6Addr::from(raw))), req.get(20..)?)
        }
        3 => {
            let n = *req.get(4)? as usize;
            let host = req.get(5..5 + n)?;
            let rest = req.get(5 + n..)?;
            let port = u16::from_be_bytes([*rest.first()?, *rest.get(1)?]);
            return host_target(host, port);
        }
        _ => return None,
    };
    let port = u16::from_be_bytes([*rest.first()?, *rest.get(1)?]);
    Some(Target::Addr(Endpoint { addr: addr?, port }))
}

/// `CONNECT host:port HTTP/1.x`.
fn http_connect(d: &[u8]) -> Option<Target> {
    let rest = d.strip_prefix(b"CONNECT ")?;
    let end = rest.iter().position(|&b| b == b' ')?;
    authority(&rest[..end], 443)
}

/// `METHOD http://host[:port]/... HTTP/1.x`.
fn absolute_form(d: &[u8]) -> Option<Target> {
    let sp = d.iter().position(|&b| b == b' ')?;
    let url = d[sp + 1..].strip_prefix(b"http://")?;
    let end = url
        .iter()
        .position(|&b| b == b'/' || b == b' ' || b == b'?')?;
    authority(&url[..end], 80)
}

/// `host`, `host:port`, `[v6]` or `[v6]:port`.
fn authority(a: &[u8], default_port: u16) -> Option<Target> {
    let text = std::str::from_utf8(a).ok()?;
    let (host, port) = if let Some(v6) = text.strip_prefix('[') {
        let close = v6.find(']')?;
        let port = match &v6[close + 1..] {
            "" => default_port,
            p => p.strip_prefix(':')?.parse().ok()?,
        };
        (&v6[..close], port)
    } else {
        match text.rsplit_once(':') {
            Some((h, p)) => (h, p.parse().ok()?),
            None => (text, default_port),
        }
    };
    if host.is_empty() {
        return None;
    }
    match host.parse::<IpAddr>() {
        Ok(addr) => Some(Target::Addr(Endpoint { addr, port })),
        Err(_) => host_target(host.as_bytes(), port),
    }
}

fn host_target(host: &[u8], port: u16) -> Option<Target> {
    if host.is_empty() {
        return None;
    }
    if let Some(addr) = std::str::from_utf8(host)
        .ok()
        .and_then(|h| h.parse::<IpAddr>().ok())
    {
        return Some(Target::Addr(Endpoint { addr, port }));
    }
    Some(Target::Host {
        name: escape(host),
        port,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(s: &str) -> Endpoint {
        let a: std::net::SocketAddr = s.parse().expect("addr");
        Endpoint {
            addr: a.ip(),
            port: a.port(),
        }
    }

    #[test]
    fn socks4_and_4a_name_their_target() {
        let mut d = vec![4, 1, 0x23, 0x28, 198, 51, 100, 20];
        d.extend_from_slice(b"lab\0");
        let r = parse(FP_SOCKS4, &d).expect("socks4");
        assert_eq!(r.protocol, "socks4");
        assert_eq!(r.target, Some(Target::Addr(ep("198.51.100.20:9000"))));
        let mut d = vec![4, 1, 0x01, 0xbb, 0, 0, 0, 1];
        d.extend_from_slice(b"u\0inside.example\0");
        let r = parse(FP_SOCKS4A, &d).expect("socks4a");
        assert_eq!(
            r.target,
            Some(Target::Host {
                name: "inside.example".into(),
                port: 443
            })
        );
        // Cut before the host name ends: the protocol alone.
        assert_eq!(parse(FP_SOCKS4A, &d[..14]).expect("cut").target, None);
    }

    #[test]
    fn socks5_request_after_the_greeting() {
        let mut d = vec![5, 2, 0, 2];
        d.extend_from_slice(&[5, 1, 0, 1, 10, 77, 0, 10, 0, 22]);
        let r = parse(FP_SOCKS5, &d).expect("socks5");
        assert_eq!(r.target, Some(Target::Addr(ep("10.77.0.10:22"))));
        let mut d = vec![5, 1, 0, 5, 1, 0, 3, 4];
        d.extend_from_slice(b"host");
        d.extend_from_slice(&[0, 80]);
        assert_eq!(
            parse(FP_SOCKS5, &d).expect("name").target,
            Some(Target::Host {
                name: "host".into(),
                port: 80
            })
        );
        let mut d = vec![5, 1, 0, 5, 1, 0, 4];
        d.extend_from_slice(&"2001:db8::7".parse::<Ipv6Addr>().expect("v6").octets());
        d.extend_from_slice(&[0x1f, 0x90]);
        assert_eq!(
            parse(FP_SOCKS5, &d).expect("v6").target,
            Some(Target::Addr(ep("[2001:db8::7]:8080")))
        );
        // The greeting alone (the request not captured yet), or an
        // authentication exchange in between: the protocol only.
        assert_eq!(parse(FP_SOCKS5, &[5, 1, 0]).expect("greeting").target, None);
        assert_eq!(
            parse(FP_SOCKS5, &[5, 1, 2, 1, 3, b'b', b'o', b'b'])
                .expect("auth")
                .target,
            None
        );
    }

    #[test]
    fn http_connect_and_absolute_form() {
        let r = parse(
            FP_HTTP_CONNECT,
            b"CONNECT 198.51.100.20:9000 HTTP/1.1\r\nHost: x",
        )
        .expect("c");
        assert_eq!(r.target, Some(Target::Addr(ep("198.51.100.20:9000"))));
        let r = parse(FP_HTTP_CONNECT, b"CONNECT [2001:db8::1]:22 HTTP/1.1\r\n").expect("c6");
        assert_eq!(r.target, Some(Target::Addr(ep("[2001:db8::1]:22"))));
        let r = parse(FP_HTTP_CONNECT, b"CONNECT mail.example:25 HTTP/1.0\r\n").expect("h");
        assert_eq!(
            r.target.as_ref().map(Target::to_string).as_deref(),
            Some("mail.example:25")
        );
        let r = parse(
            FP_HTTP_PROXY,
            b"GET http://10.77.0.10:8080/admin HTTP/1.1\r\n",
        )
        .expect("g");
        assert_eq!(r.protocol, "http_proxy");
        assert_eq!(r.target, Some(Target::Addr(ep("10.77.0.10:8080"))));
        let r = parse(FP_HTTP_PROXY, b"POST http://intranet/login HTTP/1.1\r\n").expect("p");
        assert_eq!(r.target.map(|t| t.port()), Some(80));
        // Garbage after a matching prefix names nothing, and never panics.
        assert_eq!(
            parse(FP_HTTP_CONNECT, b"CONNECT :::: HTTP/1.1")
                .expect("x")
                .target,
            None
        );
        assert_eq!(
            parse(FP_HTTP_PROXY, b"GET http://").expect("y").target,
            None
        );
        assert_eq!(parse(0, b"GET / HTTP/1.1"), None);
    }

    #[test]
    fn targets_match_by_address_or_by_port_for_names() {
        let t = Target::Addr(ep("198.51.100.20:9000"));
        assert!(t.matches(&ep("198.51.100.20:9000")));
        assert!(t.matches(&ep("[::ffff:198.51.100.20]:9000")));
        assert!(!t.matches(&ep("198.51.100.21:9000")));
        let h = Target::Host {
            name: "x".into(),
            port: 443,
        };
        assert!(h.matches(&ep("192.0.2.1:443")) && !h.matches(&ep("192.0.2.1:80")));
    }

    #[test]
    fn any_bytes_parse_without_panicking() {
        for fp in [
            FP_SOCKS4,
            FP_SOCKS4A,
            FP_SOCKS5,
            FP_HTTP_CONNECT,
            FP_HTTP_PROXY,
        ] {
            for len in 0..40 {
                for seed in 0..64u8 {
                    let d: Vec<u8> = (0..len)
                        .map(|i| (i as u8).wrapping_mul(seed) ^ seed)
                        .collect();
                    let _ = parse(fp, &d);
                    let mut p = vec![5, 1, 0, 5, 1, 0, 3];
                    p.extend_from_slice(&d);
                    let _ = parse(fp, &p);
                }
            }
        }
    }
}
