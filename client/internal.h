/* The map of the client: shared inline helpers, then the prototypes of
 * each file under a comment naming it. Everything here is hidden from the
 * library's exported symbol table. */
#ifndef HAK_INTERNAL_H
#define HAK_INTERNAL_H

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "types.h"
#include "hakmem_shm.h"

#define HAK_HIDDEN __attribute__((visibility("hidden")))
#define HAK_NOINLINE __attribute__((noinline))
/* gcc 12's UBSan check that the thread's TLS block is not NULL can test the
 * flags of an unrelated computation (false "member access within null
 * pointer" reports whenever a batch slot's index was 0): left out where the
 * remote-free code indexes the thread's batches. No effect elsewhere. */
#if defined(__GNUC__) && !defined(__clang__)
#define HAK_NO_TLS_NULL_CHECK __attribute__((no_sanitize("null")))
#else
#define HAK_NO_TLS_NULL_CHECK
#endif
#define HAK_COLD __attribute__((cold, noinline))
#define likely(x) __builtin_expect(!!(x), 1)
#define unlikely(x) __builtin_expect(!!(x), 0)

#ifdef HAK_DEBUG
void hak_assert_fail(const char *expr, const char *file, int line) __attribute__((noreturn));
#define HAK_ASSERT(e) ((e) ? (void)0 : hak_assert_fail(#e, __FILE__, __LINE__))
#else
#define HAK_ASSERT(e) ((void)0)
#endif

#define HAK_RELAXED memory_order_relaxed

/* ---- report.c: fatal diagnostics (never on a hot path) ---- */
void hak_fatal_pointer(const char *api, const void *p, const char *why) __attribute__((noreturn, cold)) HAK_HIDDEN;
void hak_fatal(const char *msg) __attribute__((noreturn, cold)) HAK_HIDDEN;
void hak_warn(const char *msg) HAK_HIDDEN;
void hak_write_str(int fd, const char *s) HAK_HIDDEN;
char *hak_fmt_u64(char *buf, uint64_t v) HAK_HIDDEN;  /* returns end */
char *hak_fmt_hex(char *buf, uintptr_t v) HAK_HIDDEN;
char *hak_append(char *dst, char *end, const char *s) HAK_HIDDEN; /* up to end; returns the new end */

/* ---- arena.c: the reserved address range and its side tables ---- */
struct hak_arena {
    /* Read by every free; written once at start-up. */
    uintptr_t base;            /* first SuperSlab, 1 MiB aligned */
    size_t size;               /* bytes reserved; 0 before start-up */
    struct hak_ss_hot *hot;    /* hot side table, one line per SuperSlab */
    struct hak_ss *cold;       /* cold side table */
    uint32_t nss_max;          /* SuperSlabs the range holds */
    char pad_[64 - 36];
    /* Slow paths only, under lock. */
    hak_lock_t lock;
    uint32_t cursor;           /* SuperSlabs [0, cursor) handed to providers */
    uint32_t meta_committed;   /* side-table entries made accessible */
};
extern struct hak_arena hak_arena HAK_HIDDEN;

int hak_arena_init(size_t reserve_bytes) HAK_HIDDEN;
uint32_t hak_arena_extend(uint32_t n) HAK_HIDDEN;
void hak_arena_ss_init(uint32_t idx) HAK_HIDDEN;
size_t hak_arena_meta_resident(void) HAK_HIDDEN; /* side tables' bytes in memory */

static inline void *hak_ss_addr(uint32_t idx)
{
    return (void *)(hak_arena.base + ((uintptr_t)idx << HAK_SS_SHIFT));
}
static inline struct hak_ss_hot *hak_hot(uint32_t idx) { return &hak_arena.hot[idx]; }
static inline struct hak_ss *hak_cold(uint32_t idx) { return &hak_arena.cold[idx]; }
static inline bool hak_in_arena(const void *p)
{
    return (uintptr_t)p - hak_arena.base < hak_arena.size;
}
static inline uint32_t hak_ss_of(const void *p)
{
    return (uint32_t)(((uintptr_t)p - hak_arena.base) >> HAK_SS_SHIFT);
}
static inline void *hak_slab_base(const struct hak_slab *s)
{
    return (char *)hak_ss_addr(s->ss) + ((size_t)s->unit << HAK_UNIT_SHIFT);
}

/* ---- secure.c: HAKMEM_SECURE=1 ----
 * Links between free blocks (slab free lists, remote lists) go through
 * these helpers. With the secure mode off the key is 0 and a link is the
 * plain next pointer (what the fast paths read). With it on, a link is
 * XORed with a per-process secret and the slot's address, so a stray write
 * decodes to garbage that the slab checks reject. */
