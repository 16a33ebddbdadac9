/* Per-thread heaps: the slow-path state behind each thread's TLS front.
 *
 * A thread gets a heap on its first slow path and gives it back at exit.
 * At exit the heap is parked: its caches are flushed and its emptied
 * SuperSlabs given back, the SuperSlabs with live blocks stay owned (and
 * the caches' capacities are kept), so the next thread to start takes them
 * over in one copy (servers that run a thread per request do this all the
 * time).
 * A thread that finds PARK_MAX heaps parked already flushes its caches and
 * abandons its SuperSlabs instead, so idle memory stays bounded; trim does
 * the same to every parked heap. A heap whose blocks other threads free
 * while it makes no slow path of its own (parked, or its thread blocked or
 * done allocating) gives its SuperSlabs to those threads (help_drain), so
 * memory follows the work.
 * Heaps are carved from permanent memory and recycled, never unmapped:
 * remote freers may hold a stale heap pointer (remote.c).
 *
 * Every heap operation runs under the heap's own lock. Only its thread takes
 * it, so it is uncontended; it exists so that fork's prepare handler can
 * stop every heap at a consistent point. */
#include <pthread.h>
#include <sched.h>
#include <string.h>
#include <sys/mman.h>

#include "internal.h"

__thread struct hak_tls hak_tls __attribute__((tls_model("initial-exec")));

#define HEAP_CHUNK (256 * 1024)
#define PARK_MAX 8               /* parked heaps at most */
/* A heap counts as idle, and its SuperSlabs go to the threads freeing into
 * them, once others drained it IDLE_HELPS times with no refill or flush of
 * its owner in between (HAK_HELP_DRAIN batches sent each), and its owner
 * made no slow path for IDLE_NS, or a twentieth of HAKMEM_DECAY_MS if that
 * is longer (a program that keeps idle memory longer keeps it with its
 * threads longer too): far beyond the time a busy machine keeps a running
 * thread off its CPU. Either alone misfires under a sanitizer on a loaded
 * machine. */
#define IDLE_HELPS 2
#define IDLE_NS (50u * 1000000u)

static uint64_t idle_ns(void)
{
    uint64_t d = hak_decay_ms() * (1000000u / 20);
    return d > IDLE_NS ? d : IDLE_NS;
}

static hak_lock_t pool_lock = HAK_LOCK_INIT;
static struct hak_heap *all_heaps;   /* pool_lock; heaps are never removed */
static struct hak_heap *free_heaps;  /* pool_lock: parked heaps and clean ones */
static unsigned nparked;             /* pool_lock */
static char *chunk_next, *chunk_end; /* pool_lock: permanent heap memory */
/* Each chunk of heap memory starts with a link to the one before, so its
 * resident pages can be counted (hak_heap_resident). */
struct heap_chunk {
    struct heap_chunk *prev;
} __attribute__((aligned(64)));
static struct heap_chunk *last_chunk; /* pool_lock */
_Static_assert(sizeof(struct heap_chunk) + sizeof(struct hak_heap) <= HEAP_CHUNK, "a heap fits a chunk");
static pthread_key_t exit_key;
static _Atomic bool exit_key_ready;

/* Threads past their exit destructor that still allocate share this heap. */
static struct hak_tls orphan_tls;
static struct hak_heap orphan_heap;

struct hak_heap *hak_heap_first(void)
{
    return __atomic_load_n(&all_heaps, __ATOMIC_ACQUIRE);
}

/* Held while reading other heaps' TLS fronts (statistics): a thread cannot
 * finish exiting, and so unmap its TLS, without this lock. */
void hak_heap_pool_lock(void)
{
    hak_lock(&pool_lock);
}

void hak_heap_pool_unlock(void)
{
    hak_unlock(&pool_lock);
}

size_t hak_heap_resident(void)
{
    size_t bytes = 0;
    hak_lock(&pool_lock);
    for (struct heap_chunk *c = last_chunk; c; c = c->prev)
        bytes += hak_os_resident(c, HEAP_CHUNK);
    hak_unlock(&pool_lock);
    return bytes;
}

