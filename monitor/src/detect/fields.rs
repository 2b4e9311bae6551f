//! Field lookup for rules: paths into an event's JSON form, plus derived
//! fields computed from it (`exe_name`, `applet`, `exe_location`, ...).

use std::{borrow::Cow, os::unix::fs::PermissionsExt as _, path::Path};

use serde_json::Value;

#[cfg(test)]
use super::record::lookup;
use super::record::{Argv, Computed, ProcView, Val};
use crate::process::program::{self, applet_named, Identities};
pub use crate::process::program::{applet, basename, MULTI_CALL};

/// Directories whose contents anyone can replace: execution from them is
/// the classic drop-and-run.
const TMP_DIRS: [&str; 5] = ["/tmp", "/var/tmp", "/dev/shm", "/run/shm", "/var/run/shm"];

/// Where `PATH` lookups of a bare `argv[0]` are tried.
const PATH_DIRS: [&str; 6] = [
    "/usr/local/sbin",
    "/usr/local/bin",
    "/usr/sbin",
    "/usr/bin",
    "/sbin",
    "/bin",
];

/// Bounded cache of filesystem answers (directory writability, `argv[0]`
/// resolution), so a rule does not stat on every event.
#[derive(Default)]
pub struct FsCache {
    world_writable: foldhash::HashMap<String, bool>,
    resolves: foldhash::HashMap<(String, String), bool>,
    /// The standard shells, interpreters and tools by content.
    pub ids: Identities,
    /// What each path turned out to be, for the event being judged: the
    /// computed fields and the ancestors ask about the same files again.
    seen: foldhash::HashMap<String, Option<program::Identity>>,
}

const FS_CACHE_MAX: usize = 4096;

impl FsCache {
    /// Forgets the per-event answers; called before each event is judged.
    pub fn new_event(&mut self) {
        self.seen.clear();
    }

    /// [`Identities::identify`], once per path and event.
    pub fn identify(&mut self, path: &str) -> Option<program::Identity> {
        if let Some(id) = self.seen.get(path) {
            return id.clone();
        }
        let id = self.ids.identify(path);
        self.seen.insert(path.to_owned(), id.clone());
        id
    }

    fn dir_world_writable(&mut self, dir: &str) -> bool {
        if let Some(v) = self.world_writable.get(dir) {
            return *v;
        }
        let v = std::fs::metadata(dir).is_ok_and(|m| m.permissions().mode() & 0o002 != 0);
        if self.world_writable.len() >= FS_CACHE_MAX {
            self.world_writable.clear();
        }
        self.world_writable.insert(dir.to_owned(), v);
        v
    }

    /// Whether `argv0` (a path, or a name looked up in the usual PATH)
    /// names the same file as `exe`.
    fn resolves_to(&mut self, argv0: &str, cwd: Option<&str>, exe: &str) -> bool {
        let key = (argv0.to_owned(), exe.to_owned());
        if let Some(v) = self.resolves.get(&key) {
            return *v;
        }
        let same = |p: &Path| std::fs::canonicalize(p).is_ok_and(|c| c == Path::new(exe));
        let v = if argv0.contains('/') {
            let p = Path::new(argv0);
            if p.is_absolute() {
                same(p)
            } else {
                cwd.is_some_and(|c| same(&Path::new(c).join(p)))
            }
        } else {
            PATH_DIRS.iter().any(|d| same(&Path::new(d).join(argv0)))
        };
        if self.resolves.len() >= FS_CACHE_MAX {
            self.resolves.clear();
        }
        self.resolves.insert(key, v);
        v
    }
}

/// The program a process runs, as far as its command line and the files
/// tell: the program the dynamic loader was asked to run, else the
/// executable; with the arguments it sees.
fn launched<'a>(p: &ProcView<'a>) -> Option<(Cow<'a, str>, Argv<'a>)> {
    let exe = p.exe?;
    if program::is_loader(basename(exe)) {
        if let Some(t) = program::loader_target(p.argv) {
            let target = p.argv.get(t)?;
            let path = program::normalize(target, p.cwd).map_or(Cow::Borrowed(target), Cow::Owned);
            return Some((path, p.argv.skip(t)));
        }
    }
    Some((Cow::Borrowed(exe), p.argv))
}

