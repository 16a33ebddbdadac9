/* The sampling heap profiler: this program runs itself as a child with
 * HAKMEM_PROF=1 (the entry points are picked at load time, so the child
 * must start with it), then reads the child's profile with google-pprof. */
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdint.h>
#include <sys/stat.h>

#include "internal.h"
#include "hakmem.h"
#include "testutil.h"

#define RATE "16384"
#define SITE_BLOCKS (1u << 20)

static char self[PATH_MAX];
static char dir[] = "/tmp/hakmem-prof-XXXXXX";
static void *kept[4 * SITE_BLOCKS];

/* ---- the child's workloads ---- */

/* Three bytes in four from here, one from site_one: the same number of
 * blocks of sizes 192 and 64, so pprof's scaling by size is exercised. */
static HAK_NOINLINE void *site_three(void)
{
    char *p = hak_malloc(192);
    p[0] = 1;
    return p;
}

static HAK_NOINLINE void *site_one(void)
{
    char *p = hak_malloc(64);
    p[0] = 1;
    return p;
}

/* One call site reached from two callers: the stacks must tell them apart
 * (the memo of stacks is keyed by call site). */
static HAK_NOINLINE void *shared_leaf(size_t size)
{
    char *p = hak_malloc(size);
    p[0] = 1;
    return p;
}

static HAK_NOINLINE void *caller_three(void)
{
    void *p = shared_leaf(96);
    __asm__ volatile("" ::: "memory"); /* not a tail call */
    return p;
}

static HAK_NOINLINE void *caller_one(void)
{
    void *p = shared_leaf(32);
    __asm__ volatile("" ::: "memory");
    return p;
}

static HAK_NOINLINE void *site_freed(void)
{
    char *p = hak_malloc(256);
    p[0] = 1;
    return p;
}

/* Above the mid sizes: a sampled block is a large block. */
#define LARGE_SIZE (300u << 10)
#define LARGE_BLOCKS 64u

static HAK_NOINLINE void *site_large_kept(void)
{
    char *p = hak_malloc(LARGE_SIZE);
    p[0] = 1;
    return p;
}

static HAK_NOINLINE void *site_large_freed(void)
{
    char *p = hak_malloc(LARGE_SIZE);
    p[0] = 2; /* not the same code as the one above: not merged with it */
    return p;
}

static int child_sites(void)
{
    for (unsigned i = 0; i < SITE_BLOCKS; i++) {
        kept[4 * i] = site_three();
        kept[4 * i + 1] = site_one();
        kept[4 * i + 2] = caller_three();
        kept[4 * i + 3] = caller_one();
    }
    /* Four call chains, the last two through one call site and taking
     * turns: each unwound in full about once (plus samples racing with the
     * first), every other sample known from the memo. */
    struct hak_stats st;
    hak_stats_get(&st, sizeof st);
    fprintf(stderr, "%llu samples, %llu full unwinds\n", (unsigned long long)st.prof_samples,
            (unsigned long long)st.prof_unwinds);
    if (st.prof_samples < 10000 || st.prof_unwinds > 16)
        return 30;
    return 0; /* the profile is written at exit, the blocks still live */
}

/* Every entry point samples, sampled blocks behave as blocks (aligned,
 * zeroed, resizable, freed), and freed samples leave the in-use figures. */
static int entry_points_round(void)
{
    for (unsigned i = 0; i < 1u << 16; i++) {
        void *a = NULL, *b, *c, *d;
        if (hak_posix_memalign(&a, 4096, 100) != 0 || (uintptr_t)a % 4096)
            return 10;
        b = hak_calloc(10, 30);
        if (!b || ((unsigned char *)b)[299] != 0)
            return 11;
        memset(b, 0xAB, 300);
        c = hak_aligned_alloc(64, 128);
        if (!c || (uintptr_t)c % 64)
            return 12;
        d = hak_realloc(NULL, 50);
        d = hak_realloc(d, 5000);
        if (!d)
            return 13;
        hak_free(a);
        hak_free(b);
        hak_free(c);
        hak_free(d);
        hak_free(site_freed());
    }
    return 0;
}

