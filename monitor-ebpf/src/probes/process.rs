//! Process life cycle: exec (successful and failed), fork and exit.
//!
//! Raw tracepoints receive the tracepoint's `TP_PROTO` arguments, see
//! <https://github.com/torvalds/linux/blob/v6.12/include/trace/events/sched.h>.
//! The `syscalls:sys_{enter,exit}_execve*` tracepoints use the generic
//! syscall record: 8 bytes of common fields, the syscall number and padding,
//! then the arguments (or the return value) as 8-byte words from offset 16;
//! see `/sys/kernel/tracing/events/syscalls/sys_enter_execve/format`.

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_get_current_task, bpf_ktime_get_boot_ns},
    macros::{raw_tracepoint, tracepoint},
    programs::{RawTracePointContext, TracePointContext},
};
use aya_log_ebpf::debug;
use monitor_common::{
    event::{
        counter, EventHeader, ExecEvent, ExecFailedEvent, ExitEvent, ForkEvent,
        EXEC_ARGV_TRUNCATED, EXEC_ARGV_UNREADABLE, EXEC_CWD_TRUNCATED, EXEC_EXE_TRUNCATED,
        EXEC_FILENAME_TRUNCATED, KIND_EXEC, KIND_EXEC_FAILED, KIND_EXIT, KIND_FORK, SYSCALL_EXECVE,
        SYSCALL_EXECVEAT,
    },
    limits::{ARGV_MAX, FAILED_ARGC_MAX, FAILED_ARG_MAX, PATH_MAX},
};

use crate::{
    kernel::{
        copy_user, copy_user_str, emit, off, offsets_ready, read, scratch, stdio, task_info,
        wakeup, walk_path, ReadError,
    },
    maps::{count, ExecAttempt, EXEC_ATTEMPTS, PROC_EVENTS},
};

/// `AT_FDCWD`, the directory fd `execve` resolves relative names against.
const AT_FDCWD: i32 = -100;

#[inline(always)]
fn header(kind: u32, size: u32, pid: u32, tid: u32) -> EventHeader {
    EventHeader {
        kind,
        size,
        // SAFETY: helper without arguments.
        ts_boot_ns: unsafe { bpf_ktime_get_boot_ns() },
        pid,
        tid,
    }
}

/// `sched_process_exec(struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)`:
/// runs in the new image after the point of no return, so `current->mm`
/// already holds the new arguments and `exe_file`.
#[raw_tracepoint(tracepoint = "sched_process_exec")]
pub fn process_sched_exec(ctx: RawTracePointContext) -> i32 {
    if try_exec(&ctx).is_err() {
        debug!(
            &ctx,
            "process_sched_exec: kernel read failed; record dropped"
        );
    }
    0
}

fn try_exec(ctx: &RawTracePointContext) -> Result<(), ReadError> {
    if !offsets_ready() {
        return Ok(());
    }
    let Some(buf) = scratch() else { return Ok(()) };
    let task: u64 = ctx.arg(0);
    let old_tid: u32 = ctx.arg::<u64>(1) as u32;
    let pid_tgid = bpf_get_current_pid_tgid();
    // SAFETY: the slot is SCRATCH_BYTES long and suitably aligned for the
    // fixed part, which every record starts with.
    let ev = unsafe { &mut *(buf as *mut ExecEvent) };
    *ev = ExecEvent::default();
    task_info(task, &mut ev.task)?;
    ev.old_tid = old_tid;
    let _ = stdio(task, &mut ev.stdio);

    let mut cursor = core::mem::size_of::<ExecEvent>();
    let mut flags = 0;
    let mm: u64 = read(task, off!(task_struct_mm))?;
    let exe_file: u64 = read(mm, off!(mm_struct_exe_file))?;
    if exe_file != 0 {
        let (n, cut) = walk_path(buf, cursor, exe_file + off!(file_f_path))?;
        let inode: u64 = read(exe_file, off!(file_f_inode))?;
        ev.exe_nlink = read(inode, off!(inode_i_nlink))?;
        ev.exe_len = n as u16;
        cursor += n;
        if cut {
            flags |= EXEC_EXE_TRUNCATED;
        }
    }
    let fs: u64 = read(task, off!(task_struct_fs))?;
    if fs != 0 {
        let (n, cut) = walk_path(buf, cursor, fs + off!(fs_struct_pwd))?;
        ev.cwd_len = n as u16;
        cursor += n;
        if cut {
            flags |= EXEC_CWD_TRUNCATED;
        }
    }
    let arg_start: u64 = read(mm, off!(mm_struct_arg_start))?;
    let arg_end: u64 = read(mm, off!(mm_struct_arg_end))?;
    let mut len = arg_end.saturating_sub(arg_start) as usize;
    if len > ARGV_MAX {
        len = ARGV_MAX;
        flags |= EXEC_ARGV_TRUNCATED;
    }
    if copy_user(buf, cursor, arg_start, len) {
        ev.argv_len = len as u32;
        cursor += len;
    } else {
        flags |= EXEC_ARGV_UNREADABLE;
    }
    ev.flags = flags;
    ev.header = header(
        KIND_EXEC,
        cursor as u32,
        (pid_tgid >> 32) as u32,
        pid_tgid as u32,
    );
    emit(buf, cursor, KIND_EXEC);
    Ok(())
}

