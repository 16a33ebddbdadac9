/* Provisioning: where SuperSlabs come from and where they go back. Heaps
 * call only the hak_provision_* functions.
 *
 * Two backends supply fresh SuperSlabs behind one interface (struct
 * hak_backend): the daemon (provider_pagerd.c) and the process itself
 * (provider_embedded.c). This layer keeps every emptied SuperSlab warm
 * (pages resident) for reuse, whichever backend it came from, newest first,
 * and after HAKMEM_DECAY_MS gives it back to its backend, which returns its
 * pages (to the OS, or to the daemon). A SuperSlab keeps the tag of its
 * backend, so it goes back where it came from; one its backend can no
 * longer take (the daemon is gone, a fork made its memory private) becomes
 * in-process memory.
 *
 * While a SuperSlab waits, its backend may take it itself (the daemon's
 * idle words): taking one back into use asks the backend first, and one it
 * took is dropped here. */
#include "internal.h"

static const struct hak_backend *const backends[2] = {
    [HAK_PROV_EMBEDDED] = &hak_embedded_backend,
    [HAK_PROV_PAGERD] = &hak_pagerd_backend,
};

static const struct hak_backend *backend_of(uint32_t idx)
{
    return backends[hak_cold(idx)->provider];
}

/* The warm SuperSlabs, newest first, linked by ss->next/prev (state
 * HAK_SS_DIRTY); n is read without the lock. */
static struct {
    hak_lock_t lock;
    uint32_t head, tail;
    _Atomic uint32_t n;
} warm = {HAK_LOCK_INIT, HAK_NO_SS, HAK_NO_SS, 0};

static _Atomic uint64_t acquired[2], released[2], fallbacks, purged, returned, reclaimed, unit_bytes;

static void warm_unlink(uint32_t idx)
{
    struct hak_ss *ss = hak_cold(idx);
    if (ss->prev != HAK_NO_SS)
        hak_cold(ss->prev)->next = ss->next;
    else
        warm.head = ss->next;
    if (ss->next != HAK_NO_SS)
        hak_cold(ss->next)->prev = ss->prev;
    else
        warm.tail = ss->prev;
    ss->next = ss->prev = HAK_NO_SS;
    atomic_store_explicit(&warm.n, atomic_load_explicit(&warm.n, HAK_RELAXED) - 1, HAK_RELAXED);
}

static void warm_push(uint32_t idx, uint64_t now)
{
    struct hak_ss *ss = hak_cold(idx);
    ss->state = HAK_SS_DIRTY;
    ss->idle_since_ns = now;
    ss->prev = HAK_NO_SS;
    ss->next = warm.head;
    if (warm.head != HAK_NO_SS)
        hak_cold(warm.head)->prev = idx;
    else
        warm.tail = idx;
    warm.head = idx;
    atomic_store_explicit(&warm.n, atomic_load_explicit(&warm.n, HAK_RELAXED) + 1, HAK_RELAXED);
}

/* Its wait is over: back to its backend, pages and all (now: without the
 * backend's own delay). warm.lock held. */
static void retire(uint32_t idx, bool now)
{
    const struct hak_backend *b = backend_of(idx);
    switch (b->retire(idx, now)) {
    case HAK_RETIRED:
        atomic_fetch_add_explicit(b == &hak_embedded_backend ? &purged : &returned, 1, HAK_RELAXED);
        return;
    case HAK_RETIRE_TAKEN:
        atomic_fetch_add_explicit(&reclaimed, 1, HAK_RELAXED);
        return;
    case HAK_RETIRE_REFUSED:
        b->decommit(idx, 0, HAK_UNITS);
        hak_embedded_keep(idx);
        atomic_fetch_add_explicit(&purged, 1, HAK_RELAXED);
        return;
    }
}

/* Give back what waited past the decay (everything if force), oldest
 * first. warm.lock held. Returns bytes. */