extern uintptr_t hak_link_key HAK_HIDDEN;
static inline uintptr_t hak_link_mask(const void *slot)
{
    uintptr_t k = hak_link_key;
    return k ? k ^ ((uintptr_t)slot >> 4) : 0;
}
static inline void hak_link_set(void *slot, void *next)
{
    *(uintptr_t *)slot = (uintptr_t)next ^ hak_link_mask(slot);
}
static inline void *hak_link_get(const void *slot)
{
    return (void *)(*(const uintptr_t *)slot ^ hak_link_mask(slot));
}
/* A slab block in secure mode: HAK_SECURE_HDR bytes (size asked for, a
 * canary) before the pointer malloc returns. */
#define HAK_SECURE_HDR 16
void hak_keys_init(void) HAK_HIDDEN; /* the free mark; the secure mode's keys */
void hak_crash_init(void) HAK_HIDDEN; /* crash.c: the SIGSEGV/SIGBUS report */
void *hak_secure_malloc(size_t size) HAK_HIDDEN;
void hak_secure_free_local(void *b, unsigned cls) HAK_HIDDEN; /* b: the block, header included */
void hak_secure_retire(void *b, unsigned cls, const char *api) HAK_HIDDEN; /* checks, fills, marks; aborts on misuse */
size_t hak_secure_usable(const void *b, unsigned cls, const char *api) HAK_HIDDEN; /* the size asked for */

/* The default mode's mark of a free block, in its second word (blocks are
 * at least 16 bytes): every free and carving set it, and a block is handed
 * out only if it still has it, which the hand-out clears. A block freed
 * twice sits twice in the free lists; the second hand-out finds the mark
 * gone and reports, so no block is ever handed out twice; a write after
 * free over the word is caught the same way. Free itself does not read the
 * block: a load of a cold line would stall it, the store does not. A
 * random value with bit 63 set, never a pointer; the first block of a
 * batch on its way home holds the batch's word instead (remote.c). */
extern uintptr_t hak_free_mark HAK_HIDDEN;
static inline uintptr_t *hak_mark_word(void *p)
{
    return &((uintptr_t *)p)[1];
}
size_t hak_block_usable(const void *p, const char *api) HAK_HIDDEN; /* free.c; p not NULL */
void hak_fatal_unmarked(const void *b) __attribute__((noreturn, cold)) HAK_HIDDEN;
/* b, popped from a free list, is handed out: is it free? */
static inline void hak_hand_out(void *b)
{
    if (unlikely(*hak_mark_word(b) != hak_free_mark))
        hak_fatal_unmarked(b);
    *hak_mark_word(b) = 0;
}

/* ---- sizeclass.c: the size-class table ---- */
/* The tables every malloc and free reads, in one page at fixed offsets
 * and in neither its first nor its last line: blocks of a class that is a
 * multiple of 4 KiB all start on a page boundary (and end on a page's last
 * byte), so their lines crowd the L1 sets of those two lines, where a table
 * entry would be evicted again and again (an entry that landed at page
 * offset 0 cost mid_large_mt 8 KiB 7% of its throughput). */
struct hak_tables {
    uint8_t pad_[64];
    uint8_t class_of16[HAK_SMALL_MAX / 16 + 1];
    /* Mid classes step by at least 2 KiB, so 1 KiB granules map exactly. */
    uint8_t class_of1k[HAK_MID_MAX / 1024 + 1];
    struct hak_class classes[HAK_NCLASS] __attribute__((aligned(64)));
} __attribute__((aligned(4096)));
extern struct hak_tables hak_tables HAK_HIDDEN;
#define hak_classes (hak_tables.classes)
#define hak_class_of16 (hak_tables.class_of16)
#define hak_class_of1k (hak_tables.class_of1k)
_Static_assert(offsetof(struct hak_tables, classes) + sizeof(struct hak_class) * HAK_NCLASS <= 4096 - 64,
               "the tables stay clear of the page's last line");
void hak_classes_init(void) HAK_HIDDEN;
unsigned hak_size_class(size_t size) HAK_HIDDEN; /* 1..52 for size <= HAK_MID_MAX */

static inline uint32_t hak_rotr32(uint32_t v, unsigned s)
{
    return (v >> s) | (v << ((32 - s) & 31));
}
/* The index of the block at offset x from the slab start: past every
 * block (above UINT32_MAX / size) when x is not a multiple of the size. */
static inline uint32_t hak_class_index(const struct hak_class *k, uint32_t x)
{
    return hak_rotr32(x * k->inv, k->shift);
}
/* Is offset x (from the slab start) the start of one of the slab's blocks? */
static inline bool hak_class_is_block(const struct hak_class *k, uint32_t x)
{
    return hak_class_index(k, x) < k->capacity;
}
/* hot->cls[u] and hot->slab[u], read without the heap's lock: relaxed
 * atomic loads (a thread sharing the heap may be carving more of the slab
 * meanwhile).
 * gcc 12 does not fold the field's offset into an atomic load's address,
 * one add more; an aligned x86 load is single-copy atomic, so on x86 an asm
 * load with a memory operand is the same load with the offset folded.
 * ThreadSanitizer is shown the builtin. */
