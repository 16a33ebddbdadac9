/* One slab: a run of units serving one class, owned by one heap.
 *
 * Blocks leave a slab in batches (hak_slab_take: its free list first, then
 * fresh blocks carved in address order) and come back one by one from the
 * owner's cache flushes (hak_slab_put_local) or in bulk from other threads'
 * frees (hak_slab_collect). used counts the blocks outside the slab; at 0 the
 * slab's units go back to its SuperSlab. Everything here runs under the
 * owning heap's lock, except hak_slab_notify_owner. */
#include "internal.h"

void hak_slab_list_push(struct hak_heap *h, struct hak_slab *s, unsigned list)
{
    struct hak_slab **head = list == HAK_LIST_PARTIAL ? &h->partial[s->cls] : &h->full[s->cls];
    s->list = (uint8_t)list;
    s->prev = NULL;
    s->next = *head;
    if (*head)
        (*head)->prev = s;
    *head = s;
}

void hak_slab_list_remove(struct hak_heap *h, struct hak_slab *s)
{
    if (s->list == HAK_LIST_NONE)
        return;
    struct hak_slab **head = s->list == HAK_LIST_PARTIAL ? &h->partial[s->cls] : &h->full[s->cls];
    if (s->prev)
        s->prev->next = s->next;
    else
        *head = s->next;
    if (s->next)
        s->next->prev = s->prev;
    s->next = s->prev = NULL;
    s->list = HAK_LIST_NONE;
}

static void set_units(uint32_t idx, unsigned unit, unsigned span, unsigned cls)
{
    struct hak_ss_hot *hot = hak_hot(idx);
    for (unsigned u = unit; u < unit + span; u++) {
        __atomic_store_n(&hot->head[u], (uint8_t)(cls ? unit : u), __ATOMIC_RELAXED);
        __atomic_store_n(&hot->cls[u], (uint8_t)cls, __ATOMIC_RELAXED);
    }
}

static uint16_t span_mask(unsigned unit, unsigned span)
{
    return (uint16_t)(((1u << span) - 1) << unit);
}

void hak_slab_init(struct hak_heap *h, uint32_t idx, unsigned unit, unsigned cls)
{
    struct hak_ss *ss = hak_cold(idx);
    struct hak_slab *s = &ss->slab[unit];
    unsigned span = hak_classes[cls].span;
    HAK_ASSERT(atomic_load(&s->remote) == NULL);
    s->free = NULL;
    s->used = s->nfree = s->carved = 0;
    s->cls = (uint8_t)cls;
    s->list = HAK_LIST_NONE;
    set_units(idx, unit, span, cls);
    ss->free_units &= (uint16_t)~span_mask(unit, span);
    ss->dirty_units &= (uint16_t)~span_mask(unit, span);
    hak_slab_list_push(h, s, HAK_LIST_PARTIAL);
}

/* Give the slab's units back to its SuperSlab. */
void hak_slab_release(struct hak_heap *h, struct hak_slab *s)
{
    HAK_ASSERT(s->used == 0 && atomic_load(&s->remote) == NULL);
    unsigned span = hak_classes[s->cls].span;
    hak_slab_list_remove(h, s);
    set_units(s->ss, s->unit, span, 0);
    s->cls = 0;
    s->free = NULL;
    s->nfree = s->carved = 0;
    struct hak_ss *ss = hak_cold(s->ss);
    ss->free_units |= span_mask(s->unit, span);
    uint32_t now = hak_now_ms();
    for (unsigned u = s->unit; u < s->unit + span; u++)
        ss->unit_idle_ms[u] = now;
    ss->dirty_units |= span_mask(s->unit, span);
    hak_ss_unit_freed(h, s->ss);
}

/* The link stored in free block p of slab s. In secure mode it is decoded
 * and must lead to another block of the same slab (or nowhere): anything
 * else means the block was written after it was freed. */
void *hak_slab_next(const struct hak_slab *s, const void *p)
{
    void *next = hak_link_get(p);
    if (hak_link_key && next) {
        /* A block of this slab, and one already carved. */
        const struct hak_class *k = &hak_classes[s->cls];
        uintptr_t off = (uintptr_t)next - (uintptr_t)hak_slab_base(s);
        if (off >= (uintptr_t)k->span << HAK_UNIT_SHIFT || hak_rotr32((uint32_t)off * k->inv, k->shift) >= s->carved)
            hak_fatal_pointer("malloc", p, "free list corrupted: a freed block was overwritten (use after free or overflow)");
    }
    return next;
}