static void heap_reset(struct hak_heap *h)
{
    for (unsigned c = 0; c < HAK_NCLASS; c++)
        h->partial[c] = h->full[c] = NULL;
    h->ss_avail = h->ss_full = h->ss_empty = h->ss_pending = HAK_NO_SS;
    h->nss = h->nempty = 0;
    atomic_store(&h->inbox, NULL);
    atomic_store(&h->notify_head, NULL);
    atomic_store(&h->inflight, 0);
}

/* pool_lock held */
static void heap_publish(struct hak_heap *h)
{
    h->all_next = all_heaps;
    __atomic_store_n(&all_heaps, h, __ATOMIC_RELEASE);
}

static struct hak_heap *heap_alloc(void)
{
    hak_lock(&pool_lock);
    if (!orphan_heap.is_orphan) {
        heap_reset(&orphan_heap);
        orphan_heap.is_orphan = 1;
        orphan_heap.in_use = 1;
        orphan_heap.tls = &orphan_tls;
        heap_publish(&orphan_heap);
    }
    struct hak_heap *h = free_heaps;
    if (h) {
        free_heaps = h->free_next;
        nparked -= h->parked;
    } else {
        size_t sz = (sizeof(struct hak_heap) + 63) & ~(size_t)63;
        if ((size_t)(chunk_end - chunk_next) < sz) {
            struct heap_chunk *c = hak_os_map_guarded(HEAP_CHUNK);
            chunk_next = chunk_end = NULL;
            if (c) {
                c->prev = last_chunk;
                last_chunk = c;
                chunk_next = (char *)(c + 1);
                chunk_end = (char *)c + HEAP_CHUNK;
            }
        }
        if (chunk_next) {
            h = (struct hak_heap *)chunk_next;
            chunk_next += sz;
            heap_reset(h);
            heap_publish(h);
        }
    }
    if (h)
        h->in_use = 1;
    hak_unlock(&pool_lock);
    return h;
}

/* pool_lock held */
static void heap_free_locked(struct hak_heap *h)
{
    h->in_use = 0;
    if (!h->parked)
        h->tls = NULL;
    nparked += h->parked;
    h->free_next = free_heaps;
    free_heaps = h;
}

static void heap_free(struct hak_heap *h)
{
    hak_lock(&pool_lock);
    heap_free_locked(h);
    hak_unlock(&pool_lock);
}

static bool park_room(void)
{
    hak_lock(&pool_lock);
    bool room = nparked < PARK_MAX;
    if (room)
        nparked++; /* reserved; heap_free counts it again */
    hak_unlock(&pool_lock);
    return room;
}

static void thread_exit_cb(void *arg)
{
    struct hak_heap *h = arg;
    hak_prof_blocks_thread_exit();
    hak_prof_thread_exit();
    if (h && hak_tls.heap == h)
        hak_heap_thread_exit(h);
}

void hak_heap_key_init(void)
{
    if (pthread_key_create(&exit_key, thread_exit_cb) == 0)
        atomic_store(&exit_key_ready, true);
}

/* Register the exit destructor. pthread_setspecific may allocate; by now
 * the TLS front has its heap, so that allocation is served normally. */
static void heap_register_exit(struct hak_tls *t)
{
    if (!t->keyed && atomic_load_explicit(&exit_key_ready, memory_order_acquire)) {
        t->keyed = 1;
        pthread_setspecific(exit_key, t->heap);
    }
}

struct hak_heap *hak_heap_thread_start(void)
{
    struct hak_tls *t = &hak_tls;
    if (t->heap) {
        heap_register_exit(t);
        return t->heap;
    }
    if (t->state == HAK_THREAD_DEAD)
        return NULL;
    struct hak_heap *h = heap_alloc();
    if (!h)
        return NULL;
    hak_lock(&h->lock);
    if (h->parked) { /* take over the caches a finished thread left */
        memcpy(t->c, h->park.c, sizeof t->c);
        memset(h->park.c, 0, sizeof h->park.c);
        h->parked = 0;
    }
    h->tls = t;
    atomic_store_explicit(&h->active_ns, hak_now_ns(), HAK_RELAXED);
    hak_unlock(&h->lock);
    t->heap = h;
    t->state = HAK_THREAD_ACTIVE;
    heap_register_exit(t);
    return h;
}