/// `sched_process_fork(struct task_struct *parent, struct task_struct *child)`.
/// Fires for threads too; only new thread groups are reported.
#[raw_tracepoint(tracepoint = "sched_process_fork")]
pub fn process_sched_fork(ctx: RawTracePointContext) -> i32 {
    if try_fork(&ctx).is_err() {
        debug!(
            &ctx,
            "process_sched_fork: kernel read failed; record dropped"
        );
    }
    0
}

fn try_fork(ctx: &RawTracePointContext) -> Result<(), ReadError> {
    if !offsets_ready() {
        return Ok(());
    }
    let child: u64 = ctx.arg(1);
    let pid: u32 = read(child, off!(task_struct_pid))?;
    let tgid: u32 = read(child, off!(task_struct_tgid))?;
    if pid != tgid {
        return Ok(());
    }
    let mut ev = ForkEvent::default();
    task_info(child, &mut ev.task)?;
    ev.header = header(
        KIND_FORK,
        core::mem::size_of::<ForkEvent>() as u32,
        tgid,
        pid,
    );
    if PROC_EVENTS
        .output::<ForkEvent>(
            &ev,
            wakeup(&PROC_EVENTS, core::mem::size_of::<ForkEvent>() as u64),
        )
        .is_err()
    {
        count(counter::LOST_BASE + KIND_FORK);
    }
    Ok(())
}

/// `sched_process_exit(struct task_struct *p)`: fires per thread; the
/// process has ended when its `signal->live` count has dropped to zero,
/// which `do_exit` does before this tracepoint.
#[raw_tracepoint(tracepoint = "sched_process_exit")]
pub fn process_sched_exit(ctx: RawTracePointContext) -> i32 {
    if try_exit(&ctx).is_err() {
        debug!(
            &ctx,
            "process_sched_exit: kernel read failed; record dropped"
        );
    }
    0
}

fn try_exit(ctx: &RawTracePointContext) -> Result<(), ReadError> {
    if !offsets_ready() {
        return Ok(());
    }
    let task: u64 = ctx.arg(0);
    let signal: u64 = read(task, off!(task_struct_signal))?;
    let live: i32 = read(signal, off!(signal_struct_live))?;
    if live != 0 {
        return Ok(());
    }
    let pid: u32 = read(task, off!(task_struct_pid))?;
    let tgid: u32 = read(task, off!(task_struct_tgid))?;
    let mut ev = ExitEvent::default();
    task_info(task, &mut ev.task)?;
    ev.exit_code = read(task, off!(task_struct_exit_code))?;
    ev.header = header(
        KIND_EXIT,
        core::mem::size_of::<ExitEvent>() as u32,
        tgid,
        pid,
    );
    if PROC_EVENTS
        .output::<ExitEvent>(
            &ev,
            wakeup(&PROC_EVENTS, core::mem::size_of::<ExitEvent>() as u64),
        )
        .is_err()
    {
        count(counter::LOST_BASE + KIND_EXIT);
    }
    Ok(())
}

/// Remembers an exec attempt so its exit can report a failure.
#[inline(always)]
fn remember(attempt: ExecAttempt) {
    let key = bpf_get_current_pid_tgid();
    if EXEC_ATTEMPTS.insert(key, attempt, 0).is_err() {
        count(counter::ATTEMPT_ERRORS);
    }
}

/// `syscalls:sys_enter_execve`: filename at 16, argv at 24.
#[tracepoint(category = "syscalls", name = "sys_enter_execve")]
pub fn process_sys_enter_execve(ctx: TracePointContext) -> i32 {
    // SAFETY: offsets of the generic syscall-entry record.
    let (filename, argv) = unsafe { (ctx.read_at::<u64>(16), ctx.read_at::<u64>(24)) };
    if let (Ok(filename), Ok(argv)) = (filename, argv) {
        remember(ExecAttempt {
            filename,
            argv,
            dirfd: AT_FDCWD,
            at_flags: 0,
            syscall: SYSCALL_EXECVE,
            _pad: 0,
        });
    }
    0
}

