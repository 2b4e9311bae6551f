//! Operations end to end, with the real components: Prometheus scrapes the
//! monitor and answers PromQL about it, Alertmanager receives the alert a
//! real suspicious exec raised (and gets it late, after a restart, when it
//! was down), a syslog receiver gets RFC 5424 lines, a webhook receiver the
//! alert JSON; and the shipped deploy/ files pass their tools' checks.
//!
//! Prometheus and Alertmanager run as the tests' own processes, on free
//! loopback ports, with their configuration and data in a scratch dir.

use std::{
    collections::BTreeSet,
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::{TcpListener, TcpStream},
    os::unix::net::UnixDatagram,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use serde_json::Value;
use tests::{
    event_timeout, free_port, is_root, monitor_bin, scratch_dir, spawn_prometheus, unique,
    wait_for, EventExt as _, Killed, Monitor,
};

const QUIET: &str = "[output]\nseed_events = false\n[network]\nseed_events = false\n";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A GET on loopback: status and body, or None when nothing answers.
fn try_get(addr: &str, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut resp = String::new();
    s.read_to_string(&mut resp).ok()?;
    let (head, body) = resp.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, body.to_owned()))
}

/// Percent-encodes a query parameter.
fn encode(q: &str) -> String {
    q.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// A server process of the test, with its HTTP address.
struct Server {
    _child: Killed,
    addr: String,
}

fn wait_ready(name: &str, child: &mut Killed, addr: &str) {
    wait_for(
        &format!("{name} ready on {addr}"),
        Duration::from_secs(60),
        || {
            if let Ok(Some(status)) = child.0.try_wait() {
                panic!("{name} exited before it was ready: {status}");
            }
            try_get(addr, "/-/ready").filter(|(s, _)| *s == 200)
        },
    );
}

/// Prometheus scraping `target` every second as job `edgewatch`, with the
/// shipped alerting rules loaded.
fn start_prometheus(dir: &Path, target: &str) -> Server {
    let rules = repo().join("deploy/prometheus/edgewatch-rules.yml");
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             rule_files:\n  - {}\n\
             scrape_configs:\n  - job_name: edgewatch\n    static_configs:\n      - targets: [\"{target}\"]\n",
            rules.display()
        ),
    )
    .expect("write prometheus.yml");
    let addr = format!("127.0.0.1:{}", free_port());
    let mut child = spawn_prometheus(&config, &dir.join("data"), &addr);
    wait_ready("prometheus", &mut child, &addr);
    Server {
        _child: child,
        addr,
    }
}

/// Alertmanager on `addr`, keeping its state in `dir` across restarts.
fn start_alertmanager(dir: &Path, addr: &str) -> Server {
    let config = dir.join("alertmanager.yml");
    std::fs::write(
        &config,
        "route:\n  receiver: none\nreceivers:\n  - name: none\n",
    )
    .expect("write alertmanager.yml");
    let mut child = Killed(
        Command::new("prometheus-alertmanager")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address={addr}"))
            // No clustering: it would take a fixed port.
            .arg("--cluster.listen-address=")
            .arg("--log.level=warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start alertmanager (scripts/setup.sh installs it)"),
    );
    wait_ready("alertmanager", &mut child, addr);
    Server {
        _child: child,
        addr: addr.to_owned(),
    }
}

/// A PromQL instant query's result vector.
fn promql(prometheus: &str, query: &str) -> Vec<Value> {
    let (status, body) = try_get(
        prometheus,
        &format!("/api/v1/query?query={}", encode(query)),
    )
    .expect("prometheus answers");
    assert_eq!(status, 200, "{query}: {body}");
    let v: Value = serde_json::from_str(&body).expect("JSON");
    v["data"]["result"].as_array().cloned().unwrap_or_default()
}

/// The alerts Alertmanager holds.
fn alertmanager_alerts(addr: &str) -> Vec<Value> {
    try_get(addr, "/api/v2/alerts")
        .and_then(|(_, body)| serde_json::from_str::<Value>(&body).ok())
        .and_then(|v| v.as_array().cloned())
        .unwrap_or_default()
}

