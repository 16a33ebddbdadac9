/* SuperSlabs as a heap sees them: owned ones with free units (avail), owned
 * ones without (full), emptied ones waiting to be kept or given back
 * (pending); and the process-wide stack of abandoned ones, which any heap
 * may adopt. A slab is placed in this order of preference: free units of a
 * SuperSlab in use, an empty SuperSlab the heap kept, an adopted SuperSlab,
 * a batch from the provider. */
#include "internal.h"

#define AVAIL_SCAN_MAX 64
#define KEEP_EMPTY 1 /* empty SuperSlabs a heap keeps instead of giving back */

/* ---- heap SuperSlab lists (indices, doubly linked through ss->next/prev) ---- */

static uint32_t *hlist_head(struct hak_heap *h, unsigned list)
{
    switch (list) {
    case HAK_SSL_AVAIL:
        return &h->ss_avail;
    case HAK_SSL_FULL:
        return &h->ss_full;
    case HAK_SSL_EMPTY:
        return &h->ss_empty;
    default:
        return &h->ss_pending;
    }
}

static void hlist_push(struct hak_heap *h, uint32_t idx, unsigned list)
{
    struct hak_ss *ss = hak_cold(idx);
    if (list == HAK_SSL_EMPTY)
        h->nempty++;
    uint32_t *head = hlist_head(h, list);
    ss->hlist = (uint8_t)list;
    ss->prev = HAK_NO_SS;
    ss->next = *head;
    if (*head != HAK_NO_SS)
        hak_cold(*head)->prev = idx;
    *head = idx;
}

static void hlist_remove(struct hak_heap *h, uint32_t idx)
{
    struct hak_ss *ss = hak_cold(idx);
    if (ss->hlist == HAK_SSL_NONE)
        return;
    if (ss->hlist == HAK_SSL_EMPTY)
        h->nempty--;
    uint32_t *head = hlist_head(h, ss->hlist);
    if (ss->prev != HAK_NO_SS)
        hak_cold(ss->prev)->next = ss->next;
    else
        *head = ss->next;
    if (ss->next != HAK_NO_SS)
        hak_cold(ss->next)->prev = ss->prev;
    ss->next = ss->prev = HAK_NO_SS;
    ss->hlist = HAK_SSL_NONE;
}

static void hlist_place(struct hak_heap *h, uint32_t idx)
{
    uint16_t fu = hak_cold(idx)->free_units;
    hlist_push(h, idx, fu == HAK_ALL_UNITS ? HAK_SSL_EMPTY : fu ? HAK_SSL_AVAIL : HAK_SSL_FULL);
}

/* ---- placing a new slab ---- */

static int find_run_in(uint16_t units, unsigned span)
{
    if (span == 1)
        return units ? __builtin_ctz(units) : -1;
    uint16_t m = (uint16_t)((1u << span) - 1);
    for (unsigned u = 0; u + span <= HAK_UNITS; u++)
        if (((units >> u) & m) == m)
            return (int)u;
    return -1;
}

static void place_slab(struct hak_heap *h, uint32_t idx, unsigned unit, unsigned cls)
{
    hak_slab_init(h, idx, unit, cls);
    hlist_remove(h, idx);
    hlist_place(h, idx);
}

/* Free units of partly used SuperSlabs first, then an empty one, so that
 * empty ones stay empty and can go back. Among the partly used: the
 * fullest, so that sparse ones can empty out and go back too (a heap that
 * fills whichever comes first ends up with a few live slabs in each of
 * many SuperSlabs); and units whose pages are resident before clean ones,
 * which would fault in new pages while resident ones sit idle. */
