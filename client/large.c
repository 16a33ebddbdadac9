/* Large blocks (above HAK_MID_MAX): each one its own mapping, outside the
 * arena. A registry (open-addressing hash of block addresses) tells free()
 * whether a pointer outside the arena is one of ours, without reading memory
 * in front of it. A small cache of freed mappings lets a loop of large
 * malloc/free reuse them instead of calling mmap and munmap every time;
 * cached mappings are returned to the OS after HAKMEM_DECAY_MS, or at once
 * by malloc_trim. Large blocks are rare, so a lock is fine here.
 *
 * In secure mode a large block has GUARD inaccessible bytes on either side
 * (an overflow or underflow of up to a megabyte faults), mappings are never
 * reused, and a freed block's pages go back while its range stays
 * reserved and inaccessible in a quarantine of QUARANTINE_SLOTS blocks,
 * oldest unmapped first: a write after free faults. */
#include <string.h>

#include "internal.h"

struct large_entry {
    uintptr_t ptr;   /* block = start of its mapping; 0 empty, 1 deleted */
    size_t len;      /* length of the mapping */
    uint64_t prof;   /* the profiler's tag of a sampled block, else 0 */
};

struct cached_map {
    uintptr_t base;
    size_t len;
    uint64_t since_ns;
};

#define CACHE_SLOTS 16
#define QUARANTINE_SLOTS 1024
#define GUARD HAK_SS_SIZE /* secure mode: as between SuperSlabs */
#define CACHE_FIT_SLACK 4 /* reuse a mapping at most 1/4 larger than needed */

static struct {
    hak_lock_t lock;
    struct large_entry *tab;
    size_t cap, used, tomb;   /* slots, live entries, deleted markers */
    struct cached_map cache[CACHE_SLOTS];
    size_t cached_bytes;
    uint64_t live_bytes;
    uint64_t returned_bytes; /* freed mappings unmapped since start */
    struct cached_map quarantine[QUARANTINE_SLOTS]; /* secure mode: freed, inaccessible */
    size_t quarantine_next;
} lg = {.lock = HAK_LOCK_INIT};

/* Secure mode: the freed block's range joins the quarantine; the oldest
 * there is unmapped, its guard pages with it. lg.lock held. */
static void quarantine_put(uintptr_t base, size_t len)
{
    hak_os_seal((void *)base, len);
    struct cached_map *q = &lg.quarantine[lg.quarantine_next];
    if (q->base)
        hak_os_unmap((void *)(q->base - GUARD), q->len + 2 * GUARD);
    *q = (struct cached_map){base, len, 0};
    lg.quarantine_next = (lg.quarantine_next + 1) % QUARANTINE_SLOTS;
    lg.returned_bytes += len;
}

/* For the crash report: the large block (live or in the quarantine)
 * whose range or guard pages hold a; no lock (a signal handler). */
bool hak_large_near(uintptr_t a, uintptr_t *block, size_t *len, bool *freed)
{
    for (size_t i = 0; i < QUARANTINE_SLOTS; i++) {
        const struct cached_map *q = &lg.quarantine[i];
        if (q->base && a + GUARD >= q->base && a < q->base + q->len + GUARD) {
            *block = q->base;
            *len = q->len;
            *freed = true;
            return true;
        }
    }
    for (size_t i = 0; lg.tab && i < lg.cap; i++) {
        const struct large_entry *e = &lg.tab[i];
        if (e->ptr > 1 && a + GUARD >= e->ptr && a < e->ptr + e->len + GUARD) {
            *block = e->ptr;
            *len = e->len;
            *freed = false;
            return true;
        }
    }
    return false;
}

static size_t hash_slot(uintptr_t p, size_t cap)
{
    uint64_t h = (uint64_t)p * 0x9E3779B97F4A7C15ull;
    return (size_t)(h >> 20) & (cap - 1);
}

static struct large_entry *lookup(uintptr_t p)
{
    if (!lg.cap || p <= 1) /* 0 and 1 mark empty and deleted slots */
        return NULL;
    for (size_t i = hash_slot(p, lg.cap), n = 0; n < lg.cap; i = (i + 1) & (lg.cap - 1), n++) {
        if (lg.tab[i].ptr == p)
            return &lg.tab[i];
        if (lg.tab[i].ptr == 0)
            return NULL;
    }
    return NULL;
}

/* Rebuild the table at a capacity that fits the live entries twice over
 * (doubling only when they need it), dropping every deleted marker. */
static bool grow_table(void)
{
    size_t cap = lg.cap ? lg.cap : 256;
    while (cap < (lg.used + 1) * 2)
        cap *= 2;
    struct large_entry *tab = hak_os_map(cap * sizeof *tab);
    if (!tab)
        return false;
    for (size_t i = 0; i < lg.cap; i++) {
        uintptr_t p = lg.tab[i].ptr;
        if (p > 1) {
            size_t j = hash_slot(p, cap);
            while (tab[j].ptr)
                j = (j + 1) & (cap - 1);
            tab[j] = lg.tab[i];
        }
    }
    if (lg.tab)
        hak_os_unmap(lg.tab, lg.cap * sizeof *tab);
    lg.tab = tab;
    lg.cap = cap;
    lg.tomb = 0;
    return true;
}

