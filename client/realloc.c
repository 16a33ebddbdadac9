/* realloc and reallocarray. A block is resized in place when the new size
 * still fits its class (or mapping) without wasting more than half of it;
 * a large block that stays large has its pages moved by the kernel
 * (mremap) instead of copied; otherwise it moves. A failed resize leaves
 * the old block intact. */
#include <string.h>

#include "internal.h"
#include "hakmem.h"

/* A new block for realloc, sampled by the profiler like malloc's. */
static void *fresh(size_t size, void *ra)
{
    if (hak_prof_sampling(size))
        return hak_prof_alloc(size, 16, false, ra);
    return hak_malloc_inner(size);
}

HAK_API void *hak_realloc(void *p, size_t size)
{
    if (!p)
        return fresh(size, __builtin_return_address(0));
    if (size == 0) { /* glibc's behaviour: free and return NULL */
        hak_free(p);
        return NULL;
    }
    size_t have = hak_block_usable(p, "realloc"); /* also rejects a pointer not ours */
    if (size <= have && size > have / 2)
        return p;
    /* Not in secure mode: moved pages would leave their guard pages. */
    if (size > HAK_MID_MAX && !hak_in_arena(p) && !hak_prof_owns(p) && !hak_link_key)
        return hak_large_resize(p, size);
    void *q = fresh(size, __builtin_return_address(0));
    if (!q)
        return NULL;
    memcpy(q, p, size < have ? size : have);
    hak_free(p);
    return q;
}

HAK_API void *hak_reallocarray(void *p, size_t count, size_t size)
{
    size_t bytes;
    if (__builtin_mul_overflow(count, size, &bytes)) {
        errno = ENOMEM;
        return NULL;
    }
    return hak_realloc(p, bytes);
}

#ifndef HAK_NO_OVERRIDE
HAK_API void *realloc(void *p, size_t size) __attribute__((alias("hak_realloc")));
HAK_API void *reallocarray(void *p, size_t count, size_t size) __attribute__((alias("hak_reallocarray")));
#endif
