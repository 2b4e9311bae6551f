//! Turns kernel socket events and flow counters into output events.

use monitor_common::event::{
    FlowKey, FlowStats, IoKey, IoStats, NetEvent, ProxyHead, SockOwner, Trigger, UnixLinks,
    KIND_NET_ACCEPT, KIND_NET_BIND, KIND_NET_CLOSE, KIND_NET_CONNECT, KIND_NET_CONNECT_RESULT,
    KIND_NET_LISTEN, KIND_NET_RELEASE, KIND_NET_UDP_FLOW,
};

use std::collections::{HashMap, HashSet};

use super::{
    endpoint, ip_to_kernel,
    sockdiag::{self, DiagSocket},
    table::{Flow, FlowId, FlowTable},
};
use crate::{
    clock::BootClock,
    decode::c_str,
    escape::escape,
    event::{Direction, Endpoint, Event, Kind, NetRecord, PeerRef, ProcessRef, Proto},
    process::ProcessTable,
};

const TCP_ESTABLISHED: u8 = 1;
const TCP_LISTEN: u8 = 10;

/// The kernel's per-flow counters (`FLOWS`), behind a trait so the
/// tracker's logic is testable without a kernel.
pub trait FlowMap {
    fn get(&self, key: &FlowKey) -> Option<FlowStats>;
    fn remove(&mut self, key: &FlowKey);
    fn entries(&self) -> Vec<(FlowKey, FlowStats)>;
    /// Owner of a socket from the kernel's `SOCK_OWNERS`.
    fn owner(&self, socket: u64) -> Option<SockOwner>;
    /// What process `tgid` received from and sent on a socket, from the
    /// kernel's `SOCK_IO` (None without the activity tracepoints).
    fn io(&self, _key: &IoKey) -> Option<IoStats> {
        None
    }
    /// The first bytes of a flow whose first payload looked like a proxy
    /// request, from the kernel's `PROXY_HEADS`.
    fn proxy_head(&self, _key: &FlowKey) -> Option<ProxyHead> {
        None
    }
    /// The unix connections process `tgid` moved data on lately, from the
    /// kernel's `UNIX_LINKS` (None without the activity tracepoints).
    fn unix_links(&self, _tgid: u32) -> Option<UnixLinks> {
        None
    }
}

/// Timing of flow reports, in boot-clock nanoseconds.
#[derive(Debug, Clone, Copy)]
pub struct NetSettings {
    /// A long-lived flow is reported (`flow_update`) this often.
    pub update_interval_ns: u64,
    /// A UDP flow with no packet for this long has ended.
    pub udp_idle_ns: u64,
    /// A TCP flow with no packet for this long is reported closed (its
    /// socket's close was missed, or it is idle; its next packet starts a
    /// new count).
    pub tcp_idle_ns: u64,
}

pub struct NetTracker {
    pub flows: FlowTable,
    settings: NetSettings,
    metrics: super::NetMetrics,
    /// Boot ns of the previous sweep.
    last_sweep_ns: u64,
    /// Flows that ended lately, with their final counters, by socket: a
    /// relay that starts and ends between two samples is still scored.
    pub recently_closed: HashMap<u64, Vec<(Flow, FlowStats)>>,
    closed_order: std::collections::VecDeque<(u64, u64)>,
    /// Triggers of connects in progress, by socket, until their result.
    dialling: HashMap<u64, Trigger>,
}

/// Connects in progress whose trigger is kept; past it (results lost) the
/// oldest are dropped.
const DIALLING_MAX: usize = 4096;

/// Ended flows kept for relay scoring, and for how long.
const RECENTLY_CLOSED_MAX: usize = 8192;
const RECENTLY_CLOSED_NS: u64 = 30_000_000_000;

fn proto_of(raw: u8) -> Proto {
    Proto::from_kernel(raw)
}

pub(crate) fn flow_key(id: &FlowId) -> FlowKey {
    FlowKey {
        cookie: id.socket,
        peer_addr: ip_to_kernel(id.remote.addr),
        peer_port: id.remote.port,
        proto: id.proto.to_kernel(id.remote.addr),
        _pad: [0; 5],
    }
}

