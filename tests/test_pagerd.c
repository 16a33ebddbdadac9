/* hakmem-pagerd against a raw, well-behaved client: the handshake and the
 * file it hands over, pre-faulted SuperSlabs in every node's ring, pops and
 * returns seen in STATUS, release on hang-up, DETACH and kill -9, the
 * per-client limit, delayed punching, isolation between clients, and the
 * daemon's own life: settings, reload, readiness, clean stop. */
#include <sys/wait.h>

#include "pagerd_client.h"

#define FAST "--tick-ms", "2", "--fake-nodes", "2"

static struct status st;

static bool rings_at_least(struct tclient *c, uint32_t n)
{
    for (uint32_t node = 0; node < c->lay.nnodes; node++)
        if (tc_level(c, node) < n)
            return false;
    return true;
}

static bool status_total(const struct daemon *d, uint64_t total, uint32_t nclients)
{
    get_status(d, &st);
    return st.d.ss_total == total && st.d.nclients == nclients;
}

static void test_handshake_file(void **state)
{
    (void)state;
    struct daemon d;
    daemon_start(&d, FAST);
    struct tclient c;
    assert_true(tc_open(&c, &d, 64));
    struct hak_shm_layout want;
    assert_true(hak_shm_layout_compute(2, 64, &want));
    assert_true(hak_shm_layout_equal(&c.lay, &want));
    assert_true(c.session != 0);

    int seals = fcntl(c.memfd, F_GET_SEALS);
    assert_true(seals >= 0);
    assert_true((seals & (F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL)) == (F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL));
    struct stat sb;
    assert_int_equal(fstat(c.memfd, &sb), 0);
    assert_true((uint64_t)sb.st_size == want.file_size);
    assert_int_not_equal(ftruncate(c.memfd, 0), 0); /* sealed */

    struct hak_shm_ctrl *ctrl = tc_ctrl(&c);
    assert_int_equal(ctrl->magic, HAK_SHM_MAGIC);
    assert_int_equal(ctrl->version, HAK_SHM_VERSION);
    assert_true(hak_shm_layout_equal(&ctrl->layout, &want));
    long cpus = sysconf(_SC_NPROCESSORS_CONF);
    assert_int_equal(ctrl->ncpus, cpus);
    for (uint32_t cpu = 0; cpu < ctrl->ncpus; cpu++)
        assert_int_equal(ctrl->cpu_node[cpu], cpu % 2); /* fake nodes: round-robin */

    /* The heartbeat moves. */
    uint64_t hb = atomic_load(&ctrl->heartbeat);
    assert_true(WAIT_FOR(atomic_load(&ctrl->heartbeat) > hb + 2, 2000));
    tc_close(&c);
    daemon_stop(&d);
}

static void test_capacity_clamped(void **state)
{
    (void)state;
    struct daemon d;
    daemon_start(&d, FAST, "--max-capacity", "16");
    struct tclient c;
    assert_true(tc_open(&c, &d, 1000));
    assert_int_equal(c.lay.capacity, 16);
    struct hak_shm_layout want;
    assert_true(hak_shm_layout_compute(2, 16, &want));
    assert_true(hak_shm_layout_equal(&c.lay, &want));
    tc_close(&c);
    daemon_stop(&d);
}

/* Both rings fill to the watermark, and what is in them has its pages
 * already: the file's allocated blocks cover every ready SuperSlab. (mincore
 * does not show fallocated shmem pages until first touched, so the blocks
 * of the file are the measure.) */
