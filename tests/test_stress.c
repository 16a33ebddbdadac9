/* Multi-threaded stress: threads allocate random sizes across every small
 * class, check and free their own blocks, and trade blocks through a shared
 * exchange so that about half of all frees happen on a thread other than
 * the allocating one. Every block carries a pattern derived from its address
 * and size, checked at free; any mismatch fails the test. */
#include <pthread.h>
#include <stdatomic.h>

#include "internal.h"
#include "hakmem.h"
#include "testutil.h"

#define THREADS 4
#define OPS_PER_THREAD 3000000 /* 12 million operations in all */
#define SLOTS 2048
#define EXCHANGE 4096

static _Atomic(uintptr_t) exchange_slots[EXCHANGE];
static _Atomic uint64_t mismatches, remote_frees, total_ops;

/* Sizes of at least 8 bytes: the first word holds the size. */
static size_t random_small_size(struct rng *r)
{
    unsigned cls = (unsigned)rng_range(r, 1, 32);
    size_t hi = hak_classes[cls].size, lo = cls == 1 ? 8 : hak_classes[cls - 1].size + 1;
    return rng_range(r, lo, hi);
}

static void *make_block(size_t size)
{
    unsigned char *p = hak_malloc(size);
    if (!p)
        return NULL;
    *(uint64_t *)p = size;
    pattern_fill(p + 8, size - 8);
    return p;
}

static void check_and_free(unsigned char *p)
{
    size_t size = *(uint64_t *)p;
    if (size < 8 || size > (4u << 20) || !pattern_check(p + 8, size - 8))
        atomic_fetch_add(&mismatches, 1);
    hak_free(p);
}

/* Mixed sizes: small, mid (8-256 KiB) and large (256 KiB-2 MiB). */
static size_t random_any_size(struct rng *r)
{
    unsigned pick = (unsigned)rng_range(r, 0, 99);
    if (pick < 60)
        return random_small_size(r);
    if (pick < 97)
        return rng_range(r, HAK_SMALL_MAX + 1, HAK_MID_MAX);
    return rng_range(r, HAK_MID_MAX + 1, 2u << 20);
}

/* Resize a block: the bytes that survive must be the old pattern, which
 * depends on the old address and size. */
static unsigned char *check_and_realloc(unsigned char *p, size_t new_size)
{
    size_t old_size = *(uint64_t *)p;
    uintptr_t old_addr = (uintptr_t)(p + 8);
    size_t words = (old_size - 8) / 8, keep = (new_size - 8) / 8;
    if (words > 32)
        words = 32; /* the head words the pattern wrote */
    unsigned char *q = hak_realloc(p, new_size);
    if (!q)
        return NULL;
    const uint64_t *w = (const uint64_t *)(q + 8);
    for (size_t i = 0; i < words && i < keep; i++)
        if (w[i] != pattern_word((void *)old_addr, old_size - 8, i))
            atomic_fetch_add(&mismatches, 1);
    *(uint64_t *)q = new_size;
    pattern_fill(q + 8, new_size - 8);
    return q;
}

#define MIXED_OPS_PER_THREAD 400000

static void *mixed_worker(void *arg)
{
    struct rng r = {(uint64_t)(uintptr_t)arg * 104729 + 3};
    unsigned char *slots[512] = {0};
    uint64_t ops = 0, remote = 0;
    while (ops < MIXED_OPS_PER_THREAD) {
        size_t i = rng_range(&r, 0, 511);
        unsigned what = (unsigned)rng_range(&r, 0, 9);
        if (slots[i] && what < 3) {
            unsigned char *q = check_and_realloc(slots[i], random_any_size(&r));
            CHECK(q != NULL);
            slots[i] = q;
            ops++;
            continue;
        }
        if (slots[i]) {
            if (what & 1) {
                check_and_free(slots[i]);
            } else {
                size_t j = rng_range(&r, 0, EXCHANGE - 1);
                uintptr_t got = atomic_exchange(&exchange_slots[j], (uintptr_t)slots[i]);
                if (got) {
                    check_and_free((unsigned char *)got);
                    remote++;
                }
            }
            slots[i] = NULL;
            ops++;
        }
        slots[i] = make_block(random_any_size(&r));
        CHECK(slots[i] != NULL);
        ops++;
    }
    for (size_t i = 0; i < 512; i++)
        if (slots[i])
            check_and_free(slots[i]);
    atomic_fetch_add(&remote_frees, remote);
    atomic_fetch_add(&total_ops, ops);
    return NULL;
}

