/* Poses as a vmlinux for symbol-resolver's tests: an `_stext` to derive the KASLR offset
 * from, functions with DWARF lines, and an inlined helper. */
__attribute__((noipa)) void _stext(void) {
}

static inline __attribute__((always_inline)) int kinline(int x) {
    int y = x * 3;
    return y ^ (y >> 2);
}

__attribute__((noipa)) int kfunc_a(int x) {
    int acc = 0;
    for (int i = 0; i < x; i++) {
        acc += kinline(i);
    }
    return acc;
}

__attribute__((noipa)) int kfunc_b(int x) {
    return x * 7 + 1;
}

int main(int argc, char **argv) {
    (void)argv;
    _stext();
    return kfunc_a(argc) + kfunc_b(argc);
}
