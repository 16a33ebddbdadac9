/* Statistics: one snapshot of the whole heap (hak_stats_snapshot) that
 * hak_stats_get, hak_stats_print (HAKMEM_STATS=1, malloc_stats), the XML of
 * malloc_info and mallinfo all read, so their figures agree.
 *
 * Nothing here is counted on the malloc fast path, and a local free counts
 * one per-thread increment (its cache's frees). Per class:
 *   allocs  derived: blocks into the thread caches (refills, local frees)
 *           minus blocks out of them other than to the program (flushes)
 *           minus blocks cached now;
 *   live    the blocks out of the class's slabs (each slab's used, read
 *           from the side tables) less those in thread caches and in
 *           threads' remote batches. A block sent on (in the freer's
 *           outbox, its owner's inbox or its slab's remote list: freed by
 *           another thread, or flushed from a cache into a SuperSlab its
 *           heap gave away) is still out of the slab, so it counts as live
 *           until the owner collects it; with HAKMEM_STATS=1
 *           every remote free is counted as it happens (free.c) and live is
 *           allocs less every free, exact (the smaller of the two, should
 *           the counters race with the walk);
 *   frees   allocs - live.
 * The secure mode moves blocks without the caches, so allocs and frees are
 * not known there (0); live is, from the walk.
 * Reads of other threads' counters are racy by design: a snapshot, not a
 * ledger. The heap pool lock keeps every TLS front we read mapped. */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "internal.h"
#include "hakmem.h"

_Static_assert(HAK_NCLASS - 1 <= HAK_STATS_CLASSES, "every class has a place in struct hak_stats");

/* Per class: what the heaps' TLS fronts hold, and what the slabs have out. */
struct class_walk {
    uint64_t cached;  /* blocks in thread caches */
    uint64_t batched; /* blocks in threads' remote batches (freed, not yet sent) */
    uint64_t out;     /* blocks out of the class's slabs (sum of used) */
    uint64_t slabs;   /* live slabs */
};

/* One pass over the heaps: the derived totals and the blocks their TLS
 * fronts hold. */
static void heaps_pass(struct hak_class_totals *tot, struct class_walk *w)
{
    memset(tot, 0, sizeof(*tot) * HAK_NCLASS);
    hak_heap_pool_lock(); /* keeps every TLS front we read mapped */
    for (struct hak_heap *h = hak_heap_first(); h; h = h->all_next) {
        struct hak_tls *t = h->tls;
        bool front = t && (h->in_use || h->parked);
        for (unsigned c = 1; c < HAK_NCLASS; c++) {
            uint64_t local = h->st[c].frees, cached = 0;
            if (front) {
                local += t->c[c].frees;
                cached = t->c[c].count;
            }
            tot[c].refills += h->st[c].refills;
            tot[c].allocs += h->st[c].refilled - h->st[c].flushed + local - cached;
            tot[c].frees += local;
            w[c].cached += cached;
        }
        if (!front)
            continue;
        uint64_t used = __atomic_load_n(&t->rb_used, __ATOMIC_RELAXED);
        while (used) {
            unsigned i = (unsigned)__builtin_ctzll(used);
            used &= used - 1;
            struct hak_slab *s = __atomic_load_n(&t->rb[i].slab, __ATOMIC_RELAXED);
            if (!s)
                continue;
            /* A batched block keeps its slab live: its class holds. */
            unsigned c = __atomic_load_n(&s->cls, __ATOMIC_RELAXED);
            if (c && c < HAK_NCLASS)
                w[c].batched += __atomic_load_n(&t->rb[i].n, __ATOMIC_RELAXED);
        }
    }
    hak_heap_pool_unlock();
}

/* One pass over the side tables of the SuperSlabs handed out so far: every
 * live slab (a unit that heads one), its class and its used count. The
 * tables are permanent, and the cold entries read are those of SuperSlabs
 * a heap owns, written when they were handed out; the hot line of one
 * never handed out (a daemon session's range) maps the shared zero page at
 * most. Returns the slabs' bytes. */
static uint64_t slabs_pass(struct class_walk *w)
{
    if (!hak_arena.size)
        return 0;
    uint32_t n = __atomic_load_n(&hak_arena.cursor, __ATOMIC_ACQUIRE);
    uint64_t units = 0;
    for (uint32_t idx = 0; idx < n; idx++) {
        struct hak_ss_hot *hot = hak_hot(idx);
        struct hak_heap *owner = atomic_load_explicit(&hot->owner, HAK_RELAXED);
        if (!HAK_OWNER_IS_HEAP(owner) && owner != HAK_OWNER_ABANDONED)
            continue;
        struct hak_ss *ss = hak_cold(idx);
        for (unsigned u = 0; u < HAK_UNITS; u++) {
            unsigned c = hak_hot_cls_relaxed(hot, u);
            if (!c || c >= HAK_NCLASS || hak_hot_head(hot, u) != u)
                continue;
            w[c].slabs++;
            w[c].out += __atomic_load_n(&ss->slab[u].used, __ATOMIC_RELAXED);
            units += hak_classes[c].span;
        }
    }
    return units << HAK_UNIT_SHIFT;
}

