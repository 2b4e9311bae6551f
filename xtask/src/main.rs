//! Project tasks, run as `cargo xtask <task>`:
//! - `test`: unit tests, then the root-level kernel tests against a release
//!   build of the monitor, then the same tests in a VM on another kernel;
//! - `vm`: the kernel tests in VMs over a matrix of kernels (see [`vm`]);
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
mod vm;
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
        /// Skip the VM run on another kernel (also: EDGEWATCH_SKIP_VM=1).
        #[arg(long)]
        no_vm: bool,
        /// Extra arguments for the kernel test binaries, such as a test name.
        #[arg(last = true)]
        filter: Vec<String>,
        /// Leave out the lab (`cargo xtask lab --mutate`) that runs after the
        /// kernel tests, for a quicker local run. CI runs it.
        #[arg(long)]
        no_lab: bool,
    },
    /// Play the attack and look-alike scenarios of tests/scenarios against
    /// the monitor on a gateway topology in network namespaces (root).
    Lab(lab::Args),
    /// Boot kernels under QEMU and run the kernel tests inside each.
    Vm(vm::VmArgs),
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
const KERNEL_TESTS: [&str; 17] = [
    "process",
    "identity",
    "namespaces",
    "stdio_links",
    "bad_input",
    "startup",
    "network",
    "detect",
    "relay",
    "relay_short",
    "protocol_tunnels",
    "dataplane",
    "tunnels",
    "selfcheck",
    "faults",
    "ops",
    "web",
];

fn monitor_release() -> Result<PathBuf> {
    run(cargo().args(["build", "--release", "-p", "monitor"]))?;
    Ok(workspace_root().join("target/release/monitor"))
}

fn test(filter: &[String], no_lab: bool, no_vm: bool) -> Result<()> {
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
    } else {
        // Every attack with vars runs as written and mutated.
        let args = lab::Args {
            mutate: true,
            ..lab::Args::default()
        };
        lab::run(&workspace_root(), &monitor, &args)?;
    }
    if no_vm || std::env::var_os("EDGEWATCH_SKIP_VM").is_some_and(|v| v == "1") {
        eprintln!("xtask: skipping the VM run on Linux {}", vm::CI_KERNEL);
        return Ok(());
    }
    let mut args = vm::VmArgs::ci(vm::CI_KERNEL);
    args.filter = filter.to_vec();
    vm::vm(&args)?;
    vm::vm(&vm::VmArgs::lockdown_refusal())
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
        Task::Test {
            filter,
            no_lab,
            no_vm,
        } => test(&filter, no_lab, no_vm),
        Task::Vm(args) => vm::vm(&args),
        Task::Lint => lint(),
        Task::Bench(opts) => {
            monitor_release()?;
            bench::run(&workspace_root(), &opts)
        }
        Task::Lab(args) => lab::run(&workspace_root(), &monitor_release()?, &args),
    }
}
