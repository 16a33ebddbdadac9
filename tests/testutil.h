/* Helpers shared by the tests: a fast PRNG, block patterns, memory
 * figures, and a way to run a function in a child process that is expected
 * to abort. */
#ifndef HAK_TESTUTIL_H
#define HAK_TESTUTIL_H

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include <fcntl.h>
#include <cmocka.h>

#include "internal.h"

struct rng {
    uint64_t s;
};

static inline uint64_t rng_next(struct rng *r)
{
    uint64_t z = (r->s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static inline size_t rng_range(struct rng *r, size_t lo, size_t hi)
{
    return lo + (size_t)(rng_next(r) % (hi - lo + 1));
}

/* The pattern of a block depends on its address and size, so a block that
 * was overwritten, handed out twice or confused with another shows. */
static inline uint64_t pattern_word(const void *p, size_t size, size_t i)
{
    return ((uint64_t)(uintptr_t)p * 0x9E3779B97F4A7C15ull) ^ (size * 0xC2B2AE3D27D4EB4Full) ^ (i * 0x165667B19E3779F9ull);
}

static inline void pattern_fill(void *p, size_t size)
{
    uint64_t *w = p;
    size_t n = size / 8;
    /* Whole block for small sizes; head and tail words for big ones. */
    if (n <= 64) {
        for (size_t i = 0; i < n; i++)
            w[i] = pattern_word(p, size, i);
    } else {
        for (size_t i = 0; i < 32; i++) {
            w[i] = pattern_word(p, size, i);
            w[n - 1 - i] = pattern_word(p, size, n - 1 - i);
        }
    }
    for (size_t i = n * 8; i < size; i++)
        ((unsigned char *)p)[i] = (unsigned char)(size + i);
}

static inline int pattern_check(const void *p, size_t size)
{
    const uint64_t *w = p;
    size_t n = size / 8;
    if (n <= 64) {
        for (size_t i = 0; i < n; i++)
            if (w[i] != pattern_word(p, size, i))
                return 0;
    } else {
        for (size_t i = 0; i < 32; i++)
            if (w[i] != pattern_word(p, size, i) || w[n - 1 - i] != pattern_word(p, size, n - 1 - i))
                return 0;
    }
    for (size_t i = n * 8; i < size; i++)
        if (((const unsigned char *)p)[i] != (unsigned char)(size + i))
            return 0;
    return 1;
}

/* cmocka's assertions may only run on the test's own thread. Worker
 * threads use CHECK, which records the first failure and returns from the
 * worker; the test thread then calls assert_no_thread_failure(). */
static char thread_failure[256];
static int thread_failed;

#define CHECK(cond)                                                                              \
    do {                                                                                         \
        if (!(cond)) {                                                                           \
            if (!__atomic_exchange_n(&thread_failed, 1, __ATOMIC_SEQ_CST))                        \
                snprintf(thread_failure, sizeof thread_failure, "%s:%d: %s", __FILE__, __LINE__, \
                         #cond);                                                                 \
            return NULL;                                                                         \
        }                                                                                        \
    } while (0)

static inline void assert_no_thread_failure(void)
{
    if (__atomic_load_n(&thread_failed, __ATOMIC_SEQ_CST))
        fail_msg("in a worker thread: %s", thread_failure);
}

/* Resident set size of the whole process in KiB. */
static inline long rss_kib(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    long pages = 0, resident = 0;
    if (f) {
        if (fscanf(f, "%ld %ld", &pages, &resident) != 2)
            resident = 0;
        fclose(f);
    }
    return resident * (sysconf(_SC_PAGESIZE) / 1024);
}

/* hakmem's own resident memory in KiB: the pages of the mappings it made
 * (SuperSlabs, side tables, heaps, large blocks, the daemon's file),
 * counted with mincore. A sanitizer's shadow, the test's own arrays and
 * pages of other mappings that were merely read (which are real pages on
 * a kernel without a shared zero page) do not count. */
static inline long own_kib(void)
{
    return (long)(hak_resident_bytes() / 1024);
}

/* Built with a sanitizer (make asan, make tsan)? */
#ifdef __SANITIZE_ADDRESS__
#define TEST_ASAN 1
#else
#define TEST_ASAN 0
#endif
#ifdef __SANITIZE_THREAD__
#define TEST_TSAN 1
#else
#define TEST_TSAN 0
#endif

/* Every memory assertion is made on own_kib(), in every build. In a build
 * without a sanitizer (whose shadow and per-thread state grow with the
 * test's work) it is made on the whole process's RSS as well, which
 * catches memory that hakmem holds but own_kib() does not see. */
#define assert_rss_true(cond)                                                           \
    do {                                                                                \
        if (TEST_ASAN || TEST_TSAN)                                                     \
            print_message("whole-process RSS not checked under a sanitizer: %s\n", #cond); \
        else                                                                            \
            assert_true(cond);                                                          \
    } while (0)

/* Run fn in a child; return its stderr (up to cap bytes) and whether it
 * died of SIGABRT. */
/* Run fn in a child; true if it died of signal sig. Its stderr in err. */
static inline int run_expect_signal(void (*fn)(void), int sig, char *err, size_t cap)
{
    int pipefd[2];
    if (pipe(pipefd) != 0)
        return 0;
    pid_t pid = fork();
    if (pid == 0) {
        close(pipefd[0]);
        dup2(pipefd[1], 2);
        fn();
        _exit(0);
    }
    close(pipefd[1]);
    size_t got = 0;
    ssize_t r;
    while (got + 1 < cap && (r = read(pipefd[0], err + got, cap - 1 - got)) > 0)
        got += (size_t)r;
    err[got] = 0;
    close(pipefd[0]);
    int status = 0;
    waitpid(pid, &status, 0);
    if (!(WIFSIGNALED(status) && WTERMSIG(status) == sig) && got + 40 < cap)
        snprintf(err + got, cap - got, "[child status %#x]", status);
    return WIFSIGNALED(status) && WTERMSIG(status) == sig;
}

static inline int run_expect_abort(void (*fn)(void), char *err, size_t cap)
{
    return run_expect_signal(fn, SIGABRT, err, cap);
}

#endif
