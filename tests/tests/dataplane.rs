//! The gateway's data plane with real iptables, nft and iperf3 in network
//! namespaces the tests make: forwarded flows with both tuples and exact
//! bytes, transit alerts (hairpin, DNAT to a port not published), quiet
//! published services, and every configuration change that enables
//! relaying or sniffing, each with the process that made it.

use std::{
    process::{Command, Stdio},
    time::Duration,
};

use serde_json::Value;
use tests::{assert_within_1pct, is_root, Gateway, Killed, Monitor, NetnsPair};

const OUTPUT: &str = "[output]\nseed_events = false\nkinds = [\"forward\", \"transit\", \"config_change\", \"alert\"]\n[network]\nseed_events = false\n";

fn start(gw: &Gateway, extra: &str) -> Monitor {
    Monitor::start_with(&format!("{OUTPUT}{}", gw.config(extra)))
}

/// A TCP sink in namespace `ns` on `addr:port` that reads and discards
/// everything, for many connections.
fn sink(ns: &str, addr: &str, port: u16) -> Killed {
    let child = NetnsPair::command(ns, "ncat")
        .args(["-l", "-k", "--recv-only", addr, &port.to_string()])
        .stdout(Stdio::null())
        .spawn()
        .expect("ncat listener");
    Gateway::wait_listen(ns, port);
    Killed(child)
}

/// Sends `bytes` bytes from namespace `ns` to `addr:port` and closes.
fn send(ns: &str, addr: &str, port: u16, bytes: usize) {
    let mut child = NetnsPair::command(ns, "ncat")
        .args(["--send-only", addr, &port.to_string()])
        .stdin(Stdio::piped())
        .spawn()
        .expect("ncat client");
    use std::io::Write as _;
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(&vec![b'x'; bytes])
        .expect("send");
    let status = child.wait().expect("ncat");
    assert!(status.success(), "ncat to {addr}:{port} failed");
}

fn endpoint(v: &Value, side: &str, end: &str) -> String {
    let e = &v[side][end];
    format!(
        "{}:{}",
        e["addr"].as_str().unwrap_or_default(),
        e["port"].as_u64().unwrap_or_default()
    )
}

fn is_flow(v: &Value, kind: &str, original_dst: &str) -> bool {
    v["kind"] == kind && endpoint(v, "original", "dst") == original_dst
}

