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
#include <sys/stat.h>
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
    if (st != SS_DIRTY)
        s->due_now = 0;
    if (st == SS_FREE)
        charge_ss_freed(c, idx);
}

static void ss_free_push(struct client *c, uint32_t idx)
{
    c->ss[idx].next = c->free_top;
    c->free_top = idx;
}

/* Its pages are gone: FREE, and on the free stack once the whole unit of
 * pre-faulting is (with huge pages, both halves of the page). */
void ss_freed(struct client *c, uint32_t idx)
{
    ss_set_state(c, idx, SS_FREE);
    if (c->unit == 1)
        ss_free_push(c, idx);
    else if (c->ss[idx ^ 1].state == SS_FREE)
        ss_free_push(c, idx & ~1u);
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
    /* Lowest offsets first: a small client touches little of its file.
     * With huge pages the stack holds pairs by their even index (an odd
     * capacity's last SuperSlab is never used). */
    c->free_top = SS_NIL;
    for (uint32_t i = cap / c->unit * c->unit; i > 0;) {
        i -= c->unit;
        ss_free_push(c, i);
    }
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
        c->ss[idx].in_ring = 0;
        if (c->ss[idx].state == SS_RING) { /* else taken back meanwhile */
            ss_set_state(c, idx, SS_CLIENT);
            served++;
        }
    }
    if (popped) {
        c->trimmed = false;
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
    c->ss[idx].in_ring = 1;
    ss_set_state(c, idx, SS_RING);
    return true;
}

/* Ours, and the client's hint (shm/: coming). */
static void set_prefaulting(struct client *c, uint32_t n, uint32_t v)
{
    c->node[n].prefaulting = v;
    atomic_store_explicit(&hak_shm_fill_ring(c->ctrl, n)->coming.v, v, memory_order_release);
}

/* ---- refill ---- */

/* Room under every limit for n more SuperSlabs. */
static bool within_limits(struct client *c, uint32_t n)
{
    if (c->user->charged + n > pd.set.limit_uid) {
        c->user->limit_hits++;
        return false;
    }
    return client_charge(c) + n <= pd.set.limit_client && pd.charged + n <= pd.set.limit_total;
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
    if (!pd.numa || pd.nnodes == 1)
        return;
    unsigned long mask[HAK_SHM_MAX_NODES / (8 * sizeof(unsigned long)) + 1];
    memset(mask, 0, sizeof mask);
    mask[node / (8 * sizeof(unsigned long))] = 1ul << (node % (8 * sizeof(unsigned long)));
    void *addr = (char *)c->ss_area + ((uint64_t)idx << HAK_SHM_SS_SHIFT);
    if (mbind(addr, c->unit * HAK_SHM_SS_SIZE, MPOL_PREFERRED, mask, 8 * sizeof mask, 0) < 0)
        client_error(c, "mbind", errno);
}

/* Pre-fault the unit at idx (a SuperSlab, or a huge page's pair) for node
 * n. False if it cannot start now (the unit stays free). */
static bool prefault(struct client *c, uint32_t n, uint32_t idx)
{
    for (uint32_t i = idx; i < idx + c->unit; i++) {
        c->ss[i].node = (uint8_t)n;
        ss_set_state(c, i, SS_PREFAULTING);
    }
    set_prefaulting(c, n, c->node[n].prefaulting + c->unit);
    bind_node(c, idx, n);
    struct req *r = req_new(REQ_PREFAULT, c, idx);
    if (charge_prefault(c, r))
        return true;
    req_done(r);
    set_prefaulting(c, n, c->node[n].prefaulting - c->unit);
    for (uint32_t i = idx; i < idx + c->unit; i++)
        ss_set_state(c, i, SS_FREE);
    return false;
}

void pool_prefault_done(struct req *r, int res)
{
    struct client *c = r->client;
    if (c->state != CL_SESSION)
        return;
    uint32_t idx = r->ss, n = c->ss[idx].node;
    set_prefaulting(c, n, c->node[n].prefaulting - c->unit);
    if (res < 0) {
        /* The pool ran dry (or the host is out of memory): its rings too,
         * for a while, and it allocates in-process meanwhile. */
        client_error(c, c->pages == HAK_PAGES_HUGETLB ? "pre-fault from the huge page pool" : "pre-fault", -res);
        c->fresh_after_ms = now_ms() + PAGERD_PREFAULT_RETRY_MS;
        for (uint32_t i = idx; i < idx + c->unit; i++)
            reclaim_punch(c, i); /* whatever pages it got go back */
        return;
    }
    pd.nodes[n].prefaulted += c->unit;
    for (uint32_t i = idx; i < idx + c->unit; i++)
        if (!fill_push(c, n, i))
            return;
}

/* Fill node n's ring up to the watermark, counting what is on its way (a
 * pair may pass it by one, never the ring's size). */
