//! `cargo xtask bench`: what the monitor costs, as ratios against the same
//! workload without it, measured in one run over alternating rounds (the
//! median is reported), and the daemon's own limits: drain rate with exact
//! loss accounting, memory and CPU with 10,000 processes and 10,000 flows,
//! eBPF run time per event, scrape latency. Prints a table and writes
//! `target/bench/bench.json`. Budgets are goals the table reports against,
//! never pass/fail conditions.

mod elf;
mod monitor;
mod workload;

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};

use self::{
    monitor::{ProgramStat, Running},
    workload::Topology,
};

/// Options of `cargo xtask bench`.
#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    /// Alternating rounds (without, then with the monitor, order swapped
    /// every round).
    #[arg(long, default_value_t = 5)]
    pub rounds: usize,
    /// Seconds each workload runs per round.
    #[arg(long, default_value_t = 3.0)]
    pub secs: f64,
    /// Tracked processes and open connections of the footprint test.
    #[arg(long, default_value_t = 10_000)]
    pub population: usize,
}

/// Base configuration: events to /dev/null (stdout), metrics on any port.
const BASE: &str = "[metrics]\nlisten = \"127.0.0.1:0\"\n";

struct Ratio {
    name: &'static str,
    unit: &'static str,
    without: Vec<f64>,
    with: Vec<f64>,
    /// Lowest acceptable with/without ratio.
    budget: f64,
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    match s.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => s[n / 2],
        n => (s[n / 2 - 1] + s[n / 2]) / 2.0,
    }
}

impl Ratio {
    fn ratios(&self) -> Vec<f64> {
        self.with
            .iter()
            .zip(&self.without)
            .map(|(w, b)| w / b)
            .collect()
    }
}

pub fn run(root: &Path, opts: &Options) -> Result<()> {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        bail!("the benchmark loads eBPF programs and makes network namespaces: run it as root");
    }
    let bin = root.join("target/release/monitor");
    let scratch = std::env::temp_dir().join(format!("edgewatch-bench-{}", std::process::id()));
    std::fs::create_dir_all(&scratch)?;
    let (true_prog, pause_prog) = elf::write_programs(&scratch)?;
    let stats_before = std::fs::read_to_string("/proc/sys/kernel/bpf_stats_enabled").ok();
    std::fs::write("/proc/sys/kernel/bpf_stats_enabled", "1")
        .context("enabling BPF run-time statistics")?;
    let result = (|| {
        let topo = Topology::new()?;
        let config = format!("{BASE}{}", topo.dataplane_config());
        let (ratios, programs) = rounds(&bin, &config, &true_prog, &topo, opts)?;
        drop(topo);
        let exec_cost = exec_cost(&bin, &config, &true_prog, opts)?;
        let drain = drain(&bin)?;
        let footprint = footprint(&bin, &pause_prog, opts.population)?;
        report(
            root, opts, &ratios, &programs, &exec_cost, &drain, &footprint,
        )
    })();
    if let Some(v) = stats_before {
        let _ = std::fs::write("/proc/sys/kernel/bpf_stats_enabled", v.trim());
    }
    let _ = std::fs::remove_dir_all(&scratch);
    result
}

/// The paired workloads; returns them and the eBPF run times of the last
/// monitored round.
fn rounds(
    bin: &Path,
    config: &str,
    true_prog: &Path,
    topo: &Topology,
    opts: &Options,
) -> Result<(Vec<Ratio>, Vec<ProgramStat>)> {
    let mut ratios = vec![
        Ratio {
            name: "exec storm",
            unit: "execs/s",
            without: vec![],
            with: vec![],
            budget: 0.97,
        },
        Ratio {
            name: "connect storm",
            unit: "conns/s",
            without: vec![],
            with: vec![],
            budget: 0.95,
        },
        Ratio {
            name: "veth TCP throughput",
            unit: "Gbit/s",
            without: vec![],
            with: vec![],
            budget: 0.97,
        },
        Ratio {
            name: "veth UDP packets",
            unit: "kpps",
            without: vec![],
            with: vec![],
            budget: 0.0,
        },
    ];
    let secs = opts.secs;
    let measure = |r: &mut [Ratio], with: bool| -> Result<()> {
        let values = [
            workload::exec_storm(true_prog, secs)?,
            workload::connect_storm(secs)?,
            topo.tcp(secs)? / 1e9,
            topo.udp(secs)? / 1e3,
        ];
        for (ratio, v) in r.iter_mut().zip(values) {
            if with {
                ratio.with.push(v);
            } else {
                ratio.without.push(v);
            }
        }
        Ok(())
    };
    let mut programs = Vec::new();
    for round in 0..opts.rounds {
        let monitor_first = round % 2 == 1;
        for with in [monitor_first, !monitor_first] {
            if with {
                let m = Running::start(bin, config, None, false)?;
                // Let start-up work (seeding, first sweeps) settle.
                std::thread::sleep(Duration::from_secs(2));
                measure(&mut ratios, true)?;
                programs = m.program_stats()?;
                m.stop()?;
            } else {
                measure(&mut ratios, false)?;
            }
        }
        eprintln!("xtask bench: round {}/{} done", round + 1, opts.rounds);
    }
    Ok((ratios, programs))
}