static bool place_in_owned(struct hak_heap *h, unsigned cls)
{
    unsigned span = hak_classes[cls].span, scanned = 0;
    uint32_t best[2] = {HAK_NO_SS, HAK_NO_SS}; /* [0] resident run, [1] any run */
    int best_unit[2] = {-1, -1};
    unsigned best_free[2] = {HAK_UNITS + 1, HAK_UNITS + 1};
    for (uint32_t idx = h->ss_avail; idx != HAK_NO_SS && scanned < AVAIL_SCAN_MAX;
         idx = hak_cold(idx)->next, scanned++) {
        const struct hak_ss *ss = hak_cold(idx);
        unsigned nfree = (unsigned)__builtin_popcount(ss->free_units);
        for (int k = 0; k < 2; k++) {
            if (nfree >= best_free[k])
                continue;
            int unit = find_run_in(k ? ss->free_units : ss->free_units & ss->dirty_units, span);
            if (unit >= 0) {
                best[k] = idx;
                best_unit[k] = unit;
                best_free[k] = nfree;
            }
        }
    }
    for (int k = 0; k < 2; k++) {
        if (best[k] != HAK_NO_SS) {
            place_slab(h, best[k], (unsigned)best_unit[k], cls);
            return true;
        }
    }
    if (h->ss_empty != HAK_NO_SS) {
        place_slab(h, h->ss_empty, 0, cls);
        return true;
    }
    return false;
}

static void take_ownership(struct hak_heap *h, uint32_t idx)
{
    struct hak_ss *ss = hak_cold(idx);
    HAK_ASSERT(ss->free_units == HAK_ALL_UNITS);
    ss->hlist = HAK_SSL_NONE;
    ss->state = HAK_SS_OWNED;
    atomic_store(&hak_hot(idx)->owner, h);
    hlist_push(h, idx, HAK_SSL_EMPTY);
    h->nss++;
}

/* Make a new slab of cls (or adopt SuperSlabs that may hold one). */
bool hak_ss_new_slab(struct hak_heap *h, unsigned cls)
{
    if (place_in_owned(h, cls))
        return true;
    if (hak_ss_adopt_one(h))
        return true; /* the caller looks at its lists again */
    uint32_t got[8];
    unsigned want = h->nss / 4;
    want = want < 2 ? 2 : want > 8 ? 8 : want;
    unsigned n = hak_provision_acquire(got, want);
    for (unsigned i = 0; i < n; i++)
        take_ownership(h, got[i]);
    return n && place_in_owned(h, cls);
}

/* A slab of idx was released: move the SuperSlab to the right list. */
void hak_ss_unit_freed(struct hak_heap *h, uint32_t idx)
{
    struct hak_ss *ss = hak_cold(idx);
    if (ss->free_units == HAK_ALL_UNITS) {
        hlist_remove(h, idx);
        hlist_push(h, idx, HAK_SSL_PENDING);
    } else if (ss->hlist != HAK_SSL_AVAIL) {
        hlist_remove(h, idx);
        hlist_push(h, idx, HAK_SSL_AVAIL);
    }
}

/* Keep one emptied SuperSlab for reuse (if keep) and give the others back,
 * idle since idle_ns (0: now). The notify stack is drained first: a
 * SuperSlab leaves this heap only when none of its slabs is still on the
 * stack. Draining may empty more. */
static void release_pending(struct hak_heap *h, bool keep, uint64_t idle_ns)
{
    while (h->ss_pending != HAK_NO_SS) {
        /* A freer still on its way to our stack could land a slab of a
         * SuperSlab we are about to give away. */
        hak_remote_wait(h);
        hak_remote_drain(h);
        uint32_t idx = h->ss_pending;
        hlist_remove(h, idx);
        HAK_ASSERT(hak_cold(idx)->free_units == HAK_ALL_UNITS);
        if (keep && h->nempty < KEEP_EMPTY) {
            hlist_push(h, idx, HAK_SSL_EMPTY);
        } else {
            h->nss--;
            hak_provision_release(idx, idle_ns);
        }
    }
}

void hak_ss_release_pending(struct hak_heap *h, bool keep)
{
    release_pending(h, keep, h->release_idle_ns);
}

/* Give back every empty SuperSlab, the kept ones included, idle since
 * idle_ns (0: now). Their slabs have held no block since the drain that
 * made them pending, so none is on the notify stack. */
void hak_ss_release_empty(struct hak_heap *h, uint64_t idle_ns)
{
    release_pending(h, false, idle_ns);
    while (h->ss_empty != HAK_NO_SS) {
        uint32_t idx = h->ss_empty;
        hlist_remove(h, idx);
        h->nss--;
        hak_provision_release(idx, idle_ns);
    }
}

/* ---- returning the pages of free units ----
 * A SuperSlab that stays in use (some slab is live) keeps the pages of its
 * freed units resident. Once those units have been idle for the decay (all
 * of them at once, if force), their pages go back to the OS; a unit taken
 * into use again before that costs nothing. Checked for every heap at most
 * twice per decay (decay.c), so a steady state makes no system call. */

