//! Decoding of ring-buffer records into owned kernel events.
//!
//! The layouts are `monitor_common::event`; every record starts with
//! `EventHeader`, whose `kind` and `size` this module checks before it
//! reads anything else. Bad records are rejected with a reason, never
//! trusted: a length that points past the record is an error, not a panic.

use monitor_common::event::{
    BenchEvent, ConfigEvent, EventHeader, ExecEvent, ExecFailedEvent, ExitEvent, ForkEvent,
    NetEvent, KIND_BENCH, KIND_CONFIG, KIND_EXEC, KIND_EXEC_FAILED, KIND_EXIT, KIND_FORK,
    KIND_NET_ACCEPT, KIND_NET_BIND, KIND_NET_CLOSE, KIND_NET_CONNECT, KIND_NET_CONNECT_RESULT,
    KIND_NET_LISTEN, KIND_NET_RELEASE, KIND_NET_UDP_FLOW,
};

/// Every kernel record kind with its name: the `kind` label values of the
/// kernel loss metric.
pub const KERNEL_KINDS: [(u32, &str); 14] = [
    (KIND_EXEC, "exec"),
    (KIND_EXEC_FAILED, "exec_failed"),
    (KIND_FORK, "fork"),
    (KIND_EXIT, "exit"),
    (KIND_NET_CONNECT, "connect"),
    (KIND_NET_CONNECT_RESULT, "connect_result"),
    (KIND_NET_LISTEN, "listen"),
    (KIND_NET_ACCEPT, "accept"),
    (KIND_NET_BIND, "bind"),
    (KIND_NET_CLOSE, "close"),
    (KIND_NET_UDP_FLOW, "udp_flow"),
    (KIND_NET_RELEASE, "release"),
    (KIND_CONFIG, "config_change"),
    (KIND_BENCH, "bench"),
];

/// Why a record could not be decoded. The variants are the values of the
/// `reason` label of the decode-error metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("record shorter than its fixed part")]
    Short,
    #[error("record size field disagrees with the record length")]
    SizeMismatch,
    #[error("unknown record kind")]
    UnknownKind,
    #[error("variable part lengths exceed the record")]
    BadLength,
}

impl DecodeError {
    pub const ALL: [DecodeError; 4] = [
        DecodeError::Short,
        DecodeError::SizeMismatch,
        DecodeError::UnknownKind,
        DecodeError::BadLength,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DecodeError::Short => "short",
            DecodeError::SizeMismatch => "size_mismatch",
            DecodeError::UnknownKind => "unknown_kind",
            DecodeError::BadLength => "bad_length",
        }
    }
}

/// A decoded kernel record: the fixed part as the kernel wrote it, and the
/// variable parts as raw bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KernelEvent {
    Exec {
        fixed: ExecEvent,
        exe: Vec<u8>,
        cwd: Vec<u8>,
        argv: Vec<u8>,
    },
    ExecFailed {
        fixed: ExecFailedEvent,
        filename: Vec<u8>,
        cwd: Vec<u8>,
        argv: Vec<u8>,
    },
    Fork(ForkEvent),
    Exit(ExitEvent),
    Net(NetEvent),
    Config(ConfigEvent),
    /// A record of the benchmark's synthetic producer: counted, not written.
    Bench(BenchEvent),
}

impl KernelEvent {
    /// When the kernel made the record (boot clock, ns).
    pub fn ts_boot_ns(&self) -> u64 {
        match self {
            Self::Exec { fixed, .. } => fixed.header.ts_boot_ns,
            Self::ExecFailed { fixed, .. } => fixed.header.ts_boot_ns,
            Self::Fork(f) => f.header.ts_boot_ns,
            Self::Exit(x) => x.header.ts_boot_ns,
            Self::Net(n) => n.header.ts_boot_ns,
            Self::Config(c) => c.header.ts_boot_ns,
            Self::Bench(b) => b.header.ts_boot_ns,
        }
    }
}

/// Copies a `#[repr(C)]` plain-data record out of possibly unaligned bytes.
fn read_fixed<T: Copy>(bytes: &[u8]) -> Result<T, DecodeError> {
    if bytes.len() < size_of::<T>() {
        return Err(DecodeError::Short);
    }
    // SAFETY: the length was checked, `read_unaligned` has no alignment
    // requirement, and the `monitor_common` event types are plain integers
    // for which every bit pattern is valid.
    Ok(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) })
}

