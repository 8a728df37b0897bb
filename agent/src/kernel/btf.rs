//! Struct member offsets and function presence, read from the running
//! kernel's BTF (`/sys/kernel/btf/vmlinux`). Rust eBPF programs cannot use
//! CO-RE field relocations, so the daemon resolves each offset here and hands
//! the programs a table (`kscope_common::KernelOffsets`).

use std::path::Path;

use btf_rs::{Btf, Type};
use kscope_common::KernelOffsets;

pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    #[error("cannot read kernel BTF at {path}: {source}")]
    Read { path: String, source: btf_rs::Error },
    #[error("struct {0} is not in the kernel's BTF")]
    NoStruct(String),
    #[error("struct {strukt} has no member {member} in the kernel's BTF")]
    NoMember { strukt: String, member: String },
    #[error("enum {enumeration} has no value {name} in the kernel's BTF")]
    NoEnumValue { enumeration: String, name: String },
    #[error("{strukt}.{member} is a bitfield; programs read whole bytes")]
    Bitfield { strukt: String, member: String },
}

struct MemberPlace {
    bits: u32,
    bitfield: bool,
}

/// The running kernel's type information.
pub struct KernelBtf {
    btf: Btf,
}

impl KernelBtf {
    pub fn from_file(path: &Path) -> Result<Self, BtfError> {
        Btf::from_file(path)
            .map(|btf| Self { btf })
            .map_err(|source| BtfError::Read { path: path.display().to_string(), source })
    }

    /// Byte offset of `member` in `struct strukt`, looking through anonymous
    /// structs and unions (where the kernel keeps e.g. `skc_daddr`).
    pub fn member_offset(&self, strukt: &str, member: &str) -> Result<u32, BtfError> {
        let types = self.btf.resolve_types_by_name(strukt).unwrap_or_default();
        let candidate = types.iter().find_map(|ty| match ty {
            Type::Struct(s) if !s.members.is_empty() => Some(s),
            _ => None,
        });
        let Some(s) = candidate else {
            return Err(BtfError::NoStruct(strukt.to_owned()));
        };
        match self.find_member(s, member, 0, 0) {
            Some(place) if place.bitfield => {
                Err(BtfError::Bitfield { strukt: strukt.to_owned(), member: member.to_owned() })
            }
            Some(place) => Ok(place.bits / 8),
            None => Err(BtfError::NoMember { strukt: strukt.to_owned(), member: member.to_owned() }),
        }
    }

    fn find_member(&self, s: &btf_rs::Struct, wanted: &str, base_bits: u32, depth: u32) -> Option<MemberPlace> {
        // Anonymous nesting in the kernel is shallow; the bound keeps a
        // malformed BTF from recursing without end.
        if depth > 8 {
            return None;
        }
        for m in &s.members {
            let name = self.btf.resolve_name(m).unwrap_or_default();
            let bits = base_bits + m.bit_offset();
            if name == wanted {
                let bitfield = m.bitfield_size().is_some_and(|size| size != 0) || !bits.is_multiple_of(8);
                return Some(MemberPlace { bits, bitfield });
            }
            if name.is_empty() {
                let found = self.composite(m).and_then(|inner| self.find_member(&inner, wanted, bits, depth + 1));
                if found.is_some() {
                    return found;
                }
            }
        }
        None
    }

    /// The struct or union a member's type resolves to, through typedefs
    /// and qualifiers.
    fn composite(&self, member: &btf_rs::Member) -> Option<btf_rs::Struct> {
        let mut ty = self.btf.resolve_chained_type(member).ok()?;
        for _ in 0..8 {
            match ty {
                Type::Struct(s) | Type::Union(s) => return Some(s),
                Type::Typedef(ref t) => ty = self.btf.resolve_chained_type(t).ok()?,
                Type::Const(ref t) | Type::Volatile(ref t) => ty = self.btf.resolve_chained_type(t).ok()?,
                _ => return None,
            }
        }
        None
    }