size_t hak_resident_bytes(void)
{
    return hak_provision_resident() + hak_heap_resident() + hak_large_resident() + hak_prof_blocks_resident();
}

void hak_stats_snapshot(struct hak_stats *s, bool resident)
{
    memset(s, 0, sizeof *s);
    s->version = HAK_STATS_VERSION;
    s->size = (uint32_t)sizeof *s;
    bool secure = hak_link_key != 0, exact = hak_opt.stats != 0;
    s->flags = (exact && !secure ? HAK_STATS_F_REMOTE_EXACT : 0) | (secure ? HAK_STATS_F_SECURE : 0) |
               (hak_pagerd_live() ? HAK_STATS_F_PAGERD : 0);

    hak_large_stats(&s->large_bytes, &s->large_cached, &s->large_blocks);
    struct hak_provision_stats ps;
    hak_provision_stats(&ps);
    s->ss_from_pagerd = ps.acquired[HAK_PROV_PAGERD];
    s->ss_from_embedded = ps.acquired[HAK_PROV_EMBEDDED];
    s->ss_released = ps.released[0] + ps.released[1];
    uint64_t acquired = s->ss_from_pagerd + s->ss_from_embedded;
    s->ss_in_use = acquired > s->ss_released ? acquired - s->ss_released : 0;
    s->ss_warm = ps.warm;
    s->ss_abandoned = hak_ss_abandoned_count();
    s->ss_fallbacks = ps.fallbacks;
    s->ss_purged = ps.purged;
    s->ss_returned_pagerd = ps.returned;
    s->ss_taken_pagerd = ps.reclaimed;
    s->unit_bytes_returned = ps.unit_bytes;
    s->returned_os = (ps.purged << HAK_SS_SHIFT) + ps.unit_bytes + hak_large_returned();
    s->os_mmap = hak_os_calls(HAK_OS_MMAP);
    s->os_munmap = hak_os_calls(HAK_OS_MUNMAP);
    s->os_mprotect = hak_os_calls(HAK_OS_MPROTECT);
    s->os_madvise = hak_os_calls(HAK_OS_MADVISE);
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) == 0)
        s->peak_rss = (uint64_t)ru.ru_maxrss << 10;

    uint64_t small = 0, slab_bytes = 0;
    if (hak_ready()) {
        struct hak_class_totals tot[HAK_NCLASS];
        struct class_walk w[HAK_NCLASS];
        memset(w, 0, sizeof w);
        heaps_pass(tot, w);
        slab_bytes = slabs_pass(w);
        s->nclasses = HAK_NCLASS - 1;
        for (unsigned c = 1; c < HAK_NCLASS; c++) {
            const struct hak_class *k = &hak_classes[c];
            struct hak_stats_class *e = &s->classes[c - 1];
            uint64_t held = w[c].cached + w[c].batched;
            uint64_t live = w[c].out > held ? w[c].out - held : 0;
            uint64_t allocs = secure ? 0 : tot[c].allocs;
            if (exact && !secure) {
                uint64_t frees = tot[c].frees + hak_remote_frees(c);
                uint64_t counted = allocs > frees ? allocs - frees : 0;
                if (counted < live) /* else a count raced with the walk */
                    live = counted;
            }
            e->size = k->size;
            e->allocs = allocs;
            e->frees = allocs > live ? allocs - live : 0;
            e->live_blocks = live;
            e->live_bytes = live * k->size;
            uint64_t room = w[c].slabs * k->capacity;
            e->free_blocks = room > live ? room - live : 0;
            e->cached_blocks = w[c].cached;
            e->slabs = w[c].slabs;
            e->refills = tot[c].refills;
            small += e->live_bytes;
        }
    }
    hak_prof_stats(s);
    uint64_t sampled = hak_prof_blocks_live(NULL, NULL); /* the profiler's, if on */
    s->allocated = small + s->large_bytes + sampled;
    s->active = slab_bytes + s->large_bytes + sampled;
    if (resident) {
        s->resident = hak_resident_bytes();
        s->metadata = hak_arena_meta_resident() + hak_heap_resident();
    }
    uint64_t arena = (uint64_t)__atomic_load_n(&hak_arena.cursor, __ATOMIC_ACQUIRE) << HAK_SS_SHIFT;
    if (hak_link_key)
        arena /= 2; /* every other SuperSlab a guard, never mapped */
    s->mapped = arena + s->large_bytes + s->large_cached + sampled + s->metadata;
    if (s->mapped < s->resident)
        s->mapped = s->resident;
}