#if defined(__x86_64__) && !defined(__SANITIZE_THREAD__)
static inline uint32_t hak_hot_cls_relaxed(const struct hak_ss_hot *hot, unsigned u)
{
    uint32_t v;
    __asm__("movzbl %1, %0" : "=r"(v) : "m"(hot->cls[u]));
    return v;
}
static inline uint32_t hak_hot_slab_relaxed(const struct hak_ss_hot *hot, unsigned u)
{
    uint32_t v;
    __asm__("movzwl %1, %0" : "=r"(v) : "m"(hot->slab[u]));
    return v;
}
#else
static inline uint32_t hak_hot_cls_relaxed(const struct hak_ss_hot *hot, unsigned u)
{
    return __atomic_load_n(&hot->cls[u], __ATOMIC_RELAXED);
}
static inline uint32_t hak_hot_slab_relaxed(const struct hak_ss_hot *hot, unsigned u)
{
    return __atomic_load_n(&hot->slab[u], __ATOMIC_RELAXED);
}
#endif

/* The slab over unit u of a SuperSlab: its first unit, and how many of its
 * blocks were carved (a block past them was never handed out: a free of it,
 * the neighbour of the last block handed out say, would put a block in the
 * cache that carving hands out again). */
static inline unsigned hak_hot_head(const struct hak_ss_hot *hot, unsigned u)
{
    return hak_hot_slab_relaxed(hot, u) >> 12;
}
static inline uint32_t hak_hot_carved(const struct hak_ss_hot *hot, unsigned u)
{
    return hak_hot_slab_relaxed(hot, u) & HAK_HOT_CARVED_MAX;
}
/* Where an address lies in the slab over unit u of its SuperSlab (off: the
 * address, or its offset from the arena base: only the low bits count). */
static inline uint32_t hak_slab_offset(uintptr_t off, const struct hak_ss_hot *hot, unsigned u)
{
    return (uint32_t)(off & (HAK_SS_SIZE - 1)) - ((uint32_t)hak_hot_head(hot, u) << HAK_UNIT_SHIFT);
}
/* Is x, an offset in the slab of class cls over unit u, a block it carved? */
static inline bool hak_hot_carved_block(const struct hak_ss_hot *hot, unsigned u, unsigned cls, uint32_t x)
{
    return hak_class_index(&hak_classes[cls], x) < hak_hot_carved(hot, u);
}
/* Secure mode (secure.c): x, an offset in a slab of class k, is where
 * malloc put a block's bytes (a header before them). */
static inline bool hak_secure_at_block(const struct hak_class *k, uint32_t x)
{
    return x >= HAK_SECURE_HDR && hak_class_is_block(k, x - HAK_SECURE_HDR);
}

/* ---- os.c: every system call that maps or releases memory ---- */
enum hak_os_call { HAK_OS_MMAP, HAK_OS_MUNMAP, HAK_OS_MPROTECT, HAK_OS_MADVISE, HAK_OS_SOCKET, HAK_OS_NCALLS };
/* Fault injection for tests: of the next calls of that kind, let skip
 * succeed, then make fail fail (mmap with ENOMEM, the others with EIO). */
void hak_os_inject(enum hak_os_call call, uint32_t skip, uint32_t fail) HAK_HIDDEN;
struct msghdr;
int hak_os_connect_unix(const char *path, int timeout_ms) HAK_HIDDEN; /* socket fd or -1 */
long hak_os_send(int fd, const void *buf, size_t len) HAK_HIDDEN;
long hak_os_recvmsg(int fd, struct msghdr *mh, int flags) HAK_HIDDEN;
void *hak_os_map_file(void *at, size_t len, int fd, uint64_t off, bool shared) HAK_HIDDEN; /* at: MAP_FIXED */
void *hak_os_reserve(size_t size, size_t align) HAK_HIDDEN;  /* PROT_NONE */
int hak_os_commit(void *p, size_t size) HAK_HIDDEN;          /* make read-write */
int hak_os_decommit(void *p, size_t size) HAK_HIDDEN;        /* drop pages, keep range */
void hak_os_huge(void *p, size_t size) HAK_HIDDEN;           /* ask for THP (MADV_HUGEPAGE) */
void hak_os_populate(void *p, size_t size) HAK_HIDDEN;       /* fault a committed range in now */
int hak_os_decommit_file(void *p, size_t size, bool shared) HAK_HIDDEN;
void *hak_os_map(size_t size) HAK_HIDDEN;                    /* fresh read-write pages */
void *hak_os_map_noreserve(size_t size) HAK_HIDDEN;          /* same, no commit charge */
void *hak_os_map_guarded(size_t size) HAK_HIDDEN;            /* with guard pages around */
void *hak_os_map_fenced(size_t size, size_t align, size_t guard, bool noreserve) HAK_HIDDEN; /* aligned, guards each side */
int hak_os_seal(void *p, size_t size) HAK_HIDDEN;              /* pages back, range PROT_NONE */
int hak_os_unmap(void *p, size_t size) HAK_HIDDEN;
void *hak_os_remap(void *p, size_t old, size_t len) HAK_HIDDEN;
uint64_t hak_os_calls(enum hak_os_call call) HAK_HIDDEN;
uint64_t hak_now_ns(void) HAK_HIDDEN;
uint64_t hak_coarse_ns(void) HAK_HIDDEN; /* the last tick (a few ms), never ahead of hak_now_ns */
uint32_t hak_now_ms(void) HAK_HIDDEN; /* wraps after 49 days: compare differences */
size_t hak_os_page_size(void) HAK_HIDDEN;
size_t hak_os_resident(const void *p, size_t len) HAK_HIDDEN; /* bytes in memory (mincore) */

