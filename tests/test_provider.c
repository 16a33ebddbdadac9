/* The provider layer and its embedded backend: the backend extends the
 * arena in growing batches (few system calls for many SuperSlabs); the
 * layer hands back the most recently returned SuperSlab first, keeps
 * returned ones resident until the decay, and then (or at once on trim)
 * gives them back to their backend, which returns their pages to the OS. */
#include <time.h>

#include "internal.h"
#include "hakmem.h"
#include "testutil.h"

static void touch(uint32_t idx)
{
    memset(hak_ss_addr(idx), 0x5A, HAK_SS_SIZE);
}

static void test_acquire_extends_in_batches(void **state)
{
    (void)state;
    struct hak_embedded_stats e0, e1;
    hak_embedded_stats(&e0);
    uint64_t mprotect0 = hak_os_calls(HAK_OS_MPROTECT), mmap0 = hak_os_calls(HAK_OS_MMAP);
    uint32_t got[40];
    for (int i = 0; i < 40; i++) {
        assert_int_equal(hak_provision_acquire(&got[i], 1), 1);
        for (int j = 0; j < i; j++)
            assert_int_not_equal(got[i], got[j]);
        assert_true(got[i] < hak_arena.cursor);
    }
    hak_embedded_stats(&e1);
    uint64_t extends = e1.extends - e0.extends;
    /* Batches double (4, 8, 16, ...): 40 SuperSlabs need at most 4 more. */
    assert_true(extends <= 4);
    assert_true(hak_os_calls(HAK_OS_MPROTECT) - mprotect0 <= 2 * extends);
    assert_int_equal(hak_os_calls(HAK_OS_MMAP) - mmap0, 0);
    for (int i = 0; i < 40; i++)
        hak_provision_release(got[i], 0);
}

static void test_most_recent_release_is_reused_first(void **state)
{
    (void)state;
    uint32_t a, b, again;
    assert_int_equal(hak_provision_acquire(&a, 1), 1);
    assert_int_equal(hak_provision_acquire(&b, 1), 1);
    touch(a);
    touch(b);
    hak_provision_release(a, 0);
    hak_provision_release(b, 0);
    assert_int_equal(hak_provision_acquire(&again, 1), 1);
    assert_int_equal(again, b); /* warm pages first */
    assert_int_equal(*(unsigned char *)hak_ss_addr(again), 0x5A); /* not purged */
    hak_provision_release(again, 0);
}

static void test_trim_returns_pages_to_the_os(void **state)
{
    (void)state;
    uint32_t idx[8];
    assert_int_equal(hak_provision_acquire(idx, 8), 8);
    for (int i = 0; i < 8; i++)
        touch(idx[i]);
    long before = own_kib();
    for (int i = 0; i < 8; i++)
        hak_provision_release(idx[i], 0);
    uint64_t madvise0 = hak_os_calls(HAK_OS_MADVISE);
    struct hak_provision_stats e;
    size_t bytes = hak_provision_trim(true);
    hak_provision_stats(&e);
    assert_true(bytes >= 8 * HAK_SS_SIZE);
    assert_int_equal(e.warm, 0);
    assert_true(hak_os_calls(HAK_OS_MADVISE) - madvise0 >= 8);
    long after = own_kib();
    assert_true(before - after >= 7 * 1024); /* about 8 MiB gone */
    /* A purged SuperSlab comes back zeroed. */
    uint32_t again;
    assert_int_equal(hak_provision_acquire(&again, 1), 1);
    const unsigned char *p = hak_ss_addr(again);
    for (size_t off = 0; off < HAK_SS_SIZE; off += 4096)
        assert_int_equal(p[off], 0);
    hak_provision_release(again, 0);
}

static void test_decay_purges_idle_superslabs_later(void **state)
{
    (void)state;
    uint64_t decay = hak_opt.decay_ms;
    hak_opt.decay_ms = 100;
    hak_provision_trim(true);
    uint32_t a, b;
    assert_int_equal(hak_provision_acquire(&a, 1), 1);
    assert_int_equal(hak_provision_acquire(&b, 1), 1);
    touch(a);
    struct hak_provision_stats e0, e1, e2;
    hak_provision_stats(&e0);
    hak_provision_release(a, 0);
    hak_provision_stats(&e1);
    assert_int_equal(e1.purged, e0.purged); /* still within the decay */
    assert_int_equal(e1.warm, 1);
    struct timespec ts = {0, 150 * 1000000};
    nanosleep(&ts, NULL);
    hak_provision_release(b, 0); /* any provider call purges what has decayed */
    hak_provision_stats(&e2);
    assert_int_equal(e2.purged, e0.purged + 1);
    assert_int_equal(e2.warm, 1); /* b, just returned */
    hak_opt.decay_ms = decay;
    hak_provision_trim(true);
}

int main(void)
{
    hak_free(hak_malloc(1));
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_acquire_extends_in_batches),
        cmocka_unit_test(test_most_recent_release_is_reused_first),
        cmocka_unit_test(test_trim_returns_pages_to_the_os),
        cmocka_unit_test(test_decay_purges_idle_superslabs_later),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
