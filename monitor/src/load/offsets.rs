//! Resolving [`KernelOffsets`] from the running kernel's BTF.

use std::path::Path;

use btf_rs::{Btf, Type};
use monitor_common::offsets::{KernelOffsets, OFFSET_MISSING};

/// Where the kernel exposes its own BTF.
pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

#[derive(Debug, thiserror::Error)]
pub enum OffsetError {
    #[error("cannot read kernel BTF at {path}: {message} (the monitor needs a kernel built with CONFIG_DEBUG_INFO_BTF=y)")]
    NoBtf { path: String, message: String },
    #[error("kernel BTF has no struct {0}")]
    NoStruct(String),
    #[error("kernel struct {strukt} has no member {member} (tried {tried})")]
    NoMember {
        strukt: String,
        member: String,
        tried: String,
    },
    #[error("kernel struct {strukt} member {member} is a bit field")]
    BitField { strukt: String, member: String },
}

/// Reads the offsets from the BTF file at `path`.
pub fn from_file(path: &Path) -> Result<KernelOffsets, OffsetError> {
    let btf = Btf::from_file(path).map_err(|e| OffsetError::NoBtf {
        path: path.display().to_string(),
        message: e.to_string(),
    })?;
    let mut offsets = resolve(&btf)?;
    // Where conntrack is a module its types are in the module's split BTF.
    let module = path.with_file_name("nf_conntrack");
    if offsets.nf_conn_tuple_orig == OFFSET_MISSING && module.exists() {
        if let Ok(split) = Btf::from_split_file(&module, &btf) {
            let r = Resolver { btf: &split };
            offsets.nf_conn_tuple_orig = r.conntrack_tuple()?;
            offsets.nf_conntrack_tuple_hash_size =
                r.size("nf_conntrack_tuple_hash").unwrap_or(OFFSET_MISSING);
        }
    }
    Ok(offsets)
}

