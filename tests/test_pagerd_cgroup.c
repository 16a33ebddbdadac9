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
 * Two rounds of the three: 4 KiB pages (--huge-pages off), then 2 MiB
 * shmem THP (--huge-pages thp, with shmem_enabled set to advise for the
 * round and restored after it), where the charger pre-faults huge pages
 * inside the client's cgroup. Who pays is checked the same way in both;
 * in the THP round the client's heap must also be mapped by 2 MiB pages
 * (ShmemPmdMapped of its smaps). Needs root (cgroups are made and
 * processes moved, the host's setting written) and a memory cgroup
 * hierarchy; without either it says so and checks nothing, and the THP
 * round says so where the kernel offers no shmem THP. Under TSan, whose
 * shadow of the client's heap (four times its size) its cgroup pays for
 * too, the client grows to 256 MiB and the roomy cgroup has 4 GiB. */
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

/* ---- the rounds: the daemon's page kind ---- */

struct round {
    const char *name;
    const char *huge_pages; /* --huge-pages */
    const char *log_says;   /* the daemon's line on its pages */
    const char *client_has; /* in its line on the client's session */
    long pace_ms;           /* the client's pause per 8 MiB */
    bool thp;
};

/* A huge page fresh from the kernel of a virtual machine whose host backs
 * memory lazily costs a host fault per 4 KiB: there a charger fills about
 * 500 MiB/s and a client growing flat out outruns it. So with THP the
 * client grows at a pace it can hold (as in test_pagerd_huge). */
static const struct round round_4k = {"4 KiB pages", "off", "pages: 4 KiB", " pages=4k", 0, false};
static const struct round round_thp = {"2 MiB shmem THP", "thp", "pages: 2 MiB shmem THP", " pages=2M-thp", 10, true};
static const struct round *this_round = &round_4k;

#define THP_FILE "/sys/kernel/mm/transparent_hugepage/shmem_enabled"
#define THP_FILE_2M "/sys/kernel/mm/transparent_hugepage/hugepages-2048kB/shmem_enabled"

static char saved_thp[32];
static const char *thp_why; /* why the THP round cannot run, if it cannot */

static void thp_restore(void)
{
    if (saved_thp[0])
        write_text(THP_FILE, saved_thp);
    saved_thp[0] = 0;
}

/* shmem THP to advise, as the installed tmpfiles.d would; restored by the
 * round's teardown, or at exit should the program end in between. */
static int thp_round_setup(void **state)
{
    (void)state;
    this_round = &round_thp;
    char now[32], per[32] = "inherit";
    thp_why = NULL;
    if (!usable)
        return 0;
    if (!sysfs_choice(THP_FILE, saved_thp, sizeof saved_thp))
        thp_why = "no shared-memory THP in this kernel";
    else if (!write_text(THP_FILE, "advise") || !sysfs_choice(THP_FILE, now, sizeof now) || strcmp(now, "advise") != 0)
        thp_why = "shmem_enabled cannot be set to advise here";
    else if (sysfs_choice(THP_FILE_2M, per, sizeof per) && (strcmp(per, "never") == 0 || strcmp(per, "deny") == 0))
        thp_why = "2 MiB shmem THP is off (hugepages-2048kB/shmem_enabled)";
    static bool registered;
    if (!registered)
        registered = atexit(thp_restore) == 0;
    return 0;
}

static int thp_round_teardown(void **state)
{
    (void)state;
    thp_restore();
    return 0;
}

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

/* Usage now: v1 memory.usage_in_bytes, v2 memory.current. */
static unsigned long long cg_current(const struct cgroup *g)
{
    return cg_value(g, own.version == 2 ? "memory.current" : "memory.usage_in_bytes");
}

/* Its shared memory (the clients' files) in bytes, by memory.stat. */
static unsigned long long cg_shmem(const struct cgroup *g)
{
    char path[700];
    snprintf(path, sizeof path, "%s/memory.stat", g->dir);
    const char *text = read_file_text(path), *at = strstr(text, "shmem ");
    while (at && at != text && at[-1] != '\n')
        at = strstr(at + 1, "shmem ");
    return at ? strtoull(at + 6, NULL, 10) : 0;
}

/* Every cgroup a test made, removed by the teardown even when it failed
 * (so a test's cgroups and daemon are static: a failed assertion leaves
 * its frame before the teardown runs). */
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
    daemon_start(d, "--tick-ms", "1", "--charge", charge, "--huge-pages", this_round->huge_pages);
    cg_enter(&back);
    assert_int_equal(log_wait(d, this_round->log_says), 1);
}

