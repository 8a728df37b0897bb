//! `kscope symbolize`: kernel or process addresses → symbols, for people
//! and scripts. One line (or JSON record) per address, in input order; an
//! address that can't be resolved says why.

use std::{borrow::Cow, io::Write};

use kscope_schema::{CodeLocation, HexAddress, InlinedFrame, ResolvedAddress, SymbolizeRecord, UnknownAddress};
use symbol_resolver::{CodeInfo, Kernel, Process, Source, Symbolized, Symbolizer};

use crate::output::OutputFormat;

/// Where the addresses belong.
#[derive(Debug, Clone)]
pub enum Target {
    Kernel,
    Process(u32),
    Elf(std::path::PathBuf),
}

/// Parses `0x…` (hex) or decimal; a bare string of hex digits with a
/// letter in it is read as hex too, as stack dumps print them.
pub fn parse_address(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let parsed = match t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16),
        None if t.bytes().any(|b| b.is_ascii_alphabetic()) => u64::from_str_radix(t, 16),
        None => t.parse(),
    };
    parsed.map_err(|_| format!("{text:?} is not an address (0x-prefixed hex or decimal)"))
}

pub fn symbolize(target: &Target, addresses: &[u64], format: OutputFormat) -> anyhow::Result<()> {
    let symbolizer = Symbolizer::new();
    let source = match target {
        Target::Kernel => Source::Kernel(Kernel::default()),
        Target::Process(pid) => Source::Process(Process { pid: *pid }),
        Target::Elf(path) => Source::Elf(symbol_resolver::Elf { path: path.clone() }),
    };
    let results = symbolizer.symbolize(&source, addresses);
    let mut out = std::io::stdout().lock();
    for (addr, result) in addresses.iter().zip(&results) {
        match format {
            OutputFormat::Console => writeln!(out, "{}", line(*addr, result))?,
            OutputFormat::Json => writeln!(out, "{}", serde_json::to_string(&record(*addr, result))?)?,
        }
    }
    Ok(())
}

/// `0xffffffff81a2b3c4 tcp_v4_rcv+0x1a4 [module] net/ipv4/tcp_ipv4.c:2210`,
/// then one indented line per inlined frame, innermost last.
pub fn line(addr: u64, result: &Symbolized) -> String {
    match result {
        Symbolized::Sym(sym) => {
            let mut text = format!("{addr:#018x} {sym}");
            if let Some(module) = &sym.module {
                text.push_str(&format!(" [{module}]"));
            }
            if let Some(code) = &sym.code {
                text.push_str(&format!(" {code}"));
            }
            for frame in &sym.inlined {
                text.push_str(&format!("\n    inlined {}", frame.name));
                if let Some(code) = &frame.code {
                    text.push_str(&format!(" {code}"));
                }
            }
            text
        }
        Symbolized::Unknown(reason) => format!("{addr:#018x} unknown: {reason}"),
    }
}

fn code_location(code: &CodeInfo) -> CodeLocation<'_> {
    CodeLocation { file: Cow::Borrowed(&code.file), line: code.line, column: code.column }
}

/// The JSON record of one address.
pub fn record(addr: u64, result: &Symbolized) -> SymbolizeRecord<'_> {
    match result {
        Symbolized::Sym(sym) => SymbolizeRecord::Resolved(ResolvedAddress {
            address: HexAddress(addr),
            symbol: Cow::Borrowed(&sym.name),
            symbol_address: HexAddress(sym.addr),
            offset: sym.offset,
            size: sym.size,
            module: sym.module.as_deref().map(Cow::Borrowed),
            code: sym.code.as_ref().map(code_location),
            inlined: sym
                .inlined
                .iter()
                .map(|f| InlinedFrame { name: Cow::Borrowed(&f.name), code: f.code.as_ref().map(code_location) })
                .collect(),
        }),
        Symbolized::Unknown(reason) => SymbolizeRecord::Unknown(UnknownAddress {
            address: HexAddress(addr),
            unknown: Cow::Owned(reason.to_string()),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_parse_as_stack_dumps_print_them() {
        assert_eq!(parse_address("0xffffffff81000000"), Ok(0xffff_ffff_8100_0000));
        assert_eq!(parse_address("ffffffff81000000"), Ok(0xffff_ffff_8100_0000));
        assert_eq!(parse_address("4096"), Ok(4096));
        assert!(parse_address("0xfffffffff810000000").is_err());
        assert!(parse_address("tcp_v4_rcv").is_err());
        assert!(parse_address("").is_err());
    }

    #[test]
    fn kernel_symbols_resolve_like_kallsyms_says() {
        let kallsyms = std::fs::read_to_string("/proc/kallsyms").unwrap();
        let (addr, name) = kallsyms
            .lines()
            .find_map(|l| {
                let mut f = l.split_whitespace();
                let (addr, kind, name) = (f.next()?, f.next()?, f.next()?);
                let addr = u64::from_str_radix(addr, 16).ok().filter(|a| *a != 0)?;
                (kind == "T" && name == "tcp_v4_rcv").then(|| (addr, name.to_owned()))
            })
            .expect("tcp_v4_rcv with a real address in /proc/kallsyms (tests run as root)");
        let symbolizer = Symbolizer::new();
        let results = symbolizer.symbolize(&Source::Kernel(Kernel::default()), &[addr + 1]);
        assert_eq!(line(addr + 1, &results[0]), format!("{:#018x} {name}+0x1", addr + 1));
        let SymbolizeRecord::Resolved(resolved) = record(addr + 1, &results[0]) else { panic!("not resolved") };
        assert_eq!((resolved.symbol.as_ref(), resolved.offset), (name.as_str(), 1));
    }
}
