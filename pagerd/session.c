/* Client sessions: the listening socket (ours, or one the service manager
 * passed), the handshake (HELLO -> WELCOME with a sealed memfd, or REFUSE),
 * the messages of a session, and its end.
 *
 * A client ends by hanging up, by DETACH, or by being dropped for breaking
 * the protocol. All three release its charge at once; its memory (our
 * mappings, the memfd, its records) is freed when no request in flight
 * names it any more, so that a fallocate already queued can never land on a
 * descriptor number that was meanwhile reused for another client's file. */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "pagerd.h"

#define LISTEN_BACKLOG 128
/* Room for the largest STATUS reply in the socket's send buffer. */
#define SNDBUF_BYTES (2 * HAK_STATUS_MAX_BYTES)

/* The socket activation protocol: the passed descriptors start at 3. */
#define LISTEN_FDS_START 3

static ino_t listen_ino;
static bool listen_inherited; /* its file belongs to the service manager */
static char listen_path[sizeof(((struct sockaddr_un *)0)->sun_path)];
static uint64_t conns_logged_ms;

/* ---- the listening socket ---- */

static void make_parent_dir(const char *path)
{
    if (geteuid() != 0)
        return;
    char copy[sizeof(((struct sockaddr_un *)0)->sun_path)];
    snprintf(copy, sizeof copy, "%s", path);
    const char *dir = dirname(copy);
    if (mkdir(dir, 0755) < 0) {
        if (errno != EEXIST)
            log_warn("mkdir %s", dir);
        return;
    }
    log_info("created %s", dir);
    /* The user we will run as removes the socket at exit. */
    struct passwd *pw = strcmp(pd.set.user, "root") ? getpwnam(pd.set.user) : NULL;
    if (pw && chown(dir, pw->pw_uid, pw->pw_gid) < 0)
        log_warn("chown %s to %s", dir, pd.set.user);
}

/* A socket file left by a daemon that died is removed; one that still
 * answers belongs to a running daemon, which we must not steal from. */
static void remove_stale(const char *path, const struct sockaddr_un *sa)
{
    struct stat st;
    if (lstat(path, &st) < 0)
        return;
    if (!S_ISSOCK(st.st_mode))
        fatalx("%s exists and is not a socket", path);
    int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    if (fd < 0)
        fatal("socket");
    if (connect(fd, (const struct sockaddr *)sa, sizeof *sa) == 0)
        fatalx("%s: another daemon is listening there", path);
    close(fd);
    if (unlink(path) < 0 && errno != ENOENT)
        fatal("unlink %s", path);
    log_info("removed stale socket %s", path);
}

/* The service manager's sockets are meant for us only if LISTEN_PID is our
 * pid (an inherited environment is not an invitation). The variables are
 * consumed either way, so nothing we start could mistake them for its own. */
static int passed_socket(void)
{
    const char *pid = getenv("LISTEN_PID"), *fds = getenv("LISTEN_FDS");
    bool ours = pid && fds && strtol(pid, NULL, 10) == (long)getpid();
    bool one = ours && strcmp(fds, "1") == 0;
    char count[16];
    snprintf(count, sizeof count, "%s", fds ? fds : "");
    unsetenv("LISTEN_PID");
    unsetenv("LISTEN_FDS");
    unsetenv("LISTEN_FDNAMES");
    if (!ours)
        return -1;
    if (!one)
        fatalx("LISTEN_FDS=%s: expected exactly one socket", count);
    return LISTEN_FDS_START;
}

/* A passed descriptor must be what we would have made ourselves. */
static void check_passed(int fd)
{
    int domain = 0, type = 0, listening = 0;
    socklen_t len = sizeof domain;
    if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &len) < 0)
        fatal("passed socket (fd %d)", fd);
    len = sizeof type;
    getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len);
    len = sizeof listening;
    getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &len);
    if (domain != AF_UNIX || type != SOCK_SEQPACKET || !listening)
        fatalx("passed socket (fd %d) is not a listening AF_UNIX SOCK_SEQPACKET socket", fd);
    if (fcntl(fd, F_SETFD, FD_CLOEXEC) < 0)
        fatal("fcntl fd %d", fd);
}

