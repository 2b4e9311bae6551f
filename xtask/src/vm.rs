//! `cargo xtask vm`: the root-level kernel tests inside QEMU on other
//! kernels. Debian kernel packages are fetched with apt and cached
//! ([`kernel`]); an initramfs with the release monitor, the test binaries
//! and the tools they run is built once ([`initramfs`]); each kernel boots
//! under TCG ([`qemu`]); the guest reports which probes attached and how
//! the test suites went, which becomes a table and a JSON file
//! ([`report`]).

mod initramfs;
mod kernel;
mod qemu;
mod report;

use std::{fs, path::PathBuf, time::Duration};

use anyhow::{bail, Context as _, Result};

use self::report::KernelReport;
use crate::{cargo, monitor_release, workspace_root};

/// The suites a kernel is tested with unless `--suite` says otherwise:
/// exec, network and relay capture, tunnel links (whose modules the host
/// kernel lacks), and the start-up failures.
pub const DEFAULT_SUITES: [&str; 7] = [
    "process",
    "network",
    "relay",
    "relay_short",
    "protocol_tunnels",
    "tunnels",
    "startup",
];

/// The kernel `cargo xtask test` boots besides the host's: the oldest
/// Debian kernel apt reaches, without the 6.4 socket activity tracepoints.
pub const CI_KERNEL: &str = "6.1";

#[derive(clap::Args)]
pub struct VmArgs {
    /// A kernel to boot: a Debian version such as 6.1 or 6.12 (the newest
    /// cloud kernel package of that version), a linux-image-* package
    /// name, or the path of a kernel image. Repeat for a matrix.
    #[arg(long = "kernel", required = true, value_name = "VERSION|PACKAGE|PATH")]
    pub kernels: Vec<String>,
    /// A kernel test suite (a test binary of the tests crate) to run.
    /// Repeatable.
    #[arg(long = "suite", value_name = "NAME", default_values_t = DEFAULT_SUITES.map(String::from))]
    pub suites: Vec<String>,
    /// More kernel command line, such as lockdown=confidentiality.
    #[arg(long, default_value = "")]
    pub append: String,
    /// Expect the monitor to refuse to start: pass when it exits with code
    /// 1 and one line on stderr that contains TEXT; no suites run.
    #[arg(long, value_name = "TEXT")]
    pub expect_refusal: Option<String>,
    /// Longest a VM may run before it is stopped and counted as failed.
    #[arg(long, default_value_t = 40)]
    pub timeout_minutes: u64,
    #[arg(long, default_value_t = 3072)]
    pub memory_mib: u32,
    #[arg(long, default_value_t = 2)]
    pub cpus: u32,
    /// Factor the tests' waits are stretched by under emulation.
    #[arg(long, default_value_t = 6)]
    pub timeout_scale: u32,
    /// Longest one test may run in the guest before it is killed and
    /// counted as failed (the tests run one at a time).
    #[arg(long, default_value_t = 600)]
    pub test_limit_secs: u64,
    /// Arguments for every test binary, such as a test name filter.
    #[arg(last = true)]
    pub filter: Vec<String>,
}

impl VmArgs {
    /// The matrix `cargo xtask test` runs: the default suites on one kernel.
    pub fn ci(kernel: &str) -> Self {
        Self {
            kernels: vec![kernel.to_owned()],
            suites: DEFAULT_SUITES.map(String::from).to_vec(),
            append: String::new(),
            expect_refusal: None,
            timeout_minutes: 40,
            memory_mib: 3072,
            cpus: 2,
            timeout_scale: 6,
            test_limit_secs: 600,
            filter: Vec::new(),
        }
    }
}

impl VmArgs {
    /// Linux 6.1 booted in lockdown (`lockdown=confidentiality`), which
    /// takes away the kernel-memory reads every probe needs: the monitor
    /// must refuse to start, in one line naming the exec probe, exit 1.
    pub fn lockdown_refusal() -> Self {
        Self {
            append: "lockdown=confidentiality".to_owned(),
            expect_refusal: Some("required probe process_sched_exec".to_owned()),
            ..Self::ci(CI_KERNEL)
        }
    }
}

