//! Relay detection with the real tools: port forwards, SOCKS and HTTP
//! CONNECT proxies, SSH forwarding, a renamed relay in /tmp, a two-hop
//! chain; and the look-alikes that must stay quiet.

use std::{
    process::{Command, Stdio},
    time::Duration,
};

use serde_json::Value;
use tests::{
    free_port, is_root, scaled, unique, wait_listen_state, wait_listening, EventExt as _, Killed,
    Monitor, NetnsPair, Sshd, BULK_TARGET,
};

const CONFIG: &str = "[output]\nseed_events = false\nkinds = [\"relay\", \"alert\", \"exec\", \"close\"]\n[network]\nseed_events = false\n";

/// Bytes the client sends through the relay, and the target sends back:
/// asymmetric, and over the 16 KiB volume each way.
const UP: usize = 40_000;
const DOWN: usize = 100_000;

/// The client: connects (directly, or through SOCKS4/5 or HTTP CONNECT),
/// sends UP bytes and reads DOWN bytes.
const CLIENT: &str = r#"
import socket, struct, sys
mode, phost, pport, thost, tport, up, down = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], int(sys.argv[5]), int(sys.argv[6]), int(sys.argv[7])
c = socket.create_connection((phost, pport), timeout=20)
def exact(n):
    b = b""
    while len(b) < n:
        d = c.recv(n - len(b))
        if not d: raise SystemExit("closed during handshake")
        b += d
    return b
if mode == "socks5":
    c.sendall(b"\x05\x01\x00"); assert exact(2) == b"\x05\x00"
    c.sendall(b"\x05\x01\x00\x01" + socket.inet_aton(thost) + struct.pack("!H", tport))
    r = exact(4); exact(6 if r[3] == 1 else 18)
elif mode == "socks4":
    c.sendall(b"\x04\x01" + struct.pack("!H", tport) + socket.inet_aton(thost) + b"u\x00")
    assert exact(8)[1] == 0x5a
elif mode == "socks4a-raw":
    # A SOCKS4a request (ip 0.0.0.1, then the host name) sent through a
    # plain forward: only its first bytes matter to the fingerprint.
    c.sendall(b"\x04\x01" + struct.pack("!H", tport) + b"\x00\x00\x00\x01" + b"u\x00" + thost.encode() + b"\x00")
elif mode == "connect":
    c.sendall(("CONNECT %s:%d HTTP/1.1\r\nHost: %s:%d\r\n\r\n" % (thost, tport, thost, tport)).encode())
    h = b""
    while not h.endswith(b"\r\n\r\n"): h += exact(1)
    assert b" 200" in h.split(b"\r\n")[0], h
c.sendall(b"u" * up)
n = 0
while n < down:
    d = c.recv(65536)
    if not d: break
    n += len(d)
print(n)
"#;

fn target(ns: Option<&str>, bind: &str, port: u16) -> Killed {
    let mut c = match ns {
        Some(ns) => NetnsPair::command(ns, "/usr/bin/python3"),
        None => Command::new("/usr/bin/python3"),
    };
    Killed(
        c.args([
            "-c",
            BULK_TARGET,
            &port.to_string(),
            &UP.to_string(),
            &DOWN.to_string(),
            bind,
        ])
        .spawn()
        .expect("target"),
    )
}

fn client(ns: Option<&str>, mode: &str, proxy: (&str, u16), target: (&str, u16)) {
    let mut c = match ns {
        Some(ns) => NetnsPair::command(ns, "/usr/bin/python3"),
        None => Command::new("/usr/bin/python3"),
    };
    let out = c
        .args([
            "-c",
            CLIENT,
            mode,
            proxy.0,
            &proxy.1.to_string(),
            target.0,
            &target.1.to_string(),
            &UP.to_string(),
            &DOWN.to_string(),
        ])
        .output()
        .expect("client");
    assert!(
        out.status.success(),
        "client: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        DOWN.to_string()
    );
}

