/* hakmem-pagerd against hostile clients: garbage, truncated and oversized
 * datagrams, wrong magic and version, absurd capacities, protocol misuse,
 * lying return rings (out of range, misaligned, never handed out, not
 * popped, returned twice) and corrupted ring indices. Every time the
 * daemon must stay up, keep accepting, log the drop with its reason, hang
 * up on the attacker, and keep serving a well-behaved client that runs
 * alongside. */
#include "pagerd_client.h"

struct fixture {
    struct daemon d;
    struct tclient good;
};

static struct fixture fx;
static struct status st;

/* The well-behaved client draws a SuperSlab the daemon pushed after the
 * attack (its ring is emptied first), uses it and gives it back. */
static void good_is_served(void)
{
    struct tclient *g = &fx.good;
    for (uint32_t node = 0; node < g->lay.nnodes; node++) {
        uint64_t off, drained[HAK_SHM_FILL_SLOTS];
        unsigned n = 0;
        while (n < HAK_SHM_FILL_SLOTS && (off = tc_pop(g, node)) != 0)
            drained[n++] = off;
        if (!WAIT_FOR((off = tc_pop(g, node)) != 0, 2000))
            fail_msg("good client not served on node %u:\n%s", node, read_file_text(fx.d.log));
        memset(g->base + off, 0x3C, 4096);
        tc_return(g, off);
        for (unsigned i = 0; i < n; i++)
            tc_return(g, drained[i]);
    }
}

static void start(void)
{
    /* A bounded watermark, so that rings never take the whole file. */
    daemon_start(&fx.d, "--tick-ms", "2", "--fake-nodes", "2", "--reclaim-delay-ms", "50", "--max-watermark", "8");
    assert_true(tc_open(&fx.good, &fx.d, 256));
    good_is_served();
}

static void stop(void)
{
    good_is_served();
    /* Everything it popped came back and was accepted. */
    assert_true(WAIT_FOR((get_status(&fx.d, &st), status_client(&st, fx.good.session)->held == 0), 2000));
    assert_int_equal(st.d.nclients, 1);
    tc_close(&fx.good);
    daemon_stop(&fx.d);
}

static char reason_text[160];

