/* Fault injection through the client's OS layer: mmap, mprotect, madvise
 * and the socket calls fail at chosen points. Allocation then returns NULL
 * with ENOMEM or falls back to in-process provisioning; nothing crashes,
 * nothing leaks, and once the failures stop everything works again. A
 * daemon that refuses, answers garbage, dies mid-handshake or never answers
 * leaves the client working. (The memfd is created and fallocated by the
 * daemon, not the client; the client's side of those steps is mapping the
 * file and punching pages, injected here as mmap and madvise.) */
#include <pthread.h>
#include <sys/socket.h>
#include <sys/un.h>

#include "internal.h"
#include "hakmem.h"
#include "pagerd_client.h"

static char self_path[512];

/* A size class no other test here uses, so each allocation round needs a
 * fresh slab (and, beyond the first SuperSlab, a fresh SuperSlab). */
static void *fill(size_t size, unsigned n, void **out)
{
    for (unsigned i = 0; i < n; i++) {
        out[i] = hak_malloc(size);
        if (!out[i])
            return NULL;
        memset(out[i], 0x5a, size);
    }
    return out[n - 1];
}

static void test_commit_failure_returns_enomem(void **state)
{
    (void)state;
    static void *blocks[2048];
    /* The embedded provider can neither commit nor map: a class that needs a
     * new SuperSlab gets NULL and ENOMEM, and nothing else breaks. */
    hak_os_inject(HAK_OS_MPROTECT, 0, UINT32_MAX);
    hak_os_inject(HAK_OS_MMAP, 0, UINT32_MAX);
    unsigned got = 0;
    errno = 0;
    for (; got < 2048; got++) {
        blocks[got] = hak_malloc(200000); /* 16 units a slab: soon a new SuperSlab */
        if (!blocks[got])
            break;
    }
    assert_true(got < 2048);
    assert_int_equal(errno, ENOMEM);
    errno = 0;
    assert_null(hak_malloc(3 << 20)); /* a large block needs mmap */
    assert_int_equal(errno, ENOMEM);
    /* Small sizes with cached blocks still work meanwhile. */
    void *small = hak_malloc(16);
    assert_non_null(small);
    hak_free(small);
    hak_os_inject(HAK_OS_MPROTECT, 0, 0);
    hak_os_inject(HAK_OS_MMAP, 0, 0);
    for (unsigned i = 0; i < got; i++)
        hak_free(blocks[i]);
    /* Failures over: the same requests succeed. */
    assert_non_null(fill(200000, 64, blocks));
    for (unsigned i = 0; i < 64; i++)
        hak_free(blocks[i]);
    void *big = hak_malloc(3 << 20);
    assert_non_null(big);
    hak_free(big);
}

static void test_every_nth_mapping_fails(void **state)
{
    (void)state;
    /* Sporadic failures under a mixed load: every result is NULL or a
     * usable block, never a crash. */
    static void *blocks[4096];
    struct rng r = {99};
    unsigned nulls = 0;
    for (int round = 0; round < 20; round++) {
        hak_os_inject(HAK_OS_MPROTECT, 1, 1);
        hak_os_inject(HAK_OS_MMAP, 2, 1);
        hak_os_inject(HAK_OS_MADVISE, 0, 3);
        for (int i = 0; i < 4096; i++) {
            size_t size = (rng_next(&r) & 1) ? rng_range(&r, 1, 300000) : rng_range(&r, 300001, 3u << 20);
            blocks[i] = hak_malloc(size);
            if (blocks[i])
                memset(blocks[i], 1, size < 64 ? size : 64);
            else
                nulls++;
        }
        for (int i = 0; i < 4096; i++)
            hak_free(blocks[i]);
        hak_trim(0); /* madvise failures: memory stays, nothing breaks */
    }
    hak_os_inject(HAK_OS_MPROTECT, 0, 0);
    hak_os_inject(HAK_OS_MMAP, 0, 0);
    hak_os_inject(HAK_OS_MADVISE, 0, 0);
    print_message("sporadic failures: %u of %u allocations returned NULL\n", nulls, 20 * 4096);
    void *p = hak_malloc(123456);
    assert_non_null(p);
    hak_free(p);
}

/* ---- the daemon side: failures during the handshake ---- */

/* In a client process (this program run again with --child): allocate
 * enough to need SuperSlabs while the given call fails after skip
 * successes; print how many SuperSlabs came from the daemon; exit 0 if
 * every allocation worked. */
