//! The rule file format: parsing and validation with `file:line:col` errors.
//!
//! A rule file is TOML with one `[[rule]]` table per rule. See the README
//! section "Rules" for the format; `builtin.toml` is the embedded pack.

use std::{
    collections::{BTreeMap, HashMap},
    fmt,
    path::Path,
};

use regex::Regex;
use serde::Deserialize;
use toml::Spanned;

use crate::event::catalogue::Catalogue;
use crate::source::{line_col, Source};

pub use crate::event::alert::Severity;

/// A rule file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSpec {
    #[serde(default)]
    rule: Vec<Spanned<RuleSpec>>,
    /// Exceptions added to rules defined anywhere (the built-in pack too).
    #[serde(default)]
    exception: Vec<Spanned<ExceptionSpec>>,
    /// Named value lists, for `in = "name"` in any file.
    #[serde(default)]
    lists: BTreeMap<Spanned<String>, Vec<toml::Value>>,
}

/// `[[exception]]`: events matching all of `match` raise nothing for
/// `rule`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExceptionSpec {
    rule: Spanned<String>,
    /// Why the exception is there, for the next reader.
    #[serde(default)]
    #[allow(dead_code)]
    comment: String,
    #[serde(rename = "match")]
    matches: Vec<CondSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleSpec {
    id: Spanned<String>,
    title: String,
    #[serde(default)]
    description: String,
    severity: Severity,
    #[serde(default)]
    attack: Vec<Spanned<String>>,
    /// Event kinds the rule applies to (all kinds when empty).
    #[serde(default)]
    kinds: Vec<String>,
    /// Conditions that must all hold.
    #[serde(default, rename = "match")]
    matches: Vec<CondSpec>,
    /// Exceptions: an event matching any of these raises nothing.
    #[serde(default)]
    except: Vec<CondSpec>,
    /// Other severities, for matches that also satisfy these conditions
    /// (the first that holds wins).
    #[serde(default)]
    severity_if: Vec<SeverityIfSpec>,
    /// A sequence within one process lineage instead of a single event.
    sequence: Option<SequenceSpec>,
    /// Alert only when matches bring enough distinct values within a
    /// window, per lineage or process (see [`ThresholdSpec`]).
    threshold: Option<Spanned<ThresholdSpec>>,
    #[serde(default = "default_dedup")]
    dedup_secs: u64,
    rate_limit: Option<RateSpec>,
    #[serde(default = "yes")]
    enabled: bool,
    /// The id of a rule (a built-in one) this one replaces.
    overrides: Option<Spanned<String>>,
}

fn default_dedup() -> u64 {
    60
}

fn yes() -> bool {
    true
}

/// `[[rule.severity_if]]`: the severity of a match that also satisfies
/// all of `match`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SeverityIfSpec {
    severity: Severity,
    #[serde(rename = "match")]
    matches: Vec<CondSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SequenceSpec {
    within_secs: u64,
    /// Whose lineage later steps must come from: the first step's
    /// `process` (it and its descendants) or its `parent` (the first
    /// step's siblings too).
    #[serde(default)]
    by: SequenceBy,
    steps: Vec<StepSpec>,
}

/// See [`SequenceSpec::by`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SequenceBy {
    #[default]
    Process,
    Parent,
}

/// `[rule.threshold]`: the rule raises an alert once the events matching
/// it bring `count` distinct values of `distinct` within `within_secs`, in
/// one lineage (or one process), instead of at every match.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ThresholdSpec {
    within_secs: Spanned<u64>,
    #[serde(default)]
    by: ThresholdBy,
    /// A field, or a list of fields whose values together make one value.
    distinct: Spanned<OneOrMany>,
    count: Spanned<u64>,
    /// Named classes of matches: a match counts only in the first class
    /// whose conditions it meets, and not at all when it meets none.
    #[serde(default)]
    categories: Vec<CategorySpec>,
    /// How many classes the distinct values must span.
    min_categories: Option<Spanned<u64>>,
    /// What share of the distinct values must also meet conditions.
    share: Option<ShareSpec>,
}

/// Whose matches a threshold counts together.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ThresholdBy {
    /// The lineage alerts are folded by (see the `lineage` field).
    #[default]
    Lineage,
    /// The event's own process.
    Process,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CategorySpec {
    name: Spanned<String>,
    #[serde(rename = "match")]
    matches: Vec<CondSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ShareSpec {
    #[serde(rename = "match")]
    matches: Vec<CondSpec>,
    at_least: Spanned<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StepSpec {
    #[serde(default)]
    kinds: Vec<String>,
    #[serde(default, rename = "match")]
    matches: Vec<CondSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RateSpec {
    max: u32,
    per_secs: u64,
}

/// One condition as written: a `field` with one operator, or a
/// combinator (`any`, `all`, `not`, `ancestor`).
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct CondSpec {
    field: Option<Spanned<String>>,
    equals: Option<toml::Value>,
    #[serde(rename = "in")]
    in_: Option<Spanned<InSpec>>,
    prefix: Option<OneOrMany>,
    suffix: Option<OneOrMany>,
    contains: Option<OneOrMany>,
    glob: Option<Spanned<OneOrMany>>,
    regex: Option<Spanned<String>>,
    gt: Option<f64>,
    lt: Option<f64>,
    exists: Option<bool>,
    any: Option<Vec<CondSpec>>,
    all: Option<Vec<CondSpec>>,
    not: Option<Box<CondSpec>>,
    ancestor: Option<Vec<CondSpec>>,
}

/// The values of `in`: written out, or the name of a `[lists]` entry.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum InSpec {
    Values(Vec<toml::Value>),
    List(String),
}

#[derive(Debug, Deserialize, Clone)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        }
    }
}

