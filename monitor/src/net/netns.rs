//! Every network namespace in use on the host, and the sockets open in
//! each when the monitor starts.
//!
//! A service listening in another namespace (the gateway's data plane
//! namespace, a container's) is as network-facing as one in the monitor's
//! own, so seeding reads them all. Namespaces are found through
//! `/proc/PID/ns/net` (one per distinct inode) and the names bound under
//! `/run/netns` (`ip netns add`), which may hold sockets with no process
//! in the namespace.
//!
//! Each namespace is read with sock_diag from a short-lived thread that
//! entered it (`setns` moves only the calling thread), which needs
//! `CAP_SYS_ADMIN`; without it (the hardened service unit) the sockets are
//! read from `/proc/PID/net/{tcp,tcp6,udp,udp6}` of a process in that
//! namespace, which gives everything but the socket cookie.

use std::{
    collections::BTreeMap,
    fs::{self, File},
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    os::{fd::AsRawFd as _, unix::fs::MetadataExt as _},
    path::{Path, PathBuf},
};

use super::sockdiag::{self, DiagSocket};
use crate::event::{Endpoint, Proto};

/// How the sockets of a namespace were read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// sock_diag, in the namespace: with socket cookies.
    SockDiag,
    /// `/proc/PID/net/*` of a process in the namespace: no socket cookies
    /// (0), so later events of these sockets are not joined to them.
    ProcNet,
}

/// One network namespace in use, and how to reach it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetNs {
    pub inode: u32,
    /// Processes in it, lowest first (at most a few are kept).
    pub pids: Vec<u32>,
    /// A file under /run/netns naming it, if any.
    pub bound: Option<PathBuf>,
}

/// Most member pids kept per namespace: enough to find one still alive.
const PIDS_KEPT: usize = 4;

/// What discovery and reading skipped, for the start-up log line.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Skipped {
    /// /proc entries that vanished or could not be read while scanning.
    pub proc_entries: usize,
    /// Namespaces with processes whose sockets could not be read either way.
    pub namespaces: usize,
    /// Namespaces with no process in them (only bound under /run/netns)
    /// that could not be entered: no process there owns a listener.
    pub empty: usize,
}

/// The sockets of one namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NsSockets {
    pub netns: u32,
    pub source: Source,
    pub sockets: Vec<DiagSocket>,
}

/// Every network namespace in use: those of the processes under
/// `proc_root` and those bound under `run_netns`, by inode.
pub fn discover(proc_root: &Path, run_netns: &Path, skipped: &mut Skipped) -> Vec<NetNs> {
    let mut found: BTreeMap<u32, NetNs> = BTreeMap::new();
    match fs::read_dir(proc_root) {
        Ok(dir) => {
            let mut pids: Vec<u32> = dir
                .flatten()
                .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse().ok()))
                .collect();
            pids.sort_unstable();
            for pid in pids {
                // Kernel threads and vanished processes have no readable
                // link; both are fine to skip.
                let Ok(meta) = fs::metadata(proc_root.join(format!("{pid}/ns/net"))) else {
                    skipped.proc_entries += 1;
                    continue;
                };
                let ns = found.entry(meta.ino() as u32).or_insert_with(|| NetNs {
                    inode: meta.ino() as u32,
                    pids: Vec::new(),
                    bound: None,
                });
                if ns.pids.len() < PIDS_KEPT {
                    ns.pids.push(pid);
                }
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, path = %proc_root.display(), "cannot list processes; network namespaces are not discovered");
        }
    }
    if let Ok(dir) = fs::read_dir(run_netns) {
        for e in dir.flatten() {
            let path = e.path();
            let Ok(meta) = fs::metadata(&path) else {
                skipped.proc_entries += 1;
                continue;
            };
            let inode = meta.ino() as u32;
            let ns = found.entry(inode).or_insert_with(|| NetNs {
                inode,
                pids: Vec::new(),
                bound: None,
            });
            ns.bound.get_or_insert(path);
        }
    }
    found.into_values().collect()
}

/// The sockets open at start in every namespace in use, and what could not
/// be read.
#[derive(Debug, Default)]
pub struct Found {
    pub namespaces: Vec<NsSockets>,
    pub skipped: Skipped,
}

