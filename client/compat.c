/* glibc's malloc-introspection calls, for programs that reach for them.
 * malloc_trim does what it says; mallinfo/mallinfo2 report hakmem's bytes
 * in use (live blocks at their usable sizes), the SuperSlab and large-block
 * memory it holds, and its large blocks; malloc_stats prints hakmem's
 * summary (the one HAKMEM_STATS=1 prints at exit); malloc_info(0, stream)
 * writes an XML document in glibc's format with hakmem's figures (free
 * blocks per size class, totals, system memory) and a <hakmem> element with
 * the rest of struct hak_stats; mallopt accepts and ignores every parameter
 * (hakmem is tuned by HAKMEM_* variables instead). Every figure comes from
 * the one snapshot of stats.c, so they agree with hak_stats_get. */
#include <malloc.h>
#include <stdio.h>

#include "internal.h"
#include "hakmem.h"

#ifndef HAK_NO_OVERRIDE

HAK_API int malloc_trim(size_t pad)
{
    return hak_trim(pad);
}

/* No mincore pass: a program may call mallinfo often. */
HAK_API struct mallinfo2 mallinfo2(void)
{
    struct hak_stats st;
    hak_stats_snapshot(&st, false);
    struct mallinfo2 mi = {0};
    size_t held = (size_t)((st.ss_in_use + st.ss_warm) << HAK_SS_SHIFT) + st.large_bytes + st.large_cached;
    mi.arena = held;
    mi.uordblks = st.allocated;
    mi.fordblks = held > st.allocated ? held - st.allocated : 0;
    mi.usmblks = held;
    mi.hblks = st.large_blocks;
    mi.hblkhd = st.large_bytes;
    return mi;
}

static int clamp_int(size_t v)
{
    return v > (size_t)__INT_MAX__ ? __INT_MAX__ : (int)v;
}

HAK_API struct mallinfo mallinfo(void)
{
    struct mallinfo2 m2 = mallinfo2();
    struct mallinfo mi = {0};
    mi.arena = clamp_int(m2.arena);
    mi.uordblks = clamp_int(m2.uordblks);
    mi.fordblks = clamp_int(m2.fordblks);
    mi.usmblks = clamp_int(m2.usmblks);
    mi.hblks = clamp_int(m2.hblks);
    mi.hblkhd = clamp_int(m2.hblkhd);
    return mi;
}

HAK_API void malloc_stats(void)
{
    hak_stats_print();
}

HAK_API int mallopt(int param, int value)
{
    (void)param;
    (void)value;
    return 1;
}

HAK_API int malloc_info(int options, FILE *stream)
{
    if (options != 0 || !stream) {
        errno = EINVAL;
        return -1;
    }
    return hak_stats_xml(stream);
}

#endif
