//! The gateway's data plane: flows this machine forwards, counted in the
//! kernel by TC egress programs on its interfaces (see the eBPF
//! `probes::forward`), and the transit patterns that make it a relay with
//! no relay process at all.
//!
//! Each scan reads the kernel's forwarded-flow map and:
//! - classifies a flow the first time it is seen: a flow that came in from
//!   wan and left to wan (hairpin) or came in from wan and was DNAT'd to
//!   the inside on a port not declared as published is a `transit` event;
//! - reports open flows (`forward`, state `active`) every `report_secs`,
//!   and ended ones (FIN both ways, RST, or idle) with their final counts,
//!   then removes them from the kernel map;
//! - adds the bytes and packets forwarded since the last scan to the
//!   metrics, by the roles of the interfaces in and out.

pub mod change;
pub mod iface;
pub mod netlink;
pub mod stage;

use std::{
    collections::{BTreeMap, HashMap},
    hash::{Hash as _, Hasher as _},
    net::IpAddr,
    path::PathBuf,
};

use aya::{
    maps::{HashMap as BpfHashMap, MapData},
    programs::{tc, SchedClassifier, TcAttachType},
    Ebpf,
};
use monitor_common::event::{
    FwdDir, FwdKey, FwdStats, IfaceInfo, FWD_CONNTRACK, FWD_FIN_ORIG, FWD_FIN_REPLY, FWD_RST,
    PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP,
};
use serde::Deserialize;

use self::iface::{Iface, IfaceRole, Role};
use crate::{clock::BootClock, event::Proto, net::endpoint};

/// The data plane's metrics: what the gateway forwards, flows that make it
/// a relay, configuration changes, lost notifications.
#[derive(Clone)]
pub struct DataplaneMetrics {
    pub forwarded_bytes: prometheus::IntCounterVec,
    pub forwarded_packets: prometheus::IntCounterVec,
    pub forward_flows: prometheus::IntGauge,
    pub transit_flows: prometheus::IntCounterVec,
    pub config_changes: prometheus::IntCounterVec,
    pub netlink_overruns: prometheus::IntCounter,
    /// The relay detectors' tunnel count, for tunnels in forwarded flows.
    pub tunnels: prometheus::IntCounterVec,
}

impl DataplaneMetrics {
    pub fn register(
        registry: &prometheus::Registry,
        hops: &crate::net::sensors::HopMetrics,
    ) -> Self {
        use crate::metrics::{counter, counter_vec, gauge};
        let m = Self {
            forwarded_bytes: counter_vec(
                registry,
                "forwarded_bytes_total",
                "IP bytes this machine forwarded (routed, not sent or received itself), by the roles of the interfaces in and out.",
                &["in_role", "out_role"],
            ),
            forwarded_packets: counter_vec(
                registry,
                "forwarded_packets_total",
                "Packets this machine forwarded, by the roles of the interfaces in and out.",
                &["in_role", "out_role"],
            ),
            forward_flows: gauge(
                registry,
                "forward_flows",
                "Forwarded flows in the kernel's counter map at the last scan.",
            ),
            transit_flows: counter_vec(
                registry,
                "transit_flows_total",
                "Forwarded flows that make the gateway a relay, by reason (hairpin, dnat_unpublished).",
                &["reason"],
            ),
            config_changes: counter_vec(
                registry,
                "config_changes_total",
                "Configuration changes that enable relaying or sniffing, by type.",
                &["type"],
            ),
            netlink_overruns: counter(
                registry,
                "netlink_overruns_total",
                "Times the kernel dropped configuration-change notifications because the monitor's socket buffer was full.",
            ),
            tunnels: hops.tunnels.clone(),
        };
        let roles = crate::event::forward::Role::ALL.map(|r| r.as_str());
        for i in roles.iter().chain(&["unknown"]) {
            for o in roles.iter().chain(&["unknown"]) {
                m.forwarded_bytes.with_label_values(&[i, o]);
                m.forwarded_packets.with_label_values(&[i, o]);
            }
        }
        for r in crate::event::forward::TransitReason::ALL {
            m.transit_flows.with_label_values(&[r.as_str()]);
        }
        for c in crate::event::config_change::Change::ALL {
            m.config_changes.with_label_values(&[c.as_str()]);
        }
        m
    }
}

/// Name of the TC program in the eBPF object.
pub const TC_PROGRAM: &str = "forward_tc_egress";