/// Resolves every member the eBPF programs read.
pub fn resolve(btf: &Btf) -> Result<KernelOffsets, OffsetError> {
    let r = Resolver { btf };
    Ok(KernelOffsets {
        task_struct_pid: r.member("task_struct", &["pid"])?,
        task_struct_tgid: r.member("task_struct", &["tgid"])?,
        task_struct_real_parent: r.member("task_struct", &["real_parent"])?,
        task_struct_group_leader: r.member("task_struct", &["group_leader"])?,
        task_struct_mm: r.member("task_struct", &["mm"])?,
        task_struct_fs: r.member("task_struct", &["fs"])?,
        task_struct_files: r.member("task_struct", &["files"])?,
        task_struct_cred: r.member("task_struct", &["cred"])?,
        task_struct_exit_code: r.member("task_struct", &["exit_code"])?,
        task_struct_signal: r.member("task_struct", &["signal"])?,
        // Renamed in Linux 5.5 (commit cf25e24db61c).
        task_struct_start_boottime: r
            .member("task_struct", &["start_boottime", "real_start_time"])?,
        task_struct_comm: r.member("task_struct", &["comm"])?,
        task_struct_loginuid: r.optional("task_struct", "loginuid")?,
        signal_struct_live: r.member("signal_struct", &["live"])?,
        mm_struct_arg_start: r.member("mm_struct", &["arg_start"])?,
        mm_struct_arg_end: r.member("mm_struct", &["arg_end"])?,
        mm_struct_exe_file: r.member("mm_struct", &["exe_file"])?,
        file_f_path: r.member("file", &["f_path"])?,
        file_f_inode: r.member("file", &["f_inode"])?,
        path_mnt: r.member("path", &["mnt"])?,
        path_dentry: r.member("path", &["dentry"])?,
        dentry_d_parent: r.member("dentry", &["d_parent"])?,
        dentry_d_name: r.member("dentry", &["d_name"])?,
        qstr_name: r.member("qstr", &["name"])?,
        vfsmount_mnt_root: r.member("vfsmount", &["mnt_root"])?,
        mount_mnt: r.member("mount", &["mnt"])?,
        mount_mnt_parent: r.member("mount", &["mnt_parent"])?,
        mount_mnt_mountpoint: r.member("mount", &["mnt_mountpoint"])?,
        fs_struct_pwd: r.member("fs_struct", &["pwd"])?,
        files_struct_fdt: r.member("files_struct", &["fdt"])?,
        fdtable_max_fds: r.member("fdtable", &["max_fds"])?,
        fdtable_fd: r.member("fdtable", &["fd"])?,
        inode_i_mode: r.member("inode", &["i_mode"])?,
        inode_i_rdev: r.member("inode", &["i_rdev"])?,
        inode_i_nlink: r.member("inode", &["i_nlink", "__i_nlink"])?,
        inode_i_ino: r.member("inode", &["i_ino"])?,
        cred_uid: r.member("cred", &["uid"])?,
        cred_euid: r.member("cred", &["euid"])?,
        cred_gid: r.member("cred", &["gid"])?,
        cred_egid: r.member("cred", &["egid"])?,
        task_struct_nsproxy: r.member("task_struct", &["nsproxy"])?,
        nsproxy_net_ns: r.member("nsproxy", &["net_ns"])?,
        net_ns: r.member("net", &["ns"])?,
        ns_common_inum: r.member("ns_common", &["inum"])?,
        sock_common_skc_cookie: r.member("sock_common", &["skc_cookie"])?,
        sock_common_skc_net: r.member("sock_common", &["skc_net"])?,
        sock_common_skc_family: r.member("sock_common", &["skc_family"])?,
        sock_common_skc_daddr: r.member("sock_common", &["skc_daddr"])?,
        sock_common_skc_rcv_saddr: r.member("sock_common", &["skc_rcv_saddr"])?,
        sock_common_skc_dport: r.member("sock_common", &["skc_dport"])?,
        sock_common_skc_num: r.member("sock_common", &["skc_num"])?,
        sock_common_skc_v6_daddr: r.member("sock_common", &["skc_v6_daddr"])?,
        sock_common_skc_v6_rcv_saddr: r.member("sock_common", &["skc_v6_rcv_saddr"])?,
        sock_sk_err: r.member("sock", &["sk_err"])?,
        // A u16 since Linux 5.6 (commit bf9765145b85); a bit field before.
        sock_sk_protocol: r.member("sock", &["sk_protocol"])?,
        sock_sk_type: r.member("sock", &["sk_type"])?,
        file_private_data: r.member("file", &["private_data"])?,
        socket_sk: r.member("socket", &["sk"])?,
        sk_buff_nfct: r.optional("sk_buff", "_nfct")?,
        nf_conn_tuple_orig: r.conntrack_tuple()?,
        nf_conntrack_tuple_hash_size: r.size("nf_conntrack_tuple_hash").unwrap_or(OFFSET_MISSING),
        // `af_unix` may be a module, whose types are not in vmlinux.
        unix_sock_peer: match r.optional("unix_sock", "peer") {
            Err(OffsetError::NoStruct(_)) => OFFSET_MISSING,
            other => other?,
        },
        nsproxy_mnt_ns: r.member("nsproxy", &["mnt_ns"])?,
        nsproxy_uts_ns: r.member("nsproxy", &["uts_ns"])?,
        mnt_namespace_ns: r.member("mnt_namespace", &["ns"])?,
        uts_namespace_ns: r.member("uts_namespace", &["ns"])?,
        pid_namespace_ns: r.member("pid_namespace", &["ns"])?,
        task_struct_thread_pid: r.member("task_struct", &["thread_pid"])?,
        pid_level: r.member("pid", &["level"])?,
        pid_numbers: r.member("pid", &["numbers"])?,
        upid_ns: r.member("upid", &["ns"])?,
        upid_size: r
            .size("upid")
            .ok_or_else(|| OffsetError::NoStruct("upid".to_owned()))?,
    })
}

/// Size of `struct nf_conntrack_tuple`, whose inner layout the TC programs
/// assume (two 20-byte halves: address, port, then `l3num` or `protonum`).
/// Stable since Linux 2.6; checked here so a kernel that changes it loses
/// only the NAT join.
const CONNTRACK_TUPLE_SIZE: u32 = 40;

struct Resolver<'a> {
    btf: &'a Btf,
}

