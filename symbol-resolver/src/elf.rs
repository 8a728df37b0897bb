//! ELF files: loading, symbol tables, separate debug files, DWARF.
//!
//! Everything read from a file is untrusted: `object` and `gimli` return errors for
//! malformed data, and this module turns those into "no symbols" or "no line info" rather
//! than failing, so a damaged debug section costs line numbers, not names.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::fs::{File, Metadata};
use std::io::{self, Read as _};
use std::ops::Deref;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use object::{CompressionFormat, Object, ObjectSection, ObjectSegment, ObjectSymbol, SectionFlags};

use crate::addr_index::AddrIndex;
use crate::demangle::{demangle, may_be_mangled};
use crate::lines::{LineRef, LineTable};
use crate::{CodeInfo, InlinedFrame, Options, Reason};

/// A file's bytes: mapped when that is safe, read into memory otherwise.
pub(crate) enum Backing {
    Mapped(memmap2::Mmap),
    Read(Vec<u8>),
}

impl Deref for Backing {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            Self::Mapped(map) => map,
            Self::Read(data) => data,
        }
    }
}

/// Identifies one version of one file: a binary replaced by rename (new inode) or rewritten
/// in place (new size or mtime) gets a new key, so caches do not serve its old symbols.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct FileKey {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: i64,
    mtime_nsec: i64,
}

impl FileKey {
    fn of(meta: &Metadata) -> Self {
        Self { dev: meta.dev(), ino: meta.ino(), size: meta.size(), mtime: meta.mtime(), mtime_nsec: meta.mtime_nsec() }
    }
}

/// An open regular file, not read yet: its key decides whether reading is needed at all.
pub(crate) struct Opened {
    file: File,
    meta: Metadata,
    pub(crate) key: FileKey,
}

/// Opens a regular file for reading.
pub(crate) fn open_regular(path: &Path) -> io::Result<Opened> {
    // O_NONBLOCK: a FIFO planted where a debug file or a mapped path is expected must fail
    // the regular-file check below, not block the open waiting for a writer.
    let file = File::options().read(true).custom_flags(libc::O_NONBLOCK).open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "not a regular file"));
    }
    Ok(Opened { key: FileKey::of(&meta), file, meta })
}

fn read_contents(opened: Opened) -> io::Result<Backing> {
    let Opened { file, meta, .. } = opened;
    // A mapping of a file that someone else may write turns their truncate into our
    // SIGBUS. Map only files that root owns and nobody else may write (system binaries,
    // debug packages, vmlinux: the big ones); read the rest, usually users' own programs.
    let trusted = meta.uid() == 0 && meta.mode() & 0o022 == 0;
    if trusted && meta.len() > 0 {
        // SAFETY: the mapping is private and read-only, and the file can change under it
        // only through root writing to it: the check above rules out everyone else.
        let map = unsafe { memmap2::Mmap::map(&file) }?;
        return Ok(Backing::Mapped(map));
    }
    // The reported size is a hint only (it may change while reading); cap it so a bogus
    // size cannot reserve absurd amounts up front.
    let mut data = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0).min(1 << 28));
    (&file).read_to_end(&mut data)?;
    Ok(Backing::Read(data))
}

/// Where to look for this file's separate debug file.
#[derive(Debug, Clone, Default)]
pub(crate) struct DebugSearch {
    /// Directories holding the file, as reachable now (e.g. through `/proc/PID/root`), for
    /// `.gnu_debuglink` names: `DIR/NAME` and `DIR/.debug/NAME`.
    pub(crate) dirs: Vec<PathBuf>,
    /// The file's directory as an absolute path, for `ROOT/DIR/NAME` under each debug root.
    pub(crate) dir: Option<PathBuf>,
    /// Debug roots (`/usr/lib/debug`), for both build-id and debuglink lookups.
    pub(crate) roots: Vec<PathBuf>,
}

