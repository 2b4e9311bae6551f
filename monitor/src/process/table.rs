//! Bounded process table keyed by pid.

use std::{
    collections::VecDeque,
    sync::Arc,
    time::{Duration, Instant},
};

use super::cgroup::Placement;
use crate::event::{Ancestor, FdKind, Namespaces};

/// Most ancestors reported for one process; deeper chains are cut.
pub const ANCESTRY_MAX: usize = 64;
/// Bytes of command line kept per table entry. Exec events carry the full
/// (bounded) argv; the table keeps enough to name a process.
pub const TABLE_ARGV_BYTES: usize = 1024;

/// What the monitor knows of one process.
#[derive(Debug, Clone, PartialEq)]
pub struct Process {
    pub pid: u32,
    /// The parent the kernel names now (`real_parent`).
    pub ppid: u32,
    /// The process that forked this one, from the fork record. It differs
    /// from `ppid` once the process was re-parented (its parent exited and
    /// a subreaper or init adopted it); the same as `ppid` when the fork was
    /// not seen (seeded processes, lost records).
    pub birth_ppid: u32,
    /// Start time in ns since boot, when known exactly (from the kernel).
    pub start_boot_ns: Option<u64>,
    pub uid: u32,
    pub euid: u32,
    pub gid: u32,
    pub egid: u32,
    /// Audit login uid: set in login sessions, absent for services.
    pub auid: Option<u32>,
    pub comm: String,
    /// Executable, shared between a parent and the children it forks.
    pub exe: Option<Arc<str>>,
    pub exe_deleted: bool,
    pub argv: Arc<[String]>,
    pub cwd: Option<Arc<str>>,
    pub stdio: [FdKind; 3],
    /// Inode numbers of the pipes or fifos on stdin and stdout (0: not a
    /// pipe): two processes where one's stdout is the other's stdin are
    /// joined (`nc -l ... | nc ...`, fifo plumbing).
    pub pipes: Pipes,
    /// Found in /proc at start rather than seen being created.
    pub seeded: bool,
    pub namespaces: Namespaces,
    /// Its cgroup v2 path and container, when known.
    pub cgroup: Option<Placement>,
}

/// The pipes or fifos on a process's stdin and stdout, by inode number
/// (0: that descriptor is not a pipe).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pipes {
    pub stdin: u64,
    pub stdout: u64,
}

impl Pipes {
    /// Whether data flows between the two through a pipe, either way.
    pub fn joined(&self, other: &Pipes) -> bool {
        (self.stdout != 0 && self.stdout == other.stdin)
            || (self.stdin != 0 && self.stdin == other.stdout)
    }
}

/// Counters the metrics stage exports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TableStats {
    pub entries: usize,
    pub evictions: u64,
}

struct Entry {
    process: Process,
    generation: u64,
    exited: Option<Instant>,
}

/// Processes by pid, bounded: past `capacity`, exited processes go first,
/// then the oldest entries; each eviction is counted.
pub struct ProcessTable {
    /// By pid, with a fast hash: several lookups per record (ancestry).
    entries: foldhash::HashMap<u32, Entry>,
    /// Insertion order, checked lazily against each entry's generation.
    order: VecDeque<(u32, u64)>,
    /// Exit order, for retention of exited processes.
    exited: VecDeque<(u32, u64, Instant)>,
    capacity: usize,
    retention: Duration,
    next_generation: u64,
    evictions: u64,
}

impl ProcessTable {
    pub fn new(capacity: usize, retention: Duration) -> Self {
        Self {
            entries: foldhash::HashMap::default(),
            order: VecDeque::new(),
            exited: VecDeque::new(),
            capacity: capacity.max(1),
            retention,
            next_generation: 0,
            evictions: 0,
        }
    }

    pub fn stats(&self) -> TableStats {
        TableStats {
            entries: self.entries.len(),
            evictions: self.evictions,
        }
    }

    pub fn get(&self, pid: u32) -> Option<&Process> {
        self.entries.get(&pid).map(|e| &e.process)
    }

    /// Inserts or replaces the process with this pid (a reused pid replaces
    /// the old entry).
    pub fn insert(&mut self, process: Process) {
        let pid = process.pid;
        let generation = self.next_generation;
        self.next_generation += 1;
        self.entries.insert(
            pid,
            Entry {
                process,
                generation,
                exited: None,
            },
        );
        self.order.push_back((pid, generation));
        self.enforce_capacity();
        self.compact_order();
    }

