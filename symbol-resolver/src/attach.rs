//! Attach-point lookup: does this kernel have function X, under which name, can it be traced.
//!
//! GCC clones and splits functions and renames the copies: `foo.isra.0` (scalar replacement
//! of aggregates: the arguments changed), `foo.constprop.0` (constant arguments folded in),
//! `foo.part.0` (the outlined part of a partially inlined function), `foo.cold` (the
//! unlikely blocks moved away from the hot path). When `foo` itself was inlined everywhere,
//! only the copies exist, and a kprobe on `foo` fails. This module says which names exist
//! and which of them ftrace lists, so a sensor can report "not present" or pick a variant
//! before trying.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use crate::{Error, Kallsyms};

/// The tracefs mount points tried when none is given.
const TRACEFS_DIRS: [&str; 2] = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];

/// The names ftrace can attach to (tracefs `available_filter_functions`).
#[derive(Debug, Clone, Default)]
pub struct TraceableFunctions {
    names: HashSet<Box<str>>,
}

impl TraceableFunctions {
    /// Parses `available_filter_functions` (`NAME` or `NAME [MODULE]` per line; also the
    /// `ADDR NAME [MODULE]` lines of `available_filter_functions_addrs`).
    pub fn parse(text: &[u8]) -> Self {
        let names = String::from_utf8_lossy(text)
            .lines()
            .filter_map(|line| {
                let mut fields = line.split_ascii_whitespace();
                let first = fields.next()?;
                let name = match fields.next() {
                    Some(second) if !second.starts_with('[') && first.bytes().all(|b| b.is_ascii_hexdigit()) => second,
                    _ => first,
                };
                Some(name.into())
            })
            .collect();
        Self { names }
    }

    /// Reads `DIR/available_filter_functions`.
    pub fn load(tracefs: &Path) -> Result<Self, Error> {
        let path = tracefs.join("available_filter_functions");
        let text = std::fs::read(&path).map_err(|source| Error::io(path, source))?;
        Ok(Self::parse(&text))
    }

    /// Reads it from `/sys/kernel/tracing`, else `/sys/kernel/debug/tracing`.
    pub fn load_default() -> Result<Self, Error> {
        let mut errors = Vec::new();
        for dir in TRACEFS_DIRS {
            match Self::load(Path::new(dir)) {
                Ok(functions) => return Ok(functions),
                Err(error) => errors.push(error.to_string()),
            }
        }
        // Both errors: the first mount point's (often EPERM) says more than the second's
        // (usually ENOENT).
        Err(Error::NoTracefs { tried: errors.join("; ") })
    }

    /// Whether ftrace lists this exact name.
    pub fn contains(&self, name: &str) -> bool {
        self.names.contains(name)
    }

    /// The number of names.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}

/// Kernel functions by name, for attach decisions.
#[derive(Debug, Clone)]
pub struct KernelFunctions {
    kallsyms: Kallsyms,
    /// Name up to the first `.` → indices (in kallsyms order) of the symbols with that stem.
    by_stem: HashMap<Box<str>, Vec<usize>>,
    traceable: Result<TraceableFunctions, String>,
}

/// How a found name relates to the one asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Variant {
    /// The name itself.
    Exact,
    /// A compiler-made copy or part: the name plus `suffix` (e.g. `.isra.0`, `.cold`).
    Suffixed {
        /// The suffix, with its leading dot.
        suffix: String,
    },
}

impl Variant {
    /// A `.cold` part: the unlikely blocks of a function, not an entry point; probing it
    /// fires only on the rare path.
    pub fn is_cold(&self) -> bool {
        matches!(self, Self::Suffixed { suffix } if suffix.split('.').any(|part| part == "cold"))
    }

    /// A `.part` piece: the outlined remainder of a partially inlined function, entered
    /// only after the inlined head's checks passed.
    pub fn is_part(&self) -> bool {
        matches!(self, Self::Suffixed { suffix } if suffix.split('.').any(|part| part == "part"))
    }
}

/// Whether ftrace (and so kprobes through ftrace) can attach to a name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Traceable {
    /// Listed in `available_filter_functions`.
    Yes,
    /// Not listed: `notrace`, inlined, in a blacklisted section, or not a function.
    No,
    /// The list could not be read.
    Unknown {
        /// Why.
        why: String,
    },
}

/// One name under which a function exists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionCandidate {
    /// The kernel's name for it.
    pub name: String,
    /// Its address, `None` when kptr_restrict hides addresses.
    pub addr: Option<u64>,
    /// The module, `None` for the core kernel.
    pub module: Option<String>,
    /// The name asked for, or a suffixed copy of it.
    pub variant: Variant,
    /// Whether ftrace lists it.
    pub traceable: Traceable,
}

/// The answer to "does function X exist".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionLookup {
    /// The name asked for.
    pub name: String,
    /// Every text symbol with that name or a compiler suffix of it: exact names first, then
    /// suffixed ones in kallsyms order.
    pub candidates: Vec<FunctionCandidate>,
}

