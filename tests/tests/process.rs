//! Process capture end to end: the real monitor, real execs, exact events.

use std::{
    os::unix::fs::PermissionsExt as _,
    process::{Command, Stdio},
    time::Duration,
};

use serde_json::{json, Value};
use tests::{expected_ancestry_of_child, is_root, scratch_dir, unique, EventExt as _, Monitor};

const QUIET: &str = "[output]\nseed_events = false\n";

fn me() -> u64 {
    u64::from(std::process::id())
}

#[test]
fn exec_event_is_exact() {
    if !is_root("exec_event_is_exact") {
        return;
    }
    let m = Monitor::start_with(QUIET);
    let dir = scratch_dir("exec");
    let stderr_file = std::fs::File::create(dir.join("stderr")).expect("stderr file");
    let child = Command::new("/bin/sh")
        .args(["-c", "exec /usr/bin/env -i A=1 /bin/echo \"x y\" z"])
        .current_dir(&dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr_file)
        .spawn()
        .expect("spawn sh");
    let pid = u64::from(child.id());
    let out = child.wait_with_output().expect("wait");
    assert_eq!(out.stdout, b"x y z\n");

    let echo = m.expect_event("exec of echo", |v| {
        v.kind() == "exec" && v.pid() == pid && v["comm"] == "echo"
    });
    assert_eq!(echo.argv(), ["/bin/echo", "x y", "z"]);
    assert_eq!(echo["ppid"], me());
    assert_eq!(echo["uid"], 0);
    assert_eq!(echo["euid"], 0);
    assert_eq!(echo["gid"], 0);
    let exe = std::fs::canonicalize("/bin/echo").expect("echo exists");
    assert_eq!(echo["exe"], exe.to_str().expect("utf8 path"));
    assert_eq!(echo["exe_deleted"], false);
    assert_eq!(echo["cwd"], dir.to_str().expect("utf8 path"));
    assert_eq!(echo["argv_truncated"], false);
    assert_eq!(echo["stdio"], json!(["chardev", "pipe", "file"]));
    assert_eq!(echo["ancestry"], Value::Array(expected_ancestry_of_child()));
    assert!(echo["ts"].as_str().is_some_and(|t| t.ends_with('Z')));

    // The same pid went through sh and env first, each its own exec event.
    let env = m.expect_event("exec of env", |v| {
        v.kind() == "exec" && v.pid() == pid && v["comm"] == "env"
    });
    assert_eq!(
        env.argv(),
        ["/usr/bin/env", "-i", "A=1", "/bin/echo", "x y", "z"]
    );
    m.expect_event("exec of sh", |v| {
        v.kind() == "exec" && v.pid() == pid && v["argv"][0] == "/bin/sh"
    });
    let _ = std::fs::remove_dir_all(&dir);
}

/// A process whose parent exits before its exec is adopted by the kernel
/// (init or a subreaper), but its ancestry still goes through the process
/// that forked it, marked `reparented`, and on to that one's ancestors.
#[test]
fn a_reparented_process_keeps_its_forking_parent_in_the_ancestry() {
    if !is_root("a_reparented_process_keeps_its_forking_parent_in_the_ancestry") {
        return;
    }
    let m = Monitor::start_with(QUIET);
    let tag = format!("reparented-{}-{}", std::process::id(), unique());
    let out = Command::new("/bin/sh")
        .args([
            "-c",
            &format!("(sleep 0.5; exec /bin/echo {tag}) >/dev/null 2>&1 & echo $$"),
        ])
        .stdin(Stdio::null())
        .output()
        .expect("run sh");
    let sh: u64 = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("sh prints its pid");
    let echo = m.expect_event("exec of the detached echo", |v| {
        v.kind() == "exec" && v["comm"] == "echo" && v["argv"][1] == tag.as_str()
    });
    assert_ne!(
        echo["ppid"], sh,
        "sh exited first, so the kernel re-parented"
    );
    let dash = std::fs::canonicalize("/bin/sh").expect("sh exists");
    let mut expected = vec![json!({
        "pid": sh,
        "exe": dash.to_str().expect("utf8 path"),
        "reparented": true,
    })];
    expected.extend(expected_ancestry_of_child());
    assert_eq!(echo["ancestry"], Value::Array(expected));
}

