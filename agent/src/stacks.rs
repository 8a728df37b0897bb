//! Kernel addresses → `function+0xoffset` text, for retransmit stacks and
//! drop locations. Sits after decode: events carry raw addresses from the
//! kernel, and only the text leaves kscope (a raw kernel address in a log
//! or a collector would undo KASLR for whoever reads it).

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use symbol_resolver::{Kernel, Source, Symbolized, Symbolizer};

use crate::decode::Event;

/// Distinct addresses remembered; a retransmit storm repeats a few dozen.
const CACHE_MAX: usize = 16384;

/// An address that does not resolve may be a module's or a BPF program's
/// loaded after kallsyms was read: it is read again, at most this often.
const REFRESH_AFTER: Duration = Duration::from_secs(10);

/// Shown for a frame kallsyms cannot place (BPF trampolines on old
/// kernels, addresses of an unloaded module).
pub const UNKNOWN_FRAME: &str = "[unknown]";

pub struct KernelStacks {
    symbolizer: Symbolizer,
    source: Source,
    cache: HashMap<u64, Arc<str>>,
    unknown: Arc<str>,
    refresh_after: Duration,
    /// When kallsyms was last (re-)read; `None` before the first read.
    read_at: Option<Instant>,
}

impl Default for KernelStacks {
    fn default() -> Self {
        Self::new(Kernel::default())
    }
}

impl KernelStacks {
    pub fn new(kernel: Kernel) -> Self {
        Self::with_refresh(kernel, REFRESH_AFTER)
    }

    fn with_refresh(kernel: Kernel, refresh_after: Duration) -> Self {
        Self {
            refresh_after,
            read_at: None,
            // Names only: a stack line per frame is what people read, and
            // DWARF for vmlinux is rarely installed.
            symbolizer: Symbolizer::with_options(symbol_resolver::Options {
                code_info: false,
                inlined: false,
                ..Default::default()
            }),
            source: Source::Kernel(kernel),
            cache: HashMap::new(),
            unknown: Arc::from(UNKNOWN_FRAME),
        }
    }

    /// Fills the frames of the retransmits among `events`, in one batch.
    pub fn symbolize_events(&mut self, events: &mut [Event]) {
        self.resolve_missing(events.iter().flat_map(|e| match e {
            Event::Retransmit(r) => r.stack.as_slice(),
            _ => &[],
        }));
        for event in events {
            if let Event::Retransmit(r) = event {
                r.frames = r.stack.iter().map(|a| self.cached(*a)).collect();
            }
        }
    }

    /// One address's text.
    pub fn frame(&mut self, addr: u64) -> Arc<str> {
        self.resolve_missing(&[addr]);
        self.cached(addr)
    }

    /// Addresses → text, batched and cached.
    pub fn frames(&mut self, addrs: &[u64]) -> Vec<Arc<str>> {
        self.resolve_missing(addrs);
        addrs.iter().map(|a| self.cached(*a)).collect()
    }

    /// Resolves, in one batch, those of `addrs` not in the cache.
    fn resolve_missing<'a>(&mut self, addrs: impl IntoIterator<Item = &'a u64>) {
        let missing: Vec<u64> = addrs.into_iter().copied().filter(|a| !self.cache.contains_key(a)).collect();
        if !missing.is_empty() {
            self.resolve(&missing);
        }
    }

    fn cached(&self, addr: u64) -> Arc<str> {
        self.cache.get(&addr).cloned().unwrap_or_else(|| Arc::clone(&self.unknown))
    }

    fn resolve(&mut self, addrs: &[u64]) {
        if self.cache.len() + addrs.len() > CACHE_MAX {
            self.cache.clear();
        }
        let mut results = self.symbolizer.symbolize(&self.source, addrs);
        let now = Instant::now();
        let stale = self.read_at.is_some_and(|at| now.duration_since(at) >= self.refresh_after);
        if stale && results.iter().any(|r| matches!(r, Symbolized::Unknown(_))) {
            self.symbolizer.refresh_kernel();
            // Everything cached may have moved (a module unloaded and another
            // loaded in its place).
            self.cache.clear();
            results = self.symbolizer.symbolize(&self.source, addrs);
            self.read_at = Some(now);
        }
        self.read_at.get_or_insert(now);
        for (addr, result) in addrs.iter().zip(results) {
            let text: Arc<str> = match result {
                Symbolized::Sym(sym) => match &sym.module {
                    Some(module) => Arc::from(format!("{sym} [{module}]")),
                    None => Arc::from(sym.to_string()),
                },
                // Not cached: a later read of kallsyms may have it.
                Symbolized::Unknown(reason) => {
                    tracing::debug!(addr = format_args!("{addr:#x}"), %reason, "kernel address not symbolized");
                    continue;
                }
            };
            self.cache.insert(*addr, text);
        }
    }
}

