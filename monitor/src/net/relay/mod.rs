//! Relay detection by behaviour: two connections whose bytes pass from one
//! to the other, both ways, held by one process or by processes joined by
//! a pipe, a unix socket or parentage.
//!
//! Names and ports lie; the shape of the traffic does not. Pairs of
//! connections come from two places:
//!
//! - **events** ([`RelayDetector::observe`]): when a connection opens, it
//!   is paired with the connection its process last read from before it
//!   dialled or accepted (the kernel records that trigger: a proxy reads a
//!   request, then dials), and with the connections its process, its
//!   ancestors and its pipe peers opened just before. A pair is judged at
//!   once on a proxy request's named target, then every tick
//!   ([`RelayDetector::tick`]) and at each leg's close, so a relay that
//!   carries a single short request and answer, or starts and ends between
//!   two samples, is reported within a tick of its first exchange;
//! - **sampling** ([`RelayDetector::sample`]): every `relay.sample_ms`,
//!   the connections each process used lately (the kernel's per-process
//!   socket activity, and owners) are paired and judged, which finds
//!   long-lived relays older than the monitor and slow interactive ones;
//! - **unix joins** (every tick): the recent connections of two processes
//!   that pass data over one unix stream connection (`UNIX_LINKS`) are
//!   paired, one holding the inbound leg and the other dialling out.
//!
//! The judgement itself is in [`score`]; the proxy request parser in
//! [`proxy`].

pub mod proxy;
pub mod score;

use std::collections::{HashMap, HashSet, VecDeque};

use monitor_common::event::{FlowStats, IoKey, IoStats};
use serde::Deserialize;

use self::score::{Counts, Handshake, Window};
use super::{
    sides::Side,
    table::{Flow, FlowId},
    tracker::flow_key,
    NetTracker,
};
pub use crate::event::relay::{Leg, Method, ProxyRequest, RelayRecord, Via};
use crate::{
    event::{Direction, Event, Proto},
    process::ProcessTable,
};

/// A proxy the operator runs on purpose: its relays are reported as
/// allowed and raise nothing.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AllowedProxy {
    /// Executable path, as events show it.
    pub exe: String,
    /// Local ports it serves on; empty: any.
    #[serde(default)]
    pub ports: Vec<u16>,
}

#[derive(Debug, Clone)]
pub struct RelaySettings {
    /// Bytes each way after which a balanced pair is a bulk relay.
    pub volume_bytes: u64,
    /// A connection counts for a process if it used it this recently.
    pub active_ns: u64,
    /// Correlated samples each way that make a low-volume pair a relay.
    pub interactive_samples: u32,
    pub allowed: Vec<AllowedProxy>,
}

pub use super::Context;

/// Counter samples of one connection, newest last: (boot ns, in, out).
#[derive(Default)]
struct Series {
    samples: VecDeque<(u64, u64, u64)>,
    last_seen: u64,
}

/// Samples kept per connection: enough for the interactive test.
const SERIES_LEN: usize = 120;
/// Connections of one process paired at most by sampling (the most
/// recently active).
const LEGS_PER_PROCESS: usize = 32;
/// Ancestor levels a relay may span: a leg handed to a child through a
/// pipe (`ncat -l --sh-exec "ncat host port"`).
const RELAY_ANCESTOR_LEVELS: usize = 3;
/// Pairs remembered as reported, so one relay raises one event.
const REPORTED_MAX: usize = 16_384;
/// A connection opened this soon after another of its process's group is
/// paired with it (a forwarder accepts, then dials at once).
const PAIR_WINDOW_NS: u64 = 2_000_000_000;
/// Recent connections kept per process for pairing.
const LEGS_KEPT: usize = 64;
/// Partners a new connection is paired with at most.
const PARTNERS_MAX: usize = 8;
/// Open pairs under watch at most; past it new pairs are not watched and
/// counted (`dropped`).
const CANDIDATES_MAX: usize = 8192;
/// A leg this much older than the other is measured from the other's start.
const OLDER_LEG_NS: u64 = 1_000_000_000;
/// A pair is watched this long after it was made, then left to sampling.
const CANDIDATE_TTL_NS: u64 = 60_000_000_000;
/// A pair over which nothing moved either way this long after it was
/// made is left to sampling (a server's idle clients, paired with each
/// other, would otherwise be judged every tick for a minute).
const CANDIDATE_IDLE_NS: u64 = 5_000_000_000;
/// Pairs younger than this are judged every tick (a short relay is
/// reported within a tick of its exchange); older ones once a second.
const CANDIDATE_FRESH_NS: u64 = 2_000_000_000;
/// Older pairs judged at most per tick, longest waiting first: the work
/// of a tick stays bounded whatever the number of pairs under watch.
const OLD_JUDGED_PER_TICK: usize = 1024;

/// A pair of connections under watch.
#[derive(Debug, Clone)]
struct Candidate {
    /// The leg the relaying process read from before it dialled (or the
    /// older one).
    first: FlowId,
    second: FlowId,
    /// The process holding `first`, and the one that opened `second`
    /// (the same process unless they are joined by parentage or a pipe).
    holder: u32,
    relayer: u32,
    via: Via,
    /// What the relaying process had received from and sent on `first`
    /// when it opened `second`, when `first` was its trigger.
    handshake: Option<Handshake>,
    /// `second` has a known trigger (another connection than `first` when
    /// `handshake` is none): the request that made the process dial came
    /// from there, so a proxy request on `first` did not.
    trigger_known: bool,
    created_ns: u64,
    /// When a tick last judged it.
    judged_ns: u64,
}

