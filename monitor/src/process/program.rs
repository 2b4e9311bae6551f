//! What program a process really runs, beyond its executable's name.
//!
//! The executable the kernel reports is not always the program: a `#!`
//! script or `sh /tmp/x` runs an interpreter whose program is the script; a
//! program run through the dynamic loader (`ld-linux-x86-64.so.2 /bin/sh`)
//! has the loader as its executable; and a shell or network tool copied
//! under another name is still that tool. This module answers those
//! questions from the command line and, for content identity, from the
//! files themselves (an ELF build-id, or a hash of the file's bytes).

use std::{
    collections::HashMap,
    io::{Read as _, Seek as _, SeekFrom},
    os::unix::fs::MetadataExt as _,
    path::Path,
    sync::Arc,
    time::{Duration, Instant},
};

use serde_json::Value;

/// The argv of a process, typed or from JSON.
#[derive(Debug, Clone, Copy)]
pub enum Argv<'a> {
    Typed(&'a [String]),
    Json(&'a [Value]),
}

impl<'a> Argv<'a> {
    pub fn get(self, i: usize) -> Option<&'a str> {
        match self {
            Argv::Typed(a) => a.get(i).map(String::as_str),
            Argv::Json(a) => a.get(i).and_then(Value::as_str),
        }
    }

    /// The arguments from the `n`th on.
    pub fn skip(self, n: usize) -> Argv<'a> {
        match self {
            Argv::Typed(a) => Argv::Typed(a.get(n..).unwrap_or(&[])),
            Argv::Json(a) => Argv::Json(a.get(n..).unwrap_or(&[])),
        }
    }

    /// The string elements, in order.
    pub fn strs(self) -> impl Iterator<Item = &'a str> {
        let (typed, json) = match self {
            Argv::Typed(a) => (a, &[][..]),
            Argv::Json(a) => (&[][..], a),
        };
        typed
            .iter()
            .map(String::as_str)
            .chain(json.iter().filter_map(Value::as_str))
    }
}

