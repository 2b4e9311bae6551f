use std::process::ExitCode;

use clap::Parser as _;
use monitor::{
    cli::{Cli, Command, ConfigCommand},
    config::{Config, DEFAULT_TOML},
    daemon, EXIT_FAILURE, EXIT_USAGE,
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
        Command::Config(ConfigCommand::Default) => {
            print!("{DEFAULT_TOML}");
            ExitCode::SUCCESS
        }
        Command::Config(ConfigCommand::Check { path }) => match Config::load(&path) {
            Ok(_) => {
                println!("{}: ok", path.display());
                ExitCode::SUCCESS
            }
            Err(e) => fail(EXIT_USAGE, &e),
        },
        Command::Run { config } => {
            let config = match config {
                Some(path) => match Config::load(&path) {
                    Ok(c) => c,
                    Err(e) => return fail(EXIT_USAGE, &e),
                },
                None => Config::embedded(),
            };
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
            {
                Ok(r) => r,
                Err(e) => return fail(EXIT_FAILURE, &e),
            };
            match runtime.block_on(daemon::run(config)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(EXIT_FAILURE, &e),
            }
        }
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
