//! What the running kernel offers kscope: the kprobe PMU, tracefs and its
//! tracepoints, BTF (struct offsets, fentry targets), kallsyms, BPF run-time
//! statistics. Gathered once at start; the sensors decide from it.

pub mod btf;
pub mod tracefs;

use std::{
    collections::{BTreeMap, BTreeSet},
    path::Path,
};

use kscope_common::{KernelOffsets, TracepointLayout};

use self::{btf::KernelBtf, tracefs::Tracefs};

const KPROBE_PMU: &str = "/sys/bus/event_source/devices/kprobe/type";

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
    /// Of the functions asked about (kprobe targets), whether a kprobe can
    /// use each by its plain name, and if not why: absent (inlined),
    /// present only as a compiler clone (`.isra.0`), or not traceable.
    pub kprobe_functions: BTreeMap<String, Result<(), String>>,
    /// The same functions as this kernel has them (`kscope probe`'s table),
    /// from the one reading of kallsyms the verdicts above come from.
    pub functions: Vec<FunctionReport>,
    pub offsets: KernelOffsets,
    /// Members whose offsets could not be resolved, one message each.
    pub offset_errors: Vec<String>,
    pub tracepoint_layout: TracepointLayout,
    /// Records whose layout could not be read: (`category:name`, why). A
    /// tracepoint form is refused only for errors about its own
    /// tracepoints (`syscalls:*` share one layout).
    pub layout_errors: Vec<(String, String)>,
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
                let errors =
                    errors.iter().map(|e| (e.tracepoint().unwrap_or_default().to_owned(), e.to_string())).collect();
                (Ok(()), present, layout, errors)
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

        let functions = function_reports(&wanted.functions, &btf_functions);
        Self {
            release,
            kprobes,
            tracefs,
            tracepoints,
            btf,
            btf_functions,
            kprobe_functions: kprobe_functions(&functions),
            functions,
            offsets,
            offset_errors,
            tracepoint_layout,
            layout_errors,
        }
    }
}

/// Whether a kprobe can go on each reported function by its plain name, as
/// the symbol resolver's attach-point lookup saw this kernel's kallsyms.
fn kprobe_functions(reports: &[FunctionReport]) -> BTreeMap<String, Result<(), String>> {
    reports.iter().map(|r| (r.function.clone(), r.kprobe_unusable.clone().map_or(Ok(()), Err))).collect()
}

/// Whether a kprobe can go on a function by its plain name. ftrace's list
/// does not bind kprobes (they need no ftrace entry), so only presence
/// under the plain name matters.
fn kprobe_verdict(lookup: &symbol_resolver::FunctionLookup) -> Result<(), String> {
    let name = &lookup.name;
    match lookup.exact() {
        Some(_) => Ok(()),
        None if lookup.exists() => {
            let names: Vec<&str> = lookup.candidates.iter().map(|c| c.name.as_str()).collect();
            Err(format!("{name} is only in this kernel as {} (a compiler clone)", names.join(", ")))
        }
        None => Err(format!("{name} is not in this kernel (inlined or absent)")),
    }
}

/// One kernel function a kprobe or fentry form hooks, as this kernel has
/// it: what `kscope probe` shows (and prints as JSON), so a missing hook is
/// explained before anything is loaded.
pub use kscope_schema::FunctionReport;

/// Reports on every function the sensors' forms hook; `btf_functions` are
/// those of them the kernel's BTF has.
fn function_reports(wanted: &BTreeSet<String>, btf_functions: &BTreeSet<String>) -> Vec<FunctionReport> {
    use symbol_resolver::{KernelFunctions, Traceable};
    let functions = KernelFunctions::load_default().map_err(|e| e.to_string());
    wanted
        .iter()
        .map(|name| {
            let (kallsyms_names, traceable, kprobe_unusable) = match &functions {
                Ok(functions) => {
                    let lookup = functions.lookup(name);
                    let traceable = lookup.exact().and_then(|c| match c.traceable {
                        Traceable::Yes => Some(true),
                        Traceable::No => Some(false),
                        Traceable::Unknown { .. } => None,
                    });
                    let names = lookup.candidates.iter().map(|c| c.name.clone()).collect();
                    let traceable = if lookup.exists() { traceable } else { Some(false) };
                    (names, traceable, kprobe_verdict(&lookup).err())
                }
                Err(why) => (Vec::new(), None, Some(format!("cannot read kallsyms: {why}"))),
            };
            FunctionReport {
                function: name.clone(),
                kallsyms_names,
                traceable,
                btf: btf_functions.contains(name),
                kprobe_unusable,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kprobe_targets_are_judged_by_this_kernels_kallsyms() {
        let kallsyms = std::fs::read_to_string("/proc/kallsyms").unwrap();
        let names: BTreeSet<&str> = kallsyms.lines().filter_map(|l| l.split_whitespace().nth(2)).collect();
        // A function this kernel has only as a compiler clone.
        let clone = names
            .iter()
            .filter_map(|n| n.strip_suffix(".isra.0"))
            .find(|stem| !names.contains(stem) && !stem.contains('.'))
            .expect("some .isra.0 clone without its plain name");
        let wanted: BTreeSet<String> =
            ["tcp_v4_rcv", "kscope_no_such_function", clone].iter().map(|s| (*s).to_owned()).collect();
        let verdicts = kprobe_functions(&function_reports(&wanted, &BTreeSet::new()));
        assert_eq!(verdicts["tcp_v4_rcv"], Ok(()));
        assert_eq!(
            verdicts["kscope_no_such_function"],
            Err("kscope_no_such_function is not in this kernel (inlined or absent)".to_owned())
        );
        let why = verdicts[clone].clone().unwrap_err();
        assert!(why.starts_with(&format!("{clone} is only in this kernel as {clone}.isra.0")), "{why}");
    }
}
