/* idle: does memory come back once a program goes idle?
 *
 * T threads each allocate M MiB of blocks of log-uniform sizes in [min,
 * max] (default 16 B - 64 KiB), writing one byte per 4 KiB of each, free
 * them all and exit. The main thread then makes no allocator call for I ms
 * while it samples its resident set size every S ms; then it makes C
 * assorted allocator calls (malloc and free of small and mid sizes, as an
 * idle server's housekeeping would) and samples once more.
 *
 * Result: peak RSS while the threads held their blocks, RSS just after
 * they exited, RSS at the end of the idle time (no allocator call), RSS
 * after the calls, and the whole RSS series (ms:KiB,...). The samples are
 * read with open/read on /proc/self/statm into a stack buffer: sampling
 * allocates nothing. */
#include <getopt.h>

#include "bench_util.h"

#define MAX_SAMPLES 4096

struct opts {
    unsigned threads;
    size_t mib;
    size_t min, max;
    unsigned idle_ms, sample_ms, calls;
};

static struct opts o = {2, 512, 16, 65536, 2500, 100, 2000};
static pthread_barrier_t held;
static long peak_kib;

/* Blocks are kept on a list threaded through their own first words: the
 * bookkeeping needs no array of its own. */
static void *worker(void *arg)
{
    uint64_t rng = rng_seed(77, (uint64_t)(uintptr_t)arg);
    size_t want = o.mib << 20, got = 0;
    void *list = NULL;
    while (got < want) {
        size_t size = size_logu((uint32_t)rng_next(&rng), o.min, o.max);
        char *p = malloc(size);
        if (!p) {
            fprintf(stderr, "idle: malloc(%zu) returned NULL\n", size);
            exit(1);
        }
        for (size_t i = 4096; i < size; i += 4096)
            p[i] = 1;
        *(void **)p = list;
        list = p;
        got += size;
    }
    /* All threads at their peak at once: that is the peak RSS. */
    pthread_barrier_wait(&held);
    if (arg == 0) {
        long r = bench_rss_kib();
        if (r > peak_kib)
            peak_kib = r;
    }
    pthread_barrier_wait(&held);
    while (list) {
        void *next = *(void **)list;
        free(list);
        list = next;
    }
    return NULL;
}

/* Housekeeping of an idle server: short-lived small and mid blocks. */
static void assorted_calls(unsigned n)
{
    uint64_t rng = rng_seed(99, 0);
    void *keep[16] = {0};
    for (unsigned i = 0; i < n; i++) {
        unsigned slot = (unsigned)(rng_next(&rng) & 15);
        free(keep[slot]);
        keep[slot] = malloc(size_logu((uint32_t)rng_next(&rng), 16, 16384));
        if (!keep[slot])
            exit(1);
        *(char *)keep[slot] = 1;
    }
    for (unsigned i = 0; i < 16; i++)
        free(keep[i]);
}

static void usage(FILE *f)
{
    fprintf(f, "usage: idle [--threads T] [--mib M] [--min B] [--max B] [--idle-ms I] [--sample-ms S] [--calls C]\n");
}

static void parse(int argc, char **argv)
{
    static const struct option opts[] = {
        {"threads", required_argument, NULL, 't'}, {"mib", required_argument, NULL, 'm'},
        {"min", required_argument, NULL, 'a'},     {"max", required_argument, NULL, 'b'},
        {"idle-ms", required_argument, NULL, 'i'}, {"sample-ms", required_argument, NULL, 's'},
        {"calls", required_argument, NULL, 'c'},   {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int ch;
    while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        long v = optarg ? atol(optarg) : 0;
        switch (ch) {
        case 't': o.threads = (unsigned)v; break;
        case 'm': o.mib = (size_t)v; break;
        case 'a': o.min = (size_t)v; break;
        case 'b': o.max = (size_t)v; break;
        case 'i': o.idle_ms = (unsigned)v; break;
        case 's': o.sample_ms = (unsigned)v; break;
        case 'c': o.calls = (unsigned)v; break;
        case 'h': usage(stdout); exit(0);
        default: usage(stderr); exit(2);
        }
    }
    if (o.threads < 1 || o.threads > 64 || o.mib < 1 || o.min < 16 || o.max < o.min || o.sample_ms < 1 ||
        o.idle_ms / o.sample_ms >= MAX_SAMPLES) {
        usage(stderr);
        exit(2);
    }
}

int main(int argc, char **argv)
{
    parse(argc, argv);
    pthread_t th[64];
    pthread_barrier_init(&held, NULL, o.threads);
    for (unsigned t = 0; t < o.threads; t++)
        if (pthread_create(&th[t], NULL, worker, (void *)(uintptr_t)t) != 0) {
            fprintf(stderr, "idle: pthread_create failed\n");
            return 1;
        }
    for (unsigned t = 0; t < o.threads; t++)
        pthread_join(th[t], NULL);
    static long series[MAX_SAMPLES];
    unsigned n = 0;
    uint64_t t0 = now_ns();
    long exited = bench_rss_kib();
    for (unsigned ms = 0; ms <= o.idle_ms; ms += o.sample_ms) {
        sleep_ns(t0 + (uint64_t)ms * 1000000u > now_ns() ? t0 + (uint64_t)ms * 1000000u - now_ns() : 0);
        series[n++] = bench_rss_kib();
    }
    long idle = series[n - 1];
    assorted_calls(o.calls);
    long after = bench_rss_kib();
    printf("RESULT workload=idle threads=%u mib=%zu peak_kb=%ld exited_kb=%ld idle_kb=%ld calls_kb=%ld series=", o.threads,
           o.mib, peak_kib, exited, idle, after);
    for (unsigned i = 0; i < n; i++)
        printf("%s%u:%ld", i ? "," : "", i * o.sample_ms, series[i]);
    printf("\n");
    return 0;
}
