//! Socket capture end to end with real servers and clients: exact
//! 5-tuples, the owning process on both ends, direction and byte counts.

use std::{
    io::Write as _,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::Duration,
};

use serde_json::Value;
use tests::{
    assert_within_1pct, free_port, is_root, scaled, unique, wait_listening, EventExt as _, Killed,
    Monitor, NetnsPair,
};

const CONFIG: &str =
    "[output]\nseed_events = false\n[network]\nseed_events = false\nsweep_secs = 1\n";
const FILE_BYTES: usize = 200_000;

/// A directory with one file of FILE_BYTES bytes, for the HTTP server.
fn web_root() -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("edgewatch-web-{}-{}", std::process::id(), unique()));
    std::fs::create_dir_all(&dir).expect("web root");
    let mut f = std::fs::File::create(dir.join("blob")).expect("blob");
    f.write_all(&vec![b'z'; FILE_BYTES]).expect("write blob");
    dir
}

/// `python3 -m http.server` bound to `bind`:`port`, optionally in a netns.
fn http_server(ns: Option<&str>, bind: &str, port: u16, root: &PathBuf) -> Child {
    let mut c = match ns {
        Some(ns) => NetnsPair::command(ns, "/usr/bin/python3"),
        None => Command::new("/usr/bin/python3"),
    };
    c.args([
        "-m",
        "http.server",
        "--bind",
        bind,
        &port.to_string(),
        "--directory",
    ])
    .arg(root)
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .spawn()
    .expect("start http.server")
}

fn pid_of(child: &Child) -> u64 {
    u64::from(child.id())
}

fn endpoint(v: &Value) -> (String, u64) {
    (
        v["addr"].as_str().unwrap_or_default().to_owned(),
        v["port"].as_u64().unwrap_or_default(),
    )
}

/// Downloads the blob with curl and checks both ends of the connection.
fn check_http(
    m: &Monitor,
    server_pid: u64,
    client_ns: Option<&str>,
    host: &str,
    port: u16,
    netns: Option<(u64, u64)>,
) {
    let url_host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_owned()
    };
    let url = format!("http://{url_host}:{port}/blob");
    let mut curl = match client_ns {
        Some(ns) => NetnsPair::command(ns, "/usr/bin/curl"),
        None => Command::new("/usr/bin/curl"),
    };
    let out = curl
        .args([
            "-sS",
            "--noproxy",
            "*",
            "-o",
            "/dev/null",
            "-w",
            "%{size_download}",
            &url,
        ])
        .output()
        .expect("run curl");
    assert!(
        out.status.success(),
        "curl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), FILE_BYTES.to_string());

    let client = m.expect_event("client connect_result", |v| {
        v.kind() == "connect_result"
            && v["remote"]["port"] == port
            && v["process"]["argv"]
                .as_array()
                .is_some_and(|a| a.iter().any(|x| x == url.as_str()))
    });
    assert_eq!(client["result"], "established");
    assert_eq!(client["direction"], "outbound");
    assert_eq!(client["proto"], "tcp");
    assert_eq!(client["remote"]["addr"], host);
    let curl_pid = client["process"]["pid"].as_u64().expect("curl pid");
    let (caddr, cport) = endpoint(&client["local"]);
    assert_ne!(cport, 0);

    let server = m.expect_event("server accept", |v| {
        v.kind() == "accept" && v["remote"]["port"] == cport && v["local"]["port"] == port
    });
    assert_eq!(server["process"]["pid"], server_pid);
    assert_eq!(server["process"]["exe"], "/usr/bin/python3.11");
    assert_eq!(server["direction"], "inbound");
    assert_eq!(server["remote"]["addr"], caddr.as_str());
    assert_eq!(server["local"]["addr"], host);
    assert_eq!(server["peer_process"]["pid"], curl_pid);

    let client_close = m.expect_event("client close", |v| {
        v.kind() == "close" && v["socket"] == client["socket"]
    });
    let server_close = m.expect_event("server close", |v| {
        v.kind() == "close" && v["socket"] == server["socket"]
    });
    for (close, start) in [(&client_close, &client), (&server_close, &server)] {
        assert_eq!(
            close["local"], start["local"],
            "close names the same 5-tuple"
        );
        assert_eq!(close["remote"], start["remote"]);
        assert_eq!(close["direction"], start["direction"]);
        assert_eq!(close["process"]["pid"], start["process"]["pid"]);
        assert!(close["duration_ms"].is_u64());
    }
    let body = FILE_BYTES as u64;
    assert_within_1pct(
        "client bytes_received",
        client_close["bytes_received"].as_u64().unwrap_or(0),
        body,
    );
    assert_within_1pct(
        "server bytes_sent",
        server_close["bytes_sent"].as_u64().unwrap_or(0),
        body,
    );
    // The request went the other way: the same bytes on both ends.
    assert_eq!(client_close["bytes_sent"], server_close["bytes_received"]);
    assert_eq!(client_close["bytes_received"], server_close["bytes_sent"]);
    if let Some((client_netns, server_netns)) = netns {
        assert_eq!(client["netns"], client_netns);
        assert_eq!(server["netns"], server_netns);
    }
}

