//! Seeding the process table from /proc, so processes started before the
//! monitor have the same fields as those it saw being created.

use std::{
    fs,
    os::unix::{ffi::OsStrExt as _, fs::MetadataExt as _},
    path::Path,
    sync::Arc,
};

use super::{
    cgroup::{self, Placement},
    table::{bounded_argv, Process},
};
use crate::{
    escape::escape,
    event::{FdKind, Namespaces},
};

/// Suffix the kernel appends to the link of a deleted executable.
const DELETED_SUFFIX: &[u8] = b" (deleted)";

/// Reads every process under `proc_root`. Processes that vanish while being
/// read are skipped.
pub fn scan(proc_root: &Path) -> Vec<Process> {
    let Ok(dir) = fs::read_dir(proc_root) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for entry in dir.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        if let Some(p) = read_process(&entry.path(), pid) {
            out.push(p);
        }
    }
    out.sort_by_key(|p| p.pid);
    out
}

/// Reads one process directory such as `/proc/1234`.
pub fn read_process(dir: &Path, pid: u32) -> Option<Process> {
    let stat = fs::read(dir.join("stat")).ok()?;
    let (comm, ppid) = parse_stat(&stat)?;
    let status = fs::read_to_string(dir.join("status")).ok()?;
    let (uid, euid) = status_ids(&status, "Uid:")?;
    let (gid, egid) = status_ids(&status, "Gid:")?;
    let (exe, exe_deleted) = match fs::read_link(dir.join("exe")) {
        Ok(link) => {
            let raw = link.as_os_str().as_bytes();
            match raw.strip_suffix(DELETED_SUFFIX) {
                Some(stripped) => (Some(escape(stripped)), true),
                None => (Some(escape(raw)), false),
            }
        }
        Err(_) => (None, false),
    };
    let cmdline = fs::read(dir.join("cmdline")).unwrap_or_default();
    let argv: Vec<String> = crate::decode::split_args(&cmdline)
        .into_iter()
        .map(escape)
        .collect();
    let cwd = fs::read_link(dir.join("cwd"))
        .ok()
        .map(|p| Arc::from(escape(p.as_os_str().as_bytes())));
    let stdio = [0, 1, 2].map(|fd| fd_kind(&dir.join("fd").join(fd.to_string())));
    let pipes = super::Pipes {
        stdin: pipe_inode(&dir.join("fd/0")),
        stdout: pipe_inode(&dir.join("fd/1")),
    };
    // 4294967295 means unset; the file is missing without CONFIG_AUDIT.
    let auid = fs::read_to_string(dir.join("loginuid"))
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
        .filter(|&a| a != u32::MAX);
    Some(Process {
        pid,
        ppid,
        birth_ppid: ppid,
        start_boot_ns: None,
        uid,
        euid,
        gid,
        egid,
        auid,
        comm: escape(&comm),
        exe: exe.map(Arc::from),
        exe_deleted,
        argv: bounded_argv(&argv),
        cwd,
        stdio,
        pipes,
        seeded: true,
        namespaces: namespaces(dir),
        cgroup: fs::read_to_string(dir.join("cgroup"))
            .ok()
            .and_then(|text| cgroup::v2_path(&text).map(Placement::new)),
    })
}

/// The namespaces of a /proc process directory, by inode number (`stat`
/// follows the `ns/*` links to the namespace's nsfs inode); 0 for one that
/// cannot be read.
pub fn namespaces(dir: &Path) -> Namespaces {
    let ino = |kind: &str| fs::metadata(dir.join("ns").join(kind)).map_or(0, |m| m.ino() as u32);
    Namespaces {
        net: ino("net"),
        mnt: ino("mnt"),
        pid: ino("pid"),
        uts: ino("uts"),
    }
}

/// Inode number of the pipe or fifo behind a /proc fd link, 0 otherwise.
pub fn pipe_inode(link: &Path) -> u64 {
    match fs::metadata(link) {
        Ok(m) if m.mode() & libc::S_IFMT == libc::S_IFIFO => m.ino(),
        _ => 0,
    }
}

/// Kind of an open descriptor, from `stat` through its /proc link.
pub fn fd_kind(link: &Path) -> FdKind {
    match fs::metadata(link) {
        Ok(m) => FdKind::classify(m.mode(), libc::major(m.rdev())),
        Err(_) => FdKind::None,
    }
}

/// Parses `comm` and `ppid` from `/proc/PID/stat`. `comm` may contain
/// spaces and parentheses, so it spans from the first `(` to the last `)`.
pub fn parse_stat(stat: &[u8]) -> Option<(Vec<u8>, u32)> {
    let open = stat.iter().position(|&b| b == b'(')?;
    let close = stat.iter().rposition(|&b| b == b')')?;
    if close < open {
        return None;
    }
    let comm = stat[open + 1..close].to_vec();
    let rest = std::str::from_utf8(stat.get(close + 1..)?).ok()?;
    let mut fields = rest.split_ascii_whitespace();
    let _state = fields.next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some((comm, ppid))
}

/// Real and effective ids from a `Uid:` or `Gid:` line of `/proc/PID/status`.
fn status_ids(status: &str, key: &str) -> Option<(u32, u32)> {
    let line = status.lines().find(|l| l.starts_with(key))?;
    let mut ids = line[key.len()..].split_ascii_whitespace();
    let real = ids.next()?.parse().ok()?;
    let effective = ids.next()?.parse().ok()?;
    Some((real, effective))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_awkward_comm() {
        let (comm, ppid) = parse_stat(b"42 (a) b (c)) S 7 42 42 0 -1").expect("parses");
        assert_eq!(comm, b"a) b (c)");
        assert_eq!(ppid, 7);
        assert!(parse_stat(b"garbage").is_none());
        assert!(parse_stat(b"1 )x( S 1").is_none());
    }

    #[test]
    fn status_ids_parse() {
        let s = "Name:\tx\nUid:\t1000\t0\t0\t0\nGid:\t100\t101\t101\t101\n";
        assert_eq!(status_ids(s, "Uid:"), Some((1000, 0)));
        assert_eq!(status_ids(s, "Gid:"), Some((100, 101)));
    }

    #[test]
    fn reads_own_process() {
        let me = std::process::id();
        let p = read_process(Path::new(&format!("/proc/{me}")), me).expect("own /proc entry");
        assert_eq!(p.pid, me);
        assert!(p.seeded);
        let exe = std::env::current_exe().expect("current exe");
        assert_eq!(p.exe.as_deref(), exe.to_str());
        assert_eq!(p.uid, unsafe { libc::getuid() });
        let own_net = fs::metadata("/proc/self/ns/net").expect("netns").ino() as u32;
        assert_eq!(p.namespaces.net, own_net);
        assert!(p.namespaces.mnt != 0 && p.namespaces.pid != 0 && p.namespaces.uts != 0);
        let own = fs::read_to_string("/proc/self/cgroup").expect("cgroup");
        assert_eq!(
            p.cgroup.map(|c| c.path.to_string()).as_deref(),
            cgroup::v2_path(&own)
        );
    }

    #[test]
    fn scan_finds_init_and_self() {
        let all = scan(Path::new("/proc"));
        assert!(all.iter().any(|p| p.pid == 1));
        assert!(all.iter().any(|p| p.pid == std::process::id()));
    }
}
