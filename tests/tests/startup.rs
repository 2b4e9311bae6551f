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
