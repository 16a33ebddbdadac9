/* The sampling heap profiler (HAKMEM_PROF=1).
 *
 * One allocation is sampled on average every HAKMEM_PROF_SAMPLE bytes: each
 * thread counts down a random exponential number of bytes, so an allocation
 * of s bytes is sampled with probability 1 - exp(-s / rate), the law pprof's
 * heap_v2 format undoes when it scales samples back. The countdown lives in
 * the sampling entry points only: at start-up malloc and calloc are made to
 * jump there (prof_patch.c), so with the profiler off malloc and free are
 * the same code as without a profiler.
 *
 * A sampled block takes whole pages in a range of its own (prof_blocks.c;
 * above HAK_MID_MAX, a large block), so free() knows it by its address and
 * finds its tag in that range's table, and the small-block fast paths
 * never see it.
 * Its call stack comes from prof_stack.c, outside every lock; the stack
 * table lives in memory mapped here, never in malloc'd memory. */
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/auxv.h>
#include <unistd.h>

#include "internal.h"
#include "hakmem.h"

#define NBUCKETS (1u << 16)   /* hash slots; power of two */
#define NIDS (NBUCKETS / 4 * 3) /* distinct stacks: the hash table stays 3/4 full at most */
_Static_assert(NIDS < HAK_PROF_TAG_ID_MASK, "a stack id + 1 fits in a tag");
#define NFRAMES (1u << 21)    /* frames of every distinct stack together */
#define LN_BITS 6             /* mantissa bits that index the ln table */
#define LN_FRAC_BITS 16       /* and the bits after them, to interpolate */

uint64_t hak_prof_rate;

struct slot {
    uint64_t hash; /* 0: empty */
    uint32_t id;
    uint32_t pad_;
};

struct stack {
    uint32_t frame, depth; /* frames[frame .. frame + depth) */
};

/* Samples taken. What is live is not counted: the dump reads it from
 * the live blocks' tags, so a sampled block's free touches no count. */
struct counts {
    uint64_t n, bytes;
};

/* Counts by stack id, each table written by one thread only: a sample
 * costs no atomic read-modify-write and shares no line with another
 * sampling thread. The dump adds up every table. A departed thread's
 * table goes to the next new thread as it is: only the sums matter. The
 * shared table (atomic adds) serves threads without one of their own. */
struct count_tab {
    struct count_tab *next, *next_free;
    /* c[] starts mid-page: at a page start, the counts of the first stacks
     * (most samples, in a program with few call sites) shared the cache
     * set of every page-aligned block the program touches, and missed on
     * nearly every sample of mid_8k. */
    char colour[2048 - 2 * sizeof(struct count_tab *)];
    struct counts c[NIDS];
};

static struct {
    hak_lock_t lock;
    struct slot *tab;      /* NBUCKETS */
    struct stack *stacks;  /* NIDS */
    uintptr_t *frames;     /* NFRAMES */
    uint32_t used, nframes;
    uint64_t dropped;      /* samples whose stack found no room */
    uint64_t unwinds;      /* full unwinds: stacks the memo did not know */
    struct count_tab *shared, *all, *free;
} pf = {.lock = HAK_LOCK_INIT};

enum { PT_NEW, PT_SAMPLING, PT_UNWINDING };

/* A thread's state is in hak_tls, beside the countdown: prof_rng,
 * prof_counts (its count_tab), prof_state (PT_NEW, PT_SAMPLING: the one
 * test of a sample, PT_UNWINDING) and prof_gone. */

/* ln m at m = 1 + i / 2^LN_BITS, i = 0 .. 2^LN_BITS, and ln 2, in bytes
 * of the sampling rate: an interval is then integer arithmetic and two
 * loads from nine lines, which stay cached (an entry of a 1,024-entry
 * table missed the cache on most samples). */
static uint64_t ln_mantissa_bytes[(1u << LN_BITS) + 1];
static uint64_t ln2_bytes;
static void ln_table_init(uint64_t rate);

