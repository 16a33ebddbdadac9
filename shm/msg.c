/* Message framing: every datagram starts with hak_msg_hdr and has exactly
 * the size its type says (a status reply: the size its counts say). */
#include <string.h>

#include "hakmem_shm.h"

void hak_msg_init(struct hak_msg_hdr *h, enum hak_msg_type type, uint32_t len)
{
    memset(h, 0, sizeof *h);
    h->magic = HAK_SHM_MAGIC;
    h->version = HAK_SHM_VERSION;
    h->type = (uint16_t)type;
    h->len = len;
}

static size_t fixed_size(unsigned type)
{
    switch (type) {
    case HAK_MSG_HELLO:
        return sizeof(struct hak_msg_hello);
    case HAK_MSG_WELCOME:
        return sizeof(struct hak_msg_welcome);
    case HAK_MSG_REFUSE:
        return sizeof(struct hak_msg_refuse);
    case HAK_MSG_DETACH:
    case HAK_MSG_STATUS_REQ:
        return sizeof(struct hak_msg_hdr);
    default:
        return 0;
    }
}

unsigned hak_msg_check(const void *buf, size_t n)
{
    struct hak_msg_hdr h;
    if (n < sizeof h)
        return 0;
    memcpy(&h, buf, sizeof h);
    if (h.magic != HAK_SHM_MAGIC || h.len != n || h.flags != 0)
        return 0;
    if (h.type == HAK_MSG_STATUS) {
        struct hak_msg_status st;
        if (n < sizeof st)
            return 0;
        memcpy(&st, buf, sizeof st);
        uint64_t want = sizeof st + (uint64_t)st.daemon.nnodes * sizeof(struct hak_status_node) +
                        (uint64_t)st.daemon.nclients * sizeof(struct hak_status_client);
        if (st.daemon.nnodes > HAK_SHM_MAX_NODES || st.daemon.nclients > HAK_STATUS_MAX_CLIENTS || want != n)
            return 0;
        return HAK_MSG_STATUS;
    }
    /* A version mismatch is reported by the receiver of a hello, which
     * needs the type to answer; other types must match exactly. */
    if (h.version != HAK_SHM_VERSION && h.type != HAK_MSG_HELLO)
        return 0;
    size_t want = fixed_size(h.type);
    return want && want == n ? h.type : 0;
}