/// The daemon's CPU per exec of the exec storm (its fork, exec and exit
/// records, through every stage): with the default output, and with the
/// output limited to alerts. Microseconds, one figure per round.
struct ExecCost {
    default_output: Vec<f64>,
    alerts_only: Vec<f64>,
}

/// Measures [`ExecCost`]: for each output, the monitor's CPU over an exec
/// storm, less what it spends idle over as long, per exec.
fn exec_cost(bin: &Path, config: &str, program: &Path, opts: &Options) -> Result<ExecCost> {
    let alerts_only = format!("{config}\n[output]\nkinds = [\"alert\"]\n");
    let mut cost = ExecCost {
        default_output: Vec::new(),
        alerts_only: Vec::new(),
    };
    for round in 0..opts.rounds.min(3) {
        for (cfg, into) in [
            (config, &mut cost.default_output),
            (alerts_only.as_str(), &mut cost.alerts_only),
        ] {
            let m = Running::start(bin, cfg, None, false)?;
            std::thread::sleep(Duration::from_secs(2));
            let idle_start = m.cpu_ns()?;
            std::thread::sleep(Duration::from_secs(1));
            let idle_per_s = m.cpu_ns()?.saturating_sub(idle_start) as f64;
            let before = m.cpu_ns()?;
            let (n, secs) = workload::exec_count(program, opts.secs)?;
            // Let the daemon finish the storm's last records.
            std::thread::sleep(Duration::from_millis(500));
            let busy = m.cpu_ns()?.saturating_sub(before) as f64 - idle_per_s * (secs + 0.5);
            m.stop()?;
            into.push(busy.max(0.0) / n.max(1) as f64 / 1e3);
        }
        eprintln!("xtask bench: exec cost round {} done", round + 1);
    }
    Ok(cost)
}

struct DrainStep {
    target_rate: f64,
    produced: u64,
    delivered: u64,
    lost: u64,
    seconds: f64,
}

/// Offers the daemon, pinned to CPU 0, synthetic records at rising rates
/// from CPU 1; every record must be delivered or counted lost.
fn drain(bin: &Path) -> Result<Vec<DrainStep>> {
    let config = format!(
        "{BASE}[output]\nstdout = false\nseed_events = false\n[network]\nseed_events = false\n[dataplane]\nenabled = false\n"
    );
    let m = Running::start(bin, &config, Some("0"), true)?;
    pin_to_cpu(1);
    let drained = || m.metric("edgewatch_bench_events_drained_total");
    let lost = || m.metric("edgewatch_kernel_events_lost_total{kind=\"bench\"}");
    let mut steps = Vec::new();
    for rate in [250e3, 500e3, 1e6, 2e6, 4e6, 8e6] {
        let (d0, l0) = (drained()?, lost()?);
        let (produced, seconds) = produce(rate, 2.0);
        // Wait until the daemon has drained what is queued.
        let mut last = drained()?;
        loop {
            std::thread::sleep(Duration::from_millis(300));
            let now = drained()?;
            if now == last {
                break;
            }
            last = now;
        }
        steps.push(DrainStep {
            target_rate: rate,
            produced,
            delivered: (last - d0) as u64,
            lost: (lost()? - l0) as u64,
            seconds,
        });
        eprintln!("xtask bench: drain step {rate} records/s done");
    }
    unpin();
    m.stop()?;
    Ok(steps)
}

