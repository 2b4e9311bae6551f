//! The detector on synthetic flows, through the flow-map trait: kernel
//! records go through the tracker as the daemon applies them, the kernel's
//! counters are a `MemFlows`.

use std::{sync::Arc, time::Duration};

use monitor_common::event::{
    EventHeader, FlowStats, IoKey, IoStats, NetEvent, ProxyHead, Trigger, UnixLinks, FP_SOCKS5,
    KIND_NET_ACCEPT, KIND_NET_CLOSE, KIND_NET_CONNECT, KIND_NET_CONNECT_RESULT, KIND_NET_UDP_FLOW,
    PROTO_TCP, PROTO_UDP,
};

use super::*;
use crate::{
    clock::BootClock,
    event::{Endpoint, Proto},
    net::{
        ip_to_kernel,
        sides::{SideMap, Subnet},
        MemFlows, NetSettings,
    },
    process::{Pipes, Process},
};

const MS: u64 = 1_000_000;
const SEC: u64 = 1_000 * MS;

fn ep(s: &str) -> Endpoint {
    let a: std::net::SocketAddr = s.parse().expect("addr");
    Endpoint {
        addr: a.ip(),
        port: a.port(),
    }
}

struct Lab {
    net: NetTracker,
    map: MemFlows,
    procs: ProcessTable,
    clock: BootClock,
    det: RelayDetector,
    settings: RelaySettings,
    sides: SideMap,
    found: Vec<RelayRecord>,
}

/// One leg's traffic: bytes each way, and when (ms) the first packet, the
/// first byte in and the first byte out went by.
#[derive(Clone, Copy)]
struct Traffic {
    bytes_in: u64,
    bytes_out: u64,
    first: u64,
    first_in: u64,
    first_out: u64,
}

fn traffic(bytes_in: u64, bytes_out: u64, first: u64, first_in: u64, first_out: u64) -> Traffic {
    Traffic {
        bytes_in,
        bytes_out,
        first,
        first_in,
        first_out,
    }
}