/// Splits `rest` into parts of the given lengths.
fn split_parts<const N: usize>(rest: &[u8], lens: [usize; N]) -> Result<[Vec<u8>; N], DecodeError> {
    let total: usize = lens.iter().sum();
    if total > rest.len() {
        return Err(DecodeError::BadLength);
    }
    let mut at = 0;
    Ok(lens.map(|len| {
        let part = rest[at..at + len].to_vec();
        at += len;
        part
    }))
}

/// Decodes one ring-buffer record.
pub fn decode(bytes: &[u8]) -> Result<KernelEvent, DecodeError> {
    let header: EventHeader = read_fixed(bytes)?;
    if header.size as usize != bytes.len() {
        return Err(DecodeError::SizeMismatch);
    }
    match header.kind {
        KIND_EXEC => {
            let fixed: ExecEvent = read_fixed(bytes)?;
            let rest = &bytes[size_of::<ExecEvent>()..];
            let [exe, cwd, argv] = split_parts(
                rest,
                [
                    fixed.exe_len as usize,
                    fixed.cwd_len as usize,
                    fixed.argv_len as usize,
                ],
            )?;
            Ok(KernelEvent::Exec {
                fixed,
                exe,
                cwd,
                argv,
            })
        }
        KIND_EXEC_FAILED => {
            let fixed: ExecFailedEvent = read_fixed(bytes)?;
            let rest = &bytes[size_of::<ExecFailedEvent>()..];
            let [filename, cwd, argv] = split_parts(
                rest,
                [
                    fixed.filename_len as usize,
                    fixed.cwd_len as usize,
                    fixed.argv_len as usize,
                ],
            )?;
            Ok(KernelEvent::ExecFailed {
                fixed,
                filename,
                cwd,
                argv,
            })
        }
        KIND_FORK => Ok(KernelEvent::Fork(read_fixed(bytes)?)),
        KIND_EXIT => Ok(KernelEvent::Exit(read_fixed(bytes)?)),
        KIND_NET_CONNECT
        | KIND_NET_CONNECT_RESULT
        | KIND_NET_LISTEN
        | KIND_NET_ACCEPT
        | KIND_NET_BIND
        | KIND_NET_CLOSE
        | KIND_NET_UDP_FLOW
        | KIND_NET_RELEASE => {
            if bytes.len() != size_of::<NetEvent>() {
                return Err(DecodeError::SizeMismatch);
            }
            Ok(KernelEvent::Net(read_fixed(bytes)?))
        }
        KIND_CONFIG => {
            if bytes.len() != size_of::<ConfigEvent>() {
                return Err(DecodeError::SizeMismatch);
            }
            Ok(KernelEvent::Config(read_fixed(bytes)?))
        }
        KIND_BENCH => {
            if bytes.len() != size_of::<BenchEvent>() {
                return Err(DecodeError::SizeMismatch);
            }
            Ok(KernelEvent::Bench(read_fixed(bytes)?))
        }
        _ => Err(DecodeError::UnknownKind),
    }
}

/// Rebuilds a path from components sent leaf first, each NUL-terminated.
/// No components means the root.
pub fn path_from_components(raw: &[u8]) -> Vec<u8> {
    let mut parts: Vec<&[u8]> = raw.split(|&b| b == 0).filter(|c| !c.is_empty()).collect();
    parts.reverse();
    let mut out = Vec::with_capacity(raw.len() + 1);
    for part in parts {
        out.push(b'/');
        out.extend_from_slice(part);
    }
    if out.is_empty() {
        out.push(b'/');
    }
    out
}

/// Splits a NUL-separated argument block. The final NUL ends the last
/// argument; a block cut short keeps its partial last argument.
pub fn split_args(raw: &[u8]) -> Vec<&[u8]> {
    if raw.is_empty() {
        return Vec::new();
    }
    let raw = raw.strip_suffix(&[0]).unwrap_or(raw);
    raw.split(|&b| b == 0).collect()
}

/// Returns the bytes before the first NUL of a fixed-size C string.
pub fn c_str(raw: &[u8]) -> &[u8] {
    raw.iter().position(|&b| b == 0).map_or(raw, |n| &raw[..n])
}

#[cfg(test)]
pub(crate) mod tests {
    use monitor_common::event::{StdioFd, TaskInfo};
    use proptest::prelude::*;

    use super::*;

