/* Size classes: every size maps to the smallest class that holds it, the
 * fast table agrees with the function, internal waste above 128 B stays at
 * or under 25%, and the multiply-and-rotate "is x a multiple of the block
 * size" test agrees with the remainder for every class. */
#include "internal.h"
#include "hakmem.h"
#include "testutil.h"

static void test_every_size_maps_to_smallest_fitting_class(void **state)
{
    (void)state;
    for (size_t n = 0; n <= HAK_MID_MAX; n++) {
        unsigned c = hak_size_class(n);
        assert_true(c >= 1 && c < HAK_NCLASS);
        assert_true(hak_classes[c].size >= n);
        if (c > 1)
            assert_true(hak_classes[c - 1].size < n);
        if (n <= HAK_SMALL_MAX)
            assert_int_equal(hak_class_of16[(n + 15) >> 4], c);
        else
            assert_int_equal(hak_class_of1k[(n + 1023) >> 10], c);
        if (n > 128)
            assert_true((hak_classes[c].size - n) * 4 <= n);
    }
}

static void test_class_sizes_round_trip(void **state)
{
    (void)state;
    for (unsigned c = 1; c < HAK_NCLASS; c++) {
        const struct hak_class *k = &hak_classes[c];
        assert_int_equal(k->size % 16, 0);
        assert_int_equal(hak_size_class(k->size), c);
        assert_true(k->capacity >= 1);
        assert_true((size_t)k->capacity * k->size <= (size_t)k->span * HAK_UNIT_SIZE);
        assert_true(k->cap_base >= 2 && k->cap_base <= k->cap_max);
    }
    assert_int_equal(hak_classes[1].size, 16);
    assert_int_equal(hak_classes[32].size, HAK_SMALL_MAX);
    assert_int_equal(hak_classes[HAK_NCLASS - 1].size, HAK_MID_MAX);
    assert_int_equal(hak_classes[0].capacity, 0); /* class 0 holds no block */
}

static void test_block_check_matches_division(void **state)
{
    (void)state;
    for (unsigned c = 1; c < HAK_NCLASS; c++) {
        const struct hak_class *k = &hak_classes[c];
        uint32_t span = (uint32_t)k->span << HAK_UNIT_SHIFT;
        for (uint32_t x = 0; x < span; x += (x & 1) ? 15 : 1) {
            bool is_block = x % k->size == 0 && x / k->size < k->capacity;
            assert_int_equal(hak_class_is_block(k, x), is_block);
        }
    }
    /* Class 0 (a unit with no slab) has no blocks at all. */
    assert_false(hak_class_is_block(&hak_classes[0], 0));
}

static void test_allocations_have_their_class_size(void **state)
{
    (void)state;
    for (size_t n = 0; n <= HAK_MID_MAX; n += (n < 4096 ? 1 : 61)) {
        void *p = hak_malloc(n);
        assert_non_null(p);
        assert_int_equal((uintptr_t)p % 16, 0);
        size_t usable = hak_usable_size(p);
        assert_true(usable >= n);
        assert_int_equal(usable, hak_classes[hak_size_class(n)].size);
        memset(p, 0xA5, usable);
        hak_free(p);
    }
}

int main(void)
{
    hak_free(hak_malloc(1));
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_size_maps_to_smallest_fitting_class),
        cmocka_unit_test(test_class_sizes_round_trip),
        cmocka_unit_test(test_block_check_matches_division),
        cmocka_unit_test(test_allocations_have_their_class_size),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
