//! The detect stage: declarative rules evaluated over the event stream.
//!
//! Rules see each event in its JSON form (the documented schema), plus
//! derived fields ([`fields`]). Single-event rules raise an alert when all
//! their conditions hold and no exception does; sequence rules when their
//! steps happen in order within one process lineage and a time window;
//! threshold rules when their matches in one lineage (or process) bring
//! enough distinct values within a window.
//! Repeats of one rule on one lineage within its dedup window fold into one
//! alert with a count, and per-rule rate limits count what they suppress.

pub mod fields;
pub mod record;
pub mod rule;
pub mod stage;

use std::{
    borrow::Cow,
    collections::{HashMap, HashSet, VecDeque},
};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use self::{
    fields::{computed, FsCache},
    record::{process_of, AncestorView, Computed, Field, Own, ProcView, Subject, Val},
    rule::{Cond, Op, Rule, Severity},
};
use crate::{
    clock::secs_to_ns,
    event::{Event, Kind},
};

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
    /// Lineages or processes a threshold rule stopped tracking because the
    /// table of them was full, by rule id.
    pub threshold_dropped: HashMap<String, u64>,
    /// Bumped by every change above, so the metrics are only updated (and
    /// these maps only copied) when something changed, not per event.
    pub changes: u64,
}

struct Window {
    alert: AlertRecord,
    ends_ns: u64,
    /// What the matches folded so far were (see [`fingerprint`]): a match
    /// that brings something new writes an update line at once.
    seen: HashSet<u64>,
}

/// Most distinct matches a window remembers; past that it forgets them
/// all and starts again (more update lines, never a silent one).
const WINDOW_SEEN_MAX: usize = 256;

/// Where a match folds (its lineage, or its process for rules counted by
/// process) and the severity it is raised with.
#[derive(Debug, Clone, Copy)]
struct Hit {
    lineage: u64,
    severity: Severity,
}

