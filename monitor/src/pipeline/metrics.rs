//! Every stage's metrics on one registry: each stage defines and registers
//! its own (names, help, the label values that exist from the start); this
//! only assembles them, so a stage that is turned off still shows its
//! series at zero.

use prometheus::Registry;

use crate::{
    dataplane::DataplaneMetrics, detect::stage::DetectMetrics, load::probes::ProbeMetrics,
    net::sensors::HopMetrics, net::NetMetrics, output::OutputMetrics, process::ProcessMetrics,
    read::ReadMetrics, selfcheck::SelfCheckMetrics,
};

#[derive(Clone)]
pub struct Metrics {
    pub registry: Registry,
    pub read: ReadMetrics,
    pub probes: ProbeMetrics,
    pub process: ProcessMetrics,
    pub net: NetMetrics,
    pub hops: HopMetrics,
    pub dataplane: DataplaneMetrics,
    pub detect: DetectMetrics,
    pub output: OutputMetrics,
    pub selfcheck: SelfCheckMetrics,
}

impl Metrics {
    pub fn new() -> Self {
        let registry = crate::metrics::registry();
        let probes = ProbeMetrics::register(&registry);
        let hops = HopMetrics::register(&registry);
        Self {
            read: ReadMetrics::register(&registry),
            process: ProcessMetrics::register(&registry),
            net: NetMetrics::register(&registry),
            dataplane: DataplaneMetrics::register(&registry, &hops),
            hops,
            detect: DetectMetrics::register(&registry),
            output: OutputMetrics::register(&registry),
            selfcheck: SelfCheckMetrics::register(&registry, &probes),
            probes,
            registry,
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_is_prefixed_and_present() {
        let m = Metrics::new();
        let text = String::from_utf8(crate::metrics::render(&m.registry)).expect("utf8");
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            assert!(line.starts_with("edgewatch_"), "{line}");
        }
        for name in [
            "edgewatch_events_total{kind=\"exec\"} 0",
            "edgewatch_kernel_events_lost_total{kind=\"exec\"} 0",
            "edgewatch_decode_errors_total{reason=\"short\"} 0",
            "edgewatch_process_table_entries 0",
            "edgewatch_probe_attached{probe=\"process_sched_exec\"} 0",
            "edgewatch_net_relays_total{allowed=\"false\",method=\"exchange\"} 0",
            "edgewatch_config_changes_total{type=\"sysctl\"} 0",
            "edgewatch_rule_reloads_total{result=\"ok\"} 0",
            "edgewatch_selfcheck_canary_ok 0",
        ] {
            assert!(text.contains(name), "missing {name} in\n{text}");
        }
    }
}
