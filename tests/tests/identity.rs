//! Who runs what, seen through the evasions a service's intruder has at
//! hand: a forged audit login uid, a `#!` script in /tmp, a shell copied
//! under another name, the dynamic loader, and paths spelt oddly. Each is
//! injected through a real web application's command-injection flaw.

use std::process::Command;

use serde_json::Value;
use tests::{free_port, is_root, wait_listening, EventExt as _, Killed, Monitor, VULNERABLE_APP};

const QUIET: &str = "[output]\nseed_events = false\n[network]\nseed_events = false\n";

/// The app, and a way to inject commands into it.
struct App {
    port: u16,
    pid: u64,
    _app: Killed,
}

impl App {
    fn start() -> Self {
        let port = free_port();
        let app = Killed(
            Command::new("/usr/bin/python3")
                .args(["-c", VULNERABLE_APP, &port.to_string()])
                .spawn()
                .expect("web app"),
        );
        wait_listening(&format!("127.0.0.1:{port}"));
        Self {
            port,
            pid: u64::from(app.0.id()),
            _app: app,
        }
    }

    /// Sends `x;<commands>` as the host to ping.
    fn inject(&self, commands: &str) {
        let q: String = format!("x;{commands}")
            .bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect();
        let out = Command::new("curl")
            .args(["-s", &format!("http://127.0.0.1:{}/?host={q}", self.port)])
            .output()
            .expect("curl");
        assert!(out.status.success());
    }

    /// Whether an alert or update line is of `rule`, for a process below
    /// this app.
    fn owns(&self, v: &Value, rule: &str) -> bool {
        matches!(v.kind(), "alert" | "alert_update")
            && v["rule"] == rule
            && v["process"]["ancestry"]
                .as_array()
                .is_some_and(|a| a.iter().any(|x| x["pid"] == self.pid))
    }
}

/// A directory removed at the end, outside /tmp (where every drop is
/// already suspect).
struct Dir(std::path::PathBuf);

impl Dir {
    fn new(tag: &str) -> Self {
        let d = std::path::PathBuf::from(format!(
            "/var/lib/edgewatch-test-{tag}-{}",
            std::process::id()
        ));
        std::fs::create_dir_all(&d).expect("dir");
        Self(d)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A service writing its own loginuid is not thereby an admin's session:
/// its shell still alerts, and the write itself does.
#[test]
fn a_forged_loginuid_does_not_hide_a_service() {
    if !is_root("a_forged_loginuid_does_not_hide_a_service") {
        return;
    }
    let m = Monitor::start_with(QUIET);
    let app = App::start();
    app.inject("echo 4242 > /proc/self/loginuid; /bin/sh -c 'id -u'");
    let shell = m.expect_event("EW-PROC-001 of the forged session", |v| {
        app.owns(v, "EW-PROC-001") && v["evidence"][0]["auid"] == 4242
    });
    assert_eq!(shell["severity"], "high");
    // Raised on the fork (which names no ancestry) or the exec, whichever
    // shows the new login uid first; 4242 is this test's own.
    let forged = m.expect_event("EW-EVADE-005", |v| {
        v.kind() == "alert" && v["rule"] == "EW-EVADE-005" && v["evidence"][0]["auid"] == 4242
    });
    let sh = std::fs::canonicalize("/bin/sh").expect("sh");
    assert_eq!(
        forged["evidence"][0]["loginuid_set_by"],
        sh.display().to_string()
    );
}

/// A `#!` script dropped in /tmp runs from /tmp, though the kernel names
/// the interpreter as the executable.
#[test]
fn a_script_in_tmp_is_executed_from_tmp() {
    if !is_root("a_script_in_tmp_is_executed_from_tmp") {
        return;
    }
    let dir = std::env::temp_dir().join(format!(".edgewatch-test-script-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let script = dir.join("update");
    std::fs::write(&script, "#!/bin/sh\nid -u\n").expect("script");
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    let m = Monitor::start_with(QUIET);
    let app = App::start();
    app.inject(&script.display().to_string());
    let path = script.display().to_string();
    let alert = m.expect_event("EW-PROC-003 of the script", |v| {
        app.owns(v, "EW-PROC-003") && v["evidence"][0]["argv"].to_string().contains(&path)
    });
    assert_eq!(
        alert["process"]["exe"],
        std::fs::canonicalize("/bin/sh")
            .expect("sh")
            .display()
            .to_string()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A shell copied under another name into a directory outside /tmp is
/// still a shell, by its content.
#[test]
fn a_renamed_shell_is_still_a_shell() {
    if !is_root("a_renamed_shell_is_still_a_shell") {
        return;
    }
    let dir = Dir::new("renamed");
    let copy = dir.0.join("thumbnailer");
    std::fs::copy("/bin/sh", &copy).expect("copy sh");
    let m = Monitor::start_with(QUIET);
    let app = App::start();
    app.inject(&format!("{} -c 'id -u'", copy.display()));
    let path = copy.display().to_string();
    let renamed = m.expect_event("EW-PROC-008", |v| {
        app.owns(v, "EW-PROC-008") && v["process"]["exe"] == path.as_str()
    });
    assert_eq!(
        renamed["severity"], "high",
        "below a network-facing service"
    );
    m.expect_event("EW-PROC-001 naming the copy", |v| {
        app.owns(v, "EW-PROC-001") && v["evidence"][0]["exe"] == path.as_str()
    });
}

/// The dynamic loader run directly does not hide the shell it runs.
#[test]
fn a_shell_run_through_the_loader_is_seen() {
    if !is_root("a_shell_run_through_the_loader_is_seen") {
        return;
    }
    let Some(loader) = ["/lib64/ld-linux-x86-64.so.2", "/lib/ld-linux-aarch64.so.1"]
        .into_iter()
        .find(|l| std::path::Path::new(l).exists())
    else {
        eprintln!("skipped: no dynamic loader at a known path");
        return;
    };
    let m = Monitor::start_with(QUIET);
    let app = App::start();
    app.inject(&format!("{loader} /bin/sh -c 'id -u'"));
    m.expect_event("EW-EVADE-004", |v| app.owns(v, "EW-EVADE-004"));
    m.expect_event("EW-PROC-001 through the loader", |v| {
        app.owns(v, "EW-PROC-001")
            && v["evidence"][0]["exe"]
                .as_str()
                .is_some_and(|e| e.contains("ld-linux"))
    });
}

/// A path spelt with doubled slashes or dots is the same path.
#[test]
fn oddly_spelt_paths_are_the_same_file() {
    if !is_root("oddly_spelt_paths_are_the_same_file") {
        return;
    }
    let m = Monitor::start_with(QUIET);
    let app = App::start();
    app.inject("cat //etc/./ssl/..//shadow");
    m.expect_event("EW-CRED-001", |v| app.owns(v, "EW-CRED-001"));
}