/// `syscalls:sys_enter_execveat`: fd at 16, filename at 24, argv at 32,
/// envp at 40, flags at 48.
#[tracepoint(category = "syscalls", name = "sys_enter_execveat")]
pub fn process_sys_enter_execveat(ctx: TracePointContext) -> i32 {
    // SAFETY: offsets of the generic syscall-entry record.
    let read = |o| unsafe { ctx.read_at::<u64>(o) };
    if let (Ok(fd), Ok(filename), Ok(argv), Ok(flags)) = (read(16), read(24), read(32), read(48)) {
        remember(ExecAttempt {
            filename,
            argv,
            dirfd: fd as i32,
            at_flags: flags as u32,
            syscall: SYSCALL_EXECVEAT,
            _pad: 0,
        });
    }
    0
}

/// `syscalls:sys_exit_execve`: return value at 16.
#[tracepoint(category = "syscalls", name = "sys_exit_execve")]
pub fn process_sys_exit_execve(ctx: TracePointContext) -> i32 {
    if try_exec_exit(&ctx).is_err() {
        debug!(
            &ctx,
            "process_sys_exit_execve*: kernel read failed; record dropped"
        );
    }
    0
}

/// `syscalls:sys_exit_execveat`: return value at 16.
#[tracepoint(category = "syscalls", name = "sys_exit_execveat")]
pub fn process_sys_exit_execveat(ctx: TracePointContext) -> i32 {
    if try_exec_exit(&ctx).is_err() {
        debug!(
            &ctx,
            "process_sys_exit_execve*: kernel read failed; record dropped"
        );
    }
    0
}

fn try_exec_exit(ctx: &TracePointContext) -> Result<(), ReadError> {
    let key = bpf_get_current_pid_tgid();
    // SAFETY: the value is copied out before the entry is removed.
    let Some(attempt) = (unsafe { EXEC_ATTEMPTS.get(key) }).copied() else {
        return Ok(());
    };
    let _ = EXEC_ATTEMPTS.remove(key);
    // SAFETY: offset of the generic syscall-exit record.
    let ret: i64 = unsafe { ctx.read_at::<i64>(16) }.map_err(|_| ReadError)?;
    if ret >= 0 || !offsets_ready() {
        return Ok(());
    }
    let Some(buf) = scratch() else { return Ok(()) };
    // SAFETY: see `try_exec`.
    let ev = unsafe { &mut *(buf as *mut ExecFailedEvent) };
    *ev = ExecFailedEvent::default();
    // SAFETY: helper without arguments.
    let task = unsafe { bpf_get_current_task() };
    task_info(task, &mut ev.task)?;
    ev.errno = -ret as i32;
    ev.syscall = attempt.syscall;
    ev.dirfd = attempt.dirfd;
    ev.at_flags = attempt.at_flags;

    let mut cursor = core::mem::size_of::<ExecFailedEvent>();
    let mut flags = 0;
    if let Some(n) = copy_user_str(buf, cursor, attempt.filename, PATH_MAX) {
        if n >= PATH_MAX {
            flags |= EXEC_FILENAME_TRUNCATED;
        }
        ev.filename_len = n as u16;
        cursor += n;
    }
    let fs: u64 = read(task, off!(task_struct_fs))?;
    if fs != 0 {
        let (n, cut) = walk_path(buf, cursor, fs + off!(fs_struct_pwd))?;
        ev.cwd_len = n as u16;
        cursor += n;
        if cut {
            flags |= EXEC_CWD_TRUNCATED;
        }
    }
    let argv_start = cursor;
    let mut complete = false;
    for i in 0..FAILED_ARGC_MAX {
        // SAFETY: reading the caller's argv array; failures end the list.
        let arg: u64 = match unsafe {
            aya_ebpf::helpers::bpf_probe_read_user((attempt.argv + (i * 8) as u64) as *const u64)
        } {
            Ok(p) => p,
            Err(_) => break,
        };
        if arg == 0 {
            complete = true;
            break;
        }
        match copy_user_str(buf, cursor, arg, FAILED_ARG_MAX) {
            Some(n) => cursor += n,
            None => break,
        }
    }
    if !complete {
        flags |= EXEC_ARGV_TRUNCATED;
    }
    ev.argv_len = (cursor - argv_start) as u32;
    ev.flags = flags;
    let pid_tgid = key;
    ev.header = header(
        KIND_EXEC_FAILED,
        cursor as u32,
        (pid_tgid >> 32) as u32,
        pid_tgid as u32,
    );
    emit(buf, cursor, KIND_EXEC_FAILED);
    Ok(())
}
