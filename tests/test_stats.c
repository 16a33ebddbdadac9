/* hak_stats_get against allocations whose effect is known, its version and
 * size handling, the bounds between its totals, the remote-free semantics
 * its header comment promises, and its agreement with malloc_stats (the
 * HAKMEM_STATS=1 summary) and malloc_info (XML, checked with xmllint). */
#include <errno.h>
#include <inttypes.h>
#include <malloc.h>
#include <pthread.h>
#include <sched.h>
#include <stddef.h>
#include <stdint.h>

#include "internal.h"
#include "hakmem.h"
#include "testutil.h"

static struct hak_stats get(void)
{
    struct hak_stats s;
    assert_int_equal(hak_stats_get(&s, sizeof s), 0);
    return s;
}

/* The entry of the class whose blocks are size bytes. */
static const struct hak_stats_class *class_of(const struct hak_stats *s, uint64_t size)
{
    for (unsigned i = 0; i < s->nclasses; i++)
        if (s->classes[i].size == size)
            return &s->classes[i];
    fail_msg("no class of %" PRIu64 " bytes", size);
    return NULL;
}

static void test_version_and_size(void **state)
{
    (void)state;
    struct hak_stats full;
    errno = 0;
    assert_int_equal(hak_stats_get(NULL, sizeof full), -1);
    assert_int_equal(errno, EINVAL);
    errno = 0;
    assert_int_equal(hak_stats_get(&full, 0), -1);
    assert_int_equal(errno, EINVAL);
    errno = 0;
    assert_int_equal(hak_stats_get(&full, offsetof(struct hak_stats, flags) - 1), -1);
    assert_int_equal(errno, EINVAL);

    /* An older caller's struct: only its prefix is written. */
    union {
        struct hak_stats s;
        unsigned char b[sizeof(struct hak_stats) + 64];
    } u;
    size_t prefix = offsetof(struct hak_stats, classes) + 3 * sizeof(struct hak_stats_class);
    memset(&u, 0xA5, sizeof u);
    assert_int_equal(hak_stats_get(&u.s, prefix), 0);
    full = get();
    assert_int_equal(u.s.version, HAK_STATS_VERSION);
    assert_int_equal(u.s.size, prefix);
    assert_int_equal(u.s.nclasses, HAK_NCLASS - 1);
    assert_int_equal(u.s.allocated, full.allocated);
    assert_int_equal(u.s.ss_in_use, full.ss_in_use);
    assert_memory_equal(u.s.classes, full.classes, 3 * sizeof(struct hak_stats_class));
    for (size_t i = prefix; i < sizeof u; i++)
        if (u.b[i] != 0xA5)
            fail_msg("byte %zu past the caller's %zu bytes was written", i, prefix);

    /* The smallest: version and size only. */
    memset(&u, 0xA5, sizeof u);
    assert_int_equal(hak_stats_get(&u.s, offsetof(struct hak_stats, flags)), 0);
    assert_int_equal(u.s.version, HAK_STATS_VERSION);
    assert_int_equal(u.s.size, offsetof(struct hak_stats, flags));
    assert_int_equal(u.b[offsetof(struct hak_stats, flags)], 0xA5);

    /* A newer caller's bigger struct: ours is filled, the rest left. */
    memset(&u, 0xA5, sizeof u);
    assert_int_equal(hak_stats_get(&u.s, sizeof u), 0);
    assert_int_equal(u.s.size, sizeof(struct hak_stats));
    for (size_t i = sizeof(struct hak_stats); i < sizeof u; i++)
        assert_int_equal(u.b[i], 0xA5);

    /* The class table: the library's, smallest first. */
    assert_true(full.nclasses <= HAK_STATS_CLASSES);
    for (unsigned i = 0; i < full.nclasses; i++) {
        assert_int_equal(full.classes[i].size, hak_classes[i + 1].size);
        if (i)
            assert_true(full.classes[i].size > full.classes[i - 1].size);
    }
}

#define N_SMALL 100

