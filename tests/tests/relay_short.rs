//! Relays that carry one short request and its answer (tens to hundreds of
//! bytes, under a second), the way an intruder's hop really looks, in a
//! gateway of network namespaces: an internet client (`outside`, on wan),
//! the gateway (`gw`), a LAN host (`inside`) and another internet host
//! (`target`). Each relay is a different program, language or plumbing;
//! each must be reported while its connections are still open (at its
//! first exchange, not at its close, a volume or a count of samples),
//! rated by the sides it joins. And the look-alikes stay quiet.

use std::{
    io::{BufRead as _, BufReader},
    process::{Child, Stdio},
    time::Duration,
};

use serde_json::Value;
use tests::{
    is_root, scaled, scratch_dir, unique, EventExt as _, Gateway, Killed, Monitor, NetnsPair, Sshd,
};

const CONFIG: &str = "[output]\nseed_events = false\nkinds = [\"relay\", \"alert\", \"close\", \"exec\"]\n[network]\nseed_events = false\n";

/// Bytes of the request and of its answer.
const UP: u64 = 78;
const DOWN: u64 = 300;

/// How long clients and servers keep a connection open after the exchange:
/// the relay must be reported before that.
fn hold() -> Duration {
    scaled(Duration::from_secs(30))
}

/// The helper scripts, embedded: the kernel matrix runs this binary in a
/// VM that has python3 but not this source tree.
fn script(name: &str) -> &'static str {
    match name {
        "short_target.py" => include_str!("../scripts/short_target.py"),
        "short_client.py" => include_str!("../scripts/short_client.py"),
        "forward.py" => include_str!("../scripts/forward.py"),
        "socks5.py" => include_str!("../scripts/socks5.py"),
        "socks5_operator.py" => include_str!("../scripts/socks5_operator.py"),
        "udp_forward.py" => include_str!("../scripts/udp_forward.py"),
        "webapp.py" => include_str!("../scripts/webapp.py"),
        "dns.py" => include_str!("../scripts/dns.py"),
        "unix_split.py" => include_str!("../scripts/unix_split.py"),
        _ => panic!("no script {name}"),
    }
}

/// `python3 -c SCRIPT` in namespace `ns`, arguments to follow.
fn python(ns: &str, name: &str) -> std::process::Command {
    let mut c = NetnsPair::command(ns, "/usr/bin/python3");
    c.args(["-c", script(name)]);
    c
}

/// A helper script run by python3 in namespace `ns`, in the background.
fn py(ns: &str, name: &str, args: &[&str]) -> Killed {
    Killed(
        python(ns, name)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3"),
    )
}

/// Runs `program` in namespace `ns` in the background.
fn run_in(ns: &str, program: &str, args: &[&str]) -> Killed {
    Killed(
        NetnsPair::command(ns, program)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{program}: {e}")),
    )
}

/// The server answering DOWN bytes to each request, in `ns` on
/// `addr:port`, holding each connection open after answering.
fn target(ns: &str, proto: &str, addr: &str, port: u16) -> Killed {
    let t = py(
        ns,
        "short_target.py",
        &[
            proto,
            addr,
            &port.to_string(),
            &DOWN.to_string(),
            &hold().as_secs().to_string(),
        ],
    );
    if proto == "tcp" {
        Gateway::wait_listen(ns, port);
    } else {
        std::thread::sleep(Duration::from_millis(300));
    }
    t
}

/// A client holding its connection after the exchange.
struct Client {
    child: Killed,
}

impl Client {
    /// Reaches `to` through `via` (MODE of short_client.py), exchanges UP
    /// and DOWN bytes, and returns once the answer arrived, the connection
    /// still open.
    fn exchange(ns: &str, mode: &str, via: (&str, u16), to: (&str, u16)) -> Self {
        let mut child: Child = python(ns, "short_client.py")
            .args([
                mode,
                via.0,
                &via.1.to_string(),
                to.0,
                &to.1.to_string(),
                &UP.to_string(),
                &DOWN.to_string(),
                &hold().as_secs().to_string(),
            ])
            .stdout(Stdio::piped())
            .spawn()
            .expect("client");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("client output");
        let child = Killed(child);
        let want = if mode == "http_proxy" { 0 } else { DOWN };
        let got: u64 = line.trim().parse().unwrap_or(0);
        assert!(got >= want && got > 0, "the client got {line:?} back");
        Self { child }
    }

    /// Fails unless the client still holds its connection.
    fn still_open(&mut self, what: &str) {
        assert!(
            self.child.0.try_wait().expect("client status").is_none(),
            "{what}: reported only after the connections closed"
        );
    }
}

