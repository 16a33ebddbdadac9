/* Remote frees under contention: one owner thread allocates blocks, four
 * other threads free them all at once (many pushes onto the same owner's
 * inbox at the same time), while the owner keeps draining it. Afterwards every block must be back in its slab exactly once: no
 * block lost, none counted twice. Repeated for several rounds and classes.
 * Then the batches a freer gathers: sent when full, at its exit, never
 * before, for more owners than its outboxes, and for an owner that
 * abandoned their SuperSlab while they waited. */
#include <pthread.h>
#include <stdatomic.h>

#include "internal.h"
#include "hakmem.h"
#include "testutil.h"

#define FREERS 4
#define ROUNDS 20

static void **blocks;
static size_t nblocks;
static pthread_barrier_t start, done;
static _Atomic int freers_left;

static void *freer(void *arg)
{
    size_t me = (size_t)(uintptr_t)arg;
    for (int round = 0; round < ROUNDS; round++) {
        pthread_barrier_wait(&start);
        /* Interleaved indices: the freers hit the same slabs together. */
        for (size_t i = me; i < nblocks; i += FREERS)
            hak_free(blocks[i]);
        /* Sent in batches; a thread about to wait sends what is left. */
        hak_thread_flush();
        atomic_fetch_sub(&freers_left, 1);
        pthread_barrier_wait(&done);
    }
    return NULL;
}

/* Sum of used blocks over the owner's slabs of cls, checking each slab's
 * books balance: free list + uncarved + used == capacity, and that every
 * free block carries the free mark (a batch's first block too, whose mark
 * the batch's word stood in for on the way). */
static long slab_books(struct hak_heap *h, unsigned cls, int *balanced)
{
    long used = 0;
    *balanced = 1;
    for (int list = 0; list < 2; list++)
        for (struct hak_slab *s = list ? h->full[cls] : h->partial[cls]; s; s = s->next) {
            unsigned nfree = 0;
            for (void *b = s->free; b; b = *(void **)b) {
                nfree++;
                if (*hak_mark_word(b) != hak_free_mark)
                    *balanced = 0;
            }
            if (nfree != s->nfree || s->nfree + (hak_classes[cls].capacity - s->carved) + s->used != hak_classes[cls].capacity)
                *balanced = 0;
            used += s->used;
        }
    return used;
}

static void run_class(unsigned cls, size_t n)
{
    pthread_t th[FREERS];
    nblocks = n;
    blocks = calloc(n, sizeof(void *));
    pthread_barrier_init(&start, NULL, FREERS + 1);
    pthread_barrier_init(&done, NULL, FREERS + 1);
    for (uintptr_t t = 0; t < FREERS; t++)
        assert_int_equal(pthread_create(&th[t], NULL, freer, (void *)t), 0);
    struct hak_heap *h = hak_tls.heap;
    for (int round = 0; round < ROUNDS; round++) {
        for (size_t i = 0; i < n; i++) {
            blocks[i] = hak_malloc(hak_classes[cls].size);
            assert_non_null(blocks[i]);
        }
        atomic_store(&freers_left, FREERS);
        pthread_barrier_wait(&start);
        while (atomic_load(&freers_left) > 0) { /* drain while they push */
            hak_lock(&h->lock);
            hak_remote_drain(h);
            hak_unlock(&h->lock);
        }
        pthread_barrier_wait(&done);
        hak_lock(&h->lock);
        hak_remote_drain(h);
        int balanced;
        long used = slab_books(h, cls, &balanced);
        long cached = hak_tls.c[cls].count;
        hak_unlock(&h->lock);
        assert_true(balanced);
        /* Every block is back; only the owner's cache still holds some. */
        assert_int_equal(used, cached);
    }
    for (int t = 0; t < FREERS; t++)
        pthread_join(th[t], NULL);
    free(blocks);
    pthread_barrier_destroy(&start);
    pthread_barrier_destroy(&done);
}

static void test_remote_frees_under_contention_small(void **state)
{
    (void)state;
    run_class(2, 20000); /* 32 B: about five slabs per round */
}

static void test_remote_frees_under_contention_mid(void **state)
{
    (void)state;
    run_class(40, 300); /* 32 KiB: multi-unit slabs */
}

/* Blocks of the owner's slabs of cls outside them (used less cached),
 * after collecting what was sent. */