HAK_API int hak_stats_get(struct hak_stats *out, size_t size)
{
    if (!out || size < offsetof(struct hak_stats, flags)) {
        errno = EINVAL;
        return -1;
    }
    struct hak_stats s;
    hak_stats_snapshot(&s, true);
    if (size > sizeof s)
        size = sizeof s;
    s.size = (uint32_t)size;
    memcpy(out, &s, size);
    return 0;
}

static void out(const char *s)
{
    hak_write_str(2, s);
}

/* With write(2) only: it runs at exit, and from malloc_stats. */
HAK_API void hak_stats_print(void)
{
    struct hak_stats st;
    char line[200];
    if (!hak_ready()) {
        out("hakmem: no allocation made\n");
        return;
    }
    hak_stats_snapshot(&st, true);
    out("hakmem: class     size       allocs        frees   live-bytes    refills\n");
    for (unsigned i = 0; i < st.nclasses; i++) {
        const struct hak_stats_class *e = &st.classes[i];
        if (!e->allocs && !e->frees && !e->live_blocks && !e->slabs)
            continue;
        snprintf(line, sizeof line,
                 "hakmem: %5u %8" PRIu64 " %12" PRIu64 " %12" PRIu64 " %12" PRIu64 " %10" PRIu64 "\n", i + 1,
                 e->size, e->allocs, e->frees, e->live_bytes, e->refills);
        out(line);
    }
    snprintf(line, sizeof line, "hakmem: large blocks=%" PRIu64 " live-bytes=%" PRIu64 " cached-bytes=%" PRIu64 "\n",
             st.large_blocks, st.large_bytes, st.large_cached);
    out(line);
    snprintf(line, sizeof line,
             "hakmem: bytes allocated=%" PRIu64 " active=%" PRIu64 " resident=%" PRIu64 " mapped=%" PRIu64
             " metadata=%" PRIu64 " returned-to-os=%" PRIu64 "\n",
             st.allocated, st.active, st.resident, st.mapped, st.metadata, st.returned_os);
    out(line);
    snprintf(line, sizeof line,
             "hakmem: superslabs acquired=%" PRIu64 " released=%" PRIu64 " warm=%" PRIu64 " abandoned=%" PRIu64
             " in-use=%" PRIu64 "\n",
             st.ss_from_pagerd + st.ss_from_embedded, st.ss_released, st.ss_warm, st.ss_abandoned, st.ss_in_use);
    out(line);
    snprintf(line, sizeof line,
             "hakmem: returned units=%" PRIu64 " KiB superslabs: to the os=%" PRIu64 " to the daemon=%" PRIu64
             " taken by the daemon=%" PRIu64 "\n",
             st.unit_bytes_returned >> 10, st.ss_purged, st.ss_returned_pagerd, st.ss_taken_pagerd);
    out(line);
    snprintf(line, sizeof line, "hakmem: superslabs pagerd=%" PRIu64 " embedded=%" PRIu64 " fallbacks=%" PRIu64 "\n",
             st.ss_from_pagerd, st.ss_from_embedded, st.ss_fallbacks);
    out(line);
    snprintf(line, sizeof line,
             "hakmem: os calls mmap=%" PRIu64 " munmap=%" PRIu64 " mprotect=%" PRIu64 " madvise=%" PRIu64 "\n",
             st.os_mmap, st.os_munmap, st.os_mprotect, st.os_madvise);
    out(line);
    if (st.prof_samples) {
        snprintf(line, sizeof line,
                 "hakmem: heap profile samples=%" PRIu64 " full-unwinds=%" PRIu64 " left-out=%" PRIu64 "\n",
                 st.prof_samples, st.prof_unwinds, st.prof_dropped);
        out(line);
    }
    snprintf(line, sizeof line, "hakmem: peak RSS %" PRIu64 " KiB\n", st.peak_rss >> 10);
    out(line);
}

/* malloc_info's document: the numbers are collected first, then printed
 * (stdio may allocate its buffer: by then no lock of ours is held). Like
 * glibc's, <sizes> and the "fast"/"rest" totals count free memory: per
 * class, the blocks of its slabs not handed out ("fast": those in thread
 * caches); the other attributes are hakmem's. */
