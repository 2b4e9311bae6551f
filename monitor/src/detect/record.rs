//! What a rule is judged on: an event read through field accessors that
//! were resolved when the rule loaded ([`Field`]), straight from the typed
//! record, or a JSON line (`monitor replay` of a line that is not of this
//! schema). The JSON form of a typed event is made only when a rule names
//! a field no accessor reads, or an alert needs it as evidence.

use std::{borrow::Cow, cell::OnceCell};

use serde_json::Value;

use crate::event::{Ancestor, Event, NetRecord, ProcessRef, Task};

/// The process part of an event: top level for process events, under
/// `process` for socket events.
pub fn process_of(ev: &Value) -> &Value {
    match ev.get("process") {
        Some(p) if p.is_object() => p,
        _ => ev,
    }
}

/// Looks a dotted path up in `v`; numeric parts index arrays.
pub fn lookup<'a>(v: &'a Value, path: &[String]) -> Option<&'a Value> {
    let mut cur = v;
    for part in path {
        cur = match cur {
            Value::Object(m) => m.get(part)?,
            Value::Array(a) => a.get(part.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(cur)
}

/// A field a rule names, resolved once when the rule loads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Field {
    /// Answered from what the engine learnt (`catalogue::LEARNT`).
    Lineage,
    Listener,
    LoginSession,
    /// Computed from the event's process (`catalogue::COMPUTED`).
    Computed(Computed),
    /// Read from the typed record.
    Own(Own),
    /// Anything else: looked up in the event's JSON form.
    Path(Vec<String>),
}

/// The computed fields, in `catalogue::COMPUTED` order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Computed {
    ExeName,
    ExeDir,
    Applet,
    Cmdline,
    ExeLocation,
    Argv0Mismatch,
    Program,
    ProgramLocation,
    Renamed,
    Paths,
}

impl Computed {
    pub const ALL: [Computed; 10] = [
        Computed::ExeName,
        Computed::ExeDir,
        Computed::Applet,
        Computed::Cmdline,
        Computed::ExeLocation,
        Computed::Argv0Mismatch,
        Computed::Program,
        Computed::ProgramLocation,
        Computed::Renamed,
        Computed::Paths,
    ];

    pub fn name(self) -> &'static str {
        crate::event::catalogue::COMPUTED[self as usize]
    }

    fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.name() == name)
    }
}

/// The record fields an accessor reads without the JSON form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Own {
    Kind,
    Ts,
    Pid,
    Tid,
    Ppid,
    Uid,
    Euid,
    Gid,
    Egid,
    Auid,
    Comm,
    CgroupId,
    Exe,
    ExeDeleted,
    Argv,
    ArgvAt(usize),
    Cwd,
    StdioAt(usize),
    Filename,
    LoginuidSetBy,
    Errno,
    Error,
    Syscall,
    ExitCode,
    Signal,
    Seeded,
    Proto,
    Direction,
    Result,
    Reason,
    State,
    BytesSent,
    BytesReceived,
    DurationMs,
    LocalAddr,
    LocalPort,
    RemoteAddr,
    RemotePort,
    ProcessPid,
    ProcessUid,
    ProcessAuid,
    ProcessComm,
    ProcessExe,
    ProcessArgv,
}

