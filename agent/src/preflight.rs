//! Checks made before touching the kernel, each ending in one line a person
//! can act on.

use std::path::Path;

/// Capability bits (include/uapi/linux/capability.h).
const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PreflightError {
    #[error(
        "kscope needs {missing} to load eBPF programs (have: CapEff={cap_eff:#x}); run it as root (sudo kscope ...) or grant {missing}"
    )]
    MissingCapabilities { missing: String, cap_eff: u64 },
    #[error("cannot read this process's capabilities from /proc/self/status")]
    UnknownCapabilities,
}

/// Which of CAP_BPF and CAP_PERFMON the effective set lacks. CAP_SYS_ADMIN
/// stands in for both (kernels before 5.8 know only it).
pub fn missing_capabilities(cap_eff: u64) -> Vec<&'static str> {
    let has = |bit: u32| cap_eff & (1u64 << bit) != 0;
    if has(CAP_SYS_ADMIN) {
        return Vec::new();
    }
    let mut missing = Vec::new();
    if !has(CAP_BPF) {
        missing.push("CAP_BPF");
    }
    if !has(CAP_PERFMON) {
        missing.push("CAP_PERFMON");
    }
    missing
}

pub fn parse_cap_eff(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|line| line.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
}

pub fn check_capabilities() -> Result<(), PreflightError> {
    let status = std::fs::read_to_string("/proc/self/status").map_err(|_| PreflightError::UnknownCapabilities)?;
    let cap_eff = parse_cap_eff(&status).ok_or(PreflightError::UnknownCapabilities)?;
    let missing = missing_capabilities(cap_eff);
    if missing.is_empty() {
        Ok(())
    } else {
        Err(PreflightError::MissingCapabilities { missing: missing.join(" and "), cap_eff })
    }
}

/// Mounts tracefs where the tracepoint forms look for it, if nothing is
/// there yet. Failure is not fatal: the tracepoint forms then say how to
/// mount it themselves.
pub fn ensure_tracefs() -> Option<String> {
    let root = Path::new("/sys/kernel/tracing");
    if root.join("events").is_dir() || Path::new("/sys/kernel/debug/tracing/events").is_dir() {
        return None;
    }
    if !root.is_dir() {
        return None;
    }
    // SAFETY: all pointers are NUL-terminated literals.
    let rc = unsafe {
        libc::mount(c"nodev".as_ptr(), c"/sys/kernel/tracing".as_ptr(), c"tracefs".as_ptr(), 0, std::ptr::null())
    };
    (rc == 0).then(|| "mounted tracefs at /sys/kernel/tracing".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_cap_eff() {
        let status = "Name:\tkscope\nCapInh:\t0000000000000000\nCapEff:\t000001ffffffffff\n";
        assert_eq!(parse_cap_eff(status), Some(0x1ff_ffff_ffff));
        assert_eq!(parse_cap_eff("Name: x\n"), None);
    }

    #[test]
    fn names_each_missing_capability() {
        assert_eq!(missing_capabilities(0), vec!["CAP_BPF", "CAP_PERFMON"]);
        assert_eq!(missing_capabilities(1 << CAP_BPF), vec!["CAP_PERFMON"]);
        assert!(missing_capabilities((1 << CAP_BPF) | (1 << CAP_PERFMON)).is_empty());
        assert!(missing_capabilities(1 << CAP_SYS_ADMIN).is_empty());
        let err = PreflightError::MissingCapabilities { missing: "CAP_BPF".into(), cap_eff: 0 };
        assert!(err.to_string().starts_with("kscope needs CAP_BPF to load eBPF programs"));
    }
}