#[test]
fn tcp_ipv4_loopback_both_ends() {
    if !is_root("tcp_ipv4_loopback_both_ends") {
        return;
    }
    let m = Monitor::start_with(CONFIG);
    let root = web_root();
    let port = free_port();
    let server = Killed(http_server(None, "127.0.0.1", port, &root));
    wait_listening(&format!("127.0.0.1:{port}"));
    check_http(&m, pid_of(&server.0), None, "127.0.0.1", port, None);
    let server_pid = pid_of(&server.0);
    let listen = m.expect_event("listen", |v| {
        v.kind() == "listen" && v["local"]["port"] == port && v["process"]["pid"] == server_pid
    });
    assert_eq!(listen["local"]["addr"], "127.0.0.1");
    let _ = std::fs::remove_dir_all(root);
}

#[test]
fn tcp_ipv6_loopback_both_ends() {
    if !is_root("tcp_ipv6_loopback_both_ends") {
        return;
    }
    let m = Monitor::start_with(CONFIG);
    let root = web_root();
    let port = free_port();
    let server = Killed(http_server(None, "::1", port, &root));
    wait_listening(&format!("[::1]:{port}"));
    check_http(&m, pid_of(&server.0), None, "::1", port, None);
    let _ = std::fs::remove_dir_all(root);
}

