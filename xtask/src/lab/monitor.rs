//! The monitor under test: run in the root namespace (its probes are system
//! wide), its alerts read from standard output as they come, with the time
//! each arrived.

use std::{
    collections::BTreeSet,
    io::{BufRead as _, BufReader, Write as _},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};
use serde_json::Value;

/// The lab's configuration: quiet start (no seed events), alerts, their
/// updates (a later, different match of an open alert), relays and
/// shell-to-network links (kept in the logs, to see what a missed shell
/// looked like) on standard output, metrics on a free port.
const BASE_CONFIG: &str = "\
[output]
seed_events = false
kinds = [\"alert\", \"alert_update\", \"relay\", \"stdio_link\"]
[network]
seed_events = false
[metrics]
listen = \"127.0.0.1:0\"
";

/// An alert and when the lab read it.
#[derive(Clone)]
pub struct Received {
    pub at: Instant,
    pub alert: Value,
}

#[derive(Default)]
struct Shared {
    events: Vec<Received>,
    ready: bool,
    stderr_tail: Vec<String>,
    /// Lines in which the monitor said the kernel dropped events.
    loss_reports: usize,
}

pub struct LabMonitor {
    child: Child,
    shared: Arc<Mutex<Shared>>,
    config: PathBuf,
}

/// Rule ids of the built-in pack of this monitor build (`rules show`).
pub fn rule_ids(monitor: &Path) -> Result<BTreeSet<String>> {
    let out = Command::new(monitor)
        .args(["rules", "show"])
        .output()
        .with_context(|| format!("running {} rules show", monitor.display()))?;
    if !out.status.success() {
        bail!(
            "monitor rules show failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let v = l
                .trim()
                .strip_prefix("id")?
                .trim_start()
                .strip_prefix('=')?;
            Some(v.trim().trim_matches('"').to_owned())
        })
        .collect())
}

/// Whether this monitor build has a configuration section (`config default`).
pub fn has_config_section(monitor: &Path, section: &str) -> Result<bool> {
    let out = Command::new(monitor)
        .args(["config", "default"])
        .output()
        .with_context(|| format!("running {} config default", monitor.display()))?;
    let header = format!("[{section}]");
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .any(|l| l.trim_start_matches('#').trim() == header))
}

impl LabMonitor {
    /// Starts the monitor with the lab's configuration plus `extra`, and
    /// waits until it is ready. Its standard error goes to `log`.
    pub fn start(monitor: &Path, extra: &str, workdir: &Path, log: &Path) -> Result<Self> {
        let config = workdir.join("monitor.toml");
        std::fs::write(&config, format!("{BASE_CONFIG}{extra}"))
            .with_context(|| format!("writing {}", config.display()))?;
        let mut child = Command::new(monitor)
            .args(["run", "--config"])
            .arg(&config)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {}", monitor.display()))?;
        let shared: Arc<Mutex<Shared>> = Arc::default();
        let stdout = child.stdout.take().context("monitor stdout")?;
        let s = shared.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let at = Instant::now();
                let Ok(v) = serde_json::from_str::<Value>(&line) else {
                    eprintln!("lab: the monitor wrote a line that is not JSON: {line}");
                    continue;
                };
                lock(&s).events.push(Received { at, alert: v });
            }
        });
        let stderr = child.stderr.take().context("monitor stderr")?;
        let mut log_file =
            std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let s = shared.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let _ = writeln!(log_file, "{line}");
                let mut g = lock(&s);
                if line.contains("monitor ready") {
                    g.ready = true;
                }
                if line.contains("events lost in the kernel") {
                    g.loss_reports += 1;
                }
                g.stderr_tail.push(line);
                if g.stderr_tail.len() > 20 {
                    g.stderr_tail.remove(0);
                }
            }
        });
        let mut m = LabMonitor {
            child,
            shared,
            config,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !lock(&m.shared).ready {
            if let Some(status) = m.child.try_wait()? {
                bail!(
                    "the monitor exited before it was ready ({status}): {}",
                    lock(&m.shared).stderr_tail.join(" | ")
                );
            }
            if Instant::now() > deadline {
                bail!("the monitor was not ready within 30 s");
            }
            if let Err(e) = super::check_interrupted() {
                m.stop();
                return Err(e);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(m)
    }

    /// The alert and relay events read so far.
    pub fn events(&self) -> Vec<Received> {
        lock(&self.shared).events.clone()
    }

    /// Whether the monitor reported events the kernel dropped (its ring
    /// buffers were full: a flood somewhere on the machine, since its
    /// probes are system wide).
    pub fn lost_events(&self) -> bool {
        lock(&self.shared).loss_reports > 0
    }

    /// Whether the monitor is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Stops the monitor (SIGTERM, then SIGKILL after 10 s).
    pub fn stop(&mut self) {
        if self.running() {
            // SAFETY: signalling our own child.
            unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(10);
            while self.running() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

impl Drop for LabMonitor {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_file(&self.config);
    }
}

fn lock(s: &Mutex<Shared>) -> std::sync::MutexGuard<'_, Shared> {
    s.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