fn id_of_key(key: &FlowKey) -> FlowId {
    FlowId {
        socket: key.cookie,
        proto: proto_of(key.proto),
        remote: endpoint(key.peer_addr, key.peer_port),
    }
}

/// The `result` of a connect, from the socket error the kernel reported.
pub fn connect_result(new_state: u8, errno: i32) -> &'static str {
    if new_state == TCP_ESTABLISHED {
        return "established";
    }
    match errno {
        0 => "aborted",
        libc::ECONNREFUSED => "refused",
        libc::ETIMEDOUT => "timed_out",
        libc::EHOSTUNREACH | libc::ENETUNREACH => "unreachable",
        _ => "error",
    }
}

/// Values of the `result` label of the connect-outcome metric.
pub const CONNECT_RESULTS: [&str; 6] = [
    "established",
    "refused",
    "timed_out",
    "unreachable",
    "aborted",
    "error",
];

impl NetTracker {
    pub fn new(capacity: usize, settings: NetSettings, metrics: super::NetMetrics) -> Self {
        Self {
            flows: FlowTable::new(capacity),
            settings,
            metrics,
            last_sweep_ns: 0,
            recently_closed: HashMap::new(),
            closed_order: std::collections::VecDeque::new(),
            dialling: HashMap::new(),
        }
    }

    /// The process behind a socket, from the process table.
    pub fn process_ref(procs: &ProcessTable, pid: u32, comm: &str) -> Option<ProcessRef> {
        if pid == 0 {
            return None;
        }
        let p = procs.get(pid);
        Some(ProcessRef {
            pid,
            comm: if comm.is_empty() {
                p.map(|p| p.comm.clone()).unwrap_or_default()
            } else {
                comm.to_owned()
            },
            uid: p.map(|p| p.uid),
            auid: p.and_then(|p| p.auid),
            exe: p.and_then(|p| p.exe.as_deref().map(str::to_owned)),
            argv: p.map(|p| p.argv.to_vec()).unwrap_or_default(),
            ancestry: p.map(|p| procs.ancestry(p.pid, p.ppid)).unwrap_or_default(),
        })
    }

    fn peer(
        &self,
        procs: &ProcessTable,
        proto: Proto,
        local: Endpoint,
        remote: Endpoint,
    ) -> Option<PeerRef> {
        let f = self.flows.peer(proto, local, remote)?;
        (f.owner != 0).then(|| PeerRef {
            pid: f.owner,
            exe: procs
                .get(f.owner)
                .and_then(|p| p.exe.as_deref().map(str::to_owned)),
        })
    }

