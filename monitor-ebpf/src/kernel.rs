//! Reading kernel structures through offsets resolved from BTF at load
//! time (see `monitor_common::offsets`), and assembling variable records.

use core::ffi::c_void;

use aya_ebpf::helpers::{
    bpf_get_current_cgroup_id, bpf_get_smp_processor_id, bpf_probe_read_kernel,
    generated::{
        bpf_loop, bpf_probe_read_kernel_str, bpf_probe_read_user, bpf_probe_read_user_str,
    },
};
use aya_ebpf::{
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    maps::RingBuf,
};
use monitor_common::{
    event::{counter, Namespaces, StdioFd, TaskInfo},
    limits::{NAME_MAX, PATH_DEPTH_MAX, PATH_MAX, RING_WAKEUP_BYTES, SCRATCH_BYTES, SCRATCH_HALF},
    offsets::{KernelOffsets, OFFSET_MISSING},
};

use crate::maps::{count, PATH_WALK, PROC_EVENTS, READER, SCRATCH};

/// Filled in by userspace before load; all zero means "not set".
#[unsafe(no_mangle)]
pub(crate) static OFFSETS: KernelOffsets = KernelOffsets::zeroed();

/// Reads one offset. The volatile read keeps the compiler from folding the
/// build-time zero into the code: the loader rewrites `.rodata`.
macro_rules! off {
    ($field:ident) => {
        // SAFETY: reading a field of a static.
        unsafe { core::ptr::read_volatile(&$crate::kernel::OFFSETS.$field) as u64 }
    };
}
pub(crate) use off;

/// Error of a kernel read; the programs count it and drop the record.
pub struct ReadError;

/// Reads a `T` at `base + offset` in kernel memory.
#[inline(always)]
pub fn read<T>(base: u64, offset: u64) -> Result<T, ReadError> {
    // SAFETY: bpf_probe_read_kernel tolerates any address.
    unsafe { bpf_probe_read_kernel((base + offset) as *const T) }.map_err(|_| {
        count(counter::READ_ERRORS);
        ReadError
    })
}

/// The time a counter was last touched, for the per-packet and per-call
/// paths: `CLOCK_MONOTONIC` at tick resolution, a plain read where the
/// precise boot clock costs each packet about 25 ns. The daemon converts it
/// to boot time when it reads the maps.
#[inline(always)]
pub fn last_seen() -> u64 {
    // SAFETY: helper without arguments.
    unsafe { aya_ebpf::helpers::generated::bpf_ktime_get_coarse_ns() }
}

/// Whether userspace supplied the offsets (it always does; a zero here
/// means the object was loaded by something else).
#[inline(always)]
pub fn offsets_ready() -> bool {
    off!(task_struct_tgid) != 0
}

/// Fills `info` from `task` (a `struct task_struct *`).
#[inline(always)]
pub fn task_info(task: u64, info: &mut TaskInfo) -> Result<(), ReadError> {
    let parent: u64 = read(task, off!(task_struct_real_parent))?;
    info.ppid = read(parent, off!(task_struct_tgid))?;
    let cred: u64 = read(task, off!(task_struct_cred))?;
    info.uid = read(cred, off!(cred_uid))?;
    info.euid = read(cred, off!(cred_euid))?;
    info.gid = read(cred, off!(cred_gid))?;
    info.egid = read(cred, off!(cred_egid))?;
    let loginuid = off!(task_struct_loginuid);
    info.auid = if loginuid == OFFSET_MISSING as u64 {
        u32::MAX
    } else {
        read(task, loginuid)?
    };
    let leader: u64 = read(task, off!(task_struct_group_leader))?;
    info.start_boot_ns = read(leader, off!(task_struct_start_boottime))?;
    // SAFETY: helper without arguments.
    info.cgroup_id = unsafe { bpf_get_current_cgroup_id() };
    info.comm = read(task, off!(task_struct_comm))?;
    info.ns = namespaces(task);
    Ok(())
}

