/* Memory comes back through the daemon. Each test starts a private daemon
 * and runs this program again as a client (--child MODE), which prints
 * hakmem's own resident memory (own_kib: its mappings, the daemon's file
 * by its allocated blocks):
 *   idle   two threads allocate, write and free 128 MiB each and exit; the
 *          main thread then makes no allocator call: the daemon takes the
 *          warm SuperSlabs back by their idle words, and the client's
 *          memory falls near where it started within 2.5 s;
 *   trim   malloc_trim(0) after 512 MiB freed gives the daemon's file its
 *          pages back at once, not after the daemon's reclaim delay;
 *   race   with a 1 ms decay, the client takes warm SuperSlabs back into
 *          use while the daemon claims them, round after round: every
 *          block written keeps its contents, and both sides won some. */
#include <pthread.h>
#include <stdatomic.h>

#include "hakmem.h"
#include "pagerd_client.h"

#define MIB (1024L * 1024)
#define NEAR_KIB (24 * 1024)

static char self_path[512];

/* ---- the client side ---- */

static void sleep_quietly(unsigned ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};
    while (nanosleep(&ts, &ts) < 0)
        ;
}

/* 16 B - 64 KiB blocks, written, kept on a list through their first word. */
static void *grow(size_t bytes, uint64_t seed)
{
    struct rng r = {seed};
    void *list = NULL;
    for (size_t got = 0; got < bytes;) {
        size_t size = rng_range(&r, 0, 3) ? rng_range(&r, 16, 1024) : rng_range(&r, 1025, 65536);
        char *p = hak_malloc(size);
        if (!p)
            return list;
        memset(p, 1, size);
        *(void **)p = list;
        list = p;
        got += size;
    }
    return list;
}

static void release_all(void *list)
{
    while (list) {
        void *next = *(void **)list;
        hak_free(list);
        list = next;
    }
}

static void *grow_and_free(void *arg)
{
    release_all(grow(128 * MIB, (uint64_t)(uintptr_t)arg));
    return NULL;
}

static int child_idle(void)
{
    long base = own_kib();
    pthread_t t[2];
    for (uintptr_t i = 0; i < 2; i++)
        pthread_create(&t[i], NULL, grow_and_free, (void *)(i + 1));
    for (int i = 0; i < 2; i++)
        pthread_join(t[i], NULL);
    long exited = own_kib();
    /* No allocator call from here on: the daemon has to do it. */
    long samples[26];
    for (int i = 0; i < 26; i++) {
        samples[i] = own_kib();
        sleep_quietly(100);
    }
    struct hak_provision_stats ps;
    hak_provision_stats(&ps);
    printf("idle base_kb=%ld exited_kb=%ld after_1s_kb=%ld after_2500ms_kb=%ld from_daemon=%llu\n", base, exited,
           samples[10], samples[25], (unsigned long long)ps.acquired[HAK_PROV_PAGERD]);
    return 0;
}

static int child_trim(void)
{
    long base = own_kib();
    release_all(grow(512 * MIB, 7));
    long freed = own_kib();
    hak_trim(0);
    /* With 2 MiB pages the daemon punches them, a tick or two away. */
    long trimmed = own_kib();
    for (int i = 0; i < 100 && trimmed - base >= NEAR_KIB; i++) {
        sleep_quietly(10);
        trimmed = own_kib();
    }
    struct hak_provision_stats ps;
    hak_provision_stats(&ps);
    printf("trim base_kb=%ld freed_kb=%ld trimmed_kb=%ld from_daemon=%llu returned=%llu\n", base, freed, trimmed,
           (unsigned long long)ps.acquired[HAK_PROV_PAGERD], (unsigned long long)ps.returned);
    return 0;
}

/* 64 blocks of 60 KiB (a unit each: about four SuperSlabs), written with
 * their pattern, checked and freed; between rounds a pause of 0-3 ms in
 * which the SuperSlabs wait warm and their 1 ms deadline passes. */
static int child_race(void)
{
    enum { N = 64, SIZE = 60 * 1024 };
    static unsigned char *b[N];
    struct rng r = {4242};
    uint64_t bad = 0;
    for (int round = 0; round < 3000; round++) {
        for (int i = 0; i < N; i++) {
            b[i] = hak_malloc(SIZE);
            if (!b[i])
                return 2;
            pattern_fill(b[i], SIZE);
        }
        for (int i = 0; i < N; i++) {
            bad += !pattern_check(b[i], SIZE);
            hak_free(b[i]);
        }
        sleep_quietly((unsigned)rng_range(&r, 0, 3));
    }
    struct hak_provision_stats ps;
    hak_provision_stats(&ps);
    printf("race mismatches=%llu from_daemon=%llu reclaimed=%llu warm_reused=%llu\n", (unsigned long long)bad,
           (unsigned long long)ps.acquired[HAK_PROV_PAGERD], (unsigned long long)ps.reclaimed,
           (unsigned long long)ps.acquired[HAK_PROV_EMBEDDED]);
    return bad ? 1 : 0;
}