/// The applet of a process, seeing through the dynamic loader and
/// recognising a renamed copy of a shell or tool by its content.
fn applet_of<'a>(p: &ProcView<'a>, fs: &mut FsCache) -> Option<Cow<'a, str>> {
    let (path, argv) = launched(p)?;
    if let Some(id) = fs.identify(&path) {
        return applet_named(&id.name, argv).map(|a| Cow::Owned(a.to_owned()));
    }
    match path {
        Cow::Borrowed(e) => applet(Some(e), argv).map(Cow::Borrowed),
        Cow::Owned(e) => applet(Some(&e), argv).map(|a| Cow::Owned(a.to_owned())),
    }
}

/// The path of the program a process runs: the program the loader was
/// asked to run, the script an interpreter runs (`#!` scripts and
/// `sh /tmp/x.sh` alike), else the executable.
fn program_path<'a>(p: &ProcView<'a>, fs: &mut FsCache) -> Option<Cow<'a, str>> {
    let (path, argv) = launched(p)?;
    let family = applet_of(p, fs).and_then(|a| program::family(&a));
    if let Some(i) = family.and_then(|f| program::script_index(f, argv)) {
        let script = argv.get(i)?;
        return Some(program::normalize(script, p.cwd).map_or(Cow::Borrowed(script), Cow::Owned));
    }
    Some(path)
}

/// Where a file is: `memfd`, `deleted`, `truncated` (its path was too
/// deep to read whole), `tmp`, `world_writable` or `system`.
fn location(path: &str, deleted: bool, fs: &mut FsCache) -> &'static str {
    if path.starts_with("/memfd:")
        || path.starts_with("/dev/fd/")
        || path.starts_with("/proc/self/fd/")
    {
        "memfd"
    } else if deleted {
        "deleted"
    } else if path.starts_with(program::TRUNCATED_PREFIX) {
        "truncated"
    } else if !path.starts_with('/') {
        // Relative, with no working directory to resolve it.
        "unknown"
    } else {
        let dir = path.rsplit_once('/').map_or("/", |(d, _)| d);
        if TMP_DIRS.iter().any(|t| {
            dir.strip_prefix(t)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
        }) {
            "tmp"
        } else if fs.dir_world_writable(if dir.is_empty() { "/" } else { dir }) {
            "world_writable"
        } else {
            "system"
        }
    }
}

fn str_val(s: &str) -> Val<'_> {
    Val::Str(Cow::Borrowed(s))
}

/// Computes a derived field of a process.
pub fn computed<'a>(c: Computed, p: &ProcView<'a>, fs: &mut FsCache) -> Val<'a> {
    let exe = p.exe;
    match c {
        Computed::ExeName => exe.map_or(Val::Null, |e| str_val(basename(e))),
        Computed::ExeDir => exe.map_or(Val::Null, |e| {
            str_val(
                e.rsplit_once('/')
                    .map_or("/", |(d, _)| if d.is_empty() { "/" } else { d }),
            )
        }),
        Computed::Applet => applet_of(p, fs).map_or(Val::Null, Val::Str),
        Computed::Cmdline => {
            let mut line = String::new();
            for (i, a) in p.argv.strs().enumerate() {
                if i > 0 {
                    line.push(' ');
                }
                line.push_str(a);
            }
            Val::Str(Cow::Owned(line))
        }
        Computed::ExeLocation => exe.map_or(Val::Null, |e| str_val(location(e, p.exe_deleted, fs))),
        Computed::Argv0Mismatch => {
            let (Some(e), Some(a0)) = (exe, p.argv.get(0)) else {
                return Val::Bool(false);
            };
            let exe_name = basename(e);
            let a0_name = basename(a0).trim_start_matches('-');
            let related = a0_name.is_empty()
                || MULTI_CALL.contains(&exe_name)
                || a0_name.starts_with(exe_name)
                || exe_name.starts_with(a0_name);
            Val::Bool(!related && !fs.resolves_to(a0, p.cwd, e))
        }
        Computed::Program => program_path(p, fs).map_or(Val::Null, Val::Str),
        Computed::ProgramLocation => match (program_path(p, fs), exe) {
            (Some(prog), Some(e)) => {
                let deleted = p.exe_deleted && prog == e;
                str_val(location(&prog, deleted, fs))
            }
            _ => Val::Null,
        },
        Computed::Renamed => {
            let renamed = launched(p)
                .and_then(|(path, _)| fs.identify(&path))
                .is_some_and(|id| id.renamed);
            Val::Bool(renamed)
        }
        Computed::Paths => Val::Json(Cow::Owned(Value::Array(
            program::paths(p.argv, p.cwd)
                .into_iter()
                .map(Value::String)
                .collect(),
        ))),
    }
}