/// The accessors of one field, with the path each reads (the indexed
/// ones, `argv.N` and `stdio.N`, aside).
const NAMED: [(Own, &str); 42] = [
    (Own::Kind, "kind"),
    (Own::Ts, "ts"),
    (Own::Pid, "pid"),
    (Own::Tid, "tid"),
    (Own::Ppid, "ppid"),
    (Own::Uid, "uid"),
    (Own::Euid, "euid"),
    (Own::Gid, "gid"),
    (Own::Egid, "egid"),
    (Own::Auid, "auid"),
    (Own::Comm, "comm"),
    (Own::CgroupId, "cgroup_id"),
    (Own::Exe, "exe"),
    (Own::ExeDeleted, "exe_deleted"),
    (Own::Argv, "argv"),
    (Own::Cwd, "cwd"),
    (Own::Filename, "filename"),
    (Own::LoginuidSetBy, "loginuid_set_by"),
    (Own::Errno, "errno"),
    (Own::Error, "error"),
    (Own::Syscall, "syscall"),
    (Own::ExitCode, "exit_code"),
    (Own::Signal, "signal"),
    (Own::Seeded, "seeded"),
    (Own::Proto, "proto"),
    (Own::Direction, "direction"),
    (Own::Result, "result"),
    (Own::Reason, "reason"),
    (Own::State, "state"),
    (Own::BytesSent, "bytes_sent"),
    (Own::BytesReceived, "bytes_received"),
    (Own::DurationMs, "duration_ms"),
    (Own::LocalAddr, "local.addr"),
    (Own::LocalPort, "local.port"),
    (Own::RemoteAddr, "remote.addr"),
    (Own::RemotePort, "remote.port"),
    (Own::ProcessPid, "process.pid"),
    (Own::ProcessUid, "process.uid"),
    (Own::ProcessAuid, "process.auid"),
    (Own::ProcessComm, "process.comm"),
    (Own::ProcessExe, "process.exe"),
    (Own::ProcessArgv, "process.argv"),
];

impl Own {
    /// Every accessor, with array indexes up to 3 (for tests).
    pub fn all() -> Vec<Own> {
        let mut v: Vec<Own> = NAMED.iter().map(|(o, _)| *o).collect();
        for i in 0..4 {
            v.push(Own::ArgvAt(i));
            v.push(Own::StdioAt(i));
        }
        v
    }

    /// The dotted path this accessor reads.
    pub fn path(self) -> String {
        match self {
            Own::ArgvAt(i) => format!("argv.{i}"),
            Own::StdioAt(i) => format!("stdio.{i}"),
            other => NAMED
                .iter()
                .find(|(o, _)| *o == other)
                .map_or_else(String::new, |(_, p)| (*p).to_owned()),
        }
    }
}

impl Field {
    /// Resolves a dotted path (already checked against the catalogue).
    pub fn resolve(path: &[String]) -> Field {
        let parts: Vec<&str> = path.iter().map(String::as_str).collect();
        match parts.as_slice() {
            ["lineage"] => return Field::Lineage,
            ["listener"] => return Field::Listener,
            ["login_session"] => return Field::LoginSession,
            [name] => {
                if let Some(c) = Computed::from_name(name) {
                    return Field::Computed(c);
                }
            }
            _ => {}
        }
        let index = |s: &str| s.parse::<usize>().ok();
        let own = match parts.as_slice() {
            ["argv", i] => index(i).map(Own::ArgvAt),
            ["stdio", i] => index(i).map(Own::StdioAt),
            _ => {
                let joined = parts.join(".");
                NAMED.iter().find(|(_, p)| *p == joined).map(|(o, _)| *o)
            }
        };
        own.map_or_else(|| Field::Path(path.to_vec()), Field::Own)
    }
}

/// A field's value, borrowed from the event where it can be.
#[derive(Debug, Clone)]
pub enum Val<'a> {
    Null,
    Bool(bool),
    U64(u64),
    I64(i64),
    Str(Cow<'a, str>),
    /// A list of strings (`argv`).
    Strs(&'a [String]),
    /// From the JSON form.
    Json(Cow<'a, Value>),
}

impl Val<'_> {
    pub fn is_null(&self) -> bool {
        match self {
            Val::Null => true,
            Val::Json(v) => v.is_null(),
            _ => false,
        }
    }

    /// The JSON form, for operators the fast paths do not cover.
    pub fn to_json(&self) -> Value {
        match self {
            Val::Null => Value::Null,
            Val::Bool(b) => Value::Bool(*b),
            Val::U64(n) => Value::from(*n),
            Val::I64(n) => Value::from(*n),
            Val::Str(s) => Value::String(s.to_string()),
            Val::Strs(a) => Value::Array(a.iter().map(|s| Value::String(s.clone())).collect()),
            Val::Json(v) => v.clone().into_owned(),
        }
    }
}

fn opt<'a, T>(v: Option<T>, f: impl FnOnce(T) -> Val<'a>) -> Option<Val<'a>> {
    v.map(f)
}

