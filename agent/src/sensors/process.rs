//! Process lifecycle: exec (pid, ppid, comm, filename, cgroup) and exit
//! (exit code or signal, lifetime). Programs: ebpf-probes/programs/src/process.rs.

use super::{Attach, FormSpec, HookForm, ProgramSpec, SensorSpec};

/// Forms in order of measured cost per spawn (`cargo xtask bench`, BPF
/// run time of all the sensor's programs, Debian 6.1 / 6.12 under QEMU):
/// fentry 193 / 150 us, tracepoint 205 / 172 us, kprobe 258 / 234 us (the
/// kprobe form needs an entry and a return probe per exec). TCG inflates
/// the absolute figures; the order held on both kernels.
pub static SENSOR: SensorSpec = SensorSpec {
    name: "process",
    description: "process exec and exit",
    counter_slot: kscope_common::counter_slot::PROCESS_OUT,
    table_full_slot: None,
    forms: &[
        FormSpec {
            form: HookForm::Fentry,
            programs: &[
                ProgramSpec { program: "process_exec_fexit", attach: Attach::Fexit("bprm_execve") },
                ProgramSpec { program: "process_exit_fentry", attach: Attach::Fentry("do_exit") },
            ],
            needs_struct_offsets: true,
            without_btf: "",
        },
        FormSpec {
            form: HookForm::Tracepoint,
            programs: &[
                ProgramSpec { program: "process_exec_tp", attach: Attach::Tracepoint("sched", "sched_process_exec") },
                ProgramSpec { program: "process_exit_tp", attach: Attach::Tracepoint("sched", "sched_process_exit") },
            ],
            needs_struct_offsets: false,
            without_btf: "without kernel BTF, ppid, exit code and lifetime are reported as 0",
        },
        FormSpec {
            form: HookForm::Kprobe,
            programs: &[
                ProgramSpec { program: "process_exec_kprobe", attach: Attach::Kprobe("bprm_execve") },
                ProgramSpec { program: "process_exec_kretprobe", attach: Attach::Kretprobe("bprm_execve") },
                ProgramSpec { program: "process_exit_kprobe", attach: Attach::Kprobe("do_exit") },
            ],
            needs_struct_offsets: true,
            without_btf: "",
        },
    ],
};