#[test]
fn dnat_to_an_unpublished_port_is_counted_with_both_tuples_and_alerts() {
    if !is_root("dnat_to_an_unpublished_port_is_counted_with_both_tuples_and_alerts") {
        return;
    }
    let gw = Gateway::new();
    let m = start(&gw, "");
    Gateway::run(
        &gw.gw,
        "iptables -t nat -A PREROUTING -i wan0 -p tcp --dport 2222 -j DNAT --to-destination 10.77.0.2:22",
    );
    let _sink = sink(&gw.inside, Gateway::INSIDE, 22);
    const SENT: usize = 300_000;
    send(&gw.outside, Gateway::GW_WAN, 2222, SENT);

    let dst = format!("{}:2222", Gateway::GW_WAN);
    let transit = m.expect_event("transit event of the DNAT'd flow", |v| {
        is_flow(v, "transit", &dst)
    });
    assert_eq!(transit["reason"], "dnat_unpublished", "{transit}");
    assert_eq!(
        endpoint(&transit, "original", "src").split(':').next(),
        Some(Gateway::OUTSIDE)
    );
    assert_eq!(
        endpoint(&transit, "translated", "dst"),
        "10.77.0.2:22",
        "{transit}"
    );
    assert_eq!(transit["nat"], "dnat");
    assert_eq!(transit["in"]["iface"], "wan0");
    assert_eq!(transit["in"]["role"], "wan");
    assert_eq!(transit["out"]["iface"], "lan0");
    assert_eq!(transit["out"]["role"], "lan");

    let alert = m.expect_event("EW-FWD-002 alert naming both tuples", |v| {
        v["kind"] == "alert"
            && v["rule"] == "EW-FWD-002"
            && v["connections"][0]["original"]["dst"]["port"] == 2222
    });
    let c = &alert["connections"][0];
    assert_eq!(c["translated"]["dst"]["addr"], Gateway::INSIDE, "{alert}");
    assert!(c["forward"]["bytes"].as_u64().is_some(), "{alert}");

    let ended = m.expect_event("the flow's end with its counts", |v| {
        is_flow(v, "forward", &dst) && v["state"] == "ended"
    });
    assert_eq!(ended["flow_id"], transit["flow_id"]);
    assert_eq!(ended["end_reason"], "fin", "{ended}");
    let payload = ended["forward"]["payload_bytes"]
        .as_u64()
        .unwrap_or_default();
    assert_within_1pct("forwarded payload bytes", payload, SENT as u64);
    let ip_bytes = ended["forward"]["bytes"].as_u64().unwrap_or_default();
    assert!(ip_bytes > payload, "IP bytes include headers: {ended}");

    let by_roles = m
        .metric("edgewatch_forwarded_bytes_total{in_role=\"wan\",out_role=\"lan\"}")
        .unwrap_or_default();
    assert!(
        by_roles >= ip_bytes as f64,
        "forwarded bytes metric {by_roles} < {ip_bytes}"
    );
    let transits = m
        .metric("edgewatch_transit_flows_total{reason=\"dnat_unpublished\"}")
        .unwrap_or_default();
    assert!(transits >= 1.0);

    // The rule that set it up, made with iptables on its nftables backend.
    let change = m.expect_event("iptables-nft change", |v| {
        v["kind"] == "config_change"
            && v["change"] == "netfilter"
            && v["process"]["argv"][0] == "iptables"
    });
    assert_eq!(change["backend"], "nftables", "{change}");
    assert_eq!(change["tables"][0], "ip nat");
}

#[test]
fn nft_dnat_to_a_published_service_is_counted_and_stays_quiet() {
    if !is_root("nft_dnat_to_a_published_service_is_counted_and_stays_quiet") {
        return;
    }
    let gw = Gateway::new();
    let m = start(&gw, "published = [{ proto = \"tcp\", port = 8443 }]");
    for cmd in [
        "nft add table ip ewnat",
        "nft add chain ip ewnat pre { type nat hook prerouting priority -100 ; }",
        "nft add rule ip ewnat pre iifname wan0 tcp dport 8443 dnat to 10.77.0.2:443",
    ] {
        Gateway::run(&gw.gw, cmd);
    }
    let _sink = sink(&gw.inside, Gateway::INSIDE, 443);
    const SENT: usize = 200_000;
    send(&gw.outside, Gateway::GW_WAN, 8443, SENT);
    let dst = format!("{}:8443", Gateway::GW_WAN);
    let ended = m.expect_event("the published flow's end", |v| {
        is_flow(v, "forward", &dst) && v["state"] == "ended"
    });
    assert_eq!(
        endpoint(&ended, "translated", "dst"),
        "10.77.0.2:443",
        "{ended}"
    );
    assert_eq!(ended["nat"], "dnat");
    let payload = ended["forward"]["payload_bytes"]
        .as_u64()
        .unwrap_or_default();
    assert_within_1pct("forwarded payload bytes", payload, SENT as u64);

    // The nft commits that set it up are reported with their process.
    let change = m.expect_event("nft change", |v| {
        v["kind"] == "config_change"
            && v["backend"] == "nftables"
            && v["ops"]["newrule"] == 1
            && v["process"]["argv"][0] == "nft"
    });
    assert_eq!(change["tables"][0], "ip ewnat", "{change}");
    assert_eq!(change["attribution"], "netlink");

    // A flow after it to the unpublished port raises the alert, so the
    // silence above is the published list at work, not a slow scan.
    Gateway::run(
        &gw.gw,
        "nft add rule ip ewnat pre iifname wan0 tcp dport 8444 dnat to 10.77.0.2:443",
    );
    send(&gw.outside, Gateway::GW_WAN, 8444, 10_000);
    m.expect_event("transit of the unpublished port", |v| {
        is_flow(v, "transit", &format!("{}:8444", Gateway::GW_WAN))
    });
    let quiet = m.events(|v| {
        is_flow(v, "transit", &dst)
            || (v["kind"] == "alert" && v["connections"][0]["original"]["dst"]["port"] == 8443)
    });
    assert!(quiet.is_empty(), "published service raised: {quiet:?}");
}

