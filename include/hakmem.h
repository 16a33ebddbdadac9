/* hakmem: a malloc for multi-threaded Linux servers.
 *
 * These hak_* entry points are always available. The shared library also
 * exports the standard names (malloc, free, ...) so that it can be used with
 * LD_PRELOAD or -lhakclient; the hak_* names let a program or a test call
 * hakmem explicitly next to another allocator. */
#ifndef HAKMEM_H
#define HAKMEM_H

#include <stddef.h>

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

#ifdef __cplusplus
}
#endif

#endif /* HAKMEM_H */
