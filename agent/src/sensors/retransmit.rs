//! TCP retransmits with the kernel stack that sent them again.
//! Programs: ebpf-probes/programs/src/retransmit.rs.

use super::{Attach, FormSpec, HookForm, ProgramSpec, SensorSpec};

/// The tracepoint first: it is stable ABI and reports only segments that
/// did go out again; the kprobe and fentry forms see every attempt on
/// `tcp_retransmit_skb`, including ones the kernel then refused (a full
/// qdisc, a socket being torn down).
pub static SENSOR: SensorSpec = SensorSpec {
    name: "retransmit",
    description: "TCP retransmits with the kernel stack",
    counter_slot: kscope_common::counter_slot::RETRANSMIT_OUT,
    table_full_slot: None,
    unreported_slot: None,
    forms: &[
        FormSpec {
            form: HookForm::Tracepoint,
            programs: &[ProgramSpec {
                program: "tcp_retransmit_tp",
                attach: Attach::Tracepoint("tcp", "tcp_retransmit_skb"),
            }],
            optional: &[],
            needs_struct_offsets: false,
            without_btf: "without kernel BTF, retransmits are not joined to their process",
        },
        FormSpec {
            form: HookForm::Fentry,
            programs: &[ProgramSpec { program: "tcp_retransmit_fentry", attach: Attach::Fentry("tcp_retransmit_skb") }],
            optional: &[],
            needs_struct_offsets: true,
            without_btf: "",
        },
        FormSpec {
            form: HookForm::Kprobe,
            programs: &[ProgramSpec { program: "tcp_retransmit_kprobe", attach: Attach::Kprobe("tcp_retransmit_skb") }],
            optional: &[],
            needs_struct_offsets: true,
            without_btf: "",
        },
    ],
};