/// Deepest pid namespace nesting (`MAX_PID_NS_LEVEL` in
/// include/linux/pid_namespace.h); bounds the index into `pid::numbers`.
const PID_NS_LEVEL_MAX: u32 = 32;

/// The namespaces of `task`, by inode number. A namespace that cannot be
/// read is 0 and costs the record nothing: an exiting task has already
/// dropped its `nsproxy` (`exit_task_namespaces`).
#[inline(always)]
fn namespaces(task: u64) -> Namespaces {
    let mut ns = Namespaces::default();
    let Ok(nsproxy) = read::<u64>(task, off!(task_struct_nsproxy)) else {
        return ns;
    };
    if nsproxy != 0 {
        ns.net = ns_inum(nsproxy, off!(nsproxy_net_ns), off!(net_ns));
        ns.mnt = ns_inum(nsproxy, off!(nsproxy_mnt_ns), off!(mnt_namespace_ns));
        ns.uts = ns_inum(nsproxy, off!(nsproxy_uts_ns), off!(uts_namespace_ns));
    }
    // task_active_pid_ns(): thread_pid->numbers[thread_pid->level].ns,
    // see include/linux/pid.h.
    if let Ok(pid) = read::<u64>(task, off!(task_struct_thread_pid)) {
        if pid != 0 {
            if let Ok(level) = read::<u32>(pid, off!(pid_level)) {
                if level <= PID_NS_LEVEL_MAX {
                    let upid = off!(pid_numbers) + u64::from(level) * off!(upid_size);
                    ns.pid = ns_inum(pid, upid + off!(upid_ns), off!(pid_namespace_ns));
                }
            }
        }
    }
    ns
}

/// `((struct X *)*(holder + member))->ns.inum`, 0 when unreadable.
#[inline(always)]
fn ns_inum(holder: u64, member: u64, ns_common: u64) -> u32 {
    match read::<u64>(holder, member) {
        Ok(ns) if ns != 0 => read(ns, ns_common + off!(ns_common_inum)).unwrap_or(0),
        _ => 0,
    }
}

/// Fills `out` with the inode mode and device of fds 0, 1 and 2 of `task`.
#[inline(always)]
pub fn stdio(task: u64, out: &mut [StdioFd; 3]) -> Result<(), ReadError> {
    let files: u64 = read(task, off!(task_struct_files))?;
    if files == 0 {
        return Ok(());
    }
    let fdt: u64 = read(files, off!(files_struct_fdt))?;
    let max_fds: u32 = read(fdt, off!(fdtable_max_fds))?;
    let fd_array: u64 = read(fdt, off!(fdtable_fd))?;
    for (i, slot) in out.iter_mut().enumerate() {
        if i as u32 >= max_fds {
            break;
        }
        let file: u64 = read(fd_array, (i * 8) as u64)?;
        if file == 0 {
            continue;
        }
        let inode: u64 = read(file, off!(file_f_inode))?;
        let mode: u16 = read(inode, off!(inode_i_mode))?;
        slot.mode = mode as u32;
        slot.rdev = read(inode, off!(inode_i_rdev))?;
        slot.ino = read(inode, off!(inode_i_ino))?;
    }
    Ok(())
}

/// A CPU's scratch slot, `SCRATCH_BYTES` long.
#[inline(always)]
pub fn scratch() -> Option<*mut u8> {
    // SAFETY: helper without arguments.
    let cpu = unsafe { bpf_get_smp_processor_id() };
    match SCRATCH.get_ptr_mut(cpu) {
        Some(p) => Some(p.cast()),
        None => {
            count(counter::SCRATCH_ERRORS);
            None
        }
    }
}

