//! The `alert` line and alert severities.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Alert severities, lowest first.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Deserialize,
    serde::Serialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    pub const ALL: [Severity; 5] = [
        Severity::Info,
        Severity::Low,
        Severity::Medium,
        Severity::High,
        Severity::Critical,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }
}

/// One alert line (`"kind": "alert"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct AlertRecord {
    pub ts: String,
    /// Stable id of this alert: repeats and updates carry the same id.
    pub alert_id: String,
    pub rule: String,
    pub title: String,
    pub severity: Severity,
    pub attack: Vec<String>,
    #[serde(skip_serializing_if = "String::is_empty", default)]
    pub description: String,
    /// The process: pid, exe, argv, ancestry.
    pub process: Value,
    /// Connections involved (socket events among the evidence).
    pub connections: Vec<Value>,
    /// The events that matched, oldest first.
    pub evidence: Vec<Value>,
    /// How many times the rule matched on this lineage in the window.
    pub count: u64,
    /// A later line for an alert already raised, with the final count of
    /// the window.
    #[serde(skip_serializing_if = "std::ops::Not::not", default)]
    pub repeat: bool,
    /// An `alert_update` line: a match folded into this open alert that
    /// brought another command line, executable or peer (its process and
    /// evidence are the new match's; `count` is the alert's so far). The
    /// line's `kind` says it; not a field of its own.
    #[serde(skip)]
    pub update: bool,
    /// The process lineage the alert is about: the nearest network-facing
    /// ancestor, else the parent.
    pub lineage: u64,
    /// When the dedup window ends (RFC 3339): matches until then only
    /// raise `count`. Absent when the rule never folds repeats.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub window_end: Option<String>,
}
