//! `cargo xtask lab`: real attacks and their benign look-alikes, played on a
//! gateway topology in network namespaces, against the real monitor.
//!
//! Each scenario (a TOML file under `tests/scenarios/`) gets its own
//! monitor, started in the root namespace with the lab's configuration;
//! the scenario's files are written, its services started and its steps run
//! in the hosts' namespaces; then its alerts are compared with what it
//! expects. Everything the scenario started is killed at its end, and the
//! namespaces are removed at the end of the run, on failure and on Ctrl-C.

mod monitor;
mod scenario;
mod score;
mod services;
mod topology;
mod vars;

use std::{
    collections::BTreeSet,
    fs::OpenOptions,
    io::Write as _,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::{Child, Stdio},
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};
use serde_json::{json, Value};

use self::{
    monitor::{LabMonitor, Received},
    scenario::{Allow, Expect, Scenario, Vars},
    score::{Hit, Outcome, ScenarioResult, Summary},
    services::SshKeys,
    topology::{Host, Topology},
    vars::Variant,
};

/// Placeholders scenarios may use as `${NAME}` (see the README).
pub const PLACEHOLDERS: &[&str] = &[
    "ATTACKER", "TARGET", "GW_WAN", "GW_LAN", "LAN", "WAN_IF", "LAN_IF", "GW_NETNS", "DIR", "LAB",
    "SSH",
];

#[derive(clap::Args, Debug, Clone, Default)]
pub struct Args {
    /// Run only these scenarios (file names without `.toml`; `NAME@mutated`
    /// for only the mutated run of one).
    #[arg(long = "scenario", value_name = "NAME")]
    pub scenarios: Vec<String>,
    /// Also run every attack scenario that has `[vars]` mutated (its ports
    /// moved, its programs copied under system-looking names elsewhere),
    /// reported as `NAME@mutated`.
    #[arg(long)]
    pub mutate: bool,
}

/// The whole lab's time limit (CI runs it after the kernel tests): the
/// scenarios not started within it fail as not run.
const BUDGET: Duration = Duration::from_secs(1800);

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Fails once SIGINT or SIGTERM arrived, so the lab unwinds and its guards
/// remove what it built.
pub fn check_interrupted() -> Result<()> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        bail!("interrupted");
    }
    Ok(())
}

/// Sleeps, waking early when interrupted.
fn sleep(d: Duration) -> Result<()> {
    let deadline = Instant::now() + d;
    while Instant::now() < deadline {
        check_interrupted()?;
        std::thread::sleep((deadline - Instant::now()).min(Duration::from_millis(50)));
    }
    Ok(())
}

/// Copies the files of directory `from` (not its subdirectories) into
/// `to`, made if needed; modes are kept.
fn copy_files(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from).with_context(|| format!("reading {}", from.display()))? {
        let path = entry?.path();
        if path.is_file() {
            let name = path.file_name().context("a file has a name")?;
            std::fs::copy(&path, to.join(name))
                .with_context(|| format!("copying {}", path.display()))?;
        }
    }
    Ok(())
}

/// The run's scratch directory under /tmp (world-readable, so php-fpm's
/// www-data workers and nginx's can read the web root), removed at the end.
struct RunDir(PathBuf);

impl Drop for RunDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// What every scenario of a run shares.
struct Lab {
    root: PathBuf,
    monitor: PathBuf,
    rules: BTreeSet<String>,
    dataplane: bool,
    topo: Topology,
    keys: SshKeys,
    run_dir: PathBuf,
    /// Where benign scenarios run (see `run`).
    system_dir: PathBuf,
    logs: PathBuf,
}

