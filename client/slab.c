/* One slab: a run of units serving one class, owned by one heap.
 *
 * Blocks leave a slab in batches (hak_slab_take: its free list first, then
 * fresh blocks carved in address order) and come back one by one from the
 * owner's cache flushes (hak_slab_put_local) or in bulk from other threads'
 * frees (hak_slab_give_back, from remote.c). used counts the blocks outside
 * the slab; at 0 the slab's units go back to its SuperSlab. Everything here
 * runs under the owning heap's lock. */
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
        __atomic_store_n(&hot->slab[u], (uint16_t)((cls ? unit : u) << 12), __ATOMIC_RELAXED);
        __atomic_store_n(&hot->cls[u], (uint8_t)cls, __ATOMIC_RELAXED);
    }
}

/* Publish how many of s's blocks were carved, for free's check. The secure
 * mode has a block's canaries tell instead: every block passes here. */
static void publish_carved(const struct hak_slab *s)
{
    const struct hak_class *k = &hak_classes[s->cls];
    struct hak_ss_hot *hot = hak_hot(s->ss);
    uint32_t carved = hak_link_key ? k->capacity : s->carved;
    for (unsigned u = s->unit; u < s->unit + k->span; u++)
        __atomic_store_n(&hot->slab[u], (uint16_t)(s->unit << 12 | carved), __ATOMIC_RELAXED);
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
    publish_carved(s);
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

/* About want blocks as a NULL-terminated list in *first: the free list
 * first, whole and without a walk when it holds at most most (a walk reads
 * every block, and blocks other threads freed are cache misses, each in
 * turn), else want of it; then fresh blocks up to want. Moves the slab to
 * the full list when nothing is left. */
unsigned hak_slab_take(struct hak_slab *s, unsigned want, unsigned most, void **first)
{
    const struct hak_class *k = &hak_classes[s->cls];
    void *list = NULL;
    unsigned n = 0;
    if (s->free) {
        list = s->free;
        /* The whole list without a walk, except in secure mode, where every
         * link handed over is checked on the way. */
        if (s->nfree <= (most > want ? most : want) && !hak_link_key) {
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
        unsigned m = want - n, fresh = HAK_CARVE_BYTES / k->size;
        if (m > fresh)
            m = fresh ? fresh : 1;
        if (m > k->capacity - s->carved)
            m = k->capacity - s->carved;
        char *b = (char *)hak_slab_base(s) + (size_t)s->carved * k->size;
        /* Free blocks carry the free mark (the secure mode keeps its own). */
        uintptr_t mark = hak_link_key ? 0 : hak_free_mark;
        for (unsigned i = 0; i + 1 < m; i++, b += k->size) {
            hak_link_set(b, b + k->size);
            if (mark)
                *hak_mark_word(b) = mark;
        }
        hak_link_set(b, list);
        if (mark)
            *hak_mark_word(b) = mark;
        list = (char *)hak_slab_base(s) + (size_t)s->carved * k->size;
        s->carved += m;
        n += m;
        publish_carved(s);
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

/* The blocks first..last (n of them, linked) come back from other threads
 * (remote.c collected them). */
void hak_slab_give_back(struct hak_heap *h, struct hak_slab *s, void *first, void *last, unsigned n)
{
    hak_link_set(last, s->free);
    s->free = first;
    s->nfree += n;
    s->used -= n;
    slab_after_return(h, s);
}
