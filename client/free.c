/* Release entry points.
 *
 * hak_free's fast path: is the address in the arena, does this thread own
 * its SuperSlab, is it the start of a block of the class there; then a push
 * onto the thread's cache, the block's free mark set (internal.h). One
 * side-table line is read, the block only written, no lock, no atomic
 * read-modify-write, no call. A block of another thread goes to remote.c
 * (batched per slab, then per owner: one CAS per few hundred blocks).
 * Anything that fails a check is reported. */
#include "internal.h"
#include "hakmem.h"

static _Atomic uint64_t remote_frees[HAK_NCLASS];

uint64_t hak_remote_frees(unsigned cls)
{
    return atomic_load_explicit(&remote_frees[cls], HAK_RELAXED);
}

/* A block of our own that did not fit the fast path: a bad pointer, a
 * double free at the top of the cache (other double frees are caught when
 * the block would be handed out again: the free mark, internal.h), or a
 * full cache. carved: of the slab's blocks. */
static HAK_NOINLINE void free_local_slow(void *p, unsigned cls, uint32_t x, uint32_t carved)
{
    struct hak_tls *t = &hak_tls;
    struct hak_tcache *tc = &t->c[cls];
    const struct hak_class *k = &hak_classes[cls];
    if (!cls || !t->heap)
        hak_fatal_pointer("free", p, "not an allocated block (no slab there)");
    if (hak_link_key) { /* its block starts a header before it */
        if (!hak_secure_at_block(k, x))
            hak_fatal_pointer("free", p, "not the start of a block (interior or misaligned pointer)");
        hak_secure_free_local((char *)p - HAK_SECURE_HDR, cls);
        return;
    }
    if (!hak_class_is_block(k, x))
        hak_fatal_pointer("free", p, "not the start of a block (interior or misaligned pointer)");
    if (hak_class_index(k, x) >= carved)
        hak_fatal_pointer("free", p, "not an allocated block (never handed out)");
    if (p == tc->head)
        hak_fatal_pointer("free", p, "double free");
    /* A refill may leave more than the capacity (a slab's whole free
     * list): trimming that is no swing of the class. */
    bool overfull = tc->count > tc->cap;
    *hak_mark_word(p) = hak_free_mark;
    *(void **)p = tc->head;
    tc->head = p;
    tc->count++;
    tc->frees++;
    struct hak_heap *h = t->heap;
    hak_remote_send(t);
    hak_lock(&h->lock);
    if (!overfull)
        hak_heap_cache_adapt(h, cls, true);
    hak_heap_flush(h, cls, tc->cap / 2);
    hak_unlock(&h->lock);
    hak_decay_maybe(h);
}

/* The slab of p, a block in the arena that this thread does not own, once
 * p is checked to be the start of an allocated block; *unit: the slab's
 * first unit. */
static inline struct hak_slab *remote_slab(void *p, uintptr_t off, struct hak_heap *owner, unsigned *unit,
                                           unsigned *cls)
{
    uint32_t idx = (uint32_t)(off >> HAK_SS_SHIFT);
    struct hak_ss_hot *hot = &hak_arena.hot[idx];
    if (unlikely(!HAK_OWNER_IS_HEAP(owner) && owner != HAK_OWNER_ABANDONED))
        hak_fatal_pointer("free", p, "not an allocated block (its SuperSlab is not in use)");
    unsigned u = (unsigned)(off >> HAK_UNIT_SHIFT) & (HAK_UNITS - 1);
    *cls = hak_hot_cls_relaxed(hot, u);
    if (unlikely(!*cls))
        hak_fatal_pointer("free", p, "not an allocated block (no slab there)");
    *unit = hak_hot_head(hot, u);
    uint32_t x = hak_slab_offset(off, hot, u);
    if (unlikely(!hak_class_is_block(&hak_classes[*cls], x)))
        hak_fatal_pointer("free", p, "not the start of a block (interior or misaligned pointer)");
    if (unlikely(!hak_hot_carved_block(hot, u, *cls, x)))
        hak_fatal_pointer("free", p, "not an allocated block (never handed out)");
    return &hak_cold(idx)->slab[*unit];
}