/// The sockets of every namespace in use; the monitor's own is read in
/// place. A namespace that cannot be read either way is counted and logged.
///
/// Entering a namespace needs `CAP_SYS_ADMIN`, which the daemon drops once
/// its probes are attached: this runs before, on the main thread, and the
/// threads it starts have ended when it returns.
pub fn sockets_everywhere(proc_root: &Path, run_netns: &Path) -> Found {
    let mut skipped = Skipped::default();
    let own = fs::metadata("/proc/thread-self/ns/net").map_or(0, |m| m.ino() as u32);
    let mut out = Vec::new();
    for ns in discover(proc_root, run_netns, &mut skipped) {
        let read = if ns.inode == own {
            sockdiag::dump_all().map(|s| (Source::SockDiag, s))
        } else {
            read_namespace(proc_root, &ns)
        };
        match read {
            Ok((source, sockets)) => out.push(NsSockets {
                netns: ns.inode,
                source,
                sockets,
            }),
            Err(e) if ns.pids.is_empty() => {
                skipped.empty += 1;
                tracing::debug!(netns = ns.inode, error = %e, "a network namespace with no process in it could not be entered");
            }
            Err(e) => {
                skipped.namespaces += 1;
                tracing::warn!(netns = ns.inode, error = %e, "sockets of a network namespace not read; its listeners and connections open at start are not seeded");
            }
        }
    }
    Found {
        namespaces: out,
        skipped,
    }
}

/// Reads another namespace: sock_diag from inside it, else /proc/PID/net.
fn read_namespace(proc_root: &Path, ns: &NetNs) -> io::Result<(Source, Vec<DiagSocket>)> {
    let entries = ns.bound.iter().cloned().chain(
        ns.pids
            .iter()
            .map(|p| proc_root.join(format!("{p}/ns/net"))),
    );
    let mut last = io::Error::new(io::ErrorKind::NotFound, "no way into the namespace");
    for path in entries {
        match dump_inside(&path, ns.inode) {
            Ok(s) => return Ok((Source::SockDiag, s)),
            Err(e) => last = e,
        }
    }
    for pid in &ns.pids {
        match proc_net(&proc_root.join(pid.to_string()), ns.inode) {
            Ok(s) => {
                tracing::debug!(netns = ns.inode, error = %last, "sock_diag unavailable in this namespace; read /proc/PID/net without socket cookies");
                return Ok((Source::ProcNet, s));
            }
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// sock_diag from a thread that entered the namespace at `path` (and ends
/// there, so no other thread of the monitor ever leaves its own).
fn dump_inside(path: &Path, inode: u32) -> io::Result<Vec<DiagSocket>> {
    let ns = File::open(path)?;
    // The file may name another namespace by now (a pid reused).
    if ns.metadata()?.ino() as u32 != inode {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            "the process left the namespace",
        ));
    }
    std::thread::Builder::new()
        .name("netns-seed".into())
        .spawn(move || {
            // SAFETY: a namespace fd we own and a namespace type constant.
            if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return Err(io::Error::last_os_error());
            }
            sockdiag::dump_all()
        })?
        .join()
        .map_err(|_| io::Error::other("the namespace reader panicked"))?
}