static void test_rings_filled_and_prefaulted(void **state)
{
    (void)state;
    struct daemon d;
    daemon_start(&d, FAST, "--min-watermark", "4");
    struct tclient c;
    assert_true(tc_open(&c, &d, 256));
    assert_true(WAIT_FOR(rings_at_least(&c, 4), 3000));
    uint64_t ready = tc_level(&c, 0) + tc_level(&c, 1);
    assert_true(file_bytes(c.memfd) >= ready * HAK_SHM_SS_SIZE);
    /* Writing to a popped SuperSlab finds its pages there. */
    uint64_t off = tc_pop(&c, 1);
    assert_true(off != 0);
    uint64_t before = file_bytes(c.memfd);
    memset(c.base + off, 0xA5, HAK_SHM_SS_SIZE);
    get_status(&d, &st);
    /* A refill meanwhile may add a SuperSlab (a pair with huge pages). */
    assert_true(file_bytes(c.memfd) <= before + 2 * HAK_SHM_SS_SIZE);
    assert_true(st.nodes[0].prefaulted >= 4 && st.nodes[1].prefaulted >= 4);
    assert_true(st.nodes[0].ready >= 1 && st.nodes[1].ready >= 1);
    tc_close(&c);
    daemon_stop(&d);
}

static void test_pop_write_return_status(void **state)
{
    (void)state;
    struct daemon d;
    daemon_start(&d, FAST);
    struct tclient c;
    assert_true(tc_open(&c, &d, 256));
    uint64_t got[12];
    int n = 0;
    uint64_t end = mono_ms() + 3000;
    while (n < 12 && mono_ms() < end) {
        uint64_t off = tc_pop(&c, (uint32_t)n % 2);
        if (!off) {
            sleep_ms(1);
            continue;
        }
        for (int i = 0; i < n; i++)
            assert_true(got[i] != off);
        pattern_fill(c.base + off, 4096);
        got[n++] = off;
    }
    assert_int_equal(n, 12);
    for (int i = 0; i < n; i++)
        assert_true(pattern_check(c.base + got[i], 4096));
    assert_true(WAIT_FOR((get_status(&d, &st), status_client(&st, c.session)->served == 12), 2000));
    const struct hak_status_client *r = status_client(&st, c.session);
    assert_int_equal(r->held, 12);
    assert_int_equal(r->pid, getpid());
    assert_int_equal(r->uid, getuid());
    assert_int_equal(r->capacity, 256);
    assert_int_equal(r->returned, 0);
    for (int i = 0; i < 5; i++)
        tc_return(&c, got[i]);
    assert_true(WAIT_FOR((get_status(&d, &st), status_client(&st, c.session)->returned == 5), 2000));
    r = status_client(&st, c.session);
    assert_int_equal(r->held, 7);
    assert_true(st.d.ss_total >= r->held + r->ring_level);
    assert_string_equal(st.d.version, "0.1.0");
    assert_int_equal(st.d.nnodes, 2);
    assert_int_equal(st.d.nclients, 1);
    assert_int_equal((pid_t)st.d.pid, d.pid);
    tc_close(&c);
    daemon_stop(&d);
}

/* Popped and at once returned, as fast as possible: the daemon may see the
 * return before it noticed the pop, and must not mistake that for a lie. */
static void test_pop_return_churn(void **state)
{
    (void)state;
    struct daemon d;
    daemon_start(&d, FAST, "--tick-ms", "1");
    struct tclient c;
    assert_true(tc_open(&c, &d, 256));
    uint64_t n = 0, end = mono_ms() + 300;
    while (mono_ms() < end) {
        uint64_t off = tc_pop(&c, (uint32_t)n % 2);
        if (!off)
            continue;
        c.base[off] = (unsigned char)n;
        while (!hak_return_ring_push(tc_ret(&c), off))
            ;
        n++;
    }
    assert_true(n > 100);
    const struct hak_status_client *r = NULL;
    if (!WAIT_FOR((get_status(&d, &st), (r = status_client(&st, c.session)) && r->returned == n), 2000))
        fail_msg("returned %llu of %llu (held %u, served %llu, reclaimed %llu): %s", r ? (unsigned long long)r->returned : 0ull,
                 (unsigned long long)n, r ? r->held : 0, r ? (unsigned long long)r->served : 0ull,
                 r ? (unsigned long long)r->reclaimed : 0ull, read_file_text(d.log));
    assert_int_equal(r->held, 0);
    assert_int_equal(log_count(&d, "dropped"), 0);
    tc_close(&c);
    daemon_stop(&d);
}

