/* SuperSlabs coming back: the return ring is drained and every offset in it
 * checked against our records (a client may return only what it holds, or
 * acknowledge what we took back idle); returned SuperSlabs stay warm on
 * their node's deque for reuse, and after reclaim_delay_ms their pages are
 * punched out of the file. SuperSlabs a client keeps warm but idle past
 * the deadline of their idle word are taken back without its help. */
#include <fcntl.h>
#include <string.h>

#include "pagerd.h"

static const char *const state_names[SS_NSTATES] = {
    [SS_FREE] = "never handed out",     [SS_PREFAULTING] = "being pre-faulted",
    [SS_RING] = "in a fill ring",       [SS_CLIENT] = "held",
    [SS_DIRTY] = "already returned",    [SS_PUNCHING] = "already returned",
    [SS_TAKEN] = "already returned",
};

/* ---- the deque of warm SuperSlabs, per node, oldest to newest ---- */

static void dirty_push(struct client *c, uint32_t idx)
{
    struct cnode *cn = &c->node[c->ss[idx].node];
    struct ss *s = &c->ss[idx];
    s->prev = cn->dirty_new;
    s->next = SS_NIL;
    if (cn->dirty_new != SS_NIL)
        c->ss[cn->dirty_new].next = idx;
    else
        cn->dirty_old = idx;
    cn->dirty_new = idx;
    cn->ndirty++;
}

static void dirty_unlink(struct client *c, uint32_t idx)
{
    struct cnode *cn = &c->node[c->ss[idx].node];
    struct ss *s = &c->ss[idx];
    if (s->prev != SS_NIL)
        c->ss[s->prev].next = s->next;
    else
        cn->dirty_old = s->next;
    if (s->next != SS_NIL)
        c->ss[s->next].prev = s->prev;
    else
        cn->dirty_new = s->prev;
    cn->ndirty--;
}

/* The warmest SuperSlab of the node (still DIRTY; the caller moves it). */
uint32_t reclaim_take_warm(struct client *c, uint32_t node)
{
    uint32_t idx = c->node[node].dirty_new;
    if (idx != SS_NIL)
        dirty_unlink(c, idx);
    return idx;
}

/* ---- the return ring ---- */

static void punch_now(struct client *c, uint32_t idx);

static bool take_back(struct client *c, uint64_t slot, uint64_t now)
{
    uint64_t off = slot & ~HAK_SHM_RETURN_NOW;
    uint32_t idx;
    enum hak_shm_off v = hak_shm_ss_index(&c->layout, off, &idx);
    if (v != HAK_SHM_OFF_OK) {
        session_drop(c, "returned offset %#llx %s", (unsigned long long)slot,
                     v == HAK_SHM_OFF_RANGE ? "out of range" : "misaligned");
        return false;
    }
    /* Popped and returned since this tick looked at the fill rings: the
     * head that moved is visible now (the client advanced it before it
     * published the return), so account again before judging. */
    if (c->ss[idx].state == SS_RING && !pool_account_pops(c, c->ss[idx].node))
        return false;
    struct ss *s = &c->ss[idx];
    if (s->taken && s->in_ring && !pool_account_pops(c, s->node))
        return false;
    if (s->taken && s->in_ring) {
        session_drop(c, "returned offset %#llx still in its fill ring", (unsigned long long)off);
        return false;
    }
    if (s->taken && (s->state == SS_TAKEN || s->state == SS_PUNCHING)) {
        /* The client knows we took it: free once its pages are gone. */
        s->taken = 0;
        c->acked++;
        if (s->state == SS_TAKEN)
            ss_freed(c, idx);
        return true;
    }
    if (s->state != SS_CLIENT) {
        session_drop(c, "returned offset %#llx not its own (%s)", (unsigned long long)off, state_names[s->state]);
        return false;
    }
    ss_set_state(c, idx, SS_DIRTY);
    c->ss[idx].dirty_ms = now;
    dirty_push(c, idx);
    c->returned++;
    if (slot & HAK_SHM_RETURN_NOW) {
        /* malloc_trim: it is not growing, whatever it popped to give back;
         * what waits in its rings, or is on its way there, goes back too
         * (reclaim_ring), until it pops again. */
        c->pops_tick = 0;
        c->pop_rate = 0;
        c->watermark = pd.set.min_watermark;
        c->trimmed = true;
        punch_now(c, idx);
    }
    return true;
}