impl Lab {
    fn new() -> Self {
        Self {
            net: NetTracker::new(
                1000,
                NetSettings {
                    update_interval_ns: 30 * SEC,
                    udp_idle_ns: 60 * SEC,
                    tcp_idle_ns: 3600 * SEC,
                },
                crate::net::NetMetrics::register(&crate::metrics::registry()),
            ),
            map: MemFlows::default(),
            procs: ProcessTable::new(100, Duration::from_secs(60)),
            clock: BootClock::new(),
            det: RelayDetector::default(),
            settings: RelaySettings {
                volume_bytes: 16384,
                active_ns: 30 * SEC,
                interactive_samples: 3,
                allowed: Vec::new(),
            },
            sides: SideMap {
                netns: 1,
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
                ],
                local: vec![
                    "192.0.2.66".parse().expect("ip"),
                    "10.77.0.1".parse().expect("ip"),
                ],
                default: Some(Side::Wan),
            },
            found: Vec::new(),
        }
    }

    fn process(&mut self, pid: u32, ppid: u32, exe: &str, start_ms: u64, pipes: Pipes) {
        self.procs.insert(Process {
            pid,
            ppid,
            birth_ppid: ppid,
            start_boot_ns: Some(start_ms * MS),
            uid: 0,
            euid: 0,
            gid: 0,
            egid: 0,
            auid: None,
            comm: exe
                .rsplit('/')
                .next()
                .unwrap_or(exe)
                .chars()
                .take(15)
                .collect(),
            exe: Some(Arc::from(exe)),
            exe_deleted: false,
            argv: Arc::from(vec![exe.to_owned()]),
            cwd: None,
            stdio: [crate::event::FdKind::None; 3],
            pipes,
            seeded: false,
            namespaces: Default::default(),
            cgroup: None,
        });
    }

    fn record(
        &self,
        kind: u32,
        cookie: u64,
        pid: u32,
        local: &str,
        remote: &str,
        ms: u64,
    ) -> NetEvent {
        let (l, r) = (ep(local), ep(remote));
        NetEvent {
            header: EventHeader {
                kind,
                size: size_of::<NetEvent>() as u32,
                ts_boot_ns: ms * MS,
                pid,
                tid: pid,
            },
            cookie,
            netns: 1,
            proto: PROTO_TCP,
            local_addr: ip_to_kernel(l.addr),
            local_port: l.port,
            remote_addr: ip_to_kernel(r.addr),
            remote_port: r.port,
            ..Default::default()
        }
    }

    /// Applies kernel records as the daemon does, then the detector.
    fn apply(&mut self, records: &[NetEvent], ms: u64) {
        let mut events = Vec::new();
        for r in records {
            events.extend(self.net.apply(r, &self.procs, &self.clock, &mut self.map));
        }
        let ctx = Context {
            net: &self.net,
            map: &self.map,
            procs: &self.procs,
            clock: &self.clock,
            sides: Some(&self.sides),
        };
        let found = self.det.observe(&events, &ctx, &self.settings, ms * MS);
        self.found.extend(found);
    }

    fn tick(&mut self, ms: u64) {
        let ctx = Context {
            net: &self.net,
            map: &self.map,
            procs: &self.procs,
            clock: &self.clock,
            sides: Some(&self.sides),
        };
        let found = self.det.tick(&ctx, &self.settings, ms * MS);
        self.found.extend(found);
    }

    fn accept(
        &mut self,
        cookie: u64,
        pid: u32,
        local: &str,
        remote: &str,
        ms: u64,
        trigger: Trigger,
    ) {
        let mut r = self.record(KIND_NET_ACCEPT, cookie, pid, local, remote, ms);
        r.trigger = trigger;
        self.apply(&[r], ms);
    }

    fn connect(
        &mut self,
        cookie: u64,
        pid: u32,
        local: &str,
        remote: &str,
        ms: u64,
        trigger: Trigger,
    ) {
        let mut c = self.record(KIND_NET_CONNECT, cookie, pid, local, remote, ms);
        c.trigger = trigger;
        let mut r = self.record(KIND_NET_CONNECT_RESULT, cookie, pid, local, remote, ms);
        r.new_state = 1;
        self.apply(&[c, r], ms);
    }

    fn udp_flow(
        &mut self,
        cookie: u64,
        pid: u32,
        local: &str,
        remote: &str,
        ms: u64,
        outbound: bool,
    ) {
        let mut r = self.record(KIND_NET_UDP_FLOW, cookie, pid, local, remote, ms);
        r.proto = PROTO_UDP;
        r.new_state = u8::from(outbound);
        self.apply(&[r], ms);
    }

    /// Sets a flow's kernel counters.
    fn count(&mut self, cookie: u64, proto: Proto, remote: &str, t: Traffic) {
        let id = FlowId {
            socket: cookie,
            proto,
            remote: ep(remote),
        };
        self.map.flows.insert(
            flow_key(&id),
            FlowStats {
                first_ns: t.first * MS,
                last_ns: (t.first_in.max(t.first_out) + 5) * MS,
                bytes_in: t.bytes_in,
                bytes_out: t.bytes_out,
                first_in_ns: t.first_in * MS,
                first_out_ns: t.first_out * MS,
                ..Default::default()
            },
        );
    }

    fn close(&mut self, cookie: u64, pid: u32, local: &str, remote: &str, ms: u64, t: Traffic) {
        let mut r = self.record(KIND_NET_CLOSE, cookie, pid, local, remote, ms);
        r.old_state = 1;
        r.new_state = 7;
        r.first_ns = t.first * MS;
        r.bytes_in = t.bytes_in;
        r.bytes_out = t.bytes_out;
        r.first_in_ns = t.first_in * MS;
        r.first_out_ns = t.first_out * MS;
        let id = FlowId {
            socket: cookie,
            proto: Proto::Tcp,
            remote: ep(remote),
        };
        self.map.flows.remove(&flow_key(&id));
        self.apply(&[r], ms);
    }
}

const NONE: Trigger = Trigger {
    cookie: 0,
    bytes_received: 0,
    bytes_sent: 0,
};

/// A forwarder at pid 10 on 192.0.2.66:8443: accepts a wan client at 0 ms
/// and dials the LAN host at 1 ms.
fn forward(lab: &mut Lab) {
    lab.process(10, 1, "/var/tmp/.x/kworkerd", 0, Pipes::default());
    lab.accept(1, 10, "192.0.2.66:8443", "203.0.113.10:40000", 0, NONE);
    lab.connect(2, 10, "10.77.0.1:50000", "10.77.0.10:22", 1, NONE);
}

