//! The enrich stage: keeps the process table current from kernel events and
//! turns each into an output [`Event`] with its process context.

use std::{sync::Arc, time::Instant};

use monitor_common::event::{
    TaskInfo, EXEC_ARGV_TRUNCATED, EXEC_ARGV_UNREADABLE, EXEC_CWD_TRUNCATED, EXEC_EXE_TRUNCATED,
    EXEC_FILENAME_TRUNCATED, SYSCALL_EXECVEAT,
};

use crate::{
    clock::BootClock,
    dataplane::change::Changes,
    decode::{c_str, path_from_components, split_args, KernelEvent},
    escape::escape,
    event::{
        Event, ExecFailedRecord, ExecRecord, ExitRecord, FdKind, ForkRecord, Namespaces,
        ProcessRecord, Task, Termination,
    },
    net::{FlowMap, NetTracker},
    process::{
        cgroup::{CgroupPaths, Placement},
        Process, ProcessTable,
    },
};

/// The kernel's encoding of a device number: major in the top 12 bits.
const KERNEL_MINOR_BITS: u32 = 20;

pub struct Enricher {
    pub table: ProcessTable,
    pub clock: BootClock,
    pub net: NetTracker,
    pub changes: Changes,
    /// The newest kernel record applied (boot ns): everything the kernel
    /// recorded before it has been applied too (the reader merges the
    /// rings in time order).
    pub applied_ns: u64,
    /// cgroup paths by id; resolves nothing until the daemon gives it the
    /// machine's cgroup tree.
    pub cgroups: CgroupPaths,
}

fn task(pid: u32, tid: u32, t: &TaskInfo, cgroups: &mut CgroupPaths) -> Task {
    let placement = cgroups.resolve(t.cgroup_id, pid);
    Task {
        pid,
        tid,
        ppid: t.ppid,
        uid: t.uid,
        euid: t.euid,
        gid: t.gid,
        egid: t.egid,
        auid: (t.auid != u32::MAX).then_some(t.auid),
        comm: escape(c_str(&t.comm)),
        cgroup_id: t.cgroup_id,
        namespaces: Namespaces::from_kernel(&t.ns),
        container_id: placement.as_ref().and_then(|p| p.container_id.clone()),
        cgroup: placement.map(|p| p.path),
    }
}

/// A path from the kernel's components, escaped; one whose walk stopped
/// before the root is shown after `...`, never as if it were absolute.
fn shown_path(components: &[u8], truncated: bool) -> String {
    let path = escape(&path_from_components(components));
    if truncated {
        format!("{}{path}", crate::process::program::TRUNCATED_PREFIX)
    } else {
        path
    }
}

/// The executable of `before` (what a process ran, or its parent) when the
/// process now has an audit login uid `before` did not have: it set one.
fn loginuid_setter(before: &Process, auid: Option<u32>) -> Option<String> {
    if auid.is_some() && before.auid != auid {
        Some(before.exe.as_deref().unwrap_or("").to_owned())
    } else {
        None
    }
}

fn process_from(task: &Task, start_boot_ns: u64) -> Process {
    Process {
        pid: task.pid,
        ppid: task.ppid,
        birth_ppid: task.ppid,
        start_boot_ns: Some(start_boot_ns),
        uid: task.uid,
        euid: task.euid,
        gid: task.gid,
        egid: task.egid,
        auid: task.auid,
        comm: task.comm.clone(),
        exe: None,
        exe_deleted: false,
        argv: Arc::from(Vec::new()),
        cwd: None,
        stdio: [FdKind::None; 3],
        pipes: crate::process::Pipes::default(),
        seeded: false,
        namespaces: task.namespaces,
        cgroup: task.cgroup.clone().map(|path| Placement {
            path,
            container_id: task.container_id.clone(),
        }),
    }
}

impl Enricher {
    pub fn new(table: ProcessTable, net: NetTracker) -> Self {
        Self {
            table,
            clock: BootClock::new(),
            net,
            changes: Changes::default(),
            applied_ns: 0,
            cgroups: CgroupPaths::new(None, std::path::PathBuf::from("/proc")),
        }
    }

