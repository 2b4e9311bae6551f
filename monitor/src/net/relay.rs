//! Relay detection by behaviour: a process whose bytes read from one
//! connection reappear written on another, both ways.
//!
//! Names and ports lie; the shape of the traffic does not. Each sample
//! groups the connections each process used recently (from the kernel's
//! per-process socket activity, and the socket owners), then scores every
//! pair of one process's connections on the kernel's per-flow counters:
//! what came in on leg A went out on leg B and what came in on B went out
//! on A, within a slack for proxy handshakes. Bulk relays qualify once
//! each direction carried the volume threshold; low-volume interactive
//! relays when the two directions kept moving together over several
//! samples.

use std::collections::{HashMap, HashSet, VecDeque};

use monitor_common::event::{
    FlowStats, IoKey, IoStats, FP_HTTP_CONNECT, FP_SOCKS4, FP_SOCKS4A, FP_SOCKS5,
};
use serde::{Deserialize, Serialize};

use super::{
    table::{Flow, FlowTable},
    tracker::flow_key,
    FlowId, FlowMap, NetTracker,
};
use crate::{
    clock::BootClock,
    event::{Direction, Endpoint, ProcessRef, Proto},
    process::ProcessTable,
};

/// A proxy the operator runs on purpose: its relays raise nothing.
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

/// One leg of a relay.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Leg {
    pub socket: u64,
    pub proto: Proto,
    pub local: Endpoint,
    pub remote: Endpoint,
    pub direction: Option<Direction>,
    pub bytes_received: u64,
    pub bytes_sent: u64,
    /// When the leg's first packet was seen.
    pub start: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub fingerprint: Option<String>,
}

/// A `relay` event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RelayRecord {
    pub ts: String,
    pub process: Option<ProcessRef>,
    /// `bulk` (volume threshold each way) or `interactive` (correlated
    /// low-volume exchanges).
    pub pattern: String,
    /// `inbound+outbound`, `outbound+outbound` (a reverse tunnel) or
    /// `inbound+inbound`.
    pub mode: String,
    pub legs: [Leg; 2],
    /// Proxy protocol seen in the first bytes of a leg, if any.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub fingerprint: Option<String>,
}

fn fingerprint_name(fp: u8) -> Option<&'static str> {
    match fp {
        FP_SOCKS4 => Some("socks4"),
        FP_SOCKS4A => Some("socks4a"),
        FP_SOCKS5 => Some("socks5"),
        FP_HTTP_CONNECT => Some("http_connect"),
        _ => None,
    }
}

/// Counter samples of one connection, newest last: (boot ns, in, out).
#[derive(Default)]
struct Series {
    samples: VecDeque<(u64, u64, u64)>,
    last_seen: u64,
}

/// Samples kept per connection: enough for the interactive test.
const SERIES_LEN: usize = 120;
/// Connections of one process paired at most (the most recently active).
const LEGS_PER_PROCESS: usize = 32;
/// Ancestor levels a relay may span (see `sample`).
const RELAY_ANCESTOR_LEVELS: usize = 3;
/// Pairs remembered as reported, so one relay raises one event.
const REPORTED_MAX: usize = 16_384;

/// What a sample reads besides the activity map.
#[derive(Clone, Copy)]
pub struct Context<'a> {
    pub net: &'a NetTracker,
    pub map: &'a dyn FlowMap,
    pub procs: &'a ProcessTable,
    pub clock: &'a BootClock,
}

#[derive(Default)]
pub struct RelayDetector {
    series: HashMap<FlowId, Series>,
    reported: HashSet<(FlowId, FlowId)>,
}

/// Whether `x` and `y` agree within `slack` bytes or 10%.
fn close(x: u64, y: u64, slack: u64) -> bool {
    x.abs_diff(y) <= slack.max(x.max(y) / 10)
}

struct Candidate {
    id: FlowId,
    stats: FlowStats,
}

