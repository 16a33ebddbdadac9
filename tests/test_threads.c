/* Thread exit: a thread's caches are flushed and its SuperSlabs are given
 * back or abandoned for others to adopt, so 100,000 short-lived threads
 * leave RSS and SuperSlab count flat; blocks freed after their thread is gone
 * come back through adoption; and a thread allocating in a TLS destructor
 * that runs after hakmem's own is still served. */
#include <pthread.h>
#include <stdatomic.h>

#include "internal.h"
#include "hakmem.h"
#include "testutil.h"

#define CHURN_THREADS 100000
#define AT_ONCE 4
#define BLOCKS 64

struct handoff {
    void *blocks[BLOCKS / 2];
    size_t sizes[BLOCKS / 2];
};

static void *short_lived(void *arg)
{
    struct handoff *out = arg;
    struct rng r = {(uint64_t)(uintptr_t)arg};
    void *mine[BLOCKS / 2];
    for (int i = 0; i < BLOCKS; i++) {
        size_t size = rng_range(&r, 8, 2048);
        void *p = hak_malloc(size);
        CHECK(p != NULL);
        pattern_fill(p, size);
        if (i & 1) {
            out->blocks[i / 2] = p; /* freed by the main thread, after we exit */
            out->sizes[i / 2] = size;
        } else {
            mine[i / 2] = p;
        }
    }
    for (int i = 0; i < BLOCKS / 2; i++)
        hak_free(mine[i]);
    return NULL;
}

static uint64_t superslabs_held(void)
{
    struct hak_provision_stats ps;
    hak_provision_stats(&ps);
    return ps.acquired[0] + ps.acquired[1] - ps.released[0] - ps.released[1];
}

static void test_hundred_thousand_threads_leave_memory_flat(void **state)
{
    (void)state;
    static struct handoff box[AT_ONCE];
    long own_early = 0, rss_early = 0;
    uint64_t ss_early = 0, ss_max = 0, bad = 0;
    for (int done = 0; done < CHURN_THREADS; done += AT_ONCE) {
        pthread_t th[AT_ONCE];
        for (int t = 0; t < AT_ONCE; t++)
            assert_int_equal(pthread_create(&th[t], NULL, short_lived, &box[t]), 0);
        for (int t = 0; t < AT_ONCE; t++)
            pthread_join(th[t], NULL);
        for (int t = 0; t < AT_ONCE; t++)
            for (int i = 0; i < BLOCKS / 2; i++) {
                bad += !pattern_check(box[t].blocks[i], box[t].sizes[i]);
                hak_free(box[t].blocks[i]);
            }
        if (done + AT_ONCE == 1000) {
            /* SuperSlabs waiting warm for reuse come and go with timing:
             * given back first, here and at the end. */
            hak_provision_trim(true);
            own_early = own_kib();
            rss_early = rss_kib();
            ss_early = superslabs_held();
        }
        uint64_t held = superslabs_held();
        if (held > ss_max)
            ss_max = held;
    }
    assert_no_thread_failure();
    hak_provision_trim(true);
    long own_end = own_kib(), rss_end = rss_kib();
    printf("churn: %d threads; hakmem's own memory after 1,000: %ld KiB, after %d: %ld KiB (process RSS %ld, %ld KiB); "
           "SuperSlabs held %llu, at most %llu\n",
           CHURN_THREADS, own_early, CHURN_THREADS, own_end, rss_early, rss_end, (unsigned long long)ss_early,
           (unsigned long long)ss_max);
    assert_int_equal(bad, 0);
    /* hakmem's own memory is a few MiB here, and a SuperSlab more or less
     * moves it by a fair part: flat means no growth with the threads, less
     * than 4 MiB over 99,000 of them (42 bytes each). */
    assert_true(own_end - own_early < 4096);
    assert_rss_true(rss_end <= 2 * rss_early);
    assert_true(ss_max <= ss_early + 8);
}

/* A thread leaves live blocks behind; another thread frees them (remote,
 * into an abandoned SuperSlab); a third thread adopts it. Exited threads
 * park their heaps; emptying the parked heaps (as malloc_trim does) is what
 * abandons their SuperSlabs. */
static void *leave_blocks(void *arg)
{
    void **out = arg;
    for (int i = 0; i < 1000; i++) {
        out[i] = hak_malloc(48);
        CHECK(out[i] != NULL);
    }
    return NULL;
}