impl FunctionLookup {
    /// Whether the function exists under any name.
    pub fn exists(&self) -> bool {
        !self.candidates.is_empty()
    }

    /// The exact name, if the kernel has it.
    pub fn exact(&self) -> Option<&FunctionCandidate> {
        self.candidates.iter().find(|c| c.variant == Variant::Exact)
    }

    /// The best name to put a kprobe on: the exact name, else a clone (`.isra`,
    /// `.constprop`: whole functions, with possibly changed arguments), else a `.part`;
    /// never a `.cold` part; never a name ftrace says is not traceable (unknown
    /// traceability is not held against a name).
    pub fn attach_target(&self) -> Option<&FunctionCandidate> {
        let usable = |c: &&FunctionCandidate| c.traceable != Traceable::No && !c.variant.is_cold();
        self.candidates.iter().filter(usable).min_by_key(|c| match &c.variant {
            Variant::Exact => 0,
            variant if !variant.is_part() => 1,
            _ => 2,
        })
    }
}

/// Whether `suffix` (after the stem, without its leading dot) is made of compiler suffix
/// parts: GCC's `isra`, `constprop`, `part`, `cold`, `lto_priv`, `localalias`, clang's
/// `llvm`, each optionally numbered.
fn is_compiler_suffix(suffix: &str) -> bool {
    const WORDS: [&str; 7] = ["isra", "constprop", "part", "cold", "lto_priv", "localalias", "llvm"];
    let mut parts = suffix.split('.');
    // The first part is a word: `foo.0` is not a clone name.
    let starts_with_word = parts.next().is_some_and(|first| WORDS.contains(&first));
    starts_with_word
        && parts.all(|part| WORDS.contains(&part) || (!part.is_empty() && part.bytes().all(|b| b.is_ascii_digit())))
}

fn is_text(kind: char) -> bool {
    matches!(kind, 'T' | 't' | 'W' | 'w')
}

impl KernelFunctions {
    /// Indexes `kallsyms`; `traceable` is the ftrace list, or why it could not be read.
    pub fn new(kallsyms: Kallsyms, traceable: Result<TraceableFunctions, String>) -> Self {
        let mut by_stem: HashMap<Box<str>, Vec<usize>> = HashMap::new();
        for (index, symbol) in kallsyms.symbols().enumerate() {
            if !is_text(symbol.kind) {
                continue;
            }
            let stem = symbol.name.split_once('.').map_or(symbol.name, |(stem, _)| stem);
            by_stem.entry(stem.into()).or_default().push(index);
        }
        Self { kallsyms, by_stem, traceable }
    }

    /// Reads `kallsyms` and, from `tracefs` (or the usual mount points when `None`),
    /// `available_filter_functions`. Only kallsyms is required; an unreadable tracefs makes
    /// traceability [`Traceable::Unknown`].
    pub fn load(kallsyms: &Path, tracefs: Option<&Path>) -> Result<Self, Error> {
        let symbols = Kallsyms::load(kallsyms)?;
        let traceable = match tracefs {
            Some(dir) => TraceableFunctions::load(dir),
            None => TraceableFunctions::load_default(),
        };
        Ok(Self::new(symbols, traceable.map_err(|e| e.to_string())))
    }

    /// [`Self::load`] for the running kernel.
    pub fn load_default() -> Result<Self, Error> {
        Self::load(&PathBuf::from("/proc/kallsyms"), None)
    }

    /// The kallsyms table.
    pub fn kallsyms(&self) -> &Kallsyms {
        &self.kallsyms
    }