fn spawn(program: &str, args: &[&str]) -> Killed {
    Killed(
        Command::new(program)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect(program),
    )
}

/// Checks a relay event and the legs it names. The event is a snapshot
/// taken when the relay was recognised, possibly while bytes were still
/// moving, so its counts must balance (what one leg received the other
/// sent) and stay within the totals; the exact totals are checked on the
/// `close` event of each leg: the target leg carried UP out and DOWN in,
/// the client leg the reverse (plus a proxy handshake).
fn check_relay(m: &Monitor, relay: &Value, target_port: u16) {
    let legs = relay["legs"].as_array().expect("legs");
    assert_eq!(legs.len(), 2);
    let (to_target, from_client) = if legs[0]["remote"]["port"] == target_port {
        (&legs[0], &legs[1])
    } else {
        (&legs[1], &legs[0])
    };
    assert_eq!(to_target["remote"]["port"], target_port, "{relay}");
    let n = |v: &Value| v.as_u64().unwrap_or(0) as usize;
    let (up_out, down_in) = (n(&to_target["bytes_sent"]), n(&to_target["bytes_received"]));
    let (up_in, down_out) = (
        n(&from_client["bytes_received"]),
        n(&from_client["bytes_sent"]),
    );
    // Reported as soon as it is recognised: a proxy request naming the
    // dialled target before any payload moved, an exchange once bytes
    // match, a bulk relay once both ways carried the volume and balance.
    let balanced = |x: usize, y: usize| x.abs_diff(y) <= 4096.max(x.max(y) / 10);
    if relay["method"] != "fingerprint" {
        assert!(
            balanced(up_in, up_out) && balanced(down_in, down_out),
            "{relay}"
        );
    }
    assert!(up_out <= UP && down_in <= DOWN, "{relay}");
    assert!(up_in <= UP + 600 && down_out <= DOWN + 600, "{relay}");
    assert!(relay["process"]["exe"].is_string(), "{relay}");

    let closed = |leg: &Value| {
        let socket = leg["socket"].clone();
        m.expect_event("close of a relay leg", |v| {
            v.kind() == "close" && v["socket"] == socket && v["remote"] == leg["remote"]
        })
    };
    let within = |v: &Value, want: usize, slack: usize| n(v).abs_diff(want) <= slack;
    let t = closed(to_target);
    assert!(within(&t["bytes_sent"], UP, 0), "{t}");
    assert!(within(&t["bytes_received"], DOWN, 0), "{t}");
    let c = closed(from_client);
    assert!(within(&c["bytes_received"], UP, 600), "{c}");
    assert!(within(&c["bytes_sent"], DOWN, 600), "{c}");
}

/// Waits for a relay event whose target leg goes to `target_port`.
fn expect_relay(m: &Monitor, target_port: u16) -> Value {
    m.expect_event("relay", |v| {
        v.kind() == "relay"
            && v["legs"]
                .as_array()
                .is_some_and(|l| l.iter().any(|leg| leg["remote"]["port"] == target_port))
    })
}

/// Checks that the relay by `pid` raised EW-RELAY-001: as its own alert,
/// or folded into an open alert of the same lineage (parallel tests share
/// the test binary as an ancestor), which the dedup counter shows.
fn relay_alert(m: &Monitor, pid: u64) {
    let own = m.wait_event(scaled(Duration::from_secs(5)), |v| {
        v.kind() == "alert" && v["rule"] == "EW-RELAY-001" && v["process"]["pid"] == pid
    });
    if own.is_some() {
        return;
    }
    let folded = m
        .metric("edgewatch_alerts_deduplicated_total{rule=\"EW-RELAY-001\"}")
        .unwrap_or(0.0);
    assert!(
        folded >= 1.0,
        "no EW-RELAY-001 alert for the relay by {pid}"
    );
}