static const char *reason(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static const char *reason(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(reason_text, sizeof reason_text, fmt, ap);
    va_end(ap);
    return reason_text;
}

/* The last line of the log that holds needle is a drop of one of ours. */
static bool drop_logged(const char *needle)
{
    const char *text = read_file_text(fx.d.log), *hit = NULL;
    for (const char *p = text; (p = strstr(p, needle)); p++)
        hit = p;
    if (!hit)
        return false;
    const char *line = hit;
    while (line > text && line[-1] != '\n')
        line--;
    char want[48];
    snprintf(want, sizeof want, "dropped pid=%d session=", getpid());
    const char *at = strstr(line, want);
    return at && at < hit;
}

/* After an attack on sock: hung up on, logged with why, daemon alive and
 * accepting, only the good client left, and it is served. */
static void survived(int sock, const char *why, int before)
{
    assert_true(reads_eof(sock, 2000));
    close(sock);
    assert_true(daemon_alive(&fx.d));
    if (!WAIT_FOR(log_count(&fx.d, why) > before, 2000) || !drop_logged(why))
        fail_msg("no drop for '%s' in the log:\n%s", why, read_file_text(fx.d.log));
    assert_true(WAIT_FOR((get_status(&fx.d, &st), st.d.nclients == 1), 2000));
    good_is_served();
}

/* One datagram on a fresh connection. */
static void attack_bytes(const void *buf, size_t n, const char *why)
{
    char w[160];
    snprintf(w, sizeof w, "%s", why);
    int before = log_count(&fx.d, w);
    int s = connect_to(fx.d.sock);
    assert_true(s >= 0);
    send_bytes(s, buf, n);
    survived(s, w, before);
}

/* A session of its own, to misbehave in. */
static void bad_open(struct tclient *b)
{
    assert_true(tc_open(b, &fx.d, 64));
    assert_true(WAIT_FOR(tc_level(b, 0) >= 2 && tc_level(b, 1) >= 2, 2000));
}

static void bad_survived(struct tclient *b, const char *why, int before)
{
    int sock = b->sock;
    b->sock = -1;
    survived(sock, why, before);
    tc_close(b);
}

/* Waits until the daemon has counted n pops of session b. */
static void wait_served(struct tclient *b, uint64_t n)
{
    assert_true(WAIT_FOR((get_status(&fx.d, &st), status_client(&st, b->session) &&
                                                       status_client(&st, b->session)->served >= n),
                         2000));
}

/* ---- messages ---- */

static void test_garbage(void **state)
{
    (void)state;
    start();
    struct rng r = {0x5eed};
    unsigned char buf[255];
    for (int i = 0; i < 20; i++) {
        size_t n = rng_range(&r, 1, sizeof buf);
        for (size_t j = 0; j < n; j++)
            buf[j] = (unsigned char)rng_next(&r);
        attack_bytes(buf, n, reason("session=0 reason=bad message"));
    }
    attack_bytes("hello, world", 12, reason("reason=bad message (12 bytes)"));
    /* An empty datagram reads as a hang-up: the connection ends, nothing else. */
    int s = connect_to(fx.d.sock);
    send_bytes(s, "", 0);
    assert_true(reads_eof(s, 2000));
    close(s);
    assert_true(daemon_alive(&fx.d));
    stop();
}

static void test_truncated_and_oversized(void **state)
{
    (void)state;
    start();
    static unsigned char big[65536];
    struct hak_msg_hello h = hello_msg(64);
    const char *bad = reason("reason=bad message");
    char why[160];
    snprintf(why, sizeof why, "%s", bad);

    attack_bytes(&h, sizeof h - 1, why); /* truncated, len says full */
    h.hdr.len = sizeof h - 1;
    attack_bytes(&h, sizeof h - 1, why); /* truncated, len agrees */
    attack_bytes(&h, 3, why);            /* not even a header */
    h.hdr.len = sizeof h.hdr;
    attack_bytes(&h, sizeof h.hdr, why); /* a hello that is only a header */

    h = hello_msg(64);
    memcpy(big, &h, sizeof h);
    attack_bytes(big, sizeof h + 8, why); /* trailing bytes, len says less */
    h.hdr.len = sizeof h + 8;
    memcpy(big, &h, sizeof h);
    attack_bytes(big, sizeof h + 8, why); /* trailing bytes, len agrees */
    h.hdr.len = sizeof big;
    memcpy(big, &h, sizeof h);
    attack_bytes(big, sizeof big, why); /* 64 KiB */
    stop();
}

static void test_wrong_magic_and_version(void **state)
{
    (void)state;
    start();
    char why[160];
    snprintf(why, sizeof why, "%s", reason("reason=bad message"));
    struct hak_msg_hello h = hello_msg(64);
    h.hdr.magic ^= 1;
    attack_bytes(&h, sizeof h, why);
    h = hello_msg(64);
    h.hdr.flags = 1;
    attack_bytes(&h, sizeof h, why);

    struct hak_msg_hdr hd;
    hak_msg_init(&hd, HAK_MSG_STATUS_REQ, sizeof hd);
    hd.version = 7;
    attack_bytes(&hd, sizeof hd, why);

    /* A hello of another version is answered, then dropped. */
    h = hello_msg(64);
    h.hdr.version = HAK_SHM_VERSION + 1;
    int before = log_count(&fx.d, "refused: protocol version");
    int s = connect_to(fx.d.sock);
    send_bytes(s, &h, sizeof h);
    unsigned char buf[512];
    ssize_t n = recv_msg(s, buf, sizeof buf, NULL, 2000);
    assert_int_equal(hak_msg_check(buf, (size_t)n), HAK_MSG_REFUSE);
    struct hak_msg_refuse rf;
    memcpy(&rf, buf, sizeof rf);
    assert_int_equal(rf.code, HAK_REFUSE_VERSION);
    assert_non_null(memchr(rf.reason, 0, sizeof rf.reason));
    survived(s, "refused: protocol version", before);

    h = hello_msg(64);
    h.reserved = 1;
    attack_bytes(&h, sizeof h, reason("session=0 reason=refused: reserved hello fields not zero"));
    stop();
}

static void test_absurd_capacities(void **state)
{
    (void)state;
    start();
    const uint32_t caps[] = {0, HAK_SHM_MAX_CAPACITY + 1, UINT32_MAX};
    for (int i = 0; i < 3; i++) {
        char why[160];
        snprintf(why, sizeof why, "%s", reason("reason=refused: capacity %u out of range", caps[i]));
        int before = log_count(&fx.d, why);
        int s = connect_to(fx.d.sock);
        struct hak_msg_hello h = hello_msg(caps[i]);
        send_bytes(s, &h, sizeof h);
        unsigned char buf[512];
        int fd = -1;
        ssize_t n = recv_msg(s, buf, sizeof buf, &fd, 2000);
        assert_int_equal(fd, -1);
        assert_int_equal(hak_msg_check(buf, (size_t)n), HAK_MSG_REFUSE);
        struct hak_msg_refuse rf;
        memcpy(&rf, buf, sizeof rf);
        assert_int_equal(rf.code, HAK_REFUSE_BAD);
        survived(s, why, before);
    }
    stop();
}

static void test_protocol_misuse(void **state)
{
    (void)state;
    start();
    struct tclient b;
    char why[160];

    bad_open(&b);
    snprintf(why, sizeof why, "%s",
             reason("session=%llu reason=hello within a session", (unsigned long long)b.session));
    int before = log_count(&fx.d, why);
    struct hak_msg_hello h = hello_msg(64);
    send_bytes(b.sock, &h, sizeof h);
    bad_survived(&b, why, before);

    struct hak_msg_hdr hd;
    hak_msg_init(&hd, HAK_MSG_DETACH, sizeof hd);
    attack_bytes(&hd, sizeof hd, reason("reason=detach without a session"));

    /* Messages only the daemon sends. */
    struct hak_msg_welcome w;
    memset(&w, 0, sizeof w);
    hak_msg_init(&w.hdr, HAK_MSG_WELCOME, sizeof w);
    attack_bytes(&w, sizeof w, reason("reason=unexpected message type 2"));
    struct hak_msg_refuse rf;
    memset(&rf, 0, sizeof rf);
    hak_msg_init(&rf.hdr, HAK_MSG_REFUSE, sizeof rf);
    attack_bytes(&rf, sizeof rf, reason("reason=unexpected message type 3"));
    struct hak_msg_status sm;
    memset(&sm, 0, sizeof sm);
    hak_msg_init(&sm.hdr, HAK_MSG_STATUS, sizeof sm);
    attack_bytes(&sm, sizeof sm, reason("reason=unexpected message type 6"));
    hak_msg_init(&hd, (enum hak_msg_type)99, sizeof hd);
    attack_bytes(&hd, sizeof hd, reason("reason=bad message"));
    stop();
}

/* Single bytes of a valid hello flipped at random: each attempt ends in a
 * welcome (the flip was harmless) or a drop, never in a crash. */
static void test_mutated_hellos(void **state)
{
    (void)state;
    start();
    struct rng r = {42};
    for (int i = 0; i < 60; i++) {
        struct hak_msg_hello h = hello_msg(32);
        unsigned char *p = (unsigned char *)&h;
        for (int k = 0; k < 2; k++)
            p[rng_range(&r, 0, sizeof h - 1)] ^= (unsigned char)(1u << rng_range(&r, 0, 7));
        int s = connect_to(fx.d.sock);
        assert_true(s >= 0);
        send_bytes(s, &h, sizeof h);
        unsigned char buf[512];
        int fd = -1;
        ssize_t n = recv_msg(s, buf, sizeof buf, &fd, 2000);
        if (n > 0 && hak_msg_check(buf, (size_t)n) == HAK_MSG_WELCOME) {
            assert_true(fd >= 0);
            close(fd);
        } else {
            assert_true(reads_eof(s, 2000));
        }
        close(s);
    }
    assert_true(daemon_alive(&fx.d));
    assert_true(WAIT_FOR((get_status(&fx.d, &st), st.d.nclients == 1), 2000));
    stop();
}

/* ---- the return ring ---- */

static void return_once(uint64_t (*pick)(struct tclient *), const char *fmt)
{
    struct tclient b;
    bad_open(&b);
    uint64_t off = pick(&b);
    char why[160];
    snprintf(why, sizeof why, "%s", reason(fmt, (unsigned long long)off));
    int before = log_count(&fx.d, why);
    tc_return(&b, off);
    bad_survived(&b, why, before);
}

static uint64_t pick_zero(struct tclient *b) { (void)b; return 0; }
static uint64_t pick_below(struct tclient *b) { return b->lay.ss_offset - 4096; }
static uint64_t pick_end(struct tclient *b) { return b->lay.file_size; }
static uint64_t pick_past(struct tclient *b) { return b->lay.file_size + HAK_SHM_SS_SIZE; }
static uint64_t pick_max(struct tclient *b) { (void)b; return UINT64_MAX; }
static uint64_t pick_misaligned(struct tclient *b) { return tc_pop(b, 0) + 4096; }
static uint64_t pick_odd(struct tclient *b) { return tc_pop(b, 1) + 2; } /* bit 0: HAK_SHM_RETURN_NOW */
static uint64_t pick_never(struct tclient *b) { return b->lay.file_size - HAK_SHM_SS_SIZE; }

/* In the ring, read at head but not popped. */
static uint64_t pick_unpopped(struct tclient *b)
{
    struct hak_shm_fill_ring *r = tc_fill(b, 0);
    uint32_t head = atomic_load(&r->head.v);
    return atomic_load(&r->slot[head & (HAK_SHM_FILL_SLOTS - 1)]);
}

static void test_return_out_of_range(void **state)
{
    (void)state;
    start();
    return_once(pick_zero, "reason=returned offset %#llx out of range");
    return_once(pick_below, "reason=returned offset %#llx out of range");
    return_once(pick_end, "reason=returned offset %#llx out of range");
    return_once(pick_past, "reason=returned offset %#llx out of range");
    return_once(pick_max, "reason=returned offset %#llx out of range");
    stop();
}

static void test_return_misaligned(void **state)
{
    (void)state;
    start();
    return_once(pick_misaligned, "reason=returned offset %#llx misaligned");
    return_once(pick_odd, "reason=returned offset %#llx misaligned");
    stop();
}

static void test_return_foreign(void **state)
{
    (void)state;
    start();
    return_once(pick_never, "reason=returned offset %#llx not its own (never handed out)");
    return_once(pick_unpopped, "reason=returned offset %#llx not its own (in a fill ring)");

    /* The good client's offset is nobody else's: another session returning
     * the same number is returning something it never popped. */
    struct tclient b;
    bad_open(&b);
    uint64_t mine = tc_pop(&b, 0);
    assert_true(mine != 0);
    wait_served(&b, 1);
    tc_return(&b, mine);
    assert_true(WAIT_FOR((get_status(&fx.d, &st), status_client(&st, b.session)->returned == 1), 2000));
    char why[160];
    snprintf(why, sizeof why, "%s", reason("reason=returned offset %#llx not its own", (unsigned long long)mine));
    int before = log_count(&fx.d, why);
    tc_return(&b, mine); /* twice */
    bad_survived(&b, why, before);
    stop();
}

/* ---- ring indices ---- */

static void fill_index_attack(uint32_t node, bool tail, uint32_t (*f)(uint32_t), const char *what)
{
    struct tclient b;
    bad_open(&b);
    struct hak_shm_fill_ring *r = tc_fill(&b, node);
    char why[160];
    snprintf(why, sizeof why, "%s", reason("reason=fill ring %u: %s", node, what));
    int before = log_count(&fx.d, why);
    _Atomic uint32_t *ix = tail ? &r->tail.v : &r->head.v;
    atomic_store(ix, f(atomic_load(ix)));
    bad_survived(&b, why, before);
}

static uint32_t beyond_tail(uint32_t head) { return head + 5 + HAK_SHM_FILL_SLOTS; }
static uint32_t huge(uint32_t v) { (void)v; return 0x80000000u; }
static uint32_t plus_one(uint32_t v) { return v + 1; }
static uint32_t minus_one(uint32_t v) { return v - 1; }

static void test_fill_ring_indices(void **state)
{
    (void)state;
    start();
    fill_index_attack(0, false, beyond_tail, "indices corrupt");
    fill_index_attack(1, false, huge, "indices corrupt");
    fill_index_attack(1, true, plus_one, "tail overwritten");
    fill_index_attack(0, true, huge, "tail overwritten");

    /* Head moved backwards over SuperSlabs the daemon saw popped. */
    struct tclient b;
    bad_open(&b);
    assert_true(tc_pop(&b, 0) != 0);
    wait_served(&b, 1);
    char why[160];
    snprintf(why, sizeof why, "%s", reason("reason=fill ring 0: head moved backwards"));
    int before = log_count(&fx.d, why);
    struct hak_shm_fill_ring *r = tc_fill(&b, 0);
    uint32_t head = atomic_load(&r->head.v);
    atomic_store(&r->head.v, minus_one(head));
    bad_survived(&b, why, before);
    stop();
}

static void test_return_ring_indices(void **state)
{
    (void)state;
    start();
    struct tclient b;
    char why[160];

    bad_open(&b);
    snprintf(why, sizeof why, "%s", reason("reason=return ring: indices corrupt"));
    int before = log_count(&fx.d, why);
    struct hak_shm_return_ring *r = tc_ret(&b);
    atomic_store(&r->tail.v, atomic_load(&r->head.v) + HAK_SHM_RETURN_SLOTS + 5);
    bad_survived(&b, why, before);

    bad_open(&b);
    before = log_count(&fx.d, why);
    r = tc_ret(&b);
    atomic_store(&r->tail.v, atomic_load(&r->head.v) - 1); /* tail behind head */
    bad_survived(&b, why, before);

    bad_open(&b);
    snprintf(why, sizeof why, "%s", reason("reason=return ring: head overwritten"));
    before = log_count(&fx.d, why);
    r = tc_ret(&b);
    atomic_store(&r->head.v, 3);
    bad_survived(&b, why, before);
    stop();
}

/* The whole control area overwritten with noise. */
static void test_scribbled_control_area(void **state)
{
    (void)state;
    start();
    struct rng rg = {7};
    for (int i = 0; i < 5; i++) {
        struct tclient b;
        bad_open(&b);
        char why[160];
        snprintf(why, sizeof why, "%s", reason("session=%llu reason=", (unsigned long long)b.session));
        int before = log_count(&fx.d, why);
        uint64_t *w = (uint64_t *)b.base;
        for (size_t j = 0; j < b.lay.ctrl_size / 8; j++)
            w[j] = rng_next(&rg);
        bad_survived(&b, why, before);
    }
    stop();
}

int main(int argc, char **argv)
{
    pagerd_locate(argc, argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_garbage, pagerd_teardown),
        cmocka_unit_test_teardown(test_truncated_and_oversized, pagerd_teardown),
        cmocka_unit_test_teardown(test_wrong_magic_and_version, pagerd_teardown),
        cmocka_unit_test_teardown(test_absurd_capacities, pagerd_teardown),
        cmocka_unit_test_teardown(test_protocol_misuse, pagerd_teardown),
        cmocka_unit_test_teardown(test_mutated_hellos, pagerd_teardown),
        cmocka_unit_test_teardown(test_return_out_of_range, pagerd_teardown),
        cmocka_unit_test_teardown(test_return_misaligned, pagerd_teardown),
        cmocka_unit_test_teardown(test_return_foreign, pagerd_teardown),
        cmocka_unit_test_teardown(test_fill_ring_indices, pagerd_teardown),
        cmocka_unit_test_teardown(test_return_ring_indices, pagerd_teardown),
        cmocka_unit_test_teardown(test_scribbled_control_area, pagerd_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