/* ---- the client ---- */

/* Of its shared memory, what 2 MiB pages map: ShmemPmdMapped, in KiB. */
static long pmd_mapped_kib(void)
{
    const char *at = strstr(read_file_text("/proc/self/smaps_rollup"), "ShmemPmdMapped:");
    return at ? atol(at + 15) : 0;
}

static void child_line(const char *what, long mib)
{
    struct hak_provision_stats ps;
    hak_provision_stats(&ps);
    printf("%sgrown=%ld from_daemon=%llu pmd_kib=%ld\n", what, mib, (unsigned long long)ps.acquired[HAK_PROV_PAGERD],
           pmd_mapped_kib());
    fflush(stdout);
}

/* Grow the heap by 64 KiB blocks, each written, to target MiB, pausing
 * pace_ms every 8 MiB; a line every 32 MiB. Exits 0 at the target (once
 * its standard input is closed), 3 if malloc failed (ENOMEM); the kernel
 * may kill it first. */
static int child_grow(long target_mib, long pace_ms)
{
    long blocks = target_mib * 16;
    for (long i = 1; i <= blocks; i++) {
        char *p = hak_malloc(64 * 1024);
        if (!p) {
            printf("enomem at %ld MiB\n", i / 16);
            return 3;
        }
        memset(p, 1, 64 * 1024);
        if (pace_ms && i % 128 == 0)
            sleep_ms((unsigned)pace_ms);
        if (i % 512 == 0)
            child_line("", i / 16);
    }
    child_line("done ", target_mib);
    /* Live until the parent has read the cgroup: at exit the daemon takes
     * the SuperSlabs back and their pages leave the cgroup. */
    char c;
    while (read(0, &c, 1) > 0) {
    }
    return 0;
}

/* By its last line, and its cgroup's usage read as that line came. */
struct grown {
    int status; /* exit status, or 128 + signal */
    long mib;   /* reached */
    unsigned long long from_daemon;
    long pmd_kib;               /* of its heap, mapped by 2 MiB pages */
    unsigned long long current; /* its cgroup's usage, bytes */
    unsigned long long shmem;   /* of that, shared memory (its file) */
};

/* Run a growing client in cgroup g against daemon d; its last line. */
static struct grown run_client(const struct daemon *d, const struct cgroup *g, long target_mib)
{
    int out[2], hold[2];
    assert_int_equal(pipe(out), 0);
    assert_int_equal(pipe(hold), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        dup2(out[1], 1);
        dup2(hold[0], 0);
        close(out[0]);
        close(hold[1]);
        cg_write(g, "cgroup.procs", (unsigned long long)getpid());
        setenv("HAKMEM_PAGERD", "on", 1);
        setenv("HAKMEM_PAGERD_SOCKET", d->sock, 1);
        setenv("HAKMEM_PAGERD_CAPACITY_MB", "4096", 1);
        char target[16], pace[16];
        snprintf(target, sizeof target, "%ld", target_mib);
        snprintf(pace, sizeof pace, "%ld", this_round->pace_ms);
        execl(self_path, self_path, "--grow", target, pace, (char *)NULL);
        _exit(127);
    }
    close(out[1]);
    close(hold[0]);
    FILE *from = fdopen(out[0], "r");
    struct grown r = {0};
    char line[256];
    while (fgets(line, sizeof line, from)) {
        const char *g1 = strstr(line, "grown="), *f = strstr(line, "from_daemon="), *h = strstr(line, "pmd_kib=");
        if (g1 && f && h) {
            r.mib = atol(g1 + 6);
            r.from_daemon = strtoull(f + 12, NULL, 10);
            r.pmd_kib = atol(h + 8);
            r.current = cg_current(g);
            r.shmem = cg_shmem(g);
        }
        if (strncmp(line, "done ", 5) == 0 && hold[1] >= 0) {
            close(hold[1]); /* measured: the client may exit */
            hold[1] = -1;
        }
    }
    fclose(from);
    if (hold[1] >= 0)
        close(hold[1]);
    int status = 0;
    waitpid(pid, &status, 0);
    r.status = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    assert_int_equal(log_count(d, this_round->client_has), 1);
    return r;
}

static bool skip_unless_usable(void)
{
    const char *why = !usable ? "needs root and a memory cgroup hierarchy" : this_round->thp ? thp_why : NULL;
    if (why)
        print_message("not checked (%s): %s\n", this_round->name, why);
    return why != NULL;
}