void hak_prof_init(void)
{
    if (!hak_opt.prof)
        return;
    const char *why = NULL;
    ln_table_init(hak_opt.prof_sample);
    hak_prof_blocks_init(); /* without it, sampled blocks are large blocks */
    hak_prof_rate = hak_opt.prof_sample; /* before malloc can jump to the sampling entry */
    if (!hak_prof_patch_entries(&why)) {
        hak_prof_rate = 0;
        hak_write_str(2, "hakmem: warning: HAKMEM_PROF=1 ignored: ");
        hak_write_str(2, why);
        hak_write_str(2, "\n");
    }
}

static inline __attribute__((always_inline)) uint64_t next_random(struct hak_tls *t)
{
    uint64_t x = t->prof_rng; /* xorshift64* */
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    t->prof_rng = x;
    return x * 0x2545F4914F6CDD1Dull;
}

#define LN2 0.69314718055994530942

/* ln m for m in [1, 2): 2 atanh((m - 1) / (m + 1)), whose series converges
 * fast there. No libm: the client needs the C library only. */
static double ln_series(double m)
{
    double z = (m - 1) / (m + 1), z2 = z * z;
    return 2 * z * (1 + z2 * (1.0 / 3 + z2 * (1.0 / 5 + z2 * (1.0 / 7 + z2 * (1.0 / 9 + z2 / 11)))));
}

/* Rates above 2^52 bytes (4 PiB) are clamped there: the products below
 * then fit in 64 bits. */
static void ln_table_init(uint64_t rate)
{
    double r = (double)(rate < (1ull << 52) ? rate : (1ull << 52));
    for (unsigned i = 0; i <= (1u << LN_BITS); i++)
        ln_mantissa_bytes[i] = (uint64_t)(ln_series(1 + (double)i / (1u << LN_BITS)) * r);
    ln2_bytes = (uint64_t)(LN2 * r);
}

/* -ln(u) * rate for u = r / 2^53, r in [1, 2^53]: r = m * 2^e with m in
 * [1, 2), ln m interpolated in the table by m's first LN_BITS bits and
 * the LN_FRAC_BITS after them (the series' dependent divide and
 * multiplies were most of a sample's cost on workloads that sample every
 * microsecond). Off by 3e-5 of the rate at most (ln's curvature over a
 * 1/64 step): the interval law stays exponential. */
static inline __attribute__((always_inline)) int64_t next_interval(struct hak_tls *t)
{
    uint64_t r = (next_random(t) >> 11) + 1; /* [1, 2^53] */
    int e = 63 - __builtin_clzll(r);
    uint64_t m = r << (63 - e); /* the leading 1 at bit 63 */
    uint32_t top = (uint32_t)(m >> (63 - LN_BITS)) & ((1u << LN_BITS) - 1);
    uint64_t frac = (m >> (63 - LN_BITS - LN_FRAC_BITS)) & ((1u << LN_FRAC_BITS) - 1);
    uint64_t lo = ln_mantissa_bytes[top], step = ln_mantissa_bytes[top + 1] - lo; /* < 2^46 */
    uint64_t ln_m = lo + ((step * frac) >> LN_FRAC_BITS);
    int64_t bytes = (int64_t)((uint64_t)(53 - e) * ln2_bytes - ln_m);
    return bytes < 1 ? 1 : bytes;
}

static void seed(struct hak_tls *t)
{
    const unsigned char *r = (const unsigned char *)getauxval(AT_RANDOM);
    uint64_t s = 0;
    if (r)
        memcpy(&s, r, sizeof s);
    s ^= (uint64_t)(uintptr_t)t * 0x9E3779B97F4A7C15ull ^ hak_now_ns();
    t->prof_rng = s ? s : 1;
}

/* Where a new thread draws its first interval and where allocations made
 * while a sample is being taken (backtrace may load libgcc_s) are let
 * through. */