/* The path the passed socket is bound to, for the logs. */
static const char *passed_path(int fd, const char *fallback)
{
    struct sockaddr_un sa;
    socklen_t len = sizeof sa;
    memset(&sa, 0, sizeof sa);
    if (getsockname(fd, (struct sockaddr *)&sa, &len) < 0 || sa.sun_path[0] == 0)
        return fallback;
    snprintf(listen_path, sizeof listen_path, "%.*s", (int)sizeof sa.sun_path, sa.sun_path);
    return listen_path;
}

/* Returns the path served: the given one, or the passed socket's. */
const char *session_listen(const char *path)
{
    int passed = passed_socket();
    if (passed >= 0) {
        check_passed(passed);
        pd.listen_fd = passed;
        listen_inherited = true;
        path = passed_path(passed, path);
        log_info("listening on %s, passed by the service manager", path);
        return path;
    }
    struct sockaddr_un sa;
    memset(&sa, 0, sizeof sa);
    sa.sun_family = AF_UNIX;
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path);
    make_parent_dir(path);
    remove_stale(path, &sa);
    int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    if (fd < 0)
        fatal("socket");
    if (bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0)
        fatal("bind %s", path);
    /* Any local user may ask for memory; the limits keep each in bounds. */
    if (chmod(path, 0666) < 0)
        fatal("chmod %s", path);
    if (listen(fd, LISTEN_BACKLOG) < 0)
        fatal("listen %s", path);
    struct stat st;
    if (stat(path, &st) == 0)
        listen_ino = st.st_ino;
    pd.listen_fd = fd;
    return path;
}

/* Unlink only our own socket file, not one a newer daemon put there, nor
 * the service manager's, which keeps listening for our next start. */
void session_unlisten(const char *path)
{
    struct stat st;
    close(pd.listen_fd);
    pd.listen_fd = -1;
    if (!listen_inherited && stat(path, &st) == 0 && st.st_ino == listen_ino && unlink(path) < 0)
        log_warn("unlink %s", path);
}

/* ---- connections ---- */

void session_accepted(int fd)
{
    if (pd.nconns >= PAGERD_MAX_CONNS) {
        uint64_t now = now_ms();
        if (now - conns_logged_ms >= PAGERD_LOG_EVERY_MS) {
            conns_logged_ms = now;
            log_warnx("%u connections open: refusing more", pd.nconns);
        }
        close(fd);
        return;
    }
    struct ucred cred;
    socklen_t len = sizeof cred;
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0) {
        log_warn("SO_PEERCRED");
        close(fd);
        return;
    }
    struct user *u = user_connect(cred.uid);
    if (!u) {
        uint64_t now = now_ms();
        if (now - conns_logged_ms >= PAGERD_LOG_EVERY_MS) {
            conns_logged_ms = now;
            log_warnx("uid %u: %u connections (connections_uid): refusing more", cred.uid,
                      pd.set.connections_uid);
        }
        close(fd);
        return;
    }
    struct client *c = calloc(1, sizeof *c);
    if (!c) {
        log_warn("calloc");
        user_disconnect(u);
        close(fd);
        return;
    }
    c->user = u;
    int sndbuf = SNDBUF_BYTES;
    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof sndbuf);
    c->sock = fd;
    c->memfd = -1;
    c->state = CL_NEW;
    c->pid = cred.pid;
    c->uid = cred.uid;
    c->connected_ms = now_ms();
    TAILQ_INSERT_TAIL(&pd.clients, c, entry);
    pd.nconns++;
    log_debug("accept pid=%d uid=%u", c->pid, c->uid);
    loop_recv(c);
}

static void file_discard(struct client *c);

/* Our records and mappings; the socket was shut down when the client died. */
static void session_free(struct client *c)
{
    TAILQ_REMOVE(&pd.zombies, c, entry);
    file_discard(c);
    close(c->sock);
    free(c);
}

void session_unref(struct client *c)
{
    if (--c->refs == 0 && c->state == CL_DEAD)
        session_free(c);
}