/* Up to want blocks as a NULL-terminated list in *first: the local free
 * list first (whole, when it fits, without walking it), then fresh blocks.
 * Moves the slab to the full list when nothing is left. */
unsigned hak_slab_take(struct hak_slab *s, unsigned want, void **first)
{
    const struct hak_class *k = &hak_classes[s->cls];
    void *list = NULL;
    unsigned n = 0;
    if (s->free) {
        list = s->free;
        /* The whole list without a walk, except in secure mode, where every
         * link handed over is checked on the way. */
        if (s->nfree <= want && !hak_link_key) {
            n = s->nfree;
            s->free = NULL;
        } else {
            void *last = list;
            unsigned take = s->nfree < want ? s->nfree : want;
            for (n = 1; n < take; n++)
                last = hak_slab_next(s, last);
            s->free = hak_slab_next(s, last);
            hak_link_set(last, NULL);
        }
        s->nfree -= n;
    }
    if (n < want && s->carved < k->capacity) {
        /* Carving writes a link into every block, so it faults their
         * pages in: at most HAK_CARVE_BYTES of fresh memory per call keeps one
         * malloc from paying for many page faults at once. */
        unsigned m = want - n, most = HAK_CARVE_BYTES / k->size;
        if (m > most)
            m = most ? most : 1;
        if (m > k->capacity - s->carved)
            m = k->capacity - s->carved;
        char *b = (char *)hak_slab_base(s) + (size_t)s->carved * k->size;
        for (unsigned i = 0; i + 1 < m; i++, b += k->size)
            hak_link_set(b, b + k->size);
        hak_link_set(b, list);
        list = (char *)hak_slab_base(s) + (size_t)s->carved * k->size;
        s->carved += m;
        n += m;
    }
    s->used += n;
    *first = list;
    return n;
}

/* After blocks came back: release an empty slab at once (making one again
 * costs no system call and carving touches the same warm units), or move a
 * full slab back to the partial list. */
static void slab_after_return(struct hak_heap *h, struct hak_slab *s)
{
    if (s->used == 0)
        hak_slab_release(h, s);
    else if (s->list == HAK_LIST_FULL) {
        hak_slab_list_remove(h, s);
        hak_slab_list_push(h, s, HAK_LIST_PARTIAL);
    }
}

void hak_slab_put_local(struct hak_heap *h, void *p)
{
    struct hak_slab *s = hak_slab_of(p);
    if (unlikely(s->used == 0))
        hak_fatal_pointer("free", p, "double free (slab has no live blocks)");
    hak_link_set(p, s->free);
    s->free = p;
    s->nfree++;
    s->used--;
    if (s->used == 0 || s->list == HAK_LIST_FULL)
        slab_after_return(h, s);
}

/* Take every block other threads freed into this slab. */
void hak_slab_collect(struct hak_heap *h, struct hak_slab *s)
{
    /* seq_cst: it must not move before the store that precedes it in the
     * drain (notify cleared) and in adoption (owner set). */
    void *list = atomic_exchange_explicit(&s->remote, NULL, memory_order_seq_cst);
    if (!list)
        return;
    void *tail = list, *next;
    unsigned n = 1;
    while ((next = hak_slab_next(s, tail)) != NULL) {
        tail = next;
        if (unlikely(++n > s->used))
            hak_fatal_pointer("free", list, "double free (more blocks returned than handed out)");
    }
    hak_link_set(tail, s->free);
    s->free = list;
    s->nfree += n;
    s->used -= n;
    slab_after_return(h, s);
}

/* Tell the SuperSlab's owner that s has remote frees, unless it is told
 * already. Runs on any thread; heaps are never unmapped, so a stale owner is
 * safe to touch. inflight lets a retiring heap wait until no freer can still
 * push onto its stack (see hak_heap_thread_exit). Returns the owner when
 * every HAK_HELP_DRAIN-th slab since its last drain was just pushed: an
 * owner that does not drain (blocked, or no longer allocating) would keep
 * that memory out of use, so the caller may drain for it. */
struct hak_heap *hak_slab_notify_owner(struct hak_ss_hot *hot, struct hak_slab *s)
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
        if ((atomic_fetch_add_explicit(&h->notify_pushes, 1, HAK_RELAXED) + 1) % HAK_HELP_DRAIN == 0)
            idle = h;
    }
    atomic_fetch_sub(&h->inflight, 1);
    return idle;
}