    /// Applies one kernel socket event; returns the events to write.
    pub fn apply(
        &mut self,
        ev: &NetEvent,
        procs: &ProcessTable,
        clock: &BootClock,
        map: &mut dyn FlowMap,
    ) -> Vec<Event> {
        let proto = proto_of(ev.proto);
        let local = endpoint(ev.local_addr, ev.local_port);
        let remote = endpoint(ev.remote_addr, ev.remote_port);
        let comm = escape(c_str(&ev.comm));
        let mut rec = NetRecord {
            ts: clock.rfc3339(ev.header.ts_boot_ns),
            proto: Some(proto),
            netns: ev.netns,
            socket: ev.cookie,
            local: Some(local),
            process: Self::process_ref(procs, ev.header.pid, &comm),
            ..Default::default()
        };
        let id = FlowId {
            socket: ev.cookie,
            proto,
            remote,
        };
        let now = ev.header.ts_boot_ns;
        match ev.header.kind {
            KIND_NET_CONNECT => {
                if ev.trigger.cookie != 0 {
                    if self.dialling.len() >= DIALLING_MAX {
                        self.dialling.clear();
                    }
                    self.dialling.insert(ev.cookie, ev.trigger);
                }
                rec.remote = Some(remote);
                rec.direction = Some(Direction::Outbound);
                vec![Event::net(Kind::Connect, rec)]
            }
            KIND_NET_CONNECT_RESULT => {
                let result = connect_result(ev.new_state, ev.errno);
                self.metrics
                    .net_connect_results
                    .with_label_values(&[result])
                    .inc();
                rec.remote = Some(remote);
                rec.direction = Some(Direction::Outbound);
                rec.result = Some(result.to_owned());
                if ev.errno != 0 {
                    rec.errno = Some(ev.errno);
                }
                let trigger = self.dialling.remove(&ev.cookie).unwrap_or_default();
                if result == "established" {
                    self.open(id, local, Direction::Outbound, ev.header.pid, ev.netns, now);
                    if let Some(f) = self.flows.get_mut(&id) {
                        f.trigger = trigger;
                    }
                    rec.peer_process = self.peer(procs, proto, local, remote);
                } else {
                    // A failed attempt's counters (the SYNs) go with it.
                    map.remove(&flow_key(&id));
                }
                vec![Event::net(Kind::ConnectResult, rec)]
            }
            KIND_NET_ACCEPT => {
                rec.remote = Some(remote);
                rec.direction = Some(Direction::Inbound);
                self.open(id, local, Direction::Inbound, ev.header.pid, ev.netns, now);
                if let Some(f) = self.flows.get_mut(&id) {
                    f.trigger = ev.trigger;
                }
                rec.peer_process = self.peer(procs, proto, local, remote);
                vec![Event::net(Kind::Accept, rec)]
            }
            KIND_NET_LISTEN => vec![Event::net(Kind::Listen, rec)],
            KIND_NET_BIND => vec![Event::net(Kind::Bind, rec)],
            KIND_NET_UDP_FLOW => {
                let direction = if ev.new_state == 1 {
                    Direction::Outbound
                } else {
                    Direction::Inbound
                };
                rec.remote = Some(remote);
                rec.direction = Some(direction);
                self.open(id, local, direction, ev.header.pid, ev.netns, now);
                rec.peer_process = self.peer(procs, proto, local, remote);
                vec![Event::net(Kind::UdpFlow, rec)]
            }
            KIND_NET_CLOSE if ev.old_state == TCP_LISTEN => {
                rec.reason = Some("closed".to_owned());
                rec.state = Some("listen".to_owned());
                vec![Event::net(Kind::Close, rec)]
            }
            KIND_NET_CLOSE => {
                // The kernel may have released the local port by now; the
                // flow table remembers it.
                let local = self.flows.get(&id).map_or(local, |f| f.local);
                rec.local = Some(local);
                rec.remote = Some(remote);
                rec.peer_process = self.peer(procs, proto, local, remote);
                let stats = FlowStats {
                    fp_in: ev.fingerprints & 0x0f,
                    fp_out: ev.fingerprints >> 4,
                    first_ns: ev.first_ns,
                    first_in_ns: ev.first_in_ns,
                    first_out_ns: ev.first_out_ns,
                    // The close event carries no time of the last packet;
                    // the close is the latest it can have been. Relay
                    // pairing by owner (kernels without the activity
                    // tracepoints) keeps closed legs by this time.
                    last_ns: now,
                    bytes_out: ev.bytes_out,
                    bytes_in: ev.bytes_in,
                    pkts_out: ev.pkts_out,
                    pkts_in: ev.pkts_in,
                    ..Default::default()
                };
                vec![self.close(id, rec, &stats, now, "closed")]
            }
            KIND_NET_RELEASE => {
                let mut out = Vec::new();
                for id in self.flows.of_socket(ev.cookie) {
                    let key = flow_key(&id);
                    let stats = map.get(&key).unwrap_or_default();
                    map.remove(&key);
                    let flow = self.flows.get(&id).cloned();
                    let mut rec = rec.clone();
                    rec.proto = Some(id.proto);
                    rec.remote = Some(id.remote);
                    if let Some(f) = flow {
                        rec.local = Some(f.local);
                        rec.peer_process = self.peer(procs, id.proto, f.local, id.remote);
                    }
                    out.push(self.close(id, rec, &stats, now, "released"));
                }
                out
            }
            _ => Vec::new(),
        }
    }

    fn open(
        &mut self,
        id: FlowId,
        local: Endpoint,
        direction: Direction,
        owner: u32,
        netns: u32,
        now: u64,
    ) {
        self.metrics
            .net_opened
            .with_label_values(&[id.proto.as_str(), direction.as_str()])
            .inc();
        self.flows.insert(Flow {
            id,
            local,
            direction: Some(direction),
            owner,
            netns,
            seen_ns: now,
            reported_out: 0,
            reported_in: 0,
            last_report_ns: now,
            trigger: Trigger::default(),
        });
    }

