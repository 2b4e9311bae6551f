//! Hostile network load: a port scan, a SYN flood of half-open
//! connections and 10,000 concurrent connections. The monitor stays up,
//! bounded, and counts what it drops. Run one at a time (the load would
//! starve other tests' timeouts).

use std::{
    process::{Child, Command, Stdio},
    time::Duration,
};

use tests::{
    free_port, is_root, wait_listen_state, wait_listening, EventExt as _, Killed, Monitor,
    NetnsPair,
};

const CONFIG: &str =
    "[output]\nseed_events = false\n[network]\nseed_events = false\nsweep_secs = 1\n";

fn pid_of(child: &Child) -> u64 {
    u64::from(child.id())
}

#[test]
fn port_scan_is_reported_and_bounded() {
    if !is_root("port_scan_is_reported_and_bounded") {
        return;
    }
    let m = Monitor::start_with(CONFIG);
    // 3,000 refused connects as fast as one thread makes them.
    let script = r#"
import socket
n = 0
for port in range(20000, 23000):
    s = socket.socket()
    try: s.connect(("127.0.0.1", port))
    except ConnectionRefusedError: n += 1
    s.close()
print(n)
"#;
    let scanner = Command::new("/usr/bin/python3")
        .args(["-c", script])
        .stdout(Stdio::piped())
        .spawn()
        .expect("python");
    let scanner_pid = u64::from(scanner.id());
    let out = scanner.wait_with_output().expect("python");
    let refused: u64 = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("count");
    m.settle(&[
        "edgewatch_events_total{kind=\"connect_result\"}",
        "edgewatch_net_flow_table_entries",
    ]);
    let seen = m
        .events(|v| v.kind() == "connect_result" && v["result"] == "refused")
        .len() as u64;
    let lost = m
        .metric("edgewatch_kernel_events_lost_total{kind=\"connect_result\"}")
        .unwrap_or(0.0) as u64;
    assert!(refused >= 2_990, "only {refused} refused (ports in use?)");
    assert!(
        seen + lost >= refused,
        "{seen} reported + {lost} counted lost < {refused} refused"
    );
    assert!(
        m.metric("edgewatch_net_connect_results_total{result=\"refused\"}")
            .unwrap_or(0.0)
            >= seen as f64
    );
    // Nothing of the scan stays behind in the flow table.
    let entries = m
        .metric("edgewatch_net_flow_table_entries")
        .unwrap_or(f64::MAX);
    assert!(entries < 100.0, "{entries} flows left after the scan");
    // The scan is one alert, however many ports it tried.
    let scans = m.events(|v| {
        v.kind() == "alert"
            && v["rule"]
                .as_str()
                .is_some_and(|r| r.starts_with("EW-SCAN-"))
            && v["process"]["pid"] == scanner_pid
    });
    assert_eq!(scans.len(), 1, "scan alerts: {scans:#?}");
    assert!(m.stop().success());
}