int hak_stats_xml(FILE *f)
{
    struct hak_stats st;
    hak_stats_snapshot(&st, true);
    uint64_t fast_n = 0, fast_b = 0, rest_n = 0, rest_b = 0;
    for (unsigned i = 0; i < st.nclasses; i++) {
        const struct hak_stats_class *e = &st.classes[i];
        uint64_t cached = e->cached_blocks < e->free_blocks ? e->cached_blocks : e->free_blocks;
        fast_n += cached;
        fast_b += cached * e->size;
        rest_n += e->free_blocks - cached;
        rest_b += (e->free_blocks - cached) * e->size;
    }
    fprintf(f, "<malloc version=\"1\">\n<heap nr=\"0\">\n<sizes>\n");
    uint64_t from = 1;
    for (unsigned i = 0; i < st.nclasses; i++) {
        const struct hak_stats_class *e = &st.classes[i];
        if (e->allocs || e->live_blocks || e->slabs)
            fprintf(f,
                    "  <size from=\"%" PRIu64 "\" to=\"%" PRIu64 "\" total=\"%" PRIu64 "\" count=\"%" PRIu64
                    "\" class=\"%u\" live=\"%" PRIu64 "\" live_bytes=\"%" PRIu64 "\" cached=\"%" PRIu64
                    "\" slabs=\"%" PRIu64 "\" allocs=\"%" PRIu64 "\" frees=\"%" PRIu64 "\" refills=\"%" PRIu64 "\"/>\n",
                    from, e->size, e->free_blocks * e->size, e->free_blocks, i + 1, e->live_blocks, e->live_bytes,
                    e->cached_blocks, e->slabs, e->allocs, e->frees, e->refills);
        from = e->size + 1;
    }
    fprintf(f, "</sizes>\n");
    for (int top = 0; top < 2; top++) {
        fprintf(f, "<total type=\"fast\" count=\"%" PRIu64 "\" size=\"%" PRIu64 "\"/>\n", fast_n, fast_b);
        fprintf(f, "<total type=\"rest\" count=\"%" PRIu64 "\" size=\"%" PRIu64 "\"/>\n", rest_n, rest_b);
        if (top)
            fprintf(f, "<total type=\"mmap\" count=\"%" PRIu64 "\" size=\"%" PRIu64 "\"/>\n", st.large_blocks,
                    st.large_bytes);
        fprintf(f, "<system type=\"current\" size=\"%" PRIu64 "\"/>\n", st.mapped);
        fprintf(f, "<system type=\"max\" size=\"%" PRIu64 "\"/>\n", st.peak_rss);
        fprintf(f, "<aspace type=\"total\" size=\"%" PRIu64 "\"/>\n", st.mapped);
        if (!top)
            fprintf(f, "</heap>\n");
    }
    fprintf(f,
            "<hakmem version=\"%d.%d.%d\" stats_version=\"%u\" flags=\"%u\">\n"
            "<bytes allocated=\"%" PRIu64 "\" active=\"%" PRIu64 "\" resident=\"%" PRIu64 "\" mapped=\"%" PRIu64
            "\" metadata=\"%" PRIu64 "\" returned_os=\"%" PRIu64 "\" peak_rss=\"%" PRIu64 "\"/>\n"
            "<large blocks=\"%" PRIu64 "\" bytes=\"%" PRIu64 "\" cached=\"%" PRIu64 "\"/>\n"
            "<superslabs in_use=\"%" PRIu64 "\" warm=\"%" PRIu64 "\" abandoned=\"%" PRIu64 "\" pagerd=\"%" PRIu64
            "\" embedded=\"%" PRIu64 "\" fallbacks=\"%" PRIu64 "\" released=\"%" PRIu64 "\" purged=\"%" PRIu64
            "\" returned_to_daemon=\"%" PRIu64 "\" taken_by_daemon=\"%" PRIu64 "\" unit_bytes_returned=\"%" PRIu64
            "\"/>\n"
            "<os mmap=\"%" PRIu64 "\" munmap=\"%" PRIu64 "\" mprotect=\"%" PRIu64 "\" madvise=\"%" PRIu64 "\"/>\n"
            "</hakmem>\n</malloc>\n",
            HAKMEM_VERSION_MAJOR, HAKMEM_VERSION_MINOR, HAKMEM_VERSION_PATCH, HAK_STATS_VERSION, st.flags,
            st.allocated, st.active, st.resident, st.mapped, st.metadata, st.returned_os, st.peak_rss,
            st.large_blocks, st.large_bytes, st.large_cached, st.ss_in_use, st.ss_warm, st.ss_abandoned,
            st.ss_from_pagerd, st.ss_from_embedded, st.ss_fallbacks, st.ss_released, st.ss_purged,
            st.ss_returned_pagerd, st.ss_taken_pagerd, st.unit_bytes_returned, st.os_mmap, st.os_munmap,
            st.os_mprotect, st.os_madvise);
    return ferror(f) ? -1 : 0;
}

__attribute__((destructor)) static void stats_at_exit(void)
{
    if (hak_opt.stats)
        hak_stats_print();
}
