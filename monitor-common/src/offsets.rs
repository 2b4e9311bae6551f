//! Kernel structure member offsets, resolved by userspace from the running
//! kernel's BTF and handed to the eBPF programs as a read-only global.
//!
//! aya's Rust eBPF programs cannot use CO-RE relocations, and offsets baked
//! in at build time would be wrong on every other kernel. Resolving them at
//! load time from `/sys/kernel/btf/vmlinux` keeps one object portable across
//! the kernels gateways run.

use crate::assert_size;

/// Marks an optional member the running kernel does not have.
pub const OFFSET_MISSING: u32 = u32::MAX;

/// Byte offsets of the kernel structure members the programs read.
/// Field names are `<struct>_<member>`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelOffsets {
    pub task_struct_pid: u32,
    pub task_struct_tgid: u32,
    pub task_struct_real_parent: u32,
    pub task_struct_group_leader: u32,
    pub task_struct_mm: u32,
    pub task_struct_fs: u32,
    pub task_struct_files: u32,
    pub task_struct_cred: u32,
    pub task_struct_exit_code: u32,
    pub task_struct_signal: u32,
    pub task_struct_start_boottime: u32,
    pub task_struct_comm: u32,
    /// Optional: only with `CONFIG_AUDIT`.
    pub task_struct_loginuid: u32,
    pub signal_struct_live: u32,
    pub mm_struct_arg_start: u32,
    pub mm_struct_arg_end: u32,
    pub mm_struct_exe_file: u32,
    pub file_f_path: u32,
    pub file_f_inode: u32,
    pub path_mnt: u32,
    pub path_dentry: u32,
    pub dentry_d_parent: u32,
    pub dentry_d_name: u32,
    pub qstr_name: u32,
    pub vfsmount_mnt_root: u32,
    pub mount_mnt: u32,
    pub mount_mnt_parent: u32,
    pub mount_mnt_mountpoint: u32,
    pub fs_struct_pwd: u32,
    pub files_struct_fdt: u32,
    pub fdtable_max_fds: u32,
    pub fdtable_fd: u32,
    pub inode_i_mode: u32,
    pub inode_i_rdev: u32,
    pub inode_i_nlink: u32,
    pub inode_i_ino: u32,
    pub cred_uid: u32,
    pub cred_euid: u32,
    pub cred_gid: u32,
    pub cred_egid: u32,
    pub task_struct_nsproxy: u32,
    pub nsproxy_net_ns: u32,
    pub net_ns: u32,
    pub ns_common_inum: u32,
    pub sock_common_skc_cookie: u32,
    pub sock_common_skc_net: u32,
    pub sock_common_skc_family: u32,
    pub sock_common_skc_daddr: u32,
    pub sock_common_skc_rcv_saddr: u32,
    pub sock_common_skc_dport: u32,
    pub sock_common_skc_num: u32,
    pub sock_common_skc_v6_daddr: u32,
    pub sock_common_skc_v6_rcv_saddr: u32,
    pub sock_sk_err: u32,
    pub sock_sk_protocol: u32,
    pub sock_sk_type: u32,
    pub file_private_data: u32,
    pub socket_sk: u32,
    /// `sk_buff::_nfct`: the conntrack entry and its `ctinfo` in the low
    /// three bits. [`OFFSET_MISSING`] without conntrack, and then forwarded
    /// flows are counted without their NAT translation.
    pub sk_buff_nfct: u32,
    /// `nf_conn::tuplehash[0].tuple`, the original-direction tuple; the
    /// reply tuple follows `nf_conntrack_tuple_hash` bytes later.
    pub nf_conn_tuple_orig: u32,
    /// `sizeof(struct nf_conntrack_tuple_hash)`.
    pub nf_conntrack_tuple_hash_size: u32,
    /// `unix_sock::peer`: the other end of a connected unix socket.
    /// Optional: [`OFFSET_MISSING`] when the kernel's BTF lacks `af_unix`
    /// (built as a module), and then unix joins are not seen.
    pub unix_sock_peer: u32,
    pub nsproxy_mnt_ns: u32,
    pub nsproxy_uts_ns: u32,
    /// `mnt_namespace::ns`, `uts_namespace::ns` and `pid_namespace::ns`:
    /// each namespace's `struct ns_common`.
    pub mnt_namespace_ns: u32,
    pub uts_namespace_ns: u32,
    pub pid_namespace_ns: u32,
    /// `task_struct::thread_pid`, `pid::level`, `pid::numbers` and
    /// `upid::ns`: the pid namespace a task's pid lives in is
    /// `thread_pid->numbers[thread_pid->level].ns`.
    pub task_struct_thread_pid: u32,
    pub pid_level: u32,
    pub pid_numbers: u32,
    pub upid_ns: u32,
    /// `sizeof(struct upid)`.
    pub upid_size: u32,
}
assert_size!(KernelOffsets, 72 * 4);

impl KernelOffsets {
    /// All offsets zero: the value the eBPF object is built with, replaced
    /// at load time. Programs check `task_struct_tgid != 0` before running.
    pub const fn zeroed() -> Self {
        // SAFETY: every field is a `u32`, for which zero is valid.
        unsafe { core::mem::zeroed() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zeroed_is_all_zero_and_has_no_padding() {
        let z = KernelOffsets::zeroed();
        // SAFETY: plain u32 fields, size asserted above.
        let words: [u32; 72] = unsafe { core::mem::transmute(z) };
        assert!(words.iter().all(|&w| w == 0));
    }
}
