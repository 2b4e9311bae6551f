//! Faults: the monitor killed with SIGKILL and restarted mid-flow (state
//! rebuilt from /proc and sock_diag, a relay spanning the restart still
//! caught, alerts already sent not sent again), and the disk holding the
//! event file full (errors counted, the monitor runs on and recovers), and
//! the reader of the event stream stalled (events dropped and counted,
//! detection goes on).

use std::{
    io::{BufRead as _, BufReader, Write as _},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;
use tests::{free_port, is_root, scratch_dir, wait_listen_state, EventExt as _, Killed, Monitor};

fn config(state: &std::path::Path) -> String {
    format!(
        "[output]\nkinds = [\"process\", \"connection\", \"exec\", \"relay\", \"alert\"]\n[detect]\nstate_file = \"{}\"\n",
        state.display()
    )
}

/// A shell that runs `program` each time a line arrives on its stdin. It
/// is detached (`setsid -f`) so that it is its own lineage: below this test
/// binary, which listens, it would share the lineage of everything else
/// the tests start (another test's monitor run from /tmp would open the
/// same rule's window first). It ends when its stdin closes.
fn trigger_shell(program: &std::path::Path) -> Killed {
    let child = Command::new("setsid")
        .args([
            "-f",
            "bash",
            "-c",
            &format!("while read line; do {}; done", program.display()),
        ])
        .stdin(Stdio::piped())
        .spawn()
        .expect("setsid bash");
    Killed(child)
}

fn trigger(shell: &mut Killed) {
    let stdin = shell.0.stdin.as_mut().expect("stdin");
    stdin.write_all(b"go\n").expect("trigger");
    stdin.flush().expect("flush");
}

#[test]
fn a_restart_rebuilds_its_state_and_does_not_repeat_alerts() {
    if !is_root("a_restart_rebuilds_its_state_and_does_not_repeat_alerts") {
        return;
    }
    let dir = scratch_dir("faults-restart");
    let state = dir.join("alert-windows.json");
    let dropped = dir.join("dropped-tool");
    std::fs::copy("/usr/bin/true", &dropped).expect("drop a program in /tmp");
    let exe = dropped.display().to_string();
    // An open connection, to be found again by sock_diag after the kill.
    let port = free_port();
    let listener = std::net::TcpListener::bind(("127.0.0.1", port)).expect("listen");
    let _client = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    let _server = listener.accept().expect("accept");

    let mut shell = trigger_shell(&dropped);
    let a = Monitor::start_with(&config(&state));
    // Triggered again every few seconds until the alert is there (repeats
    // fold into it), so a loaded machine's slow first run does not decide.
    let first_alert = |v: &Value| {
        v["kind"] == "alert" && v["rule"] == "EW-PROC-003" && v["process"]["exe"] == exe.as_str()
    };
    let mut alerted = None;
    for _ in 0..6 {
        trigger(&mut shell);
        alerted = a.wait_event(Duration::from_secs(5), first_alert);
        if alerted.is_some() {
            break;
        }
    }
    assert!(
        alerted.is_some(),
        "no EW-PROC-003 alert for {exe}; its execs seen: {:?}",
        a.events(|v| v.kind() == "exec" && v["exe"] == exe.as_str())
    );
    assert!(state.exists(), "the alert state was saved");
    a.kill9();

    let b = Monitor::start_with(&config(&state));
    b.expect_event("the shell, seeded from /proc", |v| {
        v.kind() == "process" && v.argv().iter().any(|a| a.contains(exe.as_str()))
    });
    b.expect_event("the connection, seeded from sock_diag", |v| {
        v.kind() == "connection" && v["local"]["port"] == port
    });
    trigger(&mut shell);
    b.expect_event("the second exec", |v| {
        v.kind() == "exec" && v["exe"] == exe.as_str()
    });
    // The match is folded into the alert sent before the kill.
    let deadline = Instant::now() + Duration::from_secs(10);
    while b
        .metric("edgewatch_alerts_deduplicated_total{rule=\"EW-PROC-003\"}")
        .unwrap_or_default()
        < 1.0
    {
        assert!(
            Instant::now() < deadline,
            "the second match was not deduplicated"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let again = b.events(|v| {
        v["kind"] == "alert" && v["rule"] == "EW-PROC-003" && v["process"]["exe"] == exe.as_str()
    });
    assert!(
        again.is_empty(),
        "alert sent again after the restart: {again:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A target that reads `up` bytes then answers `down`.
const TARGET: &str = r#"
import socket, sys
up, down = int(sys.argv[2]), int(sys.argv[3])
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen(4)
c, _ = s.accept(); n = 0
while n < up:
    d = c.recv(65536)
    if not d: break
    n += len(d)
c.sendall(b"d" * down); c.close()
"#;

/// A client that sends a little, waits for a line on stdin, then sends
/// the rest and reads the answer.
const CLIENT: &str = r#"
import socket, sys
c = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=30)
first, up, down = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
c.sendall(b"u" * first)
print("connected", flush=True)
sys.stdin.readline()
c.sendall(b"u" * (up - first))
n = 0
while n < down:
    d = c.recv(65536)
    if not d: break
    n += len(d)
print(n, flush=True)
"#;

#[test]
fn a_relay_spanning_a_restart_is_still_detected() {
    if !is_root("a_relay_spanning_a_restart_is_still_detected") {
        return;
    }
    let dir = scratch_dir("faults-relay");
    let (relay_port, target_port) = (free_port(), free_port());
    let _target = Killed(
        Command::new("/usr/bin/python3")
            .args(["-c", TARGET, &target_port.to_string(), "60000", "100000"])
            .spawn()
            .expect("target"),
    );
    wait_listen_state(target_port);
    let relay = Killed(
        Command::new("socat")
            .args([
                &format!("TCP-LISTEN:{relay_port},bind=127.0.0.1,reuseaddr"),
                &format!("TCP:127.0.0.1:{target_port}"),
            ])
            .spawn()
            .expect("socat"),
    );
    wait_listen_state(relay_port);
    let a = Monitor::start_with(&config(&dir.join("state.json")));
    let mut client = Killed(
        Command::new("/usr/bin/python3")
            .args([
                "-c",
                CLIENT,
                &relay_port.to_string(),
                "2000",
                "60000",
                "100000",
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("client"),
    );
    let mut out = BufReader::new(client.0.stdout.take().expect("stdout"));
    let mut line = String::new();
    out.read_line(&mut line).expect("client connected");
    std::thread::sleep(Duration::from_millis(500));
    a.kill9();

    let b = Monitor::start_with(&config(&dir.join("state.json")));
    client
        .0
        .stdin
        .as_mut()
        .expect("stdin")
        .write_all(b"go\n")
        .expect("go");
    line.clear();
    out.read_line(&mut line).expect("client done");
    assert_eq!(line.trim(), "100000", "the client got the whole answer");
    let relay_pid = relay.pid();
    let r = b.expect_event("the relay, after the restart", |v| {
        v.kind() == "relay" && v["process"]["pid"] == relay_pid
    });
    assert!(
        ["exchange", "bulk"].contains(&r["method"].as_str().unwrap_or("")),
        "{r}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_full_disk_under_the_event_file_is_counted_and_recovered_from() {
    if !is_root("a_full_disk_under_the_event_file_is_counted_and_recovered_from") {
        return;
    }
    let dir = scratch_dir("faults-full");
    let mnt = dir.join("small");
    std::fs::create_dir_all(&mnt).expect("mount point");
    let status = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=256k", "ewfull"])
        .arg(&mnt)
        .status()
        .expect("mount");
    assert!(status.success(), "mount a small tmpfs");
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(mnt.clone());
    let file = mnt.join("events.jsonl");
    let m = Monitor::start_with(&format!(
        "[output]\nseed_events = false\nfile = \"{}\"\n[network]\nseed_events = false\n",
        file.display()
    ));
    // Fill the disk.
    let filler = mnt.join("filler");
    let _ = Command::new("dd")
        .args(["if=/dev/zero", "bs=4k", "count=1000"])
        .arg(format!("of={}", filler.display()))
        .stderr(Stdio::null())
        .status();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut n = 0;
    while m
        .metric("edgewatch_output_errors_total{sink=\"file\"}")
        .unwrap_or_default()
        < 1.0
    {
        assert!(Instant::now() < deadline, "a full disk was never counted");
        let _ = Command::new("/usr/bin/true")
            .arg(format!("ew-fill-{n}"))
            .status();
        n += 1;
    }
    // Still up, still writing to stdout.
    let marker = format!("ew-after-full-{}", std::process::id());
    let _ = Command::new("/usr/bin/true").arg(&marker).status();
    m.expect_event("an event while the disk is full", |v| {
        v.argv().contains(&marker)
    });
    // Space again: the file sink recovers.
    std::fs::remove_file(&filler).expect("free the disk");
    let marker = format!("ew-recovered-{}", std::process::id());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let _ = Command::new("/usr/bin/true").arg(&marker).status();
        std::thread::sleep(Duration::from_millis(500));
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        if text
            .lines()
            .any(|l| serde_json::from_str::<Value>(l).is_ok_and(|v| v.argv().contains(&marker)))
        {
            break;
        }
        assert!(Instant::now() < deadline, "the file sink did not recover");
    }
    drop(m);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The event stream's reader stops reading (a pipe nobody drains, as a
/// stuck journald): lines are dropped and counted, and detection goes on
/// (a rule still raises its alert, counted in the metrics).
#[test]
fn a_stalled_event_reader_costs_events_not_detection() {
    if !is_root("a_stalled_event_reader_costs_events_not_detection") {
        return;
    }
    let dir = scratch_dir("faults-stall");
    let fifo = dir.join("events.fifo");
    let status = Command::new("mkfifo").arg(&fifo).status().expect("mkfifo");
    assert!(status.success());
    // A reader that holds the pipe open and never reads.
    use std::os::unix::fs::OpenOptionsExt as _;
    let _reader = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&fifo)
        .expect("open the fifo for reading");
    let m = Monitor::start_with(&format!(
        "[output]\nstdout = false\nfile = \"{}\"\nseed_events = false\n[network]\nseed_events = false\n",
        fifo.display()
    ));
    let long = "x".repeat(2000);
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut n = 0;
    while m
        .metric("edgewatch_output_dropped_total{kind=\"exec\"}")
        .unwrap_or_default()
        < 1.0
    {
        assert!(Instant::now() < deadline, "no drop counted after {n} execs");
        for _ in 0..50 {
            let _ = Command::new("/usr/bin/true").arg(&long).status();
            n += 1;
        }
    }
    // Detection goes on: a program run from /tmp raises EW-PROC-003.
    let series = "edgewatch_alerts_total{rule=\"EW-PROC-003\",severity=\"medium\"}";
    let before = m.metric(series).unwrap_or_default();
    let copy = dir.join("stall-probe");
    std::fs::copy("/usr/bin/true", &copy).expect("copy");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let _ = Command::new("setsid").arg("-f").arg(&copy).status();
        std::thread::sleep(Duration::from_millis(500));
        if m.metric(series).unwrap_or_default() > before {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no alert while the event reader is stalled: detection froze"
        );
    }
    drop(m);
    let _ = std::fs::remove_dir_all(&dir);
}