static void test_stress_mixed_sizes_and_realloc(void **state)
{
    (void)state;
    pthread_t th[THREADS];
    atomic_store(&total_ops, 0);
    atomic_store(&remote_frees, 0);
    for (uintptr_t t = 0; t < THREADS; t++)
        assert_int_equal(pthread_create(&th[t], NULL, mixed_worker, (void *)(t + 1)), 0);
    for (int t = 0; t < THREADS; t++)
        pthread_join(th[t], NULL);
    assert_no_thread_failure();
    for (size_t j = 0; j < EXCHANGE; j++) {
        uintptr_t got = atomic_exchange(&exchange_slots[j], 0);
        if (got)
            check_and_free((unsigned char *)got);
    }
    printf("stress (small, mid, large, realloc): %d threads, %llu operations, %llu frees by another thread, %llu mismatches\n",
           THREADS, (unsigned long long)total_ops, (unsigned long long)remote_frees,
           (unsigned long long)mismatches);
    assert_true(total_ops >= (uint64_t)THREADS * MIXED_OPS_PER_THREAD);
    assert_int_equal(mismatches, 0);
}

static void *worker(void *arg)
{
    struct rng r = {(uint64_t)(uintptr_t)arg * 7919 + 1};
    unsigned char *slots[SLOTS] = {0};
    uint64_t ops = 0, remote = 0;
    while (ops < OPS_PER_THREAD) {
        size_t i = rng_range(&r, 0, SLOTS - 1);
        if (slots[i]) {
            if (rng_next(&r) & 1) {
                check_and_free(slots[i]);
            } else {
                /* Trade it: whatever was in the exchange (another thread's
                 * block, most likely) is freed here. */
                size_t j = rng_range(&r, 0, EXCHANGE - 1);
                uintptr_t got = atomic_exchange(&exchange_slots[j], (uintptr_t)slots[i]);
                if (got) {
                    check_and_free((unsigned char *)got);
                    remote++;
                }
            }
            slots[i] = NULL;
            ops++;
        }
        slots[i] = make_block(random_small_size(&r));
        CHECK(slots[i] != NULL);
        ops++;
    }
    for (size_t i = 0; i < SLOTS; i++)
        if (slots[i])
            check_and_free(slots[i]);
    atomic_fetch_add(&remote_frees, remote);
    atomic_fetch_add(&total_ops, ops);
    return NULL;
}

static void test_stress_cross_thread(void **state)
{
    (void)state;
    pthread_t th[THREADS];
    for (uintptr_t t = 0; t < THREADS; t++)
        assert_int_equal(pthread_create(&th[t], NULL, worker, (void *)(t + 1)), 0);
    for (int t = 0; t < THREADS; t++)
        pthread_join(th[t], NULL);
    assert_no_thread_failure();
    for (size_t j = 0; j < EXCHANGE; j++) {
        uintptr_t got = atomic_exchange(&exchange_slots[j], 0);
        if (got)
            check_and_free((unsigned char *)got);
    }
    printf("stress: %d threads, %llu operations, %llu frees by another thread, %llu mismatches\n",
           THREADS, (unsigned long long)total_ops, (unsigned long long)remote_frees,
           (unsigned long long)mismatches);
    assert_true(total_ops >= 10000000);
    assert_true(remote_frees * 8 >= total_ops); /* at least a quarter of all frees */
    assert_int_equal(mismatches, 0);
}

int main(void)
{
    hak_free(hak_malloc(1)); /* start-up, so the class table is ready */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stress_cross_thread),
        cmocka_unit_test(test_stress_mixed_sizes_and_realloc),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
