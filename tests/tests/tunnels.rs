//! Tunnel links an intruder adds to turn a gateway into a relay: GRE,
//! IPIP and WireGuard, each reported as a `config_change` with the process
//! that asked for it over rtnetlink, and each given the forwarding counter
//! as a `tunnel` interface.
//!
//! These link kinds are kernel modules. A kernel built without them (the
//! development host's) cannot create them, so the test reports each kind
//! it could not try and checks the others; `cargo xtask vm` loads the
//! modules into the Debian kernels it boots and sets `EDGEWATCH_VM=1`,
//! under which a missing kind is a failure, not a skip.

use std::process::{Command, Stdio};

use serde_json::Value;
use tests::{is_root, scaled, Monitor, NetnsPair};

const CONFIG: &str = "[output]\nseed_events = false\nkinds = [\"config_change\", \"alert\"]\n[network]\nseed_events = false\n";

/// The kinds, with the `ip link add` arguments after the name.
const KINDS: [(&str, &str, &[&str]); 3] = [
    (
        "gre",
        "ewgre0",
        &[
            "type",
            "gre",
            "local",
            NetnsPair::A4,
            "remote",
            "198.51.100.7",
        ],
    ),
    (
        "ipip",
        "ewipip0",
        &[
            "type",
            "ipip",
            "local",
            NetnsPair::A4,
            "remote",
            "198.51.100.8",
        ],
    ),
    ("wireguard", "ewwg0", &["type", "wireguard"]),
];

/// Whether the running kernel can create links of `kind`: asked in a
/// namespace of its own, so the probe is not itself a reported change in
/// the watched one.
fn kernel_has(kind: &str, args: &[&str]) -> bool {
    let probe = NetnsPair::new();
    let ok = NetnsPair::command(&probe.b, "ip")
        .args(["link", "add", "ewprobe0"])
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("ip")
        .success();
    if !ok {
        let in_vm = std::env::var_os("EDGEWATCH_VM").is_some_and(|v| v == "1");
        assert!(
            !in_vm,
            "{kind} links cannot be created in the VM: is its module in xtask/src/vm/kernel.rs MODULES?"
        );
        eprintln!(
            "tunnels: this kernel cannot create {kind} links; not checked here (cargo xtask vm checks it)"
        );
    }
    ok
}

#[test]
fn gre_ipip_and_wireguard_links_are_reported_with_their_process() {
    if !is_root("gre_ipip_and_wireguard_links_are_reported_with_their_process") {
        return;
    }
    let available: Vec<_> = KINDS
        .iter()
        .filter(|(kind, _, args)| kernel_has(kind, args))
        .collect();
    if available.is_empty() {
        return;
    }
    let ns = NetnsPair::new();
    let m = Monitor::start_with(&format!(
        "{CONFIG}[dataplane]\nnetns = \"/run/netns/{}\"\nscan_ms = 200\n",
        ns.a
    ));
    let mut first = None;
    let checked = available.clone();
    for (kind, name, args) in available {
        let mut child = NetnsPair::command(&ns.a, "ip")
            .args(["link", "add", name])
            .args(*args)
            .stdout(Stdio::null())
            .spawn()
            .expect("ip link add");
        let pid = u64::from(child.id());
        assert!(child.wait().expect("wait").success(), "ip link add {name}");
        let e = m.expect_event(&format!("{kind} link by netlink"), |v: &Value| {
            v["kind"] == "config_change"
                && v["change"] == "tunnel"
                && v["iface"] == *name
                && v["process"]["pid"] == pid
        });
        assert_eq!(e["link_kind"], *kind, "{e}");
        assert_eq!(e["attribution"], "netlink", "{e}");
        assert_eq!(e["process"]["exe"], ip_exe(), "{e}");
        first.get_or_insert(pid);
    }
    // Each new tunnel gets the forwarding counter (tcx, or clsact before
    // Linux 6.6), with the tunnel role.
    for (_, name, _) in &checked {
        let watching = format!("watching forwarded traffic iface={name} role=\"tunnel\"");
        let deadline = std::time::Instant::now() + scaled(std::time::Duration::from_secs(10));
        while !m.stderr().iter().any(|l| l.contains(&watching)) {
            let failed: Vec<_> = m
                .stderr()
                .into_iter()
                .filter(|l| l.contains("cannot attach") && l.contains(name))
                .collect();
            assert!(failed.is_empty(), "{failed:?}");
            assert!(
                std::time::Instant::now() < deadline,
                "no forwarding counter on {name}: {:?}",
                m.stderr()
            );
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    }
    // Later alerts of the rule on one lineage fold into the first.
    let pid = first.expect("a kind was checked");
    m.expect_event("EW-CFG-003", |v| {
        v["kind"] == "alert" && v["rule"] == "EW-CFG-003" && v["process"]["pid"] == pid
    });
}

/// The `ip` executable as the kernel resolves it.
fn ip_exe() -> String {
    let out = Command::new("sh")
        .args(["-c", "readlink -f \"$(command -v ip)\""])
        .output()
        .expect("sh");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}