/* Drain h's inbox and notify stack for its owner, which has let
 * HAK_HELP_DRAIN batches pile up there: a thread blocked in a join, or done
 * allocating, would otherwise never give that memory back to its slabs
 * (nor emptied SuperSlabs back to the provider). Every change to a heap's
 * slabs happens under its lock, and the owner's fast paths touch only its
 * cache, so the lock makes this thread the owner for the while. Never
 * waits for it. */
void hak_heap_help_drain(struct hak_heap *h)
{
    if (!hak_lock_try(&h->lock))
        return;
    hak_remote_drain(h);
    if (++h->helped >= IDLE_HELPS && h != hak_tls.heap &&
        hak_now_ns() - atomic_load_explicit(&h->active_ns, HAK_RELAXED) >= idle_ns()) {
        h->helped = 0;
        /* Its thread (if any) made no slow path while slabs were freed
         * into: it is not allocating. Its SuperSlabs, sparse
         * after those frees, become abandoned, and the threads freeing into
         * them claim them: their free units and the blocks coming back
         * serve the threads at work. Blocks its cache still holds go back
         * remotely when it flushes (hak_remote_put_back). */
        hak_ss_abandon_all(h);
    }
    hak_ss_settle(h);
    hak_unlock(&h->lock);
}

/* What the thread's caches may hold, in bytes, at their capacities. */
static uint64_t cap_bytes(const struct hak_tls *t)
{
    uint64_t bytes = 0;
    for (unsigned c = 1; c < HAK_NCLASS; c++)
        bytes += (uint64_t)t->c[c].cap * hak_classes[c].size;
    return bytes;
}

/* Checked every so many slow events: caches over the budget (capacities
 * that grew while others were small, or a thread that took over a parked
 * heap's caches) halve their grown capacities and shrink to match. */
#define BUDGET_EVERY 128

static void budget_check(struct hak_heap *h)
{
    struct hak_tls *t = h->tls;
    h->cap_bytes = cap_bytes(t);
    uint64_t bytes = 0;
    for (unsigned c = 1; c < HAK_NCLASS; c++)
        bytes += (uint64_t)t->c[c].count * hak_classes[c].size;
    if (bytes <= hak_opt.thread_cache_kb << 10)
        return;
    for (unsigned c = 1; c < HAK_NCLASS; c++) {
        struct hak_tcache *tc = &t->c[c];
        if (tc->cap > hak_classes[c].cap_base)
            tc->cap /= 2;
        hak_heap_flush(h, c, tc->cap / 2);
    }
    h->cap_bytes = cap_bytes(t);
}

/* Adapt the capacity of a class's cache at a refill (flush = false) or a
 * flush: it doubles, up to cap_max, when the class swings from one end of
 * its cache to the other, as long as the capacities of all classes stay
 * within twice the thread's budget (a cache swings between empty and full,
 * so it holds about half its capacity): cached blocks are memory no one
 * uses, and a random mix of many classes would otherwise grow them all to
 * the top. */
void hak_heap_cache_adapt(struct hak_heap *h, unsigned cls, bool flush)
{
    struct hak_tcache *tc = &h->tls->c[cls];
    const struct hak_class *k = &hak_classes[cls];
    struct hak_class_stats *st = &h->st[cls];
    if (tc->cap == 0) {
        tc->cap = k->cap_base;
        h->cap_bytes += (uint64_t)tc->cap * k->size;
    } else if (st->last_flush != flush && tc->cap < k->cap_max &&
               h->cap_bytes + (uint64_t)tc->cap * k->size <= (uint64_t)hak_opt.thread_cache_kb << 11) {
        uint32_t old = tc->cap;
        tc->cap = old * 2 < k->cap_max ? old * 2 : k->cap_max;
        h->cap_bytes += (uint64_t)(tc->cap - old) * k->size;
    }
    st->last_flush = flush;
    if (++h->slow_events % BUDGET_EVERY == 0)
        budget_check(h);
}

