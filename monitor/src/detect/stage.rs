//! The detect stage as the daemon and `monitor replay` run it: events in,
//! events and alerts out, with metrics kept in step with the engine.

use serde_json::Value;

use super::{rule, AlertRecord, Engine, EngineStats};
use crate::{config::DetectConfig, event::Kind, metrics::Metrics};

/// Loads the rules a configuration asks for.
pub fn load_rules(config: &DetectConfig) -> Result<Vec<rule::Rule>, rule::RuleError> {
    if !config.enabled {
        return Ok(Vec::new());
    }
    rule::load(config.builtin_rules, &config.rule_paths)
}

pub struct Detect {
    pub engine: Engine,
    metrics: Option<Metrics>,
    exported: EngineStats,
}

impl Detect {
    pub fn new(rules: Vec<rule::Rule>, metrics: Option<Metrics>) -> Self {
        if let Some(m) = &metrics {
            m.rules_loaded.set(rules.len() as i64);
        }
        Self {
            engine: Engine::new(rules),
            metrics,
            exported: EngineStats::default(),
        }
    }

    pub fn set_rules(&mut self, rules: Vec<rule::Rule>) {
        if let Some(m) = &self.metrics {
            m.rules_loaded.set(rules.len() as i64);
        }
        self.engine.set_rules(rules);
    }

    /// Runs the rules over one event in its JSON form; returns the alerts
    /// as JSON, ready to write.
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
        alerts
            .into_iter()
            .filter_map(|a| {
                let mut v = serde_json::to_value(&a).ok()?;
                if let Some(o) = v.as_object_mut() {
                    o.insert("kind".into(), Kind::Alert.as_str().into());
                }
                Some(v)
            })
            .collect()
    }

    /// Adds what the engine counted since the last export to the metrics.
    fn export(&mut self) {
        let Some(m) = &self.metrics else { return };
        let now = &self.engine.stats;
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
        self.exported = now.clone();
    }
}
