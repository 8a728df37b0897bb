//! The independent tools: `nm`, GNU `addr2line`, `llvm-symbolizer`; their output parsed
//! into frames to compare with the symbolizer's.

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;

use symbol_resolver::Sym;

use crate::fixtures::run;

/// One frame as a tool prints it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub name: String,
    pub file: Option<String>,
    pub line: Option<u32>,
    /// Only llvm-symbolizer prints columns (0 when unknown).
    pub column: Option<u32>,
}

/// Defined text symbols from `nm -S -C`: demangled name → (address, size). Names that
/// occur twice (local functions of the same name in different files) are left out.
pub fn nm(file: &Path, dynamic: bool) -> HashMap<String, (u64, u64)> {
    let mut command = Command::new("nm");
    command.args(["-S", "-C", "--defined-only"]);
    if dynamic {
        command.arg("-D");
    }
    let out = run(command.arg(file));
    let mut found = HashMap::new();
    let mut duplicate = Vec::new();
    for line in out.lines() {
        // ADDR SIZE TYPE NAME, NAME possibly with spaces (C++ parameter lists).
        let mut parts = line.splitn(4, ' ');
        let (Some(addr), Some(size), Some(kind), Some(name)) = (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        if !matches!(kind, "T" | "t" | "W" | "w" | "i") {
            continue;
        }
        let (Ok(addr), Ok(size)) = (u64::from_str_radix(addr, 16), u64::from_str_radix(size, 16)) else { continue };
        if found.insert(name.to_owned(), (addr, size)).is_some() {
            duplicate.push(name.to_owned());
        }
    }
    for name in duplicate {
        found.remove(&name);
    }
    found
}

/// `FILE:LINE[:COLUMN]` with `??` and `0`/`?` meaning unknown, as both tools print it.
fn location(text: &str, with_column: bool) -> (Option<String>, Option<u32>, Option<u32>) {
    // GNU addr2line appends " (discriminator N)", which is not part of the location.
    let text = text.split(" (discriminator").next().unwrap_or(text);
    let (rest, column) = if with_column {
        let (rest, column) = text.rsplit_once(':').unwrap();
        (rest, column.parse().ok())
    } else {
        (text, None)
    };
    let (file, line) = rest.rsplit_once(':').unwrap();
    let file = (file != "??").then(|| file.to_owned());
    let line = line.parse().ok().filter(|&l| l != 0);
    (file, line, column)
}

/// `addr2line -a -f -i -C -e FILE ADDR...`: frames per address, innermost first.
pub fn addr2line(file: &Path, addrs: &[u64]) -> Vec<Vec<Frame>> {
    let out = run(Command::new("addr2line")
        .args(["-a", "-f", "-i", "-C", "-e"])
        .arg(file)
        .args(addrs.iter().map(|a| format!("{a:#x}"))));
    let mut result: Vec<Vec<Frame>> = Vec::new();
    let mut lines = out.lines();
    while let Some(line) = lines.next() {
        if line.starts_with("0x") && line.len() == 18 {
            result.push(Vec::new());
            continue;
        }
        let location_line = lines.next().unwrap();
        let (file, line_no, _) = location(location_line, false);
        result.last_mut().unwrap().push(Frame { name: line.to_owned(), file, line: line_no, column: None });
    }
    assert_eq!(result.len(), addrs.len());
    result
}

/// `llvm-symbolizer --obj=FILE --inlining [ARGS] ADDR...`: frames per address, innermost
/// first. Legacy Rust hashes (`::h0123456789abcdef`), which llvm keeps and GNU drops, are
/// removed.
pub fn llvm_symbolizer(file: &Path, addrs: &[u64], args: &[String]) -> Vec<Vec<Frame>> {
    let out = run(Command::new("llvm-symbolizer")
        .arg(format!("--obj={}", file.display()))
        .args(["--inlining", "--demangle"])
        .args(args)
        .args(addrs.iter().map(|a| format!("{a:#x}"))));
    let mut result = Vec::new();
    for block in out.split("\n\n").filter(|b| !b.trim().is_empty()) {
        let lines: Vec<_> = block.lines().collect();
        let frames = lines
            .chunks(2)
            .map(|pair| {
                let (file, line, column) = location(pair[1], true);
                Frame { name: strip_rust_hash(pair[0]).to_owned(), file, line, column }
            })
            .collect();
        result.push(frames);
    }
    assert_eq!(result.len(), addrs.len(), "{out}");
    result
}

fn strip_rust_hash(name: &str) -> &str {
    match name.rsplit_once("::h") {
        Some((base, hash)) if hash.len() == 16 && hash.bytes().all(|b| b.is_ascii_hexdigit()) => base,
        _ => name,
    }
}

/// The symbolizer's answer as tool-style frames, innermost first: the inlined frames from
/// the innermost out, then the symbol itself.
pub fn frames_of(sym: &Sym) -> Vec<Frame> {
    let frame = |name: &str, code: Option<&symbol_resolver::CodeInfo>| Frame {
        name: name.to_owned(),
        file: code.map(|c| c.file.clone()),
        line: code.and_then(|c| c.line).filter(|&l| l != 0),
        column: code.and_then(|c| c.column),
    };
    let mut frames: Vec<_> = sym.inlined.iter().rev().map(|f| frame(&f.name, f.code.as_ref())).collect();
    frames.push(frame(&sym.name, sym.code.as_ref()));
    frames
}

/// Compares ignoring columns (GNU addr2line has none).
pub fn without_columns(frames: &[Frame]) -> Vec<Frame> {
    frames.iter().map(|f| Frame { column: None, ..f.clone() }).collect()
}

/// Columns as llvm-symbolizer prints them: unknown is 0. On a line-0 row (code that belongs
/// to no line) llvm still prints the row's column, addr2line (the crate) reports none: a
/// column without a line means nothing, so neither is compared there.
pub fn llvm_columns(frames: &[Frame]) -> Vec<Frame> {
    frames.iter().map(|f| Frame { column: f.line.map(|_| f.column.unwrap_or(0)), ..f.clone() }).collect()
}
