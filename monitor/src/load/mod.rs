//! The load stage: prepare the kernel interface, resolve structure offsets,
//! load the embedded eBPF object and attach every probe in [`probes::PROBES`].

pub mod caps;
pub mod env;
pub mod offsets;
pub mod probes;

use std::fs::File;

use aya::{
    programs::{
        BtfTracePoint, CgroupAttachMode, CgroupSkb, CgroupSkbAttachType, CgroupSock, CgroupSysctl,
        RawTracePoint, SchedClassifier, TracePoint,
    },
    Btf, Ebpf, EbpfLoader,
};
use monitor_common::limits::{
    GLOBAL_MONITOR_TGID, GLOBAL_OFFSETS, MAP_FWD_FLOWS, MAP_NET_EVENTS, MAP_PROC_EVENTS,
    MAP_SCRATCH,
};

use self::probes::{Hook, ProbeSpec, SkbDirection, PROBES};
use crate::config::Config;

/// The eBPF object built by `build.rs` from `monitor-ebpf`.
static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/monitor"));

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Env(#[from] env::EnvError),
    #[error(transparent)]
    Offsets(#[from] offsets::OffsetError),
    #[error("cannot count CPUs: {0}")]
    Cpus(String),
    #[error("loading the eBPF object failed: {0}")]
    Object(#[source] aya::EbpfError),
    #[error("required probe {name} ({hook}) did not attach: {message}")]
    Required {
        name: &'static str,
        hook: String,
        message: String,
    },
}

/// Whether one probe attached, and why not.
#[derive(Debug, Clone)]
pub struct ProbeStatus {
    pub spec: ProbeSpec,
    pub error: Option<String>,
}

impl ProbeStatus {
    pub fn attached(&self) -> bool {
        self.error.is_none()
    }
}

/// The loaded object with its programs attached.
pub struct Loaded {
    pub ebpf: Ebpf,
    pub probes: Vec<ProbeStatus>,
}

/// Runs the whole load stage.
pub fn load(config: &Config) -> Result<Loaded, LoadError> {
    env::prepare()?;
    let kernel_offsets = offsets::from_file(std::path::Path::new(offsets::VMLINUX_BTF))?;
    let cpus = aya::util::nr_cpus().map_err(|(what, e)| LoadError::Cpus(format!("{what}: {e}")))?;
    let log_level = config.kernel.ebpf_log_level.aya_level();
    let mut ebpf = EbpfLoader::new()
        .override_global(GLOBAL_OFFSETS, &kernel_offsets, true)
        .override_global("AYA_LOG_LEVEL", &log_level, false)
        .override_global(GLOBAL_MONITOR_TGID, &std::process::id(), true)
        .map_max_entries(
            MAP_FWD_FLOWS,
            *config.dataplane.flow_table_capacity.get_ref(),
        )
        .map_max_entries(MAP_PROC_EVENTS, *config.kernel.ring_buffer_bytes.get_ref())
        .map_max_entries(MAP_NET_EVENTS, *config.kernel.ring_buffer_bytes.get_ref())
        .map_max_entries(MAP_SCRATCH, cpus as u32)
        .load(EBPF_OBJECT)
        .map_err(LoadError::Object)?;
    let mut targets = Targets::find();
    let probes = PROBES
        .iter()
        .map(|spec| {
            let disabled = config
                .kernel
                .disabled_probes
                .iter()
                .any(|d| d.get_ref() == spec.name)
                || (!config.dataplane.enabled
                    && (spec.name.starts_with("forward_") || spec.name.starts_with("config_")));
            ProbeStatus {
                spec: *spec,
                error: if disabled {
                    Some("disabled by configuration".to_owned())
                } else {
                    attach(&mut ebpf, spec, &mut targets).err()
                },
            }
        })
        .collect::<Vec<_>>();
    for status in &probes {
        let spec = &status.spec;
        match &status.error {
            None => {
                tracing::debug!(probe = spec.name, hook = %spec.hook.describe(), "probe attached")
            }
            Some(message) if spec.required => {
                return Err(LoadError::Required {
                    name: spec.name,
                    hook: spec.hook.describe(),
                    message: message.clone(),
                })
            }
            Some(message) => tracing::warn!(
                probe = spec.name,
                hook = %spec.hook.describe(),
                error = %message,
                lost = spec.loses,
                "probe not attached; continuing without it"
            ),
        }
    }
    if std::env::var_os(BENCH_PRODUCER_ENV).is_some_and(|v| v == "1") {
        attach_bench_producer(&mut ebpf);
    }
    Ok(Loaded { ebpf, probes })
}

/// Set to `1` by `cargo xtask bench` to attach the synthetic event source
/// (see the eBPF `probes::bench`). Not for production.
pub const BENCH_PRODUCER_ENV: &str = "EDGEWATCH_BENCH_PRODUCER";

fn attach_bench_producer(ebpf: &mut Ebpf) {
    let result = (|| -> Result<(), String> {
        let p: &mut TracePoint = ebpf
            .program_mut("bench_sys_enter_sched_get_priority_max")
            .ok_or("program missing from the eBPF object")?
            .try_into()
            .map_err(|e: aya::programs::ProgramError| e.to_string())?;
        p.load().map_err(|e| e.to_string())?;
        p.attach("syscalls", "sys_enter_sched_get_priority_max")
            .map_err(|e| e.to_string())?;
        Ok(())
    })();
    match result {
        Ok(()) => tracing::warn!("benchmark event producer attached ({BENCH_PRODUCER_ENV}=1): for cargo xtask bench only"),
        Err(e) => tracing::error!(error = %e, "benchmark event producer not attached"),
    }
}

/// What the cgroup and BTF-typed probes attach to, looked up once.
struct Targets {
    /// The cgroup v2 root, from /proc/mounts.
    cgroup: Result<File, String>,
    /// The kernel's BTF, for `tp_btf` programs.
    btf: Result<Btf, String>,
}

impl Targets {
    fn find() -> Self {
        let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
        let cgroup = match env::find_mount(&mounts, "cgroup2") {
            Some(path) => {
                File::open(path).map_err(|e| format!("cannot open cgroup v2 root {path}: {e}"))
            }
            None => Err("no cgroup v2 hierarchy is mounted".to_owned()),
        };
        let btf = Btf::from_sys_fs().map_err(|e| format!("kernel BTF: {e}"));
        Self { cgroup, btf }
    }
}

/// Lines of a verifier log that are statistics, not the reason.
const VERIFIER_STATS: [&str; 4] = ["verification time", "processed ", "stack depth", ": "];

/// An attach error as one line: a load the verifier rejected carries its
/// whole log (hundreds of lines); the reason is its last line before the
/// statistics, such as `unknown func bpf_probe_read#4` on a kernel in
/// lockdown. The whole log is logged at debug level.
fn one_line(msg: &str) -> String {
    let Some((head, log)) = msg.split_once("Verifier output:") else {
        return msg.split_whitespace().collect::<Vec<_>>().join(" ");
    };
    let reason = log
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| !l.is_empty() && !VERIFIER_STATS.iter().any(|s| l.starts_with(s)))
        .unwrap_or("no reason given");
    format!(
        "{}; the verifier says: {reason}",
        head.trim().trim_end_matches('.')
    )
}

fn attach(ebpf: &mut Ebpf, spec: &ProbeSpec, targets: &mut Targets) -> Result<(), String> {
    let program = ebpf
        .program_mut(spec.name)
        .ok_or_else(|| "program missing from the eBPF object".to_owned())?;
    let chain = |e: &dyn std::error::Error| {
        let mut msg = e.to_string();
        let mut src = e.source();
        while let Some(s) = src {
            msg.push_str(": ");
            msg.push_str(&s.to_string());
            src = s.source();
        }
        tracing::debug!(probe = spec.name, error = %msg, "probe failed");
        one_line(&msg)
    };
    match spec.hook {
        Hook::RawTracepoint(tp) => {
            let p: &mut RawTracePoint = program.try_into().map_err(|e| chain(&e))?;
            p.load().map_err(|e| chain(&e))?;
            p.attach(tp).map_err(|e| chain(&e))?;
        }
        Hook::Tracepoint(category, name) => {
            let p: &mut TracePoint = program.try_into().map_err(|e| chain(&e))?;
            p.load().map_err(|e| chain(&e))?;
            p.attach(category, name).map_err(|e| chain(&e))?;
        }
        Hook::BtfTracepoint(tp) => {
            let btf = targets.btf.as_ref().map_err(Clone::clone)?;
            let p: &mut BtfTracePoint = program.try_into().map_err(|e| chain(&e))?;
            p.load(tp, btf).map_err(|e| chain(&e))?;
            p.attach().map_err(|e| chain(&e))?;
        }
        // With bpf_link (Linux 5.7+, which aya uses here) cgroup programs
        // always stack with others; `Single` only keeps the link flags at 0,
        // which older kernels require.
        Hook::CgroupSock(_) => {
            let cgroup = targets.cgroup.as_ref().map_err(Clone::clone)?;
            let p: &mut CgroupSock = program.try_into().map_err(|e| chain(&e))?;
            p.load().map_err(|e| chain(&e))?;
            p.attach(cgroup, CgroupAttachMode::Single)
                .map_err(|e| chain(&e))?;
        }
        Hook::CgroupSkb(direction) => {
            let cgroup = targets.cgroup.as_ref().map_err(Clone::clone)?;
            let p: &mut CgroupSkb = program.try_into().map_err(|e| chain(&e))?;
            p.load().map_err(|e| chain(&e))?;
            let at = match direction {
                SkbDirection::Ingress => CgroupSkbAttachType::Ingress,
                SkbDirection::Egress => CgroupSkbAttachType::Egress,
            };
            p.attach(cgroup, at, CgroupAttachMode::Single)
                .map_err(|e| chain(&e))?;
        }
        Hook::CgroupSysctl => {
            let cgroup = targets.cgroup.as_ref().map_err(Clone::clone)?;
            let p: &mut CgroupSysctl = program.try_into().map_err(|e| chain(&e))?;
            p.load().map_err(|e| chain(&e))?;
            p.attach(cgroup, CgroupAttachMode::Single)
                .map_err(|e| chain(&e))?;
        }
        Hook::TcEgress => {
            let p: &mut SchedClassifier = program.try_into().map_err(|e| chain(&e))?;
            p.load().map_err(|e| chain(&e))?;
        }
    }
    Ok(())
}

#[derive(Debug, Clone, serde::Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct KernelConfig {
    pub ring_buffer_bytes: toml::Spanned<u32>,
    pub ebpf_log_level: EbpfLogLevel,
    /// Optional probes not to attach, by name.
    pub disabled_probes: Vec<toml::Spanned<String>>,
}