#[test]
fn hairpin_from_wan_back_to_wan_alerts() {
    if !is_root("hairpin_from_wan_back_to_wan_alerts") {
        return;
    }
    let gw = Gateway::new();
    let m = start(&gw, "");
    Gateway::run(
        &gw.gw,
        "iptables -t nat -A PREROUTING -i wan0 -p tcp --dport 9000 -j DNAT --to-destination 198.51.100.20:80",
    );
    Gateway::run(
        &gw.gw,
        "iptables -t nat -A POSTROUTING -o wan1 -j MASQUERADE",
    );
    let _sink = sink(&gw.target, Gateway::TARGET, 80);
    send(&gw.outside, Gateway::GW_WAN, 9000, 50_000);
    let dst = format!("{}:9000", Gateway::GW_WAN);
    let transit = m.expect_event("hairpin transit", |v| is_flow(v, "transit", &dst));
    assert_eq!(transit["reason"], "hairpin", "{transit}");
    assert_eq!(transit["nat"], "dnat+snat");
    assert_eq!(transit["out"]["iface"], "wan1");
    assert_eq!(
        endpoint(&transit, "translated", "src").split(':').next(),
        Some(Gateway::GW_WAN1)
    );
    let alert = m.expect_event("EW-FWD-001 alert", |v| {
        v["kind"] == "alert"
            && v["rule"] == "EW-FWD-001"
            && v["connections"][0]["original"]["dst"]["port"] == 9000
    });
    assert_eq!(alert["severity"], "critical");
    assert_eq!(
        alert["connections"][0]["translated"]["dst"]["addr"],
        Gateway::TARGET
    );
}

/// iperf3's own count of what it sent, TCP and UDP, against the gateway's.
#[test]
fn iperf3_through_the_gateway_matches_the_forwarded_bytes() {
    if !is_root("iperf3_through_the_gateway_matches_the_forwarded_bytes") {
        return;
    }
    let gw = Gateway::new();
    let m = start(&gw, "idle_secs = 2");
    let _server = Killed(
        NetnsPair::command(&gw.inside, "iperf3")
            .args(["-s", "-B", Gateway::INSIDE, "-p", "5201"])
            .stdout(Stdio::null())
            .spawn()
            .expect("iperf3 server"),
    );
    Gateway::wait_listen(&gw.inside, 5201);
    // A 64 KiB window keeps the bytes in flight when iperf3 closes (its
    // server resets the data connection) well under 1% of the transfer.
    for (udp, args) in [
        (false, vec!["-n", "30M", "-w", "64K"]),
        (true, vec!["-u", "-b", "20M", "-n", "3M", "-l", "1200"]),
    ] {
        let out = NetnsPair::command(&gw.outside, "iperf3")
            .args(["-c", Gateway::INSIDE, "-p", "5201", "--json"])
            .args(&args)
            .output()
            .expect("iperf3 client");
        assert!(
            out.status.success(),
            "iperf3: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let report: Value = serde_json::from_slice(&out.stdout).expect("iperf3 json");
        let end = &report["end"];
        // What iperf3 says crossed: sent and received for TCP; for UDP,
        // sent less the datagrams the server reports lost.
        let counts: Vec<u64> = if udp {
            let sum = &end["sum"];
            let (bytes, packets, lost) = (
                sum["bytes"].as_u64().expect("udp bytes"),
                sum["packets"].as_u64().expect("udp packets").max(1),
                sum["lost_packets"].as_u64().unwrap_or(0),
            );
            vec![bytes * (packets - lost) / packets]
        } else {
            vec![
                end["sum_sent"]["bytes"].as_u64().expect("tcp sent"),
                end["sum_received"]["bytes"].as_u64().expect("tcp received"),
            ]
        };
        let proto = if udp { "udp" } else { "tcp" };
        let dst = format!("{}:5201", Gateway::INSIDE);
        // The data flow is the largest to port 5201 (TCP tests also open a
        // small control connection).
        let largest = || {
            m.events(|v| {
                is_flow(v, "forward", &dst) && v["state"] == "ended" && v["proto"] == proto
            })
            .iter()
            .filter_map(|v| v["forward"]["payload_bytes"].as_u64())
            .max()
            .unwrap_or(0)
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while largest() * 100 < counts[0] * 99 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(200));
        }
        for want in counts {
            assert_within_1pct(&format!("{proto} forwarded payload"), largest(), want);
        }
    }
}

