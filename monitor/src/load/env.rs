//! What the kernel interface needs before anything loads: privileges, the
//! tracefs and bpffs mounts, and the locked-memory limit on old kernels.

use std::{ffi::CString, fs, path::Path};

/// Capabilities the monitor needs, by number (linux/capability.h).
const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

#[derive(Debug, thiserror::Error)]
pub enum EnvError {
    #[error("insufficient privileges: the monitor needs root, or CAP_BPF with CAP_PERFMON (or CAP_SYS_ADMIN); running as uid {uid} with effective capabilities {caps:#x}")]
    Privileges { uid: u32, caps: u64 },
    #[error("{what} is not mounted and mounting it at {target} failed: {source}")]
    Mount {
        what: &'static str,
        target: String,
        #[source]
        source: std::io::Error,
    },
}

/// A filesystem the monitor needs, and where to mount it when absent.
struct Needed {
    fstype: &'static str,
    default_target: &'static str,
}

const TRACEFS: Needed = Needed {
    fstype: "tracefs",
    default_target: "/sys/kernel/tracing",
};
const BPFFS: Needed = Needed {
    fstype: "bpf",
    default_target: "/sys/fs/bpf",
};

/// Checks privileges, mounts tracefs and bpffs when missing and lifts the
/// memlock limit (kernels before 5.11 charge BPF maps against it).
pub fn prepare() -> Result<(), EnvError> {
    check_privileges()?;
    let mounts = fs::read_to_string("/proc/mounts").unwrap_or_default();
    for needed in [TRACEFS, BPFFS] {
        if find_mount(&mounts, needed.fstype).is_none() {
            mount(needed.fstype, needed.default_target)?;
            tracing::info!(
                fstype = needed.fstype,
                target = needed.default_target,
                "mounted"
            );
        }
    }
    let unlimited = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: plain syscall on a valid struct.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) } != 0 {
        tracing::debug!("could not lift RLIMIT_MEMLOCK; fine on kernels >= 5.11");
    }
    Ok(())
}

/// The mount point of the first filesystem of type `fstype` in a
/// /proc/mounts text.
pub fn find_mount<'a>(mounts: &'a str, fstype: &str) -> Option<&'a str> {
    mounts.lines().find_map(|line| {
        let mut f = line.split_ascii_whitespace();
        let (_dev, target, ty) = (f.next()?, f.next()?, f.next()?);
        (ty == fstype).then_some(target)
    })
}

fn mount(fstype: &'static str, target: &str) -> Result<(), EnvError> {
    let err = |source| EnvError::Mount {
        what: fstype,
        target: target.to_owned(),
        source,
    };
    if !Path::new(target).is_dir() {
        return Err(err(std::io::Error::from(std::io::ErrorKind::NotFound)));
    }
    let c = |s: &str| CString::new(s).map_err(|_| err(std::io::ErrorKind::InvalidInput.into()));
    let (src, tgt, ty) = (c(fstype)?, c(target)?, c(fstype)?);
    // SAFETY: valid NUL-terminated strings, no data argument.
    let rc = unsafe { libc::mount(src.as_ptr(), tgt.as_ptr(), ty.as_ptr(), 0, std::ptr::null()) };
    if rc != 0 {
        return Err(err(std::io::Error::last_os_error()));
    }
    Ok(())
}

fn check_privileges() -> Result<(), EnvError> {
    // SAFETY: getuid cannot fail.
    let uid = unsafe { libc::geteuid() };
    let caps = effective_caps();
    let has = |cap: u32| caps & (1u64 << cap) != 0;
    if has(CAP_SYS_ADMIN) || (has(CAP_BPF) && has(CAP_PERFMON)) {
        return Ok(());
    }
    Err(EnvError::Privileges { uid, caps })
}

/// `CapEff` of this process, from /proc/self/status.
pub fn effective_caps() -> u64 {
    let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_mounts_by_type() {
        let m = "sysfs /sys sysfs rw 0 0\ntracefs /sys/kernel/tracing tracefs rw 0 0\n";
        assert_eq!(find_mount(m, "tracefs"), Some("/sys/kernel/tracing"));
        assert_eq!(find_mount(m, "bpf"), None);
        assert_eq!(find_mount("garbage\n\n", "bpf"), None);
    }
}
