/* mid_large_mt: thread-local churn of mid-size blocks.
 *
 * Each of T threads keeps a working set of L live blocks (it allocates them
 * itself before the clock starts) and repeatedly frees a random one and
 * allocates a new block of a size uniform in [min, max] in its place,
 * writing its first and last byte. No block crosses threads. Defaults:
 * 8 KiB blocks, 256 live per thread; the harness also runs 2-64 KiB.
 *
 * Result: operations per second (one malloc or one free each). With
 * --rounds N each thread stops after N rounds of 64 frees and mallocs
 * instead of at the clock: a fixed amount of work, whose instructions
 * callgrind counts the same on every run. */
#include <getopt.h>
#include <stdatomic.h>

#include "bench_util.h"

struct run {
    size_t live, min, max;
    uint64_t seed, rounds; /* rounds: 0 = until stop */
    _Atomic int stop;
    pthread_barrier_t start;
};

struct worker {
    _Alignas(64) struct run *run;
    long index;
    uint64_t ops;
    uint64_t end_ns;
};

static void *worker_thread(void *arg)
{
    struct worker *w = arg;
    struct run *r = w->run;
    const size_t n = r->live, lo = r->min, hi = r->max;
    uint64_t rng = rng_seed(r->seed, (uint64_t)w->index), ops = 0;
    void **slot = xmalloc(sizeof *slot * n);
    for (size_t i = 0; i < n; i++) {
        size_t size = rng_range(&rng, lo, hi);
        char *p = xmalloc(size);
        bench_touch(p, size, 1);
        slot[i] = p;
    }
    pthread_barrier_wait(&r->start);

    for (uint64_t round = 0; r->rounds ? round < r->rounds : !atomic_load_explicit(&r->stop, memory_order_relaxed);
         round++) {
        for (int i = 0; i < 64; i++) {
            uint64_t x = rng_next(&rng);
            uint32_t k = below32((uint32_t)(x >> 32), (uint32_t)n);
            free(slot[k]);
            size_t size = size_uniform((uint32_t)x, lo, hi);
            char *p = xmalloc(size);
            bench_touch(p, size, (char)(k ^ i));
            slot[k] = p;
        }
        ops += 2 * 64;
    }
    w->end_ns = now_ns();
    w->ops = ops;
    for (size_t i = 0; i < n; i++)
        free(slot[i]);
    free(slot);
    return NULL;
}

static void usage(void)
{
    fprintf(stderr,
            "usage: mid_large_mt [options]\n"
            "  -t, --threads T   threads, 1-1024 (default 2)\n"
            "  -s, --seconds S   run time (default 2)\n"
            "      --rounds N    each thread stops after N rounds of 64 frees and mallocs\n"
            "                    (the run time is then what they take)\n"
            "      --min B       smallest block size in bytes (default 8192)\n"
            "      --max B       largest block size in bytes (default 8192)\n"
            "      --live N      live blocks per thread (default 256)\n"
            "      --seed X      random seed (default 1)\n");
    exit(2);
}

int main(int argc, char **argv)
{
    long threads = 2, live = 256, min = 8192, max = 8192, seed = 1, rounds = 0;
    double seconds = 2.0;
    static const struct option opts[] = {
        {"threads", required_argument, 0, 't'}, {"seconds", required_argument, 0, 's'},
        {"min", required_argument, 0, 'm'},     {"max", required_argument, 0, 'M'},
        {"live", required_argument, 0, 'n'},    {"seed", required_argument, 0, 'x'},
        {"rounds", required_argument, 0, 'r'},  {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    int c;
    while ((c = getopt_long(argc, argv, "t:s:h", opts, NULL)) != -1) {
        int bad = 0;
        switch (c) {
        case 't': bad = parse_long(optarg, 1, 1024, &threads); break;
        case 's': bad = parse_double(optarg, 0.001, 86400, &seconds); break;
        case 'm': bad = parse_long(optarg, 1, 1L << 30, &min); break;
        case 'M': bad = parse_long(optarg, 1, 1L << 30, &max); break;
        case 'n': bad = parse_long(optarg, 1, 1L << 24, &live); break;
        case 'x': bad = parse_long(optarg, 0, 1L << 62, &seed); break;
        case 'r': bad = parse_long(optarg, 1, 1L << 40, &rounds); break;
        default: usage();
        }
        if (bad)
            usage();
    }
    if (optind != argc || min > max)
        usage();

    struct run run = {.live = (size_t)live,
                      .min = (size_t)min,
                      .max = (size_t)max,
                      .seed = (uint64_t)seed,
                      .rounds = (uint64_t)rounds};
    pthread_barrier_init(&run.start, NULL, (unsigned)threads + 1);
    struct worker *w = aligned_alloc(64, sizeof *w * (size_t)threads);
    pthread_t *th = xmalloc(sizeof *th * (size_t)threads);
    if (!w) {
        fprintf(stderr, "out of memory\n");
        return 1;
    }
    for (long t = 0; t < threads; t++) {
        w[t] = (struct worker){.run = &run, .index = t};
        xthread_create(&th[t], NULL, worker_thread, &w[t]);
    }
    pthread_barrier_wait(&run.start);
    uint64_t t0 = now_ns();
    if (!rounds) {
        sleep_ns((uint64_t)(seconds * 1e9));
        atomic_store(&run.stop, 1);
    }
    uint64_t ops = 0, t1 = t0;
    for (long t = 0; t < threads; t++) {
        pthread_join(th[t], NULL);
        ops += w[t].ops;
        if (w[t].end_ns > t1)
            t1 = w[t].end_ns;
    }
    double elapsed = (double)(t1 - t0) * 1e-9;
    printf("RESULT workload=mid_large_mt threads=%ld min=%ld max=%ld live=%ld seconds=%.3f ops=%llu "
           "ops_per_sec=%.0f\n",
           threads, min, max, live, elapsed, (unsigned long long)ops, (double)ops / elapsed);
    free(th);
    free(w);
    return 0;
}