/// The relay event with a leg to `port` on its far end.
fn relay_to(m: &Monitor, port: u16) -> Value {
    m.expect_event(&format!("a relay to port {port}"), |v| {
        v.kind() == "relay"
            && v["legs"]
                .as_array()
                .is_some_and(|l| l.iter().any(|leg| leg["remote"]["port"] == port))
    })
}

/// The alert of rule `rule` naming a connection to `port`.
fn alert(m: &Monitor, rule: &str, port: u16) -> Value {
    m.expect_event(&format!("{rule} for port {port}"), |v| {
        v.kind() == "alert"
            && v["rule"] == rule
            && v["connections"]
                .as_array()
                .is_some_and(|c| c.iter().any(|x| x["remote"]["port"] == port))
    })
}

fn port() -> u16 {
    20000 + (unique() % 20000) as u16
}

/// Relays and alerts that name any of `ports`, for the quiet tests.
fn noise(m: &Monitor, ports: &[u16]) -> Vec<Value> {
    let names = |list: &Value| {
        list.as_array().is_some_and(|l| {
            l.iter().any(|x| {
                ports
                    .iter()
                    .any(|p| x["remote"]["port"] == *p || x["local"]["port"] == *p)
            })
        })
    };
    m.events(|v| {
        (v.kind() == "relay" && v["allowed"] == false && names(&v["legs"]))
            || (v.kind() == "alert"
                && v["rule"]
                    .as_str()
                    .is_some_and(|r| r.starts_with("EW-RELAY"))
                && names(&v["connections"]))
    })
}

#[test]
fn a_python_port_forward_is_caught_at_its_first_exchange() {
    if !is_root("a_python_port_forward_is_caught_at_its_first_exchange") {
        return;
    }
    let gw = Gateway::new();
    let m = Monitor::start_with(&format!("{CONFIG}{}", gw.config("")));
    let (tport, lport) = (port(), port());
    let _t = target(&gw.inside, "tcp", Gateway::INSIDE, tport);
    let _relay = py(
        &gw.gw,
        "forward.py",
        &[
            Gateway::GW_WAN,
            &lport.to_string(),
            Gateway::INSIDE,
            &tport.to_string(),
        ],
    );
    Gateway::wait_listen(&gw.gw, lport);
    let mut c = Client::exchange(
        &gw.outside,
        "plain",
        (Gateway::GW_WAN, lport),
        (Gateway::INSIDE, tport),
    );
    let r = relay_to(&m, tport);
    c.still_open("a python forward");
    assert_eq!(r["method"], "exchange", "{r}");
    assert_eq!(r["mode"], "inbound+outbound", "{r}");
    assert_eq!(r["path"], "wan->lan", "{r}");
    assert_eq!(r["legs"][0]["side"], "wan", "{r}");
    assert_eq!(r["legs"][1]["side"], "lan", "{r}");
    assert_eq!(r["legs"][0]["bytes_received"], UP, "{r}");
    assert_eq!(r["legs"][1]["bytes_received"], DOWN, "{r}");
    // Reaching inside from the internet is the critical rule, and only it.
    let a = alert(&m, "EW-RELAY-003", tport);
    assert_eq!(a["severity"], "critical");
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        m.events(|v| v.kind() == "alert" && v["rule"] == "EW-RELAY-001")
            .is_empty(),
        "one alert per relay"
    );
}

#[test]
fn a_forward_moving_its_bytes_by_splice() {
    if !is_root("a_forward_moving_its_bytes_by_splice") {
        return;
    }
    let gw = Gateway::new();
    let m = Monitor::start_with(&format!("{CONFIG}{}", gw.config("")));
    let (tport, lport) = (port(), port());
    let _t = target(&gw.inside, "tcp", Gateway::INSIDE, tport);
    let _relay = py(
        &gw.gw,
        "forward.py",
        &[
            Gateway::GW_WAN,
            &lport.to_string(),
            Gateway::INSIDE,
            &tport.to_string(),
            "splice",
        ],
    );
    Gateway::wait_listen(&gw.gw, lport);
    let mut c = Client::exchange(
        &gw.outside,
        "plain",
        (Gateway::GW_WAN, lport),
        (Gateway::INSIDE, tport),
    );
    let r = relay_to(&m, tport);
    c.still_open("a splice forward");
    assert_eq!(r["method"], "exchange", "{r}");
    assert_eq!(r["path"], "wan->lan", "{r}");
}