    /// Adds the processes found in /proc and returns their `process` events.
    pub fn seed(&mut self, processes: Vec<crate::process::Process>) -> Vec<Event> {
        let ts = self.clock.rfc3339(BootClock::boot_now_ns());
        for p in processes.iter().cloned() {
            self.table.insert(p);
        }
        processes
            .into_iter()
            .map(|p| {
                Event::Process(Box::new(ProcessRecord {
                    ts: ts.clone(),
                    seeded: true,
                    pid: p.pid,
                    ppid: p.ppid,
                    uid: p.uid,
                    euid: p.euid,
                    gid: p.gid,
                    egid: p.egid,
                    auid: p.auid,
                    comm: p.comm.clone(),
                    exe: p.exe.as_deref().map(str::to_owned),
                    exe_deleted: p.exe_deleted,
                    argv: p.argv.to_vec(),
                    cwd: p.cwd.as_deref().map(str::to_owned),
                    stdio: p.stdio,
                    ancestry: self.table.ancestry(p.pid, p.ppid),
                    namespaces: p.namespaces,
                    container_id: p.cgroup.as_ref().and_then(|c| c.container_id.clone()),
                    cgroup: p.cgroup.map(|c| c.path),
                }))
            })
            .collect()
    }

    /// Applies one kernel event to the tables and adds its output events
    /// to `out`.
    pub fn apply(
        &mut self,
        ev: KernelEvent,
        now: Instant,
        flows: &mut dyn FlowMap,
        out: &mut Vec<Event>,
    ) {
        let event = match ev {
            KernelEvent::Net(n) => {
                out.extend(self.net.apply(&n, &self.table, &self.clock, flows));
                return;
            }
            KernelEvent::Bench(_) => return,
            KernelEvent::Config(c) => {
                if let Some(r) = self.changes.from_kernel(&c, now, &self.table, &self.clock) {
                    out.push(Event::ConfigChange(Box::new(r)));
                }
                return;
            }
            KernelEvent::Exec {
                fixed,
                exe,
                cwd,
                argv,
            } => {
                let h = fixed.header;
                let task = task(h.pid, h.tid, &fixed.task, &mut self.cgroups);
                let flags = fixed.flags;
                let exe = shown_path(&exe, flags & EXEC_EXE_TRUNCATED != 0);
                let cwd = shown_path(&cwd, flags & EXEC_CWD_TRUNCATED != 0);
                let argv: Vec<String> = split_args(&argv).into_iter().map(escape).collect();
                let stdio = fixed
                    .stdio
                    .map(|fd| FdKind::classify(fd.mode, fd.rdev >> KERNEL_MINOR_BITS));
                let mut p = process_from(&task, fixed.task.start_boot_ns);
                p.exe = Some(Arc::from(exe.as_str()));
                p.exe_deleted = fixed.exe_nlink == 0;
                p.argv = crate::process::bounded_argv(&argv);
                p.cwd = Some(Arc::from(cwd.as_str()));
                p.stdio = stdio;
                let pipe = |fd: &monitor_common::event::StdioFd| {
                    if fd.mode & libc::S_IFMT == libc::S_IFIFO {
                        fd.ino
                    } else {
                        0
                    }
                };
                p.pipes = crate::process::Pipes {
                    stdin: pipe(&fixed.stdio[0]),
                    stdout: pipe(&fixed.stdio[1]),
                };
                // Before this exec the process ran the program it was
                // forked with: if it had no login uid then (nor its parent)
                // and has one now, that program set it.
                let before = self
                    .table
                    .get(task.pid)
                    .or_else(|| self.table.get(task.ppid));
                let loginuid_set_by = before.and_then(|b| loginuid_setter(b, task.auid));
                self.table.exec(p);
                Event::Exec(Box::new(ExecRecord {
                    ts: self.clock.rfc3339(h.ts_boot_ns),
                    ancestry: self.table.ancestry(task.pid, task.ppid),
                    task,
                    exe,
                    exe_deleted: fixed.exe_nlink == 0,
                    exe_truncated: flags & EXEC_EXE_TRUNCATED != 0,
                    argv,
                    argv_truncated: flags & (EXEC_ARGV_TRUNCATED | EXEC_ARGV_UNREADABLE) != 0,
                    cwd,
                    cwd_truncated: flags & EXEC_CWD_TRUNCATED != 0,
                    stdio,
                    loginuid_set_by,
                }))
            }
            KernelEvent::ExecFailed {
                fixed,
                filename,
                cwd,
                argv,
            } => {
                let h = fixed.header;
                let task = task(h.pid, h.tid, &fixed.task, &mut self.cgroups);
                let argv: Vec<String> = split_args(&argv).into_iter().map(escape).collect();
                Event::ExecFailed(Box::new(ExecFailedRecord {
                    ts: self.clock.rfc3339(h.ts_boot_ns),
                    exe: self
                        .table
                        .get(task.pid)
                        .and_then(|p| p.exe.as_deref().map(str::to_owned)),
                    ancestry: self.table.ancestry(task.pid, task.ppid),
                    task,
                    syscall: if fixed.syscall == SYSCALL_EXECVEAT {
                        "execveat"
                    } else {
                        "execve"
                    }
                    .to_owned(),
                    filename: escape(c_str(&filename)),
                    errno: fixed.errno,
                    error: errno_name(fixed.errno),
                    argv,
                    argv_truncated: fixed.flags & (EXEC_ARGV_TRUNCATED | EXEC_FILENAME_TRUNCATED)
                        != 0,
                    cwd: escape(&path_from_components(&cwd)),
                }))
            }
            KernelEvent::Fork(f) => {
                let h = f.header;
                let task = task(h.pid, h.tid, &f.task, &mut self.cgroups);
                // A child born with a login uid its parent did not have:
                // the parent set its own after it started.
                let loginuid_set_by = self
                    .table
                    .get(task.ppid)
                    .and_then(|parent| loginuid_setter(parent, task.auid));
                if loginuid_set_by.is_some() {
                    self.table.set_auid(task.ppid, task.auid);
                }
                self.table.fork(process_from(&task, f.task.start_boot_ns));
                let exe = self
                    .table
                    .get(task.pid)
                    .and_then(|p| p.exe.as_deref().map(str::to_owned));
                Event::Fork(ForkRecord {
                    ts: self.clock.rfc3339(h.ts_boot_ns),
                    task,
                    exe,
                    loginuid_set_by,
                })
            }
            KernelEvent::Exit(x) => {
                let h = x.header;
                let task = task(h.pid, h.tid, &x.task, &mut self.cgroups);
                let exe = self
                    .table
                    .exit(task.pid, now)
                    .and_then(|p| p.exe.as_deref().map(str::to_owned));
                let (exit_code, signal, core_dumped) =
                    match Termination::from_wait_status(x.exit_code) {
                        Termination::Exited { code } => (Some(code), None, false),
                        Termination::Signaled {
                            signal,
                            core_dumped,
                        } => (None, Some(signal), core_dumped),
                    };
                let start = x.task.start_boot_ns;
                Event::Exit(ExitRecord {
                    ts: self.clock.rfc3339(h.ts_boot_ns),
                    task,
                    exe,
                    exit_code,
                    signal,
                    core_dumped,
                    lifetime_ms: (start != 0 && h.ts_boot_ns >= start)
                        .then(|| (h.ts_boot_ns - start) / 1_000_000),
                })
            }
        };
        out.push(event);
    }

