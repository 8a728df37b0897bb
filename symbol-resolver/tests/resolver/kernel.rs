//! The kernel: answers against /proc/kallsyms itself, a BPF program as a module symbol, a
//! fake vmlinux with a KASLR offset checked against addr2line, kptr_restrict, and
//! attach-point lookup on real names.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use symbol_resolver::{
    FileSpec, Kernel, KernelFunctions, Reason, Source, Sym, Symbolized, Symbolizer, Traceable, Variant,
};

use crate::fixtures::fixtures;
use crate::tools::{addr2line, frames_of, nm, without_columns};

/// One /proc/kallsyms line, split the obvious way.
#[derive(Debug, Clone)]
struct Line {
    addr: u64,
    kind: char,
    name: String,
    module: Option<String>,
}

fn proc_kallsyms() -> Vec<Line> {
    std::fs::read_to_string("/proc/kallsyms")
        .unwrap()
        .lines()
        .map(|line| {
            let fields: Vec<_> = line.split_whitespace().collect();
            Line {
                addr: u64::from_str_radix(fields[0], 16).unwrap(),
                kind: fields[1].chars().next().unwrap(),
                name: fields[2].to_owned(),
                module: fields.get(3).map(|m| m.trim_matches(['[', ']']).to_owned()),
            }
        })
        .collect()
}

fn kallsyms_only() -> Source {
    Source::Kernel(Kernel { vmlinux: FileSpec::Disabled, ..Kernel::default() })
}

fn restricted(lines: &[Line]) -> bool {
    lines.iter().all(|l| l.addr == 0)
}

#[test]
fn kallsyms_answers_equal_proc_kallsyms_lines() {
    let lines = proc_kallsyms();
    if restricted(&lines) {
        // Not root, or kptr_restrict=2: the reason must say so.
        let answers = Symbolizer::new().symbolize(&kallsyms_only(), &[0xffffffff81000000]);
        assert_eq!(answers, [Symbolized::Unknown(Reason::KptrRestricted)]);
        return;
    }
    let mut by_addr: BTreeMap<u64, Vec<&Line>> = BTreeMap::new();
    for line in &lines {
        by_addr.entry(line.addr).or_default().push(line);
    }
    // Symbols alone at their address (no alias to choose among), with the next address
    // giving the size: a named few, and the first clone-suffixed one.
    let wanted = ["tcp_retransmit_skb", "tcp_v4_rcv", "schedule", "vfs_read", "kfree_skb_reason", "do_sys_openat2"];
    let clone =
        lines.iter().find(|l| l.name.contains(".isra.") || l.name.contains(".constprop.")).map(|l| l.name.as_str());
    let mut checked = 0;
    let mut addrs = Vec::new();
    let mut expected = Vec::new();
    for name in wanted.into_iter().chain(clone) {
        let Some(line) = lines.iter().find(|l| l.name == name) else { continue };
        if by_addr[&line.addr].len() != 1 {
            continue;
        }
        let next = *by_addr.range(line.addr + 1..).next().unwrap().0;
        for addr in [line.addr, line.addr + 1, next - 1] {
            addrs.push(addr);
            expected.push(Symbolized::Sym(Sym {
                name: line.name.clone(),
                addr: line.addr,
                offset: addr - line.addr,
                size: None,
                module: line.module.clone(),
                code: None,
                inlined: Vec::new(),
            }));
        }
        checked += 1;
    }
    assert!(checked >= 3, "too few unaliased symbols found");
    assert_eq!(Symbolizer::new().symbolize(&kallsyms_only(), &addrs), expected);

    // Below the kernel image (the direct map), nothing; above the image's last symbol when
    // that is a data marker (and below any module), nothing either.
    let low = by_addr.keys().find(|&&a| a != 0).unwrap() - 1;
    let mut unmapped = vec![low];
    let top = lines.iter().filter(|l| l.module.is_none()).max_by_key(|l| l.addr).unwrap();
    let first_module = lines.iter().filter(|l| l.module.is_some()).map(|l| l.addr).min().unwrap_or(u64::MAX);
    if !matches!(top.kind, 'T' | 't' | 'W' | 'w') && top.addr + 0x1000 < first_module {
        unmapped.push(top.addr + 0x1000);
    }
    let answers = Symbolizer::new().symbolize(&kallsyms_only(), &unmapped);
    assert_eq!(answers, vec![Symbolized::Unknown(Reason::Unmapped); unmapped.len()]);

    // The default source (a vmlinux when there is one, kallsyms otherwise) names the same
    // function.
    let answers = Symbolizer::new().symbolize(&Source::Kernel(Kernel::default()), &addrs[..1]);
    assert_eq!(answers[0].sym().map(|s| s.name.as_str()), expected[0].sym().map(|s| s.name.as_str()));
}