/// A compiled condition.
#[derive(Debug, Clone)]
pub enum Cond {
    Field {
        path: FieldPath,
        /// The path resolved to the accessor that reads it.
        field: super::record::Field,
        op: Op,
    },
    Any(Vec<Cond>),
    All(Vec<Cond>),
    Not(Box<Cond>),
    /// Some ancestor satisfies all of these.
    Ancestor(Vec<Cond>),
}

/// A dotted field path; numeric parts index arrays.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldPath(pub Vec<String>);

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.join("."))
    }
}

#[derive(Debug, Clone)]
pub enum Op {
    Equals(serde_json::Value),
    In(ValueSet),
    Prefix(Vec<String>),
    Suffix(Vec<String>),
    Contains(Vec<String>),
    Regex(Regex),
    Gt(f64),
    Lt(f64),
    Exists(bool),
}

/// The values of an `in` condition: strings in a hash set, numbers
/// compared as numbers, anything else by equality.
#[derive(Debug, Clone, Default)]
pub struct ValueSet {
    /// A fast hash: these lookups run for every event a rule sees.
    strings: foldhash::HashSet<String>,
    numbers: Vec<f64>,
    others: Vec<serde_json::Value>,
}

impl ValueSet {
    pub fn new(values: impl IntoIterator<Item = serde_json::Value>) -> Self {
        let mut set = Self::default();
        for v in values {
            match v {
                serde_json::Value::String(s) => {
                    set.strings.insert(s);
                }
                serde_json::Value::Number(n) => set.numbers.extend(n.as_f64()),
                other => set.others.push(other),
            }
        }
        set
    }

    pub fn contains_str(&self, s: &str) -> bool {
        self.strings.contains(s)
    }

    pub fn contains_number(&self, n: f64) -> bool {
        self.numbers.contains(&n)
    }

    /// Whether some values are neither strings nor numbers.
    pub fn has_others(&self) -> bool {
        !self.others.is_empty()
    }

    /// Whether `v` equals one of the values (numbers by value).
    pub fn contains(&self, v: &serde_json::Value) -> bool {
        match v {
            serde_json::Value::String(s) => self.strings.contains(s.as_str()),
            serde_json::Value::Number(n) => n.as_f64().is_some_and(|x| self.numbers.contains(&x)),
            other => self.others.contains(other),
        }
    }

    pub fn len(&self) -> usize {
        self.strings.len() + self.numbers.len() + self.others.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A compiled rule.
#[derive(Debug, Clone)]
pub struct Rule {
    pub id: String,
    pub title: String,
    pub description: String,
    pub severity: Severity,
    pub attack: Vec<String>,
    pub kinds: Vec<String>,
    pub matches: Vec<Cond>,
    pub except: Vec<Cond>,
    /// Severities of matches that satisfy more conditions, in order.
    pub severity_if: Vec<(Severity, Vec<Cond>)>,
    pub sequence: Option<Sequence>,
    pub threshold: Option<Threshold>,
    pub dedup_secs: u64,
    pub rate_limit: Option<(u32, u64)>,
    /// Where the rule was defined, `file:line`.
    pub origin: String,
}

#[derive(Debug, Clone)]
pub struct Sequence {
    pub within_secs: u64,
    pub by: SequenceBy,
    pub steps: Vec<Step>,
}

/// A compiled `[rule.threshold]`.
#[derive(Debug, Clone)]
pub struct Threshold {
    pub within_secs: u64,
    pub by: ThresholdBy,
    /// The fields whose values, together, make one distinct value.
    pub distinct: Vec<(FieldPath, super::record::Field)>,
    /// Distinct values needed (at most [`THRESHOLD_COUNT_MAX`]).
    pub count: usize,
    pub categories: Vec<Category>,
    /// Categories the counted values must span (0: no condition).
    pub min_categories: usize,
    pub share: Option<Share>,
}

/// Most distinct values a threshold may ask for: the engine keeps that
/// many per lineage or process it tracks.
pub const THRESHOLD_COUNT_MAX: u64 = 1024;

#[derive(Debug, Clone)]
pub struct Category {
    pub name: String,
    pub matches: Vec<Cond>,
}

/// At least `at_least` (0 to 1) of the counted values meet `matches`
/// (at the value's latest match).
#[derive(Debug, Clone)]
pub struct Share {
    pub matches: Vec<Cond>,
    pub at_least: f64,
}

#[derive(Debug, Clone)]
pub struct Step {
    pub kinds: Vec<String>,
    pub matches: Vec<Cond>,
}

/// A rule file or directory that is invalid.
pub type RuleError = crate::source::FileError;

/// Event kinds a rule may name: every kind the monitor writes.
fn kind_names() -> impl Iterator<Item = &'static str> {
    crate::event::Kind::ALL
        .into_iter()
        .map(crate::event::Kind::as_str)
}

/// Named lists by name, as JSON values, with where each was defined.
type Lists = HashMap<String, (Vec<serde_json::Value>, String)>;

#[derive(Clone, Copy)]
struct Ctx<'a> {
    src: &'a Source<'a>,
    /// Offset of the enclosing rule, for errors without a finer span.
    rule_at: usize,
    lists: &'a Lists,
    /// The event kinds the conditions apply to (empty: any).
    kinds: &'a [String],
    /// Inside an `ancestor` condition: fields are an ancestor's.
    ancestor: bool,
}

