//! The parsers behind symbolization and the retransmit/drop sensors, on
//! arbitrary input: kallsyms text (then lookups and the attach-point index
//! over it), ELF files (through the symbolizer, DWARF lines and inlined
//! frames included), and tracefs format files (record layouts and the drop
//! reason table). The first byte picks which; the rest is the input. What
//! they read is the kernel's or a binary's on disk, not ours: every one must
//! answer or fail, never panic or hang.
#![no_main]

use std::{io::Write as _, sync::OnceLock};

use kscope::{drops::DropReasons, kernel::tracefs::TracepointFormat};
use libfuzzer_sys::fuzz_target;
use symbol_resolver::{Elf, Kallsyms, KernelFunctions, Source, Symbolizer};

/// Addresses to look up: the input's own 8-byte words (so an address can
/// land inside whatever it describes) and a few fixed ones.
fn addresses(data: &[u8]) -> Vec<u64> {
    let mut addrs: Vec<u64> =
        data.chunks_exact(8).take(64).map(|c| u64::from_le_bytes(c.try_into().unwrap_or_default())).collect();
    addrs.extend([0, 1, 0x1000, 0x40_0000, u64::MAX, 0xffff_ffff_8100_0000]);
    addrs
}

fn symbolizer() -> &'static Symbolizer {
    static SYMBOLIZER: OnceLock<Symbolizer> = OnceLock::new();
    // One parsed file at a time: each input is a new file.
    SYMBOLIZER.get_or_init(|| {
        Symbolizer::with_options(symbol_resolver::Options { max_cached_files: 1, ..Default::default() })
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, input)) = data.split_first() else { return };
    match mode % 3 {
        0 => {
            let kallsyms = Kallsyms::parse(input);
            for addr in addresses(input) {
                let _ = kallsyms.find(addr);
            }
            let first = kallsyms.symbols().next().map(|s| s.name.to_owned());
            if let Some(name) = &first {
                let _ = kallsyms.address_of(name);
            }
            let functions = KernelFunctions::new(kallsyms, Err("not read".into()));
            for name in ["tcp_retransmit_skb", "tcp_v4_rcv", "do_exit", ""] {
                let lookup = functions.lookup(name);
                let _ = (lookup.exact(), lookup.attach_target());
            }
            if let Some(name) = first {
                let _ = functions.lookup(&name).attach_target();
            }
        }
        1 => {
            // The symbolizer reads files: each input is written to a fresh
            // one (its cache is keyed by inode and mtime).
            let dir = std::env::temp_dir().join(format!("kscope-fuzz-symbols-{}", std::process::id()));
            let _ = std::fs::create_dir_all(&dir);
            static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
            let path = dir.join(format!("input-{}", N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)));
            if let Ok(mut file) = std::fs::File::create(&path) {
                if file.write_all(input).is_ok() {
                    let addrs = addresses(input);
                    let results = symbolizer().symbolize(&Source::Elf(Elf { path: path.clone() }), &addrs);
                    assert_eq!(results.len(), addrs.len(), "one answer per address");
                }
            }
            let _ = std::fs::remove_file(&path);
        }
        _ => {
            let text = String::from_utf8_lossy(input);
            let format = TracepointFormat::parse("fuzz:input", &text);
            for field in ["skbaddr", "location", "reason", "protocol", "skaddr"] {
                let _ = format.offset(field);
            }
            let reasons = DropReasons::parse(&text);
            for reason in [0, 2, 3, u32::MAX] {
                let _ = reasons.name(reason);
            }
        }
    }
});