fn s(v: &str) -> Val<'_> {
    Val::Str(Cow::Borrowed(v))
}

pub use crate::process::program::Argv;

/// What the computed fields are computed from: the event's process.
#[derive(Debug, Clone, Copy)]
pub struct ProcView<'a> {
    pub exe: Option<&'a str>,
    pub argv: Argv<'a>,
    pub exe_deleted: bool,
    /// The event's own working directory (process events only).
    pub cwd: Option<&'a str>,
}

impl<'a> ProcView<'a> {
    /// The process part of a JSON event: top level for process events,
    /// under `process` for socket events.
    pub fn of_json(ev: &'a Value) -> Self {
        let p = process_of(ev);
        Self {
            exe: p.get("exe").and_then(Value::as_str),
            argv: Argv::Json(
                p.get("argv")
                    .and_then(Value::as_array)
                    .map_or(&[][..], Vec::as_slice),
            ),
            exe_deleted: p.get("exe_deleted") == Some(&Value::Bool(true)),
            cwd: ev.get("cwd").and_then(Value::as_str),
        }
    }

    /// An ancestor, which has an executable and nothing else.
    pub fn of_ancestor(exe: Option<&'a str>) -> Self {
        Self {
            exe,
            argv: Argv::Typed(&[]),
            exe_deleted: false,
            cwd: None,
        }
    }
}

/// One ancestor as `ancestor` conditions see it.
#[derive(Debug, Clone, Copy)]
pub struct AncestorView<'a> {
    pub pid: u64,
    pub exe: Option<&'a str>,
    pub reparented: bool,
    /// Its place in the chain: 1 for the parent, 2 for its parent, ...
    pub depth: u64,
}

/// The ancestry of an event, typed or from JSON.
#[derive(Debug, Clone, Copy)]
pub enum Ancestry<'a> {
    Typed(&'a [Ancestor]),
    Json(&'a [Value]),
}

impl<'a> Ancestry<'a> {
    pub fn iter(self) -> impl Iterator<Item = AncestorView<'a>> {
        let (typed, json) = match self {
            Ancestry::Typed(a) => (a, &[][..]),
            Ancestry::Json(a) => (&[][..], a),
        };
        typed
            .iter()
            .map(|a| AncestorView {
                pid: u64::from(a.pid),
                exe: a.exe.as_deref(),
                reparented: a.reparented,
                depth: 0,
            })
            .chain(json.iter().map(|a| AncestorView {
                pid: a.get("pid").and_then(Value::as_u64).unwrap_or(0),
                exe: a.get("exe").and_then(Value::as_str),
                reparented: a.get("reparented").and_then(Value::as_bool) == Some(true),
                depth: 0,
            }))
            .zip(1..)
            .map(|(a, depth)| AncestorView { depth, ..a })
    }

    pub fn is_empty(self) -> bool {
        match self {
            Ancestry::Typed(a) => a.is_empty(),
            Ancestry::Json(a) => a.is_empty(),
        }
    }

    pub fn first_pid(self) -> Option<u64> {
        match self {
            Ancestry::Typed(a) => a.first().map(|a| u64::from(a.pid)),
            Ancestry::Json(a) => a.first().and_then(|a| a.get("pid").and_then(Value::as_u64)),
        }
    }
}

enum Body<'e> {
    /// A kind the accessors read.
    Typed(&'e Event),
    Json(&'e Value),
    /// A typed event of a kind the accessors do not read: its JSON form.
    Owned(Value),
}

/// An event being judged.
pub struct Subject<'e> {
    body: Body<'e>,
    json: OnceCell<Value>,
}

/// The process part of a typed event.
struct TypedProc<'e> {
    pid: Option<u32>,
    ppid: Option<u32>,
    exe: Option<&'e str>,
    argv: &'e [String],
    exe_deleted: bool,
    cwd: Option<&'e str>,
    ancestry: &'e [Ancestor],
}

impl<'e> TypedProc<'e> {
    fn task(t: &Task, exe: Option<&'e str>) -> Self {
        Self {
            pid: Some(t.pid),
            ppid: Some(t.ppid),
            exe,
            argv: &[],
            exe_deleted: false,
            cwd: None,
            ancestry: &[],
        }
    }

