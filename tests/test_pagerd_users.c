/* The daemon on a shared host: per-uid limits (SuperSlabs, sessions,
 * connections), the status rate limit, and the user it runs as. Clients
 * of other uids are child processes that change user, which needs root;
 * without it those tests say so and check nothing. */
#include <sys/prctl.h>

#include "pagerd_client.h"

#define FAST "--tick-ms", "1", "--fake-nodes", "2"
#define OTHER_UID 65534 /* nobody */

static struct status st;

/* Pop from both rings until held, or until nothing more comes. */
static uint32_t pop_up_to(struct tclient *c, uint32_t want, unsigned ms)
{
    uint32_t held = 0;
    uint64_t end = mono_ms() + ms;
    while (held < want && mono_ms() < end) {
        bool got = false;
        for (uint32_t n = 0; n < c->lay.nnodes && held < want; n++)
            if (tc_pop(c, n)) {
                held++;
                got = true;
            }
        if (!got)
            sleep_ms(1);
    }
    return held;
}

/* The sessions of one uid share limit_uid, however many they open. */
static void test_limit_uid_spans_sessions(void **state)
{
    (void)state;
    struct daemon d;
    daemon_start(&d, FAST, "--limit-uid", "10", "--min-watermark", "2");
    struct tclient a, b;
    assert_true(tc_open(&a, &d, 64));
    assert_true(tc_open(&b, &d, 64));
    uint32_t ha = pop_up_to(&a, 64, 300), hb = pop_up_to(&b, 64, 300);
    /* What is still being pre-faulted reaches the rings a moment later. */
    (void)WAIT_FOR(ha + hb + tc_level(&a, 0) + tc_level(&a, 1) + tc_level(&b, 0) + tc_level(&b, 1) >= 10, 2000);
    sleep_ms(50); /* and no more comes */
    uint32_t waiting = tc_level(&a, 0) + tc_level(&a, 1) + tc_level(&b, 0) + tc_level(&b, 1);
    print_message("limit_uid 10: held %u + %u, waiting %u\n", ha, hb, waiting);
    assert_int_equal(ha + hb + waiting, 10);
    get_status(&d, &st);
    const struct hak_status_user *u = status_user(&st, getuid());
    assert_non_null(u);
    assert_int_equal(u->sessions, 2);
    assert_int_equal(u->charged, 10);
    assert_true(u->limit_hits > 0);
    assert_int_equal(st.d.ss_limit_uid, 10);
    tc_close(&a);
    tc_close(&b);
    daemon_stop(&d);
}

/* ---- another uid, in a child process ---- */

struct other {
    pid_t pid;
    int to, from; /* commands to it, its replies */
};

/* The child becomes OTHER_UID, opens a session, pops up to 64 and reports
 * how many it holds; it keeps them until told to go. */
static void other_start(struct other *o, const struct daemon *d)
{
    int to[2], from[2];
    assert_int_equal(pipe(to), 0);
    assert_int_equal(pipe(from), 0);
    o->pid = fork();
    assert_true(o->pid >= 0);
    if (o->pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        close(to[1]);
        close(from[0]);
        if (setgid(OTHER_UID) < 0 || setuid(OTHER_UID) < 0)
            _exit(2);
        struct tclient c;
        if (!tc_open(&c, d, 64))
            _exit(3);
        uint32_t held = pop_up_to(&c, 64, 500);
        if (write(from[1], &held, sizeof held) != sizeof held)
            _exit(4);
        char go;
        if (read(to[0], &go, 1) < 0)
            _exit(5);
        tc_close(&c);
        _exit(0);
    }
    close(to[0]);
    close(from[1]);
    o->to = to[1];
    o->from = from[0];
}

static uint32_t other_held(struct other *o)
{
    uint32_t held = 0;
    assert_int_equal(read(o->from, &held, sizeof held), (ssize_t)sizeof held);
    return held;
}