    /// Periodic work on the flow counters (see [`NetTracker::sweep`]).
    pub fn sweep(&mut self, flows: &mut dyn FlowMap, out: &mut Vec<Event>) {
        let now = BootClock::boot_now_ns();
        out.extend(self.net.sweep(now, &self.table, &self.clock, flows));
    }
}

/// Symbolic name of an errno value, such as `ENOENT`.
pub fn errno_name(errno: i32) -> String {
    let name = match errno {
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::EIO => "EIO",
        libc::E2BIG => "E2BIG",
        libc::ENOEXEC => "ENOEXEC",
        libc::EBADF => "EBADF",
        libc::EAGAIN => "EAGAIN",
        libc::ENOMEM => "ENOMEM",
        libc::EACCES => "EACCES",
        libc::EFAULT => "EFAULT",
        libc::ENOTDIR => "ENOTDIR",
        libc::EISDIR => "EISDIR",
        libc::EINVAL => "EINVAL",
        libc::ENFILE => "ENFILE",
        libc::EMFILE => "EMFILE",
        libc::ETXTBSY => "ETXTBSY",
        libc::ENAMETOOLONG => "ENAMETOOLONG",
        libc::ELOOP => "ELOOP",
        libc::ELIBBAD => "ELIBBAD",
        _ => return format!("E{errno}"),
    };
    name.to_owned()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::decode::{decode, tests::exec_record};

    #[test]
    fn exec_is_enriched_with_ancestry_and_stdio() {
        let mut table = ProcessTable::new(100, Duration::from_secs(60));
        let init = crate::process::procfs::read_process(std::path::Path::new("/proc/1"), 1)
            .expect("init readable");
        table.insert(init);
        let net = NetTracker::new(
            10,
            crate::net::NetSettings {
                update_interval_ns: 1,
                udp_idle_ns: 1,
                tcp_idle_ns: 1,
            },
            crate::net::NetMetrics::register(&crate::metrics::registry()),
        );
        let mut e = Enricher::new(table, net);
        let rec = exec_record(42, b"echo\0bin\0usr\0", b"tmp\0", b"/bin/echo\0x y\0z\0");
        let mut out = Vec::new();
        e.apply(
            decode(&rec).expect("decodes"),
            Instant::now(),
            &mut NoFlows,
            &mut out,
        );
        let Some(Event::Exec(x)) = out.pop() else {
            panic!("not exec")
        };
        assert_eq!(x.exe, "/usr/bin/echo");
        assert_eq!(x.argv, vec!["/bin/echo", "x y", "z"]);
        assert_eq!(x.cwd, "/tmp");
        assert_eq!(x.task.comm, "echo");
        assert_eq!(x.stdio, [FdKind::Tty, FdKind::Pipe, FdKind::None]);
        assert_eq!(x.ancestry.first().map(|a| a.pid), Some(1));
        assert_eq!(x.task.auid, None);
        assert_eq!(
            e.table.get(42).and_then(|p| p.exe.as_deref()),
            Some("/usr/bin/echo")
        );
        let json = serde_json::to_value(Event::Exec(x)).expect("json");
        assert_eq!(json["kind"], "exec");
        assert_eq!(json["ppid"], 1);
        assert_eq!(json["stdio"][0], "tty");
        assert_eq!(json["namespaces"]["net"], 4026531840u32);
        assert_eq!(json["namespaces"]["pid"], 4026531836u32);
        // No cgroup tree given: no path, rather than a wrong one.
        assert!(json.get("cgroup").is_none());
    }

    /// Process events never touch the flow counters.
    struct NoFlows;

    impl FlowMap for NoFlows {
        fn get(
            &self,
            _: &monitor_common::event::FlowKey,
        ) -> Option<monitor_common::event::FlowStats> {
            unreachable!("process events read no flows")
        }
        fn remove(&mut self, _: &monitor_common::event::FlowKey) {
            unreachable!("process events remove no flows")
        }
        fn entries(
            &self,
        ) -> Vec<(
            monitor_common::event::FlowKey,
            monitor_common::event::FlowStats,
        )> {
            unreachable!("process events list no flows")
        }
        fn owner(&self, _: u64) -> Option<monitor_common::event::SockOwner> {
            unreachable!("process events ask no owners")
        }
    }

    #[test]
    fn errno_names() {
        assert_eq!(errno_name(2), "ENOENT");
        assert_eq!(errno_name(13), "EACCES");
        assert_eq!(errno_name(4242), "E4242");
    }
}