    fn net(p: Option<&'e ProcessRef>) -> Self {
        Self {
            pid: p.map(|p| p.pid),
            ppid: None,
            exe: p.and_then(|p| p.exe.as_deref()),
            argv: p.map_or(&[][..], |p| p.argv.as_slice()),
            exe_deleted: false,
            cwd: None,
            ancestry: p.map_or(&[][..], |p| p.ancestry.as_slice()),
        }
    }
}

fn net_record(ev: &Event) -> Option<&NetRecord> {
    match ev {
        Event::Connect(r)
        | Event::ConnectResult(r)
        | Event::Accept(r)
        | Event::Listen(r)
        | Event::Bind(r)
        | Event::Close(r)
        | Event::UdpFlow(r)
        | Event::FlowUpdate(r)
        | Event::Connection(r) => Some(r),
        _ => None,
    }
}

impl<'e> Subject<'e> {
    pub fn typed(ev: &'e Event) -> Self {
        let body = match ev {
            Event::Exec(_)
            | Event::ExecFailed(_)
            | Event::Fork(_)
            | Event::Exit(_)
            | Event::Process(_) => Body::Typed(ev),
            _ if net_record(ev).is_some() => Body::Typed(ev),
            // Relays, tunnels, forwarded flows, changes and self-checks are
            // few and have nested records: judged in their JSON form.
            _ => Body::Owned(serde_json::to_value(ev).unwrap_or(Value::Null)),
        };
        Self {
            body,
            json: OnceCell::new(),
        }
    }

    pub fn json_line(ev: &'e Value) -> Self {
        Self {
            body: Body::Json(ev),
            json: OnceCell::new(),
        }
    }

    /// The JSON form (made at the first call for a typed event).
    pub fn json(&self) -> &Value {
        match &self.body {
            Body::Typed(ev) => self
                .json
                .get_or_init(|| serde_json::to_value(ev).unwrap_or(Value::Null)),
            Body::Json(v) => v,
            Body::Owned(v) => v,
        }
    }

    /// Whether the accessors read a typed record (not a JSON form).
    pub fn is_typed(&self) -> bool {
        self.typed_event().is_some()
    }

