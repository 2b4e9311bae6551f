//! Traffic tunnelled inside another protocol (ATT&CK T1572), judged from
//! sizes, rates and first bytes, never from a tool's name or a port number
//! alone:
//!
//! - **ICMP**: an echo flow whose answers are not echoes. The kernel
//!   answers a ping with the same payload it got; a tunnel's other end
//!   crafts its own. The first payload sent and the first received are
//!   compared (past the first 16 bytes, where pings put their clocks).
//! - **DNS**: a steady stream of queries with long names to one server:
//!   at least `DNS_QUERIES` queries averaging `DNS_QUERY_BYTES` or more,
//!   on one flow or on the flows one process opened to that server within
//!   a minute. Ordinary lookups are a few queries of 30 to 60 bytes.
//! - **HTTP**: a connection of the gateway's that began with an HTTP
//!   request and, once answered, went on in another protocol (the first
//!   bytes it sent after the answer are not a request line: a websocket, a
//!   shell or a proxy inside the stream) carrying traffic both ways.
//!   Plain keep-alive HTTP sends requests again.
//!
//! The same tests apply to what the gateway forwards (`forward` records:
//! a LAN host's DNS or ICMP tunnel through the gateway), in the data plane
//! stage, through [`dns_verdict`] and [`icmp_sizes_verdict`].

use std::collections::{HashMap, HashSet, VecDeque};

use monitor_common::event::{FlowStats, AFTER_ANSWER_HTTP, AFTER_ANSWER_OTHER, FP_HTTP};

use super::{sides::Side, table::FlowId, tracker::flow_key, NetTracker};
use crate::event::{Direction, Endpoint, Event, Proto};

/// Queries that make a stream (on one flow, or within `DNS_WINDOW_NS`).
pub const DNS_QUERIES: u64 = 12;
/// Average query payload of a tunnel: names of 70 characters or more.
pub const DNS_QUERY_BYTES: u64 = 100;
const DNS_WINDOW_NS: u64 = 60_000_000_000;
const DNS_PORT: u16 = 53;
/// Echo packets each way before an ICMP flow is judged.
const ICMP_PACKETS: u64 = 2;
/// Bytes at the start of an echo payload a ping may change per packet.
const PING_CLOCK_BYTES: usize = 16;
/// Samples of an HTTP connection kept after it changed protocol.
const HTTP_WINDOW: usize = 30;

pub use crate::event::tunnel::{Carrier, TunnelRecord};

/// Queries and their bytes toward a DNS server.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Queries {
    pub count: u64,
    pub bytes: u64,
}

/// The DNS verdict on a stream of queries: the reason when it is a tunnel.
pub fn dns_verdict(q: Queries) -> Option<String> {
    if q.count < DNS_QUERIES {
        return None;
    }
    let avg = q.bytes / q.count;
    (avg >= DNS_QUERY_BYTES).then(|| {
        format!(
            "{} queries to one server averaging {avg} bytes (ordinary lookups are 30 to 60)",
            q.count
        )
    })
}

/// The ICMP verdict from the first echo payload sent and the first
/// received: the reason when the answer is not an echo.
pub fn icmp_payload_verdict(sent: &[u8], received: &[u8]) -> Option<String> {
    if sent.len() != received.len() {
        return Some(format!(
            "echo answered with {} payload bytes to {}: not an echo",
            received.len(),
            sent.len()
        ));
    }
    let tail = |b: &[u8]| b.get(PING_CLOCK_BYTES..).unwrap_or(&[]).to_vec();
    (tail(sent) != tail(received))
        .then(|| "echo answered with other payload bytes: not an echo".to_owned())
}

/// The ICMP verdict from sizes alone (forwarded flows, whose bytes the
/// monitor does not see): requests and answers of different average size.
pub fn icmp_sizes_verdict(requests: (u64, u64), answers: (u64, u64)) -> Option<String> {
    let ((rp, rb), (ap, ab)) = (requests, answers);
    if rp < 4 || ap < 4 {
        return None;
    }
    let (ravg, aavg) = (rb / rp, ab / ap);
    (ravg.abs_diff(aavg) > 8).then(|| {
        format!("echo requests of {ravg} bytes answered with {aavg} on average: not echoes")
    })
}

