//! The kernel source: vmlinux (found and checked against the running kernel) with its KASLR
//! offset, and kallsyms.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::elf::ElfFile;
use crate::{FileSpec, Kallsyms, Kernel, Options, Reason, Sym, Symbolized};

const PROC_KALLSYMS: &str = "/proc/kallsyms";

/// A vmlinux and the offset to apply to its addresses.
pub(crate) struct Vmlinux {
    pub(crate) elf: Arc<ElfFile>,
    pub(crate) offset: Result<u64, Reason>,
}

/// Everything loaded for one [`Kernel`] description.
pub(crate) struct KernelState {
    pub(crate) kallsyms: Result<Arc<Kallsyms>, Reason>,
    pub(crate) vmlinux: Result<Option<Vmlinux>, Reason>,
}

/// Extracts the GNU build-id from an ELF notes blob (`/sys/kernel/notes` is the running
/// kernel's `.notes` section). Notes use the host's byte order there.
pub(crate) fn build_id_from_notes(notes: &[u8]) -> Option<Vec<u8>> {
    const NT_GNU_BUILD_ID: u32 = 3;
    let align = |n: usize| n.checked_add(3).map(|n| n & !3);
    let word =
        |at: usize| -> Option<u32> { Some(u32::from_ne_bytes(notes.get(at..at.checked_add(4)?)?.try_into().ok()?)) };
    let mut at = 0;
    while at < notes.len() {
        let name_size = usize::try_from(word(at)?).ok()?;
        let desc_size = usize::try_from(word(at + 4)?).ok()?;
        let kind = word(at + 8)?;
        let name_start = at.checked_add(12)?;
        let desc_start = name_start.checked_add(align(name_size)?)?;
        let next = desc_start.checked_add(align(desc_size)?)?;
        if kind == NT_GNU_BUILD_ID && notes.get(name_start..name_start + name_size)? == b"GNU\0" {
            return notes.get(desc_start..desc_start.checked_add(desc_size)?).map(<[u8]>::to_vec);
        }
        at = next;
    }
    None
}

/// The places distributions put an uncompressed vmlinux with symbols for `release`.
fn vmlinux_candidates(release: &str) -> [PathBuf; 4] {
    [
        PathBuf::from(format!("/usr/lib/debug/boot/vmlinux-{release}")),
        PathBuf::from(format!("/boot/vmlinux-{release}")),
        PathBuf::from(format!("/usr/lib/debug/lib/modules/{release}/vmlinux")),
        PathBuf::from(format!("/lib/modules/{release}/build/vmlinux")),
    ]
}

/// Loads what `spec` describes. `open` opens an ELF file through the symbolizer's cache.
pub(crate) fn load(spec: &Kernel, open: &dyn Fn(&Path) -> Result<Arc<ElfFile>, Reason>) -> KernelState {
    let kallsyms = match &spec.kallsyms {
        FileSpec::Auto => load_kallsyms(Path::new(PROC_KALLSYMS)),
        FileSpec::Path(path) => load_kallsyms(path),
        FileSpec::Disabled => Err(Reason::NoKernelSymbols { error: "kallsyms disabled".into() }),
    };
    let elf = match &spec.vmlinux {
        FileSpec::Disabled => Ok(None),
        FileSpec::Path(path) => open(path).map(Some),
        FileSpec::Auto => Ok(find_vmlinux(open)),
    };
    let vmlinux = elf.map(|elf| {
        elf.map(|elf| {
            let offset = match spec.kaslr_offset {
                Some(offset) => Ok(offset),
                None => kaslr_offset(&elf, &kallsyms, spec.kallsyms == FileSpec::Disabled),
            };
            Vmlinux { elf, offset }
        })
    });
    KernelState { kallsyms, vmlinux }
}

fn load_kallsyms(path: &Path) -> Result<Arc<Kallsyms>, Reason> {
    match Kallsyms::load(path) {
        Ok(table) if table.is_empty() => {
            Err(Reason::NoKernelSymbols { error: format!("{} has no kallsyms lines", path.display()) })
        }
        Ok(table) => Ok(Arc::new(table)),
        Err(error) => Err(Reason::NoKernelSymbols { error: error.to_string() }),
    }
}

/// The first vmlinux in the usual places whose build-id matches the running kernel's (when
/// either build-id is unknown the file is taken on trust: better symbols than none).
fn find_vmlinux(open: &dyn Fn(&Path) -> Result<Arc<ElfFile>, Reason>) -> Option<Arc<ElfFile>> {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").ok()?;
    let running = std::fs::read("/sys/kernel/notes").ok().and_then(|notes| build_id_from_notes(&notes));
    vmlinux_candidates(release.trim()).iter().find_map(|path| {
        let elf = open(path).ok()?;
        match (&running, elf.build_id()) {
            (Some(running), Some(file)) if running.as_slice() != file => None,
            _ => Some(elf),
        }
    })
}