/* At most one ring's worth per tick, so a client pushing as fast as we pop
 * cannot hold the loop. The head is ours: if it changed, the client wrote
 * it. */
bool reclaim_drain(struct client *c, uint64_t now)
{
    struct hak_shm_return_ring *r = hak_shm_return_ring(c->ctrl, &c->layout);
    for (uint32_t i = 0; i < HAK_SHM_RETURN_SLOTS; i++) {
        if (atomic_load_explicit(&r->head.v, memory_order_relaxed) != c->ret_head) {
            session_drop(c, "return ring: head overwritten");
            return false;
        }
        uint64_t off;
        int got = hak_return_ring_pop(r, &off);
        if (got < 0) {
            session_drop(c, "return ring: indices corrupt");
            return false;
        }
        if (got == 0)
            break;
        c->ret_head++;
        if (!take_back(c, off, now))
            return false;
    }
    return true;
}

/* ---- punching ---- */

/* The SuperSlab cannot be handed out again until the punch completed:
 * a punch landing after a reuse would zero the client's data. With huge
 * pages the two halves of a page are punched together (punching one would
 * split the page and free nothing): the first waits for the second. */
void reclaim_punch(struct client *c, uint32_t idx)
{
    ss_set_state(c, idx, SS_PUNCHING);
    if (c->unit == 2) {
        struct ss *other = &c->ss[idx ^ 1];
        if (!(other->state == SS_PUNCHING && other->pair_wait)) {
            c->ss[idx].pair_wait = 1;
            return;
        }
        other->pair_wait = 0;
        idx &= ~1u;
    }
    struct req *r = req_new(REQ_PUNCH, c, idx);
    loop_fallocate(r, c->memfd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, hak_shm_ss_offset(&c->layout, idx),
                   c->unit * HAK_SHM_SS_SIZE);
}

static bool due(const struct client *c, uint32_t idx, uint64_t now)
{
    const struct ss *s = &c->ss[idx];
    return s->state == SS_DIRTY && (s->due_now || now - s->dirty_ms >= pd.set.reclaim_delay_ms);
}

/* Returned with HAK_SHM_RETURN_NOW: punched at once, with huge pages
 * together with the other half if that is free too (warm, or waiting for
 * us), else marked to go when that half does. */
static void punch_now(struct client *c, uint32_t idx)
{
    c->ss[idx].due_now = 1;
    uint32_t other = idx ^ 1;
    if (c->unit == 1 || (c->ss[other].state == SS_PUNCHING && c->ss[other].pair_wait)) {
        dirty_unlink(c, idx);
        reclaim_punch(c, idx);
    } else if (c->ss[other].state == SS_DIRTY) {
        dirty_unlink(c, idx);
        dirty_unlink(c, other);
        reclaim_punch(c, idx);
        reclaim_punch(c, other);
    }
}

/* Warm SuperSlabs past the delay are punched. With huge pages only a whole
 * page is: a half whose other half is in use stays warm (the page is
 * resident anyway), first in line for reuse. */
void reclaim_punch_old(struct client *c, uint64_t now)
{
    for (uint32_t n = 0; n < c->layout.nnodes; n++) {
        uint32_t idx = c->node[n].dirty_old;
        while (idx != SS_NIL && due(c, idx, now)) {
            uint32_t next = c->ss[idx].next, other = idx ^ 1;
            if (c->unit == 1) {
                dirty_unlink(c, idx);
                reclaim_punch(c, idx);
            } else if (due(c, other, now)) {
                if (next == other)
                    next = c->ss[other].next;
                dirty_unlink(c, idx);
                dirty_unlink(c, other);
                reclaim_punch(c, idx);
                reclaim_punch(c, other);
            } else if (c->ss[other].state == SS_PUNCHING && c->ss[other].pair_wait) {
                dirty_unlink(c, idx);
                reclaim_punch(c, idx);
            }
            idx = next;
        }
    }
}