    /// Applies an exec to a known process, or inserts it when unknown. The
    /// process keeps the parent that forked it.
    pub fn exec(&mut self, mut process: Process) {
        match self.entries.get_mut(&process.pid) {
            Some(entry) if entry.exited.is_none() => {
                process.birth_ppid = entry.process.birth_ppid;
                entry.process = process;
            }
            _ => self.insert(process),
        }
    }

    /// Records the audit login uid a process set for itself.
    pub fn set_auid(&mut self, pid: u32, auid: Option<u32>) {
        if let Some(e) = self.entries.get_mut(&pid) {
            e.process.auid = auid;
        }
    }

    /// Records a new process forked from its parent, inheriting the
    /// parent's executable, arguments and working directory.
    pub fn fork(&mut self, mut child: Process) {
        if let Some(parent) = self.get(child.ppid) {
            child.exe = parent.exe.clone();
            child.exe_deleted = parent.exe_deleted;
            child.argv = parent.argv.clone();
            child.cwd = parent.cwd.clone();
            child.stdio = parent.stdio;
            child.pipes = parent.pipes;
        }
        self.insert(child);
    }

    /// Marks a process as exited; it stays for the retention period so its
    /// children's ancestry still resolves.
    pub fn exit(&mut self, pid: u32, now: Instant) -> Option<&Process> {
        let entry = self.entries.get_mut(&pid)?;
        if entry.exited.is_none() {
            entry.exited = Some(now);
            self.exited.push_back((pid, entry.generation, now));
        }
        // Many exits within the retention period: the oldest exited
        // processes leave early rather than letting the queue grow.
        while self.exited.len() > 2 * self.capacity {
            if let Some(victim) = self.pop_oldest_exited() {
                self.entries.remove(&victim);
                self.evictions += 1;
            }
        }
        self.entries.get(&pid).map(|e| &e.process)
    }

    /// Drops exited processes older than the retention period.
    pub fn expire(&mut self, now: Instant) {
        while let Some(&(pid, generation, at)) = self.exited.front() {
            if now.duration_since(at) < self.retention {
                break;
            }
            self.exited.pop_front();
            if self
                .entries
                .get(&pid)
                .is_some_and(|e| e.generation == generation)
            {
                self.entries.remove(&pid);
            }
        }
        self.compact_order();
    }

    /// The ancestors of process `pid`, whose kernel parent is `ppid`,
    /// nearest first, up to pid 1 or the first ancestor the table does not
    /// know.
    ///
    /// The chain follows who forked whom. A process whose parent exited
    /// before it (a daemon's double fork, `setsid -f`, a shell whose
    /// launcher quit) is adopted by a subreaper or init, but its ancestry
    /// still goes through the process that forked it, marked `reparented`:
    /// a backdoor that detaches from a web server keeps the web server in
    /// its ancestry.
    pub fn ancestry(&self, pid: u32, ppid: u32) -> Vec<Ancestor> {
        let mut chain = Vec::new();
        let (mut next, mut reparented) = self.get(pid).map_or((ppid, false), |p| self.parent_of(p));
        while next != 0 && chain.len() < ANCESTRY_MAX {
            let process = self.get(next);
            chain.push(Ancestor {
                pid: next,
                exe: process.and_then(|p| p.exe.clone()),
                reparented,
            });
            match process {
                Some(p) if next != 1 => {
                    let (parent, adopted) = self.parent_of(p);
                    if parent == next {
                        break;
                    }
                    (next, reparented) = (parent, adopted);
                }
                _ => break,
            }
        }
        chain
    }

    /// The next step up from `p`: the process that forked it when that is
    /// still known and is not the kernel's parent (then `true`: `p` was
    /// re-parented), else the kernel's parent. The forking process must have
    /// started before `p`, so a reused pid is never taken for it.
    fn parent_of(&self, p: &Process) -> (u32, bool) {
        if p.birth_ppid != p.ppid && p.birth_ppid != 0 {
            let born_after_parent =
                self.get(p.birth_ppid)
                    .is_some_and(|b| match (b.start_boot_ns, p.start_boot_ns) {
                        (Some(b), Some(c)) => b <= c,
                        _ => false,
                    });
            if born_after_parent {
                return (p.birth_ppid, true);
            }
        }
        (p.ppid, false)
    }