#[test]
fn tcp_between_namespaces_both_ends() {
    if !is_root("tcp_between_namespaces_both_ends") {
        return;
    }
    let m = Monitor::start_with(CONFIG);
    let ns = NetnsPair::new();
    let root = web_root();
    let port = 8080;
    for host in [NetnsPair::B4, NetnsPair::B6] {
        let bind = if host.contains(':') { "::" } else { "0.0.0.0" };
        let server = Killed(http_server(Some(&ns.b), bind, port, &root));
        let probe = if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        // Wait from inside namespace a, where the server is reachable.
        let deadline = std::time::Instant::now() + scaled(Duration::from_secs(10));
        while !NetnsPair::command(&ns.a, "/usr/bin/curl")
            .args(["-s", "-o", "/dev/null", &format!("http://{probe}/")])
            .status()
            .expect("curl")
            .success()
        {
            assert!(
                std::time::Instant::now() < deadline,
                "server in {} not reachable",
                ns.b
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        check_http(
            &m,
            pid_of(&server.0),
            Some(&ns.a),
            host,
            port,
            Some((NetnsPair::inode(&ns.a), NetnsPair::inode(&ns.b))),
        );
    }
    let _ = std::fs::remove_dir_all(root);
}

/// socat relays a file over UDP; both ends' flows are checked.
fn check_udp(
    m: &Monitor,
    server_ns: Option<&str>,
    client_ns: Option<&str>,
    listen: &str,
    target: &str,
    host: &str,
    port: u16,
) {
    let out_file =
        std::env::temp_dir().join(format!("edgewatch-udp-{}-{}", std::process::id(), unique()));
    let mut server_cmd = match server_ns {
        Some(ns) => NetnsPair::command(ns, "socat"),
        None => Command::new("socat"),
    };
    let server = Killed(
        server_cmd
            .args(["-u", listen, &format!("CREATE:{}", out_file.display())])
            .spawn()
            .expect("start socat server"),
    );
    std::thread::sleep(scaled(Duration::from_millis(300)));
    // 40 datagrams of 1,000 bytes.
    let payload = vec![b'u'; 40_000];
    let mut client_cmd = match client_ns {
        Some(ns) => NetnsPair::command(ns, "socat"),
        None => Command::new("socat"),
    };
    let mut client = client_cmd
        .args(["-u", "-b", "1000", "STDIN", target])
        .stdin(Stdio::piped())
        .spawn()
        .expect("start socat client");
    client
        .stdin
        .take()
        .expect("stdin")
        .write_all(&payload)
        .expect("send");
    client.wait().expect("client");
    let client_pid = pid_of(&client);
    let first_out = m.expect_event("client udp_flow", |v| {
        v.kind() == "udp_flow" && v["process"]["pid"] == client_pid && v["remote"]["port"] == port
    });
    assert_eq!(first_out["direction"], "outbound");
    assert_eq!(first_out["remote"]["addr"], host);
    assert_eq!(first_out["process"]["exe"], "/usr/bin/socat");
    let (caddr, cport) = endpoint(&first_out["local"]);
    let first_in = m.expect_event("server udp_flow", |v| {
        v.kind() == "udp_flow" && v["remote"]["port"] == cport && v["local"]["port"] == port
    });
    assert_eq!(first_in["direction"], "inbound");
    assert_eq!(first_in["process"]["pid"], pid_of(&server.0));
    assert_eq!(first_in["remote"]["addr"], caddr.as_str());
    // The client's socket closes when socat exits.
    let client_close = m.expect_event("client udp close", |v| {
        v.kind() == "close" && v["socket"] == first_out["socket"]
    });
    assert_eq!(client_close["reason"], "released");
    assert_within_1pct(
        "udp bytes_sent",
        client_close["bytes_sent"].as_u64().unwrap_or(0),
        40_000,
    );
    assert_eq!(client_close["packets_sent"], 40);
    drop(server);
    let server_close = m.expect_event("server udp close", |v| {
        v.kind() == "close" && v["socket"] == first_in["socket"]
    });
    assert_within_1pct(
        "udp bytes_received",
        server_close["bytes_received"].as_u64().unwrap_or(0),
        40_000,
    );
    let _ = std::fs::remove_file(out_file);
}

#[test]
fn udp_ipv4_and_ipv6_loopback_both_ends() {
    if !is_root("udp_ipv4_and_ipv6_loopback_both_ends") {
        return;
    }
    let m = Monitor::start_with(CONFIG);
    let port = free_port();
    check_udp(
        &m,
        None,
        None,
        &format!("UDP4-RECV:{port},bind=127.0.0.1"),
        &format!("UDP4-SENDTO:127.0.0.1:{port}"),
        "127.0.0.1",
        port,
    );
    let port = free_port();
    check_udp(
        &m,
        None,
        None,
        &format!("UDP6-RECV:{port},bind=[::1]"),
        &format!("UDP6-SENDTO:[::1]:{port}"),
        "::1",
        port,
    );
}

#[test]
fn udp_between_namespaces_both_ends() {
    if !is_root("udp_between_namespaces_both_ends") {
        return;
    }
    let m = Monitor::start_with(CONFIG);
    let ns = NetnsPair::new();
    check_udp(
        &m,
        Some(&ns.b),
        Some(&ns.a),
        "UDP4-RECV:5353",
        &format!("UDP4-SENDTO:{}:5353", NetnsPair::B4),
        NetnsPair::B4,
        5353,
    );
    check_udp(
        &m,
        Some(&ns.b),
        Some(&ns.a),
        "UDP6-RECV:5354",
        &format!("UDP6-SENDTO:[{}]:5354", NetnsPair::B6),
        NetnsPair::B6,
        5354,
    );
}

#[test]
fn refused_and_timed_out_connects() {
    if !is_root("refused_and_timed_out_connects") {
        return;
    }
    let m = Monitor::start_with(CONFIG);
    let closed = free_port();
    let err = std::net::TcpStream::connect(("127.0.0.1", closed)).expect_err("nothing listens");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused);
    let ev = m.expect_event("refused", |v| {
        v.kind() == "connect_result" && v["remote"]["port"] == closed
    });
    assert_eq!(ev["result"], "refused");
    assert_eq!(ev["errno"], libc::ECONNREFUSED);
    assert_eq!(ev["process"]["pid"], std::process::id());

    // A listener that never accepts, with its backlog full, drops SYNs:
    // a connect with one SYN retry times out in about three seconds.
    let script = r#"
import socket, sys
port = int(sys.argv[1])
srv = socket.socket(); srv.bind(("127.0.0.1", port)); srv.listen(0)
held = []
for _ in range(4):
    c = socket.socket(); c.setblocking(False)
    try: c.connect(("127.0.0.1", port))
    except BlockingIOError: pass
    held.append(c)
import time; time.sleep(0.5)
c = socket.socket(); c.setsockopt(socket.IPPROTO_TCP, socket.TCP_SYNCNT, 1)
try:
    c.connect(("127.0.0.1", port)); print("connected")
except OSError as e:
    print(e.errno)
"#;
    let port = free_port();
    let out = Command::new("/usr/bin/python3")
        .args(["-c", script, &port.to_string()])
        .output()
        .expect("python");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        libc::ETIMEDOUT.to_string()
    );
    let ev = m.expect_event("timed out", |v| {
        v.kind() == "connect_result" && v["remote"]["port"] == port && v["result"] == "timed_out"
    });
    assert_eq!(ev["errno"], libc::ETIMEDOUT);
}