static size_t decay_warm(uint64_t now, bool force)
{
    uint64_t decay = hak_decay_ms() * 1000000u;
    size_t bytes = 0;
    while (warm.tail != HAK_NO_SS) {
        uint32_t idx = warm.tail;
        if (!force && now - hak_cold(idx)->idle_since_ns < decay)
            break;
        warm_unlink(idx);
        /* Idle for the whole decay: its pages go now, not after the
         * daemon's own reclaim delay. */
        retire(idx, true);
        bytes += HAK_SS_SIZE;
    }
    return bytes;
}

/* Set up SuperSlabs handed to a heap: the heap's decay clock of their free
 * units starts now; a warm one has all of its pages resident. */
static void hand_out(uint32_t *out, unsigned n)
{
    uint32_t now_ms = hak_now_ms();
    for (unsigned i = 0; i < n; i++) {
        struct hak_ss *ss = hak_cold(out[i]);
        ss->dirty_units = ss->state == HAK_SS_DIRTY ? HAK_ALL_UNITS : 0;
        for (unsigned u = 0; u < HAK_UNITS; u++)
            ss->unit_idle_ms[u] = now_ms;
        ss->state = HAK_SS_OWNED;
    }
}

/* Warm SuperSlabs first, newest first, that their backend still lets us
 * have. */
static unsigned acquire_warm(uint32_t *out, unsigned want)
{
    if (!atomic_load_explicit(&warm.n, HAK_RELAXED))
        return 0;
    unsigned got = 0;
    hak_lock(&warm.lock);
    decay_warm(hak_now_ns(), false);
    while (got < want && warm.head != HAK_NO_SS) {
        uint32_t idx = warm.head;
        warm_unlink(idx);
        if (backend_of(idx)->reuse(idx))
            out[got++] = idx;
        else
            atomic_fetch_add_explicit(&reclaimed, 1, HAK_RELAXED);
    }
    hand_out(out, got);
    hak_unlock(&warm.lock);
    return got;
}

/* Warm ones (the daemon's included: reusing them faults nothing in), then
 * the daemon's, then fresh in-process ones. */
unsigned hak_provision_acquire(uint32_t *out, unsigned want)
{
    /* Counted by who served them: a SuperSlab of the daemon's memory that
     * is reused in-process counts as embedded. */
    unsigned have = acquire_warm(out, want);
    atomic_fetch_add_explicit(&acquired[HAK_PROV_EMBEDDED], have, HAK_RELAXED);
    for (int k = HAK_PROV_PAGERD; have < want && k >= HAK_PROV_EMBEDDED; k--) {
        /* Fresh in-process memory only when nothing else is at hand: its
         * faults are what the daemon's pre-faulting saves, and a short
         * batch costs one more pop later, not a system call. */
        if (k == HAK_PROV_EMBEDDED && hak_pagerd_live()) {
            if (have)
                break;
            want = 1; /* the daemon is behind: the rest of the batch from it later */
        }
        bool tried = false;
        unsigned got = backends[k]->acquire(out + have, want - have, &tried);
        for (unsigned i = 0; i < got; i++)
            hak_cold(out[have + i])->provider = (uint8_t)k;
        hand_out(out + have, got);
        atomic_fetch_add_explicit(&acquired[k], got, HAK_RELAXED);
        have += got;
        if (k == HAK_PROV_PAGERD && tried && have < want)
            atomic_fetch_add_explicit(&fallbacks, 1, HAK_RELAXED);
    }
    return have;
}

/* An emptied SuperSlab (no live slab) waits warm for the decay; its
 * backend learns how long. idle_ns: idle since then (0: now). */
