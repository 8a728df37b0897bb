//! What the running kernel offers kscope: the kprobe PMU, tracefs and its
//! tracepoints, BTF (struct offsets, fentry targets), kallsyms, BPF run-time
//! statistics. Gathered once at start; the sensors decide from it.

pub mod btf;
pub mod tracefs;

use std::{collections::BTreeSet, path::Path};

use kscope_common::{KernelOffsets, TracepointLayout};

use self::{btf::KernelBtf, tracefs::Tracefs};

const KPROBE_PMU: &str = "/sys/bus/event_source/devices/kprobe/type";
const KALLSYMS: &str = "/proc/kallsyms";

/// The facts the hook-form choice depends on, as plain data so the choice
/// can be tested from a made-up kernel.
#[derive(Debug, Clone)]
pub struct KernelFeatures {
    pub release: String,
    /// `Err` says why kprobes cannot work (e.g. CONFIG_KPROBES not set).
    pub kprobes: Result<(), String>,
    pub tracefs: Result<(), String>,
    /// Tracepoints present, as `category:name`, among those asked about.
    pub tracepoints: BTreeSet<String>,
    pub btf: Result<(), String>,
    /// Functions present in the kernel's BTF (fentry targets), among those asked about.
    pub btf_functions: BTreeSet<String>,
    /// Functions present in kallsyms (kprobe targets), among those asked about.
    pub kallsyms_functions: BTreeSet<String>,
    pub offsets: KernelOffsets,
    /// Members whose offsets could not be resolved, one message each.
    pub offset_errors: Vec<String>,
    pub tracepoint_layout: TracepointLayout,
    pub layout_errors: Vec<String>,
}

/// What the sensors will ask about, so detection reads only that.
#[derive(Debug, Default)]
pub struct Wanted {
    pub functions: BTreeSet<String>,
    pub tracepoints: BTreeSet<(String, String)>,
}

impl KernelFeatures {
    pub fn detect(wanted: &Wanted) -> Self {
        let release =
            std::fs::read_to_string("/proc/sys/kernel/osrelease").map(|s| s.trim().to_owned()).unwrap_or_default();
        let kprobes = if Path::new(KPROBE_PMU).exists() {
            Ok(())
        } else {
            Err("CONFIG_KPROBES not set (no kprobe PMU at /sys/bus/event_source/devices/kprobe)".to_owned())
        };

        let (tracefs, tracepoints, tracepoint_layout, layout_errors) = match Tracefs::find() {
            Ok(fs) => {
                let present = wanted
                    .tracepoints
                    .iter()
                    .filter(|(cat, name)| fs.has(cat, name))
                    .map(|(cat, name)| format!("{cat}:{name}"))
                    .collect();
                let (layout, errors) = fs.layout();
                (Ok(()), present, layout, errors.iter().map(ToString::to_string).collect())
            }
            Err(err) => (Err(err.to_string()), BTreeSet::new(), TracepointLayout::missing(), Vec::new()),
        };

        let (btf, btf_functions, offsets, offset_errors) = match KernelBtf::from_file(Path::new(btf::VMLINUX_BTF)) {
            Ok(kbtf) => {
                let functions = wanted.functions.iter().filter(|f| kbtf.has_function(f)).cloned().collect();
                let (offsets, errors) = kbtf.kernel_offsets();
                (Ok(()), functions, offsets, errors.iter().map(ToString::to_string).collect())
            }
            Err(err) => (
                Err(format!("no kernel BTF ({err})")),
                BTreeSet::new(),
                KernelOffsets::missing(),
                vec!["no kernel BTF".to_owned()],
            ),
        };

        Self {
            release,
            kprobes,
            tracefs,
            tracepoints,
            btf,
            btf_functions,
            kallsyms_functions: kallsyms_functions(&wanted.functions),
            offsets,
            offset_errors,
            tracepoint_layout,
            layout_errors,
        }
    }
}

/// Which of `wanted` are text symbols in /proc/kallsyms (so not inlined
/// away and kprobe-able). Module symbols carry a `[module]` suffix; a
/// function name may also carry a compiler suffix (`.isra.0`), which
/// kprobes cannot use by the plain name, so those do not count.
fn kallsyms_functions(wanted: &BTreeSet<String>) -> BTreeSet<String> {
    let Ok(text) = std::fs::read_to_string(KALLSYMS) else {
        return BTreeSet::new();
    };
    text.lines()
        .filter_map(|line| {
            let mut parts = line.split_whitespace();
            let _addr = parts.next()?;
            let kind = parts.next()?;
            let name = parts.next()?;
            matches!(kind, "t" | "T").then_some(name)
        })
        .filter(|name| wanted.contains(*name))
        .map(str::to_owned)
        .collect()
}
