/* 2 MiB pages from the daemon, with the host set up as the installed
 * tmpfiles.d/hakmem-pagerd.conf would (shmem THP to advise, and a pool of
 * huge pages reserved), and restored afterwards:
 *   - a client growing its heap takes at most 1/100 of the minor faults
 *     that 4 KiB pages cost, with pool pages and with THP;
 *   - a SuperSlab returned while the other half of its huge page holds
 *     live blocks is not punched (that would zero them, or split the
 *     page): it waits warm; once both halves are free the page goes back
 *     whole, and calloc of reused memory reads zero;
 *   - a pool that runs dry: the client falls back to its own memory and
 *     runs on, correct;
 *   - a hostile raw client cannot make the daemon split a huge page, and
 *     one that writes pool pages it was never given is dropped; the pool
 *     gets every page back after each client.
 * Needs root (the host's settings are written); without it, or where the
 * kernel offers neither kind, it says so and checks nothing. Under a
 * sanitizer the faults on its shadow of the heap are counted too: there
 * the faults are shown, not checked.
 *
 * How fast the daemon pre-faults is the benchmark's business; these check
 * that a page it pre-faulted maps with one fault. On a virtual machine
 * whose host backs memory lazily, a huge page fresh from the kernel costs
 * the daemon a host fault per 4 KiB (a pool page only at its first use),
 * and a client growing flat out outruns it (a pool page costs that only at
 * its first use; a THP page again once the host took it back, seconds after
 * it was freed). So a client grows twice before the one measured, and all
 * grow at a pace the daemon can hold there (PACE_MS per 8 MiB). Even so a
 * THP page may come too late now and then, and the client provisions that
 * SuperSlab itself: with THP the faults of those (a few, each 256) are
 * counted out, their number bounded (a tenth). */
#include <sys/resource.h>

#include "hakmem.h"
#include "pagerd_client.h"

#define MIB (1024ull * 1024)
#define GROW_MIB (TEST_TSAN ? 128 : 1024)
#define POOL_PAGES (GROW_MIB / 2 + 128) /* 2 MiB each: the heap, and room */
#define THP_FILE "/sys/kernel/mm/transparent_hugepage/shmem_enabled"
#define POOL_FILE "/proc/sys/vm/nr_hugepages"
#define FREE_FILE "/sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages"
#define FAST "--tick-ms", "2", "--reclaim-delay-ms", "100"
#define PACE_MS 10
/* Rings of one pair: what is returned stays warm, not taken into a ring. */
#define ONE_PAIR "--fake-nodes", "1", "--min-watermark", "2", "--max-watermark", "2"

static char self_path[512];
static char saved_thp[32];
static long saved_pool = -1;

/* ---- the host ---- */

static long read_long(const char *path)
{
    char *t = read_file_text(path);
    return *t ? atol(t) : -1;
}

static void host_restore(void)
{
    if (saved_thp[0])
        write_text(THP_FILE, saved_thp);
    if (saved_pool >= 0) {
        char n[32];
        snprintf(n, sizeof n, "%ld", saved_pool);
        write_text(POOL_FILE, n);
    }
}

/* A pool of n pages (the kernel may give fewer); its size. */
static long pool_set(long n)
{
    char v[32];
    snprintf(v, sizeof v, "%ld", n);
    write_text(POOL_FILE, v);
    return read_long(POOL_FILE);
}

static bool host_ready(void)
{
    if (geteuid() != 0 || !sysfs_choice(THP_FILE, saved_thp, sizeof saved_thp) || (saved_pool = read_long(POOL_FILE)) < 0)
        return false;
    atexit(host_restore);
    return write_text(THP_FILE, "advise");
}

static bool usable;

static bool skip_unless_usable(void)
{
    if (!usable)
        print_message("not checked: needs root, and a kernel with shmem THP and hugetlb pages\n");
    return !usable;
}

static uint64_t vmstat(const char *key)
{
    char *at = strstr(read_file_text("/proc/vmstat"), key);
    return at ? strtoull(at + strlen(key) + 1, NULL, 10) : 0;
}

/* ---- clients: this program again, in a child ---- */

static long minflt(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_minflt;
}

/* Grow the heap by mib MiB of 64 KiB blocks, each written whole (pausing
 * pace_ms every 8 MiB), then check every block. One line: faults,
 * SuperSlabs from the daemon, errors; then it waits for a line on stdin. */
