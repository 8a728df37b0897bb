//! The pure parts of `kscope profile`: durations, frame names, folded stack
//! lines (Brendan Gregg's format, as `stackcollapse-perf.pl` and bcc's
//! `profile -f` write it) and the summary's leaf functions.

use std::collections::BTreeMap;
use std::time::Duration;

use symbol_resolver::{Reason, Symbolized};

/// Kernel frames carry this suffix, as perf's and bcc's folded output do; the
/// flame graph colours them apart from user frames.
pub const KERNEL_SUFFIX: &str = "_[k]";
pub const UNKNOWN: &str = "[unknown]";
pub const MISSED_USER_STACK: &str = "[missed user stack]";
pub const MISSED_KERNEL_STACK: &str = "[missed kernel stack]";

/// `10s`, `500ms`, `2m`, `1h`, `1.5s`, or plain (possibly fractional) seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let value: f64 = number.parse().map_err(|_| format!("{text:?} is not a duration (like 10s, 500ms or 3)"))?;
    let seconds = match unit.trim() {
        "" | "s" => value,
        "ms" => value / 1e3,
        "m" | "min" => value * 60.0,
        "h" => value * 3600.0,
        other => return Err(format!("{text:?}: unknown unit {other:?} (use ms, s, m or h)")),
    };
    let duration = Duration::try_from_secs_f64(seconds).map_err(|e| format!("{text:?}: {e}"))?;
    if duration.is_zero() {
        return Err(format!("{text:?}: the duration must be above zero"));
    }
    Ok(duration)
}

/// A thread name as the folded format's first frame: up to its NUL, with
/// whitespace and `;` replaced (the format splits frames on `;` and the count
/// off at the last whitespace; `stackcollapse-perf.pl` also replaces spaces).
pub fn comm_name(comm: &[u8]) -> String {
    let end = comm.iter().position(|&b| b == 0).unwrap_or(comm.len());
    let name: String = String::from_utf8_lossy(comm.get(..end).unwrap_or_default())
        .chars()
        .map(|c| if c.is_whitespace() || c == ';' || c.is_control() { '_' } else { c })
        .collect();
    if name.is_empty() { UNKNOWN.to_owned() } else { name }
}

/// A symbol name made safe for one frame: `;` separates frames and a line
/// ends the stack, so neither may appear inside one (C++ and Rust names may
/// hold spaces, which the format allows).
pub fn frame_name(name: &str) -> String {
    name.chars()
        .map(|c| match c {
            ';' => ':',
            c if c.is_control() => ' ',
            c => c,
        })
        .collect()
}

/// The last path component: `/usr/lib/libc.so.6` → `libc.so.6`.
fn base_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// The frames one address stands for, outermost first: the function, then
/// any functions inlined into it at that address. An address that did not
/// resolve becomes `[module]` when the module is known (from the reason, or
/// `module` when the caller knows the mapping), else `[unknown]`.
pub fn frames_for(result: &Symbolized, kernel: bool, module: Option<&str>) -> Vec<String> {
    let suffix = if kernel { KERNEL_SUFFIX } else { "" };
    match result {
        Symbolized::Sym(sym) => std::iter::once(sym.name.as_str())
            .chain(sym.inlined.iter().map(|frame| frame.name.as_str()))
            .map(|name| format!("{}{suffix}", frame_name(name)))
            .collect(),
        Symbolized::Unknown(reason) => {
            let from_reason = match reason {
                Reason::NotFileBacked { name } if name.starts_with('[') => Some(name.clone()),
                Reason::OutsideSegments { path, .. }
                | Reason::FileUnreadable { path, .. }
                | Reason::InvalidElf { path, .. } => Some(format!("[{}]", base_name(path))),
                _ => None,
            };
            let name = from_reason
                .or_else(|| module.map(|m| format!("[{}]", base_name(m))))
                .unwrap_or_else(|| UNKNOWN.to_owned());
            vec![format!("{}{suffix}", frame_name(&name))]
        }
    }
}

/// One folded stack: the thread name, the user frames, then the kernel frames,
/// each part outermost first (a sample in a system call reads
/// `comm;main;write;entry_SYSCALL_64_[k];...;ksys_write_[k]`).
pub fn folded_stack(comm: &str, user: &[String], kernel: &[String]) -> String {
    let mut line = String::with_capacity(comm.len() + 32 * (user.len() + kernel.len()));
    line.push_str(comm);
    for frame in user.iter().chain(kernel) {
        line.push(';');
        line.push_str(frame);
    }
    line
}

/// Folded lines, `stack count`, sorted by stack as the Perl tools sort them.
pub fn folded_lines(stacks: &BTreeMap<String, u64>) -> Vec<String> {
    stacks.iter().map(|(stack, count)| format!("{stack} {count}")).collect()
}

/// The innermost frame of a folded stack (the thread name when the stack has
/// no frames).
pub fn leaf(stack: &str) -> &str {
    stack.rsplit(';').next().unwrap_or(stack)
}