/// Counter samples of an HTTP connection, newest last: (in, out) deltas.
#[derive(Default)]
struct HttpSeries {
    last: Option<(u64, u64)>,
    deltas: VecDeque<(u64, u64)>,
    seen_ns: u64,
}

pub use super::Context;

/// Declared exceptions: a process whose executable is listed here is
/// never reported (a monitoring agent polling over HTTP, a DNS forwarder).
#[derive(Debug, Clone, Default)]
pub struct TunnelSettings {
    pub allowed_exes: Vec<String>,
}

#[derive(Default)]
pub struct TunnelDetector {
    /// Open flows under watch (DNS, ICMP echo and HTTP ones): when the
    /// watch began, and when a tick last read the flow's counters.
    watched: HashMap<FlowId, (u64, u64)>,
    /// DNS queries of recently ended flows, by process and server.
    dns_recent: HashMap<(u32, std::net::IpAddr), VecDeque<(u64, Queries)>>,
    http: HashMap<FlowId, HttpSeries>,
    reported: HashSet<FlowId>,
    reported_servers: HashSet<(u32, std::net::IpAddr)>,
}

/// Flows watched for less than this are read every tick.
const WATCH_FRESH_NS: u64 = 2_000_000_000;
/// An outbound connection that sent nothing for this long is not watched
/// for HTTP any more.
const WATCH_QUIET_NS: u64 = 10_000_000_000;
/// Older flows read at most per tick.
const OLD_READ_PER_TICK: usize = 1024;

/// Flows reported at most, past which the memory of them starts over.
const REPORTED_MAX: usize = 16_384;

fn is_dns(id: &FlowId, local: &Endpoint) -> bool {
    id.proto == Proto::Udp && (id.remote.port == DNS_PORT || local.port == DNS_PORT)
}

impl TunnelDetector {
    /// Takes new flows under watch, and judges those that ended.
    pub fn observe(
        &mut self,
        events: &[Event],
        ctx: &Context<'_>,
        settings: &TunnelSettings,
        now: u64,
    ) -> Vec<TunnelRecord> {
        let mut out = Vec::new();
        for (id, open, r) in events.iter().filter_map(super::flow_change) {
            if open {
                let watch = match id.proto {
                    // Outbound connections, until their first bytes say
                    // whether they are HTTP.
                    Proto::Tcp => r.direction == Some(Direction::Outbound),
                    Proto::Icmp => true,
                    Proto::Udp => r.local.is_some_and(|l| is_dns(&id, &l)),
                };
                if watch {
                    self.watched.insert(id, (now, now));
                }
                continue;
            }
            if self.watched.remove(&id).is_some() {
                if let Some(t) = self.judge_ended(&id, ctx, settings, now) {
                    out.push(t);
                }
            }
            self.http.remove(&id);
        }
        out
    }

    /// Judges the open flows under watch (every `relay.check_ms`).
    pub fn sample(
        &mut self,
        ctx: &Context<'_>,
        settings: &TunnelSettings,
        now: u64,
    ) -> Vec<TunnelRecord> {
        let mut out = Vec::new();
        // Flows watched for under two seconds are read every tick; older
        // ones once a second, the longest waiting first and at most
        // `OLD_READ_PER_TICK` of them: the work of a tick stays bounded
        // whatever the number of open connections.
        let due_after = |since: u64| {
            if now.saturating_sub(since) < WATCH_FRESH_NS {
                0
            } else {
                1_000_000_000
            }
        };
        let mut ids: Vec<(bool, u64, FlowId)> = self
            .watched
            .iter()
            .filter(|(_, (since, checked))| now.saturating_sub(*checked) >= due_after(*since))
            .map(|(id, (since, checked))| {
                (now.saturating_sub(*since) >= WATCH_FRESH_NS, *checked, *id)
            })
            .collect();
        ids.sort_unstable_by_key(|(old, checked, _)| (*old, *checked));
        let fresh = ids.iter().filter(|(old, _, _)| !old).count();
        ids.truncate(fresh + OLD_READ_PER_TICK);
        for (_, _, id) in ids {
            let since = match self.watched.get_mut(&id) {
                Some(w) => {
                    w.1 = now;
                    w.0
                }
                None => continue,
            };
            if self.reported.contains(&id) {
                continue;
            }
            let Some(flow) = ctx.net.flows.get(&id) else {
                self.watched.remove(&id);
                self.http.remove(&id);
                continue;
            };
            let Some(stats) = ctx.map.get(&flow_key(&id)) else {
                continue;
            };
            let reason = match id.proto {
                Proto::Icmp => self.icmp(&id, &stats, ctx),
                Proto::Udp => dns_verdict(queries(&id, &flow.local, &stats)),
                Proto::Tcp if stats.fp_out == FP_HTTP => self.http(&id, &stats, now),
                Proto::Tcp => {
                    // Not an HTTP request, or silent for long (an HTTP
                    // client speaks first, at once): no longer of
                    // interest.
                    if stats.bytes_out > 0 || now.saturating_sub(since) > WATCH_QUIET_NS {
                        self.watched.remove(&id);
                    }
                    None
                }
            };
            if let Some(reason) = reason {
                if let Some(t) = self.report(&id, flow.clone(), &stats, reason, ctx, settings, now)
                {
                    out.push(t);
                }
            }
        }
        self.http
            .retain(|_, s| now.saturating_sub(s.seen_ns) < 2 * DNS_WINDOW_NS);
        // Servers whose queries all left the window.
        self.dns_recent.retain(|_, q| {
            q.back()
                .is_some_and(|(t, _)| now.saturating_sub(*t) <= DNS_WINDOW_NS)
        });
        out
    }

