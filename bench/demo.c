/* A small demo of hakmem under load: T threads each churn an array of
 * slots (free a random slot, allocate a random size into it), with hakmem's
 * hak_malloc/hak_free and with the C library's malloc/free side by side.
 * Prints operations per second for both. Usage: demo [threads] [seconds] */
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "hakmem.h"

#define SLOTS 4096

struct run {
    void *(*alloc)(size_t);
    void (*release)(void *);
    double seconds;
    _Atomic uint64_t ops;
};

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void *churn(void *arg)
{
    struct run *r = arg;
    void **slot = calloc(SLOTS, sizeof *slot);
    uint64_t x = (uint64_t)(uintptr_t)slot | 1, ops = 0;
    double end = now() + r->seconds;
    while (now() < end) {
        for (int i = 0; i < 4096; i++) {
            x ^= x << 13, x ^= x >> 7, x ^= x << 17;
            size_t k = x % SLOTS, size = 8 + (x >> 32) % 1000;
            r->release(slot[k]);
            slot[k] = r->alloc(size);
            ((char *)slot[k])[0] = 1;
        }
        ops += 2 * 4096;
    }
    for (int k = 0; k < SLOTS; k++)
        r->release(slot[k]);
    free(slot);
    atomic_fetch_add(&r->ops, ops);
    return NULL;
}

static double measure(void *(*alloc)(size_t), void (*release)(void *), int threads, double seconds)
{
    struct run r = {alloc, release, seconds, 0};
    pthread_t th[64];
    for (int t = 0; t < threads; t++)
        pthread_create(&th[t], NULL, churn, &r);
    for (int t = 0; t < threads; t++)
        pthread_join(th[t], NULL);
    return (double)r.ops / seconds;
}

int main(int argc, char **argv)
{
    int threads = argc > 1 ? atoi(argv[1]) : 2;
    double seconds = argc > 2 ? atof(argv[2]) : 2.0;
    if (threads < 1 || threads > 64 || seconds <= 0) {
        fprintf(stderr, "usage: demo [threads 1-64] [seconds]\n");
        return 2;
    }
    printf("churn of %d slots per thread, sizes 8-1007 B, %d threads, %.1f s each\n", SLOTS, threads, seconds);
    double libc = measure(malloc, free, threads, seconds);
    double hak = measure(hak_malloc, hak_free, threads, seconds);
    printf("libc malloc: %8.2f M ops/s\n", libc / 1e6);
    printf("hakmem:      %8.2f M ops/s  (%.2fx)\n", hak / 1e6, hak / libc);
    return 0;
}