/// `{ proto = "tcp", port = 443, to = "10.0.0.2" }` in `[dataplane] published`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Published {
    pub proto: Proto,
    /// The port on the wan side.
    pub port: u16,
    /// The inside address it is forwarded to; any when unset.
    #[serde(default)]
    pub to: Option<IpAddr>,
}

/// What the data plane stage needs from the configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    pub netns: Option<PathBuf>,
    pub roles: Vec<IfaceRole>,
    pub published: Vec<Published>,
    pub report_ns: u64,
    pub idle_ns: u64,
}

pub use crate::event::forward::{Counts, ForwardRecord, IfaceSide, TransitReason, Tuple};

/// What userspace remembers of a flow between scans.
struct FlowState {
    /// Counts already added to the metrics.
    counted: [FwdDir; 2],
    last_report_ns: u64,
    classified: bool,
    /// Reported as a tunnel (DNS, ICMP) already.
    tunnel: bool,
}

/// A flow that ended: late packets (the last ACK) that recreate its entry
/// within this long are folded away silently.
const ENDED_GRACE_NS: u64 = 5_000_000_000;

pub struct DataPlane {
    settings: Settings,
    flows: BpfHashMap<MapData, FwdKey, FwdStats>,
    ifaces_map: BpfHashMap<MapData, u32, IfaceInfo>,
    /// Watched interfaces, by ifindex.
    watched: BTreeMap<u32, Iface>,
    state: HashMap<FwdKey, FlowState>,
    ended: HashMap<FwdKey, u64>,
    netns: u32,
    metrics: DataplaneMetrics,
}

