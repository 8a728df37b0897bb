//! Packet drops by reason and kernel location, counted in the kernel.
//! Program: ebpf-probes/programs/src/drops.rs; the counts are read by
//! `crate::drops`.

use super::{Attach, FormSpec, HookForm, ProgramSpec, SensorSpec};

/// Tracepoint only: `skb:kfree_skb` carries the drop reason and the
/// caller's address, which a probe on `kfree_skb_reason` would have to
/// dig out of registers and the stack, differently per release.
pub static SENSOR: SensorSpec = SensorSpec {
    name: "drops",
    description: "packet drops by reason and kernel location",
    // Its counts are drops, not events: `crate::drops` reports them.
    counter_slot: kscope_common::counter_slot::NO_EVENTS,
    table_full_slot: None,
    unreported_slot: None,
    forms: &[FormSpec {
        form: HookForm::Tracepoint,
        programs: &[ProgramSpec { program: "packet_drop_tp", attach: Attach::Tracepoint("skb", "kfree_skb") }],
        optional: &[],
        needs_struct_offsets: false,
        without_btf: "",
    }],
};
