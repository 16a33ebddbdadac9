/* The secure mode (HAKMEM_SECURE=1): the misuses it promises to catch are
 * caught, with a one-line report and an abort, and ordinary use (also across
 * threads) works. The program runs itself again with the variable set, so
 * the mode is on from the first allocation. */
#include <pthread.h>
#include <stdatomic.h>

#include "internal.h"
#include "hakmem.h"
#include "testutil.h"

static char err[512];

static void expect_abort(void (*fn)(void), const char *needle)
{
    if (!run_expect_abort(fn, err, sizeof err))
        fail_msg("no abort where \"%s\" was expected; stderr: %s", needle, err);
    if (!strstr(err, needle))
        fail_msg("expected \"%s\" in: %s", needle, err);
    assert_non_null(strstr(err, "0x"));
}

static void test_mode_is_on(void **state)
{
    (void)state;
    hak_free(hak_malloc(8));
    assert_true(hak_opt.secure == 1 && hak_link_key != 0);
    /* No thread cache: the fast paths are never taken. */
    assert_null(hak_tls.c[hak_size_class(8)].head);
    /* A block handed out shows nothing of the free-list encoding. */
    for (int i = 0; i < 100; i++) {
        uintptr_t *b = hak_malloc(48);
        assert_int_equal(b[0], 0);
        assert_int_equal(b[1], 0);
    }
}

static _Atomic(uintptr_t) shared[256];
static _Atomic uint64_t bad;

static void *worker(void *arg)
{
    struct rng r = {(uint64_t)(uintptr_t)arg};
    void *slots[512] = {0};
    size_t sizes[512] = {0};
    for (int i = 0; i < 200000; i++) {
        size_t k = rng_range(&r, 0, 511);
        if (slots[k]) {
            if (!pattern_check(slots[k], sizes[k]))
                atomic_fetch_add(&bad, 1);
            if (i & 3) {
                hak_free(slots[k]);
            } else {
                uintptr_t got = atomic_exchange(&shared[rng_range(&r, 0, 255)], (uintptr_t)slots[k]);
                hak_free((void *)got); /* another thread's block, or NULL */
            }
        }
        sizes[k] = rng_range(&r, 16, 3000);
        slots[k] = hak_malloc(sizes[k]);
        pattern_fill(slots[k], sizes[k]);
    }
    for (int k = 0; k < 512; k++)
        hak_free(slots[k]);
    return NULL;
}

static void test_ordinary_use_across_threads(void **state)
{
    (void)state;
    pthread_t th[4];
    for (uintptr_t t = 0; t < 4; t++)
        assert_int_equal(pthread_create(&th[t], NULL, worker, (void *)(t + 1)), 0);
    for (int t = 0; t < 4; t++)
        pthread_join(th[t], NULL);
    for (int i = 0; i < 256; i++)
        hak_free((void *)atomic_exchange(&shared[i], 0));
    assert_int_equal(atomic_load(&bad), 0);
}

static void double_free_later(void)
{
    void *a = hak_malloc(40), *b = hak_malloc(40), *c = hak_malloc(40);
    void *keep = hak_malloc(40); /* keeps the slab live */
    (void)keep;
    hak_free(a);
    hak_free(b);
    hak_free(c);
    hak_free(a); /* not the last block freed */
}

static void *free_twice(void *p)
{
    hak_free(p);
    hak_free(p);
    return NULL;
}

static void double_free_remote(void)
{
    void *p = hak_malloc(200);
    void *keep = hak_malloc(200);
    (void)keep;
    pthread_t t;
    pthread_create(&t, NULL, free_twice, p);
    pthread_join(t, NULL);
}

/* These use the 7 KiB class, which nothing else in this program uses, so
 * its first slab is fresh and blocks are carved one after the other. */
#define ODD 7168
static void overflow_into_next_link(void)
{
    /* The second of two neighbours is freed; one byte written past the end
     * of the first lands in the second's link. */
    char *a = hak_malloc(ODD), *b = hak_malloc(ODD);
    if (b != a + ODD)
        _exit(3); /* the layout this test relies on */
    hak_free(b);
    a[ODD] ^= 0x5a;
    void *again = hak_malloc(ODD); /* b comes back: its link is checked */
    fprintf(stderr, "a=%p b=%p again=%p\n", (void *)a, (void *)b, again);
    _exit(4);
}

static void use_after_free_write(void)
{
    char *p = hak_malloc(ODD), *q = hak_malloc(ODD), *keep = hak_malloc(ODD);
    (void)keep;
    hak_free(q);
    hak_free(p);
    memset(p, 0x41, 8); /* the freed block's link */
    void *x = hak_malloc(ODD);
    (void)x;
    _exit(4);
}

static void free_interior(void)
{
    char *p = hak_malloc(64);
    hak_free(p + 16);
}

static void test_misuse_is_caught(void **state)
{
    (void)state;
    expect_abort(double_free_later, "double free");
    expect_abort(double_free_remote, "double free");
    expect_abort(overflow_into_next_link, "free list corrupted");
    expect_abort(use_after_free_write, "free list corrupted");
    expect_abort(free_interior, "not the start of a block");
}

int main(int argc, char **argv)
{
    (void)argc;
    if (!getenv("HAKMEM_SECURE")) {
        setenv("HAKMEM_SECURE", "1", 1);
        execv("/proc/self/exe", argv);
        return 1;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_mode_is_on),
        cmocka_unit_test(test_ordinary_use_across_threads),
        cmocka_unit_test(test_misuse_is_caught),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