impl RelayDetector {
    /// One sample: `io` is the kernel's per-process socket activity.
    pub fn sample(
        &mut self,
        now: u64,
        io: &[(IoKey, IoStats)],
        ctx: &Context<'_>,
        settings: &RelaySettings,
    ) -> Vec<RelayRecord> {
        let Context {
            net,
            map,
            procs,
            clock,
        } = *ctx;
        let flows = &net.flows;
        // Connections each process used recently, most recent first; flows
        // that already ended count with their final counters.
        let mut by_process: HashMap<u32, Vec<(u64, FlowId)>> = HashMap::new();
        let mut ended: HashMap<FlowId, (Flow, FlowStats)> = HashMap::new();
        for (k, v) in io {
            if now.saturating_sub(v.last_ns) > settings.active_ns {
                continue;
            }
            let open = flows.of_socket(k.cookie);
            if open.is_empty() {
                for (f, s) in net.recently_closed.get(&k.cookie).into_iter().flatten() {
                    ended.insert(f.id, (f.clone(), *s));
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
        for (f, s) in net.recently_closed.values().flatten() {
            if f.owner != 0
                && !in_io.contains(&f.id.socket)
                && now.saturating_sub(s.last_ns) <= settings.active_ns
            {
                ended.insert(f.id, (f.clone(), *s));
                by_process
                    .entry(f.owner)
                    .or_default()
                    .push((f.seen_ns, f.id));
            }
        }
        // One counter sample per connection per tick.
        let mut stats_of: HashMap<FlowId, FlowStats> = HashMap::new();
        for legs in by_process.values_mut() {
            legs.sort_by_key(|l| std::cmp::Reverse(l.0));
            legs.dedup_by(|a, b| a.1 == b.1);
            legs.truncate(LEGS_PER_PROCESS);
            for (_, id) in legs.iter() {
                if stats_of.contains_key(id) {
                    continue;
                }
                let stats = match ended.get(id) {
                    Some((_, s)) => *s,
                    None => match map.get(&flow_key(id)) {
                        Some(s) => s,
                        None => continue,
                    },
                };
                let s = self.series.entry(*id).or_default();
                s.samples.push_back((now, stats.bytes_in, stats.bytes_out));
                if s.samples.len() > SERIES_LEN {
                    s.samples.pop_front();
                }
                s.last_seen = now;
                stats_of.insert(*id, stats);
            }
        }
        let mut out = Vec::new();
        for (&pid, legs) in &by_process {
            // A process and its active ancestors a few levels up: a relay
            // can span a parent and the child it hands one leg to through
            // a pipe (`ncat -l --sh-exec "ncat host port"`).
            let mut members = vec![(pid, legs)];
            let mut up = procs.get(pid).map(|p| p.ppid);
            for _ in 0..RELAY_ANCESTOR_LEVELS {
                let Some(a) = up.filter(|a| *a > 1) else {
                    break;
                };
                if let Some(l) = by_process.get(&a) {
                    members.push((a, l));
                }
                up = procs.get(a).map(|p| p.ppid);
            }
            let candidates: Vec<(u32, Candidate)> = members
                .iter()
                .flat_map(|(user, legs)| legs.iter().map(move |(_, id)| (*user, *id)))
                .filter_map(|(user, id)| {
                    stats_of
                        .get(&id)
                        .map(|s| (user, Candidate { id, stats: *s }))
                })
                .collect();
            if candidates.len() < 2 {
                continue;
            }
            for i in 0..candidates.len() {
                for j in i + 1..candidates.len() {
                    let ((ua, a), (ub, b)) = (&candidates[i], &candidates[j]);
                    // Pairs inside an ancestor alone are that ancestor's
                    // own business, scored in its turn.
                    if *ua != pid && *ub != pid {
                        continue;
                    }
                    if a.id == b.id {
                        continue;
                    }
                    // The relay belongs to the process on the leg that
                    // started first (the accepting or dialling side).
                    let owner = if a.stats.first_ns <= b.stats.first_ns {
                        *ua
                    } else {
                        *ub
                    };
                    // The two ends of one local connection (a parent
                    // talking to its child over loopback) carry the same
                    // bytes by definition: never a relay.
                    let local_of = |c: &Candidate| {
                        flows
                            .get(&c.id)
                            .or_else(|| ended.get(&c.id).map(|(f, _)| f))
                            .map_or_else(
                                || super::endpoint(c.stats.local_addr, c.stats.local_port),
                                |f| f.local,
                            )
                    };
                    if local_of(a) == b.id.remote && local_of(b) == a.id.remote {
                        continue;
                    }
                    // One relay is one event, whichever of the processes
                    // sharing its sockets is scored first.
                    let key = (a.id.min_by_socket(&b.id), a.id.max_by_socket(&b.id));
                    if self.reported.contains(&key) {
                        continue;
                    }
                    let exe = procs
                        .get(owner)
                        .and_then(|p| p.exe.as_deref().map(str::to_owned));
                    let pair = [
                        Candidate {
                            id: a.id,
                            stats: a.stats,
                        },
                        Candidate {
                            id: b.id,
                            stats: b.stats,
                        },
                    ];
                    if allowed(&exe, &pair, flows, &ended, settings) {
                        continue;
                    }
                    let Some(pattern) = self.score(a, b, settings) else {
                        continue;
                    };
                    if self.reported.len() >= REPORTED_MAX {
                        self.reported.clear();
                    }
                    self.reported.insert(key);
                    out.push(self.record(owner, a, b, pattern, flows, &ended, procs, clock, now));
                }
            }
        }
        // Forget connections not sampled for a while.
        self.series
            .retain(|_, s| now.saturating_sub(s.last_seen) <= settings.active_ns * 2);
        out
    }

    /// Counters of `c` from when `since` (boot ns) began: a leg that was
    /// open before the other (an SSH connection, a SOCKS client leg) is
    /// measured from its last sample before the other leg started, so its
    /// own handshake does not count against the balance.
    fn from(&self, c: &Candidate, since: u64) -> (u64, u64) {
        let base = self.series.get(&c.id).and_then(|s| {
            s.samples
                .iter()
                .rev()
                .find(|(t, _, _)| *t <= since)
                .map(|(_, i, o)| (*i, *o))
        });
        let (bi, bo) = base.unwrap_or((0, 0));
        (
            c.stats.bytes_in.saturating_sub(bi),
            c.stats.bytes_out.saturating_sub(bo),
        )
    }

    /// Scores one pair; returns the pattern when it is a relay. The legs
    /// are measured from when both existed, which leaves out a leg's own
    /// handshake, and else whole: a client whose data arrived before a
    /// slow relay dialled out (a forked child, a loaded machine) has it
    /// all counted before the second leg started.
    fn score(
        &self,
        a: &Candidate,
        b: &Candidate,
        settings: &RelaySettings,
    ) -> Option<&'static str> {
        // The legs of a relay carry traffic at the same time: a connection
        // that ended before the other began is another client's (a forking
        // listener's clients, told apart only by time without the activity
        // tracepoints). A last time of 0 is unknown.
        // Last-seen stamps have tick resolution: allow for their lag.
        let slack = crate::clock::LAST_SEEN_SLACK_NS;
        let (al, bl) = (a.stats.last_ns, b.stats.last_ns);
        if (bl != 0 && a.stats.first_ns > bl + slack) || (al != 0 && b.stats.first_ns > al + slack)
        {
            return None;
        }
        let since = a.stats.first_ns.max(b.stats.first_ns);
        let whole = |c: &Candidate| (c.stats.bytes_in, c.stats.bytes_out);
        self.score_counts(a, b, self.from(a, since), self.from(b, since), settings)
            .or_else(|| self.score_counts(a, b, whole(a), whole(b), settings))
    }

    /// Scores a pair on the given (in, out) byte counts of each leg.
    fn score_counts(
        &self,
        a: &Candidate,
        b: &Candidate,
        (a_in, a_out): (u64, u64),
        (b_in, b_out): (u64, u64),
        settings: &RelaySettings,
    ) -> Option<&'static str> {
        // Data going back out on the connection it came from is a server
        // answering, not a relay; when that fits as well, it is not one.
        let relay_fit = a_in.abs_diff(b_out) + b_in.abs_diff(a_out);
        let echo_fit = a_in.abs_diff(a_out) + b_in.abs_diff(b_out);
        if relay_fit >= echo_fit {
            return None;
        }
        let v = settings.volume_bytes;
        // Proxy handshakes and tunnel framing (SSH) add a little to one leg.
        if a_in.min(b_out) >= v
            && b_in.min(a_out) >= v
            && close(a_in, b_out, 4096)
            && close(b_in, a_out, 4096)
        {
            return Some("bulk");
        }
        if a_in == 0
            || b_out == 0
            || b_in == 0
            || a_out == 0
            || !close(a_in, b_out, 512)
            || !close(b_in, a_out, 512)
        {
            return None;
        }
        // Low volume: both directions must have moved together.
        let (sa, sb) = (self.series.get(&a.id)?, self.series.get(&b.id)?);
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
        (forward >= settings.interactive_samples && backward >= settings.interactive_samples)
            .then_some("interactive")
    }

    #[allow(clippy::too_many_arguments)]
    fn record(
        &self,
        pid: u32,
        a: &Candidate,
        b: &Candidate,
        pattern: &str,
        flows: &FlowTable,
        ended: &HashMap<FlowId, (Flow, FlowStats)>,
        procs: &ProcessTable,
        clock: &BootClock,
        now: u64,
    ) -> RelayRecord {
        let leg = |c: &Candidate| {
            let f = flows
                .get(&c.id)
                .or_else(|| ended.get(&c.id).map(|(f, _)| f));
            let fp = fingerprint_name(c.stats.fp_in).or(fingerprint_name(c.stats.fp_out));
            Leg {
                socket: c.id.socket,
                proto: c.id.proto,
                local: f.map_or_else(
                    || super::endpoint(c.stats.local_addr, c.stats.local_port),
                    |f| f.local,
                ),
                remote: c.id.remote,
                direction: f.and_then(|f| f.direction),
                bytes_received: c.stats.bytes_in,
                bytes_sent: c.stats.bytes_out,
                start: clock.rfc3339(c.stats.first_ns),
                fingerprint: fp.map(str::to_owned),
            }
        };
        // The leg that started first (the client side) goes first.
        let (first, second) = if a.stats.first_ns <= b.stats.first_ns {
            (a, b)
        } else {
            (b, a)
        };
        let legs = [leg(first), leg(second)];
        let dir = |l: &Leg| l.direction.map_or("unknown", Direction::as_str);
        let mut modes = [dir(&legs[0]), dir(&legs[1])];
        modes.sort();
        let mode = format!("{}+{}", modes[0], modes[1]);
        let fingerprint = legs.iter().find_map(|l| l.fingerprint.clone());
        RelayRecord {
            ts: clock.rfc3339(now),
            process: NetTracker::process_ref(procs, pid, ""),
            pattern: pattern.to_owned(),
            mode,
            legs,
            fingerprint,
        }
    }
}

/// Whether the process is a declared proxy serving on a declared port.
fn allowed(
    exe: &Option<String>,
    legs: &[Candidate],
    flows: &FlowTable,
    ended: &HashMap<FlowId, (Flow, FlowStats)>,
    settings: &RelaySettings,
) -> bool {
    let Some(exe) = exe else { return false };
    settings.allowed.iter().any(|a| {
        a.exe == *exe
            && (a.ports.is_empty()
                || legs.iter().any(|c| {
                    flows
                        .get(&c.id)
                        .or_else(|| ended.get(&c.id).map(|(f, _)| f))
                        .is_some_and(|f| {
                            f.direction == Some(Direction::Inbound)
                                && a.ports.contains(&f.local.port)
                        })
                }))
    })
}
