/* Per-node pools of each client's file: the topology, the state of every
 * SuperSlab, the accounting of pops from the fill rings, the refill (warm
 * SuperSlabs first, else fresh ones bound to the node and pre-faulted), the
 * limits, and the adaptive watermark. pool_tick is the periodic pass. */
#include <errno.h>
#include <math.h>
#include <numa.h>
#include <numaif.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "pagerd.h"

#define FILL_MASK (HAK_SHM_FILL_SLOTS - 1)
/* Smoothing of the pop rate: each tick moves it 1/16 of the way. */
#define RATE_SMOOTHING 16.0

/* ---- topology ---- */

static uint32_t configured_cpus(void)
{
    long n = sysconf(_SC_NPROCESSORS_CONF);
    if (n < 1)
        n = 1;
    return n > (long)HAK_SHM_MAX_CPUS ? HAK_SHM_MAX_CPUS : (uint32_t)n;
}

static void topology_numa(void)
{
    int max = numa_max_node();
    pd.nnodes = max < 0 ? 1 : (uint32_t)max + 1;
    if (pd.nnodes > HAK_SHM_MAX_NODES) {
        log_warnx("%u NUMA nodes: using the first %u", pd.nnodes, HAK_SHM_MAX_NODES);
        pd.nnodes = HAK_SHM_MAX_NODES;
    }
    int cpus = numa_num_configured_cpus();
    pd.ncpus = cpus < 1 ? 1 : cpus > (int)HAK_SHM_MAX_CPUS ? HAK_SHM_MAX_CPUS : (uint32_t)cpus;
    for (uint32_t cpu = 0; cpu < pd.ncpus; cpu++) {
        int node = numa_node_of_cpu((int)cpu);
        /* An offline CPU has no node; the client checks values < nnodes. */
        pd.cpu_node[cpu] = node >= 0 && (uint32_t)node < pd.nnodes ? (uint8_t)node : 0;
    }
    pd.numa = true;
}

void pool_topology(uint32_t fake_nodes)
{
    memset(pd.cpu_node, 0, sizeof pd.cpu_node);
    if (fake_nodes) {
        pd.nnodes = fake_nodes;
        pd.ncpus = configured_cpus();
        for (uint32_t cpu = 0; cpu < pd.ncpus; cpu++)
            pd.cpu_node[cpu] = (uint8_t)(cpu % fake_nodes);
        pd.numa = false;
    } else if (numa_available() >= 0) {
        topology_numa();
    } else {
        pd.nnodes = 1;
        pd.ncpus = configured_cpus();
        pd.numa = false;
    }
}

/* ---- SuperSlab records ---- */

static bool charged_state(enum ss_state st)
{
    return st == SS_PREFAULTING || st == SS_RING || st == SS_CLIENT;
}

/* Pre-faulted (or being so) and not yet taken: ahead of the client's need. */
static bool ahead_state(enum ss_state st)
{
    return st == SS_PREFAULTING || st == SS_RING;
}

uint32_t client_charge(const struct client *c)
{
    return c->count[SS_PREFAULTING] + c->count[SS_RING] + c->count[SS_CLIENT];
}

/* Every state change goes through here, so the per-state counts and the
 * daemon-wide charge cannot drift from the records. */
void ss_set_state(struct client *c, uint32_t idx, enum ss_state st)
{
    struct ss *s = &c->ss[idx];
    c->count[s->state]--;
    c->count[st]++;
    if (charged_state(s->state) && !charged_state(st)) {
        pd.charged--;
        c->user->charged--;
    } else if (!charged_state(s->state) && charged_state(st)) {
        pd.charged++;
        c->user->charged++;
    }
    if (ahead_state(s->state) != ahead_state(st))
        c->cg->ahead += ahead_state(st) ? 1 : -1;
    s->state = (uint8_t)st;
    if (st == SS_FREE)
        charge_ss_freed(c, idx);
}

void ss_free_push(struct client *c, uint32_t idx)
{
    c->ss[idx].next = c->free_top;
    c->free_top = idx;
}

static uint32_t ss_free_pop(struct client *c)
{
    uint32_t idx = c->free_top;
    if (idx != SS_NIL)
        c->free_top = c->ss[idx].next;
    return idx;
}

bool pool_client_init(struct client *c)
{
    uint32_t cap = c->layout.capacity;
    c->ss = calloc(cap, sizeof *c->ss);
    c->node = calloc(c->layout.nnodes, sizeof *c->node);
    if (!c->ss || !c->node) {
        log_warn("calloc for a file of %u SuperSlabs", cap);
        return false;
    }
    /* Lowest offsets first: a small client touches little of its file. */
    c->free_top = SS_NIL;
    for (uint32_t i = cap; i-- > 0;)
        ss_free_push(c, i);
    for (uint32_t n = 0; n < c->layout.nnodes; n++)
        c->node[n].dirty_old = c->node[n].dirty_new = SS_NIL;
    memset(c->count, 0, sizeof c->count);
    c->count[SS_FREE] = cap;
    c->watermark = pd.set.min_watermark;
    c->last_pop_ms = now_ms(); /* its rings are not idle before it had a chance */
    return true;
}