/// Waits until Alertmanager holds the alert of this alert line.
fn wait_in_alertmanager(addr: &str, alert: &Value) -> Value {
    let id = alert["alert_id"].as_str().expect("alert_id");
    wait_for(
        &format!("alert {id} in Alertmanager"),
        event_timeout(),
        || {
            alertmanager_alerts(addr)
                .into_iter()
                .find(|a| a["labels"]["alert_id"] == id)
        },
    )
}

/// A program dropped in a scratch dir under /tmp and run from there, which
/// the built-in rule EW-PROC-003 reports. It runs detached (its parent
/// exits first, so it is adopted), so each drop is its own lineage and its
/// alert is never folded into another test's. Returns its path.
fn drop_and_run(tag: &str) -> String {
    let dir = scratch_dir(tag);
    let exe = dir.join(format!("ew-ops-{tag}-{}", unique()));
    std::fs::copy("/usr/bin/true", &exe).expect("copy true");
    let exe = exe.to_str().expect("utf8").to_owned();
    let status = Command::new("/bin/sh")
        .args([
            "-c",
            &format!("(sleep 0.3; exec '{exe}') >/dev/null 2>&1 &"),
        ])
        .status()
        .expect("sh");
    assert!(status.success());
    exe
}

/// The alert line the monitor wrote for the drop at `exe`.
fn alert_for(m: &Monitor, exe: &str) -> Value {
    m.expect_event(&format!("EW-PROC-003 for {exe}"), |v| {
        v.kind() == "alert" && v["rule"] == "EW-PROC-003" && v["process"]["exe"] == exe
    })
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .expect("hostname")
        .trim()
        .to_owned()
}

/// Asserts a checker succeeded and had nothing to say.
fn assert_quiet_success(what: &str, out: &std::process::Output) {
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && report.trim().is_empty(),
        "{what}: {} {report}",
        out.status
    );
}

/// Metric names in the README's metrics table.
fn documented_metrics() -> BTreeSet<String> {
    let readme = std::fs::read_to_string(repo().join("README.md")).expect("README");
    let table = readme
        .split_once("\n## Metrics\n")
        .and_then(|(_, rest)| rest.split("\n## ").next())
        .expect("a Metrics section");
    table
        .lines()
        .filter_map(|l| l.strip_prefix("| `edgewatch_"))
        .filter_map(|l| l.split_once('`'))
        .map(|(name, _)| format!("edgewatch_{name}"))
        .collect()
}

