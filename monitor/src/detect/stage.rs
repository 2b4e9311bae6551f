//! The detect stage as the daemon and `monitor replay` run it: events in,
//! events and alerts out, with metrics kept in step with the engine.

use std::path::PathBuf;

use serde::Deserialize;
use serde_json::Value;

use super::{rule, AlertRecord, Engine, EngineStats, SavedWindow};
use crate::{
    alert::{Alert, Sinks},
    event::{Event, Kind},
    metrics::{counter_vec, gauge},
};

/// The detect stage's metrics: alerts raised, folded and held back, the
/// rules in use and their reloads.
#[derive(Clone)]
pub struct DetectMetrics {
    pub alerts: prometheus::IntCounterVec,
    pub alerts_deduplicated: prometheus::IntCounterVec,
    pub alerts_rate_limited: prometheus::IntCounterVec,
    pub threshold_dropped: prometheus::IntCounterVec,
    pub rules_loaded: prometheus::IntGauge,
    pub rule_reloads: prometheus::IntCounterVec,
}

impl DetectMetrics {
    pub fn register(registry: &prometheus::Registry) -> Self {
        let m = Self {
            alerts: counter_vec(
                registry,
                "alerts_total",
                "Alerts raised, by rule id and severity (repeat lines not counted).",
                &["rule", "severity"],
            ),
            alerts_deduplicated: counter_vec(
                registry,
                "alerts_deduplicated_total",
                "Rule matches folded into an open alert of the same rule and lineage, by rule id.",
                &["rule"],
            ),
            alerts_rate_limited: counter_vec(
                registry,
                "alerts_rate_limited_total",
                "Alerts a rule's rate limit held back, by rule id.",
                &["rule"],
            ),
            threshold_dropped: counter_vec(
                registry,
                "alerts_threshold_dropped_total",
                "Lineages or processes a threshold rule stopped counting because the table of them was full, by rule id.",
                &["rule"],
            ),
            rules_loaded: gauge(registry, "rules_loaded", "Detection rules in use."),
            rule_reloads: counter_vec(
                registry,
                "rule_reloads_total",
                "Reloads of configuration and rules on SIGHUP, by result (ok, failed).",
                &["result"],
            ),
        };
        for r in ["ok", "failed"] {
            m.rule_reloads.with_label_values(&[r]);
        }
        m
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
/// The detect stage's settings (`[detect]`).
pub struct DetectConfig {
    pub enabled: bool,
    /// Load the embedded rule pack.
    pub builtin_rules: bool,
    /// Directories (or files) of extra rules, `*.toml`.
    pub rule_paths: Vec<PathBuf>,
    /// Rule ids not to run.
    pub disabled_rules: Vec<String>,
    /// Where open dedup windows are kept across restarts.
    pub state_file: Option<PathBuf>,
}

impl Default for DetectConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            builtin_rules: true,
            rule_paths: Vec::new(),
            disabled_rules: Vec::new(),
            state_file: None,
        }
    }
}

/// Loads the rules a configuration asks for, with `extra` rule paths
/// after its own: everything `run` would refuse (a duplicate id, an
/// override or exception naming no rule, a bad field or regex) is an
/// error here.
pub fn load_rules(
    config: &DetectConfig,
    extra: &[std::path::PathBuf],
) -> Result<Vec<rule::Rule>, rule::RuleError> {
    if !config.enabled {
        return Ok(Vec::new());
    }
    let paths: Vec<_> = config.rule_paths.iter().chain(extra).cloned().collect();
    rule::load_pack(config.builtin_rules, &paths, &config.disabled_rules).map(|p| p.rules)
}

pub struct Detect {
    pub engine: Engine,
    metrics: Option<DetectMetrics>,
    exported: EngineStats,
    /// Where every alert raised is also delivered (the daemon's sinks).
    sinks: Option<Sinks>,
    /// Where open dedup windows are saved, so a restart does not send the
    /// same alerts again (`detect.state_file`).
    state_file: Option<std::path::PathBuf>,
}

impl Detect {
    pub fn new(rules: Vec<rule::Rule>, metrics: Option<DetectMetrics>) -> Self {
        if let Some(m) = &metrics {
            Self::publish_rules(m, &rules);
        }
        Self {
            engine: Engine::new(rules),
            metrics,
            exported: EngineStats::default(),
            sinks: None,
            state_file: None,
        }
    }

