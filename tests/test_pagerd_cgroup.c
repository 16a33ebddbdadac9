/* The daemon keeps a client inside its own memory cgroup, with real
 * cgroups of this machine's memory hierarchy (v1 here; v2 where that is
 * what is mounted): the daemon runs in a cgroup of its own, each client in
 * another with a limit, and each cgroup's peak usage says who paid.
 *   - A client in a 256 MiB cgroup cannot grow to 1 GiB through the daemon:
 *     it is killed (or refused memory) inside its own limit, its cgroup
 *     paid for what the daemon pre-faulted, the daemon's cgroup did not.
 *   - A client in a 2 GiB cgroup grows to 1 GiB, served by the daemon, and
 *     its cgroup paid for it.
 *   - With the daemon made to allocate pages itself (--charge daemon, as
 *     when it may not place a charger), it serves a limited client no more
 *     than the room of its cgroup, and the client meets its own limit.
 * With 4 KiB pages (--huge-pages off): who pays is the same for any page
 * size, and test_pagerd_huge charges huge pages to a limited cgroup.
 * Needs root (cgroups are made and processes moved) and a memory cgroup
 * hierarchy; without either it says so and checks nothing. Under TSan,
 * whose shadow of the client's heap (four times its size) its cgroup pays
 * for too, the client grows to 256 MiB and the roomy cgroup has 4 GiB. */
#include <sys/stat.h>

#include "hakmem.h"
#include "pagerd_client.h"
#include "pagerd.h"

#define MIB (1024ull * 1024)
#define TARGET_MIB (TEST_TSAN ? 256 : 1024)
#define ROOMY_MIB (TEST_TSAN ? 4096 : 2048)

static char self_path[512];
static struct cg_where own;
static bool usable;

/* ---- cgroups ---- */

struct cgroup {
    char dir[600];
};

static void cg_write(const struct cgroup *g, const char *file, unsigned long long v)
{
    char path[700];
    snprintf(path, sizeof path, "%s/%s", g->dir, file);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fprintf(f, "%llu\n", v);
    assert_int_equal(fclose(f), 0);
}

static unsigned long long cg_value(const struct cgroup *g, const char *file)
{
    char path[700];
    snprintf(path, sizeof path, "%s/%s", g->dir, file);
    unsigned long long v = 0;
    FILE *f = fopen(path, "r");
    if (f) {
        if (fscanf(f, "%llu", &v) != 1)
            v = 0;
        fclose(f);
    }
    return v;
}

/* Peak usage in bytes: v1 memory.max_usage_in_bytes, v2 memory.peak. */
static unsigned long long cg_peak(const struct cgroup *g)
{
    return cg_value(g, own.version == 2 ? "memory.peak" : "memory.max_usage_in_bytes");
}

/* Every cgroup a test made, removed by the teardown even when it failed. */
static struct cgroup *made[4];

/* A child cgroup of ours, limited to limit bytes (0: no limit). */
static void cg_make(struct cgroup *g, const char *name, unsigned long long limit)
{
    static unsigned serial;
    snprintf(g->dir, sizeof g->dir, "%s/hak-%s-%d-%u", own.dir, name, (int)getpid(), serial++);
    assert_int_equal(mkdir(g->dir, 0755), 0);
    for (int i = 0; i < 4; i++)
        if (!made[i]) {
            made[i] = g;
            break;
        }
    if (limit)
        cg_write(g, own.version == 2 ? "memory.max" : "memory.limit_in_bytes", limit);
}

/* Removed once empty (a charger leaves after its last client, at most a
 * few seconds later); what is still in it after that is killed. */
static bool cg_remove(struct cgroup *g)
{
    uint64_t end = mono_ms() + 10000;
    while (rmdir(g->dir) < 0 && errno == EBUSY && mono_ms() < end)
        sleep_ms(20);
    if (access(g->dir, F_OK) != 0)
        return true;
    char path[700];
    snprintf(path, sizeof path, "%s/cgroup.procs", g->dir);
    FILE *f = fopen(path, "r");
    int pid;
    while (f && fscanf(f, "%d", &pid) == 1)
        kill(pid, SIGKILL);
    if (f)
        fclose(f);
    sleep_ms(200);
    rmdir(g->dir);
    return false;
}

