//! Scenario variables: the `[vars]` table of a scenario file, named values
//! used as `${NAME}` like the lab's placeholders, that a mutated run
//! (`cargo xtask lab --mutate`) changes, so a scenario proves its detection
//! does not hang on a port or a program's name or place.
//!
//! ```toml
//! [vars]
//! PORT = { port = 8447 }        # plain: 8447; mutated: a port in 20000-29999
//! RELAY = { program = "socat" } # plain: socat as found on PATH; mutated: a
//!                               # copy under a system-looking name, elsewhere
//! SOCKS = { program = "microsocks", copy_to = "${DIR}/.local/bin/udisksd" }
//!                               # plain: a copy there; mutated: as above
//! SHELL = { choice = ["python3 -c '...'", "perl -e '...'"] }
//!                               # plain: the first; mutated: another (the
//!                               # same behaviour in another language)
//! ```
//!
//! Mutations are deterministic: they derive from the scenario's and the
//! variable's names only, so a mutated run can be replayed.

use std::{
    collections::{BTreeMap, BTreeSet},
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
};

use anyhow::{bail, Context as _, Result};
use serde::Deserialize;

/// A variable as written in `[vars]`: exactly one kind.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawVar {
    port: Option<u16>,
    program: Option<String>,
    copy_to: Option<String>,
    choice: Option<Vec<String>>,
}

/// What a variable stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VarKind {
    /// A TCP or UDP port a scenario listens on.
    Port(u16),
    /// A program: a name looked up on PATH, or an absolute path; in the
    /// plain run, copied to `copy_to` (under `${DIR}`) when given.
    Program {
        program: String,
        copy_to: Option<String>,
    },
    /// Texts that do the same thing another way (another interpreter,
    /// another tool), which may hold placeholders: the first in the plain
    /// run, another in the mutated one.
    Choice(Vec<String>),
}

/// A variable of a scenario.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VarDef {
    pub name: String,
    pub kind: VarKind,
    /// 1-based line and column of its value in the file, for errors.
    pub line: usize,
    pub col: usize,
}

/// How a scenario is played.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Variant {
    /// As written.
    Plain,
    /// Ports moved, programs copied under other names into other places.
    Mutated,
}

impl Variant {
    /// The scenario's name in this variant (`NAME`, `NAME@mutated`).
    pub fn label(self, scenario: &str) -> String {
        match self {
            Variant::Plain => scenario.to_owned(),
            Variant::Mutated => format!("{scenario}@mutated"),
        }
    }

    pub fn word(self) -> &'static str {
        match self {
            Variant::Plain => "plain",
            Variant::Mutated => "mutated",
        }
    }
}

/// Whether a variable name is well formed: `A-Z`, digits, `_`, starting
/// with a letter.
fn is_name(n: &str) -> bool {
    n.bytes().next().is_some_and(|b| b.is_ascii_uppercase())
        && n.bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
}