/// The base name of a path.
pub fn basename(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
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
pub fn applet<'a>(exe: Option<&'a str>, argv: Argv<'a>) -> Option<&'a str> {
    let exe_name = exe.map(basename)?;
    if let Some((_, names)) = LINKED_NAMES.iter().find(|(e, _)| *e == exe_name) {
        let a0 = argv.get(0).map(basename);
        if let Some(name) = a0.filter(|a| names.contains(a)) {
            return Some(name);
        }
    }
    applet_named(exe_name, argv)
}

/// [`applet`] for a program whose name is known (by content, or through
/// the loader).
pub fn applet_named<'a>(exe_name: &'a str, argv: Argv<'a>) -> Option<&'a str> {
    if MULTI_CALL.contains(&exe_name) {
        let a0 = argv.get(0).map(basename).unwrap_or(exe_name);
        let a0 = a0.trim_start_matches('-');
        if a0 == exe_name {
            return argv.get(1).map(basename).map(generic);
        }
        return Some(generic(a0));
    }
    Some(generic(exe_name))
}

/// Prefix of a path whose root end was cut (deeper than the kernel walk
/// reads): it is not absolute, and never shown as if it were.
pub const TRUNCATED_PREFIX: &str = "...";

/// A path made absolute (relative ones against `cwd`) and lexically
/// normal: no empty, `.` or `..` components (`//etc/./x/../shadow` is
/// `/etc/shadow`). `None` for a relative path without an absolute `cwd`,
/// or a truncated one.
pub fn normalize(path: &str, cwd: Option<&str>) -> Option<String> {
    let joined;
    let path = if path.starts_with('/') {
        path
    } else {
        let cwd = cwd.filter(|c| c.starts_with('/'))?;
        joined = format!("{cwd}/{path}");
        &joined
    };
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    let mut out = String::with_capacity(path.len());
    for p in &parts {
        out.push('/');
        out.push_str(p);
    }
    if out.is_empty() {
        out.push('/');
    }
    Some(out)
}

/// The file paths a command line names, made absolute and normal: every
/// argument after `argv[0]` that is not an option, and the value of
/// `--opt=value` and `if=value` forms. Arguments with spaces or newlines
/// are text, not paths. Relative arguments resolve against `cwd` when it is
/// known (so `cd /etc; cat shadow` names `/etc/shadow`).
pub fn paths(argv: Argv<'_>, cwd: Option<&str>) -> Vec<String> {
    let mut out = Vec::new();
    for a in argv.strs().skip(1) {
        let candidate = match a.split_once('=') {
            Some((k, v)) if !k.contains('/') => v,
            _ if a.starts_with('-') => continue,
            _ => a,
        };
        if candidate.is_empty()
            || candidate.starts_with('-')
            || candidate.contains([' ', '\n', '\t'])
            || (!candidate.starts_with('/') && !candidate.contains('/') && cwd.is_none())
        {
            continue;
        }
        if let Some(p) = normalize(candidate, cwd) {
            if !out.contains(&p) {
                out.push(p);
            }
        }
    }
    out
}

/// Whether an executable's name is the dynamic loader's
/// (`ld-linux-x86-64.so.2`, `ld-linux-armhf.so.3`, `ld-musl-arm.so.1`,
/// `ld.so.1`, `ld64.so.2`, `ld-2.31.so`).
pub fn is_loader(exe_name: &str) -> bool {
    (exe_name.starts_with("ld-") || exe_name.starts_with("ld.") || exe_name.starts_with("ld64."))
        && exe_name.contains(".so")
}

/// Loader options that take a value as the next argument.
const LOADER_VALUE_OPTS: [&str; 7] = [
    "--library-path",
    "--preload",
    "--audit",
    "--argv0",
    "--inhibit-rpath",
    "--glibc-hwcaps-prefix",
    "--glibc-hwcaps-mask",
];

/// Loader options under which it only inspects a program (`ldd` runs the
/// loader with `--list`) and runs nothing.
const LOADER_INSPECT_OPTS: [&str; 6] = [
    "--list",
    "--verify",
    "--list-tunables",
    "--list-diagnostics",
    "--help",
    "--version",
];

/// The index in `argv` of the program the dynamic loader was asked to run,
/// or `None` when it runs nothing (inspection, or no program given).
pub fn loader_target(argv: Argv<'_>) -> Option<usize> {
    let mut i = 1;
    while let Some(a) = argv.get(i) {
        if a == "--" {
            return argv.get(i + 1).map(|_| i + 1);
        }
        if LOADER_INSPECT_OPTS.contains(&a) {
            return None;
        }
        if LOADER_VALUE_OPTS.contains(&a) {
            i += 2;
        } else if a.starts_with("--") {
            i += 1;
        } else {
            return Some(i);
        }
    }
    None
}

/// Interpreter families, by how their command lines name a program file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Shell,
    Python,
    Perl,
    Ruby,
    Php,
    Node,
    Lua,
    Tcl,
}

/// Names of shells (BusyBox applets included).
pub const SHELLS: [&str; 12] = [
    "sh", "bash", "dash", "ash", "hush", "zsh", "ksh", "ksh93", "mksh", "csh", "tcsh", "fish",
];

fn versioned(name: &str, stem: &str) -> bool {
    name.strip_prefix(stem)
        .is_some_and(|v| v.bytes().all(|b| b.is_ascii_digit() || b == b'.'))
}

/// The family of an interpreter, by the program's name (its applet).
pub fn family(applet: &str) -> Option<Family> {
    if SHELLS.contains(&applet) {
        return Some(Family::Shell);
    }
    let stems: [(&str, Family); 8] = [
        ("python", Family::Python),
        ("perl", Family::Perl),
        ("ruby", Family::Ruby),
        ("php", Family::Php),
        ("lua", Family::Lua),
        ("luajit", Family::Lua),
        ("tclsh", Family::Tcl),
        ("node", Family::Node),
    ];
    if applet == "nodejs" {
        return Some(Family::Node);
    }
    stems
        .iter()
        .find(|(stem, _)| versioned(applet, stem))
        .map(|(_, f)| *f)
}

/// What an option does to the search for the program file.
enum Opt {
    /// A flag: go on with the next argument.
    Flag,
    /// Takes the next argument as its value.
    Value,
    /// The program comes inline or from stdin: there is no program file.
    Inline,
    /// The next argument is the program file (`php -f FILE`).
    FileNext,
}