/// Bounds an offset into a scratch slot for the verifier. Callers keep the
/// logical offset below `SCRATCH_HALF`, so the mask never changes it.
#[inline(always)]
pub fn at(buf: *mut u8, offset: usize) -> *mut u8 {
    // SAFETY: the mask keeps the result inside the slot's first half.
    unsafe { buf.add(offset & (SCRATCH_HALF - 1)) }
}

/// State of one path walk, shared with [`walk_step`]. It lives in a map,
/// not on the stack: the verifier tracks stack values exactly, so a cursor
/// on the stack differs at every iteration and the loop never converges,
/// while a value loaded from a map is just a bounded scalar.
#[repr(C)]
pub struct Walk {
    start: u64,
    cursor: u64,
    dentry: u64,
    vfsmnt: u64,
    mnt: u64,
    /// 0 while walking, 1 at the root, 2 after an error.
    state: u64,
}

const WALK_RUNNING: u64 = 0;
const WALK_AT_ROOT: u64 = 1;
const WALK_FAILED: u64 = 2;

/// Writes the components of `path` (a `struct path *`) at `buf + start`,
/// leaf first, each NUL-terminated. Crosses mount points like `d_path`
/// does, up to the root of the task's mount tree. Returns the bytes
/// written and whether the walk stopped before the root.
///
/// The walk runs under `bpf_loop` (Linux 5.17+): the verifier checks the
/// step once instead of once per component, which is what keeps a
/// 128-deep walk within its instruction budget.
#[inline(always)]
pub fn walk_path(_buf: *mut u8, start: usize, path: u64) -> Result<(usize, bool), ReadError> {
    let vfsmnt: u64 = read(path, off!(path_mnt))?;
    let Some(walk) = PATH_WALK.get_ptr_mut(0) else {
        return Err(ReadError);
    };
    // SAFETY: per-CPU slot, only this program uses it while it runs.
    let walk = unsafe { &mut *walk };
    walk.start = start as u64;
    walk.cursor = start as u64;
    walk.dentry = read(path, off!(path_dentry))?;
    walk.vfsmnt = vfsmnt;
    walk.mnt = vfsmnt - off!(mount_mnt);
    walk.state = WALK_RUNNING;
    // SAFETY: `walk_step` is a static subprogram taking no context.
    unsafe {
        bpf_loop(
            PATH_DEPTH_MAX as u32,
            walk_step as *mut c_void,
            core::ptr::null_mut(),
            0,
        )
    };
    if walk.state == WALK_FAILED {
        return Err(ReadError);
    }
    let len = walk.cursor.saturating_sub(walk.start) as usize;
    Ok((len & (SCRATCH_HALF - 1), walk.state != WALK_AT_ROOT))
}

/// One step of [`walk_path`]: returns 1 to stop the loop, 0 to go on.
#[inline(never)]
extern "C" fn walk_step(_index: u64, _ctx: *mut c_void) -> i64 {
    let Some(w) = PATH_WALK.get_ptr_mut(0) else {
        return 1;
    };
    // SAFETY: per-CPU slot, only this program uses it while it runs.
    let w = unsafe { &mut *w };
    match step(w) {
        Ok(true) => 0,
        Ok(false) => 1,
        Err(ReadError) => {
            w.state = WALK_FAILED;
            1
        }
    }
}