    fn icmp(&self, id: &FlowId, stats: &FlowStats, ctx: &Context<'_>) -> Option<String> {
        if stats.pkts_out < ICMP_PACKETS || stats.pkts_in < ICMP_PACKETS {
            return None;
        }
        let head = ctx.map.proxy_head(&flow_key(id))?;
        let sent = &head.data_out[..usize::from(head.len_out).min(head.data_out.len())];
        let got = &head.data_in[..usize::from(head.len_in).min(head.data_in.len())];
        if sent.is_empty() || got.is_empty() {
            return None;
        }
        icmp_payload_verdict(sent, got)
    }

    /// An HTTP connection whose client, once answered, went on in
    /// another protocol (the kernel reads the first bytes it sent after
    /// the answer), and kept exchanging both ways.
    fn http(&mut self, id: &FlowId, stats: &FlowStats, now: u64) -> Option<String> {
        match stats.after_answer {
            AFTER_ANSWER_HTTP => {
                // Keep-alive HTTP: not a tunnel.
                self.watched.remove(id);
                self.http.remove(id);
                return None;
            }
            AFTER_ANSWER_OTHER => {}
            _ => return None,
        }
        let s = self.http.entry(*id).or_default();
        s.seen_ns = now;
        let cur = (stats.bytes_in, stats.bytes_out);
        if let Some(prev) = s.last.replace(cur) {
            s.deltas
                .push_back((cur.0.saturating_sub(prev.0), cur.1.saturating_sub(prev.1)));
            if s.deltas.len() > HTTP_WINDOW {
                s.deltas.pop_front();
            }
        }
        let (got, sent) = s
            .deltas
            .iter()
            .fold((0, 0), |(a, b), (i, o)| (a + i, b + o));
        (got > 0 && sent > 0).then(|| {
            format!(
                "after an HTTP exchange the connection went on in another protocol, both ways ({sent} bytes out, {got} in since)"
            )
        })
    }

    /// A flow that ended: its final counts, and for DNS its process's
    /// queries to that server within the last minute.
    fn judge_ended(
        &mut self,
        id: &FlowId,
        ctx: &Context<'_>,
        settings: &TunnelSettings,
        now: u64,
    ) -> Option<TunnelRecord> {
        let (flow, stats) = ctx
            .net
            .recently_closed
            .get(&id.socket)?
            .iter()
            .find(|(f, _)| f.id == *id)
            .map(|(f, s)| (f.clone(), *s))?;
        if self.reported.contains(id) {
            return None;
        }
        let reason = match id.proto {
            Proto::Icmp => self.icmp(id, &stats, ctx),
            Proto::Udp if is_dns(id, &flow.local) => {
                let q = queries(id, &flow.local, &stats);
                dns_verdict(q).or_else(|| {
                    let key = (flow.owner, id.remote.addr);
                    if flow.owner == 0 || self.reported_servers.contains(&key) {
                        return None;
                    }
                    let recent = self.dns_recent.entry(key).or_default();
                    recent.push_back((now, q));
                    while recent
                        .front()
                        .is_some_and(|(t, _)| now.saturating_sub(*t) > DNS_WINDOW_NS)
                    {
                        recent.pop_front();
                    }
                    let total = recent.iter().fold(Queries::default(), |a, (_, q)| Queries {
                        count: a.count + q.count,
                        bytes: a.bytes + q.bytes,
                    });
                    let verdict =
                        dns_verdict(total).map(|r| format!("{r}, over {} sockets", recent.len()));
                    if verdict.is_some() {
                        self.reported_servers.insert(key);
                        self.dns_recent.remove(&key);
                    }
                    verdict
                })
            }
            _ => None,
        }?;
        self.report(id, flow, &stats, reason, ctx, settings, now)
    }

