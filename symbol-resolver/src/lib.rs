//! Address symbolization for kernel and user space, and kernel attach-point lookup.
//!
//! One [`Symbolizer`] serves three kinds of [`Source`]:
//!
//! - [`Kernel`]: kernel addresses, resolved with a vmlinux image (ELF symbols and DWARF
//!   lines, relocated by the running kernel's KASLR offset) when one is found, and with
//!   `/proc/kallsyms` otherwise (also for module and BPF program addresses).
//! - [`Process`]: addresses in a process's address space, resolved through `/proc/PID/maps`
//!   to the mapped ELF files, their symbol tables, separate debug files and DWARF.
//! - [`Elf`]: virtual addresses of one ELF file, as `addr2line -e FILE` takes them.
//!
//! Input is a batch of addresses; output has one entry per address, in order: either a
//! [`Sym`] (name, offset, and source location and inlined frames when there is debug
//! information) or [`Symbolized::Unknown`] with the [`Reason`] the address could not be
//! resolved. A failure affects the addresses it concerns, never the whole batch: even a
//! source that cannot be opened at all yields one reason per address, so a caller can
//! render a stack without a separate error path.
//!
//! Processes are remembered: the first time a live process is symbolized (or when
//! [`Symbolizer::remember_process`] is called, e.g. on an exec event) a snapshot of its
//! mappings is taken and its executable files are opened, so its addresses still resolve
//! after it exits. Snapshots are refreshed while the process lives, replaced when its PID
//! is reused, and dropped by [`Symbolizer::forget_process`] or when more than
//! [`Options::max_processes`] are kept.
//!
//! [`KernelFunctions`] answers "does this kernel have function X, under which name, and
//! can it be traced" for sensors that attach kprobes.

#![cfg_attr(test, allow(clippy::unwrap_used, reason = "tests fail loudly"))]

mod addr_index;
mod attach;
mod demangle;
mod elf;
mod error;
mod kallsyms;
mod kernel;
mod lines;
mod maps;
mod process;
mod symbolizer;

use std::fmt;
use std::path::PathBuf;

pub use attach::{FunctionCandidate, FunctionLookup, KernelFunctions, Traceable, TraceableFunctions, Variant};
pub use error::Error;
pub use kallsyms::{Kallsyms, KernelSymbol};
pub use symbolizer::Symbolizer;

/// Where the symbols for a batch of addresses come from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Source {
    /// The running kernel (or one described by the given files).
    Kernel(Kernel),
    /// A process's address space.
    Process(Process),
    /// One ELF file; addresses are its virtual addresses (as in `nm` and `addr2line -e`).
    Elf(Elf),
}

/// Kernel symbol sources.
///
/// With the defaults, a vmlinux matching the running kernel's build-id is looked for in the
/// usual places (`/usr/lib/debug/boot/vmlinux-$(uname -r)`, `/boot/vmlinux-$(uname -r)`,
/// `/usr/lib/debug/lib/modules/$(uname -r)/vmlinux`, `/lib/modules/$(uname -r)/build/vmlinux`)
/// and `/proc/kallsyms` is the fallback. The vmlinux is preferred when both can resolve an
/// address because it has symbol sizes and, with DWARF, source lines.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Kernel {
    /// The kallsyms file.
    pub kallsyms: FileSpec,
    /// The vmlinux image.
    pub vmlinux: FileSpec,
    /// The KASLR offset (running address minus vmlinux address). When `None` it is derived
    /// from `_stext` (or `_text`) in the kallsyms file in use, or in `/proc/kallsyms` when
    /// kallsyms is disabled.
    pub kaslr_offset: Option<u64>,
}

/// How to find one input file.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub enum FileSpec {
    /// The usual places for the running system.
    #[default]
    Auto,
    /// This file; trusted to describe the kernel being symbolized (no build-id check).
    Path(PathBuf),
    /// Don't use this kind of file.
    Disabled,
}

/// A process, by PID.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Process {
    /// The process ID (as seen in this PID namespace's `/proc`).
    pub pid: u32,
}

/// One ELF file.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Elf {
    /// Its path.
    pub path: PathBuf,
}

/// Symbolizer settings.
#[derive(Debug, Clone)]
pub struct Options {
    /// Roots searched for separate debug files: `ROOT/.build-id/xx/yyyy.debug` by build-id,
    /// and `ROOT/DIR/NAME` for a `.gnu_debuglink` NAME of a file in DIR.
    pub debug_dirs: Vec<PathBuf>,
    /// Look up source file and line in DWARF.
    pub code_info: bool,
    /// Report inlined frames (needs `code_info`).
    pub inlined: bool,
    /// Demangle Rust and C++ names.
    pub demangle: bool,
    /// Parsed ELF files kept in the cache; the least recently used are dropped beyond this
    /// (files a remembered process holds stay alive with it).
    pub max_cached_files: usize,
    /// Process snapshots kept; the least recently used are dropped beyond this.
    pub max_processes: usize,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            debug_dirs: vec![PathBuf::from("/usr/lib/debug")],
            code_info: true,
            inlined: true,
            demangle: true,
            max_cached_files: 256,
            max_processes: 1024,
        }
    }
}

