//! A synthetic event source for `cargo xtask bench`: it measures how fast
//! the daemon drains the process ring, and checks that every record is
//! either delivered or counted as lost. Userspace attaches it only when
//! the benchmark asks (`EDGEWATCH_BENCH_PRODUCER=1`); it answers only
//! `sched_get_priority_max` calls whose policy carries [`BENCH_MAGIC`], a
//! value no real caller passes.

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_boot_ns},
    macros::tracepoint,
    programs::TracePointContext,
};
use monitor_common::event::{
    counter, BenchEvent, EventHeader, BENCH_BURST_MAX, BENCH_MAGIC, KIND_BENCH,
};

use crate::{
    kernel::wakeup,
    maps::{count, PROC_EVENTS},
};

#[tracepoint(category = "syscalls", name = "sys_enter_sched_get_priority_max")]
pub fn bench_sys_enter_sched_get_priority_max(ctx: TracePointContext) -> i32 {
    // SAFETY: the first argument of the generic syscall-entry record.
    let policy = unsafe { ctx.read_at::<u64>(16) }.unwrap_or(0);
    if policy & !0xffff != BENCH_MAGIC {
        return 0;
    }
    let burst = (policy & 0xffff).min(BENCH_BURST_MAX);
    let pid_tgid = bpf_get_current_pid_tgid();
    // SAFETY: helper without arguments.
    let ts = unsafe { bpf_ktime_get_boot_ns() };
    for seq in 0..BENCH_BURST_MAX {
        if seq >= burst {
            break;
        }
        let ev = BenchEvent {
            header: EventHeader {
                kind: KIND_BENCH,
                size: core::mem::size_of::<BenchEvent>() as u32,
                ts_boot_ns: ts,
                pid: (pid_tgid >> 32) as u32,
                tid: pid_tgid as u32,
            },
            seq,
        };
        if PROC_EVENTS
            .output::<BenchEvent>(
                &ev,
                wakeup(&PROC_EVENTS, core::mem::size_of::<BenchEvent>() as u64),
            )
            .is_err()
        {
            count(counter::LOST_BASE + KIND_BENCH);
        }
    }
    0
}