/// The function of a frame's text: `tcp_v4_rcv+0x2a5` → `tcp_v4_rcv`.
pub fn function_of(frame: &str) -> &str {
    frame.split(['+', ' ']).next().unwrap_or(frame)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_match_kallsyms() {
        let kallsyms = std::fs::read_to_string("/proc/kallsyms").unwrap();
        let addr_of = |name: &str| {
            kallsyms
                .lines()
                .find_map(|l| {
                    let mut f = l.split_whitespace();
                    let (a, _, n) = (f.next()?, f.next()?, f.next()?);
                    (n == name && f.next().is_none()).then(|| u64::from_str_radix(a, 16).ok()).flatten()
                })
                .unwrap()
        };
        let rcv = addr_of("tcp_v4_rcv");
        let rtx = addr_of("tcp_retransmit_skb");
        let mut stacks = KernelStacks::default();
        let frames = stacks.frames(&[rcv + 0x10, rtx, 1]);
        assert_eq!(&*frames[0], "tcp_v4_rcv+0x10");
        assert_eq!(&*frames[1], "tcp_retransmit_skb+0x0");
        assert_eq!(&*frames[2], UNKNOWN_FRAME);
        assert_eq!(function_of(&frames[0]), "tcp_v4_rcv");
        assert_eq!(&*stacks.frame(rcv + 0x10), "tcp_v4_rcv+0x10");
    }

    /// A module (or BPF program) loaded after kallsyms was read: its
    /// addresses resolve once kallsyms is read again.
    #[test]
    fn kallsyms_is_read_again_for_addresses_it_did_not_have() {
        let dir = std::env::temp_dir().join(format!("kscope-stacks-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("kallsyms");
        std::fs::write(&path, "ffffffff81000000 T _stext\nffffffff81000100 T core_fn\nffffffff81000200 B _end\n")
            .unwrap();
        let kernel = Kernel {
            kallsyms: symbol_resolver::FileSpec::Path(path.clone()),
            vmlinux: symbol_resolver::FileSpec::Disabled,
            kaslr_offset: Some(0),
        };
        let mut stacks = KernelStacks::with_refresh(kernel, Duration::ZERO);
        assert_eq!(&*stacks.frame(0xffff_ffff_8100_0104), "core_fn+0x4");
        assert_eq!(&*stacks.frame(0xffff_ffff_c000_0010), UNKNOWN_FRAME);
        std::fs::write(
            &path,
            "ffffffff81000000 T _stext\nffffffff81000100 T core_fn\nffffffff81000200 B _end\n\
             ffffffffc0000000 t mod_fn\t[kscope_test]\nffffffffc0000100 t mod_end\t[kscope_test]\n",
        )
        .unwrap();
        assert_eq!(&*stacks.frame(0xffff_ffff_c000_0010), "mod_fn+0x10 [kscope_test]");
        assert_eq!(&*stacks.frame(0xffff_ffff_8100_0104), "core_fn+0x4");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