/// Asks the producer for `rate` records per second for `secs`, in bursts
/// of 256 paced per millisecond; returns (records asked, seconds taken).
fn produce(rate: f64, secs: f64) -> (u64, f64) {
    const BURST: u64 = 256;
    let start = Instant::now();
    let mut produced = 0u64;
    while start.elapsed().as_secs_f64() < secs {
        let due = (start.elapsed().as_secs_f64() * rate) as u64;
        while produced + BURST <= due {
            // SAFETY: a plain syscall; the magic policy is answered by the
            // producer and rejected by the kernel with EINVAL.
            unsafe {
                libc::syscall(
                    libc::SYS_sched_get_priority_max,
                    (0x4557_0000u64 | BURST) as libc::c_long,
                )
            };
            produced += BURST;
        }
        std::hint::spin_loop();
    }
    (produced, start.elapsed().as_secs_f64())
}

fn pin_to_cpu(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is valid; the calls act on this thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set);
    }
}

fn unpin() {
    // SAFETY: as above.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for cpu in 0..libc::CPU_SETSIZE as usize {
            libc::CPU_SET(cpu, &mut set);
        }
        libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set);
    }
}

struct Footprint {
    processes: f64,
    flows: f64,
    rss_kib: u64,
    hwm_kib: u64,
    cpu_percent: f64,
    scrape_ms: f64,
}

/// Memory, idle CPU and scrape latency with `n` extra processes and `n`
/// open TCP connections on loopback.
fn footprint(bin: &Path, pause_prog: &Path, n: usize) -> Result<Footprint> {
    // The accepting ends live in another process: each side holds n fds,
    // within the usual 20,000-file limit.
    raise_fd_limit(n as u64 + 1024)?;
    let config = format!("{BASE}[output]\nseed_events = false\n[network]\nseed_events = false\n");
    let m = Running::start(bin, &config, None, false)?;
    let mut children = Vec::with_capacity(n);
    for _ in 0..n {
        children.push(std::process::Command::new(pause_prog).spawn()?);
    }
    let mut acceptor = std::process::Command::new("/usr/bin/python3")
        .args(["-c", ACCEPTOR, &n.to_string()])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("python3 acceptor")?;
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(
        acceptor.stdout.take().expect("piped"),
    ));
    let port: u16 = lines.next().context("acceptor port")??.trim().parse()?;
    let mut conns = Vec::with_capacity(n);
    for _ in 0..n {
        conns.push(std::net::TcpStream::connect(("127.0.0.1", port))?);
    }
    let accepted = lines.next().context("acceptor count")??;
    if accepted.trim() != n.to_string() {
        bail!("the acceptor took {accepted} connections, not {n}");
    }
    // Two flow sweeps and the table updates.
    std::thread::sleep(Duration::from_secs(12));
    let processes = m.metric("edgewatch_process_table_entries")?;
    let flows = m.metric("edgewatch_net_flow_table_entries")?;
    let ticks0 = m.cpu_ticks()?;
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs(10));
    let ticks = m.cpu_ticks()? - ticks0;
    // SAFETY: sysconf cannot fail for _SC_CLK_TCK.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let cpu_percent = ticks as f64 / hz / t0.elapsed().as_secs_f64() * 100.0;
    let mut scrapes = Vec::new();
    for _ in 0..50 {
        let t = Instant::now();
        m.scrape()?;
        scrapes.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    let fp = Footprint {
        processes,
        flows,
        rss_kib: m.status_kib("VmRSS")?,
        hwm_kib: m.status_kib("VmHWM")?,
        cpu_percent,
        scrape_ms: median(&scrapes),
    };
    drop(conns);
    drop(acceptor.stdin.take());
    let _ = acceptor.wait();
    for mut c in children {
        let _ = c.kill();
        let _ = c.wait();
    }
    m.stop()?;
    Ok(fp)
}