impl Ctx<'_> {
    fn err(&self, at: usize, message: impl Into<String>) -> RuleError {
        self.src.error(at, &message.into())
    }
}

fn json(v: toml::Value) -> serde_json::Value {
    serde_json::to_value(v).unwrap_or(serde_json::Value::Null)
}

/// Translates a shell glob (`*`, `?`) to an anchored regex.
fn glob_regex(glob: &str) -> String {
    let mut re = String::from("^");
    for c in glob.chars() {
        match c {
            '*' => re.push_str(".*"),
            '?' => re.push('.'),
            c => re.push_str(&regex::escape(&c.to_string())),
        }
    }
    re.push('$');
    re
}

fn compile_cond(spec: CondSpec, ctx: &Ctx<'_>) -> Result<Cond, RuleError> {
    let combinators = [
        spec.any.is_some(),
        spec.all.is_some(),
        spec.not.is_some(),
        spec.ancestor.is_some(),
    ]
    .iter()
    .filter(|b| **b)
    .count();
    let field_at = spec.field.as_ref().map_or(ctx.rule_at, |f| f.span().start);
    if combinators > 0 {
        if combinators > 1 || spec.field.is_some() {
            return Err(ctx.err(
                field_at,
                "a condition is either one field test or one of any, all, not, ancestor",
            ));
        }
        let list = |l: Vec<CondSpec>, ctx: &Ctx<'_>| {
            l.into_iter()
                .map(|c| compile_cond(c, ctx))
                .collect::<Result<Vec<_>, _>>()
        };
        let up = Ctx {
            ancestor: true,
            ..*ctx
        };
        return Ok(if let Some(l) = spec.any {
            Cond::Any(list(l, ctx)?)
        } else if let Some(l) = spec.all {
            Cond::All(list(l, ctx)?)
        } else if let Some(n) = spec.not {
            Cond::Not(Box::new(compile_cond(*n, ctx)?))
        } else {
            Cond::Ancestor(list(spec.ancestor.unwrap_or_default(), &up)?)
        });
    }
    let Some(field) = spec.field else {
        return Err(ctx.err(
            ctx.rule_at,
            "a condition needs a field (or any, all, not, ancestor)",
        ));
    };
    let mut ops = Vec::new();
    if let Some(v) = spec.equals {
        ops.push(Op::Equals(json(v)));
    }
    if let Some(v) = spec.in_ {
        let at = v.span().start;
        match v.into_inner() {
            InSpec::Values(v) => ops.push(Op::In(ValueSet::new(v.into_iter().map(json)))),
            InSpec::List(name) => match ctx.lists.get(&name) {
                Some((values, _)) => ops.push(Op::In(ValueSet::new(values.iter().cloned()))),
                None => {
                    let known: Vec<&str> = ctx.lists.keys().map(String::as_str).collect();
                    return Err(ctx.err(
                        at,
                        format!("no list named {name:?}{}", suggest(&name, known)),
                    ));
                }
            },
        }
    }
    if let Some(v) = spec.prefix {
        ops.push(Op::Prefix(v.into_vec()));
    }
    if let Some(v) = spec.suffix {
        ops.push(Op::Suffix(v.into_vec()));
    }
    if let Some(v) = spec.contains {
        ops.push(Op::Contains(v.into_vec()));
    }
    if let Some(g) = spec.glob {
        let at = g.span().start;
        let pattern = g
            .into_inner()
            .into_vec()
            .iter()
            .map(|g| glob_regex(g))
            .collect::<Vec<_>>()
            .join("|");
        let re = Regex::new(&pattern).map_err(|e| ctx.err(at, format!("bad glob: {e}")))?;
        ops.push(Op::Regex(re));
    }
    if let Some(r) = spec.regex {
        let at = r.span().start;
        let re = Regex::new(r.get_ref()).map_err(|e| {
            ctx.err(
                at,
                format!("bad regex: {}", e.to_string().replace('\n', " ")),
            )
        })?;
        ops.push(Op::Regex(re));
    }
    if let Some(v) = spec.gt {
        ops.push(Op::Gt(v));
    }
    if let Some(v) = spec.lt {
        ops.push(Op::Lt(v));
    }
    if let Some(v) = spec.exists {
        ops.push(Op::Exists(v));
    }
    if ops.len() != 1 {
        return Err(ctx.err(
            field.span().start,
            format!(
                "field {:?} needs exactly one operator (equals, in, prefix, suffix, contains, glob, regex, gt, lt, exists), found {}",
                field.get_ref(),
                ops.len()
            ),
        ));
    }
    let (path, resolved) = compile_field(field.get_ref(), field.span().start, ctx)?;
    Ok(Cond::Field {
        field: resolved,
        path,
        op: ops.remove(0),
    })
}