/* A returned SuperSlab whose reuse is not needed (rings at their fixed
 * watermark) is punched after the delay: the file loses its blocks and the
 * written pages are no longer resident. */
static void test_reclaim_punches_after_delay(void **state)
{
    (void)state;
    struct daemon d;
    daemon_start(&d, FAST, "--min-watermark", "2", "--max-watermark", "2", "--reclaim-delay-ms", "150");
    struct tclient c;
    assert_true(tc_open(&c, &d, 64));
    uint64_t got[4];
    for (int i = 0; i < 4; i++) {
        assert_true(WAIT_FOR((got[i] = tc_pop(&c, (uint32_t)i % 2)) != 0, 2000));
        memset(c.base + got[i], 0x5A, HAK_SHM_SS_SIZE);
    }
    assert_true(WAIT_FOR(rings_at_least(&c, 2), 2000));
    unsigned char vec[HAK_SHM_SS_SIZE / 4096];
    assert_int_equal(mincore(c.base + got[0], HAK_SHM_SS_SIZE, vec), 0);
    assert_true(vec[0] & 1);
    uint64_t before = file_bytes(c.memfd);
    uint64_t t0 = mono_ms();
    for (int i = 0; i < 4; i++)
        tc_return(&c, got[i]);
    assert_true(WAIT_FOR((get_status(&d, &st), st.nodes[0].dirty + st.nodes[1].dirty == 4), 1000));
    assert_true(WAIT_FOR(file_bytes(c.memfd) <= before - 4 * HAK_SHM_SS_SIZE, 3000));
    assert_true(mono_ms() - t0 >= 140); /* not before the delay */
    get_status(&d, &st);
    assert_int_equal(st.nodes[0].dirty + st.nodes[1].dirty, 0);
    assert_true(st.nodes[0].punched + st.nodes[1].punched >= 4);
    for (int i = 0; i < 4; i++) {
        assert_int_equal(mincore(c.base + got[i], HAK_SHM_SS_SIZE, vec), 0);
        for (size_t p = 0; p < sizeof vec; p++)
            assert_int_equal(vec[p] & 1, 0);
    }
    /* A hole reads as zeros (after the mincore checks: in a file of huge
     * pages a read allocates the whole page, its neighbour's too). */
    for (int i = 0; i < 4; i++)
        assert_int_equal(c.base[got[i]], 0);
    tc_close(&c);
    daemon_stop(&d);
}

/* Returned SuperSlabs are handed out again before fresh ones. */
static void test_warm_reuse_first(void **state)
{
    (void)state;
    struct daemon d;
    daemon_start(&d, "--tick-ms", "2", "--min-watermark", "1", "--max-watermark", "1", "--reclaim-delay-ms", "60000");
    struct tclient c;
    assert_true(tc_open(&c, &d, 64));
    uint64_t a;
    assert_true(WAIT_FOR((a = tc_pop(&c, 0)) != 0, 2000));
    assert_true(WAIT_FOR(tc_level(&c, 0) == 1, 2000)); /* refilled with a fresh one */
    c.base[a] = 0x77;
    tc_return(&c, a);
    assert_true(WAIT_FOR((get_status(&d, &st), status_client(&st, c.session)->dirty == 1), 2000));
    uint64_t b = tc_pop(&c, 0);
    assert_true(b != 0 && b != a);
    uint64_t again;
    assert_true(WAIT_FOR((again = tc_pop(&c, 0)) != 0, 2000));
    assert_true(again == a);
    assert_int_equal(c.base[again], 0x77); /* warm: not punched */
    tc_close(&c);
    daemon_stop(&d);
}

