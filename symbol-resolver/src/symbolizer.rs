//! The [`Symbolizer`]: sources, caches and process snapshots.

use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};

use crate::elf::{self, DebugSearch, ElfFile, FileKey, Found, Resolved};
use crate::kernel::{self, KernelState};
use crate::maps::{MapEntry, MapPath};
use crate::process::{self, MapsError, Snapshot};
use crate::{Elf, Error, Kernel, Options, Reason, Source, Sym, Symbolized};

/// Resolves addresses to symbols. Shareable across threads: caches sit behind one lock
/// held only for lookups and inserts, and each file's DWARF behind its own.
pub struct Symbolizer {
    options: Options,
    state: Mutex<State>,
}

/// An LRU-ish map: every use stamps the entry with a counter, and inserting beyond the
/// limit drops the entry with the oldest stamp. The limits are in the hundreds, so the
/// linear scan on eviction costs less than maintaining an ordered structure.
struct Lru<K, V> {
    entries: HashMap<K, (V, u64)>,
}

impl<K: Hash + Eq + Clone, V: Clone> Lru<K, V> {
    fn new() -> Self {
        Self { entries: HashMap::new() }
    }

    fn get(&mut self, key: &K, now: u64) -> Option<V> {
        let (value, stamp) = self.entries.get_mut(key)?;
        *stamp = now;
        Some(value.clone())
    }

    fn insert(&mut self, key: K, value: V, now: u64, limit: usize) {
        self.entries.insert(key, (value, now));
        while self.entries.len() > limit.max(1) {
            let Some(oldest) = self.entries.iter().min_by_key(|(_, (_, stamp))| *stamp).map(|(k, _)| k.clone()) else {
                break;
            };
            self.entries.remove(&oldest);
        }
    }
}

struct State {
    clock: u64,
    files: Lru<FileKey, Arc<ElfFile>>,
    processes: Lru<u32, Arc<Snapshot>>,
    kernels: HashMap<Kernel, Arc<KernelState>>,
}

impl State {
    fn tick(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }
}

impl fmt::Debug for Symbolizer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Symbolizer").field("options", &self.options).finish_non_exhaustive()
    }
}

impl Default for Symbolizer {
    fn default() -> Self {
        Self::new()
    }
}

impl Symbolizer {
    /// A symbolizer with default [`Options`].
    pub fn new() -> Self {
        Self::with_options(Options::default())
    }

    /// A symbolizer with these options.
    pub fn with_options(options: Options) -> Self {
        Self {
            options,
            state: Mutex::new(State { clock: 0, files: Lru::new(), processes: Lru::new(), kernels: HashMap::new() }),
        }
    }

