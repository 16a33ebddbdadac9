/* The rings of the control area. Indices run freely (uint32 wrap-around);
 * slot = index & (slots - 1). Each side treats the other side's index as
 * untrusted and checks tail - head <= slots before using it. */
#include "hakmem_shm.h"

#define ACQ memory_order_acquire
#define REL memory_order_release
#define RLX memory_order_relaxed

bool hak_fill_ring_level(struct hak_shm_fill_ring *r, uint32_t *level)
{
    uint32_t tail = atomic_load_explicit(&r->tail.v, RLX); /* ours */
    uint32_t head = atomic_load_explicit(&r->head.v, ACQ); /* the client's */
    uint32_t n = tail - head;
    if (n > HAK_SHM_FILL_SLOTS)
        return false;
    *level = n;
    return true;
}

bool hak_fill_ring_push(struct hak_shm_fill_ring *r, uint64_t offset)
{
    uint32_t level;
    if (!hak_fill_ring_level(r, &level) || level == HAK_SHM_FILL_SLOTS)
        return false;
    uint32_t tail = atomic_load_explicit(&r->tail.v, RLX);
    atomic_store_explicit(&r->slot[tail & (HAK_SHM_FILL_SLOTS - 1)], offset, RLX);
    atomic_store_explicit(&r->tail.v, tail + 1, REL); /* publishes the slot */
    return true;
}

int hak_fill_ring_pop(struct hak_shm_fill_ring *r, uint64_t *offset)
{
    uint32_t head = atomic_load_explicit(&r->head.v, ACQ);
    for (;;) {
        uint32_t tail = atomic_load_explicit(&r->tail.v, ACQ);
        uint32_t n = tail - head;
        if (n == 0)
            return 0;
        if (n > HAK_SHM_FILL_SLOTS) {
            /* Our head may be stale: other poppers moved on while the
             * daemon kept pushing. Corrupt only if head did not move. */
            uint32_t now = atomic_load_explicit(&r->head.v, ACQ);
            if (now != head) {
                head = now;
                continue;
            }
            return -1;
        }
        uint64_t v = atomic_load_explicit(&r->slot[head & (HAK_SHM_FILL_SLOTS - 1)], RLX);
        /* The slot is ours only if head did not move meanwhile. */
        if (atomic_compare_exchange_weak_explicit(&r->head.v, &head, head + 1, memory_order_acq_rel, ACQ)) {
            *offset = v;
            return 1;
        }
    }
}

bool hak_return_ring_push(struct hak_shm_return_ring *r, uint64_t offset)
{
    uint32_t tail = atomic_load_explicit(&r->tail.v, RLX); /* ours */
    uint32_t head = atomic_load_explicit(&r->head.v, ACQ); /* the daemon's */
    uint32_t n = tail - head;
    if (n >= HAK_SHM_RETURN_SLOTS)
        return false; /* full, or a daemon that lost track: keep it ourselves */
    atomic_store_explicit(&r->slot[tail & (HAK_SHM_RETURN_SLOTS - 1)], offset, RLX);
    atomic_store_explicit(&r->tail.v, tail + 1, REL);
    return true;
}

int hak_return_ring_pop(struct hak_shm_return_ring *r, uint64_t *offset)
{
    uint32_t head = atomic_load_explicit(&r->head.v, RLX); /* ours */
    uint32_t tail = atomic_load_explicit(&r->tail.v, ACQ); /* the client's */
    uint32_t n = tail - head;
    if (n == 0)
        return 0;
    if (n > HAK_SHM_RETURN_SLOTS)
        return -1;
    *offset = atomic_load_explicit(&r->slot[head & (HAK_SHM_RETURN_SLOTS - 1)], RLX);
    atomic_store_explicit(&r->head.v, head + 1, REL);
    return 1;
}
