/* The embedded backend: SuperSlabs carved from the arena in this process,
 * used when no daemon is reachable (and as the daemon's fallback).
 *
 * It extends the arena in growing batches (one mprotect per batch) onto a
 * clean list (no resident pages), which also takes back what the provider
 * layer retires: those of its own after their pages went back to the OS,
 * and those of the daemon's it can no longer give back (hak_embedded_keep).
 * The lock is taken once per SuperSlab batch, never per block refill. */
#include "internal.h"

#define BATCH_MIN 4u
#define BATCH_MAX 64u

static struct {
    hak_lock_t lock;
    uint32_t clean_head; /* singly linked by ss->next */
    uint32_t nclean;
    uint32_t next_batch;
    uint64_t extends;
} emb = {HAK_LOCK_INIT, HAK_NO_SS, 0, BATCH_MIN, 0};

static void clean_push(uint32_t idx)
{
    struct hak_ss *ss = hak_cold(idx);
    ss->state = HAK_SS_CLEAN;
    ss->next = emb.clean_head;
    emb.clean_head = idx;
    emb.nclean++;
}

static uint32_t clean_pop(void)
{
    uint32_t idx = emb.clean_head;
    if (idx != HAK_NO_SS) {
        emb.clean_head = hak_cold(idx)->next;
        hak_cold(idx)->next = HAK_NO_SS;
        emb.nclean--;
    }
    return idx;
}

/* Carve a batch of fresh SuperSlabs from the arena onto the clean list.
 * In secure mode the run is twice as long and only its odd SuperSlabs are
 * used: the even ones (a run starts even) stay inaccessible, guards, so an
 * overflow or underflow of a megabyte from any block faults at once. */
static bool extend(unsigned want)
{
    uint32_t n = emb.next_batch > want ? emb.next_batch : want, guarded = hak_link_key ? 1 : 0;
    uint32_t first = hak_arena_extend(n << guarded);
    if (first == HAK_NO_SS && n > want)
        first = hak_arena_extend((n = want) << guarded);
    if (first == HAK_NO_SS)
        return false;
    first += guarded;
    for (uint32_t i = 0; i < (guarded ? n : 1); i++)
        if (hak_os_commit(hak_ss_addr(first + 2 * i), (size_t)(guarded ? 1 : n) << HAK_SS_SHIFT) != 0)
            return false; /* the indices stay unused; the commit limit is reached */
    /* HAKMEM_THP: a run starts 2 MiB-aligned (hak_arena_extend), so each
     * pair of its SuperSlabs can be one huge page; freed units split it. */
    if (hak_opt.thp && !guarded)
        hak_os_huge(hak_ss_addr(first), (size_t)n << HAK_SS_SHIFT);
    for (uint32_t i = n; i-- > 0;) {
        hak_arena_ss_init(first + (i << guarded));
        clean_push(first + (i << guarded));
    }
    emb.extends++;
    if (emb.next_batch < BATCH_MAX)
        emb.next_batch *= 2;
    return true;
}

static unsigned emb_acquire(uint32_t *out, unsigned want, bool *tried)
{
    *tried = true;
    unsigned got = 0;
    hak_lock(&emb.lock);
    while (got < want) {
        uint32_t idx = clean_pop();
        if (idx == HAK_NO_SS) {
            if (!extend(want - got))
                break;
            continue;
        }
        out[got++] = idx;
    }
    hak_unlock(&emb.lock);
    return got;
}

/* Waiting warm costs this backend nothing, and it never takes one back
 * by itself. */
static void emb_idle(uint32_t idx, uint32_t decay_ms)
{
    (void)idx;
    (void)decay_ms;
}

static bool emb_reuse(uint32_t idx)
{
    (void)idx;
    return true;
}

static bool emb_decommit(uint32_t idx, unsigned unit, unsigned n)
{
    hak_os_decommit((char *)hak_ss_addr(idx) + ((size_t)unit << HAK_UNIT_SHIFT), (size_t)n << HAK_UNIT_SHIFT);
    return true;
}

static void emb_trim(void)
{
}

static enum hak_retire emb_retire(uint32_t idx, bool now)
{
    (void)now;
    emb_decommit(idx, 0, HAK_UNITS);
    hak_embedded_keep(idx);
    return HAK_RETIRED;
}

/* A SuperSlab whose pages are gone already: into the clean list. */
void hak_embedded_keep(uint32_t idx)
{
    hak_cold(idx)->dirty_units = 0;
    hak_lock(&emb.lock);
    clean_push(idx);
    hak_unlock(&emb.lock);
}

void hak_embedded_stats(struct hak_embedded_stats *out)
{
    hak_lock(&emb.lock);
    out->clean = emb.nclean;
    out->extends = emb.extends;
    hak_unlock(&emb.lock);
}

void hak_embedded_fork_prepare(void) { hak_lock(&emb.lock); }
void hak_embedded_fork_parent(void) { hak_unlock(&emb.lock); }
void hak_embedded_fork_child(void) { hak_lock_reset(&emb.lock); }

const struct hak_backend hak_embedded_backend = {
    .name = "embedded",
    .acquire = emb_acquire,
    .idle = emb_idle,
    .reuse = emb_reuse,
    .retire = emb_retire,
    .decommit = emb_decommit,
    .trim = emb_trim,
};
