//! Process lifecycle: exec (pid, ppid, comm, filename, cgroup) and exit
//! (exit code or signal, lifetime). Programs: ebpf-probes/programs/src/process.rs.

use super::{Attach, FormSpec, HookForm, ProgramSpec, SensorSpec};

/// Forms in order of measured cost and stability. `cargo xtask bench`, BPF
/// run time of all the sensor's programs per spawn on Debian 6.1 / 6.12
/// under QEMU, two runs: tracepoint 205, 91 / 172, 74 us; fentry 193, 103 /
/// 150, 75 us; kprobe 258, 137 / 234, 108 us. Tracepoint and fentry are
/// within the emulator's noise of each other; the tracepoints are a stable
/// interface while `bprm_execve` changed its prototype between 6.1 and 6.12,
/// so tracepoint leads. kprobe needs an entry and a return probe per exec
/// and is last in both runs.
pub static SENSOR: SensorSpec = SensorSpec {
    name: "process",
    description: "process exec and exit",
    counter_slot: kscope_common::counter_slot::PROCESS_OUT,
    table_full_slot: None,
    unreported_slot: None,
    forms: &[
        FormSpec {
            form: HookForm::Tracepoint,
            programs: &[
                ProgramSpec { program: "process_exec_tp", attach: Attach::Tracepoint("sched", "sched_process_exec") },
                ProgramSpec { program: "process_exit_tp", attach: Attach::Tracepoint("sched", "sched_process_exit") },
            ],
            optional: &[],
            needs_struct_offsets: false,
            without_btf: "without kernel BTF, ppid, exit code and lifetime are reported as 0",
        },
        FormSpec {
            form: HookForm::Fentry,
            programs: &[
                ProgramSpec { program: "process_exec_fexit", attach: Attach::Fexit("bprm_execve") },
                ProgramSpec { program: "process_exit_fentry", attach: Attach::Fentry("do_exit") },
            ],
            optional: &[],
            needs_struct_offsets: true,
            without_btf: "",
        },
        FormSpec {
            form: HookForm::Kprobe,
            programs: &[
                ProgramSpec { program: "process_exec_kprobe", attach: Attach::Kprobe("bprm_execve") },
                ProgramSpec { program: "process_exec_kretprobe", attach: Attach::Kretprobe("bprm_execve") },
                ProgramSpec { program: "process_exit_kprobe", attach: Attach::Kprobe("do_exit") },
            ],
            optional: &[],
            needs_struct_offsets: true,
            without_btf: "",
        },
    ],
};