void hak_provision_release(uint32_t idx, uint64_t idle_ns)
{
    struct hak_ss *ss = hak_cold(idx);
    HAK_ASSERT(ss->free_units == HAK_ALL_UNITS);
    atomic_store(&hak_hot(idx)->owner, HAK_OWNER_FREE);
    atomic_fetch_add_explicit(&released[ss->provider], 1, HAK_RELAXED);
    hak_lock(&warm.lock);
    uint64_t now = hak_now_ns();
    /* Idle past the decay already (a parked heap's caches): back at once.
     * With the daemon there, only its memory waits warm: it can take that
     * back from an idle program, while in-process memory (what the daemon
     * could not serve in a burst) would wait for an allocator call. The
     * list stays in order of idle time: oldest at the tail. */
    if ((idle_ns && now - idle_ns >= hak_decay_ms() * 1000000u) ||
        (ss->provider == HAK_PROV_EMBEDDED && hak_pagerd_live())) {
        retire(idx, true);
    } else {
        warm_push(idx, now);
        backend_of(idx)->idle(idx, (uint32_t)hak_decay_ms());
    }
    decay_warm(now, false);
    hak_unlock(&warm.lock);
}

/* Return the pages of n units of a SuperSlab in use, the way its mapping
 * needs (a shared file's pages must be punched, not dropped). */
bool hak_provision_decommit(uint32_t idx, unsigned unit, unsigned n)
{
    if (!backend_of(idx)->decommit(idx, unit, n))
        return false;
    atomic_fetch_add_explicit(&unit_bytes, (uint64_t)n << HAK_UNIT_SHIFT, HAK_RELAXED);
    return true;
}

size_t hak_provision_trim(bool force)
{
    hak_lock(&warm.lock);
    size_t bytes = decay_warm(hak_now_ns(), force);
    hak_unlock(&warm.lock);
    if (force)
        for (int k = 0; k < 2; k++)
            backends[k]->trim();
    return bytes;
}

void hak_provision_stats(struct hak_provision_stats *out)
{
    for (int i = 0; i < 2; i++) {
        out->acquired[i] = atomic_load_explicit(&acquired[i], HAK_RELAXED);
        out->released[i] = atomic_load_explicit(&released[i], HAK_RELAXED);
    }
    out->fallbacks = atomic_load_explicit(&fallbacks, HAK_RELAXED);
    out->warm = atomic_load_explicit(&warm.n, HAK_RELAXED);
    out->purged = atomic_load_explicit(&purged, HAK_RELAXED);
    out->returned = atomic_load_explicit(&returned, HAK_RELAXED);
    out->reclaimed = atomic_load_explicit(&reclaimed, HAK_RELAXED);
    out->unit_bytes = atomic_load_explicit(&unit_bytes, HAK_RELAXED);
}

/* In-process SuperSlabs by mincore, the daemon's by their files (whose
 * ranges of the arena are skipped here), and the side tables. */
size_t hak_provision_resident(void)
{
    uint32_t span[HAK_PAGERD_MAX_SESSIONS][2], end = __atomic_load_n(&hak_arena.cursor, __ATOMIC_ACQUIRE);
    unsigned n;
    size_t bytes = hak_arena_meta_resident() + hak_pagerd_resident(span, &n);
    uint32_t at = 0;
    for (unsigned i = 0; i <= n; i++) {
        uint32_t stop = i < n && span[i][0] < end ? span[i][0] : end;
        if (stop > at)
            bytes += hak_os_resident(hak_ss_addr(at), (size_t)(stop - at) << HAK_SS_SHIFT);
        if (i < n && span[i][1] > at)
            at = span[i][1];
    }
    return bytes;
}

/* The warm list's lock first: giving back to the daemon takes the
 * session's lock inside it. */
void hak_provision_fork_prepare(void)
{
    hak_lock(&warm.lock);
    hak_embedded_fork_prepare();
    hak_pagerd_fork_prepare();
}

void hak_provision_fork_parent(void)
{
    hak_pagerd_fork_parent();
    hak_embedded_fork_parent();
    hak_unlock(&warm.lock);
}

void hak_provision_fork_child(void)
{
    hak_pagerd_fork_child();
    hak_embedded_fork_child();
    hak_lock_reset(&warm.lock);
}
