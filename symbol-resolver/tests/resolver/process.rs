//! Live and exited processes: addresses computed from the maps' base and nm's values.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use symbol_resolver::{Elf, Process, Reason, Source, Sym, Symbolized, Symbolizer};

use crate::elf::symbolizer;
use crate::fixtures::{fixtures, run};
use crate::tools::nm;

/// A test program blocked on stdin; killed when dropped.
struct Running {
    child: Child,
}

impl Running {
    fn start(program: &Path) -> Self {
        let mut child = Command::new(program)
            .arg("block")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{}: {e}", program.display()));
        let mut line = String::new();
        BufReader::new(child.stdout.as_mut().unwrap()).read_line(&mut line).unwrap();
        assert_eq!(line, "ready\n");
        Self { child }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills it and, unless `zombie`, reaps it so its /proc entry is gone.
    fn kill(&mut self, zombie: bool) {
        self.child.kill().unwrap();
        if zombie {
            // Until reaped it is a zombie: /proc/PID exists, its maps read empty.
            while !std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap().contains(") Z ") {
                std::thread::yield_now();
            }
        } else {
            self.child.wait().unwrap();
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Start of the first mapping of `file` (file offset 0) in the process, read from maps
/// with a plain split, independently of the crate's parser.
fn base_of(pid: u32, file: &Path) -> u64 {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    let file = file.canonicalize().unwrap();
    maps.lines()
        .find_map(|line| {
            let fields: Vec<_> = line.split_whitespace().collect();
            let path = fields.get(5)?;
            (Path::new(path) == file && fields[2] == "00000000")
                .then(|| u64::from_str_radix(fields[0].split('-').next().unwrap(), 16).unwrap())
        })
        .unwrap_or_else(|| panic!("{} not mapped in {pid}:\n{maps}", file.display()))
}

/// The path and base of the mapped libc.
fn libc_of(pid: u32) -> (String, u64) {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    let path = maps
        .lines()
        .filter_map(|line| line.split_whitespace().nth(5))
        .find(|path| Path::new(path).file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("libc.so")))
        .unwrap()
        .to_owned();
    let base = base_of(pid, Path::new(&path));
    (path, base)
}

/// Addresses to check in `program` (ELF virtual addresses): each function's start, second
/// byte and last byte, and one address with inlined frames.
fn probe_addresses(program: &Path) -> Vec<u64> {
    let symbols = nm(program, false);
    let mut addrs = Vec::new();
    for function in ["compute", "helper_static", "block_on_stdin", "main"] {
        let (start, size) = symbols[function];
        addrs.extend([start, start + 1, start + size - 1]);
    }
    let (start, size) = symbols["compute"];
    let within: Vec<u64> = (start..start + size).collect();
    let answers = symbolizer().symbolize(&Source::Elf(Elf { path: program.to_path_buf() }), &within);
    let inlined = answers.iter().position(|a| a.sym().is_some_and(|s| !s.inlined.is_empty())).unwrap();
    addrs.push(within[inlined]);
    addrs
}

/// The answer expected for a process: the ELF answer (checked against the tools by the
/// ELF tests) moved by the load bias, with the mapped path as module.
fn expected(program: &Path, vaddrs: &[u64], bias: u64) -> Vec<Sym> {
    symbolizer()
        .symbolize(&Source::Elf(Elf { path: program.to_path_buf() }), vaddrs)
        .into_iter()
        .map(|answer| {
            let mut sym = answer.sym().unwrap().clone();
            sym.addr += bias;
            sym.module = Some(program.canonicalize().unwrap().display().to_string());
            sym
        })
        .collect()
}

fn syms(answers: &[Symbolized]) -> Vec<Sym> {
    answers.iter().map(|a| a.sym().cloned().unwrap_or_else(|| panic!("{a:?}"))).collect()
}

fn live_then_exited(program: &Path, pie: bool) {
    let vaddrs = probe_addresses(program);
    let mut running = Running::start(program);
    let pid = running.pid();
    let bias = if pie { base_of(pid, program) } else { 0 };
    let addrs: Vec<u64> = vaddrs.iter().map(|v| v + bias).collect();
    let want = expected(program, &vaddrs, bias);

    let symbolizer = symbolizer();
    let source = Source::Process(Process { pid });
    assert_eq!(syms(&symbolizer.symbolize(&source, &addrs)), want);

    // A shared library: libc's exported functions, by nm -D (aliases share addresses).
    let (libc, libc_base) = libc_of(pid);
    // nm -D prints versioned names (`fread@@GLIBC_2.2.5`); symbol tables name them bare.
    let exported: HashMap<String, (u64, u64)> = nm(Path::new(&libc), true)
        .into_iter()
        .map(|(name, value)| (name.split('@').next().unwrap().to_owned(), value))
        .collect();
    let mut names_at: HashMap<u64, Vec<&str>> = HashMap::new();
    for (name, &(addr, _)) in &exported {
        names_at.entry(addr).or_default().push(name);
    }
    for function in ["fread", "puts", "strlen"] {
        let (value, size) = exported[function];
        let answer = symbolizer.symbolize(&source, &[libc_base + value + size / 2]);
        let sym = answer[0].sym().unwrap_or_else(|| panic!("{function}: {answer:?}"));
        assert!(names_at[&value].contains(&sym.name.as_str()), "{function}: {sym:?} vs {:?}", names_at[&value]);
        assert_eq!((sym.offset, sym.addr, sym.module.as_deref()), (size / 2, libc_base + value, Some(libc.as_str())));
    }

    // Not file-backed, and not mapped.
    let stack = std::fs::read_to_string(format!("/proc/{pid}/maps"))
        .unwrap()
        .lines()
        .find(|l| l.ends_with("[stack]"))
        .map(|l| u64::from_str_radix(l.split('-').next().unwrap(), 16).unwrap())
        .unwrap();
    assert_eq!(
        symbolizer.symbolize(&source, &[stack, 0x10]),
        [Symbolized::Unknown(Reason::NotFileBacked { name: "[stack]".into() }), Symbolized::Unknown(Reason::Unmapped)]
    );

    // A zombie has no maps any more; then the process is gone entirely. Both resolve from
    // the snapshot taken when it was first symbolized.
    running.kill(true);
    assert_eq!(syms(&symbolizer.symbolize(&source, &addrs)), want, "zombie");
    running.kill(false);
    assert!(!Path::new(&format!("/proc/{pid}")).exists());
    assert_eq!(syms(&symbolizer.symbolize(&source, &addrs)), want, "exited");
    assert!(matches!(symbolizer.remember_process(pid), Err(symbol_resolver::Error::ProcessGone { .. })));

    assert!(symbolizer.forget_process(pid));
    assert!(symbolizer.symbolize(&source, &addrs).iter().all(|a| a.reason() == Some(&Reason::ProcessGone)));
}

#[test]
fn pie_process_live_and_after_exit() {
    live_then_exited(&fixtures().c_pie, true);
}

#[test]
fn non_pie_process_live_and_after_exit() {
    live_then_exited(&fixtures().c_nopie, false);
}

#[test]
fn stripped_process_with_build_id_debug_file() {
    // The stripped binary resolves through its debug file when run, too.
    let f = fixtures();
    let vaddrs = probe_addresses(&f.c_pie);
    let running = Running::start(&f.c_buildid);
    let bias = base_of(running.pid(), &f.c_buildid);
    let addrs: Vec<u64> = vaddrs.iter().map(|v| v + bias).collect();
    let mut want = expected(&f.c_pie, &vaddrs, bias);
    for sym in &mut want {
        sym.module = Some(f.c_buildid.canonicalize().unwrap().display().to_string());
    }
    let answers = symbolizer().symbolize(&Source::Process(Process { pid: running.pid() }), &addrs);
    assert_eq!(syms(&answers), want);
}

#[test]
fn remembered_before_first_use() {
    let program = &fixtures().c_pie;
    let vaddrs = probe_addresses(program);
    let mut running = Running::start(program);
    let pid = running.pid();
    let bias = base_of(pid, program);
    let symbolizer = symbolizer();
    symbolizer.remember_process(pid).unwrap();
    running.kill(false);
    let addrs: Vec<u64> = vaddrs.iter().map(|v| v + bias).collect();
    let answers = symbolizer.symbolize(&Source::Process(Process { pid }), &addrs);
    assert_eq!(syms(&answers), expected(program, &vaddrs, bias));
}

#[test]
fn deleted_binary_resolves_through_map_files() {
    let f = fixtures();
    let copy = f.scratch.join("deleted_prog");
    std::fs::copy(&f.c_pie, &copy).unwrap();
    let vaddrs = probe_addresses(&copy);
    let want = {
        let running = Running::start(&copy);
        let bias = base_of(running.pid(), &copy);
        std::fs::remove_file(&copy).unwrap();
        let addrs: Vec<u64> = vaddrs.iter().map(|v| v + bias).collect();
        let answers = symbolizer().symbolize(&Source::Process(Process { pid: running.pid() }), &addrs);
        (syms(&answers), bias)
    };
    let (got, bias) = want;
    std::fs::copy(&f.c_pie, &copy).unwrap();
    let mut expected = expected(&copy, &vaddrs, bias);
    std::fs::remove_file(&copy).unwrap();
    for (got, want) in got.iter().zip(&mut expected) {
        // The module is the path the process mapped, which still names the file.
        want.module.clone_from(&got.module);
        assert!(got.module.as_deref().is_some_and(|m| m.ends_with("deleted_prog")));
    }
    assert_eq!(got, expected);
}

#[test]
fn never_seen_dead_process_says_so() {
    let program = &fixtures().c_pie;
    let mut child = Command::new(program).stdout(Stdio::null()).spawn().unwrap();
    let pid = child.id();
    child.wait().unwrap();
    let answers = Symbolizer::new().symbolize(&Source::Process(Process { pid }), &[0x1000, 0x2000]);
    assert_eq!(answers, [Symbolized::Unknown(Reason::ProcessGone), Symbolized::Unknown(Reason::ProcessGone)]);
    assert!(Symbolizer::new().remember_process(pid).is_err());
}

#[test]
fn own_process_resolves_this_test() {
    // This test binary has Rust symbols and DWARF: a function of it resolves by its
    // runtime address, and matches what addr2line says about the same binary.
    let addr = own_process_resolves_this_test as *const () as u64;
    let answers = Symbolizer::new().symbolize(&Source::Process(Process { pid: std::process::id() }), &[addr]);
    let sym = answers[0].sym().unwrap();
    assert!(sym.name.ends_with("own_process_resolves_this_test"), "{sym:?}");
    assert_eq!(sym.offset, 0);
    let exe = std::env::current_exe().unwrap();
    let out = run(Command::new("addr2line")
        .arg("-f")
        .arg("-C")
        .arg("-e")
        .arg(&exe)
        .arg(format!("{:#x}", addr - base_of(std::process::id(), &exe))));
    assert!(out.lines().next().unwrap().ends_with("own_process_resolves_this_test"), "{out}");
    assert_eq!(
        out.lines().nth(1).unwrap().split(" (").next().unwrap(),
        sym.code.as_ref().map(ToString::to_string).unwrap()
    );
}