static void test_hangup_releases(void **state)
{
    (void)state;
    struct daemon d;
    daemon_start(&d, FAST);
    struct tclient c;
    assert_true(tc_open(&c, &d, 64));
    assert_true(WAIT_FOR(rings_at_least(&c, 2), 2000));
    assert_true(tc_pop(&c, 0) != 0);
    get_status(&d, &st);
    assert_int_equal(st.d.nclients, 1);
    assert_true(st.d.ss_total >= 1);
    char line[64];
    snprintf(line, sizeof line, "disconnect pid=%d", getpid());
    tc_close(&c);
    assert_true(WAIT_FOR(status_total(&d, 0, 0), 2000));
    assert_true(WAIT_FOR(log_count(&d, line) == 1, 1000));
    daemon_stop(&d);
}

static void test_detach_releases(void **state)
{
    (void)state;
    struct daemon d;
    daemon_start(&d, FAST);
    struct tclient c;
    assert_true(tc_open(&c, &d, 64));
    assert_true(WAIT_FOR(rings_at_least(&c, 2), 2000));
    struct hak_msg_hdr h;
    hak_msg_init(&h, HAK_MSG_DETACH, sizeof h);
    send_bytes(c.sock, &h, sizeof h);
    assert_true(reads_eof(c.sock, 2000));
    assert_true(WAIT_FOR(status_total(&d, 0, 0), 2000));
    assert_int_equal(log_count(&d, "(detach)"), 1);
    /* Our mapping stays valid after the daemon let go. */
    c.base[c.lay.ss_offset] = 1;
    tc_close(&c);
    daemon_stop(&d);
}

/* A child connects, pops and is killed with SIGKILL: the daemon sees the
 * hang-up and releases everything it held. */
static void test_kill9_releases(void **state)
{
    (void)state;
    struct daemon d;
    daemon_start(&d, FAST);
    int p[2];
    assert_int_equal(pipe(p), 0);
    pid_t child = fork();
    assert_true(child >= 0);
    if (child == 0) {
        close(p[0]);
        struct tclient c;
        if (!tc_open(&c, &d, 64))
            _exit(1);
        int popped = 0;
        uint64_t end = mono_ms() + 3000;
        while (popped < 5 && mono_ms() < end) {
            uint64_t off = tc_pop(&c, (uint32_t)popped % 2);
            if (off) {
                memset(c.base + off, 1, 65536);
                popped++;
            }
        }
        if (write(p[1], &c.session, sizeof c.session) != sizeof c.session)
            _exit(1);
        for (;;)
            pause();
    }
    close(p[1]);
    uint64_t session = 0;
    assert_int_equal(read(p[0], &session, sizeof session), sizeof session);
    close(p[0]);
    assert_true(WAIT_FOR((get_status(&d, &st), status_client(&st, session) && status_client(&st, session)->held == 5),
                         2000));
    assert_int_equal(status_client(&st, session)->pid, child);
    assert_true(st.d.ss_total >= 5);
    kill(child, SIGKILL);
    waitpid(child, NULL, 0);
    assert_true(WAIT_FOR(status_total(&d, 0, 0), 2000));
    char line[64];
    snprintf(line, sizeof line, "disconnect pid=%d", child);
    assert_int_equal(log_count(&d, line), 1);
    daemon_stop(&d);
}

/* With limit_client 8 the client never has more than 8 (held plus in its
 * rings), however fast it pops; the refusals show as limit hits. */
static void test_limit_client(void **state)
{
    (void)state;
    struct daemon d;
    daemon_start(&d, FAST, "--limit-client", "8", "--min-watermark", "3");
    struct tclient c;
    assert_true(tc_open(&c, &d, 256));
    uint32_t held = 0;
    uint64_t end = mono_ms() + 400;
    while (mono_ms() < end) {
        for (uint32_t n = 0; n < 2; n++)
            if (tc_pop(&c, n))
                held++;
        assert_true(held + tc_level(&c, 0) + tc_level(&c, 1) <= 8);
    }
    assert_int_equal(held, 8);
    get_status(&d, &st);
    const struct hak_status_client *r = status_client(&st, c.session);
    assert_int_equal(r->held, 8);
    assert_int_equal(r->ring_level, 0);
    assert_true(r->limit_hits > 0);
    assert_int_equal(st.d.ss_total, 8);
    assert_int_equal(st.d.ss_limit_client, 8);
    assert_true(log_count(&d, "limit pid=") >= 1);
    /* Giving some back makes room again. */
    tc_close(&c);
    daemon_stop(&d);
}