static void count_remote(unsigned cls)
{
    if (hak_opt.stats)
        atomic_fetch_add_explicit(&remote_frees[cls], 1, HAK_RELAXED);
}

/* The rare cases of a block this thread does not own: its SuperSlab is
 * abandoned (this thread takes it over), the thread has no heap yet (it
 * gets one, so its remote frees are batched and sent at its exit), or is
 * past its exit, or the secure mode is on. */
HAK_NO_TLS_NULL_CHECK static HAK_NOINLINE void free_remote_slow(void *p, uintptr_t off, struct hak_heap *owner)
{
    uint32_t idx = (uint32_t)(off >> HAK_SS_SHIFT);
    struct hak_heap *me = hak_tls.heap;
    if (!me && hak_tls.state == HAK_THREAD_NEW)
        me = hak_heap_thread_start();
    if (owner == HAK_OWNER_ABANDONED && me && idx < __atomic_load_n(&hak_arena.cursor, __ATOMIC_ACQUIRE)) {
        /* Its thread is gone: this thread takes the SuperSlab over, and
         * the block is then one of its own. */
        hak_lock(&me->lock);
        bool mine = hak_ss_claim(me, idx);
        hak_ss_settle(me);
        hak_unlock(&me->lock);
        if (mine) {
            hak_free(p);
            return;
        }
        owner = atomic_load(&hak_hot(idx)->owner);
    }
    unsigned unit, cls;
    void *b = p; /* the block: in secure mode a header before p */
    if (hak_link_key) {
        if ((off & (HAK_SS_SIZE - 1)) < HAK_SECURE_HDR)
            hak_fatal_pointer("free", p, "not the start of a block (interior or misaligned pointer)");
        b = (char *)p - HAK_SECURE_HDR;
        off -= HAK_SECURE_HDR;
    }
    struct hak_slab *s = remote_slab(b, off, owner, &unit, &cls);
    if (hak_link_key)
        hak_secure_retire(b, cls, "free");
    else
        *hak_mark_word(p) = hak_free_mark;
    struct hak_heap *idle = me && !hak_link_key ? hak_remote_free(&hak_tls, hak_remote_slot(idx, unit), s, p)
                                                : hak_remote_push_one(s, b);
    if (idle)
        hak_heap_help_drain(idle);
    count_remote(cls);
}

/* A block in the arena that this thread does not own, in the general case:
 * into this thread's batch for its slab (remote.c), a new batch when the
 * slot holds another slab's. */
HAK_NO_TLS_NULL_CHECK static HAK_NOINLINE void free_remote_other(void *p, uintptr_t off, struct hak_heap *owner)
{
    uint32_t idx = (uint32_t)(off >> HAK_SS_SHIFT);
    struct hak_tls *t = &hak_tls;
    if (unlikely(owner == HAK_OWNER_ABANDONED || !t->heap || hak_link_key)) {
        free_remote_slow(p, off, owner);
        return;
    }
    unsigned unit, cls;
    struct hak_slab *s = remote_slab(p, off, owner, &unit, &cls);
    *hak_mark_word(p) = hak_free_mark;
    struct hak_heap *idle = hak_remote_free(t, hak_remote_slot(idx, unit), s, p);
    if (unlikely(idle != NULL))
        hak_heap_help_drain(idle);
    count_remote(cls);
}

/* After a free into batch b: a full batch goes out; the count. */
HAK_NO_TLS_NULL_CHECK static HAK_NOINLINE void free_remote_done(struct hak_tls *t, struct hak_rbatch *b, unsigned cls)
{
    if (b->n >= HAK_RBATCH_MAX) {
        struct hak_heap *idle = hak_remote_send_full(t, (unsigned)(b - t->rb));
        if (idle)
            hak_heap_help_drain(idle);
    }
    count_remote(cls);
}

