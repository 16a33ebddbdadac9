/* Aligned allocation. Blocks of a power-of-two class up to 64 KiB are
 * naturally aligned to their size (slabs start on 64 KiB boundaries), so an
 * alignment up to 64 KiB is served from the smallest such class that holds
 * the request; anything else is a large block mapped at the alignment. */
#include "internal.h"
#include "hakmem.h"

static bool power_of_two(size_t a)
{
    return a && !(a & (a - 1));
}

void *hak_aligned(size_t align, size_t size, void *ra)
{
    if (hak_prof_sampling(size))
        return hak_prof_alloc(size, align, false, ra);
    if (align <= 16)
        return hak_malloc_inner(size);
    if (size > SIZE_MAX - align) {
        errno = ENOMEM;
        return NULL;
    }
    size_t need = size > align ? size : align;
    /* Not in secure mode: a slab block's header would misalign it. */
    if (align <= HAK_UNIT_SIZE && need <= HAK_UNIT_SIZE && !hak_link_key) {
        size_t pow2 = (size_t)1 << (64 - __builtin_clzll(need - 1));
        return hak_malloc_inner(pow2);
    }
    if (unlikely(!hak_ready()) && !hak_init_slow()) {
        errno = ENOMEM;
        return NULL;
    }
    return hak_large_alloc(size, align, false);
}

HAK_API int hak_posix_memalign(void **out, size_t align, size_t size)
{
    if (!power_of_two(align) || align % sizeof(void *))
        return EINVAL;
    int saved = errno;
    void *p = hak_aligned(align, size, __builtin_return_address(0));
    errno = saved;
    if (!p)
        return ENOMEM;
    *out = p;
    return 0;
}

HAK_API void *hak_aligned_alloc(size_t align, size_t size)
{
    if (!power_of_two(align)) {
        errno = EINVAL;
        return NULL;
    }
    return hak_aligned(align, size, __builtin_return_address(0));
}

#ifndef HAK_NO_OVERRIDE
HAK_API int posix_memalign(void **out, size_t align, size_t size) __attribute__((alias("hak_posix_memalign")));
HAK_API void *aligned_alloc(size_t align, size_t size) __attribute__((alias("hak_aligned_alloc")));

/* glibc's older interfaces: memalign takes any alignment (rounded up to a
 * power of two), valloc and pvalloc align to the page. */
HAK_API void *memalign(size_t align, size_t size);
HAK_API void *memalign(size_t align, size_t size)
{
    if (align > ((size_t)1 << 62)) {
        errno = EINVAL;
        return NULL;
    }
    if (align < 16)
        align = 16;
    if (!power_of_two(align))
        align = (size_t)1 << (64 - __builtin_clzll(align));
    return hak_aligned(align, size, __builtin_return_address(0));
}

HAK_API void *valloc(size_t size);
HAK_API void *valloc(size_t size)
{
    return hak_aligned(hak_os_page_size(), size, __builtin_return_address(0));
}

HAK_API void *pvalloc(size_t size);
HAK_API void *pvalloc(size_t size)
{
    size_t page = hak_os_page_size();
    if (size > SIZE_MAX - page) {
        errno = ENOMEM;
        return NULL;
    }
    return hak_aligned(page, size ? (size + page - 1) & ~(page - 1) : page, __builtin_return_address(0));
}
#endif