#[derive(Debug, Clone, Copy)]
struct Segment {
    vaddr: u64,
    file_offset: u64,
    file_size: u64,
}

/// What the headers say, parsed when the file is opened.
#[derive(Debug, Default)]
struct ElfInfo {
    segments: Vec<Segment>,
    build_id: Option<Vec<u8>>,
    debuglink: Option<(Vec<u8>, u32)>,
    has_symtab: bool,
    has_dwarf: bool,
}

fn parse_info(data: &[u8]) -> Result<ElfInfo, String> {
    let file = object::File::parse(data).map_err(|e| e.to_string())?;
    let segments = file
        .segments()
        .map(|segment| {
            let (file_offset, file_size) = segment.file_range();
            Segment { vaddr: segment.address(), file_offset, file_size }
        })
        .collect();
    let has_dwarf = file
        .section_by_name(".debug_info")
        .is_some_and(|section| section.size() > 0 && section.file_range().is_some_and(|(_, size)| size > 0));
    Ok(ElfInfo {
        segments,
        // Malformed notes or debuglink only cost the debug-file lookup.
        build_id: file.build_id().ok().flatten().filter(|id| !id.is_empty()).map(<[u8]>::to_vec),
        debuglink: file.gnu_debuglink().ok().flatten().map(|(name, crc)| (name.to_vec(), crc)),
        has_symtab: file.symbol_table().is_some() && file.symbols().next().is_some(),
        has_dwarf,
    })
}

/// One function symbol.
#[derive(Debug, Clone, Copy)]
struct TableSym {
    addr: u64,
    size: u64,
    /// Where the symbol's coverage ends (exclusive): `addr + size`, or for a size-0 label
    /// the end of its section, so a label at the end of `.text` (a vmlinux's `_etext`)
    /// cannot claim every address above it.
    end: u64,
    name_start: u32,
    name_len: u32,
    /// The name's slot in [`SymbolTable::demangled`], or [`NOT_MANGLED`].
    demangled: u32,
    /// Lower is preferred among symbols at one address: functions before untyped labels,
    /// then global before weak before local.
    rank: u8,
}

const NOT_MANGLED: u32 = u32::MAX;

/// Function symbols sorted by address.
#[derive(Debug, Default)]
struct SymbolTable {
    syms: Vec<TableSym>,
    /// The symbols' addresses, for the search.
    index: AddrIndex,
    names: String,
    /// Demangled names, each made the first time it is asked for: demangling a Rust or C++
    /// name takes longer than the rest of a lookup, and hot symbols are asked for again and
    /// again. Only names that may be mangled have a slot (none in a kernel).
    demangled: Vec<OnceLock<Box<str>>>,
}

impl SymbolTable {
    fn build(data: &[u8], dynamic: bool) -> Self {
        let mut table = Self::default();
        let Ok(file) = object::File::parse(data) else { return table };
        // Executable sections by flag, not by kind: in a debug-only file `.text` is NOBITS
        // and `object` calls it uninitialized data, yet its labels are code labels.
        let executable: Vec<_> = file
            .sections()
            .filter(|s| matches!(s.flags(), SectionFlags::Elf { sh_flags, .. } if sh_flags.contains(object::elf::SHF_EXECINSTR)))
            .map(|s| s.index())
            .collect();
        let section_end = |index| {
            let section = file.section_by_index(index).ok()?;
            section.address().checked_add(section.size())
        };
        let symbols = if dynamic { file.dynamic_symbols() } else { file.symbols() };
        for symbol in symbols {
            if symbol.is_undefined() || symbol.address() == 0 {
                continue;
            }
            let in_text = symbol.section_index().is_some_and(|index| executable.contains(&index));
            let kind_rank = match symbol.kind() {
                object::SymbolKind::Text => 0,
                object::SymbolKind::Unknown if in_text => 3,
                _ => continue,
            };
            let binding_rank = if symbol.is_weak() {
                1
            } else if symbol.is_global() {
                0
            } else {
                2
            };
            let Ok(name) = symbol.name_bytes() else { continue };
            let name = String::from_utf8_lossy(name);
            // `$x`/`$d` are ARM mapping symbols, not names.
            if name.is_empty() || name.starts_with('$') {
                continue;
            }
            let (Ok(name_start), Ok(name_len)) = (u32::try_from(table.names.len()), u32::try_from(name.len())) else {
                break;
            };
            let addr = symbol.address();
            let size = symbol.size();
            let end = if size > 0 {
                addr.saturating_add(size)
            } else {
                // At least the address itself, whatever the section says.
                symbol.section_index().and_then(section_end).unwrap_or(0).max(addr.saturating_add(1))
            };
            let demangled = if may_be_mangled(&name) {
                let Ok(slot) = u32::try_from(table.demangled.len()) else { break };
                table.demangled.push(OnceLock::new());
                slot
            } else {
                NOT_MANGLED
            };
            table.names.push_str(&name);
            table.syms.push(TableSym {
                addr,
                size,
                end,
                name_start,
                name_len,
                demangled,
                rank: kind_rank + binding_rank,
            });
        }
        table.finish();
        table
    }

