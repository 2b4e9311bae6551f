//! Field lookup for rules: paths into an event's JSON form, plus derived
//! fields computed from it (`exe_name`, `applet`, `exe_location`, ...).

use std::{collections::HashMap, os::unix::fs::PermissionsExt as _, path::Path};

use serde_json::Value;

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
    world_writable: HashMap<String, bool>,
    resolves: HashMap<(String, String), bool>,
}

const FS_CACHE_MAX: usize = 4096;

impl FsCache {
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

pub fn basename(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// The process part of an event: top level for process events, under
/// `process` for socket events.
pub fn process_of(ev: &Value) -> &Value {
    match ev.get("process") {
        Some(p) if p.is_object() => p,
        _ => ev,
    }
}

pub fn str_at<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

/// Multi-call binaries: one executable that acts as the program named by
/// argv[0] (or by argv[1] when run under its own name).
pub const MULTI_CALL: [&str; 5] = [
    "busybox",
    "toybox",
    "xtables-nft-multi",
    "xtables-legacy-multi",
    "ebtables-nft",
];

/// Programs installed under other names as links to one executable, which
/// acts by argv[0] alone: procps 4 makes `pkill` and `pidwait` links to
/// `pgrep`, so the kernel reports `pkill` as `/usr/bin/pgrep`.
const LINKED_NAMES: [(&str, &[&str]); 1] = [("pgrep", &["pkill", "pidwait"])];

/// The program a process runs as far as a person would name it: for a
/// multi-call binary such as `/bin/busybox`, the applet (argv[0] `sh`, or
/// `busybox sh`); for a program linked under other names (`pkill` to
/// `pgrep`), the name it was run by; the executable's name otherwise.
pub fn applet(exe: Option<&str>, argv: &[Value]) -> Option<String> {
    let exe_name = exe.map(basename)?;
    if let Some((_, names)) = LINKED_NAMES.iter().find(|(e, _)| *e == exe_name) {
        let a0 = argv.first().and_then(Value::as_str).map(basename);
        if let Some(name) = a0.filter(|a| names.contains(a)) {
            return Some(name.to_owned());
        }
    }
    if MULTI_CALL.contains(&exe_name) {
        let a0 = argv
            .first()
            .and_then(Value::as_str)
            .map(basename)
            .unwrap_or(exe_name);
        let a0 = a0.trim_start_matches('-');
        if a0 == exe_name {
            return argv
                .get(1)
                .and_then(Value::as_str)
                .map(|a| basename(a).to_owned());
        }
        return Some(a0.to_owned());
    }
    Some(exe_name.to_owned())
}

/// Computes a derived field of `ev`, or `None` when the name is not one.
pub fn derived(name: &str, ev: &Value, fs: &mut FsCache) -> Option<Value> {
    let p = process_of(ev);
    let exe = str_at(p, "exe");
    let argv = p
        .get("argv")
        .and_then(Value::as_array)
        .map_or(&[][..], Vec::as_slice);
    Some(match name {
        "exe_name" => exe.map_or(Value::Null, |e| basename(e).into()),
        "exe_dir" => exe.map_or(Value::Null, |e| {
            e.rsplit_once('/')
                .map_or("/", |(d, _)| if d.is_empty() { "/" } else { d })
                .into()
        }),
        "applet" => applet(exe, argv).map_or(Value::Null, Value::from),
        "cmdline" => argv
            .iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join(" ")
            .into(),
        "exe_location" => {
            let Some(e) = exe else {
                return Some(Value::Null);
            };
            let loc = if e.starts_with("/memfd:") {
                "memfd"
            } else if p.get("exe_deleted") == Some(&Value::Bool(true)) {
                "deleted"
            } else {
                let dir = e.rsplit_once('/').map_or("/", |(d, _)| d);
                if TMP_DIRS
                    .iter()
                    .any(|t| dir == *t || dir.starts_with(&format!("{t}/")))
                {
                    "tmp"
                } else if fs.dir_world_writable(dir) {
                    "world_writable"
                } else {
                    "system"
                }
            };
            loc.into()
        }
        "argv0_mismatch" => {
            let (Some(e), Some(a0)) = (exe, argv.first().and_then(Value::as_str)) else {
                return Some(false.into());
            };
            let exe_name = basename(e);
            let a0_name = basename(a0).trim_start_matches('-');
            let related = a0_name.is_empty()
                || MULTI_CALL.contains(&exe_name)
                || a0_name.starts_with(exe_name)
                || exe_name.starts_with(a0_name);
            (!related && !fs.resolves_to(a0, str_at(ev, "cwd"), e)).into()
        }
        _ => return None,
    })
}

/// Looks a dotted path up in `v`; numeric parts index arrays.
pub fn lookup<'a>(v: &'a Value, path: &[String]) -> Option<&'a Value> {
    let mut cur = v;
    for part in path {
        cur = match cur {
            Value::Object(m) => m.get(part)?,
            Value::Array(a) => a.get(part.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(cur)
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

    #[test]
    fn busybox_applets() {
        assert_eq!(
            applet(Some("/bin/busybox"), &[json!("sh")]).as_deref(),
            Some("sh")
        );
        assert_eq!(
            applet(Some("/bin/busybox"), &[json!("busybox"), json!("wget")]).as_deref(),
            Some("wget")
        );
        assert_eq!(
            applet(Some("/bin/busybox"), &[json!("-ash")]).as_deref(),
            Some("ash")
        );
        assert_eq!(
            applet(Some("/usr/bin/dash"), &[json!("sh")]).as_deref(),
            Some("dash")
        );
    }

    #[test]
    fn pkill_is_named_by_argv0() {
        let pgrep = Some("/usr/bin/pgrep");
        assert_eq!(
            applet(pgrep, &[json!("pkill"), json!("rsyslogd")]).as_deref(),
            Some("pkill")
        );
        assert_eq!(
            applet(pgrep, &[json!("pgrep"), json!("sshd")]).as_deref(),
            Some("pgrep")
        );
        assert_eq!(
            applet(pgrep, &[json!("sh")]).as_deref(),
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
