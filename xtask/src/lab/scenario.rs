//! Scenario files: one TOML file per scenario under `tests/scenarios/`,
//! read and checked here so a bad file fails in one line that names it.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

use anyhow::{bail, Context as _, Result};
use serde::Deserialize;

use super::{
    topology::Host,
    vars::{self, RawVar, VarDef, VarKind, Variant},
};

/// What a scenario must produce.
#[derive(Debug, Clone)]
pub enum Expect {
    /// Every listed rule id (`EW-PROC-001`) or ATT&CK technique (`T1090`)
    /// must be raised by some alert of the scenario.
    Alerts(Vec<String>),
    /// A benign look-alike: no alert at all (but see `Allow`).
    Nothing,
}

/// The most severe alert a look-alike may raise without failing: the
/// monitor lowers some rules for the system doing its own, declared work
/// (the firewall service loading its ruleset, an admin's capture in a login
/// session) instead of silencing them. Such alerts are reported, not
/// counted as false positives. Ordered as the monitor's severities.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Allow {
    Info,
    Low,
}

impl Allow {
    /// Whether an alert of this severity (the monitor's word) is allowed;
    /// an unknown or missing severity never is.
    pub fn allows(self, severity: &str) -> bool {
        match severity {
            "info" => true,
            "low" => self >= Allow::Low,
            _ => false,
        }
    }
}

/// A service the lab knows how to start (see `services.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ServiceKind {
    /// nginx with php-fpm serving the lab's web root, with the injectable
    /// `ping.php`, on port 80 of every address of the host.
    Webapp,
    /// OpenSSH on port 22, accepting the lab's key for root.
    Sshd,
    /// The relay target: reads `UP` bytes, answers `DOWN` bytes, on port 9000.
    Sink,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Service {
    pub kind: ServiceKind,
    pub host: Host,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct File {
    pub path: String,
    pub text: String,
    #[serde(default = "default_mode")]
    pub mode: u32,
}

fn default_mode() -> u32 {
    0o644
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    /// The host whose network namespace runs the command.
    pub host: Host,
    /// A `/bin/sh -c` command line.
    pub run: String,
    /// Start it and go on; it is stopped when the scenario ends.
    #[serde(default)]
    pub background: bool,
    /// After starting, wait until a TCP socket listens on this port in the
    /// host's namespace, or a UDP socket is bound to it: a number, or a
    /// port var (`"${PORT}"`).
    pub wait_port: Option<WaitPort>,
    /// Pause after the step (seconds).
    #[serde(default)]
    pub sleep_secs: f64,
    /// The attack starts here: alert latency is measured from this step.
    #[serde(default)]
    pub attack: bool,
    /// A foreground step that exits non-zero does not fail the scenario.
    #[serde(default)]
    pub may_fail: bool,
    /// Run before the scenario's monitor starts: the gateway as it was
    /// configured before the monitor came up (a published port forward).
    /// Such steps come first.
    #[serde(default)]
    pub before_monitor: bool,
    /// Longest a foreground step may run.
    #[serde(default = "default_step_timeout")]
    pub timeout_secs: f64,
}

fn default_step_timeout() -> f64 {
    30.0
}

/// A step's `wait_port`: a number, or text that is a port once its
/// placeholders are replaced.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum WaitPort {
    Number(u16),
    Text(String),
}

impl WaitPort {
    /// The port, with the placeholders of this run replaced.
    pub fn port(&self, vars: &Vars) -> Result<u16> {
        match self {
            WaitPort::Number(p) => Ok(*p),
            WaitPort::Text(t) => {
                let v = substitute(t, vars)?;
                v.trim()
                    .parse()
                    .ok()
                    .filter(|p| *p > 0)
                    .with_context(|| format!("wait_port = {t:?} is {v:?}, not a port"))
            }
        }
    }
}