/// Runs the lab; fails when a scenario fails.
pub fn run(root: &Path, monitor: &Path, args: &Args) -> Result<()> {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        bail!("the lab needs root: it creates network namespaces and loads the monitor's eBPF programs");
    }
    let all = scenario::load_all(&root.join("tests/scenarios"))?;
    let runs = select(&all, &args.scenarios, args.mutate)?;
    // Copies a killed run's mutated scenarios left outside their directory.
    for s in &all {
        for dir in vars::hideouts(&s.name, &s.vars) {
            if dir.exists() {
                eprintln!("lab: removing {} left by an earlier run", dir.display());
                let _ = std::fs::remove_dir_all(&dir);
            }
        }
    }
    services::install_missing()?;
    let rules = monitor::rule_ids(monitor)?;
    let dataplane = monitor::has_config_section(monitor, "dataplane")?;
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only stores to an atomic.
        unsafe { libc::signal(sig, on_signal as *const () as libc::sighandler_t) };
    }
    // Processes a step leaves behind (a backgrounded `&` whose shell
    // exits) are re-parented here instead of to init, so their alerts
    // still name the lab in their ancestry.
    // SAFETY: prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };

    let run_dir = RunDir(std::env::temp_dir().join(format!("ewlab-{}", std::process::id())));
    std::fs::create_dir_all(&run_dir.0)?;
    std::fs::set_permissions(&run_dir.0, std::fs::Permissions::from_mode(0o755))?;
    // Benign scenarios keep their files where an operator's live (a cron
    // script, a health checker): root's, outside /tmp. A script of the
    // operator's running from /tmp would be suspect on a real gateway too.
    let system_dir = RunDir(PathBuf::from(format!(
        "/var/lib/ewlab-{}",
        std::process::id()
    )));
    std::fs::create_dir_all(&system_dir.0)?;
    std::fs::set_permissions(&system_dir.0, std::fs::Permissions::from_mode(0o755))?;
    // The lab's helper programs (${LAB}, and the scripts next to it) run
    // from there too, wherever the checkout is (a clone under /tmp would
    // make every benign scenario a program run from /tmp).
    for sub in ["lab", "scripts"] {
        copy_files(&root.join("tests").join(sub), &system_dir.0.join(sub))?;
    }
    let logs = root.join("target/lab/logs");
    let _ = std::fs::remove_dir_all(&logs);
    std::fs::create_dir_all(&logs)?;
    let keys = SshKeys::create(run_dir.0.join("ssh"))?;
    let topo = Topology::create()?;
    let lab = Lab {
        root: root.to_owned(),
        monitor: monitor.to_owned(),
        rules,
        dataplane,
        topo,
        keys,
        run_dir: run_dir.0.clone(),
        system_dir: system_dir.0.clone(),
        logs,
    };
    eprintln!(
        "lab: {} runs of {} scenarios{}; monitor {} with {} rules; logs in {}",
        runs.len(),
        runs.iter()
            .map(|(s, _)| &s.name)
            .collect::<BTreeSet<_>>()
            .len(),
        if args.mutate { ", mutated too" } else { "" },
        monitor.display(),
        lab.rules.len(),
        lab.logs.display()
    );
    let started = Instant::now();
    let mut results = Vec::new();
    for (i, (s, variant)) in runs.iter().enumerate() {
        let r = if started.elapsed() < BUDGET {
            lab.scenario(s, *variant)
        } else {
            ScenarioResult::not_run(
                s,
                *variant,
                format!("not run: the lab's {} s budget is spent", BUDGET.as_secs()),
            )
        };
        println!("{}", r.line(i + 1, runs.len()));
        results.push(r);
        if INTERRUPTED.load(Ordering::SeqCst) {
            break;
        }
    }
    let summary = Summary::of(&results);
    for l in summary.lines() {
        println!("{l}");
    }
    let json_path = root.join("target/lab/scorecard.json");
    score::write_json(
        &json_path,
        &results,
        json!({
            "kernel": kernel_release(),
            "rules": lab.rules.len(),
            "dataplane_config": lab.dataplane,
            "mutate": args.mutate,
            "duration_ms": u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        }),
    )?;
    let md_path = root.join("target/lab/scorecard.md");
    score::write_markdown(
        &md_path,
        &results,
        &format!(
            "Measured by `cargo xtask lab{}` on the development machine (Linux {}), {} rules, data-plane configuration {}, the lab in {} s",
            if args.mutate { " --mutate" } else { "" },
            kernel_release(),
            lab.rules.len(),
            if lab.dataplane { "on" } else { "off" },
            started.elapsed().as_secs()
        ),
    )?;
    println!(
        "lab: scorecard written to {} and {}",
        json_path.display(),
        md_path.display()
    );
    drop(lab);
    check_interrupted()?;
    if summary.failed() > 0 {
        bail!("{} of {} scenarios failed", summary.failed(), results.len());
    }
    Ok(())
}