/* Room for one more entry, growing or rebuilding the table if needed. */
static bool room_for_one(void)
{
    return ((lg.used + lg.tomb + 1) * 4 <= lg.cap * 3) || grow_table();
}

static bool insert(uintptr_t p, size_t len, uint64_t prof)
{
    if (!room_for_one())
        return false;
    size_t i = hash_slot(p, lg.cap);
    while (lg.tab[i].ptr > 1)
        i = (i + 1) & (lg.cap - 1);
    if (lg.tab[i].ptr == 1)
        lg.tomb--;
    lg.tab[i] = (struct large_entry){p, len, prof};
    lg.used++;
    return true;
}

/* Return cached mappings idle past the decay (all if force). lg.lock held. */
static size_t cache_purge(bool force, uint64_t now)
{
    uint64_t decay = hak_decay_ms() * 1000000u;
    size_t bytes = 0;
    for (int i = 0; i < CACHE_SLOTS; i++) {
        struct cached_map *m = &lg.cache[i];
        if (m->base && (force || now - m->since_ns >= decay)) {
            hak_os_unmap((void *)m->base, m->len);
            lg.returned_bytes += m->len;
            bytes += m->len;
            lg.cached_bytes -= m->len;
            m->base = 0;
        }
    }
    return bytes;
}

/* The smallest cached mapping that fits len without wasting more than a
 * quarter; {0, 0} if none. lg.lock held. */
static struct cached_map cache_take(size_t len)
{
    int best = -1;
    for (int i = 0; i < CACHE_SLOTS; i++) {
        struct cached_map *m = &lg.cache[i];
        if (m->base && m->len >= len && m->len - len <= len / CACHE_FIT_SLACK &&
            (best < 0 || m->len < lg.cache[best].len))
            best = i;
    }
    struct cached_map got = {0, 0, 0};
    if (best >= 0) {
        got = lg.cache[best];
        lg.cached_bytes -= got.len;
        lg.cache[best].base = 0;
    }
    return got;
}

static size_t cache_limit(void)
{
    return (size_t)hak_opt.large_cache_mb << 20;
}

/* Keep a freed mapping for reuse if it fits the cache; else unmap it.
 * lg.lock held. */
static void cache_put(uintptr_t base, size_t len, uint64_t now)
{
    if (len <= cache_limit()) {
        int slot = -1;
        for (int i = 0; i < CACHE_SLOTS && slot < 0; i++)
            if (!lg.cache[i].base)
                slot = i;
        if (slot >= 0 && lg.cached_bytes + len <= cache_limit()) {
            lg.cache[slot] = (struct cached_map){base, len, now};
            lg.cached_bytes += len;
            return;
        }
    }
    hak_os_unmap((void *)base, len);
    lg.returned_bytes += len;
}

/* A fresh mapping of len bytes aligned to align (>= page). */
static uintptr_t map_aligned(size_t len, size_t align)
{
    size_t page = hak_os_page_size();
    size_t maplen = len + (align > page ? align : 0);
    char *p = hak_os_map(maplen);
    if (!p)
        return 0;
    uintptr_t start = ((uintptr_t)p + align - 1) & ~(uintptr_t)(align - 1);
    size_t head = start - (uintptr_t)p, tail = maplen - head - len;
    if (head)
        hak_os_unmap(p, head);
    if (tail)
        hak_os_unmap((void *)(start + len), tail);
    return start;
}

static void tag_block(void *p, uint64_t tag)
{
    hak_lock(&lg.lock);
    struct large_entry *e = lookup((uintptr_t)p);
    if (e)
        e->prof = tag;
    hak_unlock(&lg.lock);
}

/* A block for a profiler's sample that is a large block, tagged. */
void *hak_large_alloc_sampled(size_t size, size_t align, bool zero, uint64_t tag)
{
    void *p = hak_large_alloc(size, align, zero);
    if (p)
        tag_block(p, tag);
    return p;
}

void *hak_large_alloc(size_t size, size_t align, bool zero)
{
    size_t page = hak_os_page_size();
    if (align < page)
        align = page;
    if (align > SIZE_MAX / 4 || size > SIZE_MAX / 2 - align) {
        errno = ENOMEM;
        return NULL;
    }
    size_t len = (size + page - 1) & ~(page - 1);
    struct cached_map m = {0, 0, 0};
    hak_lock(&lg.lock);
    cache_purge(false, hak_now_ns());
    if (align == page && !hak_link_key)
        m = cache_take(len);
    hak_unlock(&lg.lock);
    bool fresh = !m.base;
    if (fresh) {
        m.base = hak_link_key ? (uintptr_t)hak_os_map_fenced(len, align, GUARD, false) : map_aligned(len, align);
        m.len = len;
        if (!m.base) {
            errno = ENOMEM;
            return NULL;
        }
    }
    hak_lock(&lg.lock);
    bool ok = insert(m.base, m.len, 0);
    if (ok)
        lg.live_bytes += m.len;
    hak_unlock(&lg.lock);
    if (!ok) {
        if (hak_link_key)
            hak_os_unmap((void *)(m.base - GUARD), m.len + 2 * GUARD);
        else
            hak_os_unmap((void *)m.base, m.len);
        errno = ENOMEM;
        return NULL;
    }
    if (zero && !fresh)
        memset((void *)m.base, 0, size);
    return (void *)m.base;
}

