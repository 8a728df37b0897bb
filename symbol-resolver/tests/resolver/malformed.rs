//! Damaged inputs: truncated and mutated ELF files (the binary and its debug file) give
//! answers or reasons, never a panic.

use std::path::{Path, PathBuf};

use symbol_resolver::{Elf, Options, Reason, Source, Symbolized, Symbolizer};

use crate::fixtures::fixtures;
use crate::tools::nm;

/// A small deterministic PRNG (xorshift64*): reproducible mutants without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % n as u64).unwrap()
    }
}

/// Addresses worth asking about: every function start and a few bytes in, plus nonsense.
fn probes(reference: &Path) -> Vec<u64> {
    let mut addrs: Vec<u64> = nm(reference, false).values().flat_map(|&(a, s)| [a, a + s / 2]).collect();
    addrs.extend([0, 1, u64::MAX, 0x4000_0000]);
    addrs
}

fn ask(symbolizer: &Symbolizer, path: &Path, addrs: &[u64]) -> Vec<Symbolized> {
    let answers = symbolizer.symbolize(&Source::Elf(Elf { path: path.to_path_buf() }), addrs);
    assert_eq!(answers.len(), addrs.len());
    answers
}

/// Flips 1 to 8 bytes: half the time in the first 4 KiB (ELF and program headers, notes),
/// a quarter in the last 4 KiB (section headers, string tables), else anywhere (code,
/// symbols, DWARF).
fn mutate(rng: &mut Rng, original: &[u8]) -> Vec<u8> {
    let mut bytes = original.to_vec();
    let len = bytes.len();
    for _ in 0..=rng.below(8) {
        let at = match rng.below(4) {
            0 | 1 => rng.below(4096.min(len)),
            2 => len - 1 - rng.below(4096.min(len)),
            _ => rng.below(len),
        };
        let value = u8::try_from(rng.next() & 0xff).unwrap();
        bytes[at] = value;
    }
    bytes
}

fn dir(name: &str) -> PathBuf {
    let dir = fixtures().scratch.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn truncated_elf_files() {
    let f = fixtures();
    let original = std::fs::read(&f.c_pie).unwrap();
    let addrs = probes(&f.c_pie);
    let dir = dir("truncated");
    let symbolizer = Symbolizer::new();
    let mut lengths = vec![0, 1, 4, 16, 52, 63, 64, 65, 100, 512, 4096];
    lengths.extend([original.len() / 4, original.len() / 2, original.len() - 4096, original.len() - 1]);
    for len in lengths {
        let path = dir.join(format!("c_pie.{len}"));
        std::fs::write(&path, &original[..len]).unwrap();
        let answers = ask(&symbolizer, &path, &addrs);
        if len < 64 {
            // Not even a full ELF header.
            assert!(
                answers.iter().all(|a| matches!(a.reason(), Some(Reason::InvalidElf { .. }))),
                "{len}: {answers:?}"
            );
        }
    }
}

#[test]
fn mutated_elf_files() {
    let f = fixtures();
    let original = std::fs::read(&f.c_pie).unwrap();
    let addrs = probes(&f.c_pie);
    let dir = dir("mutated");
    let mut rng = Rng(0x6b73_636f_7065);
    let symbolizer = Symbolizer::new();
    let mut resolved = 0;
    for round in 0..300 {
        // Distinct files: the cache key is (device, inode, size, mtime), and a same-size
        // rewrite within one mtime tick would look unchanged.
        let path = dir.join(format!("c_pie.{round}"));
        std::fs::write(&path, mutate(&mut rng, &original)).unwrap();
        resolved += ask(&symbolizer, &path, &addrs).iter().filter(|a| a.sym().is_some()).count();
        std::fs::remove_file(&path).unwrap();
    }
    // Most single-byte damage leaves most symbols readable: the mutants were parsed, not
    // all rejected up front.
    assert!(resolved > 300 * (addrs.len() - 4) / 2, "{resolved}");
}

#[test]
fn mutated_debug_files() {
    // The stripped binary stays intact; its build-id debug file (symbols and DWARF) is
    // damaged.
    let f = fixtures();
    let id = crate::fixtures::build_id(&f.c_pie);
    let original =
        std::fs::read(f.debug_root.join(".build-id").join(&id[..2]).join(format!("{}.debug", &id[2..]))).unwrap();
    let addrs = probes(&f.c_pie);
    let mut rng = Rng(0x0064_6562_7567);
    for round in 0..100 {
        let root = dir(&format!("debug-root-{round}"));
        let id_dir = root.join(".build-id").join(&id[..2]);
        std::fs::create_dir_all(&id_dir).unwrap();
        std::fs::write(id_dir.join(format!("{}.debug", &id[2..])), mutate(&mut rng, &original)).unwrap();
        let symbolizer = Symbolizer::with_options(Options { debug_dirs: vec![root.clone()], ..Options::default() });
        ask(&symbolizer, &f.c_buildid, &addrs);
        std::fs::remove_dir_all(&root).unwrap();
    }
}
