/* For the daemon's tests: a private hakmem-pagerd per test (its own socket
 * in a temporary directory, its stderr in a log file), and a raw client
 * that speaks the protocol with the shm/ functions only. */
#ifndef HAK_PAGERD_CLIENT_H
#define HAK_PAGERD_CLIENT_H

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>

#include "hakmem_shm.h"
#include "testutil.h"

static char pagerd_bin[512];

/* HAK_TEST_PAGERD_WRAPPER: a command the daemon runs under, split at
 * spaces (make valgrind: valgrind and its options). Such a daemon is many
 * times slower, so the helper's timeouts are multiplied by pagerd_slow. */
#define PAGERD_SLOW_WRAPPED 20
static char *pagerd_wrapper[24];
static unsigned pagerd_slow = 1;

/* The build directory is the test's first argument (run_tests.sh). */
static inline void pagerd_locate(int argc, char **argv)
{
    const char *dir = argc > 1 ? argv[1] : "build";
    snprintf(pagerd_bin, sizeof pagerd_bin, "%s/hakmem-pagerd", dir);
    if (access(pagerd_bin, X_OK) != 0)
        snprintf(pagerd_bin, sizeof pagerd_bin, "build/hakmem-pagerd");
    const char *w = getenv("HAK_TEST_PAGERD_WRAPPER");
    if (w && *w) {
        char *words = strdup(w), *save = NULL;
        int n = 0;
        for (char *t = strtok_r(words, " ", &save); t && n < 23; t = strtok_r(NULL, " ", &save))
            pagerd_wrapper[n++] = t;
        pagerd_slow = PAGERD_SLOW_WRAPPED;
    }
}

/* exec the daemon with argv (argv[0] is pagerd_bin), under the wrapper if
 * there is one; returns only if exec failed. */
static inline void pagerd_exec(char *const argv[])
{
    if (!pagerd_wrapper[0]) {
        execv(argv[0], argv);
        return;
    }
    char *all[64];
    int n = 0;
    for (; pagerd_wrapper[n]; n++)
        all[n] = pagerd_wrapper[n];
    for (int i = 0; argv[i] && n < 63; i++)
        all[n++] = argv[i];
    all[n] = NULL;
    execvp(all[0], all);
}

static inline uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static inline void sleep_ms(unsigned ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

/* Poll cond every 2 ms until it holds or ms (times pagerd_slow) pass; the
 * value of cond. */
#define WAIT_FOR(cond, ms)                                             \
    ({                                                                 \
        uint64_t wait_end_ = mono_ms() + (uint64_t)(ms) * pagerd_slow; \
        bool wait_ok_;                                                 \
        while (!(wait_ok_ = (cond)) && mono_ms() < wait_end_)          \
            sleep_ms(2);                                               \
        wait_ok_;                                                      \
    })

/* ---- the daemon ---- */

struct daemon {
    pid_t pid;
    char dir[64];
    char sock[96];
    char log[96];
};

/* Daemons still running when a test fails are killed by the teardown:
 * copies, since a failed test's own struct was on a stack long gone. */
static struct daemon live_daemons[8];

static inline void daemon_track(struct daemon *d, bool on)
{
    for (int i = 0; i < 8; i++)
        if (on ? live_daemons[i].pid == 0 : live_daemons[i].pid == d->pid) {
            if (on)
                live_daemons[i] = *d;
            else
                live_daemons[i].pid = 0;
            return;
        }
}

static inline void daemon_dir(struct daemon *d)
{
    memset(d, 0, sizeof *d);
    snprintf(d->dir, sizeof d->dir, "/tmp/hakpd-XXXXXX");
    assert_non_null(mkdtemp(d->dir));
    /* A daemon started as root serves as nobody: it removes its socket
     * at exit. */
    assert_int_equal(chmod(d->dir, 0777), 0);
    snprintf(d->sock, sizeof d->sock, "%s/pagerd.sock", d->dir);
    snprintf(d->log, sizeof d->log, "%s/pagerd.log", d->dir);
}

/* fork + exec of the daemon with stdout and stderr into the log file. */
static inline pid_t spawn_logged(char *const argv[], const char *log)
{
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL); /* a crashed test leaves no daemon behind */
        int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd < 0)
            _exit(127);
        dup2(fd, 1);
        dup2(fd, 2);
        pagerd_exec(argv);
        _exit(127);
    }
    return pid;
}

