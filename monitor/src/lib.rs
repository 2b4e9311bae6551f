//! The edgewatch daemon as a library. The data path is a set of stages,
//! one module each: [`load`] (eBPF object and probes), [`read`] (ring
//! buffer), [`decode`], [`enrich`] (process table), [`detect`] (rules),
//! [`output`] (JSON lines), [`alert`] (alert sinks) and [`metrics`]
//! (Prometheus; TLS and authentication in [`web_config`]). [`pipeline`]
//! runs them, with the periodic sensors; [`daemon`] builds it.

pub mod alert;
pub mod cli;
pub mod clock;
pub mod config;
pub mod daemon;
pub mod dataplane;
pub mod decode;
pub mod detect;
pub mod enrich;
pub mod escape;
pub mod event;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzz;
pub mod load;
pub mod metrics;
pub mod net;
pub mod output;
pub mod pipeline;
pub mod process;
pub mod read;
pub mod replay;
pub mod selfcheck;
pub mod source;
pub mod web_config;

/// Exit code for bad configuration or usage (clap uses it too).
pub const EXIT_USAGE: i32 = 2;
/// Exit code for a failure to start or run.
pub const EXIT_FAILURE: i32 = 1;
