//! The scorecard: one line per scenario as it finishes, a summary at the
//! end, and the same as JSON.

use std::{collections::BTreeMap, path::Path, time::Duration};

use anyhow::{Context as _, Result};
use serde_json::{json, Value};

use super::vars::Variant;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// An attack raised every expected alert.
    Detected,
    /// An attack did not raise some expected alert.
    Missed,
    /// A benign scenario raised nothing.
    Quiet,
    /// A benign scenario raised alerts.
    FalsePositive,
    /// Not run, and why.
    Skipped(String),
    /// The scenario itself failed (a step, a service), and why.
    Error(String),
}

impl Outcome {
    pub fn failed(&self) -> bool {
        matches!(
            self,
            Outcome::Missed | Outcome::FalsePositive | Outcome::Error(_)
        )
    }

    fn word(&self) -> &'static str {
        match self {
            Outcome::Detected => "detected",
            Outcome::Missed => "missed",
            Outcome::Quiet => "quiet",
            Outcome::FalsePositive => "false-positive",
            Outcome::Skipped(_) => "skipped",
            Outcome::Error(_) => "error",
        }
    }
}

/// An expected rule or technique and the alert that met it.
#[derive(Debug, Clone)]
pub struct Hit {
    pub expected: String,
    pub rule: String,
    pub latency: Duration,
}

#[derive(Debug, Clone)]
pub struct ScenarioResult {
    /// The scenario's name, `NAME@mutated` for its mutated run.
    pub name: String,
    /// The scenario's file name without `.toml`.
    pub scenario: String,
    pub variant: Variant,
    /// The values its vars took.
    pub vars: BTreeMap<String, String>,
    pub title: String,
    pub attack: bool,
    pub outcome: Outcome,
    pub hits: Vec<Hit>,
    pub missing: Vec<String>,
    /// Rule ids of every alert the scenario raised, in order, repeats left out.
    pub alerts: Vec<String>,
    /// For a false positive: what raised each alert (rule, exe, argv).
    pub false_positives: Vec<String>,
    /// For a look-alike with `allow`: the alerts it raised that are
    /// allowed (at most the allowed severity), described as above.
    pub allowed: Vec<String>,
    pub duration: Duration,
    /// The monitor reported events the kernel dropped during the scenario.
    pub lost_events: bool,
    /// Said after the result, such as why the scenario ran twice.
    pub note: Option<String>,
}

impl ScenarioResult {
    /// A scenario that has not run (yet), with why as an error.
    pub fn not_run(s: &super::scenario::Scenario, variant: Variant, why: String) -> Self {
        ScenarioResult {
            name: variant.label(&s.name),
            scenario: s.name.clone(),
            variant,
            vars: BTreeMap::new(),
            title: s.title.clone(),
            attack: s.is_attack(),
            outcome: Outcome::Error(why),
            hits: Vec::new(),
            missing: Vec::new(),
            alerts: Vec::new(),
            false_positives: Vec::new(),
            allowed: Vec::new(),
            duration: Duration::ZERO,
            lost_events: false,
            note: None,
        }
    }

    /// Time from the attack step until the last expected alert arrived.
    pub fn latency(&self) -> Option<Duration> {
        (self.outcome == Outcome::Detected)
            .then(|| self.hits.iter().map(|h| h.latency).max())
            .flatten()
    }

    /// The line printed as the scenario finishes.
    pub fn line(&self, index: usize, total: usize) -> String {
        let mark = match &self.outcome {
            o if o.failed() => "FAIL",
            Outcome::Skipped(_) => "SKIP",
            _ => "ok  ",
        };
        let detail = match &self.outcome {
            Outcome::Detected => self
                .hits
                .iter()
                .map(|h| format!("{} {}", h.expected, secs(h.latency)))
                .collect::<Vec<_>>()
                .join(", "),
            Outcome::Missed => format!(
                "missing {}; raised: {}",
                self.missing.join(", "),
                list_or_none(&self.alerts)
            ),
            Outcome::Quiet if self.allowed.is_empty() => "no alerts".into(),
            Outcome::Quiet => format!("only allowed alerts: {}", self.allowed.join("; ")),
            Outcome::FalsePositive => self.false_positives.join("; "),
            Outcome::Skipped(why) | Outcome::Error(why) => why.clone(),
        };
        let mut line = format!(
            "lab: [{index:>2}/{total}] {mark} {:<14} {:<42} {detail} ({})",
            self.outcome.word(),
            self.name,
            secs(self.duration)
        );
        if self.lost_events {
            line.push_str(" [the monitor lost kernel events]");
        }
        if let Some(note) = &self.note {
            line.push_str(&format!(" [{note}]"));
        }
        line
    }

    fn to_json(&self) -> Value {
        json!({
            "name": self.name,
            "scenario": self.scenario,
            "variant": self.variant.word(),
            "vars": self.vars,
            "title": self.title,
            "kind": if self.attack { "attack" } else { "benign" },
            "result": self.outcome.word(),
            "reason": match &self.outcome {
                Outcome::Skipped(w) | Outcome::Error(w) => Value::from(w.as_str()),
                _ => Value::Null,
            },
            "detected": self.hits.iter().map(|h| json!({
                "expected": h.expected,
                "rule": h.rule,
                "latency_ms": ms(h.latency),
            })).collect::<Vec<_>>(),
            "missing": self.missing,
            "alerts": self.alerts,
            "false_positives": self.false_positives,
            "allowed": self.allowed,
            "latency_ms": self.latency().map(ms),
            "duration_ms": ms(self.duration),
            "monitor_lost_events": self.lost_events,
            "note": self.note,
        })
    }
}

