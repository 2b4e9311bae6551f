//! The detect stage: declarative rules evaluated over the event stream.
//!
//! Rules see each event in its JSON form (the documented schema), plus
//! derived fields ([`fields`]). Single-event rules raise an alert when all
//! their conditions hold and no exception does; sequence rules when their
//! steps happen in order within one process lineage and a time window.
//! Repeats of one rule on one lineage within its dedup window fold into one
//! alert with a count, and per-rule rate limits count what they suppress.

pub mod fields;
pub mod rule;
pub mod stage;

use std::{
    borrow::Cow,
    collections::{HashMap, HashSet, VecDeque},
};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use self::{
    fields::{derived, lookup, process_of, FsCache},
    rule::{Cond, Op, Rule, Severity},
};
use crate::clock::secs_to_ns;

pub use crate::event::alert::AlertRecord;

/// What the engine counts for metrics.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct EngineStats {
    /// Alerts raised, by rule id and severity.
    pub raised: HashMap<(String, Severity), u64>,
    /// Matches folded into an earlier alert, by rule id.
    pub deduplicated: HashMap<String, u64>,
    /// Alerts dropped by a rate limit, by rule id.
    pub rate_limited: HashMap<String, u64>,
    /// Bumped by every change above, so the metrics are only updated (and
    /// these maps only copied) when something changed, not per event.
    pub changes: u64,
}

struct Window {
    alert: AlertRecord,
    ends_ns: u64,
}

/// An open dedup window as saved across restarts: the alert already sent
/// for a rule and lineage, and when its window ends (Unix ns).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct SavedWindow {
    pub rule: String,
    pub lineage: u64,
    pub ends_ns: u64,
    pub alert: AlertRecord,
}

struct SeqState {
    /// Index of the next step.
    next: usize,
    deadline_ns: u64,
    evidence: Vec<Value>,
}

/// Most sequence states held at once; the oldest go first.
const SEQ_STATES_MAX: usize = 16_384;
/// Most dedup windows held at once.
const WINDOWS_MAX: usize = 16_384;

pub struct Engine {
    rules: Vec<Rule>,
    /// Which rules an event of each kind runs (see [`KindIndex`]).
    index: KindIndex,
    /// Derived fields of the event being judged, computed once for it.
    derived: DerivedCache,
    /// Pids owning a listening TCP socket (network-facing services).
    listeners: HashMap<u64, u32>,
    /// The monitor's own pid: its metrics listener is not a service.
    self_pid: u64,
    windows: HashMap<(usize, u64), Window>,
    /// No window ends before this (a lower bound): `expire` skips its scan
    /// of every window until then, instead of scanning per event.
    next_expiry_ns: u64,
    rates: HashMap<usize, (u64, u32)>,
    sequences: HashMap<(usize, u64), SeqState>,
    seq_order: VecDeque<(usize, u64)>,
    fs: FsCache,
    pub stats: EngineStats,
}