/* Free p into b, the batch slot of its slab, which holds another slab's
 * batch (that goes out first, by the general path) or none. */
HAK_NO_TLS_NULL_CHECK static HAK_NOINLINE void free_remote_first(void *p, uintptr_t off, struct hak_heap *owner, struct hak_rbatch *b,
                                           uint32_t key, unsigned cls)
{
    struct hak_tls *t = &hak_tls;
    /* Batches are made only by a thread with a heap (its exit sends them)
     * outside the secure mode: a batch found in the slot says both. */
    if (b->key || !t->heap || hak_link_key) {
        free_remote_other(p, off, owner);
        return;
    }
    *hak_mark_word(p) = hak_free_mark;
    uint32_t unit = key - 1; /* the slab's first unit in the arena */
    hak_remote_restart(t, (unsigned)(b - t->rb), &hak_cold(unit / HAK_UNITS)->slab[unit % HAK_UNITS], p);
    count_remote(cls); /* the slot was empty: restart sent nothing */
}

/* A block of another thread: onto this thread's batch for its slab when
 * the batch is there and every check passes in one test (those of hak_free
 * and remote_slab: a carved block start, an owner that is a heap), else the
 * general path, which tells the cases apart. */
HAK_NO_TLS_NULL_CHECK static HAK_NOINLINE void free_remote(void *p, uintptr_t off, const struct hak_ss_hot *hot, struct hak_heap *owner)
{
    struct hak_tls *t = &hak_tls;
    uint32_t idx = (uint32_t)(off >> HAK_SS_SHIFT);
    unsigned u = (unsigned)(off >> HAK_UNIT_SHIFT) & (HAK_UNITS - 1);
    unsigned cls = hak_hot_cls_relaxed(hot, u), slab = hak_hot_slab_relaxed(hot, u), head = slab >> 12;
    uint32_t x = (uint32_t)(off & (HAK_SS_SIZE - 1)) - (head << HAK_UNIT_SHIFT);
    uint32_t key = hak_rbatch_key(idx, head);
    struct hak_rbatch *b = &t->rb[hak_remote_slot(idx, head)];
    __asm__("" : "+r"(b)); /* kept in a register: gcc would recompute it from the TLS base at each use */
    /* carved <= capacity: an index below it is a block start. Class 0's
     * units carve nothing. */
    if (unlikely(!HAK_OWNER_IS_HEAP(owner)) || unlikely(hak_class_index(&hak_classes[cls], x) >= (slab & HAK_HOT_CARVED_MAX)))
        goto other;
    if (unlikely(b->key != key)) {
        free_remote_first(p, off, owner, b, key, cls); /* a tail call */
        return;
    }
    void *next = b->head;
    if (unlikely(p == next))
        goto other; /* reported there */
    unsigned n = b->n + 1;
    *hak_mark_word(p) = hak_free_mark;
    *(void **)p = next;
    b->head = p;
    b->n = n;
    if (unlikely((n >= HAK_RBATCH_MAX) | (hak_opt.stats != 0)))
        free_remote_done(t, b, cls); /* a tail call: no registers to save here */
    return;
other:
    free_remote_other(p, off, owner);
}

HAK_API void hak_free(void *p)
{
    uintptr_t off = (uintptr_t)p - hak_arena.base;
    if (unlikely(off >= hak_arena.size)) {
        hak_free_generic(p);
        return;
    }
    struct hak_ss_hot *hot = &hak_arena.hot[off >> HAK_SS_SHIFT];
    struct hak_tls *t = &hak_tls;
    struct hak_heap *owner = atomic_load_explicit(&hot->owner, HAK_RELAXED);
    if (unlikely(owner != t->heap)) {
        free_remote(p, off, hot, owner);
        return;
    }
    unsigned u = (unsigned)(off >> HAK_UNIT_SHIFT) & (HAK_UNITS - 1);
    unsigned cls = hak_hot_cls_relaxed(hot, u), slab = hak_hot_slab_relaxed(hot, u);
    uint32_t x = (uint32_t)(off & (HAK_SS_SIZE - 1)) - ((slab >> 12) << HAK_UNIT_SHIFT);
    const struct hak_class *k = &hak_classes[cls];
    struct hak_tcache *tc = &t->c[cls];
    /* A block start among those carved (carved <= capacity): the index of
     * any other offset is past them. */
    uint32_t carved = slab & HAK_HOT_CARVED_MAX;
    if (unlikely((hak_class_index(k, x) >= carved) | (tc->count >= tc->cap) | (p == tc->head))) {
        free_local_slow(p, cls, x, carved);
        return;
    }
    *hak_mark_word(p) = hak_free_mark;
    *(void **)p = tc->head;
    tc->head = p;
    tc->count++;
    tc->frees++;
}

