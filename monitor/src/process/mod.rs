//! The enrich stage's process picture: a bounded table of processes, seeded
//! from /proc at start and kept current from fork, exec and exit events.

pub mod procfs;
mod table;

pub use table::{bounded_argv, Pipes, Process, ProcessTable, TableStats};