void pool_client_free(struct client *c)
{
    free(c->ss);
    free(c->node);
    c->ss = NULL;
    c->node = NULL;
}

/* ---- fill rings ---- */

/* The client's head moved: the SuperSlabs between our last view and it are
 * now in its hands. Which ones, our shadow says; the ring's slots are not
 * read back. A head outside [our head, our tail] is a lie. */
bool pool_account_pops(struct client *c, uint32_t n)
{
    struct cnode *cn = &c->node[n];
    struct hak_shm_fill_ring *r = hak_shm_fill_ring(c->ctrl, n);
    uint32_t level;
    if (atomic_load_explicit(&r->tail.v, memory_order_relaxed) != cn->tail) {
        session_drop(c, "fill ring %u: tail overwritten", n);
        return false;
    }
    if (!hak_fill_ring_level(r, &level)) {
        session_drop(c, "fill ring %u: indices corrupt", n);
        return false;
    }
    uint32_t outstanding = cn->tail - cn->head;
    uint32_t popped = outstanding - level;
    if (popped > outstanding) {
        session_drop(c, "fill ring %u: head moved backwards", n);
        return false;
    }
    uint32_t served = 0;
    for (uint32_t i = 0; i < popped; i++, cn->head++) {
        uint32_t idx = cn->shadow[cn->head & FILL_MASK];
        if (c->ss[idx].state == SS_RING) { /* else taken back meanwhile */
            ss_set_state(c, idx, SS_CLIENT);
            served++;
        }
    }
    if (popped) {
        c->served += served;
        c->pops_tick += popped;
        c->last_node = n;
        c->last_pop_ms = now_ms();
    }
    return true;
}

/* Push a ready SuperSlab; false (client dropped) if the ring's indices do
 * not agree with ours. We never have more than fill_slots outstanding, so
 * a full ring means the client moved its head backwards. */
static bool fill_push(struct client *c, uint32_t n, uint32_t idx)
{
    struct cnode *cn = &c->node[n];
    struct hak_shm_fill_ring *r = hak_shm_fill_ring(c->ctrl, n);
    uint32_t tail = atomic_load_explicit(&r->tail.v, memory_order_relaxed);
    /* RING before the push publishes it: the client makes it its own with
     * a CAS from RING, which our taking it back from the ring races. */
    atomic_store_explicit(&hak_shm_idle_words(c->ctrl, &c->layout)[idx], HAK_IDLE_RING, memory_order_relaxed);
    if (tail != cn->tail || cn->tail - cn->head >= HAK_SHM_FILL_SLOTS ||
        !hak_fill_ring_push(r, hak_shm_ss_offset(&c->layout, idx))) {
        session_drop(c, "fill ring %u: indices corrupt", n);
        return false;
    }
    cn->shadow[cn->tail & FILL_MASK] = idx;
    cn->tail++;
    ss_set_state(c, idx, SS_RING);
    return true;
}

/* ---- refill ---- */

static bool within_limits(struct client *c)
{
    if (c->user->charged >= pd.set.limit_uid) {
        c->user->limit_hits++;
        return false;
    }
    return client_charge(c) < pd.set.limit_client && pd.charged < pd.set.limit_total;
}

static void limit_hit(struct client *c, uint64_t now)
{
    c->limit_hits++;
    if (now - c->limit_logged_ms < PAGERD_LOG_EVERY_MS)
        return;
    c->limit_logged_ms = now;
    log_info("limit pid=%d uid=%u session=%llu charge=%u limit_client=%u uid_charge=%u limit_uid=%u total=%llu "
             "limit_total=%u cgroup=%s cgroup_room_mib=%lld hits=%llu",
             c->pid, c->uid, (unsigned long long)c->session, client_charge(c), pd.set.limit_client, c->user->charged,
             pd.set.limit_uid, (unsigned long long)pd.charged, pd.set.limit_total, c->cg->where.path,
             c->cg->room == UINT64_MAX ? -1ll : (long long)(c->cg->room >> 20), (unsigned long long)c->limit_hits);
}

/* Rate-limited, per client: errors of the kernel's, not the client's. */
void client_error(struct client *c, const char *what, int err)
{
    uint64_t now = now_ms();
    if (now - c->error_logged_ms < PAGERD_LOG_EVERY_MS)
        return;
    c->error_logged_ms = now;
    log_warnx("%s pid=%d session=%llu: %s", what, c->pid, (unsigned long long)c->session, strerror(err));
}