/// The `n` leaf functions with the most samples, most first (ties by name).
pub fn top_leaves(stacks: &BTreeMap<String, u64>, n: usize) -> Vec<(String, u64)> {
    let mut by_leaf: BTreeMap<&str, u64> = BTreeMap::new();
    for (stack, count) in stacks {
        *by_leaf.entry(leaf(stack)).or_default() += count;
    }
    let mut leaves: Vec<(String, u64)> = by_leaf.into_iter().map(|(name, count)| (name.to_owned(), count)).collect();
    leaves.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    leaves.truncate(n);
    leaves
}

#[cfg(test)]
mod tests {
    use symbol_resolver::{InlinedFrame, Sym};

    use super::*;

    fn sym(name: &str, module: Option<&str>) -> Symbolized {
        Symbolized::Sym(Sym {
            name: name.into(),
            addr: 0x1000,
            offset: 4,
            size: None,
            module: module.map(str::to_owned),
            code: None,
            inlined: Vec::new(),
        })
    }

    #[test]
    fn durations_take_units_or_plain_seconds() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("0").is_err());
        assert!(parse_duration("0ms").is_err());
        assert!(parse_duration("10 parsecs").is_err());
        assert!(parse_duration("s").is_err());
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn frames_name_functions_modules_or_unknown() {
        assert_eq!(frames_for(&sym("main", Some("/tmp/spin")), false, None), ["main"]);
        assert_eq!(frames_for(&sym("tcp_v4_rcv", None), true, None), ["tcp_v4_rcv_[k]"]);
        // Inlined functions are frames of their own, innermost last.
        let mut inlined = sym("outer", None);
        if let Symbolized::Sym(s) = &mut inlined {
            s.inlined = vec![
                InlinedFrame { name: "mid".into(), code: None },
                InlinedFrame { name: "in;ner".into(), code: None },
            ];
        }
        assert_eq!(frames_for(&inlined, false, None), ["outer", "mid", "in:ner"]);
        let vdso = Symbolized::Unknown(Reason::NotFileBacked { name: "[vdso]".into() });
        assert_eq!(frames_for(&vdso, false, None), ["[vdso]"]);
        let jit = Symbolized::Unknown(Reason::NotFileBacked { name: "anonymous".into() });
        assert_eq!(frames_for(&jit, false, None), ["[unknown]"]);
        let stripped = Symbolized::Unknown(Reason::NoSymbol);
        assert_eq!(frames_for(&stripped, false, Some("/usr/lib/libz.so.1")), ["[libz.so.1]"]);
        assert_eq!(frames_for(&stripped, false, None), ["[unknown]"]);
        assert_eq!(frames_for(&Symbolized::Unknown(Reason::Unmapped), true, None), ["[unknown]_[k]"]);
        let unreadable =
            Symbolized::Unknown(Reason::FileUnreadable { path: "/opt/app/bin/app".into(), error: "gone".into() });
        assert_eq!(frames_for(&unreadable, false, None), ["[app]"]);
    }

    #[test]
    fn stacks_fold_user_then_kernel_with_comm_first() {
        let user = vec!["_start".to_owned(), "main".to_owned(), "kscope_spin_target".to_owned()];
        let kernel =
            vec!["asm_sysvec_apic_timer_interrupt_[k]".to_owned(), "sysvec_apic_timer_interrupt_[k]".to_owned()];
        assert_eq!(
            folded_stack("spin", &user, &kernel),
            "spin;_start;main;kscope_spin_target;asm_sysvec_apic_timer_interrupt_[k];sysvec_apic_timer_interrupt_[k]"
        );
        assert_eq!(folded_stack("kworker/0:1", &[], &kernel[..1]), "kworker/0:1;asm_sysvec_apic_timer_interrupt_[k]");
        assert_eq!(comm_name(b"Web Content\0\0\0\0\0"), "Web_Content");
        assert_eq!(comm_name(b"a;b\0"), "a_b");
        assert_eq!(comm_name(&[0; 16]), "[unknown]");
        assert_eq!(comm_name(b"sixteen-chars-xx"), "sixteen-chars-xx");
    }

    #[test]
    fn summary_counts_leaves_across_stacks() {
        let mut stacks = BTreeMap::new();
        stacks.insert("spin;main;kscope_spin_target".to_owned(), 90);
        stacks.insert("spin;main;other;kscope_spin_target".to_owned(), 5);
        stacks.insert("spin;main;light".to_owned(), 10);
        stacks.insert("spin".to_owned(), 1);
        assert_eq!(top_leaves(&stacks, 2), [("kscope_spin_target".to_owned(), 95), ("light".to_owned(), 10)]);
        assert_eq!(top_leaves(&stacks, 5).len(), 3);
        assert_eq!(folded_lines(&stacks)[0], "spin 1");
    }
}
