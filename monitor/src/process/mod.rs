//! The enrich stage's process picture: a bounded table of processes, seeded
//! from /proc at start and kept current from fork, exec and exit events.

pub mod cgroup;
pub mod procfs;
pub mod program;
mod table;

pub use table::{bounded_argv, Pipes, Process, ProcessTable, TableStats};

#[derive(Debug, Clone, serde::Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ProcessTableConfig {
    pub capacity: toml::Spanned<usize>,
    pub exited_retention_secs: u64,
}

impl Default for ProcessTableConfig {
    fn default() -> Self {
        Self {
            capacity: toml::Spanned::new(0..0, 32768),
            exited_retention_secs: 60,
        }
    }
}

/// The process table's metrics.
#[derive(Clone)]
pub struct ProcessMetrics {
    pub process_table_entries: prometheus::IntGauge,
    pub process_table_evictions: prometheus::IntCounter,
}

impl ProcessMetrics {
    pub fn register(registry: &prometheus::Registry) -> Self {
        use crate::metrics::{counter, gauge};
        Self {
            process_table_entries: gauge(
                registry,
                "process_table_entries",
                "Processes in the process table.",
            ),
            process_table_evictions: counter(
                registry,
                "process_table_evictions_total",
                "Processes evicted from the full process table.",
            ),
        }
    }
}
