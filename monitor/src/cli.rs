//! Command-line interface.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// edgewatch: eBPF intrusion monitor for Linux edge gateways.
///
/// Watches every process execution, fork and exit and every TCP and UDP
/// socket from the kernel, runs detection rules over them, writes events
/// and alerts as JSON lines, delivers alerts to syslog, Alertmanager, a
/// webhook or a file, and exports Prometheus metrics.
///
/// Start with `monitor config default > monitor.toml`, edit it, check it
/// with `monitor config check monitor.toml`, then `monitor run --config
/// monitor.toml` as root.
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
    /// Events and alerts go to stdout as JSON lines (see [output]), alerts
    /// also to the sinks of [alerts]; metrics are served at [metrics]
    /// listen; logs go to stderr. SIGHUP reloads [detect] and the rules.
    /// Needs root, or CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN, CAP_SYS_PTRACE
    /// (and CAP_SYS_ADMIN when tracefs is not mounted). Exit code 1: could
    /// not start or run; 2: bad command line or configuration.
    Run {
        /// Configuration file (TOML). Without it the embedded default is
        /// used, as printed by `monitor config default`.
        #[arg(long, short, value_name = "PATH")]
        config: Option<PathBuf>,
    },
    /// Print the JSON Schema of every line the monitor writes (events of
    /// every kind, and alerts); rule fields are checked against it.
    Schema,
    /// The self-check canary: exits at once. The running monitor execs it
    /// and expects to see the exec (see `[selfcheck]`).
    #[command(hide = true)]
    Canary,
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
        /// Recorded events, JSON lines (`-`: standard input).
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
        /// Rule files, or directories whose `*.toml` files are rules.
        #[arg(value_name = "PATH", required = true)]
        paths: Vec<PathBuf>,
    },
    /// Print the built-in rule pack.
    Show,
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print the embedded default configuration, with every key documented.
    ///
    /// It is what `monitor run` uses without --config; redirect it to a
    /// file to start your own.
    Default,
    /// Validate a configuration file; errors are reported as file:line:col.
    ///
    /// Checks the syntax and every key and value, alert sinks included,
    /// and compiles the rules it names (the built-in pack and
    /// `detect.rule_paths`) as `monitor run` would, without needing root;
    /// ports are first opened by `monitor run`. Exit code 2 when invalid.
    Check {
        /// The configuration file (TOML).
        #[arg(value_name = "PATH")]
        path: PathBuf,
    },
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    use super::*;

    /// Every visible command, as its path of names (`["config", "check"]`).
    fn commands(
        cmd: &clap::Command,
        path: Vec<String>,
        out: &mut Vec<(Vec<String>, clap::Command)>,
    ) {
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
            let mut p = path.clone();
            p.push(sub.get_name().to_owned());
            out.push((p.clone(), sub.clone()));
            commands(sub, p, out);
        }
    }

    #[test]
    fn every_command_and_argument_says_what_it_is_for() {
        let cli = Cli::command();
        cli.clone().debug_assert();
        let mut all = Vec::new();
        commands(&cli, Vec::new(), &mut all);
        assert!(all.len() >= 8, "{} commands", all.len());
        for (path, cmd) in &all {
            let about = cmd.get_about().map(|a| a.to_string()).unwrap_or_default();
            assert!(
                about.len() > 10,
                "`monitor {}` has no description",
                path.join(" ")
            );
            for arg in cmd.get_arguments() {
                let id = arg.get_id().as_str();
                if matches!(id, "help" | "version") {
                    continue;
                }
                assert!(
                    arg.get_help().is_some_and(|h| h.to_string().len() > 10),
                    "`monitor {}`: argument {id} has no help",
                    path.join(" ")
                );
            }
        }
    }

    #[test]
    fn the_readme_lists_every_command() {
        let readme = include_str!("../../README.md");
        let mut all = Vec::new();
        commands(&Cli::command(), Vec::new(), &mut all);
        for (path, cmd) in all {
            if cmd.has_subcommands() {
                continue;
            }
            let line = format!("monitor {}", path.join(" "));
            assert!(readme.contains(&line), "README lacks `{line}`");
        }
    }
}
