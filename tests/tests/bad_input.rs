//! Hostile and odd process input: non-UTF-8 and empty argv, huge argument
//! lists, PATH_MAX-long and very deep paths. Each is captured without a
//! crash or stall, cut where the documented bounds say, and flagged.

use std::{
    ffi::{CString, OsStr},
    os::unix::ffi::OsStrExt as _,
    path::{Path, PathBuf},
    process::Command,
};

use serde_json::Value;
use tests::{is_root, scratch_dir, EventExt as _, Monitor};

const QUIET: &str = "[output]\nseed_events = false\n";
/// monitor_common::limits::ARGV_MAX
const ARGV_MAX: usize = 16 * 1024;

/// Inverse of the monitor's escaping, to check it is reversible.
fn unescape(text: &str) -> Vec<u8> {
    let b = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && b.get(i + 1) == Some(&b'\\') {
            out.push(b'\\');
            i += 2;
        } else if b[i] == b'\\' && b.get(i + 1) == Some(&b'x') && i + 3 < b.len() {
            let v = u8::from_str_radix(&text[i + 2..i + 4], 16).expect("hex escape");
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

#[test]
fn non_utf8_argv_is_escaped_reversibly() {
    if !is_root("non_utf8_argv_is_escaped_reversibly") {
        return;
    }
    let m = Monitor::start_with(QUIET);
    let raw: &[u8] = b"caf\xe9 \xff\\x41 ok";
    let mut c = Command::new("/bin/true")
        .arg(OsStr::from_bytes(raw))
        .spawn()
        .expect("spawn");
    let pid = u64::from(c.id());
    c.wait().expect("wait");
    let ev = m.expect_event("exec with non-UTF-8 arg", |v| {
        v.kind() == "exec" && v.pid() == pid
    });
    let arg = ev.argv()[1].clone();
    assert_eq!(arg, "caf\\xe9 \\xff\\\\x41 ok");
    assert_eq!(unescape(&arg), raw);
}

#[test]
fn empty_argv_is_captured() {
    if !is_root("empty_argv_is_captured") {
        return;
    }
    let m = Monitor::start_with(QUIET);
    let path = CString::new("/bin/true").expect("cstring");
    let argv: [*const libc::c_char; 1] = [std::ptr::null()];
    let envp: [*const libc::c_char; 1] = [std::ptr::null()];
    // SAFETY: the child only calls execve and _exit, both async-signal-safe.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        unsafe {
            libc::execve(path.as_ptr(), argv.as_ptr(), envp.as_ptr());
            libc::_exit(127);
        }
    }
    let mut status = 0;
    // SAFETY: waiting for our own child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    let ev = m.expect_event("exec with empty argv", |v| {
        v.kind() == "exec" && v.pid() == pid as u64
    });
    // Linux 5.18+ turns an empty argv into a single empty string.
    assert!(
        ev.argv().len() <= 1 && ev.argv().iter().all(String::is_empty),
        "{ev}"
    );
    assert_eq!(
        ev["exe"],
        std::fs::canonicalize("/bin/true")
            .expect("true")
            .to_str()
            .expect("utf8")
    );
}

#[test]
fn hundred_thousand_arguments_are_cut_and_flagged() {
    if !is_root("hundred_thousand_arguments_are_cut_and_flagged") {
        return;
    }
    let m = Monitor::start_with(QUIET);
    let args: Vec<String> = (0..100_000).map(|i| format!("a{i}")).collect();
    let mut c = Command::new("/bin/true")
        .args(&args)
        .spawn()
        .expect("spawn");
    let pid = u64::from(c.id());
    c.wait().expect("wait");
    let ev = m.expect_event("exec with 100k args", |v| {
        v.kind() == "exec" && v.pid() == pid
    });
    assert_eq!(ev["argv_truncated"], true);
    let argv = ev.argv();
    let bytes: usize = argv.iter().map(|a| a.len() + 1).sum();
    assert!(bytes <= ARGV_MAX + 1, "{bytes} bytes of argv");
    assert!(argv.len() > 1000, "only {} arguments kept", argv.len());
    // Every complete argument is exact; only the last may be cut.
    for (i, a) in argv[1..argv.len() - 1].iter().enumerate() {
        assert_eq!(a, &args[i]);
    }
    // The monitor is still working afterwards.
    let mut c = Command::new("/bin/true")
        .arg("after")
        .spawn()
        .expect("spawn");
    let pid = u64::from(c.id());
    c.wait().expect("wait");
    m.expect_event("exec after the big one", |v| {
        v.kind() == "exec" && v.pid() == pid
    });
}

/// Makes `depth` nested directories named `name` under `base` one `mkdir`
/// at a time (relative to the previous one, as paths past PATH_MAX need).
fn nest(base: &Path, name: &str, depth: usize) -> PathBuf {
    let mut path = base.to_path_buf();
    for _ in 0..depth {
        path.push(name);
        std::fs::create_dir(&path).expect("mkdir");
    }
    path
}

fn run_in(dir: &Path, program: &str) -> u64 {
    let mut c = Command::new(program)
        .current_dir(dir)
        .spawn()
        .expect("spawn in deep dir");
    let pid = u64::from(c.id());
    c.wait().expect("wait");
    pid
}

#[test]
fn path_max_paths_are_exact() {
    if !is_root("path_max_paths_are_exact") {
        return;
    }
    let m = Monitor::start_with(QUIET);
    let base = scratch_dir("pathmax");
    // Components of 200 bytes until the directory is about 3,900 bytes
    // long: the longest path exec and chdir still accept whole.
    let depth = (3900 - base.as_os_str().len()) / 201;
    let dir = nest(&base, &"p".repeat(200), depth);
    std::fs::copy("/bin/true", dir.join("t")).expect("copy true");
    let pid = run_in(&dir, "./t");
    let ev = m.expect_event("exec in a PATH_MAX-long directory", |v| {
        v.kind() == "exec" && v.pid() == pid
    });
    let expected = dir.join("t");
    assert!(expected.as_os_str().len() > 3800);
    assert_eq!(ev["exe"], expected.to_str().expect("utf8"));
    assert_eq!(ev["cwd"], dir.to_str().expect("utf8"));
    assert_eq!(ev["exe_truncated"], false);
    assert_eq!(ev["cwd_truncated"], false);
    let _ = std::fs::remove_dir_all(&base);
}

#[test]
fn too_deep_paths_are_cut_and_flagged() {
    if !is_root("too_deep_paths_are_cut_and_flagged") {
        return;
    }
    let m = Monitor::start_with(QUIET);
    let base = scratch_dir("deep");
    // 300 one-letter components: deeper than the 128 the kernel walks.
    let dir = nest(&base, "d", 300);
    std::fs::copy("/bin/true", dir.join("t")).expect("copy true");
    let pid = run_in(&dir, "./t");
    let ev = m.expect_event("exec in a very deep directory", |v| {
        v.kind() == "exec" && v.pid() == pid
    });
    assert_eq!(ev["exe_truncated"], true);
    assert_eq!(ev["cwd_truncated"], true);
    let exe = ev["exe"].as_str().expect("exe");
    assert!(exe.ends_with("/d/d/t"), "{exe}");
    assert_ne!(ev["exe"], Value::Null);
    let _ = std::fs::remove_dir_all(&base);
}