static inline int connect_to(const char *path)
{
    int s = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    assert_true(s >= 0);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path);
    if (connect(s, (struct sockaddr *)&sa, sizeof sa) < 0) {
        close(s);
        return -1;
    }
    return s;
}

static inline char *read_file_text(const char *path)
{
    static char buf[1 << 18];
    buf[0] = 0;
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        return buf;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    buf[n > 0 ? n : 0] = 0;
    return buf;
}

static inline bool daemon_alive(const struct daemon *d)
{
    int status;
    return waitpid(d->pid, &status, WNOHANG) == 0;
}

/* Start with the given extra flags (NULL-terminated), in the foreground,
 * with an empty config file so the host's file never matters; return once
 * its socket answers. */
static inline void daemon_start_argv(struct daemon *d, const char *const *extra)
{
    daemon_dir(d);
    char cfg[128];
    snprintf(cfg, sizeof cfg, "%s/empty.conf", d->dir);
    close(open(cfg, O_WRONLY | O_CREAT, 0644));
    /* Tests poll the status far more often than anyone should: a test of
     * the rate limit sets its own (a later flag wins). */
    const char *argv[32] = {pagerd_bin, "--foreground", "--socket", d->sock, "--config", cfg,
                            "--status-per-sec", "100000"};
    int n = 8;
    for (; extra && *extra && n < 31; extra++)
        argv[n++] = *extra;
    /* --config given twice: the last wins, so a test can name its own. */
    argv[n] = NULL;
    d->pid = spawn_logged((char *const *)argv, d->log);
    daemon_track(d, true);
    uint64_t end = mono_ms() + 5000 * pagerd_slow;
    for (;;) {
        int s = connect_to(d->sock);
        if (s >= 0) {
            close(s);
            return;
        }
        if (!daemon_alive(d))
            fail_msg("daemon exited at start: %s", read_file_text(d->log));
        if (mono_ms() > end)
            fail_msg("daemon socket never answered");
        sleep_ms(5);
    }
}

#define daemon_start(d, ...) daemon_start_argv((d), (const char *const[]){__VA_ARGS__, NULL})

/* SIGTERM: it must exit 0 and take its socket file with it. */
static inline void daemon_stop(struct daemon *d)
{
    assert_int_equal(kill(d->pid, SIGTERM), 0);
    int status = 0;
    uint64_t end = mono_ms() + 5000 * pagerd_slow;
    while (waitpid(d->pid, &status, WNOHANG) == 0) {
        if (mono_ms() > end) {
            kill(d->pid, SIGKILL);
            waitpid(d->pid, &status, 0);
            fail_msg("daemon ignored SIGTERM");
        }
        sleep_ms(2);
    }
    daemon_track(d, false);
    const char *log = read_file_text(d->log);
    bool unlinked = access(d->sock, F_OK) < 0;
    char cmd[160];
    snprintf(cmd, sizeof cmd, "rm -rf %s", d->dir);
    assert_int_equal(system(cmd), 0);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        fail_msg("daemon exit status %#x: %s", status, log);
    assert_true(unlinked);
}

static inline int pagerd_teardown(void **state)
{
    (void)state;
    for (int i = 0; i < 8; i++) {
        struct daemon *d = &live_daemons[i];
        if (!d->pid)
            continue;
        if (waitpid(d->pid, NULL, WNOHANG) == 0) { /* still our running child */
            kill(d->pid, SIGKILL);
            waitpid(d->pid, NULL, 0);
        }
        char cmd[160];
        snprintf(cmd, sizeof cmd, "rm -rf %s", d->dir);
        if (system(cmd) != 0)
            fprintf(stderr, "could not remove %s\n", d->dir);
        d->pid = 0;
    }
    return 0;
}

/* ---- the host's settings (sysfs, procfs) ---- */

static inline bool write_text(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    if (!f)
        return false;
    bool ok = fputs(text, f) >= 0;
    return fclose(f) == 0 && ok;
}

