//! The monitor under test: started from the release build with a bench
//! configuration, its metrics scraped, its memory, CPU and eBPF program
//! run times read from /proc and bpftool.

use std::{
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::TcpStream,
    path::Path,
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail, Context as _, Result};

/// One eBPF program's run-time statistics (`kernel.bpf_stats_enabled`).
pub struct ProgramStat {
    pub name: String,
    pub runs: u64,
    /// Total run time.
    pub run_ns: u64,
}

pub struct Running {
    child: Child,
    pub pid: u32,
    pub metrics_addr: String,
    _config: tempfile::Guard,
}

/// A temporary file removed when dropped.
pub mod tempfile {
    pub struct Guard(pub std::path::PathBuf);
    impl Drop for Guard {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
}

impl Running {
    /// Starts `bin` with `config` (TOML), optionally pinned to `cpus` and
    /// with the benchmark producer, and waits for "monitor ready".
    pub fn start(bin: &Path, config: &str, cpus: Option<&str>, producer: bool) -> Result<Self> {
        let path = std::env::temp_dir().join(format!(
            "edgewatch-bench-{}-{}.toml",
            std::process::id(),
            Instant::now().elapsed().as_nanos()
        ));
        std::fs::write(&path, config)?;
        let guard = tempfile::Guard(path.clone());
        let mut cmd = match cpus {
            Some(c) => {
                let mut t = Command::new("taskset");
                t.args(["-c", c]).arg(bin);
                t
            }
            None => Command::new(bin),
        };
        cmd.args(["run", "--config"])
            .arg(&path)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if producer {
            cmd.env("EDGEWATCH_BENCH_PRODUCER", "1");
        }
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let stderr = child.stderr.take().expect("piped stderr");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(addr) = line
                    .split_whitespace()
                    .find_map(|f| f.strip_prefix("metrics="))
                {
                    let _ = tx.send(Ok(addr.to_owned()));
                } else if line.contains("monitor: error") {
                    let _ = tx.send(Err(line));
                }
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(60))
            .map_err(|_| anyhow!("monitor not ready within 60 s"))?
            .map_err(|e| anyhow!("monitor failed: {e}"))?;
        Ok(Self {
            pid: child.id(),
            child,
            metrics_addr: addr,
            _config: guard,
        })
    }

    /// The body of one `/metrics` scrape.
    pub fn scrape(&self) -> Result<String> {
        let mut s = TcpStream::connect(&self.metrics_addr)?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        write!(
            s,
            "GET /metrics HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n"
        )?;
        let mut body = String::new();
        s.read_to_string(&mut body)?;
        Ok(body)
    }

    /// One series, such as `edgewatch_bench_events_drained_total`.
    pub fn metric(&self, series: &str) -> Result<f64> {
        let body = self.scrape()?;
        body.lines()
            .find_map(|l| {
                l.strip_prefix(series)
                    .and_then(|rest| rest.strip_prefix(' '))
                    .and_then(|v| v.trim().parse().ok())
            })
            .ok_or_else(|| anyhow!("series {series} not in the scrape"))
    }

    /// A `kB` field of /proc/PID/status, such as `VmRSS` or `VmHWM`.
    pub fn status_kib(&self, field: &str) -> Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid))?;
        status
            .lines()
            .find_map(|l| {
                l.strip_prefix(field)
                    .and_then(|r| r.strip_prefix(':'))
                    .and_then(|r| r.split_whitespace().next())
                    .and_then(|v| v.parse().ok())
            })
            .ok_or_else(|| anyhow!("no {field} in /proc/{}/status", self.pid))
    }

    /// User plus system CPU time, in clock ticks, of the whole process.
    pub fn cpu_ticks(&self) -> Result<u64> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid))?;
        // Fields after the command name, which may contain spaces.
        let rest = stat
            .rsplit_once(')')
            .map(|(_, r)| r)
            .ok_or_else(|| anyhow!("bad /proc stat"))?;
        let f: Vec<&str> = rest.split_whitespace().collect();
        // utime and stime are fields 14 and 15; `rest` starts at field 3.
        Ok(f[11].parse::<u64>()? + f[12].parse::<u64>()?)
    }

    /// CPU time of every live thread, in nanoseconds, from each thread's
    /// `schedstat` (precise where `stat`'s clock ticks are 10 ms).
    pub fn cpu_ns(&self) -> Result<u64> {
        let mut total = 0;
        for entry in std::fs::read_dir(format!("/proc/{}/task", self.pid))? {
            let Ok(s) = std::fs::read_to_string(entry?.path().join("schedstat")) else {
                continue;
            };
            total += s
                .split_whitespace()
                .next()
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0);
        }
        Ok(total)
    }

    /// Run-time statistics of every eBPF program this monitor holds, from
    /// its fds and bpftool.
    pub fn program_stats(&self) -> Result<Vec<ProgramStat>> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(format!("/proc/{}/fdinfo", self.pid))? {
            let Ok(info) = std::fs::read_to_string(entry?.path()) else {
                continue;
            };
            let field = |name: &str| {
                info.lines().find_map(|l| {
                    l.strip_prefix(name)
                        .and_then(|r| r.trim().parse::<u64>().ok())
                })
            };
            let (Some(id), Some(ns), Some(cnt)) =
                (field("prog_id:"), field("run_time_ns:"), field("run_cnt:"))
            else {
                continue;
            };
            let show = Command::new("bpftool")
                .args(["prog", "show", "id", &id.to_string(), "--json"])
                .output()
                .context("bpftool (apt-get install bpftool)")?;
            let name = String::from_utf8_lossy(&show.stdout)
                .split("\"name\":\"")
                .nth(1)
                .and_then(|r| r.split('"').next())
                .unwrap_or("?")
                .to_owned();
            if !out.iter().any(|p: &ProgramStat| p.name == name) {
                out.push(ProgramStat {
                    name,
                    runs: cnt,
                    run_ns: ns,
                });
            }
        }
        Ok(out)
    }

    /// SIGTERM, then wait; fails if it does not exit cleanly in 30 s.
    pub fn stop(mut self) -> Result<()> {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.pid as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait()? {
                if !status.success() {
                    bail!("monitor exited with {status}");
                }
                return Ok(());
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                bail!("monitor did not stop within 30 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