    /// Ends a flow: fills the counters into `rec`, counts metrics and
    /// forgets the flow.
    fn close(
        &mut self,
        id: FlowId,
        mut rec: NetRecord,
        stats: &FlowStats,
        now: u64,
        reason: &str,
    ) -> Event {
        let flow = self.flows.remove(&id);
        if let Some(f) = &flow {
            self.remember_closed(f.clone(), *stats, now);
        }
        let direction = flow.as_ref().and_then(|f| f.direction);
        rec.direction = direction;
        self.count_bytes(id.proto, flow.as_ref(), stats);
        if let Some(d) = direction {
            self.metrics
                .net_closed
                .with_label_values(&[id.proto.as_str(), d.as_str()])
                .inc();
        }
        let start = if stats.first_ns != 0 {
            Some(stats.first_ns)
        } else {
            flow.as_ref().map(|f| f.seen_ns)
        };
        fill_counters(&mut rec, stats);
        rec.duration_ms = start.map(|s| now.saturating_sub(s) / 1_000_000);
        rec.reason = Some(reason.to_owned());
        Event::net(Kind::Close, rec)
    }

    fn remember_closed(&mut self, flow: Flow, stats: FlowStats, now: u64) {
        while let Some(&(socket, at)) = self.closed_order.front() {
            if now.saturating_sub(at) < RECENTLY_CLOSED_NS
                && self.closed_order.len() < RECENTLY_CLOSED_MAX
            {
                break;
            }
            self.closed_order.pop_front();
            self.recently_closed.remove(&socket);
        }
        self.closed_order.push_back((flow.id.socket, now));
        self.recently_closed
            .entry(flow.id.socket)
            .or_default()
            .push((flow, stats));
    }

    fn count_bytes(&self, proto: Proto, flow: Option<&Flow>, stats: &FlowStats) {
        let (out0, in0) = flow.map_or((0, 0), |f| (f.reported_out, f.reported_in));
        self.metrics
            .net_sent_bytes
            .with_label_values(&[proto.as_str()])
            .inc_by(stats.bytes_out.saturating_sub(out0));
        self.metrics
            .net_received_bytes
            .with_label_values(&[proto.as_str()])
            .inc_by(stats.bytes_in.saturating_sub(in0));
    }

