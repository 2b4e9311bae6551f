//! Traffic tunnelled inside other protocols (T1572), from the gateway's own
//! processes and through it from a LAN host: DNS queries carrying data in
//! long names, ICMP echoes whose answers are not echoes, an HTTP connection
//! that goes on in another protocol. And what looks like them but is not:
//! ordinary lookups, ping, keep-alive HTTP.

use std::time::Duration;

use serde_json::Value;
use tests::{is_root, scaled, EventExt as _, Gateway, Killed, Monitor, NetnsPair};

const CONFIG: &str = "[output]\nseed_events = false\nkinds = [\"tunnel\", \"relay\", \"alert\"]\n[network]\nseed_events = false\n";

fn script(name: &str) -> &'static str {
    match name {
        "dns.py" => include_str!("../scripts/dns.py"),
        "icmp_tunnel.py" => include_str!("../scripts/icmp_tunnel.py"),
        "http_tunnel.py" => include_str!("../scripts/http_tunnel.py"),
        _ => panic!("no script {name}"),
    }
}

fn python(ns: &str, name: &str, args: &[&str]) -> std::process::Command {
    let mut c = NetnsPair::command(ns, "/usr/bin/python3");
    c.args(["-c", script(name)]).args(args);
    c
}

fn background(ns: &str, name: &str, args: &[&str]) -> Killed {
    Killed(
        python(ns, name, args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("python3"),
    )
}

/// Runs a client to its end; returns what it printed.
fn run(ns: &str, name: &str, args: &[&str]) -> String {
    let out = python(ns, name, args).output().expect("client");
    assert!(
        out.status.success(),
        "{name} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn start(gw: &Gateway) -> Monitor {
    Monitor::start_with(&format!("{CONFIG}{}", gw.config("")))
}

/// A tunnel seen in namespace `ns` (the gateway's sockets, or the
/// gateway's interfaces for forwarded flows): every test's monitor sees
/// the whole machine, other tests' namespaces included.
fn tunnel(m: &Monitor, ns: &str, protocol: &str, forwarded: bool) -> Value {
    let inode = NetnsPair::inode(ns);
    m.expect_event(
        &format!("a {protocol} tunnel (forwarded: {forwarded}) in {ns}"),
        |v| {
            v.kind() == "tunnel"
                && v["protocol"] == protocol
                && v["forwarded"] == forwarded
                && v["netns"] == inode
        },
    )
}

/// No tunnel in the gateway's or the LAN host's namespace.
fn quiet(m: &Monitor, gw: &Gateway, what: &str) {
    std::thread::sleep(scaled(Duration::from_secs(3)));
    let ours = [NetnsPair::inode(&gw.gw), NetnsPair::inode(&gw.inside)];
    let t = m.events(|v| v.kind() == "tunnel" && ours.iter().any(|n| v["netns"] == *n));
    assert!(t.is_empty(), "{what} taken for a tunnel: {t:#?}");
}

/// A DNS server on the internet host.
fn resolver(gw: &Gateway) -> Killed {
    let k = background(&gw.target, "dns.py", &["server", Gateway::TARGET, "53"]);
    std::thread::sleep(Duration::from_millis(500));
    k
}

#[test]
fn a_dns_tunnel_from_the_gateway_and_through_it() {
    if !is_root("a_dns_tunnel_from_the_gateway_and_through_it") {
        return;
    }
    let gw = Gateway::new();
    let m = start(&gw);
    let _r = resolver(&gw);
    assert_eq!(
        run(
            &gw.gw,
            "dns.py",
            &["tunnel", Gateway::TARGET, "53", "t.example", "30"]
        ),
        "30"
    );
    let t = tunnel(&m, &gw.gw, "dns", false);
    assert_eq!(t["remote"]["port"], 53, "{t}");
    assert_eq!(t["process"]["exe"], "/usr/bin/python3.11", "{t}");
    m.expect_event("EW-TUN-002", |v| {
        v.kind() == "alert" && v["rule"] == "EW-TUN-002"
    });
    assert_eq!(
        run(
            &gw.inside,
            "dns.py",
            &["tunnel", Gateway::TARGET, "53", "t.example", "30"]
        ),
        "30"
    );
    let f = tunnel(&m, &gw.gw, "dns", true);
    assert_eq!(f["local"]["addr"], Gateway::INSIDE, "{f}");
}

#[test]
fn ordinary_lookups_are_not_a_dns_tunnel() {
    if !is_root("ordinary_lookups_are_not_a_dns_tunnel") {
        return;
    }
    let gw = Gateway::new();
    let m = start(&gw);
    let _r = resolver(&gw);
    assert_eq!(
        run(
            &gw.gw,
            "dns.py",
            &["client", Gateway::TARGET, "53", "lab.example", "60"]
        ),
        "60"
    );
    assert_eq!(
        run(
            &gw.inside,
            "dns.py",
            &["client", Gateway::TARGET, "53", "lab.example", "60"]
        ),
        "60"
    );
    quiet(&m, &gw, "ordinary lookups");
}

/// The tunnel's server on the internet host, which does not answer pings
/// itself.
fn icmp_server(gw: &Gateway) -> Killed {
    Gateway::run(&gw.target, "sysctl -qw net.ipv4.icmp_echo_ignore_all=1");
    let k = background(&gw.target, "icmp_tunnel.py", &["server"]);
    std::thread::sleep(Duration::from_millis(500));
    k
}

#[test]
fn an_icmp_tunnel_from_the_gateway_and_through_it() {
    if !is_root("an_icmp_tunnel_from_the_gateway_and_through_it") {
        return;
    }
    let gw = Gateway::new();
    let m = start(&gw);
    let _s = icmp_server(&gw);
    assert_eq!(
        run(&gw.gw, "icmp_tunnel.py", &["client", Gateway::TARGET, "6"]),
        "6"
    );
    let t = tunnel(&m, &gw.gw, "icmp", false);
    assert_eq!(t["proto"], "icmp", "{t}");
    assert!(
        t["reason"]
            .as_str()
            .is_some_and(|r| r.contains("not an echo")),
        "{t}"
    );
    m.expect_event("EW-TUN-003", |v| {
        v.kind() == "alert" && v["rule"] == "EW-TUN-003"
    });
    assert_eq!(
        run(
            &gw.inside,
            "icmp_tunnel.py",
            &["client", Gateway::TARGET, "6"]
        ),
        "6"
    );
    tunnel(&m, &gw.gw, "icmp", true);
}

#[test]
fn ping_is_not_an_icmp_tunnel() {
    if !is_root("ping_is_not_an_icmp_tunnel") {
        return;
    }
    let gw = Gateway::new();
    let m = start(&gw);
    for ns in [&gw.gw, &gw.inside] {
        let ok = NetnsPair::command(ns, "busybox")
            .args(["ping", "-c", "6", "-i", "0.2", "-s", "200", Gateway::TARGET])
            .stdout(std::process::Stdio::null())
            .status()
            .expect("ping")
            .success();
        assert!(ok, "ping from {ns}");
    }
    quiet(&m, &gw, "ping");
}

#[test]
fn an_http_connection_going_on_in_another_protocol() {
    if !is_root("an_http_connection_going_on_in_another_protocol") {
        return;
    }
    let gw = Gateway::new();
    let m = start(&gw);
    let _s = background(
        &gw.target,
        "http_tunnel.py",
        &["server", Gateway::TARGET, "8080"],
    );
    Gateway::wait_listen(&gw.target, 8080);
    // Keep-alive HTTP first: requests again after each answer.
    assert_eq!(
        run(
            &gw.gw,
            "http_tunnel.py",
            &["client", Gateway::TARGET, "8080", "8", "keepalive"]
        ),
        "8"
    );
    quiet(&m, &gw, "keep-alive HTTP");
    assert_eq!(
        run(
            &gw.gw,
            "http_tunnel.py",
            &["client", Gateway::TARGET, "8080", "8"]
        ),
        "8"
    );
    let t = tunnel(&m, &gw.gw, "http", false);
    assert_eq!(t["remote"]["port"], 8080, "{t}");
    m.expect_event("EW-TUN-004", |v| {
        v.kind() == "alert" && v["rule"] == "EW-TUN-004"
    });
}
