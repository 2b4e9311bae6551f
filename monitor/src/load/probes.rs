//! The probes the monitor attaches: one declarative table, so what each hook
//! needs from the kernel and what is lost without it is stated once and
//! reported the same way on every kernel.

/// How a program attaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    /// `BPF_RAW_TRACEPOINT_OPEN` on a tracepoint's `TP_PROTO` arguments.
    RawTracepoint(&'static str),
    /// A tracefs tracepoint, `category:name`.
    Tracepoint(&'static str, &'static str),
}

/// One program of the eBPF object and what it is for.
#[derive(Debug, Clone, Copy)]
pub struct ProbeSpec {
    /// Program name in the object, `<family>_<hook>`; also the `probe`
    /// label value of the attach metric.
    pub name: &'static str,
    pub hook: Hook,
    /// Without a required probe the monitor cannot do its job and exits.
    pub required: bool,
    /// What is lost when this probe does not attach.
    pub loses: &'static str,
}

/// Every probe, in attach order.
pub const PROBES: &[ProbeSpec] = &[
    ProbeSpec {
        name: "process_sched_exec",
        hook: Hook::RawTracepoint("sched_process_exec"),
        required: true,
        loses: "all exec events",
    },
    ProbeSpec {
        name: "process_sched_fork",
        hook: Hook::RawTracepoint("sched_process_fork"),
        required: false,
        loses: "fork events; children are learnt at their first exec",
    },
    ProbeSpec {
        name: "process_sched_exit",
        hook: Hook::RawTracepoint("sched_process_exit"),
        required: false,
        loses: "exit events; exited processes stay in the table until evicted",
    },
    ProbeSpec {
        name: "process_sys_enter_execve",
        hook: Hook::Tracepoint("syscalls", "sys_enter_execve"),
        required: false,
        loses: "failed execve attempts",
    },
    ProbeSpec {
        name: "process_sys_exit_execve",
        hook: Hook::Tracepoint("syscalls", "sys_exit_execve"),
        required: false,
        loses: "failed execve attempts",
    },
    ProbeSpec {
        name: "process_sys_enter_execveat",
        hook: Hook::Tracepoint("syscalls", "sys_enter_execveat"),
        required: false,
        loses: "failed execveat attempts",
    },
    ProbeSpec {
        name: "process_sys_exit_execveat",
        hook: Hook::Tracepoint("syscalls", "sys_exit_execveat"),
        required: false,
        loses: "failed execveat attempts",
    },
];

impl Hook {
    pub fn describe(&self) -> String {
        match self {
            Hook::RawTracepoint(tp) => format!("raw_tracepoint/{tp}"),
            Hook::Tracepoint(cat, name) => format!("tracepoint/{cat}/{name}"),
        }
    }
}
