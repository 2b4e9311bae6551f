//! The daemon's pipeline: batches of kernel records through the stages
//! (enrich, the sensors that watch each batch, detect, output), and the
//! periodic work of a set of sensors (the relay sampler, the data plane,
//! the sweeps, the self-check) behind one trait, on one task.
//!
//! Sensors see the [`World`]: the process and flow picture the enrich
//! stage keeps, the kernel's maps and the loaded object. What they find is
//! events, judged by the rules and written like any other.

pub mod metrics;
pub mod sensors;

use std::time::{Duration, Instant};

use tokio::sync::mpsc;

pub use self::metrics::Metrics;

use crate::{
    decode::KernelEvent,
    detect::stage::Detect,
    enrich::Enricher,
    event::{Event, Kind},
    net::{maps::KernelFlows, sides::SideMap, Context as NetContext},
    output::Output,
};

/// What the stages keep of the machine, which sensors read and change.
pub struct World {
    pub enricher: Enricher,
    pub flows: KernelFlows,
    pub ebpf: aya::Ebpf,
    /// The gateway's sides as the data plane last read them; `None`
    /// without a data plane.
    pub sides: Option<SideMap>,
}

impl World {
    /// What the relay and tunnel detectors read.
    pub fn net_context(&self) -> NetContext<'_> {
        NetContext {
            net: &self.enricher.net,
            map: &self.flows,
            procs: &self.enricher.table,
            clock: &self.enricher.clock,
            sides: self.sides.as_ref(),
        }
    }
}

/// One piece of periodic work of a sensor.
#[derive(Debug, Clone, Copy)]
pub struct Job {
    pub name: &'static str,
    pub every: Duration,
}

/// Something the pipeline runs besides the record path: periodic jobs,
/// and optionally a look at each kernel record or each batch's events.
/// Every event a sensor pushes to `out` goes through the rules and out.
pub trait Sensor {
    /// Its periodic jobs; `tick` gets the index of the one that is due.
    fn jobs(&self) -> Vec<Job>;

    fn tick(&mut self, job: usize, world: &mut World, out: &mut Vec<Event>);

    /// A kernel record before the enrich stage sees it; `true` takes it
    /// out of the record path.
    fn take(&mut self, _record: &KernelEvent, _world: &World, _out: &mut Vec<Event>) -> bool {
        false
    }

    /// The events a batch made, once the enrich stage is done with it.
    fn after_batch(&mut self, _world: &World, _out: &mut Vec<Event>) {}
}

struct Scheduled {
    sensor: usize,
    job: usize,
    name: &'static str,
    every: Duration,
    next: Instant,
}

/// When each sensor job runs next.
#[derive(Default)]
struct Schedule {
    jobs: Vec<Scheduled>,
}

impl Schedule {
    /// Adds a sensor's jobs, due at `now` (a zero period: never).
    fn add(&mut self, sensor: usize, jobs: Vec<Job>, now: Instant) {
        for (job, j) in jobs.into_iter().enumerate() {
            if j.every.is_zero() {
                continue;
            }
            self.jobs.push(Scheduled {
                sensor,
                job,
                name: j.name,
                every: j.every,
                next: now,
            });
        }
    }

    /// The jobs due at `now`, each (sensor, job), in the order they were
    /// added; each is rescheduled a period later (a late job runs once,
    /// then keeps its period from now).
    fn due(&mut self, now: Instant) -> Vec<(usize, usize)> {
        let mut due = Vec::new();
        for s in &mut self.jobs {
            if s.next <= now {
                due.push((s.sensor, s.job));
                let on_time = s.next + s.every;
                s.next = if on_time > now {
                    on_time
                } else {
                    now + s.every
                };
            }
        }
        due
    }

    /// When the next job is due.
    fn next(&self) -> Instant {
        self.jobs
            .iter()
            .map(|s| s.next)
            .min()
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600))
    }
}

/// Signals the pipeline stops or reloads on.
pub struct Signals {
    pub term: tokio::signal::unix::Signal,
    pub int: tokio::signal::unix::Signal,
    pub hup: tokio::signal::unix::Signal,
}

pub struct Pipeline {
    pub world: World,
    sensors: Vec<Box<dyn Sensor + Send>>,
    schedule: Schedule,
    pub detect: Detect,
    output: Output,
    /// Event kinds written out (the rules see every kind they run for).
    kinds: Vec<Kind>,
    metrics: Metrics,
    out: Vec<Event>,
}

impl Pipeline {
    pub fn new(
        world: World,
        detect: Detect,
        output: Output,
        kinds: Vec<Kind>,
        metrics: Metrics,
    ) -> Self {
        Self {
            world,
            sensors: Vec::new(),
            schedule: Schedule::default(),
            detect,
            output,
            kinds,
            metrics,
            out: Vec::new(),
        }
    }

    /// Adds a sensor; its jobs run at once, then every period (a job with
    /// a zero period never runs).
    pub fn add_sensor(&mut self, sensor: Box<dyn Sensor + Send>) {
        self.schedule
            .add(self.sensors.len(), sensor.jobs(), Instant::now());
        self.sensors.push(sensor);
    }