/// One leg as the detector judges it: the flow and its counters, open or
/// ended.
#[derive(Debug, Clone)]
struct LegView {
    flow: Flow,
    stats: FlowStats,
}

impl LegView {
    fn counts(&self) -> Counts {
        Counts {
            bytes_in: self.stats.bytes_in,
            bytes_out: self.stats.bytes_out,
            first_ns: self.stats.first_ns,
            last_ns: self.stats.last_ns,
            first_in_ns: self.stats.first_in_ns,
            first_out_ns: self.stats.first_out_ns,
        }
    }

    /// Whether either way began with a proxy protocol.
    fn proxy_fp(&self) -> bool {
        proxy::protocol_name(self.stats.fp_in).is_some()
            || proxy::protocol_name(self.stats.fp_out).is_some()
    }
}

/// Counts of the detector's work, for the metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RelayStats {
    /// Pairs of connections judged.
    pub examined: u64,
    /// Pairs not watched because the watch list was full.
    pub dropped: u64,
}

#[derive(Default)]
pub struct RelayDetector {
    series: HashMap<FlowId, Series>,
    reported: HashSet<(FlowId, FlowId)>,
    /// UDP relays reported, by their two sockets: one socket's other
    /// clients are the same relay.
    reported_sockets: HashSet<(u64, u64)>,
    candidates: HashMap<(FlowId, FlowId), Candidate>,
    /// Connections each process opened or read from lately, newest last,
    /// with when they opened.
    legs_of: HashMap<u32, VecDeque<(FlowId, u64)>>,
    /// Set by `judge` when nothing has moved on either leg of the pair it
    /// judged.
    idle: bool,
    /// Recent forks, oldest first: (when, parent, child). A forking server
    /// accepts in the parent and moves the bytes in a child, so a unix
    /// join of the child counts for the parent's connections.
    forks: VecDeque<(u64, u32, u32)>,
    stats: RelayStats,
}

/// Recent forks remembered at most (see `RelayDetector::forks`).
const FORKS_KEPT: usize = 4096;

/// The unordered key of a pair.
fn pair_key(a: &FlowId, b: &FlowId) -> (FlowId, FlowId) {
    (a.min_by_socket(b), a.max_by_socket(b))
}

/// The view of a leg: open (its live counters) or recently ended (its
/// final ones).
fn view(id: &FlowId, ctx: &Context<'_>) -> Option<LegView> {
    if let Some(f) = ctx.net.flows.get(id) {
        // No packet counted yet (an accepted connection whose client has
        // not spoken): nothing moved.
        let stats = ctx.map.get(&flow_key(id)).unwrap_or(FlowStats {
            first_ns: f.seen_ns,
            ..FlowStats::default()
        });
        return Some(LegView {
            flow: f.clone(),
            stats,
        });
    }
    ctx.net
        .recently_closed
        .get(&id.socket)?
        .iter()
        .find(|(f, _)| f.id == *id)
        .map(|(f, s)| LegView {
            flow: f.clone(),
            stats: *s,
        })
}

/// The counts of every flow of a UDP leg's socket, open or recently ended,
/// summed; the earliest first-payload times.
fn socket_counts(id: &FlowId, ctx: &Context<'_>) -> Counts {
    let mut all: Vec<FlowStats> = ctx
        .net
        .flows
        .of_socket(id.socket)
        .iter()
        .filter_map(|f| ctx.map.get(&flow_key(f)))
        .collect();
    all.extend(
        ctx.net
            .recently_closed
            .get(&id.socket)
            .into_iter()
            .flatten()
            .map(|(_, s)| *s),
    );
    let min_known = |a: u64, b: u64| match (a, b) {
        (0, x) | (x, 0) => x,
        (x, y) => x.min(y),
    };
    all.iter().fold(Counts::default(), |acc, s| Counts {
        bytes_in: acc.bytes_in + s.bytes_in,
        bytes_out: acc.bytes_out + s.bytes_out,
        first_ns: min_known(acc.first_ns, s.first_ns),
        last_ns: acc.last_ns.max(s.last_ns),
        first_in_ns: min_known(acc.first_in_ns, s.first_in_ns),
        first_out_ns: min_known(acc.first_out_ns, s.first_out_ns),
    })
}

/// A leg's flow: open, or recently ended.
fn flow_of<'a>(id: &FlowId, ctx: &Context<'a>) -> Option<&'a Flow> {
    if let Some(f) = ctx.net.flows.get(id) {
        return Some(f);
    }
    ctx.net
        .recently_closed
        .get(&id.socket)?
        .iter()
        .find(|(f, _)| f.id == *id)
        .map(|(f, _)| f)
}

/// When the monitor learnt of a leg (its accept or connect).
fn opened_ns(id: &FlowId, ctx: &Context<'_>) -> Option<u64> {
    flow_of(id, ctx).map(|f| f.seen_ns)
}

/// Whether the detector can still see a leg: open, or recently ended.
fn known(id: &FlowId, ctx: &Context<'_>) -> bool {
    flow_of(id, ctx).is_some()
}