/* Release the client's charge and stop serving it. Its receive (always in
 * flight) completes with 0 after the shutdown, and the client reads EOF. */
static void session_end(struct client *c)
{
    if (c->state == CL_SESSION) {
        pd.charged -= client_charge(c);
        c->user->charged -= client_charge(c);
        c->user->sessions--;
        pd.nsessions--;
    }
    charge_session_end(c);
    user_disconnect(c->user);
    c->user = NULL;
    TAILQ_REMOVE(&pd.clients, c, entry);
    TAILQ_INSERT_TAIL(&pd.zombies, c, entry);
    pd.nconns--;
    c->state = CL_DEAD;
    shutdown(c->sock, SHUT_RDWR);
}

void session_drop(struct client *c, const char *fmt, ...)
{
    if (c->state == CL_DEAD)
        return;
    char reason[160];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(reason, sizeof reason, fmt, ap);
    va_end(ap);
    log_warnx("dropped pid=%d session=%llu reason=%s", c->pid, (unsigned long long)c->session, reason);
    session_end(c);
}

static void session_hangup(struct client *c, const char *how)
{
    if (c->state == CL_SESSION)
        log_info("disconnect pid=%d session=%llu served=%llu returned=%llu reclaimed=%llu (%s)", c->pid,
                 (unsigned long long)c->session, (unsigned long long)c->served, (unsigned long long)c->returned,
                 (unsigned long long)c->reclaimed, how);
    else
        log_debug("closed pid=%d (%s)", c->pid, how);
    session_end(c);
}

/* Shutdown: every client learns at once; the memory it mapped stays valid
 * in it (it holds its own descriptor of the file). */
void session_close_all(void)
{
    struct client *c;
    while ((c = TAILQ_FIRST(&pd.clients)))
        session_hangup(c, "daemon stopping");
}

/* At exit, once the ring is gone: no request can name a client any more. */
void session_free_all(void)
{
    struct client *c;
    while ((c = TAILQ_FIRST(&pd.zombies)))
        session_free(c);
}

/* ---- replies ---- */

/* Never blocks: a peer that does not read its replies is dropped by the
 * caller rather than allowed to stall the loop. */
bool session_reply(struct client *c, const void *msg, size_t len)
{
    ssize_t n = send(c->sock, msg, len, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n == (ssize_t)len)
        return true;
    log_debug("send to pid=%d: %s", c->pid, n < 0 ? strerror(errno) : "short");
    return false;
}

static void refuse(struct client *c, enum hak_refuse_code code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void refuse(struct client *c, enum hak_refuse_code code, const char *fmt, ...)
{
    struct hak_msg_refuse m;
    memset(&m, 0, sizeof m);
    hak_msg_init(&m.hdr, HAK_MSG_REFUSE, sizeof m);
    m.code = code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(m.reason, sizeof m.reason, fmt, ap);
    va_end(ap);
    session_reply(c, &m, sizeof m); /* best effort: it is dropped either way */
    /* A uid at its limits may ask again and again: one line a second. */
    uint64_t now = now_ms();
    if (code == HAK_REFUSE_LIMIT && c->user && now - c->user->refused_logged_ms < PAGERD_LOG_EVERY_MS)
        return session_end(c);
    if (code == HAK_REFUSE_LIMIT && c->user)
        c->user->refused_logged_ms = now;
    session_drop(c, "refused: %s", m.reason);
}

/* One datagram with a descriptor attached (SCM_RIGHTS), never blocking:
 * true if all of it went. */
bool send_with_fd(int sock, const void *buf, size_t len, int fd)
{
    union {
        struct cmsghdr align;
        char buf[CMSG_SPACE(sizeof(int))];
    } cm;
    memset(&cm, 0, sizeof cm);
    struct iovec iov = {.iov_base = (void *)buf, .iov_len = len};
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = cm.buf, .msg_controllen = sizeof cm.buf};
    struct cmsghdr *ch = CMSG_FIRSTHDR(&msg);
    ch->cmsg_level = SOL_SOCKET;
    ch->cmsg_type = SCM_RIGHTS;
    ch->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(ch), &fd, sizeof(int));
    return sendmsg(sock, &msg, MSG_DONTWAIT | MSG_NOSIGNAL) == (ssize_t)len;
}