/* Fill the (empty) cache of cls with half its capacity. Heap locked. */
unsigned hak_heap_refill(struct hak_heap *h, unsigned cls)
{
    struct hak_tcache *tc = &h->tls->c[cls];
    const struct hak_class *k = &hak_classes[cls];
    if (tc->head) /* never drop cached blocks */
        return tc->count;
    hak_heap_cache_adapt(h, cls, false);
    h->helped = 0;
    unsigned batch = tc->cap > 1 ? tc->cap / 2 : 1;
    if (hak_remote_waiting(h))
        hak_remote_drain(h);
    for (;;) {
        struct hak_slab *s = h->partial[cls];
        if (!s) {
            if (!hak_ss_new_slab(h, cls))
                break;
            continue;
        }
        /* A slab's free list is taken whole up to four times the cache's
         * capacity: splitting it walks the blocks, a cache miss each in a
         * chain when other threads freed them, with nothing to overlap
         * them. The next flush trims an overfull cache. */
        void *first;
        unsigned n = hak_slab_take(s, batch, 4 * tc->cap, &first);
        if (!s->free && s->carved == k->capacity) {
            hak_slab_list_remove(h, s);
            hak_slab_list_push(h, s, HAK_LIST_FULL);
        }
        if (n) {
            tc->head = first;
            tc->count = n;
            h->st[cls].refills++;
            h->st[cls].refilled += n;
            break;
        }
    }
    hak_ss_settle(h);
    return tc->count;
}

/* Keep the keep newest blocks of the cache of cls, give the rest back to
 * their slabs. Heap locked. */
void hak_heap_flush(struct hak_heap *h, unsigned cls, unsigned keep)
{
    struct hak_tcache *tc = &h->tls->c[cls];
    if (tc->count <= keep)
        return;
    void *rest = tc->head;
    if (keep == 0) {
        tc->head = NULL;
    } else {
        void *last = rest;
        for (unsigned i = 1; i < keep; i++)
            last = *(void **)last;
        rest = *(void **)last;
        *(void **)last = NULL;
    }
    h->st[cls].flushed += tc->count - keep;
    tc->count = keep;
    h->helped = 0;
    while (rest) {
        void *next = *(void **)rest;
        hak_remote_put_back(h, rest);
        rest = next;
    }
    hak_ss_settle(h);
}

static void fold_tls_stats(struct hak_heap *h, struct hak_tls *t)
{
    for (unsigned c = 0; c < HAK_NCLASS; c++) {
        h->st[c].frees += t->c[c].frees;
        t->c[c].frees = 0;
    }
}

/* Flush every cache and give back the emptied SuperSlabs, idle since
 * idle_ns (0: now). Heap locked. */
static void empty_caches(struct hak_heap *h, uint64_t idle_ns)
{
    h->release_idle_ns = idle_ns; /* for what the flushes release */
    for (unsigned c = 1; c < HAK_NCLASS; c++)
        hak_heap_flush(h, c, 0);
    hak_remote_drain(h);
    hak_ss_release_empty(h, idle_ns);
    h->release_idle_ns = 0;
}

/* Flush every cache and abandon every SuperSlab. Heap locked. */
static void heap_empty_out(struct hak_heap *h)
{
    for (unsigned c = 1; c < HAK_NCLASS; c++)
        hak_heap_flush(h, c, 0);
    fold_tls_stats(h, h->tls);
    hak_remote_drain(h);
    hak_ss_abandon_all(h);
}

/* Does the heap hold blocks outside its caches: the user's, and those on
 * other threads' remote lists? Heap locked. */
