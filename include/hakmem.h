/* hakmem: a malloc for multi-threaded Linux servers.
 *
 * These hak_* entry points are always available. The shared library also
 * exports the standard names (malloc, free, ...) so that it can be used with
 * LD_PRELOAD or -lhakclient; the hak_* names let a program or a test call
 * hakmem explicitly next to another allocator. */
#ifndef HAKMEM_H
#define HAKMEM_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define HAKMEM_VERSION_MAJOR 0
#define HAKMEM_VERSION_MINOR 1
#define HAKMEM_VERSION_PATCH 0

#if defined(__GNUC__)
#define HAK_API __attribute__((visibility("default")))
#define HAK_MALLOC_ATTR __attribute__((malloc, warn_unused_result))
#else
#define HAK_API
#define HAK_MALLOC_ATTR
#endif

/* Allocation. Every block is aligned to at least 16 bytes. On failure the
 * allocating calls return NULL with errno set to ENOMEM (EINVAL for a bad
 * alignment where the standard says so). */
HAK_API HAK_MALLOC_ATTR void *hak_malloc(size_t size);
HAK_API HAK_MALLOC_ATTR void *hak_calloc(size_t count, size_t size);
HAK_API void *hak_realloc(void *ptr, size_t size);
HAK_API void *hak_reallocarray(void *ptr, size_t count, size_t size);
HAK_API int hak_posix_memalign(void **out, size_t alignment, size_t size);
HAK_API HAK_MALLOC_ATTR void *hak_aligned_alloc(size_t alignment, size_t size);

/* Release. hak_free(NULL) does nothing. A pointer hakmem did not hand out
 * is reported on stderr and the process aborts. */
HAK_API void hak_free(void *ptr);
HAK_API void hak_free_sized(void *ptr, size_t size);
HAK_API void hak_free_aligned_sized(void *ptr, size_t alignment, size_t size);

/* Usable size of a live block (at least the size asked for). */
HAK_API size_t hak_usable_size(const void *ptr);

/* Return cached memory to the operating system. pad is ignored (kept for
 * malloc_trim compatibility). Returns 1 if memory was released, else 0. */
HAK_API int hak_trim(size_t pad);

/* Hand back what the calling thread holds for itself: the blocks in its
 * caches go back to their slabs, and the blocks of other threads it freed
 * (sent to their owners in batches: when a batch is full, at the thread's
 * next allocation slow path, at its exit) go now. For a thread about to
 * wait a long time. */
HAK_API void hak_thread_flush(void);

/* Print the statistics summary (the one HAKMEM_STATS=1 prints at exit). */
HAK_API void hak_stats_print(void);

/* Write the heap profile now (the process must have started with
 * HAKMEM_PROF=1): to path, or to HAKMEM_PROF_PREFIX.PID.heap if path is
 * NULL. The format is the heap profile google-pprof reads. Returns 0, or -1
 * with errno set (ENOTSUP when the profiler is off). */
HAK_API int hak_prof_dump(const char *path);

/* ---- Statistics ----
 * hak_stats_get fills *out with a snapshot of the whole process's heap.
 * size is sizeof *out as the caller knows it: the library fills the first
 * min(size, sizeof(struct hak_stats)) bytes and leaves the rest alone, so a
 * program built against an older, shorter struct keeps working, and a newer
 * one reads version and size to see what was filled (fields are only ever
 * added at the end). Returns 0, or -1 with errno EINVAL when out is NULL or
 * size cannot hold version and size. Before the first allocation every
 * figure but peak_rss is 0.
 *
 * Cost: no allocation and nothing on the malloc/free fast paths; one pass
 * over the side table of the SuperSlabs handed out so far and one over the
 * heaps (under the lock threads take to start and exit), mincore(2) over
 * hakmem's mappings for resident and metadata (large mappings under the
 * large-block lock), an fstat(2) per daemon session, one getrusage(2);
 * with the heap profiler on, a pass over its counts (call stacks times
 * threads that sampled) under the profiler's lock.
 * About 1.5 ms with 1 GiB of small blocks live, 0.1 ms with 16 MiB: fine
 * once a second from a metrics thread.
 *
 * It is a snapshot, not a ledger: the counters of threads that allocate
 * meanwhile are read as they are, so under load two figures may disagree
 * by what those threads did during the call. When no other thread is
 * allocating or freeing, every figure below is exact except where it says
 * otherwise.
 *
 * Blocks freed by a thread other than the one whose heap holds them (a
 * "remote" free) travel back: the freeing thread gathers them per slab (up
 * to 16; sent when the batch is full or its slot is needed, at the thread's
 * next slow path, its exit, or hak_thread_flush), then they wait on the
 * slab until the owning heap collects them (its thread's next cache refill,
 * a drain by a thread freeing into it, malloc_trim). Blocks still gathered
 * by the freeing thread count as freed. Blocks waiting on their slab (and
 * blocks a cache gave back to a SuperSlab its heap no longer owns) count as
 * live, and so not in frees, until collected; with HAKMEM_STATS=1 every
 * remote free is counted as it happens and live and frees are exact
 * (HAK_STATS_F_REMOTE_EXACT). That costs one atomic add per remote free
 * (and prints the summary at exit); nothing is added to malloc or to a
 * local free either way.
 *
 * With HAKMEM_SECURE=1 blocks skip the thread caches and the per-class
 * allocs and frees are not counted (0, HAK_STATS_F_SECURE); live blocks,
 * bytes and every total still are, with remote frees as above without
 * HAKMEM_STATS=1. */
