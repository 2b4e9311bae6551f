//! The sensors the daemon runs, each a stage's periodic work behind the
//! [`Sensor`] trait: the relay and tunnel detectors, the shells fed through
//! another process, the data plane, the self-check, and the housekeeping of
//! the enrich stage's tables.

use std::time::{Duration, Instant};

use super::{Job, Metrics, Sensor, World};
use crate::{
    clock::BootClock,
    dataplane::stage::DataplaneStage,
    decode::KernelEvent,
    event::Event,
    net::{links::StdioLinks, sensors::HopSensors},
    read::KernelCounters,
    selfcheck::SelfCheck,
};

/// Shells and interpreters fed by a networked process through a pipe, a
/// fifo or a pty: each batch's new shells and connections, and once a
/// second the end of the watches.
#[derive(Default)]
pub struct Links {
    pub links: StdioLinks,
}

impl Sensor for Links {
    fn jobs(&self) -> Vec<Job> {
        vec![Job {
            name: "stdio_links",
            every: Duration::from_secs(1),
        }]
    }

    fn tick(&mut self, _job: usize, world: &mut World, out: &mut Vec<Event>) {
        let e = &world.enricher;
        self.links
            .check(&e.table, &e.net, &e.clock, Instant::now(), out);
    }

    fn after_batch(&mut self, world: &World, out: &mut Vec<Event>) {
        let (e, now) = (&world.enricher, Instant::now());
        self.links.observe(out, &e.table, now);
        self.links.check(&e.table, &e.net, &e.clock, now, out);
    }
}

/// The relay and tunnel detectors: each batch's socket events, pairs and
/// flows under watch judged every `relay.check_ms`, connections sampled
/// every `relay.sample_ms`.
pub struct Hops {
    pub sensors: HopSensors,
    pub check: Duration,
    pub sample: Duration,
}

impl Sensor for Hops {
    fn jobs(&self) -> Vec<Job> {
        vec![
            Job {
                name: "relay_check",
                every: self.check,
            },
            Job {
                name: "relay_sample",
                every: self.sample,
            },
        ]
    }

    fn tick(&mut self, job: usize, world: &mut World, out: &mut Vec<Event>) {
        let now = BootClock::boot_now_ns();
        if job == 0 {
            self.sensors.check(&world.net_context(), now, out);
        } else {
            let io = world.flows.io_entries();
            self.sensors.sample(&world.net_context(), &io, now, out);
        }
    }

    fn after_batch(&mut self, world: &World, out: &mut Vec<Event>) {
        self.sensors
            .observe(&world.net_context(), BootClock::boot_now_ns(), out);
    }
}

/// The self-check: the canary exec every `selfcheck.canary_secs` (0: never),
/// the probes' links every `selfcheck.link_check_secs`.
pub struct Check {
    pub selfcheck: SelfCheck,
    pub canary: Duration,
    pub links: Duration,
}

impl Sensor for Check {
    fn jobs(&self) -> Vec<Job> {
        vec![
            Job {
                name: "canary",
                every: self.canary,
            },
            Job {
                name: "probe_links",
                every: self.links,
            },
        ]
    }

    fn tick(&mut self, job: usize, world: &mut World, out: &mut Vec<Event>) {
        let clock = &world.enricher.clock;
        if job == 0 {
            self.selfcheck.canary_tick(clock, out);
        } else {
            self.selfcheck.check_links(clock, out);
        }
    }

    fn take(&mut self, record: &KernelEvent, world: &World, out: &mut Vec<Event>) -> bool {
        self.selfcheck.is_canary(record, &world.enricher.clock, out)
    }
}

/// The data plane every `dataplane.scan_ms`: forwarded flows, netlink
/// announcements, and the gateway's sides for the relay detectors.
pub struct Plane {
    pub stage: DataplaneStage,
    pub every: Duration,
}

impl Sensor for Plane {
    fn jobs(&self) -> Vec<Job> {
        vec![Job {
            name: "dataplane",
            every: self.every,
        }]
    }

    fn tick(&mut self, _job: usize, world: &mut World, out: &mut Vec<Event>) {
        self.stage.tick(&mut world.ebpf, &mut world.enricher, out);
        if self.stage.take_sides_changed() {
            world.sides = Some(self.stage.sides().clone());
        }
    }
}

/// The enrich stage's upkeep: every second the process table's exited
/// entries expire, the wall clock is re-read and the table gauges and
/// kernel counters reach the metrics; every `network.sweep_secs` idle and
/// ended flows are swept.
pub struct Housekeeping {
    pub counters: KernelCounters,
    /// Hands the eBPF programs' log records to the daemon's log.
    pub flush_log: Option<Box<dyn FnMut() + Send>>,
    pub metrics: Metrics,
    pub sweep: Duration,
    pub evictions_seen: u64,
    pub flow_evictions_seen: u64,
}

impl Sensor for Housekeeping {
    fn jobs(&self) -> Vec<Job> {
        vec![
            Job {
                name: "tables",
                every: Duration::from_secs(1),
            },
            Job {
                name: "sweep",
                every: self.sweep,
            },
        ]
    }

    fn tick(&mut self, job: usize, world: &mut World, out: &mut Vec<Event>) {
        let enricher = &mut world.enricher;
        if job == 1 {
            enricher.sweep(&mut world.flows, out);
            let evictions = enricher.net.flows.evictions();
            self.metrics
                .net
                .net_flow_table_evictions
                .inc_by(evictions - self.flow_evictions_seen);
            self.flow_evictions_seen = evictions;
            return;
        }
        enricher.table.expire(Instant::now());
        enricher.clock.refresh();
        let stats = enricher.table.stats();
        let process = &self.metrics.process;
        process.process_table_entries.set(stats.entries as i64);
        process
            .process_table_evictions
            .inc_by(stats.evictions - self.evictions_seen);
        self.evictions_seen = stats.evictions;
        self.metrics
            .net
            .net_flow_table_entries
            .set(enricher.net.flows.len() as i64);
        self.counters.poll(&self.metrics.read);
        if let Some(flush) = self.flush_log.as_mut() {
            flush();
        }
    }
}