static void test_known_small_allocations(void **state)
{
    (void)state;
    void *p[N_SMALL];
    struct hak_stats a = get();
    for (int i = 0; i < N_SMALL; i++)
        assert_non_null(p[i] = hak_malloc(3000));
    struct hak_stats b = get();
    uint64_t size = hak_usable_size(p[0]);
    assert_int_equal(size, 3072);
    const struct hak_stats_class *ca = class_of(&a, size), *cb = class_of(&b, size);
    assert_int_equal(cb->live_blocks - ca->live_blocks, N_SMALL);
    assert_int_equal(cb->live_bytes - ca->live_bytes, N_SMALL * size);
    assert_int_equal(cb->allocs - ca->allocs, N_SMALL);
    assert_int_equal(cb->frees - ca->frees, 0);
    assert_true(cb->refills > ca->refills);
    assert_true(cb->slabs >= (N_SMALL * size + HAK_UNIT_SIZE - 1) / HAK_UNIT_SIZE);
    assert_int_equal(b.allocated - a.allocated, N_SMALL * size);
    assert_true(b.active >= a.active);

    for (int i = 0; i < N_SMALL; i++)
        hak_free(p[i]);
    struct hak_stats c = get();
    const struct hak_stats_class *cc = class_of(&c, size);
    assert_int_equal(cc->live_blocks, ca->live_blocks);
    assert_int_equal(cc->allocs - ca->allocs, N_SMALL);
    assert_int_equal(cc->frees - ca->frees, N_SMALL);
    assert_int_equal(c.allocated, a.allocated);
    /* The freed blocks are free blocks of the class now (some cached). */
    assert_true(cc->free_blocks >= N_SMALL || cc->slabs < cb->slabs);
}

static void test_large_block(void **state)
{
    (void)state;
    struct hak_stats a = get();
    char *p = hak_malloc(10 << 20);
    assert_non_null(p);
    memset(p, 1, 10 << 20);
    struct hak_stats b = get();
    assert_int_equal(b.large_blocks - a.large_blocks, 1);
    assert_true(b.large_bytes - a.large_bytes >= (10u << 20));
    assert_int_equal(b.large_bytes - a.large_bytes, hak_usable_size(p));
    assert_int_equal(b.allocated - a.allocated, hak_usable_size(p));
    assert_true(b.active - a.active >= (10u << 20));
    assert_true(b.mapped - a.mapped >= (10u << 20));
    assert_true(b.resident - a.resident >= (9u << 20)); /* touched, whole */
    size_t len = hak_usable_size(p);
    hak_free(p);
    struct hak_stats c = get();
    assert_int_equal(c.large_blocks, a.large_blocks);
    assert_int_equal(c.large_bytes, a.large_bytes);
    assert_int_equal(c.allocated, a.allocated);
    hak_trim(0); /* a cached mapping goes */
    struct hak_stats d = get();
    assert_int_equal(d.large_cached, 0);
    /* The mapping went back at the free or at the trim: counted either way. */
    assert_true(d.returned_os - a.returned_os >= len);
}

static void check_bounds(const struct hak_stats *s)
{
    assert_true(s->allocated <= s->active);
    assert_true(s->active <= s->mapped);
    assert_true(s->resident <= s->mapped);
    assert_true(s->metadata <= s->resident);
    assert_true(s->resident > 0);
    assert_true(s->ss_abandoned <= s->ss_in_use);
    assert_int_equal(s->ss_from_pagerd + s->ss_from_embedded, s->ss_in_use + s->ss_released);
    assert_true(s->returned_os >= (s->ss_purged << 20) + s->unit_bytes_returned);
    assert_true(s->os_mmap > 0);
    uint64_t small = 0;
    for (unsigned i = 0; i < s->nclasses; i++) {
        const struct hak_stats_class *e = &s->classes[i];
        assert_int_equal(e->live_bytes, e->live_blocks * e->size);
        if (!(s->flags & HAK_STATS_F_SECURE))
            assert_int_equal(e->allocs - e->frees, e->live_blocks);
        assert_int_equal(e->free_blocks + e->live_blocks, e->slabs * hak_classes[i + 1].capacity);
        assert_true(e->cached_blocks <= e->free_blocks);
        small += e->live_bytes;
    }
    assert_int_equal(s->allocated, small + s->large_bytes);
}

static void test_bounds(void **state)
{
    (void)state;
    struct rng r = {42};
    void *p[500];
    for (int i = 0; i < 500; i++)
        p[i] = hak_malloc(rng_range(&r, 1, i % 50 ? 9000 : 600000));
    struct hak_stats s = get();
    check_bounds(&s);
    assert_true(s.allocated >= 500);
    assert_true(s.ss_in_use >= 1);
    for (int i = 0; i < 500; i++)
        hak_free(p[i]);
    s = get();
    check_bounds(&s);
}

/* ---- remote frees ---- */

static void *blocks[8];
static _Atomic int step;

static void wait_step(int want)
{
    while (atomic_load(&step) < want)
        sched_yield();
}