static long outstanding(unsigned cls)
{
    struct hak_heap *h = hak_tls.heap;
    hak_lock(&h->lock);
    hak_remote_drain(h);
    int balanced;
    long out = slab_books(h, cls, &balanced) - (long)hak_tls.c[cls].count;
    hak_unlock(&h->lock);
    assert_true(balanced);
    return out;
}

static void *free_and_report(void *arg)
{
    size_t n = (size_t)(uintptr_t)arg;
    for (size_t i = 0; i < n; i++)
        hak_free(blocks[i]);
    atomic_store(&freers_left, 0);
    pthread_barrier_wait(&done); /* the owner looks while this thread lives */
    return NULL;
}

/* Another thread frees n of the owner's blocks of cls: held while it lives
 * goes out at once, the rest at its exit, and nothing twice. */
static void free_from_a_thread(unsigned cls, unsigned n, unsigned held)
{
    for (unsigned i = 0; i < n; i++)
        blocks[i] = hak_malloc(hak_classes[cls].size);
    long before = outstanding(cls);
    assert_true(before >= (long)n);
    pthread_t th;
    pthread_barrier_init(&done, NULL, 2);
    atomic_store(&freers_left, 1);
    assert_int_equal(pthread_create(&th, NULL, free_and_report, (void *)(uintptr_t)n), 0);
    while (atomic_load(&freers_left))
        sched_yield();
    assert_int_equal(outstanding(cls), before - (long)(n - held));
    pthread_barrier_wait(&done);
    pthread_join(th, NULL);
    assert_int_equal(outstanding(cls), before - (long)n);
    pthread_barrier_destroy(&done);
}

static void test_batches_go_out_when_full_and_at_exit(void **state)
{
    (void)state;
    const unsigned cls = 3; /* 48 B: all from one slab */
    blocks = calloc(HAK_OUTBOX_MAX, sizeof(void *));
    /* The thread has no heap and makes no allocation: it gets one at its
     * first remote free, and batches. One block short of a batch: held. */
    free_from_a_thread(cls, HAK_RBATCH_MAX - 1, HAK_RBATCH_MAX - 1);
    /* Full batches wait in the outbox for the owner: one block short of a
     * full outbox is held too. */
    free_from_a_thread(cls, HAK_OUTBOX_MAX - 1, HAK_OUTBOX_MAX - 1);
    /* A full outbox goes out at once. */
    free_from_a_thread(cls, HAK_OUTBOX_MAX, 0);
    free(blocks);
}

/* More owners than a thread has outboxes: blocks of HAK_OUTBOX + 2 owners,
 * a full batch of each, freed by one thread. Taking an outbox for a new
 * owner ships the one there, so two owners hear at once and the others at
 * the freer's flush; every block then comes home once. */
#define OWNERS (HAK_OUTBOX + 2)
static void *owned[OWNERS][HAK_RBATCH_MAX];
static struct hak_heap *owner_heap[OWNERS];
static pthread_barrier_t owners_ready, owners_go;

static void *owner_main(void *arg)
{
    size_t o = (size_t)(uintptr_t)arg;
    const unsigned cls = 3;
    /* A full batch: HAK_RBATCH_MAX blocks of one slab. */
    void *pool[256];
    unsigned n = 0, got = 0;
    while (got < HAK_RBATCH_MAX && n < 256) {
        pool[n] = hak_malloc(hak_classes[cls].size);
        if (hak_slab_of(pool[n]) == hak_slab_of(pool[0]))
            owned[o][got++] = pool[n];
        n++;
    }
    assert_int_equal(got, HAK_RBATCH_MAX);
    for (unsigned i = 0; i < n; i++)
        if (hak_slab_of(pool[i]) != hak_slab_of(pool[0]))
            hak_free(pool[i]);
    owner_heap[o] = hak_tls.heap;
    pthread_barrier_wait(&owners_ready);
    pthread_barrier_wait(&owners_go); /* alive while its blocks come back */
    return NULL;
}

static unsigned owners_told(void)
{
    unsigned n = 0;
    for (int o = 0; o < OWNERS; o++)
        n += atomic_load(&owner_heap[o]->inbox) != NULL;
    return n;
}

