//! ELF files against nm, GNU addr2line and llvm-symbolizer, on every address of the
//! functions under test.

use std::path::Path;

use symbol_resolver::{Elf, Options, Reason, Source, Symbolized, Symbolizer};

use crate::fixtures::fixtures;
use crate::tools::{self, addr2line, frames_of, llvm_columns, llvm_symbolizer, nm, without_columns};

pub fn symbolizer() -> Symbolizer {
    Symbolizer::with_options(Options { debug_dirs: vec![fixtures().debug_root.clone()], ..Options::default() })
}

/// What to compare: the file the symbolizer reads, the files the tools read.
struct Case<'a> {
    ours: &'a Path,
    nm: &'a Path,
    addr2line: &'a Path,
    llvm: &'a Path,
    llvm_args: Vec<String>,
    functions: &'a [&'a str],
}

/// Symbolizes every address of every function and asserts exact agreement: name, start,
/// offset and size with nm; frames (names, files, lines) with addr2line; frames with
/// columns with llvm-symbolizer. Returns how many addresses had inlined frames.
fn agree(case: &Case<'_>) -> usize {
    let symbols = nm(case.nm, false);
    let mut addrs = Vec::new();
    let mut expected = Vec::new();
    for &function in case.functions {
        let &(start, size) = symbols.get(function).unwrap_or_else(|| panic!("nm has no {function}: {symbols:?}"));
        assert!(size > 0, "{function}");
        for addr in start..start + size {
            addrs.push(addr);
            expected.push((function, start, size));
        }
    }
    let ours = symbolizer().symbolize(&Source::Elf(Elf { path: case.ours.to_path_buf() }), &addrs);
    let gnu = addr2line(case.addr2line, &addrs);
    let llvm = llvm_symbolizer(case.llvm, &addrs, &case.llvm_args);
    let mut inlined = 0;
    for (i, &addr) in addrs.iter().enumerate() {
        let (function, start, size) = expected[i];
        let Symbolized::Sym(sym) = &ours[i] else { panic!("{addr:#x} in {function}: {:?}", ours[i]) };
        assert_eq!(
            (sym.name.as_str(), sym.addr, sym.offset, sym.size),
            (function, start, addr - start, Some(size)),
            "{addr:#x}"
        );
        let frames = frames_of(sym);
        assert_eq!(without_columns(&frames), without_columns(&gnu[i]), "{addr:#x} vs addr2line");
        // LLVM 14 leaves some legacy Rust names half-demangled (`_$LT$core..ptr..X$GT$`);
        // GNU addr2line has just checked those names, so only llvm's locations count there.
        let mut theirs = llvm[i].clone();
        for (their, our) in theirs.iter_mut().zip(&frames) {
            if their.name.contains('$') {
                their.name.clone_from(&our.name);
            }
        }
        assert_eq!(llvm_columns(&frames), llvm_columns(&theirs), "{addr:#x} vs llvm-symbolizer");
        assert!(sym.code.is_some(), "{addr:#x} has no line");
        if !sym.inlined.is_empty() {
            inlined += 1;
        }
    }
    lines_alone_agree(case.ours, &symbols);
    inlined
}