/* Return the pages of the dirty units idle for the decay (all of them if
 * force), a run of neighbours per call. */
static size_t purge_ss(uint32_t idx, uint32_t now_ms, bool force)
{
    struct hak_ss *ss = hak_cold(idx);
    uint16_t due = 0;
    for (uint16_t d = ss->dirty_units; d; d &= (uint16_t)(d - 1)) {
        unsigned u = (unsigned)__builtin_ctz(d);
        if (force || now_ms - ss->unit_idle_ms[u] >= hak_decay_ms())
            due |= (uint16_t)(1u << u);
    }
    ss->dirty_units &= (uint16_t)~due;
    size_t bytes = 0;
    while (due) {
        unsigned u = (unsigned)__builtin_ctz(due), n = 0;
        while (u + n < HAK_UNITS && (due >> (u + n) & 1))
            n++;
        if (hak_provision_decommit(idx, u, n))
            bytes += (size_t)n << HAK_UNIT_SHIFT;
        due &= (uint16_t)~(((1u << n) - 1) << u);
    }
    return bytes;
}

size_t hak_ss_purge_units(struct hak_heap *h, bool force)
{
    uint32_t now = hak_now_ms();
    size_t bytes = 0;
    for (int list = 0; list < 2; list++)
        for (uint32_t idx = list ? h->ss_empty : h->ss_avail; idx != HAK_NO_SS; idx = hak_cold(idx)->next)
            if (hak_cold(idx)->dirty_units)
                bytes += purge_ss(idx, now, force);
    return bytes;
}

/* ---- abandoned SuperSlabs ----
 * Ownership of an abandoned SuperSlab goes to whoever wins a CAS of its
 * owner from HAK_OWNER_ABANDONED to its heap: a thread that needs memory
 * (hak_ss_adopt_one, via the stack below) or a thread that frees one of
 * its blocks (hak_ss_claim, so memory follows the thread that frees it, as
 * when a server hands its work to another thread). The stack only helps to
 * find candidates; an entry whose SuperSlab was claimed meanwhile is
 * skipped. `listed` keeps a SuperSlab on the stack at most once.
 *
 * top = (tag << 32) | (index + 1); the tag changes on every update, so a
 * pop that read a stale next fails its CAS (no ABA). Links live in the side
 * table, which is never unmapped, so reading a stale one is safe. */

static _Atomic uint64_t abandoned_top;
static _Atomic uint32_t abandoned_n;

static void abandoned_push(uint32_t idx)
{
    if (atomic_exchange(&hak_cold(idx)->listed, 1))
        return; /* still on the stack from an earlier abandonment */
    uint64_t top = atomic_load(&abandoned_top), next;
    do {
        __atomic_store_n(&hak_cold(idx)->abandoned_next, (uint32_t)top, __ATOMIC_RELAXED);
        next = ((top >> 32) + 1) << 32 | (uint64_t)(idx + 1);
    } while (!atomic_compare_exchange_weak(&abandoned_top, &top, next));
    atomic_fetch_add(&abandoned_n, 1);
}

static uint32_t abandoned_pop(void)
{
    uint64_t top = atomic_load(&abandoned_top), next;
    uint32_t idx;
    do {
        if (!(uint32_t)top)
            return HAK_NO_SS;
        idx = (uint32_t)top - 1;
        uint32_t below = __atomic_load_n(&hak_cold(idx)->abandoned_next, __ATOMIC_RELAXED);
        next = ((top >> 32) + 1) << 32 | below;
    } while (!atomic_compare_exchange_weak(&abandoned_top, &top, next));
    atomic_fetch_sub(&abandoned_n, 1);
    atomic_store(&hak_cold(idx)->listed, 0);
    return idx;
}

uint32_t hak_ss_abandoned_count(void)
{
    return atomic_load_explicit(&abandoned_n, HAK_RELAXED);
}

/* The claim succeeded: the SuperSlab's slabs join this heap's lists, with
 * every remote free collected. Owner was stored before collecting, so a
 * free that saw the SuperSlab abandoned pushed its block before we look. */
