/* The embedded provider: SuperSlabs carved from the arena in this process,
 * used when no daemon is reachable (and as the daemon's fallback).
 *
 * It extends the arena in growing batches (one mprotect per batch), keeps
 * returned SuperSlabs on a dirty list (pages still resident, newest first,
 * reused first) and purges them to the OS once they have been idle for
 * HAKMEM_DECAY_MS. Purged and never-used SuperSlabs wait on a clean list.
 * The lock is taken once per SuperSlab batch, never per block refill.
 * SuperSlabs from the daemon wait on the same dirty list, and go back to the
 * daemon after the decay; those that cannot (the return ring is full, the
 * daemon is gone, or a fork made them private) are recycled here; their
 * pages are released the way their mapping needs. */
#include "internal.h"

#define BATCH_MIN 4u
#define BATCH_MAX 64u

static struct {
    hak_lock_t lock;
    uint32_t dirty_head, dirty_tail; /* doubly linked by ss->next/prev */
    uint32_t clean_head;             /* singly linked by ss->next */
    uint32_t ndirty, nclean;
    uint32_t next_batch;
    uint64_t extends, purged, returned;
} emb = {HAK_LOCK_INIT, HAK_NO_SS, HAK_NO_SS, HAK_NO_SS, 0, 0, BATCH_MIN, 0, 0, 0};

hak_lock_t *hak_embedded_lock(void) { return &emb.lock; }

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
        emb.nclean--;
    }
    return idx;
}

static void dirty_unlink(uint32_t idx)
{
    struct hak_ss *ss = hak_cold(idx);
    if (ss->prev != HAK_NO_SS)
        hak_cold(ss->prev)->next = ss->next;
    else
        emb.dirty_head = ss->next;
    if (ss->next != HAK_NO_SS)
        hak_cold(ss->next)->prev = ss->prev;
    else
        emb.dirty_tail = ss->prev;
    ss->next = ss->prev = HAK_NO_SS;
    /* Atomic: hak_embedded_acquire_warm reads it without the lock. */
    __atomic_store_n(&emb.ndirty, emb.ndirty - 1, __ATOMIC_RELAXED);
}

static void dirty_push_head(uint32_t idx, uint64_t now)
{
    struct hak_ss *ss = hak_cold(idx);
    ss->state = HAK_SS_DIRTY;
    ss->idle_since_ns = now;
    ss->prev = HAK_NO_SS;
    ss->next = emb.dirty_head;
    if (emb.dirty_head != HAK_NO_SS)
        hak_cold(emb.dirty_head)->prev = idx;
    else
        emb.dirty_tail = idx;
    emb.dirty_head = idx;
    __atomic_store_n(&emb.ndirty, emb.ndirty + 1, __ATOMIC_RELAXED);
}

/* Purge dirty SuperSlabs idle for the decay (all of them if force), oldest
 * first. Returns bytes released. */
static size_t purge(uint64_t now, bool force)
{
    uint64_t decay = hak_opt.decay_ms * 1000000u;
    size_t bytes = 0;
    while (emb.dirty_tail != HAK_NO_SS) {
        uint32_t idx = emb.dirty_tail;
        if (!force && now - hak_cold(idx)->idle_since_ns < decay)
            break;
        dirty_unlink(idx);
        bytes += HAK_SS_SIZE;
        /* The daemon's own go back to it after the decay, as warm as
         * they are: it reuses returned SuperSlabs first. */
        if (hak_cold(idx)->provider == HAK_PROV_PAGERD && hak_pagerd_release(idx)) {
            emb.returned++;
            continue;
        }
        hak_provision_decommit(idx, 0, HAK_UNITS);
        hak_cold(idx)->dirty_units = 0;
        clean_push(idx);
        emb.purged++;
    }
    return bytes;
}

/* Carve a batch of fresh SuperSlabs from the arena onto the clean list. */
static bool extend(unsigned want)
{
    uint32_t n = emb.next_batch > want ? emb.next_batch : want;
    uint32_t first = hak_arena_extend(n);
    if (first == HAK_NO_SS && n > want)
        first = hak_arena_extend(n = want);
    if (first == HAK_NO_SS)
        return false;
    if (hak_os_commit(hak_ss_addr(first), (size_t)n << HAK_SS_SHIFT) != 0)
        return false; /* the indices stay unused; the commit limit is reached */
    for (uint32_t i = n; i-- > 0;) {
        hak_arena_ss_init(first + i);
        clean_push(first + i);
    }
    emb.extends++;
    if (emb.next_batch < BATCH_MAX)
        emb.next_batch *= 2;
    return true;
}

/* Hand out SuperSlabs: warm (dirty) ones only, or clean and fresh ones
 * too. Locked. */
static unsigned take(uint32_t *out, unsigned want, bool warm_only)
{
    unsigned got = 0;
    if (emb.ndirty)
        purge(hak_now_ns(), false);
    while (got < want && emb.dirty_head != HAK_NO_SS) {
        uint32_t idx = emb.dirty_head;
        dirty_unlink(idx);
        out[got++] = idx;
    }
    while (got < want && !warm_only) {
        uint32_t idx = clean_pop();
        if (idx == HAK_NO_SS) {
            if (!extend(want - got))
                break;
            continue;
        }
        out[got++] = idx;
    }
    uint64_t now = hak_now_ns();
    for (unsigned i = 0; i < got; i++) {
        struct hak_ss *ss = hak_cold(out[i]);
        /* The heap's decay clock for its free units starts now; a SuperSlab
         * that was not purged has all of its pages resident. */
        ss->dirty_units = ss->state == HAK_SS_DIRTY ? HAK_ALL_UNITS : 0;
        for (unsigned u = 0; u < HAK_UNITS; u++)
            ss->unit_idle_ms[u] = (uint32_t)(now / 1000000);
        ss->state = HAK_SS_OWNED;
    }
    return got;
}

static unsigned emb_acquire(uint32_t *out, unsigned want)
{
    hak_lock(&emb.lock);
    unsigned got = take(out, want, false);
    hak_unlock(&emb.lock);
    return got;
}

/* Only SuperSlabs whose pages are resident, whoever supplied them: taken
 * before the daemon's, since those still fault in every page once. */
unsigned hak_embedded_acquire_warm(uint32_t *out, unsigned want)
{
    if (!__atomic_load_n(&emb.ndirty, __ATOMIC_RELAXED))
        return 0;
    hak_lock(&emb.lock);
    unsigned got = take(out, want, true);
    hak_unlock(&emb.lock);
    return got;
}

static void emb_release(uint32_t idx)
{
    hak_lock(&emb.lock);
    uint64_t now = hak_now_ns();
    dirty_push_head(idx, now);
    purge(now, false);
    hak_unlock(&emb.lock);
}

static size_t emb_trim(bool force)
{
    hak_lock(&emb.lock);
    size_t bytes = purge(hak_now_ns(), force);
    hak_unlock(&emb.lock);
    return bytes;
}

void hak_embedded_stats(struct hak_embedded_stats *out)
{
    hak_lock(&emb.lock);
    out->clean = emb.nclean;
    out->dirty = emb.ndirty;
    out->extends = emb.extends;
    out->purged = emb.purged;
    out->returned = emb.returned;
    hak_unlock(&emb.lock);
}

const struct hak_provider hak_embedded_provider = {
    .name = "embedded",
    .acquire = emb_acquire,
    .release = emb_release,
    .trim = emb_trim,
};