static int child_entry_points(const char *path)
{
    int err = entry_points_round();
    /* Once warm, samples reuse the mappings of freed ones: a second round
     * of some ten thousand samples maps next to nothing. */
    struct hak_stats a, b;
    hak_stats_get(&a, sizeof a);
    err = err ? err : entry_points_round();
    hak_stats_get(&b, sizeof b);
    if (!err && b.os_mmap - a.os_mmap > 100) {
        fprintf(stderr, "second round: %llu mmap calls\n", (unsigned long long)(b.os_mmap - a.os_mmap));
        err = 15;
    }
    if (err)
        return err;
    for (unsigned i = 0; i < SITE_BLOCKS / 4; i++)
        kept[i] = site_one();
    void *large[LARGE_BLOCKS];
    for (unsigned i = 0; i < LARGE_BLOCKS; i++) {
        large[i] = site_large_kept();
        hak_free(site_large_freed());
    }
    if (hak_prof_dump(path) != 0)
        return 14;
    for (unsigned i = 0; i < SITE_BLOCKS / 4; i++)
        hak_free(kept[i]);
    for (unsigned i = 0; i < LARGE_BLOCKS; i++)
        hak_free(large[i]);
    return 0;
}

/* The same sites from four threads at once, each freeing half of what
 * the previous thread allocated: the memo, the counts and the sampled
 * blocks' cache shared under load (and under ThreadSanitizer in make tsan). */
#define THREADS 4
static pthread_barrier_t ready;

static void *sites_thread(void *arg)
{
    unsigned t = (unsigned)(uintptr_t)arg, per = SITE_BLOCKS / THREADS;
    void **mine = &kept[2 * per * t];
    for (unsigned i = 0; i < per; i++) {
        mine[2 * i] = site_three();
        mine[2 * i + 1] = site_one();
    }
    pthread_barrier_wait(&ready);
    void **theirs = &kept[2 * per * ((t + 1) % THREADS)];
    for (unsigned i = 0; i < per; i += 2) {
        hak_free(theirs[2 * i]);
        hak_free(theirs[2 * i + 1]);
    }
    return NULL;
}

/* Sampled blocks from a thread that is replaced next. */
static void *churn_thread(void *arg)
{
    void **mine = arg;
    for (unsigned i = 0; i < 4096; i++)
        mine[i] = site_one();
    for (unsigned i = 0; i < 4096; i++)
        hak_free(mine[i]);
    return NULL;
}

static int child_threads(void)
{
    pthread_t th[THREADS];
    pthread_barrier_init(&ready, NULL, THREADS);
    for (unsigned t = 0; t < THREADS; t++)
        if (pthread_create(&th[t], NULL, sites_thread, (void *)(uintptr_t)t) != 0)
            return 30;
    for (unsigned t = 0; t < THREADS; t++)
        pthread_join(th[t], NULL);
    /* Threads one after another, some 16 samples each: each takes over
     * the counts of one gone rather than mapping a table of its own (a
     * server replaces its threads all day). */
    struct hak_stats a, b;
    hak_stats_get(&a, sizeof a);
    for (unsigned t = 0; t < 64; t++) {
        pthread_t one;
        if (pthread_create(&one, NULL, churn_thread, &kept[2 * SITE_BLOCKS]) != 0)
            return 31;
        pthread_join(one, NULL);
    }
    hak_stats_get(&b, sizeof b);
    if (b.os_mmap - a.os_mmap > 8) {
        fprintf(stderr, "64 threads in turn: %llu mmap calls\n", (unsigned long long)(b.os_mmap - a.os_mmap));
        return 32;
    }
    return 0;
}

/* A sampled block misused is caught like any other. */
static char *sampled;

static void free_twice(void)
{
    hak_free(sampled);
    hak_free(sampled);
}

static void free_inside(void)
{
    hak_free(sampled + 64);
}