/// Checks one `[vars]` entry; `where_` is `file:line:col` of its value.
pub fn define(name: &str, raw: RawVar, line: usize, col: usize, where_: &str) -> Result<VarDef> {
    if !is_name(name) {
        bail!("{where_}: var {name:?}: names are upper case letters, digits and _, starting with a letter");
    }
    if super::PLACEHOLDERS.contains(&name) {
        bail!("{where_}: var {name}: the lab already defines ${{{name}}}");
    }
    if let Some(c) = &raw.copy_to {
        if raw.program.is_none() {
            bail!("{where_}: var {name}: copy_to goes with program");
        }
        let rest = c.strip_prefix("${DIR}/").unwrap_or_default();
        if rest.is_empty()
            || rest.ends_with('/')
            || rest.contains("${")
            || rest
                .split('/')
                .any(|p| p.is_empty() || p == "." || p == "..")
        {
            bail!("{where_}: var {name}: copy_to = {c:?}: give a file path under ${{DIR}}/ (the scenario's directory, removed with it)");
        }
    }
    if let Some(choices) = raw.choice {
        if raw.port.is_some() || raw.program.is_some() || raw.copy_to.is_some() {
            bail!("{where_}: var {name}: one kind per var: choice alone");
        }
        if choices.len() < 2 || choices.iter().any(|c| c.trim().is_empty()) {
            bail!("{where_}: var {name}: choice = [...] needs two or more texts, none empty");
        }
        return Ok(VarDef {
            name: name.to_owned(),
            kind: VarKind::Choice(choices),
            line,
            col,
        });
    }
    let kind = match (raw.port, raw.program) {
        (Some(0), None) => bail!("{where_}: var {name}: port 0 is not a port"),
        (Some(p), None) => VarKind::Port(p),
        (None, Some(p)) if p.is_empty() || p.contains(char::is_whitespace) => {
            bail!("{where_}: var {name}: program {p:?} is not a program name or path")
        }
        (None, Some(p)) if p.contains('/') && !p.starts_with('/') => {
            bail!("{where_}: var {name}: program {p:?}: give a name found on PATH or an absolute path")
        }
        (None, Some(p)) => VarKind::Program {
            program: p,
            copy_to: raw.copy_to,
        },
        (None, None) => {
            bail!("{where_}: var {name}: give one kind: {{ port = N }}, {{ program = \"name\" }} or {{ choice = [...] }}")
        }
        (Some(_), Some(_)) => bail!("{where_}: var {name}: one kind per var, not port and program"),
    };
    Ok(VarDef {
        name: name.to_owned(),
        kind,
        line,
        col,
    })
}