/// The file as written; `expect` is a list or the string "none".
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    title: String,
    expect: RawExpect,
    expect_mutated: Option<Vec<String>>,
    expect_updates: Option<Vec<String>>,
    allow: Option<toml::Spanned<Allow>>,
    #[serde(default)]
    requires_rules: Vec<String>,
    #[serde(default, rename = "service")]
    services: Vec<Service>,
    #[serde(default)]
    monitor: String,
    wait_secs: Option<f64>,
    #[serde(default)]
    vars: BTreeMap<String, toml::Spanned<RawVar>>,
    #[serde(default, rename = "file")]
    files: Vec<File>,
    #[serde(rename = "step")]
    steps: Vec<Step>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawExpect {
    Word(String),
    List(Vec<String>),
}

#[derive(Debug, Clone)]
pub struct Scenario {
    /// The file name without `.toml`.
    pub name: String,
    pub path: PathBuf,
    pub title: String,
    pub expect: Expect,
    /// What the mutated run must raise when it is less than `expect`:
    /// rules that key on a program's name (EW-TUN-001 knows socat by its
    /// name) do not follow a renamed copy.
    pub expect_mutated: Option<Vec<String>>,
    /// Rules of `expect` that must also be seen in an `alert_update` line:
    /// a later, different match folded into the open alert (a second
    /// injected command through the same service), which no new `alert`
    /// line would show.
    pub expect_updates: Vec<String>,
    /// For a look-alike: alerts up to this severity are allowed.
    pub allow: Option<Allow>,
    /// Rules the monitor must have for the scenario to run: the expected
    /// rule ids and `requires_rules`.
    pub requires_rules: Vec<String>,
    pub services: Vec<Service>,
    /// Extra monitor configuration, appended to the lab's.
    pub monitor: String,
    /// How long to wait for the expected alerts after the last step (for a
    /// benign scenario: how long it must stay quiet).
    pub wait_secs: f64,
    pub files: Vec<File>,
    pub steps: Vec<Step>,
    /// The `[vars]` table, in name order.
    pub vars: Vec<VarDef>,
}

impl Scenario {
    pub fn is_attack(&self) -> bool {
        matches!(self.expect, Expect::Alerts(_))
    }

    /// What a variant must raise.
    pub fn expect_in(&self, variant: Variant) -> Expect {
        match (&self.expect_mutated, variant) {
            (Some(m), Variant::Mutated) => Expect::Alerts(m.clone()),
            _ => self.expect.clone(),
        }
    }

    /// The rules a variant must see in `alert_update` lines: those of
    /// `expect_updates` the variant expects at all.
    pub fn updates_in(&self, variant: Variant) -> Vec<String> {
        match self.expect_in(variant) {
            Expect::Alerts(want) => self
                .expect_updates
                .iter()
                .filter(|u| want.contains(u))
                .cloned()
                .collect(),
            Expect::Nothing => Vec::new(),
        }
    }

    /// The variants `--mutate` plays: an attack with vars runs as written
    /// and mutated; everything else (look-alikes included) as written.
    pub fn variants(&self, mutate: bool) -> Vec<Variant> {
        if mutate && self.is_attack() && !self.vars.is_empty() {
            vec![Variant::Plain, Variant::Mutated]
        } else {
            vec![Variant::Plain]
        }
    }

    /// Index of the step the attack starts at: the one marked `attack`,
    /// else the first foreground step once the monitor runs.
    pub fn attack_step(&self) -> usize {
        self.steps
            .iter()
            .position(|s| s.attack)
            .or_else(|| {
                self.steps
                    .iter()
                    .position(|s| !s.background && !s.before_monitor)
            })
            .unwrap_or(0)
    }

    /// How many steps run before the monitor starts.
    pub fn setup_steps(&self) -> usize {
        self.steps.iter().take_while(|s| s.before_monitor).count()
    }
}

fn is_rule_id(s: &str) -> bool {
    let mut parts = s.split('-');
    parts.next() == Some("EW")
        && parts
            .next()
            .is_some_and(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_uppercase()))
        && parts
            .next()
            .is_some_and(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
        && parts.next().is_none()
}

