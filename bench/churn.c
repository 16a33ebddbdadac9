/* churn: many short-lived threads.
 *
 * The main thread creates N threads in total, keeping K alive at a time
 * (it joins the oldest before creating the next). Each thread allocates B
 * blocks of sizes uniform in [min, max] (first byte written), frees every
 * other one itself and exits; the main thread frees the rest after joining
 * it. Thread start-up and exit inside the allocator (cache creation, flush,
 * handing back or abandoning its memory) and frees of a dead thread's
 * blocks are the load.
 *
 * Result: threads per second (and malloc+free operations per second). */
#include <getopt.h>

#include "bench_util.h"

struct run {
    size_t blocks, min, max;
    uint64_t seed;
};

struct slot {
    _Alignas(64) pthread_t th;
    struct run *run;
    void **block;       /* the odd-numbered ones are left to the main thread */
    uint64_t index;
    int busy;
};

static void *short_thread(void *arg)
{
    struct slot *s = arg;
    struct run *r = s->run;
    const size_t n = r->blocks, lo = r->min, hi = r->max;
    uint64_t rng = rng_seed(r->seed, s->index);
    void **block = s->block;
    for (size_t i = 0; i < n; i++) {
        size_t size = rng_range(&rng, lo, hi);
        char *p = xmalloc(size);
        p[0] = (char)i;
        block[i] = p;
    }
    for (size_t i = 0; i < n; i += 2)
        free(block[i]);
    return NULL;
}

static void reap(struct slot *s)
{
    pthread_join(s->th, NULL);
    for (size_t i = 1; i < s->run->blocks; i += 2)
        free(s->block[i]);
    s->busy = 0;
}

static void usage(void)
{
    fprintf(stderr,
            "usage: churn [options]\n"
            "  -n, --threads N      threads created in total (default 20000)\n"
            "  -k, --concurrent K   threads alive at a time, 1-1024 (default 4)\n"
            "      --blocks B       blocks each thread allocates (default 100)\n"
            "      --min B          smallest block size in bytes (default 16)\n"
            "      --max B          largest block size in bytes (default 512)\n"
            "      --seed X         random seed (default 1)\n");
    exit(2);
}

int main(int argc, char **argv)
{
    long total = 20000, conc = 4, blocks = 100, min = 16, max = 512, seed = 1;
    static const struct option opts[] = {
        {"threads", required_argument, 0, 'n'}, {"concurrent", required_argument, 0, 'k'},
        {"blocks", required_argument, 0, 'b'},  {"min", required_argument, 0, 'm'},
        {"max", required_argument, 0, 'M'},     {"seed", required_argument, 0, 'x'},
        {"help", no_argument, 0, 'h'},          {0, 0, 0, 0},
    };
    int c;
    while ((c = getopt_long(argc, argv, "n:k:h", opts, NULL)) != -1) {
        int bad = 0;
        switch (c) {
        case 'n': bad = parse_long(optarg, 1, 1L << 30, &total); break;
        case 'k': bad = parse_long(optarg, 1, 1024, &conc); break;
        case 'b': bad = parse_long(optarg, 1, 1L << 20, &blocks); break;
        case 'm': bad = parse_long(optarg, 1, 1L << 30, &min); break;
        case 'M': bad = parse_long(optarg, 1, 1L << 30, &max); break;
        case 'x': bad = parse_long(optarg, 0, 1L << 62, &seed); break;
        default: usage();
        }
        if (bad)
            usage();
    }
    if (optind != argc || min > max)
        usage();

    struct run run = {.blocks = (size_t)blocks, .min = (size_t)min, .max = (size_t)max, .seed = (uint64_t)seed};
    struct slot *slots = aligned_alloc(64, sizeof *slots * (size_t)conc);
    if (!slots) {
        fprintf(stderr, "out of memory\n");
        return 1;
    }
    for (long k = 0; k < conc; k++) {
        memset(&slots[k], 0, sizeof slots[k]);
        slots[k].run = &run;
        slots[k].block = xmalloc(sizeof *slots[k].block * (size_t)blocks);
    }

    uint64_t t0 = now_ns();
    for (long i = 0; i < total; i++) {
        struct slot *s = &slots[i % conc];
        if (s->busy)
            reap(s);
        s->index = (uint64_t)i;
        s->busy = 1;
        xthread_create(&s->th, NULL, short_thread, s);
    }
    for (long k = 0; k < conc; k++)
        if (slots[k].busy)
            reap(&slots[k]);
    uint64_t t1 = now_ns();

    for (long k = 0; k < conc; k++)
        free(slots[k].block);
    free(slots);
    double elapsed = (double)(t1 - t0) * 1e-9;
    double ops = 2.0 * (double)total * (double)blocks;
    printf("RESULT workload=churn threads=%ld concurrent=%ld blocks=%ld min=%ld max=%ld seconds=%.3f "
           "threads_per_sec=%.0f ops_per_sec=%.0f\n",
           total, conc, blocks, min, max, elapsed, (double)total / elapsed, ops / elapsed);
    return 0;
}