    /// Looks up a function by its source name.
    pub fn lookup(&self, name: &str) -> FunctionLookup {
        let mut candidates = Vec::new();
        // A name with a dot is asked for as is (someone wants `foo.isra.0` precisely).
        let stem = name.split_once('.').map_or(name, |(stem, _)| stem);
        for &index in self.by_stem.get(stem).map(Vec::as_slice).unwrap_or_default() {
            let Some(symbol) = self.kallsyms.get(index) else { continue };
            let variant = if symbol.name == name {
                Variant::Exact
            } else {
                match symbol.name.strip_prefix(name).and_then(|rest| rest.strip_prefix('.')) {
                    Some(suffix) if is_compiler_suffix(suffix) => Variant::Suffixed { suffix: format!(".{suffix}") },
                    _ => continue,
                }
            };
            let traceable = match &self.traceable {
                Ok(list) if list.contains(symbol.name) => Traceable::Yes,
                Ok(_) => Traceable::No,
                Err(why) => Traceable::Unknown { why: why.clone() },
            };
            candidates.push(FunctionCandidate {
                name: symbol.name.to_owned(),
                addr: (!self.kallsyms.is_restricted()).then_some(symbol.addr),
                module: symbol.module.map(str::to_owned),
                variant,
                traceable,
            });
        }
        // Stable: exact names first, each group in kallsyms (address) order.
        candidates.sort_by_key(|c| c.variant != Variant::Exact);
        FunctionLookup { name: name.to_owned(), candidates }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KALLSYMS: &[u8] = b"\
ffffffff81000000 T _stext
ffffffff81001000 T tcp_retransmit_skb
ffffffff81002000 t tcp_retransmit_skb.cold
ffffffff81003000 t __pfx_inet_csk_destroy_sock
ffffffff81003010 t inet_csk_destroy_sock.isra.0
ffffffff81004000 t inet_csk_destroy_sock.isra.0.cold
ffffffff81005000 t kzalloc_noprof.constprop.0
ffffffff81006000 t kzalloc_noprof.constprop.1
ffffffff81007000 t split_fn.part.0
ffffffff81008000 t notrace_fn.isra.0
ffffffff81009000 d data_obj.isra.0
ffffffff8100a000 t tcp_retransmit_skbx
ffffffff8100b000 t weird.0
ffffffffc0001000 t nft_do_chain\t[nf_tables]
";

    const AVAILABLE: &[u8] = b"\
tcp_retransmit_skb
inet_csk_destroy_sock.isra.0
kzalloc_noprof.constprop.0
kzalloc_noprof.constprop.1
split_fn.part.0
nft_do_chain [nf_tables]
";

    fn functions() -> KernelFunctions {
        KernelFunctions::new(Kallsyms::parse(KALLSYMS), Ok(TraceableFunctions::parse(AVAILABLE)))
    }

    #[test]
    fn exact_name_with_cold_part() {
        let found = functions().lookup("tcp_retransmit_skb");
        let names: Vec<_> = found.candidates.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["tcp_retransmit_skb", "tcp_retransmit_skb.cold"]);
        assert_eq!(found.candidates[0].traceable, Traceable::Yes);
        assert_eq!(found.candidates[0].addr, Some(0xffffffff81001000));
        assert!(found.candidates[1].variant.is_cold());
        assert_eq!(found.attach_target().unwrap().name, "tcp_retransmit_skb");
    }

    #[test]
    fn only_clones_exist() {
        let found = functions().lookup("inet_csk_destroy_sock");
        assert!(found.exists());
        assert!(found.exact().is_none());
        let target = found.attach_target().unwrap();
        assert_eq!(target.name, "inet_csk_destroy_sock.isra.0");
        assert_eq!(target.variant, Variant::Suffixed { suffix: ".isra.0".into() });
        assert_eq!(found.candidates.len(), 2, "{found:?}");

        let found = functions().lookup("kzalloc_noprof");
        assert_eq!(found.candidates.len(), 2);
        assert_eq!(found.attach_target().unwrap().name, "kzalloc_noprof.constprop.0");

        assert_eq!(functions().lookup("split_fn").attach_target().unwrap().name, "split_fn.part.0");
    }

    #[test]
    fn untraceable_absent_and_lookalikes() {
        let found = functions().lookup("notrace_fn");
        assert!(found.exists());
        assert_eq!(found.candidates[0].traceable, Traceable::No);
        assert!(found.attach_target().is_none());

        assert!(!functions().lookup("no_such_function").exists());
        // Data symbols, longer names and numeric-only suffixes are not the function.
        assert!(!functions().lookup("data_obj").exists());
        assert!(!functions().lookup("weird").exists());
        assert_eq!(functions().lookup("tcp_retransmit").candidates.len(), 0);

        let module = functions().lookup("nft_do_chain");
        assert_eq!(module.candidates[0].module.as_deref(), Some("nf_tables"));
        assert_eq!(module.candidates[0].traceable, Traceable::Yes);
    }

    #[test]
    fn unknown_traceability_and_restricted_addresses() {
        let restricted = KALLSYMS
            .split(|&b| b == b'\n')
            .map(|line| {
                let mut line = line.to_vec();
                line.iter_mut().take(16).for_each(|b| *b = b'0');
                line
            })
            .collect::<Vec<_>>()
            .join(&b'\n');
        let functions = KernelFunctions::new(Kallsyms::parse(&restricted), Err("tracefs not mounted".into()));
        let found = functions.lookup("tcp_retransmit_skb");
        assert_eq!(found.candidates[0].addr, None);
        assert_eq!(found.candidates[0].traceable, Traceable::Unknown { why: "tracefs not mounted".into() });
        assert_eq!(found.attach_target().unwrap().name, "tcp_retransmit_skb");
    }

    #[test]
    fn available_filter_functions_formats() {
        let list = TraceableFunctions::parse(b"foo\nbar [mod]\nffffffff81000000 baz\nffffffff81000010 qux [mod]\n\n");
        for name in ["foo", "bar", "baz", "qux"] {
            assert!(list.contains(name), "{name}");
        }
        assert_eq!(list.len(), 4);
    }

    #[test]
    fn suffix_grammar() {
        for ok in ["isra.0", "constprop.0", "part.12", "cold", "isra.0.cold", "constprop.0.isra.0", "llvm.123456"] {
            assert!(is_compiler_suffix(ok), "{ok}");
        }
        for bad in ["0", "", "foo", "isra.", "cold.x", "isra..0"] {
            assert!(!is_compiler_suffix(bad), "{bad}");
        }
    }
}
