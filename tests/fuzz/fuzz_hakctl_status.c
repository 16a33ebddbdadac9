/* Fuzz target: hakctl's reading of a STATUS reply, which comes from
 * whatever listens on the socket (pagerd/hakctl_query.c query_status: the
 * size and count checks, the unpacking), then both ways of printing it
 * (hakctl_print.c). A thread plays the daemon on a socket of its own and
 * answers each request with the input. A reply hakctl takes must be a
 * status whose size its counts explain, with its string cut to its field.
 *
 * Input: the reply datagram. */
#include <pthread.h>
#include <sys/socket.h>
#include <sys/un.h>

#include "fuzz.h"
#include "hakctl.h"

static char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
static int listen_fd = -1;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
/* A copy: the thread's send may still be looking at it (ASan checks the
 * buffer after the call) when hakctl already has the reply. */
static uint8_t reply[2 * HAK_STATUS_MAX_BYTES];
static size_t reply_len;
static struct snapshot snap;
static FILE *devnull;

static void *daemon_thread(void *arg)
{
    (void)arg;
    for (;;) {
        int fd = accept4(listen_fd, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0)
            continue;
        struct hak_msg_hdr req;
        if (recv(fd, &req, sizeof req, 0) == (ssize_t)sizeof req) {
            pthread_mutex_lock(&lock);
            send(fd, reply, reply_len, MSG_NOSIGNAL);
            pthread_mutex_unlock(&lock);
        }
        close(fd);
    }
    return NULL;
}

static void remove_socket(void)
{
    unlink(path);
}

static void start_daemon(void)
{
    const char *tmp = getenv("TMPDIR");
    snprintf(path, sizeof path, "%s/hakctl-fuzz-%d.sock", tmp && *tmp ? tmp : "/tmp", (int)getpid());
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path);
    unlink(path);
    listen_fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    FZ_ASSERT(listen_fd >= 0 && bind(listen_fd, (struct sockaddr *)&sa, sizeof sa) == 0);
    FZ_ASSERT(listen(listen_fd, 8) == 0);
    /* Room for the largest reply in one datagram. */
    int sndbuf = 4 * HAK_STATUS_MAX_BYTES;
    setsockopt(listen_fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof sndbuf);
    atexit(remove_socket);
    pthread_t t;
    FZ_ASSERT(pthread_create(&t, NULL, daemon_thread, NULL) == 0);
    devnull = fopen("/dev/null", "w");
    FZ_ASSERT(devnull != NULL);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (listen_fd < 0)
        start_daemon();
    /* An empty datagram reads as a hang-up; hakctl says so. */
    if (size > sizeof reply)
        size = sizeof reply;
    pthread_mutex_lock(&lock);
    memcpy(reply, data, size);
    reply_len = size;
    pthread_mutex_unlock(&lock);
    char err[256];
    memset(&snap, 0, sizeof snap);
    enum hakctl_exit r = query_status(path, &snap, err, sizeof err);
    FZ_ASSERT(r == HAKCTL_OK || r == HAKCTL_BAD_REPLY || (r == HAKCTL_REFUSED && hak_msg_check(data, size) ==
                                                                                  HAK_MSG_REFUSE) ||
              (r == HAKCTL_UNREACHABLE && size == 0));
    FZ_ASSERT(memchr(err, 0, sizeof err) != NULL || r == HAKCTL_OK);
    if (r != HAKCTL_OK)
        return 0;
    FZ_ASSERT(hak_msg_check(data, size) == HAK_MSG_STATUS);
    FZ_ASSERT(snap.d.nnodes <= HAK_SHM_MAX_NODES && snap.d.nclients <= HAK_STATUS_MAX_CLIENTS &&
              snap.d.nusers <= HAK_STATUS_MAX_USERS);
    FZ_ASSERT(memchr(snap.d.version, 0, sizeof snap.d.version) != NULL);
    for (uint32_t i = 0; i < snap.d.nclients; i++)
        FZ_ASSERT(memchr(snap.clients[i].cgroup, 0, sizeof snap.clients[i].cgroup) != NULL);
    FZ_ASSERT(size == sizeof(struct hak_msg_status) + snap.d.nnodes * sizeof(struct hak_status_node) +
                          snap.d.nclients * sizeof(struct hak_status_client) +
                          snap.d.nusers * sizeof(struct hak_status_user));
    print_text(devnull, &snap);
    print_json(devnull, &snap);
    return 0;
}