#[test]
fn a_short_port_forward_is_a_relay_at_its_first_exchange() {
    let mut lab = Lab::new();
    forward(&mut lab);
    // Decoys: idle sockets of the same process, and unrelated traffic of
    // another process in the same moments.
    for k in 0..20 {
        lab.accept(
            100 + k,
            10,
            "192.0.2.66:8443",
            &format!("203.0.113.{}:1000", 20 + k),
            0,
            NONE,
        );
    }
    lab.process(20, 1, "/usr/bin/curl", 0, Pipes::default());
    lab.connect(200, 20, "10.77.0.1:41000", "10.77.0.10:80", 1, NONE);
    lab.count(200, Proto::Tcp, "10.77.0.10:80", traffic(300, 78, 1, 8, 3));
    lab.tick(2);
    assert!(lab.found.is_empty(), "nothing moved yet: {:?}", lab.found);
    // 78 bytes of request in at 2 ms, out at 3; 300 of answer in at 5,
    // out at 6.
    lab.count(
        1,
        Proto::Tcp,
        "203.0.113.10:40000",
        traffic(78, 300, 0, 2, 6),
    );
    lab.count(2, Proto::Tcp, "10.77.0.10:22", traffic(300, 78, 1, 5, 3));
    lab.tick(250);
    assert_eq!(lab.found.len(), 1, "{:?}", lab.found);
    let r = &lab.found[0];
    assert_eq!(r.method, Method::Exchange);
    assert_eq!(r.mode, "inbound+outbound");
    assert_eq!(r.path, "wan->lan");
    assert_eq!(r.via, Via::Process);
    assert_eq!(r.process.as_ref().map(|p| p.pid), Some(10));
    assert_eq!((r.legs[0].socket, r.legs[1].socket), (1, 2));
    assert!(!r.allowed);
    // Reported once.
    lab.tick(500);
    assert_eq!(lab.found.len(), 1);
}

#[test]
fn a_relay_that_ends_between_ticks_is_judged_at_its_close() {
    let mut lab = Lab::new();
    forward(&mut lab);
    let (a, b) = (
        traffic(65536, 65536, 0, 2, 4),
        traffic(65536, 65536, 1, 3, 2),
    );
    lab.close(2, 10, "10.77.0.1:50000", "10.77.0.10:22", 5, b);
    assert!(lab.found.is_empty());
    lab.close(1, 10, "192.0.2.66:8443", "203.0.113.10:40000", 6, a);
    assert_eq!(lab.found.len(), 1);
    assert_eq!(lab.found[0].method, Method::Exchange);
    assert_eq!(lab.found[0].legs[0].bytes_received, 65536);
}

#[test]
fn a_proxy_request_naming_the_dialled_address_is_a_relay_before_any_payload() {
    let mut lab = Lab::new();
    lab.process(10, 1, "/usr/sbin/sysupdated", 0, Pipes::default());
    lab.accept(1, 10, "192.0.2.66:1080", "203.0.113.10:40000", 0, NONE);
    // The kernel fingerprinted the client's first bytes and kept them.
    let mut stats = FlowStats {
        first_ns: 0,
        first_in_ns: 2 * MS,
        fp_in: FP_SOCKS5,
        bytes_in: 13,
        bytes_out: 2,
        ..Default::default()
    };
    let id = FlowId {
        socket: 1,
        proto: Proto::Tcp,
        remote: ep("203.0.113.10:40000"),
    };
    lab.map.flows.insert(flow_key(&id), stats);
    let mut head = ProxyHead::default();
    let req = [5u8, 1, 0, 5, 1, 0, 1, 10, 77, 0, 10, 0, 22];
    head.data_in[..req.len()].copy_from_slice(&req);
    head.len_in = req.len() as u16;
    lab.map.heads.insert(flow_key(&id), head);
    let trigger = Trigger {
        cookie: 1,
        bytes_received: 13,
        bytes_sent: 2,
    };
    lab.connect(2, 10, "10.77.0.1:50000", "10.77.0.10:22", 3, trigger);
    assert_eq!(lab.found.len(), 1, "at the connect");
    let r = &lab.found[0];
    assert_eq!(r.method, Method::Fingerprint);
    let proxy = r.proxy.as_ref().expect("proxy");
    assert_eq!(proxy.protocol, "socks5");
    assert_eq!(proxy.target.as_deref(), Some("10.77.0.10:22"));
    assert_eq!(r.legs[0].fingerprint.as_deref(), Some("socks5"));

    // The same proxy asked for one place and dialling another is not
    // paired by the request; its bytes would have to match instead.
    let mut lab2 = Lab::new();
    lab2.process(10, 1, "/usr/sbin/sysupdated", 0, Pipes::default());
    lab2.accept(1, 10, "192.0.2.66:1080", "203.0.113.10:40000", 0, NONE);
    stats.bytes_in = 13;
    lab2.map.flows.insert(flow_key(&id), stats);
    lab2.map.heads.insert(flow_key(&id), head);
    lab2.connect(2, 10, "10.77.0.1:50000", "10.77.0.11:22", 3, trigger);
    assert!(lab2.found.is_empty());
}

