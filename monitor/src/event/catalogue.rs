//! The fields of every line the monitor writes, generated from the typed
//! records' JSON Schema: `monitor schema` prints the schema, and rules are
//! checked against the catalogue when they load, so a misspelt field is an
//! error naming the nearest known one instead of a rule that never matches.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::OnceLock,
};

use serde_json::{json, Map, Value};

use super::{alert::AlertRecord, Event, Kind};

/// Fields the rule engine computes from an event's own fields (see
/// `detect::fields::derived`), usable on every kind.
pub const COMPUTED: [&str; 10] = [
    "exe_name",
    "exe_dir",
    "applet",
    "cmdline",
    "exe_location",
    "argv0_mismatch",
    "program_path",
    "program_location",
    "renamed",
    "paths",
];

/// Fields the rule engine answers from what it learnt of the machine
/// (see `Engine::field`), usable on every kind.
pub const LEARNT: [&str; 3] = ["listener", "lineage", "login_session"];

/// Every field a rule may name besides the record's own.
fn derived() -> impl Iterator<Item = &'static str> {
    COMPUTED.into_iter().chain(LEARNT)
}

/// Fields of an ancestor inside an `ancestor` condition, and the derived
/// fields computed from its executable.
pub const ANCESTOR: [&str; 10] = [
    "pid",
    "depth",
    "exe",
    "listener",
    "reparented",
    "exe_name",
    "exe_dir",
    "applet",
    "exe_location",
    "renamed",
];

/// The JSON Schema (draft 2020-12) of one output line: an event of any
/// kind, or an alert.
pub fn line_schema() -> Value {
    let mut gen = schemars::SchemaGenerator::default();
    let event = gen.subschema_for::<Event>().to_value();
    let alert = gen.subschema_for::<AlertRecord>().to_value();
    let defs = gen.take_definitions(true);
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "edgewatch output line",
        "description": "One JSON object per line: an event (its `kind` names which) or an alert (`kind` = \"alert\").",
        "oneOf": [
            event,
            {
                "type": "object",
                "properties": { "kind": { "type": "string", "const": Kind::Alert.as_str() } },
                "required": ["kind"],
                "$ref": alert.get("$ref").cloned().unwrap_or(Value::Null),
            },
            {
                "type": "object",
                "description": "A match folded into an open alert that brought another command line, executable or peer: the alert's id and count so far, and the new match's process and evidence.",
                "properties": { "kind": { "type": "string", "const": Kind::AlertUpdate.as_str() } },
                "required": ["kind"],
                "$ref": alert.get("$ref").cloned().unwrap_or(Value::Null),
            }
        ],
        "$defs": defs,
    })
}

/// Field paths by event kind; an array index is written `#`, any key of
/// a map `*`.
pub struct Catalogue {
    by_kind: BTreeMap<String, BTreeSet<String>>,
}

