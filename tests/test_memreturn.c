/* Memory goes back to the OS: after 1 GiB of small blocks is freed and
 * malloc_trim(0) runs, hakmem's resident memory is back near where it
 * started (and so is the process's RSS, where no sanitizer adds its own);
 * blocks left by an exited thread and freed by another come back too; and
 * without a trim, idle SuperSlabs are returned once the decay has passed.
 * malloc_trim is called by its hak_ name, which a build without the
 * standard names (make asan) also has. */
#include <pthread.h>
#include <sys/mman.h>
#include <time.h>

#include "hakmem.h"
#include "testutil.h"

#define MIB (1024L * 1024)
#define NEAR_KIB (24 * 1024) /* "near the baseline": within 24 MiB */

struct blocks {
    void **p;
    size_t n, cap;
};

static struct blocks fill(size_t bytes, uint64_t seed)
{
    struct rng r = {seed};
    size_t cap = bytes / 16;
    struct blocks b = {mmap(NULL, cap * sizeof(void *), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0), 0, cap};
    for (size_t total = 0; total < bytes;) {
        size_t size = rng_range(&r, 16, 1024);
        char *p = hak_malloc(size);
        if (!p)
            break;
        p[0] = p[size - 1] = 1; /* resident, like a real program's data */
        b.p[b.n++] = p;
        total += size;
    }
    return b;
}

static void release(struct blocks *b)
{
    for (size_t i = 0; i < b->n; i++)
        hak_free(b->p[i]);
    munmap(b->p, b->cap * sizeof(void *));
    b->n = 0;
}

static void test_gigabyte_freed_and_trimmed(void **state)
{
    (void)state;
    hak_trim(0);
    long base = own_kib(), base_rss = rss_kib();
    struct blocks b = fill(1024 * MIB, 1);
    long peak = own_kib(), peak_rss = rss_kib();
    release(&b);
    hak_trim(0);
    long after = own_kib(), after_rss = rss_kib();
    printf("memory return: hakmem's own: baseline %ld KiB, 1 GiB of small blocks %ld KiB, freed and trimmed %ld KiB "
           "(process RSS %ld, %ld, %ld KiB)\n",
           base, peak, after, base_rss, peak_rss, after_rss);
    assert_true(peak - base > 900 * 1024);
    assert_true(after - base < NEAR_KIB);
    assert_rss_true(after_rss - base_rss < NEAR_KIB);
}

static struct blocks left_behind;

static void *allocate_and_exit(void *arg)
{
    (void)arg;
    left_behind = fill(256 * MIB, 2);
    return NULL;
}

static void test_blocks_of_an_exited_thread_come_back(void **state)
{
    (void)state;
    hak_trim(0);
    long base = own_kib(), base_rss = rss_kib();
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, allocate_and_exit, NULL), 0);
    pthread_join(t, NULL);
    long peak = own_kib();
    release(&left_behind); /* remote frees into abandoned SuperSlabs */
    hak_trim(0);            /* adopts them, returns what is empty */
    long after = own_kib(), after_rss = rss_kib();
    printf("memory return (exited thread): hakmem's own: baseline %ld KiB, peak %ld KiB, trimmed %ld KiB "
           "(process RSS %ld -> %ld KiB)\n",
           base, peak, after, base_rss, after_rss);
    assert_true(peak - base > 200 * 1024);
    assert_true(after - base < NEAR_KIB);
    assert_rss_true(after_rss - base_rss < NEAR_KIB);
}

/* A program that keeps running: allocation work of its own after the
 * burst, enough refills for the heap to look at its idle units. */
static void keep_working(void)
{
    static void *p[4096];
    for (int round = 0; round < 64; round++) {
        for (int i = 0; i < 4096; i++)
            p[i] = hak_malloc(16 + (size_t)(i % 64) * 16);
        for (int i = 0; i < 4096; i++)
            hak_free(p[i]);
    }
}

static void test_decay_returns_memory_without_trim(void **state)
{
    (void)state;
    uint64_t decay = hak_opt.decay_ms;
    hak_opt.decay_ms = 50;
    hak_trim(0);
    long base = own_kib(), base_rss = rss_kib();
    struct blocks b = fill(256 * MIB, 3);
    long peak = own_kib();
    release(&b);
    struct timespec ts = {0, 100 * 1000000};
    nanosleep(&ts, NULL);
    keep_working(); /* the decay has passed: its refills return idle pages */
    long after = own_kib(), after_rss = rss_kib();
    printf("memory return (decay %llu ms, no trim): hakmem's own: baseline %ld KiB, peak %ld KiB, after %ld KiB "
           "(process RSS %ld -> %ld KiB)\n",
           (unsigned long long)hak_opt.decay_ms, base, peak, after, base_rss, after_rss);
    hak_opt.decay_ms = decay;
    assert_true(peak - base > 200 * 1024);
    assert_true(after - base < NEAR_KIB);
    assert_rss_true(after_rss - base_rss < NEAR_KIB);
}

static void *fill_and_free(void *arg)
{
    struct blocks b = fill(64 * MIB, (uint64_t)(uintptr_t)arg);
    release(&b);
    return NULL;
}

/* The options are read by the background thread too. */
static void set_decay(uint64_t ms)
{
    __atomic_store_n(&hak_opt.decay_ms, ms, __ATOMIC_RELAXED);
}