static bool top_up(struct client *c, uint32_t n, uint64_t now)
{
    struct cnode *cn = &c->node[n];
    uint32_t out;
    while ((out = cn->tail - cn->head + cn->prefaulting) < c->watermark && out + c->unit <= HAK_SHM_FILL_SLOTS) {
        if (!within_limits(c, 1)) {
            limit_hit(c, now);
            break;
        }
        uint32_t idx = reclaim_take_warm(c, n);
        if (idx != SS_NIL) {
            if (!fill_push(c, n, idx))
                return false;
            continue;
        }
        if (now < c->fresh_after_ms)
            break; /* a pre-fault failed a moment ago */
        if (c->unit > 1 && !within_limits(c, c->unit)) {
            limit_hit(c, now);
            break;
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

/* A new session's rings start filling at once: its first need is now,
 * not a tick from now. */
void pool_client_start(struct client *c)
{
    uint64_t now = now_ms();
    for (uint32_t n = 0; n < c->layout.nnodes; n++)
        if (!top_up(c, n, now))
            return;
}

/* A ring that ran dry doubles the watermark: the client used all we had
 * ahead of it, so it grows faster than its past pops show. But no further
 * ahead than the heap it serves is large: a small program's burst at its
 * start would otherwise leave ten times its heap pre-faulted for it. */
static uint32_t dry_doubled(const struct client *c)
{
    uint32_t w = c->watermark < c->unit ? c->unit : c->watermark, held = c->count[SS_CLIENT];
    uint32_t want = w >= pd.set.max_watermark / 2 ? pd.set.max_watermark : 2 * w;
    uint32_t cap = held > pd.set.min_watermark ? held : pd.set.min_watermark;
    return want > cap ? (cap > c->watermark ? cap : c->watermark) : want;
}

/* The client found a ring empty with nothing on its way (HAK_MSG_DRY) and
 * waits a moment before it provisions itself: the fill starts now, not at
 * the next tick. As hostile as any message: it can do no more than move
 * the watermark within its bounds. */
void pool_client_dry(struct client *c)
{
    for (uint32_t n = 0; n < c->layout.nnodes; n++)
        if (!pool_account_pops(c, n))
            return;
    c->watermark = dry_doubled(c);
    pool_client_start(c);
}

/* Enough in each ring for PAGERD_WM_TICKS ticks at the recent pop rate;
 * and no less than twice the last watermark if a ring ran dry since the
 * last tick (the client counts the times it had to provision itself: a
 * hint, which can do no more than move the watermark within its bounds).
 * The rate moves slowly: a client that pops a few SuperSlabs now and then
 * gets no more ahead of it than that; one that grows runs its rings dry. */
static void adapt_watermark(struct client *c)
{
    uint64_t dry = atomic_load_explicit(&c->ctrl->c_fallbacks, memory_order_relaxed);
    c->pop_rate += ((double)c->pops_tick - c->pop_rate) / RATE_SMOOTHING;
    c->pops_tick = 0;
    double want = ceil(c->pop_rate * PAGERD_WM_TICKS);
    uint32_t doubled = dry != c->dry_seen ? dry_doubled(c) : 0;
    if (want < doubled)
        want = doubled;
    c->dry_seen = dry;
    uint32_t lo = pd.set.min_watermark, hi = pd.set.max_watermark;
    c->watermark = want <= lo ? lo : want >= hi ? hi : (uint32_t)want;
}

/* A file of pool pages holds no more than what we gave: a client that
 * writes (or reads) pages of it it was never given takes them from the
 * host's pool, charged to nobody. Every SuperSlab with pages is in a state
 * other than FREE (the two halves of a pool page together). */
static bool blocks_ours(struct client *c, uint64_t now)
{
    if (c->pages != HAK_PAGES_HUGETLB || now < c->blocks_next_ms)
        return true;
    c->blocks_next_ms = now + PAGERD_IDLE_SCAN_MS;
    struct stat st;
    if (fstat(c->memfd, &st) < 0)
        return true;
    uint64_t have = (uint64_t)st.st_blocks * 512;
    uint64_t given = pages_map_len(c->pages, c->layout.ctrl_size) +
                     (uint64_t)(c->layout.capacity - c->count[SS_FREE]) * HAK_SHM_SS_SIZE;
    if (have <= given)
        return true;
    session_drop(c, "holds %llu MiB of huge pages in its file, %llu MiB more than it was given",
                 (unsigned long long)(have >> 20), (unsigned long long)((have - given) >> 20));
    return false;
}

static void client_tick(struct client *c, uint64_t now)
{
    atomic_store_explicit(&c->ctrl->now_ms, (uint32_t)now, memory_order_relaxed);
    for (uint32_t n = 0; n < c->layout.nnodes; n++)
        if (!pool_account_pops(c, n))
            return;
    if (!reclaim_drain(c, now) || !blocks_ours(c, now))
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