#[test]
fn prometheus_scrapes_the_monitor_and_its_metrics_are_clean_and_documented() {
    if !is_root("prometheus_scrapes_the_monitor_and_its_metrics_are_clean_and_documented") {
        return;
    }
    let dir = scratch_dir("ops-prometheus");
    let m = Monitor::start_with(&format!(
        "{QUIET}[[alerts.sink]]\ntype = \"file\"\npath = \"{}\"\n",
        dir.join("alerts.jsonl").display()
    ));
    let scrape = m.metrics();

    // promtool's linter finds nothing in a real scrape.
    let mut lint = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (scripts/setup.sh installs it)");
    lint.stdin
        .take()
        .expect("stdin")
        .write_all(scrape.as_bytes())
        .expect("feed promtool");
    assert_quiet_success(
        "promtool check metrics",
        &lint.wait_with_output().expect("promtool"),
    );

    // Every metric served is in the README table, and every row is served.
    let served: BTreeSet<String> = scrape
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect();
    assert_eq!(served, documented_metrics(), "served vs README");

    let prometheus = start_prometheus(&dir, &m.metrics_addr);
    let up = wait_for("up == 1", Duration::from_secs(30), || {
        promql(&prometheus.addr, "up{job=\"edgewatch\"} == 1")
            .into_iter()
            .next()
    });
    assert_eq!(up["metric"]["instance"], m.metrics_addr.as_str());
    let exec = promql(
        &prometheus.addr,
        "edgewatch_probe_attached{job=\"edgewatch\", probe=\"process_sched_exec\"}",
    );
    assert_eq!(exec.len(), 1, "{exec:?}");
    assert_eq!(exec[0]["value"][1], "1");
    let delivered = promql(&prometheus.addr, "edgewatch_alert_sink_delivered_total");
    assert_eq!(delivered.len(), 1, "{delivered:?}");
    assert_eq!(delivered[0]["metric"]["sink"], "file");
    // The shipped rules loaded and evaluate without error.
    let (_, rules) = try_get(&prometheus.addr, "/api/v1/rules").expect("rules");
    let rules: Value = serde_json::from_str(&rules).expect("JSON");
    let group = &rules["data"]["groups"][0];
    assert_eq!(group["name"], "edgewatch");
    wait_for("rules evaluated", Duration::from_secs(30), || {
        let (_, body) = try_get(&prometheus.addr, "/api/v1/rules")?;
        let v: Value = serde_json::from_str(&body).ok()?;
        let rules = v["data"]["groups"][0]["rules"].as_array()?.clone();
        rules.iter().all(|r| r["health"] == "ok").then_some(())
    });
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn alertmanager_receives_the_alert_of_a_suspicious_exec_and_late_ones_after_a_restart() {
    if !is_root(
        "alertmanager_receives_the_alert_of_a_suspicious_exec_and_late_ones_after_a_restart",
    ) {
        return;
    }
    let dir = scratch_dir("ops-alertmanager");
    let addr = format!("127.0.0.1:{}", free_port());
    let am = start_alertmanager(&dir, &addr);
    let m = Monitor::start_with(&format!(
        "{QUIET}[[alerts.sink]]\ntype = \"alertmanager\"\nurl = \"http://{addr}\"\n\
         generator_url = \"http://gw-test:9810/metrics\"\n\
         retry = {{ max_attempts = 1000, initial_backoff_ms = 200, max_backoff_ms = 1000 }}\n"
    ));
    let exe = drop_and_run("am");
    let alert = alert_for(&m, &exe);
    let got = wait_in_alertmanager(&addr, &alert);
    let labels = &got["labels"];
    assert_eq!(labels["alertname"], "EW-PROC-003");
    assert_eq!(labels["rule"], "EW-PROC-003");
    assert_eq!(labels["severity"], "medium");
    assert_eq!(labels["technique"], "T1105,T1204.002");
    // Without alerts.host, the machine's own name.
    assert_eq!(labels["host"], hostname());
    let notes = &got["annotations"];
    assert_eq!(notes["summary"], alert["title"]);
    let process = notes["process"].as_str().expect("process");
    assert!(
        process.starts_with(&format!("pid {} {exe}", alert["process"]["pid"])),
        "{process}"
    );
    assert_eq!(got["generatorURL"], "http://gw-test:9810/metrics");
    assert_eq!(got["status"]["state"], "active");
    // Alertmanager writes times its own way: compare to the second.
    let second = |v: &Value| v.as_str().unwrap_or_default().get(..19).map(str::to_owned);
    assert_eq!(second(&got["startsAt"]), second(&alert["ts"]));
    assert_eq!(second(&got["endsAt"]), second(&alert["window_end"]));
    assert!(m.metric("edgewatch_alert_sink_delivered_total{sink=\"alertmanager\"}") >= Some(1.0));

    // Alertmanager stops: attempts fail and are retried while it is down.
    drop(am);
    let failures = || {
        m.metric("edgewatch_alert_sink_failures_total{sink=\"alertmanager\"}")
            .unwrap_or(0.0)
    };
    let failed_before = failures();
    let late = alert_for(&m, &drop_and_run("am-down"));
    wait_for("failed attempts", event_timeout(), || {
        (failures() >= failed_before + 3.0).then_some(())
    });
    // It comes back on the same address and gets the alert.
    let _am = start_alertmanager(&dir, &addr);
    let got = wait_in_alertmanager(&addr, &late);
    assert_eq!(got["labels"]["alertname"], "EW-PROC-003");
    let dropped = m.metric(
        "edgewatch_alert_sink_dropped_total{reason=\"retries_exhausted\",sink=\"alertmanager\"}",
    );
    assert_eq!(dropped, Some(0.0));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_full_queue_counts_dropped_alerts() {
    if !is_root("a_full_queue_counts_dropped_alerts") {
        return;
    }
    // Nothing listens there: the first alert is retried for a long time,
    // the second waits in the one-alert queue, later ones are dropped.
    let port = free_port();
    let dir = scratch_dir("ops-queue");
    let m = Monitor::start_with(&format!(
        "{QUIET}[[alerts.sink]]\ntype = \"alertmanager\"\nurl = \"http://127.0.0.1:{port}\"\n\
         queue_size = 1\nretry = {{ max_attempts = 1000, initial_backoff_ms = 1000 }}\n\
         [[alerts.sink]]\ntype = \"file\"\npath = \"{}\"\n",
        dir.join("alerts.jsonl").display()
    ));
    let exes: Vec<String> = (0..3).map(|_| drop_and_run("queue")).collect();
    for exe in &exes {
        alert_for(&m, exe);
    }
    let dropped = wait_for("a queue_full drop", event_timeout(), || {
        m.metric("edgewatch_alert_sink_dropped_total{reason=\"queue_full\",sink=\"alertmanager\"}")
            .filter(|n| *n >= 1.0)
    });
    assert!(dropped >= 1.0);
    // The other sink is not held up: it has all three.
    wait_for("the file sink has every alert", event_timeout(), || {
        let text = std::fs::read_to_string(dir.join("alerts.jsonl")).ok()?;
        exes.iter().all(|e| text.contains(e.as_str())).then_some(())
    });
    let _ = std::fs::remove_dir_all(&dir);
}

/// Checks one RFC 5424 message from the monitor and returns its MSG.
fn check_rfc5424(line: &str, monitor_pid: u32, exe: &str) -> String {
    let (pri, rest) = line
        .strip_prefix('<')
        .and_then(|l| l.split_once('>'))
        .unwrap_or_else(|| panic!("no PRI: {line}"));
    let pri: u8 = pri.parse().expect("PRI number");
    // auth (4) with warning (4), the severity of a medium alert.
    assert_eq!(pri, 4 * 8 + 4, "{line}");
    let mut fields = rest.splitn(7, ' ');
    let mut next = || {
        fields
            .next()
            .unwrap_or_else(|| panic!("short header: {line}"))
    };
    assert_eq!(next(), "1", "VERSION: {line}");
    let ts = next();
    // FULL-DATE "T" FULL-TIME with at most six fractional digits.
    let b = ts.as_bytes();
    assert!(
        ts.len() >= 20 && b[4] == b'-' && b[7] == b'-' && b[10] == b'T' && b[13] == b':',
        "TIMESTAMP {ts}"
    );
    assert!(ts.ends_with('Z'), "TIMESTAMP {ts}");
    if let Some((_, frac)) = ts.trim_end_matches('Z').split_once('.') {
        assert!((1..=6).contains(&frac.len()), "TIME-SECFRAC {ts}");
    }
    assert_eq!(next(), "gw-syslog", "HOSTNAME: {line}");
    assert_eq!(next(), "edgewatch", "APP-NAME: {line}");
    assert_eq!(next(), monitor_pid.to_string(), "PROCID: {line}");
    assert_eq!(next(), "EW-PROC-003", "MSGID: {line}");
    let sd_and_msg = next();
    let sd_end = sd_and_msg.find("] ").expect("SD end");
    let sd = &sd_and_msg[..=sd_end];
    assert!(sd.starts_with("[edgewatch@32473 "), "{sd}");
    for param in [
        "rule=\"EW-PROC-003\"",
        "severity=\"medium\"",
        &format!("exe=\"{exe}\""),
    ] {
        assert!(sd.contains(param), "{param} missing in {sd}");
    }
    sd_and_msg[sd_end + 2..].to_owned()
}

#[test]
fn syslog_receivers_get_rfc5424_messages() {
    if !is_root("syslog_receivers_get_rfc5424_messages") {
        return;
    }
    let dir = scratch_dir("ops-syslog");
    let socket_path = dir.join("log.sock");
    let unix = UnixDatagram::bind(&socket_path).expect("bind unix socket");
    unix.set_read_timeout(Some(Duration::from_millis(500)))
        .expect("timeout");
    let tcp = TcpListener::bind("127.0.0.1:0").expect("bind tcp");
    let tcp_addr = tcp.local_addr().expect("addr");
    let m = Monitor::start_with(&format!(
        "{QUIET}[alerts]\nhost = \"gw-syslog\"\n\
         [[alerts.sink]]\ntype = \"syslog\"\naddress = \"{}\"\n\
         [[alerts.sink]]\ntype = \"syslog\"\nname = \"collector\"\ntransport = \"tcp\"\naddress = \"{tcp_addr}\"\n",
        socket_path.display()
    ));
    // The TCP collector: octet-counted frames, `LEN SP MSG`.
    let (frames_tx, frames) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        let Ok((s, _)) = tcp.accept() else { return };
        let mut r = BufReader::new(s);
        loop {
            let mut len = Vec::new();
            if r.read_until(b' ', &mut len).unwrap_or(0) == 0 {
                return;
            }
            let n: usize = String::from_utf8_lossy(&len)
                .trim()
                .parse()
                .expect("MSG-LEN is a number");
            let mut msg = vec![0; n];
            r.read_exact(&mut msg).expect("a whole frame");
            if frames_tx
                .send(String::from_utf8(msg).expect("UTF-8"))
                .is_err()
            {
                return;
            }
        }
    });
    let exe = drop_and_run("syslog");
    let alert = alert_for(&m, &exe);
    let title = alert["title"].as_str().expect("title");
    // Other rules may name the file in their command lines: pick this one
    // by its executable parameter.
    let mine = format!("exe=\"{exe}\"");
    let deadline = Instant::now() + event_timeout();
    let datagram = loop {
        assert!(Instant::now() < deadline, "no syslog datagram for {exe}");
        let mut buf = vec![0; 65536];
        if let Ok(n) = unix.recv(&mut buf) {
            let line = String::from_utf8(buf[..n].to_vec()).expect("UTF-8");
            if line.contains(&mine) {
                break line;
            }
        }
    };
    let msg = check_rfc5424(&datagram, m.pid(), &exe);
    assert_eq!(msg, format!("{title}: {exe}"));
    let framed = loop {
        let line = frames
            .recv_timeout(event_timeout())
            .expect("a frame from the TCP sink");
        if line.contains(&mine) {
            break line;
        }
    };
    assert_eq!(check_rfc5424(&framed, m.pid(), &exe), msg);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_webhook_receiver_gets_the_alert_json() {
    if !is_root("a_webhook_receiver_gets_the_alert_json") {
        return;
    }
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (bodies_tx, bodies) = mpsc::channel::<(String, Value)>();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut s) = conn else { return };
            let mut r = BufReader::new(s.try_clone().expect("clone"));
            let mut head = String::new();
            let mut len = 0;
            loop {
                let mut line = String::new();
                if r.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().expect("length");
                }
                head.push_str(&line);
            }
            let mut body = vec![0; len];
            r.read_exact(&mut body).expect("body");
            let _ = s.write_all(b"HTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n");
            let json = serde_json::from_slice(&body).expect("the body is JSON");
            if bodies_tx.send((head, json)).is_err() {
                return;
            }
        }
    });
    let m = Monitor::start_with(&format!(
        "{QUIET}[[alerts.sink]]\ntype = \"webhook\"\nurl = \"http://{addr}/edgewatch\"\n\
         headers = {{ Authorization = \"Bearer test-token\" }}\n"
    ));
    let exe = drop_and_run("webhook");
    let alert = alert_for(&m, &exe);
    let (head, body) = loop {
        let (head, body) = bodies
            .recv_timeout(event_timeout())
            .expect("a webhook request");
        if body["process"]["exe"] == exe.as_str() {
            break (head, body);
        }
    };
    assert!(head.starts_with("POST /edgewatch HTTP/1.1\r\n"), "{head}");
    let head = head.to_ascii_lowercase();
    assert!(head.contains("content-type: application/json"), "{head}");
    assert!(head.contains("authorization: bearer test-token"), "{head}");
    // The body is the alert line of the event stream, whole.
    assert_eq!(body, alert);
}

