/* Where the profiler's sampled blocks live: whole pages in one address
 * range reserved at start-up (HAKMEM_PROF=1 only), with one tag word per
 * page. A sampled block up to HAK_MID_MAX takes pages there; free() knows it
 * by its address, reads its tag from the table, and the pages wait in the
 * freeing thread's cache for the next sample. So a sample takes no lock
 * and touches no shared table but its own tag word: on a busy profiler the
 * large blocks' registry and its lock were the bottleneck.
 *
 * The free lists link blocks through the table too, never through the
 * blocks: a block's first line is cold by the time a sample reuses it (all
 * of them share the cache sets of page starts), and reading a link there
 * was one miss on every sample's path.
 *
 * A thread's cache holds up to 1 MiB and goes to the shared lists when the
 * thread exits; the shared lists hold up to 32 MiB resident, and what they
 * get beyond that has its pages given back first (MADV_DONTNEED), as have
 * all of them once no sample used them for the decay (HAKMEM_DECAY_MS) or
 * at malloc_trim.
 *
 * Fresh pages come to a thread a chunk of CHUNK_PAGES at a time, so the tag
 * words one thread writes share no cache line with another's: on a
 * workload sampling every microsecond, tags written by two threads on one
 * line cost more than the rest of the sample. */
#include <string.h>
#include <sys/mman.h>

#include "internal.h"

#define REGION_BYTES (64ull << 30)    /* address space, not memory */
#define PAGE 4096u
#define MAX_PAGES (HAK_MID_MAX / PAGE)
#define THREAD_CACHE_BYTES (1u << 20)
#define SHARED_RESIDENT_BYTES (32u << 20)
#define CHUNK_PAGES 64u                /* 16 lines of the table; at least MAX_PAGES */
/* In a tag's bits 16-23 (internal.h): */
#define LIVE_BIT (1ull << 23)         /* a block starts here */
#define FREED_BIT (1ull << 22)        /* one started here and was freed */
#define PAGES_SHIFT 16                /* its pages - 1, 6 bits */
_Static_assert(MAX_PAGES <= 64, "a block's pages fit in a tag");

struct hak_prof_region hak_prof_region;

struct page {
    uint64_t tag;             /* of the block starting here */
    uintptr_t next;           /* a free block: the next on its list */
};

static struct {
    struct page *pg;          /* per page of the region */
    size_t pages;
    _Atomic size_t used;      /* pages handed out to threads' chunks */
    hak_lock_t lock;
    uintptr_t shared[MAX_PAGES + 1]; /* freed blocks by pages, resident */
    uintptr_t cold[MAX_PAGES + 1];   /* the same, their pages given back */
    size_t shared_bytes;      /* in shared[] */
    uint64_t used_ns;         /* when a sample last took from or gave to them */
} rg = {.lock = HAK_LOCK_INIT};

static __thread struct {
    uintptr_t head[MAX_PAGES + 1];
    size_t bytes;
    size_t next, end;         /* the thread's chunk: pages [next, end) unused */
} mine;

_Static_assert(CHUNK_PAGES >= MAX_PAGES, "a block fits in a chunk");

/* The largest range the process may reserve, from REGION_BYTES down to
 * 1 GiB (an address-space limit, ulimit -v, or a tool running the program
 * may refuse the largest). */
bool hak_prof_blocks_init(void)
{
    if (hak_os_page_size() != PAGE)
        return false;
    for (size_t bytes = REGION_BYTES; bytes >= (1ull << 30); bytes /= 2) {
        void *base = hak_os_map_noreserve(bytes);
        rg.pg = base ? hak_os_map_noreserve(bytes / PAGE * sizeof *rg.pg) : NULL;
        if (rg.pg) {
            rg.pages = bytes / PAGE;
            hak_prof_region.base = (uintptr_t)base;
            hak_prof_region.size = bytes;
            return true;
        }
        if (base)
            hak_os_unmap(base, bytes);
    }
    return false;
}

/* Blocks come in a few page counts, half a power of two apart: with one
 * list per exact count, a thread's 1 MiB cache filled with counts it was
 * not asked for, and most samples went to the shared lists and their
 * lock. */
static size_t pages_of(size_t size)
{
    size_t n = size ? (size + PAGE - 1) / PAGE : 1;
    if (n <= 4)
        return n;
    size_t step = (size_t)1 << (63 - __builtin_clzll(n - 1) - 1); /* half the power of two below */
    return (n + step - 1) & ~(step - 1);
}