static int cgroups_teardown(void **state)
{
    pagerd_teardown(state);
    for (int i = 0; i < 4; i++)
        if (made[i]) {
            cg_remove(made[i]);
            made[i] = NULL;
        }
    return 0;
}

/* At the end of a test: empty within seconds. */
static void cg_done(struct cgroup *g)
{
    for (int i = 0; i < 4; i++)
        if (made[i] == g)
            made[i] = NULL;
    if (!cg_remove(g))
        fail_msg("cgroup %s still had processes", g->dir);
}

static void cg_enter(const struct cgroup *g)
{
    cg_write(g, "cgroup.procs", (unsigned long long)getpid());
}

/* ---- the daemon, started inside a cgroup ---- */

static void daemon_in(struct daemon *d, const struct cgroup *g, const char *charge)
{
    /* The test moves itself in for the fork, and back out: the daemon's
     * process starts in g and stays there. */
    struct cgroup back;
    snprintf(back.dir, sizeof back.dir, "%s", own.dir);
    cg_enter(g);
    daemon_start(d, "--tick-ms", "1", "--charge", charge, "--huge-pages", "off");
    cg_enter(&back);
}

/* ---- the client ---- */

/* Grow the heap by 64 KiB blocks, each written, to target MiB; a line
 * every 32 MiB. Exits 0 at the target, 3 if malloc failed (ENOMEM); the
 * kernel may kill it first. */
static int child_grow(long target_mib)
{
    struct hak_provision_stats ps;
    long blocks = target_mib * 16;
    for (long i = 1; i <= blocks; i++) {
        char *p = hak_malloc(64 * 1024);
        if (!p) {
            printf("enomem at %ld MiB\n", i / 16);
            return 3;
        }
        memset(p, 1, 64 * 1024);
        if (i % 512 == 0) {
            hak_provision_stats(&ps);
            printf("grown=%ld from_daemon=%llu\n", i / 16, (unsigned long long)ps.acquired[HAK_PROV_PAGERD]);
            fflush(stdout);
        }
    }
    hak_provision_stats(&ps);
    printf("done grown=%ld from_daemon=%llu\n", target_mib, (unsigned long long)ps.acquired[HAK_PROV_PAGERD]);
    return 0;
}

struct grown {
    int status;            /* exit status, or 128 + signal */
    long mib;              /* reached, by its last line */
    unsigned long long from_daemon;
};

/* Run a growing client in cgroup g against daemon d; its last line. */
static struct grown run_client(const struct daemon *d, const struct cgroup *g, long target_mib)
{
    int out[2];
    assert_int_equal(pipe(out), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        dup2(out[1], 1);
        close(out[0]);
        cg_write(g, "cgroup.procs", (unsigned long long)getpid());
        setenv("HAKMEM_PAGERD", "on", 1);
        setenv("HAKMEM_PAGERD_SOCKET", d->sock, 1);
        setenv("HAKMEM_PAGERD_CAPACITY_MB", "4096", 1);
        char target[16];
        snprintf(target, sizeof target, "%ld", target_mib);
        execl(self_path, self_path, "--grow", target, (char *)NULL);
        _exit(127);
    }
    close(out[1]);
    FILE *from = fdopen(out[0], "r");
    struct grown r = {0, 0, 0};
    char line[256];
    while (fgets(line, sizeof line, from)) {
        const char *g1 = strstr(line, "grown="), *f = strstr(line, "from_daemon=");
        if (g1 && f) {
            r.mib = atol(g1 + 6);
            r.from_daemon = strtoull(f + 12, NULL, 10);
        }
    }
    fclose(from);
    int status = 0;
    waitpid(pid, &status, 0);
    r.status = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    return r;
}

static bool skip_unless_usable(void)
{
    if (!usable)
        print_message("not checked: needs root and a memory cgroup hierarchy\n");
    return !usable;
}