#[test]
fn a_web_app_querying_its_database_is_not_a_relay() {
    let mut lab = Lab::new();
    lab.process(10, 1, "/usr/sbin/php-fpm8.2", 0, Pipes::default());
    lab.accept(1, 10, "192.0.2.66:80", "203.0.113.10:40000", 0, NONE);
    lab.count(
        1,
        Proto::Tcp,
        "203.0.113.10:40000",
        traffic(400, 0, 0, 1, 0),
    );
    let trigger = Trigger {
        cookie: 1,
        bytes_received: 400,
        bytes_sent: 0,
    };
    lab.connect(2, 10, "10.77.0.1:50000", "10.77.0.10:3306", 2, trigger);
    lab.count(
        2,
        Proto::Tcp,
        "10.77.0.10:3306",
        traffic(2000, 120, 2, 6, 3),
    );
    lab.count(
        1,
        Proto::Tcp,
        "203.0.113.10:40000",
        traffic(400, 5000, 0, 1, 8),
    );
    for t in [250, 500, 750] {
        lab.tick(t);
    }
    lab.close(
        2,
        10,
        "10.77.0.1:50000",
        "10.77.0.10:3306",
        800,
        traffic(2000, 120, 2, 6, 3),
    );
    lab.close(
        1,
        10,
        "192.0.2.66:80",
        "203.0.113.10:40000",
        801,
        traffic(400, 5000, 0, 1, 8),
    );
    assert!(lab.found.is_empty(), "{:?}", lab.found);
}

#[test]
fn legs_in_two_processes_joined_by_a_pipe_are_one_relay() {
    let mut lab = Lab::new();
    // `nc -l 8000 <fifo | nc host 22 >fifo`: the dialler starts first.
    lab.process(
        10,
        5,
        "/usr/bin/busybox",
        0,
        Pipes {
            stdin: 900,
            stdout: 901,
        },
    );
    lab.process(
        11,
        5,
        "/usr/bin/busybox",
        0,
        Pipes {
            stdin: 901,
            stdout: 900,
        },
    );
    lab.connect(2, 11, "10.77.0.1:50000", "10.77.0.10:22", 1, NONE);
    lab.count(
        2,
        Proto::Tcp,
        "10.77.0.10:22",
        traffic(300, 78, 1, 5005, 5003),
    );
    // The client comes much later.
    lab.accept(1, 10, "192.0.2.66:8000", "203.0.113.10:40000", 5000, NONE);
    lab.count(
        1,
        Proto::Tcp,
        "203.0.113.10:40000",
        traffic(78, 300, 5000, 5002, 5006),
    );
    lab.tick(5250);
    assert_eq!(lab.found.len(), 1, "{:?}", lab.found);
    assert_eq!(lab.found[0].via, Via::Pipe);

    // The same two processes without the pipe between them: unrelated.
    let mut lab = Lab::new();
    lab.process(
        10,
        5,
        "/usr/bin/busybox",
        0,
        Pipes {
            stdin: 900,
            stdout: 901,
        },
    );
    lab.process(
        11,
        5,
        "/usr/bin/busybox",
        0,
        Pipes {
            stdin: 902,
            stdout: 903,
        },
    );
    lab.connect(2, 11, "10.77.0.1:50000", "10.77.0.10:22", 1, NONE);
    lab.count(
        2,
        Proto::Tcp,
        "10.77.0.10:22",
        traffic(300, 78, 1, 5005, 5003),
    );
    lab.accept(1, 10, "192.0.2.66:8000", "203.0.113.10:40000", 5000, NONE);
    lab.count(
        1,
        Proto::Tcp,
        "203.0.113.10:40000",
        traffic(78, 300, 5000, 5002, 5006),
    );
    lab.tick(5250);
    assert!(lab.found.is_empty());
}