    fn enforce_capacity(&mut self) {
        while self.entries.len() > self.capacity {
            let victim = self.pop_oldest_exited().or_else(|| self.pop_oldest());
            match victim {
                Some(pid) => {
                    self.entries.remove(&pid);
                    self.evictions += 1;
                }
                None => break,
            }
        }
    }

    fn pop_oldest_exited(&mut self) -> Option<u32> {
        while let Some((pid, generation, _)) = self.exited.pop_front() {
            if self
                .entries
                .get(&pid)
                .is_some_and(|e| e.generation == generation)
            {
                return Some(pid);
            }
        }
        None
    }

    fn pop_oldest(&mut self) -> Option<u32> {
        while let Some((pid, generation)) = self.order.pop_front() {
            if self
                .entries
                .get(&pid)
                .is_some_and(|e| e.generation == generation)
            {
                return Some(pid);
            }
        }
        None
    }

    /// Keeps the lazy order queue from growing past a small multiple of the
    /// table when pids are replaced often.
    fn compact_order(&mut self) {
        if self.order.len() > 2 * self.entries.len() + 1024 {
            let entries = &self.entries;
            self.order
                .retain(|(pid, g)| entries.get(pid).is_some_and(|e| e.generation == *g));
        }
    }
}

/// Keeps at most [`TABLE_ARGV_BYTES`] of arguments for the table.
pub fn bounded_argv(argv: &[String]) -> Arc<[String]> {
    let mut used = 0;
    let mut kept = Vec::new();
    for arg in argv {
        if used + arg.len() > TABLE_ARGV_BYTES {
            break;
        }
        used += arg.len();
        kept.push(arg.clone());
    }
    kept.into()
}

