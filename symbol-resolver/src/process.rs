//! Process snapshots: a process's mappings and the files behind them, kept so addresses
//! still resolve after the process exits.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use crate::elf::ElfFile;
use crate::maps::{self, MapEntry, MapPath};
use crate::{Options, Reason, Sym, Symbolized};

/// What a process looked like when last seen alive.
pub(crate) struct Snapshot {
    /// The start time from `/proc/PID/stat` (clock ticks since boot): with the PID, it
    /// tells a reused PID from the process that was remembered.
    pub(crate) start_time: Option<u64>,
    pub(crate) maps: Vec<MapEntry>,
    /// One slot per mapping. Executable file mappings are opened when the snapshot is taken
    /// (that is what makes exited processes resolve); others on first use.
    pub(crate) files: Vec<OnceLock<Result<Arc<ElfFile>, Reason>>>,
}

/// Why the live maps could not be had.
pub(crate) enum MapsError {
    /// No such process, or a zombie (its maps read empty: the address space is gone).
    Gone,
    Unreadable(io::Error),
}

/// Reads and parses `/proc/PID/maps`.
pub(crate) fn read_maps(pid: u32) -> Result<Vec<MapEntry>, MapsError> {
    match std::fs::read(format!("/proc/{pid}/maps")) {
        Ok(text) => {
            let (entries, _skipped) = maps::parse(&text);
            if entries.is_empty() { Err(MapsError::Gone) } else { Ok(entries) }
        }
        // ESRCH: the process died between open and read.
        Err(e) if e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ESRCH) => Err(MapsError::Gone),
        Err(e) => Err(MapsError::Unreadable(e)),
    }
}

/// Field 22 of `/proc/PID/stat`. The command name (field 2) may contain spaces and
/// parentheses, so fields are counted from the last `)`.
pub(crate) fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read(format!("/proc/{pid}/stat")).ok()?;
    let close = stat.iter().rposition(|&b| b == b')')?;
    let rest = std::str::from_utf8(stat.get(close + 1..)?).ok()?;
    // After the `)`, the first field is field 3 (state); field 22 is 19 further.
    rest.split_ascii_whitespace().nth(19)?.parse().ok()
}

/// Paths to try for a mapped file, best first, and where to look for its debuglink.
pub(crate) struct FilePaths {
    pub(crate) display: String,
    pub(crate) candidates: Vec<PathBuf>,
    pub(crate) dirs: Vec<PathBuf>,
    pub(crate) dir: Option<PathBuf>,
}

/// `/proc/PID/map_files/START-END` is the mapped file itself, whatever became of its path
/// (deleted, replaced, in another mount namespace); `/proc/PID/root/PATH` resolves the path
/// in the process's namespace when map_files is not allowed (it needs CAP_SYS_ADMIN). A
/// deleted file is not looked up by path: whatever is there now is another file.
pub(crate) fn file_paths(pid: u32, entry: &MapEntry) -> Option<FilePaths> {
    let MapPath::File { path, deleted } = &entry.path else { return None };
    let root = PathBuf::from(format!("/proc/{pid}/root"));
    let in_root = root.join(path.strip_prefix("/").unwrap_or(path));
    let mut candidates = vec![PathBuf::from(format!("/proc/{pid}/map_files/{}", entry.map_files_name()))];
    if !deleted {
        candidates.push(in_root.clone());
    }
    let dir = path.parent().map(Path::to_path_buf);
    // The debuglink directory through the process's root first (a container's own
    // layout), then the same path here; the CRC check rejects a wrong file either way.
    let dirs = in_root.parent().map(Path::to_path_buf).into_iter().chain(dir.clone()).collect();
    Some(FilePaths { display: path.display().to_string(), candidates, dirs, dir })
}

impl Snapshot {
    /// Symbolizes one address; `open` opens a mapping's file when its slot is still empty.
    pub(crate) fn symbolize(
        &self,
        addr: u64,
        options: &Options,
        open: &dyn Fn(&MapEntry) -> Result<Arc<ElfFile>, Reason>,
    ) -> Symbolized {
        let Some(index) = maps::find(&self.maps, addr) else { return Symbolized::Unknown(Reason::Unmapped) };
        let (Some(entry), Some(slot)) = (self.maps.get(index), self.files.get(index)) else {
            return Symbolized::Unknown(Reason::Unmapped);
        };
        let path = match &entry.path {
            MapPath::Anonymous => return Symbolized::Unknown(Reason::NotFileBacked { name: "anonymous".into() }),
            MapPath::Special(name) => return Symbolized::Unknown(Reason::NotFileBacked { name: name.clone() }),
            MapPath::File { path, .. } => path.display().to_string(),
        };
        let file = match slot.get_or_init(|| open(entry)) {
            Ok(file) => file,
            Err(reason) => return Symbolized::Unknown(reason.clone()),
        };
        let Some(offset) = entry.file_offset(addr) else { return Symbolized::Unknown(Reason::Unmapped) };
        let Some(vaddr) = file.vaddr_for_file_offset(offset) else {
            return Symbolized::Unknown(Reason::OutsideSegments { path, offset });
        };
        match file.resolve(vaddr, options) {
            Ok(found) => {
                let offset_in_sym = vaddr.wrapping_sub(found.addr);
                Symbolized::Sym(Sym {
                    name: found.name,
                    addr: addr.wrapping_sub(offset_in_sym),
                    offset: offset_in_sym,
                    size: found.size,
                    module: Some(path),
                    code: found.code,
                    inlined: found.inlined,
                })
            }
            Err(reason) => Symbolized::Unknown(reason),
        }
    }
}