    /// Byte offset of the first of `members` (alternative names a member had
    /// across kernel versions) that `strukt` has.
    pub fn member_offset_any(&self, strukt: &str, members: &[&str]) -> Result<u32, BtfError> {
        let mut last = BtfError::NoStruct(strukt.to_owned());
        for member in members {
            match self.member_offset(strukt, member) {
                Ok(offset) => return Ok(offset),
                Err(err) => last = err,
            }
        }
        Err(last)
    }

    /// The value of `name` in `enum enumeration`.
    pub fn enum_value(&self, enumeration: &str, name: &str) -> Result<u32, BtfError> {
        let types = self.btf.resolve_types_by_name(enumeration).unwrap_or_default();
        types
            .iter()
            .find_map(|ty| match ty {
                Type::Enum(e) => e
                    .members
                    .iter()
                    .find(|m| self.btf.resolve_name(*m).is_ok_and(|n| n == name))
                    .map(btf_rs::EnumMember::val),
                _ => None,
            })
            .ok_or_else(|| BtfError::NoEnumValue { enumeration: enumeration.to_owned(), name: name.to_owned() })
    }

    /// Whether the kernel's BTF has a function of this name (what fentry
    /// attaches to).
    pub fn has_function(&self, name: &str) -> bool {
        self.btf.resolve_types_by_name(name).unwrap_or_default().iter().any(|ty| matches!(ty, Type::Func(_)))
    }