static void test_limited_client_stays_in_its_cgroup(void **state)
{
    (void)state;
    if (skip_unless_usable())
        return;
    struct cgroup dg, cg;
    cg_make(&dg, "daemon", 0);
    cg_make(&cg, "client", 256 * MIB);
    struct daemon d;
    daemon_in(&d, &dg, "auto");
    struct grown r = run_client(&d, &cg, 1024);
    unsigned long long client_peak = cg_peak(&cg), daemon_peak = cg_peak(&dg);
    print_message("256 MiB cgroup, charger: client status %d at %ld MiB (%llu SuperSlabs from the daemon); "
                  "client cgroup peak %llu KiB, daemon cgroup peak %llu KiB\n",
                  r.status, r.mib, r.from_daemon, client_peak / 1024, daemon_peak / 1024);
    assert_true(r.status == 128 + SIGKILL || r.status == 3);
    assert_true(r.mib < 256);
    assert_true(r.from_daemon >= 16);                      /* the daemon served it... */
    assert_true(client_peak >= r.from_daemon * MIB);       /* ...its cgroup paid... */
    assert_true(daemon_peak < 64 * MIB);                   /* ...not the daemon's */
    assert_int_equal(log_count(&d, "charger pid="), 1);
    assert_true(daemon_alive(&d));
    daemon_stop(&d);
    cg_done(&cg);
    cg_done(&dg);
}

static void test_roomy_client_is_served_and_charged(void **state)
{
    (void)state;
    if (skip_unless_usable())
        return;
    struct cgroup dg, cg;
    cg_make(&dg, "daemon", 0);
    cg_make(&cg, "client", ROOMY_MIB * MIB);
    struct daemon d;
    daemon_in(&d, &dg, "auto");
    struct grown r = run_client(&d, &cg, TARGET_MIB);
    unsigned long long client_peak = cg_peak(&cg), daemon_peak = cg_peak(&dg);
    print_message("%d MiB cgroup, charger: client status %d at %ld MiB (%llu SuperSlabs from the daemon); "
                  "client cgroup peak %llu KiB, daemon cgroup peak %llu KiB\n",
                  ROOMY_MIB, r.status, r.mib, r.from_daemon, client_peak / 1024, daemon_peak / 1024);
    assert_int_equal(r.status, 0);
    assert_int_equal(r.mib, TARGET_MIB);
    assert_true(r.from_daemon >= TARGET_MIB * 3 / 4);
    assert_true(client_peak >= TARGET_MIB * MIB);
    assert_true(daemon_peak < 64 * MIB);
    daemon_stop(&d);
    cg_done(&cg);
    cg_done(&dg);
}

static void test_without_charger_the_room_bounds_the_daemon(void **state)
{
    (void)state;
    if (skip_unless_usable())
        return;
    struct cgroup dg, cg;
    cg_make(&dg, "daemon", 0);
    cg_make(&cg, "client", 256 * MIB);
    struct daemon d;
    daemon_in(&d, &dg, "daemon");
    struct grown r = run_client(&d, &cg, 1024);
    unsigned long long client_peak = cg_peak(&cg), daemon_peak = cg_peak(&dg);
    print_message("256 MiB cgroup, daemon allocates: client status %d at %ld MiB (%llu SuperSlabs from the "
                  "daemon); client cgroup peak %llu KiB, daemon cgroup peak %llu KiB\n",
                  r.status, r.mib, r.from_daemon, client_peak / 1024, daemon_peak / 1024);
    assert_true(r.status == 128 + SIGKILL || r.status == 3);
    assert_true(r.from_daemon >= 16);
    /* What the daemon allocated for it fit the room its cgroup had. */
    assert_true(r.from_daemon * MIB <= 256 * MIB);
    assert_true(daemon_peak < (256 + 64) * MIB);
    assert_true(r.mib < 512);
    assert_true(log_count(&d, "cgroup_room_mib=") >= 1);
    daemon_stop(&d);
    cg_done(&cg);
    cg_done(&dg);
}

int main(int argc, char **argv)
{
    if (argc == 3 && strcmp(argv[1], "--grow") == 0)
        return child_grow(atol(argv[2]));
    ssize_t n = readlink("/proc/self/exe", self_path, sizeof self_path - 1);
    assert_true(n > 0);
    self_path[n] = 0;
    pagerd_locate(argc, argv);
    usable = geteuid() == 0 && cg_locate(getpid(), &own);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_limited_client_stays_in_its_cgroup, cgroups_teardown),
        cmocka_unit_test_teardown(test_roomy_client_is_served_and_charged, cgroups_teardown),
        cmocka_unit_test_teardown(test_without_charger_the_room_bounds_the_daemon, cgroups_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
