/* soak_client: a long-running mixed load for the soak test (tests/soak.py).
 *
 * Uses only the standard allocation API, so it runs under LD_PRELOAD like
 * any program. Worker threads keep slots of blocks of every size range
 * (small, mid, large), check each block's pattern before freeing or
 * resizing it, trade blocks through a shared exchange so that many frees
 * happen on another thread, and hand their slots to a fresh thread every so
 * often (thread churn). Now and then the main thread forks; the child checks
 * and writes blocks, and the parent checks that the child's writes did not
 * reach it. Once a second it prints a status line. On SIGTERM it stops the
 * workers, checks and frees every block and exits 0 if nothing was ever
 * wrong. Any mismatch prints "CORRUPTION" and exits 1 at once. */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define SLOTS 2048
#define EXCHANGE 1024
#define HANDOFF_OPS 200000 /* operations before a worker hands over */

struct block {
    uint64_t size;  /* whole block, header included */
    uint64_t seed;  /* pattern seed: changes on every write */
};

struct chain {
    struct block *slot[SLOTS];
    uint64_t rng;
};

static _Atomic(struct block *) exchange_slot[EXCHANGE];
static atomic_bool stop;
static _Atomic uint64_t ops_done, threads_made, forks_done;
static struct chain *chains;
static long nthreads = 4;
static _Atomic long chains_running;