static HAK_NOINLINE bool due_slow(struct hak_tls *t)
{
    if (!hak_ready() || t->prof_state == PT_UNWINDING)
        return false;
    if (!hak_prof_rate) {
        t->prof_left = INT64_MAX;
        return false;
    }
    bool first = t->prof_state == PT_NEW;
    if (first)
        seed(t);
    t->prof_state = PT_SAMPLING;
    t->prof_left = next_interval(t) - 1;
    return !first;
}

/* The thread's countdown ran out: sample this allocation? */
static inline __attribute__((always_inline)) bool due(void)
{
    struct hak_tls *t = &hak_tls;
    if (unlikely(t->prof_state != PT_SAMPLING))
        return due_slow(t);
    t->prof_left = next_interval(t) - 1;
    return true;
}

HAK_NOINLINE bool hak_prof_due(void)
{
    return due();
}

static uint64_t stack_hash(uintptr_t *f, unsigned n)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (unsigned i = 0; i < n; i++)
        h = (h ^ f[i]) * 0x100000001b3ull;
    return h | 1; /* 0 marks an empty slot */
}

static bool tables_ready(void)
{
    if (pf.tab)
        return true;
    struct slot *tab = hak_os_map_noreserve(NBUCKETS * sizeof *tab);
    pf.stacks = hak_os_map_noreserve(NIDS * sizeof *pf.stacks);
    pf.frames = hak_os_map_noreserve(NFRAMES * sizeof *pf.frames);
    pf.shared = hak_os_map_noreserve(sizeof *pf.shared);
    if (tab && pf.stacks && pf.frames && pf.shared) {
        pf.all = pf.shared;
        pf.tab = tab;
        return true;
    }
    if (tab)
        hak_os_unmap(tab, NBUCKETS * sizeof *tab);
    if (pf.stacks)
        hak_os_unmap(pf.stacks, NIDS * sizeof *pf.stacks);
    if (pf.frames)
        hak_os_unmap(pf.frames, NFRAMES * sizeof *pf.frames);
    if (pf.shared)
        hak_os_unmap(pf.shared, sizeof *pf.shared);
    pf.stacks = NULL;
    pf.frames = NULL;
    pf.shared = NULL;
    return false;
}

/* The id of a stack, made if new; -1 if there is no room. pf.lock held. */
static int64_t stack_id(uintptr_t *f, unsigned n)
{
    if (!tables_ready())
        return -1;
    uint64_t h = stack_hash(f, n);
    for (uint32_t i = (uint32_t)(h >> 20) & (NBUCKETS - 1), k = 0; k < NBUCKETS; i = (i + 1) & (NBUCKETS - 1), k++) {
        struct slot *b = &pf.tab[i];
        if (b->hash == h) {
            const struct stack *st = &pf.stacks[b->id];
            if (st->depth == n && memcmp(&pf.frames[st->frame], f, n * sizeof *f) == 0)
                return b->id;
        }
        if (b->hash)
            continue;
        if (pf.used == NIDS || pf.nframes + n > NFRAMES)
            return -1;
        memcpy(&pf.frames[pf.nframes], f, n * sizeof *f);
        pf.stacks[pf.used] = (struct stack){.frame = pf.nframes, .depth = n};
        *b = (struct slot){.hash = h, .id = pf.used};
        pf.nframes += n;
        return pf.used++;
    }
    return -1;
}

#define LOAD(x) __atomic_load_n(&(x), __ATOMIC_RELAXED)
#define STORE(x, v) __atomic_store_n(&(x), (v), __ATOMIC_RELAXED)

/* The thread's own table: the first free one, else a new one. NULL (the
 * shared table then) once the thread is on its way out, or if none can
 * be mapped. */
