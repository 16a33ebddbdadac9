/* Every structure of the client, with who may touch each field.
 *
 * Memory layout in one picture:
 *   arena      one reserved address range, 1 MiB aligned, cut into SuperSlabs
 *   SuperSlab  1 MiB of block memory only (no header inside), 16 units of 64 KiB
 *   slab       a run of 1..16 units serving one size class, owned by one heap
 *   side table per SuperSlab: a hot line (owner, class per unit) read by every
 *              free, and cold metadata (slab free lists, links) that only the
 *              owner touches. Keeping metadata out of the block memory means a
 *              buffer overflow cannot reach it and every byte of a SuperSlab
 *              (also one the daemon pre-faulted) holds blocks.
 *
 * "owner" below means the thread whose heap owns the SuperSlab. */
#ifndef HAK_TYPES_H
#define HAK_TYPES_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "lock.h"

#define HAK_SS_SHIFT 20
#define HAK_SS_SIZE ((size_t)1 << HAK_SS_SHIFT)
#define HAK_UNIT_SHIFT 16
#define HAK_UNIT_SIZE ((size_t)1 << HAK_UNIT_SHIFT)
#define HAK_UNITS 16
#define HAK_ALL_UNITS 0xFFFFu

#define HAK_NCLASS 53           /* class 0 means "no class" */
#define HAK_SMALL_MAX 8192      /* classes 1..32: one-unit slabs */
#define HAK_MID_MAX 262144      /* classes 33..52: multi-unit slabs */
#define HAK_NO_SS UINT32_MAX
#define HAK_CARVE_BYTES 4096    /* fresh memory one refill carves at most */

struct hak_heap;

/* Owner values of a SuperSlab that is not owned by a heap. Never NULL, so a
 * thread without a heap (tls.heap == NULL) never matches an owner. */
#define HAK_OWNER_FREE ((struct hak_heap *)1)      /* held by a provider */
#define HAK_OWNER_ABANDONED ((struct hak_heap *)2) /* its heap's thread exited */
#define HAK_OWNER_IS_HEAP(h) ((uintptr_t)(h) > 2)

/* Per-class constants, read-only after start-up. The free path checks that
 * an offset x from the slab start is the start of a block without dividing:
 * size = odd << shift and inv = odd^-1 mod 2^32; if x is a multiple of size,
 * rotr32(x * inv, shift) is exactly x / size, otherwise it exceeds
 * UINT32_MAX / size. So "rotr32(x * inv, shift) < capacity" holds exactly for
 * the offsets of the slab's blocks. */
struct hak_class {
    uint32_t inv;
    uint32_t capacity; /* blocks per slab; 0 for class 0, so nothing passes */
    uint8_t shift;
    uint8_t span;      /* units per slab */
    uint16_t cap_base; /* TLS cache capacity a thread starts with */
    uint32_t size;     /* block size in bytes */
    uint16_t cap_max;  /* largest capacity a thread's cache may grow to */
    uint16_t pad16_;
    uint32_t pad_[3];
} __attribute__((aligned(32)));

/* One cache line per SuperSlab: everything free() reads before it knows the
 * block is local. Written by the owner only; read by any thread. */
#define HAK_HOT_CARVED_MAX 4095 /* blocks a slab holds at most (12 bits) */
struct hak_ss_hot {
    _Atomic(struct hak_heap *) owner; /* seq_cst store on abandon/adopt/provider */
    uint8_t cls[HAK_UNITS];           /* class of the slab over each unit, 0 = free */
    uint16_t slab[HAK_UNITS];         /* the slab over each unit: its first unit (high
                                         4 bits) and the blocks carved from it so far
                                         (low 12: its blocks ever handed out) */
    uint8_t pad[64 - 8 - 3 * HAK_UNITS];
};

/* Slab metadata, at the index of the slab's first unit. Owner-only except
 * for remote and notify. */
struct hak_slab {
    void *free;                 /* owner: local free list (links in blocks) */
    _Atomic(void *) remote;     /* any thread pushes (CAS); owner takes all (exchange) */
    struct hak_slab *next;      /* owner: link in the heap's partial/full list */
    struct hak_slab *prev;      /* owner */
    struct hak_slab *notify_next; /* link on the owner heap's notify stack */
    _Atomic uint32_t notify;    /* 1 while on a notify stack: set by CAS 0->1 by a
                                   remote freer, cleared by the heap that pops it */
    uint32_t used;              /* owner: blocks out of the slab (TLS cache, user,
                                   remote list) */
    uint32_t nfree;             /* owner: blocks on free */
    uint32_t carved;            /* owner: blocks carved so far (bump order) */
    uint32_t ss;                /* index of the SuperSlab (constant) */
    uint8_t unit;               /* index of the first unit (constant) */
    uint8_t cls;                /* owner: class, 0 when the slab is not live */
    uint8_t list;               /* owner: HAK_LIST_* */
    uint8_t pad_[1];
};