fn is_technique(s: &str) -> bool {
    let Some(rest) = s.strip_prefix('T') else {
        return false;
    };
    let (main, sub) = rest.split_once('.').unwrap_or((rest, "000"));
    main.len() == 4 && sub.len() == 3 && main.bytes().chain(sub.bytes()).all(|b| b.is_ascii_digit())
}

/// 1-based line and column of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    (line, col)
}

/// Parses one scenario file; errors name `file:line:col`.
pub fn parse(path: &Path, text: &str) -> Result<Scenario> {
    let name = path
        .file_stem()
        .and_then(|s| s.to_str())
        .context("scenario file name is not UTF-8")?
        .to_owned();
    let raw: Raw = toml::from_str(text).map_err(|e| {
        let (line, col) = line_col(text, e.span().map_or(0, |s| s.start));
        anyhow::anyhow!(
            "{}:{line}:{col}: {}",
            path.display(),
            e.message().replace('\n', " ")
        )
    })?;
    let bad = |what: String| -> Result<Scenario> { bail!("{}: {what}", path.display()) };
    let expect = match raw.expect {
        RawExpect::Word(w) if w == "none" => Expect::Nothing,
        RawExpect::Word(w) => {
            return bad(format!(
                "expect = {w:?}: give a list of rule ids and techniques, or \"none\""
            ))
        }
        RawExpect::List(l) if l.is_empty() => {
            return bad("expect is empty: use expect = \"none\" for a benign scenario".into())
        }
        RawExpect::List(l) => Expect::Alerts(l),
    };
    if let Expect::Alerts(items) = &expect {
        if let Some(x) = items.iter().find(|x| !is_rule_id(x) && !is_technique(x)) {
            return bad(format!(
                "expect: {x:?} is neither a rule id (EW-PROC-001) nor an ATT&CK technique (T1090, T1090.001)"
            ));
        }
    }
    if let Some(m) = &raw.expect_mutated {
        let Expect::Alerts(all) = &expect else {
            return bad("expect_mutated: a look-alike has no mutated run".into());
        };
        if raw.vars.is_empty() {
            return bad("expect_mutated: only a scenario with [vars] has a mutated run".into());
        }
        if m.is_empty() {
            return bad(
                "expect_mutated is empty: a mutated attack must still raise something".into(),
            );
        }
        if let Some(x) = m.iter().find(|x| !all.contains(x)) {
            return bad(format!(
                "expect_mutated: {x:?} is not in expect (the mutated run expects a part of it)"
            ));
        }
    }
    if let Some(expect_updates) = &raw.expect_updates {
        let Expect::Alerts(all) = &expect else {
            return bad("expect_updates: a look-alike expects no alert, so no update".into());
        };
        if expect_updates.is_empty() {
            return bad("expect_updates is empty: leave it out, or name a rule".into());
        }
        if let Some(x) = expect_updates.iter().find(|x| !is_rule_id(x)) {
            return bad(format!(
                "expect_updates: {x:?} is not a rule id (an update belongs to one rule's alert)"
            ));
        }
        if let Some(x) = expect_updates.iter().find(|x| !all.contains(x)) {
            return bad(format!(
                "expect_updates: {x:?} is not in expect (an update follows its rule's alert)"
            ));
        }
    }
    let expect_updates = raw.expect_updates.unwrap_or_default();
    let allow = match raw.allow {
        Some(a) if matches!(expect, Expect::Alerts(_)) => {
            let (line, col) = line_col(text, a.span().start);
            bail!(
                "{}:{line}:{col}: allow: only a look-alike (expect = \"none\") allows alerts",
                path.display()
            );
        }
        a => a.map(toml::Spanned::into_inner),
    };
    if let Some(x) = raw.requires_rules.iter().find(|x| !is_rule_id(x)) {
        return bad(format!("requires_rules: {x:?} is not a rule id"));
    }
    if raw.steps.is_empty() {
        return bad("no [[step]]".into());
    }
    if raw.steps.iter().filter(|s| s.attack).count() > 1 {
        return bad("more than one step is marked attack = true".into());
    }
    if raw.steps.iter().all(|s| s.background && !s.attack) {
        return bad("every step runs in the background: nothing marks the attack".into());
    }
    let setup = raw.steps.iter().take_while(|s| s.before_monitor).count();
    if raw.steps[setup..].iter().any(|s| s.before_monitor) {
        return bad("steps with before_monitor = true must come first".into());
    }
    if raw.steps[..setup].iter().any(|s| s.attack) || setup == raw.steps.len() {
        return bad(
            "the attack runs after the monitor starts: a step without before_monitor must follow"
                .into(),
        );
    }
    for s in &raw.steps {
        if !(s.sleep_secs >= 0.0 && s.sleep_secs <= 60.0) {
            return bad(format!("sleep_secs = {}: must be 0 to 60", s.sleep_secs));
        }
        if !(s.timeout_secs > 0.0 && s.timeout_secs <= 120.0) {
            return bad(format!(
                "timeout_secs = {}: must be over 0, at most 120",
                s.timeout_secs
            ));
        }
    }
    // Long enough for a relay sample or three; a benign scenario waits it
    // all, an attack only until its alerts are in.
    let wait_secs = raw.wait_secs.unwrap_or(match expect {
        Expect::Alerts(_) => 10.0,
        Expect::Nothing => 3.0,
    });
    if !(wait_secs > 0.0 && wait_secs <= 90.0) {
        return bad(format!(
            "wait_secs = {wait_secs}: must be over 0, at most 90"
        ));
    }
    let mut defs = Vec::new();
    for (name, v) in raw.vars {
        let (line, col) = line_col(text, v.span().start);
        let where_ = format!("{}:{line}:{col}", path.display());
        defs.push(vars::define(&name, v.into_inner(), line, col, &where_)?);
    }
    let mut requires_rules = raw.requires_rules;
    if let Expect::Alerts(items) = &expect {
        requires_rules.extend(items.iter().filter(|x| is_rule_id(x)).cloned());
    }
    requires_rules.sort();
    requires_rules.dedup();
    let scenario = Scenario {
        name,
        path: path.to_owned(),
        title: raw.title,
        expect,
        expect_mutated: raw.expect_mutated,
        expect_updates,
        allow,
        requires_rules,
        services: raw.services,
        monitor: raw.monitor,
        wait_secs,
        files: raw.files,
        steps: raw.steps,
        vars: defs,
    };
    check_placeholders(&scenario, text)?;
    Ok(scenario)
}