/* The bracketed word of a sysfs choice ("always [advise] never"). */
static inline bool sysfs_choice(const char *path, char *out, size_t len)
{
    char *open = strchr(read_file_text(path), '['), *close = open ? strchr(open, ']') : NULL;
    bool ok = close && (size_t)(close - open) <= len;
    if (ok)
        snprintf(out, len, "%.*s", (int)(close - open - 1), open + 1);
    return ok;
}

/* Occurrences of needle in the daemon's log. */
static inline int log_count(const struct daemon *d, const char *needle)
{
    int n = 0;
    for (const char *p = read_file_text(d->log); (p = strstr(p, needle)); p++)
        n++;
    return n;
}

/* Occurrences of needle once at least one is in the log (lines written
 * after the socket answers, such as the pages line, take a moment), or 0
 * after 5 s. */
static inline int log_wait(const struct daemon *d, const char *needle)
{
    uint64_t end = mono_ms() + 5000 * pagerd_slow;
    int n;
    while ((n = log_count(d, needle)) == 0 && mono_ms() < end)
        usleep(2000);
    return n;
}

/* ---- messages ---- */

static inline void send_bytes(int s, const void *buf, size_t n)
{
    assert_int_equal(send(s, buf, n, MSG_NOSIGNAL), (ssize_t)n);
}

/* One datagram (and a descriptor if one came); 0 at EOF, -1 on timeout. */
static inline ssize_t recv_msg(int s, void *buf, size_t cap, int *fd, int timeout_ms)
{
    struct pollfd p = {.fd = s, .events = POLLIN};
    if (poll(&p, 1, timeout_ms) <= 0)
        return -1;
    union {
        struct cmsghdr align;
        char buf[CMSG_SPACE(sizeof(int))];
    } cm;
    struct iovec iov = {.iov_base = buf, .iov_len = cap};
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = cm.buf, .msg_controllen = sizeof cm.buf};
    ssize_t n = recvmsg(s, &msg, MSG_CMSG_CLOEXEC);
    if (fd) {
        *fd = -1;
        struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
        if (n > 0 && c && c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS)
            memcpy(fd, CMSG_DATA(c), sizeof(int));
    }
    return n < 0 ? -1 : n;
}

/* The daemon hung up on us (reading past any REFUSE it sent first). */
static inline bool reads_eof(int s, int timeout_ms)
{
    unsigned char buf[512];
    uint64_t end = mono_ms() + (uint64_t)timeout_ms;
    while (mono_ms() < end) {
        ssize_t n = recv_msg(s, buf, sizeof buf, NULL, 50);
        if (n == 0)
            return true;
    }
    return false;
}

static inline struct hak_msg_hello hello_msg(uint32_t capacity)
{
    struct hak_msg_hello h;
    memset(&h, 0, sizeof h);
    hak_msg_init(&h.hdr, HAK_MSG_HELLO, sizeof h);
    h.capacity = capacity;
    return h;
}

/* ---- status ---- */

struct status {
    struct hak_status_daemon d;
    struct hak_status_node nodes[HAK_SHM_MAX_NODES];
    struct hak_status_client clients[HAK_STATUS_MAX_CLIENTS];
    struct hak_status_user users[HAK_STATUS_MAX_USERS];
};

static inline void get_status(const struct daemon *d, struct status *st)
{
    static unsigned char buf[HAK_STATUS_MAX_BYTES];
    int s = connect_to(d->sock);
    assert_true(s >= 0);
    struct hak_msg_hdr h;
    hak_msg_init(&h, HAK_MSG_STATUS_REQ, sizeof h);
    send_bytes(s, &h, sizeof h);
    ssize_t n = recv_msg(s, buf, sizeof buf, NULL, 5000 * (int)pagerd_slow);
    assert_true(n > 0);
    assert_int_equal(hak_msg_check(buf, (size_t)n), HAK_MSG_STATUS);
    close(s);
    struct hak_msg_status m;
    memcpy(&m, buf, sizeof m);
    st->d = m.daemon;
    size_t off = sizeof m;
    memcpy(st->nodes, buf + off, st->d.nnodes * sizeof st->nodes[0]);
    off += st->d.nnodes * sizeof st->nodes[0];
    memcpy(st->clients, buf + off, st->d.nclients * sizeof st->clients[0]);
    off += st->d.nclients * sizeof st->clients[0];
    memcpy(st->users, buf + off, st->d.nusers * sizeof st->users[0]);
}

