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
    case HAK_MSG_DRY:
        return sizeof(struct hak_msg_hdr);
    default:
        return 0;
    }
}

bool hak_msg_peek(const void *buf, size_t n, unsigned *type, unsigned *version)
{
    struct hak_msg_hdr h;
    if (n < sizeof h)
        return false;
    memcpy(&h, buf, sizeof h);
    if (h.magic != HAK_SHM_MAGIC || h.len != n || h.flags != 0)
        return false;
    *type = h.type;
    *version = h.version;
    return true;
}

/* A status reply's size from its own counts, or 0 if they are out of
 * range or it is shorter than its header. */
static uint64_t status_size(const void *buf, size_t n)
{
    struct hak_msg_status st;
    if (n < sizeof st)
        return 0;
    memcpy(&st, buf, sizeof st);
    const struct hak_status_daemon *d = &st.daemon;
    if (d->nnodes > HAK_SHM_MAX_NODES || d->nclients > HAK_STATUS_MAX_CLIENTS || d->nusers > HAK_STATUS_MAX_USERS)
        return 0;
    return sizeof st + (uint64_t)d->nnodes * sizeof(struct hak_status_node) +
           (uint64_t)d->nclients * sizeof(struct hak_status_client) +
           (uint64_t)d->nusers * sizeof(struct hak_status_user);
}

unsigned hak_msg_check(const void *buf, size_t n)
{
    unsigned type, version;
    if (!hak_msg_peek(buf, n, &type, &version) || version != HAK_SHM_VERSION)
        return 0;
    uint64_t want = type == HAK_MSG_STATUS ? status_size(buf, n) : fixed_size(type);
    return want && want == n ? type : 0;
}

const char *hak_charge_name(unsigned charge)
{
    switch (charge) {
    case HAK_CHARGE_OWN:
        return "own";
    case HAK_CHARGE_HELPER:
        return "helper";
    case HAK_CHARGE_DAEMON:
        return "daemon";
    case HAK_CHARGE_UNKNOWN:
        return "unknown";
    default:
        return "?";
    }
}

const char *hak_pages_name(unsigned pages)
{
    switch (pages) {
    case HAK_PAGES_HUGETLB:
        return "2M-hugetlb";
    case HAK_PAGES_THP:
        return "2M-thp";
    case HAK_PAGES_4K:
        return "4k";
    default:
        return "?";
    }
}