static bool send_welcome(struct client *c)
{
    struct hak_msg_welcome m;
    memset(&m, 0, sizeof m);
    hak_msg_init(&m.hdr, HAK_MSG_WELCOME, sizeof m);
    m.layout = c->layout;
    m.session = c->session;
    return send_with_fd(c->sock, &m, sizeof m, c->memfd);
}

/* ---- the client's file ---- */

static void ctrl_init(struct client *c)
{
    struct hak_shm_ctrl *ctrl = c->ctrl;
    ctrl->magic = HAK_SHM_MAGIC;
    ctrl->version = HAK_SHM_VERSION;
    ctrl->layout = c->layout;
    ctrl->ncpus = pd.ncpus;
    ctrl->pages = c->pages;
    atomic_store_explicit(&ctrl->now_ms, (uint32_t)now_ms(), memory_order_relaxed);
    memcpy(ctrl->cpu_node, pd.cpu_node, pd.ncpus);
    /* The rings start zeroed: ftruncate gave us a file of zeros. */
}

/* One memfd sized and sealed so that the client can neither shrink it (our
 * mappings would fault) nor grow it, nor change the seals. */
static bool file_create(struct client *c)
{
    char name[32];
    snprintf(name, sizeof name, "hakmem-%d", c->pid);
    /* memfd_create takes the page size as mmap does: log2 at MAP_HUGE_SHIFT. */
    unsigned huge = c->pages == HAK_PAGES_HUGETLB ? MFD_HUGETLB | (HAK_SHM_HUGE_SHIFT << MAP_HUGE_SHIFT) : 0;
    c->memfd = memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING | huge);
    if (c->memfd < 0) {
        log_warn("memfd_create");
        return false;
    }
    if (ftruncate(c->memfd, (off_t)c->layout.file_size) < 0) {
        log_warn("ftruncate %llu", (unsigned long long)c->layout.file_size);
        return false;
    }
    if (fcntl(c->memfd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) < 0) {
        log_warn("F_ADD_SEALS");
        return false;
    }
    void *p = mmap(NULL, pages_map_len(c->pages, c->layout.ctrl_size), PROT_READ | PROT_WRITE,
                   MAP_SHARED | MAP_NORESERVE, c->memfd, 0);
    if (p == MAP_FAILED) {
        log_warn("mmap control area");
        return false;
    }
    c->ctrl = p;
    /* For mbind, and for pre-faulting huge pages (pages.c): the daemon
     * never reads or writes SuperSlab bytes. */
    uint64_t len = (uint64_t)c->layout.capacity << HAK_SHM_SS_SHIFT;
    c->ss_area = pages_map_aligned(c->memfd, c->layout.ss_offset, len);
    if (!c->ss_area) {
        log_warn("mmap SuperSlab area (%u MiB)", c->layout.capacity);
        return false;
    }
    if (c->pages == HAK_PAGES_THP && madvise(c->ss_area, len, MADV_HUGEPAGE) < 0) {
        log_warn("madvise(MADV_HUGEPAGE) of a client's file");
        return false;
    }
    ctrl_init(c);
    return true;
}

static void file_discard(struct client *c)
{
    if (c->ctrl)
        munmap(c->ctrl, pages_map_len(c->pages, c->layout.ctrl_size));
    if (c->ss_area)
        munmap(c->ss_area, (uint64_t)c->layout.capacity << HAK_SHM_SS_SHIFT);
    if (c->memfd >= 0)
        close(c->memfd);
    c->ctrl = NULL;
    c->ss_area = NULL;
    c->memfd = -1;
    pool_client_free(c);
}