/* ---- provider.c: where SuperSlabs come from and go back to ----
 * Heaps call only these. The layer keeps emptied SuperSlabs warm for
 * reuse, whichever backend supplied them, and after the decay gives each
 * back to its backend. */
struct hak_provision_stats {
    uint64_t acquired[2]; /* SuperSlabs handed out, per HAK_PROV_* */
    uint64_t released[2]; /* SuperSlabs taken back, per HAK_PROV_* of origin */
    uint64_t fallbacks;   /* acquisitions the daemon could not serve */
    uint64_t warm;        /* SuperSlabs waiting warm now */
    uint64_t purged;      /* given back to the OS by this process */
    uint64_t returned;    /* given back to the daemon (return ring) */
    uint64_t reclaimed;   /* taken back by the daemon while they waited */
    uint64_t unit_bytes;  /* pages of free units in use SuperSlabs given back */
};
unsigned hak_provision_acquire(uint32_t *out, unsigned want) HAK_HIDDEN;
void hak_provision_release(uint32_t idx, uint64_t idle_ns) HAK_HIDDEN; /* idle since (0: now) */
bool hak_provision_decommit(uint32_t idx, unsigned unit, unsigned n) HAK_HIDDEN; /* false: kept */
size_t hak_provision_trim(bool force) HAK_HIDDEN;
void hak_provision_stats(struct hak_provision_stats *out) HAK_HIDDEN;
size_t hak_provision_resident(void) HAK_HIDDEN; /* SuperSlabs and side tables in memory */
void hak_provision_fork_prepare(void) HAK_HIDDEN;
void hak_provision_fork_parent(void) HAK_HIDDEN;
void hak_provision_fork_child(void) HAK_HIDDEN;

/* A backend: a supplier of fresh SuperSlabs, which takes them back after
 * they waited warm. The provider layer calls these under its lock (but
 * acquire), never two at once for one SuperSlab. */
enum hak_retire {
    HAK_RETIRED,        /* the backend has it back, pages and all */
    HAK_RETIRE_TAKEN,   /* the backend had taken it back by itself */
    HAK_RETIRE_REFUSED, /* the backend cannot take it: it stays in-process */
};
struct hak_backend {
    const char *name;
    /* Up to want fresh SuperSlabs (owner HAK_OWNER_FREE); *tried: the
     * backend was there to ask. Never blocks on another process. */
    unsigned (*acquire)(uint32_t *out, unsigned want, bool *tried);
    /* An emptied SuperSlab starts waiting warm; it may go after decay_ms. */
    void (*idle)(uint32_t idx, uint32_t decay_ms);
    /* Take a waiting one back into use; false if the backend took it. */
    bool (*reuse)(uint32_t idx);
    /* Its wait is over (now: and its pages must go at once). */
    enum hak_retire (*retire)(uint32_t idx, bool now);
    /* Return the pages of n units of a SuperSlab (in use or not). */
    bool (*decommit)(uint32_t idx, unsigned unit, unsigned n); /* false: the pages stay */
    /* malloc_trim: give back what the backend holds ready for us. */
    void (*trim)(void);
};

/* ---- provider_embedded.c: SuperSlabs carved from the arena in-process ---- */
extern const struct hak_backend hak_embedded_backend HAK_HIDDEN;
struct hak_embedded_stats {
    uint32_t clean;     /* SuperSlabs held with no resident pages */
    uint64_t extends;   /* arena extensions (batches of fresh SuperSlabs) */
};
void hak_embedded_keep(uint32_t idx) HAK_HIDDEN; /* pages gone: onto the clean list */
void hak_embedded_stats(struct hak_embedded_stats *out) HAK_HIDDEN;
void hak_embedded_fork_prepare(void) HAK_HIDDEN;
void hak_embedded_fork_parent(void) HAK_HIDDEN;
void hak_embedded_fork_child(void) HAK_HIDDEN;

/* ---- provider_pagerd.c: SuperSlabs from hakmem-pagerd's shared file ---- */
extern const struct hak_backend hak_pagerd_backend HAK_HIDDEN;
bool hak_pagerd_live(void) HAK_HIDDEN; /* a session is being served now */
void hak_pagerd_fork_prepare(void) HAK_HIDDEN;
void hak_pagerd_fork_parent(void) HAK_HIDDEN;
void hak_pagerd_fork_child(void) HAK_HIDDEN;
/* Sessions' files (SuperSlab areas and control areas) and bitmaps in
 * memory; *span lists each session's arena range [first, end) in order. */