    /// Walks the kernel's flow counters: reports long-lived flows, ends
    /// idle ones. `now` is the boot clock.
    pub fn sweep(
        &mut self,
        now: u64,
        procs: &ProcessTable,
        clock: &BootClock,
        map: &mut dyn FlowMap,
    ) -> Vec<Event> {
        let mut out = Vec::new();
        let interval = self.settings.update_interval_ns.max(1);
        let previous = std::mem::replace(&mut self.last_sweep_ns, now);
        let ts = clock.rfc3339(now);
        let entries = map.entries();
        self.metrics.net_kernel_flows.set(entries.len() as i64);
        for (key, stats) in entries {
            let id = id_of_key(&key);
            let tracked = self.flows.get(&id).cloned();
            let flow = match &tracked {
                Some(f) => f.clone(),
                None => {
                    // Counted before its socket event arrived, or evicted
                    // from a full table: reported from the kernel's view.
                    let owner = map.owner(key.cookie).unwrap_or_default();
                    Flow {
                        id,
                        local: endpoint(stats.local_addr, stats.local_port),
                        direction: None,
                        owner: owner.tgid,
                        netns: owner.netns,
                        seen_ns: stats.first_ns,
                        reported_out: 0,
                        reported_in: 0,
                        last_report_ns: stats.first_ns,
                        trigger: Trigger::default(),
                    }
                }
            };
            let idle = now.saturating_sub(stats.last_ns);
            let idle_limit = match id.proto {
                Proto::Udp | Proto::Icmp => self.settings.udp_idle_ns,
                Proto::Tcp => self.settings.tcp_idle_ns,
            };
            let ended = idle >= idle_limit;
            let due = !ended
                && match &tracked {
                    Some(f) => {
                        let changed =
                            stats.bytes_out != f.reported_out || stats.bytes_in != f.reported_in;
                        changed && now.saturating_sub(f.last_report_ns) >= interval
                    }
                    // Untracked flows keep no report state: they are reported
                    // when an interval boundary passed since the last sweep and
                    // they carried traffic in between, so at most once per
                    // interval. Younger than one interval, its socket event is
                    // probably still on the way, so it waits.
                    None => {
                        now / interval != previous / interval
                            && stats.last_ns + crate::clock::LAST_SEEN_SLACK_NS > previous
                            && now.saturating_sub(stats.first_ns) >= interval
                    }
                };
            if !ended && !due {
                continue;
            }
            let rec = NetRecord {
                ts: ts.clone(),
                proto: Some(id.proto),
                netns: flow.netns,
                socket: id.socket,
                local: Some(flow.local),
                remote: Some(id.remote),
                direction: flow.direction,
                process: Self::process_ref(procs, flow.owner, ""),
                peer_process: self.peer(procs, id.proto, flow.local, id.remote),
                ..Default::default()
            };
            if ended {
                map.remove(&key);
                out.push(self.close(id, rec, &stats, now, "idle"));
                continue;
            }
            if let Some(f) = self.flows.get_mut(&id) {
                let reported = f.clone();
                f.reported_out = stats.bytes_out;
                f.reported_in = stats.bytes_in;
                f.last_report_ns = now;
                self.count_bytes(id.proto, Some(&reported), &stats);
            }
            let mut rec = rec;
            fill_counters(&mut rec, &stats);
            rec.duration_ms = Some(now.saturating_sub(stats.first_ns) / 1_000_000);
            out.push(Event::net(Kind::FlowUpdate, rec));
        }
        self.metrics
            .net_flow_table_entries
            .set(self.flows.len() as i64);
        out
    }
}

impl NetTracker {
    /// Adopts the sockets that existed at start (from sock_diag): open
    /// TCP connections join the flow table, and each socket with a known
    /// owner is returned so the kernel's owner map can name it. Returns
    /// the `connection` events and the owners. Called once per network
    /// namespace (`netns`), with that namespace's sockets.
    pub fn seed(
        &mut self,
        sockets: &[DiagSocket],
        inode_owners: &HashMap<u32, u32>,
        netns: u32,
        procs: &ProcessTable,
        clock: &BootClock,
    ) -> (Vec<Event>, Vec<(u64, SockOwner)>) {
        let now = BootClock::boot_now_ns();
        let ts = clock.rfc3339(now);
        let listening: HashSet<(Proto, u16)> = sockets
            .iter()
            .filter(|s| s.proto == Proto::Tcp && s.state == TCP_LISTEN)
            .map(|s| (s.proto, s.local.port))
            .collect();
        let mut events = Vec::new();
        let mut owners = Vec::new();
        for s in sockets {
            // TIME_WAIT and other sockets with no inode belong to no one.
            if s.inode == 0 {
                continue;
            }
            let pid = inode_owners.get(&s.inode).copied().unwrap_or(0);
            let process = Self::process_ref(procs, pid, "");
            // A socket read from /proc/PID/net has no cookie: it cannot be
            // joined to the kernel's later events, so it is reported but
            // neither tracked nor named in the owner map.
            let known = s.cookie != 0;
            if let Some(p) = process.as_ref().filter(|_| known) {
                let mut comm = [0u8; 16];
                let n = p.comm.len().min(15);
                comm[..n].copy_from_slice(&p.comm.as_bytes()[..n]);
                owners.push((
                    s.cookie,
                    SockOwner {
                        tgid: pid,
                        pid,
                        netns,
                        _pad: 0,
                        comm,
                    },
                ));
            }
            let connected = s.proto == Proto::Tcp && s.state == TCP_ESTABLISHED;
            let direction = connected.then(|| {
                if listening.contains(&(s.proto, s.local.port)) {
                    Direction::Inbound
                } else {
                    Direction::Outbound
                }
            });
            if connected && known {
                self.flows.insert(Flow {
                    id: FlowId {
                        socket: s.cookie,
                        proto: s.proto,
                        remote: s.remote,
                    },
                    local: s.local,
                    direction,
                    owner: pid,
                    netns,
                    seen_ns: now,
                    reported_out: 0,
                    reported_in: 0,
                    last_report_ns: now,
                    trigger: Trigger::default(),
                });
            }
            let state = match s.proto {
                Proto::Tcp => sockdiag::tcp_state_name(s.state),
                Proto::Udp | Proto::Icmp if s.state == TCP_ESTABLISHED => "connected",
                Proto::Udp | Proto::Icmp => "bound",
            };
            events.push(Event::net(
                Kind::Connection,
                NetRecord {
                    ts: ts.clone(),
                    proto: Some(s.proto),
                    netns,
                    socket: s.cookie,
                    local: Some(s.local),
                    remote: (s.remote.port != 0).then_some(s.remote),
                    direction,
                    process,
                    state: Some(state.to_owned()),
                    seeded: true,
                    ..Default::default()
                },
            ));
        }
        for e in &mut events {
            if let Event::Connection(r) = e {
                if let (Some(l), Some(r_end), Some(proto)) = (r.local, r.remote, r.proto) {
                    r.peer_process = self.peer(procs, proto, l, r_end);
                }
            }
        }
        self.metrics
            .net_flow_table_entries
            .set(self.flows.len() as i64);
        (events, owners)
    }
}