/// How one option of an interpreter's command line reads.
fn option(f: Family, a: &str) -> Opt {
    if let Some(long) = a.strip_prefix("--") {
        let name = long.split('=').next().unwrap_or(long);
        return match (f, name) {
            (Family::Node, "eval" | "print") => Opt::Inline,
            (Family::Node, "require" | "import" | "loader") if !long.contains('=') => Opt::Value,
            (Family::Shell, "rcfile" | "init-file") => Opt::Value,
            (Family::Python, "check-hash-based-pycs") => Opt::Value,
            _ => Opt::Flag,
        };
    }
    let (sign, letters) = a.split_at(1);
    // Letters of a cluster (`-ex`, `-uB`); an option taking a value ends the
    // cluster, its value attached (`-Wignore`) or the next argument.
    for (i, c) in letters.char_indices() {
        let attached = i + c.len_utf8() < letters.len();
        let value = |attached: bool| if attached { Opt::Flag } else { Opt::Value };
        match (f, c) {
            (Family::Shell, 'c' | 's') if sign == "-" => return Opt::Inline,
            (Family::Shell, 'o' | 'O') => return value(false),
            (Family::Python, 'c' | 'm') => return Opt::Inline,
            (Family::Python, 'W' | 'X' | 'Q') => return value(attached),
            (Family::Perl, 'e' | 'E') => return Opt::Inline,
            (Family::Perl, 'I' | 'M' | 'm' | 'x' | 'l' | 'i' | '0' | 'C' | 'd' | 'D') => {
                return Opt::Flag
            }
            (Family::Ruby, 'e') => return Opt::Inline,
            (Family::Ruby, 'r' | 'I' | 'C' | 'E' | 'x') => return value(attached),
            (Family::Php, 'r' | 'B' | 'R' | 'E' | 'F' | 'a') => return Opt::Inline,
            (Family::Php, 'f') if !attached => return Opt::FileNext,
            (Family::Php, 'd' | 'c' | 'z' | 't') => return value(attached),
            (Family::Node, 'e' | 'p') => return Opt::Inline,
            (Family::Node, 'r') => return value(attached),
            (Family::Lua, 'e' | 'l') => return value(attached),
            (Family::Tcl, _) => return Opt::Value,
            _ => {}
        }
    }
    Opt::Flag
}

/// The index in `argv` of the program file an interpreter runs: the first
/// argument that is not an option (`sh -e /tmp/x.sh`, `python3 -u x.py`,
/// and the `#!` form the kernel builds: interpreter, its optional
/// argument, the script's path). `None` when the program comes inline
/// (`sh -c`, `python3 -c`, `perl -e`), from a module (`python3 -m`) or
/// from stdin (`sh -s`, `-`, or no argument at all).
pub fn script_index(f: Family, argv: Argv<'_>) -> Option<usize> {
    let mut i = 1;
    while let Some(a) = argv.get(i) {
        if a == "--" {
            return argv.get(i + 1).filter(|s| *s != "-").map(|_| i + 1);
        }
        if a == "-" {
            return None;
        }
        let is_opt = a.starts_with('-') || (f == Family::Shell && a.starts_with('+'));
        if !is_opt {
            return Some(i);
        }
        match option(f, a) {
            Opt::Flag => i += 1,
            Opt::Value => i += 2,
            Opt::Inline => return None,
            Opt::FileNext => return argv.get(i + 1).map(|_| i + 1),
        }
    }
    None
}

/// Names looked for in the standard directories at start: the shells,
/// interpreters and network tools an intruder uses, whose renamed copies
/// are still recognised by their content.
const TOOL_NAMES: [&str; 48] = [
    "busybox",
    "toybox",
    "sh",
    "bash",
    "dash",
    "ash",
    "zsh",
    "ksh",
    "ksh93",
    "mksh",
    "csh",
    "tcsh",
    "fish",
    "python",
    "python2",
    "python3",
    "perl",
    "ruby",
    "php",
    "lua",
    "luajit",
    "node",
    "nodejs",
    "tclsh",
    "awk",
    "gawk",
    "mawk",
    "nawk",
    "nc",
    "ncat",
    "netcat",
    "nc.openbsd",
    "nc.traditional",
    "socat",
    "telnet",
    "curl",
    "wget",
    "ssh",
    "scp",
    "sftp",
    "openssl",
    "tftp",
    "ftp",
    "tcpdump",
    "iptables",
    "nft",
    "sshd",
    "dropbear",
];