/// The `${NAME}` placeholders a scenario may use (the lab's and the
/// scenario's vars), with their values.
pub type Vars = BTreeMap<String, String>;

/// Replaces `${NAME}` with its value; an unknown name is an error, so a
/// typo fails the scenario instead of reaching the shell as an empty string.
pub fn substitute(text: &str, vars: &Vars) -> Result<String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("${") {
        out.push_str(&rest[..i]);
        let after = &rest[i + 2..];
        let end = after
            .find('}')
            .with_context(|| format!("unclosed ${{ in {text:?}"))?;
        let name = &after[..end];
        match vars.get(name) {
            Some(v) => out.push_str(v),
            None => bail!(
                "unknown placeholder ${{{name}}} (known: {})",
                vars.keys()
                    .map(String::as_str)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// The names of the `${NAME}` placeholders in a text, in order.
fn placeholder_names(text: &str) -> Result<Vec<&str>> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find("${") {
        let after = &rest[i + 2..];
        let end = after
            .find('}')
            .with_context(|| format!("unclosed ${{ in {text:?}"))?;
        out.push(&after[..end]);
        rest = &after[end + 1..];
    }
    Ok(out)
}

/// Checks every placeholder against the names the lab and the scenario's
/// vars define, and that every var is used, before anything runs. Errors
/// name `file:line:col`: of the first use of an unknown placeholder, of an
/// unused var's value.
fn check_placeholders(s: &Scenario, file_text: &str) -> Result<()> {
    let known: BTreeSet<&str> = super::PLACEHOLDERS
        .iter()
        .copied()
        .chain(s.vars.iter().map(|v| v.name.as_str()))
        .collect();
    let wait_ports = s.steps.iter().filter_map(|st| match &st.wait_port {
        Some(WaitPort::Text(t)) => Some(t),
        _ => None,
    });
    let texts = s
        .files
        .iter()
        .flat_map(|f| [&f.path, &f.text])
        .chain(s.steps.iter().map(|st| &st.run))
        .chain(wait_ports)
        .chain([&s.monitor])
        .chain(s.vars.iter().flat_map(|v| match &v.kind {
            VarKind::Choice(c) => c.iter().collect(),
            _ => Vec::new(),
        }));
    let mut used = BTreeSet::new();
    for t in texts {
        for name in placeholder_names(t).with_context(|| s.path.display().to_string())? {
            if !known.contains(name) {
                let at = file_text.find(&format!("${{{name}}}")).unwrap_or(0);
                let (line, col) = line_col(file_text, at);
                bail!(
                    "{}:{line}:{col}: unknown placeholder ${{{name}}} (known: {}; a scenario defines more in [vars])",
                    s.path.display(),
                    known.iter().copied().collect::<Vec<_>>().join(", ")
                );
            }
            used.insert(name);
        }
    }
    if let Some(v) = s.vars.iter().find(|v| !used.contains(v.name.as_str())) {
        bail!(
            "{}:{}:{}: var {} is never used as ${{{}}}",
            s.path.display(),
            v.line,
            v.col,
            v.name,
            v.name
        );
    }
    // wait_port texts must come out as ports in every variant.
    for variant in [Variant::Plain, Variant::Mutated] {
        let vars: Vars = known
            .iter()
            .map(|n| (n.to_string(), String::new()))
            .chain(vars::values(&s.name, &s.vars, variant, Path::new("/")))
            .collect();
        for (i, st) in s.steps.iter().enumerate() {
            if let Some(w @ WaitPort::Text(_)) = &st.wait_port {
                w.port(&vars)
                    .with_context(|| format!("{}: step {}", s.path.display(), i + 1))?;
            }
        }
    }
    Ok(())
}

/// Reads every `*.toml` under `dir`, sorted by name.
pub fn load_all(dir: &Path) -> Result<Vec<Scenario>> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    paths.sort();
    paths
        .iter()
        .map(|p| {
            let text =
                std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            parse(p, &text)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(text: &str) -> Result<Scenario> {
        parse(Path::new("tests/scenarios/x.toml"), text)
    }

    const STEP: &str = "[[step]]\nhost = \"gateway\"\nrun = \"true\"\n";

    #[test]
    fn attack_and_benign_parse() {
        let s = parse_str(&format!(
            "title = \"t\"\nexpect = [\"EW-PROC-001\", \"T1090.001\"]\nrequires_rules = [\"EW-FWD-001\"]\n{STEP}"
        ))
        .expect("parse");
        assert!(s.is_attack());
        assert_eq!(s.requires_rules, ["EW-FWD-001", "EW-PROC-001"]);
        let s = parse_str(&format!("title = \"t\"\nexpect = \"none\"\n{STEP}")).expect("parse");
        assert!(!s.is_attack());
    }

    #[test]
    fn bad_files_fail_in_one_line_naming_the_place() {
        for (text, want) in [
            (format!("title = \"t\"\nexpect = \"no\"\n{STEP}"), "x.toml: expect = \"no\""),
            (format!("title = \"t\"\nexpect = []\n{STEP}"), "expect is empty"),
            (format!("title = \"t\"\nexpect = [\"PROC-1\"]\n{STEP}"), "neither a rule id"),
            ("title = \"t\"\nexpect = \"none\"\n[[step]]\nhost = \"mars\"\nrun = \"x\"\n".into(), "x.toml:4:8: unknown variant `mars`"),
            (format!("title = \"t\"\nexpect = \"none\"\ncolour = 1\n{STEP}"), "x.toml:3:1: unknown field `colour`"),
            (format!("title = \"t\"\nexpect = \"none\"\n{STEP}sleep_secs = -1\n"), "sleep_secs = -1"),
            (format!("title = \"t\"\nexpect = \"none\"\n{STEP}{STEP}before_monitor = true\n"), "must come first"),
            (format!("title = \"t\"\nexpect = \"none\"\n{STEP}before_monitor = true\n"), "a step without before_monitor must follow"),
            ("title = \"t\"\nexpect = \"none\"\n[[step]]\nhost = \"lan\"\nrun = \"echo ${NOPE}\"\n".into(), "x.toml:5:13: unknown placeholder ${NOPE}"),
        ] {
            let e = format!("{:#}", parse_str(&text).expect_err(&text));
            assert!(e.contains(want), "{e} does not contain {want}");
            assert!(!e.contains('\n'), "{e}");
        }
    }

    #[test]
    fn vars_parse_and_run_in_both_variants() {
        let s = parse_str(&format!(
            "title = \"t\"\nexpect = [\"T1090\"]\n[vars]\nPORT = {{ port = 8447 }}\nRELAY = {{ program = \"socat\" }}\n\
             {STEP}[[step]]\nhost = \"gateway\"\nrun = \"exec ${{RELAY}} TCP-LISTEN:${{PORT}} -\"\nwait_port = \"${{PORT}}\"\n"
        ))
        .expect("parse");
        assert_eq!(
            s.vars,
            [
                VarDef {
                    name: "PORT".into(),
                    kind: vars::VarKind::Port(8447),
                    line: 4,
                    col: 8
                },
                VarDef {
                    name: "RELAY".into(),
                    kind: vars::VarKind::Program {
                        program: "socat".into(),
                        copy_to: None,
                    },
                    line: 5,
                    col: 9
                },
            ]
        );
        assert_eq!(s.variants(false), [Variant::Plain]);
        assert_eq!(s.variants(true), [Variant::Plain, Variant::Mutated]);
        let wd = Path::new("/tmp/w");
        for (variant, port, relay) in [
            (Variant::Plain, "8447".to_owned(), "socat".to_owned()),
            (
                Variant::Mutated,
                vars::mutated_port("x", "PORT", &[8447].into()).to_string(),
                vars::disguise("x", "RELAY", wd, &BTreeSet::new())
                    .display()
                    .to_string(),
            ),
        ] {
            let v: Vars = vars::values(&s.name, &s.vars, variant, wd);
            assert_eq!(v["PORT"], port);
            assert_eq!(v["RELAY"], relay);
            assert_eq!(
                substitute(&s.steps[1].run, &v).expect("substitute"),
                format!("exec {relay} TCP-LISTEN:{port} -")
            );
            let wait = s.steps[1].wait_port.as_ref().expect("wait_port");
            assert_eq!(wait.port(&v).expect("port").to_string(), port);
        }
        // A look-alike or a scenario without vars runs once.
        let benign = parse_str(
            "title = \"t\"\nexpect = \"none\"\n[vars]\nP = { port = 1 }\n[[step]]\nhost = \"lan\"\nrun = \"echo ${P}\"\n",
        )
        .expect("parse");
        assert_eq!(benign.variants(true), [Variant::Plain]);
        let plain =
            parse_str(&format!("title = \"t\"\nexpect = [\"T1090\"]\n{STEP}")).expect("parse");
        assert_eq!(plain.variants(true), [Variant::Plain]);
    }

    #[test]
    fn expect_mutated_is_a_part_of_expect() {
        let vars = "[vars]\nP = { port = 1 }\n[[step]]\nhost = \"lan\"\nrun = \"echo ${P}\"\n";
        let s = parse_str(&format!(
            "title = \"t\"\nexpect = [\"EW-RELAY-004\", \"EW-TUN-001\"]\nexpect_mutated = [\"EW-RELAY-004\"]\n{vars}"
        ))
        .expect("parse");
        assert!(matches!(s.expect_in(Variant::Plain), Expect::Alerts(a) if a.len() == 2));
        assert!(
            matches!(s.expect_in(Variant::Mutated), Expect::Alerts(a) if a == ["EW-RELAY-004"])
        );
        let plain =
            parse_str(&format!("title = \"t\"\nexpect = [\"T1090\"]\n{vars}")).expect("parse");
        assert!(matches!(plain.expect_in(Variant::Mutated), Expect::Alerts(a) if a == ["T1090"]));
        for (head, want) in [
            (
                "expect = [\"T1090\"]\nexpect_mutated = [\"T1572\"]\n",
                "\"T1572\" is not in expect",
            ),
            (
                "expect = [\"T1090\"]\nexpect_mutated = []\n",
                "expect_mutated is empty",
            ),
            (
                "expect = \"none\"\nexpect_mutated = [\"T1090\"]\n",
                "a look-alike has no mutated run",
            ),
        ] {
            let text = format!("title = \"t\"\n{head}{vars}");
            let e = format!("{:#}", parse_str(&text).expect_err(&text));
            assert!(e.contains(want), "{e} does not contain {want}");
        }
        let text =
            format!("title = \"t\"\nexpect = [\"T1090\"]\nexpect_mutated = [\"T1090\"]\n{STEP}");
        let e = format!("{:#}", parse_str(&text).expect_err(&text));
        assert!(e.contains("only a scenario with [vars]"), "{e}");
    }

    #[test]
    fn expect_updates_name_rules_of_expect() {
        let s = parse_str(&format!(
            "title = \"t\"\nexpect = [\"EW-PROC-001\", \"EW-PROC-003\"]\nexpect_updates = [\"EW-PROC-001\"]\n{STEP}"
        ))
        .expect("parse");
        assert_eq!(s.expect_updates, ["EW-PROC-001"]);
        assert_eq!(s.updates_in(Variant::Plain), ["EW-PROC-001"]);
        // A mutated run that no longer expects the rule expects no update of it.
        let vars = "[vars]\nP = { port = 1 }\n[[step]]\nhost = \"lan\"\nrun = \"echo ${P}\"\n";
        let s = parse_str(&format!(
            "title = \"t\"\nexpect = [\"EW-PROC-001\", \"EW-PROC-003\"]\nexpect_mutated = [\"EW-PROC-003\"]\nexpect_updates = [\"EW-PROC-001\"]\n{vars}"
        ))
        .expect("parse");
        assert_eq!(s.updates_in(Variant::Plain), ["EW-PROC-001"]);
        assert!(s.updates_in(Variant::Mutated).is_empty());
        let plain =
            parse_str(&format!("title = \"t\"\nexpect = [\"T1090\"]\n{STEP}")).expect("parse");
        assert!(plain.expect_updates.is_empty());
        for (head, want) in [
            (
                "expect = [\"EW-PROC-001\"]\nexpect_updates = [\"EW-PROC-003\"]\n",
                "x.toml: expect_updates: \"EW-PROC-003\" is not in expect",
            ),
            (
                "expect = [\"T1059\"]\nexpect_updates = [\"T1059\"]\n",
                "expect_updates: \"T1059\" is not a rule id",
            ),
            (
                "expect = [\"EW-PROC-001\"]\nexpect_updates = []\n",
                "expect_updates is empty",
            ),
            (
                "expect = \"none\"\nexpect_updates = [\"EW-PROC-001\"]\n",
                "a look-alike expects no alert, so no update",
            ),
            (
                "expect = [\"EW-PROC-001\"]\nexpect_updates = \"EW-PROC-001\"\n",
                "x.toml:3:18: invalid type: string",
            ),
        ] {
            let text = format!("title = \"t\"\n{head}{STEP}");
            let e = format!("{:#}", parse_str(&text).expect_err(&text));
            assert!(e.contains(want), "{e} does not contain {want}");
            assert!(!e.contains('\n'), "{e}");
        }
    }

    #[test]
    fn allow_is_for_look_alikes_and_low_at_most() {
        let s = parse_str(&format!(
            "title = \"t\"\nexpect = \"none\"\nallow = \"low\"\n{STEP}"
        ))
        .expect("parse");
        assert_eq!(s.allow, Some(Allow::Low));
        let quiet = parse_str(&format!("title = \"t\"\nexpect = \"none\"\n{STEP}")).expect("parse");
        assert_eq!(quiet.allow, None);
        for (allow, info, low, medium, unknown) in [
            (Allow::Low, true, true, false, false),
            (Allow::Info, true, false, false, false),
        ] {
            assert_eq!(allow.allows("info"), info);
            assert_eq!(allow.allows("low"), low);
            assert_eq!(allow.allows("medium"), medium);
            assert!(!allow.allows("critical"));
            assert_eq!(allow.allows(""), unknown);
        }
        for (head, want) in [
            (
                "expect = \"none\"\nallow = \"medium\"\n",
                "x.toml:3:9: unknown variant `medium`, expected `info` or `low`",
            ),
            (
                "expect = [\"EW-CFG-002\"]\nallow = \"low\"\n",
                "x.toml:3:9: allow: only a look-alike",
            ),
        ] {
            let text = format!("title = \"t\"\n{head}{STEP}");
            let e = format!("{:#}", parse_str(&text).expect_err(&text));
            assert!(e.contains(want), "{e} does not contain {want}");
            assert!(!e.contains('\n'), "{e}");
        }
    }

    #[test]
    fn bad_vars_fail_naming_the_place() {
        let head = "title = \"t\"\nexpect = [\"T1090\"]\n[vars]\n";
        for (vars, run, want) in [
            (
                "P = { colour = 1 }\n",
                "${P}",
                "x.toml:4:7: unknown field `colour`, expected one of `port`, `program`, `copy_to`",
            ),
            (
                "P = { port = 1, program = \"nc\" }\n",
                "${P}",
                "x.toml:4:5: var P: one kind per var",
            ),
            ("P = {}\n", "${P}", "x.toml:4:5: var P: give one kind"),
            ("P = { port = 70000 }\n", "${P}", "x.toml:4:14:"),
            (
                "P = { port = 1 }\nQ = { port = 2 }\n",
                "${P}",
                "x.toml:5:5: var Q is never used as ${Q}",
            ),
            (
                "P = { port = 1 }\n",
                "${P} ${R}",
                "x.toml:7:13: unknown placeholder ${R}",
            ),
            (
                "ATTACKER = { port = 1 }\n",
                "${ATTACKER}",
                "x.toml:4:12: var ATTACKER: the lab already defines",
            ),
            (
                "p = { port = 1 }\n",
                "${p}",
                "x.toml:4:5: var \"p\": names are upper case",
            ),
        ] {
            let text = format!("{head}{vars}[[step]]\nhost = \"lan\"\nrun = \"{run}\"\n");
            let e = format!("{:#}", parse_str(&text).expect_err(&text));
            assert!(e.contains(want), "{e} does not contain {want}");
            assert!(!e.contains('\n'), "{e}");
        }
        let text = format!("{head}P = {{ program = \"nc\" }}\n[[step]]\nhost = \"lan\"\nrun = \"${{P}}\"\nwait_port = \"${{P}}\"\n");
        let e = format!("{:#}", parse_str(&text).expect_err(&text));
        assert!(
            e.contains("x.toml: step 1: wait_port = \"${P}\" is \"nc\", not a port"),
            "{e}"
        );
    }

    #[test]
    fn substitution() {
        let vars: Vars = [("A".to_owned(), "1".to_owned())].into_iter().collect();
        assert_eq!(substitute("x${A}y$HOME", &vars).expect("ok"), "x1y$HOME");
        assert!(substitute("${A", &vars).is_err());
    }

    #[test]
    fn ids_and_techniques() {
        assert!(is_rule_id("EW-RELAY-002"));
        assert!(!is_rule_id("EW-relay-2"));
        assert!(is_technique("T1090") && is_technique("T1090.002"));
        assert!(!is_technique("T109") && !is_technique("T1090.1"));
    }
}