/// Computes a derived field of a JSON event by name, or `None` when the
/// name is not one.
#[cfg(test)]
pub fn derived(name: &str, ev: &Value, fs: &mut FsCache) -> Option<Value> {
    let c = Computed::ALL.into_iter().find(|c| c.name() == name)?;
    Some(computed(c, &ProcView::of_json(ev), fs).to_json())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// The catalogue's computed fields are exactly those computed here.
    #[test]
    fn every_catalogued_computed_field_is_computed() {
        let ev = json!({"kind": "exec", "exe": "/usr/bin/true", "argv": ["true"]});
        let mut fs = FsCache::default();
        for name in crate::event::catalogue::COMPUTED {
            assert!(derived(name, &ev, &mut fs).is_some(), "{name}");
        }
        assert!(derived("exe", &ev, &mut fs).is_none());
    }

    fn applet_of<'a>(exe: &'a str, argv: &'a [String]) -> Option<&'a str> {
        applet(Some(exe), Argv::Typed(argv))
    }

    fn strings(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn busybox_applets() {
        let bb = "/bin/busybox";
        assert_eq!(applet_of(bb, &strings(&["sh"])), Some("sh"));
        assert_eq!(applet_of(bb, &strings(&["busybox", "wget"])), Some("wget"));
        assert_eq!(applet_of(bb, &strings(&["-ash"])), Some("ash"));
        assert_eq!(applet_of("/usr/bin/dash", &strings(&["sh"])), Some("dash"));
        assert_eq!(
            applet(Some(bb), Argv::Json(&[json!("busybox"), json!("/bin/nc")])),
            Some("nc")
        );
    }

    #[test]
    fn pkill_is_named_by_argv0() {
        let pgrep = "/usr/bin/pgrep";
        assert_eq!(
            applet_of(pgrep, &strings(&["pkill", "rsyslogd"])),
            Some("pkill")
        );
        assert_eq!(
            applet_of(pgrep, &strings(&["pgrep", "sshd"])),
            Some("pgrep")
        );
        assert_eq!(
            applet_of(pgrep, &strings(&["sh"])),
            Some("pgrep"),
            "only its own link names"
        );
    }

    #[test]
    fn exe_locations() {
        let mut fs = FsCache::default();
        let loc = |ev: Value, fs: &mut FsCache| derived("exe_location", &ev, fs);
        assert_eq!(loc(json!({"exe": "/tmp/x"}), &mut fs), Some(json!("tmp")));
        assert_eq!(
            loc(json!({"exe": "/dev/shm/a/b"}), &mut fs),
            Some(json!("tmp"))
        );
        assert_eq!(
            loc(json!({"exe": "/memfd:x"}), &mut fs),
            Some(json!("memfd"))
        );
        assert_eq!(
            loc(json!({"exe": "/usr/bin/x", "exe_deleted": true}), &mut fs),
            Some(json!("deleted"))
        );
        assert_eq!(
            loc(json!({"exe": "/usr/bin/true"}), &mut fs),
            Some(json!("system"))
        );
        assert_eq!(
            loc(json!({"process": {"exe": "/var/tmp/y"}}), &mut fs),
            Some(json!("tmp")),
            "socket events carry the process under `process`"
        );
    }

    #[test]
    fn argv0_mismatch() {
        let mut fs = FsCache::default();
        let m = |ev: Value, fs: &mut FsCache| derived("argv0_mismatch", &ev, fs);
        assert_eq!(
            m(
                json!({"exe": "/usr/bin/python3.11", "argv": ["python3"]}),
                &mut fs
            ),
            Some(json!(false))
        );
        assert_eq!(
            m(json!({"exe": "/usr/bin/bash", "argv": ["-bash"]}), &mut fs),
            Some(json!(false))
        );
        let awk = std::fs::canonicalize("/usr/bin/awk").map(|p| p.display().to_string());
        if let Ok(awk) = awk {
            assert_eq!(
                m(json!({"exe": awk, "argv": ["awk"]}), &mut fs),
                Some(json!(false))
            );
        }
        assert_eq!(
            m(json!({"exe": "/tmp/x", "argv": ["sshd"]}), &mut fs),
            Some(json!(true))
        );
    }

    #[test]
    fn lookups() {
        let v = json!({"a": {"b": [1, {"c": 2}]}});
        let path = |s: &str| s.split('.').map(str::to_owned).collect::<Vec<_>>();
        assert_eq!(lookup(&v, &path("a.b.1.c")), Some(&json!(2)));
        assert_eq!(lookup(&v, &path("a.x")), None);
    }
}