    /// Saves open windows to `path` from now on, after reopening those a
    /// previous run saved there. A missing file is a first start; an
    /// unreadable one is logged and replaced.
    pub fn keep_state(&mut self, path: std::path::PathBuf) {
        match std::fs::read(&path) {
            Ok(bytes) => match serde_json::from_slice::<Vec<SavedWindow>>(&bytes) {
                Ok(saved) => {
                    let n = self.engine.restore_windows(saved, unix_now_ns());
                    tracing::info!(windows = n, path = %path.display(), "alerts sent before the restart stay deduplicated");
                }
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "alert state unreadable; starting without it")
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "alert state unreadable; starting without it")
            }
        }
        self.state_file = Some(path);
    }

    /// Writes the open windows, atomically (a temporary file renamed).
    fn save_state(&self) {
        let Some(path) = &self.state_file else { return };
        let tmp = path.with_extension("tmp");
        let result = serde_json::to_vec(&self.engine.open_windows())
            .map_err(std::io::Error::other)
            .and_then(|bytes| std::fs::write(&tmp, bytes))
            .and_then(|()| std::fs::rename(&tmp, path));
        if let Err(e) = result {
            tracing::warn!(path = %path.display(), error = %e, "cannot save alert state; a restart may repeat open alerts");
        }
    }

    /// Hands every alert from now on to `sinks` as well. All alerts pass
    /// through [`Self::finish`], whether raised by an event, by a window
    /// that closed, or by the final flush, so the sinks see each of them.
    pub fn set_sinks(&mut self, sinks: Sinks) {
        self.sinks = (!sinks.is_empty()).then_some(sinks);
    }

    /// Takes the sinks back, to close them at shutdown.
    pub fn take_sinks(&mut self) -> Option<Sinks> {
        self.sinks.take()
    }

    pub fn set_rules(&mut self, rules: Vec<rule::Rule>) {
        if let Some(m) = &self.metrics {
            Self::publish_rules(m, &rules);
        }
        self.engine.set_rules(rules);
    }

    /// Sets the rule count and creates the alert series of every rule, so
    /// that the label set is known, and a rate() defined, before the first
    /// alert.
    fn publish_rules(m: &DetectMetrics, rules: &[rule::Rule]) {
        m.rules_loaded.set(rules.len() as i64);
        for r in rules {
            m.alerts
                .with_label_values(&[r.id.as_str(), r.severity.as_str()]);
            m.alerts_deduplicated.with_label_values(&[r.id.as_str()]);
            m.alerts_rate_limited.with_label_values(&[r.id.as_str()]);
            if r.threshold.is_some() {
                m.threshold_dropped.with_label_values(&[r.id.as_str()]);
            }
        }
    }

    /// Whether the rules need to see events of `kind` (see
    /// [`Engine::wants`]).
    pub fn wants(&self, kind: Kind) -> bool {
        self.engine.wants(kind.as_str())
    }

    /// Runs the rules over one event; returns the alerts as JSON, ready
    /// to write.
    pub fn observe_event(&mut self, event: &Event) -> Vec<Value> {
        let alerts = self.engine.observe_event(event);
        self.finish(alerts)
    }

    /// Runs the rules over one line that is not of this schema, in its
    /// JSON form (see [`Engine::observe`]).
    pub fn observe(&mut self, event: &Value) -> Vec<Value> {
        let alerts = self.engine.observe(event);
        self.finish(alerts)
    }

    /// Ends every open dedup window (shutdown, end of a replay).
    pub fn flush(&mut self) -> Vec<Value> {
        let alerts = self.engine.flush();
        self.finish(alerts)
    }

    fn finish(&mut self, alerts: Vec<AlertRecord>) -> Vec<Value> {
        self.export();
        if alerts.iter().any(|a| !a.repeat && !a.update) {
            self.save_state();
        }
        alerts
            .into_iter()
            .filter_map(|a| {
                let mut v = serde_json::to_value(&a).ok()?;
                if let Some(o) = v.as_object_mut() {
                    let kind = if a.update {
                        Kind::AlertUpdate
                    } else {
                        Kind::Alert
                    };
                    o.insert("kind".into(), kind.as_str().into());
                }
                if let Some(sinks) = &self.sinks {
                    sinks.send(Alert::new(a, &v));
                }
                Some(v)
            })
            .collect()
    }

    /// Adds what the engine counted since the last export to the metrics.
    fn export(&mut self) {
        let Some(m) = &self.metrics else { return };
        let now = &self.engine.stats;
        if now.changes == self.exported.changes {
            return;
        }
        for (key @ (rule, severity), n) in &now.raised {
            let before = self.exported.raised.get(key).copied().unwrap_or(0);
            m.alerts
                .with_label_values(&[rule.as_str(), severity.as_str()])
                .inc_by(n - before);
        }
        for (rule, n) in &now.deduplicated {
            let before = self.exported.deduplicated.get(rule).copied().unwrap_or(0);
            m.alerts_deduplicated
                .with_label_values(&[rule.as_str()])
                .inc_by(n - before);
        }
        for (rule, n) in &now.rate_limited {
            let before = self.exported.rate_limited.get(rule).copied().unwrap_or(0);
            m.alerts_rate_limited
                .with_label_values(&[rule.as_str()])
                .inc_by(n - before);
        }
        for (rule, n) in &now.threshold_dropped {
            let before = self
                .exported
                .threshold_dropped
                .get(rule)
                .copied()
                .unwrap_or(0);
            m.threshold_dropped
                .with_label_values(&[rule.as_str()])
                .inc_by(n - before);
        }
        self.exported = now.clone();
    }
}

/// Wall-clock time in ns, the clock of dedup windows.
fn unix_now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}