#[derive(Debug, thiserror::Error)]
pub enum DataPlaneError {
    #[error("dataplane: {0}")]
    Io(#[from] std::io::Error),
    #[error("dataplane: eBPF map {name}: {source}")]
    Map {
        name: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
    #[error("dataplane: eBPF map {0} is missing from the object")]
    MissingMap(&'static str),
}

impl DataPlane {
    /// Takes the data plane maps from the object. Interfaces are attached
    /// by [`DataPlane::rescan`].
    pub fn new(
        ebpf: &mut Ebpf,
        settings: Settings,
        metrics: DataplaneMetrics,
    ) -> Result<Self, DataPlaneError> {
        use monitor_common::limits::{MAP_FWD_FLOWS, MAP_IFACES};
        let take = |ebpf: &mut Ebpf, name: &'static str| {
            ebpf.take_map(name).ok_or(DataPlaneError::MissingMap(name))
        };
        let flows = BpfHashMap::try_from(take(ebpf, MAP_FWD_FLOWS)?).map_err(|source| {
            DataPlaneError::Map {
                name: MAP_FWD_FLOWS,
                source,
            }
        })?;
        let ifaces_map = BpfHashMap::try_from(take(ebpf, MAP_IFACES)?).map_err(|source| {
            DataPlaneError::Map {
                name: MAP_IFACES,
                source,
            }
        })?;
        let netns = iface::in_netns(settings.netns.as_deref(), netns_inode)??;
        Ok(Self {
            settings,
            flows,
            ifaces_map,
            watched: BTreeMap::new(),
            state: HashMap::new(),
            ended: HashMap::new(),
            netns,
            metrics,
        })
    }

    /// Inode of the watched network namespace.
    pub fn netns(&self) -> u32 {
        self.netns
    }

    /// The watched interfaces.
    pub fn interfaces(&self) -> impl Iterator<Item = &Iface> {
        self.watched.values()
    }

    /// Attaches the TC program to interfaces that appeared since the last
    /// call and forgets those that are gone. Failures are logged per
    /// interface; the others are still watched.
    pub fn rescan(&mut self, ebpf: &mut Ebpf) -> Result<(), DataPlaneError> {
        let netns = self.settings.netns.clone();
        let roles = self.settings.roles.clone();
        let watched = &mut self.watched;
        let ifaces_map = &mut self.ifaces_map;
        let ns = self.netns;
        iface::in_netns(netns.as_deref(), || -> Result<(), DataPlaneError> {
            let links = iface::list()?;
            let current = iface::assign(&links, &roles);
            let gone: Vec<u32> = watched
                .keys()
                .copied()
                .filter(|i| !current.iter().any(|c| c.link.ifindex == *i))
                .collect();
            for ifindex in gone {
                let _ = ifaces_map.remove(&ifindex);
                if let Some(i) = watched.remove(&ifindex) {
                    tracing::info!(iface = %i.link.name, "interface gone; no longer watched");
                }
            }
            for i in current {
                if watched.get(&i.link.ifindex) == Some(&i) {
                    continue;
                }
                let info = IfaceInfo {
                    l2_len: i.link.l2_len(),
                    netns: ns,
                };
                if let Err(e) = ifaces_map.insert(i.link.ifindex, info, 0) {
                    tracing::warn!(iface = %i.link.name, error = %e, "interface map full; forwarded traffic through it is not counted");
                    continue;
                }
                let first = !watched.contains_key(&i.link.ifindex);
                if first {
                    if let Err(e) = attach(ebpf, &i.link.name) {
                        tracing::warn!(iface = %i.link.name, error = %e, "cannot attach the forwarding counter; traffic leaving by this interface is not counted");
                        let _ = ifaces_map.remove(&i.link.ifindex);
                        continue;
                    }
                }
                tracing::info!(iface = %i.link.name, role = i.role.as_str(), "watching forwarded traffic");
                watched.insert(i.link.ifindex, i);
            }
            Ok(())
        })?
    }

    /// Reads the kernel's flow counters; returns the events to write.
    pub fn scan(&mut self, now_ns: u64, clock: &BootClock) -> Vec<crate::event::Event> {
        use crate::event::Event;
        let entries: Vec<(FwdKey, FwdStats)> = crate::net::maps::entries(&self.flows);
        let mut out = Vec::new();
        let mut present = std::collections::HashSet::with_capacity(entries.len());
        self.ended.retain(|_, until| *until > now_ns);
        for (key, stats) in entries {
            present.insert(key);
            let roles = (
                self.role_of(stats.dir[0].in_ifindex),
                self.role_of(stats.dir[0].out_ifindex),
            );
            let mut st = self.state.remove(&key).unwrap_or(FlowState {
                counted: [FwdDir::default(); 2],
                last_report_ns: now_ns,
                classified: false,
                tunnel: false,
            });
            count_deltas(&self.metrics, &self.watched, &stats, &mut st.counted);
            if self.ended.contains_key(&key) {
                // The tail of a flow already reported ended.
                let _ = self.flows.remove(&key);
                continue;
            }
            if !st.classified && stats.dir[0].packets > 0 {
                st.classified = true;
                if let Some(reason) = classify(&key, &stats, roles, &self.settings.published) {
                    self.metrics
                        .transit_flows
                        .with_label_values(&[reason.as_str()])
                        .inc();
                    let mut r = self.record(&key, &stats, clock, "active", None);
                    r.reason = Some(reason);
                    out.push(Event::Transit(Box::new(r)));
                }
            }
            if !st.tunnel {
                if let Some(t) = self.tunnel(&key, &stats, clock, roles.1) {
                    st.tunnel = true;
                    self.metrics
                        .tunnels
                        .with_label_values(&[t.protocol.as_str(), "true"])
                        .inc();
                    out.push(Event::Tunnel(Box::new(t)));
                }
            }
            let end = if stats.flags & FWD_RST != 0 {
                Some("rst")
            } else if stats.flags & (FWD_FIN_ORIG | FWD_FIN_REPLY) == FWD_FIN_ORIG | FWD_FIN_REPLY {
                Some("fin")
            } else if now_ns.saturating_sub(stats.last_ns) >= self.settings.idle_ns {
                Some("idle")
            } else {
                None
            };
            if let Some(reason) = end {
                out.push(Event::Forward(Box::new(self.record(
                    &key,
                    &stats,
                    clock,
                    "ended",
                    Some(reason),
                ))));
                let _ = self.flows.remove(&key);
                self.ended.insert(key, now_ns + ENDED_GRACE_NS);
                continue;
            }
            if now_ns.saturating_sub(st.last_report_ns) >= self.settings.report_ns {
                st.last_report_ns = now_ns;
                out.push(Event::Forward(Box::new(
                    self.record(&key, &stats, clock, "active", None),
                )));
            }
            self.state.insert(key, st);
        }
        self.state.retain(|k, _| present.contains(k));
        self.metrics.forward_flows.set(present.len() as i64);
        out
    }

    /// A forwarded flow carrying a tunnel: DNS queries with long names at
    /// a steady rate, or ICMP echoes whose answers are not echoes (judged
    /// on sizes: the payload of forwarded packets is not read).
    fn tunnel(
        &self,
        key: &FwdKey,
        stats: &FwdStats,
        clock: &BootClock,
        out_role: Option<Role>,
    ) -> Option<crate::net::tunnel::TunnelRecord> {
        use crate::net::tunnel::{self, Carrier, Queries};
        let o = &key.orig;
        let (fwd, rep) = (&stats.dir[0], &stats.dir[1]);
        let (protocol, reason) = match o.proto {
            PROTO_UDP if o.dport == 53 => (
                Carrier::Dns,
                tunnel::dns_verdict(Queries {
                    count: fwd.packets,
                    bytes: fwd.payload,
                })?,
            ),
            PROTO_ICMP | PROTO_ICMPV6 => (
                Carrier::Icmp,
                tunnel::icmp_sizes_verdict((fwd.packets, fwd.payload), (rep.packets, rep.payload))?,
            ),
            _ => return None,
        };
        let ep = |addr: [u8; 16], port: u16| crate::event::Endpoint {
            addr: crate::net::ip_from_kernel(addr),
            port,
        };
        Some(tunnel::TunnelRecord {
            ts: clock.rfc3339(stats.last_ns),
            protocol,
            reason,
            forwarded: true,
            netns: key.netns,
            process: None,
            socket: None,
            flow_id: Some(flow_id(key)),
            proto: Proto::from_kernel(o.proto),
            local: ep(o.src, o.sport),
            remote: ep(o.dst, o.dport),
            direction: None,
            side: out_role.map_or(crate::net::sides::Side::Unknown, Role::side),
            packets_sent: fwd.packets,
            packets_received: rep.packets,
            bytes_sent: fwd.payload,
            bytes_received: rep.payload,
        })
    }

    fn role_of(&self, ifindex: u32) -> Option<Role> {
        self.watched.get(&ifindex).map(|i| i.role)
    }

    fn side(&self, ifindex: u32) -> IfaceSide {
        let i = self.watched.get(&ifindex);
        IfaceSide {
            iface: i.map(|i| i.link.name.clone()),
            role: i.map(|i| i.role),
        }
    }

    fn record(
        &self,
        key: &FwdKey,
        stats: &FwdStats,
        clock: &BootClock,
        state: &str,
        end_reason: Option<&str>,
    ) -> ForwardRecord {
        let o = &key.orig;
        let original = Tuple {
            src: endpoint(o.src, o.sport),
            dst: endpoint(o.dst, o.dport),
        };
        let tracked = stats.flags & FWD_CONNTRACK != 0;
        // The reply tuple reversed is how the original direction left.
        let translated = if tracked {
            let r = &stats.reply;
            Tuple {
                src: endpoint(r.dst, r.dport),
                dst: endpoint(r.src, r.sport),
            }
        } else {
            original
        };
        let dnat = translated.dst != original.dst;
        let snat = translated.src != original.src;
        let nat = match (dnat, snat) {
            (false, false) => "none",
            (true, false) => "dnat",
            (false, true) => "snat",
            (true, true) => "dnat+snat",
        };
        let d = &stats.dir;
        // The original direction's interfaces; from the replies' when only
        // replies were seen.
        let (in_if, out_if) = if d[0].packets > 0 {
            (d[0].in_ifindex, d[0].out_ifindex)
        } else {
            (d[1].out_ifindex, d[1].in_ifindex)
        };
        let counts = |x: &FwdDir| Counts {
            bytes: x.bytes,
            payload_bytes: x.payload,
            packets: x.packets,
        };
        ForwardRecord {
            ts: clock.rfc3339(stats.last_ns),
            first_seen: clock.rfc3339(stats.first_ns),
            flow_id: flow_id(key),
            netns: key.netns,
            proto: Proto::from_kernel(o.proto),
            original,
            translated,
            nat: nat.to_owned(),
            conntrack: tracked,
            in_: self.side(in_if),
            out: self.side(out_if),
            forward: counts(&d[0]),
            reply: counts(&d[1]),
            state: state.to_owned(),
            end_reason: end_reason.map(str::to_owned),
            reason: None,
        }
    }
}

/// Stable id of a flow for its lines and for alert de-duplication.
fn flow_id(key: &FwdKey) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut h);
    // JSON numbers above 2^53 lose precision in many consumers.
    h.finish() & ((1 << 53) - 1)
}