/* Two threads fill and free 64 MiB each and exit, with a decay too long
 * to return anything meanwhile (however slowly they run: a sanitizer);
 * then the decay becomes 50 ms and the main thread idles past it (and past
 * the background thread's next look, within a second). calls: it makes a
 * few allocator calls after that (their slow path gives back what every
 * heap holds past the decay), or none at all. */
static long exited_threads_then_idle(bool calls, long *exited)
{
    set_decay(600000);
    hak_trim(0);
    pthread_t t[2];
    for (uintptr_t i = 0; i < 2; i++)
        assert_int_equal(pthread_create(&t[i], NULL, fill_and_free, (void *)(i + 10)), 0);
    for (int i = 0; i < 2; i++)
        pthread_join(t[i], NULL);
    *exited = own_kib();
    set_decay(50);
    struct timespec ts = {1, 300 * 1000000};
    nanosleep(&ts, NULL);
    if (calls)
        keep_working();
    return own_kib();
}

static void test_exited_threads_memory_decays_at_the_next_slow_path(void **state)
{
    (void)state;
    uint64_t decay = hak_opt.decay_ms;
    hak_trim(0);
    long base = own_kib(), exited;
    long after = exited_threads_then_idle(true, &exited);
    printf("memory return (2 threads exited, decay 50 ms, later calls): hakmem's own: baseline %ld KiB, "
           "threads exited %ld KiB, after %ld KiB\n",
           base, exited, after);
    set_decay(decay);
    assert_true(exited - base > 64 * 1024);
    assert_true(after - base < NEAR_KIB);
}

static void *fill_and_keep_one(void *arg)
{
    static void *kept;
    struct blocks b = fill(64 * MIB, (uint64_t)(uintptr_t)arg);
    kept = b.p[0];
    b.p[0] = b.p[--b.n];
    release(&b);
    (void)kept; /* live when the thread exits: its heap is parked with its caches */
    return NULL;
}

/* A thread exits with a block still live: its heap is parked, caches and
 * all, for a thread that never comes. After the decay another thread's
 * slow path empties those caches and returns what they held. */
static void test_parked_caches_decay(void **state)
{
    (void)state;
    uint64_t decay = hak_opt.decay_ms;
    set_decay(600000);
    hak_trim(0);
    long base = own_kib();
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, fill_and_keep_one, (void *)20), 0);
    pthread_join(t, NULL);
    long exited = own_kib();
    set_decay(50);
    struct timespec ts = {0, 300 * 1000000};
    nanosleep(&ts, NULL);
    keep_working();
    long after = own_kib();
    printf("memory return (a thread exited leaving one block, decay 50 ms, later calls): hakmem's own: "
           "baseline %ld KiB, thread exited %ld KiB, after %ld KiB\n",
           base, exited, after);
    set_decay(decay);
    assert_true(exited - base > 32 * 1024);
    assert_true(after - base < NEAR_KIB);
}

/* Last: its thread stays. The option is on from the start, as the
 * environment would set it: the first slow path starts the thread. */
static void test_background_thread_returns_memory_without_calls(void **state)
{
    (void)state;
    __atomic_store_n(&hak_opt.background, 1, __ATOMIC_RELAXED);
    hak_trim(0);
    long base = own_kib(), exited;
    long after = exited_threads_then_idle(false, &exited);
    printf("memory return (2 threads exited, decay 50 ms, background thread, no call): hakmem's own: "
           "baseline %ld KiB, threads exited %ld KiB, after %ld KiB\n",
           base, exited, after);
    assert_true(exited - base > 64 * 1024);
    assert_true(after - base < NEAR_KIB);
}

/* own_kib() counts hakmem's memory and nothing else: a burst of hakmem's
 * blocks shows in it; the test's own pages (as a sanitizer's shadow would
 * be) do not; a large block counts while it lives. */
static void test_own_memory_is_hakmem_only(void **state)
{
    (void)state;
    hak_trim(0);
    long base = own_kib();
    size_t len = 64 * MIB;
    char *mine = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    assert_true(mine != MAP_FAILED);
    memset(mine, 1, len);
    long with_mine = own_kib();
    struct blocks b = fill(64 * MIB, 4);
    long with_blocks = own_kib();
    release(&b);
    hak_trim(0);
    long trimmed = own_kib();
    char *large = hak_malloc(32 * MIB);
    assert_non_null(large);
    memset(large, 1, 32 * MIB);
    long with_large = own_kib();
    hak_free(large);
    hak_trim(0);
    long after = own_kib();
    munmap(mine, len);
    printf("own memory: baseline %ld KiB, +64 MiB of the test's own %ld, +64 MiB of blocks %ld, trimmed %ld, "
           "+32 MiB large block %ld, freed and trimmed %ld\n",
           base, with_mine, with_blocks, trimmed, with_large, after);
    assert_true(with_mine - base < 1024);
    assert_true(with_blocks - with_mine > 60 * 1024);
    assert_true(with_large - trimmed > 31 * 1024);
    assert_true(after - base < NEAR_KIB);
}

int main(void)
{
    hak_free(hak_malloc(1));
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gigabyte_freed_and_trimmed),
        cmocka_unit_test(test_blocks_of_an_exited_thread_come_back),
        cmocka_unit_test(test_decay_returns_memory_without_trim),
        cmocka_unit_test(test_own_memory_is_hakmem_only),
        cmocka_unit_test(test_exited_threads_memory_decays_at_the_next_slow_path),
        cmocka_unit_test(test_parked_caches_decay),
        cmocka_unit_test(test_background_thread_returns_memory_without_calls),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