    /// Sorts the symbols and indexes their addresses.
    fn finish(&mut self) {
        self.syms.sort_by_key(|s| (s.addr, s.rank));
        self.syms.shrink_to_fit();
        self.names.shrink_to_fit();
        self.demangled.shrink_to_fit();
        self.index = AddrIndex::new(self.syms.iter().map(|s| s.addr).collect());
    }

    fn name(&self, sym: &TableSym) -> &str {
        let start = sym.name_start as usize;
        self.names.get(start..start + sym.name_len as usize).unwrap_or_default()
    }

    /// The name to report: demangled (once, then cached) when `demangle` is on.
    fn display_name(&self, sym: &TableSym, demangle_names: bool) -> &str {
        // The slot first: once filled, the raw name (another cache miss) is not needed.
        match self.demangled.get(sym.demangled as usize).filter(|_| demangle_names) {
            Some(slot) => slot.get_or_init(|| demangle(self.name(sym)).into()),
            None => self.name(sym),
        }
    }

    /// The symbol covering `addr`: among those at the nearest address at or below it, the
    /// preferred one that covers it (a size-0 label runs to the next symbol, within its
    /// section); failing that, an earlier symbol that still covers it (a function with a
    /// nested label).
    fn find(&self, addr: u64) -> Option<&TableSym> {
        let addrs = self.index.addrs();
        let after = self.index.count_at_or_below(addr);
        let nearest = *addrs.get(after.checked_sub(1)?)?;
        // Walk back over the aliases at `nearest`: a few at most, where a
        // second binary search would cost a cache miss per step.
        let group = addrs.get(..after)?.iter().rev().take_while(|&&a| a == nearest).count();
        let group = after - group;
        let covers = |s: &&TableSym| addr < s.end;
        if let Some(found) = self.syms.get(group..after)?.iter().find(covers) {
            return Some(found);
        }
        // Nesting is shallow in practice; the bound keeps a pathological table linear.
        self.syms.get(..group)?.iter().rev().take(16).find(|s| s.size > 0 && covers(s))
    }
}

type DwarfContext<'data> = addr2line::Context<gimli::EndianSlice<'data, gimli::RunTimeEndian>>;

/// The DWARF sections of one file.
struct DwarfData {
    data: Arc<Backing>,
    /// Compressed debug sections (`SHF_COMPRESSED` or `.zdebug_*`), inflated once, by their
    /// `.debug_*` name.
    inflated: HashMap<String, Vec<u8>>,
    /// Address ranges of the executable sections.
    code: Vec<(u64, u64)>,
}

self_cell::self_cell!(
    /// An addr2line context together with the file bytes it borrows, so it can be cached
    /// without copying the (for a vmlinux, hundreds of megabytes of) debug sections.
    struct DwarfCell {
        owner: Arc<DwarfData>,
        #[not_covariant]
        dependent: DwarfContext,
    }
);

