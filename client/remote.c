/* The remote-free protocol, whole: a block freed by a thread that does not
 * own its SuperSlab, from that free to its owner's free list.
 *
 *   batch   a thread with a heap gathers its remote frees per slab in its TLS
 *           (HAK_RBATCH slabs at a time, up to HAK_RBATCH_MAX blocks each);
 *           a batch's first block's second word holds the batch's last block
 *           and count, so a batch is stepped over in two reads instead of a
 *           walk of every block (each a cache miss: the freer wrote it last);
 *   post    a full batch goes to the outbox of its owner heap (HAK_OUTBOX
 *           owners at a time), chained to the batches already there;
 *   ship    an outbox that holds HAK_OUTBOX_MAX blocks or HAK_OUTBOX_BYTES,
 *           one taken for another owner, and every outbox at the thread's
 *           slow paths and exit, goes onto the owner's inbox with one CAS:
 *           one atomic operation on the owner's line per few hundred blocks;
 *           its batches are walked (each re-checked for its owner) only if
 *           the owner abandoned SuperSlabs since the first was posted;
 *   drain   the owner, in its slow paths, takes its whole inbox and gives
 *           each batch back to its slab; it never scans its slabs;
 *   slab    a batch whose SuperSlab the owner no longer has, and a block
 *           that cannot be batched (no heap, secure mode, a cache flush
 *           into a SuperSlab given away), goes onto its slab's remote list;
 *           the push that finds the list empty puts the slab on the owner's
 *           notify stack (once: the slab's notify flag), which the drain
 *           collects too; an abandoned SuperSlab's adopter collects them all;
 *   help    a thread that ships (or notifies) the HAK_HELP_DRAIN-th batch
 *           since the owner's last drain drains it itself (heap.c): an owner
 *           that does not allocate would keep that memory from use;
 *   wait    a heap giving SuperSlabs away first waits until no freer is
 *           between reading their owner and pushing onto its inbox or stack,
 *           then drains: what is not its own any more goes to the slabs.
 *
 * Heaps are never unmapped, so a freer holding a stale owner pointer touches
 * valid memory. A block on its way stays counted in its slab's used, so the
 * slab, and its SuperSlab, cannot go away while the block waits. */
#include <string.h>

#include "internal.h"

/* Put s on its owner's notify stack unless it is there already. inflight
 * lets a heap that gives SuperSlabs away wait until no freer can still push
 * onto its stack. Returns the owner when it should be drained for. */
static struct hak_heap *notify_owner(struct hak_ss_hot *hot, struct hak_slab *s)
{
    struct hak_heap *h = atomic_load(&hot->owner), *idle = NULL;
    if (!HAK_OWNER_IS_HEAP(h))
        return NULL; /* abandoned: the adopter collects every slab */
    atomic_fetch_add(&h->inflight, 1);
    uint32_t zero = 0;
    if (atomic_load(&hot->owner) == h && atomic_compare_exchange_strong(&s->notify, &zero, 1)) {
        struct hak_slab *top = atomic_load_explicit(&h->notify_head, HAK_RELAXED);
        do
            s->notify_next = top;
        while (!atomic_compare_exchange_weak_explicit(&h->notify_head, &top, s,
                                                      memory_order_release, HAK_RELAXED));
        /* A count for a heuristic: increments that race may be lost. */
        uint32_t n = atomic_load_explicit(&h->notify_pushes, HAK_RELAXED) + 1;
        atomic_store_explicit(&h->notify_pushes, n, HAK_RELAXED);
        if (n % HAK_HELP_DRAIN == 0)
            idle = h;
    }
    atomic_fetch_sub(&h->inflight, 1);
    return idle;
}

/* The second word of a batch's first block: its last block, and its count
 * less one in the top byte (user addresses are below 2^56), in place of
 * the free mark (internal.h) until the batch reaches its slab. Blocks are
 * at least 16 bytes. The secure mode keeps its own mark there and walks
 * every link. */
#define BATCH_COUNT_SHIFT 56
_Static_assert(HAK_RBATCH_MAX <= 256, "a batch's count fits the top byte of its word");
static inline uintptr_t batch_pack(const void *last, unsigned n)
{
    return (uintptr_t)last | (uintptr_t)(n - 1) << BATCH_COUNT_SHIFT;
}
static inline unsigned batch_count(uintptr_t w)
{
    return (unsigned)(w >> BATCH_COUNT_SHIFT) + 1;
}
static inline uintptr_t *batch_word(void *first)
{
    return hak_mark_word(first);
}

/* A batch's word read back: its last block must be one of the first's
 * slab. Anything else is a block freed again on its way home (its word is
 * then the free mark, or what the program wrote after that block was
 * handed out again): reported before the word is followed. */