/// Checks a field path written at `at` against the catalogue of the
/// context's kinds and resolves it to its accessor.
fn compile_field(
    path: &str,
    at: usize,
    ctx: &Ctx<'_>,
) -> Result<(FieldPath, super::record::Field), RuleError> {
    if path.is_empty() || path.split('.').any(str::is_empty) {
        return Err(ctx.err(at, format!("bad field path {path:?}")));
    }
    let known = if ctx.ancestor {
        Catalogue::check_ancestor(path)
    } else {
        Catalogue::get().check(ctx.kinds, path)
    };
    known.map_err(|m| ctx.err(at, m))?;
    let path: Vec<String> = path.split('.').map(str::to_owned).collect();
    let field = super::record::Field::resolve(&path);
    Ok((FieldPath(path), field))
}

/// Compiles a `[rule.threshold]` of rule `id`.
fn compile_threshold(
    id: &str,
    spec: Spanned<ThresholdSpec>,
    ctx: &Ctx<'_>,
) -> Result<Threshold, RuleError> {
    let spec = spec.into_inner();
    let err = |at: usize, m: String| ctx.err(at, format!("rule {id}: threshold {m}"));
    let within_secs = *spec.within_secs.get_ref();
    if within_secs == 0 {
        return Err(err(
            spec.within_secs.span().start,
            "within_secs must be at least 1".into(),
        ));
    }
    let count = *spec.count.get_ref();
    if !(1..=THRESHOLD_COUNT_MAX).contains(&count) {
        return Err(err(
            spec.count.span().start,
            format!("count must be 1 to {THRESHOLD_COUNT_MAX}, not {count}"),
        ));
    }
    let distinct_at = spec.distinct.span().start;
    let fields = spec.distinct.into_inner().into_vec();
    if fields.is_empty() {
        return Err(err(
            distinct_at,
            "distinct needs a field (or a list of fields)".into(),
        ));
    }
    let distinct = fields
        .iter()
        .map(|f| {
            compile_field(f, distinct_at, ctx)
                .map_err(|e| err(distinct_at, format!("distinct: {}", message_of(&e))))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let compile_all = |l: Vec<CondSpec>| {
        l.into_iter()
            .map(|c| compile_cond(c, ctx))
            .collect::<Result<Vec<_>, _>>()
    };
    let mut categories: Vec<Category> = Vec::new();
    for c in spec.categories {
        let name_at = c.name.span().start;
        let name = c.name.into_inner();
        if name.is_empty() {
            return Err(err(name_at, "category needs a name".into()));
        }
        if categories.iter().any(|k| k.name == name) {
            return Err(err(name_at, format!("category {name:?} is defined twice")));
        }
        if c.matches.is_empty() {
            return Err(err(
                name_at,
                format!("category {name:?} needs match conditions"),
            ));
        }
        categories.push(Category {
            name,
            matches: compile_all(c.matches)?,
        });
    }
    let min_categories = match spec.min_categories {
        None => 0,
        Some(m) => {
            let n = *m.get_ref();
            if categories.is_empty() {
                return Err(err(
                    m.span().start,
                    "min_categories needs categories to count".into(),
                ));
            }
            if n == 0 || n > categories.len() as u64 || n > count {
                return Err(err(
                    m.span().start,
                    format!(
                        "min_categories must be 1 to {} (the categories defined, and no more than count)",
                        (categories.len() as u64).min(count)
                    ),
                ));
            }
            n as usize
        }
    };
    let share = match spec.share {
        None => None,
        Some(s) => {
            let f = *s.at_least.get_ref();
            if !(f > 0.0 && f <= 1.0) {
                return Err(err(
                    s.at_least.span().start,
                    format!("share at_least must be above 0 and at most 1, not {f}"),
                ));
            }
            if s.matches.is_empty() {
                return Err(err(
                    s.at_least.span().start,
                    "share needs match conditions".into(),
                ));
            }
            Some(Share {
                matches: compile_all(s.matches)?,
                at_least: f,
            })
        }
    };
    Ok(Threshold {
        within_secs,
        by: spec.by,
        distinct,
        count: count as usize,
        categories,
        min_categories,
        share,
    })
}

/// The message of an error, without its place (to put it in another).
fn message_of(e: &RuleError) -> String {
    match e {
        RuleError::Invalid { message, .. } | RuleError::Content { message, .. } => message.clone(),
        other => other.to_string(),
    }
}

fn check_kinds(kinds: &[String], ctx: &Ctx<'_>) -> Result<(), RuleError> {
    for k in kinds {
        if !kind_names().any(|n| n == k.as_str()) {
            return Err(ctx.err(
                ctx.rule_at,
                format!(
                    "unknown event kind {k:?}; kinds are: {}",
                    kind_names().collect::<Vec<_>>().join(", ")
                ),
            ));
        }
    }
    Ok(())
}

/// A loaded rule pack: the rules to run, and how many rules each source
/// defined (the built-in pack's name first, then each file).
pub struct Pack {
    pub rules: Vec<Rule>,
    pub per_file: Vec<(String, usize)>,
}

/// A place in a source, for errors found once every source is parsed.
#[derive(Debug, Clone)]
struct Place {
    path: String,
    line: usize,
    col: usize,
}

impl Place {
    fn at(src: &Source<'_>, offset: usize) -> Self {
        let (line, col) = line_col(src.text, offset);
        Self {
            path: src.name.to_owned(),
            line,
            col,
        }
    }

    fn error(&self, message: String) -> RuleError {
        RuleError::Invalid {
            path: self.path.clone(),
            line: self.line,
            col: self.col,
            message,
        }
    }
}

impl fmt::Display for Place {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.path, self.line, self.col)
    }
}

