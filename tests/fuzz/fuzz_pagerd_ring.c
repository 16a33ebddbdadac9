/* Fuzz target: the daemon against a client that writes its control area
 * as it likes: fill ring heads (and the tails, slots and header it must
 * not write), return ring indices and slots, counters. Reached: pool.c
 * (pool_account_pops, fill_push, top_up, limits, watermark), reclaim.c
 * (reclaim_drain, take_back, the warm deques, punching, taking back idle
 * SuperSlabs by their idle words and from the rings), status.c's
 * accounting, and the drop of a client caught lying. The daemon must never
 * crash, and pagerd_harness.c checks after every step that its records
 * still add up and that every SuperSlab it took back was in range,
 * aligned, in this client's hands, and taken once.
 *
 * Input: one settings byte (fz_reset), a capacity byte, then steps: an op
 * byte (op % 12) and its arguments:
 *   0 pop          node, count: the client pops from a fill ring
 *   1 return       which: the client gives back one it popped
 *   2 return raw   kind, value: pushes an offset of its choosing
 *   3 write u32    position, value: anywhere in the control area
 *   4 write u64    position, value
 *   5 nudge        index, delta: moves a ring index
 *   6 tick         ms
 *   7 completions  failure bits
 *   8 status       a status request on another connection
 *   9 again        capacity: detach, then a new session
 *  10 idle         which, ms: one it holds waits idle, deadline ms away
 *  11 reuse        which: takes an idle one back (or pushes it back, taken) */
#include <stdatomic.h>

#include "pagerd_harness.h"

static void session(uint8_t capacity)
{
    fz_deliver_hello(0, 1 + capacity % 8);
    fz_tick(1);
    fz_complete(0);
}

static void return_raw(struct fz_conn *k, struct fz_in *in)
{
    struct hak_shm_return_ring *r = fz_return_ring(k);
    if (!r)
        return;
    uint64_t ss = k->layout.ss_offset, v;
    switch (fz_u8(in) % 4) {
    case 0:
        v = fz_u64(in);
        break;
    case 1: /* any index, maybe past the end */
        v = ss + ((uint64_t)fz_u8(in) << HAK_SHM_SS_SHIFT);
        break;
    case 2: /* inside a SuperSlab */
        v = ss + ((uint64_t)(fz_u8(in) % k->layout.capacity) << HAK_SHM_SS_SHIFT) + fz_u32(in) % HAK_SHM_SS_SIZE;
        break;
    default: /* one it holds, and keeps */
        v = k->nheld ? k->held[fz_u8(in) % k->nheld] : ss;
        break;
    }
    hak_return_ring_push(r, v);
}

static _Atomic uint32_t *index_of(struct fz_conn *k, uint8_t which)
{
    uint32_t nn = k->layout.nnodes;
    which %= 2 * nn + 2;
    if (which < nn)
        return &fz_fill_ring(k, which)->head.v;
    if (which < 2 * nn)
        return &fz_fill_ring(k, which - nn)->tail.v;
    struct hak_shm_return_ring *r = fz_return_ring(k);
    return which == 2 * nn ? &r->head.v : &r->tail.v;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct fz_in in = {data, size};
    fz_reset(fz_u8(&in));
    session(fz_u8(&in));
    struct fz_conn *k = &fz_conn[0];
    while (in.n) {
        char *view = (char *)k->view;
        size_t len = view ? k->layout.ctrl_size : 0;
        switch (fz_u8(&in) % 12) {
        case 0: {
            uint8_t node = fz_u8(&in), n = fz_u8(&in);
            if (view)
                fz_client_pop(k, node % k->layout.nnodes, 1 + n % 8);
            break;
        }
        case 1:
            fz_client_return(k, fz_u8(&in));
            break;
        case 2:
            return_raw(k, &in);
            break;
        case 3: {
            size_t pos = fz_u16(&in) * 4u;
            uint32_t v = fz_u32(&in);
            if (view)
                __atomic_store_n((uint32_t *)(view + pos % len), v, __ATOMIC_RELEASE);
            break;
        }
        case 4: {
            size_t pos = fz_u16(&in) * 8u;
            uint64_t v = fz_u64(&in);
            if (view)
                __atomic_store_n((uint64_t *)(view + pos % len), v, __ATOMIC_RELEASE);
            break;
        }
        case 5: {
            uint8_t which = fz_u8(&in);
            int8_t delta = (int8_t)fz_u8(&in);
            if (view)
                atomic_fetch_add(index_of(k, which), (uint32_t)(int32_t)delta);
            break;
        }
        case 6:
            fz_tick(fz_u8(&in));
            break;
        case 7:
            fz_complete(fz_u8(&in));
            break;
        case 8:
            fz_deliver_hdr(1, HAK_MSG_STATUS_REQ);
            break;
        case 9: {
            uint8_t cap = fz_u8(&in);
            if (k->c)
                fz_deliver_hdr(0, HAK_MSG_DETACH);
            session(cap);
            break;
        }
        case 10: {
            uint8_t which = fz_u8(&in);
            fz_client_idle(k, which, fz_u8(&in), false);
            break;
        }
        case 11:
            fz_client_idle(k, fz_u8(&in), 0, true);
            break;
        }
    }
    fz_finish();
    return 0;
}
