//! The cgroup a process runs in, by path, and the container that path
//! names when a known runtime made it.
//!
//! Kernel records carry the task's cgroup v2 id (`bpf_get_current_cgroup_id`),
//! which on cgroup v2 is the inode number of the cgroup's directory
//! (kernfs node id). Paths are resolved from ids in userspace and cached
//! by id, so an exec costs one hash lookup; a new cgroup costs one read of
//! `/proc/PID/cgroup` (checked against the id), or a walk of the cgroup
//! tree when that process is already gone.

use std::{
    fs,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

/// Cached cgroups; past this many the cache starts over (containers come
/// and go, each with new cgroup ids).
const CACHE_MAX: usize = 4096;
/// Deepest directory a tree walk descends to.
const WALK_DEPTH_MAX: usize = 32;
/// Most directories one tree walk visits.
const WALK_DIRS_MAX: usize = 65_536;
/// Least time between two tree walks: a burst of processes in cgroups
/// already removed walks the tree once, not once each.
const WALK_INTERVAL: Duration = Duration::from_secs(1);

/// A cgroup's path (as `/proc/PID/cgroup` shows it) and the container id
/// its path shows, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    pub path: Arc<str>,
    pub container_id: Option<Arc<str>>,
}

impl Placement {
    pub fn new(path: &str) -> Self {
        Self {
            path: Arc::from(path),
            container_id: container_id(path).map(Arc::from),
        }
    }
}

/// cgroup v2 paths by cgroup id, cached.
pub struct CgroupPaths {
    /// Where cgroup v2 is mounted; `None` on a cgroup v1-only system,
    /// where no path is reported.
    root: Option<PathBuf>,
    proc_root: PathBuf,
    cache: foldhash::HashMap<u64, Placement>,
    last_walk: Option<Instant>,
}

impl CgroupPaths {
    /// A resolver over the cgroup v2 tree that /proc/mounts names, filled
    /// by one walk of it.
    pub fn discover() -> Self {
        let root = fs::read_to_string("/proc/mounts")
            .ok()
            .and_then(|m| cgroup2_mount(&m));
        let mut paths = Self::new(root, PathBuf::from("/proc"));
        paths.walk();
        paths
    }

    /// A resolver over the cgroup v2 tree at `root`, with an empty cache.
    pub fn new(root: Option<PathBuf>, proc_root: PathBuf) -> Self {
        Self {
            root,
            proc_root,
            cache: foldhash::HashMap::default(),
            last_walk: None,
        }
    }

    /// The cgroup with id `id`, which process `pid` is in (or was).
    pub fn resolve(&mut self, id: u64, pid: u32) -> Option<Placement> {
        if let Some(p) = self.cache.get(&id) {
            return Some(p.clone());
        }
        let root = self.root.as_ref()?;
        // The process's own view first: one read, checked against the id
        // (the pid may have moved, or been reused).
        if let Some(path) = fs::read_to_string(self.proc_root.join(format!("{pid}/cgroup")))
            .ok()
            .and_then(|text| v2_path(&text).map(str::to_owned))
        {
            if dir_ino(&root.join(path.trim_start_matches('/'))) == Some(id) {
                return Some(self.remember(id, Placement::new(&path)));
            }
        }
        if self.last_walk.is_some_and(|t| t.elapsed() < WALK_INTERVAL) {
            return None;
        }
        self.walk();
        self.cache.get(&id).cloned()
    }

    fn remember(&mut self, id: u64, p: Placement) -> Placement {
        if self.cache.len() >= CACHE_MAX {
            self.cache.clear();
        }
        self.cache.insert(id, p.clone());
        p
    }