static void show(const char *what, const struct grown *r, const struct cgroup *cg, const struct cgroup *dg)
{
    print_message("%s, %s: client status %d at %ld MiB (%llu SuperSlabs from the daemon, %ld MiB of them mapped "
                  "by 2 MiB pages); client cgroup then %llu KiB (shmem %llu KiB), peak %llu KiB; daemon cgroup "
                  "peak %llu KiB\n",
                  this_round->name, what, r->status, r->mib, r->from_daemon, r->pmd_kib / 1024, r->current / 1024,
                  r->shmem / 1024, cg_peak(cg) / 1024, cg_peak(dg) / 1024);
}

/* With THP, what the daemon gave is mapped by 2 MiB pages: most of it
 * (near its limit the kernel may fall back to 4 KiB pages). */
static void assert_page_kind(const struct grown *r)
{
    if (this_round->thp)
        assert_true((unsigned long long)r->pmd_kib * 1024 >= r->from_daemon * MIB * 3 / 4);
}

static void test_limited_client_stays_in_its_cgroup(void **state)
{
    (void)state;
    if (skip_unless_usable())
        return;
    static struct cgroup dg, cg;
    cg_make(&dg, "daemon", 0);
    cg_make(&cg, "client", 256 * MIB);
    static struct daemon d;
    daemon_in(&d, &dg, "auto");
    struct grown r = run_client(&d, &cg, 1024);
    unsigned long long client_peak = cg_peak(&cg), daemon_peak = cg_peak(&dg);
    show("256 MiB cgroup, charger", &r, &cg, &dg);
    assert_true(r.status == 128 + SIGKILL || r.status == 3);
    assert_true(r.mib < 256);
    assert_true(r.from_daemon >= 16);                      /* the daemon served it... */
    assert_true(client_peak >= r.from_daemon * MIB);       /* ...its cgroup paid... */
    assert_true(daemon_peak < 64 * MIB);                   /* ...not the daemon's */
    assert_true(r.shmem >= r.from_daemon * MIB);           /* its file's pages, whatever their size */
    assert_page_kind(&r);
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
    static struct cgroup dg, cg;
    cg_make(&dg, "daemon", 0);
    cg_make(&cg, "client", ROOMY_MIB * MIB);
    static struct daemon d;
    daemon_in(&d, &dg, "auto");
    struct grown r = run_client(&d, &cg, TARGET_MIB);
    unsigned long long client_peak = cg_peak(&cg), daemon_peak = cg_peak(&dg);
    char what[64];
    snprintf(what, sizeof what, "%d MiB cgroup, charger", ROOMY_MIB);
    show(what, &r, &cg, &dg);
    assert_int_equal(r.status, 0);
    assert_int_equal(r.mib, TARGET_MIB);
    assert_true(r.from_daemon >= TARGET_MIB * 3 / 4);
    assert_true(client_peak >= TARGET_MIB * MIB);
    assert_true(daemon_peak < 64 * MIB);
    assert_true(r.shmem >= r.from_daemon * MIB);
    assert_page_kind(&r);
    daemon_stop(&d);
    cg_done(&cg);
    cg_done(&dg);
}

static void test_without_charger_the_room_bounds_the_daemon(void **state)
{
    (void)state;
    if (skip_unless_usable())
        return;
    static struct cgroup dg, cg;
    cg_make(&dg, "daemon", 0);
    cg_make(&cg, "client", 256 * MIB);
    static struct daemon d;
    daemon_in(&d, &dg, "daemon");
    struct grown r = run_client(&d, &cg, 1024);
    unsigned long long daemon_peak = cg_peak(&dg);
    show("256 MiB cgroup, daemon allocates", &r, &cg, &dg);
    assert_true(r.status == 128 + SIGKILL || r.status == 3);
    assert_true(r.from_daemon >= 16);
    /* What the daemon allocated for it fit the room its cgroup had. */
    assert_true(r.from_daemon * MIB <= 256 * MIB);
    assert_true(daemon_peak < (256 + 64) * MIB);
    assert_true(r.mib < 512);
    assert_true(log_count(&d, "cgroup_room_mib=") >= 1);
    assert_page_kind(&r);
    daemon_stop(&d);
    cg_done(&cg);
    cg_done(&dg);
}

int main(int argc, char **argv)
{
    if (argc == 4 && strcmp(argv[1], "--grow") == 0)
        return child_grow(atol(argv[2]), atol(argv[3]));
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
    int failed = cmocka_run_group_tests_name("4 KiB pages", tests, NULL, NULL);
    failed += cmocka_run_group_tests_name("2 MiB shmem THP", tests, thp_round_setup, thp_round_teardown);
    return failed;
}
