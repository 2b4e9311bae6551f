//! Start-up failures: each is one clear line on stderr and a non-zero exit,
//! never a panic or a backtrace.

use std::process::{Command, Output};

use tests::{is_root, monitor_bin, TempPath};

fn assert_one_clear_line(out: &Output, expected_code: i32, needle: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(expected_code), "stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "panic: {stderr}");
    assert!(!stderr.contains("backtrace"), "backtrace: {stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "expected one line, got: {stderr}");
    assert!(
        lines[0].contains(needle),
        "{needle:?} not in {:?}",
        lines[0]
    );
}

#[test]
fn malformed_config_names_file_line_and_column() {
    let config = TempPath::write("bad.toml", "[output]\nstdout = tru\n");
    let out = Command::new(monitor_bin())
        .args(["run", "--config"])
        .arg(config.path())
        .output()
        .expect("run monitor");
    let where_ = format!("{}:2:10: ", config.path().display());
    assert_one_clear_line(&out, 2, &where_);
}

#[test]
fn unknown_config_key_is_rejected() {
    let config = TempPath::write(
        "unknown.toml",
        "[metrics]\nlisten = \"127.0.0.1:1\"\nport = 3\n",
    );
    let out = Command::new(monitor_bin())
        .args(["config", "check"])
        .arg(config.path())
        .output()
        .expect("run monitor");
    assert_one_clear_line(
        &out,
        2,
        &format!("{}:3:1: unknown field `port`", config.path().display()),
    );
}

#[test]
fn missing_config_file_is_reported() {
    let out = Command::new(monitor_bin())
        .args(["run", "--config", "/nonexistent/edgewatch.toml"])
        .output()
        .expect("run monitor");
    assert_one_clear_line(&out, 2, "/nonexistent/edgewatch.toml: cannot read");
}

#[test]
fn default_config_round_trips_through_check() {
    let out = Command::new(monitor_bin())
        .args(["config", "default"])
        .output()
        .expect("run");
    assert!(out.status.success());
    let config = TempPath::write(
        "default.toml",
        &String::from_utf8(out.stdout).expect("utf8"),
    );
    let out = Command::new(monitor_bin())
        .args(["config", "check"])
        .arg(config.path())
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn without_privileges_it_says_so() {
    if !is_root("without_privileges_it_says_so") {
        return;
    }
    // Drop to nobody with no capabilities at all.
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
            "--bounding-set=-all",
        ])
        .arg(monitor_bin())
        .arg("run")
        .output()
        .expect("run setpriv");
    assert_one_clear_line(&out, 1, "insufficient privileges");
}

/// Runs the monitor in a private mount namespace prepared by `setup`
/// (shell commands run first, as root, in that namespace only).
fn run_in_mount_ns(setup: &str) -> Output {
    let script = format!("{setup}\nexec \"$0\" run");
    Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .arg(monitor_bin())
        .output()
        .expect("run unshare")
}

#[test]
fn tracefs_that_cannot_be_mounted_is_one_line() {
    if !is_root("tracefs_that_cannot_be_mounted_is_one_line") {
        return;
    }
    // No tracefs anywhere, and no /sys/kernel/tracing to mount it on.
    let out = run_in_mount_ns(
        "umount -l /sys/kernel/tracing 2>/dev/null; umount -l /sys/kernel/debug/tracing 2>/dev/null; \
         mount -t tmpfs none /sys/kernel",
    );
    assert_one_clear_line(
        &out,
        1,
        "tracefs is not mounted and mounting it at /sys/kernel/tracing failed",
    );
}

#[test]
fn kernel_without_btf_is_one_line() {
    if !is_root("kernel_without_btf_is_one_line") {
        return;
    }
    // A kernel whose BTF is missing: an empty file where vmlinux BTF lives.
    let out = run_in_mount_ns("mount -t tmpfs none /sys/kernel/btf && : > /sys/kernel/btf/vmlinux");
    assert_one_clear_line(&out, 1, "cannot read kernel BTF at /sys/kernel/btf/vmlinux");
}
