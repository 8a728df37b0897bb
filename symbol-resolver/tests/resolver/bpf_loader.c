/* Loads a trivial BPF socket filter named kscope_symtest, so the kernel lists it in
 * /proc/kallsyms as `bpf_prog_<tag>_kscope_symtest [bpf]`: a real module-style symbol on
 * kernels built without modules. Prints "ready" (or "error <errno>") and holds the program
 * until stdin closes. */
#include <errno.h>
#include <linux/bpf.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

int main(void) {
    struct bpf_insn insns[] = {
        {.code = BPF_ALU64 | BPF_MOV | BPF_K, .dst_reg = 0, .imm = 0},
        {.code = BPF_JMP | BPF_EXIT},
    };
    union bpf_attr attr;
    memset(&attr, 0, sizeof attr);
    attr.prog_type = BPF_PROG_TYPE_SOCKET_FILTER;
    attr.insns = (unsigned long)insns;
    attr.insn_cnt = 2;
    attr.license = (unsigned long)"GPL";
    strcpy(attr.prog_name, "kscope_symtest");
    int fd = syscall(SYS_bpf, BPF_PROG_LOAD, &attr, sizeof attr);
    if (fd < 0) {
        printf("error %d\n", errno);
    } else {
        puts("ready");
    }
    fflush(stdout);
    char buf[64];
    while (fread(buf, 1, sizeof buf, stdin) > 0) {
    }
    return 0;
}
