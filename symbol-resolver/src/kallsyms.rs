//! `/proc/kallsyms`: parsed once into a sorted table, looked up by binary search.

use std::path::Path;

use crate::Error;

/// A parsed kallsyms file.
///
/// Lines that don't have the kallsyms shape (`ADDR TYPE NAME [\[MODULE\]]`) are skipped and
/// counted, so one corrupt line cannot hide the rest.
#[derive(Debug, Clone, Default)]
pub struct Kallsyms {
    /// Sorted by address, then by preference (see [`rank`]) so the first entry of a run of
    /// aliases is the one to report.
    entries: Vec<Entry>,
    /// All names, back to back; entries point into it, which keeps ~100k symbols in two
    /// allocations instead of one per name.
    names: String,
    /// Module names, interned: a module's symbols are many, its name one.
    modules: Vec<Box<str>>,
    restricted: bool,
    skipped: usize,
    /// The address of the core kernel's highest symbol when that is not code (a data or
    /// section marker such as `__stop_*` or `_end`): nothing above it, up to the next
    /// module symbol, belongs to the image's code, so addresses there are not attributed
    /// to it.
    core_top: Option<u64>,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    addr: u64,
    name_start: u32,
    name_len: u32,
    /// Index into `modules`, or `NO_MODULE`.
    module: u32,
    kind: u8,
    rank: u8,
}

const NO_MODULE: u32 = u32::MAX;

/// One kallsyms symbol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KernelSymbol<'a> {
    /// Its address (zero when kptr_restrict hides addresses).
    pub addr: u64,
    /// The `nm`-style type letter (`T` global text, `t` local text, `W` weak, `D` data...).
    pub kind: char,
    /// Its name.
    pub name: &'a str,
    /// The module it belongs to (`bpf` for BPF programs), `None` for the core kernel.
    pub module: Option<&'a str>,
}

/// The preference among symbols at one address: text before data, global before weak
/// before local, so an alias group reports the name a stack trace would.
fn rank(kind: u8) -> u8 {
    match kind {
        b'T' => 0,
        b'W' => 1,
        b't' => 2,
        b'w' => 3,
        kind if kind.is_ascii_uppercase() => 4,
        _ => 5,
    }
}

struct Line<'a> {
    addr: u64,
    kind: u8,
    name: &'a str,
    module: Option<&'a str>,
}

fn parse_line(line: &[u8]) -> Option<Line<'_>> {
    let line = std::str::from_utf8(line).ok()?;
    let mut fields = line.split_ascii_whitespace();
    let addr = fields.next()?;
    // `from_str_radix` accepts a leading sign; kallsyms never has one.
    if addr.is_empty() || addr.len() > 16 || !addr.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let addr = u64::from_str_radix(addr, 16).ok()?;
    let kind = fields.next()?;
    let &[kind] = kind.as_bytes() else { return None };
    if !kind.is_ascii_alphabetic() {
        return None;
    }
    let name = fields.next()?;
    let module = match fields.next() {
        None => None,
        Some(module) => {
            let module = module.strip_prefix('[')?.strip_suffix(']')?;
            if module.is_empty() {
                return None;
            }
            Some(module)
        }
    };
    if fields.next().is_some() {
        return None;
    }
    Some(Line { addr, kind, name, module })
}

impl Kallsyms {
    /// Reads and parses a kallsyms file (`/proc/kallsyms` or a copy).
    pub fn load(path: &Path) -> Result<Self, Error> {
        // /proc files report size 0, so read to the end rather than by the reported size.
        let text = std::fs::read(path).map_err(|source| Error::io(path, source))?;
        Ok(Self::parse(&text))
    }

    /// Parses kallsyms text.
    pub fn parse(text: &[u8]) -> Self {
        let mut table = Self::default();
        let mut module_index = std::collections::HashMap::<&str, u32>::new();
        for raw in text.split(|&b| b == b'\n') {
            if raw.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let Some(line) = parse_line(raw) else {
                table.skipped += 1;
                continue;
            };
            let (Ok(name_start), Ok(name_len)) = (u32::try_from(table.names.len()), u32::try_from(line.name.len()))
            else {
                // Beyond 4 GiB of names the file is not a kallsyms; stop rather than
                // index wrongly.
                table.skipped += 1;
                continue;
            };
            let module = match line.module {
                None => NO_MODULE,
                Some(name) => *module_index.entry(name).or_insert_with(|| {
                    table.modules.push(name.into());
                    u32::try_from(table.modules.len() - 1).unwrap_or(NO_MODULE)
                }),
            };
            table.names.push_str(line.name);
            table.entries.push(Entry {
                addr: line.addr,
                name_start,
                name_len,
                module,
                kind: line.kind,
                rank: rank(line.kind),
            });
        }
        // Stable, so aliases of equal rank keep the file's order.
        table.entries.sort_by_key(|e| (e.addr, e.rank));
        table.restricted = !table.entries.is_empty() && table.entries.iter().all(|e| e.addr == 0);
        table.core_top = table
            .entries
            .iter()
            .rev()
            .find(|e| e.module == NO_MODULE)
            .filter(|e| !matches!(e.kind, b'T' | b't' | b'W' | b'w'))
            .map(|e| e.addr);
        table
    }

    /// Whether every address is zero: kptr_restrict (or a reader without CAP_SYSLOG) hides
    /// them, and the names are all that is left.
    pub fn is_restricted(&self) -> bool {
        self.restricted
    }

    /// The number of symbols.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no symbols.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The number of lines that were not kallsyms lines.
    pub fn skipped_lines(&self) -> usize {
        self.skipped
    }