    /// Every offset the kernel programs use. A member missing on this kernel
    /// is reported, not fatal: the programs leave that field zero, and the
    /// sensors that need it reject their forms.
    pub fn kernel_offsets(&self) -> (KernelOffsets, Vec<BtfError>) {
        let mut offsets = KernelOffsets::missing();
        let mut missing = Vec::new();
        let table: [(&mut u32, &str, &[&str]); 31] = [
            (&mut offsets.task_real_parent, "task_struct", &["real_parent"]),
            (&mut offsets.task_tgid, "task_struct", &["tgid"]),
            (&mut offsets.task_start_time, "task_struct", &["start_time"]),
            (&mut offsets.task_exit_code, "task_struct", &["exit_code"]),
            (&mut offsets.task_group_leader, "task_struct", &["group_leader"]),
            (&mut offsets.task_files, "task_struct", &["files"]),
            (&mut offsets.files_fdt, "files_struct", &["fdt"]),
            (&mut offsets.fdtable_fd, "fdtable", &["fd"]),
            (&mut offsets.fdtable_max_fds, "fdtable", &["max_fds"]),
            (&mut offsets.file_private_data, "file", &["private_data"]),
            (&mut offsets.socket_sk, "socket", &["sk"]),
            (&mut offsets.sk_daddr, "sock_common", &["skc_daddr"]),
            (&mut offsets.sk_rcv_saddr, "sock_common", &["skc_rcv_saddr"]),
            (&mut offsets.sk_dport, "sock_common", &["skc_dport"]),
            (&mut offsets.sk_num, "sock_common", &["skc_num"]),
            (&mut offsets.sk_family, "sock_common", &["skc_family"]),
            (&mut offsets.sk_v6_daddr, "sock_common", &["skc_v6_daddr"]),
            (&mut offsets.sk_v6_rcv_saddr, "sock_common", &["skc_v6_rcv_saddr"]),
            (&mut offsets.tcp_bytes_received, "tcp_sock", &["bytes_received"]),
            (&mut offsets.tcp_bytes_sent, "tcp_sock", &["bytes_sent"]),
            (&mut offsets.binprm_filename, "linux_binprm", &["filename"]),
            (&mut offsets.sk_state, "sock_common", &["skc_state"]),
            (&mut offsets.file_f_inode, "file", &["f_inode"]),
            (&mut offsets.inode_i_mode, "inode", &["i_mode"]),
            (&mut offsets.sk_protocol, "sock", &["sk_protocol"]),
            (&mut offsets.msghdr_msg_name, "msghdr", &["msg_name"]),
            (&mut offsets.msghdr_msg_iter, "msghdr", &["msg_iter"]),
            (&mut offsets.iov_iter_type, "iov_iter", &["iter_type"]),
            (&mut offsets.iov_iter_ubuf, "iov_iter", &["ubuf"]),
            // Renamed when ITER_UBUF arrived (6.4).
            (&mut offsets.iov_iter_iov, "iov_iter", &["__iov", "iov"]),
            (&mut offsets.iov_iter_nr_segs, "iov_iter", &["nr_segs"]),
        ];
        for (slot, strukt, member) in table {
            match self.member_offset_any(strukt, member) {
                Ok(offset) => *slot = offset,
                Err(err) => missing.push(err),
            }
        }
        // `sock.sk_flags` moved into `sock_common` as `skc_flags` (6.18 has it); a
        // sock starts with its sock_common, so either offset is the sock's.
        match self.member_offset_any("sock", &["sk_flags"]) {
            Ok(offset) => offsets.sk_flags = offset,
            Err(err) => match self.member_offset_any("sock_common", &["skc_flags"]) {
                Ok(offset) => offsets.sk_flags = offset,
                Err(_) => missing.push(err),
            },
        }
        for (slot, strukt, member) in
            [(&mut offsets.skb_dev, "sk_buff", "dev"), (&mut offsets.netdev_nd_net, "net_device", "nd_net")]
        {
            match self.member_offset(strukt, member) {
                Ok(offset) => *slot = offset,
                Err(err) => missing.push(err),
            }
        }
        // `struct net` holds its `ns_common`, which holds the inode.
        match self.member_offset("net", "ns").and_then(|ns| Ok(ns + self.member_offset("ns_common", "inum")?)) {
            Ok(offset) => offsets.net_ns_inum = offset,
            Err(err) => missing.push(err),
        }
        // `enum iter_type` was renumbered in 6.4; the programs compare against these.
        for (slot, name) in [(&mut offsets.iter_ubuf_value, "ITER_UBUF"), (&mut offsets.iter_iovec_value, "ITER_IOVEC")]
        {
            match self.enum_value("iter_type", name) {
                Ok(value) => *slot = value,
                Err(err) => missing.push(err),
            }
        }
        (offsets, missing)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host_btf() -> KernelBtf {
        KernelBtf::from_file(Path::new(VMLINUX_BTF)).expect("this machine's kernel has BTF")
    }

    // These members' places have not moved in a decade of kernels; the test
    // checks that the resolver finds them through the anonymous unions of
    // `struct sock_common`.
    #[test]
    fn resolves_members_inside_anonymous_unions() {
        let btf = host_btf();
        assert_eq!(btf.member_offset("sock_common", "skc_daddr").unwrap(), 0);
        assert_eq!(btf.member_offset("sock_common", "skc_rcv_saddr").unwrap(), 4);
        assert_eq!(btf.member_offset("sock_common", "skc_dport").unwrap(), 12);
        assert_eq!(btf.member_offset("sock_common", "skc_num").unwrap(), 14);
        assert_eq!(btf.member_offset("sock_common", "skc_family").unwrap(), 16);
        assert_eq!(btf.member_offset("sock_common", "skc_state").unwrap(), 18);
    }

    #[test]
    fn reports_what_is_missing() {
        let btf = host_btf();
        assert!(matches!(btf.member_offset("sock_common", "no_such_member"), Err(BtfError::NoMember { .. })));
        assert!(matches!(btf.member_offset("no_such_struct_kscope", "x"), Err(BtfError::NoStruct(_))));
    }

    #[test]
    fn resolves_every_offset_on_this_kernel() {
        let (offsets, missing) = host_btf().kernel_offsets();
        assert!(missing.is_empty(), "{missing:?}");
        // task_struct.tgid follows pid directly, both pid_t.
        let btf = host_btf();
        assert_eq!(offsets.task_tgid, btf.member_offset("task_struct", "pid").unwrap() + 4);
        assert!(btf.has_function("tcp_connect"));
        assert!(!btf.has_function("kscope_no_such_function"));
    }
}
