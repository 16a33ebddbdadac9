/* The size classes, in one table.
 *
 *  class   sizes (bytes)                         step   slab (64 KiB units)
 *   1-8    16 32 48 64 80 96 112 128              16     1
 *   9-12   160 192 224 256                        32     1
 *  13-16   320 384 448 512                        64     1
 *  17-20   640 768 896 1024                      128     1
 *  21-24   1280 1536 1792 2048                   256     1
 *  25-28   2560 3072 3584 4096                   512     1
 *  29-32   5120 6144 7168 8192                  1024     1
 *  33-52   10 KiB ... 256 KiB, 4 per doubling            fewest holding 2+ blocks, <= 1/8 unused (mid_span)
 *
 * Every block is 16-byte aligned, so requests of 0-16 bytes share the 16 B
 * class. Above 128 B, four classes per doubling bound internal waste by 25%
 * (at the first byte past a class) and average it near 10%. */
#include "internal.h"

struct hak_tables hak_tables;

static uint32_t class_size(unsigned c)
{
    if (c <= 8)
        return 16u * c;
    unsigned g = (c - 9) / 4, k = (c - 9) % 4 + 1; /* group above 128 << g */
    uint32_t base = 128u << g;
    return base + (base / 4) * k;
}

unsigned hak_size_class(size_t size)
{
    if (size <= 128)
        return size <= 16 ? 1 : (unsigned)((size + 15) >> 4);
    size_t s = size - 1;
    unsigned top = 63 - (unsigned)__builtin_clzll(s);   /* 2^top <= s < 2^(top+1) */
    unsigned quarter = (unsigned)(s >> (top - 2)) & 3;  /* which quarter of the doubling */
    return 9 + (top - 7) * 4 + quarter;
}

static uint32_t clamp(uint32_t v, uint32_t lo, uint32_t hi)
{
    return v < lo ? lo : v > hi ? hi : v;
}

/* A thread's cache of a class starts small (about 32 KiB of small blocks,
 * a few mid blocks) and doubles, up to cap_max, each time the class swings
 * from one end to the other (a refill after a flush or the reverse): the
 * sign that its capacity is smaller than the thread's working set of that
 * class. The per-thread budget (heap.c) keeps the sum in check. */
static uint16_t class_cap_base(uint32_t size)
{
    return (uint16_t)(size <= HAK_SMALL_MAX ? clamp(32768 / size, 8, 512) : clamp(131072 / size, 2, 16));
}

static uint16_t class_cap_max(uint32_t size)
{
    return (uint16_t)(size <= HAK_SMALL_MAX ? clamp(262144 / size, 32, 2048) : clamp(2097152 / size, 8, 256));
}

/* Units of a mid slab: the fewest that hold at least two blocks with at
 * most an eighth left over. Short runs of units are easy to find again
 * among a SuperSlab's free units, and a slab of few blocks empties (and
 * goes back) soon after its blocks are freed. */
static unsigned mid_span(uint32_t size)
{
    for (unsigned span = 1; span < HAK_UNITS; span++) {
        uint32_t bytes = (uint32_t)span << HAK_UNIT_SHIFT, n = bytes / size;
        if (n >= 2 && (bytes - n * size) * 8 <= bytes)
            return span;
    }
    return HAK_UNITS;
}

static uint32_t inverse_mod32(uint32_t odd)
{
    uint32_t x = odd; /* Newton: each step doubles the correct low bits */
    for (int i = 0; i < 5; i++)
        x *= 2 - odd * x;
    return x;
}

void hak_classes_init(void)
{
    for (unsigned c = 1; c < HAK_NCLASS; c++) {
        struct hak_class *k = &hak_classes[c];
        uint32_t size = class_size(c);
        unsigned shift = (unsigned)__builtin_ctz(size);
        unsigned span = size <= HAK_SMALL_MAX ? 1 : mid_span(size);
        k->size = size;
        k->shift = (uint8_t)shift;
        k->inv = inverse_mod32(size >> shift);
        k->span = (uint8_t)span;
        k->cap_base = class_cap_base(size);
        k->cap_max = class_cap_max(size);
        k->capacity = (uint32_t)(((size_t)span << HAK_UNIT_SHIFT) / size);
        if (k->capacity > HAK_HOT_CARVED_MAX) /* 16-byte blocks: one left out */
            k->capacity = HAK_HOT_CARVED_MAX;
    }
    /* Class 0 stays all zero: no capacity, no blocks. Atomic stores: other
     * threads' hak_malloc may read the tables meanwhile (alloc.c). */
    for (unsigned i = 0; i <= HAK_SMALL_MAX / 16; i++)
        __atomic_store_n(&hak_class_of16[i], (uint8_t)hak_size_class((size_t)i * 16), __ATOMIC_RELAXED);
    for (unsigned i = HAK_SMALL_MAX / 1024 + 1; i <= HAK_MID_MAX / 1024; i++)
        __atomic_store_n(&hak_class_of1k[i], (uint8_t)hak_size_class((size_t)i * 1024), __ATOMIC_RELAXED);
}