/// A rule as one source defines it, before the pack is put together.
struct Defined {
    rule: Rule,
    enabled: bool,
    /// Where its id is written.
    id_at: Place,
    /// The rule it replaces, and where that is written.
    overrides: Option<(String, Place)>,
}

/// An `[[exception]]`: its rule id, its conditions as one, where it is.
struct Exception {
    rule: String,
    cond: Cond,
    at: Place,
}

/// One source compiled.
struct Unit {
    defined: Vec<Defined>,
    exceptions: Vec<Exception>,
}

pub use crate::source::suggest;

fn parse_spec(src: &Source<'_>) -> Result<FileSpec, RuleError> {
    toml::from_str(src.text).map_err(|e| src.error(e.span().map_or(0, |s| s.start), e.message()))
}

/// Adds a source's `[lists]` to `lists`; a name defined twice is an error.
fn collect_lists(
    src: &Source<'_>,
    spec: &mut FileSpec,
    lists: &mut Lists,
) -> Result<(), RuleError> {
    for (name, values) in std::mem::take(&mut spec.lists) {
        let at = Place::at(src, name.span().start);
        let name = name.into_inner();
        if let Some((_, first)) = lists.get(&name) {
            return Err(at.error(format!("list {name:?} is already defined at {first}")));
        }
        lists.insert(
            name,
            (values.into_iter().map(json).collect(), at.to_string()),
        );
    }
    Ok(())
}

/// Compiles one source's rules and exceptions.
fn compile_unit(src: &Source<'_>, file: FileSpec, lists: &Lists) -> Result<Unit, RuleError> {
    let mut defined = Vec::new();
    for spanned in file.rule {
        let rule_at = spanned.span().start;
        let spec = spanned.into_inner();
        let kinds = spec.kinds.clone();
        let ctx = Ctx {
            src,
            rule_at,
            lists,
            kinds: &kinds,
            ancestor: false,
        };
        let id_at = spec.id.span().start;
        let id = spec.id.into_inner();
        if id.is_empty()
            || !id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
        {
            return Err(ctx.err(
                id_at,
                format!("rule id {id:?} must be letters, digits, '-', '_' or '.'"),
            ));
        }
        for t in &spec.attack {
            let ok = t.get_ref().len() >= 5
                && t.get_ref().starts_with('T')
                && t.get_ref()[1..]
                    .split('.')
                    .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()));
            if !ok {
                return Err(ctx.err(
                    t.span().start,
                    format!(
                        "{:?} is not an ATT&CK technique id such as T1090.001",
                        t.get_ref()
                    ),
                ));
            }
        }
        check_kinds(&spec.kinds, &ctx)?;
        let compile_all = |l: Vec<CondSpec>| {
            l.into_iter()
                .map(|c| compile_cond(c, &ctx))
                .collect::<Result<Vec<_>, _>>()
        };
        let sequence = match spec.sequence {
            None => None,
            Some(seq) => {
                if seq.steps.len() < 2 {
                    return Err(ctx.err(rule_at, "a sequence needs at least two steps"));
                }
                let mut steps = Vec::new();
                for s in seq.steps {
                    check_kinds(&s.kinds, &ctx)?;
                    let step = Ctx {
                        kinds: &s.kinds,
                        ..ctx
                    };
                    let matches = s
                        .matches
                        .into_iter()
                        .map(|c| compile_cond(c, &step))
                        .collect::<Result<Vec<_>, _>>()?;
                    steps.push(Step {
                        kinds: s.kinds,
                        matches,
                    });
                }
                Some(Sequence {
                    within_secs: seq.within_secs,
                    by: seq.by,
                    steps,
                })
            }
        };
        let threshold = match spec.threshold {
            Some(t) if sequence.is_some() => {
                return Err(ctx.err(
                    t.span().start,
                    format!("rule {id}: a rule has a sequence or a threshold, not both"),
                ));
            }
            Some(t) => Some(compile_threshold(&id, t, &ctx)?),
            None => None,
        };
        let matches = compile_all(spec.matches)?;
        if sequence.is_none() && matches.is_empty() && spec.kinds.is_empty() {
            return Err(ctx.err(
                rule_at,
                format!(
                    "rule {id} matches every event: give it kinds, match conditions or a sequence"
                ),
            ));
        }
        let (line, _) = line_col(src.text, rule_at);
        let overrides = spec
            .overrides
            .map(|o| (o.get_ref().clone(), Place::at(src, o.span().start)));
        defined.push(Defined {
            rule: Rule {
                id,
                title: spec.title,
                description: spec.description,
                severity: spec.severity,
                attack: spec.attack.into_iter().map(Spanned::into_inner).collect(),
                kinds: spec.kinds,
                matches,
                except: compile_all(spec.except)?,
                severity_if: spec
                    .severity_if
                    .into_iter()
                    .map(|s| Ok((s.severity, compile_all(s.matches)?)))
                    .collect::<Result<Vec<_>, RuleError>>()?,
                sequence,
                threshold,
                dedup_secs: spec.dedup_secs,
                rate_limit: spec.rate_limit.map(|r| (r.max, r.per_secs)),
                origin: format!("{}:{line}", src.name),
            },
            enabled: spec.enabled,
            id_at: Place::at(src, id_at),
            overrides,
        });
    }
    let mut exceptions = Vec::new();
    for spanned in file.exception {
        let at = spanned.span().start;
        let e = spanned.into_inner();
        let ctx = Ctx {
            src,
            rule_at: at,
            lists,
            kinds: &[],
            ancestor: false,
        };
        if e.matches.is_empty() {
            return Err(ctx.err(
                at,
                "an exception needs match conditions (an exception matching every event would turn the rule off: use detect.disabled_rules)",
            ));
        }
        let conds = e
            .matches
            .into_iter()
            .map(|c| compile_cond(c, &ctx))
            .collect::<Result<Vec<_>, _>>()?;
        exceptions.push(Exception {
            rule: e.rule.get_ref().clone(),
            cond: Cond::All(conds),
            at: Place::at(src, e.rule.span().start),
        });
    }
    Ok(Unit {
        defined,
        exceptions,
    })
}