/* The daemon-wide limit spans clients. */
static void test_limit_total(void **state)
{
    (void)state;
    struct daemon d;
    daemon_start(&d, FAST, "--limit-total", "6", "--min-watermark", "4");
    struct tclient a, b;
    assert_true(tc_open(&a, &d, 64));
    assert_true(tc_open(&b, &d, 64));
    assert_true(WAIT_FOR(tc_level(&a, 0) + tc_level(&a, 1) + tc_level(&b, 0) + tc_level(&b, 1) >= 6, 2000));
    sleep_ms(50); /* and no more comes */
    get_status(&d, &st);
    assert_int_equal(st.d.ss_total, 6);
    assert_true(tc_level(&a, 0) + tc_level(&a, 1) + tc_level(&b, 0) + tc_level(&b, 1) == 6);
    tc_close(&a);
    assert_true(WAIT_FOR(tc_level(&b, 0) + tc_level(&b, 1) == 6, 2000));
    tc_close(&b);
    daemon_stop(&d);
}

/* Different files; a write in one client's SuperSlab is not in the
 * other's. */
static void test_clients_isolated(void **state)
{
    (void)state;
    struct daemon d;
    daemon_start(&d, FAST);
    struct tclient a, b;
    assert_true(tc_open(&a, &d, 64));
    assert_true(tc_open(&b, &d, 64));
    assert_true(a.session != b.session);
    struct stat sa, sb;
    assert_int_equal(fstat(a.memfd, &sa), 0);
    assert_int_equal(fstat(b.memfd, &sb), 0);
    assert_true(sa.st_ino != sb.st_ino);
    /* The same offset in different files. Both rings start with the same
     * SuperSlabs, but in the order their pre-faults completed: look
     * through b's for a's. */
    uint64_t oa, ob;
    assert_true(WAIT_FOR((oa = tc_pop(&a, 0)) != 0, 2000));
    assert_true(WAIT_FOR((ob = tc_pop(&b, 0)) == oa, 2000));
    memset(a.base + oa, 0xEE, HAK_SHM_SS_SIZE);
    for (size_t i = 0; i < HAK_SHM_SS_SIZE; i += 4096)
        assert_int_equal(b.base[ob + i], 0);
    memset(b.base + ob, 0x11, 4096);
    assert_int_equal(a.base[oa], 0xEE);
    tc_close(&a);
    tc_close(&b);
    daemon_stop(&d);
}

static void test_status_without_session(void **state)
{
    (void)state;
    struct daemon d;
    daemon_start(&d, FAST);
    get_status(&d, &st);
    assert_int_equal(st.d.nclients, 0);
    assert_int_equal(st.d.nnodes, 2);
    assert_int_equal(st.d.numa, 0); /* fake nodes */
    assert_int_equal(st.d.ss_limit_total, 16384);
    assert_int_equal(st.d.ss_limit_client, 4096);
    for (uint32_t n = 0; n < 2; n++)
        assert_int_equal(st.nodes[n].node, n);
    /* Several requests on one connection. */
    int s = connect_to(d.sock);
    struct hak_msg_hdr h;
    hak_msg_init(&h, HAK_MSG_STATUS_REQ, sizeof h);
    static unsigned char buf[HAK_STATUS_MAX_BYTES];
    for (int i = 0; i < 3; i++) {
        send_bytes(s, &h, sizeof h);
        ssize_t n = recv_msg(s, buf, sizeof buf, NULL, 2000);
        assert_true(n > 0);
        assert_int_equal(hak_msg_check(buf, (size_t)n), HAK_MSG_STATUS);
    }
    close(s);
    daemon_stop(&d);
}

