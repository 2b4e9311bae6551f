use std::process::ExitCode;

use clap::Parser as _;
use monitor::{
    cli::{Cli, Command, ConfigCommand, RulesCommand},
    config::{Config, DEFAULT_TOML},
    daemon,
    detect::{rule, stage::load_rules},
    load, replay, EXIT_FAILURE, EXIT_USAGE,
};
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&cli.log_level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .init();

    match cli.command {
        Command::Canary => ExitCode::SUCCESS,
        Command::Schema => {
            let schema = monitor::event::catalogue::line_schema();
            match serde_json::to_string_pretty(&schema) {
                Ok(text) => {
                    println!("{text}");
                    ExitCode::SUCCESS
                }
                Err(e) => fail(EXIT_FAILURE, &e),
            }
        }
        Command::Config(ConfigCommand::Default) => {
            print!("{DEFAULT_TOML}");
            ExitCode::SUCCESS
        }
        Command::Config(ConfigCommand::Check { path }) => {
            let config = match Config::load(&path) {
                Ok(c) => c,
                Err(e) => return fail(EXIT_USAGE, &e),
            };
            // The rules it names, compiled as `run` would.
            match load_rules(&config.detect, &[]) {
                Ok(rules) => {
                    println!("{}: ok, {} rules", path.display(), rules.len());
                    ExitCode::SUCCESS
                }
                Err(e) => fail(EXIT_USAGE, &e),
            }
        }
        Command::Rules(RulesCommand::Show) => {
            print!("{}", rule::BUILTIN);
            ExitCode::SUCCESS
        }
        Command::Rules(RulesCommand::Check { paths }) => {
            // Checked with the built-in pack, as `run` loads them: an id
            // that clashes with a built-in one, or an override or exception
            // naming no rule, is an error here too.
            match rule::load_pack(true, &paths, &[]) {
                Ok(rule::Pack { rules, per_file }) => {
                    for (file, n) in per_file.iter().filter(|(f, _)| f != rule::BUILTIN_NAME) {
                        println!("{file}: {n} rules ok");
                    }
                    println!("{} rules in all, the built-in pack included", rules.len());
                    ExitCode::SUCCESS
                }
                Err(e) => fail(EXIT_USAGE, &e),
            }
        }
        Command::Replay {
            events,
            config,
            rules,
        } => {
            let config = match load_config(config.as_deref()) {
                Ok(c) => c,
                Err(code) => return code,
            };
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::new(stdout.lock());
            match replay::run(&events, &config, &rules, &mut out) {
                Ok(s) => {
                    drop(out);
                    eprintln!(
                        "replayed {} events: {} alerts, {} unreadable lines",
                        s.events,
                        s.alerts,
                        s.bad_lines.len()
                    );
                    if s.untyped > 0 {
                        eprintln!(
                            "{} events are not of this version's schema: judged by their JSON fields",
                            s.untyped
                        );
                    }
                    ExitCode::SUCCESS
                }
                Err(e @ replay::ReplayError::Rules(_)) => fail(EXIT_USAGE, &e),
                Err(e) => fail(EXIT_FAILURE, &e),
            }
        }
        Command::Run { config: path } => {
            let config = match load_config(path.as_deref()) {
                Ok(c) => c,
                Err(code) => return code,
            };
            // Load and attach on this thread, before any other exists, so
            // the capability drop that follows covers every thread.
            let loaded = match load::load(&config) {
                Ok(l) => l,
                Err(e) => return fail(EXIT_FAILURE, &e),
            };
            // Before the drop: reading other network namespaces' sockets
            // from inside them needs CAP_SYS_ADMIN. After attaching, so a
            // socket opened meanwhile is both seeded and reported.
            let sockets = monitor::net::netns::sockets_everywhere(
                std::path::Path::new("/proc"),
                std::path::Path::new("/run/netns"),
            );
            let keep = load::caps::runtime_set(config.dataplane.netns.is_some());
            // The "monitor ready" line names what is kept.
            if let Err(e) = load::caps::drop_to(keep) {
                tracing::warn!(error = %e, "could not drop capabilities; running with those it started with");
            }
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
            {
                Ok(r) => r,
                Err(e) => return fail(EXIT_FAILURE, &e),
            };
            match runtime.block_on(daemon::run(config, path, loaded, sockets)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(EXIT_FAILURE, &e),
            }
        }
    }
}

/// The configuration at `path`, or the embedded default.
fn load_config(path: Option<&std::path::Path>) -> Result<Config, ExitCode> {
    match path {
        Some(p) => Config::load(p).map_err(|e| fail(EXIT_USAGE, &e)),
        None => Ok(Config::embedded()),
    }
}

/// Prints one line naming what failed and why, then exits with `code`.
fn fail(code: i32, err: &dyn std::error::Error) -> ExitCode {
    let mut line = format!("monitor: error: {err}");
    let mut source = err.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        source = s.source();
    }
    eprintln!("{line}");
    ExitCode::from(code as u8)
}