/* Preferred rather than strict: a full node should slow the client down
 * (remote memory), not fail the fallocate and starve it. */
static void bind_node(struct client *c, uint32_t idx, uint32_t node)
{
    if (!pd.numa)
        return;
    unsigned long mask[HAK_SHM_MAX_NODES / (8 * sizeof(unsigned long)) + 1];
    memset(mask, 0, sizeof mask);
    mask[node / (8 * sizeof(unsigned long))] = 1ul << (node % (8 * sizeof(unsigned long)));
    void *addr = (char *)c->ss_area + ((uint64_t)idx << HAK_SHM_SS_SHIFT);
    if (mbind(addr, HAK_SHM_SS_SIZE, MPOL_PREFERRED, mask, 8 * sizeof mask, 0) < 0)
        client_error(c, "mbind", errno);
}

/* False if it cannot start now (the SuperSlab stays free). */
static bool prefault(struct client *c, uint32_t n, uint32_t idx)
{
    c->ss[idx].node = (uint8_t)n;
    ss_set_state(c, idx, SS_PREFAULTING);
    c->node[n].prefaulting++;
    bind_node(c, idx, n);
    struct req *r = req_new(REQ_PREFAULT, c, idx);
    if (charge_fallocate(c, r, hak_shm_ss_offset(&c->layout, idx), HAK_SHM_SS_SIZE))
        return true;
    req_done(r);
    c->node[n].prefaulting--;
    ss_set_state(c, idx, SS_FREE);
    return false;
}

void pool_prefault_done(struct req *r, int res)
{
    struct client *c = r->client;
    if (c->state != CL_SESSION)
        return;
    uint32_t idx = r->ss, n = c->ss[idx].node;
    c->node[n].prefaulting--;
    if (res < 0) {
        client_error(c, "pre-fault", -res);
        reclaim_punch(c, idx); /* whatever pages it got go back */
        return;
    }
    pd.nodes[n].prefaulted++;
    fill_push(c, n, idx);
}

/* Fill node n's ring up to the watermark, counting what is on its way. */
static bool top_up(struct client *c, uint32_t n, uint64_t now)
{
    struct cnode *cn = &c->node[n];
    while (cn->tail - cn->head + cn->prefaulting < c->watermark) {
        if (!within_limits(c)) {
            limit_hit(c, now);
            break;
        }
        uint32_t idx = reclaim_take_warm(c, n);
        if (idx != SS_NIL) {
            if (!fill_push(c, n, idx))
                return false;
            continue;
        }
        if (!charge_room(c, now)) {
            c->cgroup_hits++;
            limit_hit(c, now);
            break;
        }
        idx = ss_free_pop(c);
        if (idx == SS_NIL)
            break; /* every SuperSlab of its file is out */
        if (!prefault(c, n, idx)) {
            ss_free_push(c, idx);
            break;
        }
    }
    return true;
}

/* Enough in each ring for PAGERD_WM_TICKS ticks at the recent pop rate. */
static void adapt_watermark(struct client *c)
{
    c->pop_rate += ((double)c->pops_tick - c->pop_rate) / RATE_SMOOTHING;
    c->pops_tick = 0;
    double want = ceil(c->pop_rate * PAGERD_WM_TICKS);
    uint32_t lo = pd.set.min_watermark, hi = pd.set.max_watermark;
    c->watermark = want <= lo ? lo : want >= hi ? hi : (uint32_t)want;
}

static void client_tick(struct client *c, uint64_t now)
{
    atomic_store_explicit(&c->ctrl->now_ms, (uint32_t)now, memory_order_relaxed);
    for (uint32_t n = 0; n < c->layout.nnodes; n++)
        if (!pool_account_pops(c, n))
            return;
    if (!reclaim_drain(c, now))
        return;
    reclaim_idle(c, now);
    for (uint32_t n = 0; n < c->layout.nnodes; n++)
        if (!top_up(c, n, now))
            return;
    reclaim_punch_old(c, now);
    reclaim_ring(c, now);
    adapt_watermark(c);
    atomic_fetch_add_explicit(&c->ctrl->heartbeat, 1, memory_order_relaxed);
}

void pool_tick(uint64_t now)
{
    charge_tick(now);
    users_tick(now);
    struct client *c, *next;
    for (c = TAILQ_FIRST(&pd.clients); c; c = next) {
        next = TAILQ_NEXT(c, entry); /* c may be dropped (unlinked) */
        if (c->state == CL_SESSION)
            client_tick(c, now);
    }
}