static void *allocate_some(void *arg)
{
    (void)arg;
    void *p[2000];
    for (int i = 0; i < 2000; i++) {
        p[i] = hak_malloc(48);
        CHECK(p[i] != NULL);
    }
    for (int i = 0; i < 2000; i++)
        hak_free(p[i]);
    return NULL;
}

static void test_abandoned_superslabs_are_adopted(void **state)
{
    (void)state;
    static void *left[1000];
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, leave_blocks, left), 0);
    pthread_join(t, NULL);
    hak_heap_unpark_all();
    assert_true(hak_ss_abandoned_count() >= 1);
    for (int i = 0; i < 1000; i++)
        hak_free(left[i]);
    uint32_t before = hak_ss_abandoned_count();
    assert_int_equal(pthread_create(&t, NULL, allocate_some, NULL), 0);
    pthread_join(t, NULL);
    assert_no_thread_failure();
    assert_true(hak_ss_abandoned_count() < before);
}

/* A heap parked by an exited thread is taken over whole by the next
 * thread: same heap, its SuperSlabs still owned, the blocks other threads
 * freed meanwhile collected at the new owner's first refill. */
static struct hak_heap *seen_heap;

static void *note_heap_and_leave(void *arg)
{
    void **out = arg;
    for (int i = 0; i < 1000; i++)
        CHECK((out[i] = hak_malloc(48)) != NULL);
    seen_heap = hak_tls.heap;
    return NULL;
}

static void *note_heap(void *arg)
{
    (void)arg;
    void *p[3000];
    for (int i = 0; i < 3000; i++)
        CHECK((p[i] = hak_malloc(48)) != NULL);
    seen_heap = hak_tls.heap;
    for (int i = 0; i < 3000; i++)
        hak_free(p[i]);
    return NULL;
}

static void test_parked_heap_is_taken_over(void **state)
{
    (void)state;
    static void *left[1000];
    hak_heap_unpark_all();
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, note_heap_and_leave, left), 0);
    pthread_join(t, NULL);
    struct hak_heap *first = seen_heap;
    uint32_t abandoned = hak_ss_abandoned_count();
    uint32_t nss = first->nss;
    assert_true(nss >= 1);
    for (int i = 0; i < 1000; i++)
        hak_free(left[i]); /* remote frees into the parked heap's slabs */
    struct hak_provision_stats p0, p1;
    hak_provision_stats(&p0);
    assert_int_equal(pthread_create(&t, NULL, note_heap, NULL), 0);
    pthread_join(t, NULL);
    assert_no_thread_failure();
    hak_provision_stats(&p1);
    assert_ptr_equal(seen_heap, first);
    assert_int_equal(hak_ss_abandoned_count(), abandoned);
    /* The 1000 freed blocks were reused: at most one more SuperSlab. */
    assert_true(p1.acquired[0] + p1.acquired[1] - p0.acquired[0] - p0.acquired[1] <= 2);
}

/* A TLS destructor registered after hakmem's runs after it: the thread's
 * heap is gone, yet malloc and free must still work. */
static pthread_key_t late_key;
static _Atomic int late_ok;

static void late_destructor(void *arg)
{
    char *p = hak_malloc(100);
    if (p) {
        memset(p, 7, 100);
        atomic_store(&late_ok, p[99] == 7 && hak_tls.state == HAK_THREAD_DEAD);
    }
    hak_free(p);
    hak_free(arg);
}

static void *uses_late_key(void *arg)
{
    (void)arg;
    void *p = hak_malloc(32); /* our heap (and exit key) first */
    pthread_setspecific(late_key, p);
    return NULL;
}

static void test_allocation_after_thread_exit_cleanup(void **state)
{
    (void)state;
    assert_int_equal(pthread_key_create(&late_key, late_destructor), 0);
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, uses_late_key, NULL), 0);
    pthread_join(t, NULL);
    assert_true(atomic_load(&late_ok));
}

int main(void)
{
    hak_free(hak_malloc(1));
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_abandoned_superslabs_are_adopted),
        cmocka_unit_test(test_parked_heap_is_taken_over),
        cmocka_unit_test(test_allocation_after_thread_exit_cleanup),
        cmocka_unit_test(test_hundred_thousand_threads_leave_memory_flat),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
