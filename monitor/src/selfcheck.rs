//! Self-check: the monitor watches itself, because one an intruder can
//! quietly blind is worse than none.
//!
//! - Links: the cgroup programs (socket owners, packet counters, sysctl)
//!   are attached through bpf links, which another root process can detach
//!   (`bpftool link detach`). Every `selfcheck.link_check_secs` the link
//!   fds this process holds are read from /proc/self/fdinfo; a cgroup link
//!   whose cgroup is gone was detached. Tracepoint and raw-tracepoint links
//!   cannot be detached from outside.
//! - Canary: every `selfcheck.canary_secs` the monitor runs itself
//!   (`monitor canary`, which exits at once) and expects the exec to come
//!   back through its own pipeline (kernel probe, ring buffer, reader,
//!   decoder) within `CANARY_TIMEOUT`. The canary's own events are not
//!   written out or matched against the rules.
//!
//! Both report `self_check` events (rules EW-TAMPER-001 and -002) and
//! metrics.

use std::{
    collections::BTreeMap,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use crate::{
    clock::BootClock,
    decode::KernelEvent,
    event::Event,
    metrics::{counter, float_gauge, gauge},
};

/// The self-check's metrics, and the probes' attachment it clears.
#[derive(Clone)]
pub struct SelfCheckMetrics {
    pub selfcheck_canary_ok: prometheus::IntGauge,
    pub selfcheck_canary_failures: prometheus::IntCounter,
    pub selfcheck_canary_latency: prometheus::Gauge,
    pub selfcheck_canary_last_success: prometheus::Gauge,
    pub probe_attached: prometheus::IntGaugeVec,
}

impl SelfCheckMetrics {
    pub fn register(
        registry: &prometheus::Registry,
        probes: &crate::load::probes::ProbeMetrics,
    ) -> Self {
        Self {
            selfcheck_canary_ok: gauge(
                registry,
                "selfcheck_canary_ok",
                "1 when the last canary exec came back through the monitor's own pipeline in time, 0 when it did not.",
            ),
            selfcheck_canary_failures: counter(
                registry,
                "selfcheck_canary_failures_total",
                "Canary execs the monitor's own pipeline did not see in time.",
            ),
            selfcheck_canary_latency: float_gauge(
                registry,
                "selfcheck_canary_latency_seconds",
                "Time from starting the last canary to seeing its exec.",
            ),
            selfcheck_canary_last_success: float_gauge(
                registry,
                "selfcheck_canary_last_success_timestamp_seconds",
                "Unix time of the last canary seen.",
            ),
            probe_attached: probes.probe_attached.clone(),
        }
    }
}

/// How long a canary exec may take to come back before it counts as missed.
pub const CANARY_TIMEOUT: Duration = Duration::from_secs(10);

pub use crate::event::self_check::{SelfCheckRecord, SelfCheckStatus};

/// One bpf link this process holds.
#[derive(Debug, Clone, PartialEq, Eq)]
struct HeldLink {
    link_id: u64,
    prog_id: u64,
    kind: String,
    /// `cgroup_id` of a cgroup link (0 once detached).
    cgroup_id: Option<u64>,
}

/// The links this process holds, from /proc/self/fdinfo.
fn held_links() -> Vec<HeldLink> {
    let Ok(dir) = std::fs::read_dir("/proc/self/fdinfo") else {
        return Vec::new();
    };
    dir.filter_map(|e| std::fs::read_to_string(e.ok()?.path()).ok())
        .filter_map(|info| parse_fdinfo(&info))
        .collect()
}

fn parse_fdinfo(info: &str) -> Option<HeldLink> {
    let field = |name: &str| {
        info.lines()
            .find_map(|l| l.strip_prefix(name).map(|r| r.trim().to_owned()))
    };
    let num = |name: &str| field(name).and_then(|v| v.parse::<u64>().ok());
    Some(HeldLink {
        link_id: num("link_id:")?,
        prog_id: num("prog_id:")?,
        kind: field("link_type:")?,
        cgroup_id: num("cgroup_id:"),
    })
}

pub struct SelfCheck {
    /// Cgroup links at start, with the probe each serves.
    watched: Vec<(HeldLink, String)>,
    /// Links already reported detached.
    reported: Vec<u64>,
    canary: Option<(u32, Instant)>,
    /// The last canary seen: its exit is still to come.
    seen_canary: Option<u32>,
    canary_failing: bool,
    /// What the canary runs: this executable, with the argument `canary`.
    canary_program: std::path::PathBuf,
    canary_timeout: Duration,
    metrics: SelfCheckMetrics,
}

impl SelfCheck {
    /// Records the links this process holds now, naming each by the
    /// program of `ebpf` it runs.
    pub fn new(ebpf: &aya::Ebpf, metrics: SelfCheckMetrics) -> Self {
        let names: BTreeMap<u64, String> = ebpf
            .programs()
            .filter_map(|(name, p)| Some((u64::from(p.info().ok()?.id()), name.to_owned())))
            .collect();
        let watched = held_links()
            .into_iter()
            .filter(|l| l.cgroup_id.is_some_and(|c| c != 0))
            .filter_map(|l| Some((l.clone(), names.get(&l.prog_id)?.clone())))
            .collect::<Vec<_>>();
        tracing::debug!(
            links = watched.len(),
            "self-check watches the detachable links"
        );
        let program = std::env::current_exe().unwrap_or_else(|_| "/proc/self/exe".into());
        Self::with(watched, program, CANARY_TIMEOUT, metrics)
    }

    fn with(
        watched: Vec<(HeldLink, String)>,
        canary_program: std::path::PathBuf,
        canary_timeout: Duration,
        metrics: SelfCheckMetrics,
    ) -> Self {
        metrics.selfcheck_canary_ok.set(1);
        Self {
            watched,
            reported: Vec::new(),
            canary: None,
            seen_canary: None,
            canary_failing: false,
            canary_program,
            canary_timeout,
            metrics,
        }
    }

    /// Reports watched links that were detached since the last call.
    pub fn check_links(&mut self, clock: &BootClock, out: &mut Vec<Event>) {
        let now = held_links();
        for (link, probe) in &self.watched {
            if self.reported.contains(&link.link_id) {
                continue;
            }
            let current = now.iter().find(|l| l.link_id == link.link_id);
            if current.is_some_and(|l| l.cgroup_id.is_some_and(|c| c != 0)) {
                continue;
            }
            self.reported.push(link.link_id);
            self.metrics
                .probe_attached
                .with_label_values(&[probe])
                .set(0);
            tracing::error!(probe = %probe, link_id = link.link_id, "a probe was detached from outside the monitor");
            out.push(Event::SelfCheck(Box::new(SelfCheckRecord {
                ts: clock.rfc3339(BootClock::boot_now_ns()),
                status: SelfCheckStatus::ProbeDetached,
                probe: Some(probe.clone()),
                detail: format!(
                    "bpf link {} ({} link of program {}) no longer attached",
                    link.link_id, link.kind, link.prog_id
                ),
            })));
        }
    }

    /// Starts a canary when none is in flight; reports one that timed out.
    pub fn canary_tick(&mut self, clock: &BootClock, out: &mut Vec<Event>) {
        if let Some((pid, started)) = self.canary {
            if started.elapsed() < self.canary_timeout {
                return;
            }
            self.canary = None;
            self.metrics.selfcheck_canary_ok.set(0);
            self.metrics.selfcheck_canary_failures.inc();
            tracing::error!(pid, "canary exec not seen by the monitor's own pipeline");
            if !self.canary_failing {
                self.canary_failing = true;
                out.push(self.record(
                    clock,
                    SelfCheckStatus::CanaryMissed,
                    format!(
                        "the exec of canary process {pid} did not reach the pipeline within {} s",
                        self.canary_timeout.as_secs()
                    ),
                ));
            }
        }
        let spawned = Command::new(&self.canary_program)
            .arg("canary")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        match spawned {
            Ok(mut child) => {
                self.canary = Some((child.id(), Instant::now()));
                // Reaped in the background; it exits at once.
                std::thread::spawn(move || child.wait());
            }
            Err(e) => tracing::warn!(error = %e, "cannot start the canary"),
        }
    }

    /// Whether `ev` belongs to the canary (then it is not processed
    /// further); its exec completes the canary.
    pub fn is_canary(&mut self, ev: &KernelEvent, clock: &BootClock, out: &mut Vec<Event>) -> bool {
        let ev_pid = match ev {
            KernelEvent::Exec { fixed, .. } => fixed.header.pid,
            KernelEvent::Fork(f) => f.header.pid,
            KernelEvent::Exit(e) => e.header.pid,
            _ => return false,
        };
        if self.seen_canary == Some(ev_pid) {
            if let KernelEvent::Exit(_) = ev {
                self.seen_canary = None;
            }
            return true;
        }
        let Some((pid, started)) = self.canary else {
            return false;
        };
        if ev_pid != pid {
            return false;
        }
        if let KernelEvent::Exec { .. } = ev {
            self.canary = None;
            self.seen_canary = Some(pid);
            self.metrics
                .selfcheck_canary_latency
                .set(started.elapsed().as_secs_f64());
            self.metrics.selfcheck_canary_ok.set(1);
            self.metrics.selfcheck_canary_last_success.set(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0.0, |d| d.as_secs_f64()),
            );
            if self.canary_failing {
                self.canary_failing = false;
                out.push(self.record(
                    clock,
                    SelfCheckStatus::CanaryRecovered,
                    format!("canary process {pid} seen again"),
                ));
            }
        }
        true
    }

    fn record(&self, clock: &BootClock, status: SelfCheckStatus, detail: String) -> Event {
        Event::SelfCheck(Box::new(SelfCheckRecord {
            ts: clock.rfc3339(BootClock::boot_now_ns()),
            status,
            probe: None,
            detail,
        }))
    }
}