/// Without inlined frames, lines come from a flattened line table rather than from
/// addr2line: over every address of every function symbol (sampled down to ~20k), the
/// line must be the innermost location the inlined lookup gives.
fn lines_alone_agree(file: &Path, symbols: &std::collections::HashMap<String, (u64, u64)>) {
    let total: u64 = symbols.values().map(|&(_, size)| size).sum();
    let step = (total / 20_000).max(1);
    let mut addrs: Vec<u64> =
        symbols.values().flat_map(|&(start, size)| (start..start + size).step_by(step as usize)).collect();
    addrs.sort_unstable();
    let source = Source::Elf(Elf { path: file.to_path_buf() });
    let inlined = symbolizer().symbolize(&source, &addrs);
    let flat = Symbolizer::with_options(Options {
        debug_dirs: vec![fixtures().debug_root.clone()],
        inlined: false,
        ..Options::default()
    })
    .symbolize(&source, &addrs);
    let mut with_line = 0;
    for ((addr, full), flat) in addrs.iter().zip(&inlined).zip(&flat) {
        let (Some(full), Some(flat)) = (full.sym(), flat.sym()) else {
            assert_eq!(full.reason(), flat.reason(), "{addr:#x}");
            continue;
        };
        assert_eq!((&flat.name, flat.addr, flat.size), (&full.name, full.addr, full.size), "{addr:#x}");
        assert_eq!(flat.code.as_ref(), full.location(), "{addr:#x} without inlined frames");
        assert!(flat.inlined.is_empty());
        with_line += usize::from(flat.code.is_some());
    }
    assert!(with_line > 0, "{}: no lines at all", file.display());
}

const C_FUNCTIONS: &[&str] = &["compute", "helper_static", "block_on_stdin", "main"];

#[test]
fn c_pie_matches_nm_addr2line_llvm_symbolizer() {
    let f = &fixtures().c_pie;
    let inlined = agree(&Case { ours: f, nm: f, addr2line: f, llvm: f, llvm_args: Vec::new(), functions: C_FUNCTIONS });
    assert!(inlined > 0, "mix() is always_inline: some addresses must have inlined frames");
}

#[test]
fn c_non_pie_matches_tools() {
    let f = &fixtures().c_nopie;
    let inlined = agree(&Case { ours: f, nm: f, addr2line: f, llvm: f, llvm_args: Vec::new(), functions: C_FUNCTIONS });
    assert!(inlined > 0);
}

#[test]
fn stripped_with_debug_file_by_build_id() {
    let f = fixtures();
    // GNU addr2line only knows the system debug root, so it reads the unstripped original
    // (same layout); llvm-symbolizer reads the same stripped file and finds the debug file
    // under the same root by itself.
    let inlined = agree(&Case {
        ours: &f.c_buildid,
        nm: &f.c_pie,
        addr2line: &f.c_pie,
        llvm: &f.c_buildid,
        llvm_args: vec![format!("--debug-file-directory={}", f.debug_root.display())],
        functions: C_FUNCTIONS,
    });
    assert!(inlined > 0);
    // Without the debug root, only the (import-only) dynamic symbols are left.
    let compute = nm(&f.c_pie, false)["compute"].0;
    let plain = Symbolizer::with_options(Options { debug_dirs: Vec::new(), ..Options::default() });
    let answer = plain.symbolize(&Source::Elf(Elf { path: f.c_buildid.clone() }), &[compute]);
    assert_eq!(answer, [Symbolized::Unknown(Reason::NoSymbol)]);
}

#[test]
fn stripped_with_gnu_debuglink() {
    let f = fixtures();
    // Both tools follow the debuglink to .debug/ next to the file, as we do.
    let inlined = agree(&Case {
        ours: &f.c_link,
        nm: &f.c_link_full,
        addr2line: &f.c_link,
        llvm: &f.c_link,
        llvm_args: Vec::new(),
        functions: C_FUNCTIONS,
    });
    assert!(inlined > 0);
}

#[test]
fn debuglink_with_wrong_crc_is_ignored() {
    let f = fixtures();
    let compute = nm(&f.c_badcrc.with_file_name("c_link_full"), false)["compute"].0;
    let answer = symbolizer().symbolize(&Source::Elf(Elf { path: f.c_badcrc.clone() }), &[compute]);
    assert_eq!(answer, [Symbolized::Unknown(Reason::NoSymbol)]);
}

#[test]
fn rust_matches_tools() {
    let f = &fixtures().rust;
    let functions = ["prog::compute", "prog::inner::work", "prog::main"];
    let inlined = agree(&Case { ours: f, nm: f, addr2line: f, llvm: f, llvm_args: Vec::new(), functions: &functions });
    assert!(inlined > 0, "helper is inline(always)");
}