    /// Its options.
    pub fn options(&self) -> &Options {
        &self.options
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state is caches only; a panic elsewhere leaves them valid.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Symbolizes a batch of addresses: one answer per address, in order.
    ///
    /// For [`Source::Kernel`] and [`Source::Process`] the addresses are absolute, for
    /// [`Source::Elf`] they are the file's virtual addresses. Failures are per address,
    /// including a source that cannot be opened at all (every address then carries why).
    pub fn symbolize(&self, source: &Source, addrs: &[u64]) -> Vec<Symbolized> {
        match source {
            Source::Kernel(spec) => {
                let kernel = self.kernel(spec);
                addrs.iter().map(|&addr| kernel.symbolize(addr, &self.options)).collect()
            }
            Source::Process(process) => match self.snapshot(process.pid, true) {
                Ok(snapshot) => {
                    let open = |entry: &MapEntry| self.open_mapped(process.pid, entry);
                    addrs.iter().map(|&addr| snapshot.symbolize(addr, &self.options, &open)).collect()
                }
                Err(reason) => vec![Symbolized::Unknown(reason); addrs.len()],
            },
            Source::Elf(Elf { path }) => {
                let search = DebugSearch {
                    dirs: path.parent().map(Path::to_path_buf).into_iter().collect(),
                    dir: std::path::absolute(path).ok().and_then(|p| p.parent().map(Path::to_path_buf)),
                    roots: self.options.debug_dirs.clone(),
                };
                match self.open_cached(path, path.display().to_string(), search) {
                    Ok(file) => {
                        let answer = |addr: u64, found: Result<Resolved, Reason>| match found {
                            Ok(found) => Symbolized::Sym(Sym {
                                name: found.name,
                                addr: found.addr,
                                offset: addr - found.addr,
                                size: found.size,
                                module: Some(file.path.clone()),
                                code: found.code,
                                inlined: found.inlined,
                            }),
                            Err(reason) => Symbolized::Unknown(reason),
                        };
                        if ElfFile::finds(&self.options) {
                            in_address_order(
                                addrs,
                                |addr| file.find(addr, &self.options),
                                |addr, found| answer(addr, found.map(Found::to_owned).ok_or(Reason::NoSymbol)),
                            )
                        } else {
                            addrs.iter().map(|&addr| answer(addr, file.resolve(addr, &self.options))).collect()
                        }
                    }
                    Err(reason) => vec![Symbolized::Unknown(reason); addrs.len()],
                }
            }
        }
    }

    /// Takes (or refreshes) a snapshot of a live process now, so its addresses resolve
    /// after it exits even if it is never symbolized while alive (call it on exec or
    /// process-start events). Symbolizing a live process does the same implicitly. Fails
    /// if the process is not running (a snapshot taken earlier is kept).
    pub fn remember_process(&self, pid: u32) -> Result<(), Error> {
        self.snapshot(pid, false).map(drop).map_err(|reason| match reason {
            Reason::ProcessUnreadable { error } => Error::io(format!("/proc/{pid}/maps"), std::io::Error::other(error)),
            _ => Error::ProcessGone { pid },
        })
    }

    /// The file a remembered process has mapped at `addr`, by the path the process
    /// mapped it under: what names the library of an address no symbol covers (a stripped
    /// one). `None` when the process was not remembered or the address is not in a file
    /// mapping.
    pub fn mapped_file(&self, pid: u32, addr: u64) -> Option<std::path::PathBuf> {
        let snapshot = {
            let mut state = self.lock();
            let now = state.tick();
            state.processes.get(&pid, now)?
        };
        match &snapshot.maps.get(crate::maps::find(&snapshot.maps, addr)?)?.path {
            MapPath::File { path, .. } => Some(path.clone()),
            MapPath::Anonymous | MapPath::Special(_) => None,
        }
    }

    /// Drops a process's snapshot; returns whether there was one.
    pub fn forget_process(&self, pid: u32) -> bool {
        self.lock().processes.entries.remove(&pid).is_some()
    }

    /// Drops cached kernel symbols, so the next kernel lookup re-reads kallsyms (after
    /// modules or BPF programs came and went) and looks for a vmlinux again.
    pub fn refresh_kernel(&self) {
        self.lock().kernels.clear();
    }

    fn kernel(&self, spec: &Kernel) -> Arc<KernelState> {
        if let Some(state) = self.lock().kernels.get(spec) {
            return Arc::clone(state);
        }
        // Loaded without the lock (kallsyms parsing takes tens of milliseconds); two
        // threads racing here both load, and the first insert wins.
        let open = |path: &Path| {
            let search = DebugSearch {
                dirs: path.parent().map(Path::to_path_buf).into_iter().collect(),
                dir: path.parent().map(Path::to_path_buf),
                roots: self.options.debug_dirs.clone(),
            };
            self.open_cached(path, path.display().to_string(), search)
        };
        let loaded = Arc::new(kernel::load(spec, &open));
        Arc::clone(self.lock().kernels.entry(spec.clone()).or_insert(loaded))
    }

    /// Opens an ELF file through the cache: a file already loaded under the same
    /// (device, inode, size, mtime) is reused, whatever path it was opened by.
    fn open_cached(&self, path: &Path, display: String, search: DebugSearch) -> Result<Arc<ElfFile>, Reason> {
        let opened = elf::open_regular(path)
            .map_err(|e| Reason::FileUnreadable { path: display.clone(), error: e.to_string() })?;
        {
            let mut state = self.lock();
            let now = state.tick();
            if let Some(file) = state.files.get(&opened.key, now) {
                return Ok(file);
            }
        }
        let key = opened.key;
        let file = Arc::new(ElfFile::load(opened, display, search)?);
        let mut state = self.lock();
        let now = state.tick();
        state.files.insert(key, Arc::clone(&file), now, self.options.max_cached_files);
        Ok(file)
    }

    /// Opens the file behind a mapping of `pid`.
    fn open_mapped(&self, pid: u32, entry: &MapEntry) -> Result<Arc<ElfFile>, Reason> {
        let Some(paths) = process::file_paths(pid, entry) else {
            return Err(Reason::NotFileBacked { name: "anonymous".into() });
        };
        let search = DebugSearch { dirs: paths.dirs, dir: paths.dir, roots: self.options.debug_dirs.clone() };
        let mut last = Reason::FileUnreadable { path: paths.display.clone(), error: "no path to open".into() };
        for candidate in &paths.candidates {
            match self.open_cached(candidate, paths.display.clone(), search.clone()) {
                Ok(file) => return Ok(file),
                // A file that opened but is not ELF will not become one by another path.
                Err(reason @ Reason::InvalidElf { .. }) => return Err(reason),
                Err(Reason::FileUnreadable { error, .. }) => {
                    last = Reason::FileUnreadable { path: paths.display.clone(), error };
                }
                Err(reason) => last = reason,
            }
        }
        Err(last)
    }

    /// The snapshot to symbolize `pid` with: refreshed from the live process when it is
    /// alive; when it is not (or its maps are unreadable), the remembered one if
    /// `use_remembered`.
    fn snapshot(&self, pid: u32, use_remembered: bool) -> Result<Arc<Snapshot>, Reason> {
        let maps = match process::read_maps(pid) {
            Ok(maps) => maps,
            Err(error) => {
                let remembered = if use_remembered {
                    let mut state = self.lock();
                    let now = state.tick();
                    state.processes.get(&pid, now)
                } else {
                    None
                };
                return match (remembered, error) {
                    (Some(snapshot), _) => Ok(snapshot),
                    (None, MapsError::Gone) => Err(Reason::ProcessGone),
                    (None, MapsError::Unreadable(e)) => Err(Reason::ProcessUnreadable { error: e.to_string() }),
                };
            }
        };
        let start_time = process::start_time(pid);
        let previous = {
            let mut state = self.lock();
            let now = state.tick();
            state.processes.get(&pid, now)
        }
        // A different start time is a different process that got the same PID.
        .filter(|previous| previous.start_time == start_time);
        if let Some(previous) = &previous
            && previous.maps == maps
        {
            return Ok(Arc::clone(previous));
        }
        let previous_files: HashMap<&MapEntry, &OnceLock<_>> =
            previous.as_ref().map(|previous| previous.maps.iter().zip(&previous.files).collect()).unwrap_or_default();
        let files = maps
            .iter()
            .map(|entry| {
                let slot = OnceLock::new();
                // Unchanged mappings keep their file; a changed one (same range, new
                // file after an exec or a re-mmap) is opened afresh.
                let reused = previous_files.get(entry).and_then(|old| old.get().cloned());
                if let Some(file) = reused {
                    let _ = slot.set(file);
                } else if entry.executable && matches!(entry.path, MapPath::File { .. }) {
                    let _ = slot.set(self.open_mapped(pid, entry));
                }
                slot
            })
            .collect();
        let snapshot = Arc::new(Snapshot { start_time, maps, files });
        let mut state = self.lock();
        let now = state.tick();
        state.processes.insert(pid, Arc::clone(&snapshot), now, self.options.max_processes);
        Ok(snapshot)
    }
}

/// Batches at least this long are looked up in address order.
const SORT_FROM: usize = 64;

/// One answer per address, in the order given, the lookups done in ascending address order
/// when the batch is large enough: the symbol and line tables are far larger than the CPU
/// caches, and neighbouring addresses then share the cache lines (and the demangled name)
/// a lookup pulls in, where addresses in arbitrary order each miss on nearly every step.
/// An address repeated in the batch (a hot spot in profile samples) is looked up once.
///
/// `look` finds (cheap to clone, strings borrowed), `answer` makes the answer: it runs in
/// the given order, so the answers' strings are allocated in the order the caller will
/// free them, which keeps the allocator's work sequential too.
fn in_address_order<T: Clone>(
    addrs: &[u64],
    mut look: impl FnMut(u64) -> T,
    mut answer: impl FnMut(u64, T) -> Symbolized,
) -> Vec<Symbolized> {
    let in_order = |look: &mut dyn FnMut(u64) -> T, answer: &mut dyn FnMut(u64, T) -> Symbolized| {
        addrs.iter().map(|&addr| answer(addr, look(addr))).collect()
    };
    if addrs.len() < SORT_FROM || addrs.is_sorted() {
        return in_order(&mut look, &mut answer);
    }
    let Ok(mut order) =
        addrs.iter().enumerate().map(|(i, &addr)| u32::try_from(i).map(|i| (addr, i))).collect::<Result<Vec<_>, _>>()
    else {
        return in_order(&mut look, &mut answer);
    };
    order.sort_unstable();
    let mut found: Vec<Option<T>> = Vec::new();
    found.resize_with(addrs.len(), || None);
    let mut previous: Option<(u64, usize)> = None;
    for (addr, i) in order {
        let i = i as usize;
        let this = match previous {
            Some((same, at)) if same == addr => found[at].clone(),
            _ => Some(look(addr)),
        };
        found[i] = this;
        previous = Some((addr, i));
    }
    // Every slot was filled above.
    addrs
        .iter()
        .zip(found)
        .map(|(&addr, found)| found.map_or(Symbolized::Unknown(Reason::Unmapped), |f| answer(addr, f)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lru_drops_the_least_recently_used() {
        let mut lru = Lru::new();
        lru.insert(1, "a", 1, 2);
        lru.insert(2, "b", 2, 2);
        assert_eq!(lru.get(&1, 3), Some("a"));
        lru.insert(3, "c", 4, 2);
        assert_eq!(lru.get(&2, 5), None);
        assert_eq!(lru.get(&1, 6), Some("a"));
        assert_eq!(lru.get(&3, 7), Some("c"));
    }

    #[test]
    fn answers_come_back_in_input_order() {
        let resolve = |addr: u64| {
            if addr.is_multiple_of(3) {
                Symbolized::Unknown(Reason::NoSymbol)
            } else {
                Symbolized::Unknown(Reason::NotFileBacked { name: addr.to_string() })
            }
        };
        for len in [0, 1, SORT_FROM - 1, SORT_FROM, 1000] {
            // Descending, with repeats.
            let addrs: Vec<u64> = (0..len as u64).map(|i| (len as u64 - i) / 2).collect();
            let mut calls = 0;
            let out = in_address_order(
                &addrs,
                |addr| {
                    calls += 1;
                    addr
                },
                |_, addr| resolve(addr),
            );
            let expected: Vec<_> = addrs.iter().map(|&addr| resolve(addr)).collect();
            assert_eq!(out, expected, "{len}");
            if len >= SORT_FROM {
                assert_eq!(calls, len / 2 + 1, "repeats are resolved once");
            }
        }
    }

    #[test]
    fn symbolizer_is_shareable() {
        fn shareable<T: Send + Sync>() {}
        shareable::<Symbolizer>();
    }
}