/// Running address minus vmlinux address, from a symbol both know. `_stext` first: `_text`
/// can differ from it in images with a head section before the text.
fn kaslr_offset(
    elf: &ElfFile,
    kallsyms: &Result<Arc<Kallsyms>, Reason>,
    kallsyms_disabled: bool,
) -> Result<u64, Reason> {
    // With kallsyms disabled for symbolization, the running kernel's still tells where
    // the image was loaded.
    let own;
    let table = if kallsyms_disabled {
        own = load_kallsyms(Path::new(PROC_KALLSYMS));
        &own
    } else {
        kallsyms
    };
    let table = match table {
        Ok(table) if table.is_restricted() => return Err(Reason::KptrRestricted),
        Ok(table) => table,
        Err(reason) => return Err(Reason::KaslrOffsetUnknown { why: reason.to_string() }),
    };
    for name in ["_stext", "_text"] {
        if let (Some(running), Some(file)) = (table.address_of(name), elf.symbol_address(name)) {
            return Ok(running.wrapping_sub(file));
        }
    }
    Err(Reason::KaslrOffsetUnknown { why: "neither _stext nor _text is in both kallsyms and the vmlinux".into() })
}

impl KernelState {
    /// Symbolizes one kernel address: vmlinux first, kallsyms for what it cannot resolve
    /// (module and BPF addresses, or no vmlinux at all).
    pub(crate) fn symbolize(&self, addr: u64, options: &Options) -> Symbolized {
        let mut vmlinux_reason = None;
        match &self.vmlinux {
            Ok(Some(Vmlinux { elf, offset: Ok(offset) })) => match elf.resolve(addr.wrapping_sub(*offset), options) {
                Ok(found) => {
                    let offset_in_sym = addr.wrapping_sub(*offset).wrapping_sub(found.addr);
                    return Symbolized::Sym(Sym {
                        name: found.name,
                        addr: addr.wrapping_sub(offset_in_sym),
                        offset: offset_in_sym,
                        size: found.size,
                        module: None,
                        code: found.code,
                        inlined: found.inlined,
                    });
                }
                Err(reason) => vmlinux_reason = Some(reason),
            },
            Ok(Some(Vmlinux { offset: Err(reason), .. })) | Err(reason) => vmlinux_reason = Some(reason.clone()),
            Ok(None) => {}
        }
        match &self.kallsyms {
            Ok(table) if table.is_restricted() => Symbolized::Unknown(Reason::KptrRestricted),
            Ok(table) => match table.find(addr) {
                Some(symbol) => {
                    // Rust-for-Linux symbols are mangled like any Rust symbol.
                    let name = if options.demangle {
                        crate::demangle::demangle(symbol.name).into_owned()
                    } else {
                        symbol.name.to_owned()
                    };
                    Symbolized::Sym(Sym {
                        name,
                        addr: symbol.addr,
                        offset: addr - symbol.addr,
                        size: None,
                        module: symbol.module.map(str::to_owned),
                        code: None,
                        inlined: Vec::new(),
                    })
                }
                None => Symbolized::Unknown(vmlinux_reason.unwrap_or(Reason::Unmapped)),
            },
            // kallsyms can't help; the vmlinux's reason (if one was tried) says more.
            Err(reason) => Symbolized::Unknown(vmlinux_reason.unwrap_or_else(|| reason.clone())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notes_build_id() {
        let mut notes = Vec::new();
        // A non-GNU note first, with a name needing padding.
        for (name, kind, desc) in [(&b"Xen\0"[..], 18u32, &[1u8, 2, 3][..]), (b"GNU\0", 3, &[0xab; 20])] {
            notes.extend_from_slice(&u32::try_from(name.len()).unwrap().to_ne_bytes());
            notes.extend_from_slice(&u32::try_from(desc.len()).unwrap().to_ne_bytes());
            notes.extend_from_slice(&kind.to_ne_bytes());
            notes.extend_from_slice(name);
            notes.resize(notes.len().next_multiple_of(4), 0);
            notes.extend_from_slice(desc);
            notes.resize(notes.len().next_multiple_of(4), 0);
        }
        assert_eq!(build_id_from_notes(&notes), Some(vec![0xab; 20]));
        for cut in 0..notes.len() {
            let _ = build_id_from_notes(&notes[..cut]);
        }
        assert_eq!(build_id_from_notes(&[0xff; 40]), None);
    }
}