/// The value of `key=` in the shipped unit.
fn unit_setting(key: &str) -> String {
    let unit = std::fs::read_to_string(repo().join("deploy/systemd/edgewatch.service"))
        .expect("unit file");
    unit.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key} in the unit"))
        .to_owned()
}

#[test]
fn the_unit_s_capabilities_are_enough_for_every_probe_and_proc() {
    if !is_root("the_unit_s_capabilities_are_enough_for_every_probe_and_proc") {
        return;
    }
    let caps: Vec<String> = unit_setting("CapabilityBoundingSet")
        .split_whitespace()
        .map(|c| format!("+{}", c.trim_start_matches("CAP_").to_ascii_lowercase()))
        .collect();
    // A process of another user: reading its /proc entries needs
    // CAP_SYS_PTRACE, so its seeded event names its executable only if
    // the set is right.
    let other = Killed(
        Command::new("setpriv")
            .args([
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "sleep",
                "60",
            ])
            .spawn()
            .expect("sleep as nobody"),
    );
    let config = scratch_dir("ops-caps").join("monitor.toml");
    std::fs::write(
        &config,
        "[metrics]\nlisten = \"127.0.0.1:0\"\n[network]\nseed_events = false\n",
    )
    .expect("config");
    let mut child = Killed(
        Command::new("setpriv")
            .arg(format!("--bounding-set=-all,{}", caps.join(",")))
            .arg(monitor_bin())
            .args(["run", "--config"])
            .arg(&config)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("monitor under setpriv"),
    );
    // Both pipes are drained by threads: the seeded events written before
    // the ready line can be more than a pipe holds.
    let (lines_tx, lines) = mpsc::channel::<(bool, String)>();
    let stderr = child.0.stderr.take().expect("stderr");
    let stdout = child.0.stdout.take().expect("stdout");
    for (is_event, pipe) in [
        (false, Box::new(stderr) as Box<dyn std::io::Read + Send>),
        (true, Box::new(stdout)),
    ] {
        let tx = lines_tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                if tx.send((is_event, line)).is_err() {
                    return;
                }
            }
        });
    }
    let pid = other.pid();
    let mut ready = None;
    let mut seeded = None;
    let mut log = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while ready.is_none() || seeded.is_none() {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok((is_event, line)) = lines.recv_timeout(left) else {
            panic!("monitor under the unit's capabilities: ready {ready:?}, seeded {seeded:?}; stderr: {log:#?}");
        };
        if !is_event {
            if line.contains("monitor ready") {
                ready = Some(line.clone());
            }
            log.push(line);
        } else if let Ok(v) = serde_json::from_str::<Value>(&line) {
            if v.kind() == "process" && v.pid() == pid {
                seeded = Some(v);
            }
        }
    }
    let ready = ready.unwrap_or_default();
    let field = |name: &str| {
        ready
            .split_whitespace()
            .find_map(|f| f.strip_prefix(&format!("{name}=")))
            .map(str::to_owned)
    };
    assert_eq!(field("attached"), field("probes"), "{log:#?}");
    let seeded = seeded.unwrap_or_default();
    assert_eq!(seeded["exe"], "/usr/bin/sleep", "{seeded}");
    // Once attached it keeps only what its running stages use, on every
    // thread: CAP_NET_ADMIN (12) and CAP_SYS_PTRACE (19).
    assert_eq!(
        field("capabilities").as_deref(),
        Some("CAP_NET_ADMIN,CAP_SYS_PTRACE")
    );
    let monitor_pid = child.0.id();
    let tasks = std::fs::read_dir(format!("/proc/{monitor_pid}/task")).expect("tasks");
    for task in tasks {
        let status = std::fs::read_to_string(task.expect("task").path().join("status"))
            .expect("task status");
        for set in ["CapEff:", "CapPrm:"] {
            let mask = status
                .lines()
                .find_map(|l| l.strip_prefix(set))
                .map(str::trim)
                .unwrap_or_default();
            assert_eq!(mask, "0000000000081000", "{set} of a monitor thread");
        }
    }
    let _ = std::fs::remove_file(&config);
}

