//! Socket payloads: the leading bytes of each send and receive on TCP and
//! UDP sockets. Programs: ebpf-probes/programs/src/socket_data.rs.

use super::{Attach, FormSpec, HookForm, ProgramSpec, SensorSpec};

/// fentry and kprobe first, as measured: `cargo xtask bench`, BPF run time
/// of all the sensor's programs per wget→httpd request (both ends, plus the
/// file and pipe I/O of the guest's shell for the tracepoint form) on Debian
/// 6.1 / 6.12 under QEMU: fentry 520 / 394 us, kprobe 509 / 490 us,
/// tracepoint 746 / 648 us. The kernel-function forms fire only for TCP and
/// UDP sends and receives, where the syscall tracepoints fire for every read and write of
/// every file and pipe on the host (each costing an fd lookup before it
/// can tell it is not a socket). From 6.5 they also see bytes sent by
/// sendfile and splice, which reach `tcp_sendmsg` as kernel pages (counted,
/// not captured); before, those go through `tcp_sendpage`, hooked where the
/// kernel has it. The tracepoint form is what kernels without kprobes or
/// fentry (this repository's CI host) run.
pub static SENSOR: SensorSpec = SensorSpec {
    name: "socket_data",
    description: "leading bytes of TCP and UDP sends and receives",
    counter_slot: kscope_common::counter_slot::DATA_OUT,
    table_full_slot: Some(kscope_common::counter_slot::DATA_INFLIGHT_FULL),
    unreported_slot: Some(kscope_common::counter_slot::DATA_MESSAGES_BEYOND_BATCH),
    forms: &[
        FormSpec {
            form: HookForm::Fentry,
            programs: &[
                ProgramSpec { program: "data_tcp_send_fe", attach: Attach::Fentry("tcp_sendmsg") },
                ProgramSpec { program: "data_tcp_send_fx", attach: Attach::Fexit("tcp_sendmsg") },
                ProgramSpec { program: "data_tcp_recv_fe", attach: Attach::Fentry("tcp_recvmsg") },
                ProgramSpec { program: "data_tcp_recv_fx", attach: Attach::Fexit("tcp_recvmsg") },
                ProgramSpec { program: "data_udp_send_fe", attach: Attach::Fentry("udp_sendmsg") },
                ProgramSpec { program: "data_udp_send_fx", attach: Attach::Fexit("udp_sendmsg") },
                ProgramSpec { program: "data_udp_recv_fe", attach: Attach::Fentry("udp_recvmsg") },
                ProgramSpec { program: "data_udp_recv_fx", attach: Attach::Fexit("udp_recvmsg") },
                ProgramSpec { program: "data_udp6_send_fe", attach: Attach::Fentry("udpv6_sendmsg") },
                ProgramSpec { program: "data_udp6_send_fx", attach: Attach::Fexit("udpv6_sendmsg") },
                ProgramSpec { program: "data_udp6_recv_fe", attach: Attach::Fentry("udpv6_recvmsg") },
                ProgramSpec { program: "data_udp6_recv_fx", attach: Attach::Fexit("udpv6_recvmsg") },
            ],
            // Gone in 6.5, where sendfile reaches tcp_sendmsg.
            optional: &[
                ProgramSpec { program: "data_tcp_sendpage_fe", attach: Attach::Fentry("tcp_sendpage") },
                ProgramSpec { program: "data_tcp_sendpage_fx", attach: Attach::Fexit("tcp_sendpage") },
            ],
            needs_struct_offsets: true,
            without_btf: "",
        },
        FormSpec {
            form: HookForm::Kprobe,
            programs: &[
                ProgramSpec { program: "data_tcp_send_kp", attach: Attach::Kprobe("tcp_sendmsg") },
                ProgramSpec { program: "data_tcp_send_krp", attach: Attach::Kretprobe("tcp_sendmsg") },
                ProgramSpec { program: "data_tcp_recv_kp", attach: Attach::Kprobe("tcp_recvmsg") },
                ProgramSpec { program: "data_tcp_recv_krp", attach: Attach::Kretprobe("tcp_recvmsg") },
                ProgramSpec { program: "data_udp_send_kp", attach: Attach::Kprobe("udp_sendmsg") },
                ProgramSpec { program: "data_udp_send_krp", attach: Attach::Kretprobe("udp_sendmsg") },
                ProgramSpec { program: "data_udp_recv_kp", attach: Attach::Kprobe("udp_recvmsg") },
                ProgramSpec { program: "data_udp_recv_krp", attach: Attach::Kretprobe("udp_recvmsg") },
                ProgramSpec { program: "data_udp6_send_kp", attach: Attach::Kprobe("udpv6_sendmsg") },
                ProgramSpec { program: "data_udp6_send_krp", attach: Attach::Kretprobe("udpv6_sendmsg") },
                ProgramSpec { program: "data_udp6_recv_kp", attach: Attach::Kprobe("udpv6_recvmsg") },
                ProgramSpec { program: "data_udp6_recv_krp", attach: Attach::Kretprobe("udpv6_recvmsg") },
            ],
            optional: &[
                ProgramSpec { program: "data_tcp_sendpage_kp", attach: Attach::Kprobe("tcp_sendpage") },
                ProgramSpec { program: "data_tcp_sendpage_krp", attach: Attach::Kretprobe("tcp_sendpage") },
            ],
            needs_struct_offsets: true,
            without_btf: "",
        },
        FormSpec {
            form: HookForm::Tracepoint,
            programs: &[
                ProgramSpec { program: "data_read_enter", attach: Attach::Tracepoint("syscalls", "sys_enter_read") },
                ProgramSpec { program: "data_read_exit", attach: Attach::Tracepoint("syscalls", "sys_exit_read") },
                ProgramSpec { program: "data_write_enter", attach: Attach::Tracepoint("syscalls", "sys_enter_write") },
                ProgramSpec { program: "data_write_exit", attach: Attach::Tracepoint("syscalls", "sys_exit_write") },
                ProgramSpec { program: "data_readv_enter", attach: Attach::Tracepoint("syscalls", "sys_enter_readv") },
                ProgramSpec { program: "data_readv_exit", attach: Attach::Tracepoint("syscalls", "sys_exit_readv") },
                ProgramSpec {
                    program: "data_writev_enter",
                    attach: Attach::Tracepoint("syscalls", "sys_enter_writev"),
                },
                ProgramSpec { program: "data_writev_exit", attach: Attach::Tracepoint("syscalls", "sys_exit_writev") },
                ProgramSpec {
                    program: "data_sendto_enter",
                    attach: Attach::Tracepoint("syscalls", "sys_enter_sendto"),
                },
                ProgramSpec { program: "data_sendto_exit", attach: Attach::Tracepoint("syscalls", "sys_exit_sendto") },
                ProgramSpec {
                    program: "data_recvfrom_enter",
                    attach: Attach::Tracepoint("syscalls", "sys_enter_recvfrom"),
                },
                ProgramSpec {
                    program: "data_recvfrom_exit",
                    attach: Attach::Tracepoint("syscalls", "sys_exit_recvfrom"),
                },
                ProgramSpec {
                    program: "data_sendmsg_enter",
                    attach: Attach::Tracepoint("syscalls", "sys_enter_sendmsg"),
                },
                ProgramSpec {
                    program: "data_sendmsg_exit",
                    attach: Attach::Tracepoint("syscalls", "sys_exit_sendmsg"),
                },
                ProgramSpec {
                    program: "data_recvmsg_enter",
                    attach: Attach::Tracepoint("syscalls", "sys_enter_recvmsg"),
                },
                ProgramSpec {
                    program: "data_recvmsg_exit",
                    attach: Attach::Tracepoint("syscalls", "sys_exit_recvmsg"),
                },
                ProgramSpec {
                    program: "data_sendmmsg_enter",
                    attach: Attach::Tracepoint("syscalls", "sys_enter_sendmmsg"),
                },
                ProgramSpec {
                    program: "data_sendmmsg_exit",
                    attach: Attach::Tracepoint("syscalls", "sys_exit_sendmmsg"),
                },
                ProgramSpec {
                    program: "data_recvmmsg_enter",
                    attach: Attach::Tracepoint("syscalls", "sys_enter_recvmmsg"),
                },
                ProgramSpec {
                    program: "data_recvmmsg_exit",
                    attach: Attach::Tracepoint("syscalls", "sys_exit_recvmmsg"),
                },
                ProgramSpec {
                    program: "data_sendfile_enter",
                    attach: Attach::Tracepoint("syscalls", "sys_enter_sendfile64"),
                },
                ProgramSpec {
                    program: "data_sendfile_exit",
                    attach: Attach::Tracepoint("syscalls", "sys_exit_sendfile64"),
                },
            ],
            optional: &[],
            needs_struct_offsets: true,
            without_btf: "",
        },
    ],
};