/* The real topology: one node at least, every CPU mapped to one. */
static void test_real_topology(void **state)
{
    (void)state;
    struct daemon d;
    daemon_start(&d, "--tick-ms", "2");
    struct tclient c;
    assert_true(tc_open(&c, &d, 8));
    assert_true(c.lay.nnodes >= 1);
    struct hak_shm_ctrl *ctrl = tc_ctrl(&c);
    assert_true(ctrl->ncpus >= 1);
    for (uint32_t cpu = 0; cpu < ctrl->ncpus; cpu++)
        assert_true(ctrl->cpu_node[cpu] < c.lay.nnodes);
    assert_true(WAIT_FOR(rings_at_least(&c, 2), 2000));
    tc_close(&c);
    daemon_stop(&d);
}

/* ---- the daemon's life ---- */

static void write_cfg(const char *path, const char *text)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
}

static void test_config_file_and_reload(void **state)
{
    (void)state;
    char dir[] = "/tmp/hakcfg-XXXXXX", cfg[64];
    assert_non_null(mkdtemp(dir));
    snprintf(cfg, sizeof cfg, "%s/pagerd.conf", dir);
    write_cfg(cfg, "# test settings\n\ntick_ms = 3\nlimit_client=5   # trailing comment\n"
                    "  limit_total = 100\nfake_nodes = 2\nlog_level = debug\n");
    struct daemon d;
    /* A flag wins over the file, also after a reload. */
    daemon_start(&d, "--config", cfg, "--limit-total", "77");
    get_status(&d, &st);
    assert_int_equal(st.d.ss_limit_client, 5);
    assert_int_equal(st.d.ss_limit_total, 77);
    assert_int_equal(st.d.nnodes, 2);

    write_cfg(cfg, "limit_client = 7\nlimit_total = 1\nfake_nodes = 2\n");
    kill(d.pid, SIGHUP);
    assert_true(WAIT_FOR((get_status(&d, &st), st.d.ss_limit_client == 7), 2000));
    assert_int_equal(st.d.ss_limit_total, 77);
    assert_int_equal(log_count(&d, "reloaded"), 1);

    /* A bad file on reload: an error naming file and line, old settings kept. */
    write_cfg(cfg, "limit_client = 9\nbogus_key = 1\n");
    kill(d.pid, SIGHUP);
    char want[128];
    snprintf(want, sizeof want, "%s:2: unknown key 'bogus_key'", cfg);
    assert_true(WAIT_FOR(log_count(&d, want) == 1, 2000));
    get_status(&d, &st);
    assert_int_equal(st.d.ss_limit_client, 7);
    assert_true(daemon_alive(&d));
    daemon_stop(&d);
    unlink(cfg);
    rmdir(dir);
}

/* Runs the daemon with argv, expecting it to exit; returns the exit status
 * and its output in out. */