impl Catalogue {
    /// The catalogue of this build's records, made once.
    pub fn get() -> &'static Catalogue {
        static CATALOGUE: OnceLock<Catalogue> = OnceLock::new();
        CATALOGUE.get_or_init(|| Catalogue::from_schema(&line_schema()))
    }

    fn from_schema(schema: &Value) -> Self {
        let empty = Map::new();
        let defs = schema
            .get("$defs")
            .and_then(Value::as_object)
            .unwrap_or(&empty);
        let mut variants = Vec::new();
        variants_of(schema, defs, &mut variants, 0);
        let mut by_kind: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for v in variants {
            let Some(kind) = v.pointer("/properties/kind/const").and_then(Value::as_str) else {
                continue;
            };
            let paths = by_kind.entry(kind.to_owned()).or_default();
            collect(v, defs, "", paths, 0);
        }
        Self { by_kind }
    }

    /// Every kind the catalogue knows.
    pub fn kinds(&self) -> impl Iterator<Item = &str> {
        self.by_kind.keys().map(String::as_str)
    }

    /// The paths of one kind (`#` for an array index).
    pub fn paths(&self, kind: &str) -> impl Iterator<Item = &str> {
        self.by_kind
            .get(kind)
            .into_iter()
            .flatten()
            .map(String::as_str)
    }

    fn has(&self, kind: &str, parts: &[&str]) -> bool {
        let Some(paths) = self.by_kind.get(kind) else {
            return false;
        };
        let norm: Vec<&str> = parts
            .iter()
            .map(|p| {
                if p.chars().all(|c| c.is_ascii_digit()) {
                    "#"
                } else {
                    p
                }
            })
            .collect();
        if paths.contains(&norm.join(".")) {
            return true;
        }
        // Below a map, any key.
        (1..=norm.len()).any(|i| {
            let mut p = norm[..i - 1].to_vec();
            p.push("*");
            paths.contains(&p.join("."))
        })
    }

    /// Checks a rule's field path against the kinds the rule applies to
    /// (`kinds` empty: any event kind but alerts); the error says what is
    /// wrong and names the nearest known field.
    pub fn check(&self, kinds: &[String], path: &str) -> Result<(), String> {
        if derived().any(|d| d == path) {
            return Ok(());
        }
        let parts: Vec<&str> = path.split('.').collect();
        let all: Vec<&str> = self
            .kinds()
            .filter(|k| *k != Kind::Alert.as_str() && *k != Kind::AlertUpdate.as_str())
            .collect();
        let wanted: Vec<&str> = if kinds.is_empty() {
            all.clone()
        } else {
            kinds.iter().map(String::as_str).collect()
        };
        if wanted.iter().any(|k| self.has(k, &parts)) {
            return Ok(());
        }
        let elsewhere: Vec<&str> = self
            .kinds()
            .filter(|k| !wanted.contains(k) && self.has(k, &parts))
            .collect();
        let of = if kinds.is_empty() {
            String::from("any event")
        } else {
            format!("{} events", kinds.join(", "))
        };
        if !elsewhere.is_empty() {
            return Err(format!(
                "no field {path:?} in {of}; {} events have it",
                elsewhere.join(", ")
            ));
        }
        let known: BTreeSet<String> = wanted
            .iter()
            .flat_map(|k| self.paths(k))
            .map(|p| p.replace('#', "0"))
            .chain(derived().map(str::to_owned))
            .collect();
        Err(format!(
            "unknown field {path:?} in {of}{}",
            crate::source::suggest(path, known.iter().map(String::as_str))
        ))
    }

    /// Checks a field of an `ancestor` condition.
    pub fn check_ancestor(path: &str) -> Result<(), String> {
        if ANCESTOR.contains(&path) {
            return Ok(());
        }
        Err(format!(
            "unknown ancestor field {path:?}: ancestors have {}{}",
            ANCESTOR.join(", "),
            crate::source::suggest(path, ANCESTOR)
        ))
    }
}

/// The alternatives of the line schema that carry a `kind` constant.
fn variants_of<'a>(
    s: &'a Value,
    defs: &'a Map<String, Value>,
    out: &mut Vec<&'a Value>,
    depth: u32,
) {
    if depth > 4 {
        return;
    }
    if s.pointer("/properties/kind/const").is_some() {
        out.push(s);
        return;
    }
    if let Some(target) = deref(s, defs) {
        variants_of(target, defs, out, depth + 1);
    }
    for key in ["oneOf", "anyOf"] {
        for v in s.get(key).and_then(Value::as_array).into_iter().flatten() {
            variants_of(v, defs, out, depth + 1);
        }
    }
}

fn deref<'a>(s: &Value, defs: &'a Map<String, Value>) -> Option<&'a Value> {
    s.get("$ref")
        .and_then(Value::as_str)
        .and_then(|r| r.strip_prefix("#/$defs/"))
        .and_then(|name| defs.get(name))
}