    /// Caches every cgroup under the root, up to the walk's bounds.
    fn walk(&mut self) {
        self.last_walk = Some(Instant::now());
        let Some(root) = self.root.clone() else {
            return;
        };
        if self.cache.len() >= CACHE_MAX {
            self.cache.clear();
        }
        let mut stack = vec![(root.clone(), 0usize)];
        let mut visited = 0;
        while let Some((dir, depth)) = stack.pop() {
            visited += 1;
            if visited > WALK_DIRS_MAX {
                tracing::warn!(
                    dirs = WALK_DIRS_MAX,
                    "cgroup tree walk stopped at its bound; some cgroup paths are not reported"
                );
                break;
            }
            let Some(id) = dir_ino(&dir) else { continue };
            let rel = dir.strip_prefix(&root).unwrap_or(Path::new(""));
            let path = format!("/{}", rel.display());
            if self.cache.len() < CACHE_MAX {
                self.cache.insert(id, Placement::new(&path));
            }
            if depth >= WALK_DEPTH_MAX {
                continue;
            }
            let Ok(entries) = fs::read_dir(&dir) else {
                continue;
            };
            for e in entries.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    stack.push((e.path(), depth + 1));
                }
            }
        }
    }
}

fn dir_ino(dir: &Path) -> Option<u64> {
    fs::metadata(dir)
        .ok()
        .filter(|m| m.is_dir())
        .map(|m| m.ino())
}

/// The cgroup v2 mount point in a /proc/mounts text.
pub fn cgroup2_mount(mounts: &str) -> Option<PathBuf> {
    mounts.lines().find_map(|l| {
        let mut f = l.split_ascii_whitespace();
        let (_, dir, fs) = (f.next()?, f.next()?, f.next()?);
        (fs == "cgroup2").then(|| PathBuf::from(unescape_mount(dir)))
    })
}