/// Puts the pack together: overrides replace the rules they name, a
/// second rule with an id already defined is an error, disabled rules go,
/// exceptions join their rules. Returns the rules and how many each
/// source defined.
fn resolve(units: Vec<(String, Unit)>, disabled: &[String]) -> Result<Pack, RuleError> {
    let mut ids: HashMap<String, Place> = HashMap::new();
    let mut overridden: HashMap<String, Place> = HashMap::new();
    let mut active: Vec<Rule> = Vec::new();
    let mut counts = Vec::new();
    let mut exceptions = Vec::new();
    for (name, unit) in units {
        counts.push((name, unit.defined.len()));
        exceptions.extend(unit.exceptions);
        for d in unit.defined {
            let id = d.rule.id.clone();
            if let Some((target, at)) = &d.overrides {
                if !ids.contains_key(target) {
                    return Err(at.error(format!(
                        "overrides {target:?}, which no rule loaded before this one defines{}",
                        suggest(target, ids.keys().map(String::as_str))
                    )));
                }
                if let Some(first) = overridden.get(target) {
                    return Err(at.error(format!("{target} is already overridden at {first}")));
                }
                overridden.insert(target.clone(), at.clone());
                active.retain(|r| &r.id != target);
                if &id != target {
                    if let Some(prev) = ids.get(&id) {
                        return Err(d
                            .id_at
                            .error(format!("rule id {id} is already defined at {prev}")));
                    }
                }
            } else if let Some(prev) = ids.get(&id) {
                return Err(d.id_at.error(format!(
                    "rule id {id} is already defined at {prev}; to replace that rule write overrides = \"{id}\" in this one, to turn it off list it in detect.disabled_rules"
                )));
            }
            ids.insert(id, d.id_at.clone());
            if d.enabled {
                active.push(d.rule);
            }
        }
    }
    for id in disabled {
        if !ids.contains_key(id) {
            return Err(RuleError::Content {
                path: "detect.disabled_rules".to_owned(),
                message: format!(
                    "no rule has the id {id:?}{}",
                    suggest(id, ids.keys().map(String::as_str))
                ),
            });
        }
    }
    active.retain(|r| !disabled.contains(&r.id));
    for e in exceptions {
        match active.iter_mut().find(|r| r.id == e.rule) {
            Some(r) => r.except.push(e.cond),
            // Its rule is turned off: nothing to except.
            None if ids.contains_key(&e.rule) => {}
            None => {
                return Err(e.at.error(format!(
                    "an exception for {:?}, which no rule defines{}",
                    e.rule,
                    suggest(&e.rule, ids.keys().map(String::as_str))
                )))
            }
        }
    }
    Ok(Pack {
        rules: active,
        per_file: counts,
    })
}