/// What makes two matches of one rule on one lineage the same: the kind,
/// the process's executable and command line, and the peers (every
/// `remote` and `dst` endpoint of the record: a connection's, a relay's
/// legs', a forwarded flow's).
fn fingerprint(ev: &Subject<'_>) -> u64 {
    use std::hash::{Hash as _, Hasher as _};
    fn peers(v: &Value, h: &mut std::hash::DefaultHasher) {
        match v {
            Value::Object(m) => {
                for (k, x) in m {
                    if k == "remote" || k == "dst" {
                        x.to_string().hash(h);
                    } else if x.is_object() || x.is_array() {
                        peers(x, h);
                    }
                }
            }
            Value::Array(xs) => xs.iter().for_each(|x| peers(x, h)),
            _ => {}
        }
    }
    let mut h = std::hash::DefaultHasher::new();
    ev.kind().hash(&mut h);
    let p = ev.process();
    p.exe.hash(&mut h);
    for a in p.argv.strs() {
        a.hash(&mut h);
    }
    if ev.is_typed() {
        for f in [Own::RemoteAddr, Own::RemotePort] {
            ev.own(f).map(|v| v.to_json().to_string()).hash(&mut h);
        }
    } else {
        peers(ev.json(), &mut h);
    }
    h.finish()
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

/// What a threshold rule tracks of one lineage or process: the distinct
/// values its matches brought, most recent last.
#[derive(Default)]
struct Tally {
    /// At most the rule's `count` values: only the most recent count.
    values: VecDeque<Seen>,
    /// The matches that brought the most recent values, for the alert.
    evidence: VecDeque<Value>,
    /// When the last value was seen.
    last_ns: u64,
    /// The rule fired: matches until then are folded into that alert.
    quiet_until_ns: u64,
}

struct Seen {
    /// Hash of the category and the distinct fields' values.
    hash: u64,
    at_ns: u64,
    category: usize,
    /// Whether the value's latest match met the share conditions.
    share: bool,
}

/// Most lineages and processes tracked by threshold rules at once; past
/// that the oldest tracked goes (counted in `threshold_dropped`).
const TALLIES_MAX: usize = 4096;
/// Matches kept as an alert's evidence per tracked lineage or process.
const TALLY_EVIDENCE_MAX: usize = 8;
/// Most dedup windows held at once.
const WINDOWS_MAX: usize = 16_384;

pub struct Engine {
    rules: Vec<Rule>,
    /// Which rules an event of each kind runs (see [`KindIndex`]).
    index: KindIndex,
    /// Pids owning a listening TCP socket (network-facing services).
    listeners: foldhash::HashMap<u64, u32>,
    /// The monitor's own pid: its metrics listener is not a service.
    self_pid: u64,
    windows: HashMap<(usize, u64), Window>,
    /// No window ends before this (a lower bound): `expire` skips its scan
    /// of every window until then, instead of scanning per event.
    next_expiry_ns: u64,
    rates: HashMap<usize, (u64, u32)>,
    sequences: HashMap<(usize, u64), SeqState>,
    seq_order: VecDeque<(usize, u64)>,
    /// Threshold rules' tallies by rule and lineage (or process), and the
    /// order they were opened in, oldest first (entries may be stale).
    tallies: HashMap<(usize, u64), Tally>,
    tally_order: VecDeque<(usize, u64)>,
    /// When the full tally table was last swept of ended tallies.
    tally_swept_ns: u64,
    fs: FsCache,
    pub stats: EngineStats,
}

/// Event time in ns since the epoch, from its `ts`.
fn ts_ns(ev: &Subject<'_>) -> u64 {
    ev.ts()
        .and_then(|t| humantime::parse_rfc3339(t).ok())
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        // Past 2554 a u64 of nanoseconds saturates instead of wrapping.
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
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

/// An operator over a value in its JSON form.
fn json_match(op: &Op, v: &Value) -> bool {
    match op {
        Op::Exists(want) => v.is_null() != *want,
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
    }
}

/// A string operator over one string.
fn str_op(op: &Op, s: &str) -> bool {
    match op {
        Op::Prefix(ps) => ps.iter().any(|p| s.starts_with(p.as_str())),
        Op::Suffix(ps) => ps.iter().any(|p| s.ends_with(p.as_str())),
        Op::Contains(ps) => ps.iter().any(|p| s.contains(p.as_str())),
        Op::Regex(re) => re.is_match(s),
        _ => false,
    }
}

/// Applies an operator to a field's value (`None`: the event has no such
/// field). Strings, lists of strings, numbers and booleans are matched as
/// they are; anything else through its JSON form, with the same meaning.
fn op_match(op: &Op, v: Option<&Val<'_>>) -> bool {
    let v = match v {
        Some(v) if !v.is_null() => v,
        _ => return matches!(op, Op::Exists(false)),
    };
    match (op, v) {
        (Op::Exists(want), _) => *want,
        (Op::Equals(x), Val::Str(s)) => x.as_str() == Some(s.as_ref()),
        (Op::Equals(x), Val::Bool(b)) => x.as_bool() == Some(*b),
        (Op::Equals(x), Val::U64(n)) => x.as_f64() == Some(*n as f64),
        (Op::Equals(x), Val::I64(n)) => x.as_f64() == Some(*n as f64),
        (Op::Equals(x), Val::Strs(a)) if !x.is_array() => {
            x.as_str().is_some_and(|x| a.iter().any(|s| s == x))
        }
        (Op::In(set), Val::Str(s)) => set.contains_str(s),
        (Op::In(set), Val::U64(n)) => set.contains_number(*n as f64),
        (Op::In(set), Val::I64(n)) => set.contains_number(*n as f64),
        (Op::In(set), Val::Strs(a)) if !set.has_others() => a.iter().any(|s| set.contains_str(s)),
        (Op::Prefix(_) | Op::Suffix(_) | Op::Contains(_) | Op::Regex(_), Val::Str(s)) => {
            str_op(op, s)
        }
        (Op::Prefix(_) | Op::Suffix(_) | Op::Contains(_) | Op::Regex(_), Val::Strs(a)) => {
            a.iter().any(|s| str_op(op, s))
        }
        (Op::Gt(x), Val::U64(n)) => (*n as f64) > *x,
        (Op::Gt(x), Val::I64(n)) => (*n as f64) > *x,
        (Op::Lt(x), Val::U64(n)) => (*n as f64) < *x,
        (Op::Lt(x), Val::I64(n)) => (*n as f64) < *x,
        (_, Val::Json(j)) => json_match(op, j),
        (_, other) => json_match(op, &other.to_json()),
    }
}

/// Hashes a field's value so that the typed and the JSON form of one
/// value hash alike (a number as a number, a list element by element).
fn hash_val(v: Option<&Val<'_>>, h: &mut impl std::hash::Hasher) {
    use std::hash::Hash as _;
    fn json(v: &Value, h: &mut impl std::hash::Hasher) {
        match v {
            Value::Null => 0u8.hash(h),
            Value::Bool(b) => (1u8, b).hash(h),
            Value::Number(n) => (2u8, n.as_f64().unwrap_or(f64::NAN).to_bits()).hash(h),
            Value::String(s) => (3u8, s.as_str()).hash(h),
            Value::Array(a) => {
                (4u8, a.len()).hash(h);
                a.iter().for_each(|x| json(x, h));
            }
            Value::Object(_) => (5u8, v.to_string()).hash(h),
        }
    }
    match v {
        None | Some(Val::Null) => 0u8.hash(h),
        Some(Val::Bool(b)) => (1u8, b).hash(h),
        Some(Val::U64(n)) => (2u8, (*n as f64).to_bits()).hash(h),
        Some(Val::I64(n)) => (2u8, (*n as f64).to_bits()).hash(h),
        Some(Val::Str(s)) => (3u8, s.as_ref()).hash(h),
        Some(Val::Strs(a)) => {
            (4u8, a.len()).hash(h);
            a.iter().for_each(|s| (3u8, s.as_str()).hash(h));
        }
        Some(Val::Json(j)) => json(j, h),
    }
}

/// The computed fields of the event being judged, each made at its first
/// use and kept until the next event.
struct Memo<'e> {
    computed: [Option<Val<'e>>; Computed::ALL.len()],
}

impl Memo<'_> {
    fn new() -> Self {
        Self {
            computed: std::array::from_fn(|_| None),
        }
    }
}

/// Makes every regex of the same pattern one compiled regex (the built-in
/// pack tests one pattern of shells and interpreters in several rules).
/// Remembering a regex's result per event was measured slower than running
/// it again on the short fields rules test.
fn share_regexes(rules: &mut [Rule]) {
    fn walk(c: &mut Cond, seen: &mut HashMap<String, regex::Regex>) {
        match c {
            Cond::Field {
                op: Op::Regex(re), ..
            } => {
                *re = seen
                    .entry(re.as_str().to_owned())
                    .or_insert_with(|| re.clone())
                    .clone();
            }
            Cond::Field { .. } => {}
            Cond::Any(cs) | Cond::All(cs) | Cond::Ancestor(cs) => {
                cs.iter_mut().for_each(|c| walk(c, seen));
            }
            Cond::Not(c) => walk(c, seen),
        }
    }
    let mut seen = HashMap::new();
    for r in rules {
        let steps = r.sequence.iter_mut().flat_map(|s| &mut s.steps);
        let conds = r.matches.iter_mut().chain(r.except.iter_mut());
        for c in conds.chain(steps.flat_map(|s| &mut s.matches)) {
            walk(c, &mut seen);
        }
        if let Some(t) = &mut r.threshold {
            let categories = t.categories.iter_mut().flat_map(|c| &mut c.matches);
            for c in categories.chain(t.share.iter_mut().flat_map(|s| &mut s.matches)) {
                walk(c, &mut seen);
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
    by_kind: foldhash::HashMap<String, Vec<usize>>,
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

impl Engine {
    pub fn new(mut rules: Vec<Rule>) -> Self {
        share_regexes(&mut rules);
        Self {
            index: KindIndex::new(&rules),
            rules,
            listeners: foldhash::HashMap::default(),
            self_pid: u64::from(std::process::id()),
            windows: HashMap::new(),
            next_expiry_ns: u64::MAX,
            rates: HashMap::new(),
            sequences: HashMap::new(),
            seq_order: VecDeque::new(),
            tallies: HashMap::new(),
            tally_order: VecDeque::new(),
            tally_swept_ns: 0,
            fs: FsCache::default(),
            stats: EngineStats::default(),
        }
    }

    /// Replaces the rules, keeping what the engine learnt of the machine.
    pub fn set_rules(&mut self, mut rules: Vec<Rule>) {
        share_regexes(&mut rules);
        self.index = KindIndex::new(&rules);
        self.rules = rules;
        self.windows.clear();
        self.rates.clear();
        self.sequences.clear();
        self.seq_order.clear();
        self.tallies.clear();
        self.tally_order.clear();
    }

    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// The lineage an event belongs to, for dedup: the nearest ancestor
    /// that is a network-facing service (so every request a web server
    /// hands to a shell is one lineage), else the master of the nearest
    /// known application server (php-fpm's, whose workers take turns),
    /// else the parent, else the process.
    /// A process that was re-parented starts a lineage of its own: the
    /// search stops at the first `reparented` ancestor, and the parent is
    /// then the one the kernel names (a detached process is not folded
    /// into the alerts of the service that started it).
    fn lineage_of(&self, ev: &Subject<'_>) -> u64 {
        let ancestry = ev.ancestry();
        let chain = || ancestry.iter().take_while(|a| !a.reparented).map(|a| a.pid);
        if let Some(service) = chain().find(|p| self.is_listener(*p)) {
            return service;
        }
        // A server behind a unix socket (php-fpm behind nginx) owns no
        // listening TCP socket: its outermost process of the nearest run of
        // server processes (the master above its workers) is the service.
        let mut server = None;
        for a in ancestry.iter().take_while(|a| !a.reparented) {
            if a.exe
                .is_some_and(crate::process::program::is_network_server)
            {
                server = Some(a.pid);
            } else if server.is_some() {
                break;
            }
        }
        if let Some(server) = server {
            return server;
        }
        let first = chain().next();
        let parent = match first {
            None if !ancestry.is_empty() => ev.ppid(),
            first => first,
        };
        parent
            .filter(|p| *p > 1)
            .or_else(|| ev.pid())
            // Forwarded flows have no process: each flow is its own lineage.
            .or_else(|| ev.json().get("flow_id").and_then(Value::as_u64))
            .unwrap_or(0)
    }

    /// Whether the event's process is in a login session: walking up
    /// the chain of who forked whom, a login service's session (sshd,
    /// login, a getty, dropbear, telnetd, installed where the system keeps
    /// programs) comes before any network-facing service. A web server an
    /// admin started by hand is still a service: what it runs is not the
    /// admin's doing. Where the chain says neither (it was cut, or seeded
    /// without its parents), the audit login uid decides; a loginuid written
    /// by anything but a login service raises its own alert.
    fn login_session(&self, ev: &Subject<'_>) -> bool {
        for a in ev.ancestry().iter() {
            if a.exe.is_some_and(crate::process::program::is_login_service) {
                return true;
            }
            if self.is_listener(a.pid)
                || a.exe
                    .is_some_and(crate::process::program::is_network_server)
            {
                return false;
            }
        }
        let auid = ev.own(Own::Auid).or_else(|| ev.own(Own::ProcessAuid));
        !auid.is_none_or(|v| v.is_null())
    }

    fn is_listener(&self, pid: u64) -> bool {
        pid > 1 && pid != self.self_pid && self.listeners.contains_key(&pid)
    }

    /// Keeps the set of network-facing processes current.
    fn learn(&mut self, ev: &Subject<'_>) {
        let kind = ev.kind();
        if !matches!(kind, "listen" | "connection" | "close" | "exit") {
            return;
        }
        let pid = ev.pid().unwrap_or(0);
        let (is_tcp, state) = ev.tcp_state();
        match kind {
            "listen" if is_tcp && pid != 0 => *self.listeners.entry(pid).or_default() += 1,
            "connection" if is_tcp && pid != 0 && state == Some("listen") => {
                *self.listeners.entry(pid).or_default() += 1;
            }
            "close" if is_tcp && state == Some("listen") => {
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

    /// Whether the event's `field` satisfies `op`.
    fn test<'e>(
        &mut self,
        field: &Field,
        op: &Op,
        ev: &'e Subject<'_>,
        memo: &mut Memo<'e>,
    ) -> bool {
        match field {
            Field::Lineage => op_match(op, Some(&Val::U64(self.lineage_of(ev)))),
            Field::Listener => {
                let listener = ev.pid().is_some_and(|p| self.is_listener(p));
                op_match(op, Some(&Val::Bool(listener)))
            }
            Field::LoginSession => op_match(op, Some(&Val::Bool(self.login_session(ev)))),
            Field::Computed(c) => {
                let slot = &mut memo.computed[*c as usize];
                let v = slot.get_or_insert_with(|| computed(*c, &ev.process(), &mut self.fs));
                op_match(op, Some(v))
            }
            Field::Own(o) => op_match(op, ev.own(*o).as_ref()),
            Field::Path(p) => op_match(op, ev.path(p).as_ref()),
        }
    }

    /// The event's `field`, for the distinct values of thresholds.
    fn value<'e>(
        &mut self,
        field: &Field,
        ev: &'e Subject<'_>,
        memo: &mut Memo<'e>,
    ) -> Option<Val<'e>> {
        match field {
            Field::Lineage => Some(Val::U64(self.lineage_of(ev))),
            Field::Listener => Some(Val::Bool(ev.pid().is_some_and(|p| self.is_listener(p)))),
            Field::LoginSession => Some(Val::Bool(self.login_session(ev))),
            Field::Computed(c) => {
                let slot = &mut memo.computed[*c as usize];
                Some(
                    slot.get_or_insert_with(|| computed(*c, &ev.process(), &mut self.fs))
                        .clone(),
                )
            }
            Field::Own(o) => ev.own(*o),
            Field::Path(p) => ev.path(p),
        }
    }

    /// Whether an ancestor's `field` satisfies `op`. Ancestors have a pid,
    /// an executable, whether they serve the network, whether the process
    /// after them was re-parented, and the fields computed from those.
    fn test_ancestor(&mut self, field: &Field, op: &Op, a: &AncestorView<'_>) -> bool {
        let v = match field {
            Field::Own(Own::Pid) | Field::Lineage => Some(Val::U64(a.pid)),
            Field::Own(Own::Exe) => a.exe.map(|e| Val::Str(Cow::Borrowed(e))),
            Field::Listener => Some(Val::Bool(self.is_listener(a.pid))),
            Field::Path(p) if p.len() == 1 && p[0] == "reparented" => Some(Val::Bool(a.reparented)),
            Field::Path(p) if p.len() == 1 && p[0] == "depth" => Some(Val::U64(a.depth)),
            Field::Computed(c) => Some(computed(*c, &ProcView::of_ancestor(a.exe), &mut self.fs)),
            _ => None,
        };
        op_match(op, v.as_ref())
    }

    fn cond<'e>(&mut self, c: &Cond, ev: &'e Subject<'_>, memo: &mut Memo<'e>) -> bool {
        match c {
            Cond::Field { field, op, .. } => self.test(field, op, ev, memo),
            Cond::Any(cs) => cs.iter().any(|c| self.cond(c, ev, memo)),
            Cond::All(cs) => cs.iter().all(|c| self.cond(c, ev, memo)),
            Cond::Not(c) => !self.cond(c, ev, memo),
            Cond::Ancestor(cs) => ev
                .ancestry()
                .iter()
                .any(|a| cs.iter().all(|c| self.ancestor_cond(c, &a))),
        }
    }

    fn ancestor_cond(&mut self, c: &Cond, a: &AncestorView<'_>) -> bool {
        match c {
            Cond::Field { field, op, .. } => self.test_ancestor(field, op, a),
            Cond::Any(cs) => cs.iter().any(|c| self.ancestor_cond(c, a)),
            Cond::All(cs) => cs.iter().all(|c| self.ancestor_cond(c, a)),
            Cond::Not(c) => !self.ancestor_cond(c, a),
            // An ancestor's own ancestors are not known.
            Cond::Ancestor(_) => false,
        }
    }

    fn all<'e>(&mut self, cs: &[Cond], ev: &'e Subject<'_>, memo: &mut Memo<'e>) -> bool {
        cs.iter().all(|c| self.cond(c, ev, memo))
    }

    /// The severity of a match of `rule`: the first `severity_if` whose
    /// conditions hold, else the rule's own.
    fn severity<'e>(&mut self, rule: &Rule, ev: &'e Subject<'_>, memo: &mut Memo<'e>) -> Severity {
        for (severity, conds) in &rule.severity_if {
            if self.all(conds, ev, memo) {
                return *severity;
            }
        }
        rule.severity
    }

    fn kind_ok(kinds: &[String], ev: &Subject<'_>) -> bool {
        kinds.is_empty() || {
            let kind = ev.kind();
            kinds.iter().any(|k| k == kind)
        }
    }

    /// Runs every rule on one event in its JSON form (`monitor replay` of
    /// a line that is not of this schema); returns the alerts raised.
    pub fn observe(&mut self, ev: &Value) -> Vec<AlertRecord> {
        self.judge(&Subject::json_line(ev))
    }

    /// Runs every rule on one typed event; returns the alerts raised.
    pub fn observe_event(&mut self, ev: &Event) -> Vec<AlertRecord> {
        self.judge(&Subject::typed(ev))
    }

    fn judge(&mut self, ev: &Subject<'_>) -> Vec<AlertRecord> {
        self.learn(ev);
        let now = ts_ns(ev);
        let mut out = self.expire(now);
        let kind = ev.kind();
        if kind == Kind::Alert.as_str() || kind == Kind::AlertUpdate.as_str() {
            return out;
        }
        // The monitor's own activity (its metrics listener, its canary, a
        // binary run from wherever it was installed) is never an intrusion.
        if ev.pid() == Some(self.self_pid) {
            return out;
        }
        let rules = std::mem::take(&mut self.rules);
        let index = std::mem::take(&mut self.index);
        let mut memo = Memo::new();
        self.fs.new_event();
        for &i in index.rules_for(kind) {
            let rule = &rules[i];
            if let Some(seq) = &rule.sequence {
                if let Some(evidence) = self.step(i, seq, ev, now, &mut memo) {
                    let severity = self.severity(rule, ev, &mut memo);
                    let lineage = self.lineage_of(ev);
                    if let Some(a) =
                        self.raise(i, rule, ev, evidence, now, Hit { lineage, severity })
                    {
                        out.push(a);
                    }
                }
                continue;
            }
            // The index gave only rules for this kind (or for every kind).
            if !self.all(&rule.matches, ev, &mut memo) {
                continue;
            }
            if rule.except.iter().any(|c| self.cond(c, ev, &mut memo)) {
                continue;
            }
            let severity = self.severity(rule, ev, &mut memo);
            if let Some(threshold) = &rule.threshold {
                let tallied = self.tally(&rules, i, threshold, ev, now, &mut memo);
                if let Some((key, evidence)) = tallied {
                    if let Some(a) = self.raise(
                        i,
                        rule,
                        ev,
                        evidence,
                        now,
                        Hit {
                            lineage: key,
                            severity,
                        },
                    ) {
                        out.push(a);
                    }
                }
                continue;
            }
            let lineage = self.lineage_of(ev);
            if let Some(a) = self.raise(
                i,
                rule,
                ev,
                vec![ev.json().clone()],
                now,
                Hit { lineage, severity },
            ) {
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
    fn step<'e>(
        &mut self,
        i: usize,
        seq: &rule::Sequence,
        ev: &'e Subject<'_>,
        now: u64,
        memo: &mut Memo<'e>,
    ) -> Option<Vec<Value>> {
        let pid = ev.pid()?;
        // Later steps belong to the lineage of the first step's process:
        // that process itself or one of its descendants.
        let active = std::iter::once(pid)
            .chain(ev.ancestry().iter().map(|a| a.pid))
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
                if Self::kind_ok(&step.kinds, ev) && self.all(&step.matches, ev, memo) {
                    let s = self.sequences.get_mut(&(i, root))?;
                    s.evidence.push(ev.json().clone());
                    s.next += 1;
                    if s.next == seq.steps.len() {
                        return self.sequences.remove(&(i, root)).map(|s| s.evidence);
                    }
                }
                return None;
            }
        }
        let first = &seq.steps[0];
        if Self::kind_ok(&first.kinds, ev) && self.all(&first.matches, ev, memo) {
            if self.sequences.len() >= SEQ_STATES_MAX {
                while let Some(old) = self.seq_order.pop_front() {
                    if self.sequences.remove(&old).is_some() {
                        break;
                    }
                }
            }
            let key = match seq.by {
                rule::SequenceBy::Process => pid,
                rule::SequenceBy::Parent => {
                    ev.ancestry().first_pid().filter(|p| *p > 1).unwrap_or(pid)
                }
            };
            self.sequences.insert(
                (i, key),
                SeqState {
                    next: 1,
                    deadline_ns: now.saturating_add(secs_to_ns(seq.within_secs)),
                    evidence: vec![ev.json().clone()],
                },
            );
            self.seq_order.push_back((i, key));
        }
        None
    }

    /// Counts a match of threshold rule `i` (its conditions hold); returns
    /// the lineage (or process) and the evidence when the match completes
    /// the threshold.
    fn tally<'e>(
        &mut self,
        rules: &[Rule],
        i: usize,
        th: &rule::Threshold,
        ev: &'e Subject<'_>,
        now: u64,
        memo: &mut Memo<'e>,
    ) -> Option<(u64, Vec<Value>)> {
        use std::hash::{Hash as _, Hasher as _};
        let rule = &rules[i];
        let category = if th.categories.is_empty() {
            0
        } else {
            th.categories
                .iter()
                .position(|c| self.all(&c.matches, ev, memo))?
        };
        let share = th
            .share
            .as_ref()
            .is_some_and(|s| self.all(&s.matches, ev, memo));
        let key = match (th.by, ev.pid()) {
            (rule::ThresholdBy::Process, Some(pid)) => pid,
            // A socket event without a known owner counts with its lineage.
            _ => self.lineage_of(ev),
        };
        let mut h = std::hash::DefaultHasher::new();
        category.hash(&mut h);
        for (_, field) in &th.distinct {
            hash_val(self.value(field, ev, memo).as_ref(), &mut h);
        }
        let hash = h.finish();
        let within = secs_to_ns(th.within_secs);
        if !self.tallies.contains_key(&(i, key)) {
            self.make_room_for_a_tally(rules, now);
            self.tally_order.push_back((i, key));
        }
        let t = self.tallies.entry((i, key)).or_default();
        if now < t.quiet_until_ns {
            *self.stats.deduplicated.entry(rule.id.clone()).or_default() += 1;
            self.stats.changes += 1;
            return None;
        }
        t.last_ns = now;
        // Values older than the window no longer count.
        while t
            .values
            .front()
            .is_some_and(|v| v.at_ns.saturating_add(within) < now)
        {
            t.values.pop_front();
        }
        if let Some(at) = t.values.iter().position(|v| v.hash == hash) {
            // Seen again: it is now the most recent, nothing new to count.
            if let Some(mut v) = t.values.remove(at) {
                v.at_ns = now;
                v.share = share;
                t.values.push_back(v);
            }
            return None;
        }
        t.values.push_back(Seen {
            hash,
            at_ns: now,
            category,
            share,
        });
        if t.values.len() > th.count {
            t.values.pop_front();
        }
        t.evidence.push_back(ev.json().clone());
        if t.evidence.len() > TALLY_EVIDENCE_MAX.min(th.count) {
            t.evidence.pop_front();
        }
        if t.values.len() < th.count {
            return None;
        }
        if let Some(s) = &th.share {
            let met = t.values.iter().filter(|v| v.share).count();
            if (met as f64) < s.at_least * t.values.len() as f64 {
                return None;
            }
        }
        if th.min_categories > 0 {
            let mut seen: Vec<usize> = t.values.iter().map(|v| v.category).collect();
            seen.sort_unstable();
            seen.dedup();
            if seen.len() < th.min_categories {
                return None;
            }
        }
        // Fired: one alert; the lineage's matches fold into it until both
        // the window and the alert's dedup window have passed.
        t.quiet_until_ns = now.saturating_add(within.max(secs_to_ns(rule.dedup_secs)));
        t.values.clear();
        Some((key, t.evidence.drain(..).collect()))
    }

    /// Before a new tally opens: when the table is full, drops tallies
    /// whose window and quiet time ended (at most once a second), then the
    /// oldest, counting it.
    fn make_room_for_a_tally(&mut self, rules: &[Rule], now: u64) {
        if self.tallies.len() < TALLIES_MAX {
            return;
        }
        if now.saturating_sub(self.tally_swept_ns) >= secs_to_ns(1) || now < self.tally_swept_ns {
            self.tally_swept_ns = now;
            self.tallies.retain(|(i, _), t| {
                let within = rules
                    .get(*i)
                    .and_then(|r| r.threshold.as_ref())
                    .map_or(0, |th| secs_to_ns(th.within_secs));
                t.quiet_until_ns > now || t.last_ns.saturating_add(within) >= now
            });
            let tallies = &self.tallies;
            self.tally_order.retain(|k| tallies.contains_key(k));
        }
        while self.tallies.len() >= TALLIES_MAX {
            let Some(old) = self.tally_order.pop_front() else {
                break;
            };
            if self.tallies.remove(&old).is_some() {
                let id = rules.get(old.0).map_or("", |r| r.id.as_str());
                *self
                    .stats
                    .threshold_dropped
                    .entry(id.to_owned())
                    .or_default() += 1;
                self.stats.changes += 1;
            }
        }
    }

    /// Turns a match into an alert on `lineage`, unless it repeats an open
    /// window or a rate limit holds it back.
    fn raise(
        &mut self,
        i: usize,
        rule: &Rule,
        ev: &Subject<'_>,
        evidence: Vec<Value>,
        now: u64,
        hit: Hit,
    ) -> Option<AlertRecord> {
        let Hit { lineage, severity } = hit;
        if let Some(w) = self.windows.get_mut(&(i, lineage)) {
            if now <= w.ends_ns {
                w.alert.count += 1;
                *self.stats.deduplicated.entry(rule.id.clone()).or_default() += 1;
                self.stats.changes += 1;
                if w.seen.len() >= WINDOW_SEEN_MAX {
                    w.seen.clear();
                }
                if !w.seen.insert(fingerprint(ev)) {
                    return None;
                }
                // Another command, executable or peer: an update line with
                // the alert's id and count, and what is new.
                let (id, count, window_end) = (
                    w.alert.alert_id.clone(),
                    w.alert.count,
                    w.alert.window_end.clone(),
                );
                let mut update = Self::record(rule, severity, ev.json(), evidence, lineage, now);
                update.alert_id = id;
                update.count = count;
                update.window_end = window_end;
                update.update = true;
                return Some(update);
            }
        }
        let seen = HashSet::from([fingerprint(ev)]);
        let ev = ev.json();
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
        let alert = Self::record(rule, severity, ev, evidence, lineage, now);
        *self
            .stats
            .raised
            .entry((rule.id.clone(), severity))
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
                    seen,
                },
            );
        }
        Some(alert)
    }

    /// The alert line of a match of `rule` on `ev`.
    fn record(
        rule: &Rule,
        severity: Severity,
        ev: &Value,
        evidence: Vec<Value>,
        lineage: u64,
        now: u64,
    ) -> AlertRecord {
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
        AlertRecord {
            ts: ev
                .get("ts")
                .cloned()
                .and_then(|t| t.as_str().map(str::to_owned))
                .unwrap_or_default(),
            alert_id: format!("{}-{lineage}-{now}", rule.id),
            rule: rule.id.clone(),
            title: rule.title.clone(),
            severity,
            attack: rule.attack.clone(),
            description: rule.description.clone(),
            process,
            connections,
            evidence,
            count: 1,
            repeat: false,
            update: false,
            lineage,
            window_end: (rule.dedup_secs > 0 && now > 0).then(|| {
                let end = now.saturating_add(secs_to_ns(rule.dedup_secs));
                humantime::format_rfc3339_nanos(
                    std::time::UNIX_EPOCH + std::time::Duration::from_nanos(end),
                )
                .to_string()
            }),
        }
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
        // In the order the windows end (then by rule and lineage), so the
        // lines come out the same on every run.
        let mut ended: Vec<(u64, (usize, u64))> = self
            .windows
            .iter()
            .filter(|(_, w)| w.ends_ns < now)
            .map(|(k, w)| (w.ends_ns, *k))
            .collect();
        ended.sort_unstable();
        let mut out = Vec::new();
        for (_, k) in ended {
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
            let seen = s
                .alert
                .evidence
                .last()
                .map(|e| fingerprint(&Subject::json_line(e)))
                .into_iter()
                .collect();
            self.open_window(
                (i, s.lineage),
                Window {
                    alert: s.alert,
                    ends_ns: s.ends_ns,
                    seen,
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