    /// The jobs scheduled, by name (for logs and tests).
    pub fn job_names(&self) -> Vec<&'static str> {
        self.schedule.jobs.iter().map(|s| s.name).collect()
    }

    /// Writes events made before the record path starts (the processes and
    /// connections seeded at start), of the kinds `kinds` allows.
    pub fn emit_seeded(&mut self, events: &[Event], kinds: &[Kind]) {
        emit(&mut self.output, kinds, &mut self.detect, events);
        self.output.flush();
    }

    /// One batch of kernel records through every stage.
    pub fn batch(&mut self, batch: Vec<KernelEvent>) {
        let now = Instant::now();
        let world = &mut self.world;
        'records: for record in batch {
            world.enricher.applied_ns = world.enricher.applied_ns.max(record.ts_boot_ns());
            if let KernelEvent::Bench(_) = record {
                self.metrics.read.bench_drained.inc();
                continue;
            }
            for s in &mut self.sensors {
                if s.take(&record, world, &mut self.out) {
                    continue 'records;
                }
            }
            world
                .enricher
                .apply(record, now, &mut world.flows, &mut self.out);
        }
        for s in &mut self.sensors {
            s.after_batch(&self.world, &mut self.out);
        }
        self.write_out();
    }

    /// Runs every job that is due; returns when the next one is.
    fn run_due(&mut self) -> Instant {
        for (sensor, job) in self.schedule.due(Instant::now()) {
            let (sensors, world, out) = (&mut self.sensors, &mut self.world, &mut self.out);
            // Jobs read maps, netlink and /proc: other tasks (the readers,
            // the metrics endpoint) go on meanwhile.
            tokio::task::block_in_place(|| sensors[sensor].tick(job, world, out));
            self.write_out();
        }
        self.schedule.next()
    }

    /// Judges and writes out what the stages produced, then empties it.
    fn write_out(&mut self) {
        if self.out.is_empty() {
            return;
        }
        count_changes(&self.metrics, &self.out);
        emit(&mut self.output, &self.kinds, &mut self.detect, &self.out);
        self.out.clear();
        self.output.flush();
    }

    /// Runs until SIGTERM or SIGINT, or the readers go away. SIGHUP calls
    /// `reload`.
    pub async fn run(
        &mut self,
        rx: &mut mpsc::Receiver<Vec<KernelEvent>>,
        signals: &mut Signals,
        mut reload: impl FnMut(&mut Detect),
    ) {
        let mut next = self.schedule.next();
        loop {
            tokio::select! {
                batch = rx.recv() => {
                    let Some(batch) = batch else { break };
                    self.batch(batch);
                }
                () = tokio::time::sleep_until(next.into()) => {
                    next = self.run_due();
                }
                _ = signals.hup.recv() => reload(&mut self.detect),
                _ = signals.term.recv() => break,
                _ = signals.int.recv() => break,
            }
        }
    }

    /// After a stop: applies what the readers still hand over until they
    /// end, closes the open dedup windows (so their final counts are not
    /// lost) and flushes the output.
    pub async fn finish(
        &mut self,
        mut reader: tokio::task::JoinHandle<std::io::Result<()>>,
        rx: &mut mpsc::Receiver<Vec<KernelEvent>>,
    ) {
        // Keep consuming while the reader finishes: it may be waiting for
        // room in the channel, and would wait forever if nobody drained it.
        loop {
            tokio::select! {
                _ = &mut reader => break,
                batch = rx.recv() => match batch {
                    Some(batch) => self.batch(batch),
                    None => break,
                },
            }
        }
        while let Ok(batch) = rx.try_recv() {
            self.batch(batch);
        }
        let repeats = self.detect.flush();
        if self.kinds.contains(&Kind::Alert) {
            for alert in &repeats {
                self.output.write_value(Kind::Alert, alert);
            }
        }
        self.output.finish();
    }
}

/// Counts the configuration changes among `events`, whatever the output
/// kinds.
fn count_changes(metrics: &Metrics, events: &[Event]) {
    for ev in events {
        if let Event::ConfigChange(c) = ev {
            metrics
                .dataplane
                .config_changes
                .with_label_values(&[c.change.as_str()])
                .inc();
        }
    }
}

/// Runs the detect stage over events and writes those of the kinds the
/// configuration asks for, each followed by the alerts it raised.
fn emit(output: &mut Output, kinds: &[Kind], detect: &mut Detect, events: &[Event]) {
    for ev in events {
        // Only events a rule runs for (or that name services) go through
        // the rules.
        let alerts = if detect.wants(ev.kind()) {
            detect.observe_event(ev)
        } else {
            Vec::new()
        };
        if kinds.contains(&ev.kind()) {
            output.write_event(ev);
        }
        for alert in &alerts {
            let kind = match alert.get("kind").and_then(serde_json::Value::as_str) {
                Some(k) if k == Kind::AlertUpdate.as_str() => Kind::AlertUpdate,
                _ => Kind::Alert,
            };
            if kinds.contains(&kind) {
                output.write_value(kind, alert);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(name: &'static str, ms: u64) -> Job {
        Job {
            name,
            every: Duration::from_millis(ms),
        }
    }

    #[test]
    fn jobs_run_at_once_then_every_period() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut s = Schedule::default();
        s.add(0, vec![job("check", 250), job("sample", 1000)], t0);
        s.add(1, vec![job("never", 0), job("links", 500)], t0);
        assert_eq!(s.due(t0), [(0, 0), (0, 1), (1, 1)]);
        assert_eq!(s.next(), ms(250));
        assert!(s.due(ms(249)).is_empty());
        assert_eq!(s.due(ms(250)), [(0, 0)]);
        assert_eq!(s.due(ms(500)), [(0, 0), (1, 1)]);
        assert_eq!(s.next(), ms(750));
        assert_eq!(s.due(ms(1000)), [(0, 0), (0, 1), (1, 1)]);
    }

    #[test]
    fn a_late_job_runs_once_and_keeps_its_period_from_then() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut s = Schedule::default();
        s.add(0, vec![job("sweep", 100)], t0);
        assert_eq!(s.due(t0), [(0, 0)]);
        // Blocked for ten periods: one run, not ten.
        assert_eq!(s.due(ms(1050)), [(0, 0)]);
        assert!(s.due(ms(1100)).is_empty());
        assert_eq!(s.next(), ms(1150));
    }
}