#[test]
fn a_socks5_server_in_python_names_its_target() {
    if !is_root("a_socks5_server_in_python_names_its_target") {
        return;
    }
    let gw = Gateway::new();
    let m = Monitor::start_with(&format!("{CONFIG}{}", gw.config("")));
    let (tport, lport) = (port(), port());
    let _t = target(&gw.inside, "tcp", Gateway::INSIDE, tport);
    let _proxy = py(&gw.gw, "socks5.py", &[Gateway::GW_WAN, &lport.to_string()]);
    Gateway::wait_listen(&gw.gw, lport);
    let mut c = Client::exchange(
        &gw.outside,
        "socks5",
        (Gateway::GW_WAN, lport),
        (Gateway::INSIDE, tport),
    );
    let r = relay_to(&m, tport);
    c.still_open("a python SOCKS5 server");
    assert_eq!(r["method"], "fingerprint", "{r}");
    assert_eq!(r["proxy"]["protocol"], "socks5", "{r}");
    assert_eq!(
        r["proxy"]["target"],
        format!("{}:{tport}", Gateway::INSIDE),
        "{r}"
    );
    alert(&m, "EW-RELAY-003", tport);
}

#[test]
fn a_socks_binary_copied_under_a_system_name() {
    if !is_root("a_socks_binary_copied_under_a_system_name") {
        return;
    }
    let gw = Gateway::new();
    let m = Monitor::start_with(&format!("{CONFIG}{}", gw.config("")));
    let (tport, lport) = (port(), port());
    let _t = target(&gw.inside, "tcp", Gateway::INSIDE, tport);
    let dir = scratch_dir("lib-systemd");
    let copy = dir.join("systemd-timesyncd-helper");
    std::fs::copy("/usr/bin/microsocks", &copy).expect("copy microsocks");
    let copy = copy.to_str().expect("utf8").to_owned();
    let _proxy = run_in(
        &gw.gw,
        &copy,
        &["-i", Gateway::GW_WAN, "-p", &lport.to_string()],
    );
    Gateway::wait_listen(&gw.gw, lport);
    let mut c = Client::exchange(
        &gw.outside,
        "socks5",
        (Gateway::GW_WAN, lport),
        (Gateway::INSIDE, tport),
    );
    let r = relay_to(&m, tport);
    c.still_open("a renamed SOCKS server");
    assert_eq!(r["process"]["exe"], copy, "{r}");
    assert_eq!(r["method"], "fingerprint", "{r}");
}

/// A tinyproxy on the gateway's wan address.
fn tinyproxy(gw: &Gateway, lport: u16) -> (Killed, std::path::PathBuf) {
    let dir = scratch_dir("tinyproxy");
    let conf = dir.join("tinyproxy.conf");
    std::fs::write(
        &conf,
        format!(
            "Port {lport}\nListen {}\nTimeout 60\nMaxClients 16\nAllow 0.0.0.0/0\nLogLevel Critical\nPidFile \"{}/pid\"\n",
            Gateway::GW_WAN,
            dir.display()
        ),
    )
    .expect("tinyproxy.conf");
    let p = run_in(
        &gw.gw,
        "/usr/bin/tinyproxy",
        &["-d", "-c", conf.to_str().expect("utf8")],
    );
    Gateway::wait_listen(&gw.gw, lport);
    (p, dir)
}

#[test]
fn an_http_connect_proxy_reachable_from_wan() {
    if !is_root("an_http_connect_proxy_reachable_from_wan") {
        return;
    }
    let gw = Gateway::new();
    let m = Monitor::start_with(&format!("{CONFIG}{}", gw.config("")));
    let (tport, lport) = (port(), port());
    let _t = target(&gw.inside, "tcp", Gateway::INSIDE, tport);
    let _p = tinyproxy(&gw, lport);
    let mut c = Client::exchange(
        &gw.outside,
        "connect",
        (Gateway::GW_WAN, lport),
        (Gateway::INSIDE, tport),
    );
    let r = relay_to(&m, tport);
    c.still_open("an HTTP CONNECT proxy");
    assert_eq!(r["method"], "fingerprint", "{r}");
    assert_eq!(r["proxy"]["protocol"], "http_connect", "{r}");
    assert_eq!(r["path"], "wan->lan", "{r}");
}

