/* The allocation API and its edge cases, through the hak_* names. */
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <sys/mman.h>

#include "internal.h"
#include "hakmem.h"
#include "testutil.h"

static void test_malloc_zero_and_alignment(void **state)
{
    (void)state;
    void *a = hak_malloc(0), *b = hak_malloc(0);
    assert_non_null(a);
    assert_non_null(b);
    assert_ptr_not_equal(a, b);
    hak_free(a);
    hak_free(b);
    hak_free(NULL); /* no-op */
    size_t sizes[] = {1, 15, 16, 17, 100, 1000, 5000, 8192, 8193, 70000, 262144, 262145, 3 << 20};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        char *p = hak_malloc(sizes[i]);
        assert_non_null(p);
        assert_int_equal((uintptr_t)p % 16, 0);
        assert_true(hak_usable_size(p) >= sizes[i]);
        memset(p, 0xC3, sizes[i]);
        hak_free(p);
    }
}

static void test_malloc_huge_fails_with_enomem(void **state)
{
    (void)state;
    errno = 0;
    assert_null(hak_malloc(SIZE_MAX));
    assert_int_equal(errno, ENOMEM);
    errno = 0;
    assert_null(hak_malloc((size_t)1 << 62));
    assert_int_equal(errno, ENOMEM);
}

static void test_calloc_zeroes_and_checks_overflow(void **state)
{
    (void)state;
    /* Dirty a block, free it, and get it back through calloc. */
    for (int round = 0; round < 2; round++) {
        size_t sizes[] = {24, 4000, 100000, 1 << 20};
        for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
            char *d = hak_malloc(sizes[i]);
            memset(d, 0xFF, sizes[i]);
            hak_free(d);
            unsigned char *z = hak_calloc(1, sizes[i]);
            assert_non_null(z);
            for (size_t j = 0; j < sizes[i]; j++)
                if (z[j])
                    fail_msg("calloc(%zu) byte %zu is %d", sizes[i], j, z[j]);
            hak_free(z);
        }
    }
    errno = 0;
    assert_null(hak_calloc(SIZE_MAX / 2, 3));
    assert_int_equal(errno, ENOMEM);
    errno = 0;
    assert_null(hak_calloc((size_t)1 << 32, (size_t)1 << 32));
    assert_int_equal(errno, ENOMEM);
}

static void test_realloc_keeps_contents(void **state)
{
    (void)state;
    size_t size = 1;
    unsigned char *p = hak_malloc(size);
    p[0] = 0;
    while (size < (4u << 20)) {
        size_t next = size * 3 / 2 + 7;
        unsigned char *q = hak_realloc(p, next);
        assert_non_null(q);
        for (size_t i = 0; i < size; i++)
            if (q[i] != (unsigned char)i)
                fail_msg("byte %zu lost growing %zu -> %zu", i, size, next);
        for (size_t i = size; i < next; i++)
            q[i] = (unsigned char)i;
        p = q;
        size = next;
    }
    while (size > 1) { /* and shrinking */
        size_t next = size / 3;
        unsigned char *q = hak_realloc(p, next);
        assert_non_null(q);
        for (size_t i = 0; i < next; i++)
            if (q[i] != (unsigned char)i)
                fail_msg("byte %zu lost shrinking to %zu", i, next);
        p = q;
        size = next;
    }
    hak_free(p);
}

static void test_realloc_in_place_within_class(void **state)
{
    (void)state;
    char *p = hak_malloc(100); /* 112 B class */
    assert_ptr_equal(hak_realloc(p, 112), p);
    assert_ptr_equal(hak_realloc(p, 60), p);
    char *q = hak_realloc(p, 113);
    assert_ptr_not_equal(q, p);
    hak_free(q);
    assert_non_null(p = hak_realloc(NULL, 10));
    assert_null(hak_realloc(p, 0)); /* frees, like glibc */
}

static void test_failed_realloc_leaves_block_intact(void **state)
{
    (void)state;
    char *p = hak_malloc(64);
    memset(p, 0x42, 64);
    errno = 0;
    assert_null(hak_realloc(p, SIZE_MAX - 4096));
    assert_int_equal(errno, ENOMEM);
    for (int i = 0; i < 64; i++)
        assert_int_equal(p[i], 0x42);
    errno = 0;
    assert_null(hak_reallocarray(p, SIZE_MAX / 8, 16));
    assert_int_equal(errno, ENOMEM);
    assert_int_equal(p[63], 0x42);
    char *q = hak_reallocarray(p, 10, 20);
    assert_non_null(q);
    assert_int_equal(q[63], 0x42);
    hak_free(q);
}