/// Inflated sections larger than this are skipped: the size comes from the file, and a
/// lie would otherwise reserve it.
const MAX_INFLATED: u64 = 1 << 32;

impl DwarfData {
    fn load(data: Arc<Backing>) -> Result<Self, String> {
        let mut inflated = HashMap::new();
        let mut code = Vec::new();
        {
            let file = object::File::parse(&data[..]).map_err(|e| e.to_string())?;
            for section in file.sections() {
                if matches!(section.flags(), SectionFlags::Elf { sh_flags, .. } if sh_flags.contains(object::elf::SHF_EXECINSTR))
                    && let Some(end) = section.address().checked_add(section.size())
                {
                    code.push((section.address(), end));
                }
                let Ok(name) = section.name() else { continue };
                let name = match name.strip_prefix(".zdebug_") {
                    Some(rest) => format!(".debug_{rest}"),
                    None if name.starts_with(".debug_") => name.to_owned(),
                    None => continue,
                };
                let Ok(range) = section.compressed_file_range() else { continue };
                if range.format == CompressionFormat::None || range.uncompressed_size > MAX_INFLATED {
                    continue;
                }
                if let Ok(bytes) = section.uncompressed_data() {
                    inflated.insert(name, bytes.into_owned());
                }
            }
        }
        Ok(Self { data, inflated, code })
    }

    fn sections(&self) -> Result<gimli::Dwarf<gimli::EndianSlice<'_, gimli::RunTimeEndian>>, String> {
        let file = object::File::parse(&self.data[..]).map_err(|e| e.to_string())?;
        let endian = if file.is_little_endian() { gimli::RunTimeEndian::Little } else { gimli::RunTimeEndian::Big };
        gimli::Dwarf::load(|id| -> Result<_, gimli::Error> {
            let name = id.name();
            let bytes = match self.inflated.get(name) {
                Some(bytes) => bytes.as_slice(),
                // Missing and NOBITS sections read as empty, which gimli handles.
                None => file.section_by_name(name).and_then(|s| s.data().ok()).unwrap_or_default(),
            };
            Ok(gimli::EndianSlice::new(bytes, endian))
        })
        .map_err(|e| e.to_string())
    }

    fn context(self: Arc<Self>) -> Result<DwarfCell, String> {
        DwarfCell::try_new(self, |owner| addr2line::Context::from_dwarf(owner.sections()?).map_err(|e| e.to_string()))
    }

    fn line_table(&self) -> Result<LineTable, String> {
        Ok(LineTable::build(&self.sections()?, &self.code))
    }
}

fn code_info(location: &addr2line::Location<'_>) -> Option<CodeInfo> {
    Some(CodeInfo { file: location.file?.to_owned(), line: location.line, column: location.column })
}

/// A symbolized address within one ELF file (addresses are the file's virtual addresses).
#[derive(Debug)]
pub(crate) struct Resolved {
    pub(crate) name: String,
    pub(crate) addr: u64,
    pub(crate) size: Option<u64>,
    pub(crate) code: Option<CodeInfo>,
    pub(crate) inlined: Vec<InlinedFrame>,
}

/// A symbolized address without inlined frames, borrowing its strings from the file's
/// tables: cheap to find and to copy around before the strings are copied out.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Found<'a> {
    pub(crate) name: &'a str,
    pub(crate) addr: u64,
    pub(crate) size: Option<u64>,
    pub(crate) code: Option<LineRef<'a>>,
}

impl Found<'_> {
    pub(crate) fn to_owned(self) -> Resolved {
        Resolved {
            name: self.name.to_owned(),
            addr: self.addr,
            size: self.size,
            code: self.code.map(LineRef::to_owned),
            inlined: Vec::new(),
        }
    }
}

/// Inlining is rarely more than a few dozen levels deep; the bound stops a malformed DIE
/// tree from producing an unbounded frame list.
const MAX_FRAMES: usize = 256;

