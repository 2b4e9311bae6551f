//! Scenario files: one TOML file per scenario under `tests/scenarios/`,
//! read and checked here so a bad file fails in one line that names it.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use anyhow::{bail, Context as _, Result};
use serde::Deserialize;

use super::topology::Host;

/// What a scenario must produce.
#[derive(Debug, Clone)]
pub enum Expect {
    /// Every listed rule id (`EW-PROC-001`) or ATT&CK technique (`T1090`)
    /// must be raised by some alert of the scenario.
    Alerts(Vec<String>),
    /// A benign look-alike: no alert at all.
    Nothing,
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
    /// host's namespace.
    pub wait_port: Option<u16>,
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

/// The file as written; `expect` is a list or the string "none".
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    title: String,
    expect: RawExpect,
    #[serde(default)]
    requires_rules: Vec<String>,
    #[serde(default, rename = "service")]
    services: Vec<Service>,
    #[serde(default)]
    monitor: String,
    wait_secs: Option<f64>,
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
}

impl Scenario {
    pub fn is_attack(&self) -> bool {
        matches!(self.expect, Expect::Alerts(_))
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
        requires_rules,
        services: raw.services,
        monitor: raw.monitor,
        wait_secs,
        files: raw.files,
        steps: raw.steps,
    };
    check_placeholders(&scenario)?;
    Ok(scenario)
}

/// The `${NAME}` placeholders a scenario may use, with their values.
pub type Vars = BTreeMap<&'static str, String>;

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
                vars.keys().copied().collect::<Vec<_>>().join(", ")
            ),
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Checks every placeholder against the names the lab defines, before
/// anything runs.
fn check_placeholders(s: &Scenario) -> Result<()> {
    let vars: Vars = super::PLACEHOLDERS
        .iter()
        .map(|n| (*n, String::new()))
        .collect();
    let texts = s
        .files
        .iter()
        .flat_map(|f| [&f.path, &f.text])
        .chain(s.steps.iter().map(|st| &st.run))
        .chain([&s.monitor]);
    for t in texts {
        substitute(t, &vars).with_context(|| s.path.display().to_string())?;
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
            ("title = \"t\"\nexpect = \"none\"\n[[step]]\nhost = \"lan\"\nrun = \"echo ${NOPE}\"\n".into(), "unknown placeholder ${NOPE}"),
        ] {
            let e = format!("{:#}", parse_str(&text).expect_err(&text));
            assert!(e.contains(want), "{e} does not contain {want}");
            assert!(!e.contains('\n'), "{e}");
        }
    }

    #[test]
    fn substitution() {
        let vars: Vars = [("A", "1".to_owned())].into_iter().collect();
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