static inline const struct hak_status_user *status_user(const struct status *st, uint32_t uid)
{
    for (uint32_t i = 0; i < st->d.nusers; i++)
        if (st->users[i].uid == uid)
            return &st->users[i];
    return NULL;
}

static inline const struct hak_status_client *status_client(const struct status *st, uint64_t session)
{
    for (uint32_t i = 0; i < st->d.nclients; i++)
        if (st->clients[i].session == session)
            return &st->clients[i];
    return NULL;
}

/* ---- a raw client ---- */

struct tclient {
    int sock;
    int memfd;
    struct hak_shm_layout lay;
    uint64_t session;
    unsigned char *base; /* the whole file, mapped shared */
};

/* HELLO, then WELCOME with the memfd; false (and a closed socket) if the
 * daemon refused. */
static inline bool tc_open(struct tclient *c, const struct daemon *d, uint32_t capacity)
{
    memset(c, 0, sizeof *c);
    c->memfd = -1;
    c->sock = connect_to(d->sock);
    assert_true(c->sock >= 0);
    struct hak_msg_hello h = hello_msg(capacity);
    send_bytes(c->sock, &h, sizeof h);
    unsigned char buf[512];
    ssize_t n = recv_msg(c->sock, buf, sizeof buf, &c->memfd, 5000 * (int)pagerd_slow);
    assert_true(n > 0);
    if (hak_msg_check(buf, (size_t)n) != HAK_MSG_WELCOME) {
        close(c->sock);
        return false;
    }
    struct hak_msg_welcome w;
    memcpy(&w, buf, sizeof w);
    assert_true(c->memfd >= 0);
    c->lay = w.layout;
    c->session = w.session;
    c->base = mmap(NULL, c->lay.file_size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE, c->memfd, 0);
    assert_true(c->base != MAP_FAILED);
    return true;
}

static inline void tc_close(struct tclient *c)
{
    if (c->base)
        munmap(c->base, c->lay.file_size);
    if (c->memfd >= 0)
        close(c->memfd);
    if (c->sock >= 0)
        close(c->sock);
    c->base = NULL;
    c->memfd = c->sock = -1;
}

static inline struct hak_shm_ctrl *tc_ctrl(struct tclient *c)
{
    return (struct hak_shm_ctrl *)c->base;
}

static inline struct hak_shm_fill_ring *tc_fill(struct tclient *c, uint32_t node)
{
    return (struct hak_shm_fill_ring *)(c->base + hak_shm_fill_ring_offset(node));
}

static inline struct hak_shm_return_ring *tc_ret(struct tclient *c)
{
    return (struct hak_shm_return_ring *)(c->base + hak_shm_return_ring_offset(c->lay.nnodes));
}

static inline uint32_t tc_level(struct tclient *c, uint32_t node)
{
    struct hak_shm_fill_ring *r = tc_fill(c, node);
    return atomic_load(&r->tail.v) - atomic_load(&r->head.v);
}

static inline bool tc_offset_ok(const struct tclient *c, uint64_t off)
{
    return off >= c->lay.ss_offset && off < c->lay.file_size && ((off - c->lay.ss_offset) & (HAK_SHM_SS_SIZE - 1)) == 0;
}

/* One SuperSlab from node's ring (checked like a real client would), or 0. */
static inline uint64_t tc_pop(struct tclient *c, uint32_t node)
{
    uint64_t off;
    int got = hak_fill_ring_pop(tc_fill(c, node), &off);
    assert_true(got >= 0);
    if (got == 0)
        return 0;
    assert_true(tc_offset_ok(c, off));
    return off;
}

static inline void tc_return(struct tclient *c, uint64_t off)
{
    assert_true(hak_return_ring_push(tc_ret(c), off));
}

/* Bytes of the memfd that have pages. */
static inline uint64_t file_bytes(int fd)
{
    struct stat st;
    assert_int_equal(fstat(fd, &st), 0);
    return (uint64_t)st.st_blocks * 512;
}

#endif