/// The two ends of one local connection (a parent talking to its child
/// over loopback) carry the same bytes by definition: never a relay.
fn one_connection(a: &LegView, b: &LegView) -> bool {
    a.flow.local == b.flow.id.remote && b.flow.local == a.flow.id.remote
}

impl RelayDetector {
    pub fn stats(&self) -> &RelayStats {
        &self.stats
    }

    /// Reacts to the socket events of a batch: pairs each new connection
    /// and judges pairs whose leg closed. Returns the relays found.
    pub fn observe(
        &mut self,
        events: &[Event],
        ctx: &Context<'_>,
        settings: &RelaySettings,
        now: u64,
    ) -> Vec<RelayRecord> {
        let mut out = Vec::new();
        for ev in events {
            if let Event::Fork(f) = ev {
                if self.forks.len() >= FORKS_KEPT {
                    self.forks.pop_front();
                }
                self.forks.push_back((now, f.task.ppid, f.task.pid));
            }
        }
        for (id, open, r) in events.iter().filter_map(super::flow_change) {
            if open {
                let pid = r.process.as_ref().map_or(0, |p| p.pid);
                self.opened(id, pid, ctx, settings, now, &mut out);
            } else {
                self.closed(id, ctx, settings, now, &mut out);
            }
        }
        out
    }

    /// A new connection `id` of process `pid`: pairs it.
    fn opened(
        &mut self,
        id: FlowId,
        pid: u32,
        ctx: &Context<'_>,
        settings: &RelaySettings,
        now: u64,
        out: &mut Vec<RelayRecord>,
    ) {
        if pid == 0 {
            return;
        }
        let mut partners: Vec<(FlowId, u32, Via, Option<Handshake>)> = Vec::new();
        let mut trigger_known = false;
        // The connection the process read from before this one opened.
        // The flow may have ended already when a batch brings its open and
        // its close together (a relay done in milliseconds).
        if let Some(flow) = flow_of(&id, ctx) {
            let t = flow.trigger;
            trigger_known = t.cookie != 0;
            if t.cookie != 0 && t.cookie != id.socket {
                let hs = Handshake {
                    received: t.bytes_received,
                    sent: t.bytes_sent,
                };
                let open = ctx.net.flows.of_socket(t.cookie);
                let ended = ctx
                    .net
                    .recently_closed
                    .get(&t.cookie)
                    .into_iter()
                    .flatten()
                    .map(|(f, _)| f.id);
                for a in open.into_iter().chain(ended) {
                    partners.push((a, pid, Via::Process, Some(hs)));
                }
            }
        }
        // Connections its group opened just before, and every open one of
        // its pipe peers. An ancestor's connection counts only when it
        // opened before this process started: it was handed down, or the
        // process was started to serve it (a forking listener, `ncat
        // --sh-exec`); what an ancestor opens later is its own business.
        let started = ctx
            .procs
            .get(pid)
            .and_then(|p| p.start_boot_ns)
            .unwrap_or(u64::MAX);
        for (member, via) in group(pid, ctx.procs, &self.legs_of) {
            let Some(legs) = self.legs_of.get(&member) else {
                continue;
            };
            for (a, at) in legs.iter().rev() {
                if via != Via::Pipe && now.saturating_sub(*at) > PAIR_WINDOW_NS {
                    break;
                }
                if via == Via::Ancestor && opened_ns(a, ctx).is_some_and(|t| t > started) {
                    continue;
                }
                // Open, or ended moments ago: a batch of records can
                // bring a quick relay's accept after its other leg's close.
                if known(a, ctx) {
                    partners.push((*a, member, via, None));
                }
            }
        }
        let legs = self.legs_of.entry(pid).or_default();
        legs.push_back((id, now));
        if legs.len() > LEGS_KEPT {
            legs.pop_front();
        }
        self.pair(
            id,
            pid,
            partners,
            trigger_known,
            true,
            ctx,
            settings,
            now,
            out,
        );
    }

    /// Puts `id` (process `pid`'s connection) under watch with each of
    /// `partners`, judging each pair at once: on a proxy request only when
    /// `opening` (the connection just opened, no bytes can tell yet).
    #[allow(clippy::too_many_arguments)]
    fn pair(
        &mut self,
        id: FlowId,
        pid: u32,
        partners: Vec<(FlowId, u32, Via, Option<Handshake>)>,
        trigger_known: bool,
        opening: bool,
        ctx: &Context<'_>,
        settings: &RelaySettings,
        now: u64,
        out: &mut Vec<RelayRecord>,
    ) {
        let mut made = 0;
        for (a, holder, via, handshake) in partners {
            if a == id || made >= PARTNERS_MAX {
                continue;
            }
            let key = pair_key(&a, &id);
            if self.reported.contains(&key) || self.candidates.contains_key(&key) {
                continue;
            }
            if self.candidates.len() >= CANDIDATES_MAX {
                self.stats.dropped += 1;
                continue;
            }
            made += 1;
            let cand = Candidate {
                first: a,
                second: id,
                holder,
                relayer: pid,
                via,
                handshake,
                trigger_known,
                created_ns: now,
                judged_ns: now,
            };
            if let Some(r) = self.judge(&cand, ctx, settings, now, opening) {
                out.push(r);
            } else {
                self.candidates.insert(key, cand);
            }
        }
    }