#[test]
fn ten_thousand_concurrent_connections() {
    if !is_root("ten_thousand_concurrent_connections") {
        return;
    }
    // A flow table smaller than the load: evictions must be counted, and
    // memory stay bounded.
    let m = Monitor::start_with(&format!("{CONFIG}flow_table_capacity = 4096\n"));
    let port = free_port();
    let script = r#"
import resource, socket, sys, time
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
port, n = int(sys.argv[1]), int(sys.argv[2])
if sys.argv[3] == "server":
    srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", port)); srv.listen(4096)
    print("ready", flush=True)
    conns = [srv.accept()[0] for _ in range(n)]
    print("accepted", len(conns), flush=True)
    sys.stdin.read()
else:
    conns = []
    for _ in range(n):
        c = socket.create_connection(("127.0.0.1", port)); conns.append(c)
    print("connected", len(conns), flush=True)
    sys.stdin.read()
"#;
    let n = 10_000;
    let mut server = Command::new("/usr/bin/python3")
        .args(["-c", script, &port.to_string(), &n.to_string(), "server"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("server");
    wait_listening(&format!("127.0.0.1:{port}"));
    let mut client = Command::new("/usr/bin/python3")
        .args(["-c", script, &port.to_string(), &n.to_string(), "client"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("client");
    let mut line = String::new();
    let mut out = std::io::BufReader::new(client.stdout.take().expect("stdout"));
    std::io::BufRead::read_line(&mut out, &mut line).expect("client output");
    assert_eq!(line.trim(), format!("connected {n}"));
    m.settle(&[
        "edgewatch_events_total{kind=\"accept\"}",
        "edgewatch_events_total{kind=\"connect_result\"}",
    ]);
    let accepts = m
        .events(|v| v.kind() == "accept" && v["local"]["port"] == port)
        .len() as u64;
    let established = m
        .events(|v| v.kind() == "connect_result" && v["remote"]["port"] == port)
        .len() as u64;
    let lost: f64 = ["accept", "connect_result"]
        .iter()
        .map(|k| {
            m.metric(&format!(
                "edgewatch_kernel_events_lost_total{{kind=\"{k}\"}}"
            ))
            .unwrap_or(0.0)
        })
        .sum();
    assert!(
        accepts + established + lost as u64 >= 2 * n,
        "{accepts} accepts, {established} connects, {lost} lost"
    );
    let entries = m.metric("edgewatch_net_flow_table_entries").unwrap_or(0.0);
    assert!(entries <= 4096.0, "{entries} flows in a 4096-flow table");
    assert!(
        m.metric("edgewatch_net_flow_table_evictions_total")
            .unwrap_or(0.0)
            > 0.0
    );
    let rss_kib = std::fs::read_to_string(format!("/proc/{}/status", m.pid()))
        .expect("status")
        .lines()
        .find_map(|l| {
            l.strip_prefix("VmRSS:")
                .map(|v| v.trim().trim_end_matches(" kB").parse::<u64>().unwrap_or(0))
        })
        .unwrap_or(0);
    assert!(rss_kib < 256 * 1024, "monitor RSS {rss_kib} KiB");
    drop(client.stdin.take());
    drop(server.stdin.take());
    let _ = client.wait();
    let _ = server.wait();
    assert!(m.stop().success());
}

#[test]
fn syn_flood_half_open_connections_stay_bounded() {
    if !is_root("syn_flood_half_open_connections_stay_bounded") {
        return;
    }
    let m = Monitor::start_with(CONFIG);
    let ns = NetnsPair::new();
    let port = 8081;
    let listener = Killed(
        NetnsPair::command(&ns.b, "/usr/bin/python3")
            .args([
                "-c",
                "import socket,sys,time\nl=socket.socket(); l.bind(('0.0.0.0', int(sys.argv[1]))); l.listen(1024)\nc,_=l.accept(); c.recv(10); time.sleep(30)",
                &port.to_string(),
            ])
            .spawn()
            .expect("listener"),
    );
    std::thread::sleep(Duration::from_millis(300));
    // 5,000 SYNs into namespace b from a source that does not exist
    // (192.0.2.99): b's SYN-ACKs go nowhere and the connections stay
    // half-open, as request sockets.
    let script = r#"
import socket, struct, sys
port = int(sys.argv[1])
def csum(b):
    if len(b) % 2: b += b"\0"
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while s >> 16: s = (s & 0xffff) + (s >> 16)
    return ~s & 0xffff
raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
src, dst = socket.inet_aton("192.0.2.99"), socket.inet_aton("192.0.2.2")
for i in range(5000):
    tcp = struct.pack("!HHIIBBHHH", 10000 + i, port, i, 0, 5 << 4, 0x02, 65535, 0, 0)
    tcp = tcp[:16] + struct.pack("!H", csum(src + dst + struct.pack("!BBH", 0, 6, len(tcp)) + tcp)) + tcp[18:]
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), i & 0xffff, 0, 64, 6, 0, src, dst)
    raw.sendto(ip + tcp, ("192.0.2.2", 0))
print("sent")
"#;
    let out = NetnsPair::command(&ns.a, "/usr/bin/python3")
        .args(["-c", script, &port.to_string()])
        .output()
        .expect("python");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "sent",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let half_open = NetnsPair::command(&ns.b, "ss")
        .args(["-Htn", "state", "syn-recv"])
        .output()
        .expect("ss");
    let half_open = String::from_utf8_lossy(&half_open.stdout).lines().count();
    assert!(
        half_open > 100,
        "only {half_open} half-open connections: the flood did not land"
    );
    m.settle(&["edgewatch_net_kernel_flows"]);
    // The monitor tracks nothing for half-open connections, and still
    // reports a real connection to the same listener.
    let kernel_flows = m.metric("edgewatch_net_kernel_flows").unwrap_or(f64::MAX);
    assert!(
        kernel_flows < 100.0,
        "{kernel_flows} kernel flows after the flood"
    );
    let entries = m
        .metric("edgewatch_net_flow_table_entries")
        .unwrap_or(f64::MAX);
    assert!(entries < 100.0, "{entries} flows after the flood");
    let client = NetnsPair::command(&ns.a, "/usr/bin/python3")
        .args([
            "-c",
            "import socket,sys\nc=socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10); c.sendall(b'hello')",
            NetnsPair::B4,
            &port.to_string(),
        ])
        .status()
        .expect("client");
    assert!(client.success());
    let accepted = m.expect_event("accept after the flood", |v| {
        v.kind() == "accept" && v["local"]["port"] == port
    });
    assert_eq!(accepted["process"]["pid"], pid_of(&listener.0));
    drop(listener);
    assert!(m.stop().success());
}

/// Exec storm, connect flood and port scan together for 60 s: the monitor
/// stays up with bounded memory, every exec of the storm is either
/// written or counted lost (against the storm's own count), and a
/// drop-and-run during the flood still raises its alert.
/// Bytes the relay during the flood carries each way: over the 16 KiB
/// bulk-relay volume.
const RELAY_UP: usize = 40_000;
const RELAY_DOWN: usize = 100_000;

/// The relay's client: sends RELAY_UP bytes, prints how many came back.
const RELAY_CLIENT: &str = r#"
import socket, sys
c = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=60)
c.sendall(b"u" * int(sys.argv[2]))
n = 0
while True:
    d = c.recv(65536)
    if not d: break
    n += len(d)
print(n)
"#;

/// A web shell in miniature: a listening service that, on a request,
/// runs a shell command carrying the marker in its argv.
const WEB_SHELL: &str = r#"
import socket, subprocess, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen(4)
c, _ = s.accept()
c.recv(64)
subprocess.run(["/bin/sh", "-c", "exit 0", sys.argv[2]])
c.sendall(b"done"); c.close()
"#;

/// A free loopback port outside the range the flood's port scan sweeps.
fn port_outside_scan() -> u16 {
    loop {
        let port = free_port();
        if !(30_000..40_000).contains(&port) {
            return port;
        }
    }
}

/// The attacks run in the middle of the flood: a drop-and-run, a web
/// shell and a bulk relay through socat. Each must raise its alert.
struct Attacks {
    dropped: std::path::PathBuf,
    shell_marker: String,
    relay_target_port: u16,
    _target: Killed,
    socat: Killed,
    client: Option<std::thread::JoinHandle<String>>,
}

impl Attacks {
    fn launch(dir: &std::path::Path) -> Self {
        let dropped = dir.join("dropped-during-flood");
        std::fs::copy("/usr/bin/true", &dropped).expect("drop a program");
        // The flood forks all the time; a child forked while the copy was
        // open for writing holds it until its exec, and running the file in
        // that moment fails with ETXTBSY. Try again for a moment.
        let mut tries = 0;
        loop {
            match Command::new(&dropped).status() {
                Err(e) if e.kind() == std::io::ErrorKind::ExecutableFileBusy && tries < 100 => {
                    tries += 1;
                    std::thread::sleep(Duration::from_millis(20));
                }
                r => {
                    r.expect("run the dropped program");
                    break;
                }
            }
        }

        // The web shell runs in a session of its own (`setsid -f`), so its
        // alert is its own lineage's, not folded into the test binary's.
        let shell_marker = format!("ew-webshell-{}", std::process::id());
        let shell_port = port_outside_scan();
        let status = Command::new("setsid")
            .args(["-f", "/usr/bin/python3", "-c", WEB_SHELL])
            .args([&shell_port.to_string(), &shell_marker])
            .stdout(Stdio::null())
            .status()
            .expect("start the web shell");
        assert!(status.success(), "setsid");
        wait_listen_state(shell_port);
        let mut c = std::net::TcpStream::connect(("127.0.0.1", shell_port)).expect("web shell");
        c.set_read_timeout(Some(Duration::from_secs(60))).ok();
        use std::io::{Read as _, Write as _};
        c.write_all(b"GET /?cmd=id\r\n").expect("request");
        let mut reply = String::new();
        let _ = c.read_to_string(&mut reply);
        assert_eq!(reply, "done", "the web shell answered");

        let relay_target_port = port_outside_scan();
        let target = Killed(
            Command::new("/usr/bin/python3")
                .args(["-c", tests::BULK_TARGET, &relay_target_port.to_string()])
                .args([RELAY_UP.to_string(), RELAY_DOWN.to_string()])
                .arg("127.0.0.1")
                .spawn()
                .expect("relay target"),
        );
        wait_listen_state(relay_target_port);
        let relay_port = port_outside_scan();
        let socat = Killed(
            Command::new("socat")
                .args([
                    format!("TCP-LISTEN:{relay_port},bind=127.0.0.1,reuseaddr"),
                    format!("TCP:127.0.0.1:{relay_target_port}"),
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("socat"),
        );
        wait_listen_state(relay_port);
        let client = std::thread::spawn(move || {
            let out = Command::new("/usr/bin/python3")
                .args(["-c", RELAY_CLIENT, &relay_port.to_string()])
                .arg(RELAY_UP.to_string())
                .output()
                .expect("relay client");
            String::from_utf8_lossy(&out.stdout).trim().to_owned()
        });
        Attacks {
            dropped,
            shell_marker,
            relay_target_port,
            _target: target,
            socat,
            client: Some(client),
        }
    }
}

/// Which of the attacks' alerts (and the relay event) an output line is.
#[derive(Default)]
struct Seen {
    dropped: bool,
    web_shell: bool,
    relay_pid: Option<u64>,
    relay_alert_pids: Vec<u64>,
}

impl Seen {
    fn note(&mut self, v: &serde_json::Value, a: &Attacks) {
        match (v.kind(), v["rule"].as_str()) {
            ("alert", Some("EW-PROC-003")) => {
                self.dropped |= v["process"]["exe"] == a.dropped.display().to_string().as_str();
            }
            ("alert", Some("EW-PROC-001")) => {
                self.web_shell |= v["process"]["argv"]
                    .as_array()
                    .is_some_and(|argv| argv.iter().any(|x| *x == a.shell_marker.as_str()));
            }
            ("alert", Some("EW-RELAY-001")) => {
                if let Some(pid) = v["process"]["pid"].as_u64() {
                    self.relay_alert_pids.push(pid);
                }
            }
            ("relay", _) => {
                let to_target = v["legs"].as_array().is_some_and(|legs| {
                    legs.iter()
                        .any(|l| l["remote"]["port"] == u64::from(a.relay_target_port))
                });
                if to_target {
                    self.relay_pid = v["process"]["pid"].as_u64();
                }
            }
            _ => {}
        }
    }
}

#[test]
fn a_combined_flood_loses_nothing_uncounted_and_alerts_still_arrive() {
    if !is_root("a_combined_flood_loses_nothing_uncounted_and_alerts_still_arrive") {
        return;
    }
    use std::{
        io::BufRead as _,
        sync::{
            atomic::{AtomicBool, AtomicU64, Ordering},
            Arc,
        },
        time::Instant,
    };
    const FLOOD: Duration = Duration::from_secs(60);
    let dir = tests::scratch_dir("stress-flood");
    let events = dir.join("events.jsonl");
    // Events go to a file, read back as a stream at the end: a minute of
    // storm is more than the harness should hold in memory.
    let m = Monitor::start_with(&format!(
        "[output]\nstdout = false\nfile = \"{}\"\nseed_events = false\nkinds = [\"exec\", \"alert\", \"relay\"]\n[network]\nseed_events = false\n",
        events.display()
    ));
    let stop = Arc::new(AtomicBool::new(false));
    // If an assertion fails mid-flood, the flood threads must still stop:
    // they would otherwise run on through the tests that follow.
    struct StopOnDrop(Arc<AtomicBool>);
    impl Drop for StopOnDrop {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Relaxed);
        }
    }
    let _stop_on_panic = StopOnDrop(stop.clone());
    let marker = format!("ew-storm-{}", std::process::id());
    let execs = Arc::new(AtomicU64::new(0));
    // A bound of its own on every flood thread, whatever happens to the test.
    let deadline = Instant::now() + 3 * FLOOD;
    let running =
        move |stop: &AtomicBool| !stop.load(Ordering::Relaxed) && Instant::now() < deadline;
    let mut threads = Vec::new();
    {
        let (stop, execs, marker) = (stop.clone(), execs.clone(), marker.clone());
        threads.push(std::thread::spawn(move || {
            while running(&stop) {
                if Command::new("/usr/bin/true").arg(&marker).status().is_ok() {
                    execs.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("listen");
    let addr = listener.local_addr().expect("addr");
    {
        let stop = stop.clone();
        threads.push(std::thread::spawn(move || {
            while running(&stop) {
                if let Ok(c) = std::net::TcpStream::connect(addr) {
                    drop(c);
                    let _ = listener.accept();
                }
            }
        }));
    }
    {
        let stop = stop.clone();
        threads.push(std::thread::spawn(move || {
            let mut port = 30000u16;
            while running(&stop) {
                let _ = std::net::TcpStream::connect(("127.0.0.1", port));
                port = if port >= 39999 { 30000 } else { port + 1 };
            }
        }));
    }
    let start = Instant::now();
    let mut peak_rss_kib = 0u64;
    let mut attacks = None;
    while start.elapsed() < FLOOD {
        std::thread::sleep(Duration::from_secs(1));
        let status = std::fs::read_to_string(format!("/proc/{}/status", m.pid()))
            .expect("the monitor is still running");
        let rss = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .unwrap_or(0);
        peak_rss_kib = peak_rss_kib.max(rss);
        if attacks.is_none() && start.elapsed() > FLOOD / 3 {
            attacks = Some(Attacks::launch(&dir));
        }
    }
    let mut attacks = attacks.expect("the attacks ran");
    // The relay ran inside the flood, not after it.
    let client = attacks.client.take().expect("relay client");
    assert!(
        client.is_finished(),
        "the relay's client was still running when the flood ended"
    );
    assert_eq!(
        client.join().expect("relay client"),
        RELAY_DOWN.to_string(),
        "the relay carried the whole answer"
    );
    stop.store(true, Ordering::Relaxed);
    let _ = std::net::TcpStream::connect(addr);
    for t in threads {
        let _ = t.join();
    }
    let produced = execs.load(Ordering::Relaxed);
    // Let the daemon drain what is queued, then read the counters.
    m.settle(&["edgewatch_events_total{kind=\"exec\"}"]);
    let metrics = m.metrics();
    for l in metrics.lines().filter(|l| {
        (l.starts_with("edgewatch_kernel_events_lost_total")
            || l.starts_with("edgewatch_kernel_errors_total")
            || l.starts_with("edgewatch_net_flow_table_evictions_total"))
            && !l.ends_with(" 0")
    }) {
        eprintln!("flood: {l}");
    }
    let lost = m
        .metric("edgewatch_kernel_events_lost_total{kind=\"exec\"}")
        .expect("exec loss counter");
    assert!(
        m.metric("edgewatch_build_info{version=\"0.1.0\"}")
            .is_some(),
        "still serving metrics"
    );
    let socat_pid = u64::from(attacks.socat.0.id());
    let mut written = 0u64;
    let mut seen = Seen::default();
    let file = std::fs::File::open(&events).expect("event file");
    for line in std::io::BufReader::new(file).lines() {
        let line = line.expect("line");
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
            panic!("a line that is not JSON: {line}");
        };
        if v.kind() == "exec" && v.argv().get(1) == Some(&marker) {
            written += 1;
        }
        seen.note(&v, &attacks);
    }
    eprintln!("flood: {produced} execs, {written} written, {lost} exec records lost, peak RSS {peak_rss_kib} KiB");
    assert!(produced > 1000, "the storm ran: {produced} execs");
    assert!(
        written <= produced,
        "{written} written > {produced} produced"
    );
    assert!(
        written + lost as u64 >= produced,
        "{produced} execs: {written} written + {lost} counted lost leaves some unaccounted"
    );
    assert!(
        seen.dropped,
        "the drop-and-run during the flood raised no alert"
    );
    assert!(
        seen.web_shell,
        "the web shell during the flood raised no EW-PROC-001"
    );
    assert_eq!(
        seen.relay_pid,
        Some(socat_pid),
        "the relay event names socat"
    );
    assert!(
        seen.relay_alert_pids.contains(&socat_pid),
        "the relay during the flood raised no EW-RELAY-001 for socat"
    );
    assert!(
        peak_rss_kib < 256 * 1024,
        "memory not bounded: {peak_rss_kib} KiB"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