    fn typed_event(&self) -> Option<&'e Event> {
        match self.body {
            Body::Typed(ev) => Some(ev),
            _ => None,
        }
    }

    fn typed_proc(&self) -> Option<TypedProc<'e>> {
        let ev = self.typed_event()?;
        Some(match ev {
            Event::Exec(r) => TypedProc {
                exe: Some(&r.exe),
                argv: &r.argv,
                exe_deleted: r.exe_deleted,
                cwd: Some(&r.cwd),
                ancestry: &r.ancestry,
                ..TypedProc::task(&r.task, None)
            },
            Event::ExecFailed(r) => TypedProc {
                argv: &r.argv,
                cwd: Some(&r.cwd),
                ancestry: &r.ancestry,
                ..TypedProc::task(&r.task, r.exe.as_deref())
            },
            Event::Fork(r) => TypedProc::task(&r.task, r.exe.as_deref()),
            Event::Exit(r) => TypedProc::task(&r.task, r.exe.as_deref()),
            Event::Process(r) => TypedProc {
                pid: Some(r.pid),
                ppid: Some(r.ppid),
                exe: r.exe.as_deref(),
                argv: &r.argv,
                exe_deleted: r.exe_deleted,
                cwd: r.cwd.as_deref(),
                ancestry: &r.ancestry,
            },
            other => TypedProc::net(net_record(other)?.process.as_ref()),
        })
    }

    pub fn kind(&self) -> &str {
        match self.typed_event() {
            Some(ev) => ev.kind().as_str(),
            None => self
                .json()
                .get("kind")
                .and_then(Value::as_str)
                .unwrap_or_default(),
        }
    }

    pub fn ts(&self) -> Option<&str> {
        match self.typed_event() {
            Some(ev) => match typed_own(ev, Own::Ts) {
                Some(Val::Str(Cow::Borrowed(t))) => Some(t),
                _ => None,
            },
            None => self.json().get("ts").and_then(Value::as_str),
        }
    }

    /// The pid of the event's process.
    pub fn pid(&self) -> Option<u64> {
        match self.typed_proc() {
            Some(p) => p.pid.map(u64::from),
            None => process_of(self.json()).get("pid").and_then(Value::as_u64),
        }
    }

    /// The parent pid the event's process record names.
    pub fn ppid(&self) -> Option<u64> {
        match self.typed_proc() {
            Some(p) => p.ppid.map(u64::from),
            None => process_of(self.json()).get("ppid").and_then(Value::as_u64),
        }
    }

    pub fn ancestry(&self) -> Ancestry<'_> {
        match self.typed_proc() {
            Some(p) => Ancestry::Typed(p.ancestry),
            None => Ancestry::Json(
                process_of(self.json())
                    .get("ancestry")
                    .and_then(Value::as_array)
                    .map_or(&[][..], Vec::as_slice),
            ),
        }
    }

    pub fn process(&self) -> ProcView<'_> {
        match self.typed_proc() {
            Some(p) => ProcView {
                exe: p.exe,
                argv: Argv::Typed(p.argv),
                exe_deleted: p.exe_deleted,
                cwd: p.cwd,
            },
            None => ProcView::of_json(self.json()),
        }
    }

    /// Whether this is a TCP socket event, and its `state`.
    pub fn tcp_state(&self) -> (bool, Option<&str>) {
        match self.typed_event() {
            Some(ev) => net_record(ev).map_or((false, None), |r| {
                (
                    r.proto == Some(crate::event::Proto::Tcp),
                    r.state.as_deref(),
                )
            }),
            None => {
                let v = self.json();
                (
                    v.get("proto").and_then(Value::as_str) == Some("tcp"),
                    v.get("state").and_then(Value::as_str),
                )
            }
        }
    }

    /// A field of the record itself; `None` when the event has no such
    /// field (or it is null).
    pub fn own(&self, f: Own) -> Option<Val<'_>> {
        match self.typed_event() {
            Some(ev) => typed_own(ev, f),
            None => {
                let path: Vec<String> = f.path().split('.').map(str::to_owned).collect();
                self.path(&path)
            }
        }
    }

    /// A field by path, in the JSON form.
    pub fn path(&self, path: &[String]) -> Option<Val<'_>> {
        lookup(self.json(), path)
            .filter(|v| !v.is_null())
            .map(|v| Val::Json(Cow::Borrowed(v)))
    }
}

fn task_own(t: &Task, f: Own) -> Option<Val<'_>> {
    Some(match f {
        Own::Pid => Val::U64(t.pid.into()),
        Own::Tid => Val::U64(t.tid.into()),
        Own::Ppid => Val::U64(t.ppid.into()),
        Own::Uid => Val::U64(t.uid.into()),
        Own::Euid => Val::U64(t.euid.into()),
        Own::Gid => Val::U64(t.gid.into()),
        Own::Egid => Val::U64(t.egid.into()),
        Own::Auid => Val::U64(t.auid?.into()),
        Own::Comm => s(&t.comm),
        Own::CgroupId => Val::U64(t.cgroup_id),
        _ => return None,
    })
}

fn argv_own(argv: &[String], f: Own) -> Option<Val<'_>> {
    match f {
        Own::Argv => Some(Val::Strs(argv)),
        Own::ArgvAt(i) => argv.get(i).map(|a| s(a)),
        _ => None,
    }
}

