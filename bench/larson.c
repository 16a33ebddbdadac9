/* larson: the Larson server simulation.
 *
 * Each of T chains owns an array of N block slots, pre-filled by the main
 * thread. The chain's thread repeatedly frees a random slot and allocates a
 * block of random size in [min, max] into it, writing its first and last
 * byte. After R rounds (one round = N replacements) the thread hands the
 * array to a thread it creates, and exits; the new thread continues. Thread
 * creation, thread exit and frees of blocks that another thread allocated
 * are therefore part of the load. After S seconds every chain stops at the
 * end of its current round.
 *
 * --standard runs it as Larson & Krishnan's larson.cpp does and as the
 * allocator benchmark suites run it (`larson 5 8 1000 5000 100 4141 2`: 5 s,
 * 8-1000 B, 5,000 blocks per thread, 100 rounds, seed 4141): the main thread
 * fills every array and then replaces 4 N of its blocks at random, so the
 * first threads free blocks the main thread made; a thread checks the stop
 * flag after every replacement, not every round; a block gets its first two
 * bytes written, as there.
 *
 * Result: operations per second, an operation being one malloc or one free,
 * over the time from the creation of the first threads to the last chain
 * stopping. */
#include <getopt.h>
#include <stdatomic.h>
#include <stdbool.h>

#include "bench_util.h"

struct run {
    size_t slots, min, max;
    long rounds;
    bool standard;
    _Atomic int stop;
    _Atomic int done;
    pthread_attr_t detached;
};

struct chain {
    _Alignas(64) void **slot;
    struct run *run;
    uint64_t rng;
    uint64_t ops;
    uint64_t threads;
};

static void *chain_thread(void *arg)
{
    struct chain *c = arg;
    struct run *r = c->run;
    void **slot = c->slot;
    const size_t n = r->slots, lo = r->min, hi = r->max;
    uint64_t rng = c->rng, ops = 0;
    bool stopped = false;

    for (long round = 0; round < r->rounds && !stopped; round++) {
        if (atomic_load_explicit(&r->stop, memory_order_relaxed)) {
            stopped = true;
            break;
        }
        size_t i;
        for (i = 0; i < n; i++) {
            uint64_t x = rng_next(&rng);
            uint32_t k = below32((uint32_t)(x >> 32), (uint32_t)n);
            free(slot[k]);
            size_t size = size_uniform((uint32_t)x, lo, hi);
            char *p = xmalloc(size);
            slot[k] = p;
            if (!r->standard) {
                bench_touch(p, size, (char)(k ^ i));
                continue;
            }
            p[0] = 'a';
            p[size > 1] = 'b';
            if (atomic_load_explicit(&r->stop, memory_order_relaxed)) {
                stopped = true;
                i++;
                break;
            }
        }
        ops += 2 * i;
    }
    c->rng = rng;
    c->ops += ops;
    if (!stopped && !atomic_load_explicit(&r->stop, memory_order_relaxed)) {
        /* hand the array over; from here on this thread leaves c alone */
        pthread_t next;
        c->threads++;
        xthread_create(&next, &r->detached, chain_thread, c);
        return NULL;
    }
    atomic_fetch_add_explicit(&r->done, 1, memory_order_release);
    return NULL;
}

static void usage(void)
{
    fprintf(stderr,
            "usage: larson [options]\n"
            "  -t, --threads T   chains (threads alive at a time), 1-1024 (default 2)\n"
            "  -s, --seconds S   run time (default 2)\n"
            "      --min B       smallest block size in bytes (default 8)\n"
            "      --max B       largest block size in bytes (default 128)\n"
            "      --slots N     blocks per chain (default 1000)\n"
            "      --rounds R    rounds of N replacements per thread before hand-over (default 10)\n"
            "      --seed X      random seed (default 1)\n"
            "      --standard    Larson & Krishnan's procedure (see the top of larson.c)\n");
    exit(2);
}

int main(int argc, char **argv)
{
    long threads = 2, slots = 1000, rounds = 10, min = 8, max = 128, seed = 1;
    bool standard = false;
    double seconds = 2.0;
    static const struct option opts[] = {
        {"threads", required_argument, 0, 't'}, {"seconds", required_argument, 0, 's'},
        {"min", required_argument, 0, 'm'},     {"max", required_argument, 0, 'M'},
        {"slots", required_argument, 0, 'n'},   {"rounds", required_argument, 0, 'r'},
        {"seed", required_argument, 0, 'x'},    {"standard", no_argument, 0, 'S'},
        {"help", no_argument, 0, 'h'},
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
        case 'n': bad = parse_long(optarg, 1, 1L << 24, &slots); break;
        case 'r': bad = parse_long(optarg, 1, 1L << 30, &rounds); break;
        case 'x': bad = parse_long(optarg, 0, 1L << 62, &seed); break;
        case 'S': standard = true; break;
        default: usage();
        }
        if (bad)
            usage();
    }
    if (optind != argc || min > max)
        usage();

    struct run run = {.slots = (size_t)slots, .min = (size_t)min, .max = (size_t)max, .rounds = rounds,
                      .standard = standard};
    pthread_attr_init(&run.detached);
    pthread_attr_setdetachstate(&run.detached, PTHREAD_CREATE_DETACHED);

    struct chain *chains = aligned_alloc(64, sizeof *chains * (size_t)threads);
    if (!chains) {
        fprintf(stderr, "out of memory for %ld chains\n", threads);
        return 1;
    }
    for (long t = 0; t < threads; t++) {
        struct chain *ch = &chains[t];
        memset(ch, 0, sizeof *ch);
        ch->run = &run;
        ch->rng = rng_seed((uint64_t)seed, (uint64_t)t);
        ch->slot = xmalloc(sizeof *ch->slot * (size_t)slots);
        for (long i = 0; i < slots; i++) {
            size_t size = rng_range(&ch->rng, run.min, run.max);
            char *p = xmalloc(size);
            bench_touch(p, size, 1);
            ch->slot[i] = p;
        }
        for (long i = 0; standard && i < 4 * slots; i++) {
            uint32_t k = rng_below(&ch->rng, (uint32_t)slots);
            free(ch->slot[k]);
            size_t size = rng_range(&ch->rng, run.min, run.max);
            ch->slot[k] = xmalloc(size);
            *(char *)ch->slot[k] = 'a';
        }
    }

    uint64_t t0 = now_ns();
    for (long t = 0; t < threads; t++) {
        pthread_t th;
        chains[t].threads = 1;
        xthread_create(&th, &run.detached, chain_thread, &chains[t]);
    }
    sleep_ns((uint64_t)(seconds * 1e9));
    atomic_store(&run.stop, 1);
    while (atomic_load_explicit(&run.done, memory_order_acquire) < threads)
        sleep_ns(20000);
    uint64_t t1 = now_ns();

    uint64_t ops = 0, created = 0;
    for (long t = 0; t < threads; t++) {
        ops += chains[t].ops;
        created += chains[t].threads;
        for (long i = 0; i < slots; i++)
            free(chains[t].slot[i]);
        free(chains[t].slot);
    }
    free(chains);
    double elapsed = (double)(t1 - t0) * 1e-9;
    printf("RESULT workload=larson threads=%ld min=%ld max=%ld slots=%ld rounds=%ld seconds=%.3f "
           "ops=%llu threads_created=%llu ops_per_sec=%.0f\n",
           threads, min, max, slots, rounds, elapsed, (unsigned long long)ops, (unsigned long long)created,
           (double)ops / elapsed);
    return 0;
}