#[test]
fn socat_port_forward_without_and_with_fork() {
    if !is_root("socat_port_forward_without_and_with_fork") {
        return;
    }
    let m = Monitor::start_with(CONFIG);
    let tport = free_port();
    let _t = target(None, "127.0.0.1", tport);
    wait_listening(&format!("127.0.0.1:{tport}"));
    let port = free_port();
    let socat = spawn(
        "socat",
        &[
            &format!("TCP-LISTEN:{port},reuseaddr"),
            &format!("TCP:127.0.0.1:{tport}"),
        ],
    );
    wait_listen_state(port);
    client(None, "plain", ("127.0.0.1", port), ("127.0.0.1", tport));
    let relay = expect_relay(&m, tport);
    check_relay(&m, &relay, tport);
    assert_eq!(relay["process"]["pid"], u64::from(socat.0.id()));
    assert_eq!(relay["mode"], "inbound+outbound");
    // Done in milliseconds: every byte passed, which the exchange test
    // sees before the volume test.
    assert_eq!(relay["method"], "exchange", "{relay}");
    relay_alert(&m, u64::from(socat.0.id()));

    // With fork, each connection is relayed by a child of the listener.
    let port = free_port();
    let forked = spawn(
        "socat",
        &[
            &format!("TCP-LISTEN:{port},reuseaddr,fork"),
            &format!("TCP:127.0.0.1:{tport}"),
        ],
    );
    wait_listening(&format!("127.0.0.1:{port}"));
    client(None, "plain", ("127.0.0.1", port), ("127.0.0.1", tport));
    client(None, "plain", ("127.0.0.1", port), ("127.0.0.1", tport));
    let parent = u64::from(forked.0.id());
    // Without the activity tracepoints (Linux before 6.4) a relay is
    // pinned on the owner of its first leg: the listener that accepted.
    let by_child = m.socket_activity();
    let deadline = std::time::Instant::now() + scaled(Duration::from_secs(20));
    let relays = loop {
        let r = m.events(|v| {
            v.kind() == "relay"
                && (v["process"]["ancestry"][0]["pid"] == parent
                    || (!by_child && v["process"]["pid"] == parent))
        });
        if r.len() >= 2 || std::time::Instant::now() > deadline {
            break r;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(relays.len(), 2, "one relay per forked child");
    for r in &relays {
        check_relay(&m, r, tport);
        if by_child {
            assert_ne!(r["process"]["pid"], parent);
        }
    }
}

#[test]
fn renamed_python_relay_in_tmp() {
    if !is_root("renamed_python_relay_in_tmp") {
        return;
    }
    let m = Monitor::start_with(CONFIG);
    let tport = free_port();
    let _t = target(None, "127.0.0.1", tport);
    wait_listening(&format!("127.0.0.1:{tport}"));
    // A 20-line relay, run by a copy of python named like a system daemon.
    let dir = std::env::temp_dir().join(format!(".cache-{}", unique()));
    std::fs::create_dir_all(&dir).expect("dir");
    let daemon = dir.join("systemd-netlogd");
    std::fs::copy("/usr/bin/python3.11", &daemon).expect("copy python");
    let relay_py = r#"
import socket, sys, threading
lport, thost, tport = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
def pump(a, b):
    while True:
        d = a.recv(65536)
        if not d: break
        b.sendall(d)
    b.shutdown(socket.SHUT_WR)
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", lport)); s.listen(4)
while True:
    c, _ = s.accept()
    u = socket.create_connection((thost, tport))
    threading.Thread(target=pump, args=(c, u), daemon=True).start()
    threading.Thread(target=pump, args=(u, c), daemon=True).start()
"#;
    let port = free_port();
    let relay = spawn(
        daemon.to_str().expect("utf8"),
        &[
            "-c",
            relay_py,
            &port.to_string(),
            "127.0.0.1",
            &tport.to_string(),
        ],
    );
    wait_listening(&format!("127.0.0.1:{port}"));
    client(None, "plain", ("127.0.0.1", port), ("127.0.0.1", tport));
    let ev = expect_relay(&m, tport);
    check_relay(&m, &ev, tport);
    assert_eq!(ev["process"]["exe"], daemon.to_str().expect("utf8"));
    relay_alert(&m, u64::from(relay.0.id()));
    drop(relay);
    let _ = std::fs::remove_dir_all(dir);
}

fn socks_and_connect_proxy(
    program: &str,
    args: &[String],
    mode: &str,
    fingerprint: &str,
    port: u16,
) {
    socks_and_connect_proxy_with(CONFIG, program, args, mode, fingerprint, port);
}

fn socks_and_connect_proxy_with(
    config: &str,
    program: &str,
    args: &[String],
    mode: &str,
    fingerprint: &str,
    port: u16,
) {
    let m = Monitor::start_with(config);
    let tport = free_port();
    let _t = target(None, "127.0.0.1", tport);
    wait_listening(&format!("127.0.0.1:{tport}"));
    let proxy = Killed(
        Command::new(program)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect(program),
    );
    wait_listening(&format!("127.0.0.1:{port}"));
    client(None, mode, ("127.0.0.1", port), ("127.0.0.1", tport));
    let ev = expect_relay(&m, tport);
    check_relay(&m, &ev, tport);
    assert_eq!(ev["proxy"]["protocol"], fingerprint, "{ev}");
    assert_eq!(ev["method"], "fingerprint", "{ev}");
    assert_eq!(
        ev["proxy"]["target"],
        format!("127.0.0.1:{tport}"),
        "the request named the target: {ev}"
    );
    let _ = proxy;
}

/// microsocks as a SOCKS5 relay, under a monitor with `config`.
fn microsocks_relay(config: &str) {
    let port = free_port();
    socks_and_connect_proxy_with(
        config,
        "microsocks",
        &[
            "-i".into(),
            "127.0.0.1".into(),
            "-p".into(),
            port.to_string(),
        ],
        "socks5",
        "socks5",
        port,
    );
}

#[test]
fn microsocks_socks5() {
    if !is_root("microsocks_socks5") {
        return;
    }
    microsocks_relay(CONFIG);
}

/// Kernels before 6.4 lack the socket activity tracepoints: relays are
/// then paired by socket owner, those that start and end between two
/// samples included (a SOCKS client that is done within a second).
#[test]
fn relays_are_paired_by_owner_without_activity_tracepoints() {
    if !is_root("relays_are_paired_by_owner_without_activity_tracepoints") {
        return;
    }
    microsocks_relay(&format!(
        "{CONFIG}[kernel]\ndisabled_probes = [\"net_sock_send_length\", \"net_sock_recv_length\"]\n"
    ));
}

#[test]
fn tinyproxy_http_connect() {
    if !is_root("tinyproxy_http_connect") {
        return;
    }
    let port = free_port();
    let conf = std::env::temp_dir().join(format!("edgewatch-tinyproxy-{}.conf", unique()));
    std::fs::write(
        &conf,
        format!("Port {port}\nListen 127.0.0.1\nTimeout 30\nAllow 127.0.0.1\nMaxClients 10\nLogLevel Critical\n"),
    )
    .expect("conf");
    socks_and_connect_proxy(
        "tinyproxy",
        &["-d".into(), "-c".into(), conf.display().to_string()],
        "connect",
        "http_connect",
        port,
    );
    let _ = std::fs::remove_file(conf);
}

#[test]
fn dante_socks4() {
    if !is_root("dante_socks4") {
        return;
    }
    let port = free_port();
    let conf = std::env::temp_dir().join(format!("edgewatch-danted-{}.conf", unique()));
    std::fs::write(
        &conf,
        format!(
            "logoutput: stderr\ninternal: 127.0.0.1 port = {port}\nexternal: 127.0.0.1\nsocksmethod: none\nclientmethod: none\nuser.privileged: root\nuser.unprivileged: nobody\n\
             client pass {{ from: 127.0.0.0/8 to: 0.0.0.0/0 }}\nsocks pass {{ from: 127.0.0.0/8 to: 127.0.0.0/8 }}\n"
        ),
    )
    .expect("conf");
    socks_and_connect_proxy(
        "danted",
        &[
            "-f".into(),
            conf.display().to_string(),
            "-N".into(),
            "1".into(),
        ],
        "socks4",
        "socks4",
        port,
    );
    let _ = std::fs::remove_file(conf);
}

#[test]
fn ncat_forward_through_a_child() {
    if !is_root("ncat_forward_through_a_child") {
        return;
    }
    let m = Monitor::start_with(CONFIG);
    let tport = free_port();
    let _t = target(None, "127.0.0.1", tport);
    wait_listening(&format!("127.0.0.1:{tport}"));
    let port = free_port();
    let ncat = spawn(
        "ncat",
        &[
            "-l",
            "127.0.0.1",
            &port.to_string(),
            "--sh-exec",
            &format!("exec ncat 127.0.0.1 {tport}"),
        ],
    );
    wait_listen_state(port);
    client(None, "plain", ("127.0.0.1", port), ("127.0.0.1", tport));
    let ev = expect_relay(&m, tport);
    check_relay(&m, &ev, tport);
    assert_eq!(
        ev["process"]["pid"],
        u64::from(ncat.0.id()),
        "the listener that accepted the client"
    );
    // With -k, the listener keeps accepting; each client is served by a
    // forked copy of it.
    let port = free_port();
    let kept = spawn(
        "ncat",
        &[
            "-l",
            "-k",
            "127.0.0.1",
            &port.to_string(),
            "--sh-exec",
            &format!("exec ncat 127.0.0.1 {tport}"),
        ],
    );
    wait_listen_state(port);
    let before = m.events(|v| v.kind() == "relay").len();
    client(None, "plain", ("127.0.0.1", port), ("127.0.0.1", tport));
    client(None, "plain", ("127.0.0.1", port), ("127.0.0.1", tport));
    let deadline = std::time::Instant::now() + scaled(Duration::from_secs(20));
    let listener = u64::from(kept.0.id());
    loop {
        let relays: Vec<Value> = m.events(|v| v.kind() == "relay")[before..]
            .iter()
            .filter(|v| {
                v["process"]["pid"] == listener || v["process"]["ancestry"][0]["pid"] == listener
            })
            .cloned()
            .collect();
        if relays.len() >= 2 {
            for r in &relays {
                check_relay(&m, r, tport);
            }
            break;
        }
        assert!(std::time::Instant::now() < deadline, "ncat -k: {relays:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn two_hop_chain_across_namespaces() {
    if !is_root("two_hop_chain_across_namespaces") {
        return;
    }
    let m = Monitor::start_with(CONFIG);
    let ns = NetnsPair::new();
    // Target in b; hop 2 in b forwards :7002 to it; hop 1 in a forwards
    // :7001 to hop 2; the client in a goes through both.
    let _t = target(Some(&ns.b), "0.0.0.0", 7000);
    let _hop2 = Killed(
        NetnsPair::command(&ns.b, "socat")
            .args(["TCP-LISTEN:7002,reuseaddr", "TCP:127.0.0.1:7000"])
            .spawn()
            .expect("hop 2"),
    );
    let _hop1 = Killed(
        NetnsPair::command(&ns.a, "socat")
            .args([
                "TCP-LISTEN:7001,reuseaddr",
                &format!("TCP:{}:7002", NetnsPair::B4),
            ])
            .spawn()
            .expect("hop 1"),
    );
    std::thread::sleep(scaled(Duration::from_millis(500)));
    client(
        Some(&ns.a),
        "plain",
        ("127.0.0.1", 7001),
        ("127.0.0.1", 7000),
    );
    let second = expect_relay(&m, 7000);
    let first = expect_relay(&m, 7002);
    check_relay(&m, &second, 7000);
    check_relay(&m, &first, 7002);
    assert_ne!(first["process"]["pid"], second["process"]["pid"]);
}

#[test]
fn ssh_forwarding_through_the_local_sshd() {
    if !is_root("ssh_forwarding_through_the_local_sshd") {
        return;
    }
    let m = Monitor::start_with(CONFIG);
    let sshd = Sshd::start();
    let tport = free_port();
    let _t = target(None, "127.0.0.1", tport);
    wait_listening(&format!("127.0.0.1:{tport}"));
    let sshd_relay = |m: &Monitor| {
        m.expect_event("relay by sshd", |v| {
            v.kind() == "relay"
                && v["process"]["exe"]
                    .as_str()
                    .is_some_and(|e| e.contains("sshd"))
                && v["legs"].as_array().is_some_and(|l| {
                    l.iter()
                        .any(|leg| leg["remote"]["port"] == tport || leg["local"]["port"] == tport)
                })
        })
    };
    // -L: the gateway's sshd dials the target for the client.
    let lport = free_port();
    // Waits check the listening state: a probe connection would travel
    // the tunnel and mix into its byte counts.
    let _l = Killed(
        sshd.ssh(&[
            "-N",
            "-L",
            &format!("{lport}:127.0.0.1:{tport}"),
            "root@127.0.0.1",
        ])
        .spawn()
        .expect("ssh -L"),
    );
    wait_listen_state(lport);
    std::thread::sleep(scaled(Duration::from_millis(1500)));
    client(None, "plain", ("127.0.0.1", lport), ("127.0.0.1", tport));
    let ev = sshd_relay(&m);
    // The forward's bytes travel framed inside the SSH session.
    assert!(
        ["tunnel", "bulk"].contains(&ev["method"].as_str().unwrap_or("")),
        "{ev}"
    );
    // -D: dynamic SOCKS through the sshd.
    let dport = free_port();
    let _d = Killed(
        sshd.ssh(&["-N", "-D", &format!("127.0.0.1:{dport}"), "root@127.0.0.1"])
            .spawn()
            .expect("ssh -D"),
    );
    wait_listen_state(dport);
    std::thread::sleep(scaled(Duration::from_millis(1500)));
    let before = m.events(|v| v.kind() == "relay").len();
    client(None, "socks5", ("127.0.0.1", dport), ("127.0.0.1", tport));
    let deadline = std::time::Instant::now() + scaled(Duration::from_secs(20));
    while m.events(|v| v.kind() == "relay").len() < before + 2 {
        assert!(std::time::Instant::now() < deadline, "no relays for ssh -D");
        std::thread::sleep(Duration::from_millis(200));
    }
    // -R: the sshd listens and relays back over the SSH connection.
    let rport = free_port();
    let _r = Killed(
        sshd.ssh(&[
            "-N",
            "-R",
            &format!("127.0.0.1:{rport}:127.0.0.1:{tport}"),
            "root@127.0.0.1",
        ])
        .spawn()
        .expect("ssh -R"),
    );
    wait_listen_state(rport);
    std::thread::sleep(scaled(Duration::from_millis(1500)));
    let before = m
        .events(|v| {
            v.kind() == "relay"
                && v["process"]["exe"]
                    .as_str()
                    .is_some_and(|e| e.contains("sshd"))
        })
        .len();
    client(None, "plain", ("127.0.0.1", rport), ("127.0.0.1", tport));
    let deadline = std::time::Instant::now() + scaled(Duration::from_secs(20));
    while m
        .events(|v| {
            v.kind() == "relay"
                && v["process"]["exe"]
                    .as_str()
                    .is_some_and(|e| e.contains("sshd"))
        })
        .len()
        <= before
    {
        assert!(
            std::time::Instant::now() < deadline,
            "no sshd relay for ssh -R"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // The ssh -R client dialled both the sshd and the target: a reverse
    // tunnel, two outbound legs, as an FRP client would make.
    let reverse = m.expect_event("reverse tunnel", |v| {
        v.kind() == "relay"
            && v["mode"] == "outbound+outbound"
            && v["process"]["exe"] == "/usr/bin/ssh"
    });
    assert!(reverse["legs"]
        .as_array()
        .is_some_and(|l| l.iter().any(|leg| leg["remote"]["port"] == tport)));
    m.expect_event("EW-RELAY-002", |v| {
        v.kind() == "alert" && v["rule"] == "EW-RELAY-002"
    });
}

#[test]
fn look_alikes_stay_quiet() {
    if !is_root("look_alikes_stay_quiet") {
        return;
    }
    let m = Monitor::start_with(
        &format!(
        "{CONFIG}[relay]\nallowed_proxies = [{{ exe = \"/usr/sbin/nginx\", ports = [PORT] }}]\n"
    )
        .replace("PORT", &{
            let p = free_port();
            std::env::set_var("EDGEWATCH_TEST_NGINX_PORT", p.to_string());
            p.to_string()
        }),
    );
    let nginx_port: u16 = std::env::var("EDGEWATCH_TEST_NGINX_PORT")
        .expect("port")
        .parse()
        .expect("port");
    // An HTTP server answering several clients, and a client downloading.
    let root = std::env::temp_dir().join(format!("edgewatch-quiet-{}", unique()));
    std::fs::create_dir_all(&root).expect("root");
    std::fs::write(root.join("blob"), vec![b'b'; 300_000]).expect("blob");
    let hport = free_port();
    let _http = Killed(
        Command::new("/usr/bin/python3")
            .args([
                "-m",
                "http.server",
                "--bind",
                "127.0.0.1",
                &hport.to_string(),
                "--directory",
            ])
            .arg(&root)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("http.server"),
    );
    wait_listening(&format!("127.0.0.1:{hport}"));
    // nginx as a declared reverse proxy in front of the HTTP server.
    let conf = root.join("nginx.conf");
    std::fs::write(
        &conf,
        format!(
            "daemon off;\nmaster_process on;\nworker_processes 1;\npid {r}/nginx.pid;\nerror_log stderr crit;\nevents {{ worker_connections 64; }}\nhttp {{\n access_log off;\n client_body_temp_path {r};\n proxy_temp_path {r};\n server {{ listen 127.0.0.1:{nginx_port}; location / {{ proxy_pass http://127.0.0.1:{hport}; }} }}\n}}\n",
            r = root.display()
        ),
    )
    .expect("nginx.conf");
    let _nginx = tests::Terminated(
        Command::new("/usr/sbin/nginx")
            .args(["-c"])
            .arg(&conf)
            .stderr(Stdio::null())
            .spawn()
            .expect("nginx"),
    );
    wait_listening(&format!("127.0.0.1:{nginx_port}"));
    for url in [
        format!("http://127.0.0.1:{hport}/blob"),
        format!("http://127.0.0.1:{nginx_port}/blob"),
    ] {
        for _ in 0..3 {
            let ok = Command::new("curl")
                .args(["-sS", "-o", "/dev/null", &url])
                .status()
                .expect("curl")
                .success();
            assert!(ok, "{url}");
        }
    }
    // An admin SSH session running a command, without forwarding.
    let sshd = Sshd::start();
    let out = sshd
        .ssh(&["root@127.0.0.1", "head -c 200000 /dev/zero"])
        .output()
        .expect("ssh");
    assert_eq!(out.stdout.len(), 200_000);
    std::thread::sleep(Duration::from_secs(3));
    // Other tests share the machine: only relays through these servers count.
    let ports = [hport, nginx_port, sshd.port];
    let ours = |legs: &Value| {
        legs.as_array().is_some_and(|l| {
            l.iter().any(|leg| {
                ports
                    .iter()
                    .any(|p| leg["local"]["port"] == *p || leg["remote"]["port"] == *p)
            })
        })
    };
    let relays = m.events(|v| {
        (v.kind() == "relay" && ours(&v["legs"]))
            || (v.kind() == "alert"
                && v["rule"]
                    .as_str()
                    .is_some_and(|r| r.starts_with("EW-RELAY"))
                && ours(&v["connections"]))
    });
    assert!(
        relays.is_empty(),
        "look-alikes reported as relays: {relays:#?}"
    );
    let _ = std::fs::remove_dir_all(root);
}

#[test]
fn low_volume_interactive_relay_within_a_minute() {
    if !is_root("low_volume_interactive_relay_within_a_minute") {
        return;
    }
    let m = Monitor::start_with(CONFIG);
    // A shell-like target: each short line in gets a longer answer.
    let tport = free_port();
    let _t = Killed(
        Command::new("/usr/bin/python3")
            .args([
                "-c",
                "import socket,sys\ns=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\ns.bind(('127.0.0.1', int(sys.argv[1]))); s.listen(1)\nc,_=s.accept()\nwhile True:\n    d=c.recv(100)\n    if not d: break\n    c.sendall(b'answer ' * 8)\n",
                &tport.to_string(),
            ])
            .spawn()
            .expect("target"),
    );
    wait_listen_state(tport);
    let port = free_port();
    let _relay = spawn(
        "socat",
        &[
            &format!("TCP-LISTEN:{port},reuseaddr"),
            &format!("TCP:127.0.0.1:{tport}"),
        ],
    );
    wait_listen_state(port);
    // Keystroke-sized exchanges, half a second apart, well under the
    // bulk volume.
    let out = Command::new("/usr/bin/python3")
        .args([
            "-c",
            "import socket,sys,time\nc=socket.create_connection(('127.0.0.1', int(sys.argv[1])))\nfor i in range(16):\n    c.sendall(b'ls -l\\n'); c.recv(100); time.sleep(0.5)\n",
            &port.to_string(),
        ])
        .output()
        .expect("client");
    assert!(out.status.success());
    let relay = expect_relay(&m, tport);
    // Each keystroke and its answer passed exactly: a relay at the first
    // exchange, long before the samples of the interactive test.
    assert_eq!(relay["method"], "exchange", "{relay}");
    let total: u64 = relay["legs"]
        .as_array()
        .expect("legs")
        .iter()
        .map(|l| l["bytes_received"].as_u64().unwrap_or(0))
        .sum();
    assert!(total < 16 * 1024, "low volume: {total} bytes");
}

#[test]
fn socks4a_is_fingerprinted_on_any_port() {
    if !is_root("socks4a_is_fingerprinted_on_any_port") {
        return;
    }
    let m = Monitor::start_with(CONFIG);
    let tport = free_port();
    let _t = target(None, "127.0.0.1", tport);
    wait_listening(&format!("127.0.0.1:{tport}"));
    // A plain forward on an arbitrary port: the request's first bytes are
    // SOCKS4a whatever the tool in the middle is.
    let port = free_port();
    let _socat = spawn(
        "socat",
        &[
            &format!("TCP-LISTEN:{port},reuseaddr"),
            &format!("TCP:127.0.0.1:{tport}"),
        ],
    );
    wait_listen_state(port);
    client(
        None,
        "socks4a-raw",
        ("127.0.0.1", port),
        ("127.0.0.1", tport),
    );
    let ev = expect_relay(&m, tport);
    assert_eq!(ev["legs"][0]["fingerprint"], "socks4a", "{ev}");
    // Seen arriving on the client leg and leaving on the target leg.
    let legs = ev["legs"].as_array().expect("legs");
    assert!(legs.iter().all(|l| l["fingerprint"] == "socks4a"), "{ev}");
}