bool hak_large_free(void *p)
{
    hak_lock(&lg.lock);
    struct large_entry *e = lookup((uintptr_t)p);
    if (!e) {
        hak_unlock(&lg.lock);
        return false;
    }
    size_t len = e->len;
    e->ptr = 1;
    lg.used--;
    lg.tomb++;
    lg.live_bytes -= len;
    uint64_t now = hak_now_ns();
    if (hak_link_key)
        quarantine_put((uintptr_t)p, len);
    else
        cache_put((uintptr_t)p, len, now);
    cache_purge(false, now);
    hak_unlock(&lg.lock);
    return true;
}

/* The profiler's live counts: each sampled block's tag. */
void hak_large_each_sampled(void (*each)(uint64_t tag, void *arg), void *arg)
{
    hak_lock(&lg.lock);
    for (size_t i = 0; i < lg.cap; i++)
        if (lg.tab[i].ptr > 1 && lg.tab[i].prof)
            each(lg.tab[i].prof, arg);
    hak_unlock(&lg.lock);
}

/* Resize a large block in place or by moving its pages (mremap), never by
 * copying bytes. Returns the block, or NULL (errno ENOMEM) leaving p
 * intact. */
void *hak_large_resize(void *p, size_t size)
{
    size_t page = hak_os_page_size();
    if (size > SIZE_MAX / 2) {
        errno = ENOMEM;
        return NULL;
    }
    size_t len = (size + page - 1) & ~(page - 1);
    hak_lock(&lg.lock);
    void *q = NULL;
    /* Room for the new entry first: once the pages have moved, recording
     * them must not fail. */
    struct large_entry *e = room_for_one() ? lookup((uintptr_t)p) : NULL;
    if (e) {
        size_t old = e->len;
        q = len == old ? p : hak_os_remap(p, old, len);
        if (q && q != p) {
            e->ptr = 1; /* the old address is gone */
            lg.used--;
            lg.tomb++;
            insert((uintptr_t)q, len, e->prof); /* cannot fail: the room is there */
        } else if (q) {
            e->len = len;
        }
        if (q)
            lg.live_bytes += len - old;
    }
    hak_unlock(&lg.lock);
    if (!q)
        errno = ENOMEM;
    return q;
}

size_t hak_large_usable(const void *p)
{
    hak_lock(&lg.lock);
    struct large_entry *e = lookup((uintptr_t)p);
    size_t len = e ? e->len : 0;
    hak_unlock(&lg.lock);
    return len;
}

size_t hak_large_decay(void)
{
    if (!hak_lock_try(&lg.lock))
        return 0;
    size_t bytes = cache_purge(false, hak_now_ns());
    hak_unlock(&lg.lock);
    return bytes;
}

size_t hak_large_trim(void)
{
    hak_lock(&lg.lock);
    size_t bytes = cache_purge(true, hak_now_ns());
    hak_unlock(&lg.lock);
    return bytes;
}

void hak_large_stats(uint64_t *live_bytes, uint64_t *cached_bytes, uint64_t *blocks)
{
    hak_lock(&lg.lock);
    *live_bytes = lg.live_bytes;
    *cached_bytes = lg.cached_bytes;
    *blocks = lg.used;
    hak_unlock(&lg.lock);
}

uint64_t hak_large_returned(void)
{
    return __atomic_load_n(&lg.returned_bytes, __ATOMIC_RELAXED);
}

size_t hak_large_resident(void)
{
    hak_lock(&lg.lock);
    size_t bytes = lg.tab ? hak_os_resident(lg.tab, lg.cap * sizeof *lg.tab) : 0;
    for (size_t i = 0; i < lg.cap; i++)
        if (lg.tab[i].ptr > 1)
            bytes += hak_os_resident((void *)lg.tab[i].ptr, lg.tab[i].len);
    for (int i = 0; i < CACHE_SLOTS; i++)
        if (lg.cache[i].base)
            bytes += hak_os_resident((void *)lg.cache[i].base, lg.cache[i].len);
    hak_unlock(&lg.lock);
    return bytes;
}

void hak_large_fork_prepare(void) { hak_lock(&lg.lock); }
void hak_large_fork_parent(void) { hak_unlock(&lg.lock); }
void hak_large_fork_child(void) { hak_lock_reset(&lg.lock); }
