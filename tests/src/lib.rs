//! Harness for the root-level kernel tests: starts the real monitor binary
//! with a test configuration, collects the JSON lines it writes, and lets a
//! test wait for the event its trigger must produce.
//!
//! The tests need root. Without it each test prints why it skipped and
//! passes; `cargo xtask test` runs them as root.

use std::{
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::TcpStream,
    path::PathBuf,
    process::{Child, Command, ExitStatus, Stdio},
    sync::{Arc, Condvar, Mutex},
    time::{Duration, Instant},
};

use serde_json::Value;

/// How long a test waits for an event before it fails, on this machine.
const EVENT_TIMEOUT: Duration = Duration::from_secs(20);

/// Factor every wait of the tests is stretched by:
/// `EDGEWATCH_TEST_TIMEOUT_SCALE` (a whole number, 1 when unset). Under an
/// emulated CPU (`cargo xtask vm` boots kernels under QEMU's TCG) the same
/// work takes several times longer; the waits are bounds on a stall, never
/// pass/fail timings, so stretching them changes no verdict.
pub fn timeout_scale() -> u32 {
    match std::env::var("EDGEWATCH_TEST_TIMEOUT_SCALE") {
        Ok(v) => v
            .trim()
            .parse()
            .ok()
            .filter(|&n| n >= 1)
            .unwrap_or_else(|| {
                panic!(
                    "EDGEWATCH_TEST_TIMEOUT_SCALE must be a whole number of at least 1, not {v:?}"
                )
            }),
        Err(_) => 1,
    }
}

/// `base` stretched by [`timeout_scale`].
pub fn scaled(base: Duration) -> Duration {
    base * timeout_scale()
}

/// How long a test waits for an event before it fails.
pub fn event_timeout() -> Duration {
    scaled(EVENT_TIMEOUT)
}

/// The monitor binary under test: `EDGEWATCH_MONITOR`, else the release
/// build in this workspace's target directory.
pub fn monitor_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("EDGEWATCH_MONITOR") {
        return PathBuf::from(p);
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let bin = root.join("../target/release/monitor");
    assert!(
        bin.exists(),
        "{} is missing: build it with `cargo build --release -p monitor` or run `cargo xtask test`",
        bin.display()
    );
    bin
}

/// True when running as root; otherwise prints why the test is skipped.
pub fn is_root(test: &str) -> bool {
    // SAFETY: geteuid cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        eprintln!("skipped {test}: the kernel tests need root (run `cargo xtask test` as root)");
    }
    root
}

#[derive(Default)]
struct Seen {
    events: Vec<Value>,
    bad_lines: Vec<String>,
    stderr: Vec<String>,
    ready: Option<String>,
    closed: bool,
}

/// A running monitor.
pub struct Monitor {
    child: Child,
    seen: Arc<(Mutex<Seen>, Condvar)>,
    pub metrics_addr: String,
    _config: tempfile_path::TempPath,
}

mod tempfile_path {
    use std::path::{Path, PathBuf};

    /// A file removed when dropped.
    pub struct TempPath(PathBuf);

    impl TempPath {
        pub fn write(name: &str, text: &str) -> Self {
            let path = std::env::temp_dir().join(format!(
                "edgewatch-test-{}-{}-{name}",
                std::process::id(),
                super::unique()
            ));
            std::fs::write(&path, text).expect("write temp file");
            Self(path)
        }

        pub fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TempPath {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
}

pub use tempfile_path::TempPath;

/// A number unique within this test process.
pub fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// A web application with a command-injection flaw, as on many appliance
/// admin pages: `?host=` goes into a shell command line. Run it as
/// `python3 -c VULNERABLE_APP PORT`; it listens on 127.0.0.1:PORT.
pub const VULNERABLE_APP: &str = r#"
import http.server, subprocess, sys, urllib.parse
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        q = urllib.parse.parse_qs(urllib.parse.urlparse(self.path).query).get("host", ["127.0.0.1"])[0]
        out = subprocess.run("echo ping " + q, shell=True, capture_output=True).stdout
        self.send_response(200); self.end_headers(); self.wfile.write(out)
    def log_message(self, *a): pass
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"#;

/// Base configuration of every test: metrics on a free loopback port.
const BASE_CONFIG: &str = "[metrics]\nlisten = \"127.0.0.1:0\"\n";

impl Monitor {
    /// Starts the monitor and waits until it says it is ready.
    pub fn start() -> Self {
        Self::start_with("")
    }