enum { HAK_LIST_NONE = 0, HAK_LIST_PARTIAL, HAK_LIST_FULL };

/* Cold per-SuperSlab metadata. Owner-only unless stated. */
struct hak_ss {
    struct hak_slab slab[HAK_UNITS];
    uint32_t next;          /* owner: link in heap's SuperSlab list, or provider's list */
    uint32_t prev;
    uint32_t abandoned_next; /* link on the global abandoned stack (pusher/popper) */
    _Atomic uint8_t listed;  /* 1 while on the abandoned stack: set (exchange) by
                                the pusher, cleared by the popper before it
                                claims the SuperSlab */
    _Atomic uint8_t claimable; /* 1 from the moment its old heap is done with an
                                abandoned SuperSlab (set before the push) until
                                a claim wins it (cleared by the winner). An
                                owner of HAK_OWNER_ABANDONED alone is not enough:
                                the old heap still drains its notify stack. */
    uint16_t free_units;    /* owner: bit u set = unit u holds no slab */
    uint16_t dirty_units;   /* owner: free units whose pages may be resident */
    uint8_t provider;       /* which provider it came from (HAK_PROV_*) */
    uint8_t state;          /* HAK_SS_*: owner or provider, under their locks */
    uint8_t hlist;          /* owner: HAK_SSL_*, the heap list it is on */
    uint64_t idle_since_ns; /* provider: when it came back (decay) */
    uint32_t idle_word;     /* provider: the deadline its backend published (pagerd
                               idle word), HAK_IDLE_BUSY when none */
    uint32_t unit_idle_ms[HAK_UNITS]; /* owner: when each dirty unit was freed
                               (hak_now_ms, wrapping) */
};

enum { HAK_SS_UNUSED = 0, HAK_SS_CLEAN, HAK_SS_DIRTY, HAK_SS_OWNED };
enum { HAK_SSL_NONE = 0, HAK_SSL_AVAIL, HAK_SSL_FULL, HAK_SSL_EMPTY, HAK_SSL_PENDING };
enum { HAK_PROV_EMBEDDED = 0, HAK_PROV_PAGERD = 1 };

/* The TLS front: per-thread, per-class stacks of free blocks. Only its
 * thread touches it (and a fork child, single-threaded, reclaiming it).
 * One 24-byte entry per class keeps a class's fields on one cache line. */
struct hak_tcache {
    void *head;          /* singly linked through each block's first word */
    uint32_t count;      /* blocks on head */
    uint32_t cap;        /* a free that finds count >= cap flushes; 0 until the
                            first refill, so class 0 never takes the fast path */
    uint64_t frees;      /* frees by this thread (statistics) */
};

/* Remote frees of one slab, gathered before they go out (remote.c). */
#define HAK_RBATCH 64      /* slabs a thread gathers for at once (power of 2) */
#define HAK_RBATCH_MAX 32  /* blocks a batch holds before it goes out */
struct hak_rbatch {
    struct hak_slab *slab; /* NULL: unused */
    void *head, *tail;     /* linked like a remote list */
    uint32_t n;
    uint32_t key;          /* hak_rbatch_key of slab, 0 when unused: free's
                              test without the slab's address */
};

/* Batches bound for one owner heap, chained (a batch's last block links to
 * the next batch's first), before they go to its inbox in one push. */
#define HAK_OUTBOX 4        /* owners a thread gathers for at once */
#define HAK_OUTBOX_MAX 256  /* blocks an outbox holds before it goes out */
#define HAK_OUTBOX_BYTES (256u << 10) /* or bytes: mid blocks are not held long */
struct hak_outbox {
    struct hak_heap *heap; /* NULL: empty */
    void *first;
    void *last;            /* the chain's last block (of the first batch posted) */
    uint32_t gave_away;    /* heap's count when the first batch was posted */
    uint32_t n;            /* blocks */
    uint32_t batches;
    uint64_t bytes;
};

