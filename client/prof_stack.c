/* Call stacks for the profiler, cheaply.
 *
 * A full unwind (libgcc's DWARF unwinder) costs some 300 ns a frame, and
 * a program samples the same few call sites over and over. So each full
 * unwind also notes where on the stack every return address was found,
 * relative to the sampling frame. The next sample from the same call site
 * reads those slots: if each holds the return address noted, the chain is
 * the same one (a return address fixes the calling function and its call
 * site, hence where its caller's return address lies, frame by frame), and
 * the stack is known without unwinding. Any difference means a full unwind.
 * A call site keeps up to MEMO_WAYS chains: a wrapper around malloc is one
 * call site reached from many callers, and with one chain per call site
 * two callers taking turns unwound in full every time.
 *
 * libgcc_s is loaded on the first sample (as glibc's backtrace does), so
 * the library links against the C library only; without it, or on other
 * processors than x86-64, glibc's backtrace() is used, without the memo. */
#include <dlfcn.h>
#include <execinfo.h>
#include <string.h>
#include <unwind.h>

#include "internal.h"

#define MEMO_SLOTS 1024 /* power of two */
#define MEMO_WAYS 8     /* chains per call site (a set of slots); power of two */

/* Written under the profiler's lock, read without it: a sequence count,
 * odd while an entry is rewritten, tells a reader its copy is whole. */
struct memo {
    uint32_t seq;
    uint32_t depth;
    uintptr_t ra;           /* 0: empty */
    uint32_t id;            /* the stack's id in the profiler's table */
    struct {
        intptr_t off;       /* slot of frame k, from the anchor */
        uintptr_t val;      /* return address found there */
    } at[HAK_PROF_DEPTH];   /* side by side: a short stack is two lines */
};

static struct memo *memo; /* MEMO_SLOTS, mapped with the first entry */
static unsigned turn;     /* the way a full set gives up next (profiler's lock) */

#define LOAD(x) __atomic_load_n(&(x), __ATOMIC_RELAXED)
#define STORE(x, v) __atomic_store_n(&(x), (v), __ATOMIC_RELAXED)

typedef _Unwind_Reason_Code (*trace_fn)(_Unwind_Trace_Fn, void *);
typedef _Unwind_Ptr (*get_fn)(struct _Unwind_Context *);

static struct {
    _Atomic int state; /* 0 not tried, 1 loading, 2 ready, 3 unavailable */
    trace_fn trace;
    get_fn get_ip, get_cfa;
} gcc;

/* Another thread loading it: this sample falls back to backtrace(). */
static bool unwinder_ready(void)
{
    int s = atomic_load_explicit(&gcc.state, memory_order_acquire);
    if (s != 0)
        return s == 2;
    if (!atomic_compare_exchange_strong(&gcc.state, &s, 1))
        return false;
    void *h = dlopen("libgcc_s.so.1", RTLD_NOW | RTLD_LOCAL);
    if (h) {
        gcc.trace = (trace_fn)dlsym(h, "_Unwind_Backtrace");
        gcc.get_ip = (get_fn)dlsym(h, "_Unwind_GetIP");
        gcc.get_cfa = (get_fn)dlsym(h, "_Unwind_GetCFA");
    }
    bool ok = gcc.trace && gcc.get_ip && gcc.get_cfa;
    atomic_store_explicit(&gcc.state, ok ? 2 : 3, memory_order_release);
    return ok;
}

struct walk {
    unsigned n;
    uintptr_t ip[HAK_PROF_DEPTH + 8], cfa[HAK_PROF_DEPTH + 8];
};

static _Unwind_Reason_Code one_frame(struct _Unwind_Context *ctx, void *arg)
{
    struct walk *w = arg;
    uintptr_t ip = gcc.get_ip(ctx);
    /* A 0 ends the main thread's chain, below _start: no frame, and no
     * slot holds it, so a stack ending in it could never be memoized. */
    if (w->n == HAK_PROF_DEPTH + 8 || !ip)
        return _URC_END_OF_STACK;
    w->ip[w->n] = ip;
    w->cfa[w->n] = gcc.get_cfa(ctx);
    w->n++;
    return _URC_NO_REASON;
}

/* From ra on (the return address into the program): the allocator's own
 * frames are dropped. Where ra is not found, everything but frame 0. */
static unsigned first_of(const uintptr_t *ip, unsigned n, void *ra)
{
    for (unsigned i = 0; i < n; i++)
        if (ip[i] == (uintptr_t)ra)
            return i;
    return n > 0;
}

