/* Provisioning: the narrow interface between heaps and whoever supplies
 * SuperSlabs. Heaps call only these functions; each SuperSlab remembers its
 * provider, so it goes back where it came from. */
#include "internal.h"

static _Atomic uint64_t acquired[2], released[2], fallbacks;

unsigned hak_provision_acquire(uint32_t *out, unsigned want)
{
    unsigned got = hak_embedded_provider.acquire(out, want);
    for (unsigned i = 0; i < got; i++)
        hak_cold(out[i])->provider = HAK_PROV_EMBEDDED;
    atomic_fetch_add_explicit(&acquired[HAK_PROV_EMBEDDED], got, HAK_RELAXED);
    return got;
}

void hak_provision_release(uint32_t idx)
{
    struct hak_ss *ss = hak_cold(idx);
    HAK_ASSERT(ss->free_units == HAK_ALL_UNITS);
    unsigned prov = ss->provider;
    atomic_store(&hak_hot(idx)->owner, HAK_OWNER_FREE);
    atomic_fetch_add_explicit(&released[prov], 1, HAK_RELAXED);
    hak_embedded_provider.release(idx);
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

void hak_provision_fork_prepare(void) { hak_lock(hak_embedded_lock()); }
void hak_provision_fork_parent(void) { hak_unlock(hak_embedded_lock()); }
void hak_provision_fork_child(void) { hak_lock_reset(hak_embedded_lock()); }