static void test_aligned_allocation(void **state)
{
    (void)state;
    void *p = NULL;
    assert_int_equal(hak_posix_memalign(&p, 3, 10), EINVAL);
    assert_int_equal(hak_posix_memalign(&p, 4, 10), EINVAL); /* not a multiple of sizeof(void*) */
    assert_int_equal(hak_posix_memalign(&p, 24, 10), EINVAL);
    assert_null(p);
    errno = 0;
    assert_null(hak_aligned_alloc(48, 96));
    assert_int_equal(errno, EINVAL);
    for (size_t align = 8; align <= ((size_t)4 << 20); align *= 2) {
        size_t sizes[] = {1, align / 2 + 1, align, align * 3, 300000};
        for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
            assert_int_equal(hak_posix_memalign(&p, align, sizes[i]), 0);
            assert_int_equal((uintptr_t)p % align, 0);
            assert_true(hak_usable_size(p) >= sizes[i]);
            memset(p, 1, sizes[i]);
            hak_free(p);
            void *q = hak_aligned_alloc(align, sizes[i]);
            assert_non_null(q);
            assert_int_equal((uintptr_t)q % align, 0);
            hak_free(q);
        }
    }
    errno = 0;
    assert_int_equal(hak_posix_memalign(&p, 64, SIZE_MAX - 10), ENOMEM);
}

static void test_sized_frees(void **state)
{
    (void)state;
    void *p = hak_malloc(200);
    hak_free_sized(p, 200);
    assert_int_equal(hak_posix_memalign(&p, 256, 1000), 0);
    hak_free_aligned_sized(p, 256, 1000);
}

static void test_large_blocks_are_cached_and_trimmed(void **state)
{
    (void)state;
    /* From an empty cache, and no decay during the loop however slowly it
     * runs (a sanitizer, a busy machine). */
    uint64_t decay = hak_opt.decay_ms;
    hak_opt.decay_ms = 600000;
    hak_trim(0);
    uint64_t mmaps = hak_os_calls(HAK_OS_MMAP), munmaps = hak_os_calls(HAK_OS_MUNMAP);
    for (int i = 0; i < 1000; i++) {
        char *p = hak_malloc(1 << 20);
        assert_non_null(p);
        p[0] = p[(1 << 20) - 1] = 1;
        hak_free(p);
    }
    /* One mapping, reused 1000 times. */
    assert_true(hak_os_calls(HAK_OS_MMAP) - mmaps <= 2);
    assert_true(hak_os_calls(HAK_OS_MUNMAP) - munmaps <= 2);
    uint64_t live, cached, blocks;
    hak_large_stats(&live, &cached, &blocks);
    assert_true(cached >= (1 << 20));
    hak_trim(0);
    hak_large_stats(&live, &cached, &blocks);
    assert_int_equal(cached, 0);
    hak_opt.decay_ms = decay;
}

static void test_large_realloc_failure_keeps_the_block(void **state)
{
    (void)state;
    /* The kernel may move the pages, then recording the new address may
     * need a bigger registry: if that fails, realloc must fail cleanly
     * before anything moved. Each realloc here runs with its second mapping
     * call failing; across 300 moves the registry is rebuilt several times. */
    static unsigned char *blocks[300];
    for (int i = 0; i < 300; i++) {
        blocks[i] = hak_malloc(300000);
        memset(blocks[i], i & 0xff, 300000);
    }
    unsigned failed = 0;
    for (int i = 0; i < 300; i++) {
        hak_os_inject(HAK_OS_MMAP, 1, 1); /* the second mapping call fails */
        unsigned char *q = hak_realloc(blocks[i], 1200000);
        hak_os_inject(HAK_OS_MMAP, 0, 0);
        if (!q) {
            failed++;
            q = blocks[i]; /* still ours, still intact */
            assert_int_equal(hak_usable_size(q) >= 300000, 1);
        }
        assert_int_equal(q[0], i & 0xff);
        assert_int_equal(q[299999], i & 0xff);
        blocks[i] = q;
    }
    for (int i = 0; i < 300; i++)
        hak_free(blocks[i]);
    print_message("%u of 300 reallocs failed cleanly under an injected mapping failure\n", failed);
}

/* ---- misuse is reported and aborts ---- */

static char err[512];