/// Compiles sources as one pack, in order.
fn load_sources(sources: &[(String, String)], disabled: &[String]) -> Result<Pack, RuleError> {
    let mut specs = Vec::new();
    let mut lists = Lists::new();
    for (name, text) in sources {
        let src = Source { name, text };
        let mut spec = parse_spec(&src)?;
        collect_lists(&src, &mut spec, &mut lists)?;
        specs.push(spec);
    }
    let mut units = Vec::new();
    for ((name, text), spec) in sources.iter().zip(specs) {
        let src = Source { name, text };
        units.push((name.clone(), compile_unit(&src, spec, &lists)?));
    }
    resolve(units, disabled)
}

/// Parses and validates the rules in one source, on its own: the rules it
/// leaves enabled.
pub fn parse(src: &Source<'_>) -> Result<Vec<Rule>, RuleError> {
    let sources = [(src.name.to_owned(), src.text.to_owned())];
    load_sources(&sources, &[]).map(|p| p.rules)
}

/// The embedded built-in rule pack.
pub const BUILTIN: &str = include_str!("builtin.toml");

/// Name the built-in pack goes by in errors and rule origins.
pub const BUILTIN_NAME: &str = "<builtin rules>";

/// Loads the built-in pack (unless disabled) and every `*.toml` file in
/// the given paths, as one pack (see [`load_pack`]).
pub fn load(builtin: bool, dirs: &[std::path::PathBuf]) -> Result<Vec<Rule>, RuleError> {
    load_pack(builtin, dirs, &[]).map(|p| p.rules)
}

/// Loads the built-in pack (unless `builtin` is false) and every rule file
/// of `paths` (files, or directories of `*.toml` files, sorted) as one
/// pack: named lists are shared; a rule with `overrides` replaces the rule
/// it names; any other rule whose id is already defined is an error;
/// `[[exception]]` entries join their rules; `disabled` rule ids are left
/// out (each must name a rule). Returns the rules and how many rules each
/// file defines.
pub fn load_pack(
    builtin: bool,
    paths: &[std::path::PathBuf],
    disabled: &[String],
) -> Result<Pack, RuleError> {
    let mut sources = Vec::new();
    if builtin {
        sources.push((BUILTIN_NAME.to_owned(), BUILTIN.to_owned()));
    }
    for path in paths {
        sources.extend(read_path(path)?);
    }
    load_sources(&sources, disabled)
}