/// Adds every field path under schema `s` to `out`, each prefixed with
/// `prefix`.
fn collect(
    s: &Value,
    defs: &Map<String, Value>,
    prefix: &str,
    out: &mut BTreeSet<String>,
    depth: u32,
) {
    if depth > 16 {
        return;
    }
    if let Some(target) = deref(s, defs) {
        collect(target, defs, prefix, out, depth + 1);
    }
    for key in ["allOf", "anyOf", "oneOf"] {
        for v in s.get(key).and_then(Value::as_array).into_iter().flatten() {
            collect(v, defs, prefix, out, depth + 1);
        }
    }
    if let Some(props) = s.get("properties").and_then(Value::as_object) {
        for (name, sub) in props {
            let path = format!("{prefix}{name}");
            collect(sub, defs, &format!("{path}."), out, depth + 1);
            out.insert(path);
        }
    }
    if let Some(items) = s.get("items").filter(|i| i.is_object()) {
        let path = format!("{prefix}#");
        collect(items, defs, &format!("{path}."), out, depth + 1);
        out.insert(path);
    }
    if let Some(more) = s.get("additionalProperties").filter(|a| a.is_object()) {
        let path = format!("{prefix}*");
        collect(more, defs, &format!("{path}."), out, depth + 1);
        out.insert(path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_is_catalogued() {
        let c = Catalogue::get();
        for k in Kind::ALL {
            assert!(
                c.kinds().any(|x| x == k.as_str()),
                "{} is not in the catalogue",
                k.as_str()
            );
        }
        let exec: Vec<&str> = c.paths("exec").collect();
        for p in ["exe", "argv", "argv.#", "ancestry.#.exe", "stdio.#", "kind"] {
            assert!(exec.contains(&p), "exec lacks {p}: {exec:?}");
        }
        let relay: Vec<&str> = c.paths("relay").collect();
        for p in ["legs.#.side", "process.exe", "proxy.target", "via"] {
            assert!(relay.contains(&p), "relay lacks {p}: {relay:?}");
        }
    }

    #[test]
    fn checks_name_the_problem() {
        let c = Catalogue::get();
        let exec = vec!["exec".to_owned()];
        assert!(c.check(&exec, "argv.0").is_ok());
        assert!(c.check(&exec, "exe_name").is_ok());
        assert!(c.check(&exec, "ancestry.2.exe").is_ok());
        let e = c.check(&exec, "exe_nmae").expect_err("misspelt");
        assert!(e.contains("did you mean \"exe_name\""), "{e}");
        let e = c.check(&exec, "remote.port").expect_err("another kind's");
        assert!(
            e.contains("no field \"remote.port\" in exec events;"),
            "{e}"
        );
        assert!(e.contains("connect"), "{e}");
        assert!(c.check(&[], "remote.port").is_ok());
        assert!(c.check(&[], "nope").is_err());
        assert!(Catalogue::check_ancestor("exe").is_ok());
        let e = Catalogue::check_ancestor("exe_nam").expect_err("misspelt");
        assert!(e.contains("did you mean \"exe_name\""), "{e}");
    }
}

/// The README's event reference and the schema agree: every field its
/// tables name exists, and every field of every line is named there.
#[cfg(test)]
mod readme {
    use std::collections::BTreeSet;

    use super::*;

    fn events_section() -> &'static str {
        let readme = include_str!("../../../README.md");
        let start = readme.find("\n## Events").expect("README has ## Events");
        let end = readme[start..]
            .find("\n## Rules")
            .map_or(readme.len(), |e| start + e);
        &readme[start..end]
    }

    /// Backticked names in the first column of the section's tables.
    fn documented() -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        for line in events_section().lines() {
            let Some(first) = line.strip_prefix('|').and_then(|l| l.split('|').next()) else {
                continue;
            };
            for part in first.split('`').skip(1).step_by(2) {
                out.insert(part.to_owned());
            }
        }
        out
    }

    #[test]
    fn every_documented_field_exists() {
        let c = Catalogue::get();
        let all: BTreeSet<String> = c
            .kinds()
            .flat_map(|k| c.paths(k))
            .flat_map(|p| p.split('.').map(str::to_owned).collect::<Vec<_>>())
            .collect();
        // Tables of values (the `change` of a `config_change`) name
        // values, not fields.
        fn values(v: &Value, out: &mut BTreeSet<String>) {
            match v {
                Value::Object(m) => {
                    for (k, x) in m {
                        match (k.as_str(), x) {
                            ("const", Value::String(s)) => {
                                out.insert(s.clone());
                            }
                            ("enum", Value::Array(xs)) => {
                                out.extend(xs.iter().filter_map(Value::as_str).map(str::to_owned));
                            }
                            _ => values(x, out),
                        }
                    }
                }
                Value::Array(xs) => xs.iter().for_each(|x| values(x, out)),
                _ => {}
            }
        }
        let mut consts = BTreeSet::new();
        values(&line_schema(), &mut consts);
        for name in documented() {
            let known = all.contains(&name) || consts.contains(&name);
            assert!(known, "the README documents `{name}`, which no line has");
        }
    }

    #[test]
    fn every_field_is_documented() {
        let c = Catalogue::get();
        let text = events_section();
        let mut missing = BTreeSet::new();
        for kind in c.kinds() {
            for path in c.paths(kind) {
                for part in path.split('.').filter(|p| *p != "#" && *p != "*") {
                    if !text.contains(&format!("`{part}`")) {
                        missing.insert(format!("{kind}: {part}"));
                    }
                }
            }
        }
        assert!(
            missing.is_empty(),
            "fields the README's Events section does not name: {missing:#?}"
        );
    }
}