#[test]
fn bpf_program_resolves_as_module_symbol() {
    let mut loader = Command::new(&fixtures().bpf_loader).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
    let mut line = String::new();
    BufReader::new(loader.stdout.as_mut().unwrap()).read_line(&mut line).unwrap();
    assert_eq!(line, "ready\n", "loading the BPF program failed (needs root)");
    let lines = proc_kallsyms();
    let found =
        lines.iter().find(|l| l.name.ends_with("_kscope_symtest") && l.module.as_deref() == Some("bpf")).cloned();
    // The symbolizer reads kallsyms after the program is loaded.
    let symbolizer = Symbolizer::new();
    let answers = found.as_ref().map(|l| symbolizer.symbolize(&kallsyms_only(), &[l.addr, l.addr + 1]));
    let _ = loader.kill();
    let _ = loader.wait();
    let found = found.expect("kallsyms lists the BPF program (net.core.bpf_jit_kallsyms=1)");
    if restricted(&lines) {
        return;
    }
    let answers = answers.unwrap();
    for (answer, offset) in answers.iter().zip([0, 1]) {
        let sym = answer.sym().unwrap();
        assert_eq!(
            (sym.name.as_str(), sym.addr, sym.offset, sym.module.as_deref(), found.kind),
            (found.name.as_str(), found.addr, offset, Some("bpf"), 't')
        );
    }
}