    fn as_bytes<T>(v: &T) -> &[u8] {
        // SAFETY: test helper over plain-data records without padding.
        unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), size_of::<T>()) }
    }

    /// Builds the bytes of an exec record as the kernel would.
    pub(crate) fn exec_record(pid: u32, exe: &[u8], cwd: &[u8], argv: &[u8]) -> Vec<u8> {
        let mut fixed = ExecEvent {
            task: TaskInfo {
                ppid: 1,
                uid: 1000,
                euid: 1000,
                gid: 100,
                egid: 100,
                auid: u32::MAX,
                start_boot_ns: 5,
                cgroup_id: 7,
                comm: *b"echo\0\0\0\0\0\0\0\0\0\0\0\0",
                ns: monitor_common::event::Namespaces {
                    net: 4026531840,
                    mnt: 4026531841,
                    pid: 4026531836,
                    uts: 4026531838,
                },
            },
            stdio: [
                StdioFd {
                    mode: 0o020620,
                    rdev: 136 << 20,
                    ino: 3,
                },
                StdioFd {
                    mode: 0o010600,
                    rdev: 0,
                    ino: 4242,
                },
                StdioFd::default(),
            ],
            exe_len: exe.len() as u16,
            cwd_len: cwd.len() as u16,
            argv_len: argv.len() as u32,
            ..Default::default()
        };
        let size = size_of::<ExecEvent>() + exe.len() + cwd.len() + argv.len();
        fixed.header = EventHeader {
            kind: KIND_EXEC,
            size: size as u32,
            ts_boot_ns: 1_000_000,
            pid,
            tid: pid,
        };
        let mut out = as_bytes(&fixed).to_vec();
        out.extend_from_slice(exe);
        out.extend_from_slice(cwd);
        out.extend_from_slice(argv);
        out
    }

    #[test]
    fn decodes_exec_with_variable_parts() {
        let rec = exec_record(42, b"echo\0bin\0usr\0", b"tmp\0", b"/bin/echo\0x y\0z\0");
        let KernelEvent::Exec {
            fixed,
            exe,
            cwd,
            argv,
        } = decode(&rec).expect("decodes")
        else {
            panic!("not an exec");
        };
        assert_eq!(fixed.header.pid, 42);
        assert_eq!(path_from_components(&exe), b"/usr/bin/echo");
        assert_eq!(path_from_components(&cwd), b"/tmp");
        assert_eq!(split_args(&argv), vec![&b"/bin/echo"[..], b"x y", b"z"]);
    }

    #[test]
    fn decodes_fixed_records() {
        let fork = ForkEvent {
            header: EventHeader {
                kind: KIND_FORK,
                size: size_of::<ForkEvent>() as u32,
                ts_boot_ns: 1,
                pid: 9,
                tid: 9,
            },
            task: TaskInfo::default(),
        };
        assert_eq!(decode(as_bytes(&fork)), Ok(KernelEvent::Fork(fork)));
    }

    #[test]
    fn rejects_bad_records() {
        assert_eq!(decode(&[1, 2, 3]), Err(DecodeError::Short));
        let mut rec = exec_record(1, b"a\0", b"", b"a\0");
        rec.push(0);
        assert_eq!(decode(&rec), Err(DecodeError::SizeMismatch));
        let mut rec = exec_record(1, b"a\0", b"", b"a\0");
        rec[0] = 99;
        assert_eq!(decode(&rec), Err(DecodeError::UnknownKind));
        let mut rec = exec_record(1, b"a\0", b"", b"a\0");
        let argv_len_at = size_of::<ExecEvent>() - 8;
        rec[argv_len_at..argv_len_at + 4].copy_from_slice(&1000u32.to_ne_bytes());
        assert_eq!(decode(&rec), Err(DecodeError::BadLength));
    }

    #[test]
    fn root_and_empty_argv() {
        assert_eq!(path_from_components(b""), b"/");
        assert_eq!(split_args(b""), Vec::<&[u8]>::new());
        assert_eq!(split_args(b"\0"), vec![&b""[..]]);
        assert_eq!(split_args(b"a\0b"), vec![&b"a"[..], b"b"]);
    }

    /// Size of the fixed part of a record of `kind`.
    fn fixed_size(kind: u32) -> usize {
        match kind {
            KIND_EXEC => size_of::<ExecEvent>(),
            KIND_EXEC_FAILED => size_of::<ExecFailedEvent>(),
            KIND_FORK => size_of::<ForkEvent>(),
            KIND_EXIT => size_of::<ExitEvent>(),
            KIND_CONFIG => size_of::<ConfigEvent>(),
            KIND_BENCH => size_of::<BenchEvent>(),
            _ => size_of::<NetEvent>(),
        }
    }

    /// A well-formed record of `kind`: `fixed` (cut or zero-padded to the
    /// fixed part) with the header's kind and size and the lengths of the
    /// variable parts set to match, then the parts (exec kinds only).
    pub(crate) fn valid_record(kind: u32, fixed: &[u8], parts: [&[u8]; 3]) -> Vec<u8> {
        let mut rec = fixed.to_vec();
        rec.resize(fixed_size(kind), 0);
        let mut set = |at: usize, v: &[u8]| rec[at..at + v.len()].copy_from_slice(v);
        let lens = match kind {
            KIND_EXEC => Some((
                std::mem::offset_of!(ExecEvent, exe_len),
                std::mem::offset_of!(ExecEvent, cwd_len),
                std::mem::offset_of!(ExecEvent, argv_len),
            )),
            KIND_EXEC_FAILED => Some((
                std::mem::offset_of!(ExecFailedEvent, filename_len),
                std::mem::offset_of!(ExecFailedEvent, cwd_len),
                std::mem::offset_of!(ExecFailedEvent, argv_len),
            )),
            _ => None,
        };
        let variable = if let Some((a, b, c)) = lens {
            set(a, &(parts[0].len() as u16).to_ne_bytes());
            set(b, &(parts[1].len() as u16).to_ne_bytes());
            set(c, &(parts[2].len() as u32).to_ne_bytes());
            parts.concat()
        } else {
            Vec::new()
        };
        let size = (fixed_size(kind) + variable.len()) as u32;
        set(std::mem::offset_of!(EventHeader, kind), &kind.to_ne_bytes());
        set(std::mem::offset_of!(EventHeader, size), &size.to_ne_bytes());
        rec.extend_from_slice(&variable);
        rec
    }

    /// The bytes of a decoded record: the inverse of [`decode`].
    fn encode(ev: &KernelEvent) -> Vec<u8> {
        match ev {
            KernelEvent::Exec {
                fixed,
                exe,
                cwd,
                argv,
            } => [as_bytes(fixed), exe, cwd, argv].concat(),
            KernelEvent::ExecFailed {
                fixed,
                filename,
                cwd,
                argv,
            } => [as_bytes(fixed), filename, cwd, argv].concat(),
            KernelEvent::Fork(f) => as_bytes(f).to_vec(),
            KernelEvent::Exit(x) => as_bytes(x).to_vec(),
            KernelEvent::Net(n) => as_bytes(n).to_vec(),
            KernelEvent::Config(c) => as_bytes(c).to_vec(),
            KernelEvent::Bench(b) => as_bytes(b).to_vec(),
        }
    }

    /// A kernel record kind, any fixed part, and variable parts.
    pub(crate) fn any_record() -> impl Strategy<Value = Vec<u8>> {
        let part = || proptest::collection::vec(any::<u8>(), 0..48);
        (
            proptest::sample::select(KERNEL_KINDS.map(|(k, _)| k).to_vec()),
            // The largest fixed part (a config record's).
            proptest::collection::vec(
                any::<u8>(),
                std::mem::size_of::<monitor_common::event::ConfigEvent>(),
            ),
            part(),
            part(),
            part(),
        )
            .prop_map(|(kind, fixed, a, b, c)| valid_record(kind, &fixed, [&a, &b, &c]))
    }

    proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode(&bytes);
        }

        /// Every well-formed record of every kind decodes, and its decoded
        /// form holds every byte: encoding it again gives the record back.
        #[test]
        fn valid_records_round_trip(rec in any_record()) {
            let ev = decode(&rec).map_err(|e| TestCaseError::fail(format!("{e}")))?;
            prop_assert_eq!(encode(&ev), rec);
        }

        /// A record cut anywhere short of its end is an error, not a panic
        /// nor a shorter event.
        #[test]
        fn truncated_records_are_errors(rec in any_record(), cut in any::<prop::sample::Index>()) {
            let cut = cut.index(rec.len());
            prop_assert!(decode(&rec[..cut]).is_err());
        }

        #[test]
        fn decode_never_panics_on_corrupted_exec(
            flips in proptest::collection::vec((0usize..200, any::<u8>()), 0..8)
        ) {
            let mut rec = exec_record(3, b"x\0", b"y\0", b"a\0b\0");
            for (i, v) in flips {
                if i < rec.len() { rec[i] = v; }
            }
            let _ = decode(&rec);
        }
    }
}