static int run_daemon(const char *const *args, char *out, size_t cap)
{
    char log[] = "/tmp/hakrun-XXXXXX";
    int fd = mkstemp(log);
    assert_true(fd >= 0);
    close(fd);
    const char *argv[16] = {pagerd_bin};
    int n = 1;
    for (; *args && n < 15; args++)
        argv[n++] = *args;
    argv[n] = NULL;
    pid_t pid = spawn_logged((char *const *)argv, log);
    int status = 0;
    uint64_t end = mono_ms() + 5000 * pagerd_slow;
    while (waitpid(pid, &status, WNOHANG) == 0) {
        if (mono_ms() > end) {
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
            unlink(log);
            fail_msg("daemon did not exit");
        }
        sleep_ms(2);
    }
    snprintf(out, cap, "%s", read_file_text(log));
    unlink(log);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

static char sock_path[96], out[4096];

/* The daemon's exit status with these flags (after --foreground --socket). */
#define RUN(...) run_daemon((const char *[]){"--foreground", "--socket", sock_path, __VA_ARGS__, NULL}, out, sizeof out)

static void test_config_errors_exit_2(void **state)
{
    (void)state;
    char dir[] = "/tmp/hakcfg-XXXXXX", cfg[64], missing[96], want[128];
    assert_non_null(mkdtemp(dir));
    snprintf(cfg, sizeof cfg, "%s/bad.conf", dir);
    snprintf(sock_path, sizeof sock_path, "%s/s", dir);
    snprintf(missing, sizeof missing, "%s/missing.conf", dir);

    write_cfg(cfg, "tick_ms = 5\nno_such_key = 3\n");
    assert_int_equal(RUN("--config", cfg), 2);
    snprintf(want, sizeof want, "%s:2: unknown key 'no_such_key'", cfg);
    assert_non_null(strstr(out, want));
    assert_null(strchr(strchr(out, '\n') + 1, '\n')); /* one line */

    write_cfg(cfg, "\n\ntick_ms = fast\n");
    assert_int_equal(RUN("--config", cfg), 2);
    snprintf(want, sizeof want, "%s:3: bad value 'fast' for tick_ms", cfg);
    assert_non_null(strstr(out, want));

    write_cfg(cfg, "max_watermark = 257\n");
    assert_int_equal(RUN("--config", cfg), 2);
    assert_non_null(strstr(out, ":1: bad value '257' for max_watermark"));

    write_cfg(cfg, "just words\n");
    assert_int_equal(RUN("--config", cfg), 2);
    assert_non_null(strstr(out, ":1: expected key = value"));

    assert_int_equal(RUN("--config", missing), 2); /* named, so it must exist */
    assert_non_null(strstr(out, "missing.conf"));

    assert_int_equal(RUN("--tick-ms", "0"), 2);
    assert_non_null(strstr(out, "--tick-ms"));
    assert_int_equal(RUN("--log-level", "loud"), 2);
    assert_int_equal(RUN("--no-such-flag"), 2);
    assert_int_equal(RUN("--config", "/dev/null", "--min-watermark", "9", "--max-watermark", "8"), 2);
    assert_int_equal(access(sock_path, F_OK), -1); /* never got as far as the socket */
    unlink(cfg);
    rmdir(dir);
}

/* A live daemon's socket is not taken over; a socket file left behind by
 * a dead daemon is replaced, and the new one is open to every user. */
static void test_stale_socket_and_second_daemon(void **state)
{
    (void)state;
    struct daemon live;
    daemon_start(&live, FAST);
    assert_int_equal(run_daemon((const char *[]){"--foreground", "--socket", live.sock, "--config", "/dev/null", NULL},
                                out, sizeof out),
                     1);
    assert_non_null(strstr(out, "another daemon"));
    get_status(&live, &st); /* still served by the first */
    daemon_stop(&live);

    struct daemon d;
    daemon_dir(&d);
    int s = socket(AF_UNIX, SOCK_SEQPACKET, 0);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", d.sock);
    assert_int_equal(bind(s, (struct sockaddr *)&sa, sizeof sa), 0);
    close(s); /* stale: bound, nobody listening */
    const char *argv[] = {pagerd_bin, "--foreground", "--socket", d.sock, "--config", "/dev/null", NULL};
    d.pid = spawn_logged((char *const *)argv, d.log);
    daemon_track(&d, true);
    int c = -1;
    assert_true(WAIT_FOR((c = connect_to(d.sock)) >= 0, 3000));
    close(c);
    assert_int_equal(log_count(&d, "removed stale socket"), 1);
    struct stat sb;
    assert_int_equal(stat(d.sock, &sb), 0);
    assert_int_equal(sb.st_mode & 0777, 0666);
    daemon_stop(&d);
}

/* READY=1 once listening, STOPPING=1 on the way out; a path and an
 * abstract-namespace notify socket. */
static void notify_case(bool abstract)
{
    char dir[] = "/tmp/haknfy-XXXXXX", path[96], env[100];
    assert_non_null(mkdtemp(dir));
    int s = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    socklen_t len;
    if (abstract) {
        snprintf(path, sizeof path, "haknfy-%d-%llu", getpid(), (unsigned long long)mono_ms());
        memcpy(sa.sun_path + 1, path, strlen(path));
        len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + strlen(path));
        snprintf(env, sizeof env, "@%s", path);
    } else {
        snprintf(path, sizeof path, "%s/notify", dir);
        snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path);
        len = sizeof sa;
        snprintf(env, sizeof env, "%s", path);
    }
    assert_int_equal(bind(s, (struct sockaddr *)&sa, len), 0);
    setenv("NOTIFY_SOCKET", env, 1);
    struct daemon d;
    daemon_start(&d, FAST);
    unsetenv("NOTIFY_SOCKET");
    char buf[64] = {0};
    ssize_t n = recv_msg(s, buf, sizeof buf - 1, NULL, 3000);
    assert_true(n > 0);
    assert_string_equal(buf, "READY=1");
    daemon_stop(&d);
    memset(buf, 0, sizeof buf);
    n = recv_msg(s, buf, sizeof buf - 1, NULL, 3000);
    assert_true(n > 0);
    assert_string_equal(buf, "STOPPING=1");
    close(s);
    if (!abstract)
        unlink(path);
    rmdir(dir);
}