#[test]
fn an_http_request_in_absolute_form_through_a_proxy() {
    if !is_root("an_http_request_in_absolute_form_through_a_proxy") {
        return;
    }
    let gw = Gateway::new();
    let m = Monitor::start_with(&format!("{CONFIG}{}", gw.config("")));
    let (tport, lport) = (port(), port());
    let _t = py(
        &gw.inside,
        "short_target.py",
        &[
            "tcp",
            Gateway::INSIDE,
            &tport.to_string(),
            &DOWN.to_string(),
            "0",
            "http",
        ],
    );
    Gateway::wait_listen(&gw.inside, tport);
    let _p = tinyproxy(&gw, lport);
    let _c = Client::exchange(
        &gw.outside,
        "http_proxy",
        (Gateway::GW_WAN, lport),
        (Gateway::INSIDE, tport),
    );
    let r = relay_to(&m, tport);
    assert_eq!(r["method"], "fingerprint", "{r}");
    assert_eq!(r["proxy"]["protocol"], "http_proxy", "{r}");
    assert_eq!(
        r["proxy"]["target"],
        format!("{}:{tport}", Gateway::INSIDE),
        "{r}"
    );
}

#[test]
fn a_reverse_socks_agent_dials_both_legs() {
    if !is_root("a_reverse_socks_agent_dials_both_legs") {
        return;
    }
    let gw = Gateway::new();
    let m = Monitor::start_with(&format!("{CONFIG}{}", gw.config("")));
    let (tport, c2port) = (port(), port());
    let _t = target(&gw.inside, "tcp", Gateway::INSIDE, tport);
    // The operator waits on the internet; the agent on the gateway dials
    // it, and the LAN host when asked.
    let mut operator: Child = python(&gw.outside, "socks5_operator.py")
        .args([
            Gateway::OUTSIDE,
            &c2port.to_string(),
            Gateway::INSIDE,
            &tport.to_string(),
            &UP.to_string(),
            &DOWN.to_string(),
            &hold().as_secs().to_string(),
        ])
        .stdout(Stdio::piped())
        .spawn()
        .expect("operator");
    let mut out = BufReader::new(operator.stdout.take().expect("stdout"));
    let mut line = String::new();
    out.read_line(&mut line).expect("operator listening");
    let mut operator = Killed(operator);
    let _agent = py(
        &gw.gw,
        "socks5.py",
        &["reverse", Gateway::OUTSIDE, &c2port.to_string()],
    );
    line.clear();
    out.read_line(&mut line).expect("operator done");
    assert_eq!(line.trim(), DOWN.to_string());
    let r = relay_to(&m, tport);
    assert!(
        operator.0.try_wait().expect("status").is_none(),
        "reported after the close"
    );
    assert_eq!(r["mode"], "outbound+outbound", "{r}");
    assert_eq!(r["path"], "wan->lan", "{r}");
    alert(&m, "EW-RELAY-002", tport);
}

#[test]
fn a_busybox_nc_pair_joined_by_a_fifo() {
    if !is_root("a_busybox_nc_pair_joined_by_a_fifo") {
        return;
    }
    let gw = Gateway::new();
    let m = Monitor::start_with(&format!("{CONFIG}{}", gw.config("")));
    let (tport, lport) = (port(), port());
    let _t = target(&gw.inside, "tcp", Gateway::INSIDE, tport);
    let dir = scratch_dir("fifo");
    let fifo = dir.join("f");
    let sh = format!(
        "mkfifo {f} && busybox nc -l -p {lport} <{f} | busybox nc {} {tport} >{f}",
        Gateway::INSIDE,
        f = fifo.display()
    );
    let _relay = run_in(&gw.gw, "/bin/sh", &["-c", &sh]);
    Gateway::wait_listen(&gw.gw, lport);
    let mut c = Client::exchange(
        &gw.outside,
        "plain",
        (Gateway::GW_WAN, lport),
        (Gateway::INSIDE, tport),
    );
    let r = relay_to(&m, tport);
    c.still_open("an nc pair");
    assert_eq!(r["via"], "pipe", "{r}");
    assert_eq!(r["method"], "exchange", "{r}");
    assert_eq!(r["path"], "wan->lan", "{r}");
}

