//! Records sent from the kernel to userspace through the ring buffers.
//!
//! Every record starts with [`EventHeader`]; the decoder reads the header
//! first and relies on `kind` and `size` being at offsets 0 and 4. Records
//! with variable data (paths, arguments) carry the lengths of each part in
//! their fixed part, and the parts follow it in the order the fields list.

use crate::assert_size;

/// `EventHeader::kind` of a successful exec ([`ExecEvent`]).
pub const KIND_EXEC: u32 = 1;
/// `EventHeader::kind` of a failed exec attempt ([`ExecFailedEvent`]).
pub const KIND_EXEC_FAILED: u32 = 2;
/// `EventHeader::kind` of a new process ([`ForkEvent`]); threads are not reported.
pub const KIND_FORK: u32 = 3;
/// `EventHeader::kind` of a whole process ending ([`ExitEvent`]).
pub const KIND_EXIT: u32 = 4;
/// One past the largest kind; sizes the per-kind loss counters.
pub const KIND_COUNT: u32 = 5;

/// Fixed header of every record.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EventHeader {
    /// One of the `KIND_*` constants.
    pub kind: u32,
    /// Total size of the record in bytes, header and variable data included.
    pub size: u32,
    /// `bpf_ktime_get_boot_ns()` when the event happened.
    pub ts_boot_ns: u64,
    /// Process id (kernel tgid) the event is about.
    pub pid: u32,
    /// Thread id (kernel pid) that triggered the event.
    pub tid: u32,
}
assert_size!(EventHeader, 24);

/// Identity and credentials of the task an event is about.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TaskInfo {
    /// `real_parent->tgid`.
    pub ppid: u32,
    pub uid: u32,
    pub euid: u32,
    pub gid: u32,
    pub egid: u32,
    /// Audit login uid, `u32::MAX` when unset or when the kernel has no audit.
    pub auid: u32,
    /// `task->start_boottime` of the thread-group leader, in ns since boot.
    pub start_boot_ns: u64,
    /// cgroup v2 id of the task.
    pub cgroup_id: u64,
    /// `task->comm`, NUL-padded.
    pub comm: [u8; 16],
}
assert_size!(TaskInfo, 56);

/// What one of fds 0, 1 and 2 refers to: the inode's mode and device.
/// `mode == 0` means the descriptor is closed.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StdioFd {
    /// `inode->i_mode` (file type and permission bits).
    pub mode: u32,
    /// `inode->i_rdev` in the kernel's encoding: major `>> 20`, minor `& 0xfffff`.
    pub rdev: u32,
}
assert_size!(StdioFd, 8);

/// The argument block was longer than [`crate::limits::ARGV_MAX`] and was cut.
pub const EXEC_ARGV_TRUNCATED: u32 = 1 << 0;
/// The executable path was deeper or longer than the path bounds and was cut.
pub const EXEC_EXE_TRUNCATED: u32 = 1 << 1;
/// The working directory was deeper or longer than the path bounds and was cut.
pub const EXEC_CWD_TRUNCATED: u32 = 1 << 2;
/// The argument block could not be read from the new process's memory.
pub const EXEC_ARGV_UNREADABLE: u32 = 1 << 3;
/// The filename of a failed exec was longer than the path bound and was cut.
pub const EXEC_FILENAME_TRUNCATED: u32 = 1 << 4;

/// A successful `execve`/`execveat`, from `sched_process_exec`.
///
/// Followed by `exe_len` bytes of executable path, `cwd_len` bytes of
/// working directory and `argv_len` bytes of arguments. Paths are sent as
/// NUL-terminated components from the leaf up to the root (the kernel walks
/// dentries upwards); arguments as the process's own NUL-separated block.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExecEvent {
    pub header: EventHeader,
    pub task: TaskInfo,
    /// Thread id that called exec, when it was not the thread-group leader.
    pub old_tid: u32,
    /// `EXEC_*` flags.
    pub flags: u32,
    pub stdio: [StdioFd; 3],
    /// Link count of the executable's inode: 0 for a deleted file or a memfd.
    pub exe_nlink: u32,
    pub exe_len: u16,
    pub cwd_len: u16,
    pub argv_len: u32,
    pub _pad: u32,
}
assert_size!(ExecEvent, 128);