static void free_stack_pointer(void)
{
    int x;
    hak_free(&x);
}
static void free_interior_pointer(void)
{
    char *p = hak_malloc(64);
    hak_free(p + 16);
}
static void free_misaligned_pointer(void)
{
    char *p = hak_malloc(64);
    hak_free(p + 1);
}
static void free_foreign_pointer(void)
{
    void *p = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    hak_free(p);
}
static void double_free(void)
{
    void *p = hak_malloc(32);
    hak_free(p);
    hak_free(p);
}
static void double_free_after_flush(void)
{
    void *p[2000];
    for (int i = 0; i < 2000; i++)
        p[i] = hak_malloc(32);
    for (int i = 0; i < 2000; i++)
        hak_free(p[i]);
    for (int i = 0; i < 2000; i++)
        hak_free(p[i]);
}
static void *free_in_thread(void *p)
{
    hak_free(p);
    return NULL;
}
/* fn(p) in a thread of its own, to its end. */
static void run_in_thread(void *(*fn)(void *), void *p)
{
    pthread_t th;
    pthread_create(&th, NULL, fn, p);
    pthread_join(th, NULL);
}
/* A block freed twice is caught when it would be handed out a second
 * time: malloc of its size until then (the bound is never reached). */
static void hand_out_all(size_t size)
{
    for (int i = 0; i < 100000; i++)
        if (!hak_malloc(size))
            _exit(4);
    _exit(5);
}
static void double_free_later(void)
{
    void *a = hak_malloc(32), *b = hak_malloc(32);
    hak_free(a);
    hak_free(b); /* a is no longer at the top of the cache */
    hak_free(a);
    hand_out_all(32);
}
static void *free_twice_in_thread(void *p)
{
    hak_free(p);
    hak_free(p);
    return NULL;
}
static void double_free_by_another_thread(void)
{
    run_in_thread(free_twice_in_thread, hak_malloc(48));
}
static void free_in_owner_then_thread(void)
{
    void *p = hak_malloc(48);
    hak_free(p);
    run_in_thread(free_in_thread, p);
    hand_out_all(48);
}
static void free_in_thread_then_owner(void)
{
    void *p = hak_malloc(48);
    run_in_thread(free_in_thread, p); /* sent home at the thread's exit */
    hak_free(p);
    hand_out_all(48);
}
/* A free of a real block's neighbour that is free but not at the top of
 * the cache: a live block a, its neighbour freed first, then others. */
static void free_free_neighbour(size_t size)
{
    char *b[64];
    for (int i = 0; i < 64; i++)
        b[i] = hak_malloc(size);
    size_t step = hak_usable_size(b[0]);
    for (int i = 0; i < 64; i++)
        for (int j = 0; j < 64; j++)
            if (b[j] == b[i] + step) {
                hak_free(b[j]);
                for (int k = 0; k < 64; k++)
                    if (k != i && k != j)
                        hak_free(b[k]);
                hak_free(b[i] + step);
                hand_out_all(size);
            }
    _exit(3); /* no two neighbours: nothing to try (reported by the status) */
}
static void free_free_neighbour_8(void)
{
    free_free_neighbour(8);
}
static void free_free_neighbour_4k(void)
{
    free_free_neighbour(4096);
}
static void realloc_after_free(void)
{
    void *p = hak_malloc(100), *q = hak_malloc(100);
    hak_free(p);
    hak_free(q);
    hak_realloc(p, 50);
}
static void write_after_free(void)
{
    char *p = hak_malloc(64);
    hak_free(p);
    memset(p, 0, 16);
    hand_out_all(64);
}
static void usable_size_after_free(void)
{
    void *p = hak_malloc(100), *q = hak_malloc(100);
    hak_free(p);
    hak_free(q);
    hak_usable_size(p);
}
static void free_never_allocated_slab_pointer(void)
{
    /* A unit of the block's SuperSlab that holds no slab: which one depends
     * on what earlier tests left there, so the SuperSlab's books say. */
    char *p = hak_malloc(64);
    uint32_t idx = hak_ss_of(p);
    unsigned unit = 0;
    while (unit < HAK_UNITS && !(hak_cold(idx)->free_units >> unit & 1))
        unit++;
    if (unit == HAK_UNITS)
        _exit(3); /* every unit in use: nothing to try (reported by the status) */
    hak_free((char *)hak_ss_addr(idx) + ((size_t)unit << HAK_UNIT_SHIFT) + 64);
}
/* The block after the last one carved from a slab: never handed out. A
 * free of it (the neighbour of a real block, p + 4096 of a 4 KiB block
 * say) would put a block in the cache that carving hands out again. */