/// Two processes: pid 10 accepts a wan client at 0 ms, pid 20 (a sibling,
/// not its child) dials the LAN host at 1 ms; 78 bytes in, 300 back,
/// passed between them. `links`: each process's unix connections.
fn split_forward(lab: &mut Lab, links: [(u32, u64); 2]) {
    lab.process(10, 5, "/usr/bin/socat", 0, Pipes::default());
    lab.process(20, 6, "/opt/.cache/upd", 0, Pipes::default());
    for (pid, id) in links {
        let mut l = UnixLinks::default();
        l.ids[1] = id;
        lab.map.unix.insert(pid, l);
    }
    lab.accept(1, 10, "192.0.2.66:8000", "203.0.113.10:40000", 0, NONE);
    lab.connect(2, 20, "10.77.0.1:50000", "10.77.0.10:22", 1, NONE);
    lab.count(
        1,
        Proto::Tcp,
        "203.0.113.10:40000",
        traffic(78, 300, 0, 2, 6),
    );
    lab.count(2, Proto::Tcp, "10.77.0.10:22", traffic(300, 78, 1, 5, 3));
}

#[test]
fn legs_in_two_processes_joined_by_a_unix_socket_are_one_relay() {
    let mut lab = Lab::new();
    split_forward(&mut lab, [(10, 0xabc1), (20, 0xabc1)]);
    // A decoy: a third process with connections of its own and another
    // unix connection, busy at the same time.
    lab.process(30, 1, "/usr/sbin/nginx", 0, Pipes::default());
    let mut l = UnixLinks::default();
    l.ids[0] = 0x5151;
    lab.map.unix.insert(30, l);
    lab.accept(3, 30, "192.0.2.66:443", "203.0.113.20:41000", 0, NONE);
    lab.count(
        3,
        Proto::Tcp,
        "203.0.113.20:41000",
        traffic(300, 78, 0, 2, 6),
    );
    lab.tick(250);
    assert_eq!(lab.found.len(), 1, "{:?}", lab.found);
    let r = &lab.found[0];
    assert_eq!(r.via, Via::Unix);
    assert_eq!(r.method, Method::Exchange);
    assert_eq!((r.legs[0].socket, r.legs[1].socket), (1, 2));
    // Reported once.
    lab.tick(500);
    assert_eq!(lab.found.len(), 1);
}

#[test]
fn a_forking_server_joined_through_its_child() {
    // `socat TCP-LISTEN:...,fork UNIX-CONNECT:...`: the listener (10)
    // accepts, its child (11) writes to the unix socket; the dialler (20)
    // reads it.
    let mut lab = Lab::new();
    lab.process(10, 5, "/usr/bin/socat", 0, Pipes::default());
    lab.process(20, 6, "/usr/bin/socat", 0, Pipes::default());
    lab.accept(1, 10, "192.0.2.66:8000", "203.0.113.10:40000", 0, NONE);
    let fork = Event::Fork(crate::event::ForkRecord {
        ts: String::new(),
        task: crate::event::Task {
            pid: 11,
            tid: 11,
            ppid: 10,
            uid: 0,
            euid: 0,
            gid: 0,
            egid: 0,
            auid: None,
            comm: "socat".into(),
            cgroup_id: 1,
            namespaces: Default::default(),
            cgroup: None,
            container_id: None,
        },
        exe: None,
        loginuid_set_by: None,
    });
    let ctx = Context {
        net: &lab.net,
        map: &lab.map,
        procs: &lab.procs,
        clock: &lab.clock,
        sides: Some(&lab.sides),
    };
    let found = lab.det.observe(&[fork], &ctx, &lab.settings, MS);
    assert!(found.is_empty());
    lab.connect(2, 20, "10.77.0.1:50000", "10.77.0.10:22", 1, NONE);
    lab.count(
        1,
        Proto::Tcp,
        "203.0.113.10:40000",
        traffic(78, 300, 0, 2, 6),
    );
    lab.count(2, Proto::Tcp, "10.77.0.10:22", traffic(300, 78, 1, 5, 3));
    let mut l = UnixLinks::default();
    l.ids[2] = 0x77;
    lab.map.unix.insert(11, l);
    lab.map.unix.insert(20, l);
    lab.tick(250);
    assert_eq!(lab.found.len(), 1, "{:?}", lab.found);
    assert_eq!(lab.found[0].via, Via::Unix);
}