static HAK_NOINLINE struct count_tab *my_counts_new(void)
{
    struct hak_tls *t = &hak_tls;
    hak_lock(&pf.lock);
    struct count_tab *c = pf.free;
    if (c) {
        pf.free = c->next_free;
    } else if ((c = hak_os_map_noreserve(sizeof *c))) {
        c->next = pf.all;
        pf.all = c;
    }
    hak_unlock(&pf.lock);
    t->prof_counts = c;
    t->prof_gone = !c;
    return c;
}

static inline struct count_tab *my_counts(void)
{
    struct hak_tls *t = &hak_tls;
    if (likely(t->prof_counts) || t->prof_gone)
        return t->prof_counts;
    return my_counts_new();
}

void hak_prof_thread_exit(void)
{
    if (!hak_prof_rate)
        return;
    struct hak_tls *t = &hak_tls;
    struct count_tab *c = t->prof_counts;
    t->prof_gone = true;
    t->prof_counts = NULL;
    if (!c)
        return;
    hak_lock(&pf.lock);
    c->next_free = pf.free;
    pf.free = c;
    hak_unlock(&pf.lock);
}

/* n samples of bytes each: (1, size) taken, (-1, -size) taken back (the
 * allocation failed). */
static inline __attribute__((always_inline)) void count_in(struct count_tab *t, uint32_t id, uint64_t n,
                                                           uint64_t bytes)
{
    struct counts *c = &t->c[id];
    if (t != pf.shared) {
        STORE(c->n, LOAD(c->n) + n);
        STORE(c->bytes, LOAD(c->bytes) + bytes);
        return;
    }
    __atomic_fetch_add(&c->n, n, __ATOMIC_RELAXED);
    __atomic_fetch_add(&c->bytes, bytes, __ATOMIC_RELAXED);
}

/* A sample taken (sign 1) or taken back (-1: its allocation failed). */
static HAK_NOINLINE void count(uint32_t id, uint64_t size, int sign)
{
    struct count_tab *t = my_counts();
    uint64_t n = (uint64_t)(int64_t)sign;
    count_in(t ? t : pf.shared, id, n, size * n);
}

/* A sample taken, in the thread's own table once it has one. */
static inline void count_taken(uint32_t id, uint64_t size)
{
    struct count_tab *t = hak_tls.prof_counts;
    if (unlikely(!t)) {
        count(id, size, 1);
        return;
    }
    count_in(t, id, 1, size);
}

/* The sampling frame's address anchors the memo of stacks (prof_stack.c):
 * x86-64 only, where a frame pointer is the frame's own. */
#if defined(__x86_64__)
#define ANCHOR() ((uintptr_t)__builtin_frame_address(0))
#else
#define ANCHOR() ((uintptr_t)0)
#endif

/* A stack the memo did not know: unwound in full, its id made if new.
 * Apart, so that a sample the memo knows runs in a small frame (this
 * one holds the stack on the stack). */
static HAK_NOINLINE int64_t unwind_id(void *ra, uintptr_t anchor, bool fits)
{
    struct hak_tls *t = &hak_tls;
    struct hak_prof_stack st;
    t->prof_state = PT_UNWINDING; /* libgcc_s may be loaded, which allocates */
    unsigned n = hak_prof_unwind(&st, ra, anchor);
    t->prof_state = PT_SAMPLING;
    hak_lock(&pf.lock);
    pf.unwinds++;
    int64_t i = n && fits ? stack_id(st.f, n) : -1;
    if (i >= 0)
        hak_prof_memo_store(ra, &st, (uint32_t)i);
    else
        pf.dropped++;
    hak_unlock(&pf.lock);
    return i;
}