    /// A connection ended: its pairs are judged on the final counts, and
    /// pairs whose both legs ended are settled.
    fn closed(
        &mut self,
        id: FlowId,
        ctx: &Context<'_>,
        settings: &RelaySettings,
        now: u64,
        out: &mut Vec<RelayRecord>,
    ) {
        let keys: Vec<(FlowId, FlowId)> = self
            .candidates
            .keys()
            .filter(|(a, b)| *a == id || *b == id)
            .copied()
            .collect();
        for key in keys {
            let Some(cand) = self.candidates.get(&key).cloned() else {
                continue;
            };
            if let Some(r) = self.judge(&cand, ctx, settings, now, false) {
                out.push(r);
                self.candidates.remove(&key);
                continue;
            }
            let other = if cand.first == id {
                cand.second
            } else {
                cand.first
            };
            if ctx.net.flows.get(&other).is_none() {
                self.candidates.remove(&key);
            }
        }
    }

    /// Judges every pair under watch; forgets those too old or gone.
    pub fn tick(
        &mut self,
        ctx: &Context<'_>,
        settings: &RelaySettings,
        now: u64,
    ) -> Vec<RelayRecord> {
        let mut out = Vec::new();
        let fresh = |c: &Candidate| now.saturating_sub(c.created_ns) < CANDIDATE_FRESH_NS;
        let mut due: Vec<((FlowId, FlowId), Candidate)> = self
            .candidates
            .iter()
            .filter(|(_, c)| fresh(c) || now.saturating_sub(c.judged_ns) >= CANDIDATE_FRESH_NS / 2)
            .map(|(k, c)| (*k, c.clone()))
            .collect();
        // Fresh pairs all; older ones longest waiting first, up to the
        // budget (the rest wait for a later tick).
        due.sort_by_key(|(_, c)| (!fresh(c), c.judged_ns));
        let fresh_n = due.iter().filter(|(_, c)| fresh(c)).count();
        due.truncate(fresh_n + OLD_JUDGED_PER_TICK);
        for (key, cand) in due {
            self.idle = false;
            if let Some(r) = self.judge(&cand, ctx, settings, now, false) {
                out.push(r);
                self.candidates.remove(&key);
                continue;
            }
            let age = now.saturating_sub(cand.created_ns);
            let open = |f: &FlowId| ctx.net.flows.get(f).is_some();
            if age > CANDIDATE_TTL_NS
                || (self.idle && age > CANDIDATE_IDLE_NS)
                || (!open(&cand.first) && !open(&cand.second))
            {
                self.candidates.remove(&key);
            } else if let Some(c) = self.candidates.get_mut(&key) {
                c.judged_ns = now;
            }
        }
        self.join_unix(ctx, settings, now, &mut out);
        // Forget processes whose connections are all gone.
        self.legs_of.retain(|_, legs| {
            legs.retain(|(id, at)| {
                now.saturating_sub(*at) <= PAIR_WINDOW_NS || ctx.net.flows.get(id).is_some()
            });
            !legs.is_empty()
        });
        out
    }

    /// Pairs the recent connections of processes joined by a unix socket
    /// (one holds the inbound leg and writes to the socket, the other
    /// reads from it and dials). The kernel learns of the join at the
    /// first bytes the processes pass, which usually come after the dial,
    /// so this runs every tick over the connections of the last
    /// `PAIR_WINDOW_NS`, pairing each with the peer's connections opened
    /// before it in that window. A process's unix connections include
    /// those of the children it forked in the window (a forking server
    /// accepts, then a child moves the bytes). Reads one kernel record per
    /// process holding recent connections and per such child, and nothing
    /// unless two processes hold recent connections.
    fn join_unix(
        &mut self,
        ctx: &Context<'_>,
        settings: &RelaySettings,
        now: u64,
        out: &mut Vec<RelayRecord>,
    ) {
        let since = now.saturating_sub(PAIR_WINDOW_NS);
        while self.forks.front().is_some_and(|(at, _, _)| *at < since) {
            self.forks.pop_front();
        }
        let holders: Vec<u32> = self
            .legs_of
            .iter()
            .filter(|(_, legs)| legs.back().is_some_and(|(_, at)| *at >= since))
            .map(|(pid, _)| *pid)
            .collect();
        if holders.len() < 2 {
            return;
        }
        let mut links: HashMap<u32, Vec<u64>> = HashMap::new();
        for &h in &holders {
            let members = std::iter::once(h).chain(
                self.forks
                    .iter()
                    .filter(|(_, parent, _)| *parent == h)
                    .map(|(_, _, child)| *child),
            );
            let ids: Vec<u64> = members
                .filter_map(|p| ctx.map.unix_links(p))
                .flat_map(|l| l.ids)
                .filter(|id| *id != 0)
                .collect();
            if !ids.is_empty() {
                links.insert(h, ids);
            }
        }
        let mut work = Vec::new();
        for (pid, mine) in &links {
            for (other, theirs) in &links {
                if other == pid || !mine.iter().any(|id| theirs.contains(id)) {
                    continue;
                }
                let Some(legs) = self.legs_of.get(other) else {
                    continue;
                };
                for (b, at_b) in self.legs_of[pid].iter().filter(|(_, at)| *at >= since) {
                    let partners: Vec<_> = legs
                        .iter()
                        .filter(|(a, at_a)| {
                            at_a <= at_b && at_b - at_a <= PAIR_WINDOW_NS && known(a, ctx)
                        })
                        .map(|(a, _)| (*a, *other, Via::Unix, None))
                        .collect();
                    if !partners.is_empty() {
                        work.push((*b, *pid, partners));
                    }
                }
            }
        }
        for (b, pid, partners) in work {
            let trigger_known = flow_of(&b, ctx).is_some_and(|f| f.trigger.cookie != 0);
            self.pair(
                b,
                pid,
                partners,
                trigger_known,
                false,
                ctx,
                settings,
                now,
                out,
            );
        }
    }

