//! Command-line interface.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// edgewatch: eBPF intrusion monitor for Linux edge gateways.
///
/// Watches process execution in the kernel and writes every event as a
/// JSON line, with the process's ancestry, while exporting Prometheus
/// metrics.
#[derive(Debug, Parser)]
#[command(name = "monitor", version, propagate_version = true)]
pub struct Cli {
    /// Daemon log level on stderr (error, warn, info, debug, trace); the
    /// RUST_LOG environment variable overrides it.
    #[arg(long, global = true, default_value = "info", value_name = "LEVEL")]
    pub log_level: String,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Load the eBPF probes and monitor until SIGINT or SIGTERM.
    ///
    /// Events go to stdout as JSON lines; logs go to stderr. Needs root (or
    /// CAP_BPF and CAP_PERFMON, with CAP_SYS_ADMIN to mount tracefs).
    Run {
        /// Configuration file (TOML). Without it the embedded default is
        /// used, as printed by `monitor config default`.
        #[arg(long, short, value_name = "PATH")]
        config: Option<PathBuf>,
    },
    /// Print or check configuration files.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Check rule files, or print the built-in rule pack.
    #[command(subcommand)]
    Rules(RulesCommand),
    /// Run recorded events through the rules, offline, and print the alerts.
    ///
    /// EVENTS is a file of JSON lines as `monitor run` writes them (`-` for
    /// standard input). Alerts go to stdout as JSON lines; a summary and
    /// any unreadable line go to stderr. Use it to try a rule on a
    /// recording before deploying it.
    Replay {
        #[arg(value_name = "EVENTS")]
        events: PathBuf,
        /// Configuration whose [detect] section chooses the rules (the
        /// embedded default when absent).
        #[arg(long, short, value_name = "PATH")]
        config: Option<PathBuf>,
        /// Extra rule files or directories, added to those of the configuration.
        #[arg(long = "rules", value_name = "PATH")]
        rules: Vec<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum RulesCommand {
    /// Validate rule files or directories of `*.toml` rules; errors are
    /// reported as file:line:col.
    Check {
        #[arg(value_name = "PATH", required = true)]
        paths: Vec<PathBuf>,
    },
    /// Print the built-in rule pack.
    Show,
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print the embedded default configuration, with every key documented.
    Default,
    /// Validate a configuration file; errors are reported as file:line:col.
    Check {
        #[arg(value_name = "PATH")]
        path: PathBuf,
    },
}