fn list_or_none(v: &[String]) -> String {
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}

fn secs(d: Duration) -> String {
    format!("{:.2}s", d.as_secs_f64())
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Totals over a run.
pub struct Summary {
    pub attacks: usize,
    pub detected: usize,
    pub missed: usize,
    pub benign: usize,
    pub quiet: usize,
    pub false_positives: usize,
    pub skipped: usize,
    pub errors: usize,
    pub latencies: Vec<Duration>,
}

impl Summary {
    pub fn of(results: &[ScenarioResult]) -> Self {
        let count = |f: &dyn Fn(&ScenarioResult) -> bool| results.iter().filter(|r| f(r)).count();
        let mut latencies: Vec<Duration> = results.iter().filter_map(|r| r.latency()).collect();
        latencies.sort();
        Summary {
            attacks: count(&|r| r.attack && !matches!(r.outcome, Outcome::Skipped(_))),
            detected: count(&|r| r.outcome == Outcome::Detected),
            missed: count(&|r| r.outcome == Outcome::Missed),
            benign: count(&|r| !r.attack && !matches!(r.outcome, Outcome::Skipped(_))),
            quiet: count(&|r| r.outcome == Outcome::Quiet),
            false_positives: count(&|r| r.outcome == Outcome::FalsePositive),
            skipped: count(&|r| matches!(r.outcome, Outcome::Skipped(_))),
            errors: count(&|r| matches!(r.outcome, Outcome::Error(_))),
            latencies,
        }
    }

    pub fn failed(&self) -> usize {
        self.missed + self.false_positives + self.errors
    }

    fn median(&self) -> Option<Duration> {
        self.latencies.get(self.latencies.len() / 2).copied()
    }

    pub fn lines(&self) -> Vec<String> {
        let mut out = vec![format!(
            "lab: scorecard: attacks {} run, {} detected, {} missed; benign {} run, {} quiet, {} false positives; {} skipped; {} errors",
            self.attacks, self.detected, self.missed, self.benign, self.quiet, self.false_positives, self.skipped, self.errors
        )];
        if let (Some(median), Some(max)) = (self.median(), self.latencies.last()) {
            out.push(format!(
                "lab: time from the attack step to the last expected alert: median {}, max {} (over {} detected scenarios)",
                secs(median),
                secs(*max),
                self.latencies.len()
            ));
        }
        out
    }
}

/// Writes the scorecard as the README's Markdown: a summary paragraph
/// (`heading` says when and where it was measured), then a row a run.
pub fn write_markdown(path: &Path, results: &[ScenarioResult], heading: &str) -> Result<()> {
    let s = Summary::of(results);
    let mut out = format!(
        "{heading}: **{} attack runs, {} detected, {} missed; {} benign runs, {} quiet, {} false positives; {} skipped; {} errors**.",
        s.attacks, s.detected, s.missed, s.benign, s.quiet, s.false_positives, s.skipped, s.errors
    );
    if let (Some(median), Some(max)) = (s.median(), s.latencies.last()) {
        out.push_str(&format!(
            " Time from the attack step to the last expected alert: median {}, max {}.",
            secs(median).replace('s', " s"),
            secs(*max).replace('s', " s")
        ));
    }
    out.push_str(
        "\n\n| scenario | result | expected alerts, time after the attack step |\n|---|---|---|\n",
    );
    let mut rows: Vec<&ScenarioResult> = results.iter().collect();
    rows.sort_by(|a, b| a.name.cmp(&b.name));
    for r in rows {
        let detail = match &r.outcome {
            Outcome::Detected => r
                .hits
                .iter()
                .map(|h| format!("{} {}", h.expected, secs(h.latency).replace('s', " s")))
                .collect::<Vec<_>>()
                .join(", "),
            Outcome::Quiet if r.allowed.is_empty() => "none raised".into(),
            Outcome::Quiet => format!("only allowed alerts: {}", r.allowed.join("; ")),
            Outcome::Missed => format!("missing {}", r.missing.join(", ")),
            Outcome::FalsePositive => r.false_positives.join("; "),
            Outcome::Skipped(why) | Outcome::Error(why) => why.clone(),
        };
        out.push_str(&format!(
            "| `{}` | {} | {detail} |\n",
            r.name,
            r.outcome.word()
        ));
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, out).with_context(|| format!("writing {}", path.display()))
}

/// Writes the scorecard as JSON.
pub fn write_json(path: &Path, results: &[ScenarioResult], context: Value) -> Result<()> {
    let s = Summary::of(results);
    let doc = json!({
        "context": context,
        "summary": {
            "attacks": s.attacks,
            "detected": s.detected,
            "missed": s.missed,
            "benign": s.benign,
            "quiet": s.quiet,
            "false_positives": s.false_positives,
            "skipped": s.skipped,
            "errors": s.errors,
            "latency_ms": {
                "median": s.median().map(ms),
                "max": s.latencies.last().copied().map(ms),
            },
        },
        "scenarios": results.iter().map(ScenarioResult::to_json).collect::<Vec<_>>(),
    });
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, serde_json::to_string_pretty(&doc)? + "\n")
        .with_context(|| format!("writing {}", path.display()))
}
