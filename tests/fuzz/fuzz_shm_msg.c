/* Fuzz target: the contract's framing and layout (shm/msg.c, shm/layout.c)
 * directly. hak_msg_check must accept a datagram exactly when its header,
 * version, type and size agree (a status: its counts and size), whatever
 * the bytes, and hak_msg_peek must agree with it;
 * hak_shm_layout_compute must give, for any (nnodes, capacity) it
 * accepts, a layout whose parts do not overlap and fit the file;
 * hak_shm_layout_equal must see any one changed field, and
 * hak_shm_ss_index must take exactly the offsets of SuperSlabs.
 *
 * Input: nnodes (u32), capacity (u32), a field selector and a new value
 * (u64) for the layout; the rest is one datagram. */
#include "fuzz.h"
#include "hakmem_shm.h"

static void check_msg(const uint8_t *buf, size_t n)
{
    unsigned type = hak_msg_check(buf, n);
    if (!type)
        return;
    struct hak_msg_hdr h;
    FZ_ASSERT(n >= sizeof h);
    memcpy(&h, buf, sizeof h);
    FZ_ASSERT(h.magic == HAK_SHM_MAGIC && h.len == n && h.flags == 0 && h.type == type);
    FZ_ASSERT(h.version == HAK_SHM_VERSION);
    unsigned peeked, version;
    FZ_ASSERT(hak_msg_peek(buf, n, &peeked, &version) && peeked == type && version == HAK_SHM_VERSION);
    switch (type) {
    case HAK_MSG_HELLO:
        FZ_ASSERT(n == sizeof(struct hak_msg_hello));
        break;
    case HAK_MSG_WELCOME:
        FZ_ASSERT(n == sizeof(struct hak_msg_welcome));
        break;
    case HAK_MSG_REFUSE:
        FZ_ASSERT(n == sizeof(struct hak_msg_refuse));
        break;
    case HAK_MSG_DETACH:
    case HAK_MSG_STATUS_REQ:
    case HAK_MSG_DRY:
        FZ_ASSERT(n == sizeof h);
        break;
    case HAK_MSG_STATUS: {
        struct hak_msg_status st;
        FZ_ASSERT(n >= sizeof st);
        memcpy(&st, buf, sizeof st);
        FZ_ASSERT(st.daemon.nnodes <= HAK_SHM_MAX_NODES && st.daemon.nclients <= HAK_STATUS_MAX_CLIENTS &&
                  st.daemon.nusers <= HAK_STATUS_MAX_USERS);
        FZ_ASSERT(n == sizeof st + st.daemon.nnodes * sizeof(struct hak_status_node) +
                           st.daemon.nclients * sizeof(struct hak_status_client) +
                           st.daemon.nusers * sizeof(struct hak_status_user));
        break;
    }
    default:
        fz_fail("unknown type accepted", __FILE__, __LINE__);
    }
}

static void check_layout(uint32_t nnodes, uint32_t capacity, uint8_t field, uint64_t v)
{
    struct hak_shm_layout l, m;
    if (!hak_shm_layout_compute(nnodes, capacity, &l)) {
        FZ_ASSERT(nnodes < 1 || nnodes > HAK_SHM_MAX_NODES || capacity < 1 || capacity > HAK_SHM_MAX_CAPACITY);
        return;
    }
    FZ_ASSERT(l.nnodes == nnodes && l.capacity == capacity);
    FZ_ASSERT(l.fill_slots == HAK_SHM_FILL_SLOTS && l.return_slots == HAK_SHM_RETURN_SLOTS);
    FZ_ASSERT(l.ctrl_size % 4096 == 0 && l.ctrl_size <= l.ss_offset && l.ss_offset % (2 * HAK_SHM_SS_SIZE) == 0);
    FZ_ASSERT(l.idle_offset % 4096 == 0 && l.idle_offset + 4ull * capacity <= l.ctrl_size);
    FZ_ASSERT(l.file_size == l.ss_offset + ((uint64_t)capacity << HAK_SHM_SS_SHIFT));
    /* Header, fill rings, return ring: in this order, apart, inside. */
    uint64_t end = sizeof(struct hak_shm_ctrl);
    for (uint32_t n = 0; n < nnodes; n++) {
        uint64_t at = hak_shm_fill_ring_offset(n);
        FZ_ASSERT(at >= end && at % 64 == 0);
        end = at + sizeof(struct hak_shm_fill_ring);
    }
    uint64_t at = hak_shm_return_ring_offset(nnodes);
    FZ_ASSERT(at >= end && at % 64 == 0 && at + sizeof(struct hak_shm_return_ring) <= l.idle_offset);

    /* Any offset the other side writes: a SuperSlab's, or said why not. */
    uint32_t idx = UINT32_MAX;
    switch (hak_shm_ss_index(&l, v, &idx)) {
    case HAK_SHM_OFF_OK:
        FZ_ASSERT(idx < capacity && hak_shm_ss_offset(&l, idx) == v);
        break;
    case HAK_SHM_OFF_RANGE:
        FZ_ASSERT(v < l.ss_offset || v >= l.file_size);
        break;
    default:
        FZ_ASSERT(v >= l.ss_offset && v < l.file_size && (v - l.ss_offset) % HAK_SHM_SS_SIZE != 0);
    }
    FZ_ASSERT(hak_shm_layout_equal(&l, &l));
    m = l;
    switch (field % 8) {
    case 7: m.idle_offset = v; break;
    case 0: m.file_size = v; break;
    case 1: m.ctrl_size = v; break;
    case 2: m.ss_offset = v; break;
    case 3: m.capacity = (uint32_t)v; break;
    case 4: m.nnodes = (uint32_t)v; break;
    case 5: m.fill_slots = (uint32_t)v; break;
    default: m.return_slots = (uint32_t)v; break;
    }
    FZ_ASSERT(hak_shm_layout_equal(&l, &m) == (memcmp(&l, &m, sizeof l) == 0));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct fz_in in = {data, size};
    uint32_t nnodes = fz_u32(&in), capacity = fz_u32(&in);
    uint8_t field = fz_u8(&in);
    uint64_t v = fz_u64(&in);
    check_layout(nnodes, capacity, field, v);
    /* Small values too, so that the valid range is reached often. */
    check_layout(nnodes % (HAK_SHM_MAX_NODES + 2), capacity % (HAK_SHM_MAX_CAPACITY + 2), field, v);
    /* The datagram, copied so that ASan sees its exact end. */
    uint8_t *buf = malloc(in.n ? in.n : 1);
    FZ_ASSERT(buf != NULL);
    memcpy(buf, in.p, in.n);
    check_msg(buf, in.n);
    free(buf);
    return 0;
}
