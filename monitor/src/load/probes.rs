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
    /// A BTF-typed raw tracepoint (`tp_btf`).
    BtfTracepoint(&'static str),
    /// A `cgroup_sock` program on the cgroup v2 root; the attach point
    /// (`sock_create`, `sock_release`) is in the program's section.
    CgroupSock(&'static str),
    /// A `cgroup_skb` program on the cgroup v2 root.
    CgroupSkb(SkbDirection),
    /// A `cgroup/sysctl` program on the cgroup v2 root.
    CgroupSysctl,
    /// A TC egress classifier: loaded here, attached to each interface by
    /// the data plane stage as interfaces appear.
    TcEgress,
}

/// Direction of a `cgroup_skb` program.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SkbDirection {
    Ingress,
    Egress,
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
    ProbeSpec {
        name: "net_sock_create",
        hook: Hook::CgroupSock("sock_create"),
        required: false,
        loses: "the creator of sockets that never connect, listen, accept or bind; UDP flows name no process",
    },
    ProbeSpec {
        name: "net_sock_release",
        hook: Hook::CgroupSock("sock_release"),
        required: false,
        loses: "the end of UDP flows at socket close; they end at the idle timeout instead",
    },
    ProbeSpec {
        name: "net_inet_sock_set_state",
        hook: Hook::BtfTracepoint("inet_sock_set_state"),
        required: false,
        loses: "TCP connect, connect result, listen and close events",
    },
    ProbeSpec {
        name: "net_sys_exit_accept",
        hook: Hook::Tracepoint("syscalls", "sys_exit_accept"),
        required: false,
        loses: "accept events from accept(2)",
    },
    ProbeSpec {
        name: "net_sys_exit_accept4",
        hook: Hook::Tracepoint("syscalls", "sys_exit_accept4"),
        required: false,
        loses: "accept events from accept4(2)",
    },
    ProbeSpec {
        name: "net_sys_enter_bind",
        hook: Hook::Tracepoint("syscalls", "sys_enter_bind"),
        required: false,
        loses: "bind events",
    },
    ProbeSpec {
        name: "net_sys_exit_bind",
        hook: Hook::Tracepoint("syscalls", "sys_exit_bind"),
        required: false,
        loses: "bind events",
    },
    ProbeSpec {
        name: "net_sock_send_length",
        hook: Hook::BtfTracepoint("sock_send_length"),
        required: false,
        loses: "which process sends on which socket (Linux 6.4+); relays are paired by socket owner, short forwards inside an SSH session and relays split over a unix socket go unseen",
    },
    ProbeSpec {
        name: "net_sock_recv_length",
        hook: Hook::BtfTracepoint("sock_recv_length"),
        required: false,
        loses: "which process receives on which socket and what it read before it dialled (Linux 6.4+); relays are paired by socket owner, short forwards inside an SSH session and relays split over a unix socket go unseen",
    },
    ProbeSpec {
        name: "net_skb_ingress",
        hook: Hook::CgroupSkb(SkbDirection::Ingress),
        required: false,
        loses: "received byte and packet counts, and UDP flows first seen inbound",
    },
    ProbeSpec {
        name: "net_skb_egress",
        hook: Hook::CgroupSkb(SkbDirection::Egress),
        required: false,
        loses: "sent byte and packet counts, and UDP flows first seen outbound",
    },
    ProbeSpec {
        name: "forward_tc_egress",
        hook: Hook::TcEgress,
        required: false,
        loses: "forwarded-flow counts and transit (hairpin, DNAT) detection",
    },
    ProbeSpec {
        name: "config_sysctl",
        hook: Hook::CgroupSysctl,
        required: false,
        loses: "IP forwarding and other relay-enabling sysctl changes",
    },
    ProbeSpec {
        name: "config_sys_enter_setsockopt",
        hook: Hook::Tracepoint("syscalls", "sys_enter_setsockopt"),
        required: false,
        loses: "legacy iptables/ebtables ruleset changes, promiscuous packet sockets and socket filters",
    },
    ProbeSpec {
        name: "config_sys_enter_ioctl",
        hook: Hook::Tracepoint("syscalls", "sys_enter_ioctl"),
        required: false,
        loses: "tun/tap creation and promiscuous mode set by ioctl",
    },
    ProbeSpec {
        name: "config_sys_enter_socket",
        hook: Hook::Tracepoint("syscalls", "sys_enter_socket"),
        required: false,
        loses: "packet (AF_PACKET) sockets opened",
    },
    ProbeSpec {
        name: "config_sys_enter_bpf",
        hook: Hook::Tracepoint("syscalls", "sys_enter_bpf"),
        required: false,
        loses: "BPF programs loaded by other processes",
    },
    ProbeSpec {
        name: "config_sys_enter_sendmsg",
        hook: Hook::Tracepoint("syscalls", "sys_enter_sendmsg"),
        required: false,
        loses: "the process behind tunnel links and promiscuous mode set over netlink (ip link)",
    },
    ProbeSpec {
        name: "config_sys_enter_sendto",
        hook: Hook::Tracepoint("syscalls", "sys_enter_sendto"),
        required: false,
        loses: "the process behind tunnel links and promiscuous mode set over netlink by sendto(2)",
    },
];

impl Hook {
    pub fn describe(&self) -> String {
        match self {
            Hook::RawTracepoint(tp) => format!("raw_tracepoint/{tp}"),
            Hook::Tracepoint(cat, name) => format!("tracepoint/{cat}/{name}"),
            Hook::BtfTracepoint(tp) => format!("tp_btf/{tp}"),
            Hook::CgroupSock(at) => format!("cgroup/{at}"),
            Hook::CgroupSkb(SkbDirection::Ingress) => "cgroup_skb/ingress".to_owned(),
            Hook::CgroupSkb(SkbDirection::Egress) => "cgroup_skb/egress".to_owned(),
            Hook::CgroupSysctl => "cgroup/sysctl".to_owned(),
            Hook::TcEgress => "tc/egress".to_owned(),
        }
    }
}

/// Whether each probe is attached: set when the probes load, cleared by
/// the self-check when one is detached from outside.
#[derive(Clone)]
pub struct ProbeMetrics {
    pub probe_attached: prometheus::IntGaugeVec,
}

impl ProbeMetrics {
    pub fn register(registry: &prometheus::Registry) -> Self {
        let probe_attached = crate::metrics::gauge_vec(
            registry,
            "probe_attached",
            "Whether each probe is attached (1) or not (0).",
            &["probe"],
        );
        for p in PROBES {
            probe_attached.with_label_values(&[p.name]).set(0);
        }
        Self { probe_attached }
    }
}
