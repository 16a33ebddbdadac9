/* STATUS replies: the daemon, one record per node, one per client (up to
 * HAK_STATUS_MAX_CLIENTS, which the session cap guarantees), one per uid
 * with a connection (up to HAK_STATUS_MAX_USERS), in one datagram. Anyone who can connect may ask; nothing private is in it
 * beyond pids and uids, which ps shows as well. */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "pagerd.h"

static union {
    struct hak_msg_status st;
    unsigned char raw[HAK_STATUS_MAX_BYTES];
} out;

static void fill_daemon(struct hak_status_daemon *d, uint64_t now)
{
    memset(d, 0, sizeof *d);
    snprintf(d->version, sizeof d->version, "%s", PAGERD_VERSION);
    d->uptime_ms = now - pd.start_ms;
    d->pid = (uint32_t)getpid();
    d->nnodes = pd.nnodes;
    d->nclients = pd.nsessions < HAK_STATUS_MAX_CLIENTS ? pd.nsessions : HAK_STATUS_MAX_CLIENTS;
    d->numa = pd.numa;
    d->ss_total = pd.charged;
    d->ss_limit_total = pd.set.limit_total;
    d->ss_limit_client = pd.set.limit_client;
    d->ss_limit_uid = pd.set.limit_uid;
    d->sessions_uid = pd.set.sessions_uid;
    d->status_per_sec = pd.set.status_per_sec;
    d->pages = pd.pages;
    d->thp = pd.thp;
    pages_hugetlb_count(&d->hugetlb_total, &d->hugetlb_free);
    memcpy(d->pages_why, pd.pages_why, sizeof d->pages_why);
    d->nusers = pd.nusers < HAK_STATUS_MAX_USERS ? pd.nusers : HAK_STATUS_MAX_USERS;
}

static const uint32_t charge_code[] = {
    [CHARGE_OWN] = HAK_CHARGE_OWN,
    [CHARGE_HELPER] = HAK_CHARGE_HELPER,
    [CHARGE_DAEMON] = HAK_CHARGE_DAEMON,
    [CHARGE_NCG] = HAK_CHARGE_UNKNOWN,
};

static void fill_cgroup(struct hak_status_client *r, const struct memcg *cg)
{
    r->charge = charge_code[cg->mode];
    r->cg_limit = cg->read_ms ? cg->limit : 0;
    r->cg_usage = cg->read_ms ? cg->usage : 0;
    size_t n = strlen(cg->where.path), keep = sizeof r->cgroup - 1;
    memcpy(r->cgroup, cg->where.path + (n > keep ? n - keep : 0), n > keep ? keep : n);
}

static void fill_user(struct hak_status_user *r, const struct user *u)
{
    memset(r, 0, sizeof *r);
    r->uid = u->uid;
    r->conns = u->conns;
    r->sessions = u->sessions;
    r->charged = u->charged;
    r->limit_hits = u->limit_hits;
    r->refused = u->refused;
}

static void fill_client(struct hak_status_client *r, const struct client *c, uint64_t now)
{
    memset(r, 0, sizeof *r);
    r->pid = c->pid;
    r->uid = c->uid;
    r->node = c->last_node;
    r->capacity = c->layout.capacity;
    r->session = c->session;
    r->held = c->count[SS_CLIENT];
    r->ring_level = c->count[SS_RING];
    r->dirty = c->count[SS_DIRTY];
    r->watermark = c->watermark;
    r->served = c->served;
    r->returned = c->returned;
    r->limit_hits = c->limit_hits;
    r->connected_ms = now - c->connected_ms;
    r->daemon_held = c->ours;
    r->reclaimed = c->reclaimed;
    r->pages = c->pages;
    r->cgroup_hits = c->cgroup_hits;
    fill_cgroup(r, c->cg);
}

/* The per-node sums over clients, from our records. */
static void fill_nodes(struct hak_status_node *nodes)
{
    memset(nodes, 0, pd.nnodes * sizeof *nodes);
    for (uint32_t n = 0; n < pd.nnodes; n++) {
        nodes[n].node = n;
        nodes[n].prefaulted = pd.nodes[n].prefaulted;
        nodes[n].punched = pd.nodes[n].punched;
    }
    const struct client *c;
    TAILQ_FOREACH(c, &pd.clients, entry) {
        if (c->state != CL_SESSION)
            continue;
        for (uint32_t n = 0; n < pd.nnodes; n++) {
            /* Ready: still ours to give; what we took back waits in the ring
             * for the client to pop and push it back. */
            for (uint32_t p = c->node[n].head; p != c->node[n].tail; p++)
                nodes[n].ready += c->ss[c->node[n].shadow[p & (HAK_SHM_FILL_SLOTS - 1)]].state == SS_RING;
            nodes[n].dirty += c->node[n].ndirty;
        }
        nodes[c->last_node].clients++;
    }
}

/* Pops since the last tick, so that `served` agrees with what a client
 * that has stopped allocating counted itself. A client caught lying here
 * is dropped, as on the tick. */
static void account_pops(void)
{
    struct client *c, *next;
    for (c = TAILQ_FIRST(&pd.clients); c; c = next) {
        next = TAILQ_NEXT(c, entry); /* c may be dropped (unlinked) */
        for (uint32_t n = 0; c->state == CL_SESSION && n < c->layout.nnodes; n++)
            if (!pool_account_pops(c, n))
                break;
    }
}

void status_reply(struct client *req)
{
    account_pops();
    if (req->state == CL_DEAD)
        return;
    uint64_t now = now_ms();
    struct hak_status_daemon d;
    fill_daemon(&d, now);
    struct hak_status_node nodes[HAK_SHM_MAX_NODES];
    fill_nodes(nodes);
    size_t len = sizeof out.st;
    memcpy(out.raw + len, nodes, d.nnodes * sizeof nodes[0]);
    len += d.nnodes * sizeof nodes[0];
    uint32_t nc = 0;
    const struct client *c;
    TAILQ_FOREACH(c, &pd.clients, entry) {
        if (c->state != CL_SESSION || nc == d.nclients)
            continue;
        struct hak_status_client rec;
        fill_client(&rec, c, now);
        memcpy(out.raw + len, &rec, sizeof rec);
        len += sizeof rec;
        nc++;
    }
    d.nclients = nc;
    uint32_t nu = 0;
    const struct user *u;
    TAILQ_FOREACH(u, &pd.users, entry) {
        if (nu == d.nusers)
            break;
        struct hak_status_user rec;
        fill_user(&rec, u);
        memcpy(out.raw + len, &rec, sizeof rec);
        len += sizeof rec;
        nu++;
    }
    d.nusers = nu;
    memset(&out.st, 0, sizeof out.st);
    hak_msg_init(&out.st.hdr, HAK_MSG_STATUS, (uint32_t)len);
    out.st.daemon = d;
    if (!session_reply(req, out.raw, len))
        session_drop(req, "status reply could not be sent");
}
