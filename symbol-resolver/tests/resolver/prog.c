/* Test program for symbol-resolver: known functions, an always-inlined helper under -O2,
 * and a mode that blocks on stdin so a test can symbolize it while it runs. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static inline __attribute__((always_inline)) int mix(int x) {
    int y = x * 31;
    y ^= y >> 3;
    return y + 7;
}

/* noipa: no inlining, cloning (.constprop/.isra) or splitting, so the symbol table and
 * DWARF agree on one function per name. */
__attribute__((noipa)) int compute(int n) {
    int acc = 0;
    for (int i = 0; i < n; i++) {
        acc += mix(i + n);
    }
    return acc;
}

__attribute__((noipa)) static int helper_static(const char *s) {
    return (int)strlen(s) * 3 + mix((int)s[0]);
}

__attribute__((noipa)) void block_on_stdin(void) {
    char buf[64];
    puts("ready");
    fflush(stdout);
    while (fread(buf, 1, sizeof buf, stdin) > 0) {
    }
}

int main(int argc, char **argv) {
    int r = compute(argc) + helper_static(argv[0]);
    if (argc > 1 && strcmp(argv[1], "block") == 0) {
        block_on_stdin();
    }
    return r & 1;
}