static inline __attribute__((always_inline)) void *prof_alloc(size_t size, size_t align, bool zero, void *ra)
{
    uintptr_t anchor = ANCHOR();
    bool fits = size < (1ull << (64 - HAK_PROF_TAG_SIZE_SHIFT)); /* in a tag */
    int64_t i = fits ? hak_prof_memo_find(ra, anchor) : -1;
    if (i < 0)
        i = unwind_id(ra, anchor, fits);
    if (i >= 0)
        count_taken((uint32_t)i, size);
    /* The size even without a bucket (a stack left out): pages are freed by it. */
    uint64_t tag = fits ? ((uint64_t)size << HAK_PROF_TAG_SIZE_SHIFT) | (uint64_t)(i + 1) : 0;
    void *p = hak_prof_block_alloc(size, align, zero, tag);
    if (!p)
        p = hak_large_alloc_sampled(size ? size : 1, align, zero, tag);
    if (!p && i >= 0)
        count((uint32_t)i, size, -1);
    return p;
}

HAK_NOINLINE void *hak_prof_alloc(size_t size, size_t align, bool zero, void *ra)
{
    return prof_alloc(size, align, zero, ra);
}

HAK_NOINLINE void *hak_prof_malloc(size_t size HAK_PROF_MALLOC_RA_PARAM)
{
    if (unlikely(!due()))
        return hak_malloc_inner(size);
    return prof_alloc(size, 16, false, HAK_PROF_MALLOC_RA);
}

static struct counts sum_of(uint32_t id)
{
    struct counts s = {0, 0};
    for (const struct count_tab *t = pf.all; t; t = t->next) {
        s.n += LOAD(t->c[id].n);
        s.bytes += LOAD(t->c[id].bytes);
    }
    return s;
}

/* A live sampled block's tag, into the dump's live counts by stack. */
static void add_live(uint64_t tag, void *arg)
{
    struct counts *live = arg;
    uint64_t id = tag & HAK_PROF_TAG_ID_MASK;
    if (!id)
        return; /* its stack was left out */
    live[id - 1].n++;
    live[id - 1].bytes += tag >> HAK_PROF_TAG_SIZE_SHIFT;
}

void hak_prof_stats(struct hak_stats *s)
{
    if (!hak_prof_rate)
        return;
    hak_lock(&pf.lock);
    uint64_t samples = pf.dropped;
    for (uint32_t id = 0; id < pf.used; id++)
        samples += sum_of(id).n;
    s->prof_samples = samples;
    s->prof_unwinds = pf.unwinds;
    s->prof_dropped = pf.dropped;
    hak_unlock(&pf.lock);
}

/* ---- the profile file: the legacy heap profile text pprof reads ---- */

struct out {
    int fd;
    bool failed;
    size_t len;
    char buf[8192];
};

static void flush_out(struct out *o)
{
    for (size_t done = 0; done < o->len && !o->failed;) {
        ssize_t w = write(o->fd, o->buf + done, o->len - done);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            o->failed = true;
        else
            done += (size_t)w;
    }
    o->len = 0;
}

static void put(struct out *o, const char *s, size_t n)
{
    if (o->len + n > sizeof o->buf)
        flush_out(o);
    memcpy(o->buf + o->len, s, n);
    o->len += n;
}

static void put_counts(struct out *o, uint64_t ln, uint64_t lb, uint64_t an, uint64_t ab)
{
    char line[128];
    int n = snprintf(line, sizeof line, "%6llu: %8llu [%6llu: %8llu] @", (unsigned long long)ln,
                     (unsigned long long)lb, (unsigned long long)an, (unsigned long long)ab);
    put(o, line, (size_t)n);
}

static void put_rows(struct out *o, const struct counts *live)
{
    struct counts all = {0, 0}, all_live = {0, 0};
    for (uint32_t id = 0; id < pf.used; id++) {
        struct counts c = sum_of(id);
        all.n += c.n;
        all.bytes += c.bytes;
        all_live.n += live[id].n;
        all_live.bytes += live[id].bytes;
    }
    put(o, "heap profile: ", 14);
    put_counts(o, all_live.n, all_live.bytes, all.n, all.bytes);
    char line[64];
    int n = snprintf(line, sizeof line, " heap_v2/%llu\n", (unsigned long long)hak_prof_rate);
    put(o, line, (size_t)n);
    for (uint32_t id = 0; id < pf.used; id++) {
        struct counts c = sum_of(id);
        if (!c.n)
            continue;
        put_counts(o, live[id].n, live[id].bytes, c.n, c.bytes);
        const struct stack *st = &pf.stacks[id];
        for (uint32_t k = 0; k < st->depth; k++) {
            n = snprintf(line, sizeof line, " 0x%016llx", (unsigned long long)pf.frames[st->frame + k]);
            put(o, line, (size_t)n);
        }
        put(o, "\n", 1);
    }
}