#[test]
fn two_processes_joined_by_a_unix_socket() {
    if !is_root("two_processes_joined_by_a_unix_socket") {
        return;
    }
    let gw = Gateway::new();
    let m = Monitor::start_with(&format!("{CONFIG}{}", gw.config("")));
    if !m.socket_activity() {
        // Linux before 6.4: which processes pass data over a unix socket
        // is learnt from the socket activity tracepoints.
        eprintln!("two_processes_joined_by_a_unix_socket: no socket activity tracepoints on this kernel; unix joins are not seen here");
        return;
    }
    let dir = scratch_dir("unix");
    // Two unrelated socat processes (neither started the other): one
    // takes the client and writes to a unix socket, the other reads it
    // and dials the LAN host.
    let (tport, lport) = (port(), port());
    let _t = target(&gw.inside, "tcp", Gateway::INSIDE, tport);
    let sock = dir.join("s");
    let _back = run_in(
        &gw.gw,
        "/usr/bin/socat",
        &[
            &format!("UNIX-LISTEN:{},fork", sock.display()),
            &format!("TCP:{}:{tport}", Gateway::INSIDE),
        ],
    );
    let _front = run_in(
        &gw.gw,
        "/usr/bin/socat",
        &[
            &format!("TCP-LISTEN:{lport},bind={},reuseaddr,fork", Gateway::GW_WAN),
            &format!("UNIX-CONNECT:{}", sock.display()),
        ],
    );
    Gateway::wait_listen(&gw.gw, lport);
    let mut c = Client::exchange(
        &gw.outside,
        "plain",
        (Gateway::GW_WAN, lport),
        (Gateway::INSIDE, tport),
    );
    let r = relay_to(&m, tport);
    c.still_open("two socats over a unix socket");
    assert_eq!(r["via"], "unix", "{r}");
    assert_eq!(r["method"], "exchange", "{r}");
    assert_eq!(r["path"], "wan->lan", "{r}");
    alert(&m, "EW-RELAY-003", tport);

    // The same with an abstract socket and python on both ends, the
    // dialler listening and the taker connecting the other way round.
    let (tport, lport) = (port(), port());
    let _t2 = target(&gw.inside, "tcp", Gateway::INSIDE, tport);
    let name = format!("\\0relay{}", unique());
    let _a = py(
        &gw.gw,
        "unix_split.py",
        &["dial", &name, Gateway::INSIDE, &tport.to_string()],
    );
    std::thread::sleep(Duration::from_millis(300));
    let _b = py(
        &gw.gw,
        "unix_split.py",
        &["take", &name, Gateway::GW_WAN, &lport.to_string()],
    );
    Gateway::wait_listen(&gw.gw, lport);
    let mut c = Client::exchange(
        &gw.outside,
        "plain",
        (Gateway::GW_WAN, lport),
        (Gateway::INSIDE, tport),
    );
    let r = relay_to(&m, tport);
    c.still_open("two python processes over an abstract unix socket");
    assert_eq!(r["via"], "unix", "{r}");
    assert_eq!(r["path"], "wan->lan", "{r}");
}

#[test]
fn the_gateway_sshd_serving_forwards_to_a_wan_client() {
    if !is_root("the_gateway_sshd_serving_forwards_to_a_wan_client") {
        return;
    }
    let gw = Gateway::new();
    let m = Monitor::start_with(&format!("{CONFIG}{}", gw.config("")));
    if !m.socket_activity() {
        // Linux before 6.4: which connection an sshd read before it dialled
        // is unknown, so a short forward inside a session is not told from
        // the session's own traffic (long ones are, by volume).
        eprintln!("the_gateway_sshd_serving_forwards_to_a_wan_client: no socket activity tracepoints on this kernel; short SSH forwards are not detected here");
        return;
    }
    let sshd = Sshd::start_in(Some(&gw.gw), Gateway::GW_WAN, 22);
    let tport = port();
    let _t = target(&gw.inside, "tcp", Gateway::INSIDE, tport);
    let by_sshd = |m: &Monitor, port: u16| {
        m.expect_event(&format!("a relay by sshd to {port}"), |v| {
            v.kind() == "relay"
                && v["process"]["exe"] == "/usr/sbin/sshd"
                && v["legs"].as_array().is_some_and(|l| {
                    l.iter()
                        .any(|leg| leg["remote"]["port"] == port || leg["local"]["port"] == port)
                })
        })
    };
    // -D: a dynamic forward; the client's SOCKS exchange is short.
    let dport = port();
    let _d = Killed(
        sshd.ssh_in(
            Some(&gw.outside),
            &[
                "-N",
                "-D",
                &format!("127.0.0.1:{dport}"),
                &format!("root@{}", Gateway::GW_WAN),
            ],
        )
        .spawn()
        .expect("ssh -D"),
    );
    Gateway::wait_listen(&gw.outside, dport);
    std::thread::sleep(scaled(Duration::from_secs(1)));
    let mut c = Client::exchange(
        &gw.outside,
        "socks5",
        ("127.0.0.1", dport),
        (Gateway::INSIDE, tport),
    );
    let r = by_sshd(&m, tport);
    c.still_open("sshd -D");
    assert_eq!(r["method"], "tunnel", "{r}");
    assert_eq!(r["path"], "wan->lan", "{r}");
    alert(&m, "EW-RELAY-003", tport);
    drop(c);
    // -L: a local forward to another LAN port.
    let (t2, lport) = (port(), port());
    let _t2 = target(&gw.inside, "tcp", Gateway::INSIDE, t2);
    let _l = Killed(
        sshd.ssh_in(
            Some(&gw.outside),
            &[
                "-N",
                "-L",
                &format!("127.0.0.1:{lport}:{}:{t2}", Gateway::INSIDE),
                &format!("root@{}", Gateway::GW_WAN),
            ],
        )
        .spawn()
        .expect("ssh -L"),
    );
    Gateway::wait_listen(&gw.outside, lport);
    std::thread::sleep(scaled(Duration::from_secs(1)));
    let mut c = Client::exchange(
        &gw.outside,
        "plain",
        ("127.0.0.1", lport),
        (Gateway::INSIDE, t2),
    );
    let r = by_sshd(&m, t2);
    c.still_open("sshd -L");
    assert_eq!(r["method"], "tunnel", "{r}");
    drop(c);
    // -R: the gateway's sshd listens for the wan client, and a LAN host's
    // connection to that port is carried back out.
    let (t3, rport) = (port(), port());
    let _t3 = target(&gw.outside, "tcp", "127.0.0.1", t3);
    let _r = Killed(
        sshd.ssh_in(
            Some(&gw.outside),
            &[
                "-N",
                "-R",
                &format!("{}:{rport}:127.0.0.1:{t3}", Gateway::GW_LAN),
                &format!("root@{}", Gateway::GW_WAN),
            ],
        )
        .spawn()
        .expect("ssh -R"),
    );
    Gateway::wait_listen(&gw.gw, rport);
    let mut c = Client::exchange(
        &gw.inside,
        "plain",
        (Gateway::GW_LAN, rport),
        ("127.0.0.1", t3),
    );
    let r = by_sshd(&m, rport);
    c.still_open("sshd -R");
    assert_eq!(r["mode"], "inbound+inbound", "{r}");
    assert_eq!(r["method"], "tunnel", "{r}");
}