/* Frees blocks[0..3] (another thread's), tells, waits, exits. */
static void *remote_freer(void *arg)
{
    (void)arg;
    for (int i = 0; i < 4; i++)
        hak_free(blocks[i]);
    atomic_store(&step, 1);
    wait_step(2);
    return NULL;
}

/* Four blocks of a class nothing else here uses come from one refill of a
 * fresh slab; another thread frees them. Returns what the class showed
 * before, while the freer still holds them in its batch, and after it
 * exited (its batch sent, waiting on the slab for this thread). */
static void remote_scenario(uint64_t live[3], uint64_t frees[3])
{
    atomic_store(&step, 0);
    for (int i = 0; i < 4; i++)
        blocks[i] = hak_malloc(7000);
    struct hak_stats s = get();
    live[0] = class_of(&s, 7168)->live_blocks;
    frees[0] = class_of(&s, 7168)->frees;
    pthread_t th;
    pthread_create(&th, NULL, remote_freer, NULL);
    wait_step(1);
    s = get();
    live[1] = class_of(&s, 7168)->live_blocks;
    frees[1] = class_of(&s, 7168)->frees;
    atomic_store(&step, 2);
    pthread_join(th, NULL);
    s = get();
    live[2] = class_of(&s, 7168)->live_blocks;
    frees[2] = class_of(&s, 7168)->frees;
}

static void test_remote_frees(void **state)
{
    (void)state;
    uint64_t live[3], frees[3];
    remote_scenario(live, frees);
    assert_true(live[0] >= 4);
    /* In the freer's batch: freed. */
    assert_int_equal(live[1], live[0] - 4);
    assert_int_equal(frees[1], frees[0] + 4);
    /* Sent, waiting on the slab: live until collected, without
     * HAKMEM_STATS=1 (test_remote_frees_exact has it on). */
    assert_true(live[2] >= live[0] - 4 && live[2] <= live[0]);
    hak_trim(0); /* this thread collects */
    struct hak_stats s = get();
    assert_int_equal(class_of(&s, 7168)->live_blocks, live[0] - 4);
    assert_int_equal(class_of(&s, 7168)->frees, frees[0] + 4);
    check_bounds(&s);
}

/* The same in a process with HAKMEM_STATS=1 (this program, run again). */
static int remote_exact_child(void)
{
    uint64_t live[3], frees[3];
    remote_scenario(live, frees);
    struct hak_stats s = get();
    if (!(s.flags & HAK_STATS_F_REMOTE_EXACT) || live[0] < 4 || live[1] != live[0] - 4 ||
        live[2] != live[0] - 4 || frees[2] != frees[0] + 4) {
        printf("HAKMEM_STATS=1: flags %u live %" PRIu64 " %" PRIu64 " %" PRIu64 " frees %" PRIu64 " %" PRIu64 "\n",
                s.flags, live[0], live[1], live[2], frees[0], frees[2]);
        return 1;
    }
    return 0;
}