#[cfg(test)]
impl Process {
    /// A process with only an identity and an executable, for tests.
    pub fn for_test(pid: u32, ppid: u32, exe: &str) -> Self {
        Process {
            pid,
            ppid,
            birth_ppid: ppid,
            start_boot_ns: None,
            uid: 0,
            euid: 0,
            gid: 0,
            egid: 0,
            auid: None,
            comm: exe.rsplit('/').next().unwrap_or(exe).to_owned(),
            exe: Some(exe.into()),
            exe_deleted: false,
            argv: Arc::from(vec![exe.to_owned()]),
            cwd: Some("/".into()),
            stdio: [FdKind::None; 3],
            pipes: Pipes::default(),
            seeded: false,
            namespaces: Namespaces::default(),
            cgroup: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proc(pid: u32, ppid: u32, exe: &str) -> Process {
        Process::for_test(pid, ppid, exe)
    }

    #[test]
    fn ancestry_walks_to_init() {
        let mut t = ProcessTable::new(100, Duration::from_secs(60));
        t.insert(proc(1, 0, "/sbin/init"));
        t.insert(proc(10, 1, "/usr/sbin/sshd"));
        t.insert(proc(20, 10, "/bin/bash"));
        let chain = t.ancestry(30, 20);
        let pids: Vec<u32> = chain.iter().map(|a| a.pid).collect();
        assert_eq!(pids, vec![20, 10, 1]);
        assert_eq!(chain[1].exe.as_deref(), Some("/usr/sbin/sshd"));
    }

    #[test]
    fn ancestry_stops_at_unknown_and_on_loops() {
        let mut t = ProcessTable::new(100, Duration::from_secs(60));
        t.insert(proc(5, 6, "/a"));
        t.insert(proc(6, 5, "/b"));
        assert!(t.ancestry(5, 6).len() <= ANCESTRY_MAX);
        let chain = ProcessTable::new(10, Duration::ZERO).ancestry(78, 77);
        assert_eq!(
            chain,
            vec![Ancestor {
                pid: 77,
                exe: None,
                reparented: false
            }]
        );
    }

    /// `p` with a start time, forked by `birth` and now the kernel's child
    /// of `ppid`.
    fn born(pid: u32, birth: u32, ppid: u32, start: u64, exe: &str) -> Process {
        let mut p = proc(pid, ppid, exe);
        p.birth_ppid = birth;
        p.start_boot_ns = Some(start);
        p
    }

    #[test]
    fn a_reparented_process_keeps_the_process_that_forked_it() {
        let mut t = ProcessTable::new(100, Duration::from_secs(60));
        t.insert(born(1, 0, 0, 0, "/sbin/init"));
        t.insert(born(10, 1, 1, 10, "/usr/sbin/nginx"));
        t.insert(born(20, 10, 10, 20, "/usr/bin/ncat"));
        // ncat forked 30 and exited; init adopted 30, which then ran sh.
        let mut child = born(30, 20, 20, 30, "/usr/bin/ncat");
        t.fork(child.clone());
        t.exit(20, Instant::now());
        child.ppid = 1;
        child.exe = Some("/bin/sh".into());
        child.birth_ppid = 1;
        t.exec(child);
        assert_eq!(t.get(30).map(|p| (p.ppid, p.birth_ppid)), Some((1, 20)));
        let chain = t.ancestry(30, 1);
        let got: Vec<(u32, bool)> = chain.iter().map(|a| (a.pid, a.reparented)).collect();
        assert_eq!(got, vec![(20, true), (10, false), (1, false)]);
        assert_eq!(chain[0].exe.as_deref(), Some("/usr/bin/ncat"));
    }

    #[test]
    fn a_reused_pid_is_not_taken_for_the_forking_process() {
        let mut t = ProcessTable::new(100, Duration::from_secs(60));
        t.insert(born(1, 0, 0, 0, "/sbin/init"));
        // Pid 20 forked 30 and is gone; a later process now has pid 20.
        t.insert(born(20, 1, 1, 50, "/usr/bin/later"));
        t.insert(born(30, 20, 1, 30, "/bin/sh"));
        let got: Vec<(u32, bool)> = t
            .ancestry(30, 1)
            .iter()
            .map(|a| (a.pid, a.reparented))
            .collect();
        assert_eq!(got, vec![(1, false)]);
    }

    #[test]
    fn fork_inherits_and_exec_replaces() {
        let mut t = ProcessTable::new(100, Duration::from_secs(60));
        t.insert(proc(10, 1, "/usr/sbin/nginx"));
        let mut child = proc(11, 10, "/ignored");
        child.exe = None;
        t.fork(child);
        assert_eq!(
            t.get(11).and_then(|p| p.exe.as_deref()),
            Some("/usr/sbin/nginx")
        );
        t.exec(proc(11, 10, "/bin/sh"));
        assert_eq!(t.get(11).and_then(|p| p.exe.as_deref()), Some("/bin/sh"));
    }

    #[test]
    fn exited_processes_are_kept_then_expired() {
        let mut t = ProcessTable::new(100, Duration::from_secs(60));
        let start = Instant::now();
        t.insert(proc(10, 1, "/a"));
        t.exit(10, start);
        t.expire(start + Duration::from_secs(30));
        assert!(t.get(10).is_some());
        t.expire(start + Duration::from_secs(61));
        assert!(t.get(10).is_none());
    }

    #[test]
    fn capacity_is_enforced_exited_first_and_counted() {
        let mut t = ProcessTable::new(3, Duration::from_secs(60));
        t.insert(proc(1, 0, "/init"));
        t.insert(proc(2, 1, "/a"));
        t.insert(proc(3, 1, "/b"));
        t.exit(3, Instant::now());
        t.insert(proc(4, 1, "/c"));
        assert!(t.get(3).is_none(), "the exited process goes first");
        assert!(t.get(1).is_some());
        t.insert(proc(5, 1, "/d"));
        assert!(t.get(1).is_none(), "then the oldest");
        assert_eq!(
            t.stats(),
            TableStats {
                entries: 3,
                evictions: 2
            }
        );
    }

    #[test]
    fn memory_stays_bounded_under_churn() {
        let mut t = ProcessTable::new(64, Duration::from_secs(3600));
        let now = Instant::now();
        for pid in 0..100_000u32 {
            t.insert(proc(pid % 5000 + 2, 1, "/x"));
            t.exit(pid % 5000 + 2, now);
            t.expire(now);
        }
        assert!(t.stats().entries <= 64);
        assert!(
            t.order.len() <= 2 * 64 + 1024 + 1,
            "order queue {}",
            t.order.len()
        );
        assert!(t.exited.len() <= 2 * 64, "exit queue {}", t.exited.len());
        assert!(t.stats().evictions > 0);
    }

    #[test]
    fn argv_is_bounded_in_the_table() {
        let long: Vec<String> = (0..1000).map(|i| format!("arg{i}")).collect();
        let kept = bounded_argv(&long);
        assert!(kept.iter().map(String::len).sum::<usize>() <= TABLE_ARGV_BYTES);
        assert_eq!(kept[0], "arg0");
    }
}
