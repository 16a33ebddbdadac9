/* growth: a heap growing from empty to G GiB, then freed.
 *
 * One thread allocates blocks of log-uniform sizes in [min, max] (default
 * 64 B - 16 KiB) until G GiB have been requested, writing one byte per
 * 4 KiB of each block as a program filling its memory would, then frees
 * them all in allocation order. Every malloc call is timed on its own with
 * CLOCK_MONOTONIC (so each latency includes about one clock read); the
 * latencies and block pointers live in arrays mapped and pre-faulted before
 * the clock starts, so the measurement allocates nothing.
 *
 * Result: time to grow, malloc latency percentiles (p50, p99, p99.9, max),
 * minor page faults during growth, time to free everything, and the
 * resident set size left after the frees. */
#include <fcntl.h>
#include <getopt.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <unistd.h>

#include "bench_util.h"

static void *map_array(size_t bytes)
{
    void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
    if (p == MAP_FAILED) {
        perror("mmap");
        exit(1);
    }
    return p;
}

static long minflt(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_minflt;
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return (x > y) - (x < y);
}

/* nearest-rank percentile of a sorted array */
static uint32_t percentile(const uint32_t *v, size_t n, double p)
{
    size_t rank = (size_t)(p / 100.0 * (double)n + 0.999999);
    if (rank < 1)
        rank = 1;
    if (rank > n)
        rank = n;
    return v[rank - 1];
}

static void usage(void)
{
    fprintf(stderr,
            "usage: growth [options]\n"
            "  -g, --gib G    GiB to allocate (default 1)\n"
            "      --min B    smallest block size in bytes (default 64)\n"
            "      --max B    largest block size in bytes (default 16384)\n"
            "      --seed X   random seed (default 1)\n");
    exit(2);
}

int main(int argc, char **argv)
{
    long min = 64, max = 16384, seed = 1;
    double gib = 1.0;
    static const struct option opts[] = {
        {"gib", required_argument, 0, 'g'}, {"min", required_argument, 0, 'm'},
        {"max", required_argument, 0, 'M'}, {"seed", required_argument, 0, 'x'},
        {"help", no_argument, 0, 'h'},      {0, 0, 0, 0},
    };
    int c;
    while ((c = getopt_long(argc, argv, "g:h", opts, NULL)) != -1) {
        int bad = 0;
        switch (c) {
        case 'g': bad = parse_double(optarg, 0.001, 1024, &gib); break;
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

    /* First pass: how many blocks reach the target. The timed pass draws
     * the same sizes again from the same seed. */
    const uint64_t target = (uint64_t)(gib * (double)(1ULL << 30));
    uint64_t rng = rng_seed((uint64_t)seed, 0), bytes = 0;
    size_t n = 0;
    while (bytes < target) {
        bytes += rng_logsize(&rng, (size_t)min, (size_t)max);
        n++;
    }
    uint32_t *lat = map_array(n * sizeof *lat);
    void **ptr = map_array(n * sizeof *ptr);

    rng = rng_seed((uint64_t)seed, 0);
    long flt0 = minflt();
    uint64_t t0 = now_ns();
    for (size_t i = 0; i < n; i++) {
        size_t size = rng_logsize(&rng, (size_t)min, (size_t)max);
        uint64_t a = now_ns();
        char *p = malloc(size);
        uint64_t b = now_ns();
        if (!p) {
            fprintf(stderr, "malloc(%zu) returned NULL after %zu blocks\n", size, i);
            abort();
        }
        lat[i] = b - a > UINT32_MAX ? UINT32_MAX : (uint32_t)(b - a);
        for (size_t off = 0; off < size; off += 4096)
            p[off] = 1;
        ptr[i] = p;
    }
    uint64_t t1 = now_ns();
    long flt1 = minflt();
    long rss_grown = bench_rss_kib();

    uint64_t t2 = now_ns();
    for (size_t i = 0; i < n; i++)
        free(ptr[i]);
    uint64_t t3 = now_ns();
    long rss_freed = bench_rss_kib();

    qsort(lat, n, sizeof *lat, cmp_u32);
    printf("RESULT workload=growth gib=%.3f min=%ld max=%ld blocks=%zu bytes=%llu grow_ms=%.2f "
           "p50_ns=%u p99_ns=%u p999_ns=%u max_ns=%u minflt=%ld free_ms=%.2f rss_grown_kb=%ld "
           "rss_after_free_kb=%ld\n",
           gib, min, max, n, (unsigned long long)bytes, (double)(t1 - t0) * 1e-6, percentile(lat, n, 50),
           percentile(lat, n, 99), percentile(lat, n, 99.9), lat[n - 1], flt1 - flt0,
           (double)(t3 - t2) * 1e-6, rss_grown, rss_freed);
    munmap(lat, n * sizeof *lat);
    munmap(ptr, n * sizeof *ptr);
    return 0;
}
