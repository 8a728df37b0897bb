//! TCP connection lifecycle: connect (client), accept (server), close, with
//! addresses, ports, bytes and duration. Programs: ebpf-probes/programs/src/tcp.rs.

use super::{Attach, FormSpec, HookForm, ProgramSpec, SensorSpec};

/// Forms in order of measured cost and stability. `cargo xtask bench`, BPF
/// run time of all the sensor's programs per connection on Debian 6.1 /
/// 6.12 under QEMU, two runs: tracepoint 448, 199 / 349, 175 us; fentry 383,
/// 233 / 284, 176 us; kprobe 393, 193 / 326, 171 us: within the emulator's
/// noise of each other, their ranking flipped between runs. Stability
/// decides: only the tracepoint form sees an accept() that was already
/// blocked when kscope attached (kretprobe and fexit miss it; README, "Known
/// limits"), then fentry (no int3 trap per hit), then kprobe.
pub static SENSOR: SensorSpec = SensorSpec {
    name: "tcp",
    description: "TCP connect, accept and close",
    counter_slot: kscope_common::counter_slot::TCP_OUT,
    table_full_slot: Some(kscope_common::counter_slot::TCP_TABLE_FULL),
    unreported_slot: None,
    forms: &[
        FormSpec {
            form: HookForm::Tracepoint,
            programs: &[
                ProgramSpec { program: "tcp_state_tp", attach: Attach::Tracepoint("sock", "inet_sock_set_state") },
                ProgramSpec { program: "tcp_accept4_tp", attach: Attach::Tracepoint("syscalls", "sys_exit_accept4") },
                ProgramSpec { program: "tcp_accept_tp", attach: Attach::Tracepoint("syscalls", "sys_exit_accept") },
            ],
            optional: &[],
            needs_struct_offsets: false,
            without_btf: "without kernel BTF, accept events and byte counts are not reported",
        },
        FormSpec {
            form: HookForm::Fentry,
            programs: &[
                ProgramSpec { program: "tcp_connect_fentry", attach: Attach::Fentry("tcp_connect") },
                ProgramSpec { program: "tcp_set_state_fentry", attach: Attach::Fentry("tcp_set_state") },
                ProgramSpec { program: "tcp_accept_fexit", attach: Attach::Fexit("inet_csk_accept") },
            ],
            optional: &[],
            needs_struct_offsets: true,
            without_btf: "",
        },
        FormSpec {
            form: HookForm::Kprobe,
            programs: &[
                ProgramSpec { program: "tcp_connect_kprobe", attach: Attach::Kprobe("tcp_connect") },
                ProgramSpec { program: "tcp_set_state_kprobe", attach: Attach::Kprobe("tcp_set_state") },
                ProgramSpec { program: "tcp_accept_kretprobe", attach: Attach::Kretprobe("inet_csk_accept") },
            ],
            optional: &[],
            needs_struct_offsets: true,
            without_btf: "",
        },
    ],
};