static int child_misuse(void)
{
    for (int i = 0; i < 100000 && !hak_prof_owns(sampled); i++)
        sampled = hak_malloc(256);
    if (!hak_prof_owns(sampled))
        return 40;
    if (hak_usable_size(sampled) < 256)
        return 41;
    char err[512];
    if (!run_expect_abort(free_twice, err, sizeof err) || !strstr(err, "double free"))
        return fprintf(stderr, "%s\n", err), 42;
    if (!run_expect_abort(free_inside, err, sizeof err) || !strstr(err, "not the start of a block"))
        return fprintf(stderr, "%s\n", err), 43;
    return 0;
}

/* Sampled pages freed by threads that exit wait in the shared cache; once
 * no sample has used it for the decay (HAKMEM_DECAY_MS=100 here), the next
 * slow path gives them back. */
#define DECAY_BLOCKS 4096

static void *decay_thread(void *arg)
{
    (void)arg;
    void *b[DECAY_BLOCKS];
    for (int round = 0; round < 4; round++) {
        for (unsigned i = 0; i < DECAY_BLOCKS; i++) {
            b[i] = hak_malloc(8192);
            ((char *)b[i])[0] = 1;
        }
        for (unsigned i = 0; i < DECAY_BLOCKS; i++)
            hak_free(b[i]);
    }
    return NULL;
}

static int child_decay(void)
{
    pthread_t t[4];
    for (int i = 0; i < 4; i++)
        if (pthread_create(&t[i], NULL, decay_thread, NULL) != 0)
            return 50;
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    size_t held = hak_prof_blocks_resident();
    if (held < (8u << 20))
        return fprintf(stderr, "sampled pages resident after the threads: %zu\n", held), 51;
    usleep(300 * 1000);
    for (int round = 0; round < 64; round++) { /* refills: slow paths */
        void *v[256];
        for (unsigned i = 0; i < 256; i++)
            v[i] = hak_malloc(16 + (i * 8) % 240);
        for (unsigned i = 0; i < 256; i++)
            hak_free(v[i]);
    }
    size_t after = hak_prof_blocks_resident();
    fprintf(stderr, "sampled pages resident: %zu KiB, after the decay %zu KiB\n", held >> 10, after >> 10);
    return after > held / 4 ? 52 : 0;
}

static int child_off(void)
{
    hak_free(hak_malloc(100));
    errno = 0;
    return hak_prof_dump(NULL) == -1 && errno == ENOTSUP ? 0 : 20;
}

/* ---- the parent ---- */

static pid_t run_child(const char *mode, const char *arg, bool prof)
{
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        char prefix[PATH_MAX];
        snprintf(prefix, sizeof prefix, "%s/p", dir);
        setenv("HAKMEM_PROF_PREFIX", prefix, 1);
        setenv("HAKMEM_PROF_SAMPLE", RATE, 1);
        if (prof)
            setenv("HAKMEM_PROF", "1", 1);
        else
            unsetenv("HAKMEM_PROF");
        execl(self, self, "--child", mode, arg, (char *)NULL);
        _exit(127);
    }
    int st;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
        fail_msg("child %s: status %#x", mode, st);
    return pid;
}

static bool have_pprof(void)
{
    if (system("command -v google-pprof >/dev/null 2>&1") == 0)
        return true;
    print_message("SKIP: google-pprof is not installed (Debian package google-perftools)\n");
    return false;
}

/* MiB pprof attributes to fn, flat (or cumulative), from `google-pprof
 * --text opts`. */