/// The TCP and UDP sockets of the namespace process directory `dir` (such
/// as `/proc/1234`) is in, from its `net/{tcp,tcp6,udp,udp6}`; checked
/// to be namespace `inode`. Socket cookies are 0 (not shown there).
pub fn proc_net(dir: &Path, inode: u32) -> io::Result<Vec<DiagSocket>> {
    if fs::metadata(dir.join("ns/net"))?.ino() as u32 != inode {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            "the process left the namespace",
        ));
    }
    let mut out = Vec::new();
    for (file, proto) in [
        ("tcp", Proto::Tcp),
        ("tcp6", Proto::Tcp),
        ("udp", Proto::Udp),
        ("udp6", Proto::Udp),
    ] {
        match fs::read_to_string(dir.join("net").join(file)) {
            Ok(text) => out.extend(parse_proc_net(proto, &text)),
            // IPv6 disabled: no tcp6/udp6.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

/// Parses a `/proc/net/{tcp,udp}{,6}` table; malformed lines are skipped.
pub fn parse_proc_net(proto: Proto, text: &str) -> Vec<DiagSocket> {
    text.lines()
        .skip(1)
        .filter_map(|l| parse_line(proto, l))
        .collect()
}

fn parse_line(proto: Proto, line: &str) -> Option<DiagSocket> {
    let f: Vec<&str> = line.split_ascii_whitespace().collect();
    // sl local rem st tx:rx tr:when retrnsmt uid timeout inode
    if f.len() < 10 {
        return None;
    }
    Some(DiagSocket {
        proto,
        state: u8::from_str_radix(f[3], 16).ok()?,
        local: endpoint(f[1])?,
        remote: endpoint(f[2])?,
        inode: f[9].parse().ok()?,
        cookie: 0,
        uid: f[7].parse().ok()?,
    })
}

/// `ADDR:PORT` as the kernel prints it: the address as 32-bit words in
/// the machine's byte order (`%08X` of each `__be32`), the port in hex.
fn endpoint(s: &str) -> Option<Endpoint> {
    let (addr, port) = s.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let word = |w: &str| u32::from_str_radix(w, 16).ok().map(u32::to_ne_bytes);
    let addr = match addr.len() {
        8 => IpAddr::V4(Ipv4Addr::from(word(addr)?)),
        32 => {
            let mut b = [0u8; 16];
            for i in 0..4 {
                b[i * 4..i * 4 + 4].copy_from_slice(&word(addr.get(i * 8..i * 8 + 8)?)?);
            }
            let v6 = Ipv6Addr::from(b);
            v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4)
        }
        _ => return None,
    };
    Some(Endpoint { addr, port })
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;

    use super::*;

    #[test]
    fn parses_proc_net_tables() {
        // Little-endian words, as an x86 or arm64 kernel prints them.
        let le = cfg!(target_endian = "little");
        let v4 = if le { "0100007F" } else { "7F000001" };
        let text = format!(
            "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   0: {v4}:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000   33        0 4242 1 0000000000000000 100 0 0 10 0\n   1: garbage\n"
        );
        let s = parse_proc_net(Proto::Tcp, &text);
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].state, 10);
        assert_eq!(s[0].local.addr, IpAddr::V4(Ipv4Addr::LOCALHOST));
        assert_eq!(s[0].local.port, 8080);
        assert_eq!(s[0].remote.port, 0);
        assert_eq!((s[0].inode, s[0].uid, s[0].cookie), (4242, 33, 0));
        let v6 = if le {
            "00000000000000000000000001000000"
        } else {
            "00000000000000000000000000000001"
        };
        let text = format!(
            "header\n 0: {v6}:0050 00000000000000000000000000000000:0000 07 0:0 0:0 0 0 0 7 2 x\n"
        );
        let s = parse_proc_net(Proto::Udp, &text);
        assert_eq!(s[0].local.addr, IpAddr::V6(Ipv6Addr::LOCALHOST));
        assert_eq!((s[0].local.port, s[0].state, s[0].inode), (80, 7, 7));
    }

    /// The /proc route and sock_diag agree on this process's own listener.
    #[test]
    fn proc_net_finds_own_listener_like_sock_diag() {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = l.local_addr().expect("addr").port();
        let me = Path::new("/proc/self");
        let inode = fs::metadata(me.join("ns/net")).expect("netns").ino() as u32;
        let from_proc = proc_net(me, inode).expect("proc net");
        let s = from_proc
            .iter()
            .find(|s| s.proto == Proto::Tcp && s.state == 10 && s.local.port == port)
            .expect("listener in /proc/self/net/tcp");
        let owners = sockdiag::socket_owners(Path::new("/proc"));
        assert_eq!(owners.get(&s.inode), Some(&std::process::id()));
        assert!(
            proc_net(me, inode.wrapping_add(1)).is_err(),
            "wrong namespace"
        );
    }

    #[test]
    fn discovers_own_namespace_with_this_process() {
        let mut skipped = Skipped::default();
        let all = discover(Path::new("/proc"), Path::new("/nonexistent"), &mut skipped);
        let inode = fs::metadata("/proc/self/ns/net").expect("netns").ino() as u32;
        let own = all
            .iter()
            .find(|n| n.inode == inode)
            .expect("own namespace");
        assert!(!own.pids.is_empty());
        assert!(own.pids.len() <= PIDS_KEPT);
        let mut seen = std::collections::HashSet::new();
        assert!(all.iter().all(|n| seen.insert(n.inode)), "one entry each");
    }
}
