//! Services in other namespaces and containers: what listened before the
//! monitor started, in any network namespace, is known as a network-facing
//! service, and process records say which namespaces and cgroup (and
//! container) a process runs in.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use serde_json::Value;
use tests::{is_root, unique, EventExt as _, Gateway, Killed, Monitor, NetnsPair, VULNERABLE_APP};

/// The container id the test's cgroup carries, in docker's systemd layout.
const CONTAINER_ID: &str = "3f4c8e2a9b7d6c5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e";

/// Where cgroup v2 is mounted, from /proc/mounts.
fn cgroup2_mount() -> Option<PathBuf> {
    let mounts = std::fs::read_to_string("/proc/mounts").ok()?;
    mounts.lines().find_map(|l| {
        let mut f = l.split_whitespace();
        let (_, dir, fs) = (f.next()?, f.next()?, f.next()?);
        (fs == "cgroup2").then(|| PathBuf::from(dir))
    })
}

/// A cgroup made by the test in a container runtime's layout, removed
/// when dropped (after the processes in it are gone).
struct TestCgroup {
    outer: PathBuf,
    inner: PathBuf,
    /// The path as /proc/PID/cgroup shows it.
    path: String,
}

impl TestCgroup {
    fn new(root: &Path) -> Self {
        let name = format!("edgewatch-test-{}-{}", std::process::id(), unique());
        let outer = root.join(&name);
        let leaf = format!("docker-{CONTAINER_ID}.scope");
        let inner = outer.join(&leaf);
        std::fs::create_dir_all(&inner).expect("make the test cgroup");
        Self {
            outer,
            inner,
            path: format!("/{name}/{leaf}"),
        }
    }

    fn adopt(&self, pid: u32) {
        std::fs::write(self.inner.join("cgroup.procs"), pid.to_string())
            .expect("move the app into the test cgroup");
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.inner);
        let _ = std::fs::remove_dir(&self.outer);
    }
}

/// A vulnerable web app listening in a network namespace before the
/// monitor starts is a known listener: command injection through it
/// raises EW-PROC-001. Its seeded listener and the injected shell's exec
/// name that namespace; the shell's record carries its namespaces, cgroup
/// path and container id.
#[test]
fn a_service_listening_in_another_namespace_before_start_is_a_listener() {
    if !is_root("a_service_listening_in_another_namespace_before_start_is_a_listener") {
        return;
    }
    let Some(cgroup_root) = cgroup2_mount() else {
        eprintln!("skipped: cgroup v2 is not mounted");
        return;
    };
    let pair = NetnsPair::new();
    let ns = &pair.a;
    let inode = NetnsPair::inode(ns);
    let port = 8080;
    let cgroup = TestCgroup::new(&cgroup_root);
    // `ip netns exec` runs python in its place: the child's pid is the app's.
    let app = Killed(
        NetnsPair::command(ns, "/usr/bin/python3")
            .args(["-c", VULNERABLE_APP, &port.to_string()])
            .spawn()
            .expect("web app"),
    );
    cgroup.adopt(app.0.id());
    Gateway::wait_listen(ns, port);

    let m = Monitor::start();
    let app_pid = app.pid();
    let listener = m.expect_event("the app's seeded listener", |v| {
        v.kind() == "connection"
            && v["state"] == "listen"
            && v["process"]["pid"] == app_pid
            && v["local"]["port"] == port
    });
    assert_eq!(listener["netns"], inode, "{listener}");
    assert_eq!(listener["seeded"], true);
    let seeded = m.expect_event("the app's seeded process record", |v| {
        v.kind() == "process" && v.pid() == app_pid
    });
    assert_eq!(seeded["namespaces"]["net"], inode, "{seeded}");
    assert_eq!(seeded["cgroup"], cgroup.path.as_str(), "{seeded}");
    assert_eq!(seeded["container_id"], CONTAINER_ID, "{seeded}");

    let out = NetnsPair::command(ns, "curl")
        .args(["-s", &format!("http://127.0.0.1:{port}/?host=x%3Bid")])
        .output()
        .expect("curl");
    assert!(out.status.success(), "{out:?}");
    let below_app = |v: &Value| {
        v["process"]["ancestry"]
            .as_array()
            .is_some_and(|a| a.iter().any(|x| x["pid"] == app_pid))
    };
    let alert = m.expect_event("EW-PROC-001 through the namespaced app", |v| {
        v.kind() == "alert" && v["rule"] == "EW-PROC-001" && below_app(v)
    });
    assert_eq!(alert["process"]["ancestry"][0]["pid"], app_pid, "{alert}");

    let shell = m.expect_event("the injected shell's exec", |v| {
        v.kind() == "exec"
            && v["ppid"] == app_pid
            && v.argv().first().is_some_and(|a| a == "/bin/sh")
    });
    let namespaces = &shell["namespaces"];
    assert_eq!(namespaces["net"], inode, "{shell}");
    let own = |kind: &str| {
        use std::os::unix::fs::MetadataExt as _;
        std::fs::metadata(format!("/proc/self/ns/{kind}"))
            .expect("own namespace")
            .ino()
    };
    // `ip netns exec` gives the app a mount namespace of its own; the pid
    // and uts namespaces are the host's.
    assert!(
        namespaces["mnt"]
            .as_u64()
            .is_some_and(|n| n != 0 && n != own("mnt")),
        "{shell}"
    );
    assert_eq!(namespaces["pid"], own("pid"), "{shell}");
    assert_eq!(namespaces["uts"], own("uts"), "{shell}");
    assert_eq!(shell["cgroup"], cgroup.path.as_str(), "{shell}");
    assert_eq!(shell["container_id"], CONTAINER_ID, "{shell}");
    drop(app);
    drop(m);
}

/// A plain host process carries the host's namespaces and its cgroup path,
/// and no container id.
#[test]
fn host_processes_carry_namespaces_and_cgroup_without_container() {
    if !is_root("host_processes_carry_namespaces_and_cgroup_without_container") {
        return;
    }
    let m = Monitor::start_with("[output]\nseed_events = false\n[network]\nseed_events = false\n");
    let marker = format!("ew-ns-{}", unique());
    let status = Command::new("/bin/sh")
        .args(["-c", "true", &marker])
        .status()
        .expect("sh");
    assert!(status.success());
    let exec = m.expect_event("the shell's exec", |v| {
        v.kind() == "exec" && v.argv().iter().any(|a| a == &marker)
    });
    use std::os::unix::fs::MetadataExt as _;
    let net = std::fs::metadata("/proc/self/ns/net").expect("netns").ino();
    assert_eq!(exec["namespaces"]["net"], net, "{exec}");
    let own_cgroup = std::fs::read_to_string("/proc/self/cgroup").expect("cgroup");
    let v2 = own_cgroup
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .expect("a cgroup v2 line");
    if cgroup2_mount().is_some() {
        assert_eq!(exec["cgroup"], v2, "{exec}");
    }
    // Unless the tests themselves run in a container.
    let in_container = v2
        .split('/')
        .any(|s| s.len() >= 64 || s.starts_with("lxc") || s.starts_with("kubepods"));
    if !in_container {
        assert!(exec.get("container_id").is_none(), "{exec}");
    }
}