#[test]
fn one_hop_of_a_chain_between_internet_hosts() {
    if !is_root("one_hop_of_a_chain_between_internet_hosts") {
        return;
    }
    let gw = Gateway::new();
    let m = Monitor::start_with(&format!("{CONFIG}{}", gw.config("")));
    // outside -> gateway hop -> the next hop on the target host -> the
    // server behind it.
    let (sport, hop2, lport) = (port(), port(), port());
    let _server = target(&gw.target, "tcp", "127.0.0.1", sport);
    let _next = py(
        &gw.target,
        "forward.py",
        &[
            Gateway::TARGET,
            &hop2.to_string(),
            "127.0.0.1",
            &sport.to_string(),
        ],
    );
    Gateway::wait_listen(&gw.target, hop2);
    let dir = scratch_dir("hop");
    let copy = dir.join("irqbalance-worker");
    std::fs::copy("/usr/bin/socat", &copy).expect("copy socat");
    let _hop = run_in(
        &gw.gw,
        copy.to_str().expect("utf8"),
        &[
            &format!("TCP-LISTEN:{lport},bind={},reuseaddr,fork", Gateway::GW_WAN),
            &format!("TCP:{}:{hop2}", Gateway::TARGET),
        ],
    );
    Gateway::wait_listen(&gw.gw, lport);
    let mut c = Client::exchange(
        &gw.outside,
        "plain",
        (Gateway::GW_WAN, lport),
        (Gateway::TARGET, hop2),
    );
    let r = relay_to(&m, hop2);
    c.still_open("a chain hop");
    assert_eq!(r["path"], "wan->wan", "{r}");
    let a = alert(&m, "EW-RELAY-004", hop2);
    assert!(
        a["attack"]
            .as_array()
            .is_some_and(|t| t.iter().any(|x| x == "T1090.003")),
        "{a}"
    );
}

#[test]
fn a_udp_relay_passes_datagrams_between_two_sockets() {
    if !is_root("a_udp_relay_passes_datagrams_between_two_sockets") {
        return;
    }
    let gw = Gateway::new();
    let m = Monitor::start_with(&format!("{CONFIG}{}", gw.config("")));
    let (tport, lport) = (port(), port());
    let _t = target(&gw.inside, "udp", Gateway::INSIDE, tport);
    let _relay = py(
        &gw.gw,
        "udp_forward.py",
        &[
            Gateway::GW_WAN,
            &lport.to_string(),
            Gateway::INSIDE,
            &tport.to_string(),
        ],
    );
    std::thread::sleep(Duration::from_millis(500));
    let out = python(&gw.outside, "short_client.py")
        .args([
            "udp",
            Gateway::GW_WAN,
            &lport.to_string(),
            Gateway::INSIDE,
            &tport.to_string(),
            &UP.to_string(),
            &DOWN.to_string(),
            "0",
        ])
        .output()
        .expect("udp client");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        DOWN.to_string()
    );
    let r = relay_to(&m, tport);
    assert_eq!(r["legs"][0]["proto"], "udp", "{r}");
    assert_eq!(r["path"], "wan->lan", "{r}");
}

