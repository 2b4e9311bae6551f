//! Project tasks, run as `cargo xtask <task>`:
//! - `test`: unit tests, then the root-level kernel tests against a release
//!   build of the monitor;
//! - `lint`: formatting and clippy, for the host crates and the eBPF crate;
//! - `bench`: the monitor's cost against the same workloads without it;
//! - `lab`: attack scenarios on a gateway topology in network namespaces.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context as _, Result};

mod bench;
mod lab;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "xtask", about = "edgewatch project tasks")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Run every test: unit tests (no root), then the kernel tests (root).
    Test {
        /// Extra arguments for the kernel test binaries, such as a test name.
        #[arg(last = true)]
        filter: Vec<String>,
        /// Leave out the lab (`cargo xtask lab`) that runs after the kernel
        /// tests, for a quicker local run. CI runs it.
        #[arg(long)]
        no_lab: bool,
    },
    /// Play the attack and look-alike scenarios of tests/scenarios against
    /// the monitor on a gateway topology in network namespaces (root).
    Lab(lab::Args),
    /// Check formatting and run clippy on every crate.
    Lint,
    /// Measure what the monitor costs against the same workloads without
    /// it (root; prints a table, writes target/bench/bench.json).
    Bench(bench::Options),
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

fn run(cmd: &mut Command) -> Result<()> {
    eprintln!("xtask: running {cmd:?}");
    let status = cmd.status().with_context(|| format!("spawning {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}

fn cargo() -> Command {
    let mut c = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    c.current_dir(workspace_root());
    c
}

/// Kernel test binaries of the `tests` crate that can share the machine.
const KERNEL_TESTS: [&str; 11] = [
    "process",
    "bad_input",
    "startup",
    "network",
    "detect",
    "relay",
    "dataplane",
    "selfcheck",
    "faults",
    "ops",
    "web",
];

fn monitor_release() -> Result<PathBuf> {
    run(cargo().args(["build", "--release", "-p", "monitor"]))?;
    Ok(workspace_root().join("target/release/monitor"))
}

fn test(filter: &[String], no_lab: bool) -> Result<()> {
    run(cargo().args([
        "test",
        "--workspace",
        "--exclude",
        "monitor-ebpf",
        "--exclude",
        "tests",
    ]))?;
    let monitor = monitor_release()?;
    // SAFETY: geteuid cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        eprintln!("xtask: warning: not root, so the kernel tests and the lab will skip themselves");
    }
    run(cargo()
        .args(["test", "-p", "tests", "--lib"])
        .args(KERNEL_TESTS.iter().flat_map(|t| ["--test", t]))
        .args(["--", "--test-threads=2"])
        .args(filter)
        .env("EDGEWATCH_MONITOR", &monitor))?;
    // The load tests each saturate the machine: one at a time, so they
    // starve neither each other nor the tests above.
    run(cargo()
        .args([
            "test",
            "-p",
            "tests",
            "--test",
            "stress",
            "--",
            "--test-threads=1",
        ])
        .args(filter)
        .env("EDGEWATCH_MONITOR", &monitor))?;
    if no_lab || !root {
        eprintln!("xtask: the lab was left out");
        return Ok(());
    }
    lab::run(&workspace_root(), &monitor, &lab::Args::default())
}

fn lint() -> Result<()> {
    run(cargo().args(["fmt", "--all", "--", "--check"]))?;
    run(cargo().args([
        "clippy",
        "--workspace",
        "--exclude",
        "monitor-ebpf",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    run(Command::new("cargo")
        .current_dir(workspace_root().join("monitor-ebpf"))
        .args([
            "+nightly",
            "clippy",
            "--target",
            "bpfel-unknown-none",
            "-Z",
            "build-std=core",
            "--",
            "-D",
            "warnings",
        ])
        .env_remove("RUSTC")
        .env_remove("RUSTUP_TOOLCHAIN"))
}

fn main() -> Result<()> {
    match Cli::parse().task {
        Task::Test { filter, no_lab } => test(&filter, no_lab),
        Task::Lint => lint(),
        Task::Bench(opts) => {
            monitor_release()?;
            bench::run(&workspace_root(), &opts)
        }
        Task::Lab(args) => lab::run(&workspace_root(), &monitor_release()?, &args),
    }
}
