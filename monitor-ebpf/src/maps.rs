//! Maps shared by the programs. Names and sizes come from
//! `monitor_common::limits`; userspace resizes some of them at load time.

use aya_ebpf::{
    macros::map,
    maps::{Array, LruHashMap, PerCpuArray, RingBuf},
};
use monitor_common::{
    event::counter,
    limits::{EXEC_ATTEMPTS_MAX, PROC_RING_BYTES, SCRATCH_BYTES},
};

/// Process events (exec, failed exec, fork, exit). Resized by userspace.
#[map(name = "PROC_EVENTS")]
pub static PROC_EVENTS: RingBuf = RingBuf::with_byte_size(PROC_RING_BYTES, 0);

/// Losses and errors, per CPU, indexed by `monitor_common::event::counter`.
#[map(name = "COUNTERS")]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::COUNT, 0);

/// One slot per CPU where variable-size records are assembled before
/// `bpf_ringbuf_output` copies the used part. A plain array indexed by CPU
/// because per-CPU map values are limited to 32 KiB. Userspace sets
/// `max_entries` to the number of possible CPUs.
#[map(name = "SCRATCH")]
pub static SCRATCH: Array<[u8; SCRATCH_BYTES]> = Array::with_max_entries(1, 0);

/// An exec attempt between `sys_enter_execve*` and `sys_exit_execve*`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ExecAttempt {
    pub filename: u64,
    pub argv: u64,
    pub dirfd: i32,
    pub at_flags: u32,
    pub syscall: u32,
    pub _pad: u32,
}

/// Exec attempts in flight, keyed by `pid_tgid`.
#[map(name = "EXEC_ATTEMPTS")]
pub static EXEC_ATTEMPTS: LruHashMap<u64, ExecAttempt> =
    LruHashMap::with_max_entries(EXEC_ATTEMPTS_MAX, 0);

/// Adds one to counter `index` on this CPU.
#[inline(always)]
pub fn count(index: u32) {
    if let Some(p) = COUNTERS.get_ptr_mut(index) {
        // SAFETY: per-CPU slot, only this CPU writes it while we run.
        unsafe { *p += 1 };
    }
}

/// Path-walk state, per CPU (see `kernel::Walk`).
#[map(name = "PATH_WALK")]
pub static PATH_WALK: PerCpuArray<crate::kernel::Walk> = PerCpuArray::with_max_entries(1, 0);