/// Matches the `config_change` of type `change` made by process `pid`.
fn by(pid: u64, change: &'static str) -> impl Fn(&Value) -> bool {
    move |v: &Value| {
        v["kind"] == "config_change" && v["change"] == change && v["process"]["pid"] == pid
    }
}

/// Spawns `args` in namespace `ns`, waits, and returns its pid.
fn run_pid(ns: &str, args: &[&str]) -> u64 {
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns])
        .args(args)
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn");
    let pid = u64::from(child.id());
    let status = child.wait().expect("wait");
    assert!(status.success(), "{args:?} failed");
    pid
}

/// A packet socket with a promiscuous membership and a classic filter,
/// then a BPF program load (an `ewtest` socket filter: `return 0`).
const SNIFFER: &str = r#"
import ctypes, socket, struct, sys
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))
ifindex = socket.if_nametoindex(sys.argv[1])
s.setsockopt(263, 1, struct.pack("iHH8s", ifindex, 1, 0, b""))
insns = (ctypes.c_ubyte * 8)(6, 0, 0, 0, 0, 0, 0, 0)
s.setsockopt(socket.SOL_SOCKET, 26, struct.pack("HxxxxxxQ", 1, ctypes.addressof(insns)))
prog = (ctypes.c_ubyte * 16)(0xb7, 0, 0, 0, 0, 0, 0, 0, 0x95, 0, 0, 0, 0, 0, 0, 0)
lic = ctypes.create_string_buffer(b"GPL")
attr = bytearray(128)
struct.pack_into("IIQQ", attr, 0, 1, 2, ctypes.addressof(prog), ctypes.addressof(lic))
attr[48:54] = b"ewtest"
buf = (ctypes.c_ubyte * 128).from_buffer(attr)
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall(321, 5, buf, 128)
"#;