#[test]
fn processes_with_unrelated_unix_connections_are_not_joined() {
    // Both talk over unix sockets (to a logger, say), but not to each
    // other: the same bytes by chance make no relay.
    let mut lab = Lab::new();
    split_forward(&mut lab, [(10, 0xabc1), (20, 0xabc2)]);
    lab.tick(250);
    assert!(lab.found.is_empty(), "{:?}", lab.found);
    // No unix connection at all.
    let mut lab = Lab::new();
    split_forward(&mut lab, [(99, 1), (98, 1)]);
    lab.tick(250);
    assert!(lab.found.is_empty(), "{:?}", lab.found);
}

#[test]
fn a_unix_joined_pair_far_apart_in_time_is_not_paired() {
    // The dialler's connection came 5 s after the other: not its relay.
    let mut lab = Lab::new();
    lab.process(10, 5, "/usr/bin/socat", 0, Pipes::default());
    lab.process(20, 6, "/usr/bin/socat", 0, Pipes::default());
    for pid in [10, 20] {
        let mut l = UnixLinks::default();
        l.ids[0] = 7;
        lab.map.unix.insert(pid, l);
    }
    lab.accept(1, 10, "192.0.2.66:8000", "203.0.113.10:40000", 0, NONE);
    lab.count(
        1,
        Proto::Tcp,
        "203.0.113.10:40000",
        traffic(78, 300, 0, 2, 5006),
    );
    lab.connect(2, 20, "10.77.0.1:50000", "10.77.0.10:22", 5000, NONE);
    lab.count(
        2,
        Proto::Tcp,
        "10.77.0.10:22",
        traffic(300, 78, 5000, 5005, 5003),
    );
    lab.tick(5250);
    assert!(lab.found.is_empty(), "{:?}", lab.found);
}

#[test]
fn a_reverse_relay_pairs_two_outbound_legs_by_its_trigger() {
    let mut lab = Lab::new();
    lab.process(10, 1, "/dev/shm/agent", 0, Pipes::default());
    // Dials the operator, and an hour later, after reading a 9-byte
    // request on that connection, the LAN host.
    lab.connect(1, 10, "192.0.2.66:50000", "203.0.113.10:443", 0, NONE);
    let t0 = 3_600_000;
    let trigger = Trigger {
        cookie: 1,
        bytes_received: 9,
        bytes_sent: 0,
    };
    lab.connect(2, 10, "10.77.0.1:50001", "10.77.0.10:445", t0, trigger);
    lab.count(
        1,
        Proto::Tcp,
        "203.0.113.10:443",
        traffic(9 + 78, 300, 0, t0 - 1, t0 + 6),
    );
    lab.count(
        2,
        Proto::Tcp,
        "10.77.0.10:445",
        traffic(300, 78, t0, t0 + 5, t0 + 3),
    );
    lab.tick(t0 + 250);
    assert_eq!(lab.found.len(), 1, "{:?}", lab.found);
    let r = &lab.found[0];
    assert_eq!(r.mode, "outbound+outbound");
    assert_eq!(r.path, "wan->lan");
}

#[test]
fn a_session_carrying_a_forward_inside_it_is_a_tunnel() {
    let mut lab = Lab::new();
    lab.process(10, 1, "/usr/sbin/sshd", 0, Pipes::default());
    lab.accept(1, 10, "192.0.2.66:22", "203.0.113.10:40000", 0, NONE);
    let trigger = Trigger {
        cookie: 1,
        bytes_received: 3000,
        bytes_sent: 2900,
    };
    lab.connect(2, 10, "10.77.0.1:50000", "10.77.0.10:80", 5000, trigger);
    let b = traffic(300, 78, 5000, 5005, 5003);
    lab.count(2, Proto::Tcp, "10.77.0.10:80", b);
    lab.count(
        1,
        Proto::Tcp,
        "203.0.113.10:40000",
        traffic(3300, 3500, 0, 1, 1),
    );
    // Over the forward's life the session moved the forward's bytes and
    // their framing, each way.
    let key = IoKey {
        tgid: 10,
        _pad: 0,
        cookie: 1,
    };
    lab.map.io.insert(
        key,
        IoStats {
            first_ns: 0,
            last_ns: 5010 * MS,
            bytes_received: 3000 + 78 + 150,
            bytes_sent: 2900 + 300 + 170,
        },
    );
    lab.close(2, 10, "10.77.0.1:50000", "10.77.0.10:80", 5010, b);
    assert_eq!(lab.found.len(), 1, "{:?}", lab.found);
    assert_eq!(lab.found[0].method, Method::Tunnel);

    // An admin's busy session while a PAM lookup dials out: the session
    // did not carry the lookup.
    let mut lab = Lab::new();
    lab.process(10, 1, "/usr/sbin/sshd", 0, Pipes::default());
    lab.accept(1, 10, "192.0.2.66:22", "203.0.113.10:40000", 0, NONE);
    lab.connect(2, 10, "10.77.0.1:50000", "10.77.0.10:389", 5000, trigger);
    lab.map.io.insert(
        key,
        IoStats {
            first_ns: 0,
            last_ns: 5010 * MS,
            bytes_received: 3000 + 20,
            bytes_sent: 2900 + 60_000,
        },
    );
    lab.close(2, 10, "10.77.0.1:50000", "10.77.0.10:389", 5010, b);
    assert!(lab.found.is_empty(), "{:?}", lab.found);
}