/// FNV-1a, 64 bits: a hash that stays the same across Rust releases and
/// machines (std's `DefaultHasher` promises neither).
fn fnv1a(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            h ^= 0xff;
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        for b in p.bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

/// Where mutated ports come from: above the lab's fixed ports (all under
/// 10000) and below Linux's ephemeral range (32768 and up), so a mutated
/// port clashes with neither.
pub const MUTATED_PORTS: std::ops::Range<u16> = 20000..30000;

/// Names a mutated program is copied under: what a look at `ps` would take
/// for part of the system. None names a relay or proxy tool.
pub const DISGUISES: &[&str] = &[
    "kworker-io",
    "systemd-netlogd",
    "dbus-sessiond",
    "udevd-worker",
    "irqbalanced",
    "polkit-agentd",
    "thermald-io",
    "accounts-syncd",
    "cron-helper",
    "snapd-refresh",
];

/// The hidden directories a mutated program is copied into (`{DIR}` is the
/// scenario's scratch directory, under /tmp).
pub const HIDEOUTS: &[&str] = &[
    "{DIR}/.cache",
    "/var/tmp/.ICE-unix-",
    "/dev/shm/.font-cache-",
];

/// The port a port var gets in a mutated run: derived from the scenario's
/// and the var's names, in [`MUTATED_PORTS`], not in `taken`.
pub fn mutated_port(scenario: &str, var: &str, taken: &BTreeSet<u16>) -> u16 {
    let span = MUTATED_PORTS.end - MUTATED_PORTS.start;
    let mut off = (fnv1a(&[scenario, var]) % u64::from(span)) as u16;
    for _ in 0..span {
        let p = MUTATED_PORTS.start + off;
        if !taken.contains(&p) {
            return p;
        }
        off = (off + 1) % span;
    }
    unreachable!("a scenario has fewer than 10000 port vars")
}

/// Where a program var's copy goes in a mutated run: a hidden directory
/// and a system-looking file name, derived from the scenario's and the
/// var's names. Names in `taken` (other vars of the scenario) are skipped.
pub fn disguise(scenario: &str, var: &str, workdir: &Path, taken: &BTreeSet<String>) -> PathBuf {
    let h = fnv1a(&[scenario, var]);
    let hideout = HIDEOUTS[(h % HIDEOUTS.len() as u64) as usize];
    let dir = if let Some(rest) = hideout.strip_prefix("{DIR}") {
        PathBuf::from(format!("{}{rest}", workdir.display()))
    } else {
        // A suffix from the hash keeps two scenarios' hideouts apart.
        PathBuf::from(format!("{hideout}{:04x}", (h >> 48) as u16))
    };
    let first = ((h >> 8) % DISGUISES.len() as u64) as usize;
    let name = (0..DISGUISES.len())
        .map(|i| DISGUISES[(first + i) % DISGUISES.len()])
        .find(|n| !taken.contains(*n))
        .unwrap_or(DISGUISES[first]);
    dir.join(name)
}

/// Finds a program: an absolute path as given, a name on PATH.
pub fn find_program(program: &str) -> Result<PathBuf> {
    let is_exe = |p: &Path| {
        p.metadata()
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if program.starts_with('/') {
        let p = PathBuf::from(program);
        if is_exe(&p) {
            return Ok(p);
        }
        bail!("{program} is not an executable file");
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|p| is_exe(p))
        .with_context(|| format!("no {program} on PATH (install it, or give its absolute path)"))
}

/// The values of a scenario's vars in one variant, and the directories made
/// for mutated programs, removed on drop.
#[derive(Debug, Default)]
pub struct Resolved {
    pub values: BTreeMap<String, String>,
    made: Vec<PathBuf>,
}

impl Resolved {
    /// Removes the directories made for mutated programs.
    pub fn clean(&mut self) {
        for d in self.made.drain(..) {
            let _ = std::fs::remove_dir_all(&d);
        }
    }
}

impl Drop for Resolved {
    fn drop(&mut self) {
        self.clean();
    }
}

/// The values the vars take in a variant, without touching the disk: plain
/// programs as written, mutated ones as the path of their copy. Used to
/// check a scenario and by [`resolve`].
pub fn values(
    scenario: &str,
    defs: &[VarDef],
    variant: Variant,
    workdir: &Path,
) -> BTreeMap<String, String> {
    let mut taken_ports: BTreeSet<u16> = defs
        .iter()
        .filter_map(|d| match d.kind {
            VarKind::Port(p) => Some(p),
            VarKind::Program { .. } | VarKind::Choice(_) => None,
        })
        .collect();
    let mut taken_names = BTreeSet::new();
    let mut out = BTreeMap::new();
    for d in defs {
        let v = match (&d.kind, variant) {
            (VarKind::Port(p), Variant::Plain) => p.to_string(),
            (
                VarKind::Program {
                    copy_to: Some(c), ..
                },
                Variant::Plain,
            ) => c.replacen("${DIR}", &workdir.display().to_string(), 1),
            (VarKind::Program { program, .. }, Variant::Plain) => program.clone(),
            (VarKind::Choice(c), Variant::Plain) => c[0].clone(),
            (VarKind::Choice(c), Variant::Mutated) => {
                let others = (c.len() - 1) as u64;
                c[1 + (fnv1a(&[scenario, &d.name]) % others) as usize].clone()
            }
            (VarKind::Port(_), Variant::Mutated) => {
                let p = mutated_port(scenario, &d.name, &taken_ports);
                taken_ports.insert(p);
                p.to_string()
            }
            (VarKind::Program { .. }, Variant::Mutated) => {
                let path = disguise(scenario, &d.name, workdir, &taken_names);
                if let Some(n) = path.file_name() {
                    taken_names.insert(n.to_string_lossy().into_owned());
                }
                path.display().to_string()
            }
        };
        out.insert(d.name.clone(), v);
    }
    out
}

/// The hideouts outside the scenario's directory that a mutated run of
/// this scenario copies programs into: the lab's own (their names derive
/// from the scenario's), so a run removes those a killed run left.
pub fn hideouts(scenario: &str, defs: &[VarDef]) -> Vec<PathBuf> {
    let workdir = Path::new("/nonexistent-workdir");
    let values = values(scenario, defs, Variant::Mutated, workdir);
    defs.iter()
        .filter(|d| matches!(d.kind, VarKind::Program { .. }))
        .filter_map(|d| Path::new(&values[&d.name]).parent().map(Path::to_owned))
        .filter(|dir| !dir.starts_with(workdir))
        .collect()
}

/// Gives the vars their values for a run: plain programs are looked up
/// (on PATH, or checked at their absolute path), mutated ones copied to
/// their disguise (symbolic links followed: the copy is the binary itself).
pub fn resolve(
    scenario: &str,
    defs: &[VarDef],
    variant: Variant,
    workdir: &Path,
) -> Result<Resolved> {
    let mut r = Resolved {
        values: values(scenario, defs, variant, workdir),
        made: Vec::new(),
    };
    for d in defs {
        let VarKind::Program { program, copy_to } = &d.kind else {
            continue;
        };
        let found = find_program(program).with_context(|| format!("var {}", d.name))?;
        if variant == Variant::Plain && copy_to.is_none() {
            r.values.insert(d.name.clone(), found.display().to_string());
            continue;
        }
        // A copy: the plain run's copy_to, or the mutated run's disguise.
        let copy = PathBuf::from(&r.values[&d.name]);
        let dir = copy.parent().context("a copy has a directory")?;
        if variant == Variant::Mutated {
            // A hideout is the lab's own (its name is derived as the copy's
            // is), even when a run that was killed left it behind.
            r.made.push(dir.to_owned());
        } else if !dir.exists() {
            // The first directory made is the one to remove.
            let mut top = dir;
            while let Some(up) = top.parent().filter(|u| !u.exists()) {
                top = up;
            }
            r.made.push(top.to_owned());
        }
        std::fs::create_dir_all(dir)
            .with_context(|| format!("var {}: making {}", d.name, dir.display()))?;
        let real = std::fs::canonicalize(&found)?;
        std::fs::copy(&real, &copy).with_context(|| {
            format!(
                "var {}: copying {} to {}",
                d.name,
                real.display(),
                copy.display()
            )
        })?;
        std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755))?;
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prog(program: &str, copy_to: Option<&str>) -> VarKind {
        VarKind::Program {
            program: program.into(),
            copy_to: copy_to.map(Into::into),
        }
    }

    fn def(name: &str, kind: VarKind) -> VarDef {
        VarDef {
            name: name.into(),
            kind,
            line: 1,
            col: 1,
        }
    }

    #[test]
    fn mutated_ports_are_deterministic_in_range_and_apart() {
        let none = BTreeSet::new();
        let a = mutated_port("relay-socat-forward", "PORT", &none);
        assert_eq!(a, mutated_port("relay-socat-forward", "PORT", &none));
        assert!(MUTATED_PORTS.contains(&a));
        assert_ne!(a, mutated_port("relay-socat-fork", "PORT", &none));
        let taken: BTreeSet<u16> = [a].into();
        let b = mutated_port("relay-socat-forward", "PORT", &taken);
        assert_ne!(a, b);
        assert!(MUTATED_PORTS.contains(&b));
        // The wrap at the end of the range.
        let all_but_one: BTreeSet<u16> = MUTATED_PORTS.filter(|p| *p != 20000).collect();
        assert_eq!(mutated_port("x", "P", &all_but_one), 20000);
    }

    #[test]
    fn fnv_is_the_published_function() {
        // FNV-1a 64 test vectors.
        assert_eq!(fnv1a(&[""]), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(&["a"]), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a(&["foobar"]), 0x8594_4171_f739_67e8);
        assert_ne!(fnv1a(&["ab", "c"]), fnv1a(&["a", "bc"]));
    }

    #[test]
    fn disguises_are_deterministic_hidden_and_distinct() {
        let wd = Path::new("/tmp/ewlab-1/relay-x@mutated");
        let none = BTreeSet::new();
        let a = disguise("relay-x", "RELAY", wd, &none);
        assert_eq!(a, disguise("relay-x", "RELAY", wd, &none));
        let name = a.file_name().unwrap().to_str().unwrap();
        assert!(DISGUISES.contains(&name), "{}", a.display());
        let dir = a.parent().unwrap();
        assert!(
            dir.file_name().unwrap().to_str().unwrap().starts_with('.'),
            "{} is not hidden",
            a.display()
        );
        assert!(dir.starts_with(wd) || dir.starts_with("/var/tmp") || dir.starts_with("/dev/shm"));
        let taken: BTreeSet<String> = [name.to_owned()].into();
        let b = disguise("relay-x", "RELAY", wd, &taken);
        assert_eq!(a.parent(), b.parent());
        assert_ne!(a.file_name(), b.file_name());
        // Over many scenarios every hideout and many names come up.
        let picks: Vec<PathBuf> = (0..60)
            .map(|i| disguise(&format!("s{i}"), "P", wd, &none))
            .collect();
        for h in ["/var/tmp/.ICE-unix-", "/dev/shm/.font-cache-"] {
            assert!(
                picks.iter().any(|p| p.display().to_string().starts_with(h)),
                "{h}"
            );
        }
        assert!(picks.iter().any(|p| p.starts_with(wd.join(".cache"))));
        let names: BTreeSet<_> = picks
            .iter()
            .map(|p| p.file_name().unwrap().to_owned())
            .collect();
        assert!(names.len() >= 6, "{names:?}");
    }

    #[test]
    fn hideouts_outside_the_scenario_directory() {
        let defs: Vec<VarDef> = (0..12)
            .map(|i| def(&format!("P{i}"), prog("socat", None)))
            .chain([def("PORT", VarKind::Port(1))])
            .collect();
        let h = hideouts("hideout-test", &defs);
        assert!(!h.is_empty() && h.len() < 12, "{h:?}");
        let m = values("hideout-test", &defs, Variant::Mutated, Path::new("/w"));
        for dir in &h {
            assert!(
                dir.starts_with("/var/tmp") || dir.starts_with("/dev/shm"),
                "{}",
                dir.display()
            );
            assert!(m
                .values()
                .any(|v| Path::new(v).parent() == Some(dir.as_path())));
        }
    }

    #[test]
    fn values_per_variant() {
        let defs = [
            def("PORT", VarKind::Port(8447)),
            def("BACK", VarKind::Port(8448)),
            def("RELAY", prog("socat", None)),
            def("PY", prog("/usr/bin/python3", None)),
            def("HID", prog("microsocks", Some("${DIR}/.local/udisksd"))),
        ];
        let wd = Path::new("/tmp/w");
        let plain = values("s", &defs, Variant::Plain, wd);
        assert_eq!(plain["PORT"], "8447");
        assert_eq!(plain["RELAY"], "socat");
        assert_eq!(plain["PY"], "/usr/bin/python3");
        assert_eq!(plain["HID"], "/tmp/w/.local/udisksd");
        let m = values("s", &defs, Variant::Mutated, wd);
        assert_eq!(m, values("s", &defs, Variant::Mutated, wd));
        let (p, b): (u16, u16) = (m["PORT"].parse().unwrap(), m["BACK"].parse().unwrap());
        assert!(MUTATED_PORTS.contains(&p) && MUTATED_PORTS.contains(&b) && p != b);
        assert!(m["RELAY"].starts_with('/') && m["PY"].starts_with('/'));
        assert_ne!(m["HID"], plain["HID"]);
        assert_ne!(
            Path::new(&m["RELAY"]).file_name(),
            Path::new(&m["PY"]).file_name()
        );
    }

    #[test]
    fn resolve_finds_and_copies_programs() {
        let wd = std::env::temp_dir().join(format!("ewlab-vars-test-{}", std::process::id()));
        std::fs::create_dir_all(&wd).unwrap();
        let defs = [
            def("SH", prog("sh", None)),
            def("PORT", VarKind::Port(1234)),
            def("HID", prog("sh", Some("${DIR}/.a/b/dbus-helper"))),
        ];
        let mut plain = resolve("vars-test", &defs, Variant::Plain, &wd).unwrap();
        assert!(
            plain.values["SH"].ends_with("/sh"),
            "{}",
            plain.values["SH"]
        );
        let hid = wd.join(".a/b/dbus-helper");
        assert_eq!(plain.values["HID"], hid.display().to_string());
        assert!(hid.is_file());
        plain.clean();
        assert!(!wd.join(".a").exists());
        let mut m = resolve("vars-test", &defs, Variant::Mutated, &wd).unwrap();
        let copy = PathBuf::from(&m.values["SH"]);
        let out = std::process::Command::new(&copy)
            .args(["-c", "echo $((6 * 7))"])
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "42");
        m.clean();
        assert!(!copy.exists());
        assert!(!copy.parent().unwrap().exists());
        let e = resolve(
            "vars-test",
            &[def("X", prog("no-such-program-ew", None))],
            Variant::Plain,
            &wd,
        )
        .unwrap_err();
        assert!(
            format!("{e:#}").contains("no no-such-program-ew on PATH"),
            "{e:#}"
        );
        std::fs::remove_dir_all(&wd).unwrap();
    }

    #[test]
    fn definitions_are_checked() {
        let raw = |port: Option<u16>, program: Option<&str>| RawVar {
            port,
            program: program.map(Into::into),
            copy_to: None,
            choice: None,
        };
        let copy = |to: &str| RawVar {
            port: None,
            program: Some("nc".into()),
            copy_to: Some(to.into()),
            choice: None,
        };
        assert!(define("P", copy("${DIR}/.x/y"), 1, 1, "f").is_ok());
        for bad in [
            "/usr/bin/y",
            "${DIR}/",
            "${DIR}/../y",
            "${DIR}/a//b",
            "${DIR}/${P}",
        ] {
            let e = format!("{:#}", define("P", copy(bad), 1, 1, "f").unwrap_err());
            assert!(e.contains("give a file path under ${DIR}/"), "{bad}: {e}");
        }
        let e = format!(
            "{:#}",
            define(
                "P",
                RawVar {
                    port: Some(1),
                    program: None,
                    copy_to: Some("${DIR}/x".into()),
                    choice: None,
                },
                1,
                1,
                "f"
            )
            .unwrap_err()
        );
        assert!(e.contains("copy_to goes with program"), "{e}");
        assert_eq!(
            define("PORT", raw(Some(8447), None), 3, 8, "f:3:8")
                .unwrap()
                .kind,
            VarKind::Port(8447)
        );
        for (name, r, want) in [
            ("port", raw(Some(1), None), "names are upper case"),
            ("DIR", raw(Some(1), None), "the lab already defines ${DIR}"),
            ("P", raw(Some(0), None), "port 0"),
            ("P", raw(None, None), "give one kind"),
            ("P", raw(Some(1), Some("socat")), "one kind per var"),
            ("P", raw(None, Some("bin/socat")), "absolute path"),
            ("P", raw(None, Some("")), "not a program"),
        ] {
            let e = format!("{:#}", define(name, r, 3, 8, "f.toml:3:8").unwrap_err());
            assert!(e.starts_with("f.toml:3:8: "), "{e}");
            assert!(e.contains(want), "{e} does not contain {want}");
        }
    }

    #[test]
    fn choices_are_the_first_plain_and_another_mutated() {
        let c = |v: &[&str]| VarKind::Choice(v.iter().map(|s| (*s).to_owned()).collect());
        let defs = [def("SHELL", c(&["python3 -c x", "perl -e x", "php -r x"]))];
        let wd = Path::new("/tmp/w");
        let plain = values("rev", &defs, Variant::Plain, wd);
        assert_eq!(plain["SHELL"], "python3 -c x");
        let mutated = values("rev", &defs, Variant::Mutated, wd);
        assert_ne!(mutated["SHELL"], "python3 -c x");
        assert_eq!(
            mutated,
            values("rev", &defs, Variant::Mutated, wd),
            "deterministic"
        );
        let choice = |v: Vec<&str>| RawVar {
            port: None,
            program: None,
            copy_to: None,
            choice: Some(v.into_iter().map(str::to_owned).collect()),
        };
        assert_eq!(
            define("S", choice(vec!["a", "b"]), 1, 1, "f").unwrap().kind,
            c(&["a", "b"])
        );
        for (r, want) in [
            (choice(vec!["a"]), "two or more"),
            (choice(vec!["a", " "]), "none empty"),
            (
                RawVar {
                    port: Some(1),
                    ..choice(vec!["a", "b"])
                },
                "choice alone",
            ),
        ] {
            let e = format!("{:#}", define("S", r, 2, 3, "f.toml:2:3").unwrap_err());
            assert!(e.contains(want), "{e} does not contain {want}");
        }
    }
}