#[test]
fn relay_and_sniffing_changes_are_reported_with_their_process() {
    if !is_root("relay_and_sniffing_changes_are_reported_with_their_process") {
        return;
    }
    let gw = Gateway::new();
    let m = start(&gw, "");
    let ns = gw.gw.as_str();

    let pid = run_pid(ns, &["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
    let e = m.expect_event("ip_forward by sysctl", by(pid, "sysctl"));
    assert_eq!(e["sysctl"], "net/ipv4/ip_forward");
    assert_eq!(e["enabled"], true);
    assert_eq!(e["attribution"], "exact");
    m.expect_event("EW-CFG-001", |v| {
        v["kind"] == "alert" && v["rule"] == "EW-CFG-001" && v["process"]["pid"] == pid
    });

    let pid = run_pid(
        ns,
        &[
            "sh",
            "-c",
            "echo 1 > /proc/sys/net/ipv6/conf/all/forwarding",
        ],
    );
    let e = m.expect_event("forwarding by a shell write", by(pid, "sysctl"));
    assert_eq!(e["sysctl"], "net/ipv6/conf/all/forwarding");
    assert_eq!(e["process"]["comm"], "sh");

    let pid = run_pid(
        ns,
        &[
            "iptables-legacy",
            "-t",
            "nat",
            "-A",
            "PREROUTING",
            "-p",
            "tcp",
            "--dport",
            "7",
            "-j",
            "ACCEPT",
        ],
    );
    let e = m.expect_event("legacy iptables", by(pid, "netfilter"));
    assert_eq!(e["backend"], "xtables");
    assert_eq!(e["tables"][0], "ip nat");

    let pid = run_pid(ns, &["nft", "add", "table", "inet", "ewtest"]);
    let e = m.expect_event("nft", by(pid, "netfilter"));
    assert_eq!(e["backend"], "nftables");
    assert_eq!(e["ops"]["newtable"], 1);

    let pid = run_pid(ns, &["ip", "tuntap", "add", "dev", "ewtap0", "mode", "tap"]);
    let e = m.expect_event("tap by ioctl", by(pid, "tunnel"));
    assert_eq!(e["link_kind"], "tap");
    assert_eq!(e["iface"], "ewtap0");
    // Later alerts of a rule on the same lineage (this test) fold into the
    // first, so each rule is checked on the first change that raises it.
    m.expect_event("EW-CFG-003", |v| {
        v["kind"] == "alert" && v["rule"] == "EW-CFG-003" && v["process"]["pid"] == pid
    });
    let pid = run_pid(ns, &["ip", "tuntap", "add", "dev", "ewtun0", "mode", "tun"]);
    let e = m.expect_event("tun by ioctl", by(pid, "tunnel"));
    assert_eq!(e["link_kind"], "tun");
    assert_eq!(e["iface"], "ewtun0");

    let pid = run_pid(
        ns,
        &[
            "ip",
            "link",
            "add",
            "ewvx0",
            "type",
            "vxlan",
            "id",
            "42",
            "dstport",
            "4789",
            "local",
            Gateway::GW_WAN1,
        ],
    );
    let e = m.expect_event("vxlan by netlink", by(pid, "tunnel"));
    assert_eq!(e["link_kind"], "vxlan");
    assert_eq!(e["iface"], "ewvx0");
    assert_eq!(e["attribution"], "netlink");

    let pid = run_pid(ns, &["ip", "link", "set", "lan0", "promisc", "on"]);
    let e = m.expect_event("promisc by netlink", by(pid, "promisc"));
    assert_eq!(e["iface"], "lan0");
    assert_eq!(e["method"], "netlink");
    m.expect_event("EW-CFG-004", |v| {
        v["kind"] == "alert" && v["rule"] == "EW-CFG-004" && v["process"]["pid"] == pid
    });

    let pid = run_pid(ns, &["/usr/bin/python3", "-c", SNIFFER, "wan0"]);
    let e = m.expect_event("packet socket", by(pid, "packet_socket"));
    assert_eq!(e["socket"], "raw");
    let e = m.expect_event("promiscuous membership", by(pid, "promisc"));
    assert_eq!(e["method"], "packet_membership");
    let e = m.expect_event("socket filter", by(pid, "socket_filter"));
    assert_eq!(e["filter"], "classic");
    assert_eq!(e["socket"], "packet");
    let e = m.expect_event("BPF program load", by(pid, "bpf_program"));
    assert_eq!(e["program"], "ewtest");
    assert_eq!(e["filter"], "socket_filter");
    for rule in ["EW-CFG-005", "EW-CFG-006"] {
        m.expect_event(rule, |v| {
            v["kind"] == "alert" && v["rule"] == rule && v["process"]["pid"] == pid
        });
    }

    let own = m.events(|v| v["kind"] == "config_change" && v["process"]["pid"] == m.pid() as u64);
    assert!(own.is_empty(), "the monitor reported itself: {own:?}");
    for ty in [
        "sysctl",
        "netfilter",
        "tunnel",
        "promisc",
        "packet_socket",
        "socket_filter",
        "bpf_program",
    ] {
        let n = m
            .metric(&format!("edgewatch_config_changes_total{{type=\"{ty}\"}}"))
            .unwrap_or_default();
        assert!(n >= 1.0, "config_changes_total for {ty} is {n}");
    }
}