struct hak_tls {
    struct hak_tcache c[HAK_NCLASS];
    struct hak_heap *heap;         /* NULL until the first slow path, and after exit */
    uint8_t state;                 /* HAK_THREAD_* */
    uint8_t keyed;                 /* exit destructor registered */
    uint64_t rb_used;              /* bit i: rb[i] holds a batch */
    struct hak_rbatch rb[HAK_RBATCH];
    struct hak_outbox out[HAK_OUTBOX];
    uint32_t out_next;             /* the outbox to reuse when all are taken */
    /* The profiler's (last: the fast paths' offsets stay), on one line:
     * a sample's first reads, beside the countdown every malloc moves. */
    _Alignas(64) int64_t prof_left; /* bytes left before the next sample, taken by
                                      the allocation that goes below 0 */
    uint64_t prof_rng;             /* the interval's random state */
    void *prof_counts;             /* the thread's table of counts (prof.c) */
    uint8_t prof_state;            /* prof.c: PT_* */
    bool prof_gone;                /* no table of its own any more: leaving */
};

enum { HAK_THREAD_NEW = 0, HAK_THREAD_ACTIVE, HAK_THREAD_DEAD };

struct hak_class_stats {
    uint8_t last_flush;   /* owner: the last slow event of the class was a flush */
    uint64_t refills;     /* owner: refills of the TLS cache */
    uint64_t refilled;    /* owner: blocks moved into the TLS cache */
    uint64_t flushed;     /* owner: blocks moved out of the TLS cache */
    uint64_t frees;       /* owner: frees folded in from exited threads' TLS */
};

/* A heap: the slow-path state of one thread. Heaps live in permanent memory
 * and are recycled, never unmapped, so a remote freer holding a stale
 * pointer touches valid memory. */
struct hak_heap {
    hak_lock_t lock;              /* owner in slow paths; fork prepare takes all */
    struct hak_tls *tls;          /* owner's TLS front */
    struct hak_slab *partial[HAK_NCLASS]; /* owner: slabs with free or uncarved blocks */
    struct hak_slab *full[HAK_NCLASS];    /* owner: slabs with neither */
    uint32_t ss_avail;            /* owner: owned SuperSlabs with some units free */
    uint32_t ss_full;             /* owner: owned SuperSlabs without free units */
    uint32_t ss_empty;            /* owner: owned SuperSlabs with every unit free */
    uint32_t ss_pending;          /* owner: emptied SuperSlabs, to keep or give back */
    uint32_t nss;                 /* owner: SuperSlabs owned (all four lists) */
    uint32_t nempty;              /* owner: length of ss_empty */
    _Atomic(void *) inbox;        /* remote freers push chains of batches, owner takes all */
    _Atomic(struct hak_slab *) notify_head; /* remote freers push slabs, owner pops all */
    _Atomic uint32_t inflight;    /* remote freers between reading owner and pushing */
    _Atomic uint32_t notify_pushes; /* batches and slabs pushed since the last drain:
                                     remote freers add (relaxed), a drainer resets */
    _Atomic uint32_t gave_away;   /* bumped when its SuperSlabs stop being its own
                                     with blocks out (abandoned): an outbox posted
                                     since the same count holds only its batches */
    uint32_t slow_events;         /* owner: refills and flushes, for the budget check */
    uint8_t helped;               /* heap lock: drains by other threads since the
                                     owner's last refill or flush */
    _Atomic uint64_t active_ns;   /* the owner's last slow path (or its park) */
    uint64_t cap_bytes;           /* owner: sum of cache capacity x size, kept as caps
                                     grow and recounted by each budget check */
    uint8_t in_use;               /* heap pool lock: a thread (or the orphan role) has it */
    uint8_t parked;               /* heap pool lock and heap lock: on the free list with
                                     contents */
    uint64_t parked_ns;           /* heap lock: when it was parked */
    uint8_t park_cached;          /* heap lock: parked with its caches (not yet emptied) */
    uint64_t release_idle_ns;     /* heap lock: what it gives back now was idle since
                                     then (0: now) */
    uint8_t is_orphan;            /* the shared heap for threads past their exit */
    struct hak_heap *all_next;    /* heap pool lock: list of every heap ever made */
    struct hak_heap *free_next;   /* heap pool lock */
    struct hak_class_stats st[HAK_NCLASS];
    /* A parked heap: its thread exited and left its caches here, with its
     * SuperSlabs still owned, for the next thread to take over whole. */
    struct hak_tls park;
};

#endif /* HAK_TYPES_H */