static HAK_NOINLINE void bad_batch(const void *first, uintptr_t w)
{
    if (w == hak_free_mark)
        hak_fatal_pointer("free", first, "double free (freed again on its way back to its owner)");
    hak_fatal_pointer("free", first, "a block on its way back to its owner was changed: double free, or a write after free");
}
static inline void *batch_last(const void *first, uintptr_t w)
{
    uintptr_t last = w & (((uintptr_t)1 << BATCH_COUNT_SHIFT) - 1), off = last - hak_arena.base;
    uintptr_t foff = (uintptr_t)first - hak_arena.base;
    if (unlikely(off >= hak_arena.size || (off ^ foff) >> HAK_SS_SHIFT || batch_count(w) > HAK_RBATCH_MAX))
        bad_batch(first, w);
    struct hak_ss_hot *hot = hak_hot((uint32_t)(foff >> HAK_SS_SHIFT));
    unsigned u = (unsigned)(off >> HAK_UNIT_SHIFT) & (HAK_UNITS - 1);
    unsigned fu = (unsigned)(foff >> HAK_UNIT_SHIFT) & (HAK_UNITS - 1);
    unsigned cls = hak_hot_cls_relaxed(hot, u);
    if (unlikely(!cls || hak_hot_head(hot, u) != hak_hot_head(hot, fu) ||
                 !hak_hot_carved_block(hot, u, cls, hak_slab_offset(off, hot, u))))
        bad_batch(first, w);
    return (void *)last;
}

/* The n blocks first..last (linked) onto s's remote list. */
static struct hak_heap *push(struct hak_slab *s, void *first, void *last, unsigned n)
{
    if (!hak_link_key)
        *batch_word(first) = batch_pack(last, n);
    void *top = atomic_load_explicit(&s->remote, HAK_RELAXED);
    do
        hak_link_set(last, top);
    while (!atomic_compare_exchange_weak_explicit(&s->remote, &top, first, memory_order_seq_cst,
                                                  HAK_RELAXED));
    return top ? NULL : notify_owner(hak_hot(s->ss), s);
}

/* The batch that starts at first: its last block and count. */
static inline void *batch_end(void *first, unsigned *n)
{
    uintptr_t w = *batch_word(first);
    *n = batch_count(w);
    return batch_last(first, w);
}

/* Each batch of a chain onto its slab's remote list. */
static void scatter(void *b)
{
    while (b) {
        unsigned n;
        void *last = batch_end(b, &n), *next = hak_link_get(last);
        hak_link_set(last, NULL);
        push(hak_slab_of(b), b, last, n);
        b = next;
    }
}

/* An outbox onto its owner's inbox. Emptied before its blocks go out: a
 * fork child that finds a thread stopped in between loses them (a leak),
 * never pushes them twice. */
static struct hak_heap *ship(struct hak_outbox *o)
{
    struct hak_heap *h = o->heap, *idle = NULL;
    void *first = o->first, *last = o->last;
    uint32_t batches = o->batches, since = o->gave_away;
    o->heap = NULL;
    o->first = o->last = NULL;
    o->n = o->batches = 0;
    o->bytes = 0;
    atomic_fetch_add(&h->inflight, 1);
    /* Batches of SuperSlabs h gave away since they were posted go to their
     * slabs, whose new owner hears of them. If h gave none away since the
     * first post (its count, read after inflight: one that gives away later
     * waits for this push, then drains), every batch is still its own. */
    if (atomic_load(&h->gave_away) != since) {
        last = NULL;
        for (void **link = &first; *link;) {
            void *b = *link;
            unsigned n;
            void *end = batch_end(b, &n), *next = hak_link_get(end);
            if (atomic_load(&hak_hot(hak_ss_of(b))->owner) == h) {
                last = end;
                link = (void **)end;
                continue;
            }
            *link = next; /* plain links: batches are never made in secure mode */
            hak_link_set(end, NULL);
            push(hak_slab_of(b), b, end, n);
            batches--;
        }
    }
    if (first) {
        void *top = atomic_load_explicit(&h->inbox, HAK_RELAXED);
        do
            hak_link_set(last, top);
        while (!atomic_compare_exchange_weak_explicit(&h->inbox, &top, first, memory_order_release, HAK_RELAXED));
        /* A count for a heuristic: increments that race may be lost. */
        uint32_t before = atomic_load_explicit(&h->notify_pushes, HAK_RELAXED);
        atomic_store_explicit(&h->notify_pushes, before + batches, HAK_RELAXED);
        if ((before + batches) / HAK_HELP_DRAIN != before / HAK_HELP_DRAIN)
            idle = h;
    }
    atomic_fetch_sub(&h->inflight, 1);
    return idle;
}

