//! Least privilege: once every probe is loaded and attached, the daemon
//! keeps only the capabilities its running stages use and drops the rest
//! from its effective, permitted, inheritable, ambient and (when it may)
//! bounding sets. Loading happens on the main thread before any other
//! thread exists, so the drop (which is per thread) covers every thread.
//!
//! Kept:
//! - `CAP_NET_ADMIN`: TC programs on interfaces that appear later, and the
//!   netlink notification groups;
//! - `CAP_SYS_PTRACE`: /proc/PID/exe, fd and environment of processes of
//!   other users (process seeding, socket owners);
//! - `CAP_SYS_ADMIN`, only with `dataplane.netns`: entering the gateway's
//!   network namespace to watch new interfaces.
//!
//! `CAP_BPF`, `CAP_PERFMON`, `CAP_SYS_RESOURCE` and everything else are
//! needed only to load and attach, and are gone after.

use std::io;

pub const CAP_NET_ADMIN: u32 = 12;
pub const CAP_SYS_PTRACE: u32 = 19;
pub const CAP_SYS_ADMIN: u32 = 21;
/// Highest capability number the drop walks (CAP_CHECKPOINT_RESTORE is 40).
const CAP_LAST: u32 = 40;

const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

#[repr(C)]
struct Header {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct Data {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// The capabilities the running daemon keeps, as a bit mask.
pub fn runtime_set(enters_netns: bool) -> u64 {
    let mut keep = (1u64 << CAP_NET_ADMIN) | (1u64 << CAP_SYS_PTRACE);
    if enters_netns {
        keep |= 1u64 << CAP_SYS_ADMIN;
    }
    keep
}

/// Reduces this thread's capabilities to `keep` (those of them it has);
/// returns the effective set after.
pub fn drop_to(keep: u64) -> io::Result<u64> {
    let mut header = Header {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let mut data = [Data::default(); 2];
    // SAFETY: a v3 header and two data words, as capget expects.
    if unsafe { libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let permitted = u64::from(data[0].permitted) | (u64::from(data[1].permitted) << 32);
    let after = permitted & keep;
    // Ambient capabilities must go before the permitted ones they need.
    // SAFETY: plain prctl calls.
    unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
        );
    }
    // The bounding set needs CAP_SETPCAP to shrink: done while it is still
    // held, and skipped without it (exec'd children then still cannot gain
    // more than the permitted set below).
    for cap in 0..=CAP_LAST {
        if keep & (1u64 << cap) == 0 {
            // SAFETY: plain prctl call.
            unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) };
        }
    }
    let set = [
        Data {
            effective: after as u32,
            permitted: after as u32,
            inheritable: 0,
        },
        Data {
            effective: (after >> 32) as u32,
            permitted: (after >> 32) as u32,
            inheritable: 0,
        },
    ];
    // SAFETY: a v3 header and two data words, as capset expects.
    if unsafe { libc::syscall(libc::SYS_capset, &mut header, set.as_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(after)
}

/// Names of the capabilities in `mask` that this module knows, for logs.
pub fn names(mask: u64) -> String {
    let mut out = Vec::new();
    for (cap, name) in [
        (CAP_NET_ADMIN, "CAP_NET_ADMIN"),
        (CAP_SYS_PTRACE, "CAP_SYS_PTRACE"),
        (CAP_SYS_ADMIN, "CAP_SYS_ADMIN"),
    ] {
        if mask & (1u64 << cap) != 0 {
            out.push(name);
        }
    }
    if out.is_empty() {
        "none".to_owned()
    } else {
        out.join(",")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runtime_set_adds_sys_admin_only_for_a_namespace() {
        assert_eq!(names(runtime_set(false)), "CAP_NET_ADMIN,CAP_SYS_PTRACE");
        assert_eq!(
            names(runtime_set(true)),
            "CAP_NET_ADMIN,CAP_SYS_PTRACE,CAP_SYS_ADMIN"
        );
    }

    /// Runs in a child process so the test runner keeps its capabilities.
    #[test]
    fn a_drop_leaves_only_the_kept_capabilities() {
        // SAFETY: the child only makes syscalls and exits.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            let code = match drop_to(1u64 << CAP_NET_ADMIN) {
                Ok(after) if after & !(1u64 << CAP_NET_ADMIN) == 0 => 0,
                _ => 1,
            };
            // SAFETY: leaving the forked child without running destructors.
            unsafe { libc::_exit(code) };
        }
        let mut status = 0;
        // SAFETY: waiting for our own child.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        assert_eq!(status, 0, "the child could not drop to CAP_NET_ADMIN");
    }
}