size_t hak_pagerd_resident(uint32_t (*span)[2], unsigned *nspan) HAK_HIDDEN;
#define HAK_PAGERD_MAX_SESSIONS 64
/* The checks of what the daemon sends, one step of the connect each (and
 * what tests/fuzz drives directly). */
int hak_pagerd_handshake(int sock, uint32_t capacity, struct hak_msg_welcome *w) HAK_HIDDEN;
bool hak_pagerd_layout_ok(const struct hak_msg_welcome *w, uint32_t asked, int memfd) HAK_HIDDEN;
bool hak_pagerd_ctrl_ok(const struct hak_shm_ctrl *c, const struct hak_shm_layout *l, uint32_t *ncpus) HAK_HIDDEN;
unsigned hak_pagerd_node_of(const struct hak_shm_ctrl *c, uint32_t ncpus, uint32_t nnodes, int cpu) HAK_HIDDEN;

/* ---- slab.c: one slab: carving, its free list, blocks coming back ---- */
void hak_slab_init(struct hak_heap *h, uint32_t idx, unsigned unit, unsigned cls) HAK_HIDDEN;
unsigned hak_slab_take(struct hak_slab *s, unsigned want, unsigned most, void **first) HAK_HIDDEN;
void hak_slab_put_local(struct hak_heap *h, void *p) HAK_HIDDEN;
void hak_slab_give_back(struct hak_heap *h, struct hak_slab *s, void *first, void *last, unsigned n) HAK_HIDDEN;
void hak_slab_release(struct hak_heap *h, struct hak_slab *s) HAK_HIDDEN;
void hak_slab_list_push(struct hak_heap *h, struct hak_slab *s, unsigned list) HAK_HIDDEN;
void hak_slab_list_remove(struct hak_heap *h, struct hak_slab *s) HAK_HIDDEN;
void *hak_slab_next(const struct hak_slab *s, const void *p) HAK_HIDDEN; /* checked link */
static inline struct hak_slab *hak_slab_of(const void *p)
{
    uint32_t idx = hak_ss_of(p);
    unsigned u = ((uintptr_t)p >> HAK_UNIT_SHIFT) & (HAK_UNITS - 1);
    return &hak_cold(idx)->slab[hak_hot_head(hak_hot(idx), u)];
}

/* ---- remote.c: frees of other threads' blocks, from the free to the owner ----
 * Functions returning a heap return an owner to drain for (hak_heap_help_drain). */
#define HAK_HELP_DRAIN 32 /* batches sent since an owner's drain before a freer helps */
struct hak_heap *hak_remote_push_one(struct hak_slab *s, void *p) HAK_HIDDEN;
void hak_remote_put_back(struct hak_heap *h, void *p) HAK_HIDDEN;
struct hak_heap *hak_remote_restart(struct hak_tls *t, unsigned i, struct hak_slab *s, void *p) HAK_HIDDEN;
struct hak_heap *hak_remote_send_full(struct hak_tls *t, unsigned i) HAK_HIDDEN;
struct hak_heap *hak_remote_flush(struct hak_tls *t) HAK_HIDDEN; /* the thread's batches go out */
/* The batch slot of a slab: its first unit and the low bits of its
 * SuperSlab. */
static inline unsigned hak_remote_slot(uint32_t idx, unsigned unit)
{
    return (unit ^ (idx << 4) ^ (idx >> 2)) & (HAK_RBATCH - 1);
}
/* A slab's name in its batch slot: its first unit's number in the arena,
 * plus one. */
static inline uint32_t hak_rbatch_key(uint32_t idx, unsigned unit)
{
    return idx * HAK_UNITS + unit + 1;
}
/* Free p, a block of slab s that this thread (which has a heap: its slow
 * paths and its exit send the batches) does not own: into its batch in slot
 * i. Not in the secure mode, which checks links as soon as it can
 * (hak_remote_push_one). */
static inline struct hak_heap *hak_remote_free(struct hak_tls *t, unsigned i, struct hak_slab *s, void *p)
{
    struct hak_rbatch *b = &t->rb[i];
    if (b->slab != s)
        return hak_remote_restart(t, i, s, p);
    if (unlikely(p == b->head))
        hak_fatal_pointer("free", p, "double free");
    *(void **)p = b->head;
    b->head = p;
    return ++b->n >= HAK_RBATCH_MAX ? hak_remote_send_full(t, i) : NULL;
}
void hak_remote_drain(struct hak_heap *h) HAK_HIDDEN;   /* heap locked */
/* Have other threads sent h blocks since its last drain? */
static inline bool hak_remote_waiting(struct hak_heap *h)
{
    return atomic_load_explicit(&h->inbox, HAK_RELAXED) || atomic_load_explicit(&h->notify_head, HAK_RELAXED);
}
void hak_remote_collect(struct hak_heap *h, struct hak_slab *s) HAK_HIDDEN; /* heap locked */
void hak_remote_wait(struct hak_heap *h) HAK_HIDDEN;    /* no freer is pushing to h */
void hak_remote_resync(struct hak_heap *h, uint32_t first_ss) HAK_HIDDEN; /* fork child */
void hak_remote_fork_child(struct hak_tls *t) HAK_HIDDEN;