    /// Judges one pair; a relay's record when it is one (and not reported
    /// before). `opening`: the second leg just opened, and only a proxy
    /// request can tell yet.
    fn judge(
        &mut self,
        cand: &Candidate,
        ctx: &Context<'_>,
        settings: &RelaySettings,
        now: u64,
        opening: bool,
    ) -> Option<RelayRecord> {
        let key = pair_key(&cand.first, &cand.second);
        if self.reported.contains(&key) {
            return None;
        }
        let (a, b) = (view(&cand.first, ctx)?, view(&cand.second, ctx)?);
        self.idle = [
            a.stats.bytes_in,
            a.stats.bytes_out,
            b.stats.bytes_in,
            b.stats.bytes_out,
        ]
        .iter()
        .all(|n| *n == 0);
        if one_connection(&a, &b) {
            return None;
        }
        let sockets = (
            a.flow.id.socket.min(b.flow.id.socket),
            a.flow.id.socket.max(b.flow.id.socket),
        );
        let udp = a.flow.id.proto == Proto::Udp && b.flow.id.proto == Proto::Udp;
        if udp && self.reported_sockets.contains(&sockets) {
            return None;
        }
        self.stats.examined += 1;
        // A proxy request counts on the connection the process read before
        // it dialled, when that is known.
        let may_ask = cand.handshake.is_some() || !cand.trigger_known;
        tracing::trace!(first = ?cand.first, second = ?cand.second, a = ?a.stats, b = ?b.stats, hs = ?cand.handshake, opening, "judging a pair");
        let request = proxy_request(&a, ctx);
        let named = may_ask
            && request
                .as_ref()
                .and_then(|r| r.target.as_ref())
                .is_some_and(|t| t.matches(&b.flow.id.remote))
            && (a.stats.first_in_ns == 0 || b.stats.first_ns + 1_000_000 >= a.stats.first_in_ns);
        let method = if named {
            Some(Method::Fingerprint)
        } else if opening {
            None
        } else {
            self.method(cand, &a, &b, ctx, settings)
        }?;
        Some(self.report(cand, &a, &b, method, request, ctx, settings, now))
    }

    /// The byte tests, strongest first.
    fn method(
        &self,
        cand: &Candidate,
        a: &LegView,
        b: &LegView,
        ctx: &Context<'_>,
        settings: &RelaySettings,
    ) -> Option<Method> {
        let (ca, cb) = (a.counts(), b.counts());
        let proxy = a.proxy_fp() && (cand.handshake.is_some() || !cand.trigger_known);
        if score::exchange(&ca, &cb, cand.handshake, proxy) {
            return Some(Method::Exchange);
        }
        // A UDP relay may serve several clients from one socket over one
        // upstream socket: the sockets' flows summed must match.
        if a.flow.id.proto == Proto::Udp && b.flow.id.proto == Proto::Udp {
            let (sa, sb) = (
                socket_counts(&a.flow.id, ctx),
                socket_counts(&b.flow.id, ctx),
            );
            if (sa != ca || sb != cb) && score::exchange(&sa, &sb, None, false) {
                return Some(Method::Exchange);
            }
        }
        let handshake = proxy || cand.handshake.is_some_and(|h| h.received > 0 || h.sent > 0);
        if score::bulk(&ca, &cb, settings.volume_bytes, handshake) {
            return Some(Method::Bulk);
        }
        if let Some(hs) = cand.handshake {
            let key = IoKey {
                tgid: cand.holder,
                _pad: 0,
                cookie: cand.first.socket,
            };
            if let Some(io) = ctx.map.io(&key) {
                let w = Window {
                    received: io.bytes_received.saturating_sub(hs.received),
                    sent: io.bytes_sent.saturating_sub(hs.sent),
                };
                tracing::trace!(
                    ?w,
                    b_in = cb.bytes_in,
                    b_out = cb.bytes_out,
                    ?hs,
                    io_recv = io.bytes_received,
                    io_sent = io.bytes_sent,
                    "tunnel window"
                );
                if score::tunnel(&w, &cb) {
                    return Some(Method::Tunnel);
                }
            }
        }
        // A leg much older than the other (an SSH session, a reverse
        // tunnel's control connection) is measured from its last sample
        // before the other began: its own early traffic says nothing of
        // what it carried for the other. Without the activity tracepoints
        // this is how long forwards through a session are seen.
        let (older, newer, older_id) = if ca.first_ns <= cb.first_ns {
            (&ca, &cb, &cand.first)
        } else {
            (&cb, &ca, &cand.second)
        };
        if newer.first_ns > older.first_ns + OLDER_LEG_NS {
            if let Some((base_in, base_out)) = self.sample_before(older_id, newer.first_ns) {
                let since = Counts {
                    bytes_in: older.bytes_in.saturating_sub(base_in),
                    bytes_out: older.bytes_out.saturating_sub(base_out),
                    // Its first bytes were before the other leg: unknown
                    // for this window.
                    first_in_ns: 0,
                    first_out_ns: 0,
                    ..*older
                };
                if score::bulk(&since, newer, settings.volume_bytes, true) {
                    return Some(Method::Bulk);
                }
                let w = Window {
                    received: since.bytes_in,
                    sent: since.bytes_out,
                };
                if score::tunnel(&w, newer)
                    || score::tunnel(
                        &Window {
                            received: w.sent,
                            sent: w.received,
                        },
                        newer,
                    )
                {
                    return Some(Method::Tunnel);
                }
            }
        }
        self.interactive(&cand.first, &cand.second, settings, &ca, &cb, handshake)
            .then_some(Method::Interactive)
    }