static void test_notify_ready_stopping(void **state)
{
    (void)state;
    notify_case(false);
    notify_case(true);
}

/* Without --foreground the daemon detaches: the starter exits 0 once the
 * daemon serves, and the daemon lives on in its own session. */
static void test_detached_start(void **state)
{
    (void)state;
    struct daemon d;
    daemon_dir(&d);
    assert_int_equal(run_daemon((const char *[]){"--socket", d.sock, "--config", "/dev/null", FAST, NULL}, out,
                                sizeof out),
                     0);
    get_status(&d, &st);
    pid_t pid = (pid_t)st.d.pid;
    assert_true(pid > 0);
    assert_int_equal(getsid(pid), pid); /* its own session */
    assert_int_equal(kill(pid, SIGTERM), 0);
    assert_true(WAIT_FOR(kill(pid, 0) < 0, 5000));
    assert_int_equal(access(d.sock, F_OK), -1);
    rmdir(d.dir);
}

int main(int argc, char **argv)
{
    pagerd_locate(argc, argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_handshake_file, pagerd_teardown),
        cmocka_unit_test_teardown(test_capacity_clamped, pagerd_teardown),
        cmocka_unit_test_teardown(test_rings_filled_and_prefaulted, pagerd_teardown),
        cmocka_unit_test_teardown(test_pop_write_return_status, pagerd_teardown),
        cmocka_unit_test_teardown(test_pop_return_churn, pagerd_teardown),
        cmocka_unit_test_teardown(test_reclaim_punches_after_delay, pagerd_teardown),
        cmocka_unit_test_teardown(test_warm_reuse_first, pagerd_teardown),
        cmocka_unit_test_teardown(test_hangup_releases, pagerd_teardown),
        cmocka_unit_test_teardown(test_detach_releases, pagerd_teardown),
        cmocka_unit_test_teardown(test_kill9_releases, pagerd_teardown),
        cmocka_unit_test_teardown(test_limit_client, pagerd_teardown),
        cmocka_unit_test_teardown(test_limit_total, pagerd_teardown),
        cmocka_unit_test_teardown(test_clients_isolated, pagerd_teardown),
        cmocka_unit_test_teardown(test_status_without_session, pagerd_teardown),
        cmocka_unit_test_teardown(test_real_topology, pagerd_teardown),
        cmocka_unit_test_teardown(test_config_file_and_reload, pagerd_teardown),
        cmocka_unit_test_teardown(test_config_errors_exit_2, pagerd_teardown),
        cmocka_unit_test_teardown(test_stale_socket_and_second_daemon, pagerd_teardown),
        cmocka_unit_test_teardown(test_notify_ready_stopping, pagerd_teardown),
        cmocka_unit_test_teardown(test_detached_start, pagerd_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