static uint64_t next_rng(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static __attribute__((noreturn)) void corruption(const char *what, const void *p)
{
    printf("CORRUPTION %s at %p (pid %d)\n", what, p, (int)getpid());
    fflush(stdout);
    _exit(1);
}

static unsigned char byte_at(const struct block *b, size_t i)
{
    return (unsigned char)((b->seed >> ((i & 7) * 8)) ^ (i * 131));
}

/* The pattern covers the first and last 64 bytes and one byte per 4 KiB,
 * so large blocks cost little to check but a stray page still shows. */
static void fill(struct block *b, uint64_t seed)
{
    unsigned char *p = (unsigned char *)(b + 1);
    size_t n = b->size - sizeof *b;
    b->seed = seed;
    for (size_t i = 0; i < n; i = i < 64 || i + 64 >= n ? i + 1 : (i + 4096 < n - 64 ? i + 4096 : n - 64))
        p[i] = byte_at(b, i);
}

static void check(const struct block *b)
{
    const unsigned char *p = (const unsigned char *)(b + 1);
    if (b->size < sizeof *b || b->size > (8u << 20))
        corruption("header", b);
    size_t n = b->size - sizeof *b;
    for (size_t i = 0; i < n; i = i < 64 || i + 64 >= n ? i + 1 : (i + 4096 < n - 64 ? i + 4096 : n - 64))
        if (p[i] != byte_at(b, i))
            corruption("pattern", b);
}

static size_t random_size(uint64_t *rng)
{
    uint64_t x = next_rng(rng);
    unsigned pick = (unsigned)(x % 1000);
    x >>= 10;
    if (pick < 700)
        return sizeof(struct block) + x % 1024;            /* small */
    if (pick < 998)
        return 1024 + x % (64 * 1024);                       /* mid */
    return 256 * 1024 + x % (2u << 20);                      /* large */
}

static struct block *new_block(uint64_t *rng)
{
    size_t size = random_size(rng);
    struct block *b = malloc(size);
    if (!b)
        corruption("malloc returned NULL", NULL);
    b->size = size;
    fill(b, next_rng(rng));
    return b;
}

static void one_op(struct chain *c, uint64_t *rng)
{
    uint64_t x = next_rng(rng);
    unsigned k = (unsigned)(x % SLOTS), what = (unsigned)((x >> 16) % 100);
    struct block *b = c->slot[k];
    if (!b) {
        c->slot[k] = new_block(rng);
    } else if (what < 10) {
        /* Resize: the bytes that stay must be the old ones. */
        check(b);
        size_t old = b->size, size = random_size(rng);
        uint64_t seed = b->seed;
        struct block *q = realloc(b, size);
        if (!q)
            corruption("realloc returned NULL", b);
        struct block probe = {.size = old, .seed = seed};
        const unsigned char *p = (const unsigned char *)(q + 1);
        size_t keep = (old < size ? old : size) - sizeof *q;
        for (size_t i = 0; i < keep && i < 64; i++)
            if (p[i] != byte_at(&probe, i))
                corruption("realloc lost bytes", q);
        q->size = size;
        fill(q, next_rng(rng));
        c->slot[k] = q;
    } else if (what < 40) {
        /* Trade with whichever thread comes next to this exchange slot. */
        check(b);
        c->slot[k] = atomic_exchange(&exchange_slot[(x >> 32) % EXCHANGE], b);
        if (c->slot[k])
            check(c->slot[k]);
    } else {
        check(b);
        free(b);
        c->slot[k] = NULL;
    }
}

static void *worker(void *arg)
{
    struct chain *c = arg;
    uint64_t rng = c->rng;
    for (long i = 0; i < HANDOFF_OPS; i++) {
        if (atomic_load_explicit(&stop, memory_order_relaxed))
            goto out;
        one_op(c, &rng);
        if ((i & 1023) == 1023)
            atomic_fetch_add_explicit(&ops_done, 1024, memory_order_relaxed);
    }
    /* Hand the slots to a new thread: its frees of these blocks are frees
     * of an exited thread's memory. */
    c->rng = rng;
    pthread_t next;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    if (pthread_create(&next, &attr, worker, c) == 0) {
        atomic_fetch_add(&threads_made, 1);
        pthread_attr_destroy(&attr);
        return NULL;
    }
    pthread_attr_destroy(&attr);
out:
    c->rng = rng;
    atomic_fetch_sub(&chains_running, 1);
    return NULL;
}

/* fork from a busy process: the child checks a chain's blocks (a snapshot:
 * workers go on, so only the exchange-free chain 0 of this main thread is
 * used), writes its own, allocates and frees; the parent's blocks must keep
 * their contents. */
static struct block *fork_probe[64];

static void fork_round(uint64_t *rng)
{
    for (int i = 0; i < 64; i++)
        fork_probe[i] = new_block(rng);
    pid_t pid = fork();
    if (pid == 0) {
        uint64_t r = (uint64_t)getpid();
        for (int i = 0; i < 64; i++) {
            check(fork_probe[i]);
            fill(fork_probe[i], next_rng(&r)); /* must not reach the parent */
        }
        for (int i = 0; i < 20000; i++) {
            struct block *b = new_block(&r);
            check(b);
            free(b);
        }
        for (int i = 0; i < 64; i++)
            free(fork_probe[i]);
        _exit(0);
    }
    if (pid < 0) {
        printf("fork failed: %s\n", strerror(errno));
    } else {
        int status = 0;
        while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
            ;
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
            corruption("fork child failed", NULL);
        atomic_fetch_add(&forks_done, 1);
    }
    for (int i = 0; i < 64; i++) {
        check(fork_probe[i]);
        free(fork_probe[i]);
    }
}

static void on_term(int sig)
{
    (void)sig;
    atomic_store(&stop, true);
}

static long rss_kib(void)
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

int main(int argc, char **argv)
{
    long seconds = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--threads") == 0 && i + 1 < argc)
            nthreads = strtol(argv[++i], NULL, 10);
        else if (strcmp(argv[i], "--seconds") == 0 && i + 1 < argc)
            seconds = strtol(argv[++i], NULL, 10);
        else {
            fprintf(stderr, "usage: soak_client [--threads N] [--seconds S (0: until SIGTERM)]\n");
            return 2;
        }
    }
    if (nthreads < 1 || nthreads > 64) {
        fprintf(stderr, "soak_client: --threads must be 1-64\n");
        return 2;
    }
    signal(SIGTERM, on_term);
    signal(SIGINT, on_term);
    chains = calloc((size_t)nthreads, sizeof *chains);
    if (!chains)
        return 1;
    uint64_t rng = (uint64_t)getpid() * 0x9E3779B97F4A7C15ull;
    for (long t = 0; t < nthreads; t++) {
        chains[t].rng = next_rng(&rng);
        pthread_t th;
        atomic_fetch_add(&chains_running, 1);
        if (pthread_create(&th, NULL, worker, &chains[t]) != 0) {
            fprintf(stderr, "soak_client: cannot start a thread\n");
            return 1;
        }
        pthread_detach(th);
    }
    time_t start = time(NULL);
    for (long tick = 1; !atomic_load(&stop); tick++) {
        sleep(1);
        if (tick % 3 == 0)
            fork_round(&rng);
        printf("soak-client pid=%d ops=%llu threads=%llu forks=%llu rss_kb=%ld\n", (int)getpid(),
               (unsigned long long)atomic_load(&ops_done), (unsigned long long)atomic_load(&threads_made),
               (unsigned long long)atomic_load(&forks_done), rss_kib());
        fflush(stdout);
        if (seconds && time(NULL) - start >= seconds)
            atomic_store(&stop, true);
    }
    /* Workers stop at their next operation; a worker may be between two
     * threads of its chain, so wait until every chain has stopped. */
    while (atomic_load(&chains_running) > 0)
        usleep(1000);
    for (long t = 0; t < nthreads; t++)
        for (int k = 0; k < SLOTS; k++)
            if (chains[t].slot[k]) {
                check(chains[t].slot[k]);
                free(chains[t].slot[k]);
            }
    for (int j = 0; j < EXCHANGE; j++) {
        struct block *b = atomic_exchange(&exchange_slot[j], NULL);
        if (b) {
            check(b);
            free(b);
        }
    }
    free(chains);
    printf("soak-client pid=%d done ops=%llu mismatches=0\n", (int)getpid(), (unsigned long long)atomic_load(&ops_done));
    return 0;
}