/// `[selfcheck]`: the monitor's checks of itself (see `crate::selfcheck`).
#[derive(Debug, Clone, serde::Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SelfCheckConfig {
    /// Seconds between canaries; 0 turns them off.
    pub canary_secs: u64,
    pub link_check_secs: toml::Spanned<u64>,
}

impl Default for SelfCheckConfig {
    fn default() -> Self {
        Self {
            canary_secs: 60,
            link_check_secs: toml::Spanned::new(0..0, 10),
        }
    }
}

#[cfg(test)]
mod tests {
    use monitor_common::event::{EventHeader, ExecEvent, ExitEvent};

    use super::*;

    fn exec_of(pid: u32) -> KernelEvent {
        KernelEvent::Exec {
            fixed: ExecEvent {
                header: EventHeader {
                    pid,
                    ..Default::default()
                },
                ..Default::default()
            },
            exe: Vec::new(),
            cwd: Vec::new(),
            argv: Vec::new(),
        }
    }

    #[test]
    fn a_missed_canary_is_reported_once_then_its_recovery() {
        let metrics = {
            let registry = crate::metrics::registry();
            let probes = crate::load::probes::ProbeMetrics::register(&registry);
            SelfCheckMetrics::register(&registry, &probes)
        };
        let clock = BootClock::new();
        let mut sc = SelfCheck::with(
            Vec::new(),
            "/bin/true".into(),
            Duration::ZERO,
            metrics.clone(),
        );
        let mut out = Vec::new();
        sc.canary_tick(&clock, &mut out);
        assert!(out.is_empty(), "the first tick only starts a canary");
        for _ in 0..2 {
            sc.canary_tick(&clock, &mut out);
        }
        let statuses: Vec<String> = out
            .iter()
            .map(|e| match e {
                Event::SelfCheck(r) => serde_json::to_value(r.status)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default(),
                _ => String::new(),
            })
            .collect();
        assert_eq!(statuses, ["canary_missed"], "reported once while failing");
        assert_eq!(metrics.selfcheck_canary_ok.get(), 0);
        assert_eq!(metrics.selfcheck_canary_failures.get(), 2);
        out.clear();
        let (pid, _) = sc.canary.expect("a canary in flight");
        assert!(!sc.is_canary(&exec_of(pid + 1), &clock, &mut out));
        assert!(sc.is_canary(&exec_of(pid), &clock, &mut out));
        assert_eq!(metrics.selfcheck_canary_ok.get(), 1);
        assert!(
            matches!(&out[..], [Event::SelfCheck(r)] if r.status == SelfCheckStatus::CanaryRecovered)
        );
        let exit = KernelEvent::Exit(ExitEvent {
            header: EventHeader {
                pid,
                ..Default::default()
            },
            ..Default::default()
        });
        assert!(
            sc.is_canary(&exit, &clock, &mut out),
            "its exit stays out too"
        );
        assert!(!sc.is_canary(&exit, &clock, &mut out), "and only once");
    }

    #[test]
    fn cgroup_link_fdinfo_parses_and_a_detached_one_shows_cgroup_zero() {
        let attached = "pos:\t0\nflags:\t02000002\nmnt_id:\t15\nino:\t1057\nlink_type:\tcgroup\nlink_id:\t12\nprog_tag:\tabc\nprog_id:\t45\ncgroup_id:\t1\nattach_type:\t8\n";
        let l = parse_fdinfo(attached).expect("a link");
        assert_eq!((l.link_id, l.prog_id, l.cgroup_id), (12, 45, Some(1)));
        assert_eq!(l.kind, "cgroup");
        let detached = attached.replace("cgroup_id:\t1", "cgroup_id:\t0");
        assert_eq!(parse_fdinfo(&detached).and_then(|l| l.cgroup_id), Some(0));
        let map = "pos:\t0\nflags:\t02000002\nmap_type:\t2\nmap_id:\t7\n";
        assert!(parse_fdinfo(map).is_none());
    }
}