impl Default for KernelConfig {
    fn default() -> Self {
        Self {
            ring_buffer_bytes: toml::Spanned::new(0..0, monitor_common::limits::PROC_RING_BYTES),
            ebpf_log_level: EbpfLogLevel::Warn,
            disabled_probes: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, serde::Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum EbpfLogLevel {
    Off,
    Error,
    Warn,
    Info,
    Debug,
}

impl EbpfLogLevel {
    /// The value of aya-log's `AYA_LOG_LEVEL` global for this level.
    pub fn aya_level(self) -> u8 {
        match self {
            Self::Off => 0,
            Self::Error => 1,
            Self::Warn => 2,
            Self::Info => 3,
            Self::Debug => 4,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_verifier_rejection_is_one_line_with_its_reason() {
        let msg = "the BPF_PROG_LOAD syscall returned Invalid argument (os error 22). Verifier output: reg type unsupported\n0: R1=ctx\n44: (85) call bpf_probe_read#4\nunknown func bpf_probe_read#4\nverification time 14792 usec\nstack depth 56+0+0\nprocessed 688 insns (limit 1000000)\n: Invalid argument (os error 22)";
        assert_eq!(
            one_line(msg),
            "the BPF_PROG_LOAD syscall returned Invalid argument (os error 22); the verifier says: unknown func bpf_probe_read#4"
        );
        assert_eq!(one_line("unknown BTF type `x`"), "unknown BTF type `x`");
        assert_eq!(one_line("a\nb"), "a b");
    }
}