/// One ELF file, its separate debug file when it needs one, and lazily built lookup tables.
pub(crate) struct ElfFile {
    /// The path to report (the file's own path, not the `/proc` path it was opened by).
    pub(crate) path: String,
    pub(crate) key: FileKey,
    data: Arc<Backing>,
    info: ElfInfo,
    search: DebugSearch,
    debug: OnceLock<Option<Arc<ElfFile>>>,
    symbols: OnceLock<SymbolTable>,
    dwarf_data: OnceLock<Option<Arc<DwarfData>>>,
    /// For inlined frames.
    dwarf: OnceLock<Option<Mutex<DwarfCell>>>,
    /// For lines without inlined frames.
    lines: OnceLock<Option<LineTable>>,
}

impl ElfFile {
    /// Reads and checks an opened file.
    pub(crate) fn load(opened: Opened, path: String, search: DebugSearch) -> Result<Self, Reason> {
        let key = opened.key;
        let data =
            read_contents(opened).map_err(|e| Reason::FileUnreadable { path: path.clone(), error: e.to_string() })?;
        let info = parse_info(&data).map_err(|error| Reason::InvalidElf { path: path.clone(), error })?;
        Ok(Self {
            path,
            key,
            data: Arc::new(data),
            info,
            search,
            debug: OnceLock::new(),
            symbols: OnceLock::new(),
            dwarf_data: OnceLock::new(),
            dwarf: OnceLock::new(),
            lines: OnceLock::new(),
        })
    }

    /// Opens and reads `path` (no cache; for debug files and tests).
    pub(crate) fn open(path: &Path, search: DebugSearch) -> Result<Self, Reason> {
        let display = path.display().to_string();
        let opened =
            open_regular(path).map_err(|e| Reason::FileUnreadable { path: display.clone(), error: e.to_string() })?;
        Self::load(opened, display, search)
    }

    /// The virtual address a file offset is loaded at, through the program headers: the
    /// same computation for PIE, non-PIE and shared objects, since maps gives file offsets.
    pub(crate) fn vaddr_for_file_offset(&self, offset: u64) -> Option<u64> {
        self.info.segments.iter().find_map(|s| {
            let delta = offset.checked_sub(s.file_offset)?;
            (delta < s.file_size).then(|| s.vaddr.wrapping_add(delta))
        })
    }

    /// The GNU build-id, if the file has one.
    pub(crate) fn build_id(&self) -> Option<&[u8]> {
        self.info.build_id.as_deref()
    }

    /// The address of a symbol by exact name, any type (for `_stext`/`_text`).
    pub(crate) fn symbol_address(&self, name: &str) -> Option<u64> {
        let file = object::File::parse(&self.data[..]).ok()?;
        let found = file.symbols().find(|s| s.name_bytes().ok() == Some(name.as_bytes()))?;
        Some(found.address())
    }

    /// The separate debug file, found by build-id or `.gnu_debuglink`, if this file lacks
    /// a symbol table or DWARF.
    fn debug_file(&self) -> Option<&Arc<ElfFile>> {
        self.debug
            .get_or_init(|| {
                if self.info.has_symtab && self.info.has_dwarf {
                    return None;
                }
                self.find_by_build_id().or_else(|| self.find_by_debuglink()).map(Arc::new)
            })
            .as_ref()
    }

    fn find_by_build_id(&self) -> Option<ElfFile> {
        let id = self.info.build_id.as_ref()?;
        let (head, tail) = id.split_first()?;
        let mut name = String::new();
        for byte in tail {
            let _ = write!(name, "{byte:02x}");
        }
        name.push_str(".debug");
        self.search.roots.iter().find_map(|root| {
            let candidate = root.join(".build-id").join(format!("{head:02x}")).join(&name);
            let debug = Self::open(&candidate, DebugSearch::default()).ok()?;
            (debug.info.build_id.as_deref() == Some(id.as_slice())).then_some(debug)
        })
    }