static int child_grow(long mib, long pace_ms)
{
    long n = mib * 16;
    unsigned char **b = calloc((size_t)n, sizeof *b); /* before the count: not part of the heap's growth */
    long f0 = minflt();
    for (long i = 0; i < n; i++) {
        if (!(b[i] = hak_malloc(64 * 1024)))
            return 3;
        memset(b[i], (int)(i & 0xff), 64 * 1024);
        if (pace_ms && i % 128 == 127)
            sleep_ms((unsigned)pace_ms);
    }
    long faults = minflt() - f0, bad = 0;
    for (long i = 0; i < n; i++)
        for (size_t off = 0; off < 64 * 1024; off += 4096)
            bad += b[i][off] != (unsigned char)(i & 0xff);
    struct hak_provision_stats ps;
    hak_provision_stats(&ps);
    printf("faults=%ld from_daemon=%llu own=%llu bad=%ld\n", faults, (unsigned long long)ps.acquired[HAK_PROV_PAGERD],
           (unsigned long long)ps.acquired[HAK_PROV_EMBEDDED], bad);
    fflush(stdout);
    for (long i = 0; i < n; i++)
        hak_free(b[i]);
    free(b);
    char line[16];
    if (!fgets(line, sizeof line, stdin))
        return 5;
    return bad ? 4 : 0;
}

/* Halves of huge pages given back while the other halves live. Blocks of
 * 64 KiB fill whole SuperSlabs; those in odd SuperSlabs (the second half
 * of a 2 MiB-aligned page) are freed and trimmed back to the daemon. Then,
 * on each line read from stdin: check the live blocks ("intact=1"); free
 * everything and trim; calloc it all again and check for zeros. */
static int child_halves(void)
{
    enum { N = 1024 }; /* 64 MiB */
    static unsigned char *b[N];
    for (int i = 0; i < N; i++) {
        if (!(b[i] = hak_malloc(64 * 1024)))
            return 3;
        memset(b[i], 0x5A, 64 * 1024);
        if (i % 128 == 127)
            sleep_ms(PACE_MS); /* the daemon keeps ahead of it, even with pages fresh from the host */
    }
    sleep_ms(100); /* its rings full again: what comes back stays warm */
    int halves = 0;
    for (int i = 0; i < N; i++)
        if (((uintptr_t)b[i] >> 20) & 1) {
            hak_free(b[i]);
            b[i] = NULL;
            halves++;
        }
    hak_trim(0);
    struct hak_provision_stats ps;
    hak_provision_stats(&ps);
    printf("freed=%d returned=%llu\n", halves, (unsigned long long)ps.returned);
    fflush(stdout);
    char line[16];
    if (!fgets(line, sizeof line, stdin))
        return 5;
    long bad = 0;
    for (int i = 0; i < N; i++)
        for (size_t off = 0; b[i] && off < 64 * 1024; off += 512)
            bad += b[i][off] != 0x5A;
    for (int i = 0; i < N; i++)
        hak_free(b[i]);
    hak_trim(0);
    printf("intact=%d\n", bad == 0);
    fflush(stdout);
    if (!fgets(line, sizeof line, stdin))
        return 5;
    for (int i = 0; i < N; i++) {
        if (!(b[i] = hak_calloc(1, 64 * 1024)))
            return 3;
        for (size_t off = 0; off < 64 * 1024; off += 512)
            bad += b[i][off] != 0;
    }
    printf("zero=%d\n", bad == 0);
    return bad ? 4 : 0;
}

struct child {
    pid_t pid;
    FILE *out; /* its stdout */
    FILE *in;  /* its stdin */
};

/* What a failed test leaves is ended by the teardown: a child or a raw
 * client would hold pool pages, and the next test could not set the pool. */
static struct child *live_child;
static struct tclient *live_tclient;

static int huge_teardown(void **state)
{
    if (live_child) {
        kill(live_child->pid, SIGKILL);
        waitpid(live_child->pid, NULL, 0);
        live_child = NULL;
    }
    if (live_tclient) {
        tc_close(live_tclient);
        live_tclient = NULL;
    }
    pagerd_teardown(state);
    write_text(THP_FILE, "advise");
    pool_set(POOL_PAGES);
    return 0;
}