    #[allow(clippy::too_many_arguments)]
    fn report(
        &mut self,
        id: &FlowId,
        flow: super::Flow,
        stats: &FlowStats,
        reason: String,
        ctx: &Context<'_>,
        settings: &TunnelSettings,
        now: u64,
    ) -> Option<TunnelRecord> {
        if self.reported.len() >= REPORTED_MAX {
            self.reported.clear();
            self.reported_servers.clear();
        }
        self.reported.insert(*id);
        let process = NetTracker::process_ref(ctx.procs, flow.owner, "");
        if process
            .as_ref()
            .and_then(|p| p.exe.as_ref())
            .is_some_and(|e| settings.allowed_exes.contains(e))
        {
            return None;
        }
        let protocol = match id.proto {
            Proto::Icmp => Carrier::Icmp,
            Proto::Udp => Carrier::Dns,
            Proto::Tcp => Carrier::Http,
        };
        Some(TunnelRecord {
            ts: ctx.clock.rfc3339(now),
            protocol,
            reason,
            forwarded: false,
            netns: flow.netns,
            process,
            socket: Some(id.socket),
            flow_id: None,
            proto: id.proto,
            local: flow.local,
            remote: id.remote,
            direction: flow.direction,
            side: ctx
                .sides
                .map_or(Side::Unknown, |m| m.side(flow.netns, id.remote.addr)),
            packets_sent: stats.pkts_out,
            packets_received: stats.pkts_in,
            bytes_sent: stats.bytes_out,
            bytes_received: stats.bytes_in,
        })
    }
}

/// The queries of a DNS flow: what went to the server (this machine asks)
/// or came from the client (this machine serves DNS).
fn queries(id: &FlowId, local: &Endpoint, stats: &FlowStats) -> Queries {
    if !is_dns(id, local) {
        return Queries::default();
    }
    if id.remote.port == DNS_PORT {
        Queries {
            count: stats.pkts_out,
            bytes: stats.bytes_out,
        }
    } else {
        Queries {
            count: stats.pkts_in,
            bytes: stats.bytes_in,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stream_of_long_queries_is_a_dns_tunnel() {
        assert!(dns_verdict(Queries {
            count: 40,
            bytes: 40 * 160
        })
        .is_some());
        // Many ordinary lookups (a busy resolver), or a few long ones.
        assert!(dns_verdict(Queries {
            count: 500,
            bytes: 500 * 55
        })
        .is_none());
        assert!(dns_verdict(Queries {
            count: 3,
            bytes: 3 * 200
        })
        .is_none());
    }

    #[test]
    fn echoes_mirror_their_requests_and_tunnels_do_not() {
        let mut ping = vec![0u8; 56];
        ping[..8].copy_from_slice(&1_700_000_000u64.to_le_bytes());
        for (i, b) in ping.iter_mut().enumerate().skip(16) {
            *b = i as u8;
        }
        // The answer to a later request: its clock differs, its pattern not.
        let mut later = ping.clone();
        later[..8].copy_from_slice(&1_700_000_001u64.to_le_bytes());
        assert_eq!(icmp_payload_verdict(&ping, &later), None);
        let mut crafted = ping.clone();
        crafted[40] ^= 0x55;
        assert!(icmp_payload_verdict(&ping, &crafted).is_some());
        assert!(icmp_payload_verdict(&ping, &ping[..40]).is_some());
        // Forwarded: only sizes.
        assert_eq!(icmp_sizes_verdict((10, 640), (10, 640)), None);
        assert_eq!(
            icmp_sizes_verdict((10, 640), (7, 448)),
            None,
            "lost answers"
        );
        assert!(icmp_sizes_verdict((10, 640), (10, 3000)).is_some());
    }
}