#[test]
fn a_declared_proxy_is_reported_allowed() {
    let mut lab = Lab::new();
    lab.settings.allowed = vec![AllowedProxy {
        exe: "/var/tmp/.x/kworkerd".into(),
        ports: vec![8443],
    }];
    forward(&mut lab);
    lab.count(
        1,
        Proto::Tcp,
        "203.0.113.10:40000",
        traffic(78, 300, 0, 2, 6),
    );
    lab.count(2, Proto::Tcp, "10.77.0.10:22", traffic(300, 78, 1, 5, 3));
    lab.tick(250);
    assert_eq!(lab.found.len(), 1);
    assert!(lab.found[0].allowed);
    // Declared for another port: not allowed.
    let mut lab = Lab::new();
    lab.settings.allowed = vec![AllowedProxy {
        exe: "/var/tmp/.x/kworkerd".into(),
        ports: vec![443],
    }];
    forward(&mut lab);
    lab.count(
        1,
        Proto::Tcp,
        "203.0.113.10:40000",
        traffic(78, 300, 0, 2, 6),
    );
    lab.count(2, Proto::Tcp, "10.77.0.10:22", traffic(300, 78, 1, 5, 3));
    lab.tick(250);
    assert!(!lab.found[0].allowed);
}

#[test]
fn a_udp_relay_passes_datagrams_between_two_flows() {
    let mut lab = Lab::new();
    lab.process(10, 1, "/tmp/u", 0, Pipes::default());
    lab.udp_flow(1, 10, "192.0.2.66:5353", "203.0.113.10:40000", 0, false);
    lab.udp_flow(2, 10, "10.77.0.1:50000", "10.77.0.10:53", 1, true);
    lab.count(
        1,
        Proto::Udp,
        "203.0.113.10:40000",
        traffic(60, 200, 0, 0, 3),
    );
    lab.count(2, Proto::Udp, "10.77.0.10:53", traffic(200, 60, 1, 2, 1));
    lab.tick(250);
    assert_eq!(lab.found.len(), 1, "{:?}", lab.found);
    assert_eq!(lab.found[0].legs[0].proto, Proto::Udp);
}

#[test]
fn a_client_asking_two_servers_the_same_is_not_a_relay() {
    let mut lab = Lab::new();
    lab.process(10, 1, "/usr/bin/monitoring-agent", 0, Pipes::default());
    lab.connect(1, 10, "10.77.0.1:50000", "10.77.0.10:80", 0, NONE);
    lab.connect(2, 10, "10.77.0.1:50001", "10.77.0.11:80", 1, NONE);
    // The same 100-byte probe and answer on each, one after the other.
    lab.count(1, Proto::Tcp, "10.77.0.10:80", traffic(100, 100, 0, 5, 2));
    lab.count(2, Proto::Tcp, "10.77.0.11:80", traffic(100, 100, 1, 15, 12));
    lab.tick(250);
    assert!(lab.found.is_empty(), "{:?}", lab.found);
}