static void adopt(struct hak_heap *h, uint32_t idx)
{
    struct hak_ss_hot *hot = hak_hot(idx);
    struct hak_ss *ss = hak_cold(idx);
    ss->state = HAK_SS_OWNED;
    ss->hlist = HAK_SSL_NONE;
    h->nss++;
    hlist_place(h, idx);
    for (unsigned u = 0; u < HAK_UNITS; u++) {
        struct hak_slab *s = &ss->slab[u];
        if (!hot->cls[u] || hak_hot_head(hot, u) != u)
            continue;
        s->list = HAK_LIST_NONE;
        s->next = s->prev = NULL;
        const struct hak_class *k = &hak_classes[s->cls];
        hak_slab_list_push(h, s, s->free || s->carved < k->capacity ? HAK_LIST_PARTIAL : HAK_LIST_FULL);
        hak_remote_collect(h, s); /* releases the slab if nothing is left out */
    }
}

/* A stale stack entry or a freer may find a SuperSlab whose owner is
 * already HAK_OWNER_ABANDONED while its old heap still drains; `claimable`
 * says the old heap is done. seq_cst: the popper's store of `listed` then
 * load of `claimable` and the publisher's store of `claimable` then
 * exchange of `listed` cannot both miss each other, so a SuperSlab is never
 * left off the stack unclaimed. */
static bool claim(struct hak_heap *h, uint32_t idx)
{
    struct hak_heap *expected = HAK_OWNER_ABANDONED;
    if (!atomic_load(&hak_cold(idx)->claimable) ||
        !atomic_compare_exchange_strong(&hak_hot(idx)->owner, &expected, h))
        return false;
    atomic_store(&hak_cold(idx)->claimable, 0);
    return true;
}

/* Take over one abandoned SuperSlab from the stack. Heap locked. */
bool hak_ss_adopt_one(struct hak_heap *h)
{
    for (;;) {
        uint32_t idx = abandoned_pop();
        if (idx == HAK_NO_SS)
            return false;
        if (claim(h, idx)) {
            adopt(h, idx);
            return true;
        }
    }
}

/* A thread frees a block of an abandoned SuperSlab: it takes the
 * SuperSlab over if its old owner is done with it and nobody beats it to
 * the claim. Heap locked. */
bool hak_ss_claim(struct hak_heap *h, uint32_t idx)
{
    if (!claim(h, idx))
        return false;
    adopt(h, idx);
    return true;
}

/* Thread exit: give back empty SuperSlabs, abandon the rest. */
void hak_ss_abandon_all(struct hak_heap *h)
{
    for (unsigned c = 1; c < HAK_NCLASS; c++) {
        for (int list = 0; list < 2; list++) {
            struct hak_slab *s = list ? h->full[c] : h->partial[c];
            while (s) {
                struct hak_slab *next = s->next;
                if (s->used == 0)
                    hak_slab_release(h, s);
                s = next;
            }
        }
    }
    hak_ss_release_empty(h, 0);
    /* What is left holds live blocks. Mark it abandoned, wait until no
     * remote freer can still push onto our inbox or notify stack, drain
     * them (batches now go to their slabs' remote lists, for the adopter;
     * flags are cleared), then publish the SuperSlabs for adoption. */
    uint32_t abandon = HAK_NO_SS;
    for (int list = 0; list < 2; list++) {
        uint32_t *head = list ? &h->ss_full : &h->ss_avail;
        while (*head != HAK_NO_SS) {
            uint32_t idx = *head;
            hlist_remove(h, idx);
            atomic_store(&hak_hot(idx)->owner, HAK_OWNER_ABANDONED);
            hak_cold(idx)->next = abandon;
            abandon = idx;
        }
    }
    atomic_fetch_add(&h->gave_away, 1); /* outboxes for h are walked at ship (remote.c) */
    hak_remote_wait(h);
    hak_remote_drain(h);
    while (abandon != HAK_NO_SS) {
        uint32_t idx = abandon;
        abandon = hak_cold(idx)->next;
        hak_cold(idx)->next = HAK_NO_SS;
        atomic_store(&hak_cold(idx)->claimable, 1);
        abandoned_push(idx);
    }
    for (unsigned c = 0; c < HAK_NCLASS; c++)
        h->partial[c] = h->full[c] = NULL;
    h->nss = 0;
}
