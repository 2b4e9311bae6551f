//! The `self_check` event.

use serde::{Deserialize, Serialize};

/// A `self_check` line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct SelfCheckRecord {
    pub ts: String,
    pub status: SelfCheckStatus,
    /// The probe whose link was detached.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub probe: Option<String>,
    pub detail: String,
}

/// What a `self_check` line reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SelfCheckStatus {
    /// One of the monitor's probes was detached from outside.
    ProbeDetached,
    /// The canary's exec did not come back through the pipeline in time.
    CanaryMissed,
    /// A canary came back after misses.
    CanaryRecovered,
}
