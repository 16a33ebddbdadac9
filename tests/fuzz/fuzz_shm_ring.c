/* Fuzz target: the rings of the control area (shm/ring.c) from any state
 * the other side can leave them in. Each call is held to its contract
 * from the indices it found: the fill ring's level, push (daemon) and pop
 * (client, hak_fill_ring_pop), the return ring's push (client) and pop
 * (daemon); a call that finds corrupt indices must say so and change
 * nothing, one that succeeds must move exactly one index by one and read
 * or write exactly the slot at it.
 *
 * Input: head and tail of a fill ring and of a return ring (u32 each),
 * then steps: an op byte (op % 7) and its arguments:
 *   0 fill level     1 fill push (value)     2 fill pop
 *   3 return push (value)     4 return pop
 *   5 write an index (which, u32)     6 write a slot (which, u16 slot, value) */
#include <stdatomic.h>

#include "fuzz.h"
#include "hakmem_shm.h"

static struct hak_shm_fill_ring fill __attribute__((aligned(64)));
static struct hak_shm_return_ring ret __attribute__((aligned(64)));

#define LD(x) atomic_load_explicit(&(x), memory_order_relaxed)

static void fill_level(void)
{
    uint32_t head = LD(fill.head.v), tail = LD(fill.tail.v), level = UINT32_MAX;
    bool ok = hak_fill_ring_level(&fill, &level);
    FZ_ASSERT(ok == (tail - head <= HAK_SHM_FILL_SLOTS));
    FZ_ASSERT(!ok || level == tail - head);
}

static void fill_push(uint64_t v)
{
    uint32_t head = LD(fill.head.v), tail = LD(fill.tail.v);
    uint64_t old = LD(fill.slot[tail % HAK_SHM_FILL_SLOTS]);
    bool ok = hak_fill_ring_push(&fill, v);
    FZ_ASSERT(ok == (tail - head < HAK_SHM_FILL_SLOTS));
    FZ_ASSERT(LD(fill.head.v) == head && LD(fill.tail.v) == tail + ok);
    FZ_ASSERT(LD(fill.slot[tail % HAK_SHM_FILL_SLOTS]) == (ok ? v : old));
}

static void fill_pop(void)
{
    uint32_t head = LD(fill.head.v), tail = LD(fill.tail.v);
    uint64_t v = 0, want = LD(fill.slot[head % HAK_SHM_FILL_SLOTS]);
    int rc = hak_fill_ring_pop(&fill, &v);
    uint32_t n = tail - head;
    FZ_ASSERT(rc == (n == 0 ? 0 : n > HAK_SHM_FILL_SLOTS ? -1 : 1));
    FZ_ASSERT(LD(fill.tail.v) == tail && LD(fill.head.v) == head + (rc == 1));
    FZ_ASSERT(rc != 1 || v == want);
}

static void return_push(uint64_t v)
{
    uint32_t head = LD(ret.head.v), tail = LD(ret.tail.v);
    uint64_t old = LD(ret.slot[tail % HAK_SHM_RETURN_SLOTS]);
    bool ok = hak_return_ring_push(&ret, v);
    FZ_ASSERT(ok == (tail - head < HAK_SHM_RETURN_SLOTS));
    FZ_ASSERT(LD(ret.head.v) == head && LD(ret.tail.v) == tail + ok);
    FZ_ASSERT(LD(ret.slot[tail % HAK_SHM_RETURN_SLOTS]) == (ok ? v : old));
}

static void return_pop(void)
{
    uint32_t head = LD(ret.head.v), tail = LD(ret.tail.v);
    uint64_t v = 0, want = LD(ret.slot[head % HAK_SHM_RETURN_SLOTS]);
    int rc = hak_return_ring_pop(&ret, &v);
    uint32_t n = tail - head;
    FZ_ASSERT(rc == (n == 0 ? 0 : n > HAK_SHM_RETURN_SLOTS ? -1 : 1));
    FZ_ASSERT(LD(ret.tail.v) == tail && LD(ret.head.v) == head + (rc == 1));
    FZ_ASSERT(rc != 1 || v == want);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct fz_in in = {data, size};
    memset(&fill, 0, sizeof fill);
    memset(&ret, 0, sizeof ret);
    atomic_store(&fill.head.v, fz_u32(&in));
    atomic_store(&fill.tail.v, fz_u32(&in));
    atomic_store(&ret.head.v, fz_u32(&in));
    atomic_store(&ret.tail.v, fz_u32(&in));
    while (in.n) {
        switch (fz_u8(&in) % 7) {
        case 0:
            fill_level();
            break;
        case 1:
            fill_push(fz_u64(&in));
            break;
        case 2:
            fill_pop();
            break;
        case 3:
            return_push(fz_u64(&in));
            break;
        case 4:
            return_pop();
            break;
        case 5: {
            uint8_t which = fz_u8(&in) % 4;
            uint32_t v = fz_u32(&in);
            _Atomic uint32_t *ix[] = {&fill.head.v, &fill.tail.v, &ret.head.v, &ret.tail.v};
            atomic_store(ix[which], v);
            break;
        }
        default: {
            uint8_t which = fz_u8(&in);
            uint16_t slot = fz_u16(&in);
            uint64_t v = fz_u64(&in);
            if (which & 1)
                atomic_store(&ret.slot[slot % HAK_SHM_RETURN_SLOTS], v);
            else
                atomic_store(&fill.slot[slot % HAK_SHM_FILL_SLOTS], v);
            break;
        }
        }
    }
    return 0;
}