/// Interpreters installed under versioned names (`python3.11`, `perl5.36.0`).
const VERSIONED_STEMS: [&str; 5] = ["python", "perl", "ruby", "php", "lua"];

/// Other names of one program that a person would not tell apart.
const GENERIC_NAMES: [(&str, &str); 3] = [
    ("nc.openbsd", "nc"),
    ("nc.traditional", "nc"),
    ("netcat-openbsd", "nc"),
];

/// A program's generic name (`nc.openbsd` is `nc`).
pub fn generic(name: &str) -> &str {
    GENERIC_NAMES
        .iter()
        .find(|(n, _)| *n == name)
        .map_or(name, |(_, g)| g)
}

/// Where the standard programs live.
pub const SYSTEM_BIN_DIRS: [&str; 6] = [
    "/usr/local/sbin",
    "/usr/local/bin",
    "/usr/sbin",
    "/usr/bin",
    "/sbin",
    "/bin",
];

/// Programs that open login sessions: what they start is a person's
/// doing, once authenticated.
const LOGIN_SERVICES: [&str; 13] = [
    "sshd",
    "sshd-session",
    "dropbear",
    "login",
    "agetty",
    "getty",
    "mingetty",
    "mgetty",
    "fbgetty",
    "in.telnetd",
    "telnetd",
    "utelnetd",
    "xrdp-sesman",
];

/// Where login services are installed.
const LOGIN_SERVICE_DIRS: [&str; 8] = [
    "/usr/sbin",
    "/usr/bin",
    "/sbin",
    "/bin",
    "/usr/lib/openssh",
    "/usr/libexec/openssh",
    "/usr/libexec",
    "/usr/local/sbin",
];

/// Whether an executable is a login service installed where the system
/// keeps it (a copy named `sshd` in /tmp is not one).
pub fn is_login_service(exe: &str) -> bool {
    let Some((dir, name)) = exe.rsplit_once('/') else {
        return false;
    };
    LOGIN_SERVICES.contains(&name) && LOGIN_SERVICE_DIRS.contains(&dir)
}

/// Application and appliance servers that serve the network, possibly
/// through a unix socket or a front end (php-fpm behind nginx), so that
/// they may not own a listening TCP socket themselves.
const NETWORK_SERVERS: [&str; 15] = [
    "php-fpm",
    "php-cgi",
    "uhttpd",
    "lighttpd",
    "boa",
    "goahead",
    "httpd",
    "mini_httpd",
    "thttpd",
    "nginx",
    "apache2",
    "tomcat",
    "gunicorn",
    "uwsgi",
    "java",
];

/// Whether an executable is a known application or appliance server.
pub fn is_network_server(exe: &str) -> bool {
    let name = basename(exe);
    NETWORK_SERVERS.iter().any(|s| versioned(name, s))
}

/// What identifies a file's content: its ELF build-id, or for a file
/// without one, a hash of its bytes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Fingerprint {
    BuildId(Vec<u8>),
    Hash(u64),
}

/// Largest file hashed whole when it has no build-id.
const HASH_MAX_BYTES: u64 = 64 << 20;