    /// A leg's counters at its last sample taken before `t` (boot ns).
    fn sample_before(&self, id: &FlowId, t: u64) -> Option<(u64, u64)> {
        self.series.get(id).and_then(|s| {
            s.samples
                .iter()
                .rev()
                .find(|(at, _, _)| *at <= t)
                .map(|(_, i, o)| (*i, *o))
        })
    }

    /// Low volume, balanced, and both directions moved together in
    /// `interactive_samples` samples each way.
    fn interactive(
        &self,
        a_id: &FlowId,
        b_id: &FlowId,
        settings: &RelaySettings,
        a: &Counts,
        b: &Counts,
        handshake: bool,
    ) -> bool {
        if a.bytes_in == 0 || a.bytes_out == 0 || b.bytes_in == 0 || b.bytes_out == 0 {
            return false;
        }
        if !score::close(a.bytes_in, b.bytes_out, 512)
            || !score::close(b.bytes_in, a.bytes_out, 512)
            || !score::overlap(a, b)
            || !score::causal(a, b, handshake)
        {
            return false;
        }
        let (Some(sa), Some(sb)) = (self.series.get(a_id), self.series.get(b_id)) else {
            return false;
        };
        let n = sa.samples.len().min(sb.samples.len());
        let (ta, tb) = (&sa.samples, &sb.samples);
        let mut forward = 0;
        let mut backward = 0;
        for k in 1..n {
            let (ia, ib) = (ta.len() - n + k, tb.len() - n + k);
            let d = |s: &VecDeque<(u64, u64, u64)>, i: usize| {
                (
                    s[i].1.saturating_sub(s[i - 1].1),
                    s[i].2.saturating_sub(s[i - 1].2),
                )
            };
            let (da_in, da_out) = d(ta, ia);
            let (db_in, db_out) = d(tb, ib);
            if da_in > 0 && db_out > 0 {
                forward += 1;
            }
            if db_in > 0 && da_out > 0 {
                backward += 1;
            }
        }
        forward >= settings.interactive_samples && backward >= settings.interactive_samples
    }