static void *past_carved(size_t size)
{
    char *p = hak_malloc(size);
    struct hak_slab *s = hak_slab_of(p);
    const struct hak_class *k = &hak_classes[s->cls];
    if (s->carved == k->capacity)
        _exit(3); /* every block carved: nothing to try (reported by the status) */
    return (char *)hak_slab_base(s) + (size_t)s->carved * k->size;
}
static void free_past_carved(void)
{
    hak_free(past_carved(4096));
}
static void free_past_carved_remote(void)
{
    run_in_thread(free_in_thread, past_carved(8));
}
static void usable_size_past_carved(void)
{
    hak_usable_size(past_carved(64));
}
static void usable_size_of_interior(void)
{
    char *p = hak_malloc(1000);
    hak_usable_size(p + 16);
}
static void realloc_foreign(void)
{
    int x;
    hak_realloc(&x, 100);
}
static void free_one(void)
{
    /* Deleted slots of the large-block registry must not match it. */
    void *p[64];
    for (int i = 0; i < 64; i++)
        p[i] = hak_malloc(300000 + (size_t)i * 4096);
    for (int i = 0; i < 64; i++)
        hak_free(p[i]);
    hak_free((void *)1);
}
static void free_large_interior(void)
{
    char *p = hak_malloc(1 << 20);
    hak_free(p + 4096);
}

static void expect_abort_by(void (*fn)(void), const char *name, const char *needle)
{
    if (!run_expect_abort(fn, err, sizeof err))
        fail_msg("%s: no abort (expected \"%s\"): %s", name, needle, err);
    if (!strstr(err, needle))
        fail_msg("%s: expected \"%s\" in: %s", name, needle, err);
    assert_non_null(strstr(err, "hakmem: "));
    assert_non_null(strstr(err, "0x")); /* names the address */
}

#define expect_abort(fn, needle) expect_abort_by(fn, #fn, needle)

static void test_invalid_pointers_are_reported(void **state)
{
    (void)state;
    expect_abort(free_stack_pointer, "free(0x");
    expect_abort(free_stack_pointer, "not allocated by hakmem");
    expect_abort(free_interior_pointer, "not the start of a block");
    expect_abort(free_misaligned_pointer, "not the start of a block");
    expect_abort(free_foreign_pointer, "not allocated by hakmem");
    expect_abort(free_never_allocated_slab_pointer, "not an allocated block");
    expect_abort(free_past_carved, "not an allocated block (never handed out)");
    expect_abort(free_past_carved_remote, "not an allocated block (never handed out)");
    expect_abort(usable_size_past_carved, "malloc_usable_size(0x");
    expect_abort(free_large_interior, "not allocated by hakmem");
    expect_abort(free_one, "not allocated by hakmem");
    expect_abort(usable_size_of_interior, "malloc_usable_size(0x");
    expect_abort(realloc_foreign, "not allocated by hakmem");
}

static void test_double_frees_are_reported(void **state)
{
    (void)state;
    expect_abort(double_free, "double free");
    expect_abort(double_free_after_flush, "double free");
    expect_abort(double_free_later, "malloc(0x");
    expect_abort(double_free_later, "double free");
    expect_abort(double_free_by_another_thread, "double free");
    expect_abort(free_in_owner_then_thread, "double free");
    expect_abort(free_in_thread_then_owner, "double free");
    expect_abort(free_free_neighbour_8, "double free");
    expect_abort(free_free_neighbour_4k, "double free");
    expect_abort(write_after_free, "double free, or a write after free");
    expect_abort(usable_size_after_free, "malloc_usable_size(0x");
    expect_abort(usable_size_after_free, "a freed block");
    expect_abort(realloc_after_free, "realloc(0x");
    expect_abort(realloc_after_free, "a freed block");
}

int main(void)
{
    hak_free(hak_malloc(1));
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_malloc_zero_and_alignment),
        cmocka_unit_test(test_malloc_huge_fails_with_enomem),
        cmocka_unit_test(test_calloc_zeroes_and_checks_overflow),
        cmocka_unit_test(test_realloc_keeps_contents),
        cmocka_unit_test(test_realloc_in_place_within_class),
        cmocka_unit_test(test_failed_realloc_leaves_block_intact),
        cmocka_unit_test(test_aligned_allocation),
        cmocka_unit_test(test_sized_frees),
        cmocka_unit_test(test_large_blocks_are_cached_and_trimmed),
        cmocka_unit_test(test_large_realloc_failure_keeps_the_block),
        cmocka_unit_test(test_invalid_pointers_are_reported),
        cmocka_unit_test(test_double_frees_are_reported),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