/* A failed punch leaves pages behind; the SuperSlab is still free to use
 * (a later pre-fault simply finds them there). */
void reclaim_punch_done(struct req *r, int res)
{
    struct client *c = r->client;
    if (c->state != CL_SESSION)
        return;
    if (res < 0)
        client_error(c, "punch", -res);
    for (uint32_t idx = r->ss; idx < r->ss + c->unit; idx++) {
        if (res >= 0)
            pd.nodes[c->ss[idx].node].punched++;
        if (c->ss[idx].taken)
            ss_set_state(c, idx, SS_TAKEN); /* until the client pushes it back */
        else
            ss_freed(c, idx);
    }
}

/* Ours again (its idle word says TAKEN): punched, then it waits for the
 * client to push it back. */
static void take_idle(struct client *c, uint32_t idx)
{
    c->ss[idx].taken = 1;
    c->reclaimed++;
    reclaim_punch(c, idx);
}

/* Take back what the client keeps idle past its deadline: a CAS on its
 * idle word, which the client's own CAS (to reuse it) races. Only for
 * SuperSlabs in its hands by our records; looked at when the client
 * published one since the last look, or one seen was not due yet. */
void reclaim_idle(struct client *c, uint64_t now)
{
    if (!c->count[SS_CLIENT] || now < c->idle_next_ms)
        return;
    uint64_t hint = atomic_load_explicit(&c->ctrl->c_idle, memory_order_relaxed);
    if (hint == c->idle_hint && !c->idle_pending)
        return;
    c->idle_hint = hint;
    c->idle_pending = false;
    c->idle_next_ms = now + PAGERD_IDLE_SCAN_MS;
    _Atomic uint32_t *words = hak_shm_idle_words(c->ctrl, &c->layout);
    uint32_t now32 = (uint32_t)now;
    for (uint32_t idx = 0; idx < c->layout.capacity; idx++) {
        if (c->ss[idx].state != SS_CLIENT)
            continue;
        uint32_t w = atomic_load_explicit(&words[idx], memory_order_acquire);
        if (w <= HAK_IDLE_TAKEN)
            continue;
        if (!hak_idle_due(w, now32)) {
            c->idle_pending = true; /* look again later */
            continue;
        }
        if (!atomic_compare_exchange_strong(&words[idx], &w, HAK_IDLE_TAKEN))
            continue; /* the client took it back into use */
        take_idle(c, idx);
    }
}

/* A client that stopped popping for half the reclaim delay, or trimmed
 * since it last popped, keeps only min_watermark per ring, the oldest: the
 * rest is taken back (a CAS on its idle word, which the client's pop
 * races). A SuperSlab taken stays in its ring until the client pops it and
 * pushes it back. */
void reclaim_ring(struct client *c, uint64_t now)
{
    /* (last_pop_ms may be later than the tick's now.) */
    if ((!c->trimmed && now < c->last_pop_ms + pd.set.reclaim_delay_ms / 2) ||
        c->count[SS_RING] <= pd.set.min_watermark)
        return;
    _Atomic uint32_t *words = hak_shm_idle_words(c->ctrl, &c->layout);
    for (uint32_t n = 0; n < c->layout.nnodes; n++) {
        struct cnode *cn = &c->node[n];
        uint32_t kept = 0;
        for (uint32_t p = cn->head; p != cn->tail; p++) {
            uint32_t idx = cn->shadow[p & (HAK_SHM_FILL_SLOTS - 1)];
            if (c->ss[idx].state != SS_RING || kept++ < pd.set.min_watermark)
                continue;
            uint32_t w = HAK_IDLE_RING;
            if (atomic_compare_exchange_strong(&words[idx], &w, HAK_IDLE_TAKEN))
                take_idle(c, idx);
        }
    }
}