/// Builds, boots every kernel, prints the table, writes
/// `target/vm/report.json` (`refusal-report.json` for an expected
/// refusal); fails when any kernel failed.
pub fn vm(args: &VmArgs) -> Result<()> {
    let out = workspace_root().join("target/vm");
    fs::create_dir_all(&out)?;
    let payload = initramfs::Payload {
        monitor: monitor_release()?,
        suites: test_binaries(&args.suites)?,
    };
    eprintln!("xtask vm: building the initramfs");
    let base = initramfs::build_base(&out, &payload)?;
    let settings = initramfs::Settings {
        suites: if args.expect_refusal.is_some() {
            Vec::new()
        } else {
            args.suites.clone()
        },
        test_limit_secs: args.test_limit_secs,
        timeout_scale: args.timeout_scale,
        filter: args.filter.clone(),
    };
    let mut reports = Vec::new();
    for spec in &args.kernels {
        let kernel = kernel::prepare(spec)?;
        let dir = out.join(dir_name(spec));
        fs::create_dir_all(&dir)?;
        let initrd = initramfs::for_kernel(&dir, &base, &kernel, &settings)?;
        eprintln!(
            "xtask vm: booting {} ({}) under TCG",
            spec,
            kernel.image.display()
        );
        let outcome = qemu::Boot {
            image: &kernel.image,
            initrd: &initrd,
            append: &args.append,
            memory_mib: args.memory_mib,
            cpus: args.cpus,
            timeout: Duration::from_secs(args.timeout_minutes * 60),
            dir: &dir,
        }
        .run(|line| {
            if !line.starts_with("log ") && !line.starts_with("metric ") {
                eprintln!("xtask vm: [{spec}] {line}");
            }
        })?;
        let mut report = KernelReport::parse(spec, kernel.package.clone(), &outcome.results);
        report.timed_out = outcome.timed_out;
        report.seconds = outcome.elapsed.as_secs();
        if let Some(text) = &args.expect_refusal {
            report.refusal_as_expected = Some(
                report.monitor_exit == Some(1)
                    && report.monitor_log.len() == 1
                    && report.monitor_log[0].contains(text.as_str()),
            );
        }
        if !report.ok(&settings.suites) {
            print_failures(&report, &outcome.console);
        }
        reports.push(report);
    }
    let json = out.join(if args.expect_refusal.is_some() {
        "refusal-report.json"
    } else {
        "report.json"
    });
    fs::write(&json, serde_json::to_string_pretty(&reports)? + "\n")?;
    println!();
    print!("{}", report::table(&reports, &settings.suites));
    for r in &reports {
        for p in r.fell_back() {
            println!(
                "{}: {} fell back ({}): loses {}",
                r.kernel,
                p.name,
                p.error.as_deref().unwrap_or("no reason logged"),
                p.loses.as_deref().unwrap_or("unknown"),
            );
        }
        if r.monitor_exit != Some(0) {
            println!(
                "{}: the monitor exited with {:?}: {}",
                r.kernel,
                r.monitor_exit,
                r.monitor_log.join(" | ")
            );
        }
    }
    println!("report: {}", json.display());
    let failed: Vec<&str> = reports
        .iter()
        .filter(|r| !r.ok(&settings.suites))
        .map(|r| r.kernel.as_str())
        .collect();
    if !failed.is_empty() {
        bail!("failed on kernel {}", failed.join(", "));
    }
    Ok(())
}

/// Builds the `tests` crate's test binaries and returns those of `suites`.
fn test_binaries(suites: &[String]) -> Result<Vec<(String, PathBuf)>> {
    let mut cmd = cargo();
    cmd.args(["test", "-p", "tests", "--no-run", "--message-format=json"]);
    eprintln!("xtask: running {cmd:?}");
    let out = cmd
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("building the kernel tests")?;
    if !out.status.success() {
        bail!("building the kernel tests failed: {}", out.status);
    }
    let mut found = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let is_test = msg["target"]["kind"]
            .as_array()
            .is_some_and(|k| k.iter().any(|k| k == "test"));
        if msg["reason"] != "compiler-artifact" || !is_test {
            continue;
        }
        if let (Some(name), Some(exe)) =
            (msg["target"]["name"].as_str(), msg["executable"].as_str())
        {
            found.push((name.to_owned(), PathBuf::from(exe)));
        }
    }
    suites
        .iter()
        .map(|suite| {
            found
                .iter()
                .find(|(name, _)| name == suite)
                .cloned()
                .with_context(|| format!("no kernel test binary {suite} in the tests crate"))
        })
        .collect()
}

/// A directory name for a kernel spec (which may be a path).
fn dir_name(spec: &str) -> String {
    spec.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Prints what the console shows about a failed kernel: the failure
/// sections of failed suites, else the console's tail.
fn print_failures(report: &KernelReport, console: &std::path::Path) {
    let text = fs::read_to_string(console).unwrap_or_default();
    let mut printed = false;
    let mut section = Vec::new();
    let mut in_failures = false;
    for line in text.lines() {
        let line = line.trim_end_matches('\r');
        if line == "failures:" {
            in_failures = true;
        }
        if in_failures {
            section.push(line);
        }
        if line.starts_with("test result:") && in_failures {
            eprintln!("xtask vm: [{}] {}", report.kernel, section.join("\n"));
            section.clear();
            in_failures = false;
            printed = true;
        }
    }
    if !printed {
        let lines: Vec<&str> = text.lines().collect();
        let tail = &lines[lines.len().saturating_sub(40)..];
        eprintln!(
            "xtask vm: [{}] console tail:\n{}",
            report.kernel,
            tail.join("\n")
        );
    }
    eprintln!(
        "xtask vm: [{}] whole console: {}",
        report.kernel,
        console.display()
    );
}