static bool holds_live(struct hak_heap *h)
{
    for (unsigned c = 1; c < HAK_NCLASS; c++) {
        uint64_t out = 0;
        for (int list = 0; list < 2; list++)
            for (struct hak_slab *s = list ? h->full[c] : h->partial[c]; s; s = s->next)
                out += s->used;
        /* Cached blocks count as used; a cache may also hold blocks of
         * SuperSlabs the heap gave away while idle. */
        if (out > h->tls->c[c].count)
            return true;
    }
    return false;
}

void hak_heap_thread_exit(struct hak_heap *h)
{
    struct hak_tls *t = h->tls;
    hak_remote_send(t);
    bool park = park_room();
    hak_lock(&h->lock);
    if (park) {
        /* A thread that left nothing live behind has nothing for a
         * successor to take over but caches and empty SuperSlabs: they go
         * back now (and so, with the daemon, can be taken back from an idle
         * program). Otherwise the caches stay with the live blocks, and
         * the decay empties them if no thread comes (hak_heap_decay_all);
         * if other threads free those blocks instead, the heap is idle to
         * them and its SuperSlabs go their way (hak_heap_help_drain). */
        bool keep = holds_live(h);
        if (!keep)
            empty_caches(h, 0);
        fold_tls_stats(h, t);
        memcpy(h->park.c, t->c, sizeof t->c);
        memset(t->c, 0, sizeof t->c);
        h->tls = &h->park;
        h->parked = 1;
        h->parked_ns = hak_now_ns();
        atomic_store_explicit(&h->active_ns, h->parked_ns, HAK_RELAXED);
        h->park_cached = keep;
    } else {
        heap_empty_out(h);
    }
    hak_unlock(&h->lock);
    t->heap = NULL;
    t->state = HAK_THREAD_DEAD;
    hak_lock(&pool_lock);
    nparked -= park; /* the reservation; heap_free_locked counts it */
    heap_free_locked(h);
    hak_unlock(&pool_lock);
}

/* Return the pages of units idle past the decay in every heap whose lock
 * is free now (a heap's owner does its own at its next slow path): the
 * memory of parked heaps and of threads that stopped allocating. */
size_t hak_heap_decay_all(void)
{
    size_t bytes = 0;
    uint64_t now = hak_now_ns(), decay = hak_decay_ms() * 1000000u;
    /* Heaps are never removed from the list: no pool lock (a slow path may
     * call this, and fork's prepare takes that lock, then every heap's). */
    for (struct hak_heap *h = hak_heap_first(); h; h = h->all_next)
        if (hak_lock_try(&h->lock)) {
            /* Parked past the decay: no thread came for its caches, which
             * have been idle since: what they held goes back at once. */
            bool stale = h->parked && now - h->parked_ns >= decay && h->park_cached;
            if (stale) {
                empty_caches(h, h->parked_ns);
                h->park_cached = 0;
            }
            bytes += hak_ss_purge_units(h, stale);
            hak_unlock(&h->lock);
        }
    return bytes;
}

/* Empty every parked heap (malloc_trim): their SuperSlabs become
 * abandoned, for the caller to adopt and release what is empty. */
void hak_heap_unpark_all(void)
{
    hak_lock(&pool_lock);
    for (struct hak_heap *h = free_heaps; h; h = h->free_next) {
        if (!h->parked)
            continue;
        hak_lock(&h->lock);
        heap_empty_out(h);
        h->parked = 0;
        h->tls = NULL;
        hak_unlock(&h->lock);
        nparked--;
    }
    hak_unlock(&pool_lock);
}

/* The heap shared by threads whose own heap is gone. */
struct hak_heap *hak_heap_orphan(void)
{
    if (!orphan_heap.is_orphan) {
        struct hak_heap *first = heap_alloc(); /* sets up the orphan heap too */
        if (first)
            heap_free(first);
    }
    return &orphan_heap;
}