static int child_handshake_failure(enum hak_os_call call, uint32_t skip, bool want_daemon)
{
    static void *blocks[2048];
    /* Started with the daemon off: start-up and the first SuperSlabs are
     * behind us; the daemon's turn comes at the next SuperSlab need, so the
     * n-th call counted from here is the n-th call of the handshake. */
    hak_free(hak_malloc(1));
    hak_opt.pagerd = HAK_PAGERD_ON;
    hak_os_inject(call, skip, UINT32_MAX);
    /* A working daemon fills the rings only after the connect; a client
     * that outruns it provisions in-process meanwhile. So rounds go on,
     * trimmed in between, until the daemon served one (or 5 s passed). */
    uint64_t end = mono_ms() + 5000;
    do {
        for (int i = 0; i < 2048; i++)
            if (!(blocks[i] = hak_malloc(64 * 1024)))
                return 1;
        for (int i = 0; i < 2048; i++)
            hak_free(blocks[i]);
        hak_trim(0);
        struct hak_provision_stats now;
        hak_provision_stats(&now);
        if (!want_daemon || now.acquired[HAK_PROV_PAGERD])
            break;
        sleep_ms(10);
    } while (mono_ms() < end);
    struct hak_provision_stats ps;
    hak_provision_stats(&ps);
    printf("from_daemon=%llu embedded=%llu\n", (unsigned long long)ps.acquired[HAK_PROV_PAGERD],
           (unsigned long long)ps.acquired[HAK_PROV_EMBEDDED]);
    return 0;
}

/* Against a lying daemon: blocks in the SuperSlabs it handed out must keep
 * their contents whatever it puts in its rings later. */
static int child_verify(void)
{
    static unsigned char *blocks[64];
    hak_free(hak_malloc(1));
    hak_opt.pagerd = HAK_PAGERD_ON;
    for (int i = 0; i < 8; i++) { /* 256 KiB: four per SuperSlab */
        blocks[i] = hak_malloc(256 * 1024);
        if (!blocks[i])
            return 1;
        pattern_fill(blocks[i], 256 * 1024);
    }
    sleep_ms(50); /* the daemon lists the same SuperSlabs again */
    for (int i = 8; i < 64; i++) /* more SuperSlabs needed: pops */
        if (!(blocks[i] = hak_malloc(256 * 1024)))
            return 1;
    for (int i = 0; i < 8; i++)
        if (!pattern_check(blocks[i], 256 * 1024)) {
            printf("block %d lost its contents\n", i);
            return 2;
        }
    struct hak_provision_stats ps;
    hak_provision_stats(&ps);
    printf("contents intact, from_daemon=%llu\n", (unsigned long long)ps.acquired[HAK_PROV_PAGERD]);
    return 0;
}