/// /proc/mounts writes space, tab, newline and backslash as octal escapes.
fn unescape_mount(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() {
            if let Some(v) = std::str::from_utf8(&b[i + 1..i + 4])
                .ok()
                .and_then(|o| u8::from_str_radix(o, 8).ok())
            {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The unified (v2) hierarchy's path in a `/proc/PID/cgroup` text: the
/// `0::` line.
pub fn v2_path(text: &str) -> Option<&str> {
    text.lines().find_map(|l| l.strip_prefix("0::"))
}

fn is_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The container a cgroup path belongs to, by the layout its runtime
/// gives it: the innermost one when containers nest.
///
/// - docker: `/docker/<id>` (cgroupfs driver), `docker-<id>.scope` (systemd driver);
/// - containerd (CRI): `cri-containerd-<id>.scope`, `...:cri-containerd:<id>`;
/// - CRI-O: `crio-<id>.scope`;
/// - podman: `libpod-<id>.scope`, `/libpod_parent/libpod-<id>`;
/// - Kubernetes with the cgroupfs driver: `/kubepods/<qos>/pod<uid>/<id>`;
/// - LXC: `/lxc/<name>` and `/lxc.payload.<name>` (LXC 4), the name being the id.
///
/// `<id>` is 64 hexadecimal digits. A runtime's own processes (the docker
/// or containerd service, podman's conmon, LXC's monitor) are in no container.
pub fn container_id(path: &str) -> Option<&str> {
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    for (i, seg) in segments.iter().enumerate().rev() {
        let parent = i.checked_sub(1).map(|p| segments[p]);
        if let Some(id) = seg
            .strip_suffix(".scope")
            .and_then(|s| {
                s.strip_prefix("docker-")
                    .or_else(|| s.strip_prefix("cri-containerd-"))
                    .or_else(|| s.strip_prefix("crio-"))
                    .or_else(|| s.strip_prefix("libpod-"))
            })
            .filter(|id| is_id(id))
        {
            return Some(id);
        }
        if let Some(id) = seg.strip_prefix("libpod-").filter(|id| is_id(id)) {
            return Some(id);
        }
        if let Some((_, id)) = seg
            .rsplit_once(":cri-containerd:")
            .filter(|(_, id)| is_id(id))
        {
            return Some(id);
        }
        if is_id(seg)
            && (parent == Some("docker") || segments[..i].iter().any(|s| s.starts_with("kubepods")))
        {
            return Some(seg);
        }
        if let Some(name) = seg.strip_prefix("lxc.payload.").filter(|n| !n.is_empty()) {
            return Some(name);
        }
    }
    // `/lxc/<name>/...`: the outermost LXC container, whatever runs inside.
    segments
        .iter()
        .position(|s| *s == "lxc")
        .and_then(|i| segments.get(i + 1).copied())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn container_ids_of_each_runtime_layout() {
        let cases = [
            (format!("/docker/{ID}"), ID),
            (format!("/system.slice/docker-{ID}.scope"), ID),
            (
                format!("/system.slice/containerd.service/kubepods-besteffort-pod1.slice:cri-containerd:{ID}"),
                ID,
            ),
            (
                format!("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod0f1e2d3c_4b5a_6978_8796_a5b4c3d2e1f0.slice/cri-containerd-{ID}.scope"),
                ID,
            ),
            (format!("/kubepods.slice/kubepods-pod1.slice/crio-{ID}.scope"), ID),
            (format!("/kubepods/burstable/pod0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0/{ID}"), ID),
            (format!("/kubepods/pod1/{ID}"), ID),
            (format!("/machine.slice/libpod-{ID}.scope"), ID),
            (format!("/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{ID}.scope/container"), ID),
            (format!("/libpod_parent/libpod-{ID}"), ID),
            ("/lxc/web1".to_owned(), "web1"),
            ("/lxc/web1/system.slice/nginx.service".to_owned(), "web1"),
            ("/lxc.payload.web1".to_owned(), "web1"),
            ("/lxc.payload.web1/system.slice/sshd.service".to_owned(), "web1"),
        ];
        for (path, id) in &cases {
            assert_eq!(container_id(path), Some(*id), "{path}");
        }
    }

    #[test]
    fn nested_containers_give_the_innermost() {
        let inner = ID.replace('0', "f");
        assert_eq!(
            container_id(&format!("/docker/{ID}/docker/{inner}")),
            Some(inner.as_str())
        );
    }

    #[test]
    fn paths_of_no_container() {
        for path in [
            "/".to_owned(),
            String::new(),
            "/init.scope".to_owned(),
            "/user.slice/user-1000.slice/session-3.scope".to_owned(),
            "/system.slice/docker.service".to_owned(),
            "/system.slice/containerd.service".to_owned(),
            "/docker".to_owned(),
            "/system.slice/docker-0123abcd.scope".to_owned(),
            format!("/system.slice/docker-{}.scope", &ID[1..]),
            format!("/system.slice/docker-{}g.scope", &ID[1..]),
            format!("/machine.slice/libpod-conmon-{ID}.scope"),
            "/lxc.monitor.web1".to_owned(),
            "/lxc".to_owned(),
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1.slice".to_owned(),
            format!("/system.slice/{ID}"),
            format!("/process_api/{}", &ID[..32]),
        ] {
            assert_eq!(container_id(&path), None, "{path}");
        }
    }

    #[test]
    fn v2_line_and_mount_point() {
        let text = "12:memory:/docker/x\n1:name=systemd:/a\n0::/system.slice/x.service\n";
        assert_eq!(v2_path(text), Some("/system.slice/x.service"));
        assert_eq!(v2_path("4:memory:/a\n"), None);
        let mounts = "cgroup /sys/fs/cgroup/memory cgroup rw 0 0\ncgroup2 /sys/fs/cgroup/uni\\040fied cgroup2 rw 0 0\n";
        assert_eq!(
            cgroup2_mount(mounts),
            Some(PathBuf::from("/sys/fs/cgroup/uni fied"))
        );
        assert_eq!(cgroup2_mount("proc /proc proc rw 0 0\n"), None);
    }

    /// Resolves against a tree of plain directories standing in for the
    /// cgroup mount: ids are their inode numbers, as on cgroup v2.
    #[test]
    fn resolves_by_id_from_proc_then_by_walking() {
        let base = std::env::temp_dir().join(format!("ew-cgroup-{}", std::process::id()));
        let root = base.join("cg");
        let leaf = root.join(format!("system.slice/docker-{ID}.scope"));
        fs::create_dir_all(&leaf).expect("tree");
        let proc = base.join("proc");
        fs::create_dir_all(proc.join("7")).expect("proc");
        let path = format!("/system.slice/docker-{ID}.scope");
        fs::write(proc.join("7/cgroup"), format!("0::{path}\n")).expect("cgroup file");
        let id = dir_ino(&leaf).expect("ino");

        let mut paths = CgroupPaths::new(Some(root.clone()), proc.clone());
        let p = paths.resolve(id, 7).expect("from /proc/7/cgroup");
        assert_eq!(&*p.path, path);
        assert_eq!(p.container_id.as_deref(), Some(ID));

        // A process that is gone: found by walking the tree.
        let other = root.join("other.slice");
        fs::create_dir_all(&other).expect("other");
        let mut paths = CgroupPaths::new(Some(root.clone()), proc);
        let p = paths
            .resolve(dir_ino(&other).expect("ino"), 99)
            .expect("walked");
        assert_eq!(&*p.path, "/other.slice");
        assert_eq!(p.container_id, None);
        // Unknown ids are not found, and do not walk again at once.
        assert_eq!(paths.resolve(u64::MAX, 99), None);
        assert_eq!(
            CgroupPaths::new(None, PathBuf::from("/proc")).resolve(1, 1),
            None
        );
        let _ = fs::remove_dir_all(&base);
    }

    /// Rules name the new fields; the typed exec record answers them.
    #[test]
    fn rules_match_on_container_and_namespaces() {
        use crate::{
            config::Source,
            detect::{rule, Engine},
            event::{Event, ExecRecord, FdKind, Namespaces, Task},
        };
        let rules = rule::parse(&Source {
            name: "t.toml",
            text: r#"
[[rule]]
id = "T-CONTAINER"
title = "shell in a container of the lab namespace"
severity = "low"
attack = ["T1059"]
kinds = ["exec"]
match = [
    { field = "container_id", exists = true },
    { field = "namespaces.net", equals = 4026532301 },
    { field = "cgroup", regex = '^/system.slice/docker-' },
]
"#,
        })
        .expect("rule compiles");
        let mut engine = Engine::new(rules);
        let place = Placement::new(&format!("/system.slice/docker-{ID}.scope"));
        let exec = |net: u32, place: Option<&Placement>| {
            Event::Exec(Box::new(ExecRecord {
                ts: String::new(),
                task: Task {
                    pid: 50,
                    tid: 50,
                    ppid: 1,
                    uid: 0,
                    euid: 0,
                    gid: 0,
                    egid: 0,
                    auid: None,
                    comm: "sh".into(),
                    cgroup_id: 9,
                    namespaces: Namespaces {
                        net,
                        ..Namespaces::default()
                    },
                    cgroup: place.map(|p| p.path.clone()),
                    container_id: place.and_then(|p| p.container_id.clone()),
                },
                exe: "/bin/sh".into(),
                exe_deleted: false,
                exe_truncated: false,
                argv: vec!["sh".into()],
                argv_truncated: false,
                cwd: "/".into(),
                cwd_truncated: false,
                stdio: [FdKind::None; 3],
                ancestry: Vec::new(),
                loginuid_set_by: None,
            }))
        };
        assert!(engine
            .observe_event(&exec(4026531840, Some(&place)))
            .is_empty());
        assert!(engine.observe_event(&exec(4026532301, None)).is_empty());
        let alerts = engine.observe_event(&exec(4026532301, Some(&place)));
        assert_eq!(alerts.len(), 1);
        assert_eq!(alerts[0].rule, "T-CONTAINER");
    }
}