    fn symbol(&self, entry: &Entry) -> KernelSymbol<'_> {
        let start = entry.name_start as usize;
        let name = self.names.get(start..start + entry.name_len as usize).unwrap_or_default();
        let module = self.modules.get(entry.module as usize).map(|m| &**m);
        KernelSymbol { addr: entry.addr, kind: char::from(entry.kind), name, module }
    }

    /// All symbols, by address.
    pub fn symbols(&self) -> impl Iterator<Item = KernelSymbol<'_>> {
        self.entries.iter().map(|e| self.symbol(e))
    }

    /// The symbol at `index` in address order (the order of [`Self::symbols`]).
    pub(crate) fn get(&self, index: usize) -> Option<KernelSymbol<'_>> {
        self.entries.get(index).map(|e| self.symbol(e))
    }

    /// The symbol an address is in: the one at the highest address not above it (kallsyms
    /// has no sizes, so a symbol runs to the next one). Among aliases, global text first.
    /// `None` below the first symbol, above the core image's top data marker (up to the
    /// next module symbol), and when addresses are hidden.
    pub fn find(&self, addr: u64) -> Option<KernelSymbol<'_>> {
        if self.restricted {
            return None;
        }
        let after = self.entries.partition_point(|e| e.addr <= addr);
        let nearest = self.entries.get(after.checked_sub(1)?)?;
        // Zero addresses are per-CPU offsets or hidden ones, never code.
        if nearest.addr == 0 || (self.core_top == Some(nearest.addr) && addr > nearest.addr) {
            return None;
        }
        // The first alias at that address: walk back rather than search again.
        let aliases = self.entries.get(..after)?.iter().rev().take_while(|e| e.addr == nearest.addr).count();
        self.entries.get(after - aliases).map(|e| self.symbol(e))
    }

    /// The address of the first symbol with this name.
    pub fn address_of(&self, name: &str) -> Option<u64> {
        self.symbols().find(|s| s.name == name).map(|s| s.addr)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const SAMPLE: &[u8] = b"\
ffffffff81000000 T _stext
ffffffff81000000 t local_alias
ffffffff81000000 T _text
ffffffff81000100 t helper.isra.0
ffffffff81000200 T tcp_retransmit_skb
ffffffffc0001000 t nft_do_chain\t[nf_tables]
ffffffffc0001080 T nft_register_expr\t[nf_tables]
ffffffffc0002000 t bpf_prog_0123456789abcdef_probe\t[bpf]
0000000000000000 D fixed_percpu_data
ffffffff82000000 R __stop_markers
";

    #[test]
    fn sample_resolves_with_aliases_and_modules() {
        let k = Kallsyms::parse(SAMPLE);
        assert_eq!(k.len(), 10);
        assert_eq!(k.skipped_lines(), 0);
        assert!(!k.is_restricted());
        let s = k.find(0xffffffff81000000).unwrap();
        assert_eq!((s.name, s.kind, s.module), ("_stext", 'T', None));
        assert_eq!(k.find(0xffffffff810000ff).unwrap().name, "_stext");
        assert_eq!(k.find(0xffffffff81000100).unwrap().name, "helper.isra.0");
        let s = k.find(0xffffffffc0001001).unwrap();
        assert_eq!((s.name, s.module), ("nft_do_chain", Some("nf_tables")));
        assert_eq!(k.find(0xffffffffc0002010).unwrap().module, Some("bpf"));
        assert_eq!(k.find(0xffff888000000000), None);
        assert_eq!(k.find(0x1000), None);
        assert_eq!(k.find(0xffffffff82000000).unwrap().name, "__stop_markers");
        assert_eq!(k.find(0xffffffff82000001), None, "above the core image's last (data) symbol");
        assert_eq!(k.address_of("_text"), Some(0xffffffff81000000));
    }

    #[test]
    fn zero_addresses_mean_restricted() {
        let k = Kallsyms::parse(
            b"0000000000000000 T _stext\n0000000000000000 T tcp_retransmit_skb\n0000000000000000 t nft_do_chain\t[nf_tables]\n",
        );
        assert!(k.is_restricted());
        assert_eq!(k.find(0xffffffff81000000), None);
        // Names stay usable, for attach-point lookup.
        assert_eq!(k.address_of("tcp_retransmit_skb"), Some(0));
    }

    #[test]
    fn garbage_lines_are_skipped_and_counted() {
        let k = Kallsyms::parse(
            b"ffffffff81000000 T ok\n\
              zzzz T bad_hex\n\
              +fffffff81000000 T signed\n\
              ffffffff810000000 T too_long\n\
              ffffffff81000010 TT two_letters\n\
              ffffffff81000010 1 digit_type\n\
              ffffffff81000010 T\n\
              ffffffff81000010 T name [mod\n\
              ffffffff81000010 T name [] \n\
              ffffffff81000010 T name [mod] extra\n\
              \xff\xfe T non_utf8\n\
              \n\
              ffffffff81000020 t fine\t[m]\n",
        );
        assert_eq!(k.len(), 2);
        assert_eq!(k.skipped_lines(), 10);
    }

    proptest! {
        #[test]
        fn parse_never_panics(text in proptest::collection::vec(any::<u8>(), 0..512)) {
            let k = Kallsyms::parse(&text);
            let _ = k.find(u64::MAX);
            let _ = k.find(0);
        }

        #[test]
        fn mutated_sample_never_panics(pos in 0..SAMPLE.len(), byte in any::<u8>(), probe in any::<u64>()) {
            let mut text = SAMPLE.to_vec();
            text[pos] = byte;
            let k = Kallsyms::parse(&text);
            prop_assert!(k.len() + k.skipped_lines() >= 9);
            if let Some(s) = k.find(probe) {
                prop_assert!(s.addr <= probe);
            }
        }
    }
}
