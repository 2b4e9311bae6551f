//! The enrich stage's process picture: a bounded table of processes, seeded
//! from /proc at start and kept current from fork, exec and exit events.

pub mod procfs;
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