    #[allow(clippy::too_many_arguments)]
    fn report(
        &mut self,
        cand: &Candidate,
        a: &LegView,
        b: &LegView,
        method: Method,
        request: Option<proxy::Request>,
        ctx: &Context<'_>,
        settings: &RelaySettings,
        now: u64,
    ) -> RelayRecord {
        if self.reported.len() >= REPORTED_MAX {
            self.reported.clear();
            self.reported_sockets.clear();
        }
        self.reported.insert(pair_key(&cand.first, &cand.second));
        if a.flow.id.proto == Proto::Udp && b.flow.id.proto == Proto::Udp {
            let (x, y) = (a.flow.id.socket, b.flow.id.socket);
            self.reported_sockets.insert((x.min(y), x.max(y)));
        }
        let side = |v: &LegView| {
            ctx.sides.map_or(Side::Unknown, |m| {
                m.side(v.flow.netns, v.flow.id.remote.addr)
            })
        };
        let leg = |v: &LegView| Leg {
            socket: v.flow.id.socket,
            proto: v.flow.id.proto,
            local: v.flow.local,
            remote: v.flow.id.remote,
            direction: v.flow.direction,
            side: side(v),
            pid: None,
            bytes_received: v.stats.bytes_in,
            bytes_sent: v.stats.bytes_out,
            start: ctx.clock.rfc3339(if v.stats.first_ns != 0 {
                v.stats.first_ns
            } else {
                v.flow.seen_ns
            }),
            fingerprint: proxy::protocol_name(v.stats.fp_in)
                .or(proxy::protocol_name(v.stats.fp_out))
                .map(str::to_owned),
        };
        // The side that asked goes first: the inbound leg of a forward (the
        // client came in, the relay went out), the leg the relaying process
        // read from before it dialled (the operator of a reverse tunnel),
        // else the leg that started first.
        let start = |v: &LegView| {
            if v.stats.first_ns != 0 {
                v.stats.first_ns
            } else {
                v.flow.seen_ns
            }
        };
        let inbound = |v: &LegView| v.flow.direction == Some(Direction::Inbound);
        let asked = |v: &LegView| v.stats.first_in_ns;
        let a_first = if inbound(a) != inbound(b) {
            inbound(a)
        } else if cand.handshake.is_some() {
            // `first` of a candidate with a handshake is the trigger.
            a.flow.id == cand.first
        } else if asked(a) != 0 && asked(b) != 0 {
            // The leg the request came in on (a reverse tunnel's operator).
            asked(a) <= asked(b)
        } else {
            start(a) <= start(b)
        };
        let (first, second) = if a_first { (a, b) } else { (b, a) };
        // The relay is the process that moves the bytes of both legs (a
        // forked child working on the connection its parent accepted),
        // else the process on the side that asked: the listener that
        // accepted the client and handed the other leg to a child or a
        // pipe peer.
        let both = cand.via != Via::Process
            && ctx
                .map
                .io(&IoKey {
                    tgid: cand.relayer,
                    _pad: 0,
                    cookie: cand.first.socket,
                })
                .is_some();
        let via = if both { Via::Process } else { cand.via };
        let pid = if both || first.flow.id != cand.first {
            cand.relayer
        } else {
            cand.holder
        };
        let leg = |v: &LegView| Leg {
            pid: (v.flow.owner != 0 && v.flow.owner != pid).then_some(v.flow.owner),
            ..leg(v)
        };
        let legs = [leg(first), leg(second)];
        let dir = |l: &Leg| l.direction.map_or("unknown", Direction::as_str);
        let mut modes = [dir(&legs[0]), dir(&legs[1])];
        modes.sort();
        let path = format!("{}->{}", legs[0].side.as_str(), legs[1].side.as_str());
        let allowed = [cand.holder, cand.relayer]
            .into_iter()
            .any(|p| allowed(p, [a, b], ctx.procs, settings));
        RelayRecord {
            ts: ctx.clock.rfc3339(now),
            process: NetTracker::process_ref(ctx.procs, pid, ""),
            method,
            mode: format!("{}+{}", modes[0], modes[1]),
            path,
            via,
            legs,
            proxy: request.map(|r| ProxyRequest {
                protocol: r.protocol.to_owned(),
                target: r.target.map(|t| t.to_string()),
            }),
            allowed,
        }
    }

    /// One sample: `io` is the kernel's per-process socket activity. Pairs
    /// the connections each process (and its ancestors) used lately and
    /// judges them.
    pub fn sample(
        &mut self,
        now: u64,
        io: &[(IoKey, IoStats)],
        ctx: &Context<'_>,
        settings: &RelaySettings,
    ) -> Vec<RelayRecord> {
        let flows = &ctx.net.flows;
        // Connections each process used recently, most recent first; flows
        // that already ended count with their final counters.
        let mut by_process: HashMap<u32, Vec<(u64, FlowId)>> = HashMap::new();
        for (k, v) in io {
            if now.saturating_sub(v.last_ns) > settings.active_ns {
                continue;
            }
            let open = flows.of_socket(k.cookie);
            if open.is_empty() {
                for (f, _) in ctx.net.recently_closed.get(&k.cookie).into_iter().flatten() {
                    by_process
                        .entry(k.tgid)
                        .or_default()
                        .push((v.last_ns, f.id));
                }
            }
            for id in open {
                by_process.entry(k.tgid).or_default().push((v.last_ns, id));
            }
        }
        // Owners stand in for users of the connections no process was seen
        // using: every connection without the activity tracepoints (Linux
        // before 6.4), else those whose activity records a flood of other
        // sockets pushed out of the kernel's LRU. Open connections, and
        // those that carried their last packet within the active window,
        // since a relay can start and end between two samples.
        let in_io: HashSet<u64> = io.iter().map(|(k, _)| k.cookie).collect();
        for f in flows.iter() {
            if f.owner != 0 && !in_io.contains(&f.id.socket) {
                by_process
                    .entry(f.owner)
                    .or_default()
                    .push((f.seen_ns, f.id));
            }
        }
        for (f, s) in ctx.net.recently_closed.values().flatten() {
            if f.owner != 0
                && !in_io.contains(&f.id.socket)
                && now.saturating_sub(s.last_ns) <= settings.active_ns
            {
                by_process
                    .entry(f.owner)
                    .or_default()
                    .push((f.seen_ns, f.id));
            }
        }
        // One counter sample per connection per tick.
        let mut sampled: HashSet<FlowId> = HashSet::new();
        for legs in by_process.values_mut() {
            legs.sort_by_key(|l| std::cmp::Reverse(l.0));
            legs.dedup_by(|a, b| a.1 == b.1);
            legs.truncate(LEGS_PER_PROCESS);
            for (_, id) in legs.iter() {
                if !sampled.insert(*id) {
                    continue;
                }
                let Some(v) = view(id, ctx) else {
                    continue;
                };
                let s = self.series.entry(*id).or_default();
                s.samples
                    .push_back((now, v.stats.bytes_in, v.stats.bytes_out));
                if s.samples.len() > SERIES_LEN {
                    s.samples.pop_front();
                }
                s.last_seen = now;
            }
        }
        let mut out = Vec::new();
        for (&pid, legs) in &by_process {
            // A process and its active ancestors a few levels up.
            let mut members = vec![(pid, legs, Via::Process)];
            let mut up = ctx.procs.get(pid).map(|p| p.ppid);
            for _ in 0..RELAY_ANCESTOR_LEVELS {
                let Some(a) = up.filter(|a| *a > 1) else {
                    break;
                };
                if let Some(l) = by_process.get(&a) {
                    members.push((a, l, Via::Ancestor));
                }
                up = ctx.procs.get(a).map(|p| p.ppid);
            }
            // Unlike pairing at an open, an ancestor's connections all
            // count here: a preforked server's child (dante) serves a
            // connection its parent accepted after forking it, and without
            // the activity tracepoints nothing else tells.
            let legs: Vec<(u32, Via, FlowId)> = members
                .iter()
                .flat_map(|(user, legs, via)| legs.iter().map(move |(_, id)| (*user, *via, *id)))
                .collect();
            // Each leg read once; a leg over which nothing moved either
            // way pairs with nothing (every test needs bytes on both legs),
            // so a server's idle clients cost one read each, not one per
            // pair.
            let moved: HashMap<FlowId, bool> = legs
                .iter()
                .map(|(_, _, id)| {
                    let m = view(id, ctx)
                        .is_some_and(|v| v.stats.bytes_in != 0 || v.stats.bytes_out != 0);
                    (*id, m)
                })
                .collect();
            for i in 0..legs.len() {
                for j in i + 1..legs.len() {
                    let ((ua, va, a), (ub, vb, b)) = (legs[i], legs[j]);
                    // Pairs inside an ancestor alone are that ancestor's
                    // own business, scored in its turn.
                    if ua != pid && ub != pid {
                        continue;
                    }
                    if a == b
                        || self.reported.contains(&pair_key(&a, &b))
                        || !moved.get(&a).copied().unwrap_or(false)
                        || !moved.get(&b).copied().unwrap_or(false)
                    {
                        continue;
                    }
                    let via = if va == Via::Ancestor || vb == Via::Ancestor {
                        Via::Ancestor
                    } else {
                        Via::Process
                    };
                    // Without a trigger, the older leg is the first, and
                    // the relay belongs to the process on it.
                    let (Some(va_), Some(vb_)) = (view(&a, ctx), view(&b, ctx)) else {
                        continue;
                    };
                    let older_a = va_.stats.first_ns <= vb_.stats.first_ns;
                    let (first, second, holder, relayer) = if older_a {
                        (a, b, ua, ub)
                    } else {
                        (b, a, ub, ua)
                    };
                    let cand = Candidate {
                        first,
                        second,
                        holder,
                        relayer,
                        via,
                        handshake: None,
                        trigger_known: false,
                        created_ns: now,
                        judged_ns: now,
                    };
                    if let Some(r) = self.judge(&cand, ctx, settings, now, false) {
                        out.push(r);
                    }
                }
            }
        }
        // Forget connections not sampled for a while.
        self.series
            .retain(|_, s| now.saturating_sub(s.last_seen) <= settings.active_ns * 2);
        out
    }
}