/// The text of one rule file, or of every `*.toml` file of a directory
/// (sorted), with their names.
fn read_path(path: &Path) -> Result<Vec<(String, String)>, RuleError> {
    let read_err = |source| RuleError::Read {
        path: path.display().to_string(),
        source,
    };
    let files = if path.is_dir() {
        let mut files: Vec<_> = std::fs::read_dir(path)
            .map_err(read_err)?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "toml"))
            .collect();
        files.sort();
        files
    } else {
        vec![path.to_path_buf()]
    };
    files
        .into_iter()
        .map(|file| {
            let name = file.display().to_string();
            std::fs::read_to_string(&file)
                .map(|text| (name.clone(), text))
                .map_err(|source| RuleError::Read { path: name, source })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn parse_str(text: &str) -> Result<Vec<Rule>, RuleError> {
        parse(&Source {
            name: "r.toml",
            text,
        })
    }

    #[test]
    fn builtin_pack_is_valid() {
        let rules = load(true, &[]).expect("builtin rules parse");
        assert!(rules.len() >= 10, "{} rules", rules.len());
        assert!(
            rules.iter().all(|r| !r.attack.is_empty()),
            "every rule has ATT&CK ids"
        );
    }

    #[test]
    fn errors_point_at_the_problem() {
        let err = parse_str("[[rule]]\nid = \"x\"\ntitle = \"t\"\nseverity = \"loud\"\n")
            .expect_err("bad severity");
        assert!(err.to_string().starts_with("r.toml:4:"), "{err}");
        let err = parse_str(
            "[[rule]]\nid = \"x\"\ntitle = \"t\"\nseverity = \"low\"\nmatch = [{ field = \"exe\", regex = \"(\" }]\n",
        )
        .expect_err("bad regex");
        assert!(
            err.to_string().starts_with("r.toml:5:35: bad regex"),
            "{err}"
        );
        let err = parse_str(
            "[[rule]]\nid = \"x\"\ntitle = \"t\"\nseverity = \"low\"\nattack = [\"T10\"]\nkinds = [\"exec\"]\n",
        )
        .expect_err("bad technique");
        assert!(err.to_string().starts_with("r.toml:5:11: "), "{err}");
        let err = parse_str(
            "[[rule]]\nid = \"x\"\ntitle = \"t\"\nseverity = \"low\"\nmatch = [{ field = \"exe\", equals = \"a\", prefix = \"b\" }]\n",
        )
        .expect_err("two ops");
        assert!(err.to_string().contains("exactly one operator"), "{err}");
        let err = parse_str("[[rule]]\nid = \"x\"\ntitle = \"t\"\nseverity = \"low\"\nbogus = 1\n")
            .expect_err("unknown key");
        assert!(err.to_string().starts_with("r.toml:5:1: "), "{err}");
    }

    #[test]
    fn duplicate_ids_are_rejected() {
        let dir = std::env::temp_dir().join(format!("edgewatch-rules-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        std::fs::write(
            dir.join("a.toml"),
            "[[rule]]\nid = \"EW-PROC-001\"\ntitle = \"t\"\nseverity = \"low\"\nattack = [\"T1059\"]\nkinds = [\"exec\"]\n",
        )
        .expect("write");
        let err = load(true, std::slice::from_ref(&dir)).expect_err("duplicate");
        assert!(err.to_string().contains("already defined"), "{err}");
        let _ = std::fs::remove_dir_all(dir);
    }

    /// The README's table lists every built-in rule, so the docs cannot
    /// drift from the pack.
    #[test]
    fn readme_lists_every_builtin_rule() {
        let readme = include_str!("../../../README.md");
        for r in load(true, &[]).expect("builtin") {
            let row = format!(
                "| `{}` | {} | {} | {} |",
                r.id,
                r.title,
                r.severity.as_str(),
                r.attack.join(", ")
            );
            assert!(readme.contains(&row), "README lacks the row: {row}");
        }
    }

    /// One condition as a rule file writes it, over fields the sample
    /// events have, with any operator.
    fn any_condition() -> impl Strategy<Value = String> {
        let field = proptest::sample::select(vec![
            "exe",
            "argv",
            "applet",
            "exe_location",
            "remote.port",
            "process.exe",
            "uid",
            "lineage",
            "listener",
            "cmdline",
            "argv.0",
            "nope.deep.path",
        ]);
        let op = prop_oneof![
            "[a-z/. ]{0,6}".prop_map(|v| format!("equals = {v:?}")),
            any::<i64>().prop_map(|v| format!("equals = {v}")),
            "[a-z/. ]{0,6}".prop_map(|v| format!("prefix = {v:?}")),
            "[a-z/. ]{0,6}".prop_map(|v| format!("contains = [{v:?}]")),
            "[a-z/.*?\\[\\]]{0,6}".prop_map(|v| format!("glob = {v:?}")),
            "[a-z/.*+?()|\\[\\]^$]{0,8}".prop_map(|v| format!("regex = {v:?}")),
            any::<f64>().prop_map(|v| format!("gt = {v:?}")),
            any::<bool>().prop_map(|v| format!("exists = {v}")),
        ];
        (field, op).prop_map(|(f, op)| format!("{{ field = {f:?}, {op} }}"))
    }

    /// A rule with any numbers where a rule file has numbers.
    fn any_rule() -> impl Strategy<Value = String> {
        (
            any::<bool>(),
            proptest::collection::vec(any_condition(), 1..3),
            any::<i64>(),
            (any::<i64>(), any::<i64>()),
            any::<i64>(),
        )
            .prop_map(|(sequence, conds, dedup, (max, per), within)| {
                let head = format!(
                    "[[rule]]\nid = \"P-1\"\ntitle = \"t\"\nseverity = \"low\"\n\
                     dedup_secs = {dedup}\nrate_limit = {{ max = {max}, per_secs = {per} }}\n"
                );
                let conds = conds.join(", ");
                if sequence {
                    format!(
                        "{head}[rule.sequence]\nwithin_secs = {within}\n\
                         steps = [{{ match = [{conds}] }}, {{ kinds = [\"close\"] }}]\n"
                    )
                } else {
                    format!("{head}match = [{conds}]\n")
                }
            })
    }

    proptest! {
        /// Any text is rules or an error naming a place inside it; rules
        /// run over the sample events without panicking.
        #[test]
        fn any_text_parses_or_points_inside(text in "\\PC{0,200}") {
            crate::fuzz::rules(text.as_bytes());
        }

        /// The same for the built-in pack with some characters replaced.
        #[test]
        fn edited_builtin_parses_or_points_inside(
            at in any::<prop::sample::Index>(),
            cut in 0usize..16,
            insert in "[a-z_=\\[\\]\"0-9. \n#{},-]{0,12}",
        ) {
            let text = crate::fuzz::tests::splice(BUILTIN, at, cut, &insert);
            crate::fuzz::rules(text.as_bytes());
        }

        /// Rules with any numbers and operators, run over the events.
        #[test]
        fn any_rule_parses_or_points_inside(text in any_rule()) {
            crate::fuzz::rules(text.as_bytes());
        }
    }

    /// The fuzz seed of the tuning forms compiles to the override, with
    /// its exception, and a list resolved into a set of values.
    #[test]
    fn tuning_seed_compiles() {
        let rules = parse_str(include_str!("../../../fuzz/seeds/rules/tuning.toml")).expect("seed");
        assert_eq!(rules.len(), 1);
        assert_eq!(rules[0].id, "SEED-2");
        assert_eq!(rules[0].except.len(), 1);
        let Cond::Field {
            op: Op::In(values), ..
        } = &rules[0].matches[0]
        else {
            panic!("{:?}", rules[0].matches[0]);
        };
        assert_eq!(values.len(), 4);
    }

    #[test]
    fn glob_translation() {
        let re = Regex::new(&glob_regex("/tmp/*.sh")).expect("regex");
        assert!(re.is_match("/tmp/x.sh"));
        assert!(!re.is_match("/tmpx/x.sh2"));
    }
}