fn fill_counters(rec: &mut NetRecord, stats: &FlowStats) {
    rec.bytes_sent = Some(stats.bytes_out);
    rec.bytes_received = Some(stats.bytes_in);
    rec.packets_sent = Some(stats.pkts_out);
    rec.packets_received = Some(stats.pkts_in);
}

/// The kernel's flow counters in memory, for tests and the fuzz targets,
/// which run the tracker without a kernel.
#[cfg(any(test, feature = "fuzzing"))]
#[derive(Default)]
pub struct MemFlows {
    pub flows: HashMap<FlowKey, FlowStats>,
    pub owners: HashMap<u64, SockOwner>,
    pub io: HashMap<IoKey, IoStats>,
    pub heads: HashMap<FlowKey, ProxyHead>,
    pub unix: HashMap<u32, UnixLinks>,
}

#[cfg(any(test, feature = "fuzzing"))]
impl FlowMap for MemFlows {
    fn get(&self, key: &FlowKey) -> Option<FlowStats> {
        self.flows.get(key).copied()
    }
    fn remove(&mut self, key: &FlowKey) {
        self.flows.remove(key);
    }
    fn entries(&self) -> Vec<(FlowKey, FlowStats)> {
        self.flows.iter().map(|(k, v)| (*k, *v)).collect()
    }
    fn owner(&self, socket: u64) -> Option<SockOwner> {
        self.owners.get(&socket).copied()
    }
    fn io(&self, key: &IoKey) -> Option<IoStats> {
        self.io.get(key).copied()
    }
    fn proxy_head(&self, key: &FlowKey) -> Option<ProxyHead> {
        self.heads.get(key).copied()
    }
    fn unix_links(&self, tgid: u32) -> Option<UnixLinks> {
        self.unix.get(&tgid).copied()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use monitor_common::event::{EventHeader, PROTO_TCP, PROTO_UDP};

    use super::*;
    use crate::net::ip_to_kernel;

    const SEC: u64 = 1_000_000_000;

    fn tracker() -> NetTracker {
        NetTracker::new(
            1000,
            NetSettings {
                update_interval_ns: 30 * SEC,
                udp_idle_ns: 60 * SEC,
                tcp_idle_ns: 3600 * SEC,
            },
            crate::net::NetMetrics::register(&crate::metrics::registry()),
        )
    }

    fn net(kind: u32, cookie: u64, pid: u32, local: &str, remote: &str, ts: u64) -> NetEvent {
        let l: std::net::SocketAddr = local.parse().expect("addr");
        let r: std::net::SocketAddr = remote.parse().expect("addr");
        NetEvent {
            header: EventHeader {
                kind,
                size: size_of::<NetEvent>() as u32,
                ts_boot_ns: ts,
                pid,
                tid: pid,
            },
            cookie,
            netns: 4026531840,
            proto: PROTO_TCP,
            local_addr: ip_to_kernel(l.ip()),
            local_port: l.port(),
            remote_addr: ip_to_kernel(r.ip()),
            remote_port: r.port(),
            ..Default::default()
        }
    }

    fn json(e: &Event) -> serde_json::Value {
        serde_json::to_value(e).expect("json")
    }

    #[test]
    fn loopback_connection_is_joined_and_closed_with_bytes() {
        let mut t = tracker();
        let procs = ProcessTable::new(10, Duration::from_secs(60));
        let clock = BootClock::new();
        let mut map = MemFlows::default();
        let mut est = net(
            KIND_NET_CONNECT_RESULT,
            1,
            100,
            "127.0.0.1:5000",
            "127.0.0.1:80",
            SEC,
        );
        est.new_state = TCP_ESTABLISHED;
        t.apply(&est, &procs, &clock, &mut map);
        let acc = net(
            KIND_NET_ACCEPT,
            2,
            200,
            "127.0.0.1:80",
            "127.0.0.1:5000",
            SEC,
        );
        let out = t.apply(&acc, &procs, &clock, &mut map);
        let v = json(&out[0]);
        assert_eq!(v["kind"], "accept");
        assert_eq!(v["peer_process"]["pid"], 100);
        assert_eq!(v["process"]["pid"], 200);
        assert_eq!(v["remote"]["addr"], "127.0.0.1");
        assert_eq!(v["direction"], "inbound");

        let mut close = net(
            KIND_NET_CLOSE,
            1,
            100,
            "127.0.0.1:5000",
            "127.0.0.1:80",
            3 * SEC,
        );
        close.old_state = TCP_ESTABLISHED;
        close.new_state = 7;
        close.first_ns = SEC;
        close.bytes_out = 1000;
        close.bytes_in = 50;
        close.pkts_out = 3;
        close.pkts_in = 2;
        let out = t.apply(&close, &procs, &clock, &mut map);
        let v = json(&out[0]);
        assert_eq!(v["kind"], "close");
        assert_eq!(v["direction"], "outbound");
        assert_eq!(v["bytes_sent"], 1000);
        assert_eq!(v["bytes_received"], 50);
        assert_eq!(v["duration_ms"], 2000);
        assert_eq!(v["peer_process"]["pid"], 200);
        assert_eq!(t.flows.len(), 1);
    }

    #[test]
    fn connect_failures_are_named() {
        assert_eq!(connect_result(7, libc::ECONNREFUSED), "refused");
        assert_eq!(connect_result(7, libc::ETIMEDOUT), "timed_out");
        assert_eq!(connect_result(7, 0), "aborted");
        assert_eq!(connect_result(TCP_ESTABLISHED, 0), "established");
        for r in [
            libc::ECONNREFUSED,
            libc::ETIMEDOUT,
            libc::EHOSTUNREACH,
            0,
            999,
        ] {
            assert!(CONNECT_RESULTS.contains(&connect_result(7, r)));
        }
    }

    #[test]
    fn udp_flows_update_then_end_when_idle() {
        let mut t = tracker();
        let procs = ProcessTable::new(10, Duration::from_secs(60));
        let clock = BootClock::new();
        let mut map = MemFlows::default();
        let mut first = net(
            KIND_NET_UDP_FLOW,
            9,
            300,
            "127.0.0.1:5353",
            "127.0.0.1:40000",
            SEC,
        );
        first.proto = PROTO_UDP;
        first.new_state = 0;
        let out = t.apply(&first, &procs, &clock, &mut map);
        assert_eq!(json(&out[0])["direction"], "inbound");
        let key = flow_key(&FlowId {
            socket: 9,
            proto: Proto::Udp,
            remote: endpoint(first.remote_addr, 40000),
        });
        let mut stats = FlowStats {
            local_addr: first.local_addr,
            local_port: 5353,
            first_ns: SEC,
            last_ns: 20 * SEC,
            bytes_in: 500,
            pkts_in: 5,
            ..Default::default()
        };
        map.flows.insert(key, stats);
        assert!(
            t.sweep(10 * SEC, &procs, &clock, &mut map).is_empty(),
            "too early"
        );
        let out = t.sweep(40 * SEC, &procs, &clock, &mut map);
        assert_eq!(json(&out[0])["kind"], "flow_update");
        assert_eq!(json(&out[0])["bytes_received"], 500);
        assert!(
            t.sweep(45 * SEC, &procs, &clock, &mut map).is_empty(),
            "no change, no update"
        );
        stats.bytes_in = 700;
        map.flows.insert(key, stats);
        let out = t.sweep(81 * SEC, &procs, &clock, &mut map);
        let v = json(&out[0]);
        assert_eq!(v["kind"], "close");
        assert_eq!(v["reason"], "idle");
        assert_eq!(v["bytes_received"], 700);
        assert!(map.flows.is_empty() && t.flows.is_empty());
    }

    #[test]
    fn released_udp_socket_ends_all_its_flows() {
        let mut t = tracker();
        let procs = ProcessTable::new(10, Duration::from_secs(60));
        let clock = BootClock::new();
        let mut map = MemFlows::default();
        for peer in ["127.0.0.1:1000", "127.0.0.1:2000"] {
            let mut f = net(KIND_NET_UDP_FLOW, 5, 300, "127.0.0.1:53", peer, SEC);
            f.proto = PROTO_UDP;
            t.apply(&f, &procs, &clock, &mut map);
        }
        let mut rel = net(KIND_NET_RELEASE, 5, 300, "0.0.0.0:0", "0.0.0.0:0", 2 * SEC);
        rel.proto = PROTO_UDP;
        let out = t.apply(&rel, &procs, &clock, &mut map);
        assert_eq!(out.len(), 2);
        assert!(out.iter().all(|e| json(e)["reason"] == "released"));
        assert!(t.flows.is_empty());
    }

    /// Sockets of another namespace read from /proc have no cookie: they
    /// are reported with that namespace, but neither tracked as flows nor
    /// given to the kernel's owner map; those from sock_diag are.
    #[test]
    fn seeded_sockets_carry_their_namespace_and_only_cookies_are_tracked() {
        let mut t = tracker();
        let mut procs = ProcessTable::new(10, Duration::from_secs(60));
        procs.insert(crate::process::Process::for_test(40, 1, "/usr/bin/python3"));
        let clock = BootClock::new();
        let sock = |cookie: u64, inode: u32, state: u8, local: &str, remote: &str| DiagSocket {
            proto: Proto::Tcp,
            state,
            local: endpoint(local),
            remote: endpoint(remote),
            inode,
            cookie,
            uid: 0,
        };
        fn endpoint(s: &str) -> Endpoint {
            let a: std::net::SocketAddr = s.parse().expect("addr");
            Endpoint {
                addr: a.ip(),
                port: a.port(),
            }
        }
        let owners: HashMap<u32, u32> = [(1, 40), (2, 40), (3, 40)].into();
        let other_ns = [
            sock(0, 1, TCP_LISTEN, "127.0.0.1:8080", "0.0.0.0:0"),
            sock(0, 2, TCP_ESTABLISHED, "127.0.0.1:8080", "127.0.0.1:40000"),
        ];
        let (events, sock_owners) = t.seed(&other_ns, &owners, 4026532301, &procs, &clock);
        assert_eq!(events.len(), 2);
        for e in &events {
            let v = json(e);
            assert_eq!(v["netns"], 4026532301u32);
            assert_eq!(v["process"]["pid"], 40);
        }
        assert_eq!(json(&events[0])["state"], "listen");
        assert_eq!(json(&events[1])["direction"], "inbound");
        assert!(sock_owners.is_empty());
        assert!(t.flows.is_empty());
        let own_ns = [sock(
            77,
            3,
            TCP_ESTABLISHED,
            "127.0.0.1:40001",
            "127.0.0.1:22",
        )];
        let (events, sock_owners) = t.seed(&own_ns, &owners, 4026531840, &procs, &clock);
        assert_eq!(json(&events[0])["netns"], 4026531840u32);
        assert_eq!(sock_owners.len(), 1);
        assert_eq!(sock_owners[0].1.netns, 4026531840);
        assert_eq!(t.flows.len(), 1);
    }
}
