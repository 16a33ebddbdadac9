/* The rings of the shared control area (shm/ring.c): order, empty and full,
 * wrap-around of the free-running indices, corrupt indices caught on both
 * sides, and many poppers against one pusher. */
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>

#include "hakmem_shm.h"
#include "testutil.h"

static struct hak_shm_fill_ring *fill_new(uint32_t start)
{
    struct hak_shm_fill_ring *r = aligned_alloc(64, sizeof *r);
    assert_non_null(r);
    memset(r, 0, sizeof *r);
    atomic_store(&r->head.v, start);
    atomic_store(&r->tail.v, start);
    return r;
}

static struct hak_shm_return_ring *return_new(uint32_t start)
{
    struct hak_shm_return_ring *r = aligned_alloc(64, sizeof *r);
    assert_non_null(r);
    memset(r, 0, sizeof *r);
    atomic_store(&r->head.v, start);
    atomic_store(&r->tail.v, start);
    return r;
}

/* Filled to the brim and emptied, in order, from a given start index (the
 * indices run freely and wrap at 2^32). */
static void fill_order_from(uint32_t start)
{
    struct hak_shm_fill_ring *r = fill_new(start);
    uint32_t level;
    uint64_t v;
    assert_true(hak_fill_ring_level(r, &level));
    assert_int_equal(level, 0);
    assert_int_equal(hak_fill_ring_pop(r, &v), 0);
    for (uint64_t i = 0; i < HAK_SHM_FILL_SLOTS; i++)
        assert_true(hak_fill_ring_push(r, (i + 1) << 20));
    assert_true(hak_fill_ring_level(r, &level));
    assert_int_equal(level, HAK_SHM_FILL_SLOTS);
    assert_false(hak_fill_ring_push(r, 1ull << 40)); /* full */
    for (uint64_t i = 0; i < HAK_SHM_FILL_SLOTS; i++) {
        assert_int_equal(hak_fill_ring_pop(r, &v), 1);
        assert_true(v == (i + 1) << 20);
    }
    assert_int_equal(hak_fill_ring_pop(r, &v), 0);
    assert_true(hak_fill_ring_level(r, &level));
    assert_int_equal(level, 0);
    free(r);
}

static void test_fill_order_empty_full(void **state)
{
    (void)state;
    fill_order_from(0);
    fill_order_from(UINT32_MAX - 100); /* wraps in the middle */
}

static void test_fill_interleaved(void **state)
{
    (void)state;
    struct hak_shm_fill_ring *r = fill_new(UINT32_MAX - 3);
    uint64_t next_in = 1, next_out = 1, v;
    for (int round = 0; round < 2000; round++) {
        for (int i = 0; i < round % 7; i++)
            if (hak_fill_ring_push(r, next_in))
                next_in++;
        for (int i = 0; i < round % 5; i++)
            if (hak_fill_ring_pop(r, &v) == 1)
                assert_true(v == next_out++);
    }
    while (hak_fill_ring_pop(r, &v) == 1)
        assert_true(v == next_out++);
    assert_true(next_in == next_out);
    free(r);
}

/* tail - head > slots, whichever index was damaged, is caught by the
 * daemon's level and push and by the client's pop. */
static void test_fill_corrupt(void **state)
{
    (void)state;
    const uint32_t heads[] = {0, 5, UINT32_MAX - 2};
    const uint32_t skew[] = {HAK_SHM_FILL_SLOTS + 1, UINT32_MAX, 0x80000000u, (uint32_t)-5};
    for (unsigned h = 0; h < 3; h++)
        for (unsigned s = 0; s < 4; s++) {
            struct hak_shm_fill_ring *r = fill_new(heads[h]);
            atomic_store(&r->tail.v, heads[h] + skew[s]); /* tail far ahead, or head beyond tail */
            uint32_t level;
            uint64_t v;
            assert_false(hak_fill_ring_level(r, &level));
            assert_false(hak_fill_ring_push(r, 1 << 20));
            assert_int_equal(hak_fill_ring_pop(r, &v), -1);
            free(r);
        }
}