#[test]
fn long_lived_flows_are_reported_while_they_last() {
    if !is_root("long_lived_flows_are_reported_while_they_last") {
        return;
    }
    let m = Monitor::start_with(&format!("{CONFIG}flow_update_secs = 2\n"));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let mut client = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    let (server, _) = listener.accept().expect("accept");
    let conn = m.expect_event("connect", |v| {
        v.kind() == "connect_result" && v["remote"]["port"] == port
    });
    // Each chunk shows up in a later update of the same open connection.
    let chunk = vec![b'k'; 10_000];
    let mut last = None;
    for round in 1..=3u64 {
        client.write_all(&chunk).expect("send");
        let update = m.expect_event("flow_update with the new bytes", |v| {
            v.kind() == "flow_update"
                && v["socket"] == conn["socket"]
                && v["bytes_sent"].as_u64().unwrap_or(0) >= round * 10_000
        });
        assert_eq!(update["direction"], "outbound");
        assert_eq!(update["process"]["pid"], std::process::id());
        assert_eq!(update["remote"]["port"], port);
        if let Some(prev) = last.replace(update["ts"].clone()) {
            assert!(
                prev.as_str() < update["ts"].as_str(),
                "updates move forward in time"
            );
        }
    }
    client.write_all(&[b'k'; 20_000]).expect("send");
    drop(client);
    drop(server);
    let close = m.expect_event("close", |v| {
        v.kind() == "close" && v["socket"] == conn["socket"]
    });
    assert_eq!(close["bytes_sent"], 50_000);
}

#[test]
fn connections_open_before_start_are_seeded() {
    if !is_root("connections_open_before_start_are_seeded") {
        return;
    }
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let mut client = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    let (server, _) = listener.accept().expect("accept");
    let cport = client.local_addr().expect("local").port();
    let m = Monitor::start_with("[output]\nseed_events = false\n[network]\nsweep_secs = 1\n");
    let me = std::process::id();
    let seeded = m.expect_event("seeded client", |v| {
        v.kind() == "connection" && v["local"]["port"] == cport && v["remote"]["port"] == port
    });
    assert_eq!(seeded["seeded"], true);
    assert_eq!(seeded["state"], "established");
    assert_eq!(seeded["direction"], "outbound");
    assert_eq!(seeded["process"]["pid"], me);
    assert_eq!(seeded["peer_process"]["pid"], me);
    let listen = m.expect_event("seeded listener", |v| {
        v.kind() == "connection" && v["state"] == "listen" && v["local"]["port"] == port
    });
    assert_eq!(listen["process"]["pid"], me);
    let inbound = m.expect_event("seeded server end", |v| {
        v.kind() == "connection" && v["local"]["port"] == port && v["remote"]["port"] == cport
    });
    assert_eq!(inbound["direction"], "inbound");
    // Bytes after the start are counted and the close names the owner the
    // kernel learnt from the seed.
    client.write_all(&[b'p'; 3000]).expect("send");
    std::thread::sleep(Duration::from_millis(300));
    drop(client);
    drop(server);
    let close = m.expect_event("close of the seeded connection", |v| {
        v.kind() == "close" && v["socket"] == seeded["socket"]
    });
    assert_eq!(close["process"]["pid"], me);
    assert_eq!(close["bytes_sent"], 3000);
    assert_eq!(close["direction"], "outbound");
}