/// The processes whose connections pair with `pid`'s: itself, its
/// ancestors a few levels up, and the processes its stdin or stdout is
/// piped to or from, among those holding connections.
fn group(
    pid: u32,
    procs: &ProcessTable,
    holders: &HashMap<u32, VecDeque<(FlowId, u64)>>,
) -> Vec<(u32, Via)> {
    let mut out = vec![(pid, Via::Process)];
    let mut up = procs.get(pid).map(|p| p.ppid);
    for _ in 0..RELAY_ANCESTOR_LEVELS {
        let Some(a) = up.filter(|a| *a > 1) else {
            break;
        };
        out.push((a, Via::Ancestor));
        up = procs.get(a).map(|p| p.ppid);
    }
    if let Some(me) = procs.get(pid) {
        if me.pipes.stdin != 0 || me.pipes.stdout != 0 {
            for &other in holders.keys() {
                if other != pid && procs.get(other).is_some_and(|p| p.pipes.joined(&me.pipes)) {
                    out.push((other, Via::Pipe));
                }
            }
        }
    }
    out
}

/// The proxy request on a leg's received side, when its first bytes were
/// one.
fn proxy_request(v: &LegView, ctx: &Context<'_>) -> Option<proxy::Request> {
    proxy::protocol_name(v.stats.fp_in)?;
    let head = ctx.map.proxy_head(&flow_key(&v.flow.id));
    let data = head
        .as_ref()
        .map(|h| &h.data_in[..usize::from(h.len_in).min(h.data_in.len())])
        .unwrap_or(&[]);
    proxy::parse(v.stats.fp_in, data)
}

/// Whether the relaying process is a declared proxy serving on a declared
/// port.
fn allowed(
    relayer: u32,
    legs: [&LegView; 2],
    procs: &ProcessTable,
    settings: &RelaySettings,
) -> bool {
    let Some(exe) = procs.get(relayer).and_then(|p| p.exe.as_deref()) else {
        return false;
    };
    settings.allowed.iter().any(|a| {
        a.exe == exe
            && (a.ports.is_empty()
                || legs.iter().any(|v| {
                    v.flow.direction == Some(Direction::Inbound)
                        && a.ports.contains(&v.flow.local.port)
                }))
    })
}

#[cfg(test)]
mod tests;
