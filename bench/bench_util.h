/* Small helpers shared by the benchmark workloads (header only).
 *
 * Every workload uses the standard malloc/free, so the same binary can be
 * run under any allocator with LD_PRELOAD. Nothing here allocates on the
 * measured paths: clock, random numbers and size draws are pure
 * computation. */
#ifndef BENCH_UTIL_H
#define BENCH_UTIL_H

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <fcntl.h>
#include <unistd.h>

static inline uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static inline void sleep_ns(uint64_t ns)
{
    struct timespec ts = {(time_t)(ns / 1000000000u), (long)(ns % 1000000000u)};
    while (clock_nanosleep(CLOCK_MONOTONIC, 0, &ts, &ts) == EINTR)
        ;
}

/* xorshift64*: a few cycles per draw, good enough for picking slots and
 * sizes. The state must never be 0. */
static inline uint64_t rng_next(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *s = x;
    return x * 0x2545F4914F6CDD1DULL;
}

static inline uint64_t rng_seed(uint64_t seed, uint64_t stream)
{
    /* splitmix64 of (seed, stream): distinct non-zero states per thread */
    uint64_t z = seed * 0x9E3779B97F4A7C15ULL + stream + 1;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    z ^= z >> 31;
    return z ? z : 1;
}

/* The helpers below turn 32 random bits into a value without a division
 * (multiply-high). A hot loop draws 64 bits once and feeds each half to
 * one of them, keeping the random-number cost per operation small. */

/* Uniform in [0, n). */
static inline uint32_t below32(uint32_t r, uint32_t n)
{
    return (uint32_t)(((uint64_t)r * n) >> 32);
}

/* Uniform in [lo, hi]. */
static inline size_t size_uniform(uint32_t r, size_t lo, size_t hi)
{
    return lo + below32(r, (uint32_t)(hi - lo + 1));
}

static inline unsigned log2_floor(size_t v)
{
    return 63u - (unsigned)__builtin_clzll((unsigned long long)v);
}

/* Log-uniform in [lo, hi]: a power-of-two octave [2^e, 2^(e+1)) drawn
 * uniformly among those overlapping [lo, hi), then a size uniform within
 * the octave (from the remainder of the first multiply), clamped to
 * [lo, hi]. Each octave gets the same share of draws. */
static inline size_t size_logu(uint32_t r, size_t lo, size_t hi)
{
    if (lo >= hi)
        return lo;
    unsigned e0 = log2_floor(lo), e1 = log2_floor(hi - 1);
    uint64_t t = (uint64_t)r * (e1 - e0 + 1);
    unsigned e = e0 + (unsigned)(t >> 32);
    size_t size = ((size_t)1 << e) + (size_t)(((t & 0xffffffffu) << e) >> 32);
    return size < lo ? lo : size > hi ? hi : size;
}

static inline uint32_t rng_below(uint64_t *s, uint32_t n)
{
    return below32((uint32_t)(rng_next(s) >> 32), n);
}

static inline size_t rng_range(uint64_t *s, size_t lo, size_t hi)
{
    return size_uniform((uint32_t)(rng_next(s) >> 32), lo, hi);
}

static inline size_t rng_logsize(uint64_t *s, size_t lo, size_t hi)
{
    return size_logu((uint32_t)(rng_next(s) >> 32), lo, hi);
}

static inline void *xmalloc(size_t size)
{
    void *p = malloc(size);
    if (!p) {
        fprintf(stderr, "malloc(%zu) returned NULL\n", size);
        abort();
    }
    return p;
}

/* pthread_create that retries briefly on EAGAIN (threads that just exited
 * may not be reaped yet) and aborts on any other failure. */
static inline void xthread_create(pthread_t *t, const pthread_attr_t *attr, void *(*fn)(void *), void *arg)
{
    for (int tries = 0;; tries++) {
        int err = pthread_create(t, attr, fn, arg);
        if (!err)
            return;
        if (err != EAGAIN || tries >= 1000) {
            fprintf(stderr, "pthread_create: %s\n", strerror(err));
            abort();
        }
        sched_yield();
    }
}

/* Strict number parsing for the command line: the whole string must be a
 * number within [lo, hi]. Return 0 on success, -1 otherwise. */
static inline int parse_long(const char *text, long lo, long hi, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(text, &end, 10);
    if (errno || end == text || *end || v < lo || v > hi)
        return -1;
    *out = v;
    return 0;
}

static inline int parse_double(const char *text, double lo, double hi, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(text, &end);
    if (errno || end == text || *end || !(v >= lo && v <= hi))
        return -1;
    *out = v;
    return 0;
}

/* Write a block the way a program that uses it would: its first and last
 * bytes and one byte in every 4 KiB page between. Touching only the two
 * ends would let an allocator whose blocks sit back to back share a page
 * between neighbours and look smaller than it is. */
static inline void bench_touch(char *p, size_t size, char v)
{
    for (size_t off = 0; off < size; off += 4096)
        p[off] = v;
    p[size - 1] = v;
}

/* This process's resident set size in KiB, read with open/read into a
 * stack buffer: it allocates nothing. */
/* Pages of the huge page pool a process has mapped (RSS leaves them out),
 * KiB, from the HugetlbPages line of its status file (0 if none). */
static inline long bench_hugetlb_kib_of(const char *status_path)
{
    char buf[4096];
    int fd = open(status_path, O_RDONLY);
    if (fd < 0)
        return 0;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    buf[n > 0 ? n : 0] = 0;
    const char *at = strstr(buf, "HugetlbPages:");
    return at ? atol(at + 13) : 0;
}

static inline long bench_hugetlb_kib(void)
{
    return bench_hugetlb_kib_of("/proc/self/status");
}

static inline long bench_rss_kib(void)
{
    char buf[128];
    int fd = open("/proc/self/statm", O_RDONLY);
    if (fd < 0)
        return -1;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return -1;
    buf[n] = 0;
    long size, resident;
    if (sscanf(buf, "%ld %ld", &size, &resident) != 2)
        return -1;
    return resident * (sysconf(_SC_PAGESIZE) / 1024) + bench_hugetlb_kib();
}

#endif