#define HAK_STATS_VERSION 2
#define HAK_STATS_CLASSES 64 /* room in classes[]; nclasses of them are filled */

#define HAK_STATS_F_REMOTE_EXACT 1u /* HAKMEM_STATS=1 (not secure): remote frees counted */
#define HAK_STATS_F_SECURE 2u       /* HAKMEM_SECURE=1: per-class allocs, frees are 0 */
#define HAK_STATS_F_PAGERD 4u       /* a hakmem-pagerd session is serving SuperSlabs now */

struct hak_stats_class {
    uint64_t size;        /* block size, bytes: the usable size of every block of the class */
    uint64_t allocs;      /* blocks handed out, since start */
    uint64_t frees;       /* blocks freed, since start (remote ones: see above) */
    uint64_t live_blocks; /* handed out and not freed: allocs - frees */
    uint64_t live_bytes;  /* live_blocks * size */
    uint64_t free_blocks; /* in the class's slabs and not live: in thread caches, on
                             free lists, not carved yet */
    uint64_t cached_blocks; /* of those, in threads' caches */
    uint64_t slabs;       /* slabs of the class now */
    uint64_t refills;     /* refills of a thread's cache from slabs, since start */
};

struct hak_stats {
    uint32_t version;  /* HAK_STATS_VERSION of the library that filled it */
    uint32_t size;     /* bytes filled: min(the caller's size, the library's sizeof) */
    uint32_t flags;    /* HAK_STATS_F_* */
    uint32_t nclasses; /* entries of classes[] filled, smallest size first */

    /* Totals in bytes: allocated <= active <= mapped, resident <= mapped. */
    uint64_t allocated; /* live blocks at their usable sizes: the classes' live_bytes
                           plus large_bytes */
    uint64_t active;    /* slabs (their whole 64 KiB units) of every class plus live
                           large blocks' mappings */
    uint64_t resident;  /* pages in memory of every mapping hakmem made (mincore; a
                           daemon session's file by its allocated blocks) */
    uint64_t mapped;    /* address space hakmem holds read-write: the arena up to its
                           high-water mark (SuperSlabs committed in-process, and each
                           daemon session's whole file, which is address space more
                           than memory; a 1 MiB alignment gap per extension is in
                           too), large mappings live and cached, and metadata;
                           never below resident */
    uint64_t metadata;  /* hakmem's bookkeeping in memory (resident): the arena's side
                           tables and the heaps; the large-block registry and the daemon
                           sessions' control areas are only in resident */
    uint64_t returned_os; /* bytes given back to the OS since start: SuperSlabs purged
                           (ss_purged MiB), units' pages (unit_bytes_returned) and
                           freed large mappings unmapped */
    uint64_t peak_rss;  /* the whole process's peak resident set (getrusage): every
                           allocator's and the program's own pages */

    /* Large blocks (above 256 KiB): each its own mapping. */
    uint64_t large_blocks; /* live */
    uint64_t large_bytes;  /* live, at their usable sizes (the mappings' lengths) */
    uint64_t large_cached; /* freed mappings kept for reuse */

    /* SuperSlabs (1 MiB) and who served them. Counts since start unless "now". */
    uint64_t ss_in_use;        /* now: held by heaps (abandoned ones included) */
    uint64_t ss_warm;          /* now: emptied, kept warm for reuse until the decay */
    uint64_t ss_abandoned;     /* now: of ss_in_use, given up by their heap (its thread
                                  exited or went idle) and not claimed yet */
    uint64_t ss_from_pagerd;   /* fresh from the daemon's pre-faulted rings */
    uint64_t ss_from_embedded; /* from the process itself: fresh, or warm ones reused
                                  (the daemon's included) */
    uint64_t ss_fallbacks;     /* requests the daemon could not fully serve */
    uint64_t ss_released;      /* emptied by heaps (to the warm list or back at once) */
    uint64_t ss_purged;        /* their pages given back to the OS by this process */
    uint64_t ss_returned_pagerd; /* given back to the daemon */
    uint64_t ss_taken_pagerd;  /* taken back by the daemon while they waited warm */
    uint64_t unit_bytes_returned; /* pages of free units of SuperSlabs in use given back */

    /* Memory system calls made. */
    uint64_t os_mmap, os_munmap, os_mprotect, os_madvise;

    struct hak_stats_class classes[HAK_STATS_CLASSES];

    /* The heap profiler (HAKMEM_PROF=1; all 0 when off), since start.
     * (Version 2 on.) */
    uint64_t prof_samples; /* allocations sampled */
    uint64_t prof_unwinds; /* call stacks unwound in full: the first sample from a call
                              chain; the next ones from it are known without */
    uint64_t prof_dropped; /* samples left out of the profile, the table of call
                              stacks being full */
};

HAK_API int hak_stats_get(struct hak_stats *out, size_t size);

#ifdef __cplusplus
}
#endif

#endif /* HAKMEM_H */