static void other_stop(struct other *o)
{
    assert_int_equal(write(o->to, "g", 1), 1);
    int status;
    waitpid(o->pid, &status, 0);
    close(o->to);
    close(o->from);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

/* A uid at its limit does not reduce what another uid is served. */
static void test_uid_at_its_limit_does_not_starve_another(void **state)
{
    (void)state;
    if (geteuid() != 0) {
        print_message("not checked: needs root to run a client as another uid\n");
        return;
    }
    struct daemon d;
    daemon_start(&d, FAST, "--limit-uid", "12", "--limit-total", "24", "--min-watermark", "2");
    struct other o;
    other_start(&o, &d);
    uint32_t theirs = other_held(&o);
    struct tclient mine;
    assert_true(tc_open(&mine, &d, 64));
    uint32_t ours = pop_up_to(&mine, 64, 500);
    get_status(&d, &st);
    const struct hak_status_user *them = status_user(&st, OTHER_UID), *us = status_user(&st, getuid());
    print_message("uid %u held %u (charged %u, limit hits %llu); uid %u held %u (charged %u)\n", OTHER_UID, theirs,
                  them->charged, (unsigned long long)them->limit_hits, (unsigned)getuid(), ours, us->charged);
    assert_true(theirs >= 10 && them->charged == 12 && them->limit_hits > 0);
    assert_true(ours >= 10 && us->charged == 12);
    tc_close(&mine);
    other_stop(&o);
    daemon_stop(&d);
}

/* A hostile uid opens sessions up to its cap: the next is refused, the
 * daemon stays up, and another client is still served. */
static void test_sessions_per_uid_capped(void **state)
{
    (void)state;
    struct daemon d;
    daemon_start(&d, FAST, "--sessions-uid", "4");
    struct tclient c[5];
    for (int i = 0; i < 4; i++)
        assert_true(tc_open(&c[i], &d, 8));
    int s = connect_to(d.sock);
    struct hak_msg_hello h = hello_msg(8);
    send_bytes(s, &h, sizeof h);
    unsigned char buf[512];
    ssize_t n = recv_msg(s, buf, sizeof buf, NULL, 2000);
    assert_int_equal(hak_msg_check(buf, (size_t)n), HAK_MSG_REFUSE);
    struct hak_msg_refuse r;
    memcpy(&r, buf, sizeof r);
    assert_int_equal(r.code, HAK_REFUSE_LIMIT);
    assert_non_null(strstr(r.reason, "sessions_uid"));
    assert_true(reads_eof(s, 2000));
    close(s);
    assert_true(daemon_alive(&d));
    tc_close(&c[0]);
    assert_true(WAIT_FOR((get_status(&d, &st), st.d.nclients == 3), 2000));
    assert_true(tc_open(&c[4], &d, 8)); /* room again */
    assert_true(WAIT_FOR(tc_level(&c[4], 0) >= 1, 2000));
    get_status(&d, &st);
    assert_true(status_user(&st, getuid())->refused >= 1);
    for (int i = 1; i < 5; i++)
        tc_close(&c[i]);
    daemon_stop(&d);
}

/* A session opened and closed again; false if the daemon hung up first
 * (as it does at once on a connection past the uid's cap). */
static bool session_fits(const struct daemon *d)
{
    int s = connect_to(d->sock), fd = -1;
    if (s < 0)
        return false;
    struct hak_msg_hello h = hello_msg(8);
    unsigned char buf[512];
    ssize_t n = -1;
    if (send(s, &h, sizeof h, MSG_NOSIGNAL) == (ssize_t)sizeof h)
        n = recv_msg(s, buf, sizeof buf, &fd, 5000);
    bool ok = n > 0 && hak_msg_check(buf, (size_t)n) == HAK_MSG_WELCOME;
    if (fd >= 0)
        close(fd);
    close(s);
    return ok;
}

/* Connections of one uid past connections_uid are closed at once. */
static void test_connections_per_uid_capped(void **state)
{
    (void)state;
    struct daemon d;
    daemon_start(&d, FAST, "--connections-uid", "6");
    int s[6];
    for (int i = 0; i < 6; i++)
        assert_true((s[i] = connect_to(d.sock)) >= 0);
    /* Accepted by the kernel, then closed by the daemon. */
    int extra = connect_to(d.sock);
    assert_true(extra >= 0);
    assert_true(reads_eof(extra, 2000));
    close(extra);
    assert_true(log_count(&d, "connections (connections_uid)") >= 1);
    assert_false(session_fits(&d));
    close(s[0]);
    /* One closed: one more fits, once the daemon has seen the close (a
     * fixed wait failed on a loaded machine). */
    assert_true(WAIT_FOR(session_fits(&d), 2000));
    for (int i = 1; i < 6; i++)
        close(s[i]);
    daemon_stop(&d);
}

/* Status requests past status_per_sec are refused (with the reason) and
 * the connection closed; the uid's own bucket refuses new connections
 * too, until it refills. */
static void test_status_rate_limited(void **state)
{
    (void)state;
    struct daemon d;
    daemon_start(&d, FAST, "--status-per-sec", "5");
    int s = connect_to(d.sock);
    struct hak_msg_hdr h;
    hak_msg_init(&h, HAK_MSG_STATUS_REQ, sizeof h);
    static unsigned char buf[HAK_STATUS_MAX_BYTES];
    int answered = 0, refused = 0;
    for (int i = 0; i < 20 && !refused; i++) {
        send_bytes(s, &h, sizeof h);
        ssize_t n = recv_msg(s, buf, sizeof buf, NULL, 2000);
        assert_true(n > 0);
        unsigned type = hak_msg_check(buf, (size_t)n);
        answered += type == HAK_MSG_STATUS;
        refused += type == HAK_MSG_REFUSE;
    }
    assert_true(answered >= 5 && answered <= 6);
    assert_int_equal(refused, 1);
    assert_true(reads_eof(s, 2000));
    close(s);
    /* A new connection of the same uid: its bucket is empty as well. */
    s = connect_to(d.sock);
    send_bytes(s, &h, sizeof h);
    ssize_t n = recv_msg(s, buf, sizeof buf, NULL, 2000);
    assert_int_equal(hak_msg_check(buf, (size_t)n), HAK_MSG_REFUSE);
    close(s);
    sleep_ms(300); /* 5 a second: one more by now */
    get_status(&d, &st);
    assert_true(status_user(&st, getuid())->refused >= 2);
    daemon_stop(&d);
}

/* A flood of status requests from one uid: the daemon stays up and keeps
 * a busy client of another uid served. */
static void test_status_flood_does_not_stop_service(void **state)
{
    (void)state;
    if (geteuid() != 0) {
        print_message("not checked: needs root to flood as another uid\n");
        return;
    }
    struct daemon d;
    daemon_start(&d, FAST, "--status-per-sec", "20");
    pid_t flooder = fork();
    assert_true(flooder >= 0);
    if (flooder == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (setgid(OTHER_UID) < 0 || setuid(OTHER_UID) < 0)
            _exit(2);
        struct hak_msg_hdr h;
        hak_msg_init(&h, HAK_MSG_STATUS_REQ, sizeof h);
        for (;;) {
            int s = connect_to(d.sock);
            if (s < 0)
                continue;
            for (int i = 0; i < 100 && send(s, &h, sizeof h, MSG_NOSIGNAL) == (ssize_t)sizeof h; i++)
                ;
            close(s);
        }
    }
    struct tclient c;
    assert_true(tc_open(&c, &d, 1024));
    uint32_t served = 0;
    for (int round = 0; round < 50; round++)
        served += pop_up_to(&c, 4, 2000);
    kill(flooder, SIGKILL);
    waitpid(flooder, NULL, 0);
    get_status(&d, &st);
    const struct hak_status_user *f = status_user(&st, OTHER_UID);
    print_message("served %u SuperSlabs during the flood; the flooding uid was refused %llu times\n", served,
                  f ? (unsigned long long)f->refused : 0ull);
    assert_int_equal(served, 200);
    assert_true(daemon_alive(&d));
    tc_close(&c);
    daemon_stop(&d);
}

/* ---- the user the daemon runs as ---- */

static bool proc_field(pid_t pid, const char *name, char *out, size_t len)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return false;
    bool found = false;
    while (!found && fgets(line, sizeof line, f))
        if (strncmp(line, name, strlen(name)) == 0) {
            snprintf(out, len, "%s", line + strlen(name));
            found = true;
        }
    fclose(f);
    return found;
}