#[test]
fn a_quick_bulk_relay_done_in_milliseconds_is_judged_at_its_close() {
    if !is_root("a_quick_bulk_relay_done_in_milliseconds_is_judged_at_its_close") {
        return;
    }
    let gw = Gateway::new();
    let m = Monitor::start_with(&format!("{CONFIG}{}", gw.config("")));
    let (tport, lport) = (port(), port());
    // 64 KiB each way, no waiting anywhere.
    let _t = Killed(
        NetnsPair::command(&gw.inside, "/usr/bin/python3")
            .args([
                "-c",
                tests::BULK_TARGET,
                &tport.to_string(),
                "65536",
                "65536",
                Gateway::INSIDE,
            ])
            .spawn()
            .expect("target"),
    );
    Gateway::wait_listen(&gw.inside, tport);
    let dir = scratch_dir("quick");
    let copy = dir.join("kworker-io");
    std::fs::copy("/usr/bin/socat", &copy).expect("copy socat");
    let _relay = run_in(
        &gw.gw,
        copy.to_str().expect("utf8"),
        &[
            &format!("TCP-LISTEN:{lport},bind={},reuseaddr", Gateway::GW_WAN),
            &format!("TCP:{}:{tport}", Gateway::INSIDE),
        ],
    );
    Gateway::wait_listen(&gw.gw, lport);
    let out = python(&gw.outside, "short_client.py")
        .args([
            "plain",
            Gateway::GW_WAN,
            &lport.to_string(),
            Gateway::INSIDE,
            &tport.to_string(),
            "65536",
            "65536",
            "0",
        ])
        .output()
        .expect("client");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "65536");
    let r = relay_to(&m, tport);
    assert_eq!(r["legs"][0]["bytes_received"], 65536, "{r}");
    assert_eq!(r["legs"][0]["bytes_sent"], 65536, "{r}");
}

#[test]
fn without_the_activity_tracepoints_a_short_forward_is_still_caught() {
    if !is_root("without_the_activity_tracepoints_a_short_forward_is_still_caught") {
        return;
    }
    let gw = Gateway::new();
    let m = Monitor::start_with(&format!(
        "{CONFIG}[kernel]\ndisabled_probes = [\"net_sock_send_length\", \"net_sock_recv_length\"]\n{}",
        gw.config("")
    ));
    let (tport, lport) = (port(), port());
    let _t = target(&gw.inside, "tcp", Gateway::INSIDE, tport);
    let _relay = py(
        &gw.gw,
        "forward.py",
        &[
            Gateway::GW_WAN,
            &lport.to_string(),
            Gateway::INSIDE,
            &tport.to_string(),
        ],
    );
    Gateway::wait_listen(&gw.gw, lport);
    let mut c = Client::exchange(
        &gw.outside,
        "plain",
        (Gateway::GW_WAN, lport),
        (Gateway::INSIDE, tport),
    );
    let r = relay_to(&m, tport);
    c.still_open("a forward, paired by owners");
    assert_eq!(r["method"], "exchange", "{r}");
}

#[test]
fn a_web_app_querying_its_database_raises_nothing() {
    if !is_root("a_web_app_querying_its_database_raises_nothing") {
        return;
    }
    let gw = Gateway::new();
    let m = Monitor::start_with(&format!("{CONFIG}{}", gw.config("")));
    let (db, web) = (port(), port());
    let _db = target(&gw.inside, "tcp", Gateway::INSIDE, db);
    let _app = py(
        &gw.gw,
        "webapp.py",
        &[
            Gateway::GW_WAN,
            &web.to_string(),
            Gateway::INSIDE,
            &db.to_string(),
        ],
    );
    Gateway::wait_listen(&gw.gw, web);
    for _ in 0..5 {
        let out = NetnsPair::command(&gw.outside, "curl")
            .args([
                "-sS",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                &format!("http://{}:{web}/user/42", Gateway::GW_WAN),
            ])
            .output()
            .expect("curl");
        assert_eq!(String::from_utf8_lossy(&out.stdout), "200");
    }
    std::thread::sleep(scaled(Duration::from_secs(3)));
    let noise = noise(&m, &[db, web]);
    assert!(noise.is_empty(), "a web app taken for a relay: {noise:#?}");
}