#[test]
fn stdio_socket_is_recognised() {
    if !is_root("stdio_socket_is_recognised") {
        return;
    }
    let m = Monitor::start_with(QUIET);
    let (ours, theirs) = std::os::unix::net::UnixStream::pair().expect("socketpair");
    let theirs2 = theirs.try_clone().expect("clone");
    let mut child = Command::new("/bin/true")
        .stdin(std::os::fd::OwnedFd::from(theirs))
        .stdout(std::os::fd::OwnedFd::from(theirs2))
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn true");
    let pid = u64::from(child.id());
    child.wait().expect("wait");
    drop(ours);
    let ev = m.expect_event("exec of true", |v| v.kind() == "exec" && v.pid() == pid);
    assert_eq!(ev["stdio"], json!(["socket", "socket", "chardev"]));
}

#[test]
fn failed_exec_is_its_own_kind() {
    if !is_root("failed_exec_is_its_own_kind") {
        return;
    }
    let m = Monitor::start_with(QUIET);
    let missing = format!("/nonexistent/edgewatch-{}", unique());
    let err = Command::new(&missing)
        .arg("arg1")
        .spawn()
        .expect_err("must not exist");
    assert_eq!(err.raw_os_error(), Some(libc::ENOENT));
    let ev = m.expect_event("exec_failed ENOENT", |v| {
        v.kind() == "exec_failed" && v["filename"] == missing.as_str()
    });
    assert_eq!(ev["errno"], libc::ENOENT);
    assert_eq!(ev["error"], "ENOENT");
    assert_eq!(ev["syscall"], "execve");
    assert_eq!(ev.argv(), [missing.as_str(), "arg1"]);
    assert_eq!(ev["ppid"], me());
    assert_eq!(ev["ancestry"][0]["pid"], me());

    let dir = scratch_dir("noexec");
    let script = dir.join("not-executable");
    std::fs::write(&script, "#!/bin/sh\n").expect("write");
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let err = Command::new(&script).spawn().expect_err("not executable");
    assert_eq!(err.raw_os_error(), Some(libc::EACCES));
    let path = script.to_str().expect("utf8");
    let ev = m.expect_event("exec_failed EACCES", |v| {
        v.kind() == "exec_failed" && v["filename"] == path
    });
    assert_eq!(ev["error"], "EACCES");
    assert!(
        m.events(|v| v.kind() == "exec" && v["exe"] == path)
            .is_empty(),
        "a failed exec must not also appear as an exec"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn fork_and_exit_carry_status_and_signal() {
    if !is_root("fork_and_exit_carry_status_and_signal") {
        return;
    }
    let m = Monitor::start_with(QUIET);
    let mut child = Command::new("/bin/sh")
        .args(["-c", "exit 7"])
        .spawn()
        .expect("spawn");
    let pid = u64::from(child.id());
    assert_eq!(child.wait().expect("wait").code(), Some(7));
    let fork = m.expect_event("fork of sh", |v| v.kind() == "fork" && v.pid() == pid);
    assert_eq!(fork["ppid"], me());
    let exit = m.expect_event("exit of sh", |v| v.kind() == "exit" && v.pid() == pid);
    assert_eq!(exit["exit_code"], 7);
    assert_eq!(exit["signal"], Value::Null);
    assert_eq!(
        exit["exe"],
        std::fs::canonicalize("/bin/sh")
            .expect("sh")
            .to_str()
            .expect("utf8")
    );

    let mut sleeper = Command::new("/bin/sleep")
        .arg("30")
        .spawn()
        .expect("spawn sleep");
    let pid = u64::from(sleeper.id());
    m.expect_event("exec of sleep", |v| v.kind() == "exec" && v.pid() == pid);
    sleeper.kill().expect("kill");
    sleeper.wait().expect("wait");
    let exit = m.expect_event("exit of sleep", |v| v.kind() == "exit" && v.pid() == pid);
    assert_eq!(exit["signal"], libc::SIGKILL);
    assert_eq!(exit["exit_code"], Value::Null);
    assert_eq!(exit["core_dumped"], false);
}

#[test]
fn threads_are_not_reported_as_processes() {
    if !is_root("threads_are_not_reported_as_processes") {
        return;
    }
    let m = Monitor::start_with(QUIET);
    // python3 starts a thread, then exits: one fork (the spawn), no fork
    // for the thread, and one exit for the whole process.
    let mut child = Command::new("/usr/bin/python3")
        .args([
            "-c",
            "import threading; t = threading.Thread(target=lambda: None); t.start(); t.join()",
        ])
        .spawn()
        .expect("spawn python3");
    let pid = u64::from(child.id());
    child.wait().expect("wait");
    m.expect_event("exit of python3", |v| v.kind() == "exit" && v.pid() == pid);
    std::thread::sleep(Duration::from_millis(300));
    let forks_by_child = m.events(|v| v.kind() == "fork" && v["ppid"] == pid);
    assert!(
        forks_by_child.is_empty(),
        "thread reported as fork: {forks_by_child:?}"
    );
    assert_eq!(m.events(|v| v.kind() == "exit" && v.pid() == pid).len(), 1);
}

#[test]
fn seeded_processes_have_the_same_fields() {
    if !is_root("seeded_processes_have_the_same_fields") {
        return;
    }
    let m = Monitor::start();
    let ev = m.expect_event("seeded self", |v| v.kind() == "process" && v.pid() == me());
    assert_eq!(ev["seeded"], true);
    let exe = std::env::current_exe().expect("exe");
    assert_eq!(ev["exe"], exe.to_str().expect("utf8"));
    let ancestry = expected_ancestry_of_child();
    assert_eq!(ev["ancestry"], Value::Array(ancestry[1..].to_vec()));
    assert_eq!(
        ev["cwd"],
        std::env::current_dir()
            .expect("cwd")
            .to_str()
            .expect("utf8")
    );
    m.expect_event("seeded init", |v| v.kind() == "process" && v.pid() == 1);
}

#[test]
fn no_events_lost_under_light_load() {
    if !is_root("no_events_lost_under_light_load") {
        return;
    }
    let m = Monitor::start_with(QUIET);
    let mut pids = Vec::new();
    for _ in 0..200 {
        let mut c = Command::new("/bin/true").spawn().expect("spawn true");
        pids.push(u64::from(c.id()));
        c.wait().expect("wait");
    }
    for pid in &pids {
        m.expect_event("exec of true", |v| v.kind() == "exec" && v.pid() == *pid);
    }
    // The kernel counters are polled once a second.
    std::thread::sleep(Duration::from_millis(1500));
    let text = m.metrics();
    for kind in ["exec", "exec_failed", "fork", "exit"] {
        let series = format!("edgewatch_kernel_events_lost_total{{kind=\"{kind}\"}}");
        assert_eq!(m.metric(&series), Some(0.0), "{series} in\n{text}");
    }
    assert!(
        m.metric("edgewatch_events_total{kind=\"exec\"}")
            .unwrap_or(0.0)
            >= 200.0
    );
    for reason in ["short", "size_mismatch", "unknown_kind", "bad_length"] {
        let series = format!("edgewatch_decode_errors_total{{reason=\"{reason}\"}}");
        assert_eq!(m.metric(&series), Some(0.0), "{series}");
    }
    assert_eq!(
        m.metric("edgewatch_probe_attached{probe=\"process_sched_exec\"}"),
        Some(1.0)
    );
    assert!(m.metric("edgewatch_process_table_entries").unwrap_or(0.0) > 1.0);
    let status = m.stop();
    assert!(status.success(), "monitor exit status {status}");
}

#[test]
fn a_missing_optional_probe_is_said_and_the_rest_runs() {
    if !is_root("a_missing_optional_probe_is_said_and_the_rest_runs") {
        return;
    }
    let m = Monitor::start_with(
        "[output]\nseed_events = false\n[kernel]\ndisabled_probes = [\"process_sys_exit_execve\"]\n",
    );
    let warning = m
        .stderr()
        .into_iter()
        .find(|l| l.contains("probe not attached"))
        .expect("a warning names the probe");
    assert!(warning.contains("process_sys_exit_execve"), "{warning}");
    assert!(warning.contains("failed execve attempts"), "{warning}");
    assert_eq!(
        m.metric("edgewatch_probe_attached{probe=\"process_sys_exit_execve\"}"),
        Some(0.0)
    );
    assert_eq!(
        m.metric("edgewatch_probe_attached{probe=\"process_sched_exec\"}"),
        Some(1.0)
    );
    let missing = format!("/nonexistent/edgewatch-{}", unique());
    let _ = Command::new(&missing).spawn().expect_err("must not exist");
    let mut c = Command::new("/bin/true").spawn().expect("spawn");
    let pid = u64::from(c.id());
    c.wait().expect("wait");
    m.expect_event("exec still reported", |v| {
        v.kind() == "exec" && v.pid() == pid
    });
    assert!(m
        .events(|v| v.kind() == "exec_failed" && v["filename"] == missing.as_str())
        .is_empty());
}
