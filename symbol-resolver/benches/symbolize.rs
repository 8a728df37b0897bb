//! symbol-resolver against blazesym on the same addresses, in one run.
//!
//! - `kernel`: 1M addresses inside text symbols of the running kernel's `/proc/kallsyms`,
//!   both libraries on kallsyms alone (no vmlinux).
//! - `elf_names`, `elf_lines`: 1M virtual addresses inside the function symbols of a large
//!   ELF file with DWARF; symbol names only, then with file and line (no inlined frames).
//!
//! The ELF file is `$KSCOPE_BENCH_ELF` if set, else the workspace's `target/debug/kscope`
//! (build it with `cargo build -p kscope`), else this bench binary (which has no DWARF with
//! the default bench profile). It is copied to a temporary file first so a rebuild during
//! the run cannot change the input under one library and not the other.
//!
//! Each iteration symbolizes the whole batch in one call; both symbolizers are built once,
//! warmed with one full batch (the cold time is printed), and reused. Before timing, the
//! answers for a sample are compared and the disagreements counted (not failed on).
//!
//! Run: `cargo bench -p symbol-resolver --bench symbolize`.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a bench fails loudly")]

use std::collections::HashSet;
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use blazesym::symbolize as bz;
use criterion::{Criterion, Throughput};
use object::{Object, ObjectSection, ObjectSymbol, SymbolKind, SymbolSection};
use symbol_resolver as sr;

/// Addresses per batch.
const N: usize = 1_000_000;
/// Addresses whose answers are compared between the libraries.
const SAMPLE: usize = 20_000;
/// Kallsyms has no sizes: an address is drawn within this many bytes of a symbol's start
/// (and before the next symbol).
const MAX_KERNEL_SPAN: u64 = 4096;

/// splitmix64: a fixed seed gives the same addresses on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// `(start, span)` of each text symbol in kallsyms.
fn kernel_text_ranges() -> Vec<(u64, u64)> {
    let text = std::fs::read_to_string("/proc/kallsyms").expect("read /proc/kallsyms");
    let mut all = Vec::new();
    let mut text_starts = HashSet::new();
    for line in text.lines() {
        let mut fields = line.split_ascii_whitespace();
        let (Some(addr), Some(kind)) = (fields.next(), fields.next()) else { continue };
        let Ok(addr) = u64::from_str_radix(addr, 16) else { continue };
        if addr == 0 {
            continue;
        }
        all.push(addr);
        if matches!(kind, "T" | "t" | "W" | "w") {
            text_starts.insert(addr);
        }
    }
    all.sort_unstable();
    all.dedup();
    all.windows(2)
        .filter(|pair| text_starts.contains(&pair[0]))
        .map(|pair| (pair[0], (pair[1] - pair[0]).min(MAX_KERNEL_SPAN)))
        .collect()
}

/// `(start, size)` of each sized function symbol in the ELF file's `.symtab`.
fn elf_function_ranges(data: &[u8]) -> Vec<(u64, u64)> {
    let file = object::File::parse(data).expect("parse the bench ELF");
    let mut ranges: Vec<(u64, u64)> = file
        .symbols()
        .filter(|s| s.kind() == SymbolKind::Text && s.size() > 0 && s.address() != 0)
        .filter(|s| matches!(s.section(), SymbolSection::Section(_)))
        .map(|s| (s.address(), s.size()))
        .collect();
    ranges.sort_unstable();
    ranges.dedup();
    ranges
}

/// `N` addresses: a uniformly chosen range, then a uniform offset within it.
fn draw(ranges: &[(u64, u64)], seed: u64) -> Vec<u64> {
    assert!(!ranges.is_empty(), "no symbols to draw addresses from");
    let mut rng = Rng(seed);
    let count = u64::try_from(ranges.len()).unwrap();
    (0..N)
        .map(|_| {
            let (start, span) = ranges[usize::try_from(rng.below(count)).unwrap()];
            start + rng.below(span)
        })
        .collect()
}

/// The ELF file to use, copied to a temporary path (removed on drop).
struct BenchElf {
    path: PathBuf,
    origin: PathBuf,
}

