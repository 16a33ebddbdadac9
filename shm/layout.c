/* The layout of a client's file, computed the same way on both sides:
 *   0            control header (struct hak_shm_ctrl), 8 KiB
 *   8 KiB        one fill ring per node, 4 KiB each
 *   then         the return ring, 12 KiB
 *   then         the idle words, 4 bytes per SuperSlab, from a page boundary
 *   2 MiB (or the next 2 MiB boundary after the idle words)
 *                the SuperSlab area: capacity x 1 MiB, so that a pair of
 *                SuperSlabs can share one huge page
 * The daemon sends the result; the client recomputes and compares. */
#include "hakmem_shm.h"

#define CTRL_HEADER_BYTES 8192u
#define FILL_RING_BYTES 4096u
#define RETURN_RING_BYTES 12288u
#define PAGE 4096u
#define SS_AREA_ALIGN (2u << 20)

_Static_assert(sizeof(struct hak_shm_ctrl) <= CTRL_HEADER_BYTES, "control header too big");
_Static_assert(sizeof(struct hak_shm_fill_ring) <= FILL_RING_BYTES, "fill ring too big");
_Static_assert(sizeof(struct hak_shm_return_ring) <= RETURN_RING_BYTES, "return ring too big");
_Static_assert((HAK_SHM_FILL_SLOTS & (HAK_SHM_FILL_SLOTS - 1)) == 0, "fill slots: power of two");
_Static_assert((HAK_SHM_RETURN_SLOTS & (HAK_SHM_RETURN_SLOTS - 1)) == 0, "return slots: power of two");

uint64_t hak_shm_fill_ring_offset(uint32_t node)
{
    return CTRL_HEADER_BYTES + (uint64_t)node * FILL_RING_BYTES;
}

uint64_t hak_shm_return_ring_offset(uint32_t nnodes)
{
    return CTRL_HEADER_BYTES + (uint64_t)nnodes * FILL_RING_BYTES;
}

bool hak_shm_layout_compute(uint32_t nnodes, uint32_t capacity, struct hak_shm_layout *out)
{
    if (nnodes < 1 || nnodes > HAK_SHM_MAX_NODES || capacity < 1 || capacity > HAK_SHM_MAX_CAPACITY)
        return false;
    uint64_t idle = hak_shm_return_ring_offset(nnodes) + RETURN_RING_BYTES;
    out->idle_offset = (idle + PAGE - 1) & ~(uint64_t)(PAGE - 1);
    uint64_t ctrl = out->idle_offset + (uint64_t)capacity * sizeof(uint32_t);
    out->ctrl_size = (ctrl + PAGE - 1) & ~(uint64_t)(PAGE - 1);
    out->ss_offset = (out->ctrl_size + SS_AREA_ALIGN - 1) & ~(uint64_t)(SS_AREA_ALIGN - 1);
    out->file_size = out->ss_offset + ((uint64_t)capacity << HAK_SHM_SS_SHIFT);
    out->capacity = capacity;
    out->nnodes = nnodes;
    out->fill_slots = HAK_SHM_FILL_SLOTS;
    out->return_slots = HAK_SHM_RETURN_SLOTS;
    return true;
}

bool hak_shm_layout_equal(const struct hak_shm_layout *a, const struct hak_shm_layout *b)
{
    return a->file_size == b->file_size && a->ctrl_size == b->ctrl_size && a->idle_offset == b->idle_offset &&
           a->ss_offset == b->ss_offset &&
           a->capacity == b->capacity && a->nnodes == b->nnodes && a->fill_slots == b->fill_slots &&
           a->return_slots == b->return_slots;
}

struct hak_shm_fill_ring *hak_shm_fill_ring(void *ctrl, uint32_t node)
{
    return (struct hak_shm_fill_ring *)((char *)ctrl + hak_shm_fill_ring_offset(node));
}

struct hak_shm_return_ring *hak_shm_return_ring(void *ctrl, const struct hak_shm_layout *l)
{
    return (struct hak_shm_return_ring *)((char *)ctrl + hak_shm_return_ring_offset(l->nnodes));
}

_Atomic uint32_t *hak_shm_idle_words(void *ctrl, const struct hak_shm_layout *l)
{
    return (_Atomic uint32_t *)((char *)ctrl + l->idle_offset);
}

uint64_t hak_shm_ss_offset(const struct hak_shm_layout *l, uint32_t idx)
{
    return l->ss_offset + ((uint64_t)idx << HAK_SHM_SS_SHIFT);
}

enum hak_shm_off hak_shm_ss_index(const struct hak_shm_layout *l, uint64_t off, uint32_t *idx)
{
    if (off < l->ss_offset || off >= l->file_size)
        return HAK_SHM_OFF_RANGE;
    if ((off - l->ss_offset) & (HAK_SHM_SS_SIZE - 1))
        return HAK_SHM_OFF_MISALIGNED;
    *idx = (uint32_t)((off - l->ss_offset) >> HAK_SHM_SS_SHIFT);
    return HAK_SHM_OFF_OK;
}