    fn find_by_debuglink(&self) -> Option<ElfFile> {
        let (name, crc) = self.info.debuglink.as_ref()?;
        let name = std::str::from_utf8(name).ok()?;
        // The name is a file name; anything that could walk elsewhere is not one.
        if name.is_empty() || name.contains('/') || name == "." || name == ".." {
            return None;
        }
        let mut candidates = Vec::new();
        for dir in &self.search.dirs {
            candidates.push(dir.join(name));
            candidates.push(dir.join(".debug").join(name));
        }
        if let Some(dir) = &self.search.dir {
            let relative = dir.strip_prefix("/").unwrap_or(dir);
            candidates.extend(self.search.roots.iter().map(|root| root.join(relative).join(name)));
        }
        candidates.into_iter().find_map(|candidate| {
            let debug = Self::open(&candidate, DebugSearch::default()).ok()?;
            // The link may name the file itself (same name, same directory).
            (debug.key != self.key && crc32fast::hash(&debug.data) == *crc).then_some(debug)
        })
    }

    fn symbol_table(&self) -> &SymbolTable {
        self.symbols.get_or_init(|| {
            if self.info.has_symtab {
                return SymbolTable::build(&self.data, false);
            }
            if let Some(debug) = self.debug_file()
                && debug.info.has_symtab
            {
                return SymbolTable::build(&debug.data, false);
            }
            // Stripped with no debug file: the dynamic symbols still name exported functions.
            SymbolTable::build(&self.data, true)
        })
    }

    fn dwarf_data(&self) -> Option<&Arc<DwarfData>> {
        self.dwarf_data
            .get_or_init(|| {
                let data = if self.info.has_dwarf {
                    Arc::clone(&self.data)
                } else {
                    let debug = self.debug_file().filter(|d| d.info.has_dwarf)?;
                    Arc::clone(&debug.data)
                };
                // Broken DWARF costs line info only; the symbol table still answers.
                DwarfData::load(data).ok().map(Arc::new)
            })
            .as_ref()
    }

    fn dwarf(&self) -> Option<&Mutex<DwarfCell>> {
        self.dwarf.get_or_init(|| Arc::clone(self.dwarf_data()?).context().ok().map(Mutex::new)).as_ref()
    }

    fn line_table(&self) -> Option<&LineTable> {
        self.lines.get_or_init(|| self.dwarf_data()?.line_table().ok()).as_ref()
    }

    /// Source location and inlined frames of `vaddr` from addr2line: (the location in the
    /// outermost function, the inlined frames outermost first). Without inlined frames,
    /// [`Self::find`] answers from the line table instead.
    fn code_info(&self, vaddr: u64, options: &Options) -> (Option<CodeInfo>, Vec<InlinedFrame>) {
        let Some(dwarf) = self.dwarf() else { return (None, Vec::new()) };
        // A panic elsewhere while holding the lock leaves the context as consistent as
        // addr2line's lazily filled cells are; keep using it.
        let cell = dwarf.lock().unwrap_or_else(PoisonError::into_inner);
        cell.with_dependent(|_, context| {
            // Innermost first, as addr2line yields them.
            let mut frames = Vec::new();
            if let Ok(mut iter) = context.find_frames(vaddr).skip_all_loads() {
                while let Ok(Some(frame)) = iter.next() {
                    let name = frame
                        .function
                        .as_ref()
                        .and_then(|f| f.raw_name().ok())
                        .map(|raw| if options.demangle { demangle(&raw).into_owned() } else { raw.into_owned() });
                    frames.push((name, frame.location.as_ref().and_then(code_info)));
                    if frames.len() >= MAX_FRAMES {
                        break;
                    }
                }
            }
            let Some((_, outer)) = frames.pop() else { return (None, Vec::new()) };
            let inlined = frames
                .into_iter()
                .rev()
                .map(|(name, code)| InlinedFrame { name: name.unwrap_or_else(|| "??".to_owned()), code })
                .collect();
            (outer, inlined)
        })
    }