/* ---- the test side ---- */

static long field(const char *line, const char *name)
{
    const char *p = strstr(line, name);
    if (!p)
        fail_msg("no %s in: %s", name, line);
    return atol(p + strlen(name));
}

/* Run this program as a client in mode; its one line of output. */
static void run_child(const struct daemon *d, const char *mode, const char *decay_ms, char *line, size_t n)
{
    int out[2];
    assert_int_equal(pipe(out), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        dup2(out[1], 1);
        close(out[0]);
        setenv("HAKMEM_PAGERD", "on", 1);
        setenv("HAKMEM_PAGERD_SOCKET", d->sock, 1);
        setenv("HAKMEM_PAGERD_CAPACITY_MB", "4096", 1);
        setenv("HAKMEM_DECAY_MS", decay_ms, 1);
        execl(self_path, self_path, "--child", mode, (char *)NULL);
        _exit(127);
    }
    close(out[1]);
    FILE *f = fdopen(out[0], "r");
    line[0] = 0;
    if (!fgets(line, (int)n, f))
        line[0] = 0;
    fclose(f);
    int status;
    waitpid(pid, &status, 0);
    print_message("client: %s", line);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}


static uint64_t reclaimed_total(const struct daemon *d)
{
    /* The client is gone: the daemon logs what it took once it has seen
     * the hang-up. */
    assert_true(WAIT_FOR(log_count(d, "disconnect pid=") >= 1, 3000));
    const char *log = read_file_text(d->log);
    const char *p = strstr(log, "reclaimed=");
    return p ? strtoull(p + 10, NULL, 10) : 0;
}

static void test_idle_client_gives_memory_back(void **state)
{
    (void)state;
    struct daemon d;
    daemon_start(&d, "--tick-ms", "5");
    char line[512];
    run_child(&d, "idle", "1000", line, sizeof line);
    long base = field(line, "base_kb="), exited = field(line, "exited_kb="),
         after = field(line, "after_2500ms_kb=");
    assert_true(field(line, "from_daemon=") > 64);
    assert_true(exited - base > 64 * 1024); /* there was memory to give back */
    assert_true(after - base < NEAR_KIB);
    assert_true(reclaimed_total(&d) > 32);
    daemon_stop(&d);
}

static void test_trim_gives_the_daemons_pages_back_at_once(void **state)
{
    (void)state;
    struct daemon d;
    daemon_start(&d, "--tick-ms", "5", "--reclaim-delay-ms", "60000");
    char line[512];
    run_child(&d, "trim", "1000", line, sizeof line);
    long base = field(line, "base_kb="), freed = field(line, "freed_kb="), trimmed = field(line, "trimmed_kb=");
    assert_true(field(line, "from_daemon=") > 256);
    assert_true(freed - base > 256 * 1024);
    assert_true(trimmed - base < NEAR_KIB);
    daemon_stop(&d);
}

static void test_reuse_races_the_daemons_claim(void **state)
{
    (void)state;
    struct daemon d;
    daemon_start(&d, "--tick-ms", "1");
    char line[512];
    run_child(&d, "race", "1", line, sizeof line);
    assert_int_equal(field(line, "mismatches="), 0);
    /* Both sides won some: the daemon took warm SuperSlabs, the client
     * reused others. */
    assert_true(field(line, "reclaimed=") > 0);
    assert_true(field(line, "warm_reused=") > 0);
    assert_int_equal(log_count(&d, "dropped"), 0);
    daemon_stop(&d);
}

int main(int argc, char **argv)
{
    if (argc == 3 && strcmp(argv[1], "--child") == 0) {
        if (strcmp(argv[2], "idle") == 0)
            return child_idle();
        if (strcmp(argv[2], "trim") == 0)
            return child_trim();
        if (strcmp(argv[2], "race") == 0)
            return child_race();
        return 2;
    }
    ssize_t n = readlink("/proc/self/exe", self_path, sizeof self_path - 1);
    assert_true(n > 0);
    self_path[n] = 0;
    pagerd_locate(argc, argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_idle_client_gives_memory_back, pagerd_teardown),
        cmocka_unit_test_teardown(test_trim_gives_the_daemons_pages_back_at_once, pagerd_teardown),
        cmocka_unit_test_teardown(test_reuse_races_the_daemons_claim, pagerd_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