static void test_more_owners_than_outboxes(void **state)
{
    (void)state;
    pthread_t th[OWNERS];
    hak_thread_flush(); /* nothing of this thread's on its way */
    pthread_barrier_init(&owners_ready, NULL, OWNERS + 1);
    pthread_barrier_init(&owners_go, NULL, OWNERS + 1);
    for (uintptr_t o = 0; o < OWNERS; o++)
        assert_int_equal(pthread_create(&th[o], NULL, owner_main, (void *)o), 0);
    pthread_barrier_wait(&owners_ready);
    uint32_t used[OWNERS];
    for (int o = 0; o < OWNERS; o++) {
        assert_null(atomic_load(&owner_heap[o]->inbox));
        used[o] = hak_slab_of(owned[o][0])->used;
    }
    for (int o = 0; o < OWNERS; o++)
        for (int i = 0; i < HAK_RBATCH_MAX; i++)
            hak_free(owned[o][i]);
    assert_int_equal(owners_told(), OWNERS - HAK_OUTBOX);
    hak_thread_flush();
    assert_int_equal(owners_told(), OWNERS);
    for (int o = 0; o < OWNERS; o++) {
        struct hak_heap *h = owner_heap[o];
        hak_lock(&h->lock);
        hak_remote_drain(h);
        assert_int_equal(hak_slab_of(owned[o][0])->used, used[o] - HAK_RBATCH_MAX);
        int balanced;
        slab_books(h, 3, &balanced);
        hak_unlock(&h->lock);
        assert_true(balanced);
    }
    pthread_barrier_wait(&owners_go);
    for (int o = 0; o < OWNERS; o++)
        pthread_join(th[o], NULL);
    pthread_barrier_destroy(&owners_ready);
    pthread_barrier_destroy(&owners_go);
}

/* A batch waits in a freer's outbox while its owner abandons the
 * SuperSlab (as a thread exit or an idle heap does): the ship that follows
 * must not put it on the owner's inbox, where no drain would find the
 * adopter, but on its slab's remote list. */
static void *abandoner_main(void *arg)
{
    (void)arg;
    owner_main((void *)(uintptr_t)0);
    struct hak_heap *h = hak_tls.heap;
    hak_lock(&h->lock);
    for (unsigned c = 1; c < HAK_NCLASS; c++)
        hak_heap_flush(h, c, 0);
    hak_remote_drain(h);
    hak_ss_abandon_all(h);
    hak_unlock(&h->lock);
    pthread_barrier_wait(&owners_ready);
    pthread_barrier_wait(&owners_go);
    return NULL;
}

static void test_outbox_of_an_abandoned_owner(void **state)
{
    (void)state;
    pthread_t th;
    hak_thread_flush();
    pthread_barrier_init(&owners_ready, NULL, 2);
    pthread_barrier_init(&owners_go, NULL, 2);
    assert_int_equal(pthread_create(&th, NULL, abandoner_main, NULL), 0);
    pthread_barrier_wait(&owners_ready); /* its full batch allocated */
    for (int i = 0; i < HAK_RBATCH_MAX; i++)
        hak_free(owned[0][i]);
    struct hak_slab *s = hak_slab_of(owned[0][0]);
    assert_null(atomic_load(&s->remote)); /* in the outbox */
    pthread_barrier_wait(&owners_go);
    pthread_barrier_wait(&owners_ready); /* its SuperSlabs abandoned */
    assert_int_equal(atomic_load(&hak_hot(s->ss)->owner), HAK_OWNER_ABANDONED);
    hak_thread_flush();
    assert_null(atomic_load(&owner_heap[0]->inbox));
    assert_ptr_equal(atomic_load(&s->remote), owned[0][HAK_RBATCH_MAX - 1]);
    pthread_barrier_wait(&owners_go);
    pthread_join(th, NULL);
    pthread_barrier_destroy(&owners_ready);
    pthread_barrier_destroy(&owners_go);
}

int main(void)
{
    hak_free(hak_malloc(1));
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_remote_frees_under_contention_small),
        cmocka_unit_test(test_remote_frees_under_contention_mid),
        cmocka_unit_test(test_batches_go_out_when_full_and_at_exit),
        cmocka_unit_test(test_more_owners_than_outboxes),
        cmocka_unit_test(test_outbox_of_an_abandoned_owner),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