    /// Symbolizes one of this file's virtual addresses.
    pub(crate) fn resolve(&self, vaddr: u64, options: &Options) -> Result<Resolved, Reason> {
        if Self::finds(options) {
            return self.find(vaddr, options).map(Found::to_owned).ok_or(Reason::NoSymbol);
        }
        let table = self.symbol_table();
        let sym = table.find(vaddr).ok_or(Reason::NoSymbol)?;
        let name = table.display_name(sym, options.demangle).to_owned();
        let (code, inlined) = if options.code_info { self.code_info(vaddr, options) } else { (None, Vec::new()) };
        Ok(Resolved { name, addr: sym.addr, size: (sym.size > 0).then_some(sym.size), code, inlined })
    }

    /// Whether [`Self::find`] answers with these options: all but inlined frames.
    pub(crate) fn finds(options: &Options) -> bool {
        !(options.code_info && options.inlined)
    }

    /// Symbolizes one of this file's virtual addresses without inlined frames (ignoring
    /// [`Options::inlined`]), the strings borrowed; `None` when no symbol covers it.
    pub(crate) fn find(&self, vaddr: u64, options: &Options) -> Option<Found<'_>> {
        let table = self.symbol_table();
        let sym = table.find(vaddr)?;
        let code = if options.code_info { self.line_table().and_then(|lines| lines.find(vaddr)) } else { None };
        Some(Found {
            name: table.display_name(sym, options.demangle),
            addr: sym.addr,
            size: (sym.size > 0).then_some(sym.size),
            code,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Symbols in one section ending at 0x2000.
    fn table(entries: &[(u64, u64, &str, u8)]) -> SymbolTable {
        let mut table = SymbolTable::default();
        for &(addr, size, name, rank) in entries {
            let name_start = u32::try_from(table.names.len()).unwrap();
            table.names.push_str(name);
            let end = if size > 0 { addr + size } else { 0x2000 };
            let name_len = u32::try_from(name.len()).unwrap();
            table.syms.push(TableSym { addr, size, end, name_start, name_len, demangled: NOT_MANGLED, rank });
        }
        table.finish();
        table
    }

    #[test]
    fn lookup_prefers_covering_and_ranked_symbols() {
        let t = table(&[
            (0x1000, 0x100, "outer", 0),
            (0x1000, 0x100, "local_alias", 2),
            (0x1040, 0, "label_in_outer", 3),
            (0x1200, 0x10, "small", 0),
            (0x1300, 0, "sizeless", 0),
            (0x1400, 0x10, "after", 0),
            (0x1f00, 0, "end_label", 3),
        ]);
        let name = |addr| t.find(addr).map(|s| t.name(s));
        assert_eq!(name(0xfff), None);
        assert_eq!(name(0x1000), Some("outer"));
        assert_eq!(name(0x103f), Some("outer"));
        assert_eq!(name(0x1040), Some("label_in_outer"));
        assert_eq!(name(0x1100), Some("label_in_outer"), "a size-0 label runs to the next symbol");
        assert_eq!(name(0x120f), Some("small"));
        assert_eq!(name(0x1210), None, "gap after a sized symbol");
        assert_eq!(name(0x13ff), Some("sizeless"));
        assert_eq!(name(0x1410), None);
        assert_eq!(name(0x1fff), Some("end_label"));
        assert_eq!(name(0x2000), None, "a label does not run past its section");
    }

    #[test]
    fn garbage_is_invalid_elf_not_a_panic() {
        for data in [&b""[..], b"\x7fELF", b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0\x03\0>\0", &[0xff; 64]] {
            assert!(parse_info(data).is_err());
            assert!(SymbolTable::build(data, false).syms.is_empty());
            assert!(DwarfData::load(Arc::new(Backing::Read(data.to_vec()))).is_err());
        }
    }
}