/// `ExecFailedEvent::syscall` for `execve`.
pub const SYSCALL_EXECVE: u32 = 0;
/// `ExecFailedEvent::syscall` for `execveat`.
pub const SYSCALL_EXECVEAT: u32 = 1;

/// An `execve`/`execveat` that returned an error.
///
/// Followed by `filename_len` bytes of the filename as the caller passed it,
/// `cwd_len` bytes of working directory (components, leaf first) and
/// `argv_len` bytes of NUL-terminated arguments.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExecFailedEvent {
    pub header: EventHeader,
    pub task: TaskInfo,
    /// Positive errno.
    pub errno: i32,
    /// `SYSCALL_EXECVE` or `SYSCALL_EXECVEAT`.
    pub syscall: u32,
    /// `execveat` directory fd (`AT_FDCWD` for `execve`).
    pub dirfd: i32,
    /// `execveat` flags.
    pub at_flags: u32,
    /// `EXEC_*` flags.
    pub flags: u32,
    pub filename_len: u16,
    pub cwd_len: u16,
    pub argv_len: u32,
    pub _pad: u32,
}
assert_size!(ExecFailedEvent, 112);

/// A new process (a `fork`/`clone` without `CLONE_THREAD`).
/// `header.pid` is the child; `task` describes the child.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ForkEvent {
    pub header: EventHeader,
    pub task: TaskInfo,
}
assert_size!(ForkEvent, 80);

/// The last thread of a process exited.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExitEvent {
    pub header: EventHeader,
    pub task: TaskInfo,
    /// `task->exit_code` as `wait(2)` encodes it: signal in bits 0-6, core
    /// dump in bit 7, exit status in bits 8-15.
    pub exit_code: u32,
    pub _pad: u32,
}
assert_size!(ExitEvent, 88);

/// Indices into the per-CPU `COUNTERS` array. Indices below [`KIND_COUNT`]
/// count records of that kind the ring buffer had no room for.
pub mod counter {
    /// Records lost because the ring buffer was full, for kind `k`: index `k`.
    pub const LOST_BASE: u32 = 0;
    /// A kernel memory read failed while building a record.
    pub const READ_ERRORS: u32 = 8;
    /// The scratch slot could not be looked up.
    pub const SCRATCH_ERRORS: u32 = 9;
    /// The exec-attempt map was full (failed exec may go unreported).
    pub const ATTEMPT_ERRORS: u32 = 10;
    /// Number of counters.
    pub const COUNT: u32 = 16;
}

#[cfg(test)]
mod tests {
    use core::mem::offset_of;

    use super::*;

    /// The decoder reads `kind` and `size` before it knows the record type.
    #[test]
    fn header_fields_are_where_the_decoder_reads_them() {
        assert_eq!(offset_of!(EventHeader, kind), 0);
        assert_eq!(offset_of!(EventHeader, size), 4);
        assert_eq!(offset_of!(EventHeader, ts_boot_ns), 8);
        assert_eq!(offset_of!(ExecEvent, header), 0);
        assert_eq!(offset_of!(ExecFailedEvent, header), 0);
        assert_eq!(offset_of!(ForkEvent, header), 0);
        assert_eq!(offset_of!(ExitEvent, header), 0);
    }

    /// Variable data follows the fixed part, so every fixed part must keep
    /// 8-byte alignment and the length fields must sit where the kernel
    /// writes them.
    #[test]
    fn fixed_parts_keep_alignment_and_length_fields() {
        for size in [
            size_of::<ExecEvent>(),
            size_of::<ExecFailedEvent>(),
            size_of::<ForkEvent>(),
            size_of::<ExitEvent>(),
        ] {
            assert_eq!(size % 8, 0);
        }
        assert_eq!(offset_of!(ExecEvent, task), 24);
        assert_eq!(offset_of!(ExecEvent, stdio), 88);
        assert_eq!(offset_of!(ExecEvent, exe_len), 116);
        assert_eq!(offset_of!(ExecEvent, argv_len), 120);
        assert_eq!(offset_of!(ExecFailedEvent, filename_len), 100);
        assert_eq!(offset_of!(ExitEvent, exit_code), 80);
        assert_eq!(offset_of!(TaskInfo, comm), 40);
    }
}