fn fingerprint(path: &Path, size: u64) -> Option<Fingerprint> {
    let mut f = std::fs::File::open(path).ok()?;
    if let Some(id) = elf_build_id(&mut f) {
        return Some(Fingerprint::BuildId(id));
    }
    if size > HASH_MAX_BYTES {
        return None;
    }
    f.seek(SeekFrom::Start(0)).ok()?;
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = f.read(&mut buf).ok()?;
        if n == 0 {
            break;
        }
        for b in &buf[..n] {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    Some(Fingerprint::Hash(h))
}

/// The GNU build-id note of an ELF file (32 or 64 bits, either byte
/// order), read from its program headers; `None` for anything else.
pub fn elf_build_id(f: &mut std::fs::File) -> Option<Vec<u8>> {
    let mut ident = [0u8; 64];
    f.read_exact(&mut ident).ok()?;
    if &ident[..4] != b"\x7fELF" {
        return None;
    }
    let wide = match ident[4] {
        1 => false,
        2 => true,
        _ => return None,
    };
    let big = match ident[5] {
        1 => false,
        2 => true,
        _ => return None,
    };
    let u16_at = |b: &[u8], o: usize| -> Option<u64> {
        let v: [u8; 2] = b.get(o..o + 2)?.try_into().ok()?;
        Some(u64::from(if big {
            u16::from_be_bytes(v)
        } else {
            u16::from_le_bytes(v)
        }))
    };
    let u32_at = |b: &[u8], o: usize| -> Option<u64> {
        let v: [u8; 4] = b.get(o..o + 4)?.try_into().ok()?;
        Some(u64::from(if big {
            u32::from_be_bytes(v)
        } else {
            u32::from_le_bytes(v)
        }))
    };
    let u64_at = |b: &[u8], o: usize| -> Option<u64> {
        let v: [u8; 8] = b.get(o..o + 8)?.try_into().ok()?;
        Some(if big {
            u64::from_be_bytes(v)
        } else {
            u64::from_le_bytes(v)
        })
    };
    let word = |b: &[u8], o32: usize, o64: usize| {
        if wide {
            u64_at(b, o64)
        } else {
            u32_at(b, o32)
        }
    };
    let phoff = word(&ident, 0x1c, 0x20)?;
    let phentsize = u16_at(&ident, if wide { 0x36 } else { 0x2a })?;
    let phnum = u16_at(&ident, if wide { 0x38 } else { 0x2c })?;
    let table_len = phentsize.checked_mul(phnum)?;
    if phentsize < if wide { 56 } else { 32 } || table_len > 64 << 10 {
        return None;
    }
    let mut table = vec![0u8; table_len as usize];
    f.seek(SeekFrom::Start(phoff)).ok()?;
    f.read_exact(&mut table).ok()?;
    for ph in table.chunks_exact(phentsize as usize) {
        const PT_NOTE: u64 = 4;
        if u32_at(ph, 0)? != PT_NOTE {
            continue;
        }
        let offset = word(ph, 4, 8)?;
        let size = word(ph, 16, 32)?;
        let align = word(ph, 28, 48)?;
        if size > 64 << 10 {
            continue;
        }
        let mut notes = vec![0u8; size as usize];
        f.seek(SeekFrom::Start(offset)).ok()?;
        f.read_exact(&mut notes).ok()?;
        let pad = |n: u64| {
            if align == 8 {
                (n + 7) & !7
            } else {
                (n + 3) & !3
            }
        };
        let mut at = 0u64;
        while at + 12 <= size {
            let o = at as usize;
            let namesz = u32_at(&notes, o)?;
            let descsz = u32_at(&notes, o + 4)?;
            let kind = u32_at(&notes, o + 8)?;
            let name_at = at + 12;
            let desc_at = name_at + pad(namesz);
            let end = desc_at.checked_add(descsz)?;
            if end > size {
                break;
            }
            const NT_GNU_BUILD_ID: u64 = 3;
            if kind == NT_GNU_BUILD_ID
                && notes.get(name_at as usize..(name_at + namesz) as usize) == Some(b"GNU\0")
                && descsz > 0
            {
                return Some(notes[desc_at as usize..end as usize].to_vec());
            }
            at = desc_at + pad(descsz);
        }
    }
    None
}

/// One known program: its name, and every name it is installed under.
#[derive(Debug)]
struct Known {
    name: Arc<str>,
    names: Vec<String>,
}

/// How long the table of known programs is trusted before it is built
/// again (package upgrades change the programs).
const KNOWN_REFRESH: Duration = Duration::from_secs(600);
/// Files remembered by inode, at most.
const FILES_MAX: usize = 4096;

/// A file compared with the known programs: its size and change time
/// (seconds, nanoseconds) then, and the program it was.
type Compared = (u64, i64, i64, Option<usize>);

/// The standard shells, interpreters and network tools of this machine
/// by content, and the files already compared with them.
pub struct Identities {
    dirs: Vec<String>,
    built: Option<Instant>,
    /// By the real path of an installed program.
    by_path: HashMap<String, usize>,
    /// By file size, then content: only files of a known program's size
    /// are read.
    by_size: HashMap<u64, Vec<(Fingerprint, usize)>>,
    known: Vec<Known>,
    /// Files compared already: (device, inode) with their size and change
    /// time, and what they turned out to be.
    files: HashMap<(u64, u64), Compared>,
}

impl Default for Identities {
    fn default() -> Self {
        Self::new(SYSTEM_BIN_DIRS.iter().map(|d| (*d).to_owned()).collect())
    }
}

/// What [`Identities::identify`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The program's name (`dash`, `socat`, `busybox`).
    pub name: Arc<str>,
    /// The file is not installed under any of the program's names.
    pub renamed: bool,
}