static double pprof_mib(const char *profile, const char *opts, const char *fn, double *total, bool cumulative)
{
    char cmd[PATH_MAX * 3], line[512];
    snprintf(cmd, sizeof cmd, "google-pprof --text %s '%s' '%s' 2>/dev/null", opts, self, profile);
    FILE *f = popen(cmd, "r");
    assert_non_null(f);
    double mib = 0;
    *total = 0;
    while (fgets(line, sizeof line, f)) {
        double flat, pct, sum, cum, cum_pct;
        char name[256];
        if (sscanf(line, "Total: %lf MB", &flat) == 1)
            *total = flat;
        else if (sscanf(line, " %lf %lf%% %lf%% %lf %lf%% %255s", &flat, &pct, &sum, &cum, &cum_pct, name) == 6 &&
                 strcmp(name, fn) == 0)
            mib = cumulative ? cum : flat;
    }
    pclose(f);
    return mib;
}

static double pprof_flat(const char *profile, const char *opts, const char *fn, double *total)
{
    return pprof_mib(profile, opts, fn, total, false);
}

/* The profile a child wrote at exit. */
static void exit_profile(char *out, size_t cap, pid_t pid)
{
    snprintf(out, cap, "%s/p.%d.heap", dir, (int)pid);
}

/* a's share of a + b is want, within 10% of it. */
static void assert_share(double a, double b, double want)
{
    assert_true(a > 0 && b > 0);
    double share = a / (a + b);
    assert_true(share > want * 0.9 && share < want * 1.1);
    assert_true(1 - share > (1 - want) * 0.9 && 1 - share < (1 - want) * 1.1);
}

static void test_two_sites_in_proportion(void **state)
{
    (void)state;
    if (!have_pprof())
        return;
    pid_t pid = run_child("sites", "", true);
    char profile[PATH_MAX];
    exit_profile(profile, sizeof profile, pid);
    double total, three = pprof_flat(profile, "", "site_three", &total);
    double one = pprof_flat(profile, "", "site_one", &total);
    print_message("in use: site_three %.1f MiB, site_one %.1f MiB, total %.1f MiB\n", three, one, total);
    /* 256 MiB in 16,384 samples on average: the shares are within a
     * percentage point or so; 10% of each share is seven deviations (five
     * for the 128 MiB through the shared call site below). */
    assert_share(three, one, 0.75);
    /* Scaled back, the sizes add up to what was allocated. */
    double want = SITE_BLOCKS * (192.0 + 64.0) / (1 << 20);
    assert_true(three + one > want * 0.9 && three + one < want * 1.1);
    /* The shared call site, by caller: 96 and 32 bytes a call. */
    double via_three = pprof_mib(profile, "", "caller_three", &total, true);
    double via_one = pprof_mib(profile, "", "caller_one", &total, true);
    print_message("in use through shared_leaf: caller_three %.1f MiB, caller_one %.1f MiB\n", via_three, via_one);
    assert_share(via_three, via_one, 0.75);
    want = SITE_BLOCKS * (96.0 + 32.0) / (1 << 20);
    assert_true(via_three + via_one > want * 0.9 && via_three + via_one < want * 1.1);
}

static void test_every_entry_point_and_free(void **state)
{
    (void)state;
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/mid.heap", dir);
    run_child("entry", path, true);
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    char line[256];
    assert_non_null(fgets(line, sizeof line, f));
    assert_int_equal(strncmp(line, "heap profile: ", 14), 0);
    assert_non_null(strstr(line, "@ heap_v2/" RATE "\n"));
    bool maps = false;
    while (fgets(line, sizeof line, f))
        maps |= strcmp(line, "MAPPED_LIBRARIES:\n") == 0;
    fclose(f);
    assert_true(maps);
    if (!have_pprof())
        return;
    double total, freed = pprof_flat(path, "", "site_freed", &total);
    double kept_one = pprof_flat(path, "", "site_one", &total);
    double freed_all = pprof_flat(path, "--alloc_space", "site_freed", &total);
    print_message("site_freed in use %.1f MiB, allocated %.1f MiB; site_one in use %.1f MiB\n", freed, freed_all,
                  kept_one);
    assert_true(freed == 0);
    double want = 2 * 65536.0 * 256 / (1 << 20); /* two rounds: 32 MiB */
    assert_true(freed_all > want * 0.75 && freed_all < want * 1.25);
    want = SITE_BLOCKS / 4 * 64.0 / (1 << 20); /* 16 MiB */
    assert_true(kept_one > want * 0.75 && kept_one < want * 1.25);
    /* Large blocks: each is sampled (at 16 KiB a sample, 300 KiB is all
     * but certain to be), so in use and allocated are exact. */
    double large_kept = pprof_flat(path, "", "site_large_kept", &total);
    double large_freed = pprof_flat(path, "", "site_large_freed", &total);
    double large_freed_all = pprof_flat(path, "--alloc_space", "site_large_freed", &total);
    print_message("large: site_large_kept in use %.2f MiB, site_large_freed in use %.2f, allocated %.2f MiB\n",
                  large_kept, large_freed, large_freed_all);
    want = LARGE_BLOCKS * (double)LARGE_SIZE / (1 << 20); /* 18.75 MiB */
    assert_true(large_kept > want * 0.99 && large_kept < want * 1.01);
    assert_true(large_freed == 0);
    assert_true(large_freed_all > want * 0.99 && large_freed_all < want * 1.01);
}