/// Accepts argv[1] connections on a free loopback port (printed first),
/// prints how many, and holds them until stdin closes.
const ACCEPTOR: &str = r#"
import resource, socket, sys
n = int(sys.argv[1])
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen(4096)
print(s.getsockname()[1], flush=True)
held = [s.accept()[0] for _ in range(n)]
print(len(held), flush=True)
sys.stdin.read()
"#;

/// Raises the soft open-file limit to `want`, within the hard limit.
fn raise_fd_limit(want: u64) -> Result<()> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: a valid rlimit to fill.
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
    if lim.rlim_max < want {
        bail!(
            "the open-file hard limit is {}, the footprint test needs {want}: lower --population",
            lim.rlim_max
        );
    }
    lim.rlim_cur = want;
    // SAFETY: a valid rlimit.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
        bail!("cannot raise the open-file limit to {want}");
    }
    Ok(())
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines().find_map(|l| {
                l.strip_prefix("model name")
                    .map(|r| r.trim_start_matches([' ', '\t', ':']).to_owned())
            })
        })
        .unwrap_or_else(|| "unknown CPU".to_owned());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!("{cpu}, {cores} cores, Linux {}", kernel.trim())
}

/// Packet-path programs, whose run time per packet has a budget.
const PACKET_PROGRAMS: [&str; 3] = ["net_skb_ingress", "net_skb_egress", "forward_tc_egres"];