static int run_child(const char *sock, const char *call, const char *skip, char *out, size_t cap)
{
    int p[2];
    assert_int_equal(pipe(p), 0);
    pid_t pid = fork();
    if (pid == 0) {
        dup2(p[1], 1);
        dup2(p[1], 2);
        close(p[0]);
        setenv("HAKMEM_PAGERD", "off", 1);
        setenv("HAKMEM_PAGERD_SOCKET", sock, 1);
        setenv("HAKMEM_PAGERD_CAPACITY_MB", "1024", 1);
        execl(self_path, self_path, "--child", call, skip, (char *)NULL);
        _exit(127);
    }
    close(p[1]);
    size_t got = 0;
    ssize_t n;
    while (got + 1 < cap && (n = read(p[0], out + got, cap - 1 - got)) > 0)
        got += (size_t)n;
    out[got] = 0;
    close(p[0]);
    int status;
    waitpid(pid, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

static void test_handshake_failures_fall_back(void **state)
{
    (void)state;
    struct daemon d;
    daemon_start(&d, "--tick-ms", "1");
    char out[1024];
    /* socket calls: connect (0), send the hello (1), receive the welcome
     * (2); mmap: the control area (0), the SuperSlab area (1). */
    const char *cases[][3] = {{"socket", "0", "cannot connect"},
                              {"socket", "1", "cannot send the hello"},
                              {"socket", "2", "bad or missing reply"},
                              {"mmap", "0", "cannot map the daemon's file"},
                              {"mmap", "1", "cannot map the daemon's file"}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int rc = run_child(d.sock, cases[i][0], cases[i][1], out, sizeof out);
        print_message("%s failing after %s: exit %d, %s", cases[i][0], cases[i][1], rc, out);
        assert_int_equal(rc, 0);
        assert_non_null(strstr(out, cases[i][2]));
        assert_non_null(strstr(out, "from_daemon=0 "));
    }
    /* And without failures, the same client gets its memory from the daemon. */
    assert_int_equal(run_child(d.sock, "none", "0", out, sizeof out), 0);
    assert_null(strstr(out, "from_daemon=0 "));
    daemon_stop(&d);
}

/* A fake daemon: accepts one connection at a time and misbehaves. */
enum fake_kind { FAKE_CLOSE, FAKE_REFUSE, FAKE_NO_FD, FAKE_BAD_LAYOUT, FAKE_SILENT, FAKE_GARBAGE };
static const char *fake_names[] = {"closes at once", "refuses", "sends a welcome without a file",
                                   "sends a layout that does not check out", "never answers", "answers garbage"};

struct fake {
    int listen_fd;
    enum fake_kind kind;
};

static void *fake_daemon(void *arg)
{
    struct fake *f = arg;
    for (;;) {
        int c = accept(f->listen_fd, NULL, NULL);
        if (c < 0)
            return NULL;
        char buf[256];
        if (recv(c, buf, sizeof buf, 0) <= 0) {
            close(c);
            continue;
        }
        if (f->kind == FAKE_REFUSE) {
            struct hak_msg_refuse r;
            memset(&r, 0, sizeof r);
            hak_msg_init(&r.hdr, HAK_MSG_REFUSE, sizeof r);
            r.code = HAK_REFUSE_LIMIT;
            strcpy(r.reason, "test says no");
            send(c, &r, sizeof r, 0);
        } else if (f->kind == FAKE_NO_FD || f->kind == FAKE_BAD_LAYOUT) {
            struct hak_msg_welcome w;
            memset(&w, 0, sizeof w);
            hak_msg_init(&w.hdr, HAK_MSG_WELCOME, sizeof w);
            hak_shm_layout_compute(1, 16, &w.layout);
            int fd = -1;
            if (f->kind == FAKE_BAD_LAYOUT) {
                w.layout.ss_offset += 4096; /* not what the contract computes */
                fd = memfd_create("fake", MFD_CLOEXEC);
                if (ftruncate(fd, (off_t)w.layout.file_size) != 0)
                    fd = -1;
            }
            char cbuf[CMSG_SPACE(sizeof(int))];
            struct iovec iov = {&w, sizeof w};
            struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1};
            if (fd >= 0) {
                mh.msg_control = cbuf;
                mh.msg_controllen = sizeof cbuf;
                struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
                cm->cmsg_level = SOL_SOCKET;
                cm->cmsg_type = SCM_RIGHTS;
                cm->cmsg_len = CMSG_LEN(sizeof(int));
                memcpy(CMSG_DATA(cm), &fd, sizeof fd);
            }
            sendmsg(c, &mh, 0);
            if (fd >= 0)
                close(fd);
        } else if (f->kind == FAKE_SILENT) {
            sleep_ms(1000); /* longer than the client waits */
        } else if (f->kind == FAKE_GARBAGE) {
            memset(buf, 0xA5, sizeof buf);
            send(c, buf, 40, 0);
        }
        close(c);
    }
}

static void test_misbehaving_daemon_leaves_client_working(void **state)
{
    (void)state;
    char dir[] = "/tmp/hakfake-XXXXXX", sock[128], out[1024];
    assert_non_null(mkdtemp(dir));
    snprintf(sock, sizeof sock, "%s/sock", dir);
    for (int kind = FAKE_CLOSE; kind <= FAKE_GARBAGE; kind++) {
        struct fake f = {socket(AF_UNIX, SOCK_SEQPACKET, 0), (enum fake_kind)kind};
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        strcpy(sa.sun_path, sock);
        unlink(sock);
        assert_int_equal(bind(f.listen_fd, (struct sockaddr *)&sa, sizeof sa), 0);
        assert_int_equal(listen(f.listen_fd, 8), 0);
        pthread_t t;
        pthread_create(&t, NULL, fake_daemon, &f);
        int rc = run_child(sock, "none", "0", out, sizeof out);
        print_message("a daemon that %s: client exit %d, %s", fake_names[kind], rc, out);
        assert_int_equal(rc, 0);
        assert_non_null(strstr(out, "from_daemon=0 "));
        shutdown(f.listen_fd, SHUT_RDWR);
        close(f.listen_fd);
        pthread_join(t, NULL);
    }
    unlink(sock);
    rmdir(dir);
}

/* A daemon with a valid file that lies in its fill ring: the same
 * SuperSlab twice in one batch, or SuperSlabs already handed out listed
 * again later. The client must neither crash nor lose data. */
struct liar {
    int listen_fd;
    bool twice_in_batch;
};

static void *lying_daemon(void *arg)
{
    struct liar *lr = arg;
    struct hak_shm_layout l;
    hak_shm_layout_compute(1, 16, &l);
    int fd = memfd_create("liar", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (ftruncate(fd, (off_t)l.file_size) != 0)
        return NULL;
    fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW);
    struct hak_shm_ctrl *c = mmap(NULL, l.ctrl_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    c->magic = HAK_SHM_MAGIC;
    c->version = HAK_SHM_VERSION;
    c->layout = l;
    c->ncpus = 1;
    struct hak_shm_fill_ring *r = (struct hak_shm_fill_ring *)((char *)c + hak_shm_fill_ring_offset(0));
    uint64_t a = l.ss_offset, b = l.ss_offset + HAK_SHM_SS_SIZE;
    atomic_store(&r->slot[0], a);
    atomic_store(&r->slot[1], lr->twice_in_batch ? a : b);
    atomic_store(&r->tail.v, 2);
    int cs = accept(lr->listen_fd, NULL, NULL);
    char buf[256];
    if (cs < 0 || recv(cs, buf, sizeof buf, 0) <= 0)
        return NULL;
    struct hak_msg_welcome w;
    memset(&w, 0, sizeof w);
    hak_msg_init(&w.hdr, HAK_MSG_WELCOME, sizeof w);
    w.layout = l;
    char cbuf[CMSG_SPACE(sizeof(int))];
    struct iovec iov = {&w, sizeof w};
    struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf, .msg_controllen = sizeof cbuf};
    struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
    cm->cmsg_level = SOL_SOCKET;
    cm->cmsg_type = SCM_RIGHTS;
    cm->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(cm), &fd, sizeof fd);
    sendmsg(cs, &mh, 0);
    for (int i = 0; i < 1000; i++) {
        atomic_fetch_add(&c->heartbeat, 1);
        if (!lr->twice_in_batch && atomic_load(&r->head.v) == 2 && atomic_load(&r->tail.v) == 2) {
            atomic_store(&r->slot[2], a); /* already handed out: a lie */
            atomic_store(&r->slot[3], b);
            atomic_store(&r->tail.v, 4);
        }
        char probe;
        if (recv(cs, &probe, 1, MSG_DONTWAIT) == 0)
            break; /* the client went away */
        sleep_ms(1);
    }
    close(cs);
    munmap(c, l.ctrl_size);
    close(fd);
    return NULL;
}

