/* Slab carving and refill: a refill carves a batch (at most
 * HAK_CARVE_BYTES of fresh memory) in address order in one pass, blocks come
 * back to their slab, an emptied slab's free list is handed over whole, and
 * a thread fills its own slabs before it asks for another SuperSlab. Each test runs in a fresh thread, so it starts from an
 * empty heap. */
#include <pthread.h>
#include <sys/mman.h>

#include "internal.h"
#include "hakmem.h"
#include "testutil.h"

static void run_in_thread(void *(*fn)(void *))
{
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, fn, NULL), 0);
    pthread_join(t, NULL);
    assert_no_thread_failure();
}

static struct hak_heap *my_heap(void)
{
    hak_free(hak_malloc(16)); /* make sure this thread has a heap */
    return hak_tls.heap;
}

/* A failed check inside the heap lock releases it before the worker returns. */
#define LCHECK(c)                          \
    do {                                   \
        bool ok_ = (c);                    \
        if (!ok_)                          \
            hak_unlock(&h->lock);          \
        CHECK(ok_ || !#c "evaluated once"); \
    } while (0)

static void *carve_thread(void *arg)
{
    (void)arg;
    struct hak_heap *h = my_heap();
    const unsigned cls = 9; /* 160 B: capacity 409 */
    const struct hak_class *k = &hak_classes[cls];
    const unsigned batch = k->cap_base / 2, carve = HAK_CARVE_BYTES / k->size;
    hak_lock(&h->lock);
    LCHECK((h->partial[cls]) == NULL);
    LCHECK(hak_ss_new_slab(h, cls));
    struct hak_slab *s = h->partial[cls];
    LCHECK((s) != NULL);
    char *base = hak_slab_base(s);
    unsigned taken = 0;
    void *lists[64];
    unsigned nlists = 0;
    while (taken < k->capacity) {
        void *first;
        unsigned n = hak_slab_take(s, batch, batch, &first);
        unsigned expect = batch < carve ? batch : carve;
        LCHECK(n == (taken + expect <= k->capacity ? expect : k->capacity - taken));
        /* One pass over fresh memory: consecutive blocks in address order. */
        char *b = first;
        for (unsigned i = 0; i < n; i++) {
            LCHECK((void *)(b) == (void *)(base + (size_t)(taken + i) * k->size));
            char *next = *(char **)b;
            if (i + 1 < n)
                LCHECK((void *)(next) == (void *)(b + k->size));
            else
                LCHECK((next) == NULL);
            b = next;
        }
        lists[nlists++] = first;
        taken += n;
    }
    LCHECK((s->used) == (k->capacity));
    LCHECK((s->carved) == (k->capacity));
    void *none;
    LCHECK(hak_slab_take(s, batch, batch, &none) == 0);
    /* Everything but one block back: the slab stays, its free list holds
     * the rest. */
    void *kept = lists[0];
    lists[0] = *(void **)kept;
    for (unsigned l = 0; l < nlists; l++)
        for (void *b = lists[l], *next; b; b = next) {
            next = *(void **)b;
            hak_slab_put_local(h, b);
        }
    LCHECK(s->used == 1);
    LCHECK(s->nfree == k->capacity - 1);
    LCHECK(h->partial[cls] == s);
    /* A take that wants the whole list gets it without a walk. */
    void *all;
    LCHECK(hak_slab_take(s, k->capacity, k->capacity, &all) == k->capacity - 1);
    LCHECK(s->free == NULL);
    unsigned count = 0;
    for (void *b = all, *next; b; b = next, count++) {
        next = *(void **)b;
        hak_slab_put_local(h, b);
    }
    LCHECK(count == k->capacity - 1);
    /* The last block back empties the slab: its unit returns at once. */
    uint32_t idx = s->ss;
    unsigned unit = s->unit;
    hak_slab_put_local(h, kept);
    LCHECK(s->cls == 0);
    LCHECK(hak_hot(idx)->cls[unit] == 0);
    LCHECK(h->partial[cls] == NULL);
    hak_unlock(&h->lock);
    return NULL;
}

static void test_slab_carves_whole_batches_in_address_order(void **state)
{
    (void)state;
    run_in_thread(carve_thread);
}

/* A thread that allocates N MiB of one class uses its SuperSlabs' units
 * before it asks for more, and the refill count matches whole batches. */
static void *fill_thread(void *arg)
{
    (void)arg;
    struct hak_provision_stats p0, p1;
    hak_provision_stats(&p0);
    struct hak_heap *h = my_heap();
    const unsigned cls = 4; /* 64 B */
    const struct hak_class *k = &hak_classes[cls];
    /* No flush happens, so no growth: a refill carves half the base
     * capacity, or HAK_CARVE_BYTES of blocks if that is less. */
    const unsigned batch = k->cap_base / 2 < HAK_CARVE_BYTES / k->size ? k->cap_base / 2 : HAK_CARVE_BYTES / k->size;
    uint64_t refills0 = h->st[cls].refills;
    size_t n = (size_t)k->capacity * HAK_UNITS * 3; /* three SuperSlabs' worth */
    void **blocks = mmap(NULL, n * sizeof(void *), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    for (size_t i = 0; i < n; i++) {
        blocks[i] = hak_malloc(64);
        CHECK((blocks[i]) != NULL);
    }
    hak_provision_stats(&p1);
    uint64_t acquired = p1.acquired[0] + p1.acquired[1] - p0.acquired[0] - p0.acquired[1];
    /* 48 units of 64 B blocks plus the 16 B slab my_heap made: 4 SuperSlabs
     * owned (some may come from a heap an earlier thread parked), acquired
     * in batches. No SuperSlab per refill. */
    CHECK(h->nss >= 4 && h->nss <= 6);
    CHECK(acquired <= 6);
    uint64_t refills = h->st[cls].refills - refills0;
    CHECK(refills <= (n + batch - 1) / batch + 1);
    for (size_t i = 0; i < n; i++)
        hak_free(blocks[i]);
    munmap(blocks, n * sizeof(void *));
    return NULL;
}


static void test_refills_fill_owned_superslabs_first(void **state)
{
    (void)state;
    run_in_thread(fill_thread);
}

int main(void)
{
    hak_free(hak_malloc(1));
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_slab_carves_whole_batches_in_address_order),
        cmocka_unit_test(test_refills_fill_owned_superslabs_first),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