static struct page *page_of(uintptr_t b)
{
    return &rg.pg[(b - hak_prof_region.base) / PAGE];
}

static void push(uintptr_t *list, uintptr_t b)
{
    page_of(b)->next = *list;
    *list = b;
}

static uintptr_t pop(uintptr_t *list)
{
    uintptr_t b = *list;
    if (b)
        *list = page_of(b)->next;
    return b;
}

/* What is left of the thread's chunk, one block of its pages for the
 * shared lists (none of them touched). */
static void chunk_rest_free(void)
{
    size_t n = mine.end - mine.next;
    if (!n)
        return;
    uintptr_t b = hak_prof_region.base + mine.next * PAGE;
    mine.next = mine.end;
    hak_lock(&rg.lock);
    push(&rg.cold[n], b);
    hak_unlock(&rg.lock);
}

/* A freed block of n pages onto the shared lists. rg.lock held. */
static void give_shared(uintptr_t b, size_t n)
{
    size_t bytes = n * PAGE;
    if (rg.shared_bytes + bytes <= SHARED_RESIDENT_BYTES) {
        rg.shared_bytes += bytes;
        push(&rg.shared[n], b);
    } else {
        madvise((void *)b, bytes, MADV_DONTNEED);
        push(&rg.cold[n], b);
    }
}

/* The shared lists' pages go back. rg.lock held. */
static size_t release_shared(void)
{
    size_t bytes = 0;
    for (size_t n = 1; n <= MAX_PAGES; n++) {
        uintptr_t b;
        while ((b = pop(&rg.shared[n]))) {
            if (madvise((void *)b, n * PAGE, MADV_DONTNEED) == 0)
                bytes += n * PAGE;
            push(&rg.cold[n], b);
        }
    }
    rg.shared_bytes = 0;
    return bytes;
}

static uint64_t tag_live(uint64_t tag, size_t n)
{
    return tag | LIVE_BIT | (uint64_t)(n - 1) << PAGES_SHIFT;
}

static size_t pages_in(uint64_t t)
{
    return (size_t)((t >> PAGES_SHIFT) & 63) + 1;
}

/* The thread's cache had no block of n pages: the shared lists', else
 * fresh pages of the thread's chunk. */
static HAK_NOINLINE void *block_alloc_slow(size_t n, size_t size, bool zero, uint64_t tag)
{
    hak_lock(&rg.lock);
    rg.used_ns = hak_coarse_ns();
    uintptr_t b = pop(&rg.shared[n]);
    bool dirty = b;
    if (b)
        rg.shared_bytes -= n * PAGE;
    else
        b = pop(&rg.cold[n]);
    hak_unlock(&rg.lock);
    if (b) {
        if (zero && dirty)
            memset((void *)b, 0, size);
    } else {
        if (mine.end - mine.next < n) {
            chunk_rest_free();
            size_t at = atomic_fetch_add_explicit(&rg.used, CHUNK_PAGES, memory_order_relaxed);
            if (at + CHUNK_PAGES > rg.pages)
                return NULL; /* the range is used up: a large block instead */
            mine.next = at;
            mine.end = at + CHUNK_PAGES;
        }
        b = hak_prof_region.base + mine.next * PAGE;
        mine.next += n;
    }
    __atomic_store_n(&page_of(b)->tag, tag_live(tag, n), __ATOMIC_RELEASE);
    return (void *)b;
}

void *hak_prof_block_alloc(size_t size, size_t align, bool zero, uint64_t tag)
{
    size_t n = pages_of(size);
    if (unlikely(n > MAX_PAGES || align > PAGE || !hak_prof_region.size))
        return NULL;
    uintptr_t b = mine.head[n];
    if (unlikely(!b))
        return block_alloc_slow(n, size, zero, tag);
    struct page *pg = page_of(b);
    mine.head[n] = pg->next;
    /* The next sample's block: its first line is cold by then (page
     * starts share their cache sets), and the program writes it first. */
    __builtin_prefetch((void *)pg->next, 1);
    mine.bytes -= n * PAGE;
    if (zero)
        memset((void *)b, 0, size);
    __atomic_store_n(&pg->tag, tag_live(tag, n), __ATOMIC_RELEASE);
    return (void *)b;
}