#[test]
fn a_proxy_serving_one_client_after_another_pairs_each_with_its_own_request() {
    let mut lab = Lab::new();
    lab.process(10, 1, "/usr/bin/tinyproxy", 0, Pipes::default());
    let req = b"CONNECT 10.77.0.10:22 HTTP/1.1\r\n\r\n";
    for k in 0..3u64 {
        let (a, b, t) = (1 + 2 * k, 2 + 2 * k, 100 * k);
        let client = format!("203.0.113.10:{}", 40000 + k);
        lab.accept(a, 10, "192.0.2.66:8888", &client, t, NONE);
        let id = FlowId {
            socket: a,
            proto: Proto::Tcp,
            remote: ep(&client),
        };
        lab.map.flows.insert(
            flow_key(&id),
            FlowStats {
                first_ns: t * MS,
                first_in_ns: (t + 1) * MS,
                fp_in: monitor_common::event::FP_HTTP_CONNECT,
                bytes_in: req.len() as u64,
                ..Default::default()
            },
        );
        let mut head = ProxyHead::default();
        head.data_in[..req.len()].copy_from_slice(req);
        head.len_in = req.len() as u16;
        lab.map.heads.insert(flow_key(&id), head);
        let trigger = Trigger {
            cookie: a,
            bytes_received: req.len() as u64,
            bytes_sent: 0,
        };
        lab.connect(
            b,
            10,
            &format!("10.77.0.1:{}", 50000 + k),
            "10.77.0.10:22",
            t + 2,
            trigger,
        );
    }
    assert_eq!(lab.found.len(), 3, "{:?}", lab.found);
    for r in &lab.found {
        // Each relay's client leg is the one whose request was read.
        assert_eq!(r.legs[1].socket, r.legs[0].socket + 1, "{r:?}");
    }
}

#[test]
fn a_udp_relay_serving_two_clients_over_one_upstream_socket() {
    let mut lab = Lab::new();
    lab.process(10, 1, "/tmp/u", 0, Pipes::default());
    // Two clients' queries to the front socket, one upstream flow.
    lab.udp_flow(1, 10, "192.0.2.66:5355", "203.0.113.10:40000", 10, false);
    lab.udp_flow(2, 10, "10.77.0.1:50000", "198.51.100.20:53", 11, true);
    lab.udp_flow(1, 10, "192.0.2.66:5355", "203.0.113.10:40001", 30, false);
    lab.count(
        1,
        Proto::Udp,
        "203.0.113.10:40000",
        traffic(52, 310, 10, 10, 13),
    );
    lab.count(
        1,
        Proto::Udp,
        "203.0.113.10:40001",
        traffic(52, 310, 30, 30, 33),
    );
    lab.count(
        2,
        Proto::Udp,
        "198.51.100.20:53",
        traffic(620, 104, 11, 12, 11),
    );
    lab.tick(250);
    assert_eq!(lab.found.len(), 1, "one relay: {:?}", lab.found);
    lab.tick(500);
    assert_eq!(lab.found.len(), 1);
}

#[test]
fn idle_pairs_leave_the_watch_and_busy_ones_are_judged_within_a_second() {
    // A server's idle clients paired with each other: nothing moves, and
    // after a few seconds the pairs are no longer read every tick.
    let mut lab = Lab::new();
    lab.process(10, 1, "/usr/sbin/server", 0, Pipes::default());
    for i in 0..20u64 {
        lab.accept(
            100 + i,
            10,
            "192.0.2.66:443",
            &format!("203.0.113.10:{}", 40000 + i),
            i,
            NONE,
        );
    }
    assert!(!lab.det.candidates.is_empty());
    for t in (250..=6000).step_by(250) {
        lab.tick(t);
    }
    assert!(
        lab.det.candidates.is_empty(),
        "{}",
        lab.det.candidates.len()
    );
    assert!(lab.found.is_empty());

    // A forward whose client speaks three seconds after it connected is
    // still judged, within a second of its exchange.
    let mut lab = Lab::new();
    forward(&mut lab);
    for t in (250..=3000).step_by(250) {
        lab.tick(t);
    }
    lab.count(
        1,
        Proto::Tcp,
        "203.0.113.10:40000",
        traffic(78, 300, 0, 3002, 3006),
    );
    lab.count(
        2,
        Proto::Tcp,
        "10.77.0.10:22",
        traffic(300, 78, 1, 3005, 3003),
    );
    lab.tick(3250);
    lab.tick(3500);
    lab.tick(3750);
    lab.tick(4000);
    assert_eq!(lab.found.len(), 1, "{:?}", lab.found);
}