impl Identities {
    pub fn new(dirs: Vec<String>) -> Self {
        Self {
            dirs,
            built: None,
            by_path: HashMap::new(),
            by_size: HashMap::new(),
            known: Vec::new(),
            files: HashMap::new(),
        }
    }

    fn build(&mut self) {
        self.by_path.clear();
        self.by_size.clear();
        self.known.clear();
        self.files.clear();
        let mut by_print: HashMap<Fingerprint, usize> = HashMap::new();
        let mut seen_real: HashMap<String, usize> = HashMap::new();
        for dir in self.dirs.clone() {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            let mut names: Vec<String> = entries
                .filter_map(|e| e.ok()?.file_name().into_string().ok())
                .filter(|n| {
                    TOOL_NAMES.contains(&n.as_str())
                        || VERSIONED_STEMS.iter().any(|s| versioned(n, s) && n != s)
                })
                .collect();
            names.sort();
            for n in names {
                let path = Path::new(&dir).join(&n);
                let Ok(real) = std::fs::canonicalize(&path) else {
                    continue;
                };
                let real = real.to_string_lossy().into_owned();
                let idx = if let Some(&i) = seen_real.get(&real) {
                    i
                } else {
                    let Ok(meta) = std::fs::metadata(&real) else {
                        continue;
                    };
                    let Some(print) = fingerprint(Path::new(&real), meta.len()) else {
                        continue;
                    };
                    let i = match by_print.get(&print) {
                        Some(&i) => i,
                        None => {
                            // Named as the installed file is (`dash` for
                            // sh, `xtables-nft-multi` for iptables), which
                            // is what the applet of a multi-call binary
                            // is worked out from.
                            self.known.push(Known {
                                name: Arc::from(generic(basename(&real))),
                                names: Vec::new(),
                            });
                            let i = self.known.len() - 1;
                            by_print.insert(print.clone(), i);
                            self.by_size.entry(meta.len()).or_default().push((print, i));
                            i
                        }
                    };
                    seen_real.insert(real.clone(), i);
                    self.by_path.insert(real.clone(), i);
                    let real_base = basename(&real).to_owned();
                    if !self.known[i].names.contains(&real_base) {
                        self.known[i].names.push(real_base);
                    }
                    i
                };
                if !self.known[idx].names.contains(&n) {
                    self.known[idx].names.push(n);
                }
            }
        }
        self.built = Some(Instant::now());
    }

    fn ready(&mut self) {
        if self.built.is_none_or(|t| t.elapsed() >= KNOWN_REFRESH) {
            self.build();
        }
    }