fn report(
    root: &Path,
    opts: &Options,
    ratios: &[Ratio],
    programs: &[ProgramStat],
    exec_cost: &ExecCost,
    drain: &[DrainStep],
    fp: &Footprint,
) -> Result<()> {
    let mut t = String::new();
    let mut json = String::from("{\n");
    let machine = machine();
    writeln!(
        t,
        "edgewatch benchmark: {machine}; {} rounds of {} s, medians",
        opts.rounds, opts.secs
    )?;
    writeln!(t, "| workload | without | with | ratio | budget | |")?;
    writeln!(t, "|---|---|---|---|---|---|")?;
    let _ = writeln!(
        json,
        "  \"machine\": {:?},\n  \"rounds\": {},\n  \"secs\": {},\n  \"workloads\": [",
        machine, opts.rounds, opts.secs
    );
    for (i, r) in ratios.iter().enumerate() {
        let ratio = median(&r.ratios());
        let met = ratio >= r.budget;
        let budget = if r.budget > 0.0 {
            format!(">= {:.2}", r.budget)
        } else {
            "-".to_owned()
        };
        writeln!(
            t,
            "| {} ({}) | {:.2} | {:.2} | {:.3} | {} | {} |",
            r.name,
            r.unit,
            median(&r.without),
            median(&r.with),
            ratio,
            budget,
            if r.budget == 0.0 {
                ""
            } else if met {
                "met"
            } else {
                "MISSED"
            }
        )?;
        let _ = writeln!(
            json,
            "    {{\"name\": {:?}, \"unit\": {:?}, \"without\": {:?}, \"with\": {:?}, \"median_ratio\": {ratio:.4}, \"budget\": {}, \"met\": {met}}}{}",
            r.name, r.unit, r.without, r.with, r.budget,
            if i + 1 < ratios.len() { "," } else { "" }
        );
    }
    json.push_str("  ],\n");

    writeln!(t, "\n| drain step (records/s offered) | produced | delivered | lost | delivered/s | accounted |")?;
    writeln!(t, "|---|---|---|---|---|---|")?;
    json.push_str("  \"drain\": [\n");
    let mut best = 0.0f64;
    let mut exact = true;
    for (i, s) in drain.iter().enumerate() {
        let accounted = s.produced == s.delivered + s.lost;
        exact &= accounted;
        let rate = s.delivered as f64 / s.seconds;
        if s.lost == 0 && accounted {
            best = best.max(rate);
        }
        writeln!(
            t,
            "| {:.0} | {} | {} | {} | {:.0} | {} |",
            s.target_rate,
            s.produced,
            s.delivered,
            s.lost,
            rate,
            if accounted { "exact" } else { "MISMATCH" }
        )?;
        let _ = writeln!(json, "    {{\"offered\": {}, \"produced\": {}, \"delivered\": {}, \"lost\": {}, \"seconds\": {:.3}, \"exact\": {accounted}}}{}", s.target_rate, s.produced, s.delivered, s.lost, s.seconds, if i + 1 < drain.len() { "," } else { "" });
    }
    json.push_str("  ],\n");
    let _ = writeln!(
        json,
        "  \"drain_lossless_per_sec\": {best:.0},\n  \"drain_accounting_exact\": {exact},"
    );

    writeln!(t, "\n| program | runs | ns per run |")?;
    writeln!(t, "|---|---|---|")?;
    json.push_str("  \"programs\": [\n");
    let mut worst_packet_ns = 0.0f64;
    let mut sorted: Vec<_> = programs.iter().filter(|p| p.runs > 0).collect();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    for (i, p) in sorted.iter().enumerate() {
        let (name, runs) = (&p.name, p.runs);
        let per = p.run_ns as f64 / runs as f64;
        if PACKET_PROGRAMS.iter().any(|p| name.starts_with(p)) {
            worst_packet_ns = worst_packet_ns.max(per);
        }
        writeln!(t, "| {name} | {runs} | {per:.0} |")?;
        let _ = writeln!(
            json,
            "    {{\"name\": {name:?}, \"runs\": {runs}, \"ns_per_run\": {per:.1}}}{}",
            if i + 1 < sorted.len() { "," } else { "" }
        );
    }
    json.push_str("  ],\n");

    let mib = |k: u64| k as f64 / 1024.0;
    let budgets = [
        (
            "packet-path program time per packet",
            format!("{worst_packet_ns:.0} ns"),
            "<= 50 ns",
            worst_packet_ns <= 50.0,
        ),
        (
            "events drained without loss, daemon on one core",
            format!("{best:.0}/s"),
            ">= 1000000/s",
            best >= 1e6,
        ),
        (
            "drain accounting (produced = delivered + lost)",
            (if exact { "exact" } else { "MISMATCH" }).to_owned(),
            "exact",
            exact,
        ),
        (
            "peak RSS with the population tracked",
            format!(
                "{:.1} MiB ({} processes, {} flows in the tables)",
                mib(fp.hwm_kib),
                fp.processes,
                fp.flows
            ),
            "<= 64 MiB",
            mib(fp.hwm_kib) <= 64.0,
        ),
        (
            "daemon CPU per exec (fork, exec, exit), default output",
            format!("{:.2} µs", median(&exec_cost.default_output)),
            "<= 3 µs",
            median(&exec_cost.default_output) <= 3.0,
        ),
        (
            "daemon CPU per exec, output limited to alerts",
            format!("{:.2} µs", median(&exec_cost.alerts_only)),
            "<= 1 µs",
            median(&exec_cost.alerts_only) <= 1.0,
        ),
        (
            "daemon CPU, otherwise idle, with the population",
            format!("{:.2}% of a core", fp.cpu_percent),
            "<= 1%",
            fp.cpu_percent <= 1.0,
        ),
        (
            "/metrics scrape, median of 50",
            format!("{:.2} ms", fp.scrape_ms),
            "<= 20 ms",
            fp.scrape_ms <= 20.0,
        ),
    ];
    writeln!(t, "\n| figure | measured | budget | |")?;
    writeln!(t, "|---|---|---|---|")?;
    json.push_str("  \"budgets\": [\n");
    for (i, (what, got, budget, met)) in budgets.iter().enumerate() {
        writeln!(
            t,
            "| {what} | {got} | {budget} | {} |",
            if *met { "met" } else { "MISSED" }
        )?;
        let _ = writeln!(json, "    {{\"figure\": {what:?}, \"measured\": {got:?}, \"budget\": {budget:?}, \"met\": {met}}}{}", if i + 1 < budgets.len() { "," } else { "" });
    }
    json.push_str("  ],\n");
    let _ = writeln!(
        json,
        "  \"rss_kib\": {}, \"hwm_kib\": {}, \"cpu_percent\": {:.3}, \"scrape_ms\": {:.3}\n}}",
        fp.rss_kib, fp.hwm_kib, fp.cpu_percent, fp.scrape_ms
    );

    print!("{t}");
    let dir: PathBuf = root.join("target/bench");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("bench.json"), json)?;
    std::fs::write(dir.join("bench.md"), t)?;
    eprintln!("xtask bench: wrote {}", dir.join("bench.json").display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(&[]).is_nan());
    }
}