/* pprof finds the symbols of each address through the mappings. */
static void put_maps(struct out *o)
{
    put(o, "\nMAPPED_LIBRARIES:\n", 19);
    flush_out(o);
    int fd = open("/proc/self/maps", O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        o->failed = true;
        return;
    }
    for (;;) {
        ssize_t r = read(fd, o->buf, sizeof o->buf);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        o->len = (size_t)r;
        flush_out(o);
    }
    close(fd);
}

static struct out dump_out; /* under pf.lock: a dump needs no stack room */

HAK_API int hak_prof_dump(const char *path)
{
    if (!hak_prof_rate) {
        errno = ENOTSUP;
        return -1;
    }
    char name[HAK_PATH_MAX + 32];
    if (!path) {
        snprintf(name, sizeof name, "%s.%d.heap", hak_opt.prof_prefix, (int)getpid());
        path = name;
    }
    /* What is live, from the live blocks' tags: taken before the lock (the
     * large blocks' registry has a lock of its own), after the samples
     * they belong to were counted, so no stack shows more live than taken. */
    struct counts *live = hak_os_map_noreserve(NIDS * sizeof *live);
    if (!live) {
        errno = ENOMEM;
        return -1;
    }
    hak_prof_blocks_live(add_live, live);
    hak_large_each_sampled(add_live, live);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        int e = errno;
        hak_os_unmap(live, NIDS * sizeof *live);
        errno = e;
        return -1;
    }
    hak_lock(&pf.lock);
    struct out *o = &dump_out;
    o->fd = fd;
    o->failed = false;
    o->len = 0;
    put_rows(o, live);
    put_maps(o);
    bool failed = o->failed;
    hak_unlock(&pf.lock);
    hak_os_unmap(live, NIDS * sizeof *live);
    if (close(fd) != 0 || failed) {
        if (!errno)
            errno = EIO;
        return -1;
    }
    return 0;
}

__attribute__((destructor)) static void dump_at_exit(void)
{
    if (!hak_prof_rate)
        return;
    char name[HAK_PATH_MAX + 32];
    snprintf(name, sizeof name, "%s.%d.heap", hak_opt.prof_prefix, (int)getpid());
    if (hak_prof_dump(name) != 0) {
        hak_write_str(2, "hakmem: cannot write the heap profile ");
        hak_write_str(2, name);
        hak_write_str(2, "\n");
    }
    uint64_t dropped = LOAD(pf.dropped);
    if (dropped) {
        char n[24];
        hak_fmt_u64(n, dropped);
        hak_write_str(2, "hakmem: heap profile: ");
        hak_write_str(2, n);
        hak_write_str(2, " samples left out, the table of call stacks being full\n");
    }
}

void hak_prof_fork_prepare(void)
{
    hak_lock(&pf.lock);
    hak_prof_blocks_fork_prepare();
}

void hak_prof_fork_parent(void)
{
    hak_prof_blocks_fork_parent();
    hak_unlock(&pf.lock);
}

/* The other threads' tables are nobody's now: free for new threads. */
void hak_prof_fork_child(void)
{
    hak_prof_blocks_fork_child();
    pf.free = NULL;
    for (struct count_tab *c = pf.all; c; c = c->next)
        if (c != pf.shared && c != hak_tls.prof_counts) {
            c->next_free = pf.free;
            pf.free = c;
        }
    hak_lock_reset(&pf.lock);
}