#[inline(always)]
fn step(w: &mut Walk) -> Result<bool, ReadError> {
    let mnt_root: u64 = read(w.vfsmnt, off!(vfsmount_mnt_root))?;
    let parent: u64 = read(w.dentry, off!(dentry_d_parent))?;
    if w.dentry == mnt_root || w.dentry == parent {
        if w.dentry != mnt_root {
            // The root of a filesystem that is not mounted here (pipes,
            // memfds, ...): nothing above it.
            w.state = WALK_AT_ROOT;
            return Ok(false);
        }
        let mnt_parent: u64 = read(w.mnt, off!(mount_mnt_parent))?;
        if mnt_parent == w.mnt {
            w.state = WALK_AT_ROOT;
            return Ok(false);
        }
        w.dentry = read(w.mnt, off!(mount_mnt_mountpoint))?;
        w.mnt = mnt_parent;
        w.vfsmnt = mnt_parent + off!(mount_mnt);
        return Ok(true);
    }
    if w.cursor - w.start >= PATH_MAX as u64 {
        return Ok(false);
    }
    let name: u64 = read(w.dentry, off!(dentry_d_name) + off!(qstr_name))?;
    // The callback cannot receive the map value pointer, so it looks the
    // CPU's slot up again (programs do not migrate while running).
    let Some(buf) = scratch() else {
        return Err(ReadError);
    };
    // SAFETY: `at` keeps the NAME_MAX-byte write inside the slot.
    let n = unsafe {
        bpf_probe_read_kernel_str(
            at(buf, w.cursor as usize).cast(),
            NAME_MAX as u32,
            name as *const _,
        )
    };
    if n <= 0 {
        count(counter::READ_ERRORS);
        return Err(ReadError);
    }
    w.cursor += n as u64;
    w.dentry = parent;
    Ok(true)
}

/// Copies `len` bytes of user memory at `src` to `buf + start`. `len` must
/// not exceed `SCRATCH_HALF`.
#[inline(always)]
pub fn copy_user(buf: *mut u8, start: usize, src: u64, len: usize) -> bool {
    let len = len & (SCRATCH_HALF - 1);
    // SAFETY: offset and length are both masked below SCRATCH_HALF.
    unsafe { bpf_probe_read_user(at(buf, start).cast(), len as u32, src as *const _) == 0 }
}

/// Copies a NUL-terminated user string of at most `max` bytes to
/// `buf + start`; returns the bytes written including the NUL.
#[inline(always)]
pub fn copy_user_str(buf: *mut u8, start: usize, src: u64, max: usize) -> Option<usize> {
    let max = max & (SCRATCH_HALF - 1);
    // SAFETY: offset and length are both masked below SCRATCH_HALF.
    let n = unsafe { bpf_probe_read_user_str(at(buf, start).cast(), max as u32, src as *const _) };
    if n > 0 {
        Some(n as usize)
    } else {
        None
    }
}

/// Sends the first `len` bytes of a scratch slot as one record, counting a
/// loss against `kind` when the ring buffer is full.
#[inline(always)]
pub fn emit(buf: *mut u8, len: usize, kind: u32) {
    let len = len & (SCRATCH_BYTES - 1);
    // SAFETY: the slot is SCRATCH_BYTES long and `len` is masked below that.
    let record = unsafe { core::slice::from_raw_parts(buf as *const u8, len) };
    if PROC_EVENTS
        .output::<[u8]>(record, wakeup(&PROC_EVENTS, len as u64))
        .is_err()
    {
        count(counter::LOST_BASE + kind);
    }
}

/// The flags for adding a `len`-byte record to `ring`. The reader is woken
/// when it is parked (the first record after a quiet spell), or when this
/// record takes the unread bytes across `RING_WAKEUP_BYTES` (a burst); the
/// records in between wait for its timed poll, which runs while records
/// keep coming. So a burst costs a wakeup or two rather than one per
/// record, and a quiet machine no timer at all. Two CPUs may both wake it,
/// or both miss the mark; the poll covers the miss.
#[inline(always)]
pub fn wakeup(ring: &RingBuf, len: u64) -> u64 {
    if let Some(parked) = READER.get_ptr_mut(0) {
        // SAFETY: a live map value; the race with userspace and other CPUs
        // only costs an extra wakeup (see above).
        unsafe {
            if core::ptr::read_volatile(parked) != 0 {
                core::ptr::write_volatile(parked, 0);
                return BPF_RB_FORCE_WAKEUP as u64;
            }
        }
    }
    let unread = ring.query(BPF_RB_AVAIL_DATA as u64);
    if unread < RING_WAKEUP_BYTES && unread + len >= RING_WAKEUP_BYTES {
        BPF_RB_FORCE_WAKEUP as u64
    } else {
        BPF_RB_NO_WAKEUP as u64
    }
}