unsigned hak_prof_unwind(struct hak_prof_stack *s, void *ra, uintptr_t anchor)
{
    s->has_off = false;
    struct walk w;
    w.n = 0;
    if (anchor && unwinder_ready()) {
        gcc.trace(one_frame, &w);
        unsigned from = first_of(w.ip, w.n, ra);
        s->n = 0;
        /* At frame k libgcc's CFA is the stack pointer frame k called
         * with, so frame k's return address lies just below it: checked
         * here, on the live stack, before it is trusted. */
        s->has_off = w.n > from && w.ip[from] == (uintptr_t)ra;
        for (unsigned k = from; k < w.n && s->n < HAK_PROF_DEPTH; k++) {
            s->f[s->n] = w.ip[k];
            uintptr_t slot = w.cfa[k] - sizeof(uintptr_t);
            int64_t off = (int64_t)(slot - anchor);
            if (off != (int32_t)off || *(const uintptr_t *)slot != w.ip[k])
                s->has_off = false;
            s->off[s->n] = (int32_t)off;
            s->n++;
        }
        return s->n;
    }
    void *raw[HAK_PROF_DEPTH + 8];
    int n = backtrace(raw, HAK_PROF_DEPTH + 8);
    unsigned from = first_of((uintptr_t *)raw, n > 0 ? (unsigned)n : 0, ra);
    s->n = 0;
    for (int k = (int)from; k < n && s->n < HAK_PROF_DEPTH; k++)
        s->f[s->n++] = (uintptr_t)raw[k];
    return s->n;
}

static struct memo *memo_set(struct memo *table, void *ra)
{
    uint64_t h = (uint64_t)(uintptr_t)ra * 0x9E3779B97F4A7C15ull;
    return &table[(h >> 32) & (MEMO_SLOTS - 1) & ~(uint64_t)(MEMO_WAYS - 1)];
}

/* m's stack id if m holds this stack, else -1. */
static int64_t memo_match(struct memo *m, void *ra, uintptr_t anchor)
{
    uint32_t seq = __atomic_load_n(&m->seq, __ATOMIC_ACQUIRE);
    uint32_t depth = LOAD(m->depth), id = LOAD(m->id);
    if ((seq & 1) || LOAD(m->ra) != (uintptr_t)ra || !depth || depth > HAK_PROF_DEPTH)
        return -1;
    /* Compared in place, frame by frame. A slot is read only once the
     * one before held what was noted (then it lies in a live frame of
     * this thread's stack), and only once the count shows its offset is
     * the entry's (acquiring loads keep that look after them): an offset
     * from a rewrite could point past the stack's end. */
    for (uint32_t k = 0; k < depth; k++) {
        intptr_t off = __atomic_load_n(&m->at[k].off, __ATOMIC_ACQUIRE);
        uintptr_t val = __atomic_load_n(&m->at[k].val, __ATOMIC_ACQUIRE);
        if (LOAD(m->seq) != seq || *(const uintptr_t *)(anchor + off) != val)
            return -1;
    }
    return id;
}

int64_t hak_prof_memo_find(void *ra, uintptr_t anchor)
{
    struct memo *table = __atomic_load_n(&memo, __ATOMIC_ACQUIRE);
    if (!table || !anchor)
        return -1;
    struct memo *set = memo_set(table, ra);
    for (unsigned w = 0; w < MEMO_WAYS; w++) {
        if (!LOAD(set[w].ra))
            return -1; /* a set fills in order and is never emptied */
        int64_t id = memo_match(&set[w], ra, anchor);
        if (id >= 0)
            return id;
    }
    return -1;
}

void hak_prof_memo_store(void *ra, const struct hak_prof_stack *s, uint32_t id)
{
    if (!s->has_off || !s->n)
        return;
    struct memo *table = memo;
    if (!table) {
        if (!(table = hak_os_map_noreserve(MEMO_SLOTS * sizeof *table)))
            return;
        __atomic_store_n(&memo, table, __ATOMIC_RELEASE);
    }
    /* An empty slot of the set, else each in turn. */
    struct memo *set = memo_set(table, ra), *m = &set[turn++ & (MEMO_WAYS - 1)];
    for (unsigned w = 0; w < MEMO_WAYS; w++)
        if (!LOAD(set[w].ra)) {
            m = &set[w];
            break;
        }
    uint32_t seq = LOAD(m->seq);
    /* Odd before any field changes (an acquiring exchange keeps the
     * stores below after it), even again after (a release). */
    __atomic_exchange_n(&m->seq, seq + 1, __ATOMIC_ACQ_REL);
    STORE(m->ra, (uintptr_t)ra);
    STORE(m->id, id);
    STORE(m->depth, s->n);
    for (unsigned k = 0; k < s->n; k++) {
        STORE(m->at[k].off, (intptr_t)s->off[k]);
        STORE(m->at[k].val, s->f[k]);
    }
    __atomic_store_n(&m->seq, seq + 2, __ATOMIC_RELEASE);
}