/// Why `stats` makes the gateway a relay, if it does.
fn classify(
    key: &FwdKey,
    stats: &FwdStats,
    (in_role, out_role): (Option<Role>, Option<Role>),
    published: &[Published],
) -> Option<TransitReason> {
    if in_role != Some(Role::Wan) {
        return None;
    }
    match out_role {
        Some(Role::Wan) => Some(TransitReason::Hairpin),
        Some(Role::Lan | Role::Mgmt) if stats.flags & FWD_CONNTRACK != 0 => {
            let (o, r) = (&key.orig, &stats.reply);
            // Replies come from where the flow was sent: DNAT changed the
            // destination when that is not the original destination.
            if r.src == o.dst && r.sport == o.dport {
                return None;
            }
            let proto = match o.proto {
                PROTO_TCP => Proto::Tcp,
                PROTO_UDP => Proto::Udp,
                _ => return None,
            };
            let to = crate::net::ip_from_kernel(r.src);
            let declared = published
                .iter()
                .any(|p| p.proto == proto && p.port == o.dport && p.to.is_none_or(|a| a == to));
            (!declared).then_some(TransitReason::DnatUnpublished)
        }
        _ => None,
    }
}

/// Adds what `stats` counted since `counted` to the forwarded-traffic
/// metrics, by the roles of the interfaces in and out.
fn count_deltas(
    metrics: &DataplaneMetrics,
    watched: &BTreeMap<u32, Iface>,
    stats: &FwdStats,
    counted: &mut [FwdDir; 2],
) {
    let label = |i: u32| watched.get(&i).map_or("unknown", |i| i.role.as_str());
    for (now, before) in stats.dir.iter().zip(counted.iter_mut()) {
        let bytes = now.bytes.saturating_sub(before.bytes);
        let packets = now.packets.saturating_sub(before.packets);
        if bytes == 0 && packets == 0 {
            continue;
        }
        let labels = [label(now.in_ifindex), label(now.out_ifindex)];
        metrics
            .forwarded_bytes
            .with_label_values(&labels)
            .inc_by(bytes);
        metrics
            .forwarded_packets
            .with_label_values(&labels)
            .inc_by(packets);
        *before = *now;
    }
}