static void hello(struct client *c)
{
    struct hak_msg_hello h;
    memcpy(&h, c->rbuf.raw, sizeof h);
    if (h.capacity == 0 || h.capacity > HAK_SHM_MAX_CAPACITY)
        return refuse(c, HAK_REFUSE_BAD, "capacity %u out of range 1..%u", h.capacity, HAK_SHM_MAX_CAPACITY);
    if (h.flags || h.reserved)
        return refuse(c, HAK_REFUSE_BAD, "reserved hello fields not zero");
    if (pd.nsessions >= PAGERD_MAX_SESSIONS)
        return refuse(c, HAK_REFUSE_LIMIT, "%u sessions: no room for more", pd.nsessions);
    if (!user_may_open_session(c->user))
        return refuse(c, HAK_REFUSE_LIMIT, "uid %u has %u sessions (sessions_uid)", c->uid, c->user->sessions);
    uint32_t cap = h.capacity < pd.set.max_capacity ? h.capacity : pd.set.max_capacity;
    if (!charge_session_start(c))
        return refuse(c, HAK_REFUSE_RESOURCE, "the daemon is out of memory");
    c->pages = pages_choose(c, &cap);
    c->unit = c->pages == HAK_PAGES_4K ? 1 : 2;
    if (!hak_shm_layout_compute(pd.nnodes, cap, &c->layout))
        return refuse(c, HAK_REFUSE_BAD, "no layout for capacity %u", cap);
    if (!pool_client_init(c) || !file_create(c)) {
        file_discard(c);
        return refuse(c, HAK_REFUSE_RESOURCE, "the daemon could not create the file");
    }
    c->session = ++pd.next_session;
    c->state = CL_SESSION;
    pd.nsessions++;
    c->user->sessions++;
    /* Before the welcome: its first pop, a moment from now, then finds
     * SuperSlabs on their way and waits for them. */
    pool_client_start(c);
    if (!send_welcome(c)) {
        log_warn("welcome to pid=%d", c->pid);
        return session_drop(c, "welcome could not be sent");
    }
    log_info("connect pid=%d uid=%u capacity=%u%s session=%llu cgroup=%s charge=%s pages=%s", c->pid, c->uid, cap,
             cap < h.capacity ? " (clamped)" : "", (unsigned long long)c->session, c->cg->where.path,
             charge_mode_name(c->cg->mode), hak_pages_name(c->pages));
}

/* One datagram (res bytes) in c->rbuf, or the end of the connection. */
void session_received(struct client *c, int res)
{
    if (c->state == CL_DEAD)
        return;
    /* A zero-length datagram reads like a hang-up; both end the client. */
    if (res <= 0)
        return session_hangup(c, res == 0 ? "hang-up" : strerror(-res));
    unsigned type = hak_msg_check(c->rbuf.raw, (size_t)res), peeked, version;
    if (!type && c->state == CL_NEW && hak_msg_peek(c->rbuf.raw, (size_t)res, &peeked, &version) &&
        version != HAK_SHM_VERSION && peeked == HAK_MSG_HELLO)
        return refuse(c, HAK_REFUSE_VERSION, "protocol version %u not supported (want %u)", version,
                      HAK_SHM_VERSION);
    switch (type) {
    case HAK_MSG_HELLO:
        if (c->state != CL_NEW)
            return session_drop(c, "hello within a session");
        hello(c);
        break;
    case HAK_MSG_DETACH:
        if (c->state != CL_SESSION)
            return session_drop(c, "detach without a session");
        return session_hangup(c, "detach");
    case HAK_MSG_DRY:
        if (c->state != CL_SESSION)
            return session_drop(c, "dry ring without a session");
        pool_client_dry(c);
        break;
    case HAK_MSG_STATUS_REQ: {
        uint64_t now = now_ms();
        if (!rate_take(&c->status, now) || !rate_take(&c->user->status, now)) {
            c->user->refused++;
            return refuse(c, HAK_REFUSE_LIMIT, "status requests: at most %u a second per uid and per connection",
                          pd.set.status_per_sec);
        }
        status_reply(c);
        break;
    }
    case 0:
        return session_drop(c, "bad message (%d bytes)", res);
    default:
        return session_drop(c, "unexpected message type %u", type);
    }
    if (c->state != CL_DEAD)
        loop_recv(c);
}