static void test_remote_frees_exact(void **state)
{
    (void)state;
    pid_t pid = fork();
    if (pid == 0) {
        char *argv[] = {"test_stats", "--remote-exact", NULL};
        setenv("HAKMEM_STATS", "1", 1);
        int fd = open("/dev/null", O_WRONLY); /* the summary it prints at exit */
        dup2(fd, 2);
        execv("/proc/self/exe", argv);
        _exit(127);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
}

/* A thread's blocks outlive it (its heap parked); freed by this thread,
 * they sit in its batch; trim empties the parked heap. */
static void *allocator(void *arg)
{
    (void)arg;
    for (int i = 0; i < 4; i++)
        blocks[4 + i] = hak_malloc(6000);
    return NULL;
}

static void test_blocks_of_an_exited_thread(void **state)
{
    (void)state;
    hak_trim(0);
    struct hak_stats a = get();
    pthread_t th;
    pthread_create(&th, NULL, allocator, NULL);
    pthread_join(th, NULL);
    struct hak_stats b = get();
    assert_int_equal(class_of(&b, 6144)->live_blocks - class_of(&a, 6144)->live_blocks, 4);
    for (int i = 4; i < 8; i++)
        hak_free(blocks[i]);
    struct hak_stats c = get();
    assert_int_equal(class_of(&c, 6144)->live_blocks, class_of(&a, 6144)->live_blocks);
    hak_thread_flush(); /* the batch goes to the slab */
    hak_trim(0);        /* the parked heap is emptied, its slab collected */
    struct hak_stats d = get();
    assert_int_equal(class_of(&d, 6144)->live_blocks, class_of(&a, 6144)->live_blocks);
    check_bounds(&d);
}

/* ---- a metrics thread while others allocate ---- */

static _Atomic int stop;

static void *churn(void *arg)
{
    struct rng r = {(uint64_t)(uintptr_t)arg};
    void *slot[256] = {0};
    while (!atomic_load(&stop)) {
        unsigned i = (unsigned)rng_range(&r, 0, 255);
        hak_free(slot[i]);
        slot[i] = hak_malloc(rng_range(&r, 1, i < 4 ? 400000 : 20000));
    }
    for (unsigned i = 0; i < 256; i++)
        hak_free(slot[i]);
    return NULL;
}

static void *metrics(void *arg)
{
    (void)arg;
    for (int n = 0; n < 300; n++) {
        struct hak_stats s;
        CHECK(hak_stats_get(&s, sizeof s) == 0);
        CHECK(s.allocated <= s.active);
        CHECK(s.active <= s.mapped);
        CHECK(s.resident <= s.mapped);
    }
    atomic_store(&stop, 1);
    return NULL;
}

static void test_metrics_thread_under_load(void **state)
{
    (void)state;
    if (TEST_TSAN) {
        /* Other threads' counters are read racily by design. */
        print_message("not under TSan: the snapshot reads other threads' counters racily by design\n");
        skip();
    }
    pthread_t w[2], m;
    atomic_store(&stop, 0);
    for (uintptr_t i = 0; i < 2; i++)
        pthread_create(&w[i], NULL, churn, (void *)(i + 1));
    pthread_create(&m, NULL, metrics, NULL);
    pthread_join(m, NULL);
    for (int i = 0; i < 2; i++)
        pthread_join(w[i], NULL);
    assert_no_thread_failure();
}

/* ---- the summary and the XML say the same ---- */

#ifdef HAK_NO_OVERRIDE /* sanitizer builds: the C library's names are its own */
#define print_summary() hak_stats_print()
#define write_info(f) hak_stats_xml(f)
#else
#define print_summary() malloc_stats()
#define write_info(f) malloc_info(0, f)
#endif

static void *kept[N_SMALL];

static void summary_child(void)
{
    for (int i = 0; i < N_SMALL; i++)
        kept[i] = hak_malloc(3000);
    struct hak_stats s;
    char line[256];
    hak_stats_get(&s, sizeof s);
    const struct hak_stats_class *e = class_of(&s, 3072);
    snprintf(line, sizeof line, "expect allocated=%" PRIu64 " in-use=%" PRIu64 " class %u live-bytes=%" PRIu64 "\n",
             s.allocated, s.ss_in_use, (unsigned)(e - s.classes) + 1, e->live_bytes);
    hak_write_str(2, line);
    print_summary();
    exit(0);
}

static void test_malloc_stats_agrees(void **state)
{
    (void)state;
    char out[16384];
    run_expect_abort(summary_child, out, sizeof out);
    unsigned long long alloc, in_use, live, a2, in2, live2 = ~0ull, size, allocs, frees, refills;
    unsigned cls, c;
    const char *e = strstr(out, "expect allocated=");
    assert_non_null(e);
    assert_int_equal(
        sscanf(e, "expect allocated=%llu in-use=%llu class %u live-bytes=%llu", &alloc, &in_use, &cls, &live), 4);
    const char *b = strstr(out, "hakmem: bytes allocated=");
    const char *ss = strstr(out, "hakmem: superslabs acquired=");
    assert_non_null(b);
    assert_non_null(ss);
    assert_int_equal(sscanf(b, "hakmem: bytes allocated=%llu", &a2), 1);
    assert_non_null(ss = strstr(ss, "in-use="));
    assert_int_equal(sscanf(ss, "in-use=%llu", &in2), 1);
    for (const char *l = strstr(out, "hakmem: class"); l && (l = strchr(l, '\n')); l++)
        if (sscanf(l + 1, "hakmem: %u %llu %llu %llu %llu %llu", &c, &size, &allocs, &frees, &live2, &refills) == 6 &&
            c == cls)
            break;
    assert_int_equal(a2, alloc);
    assert_int_equal(in2, in_use);
    assert_int_equal(live2, live);
    assert_true(live >= N_SMALL * 3072ull);
}

static int have_xmllint(void)
{
    return system("command -v xmllint >/dev/null 2>&1") == 0;
}

/* xmllint --xpath EXPR on path, as a number (-1 if it fails). */
static long long xpath_number(const char *path, const char *expr)
{
    char cmd[512], buf[64] = "";
    snprintf(cmd, sizeof cmd, "xmllint --xpath '%s' %s 2>/dev/null", expr, path);
    FILE *p = popen(cmd, "r");
    if (!p)
        return -1;
    if (!fgets(buf, sizeof buf, p))
        buf[0] = 0;
    pclose(p);
    char *end;
    long long v = strtoll(buf, &end, 10);
    return end == buf ? -1 : v;
}

static void test_malloc_info_xml(void **state)
{
    (void)state;
    char path[] = "/tmp/hakstats-XXXXXX";
    static char buf[1 << 16];
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    FILE *f = fdopen(fd, "w");
    assert_non_null(f);
    setvbuf(f, buf, _IOFBF, sizeof buf); /* no allocation between the two snapshots */
    char *big = hak_malloc(3 << 20), *small[5];
    for (int i = 0; i < 5; i++)
        small[i] = hak_malloc(3000);
    struct hak_stats s = get();
    assert_int_equal(write_info(f), 0);
    fclose(f);
#ifndef HAK_NO_OVERRIDE
    errno = 0;
    assert_int_equal(malloc_info(1, stdout), -1);
    assert_int_equal(errno, EINVAL);
#endif

    /* Well formed at least in outline, whatever the machine has. */
    FILE *in = fopen(path, "r");
    char doc[1 << 16];
    size_t n = fread(doc, 1, sizeof doc - 1, in);
    fclose(in);
    doc[n] = 0;
    const char *head = "<malloc version=\"1\">\n<heap nr=\"0\">\n<sizes>\n";
    assert_true(strncmp(doc, head, strlen(head)) == 0);
    assert_non_null(strstr(doc, "</malloc>\n"));
    assert_true(n > 0 && strcmp(doc + n - strlen("</malloc>\n"), "</malloc>\n") == 0);

    if (!have_xmllint()) {
        print_message("xmllint not found (Debian: libxml2-utils): malloc_info's XML not parsed\n");
        unlink(path);
        for (int i = 0; i < 5; i++)
            hak_free(small[i]);
        hak_free(big);
        skip();
    }
    char cmd[128];
    snprintf(cmd, sizeof cmd, "xmllint --noout %s", path);
    assert_int_equal(system(cmd), 0);
    assert_int_equal(xpath_number(path, "string(/malloc/hakmem/bytes/@allocated)"), (long long)s.allocated);
    assert_int_equal(xpath_number(path, "string(/malloc/hakmem/bytes/@active)"), (long long)s.active);
    assert_int_equal(xpath_number(path, "string(/malloc/hakmem/large/@blocks)"), (long long)s.large_blocks);
    assert_int_equal(xpath_number(path, "string(/malloc/total[@type=\"mmap\"]/@size)"), (long long)s.large_bytes);
    assert_int_equal(xpath_number(path, "string(/malloc/heap/sizes/size[@to=\"3072\"]/@live)"),
                     (long long)class_of(&s, 3072)->live_blocks);
    assert_int_equal(xpath_number(path, "string(/malloc/heap/sizes/size[@to=\"3072\"]/@count)"),
                     (long long)class_of(&s, 3072)->free_blocks);
    assert_int_equal(xpath_number(path, "string(/malloc/superslabs/@in_use)"), -1); /* under <hakmem> */
    assert_int_equal(xpath_number(path, "string(/malloc/hakmem/superslabs/@in_use)"), (long long)s.ss_in_use);
    long long listed = xpath_number(path, "count(/malloc/heap/sizes/size)");
    long long active = 0;
    for (unsigned i = 0; i < s.nclasses; i++)
        active += s.classes[i].allocs || s.classes[i].live_blocks || s.classes[i].slabs;
    assert_int_equal(listed, active);
    assert_true(xpath_number(path, "string(/malloc/system[@type=\"current\"]/@size)") == (long long)s.mapped);
    unlink(path);
    for (int i = 0; i < 5; i++)
        hak_free(small[i]);
    hak_free(big);
}

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "--remote-exact") == 0)
        return remote_exact_child();
    hak_free(hak_malloc(1));
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_version_and_size),
        cmocka_unit_test(test_known_small_allocations),
        cmocka_unit_test(test_large_block),
        cmocka_unit_test(test_bounds),
        cmocka_unit_test(test_remote_frees),
        cmocka_unit_test(test_remote_frees_exact),
        cmocka_unit_test(test_blocks_of_an_exited_thread),
        cmocka_unit_test(test_metrics_thread_under_load),
        cmocka_unit_test(test_malloc_stats_agrees),
        cmocka_unit_test(test_malloc_info_xml),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