impl Resolver<'_> {
    /// Offset of the original-direction tuple in `nf_conn`, or
    /// [`OFFSET_MISSING`] when this kernel's BTF has no conntrack (built as
    /// a module) or a tuple layout the programs do not know.
    fn conntrack_tuple(&self) -> Result<u32, OffsetError> {
        if self.size("nf_conntrack_tuple") != Some(CONNTRACK_TUPLE_SIZE) {
            return Ok(OFFSET_MISSING);
        }
        let Ok(hash) = self.member("nf_conn", &["tuplehash"]) else {
            return Ok(OFFSET_MISSING);
        };
        let tuple = self.optional("nf_conntrack_tuple_hash", "tuple")?;
        if tuple == OFFSET_MISSING {
            return Ok(OFFSET_MISSING);
        }
        Ok(hash + tuple)
    }

    /// Size in bytes of struct `name`, if this BTF has it.
    fn size(&self, name: &str) -> Option<u32> {
        self.find_struct(name).ok().map(|s| s.size() as u32)
    }

    /// Offset of the first of `names` that `strukt` has.
    fn member(&self, strukt: &str, names: &[&str]) -> Result<u32, OffsetError> {
        let s = self.find_struct(strukt)?;
        for name in names {
            if let Some(bits) = self.search(&s, name, strukt)? {
                return Ok(bits / 8);
            }
        }
        Err(OffsetError::NoMember {
            strukt: strukt.to_owned(),
            member: names[0].to_owned(),
            tried: names.join(", "),
        })
    }

    /// Offset of `name`, or [`OFFSET_MISSING`] when this kernel lacks it.
    fn optional(&self, strukt: &str, name: &str) -> Result<u32, OffsetError> {
        match self.member(strukt, &[name]) {
            Err(OffsetError::NoMember { .. }) => Ok(OFFSET_MISSING),
            other => other,
        }
    }

    fn find_struct(&self, name: &str) -> Result<btf_rs::Struct, OffsetError> {
        let types = self.btf.resolve_types_by_name(name).unwrap_or_default();
        types
            .into_iter()
            .find_map(|t| match t {
                Type::Struct(s) if !s.members.is_empty() => Some(s),
                _ => None,
            })
            .ok_or_else(|| OffsetError::NoStruct(name.to_owned()))
    }

    /// Bit offset of member `name` in `s`, looking into anonymous struct
    /// and union members as C does.
    fn search(
        &self,
        s: &btf_rs::Struct,
        name: &str,
        strukt: &str,
    ) -> Result<Option<u32>, OffsetError> {
        for m in &s.members {
            let member_name = self.btf.resolve_name(m).unwrap_or_default();
            if member_name == name {
                if m.bitfield_size().is_some_and(|b| b != 0) || m.bit_offset() % 8 != 0 {
                    return Err(OffsetError::BitField {
                        strukt: strukt.to_owned(),
                        member: name.to_owned(),
                    });
                }
                return Ok(Some(m.bit_offset()));
            }
            if member_name.is_empty() {
                if let Some(inner) = self.aggregate(m) {
                    if let Some(bits) = self.search(&inner, name, strukt)? {
                        return Ok(Some(m.bit_offset() + bits));
                    }
                }
            }
        }
        Ok(None)
    }

    /// The struct or union a member's type is, through typedefs and qualifiers.
    fn aggregate(&self, m: &btf_rs::Member) -> Option<btf_rs::Struct> {
        let mut t = self.btf.resolve_chained_type(m).ok()?;
        for _ in 0..8 {
            t = match t {
                Type::Struct(s) | Type::Union(s) => return Some(s),
                Type::Typedef(x) => self.btf.resolve_chained_type(&x).ok()?,
                Type::Const(x) | Type::Volatile(x) | Type::Restrict(x) => {
                    self.btf.resolve_chained_type(&x).ok()?
                }
                Type::TypeTag(x) => self.btf.resolve_chained_type(&x).ok()?,
                _ => return None,
            };
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs against this machine's kernel BTF, which every supported kernel has.
    #[test]
    fn resolves_running_kernel() {
        if !Path::new(VMLINUX_BTF).exists() {
            eprintln!("skipped: {VMLINUX_BTF} is missing on this machine");
            return;
        }
        let o = from_file(Path::new(VMLINUX_BTF)).expect("offsets resolve");
        assert_ne!(o.task_struct_tgid, 0);
        assert_eq!(
            o.task_struct_tgid,
            o.task_struct_pid + 4,
            "tgid follows pid"
        );
        assert_eq!(
            o.qstr_name, 8,
            "qstr: 8-byte hash_len then the name pointer"
        );
        assert_eq!(o.path_dentry, o.path_mnt + 8);
        assert!(o.mm_struct_arg_end > o.mm_struct_arg_start);
        assert!(o.mount_mnt > o.mount_mnt_mountpoint);
        assert_eq!(o.sock_common_skc_rcv_saddr, o.sock_common_skc_daddr + 4);
        assert_eq!(o.sock_common_skc_num, o.sock_common_skc_dport + 2);
        assert_eq!(
            (o.upid_size, o.upid_ns),
            (16, 8),
            "upid: the pid number, then the namespace pointer"
        );
        assert!(o.pid_numbers > o.pid_level);
    }

    #[test]
    fn missing_btf_is_a_clear_error() {
        let err = from_file(Path::new("/nonexistent/vmlinux")).expect_err("no file");
        assert!(err.to_string().contains("/nonexistent/vmlinux"), "{err}");
    }
}