    /// Which known program the file at `path` is, by content. Files of a
    /// size no known program has are not read; each file is compared once
    /// (until it changes).
    pub fn identify(&mut self, path: &str) -> Option<Identity> {
        self.ready();
        let at = |k: &Known, path: &str| Identity {
            name: k.name.clone(),
            renamed: !k.names.iter().any(|n| n == basename(path)),
        };
        if let Some(&i) = self.by_path.get(path) {
            return Some(at(&self.known[i], path));
        }
        let meta = std::fs::metadata(path).ok()?;
        if !meta.is_file() {
            return None;
        }
        let candidates = self.by_size.get(&meta.len())?;
        let key = (meta.dev(), meta.ino());
        let stamp = (meta.len(), meta.ctime(), meta.ctime_nsec());
        let found = match self.files.get(&key) {
            Some(&(len, c, cn, found)) if (len, c, cn) == stamp => found,
            _ => {
                let print = fingerprint(Path::new(path), meta.len());
                let found =
                    print.and_then(|p| candidates.iter().find(|(q, _)| *q == p).map(|(_, i)| *i));
                if self.files.len() >= FILES_MAX {
                    self.files.clear();
                }
                self.files.insert(key, (stamp.0, stamp.1, stamp.2, found));
                found
            }
        };
        found.map(|i| at(&self.known[i], path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn paths_are_made_absolute_and_normal() {
        assert_eq!(
            normalize("//etc/shadow", None).as_deref(),
            Some("/etc/shadow")
        );
        assert_eq!(
            normalize("/etc/./ssl/../shadow", None).as_deref(),
            Some("/etc/shadow")
        );
        assert_eq!(
            normalize("/../../etc/shadow", None).as_deref(),
            Some("/etc/shadow")
        );
        assert_eq!(
            normalize("shadow", Some("/etc")).as_deref(),
            Some("/etc/shadow")
        );
        assert_eq!(
            normalize("../etc/shadow", Some("/root")).as_deref(),
            Some("/etc/shadow")
        );
        assert_eq!(normalize("x", None), None);
        assert_eq!(
            normalize(".../deep/x", Some("/tmp")).as_deref(),
            Some("/tmp/.../deep/x")
        );
        assert_eq!(normalize("/", None).as_deref(), Some("/"));
    }

    #[test]
    fn command_line_paths() {
        let a = argv(&[
            "cat",
            "-n",
            "//etc/shadow",
            "--file=/etc/./gshadow",
            "hello world",
        ]);
        assert_eq!(
            paths(Argv::Typed(&a), None),
            ["/etc/shadow", "/etc/gshadow"]
        );
        let a = argv(&["dd", "if=../etc/shadow", "of=/dev/null"]);
        assert_eq!(
            paths(Argv::Typed(&a), Some("/root")),
            ["/etc/shadow", "/dev/null"]
        );
        let a = argv(&["cat", "shadow"]);
        assert_eq!(paths(Argv::Typed(&a), Some("/etc")), ["/etc/shadow"]);
        assert!(paths(Argv::Typed(&a), None).is_empty());
    }

    #[test]
    fn loader_names_and_targets() {
        for n in [
            "ld-linux-x86-64.so.2",
            "ld-linux-armhf.so.3",
            "ld-musl-arm.so.1",
            "ld.so.1",
            "ld64.so.2",
            "ld-2.31.so",
        ] {
            assert!(is_loader(n), "{n}");
        }
        for n in ["ldd", "ld", "ld.bfd", "ldconfig", "lds"] {
            assert!(!is_loader(n), "{n}");
        }
        let t = |a: &[&str]| loader_target(Argv::Typed(&argv(a)));
        assert_eq!(t(&["/lib64/ld-linux-x86-64.so.2", "/bin/sh"]), Some(1));
        assert_eq!(
            t(&[
                "ld.so",
                "--library-path",
                "/x",
                "--inhibit-cache",
                "./tool",
                "-a"
            ]),
            Some(4)
        );
        assert_eq!(t(&["ld.so", "--argv0", "kworker", "--", "/tmp/x"]), Some(4));
        assert_eq!(t(&["ld.so", "--list", "/bin/ls"]), None);
        assert_eq!(t(&["ld.so", "--verify", "/bin/ls"]), None);
        assert_eq!(t(&["ld.so"]), None);
    }

    #[test]
    fn interpreter_program_files() {
        let s = |f: Family, a: &[&str]| script_index(f, Argv::Typed(&argv(a)));
        use Family::*;
        assert_eq!(s(Shell, &["sh", "/tmp/x.sh"]), Some(1));
        assert_eq!(s(Shell, &["/bin/sh", "-e", "/tmp/x.sh", "arg"]), Some(2));
        assert_eq!(
            s(Shell, &["bash", "-o", "pipefail", "--norc", "x.sh"]),
            Some(4)
        );
        assert_eq!(s(Shell, &["bash", "+x", "x.sh"]), Some(2));
        assert_eq!(s(Shell, &["sh", "-c", "id"]), None);
        assert_eq!(s(Shell, &["sh", "-ec", "id"]), None);
        assert_eq!(s(Shell, &["sh", "-s"]), None);
        assert_eq!(s(Shell, &["sh", "-i"]), None);
        assert_eq!(s(Shell, &["sh", "-"]), None);
        assert_eq!(s(Shell, &["sh"]), None);
        assert_eq!(s(Shell, &["bash", "--", "x.sh"]), Some(2));
        assert_eq!(s(Python, &["python3", "-u", "/tmp/a.py"]), Some(2));
        assert_eq!(s(Python, &["python3", "-W", "ignore", "a.py"]), Some(3));
        assert_eq!(s(Python, &["python3", "-Wignore", "a.py"]), Some(2));
        assert_eq!(s(Python, &["python3", "-c", "print(1)"]), None);
        assert_eq!(s(Python, &["python3", "-uc", "print(1)"]), None);
        assert_eq!(s(Python, &["python3", "-m", "http.server"]), None);
        assert_eq!(s(Perl, &["perl", "-w", "/tmp/x.pl"]), Some(2));
        assert_eq!(s(Perl, &["perl", "-e", "print 1"]), None);
        assert_eq!(s(Perl, &["perl", "-MIO::Socket", "-e", "1"]), None);
        assert_eq!(s(Php, &["php", "-f", "/tmp/x.php"]), Some(2));
        assert_eq!(s(Php, &["php", "-r", "system('id');"]), None);
        assert_eq!(s(Php, &["php", "-d", "a=b", "x.php"]), Some(3));
        assert_eq!(
            s(Node, &["node", "--max-old-space-size=64", "app.js"]),
            Some(2)
        );
        assert_eq!(s(Node, &["node", "-e", "1"]), None);
        assert_eq!(s(Ruby, &["ruby", "-r", "socket", "x.rb"]), Some(3));
        assert_eq!(s(Lua, &["lua", "-e", "x=1", "s.lua"]), Some(3));
        assert_eq!(family("python3.11"), Some(Python));
        assert_eq!(family("dash"), Some(Shell));
        assert_eq!(family("pythonista"), None);
        assert_eq!(family("ls"), None);
    }

    fn tool_dir(tag: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("ew-identity-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("dir");
        d
    }

    #[test]
    fn a_renamed_copy_is_known_by_its_content() {
        let Ok(true_bin) = std::fs::canonicalize("/bin/true") else {
            return;
        };
        let bin = tool_dir("bin");
        let elsewhere = tool_dir("else");
        // A fake "socat" whose content is true's: the table knows it as
        // socat, so its copies are socat too.
        std::fs::copy(&true_bin, bin.join("socat")).expect("copy");
        std::fs::copy(&true_bin, elsewhere.join("kworker-io")).expect("copy");
        std::fs::write(elsewhere.join("other"), b"#!/bin/sh\necho\n").expect("write");
        let mut ids = Identities::new(vec![bin.display().to_string()]);
        let copy = elsewhere.join("kworker-io").display().to_string();
        let id = ids.identify(&copy).expect("known by content");
        assert_eq!(&*id.name, "socat");
        assert!(id.renamed);
        let installed = ids
            .identify(&bin.join("socat").display().to_string())
            .expect("installed");
        assert!(!installed.renamed);
        assert_eq!(
            ids.identify(&elsewhere.join("other").display().to_string()),
            None
        );
        // Changed in place: compared again.
        std::fs::write(&copy, b"not a program").expect("overwrite");
        assert_eq!(ids.identify(&copy), None);
        let _ = std::fs::remove_dir_all(&bin);
        let _ = std::fs::remove_dir_all(&elsewhere);
    }

    #[test]
    fn build_ids_are_read_from_elf_notes() {
        let Ok(mut f) = std::fs::File::open("/bin/true") else {
            return;
        };
        let id = elf_build_id(&mut f).expect("Debian builds carry a build-id");
        assert!(id.len() >= 16);
        let d = tool_dir("elf");
        let junk = d.join("junk");
        std::fs::write(&junk, b"\x7fELF\x02\x01\x01\0garbage").expect("write");
        assert_eq!(
            elf_build_id(&mut std::fs::File::open(&junk).expect("open")),
            None
        );
        let _ = std::fs::remove_dir_all(&d);
    }
}