static void child_start(struct child *c, const struct daemon *d, const char *what, const char *arg)
{
    int out[2], in[2];
    assert_int_equal(pipe(out), 0);
    assert_int_equal(pipe(in), 0);
    c->pid = fork();
    assert_true(c->pid >= 0);
    if (c->pid == 0) {
        dup2(out[1], 1);
        dup2(in[0], 0);
        close(out[0]);
        close(in[1]);
        setenv("HAKMEM_PAGERD", "on", 1);
        setenv("HAKMEM_PAGERD_SOCKET", d->sock, 1);
        setenv("HAKMEM_PAGERD_CAPACITY_MB", "4096", 1);
        execl(self_path, self_path, what, arg, (char *)NULL);
        _exit(127);
    }
    close(out[1]);
    close(in[0]);
    c->out = fdopen(out[0], "r");
    c->in = fdopen(in[1], "w");
    live_child = c;
}

/* The next line of its output (empty at its end). */
static const char *child_line(struct child *c)
{
    static char line[256];
    if (!fgets(line, sizeof line, c->out))
        line[0] = 0;
    return line;
}

static void child_say(struct child *c)
{
    fputs("go\n", c->in);
    fflush(c->in);
}

static int child_end(struct child *c)
{
    live_child = NULL;
    fclose(c->in);
    fclose(c->out);
    int status = 0;
    waitpid(c->pid, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

static long field(const char *line, const char *key)
{
    const char *at = strstr(line, key);
    assert_non_null(at);
    return atol(at + strlen(key));
}

/* The session's page kind, by hakctl's records. */
static uint32_t client_pages(const struct daemon *d)
{
    struct status st;
    get_status(d, &st);
    return st.d.nclients ? st.clients[0].pages : 0;
}

/* ---- growth ---- */

/* A child growing mib MiB against d; its line, its pages, its status. */
static int grow(const struct daemon *d, long mib, long pace_ms, char *line, size_t len, uint32_t *pages)
{
    static struct child c;
    char arg[32];
    snprintf(arg, sizeof arg, "%ld:%ld", mib, pace_ms);
    child_start(&c, d, "--grow", arg);
    snprintf(line, len, "%s", child_line(&c));
    if (pages)
        *pages = client_pages(d);
    child_say(&c);
    return child_end(&c);
}

static void grow_with(uint32_t want_pages, long pace_ms)
{
    struct daemon d;
    daemon_start(&d, FAST);
    char line[256];
    uint32_t pages;
    for (int i = 0; i < 2; i++) /* pages the host backs */
        assert_int_equal(grow(&d, GROW_MIB, pace_ms, line, sizeof line, NULL), 0);
    int status = grow(&d, GROW_MIB, pace_ms, line, sizeof line, &pages);
    long faults = field(line, "faults="), served = field(line, "from_daemon="), own = field(line, "own="),
         small = GROW_MIB * 256;
    print_message("%s: %d MiB grown with %ld minor faults (4 KiB pages: %ld), %ld SuperSlabs from the daemon, "
                  "%ld its own\n",
                  hak_pages_name(pages), GROW_MIB, faults, small, served, own);
    assert_int_equal(status, 0);
    assert_int_equal(pages, want_pages);
    long counted_out = want_pages == HAK_PAGES_THP ? own * 256 : 0;
    if (!TEST_ASAN && !TEST_TSAN)
        assert_true(faults - counted_out <= small / 100);
    assert_true(served >= GROW_MIB * 9 / 10);
    daemon_stop(&d);
}

static void test_pool_pages_one_fault_per_2mib(void **state)
{
    (void)state;
    if (skip_unless_usable())
        return;
    long free0 = read_long(FREE_FILE);
    grow_with(HAK_PAGES_HUGETLB, PACE_MS);
    assert_true(WAIT_FOR(read_long(FREE_FILE) == free0, 2000)); /* every page back */
}

static void test_thp_one_fault_per_2mib(void **state)
{
    (void)state;
    if (skip_unless_usable())
        return;
    pool_set(0);
    grow_with(HAK_PAGES_THP, PACE_MS);
    pool_set(POOL_PAGES);
}

/* ---- halves ---- */

static void halves_with(uint32_t want_pages)
{
    struct daemon d;
    daemon_start(&d, FAST, ONE_PAIR);
    static struct child c;
    child_start(&c, &d, "--halves", "");
    const char *line = child_line(&c);
    long freed = field(line, "freed="), returned = field(line, "returned=");
    if (freed < 256 || returned < 8)
        fail_msg("%s: %ld blocks freed, %ld SuperSlabs returned to the daemon", hak_pages_name(want_pages), freed,
                 returned);
    assert_int_equal(client_pages(&d), want_pages);
    uint64_t split0 = vmstat("thp_split_page");
    sleep_ms(400); /* four reclaim delays */
    struct status st;
    get_status(&d, &st);
    print_message("%s: %ld blocks in second halves freed, %ld SuperSlabs returned; after 400 ms: %u warm, "
                  "%llu punched\n",
                  hak_pages_name(want_pages), freed, returned, st.nodes[0].dirty,
                  (unsigned long long)st.nodes[0].punched);
    /* Its halves wait warm (or went to a ring); whole pages only are
     * punched (a pair it emptied, or none). */
    assert_true(st.nodes[0].dirty >= 1);
    assert_int_equal(st.nodes[0].punched % 2, 0);
    assert_true(st.nodes[0].punched < (uint64_t)returned);
    assert_int_equal(vmstat("thp_split_page"), split0);
    child_say(&c);
    assert_string_equal(child_line(&c), "intact=1\n");
    /* Now whole pages are free: they go back, in pairs, whole. (Its trim
     * just now may have split a page: units of a SuperSlab in use go back
     * to the kernel. That is the client's choice, not the daemon's.) */
    split0 = vmstat("thp_split_page");
    assert_true(WAIT_FOR((get_status(&d, &st), st.nodes[0].punched >= 2), 3000));
    assert_int_equal(st.nodes[0].punched % 2, 0);
    assert_int_equal(vmstat("thp_split_page"), split0);
    child_say(&c);
    assert_string_equal(child_line(&c), "zero=1\n");
    assert_int_equal(child_end(&c), 0);
    daemon_stop(&d);
}

static void test_pool_halves_wait_for_their_pair(void **state)
{
    (void)state;
    if (skip_unless_usable())
        return;
    long free0 = read_long(FREE_FILE);
    halves_with(HAK_PAGES_HUGETLB);
    assert_true(WAIT_FOR(read_long(FREE_FILE) == free0, 2000));
}

static void test_thp_halves_wait_for_their_pair(void **state)
{
    (void)state;
    if (skip_unless_usable())
        return;
    pool_set(0);
    halves_with(HAK_PAGES_THP);
    pool_set(POOL_PAGES);
}

/* ---- a dry pool ---- */

static void test_dry_pool_falls_back(void **state)
{
    (void)state;
    if (skip_unless_usable())
        return;
    long pool = pool_set(12); /* 24 MiB: a session starts with 8 free */
    struct daemon d;
    daemon_start(&d, FAST);
    char line[256];
    int status = grow(&d, 128, 0, line, sizeof line, NULL);
    print_message("pool of %ld pages: 128 MiB grown: %s", pool, line);
    assert_int_equal(status, 0);
    assert_int_equal(field(line, "bad="), 0);
    assert_true(field(line, "from_daemon=") >= 4);   /* the pool served some... */
    assert_true(field(line, "from_daemon=") < 128);  /* ...not all */
    assert_true(log_count(&d, "pre-fault from the huge page pool") >= 1);
    assert_true(daemon_alive(&d));
    assert_true(WAIT_FOR(read_long(FREE_FILE) == pool, 2000));
    daemon_stop(&d);
    pool_set(POOL_PAGES);
}

/* ---- a hostile raw client ---- */

/* Two SuperSlabs of one huge page from node 0's ring. */
static void pop_pair(struct tclient *c, uint64_t *even)
{
    uint64_t a, b;
    assert_true(WAIT_FOR((a = tc_pop(c, 0)) != 0, 2000));
    assert_true(WAIT_FOR((b = tc_pop(c, 0)) != 0, 2000));
    assert_int_equal((a - c->lay.ss_offset) % (2 * HAK_SHM_SS_SIZE), 0);
    assert_int_equal(b, a + HAK_SHM_SS_SIZE);
    *even = a;
}

static void hostile_with(uint32_t want_pages)
{
    struct daemon d;
    daemon_start(&d, FAST, ONE_PAIR);
    long free0 = read_long(FREE_FILE);
    uint64_t split0 = vmstat("thp_split_page");
    static struct tclient c;
    assert_true(tc_open(&c, &d, 64));
    live_tclient = &c;
    assert_int_equal(client_pages(&d), want_pages);
    uint64_t even;
    pop_pair(&c, &even);
    assert_true(WAIT_FOR(tc_level(&c, 0) == 2, 2000)); /* full again: what comes back stays warm */
    memset(c.base + even, 0x77, 2 * HAK_SHM_SS_SIZE);
    tc_return(&c, even + HAK_SHM_SS_SIZE); /* half of the page back */
    sleep_ms(400);
    struct status st;
    get_status(&d, &st);
    assert_int_equal(st.nodes[0].dirty, 1); /* warm, not punched */
    assert_int_equal(st.nodes[0].punched, 0);
    for (uint64_t off = 0; off < HAK_SHM_SS_SIZE; off += 4096)
        assert_int_equal(c.base[even + off], 0x77);
    assert_int_equal(vmstat("thp_split_page"), split0);
    if (want_pages == HAK_PAGES_HUGETLB) {
        /* Pages it was never given: the last two SuperSlabs of its file. */
        memset(c.base + c.lay.file_size - 2 * HAK_SHM_SS_SIZE, 1, 2 * HAK_SHM_SS_SIZE);
        assert_true(WAIT_FOR(log_count(&d, "more than it was given") == 1, 2000));
        assert_true(reads_eof(c.sock, 2000));
    }
    tc_close(&c);
    live_tclient = NULL;
    assert_true(daemon_alive(&d));
    assert_true(WAIT_FOR(read_long(FREE_FILE) == free0, 2000)); /* no pool page left behind */
    daemon_stop(&d);
}

static void test_pool_hostile_client(void **state)
{
    (void)state;
    if (skip_unless_usable())
        return;
    hostile_with(HAK_PAGES_HUGETLB);
}

static void test_thp_hostile_client(void **state)
{
    (void)state;
    if (skip_unless_usable())
        return;
    pool_set(0);
    hostile_with(HAK_PAGES_THP);
    pool_set(POOL_PAGES);
}

/* ---- the daemon says what it uses ---- */

static void test_status_and_log_say_which_pages(void **state)
{
    (void)state;
    if (skip_unless_usable())
        return;
    struct daemon d;
    struct status st;
    daemon_start(&d, FAST);
    get_status(&d, &st);
    assert_int_equal(st.d.pages, HAK_PAGES_HUGETLB);
    assert_true(log_wait(&d, "pages: 2 MiB from the host's pool") == 1);
    daemon_stop(&d);
    pool_set(0);
    write_text(THP_FILE, "never");
    daemon_start(&d, FAST);
    get_status(&d, &st);
    print_message("neither kind: %s\n", st.d.pages_why);
    assert_int_equal(st.d.pages, HAK_PAGES_4K);
    assert_non_null(strstr(st.d.pages_why, "vm.nr_hugepages = 0"));
    assert_non_null(strstr(st.d.pages_why, "'never'"));
    assert_true(log_wait(&d, "pages: 4 KiB") == 1);
    daemon_stop(&d);
    write_text(THP_FILE, "advise");
    pool_set(POOL_PAGES);
}

int main(int argc, char **argv)
{
    if (argc == 3 && strcmp(argv[1], "--grow") == 0)
        return child_grow(atol(argv[2]), atol(strchr(argv[2], ':') + 1));
    if (argc == 3 && strcmp(argv[1], "--halves") == 0)
        return child_halves();
    ssize_t n = readlink("/proc/self/exe", self_path, sizeof self_path - 1);
    assert_true(n > 0);
    self_path[n] = 0;
    pagerd_locate(argc, argv);
    usable = host_ready() && pool_set(POOL_PAGES) >= POOL_PAGES;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_pool_pages_one_fault_per_2mib, huge_teardown),
        cmocka_unit_test_teardown(test_thp_one_fault_per_2mib, huge_teardown),
        cmocka_unit_test_teardown(test_pool_halves_wait_for_their_pair, huge_teardown),
        cmocka_unit_test_teardown(test_thp_halves_wait_for_their_pair, huge_teardown),
        cmocka_unit_test_teardown(test_dry_pool_falls_back, huge_teardown),
        cmocka_unit_test_teardown(test_pool_hostile_client, huge_teardown),
        cmocka_unit_test_teardown(test_thp_hostile_client, huge_teardown),
        cmocka_unit_test_teardown(test_status_and_log_say_which_pages, huge_teardown),
    };
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    host_restore();
    return failed;
}