static HAK_NOINLINE void free_not_sampled(void *p)
{
    if (!p)
        return;
    if (hak_large_free(p))
        return;
    hak_fatal_pointer("free", p, "not allocated by hakmem");
}

/* Outside the arena: a sampled block (first: the one frequent case, a
 * jump with no frame; NULL is not in the range), NULL, a large block, or
 * not ours. */
HAK_NOINLINE void hak_free_generic(void *p)
{
    if (hak_prof_owns(p)) {
        hak_prof_block_free(p);
        return;
    }
    free_not_sampled(p);
}

HAK_API void hak_free_sized(void *p, size_t size)
{
    (void)size;
    hak_free(p);
}

HAK_API void hak_free_aligned_sized(void *p, size_t alignment, size_t size)
{
    (void)alignment;
    (void)size;
    hak_free(p);
}

/* The usable size of p, a block of ours (else reported as api's misuse). */
size_t hak_block_usable(const void *p, const char *api)
{
    uintptr_t off = (uintptr_t)p - hak_arena.base;
    if (off >= hak_arena.size) {
        if (hak_prof_owns(p))
            return hak_prof_block_usable(p);
        size_t n = hak_large_usable(p);
        if (!n)
            hak_fatal_pointer(api, p, "not allocated by hakmem");
        return n;
    }
    struct hak_ss_hot *hot = &hak_arena.hot[off >> HAK_SS_SHIFT];
    struct hak_heap *owner = atomic_load(&hot->owner);
    unsigned u = (unsigned)(off >> HAK_UNIT_SHIFT) & (HAK_UNITS - 1);
    unsigned cls = hak_hot_cls_relaxed(hot, u);
    if ((!HAK_OWNER_IS_HEAP(owner) && owner != HAK_OWNER_ABANDONED) || !cls)
        hak_fatal_pointer(api, p, "not an allocated block");
    uint32_t x = hak_slab_offset(off, hot, u);
    if (hak_link_key) { /* the size asked for: the bytes after it are canaries */
        if (!hak_secure_at_block(&hak_classes[cls], x))
            hak_fatal_pointer(api, p, "not the start of a block");
        return hak_secure_usable((const char *)p - HAK_SECURE_HDR, cls, api);
    }
    if (!hak_hot_carved_block(hot, u, cls, x)) /* carved <= capacity */
        hak_fatal_pointer(api, p, "not the start of a block");
    if (((const uintptr_t *)p)[1] == hak_free_mark) /* the free mark (internal.h) */
        hak_fatal_pointer(api, p, "a freed block (use after free)");
    return hak_classes[cls].size;
}

HAK_API size_t hak_usable_size(const void *p)
{
    return p ? hak_block_usable(p, "malloc_usable_size") : 0;
}

#ifndef HAK_NO_OVERRIDE
HAK_API void free(void *p) __attribute__((alias("hak_free")));
HAK_API void free_sized(void *p, size_t size) __attribute__((alias("hak_free_sized")));
HAK_API void free_aligned_sized(void *p, size_t alignment, size_t size)
    __attribute__((alias("hak_free_aligned_sized")));
HAK_API size_t malloc_usable_size(void *p) __attribute__((alias("hak_usable_size")));
#endif