static void test_lying_daemon_neither_crashes_nor_corrupts(void **state)
{
    (void)state;
    char dir[] = "/tmp/hakliar-XXXXXX", sock[128], out[1024];
    assert_non_null(mkdtemp(dir));
    snprintf(sock, sizeof sock, "%s/sock", dir);
    for (int twice = 1; twice >= 0; twice--) {
        struct liar lr = {socket(AF_UNIX, SOCK_SEQPACKET, 0), twice};
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        strcpy(sa.sun_path, sock);
        unlink(sock);
        assert_int_equal(bind(lr.listen_fd, (struct sockaddr *)&sa, sizeof sa), 0);
        assert_int_equal(listen(lr.listen_fd, 4), 0);
        pthread_t t;
        pthread_create(&t, NULL, lying_daemon, &lr);
        int rc = run_child(sock, "verify", "0", out, sizeof out);
        print_message("a daemon that lists %s: client exit %d, %s", twice ? "one SuperSlab twice in a batch" : "handed-out SuperSlabs again", rc, out);
        assert_int_equal(rc, 0);
        assert_non_null(strstr(out, "contents intact"));
        assert_non_null(strstr(out, "broke the fill ring"));
        shutdown(lr.listen_fd, SHUT_RDWR);
        close(lr.listen_fd);
        pthread_join(t, NULL);
    }
    unlink(sock);
    rmdir(dir);
}

int main(int argc, char **argv)
{
    if (argc == 4 && strcmp(argv[1], "--child") == 0 && strcmp(argv[2], "verify") == 0)
        return child_verify();
    if (argc == 4 && strcmp(argv[1], "--child") == 0) {
        enum hak_os_call call = strcmp(argv[2], "socket") == 0 ? HAK_OS_SOCKET : HAK_OS_MMAP;
        uint32_t skip = (uint32_t)atoi(argv[3]);
        bool none = strcmp(argv[2], "none") == 0;
        if (none)
            skip = UINT32_MAX / 2; /* never fails */
        return child_handshake_failure(call, skip, none);
    }
    ssize_t n = readlink("/proc/self/exe", self_path, sizeof self_path - 1);
    assert_true(n > 0);
    self_path[n] = 0;
    pagerd_locate(argc, argv);
    hak_free(hak_malloc(1));
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_commit_failure_returns_enomem),
        cmocka_unit_test(test_every_nth_mapping_fails),
        cmocka_unit_test_teardown(test_handshake_failures_fall_back, pagerd_teardown),
        cmocka_unit_test(test_misbehaving_daemon_leaves_client_working),
        cmocka_unit_test(test_lying_daemon_neither_crashes_nor_corrupts),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
