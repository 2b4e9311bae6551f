//! The monitor's checks of itself with the real kernel: the canary comes
//! back through the pipeline and stays out of the output; a cgroup probe
//! detached from outside (bpftool) is reported and alerted on.

use std::{process::Command, time::Duration};

use serde_json::Value;
use tests::{is_root, Monitor};

const CONFIG: &str = "[output]\nseed_events = false\n[network]\nseed_events = false\n[selfcheck]\ncanary_secs = 1\nlink_check_secs = 1\n";

#[test]
fn the_canary_comes_back_and_stays_out_of_the_output() {
    if !is_root("the_canary_comes_back_and_stays_out_of_the_output") {
        return;
    }
    let m = Monitor::start_with(CONFIG);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while m
        .metric("edgewatch_selfcheck_canary_last_success_timestamp_seconds")
        .unwrap_or_default()
        == 0.0
    {
        assert!(std::time::Instant::now() < deadline, "no canary came back");
        std::thread::sleep(Duration::from_millis(200));
    }
    // A few more rounds, then none of the canaries' events is written.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(m.metric("edgewatch_selfcheck_canary_ok"), Some(1.0));
    assert_eq!(
        m.metric("edgewatch_selfcheck_canary_failures_total"),
        Some(0.0)
    );
    let latency = m
        .metric("edgewatch_selfcheck_canary_latency_seconds")
        .unwrap_or_default();
    assert!(latency > 0.0 && latency < 10.0, "latency {latency}");
    // The canaries are the monitor's only children.
    let own = m.pid() as u64;
    let leaked = m.events(|v| v["ppid"].as_u64() == Some(own));
    assert!(leaked.is_empty(), "canary events written: {leaked:?}");
}

/// The ids of the monitor's cgroup links, from its fdinfo.
fn cgroup_links(pid: u32) -> Vec<u64> {
    let mut ids = Vec::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/fdinfo")).expect("fdinfo") {
        let Ok(info) = std::fs::read_to_string(entry.expect("entry").path()) else {
            continue;
        };
        if info.contains("link_type:\tcgroup") {
            ids.extend(info.lines().find_map(|l| {
                l.strip_prefix("link_id:")
                    .and_then(|v| v.trim().parse::<u64>().ok())
            }));
        }
    }
    ids
}

#[test]
fn a_probe_detached_from_outside_is_reported_and_alerted() {
    if !is_root("a_probe_detached_from_outside_is_reported_and_alerted") {
        return;
    }
    let m = Monitor::start_with(CONFIG);
    let links = cgroup_links(m.pid());
    assert!(!links.is_empty(), "the monitor holds no cgroup link");
    let status = Command::new("bpftool")
        .args(["link", "detach", "id", &links[0].to_string()])
        .status()
        .expect("bpftool (scripts/setup.sh installs it)");
    assert!(status.success(), "bpftool link detach");
    let ev = m.expect_event("self_check probe_detached", |v| {
        v["kind"] == "self_check" && v["status"] == "probe_detached"
    });
    let probe = ev["probe"].as_str().expect("probe name").to_owned();
    assert!(
        [
            "net_sock_create",
            "net_sock_release",
            "net_skb_ingress",
            "net_skb_egress",
            "config_sysctl"
        ]
        .contains(&probe.as_str()),
        "{ev}"
    );
    let alert = m.expect_event("EW-TAMPER-001", |v: &Value| {
        v["kind"] == "alert" && v["rule"] == "EW-TAMPER-001"
    });
    assert_eq!(alert["severity"], "critical");
    assert_eq!(
        m.metric(&format!("edgewatch_probe_attached{{probe=\"{probe}\"}}")),
        Some(0.0)
    );
    // The others stay attached and are not reported.
    std::thread::sleep(Duration::from_secs(2));
    let reports = m.events(|v| v["kind"] == "self_check" && v["status"] == "probe_detached");
    assert_eq!(reports.len(), 1, "{reports:?}");
}