/// The runs asked for, in file order: each scenario's variants (see
/// `Scenario::variants`), or only those `names` pick (`NAME` picks its
/// variants, `NAME@mutated` its mutated run alone).
fn select<'a>(
    all: &'a [Scenario],
    names: &[String],
    mutate: bool,
) -> Result<Vec<(&'a Scenario, Variant)>> {
    for n in names {
        let (base, variant) = match n.strip_suffix("@mutated") {
            Some(b) => (b, Variant::Mutated),
            None => (n.as_str(), Variant::Plain),
        };
        let Some(s) = all.iter().find(|s| s.name == base) else {
            bail!(
                "no scenario {n:?}; the scenarios are: {}",
                all.iter()
                    .map(|s| s.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        };
        if variant == Variant::Mutated && !s.variants(true).contains(&variant) {
            bail!("{n}: only attack scenarios with [vars] have a mutated run");
        }
    }
    let mut out = Vec::new();
    for s in all {
        let plain = names.is_empty() || names.contains(&s.name);
        let mutated = (mutate && plain) || names.contains(&Variant::Mutated.label(&s.name));
        for v in s.variants(true) {
            if (v == Variant::Plain && plain) || (v == Variant::Mutated && mutated) {
                out.push((s, v));
            }
        }
    }
    Ok(out)
}

fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

/// Whether an alert belongs to this lab run: its process descends from the
/// lab (every step and service does), or it names a socket (`netns`) or a
/// process (`namespaces.net`) in one of the lab's namespaces. Other
/// monitors' tests share the machine. An alert raised on a fork names no
/// ancestry, only the forked process's namespaces.
fn is_lab_event(v: &Value, lab_pid: u64, inodes: &[u64]) -> bool {
    fn names_netns(v: &Value, inodes: &[u64]) -> bool {
        let ours = |x: &Value| x.as_u64().is_some_and(|n| inodes.contains(&n));
        match v {
            Value::Object(m) => m.iter().any(|(k, x)| {
                (k == "netns" && ours(x))
                    || (k == "namespaces" && ours(&x["net"]))
                    || names_netns(x, inodes)
            }),
            Value::Array(a) => a.iter().any(|x| names_netns(x, inodes)),
            _ => false,
        }
    }
    let p = &v["process"];
    p["pid"] == lab_pid
        || p["ancestry"]
            .as_array()
            .is_some_and(|a| a.iter().any(|x| x["pid"] == lab_pid))
        || names_netns(v, inodes)
}

/// Whether an alert meets an expectation: its rule id, or one of its ATT&CK
/// techniques (a technique is met by its sub-techniques too).
fn meets(alert: &Value, expected: &str) -> bool {
    alert["rule"] == expected
        || alert["attack"].as_array().is_some_and(|a| {
            a.iter().filter_map(Value::as_str).any(|t| {
                t == expected
                    || t.strip_prefix(expected)
                        .is_some_and(|rest| rest.starts_with('.'))
            })
        })
}

/// Whether a line says a rule fired: an `alert`, or an `alert_update` (a
/// later, different match folded into an open alert carries its own
/// `rule`, `process` and `evidence`). A `repeat` line only closes a window.
fn fired(line: &Value) -> bool {
    (line["kind"] == "alert" || is_update(line)) && line["repeat"] != true
}

fn is_update(line: &Value) -> bool {
    line["kind"] == "alert_update"
}

/// Scores a run from its own lines (`ours`: the lab's alerts, updates and
/// relays): each expected rule or technique met by an alert or an update,
/// each of `expect_updates` by an update; for a look-alike, every alert
/// above what it `allow`s is a false positive, the allowed ones reported.
fn judge(
    s: &Scenario,
    variant: Variant,
    ours: &[&Received],
    attack_at: Instant,
    result: &mut ScenarioResult,
) {
    let alerts: Vec<&Received> = ours.iter().copied().filter(|r| fired(&r.alert)).collect();
    for a in &alerts {
        let rule = a.alert["rule"].as_str().unwrap_or("?").to_owned();
        if !result.alerts.contains(&rule) {
            result.alerts.push(rule);
        }
    }
    match &s.expect_in(variant) {
        Expect::Nothing => {
            let (allowed, denied): (Vec<&Received>, Vec<&Received>) =
                alerts.iter().partition(|a| {
                    s.allow.is_some_and(|allow: Allow| {
                        allow.allows(a.alert["severity"].as_str().unwrap_or(""))
                    })
                });
            result.allowed = allowed.iter().map(|a| describe(&a.alert)).collect();
            result.false_positives = denied.iter().map(|a| describe(&a.alert)).collect();
            result.outcome = if denied.is_empty() {
                Outcome::Quiet
            } else {
                Outcome::FalsePositive
            };
        }
        Expect::Alerts(want) => {
            let updates = s.updates_in(variant);
            let wanted = want.iter().map(|w| (w.clone(), w.clone(), false)).chain(
                updates
                    .iter()
                    .map(|w| (format!("update {w}"), w.clone(), true)),
            );
            for (label, w, update_only) in wanted {
                let hit = alerts
                    .iter()
                    .find(|a| (!update_only || is_update(&a.alert)) && meets(&a.alert, &w));
                match hit {
                    Some(a) => result.hits.push(Hit {
                        expected: label,
                        rule: a.alert["rule"].as_str().unwrap_or("?").to_owned(),
                        latency: a.at.saturating_duration_since(attack_at),
                    }),
                    None => result.missing.push(label),
                }
            }
            result.outcome = if result.missing.is_empty() {
                Outcome::Detected
            } else {
                Outcome::Missed
            };
        }
    }
}

/// One line naming what raised an alert of a look-alike: its rule, its
/// severity, an update's mark, and the process.
fn describe(alert: &Value) -> String {
    let argv: Vec<&str> = alert["process"]["argv"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let mut cmd = argv.join(" ");
    if cmd.len() > 80 {
        let mut cut = 80;
        while !cmd.is_char_boundary(cut) {
            cut -= 1;
        }
        cmd.truncate(cut);
        cmd.push_str("...");
    }
    format!(
        "{} {}{} by {} ({cmd})",
        alert["rule"].as_str().unwrap_or("?"),
        alert["severity"].as_str().unwrap_or("?"),
        if is_update(alert) { " update" } else { "" },
        alert["process"]["exe"].as_str().unwrap_or("?")
    )
}

impl Lab {
    /// The lab's placeholders for a scenario run in `workdir`.
    fn vars(&self, workdir: &Path) -> Vars {
        let path = |p: &Path| p.display().to_string();
        [
            ("ATTACKER", topology::ATTACKER.to_owned()),
            ("TARGET", topology::TARGET.to_owned()),
            ("GW_WAN", topology::GW_WAN.to_owned()),
            ("GW_LAN", topology::GW_LAN.to_owned()),
            ("LAN", topology::LAN.to_owned()),
            ("WAN_IF", topology::WAN_IF.to_owned()),
            ("LAN_IF", topology::LAN_IF.to_owned()),
            ("GW_NETNS", self.topo.netns(Host::Gateway)),
            ("DIR", path(workdir)),
            ("LAB", path(&self.system_dir.join("lab"))),
            ("SSH", self.keys.client()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }

    /// Runs a scenario. An attack missed while the monitor reported events
    /// the kernel dropped (someone else's flood filled its ring buffers:
    /// the probes are system wide) is run once more, and the line says so.
    fn scenario(&self, s: &Scenario, variant: Variant) -> ScenarioResult {
        let first = self.scenario_once(s, variant);
        if first.outcome != Outcome::Missed || !first.lost_events {
            return first;
        }
        let mut again = self.scenario_once(s, variant);
        again.note = Some(format!(
            "run twice: the first run missed {} while the monitor lost kernel events",
            first.missing.join(", ")
        ));
        again.duration += first.duration;
        again
    }

    fn scenario_once(&self, s: &Scenario, variant: Variant) -> ScenarioResult {
        let started = Instant::now();
        let mut result = ScenarioResult::not_run(s, variant, String::new());
        let absent: Vec<&str> = s
            .requires_rules
            .iter()
            .filter(|r| !self.rules.contains(*r))
            .map(String::as_str)
            .collect();
        if !absent.is_empty() {
            result.outcome = Outcome::Skipped(format!(
                "skipped: rule not in this build: {}",
                absent.join(", ")
            ));
            return result;
        }
        let label = variant.label(&s.name);
        let workdir = match s.expect_in(variant) {
            Expect::Nothing => self.system_dir.join(&label),
            Expect::Alerts(_) => self.run_dir.join(&label),
        };
        let mut children = Vec::new();
        let mut monitor = None;
        let mut resolved = None;
        let played = self.play(
            s,
            variant,
            &workdir,
            &mut resolved,
            &mut monitor,
            &mut children,
        );
        // Stop everything the scenario started, whatever happened.
        self.topo.kill_processes();
        for mut c in children {
            let _ = c.kill();
            let _ = c.wait();
        }
        if let Some(m) = &mut monitor {
            m.stop();
            result.lost_events = m.lost_events();
        }
        reap_orphans();
        if let Some(r) = &mut resolved {
            result.vars = r.values.clone();
            r.clean();
        }
        let reset = self.topo.reset_gateway();
        result.duration = started.elapsed();
        let played = played.and_then(|p| reset.map(|()| p));
        let (attack_at, events) = match played {
            Ok(x) => x,
            Err(e) => {
                result.outcome = Outcome::Error(format!("{e:#}"));
                return result;
            }
        };
        let lab_pid = u64::from(std::process::id());
        let ours: Vec<&Received> = events
            .iter()
            .filter(|r| is_lab_event(&r.alert, lab_pid, &self.topo.inodes))
            .collect();
        self.save_events(&label, &ours);
        judge(s, variant, &ours, attack_at, &mut result);
        result
    }

    /// Runs a scenario up to the end of its wait; returns when its attack
    /// step started and the monitor's events.
    fn play(
        &self,
        s: &Scenario,
        variant: Variant,
        workdir: &Path,
        resolved: &mut Option<vars::Resolved>,
        monitor: &mut Option<LabMonitor>,
        children: &mut Vec<Child>,
    ) -> Result<(Instant, Vec<Received>)> {
        let expect = s.expect_in(variant);
        let updates = s.updates_in(variant);
        let _ = std::fs::remove_dir_all(workdir);
        std::fs::create_dir_all(workdir)?;
        std::fs::set_permissions(workdir, std::fs::Permissions::from_mode(0o755))?;
        let mut vars = self.vars(workdir);
        let own = resolved.insert(vars::resolve(&s.name, &s.vars, variant, workdir)?);
        vars.extend(own.values.iter().map(|(k, v)| (k.clone(), v.clone())));
        // A choice's text may hold placeholders of its own.
        for d in &s.vars {
            if matches!(d.kind, vars::VarKind::Choice(_)) {
                let text = scenario::substitute(&vars[&d.name], &vars)?;
                vars.insert(d.name.clone(), text);
            }
        }
        let label = variant.label(&s.name);
        let mut config = scenario::substitute(&s.monitor, &vars)?;
        let own_dataplane = config.lines().any(|l| l.trim() == "[dataplane]");
        if self.dataplane && !own_dataplane {
            let template = std::fs::read_to_string(self.root.join("tests/lab/dataplane.toml"))?;
            config.push('\n');
            config.push_str(&scenario::substitute(&template, &vars)?);
        }
        let log_path = self.logs.join(format!("{label}.log"));
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)?;
        for (k, v) in &own.values {
            writeln!(log, "# {} run: ${{{k}}} = {v}", variant.word())?;
        }
        for f in &s.files {
            let path = PathBuf::from(scenario::substitute(&f.path, &vars)?);
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            std::fs::write(&path, scenario::substitute(&f.text, &vars)?)
                .with_context(|| format!("writing {}", path.display()))?;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(f.mode))?;
        }
        let attack_index = s.attack_step();
        let mut attack_at = Instant::now();
        let setup = s.setup_steps();
        for (i, step) in s.steps.iter().enumerate() {
            check_interrupted()?;
            if i == setup {
                *monitor = Some(LabMonitor::start(
                    &self.monitor,
                    &config,
                    workdir,
                    &self.logs.join(format!("{label}.monitor.log")),
                )?);
                for svc in &s.services {
                    children.extend(
                        services::start(
                            &self.topo,
                            svc,
                            workdir,
                            &self.logs.join(&label),
                            &self.root.join("tests/lab"),
                            &self.keys,
                        )
                        .with_context(|| {
                            format!("service {:?} on {}", svc.kind, svc.host.name())
                        })?,
                    );
                }
            }
            let run = scenario::substitute(&step.run, &vars)?;
            writeln!(
                log,
                "$ [{}{}] {run}",
                step.host.name(),
                if step.background { ", background" } else { "" }
            )?;
            if i == attack_index {
                attack_at = Instant::now();
            }
            let mut child = self
                .topo
                .command(step.host, "/bin/sh")
                .args(["-c", &run])
                .current_dir(workdir)
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log.try_clone()?)
                .spawn()
                .with_context(|| format!("step {}: starting it", i + 1))?;
            if step.background {
                children.push(child);
            } else {
                let status = wait_child(&mut child, Duration::from_secs_f64(step.timeout_secs))
                    .with_context(|| format!("step {} ({run})", i + 1))?;
                if !status.success() && !step.may_fail {
                    bail!(
                        "step {} failed ({status}): {run} (output in {})",
                        i + 1,
                        log_path.display()
                    );
                }
            }
            if let Some(w) = &step.wait_port {
                let port = w.port(&vars).with_context(|| format!("step {}", i + 1))?;
                self.topo
                    .wait_port(step.host, port, Duration::from_secs(15))
                    .with_context(|| format!("step {}", i + 1))?;
            }
            sleep(Duration::from_secs_f64(step.sleep_secs))?;
        }
        let m = monitor
            .as_mut()
            .context("no step ran with the monitor (parse checks one does)")?;
        // Wait for the expected alerts, or (benign) for the quiet period.
        let lab_pid = u64::from(std::process::id());
        let deadline = Instant::now() + Duration::from_secs_f64(s.wait_secs);
        while Instant::now() < deadline {
            if let Expect::Alerts(want) = &expect {
                let events = m.events();
                let met = |w: &String, update_only: bool| {
                    events.iter().any(|r| {
                        fired(&r.alert)
                            && (!update_only || is_update(&r.alert))
                            && is_lab_event(&r.alert, lab_pid, &self.topo.inodes)
                            && meets(&r.alert, w)
                    })
                };
                if want.iter().all(|w| met(w, false)) && updates.iter().all(|w| met(w, true)) {
                    break;
                }
            }
            if !m.running() {
                bail!(
                    "the monitor stopped during the scenario (log in {})",
                    self.logs.display()
                );
            }
            sleep(Duration::from_millis(50))?;
        }
        Ok((attack_at, m.events()))
    }

    /// Keeps the scenario's own alert and relay events for a look later.
    fn save_events(&self, name: &str, events: &[&Received]) {
        let text: String = events.iter().map(|r| format!("{}\n", r.alert)).collect();
        let _ = std::fs::write(self.logs.join(format!("{name}.events.jsonl")), text);
    }
}

/// Waits for a foreground step, killing it after `timeout` or on Ctrl-C.
fn wait_child(child: &mut Child, timeout: Duration) -> Result<std::process::ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        if Instant::now() > deadline || check_interrupted().is_err() {
            let _ = child.kill();
            let _ = child.wait();
            check_interrupted()?;
            bail!("did not finish within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Reaps processes re-parented to the lab (it is a child subreaper) that
/// have exited. Called once a scenario's own children are waited for.
fn reap_orphans() {
    loop {
        let mut status = 0;
        // SAFETY: waitpid with a valid status pointer.
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if pid <= 0 {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn techniques_meet_their_sub_techniques() {
        let a = json!({"rule": "EW-RELAY-001", "attack": ["T1090.001"]});
        assert!(meets(&a, "EW-RELAY-001"));
        assert!(meets(&a, "T1090"));
        assert!(meets(&a, "T1090.001"));
        assert!(!meets(&a, "T109"));
        assert!(!meets(&a, "T1090.002"));
    }

    #[test]
    fn updates_count_as_fired_and_meet_expect_updates() {
        let parse =
            |text: &str| scenario::parse(Path::new("tests/scenarios/u.toml"), text).expect("parse");
        let step = "[[step]]\nhost = \"gateway\"\nrun = \"true\"\n";
        let s = parse(&format!(
            "title = \"t\"\nexpect = [\"EW-PROC-001\", \"EW-PROC-003\"]\nexpect_updates = [\"EW-PROC-001\"]\n{step}"
        ));
        let t0 = Instant::now();
        let line = |kind: &str, rule: &str, ms: u64| Received {
            at: t0 + Duration::from_millis(ms),
            alert: json!({"kind": kind, "rule": rule, "severity": "high", "attack": []}),
        };
        let score = |lines: &[Received]| {
            let ours: Vec<&Received> = lines.iter().collect();
            let mut r = ScenarioResult::not_run(&s, Variant::Plain, String::new());
            judge(&s, Variant::Plain, &ours, t0, &mut r);
            r
        };
        // The alert alone does not meet the update expectation.
        let r = score(&[
            line("alert", "EW-PROC-001", 10),
            line("alert", "EW-PROC-003", 20),
        ]);
        assert_eq!(r.outcome, Outcome::Missed);
        assert_eq!(r.missing, ["update EW-PROC-001"]);
        // A repeat line is no update; an update is, and it is timed.
        let mut repeat = line("alert", "EW-PROC-001", 30);
        repeat.alert["repeat"] = json!(true);
        let r = score(&[
            line("alert", "EW-PROC-001", 10),
            repeat.clone(),
            line("alert", "EW-PROC-003", 20),
        ]);
        assert_eq!(r.missing, ["update EW-PROC-001"]);
        let r = score(&[
            line("alert", "EW-PROC-001", 10),
            line("alert_update", "EW-PROC-001", 40),
            line("alert", "EW-PROC-003", 20),
        ]);
        assert_eq!(r.outcome, Outcome::Detected, "{:?}", r.missing);
        let update = r.hits.iter().find(|h| h.expected == "update EW-PROC-001");
        assert_eq!(update.map(|h| h.latency), Some(Duration::from_millis(40)));
        // An update alone is evidence that its rule fired.
        let r = score(&[
            line("alert_update", "EW-PROC-001", 5),
            line("alert", "EW-PROC-003", 20),
        ]);
        assert_eq!(r.outcome, Outcome::Detected);
        assert_eq!(r.alerts, ["EW-PROC-001", "EW-PROC-003"]);
    }

    #[test]
    fn a_look_alike_allows_only_what_it_says() {
        let step = "[[step]]\nhost = \"gateway\"\nrun = \"true\"\n";
        let t0 = Instant::now();
        let line = |kind: &str, severity: &str| Received {
            at: t0,
            alert: json!({"kind": kind, "rule": "EW-CFG-002", "severity": severity,
                "process": {"exe": "/usr/sbin/nft", "argv": ["nft", "-f", "x"]}}),
        };
        for (allow, lines, outcome, allowed, fps) in [
            ("", vec![line("alert", "low")], Outcome::FalsePositive, 0, 1),
            (
                "allow = \"low\"\n",
                vec![line("alert", "low"), line("alert", "info")],
                Outcome::Quiet,
                2,
                0,
            ),
            (
                "allow = \"low\"\n",
                vec![line("alert", "low"), line("alert_update", "medium")],
                Outcome::FalsePositive,
                1,
                1,
            ),
            (
                "allow = \"info\"\n",
                vec![line("alert", "low")],
                Outcome::FalsePositive,
                0,
                1,
            ),
            ("allow = \"low\"\n", vec![], Outcome::Quiet, 0, 0),
        ] {
            let s = scenario::parse(
                Path::new("tests/scenarios/b.toml"),
                &format!("title = \"t\"\nexpect = \"none\"\n{allow}{step}"),
            )
            .expect("parse");
            let ours: Vec<&Received> = lines.iter().collect();
            let mut r = ScenarioResult::not_run(&s, Variant::Plain, String::new());
            judge(&s, Variant::Plain, &ours, t0, &mut r);
            assert_eq!(r.outcome, outcome, "{allow} {:?}", r.false_positives);
            assert_eq!(
                (r.allowed.len(), r.false_positives.len()),
                (allowed, fps),
                "{allow}"
            );
        }
        assert_eq!(
            describe(&line("alert_update", "medium").alert),
            "EW-CFG-002 medium update by /usr/sbin/nft (nft -f x)"
        );
    }

    #[test]
    fn lab_events_by_ancestry_or_namespace() {
        let by_ancestor = json!({"process": {"pid": 9, "ancestry": [{"pid": 5}, {"pid": 1}]}});
        assert!(is_lab_event(&by_ancestor, 5, &[]));
        assert!(!is_lab_event(&by_ancestor, 6, &[]));
        let by_netns = json!({"process": null, "evidence": [{"netns": 4026532000u64}]});
        assert!(is_lab_event(&by_netns, 6, &[4026532000]));
        assert!(!is_lab_event(&by_netns, 6, &[4026532001]));
        // An alert on a fork: no ancestry, the process's own namespaces.
        let by_process_netns = json!({"process": {"pid": 9, "ancestry": []},
            "evidence": [{"kind": "fork", "namespaces": {"net": 4026532000u64, "mnt": 4026532001u64}}]});
        assert!(is_lab_event(&by_process_netns, 6, &[4026532000]));
        assert!(!is_lab_event(&by_process_netns, 6, &[4026532001]));
    }

    #[test]
    fn selection_of_runs_and_variants() {
        let parse = |name: &str, text: &str| {
            scenario::parse(Path::new(&format!("tests/scenarios/{name}.toml")), text).expect(name)
        };
        let step = "[[step]]\nhost = \"gateway\"\nrun = \"echo ${P}\"\n";
        let all = [
            parse(
                "a-vars",
                &format!("title = \"t\"\nexpect = [\"T1090\"]\n[vars]\nP = {{ port = 1 }}\n{step}"),
            ),
            parse(
                "b-plain",
                "title = \"t\"\nexpect = [\"T1090\"]\n[[step]]\nhost = \"lan\"\nrun = \"true\"\n",
            ),
            parse(
                "c-benign",
                &format!("title = \"t\"\nexpect = \"none\"\n[vars]\nP = {{ port = 1 }}\n{step}"),
            ),
        ];
        let labels = |names: &[&str], mutate: bool| -> Vec<String> {
            let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
            select(&all, &names, mutate)
                .expect("select")
                .iter()
                .map(|(s, v)| v.label(&s.name))
                .collect()
        };
        assert_eq!(labels(&[], false), ["a-vars", "b-plain", "c-benign"]);
        assert_eq!(
            labels(&[], true),
            ["a-vars", "a-vars@mutated", "b-plain", "c-benign"]
        );
        assert_eq!(labels(&["a-vars"], false), ["a-vars"]);
        assert_eq!(
            labels(&["a-vars", "c-benign"], true),
            ["a-vars", "a-vars@mutated", "c-benign"]
        );
        assert_eq!(labels(&["a-vars@mutated"], false), ["a-vars@mutated"]);
        for (bad, want) in [
            ("nope", "no scenario \"nope\""),
            ("b-plain@mutated", "only attack scenarios with [vars]"),
        ] {
            let e = select(&all, &[bad.to_owned()], true).expect_err(bad);
            assert!(format!("{e:#}").contains(want), "{e:#}");
        }
    }

    #[test]
    fn every_scenario_file_parses() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let all = scenario::load_all(&root.join("tests/scenarios")).expect("scenarios");
        let attacks = all.iter().filter(|s| s.is_attack()).count();
        assert!(attacks >= 60, "{attacks} attack scenarios");
        assert!(all.len() - attacks >= 18, "{} benign", all.len() - attacks);
    }

    #[test]
    fn every_relay_attack_has_a_mutated_run_moving_a_port() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        for s in scenario::load_all(&root.join("tests/scenarios")).expect("scenarios") {
            let Expect::Alerts(want) = &s.expect else {
                continue;
            };
            if want.iter().any(|w| w.starts_with("EW-RELAY-")) {
                assert!(
                    s.vars
                        .iter()
                        .any(|v| matches!(v.kind, vars::VarKind::Port(_))),
                    "{}: a relay scenario without a port var",
                    s.name
                );
            }
        }
    }
}