/// The answer for one address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Symbolized {
    /// The address resolved.
    Sym(Sym),
    /// The address did not resolve, and why.
    Unknown(Reason),
}

impl Symbolized {
    /// The symbol, if the address resolved.
    pub fn sym(&self) -> Option<&Sym> {
        match self {
            Self::Sym(sym) => Some(sym),
            Self::Unknown(_) => None,
        }
    }

    /// Why the address did not resolve, if it did not.
    pub fn reason(&self) -> Option<&Reason> {
        match self {
            Self::Sym(_) => None,
            Self::Unknown(reason) => Some(reason),
        }
    }
}

/// A resolved address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sym {
    /// The symbol's name, demangled unless [`Options::demangle`] is off.
    pub name: String,
    /// The symbol's start, in the same address space as the input address.
    pub addr: u64,
    /// The input address minus `addr`.
    pub offset: u64,
    /// The symbol's size, when the symbol table says (kallsyms never does).
    pub size: Option<u64>,
    /// The kernel module (`None` for the core kernel; `bpf` for BPF programs) or, for
    /// processes and ELF files, the path of the file the symbol is in.
    pub module: Option<String>,
    /// Where in the symbol's own function the address is: its source line, or, when the
    /// address is in inlined code, the line of the outermost inlined call.
    pub code: Option<CodeInfo>,
    /// Inlined calls the address is in, outermost first. Each frame's `code` is where the
    /// address is within that inlined function, so the last frame has the address's own
    /// source line.
    pub inlined: Vec<InlinedFrame>,
}

impl Sym {
    /// The source location of the address itself: the innermost inlined frame's, or the
    /// symbol's own when nothing is inlined there.
    pub fn location(&self) -> Option<&CodeInfo> {
        match self.inlined.last() {
            Some(frame) => frame.code.as_ref(),
            None => self.code.as_ref(),
        }
    }
}

impl fmt::Display for Sym {
    /// `name+0xoffset`, the form kernel stack traces and perf use.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}+{:#x}", self.name, self.offset)
    }
}

/// A source location from DWARF line information.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodeInfo {
    /// The file, as DWARF names it (joined with the compilation directory when relative).
    pub file: String,
    /// The line, when known.
    pub line: Option<u32>,
    /// The column, when known (`Some(0)` is the left edge, as DWARF has it).
    pub column: Option<u32>,
}

impl fmt::Display for CodeInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.file)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        Ok(())
    }
}

/// A function inlined at the address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InlinedFrame {
    /// The inlined function's name, from DWARF.
    pub name: String,
    /// Where the address is within the inlined function.
    pub code: Option<CodeInfo>,
}

/// Why an address did not resolve.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Reason {
    /// No mapping, segment or kernel region contains the address.
    #[error("the address is not mapped")]
    Unmapped,
    /// The address is in a mapping not backed by a regular file (`[heap]`, `[vdso]`,
    /// anonymous memory such as JIT code).
    #[error("the address is in {name}, which is not backed by a file")]
    NotFileBacked {
        /// The mapping's name from `/proc/PID/maps` (`anonymous` when it has none).
        name: String,
    },
    /// The address is mapped from a file, but at a file offset no loadable segment covers.
    #[error("file offset {offset:#x} is outside the loadable segments of {path}")]
    OutsideSegments {
        /// The file.
        path: String,
        /// The file offset the address maps to.
        offset: u64,
    },
    /// The file (or kernel symbol table) has no symbol covering the address.
    #[error("no symbol covers the address")]
    NoSymbol,
    /// `/proc/kallsyms` lists only zero addresses (`kernel.kptr_restrict`, or not root).
    #[error("kernel addresses are hidden (kptr_restrict): kallsyms lists only zeros")]
    KptrRestricted,
    /// A vmlinux is available but the KASLR offset is not (no kallsyms with `_stext`).
    #[error("the KASLR offset is unknown: {why}")]
    KaslrOffsetUnknown {
        /// What was missing.
        why: String,
    },
    /// The process is gone and was never seen alive by this symbolizer.
    #[error("the process exited (or never existed) and was not seen alive")]
    ProcessGone,
    /// The process's maps could not be read (permissions, most likely).
    #[error("cannot read the process's maps: {error}")]
    ProcessUnreadable {
        /// The error.
        error: String,
    },
    /// The file the address is in could not be opened or read.
    #[error("cannot read {path}: {error}")]
    FileUnreadable {
        /// The file.
        path: String,
        /// The error.
        error: String,
    },
    /// The file is not an ELF file this crate can read.
    #[error("{path} is not a usable ELF file: {error}")]
    InvalidElf {
        /// The file.
        path: String,
        /// What is wrong with it.
        error: String,
    },
    /// Neither a vmlinux nor kallsyms could be used.
    #[error("no kernel symbols: {error}")]
    NoKernelSymbols {
        /// Why not.
        error: String,
    },
}
