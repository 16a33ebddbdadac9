/* One STATUS request and its reply: connect, send the request, wait for one
 * datagram, check its size against its counts, unpack it. Nothing here
 * prints; the caller words the error with the socket's name. */
#include <errno.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "hakctl.h"

/* One byte more than the largest valid reply, so that a larger one cannot
 * pass for a valid one cut short. */
static unsigned char reply[HAK_STATUS_MAX_BYTES + 1];

/* The connect errors a user meets, in the words that say what to do. */
static const char *connect_reason(int err)
{
    switch (err) {
    case ENOENT:
        return "no such socket (is hakmem-pagerd running?)";
    case ECONNREFUSED:
        return "connection refused (a socket file without a daemon: hakmem-pagerd is not running)";
    case EACCES:
        return "permission denied (the daemon makes its socket 0666; check the directories above it)";
    default:
        return strerror(err);
    }
}

static int connect_to(const char *path, char *err, size_t errlen)
{
    struct sockaddr_un sa;
    memset(&sa, 0, sizeof sa);
    sa.sun_family = AF_UNIX;
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path);
    int s = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    if (s < 0) {
        snprintf(err, errlen, "socket: %s", strerror(errno));
        return -1;
    }
    if (connect(s, (struct sockaddr *)&sa, sizeof sa) < 0) {
        snprintf(err, errlen, "%s", connect_reason(errno));
        close(s);
        return -1;
    }
    return s;
}

/* The reply's length, or -1 with err set. */
static ssize_t exchange(int s, char *err, size_t errlen)
{
    struct hak_msg_hdr req;
    hak_msg_init(&req, HAK_MSG_STATUS_REQ, sizeof req);
    if (send(s, &req, sizeof req, MSG_NOSIGNAL) != (ssize_t)sizeof req) {
        snprintf(err, errlen, "sending the request: %s", strerror(errno));
        return -1;
    }
    struct pollfd p = {.fd = s, .events = POLLIN};
    int r;
    while ((r = poll(&p, 1, HAKCTL_TIMEOUT_MS)) < 0 && errno == EINTR)
        ;
    if (r == 0) {
        snprintf(err, errlen, "no reply within %d s", HAKCTL_TIMEOUT_MS / 1000);
        return -1;
    }
    ssize_t n;
    while ((n = recv(s, reply, sizeof reply, 0)) < 0 && errno == EINTR)
        ;
    if (n < 0)
        snprintf(err, errlen, "reading the reply: %s", strerror(errno));
    else if (n == 0)
        snprintf(err, errlen, "the daemon closed the connection without a reply");
    return n > 0 ? n : -1;
}

static void unpack(const unsigned char *buf, struct snapshot *snap)
{
    struct hak_msg_status m;
    memcpy(&m, buf, sizeof m);
    snap->d = m.daemon;
    snap->d.version[sizeof snap->d.version - 1] = 0;
    size_t off = sizeof m;
    memcpy(snap->nodes, buf + off, snap->d.nnodes * sizeof snap->nodes[0]);
    off += snap->d.nnodes * sizeof snap->nodes[0];
    memcpy(snap->clients, buf + off, snap->d.nclients * sizeof snap->clients[0]);
    off += snap->d.nclients * sizeof snap->clients[0];
    for (uint32_t i = 0; i < snap->d.nclients; i++)
        snap->clients[i].cgroup[sizeof snap->clients[i].cgroup - 1] = 0;
    memcpy(snap->users, buf + off, snap->d.nusers * sizeof snap->users[0]);
}

/* Why a reply that is not a status was sent: a refusal (the rate limit),
 * another protocol version, or nothing valid. */
static enum hakctl_exit explain(const unsigned char *buf, size_t n, char *err, size_t errlen)
{
    unsigned type, version;
    if (!hak_msg_peek(buf, n, &type, &version)) {
        snprintf(err, errlen, "the reply (%zu bytes) is not a valid status", n);
    } else if (version != HAK_SHM_VERSION) {
        snprintf(err, errlen, "the daemon speaks protocol version %u, hakctl %u", version, HAK_SHM_VERSION);
    } else if (hak_msg_check(buf, n) == HAK_MSG_REFUSE) {
        struct hak_msg_refuse r;
        memcpy(&r, buf, sizeof r);
        r.reason[sizeof r.reason - 1] = 0;
        snprintf(err, errlen, "the daemon refused: %s", r.reason);
        return HAKCTL_REFUSED;
    } else {
        snprintf(err, errlen, "the reply (%zu bytes, type %u) is not a valid status", n, type);
    }
    return HAKCTL_BAD_REPLY;
}

enum hakctl_exit query_status(const char *socket, struct snapshot *snap, char *err, size_t errlen)
{
    int s = connect_to(socket, err, errlen);
    if (s < 0)
        return HAKCTL_UNREACHABLE;
    ssize_t n = exchange(s, err, errlen);
    close(s);
    if (n < 0)
        return HAKCTL_UNREACHABLE;
    /* Sizes and counts agree (hak_msg_check); records are then read as
     * plain numbers, which nothing else relies on. */
    if (hak_msg_check(reply, (size_t)n) != HAK_MSG_STATUS)
        return explain(reply, (size_t)n, err, errlen);
    snap->socket = socket;
    unpack(reply, snap);
    return HAKCTL_OK;
}