/// A typed record's field; `None` when its JSON form has no such field or
/// it is null.
fn typed_own(ev: &Event, f: Own) -> Option<Val<'_>> {
    if f == Own::Kind {
        return Some(s(ev.kind().as_str()));
    }
    match ev {
        Event::Exec(r) => match f {
            Own::Ts => Some(s(&r.ts)),
            Own::Exe => Some(s(&r.exe)),
            Own::ExeDeleted => Some(Val::Bool(r.exe_deleted)),
            Own::Cwd => Some(s(&r.cwd)),
            Own::StdioAt(i) => r.stdio.get(i).map(|k| s(k.as_str())),
            Own::Argv | Own::ArgvAt(_) => argv_own(&r.argv, f),
            Own::LoginuidSetBy => opt(r.loginuid_set_by.as_deref(), s),
            _ => task_own(&r.task, f),
        },
        Event::ExecFailed(r) => match f {
            Own::Ts => Some(s(&r.ts)),
            Own::Exe => opt(r.exe.as_deref(), s),
            Own::Cwd => Some(s(&r.cwd)),
            Own::Filename => Some(s(&r.filename)),
            Own::Errno => Some(Val::I64(r.errno.into())),
            Own::Error => Some(s(&r.error)),
            Own::Syscall => Some(s(&r.syscall)),
            Own::Argv | Own::ArgvAt(_) => argv_own(&r.argv, f),
            _ => task_own(&r.task, f),
        },
        Event::Fork(r) => match f {
            Own::Ts => Some(s(&r.ts)),
            Own::Exe => opt(r.exe.as_deref(), s),
            Own::LoginuidSetBy => opt(r.loginuid_set_by.as_deref(), s),
            _ => task_own(&r.task, f),
        },
        Event::Exit(r) => match f {
            Own::Ts => Some(s(&r.ts)),
            Own::Exe => opt(r.exe.as_deref(), s),
            Own::ExitCode => opt(r.exit_code, |c| Val::U64(c.into())),
            Own::Signal => opt(r.signal, |c| Val::U64(c.into())),
            _ => task_own(&r.task, f),
        },
        Event::Process(r) => Some(match f {
            Own::Ts => s(&r.ts),
            Own::Seeded => Val::Bool(r.seeded),
            Own::Pid => Val::U64(r.pid.into()),
            Own::Ppid => Val::U64(r.ppid.into()),
            Own::Uid => Val::U64(r.uid.into()),
            Own::Euid => Val::U64(r.euid.into()),
            Own::Gid => Val::U64(r.gid.into()),
            Own::Egid => Val::U64(r.egid.into()),
            Own::Auid => Val::U64(r.auid?.into()),
            Own::Comm => s(&r.comm),
            Own::Exe => s(r.exe.as_deref()?),
            Own::ExeDeleted => Val::Bool(r.exe_deleted),
            Own::Cwd => s(r.cwd.as_deref()?),
            Own::StdioAt(i) => s(r.stdio.get(i)?.as_str()),
            Own::Argv | Own::ArgvAt(_) => argv_own(&r.argv, f)?,
            _ => return None,
        }),
        other => net_own(net_record(other)?, f),
    }
}