/* ---- superslab.c: SuperSlabs owned by a heap, abandoned, adopted ---- */
bool hak_ss_new_slab(struct hak_heap *h, unsigned cls) HAK_HIDDEN;
void hak_ss_unit_freed(struct hak_heap *h, uint32_t idx) HAK_HIDDEN;
void hak_ss_release_pending(struct hak_heap *h, bool keep) HAK_HIDDEN;
/* After anything that may empty a SuperSlab: keep one, give the rest back. */
static inline void hak_ss_settle(struct hak_heap *h)
{
    if (h->ss_pending != HAK_NO_SS)
        hak_ss_release_pending(h, true);
}
void hak_ss_release_empty(struct hak_heap *h, uint64_t idle_ns) HAK_HIDDEN; /* idle since (0: now) */
size_t hak_ss_purge_units(struct hak_heap *h, bool force) HAK_HIDDEN;
void hak_ss_abandon_all(struct hak_heap *h) HAK_HIDDEN;
bool hak_ss_adopt_one(struct hak_heap *h) HAK_HIDDEN;
bool hak_ss_claim(struct hak_heap *h, uint32_t idx) HAK_HIDDEN;
uint32_t hak_ss_abandoned_count(void) HAK_HIDDEN;

/* ---- heap.c: per-thread heaps: start, refill, flush, notify, exit ---- */
extern __thread struct hak_tls hak_tls __attribute__((tls_model("initial-exec"))) HAK_HIDDEN;
struct hak_heap *hak_heap_thread_start(void) HAK_HIDDEN;
unsigned hak_heap_refill(struct hak_heap *h, unsigned cls) HAK_HIDDEN;
void hak_heap_cache_adapt(struct hak_heap *h, unsigned cls, bool flush) HAK_HIDDEN;
void hak_heap_flush(struct hak_heap *h, unsigned cls, unsigned keep) HAK_HIDDEN;
void hak_heap_help_drain(struct hak_heap *h) HAK_HIDDEN; /* by another thread */
/* A slow path, no lock held: this thread's remote batches go out. */
static inline void hak_remote_send(struct hak_tls *t)
{
    struct hak_heap *idle = hak_remote_flush(t);
    if (idle)
        hak_heap_help_drain(idle);
}
void *hak_heap_orphan_alloc(unsigned cls) HAK_HIDDEN;
struct hak_heap *hak_heap_orphan(void) HAK_HIDDEN;
void hak_heap_thread_exit(struct hak_heap *h) HAK_HIDDEN;
void hak_heap_unpark_all(void) HAK_HIDDEN;
void hak_heap_fork_prepare(void) HAK_HIDDEN;
void hak_heap_fork_parent(void) HAK_HIDDEN;
void hak_heap_fork_child(void) HAK_HIDDEN;
void hak_heap_key_init(void) HAK_HIDDEN;
struct hak_heap *hak_heap_first(void) HAK_HIDDEN; /* walk: ->all_next */
void hak_heap_pool_lock(void) HAK_HIDDEN;
void hak_heap_pool_unlock(void) HAK_HIDDEN;
size_t hak_heap_resident(void) HAK_HIDDEN; /* the heaps' own memory */
size_t hak_heap_decay_all(void) HAK_HIDDEN;  /* idle units of every heap not busy now */

/* ---- decay.c: memory idle past the decay goes back, across the process ---- */
void hak_decay_maybe(struct hak_heap *h) HAK_HIDDEN; /* h's slow path, no lock held */
size_t hak_decay_all(void) HAK_HIDDEN;
void hak_decay_fork_child(void) HAK_HIDDEN;

/* ---- alloc.c / free.c: the entry points' slow paths ---- */
void *hak_malloc_slow(size_t size) HAK_HIDDEN;
void hak_free_generic(void *p) HAK_HIDDEN;
void *hak_malloc_inner(size_t size) HAK_HIDDEN; /* hak_malloc, never rewritten */
/* Where hak_malloc and hak_calloc jump with the profiler on. */
void *hak_malloc_sampled(size_t size) HAK_HIDDEN;
void *hak_calloc_sampled(size_t count, size_t size) HAK_HIDDEN;
void *hak_malloc_code(size_t size) HAK_HIDDEN; /* hak_malloc's code, to rewrite */
void *hak_calloc_code(size_t count, size_t size) HAK_HIDDEN;

/* ---- aligned.c ---- */
void *hak_aligned(size_t align, size_t size, void *ra) HAK_HIDDEN; /* ra: for the profiler */