impl BenchElf {
    fn pick() -> Self {
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let origin = std::env::var_os("KSCOPE_BENCH_ELF")
            .map(PathBuf::from)
            .or_else(|| Some(workspace.join("target/debug/kscope")).filter(|p| p.is_file()))
            .unwrap_or_else(|| std::env::current_exe().unwrap());
        let path = std::env::temp_dir().join(format!("kscope-bench-{}.elf", std::process::id()));
        std::fs::copy(&origin, &path).expect("copy the bench ELF");
        Self { path, origin }
    }
}

impl Drop for BenchElf {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn describe_elf(data: &[u8]) -> String {
    let file = object::File::parse(data).unwrap();
    let size = |name: &str| file.section_by_name(name).map_or(0, |s| s.size());
    format!(
        "{:.1} MiB, .text {:.1} MiB, .debug_info {:.1} MiB, .debug_line {:.1} MiB, DWARF {}",
        mib(data.len() as u64),
        mib(size(".text")),
        mib(size(".debug_info")),
        mib(size(".debug_line")),
        if size(".debug_info") > 0 && size(".debug_line") > 0 { "yes" } else { "NO" },
    )
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// Agreement counts over a sample.
#[derive(Default, Debug)]
struct Agreement {
    same_name: usize,
    /// Different names for the same symbol start (aliases picked differently).
    alias: usize,
    different: usize,
    only_ours: usize,
    only_blazesym: usize,
    neither: usize,
    /// With code info: both have a line, and file (full path) and line agree.
    same_line: usize,
    /// With code info: both have a line, and they differ (file or line).
    different_line: usize,
    /// With code info: one of them has a line and the other none.
    line_only_one: usize,
}

fn compare(ours: &[sr::Symbolized], theirs: &[bz::Symbolized<'_>], code: bool) -> Agreement {
    let mut a = Agreement::default();
    let mut examples = Vec::new();
    for (ours, theirs) in ours.iter().zip(theirs) {
        match (ours.sym(), theirs.as_sym()) {
            (Some(o), Some(t)) => {
                if o.name == t.name {
                    a.same_name += 1;
                } else if o.addr == t.addr {
                    a.alias += 1;
                } else {
                    a.different += 1;
                    if examples.len() < 3 {
                        examples.push(format!("{o} vs {}+{:#x}", t.name, t.offset));
                    }
                }
                if code {
                    let o_line = o.location().and_then(|c| Some((c.file.clone(), c.line?)));
                    let t_line = t.code_info.as_ref().and_then(|c| Some((c.to_path().display().to_string(), c.line?)));
                    match (o_line, t_line) {
                        (Some(o), Some(t)) if o == t => a.same_line += 1,
                        (Some(o), Some(t)) => {
                            a.different_line += 1;
                            if examples.len() < 6 {
                                examples.push(format!("line {}:{} vs {}:{}", o.0, o.1, t.0, t.1));
                            }
                        }
                        (None, None) => {}
                        _ => a.line_only_one += 1,
                    }
                }
            }
            (Some(_), None) => a.only_ours += 1,
            (None, Some(_)) => a.only_blazesym += 1,
            (None, None) => a.neither += 1,
        }
    }
    for example in examples {
        println!("    e.g. {example}");
    }
    a
}

fn ours_with(code_info: bool) -> sr::Symbolizer {
    sr::Symbolizer::with_options(sr::Options { code_info, inlined: false, demangle: true, ..sr::Options::default() })
}

fn blazesym_with(code_info: bool) -> bz::Symbolizer {
    bz::Symbolizer::builder().enable_code_info(code_info).enable_inlined_fns(false).enable_demangling(true).build()
}

/// The two libraries set up for one group.
struct Pair<'a> {
    label: &'a str,
    ours: sr::Symbolizer,
    our_source: sr::Source,
    theirs: bz::Symbolizer,
    their_source: bz::source::Source<'a>,
    /// How blazesym takes these addresses.
    input: fn(&[u64]) -> bz::Input<&[u64]>,
    code: bool,
}

impl Pair<'_> {
    /// One full batch through each library (caches filled), the cold times printed, and
    /// the answers for a sample compared.
    fn warm_and_compare(&self, addrs: &[u64]) {
        let label = self.label;
        let start = Instant::now();
        let ours = self.ours.symbolize(&self.our_source, addrs);
        let ours_time = start.elapsed();
        let start = Instant::now();
        let theirs = self.theirs.symbolize(&self.their_source, (self.input)(addrs)).expect("blazesym symbolize");
        let theirs_time = start.elapsed();
        println!("{label}: first batch of {N} (cold caches): kscope {ours_time:.2?}, blazesym {theirs_time:.2?}");
        println!(
            "{label}: unresolved in the whole batch: kscope {}, blazesym {}",
            ours.iter().filter(|s| s.sym().is_none()).count(),
            theirs.iter().filter(|s| s.as_sym().is_none()).count(),
        );
        let agreement = compare(&ours[..SAMPLE], &theirs[..SAMPLE], self.code);
        println!("{label}: agreement on the first {SAMPLE}: {agreement:?}");
    }