fn write(name: &str, text: &str) -> PathBuf {
    let path = fixtures().scratch.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn kptr_restrict_zeros_are_reported() {
    let fixture = write(
        "kallsyms-restricted",
        "0000000000000000 T _stext\n0000000000000000 T tcp_retransmit_skb\n0000000000000000 t nft_do_chain\t[nf_tables]\n",
    );
    let kernel = Kernel { kallsyms: FileSpec::Path(fixture.clone()), vmlinux: FileSpec::Disabled, kaslr_offset: None };
    let answers = Symbolizer::new().symbolize(&Source::Kernel(kernel), &[0xffffffff81000000, 0xffffffffc0000000]);
    assert_eq!(answers, vec![Symbolized::Unknown(Reason::KptrRestricted); 2]);

    // With a vmlinux, the offset cannot be derived from zeros either.
    let kernel = Kernel {
        kallsyms: FileSpec::Path(fixture),
        vmlinux: FileSpec::Path(fixtures().vmlinux.clone()),
        kaslr_offset: None,
    };
    let answers = Symbolizer::new().symbolize(&Source::Kernel(kernel), &[0xffffffff81000000]);
    assert_eq!(answers, [Symbolized::Unknown(Reason::KptrRestricted)]);
}

#[test]
fn unusable_kallsyms_files() {
    let garbage = write("kallsyms-garbage", "this is not\nkallsyms at all \u{1}\u{2}\n");
    let missing = fixtures().scratch.join("kallsyms-missing");
    for path in [garbage, missing] {
        let kernel = Kernel { kallsyms: FileSpec::Path(path), vmlinux: FileSpec::Disabled, kaslr_offset: None };
        let answers = Symbolizer::new().symbolize(&Source::Kernel(kernel), &[0xffffffff81000000]);
        assert!(matches!(answers[0].reason(), Some(Reason::NoKernelSymbols { .. })), "{answers:?}");
    }
}

/// An offset like KASLR's (a multiple of 2 MiB), moving the fake image's addresses.
const OFFSET: u64 = 0x3a0_0000;

#[test]
fn vmlinux_with_kaslr_offset_matches_addr2line_and_falls_back_to_kallsyms() {
    let f = fixtures();
    let symbols = nm(&f.vmlinux, false);
    let stext = symbols["_stext"].0;
    let (a, a_size) = symbols["kfunc_a"];
    // kallsyms names kfunc_a differently so it shows which source answered; a module
    // symbol only kallsyms has.
    let kallsyms = write(
        "kallsyms-fake",
        &format!(
            "{:016x} T _stext\n{:016x} T kallsyms_name_for_a\nffffffffc0001000 t modfn\t[kmod]\n",
            stext + OFFSET,
            a + OFFSET
        ),
    );
    let mut vaddrs = Vec::new();
    for function in ["kfunc_a", "kfunc_b"] {
        let (start, size) = symbols[function];
        vaddrs.extend(start..start + size);
    }
    let addrs: Vec<u64> = vaddrs.iter().map(|v| v + OFFSET).collect();
    let tools = addr2line(&f.vmlinux, &vaddrs);

    let check = |kernel: Kernel| {
        let answers = Symbolizer::new().symbolize(&Source::Kernel(kernel), &addrs);
        let mut inlined = 0;
        for ((answer, &vaddr), tool) in answers.iter().zip(&vaddrs).zip(&tools) {
            let sym = answer.sym().unwrap_or_else(|| panic!("{vaddr:#x}: {answer:?}"));
            let (start, size) = if vaddr < a + a_size { (a, a_size) } else { symbols["kfunc_b"] };
            assert_eq!(
                (sym.addr, sym.offset, sym.size, sym.module.as_deref()),
                (start + OFFSET, vaddr - start, Some(size), None)
            );
            assert_eq!(without_columns(&frames_of(sym)), without_columns(tool), "{vaddr:#x}");
            inlined += usize::from(!sym.inlined.is_empty());
        }
        assert!(inlined > 0, "kinline is always_inline");
    };
    // Offset derived from _stext in kallsyms.
    check(Kernel {
        kallsyms: FileSpec::Path(kallsyms.clone()),
        vmlinux: FileSpec::Path(f.vmlinux.clone()),
        kaslr_offset: None,
    });
    // Offset given, kallsyms off.
    check(Kernel {
        kallsyms: FileSpec::Disabled,
        vmlinux: FileSpec::Path(f.vmlinux.clone()),
        kaslr_offset: Some(OFFSET),
    });

    // The module address is only in kallsyms.
    let kernel =
        Kernel { kallsyms: FileSpec::Path(kallsyms), vmlinux: FileSpec::Path(f.vmlinux.clone()), kaslr_offset: None };
    let answers = Symbolizer::new().symbolize(&Source::Kernel(kernel), &[0xffffffffc0001004]);
    let sym = answers[0].sym().unwrap();
    assert_eq!(
        (sym.name.as_str(), sym.addr, sym.offset, sym.size, sym.module.as_deref()),
        ("modfn", 0xffffffffc0001000, 4, None, Some("kmod"))
    );
    assert_eq!(sym.code, None);

    // No _stext or _text in kallsyms: the vmlinux cannot be placed, and says so.
    let kallsyms = write("kallsyms-no-stext", "ffffffffc0001000 t modfn\t[kmod]\n");
    let kernel =
        Kernel { kallsyms: FileSpec::Path(kallsyms), vmlinux: FileSpec::Path(f.vmlinux.clone()), kaslr_offset: None };
    let answers = Symbolizer::new().symbolize(&Source::Kernel(kernel), &addrs[..1]);
    assert!(matches!(answers[0].reason(), Some(Reason::KaslrOffsetUnknown { .. })), "{answers:?}");
}

#[test]
fn attach_points_on_real_names() {
    let lines = proc_kallsyms();
    let text: Vec<&Line> = lines.iter().filter(|l| matches!(l.kind, 'T' | 't' | 'W' | 'w')).collect();
    let names: std::collections::HashSet<&str> = text.iter().map(|l| l.name.as_str()).collect();
    let has = |name: &str| names.contains(name);
    assert!(has("tcp_retransmit_skb"));
    // A function the compiler only kept as a clone: `stem.isra.N` or `stem.constprop.N`
    // present, `stem` absent.
    let (stem, clone) = text
        .iter()
        .filter_map(|l| {
            let (stem, _) = l.name.split_once(".isra.").or_else(|| l.name.split_once(".constprop."))?;
            (!has(stem)).then_some((stem.to_owned(), l.name.clone()))
        })
        .next()
        .expect("this kernel has a clone-only function");

    let tracefs = fixtures().scratch.join("tracefs");
    std::fs::create_dir_all(&tracefs).unwrap();
    std::fs::write(tracefs.join("available_filter_functions"), format!("tcp_retransmit_skb\n{clone}\n")).unwrap();
    let functions = KernelFunctions::load(Path::new("/proc/kallsyms"), Some(&tracefs)).unwrap();

    let found = functions.lookup("tcp_retransmit_skb");
    let exact = found.exact().unwrap();
    assert_eq!(exact.traceable, Traceable::Yes);
    let line = text.iter().find(|l| l.name == "tcp_retransmit_skb").unwrap();
    let expected_addr = (!restricted(&lines)).then_some(line.addr);
    assert_eq!((exact.addr, exact.module.as_deref()), (expected_addr, None));
    assert_eq!(found.attach_target(), Some(exact));
    for other in &found.candidates[1..] {
        assert!(other.name.starts_with("tcp_retransmit_skb."), "{other:?}");
        assert_eq!(other.traceable, Traceable::No, "not in the fixture list");
    }

    let found = functions.lookup(&stem);
    assert!(found.exists() && found.exact().is_none(), "{found:?}");
    let candidate = found.candidates.iter().find(|c| c.name == clone).unwrap();
    assert!(matches!(&candidate.variant, Variant::Suffixed { suffix } if clone.ends_with(suffix.as_str())));
    assert_eq!(candidate.traceable, Traceable::Yes);
    let target = found.attach_target().unwrap();
    assert!(target.name.starts_with(&format!("{stem}.")) && !target.variant.is_cold(), "{target:?}");
    for candidate in &found.candidates {
        assert!(has(&candidate.name) && candidate.name.starts_with(&format!("{stem}.")), "{candidate:?}");
    }

    assert!(!functions.lookup("kscope_no_such_function").exists());

    // The real tracefs: readable (then it lists tcp_retransmit_skb) or not (then unknown).
    let real = KernelFunctions::load_default().unwrap();
    let traceable = real.lookup("tcp_retransmit_skb").exact().unwrap().traceable.clone();
    assert!(matches!(traceable, Traceable::Yes | Traceable::Unknown { .. }), "{traceable:?}");
}