/* Allocation by a thread whose heap is gone (a later TLS destructor). */
void *hak_heap_orphan_alloc(unsigned cls)
{
    struct hak_heap *h = hak_heap_orphan();
    hak_lock(&h->lock);
    struct hak_tcache *tc = &orphan_tls.c[cls];
    void *b = NULL;
    if (tc->head || hak_heap_refill(h, cls)) {
        b = tc->head;
        tc->head = *(void **)b;
        tc->count--;
        hak_hand_out(b);
    }
    hak_unlock(&h->lock);
    if (!b)
        errno = ENOMEM;
    return b;
}

/* ---- fork ----
 * prepare takes every heap lock, so no heap is inside a slow path. The child
 * has only the forking thread: every other thread's heap reclaims the blocks
 * in that thread's TLS front (whose memory the child still has), then
 * abandons its SuperSlabs for the child to adopt. */

void hak_heap_fork_prepare(void)
{
    hak_lock(&pool_lock);
    for (struct hak_heap *h = all_heaps; h; h = h->all_next)
        hak_lock(&h->lock);
}

void hak_heap_fork_parent(void)
{
    for (struct hak_heap *h = all_heaps; h; h = h->all_next)
        hak_unlock(&h->lock);
    hak_unlock(&pool_lock);
}

/* Is p an allocated block of class cls in a SuperSlab in use (h's, or one
 * h gave away while idle)? A thread stopped by fork mid-update can leave at
 * most a block off its list; this check stops the walk at anything that
 * does not look like a block. */
static bool child_block_ok(void *p, unsigned cls)
{
    if (!p || !hak_in_arena(p) || ((uintptr_t)p & 15))
        return false;
    uint32_t idx = hak_ss_of(p);
    struct hak_ss_hot *hot = hak_hot(idx);
    unsigned u = ((uintptr_t)p >> HAK_UNIT_SHIFT) & (HAK_UNITS - 1);
    struct hak_heap *owner = atomic_load(&hot->owner);
    if (idx >= hak_arena.cursor || (!HAK_OWNER_IS_HEAP(owner) && owner != HAK_OWNER_ABANDONED) ||
        hot->cls[u] != cls)
        return false;
    return hak_class_is_block(&hak_classes[cls], hak_slab_offset((uintptr_t)p, hot, u)) && hak_slab_of(p)->used > 0;
}

static void child_reclaim_tls(struct hak_heap *h)
{
    struct hak_tls *t = h->tls;
    if (!t)
        return;
    hak_remote_fork_child(t);
    for (unsigned c = 1; c < HAK_NCLASS; c++) {
        void *p = t->c[c].head;
        unsigned limit = t->c[c].count + 2u * t->c[c].cap + 2; /* a refill may overfill it */
        t->c[c].head = NULL;
        t->c[c].count = 0;
        while (limit-- && child_block_ok(p, c)) {
            void *next = *(void **)p;
            hak_remote_put_back(h, p);
            p = next;
        }
    }
    fold_tls_stats(h, t);
}

void hak_heap_fork_child(void)
{
    struct hak_heap *me = hak_tls.heap;
    for (struct hak_heap *h = all_heaps; h; h = h->all_next) {
        atomic_store(&h->inflight, 0);
        if (h->in_use && h != me && !h->is_orphan) {
            /* Its thread may have stopped half-way through parking it or
             * taking it over: its caches (wherever tls points) are
             * reclaimed either way, and it goes back unparked. */
            child_reclaim_tls(h);
            hak_remote_drain(h);
            hak_ss_abandon_all(h);
            h->tls = NULL;
            h->parked = 0;
            heap_free_locked(h);
        }
    }
    nparked = 0; /* recounted: a thread may have stopped holding a reservation */
    for (struct hak_heap *h = free_heaps; h; h = h->free_next)
        nparked += h->parked;
    for (struct hak_heap *h = all_heaps; h; h = h->all_next) {
        if (h->nss) { /* parked heaps too: their SuperSlabs stay owned */
            hak_remote_drain(h);
            hak_remote_resync(h, h->ss_avail);
            hak_remote_resync(h, h->ss_full);
        }
        hak_ss_settle(h);
        hak_lock_reset(&h->lock);
    }
    hak_lock_reset(&pool_lock);
}
