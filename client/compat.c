/* glibc's malloc-introspection calls, for programs that reach for them.
 * malloc_trim does what it says; mallinfo/mallinfo2 report what hakmem
 * knows (bytes in use, bytes mapped); malloc_stats prints hakmem's summary;
 * mallopt accepts and ignores every parameter (hakmem is tuned by HAKMEM_*
 * variables instead); malloc_info writes an empty document. */
#include <malloc.h>
#include <stdio.h>

#include "internal.h"
#include "hakmem.h"

#ifndef HAK_NO_OVERRIDE

HAK_API int malloc_trim(size_t pad)
{
    return hak_trim(pad);
}

static void usage(size_t *in_use, size_t *mapped)
{
    struct hak_class_totals tot[HAK_NCLASS];
    uint64_t live = 0, large_live, large_cached, large_blocks;
    if (hak_ready()) {
        hak_stats_collect(tot);
        for (unsigned c = 1; c < HAK_NCLASS; c++)
            if (tot[c].allocs > tot[c].frees)
                live += (tot[c].allocs - tot[c].frees) * hak_classes[c].size;
    }
    hak_large_stats(&large_live, &large_cached, &large_blocks);
    struct hak_provision_stats ps;
    hak_provision_stats(&ps);
    uint64_t ss = ps.acquired[0] + ps.acquired[1] - ps.released[0] - ps.released[1];
    *in_use = (size_t)(live + large_live);
    *mapped = (size_t)((ss << HAK_SS_SHIFT) + large_live + large_cached);
}

HAK_API struct mallinfo2 mallinfo2(void)
{
    struct mallinfo2 mi = {0};
    size_t in_use, mapped;
    usage(&in_use, &mapped);
    mi.arena = mapped;
    mi.uordblks = in_use;
    mi.fordblks = mapped > in_use ? mapped - in_use : 0;
    mi.usmblks = mapped;
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
    fputs("<malloc version=\"hakmem\"></malloc>\n", stream);
    return 0;
}

#endif