/* ---- large.c: blocks above HAK_MID_MAX, mapped directly ---- */
void *hak_large_alloc(size_t size, size_t align, bool zero) HAK_HIDDEN;
bool hak_large_free(void *p) HAK_HIDDEN;          /* false: not a large block */
size_t hak_large_usable(const void *p) HAK_HIDDEN; /* 0: not a large block */
bool hak_large_near(uintptr_t a, uintptr_t *block, size_t *len, bool *freed) HAK_HIDDEN; /* crash report */
void *hak_large_resize(void *p, size_t size) HAK_HIDDEN;
size_t hak_large_trim(void) HAK_HIDDEN;
size_t hak_large_decay(void) HAK_HIDDEN; /* cached mappings past the decay, if the lock is free */
/* A block for a profiler's sample, carrying its tag (0: not counted). */
void *hak_large_alloc_sampled(size_t size, size_t align, bool zero, uint64_t tag) HAK_HIDDEN;
void hak_large_each_sampled(void (*each)(uint64_t tag, void *arg), void *arg) HAK_HIDDEN;
void hak_large_stats(uint64_t *live_bytes, uint64_t *cached_bytes, uint64_t *blocks) HAK_HIDDEN;
uint64_t hak_large_returned(void) HAK_HIDDEN;    /* bytes of freed mappings unmapped */
size_t hak_large_resident(void) HAK_HIDDEN; /* live and cached mappings, the registry */
void hak_large_fork_prepare(void) HAK_HIDDEN;
void hak_large_fork_parent(void) HAK_HIDDEN;
void hak_large_fork_child(void) HAK_HIDDEN;

/* ---- stats.c: counters summed over heaps ---- */
struct hak_class_totals {
    uint64_t allocs, frees, refills;
};
uint64_t hak_remote_frees(unsigned cls) HAK_HIDDEN; /* free.c: counted when HAKMEM_STATS=1 */
/* Resident bytes of every mapping hakmem made, and of nothing else (not a
 * sanitizer's shadow, not the program's own memory). Walks every range
 * with mincore: for tests and statistics, not for hot paths. */
size_t hak_resident_bytes(void) HAK_HIDDEN;
/* The snapshot behind hak_stats_get (include/hakmem.h), the summary
 * (hak_stats_print), malloc_info's XML and mallinfo: every figure from one
 * place. resident: also the passes with mincore (resident, metadata). */
struct hak_stats;
void hak_stats_snapshot(struct hak_stats *out, bool resident) HAK_HIDDEN;
int hak_stats_xml(FILE *f) HAK_HIDDEN; /* malloc_info(0, f) */

/* ---- options.c: the HAKMEM_* environment options, one table ---- */
#define HAK_PATH_MAX 108 /* sun_path */
enum { HAK_PAGERD_AUTO = 0, HAK_PAGERD_ON = 1, HAK_PAGERD_OFF = 2 };
struct hak_options {
    uint64_t arena_gib;      /* HAKMEM_ARENA_GB, 0 = automatic */
    uint64_t decay_ms;       /* HAKMEM_DECAY_MS */
    uint64_t stats;          /* HAKMEM_STATS */
    uint64_t secure;         /* HAKMEM_SECURE */
    uint64_t crash_report;   /* HAKMEM_CRASH_REPORT */
    uint64_t large_cache_mb; /* HAKMEM_LARGE_CACHE_MB */
    uint64_t thread_cache_kb; /* HAKMEM_THREAD_CACHE_KB */
    uint64_t pagerd;         /* HAKMEM_PAGERD: HAK_PAGERD_* */
    uint64_t pagerd_capacity_mb; /* HAKMEM_PAGERD_CAPACITY_MB */
    uint64_t background;     /* HAKMEM_BACKGROUND */
    uint64_t thp;            /* HAKMEM_THP */
    uint64_t prof;           /* HAKMEM_PROF */
    uint64_t prof_sample;    /* HAKMEM_PROF_SAMPLE */
    char pagerd_socket[HAK_PATH_MAX]; /* HAKMEM_PAGERD_SOCKET */
    char prof_prefix[HAK_PATH_MAX];   /* HAKMEM_PROF_PREFIX */
};
extern struct hak_options hak_opt HAK_HIDDEN;
void hak_options_init(void) HAK_HIDDEN;
/* Read by the background thread too, and set by tests at run time. */
static inline uint64_t hak_decay_ms(void)
{
    return __atomic_load_n(&hak_opt.decay_ms, __ATOMIC_RELAXED);
}

/* ---- init.c: process start-up and fork ---- */
extern _Atomic int hak_init_state HAK_HIDDEN;  /* 0 none, 1 running, 2 done */
bool hak_init_slow(void) HAK_HIDDEN;
static inline bool hak_ready(void)
{
    return atomic_load_explicit(&hak_init_state, memory_order_acquire) == 2;
}

/* ---- prof*.c: the sampling heap profiler ----
 * The sampling entry points (alloc.c) count bytes down in hak_tls.prof_left
 * and call hak_prof_due when it goes below 0; the default ones never look. */