    /// Starts the monitor with `extra` appended to the base configuration.
    pub fn start_with(extra: &str) -> Self {
        let config = TempPath::write("config.toml", &format!("{BASE_CONFIG}{extra}"));
        let mut child = Command::new(monitor_bin())
            .args(["run", "--config"])
            .arg(config.path())
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn monitor");
        let seen: Arc<(Mutex<Seen>, Condvar)> = Arc::default();
        let stdout = child.stdout.take().expect("stdout");
        let s = seen.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let v: Value = serde_json::from_str(&line).unwrap_or_else(|e| {
                    panic!("monitor wrote a line that is not JSON ({e}): {line}")
                });
                let (m, c) = &*s;
                m.lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .events
                    .push(v);
                c.notify_all();
            }
            let (m, c) = &*s;
            m.lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .closed = true;
            c.notify_all();
        });
        let stderr = child.stderr.take().expect("stderr");
        let s = seen.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let (m, c) = &*s;
                let mut g = m.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                if line.contains("monitor ready") {
                    let addr = line
                        .split_whitespace()
                        .find_map(|f| f.strip_prefix("metrics="))
                        .unwrap_or_default()
                        .to_owned();
                    g.ready = Some(addr);
                }
                g.stderr.push(line);
                c.notify_all();
            }
        });
        let ready_timeout = scaled(Duration::from_secs(30));
        let deadline = Instant::now() + ready_timeout;
        let metrics_addr = {
            let (m, c) = &*seen;
            let mut g = m.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            loop {
                if let Some(addr) = &g.ready {
                    break addr.clone();
                }
                if let Ok(Some(status)) = child.try_wait() {
                    panic!("monitor exited before ready ({status}): {:#?}", g.stderr);
                }
                assert!(
                    Instant::now() < deadline,
                    "monitor not ready in {ready_timeout:?}: {:#?}",
                    g.stderr
                );
                g = c
                    .wait_timeout(g, Duration::from_millis(100))
                    .expect("wait")
                    .0;
            }
        };
        Self {
            child,
            seen,
            metrics_addr,
            _config: config,
        }
    }

    /// Waits for the first event matching `pred` and returns it; fails the
    /// test with the events seen when none arrives in time.
    pub fn expect_event(&self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let timeout = event_timeout();
        self.wait_event(timeout, pred).unwrap_or_else(|| {
            let (m, _) = &*self.seen;
            let g = m.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let tail: Vec<String> = g
                .events
                .iter()
                .rev()
                .take(20)
                .map(Value::to_string)
                .collect();
            panic!(
                "no event {what} within {timeout:?}; last events (newest first):\n{}\nstderr:\n{}",
                tail.join("\n"),
                g.stderr.join("\n")
            )
        })
    }

    /// Waits up to `timeout` for an event matching `pred`.
    pub fn wait_event(&self, timeout: Duration, pred: impl Fn(&Value) -> bool) -> Option<Value> {
        let deadline = Instant::now() + timeout;
        let (m, c) = &*self.seen;
        let mut g = m.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        loop {
            if let Some(v) = g.events.iter().find(|v| pred(v)) {
                return Some(v.clone());
            }
            let now = Instant::now();
            if now >= deadline || g.closed {
                return None;
            }
            g = c
                .wait_timeout(g, deadline - now)
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .0;
        }
    }

    /// All events seen so far that match `pred`.
    pub fn events(&self, pred: impl Fn(&Value) -> bool) -> Vec<Value> {
        let (m, _) = &*self.seen;
        m.lock()
            .expect("lock")
            .events
            .iter()
            .filter(|v| pred(v))
            .cloned()
            .collect()
    }

    /// Stderr lines so far.
    pub fn stderr(&self) -> Vec<String> {
        let (m, _) = &*self.seen;
        m.lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .stderr
            .clone()
    }

    /// The /metrics text.
    pub fn metrics(&self) -> String {
        http_get(&self.metrics_addr, "/metrics")
    }

    /// The value of one metric series, such as `edgewatch_events_total{kind="exec"}`.
    pub fn metric(&self, series: &str) -> Option<f64> {
        let text = self.metrics();
        text.lines()
            .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
    }

    /// Waits until the daemon has caught up with a burst: every series
    /// named stays the same for three seconds running (at most two
    /// minutes, then it goes on). A loaded machine can leave the daemon
    /// seconds behind the kernel, and what is still queued is neither
    /// written nor lost yet.
    pub fn settle(&self, series: &[&str]) {
        let read = || -> Vec<Option<f64>> { series.iter().map(|s| self.metric(s)).collect() };
        let start = std::time::Instant::now();
        let (mut last, mut still) = (read(), 0);
        while still < 3 && start.elapsed() < Duration::from_secs(120) {
            std::thread::sleep(Duration::from_secs(1));
            let now = read();
            still = if now == last { still + 1 } else { 0 };
            last = now;
        }
    }

    /// Whether `probe` attached in this monitor.
    pub fn probe_attached(&self, probe: &str) -> bool {
        self.metric(&format!("edgewatch_probe_attached{{probe=\"{probe}\"}}")) == Some(1.0)
    }

    /// Whether the socket activity probes (`sock_send_length`,
    /// `sock_recv_length`, Linux 6.4+) are attached. On a kernel that has
    /// the tracepoints they must be: a probe the verifier refused fails the
    /// test instead of skipping what depends on it.
    pub fn socket_activity(&self) -> bool {
        let attached = self.probe_attached("net_sock_recv_length")
            && self.probe_attached("net_sock_send_length");
        if kernel_at_least(6, 4) {
            assert!(
                attached,
                "the socket activity probes did not attach on Linux 6.4+: see the monitor's log"
            );
        }
        attached
    }

    /// The monitor's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Stops the monitor with SIGTERM; returns its exit status and every
    /// event it wrote, those written while stopping included.
    pub fn stop_with_events(mut self) -> (ExitStatus, Vec<Value>) {
        let status = self.terminate();
        (status, self.events(|_| true))
    }

    /// Kills the monitor with SIGKILL (no clean stop) and waits for it.
    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Stops the monitor with SIGTERM and returns its exit status.
    pub fn stop(mut self) -> ExitStatus {
        self.terminate()
    }

    fn terminate(&mut self) -> ExitStatus {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let stop_timeout = scaled(Duration::from_secs(30));
        let deadline = Instant::now() + stop_timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                // Give the reader the last lines, then every line must
                // have been whole JSON.
                std::thread::sleep(Duration::from_millis(200));
                let (m, _) = &*self.seen;
                let g = m.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                assert!(
                    g.bad_lines.is_empty(),
                    "lines that are not JSON: {:?}",
                    g.bad_lines
                );
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "monitor did not stop within {stop_timeout:?} of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A plain HTTP/1.0 GET on loopback, returning the body.
pub fn http_get(addr: &str, path: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(scaled(Duration::from_secs(5))))
        .expect("timeout");
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").expect("request");
    let mut resp = String::new();
    s.read_to_string(&mut resp).expect("response");
    resp.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default()
}