/// Attaches the TC egress program to `name`, in the calling thread's
/// network namespace.
fn attach(ebpf: &mut Ebpf, name: &str) -> Result<(), String> {
    // tcx (Linux 6.6+) needs no qdisc; before that, clsact must exist. Its
    // failure matters only if the attach fails too, and not at all when the
    // qdisc was there already (the kernel's "Exclusivity flag on").
    let clsact = tc::qdisc_add_clsact(name)
        .err()
        .map(|c| c.to_string())
        .filter(|c| !c.contains("Exclusivity flag on"));
    let program: &mut SchedClassifier = ebpf
        .program_mut(TC_PROGRAM)
        .ok_or("program missing from the eBPF object")?
        .try_into()
        .map_err(|e: aya::programs::ProgramError| e.to_string())?;
    program.attach(name, TcAttachType::Egress).map_err(|e| {
        let e = e.to_string();
        // Without tcx (before Linux 6.6) the counter needs the clsact qdisc
        // and the BPF classifier, which are modules on most distributions.
        match clsact {
            Some(c) => {
                format!("{e}; adding the clsact qdisc failed first: {c} (module sch_ingress)")
            }
            None if e.contains("classifier") => format!("{e} (module cls_bpf)"),
            None => e,
        }
    })?;
    Ok(())
}

/// Inode of the calling thread's network namespace.
pub(crate) fn netns_inode() -> std::io::Result<u32> {
    use std::os::unix::fs::MetadataExt as _;
    Ok(std::fs::metadata("/proc/thread-self/ns/net")?.ino() as u32)
}

/// `[dataplane]`: forwarded traffic and the configuration changes that
/// enable relaying (see `crate::dataplane`).
#[derive(Debug, Clone, serde::Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DataplaneConfig {
    pub enabled: bool,
    /// Network namespace of the gateway's interfaces; unset: the monitor's.
    pub netns: Option<std::path::PathBuf>,
    /// Interface roles; interfaces not listed take the default role.
    pub interfaces: Vec<crate::dataplane::iface::IfaceRole>,
    /// Services published from wan on purpose (DNAT port forwards).
    pub published: Vec<crate::dataplane::Published>,
    pub flow_table_capacity: toml::Spanned<u32>,
    pub scan_ms: toml::Spanned<u64>,
    pub report_secs: u64,
    pub idle_secs: u64,
}