#[test]
fn rust_v0_mangling_matches_tools() {
    let f = &fixtures().rust_v0;
    let functions = ["prog::compute", "prog::inner::work", "prog::main"];
    let inlined = agree(&Case { ours: f, nm: f, addr2line: f, llvm: f, llvm_args: Vec::new(), functions: &functions });
    assert!(inlined > 0);
}

#[test]
fn cpp_matches_tools() {
    let f = &fixtures().cpp;
    let functions = ["geo::scale(int, double)", "long twice<long>(long)", "main"];
    agree(&Case { ours: f, nm: f, addr2line: f, llvm: f, llvm_args: Vec::new(), functions: &functions });
}

#[test]
fn options_turn_off_demangling_and_lines() {
    let f = &fixtures().rust;
    let compute = nm(f, false)["prog::compute"].0;
    let bare = Symbolizer::with_options(Options { demangle: false, code_info: false, ..Options::default() });
    let answer = bare.symbolize(&Source::Elf(Elf { path: f.clone() }), &[compute]);
    let sym = answer[0].sym().unwrap();
    assert!(sym.name.starts_with("_ZN4prog7compute17h"), "{}", sym.name);
    assert_eq!((sym.code.as_ref(), sym.inlined.len()), (None, 0));
}

#[test]
fn unreadable_and_non_elf_files_give_reasons_per_address() {
    let f = fixtures();
    let missing = f.scratch.join("does-not-exist");
    let answer = symbolizer().symbolize(&Source::Elf(Elf { path: missing }), &[1, 2]);
    assert_eq!(answer.len(), 2);
    assert!(answer.iter().all(|a| matches!(a.reason(), Some(Reason::FileUnreadable { .. }))), "{answer:?}");

    let text = f.scratch.join("not-elf.txt");
    std::fs::write(&text, "just text\n").unwrap();
    let answer = symbolizer().symbolize(&Source::Elf(Elf { path: text }), &[1]);
    assert!(matches!(answer[0].reason(), Some(Reason::InvalidElf { .. })), "{answer:?}");

    let dir = symbolizer().symbolize(&Source::Elf(Elf { path: f.scratch.clone() }), &[1]);
    assert!(matches!(dir[0].reason(), Some(Reason::FileUnreadable { .. })), "{dir:?}");

    let empty = symbolizer().symbolize(&Source::Elf(Elf { path: f.c_pie.clone() }), &[]);
    assert!(empty.is_empty());
    let below = symbolizer().symbolize(&Source::Elf(Elf { path: f.c_pie.clone() }), &[0, 1]);
    assert_eq!(below, [Symbolized::Unknown(Reason::NoSymbol), Symbolized::Unknown(Reason::NoSymbol)]);
}

#[test]
fn replaced_binary_is_read_again() {
    let f = fixtures();
    let path = f.scratch.join("replaced");
    let symbolizer = symbolizer();
    let source = Source::Elf(Elf { path: path.clone() });
    let name_at = |addr| symbolizer.symbolize(&source, &[addr])[0].sym().map(|s| (s.name.clone(), s.offset));

    std::fs::copy(&f.c_pie, &path).unwrap();
    let pie = nm(&f.c_pie, false);
    assert_eq!(name_at(pie["compute"].0 + 1), Some(("compute".to_owned(), 1)));

    // Replaced by rename (new inode), as package managers and linkers do.
    let next = f.scratch.join("replaced.next");
    std::fs::copy(&f.c_nopie, &next).unwrap();
    std::fs::rename(&next, &path).unwrap();
    let nopie = nm(&f.c_nopie, false);
    assert_eq!(name_at(nopie["helper_static"].0 + 2), Some(("helper_static".to_owned(), 2)));

    // Rewritten in place (same inode, other size).
    std::fs::write(&path, std::fs::read(&f.rust).unwrap()).unwrap();
    let rust = tools::nm(&f.rust, false);
    assert_eq!(name_at(rust["prog::compute"].0), Some(("prog::compute".to_owned(), 0)));
}