/// Event time in ns since the epoch, from its `ts`.
fn ts_ns(ev: &Value) -> u64 {
    ev.get("ts")
        .and_then(Value::as_str)
        .and_then(|t| humantime::parse_rfc3339(t).ok())
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        // Past 2554 a u64 of nanoseconds saturates instead of wrapping.
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

fn pid_of(ev: &Value) -> Option<u64> {
    process_of(ev).get("pid").and_then(Value::as_u64)
}

fn ancestry_of(ev: &Value) -> &[Value] {
    process_of(ev)
        .get("ancestry")
        .and_then(Value::as_array)
        .map_or(&[][..], Vec::as_slice)
}

fn values_equal(a: &Value, b: &Value) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

/// Applies a string operator to a value; arrays match when any element does.
fn str_match(v: &Value, f: &dyn Fn(&str) -> bool) -> bool {
    match v {
        Value::String(s) => f(s),
        Value::Array(a) => a.iter().any(|x| str_match(x, f)),
        Value::Number(n) => f(&n.to_string()),
        _ => false,
    }
}

fn op_match(op: &Op, v: Option<&Value>) -> bool {
    match op {
        Op::Exists(want) => v.is_some_and(|v| !v.is_null()) == *want,
        _ => {
            let Some(v) = v else { return false };
            match op {
                Op::Equals(x) => {
                    values_equal(v, x)
                        || v.as_array()
                            .is_some_and(|a| a.iter().any(|e| values_equal(e, x)))
                }
                Op::In(set) => {
                    set.contains(v)
                        || v.as_array()
                            .is_some_and(|a| a.iter().any(|e| set.contains(e)))
                }
                Op::Prefix(ps) => str_match(v, &|s| ps.iter().any(|p| s.starts_with(p.as_str()))),
                Op::Suffix(ps) => str_match(v, &|s| ps.iter().any(|p| s.ends_with(p.as_str()))),
                Op::Contains(ps) => str_match(v, &|s| ps.iter().any(|p| s.contains(p.as_str()))),
                Op::Regex(re) => str_match(v, &|s| re.is_match(s)),
                Op::Gt(x) => v.as_f64().is_some_and(|n| n > *x),
                Op::Lt(x) => v.as_f64().is_some_and(|n| n < *x),
                Op::Exists(_) => unreachable!("handled above"),
            }
        }
    }
}

/// The rules each event kind runs, so an event touches only the rules
/// for its kind: a rule runs for the kinds it names, or every kind when it
/// names none; a sequence for the kinds of all its steps (any step that
/// names none makes it run for every kind).
#[derive(Default)]
struct KindIndex {
    by_kind: HashMap<String, Vec<usize>>,
    /// Rules for every kind, and so for kinds no rule names.
    every: Vec<usize>,
}

impl KindIndex {
    fn new(rules: &[Rule]) -> Self {
        let mut index = KindIndex::default();
        let mut named: Vec<(usize, Vec<&String>)> = Vec::new();
        for (i, r) in rules.iter().enumerate() {
            let kinds: Option<Vec<&String>> = match &r.sequence {
                Some(seq) if seq.steps.iter().any(|s| s.kinds.is_empty()) => None,
                Some(seq) => Some(seq.steps.iter().flat_map(|s| &s.kinds).collect()),
                None if r.kinds.is_empty() => None,
                None => Some(r.kinds.iter().collect()),
            };
            match kinds {
                None => index.every.push(i),
                Some(k) => named.push((i, k)),
            }
        }
        for (i, kinds) in &named {
            for k in kinds {
                let list = index.by_kind.entry((*k).clone()).or_default();
                if !list.contains(i) {
                    list.push(*i);
                }
            }
        }
        // Each kind's list in rule order, the every-kind rules merged in.
        for list in index.by_kind.values_mut() {
            list.extend(&index.every);
            list.sort_unstable();
            list.dedup();
        }
        index
    }

    fn rules_for(&self, kind: &str) -> &[usize] {
        self.by_kind.get(kind).map_or(&self.every, Vec::as_slice)
    }

    /// Whether any rule runs for events of `kind`.
    fn wants(&self, kind: &str) -> bool {
        !self.rules_for(kind).is_empty()
    }
}

/// The derived fields of one event, each computed at its first use.
/// Conditions on an ancestor (another object) do not use it.
#[derive(Default)]
struct DerivedCache {
    /// Address of the event the values are of.
    event: usize,
    values: [Option<Value>; DERIVED_SLOTS],
    /// The event's ancestors as `ancestor` conditions see them.
    ancestors: Option<Vec<Value>>,
}

/// Derived fields [`DerivedCache`] keeps: those `fields::derived` computes.
const DERIVED_NAMES: [&str; 6] = crate::event::catalogue::COMPUTED;
const DERIVED_SLOTS: usize = DERIVED_NAMES.len();

impl Engine {
    pub fn new(rules: Vec<Rule>) -> Self {
        Self {
            index: KindIndex::new(&rules),
            derived: DerivedCache::default(),
            rules,
            listeners: HashMap::new(),
            self_pid: u64::from(std::process::id()),
            windows: HashMap::new(),
            next_expiry_ns: u64::MAX,
            rates: HashMap::new(),
            sequences: HashMap::new(),
            seq_order: VecDeque::new(),
            fs: FsCache::default(),
            stats: EngineStats::default(),
        }
    }

    /// Replaces the rules, keeping what the engine learnt of the machine.
    pub fn set_rules(&mut self, rules: Vec<Rule>) {
        self.index = KindIndex::new(&rules);
        self.rules = rules;
        self.windows.clear();
        self.rates.clear();
        self.sequences.clear();
        self.seq_order.clear();
    }

    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// The lineage an event belongs to, for dedup: the nearest ancestor
    /// that is a network-facing service (so every request a web server
    /// hands to a shell is one lineage), else the parent, else the process.
    /// A process that was re-parented starts a lineage of its own: the
    /// search stops at the first `reparented` ancestor, and the parent is
    /// then the one the kernel names (a detached process is not folded
    /// into the alerts of the service that started it).
    fn lineage_of(&self, ev: &Value) -> u64 {
        let ancestry = ancestry_of(ev);
        let chain: Vec<u64> = ancestry
            .iter()
            .take_while(|a| a.get("reparented").and_then(Value::as_bool) != Some(true))
            .filter_map(|a| a.get("pid").and_then(Value::as_u64))
            .collect();
        let parent = if chain.is_empty() && !ancestry.is_empty() {
            process_of(ev).get("ppid").and_then(Value::as_u64)
        } else {
            chain.first().copied()
        };
        chain
            .iter()
            .copied()
            .find(|p| self.is_listener(*p))
            .or_else(|| parent.filter(|p| *p > 1))
            .or_else(|| pid_of(ev))
            // Forwarded flows have no process: each flow is its own lineage.
            .or_else(|| ev.get("flow_id").and_then(Value::as_u64))
            .unwrap_or(0)
    }

    fn is_listener(&self, pid: u64) -> bool {
        pid > 1 && pid != self.self_pid && self.listeners.contains_key(&pid)
    }

    /// Keeps the set of network-facing processes current.
    fn learn(&mut self, ev: &Value) {
        let kind = ev.get("kind").and_then(Value::as_str).unwrap_or_default();
        let pid = pid_of(ev).unwrap_or(0);
        let is_tcp = ev.get("proto").and_then(Value::as_str) == Some("tcp");
        match kind {
            "listen" if is_tcp && pid != 0 => *self.listeners.entry(pid).or_default() += 1,
            "connection"
                if is_tcp
                    && pid != 0
                    && ev.get("state").and_then(Value::as_str) == Some("listen") =>
            {
                *self.listeners.entry(pid).or_default() += 1;
            }
            "close" if is_tcp && ev.get("state").and_then(Value::as_str) == Some("listen") => {
                if let Some(n) = self.listeners.get_mut(&pid) {
                    *n = n.saturating_sub(1);
                    if *n == 0 {
                        self.listeners.remove(&pid);
                    }
                }
            }
            "exit" => {
                self.listeners.remove(&pid);
            }
            _ => {}
        }
    }

    /// Value of a field for a condition: derived fields first, then the
    /// event's own fields.
    fn field<'e>(&mut self, ev: &'e Value, path: &[String]) -> Option<Cow<'e, Value>> {
        if path.len() == 1 {
            if path[0] == "lineage" {
                return Some(Cow::Owned(self.lineage_of(ev).into()));
            }
            if path[0] == "listener" {
                return Some(Cow::Owned(
                    pid_of(ev).is_some_and(|p| self.is_listener(p)).into(),
                ));
            }
            let this_event = self.derived.event == std::ptr::from_ref(ev) as usize;
            if let Some(slot) = DERIVED_NAMES
                .iter()
                .position(|n| *n == path[0])
                .filter(|_| this_event)
            {
                if let Some(v) = &self.derived.values[slot] {
                    return Some(Cow::Owned(v.clone()));
                }
                let v = derived(&path[0], ev, &mut self.fs)?;
                self.derived.values[slot] = Some(v.clone());
                return Some(Cow::Owned(v));
            }
            if let Some(v) = derived(&path[0], ev, &mut self.fs) {
                return Some(Cow::Owned(v));
            }
        }
        lookup(ev, path).map(Cow::Borrowed)
    }

    fn cond(&mut self, c: &Cond, ev: &Value) -> bool {
        match c {
            Cond::Field { path, op } => {
                let v = self.field(ev, &path.0);
                op_match(op, v.as_deref())
            }
            Cond::Any(cs) => cs.iter().any(|c| self.cond(c, ev)),
            Cond::All(cs) => cs.iter().all(|c| self.cond(c, ev)),
            Cond::Not(c) => !self.cond(c, ev),
            Cond::Ancestor(cs) => {
                // The ancestors as conditions see them, made once per event.
                let this_event = self.derived.event == std::ptr::from_ref(ev) as usize;
                let ancestors = match self.derived.ancestors.take() {
                    Some(a) if this_event => a,
                    _ => ancestry_of(ev)
                        .iter()
                        .map(|a| {
                            let pid = a.get("pid").and_then(Value::as_u64).unwrap_or(0);
                            serde_json::json!({
                                "pid": pid,
                                "exe": a.get("exe").cloned().unwrap_or(Value::Null),
                                "listener": self.is_listener(pid),
                                "reparented": a.get("reparented").and_then(Value::as_bool).unwrap_or(false),
                            })
                        })
                        .collect(),
                };
                let hit = ancestors.iter().any(|a| cs.iter().all(|c| self.cond(c, a)));
                if this_event {
                    self.derived.ancestors = Some(ancestors);
                }
                hit
            }
        }
    }

    fn all(&mut self, cs: &[Cond], ev: &Value) -> bool {
        cs.iter().all(|c| self.cond(c, ev))
    }

    fn kind_ok(kinds: &[String], ev: &Value) -> bool {
        let kind = ev.get("kind").and_then(Value::as_str).unwrap_or_default();
        kinds.is_empty() || kinds.iter().any(|k| k == kind)
    }

    /// Runs every rule on one event; returns the alerts raised.
    pub fn observe(&mut self, ev: &Value) -> Vec<AlertRecord> {
        self.learn(ev);
        let now = ts_ns(ev);
        let mut out = self.expire(now);
        if ev.get("kind").and_then(Value::as_str) == Some("alert") {
            return out;
        }
        // The monitor's own activity (its metrics listener, its canary, a
        // binary run from wherever it was installed) is never an intrusion.
        if pid_of(ev) == Some(self.self_pid) {
            return out;
        }
        let rules = std::mem::take(&mut self.rules);
        let index = std::mem::take(&mut self.index);
        let kind = ev.get("kind").and_then(Value::as_str).unwrap_or_default();
        self.derived = DerivedCache {
            event: std::ptr::from_ref(ev) as usize,
            ..DerivedCache::default()
        };
        for &i in index.rules_for(kind) {
            let rule = &rules[i];
            if let Some(seq) = &rule.sequence {
                if let Some(evidence) = self.step(i, seq, ev, now) {
                    if let Some(a) = self.raise(i, rule, ev, evidence, now) {
                        out.push(a);
                    }
                }
                continue;
            }
            if !Self::kind_ok(&rule.kinds, ev) || !self.all(&rule.matches, ev) {
                continue;
            }
            if rule.except.iter().any(|c| self.cond(c, ev)) {
                continue;
            }
            if let Some(a) = self.raise(i, rule, ev, vec![ev.clone()], now) {
                out.push(a);
            }
        }
        self.rules = rules;
        self.index = index;
        out
    }

    /// Whether events of `kind` matter to the engine: a rule runs for
    /// them, or they tell which processes are network-facing services.
    pub fn wants(&self, kind: &str) -> bool {
        matches!(kind, "listen" | "close" | "connection" | "exit") || self.index.wants(kind)
    }

    /// Advances sequence rule `i`; returns the evidence when it completes.
    fn step(&mut self, i: usize, seq: &rule::Sequence, ev: &Value, now: u64) -> Option<Vec<Value>> {
        let pid = pid_of(ev)?;
        // Later steps belong to the lineage of the first step's process:
        // that process itself or one of its descendants.
        let mut lineage: Vec<u64> = vec![pid];
        lineage.extend(
            ancestry_of(ev)
                .iter()
                .filter_map(|a| a.get("pid").and_then(Value::as_u64)),
        );
        let active = lineage
            .iter()
            .copied()
            .find(|p| self.sequences.contains_key(&(i, *p)));
        if let Some(root) = active {
            let state = self
                .sequences
                .get(&(i, root))
                .map(|s| (s.next, s.deadline_ns))?;
            let (next, deadline) = state;
            if now > deadline {
                self.sequences.remove(&(i, root));
            } else {
                let step = &seq.steps[next];
                if Self::kind_ok(&step.kinds, ev) && self.all(&step.matches, ev) {
                    let s = self.sequences.get_mut(&(i, root))?;
                    s.evidence.push(ev.clone());
                    s.next += 1;
                    if s.next == seq.steps.len() {
                        return self.sequences.remove(&(i, root)).map(|s| s.evidence);
                    }
                }
                return None;
            }
        }
        let first = &seq.steps[0];
        if Self::kind_ok(&first.kinds, ev) && self.all(&first.matches, ev) {
            if self.sequences.len() >= SEQ_STATES_MAX {
                while let Some(old) = self.seq_order.pop_front() {
                    if self.sequences.remove(&old).is_some() {
                        break;
                    }
                }
            }
            let key = match seq.by {
                rule::SequenceBy::Process => pid,
                rule::SequenceBy::Parent => ancestry_of(ev)
                    .first()
                    .and_then(|a| a.get("pid").and_then(Value::as_u64))
                    .filter(|p| *p > 1)
                    .unwrap_or(pid),
            };
            self.sequences.insert(
                (i, key),
                SeqState {
                    next: 1,
                    deadline_ns: now.saturating_add(secs_to_ns(seq.within_secs)),
                    evidence: vec![ev.clone()],
                },
            );
            self.seq_order.push_back((i, key));
        }
        None
    }

    /// Turns a match into an alert, unless it repeats an open window or a
    /// rate limit holds it back.
    fn raise(
        &mut self,
        i: usize,
        rule: &Rule,
        ev: &Value,
        evidence: Vec<Value>,
        now: u64,
    ) -> Option<AlertRecord> {
        let lineage = self.lineage_of(ev);
        if let Some(w) = self.windows.get_mut(&(i, lineage)) {
            if now <= w.ends_ns {
                w.alert.count += 1;
                *self.stats.deduplicated.entry(rule.id.clone()).or_default() += 1;
                self.stats.changes += 1;
                return None;
            }
        }
        if let Some((max, per_secs)) = rule.rate_limit {
            let period = secs_to_ns(per_secs.max(1));
            let (start, n) = self.rates.entry(i).or_insert((now, 0));
            if now.saturating_sub(*start) >= period {
                *start = now;
                *n = 0;
            }
            if *n >= max {
                *self.stats.rate_limited.entry(rule.id.clone()).or_default() += 1;
                self.stats.changes += 1;
                return None;
            }
            *n += 1;
        }
        let p = process_of(ev);
        let process = serde_json::json!({
            "pid": p.get("pid").cloned().unwrap_or(Value::Null),
            "exe": p.get("exe").cloned().unwrap_or(Value::Null),
            "argv": p.get("argv").cloned().unwrap_or(Value::Array(vec![])),
            "ancestry": p.get("ancestry").cloned().unwrap_or(Value::Array(vec![])),
        });
        // Socket events among the evidence, forwarded flows with both
        // tuples, and the legs of relays whole.
        let mut connections: Vec<Value> = evidence
            .iter()
            .filter(|e| e.get("proto").is_some())
            .map(|e| {
                if e.get("original").is_some() {
                    return serde_json::json!({
                        "proto": e.get("proto"),
                        "original": e.get("original"),
                        "translated": e.get("translated"),
                        "in": e.get("in"),
                        "out": e.get("out"),
                        "forward": e.get("forward"),
                        "reply": e.get("reply"),
                    });
                }
                serde_json::json!({
                    "proto": e.get("proto"),
                    "local": e.get("local"),
                    "remote": e.get("remote"),
                    "direction": e.get("direction"),
                    "socket": e.get("socket"),
                })
            })
            .collect();
        connections.extend(
            evidence
                .iter()
                .filter_map(|e| e.get("legs").and_then(Value::as_array))
                .flatten()
                .cloned(),
        );
        let alert = AlertRecord {
            ts: ev
                .get("ts")
                .cloned()
                .and_then(|t| t.as_str().map(str::to_owned))
                .unwrap_or_default(),
            alert_id: format!("{}-{lineage}-{now}", rule.id),
            rule: rule.id.clone(),
            title: rule.title.clone(),
            severity: rule.severity,
            attack: rule.attack.clone(),
            description: rule.description.clone(),
            process,
            connections,
            evidence,
            count: 1,
            repeat: false,
            lineage,
            window_end: (rule.dedup_secs > 0 && now > 0).then(|| {
                let end = now.saturating_add(secs_to_ns(rule.dedup_secs));
                humantime::format_rfc3339_nanos(
                    std::time::UNIX_EPOCH + std::time::Duration::from_nanos(end),
                )
                .to_string()
            }),
        };
        *self
            .stats
            .raised
            .entry((rule.id.clone(), rule.severity))
            .or_default() += 1;
        self.stats.changes += 1;
        if rule.dedup_secs > 0 {
            if self.windows.len() >= WINDOWS_MAX {
                self.windows.retain(|_, w| w.ends_ns >= now);
            }
            self.open_window(
                (i, lineage),
                Window {
                    alert: alert.clone(),
                    ends_ns: now.saturating_add(secs_to_ns(rule.dedup_secs)),
                },
            );
        }
        Some(alert)
    }

    /// Closes dedup windows that ended by `now`; a window that folded
    /// repeats yields one more line with the final count.
    pub fn expire(&mut self, now: u64) -> Vec<AlertRecord> {
        if now <= self.next_expiry_ns {
            return Vec::new();
        }
        self.next_expiry_ns = self
            .windows
            .values()
            .map(|w| w.ends_ns)
            .filter(|&end| end >= now)
            .min()
            .unwrap_or(u64::MAX);
        let ended: Vec<(usize, u64)> = self
            .windows
            .iter()
            .filter(|(_, w)| w.ends_ns < now)
            .map(|(k, _)| *k)
            .collect();
        let mut out = Vec::new();
        for k in ended {
            if let Some(w) = self.windows.remove(&k) {
                if w.alert.count > 1 {
                    let mut a = w.alert;
                    a.repeat = true;
                    out.push(a);
                }
            }
        }
        out
    }

    fn open_window(&mut self, key: (usize, u64), window: Window) {
        self.next_expiry_ns = self.next_expiry_ns.min(window.ends_ns);
        self.windows.insert(key, window);
    }

    /// The open dedup windows, to save across a restart.
    pub fn open_windows(&self) -> Vec<SavedWindow> {
        self.windows
            .iter()
            .filter_map(|((i, lineage), w)| {
                Some(SavedWindow {
                    rule: self.rules.get(*i)?.id.clone(),
                    lineage: *lineage,
                    ends_ns: w.ends_ns,
                    alert: w.alert.clone(),
                })
            })
            .collect()
    }

    /// Reopens saved windows still open at `now` whose rule is loaded, so
    /// an alert sent before a restart is not sent again; returns how many.
    pub fn restore_windows(&mut self, saved: Vec<SavedWindow>, now: u64) -> usize {
        let mut n = 0;
        for s in saved {
            let Some(i) = self.rules.iter().position(|r| r.id == s.rule) else {
                continue;
            };
            if s.ends_ns < now || self.windows.len() >= WINDOWS_MAX {
                continue;
            }
            self.open_window(
                (i, s.lineage),
                Window {
                    alert: s.alert,
                    ends_ns: s.ends_ns,
                },
            );
            n += 1;
        }
        n
    }

    /// Ends every window now (at shutdown or the end of a replay).
    pub fn flush(&mut self) -> Vec<AlertRecord> {
        self.expire(u64::MAX)
    }

    /// Pids the engine knows as network-facing services.
    pub fn listeners(&self) -> HashSet<u64> {
        self.listeners.keys().copied().collect()
    }
}

#[cfg(test)]
mod tests;
