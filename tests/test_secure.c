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

/* fn, run in a child, dies of sig with needle and an address on stderr. */
static void expect_signal(void (*fn)(void), int sig, const char *needle)
{
    if (!run_expect_signal(fn, sig, err, sizeof err))
        fail_msg("no %s where \"%s\" was expected; stderr: %s", strsignal(sig), needle, err);
    if (!strstr(err, needle))
        fail_msg("expected \"%s\" in: %s", needle, err);
    assert_non_null(strstr(err, "0x"));
}

static void expect_abort(void (*fn)(void), const char *needle)
{
    expect_signal(fn, SIGABRT, needle);
}

static void test_mode_is_on(void **state)
{
    (void)state;
    hak_free(hak_malloc(8));
    assert_true(hak_opt.secure == 1 && hak_link_key != 0);
    /* No thread cache: the fast paths are never taken. */
    assert_null(hak_tls.c[hak_size_class(8)].head);
    /* A block handed out shows nothing of the free-list encoding: fresh
     * memory or the pattern of a freed block, after a header that holds
     * the size asked for. */
    for (int i = 0; i < 100; i++) {
        uintptr_t *b = hak_malloc(48);
        assert_int_equal(b[-2], 48);
        for (int w = 0; w < 6; w++)
            assert_true(b[w] == 0 || b[w] == 0xdfdfdfdfdfdfdfdfull);
    }
    /* What is usable is what was asked for: the bytes after it are the
     * canary's; aligned blocks stay aligned (a header would misalign a
     * slab block: they are large blocks). */
    for (size_t n = 1; n < 70000; n = n * 3 + 1) {
        char *p = hak_malloc(n);
        assert_int_equal(hak_usable_size(p), n);
        memset(p, 0x77, n);
        p = hak_realloc(p, n + 100);
        assert_true(hak_usable_size(p) >= n + 100);
        for (size_t i = 0; i < n; i++)
            assert_int_equal((unsigned char)p[i], 0x77);
        hak_free(p);
    }
    void *a = NULL;
    assert_int_equal(hak_posix_memalign(&a, 64, 100), 0);
    assert_int_equal((uintptr_t)a % 64, 0);
    memset(a, 1, 100);
    hak_free(a);
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

/* Overflows and underflows, reported at free by the block's canaries. */
static char sink[64];

static void overflow_1_small(void)
{
    char *p = hak_malloc(8);
    p[8] ^= 1; /* a store of 1 would match the canary's byte 1 run in 128 */
    hak_free(p);
}

static void overflow_32_memcpy_4k(void)
{
    char *p = hak_malloc(4096);
    char *src = hak_malloc(4096 + 32);
    memset(src, 'x', 4096 + 32);
    memcpy(p, src, 4096 + 32);
    hak_free(p);
}

static void overflow_32_memcpy_small(void)
{
    char *p = hak_malloc(8);
    memcpy(p, sink, 40);
    hak_free(p);
}

static void underflow_1_small(void)
{
    char *p = hak_malloc(8);
    p[-1] ^= 1;
    hak_free(p);
}

static void underflow_32_memcpy_4k(void)
{
    char *p = hak_malloc(4096);
    memcpy(p - 32, sink, 32);
    hak_free(p);
}

/* Writes after free, reported when the block is handed out again. */
static void write_after_free_small(void)
{
    char *p = hak_malloc(24), *keep = hak_malloc(24);
    (void)keep;
    hak_free(p);
    p[10] = 'w';
    void *again = hak_malloc(24); /* p's block comes back */
    fprintf(stderr, "p=%p again=%p\n", (void *)p, again);
    _exit(4);
}

static void zeroing_after_free_mid(void)
{
    size_t n = 128 * 1024;
    char *p = hak_malloc(n), *keep = hak_malloc(n);
    (void)keep;
    hak_free(p);
    memset(p, 0, n);
    void *again = hak_malloc(n);
    fprintf(stderr, "p=%p again=%p\n", (void *)p, again);
    _exit(4);
}

static void use_after_free_write(void)
{
    char *p = hak_malloc(100), *q = hak_malloc(100), *keep = hak_malloc(100);
    (void)keep;
    hak_free(q);
    hak_free(p);
    memset(p - HAK_SECURE_HDR, 0x41, 8); /* the freed block's link */
    void *x = hak_malloc(100);
    void *y = hak_malloc(100);
    fprintf(stderr, "x=%p y=%p\n", x, y);
    _exit(4);
}

/* A megabyte past either end of a block runs into a guard: the fault is
 * reported, then the default action (SIGSEGV) ends the program. */
#define MIB (1u << 20)

/* The compiler may drop stores to a block nobody reads (malloc's
 * attribute tells it no one else can see it): this one is seen. */
static void escape(void *p)
{
    __asm__ volatile("" : : "r"(p) : "memory");
}

static void overflow_1mib_small(void)
{
    char *p = hak_malloc(8);
    memset(p, 'o', MIB + 8);
    escape(p);
}

static void underflow_1mib_4k(void)
{
    char *p = hak_malloc(4096);
    memset(p - MIB, 'u', MIB);
    escape(p);
}

static void overflow_1mib_large(void)
{
    char *p = hak_malloc(MIB);
    memset(p, 'o', 2 * MIB);
    escape(p);
}

static void underflow_1mib_large(void)
{
    char *p = hak_malloc(300 * 1024);
    memset(p - MIB, 'u', MIB);
    escape(p);
}

static void write_after_free_large(void)
{
    char *p = hak_malloc(256 * 1024); /* a large block here: the canaries make it one */
    hak_free(p);
    p[1000] = 'w';
    escape(p);
}

/* cmocka catches SIGSEGV in its tests; the child runs as a program
 * would, with the allocator's report in place of cmocka's. */
static void (*faulting)(void);

static void as_a_program(void)
{
    signal(SIGSEGV, SIG_DFL);
    signal(SIGBUS, SIG_DFL);
    hak_crash_init();
    faulting();
}

static void expect_fault(void (*fn)(void), const char *needle)
{
    faulting = fn;
    expect_signal(as_a_program, SIGSEGV, needle);
    assert_non_null(strstr(err, "hakmem: SIGSEGV at 0x"));
}

static void test_guards_fault_and_are_reported(void **state)
{
    (void)state;
    expect_fault(overflow_1mib_small, "heap overflow or underflow into a guard range between SuperSlabs; nearest "
                                      "blocks: below 0x");
    expect_fault(underflow_1mib_4k, "heap overflow or underflow into a guard range between SuperSlabs");
    assert_non_null(strstr(err, "above 0x"));
    expect_fault(overflow_1mib_large, "heap overflow of the large block 0x");
    assert_non_null(strstr(err, " (1048576 bytes)"));
    expect_fault(underflow_1mib_large, "heap underflow of the large block");
    expect_fault(write_after_free_large, "use after free of the large block");
}

static void free_interior(void)
{
    char *p = hak_malloc(64);
    hak_free(p + 16);
}

/* Frees of addresses near a real block: the next one's start, the
 * header before it. */
static void free_near_small(void)
{
    char *p = hak_malloc(8), *q = hak_malloc(8);
    (void)q;
    hak_free(p + 16);
}

static void free_near_4k(void)
{
    char *p = hak_malloc(4096);
    hak_free(p - 16);
}

static void test_misuse_is_caught(void **state)
{
    (void)state;
    expect_abort(double_free_later, "double free");
    expect_abort(double_free_remote, "double free");
    expect_abort(use_after_free_write, "free list corrupted");
    expect_abort(free_interior, "not the start of a block");
    expect_abort(overflow_1_small, "heap overflow");
    assert_non_null(strstr(err, "free(0x"));
    assert_non_null(strstr(err, "(block of 8 bytes)"));
    expect_abort(overflow_32_memcpy_small, "heap overflow");
    expect_abort(overflow_32_memcpy_4k, "heap overflow");
    assert_non_null(strstr(err, "(block of 4096 bytes)"));
    expect_abort(underflow_1_small, "heap underflow");
    expect_abort(underflow_32_memcpy_4k, "heap underflow");
    expect_abort(write_after_free_small, "write after free");
    assert_non_null(strstr(err, "malloc(0x"));
    expect_abort(zeroing_after_free_mid, "write after free");
    expect_abort(free_near_small, "not the start of a block");
    expect_abort(free_near_4k, "not the start of a block");
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
        cmocka_unit_test(test_guards_fault_and_are_reported),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