impl Default for DataplaneConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            netns: None,
            interfaces: Vec::new(),
            published: Vec::new(),
            flow_table_capacity: toml::Spanned::new(0..0, monitor_common::limits::FWD_FLOWS_MAX),
            scan_ms: toml::Spanned::new(0..0, 1000),
            report_secs: 30,
            idle_secs: 120,
        }
    }
}

impl DataplaneConfig {
    /// The data plane stage's settings.
    pub fn settings(&self) -> crate::dataplane::Settings {
        crate::dataplane::Settings {
            netns: self.netns.clone(),
            roles: self.interfaces.clone(),
            published: self.published.clone(),
            report_ns: crate::clock::secs_to_ns(self.report_secs),
            idle_ns: crate::clock::secs_to_ns(self.idle_secs),
        }
    }
}

#[cfg(test)]
mod tests {
    use monitor_common::event::FwdTuple;

    use super::*;

    fn v4(a: [u8; 4]) -> [u8; 16] {
        crate::net::ip_to_kernel(IpAddr::from(a))
    }

    fn tuple(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16) -> FwdTuple {
        FwdTuple {
            src: v4(src),
            dst: v4(dst),
            sport,
            dport,
            proto: PROTO_TCP,
            _pad: [0; 3],
        }
    }

    fn flow(orig: FwdTuple, reply: FwdTuple) -> (FwdKey, FwdStats) {
        let mut stats = FwdStats {
            reply,
            flags: FWD_CONNTRACK,
            ..Default::default()
        };
        stats.dir[0].packets = 1;
        (
            FwdKey {
                orig,
                netns: 1,
                _pad: 0,
            },
            stats,
        )
    }

    const WAN: Option<Role> = Some(Role::Wan);
    const LAN: Option<Role> = Some(Role::Lan);

    #[test]
    fn dnat_to_an_undeclared_port_is_transit_and_a_published_one_is_not() {
        // 203.0.113.9 -> gw 198.51.100.1:8080, DNAT'd to 10.0.0.5:22.
        let (k, s) = flow(
            tuple([203, 0, 113, 9], 40000, [198, 51, 100, 1], 8080),
            tuple([10, 0, 0, 5], 22, [203, 0, 113, 9], 40000),
        );
        assert_eq!(
            classify(&k, &s, (WAN, LAN), &[]),
            Some(TransitReason::DnatUnpublished)
        );
        let published = [Published {
            proto: Proto::Tcp,
            port: 8080,
            to: None,
        }];
        assert_eq!(classify(&k, &s, (WAN, LAN), &published), None);
        let elsewhere = [Published {
            proto: Proto::Tcp,
            port: 8080,
            to: Some(IpAddr::from([10, 0, 0, 6])),
        }];
        assert_eq!(
            classify(&k, &s, (WAN, LAN), &elsewhere),
            Some(TransitReason::DnatUnpublished),
            "published to another host"
        );
        let udp = [Published {
            proto: Proto::Udp,
            port: 8080,
            to: None,
        }];
        assert!(
            classify(&k, &s, (WAN, LAN), &udp).is_some(),
            "other protocol"
        );
    }

    #[test]
    fn routed_without_dnat_and_outbound_flows_are_not_transit() {
        let (k, s) = flow(
            tuple([203, 0, 113, 9], 40000, [10, 0, 0, 5], 22),
            tuple([10, 0, 0, 5], 22, [203, 0, 113, 9], 40000),
        );
        assert_eq!(classify(&k, &s, (WAN, LAN), &[]), None);
        assert_eq!(classify(&k, &s, (LAN, WAN), &[]), None);
    }

    #[test]
    fn wan_to_wan_is_a_hairpin() {
        let (k, s) = flow(
            tuple([203, 0, 113, 9], 40000, [198, 51, 100, 1], 8080),
            tuple([198, 51, 100, 7], 80, [198, 51, 100, 1], 50000),
        );
        assert_eq!(
            classify(&k, &s, (WAN, WAN), &[]),
            Some(TransitReason::Hairpin)
        );
    }

    #[test]
    fn flow_ids_are_stable_and_json_safe() {
        let (k, _) = flow(
            tuple([203, 0, 113, 9], 40000, [198, 51, 100, 1], 8080),
            FwdTuple::default(),
        );
        assert_eq!(flow_id(&k), flow_id(&k));
        assert!(flow_id(&k) < 1 << 53);
    }
}