/// `S_IFMT` and `S_IFSOCK` of `inode->i_mode`.
const S_IFMT: u16 = 0o170000;
const S_IFSOCK: u16 = 0o140000;
/// EtherType values of IPv4 and IPv6 (`skb->protocol`, host order).
pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_IPV6: u16 = 0x86DD;
/// `BPF_NOEXIST`: insert only when the key is absent.
pub const BPF_NOEXIST: u64 = 1;

/// `AF_INET` and `AF_INET6`.
pub const AF_UNIX: u16 = 1;
pub const AF_INET: u16 = 2;
pub const AF_INET6: u16 = 10;

/// Network namespace inode number of a `struct sock *`.
#[inline(always)]
pub fn sk_netns(sk: u64) -> Result<u32, ReadError> {
    let net: u64 = read(sk, off!(sock_common_skc_net))?;
    read(net, off!(net_ns) + off!(ns_common_inum))
}

/// Network namespace inode number of the current task.
#[inline(always)]
pub fn current_netns(task: u64) -> Result<u32, ReadError> {
    let nsproxy: u64 = read(task, off!(task_struct_nsproxy))?;
    if nsproxy == 0 {
        return Ok(0);
    }
    let net: u64 = read(nsproxy, off!(nsproxy_net_ns))?;
    read(net, off!(net_ns) + off!(ns_common_inum))
}

/// An IPv4 address (network order) as a v4-mapped IPv6 address.
#[inline(always)]
pub fn v4_mapped(addr: [u8; 4]) -> [u8; 16] {
    [
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, addr[0], addr[1], addr[2], addr[3],
    ]
}

/// Local and remote address and port of a `struct sock *`, addresses in
/// the 16-byte form of `NetEvent`, ports in host order.
#[inline(always)]
pub fn sk_tuple(sk: u64) -> Result<([u8; 16], u16, [u8; 16], u16), ReadError> {
    let family: u16 = read(sk, off!(sock_common_skc_family))?;
    let (local, remote) = if family == AF_INET6 {
        (
            read::<[u8; 16]>(sk, off!(sock_common_skc_v6_rcv_saddr))?,
            read::<[u8; 16]>(sk, off!(sock_common_skc_v6_daddr))?,
        )
    } else {
        (
            v4_mapped(read(sk, off!(sock_common_skc_rcv_saddr))?),
            v4_mapped(read(sk, off!(sock_common_skc_daddr))?),
        )
    };
    let dport: u16 = read(sk, off!(sock_common_skc_dport))?;
    let num: u16 = read(sk, off!(sock_common_skc_num))?;
    Ok((local, num, remote, u16::from_be(dport)))
}

/// The `struct sock *` behind file descriptor `fd` of `task`, when it is a
/// socket.
#[inline(always)]
pub fn sock_of_fd(task: u64, fd: u64) -> Result<Option<u64>, ReadError> {
    let files: u64 = read(task, off!(task_struct_files))?;
    let fdt: u64 = read(files, off!(files_struct_fdt))?;
    let max_fds: u32 = read(fdt, off!(fdtable_max_fds))?;
    if fd >= max_fds as u64 {
        return Ok(None);
    }
    let fd_array: u64 = read(fdt, off!(fdtable_fd))?;
    let file: u64 = read(fd_array, fd * 8)?;
    if file == 0 {
        return Ok(None);
    }
    let inode: u64 = read(file, off!(file_f_inode))?;
    let mode: u16 = read(inode, off!(inode_i_mode))?;
    if mode & S_IFMT != S_IFSOCK {
        return Ok(None);
    }
    let socket: u64 = read(file, off!(file_private_data))?;
    let sk: u64 = read(socket, off!(socket_sk))?;
    Ok((sk != 0).then_some(sk))
}
