/* The arena: one address range reserved at start-up, in which every
 * SuperSlab lives, whichever provider supplied it. A single range keeps the
 * free path's "is this ours?" test to one subtraction and one compare, and
 * lets the side tables be indexed by (address - base) >> 20.
 *
 * Reserving costs address space only: the range is PROT_NONE until a
 * provider commits SuperSlabs in it (or maps the daemon's memory over it). */
#include <sys/mman.h>
#include <unistd.h>

#include "internal.h"

struct hak_arena hak_arena __attribute__((aligned(64)));

#define GIB ((size_t)1 << 30)
#define MIN_RESERVE (1 * GIB)

static size_t default_reserve(void)
{
    long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
    size_t ram = pages > 0 && page > 0 ? (size_t)pages * (size_t)page : 16 * GIB;
    size_t want = 4 * ram;              /* room for fragmentation, never RSS */
    if (want < 64 * GIB)
        want = 64 * GIB;
    if (want > 16384 * GIB)
        want = 16384 * GIB;
    return want;
}

static size_t page_round(size_t n)
{
    size_t pg = hak_os_page_size();
    return (n + pg - 1) & ~(pg - 1);
}

/* Reserve the range and its side tables; halves the request until the
 * kernel agrees (RLIMIT_AS, small address spaces). */
int hak_arena_init(size_t reserve)
{
    if (!reserve)
        reserve = default_reserve();
    reserve &= ~(HAK_SS_SIZE - 1);
    for (; reserve >= MIN_RESERVE; reserve /= 2) {
        size_t nss = reserve >> HAK_SS_SHIFT;
        void *base = hak_os_reserve(reserve, HAK_SHM_HUGE_SIZE);
        if (!base)
            continue;
        /* The hot table is readable from the start: free() may look up any
         * address in the range; an entry not yet handed out reads as zero
         * (owner NULL, class 0), which every check rejects. */
        void *hot = hak_os_map_guarded(page_round(nss * sizeof(struct hak_ss_hot)));
        /* The cold table is committed as it is used; the page before it
         * and what lies past its end stay inaccessible: guards as well. */
        char *cold = hak_os_reserve(page_round(nss * sizeof(struct hak_ss)) + 2 * hak_os_page_size(),
                                    hak_os_page_size());
        if (cold)
            cold += hak_os_page_size();
        if (hot && cold) {
            hak_arena.hot = hot;
            hak_arena.cold = (struct hak_ss *)cold;
            hak_arena.nss_max = (uint32_t)nss;
            hak_arena.base = (uintptr_t)base;
            hak_arena.size = reserve; /* last: size > 0 publishes the arena */
            return 0;
        }
        size_t page = hak_os_page_size();
        hak_os_unmap(base, reserve);
        if (hot)
            hak_os_unmap((char *)hot - page, page_round(nss * sizeof(struct hak_ss_hot)) + 2 * page);
        if (cold)
            hak_os_unmap(cold - page, page_round(nss * sizeof(struct hak_ss)) + 2 * page);
    }
    return -1;
}

/* Make side-table entries [from, to) accessible. Their pages stay
 * untouched (zero, state HAK_SS_UNUSED) until a provider first hands the
 * SuperSlab out, so reserving a large range for the daemon costs nothing. */
static int commit_meta(uint32_t from, uint32_t to)
{
    size_t pg = hak_os_page_size();
    uintptr_t c0 = (uintptr_t)&hak_arena.cold[from] & ~(pg - 1);
    uintptr_t c1 = page_round((uintptr_t)&hak_arena.cold[to]);
    return hak_os_commit((void *)c0, c1 - c0);
}

/* The side tables' pages come in a chunk at a time, with one madvise: a
 * growing heap otherwise takes a page fault every third SuperSlab, each
 * as dear as a 4 KiB page of the heap itself. Not for a heap's first
 * META_SMALL SuperSlabs: a small program keeps its few pages. */
#define META_CHUNK_SS 64u
#define META_CHUNKS (16384 * GIB / HAK_SS_SIZE / META_CHUNK_SS)
#define META_SMALL 16u
static _Atomic uint64_t meta_ready[META_CHUNKS / 64];
static _Atomic uint32_t meta_inits;

static void meta_populate(uint32_t idx)
{
    uint32_t ch = idx / META_CHUNK_SS;
    uint64_t bit = 1ull << (ch % 64);
    if (atomic_load_explicit(&meta_ready[ch / 64], HAK_RELAXED) & bit)
        return;
    /* Only what is committed; a chunk the arena has not reached the end
     * of yet is populated again as it grows into it. */
    uint32_t from = ch * META_CHUNK_SS, to = from + META_CHUNK_SS;
    uint32_t cursor = __atomic_load_n(&hak_arena.cursor, __ATOMIC_ACQUIRE);
    bool whole = to <= cursor;
    if (!whole)
        to = cursor;
    size_t pg = hak_os_page_size();
    uintptr_t c0 = (uintptr_t)&hak_arena.cold[from] & ~(pg - 1);
    uintptr_t c1 = page_round((uintptr_t)&hak_arena.cold[to]);
    hak_os_populate((void *)c0, c1 - c0);
    if (whole)
        atomic_fetch_or_explicit(&meta_ready[ch / 64], bit, HAK_RELAXED);
}

/* Fill in the side-table entry of a SuperSlab a provider takes into use
 * for the first time. */
void hak_arena_ss_init(uint32_t idx)
{
    if (atomic_fetch_add_explicit(&meta_inits, 1, HAK_RELAXED) >= META_SMALL)
        meta_populate(idx);
    struct hak_ss *ss = &hak_arena.cold[idx];
    atomic_store_explicit(&hak_arena.hot[idx].owner, HAK_OWNER_FREE, HAK_RELAXED);
    for (unsigned u = 0; u < HAK_UNITS; u++) {
        ss->slab[u].ss = idx;
        ss->slab[u].unit = (uint8_t)u;
    }
    ss->free_units = HAK_ALL_UNITS;
    ss->next = ss->prev = HAK_NO_SS;
    ss->state = HAK_SS_CLEAN;
}

/* Hand n fresh SuperSlab indices to a provider, their metadata ready.
 * Returns the first index, or HAK_NO_SS when the range is full. A run
 * starts on a 2 MiB boundary (an even index), so that a pair of its
 * SuperSlabs can share a huge page; the index skipped is never used. */
uint32_t hak_arena_extend(uint32_t n)
{
    uint32_t first = HAK_NO_SS;
    hak_lock(&hak_arena.lock);
    uint32_t at = (hak_arena.cursor + 1) & ~1u;
    if (hak_arena.size && at <= hak_arena.nss_max && n <= hak_arena.nss_max - at) {
        first = at;
        if (commit_meta(first, first + n) == 0)
            __atomic_store_n(&hak_arena.cursor, first + n, __ATOMIC_RELEASE);
        else
            first = HAK_NO_SS;
    }
    hak_unlock(&hak_arena.lock);
    return first;
}

/* The side tables' resident bytes (the SuperSlabs': hak_provision_resident). */
size_t hak_arena_meta_resident(void)
{
    if (!hak_arena.size)
        return 0;
    uint32_t n = __atomic_load_n(&hak_arena.cursor, __ATOMIC_ACQUIRE);
    return hak_os_resident(hak_arena.hot, page_round(hak_arena.nss_max * sizeof(struct hak_ss_hot))) +
           hak_os_resident(hak_arena.cold, n * sizeof(struct hak_ss));
}