fn net_own(r: &NetRecord, f: Own) -> Option<Val<'_>> {
    let p = r.process.as_ref();
    Some(match f {
        Own::Ts => s(&r.ts),
        Own::Seeded if r.seeded => Val::Bool(true),
        Own::Proto => s(r.proto?.as_str()),
        Own::Direction => s(r.direction?.as_str()),
        Own::Result => s(r.result.as_deref()?),
        Own::Reason => s(r.reason.as_deref()?),
        Own::State => s(r.state.as_deref()?),
        Own::Errno => Val::I64(r.errno?.into()),
        Own::BytesSent => Val::U64(r.bytes_sent?),
        Own::BytesReceived => Val::U64(r.bytes_received?),
        Own::DurationMs => Val::U64(r.duration_ms?),
        Own::LocalAddr => Val::Str(Cow::Owned(r.local?.addr.to_string())),
        Own::LocalPort => Val::U64(r.local?.port.into()),
        Own::RemoteAddr => Val::Str(Cow::Owned(r.remote?.addr.to_string())),
        Own::RemotePort => Val::U64(r.remote?.port.into()),
        Own::ProcessPid => Val::U64(p?.pid.into()),
        Own::ProcessUid => Val::U64(p?.uid?.into()),
        Own::ProcessAuid => Val::U64(p?.auid?.into()),
        Own::ProcessComm => s(&p?.comm),
        Own::ProcessExe => s(p?.exe.as_deref()?),
        Own::ProcessArgv => Val::Strs(&p?.argv),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{
        Direction, Endpoint, ExecFailedRecord, ExecRecord, ExitRecord, FdKind, ProcessRecord, Proto,
    };

    fn task(auid: Option<u32>) -> Task {
        Task {
            pid: 20,
            tid: 21,
            ppid: 10,
            uid: 33,
            euid: 0,
            gid: 34,
            egid: 35,
            auid,
            comm: "sh".into(),
            cgroup_id: 7,
            namespaces: crate::event::Namespaces {
                net: 4026531840,
                mnt: 4026532201,
                pid: 4026531836,
                uts: 4026531838,
            },
            cgroup: Some("/lxc.payload.web1".into()),
            container_id: auid.is_none().then(|| "web1".into()),
        }
    }

    fn ancestry() -> Vec<Ancestor> {
        vec![
            Ancestor {
                pid: 10,
                exe: Some("/usr/sbin/nginx".into()),
                reparented: true,
            },
            Ancestor {
                pid: 1,
                exe: None,
                reparented: false,
            },
        ]
    }

    fn process_ref(auid: Option<u32>) -> ProcessRef {
        ProcessRef {
            pid: 20,
            comm: "nc".into(),
            uid: Some(33),
            auid,
            exe: Some("/usr/bin/nc.openbsd".into()),
            argv: vec!["nc".into(), "-l".into()],
            ancestry: ancestry(),
        }
    }

    /// Events of every kind the accessors read, with optional fields
    /// present and absent.
    pub(crate) fn samples() -> Vec<Event> {
        let ts = String::from("2026-12-07T10:00:00.5Z");
        let mut v = Vec::new();
        for auid in [None, Some(1000)] {
            v.push(Event::Exec(Box::new(ExecRecord {
                ts: ts.clone(),
                task: task(auid),
                exe: "/bin/busybox".into(),
                exe_deleted: auid.is_some(),
                exe_truncated: false,
                argv: vec!["sh".into(), "-c".into(), "id".into()],
                argv_truncated: false,
                cwd: "/var/www".into(),
                cwd_truncated: false,
                stdio: [FdKind::Socket, FdKind::Pipe, FdKind::Tty],
                ancestry: ancestry(),
                loginuid_set_by: auid.map(|_| "/usr/sbin/sshd".into()),
            })));
            v.push(Event::ExecFailed(Box::new(ExecFailedRecord {
                ts: ts.clone(),
                task: task(auid),
                syscall: "execve".into(),
                filename: "/tmp/x".into(),
                errno: -2,
                error: "ENOENT".into(),
                argv: vec![],
                argv_truncated: false,
                cwd: "/tmp".into(),
                exe: auid.map(|_| "/bin/sh".into()),
                ancestry: vec![],
            })));
            v.push(Event::Fork(crate::event::ForkRecord {
                ts: ts.clone(),
                task: task(auid),
                exe: auid.map(|_| "/bin/sh".into()),
                loginuid_set_by: auid.map(|_| "/bin/sh".into()),
            }));
            v.push(Event::Exit(ExitRecord {
                ts: ts.clone(),
                task: task(auid),
                exe: Some("/bin/sh".into()),
                exit_code: auid.map(|_| 3),
                signal: auid.is_none().then_some(9),
                core_dumped: false,
                lifetime_ms: Some(5),
            }));
            v.push(Event::Process(Box::new(ProcessRecord {
                ts: ts.clone(),
                seeded: true,
                pid: 5,
                ppid: 1,
                uid: 0,
                euid: 0,
                gid: 0,
                egid: 0,
                auid,
                comm: "sshd".into(),
                exe: auid.map(|_| "/usr/sbin/sshd".into()),
                exe_deleted: false,
                argv: vec!["sshd: /usr/sbin/sshd".into()],
                cwd: auid.map(|_| "/".into()),
                stdio: [FdKind::None, FdKind::Chardev, FdKind::File],
                ancestry: ancestry(),
                namespaces: task(auid).namespaces,
                cgroup: auid.map(|_| "/system.slice/ssh.service".into()),
                container_id: None,
            })));
            let full = NetRecord {
                ts: ts.clone(),
                proto: Some(Proto::Tcp),
                netns: 4026531840,
                socket: 99,
                local: Some(Endpoint {
                    addr: "10.0.0.1".parse().unwrap(),
                    port: 80,
                }),
                remote: Some(Endpoint {
                    addr: "2001:db8::1".parse().unwrap(),
                    port: 4444,
                }),
                direction: Some(Direction::Inbound),
                process: Some(process_ref(auid)),
                peer_process: None,
                result: Some("refused".into()),
                errno: Some(-111),
                reason: Some("closed".into()),
                bytes_sent: Some(1),
                bytes_received: Some(2),
                packets_sent: Some(3),
                packets_received: Some(4),
                duration_ms: Some(6),
                state: Some("listen".into()),
                seeded: auid.is_some(),
            };
            for kind in [
                crate::event::Kind::Connect,
                crate::event::Kind::Listen,
                crate::event::Kind::Close,
                crate::event::Kind::Connection,
            ] {
                v.push(Event::net(kind, full.clone()));
            }
            v.push(Event::net(
                crate::event::Kind::UdpFlow,
                NetRecord {
                    ts: ts.clone(),
                    ..NetRecord::default()
                },
            ));
        }
        v
    }

    fn normal(v: Option<Value>) -> Option<Value> {
        v.filter(|v| !v.is_null())
    }

    /// Every accessor reads what a lookup in the JSON form finds.
    #[test]
    fn accessors_read_what_the_json_form_has() {
        for ev in samples() {
            let json = serde_json::to_value(&ev).unwrap();
            let typed = Subject::typed(&ev);
            for f in Own::all() {
                let path: Vec<String> = f.path().split('.').map(str::to_owned).collect();
                let want = normal(lookup(&json, &path).cloned());
                let got = normal(typed.own(f).map(|v| v.to_json()));
                assert_eq!(got, want, "{} of {}", f.path(), json);
            }
            let by_json = Subject::json_line(&json);
            assert_eq!(typed.kind(), by_json.kind());
            assert_eq!(typed.ts(), by_json.ts());
            assert_eq!(typed.pid(), by_json.pid(), "{json}");
            assert_eq!(typed.ppid(), by_json.ppid(), "{json}");
            assert_eq!(typed.tcp_state(), by_json.tcp_state());
            let a: Vec<_> = typed
                .ancestry()
                .iter()
                .map(|a| (a.pid, a.exe.map(str::to_owned), a.reparented))
                .collect();
            let b: Vec<_> = by_json
                .ancestry()
                .iter()
                .map(|a| (a.pid, a.exe.map(str::to_owned), a.reparented))
                .collect();
            assert_eq!(a, b);
            let (p, q) = (typed.process(), by_json.process());
            assert_eq!(p.exe, q.exe);
            assert_eq!(p.exe_deleted, q.exe_deleted);
            assert_eq!(p.cwd, q.cwd, "{json}");
            assert_eq!(
                p.argv.strs().collect::<Vec<_>>(),
                q.argv.strs().collect::<Vec<_>>()
            );
        }
    }

    #[test]
    fn paths_resolve_to_accessors() {
        let r = |p: &str| Field::resolve(&p.split('.').map(str::to_owned).collect::<Vec<_>>());
        assert_eq!(r("applet"), Field::Computed(Computed::Applet));
        assert_eq!(r("listener"), Field::Listener);
        assert_eq!(r("argv.2"), Field::Own(Own::ArgvAt(2)));
        assert_eq!(r("stdio.0"), Field::Own(Own::StdioAt(0)));
        assert_eq!(r("remote.port"), Field::Own(Own::RemotePort));
        assert_eq!(
            r("ancestry.0.exe"),
            Field::Path(vec!["ancestry".into(), "0".into(), "exe".into()])
        );
        for f in Own::all() {
            let path: Vec<String> = f.path().split('.').map(str::to_owned).collect();
            assert_eq!(Field::resolve(&path), Field::Own(f));
        }
        for c in Computed::ALL {
            assert_eq!(r(c.name()), Field::Computed(c));
        }
    }
}