/// The ancestry the monitor must report for a child of this process:
/// this process, then its ancestors, as /proc shows them, up to pid 1.
pub fn expected_ancestry_of_child() -> Vec<Value> {
    let mut chain = Vec::new();
    let mut pid = std::process::id();
    while pid != 0 {
        // The monitor reports a deleted executable's path without the
        // " (deleted)" suffix of the /proc link, and flags it instead.
        let exe = std::fs::read_link(format!("/proc/{pid}/exe"))
            .ok()
            .map(|p| {
                let p = p.to_string_lossy();
                p.strip_suffix(" (deleted)").unwrap_or(&p).to_owned()
            });
        chain.push(serde_json::json!({ "pid": pid, "exe": exe }));
        if pid == 1 {
            break;
        }
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
        let after = &stat[stat.rfind(')').expect("comm end") + 2..];
        pid = after
            .split_whitespace()
            .nth(1)
            .and_then(|p| p.parse().ok())
            .expect("ppid");
    }
    chain
}

/// Field accessors that read well in assertions.
pub trait EventExt {
    fn kind(&self) -> &str;
    fn pid(&self) -> u64;
    fn argv(&self) -> Vec<String>;
}

impl EventExt for Value {
    fn kind(&self) -> &str {
        self["kind"].as_str().unwrap_or_default()
    }
    fn pid(&self) -> u64 {
        self["pid"].as_u64().unwrap_or_default()
    }
    fn argv(&self) -> Vec<String> {
        self["argv"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|s| s.as_str().unwrap_or_default().to_owned())
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// Two network namespaces joined by a veth pair, made by the test and
/// removed when dropped. Addresses come from the documentation ranges:
/// `192.0.2.1`/`2001:db8::1` in `a`, `192.0.2.2`/`2001:db8::2` in `b`.
pub struct NetnsPair {
    pub a: String,
    pub b: String,
}

impl NetnsPair {
    pub const A4: &'static str = "192.0.2.1";
    pub const B4: &'static str = "192.0.2.2";
    pub const A6: &'static str = "2001:db8::1";
    pub const B6: &'static str = "2001:db8::2";

    pub fn new() -> Self {
        let tag = format!("{}{}", std::process::id() % 100_000, unique());
        let pair = Self {
            a: format!("ewa{tag}"),
            b: format!("ewb{tag}"),
        };
        ip(&format!("netns add {}", pair.a));
        ip(&format!("netns add {}", pair.b));
        ip(&format!(
            "link add va{tag} netns {} type veth peer name vb{tag} netns {}",
            pair.a, pair.b
        ));
        for (ns, dev, v4, v6) in [
            (&pair.a, format!("va{tag}"), Self::A4, Self::A6),
            (&pair.b, format!("vb{tag}"), Self::B4, Self::B6),
        ] {
            ip(&format!("-n {ns} addr add {v4}/24 dev {dev}"));
            ip(&format!("-n {ns} addr add {v6}/64 dev {dev} nodad"));
            ip(&format!("-n {ns} link set {dev} up"));
            ip(&format!("-n {ns} link set lo up"));
        }
        pair
    }

    /// A command run inside namespace `ns`.
    pub fn command(ns: &str, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", ns, program]);
        c
    }

    /// The inode number of a namespace, as the monitor reports it.
    pub fn inode(ns: &str) -> u64 {
        use std::os::unix::fs::MetadataExt as _;
        std::fs::metadata(format!("/run/netns/{ns}"))
            .expect("netns file")
            .ino()
    }
}

impl Default for NetnsPair {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for NetnsPair {
    fn drop(&mut self) {
        for ns in [&self.a, &self.b] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// A free TCP or UDP port on loopback (bound then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// Prometheus reading `config`, keeping its data in `data`, serving on
/// `addr`; killed when dropped.
pub fn spawn_prometheus(config: &std::path::Path, data: &std::path::Path, addr: &str) -> Killed {
    Killed(
        Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", data.display()))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--log.level=warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start prometheus (scripts/setup.sh installs it)"),
    )
}

/// Polls `f` until it returns Some, failing with `what` after `timeout`.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "{what}: not within {timeout:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Waits until something listens on `addr` (a TCP connect succeeds).
pub fn wait_listening(addr: &str) {
    let deadline = Instant::now() + scaled(Duration::from_secs(10));
    while TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on {addr}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Asserts `got` is within 1% of `want`.
pub fn assert_within_1pct(what: &str, got: u64, want: u64) {
    let diff = got.abs_diff(want);
    assert!(
        diff * 100 <= want,
        "{what}: {got} is not within 1% of {want}"
    );
}

/// Waits until a TCP socket listens on `port` (checked with `ss`, so a
/// listener that serves a single connection is not used up).
pub fn wait_listen_state(port: u16) {
    let deadline = Instant::now() + scaled(Duration::from_secs(10));
    loop {
        let out = Command::new("ss")
            .args(["-Hltn", &format!("sport = :{port}")])
            .output()
            .expect("ss");
        if !out.stdout.is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "nothing listens on port {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A child process killed and reaped when dropped.
pub struct Killed(pub Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Killed {
    pub fn pid(&self) -> u64 {
        u64::from(self.0.id())
    }
}

/// A server with worker processes (nginx with `master_process on`): when
/// dropped it gets SIGTERM, so it stops its workers, then SIGKILL if it is
/// still there after 5 s. SIGKILL alone would orphan the workers.
pub struct Terminated(pub Child);

impl Drop for Terminated {
    fn drop(&mut self) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A TCP server for relay tests, run by python3 with the arguments `PORT
/// UP DOWN BIND`: for each connection, reads UP bytes and answers DOWN.
pub const BULK_TARGET: &str = r#"
import socket, sys, threading
up, down = int(sys.argv[2]), int(sys.argv[3])
s = socket.socket(socket.AF_INET6 if ":" in sys.argv[4] else socket.AF_INET)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[4], int(sys.argv[1]))); s.listen(16)
def serve(c):
    n = 0
    while n < up:
        d = c.recv(65536)
        if not d: break
        n += len(d)
    c.sendall(b"d" * down); c.close()
while True:
    c, _ = s.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"#;

/// Scratch directories made by this test binary, removed when it exits.
static SCRATCH_DIRS: Mutex<Vec<std::path::PathBuf>> = Mutex::new(Vec::new());

/// Removes the scratch directories at exit, unless `EDGEWATCH_KEEP_SCRATCH`
/// is set (to look at a failed test's files).
extern "C" fn remove_scratch_dirs() {
    if std::env::var_os("EDGEWATCH_KEEP_SCRATCH").is_some() {
        return;
    }
    let dirs = SCRATCH_DIRS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    for dir in dirs.iter() {
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// A fresh directory under the temp dir, canonical (symlinks resolved),
/// removed when the test binary exits.
pub fn scratch_dir(name: &str) -> std::path::PathBuf {
    static AT_EXIT: std::sync::Once = std::sync::Once::new();
    AT_EXIT.call_once(|| {
        // SAFETY: registers a plain function with no captured state.
        unsafe { libc::atexit(remove_scratch_dirs) };
    });
    let dir = std::env::temp_dir().join(format!(
        "edgewatch-{name}-{}-{}",
        std::process::id(),
        unique()
    ));
    std::fs::create_dir_all(&dir).expect("create scratch dir");
    let dir = dir.canonicalize().expect("canonical scratch dir");
    SCRATCH_DIRS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .push(dir.clone());
    dir
}

/// A gateway in network namespaces the test makes and removes: `gw` routes
/// between `outside` (an internet host on `wan0`), `target` (another
/// internet host, on `wan1`) and `inside` (a LAN host on `lan0`), with IPv4
/// forwarding on. Internet addresses are documentation ranges; the LAN is
/// private. Nothing is routed out of the namespaces.
pub struct Gateway {
    pub outside: String,
    pub target: String,
    pub gw: String,
    pub inside: String,
}

impl Gateway {
    pub const OUTSIDE: &'static str = "203.0.113.10";
    pub const GW_WAN: &'static str = "203.0.113.1";
    pub const TARGET: &'static str = "198.51.100.20";
    pub const GW_WAN1: &'static str = "198.51.100.1";
    pub const INSIDE: &'static str = "10.77.0.2";
    pub const GW_LAN: &'static str = "10.77.0.1";

    pub fn new() -> Self {
        let tag = format!("{}{}", std::process::id() % 100_000, unique());
        let g = Self {
            outside: format!("ewo{tag}"),
            target: format!("ewt{tag}"),
            gw: format!("ewg{tag}"),
            inside: format!("ewi{tag}"),
        };
        for ns in [&g.outside, &g.target, &g.gw, &g.inside] {
            ip(&format!("netns add {ns}"));
            ip(&format!("-n {ns} link set lo up"));
        }
        for (dev, peer_ns, gw_addr, peer_addr) in [
            ("wan0", &g.outside, "203.0.113.1/24", "203.0.113.10/24"),
            ("wan1", &g.target, "198.51.100.1/24", "198.51.100.20/24"),
            ("lan0", &g.inside, "10.77.0.1/24", "10.77.0.2/24"),
        ] {
            ip(&format!(
                "link add {dev} netns {} type veth peer name eth0 netns {peer_ns}",
                g.gw
            ));
            ip(&format!("-n {} addr add {gw_addr} dev {dev}", g.gw));
            ip(&format!("-n {} link set {dev} up", g.gw));
            ip(&format!("-n {peer_ns} addr add {peer_addr} dev eth0"));
            ip(&format!("-n {peer_ns} link set eth0 up"));
            let via = gw_addr.split('/').next().expect("address");
            ip(&format!("-n {peer_ns} route add default via {via}"));
        }
        ip(&format!(
            "-n {} route add default via {}",
            g.gw,
            Self::OUTSIDE
        ));
        let status = NetnsPair::command(&g.gw, "sysctl")
            .args(["-qw", "net.ipv4.ip_forward=1"])
            .status()
            .expect("sysctl");
        assert!(status.success(), "enable forwarding in {}", g.gw);
        g
    }

    /// The monitor's `[dataplane]` section for this gateway, with `extra`
    /// lines appended.
    pub fn config(&self, extra: &str) -> String {
        format!(
            "[dataplane]\nnetns = \"/run/netns/{}\"\nscan_ms = 200\n\
             interfaces = [{{ name = \"wan0\", role = \"wan\" }}, {{ name = \"wan1\", role = \"wan\" }}, {{ name = \"lan0\", role = \"lan\" }}]\n{extra}\n",
            self.gw
        )
    }

    /// Runs `args` (a command line) in namespace `ns`; panics when it fails.
    pub fn run(ns: &str, args: &str) {
        let out = Command::new("ip")
            .args(["netns", "exec", ns])
            .args(args.split_whitespace())
            .output()
            .expect("spawn");
        assert!(
            out.status.success(),
            "{args} in {ns} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Waits until a TCP socket listens on `port` in namespace `ns`.
    pub fn wait_listen(ns: &str, port: u16) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let out = NetnsPair::command(ns, "ss")
                .args(["-Hltn", &format!("sport = :{port}")])
                .output()
                .expect("ss");
            if !out.stdout.is_empty() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "nothing listens on {ns} port {port}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Default for Gateway {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        for ns in [&self.outside, &self.target, &self.gw, &self.inside] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

fn ip(args: &str) {
    let status = Command::new("ip")
        .args(args.split_whitespace())
        .status()
        .expect("run ip");
    assert!(status.success(), "ip {args} failed");
}

/// An sshd of the test's own, with a fresh host key and a client key pair:
/// on 127.0.0.1 and a free port ([`Sshd::start`]), or on an address in a
/// namespace ([`Sshd::start_in`]).
pub struct Sshd {
    _child: Killed,
    pub port: u16,
    pub key: PathBuf,
    dir: PathBuf,
}

impl Sshd {
    pub fn start() -> Self {
        Self::start_in(None, "127.0.0.1", free_port())
    }

    /// An sshd in namespace `ns` (the test's own when `None`), listening
    /// on `addr:port`, allowing every kind of forwarding.
    pub fn start_in(ns: Option<&str>, addr: &str, port: u16) -> Self {
        let dir = scratch_dir("sshd");
        let keygen = |path: &std::path::Path| {
            let ok = Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-f"])
                .arg(path)
                .status()
                .expect("ssh-keygen")
                .success();
            assert!(ok, "ssh-keygen");
        };
        keygen(&dir.join("host"));
        keygen(&dir.join("user"));
        std::fs::copy(dir.join("user.pub"), dir.join("authorized_keys")).expect("authorized_keys");
        std::fs::create_dir_all("/run/sshd").expect("privsep dir");
        std::fs::write(
            dir.join("sshd_config"),
            format!(
                "Port {port}\nListenAddress {addr}\nHostKey {d}/host\nAuthorizedKeysFile {d}/authorized_keys\nPermitRootLogin prohibit-password\nPasswordAuthentication no\nUsePAM no\nStrictModes no\nAllowTcpForwarding yes\nGatewayPorts clientspecified\nPidFile {d}/sshd.pid\n",
                d = dir.display()
            ),
        )
        .expect("sshd_config");
        let mut cmd = match ns {
            Some(ns) => NetnsPair::command(ns, "/usr/sbin/sshd"),
            None => Command::new("/usr/sbin/sshd"),
        };
        let child = Killed(
            cmd.args(["-D", "-e", "-f"])
                .arg(dir.join("sshd_config"))
                .stderr(Stdio::null())
                .spawn()
                .expect("sshd"),
        );
        match ns {
            Some(ns) => Gateway::wait_listen(ns, port),
            None => wait_listening(&format!("{addr}:{port}")),
        }
        Self {
            _child: child,
            port,
            key: dir.join("user"),
            dir,
        }
    }

    /// An `ssh` client command with this server's key, no host-key prompts.
    pub fn ssh(&self, args: &[&str]) -> Command {
        self.ssh_in(None, args)
    }

    /// The same, run in namespace `ns`.
    pub fn ssh_in(&self, ns: Option<&str>, args: &[&str]) -> Command {
        let mut c = match ns {
            Some(ns) => NetnsPair::command(ns, "ssh"),
            None => Command::new("ssh"),
        };
        c.args(["-i"])
            .arg(&self.key)
            .args([
                "-p",
                &self.port.to_string(),
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                "UserKnownHostsFile=/dev/null",
                "-o",
                "LogLevel=ERROR",
                "-o",
                "BatchMode=yes",
            ])
            .args(args)
            .stdin(Stdio::null());
        c
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Whether the running kernel is at least `major.minor`.
pub fn kernel_at_least(major: u32, minor: u32) -> bool {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut parts = release
        .trim()
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|p| p.parse::<u32>().ok());
    let (a, b) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    (a, b) >= (major, minor)
}