static void test_return_order_empty_full(void **state)
{
    (void)state;
    const uint32_t starts[] = {0, UINT32_MAX - 500};
    for (unsigned s = 0; s < 2; s++) {
        struct hak_shm_return_ring *r = return_new(starts[s]);
        uint64_t v;
        assert_int_equal(hak_return_ring_pop(r, &v), 0);
        for (uint64_t i = 0; i < HAK_SHM_RETURN_SLOTS; i++)
            assert_true(hak_return_ring_push(r, i * 3 + 7));
        assert_false(hak_return_ring_push(r, 1)); /* full */
        for (uint64_t i = 0; i < HAK_SHM_RETURN_SLOTS; i++) {
            assert_int_equal(hak_return_ring_pop(r, &v), 1);
            assert_true(v == i * 3 + 7);
        }
        assert_int_equal(hak_return_ring_pop(r, &v), 0);
        free(r);
    }
}

static void test_return_corrupt(void **state)
{
    (void)state;
    const uint32_t skew[] = {HAK_SHM_RETURN_SLOTS + 1, UINT32_MAX, 0x80000000u};
    for (unsigned s = 0; s < 3; s++) {
        struct hak_shm_return_ring *r = return_new(1000);
        uint64_t v;
        atomic_store(&r->tail.v, 1000 + skew[s]); /* the client's tail, insane */
        assert_int_equal(hak_return_ring_pop(r, &v), -1);
        assert_false(hak_return_ring_push(r, 1)); /* the pusher refuses too */
        /* The daemon's head moved beyond the tail. */
        atomic_store(&r->tail.v, 1000);
        atomic_store(&r->head.v, 1000 + 7);
        assert_int_equal(hak_return_ring_pop(r, &v), -1);
        assert_false(hak_return_ring_push(r, 1));
        free(r);
    }
}

/* ---- one pusher, four poppers ---- */

#define NVALUES 1000000u
#define NPOPPERS 4

static struct hak_shm_fill_ring *shared;
static _Atomic uint32_t popped_total;
static unsigned char *seen; /* NVALUES counters */

static void *pusher(void *arg)
{
    (void)arg;
    for (uint64_t i = 0; i < NVALUES;) {
        /* Distinct, SuperSlab-like offsets. */
        if (hak_fill_ring_push(shared, (i + 1) << 20))
            i++;
        else
            sched_yield();
    }
    return NULL;
}

static void *popper(void *arg)
{
    (void)arg;
    uint64_t v;
    while (atomic_load(&popped_total) < NVALUES) {
        int got = hak_fill_ring_pop(shared, &v);
        /* A healthy ring is never reported corrupt, however stale the
         * popper's view of head is while others pop and the pusher refills. */
        CHECK(got >= 0);
        if (got == 0) {
            sched_yield();
            continue;
        }
        CHECK((v & ((1u << 20) - 1)) == 0);
        uint64_t i = (v >> 20) - 1;
        CHECK(i < NVALUES);
        __atomic_fetch_add(&seen[i], 1, __ATOMIC_RELAXED);
        atomic_fetch_add(&popped_total, 1);
    }
    return NULL;
}

static void test_fill_concurrent_pop_exactly_once(void **state)
{
    (void)state;
    shared = fill_new(UINT32_MAX - 1000);
    seen = calloc(NVALUES, 1);
    assert_non_null(seen);
    atomic_store(&popped_total, 0);
    pthread_t push, pop[NPOPPERS];
    for (int i = 0; i < NPOPPERS; i++)
        assert_int_equal(pthread_create(&pop[i], NULL, popper, NULL), 0);
    assert_int_equal(pthread_create(&push, NULL, pusher, NULL), 0);
    pthread_join(push, NULL);
    for (int i = 0; i < NPOPPERS; i++)
        pthread_join(pop[i], NULL);
    assert_no_thread_failure();
    assert_int_equal(atomic_load(&popped_total), NVALUES);
    for (uint32_t i = 0; i < NVALUES; i++)
        if (seen[i] != 1)
            fail_msg("offset %u popped %u times", i, seen[i]);
    uint64_t v;
    assert_int_equal(hak_fill_ring_pop(shared, &v), 0);
    free(seen);
    free(shared);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fill_order_empty_full),
        cmocka_unit_test(test_fill_interleaved),
        cmocka_unit_test(test_fill_corrupt),
        cmocka_unit_test(test_return_order_empty_full),
        cmocka_unit_test(test_return_corrupt),
        cmocka_unit_test(test_fill_concurrent_pop_exactly_once),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
