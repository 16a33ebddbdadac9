/* The crash report (HAKMEM_CRASH_REPORT=1, and always in secure mode): a
 * SIGSEGV or SIGBUS prints one line before the default action, with the
 * faulting address and, where it lies in one of the heap's guards or in a
 * freed large block, the misuse and the nearest block. A handler the
 * program installed before is left alone. Everything here is
 * async-signal-safe: plain reads of the side tables, no lock, write(2). */
#include <signal.h>
#include <string.h>

#include "internal.h"

#define put hak_append

static char *put_block(char *q, char *e, uintptr_t p, size_t size)
{
    char num[24];
    hak_fmt_hex(num, p);
    q = put(put(q, e, num), e, " (");
    hak_fmt_u64(num, size);
    return put(put(q, e, num), e, " bytes)");
}

/* The first (first = true) or last block of the slabs of SuperSlab idx,
 * as malloc returned it; 0 if it has none. */
static uintptr_t edge_block(uint32_t idx, bool first, size_t *size)
{
    if (idx >= __atomic_load_n(&hak_arena.cursor, __ATOMIC_RELAXED))
        return 0;
    const struct hak_ss_hot *hot = hak_hot(idx);
    for (unsigned k = 0; k < HAK_UNITS; k++) {
        unsigned u = first ? k : HAK_UNITS - 1 - k, cls = hot->cls[u];
        if (!cls)
            continue;
        const struct hak_class *c = &hak_classes[cls];
        uintptr_t slab = (uintptr_t)hak_ss_addr(idx) + ((uintptr_t)hak_hot_head(hot, u) << HAK_UNIT_SHIFT);
        uintptr_t b = first ? slab : slab + (uintptr_t)(c->capacity - 1) * c->size;
        *size = c->size - (hak_link_key ? HAK_SECURE_HDR : 0);
        return b + (hak_link_key ? HAK_SECURE_HDR : 0);
    }
    return 0;
}

static char *describe(char *q, char *e, uintptr_t a)
{
    uintptr_t block;
    size_t size;
    bool freed;
    if (hak_in_arena((void *)a)) {
        uint32_t idx = (uint32_t)((a - hak_arena.base) >> HAK_SS_SHIFT);
        /* Past the cursor the side table may not be mapped: not read. */
        if (idx < __atomic_load_n(&hak_arena.cursor, __ATOMIC_RELAXED) && hak_cold(idx)->state != HAK_SS_UNUSED)
            return put(q, e, "in the heap");
        /* Which way the access ran is not known: both neighbours. */
        q = put(q, e, "heap overflow or underflow into a guard range between SuperSlabs; nearest blocks: ");
        block = idx ? edge_block(idx - 1, false, &size) : 0;
        q = block ? put(put_block(put(q, e, "below "), e, block, size), e, ", ") : put(q, e, "none below, ");
        block = edge_block(idx + 1, true, &size);
        return block ? put_block(put(q, e, "above "), e, block, size) : put(q, e, "none above");
    }
    if (hak_large_near(a, &block, &size, &freed)) {
        q = put(q, e, freed ? "use after free of the large block " : a < block ? "heap underflow of the large block "
                                                                                : "heap overflow of the large block ");
        return put_block(q, e, block, size);
    }
    return put(q, e, "not in the heap");
}

static void on_fault(int sig, siginfo_t *si, void *ctx)
{
    (void)ctx;
    char line[320], *e = line + sizeof line - 2;
    char *q = put(line, e, sig == SIGBUS ? "hakmem: SIGBUS at " : "hakmem: SIGSEGV at ");
    char num[24];
    hak_fmt_hex(num, (uintptr_t)si->si_addr);
    q = put(put(q, e, num), e, ": ");
    q = describe(q, e, (uintptr_t)si->si_addr);
    put(q, e + 1, "\n");
    hak_write_str(2, line);
    /* SA_RESETHAND: returning runs the faulting instruction again, which
     * now meets the default action. */
}

void hak_crash_init(void)
{
    if (!hak_opt.crash_report && !hak_opt.secure)
        return;
    struct sigaction sa, old;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_fault;
    sa.sa_flags = SA_SIGINFO | SA_RESETHAND | SA_NODEFER;
    sigemptyset(&sa.sa_mask);
    int sigs[2] = {SIGSEGV, SIGBUS};
    for (int i = 0; i < 2; i++)
        if (sigaction(sigs[i], NULL, &old) == 0 && old.sa_handler == SIG_DFL && !(old.sa_flags & SA_SIGINFO))
            sigaction(sigs[i], &sa, NULL);
}