extern uint64_t hak_prof_rate HAK_HIDDEN; /* mean bytes between samples; 0 = off */
bool hak_prof_patch_entries(const char **why) HAK_HIDDEN; /* malloc, calloc jump to the sampling ones */
void hak_prof_init(void) HAK_HIDDEN;
bool hak_prof_due(void) HAK_HIDDEN;
void *hak_prof_alloc(size_t size, size_t align, bool zero, void *ra) HAK_HIDDEN;
/* malloc's countdown ran out: hak_prof_due and hak_prof_alloc in one call.
 * In an optimized build it is reached by a jump (a sibling call) from
 * hak_malloc_sampled, so its return address is the program's: taking it
 * in hak_malloc_sampled cost that function a stack frame on every call.
 * Where the compiler keeps the call (no sibling calls below -O2;
 * ThreadSanitizer's exit hook), hak_malloc_sampled passes it. */
#if defined(__OPTIMIZE__) && !defined(HAK_DEBUG) && !defined(__SANITIZE_THREAD__)
#define HAK_PROF_MALLOC_RA_PARAM
#define HAK_PROF_MALLOC_RA __builtin_return_address(0)
#define HAK_PROF_MALLOC_CALL(size) hak_prof_malloc(size)
#else
#define HAK_PROF_MALLOC_RA_PARAM , void *ra
#define HAK_PROF_MALLOC_RA ra
#define HAK_PROF_MALLOC_CALL(size) hak_prof_malloc(size, __builtin_return_address(0))
#endif
void *hak_prof_malloc(size_t size HAK_PROF_MALLOC_RA_PARAM) HAK_HIDDEN;
/* A sampled block's tag: (requested size << HAK_PROF_TAG_SIZE_SHIFT) |
 * (stack id + 1), the id 0 for a stack left out; bits 16-23 are free for
 * where the block lives to keep its own state. */
#define HAK_PROF_TAG_ID_MASK 0xFFFFu
#define HAK_PROF_TAG_SIZE_SHIFT 24
void hak_prof_thread_exit(void) HAK_HIDDEN; /* its counts table to the next thread */
struct hak_stats;
void hak_prof_stats(struct hak_stats *s) HAK_HIDDEN; /* the prof_ figures */
#define HAK_PROF_DEPTH 64
struct hak_prof_stack {
    unsigned n;
    bool has_off;                  /* off[] known: the stack can be memoized */
    uintptr_t f[HAK_PROF_DEPTH];   /* return addresses, the program's first */
    int32_t off[HAK_PROF_DEPTH];   /* where each lay, from the sampling frame */
};
unsigned hak_prof_unwind(struct hak_prof_stack *s, void *ra, uintptr_t anchor) HAK_HIDDEN;
int64_t hak_prof_memo_find(void *ra, uintptr_t anchor) HAK_HIDDEN; /* no lock needed */
void hak_prof_memo_store(void *ra, const struct hak_prof_stack *s, uint32_t id) HAK_HIDDEN; /* profiler lock held */
/* prof_blocks.c: sampled blocks' pages, in a range of their own */
struct hak_prof_region {
    uintptr_t base;
    size_t size; /* 0: none (the profiler off) */
};
extern struct hak_prof_region hak_prof_region HAK_HIDDEN;
static inline bool hak_prof_owns(const void *p)
{
    return (uintptr_t)p - hak_prof_region.base < hak_prof_region.size;
}
bool hak_prof_blocks_init(void) HAK_HIDDEN;
void *hak_prof_block_alloc(size_t size, size_t align, bool zero, uint64_t tag) HAK_HIDDEN; /* NULL: not here */
void hak_prof_block_free(void *p) HAK_HIDDEN;
size_t hak_prof_block_usable(const void *p) HAK_HIDDEN;
void hak_prof_blocks_thread_exit(void) HAK_HIDDEN;
size_t hak_prof_blocks_trim(void) HAK_HIDDEN;
size_t hak_prof_blocks_decay(void) HAK_HIDDEN; /* the shared cache, once unused for the decay */
uint64_t hak_prof_blocks_live(void (*each)(uint64_t tag, void *arg), void *arg) HAK_HIDDEN; /* bytes of live sampled blocks there */
size_t hak_prof_blocks_resident(void) HAK_HIDDEN;
void hak_prof_blocks_fork_prepare(void) HAK_HIDDEN;
void hak_prof_blocks_fork_parent(void) HAK_HIDDEN;
void hak_prof_blocks_fork_child(void) HAK_HIDDEN;
void hak_prof_fork_prepare(void) HAK_HIDDEN;
void hak_prof_fork_parent(void) HAK_HIDDEN;
void hak_prof_fork_child(void) HAK_HIDDEN;
/* For the entry points that are not malloc's own (realloc, the aligned
 * ones): sample this allocation of size bytes? */
static inline bool hak_prof_sampling(size_t size)
{
    return unlikely(hak_prof_rate != 0) && (hak_tls.prof_left -= (int64_t)size) < 0 && hak_prof_due();
}

#endif /* HAK_INTERNAL_H */
