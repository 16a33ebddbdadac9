/* Provisioning: the narrow interface between heaps and whoever supplies
 * SuperSlabs. Heaps call only these functions; each SuperSlab remembers its
 * provider, so it goes back where it came from. */
#include "internal.h"

static _Atomic uint64_t acquired[2], released[2], fallbacks;

/* Warm SuperSlabs first (returned ones whose pages are still resident, the
 * daemon's included), then the daemon's, then fresh in-process ones. A
 * SuperSlab keeps the provider tag of its origin even when it is recycled
 * in-process, so it can go back to the daemon later. */
unsigned hak_provision_acquire(uint32_t *out, unsigned want)
{
    /* Counted by who served them: a SuperSlab of the daemon's memory that
     * is reused in-process counts as embedded. */
    unsigned warm = hak_embedded_acquire_warm(out, want);
    atomic_fetch_add_explicit(&acquired[HAK_PROV_EMBEDDED], warm, HAK_RELAXED);
    if (warm == want)
        return want;
    bool tried;
    unsigned from_daemon = hak_pagerd_acquire(out + warm, want - warm, &tried);
    for (unsigned i = 0; i < from_daemon; i++)
        hak_cold(out[warm + i])->provider = HAK_PROV_PAGERD;
    atomic_fetch_add_explicit(&acquired[HAK_PROV_PAGERD], from_daemon, HAK_RELAXED);
    unsigned have = warm + from_daemon;
    if (have == want)
        return want;
    if (tried)
        atomic_fetch_add_explicit(&fallbacks, 1, HAK_RELAXED);
    unsigned got = hak_embedded_provider.acquire(out + have, want - have);
    atomic_fetch_add_explicit(&acquired[HAK_PROV_EMBEDDED], got, HAK_RELAXED);
    return have + got;
}

/* Every emptied SuperSlab waits warm in-process for the decay (the daemon's
 * then go back to it), so a program that frees and allocates again reuses
 * resident pages instead of faulting in new ones. */
void hak_provision_release(uint32_t idx)
{
    struct hak_ss *ss = hak_cold(idx);
    HAK_ASSERT(ss->free_units == HAK_ALL_UNITS);
    unsigned prov = ss->provider;
    atomic_store(&hak_hot(idx)->owner, HAK_OWNER_FREE);
    atomic_fetch_add_explicit(&released[prov], 1, HAK_RELAXED);
    hak_embedded_provider.release(idx);
}

/* Return the pages of n units of a SuperSlab to the OS, the way its
 * mapping needs (a shared file's pages must be punched, not dropped). */
void hak_provision_decommit(uint32_t idx, unsigned unit, unsigned n)
{
    if (!hak_pagerd_decommit(idx, unit, n))
        hak_os_decommit((char *)hak_ss_addr(idx) + ((size_t)unit << HAK_UNIT_SHIFT), (size_t)n << HAK_UNIT_SHIFT);
}

size_t hak_provision_trim(bool force)
{
    return hak_embedded_provider.trim(force);
}

void hak_provision_stats(struct hak_provision_stats *out)
{
    for (int i = 0; i < 2; i++) {
        out->acquired[i] = atomic_load_explicit(&acquired[i], HAK_RELAXED);
        out->released[i] = atomic_load_explicit(&released[i], HAK_RELAXED);
    }
    out->fallbacks = atomic_load_explicit(&fallbacks, HAK_RELAXED);
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

/* The embedded lock first: its decay gives SuperSlabs back to the daemon
 * under it, taking the daemon session's lock inside. */
void hak_provision_fork_prepare(void)
{
    hak_lock(hak_embedded_lock());
    hak_pagerd_fork_prepare();
}

void hak_provision_fork_parent(void)
{
    hak_unlock(hak_embedded_lock());
    hak_pagerd_fork_parent();
}

void hak_provision_fork_child(void)
{
    hak_lock_reset(hak_embedded_lock());
    hak_pagerd_fork_child();
}
