/* Steady state without system calls: after a warm-up, a Larson-style loop
 * (each thread frees a random slot and allocates a random size into it)
 * runs on thread-local caches, slabs and remote lists only. The OS layer's
 * own counters (every mmap, munmap, mprotect and madvise goes through it)
 * must not move during the measured phase. Two presets: 8-128 B and
 * 1-8 KiB, with some frees of another thread's blocks mixed in.
 *
 * Memory that has sat idle for HAKMEM_DECAY_MS goes back to the OS with
 * madvise, on a timer, whatever the workload does; a SuperSlab left over
 * from the warm-up's growth can reach its decay inside the window. The
 * decay is set beyond the test's length so that what is measured is what
 * the allocation paths themselves do (test_provider and test_memreturn
 * cover the decay). */
#include <pthread.h>
#include <stdatomic.h>

#include "internal.h"
#include "hakmem.h"
#include "testutil.h"

#define THREADS 4
#define SLOTS 4096
#define WARMUP 2000000
#define MEASURED 4000000

struct preset {
    size_t min, max;
};

static struct preset preset;
static pthread_barrier_t phase;
static _Atomic(uintptr_t) shared[256];
static uint64_t calls_before[HAK_OS_NCALLS], calls_after[HAK_OS_NCALLS];

static void snapshot(uint64_t *out)
{
    for (int c = 0; c < HAK_OS_NCALLS; c++)
        out[c] = hak_os_calls(c);
}

static void *churn(struct rng *r, void **slots, long iterations)
{
    for (long i = 0; i < iterations; i++) {
        size_t k = rng_range(r, 0, SLOTS - 1);
        if ((i & 15) == 0) /* one free in 16 is of another thread's block */
            slots[k] = (void *)atomic_exchange(&shared[rng_range(r, 0, 255)], (uintptr_t)slots[k]);
        hak_free(slots[k]);
        slots[k] = hak_malloc(rng_range(r, preset.min, preset.max));
        CHECK(slots[k] != NULL);
        *(char *)slots[k] = 1;
    }
    return NULL;
}

static void *worker(void *arg)
{
    struct rng r = {(uint64_t)(uintptr_t)arg};
    void **slots = calloc(SLOTS, sizeof(void *));
    for (int k = 0; k < SLOTS; k++)
        slots[k] = hak_malloc(rng_range(&r, preset.min, preset.max));
    churn(&r, slots, WARMUP);
    pthread_barrier_wait(&phase); /* main snapshots the counters */
    pthread_barrier_wait(&phase);
    churn(&r, slots, MEASURED);
    pthread_barrier_wait(&phase); /* main snapshots again */
    pthread_barrier_wait(&phase);
    for (int k = 0; k < SLOTS; k++)
        hak_free(slots[k]);
    free(slots);
    return NULL;
}

static void run_preset(size_t min, size_t max)
{
    pthread_t th[THREADS];
    preset = (struct preset){min, max};
    hak_opt.decay_ms = 600000;
    hak_trim(0); /* an earlier preset's leftovers */
    pthread_barrier_init(&phase, NULL, THREADS + 1);
    for (uintptr_t t = 0; t < THREADS; t++)
        assert_int_equal(pthread_create(&th[t], NULL, worker, (void *)(t + 11)), 0);
    pthread_barrier_wait(&phase);
    snapshot(calls_before);
    pthread_barrier_wait(&phase);
    pthread_barrier_wait(&phase);
    snapshot(calls_after);
    pthread_barrier_wait(&phase);
    for (int t = 0; t < THREADS; t++)
        pthread_join(th[t], NULL);
    assert_no_thread_failure();
    for (int i = 0; i < 256; i++)
        hak_free((void *)atomic_exchange(&shared[i], 0));
    pthread_barrier_destroy(&phase);
    printf("steady %zu-%zu B: %d threads x %d ops measured: mmap %llu munmap %llu mprotect %llu madvise %llu\n",
           min, max, THREADS, 2 * MEASURED,
           (unsigned long long)(calls_after[HAK_OS_MMAP] - calls_before[HAK_OS_MMAP]),
           (unsigned long long)(calls_after[HAK_OS_MUNMAP] - calls_before[HAK_OS_MUNMAP]),
           (unsigned long long)(calls_after[HAK_OS_MPROTECT] - calls_before[HAK_OS_MPROTECT]),
           (unsigned long long)(calls_after[HAK_OS_MADVISE] - calls_before[HAK_OS_MADVISE]));
    for (int c = 0; c < HAK_OS_NCALLS; c++)
        assert_int_equal(calls_after[c], calls_before[c]);
}

static void test_steady_state_tiny_makes_no_syscalls(void **state)
{
    (void)state;
    run_preset(8, 128);
}

static void test_steady_state_mid_makes_no_syscalls(void **state)
{
    (void)state;
    run_preset(1024, 8192);
}

int main(void)
{
    hak_free(hak_malloc(1));
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_steady_state_tiny_makes_no_syscalls),
        cmocka_unit_test(test_steady_state_mid_makes_no_syscalls),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