/* A batch into the outbox of its owner (onto its slab's remote list when
 * no heap owns it: the adopter collects it there). */
static struct hak_heap *post(struct hak_tls *t, struct hak_slab *s, void *first, void *last, unsigned n)
{
    /* The owner and class from the block's address: the slab's line is the
     * owner's, busy with its refills. */
    struct hak_ss_hot *hot = hak_hot(hak_ss_of(first));
    struct hak_heap *h = atomic_load_explicit(&hot->owner, HAK_RELAXED), *idle = NULL;
    if (!HAK_OWNER_IS_HEAP(h))
        return push(s, first, last, n);
    struct hak_outbox *o = NULL;
    for (unsigned i = 0; i < HAK_OUTBOX; i++) {
        if (t->out[i].heap == h) {
            o = &t->out[i];
            break;
        }
        if (!o && !t->out[i].heap)
            o = &t->out[i];
    }
    if (!o) {
        o = &t->out[t->out_next++ % HAK_OUTBOX];
        idle = ship(o);
    }
    if (o->heap != h) {
        /* The count, then the owner again: a give-away the count missed
         * shows in the owner; one after it, in the count at ship. */
        uint32_t since = atomic_load_explicit(&h->gave_away, memory_order_acquire);
        if (atomic_load_explicit(&hot->owner, HAK_RELAXED) != h) {
            struct hak_heap *other = push(s, first, last, n);
            return other ? other : idle;
        }
        o->gave_away = since;
        o->last = last;
    }
    *batch_word(first) = batch_pack(last, n);
    hak_link_set(last, o->first);
    o->first = first;
    o->heap = h;
    o->n += n;
    o->batches++;
    unsigned cls = hak_hot_cls_relaxed(hot, (unsigned)((uintptr_t)first >> HAK_UNIT_SHIFT) & (HAK_UNITS - 1));
    o->bytes += (uint64_t)n * hak_classes[cls].size;
    if (o->n >= HAK_OUTBOX_MAX || o->bytes >= HAK_OUTBOX_BYTES) {
        struct hak_heap *full = ship(o);
        if (full)
            idle = full;
    }
    return idle;
}

/* The entry is cleared before its blocks go out, as an outbox is. */
static struct hak_heap *send(struct hak_tls *t, unsigned i)
{
    struct hak_rbatch *b = &t->rb[i];
    struct hak_slab *s = b->slab;
    void *first = b->head, *last = b->tail;
    b->slab = NULL;
    b->key = 0;
    t->rb_used &= ~(1ull << i);
    __atomic_signal_fence(__ATOMIC_SEQ_CST); /* cleared first, for a fork child */
    return post(t, s, first, last, b->n);
}

struct hak_heap *hak_remote_push_one(struct hak_slab *s, void *p)
{
    return push(s, p, p, 1);
}

/* A block h's cache held goes home: into its slab if h still owns its
 * SuperSlab, else (given away while h was idle) to the new owner. Heap
 * locked. */
void hak_remote_put_back(struct hak_heap *h, void *p)
{
    if (likely(atomic_load_explicit(&hak_hot(hak_ss_of(p))->owner, HAK_RELAXED) == h))
        hak_slab_put_local(h, p);
    else
        push(hak_slab_of(p), p, p, 1);
}

/* A free into s that does not fit the batch in slot i: the batch there goes
 * out and p starts a new one. */
struct hak_heap *hak_remote_restart(struct hak_tls *t, unsigned i, struct hak_slab *s, void *p)
{
    struct hak_rbatch *b = &t->rb[i];
    struct hak_heap *idle = b->slab ? send(t, i) : NULL;
    hak_link_set(p, NULL);
    b->head = b->tail = p;
    b->n = 1;
    b->key = hak_rbatch_key(s->ss, s->unit);
    t->rb_used |= 1ull << i;
    __atomic_signal_fence(__ATOMIC_SEQ_CST); /* the slab last, for a fork child */
    b->slab = s;
    return idle;
}

struct hak_heap *hak_remote_send_full(struct hak_tls *t, unsigned i)
{
    return send(t, i);
}

struct hak_heap *hak_remote_flush(struct hak_tls *t)
{
    struct hak_heap *idle = NULL, *h;
    while (t->rb_used)
        if ((h = send(t, (unsigned)__builtin_ctzll(t->rb_used))) != NULL)
            idle = h;
    for (unsigned i = 0; i < HAK_OUTBOX; i++)
        if (t->out[i].heap && (h = ship(&t->out[i])) != NULL)
            idle = h;
    return idle;
}

