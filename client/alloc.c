/* Allocation entry points.
 *
 * hak_malloc's fast path, for sizes up to HAK_SMALL_MAX, is a table lookup
 * and a pop from the thread's cache: no lock, no atomic, no call (about ten
 * instructions). Everything else falls into hak_malloc_slow. */
#include <string.h>

#include "internal.h"
#include "hakmem.h"

static inline void *tcache_pop(struct hak_tcache *tc)
{
    void *b = tc->head;
    if (likely(b)) {
        void *next = *(void **)b;
        tc->head = next;
        tc->count--;
        hak_hand_out(b);
        /* Blocks other threads freed are cache misses in a chain, each
         * link read from the block before: fetch the next one's line while
         * the program works on this one. */
        __builtin_prefetch(next);
    }
    return b;
}

static inline __attribute__((always_inline)) void *malloc_fast(size_t size)
{
    size_t cls; /* not unsigned: no zero-extension after the atomic load */
    /* Read before start-up is known to be over, while another thread may be
     * filling the tables: 0 or the class, either way this thread's cache is
     * empty and the slow path waits. Relaxed loads: the same plain load. */
    if (likely(size <= HAK_SMALL_MAX))
        cls = __atomic_load_n(&hak_class_of16[(size + 15) >> 4], __ATOMIC_RELAXED);
    else if (size <= HAK_MID_MAX)
        cls = __atomic_load_n(&hak_class_of1k[(size + 1023) >> 10], __ATOMIC_RELAXED);
    else
        return hak_malloc_slow(size);
    void *b = tcache_pop(&hak_tls.c[cls]);
    if (likely(b))
        return b;
    return hak_malloc_slow(size);
}

void hak_fatal_unmarked(const void *b)
{
    hak_fatal_pointer("malloc", b, "a free block was changed: double free, or a write after free");
}

/* Refill the cache of cls and pop one block. */
static void *refill_and_pop(unsigned cls)
{
    struct hak_heap *h = hak_heap_thread_start();
    if (unlikely(!h))
        return hak_heap_orphan_alloc(cls);
    /* A new thread may just have taken over a parked heap's caches. */
    void *b = tcache_pop(&hak_tls.c[cls]);
    if (b)
        return b;
    hak_decay_maybe(h);
    hak_remote_send(&hak_tls);
    hak_lock(&h->lock);
    unsigned n = hak_heap_refill(h, cls);
    hak_unlock(&h->lock);
    if (unlikely(!n)) {
        errno = ENOMEM;
        return NULL;
    }
    return tcache_pop(&hak_tls.c[cls]);
}

HAK_NOINLINE void *hak_malloc_slow(size_t size)
{
    if (unlikely(!hak_ready()) && !hak_init_slow()) {
        errno = ENOMEM;
        return NULL;
    }
    if (size > HAK_MID_MAX)
        return hak_large_alloc(size, 16, false);
    if (hak_link_key)
        return hak_secure_malloc(size);
    unsigned cls = hak_size_class(size);
    void *b = tcache_pop(&hak_tls.c[cls]);
    return b ? b : refill_and_pop(cls);
}

HAK_API void *hak_malloc(size_t size)
{
    return malloc_fast(size);
}

/* The same for realloc and the aligned calls: hak_malloc's first
 * instruction is rewritten when the profiler is on (prof_patch.c). */
void *hak_malloc_inner(size_t size)
{
    return malloc_fast(size);
}

/* With the profiler on, malloc jumps here: the same after the countdown,
 * which is one subtraction from memory and a sign test. */
void *hak_malloc_sampled(size_t size)
{
    if (likely((hak_tls.prof_left -= (int64_t)size) >= 0))
        return malloc_fast(size);
    return HAK_PROF_MALLOC_CALL(size);
}

static inline void *calloc_body(size_t count, size_t size)
{
    size_t bytes;
    if (unlikely(__builtin_mul_overflow(count, size, &bytes))) {
        errno = ENOMEM;
        return NULL;
    }
    if (bytes > HAK_MID_MAX) {
        if (unlikely(!hak_ready()) && !hak_init_slow()) {
            errno = ENOMEM;
            return NULL;
        }
        return hak_large_alloc(bytes, 16, true);
    }
    void *p = hak_malloc_inner(bytes);
    if (likely(p))
        memset(p, 0, bytes);
    return p;
}

HAK_API void *hak_calloc(size_t count, size_t size)
{
    return calloc_body(count, size);
}

/* With the profiler on, calloc jumps here. */
void *hak_calloc_sampled(size_t count, size_t size)
{
    size_t bytes;
    if (!__builtin_mul_overflow(count, size, &bytes) && (hak_tls.prof_left -= (int64_t)bytes) < 0 && hak_prof_due())
        return hak_prof_alloc(bytes, 16, true, __builtin_return_address(0));
    return calloc_body(count, size);
}

/* Hidden names of the same code, whose address is the code itself, never
 * a program's PLT slot: what prof_patch.c rewrites. */
extern __typeof(hak_malloc) hak_malloc_code __attribute__((alias("hak_malloc"), malloc));
extern __typeof(hak_calloc) hak_calloc_code __attribute__((alias("hak_calloc"), malloc));

#ifndef HAK_NO_OVERRIDE
/* The standard names, for LD_PRELOAD and -lhakclient: aliases, not
 * wrappers, so they cost nothing. */
HAK_API void *malloc(size_t size) __attribute__((alias("hak_malloc")));
HAK_API void *calloc(size_t count, size_t size) __attribute__((alias("hak_calloc")));
#endif