    fn bench(&self, c: &mut Criterion, addrs: &[u64], measurement: Duration) {
        self.warm_and_compare(addrs);
        let mut group = c.benchmark_group(self.label);
        group.sample_size(10).warm_up_time(Duration::from_secs(1)).measurement_time(measurement);
        group.throughput(Throughput::Elements(addrs.len() as u64));
        group.bench_function("kscope", |b| b.iter(|| self.ours.symbolize(&self.our_source, black_box(addrs))));
        group.bench_function("blazesym", |b| {
            b.iter(|| self.theirs.symbolize(&self.their_source, (self.input)(black_box(addrs))).unwrap())
        });
        group.finish();
    }
}

fn benches(c: &mut Criterion) {
    // Kernel, kallsyms only.
    let addrs = draw(&kernel_text_ranges(), 0x6b73_636f_7065);
    let kernel = Pair {
        label: "kernel",
        ours: ours_with(false),
        our_source: sr::Source::Kernel(sr::Kernel {
            kallsyms: sr::FileSpec::Auto,
            vmlinux: sr::FileSpec::Disabled,
            kaslr_offset: None,
        }),
        theirs: blazesym_with(false),
        their_source: bz::source::Source::Kernel(bz::source::Kernel {
            kallsyms: blazesym::MaybeDefault::Default,
            vmlinux: blazesym::MaybeDefault::None,
            kaslr_offset: Some(0),
            debug_syms: false,
            ..bz::source::Kernel::default()
        }),
        input: |addrs| bz::Input::AbsAddr(addrs),
        code: false,
    };
    kernel.bench(c, &addrs, Duration::from_secs(4));
    drop(kernel);

    // A large ELF file with DWARF.
    let elf = BenchElf::pick();
    let data = std::fs::read(&elf.path).unwrap();
    println!("elf: {} (copied to {}): {}", elf.origin.display(), elf.path.display(), describe_elf(&data));
    let ranges = elf_function_ranges(&data);
    drop(data);
    println!("elf: {} sized function symbols", ranges.len());
    let addrs = draw(&ranges, 0x656c_665f_6477);
    for (label, code) in [("elf_names", false), ("elf_lines", true)] {
        // Names only: both from the ELF symbol table (blazesym with debug symbols takes
        // names from DWARF). With lines: blazesym's DWARF resolver; ours, the symbol table
        // plus DWARF lines.
        let mut their_elf = bz::source::Elf::new(&elf.path);
        their_elf.debug_syms = code;
        let pair = Pair {
            label,
            ours: ours_with(code),
            our_source: sr::Source::Elf(sr::Elf { path: elf.path.clone() }),
            theirs: blazesym_with(code),
            their_source: bz::source::Source::Elf(their_elf),
            input: |addrs| bz::Input::VirtOffset(addrs),
            code,
        };
        pair.bench(c, &addrs, Duration::from_secs(5));
    }
}

fn main() {
    let mut criterion = Criterion::default().configure_from_args();
    benches(&mut criterion);
    criterion.final_summary();
}