static void test_threads_in_proportion(void **state)
{
    (void)state;
    if (!have_pprof())
        return;
    pid_t pid = run_child("threads", "", true);
    char profile[PATH_MAX];
    exit_profile(profile, sizeof profile, pid);
    double total, three = pprof_flat(profile, "", "site_three", &total);
    double one = pprof_flat(profile, "", "site_one", &total);
    double all = pprof_flat(profile, "--alloc_space", "site_three", &total);
    print_message("4 threads, half freed: in use site_three %.1f MiB, site_one %.1f MiB; site_three allocated "
                  "%.1f MiB\n", three, one, all);
    assert_share(three, one, 0.75);
    double want = SITE_BLOCKS * (192.0 + 64.0) / 2 / (1 << 20); /* half of it still in use */
    assert_true(three + one > want * 0.85 && three + one < want * 1.15);
    want = SITE_BLOCKS * 192.0 / (1 << 20);
    assert_true(all > want * 0.9 && all < want * 1.1);
}

static void test_misuse_of_a_sampled_block(void **state)
{
    (void)state;
    run_child("misuse", "", true);
}

static void test_idle_sampled_pages_go_back(void **state)
{
    (void)state;
    setenv("HAKMEM_DECAY_MS", "100", 1);
    run_child("decay", "", true);
    unsetenv("HAKMEM_DECAY_MS");
}

static void test_off_by_default(void **state)
{
    (void)state;
    pid_t pid = run_child("off", "", false);
    char profile[PATH_MAX];
    exit_profile(profile, sizeof profile, pid);
    struct stat st;
    assert_int_equal(stat(profile, &st), -1);
}

static int cleanup(void **state)
{
    (void)state;
    char cmd[PATH_MAX + 16];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    return system(cmd) == 0 ? 0 : -1;
}

int main(int argc, char **argv)
{
    if (argc >= 3 && strcmp(argv[1], "--child") == 0) {
        if (strcmp(argv[2], "sites") == 0)
            return child_sites();
        if (strcmp(argv[2], "entry") == 0 && argc == 4)
            return child_entry_points(argv[3]);
        if (strcmp(argv[2], "off") == 0)
            return child_off();
        if (strcmp(argv[2], "threads") == 0)
            return child_threads();
        if (strcmp(argv[2], "misuse") == 0)
            return child_misuse();
        if (strcmp(argv[2], "decay") == 0)
            return child_decay();
        return 126;
    }
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n <= 0 || !mkdtemp(dir))
        return 1;
    self[n] = '\0';
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_two_sites_in_proportion),
        cmocka_unit_test(test_every_entry_point_and_free),
        cmocka_unit_test(test_threads_in_proportion),
        cmocka_unit_test(test_misuse_of_a_sampled_block),
        cmocka_unit_test(test_idle_sampled_pages_go_back),
        cmocka_unit_test(test_off_by_default),
    };
    return cmocka_run_group_tests(tests, NULL, cleanup);
}