/* p's tag, once p is known to start a live block (else reported). */
static uint64_t tag_at(const void *p, const char *api)
{
    uintptr_t off = (uintptr_t)p - hak_prof_region.base;
    if (off % PAGE)
        hak_fatal_pointer(api, p, "not the start of a block (interior or misaligned pointer)");
    uint64_t t = __atomic_load_n(&rg.pg[off / PAGE].tag, __ATOMIC_ACQUIRE);
    if (t & FREED_BIT)
        hak_fatal_pointer(api, p, "double free");
    if (!(t & LIVE_BIT))
        hak_fatal_pointer(api, p, "not the start of a block (inside a sampled block)");
    return t;
}

/* Beyond the thread's cache: to the shared lists. */
static HAK_NOINLINE void block_free_shared(void *p, size_t n)
{
    hak_lock(&rg.lock);
    rg.used_ns = hak_coarse_ns();
    give_shared((uintptr_t)p, n);
    hak_unlock(&rg.lock);
}

void hak_prof_block_free(void *p)
{
    uintptr_t off = (uintptr_t)p - hak_prof_region.base;
    struct page *pg = &rg.pg[off / PAGE];
    uint64_t t = __atomic_load_n(&pg->tag, __ATOMIC_ACQUIRE);
    if (unlikely((off % PAGE) | ((t & (LIVE_BIT | FREED_BIT)) ^ LIVE_BIT)))
        t = tag_at(p, "free"); /* reports it */
    /* A plain store: a second free is caught when it comes after this one;
     * two frees racing in two threads are not (nor are they elsewhere in
     * the allocator), and a locked exchange cost a fifth of a sample. */
    __atomic_store_n(&pg->tag, (t & ~LIVE_BIT) | FREED_BIT, __ATOMIC_RELEASE);
    size_t n = pages_in(t), bytes = n * PAGE;
    if (unlikely(mine.bytes + bytes > THREAD_CACHE_BYTES)) {
        block_free_shared(p, n);
        return;
    }
    pg->next = mine.head[n];
    mine.head[n] = (uintptr_t)p;
    mine.bytes += bytes;
}

size_t hak_prof_block_usable(const void *p)
{
    return pages_in(tag_at(p, "malloc_usable_size")) * PAGE;
}

void hak_prof_blocks_thread_exit(void)
{
    chunk_rest_free();
    if (!mine.bytes)
        return;
    hak_lock(&rg.lock);
    rg.used_ns = hak_coarse_ns();
    for (size_t n = 1; n <= MAX_PAGES; n++) {
        uintptr_t b;
        while ((b = pop(&mine.head[n])))
            give_shared(b, n);
    }
    mine.bytes = 0;
    hak_unlock(&rg.lock);
}

/* malloc_trim: the pages of the shared lists' blocks go back. */
size_t hak_prof_blocks_trim(void)
{
    hak_lock(&rg.lock);
    size_t bytes = release_shared();
    hak_unlock(&rg.lock);
    return bytes;
}

/* The decay: the same, once no sample has used the shared lists for
 * HAKMEM_DECAY_MS (unless another thread holds them). */
size_t hak_prof_blocks_decay(void)
{
    if (!hak_prof_region.size || !hak_lock_try(&rg.lock))
        return 0;
    size_t bytes = 0;
    if (rg.shared_bytes && hak_coarse_ns() - rg.used_ns >= hak_decay_ms() * 1000000u)
        bytes = release_shared();
    hak_unlock(&rg.lock);
    return bytes;
}

/* A walk of the tags of the pages handed out, for the statistics and the
 * profile's live counts: a counter moved by every sample and free was a
 * line all threads wrote, and a count kept at free was a line more on
 * every sampled block's free. each (if not NULL) sees every live tag. */
uint64_t hak_prof_blocks_live(void (*each)(uint64_t tag, void *arg), void *arg)
{
    size_t used = atomic_load_explicit(&rg.used, memory_order_relaxed);
    uint64_t bytes = 0;
    for (size_t i = 0; rg.pg && i < used; i++) {
        uint64_t t = __atomic_load_n(&rg.pg[i].tag, __ATOMIC_ACQUIRE); /* its counts before it */
        if (!(t & LIVE_BIT))
            continue;
        bytes += pages_in(t) * PAGE;
        if (each)
            each(t, arg);
    }
    return bytes;
}

size_t hak_prof_blocks_resident(void)
{
    size_t used = atomic_load_explicit(&rg.used, memory_order_relaxed);
    return used ? hak_os_resident((void *)hak_prof_region.base, used * PAGE) : 0;
}

void hak_prof_blocks_fork_prepare(void) { hak_lock(&rg.lock); }
void hak_prof_blocks_fork_parent(void) { hak_unlock(&rg.lock); }
void hak_prof_blocks_fork_child(void) { hak_lock_reset(&rg.lock); }