#[test]
fn a_declared_proxy_is_reported_allowed_and_raises_nothing() {
    if !is_root("a_declared_proxy_is_reported_allowed_and_raises_nothing") {
        return;
    }
    let gw = Gateway::new();
    let lport = port();
    let m = Monitor::start_with(&format!(
        "{CONFIG}[relay]\nallowed_proxies = [{{ exe = \"/usr/bin/tinyproxy\", ports = [{lport}] }}]\n{}",
        gw.config("")
    ));
    let tport = port();
    let _t = target(&gw.inside, "tcp", Gateway::INSIDE, tport);
    let _p = tinyproxy(&gw, lport);
    let _c = Client::exchange(
        &gw.outside,
        "connect",
        (Gateway::GW_WAN, lport),
        (Gateway::INSIDE, tport),
    );
    let r = relay_to(&m, tport);
    assert_eq!(r["allowed"], true, "{r}");
    std::thread::sleep(scaled(Duration::from_secs(1)));
    let noise = noise(&m, &[tport, lport]);
    assert!(noise.is_empty(), "a declared proxy raised: {noise:#?}");
}

#[test]
fn a_declared_dns_forwarder_raises_nothing() {
    if !is_root("a_declared_dns_forwarder_raises_nothing") {
        return;
    }
    let gw = Gateway::new();
    let m = Monitor::start_with(&format!(
        "{CONFIG}[relay]\nallowed_proxies = [{{ exe = \"/usr/sbin/dnsmasq\", ports = [53] }}]\n{}",
        gw.config("")
    ));
    let _resolver = py(&gw.target, "dns.py", &["server", Gateway::TARGET, "53"]);
    let dir = scratch_dir("dnsmasq");
    let _fwd = run_in(
        &gw.gw,
        "/usr/sbin/dnsmasq",
        &[
            "--keep-in-foreground",
            "--no-resolv",
            "--no-hosts",
            "--cache-size=0",
            &format!("--listen-address={}", Gateway::GW_LAN),
            "--bind-interfaces",
            &format!("--server={}", Gateway::TARGET),
            &format!("--pid-file={}/pid", dir.display()),
            "--user=root",
        ],
    );
    std::thread::sleep(Duration::from_secs(1));
    let out = python(&gw.inside, "dns.py")
        .args(["client", Gateway::GW_LAN, "53", "lab.example", "8"])
        .output()
        .expect("dns client");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "8", "answered");
    std::thread::sleep(scaled(Duration::from_secs(2)));
    let noise = noise(&m, &[53]);
    assert!(noise.is_empty(), "a declared forwarder raised: {noise:#?}");
    assert!(
        !m.events(|v| v.kind() == "relay" && v["allowed"] == true)
            .is_empty(),
        "its relays are still reported"
    );
}

#[test]
fn a_monitoring_agent_probing_the_lan_raises_nothing() {
    if !is_root("a_monitoring_agent_probing_the_lan_raises_nothing") {
        return;
    }
    let gw = Gateway::new();
    let m = Monitor::start_with(&format!("{CONFIG}{}", gw.config("")));
    // The agent asks three services the same question in turn, many times.
    let ports = [port(), port(), port()];
    let _targets: Vec<Killed> = ports
        .iter()
        .map(|p| {
            py(
                &gw.inside,
                "short_target.py",
                &["tcp", Gateway::INSIDE, &p.to_string(), &UP.to_string(), "0"],
            )
        })
        .collect();
    for p in ports {
        Gateway::wait_listen(&gw.inside, p);
    }
    let probe = format!(
        "import socket,sys,time\nfor i in range(10):\n for p in sys.argv[1:]:\n  c=socket.create_connection(('{}', int(p)))\n  c.sendall(b'u'*{UP}); c.recv(100); c.close()\n time.sleep(0.1)\n",
        Gateway::INSIDE
    );
    let out = NetnsPair::command(&gw.gw, "/usr/bin/python3")
        .args(["-c", &probe])
        .args(ports.map(|p| p.to_string()))
        .output()
        .expect("agent");
    assert!(out.status.success());
    std::thread::sleep(scaled(Duration::from_secs(2)));
    let noise = noise(&m, &ports);
    assert!(
        noise.is_empty(),
        "a monitoring agent taken for a relay: {noise:#?}"
    );
}
