//! kscope's kernel programs. One module per sensor; within a sensor, each hook
//! form (kprobe, fentry, tracepoint) is a thin entry point over code the forms
//! share, so the three produce the same events.
#![no_std]
#![no_main]

mod drops;
mod emit;
mod kernel;
mod process;
mod retransmit;
mod profile;
mod socket_data;
mod tcp;

// fentry/fexit programs and the GPL-only helpers need a GPL-compatible licence.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