/// Runs promtool in deploy/prometheus and fails with its output.
fn promtool(args: &[&str]) {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(repo().join("deploy/prometheus"))
        .output()
        .expect("promtool (scripts/setup.sh installs it)");
    assert!(
        out.status.success(),
        "promtool {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn shipped_prometheus_rules_pass_promtool_check_and_their_unit_tests() {
    promtool(&["check", "rules", "edgewatch-rules.yml"]);
    promtool(&["test", "rules", "edgewatch-rules.test.yml"]);
}

#[test]
fn shipped_systemd_unit_passes_systemd_analyze_verify() {
    // verify checks that ExecStart exists: point it at the built binary.
    let unit =
        std::fs::read_to_string(repo().join("deploy/systemd/edgewatch.service")).expect("unit");
    let bin = monitor_bin().canonicalize().expect("monitor binary");
    let dir = scratch_dir("ops-unit");
    let path = dir.join("edgewatch.service");
    std::fs::write(
        &path,
        unit.replace("/usr/local/bin/monitor", bin.to_str().expect("utf8")),
    )
    .expect("write unit");
    // A misspelt key is only a warning, so any output fails the test.
    assert_quiet_success(
        "systemd-analyze verify",
        &Command::new("systemd-analyze")
            .arg("verify")
            .arg(&path)
            .output()
            .expect("systemd-analyze"),
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn grafana_dashboard_queries_only_documented_metrics() {
    let text =
        std::fs::read_to_string(repo().join("deploy/grafana/edgewatch.json")).expect("dashboard");
    let dash: Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    let documented = documented_metrics();
    let mut used = BTreeSet::new();
    for panel in dash["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().expect("expr");
            for (i, _) in expr.match_indices("edgewatch_") {
                let name: String = expr[i..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                used.insert(name);
            }
        }
    }
    let unknown: Vec<&String> = used.difference(&documented).collect();
    assert!(
        unknown.is_empty(),
        "undocumented metrics in the dashboard: {unknown:?}"
    );
    // The benchmark's own counter is 0 in production: no panel.
    let unused: Vec<&String> = documented
        .difference(&used)
        .filter(|m| *m != "edgewatch_bench_events_drained_total")
        .collect();
    assert!(unused.is_empty(), "metrics without a panel: {unused:?}");
}

#[test]
fn an_alert_file_that_cannot_be_opened_stops_the_start_in_one_line() {
    let dir = scratch_dir("ops-bad-sink");
    let config = dir.join("monitor.toml");
    let missing = dir.join("no-such-dir/alerts.jsonl");
    std::fs::write(
        &config,
        format!(
            "[metrics]\nenabled = false\n[[alerts.sink]]\ntype = \"file\"\npath = \"{}\"\n",
            missing.display()
        ),
    )
    .expect("config");
    let out = Command::new(monitor_bin())
        .args(["run", "--config"])
        .arg(&config)
        .output()
        .expect("monitor");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        stderr.trim(),
        format!(
            "monitor: error: cannot open alert file {}: No such file or directory (os error 2)",
            missing.display()
        )
    );
    let _ = std::fs::remove_dir_all(&dir);
}
