/* The standard names: every entry point a C program (or C++ through its
 * operators) reaches is hakmem's, with glibc-compatible edge cases. This
 * program links the archive, so its own calls and the C library's internal
 * ones all land in hakmem. */
#include <errno.h>
#include <malloc.h>
#include <stdint.h>
#include <stdlib.h>

#include "internal.h"
#include "hakmem.h"
#include "testutil.h"

void free_sized(void *p, size_t size);
void free_aligned_sized(void *p, size_t alignment, size_t size);

/* Sizes the compiler cannot see through, so that overflow cases compile. */
static volatile size_t big_count = SIZE_MAX / 4, huge_count = SIZE_MAX / 2;

static bool ours(void *p)
{
    return hak_in_arena(p) || hak_large_usable(p) != 0;
}

static void test_standard_names_are_hakmem(void **state)
{
    (void)state;
    void *p = malloc(100);
    assert_true(hak_in_arena(p));
    assert_int_equal(malloc_usable_size(p), 112);
    p = realloc(p, 5000);
    assert_true(hak_in_arena(p));
    free(p);
    int *z = calloc(100, sizeof(int));
    assert_true(ours(z));
    for (int i = 0; i < 100; i++)
        assert_int_equal(z[i], 0);
    free(z);
    void *big = malloc(10 << 20);
    assert_true(ours(big));
    assert_true(malloc_usable_size(big) >= (10u << 20));
    free(big);
    /* The C library's own allocations come to us too. */
    char *dup = strdup("hakmem");
    assert_true(ours(dup));
    free(dup);
}

static void test_alignment_family(void **state)
{
    (void)state;
    void *p = NULL;
    assert_int_equal(posix_memalign(&p, 4096, 100), 0);
    assert_true(ours(p) && (uintptr_t)p % 4096 == 0);
    free(p);
    assert_int_equal(posix_memalign(&p, 12, 100), EINVAL);
    p = aligned_alloc(64, 128);
    assert_true(ours(p) && (uintptr_t)p % 64 == 0);
    free(p);
    p = memalign(0, 100); /* any alignment is accepted */
    assert_true(ours(p) && (uintptr_t)p % 16 == 0);
    free(p);
    p = memalign(48, 100); /* glibc rounds odd alignments up */
    assert_true(ours(p) && (uintptr_t)p % 64 == 0);
    free(p);
    long page = sysconf(_SC_PAGESIZE);
    p = valloc(10);
    assert_true(ours(p) && (uintptr_t)p % (uintptr_t)page == 0);
    free(p);
    p = pvalloc(10);
    assert_true(ours(p) && (uintptr_t)p % (uintptr_t)page == 0);
    assert_true(malloc_usable_size(p) >= (size_t)page);
    free(p);
    p = memalign((size_t)4 << 20, 1000);
    assert_true(ours(p) && (uintptr_t)p % (4u << 20) == 0);
    free(p);
}

/* GCC assumes a pointer passed to reallocarray is dead; a failed call
 * leaves it alive, which is what this test checks. */
#pragma GCC diagnostic ignored "-Wuse-after-free"

static void test_array_and_sized_calls(void **state)
{
    (void)state;
    errno = 0;
    assert_null(calloc(big_count, 8));
    assert_int_equal(errno, ENOMEM);
    char *a = reallocarray(NULL, 10, 10);
    assert_non_null(a);
    errno = 0;
    char *again = reallocarray(a, huge_count, 4);
    assert_null(again);
    assert_int_equal(errno, ENOMEM);
    again = reallocarray(a, 10, 10); /* a is intact after the failure */
    assert_true(ours(again));
    free_sized(again, 100);
    void *b = NULL;
    assert_int_equal(posix_memalign(&b, 128, 300), 0);
    free_aligned_sized(b, 128, 300);
    free(NULL);
    free_sized(NULL, 0);
}

static void test_introspection_calls(void **state)
{
    (void)state;
    char *volatile keep = malloc(1 << 20);
    keep[0] = 1;
    struct mallinfo2 mi = mallinfo2();
    assert_true(mi.uordblks >= (1u << 20));
    assert_true(mi.arena >= mi.uordblks);
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
    struct mallinfo old = mallinfo();
#pragma GCC diagnostic pop
    assert_true(old.uordblks > 0);
    assert_int_equal(mallopt(M_ARENA_MAX, 1), 1); /* accepted, ignored */
    free(keep);
    assert_int_equal(malloc_trim(0), 1); /* the cached 1 MiB mapping went back */
    assert_int_equal(malloc_trim(0), 0); /* nothing left to give */
    FILE *devnull = fopen("/dev/null", "w");
    assert_int_equal(malloc_info(0, devnull), 0);
    fclose(devnull);
}

static void stats_to_stderr(void)
{
    free(malloc(10));
    malloc_stats();
    exit(0);
}

static void test_malloc_stats_prints_summary(void **state)
{
    (void)state;
    char out[8192];
    run_expect_abort(stats_to_stderr, out, sizeof out);
    assert_non_null(strstr(out, "hakmem: superslabs pagerd="));
    assert_non_null(strstr(out, "peak RSS"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_standard_names_are_hakmem),
        cmocka_unit_test(test_alignment_family),
        cmocka_unit_test(test_array_and_sized_calls),
        cmocka_unit_test(test_introspection_calls),
        cmocka_unit_test(test_malloc_stats_prints_summary),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