void hak_remote_wait(struct hak_heap *h)
{
    for (unsigned spins = 0; atomic_load(&h->inflight); spins++) {
        if (spins < 64)
            hak_cpu_relax();
        else
            sched_yield();
    }
}

/* Take every block other threads freed into s: its end and count are found
 * batch by batch (in the secure mode, block by block, each link checked). */
void hak_remote_collect(struct hak_heap *h, struct hak_slab *s)
{
    /* seq_cst: it must not move before the store that precedes it in the
     * drain (notify cleared) and in adoption (owner set). */
    void *list = atomic_exchange_explicit(&s->remote, NULL, memory_order_seq_cst);
    if (!list)
        return;
    void *tail = list, *next;
    unsigned n = 1;
    if (hak_link_key) {
        while ((next = hak_slab_next(s, tail)) != NULL) {
            tail = next;
            if (unlikely(++n > s->used))
                hak_fatal_pointer("free", list, "double free (more blocks returned than handed out)");
        }
    } else {
        n = 0;
        for (void *b = list; b; b = *(void **)tail) {
            uintptr_t w = *batch_word(b);
            tail = batch_last(b, w);
            *batch_word(b) = hak_free_mark; /* home: a free block's again */
            n += batch_count(w);
            if (unlikely(n > s->used))
                hak_fatal_pointer("free", list, "double free (more blocks returned than handed out)");
        }
    }
    hak_slab_give_back(h, s, list, tail, n);
}

/* Give the batches of h's inbox back to their slabs; one of a SuperSlab no
 * longer h's goes onto its slab's remote list. Heap locked. */
static void drain_inbox(struct hak_heap *h)
{
    void *b = atomic_exchange_explicit(&h->inbox, NULL, memory_order_acquire);
    while (b) {
        unsigned n;
        void *last = batch_end(b, &n), *next = hak_link_get(last);
        struct hak_slab *s = hak_slab_of(b);
        if (atomic_load_explicit(&hak_hot(s->ss)->owner, HAK_RELAXED) == h) {
            if (unlikely(n > s->used))
                hak_fatal_pointer("free", b, "double free (more blocks returned than handed out)");
            *batch_word(b) = hak_free_mark;
            hak_slab_give_back(h, s, b, last, n);
        } else {
            hak_link_set(last, NULL);
            push(s, b, last, n);
        }
        b = next;
    }
}

/* Take what other threads sent h: its inbox, then the slabs they told it
 * about. A slab whose SuperSlab is no longer h's only has its flag cleared,
 * and is passed on to its current owner if blocks are waiting. Heap
 * locked. */
void hak_remote_drain(struct hak_heap *h)
{
    atomic_store_explicit(&h->notify_pushes, 0, HAK_RELAXED);
    drain_inbox(h);
    struct hak_slab *s = atomic_exchange_explicit(&h->notify_head, NULL, memory_order_acquire);
    while (s) {
        struct hak_slab *next = s->notify_next;
        struct hak_ss_hot *hot = hak_hot(s->ss);
        atomic_store(&s->notify, 0);
        if (atomic_load(&hot->owner) == h) {
            if (s->cls && hak_hot_head(hot, s->unit) == s->unit)
                hak_remote_collect(h, s);
        } else if (atomic_load(&s->remote)) {
            notify_owner(hot, s);
        }
        s = next;
    }
}

/* Fork child. A thread stopped mid-notify can leave a slab flagged but on no
 * stack: clear every flag of h's SuperSlabs and collect what waits. */
void hak_remote_resync(struct hak_heap *h, uint32_t first_ss)
{
    for (uint32_t idx = first_ss; idx != HAK_NO_SS; idx = hak_cold(idx)->next) {
        struct hak_ss_hot *hot = hak_hot(idx);
        for (unsigned u = 0; u < HAK_UNITS; u++) {
            struct hak_slab *s = &hak_cold(idx)->slab[u];
            atomic_store(&s->notify, 0);
            if (hot->cls[u] && hak_hot_head(hot, u) == u && atomic_load(&s->remote))
                hak_remote_collect(h, s);
        }
    }
}

/* Fork child: the batches and outboxes of a thread that is gone go to
 * their slabs. */
void hak_remote_fork_child(struct hak_tls *t)
{
    for (unsigned i = 0; i < HAK_RBATCH; i++)
        if (t->rb[i].slab)
            push(t->rb[i].slab, t->rb[i].head, t->rb[i].tail, t->rb[i].n);
    memset(t->rb, 0, sizeof t->rb);
    t->rb_used = 0;
    for (unsigned i = 0; i < HAK_OUTBOX; i++)
        if (t->out[i].heap)
            scatter(t->out[i].first);
    memset(t->out, 0, sizeof t->out);
}