/* Started as root it serves as nobody with CAP_DAC_OVERRIDE alone (bit
 * 1); --user root keeps root; an unknown user is an error at start. */
static void test_runs_as_an_unprivileged_user(void **state)
{
    (void)state;
    if (geteuid() != 0) {
        print_message("not checked: the daemon is not started as root\n");
        return;
    }
    struct daemon d;
    daemon_start(&d, FAST);
    /* Its socket answers from before the change of user. */
    assert_true(WAIT_FOR(log_count(&d, "running as nobody") == 1, 2000));
    char uid[128], cap[128];
    assert_true(proc_field(d.pid, "Uid:", uid, sizeof uid));
    assert_true(proc_field(d.pid, "CapEff:", cap, sizeof cap));
    print_message("default: Uid:%s CapEff:%s", uid, cap);
    assert_int_equal(atoi(uid), OTHER_UID);
    assert_non_null(strstr(cap, "0000000000000002"));
    struct tclient c;
    assert_true(tc_open(&c, &d, 8)); /* and it serves */
    assert_true(WAIT_FOR(tc_level(&c, 0) >= 1, 2000));
    tc_close(&c);
    daemon_stop(&d);

    daemon_start(&d, FAST, "--user", "root");
    assert_true(proc_field(d.pid, "Uid:", uid, sizeof uid));
    assert_int_equal(atoi(uid), 0);
    daemon_stop(&d);

    char sock[] = "/tmp/hakpd-nouser.sock";
    const char *argv[] = {pagerd_bin, "--foreground", "--socket", sock, "--config", "/dev/null",
                          "--user", "no-such-user-hak", NULL};
    pid_t pid = spawn_logged((char *const *)argv, "/dev/null");
    int status;
    waitpid(pid, &status, 0);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 1);
    unlink(sock);
}

int main(int argc, char **argv)
{
    pagerd_locate(argc, argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_limit_uid_spans_sessions, pagerd_teardown),
        cmocka_unit_test_teardown(test_uid_at_its_limit_does_not_starve_another, pagerd_teardown),
        cmocka_unit_test_teardown(test_sessions_per_uid_capped, pagerd_teardown),
        cmocka_unit_test_teardown(test_connections_per_uid_capped, pagerd_teardown),
        cmocka_unit_test_teardown(test_status_rate_limited, pagerd_teardown),
        cmocka_unit_test_teardown(test_status_flood_does_not_stop_service, pagerd_teardown),
        cmocka_unit_test_teardown(test_runs_as_an_unprivileged_user, pagerd_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
